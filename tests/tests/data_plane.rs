//! A data plane that outlives its controller: the XDP program stays attached
//! (the kernel keeps it on the interface, pins or not) when `hb-user` dies and self-fences the VIPs once the holder
//! lease runs out; a restart adopts it; heartbeats go out through a packet socket
//! that OUTPUT firewall rules cannot touch; `hb-user cleanup` removes it all.

use hb_tests::{
    cluster::{test_lan, Cluster, NodeState, Report, BOUND, FAST, IFACE, VIP},
    netns::mac_str,
};
use hb_user::loader::Origin;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// Points the client's neighbour entry for the VIP at `mac`, for good.
fn pin_client_to(c: &Cluster, mac: [u8; 6]) {
    pin_neighbour(c, &VIP.to_string(), mac);
}

/// Points the client's neighbour entry for `ip` (either family) at `mac`.
fn pin_neighbour(c: &Cluster, ip: &str, mac: [u8; 6]) {
    c.lab
        .exec(
            &c.client,
            &[
                "ip",
                "neigh",
                "replace",
                ip,
                "lladdr",
                &mac_str(mac),
                "dev",
                IFACE,
                "nud",
                "permanent",
            ],
        )
        .unwrap();
}

/// Replies the client gets from the VIP over `d`, probing every 5 ms.
fn replies_for(c: &Cluster, d: Duration) -> usize {
    let probe = c.probe(Duration::from_millis(5)).unwrap();
    std::thread::sleep(d);
    probe.stop().replies.len()
}

fn report(c: &Cluster, id: u32) -> Report {
    c.report(id).unwrap()
}

fn counter(r: &Report, name: &str) -> u64 {
    r.counters[0].counters.get(name).copied().unwrap_or(0)
}

fn cluster(tag: &str, common: &[&str]) -> (std::sync::MutexGuard<'static, ()>, Cluster) {
    let (g, mut c) = test_lan(tag, &[100, 90], common, 1);
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    (g, c)
}

#[test]
fn a_crashed_holder_stops_answering_for_the_vip() {
    let (_g, mut c) = cluster("sf", FAST);
    let (n1, n2) = (c.node(1).mac, c.node(2).mac);
    c.signal(1, Signal::SIGKILL).unwrap();
    assert!(
        c.wait_for(BOUND, |c| c.holders().contains(&2)),
        "{}",
        c.logs()
    );
    // The address is still configured on node 1 (nothing removed it), but its lease
    // ran out: XDP drops what is addressed to the VIP there.
    assert!(
        c.holders().contains(&1),
        "the crash left the VIP configured on node 1"
    );
    assert!(
        c.xdp_attached(1),
        "the pinned XDP program outlived its controller"
    );
    std::thread::sleep(Duration::from_millis(200));
    pin_client_to(&c, n1);
    assert_eq!(
        replies_for(&c, Duration::from_millis(500)),
        0,
        "node 1 still answers for the VIP"
    );
    pin_client_to(&c, n2);
    assert!(
        replies_for(&c, Duration::from_millis(500)) > 0,
        "node 2 does not answer\n{}",
        c.logs()
    );
    let r = report(&c, 1);
    assert!(counter(&r, "fenced_ip") > 0, "self-fence counters: {r:?}");
    assert!(!r.running);
    assert!(r.planes[0].attached, "{r:?}");
    assert!(
        r.planes[0].lease_ms_left.is_none(),
        "no lease on the dead node: {r:?}"
    );
}

