//! Ethernet (optionally one 802.1Q/802.1ad tag), then one of: IPv4 (with options)
//! -> UDP; IPv6 (a few extension headers) -> UDP or a neighbour solicitation; ARP.

use aya_ebpf::programs::XdpContext;
use core::mem::size_of;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
    vlan::VlanHdr,
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
/// ICMPv6 neighbour solicitation: type 135, the target address at byte 8.
const ND_NEIGHBOR_SOLICIT: u8 = 135;
// IPv6 extension headers walked over; any other (fragment 44, AH, ESP, ...)
// ends the walk with "not a heartbeat".
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_DSTOPTS: u8 = 60;
/// Extension headers skipped before UDP at most; real heartbeats carry none,
/// the bound keeps the loop small for the verifier.
const MAX_IPV6_EXT: usize = 3;

/// What a frame is, as far as hb cares.
pub enum Frame {
    /// An IPv4 packet to `dst` (checked against the VIPs by the self-fence), with
    /// its UDP datagram when it carries one.
    Ipv4 { dst: [u8; 4], udp: Datagram },
    /// An IPv6 packet (the self-fence checks `dst_off`'s address, and the
    /// target of a neighbour solicitation at `nd_target_off`), with its UDP
    /// datagram when it carries one: a heartbeat when its port is ours.
    Ipv6 {
        dst_off: usize,
        nd_target_off: Option<usize>,
        udp: Datagram,
    },
    /// An ARP packet whose header starts at this offset (not yet bounds-checked).
    Arp(usize),
    /// Anything else, including truncated headers and IP fragments.
    Other,
}

/// Where a UDP datagram sits in the frame, and the fields the checks need.
pub struct Udp {
    /// Offset of the UDP payload from the frame start.
    pub payload_off: usize,
    pub dst_port: u16,
    /// UDP length field (header included).
    pub udp_len: u16,
    /// Bytes the IP length fields leave for UDP (header included).
    pub ip_room: u16,
    /// Where the source address is; read only for an accepted heartbeat, so
    /// other traffic does not pay for copying it.
    pub src: Src,
}

/// A packet's UDP datagram, if it carries one. Not an `Option<Udp>`: its
/// `None` leaves the fields' stack slots unwritten, LLVM reads them before it
/// tests the tag, and Debian 12's 6.1.0-50 (6.1.176) verifier refuses that
/// read ("invalid read from stack R10 off=-120 size=8") even for root, on
/// every IPv4 packet that is not UDP. Here the fields are zeroes instead.
pub struct Datagram {
    pub found: bool,
    pub udp: Udp,
}

impl Datagram {
    const NONE: Datagram = Datagram {
        found: false,
        udp: Udp {
            payload_off: 0,
            dst_port: 0,
            udp_len: 0,
            ip_room: 0,
            src: Src::V4(0),
        },
    };

    #[inline(always)]
    fn of(udp: Option<Udp>) -> Datagram {
        match udp {
            Some(udp) => Datagram { found: true, udp },
            None => Datagram::NONE,
        }
    }
}

/// Offset of the IP source address in the frame, by IP version.
#[derive(Clone, Copy)]
pub enum Src {
    V4(usize),
    V6(usize),
}

/// Offset of the Ethernet source address.
pub const ETH_SRC_OFF: usize = 6;

/// A pointer to a `T` at `off` in the frame, or None when the frame is too short.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    if start + off + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *const T)
}

/// Past any header hb reads: Ethernet, a VLAN tag, IPv6 with [`MAX_IPV6_EXT`]
/// extension headers of at most 2 KiB each, UDP.
pub const MAX_OFF: usize = 0x2000;

/// [`ptr_at`] for an offset that travelled through a struct (`Udp`, `Src`).
/// LLVM may rebuild such an offset from 16-bit pieces joined with OR, and the
/// 6.1 verifier loses its bounds there ("math between pkt pointer and register
/// with unbounded min value"); newer verifiers keep them. A comparison right
/// before the pointer arithmetic restores them; the volatile read keeps LLVM
/// from proving that comparison redundant and deleting it.
#[inline(always)]
pub fn ptr_at_bounded<T>(ctx: &XdpContext, off: usize) -> Option<*const T> {
    // SAFETY: reads a local.
    let off = unsafe { core::ptr::read_volatile(&off) };
    if off > MAX_OFF {
        return None;
    }
    ptr_at(ctx, off)
}

