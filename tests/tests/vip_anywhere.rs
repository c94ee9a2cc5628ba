//! VIPs outside every heartbeat subnet: a /32 on `lo` (a floating address the
//! client reaches on-link; Linux answers ARP for it on the heartbeat link)
//! fails over on a crash, fenced by the crashed node's data plane, announced by
//! the survivor. A VIP outside the subnets without an interface, or a wider
//! prefix on `lo`, is refused naming the field.

use hb_tests::cluster::{test_lan, Cluster, BOUND, FAST};
use nix::sys::signal::Signal;
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

const FLOAT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn on_lo(c: &Cluster) -> Vec<u32> {
    c.holders_on("lo", FLOAT)
}

fn group(prio: u8) -> String {
    format!("[group.float]\nvip = [\"{FLOAT}/32 dev lo\"]\npriority = {prio}\n")
}

#[test]
fn a_32_on_lo_outside_the_heartbeat_subnet_fails_over() {
    let (_g, mut c) = test_lan("vlo", &[200, 100], FAST, 1);
    c.use_groups(1, &group(200)).unwrap();
    c.use_groups(2, &group(100)).unwrap();
    // The client reaches the floating address on its link: it asks by ARP.
    c.lab
        .exec(
            &c.client,
            &["ip", "route", "add", &format!("{FLOAT}/32"), "dev", "eth0"],
        )
        .unwrap();
    c.start_all().unwrap();
    assert!(
        c.wait_for(BOUND, |c| on_lo(c) == [1]),
        "on lo: {:?}\n{}",
        on_lo(&c),
        c.logs()
    );
    let (n1, n2) = (c.node(1).mac, c.node(2).mac);
    let probe = c.probe_addr(FLOAT, Duration::from_millis(10)).unwrap();
    let start = Instant::now();
    assert!(
        c.wait_for(BOUND, |_| probe.snapshot().first_from(n1, start).is_some()),
        "the client never reached {FLOAT} at node 1\n{}",
        c.logs()
    );
    let killed = Instant::now();
    c.signal(1, Signal::SIGKILL).unwrap();
    assert!(
        c.wait_for(BOUND, |c| on_lo(c).contains(&2)),
        "node 2 never took {FLOAT}\n{}",
        c.logs()
    );
    assert!(
        c.wait_for(BOUND, |_| probe.snapshot().first_from(n2, killed).is_some()),
        "the client never got a reply from node 2\n{}",
        c.logs()
    );
    // The crashed node keeps the address on lo (a crash cleans up nothing),
    // but its data plane stops answering once its lease ran out.
    let took = probe
        .snapshot()
        .first_from(n2, killed)
        .map(|r| r.at)
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let rec = probe.stop();
    assert_eq!(
        rec.others_after(n2, took + Duration::from_millis(100)),
        0,
        "replies from another MAC than node 2's after it took over\n{}",
        c.logs()
    );
}

#[test]
fn vips_outside_the_subnets_need_their_interface() {
    let (_g, mut c) = test_lan("vlx", &[100, 90], FAST, 1);
    for (text, field, says) in [
        (
            format!("[group.f]\nvip = [\"{FLOAT}/32\"]\n"),
            "group.f.vip",
            "dev IF",
        ),
        (
            format!("[group.f]\nvip = [\"{FLOAT}/24 dev lo\"]\n"),
            "group.f.vip",
            "/32",
        ),
        (
            format!("[group.f]\nvip = [\"{FLOAT}/32 dev nope0\"]\n"),
            "group.f.vip",
            "no interface named nope0",
        ),
    ] {
        c.use_groups(1, &text).unwrap();
        let args: Vec<String> = std::iter::once("check".to_string())
            .chain(c.args(1).into_iter().skip(1))
            .collect();
        let (code, out, err) = c.run_as_node(1, &args).unwrap();
        assert_eq!(code, 2, "{text}\n{out}{err}");
        assert!(err.contains(field) && err.contains(says), "{text}\n{err}");
    }
}
