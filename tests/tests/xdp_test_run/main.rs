//! The real compiled XDP object run with BPF_PROG_TEST_RUN, wire format v2
//! (docs/PROTOCOL.md): one frame per outcome class, over IPv4 and IPv6; each
//! case asserts the XDP action, the counter that moved, and the peer entry
//! (changed for a message that counted as life, untouched otherwise). The
//! session rules run here as the data plane runs them: a message is life only
//! when it echoes our current session (the `sent` map), a peer's new session
//! only when it echoes one of our recent sequence numbers. Anything that is not
//! an hb v2 message for this node passes untouched; v1 heartbeats name an old
//! peer; a message from our own id in another session is an id collision. ARP
//! claiming a VIP from a foreign MAC is counted and passes. With the controller
//! marked dead, a heartbeat that counted as life comes back as a death notice
//! (XDP_TX), byte for byte; a peer's notice is recorded only when it echoes one
//! of our recent heartbeats.
//!
//! One module per feature (below); the data planes, frames and assertions more
//! than one of them uses are here, what one feature alone needs is in its module.

mod arp_watch;
mod authentication;
mod configuration;
mod death_notice;
mod events;
mod fence;
mod heartbeat;
mod id_collision;
mod malformed;
mod mapped_memory;
mod passthrough;
mod refusals;
mod replay;
mod sessions;
mod wire_v1;

use aya::programs::{TestRun, TestRunOptions};
use hb_common::{
    maps::{Outcome, PeerState, Seen, Sent, Stats},
    wire::DEFAULT_PORT,
    wire2::{self, Body, Head, BODY, LEN},
    Key, MsgType,
};
use hb_tests::frames::{self, key, Ipv4Frame, Ipv6Frame, CLUSTER};
use hb_user::loader::{DataPlane, Settings};
use std::{net::Ipv4Addr, time::Duration};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
/// This node's id (`Config.node_id`).
const OUR_NODE: u32 = 1;
/// The peer most frames come from (slot 0 of `seen`), and a second one (slot 1).
const PEER: u32 = 2;
const OTHER_PEER: u32 = 3;
/// Our controller's session, as the sender thread publishes it in `sent`.
const OURS: u64 = 0x0b0b_5e55_0000_0001;
/// A session of ours before a restart: what captures from then echo.
const OLD_OURS: u64 = 0x0b0b_5e55_0000_0000;
/// The peer's session, and its session after a restart.
const PS: u64 = 0x0a0a_5e55_0000_0002;
const PS2: u64 = 0x0a0a_5e55_0000_0003;
/// Our last sequence number sent, and the low end of the recent ones:
/// `(RECENT_LO, SENT_SEQ]` is what a new session of a peer must echo.
const SENT_SEQ: u64 = 100;
const RECENT_LO: u64 = 90;
/// The interface the program sits on: the test frames' destination MAC.
const OUR_MAC: [u8; 6] = frames::DST_MAC;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 100);
const VIP2: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 101);
const VIP6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, 0x100);
const FOREIGN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x66];
/// Another key than the cluster's.
const WRONG_KEY: Key = Key { k0: 1, k1: 2 };

fn settings() -> Settings {
    Settings {
        cluster_id: CLUSTER,
        port: DEFAULT_PORT,
        pass_heartbeats: false,
        key: key(),
        node_id: OUR_NODE,
        peers: vec![PEER, OTHER_PEER],
        mac: OUR_MAC,
        vips_v4: vec![VIP, VIP2],
        vips_v6: vec![VIP6],
        quiet: std::time::Duration::from_millis(50),
    }
}

/// A configured data plane whose controller has published no heartbeat yet
/// (the `sent` map is zero).
fn silent_plane() -> DataPlane {
    hb_tests::require_root("BPF_PROG_TEST_RUN");
    let mut dp = DataPlane::load().expect("load the XDP object");
    dp.configure(&settings()).expect("configure");
    dp
}

/// A configured data plane of a running controller: session [`OURS`], its
/// sequence numbers `(RECENT_LO, SENT_SEQ]` recent.
fn plane() -> DataPlane {
    let dp = silent_plane();
    we_sent(&dp, OURS, SENT_SEQ, RECENT_LO);
    dp
}

/// A data plane holding the VIP lease for a minute, as a VIP holder's does: ARP
/// and IPv4 for the VIPs pass (the self-fence is tested on its own, in fence.rs).
fn holding_plane() -> DataPlane {
    let mut dp = plane();
    dp.set_lease(Duration::from_nanos(hb_tests::monotonic_ns()) + Duration::from_secs(60))
        .unwrap();
    dp
}

