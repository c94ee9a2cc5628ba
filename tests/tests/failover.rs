//! `hb-user` failover in a LAN of network namespaces: real processes, XDP on veth,
//! netlink addresses, gratuitous ARP, iptables. Bounds are generous (these
//! machines are noisy); failover times are measured by the benchmark, not here.

use hb_tests::cluster::{test_lan, Cluster, NodeState, BOUND, FAST, VIP};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

fn cluster(
    tag: &str,
    priorities: &[u8],
    common: &[&str],
) -> (std::sync::MutexGuard<'static, ()>, Cluster) {
    test_lan(tag, priorities, common, 1)
}

fn start_all(c: &mut Cluster) {
    for id in 1..=c.nodes.len() as u32 {
        c.start(id).unwrap();
    }
}

fn settled(c: &mut Cluster, id: u32) {
    c.expect_settled(id, BOUND);
}

fn wait_single_holder(c: &Cluster, id: u32) {
    assert!(
        c.wait_for(BOUND, |c| c.holders() == [id]),
        "expected node {id} alone to hold the VIP, holders {:?}\n{}",
        c.holders(),
        c.logs()
    );
}

#[test]
fn two_nodes_elect_the_higher_one() {
    let (_g, mut c) = cluster("el", &[100, 90], FAST);
    start_all(&mut c);
    settled(&mut c, 1);
    // It stays that way, and the client reaches the VIP through node 1.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.holders(), [1]);
    assert_eq!(
        c.client_reach_vip(),
        Some(c.node(1).mac),
        "the client reaches the VIP at node 1\n{}",
        c.logs()
    );
    assert_eq!(c.client_vip_mac(), Some(c.node(1).mac));
    let one = c.report(1).unwrap();
    assert_eq!(one.node.as_ref().map(|n| n.state), Some(NodeState::Master));
    assert_eq!(one.vip_holder, "this node", "{one:?}");
    let two = c.report(2).unwrap();
    assert_eq!(two.node.as_ref().map(|n| n.state), Some(NodeState::Backup));
    assert_eq!(two.vip_holder, "peer 1", "{two:?}");
    assert!(two.peers[0].alive, "{two:?}");
}

#[test]
fn sigkill_of_the_holder_moves_the_vip_and_the_client_follows() {
    let (_g, mut c) = cluster("kl", &[100, 90], FAST);
    start_all(&mut c);
    settled(&mut c, 1);
    assert_eq!(c.client_reach_vip(), Some(c.node(1).mac));
    let probe = c.probe(Duration::from_millis(5)).unwrap();
    let killed = Instant::now();
    c.signal(1, Signal::SIGKILL).unwrap();
    assert!(
        c.wait_for(BOUND, |c| c.holders().contains(&2)),
        "node 2 never took the VIP\n{}",
        c.logs()
    );
    let n2 = c.node(2).mac;
    assert!(
        c.wait_for(BOUND, |_| probe.snapshot().first_from(n2, killed).is_some()),
        "the client never got a reply from node 2's MAC\n{}",
        c.logs()
    );
    drop(probe);
    assert_eq!(
        c.client_vip_mac(),
        Some(n2),
        "gratuitous ARP moved the client's neighbour entry"
    );
    // Node 2 took over because node 1 fell silent: no leave, and no death
    // notice (node 1's XDP_TX on a veth reaches no peer without XDP: see
    // `Cluster::enable_xdp_tx`).
    let r = c.report(2).unwrap();
    assert_eq!(r.node.as_ref().map(|n| n.state), Some(NodeState::Master));
    assert_eq!(r.vip_holder, "this node", "{r:?}");
    let p = &r.peers[0];
    assert!(
        !p.alive && !p.left && !p.gone,
        "node 1 silent, not left nor reported dead: {p:?}"
    );
}

#[test]
fn sigterm_of_the_holder_hands_over_before_dead_after() {
    // dead-after 3 s: a takeover well within it can only come from the leave message.
    let (_g, mut c) = cluster(
        "tm",
        &[100, 90],
        &[
            "--interval",
            "100ms",
            "--dead-after",
            "3s",
            "--init-dead",
            "3s",
        ],
    );
    start_all(&mut c);
    settled(&mut c, 1);
    let stopped = Instant::now();
    c.signal(1, Signal::SIGTERM).unwrap();
    assert!(
        c.wait_for(Duration::from_secs(2), |c| c.holders() == [2]),
        "no handover within 2 s (dead-after is 3 s): holders {:?}\n{}",
        c.holders(),
        c.logs()
    );
    assert!(stopped.elapsed() < Duration::from_secs(3));
    let r = c.report(2).unwrap();
    assert!(r.peers[0].left, "node 1 said it left: {r:?}");
    assert!(
        !c.holders().contains(&1),
        "node 1 released the VIP as it stopped"
    );
    assert!(
        c.status_of(1).is_none(),
        "a graceful stop removes its status"
    );
    assert!(!c.xdp_attached(1), "a graceful stop detaches XDP");
}

