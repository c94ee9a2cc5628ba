//! The real compiled XDP object run with BPF_PROG_TEST_RUN: one frame per outcome
//! class, over IPv4 and IPv6; each case asserts the XDP action, the counter that
//! moved, and the peer entry (changed for an accepted heartbeat, untouched
//! otherwise). ARP claiming a VIP from a foreign MAC is counted and passes.
//! With the controller marked dead, an accepted heartbeat comes back as a death
//! notice (XDP_TX), byte for byte; a peer's notice is recorded only when it
//! echoes one of our recent heartbeats.

use aya::programs::{TestRun, TestRunOptions};
use hb_common::{
    maps::{Outcome, Owner, PeerState, Sent, Stats, VipWatch},
    wire::{decode_gone, Gone, DEFAULT_PORT, GONE_WINDOW, WIRE_LEN},
    Key, MsgType,
};
use hb_tests::frames::{
    self, heartbeat, key, ExtHeader, Ipv4Frame, Ipv6Frame, IPV6_DSTOPTS, IPV6_HOPOPTS, IPV6_ROUTING,
};
use hb_user::loader::{DataPlane, Settings};
use std::net::Ipv4Addr;
use std::time::Duration;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const PEER: u32 = 2;
/// The interface the program sits on: the test frames' destination MAC.
const OUR_MAC: [u8; 6] = frames::DST_MAC;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 100);
const VIP2: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 101);
const FOREIGN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x66];

fn settings() -> Settings {
    Settings {
        cluster_id: 7,
        port: DEFAULT_PORT,
        pass_heartbeats: false,
        key: key(),
        peers: vec![PEER, 3],
        mac: OUR_MAC,
        vips_v4: vec![VIP, VIP2],
        quiet: std::time::Duration::from_millis(50),
    }
}

fn plane() -> DataPlane {
    hb_tests::require_root("BPF_PROG_TEST_RUN");
    let mut dp = DataPlane::load().expect("load the XDP object");
    dp.configure(&settings()).expect("configure");
    dp
}

/// A data plane holding the VIP lease for a minute, as a VIP holder's does: ARP
/// and IPv4 for the VIPs pass (the self-fence is tested on its own below).
fn holding_plane() -> DataPlane {
    let mut dp = plane();
    dp.set_lease(Duration::from_nanos(hb_tests::monotonic_ns()) + Duration::from_secs(60))
        .unwrap();
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
    Outcome::ALL[i]
}

fn hb_frame(epoch: u32, seq: u64) -> Vec<u8> {
    Ipv4Frame::udp(DEFAULT_PORT, &heartbeat(PEER, epoch, seq).encode(&key())).build()
}

fn hb6(epoch: u32, seq: u64) -> Ipv6Frame {
    Ipv6Frame::udp(DEFAULT_PORT, &heartbeat(PEER, epoch, seq).encode(&key()))
}

/// The VIP watch entry of `ip`, if it is watched.
fn watch(dp: &DataPlane, ip: Ipv4Addr) -> Option<VipWatch> {
    dp.vip_watch()
        .unwrap()
        .into_iter()
        .find(|(v, _)| *v == ip)
        .map(|(_, w)| w)
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
    // The sender thread's silence watch reads the same time, without a syscall.
    let seen = dp.seen_map().expect("the seen map is mmapable");
    let slot = |id: u32| hb_common::maps::seen_slot(id) as usize;
    assert_eq!(seen.read(slot(PEER)).last_seen_ns, p.last_seen_ns);
    // The next one advances the entry.
    let (_, _, outcome) = run(&dp, &hb_frame(5, 43));
    assert_eq!(outcome, Outcome::Accepted);
    assert_eq!((peer(&dp).seq, peer(&dp).accepted), (43, 2));
    // A different peer has its own entry; the first one is unchanged.
    let other = Ipv4Frame::udp(DEFAULT_PORT, &heartbeat(3, 1, 1).encode(&key())).build();
    assert_eq!(run(&dp, &other).2, Outcome::Accepted);
    assert_eq!(dp.peer(3).unwrap().unwrap().accepted, 1);
    assert_eq!(
        seen.read(slot(3)).last_seen_ns,
        dp.peer(3).unwrap().unwrap().last_seen_ns
    );
    assert_eq!(seen.read(slot(PEER)).last_seen_ns, peer(&dp).last_seen_ns);
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
        &frames::ipv6_udp(53, &payload),
        "IPv6 UDP to another port",
    );
    let tcp6 = Ipv6Frame {
        proto: 6,
        payload: [&[0x9c, 0x40, 0x02, 0xb6][..], &[0; 16]].concat(),
        ..Ipv6Frame::udp(DEFAULT_PORT, &[])
    };
    assert_passes_untouched(&dp, &tcp6.build(), "IPv6 TCP to port 694");
    assert_passes_untouched(
        &dp,
        &Ipv6Frame::neighbour_solicitation().build(),
        "ICMPv6 neighbour solicitation",
    );
    let tagged_ns = Ipv6Frame {
        vlan: Some(9),
        ..Ipv6Frame::neighbour_solicitation()
    };
    assert_passes_untouched(&dp, &tagged_ns.build(), "tagged ICMPv6");
    // Other EtherTypes, e.g. LLDP.
    let mut lldp = frames::arp_request();
    lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    assert_passes_untouched(&dp, &lldp, "LLDP");
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