/// Classifies the frame by its (inner, if tagged) EtherType.
#[inline(always)]
pub fn frame(ctx: &XdpContext) -> Frame {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Frame::Other;
    };
    let mut off = EthHdr::LEN;
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let Some(vlan) = ptr_at::<VlanHdr>(ctx, off) else {
            return Frame::Other;
        };
        ether_type = u16::from_be(unsafe { (*vlan).ether_type });
        off += VlanHdr::LEN;
    }
    match ether_type {
        ETH_P_IP => ipv4(ctx, off),
        ETH_P_IPV6 => ipv6(ctx, off),
        ETH_P_ARP => Frame::Arp(off),
        _ => Frame::Other,
    }
}

/// The IPv4 packet at `off`: its destination, and its UDP datagram unless it is
/// another protocol, a non-first fragment or truncated.
#[inline(always)]
fn ipv4(ctx: &XdpContext, off: usize) -> Frame {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, off) else {
        return Frame::Other;
    };
    let (vihl, proto, frags, tot_len, dst) = unsafe {
        (
            (*ip).vihl,
            (*ip).proto,
            (*ip).frags,
            (*ip).tot_len,
            (*ip).dst_addr,
        )
    };
    // Masked so the verifier sees a bounded offset: 20..=60 bytes.
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
        return Frame::Other;
    }
    // Fragment offset != 0: no UDP header here.
    let udp = if proto != IPPROTO_UDP || u16::from_be_bytes(frags) & 0x1fff != 0 {
        None
    } else {
        let room = u16::from_be_bytes(tot_len).saturating_sub(ihl as u16);
        udp_at(ctx, off + ihl, room, Src::V4(off + 12))
    };
    Frame::Ipv4 {
        dst,
        udp: Datagram::of(udp),
    }
}

/// The IPv6 packet at `ip_off`: where its destination is, the target of a
/// neighbour solicitation, and its UDP datagram, after at most
/// [`MAX_IPV6_EXT`] hop-by-hop, routing or destination-options headers. No
/// UDP for anything else, fragments included: a heartbeat is never fragmented.
#[inline(always)]
fn ipv6(ctx: &XdpContext, ip_off: usize) -> Frame {
    let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, ip_off) else {
        return Frame::Other;
    };
    let (vcf0, payload_len, mut next) =
        unsafe { ((*ip).vcf[0], (*ip).payload_len, (*ip).next_hdr) };
    if vcf0 >> 4 != 6 {
        return Frame::Other;
    }
    let dst_off = ip_off + 24;
    let payload_start = ip_off + Ipv6Hdr::LEN;
    let mut off = payload_start;
    for _ in 0..MAX_IPV6_EXT {
        if next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS {
            break;
        }
        // These three share one layout: next header, then length in 8-byte
        // units not counting the first 8. At most 2 KiB each: bounded offsets.
        let Some(ext) = ptr_at::<[u8; 2]>(ctx, off) else {
            return Frame::Other;
        };
        let (n, len) = unsafe { ((*ext)[0], (*ext)[1]) };
        next = n;
        off += (len as usize + 1) * 8;
    }
    let (mut udp, mut nd_target_off) = (None, None);
    if next == IPPROTO_UDP {
        // The payload length counts the extension headers too.
        let ext_len = (off - payload_start) as u16;
        let room = u16::from_be_bytes(payload_len).saturating_sub(ext_len);
        udp = udp_at(ctx, off, room, Src::V6(ip_off + 8));
    } else if next == IPPROTO_ICMPV6 {
        if let Some(icmp) = ptr_at::<[u8; 24]>(ctx, off) {
            if unsafe { (*icmp)[0] } == ND_NEIGHBOR_SOLICIT {
                nd_target_off = Some(off + 8);
            }
        }
    }
    Frame::Ipv6 {
        dst_off,
        nd_target_off,
        udp: Datagram::of(udp),
    }
}

#[inline(always)]
fn udp_at(ctx: &XdpContext, off: usize, ip_room: u16, src: Src) -> Option<Udp> {
    let udp: *const UdpHdr = ptr_at(ctx, off)?;
    let (dst, len) = unsafe { ((*udp).dst, (*udp).len) };
    Some(Udp {
        payload_off: off + UdpHdr::LEN,
        dst_port: u16::from_be_bytes(dst),
        udp_len: u16::from_be_bytes(len),
        ip_room,
        src,
    })
}
