//! The real compiled XDP object run with BPF_PROG_TEST_RUN: one frame per outcome
//! class; each case asserts the XDP action, the counter that moved, and the peer
//! entry (changed for an accepted heartbeat, untouched otherwise).

use aya::programs::{TestRun, TestRunOptions};
use hb_common::{
    maps::{Outcome, PeerState, Stats},
    wire::{DEFAULT_PORT, WIRE_LEN},
    Key,
};
use hb_tests::frames::{self, heartbeat, key, Ipv4Frame};
use hb_user::loader::{DataPlane, Settings};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const PEER: u32 = 2;

fn settings() -> Settings {
    Settings {
        cluster_id: 7,
        port: DEFAULT_PORT,
        pass_heartbeats: false,
        key: key(),
        peers: vec![PEER, 3],
    }
}

fn plane() -> DataPlane {
    hb_tests::require_root("BPF_PROG_TEST_RUN");
    let mut dp = DataPlane::load().expect("load the XDP object");
    dp.configure(&settings()).expect("configure");
    dp
}

/// Runs one frame; returns the action, the bytes out and which counter moved.
fn run(dp: &DataPlane, frame: &[u8]) -> (u32, Vec<u8>, Outcome) {
    let before = dp.stats().unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..Default::default()
    };
    let res = dp
        .program()
        .unwrap()
        .test_run(opts)
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    (res.return_value, out, moved(&before, &dp.stats().unwrap()))
}

/// The single counter that went up by one.
fn moved(before: &Stats, after: &Stats) -> Outcome {
    let diffs: Vec<usize> = (0..Stats::COUNT)
        .filter(|&i| after.as_array()[i] != before.as_array()[i])
        .collect();
    assert_eq!(
        diffs.len(),
        1,
        "exactly one counter moves per packet: {before:?} -> {after:?}"
    );
    let i = diffs[0];
    assert_eq!(after.as_array()[i], before.as_array()[i] + 1);
    const ALL: [Outcome; Stats::COUNT] = [
        Outcome::Passed,
        Outcome::Accepted,
        Outcome::BadLength,
        Outcome::BadMagic,
        Outcome::BadVersion,
        Outcome::BadType,
        Outcome::WrongCluster,
        Outcome::UnknownNode,
        Outcome::BadMac,
        Outcome::Replayed,
    ];
    ALL[i]
}

fn hb_frame(epoch: u32, seq: u64) -> Vec<u8> {
    Ipv4Frame::udp(DEFAULT_PORT, &heartbeat(PEER, epoch, seq).encode(&key())).build()
}

fn peer(dp: &DataPlane) -> PeerState {
    dp.peer(PEER)
        .unwrap()
        .expect("configured peer has an entry")
}

/// Asserts a refused heartbeat-port frame is dropped, counted as `why`, and leaves the peer alone.
fn assert_refused(dp: &DataPlane, frame: &[u8], why: Outcome) {
    let before = peer(dp);
    let (action, _, outcome) = run(dp, frame);
    assert_eq!(outcome, why);
    assert_eq!(action, XDP_DROP, "{why:?} must be dropped");
    assert_eq!(peer(dp), before, "{why:?} must not touch the peer entry");
}

/// Asserts a frame passes untouched and counts as not-a-heartbeat.
fn assert_passes_untouched(dp: &DataPlane, frame: &[u8], what: &str) {
    let before = peer(dp);
    let (action, out, outcome) = run(dp, frame);
    assert_eq!(action, XDP_PASS, "{what} must pass");
    assert_eq!(outcome, Outcome::Passed, "{what} counts as passed");
    assert_eq!(out, frame, "{what} must be untouched");
    assert_eq!(peer(dp), before);
}

