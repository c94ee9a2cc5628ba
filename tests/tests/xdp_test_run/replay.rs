//! Replays: an old seq of the adopted session is refused, whatever it echoes;
//! captures taken before our current session are no life, whether or not we
//! kept our maps over the restart.

use super::{
    assert_handshake, assert_life, assert_refused, hb_frame, peer, plane, run, v4, we_sent,
    OLD_OURS, OURS, OUR_NODE, PEER, PS, PS2, SENT_SEQ,
};
use hb_common::maps::Outcome;
use hb_tests::frames;

#[test]
fn replays_are_refused() {
    let dp = plane();
    assert_eq!(run(&dp, &hb_frame(10)).2, Outcome::Accepted);
    // The same message, and an older one of the session.
    assert_refused(&dp, &hb_frame(10), Outcome::Replayed);
    assert_refused(&dp, &hb_frame(9), Outcome::Replayed);
    assert_refused(&dp, &hb_frame(1), Outcome::Replayed);
    // Whatever it echoes: an old seq is old.
    let h = frames::head(PEER, OUR_NODE, PS, 10, (OLD_OURS, 5));
    assert_refused(&dp, &v4(&h), Outcome::Replayed);
    assert_eq!(run(&dp, &hb_frame(11)).2, Outcome::Accepted);
    assert_refused(&dp, &hb_frame(11), Outcome::Replayed);
    // The peer restarted (session PS2, proven by its echo of a recent seq of
    // ours): its sequence starts again, and the old session's seqs count for nothing.
    let restarted = |seq| v4(&frames::head(PEER, OUR_NODE, PS2, seq, (OURS, 95)));
    assert_eq!(run(&dp, &restarted(1)).2, Outcome::Accepted);
    assert_refused(&dp, &restarted(1), Outcome::Replayed);
    assert_eq!(run(&dp, &restarted(2)).2, Outcome::Accepted);
    let p = peer(&dp);
    assert_eq!((p.session, p.seq, p.accepted), (PS2, 2, 4));
    assert_eq!(dp.stats().unwrap().replayed, 6);
}

/// Captures taken before our current session echo an old session of ours:
/// whatever the receiver kept or lost, none counts as life.
#[test]
fn captures_from_an_earlier_session_of_ours_are_no_life() {
    // We restarted and lost our maps: every capture is a first contact at
    // most (echoed, not adopted).
    let dp = plane();
    for seq in 1..20 {
        let old = frames::head(PEER, OUR_NODE, PS, seq, (OLD_OURS, seq + 50));
        assert_handshake(&dp, &v4(&old), &format!("capture {seq}"));
    }
    let older = frames::head(PEER, OUR_NODE, 0x0a0a_0001, 7, (0x0b0b_0001, 3));
    assert_handshake(
        &dp,
        &v4(&older),
        "a capture of an older session of the peer",
    );
    let p = peer(&dp);
    assert_eq!((p.session, p.accepted, p.last_seen_ns), (0, 0, 0));

    // We restarted and kept our maps (the pinned data plane was adopted): the
    // peer's session stays adopted, but its messages are life again only once
    // they echo our new session.
    let dp = plane();
    assert_eq!(run(&dp, &hb_frame(10)).2, Outcome::Accepted);
    let heard = peer(&dp);
    const NEW_OURS: u64 = OURS + 0x100;
    we_sent(&dp, NEW_OURS, 1, 0);
    // The peer's messages (and captures) echoing our previous session: no life,
    // though its sequence moves on (the peer has not heard our new session yet).
    assert_handshake(&dp, &hb_frame(11), "an echo of our previous session");
    assert_eq!((peer(&dp).session, peer(&dp).seq), (PS, 11));
    assert_eq!(peer(&dp).last_seen_ns, heard.last_seen_ns);
    assert_refused(&dp, &hb_frame(5), Outcome::Replayed);
    let other = frames::head(PEER, OUR_NODE, PS2, 3, (OURS, SENT_SEQ));
    assert_refused(&dp, &v4(&other), Outcome::StaleSession);
    assert_eq!(peer(&dp).accepted, 1);
    // Once the peer echoes our new session: life.
    let h = frames::head(PEER, OUR_NODE, PS, 12, (NEW_OURS, 1));
    assert_life(&dp, &v4(&h), "an echo of our new session");
}