// ---- IPv6 heartbeats ----

#[test]
fn valid_heartbeat_over_ipv6_is_recorded() {
    let dp = plane();
    let t0 = hb_tests::monotonic_ns();
    let (action, _, outcome) = run(&dp, &hb6(5, 1).build());
    let t1 = hb_tests::monotonic_ns();
    assert_eq!((action, outcome), (XDP_DROP, Outcome::Accepted));
    let p = peer(&dp);
    assert!(t0 <= p.last_seen_ns && p.last_seen_ns <= t1);
    assert_eq!((p.epoch, p.seq, p.accepted), (5, 1, 1));
    assert_eq!(p.src_ipv6, frames::SRC_IP6);
    assert_eq!(p.src_ipv4, [0; 4], "no IPv4 source for an IPv6 sender");
    assert_eq!(p.src_mac, frames::SRC_MAC);
    assert_eq!((p.flags, p.priority, p.state, p.msg_type), (1, 100, 2, 1));
    // The same peer over IPv4 next: the IPv6 source is cleared, and back.
    assert_eq!(run(&dp, &hb_frame(5, 2)).2, Outcome::Accepted);
    let p = peer(&dp);
    assert_eq!((p.src_ipv4, p.src_ipv6), (frames::SRC_IP, [0; 16]));
    assert_eq!(run(&dp, &hb6(5, 3).build()).2, Outcome::Accepted);
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
            ..hb6(1, seq)
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

#[test]
fn refusals_over_ipv6() {
    let dp = plane();
    let forged = heartbeat(PEER, 1, 1).encode(&Key { k0: 1, k1: 2 });
    assert_refused(
        &dp,
        &Ipv6Frame::udp(DEFAULT_PORT, &forged).build(),
        Outcome::BadMac,
    );
    assert_eq!(run(&dp, &hb6(3, 10).build()).2, Outcome::Accepted);
    assert_refused(&dp, &hb6(3, 10).build(), Outcome::Replayed);
    assert_refused(&dp, &hb6(2, 99).build(), Outcome::Replayed);
    // The same heartbeat replayed over the other IP version is a replay too.
    assert_refused(&dp, &hb_frame(3, 10), Outcome::Replayed);
    let mut hb = heartbeat(PEER, 4, 1);
    hb.cluster_id = 8;
    assert_refused(
        &dp,
        &Ipv6Frame::udp(DEFAULT_PORT, &hb.encode(&key())).build(),
        Outcome::WrongCluster,
    );
    assert_refused(
        &dp,
        &Ipv6Frame::udp(DEFAULT_PORT, &heartbeat(99, 4, 1).encode(&key())).build(),
        Outcome::UnknownNode,
    );
    // Junk to the heartbeat port is no longer passed on IPv6 either.
    assert_refused(
        &dp,
        &Ipv6Frame::udp(DEFAULT_PORT, &[0xa5; WIRE_LEN]).build(),
        Outcome::BadMagic,
    );
    assert_refused(
        &dp,
        &Ipv6Frame::udp(DEFAULT_PORT, &[1, 2, 3]).build(),
        Outcome::BadLength,
    );
    assert_eq!(peer(&dp).accepted, 1);
}

#[test]
fn ipv6_lengths_are_checked() {
    let dp = plane();
    let good = hb6(1, 1).build();
    let payload_len_at = 14 + 4;
    let udp_len_at = 14 + 40 + 4;
    // IPv6 payload length one short of the UDP datagram.
    let mut short = good.clone();
    short[payload_len_at..payload_len_at + 2].copy_from_slice(&43u16.to_be_bytes());
    assert_refused(&dp, &short, Outcome::BadLength);
    // UDP length not 8 + 36.
    let mut long = good.clone();
    long[udp_len_at..udp_len_at + 2].copy_from_slice(&45u16.to_be_bytes());
    assert_refused(&dp, &long, Outcome::BadLength);
    // Payload length that counts the extension header but not the datagram.
    let mut ext = Ipv6Frame {
        ext: vec![(IPV6_HOPOPTS, vec![1, 4, 0, 0, 0, 0])],
        ..hb6(1, 1)
    }
    .build();
    ext[payload_len_at..payload_len_at + 2].copy_from_slice(&(8 + 43u16).to_be_bytes());
    assert_refused(&dp, &ext, Outcome::BadLength);
    // A larger payload length (trailing bytes) is fine, as on IPv4.
    let mut padded = good.clone();
    padded[payload_len_at..payload_len_at + 2].copy_from_slice(&60u16.to_be_bytes());
    padded.extend_from_slice(&[0; 16]);
    assert_eq!(run(&dp, &padded).2, Outcome::Accepted);
}

#[test]
fn every_ipv6_truncation_is_handled() {
    let dp = plane();
    for ext in [vec![], vec![(IPV6_HOPOPTS, vec![1, 4, 0, 0, 0, 0])]] {
        let ext_len = ext.len() * 8;
        let full = Ipv6Frame { ext, ..hb6(1, 1) }.build();
        let udp_end = 14 + 40 + ext_len + 8;
        for len in 14..full.len() {
            let frame = &full[..len];
            if len < udp_end {
                assert_passes_untouched(&dp, frame, &format!("{len}-byte truncated IPv6 frame"));
            } else {
                assert_refused(&dp, frame, Outcome::BadLength);
            }
        }
    }
    assert_eq!(run(&dp, &hb6(1, 1).build()).2, Outcome::Accepted);
}

#[test]
fn ipv6_fragments_and_unwalked_headers_pass() {
    let dp = plane();
    for (what, ext) in [
        ("first fragment", vec![Ipv6Frame::fragment(0, true)]),
        ("later fragment", vec![Ipv6Frame::fragment(3, true)]),
        (
            "atomic fragment (offset 0, no more)",
            vec![Ipv6Frame::fragment(0, false)],
        ),
        (
            "fragment after hop-by-hop",
            vec![
                (IPV6_HOPOPTS, vec![1, 4, 0, 0, 0, 0]),
                Ipv6Frame::fragment(0, false),
            ],
        ),
        // More extension headers than the program walks: not a heartbeat.
        (
            "four destination-options headers",
            vec![(IPV6_DSTOPTS, vec![1, 4, 0, 0, 0, 0]); 4],
        ),
        // AH is not walked either.
        ("authentication header", vec![(51, vec![0; 14])]),
    ] {
        let f = Ipv6Frame { ext, ..hb6(1, 1) };
        assert_passes_untouched(&dp, &f.build(), what);
    }
    // "No next header" after the IPv6 header.
    let none = Ipv6Frame {
        proto: 59,
        ..Ipv6Frame::udp(DEFAULT_PORT, &[])
    };
    assert_passes_untouched(&dp, &none.build(), "no next header");
    // A bad IP version in an IPv6 EtherType frame.
    let mut v4ish = hb6(1, 1).build();
    v4ish[14] = 0x40;
    assert_passes_untouched(&dp, &v4ish, "version 4 in an IPv6 frame");
    assert_eq!(peer(&dp).accepted, 0);
}

// ---- ARP conflict watch ----

/// Asserts an ARP frame passes untouched and is counted as `expected`.
fn assert_arp(dp: &DataPlane, frame: &[u8], expected: Outcome, what: &str) {
    let (action, out, outcome) = run(dp, frame);
    assert_eq!(action, XDP_PASS, "{what}: ARP always passes");
    assert_eq!(out, frame, "{what}: ARP is never modified");
    assert_eq!(outcome, expected, "{what}");
}

#[test]
fn foreign_arp_for_a_vip_is_counted_and_passes() {
    let dp = holding_plane();
    assert_eq!(
        watch(&dp, VIP),
        Some(VipWatch::default()),
        "zeroed entry per VIP"
    );
    let t0 = hb_tests::monotonic_ns();
    let request = frames::arp(1, FOREIGN_MAC, VIP.octets(), frames::DST_IP);
    assert_arp(&dp, &request, Outcome::ArpConflict, "foreign request");
    let t1 = hb_tests::monotonic_ns();
    let w = watch(&dp, VIP).unwrap();
    assert_eq!((w.conflicts, w.last_mac), (1, FOREIGN_MAC));
    assert!(
        t0 <= w.last_ns && w.last_ns <= t1,
        "last_ns {} not in [{t0}, {t1}]",
        w.last_ns
    );

    // A gratuitous reply from another MAC, behind a VLAN tag.
    let other = [0x02, 0, 0, 0, 0, 0x77];
    let reply = frames::tagged(&frames::arp(2, other, VIP.octets(), VIP.octets()), 5);
    assert_arp(
        &dp,
        &reply,
        Outcome::ArpConflict,
        "foreign gratuitous reply",
    );
    let w = watch(&dp, VIP).unwrap();
    assert_eq!((w.conflicts, w.last_mac), (2, other));
    assert!(w.last_ns >= t1);
    assert_eq!(dp.stats().unwrap().arp_conflict, 2);
    // Each claimant keeps its own count: a later claimant does not hide an earlier one.
    assert_arp(&dp, &request, Outcome::ArpConflict, "foreign request again");
    let counts: Vec<([u8; 6], u64)> = watch(&dp, VIP)
        .unwrap()
        .claimants
        .iter()
        .filter(|c| c.count > 0)
        .map(|c| (c.mac, c.count))
        .collect();
    assert_eq!(counts, [(FOREIGN_MAC, 2), (other, 1)]);
    // Five distinct claimants in four slots: the rarest gives way, the busiest stays.
    for last in 0x10..0x13u8 {
        let mac = [0x02, 0, 0, 0, 0, last];
        assert_arp(
            &dp,
            &frames::arp(1, mac, VIP.octets(), VIP.octets()),
            Outcome::ArpConflict,
            "new claimant",
        );
    }
    let w = watch(&dp, VIP).unwrap();
    assert!(
        w.claimants
            .iter()
            .any(|c| c.mac == FOREIGN_MAC && c.count == 2),
        "{w:?}"
    );
    assert_eq!(w.conflicts, 6);
    // The other VIP's entry is untouched.
    assert_eq!(watch(&dp, VIP2), Some(VipWatch::default()));
}

#[test]
fn arp_that_is_no_conflict_passes() {
    let dp = holding_plane();
    let cases = [
        (
            "our own gratuitous ARP",
            frames::arp(1, OUR_MAC, VIP.octets(), VIP.octets()),
        ),
        (
            "who-has the VIP from a client",
            frames::arp(1, FOREIGN_MAC, frames::SRC_IP, VIP.octets()),
        ),
        ("ARP for another address", frames::arp_request()),
        (
            "ARP probe (sender 0.0.0.0)",
            frames::arp(1, FOREIGN_MAC, [0; 4], VIP.octets()),
        ),
        (
            "RARP-style op 3",
            frames::arp(3, FOREIGN_MAC, VIP.octets(), VIP.octets()),
        ),
    ];
    for (what, f) in &cases {
        assert_arp(&dp, f, Outcome::Passed, what);
    }
    // Addresses sharing a VIP's filter bit (same last octet modulo 64) still
    // need the hash lookup to say "not a VIP".
    for ip in [[10, 9, 0, 36], [10, 9, 1, 100], [192, 168, 7, 164]] {
        assert_eq!(
            hb_common::maps::vip_filter_bit(ip),
            hb_common::maps::vip_filter_bit(VIP.octets())
        );
        let f = frames::arp(1, FOREIGN_MAC, ip, VIP.octets());
        assert_arp(
            &dp,
            &f,
            Outcome::Passed,
            &format!("{ip:?} shares the filter bit"),
        );
    }
    // Not Ethernet/IPv4 ARP, though the sender field would read as the VIP.
    let good = frames::arp(1, FOREIGN_MAC, VIP.octets(), VIP.octets());
    for (at, value, what) in [
        (15, 6, "htype 6"),
        (16, 0x86, "ptype IPv6"),
        (18, 8, "hlen 8"),
        (19, 16, "plen 16"),
    ] {
        let mut f = good.clone();
        f[at] = value;
        assert_arp(&dp, &f, Outcome::Passed, what);
    }
    assert_eq!(watch(&dp, VIP).unwrap().conflicts, 0);
    let watched: Vec<Ipv4Addr> = dp
        .vip_watch()
        .unwrap()
        .into_iter()
        .map(|(ip, _)| ip)
        .collect();
    assert_eq!(
        watched,
        vec![VIP, VIP2],
        "no entry is created for other addresses"
    );
}

#[test]
fn truncated_arp_passes() {
    let dp = holding_plane();
    let full = frames::arp(1, FOREIGN_MAC, VIP.octets(), VIP.octets());
    for len in 14..full.len() {
        assert_arp(
            &dp,
            &full[..len],
            Outcome::Passed,
            &format!("{len}-byte ARP"),
        );
    }
    assert_eq!(watch(&dp, VIP).unwrap().conflicts, 0);
    // Trailing padding (Ethernet minimum frame) is fine.
    let padded = [full.as_slice(), &[0; 18]].concat();
    assert_arp(&dp, &padded, Outcome::ArpConflict, "padded ARP");
}

#[test]
fn reconfiguring_vips_keeps_counts_and_drops_removed_ones() {
    let mut dp = holding_plane();
    let f = frames::arp(2, FOREIGN_MAC, VIP.octets(), VIP.octets());
    assert_arp(&dp, &f, Outcome::ArpConflict, "before");
    let vip3 = Ipv4Addr::new(10, 9, 0, 102);
    dp.configure(&Settings {
        vips_v4: vec![VIP, vip3],
        quiet: std::time::Duration::from_millis(50),
        ..settings()
    })
    .unwrap();
    let watched = dp.vip_watch().unwrap();
    assert_eq!(watched.len(), 2, "{watched:?}");
    assert_eq!(watch(&dp, VIP).unwrap().conflicts, 1, "count survives");
    assert_eq!(watch(&dp, vip3), Some(VipWatch::default()));
    assert_eq!(watch(&dp, VIP2), None, "removed VIP unwatched");
    let f2 = frames::arp(2, FOREIGN_MAC, VIP2.octets(), VIP2.octets());
    assert_arp(&dp, &f2, Outcome::Passed, "no longer a VIP");
    // A new MAC (the interface changed): our own old MAC now is foreign.
    dp.configure(&Settings {
        mac: FOREIGN_MAC,
        ..settings()
    })
    .unwrap();
    assert_arp(&dp, &f, Outcome::Passed, "sender is now our MAC");
    let own_old = frames::arp(1, OUR_MAC, VIP.octets(), VIP.octets());
    assert_arp(
        &dp,
        &own_old,
        Outcome::ArpConflict,
        "old MAC is foreign now",
    );
    // No VIPs at all: nothing is watched.
    dp.configure(&Settings {
        vips_v4: vec![],
        quiet: std::time::Duration::from_millis(50),
        ..settings()
    })
    .unwrap();
    assert!(dp.vip_watch().unwrap().is_empty());
    assert_arp(&dp, &f, Outcome::Passed, "no VIPs");
}

#[test]
fn without_a_lease_arp_and_ipv4_for_the_vips_are_dropped() {
    let mut dp = plane();
    let who_has_vip = frames::arp(1, FOREIGN_MAC, frames::SRC_IP, VIP.octets());
    let to_vip = {
        let mut f = Ipv4Frame {
            proto: 1,
            ..Ipv4Frame::udp(0, &[8, 0, 0, 0, 0, 1, 0, 1])
        }
        .build();
        f[30..34].copy_from_slice(&VIP.octets()); // destination: the VIP
        f
    };
    let udp_to_vip = {
        let mut f = Ipv4Frame::udp(80, &[1, 2, 3]).build();
        f[30..34].copy_from_slice(&VIP.octets());
        f
    };
    // No lease (a backup, or a holder whose controller died long enough ago).
    for (f, why, what) in [
        (&who_has_vip, Outcome::FencedArp, "ARP who-has the VIP"),
        (&to_vip, Outcome::FencedIp, "ICMP to the VIP"),
        (&udp_to_vip, Outcome::FencedIp, "UDP to the VIP"),
    ] {
        let (action, _, outcome) = run(&dp, f);
        assert_eq!((action, outcome), (XDP_DROP, why), "{what}");
    }
    // Traffic for other addresses is not affected.
    assert_passes_untouched(
        &dp,
        &Ipv4Frame::udp(80, &[1, 2, 3]).build(),
        "UDP to the node address",
    );
    assert_passes_untouched(&dp, &frames::arp_request(), "ARP for the node address");
    // A valid lease lets the VIP's traffic in.
    let now = Duration::from_nanos(hb_tests::monotonic_ns());
    dp.set_lease(now + Duration::from_secs(60)).unwrap();
    assert_passes_untouched(&dp, &to_vip, "ICMP to the VIP with a lease");
    assert_arp(
        &dp,
        &who_has_vip,
        Outcome::Passed,
        "ARP who-has the VIP with a lease",
    );
    // An expired lease is no lease.
    dp.set_lease(now - Duration::from_millis(1)).unwrap();
    let (action, _, outcome) = run(&dp, &to_vip);
    assert_eq!((action, outcome), (XDP_DROP, Outcome::FencedIp));
    assert_eq!(dp.stats().unwrap().fenced_ip, 3);
    assert_eq!(dp.stats().unwrap().fenced_arp, 1);
}

// ---- Death notice ----

/// This node's id and its dead controller's epoch, as registered in `owner`.
const OUR_NODE: u32 = 1;
const DEAD_EPOCH: u32 = 9;

/// Marks this data plane's controller dead, as the exit watch would.
fn mark_dead(dp: &mut DataPlane) {
    dp.write_owner(Owner {
        pid: 4242,
        node_id: OUR_NODE,
        epoch: DEAD_EPOCH,
        dead_ns: hb_tests::monotonic_ns(),
        ..Default::default()
    })
    .unwrap();
}

/// The notice that answers our peer's heartbeat (epoch, seq).
fn notice_for(epoch: u32, seq: u64) -> [u8; WIRE_LEN] {
    Gone {
        cluster_id: 7,
        node_id: OUR_NODE,
        dead_epoch: DEAD_EPOCH,
        echo_epoch: epoch,
        echo_seq: seq,
    }
    .encode(&key())
}

/// `frame` (Ethernet, IPv4 header at `ip`, UDP, heartbeat) as the answer must
/// leave: addresses swapped, TTL 64, header checksum redone, from and to the
/// heartbeat port, no UDP checksum, `notice` as the payload.
fn v4_answer(frame: &[u8], ip: usize, notice: &[u8; WIRE_LEN]) -> Vec<u8> {
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

/// The UDP datagram at the end of a frame: header and heartbeat-sized payload.
fn udp_of(frame: &[u8]) -> &[u8] {
    &frame[frame.len() - 8 - WIRE_LEN..]
}

#[test]
fn a_dead_controllers_data_plane_answers_a_heartbeat_with_a_death_notice() {
    let mut dp = plane();
    mark_dead(&mut dp);
    let f = hb_frame(5, 42);
    let (action, out, outcome) = run(&dp, &f);
    assert_eq!((action, outcome), (XDP_TX, Outcome::GoneSent));
    assert_eq!(
        out,
        v4_answer(&f, 14, &notice_for(5, 42)),
        "the answer, byte for byte"
    );
    assert_eq!(frames::checksum(&out[14..34]), 0, "IPv4 header checksum");
    assert_eq!(
        decode_gone(&out[out.len() - WIRE_LEN..], &key(), 7),
        Ok(Gone {
            cluster_id: 7,
            node_id: OUR_NODE,
            dead_epoch: DEAD_EPOCH,
            echo_epoch: 5,
            echo_seq: 42
        })
    );
    // The heartbeat itself was recorded as usual: the data plane still hears.
    assert_eq!(
        (peer(&dp).epoch, peer(&dp).seq, peer(&dp).accepted),
        (5, 42, 1)
    );
    // Its replay gets no answer.
    assert_refused(&dp, &f, Outcome::Replayed);
}

#[test]
fn death_notices_keep_the_vlan_tag_and_the_ip_options() {
    let mut dp = plane();
    mark_dead(&mut dp);
    let f = Ipv4Frame {
        vlan: Some(42),
        options: vec![1, 1, 1, 0],
        ..Ipv4Frame::udp(DEFAULT_PORT, &heartbeat(PEER, 5, 1).encode(&key()))
    }
    .build();
    let (action, out, outcome) = run(&dp, &f);
    assert_eq!((action, outcome), (XDP_TX, Outcome::GoneSent));
    assert_eq!(out, v4_answer(&f, 18, &notice_for(5, 1)));
    assert_eq!(frames::checksum(&out[18..18 + 24]), 0);
}

#[test]
fn death_notices_over_ipv6_carry_a_valid_udp_checksum() {
    let mut dp = plane();
    mark_dead(&mut dp);
    let hbh = (IPV6_HOPOPTS, vec![1, 4, 0, 0, 0, 0]);
    for (seq, ext) in [(1u64, vec![]), (2, vec![hbh])] {
        let f = Ipv6Frame { ext, ..hb6(5, seq) }.build();
        let (action, out, outcome) = run(&dp, &f);
        assert_eq!((action, outcome), (XDP_TX, Outcome::GoneSent));
        assert_eq!(out.len(), f.len());
        assert_eq!((&out[..6], &out[6..12]), (&f[6..12], &f[..6]), "MACs");
        assert_eq!(out[14 + 7], 64, "hop limit");
        assert_eq!(&out[14 + 8..14 + 24], &frames::DST_IP6, "from us");
        assert_eq!(&out[14 + 24..14 + 40], &frames::SRC_IP6, "to the peer");
        assert_eq!(
            &out[14 + 40..out.len() - 44],
            &f[14 + 40..f.len() - 44],
            "ext headers kept"
        );
        let udp = udp_of(&out);
        assert_eq!(&udp[..4], &[0x02, 0xb6, 0x02, 0xb6], "from and to port 694");
        assert_eq!(&udp[4..6], &44u16.to_be_bytes());
        assert_ne!(&udp[6..8], &[0, 0], "IPv6 needs a UDP checksum");
        let sum = frames::checksum(&[frames::pseudo_header(17, udp.len()), udp.to_vec()].concat());
        assert_eq!(sum, 0, "UDP checksum over the pseudo-header");
        assert_eq!(&udp[8..], &notice_for(5, seq));
    }
}

#[test]
fn with_the_controller_alive_heartbeats_are_dropped_as_usual() {
    let mut dp = plane();
    dp.set_owner(OUR_NODE, DEAD_EPOCH, std::process::id())
        .unwrap();
    assert_eq!(dp.owner().unwrap().dead_ns, 0);
    let (action, _, outcome) = run(&dp, &hb_frame(5, 1));
    assert_eq!((action, outcome), (XDP_DROP, Outcome::Accepted));
    // Nor is anything answered once it is dead but for heartbeats: a leave, a
    // refused heartbeat and a peer's own notice get no answer.
    mark_dead(&mut dp);
    let mut leave = heartbeat(PEER, 5, 2);
    leave.msg_type = MsgType::Leave;
    let f = Ipv4Frame::udp(DEFAULT_PORT, &leave.encode(&key())).build();
    assert_eq!(run(&dp, &f).0, XDP_DROP);
    let forged = heartbeat(PEER, 5, 3).encode(&Key { k0: 1, k1: 2 });
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &forged).build(),
        Outcome::BadMac,
    );
    let theirs = peer_gone(5, 1);
    let f = Ipv4Frame::udp(DEFAULT_PORT, &theirs.encode(&key())).build();
    assert_eq!(run(&dp, &f).0, XDP_DROP);
}

