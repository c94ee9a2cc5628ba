//! Death notices. With the controller marked dead, a heartbeat that counted as
//! life comes back as a death notice (XDP_TX), byte for byte, and a peer that
//! claims the VIPs then withdraws our lease. A peer's notice is recorded only
//! when it echoes one of our recent heartbeats.

use super::{
    assert_arp, assert_passes_untouched, assert_refused, forged, hb, hb6, hb_frame, holding_plane,
    notice_bytes, peer, peer_gone, peer_state, plane, run, silent_plane, v4, we_sent, FOREIGN_MAC,
    OLD_OURS, OTHER_PEER, OURS, OUR_NODE, PEER, PS, PS2, SENT_SEQ, VIP, WRONG_KEY, XDP_DROP,
    XDP_TX,
};
use hb_common::{
    maps::{Outcome, Owner, PeerState},
    wire::DEFAULT_PORT,
    wire2::{self, Body, Head, BODY, FLAG_HOLDS, LEN},
    MsgType, NodeState,
};
use hb_tests::frames::{self, key, Ipv4Frame, Ipv6Frame, CLUSTER, IPV6_HOPOPTS};
use hb_user::loader::DataPlane;
use std::time::Duration;

/// Marks this data plane's controller (node OUR_NODE, session OURS) dead, as
/// the exit watch would. Its `sent` record stays as it last wrote it.
fn mark_dead(dp: &mut DataPlane) {
    dp.write_owner(Owner {
        pid: 4242,
        node_id: OUR_NODE,
        session: OURS,
        dead_ns: hb_tests::monotonic_ns(),
        ..Default::default()
    })
    .unwrap();
}

/// The head of the notice that answers the peer's heartbeat `h`: the dead
/// controller's session and last seq; your session and seq: the heartbeat's.
fn answer_head(h: &Head) -> Head {
    Head {
        msg_type: MsgType::Gone,
        flags: 0,
        state: 0,
        body_gen: 0,
        cluster_id: CLUSTER,
        from: OUR_NODE,
        to: h.from,
        session: OURS,
        seq: SENT_SEQ,
        your_session: h.session,
        your_seq: h.seq,
    }
}

