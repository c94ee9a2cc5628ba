//! The death notice (docs/PROTOCOL.md, "Death notice"), sending side: once
//! `exit.rs` has marked the controller dead, a peer's heartbeat that counted
//! as life is rewritten in place into the notice that answers it and sent back
//! out of the interface it came in on (XDP_TX). One answer per such heartbeat:
//! the rate is the peer's own, and replays, refused before this, get none. The
//! receiving side is in `heartbeat.rs`.

use aya_ebpf::{btf_maps::Array, programs::XdpContext};
use hb_common::{
    maps::{Key, Owner, Sent, MAP_MMAPABLE},
    wire::MsgType,
    wire2::{self, Head, BODY, LEN},
};
use network_types::udp::UdpHdr;

use crate::parse::{ptr_at_bounded, Src, Udp};

/// TTL (IPv4) or hop limit (IPv6) of a notice: it may be routed back.
const HOPS: u8 = 64;
/// UDP length of a notice, the same as the heartbeat's.
const UDP_LEN: u16 = (UdpHdr::LEN + LEN) as u16;
const IPPROTO_UDP: u8 = 17;

/// The IP header fields a reply rewrites.
enum Ip {
    /// Source and destination addresses; TTL, protocol and header checksum.
    V4(*mut [u8; 8], *mut [u8; 4]),
    /// Source and destination addresses; hop limit.
    V6(*mut [u8; 32], *mut u8),
}

#[inline(always)]
fn mut_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    ptr_at_bounded::<T>(ctx, off).map(|p| p.cast_mut())
}

/// Rewrites the heartbeat `hb` at `udp` into the notice that answers it
/// (session and seq: the dead controller's last; your session and seq: the
/// heartbeat's), addressed back to its sender: Ethernet and IP addresses swapped, VLAN tag
/// and IP options kept, from and to the heartbeat port (`port`: the sender's
/// XDP looks at that port only; the heartbeat came from an ephemeral one). False,
/// with the frame untouched, when a header cannot be reached (it always can:
/// the payload after it was).
#[inline(always)]
pub fn answer(
    ctx: &XdpContext,
    udp: &Udp,
    port: u16,
    hb: &Head,
    owner: &Owner,
    key: &Array<Key, 1>,
    sent: &Array<Sent, 1, MAP_MMAPABLE>,
) -> bool {
    let (Some(key), Some(last)) = (key.get(0), sent.get(0)) else {
        return false;
    };
    // Every pointer first, so that a miss changes nothing.
    let Some(eth) = mut_at::<[u8; 12]>(ctx, 0) else {
        return false;
    };
    let Some(uh) = mut_at::<[u8; 8]>(ctx, udp.payload_off.wrapping_sub(UdpHdr::LEN)) else {
        return false;
    };
    let Some(head) = mut_at::<[u8; BODY]>(ctx, udp.payload_off) else {
        return false;
    };
    let Some(body) = mut_at::<[u8; LEN - BODY]>(ctx, udp.payload_off + BODY) else {
        return false;
    };
    let ip = match udp.src {
        // The source address is at 12 in the IPv4 header, TTL at 8.
        Src::V4(off) => match (
            mut_at::<[u8; 8]>(ctx, off),
            mut_at::<[u8; 4]>(ctx, off.wrapping_sub(4)),
        ) {
            (Some(a), Some(t)) => Ip::V4(a, t),
            _ => return false,
        },
        // The source address is at 8 in the IPv6 header, the hop limit at 7.
        Src::V6(off) => match (
            mut_at::<[u8; 32]>(ctx, off),
            mut_at::<u8>(ctx, off.wrapping_sub(1)),
        ) {
            (Some(a), Some(h)) => Ip::V6(a, h),
            _ => return false,
        },
    };
    let notice = wire2::notice_head(
        &Head {
            msg_type: MsgType::Gone,
            flags: 0,
            state: 0,
            body_gen: 0,
            cluster_id: hb.cluster_id,
            from: owner.node_id,
            to: hb.from,
            session: owner.session,
            seq: last.seq,
            your_session: hb.session,
            your_seq: hb.seq,
        },
        key,
    );
    // SAFETY: each pointer was bounds-checked against the frame above.
    unsafe {
        *eth = swap::<12, 6>(*eth);
        // The heartbeat was to `port` (else it would not be here).
        let [p0, p1] = port.to_be_bytes();
        let ports = [p0, p1, p0, p1];
        let mut csum = [0u8; 2];
        match ip {
            Ip::V4(addrs, ttl) => {
                *addrs = swap::<8, 4>(*addrs);
                let t = *ttl;
                let hc = csum_replace(
                    u16::from_be_bytes([t[2], t[3]]),
                    u16::from_be_bytes([t[0], t[1]]),
                    u16::from_be_bytes([HOPS, t[1]]),
                );
                let [hi, lo] = hc.to_be_bytes();
                *ttl = [HOPS, t[1], hi, lo];
                // UDP checksum 0: none, which IPv4 allows.
            }
            Ip::V6(addrs, hops) => {
                let a = swap::<32, 16>(*addrs);
                *addrs = a;
                *hops = HOPS;
                // Mandatory on IPv6: over the pseudo-header, the UDP header
                // (checksum field zero) and the notice (its body is zero).
                let mut sum = words(&a, 0);
                sum += u32::from(UDP_LEN) + u32::from(IPPROTO_UDP);
                sum += u32::from(u16::from_be_bytes([ports[0], ports[1]]));
                sum += u32::from(u16::from_be_bytes([ports[2], ports[3]]));
                sum += u32::from(UDP_LEN);
                for w in notice {
                    let v = u64::from_be(w);
                    sum += (v >> 48) as u32 + (v >> 32 & 0xffff) as u32;
                    sum += (v >> 16 & 0xffff) as u32 + (v & 0xffff) as u32;
                }
                let c = !fold(sum);
                // A computed zero is sent as all ones (zero means "none").
                csum = if c == 0 { 0xffff } else { c }.to_be_bytes();
            }
        }
        let len = UDP_LEN.to_be_bytes();
        *uh = [
            ports[0], ports[1], ports[2], ports[3], len[0], len[1], csum[0], csum[1],
        ];
        core::ptr::copy_nonoverlapping(notice.as_ptr().cast::<u8>(), head.cast::<u8>(), BODY);
        *body = [0; LEN - BODY];
    }
    true
}

/// The two halves of `b` (of `H` bytes each) exchanged.
#[inline(always)]
fn swap<const N: usize, const H: usize>(b: [u8; N]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < H {
        out[i] = b[i + H];
        out[i + H] = b[i];
        i += 1;
    }
    out
}

/// `acc` plus the big-endian 16-bit words of `b` (an even number of bytes).
#[inline(always)]
fn words<const N: usize>(b: &[u8; N], mut acc: u32) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        acc += u32::from(u16::from_be_bytes([b[i], b[i + 1]]));
        i += 2;
    }
    acc
}

/// A 32-bit sum of 16-bit words folded to 16 bits, one's complement.
#[inline(always)]
fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The Internet checksum `hc` after one 16-bit word changed from `old` to
/// `new` (RFC 1624, eqn. 3).
#[inline(always)]
fn csum_replace(hc: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!hc) + u32::from(!old) + u32::from(new))
}
