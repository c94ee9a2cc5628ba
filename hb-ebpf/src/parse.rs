//! Ethernet (optionally one 802.1Q/802.1ad tag) -> IPv4 (with options) -> UDP.

use aya_ebpf::programs::XdpContext;
use core::mem::size_of;
use network_types::{eth::EthHdr, ip::Ipv4Hdr, udp::UdpHdr, vlan::VlanHdr};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;

/// Where a UDP datagram sits in the frame, and the fields the checks need.
pub struct Udp {
    /// Offset of the UDP payload from the frame start.
    pub payload_off: usize,
    pub dst_port: u16,
    /// UDP length field (header included).
    pub udp_len: u16,
    /// Bytes the IPv4 total length leaves for UDP (header included).
    pub ip_room: u16,
    pub src_ipv4: [u8; 4],
    pub src_mac: [u8; 6],
}

/// A pointer to a `T` at `off` in the frame, or None when the frame is too short.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    if start + off + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *const T)
}

/// The UDP datagram in an IPv4 frame, or None for anything else (other ethertypes,
/// other protocols, non-first fragments, truncated headers).
#[inline(always)]
pub fn udp(ctx: &XdpContext) -> Option<Udp> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    let mut off = EthHdr::LEN;
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let vlan: *const VlanHdr = ptr_at(ctx, off)?;
        ether_type = u16::from_be(unsafe { (*vlan).ether_type });
        off += VlanHdr::LEN;
    }
    if ether_type != ETH_P_IP {
        return None;
    }
    let ip: *const Ipv4Hdr = ptr_at(ctx, off)?;
    let (vihl, proto, frags, tot_len, src) = unsafe {
        (
            (*ip).vihl,
            (*ip).proto,
            (*ip).frags,
            (*ip).tot_len,
            (*ip).src_addr,
        )
    };
    // Masked so the verifier sees a bounded offset: 20..=60 bytes.
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN || proto != IPPROTO_UDP {
        return None;
    }
    // Fragment offset != 0: no UDP header here.
    if u16::from_be_bytes(frags) & 0x1fff != 0 {
        return None;
    }
    let tot_len = u16::from_be_bytes(tot_len);
    off += ihl;
    let udp: *const UdpHdr = ptr_at(ctx, off)?;
    let (dst, len) = unsafe { ((*udp).dst, (*udp).len) };
    Some(Udp {
        payload_off: off + UdpHdr::LEN,
        dst_port: u16::from_be_bytes(dst),
        udp_len: u16::from_be_bytes(len),
        ip_room: tot_len.saturating_sub(ihl as u16),
        src_ipv4: src,
        src_mac: unsafe { (*eth).src_addr },
    })
}