/// `frame` (Ethernet, IP header at `ip`, UDP, heartbeat) as the answer must
/// leave: addresses swapped, TTL 64, header checksum redone, from and to the
/// heartbeat port, no UDP checksum, `notice` as the payload.
fn v4_answer(frame: &[u8], ip: usize, notice: &[u8; LEN]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[..6].copy_from_slice(&frame[6..12]);
    f[6..12].copy_from_slice(&frame[..6]);
    let ihl = usize::from(f[ip] & 0x0f) * 4;
    f[ip + 8] = 64;
    f[ip + 10..ip + 12].fill(0);
    f[ip + 12..ip + 16].copy_from_slice(&frame[ip + 16..ip + 20]);
    f[ip + 16..ip + 20].copy_from_slice(&frame[ip + 12..ip + 16]);
    let sum = frames::checksum(&f[ip..ip + ihl]);
    f[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
    let u = ip + ihl;
    f[u..u + 2].copy_from_slice(&DEFAULT_PORT.to_be_bytes());
    f[u + 2..u + 4].copy_from_slice(&DEFAULT_PORT.to_be_bytes());
    f[u + 6..u + 8].fill(0);
    f[u + 8..].copy_from_slice(notice);
    f
}

/// The UDP datagram at the end of a frame: header and an hb message.
fn udp_of(frame: &[u8]) -> &[u8] {
    &frame[frame.len() - 8 - LEN..]
}

/// The payload of an answer, checked as the peer's data plane would: a valid
/// head (MAC under the cluster key), zero body.
fn notice_of(out: &[u8]) -> Head {
    let b: &[u8; LEN] = out[out.len() - LEN..].try_into().unwrap();
    assert!(wire2::head_mac_ok(b, &key()), "head MAC");
    assert_eq!(&b[BODY..], &[0; LEN - BODY], "zero body");
    Head::parse_unauthenticated(b).expect("an hb v2 head")
}

#[test]
fn a_dead_controllers_data_plane_answers_a_heartbeat_with_a_death_notice() {
    let mut dp = plane();
    mark_dead(&mut dp);
    let f = hb_frame(42);
    let (action, out, outcome) = run(&dp, &f);
    assert_eq!((action, outcome), (XDP_TX, Outcome::GoneSent));
    assert_eq!(
        out,
        v4_answer(&f, 14, &notice_bytes(&answer_head(&hb(42)))),
        "the answer, byte for byte"
    );
    assert_eq!(frames::checksum(&out[14..34]), 0, "IPv4 header checksum");
    let n = notice_of(&out);
    assert_eq!(n, answer_head(&hb(42)));
    assert_eq!(
        (
            n.msg_type,
            n.from,
            n.to,
            n.session,
            n.your_session,
            n.your_seq
        ),
        (MsgType::Gone, OUR_NODE, PEER, OURS, PS, 42)
    );
    // The heartbeat itself was recorded as usual: the data plane still hears.
    let p = peer(&dp);
    assert_eq!((p.session, p.seq, p.accepted), (PS, 42, 1));
    // Its replay gets no answer; the next heartbeat gets its own.
    assert_refused(&dp, &f, Outcome::Replayed);
    let (action, out, outcome) = run(&dp, &hb_frame(43));
    assert_eq!((action, outcome), (XDP_TX, Outcome::GoneSent));
    assert_eq!(notice_of(&out), answer_head(&hb(43)));
    assert_eq!(
        dp.stats().unwrap().accepted,
        0,
        "answered, so counted gone_sent only"
    );
}

#[test]
fn death_notices_keep_the_vlan_tag_and_the_ip_options() {
    let mut dp = plane();
    mark_dead(&mut dp);
    let f = Ipv4Frame {
        vlan: Some(42),
        options: vec![1, 1, 1, 0],
        ..Ipv4Frame::udp(DEFAULT_PORT, &frames::message(&hb(1)))
    }
    .build();
    let (action, out, outcome) = run(&dp, &f);
    assert_eq!((action, outcome), (XDP_TX, Outcome::GoneSent));
    assert_eq!(out, v4_answer(&f, 18, &notice_bytes(&answer_head(&hb(1)))));
    assert_eq!(frames::checksum(&out[18..18 + 24]), 0);
}

#[test]
fn death_notices_over_ipv6_carry_a_valid_udp_checksum() {
    let mut dp = plane();
    mark_dead(&mut dp);
    let hbh = (IPV6_HOPOPTS, vec![1, 4, 0, 0, 0, 0]);
    let datagram = 8 + LEN;
    for (seq, ext) in [(1u64, vec![]), (2, vec![hbh])] {
        let f = Ipv6Frame { ext, ..hb6(seq) }.build();
        let (action, out, outcome) = run(&dp, &f);
        assert_eq!((action, outcome), (XDP_TX, Outcome::GoneSent));
        assert_eq!(out.len(), f.len());
        assert_eq!((&out[..6], &out[6..12]), (&f[6..12], &f[..6]), "MACs");
        assert_eq!(out[14 + 7], 64, "hop limit");
        assert_eq!(&out[14 + 8..14 + 24], &frames::DST_IP6, "from us");
        assert_eq!(&out[14 + 24..14 + 40], &frames::SRC_IP6, "to the peer");
        assert_eq!(
            &out[14 + 40..out.len() - datagram],
            &f[14 + 40..f.len() - datagram],
            "ext headers kept"
        );
        let udp = udp_of(&out);
        assert_eq!(&udp[..4], &[0x02, 0xb6, 0x02, 0xb6], "from and to port 694");
        assert_eq!(&udp[4..6], &(datagram as u16).to_be_bytes());
        assert_ne!(&udp[6..8], &[0, 0], "IPv6 needs a UDP checksum");
        let sum = frames::checksum(&[frames::pseudo_header(17, udp.len()), udp.to_vec()].concat());
        assert_eq!(sum, 0, "UDP checksum over the pseudo-header");
        assert_eq!(&udp[8..], &notice_bytes(&answer_head(&hb(seq))));
    }
}

#[test]
fn with_the_controller_alive_heartbeats_are_dropped_as_usual() {
    let mut dp = plane();
    dp.set_owner(OUR_NODE, OURS, std::process::id()).unwrap();
    assert_eq!(dp.owner().unwrap().dead_ns, 0);
    let (action, _, outcome) = run(&dp, &hb_frame(1));
    assert_eq!((action, outcome), (XDP_DROP, Outcome::Accepted));
    // Nor is anything answered once it is dead but for heartbeats that count
    // as life: a leave, a refused heartbeat, a handshake step and a peer's own
    // notice get no answer.
    mark_dead(&mut dp);
    let leave = Head {
        msg_type: MsgType::Leave,
        ..hb(2)
    };
    assert_eq!(
        run(&dp, &v4(&leave)),
        (XDP_DROP, v4(&leave), Outcome::Accepted)
    );
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &forged(&hb(3))).build(),
        Outcome::BadMac,
    );
    assert_refused(&dp, &hb_frame(2), Outcome::Replayed);
    let stale = frames::head(PEER, OUR_NODE, PS2, 1, (0, 0));
    assert_refused(&dp, &v4(&stale), Outcome::StaleSession);
    let hello = frames::head(OTHER_PEER, OUR_NODE, 0x33, 1, (0, 0));
    assert_eq!(run(&dp, &v4(&hello)).0, XDP_DROP);
    let theirs = peer_notice((OURS, SENT_SEQ));
    assert_eq!(run(&dp, &theirs), (XDP_DROP, theirs.clone(), Outcome::Gone));
    assert_eq!(dp.stats().unwrap().gone_sent, 0);
}