/// `ip netns exec` without `--pin-root`: no bpffs reaches hb-user's private
/// mount namespace, which goes with the process. The data plane must not.
#[test]
fn under_ip_netns_exec_without_pins_a_crashed_holder_is_fenced_and_a_restart_takes_over() {
    let (_g, mut c) = test_lan("nx", &[100, 90], FAST, 1);
    c.start_as_deployed(1).unwrap();
    c.start(2).unwrap();
    c.expect_settled(1, BOUND);
    let (n1, n2) = (c.node(1).mac, c.node(2).mac);
    let r = report(&c, 1);
    assert!(!r.node.as_ref().unwrap().pinned, "{r:?}");
    assert!(r.planes[0].attached, "{r:?}");
    assert!(r.planes[0].death_notice_armed, "{r:?}");

    // Clients keep sending to node 1's MAC: from dead-after + 50 ms after the
    // kill it must be silent (lease gone), while node 2 answers.
    pin_client_to(&c, n1);
    let probe = c.probe(Duration::from_millis(5)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    c.signal(1, Signal::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let rec = probe.stop();
    assert!(
        rec.first_from(n1, killed - Duration::from_millis(300))
            .is_some(),
        "node 1 answered before the kill"
    );
    let fence_by = killed + Duration::from_millis(150 + 50);
    let late: Vec<_> = rec
        .replies
        .iter()
        .filter(|r| r.mac == n1 && r.at > fence_by)
        .map(|r| r.at - killed)
        .collect();
    assert!(late.is_empty(), "node 1 answered after the kill: {late:?}");
    assert!(c.xdp_attached(1), "the data plane went with the process");
    assert!(
        c.wait_for(BOUND, |c| c.state_of(2) == Some(NodeState::Master)),
        "{}",
        c.logs()
    );
    pin_client_to(&c, n2);
    assert!(
        replies_for(&c, Duration::from_millis(300)) > 0,
        "{}",
        c.logs()
    );

    // A restart the same way finds the program through the interface.
    let before = report(&c, 1).peers[0].accepted;
    c.start_as_deployed(1).unwrap();
    c.expect_single_holder(1, BOUND);
    let r = report(&c, 1);
    assert!(r.running && r.planes[0].attached, "{r:?}");
    assert!(
        r.peers[0].accepted >= before,
        "peer state lost: {before} -> {r:?}"
    );
    c.signal(1, Signal::SIGTERM).unwrap();
    assert!(!c.xdp_attached(1), "a graceful stop detaches, pins or not");
}

/// The fence covers IPv6 VIPs: a crashed holder's kernel still has the
/// address, but its XDP program drops neighbour solicitations for it and IPv6
/// to it once the lease ran out. Node 1 runs as deployed (`ip netns exec`, no
/// pins): the fence must not depend on a bpffs that outlives the process.
#[test]
fn a_crashed_holder_of_an_ipv6_vip_stops_answering_for_it() {
    let _g = hb_tests::cluster::exclusive();
    hb_tests::require_root("IPv6 fence test");
    let mut c = Cluster::new_ipv6("f6", &[100, 90], FAST).unwrap();
    c.start_as_deployed(1).unwrap();
    c.start(2).unwrap();
    c.expect_settled(1, BOUND);
    let (n1, n2) = (c.node(1).mac, c.node(2).mac);
    assert_eq!(c.client_reach_vip6(), Some(n1), "{}", c.logs());
    c.signal(1, Signal::SIGKILL).unwrap();
    assert!(
        c.wait_for(BOUND, |c| c.state_of(2) == Some(NodeState::Master)),
        "{}",
        c.logs()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(c.holders().contains(&1), "the crash left the VIP on node 1");
    // Traffic sent to node 1's MAC for the VIP gets no answer...
    let vip6 = hb_tests::cluster::VIP6.to_string();
    pin_neighbour(&c, &vip6, n1);
    let echo = |c: &Cluster| {
        c.lab
            .in_netns(&c.client, || {
                hb_tests::probe::echo6_once(hb_tests::cluster::VIP6, Duration::from_millis(500))
            })
            .unwrap()
    };
    assert!(!echo(&c), "node 1 still answers IPv6 to the VIP");
    // ...and neighbour discovery finds node 2 alone.
    c.lab
        .exec(
            &c.client,
            &["ip", "-6", "neigh", "del", &vip6, "dev", IFACE],
        )
        .unwrap();
    assert_eq!(c.client_reach_vip6(), Some(n2), "{}", c.logs());
    let r = report(&c, 1);
    assert!(counter(&r, "fenced_ip6") > 0, "{r:?}");
    assert!(counter(&r, "fenced_nd") > 0, "{r:?}");
}

#[test]
fn a_restarted_controller_takes_over_the_attached_program() {
    let (_g, mut c) = cluster("ad", FAST);
    let old = c.status_of(1).unwrap().session;
    c.signal(1, Signal::SIGKILL).unwrap();
    assert!(
        c.wait_for(BOUND, |c| c.holders().contains(&2)),
        "{}",
        c.logs()
    );
    // While node 1's controller is dead, its XDP program goes on counting node 2's heartbeats.
    let before = report(&c, 1).peers[0].accepted;
    std::thread::sleep(Duration::from_millis(200));
    let during = report(&c, 1).peers[0].accepted;
    assert!(
        during > before,
        "the orphaned data plane stopped counting: {before} -> {during}"
    );
    c.start(1).unwrap();
    c.expect_single_holder(1, BOUND);
    // The restarted controller adopted the program the crashed one left, and
    // registered itself there.
    let s = c.status_of(1).unwrap();
    assert_eq!(s.origins, [Origin::Adopted], "{s:?}");
    assert!(c.xdp_prog_id(1).is_some());
    let r = report(&c, 1);
    assert_eq!(r.planes[0].owner_pid, c.pid(1), "{r:?}");
    let after = r.peers[0].accepted;
    assert!(after >= during, "peer state was lost: {during} -> {after}");
    // The restart is a new session (wire v2), which node 2 adopted from the
    // adopted data plane's echo, and node 2's heartbeats, echoing it, count as
    // life there again.
    let new = c.status_of(1).unwrap().session;
    assert!(new != old, "session {old} -> {new}");
    assert!(
        c.wait_for(BOUND, |c| report(c, 2).peers[0].session == new
            && report(c, 1).peers[0].alive),
        "node 2 did not adopt node 1's new session {new}: {:?}\n{:?}",
        report(&c, 2),
        report(&c, 1)
    );
}

#[test]
fn restarting_the_holder_leaves_no_gap_for_clients() {
    // Interval 50 ms: no gap in the client's replies may exceed 150 ms.
    let (_g, mut c) = cluster(
        "gp",
        &[
            "--interval",
            "50ms",
            "--dead-after",
            "1500ms",
            "--init-dead",
            "1500ms",
        ],
    );
    let probe = c.probe(Duration::from_millis(5)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    c.signal(1, Signal::SIGKILL).unwrap();
    c.start(1).unwrap();
    c.never_holds(2, Duration::from_secs(3));
    let rec = probe.stop();
    let gap = rec.longest_gap(t0, Instant::now());
    assert!(
        gap <= Duration::from_millis(150),
        "clients saw a {} ms gap\n{}",
        gap.as_millis(),
        c.logs()
    );
    assert!(rec
        .replies
        .iter()
        .filter(|r| r.at > t0)
        .all(|r| r.mac == c.node(1).mac));
    assert_eq!(c.holders(), [1]);
}

#[test]
fn output_firewall_rules_cannot_silence_heartbeats() {
    let (_g, mut c) = cluster("ow", FAST);
    // Both nodes send through the packet socket once their neighbours are resolved.
    for id in [1, 2] {
        assert!(
            c.wait_for(BOUND, |c| c
                .status_of(id)
                .is_some_and(|s| !s.transmit.is_empty()
                    && s.transmit.iter().all(|t| t.ends_with(": packet socket")))),
            "node {id} never used the packet socket\n{:?}",
            c.status_of(id)
        );
    }
    c.expect_stays_backup(2, |c| {
        for (chains, what) in [
            (&["OUTPUT"][..], "OUTPUT"),
            (&["INPUT"][..], "OUTPUT and INPUT"),
        ] {
            for id in [1, 2] {
                for chain in chains {
                    c.firewall(id, true, chain).unwrap();
                }
            }
            // Shown with the failure (libtest prints a failing test's output).
            eprintln!("{what} DROP: exactly one holder for 5 s");
            c.holds_steadily(1, Duration::from_secs(5));
        }
    });
    // The OUTPUT rule saw nothing to drop: heartbeats bypass it.
    let dropped = c.firewall_dropped(2, "OUTPUT").unwrap();
    assert_eq!(dropped, 0, "heartbeats went through OUTPUT");
}

#[test]
fn cleanup_after_a_crash_removes_everything() {
    let (_g, mut c) = cluster("cl", FAST);
    c.signal(1, Signal::SIGKILL).unwrap();
    assert!(c.xdp_attached(1) && c.holders().contains(&1));
    let n = c.node(1);
    let pin_dir = c
        .args(1)
        .windows(2)
        .find(|w| w[0] == "--pin-root")
        .map(|w| w[1].clone())
        .unwrap();
    let args: Vec<String> = vec![
        "cleanup".into(),
        "--iface".into(),
        IFACE.into(),
        "--state-dir".into(),
        n.state_dir.display().to_string(),
        "--pin-root".into(),
        pin_dir.clone(),
    ];
    let (code, err) = c.run_once(1, &args).unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(!c.xdp_attached(1), "XDP still attached after cleanup");
    assert!(
        !c.holders().contains(&1),
        "VIP still on node 1 after cleanup"
    );
    let left: Vec<_> = std::fs::read_dir(&pin_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "pins left: {left:?}");
}
