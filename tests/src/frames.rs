//! Builds Ethernet frames for the XDP tests: IPv4/UDP with optional VLAN tag,
//! IPv4 options and fragment fields, plus ARP, IPv6 and TCP frames.

use hb_common::{Heartbeat, Key, MsgType, NodeState};

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const SRC_IP: [u8; 4] = [10, 9, 0, 1];
pub const DST_IP: [u8; 4] = [10, 9, 0, 2];

/// A test key: bytes 0..16.
pub fn key() -> Key {
    Key::from_bytes(core::array::from_fn(|i| i as u8))
}

/// A heartbeat from `node_id` in cluster 7 with the given epoch and seq.
pub fn heartbeat(node_id: u32, epoch: u32, seq: u64) -> Heartbeat {
    Heartbeat {
        msg_type: MsgType::Heartbeat,
        flags: hb_common::wire::FLAG_HOLDS_VIP,
        priority: 100,
        state: NodeState::Master as u8,
        cluster_id: 7,
        node_id,
        epoch,
        seq,
    }
}

/// What goes into an IPv4 frame.
#[derive(Clone, Debug)]
pub struct Ipv4Frame {
    pub vlan: Option<u16>,
    /// IPv4 options, padded to a multiple of 4 bytes by the builder.
    pub options: Vec<u8>,
    pub proto: u8,
    /// Fragment offset in 8-byte units, and the more-fragments bit.
    pub frag_offset: u16,
    pub more_fragments: bool,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

impl Ipv4Frame {
    /// A UDP datagram to `port` carrying `payload`.
    pub fn udp(port: u16, payload: &[u8]) -> Self {
        Self {
            vlan: None,
            options: Vec::new(),
            proto: 17,
            frag_offset: 0,
            more_fragments: false,
            dst_port: port,
            payload: payload.to_vec(),
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&DST_MAC);
        f.extend_from_slice(&SRC_MAC);
        if let Some(vid) = self.vlan {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut opts = self.options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(0); // end-of-options padding
        }
        let ihl = 20 + opts.len();
        // L4: UDP header + payload, or (for other protocols) a TCP-sized header.
        let mut l4 = Vec::new();
        l4.extend_from_slice(&40000u16.to_be_bytes());
        l4.extend_from_slice(&self.dst_port.to_be_bytes());
        if self.proto == 17 {
            l4.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]); // no UDP checksum (allowed on IPv4)
        } else {
            l4.extend_from_slice(&[0; 16]);
        }
        l4.extend_from_slice(&self.payload);
        let tot = (ihl + l4.len()) as u16;
        let frags = (if self.more_fragments { 0x2000 } else { 0 }) | (self.frag_offset & 0x1fff);
        let mut ip = vec![0x40 | (ihl / 4) as u8, 0];
        ip.extend_from_slice(&tot.to_be_bytes());
        ip.extend_from_slice(&[0x12, 0x34]);
        ip.extend_from_slice(&frags.to_be_bytes());
        ip.extend_from_slice(&[64, self.proto, 0, 0]);
        ip.extend_from_slice(&SRC_IP);
        ip.extend_from_slice(&DST_IP);
        ip.extend_from_slice(&opts);
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }
}

/// The Internet checksum (RFC 1071).
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ARP request "who has DST_IP, tell SRC_IP".
pub fn arp_request() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&SRC_IP);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&DST_IP);
    f
}

/// An IPv6 UDP datagram to `port` (hb v1 heartbeats are IPv4: this must pass).
pub fn ipv6_udp(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    let udp_len = (8 + payload.len()) as u16;
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[17, 64]);
    f.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies() {
        let f = Ipv4Frame {
            options: vec![1, 1, 1, 1, 1, 1, 1, 1],
            ..Ipv4Frame::udp(694, &[0; 36])
        }
        .build();
        let ihl = usize::from(f[14] & 0x0f) * 4;
        assert_eq!(ihl, 28);
        assert_eq!(checksum(&f[14..14 + ihl]), 0);
    }
}
