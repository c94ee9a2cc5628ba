//! Split-brain defenses with real `hb-user` processes in namespaces: redundant
//! links, quorum by ping targets, resolution when a partition heals, fencing and
//! notify hooks, periodic gratuitous ARP. Partitions are made in the switch
//! namespace with nftables (carriers stay up, as when a switch or ACL fails).

use hb_tests::cluster::{exclusive, test_lan, Cluster, NodeState, BOUND, CLIENT_IP, FAST, VIP};
use nix::sys::signal::Signal;
use std::{
    sync::MutexGuard,
    time::{Duration, Instant},
};

fn cluster(
    tag: &str,
    priorities: &[u8],
    extra: &[&str],
    links: usize,
) -> (MutexGuard<'static, ()>, Cluster) {
    let mut args = FAST.to_vec();
    args.extend_from_slice(extra);
    let (guard, mut c) = test_lan(tag, priorities, &args, links);
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    (guard, c)
}

/// Samples for `d`: node `id` alone holds the VIP the whole time.
#[test]
fn redundant_links_fail_over_only_when_every_link_is_silent() {
    let (_g, c) = cluster("rl", &[100, 90], &[], 2);
    // Cut link eth1 of node 1 at the switch: node 2 still hears it on eth0.
    c.partition(&[("n1e1", None)]).unwrap();
    c.holds_steadily(1, Duration::from_secs(1));
    // Node 2's rows for node 1: one per link, eth1 dead, eth0 alive; still BACKUP.
    let per_link = |c: &Cluster| {
        let r = c.report(2).unwrap();
        let alive = |link: &str| {
            r.peers
                .iter()
                .find(|p| p.peer == 1 && p.link == link)
                .map(|p| p.alive)
        };
        (alive("eth0"), alive("eth1"))
    };
    assert!(
        c.wait_for(BOUND, |c| per_link(c) == (Some(true), Some(false))),
        "per-link rows: {:?}\n{}",
        c.report(2),
        c.log(2)
    );
    assert_eq!(c.state_of(2), Some(NodeState::Backup));
    // Cut eth0 too: now node 1 is silent on every link and node 2 takes over.
    c.partition(&[("n1e0", None), ("n1e1", None)]).unwrap();
    assert!(
        c.wait_for(BOUND, |c| c.holders().contains(&2)),
        "{}",
        c.logs()
    );
    let s = c.status_of(2).unwrap();
    assert!(s.seen.peer_silent >= 1, "node 1 silent: {s:?}");
}

#[test]
fn the_isolated_node_holds_no_vip_and_the_connected_one_does() {
    let ping = CLIENT_IP.to_string();
    let (_g, c) = cluster("qu", &[100, 90], &["--ping", &ping], 1);
    // Node 1 (the holder) is cut off from everything: no peer, no ping target.
    c.partition(&[("n1e0", None)]).unwrap();
    c.expect_single_holder(2, BOUND);
    assert!(
        c.wait_for(BOUND, |c| c.status_of(1).is_some_and(|s| s.state
            == NodeState::Fault
            && s.reason.starts_with("isolated"))),
        "{:?}\n{}",
        c.status_of(1),
        c.log(1)
    );
    c.holds_steadily(2, Duration::from_secs(1));
    // Heal; node 1 comes back through INIT and takes the VIP back (preemption).
    c.heal().unwrap();
    c.expect_single_holder(1, BOUND);
    // Now node 2 is the isolated one: node 1 keeps the VIP, node 2 goes FAULT.
    c.partition(&[("n2e0", None)]).unwrap();
    assert!(
        c.wait_for(BOUND, |c| c
            .report(2)
            .is_ok_and(|r| r.node.is_some_and(|n| n.state == NodeState::Fault))),
        "{}\n{:?}",
        c.log(2),
        c.report(2)
    );
    c.holds_steadily(1, Duration::from_secs(1));
}

#[test]
fn a_healed_partition_leaves_one_holder_the_higher_one() {
    let (_g, c) = cluster("he", &[100, 90], &[], 1);
    // The client has a neighbour entry for the VIP (gratuitous ARP only updates one).
    assert_eq!(c.client_reach_vip(), Some(c.node(1).mac));
    // The nodes cannot hear each other, the client reaches both: both take the VIP.
    c.partition(&[("n1e0", Some("n2e0"))]).unwrap();
    assert!(
        c.wait_for(BOUND, |c| c.holders() == [1, 2]),
        "{:?}\n{}",
        c.holders(),
        c.logs()
    );
    // Node 2's gratuitous ARP turned the client towards it.
    assert!(c.wait_for(BOUND, |c| c.client_vip_mac() == Some(c.node(2).mac)));
    // Let node 2's announcement burst end inside the partition: after the heal only
    // heartbeats tell node 1 that node 2 held the VIP.
    std::thread::sleep(Duration::from_millis(300));
    let healed = Instant::now();
    c.heal().unwrap();
    c.expect_single_holder(1, BOUND);
    let single = healed.elapsed();
    eprintln!(
        "partition heal to a single holder: {} ms (figure, not a bound)",
        single.as_millis()
    );
    // The winner re-announced, so the client points at it again.
    let n1 = c.node(1).mac;
    assert!(
        c.wait_for(BOUND, |c| c.client_vip_mac() == Some(n1)),
        "client still at {:?}\n{}",
        c.client_vip_mac(),
        c.logs()
    );
    // (The status file follows within a second.)
    assert!(
        c.wait_for(BOUND, |c| c.status_of(1).is_some_and(|s| s
            .seen
            .announces
            .get("peer rejoined")
            .is_some_and(|&n| n >= 1))),
        "node 1 did not re-announce for the rejoined peer: {:?}",
        c.status_of(1)
    );
}

