//! Peers still speaking wire version 1: recorded as old, never life.

use super::{
    assert_life, assert_refused, hb_frame, news, peer, peer_state, plane, run, PEER, PS, WRONG_KEY,
    XDP_DROP,
};
use hb_common::{
    maps::{Outcome, EVENT_PEER},
    wire::DEFAULT_PORT,
    MsgType, NodeState,
};
use hb_tests::frames::{self, Ipv4Frame, Ipv6Frame, CLUSTER};

/// A v1 heartbeat (or leave) of `node_id`, signed with the cluster key.
fn v1_frame(node_id: u32, seq: u64, leave: bool) -> Vec<u8> {
    Ipv4Frame::udp(DEFAULT_PORT, &frames::v1_heartbeat(node_id, 3, seq, leave)).build()
}

/// A configured peer that still speaks wire version 1 is recorded (the
/// controller names it and stays out of its way) but never counts as life;
/// its v1 leave ends that.
#[test]
fn a_v1_peer_is_recorded_as_old_and_never_counts_as_life() {
    let dp = plane();
    let mut ring = dp.events().unwrap();
    let fresh = peer_state(&dp);
    let t0 = hb_tests::monotonic_ns();
    let (action, _, outcome) = run(&dp, &v1_frame(PEER, 1, false));
    let t1 = hb_tests::monotonic_ns();
    assert_eq!((action, outcome), (XDP_DROP, Outcome::OldVersion));
    let p = peer(&dp);
    assert!(
        t0 <= p.old_version_ns && p.old_version_ns <= t1,
        "{}",
        p.old_version_ns
    );
    let (mut entries, slot) = fresh.clone();
    for (id, e) in &mut entries {
        if *id == PEER {
            e.old_version_ns = p.old_version_ns;
        }
    }
    assert_eq!(
        peer_state(&dp),
        (entries, slot),
        "nothing else: no life, no echo"
    );
    assert_eq!(news(&mut ring), [(EVENT_PEER, PEER)], "an old peer is news");
    // More of them (a replayed one too: v1 anti-replay is not kept) renew it.
    for seq in [2, 3, 3] {
        let before = peer(&dp).old_version_ns;
        let (action, _, outcome) = run(&dp, &v1_frame(PEER, seq, false));
        assert_eq!((action, outcome), (XDP_DROP, Outcome::OldVersion));
        assert!(peer(&dp).old_version_ns >= before);
    }
    assert_eq!(news(&mut ring), [], "steady: no news within quiet");
    let v6 = Ipv6Frame::udp(DEFAULT_PORT, &frames::v1_heartbeat(PEER, 3, 4, false)).build();
    let (action, _, outcome) = run(&dp, &v6);
    assert_eq!(
        (action, outcome),
        (XDP_DROP, Outcome::OldVersion),
        "over IPv6"
    );
    // Only MAC-valid v1 from a configured peer counts.
    let forged = hb_common::wire::Heartbeat {
        msg_type: MsgType::Heartbeat,
        flags: 0,
        priority: 100,
        state: NodeState::Master as u8,
        cluster_id: CLUSTER,
        node_id: PEER,
        epoch: 3,
        seq: 5,
    }
    .encode(&WRONG_KEY);
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &forged).build(),
        Outcome::BadMac,
    );
    assert_refused(&dp, &v1_frame(99, 1, false), Outcome::UnknownNode);
    let mut other_cluster = frames::v1_heartbeat(PEER, 3, 6, false);
    other_cluster[11] ^= 1;
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &other_cluster).build(),
        Outcome::WrongCluster,
    );
    // Meanwhile the peer's v2 messages are life as usual and leave the mark alone.
    let old = peer(&dp).old_version_ns;
    assert_life(&dp, &hb_frame(1), "a v2 heartbeat");
    assert_eq!(peer(&dp).old_version_ns, old);
    let _ = news(&mut ring);
    // A v1 leave: the old node stopped, the mark is cleared.
    let (action, _, outcome) = run(&dp, &v1_frame(PEER, 7, true));
    assert_eq!((action, outcome), (XDP_DROP, Outcome::OldVersion));
    let p = peer(&dp);
    assert_eq!(p.old_version_ns, 0);
    assert_eq!(
        (p.session, p.seq, p.accepted),
        (PS, 1, 1),
        "the v2 state is kept"
    );
    assert_eq!(news(&mut ring), [(EVENT_PEER, PEER)], "its end is news too");
    assert_eq!(dp.stats().unwrap().old_version, 6);
}