#[test]
fn a_peer_claiming_the_vips_after_our_death_withdraws_our_lease() {
    let mut dp = holding_plane();
    let who_has_vip = frames::arp(1, FOREIGN_MAC, frames::SRC_IP, VIP.octets());
    mark_dead(&mut dp);
    // Dead, but nobody took over yet: the lease runs on (a quick restart keeps
    // answering), also after a heartbeat that does not claim the VIPs.
    assert_arp(&dp, &who_has_vip, Outcome::Passed, "lease held");
    let mut backup = heartbeat(PEER, 5, 1);
    backup.flags = 0;
    let f = Ipv4Frame::udp(DEFAULT_PORT, &backup.encode(&key())).build();
    assert_eq!(run(&dp, &f).2, Outcome::GoneSent);
    assert_arp(&dp, &who_has_vip, Outcome::Passed, "still held");
    // It took over after our notice: it answers for the VIPs now, we stop.
    assert_eq!(run(&dp, &hb_frame(5, 2)).2, Outcome::GoneSent);
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

/// Our peer's (node PEER's) notice that its epoch 6 died, answering our
/// heartbeat (epoch, seq).
fn peer_gone(epoch: u32, seq: u64) -> Gone {
    Gone {
        cluster_id: 7,
        node_id: PEER,
        dead_epoch: 6,
        echo_epoch: epoch,
        echo_seq: seq,
    }
}

/// That notice in a frame, signed.
fn peer_notice(epoch: u32, seq: u64) -> Vec<u8> {
    Ipv4Frame::udp(DEFAULT_PORT, &peer_gone(epoch, seq).encode(&key())).build()
}

fn we_sent(dp: &DataPlane, epoch: u32, seq: u64) {
    let mut cell = dp.sent_map().unwrap();
    assert!(cell.is_mapped(), "the sent map is mmapable");
    cell.set(Sent {
        epoch,
        _pad: 0,
        seq,
    });
}

#[test]
fn a_fresh_death_notice_is_recorded_apart_from_the_heartbeat_fields() {
    let dp = plane();
    assert_eq!(run(&dp, &hb_frame(6, 10)).2, Outcome::Accepted);
    let heard = peer(&dp);
    we_sent(&dp, 3, 102);
    let t0 = hb_tests::monotonic_ns();
    let (action, _, outcome) = run(&dp, &peer_notice(3, 100));
    let t1 = hb_tests::monotonic_ns();
    assert_eq!((action, outcome), (XDP_DROP, Outcome::Gone));
    let p = peer(&dp);
    assert!(t0 <= p.gone_ns && p.gone_ns <= t1, "gone_ns {}", p.gone_ns);
    assert_eq!((p.gone_epoch, p.gone_seq), (6, 100));
    assert!(p.gone(), "epoch 6 died, the last heartbeat was of epoch 6");
    let untouched = PeerState {
        gone_ns: 0,
        gone_epoch: 0,
        gone_seq: 0,
        ..p
    };
    assert_eq!(
        untouched, heard,
        "the heartbeat fields and anti-replay are the peer's"
    );
    // Its anti-replay is untouched: the next heartbeat of epoch 6 is accepted,
    // and a restarted controller's (epoch 7) ends the notice.
    assert_eq!(run(&dp, &hb_frame(6, 11)).2, Outcome::Accepted);
    assert!(peer(&dp).gone());
    assert_eq!(run(&dp, &hb_frame(7, 1)).2, Outcome::Accepted);
    assert!(!peer(&dp).gone());
}

#[test]
fn a_replayed_or_stale_death_notice_is_refused_and_counted() {
    let dp = plane();
    // Nothing sent yet: no notice can answer us.
    assert_refused(&dp, &peer_notice(3, 100), Outcome::GoneReplayed);
    we_sent(&dp, 3, 100);
    assert_eq!(run(&dp, &peer_notice(3, 100)).2, Outcome::Gone);
    let recorded = peer(&dp);
    // The same notice once our sequence moved on past the window: a replay.
    we_sent(&dp, 3, 100 + GONE_WINDOW);
    assert_refused(&dp, &peer_notice(3, 100), Outcome::GoneReplayed);
    // Echoing a number we never sent, or our previous epoch.
    assert_refused(
        &dp,
        &peer_notice(3, 100 + GONE_WINDOW + 1),
        Outcome::GoneReplayed,
    );
    assert_refused(
        &dp,
        &peer_notice(2, 100 + GONE_WINDOW),
        Outcome::GoneReplayed,
    );
    assert_eq!(peer(&dp), recorded);
    assert_eq!(dp.stats().unwrap().gone_replayed, 4);
    // Fresh, but signed with another key, or from a node that is not a peer.
    let fresh = peer_gone(3, 107);
    let f = Ipv4Frame::udp(DEFAULT_PORT, &fresh.encode(&Key { k0: 1, k1: 2 })).build();
    assert_refused(&dp, &f, Outcome::BadMac);
    let stranger = Gone {
        node_id: 99,
        ..fresh
    };
    let f = Ipv4Frame::udp(DEFAULT_PORT, &stranger.encode(&key())).build();
    assert_refused(&dp, &f, Outcome::UnknownNode);
    // Over IPv6 the same rules hold.
    let f = Ipv6Frame::udp(DEFAULT_PORT, &fresh.encode(&key())).build();
    assert_eq!(run(&dp, &f).2, Outcome::Gone);
    assert_eq!(peer(&dp).gone_seq, 107);
}

/// The sender thread writes the lease and the last-sent record through mapped
/// memory (no syscall per heartbeat): what it stores there is what the kernel,
/// and so XDP, reads.
#[test]
fn lease_and_sent_are_written_through_mapped_memory() {
    let dp = plane();
    let mut lease = dp.lease_map().unwrap();
    assert!(
        lease.is_mapped(),
        "the lease map is mmapable on this kernel"
    );
    lease.set(hb_common::maps::Lease {
        until_ns: 123_456_789,
    });
    assert_eq!(
        dp.lease().unwrap(),
        std::time::Duration::from_nanos(123_456_789)
    );
    lease.set(hb_common::maps::Lease { until_ns: 0 });
    assert_eq!(dp.lease().unwrap(), std::time::Duration::ZERO);
    we_sent(&dp, 9, 77);
    let s = dp.sent_map().unwrap().get().unwrap();
    assert_eq!((s.epoch, s.seq), (9, 77));
}

/// What the data plane told the controller since the last call.
fn news(ring: &mut aya::maps::RingBuf<aya::maps::MapData>) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), std::mem::size_of::<hb_common::maps::Event>());
        // SAFETY: the record is one Event (length checked).
        let ev: hb_common::maps::Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
        out.push((ev.kind, ev.subject));
        assert!(out.len() < 1000, "bounded");
    }
    out
}

