//! The checks a heartbeat-port payload goes through, in the order of
//! docs/PROTOCOL.md, and the peer record a valid one updates. A death notice
//! shares checks 1-7 and then takes its own path (`gone.rs`).

use aya_ebpf::{
    btf_maps::{Array, HashMap},
    helpers::bpf_ktime_get_ns,
    programs::XdpContext,
};
use hb_common::{
    maps::{seen_slot, Config, Key, PeerState, Seen, Sent, MAP_MMAPABLE, MAX_PEERS, SEEN_SLOTS},
    wire::{self, Heartbeat, MsgType, Refusal, WIRE_LEN},
};

use crate::parse::{ptr_at_bounded, Src, Udp, ETH_SRC_OFF};

const UDP_LEN: u16 = (8 + WIRE_LEN) as u16;

/// What an authenticated message was.
pub enum Received {
    /// A heartbeat or leave, recorded in the peer's entry; true when the
    /// controller must hear of it (`EVENT_PEER`).
    Heartbeat(Heartbeat, bool),
    /// A fresh death notice from this node id, recorded in its entry.
    Gone(u32),
}

#[inline(always)]
pub fn receive(
    ctx: &XdpContext,
    udp: &Udp,
    cfg: &Config,
    peers: &HashMap<u32, PeerState, { MAX_PEERS as usize }>,
    key: &Array<Key, 1>,
    sent: &Array<Sent, 1, MAP_MMAPABLE>,
    seen: &Array<Seen, { SEEN_SLOTS as usize }, MAP_MMAPABLE>,
) -> Result<Received, Refusal> {
    // 1. Lengths: the UDP length field, the IPv4 total length or IPv6 payload
    //    length, and the frame itself.
    if udp.udp_len != UDP_LEN || udp.ip_room < UDP_LEN {
        return Err(Refusal::BadLength);
    }
    let payload: *const [u8; WIRE_LEN] =
        ptr_at_bounded(ctx, udp.payload_off).ok_or(Refusal::BadLength)?;
    // One copy to the stack: the checks below then index a fixed-size array.
    let buf: [u8; WIRE_LEN] = unsafe { *payload };
    // 2-4. Magic, version, message type.
    let hb = Heartbeat::parse_unauthenticated(&buf)?;
    // 5. Cluster.
    if hb.cluster_id != cfg.cluster_id {
        return Err(Refusal::WrongCluster);
    }
    // 6. Allow-list: only configured peers have an entry.
    let peer = peers.get_ptr_mut(hb.node_id).ok_or(Refusal::UnknownNode)?;
    // 7. MAC, the costly check, only for packets that got this far.
    let key = key.get(0).ok_or(Refusal::BadMac)?;
    if !wire::mac_ok(&buf, key) {
        return Err(Refusal::BadMac);
    }
    // SAFETY: a hash map value; only this program writes it after the controller
    // created it. Two CPUs racing on one peer can at worst both accept the same
    // fresh heartbeat, never an old one.
    let p = unsafe { &mut *peer };
    // 8'. A death notice: fresh when it echoes one of our recent heartbeats.
    if hb.msg_type == MsgType::Gone {
        crate::gone::record(p, &buf, sent)?;
        return Ok(Received::Gone(hb.node_id));
    }
    // 8. Anti-replay: strictly after the last accepted (epoch, seq).
    if !hb.is_after(p.epoch, p.seq) {
        return Err(Refusal::Replayed);
    }
    // Addresses are read only now; they lie before the payload checked above,
    // so these reads cannot fail.
    let (src_ipv4, src_ipv6) = match udp.src {
        Src::V4(off) => (read::<[u8; 4]>(ctx, off)?, [0; 16]),
        Src::V6(off) => ([0; 4], read::<[u8; 16]>(ctx, off)?),
    };
    let src_mac = read::<[u8; 6]>(ctx, ETH_SRC_OFF)?;
    let now = unsafe { bpf_ktime_get_ns() };
    // News for the controller: first heard, heard after a quiet gap, or saying
    // something new. A steady peer's heartbeats are not news.
    let news = p.last_seen_ns == 0
        || now.wrapping_sub(p.last_seen_ns) >= cfg.quiet_ns
        || p.epoch != hb.epoch
        || p.flags != hb.flags
        || p.priority != hb.priority
        || p.state != hb.state
        || p.msg_type != hb.msg_type as u8;
    p.last_seen_ns = now;
    if let Some(s) = seen.get_ptr_mut(seen_slot(hb.node_id)) {
        // SAFETY: an array value; a single aligned u64 store.
        unsafe { (*s).last_seen_ns = now };
    }
    p.epoch = hb.epoch;
    p.seq = hb.seq;
    p.accepted += 1;
    p.ifindex = ctx.ingress_ifindex() as u32;
    p.src_ipv4 = src_ipv4;
    p.src_ipv6 = src_ipv6;
    p.src_mac = src_mac;
    p.flags = hb.flags;
    p.priority = hb.priority;
    p.state = hb.state;
    p.msg_type = hb.msg_type as u8;
    Ok(Received::Heartbeat(hb, news))
}

#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, off: usize) -> Result<T, Refusal> {
    let p: *const T = ptr_at_bounded(ctx, off).ok_or(Refusal::BadLength)?;
    Ok(unsafe { *p })
}
