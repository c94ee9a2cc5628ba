//! The event ring the controller waits on: which peers' messages and which ARP
//! claims are news.

use super::{
    assert_arp, assert_refused, forged, hb, hb_frame, holding_plane, news, notice_bytes, peer_gone,
    plane, run, v4, FOREIGN_MAC, OURS, OUR_NODE, PEER, PS, PS2, VIP,
};
use hb_common::{
    maps::{Outcome, EVENT_CLAIM, EVENT_GONE, EVENT_PEER},
    wire::DEFAULT_PORT,
    wire2::{Head, BODY},
    MsgType, NodeState,
};
use hb_tests::frames::{self, Ipv4Frame};
use std::time::Duration;

/// The controller waits on the event ring instead of polling the maps: a peer
/// first heard, heard after a quiet gap, in a newly adopted session, or saying
/// something new is news; its steady heartbeats are not; nor is a refused
/// message or a handshake step.
#[test]
fn peers_are_news_when_new_changed_or_back_from_quiet() {
    let dp = plane();
    let mut ring = dp.events().unwrap();
    assert_eq!(news(&mut ring), []);
    let hello = frames::head(PEER, OUR_NODE, PS, 1, (0, 0));
    assert_eq!(run(&dp, &v4(&hello)).2, Outcome::Handshake);
    assert_eq!(news(&mut ring), [], "a handshake step is no news");
    assert_eq!(run(&dp, &hb_frame(2)).2, Outcome::Accepted);
    assert_eq!(news(&mut ring), [(EVENT_PEER, PEER)], "first heard");
    assert_eq!(run(&dp, &hb_frame(3)).2, Outcome::Accepted);
    assert_eq!(news(&mut ring), [], "steady: no news (quiet is 50 ms)");
    assert_refused(&dp, &hb_frame(3), Outcome::Replayed);
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &forged(&hb(4))).build(),
        Outcome::BadMac,
    );
    assert_eq!(news(&mut ring), [], "a refused message is no news");
    // A new state (the frames say MASTER otherwise).
    let backup = |seq| Head {
        state: NodeState::Backup as u8,
        ..hb(seq)
    };
    assert_eq!(run(&dp, &v4(&backup(4))).2, Outcome::Accepted);
    assert_eq!(news(&mut ring), [(EVENT_PEER, PEER)], "state changed");
    // New flags, a new body generation, a new type: news each.
    let changes = [
        (
            "flags",
            Head {
                flags: 0,
                ..backup(5)
            },
        ),
        (
            "body generation",
            Head {
                flags: 0,
                body_gen: 2,
                ..backup(6)
            },
        ),
        (
            "type",
            Head {
                flags: 0,
                body_gen: 2,
                msg_type: MsgType::Leave,
                ..backup(7)
            },
        ),
    ];
    for (what, h) in changes {
        assert_eq!(run(&dp, &v4(&h)).2, Outcome::Accepted, "{what}");
        assert_eq!(news(&mut ring), [(EVENT_PEER, PEER)], "{what} changed");
    }
    // A body altered alone (same head bytes 3..8) is no news: the head says so.
    let mut b = frames::message(&Head {
        flags: 0,
        body_gen: 2,
        msg_type: MsgType::Leave,
        ..backup(8)
    });
    b[BODY] ^= 1;
    assert_eq!(
        run(&dp, &Ipv4Frame::udp(DEFAULT_PORT, &b).build()).2,
        Outcome::Accepted
    );
    assert_eq!(news(&mut ring), []);
    // A new session (a restart) saying the same.
    let restarted = Head {
        session: PS2,
        seq: 1,
        your_session: OURS,
        your_seq: 99,
        ..Head {
            flags: 0,
            body_gen: 2,
            msg_type: MsgType::Leave,
            ..backup(1)
        }
    };
    assert_eq!(run(&dp, &v4(&restarted)).2, Outcome::Accepted);
    assert_eq!(news(&mut ring), [(EVENT_PEER, PEER)], "new session");
    // Back after a quiet gap longer than `quiet`.
    std::thread::sleep(Duration::from_millis(60));
    let again = Head {
        seq: 2,
        ..restarted
    };
    assert_eq!(run(&dp, &v4(&again)).2, Outcome::Accepted);
    assert_eq!(news(&mut ring), [(EVENT_PEER, PEER)], "after a quiet gap");
    // A death notice.
    let notice = Head {
        session: PS2,
        ..peer_gone((OURS, 100))
    };
    assert_eq!(
        run(
            &dp,
            &Ipv4Frame::udp(DEFAULT_PORT, &notice_bytes(&notice)).build()
        )
        .2,
        Outcome::Gone
    );
    assert_eq!(news(&mut ring), [(EVENT_GONE, PEER)], "death notice");
}

/// ARP claiming a VIP is news once per new claimant or after a quiet gap: a
/// flood of claims wakes the controller once.
#[test]
fn vip_claims_are_news_once_per_claimant_not_per_packet() {
    let dp = holding_plane();
    let mut ring = dp.events().unwrap();
    let vip = u32::from_ne_bytes(VIP.octets());
    let claim = |mac| frames::arp(1, mac, VIP.octets(), frames::DST_IP);
    for _ in 0..20 {
        assert_arp(&dp, &claim(FOREIGN_MAC), Outcome::ArpConflict, "flood");
    }
    assert_eq!(
        news(&mut ring),
        [(EVENT_CLAIM, vip)],
        "one event for the flood"
    );
    let other = [0x02, 0, 0, 0, 0, 0x77];
    assert_arp(&dp, &claim(other), Outcome::ArpConflict, "second claimant");
    assert_eq!(news(&mut ring), [(EVENT_CLAIM, vip)], "a new claimant");
    std::thread::sleep(Duration::from_millis(60));
    assert_arp(&dp, &claim(FOREIGN_MAC), Outcome::ArpConflict, "later");
    assert_eq!(news(&mut ring), [(EVENT_CLAIM, vip)], "after a quiet gap");
}
