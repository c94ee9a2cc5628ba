//! The session rules (docs/PROTOCOL.md): the three-way handshake, nothing
//! adopted before we published a session, and another session of a peer
//! adopted only when it proves itself fresh (an echo of our session and of a
//! recent seq of ours).

use super::{
    assert_handshake, assert_life, assert_refused, hb_frame, news, peer, peer_state, plane, run,
    seen, silent_plane, v4, v6, we_sent, OLD_OURS, OURS, OUR_NODE, PEER, PS, PS2, RECENT_LO,
    SENT_SEQ, XDP_DROP,
};
use hb_common::maps::{Outcome, PeerState, Seen, EVENT_PEER};
use hb_tests::frames;

/// The three-way handshake of docs/PROTOCOL.md as the receiver sees it: the
/// peer's first message knows no session of ours (echo 0): we echo its
/// session, no life yet. Its next one echoes our session and a recent seq of
/// ours: its session is adopted, life. Then each higher seq is life.
#[test]
fn the_handshake_echoes_then_adopts_then_accepts() {
    let dp = plane();
    let mut ring = dp.events().unwrap();
    let fresh = peer(&dp);
    assert_eq!(
        fresh,
        PeerState {
            slot: 0,
            ..PeerState::default()
        }
    );
    // 1. First contact: echoed.
    let hello = frames::head(PEER, OUR_NODE, PS, 1, (0, 0));
    assert_handshake(&dp, &v4(&hello), "first contact");
    assert_eq!(
        peer(&dp),
        fresh,
        "the entry is not touched: nothing adopted"
    );
    assert_eq!(
        seen(&dp),
        Seen {
            last_seen_ns: 0,
            echo_session: PS,
            echo_seq: 1
        },
        "our next message to the peer echoes its session and seq"
    );
    assert_eq!(news(&mut ring), [], "no life, no news");
    // Its repetition, or a next first contact, is echoed again (no session adopted yet).
    let hello2 = frames::head(PEER, OUR_NODE, PS, 2, (0, 0));
    assert_handshake(&dp, &v4(&hello2), "second first contact");
    assert_eq!((seen(&dp).echo_session, seen(&dp).echo_seq), (PS, 2));
    // 2. The peer heard our echo: its message echoes our session and seq 97.
    let t0 = hb_tests::monotonic_ns();
    let proven = frames::head(PEER, OUR_NODE, PS, 3, (OURS, 97));
    let (action, _, outcome) = run(&dp, &v4(&proven));
    let t1 = hb_tests::monotonic_ns();
    assert_eq!((action, outcome), (XDP_DROP, Outcome::Accepted), "adopted");
    let p = peer(&dp);
    assert_eq!((p.session, p.seq, p.accepted), (PS, 3, 1));
    assert!(t0 <= p.adopted_ns && p.adopted_ns <= t1);
    assert_eq!(p.last_seen_ns, p.adopted_ns);
    assert_eq!(
        seen(&dp),
        Seen {
            last_seen_ns: p.last_seen_ns,
            echo_session: PS,
            echo_seq: 3
        }
    );
    assert_eq!(
        news(&mut ring),
        [(EVENT_PEER, PEER)],
        "a newly adopted session"
    );
    // 3. Established: every higher seq is life, whatever recent seq it echoes
    //    (the peer may not have heard our last one yet).
    for (seq, echo) in [(4u64, 97u64), (5, 100), (9, 3)] {
        let h = frames::head(PEER, OUR_NODE, PS, seq, (OURS, echo));
        assert_life(&dp, &v4(&h), &format!("seq {seq}"));
        assert_eq!(peer(&dp).seq, seq);
    }
    assert_eq!(peer(&dp).adopted_ns, p.adopted_ns);
    assert_eq!(dp.stats().unwrap().handshake, 2);
    assert_eq!(dp.stats().unwrap().accepted, 4);
}

/// A data plane that has published nothing yet (session 0) adopts nobody:
/// nothing can echo a session it does not have. A first contact is echoed as
/// usual, so that the handshake goes on once we send.
#[test]
fn before_our_first_heartbeat_nothing_is_adopted() {
    let dp = silent_plane();
    for (seq, (what, your)) in (1u64..).zip([
        ("first contact", (0, 0)),
        ("an echo of session 0", (0, 1)),
        ("an echo of some session", (OURS, 1)),
    ]) {
        let h = frames::head(PEER, OUR_NODE, PS, seq, your);
        assert_handshake(&dp, &v4(&h), what);
        assert_eq!(peer(&dp), PeerState::default(), "{what}");
        assert_eq!(
            (seen(&dp).echo_session, seen(&dp).echo_seq),
            (PS, seq),
            "{what}"
        );
    }
    // Once we sent, the peer's echo of it adopts its session.
    we_sent(&dp, OURS, 1, 0);
    let h = frames::head(PEER, OUR_NODE, PS, 4, (OURS, 1));
    assert_life(&dp, &v4(&h), "an echo of our first heartbeat");
}

/// Another session of the peer than the adopted one counts only when it proves
/// itself fresh: an echo of our session and a seq of ours in the recent range.
#[test]
fn an_earlier_session_of_a_restarted_peer_is_not_adopted_again() {
    let dp = plane();
    assert_eq!(run(&dp, &hb_frame(10)).2, Outcome::Accepted);
    // The peer restarted and proved its new session with an echo of our seq 95.
    let new = frames::head(PEER, OUR_NODE, PS2, 1, (OURS, 95));
    assert_life(&dp, &v4(&new), "the new session");
    // A capture of the old session, echoing an older seq of ours that is still
    // recent: it must not take the peer's entry back.
    let old = frames::head(PEER, OUR_NODE, PS, 11, (OURS, 93));
    assert_refused(&dp, &v4(&old), Outcome::StaleSession);
    assert_eq!(peer(&dp).session, PS2);
}

#[test]
fn another_session_not_proven_fresh_is_stale() {
    let dp = plane();
    assert_eq!(run(&dp, &hb_frame(40)).2, Outcome::Accepted);
    for (what, your) in [
        (
            "a restarted peer's first message (it knows no session of ours)",
            (0, 0),
        ),
        ("an echo of an old seq of ours", (OURS, RECENT_LO)),
        ("an echo of a seq we never sent", (OURS, SENT_SEQ + 1)),
        ("an echo of our previous session", (OLD_OURS, 95)),
    ] {
        let h = frames::head(PEER, OUR_NODE, PS2, 1, your);
        let before = peer_state(&dp);
        let (action, _, outcome) = run(&dp, &v4(&h));
        assert_eq!(
            (action, outcome),
            (XDP_DROP, Outcome::StaleSession),
            "{what}"
        );
        assert_eq!(
            peer_state(&dp),
            before,
            "{what}: nothing echoed, nothing adopted"
        );
    }
    // Over IPv6 the same.
    let h = frames::head(PEER, OUR_NODE, PS2, 1, (OURS, 50));
    assert_refused(&dp, &v6(&h).build(), Outcome::StaleSession);
    // Proven: adopted, and the previous session is then the stale one.
    let h = frames::head(PEER, OUR_NODE, PS2, 2, (OURS, RECENT_LO + 2));
    assert_life(&dp, &v4(&h), "proven fresh");
    assert_eq!((peer(&dp).session, peer(&dp).seq), (PS2, 2));
    let back = frames::head(PEER, OUR_NODE, PS, 41, (OURS, 50));
    assert_refused(&dp, &v4(&back), Outcome::StaleSession);
    assert_eq!(dp.stats().unwrap().stale_session, 6);
}
