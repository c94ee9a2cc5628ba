//! The kernel's address state is the truth about the VIPs (rtnetlink address
//! events): a VIP removed under the holder (an admin's `ip addr del`, a
//! network manager's flush) is added back and served again; one that cannot
//! be added is not claimed, so the peer serves it.

use hb_tests::cluster::{test_lan, NodeState, BOUND, FAST, IFACE, VIP};
use std::time::{Duration, Instant};

#[test]
fn a_vip_deleted_on_the_holder_is_served_again_within_a_second() {
    let (_g, mut c) = test_lan("vw", &[100, 90], FAST, 1);
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    let probe = c.probe(Duration::from_millis(5)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let deleted = Instant::now();
    c.exec(
        1,
        &["ip", "addr", "del", &format!("{VIP}/24"), "dev", IFACE],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let rec = probe.stop();
    let back = rec
        .replies
        .iter()
        .find(|r| r.at > deleted + Duration::from_millis(20))
        .map(|r| r.at - deleted);
    assert!(
        back.is_some_and(|d| d < Duration::from_secs(1)),
        "the VIP was not served again within 1 s of its deletion: {back:?}\n{}",
        c.logs()
    );
    // One holder, which says so, and counted the re-add.
    c.expect_single_holder(1, BOUND);
    let s = c.status_of(1).unwrap();
    assert!(s.holds_vip, "{s:?}");
    assert!(s.vip_readds >= 1, "{s:?}");
    assert_eq!(c.state_of(2), Some(NodeState::Backup));
}

#[test]
fn a_vip_that_cannot_be_added_is_not_claimed_and_the_peer_serves_it() {
    // A second, IPv6 VIP: with IPv6 switched off on node 1's interface the
    // kernel refuses to add it back (EACCES) once it is gone.
    const VIP6: &str = "fd00:9::100/64";
    let common: Vec<&str> = FAST.iter().copied().chain(["--vip", VIP6]).collect();
    let (_g, mut c) = test_lan("vf", &[100, 90], &common, 1);
    for id in [1, 2] {
        let own = format!("fd00:9::{id}/64");
        c.exec(
            id,
            &["ip", "-6", "addr", "add", &own, "dev", IFACE, "nodad"],
        )
        .unwrap();
    }
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    assert!(c.status_of(1).unwrap().holds_vip);
    let sysctl = format!("net.ipv6.conf.{IFACE}.disable_ipv6=1");
    c.exec(1, &["sysctl", "-qw", &sysctl]).unwrap();
    // Node 1 stops claiming; node 2 takes over; node 1's heartbeats never
    // said it held the VIPs without having them.
    assert!(
        c.wait_for(BOUND, |c| c.state_of(2) == Some(NodeState::Master)),
        "{}",
        c.logs()
    );
    c.expect_single_holder(2, BOUND);
    let s1 = c.report(1).unwrap().node.unwrap();
    assert_eq!(s1.state, NodeState::Fault, "{s1:?}");
    assert!(!s1.holds_vip, "{s1:?}");
    let r2 = c.report(2).unwrap();
    assert!(!r2.peers[0].holds_vip, "{r2:?}");
    // It stays that way while node 1 cannot add the VIP (its retries back off).
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let h = c.holders();
        assert_eq!(h, [2], "holders {h:?}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}
