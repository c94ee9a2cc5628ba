//! Reload as an operator does it: edit the config file, then `hb-user reload`
//! (or `kill -HUP`). A change the running node can take is applied at once; a
//! bad file or a change that takes a restart keeps the running settings and
//! names the field; the holder keeps answering for the VIP throughout. No
//! signal but SIGKILL ends hb-user without its graceful stop.

use hb_tests::cluster::{test_lan, Cluster, NodeState, BOUND, FAST};
use nix::{sys::signal::Signal, unistd::Pid};
use std::time::{Duration, Instant};

/// `hb-user reload` for node `id`: (exit code, stdout + stderr).
fn reload(c: &Cluster, id: u32) -> (i32, String) {
    let dir = c.node(id).state_dir.display().to_string();
    let (code, out, err) = c
        .run_as_node(id, &["reload".into(), "--state-dir".into(), dir])
        .unwrap();
    (code, out + &err)
}

fn reload_outcome(c: &Cluster, id: u32) -> String {
    let s = c.status_of(id).expect("node 1's status");
    s.reload.map(|r| r.outcome).unwrap_or_default()
}

#[test]
fn a_reload_applies_a_new_priority_and_keeps_the_running_settings_on_a_bad_file() {
    let (_g, mut c) = test_lan("rld", &[200, 100], FAST, 1);
    let file = c.use_file(1, "priority = 200\n").unwrap();
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    let pid = Pid::from_raw(c.pid(1).unwrap() as i32);
    let probe = c.probe(Duration::from_millis(5)).unwrap();
    let quiet_from = Instant::now();

    // A value out of range: refused, naming the key in the file.
    std::fs::write(&file, "priority = 300\n").unwrap();
    let (code, out) = reload(&c, 1);
    assert_eq!(code, 2, "a bad file must be refused with exit 2: {out}");
    assert!(
        out.contains(&format!("priority in {}", file.display())),
        "the error must name the field: {out}"
    );
    assert_eq!(reload_outcome(&c, 1), "refused");

    // A setting that takes a restart: refused as a whole, even with a live change beside it.
    std::fs::write(&file, "priority = 50\nport = 7000\n").unwrap();
    let (code, out) = reload(&c, 1);
    assert_eq!(code, 2, "a restart-only change must be refused: {out}");
    assert!(
        out.contains("port in"),
        "the error must name the field: {out}"
    );
    assert_eq!(c.status_of(1).unwrap().priority, 200, "nothing may change");

    // The same settings again: nothing to do.
    std::fs::write(&file, "priority = 200\n").unwrap();
    let (code, out) = reload(&c, 1);
    assert_eq!(code, 0, "{out}");
    assert_eq!(reload_outcome(&c, 1), "unchanged");

    // Signals whose default would end the process are ignored.
    for sig in [Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGALRM] {
        nix::sys::signal::kill(pid, sig).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(c.is_running(1), "a signal ended hb-user\n{}", c.logs());
    c.expect_single_holder(1, BOUND);
    // None of it cost the client a reply: the VIP stayed with node 1.
    let rec = probe.snapshot();
    let gap = rec.longest_gap(quiet_from, Instant::now());
    assert!(
        gap < Duration::from_millis(200),
        "the client saw a {gap:?} gap while nothing changed\n{}",
        c.logs()
    );

    // kill -HUP with a lower priority: node 2 outranks node 1 now and takes over.
    std::fs::write(&file, "priority = 50\n").unwrap();
    nix::sys::signal::kill(pid, Signal::SIGHUP).unwrap();
    c.expect_single_holder(2, BOUND);
    assert!(c.is_running(1), "SIGHUP ended hb-user\n{}", c.logs());
    let s = c.status_of(1).unwrap();
    assert_eq!(
        (s.priority, reload_outcome(&c, 1).as_str()),
        (50, "applied")
    );

    // Raised above node 2 again through `hb-user reload`: it preempts back.
    std::fs::write(&file, "priority = 250\n").unwrap();
    let (code, out) = reload(&c, 1);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("priority"),
        "the changed setting is named: {out}"
    );
    c.expect_single_holder(1, BOUND);
    probe.stop();
}

#[test]
fn reload_of_a_node_that_is_not_running_exits_3() {
    let (_g, c) = test_lan("rln", &[100], FAST, 1);
    let (code, out) = reload(&c, 1);
    assert_eq!(code, 3, "{out}");
}

/// Node `id`'s view of peer `peer` in `status --json`: (listed, alive).
fn peer_seen(c: &Cluster, id: u32, peer: u32) -> (bool, bool) {
    let r = c.report(id).unwrap();
    let rows: Vec<_> = r.peers.iter().filter(|p| p.peer == peer).collect();
    (!rows.is_empty(), rows.iter().any(|p| p.alive))
}