#[test]
fn periodic_gratuitous_arp_corrects_a_stale_client_cache() {
    let (_g, c) = cluster("gr", &[100, 90], &["--garp-refresh", "300ms"], 1);
    c.lab
        .exec(
            &c.client,
            &[
                "ip",
                "neigh",
                "replace",
                &VIP.to_string(),
                "lladdr",
                "02:00:00:00:00:99",
                "dev",
                "eth0",
                "nud",
                "stale",
            ],
        )
        .unwrap();
    let n1 = c.node(1).mac;
    assert!(
        c.wait_for(Duration::from_secs(3), |c| c.client_vip_mac() == Some(n1)),
        "{:?}",
        c.client_vip_mac()
    );
}

/// A two-node cluster with `--fence-cmd <script>`; the script logs its arguments.
fn fence_case(tag: &str, script: &str) -> (MutexGuard<'static, ()>, Cluster, std::path::PathBuf) {
    let guard = exclusive();
    hb_tests::require_root("fencing tests");
    let mut c = Cluster::new(tag, &[100, 90], FAST).unwrap();
    let calls = c.lab.scratch.join("fence.calls");
    let path = c.lab.scratch.join("fence.sh");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"$@ [$HB_FENCE_PEERS]\" >> {}\n{script}\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let extra = vec![
        "--fence-cmd".to_string(),
        path.display().to_string(),
        "--fence-timeout".into(),
        "500ms".into(),
    ];
    c.nodes[1].extra = extra;
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    (guard, c, calls)
}

#[test]
fn fencing_that_succeeds_lets_the_backup_take_over() {
    let (_g, mut c, calls) = fence_case("fo", "exit 0");
    c.signal(1, Signal::SIGKILL).unwrap();
    assert!(
        c.wait_for(BOUND, |c| c.holders().contains(&2)),
        "{}",
        c.logs()
    );
    let calls = std::fs::read_to_string(calls).unwrap();
    assert_eq!(
        calls.trim(),
        "1 [1]",
        "fenced once, peer 1 as argument and in HB_FENCE_PEERS"
    );
}

#[test]
fn fencing_that_fails_or_hangs_keeps_the_backup_without_the_vip() {
    for (tag, script) in [("ff", "exit 1"), ("fh", "sleep 30")] {
        let (_g, mut c, calls) = fence_case(tag, script);
        c.signal(1, Signal::SIGKILL).unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            assert!(
                !c.holders().contains(&2),
                "{script}: node 2 took the VIP unfenced\n{}",
                c.log(2)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let tries = std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .count();
        assert!(
            tries >= 2,
            "{script}: fencing retried, {tries} call(s)\n{}",
            c.log(2)
        );
        // Each try failed (a 30 s hang ended by --fence-timeout 500ms: the
        // retries within 3 s show it).
        let s = c.status_of(2).unwrap();
        assert!(
            s.seen.fence_failures >= 2 && s.state == NodeState::Backup,
            "{script}: {s:?}\n{}",
            c.log(2)
        );
    }
}

#[test]
fn a_graceful_stop_needs_no_fencing() {
    let (_g, mut c, calls) = fence_case("fl", "exit 1");
    c.signal(1, Signal::SIGTERM).unwrap();
    c.expect_single_holder(2, BOUND);
    assert!(!calls.exists(), "no fencing after a leave");
}

#[test]
fn notify_sees_every_transition_once_in_order_even_when_slow() {
    let _g = exclusive();
    hb_tests::require_root("notify tests");
    let mut c = Cluster::new("nt", &[100, 90], FAST).unwrap();
    let out = c.lab.scratch.join("notify.out");
    let hook = c.lab.scratch.join("notify.sh");
    // Slower than the 20 ms interval: transitions queue up behind it.
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nsleep 1\necho \"$1 $2 $HB_NEW_STATE|$5\" >> {}\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    c.nodes[1].extra = vec!["--notify".into(), hook.display().to_string()];
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    c.signal(1, Signal::SIGKILL).unwrap();
    assert!(c.wait_for(BOUND, |c| c.holders().contains(&2)));
    // The failover did not wait for the hook: its MASTER line is not written yet.
    let so_far = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        !so_far.contains("MASTER BACKUP"),
        "hook ran before the takeover finished? {so_far}"
    );
    c.start(1).unwrap();
    assert!(
        c.wait_for(BOUND, |c| !c.holders().contains(&2)),
        "{}",
        c.logs()
    );
    let expected = [
        "BACKUP INIT BACKUP",
        "MASTER BACKUP MASTER",
        "BACKUP MASTER BACKUP",
    ];
    assert!(
        c.wait_for(Duration::from_secs(8), |_| std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .count()
            >= 3)
    );
    std::thread::sleep(Duration::from_millis(500));
    let lines: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let got: Vec<&str> = lines.iter().map(|l| l.split('|').next().unwrap()).collect();
    assert_eq!(got, expected, "{lines:?}\n{}", c.log(2));
    assert!(
        lines[1].contains("peer 1 silent"),
        "the reason arrives: {lines:?}"
    );
}

