//! Another machine sending as our node id: an id collision, recorded in our
//! own entry.

use super::{
    assert_passes_untouched, assert_refused, forged, news, peer, plane, run, seen, v4, v6,
    OTHER_PEER, OURS, OUR_NODE, PEER, PS, SENT_SEQ, XDP_DROP,
};
use hb_common::{
    maps::{Outcome, PeerState, EVENT_COLLISION},
    wire::DEFAULT_PORT,
};
use hb_tests::frames::{self, Ipv4Frame};
use hb_user::loader::DataPlane;
use std::time::Duration;

/// Our own entry, where id collisions are recorded.
fn own(dp: &DataPlane) -> PeerState {
    dp.peer(OUR_NODE)
        .unwrap()
        .expect("the controller inserts an entry for its own id")
}

/// Another machine sending as our node id, in another session: dropped,
/// counted and recorded in our own entry for the controller. Our own message
/// reflected back (our session) is none: it passes.
#[test]
fn another_machine_with_our_id_is_an_id_collision() {
    let dp = plane();
    let mut ring = dp.events().unwrap();
    // The controller's entries: the peers at their slots, our own apart.
    assert_eq!(
        own(&dp),
        PeerState {
            slot: u32::MAX,
            ..PeerState::default()
        }
    );
    assert_eq!(
        (peer(&dp).slot, dp.peer(OTHER_PEER).unwrap().unwrap().slot),
        (0, 1)
    );
    const TWIN: u64 = 0x7717_0000_0000_0001;
    let peers = (peer(&dp), dp.peer(OTHER_PEER).unwrap(), seen(&dp));
    let t0 = hb_tests::monotonic_ns();
    let twin = frames::head(OUR_NODE, OUR_NODE, TWIN, 5, (0, 0));
    let (action, _, outcome) = run(&dp, &v4(&twin));
    let t1 = hb_tests::monotonic_ns();
    assert_eq!((action, outcome), (XDP_DROP, Outcome::IdCollision));
    let me = own(&dp);
    assert!(t0 <= me.last_seen_ns && me.last_seen_ns <= t1);
    assert_eq!((me.session, me.accepted, me.slot), (TWIN, 1, u32::MAX));
    assert_eq!(news(&mut ring), [(EVENT_COLLISION, OUR_NODE)]);
    // Its messages to a peer, should they reach us, and over IPv6: the same.
    let to_peer = frames::head(OUR_NODE, PEER, TWIN, 6, (PS, 3));
    assert_eq!(run(&dp, &v4(&to_peer)).2, Outcome::IdCollision);
    assert_eq!(run(&dp, &v6(&twin).build()).2, Outcome::IdCollision);
    assert_eq!(own(&dp).accepted, 3);
    assert_eq!(
        news(&mut ring),
        [],
        "a steady collision is news once per quiet"
    );
    // A forged one proves nothing.
    let f = Ipv4Frame::udp(
        DEFAULT_PORT,
        &forged(&frames::head(OUR_NODE, OUR_NODE, 0x666, 1, (0, 0))),
    )
    .build();
    assert_refused(&dp, &f, Outcome::BadMac);
    // Our own messages, reflected: our session, no collision; they pass.
    let before = own(&dp);
    for to in [PEER, OUR_NODE] {
        let mine = frames::head(OUR_NODE, to, OURS, SENT_SEQ, (PS, 3));
        assert_passes_untouched(&dp, &v4(&mine), "our own message");
    }
    assert_eq!(own(&dp), before);
    // The peers' entries are untouched by all of it.
    assert_eq!((peer(&dp), dp.peer(OTHER_PEER).unwrap(), seen(&dp)), peers);
    // After a quiet gap the collision is news again.
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(run(&dp, &v4(&twin)).2, Outcome::IdCollision);
    assert_eq!(news(&mut ring), [(EVENT_COLLISION, OUR_NODE)]);
    assert_eq!(dp.stats().unwrap().id_collision, 4);
}
