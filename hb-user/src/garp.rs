//! Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6) after
//! a takeover: tell the segment's hosts and switches that the VIP is now at this
//! node's MAC, through an AF_PACKET socket.

use crate::{checksum::Sum, sender::packet_socket};
use anyhow::{bail, Context, Result};
use nix::sys::socket::MsgFlags;
use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, OwnedFd},
    time::Duration,
};

const ETH_P_ARP: u16 = libc::ETH_P_ARP as u16;
const ETH_P_IP: u16 = libc::ETH_P_IP as u16;
const ETH_P_IPV6: u16 = libc::ETH_P_IPV6 as u16;
const ARPHRD_ETHER: u16 = libc::ARPHRD_ETHER;
const BROADCAST: [u8; 6] = [0xff; 6];
/// ff02::1, all nodes on the link, and its Ethernet group (RFC 2464: 33:33 and
/// the address's last 32 bits).
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
const IPPROTO_ICMPV6: u8 = 58;
const ND_NEIGHBOR_ADVERT: u8 = 136;
/// NA flags word: Override set (replace the cached MAC), Router and Solicited clear.
const NA_FLAG_OVERRIDE: u32 = 0x2000_0000;
const ND_OPT_TARGET_LL_ADDR: u8 = 2;
/// ICMPv6 length of an NA with one Target Link-Layer Address option.
const NA_LEN: usize = 4 + 4 + 16 + 8;
/// Size of an unsolicited NA frame: Ethernet, IPv6, the NA.
pub const NA_FRAME_LEN: usize = 14 + 40 + NA_LEN;

/// [`announce`] (gratuitous ARP) or [`announce_v6`] (unsolicited neighbour
/// advertisements), by family.
pub async fn announce_ip(
    ifindex: u32,
    mac: [u8; 6],
    ip: std::net::IpAddr,
    count: u32,
    spacing: Duration,
) -> Result<()> {
    match ip {
        std::net::IpAddr::V4(a) => announce(ifindex, mac, a, count, spacing).await,
        std::net::IpAddr::V6(a) => announce_v6(ifindex, mac, a, count, spacing).await,
    }
}

/// Sends `count` rounds, `spacing` apart (first round immediately), each round
/// one ARP request and one ARP reply announcing `ip` is-at `mac`, broadcast,
/// from interface `ifindex`. Both kinds, because some hosts only learn from
/// one; Linux takes the request even for an entry it updated less than
/// `locktime` (1 s) ago, the reply only after that.
pub async fn announce(
    ifindex: u32,
    mac: [u8; 6],
    ip: Ipv4Addr,
    count: u32,
    spacing: Duration,
) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    let sock = packet_socket(ifindex)
        .with_context(|| format!("opening an ARP socket on interface #{ifindex}"))?;
    let frames = [&frame(mac, ip, false)[..], &frame(mac, ip, true)[..]];
    burst(&sock, &frames, count, spacing)
        .await
        .with_context(|| format!("sending gratuitous ARP for {ip} on interface #{ifindex}"))
}

/// The IPv6 counterpart of [`announce`]: `count` unsolicited neighbour
/// advertisements, `spacing` apart (first immediately), telling all nodes on
/// the link (ff02::1) that `ip` is at `mac`. The Override flag makes Linux
/// replace a cached MAC at once (RFC 4861 7.2.5; no locktime as with ARP);
/// hosts without an entry for `ip` ignore it, and resolve it when they need it.
pub async fn announce_v6(
    ifindex: u32,
    mac: [u8; 6],
    ip: Ipv6Addr,
    count: u32,
    spacing: Duration,
) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    let sock = packet_socket(ifindex)
        .with_context(|| format!("opening an IPv6 packet socket on interface #{ifindex}"))?;
    let na = frame_v6(mac, ip);
    burst(&sock, &[&na[..]], count, spacing)
        .await
        .with_context(|| {
            format!("sending neighbour advertisements for {ip} on interface #{ifindex}")
        })
}