#[test]
fn a_peer_claiming_the_vips_after_our_death_withdraws_our_lease() {
    let mut dp = holding_plane();
    let who_has_vip = frames::arp(1, FOREIGN_MAC, frames::SRC_IP, VIP.octets());
    mark_dead(&mut dp);
    // Dead, but nobody took over yet: the lease runs on (a quick restart keeps
    // answering), also after a heartbeat that does not claim the VIPs.
    assert_arp(&dp, &who_has_vip, Outcome::Passed, "lease held");
    let backup = Head {
        flags: 0,
        state: NodeState::Backup as u8,
        ..hb(1)
    };
    assert_eq!(run(&dp, &v4(&backup)).2, Outcome::GoneSent);
    assert_arp(&dp, &who_has_vip, Outcome::Passed, "still held");
    // A refused heartbeat claiming the VIPs proves nothing.
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &forged(&hb(2))).build(),
        Outcome::BadMac,
    );
    assert_refused(&dp, &hb_frame(1), Outcome::Replayed);
    assert_arp(&dp, &who_has_vip, Outcome::Passed, "held after refusals");
    // It took over after our notice: it answers for the VIPs now, we stop.
    assert_eq!(hb(2).flags & FLAG_HOLDS, FLAG_HOLDS);
    assert_eq!(run(&dp, &hb_frame(2)).2, Outcome::GoneSent);
    assert_eq!(dp.lease().unwrap(), Duration::ZERO);
    let (action, _, outcome) = run(&dp, &who_has_vip);
    assert_eq!(
        (action, outcome),
        (XDP_DROP, Outcome::FencedArp),
        "lease withdrawn"
    );
    let mut to_vip = Ipv4Frame::udp(80, &[1, 2, 3]).build();
    to_vip[30..34].copy_from_slice(&VIP.octets());
    let (action, _, outcome) = run(&dp, &to_vip);
    assert_eq!((action, outcome), (XDP_DROP, Outcome::FencedIp));
}

/// The notice of [`peer_gone`] in a frame, signed.
fn peer_notice(your: (u64, u64)) -> Vec<u8> {
    Ipv4Frame::udp(DEFAULT_PORT, &notice_bytes(&peer_gone(your))).build()
}