/// The controller waits on the event ring instead of polling the maps: a peer
/// first heard, heard after a quiet gap, or saying something new is news; its
/// steady heartbeats are not; nor is a refused one.
#[test]
fn peers_are_news_when_new_changed_or_back_from_quiet() {
    use hb_common::maps::{EVENT_GONE, EVENT_PEER};
    let dp = plane();
    let mut ring = dp.events().unwrap();
    assert_eq!(news(&mut ring), []);
    assert_eq!(run(&dp, &hb_frame(1, 1)).2, Outcome::Accepted);
    assert_eq!(news(&mut ring), [(EVENT_PEER, PEER)], "first heard");
    assert_eq!(run(&dp, &hb_frame(1, 2)).2, Outcome::Accepted);
    assert_eq!(news(&mut ring), [], "steady: no news (quiet is 50 ms)");
    assert_refused(&dp, &hb_frame(1, 2), Outcome::Replayed);
    assert_eq!(news(&mut ring), [], "a replay is no news");
    // A new state (the frames say MASTER otherwise).
    let mut hb = heartbeat(PEER, 1, 3);
    hb.state = hb_common::NodeState::Backup as u8;
    let frame = Ipv4Frame::udp(DEFAULT_PORT, &hb.encode(&key())).build();
    assert_eq!(run(&dp, &frame).2, Outcome::Accepted);
    assert_eq!(news(&mut ring), [(EVENT_PEER, PEER)], "state changed");
    // A new epoch (a restart) with the same state.
    let mut hb = heartbeat(PEER, 2, 1);
    hb.state = hb_common::NodeState::Backup as u8;
    let frame = Ipv4Frame::udp(DEFAULT_PORT, &hb.encode(&key())).build();
    assert_eq!(run(&dp, &frame).2, Outcome::Accepted);
    assert_eq!(news(&mut ring), [(EVENT_PEER, PEER)], "new epoch");
    // Back after a quiet gap longer than `quiet`.
    std::thread::sleep(Duration::from_millis(60));
    let mut hb = heartbeat(PEER, 2, 2);
    hb.state = hb_common::NodeState::Backup as u8;
    let frame = Ipv4Frame::udp(DEFAULT_PORT, &hb.encode(&key())).build();
    assert_eq!(run(&dp, &frame).2, Outcome::Accepted);
    assert_eq!(news(&mut ring), [(EVENT_PEER, PEER)], "after a quiet gap");
    // A death notice.
    we_sent(&dp, 3, 100);
    assert_eq!(run(&dp, &peer_notice(3, 100)).2, Outcome::Gone);
    assert_eq!(news(&mut ring), [(EVENT_GONE, PEER)], "death notice");
}

/// ARP claiming a VIP is news once per new claimant or after a quiet gap: a
/// flood of claims wakes the controller once.
#[test]
fn vip_claims_are_news_once_per_claimant_not_per_packet() {
    use hb_common::maps::EVENT_CLAIM;
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