/// What the sender thread publishes before each send: our session, our last
/// seq, the low end of the recent ones.
fn we_sent(dp: &DataPlane, session: u64, seq: u64, recent_lo: u64) {
    let mut cell = dp.sent_map().unwrap();
    assert!(cell.is_mapped(), "the sent map is mmapable");
    cell.set(Sent {
        session,
        seq,
        recent_lo,
    });
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

/// A heartbeat of [`PEER`] in session [`PS`] at `seq`, echoing our current
/// session and a recent seq: the first one adopts the session, the next ones
/// are life in it.
fn hb(seq: u64) -> Head {
    frames::head(PEER, OUR_NODE, PS, seq, (OURS, RECENT_LO + 1))
}

/// `h` as a signed message in an IPv4 frame to the heartbeat port.
fn v4(h: &Head) -> Vec<u8> {
    Ipv4Frame::udp(DEFAULT_PORT, &frames::message(h)).build()
}

/// `h` as a signed message in an IPv6 frame to the heartbeat port.
fn v6(h: &Head) -> Ipv6Frame {
    Ipv6Frame::udp(DEFAULT_PORT, &frames::message(h))
}

fn hb_frame(seq: u64) -> Vec<u8> {
    v4(&hb(seq))
}

fn hb6(seq: u64) -> Ipv6Frame {
    v6(&hb(seq))
}

/// `h` and a body under another key than the cluster's.
fn forged(h: &Head) -> [u8; LEN] {
    wire2::encode(h, &frames::body(h.from), &WRONG_KEY)
}

/// A death notice with head `h`: signed head, zero body and body MAC, as a
/// dead node's data plane sends it.
fn notice_bytes(h: &Head) -> [u8; LEN] {
    let mut b = wire2::encode(h, &Body::default(), &key());
    b[BODY..].fill(0);
    b
}

fn peer(dp: &DataPlane) -> PeerState {
    dp.peer(PEER)
        .unwrap()
        .expect("configured peer has an entry")
}

/// The `seen` slot of [`PEER`] (its index among the configured peers).
fn seen(dp: &DataPlane) -> Seen {
    dp.seen_map().expect("the seen map is mmapable").read(0)
}

/// Everything a frame may change for the peers: every entry, and PEER's slot.
fn peer_state(dp: &DataPlane) -> (Vec<(u32, PeerState)>, Seen) {
    (dp.peers().unwrap(), seen(dp))
}

/// Asserts a refused heartbeat-port frame is dropped, counted as `why`, and
/// leaves every peer entry (ours included) and the `seen` slot alone.
fn assert_refused(dp: &DataPlane, frame: &[u8], why: Outcome) {
    let before = peer_state(dp);
    let (action, _, outcome) = run(dp, frame);
    assert_eq!(outcome, why);
    assert_eq!(action, XDP_DROP, "{why:?} must be dropped");
    assert_eq!(
        peer_state(dp),
        before,
        "{why:?} must not touch the peer entries"
    );
}

/// Asserts a frame passes untouched, counts as passed and changes no entry.
fn assert_passes_untouched(dp: &DataPlane, frame: &[u8], what: &str) {
    let before = peer_state(dp);
    let (action, out, outcome) = run(dp, frame);
    assert_eq!(action, XDP_PASS, "{what} must pass");
    assert_eq!(outcome, Outcome::Passed, "{what} counts as passed");
    assert_eq!(out, frame, "{what} must be untouched");
    assert_eq!(peer_state(dp), before, "{what}");
}

/// Asserts a valid heartbeat-port frame is dropped as a step of the handshake:
/// counted `handshake`, no life (last seen and accepted unchanged).
fn assert_handshake(dp: &DataPlane, frame: &[u8], what: &str) {
    let before = peer(dp);
    let (action, _, outcome) = run(dp, frame);
    assert_eq!((action, outcome), (XDP_DROP, Outcome::Handshake), "{what}");
    let p = peer(dp);
    assert_eq!(
        (p.last_seen_ns, p.accepted, p.message),
        (before.last_seen_ns, before.accepted, before.message),
        "{what}: no life"
    );
    assert_eq!(p.session, before.session, "{what}: nothing adopted");
}

/// Asserts `frame` counted as life: dropped, `accepted`, and the entry moved on.
fn assert_life(dp: &DataPlane, frame: &[u8], what: &str) {
    let before = peer(dp);
    let (action, _, outcome) = run(dp, frame);
    assert_eq!((action, outcome), (XDP_DROP, Outcome::Accepted), "{what}");
    assert_eq!(peer(dp).accepted, before.accepted + 1, "{what}");
}

/// Asserts an ARP frame passes untouched and is counted as `expected`.
fn assert_arp(dp: &DataPlane, frame: &[u8], expected: Outcome, what: &str) {
    let (action, out, outcome) = run(dp, frame);
    assert_eq!(action, XDP_PASS, "{what}: ARP always passes");
    assert_eq!(out, frame, "{what}: ARP is never modified");
    assert_eq!(outcome, expected, "{what}");
}

/// The head of our peer's notice that its controller (session PS) died,
/// answering our heartbeat `your` (our session and seq).
fn peer_gone(your: (u64, u64)) -> Head {
    Head {
        msg_type: MsgType::Gone,
        flags: 0,
        state: 0,
        body_gen: 0,
        cluster_id: CLUSTER,
        from: PEER,
        to: OUR_NODE,
        session: PS,
        seq: 77,
        your_session: your.0,
        your_seq: your.1,
    }
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