/// Sends every frame of `frames`, `count` rounds `spacing` apart.
async fn burst(sock: &OwnedFd, frames: &[&[u8]], count: u32, spacing: Duration) -> Result<()> {
    for round in 0..count {
        if round > 0 {
            tokio::time::sleep(spacing).await;
        }
        for f in frames {
            send(sock, f)?;
        }
    }
    Ok(())
}

/// The frame bytes: Ethernet broadcast + ARP (op 1 request or 2 reply),
/// sender = target = `ip`, sender MAC = `mac`, target MAC 00:..:00 for the
/// request and ff:..:ff for the reply (as keepalived does).
pub fn frame(mac: [u8; 6], ip: Ipv4Addr, reply: bool) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&ARPHRD_ETHER.to_be_bytes());
    f[16..18].copy_from_slice(&ETH_P_IP.to_be_bytes());
    f[18] = 6; // hardware address length
    f[19] = 4; // protocol address length
    let op: u16 = if reply { 2 } else { 1 };
    f[20..22].copy_from_slice(&op.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    f[32..38].copy_from_slice(if reply { &BROADCAST } else { &[0; 6] });
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// The frame bytes of an unsolicited neighbour advertisement: Ethernet to
/// 33:33:00:00:00:01 from `mac`; IPv6 from `ip` to ff02::1, hop limit 255 (or
/// receivers discard it); ICMPv6 type 136 with only Override set, target `ip`,
/// and a Target Link-Layer Address option carrying `mac`.
pub fn frame_v6(mac: [u8; 6], ip: Ipv6Addr) -> [u8; NA_FRAME_LEN] {
    let mut f = [0u8; NA_FRAME_LEN];
    f[0..6].copy_from_slice(&ALL_NODES_MAC);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    let ip6 = &mut f[14..54];
    ip6[0] = 0x60; // version 6, traffic class and flow label 0
    ip6[4..6].copy_from_slice(&(NA_LEN as u16).to_be_bytes());
    ip6[6] = IPPROTO_ICMPV6;
    ip6[7] = 255;
    ip6[8..24].copy_from_slice(&ip.octets());
    ip6[24..40].copy_from_slice(&ALL_NODES.octets());
    let na = &mut f[54..];
    na[0] = ND_NEIGHBOR_ADVERT;
    // na[1] code 0, na[2..4] checksum below
    na[4..8].copy_from_slice(&NA_FLAG_OVERRIDE.to_be_bytes());
    na[8..24].copy_from_slice(&ip.octets());
    na[24] = ND_OPT_TARGET_LL_ADDR;
    na[25] = 1; // option length in units of 8 bytes
    na[26..32].copy_from_slice(&mac);
    let sum = icmpv6_checksum(ip, ALL_NODES, na);
    na[2..4].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The ICMPv6 checksum (RFC 4443 2.3): the Internet checksum over the IPv6
/// pseudo-header (source, destination, length, next header) and the message,
/// whose checksum field must be zero.
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    Sum::new()
        .add_bytes(&src.octets())
        .add_bytes(&dst.octets())
        .add_bytes(&(msg.len() as u32).to_be_bytes())
        .add_bytes(&[0, 0, 0, IPPROTO_ICMPV6])
        .add_bytes(msg)
        .finish()
}

fn send(sock: &OwnedFd, frame: &[u8]) -> Result<()> {
    let n = nix::sys::socket::send(sock.as_raw_fd(), frame, MsgFlags::empty())
        .map_err(io::Error::from)?;
    if n != frame.len() {
        bail!("short send: {n} of {} bytes", frame.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{frame, frame_v6, NA_FRAME_LEN};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
    const IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x202, 0, 0, 0, 0, 0, 0x100);

    /// RFC 1071, written independently of the code under test: a message with
    /// a correct checksum sums to 0xffff.
    fn ones_complement_sum(bytes: &[u8]) -> u16 {
        let mut sum = 0u64;
        for (i, b) in bytes.iter().enumerate() {
            sum += u64::from(*b) << if i % 2 == 0 { 8 } else { 0 };
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn neighbour_advertisement_layout() {
        let f = frame_v6(MAC, IP6);
        assert_eq!(f.len(), NA_FRAME_LEN);
        assert_eq!(f.len(), 86);
        assert_eq!(
            f[0..6],
            [0x33, 0x33, 0, 0, 0, 1],
            "Ethernet: all-nodes group"
        );
        assert_eq!(f[6..12], MAC, "Ethernet source");
        assert_eq!(f[12..14], [0x86, 0xdd], "EtherType IPv6");
        assert_eq!(f[14..18], [0x60, 0, 0, 0], "version 6");
        assert_eq!(f[18..20], [0, 32], "payload length");
        assert_eq!((f[20], f[21]), (58, 255), "ICMPv6, hop limit 255");
        assert_eq!(f[22..38], IP6.octets(), "source: the VIP");
        assert_eq!(f[38..54], "ff02::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!((f[54], f[55]), (136, 0), "neighbour advertisement, code 0");
        assert_eq!(
            f[58..62],
            [0x20, 0, 0, 0],
            "Override only: not Router, not Solicited"
        );
        assert_eq!(f[62..78], IP6.octets(), "target");
        assert_eq!(
            f[78..80],
            [2, 1],
            "Target Link-Layer Address option, 8 bytes"
        );
        assert_eq!(f[80..86], MAC);
    }

    #[test]
    fn neighbour_advertisement_checksum_verifies() {
        for (mac, ip) in [
            (MAC, IP6),
            (
                [0xff; 6],
                Ipv6Addr::new(
                    0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xfffe,
                ),
            ),
            ([0; 6], Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        ] {
            let f = frame_v6(mac, ip);
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&f[22..54]); // source and destination
            pseudo.extend_from_slice(&32u32.to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 58]);
            pseudo.extend_from_slice(&f[54..]);
            assert_eq!(ones_complement_sum(&pseudo), 0xffff, "{ip}");
            // Any flipped bit in the message breaks it.
            let mut bad = pseudo.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert_ne!(ones_complement_sum(&bad), 0xffff);
        }
    }

    #[test]
    fn neighbour_advertisement_known_checksum() {
        // Computed outside this code (a few lines of Python over the same bytes).
        let f = frame_v6(MAC, IP6);
        assert_eq!(u16::from_be_bytes([f[56], f[57]]), 0xee00);
    }

    #[test]
    fn request_layout() {
        let f = frame(MAC, IP, false);
        assert_eq!(f[0..6], [0xff; 6], "Ethernet destination: broadcast");
        assert_eq!(f[6..12], MAC, "Ethernet source");
        assert_eq!(f[12..14], [0x08, 0x06], "EtherType ARP");
        assert_eq!(f[14..16], [0x00, 0x01], "htype Ethernet");
        assert_eq!(f[16..18], [0x08, 0x00], "ptype IPv4");
        assert_eq!(f[18..20], [6, 4], "hlen, plen");
        assert_eq!(f[20..22], [0x00, 0x01], "op request");
        assert_eq!(f[22..28], MAC, "sender MAC");
        assert_eq!(f[28..32], [10, 0, 0, 100], "sender IP");
        assert_eq!(f[32..38], [0; 6], "target MAC");
        assert_eq!(f[38..42], [10, 0, 0, 100], "target IP");
    }

    #[test]
    fn reply_differs_only_in_op_and_target_mac() {
        let req = frame(MAC, IP, false);
        let rep = frame(MAC, IP, true);
        assert_eq!(rep[20..22], [0x00, 0x02], "op reply");
        assert_eq!(rep[32..38], [0xff; 6], "target MAC");
        let differing: Vec<usize> = (0..42).filter(|&i| req[i] != rep[i]).collect();
        assert_eq!(differing, vec![21, 32, 33, 34, 35, 36, 37]);
    }
}
