//! Messages that count as life: recorded in the peer's entry (the whole
//! message, its source addresses) and its `seen` slot, and dropped; behind a
//! VLAN tag, after IPv4 options, over IPv6 with extension headers.

use super::{
    assert_refused, hb, hb6, hb_frame, peer, plane, run, seen, v4, OTHER_PEER, OURS, OUR_NODE, PS,
    SENT_SEQ, XDP_DROP,
};
use hb_common::{
    maps::Outcome,
    wire::DEFAULT_PORT,
    wire2::{self, Head},
    MsgType, NodeState,
};
use hb_tests::frames::{
    self, key, ExtHeader, Ipv4Frame, Ipv6Frame, IPV6_DSTOPTS, IPV6_HOPOPTS, IPV6_ROUTING,
};

#[test]
fn valid_heartbeat_is_recorded_and_dropped() {
    let dp = plane();
    let t0 = hb_tests::monotonic_ns();
    let f = hb_frame(42);
    let (action, _, outcome) = run(&dp, &f);
    let t1 = hb_tests::monotonic_ns();
    assert_eq!((action, outcome), (XDP_DROP, Outcome::Accepted));
    let p = peer(&dp);
    assert!(
        t0 <= p.last_seen_ns && p.last_seen_ns <= t1,
        "last_seen {} not in [{t0}, {t1}]",
        p.last_seen_ns
    );
    assert_eq!((p.session, p.seq, p.accepted), (PS, 42, 1));
    assert_eq!(p.adopted_ns, p.last_seen_ns, "adopted by this message");
    assert_eq!(p.src_ipv4, frames::SRC_IP);
    assert_eq!(p.src_ipv6, [0; 16]);
    assert_eq!(p.src_mac, frames::SRC_MAC);
    assert_eq!((p.slot, p.gone_ns, p.old_version_ns), (0, 0, 0));
    // The whole message, both MACs, for the controller to read the body from.
    assert_eq!(p.message, frames::message(&hb(42)));
    assert_eq!(p.msg_type(), MsgType::Heartbeat as u8);
    assert!(wire2::body_mac_ok(&p.message, &key()));
    // The sender thread's silence watch reads the same time, and what to echo,
    // without a syscall.
    let s = seen(&dp);
    assert_eq!(
        (s.last_seen_ns, s.echo_session, s.echo_seq),
        (p.last_seen_ns, PS, 42)
    );
    // The next one advances the entry; the session was adopted before.
    let (_, _, outcome) = run(&dp, &hb_frame(43));
    assert_eq!(outcome, Outcome::Accepted);
    let q = peer(&dp);
    assert_eq!((q.session, q.seq, q.accepted), (PS, 43, 2));
    assert_eq!(q.adopted_ns, p.adopted_ns, "not adopted again");
    assert!(q.last_seen_ns >= p.last_seen_ns);
    assert_eq!((seen(&dp).echo_session, seen(&dp).echo_seq), (PS, 43));
    // A different peer has its own entry and slot; the first one is unchanged.
    let other = v4(&frames::head(
        OTHER_PEER,
        OUR_NODE,
        0x3333,
        1,
        (OURS, SENT_SEQ),
    ));
    assert_eq!(run(&dp, &other).2, Outcome::Accepted);
    let o = dp.peer(OTHER_PEER).unwrap().unwrap();
    assert_eq!((o.slot, o.session, o.seq, o.accepted), (1, 0x3333, 1, 1));
    let map = dp.seen_map().unwrap();
    assert_eq!(
        (map.read(1).last_seen_ns, map.read(1).echo_session),
        (o.last_seen_ns, 0x3333)
    );
    assert_eq!(map.read(0).last_seen_ns, peer(&dp).last_seen_ns);
    assert_eq!(peer(&dp), q);
}

#[test]
fn leave_message_is_recorded() {
    let dp = plane();
    assert_eq!(run(&dp, &hb_frame(1)).2, Outcome::Accepted);
    let leave = Head {
        msg_type: MsgType::Leave,
        flags: 0,
        state: NodeState::Backup as u8,
        ..hb(2)
    };
    let (action, _, outcome) = run(&dp, &v4(&leave));
    assert_eq!((action, outcome), (XDP_DROP, Outcome::Accepted));
    let p = peer(&dp);
    assert_eq!(p.msg_type(), MsgType::Leave as u8);
    assert_eq!((p.seq, p.accepted), (2, 2));
    // A leave is fresh by the same rules: its replay is refused.
    assert_refused(&dp, &v4(&leave), Outcome::Replayed);
}

