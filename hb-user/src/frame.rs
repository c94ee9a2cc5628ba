//! Heartbeat frames for the packet-socket transmit path: Ethernet + IPv4 + UDP
//! around an `hb-common` payload, with valid IPv4 and UDP checksums. Sent this
//! way, heartbeats do not cross netfilter's OUTPUT hook, so a firewall rule there
//! cannot silence the node (XDP already makes INPUT rules harmless).

use crate::checksum::{checksum, Sum};
use hb_common::wire2::LEN as WIRE_LEN;
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{IpProto, Ipv4Hdr},
    udp::UdpHdr,
};
use std::net::Ipv4Addr;

/// Where a frame goes and comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ends {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

fn bytes_of<T>(v: &T) -> &[u8] {
    // SAFETY: the network-types headers are #[repr(C)] byte-array structs.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// Bytes of a heartbeat frame: Ethernet, IPv4, UDP, payload.
pub const FRAME_LEN: usize = EthHdr::LEN + Ipv4Hdr::LEN + UdpHdr::LEN + WIRE_LEN;

/// A complete frame carrying `payload`; `id` is the IPv4 identification. Built
/// on the stack: the sender thread allocates nothing per beat.
pub fn udp_frame(e: &Ends, id: u16, payload: &[u8; WIRE_LEN]) -> [u8; FRAME_LEN] {
    let udp_len = (UdpHdr::LEN + payload.len()) as u16;
    let eth = EthHdr::new(e.dst_mac, e.src_mac, EtherType::Ipv4);

    // SAFETY: all-zero is a valid value of these plain byte structs.
    let mut ip: Ipv4Hdr = unsafe { std::mem::zeroed() };
    ip.set_vihl(4, Ipv4Hdr::LEN as u8);
    // DSCP CS6 (network control), as routing protocols' hellos use.
    ip.set_tos(48, 0);
    ip.set_tot_len(Ipv4Hdr::LEN as u16 + udp_len);
    ip.set_id(id);
    ip.set_frags(0b010, 0); // don't fragment
    ip.ttl = 64;
    ip.set_proto(IpProto::Udp);
    ip.set_src_addr(e.src_ip);
    ip.set_dst_addr(e.dst_ip);
    ip.set_checksum(checksum(bytes_of(&ip)));

    let mut udp: UdpHdr = unsafe { std::mem::zeroed() };
    udp.set_src_port(e.src_port);
    udp.set_dst_port(e.dst_port);
    udp.set_len(udp_len);
    // Pseudo-header: source, destination, zero + protocol, UDP length.
    let mut pseudo = [0u8; 12];
    pseudo[..4].copy_from_slice(&e.src_ip.octets());
    pseudo[4..8].copy_from_slice(&e.dst_ip.octets());
    pseudo[9] = 17;
    pseudo[10..].copy_from_slice(&udp_len.to_be_bytes());
    let sum = Sum::new()
        .add_bytes(&pseudo)
        .add_bytes(bytes_of(&udp))
        .add_bytes(payload);
    // 0 means "no checksum" in IPv4 UDP: a computed 0 is sent as 0xffff.
    let check = match sum.finish() {
        0 => 0xffff,
        c => c,
    };
    udp.set_checksum(check);

    let mut f = [0u8; FRAME_LEN];
    let (l2, rest) = f.split_at_mut(EthHdr::LEN);
    let (l3, rest) = rest.split_at_mut(Ipv4Hdr::LEN);
    let (l4, data) = rest.split_at_mut(UdpHdr::LEN);
    l2.copy_from_slice(bytes_of(&eth));
    l3.copy_from_slice(bytes_of(&ip));
    l4.copy_from_slice(bytes_of(&udp));
    data.copy_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends() -> Ends {
        Ends {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
            src_port: 40000,
            dst_port: 694,
        }
    }

    #[test]
    fn headers_and_checksums_verify() {
        let payload = [0xa5u8; WIRE_LEN];
        let f = udp_frame(&ends(), 7, &payload);
        assert_eq!(f.len(), 14 + 20 + 8 + WIRE_LEN);
        assert_eq!(&f[..6], &[2, 0, 0, 0, 0, 2]);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        let ip = &f[14..34];
        assert_eq!(ip[0], 0x45);
        assert_eq!(
            u16::from_be_bytes([ip[2], ip[3]]),
            (20 + 8 + WIRE_LEN) as u16
        );
        assert_eq!(ip[9], 17);
        assert_eq!(checksum(ip), 0, "IPv4 header checksum verifies");
        let udp = &f[34..];
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 694);
        assert_eq!(u16::from_be_bytes([udp[4], udp[5]]), (8 + WIRE_LEN) as u16);
        let mut pseudo = [0u8; 12];
        pseudo[..4].copy_from_slice(&ip[12..16]);
        pseudo[4..8].copy_from_slice(&ip[16..20]);
        pseudo[9] = 17;
        pseudo[10..].copy_from_slice(&udp[4..6]);
        assert_eq!(
            Sum::new().add_bytes(&pseudo).add_bytes(udp).finish(),
            0,
            "UDP checksum verifies"
        );
        assert_eq!(&f[42..], &payload);
    }
}