#[test]
fn a_returning_higher_node_takes_the_vip_back_with_preemption() {
    let (_g, mut c) = cluster("pr", &[100, 90], FAST);
    start_all(&mut c);
    settled(&mut c, 1);
    c.signal(1, Signal::SIGTERM).unwrap();
    wait_single_holder(&c, 2);
    c.start(1).unwrap();
    wait_single_holder(&c, 1);
    assert_eq!(c.client_reach_vip(), Some(c.node(1).mac));
}

#[test]
fn without_preemption_the_returning_node_stays_backup() {
    let mut args = FAST.to_vec();
    args.push("--no-preempt");
    let (_g, mut c) = cluster("np", &[100, 90], &args);
    start_all(&mut c);
    settled(&mut c, 1);
    c.signal(1, Signal::SIGTERM).unwrap();
    wait_single_holder(&c, 2);
    c.start(1).unwrap();
    let pid = c.pid(1);
    assert!(
        c.wait_for(BOUND, |c| {
            c.status_of(1)
                .is_some_and(|s| Some(s.pid) == pid && s.state == NodeState::Backup)
        }),
        "{}",
        c.logs()
    );
    for _ in 0..20 {
        assert_eq!(
            c.holders(),
            [2],
            "node 2 keeps the VIP without preemption\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_incident_firewall_causes_no_failover() {
    let (_g, mut c) = cluster("fw", &[100, 90], FAST);
    start_all(&mut c);
    settled(&mut c, 1);
    for id in [1, 2] {
        c.firewall(id, true, "INPUT").unwrap();
    }
    let accepted = |c: &Cluster| c.report(2).unwrap().peers[0].accepted;
    let before = accepted(&c);
    c.expect_stays_backup(2, |c| {
        c.holds_steadily(1, Duration::from_secs(10));
    });
    // Node 2 kept hearing node 1 (in XDP, before the firewall): ~50 heartbeats a second.
    assert!(
        accepted(&c) >= before + 250,
        "heartbeats stopped: {} -> {}",
        before,
        accepted(&c)
    );
}

#[test]
fn link_down_on_the_holder_is_fault_and_the_other_takes_over() {
    let (_g, mut c) = cluster("ld", &[100, 90], FAST);
    start_all(&mut c);
    settled(&mut c, 1);
    // Node 2 notices the silence through its sender thread's watch (no death
    // notice comes over a link that is down).
    let watch = c.status_of(2).unwrap().silence_watch;
    assert_eq!(
        watch, "sender",
        "node 2 does not watch silence from its sender thread"
    );
    c.set_link(1, false).unwrap();
    wait_single_holder(&c, 2);
    assert!(
        c.wait_for(BOUND, |c| c.state_of(1) == Some(NodeState::Fault)),
        "{}",
        c.log(1)
    );
    let r = c.report(1).unwrap();
    assert_eq!(r.node.map(|n| n.state), Some(NodeState::Fault));
    // Back up: INIT, then (preemption) node 1 takes the VIP again.
    c.set_link(1, true).unwrap();
    wait_single_holder(&c, 1);
}

#[test]
fn restarting_the_holder_within_dead_after_causes_no_failover() {
    let (_g, mut c) = cluster(
        "rs",
        &[100, 90],
        &[
            "--interval",
            "50ms",
            "--dead-after",
            "1500ms",
            "--init-dead",
            "1500ms",
        ],
    );
    start_all(&mut c);
    settled(&mut c, 1);
    c.expect_stays_backup(2, |c| {
        c.signal(1, Signal::SIGKILL).unwrap();
        c.start(1).unwrap();
        c.never_holds(2, Duration::from_secs(3));
    });
    assert_eq!(c.holders(), [1]);
    // The restarted controller holds the VIP the crashed one left: MASTER,
    // with the address on eth0 the whole time (never removed to be re-added).
    let s = c.status_of(1).unwrap();
    assert_eq!((Some(s.pid), s.state), (c.pid(1), NodeState::Master));
    assert!(s.holds_vip && s.vips_missing.is_empty(), "{s:?}");
}

#[test]
fn three_nodes_fail_over_in_priority_order() {
    let (_g, mut c) = cluster("3n", &[100, 90, 80], FAST);
    start_all(&mut c);
    settled(&mut c, 1);
    c.signal(1, Signal::SIGKILL).unwrap();
    // A SIGKILLed node keeps its address configured (a crash cleans up nothing);
    // what matters is which live node took over.
    assert!(
        c.wait_for(BOUND, |c| c.holders().contains(&2)),
        "{}",
        c.logs()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !c.holders().contains(&3),
        "node 3 must stay BACKUP while node 2 lives\n{}",
        c.logs()
    );
    c.signal(2, Signal::SIGKILL).unwrap();
    assert!(
        c.wait_for(BOUND, |c| c.holders().contains(&3)),
        "{}",
        c.logs()
    );
}

#[test]
fn a_second_controller_on_the_same_interface_refuses_to_start() {
    let (_g, mut c) = cluster("dup", &[100, 90], FAST);
    c.start(1).unwrap();
    assert!(c.wait_for(BOUND, |c| c.xdp_attached(1)));
    let mut args = c.args(1);
    let dir = c.lab.scratch.join("second-state");
    let i = args.iter().position(|a| a == "--state-dir").unwrap();
    args[i + 1] = dir.display().to_string();
    let (code, err) = c.run_once(1, &args).unwrap();
    assert_ne!(code, 0, "second controller started: {err}");
    assert!(err.contains("eth0"), "{err}");
    assert!(c.is_running(1), "the first controller is unharmed");
}

#[test]
fn bad_settings_exit_2_naming_the_field_and_touch_nothing() {
    let (_g, c) = cluster("bad", &[100, 90], FAST);
    let base = c.args(1);
    let with = |pairs: &[(&str, &str)]| {
        let mut a = base.clone();
        for (flag, value) in pairs {
            match a.iter().position(|x| x == flag) {
                Some(i) if !value.is_empty() => a[i + 1] = value.to_string(),
                _ => a.extend([flag.to_string(), value.to_string()]),
            }
        }
        a
    };
    let world_readable = c.lab.scratch.join("open.key");
    std::fs::write(&world_readable, "00112233445566778899aabbccddeeff\n").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&world_readable).unwrap().permissions(),
        0o644,
    );
    std::fs::set_permissions(
        &world_readable,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let bad_toml = c.lab.scratch.join("bad.toml");
    std::fs::write(&bad_toml, "bogus_key = 1\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            with(&[("--interval", "20ms"), ("--dead-after", "30ms")]),
            "--dead-after",
        ),
        (with(&[("--priority", "300")]), "--priority"),
        (with(&[("--peer", "2@not-an-ip")]), "--peer"),
        (with(&[("--interval", "fast")]), "--interval"),
        (with(&[("--iface", "nosuch0")]), "--iface"),
        (with(&[("--vip", "192.168.77.1/24")]), "--vip"),
        (
            with(&[("--key-file", world_readable.to_str().unwrap())]),
            "--key-file",
        ),
        (with(&[("--key-file", "/nonexistent/hb.key")]), "--key-file"),
        (
            with(&[("--config", bad_toml.to_str().unwrap())]),
            "bogus_key",
        ),
    ];
    for (args, field) in cases {
        let (code, err) = c.run_once(1, &args).unwrap();
        assert_eq!(code, 2, "exit code for a bad {field}: {err}");
        assert!(err.contains(field), "the message names {field}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!c.xdp_attached(1), "nothing attached after a bad {field}");
        assert!(c.holders().is_empty(), "no VIP added after a bad {field}");
    }
    assert!(!c
        .exec(1, &["ip", "-4", "addr"])
        .unwrap()
        .contains(&VIP.to_string()));
}

#[test]
fn realtime_mode_runs_the_controller_under_sched_fifo() {
    let mut args = FAST.to_vec();
    args.push("--realtime");
    let (_g, mut c) = cluster("rt", &[100, 90], &args);
    start_all(&mut c);
    settled(&mut c, 1);
    let pid = c.report(1).unwrap().node.unwrap().pid;
    // Field 41 of /proc/<pid>/stat is the scheduling policy: 1 = SCHED_FIFO.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let policy: u32 = after_comm
        .split_whitespace()
        .nth(38)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(policy, 1, "policy of hb-user {pid}: {stat}");
    // Field 40 is the real-time priority.
    let rt: u32 = after_comm
        .split_whitespace()
        .nth(37)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(rt, 50, "real-time priority of hb-user {pid}: {stat}");
    // Memory locked (mlockall): /proc/<pid>/status VmLck is not zero.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let locked: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(locked > 0, "no memory locked: {status}");
}
