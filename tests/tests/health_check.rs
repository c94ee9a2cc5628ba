//! The VIP follows a working service, not just a live machine: each node runs
//! a real web server (Debian's python3 `http.server`) and a `[check.web]`
//! script that fetches a page from it with curl, as keepalived users do with
//! `vrrp_script`. Stop the holder's server and the VIP moves to the node whose
//! server works; start it again and the holder takes it back (preemption).
//! Also processes, interfaces and track files as checks.

use hb_tests::cluster::{forget_process, test_lan, track_process, Cluster, BOUND, FAST};
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const PORT: u16 = 8080;

/// Node `id`'s web server, on its address in its namespace.
fn serve(c: &Cluster, id: u32) -> Child {
    let ip = c.node(id).ip.to_string();
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-m", "http.server", &PORT.to_string(), "--bind", &ip])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    hb_tests::netns::enter_on_exec(&mut cmd, &c.node(id).ns).unwrap();
    let child = cmd
        .spawn()
        .expect("python3 -m http.server (Debian package python3)");
    track_process(child.id() as i32);
    // Serving before the nodes start, so the first check already passes.
    let deadline = Instant::now() + BOUND;
    while c
        .exec(id, &["curl", "-sf", "-o", "/dev/null", &url(c, id)])
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "node {id}'s web server never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn stop(mut server: Child) {
    let _ = server.kill();
    let _ = server.wait();
    forget_process(server.id() as i32);
}

fn url(c: &Cluster, id: u32) -> String {
    format!("http://{}:{PORT}/", c.node(id).ip)
}

fn settings(c: &Cluster, id: u32, priority: u8) -> String {
    format!(
        "priority = {priority}\n\n[check.web]\nscript = \"curl -sf -o /dev/null --max-time 0.5 {}\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2\nweight = -150\n",
        url(c, id)
    )
}

#[test]
fn the_vip_follows_the_node_whose_service_works() {
    let (_g, mut c) = test_lan("hck", &[200, 100], FAST, 1);
    for (id, prio) in [(1, 200), (2, 100)] {
        let text = settings(&c, id, prio);
        c.use_file(id, &text).unwrap();
    }
    let s1 = serve(&c, 1);
    let s2 = serve(&c, 2);
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    let row = |c: &Cluster, id| c.status_of(id).and_then(|s| s.checks.into_iter().next());
    assert!(
        c.wait_for(BOUND, |c| row(c, 1)
            .is_some_and(|r| r.healthy == Some(true))),
        "node 1's check never passed: {:?}\n{}",
        row(&c, 1),
        c.logs()
    );

    // The holder's service dies: after fall x interval its priority is
    // 200 - 150 = 50, below node 2's 100, and node 2 takes the VIP.
    stop(s1);
    c.expect_single_holder(2, BOUND);
    assert_eq!(
        c.client_reach_vip(),
        Some(c.node(2).mac),
        "the client reaches node 2"
    );
    let s = c.status_of(1).unwrap();
    let r = s.checks.first().unwrap();
    assert_eq!(
        (s.priority, r.healthy, r.effect.as_str()),
        (50, Some(false), "-150"),
        "node 1's status shows the failed check and its effect: {r:?}"
    );
    assert!(c.is_running(1), "a failed check must not end hb-user");

    // The service is back: after rise x interval node 1 outranks node 2 again
    // and, preempting, takes the VIP back.
    let s1 = serve(&c, 1);
    c.expect_single_holder(1, BOUND);
    assert_eq!(c.status_of(1).unwrap().priority, 200);
    stop(s1);
    stop(s2);
}

/// A `process` check with weight 0 (keepalived's `track_process` without a
/// weight): while no process of that name runs, the node is FAULT and holds
/// nothing; nothing is spawned per check (/proc is read).
#[test]
fn a_vanished_tracked_process_is_fault() {
    let (_g, mut c) = test_lan("hcp", &[200, 100], FAST, 1);
    // A name of its own, so no other process on the machine matches.
    let name = format!("hbsvc{}", std::process::id() % 100_000);
    let exe = c.lab.scratch.join(&name);
    std::os::unix::fs::symlink("/bin/sleep", &exe).unwrap();
    let service = || {
        let child = Command::new(&exe).arg("600").spawn().unwrap();
        track_process(child.id() as i32);
        child
    };
    let text =
        format!("priority = 200\n\n[check.svc]\nprocess = \"{name}\"\ninterval = \"100ms\"\n");
    c.use_file(1, &text).unwrap();
    let svc = service();
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);

    stop(svc);
    c.expect_single_holder(2, BOUND);
    let s = c.status_of(1).unwrap();
    assert_eq!(s.state, hb_common::NodeState::Fault, "{}", c.logs());
    assert_eq!(s.checks[0].effect, "FAULT");

    let svc = service();
    c.expect_single_holder(1, BOUND);
    stop(svc);
}