#[test]
fn a_foreign_arp_claim_for_the_vip_is_seen_reported_and_answered() {
    let (_g, c) = cluster("cf", &[100, 90], &[], 1);
    assert_eq!(c.client_reach_vip(), Some(c.node(1).mac));
    // An impostor on the client's segment claims the VIP, and the client believed it.
    let fake = [0x02, 0, 0, 0, 0, 0x66];
    let (req, rep) = (
        hb_user::garp::frame(fake, VIP, false),
        hb_user::garp::frame(fake, VIP, true),
    );
    c.lab.send_frames(&c.client, "eth0", &[&req, &rep]).unwrap();
    c.lab
        .exec(
            &c.client,
            &[
                "ip",
                "neigh",
                "replace",
                &VIP.to_string(),
                "lladdr",
                "02:00:00:00:00:66",
                "dev",
                "eth0",
                "nud",
                "stale",
            ],
        )
        .unwrap();
    // The holder's XDP counted it with the MAC, and the holder re-announced...
    let announced = |c: &Cluster, id: u32| {
        c.status_of(id)
            .and_then(|s| s.seen.announces.get("conflict").copied())
            .unwrap_or(0)
    };
    assert!(
        c.wait_for(BOUND, |c| announced(c, 1) >= 1),
        "{:?}\n{}",
        c.status_of(1),
        c.log(1)
    );
    let r = c.report(1).unwrap();
    assert!(r.vip_conflicts[0].conflicts >= 2, "{r:?}");
    assert_eq!(r.vip_conflicts[0].last_mac, "02:00:00:00:00:66");
    // ...so the client points at the holder again; the backup only reported it.
    let n1 = c.node(1).mac;
    assert!(
        c.wait_for(BOUND, |c| c.client_vip_mac() == Some(n1)),
        "client at {:?}\n{}",
        c.client_vip_mac(),
        c.logs()
    );
    assert!(
        c.wait_for(BOUND, |c| c
            .report(2)
            .is_ok_and(|r| r.vip_conflicts[0].conflicts >= 1)),
        "{:?}\n{}",
        c.report(2),
        c.log(2)
    );
    assert_eq!(announced(&c, 2), 0, "the backup does not announce");
    assert_eq!(c.holders(), [1]);
}

#[test]
fn ipv6_vip_fails_over_and_the_client_follows() {
    let _g = exclusive();
    hb_tests::require_root("IPv6 failover test");
    let mut c = hb_tests::cluster::Cluster::new_ipv6("v6", &[100, 90], FAST).unwrap();
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    assert_eq!(
        c.client_reach_vip6(),
        Some(c.node(1).mac),
        "client reaches the IPv6 VIP at node 1\n{}",
        c.logs()
    );
    // Heartbeats went over IPv6: the peer entry's source is node 1's IPv6 address
    // (or the VIP, which source address selection may prefer while node 1 holds it).
    let r = c.report(2).unwrap();
    let src = &r.peers[0].src;
    assert!(src == "fd00:203::1" || src == "fd00:203::100", "{r:?}");
    c.signal(1, Signal::SIGKILL).unwrap();
    assert!(
        c.wait_for(BOUND, |c| c.holders().contains(&2)),
        "{}",
        c.logs()
    );
    let n2 = c.node(2).mac;
    // The unsolicited neighbour advertisement moved the client's entry to node 2.
    assert!(
        c.wait_for(BOUND, |c| c.client_reach_vip6() == Some(n2)),
        "{}",
        c.logs()
    );
    let s = c.status_of(2).unwrap();
    assert_eq!(s.state, NodeState::Master, "{s:?}");
    let vip6 = std::net::IpAddr::V6(hb_tests::cluster::VIP6);
    assert!(
        s.holds_vip
            && s.vips
                .iter()
                .any(|v| v.vip.addr == vip6 && v.iface == "eth0"),
        "{s:?}"
    );
}