#[test]
fn a_reload_adds_a_third_node_before_it_starts_and_removes_it_after_it_left() {
    // Nodes 1 and 2 run as a pair; node 3 (the highest) joins later.
    let (_g, mut c) = test_lan("rlp", &[150, 100, 200], FAST, 1);
    let pair = [
        c.use_peers_file(1, &format!("priority = 150\n{}", c.peer_line(&[2])))
            .unwrap(),
        c.use_peers_file(2, &format!("priority = 100\n{}", c.peer_line(&[1])))
            .unwrap(),
    ];
    let all = [
        format!("priority = 150\n{}", c.peer_line(&[2, 3])),
        format!("priority = 100\n{}", c.peer_line(&[1, 3])),
    ];
    c.start(1).unwrap();
    c.start(2).unwrap();
    c.expect_settled(1, BOUND);
    assert_eq!(peer_seen(&c, 1, 3), (false, false));
    let probe = c.probe(Duration::from_millis(10)).unwrap();
    let from = Instant::now();

    // The operator adds node 3 to both files and reloads: the holder keeps
    // the VIP, and node 3 is listed, not heard yet.
    for (i, text) in all.iter().enumerate() {
        std::fs::write(&pair[i], text).unwrap();
        let (code, out) = reload(&c, i as u32 + 1);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("peer"), "the changed setting is named: {out}");
    }
    std::thread::sleep(Duration::from_millis(500));
    c.expect_single_holder(1, BOUND);
    assert_eq!(peer_seen(&c, 1, 3), (true, false), "{}", c.logs());
    let gap = probe.snapshot().longest_gap(from, Instant::now());
    assert!(
        gap < Duration::from_millis(200),
        "the client saw a {gap:?} gap while peers were added\n{}",
        c.logs()
    );

    // Node 3 starts: both old nodes accept its heartbeats, and it takes the
    // VIP by rank (preemption), from a single holder to a single holder.
    c.use_peers_file(3, &format!("priority = 200\n{}", c.peer_line(&[1, 2])))
        .unwrap();
    c.start(3).unwrap();
    c.expect_single_holder(3, BOUND);
    assert!(
        c.wait_for(BOUND, |c| peer_seen(c, 1, 3) == (true, true)
            && peer_seen(c, 2, 3) == (true, true)),
        "nodes 1 and 2 must hear node 3\n{}",
        c.logs()
    );

    // Node 3 leaves the cluster: stopped, then taken out of both files.
    c.signal(3, nix::sys::signal::Signal::SIGTERM).unwrap();
    c.expect_single_holder(1, BOUND);
    for (i, text) in pair.iter().enumerate() {
        let old = format!(
            "priority = {}\n{}",
            [150, 100][i],
            c.peer_line(&[[2, 1][i]])
        );
        std::fs::write(text, old).unwrap();
        let (code, out) = reload(&c, i as u32 + 1);
        assert_eq!(code, 0, "{out}");
    }
    assert!(
        c.wait_for(BOUND, |c| !peer_seen(c, 1, 3).0),
        "node 3 is still listed\n{}",
        c.logs()
    );
    std::thread::sleep(Duration::from_millis(500));
    c.expect_single_holder(1, BOUND);
    // The pair still elects: node 1's stop hands the VIP to node 2.
    c.signal(1, nix::sys::signal::Signal::SIGTERM).unwrap();
    c.expect_single_holder(2, BOUND);
    probe.stop();
}

#[test]
fn a_reload_adds_a_check_and_replaces_its_definition() {
    let (_g, mut c) = test_lan("rlc", &[200, 100], FAST, 1);
    let base = "priority = 200\n";
    let file = c.use_file(1, base).unwrap();
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    // A new check that fails, weight 0: the holder goes FAULT and hands over.
    let check = |cmd: &str| {
        format!("{base}[check.svc]\nscript = \"{cmd}\"\ninterval = \"100ms\"\nweight = 0\n")
    };
    std::fs::write(&file, check("/bin/false")).unwrap();
    let (code, out) = reload(&c, 1);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("check"), "the changed setting is named: {out}");
    c.expect_single_holder(2, BOUND);
    assert!(
        c.wait_for(BOUND, |c| c.state_of(1) == Some(NodeState::Fault)),
        "{}",
        c.logs()
    );
    // Its definition replaced by one that passes: node 1 is eligible again
    // and takes the VIP back (preemption).
    std::fs::write(&file, check("/bin/true")).unwrap();
    let (code, out) = reload(&c, 1);
    assert_eq!(code, 0, "{out}");
    c.expect_single_holder(1, BOUND);
    // And removed: nothing tracks it, node 1 stays.
    std::fs::write(&file, base).unwrap();
    let (code, out) = reload(&c, 1);
    assert_eq!(code, 0, "{out}");
    std::thread::sleep(Duration::from_millis(500));
    c.expect_single_holder(1, BOUND);
    assert!(c.status_of(1).unwrap().checks.is_empty(), "{}", c.logs());
}