/// An `iface` check (keepalived's `track_interface`) on an interface that
/// carries no heartbeats: it going down is FAULT for weight 0, from the
/// kernel's link events; up again, the node takes the VIP back.
#[test]
fn a_tracked_interface_going_down_is_fault() {
    let (_g, mut c) = test_lan("hci", &[200, 100], FAST, 1);
    // A veth pair (this kernel has no dummy driver); up on both ends for carrier.
    c.exec(
        1,
        &[
            "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "uplink-p",
        ],
    )
    .unwrap();
    c.exec(1, &["ip", "link", "set", "uplink-p", "up"]).unwrap();
    c.exec(1, &["ip", "link", "set", "uplink", "up"]).unwrap();
    c.use_file(1, "priority = 200\n\n[check.uplink]\niface = \"uplink\"\n")
        .unwrap();
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);

    c.exec(1, &["ip", "link", "set", "uplink", "down"]).unwrap();
    c.expect_single_holder(2, BOUND);
    let s = c.status_of(1).unwrap();
    assert_eq!(s.state, hb_common::NodeState::Fault, "{}", c.logs());
    assert_eq!(
        (s.checks[0].effect.as_str(), s.checks[0].last.as_str()),
        ("FAULT", "down")
    );

    c.exec(1, &["ip", "link", "set", "uplink", "up"]).unwrap();
    c.expect_single_holder(1, BOUND);
}

/// A track file (keepalived's `track_file`): the holder's operator writes a
/// weight into it and the VIP moves to the peer, with keepalived-style notify
/// arguments reaching the new holder's script as a keepalived script expects
/// them (`$1` INSTANCE, `$2` the group, `$3` the state, `$4` the priority).
#[test]
fn a_track_file_weight_moves_the_vip_and_keepalived_notify_args_arrive() {
    let (_g, mut c) = test_lan("hcf", &[200, 100], FAST, 1);
    let weight = c.lab.scratch.join("weight");
    std::fs::write(&weight, "0\n").unwrap();
    let notified = c.lab.scratch.join("notified");
    let notify = format!(
        "notify = \"f() {{ echo \\\"$1 $2 $3 $4\\\" >> {}; }}; f\"\nnotify_args = \"keepalived\"\n",
        notified.display()
    );
    let one = format!(
        "priority = 200\n{notify}\n[check.maint]\nfile = \"{}\"\nweight = -1\ninterval = \"100ms\"\n",
        weight.display()
    );
    c.use_file(1, &one).unwrap();
    c.use_file(2, &format!("priority = 100\n{notify}")).unwrap();
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);

    // 150 x -1: priority 50, below node 2's 100.
    std::fs::write(&weight, "150\n").unwrap();
    c.expect_single_holder(2, BOUND);
    let s = c.status_of(1).unwrap();
    assert_eq!(
        (
            s.priority,
            s.checks[0].effect.as_str(),
            s.checks[0].last.as_str()
        ),
        (50, "-150", "value 150"),
        "{}",
        c.logs()
    );
    let deadline = Instant::now() + BOUND;
    let text = loop {
        let text = std::fs::read_to_string(&notified).unwrap_or_default();
        if text.contains("INSTANCE default MASTER 100") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        text.contains("INSTANCE default MASTER 100") && text.contains("INSTANCE default BACKUP 50"),
        "keepalived-style notify arguments: {text:?}\n{}",
        c.logs()
    );
    assert!(
        !text.contains("INIT"),
        "INIT is not a keepalived state: {text:?}"
    );

    // Back to 0: node 1 preempts.
    std::fs::write(&weight, "0\n").unwrap();
    c.expect_single_holder(1, BOUND);
}
