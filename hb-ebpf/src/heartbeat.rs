//! The checks a heartbeat-port payload goes through, in the order of
//! docs/PROTOCOL.md ("Receiving"), and the peer record a valid one updates.
//! Anything that is not an hb message for this node is passed untouched
//! (Linux-HA Heartbeat uses the same port). A death notice shares the checks
//! up to the head MAC and then takes its own path.

use aya_ebpf::{
    btf_maps::{Array, HashMap},
    helpers::bpf_ktime_get_ns,
    programs::XdpContext,
};
use hb_common::{
    maps::{
        Config, Key, PeerState, Seen, Sent, EVENT_COLLISION, EVENT_PEER, MAP_MMAPABLE, MAX_PEERS,
        SEEN_SLOTS,
    },
    wire::{self, MsgType},
    wire2::{self, Head, Refusal, Session, Verdict, Words, BODY, LEN},
};

use crate::parse::{ptr_at_bounded, Src, Udp, ETH_SRC_OFF};

/// UDP length of a v2 message, and of a v1 one (recognized to name old peers).
const UDP_LEN: u16 = (8 + LEN) as u16;
const V1_UDP_LEN: u16 = (8 + wire::WIRE_LEN) as u16;

type Peers = HashMap<u32, PeerState, { MAX_PEERS as usize + 1 }>;
type SeenMap = Array<Seen, { SEEN_SLOTS as usize }, MAP_MMAPABLE>;

/// What an authenticated message was.
pub enum Received {
    /// A sign of life, recorded in the peer's entry.
    Life(Head),
    /// Valid, but a step of the session handshake: no life yet.
    Handshake,
    /// A fresh death notice from this node id, recorded in its entry.
    Gone(u32),
}

#[inline(always)]
pub fn receive(
    ctx: &XdpContext,
    udp: &Udp,
    cfg: &Config,
    peers: &Peers,
    key: &Array<Key, 1>,
    sent: &Array<Sent, 1, MAP_MMAPABLE>,
    seen: &SeenMap,
) -> Result<Received, Refusal> {
    // 1. An hb message by its length, then its magic; anything else passes.
    if udp.udp_len == V1_UDP_LEN {
        return Err(old_version(ctx, udp, cfg, peers, key));
    }
    if udp.udp_len != UDP_LEN {
        return Err(Refusal::NotOurs);
    }
    if udp.ip_room < UDP_LEN {
        return Err(Refusal::BadLength);
    }
    let payload: *const [u8; LEN] =
        ptr_at_bounded(ctx, udp.payload_off).ok_or(Refusal::BadLength)?;
    // The head (what the checks read) copied as aligned words to this CPU's
    // scratch entry (not the stack: see `SCRATCH`), so that each field and
    // each MAC block is one load. Only the head: a 144-byte copy becomes a
    // byte loop in a memcpy subprogram, about 150 ns. Words past the head
    // hold an earlier packet's bytes and are never read.
    let scratch = crate::prog::SCRATCH
        .get_ptr_mut(0)
        .ok_or(Refusal::BadLength)?;
    // SAFETY: the bound above covers LEN bytes; the entry is LEN bytes, and
    // only this CPU uses it, for this packet.
    let w: &Words = unsafe {
        core::ptr::copy_nonoverlapping(payload.cast::<u8>(), scratch.cast::<u8>(), BODY);
        &*scratch
    };
    // 2-3. Magic, version, type.
    let h = Head::from_words(w)?;
    if h.cluster_id != cfg.cluster_id {
        return Err(Refusal::WrongCluster);
    }
    let key = key.get(0).ok_or(Refusal::BadMac)?;
    let ours = sent.get(0).copied().unwrap_or_default();
    // 4. Our own id: another machine has it (or our own message came back).
    if h.from == cfg.node_id {
        return Err(collision(w, &h, key, &ours, cfg, peers));
    }
    // 5. Addressed to us; 6. a configured peer; 7. the head MAC, the costly
    //    check, only for messages that got this far.
    if h.to != cfg.node_id {
        return Err(Refusal::NotForUs);
    }
    let peer = peers.get_ptr_mut(h.from).ok_or(Refusal::UnknownNode)?;
    if !wire2::head_mac_ok_words(w, key) {
        return Err(Refusal::BadMac);
    }
    // SAFETY: a hash map value; only this program writes it after the controller
    // created it. Two CPUs racing on one peer can at worst both accept the same
    // fresh message, never an old one.
    let p = unsafe { &mut *peer };
    let now = unsafe { bpf_ktime_get_ns() };
    if h.msg_type == MsgType::Gone {
        if !wire2::notice_fresh(&h, ours.session, ours.recent_lo, ours.seq) {
            return Err(Refusal::GoneReplayed);
        }
        p.gone_ns = now;
        p.gone_session = h.session;
        p.gone_seq = h.your_seq;
        return Ok(Received::Gone(h.from));
    }
    // 8. The session rules, over the peer's one entry.
    let slot = seen.get_ptr_mut(p.slot).ok_or(Refusal::UnknownNode)?;
    // SAFETY: an array value of this map; the sender thread only reads it.
    let sn = unsafe { &mut *slot };
    let mut s = Session {
        adopted: p.session,
        seq: p.seq,
        echo_session: sn.echo_session,
        echo_seq: sn.echo_seq,
        proof: p.adopted_echo,
    };
    let v = wire2::judge(&s, &h, ours.session, ours.recent_lo, ours.seq)?;
    wire2::apply(&mut s, &h, v);
    (p.session, p.seq, p.adopted_echo) = (s.adopted, s.seq, s.proof);
    (sn.echo_session, sn.echo_seq) = (s.echo_session, s.echo_seq);
    if v == Verdict::Adopt {
        p.adopted_ns = now;
    }
    if !v.is_life() {
        return Ok(Received::Handshake);
    }
    // News for the controller: first heard, heard after a quiet gap, a new
    // session, or saying something new (type, flags, state, body generation:
    // bytes 3..8, the low 40 bits of word 0). A steady peer's heartbeats are not news.
    const SAYS: u64 = (1 << 40) - 1;
    let said = u64::from_be(unsafe { *p.message.as_ptr().cast::<u64>() });
    let news = p.last_seen_ns == 0
        || now.wrapping_sub(p.last_seen_ns) >= cfg.quiet_ns
        || v == Verdict::Adopt
        || said & SAYS != u64::from_be(w[0]) & SAYS;
    if news {
        crate::prog::notify(EVENT_PEER, h.from);
    }
    // Addresses are read only now; they lie before the payload checked above,
    // so these reads cannot fail.
    let (src_ipv4, src_ipv6) = match udp.src {
        Src::V4(off) => (read::<[u8; 4]>(ctx, off)?, [0; 16]),
        Src::V6(off) => ([0; 4], read::<[u8; 16]>(ctx, off)?),
    };
    p.src_mac = read::<[u8; 6]>(ctx, ETH_SRC_OFF)?;
    p.src_ipv4 = src_ipv4;
    p.src_ipv6 = src_ipv6;
    p.last_seen_ns = now;
    sn.last_seen_ns = now;
    p.accepted += 1;
    p.ifindex = ctx.ingress_ifindex() as u32;
    // The whole message: the head from the scratch words, the body from the
    // frame (two copies small enough for LLVM to inline).
    // SAFETY: `message` is LEN bytes, 8-aligned (hb-common asserts it); the
    // frame holds LEN bytes at `payload` (checked above).
    unsafe {
        let m = p.message.as_mut_ptr();
        core::ptr::copy_nonoverlapping(w.as_ptr().cast::<u8>(), m, BODY);
        core::ptr::copy_nonoverlapping(payload.cast::<u8>().add(BODY), m.add(BODY), LEN - BODY);
    }
    Ok(Received::Life(h))
}

