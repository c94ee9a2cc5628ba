//! The MACs: a message under another key, or with any bit of its head
//! flipped, is no life and changes nothing; the head alone decides liveness,
//! and a body altered in flight is stored as it came for the controller to
//! refuse.

use super::{
    assert_refused, forged, hb, hb_frame, peer, peer_state, plane, run, seen, OUR_NODE, PEER, PS,
    XDP_DROP, XDP_TX,
};
use hb_common::{
    maps::{Outcome, Seen},
    wire::DEFAULT_PORT,
    wire2::{self, BODY, LEN},
};
use hb_tests::frames::{self, key, Ipv4Frame};

#[test]
fn wrong_key_is_refused() {
    let dp = plane();
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &forged(&hb(1))).build(),
        Outcome::BadMac,
    );
    // A genuine message with one head MAC bit flipped.
    let mut b = frames::message(&hb(1));
    b[BODY - 1] ^= 1;
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &b).build(),
        Outcome::BadMac,
    );
    // A forged first contact gets no echo either.
    let hello = frames::head(PEER, OUR_NODE, PS, 1, (0, 0));
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &forged(&hello)).build(),
        Outcome::BadMac,
    );
    assert_eq!(peer(&dp).accepted, 0);
    assert_eq!(seen(&dp), Seen::default());
}

/// Every bit of the head is covered: flipped anywhere, a message that would
/// have counted as life does not, and nothing of the peer changes (the check
/// that catches it depends on the field: magic, version, type, cluster, the
/// addressed node, the sender, else the head MAC).
#[test]
fn any_bit_flipped_in_the_head_is_no_life() {
    let dp = plane();
    assert_eq!(run(&dp, &hb_frame(1)).2, Outcome::Accepted);
    let good = frames::message(&hb(2));
    let before = peer_state(&dp);
    for bit in 0..BODY * 8 {
        let mut b = good;
        b[bit / 8] ^= 1 << (bit % 8);
        let (action, _, outcome) = run(&dp, &Ipv4Frame::udp(DEFAULT_PORT, &b).build());
        assert_ne!(outcome, Outcome::Accepted, "bit {bit} flipped was accepted");
        assert_ne!(action, XDP_TX, "bit {bit}");
        assert_eq!(
            peer_state(&dp),
            before,
            "bit {bit} flipped changed the peer"
        );
    }
    assert_eq!(
        run(&dp, &Ipv4Frame::udp(DEFAULT_PORT, &good).build()).2,
        Outcome::Accepted
    );
}

/// The head alone decides liveness; the controller checks the body MAC when it
/// reads the entry. A body altered in flight still proves the peer alive (the
/// head is intact), and is stored as it came, for the controller to refuse.
#[test]
fn a_body_altered_in_flight_is_still_life_and_stored_as_it_came() {
    let dp = plane();
    assert_eq!(run(&dp, &hb_frame(1)).2, Outcome::Accepted);
    for (seq, at) in [
        (2u64, BODY),
        (3, BODY + 35),
        (4, wire2::BODY_MAC),
        (5, LEN - 1),
    ] {
        let mut b = frames::message(&hb(seq));
        b[at] ^= 0x40;
        assert!(wire2::head_mac_ok(&b, &key()) && !wire2::body_mac_ok(&b, &key()));
        let (action, _, outcome) = run(&dp, &Ipv4Frame::udp(DEFAULT_PORT, &b).build());
        assert_eq!(
            (action, outcome),
            (XDP_DROP, Outcome::Accepted),
            "byte {at}"
        );
        let p = peer(&dp);
        assert_eq!((p.seq, p.accepted), (seq, seq), "byte {at}");
        assert_eq!(p.message, b, "stored as it came (byte {at})");
        assert!(
            !wire2::body_mac_ok(&p.message, &key()),
            "the controller sees the damage"
        );
    }
    // A body under another key, with a valid head: also life, also refused by
    // the controller's body check.
    let mut b = frames::message(&hb(6));
    b[BODY..].copy_from_slice(&forged(&hb(6))[BODY..]);
    assert_eq!(
        run(&dp, &Ipv4Frame::udp(DEFAULT_PORT, &b).build()).2,
        Outcome::Accepted
    );
    assert!(!wire2::body_mac_ok(&peer(&dp).message, &key()));
}