#[test]
fn valid_heartbeat_with_vlan_tag() {
    let dp = plane();
    let f = Ipv4Frame {
        vlan: Some(42),
        ..Ipv4Frame::udp(DEFAULT_PORT, &frames::message(&hb(1)))
    };
    let (action, _, outcome) = run(&dp, &f.build());
    assert_eq!((action, outcome), (XDP_DROP, Outcome::Accepted));
    assert_eq!(peer(&dp).seq, 1);
}

#[test]
fn valid_heartbeat_with_ipv4_options() {
    let dp = plane();
    for (seq, opt_len) in [(1u64, 4usize), (2, 20), (3, 40)] {
        // NOPs then end-of-list; 40 bytes is the IPv4 maximum (IHL 15).
        let mut options = vec![1u8; opt_len - 1];
        options.push(0);
        let f = Ipv4Frame {
            options,
            ..Ipv4Frame::udp(DEFAULT_PORT, &frames::message(&hb(seq)))
        };
        let (action, _, outcome) = run(&dp, &f.build());
        assert_eq!(
            (action, outcome),
            (XDP_DROP, Outcome::Accepted),
            "{opt_len} bytes of options"
        );
        assert_eq!(peer(&dp).seq, seq);
    }
}

#[test]
fn valid_heartbeat_over_ipv6_is_recorded() {
    let dp = plane();
    let t0 = hb_tests::monotonic_ns();
    let (action, _, outcome) = run(&dp, &hb6(1).build());
    let t1 = hb_tests::monotonic_ns();
    assert_eq!((action, outcome), (XDP_DROP, Outcome::Accepted));
    let p = peer(&dp);
    assert!(t0 <= p.last_seen_ns && p.last_seen_ns <= t1);
    assert_eq!((p.session, p.seq, p.accepted), (PS, 1, 1));
    assert_eq!(p.src_ipv6, frames::SRC_IP6);
    assert_eq!(p.src_ipv4, [0; 4], "no IPv4 source for an IPv6 sender");
    assert_eq!(p.src_mac, frames::SRC_MAC);
    assert_eq!(p.message, frames::message(&hb(1)));
    // The same peer over IPv4 next: the IPv6 source is cleared, and back.
    assert_eq!(run(&dp, &hb_frame(2)).2, Outcome::Accepted);
    let p = peer(&dp);
    assert_eq!((p.src_ipv4, p.src_ipv6), (frames::SRC_IP, [0; 16]));
    assert_eq!(run(&dp, &hb6(3).build()).2, Outcome::Accepted);
    let p = peer(&dp);
    assert_eq!((p.src_ipv4, p.src_ipv6), ([0; 4], frames::SRC_IP6));
}

#[test]
fn valid_heartbeat_over_ipv6_with_extension_headers_and_vlan() {
    let dp = plane();
    // PadN option filling a hop-by-hop header; a longer destination-options header.
    let hbh = (IPV6_HOPOPTS, vec![1, 4, 0, 0, 0, 0]);
    let dst = (
        IPV6_DSTOPTS,
        vec![1, 20].into_iter().chain([0; 20]).collect(),
    );
    // Type 0 routing header with no segments left: the destination is final.
    let rt = (IPV6_ROUTING, vec![0, 0, 0, 0, 0, 0]);
    let cases: [(&str, Option<u16>, Vec<ExtHeader>); 6] = [
        ("hop-by-hop", None, vec![hbh.clone()]),
        ("destination options", None, vec![dst.clone()]),
        (
            "hop-by-hop + destination options",
            None,
            vec![hbh.clone(), dst.clone()],
        ),
        (
            "hop-by-hop + routing + destination options",
            None,
            vec![hbh.clone(), rt, dst.clone()],
        ),
        ("VLAN tag", Some(42), vec![]),
        ("VLAN tag + hop-by-hop", Some(42), vec![hbh]),
    ];
    for (seq, (what, vlan, ext)) in (1u64..).zip(cases) {
        let f = Ipv6Frame {
            vlan,
            ext,
            ..hb6(seq)
        };
        let (action, _, outcome) = run(&dp, &f.build());
        assert_eq!((action, outcome), (XDP_DROP, Outcome::Accepted), "{what}");
        assert_eq!(
            (peer(&dp).seq, peer(&dp).src_ipv6),
            (seq, frames::SRC_IP6),
            "{what}"
        );
    }
}
