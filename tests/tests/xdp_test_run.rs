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

use aya::programs::{TestRun, TestRunOptions};
use hb_common::{
    maps::{
        Outcome, Owner, PeerState, Seen, Sent, Stats, VipWatch, EVENT_CLAIM, EVENT_COLLISION,
        EVENT_GONE, EVENT_PEER,
    },
    wire::DEFAULT_PORT,
    wire2::{self, Body, Head, BODY, FLAG_HOLDS, LEN},
    Key, MsgType, NodeState,
};
use hb_tests::{
    bench::flood::Rng,
    frames::{
        self, key, ExtHeader, Ipv4Frame, Ipv6Frame, CLUSTER, IPV6_DSTOPTS, IPV6_HOPOPTS,
        IPV6_ROUTING,
    },
};
use hb_user::loader::{DataPlane, Settings};
use std::net::Ipv4Addr;
use std::time::Duration;

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
/// and IPv4 for the VIPs pass (the self-fence is tested on its own below).
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

/// A Linux-HA Heartbeat status message, as it sends them to UDP 694.
fn linux_ha_status() -> Vec<u8> {
    b">>>\nt=status\nst=active\ndt=7530\nprotocol=1\nsrc=node1\nseq=1a\nhg=4d2b1234\nts=4d2b1256\nld=0.00 0.01 0.05 1/123 4567\nttl=3\nauth=1 6b8f0c2e9a41d7735c0b\n<<<\n".to_vec()
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

/// Our own entry, where id collisions are recorded.
fn own(dp: &DataPlane) -> PeerState {
    dp.peer(OUR_NODE)
        .unwrap()
        .expect("the controller inserts an entry for its own id")
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

// ---- The session rules ----

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

#[test]
fn a_message_to_another_node_passes_untouched() {
    let dp = plane();
    assert_eq!(run(&dp, &hb_frame(1)).2, Outcome::Accepted);
    for (what, to) in [
        ("another node", 5),
        ("another configured peer", OTHER_PEER),
        ("node 0", 0),
    ] {
        let h = frames::head(PEER, to, PS, 2, (OURS, SENT_SEQ));
        assert_passes_untouched(&dp, &v4(&h), what);
        assert_passes_untouched(&dp, &v6(&h).build(), what);
        // Its MAC is not ours to check.
        let f = Ipv4Frame::udp(DEFAULT_PORT, &forged(&h)).build();
        assert_passes_untouched(&dp, &f, what);
    }
    let stranger = frames::head(99, 5, 0x99, 1, (0, 0));
    assert_passes_untouched(&dp, &v4(&stranger), "between two strangers");
    // The message for us is still fresh.
    assert_eq!(run(&dp, &hb_frame(2)).2, Outcome::Accepted);
}

/// Linux-HA Heartbeat uses UDP 694 too: whatever is not an hb v2 message (its
/// length and magic) goes to the stack untouched.
#[test]
fn udp_694_that_is_not_an_hb_message_passes_untouched() {
    let dp = plane();
    let mut rng = Rng(0x694);
    let good = frames::message(&hb(1));
    let mut magic = good;
    magic[0] = b'X';
    for (what, payload) in [
        ("100 random bytes", rng.bytes(100)),
        ("a Linux-HA status message", linux_ha_status()),
        ("144 random bytes", rng.bytes(LEN)),
        ("36 random bytes (a v1 length)", rng.bytes(36)),
        ("an hb message with another magic", magic.to_vec()),
        ("an hb message one byte short", good[..LEN - 1].to_vec()),
        (
            "an hb message and one byte more",
            [good.as_slice(), &[0]].concat(),
        ),
        ("nothing", vec![]),
        ("one byte", vec![0x48]),
    ] {
        assert_passes_untouched(&dp, &Ipv4Frame::udp(DEFAULT_PORT, &payload).build(), what);
        assert_passes_untouched(&dp, &frames::ipv6_udp(DEFAULT_PORT, &payload), what);
        let tagged = Ipv4Frame {
            vlan: Some(3),
            ..Ipv4Frame::udp(DEFAULT_PORT, &payload)
        };
        assert_passes_untouched(&dp, &tagged.build(), what);
    }
    assert_eq!(dp.stats().unwrap().passed, 27);
    assert_eq!(peer(&dp).accepted, 0);
}

#[test]
fn unknown_node_is_refused() {
    let dp = plane();
    let h = frames::head(99, OUR_NODE, 0x99, 1, (OURS, SENT_SEQ));
    assert_refused(&dp, &v4(&h), Outcome::UnknownNode);
    assert_eq!(
        dp.peer(99).unwrap(),
        None,
        "no entry is created for an unknown node"
    );
}

#[test]
fn wrong_cluster_is_refused() {
    let dp = plane();
    let h = Head {
        cluster_id: 8,
        ..hb(1)
    };
    assert_refused(&dp, &v4(&h), Outcome::WrongCluster);
}

#[test]
fn wrong_version_and_type_are_refused() {
    let dp = plane();
    let good = frames::message(&hb(1));
    for (at, value, why) in [
        (2, 3, Outcome::BadVersion),
        (2, 0, Outcome::BadVersion),
        (2, 0xff, Outcome::BadVersion),
        // The v1 version byte in a v2-sized message: counted, but no v1
        // message either (not recorded as an old peer).
        (2, 1, Outcome::OldVersion),
        (3, 0, Outcome::BadType),
        (3, 7, Outcome::BadType),
    ] {
        let mut b = good;
        b[at] = value;
        assert_refused(&dp, &Ipv4Frame::udp(DEFAULT_PORT, &b).build(), why);
    }
    assert_eq!(peer(&dp).old_version_ns, 0);
    assert_eq!(
        run(&dp, &Ipv4Frame::udp(DEFAULT_PORT, &good).build()).2,
        Outcome::Accepted
    );
}

#[test]
fn every_truncation_is_handled() {
    let dp = plane();
    let full = hb_frame(1);
    // eth 14 + ip 20 + udp 8: from there on the frame is recognisably for the heartbeat port.
    let udp_end = 14 + 20 + 8;
    assert_eq!(full.len(), udp_end + LEN);
    for len in 0..full.len() {
        let frame = &full[..len];
        if len < 14 {
            // The kernel itself refuses test frames shorter than an Ethernet header.
            let mut out = [0u8; 256];
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
            // The UDP and IP lengths promise an hb message the frame does not hold.
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
fn ipv4_lengths_are_checked() {
    let dp = plane();
    let good = hb_frame(1);
    let tot_len_at = 14 + 2;
    // IPv4 total length one short of the UDP datagram.
    let mut short = good.clone();
    short[tot_len_at..tot_len_at + 2].copy_from_slice(&(20 + 8 + LEN as u16 - 1).to_be_bytes());
    assert_refused(&dp, &short, Outcome::BadLength);
    // A larger total length and trailing bytes (Ethernet padding) are fine.
    let mut padded = good.clone();
    padded[tot_len_at..tot_len_at + 2].copy_from_slice(&(20 + 8 + LEN as u16 + 6).to_be_bytes());
    padded.extend_from_slice(&[0; 6]);
    assert_eq!(run(&dp, &padded).2, Outcome::Accepted);
}

#[test]
fn fragments_pass() {
    let dp = plane();
    let payload = frames::message(&hb(1));
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
    // A first fragment of a datagram longer than an hb message is not one.
    let mut first = Ipv4Frame {
        more_fragments: true,
        ..Ipv4Frame::udp(DEFAULT_PORT, &payload)
    }
    .build();
    let udp_len_at = 14 + 20 + 4;
    first[udp_len_at..udp_len_at + 2].copy_from_slice(&1400u16.to_be_bytes());
    assert_passes_untouched(&dp, &first, "first fragment of a long datagram");
    assert_eq!(peer(&dp).accepted, 0);
}

#[test]
fn other_traffic_passes_untouched() {
    let dp = plane();
    let payload = frames::message(&hb(1));
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
    let mut dp = plane();
    dp.configure(&Settings {
        pass_heartbeats: true,
        ..settings()
    })
    .unwrap();
    let (action, _, outcome) = run(&dp, &hb_frame(1));
    assert_eq!((action, outcome), (XDP_PASS, Outcome::Accepted));
    let (action, _, outcome) = run(&dp, &hb_frame(1));
    assert_eq!((action, outcome), (XDP_PASS, Outcome::Replayed));
    let hello = frames::head(OTHER_PEER, OUR_NODE, 0x33, 1, (0, 0));
    let (action, _, outcome) = run(&dp, &v4(&hello));
    assert_eq!((action, outcome), (XDP_PASS, Outcome::Handshake));
}

#[test]
fn unconfigured_program_passes_everything() {
    hb_tests::require_root("BPF_PROG_TEST_RUN");
    let dp = DataPlane::load().unwrap();
    let (action, _, outcome) = run(&dp, &hb_frame(1));
    assert_eq!((action, outcome), (XDP_PASS, Outcome::Passed));
    let v1 = Ipv4Frame::udp(DEFAULT_PORT, &frames::v1_heartbeat(PEER, 1, 1, false)).build();
    let (action, _, outcome) = run(&dp, &v1);
    assert_eq!((action, outcome), (XDP_PASS, Outcome::Passed));
}

// ---- Wire version 1 peers and id collisions ----

/// A v1 heartbeat (or leave) of `node_id`, signed with the cluster key.
fn v1_frame(node_id: u32, seq: u64, leave: bool) -> Vec<u8> {
    Ipv4Frame::udp(DEFAULT_PORT, &frames::v1_heartbeat(node_id, 3, seq, leave)).build()
}

/// A configured peer that still speaks wire version 1 is recorded (the
/// controller names it and stays out of its way) but never counts as life;
/// its v1 leave ends that.
#[test]
fn a_v1_peer_is_recorded_as_old_and_never_counts_as_life() {
    let dp = plane();
    let mut ring = dp.events().unwrap();
    let fresh = peer_state(&dp);
    let t0 = hb_tests::monotonic_ns();
    let (action, _, outcome) = run(&dp, &v1_frame(PEER, 1, false));
    let t1 = hb_tests::monotonic_ns();
    assert_eq!((action, outcome), (XDP_DROP, Outcome::OldVersion));
    let p = peer(&dp);
    assert!(
        t0 <= p.old_version_ns && p.old_version_ns <= t1,
        "{}",
        p.old_version_ns
    );
    let (mut entries, slot) = fresh.clone();
    for (id, e) in &mut entries {
        if *id == PEER {
            e.old_version_ns = p.old_version_ns;
        }
    }
    assert_eq!(
        peer_state(&dp),
        (entries, slot),
        "nothing else: no life, no echo"
    );
    assert_eq!(news(&mut ring), [(EVENT_PEER, PEER)], "an old peer is news");
    // More of them (a replayed one too: v1 anti-replay is not kept) renew it.
    for seq in [2, 3, 3] {
        let before = peer(&dp).old_version_ns;
        let (action, _, outcome) = run(&dp, &v1_frame(PEER, seq, false));
        assert_eq!((action, outcome), (XDP_DROP, Outcome::OldVersion));
        assert!(peer(&dp).old_version_ns >= before);
    }
    assert_eq!(news(&mut ring), [], "steady: no news within quiet");
    let v6 = Ipv6Frame::udp(DEFAULT_PORT, &frames::v1_heartbeat(PEER, 3, 4, false)).build();
    let (action, _, outcome) = run(&dp, &v6);
    assert_eq!(
        (action, outcome),
        (XDP_DROP, Outcome::OldVersion),
        "over IPv6"
    );
    // Only MAC-valid v1 from a configured peer counts.
    let forged = hb_common::wire::Heartbeat {
        msg_type: MsgType::Heartbeat,
        flags: 0,
        priority: 100,
        state: NodeState::Master as u8,
        cluster_id: CLUSTER,
        node_id: PEER,
        epoch: 3,
        seq: 5,
    }
    .encode(&WRONG_KEY);
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &forged).build(),
        Outcome::BadMac,
    );
    assert_refused(&dp, &v1_frame(99, 1, false), Outcome::UnknownNode);
    let mut other_cluster = frames::v1_heartbeat(PEER, 3, 6, false);
    other_cluster[11] ^= 1;
    assert_refused(
        &dp,
        &Ipv4Frame::udp(DEFAULT_PORT, &other_cluster).build(),
        Outcome::WrongCluster,
    );
    // Meanwhile the peer's v2 messages are life as usual and leave the mark alone.
    let old = peer(&dp).old_version_ns;
    assert_life(&dp, &hb_frame(1), "a v2 heartbeat");
    assert_eq!(peer(&dp).old_version_ns, old);
    let _ = news(&mut ring);
    // A v1 leave: the old node stopped, the mark is cleared.
    let (action, _, outcome) = run(&dp, &v1_frame(PEER, 7, true));
    assert_eq!((action, outcome), (XDP_DROP, Outcome::OldVersion));
    let p = peer(&dp);
    assert_eq!(p.old_version_ns, 0);
    assert_eq!(
        (p.session, p.seq, p.accepted),
        (PS, 1, 1),
        "the v2 state is kept"
    );
    assert_eq!(news(&mut ring), [(EVENT_PEER, PEER)], "its end is news too");
    assert_eq!(dp.stats().unwrap().old_version, 6);
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

// ---- IPv6 ----

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

#[test]
fn refusals_over_ipv6() {
    let dp = plane();
    assert_refused(
        &dp,
        &Ipv6Frame::udp(DEFAULT_PORT, &forged(&hb(1))).build(),
        Outcome::BadMac,
    );
    assert_eq!(run(&dp, &hb6(10).build()).2, Outcome::Accepted);
    assert_refused(&dp, &hb6(10).build(), Outcome::Replayed);
    assert_refused(&dp, &hb6(9).build(), Outcome::Replayed);
    // The same message replayed over the other IP version is a replay too.
    assert_refused(&dp, &hb_frame(10), Outcome::Replayed);
    let h = Head {
        cluster_id: 8,
        ..hb(11)
    };
    assert_refused(&dp, &v6(&h).build(), Outcome::WrongCluster);
    let h = frames::head(99, OUR_NODE, 0x99, 1, (OURS, SENT_SEQ));
    assert_refused(&dp, &v6(&h).build(), Outcome::UnknownNode);
    // Junk to the heartbeat port passes on IPv6 as on IPv4.
    assert_passes_untouched(
        &dp,
        &Ipv6Frame::udp(DEFAULT_PORT, &[0xa5; LEN]).build(),
        "junk of an hb message's size",
    );
    assert_passes_untouched(
        &dp,
        &Ipv6Frame::udp(DEFAULT_PORT, &[1, 2, 3]).build(),
        "three bytes",
    );
    assert_eq!(peer(&dp).accepted, 1);
}

#[test]
fn ipv6_lengths_are_checked() {
    let dp = plane();
    let good = hb6(1).build();
    let payload_len_at = 14 + 4;
    let udp_len_at = 14 + 40 + 4;
    let datagram = (8 + LEN) as u16;
    // IPv6 payload length one short of the UDP datagram.
    let mut short = good.clone();
    short[payload_len_at..payload_len_at + 2].copy_from_slice(&(datagram - 1).to_be_bytes());
    assert_refused(&dp, &short, Outcome::BadLength);
    // UDP length not 8 + 144: not an hb message.
    let mut long = good.clone();
    long[udp_len_at..udp_len_at + 2].copy_from_slice(&(datagram + 1).to_be_bytes());
    assert_passes_untouched(&dp, &long, "UDP length 153");
    // Payload length that counts the extension header but not the datagram.
    let mut ext = Ipv6Frame {
        ext: vec![(IPV6_HOPOPTS, vec![1, 4, 0, 0, 0, 0])],
        ..hb6(1)
    }
    .build();
    ext[payload_len_at..payload_len_at + 2].copy_from_slice(&(8 + datagram - 1).to_be_bytes());
    assert_refused(&dp, &ext, Outcome::BadLength);
    // A larger payload length (trailing bytes) is fine, as on IPv4.
    let mut padded = good.clone();
    padded[payload_len_at..payload_len_at + 2].copy_from_slice(&(datagram + 16).to_be_bytes());
    padded.extend_from_slice(&[0; 16]);
    assert_eq!(run(&dp, &padded).2, Outcome::Accepted);
}

#[test]
fn every_ipv6_truncation_is_handled() {
    let dp = plane();
    for ext in [vec![], vec![(IPV6_HOPOPTS, vec![1, 4, 0, 0, 0, 0])]] {
        let ext_len = ext.len() * 8;
        let full = Ipv6Frame { ext, ..hb6(1) }.build();
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
    assert_eq!(run(&dp, &hb6(1).build()).2, Outcome::Accepted);
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
        let f = Ipv6Frame { ext, ..hb6(1) };
        assert_passes_untouched(&dp, &f.build(), what);
    }
    // "No next header" after the IPv6 header.
    let none = Ipv6Frame {
        proto: 59,
        ..Ipv6Frame::udp(DEFAULT_PORT, &[])
    };
    assert_passes_untouched(&dp, &none.build(), "no next header");
    // A bad IP version in an IPv6 EtherType frame.
    let mut v4ish = hb6(1).build();
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

/// Reconfiguring keeps each peer's session state (its entry and slot stay).
#[test]
fn reconfiguring_keeps_the_peers_sessions() {
    let mut dp = plane();
    assert_eq!(run(&dp, &hb_frame(7)).2, Outcome::Accepted);
    let heard = peer(&dp);
    dp.configure(&Settings {
        vips_v4: vec![VIP],
        ..settings()
    })
    .unwrap();
    assert_eq!(peer(&dp), heard);
    assert_refused(&dp, &hb_frame(7), Outcome::Replayed);
    assert_eq!(run(&dp, &hb_frame(8)).2, Outcome::Accepted);
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

/// An IPv6 frame to `dst` from a client: ICMPv6 of `icmp_type` with `body`
/// after its 4-byte header (checksums are not XDP's business).
fn ipv6_icmp(dst: [u8; 16], icmp_type: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&FOREIGN_MAC);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    let len = (4 + body.len()) as u16;
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&[0xfd, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x50]);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[icmp_type, 0, 0, 0]);
    f.extend_from_slice(body);
    f
}

/// A neighbour solicitation for `target`, to its solicited-node address.
fn solicit(target: std::net::Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let mut group = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    group[13..].copy_from_slice(&t[13..]);
    let mut body = vec![0; 4];
    body.extend_from_slice(&t);
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&FOREIGN_MAC);
    ipv6_icmp(group, 135, &body)
}

#[test]
fn without_a_lease_neighbour_solicitations_and_ipv6_for_the_vips_are_dropped() {
    let mut dp = plane();
    let ns = solicit(VIP6);
    let echo = ipv6_icmp(VIP6.octets(), 128, &[0, 1, 0, 1]);
    let other: std::net::Ipv6Addr = "fd00:9::1".parse().unwrap();
    // No lease.
    assert_eq!(
        (run(&dp, &ns).0, run(&dp, &ns).2),
        (XDP_DROP, Outcome::FencedNd),
        "NS for the VIP"
    );
    let (action, _, outcome) = run(&dp, &echo);
    assert_eq!(
        (action, outcome),
        (XDP_DROP, Outcome::FencedIp6),
        "echo to the VIP"
    );
    // Other addresses are not affected.
    assert_passes_untouched(&dp, &solicit(other), "NS for the node address");
    assert_passes_untouched(
        &dp,
        &ipv6_icmp(other.octets(), 128, &[0, 1, 0, 1]),
        "echo to the node address",
    );
    // A valid lease lets the VIP's traffic in; an expired one is none.
    let now = Duration::from_nanos(hb_tests::monotonic_ns());
    dp.set_lease(now + Duration::from_secs(60)).unwrap();
    assert_passes_untouched(&dp, &ns, "NS for the VIP with a lease");
    assert_passes_untouched(&dp, &echo, "echo to the VIP with a lease");
    dp.set_lease(now - Duration::from_millis(1)).unwrap();
    assert_eq!(run(&dp, &echo).2, Outcome::FencedIp6);
    let s = dp.stats().unwrap();
    assert_eq!((s.fenced_nd, s.fenced_ip6, s.fenced_ip), (2, 2, 0));
}

// ---- Death notice ----

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

/// That notice in a frame, signed.
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

/// The sender thread writes the lease and the sent record through mapped
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
    we_sent(&dp, 0x5e55, 77, 70);
    let s = dp.sent_map().unwrap().get().unwrap();
    assert_eq!((s.session, s.seq, s.recent_lo), (0x5e55, 77, 70));
    // And XDP reads it: an echo of 77 in that session proves a peer fresh, 70 does not.
    let stale = frames::head(PEER, OUR_NODE, PS, 1, (0x5e55, 70));
    assert_refused(&dp, &v4(&stale), Outcome::StaleSession);
    let fresh = frames::head(PEER, OUR_NODE, PS, 2, (0x5e55, 77));
    assert_eq!(run(&dp, &v4(&fresh)).2, Outcome::Accepted);
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