#[test]
fn valid_heartbeat_is_recorded_and_dropped() {
    let dp = plane();
    let t0 = hb_tests::monotonic_ns();
    let (action, _, outcome) = run(&dp, &hb_frame(5, 42));
    let t1 = hb_tests::monotonic_ns();
    assert_eq!((action, outcome), (XDP_DROP, Outcome::Accepted));
    let p = peer(&dp);
    assert!(
        t0 <= p.last_seen_ns && p.last_seen_ns <= t1,
        "last_seen {} not in [{t0}, {t1}]",
        p.last_seen_ns
    );
    assert_eq!((p.epoch, p.seq, p.accepted), (5, 42, 1));
    assert_eq!(p.src_ipv4, frames::SRC_IP);
    assert_eq!(p.src_mac, frames::SRC_MAC);
    assert_eq!((p.flags, p.priority, p.state, p.msg_type), (1, 100, 2, 1));
    // The next one advances the entry.
    let (_, _, outcome) = run(&dp, &hb_frame(5, 43));
    assert_eq!(outcome, Outcome::Accepted);
    assert_eq!((peer(&dp).seq, peer(&dp).accepted), (43, 2));
    // A different peer has its own entry; the first one is unchanged.
    let other = Ipv4Frame::udp(DEFAULT_PORT, &heartbeat(3, 1, 1).encode(&key())).build();
    assert_eq!(run(&dp, &other).2, Outcome::Accepted);
    assert_eq!(dp.peer(3).unwrap().unwrap().accepted, 1);
    assert_eq!(peer(&dp).accepted, 2);
}

#[test]
fn leave_message_is_recorded() {
    let dp = plane();
    let mut hb = heartbeat(PEER, 1, 1);
    hb.msg_type = hb_common::MsgType::Leave;
    let (action, _, outcome) = run(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &hb.encode(&key())).build(),
    );
    assert_eq!((action, outcome), (XDP_DROP, Outcome::Accepted));
    assert_eq!(peer(&dp).msg_type, hb_common::MsgType::Leave as u8);
}

#[test]
fn valid_heartbeat_with_vlan_tag() {
    let dp = plane();
    let f = Ipv4Frame {
        vlan: Some(42),
        ..Ipv4Frame::udp(DEFAULT_PORT, &heartbeat(PEER, 1, 1).encode(&key()))
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
            ..Ipv4Frame::udp(DEFAULT_PORT, &heartbeat(PEER, 1, seq).encode(&key()))
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
fn wrong_key_is_refused() {
    let dp = plane();
    let forged = heartbeat(PEER, 1, 1).encode(&Key { k0: 1, k1: 2 });
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &forged).build(),
        Outcome::BadMac,
    );
    // A genuine heartbeat with one MAC bit flipped.
    let mut b = heartbeat(PEER, 1, 1).encode(&key());
    b[WIRE_LEN - 1] ^= 1;
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &b).build(),
        Outcome::BadMac,
    );
    assert_eq!(peer(&dp).accepted, 0);
}

#[test]
fn replays_and_older_epochs_are_refused() {
    let dp = plane();
    assert_eq!(run(&dp, &hb_frame(3, 10)).2, Outcome::Accepted);
    assert_refused(&dp, &hb_frame(3, 10), Outcome::Replayed);
    assert_refused(&dp, &hb_frame(3, 9), Outcome::Replayed);
    assert_refused(&dp, &hb_frame(2, 11), Outcome::Replayed);
    // A new epoch (the sender restarted) starts its sequence again.
    assert_eq!(run(&dp, &hb_frame(4, 1)).2, Outcome::Accepted);
    assert_refused(&dp, &hb_frame(3, 12), Outcome::Replayed);
    assert_eq!(
        (peer(&dp).epoch, peer(&dp).seq, peer(&dp).accepted),
        (4, 1, 2)
    );
}

#[test]
fn unknown_node_is_refused() {
    let dp = plane();
    let f = Ipv4Frame::udp(DEFAULT_PORT, &heartbeat(99, 1, 1).encode(&key())).build();
    assert_refused(&dp, &f, Outcome::UnknownNode);
    assert_eq!(
        dp.peer(99).unwrap(),
        None,
        "no entry is created for an unknown node"
    );
}

#[test]
fn wrong_cluster_is_refused() {
    let dp = plane();
    let mut hb = heartbeat(PEER, 1, 1);
    hb.cluster_id = 8;
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &hb.encode(&key())).build(),
        Outcome::WrongCluster,
    );
}

#[test]
fn wrong_magic_version_and_type_are_refused() {
    let dp = plane();
    let good = heartbeat(PEER, 1, 1).encode(&key());
    for (at, value, why) in [
        (0, b'X', Outcome::BadMagic),
        (2, 2, Outcome::BadVersion),
        (3, 7, Outcome::BadType),
    ] {
        let mut b = good;
        b[at] = value;
        assert_refused(&dp, &Ipv4Frame::udp(DEFAULT_PORT, &b).build(), why);
    }
    // Junk of the right size, and payloads of the wrong size.
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &[0xa5; WIRE_LEN]).build(),
        Outcome::BadMagic,
    );
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &good[..WIRE_LEN - 1]).build(),
        Outcome::BadLength,
    );
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &[good.as_slice(), &[0]].concat()).build(),
        Outcome::BadLength,
    );
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &[]).build(),
        Outcome::BadLength,
    );
}