/// A valid message from our own node id: our own (a reflection) when it is
/// our session, else another machine configured with our id, recorded in our
/// own entry for the controller.
#[inline(always)]
fn collision(w: &Words, h: &Head, key: &Key, ours: &Sent, cfg: &Config, peers: &Peers) -> Refusal {
    if !wire2::head_mac_ok_words(w, key) {
        return Refusal::BadMac;
    }
    if h.session == ours.session {
        return Refusal::NotForUs;
    }
    record_collision(peers, cfg, h.session);
    Refusal::IdCollision
}

/// Another machine's message with our id, in `session` (0: wire v1), recorded
/// in our own entry; news when the first after a quiet gap.
#[inline(always)]
fn record_collision(peers: &Peers, cfg: &Config, session: u64) {
    if let Some(me) = peers.get_ptr_mut(cfg.node_id) {
        let now = unsafe { bpf_ktime_get_ns() };
        // SAFETY: a hash map value, written by this program only.
        let me = unsafe { &mut *me };
        if me.last_seen_ns == 0 || now.wrapping_sub(me.last_seen_ns) >= cfg.quiet_ns {
            crate::prog::notify(EVENT_COLLISION, cfg.node_id);
        }
        me.last_seen_ns = now;
        me.session = session;
        me.accepted += 1;
    }
}

/// A 36-byte payload: a wire version 1 message when it says so. One from a
/// configured peer with a valid v1 MAC is recorded (`old_version_ns`; a v1
/// leave clears it), so that the controller can name the old peer and stay
/// out of its way; it never counts as life.
#[inline(always)]
fn old_version(
    ctx: &XdpContext,
    udp: &Udp,
    cfg: &Config,
    peers: &Peers,
    key: &Array<Key, 1>,
) -> Refusal {
    if udp.ip_room < V1_UDP_LEN {
        return Refusal::NotOurs;
    }
    let Some(payload) = ptr_at_bounded::<[u8; wire::WIRE_LEN]>(ctx, udp.payload_off) else {
        return Refusal::NotOurs;
    };
    let buf: [u8; wire::WIRE_LEN] = unsafe { *payload };
    let Ok(hb) = wire::Heartbeat::parse_unauthenticated(&buf) else {
        return Refusal::NotOurs;
    };
    if hb.cluster_id != cfg.cluster_id {
        return Refusal::WrongCluster;
    }
    let Some(peer) = peers.get_ptr_mut(hb.node_id) else {
        return Refusal::UnknownNode;
    };
    let Some(key) = key.get(0) else {
        return Refusal::BadMac;
    };
    if !wire::mac_ok(&buf, key) {
        return Refusal::BadMac;
    }
    // An old hb on another machine with our id: a collision all the same.
    if hb.node_id == cfg.node_id {
        record_collision(peers, cfg, 0);
        return Refusal::IdCollision;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a hash map value, written by this program only.
    let p = unsafe { &mut *peer };
    let was = p.old_version_ns;
    p.old_version_ns = if hb.msg_type == MsgType::Leave {
        0
    } else {
        now
    };
    if (was == 0) != (p.old_version_ns == 0) || now.wrapping_sub(was) >= cfg.quiet_ns {
        crate::prog::notify(EVENT_PEER, hb.node_id);
    }
    Refusal::OldVersion
}

#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, off: usize) -> Result<T, Refusal> {
    let p: *const T = ptr_at_bounded(ctx, off).ok_or(Refusal::BadLength)?;
    Ok(unsafe { *p })
}