#[test]
fn a_fresh_death_notice_is_recorded_apart_from_the_heartbeat_fields() {
    let dp = plane();
    assert_eq!(run(&dp, &hb_frame(10)).2, Outcome::Accepted);
    let heard = peer_state(&dp);
    let t0 = hb_tests::monotonic_ns();
    let (action, _, outcome) = run(&dp, &peer_notice((OURS, 95)));
    let t1 = hb_tests::monotonic_ns();
    assert_eq!((action, outcome), (XDP_DROP, Outcome::Gone));
    let p = peer(&dp);
    assert!(t0 <= p.gone_ns && p.gone_ns <= t1, "gone_ns {}", p.gone_ns);
    assert_eq!((p.gone_session, p.gone_seq), (PS, 95));
    assert!(p.gone(), "session PS died, and PS is the adopted one");
    let untouched = PeerState {
        gone_ns: 0,
        gone_session: 0,
        gone_seq: 0,
        ..p
    };
    let (mut entries, slot) = heard;
    for (id, e) in &mut entries {
        if *id == PEER {
            assert_eq!(
                untouched, *e,
                "the heartbeat fields and session are the peer's"
            );
            *e = p;
        }
    }
    assert_eq!(peer_state(&dp), (entries, slot), "nothing else changed");
    // Its session state is untouched: the next heartbeat of PS is accepted,
    // and a restarted controller's (PS2, proven fresh) ends the notice.
    assert_eq!(run(&dp, &hb_frame(11)).2, Outcome::Accepted);
    assert!(peer(&dp).gone());
    let restarted = frames::head(PEER, OUR_NODE, PS2, 1, (OURS, 99));
    assert_eq!(run(&dp, &v4(&restarted)).2, Outcome::Accepted);
    assert!(!peer(&dp).gone());
}

#[test]
fn a_replayed_or_stale_death_notice_is_refused_and_counted() {
    let dp = silent_plane();
    // Nothing sent yet: no notice can answer us, not even one echoing session 0.
    assert_refused(&dp, &peer_notice((OURS, 100)), Outcome::GoneReplayed);
    assert_refused(&dp, &peer_notice((0, 0)), Outcome::GoneReplayed);
    we_sent(&dp, OURS, 100, 90);
    assert_eq!(run(&dp, &peer_notice((OURS, 100))).2, Outcome::Gone);
    let recorded = peer(&dp);
    // The same notice once our sequence moved on past the recent range: a replay.
    we_sent(&dp, OURS, 200, 150);
    assert_refused(&dp, &peer_notice((OURS, 100)), Outcome::GoneReplayed);
    assert_refused(&dp, &peer_notice((OURS, 150)), Outcome::GoneReplayed);
    // Echoing a number we never sent, or our previous session.
    assert_refused(&dp, &peer_notice((OURS, 201)), Outcome::GoneReplayed);
    assert_refused(&dp, &peer_notice((OLD_OURS, 180)), Outcome::GoneReplayed);
    assert_eq!(peer(&dp), recorded);
    assert_eq!(dp.stats().unwrap().gone_replayed, 6);
    // Fresh, but signed with another key, from a node that is not a peer, or
    // to another node.
    let fresh = peer_gone((OURS, 170));
    let mut f = wire2::encode(&fresh, &Body::default(), &WRONG_KEY);
    f[BODY..].fill(0);
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &f).build(),
        Outcome::BadMac,
    );
    let stranger = Head { from: 99, ..fresh };
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &notice_bytes(&stranger)).build(),
        Outcome::UnknownNode,
    );
    let elsewhere = Head { to: 5, ..fresh };
    assert_passes_untouched(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &notice_bytes(&elsewhere)).build(),
        "a notice to another node",
    );
    // Over IPv6 the same rules hold.
    let f = Ipv6Frame::udp(DEFAULT_PORT, &notice_bytes(&fresh)).build();
    assert_eq!(run(&dp, &f).2, Outcome::Gone);
    assert_eq!(peer(&dp).gone_seq, 170);
}