#[test]
fn every_truncation_is_handled() {
    let dp = plane();
    let full = hb_frame(1, 1);
    // eth 14 + ip 20 + udp 8: from there on the frame is recognisably for the heartbeat port.
    let udp_end = 14 + 20 + 8;
    for len in 0..full.len() {
        let frame = &full[..len];
        if len < 14 {
            // The kernel itself refuses test frames shorter than an Ethernet header.
            let mut out = [0u8; 128];
            let opts = TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..Default::default()
            };
            assert!(
                dp.program().unwrap().test_run(opts).is_err(),
                "kernel accepted a {len}-byte frame"
            );
        } else if len < udp_end {
            assert_passes_untouched(&dp, frame, &format!("{len}-byte truncated frame"));
        } else {
            assert_refused(&dp, frame, Outcome::BadLength);
        }
    }
    assert_eq!(
        run(&dp, &full).2,
        Outcome::Accepted,
        "the full frame still counts"
    );
}

#[test]
fn fragments_pass() {
    let dp = plane();
    let payload = heartbeat(PEER, 1, 1).encode(&key());
    // A later fragment has no UDP header: whatever its bytes, it is not ours.
    let later = Ipv4Frame {
        frag_offset: 3,
        ..Ipv4Frame::udp(DEFAULT_PORT, &payload)
    };
    assert_passes_untouched(&dp, &later.build(), "non-first fragment");
    let last = Ipv4Frame {
        frag_offset: 185,
        more_fragments: false,
        ..Ipv4Frame::udp(DEFAULT_PORT, &payload)
    };
    assert_passes_untouched(&dp, &last.build(), "last fragment");
    // A first fragment of a datagram longer than a heartbeat is refused by length.
    let mut first = Ipv4Frame {
        more_fragments: true,
        ..Ipv4Frame::udp(DEFAULT_PORT, &payload)
    }
    .build();
    let udp_len_at = 14 + 20 + 4;
    first[udp_len_at..udp_len_at + 2].copy_from_slice(&1400u16.to_be_bytes());
    assert_refused(&dp, &first, Outcome::BadLength);
}

#[test]
fn other_traffic_passes_untouched() {
    let dp = plane();
    let payload = heartbeat(PEER, 1, 1).encode(&key());
    let tcp = Ipv4Frame {
        proto: 6,
        ..Ipv4Frame::udp(DEFAULT_PORT, &payload)
    };
    assert_passes_untouched(&dp, &tcp.build(), "TCP to port 694");
    assert_passes_untouched(
        &dp,
        &Ipv4Frame::udp(53, &payload).build(),
        "UDP to another port",
    );
    assert_passes_untouched(
        &dp,
        &Ipv4Frame::udp(695, &payload).build(),
        "UDP to port 695",
    );
    let tagged = Ipv4Frame {
        vlan: Some(7),
        ..Ipv4Frame::udp(5353, &[1, 2, 3])
    };
    assert_passes_untouched(&dp, &tagged.build(), "tagged UDP to another port");
    assert_passes_untouched(&dp, &frames::arp_request(), "ARP");
    assert_passes_untouched(
        &dp,
        &frames::ipv6_udp(DEFAULT_PORT, &payload),
        "IPv6 UDP to port 694",
    );
    assert_eq!(peer(&dp).accepted, 0);
}

#[test]
fn debug_switch_passes_heartbeats_after_recording() {
    hb_tests::require_root("BPF_PROG_TEST_RUN");
    let mut dp = DataPlane::load().unwrap();
    dp.configure(&Settings {
        pass_heartbeats: true,
        ..settings()
    })
    .unwrap();
    let (action, _, outcome) = run(&dp, &hb_frame(1, 1));
    assert_eq!((action, outcome), (XDP_PASS, Outcome::Accepted));
    let (action, _, outcome) = run(&dp, &hb_frame(1, 1));
    assert_eq!((action, outcome), (XDP_PASS, Outcome::Replayed));
}

#[test]
fn unconfigured_program_passes_everything() {
    hb_tests::require_root("BPF_PROG_TEST_RUN");
    let dp = DataPlane::load().unwrap();
    let (action, _, outcome) = run(&dp, &hb_frame(1, 1));
    assert_eq!((action, outcome), (XDP_PASS, Outcome::Passed));
}
