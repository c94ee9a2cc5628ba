//! Builds Ethernet frames for the XDP tests: IPv4/UDP with optional VLAN tag,
//! IPv4 options and fragment fields; IPv6 with extension headers, carrying UDP
//! or ICMPv6; ARP; TCP.

use hb_common::{
    wire::Heartbeat as V1Heartbeat,
    wire2::{self, Body, Group, Head, FLAG_HOLDS, FLAG_REACHES_PING, GROUP_HOLDS, LEN},
    Key, MsgType, NodeState,
};

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const SRC_IP: [u8; 4] = [10, 9, 0, 1];
pub const DST_IP: [u8; 4] = [10, 9, 0, 2];
/// fd00:9::1 and fd00:9::2.
pub const SRC_IP6: [u8; 16] = [0xfd, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const DST_IP6: [u8; 16] = [0xfd, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// IPv6 next-header values the tests use.
pub const IPV6_HOPOPTS: u8 = 0;
pub const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_DSTOPTS: u8 = 60;
pub const IPPROTO_ICMPV6: u8 = 58;

/// A test key: bytes 0..16.
pub fn key() -> Key {
    Key::from_bytes(core::array::from_fn(|i| i as u8))
}

/// The cluster id the frames use.
pub const CLUSTER: u32 = 7;

/// A heartbeat head (wire v2) from `from` to `to` in cluster 7: MASTER,
/// holding, reaching its ping targets, in `session` at `seq`, echoing
/// `your` (the receiver's session and the last seq heard from it).
pub fn head(from: u32, to: u32, session: u64, seq: u64, your: (u64, u64)) -> Head {
    Head {
        msg_type: MsgType::Heartbeat,
        flags: FLAG_HOLDS | FLAG_REACHES_PING,
        state: NodeState::Master as u8,
        body_gen: 1,
        cluster_id: CLUSTER,
        from,
        to,
        session,
        seq,
        your_session: your.0,
        your_seq: your.1,
    }
}

/// A body: priority 100 in group 0, holding it, seeing `holder` hold it.
pub fn body(holder: u32) -> Body {
    let mut b = Body::default();
    b.groups[0] = Group {
        priority: 100,
        state: NodeState::Master as u8,
        flags: GROUP_HOLDS,
    };
    b.holders[0] = holder;
    b
}

/// `h` with [`body`] of its sender, both MACs under [`key`].
pub fn message(h: &Head) -> [u8; LEN] {
    wire2::encode(h, &body(h.from), &key())
}

/// A wire version 1 heartbeat from `node_id` (an old hb), under [`key`].
pub fn v1_heartbeat(
    node_id: u32,
    epoch: u32,
    seq: u64,
    leave: bool,
) -> [u8; hb_common::wire::WIRE_LEN] {
    V1Heartbeat {
        msg_type: if leave {
            MsgType::Leave
        } else {
            MsgType::Heartbeat
        },
        flags: hb_common::wire::FLAG_HOLDS_VIP,
        priority: 100,
        state: NodeState::Master as u8,
        cluster_id: CLUSTER,
        node_id,
        epoch,
        seq,
    }
    .encode(&key())
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

/// The Internet checksum (RFC 1071), by etherparse: an implementation apart
/// from hb-user's (`hb_user::checksum`), so each checks the other.
pub fn checksum(bytes: &[u8]) -> u16 {
    // etherparse sums native-endian words; `to_be` gives the field's value.
    etherparse::checksum::Sum16BitWords::new()
        .add_slice(bytes)
        .ones_complement()
        .to_be()
}

/// An ARP request "who has DST_IP, tell SRC_IP".
pub fn arp_request() -> Vec<u8> {
    arp(1, SRC_MAC, SRC_IP, DST_IP)
}

/// An Ethernet/IPv4 ARP packet, broadcast from `sender_mac`: `op` 1 request,
/// 2 reply; sender `sender_mac`/`sender_ip`, target MAC zero, target `target_ip`.
pub fn arp(op: u16, sender_mac: [u8; 6], sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&sender_ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip);
    f
}

/// Inserts an 802.1Q tag with VLAN id `vid` after the MAC addresses of `frame`.
pub fn tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&0x8100u16.to_be_bytes());
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// An IPv6 extension header: (type, body after the next-header and length bytes).
pub type ExtHeader = (u8, Vec<u8>);

/// What goes into an IPv6 frame from SRC_IP6 to DST_IP6.
#[derive(Clone, Debug)]
pub struct Ipv6Frame {
    pub vlan: Option<u16>,
    /// Extension headers in order, as (type, body after the next-header and
    /// length bytes); the builder pads each body to a multiple of 8 bytes
    /// (a fragment header's body is 6 bytes: offset and flags, identification).
    pub ext: Vec<ExtHeader>,
    /// Upper layer: 17 makes a UDP header to `dst_port`; anything else (e.g.
    /// 58 ICMPv6) carries `payload` as is.
    pub proto: u8,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

impl Ipv6Frame {
    /// A UDP datagram to `port` carrying `payload`.
    pub fn udp(port: u16, payload: &[u8]) -> Self {
        Self {
            vlan: None,
            ext: Vec::new(),
            proto: 17,
            dst_port: port,
            payload: payload.to_vec(),
        }
    }

    /// A neighbour solicitation for DST_IP6 (ICMPv6 type 135) with a source
    /// link-layer address option.
    pub fn neighbour_solicitation() -> Self {
        let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&DST_IP6);
        m.extend_from_slice(&[1, 1]);
        m.extend_from_slice(&SRC_MAC);
        Self {
            vlan: None,
            ext: Vec::new(),
            proto: IPPROTO_ICMPV6,
            dst_port: 0,
            payload: m,
        }
    }

    /// A fragment header body: `offset` in 8-byte units, the more-fragments bit.
    pub fn fragment(offset: u16, more: bool) -> ExtHeader {
        let field = (offset << 3) | u16::from(more);
        let mut b = field.to_be_bytes().to_vec();
        b.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        (IPV6_FRAGMENT, b)
    }

    pub fn build(&self) -> Vec<u8> {
        let mut upper = Vec::new();
        if self.proto == 17 {
            upper.extend_from_slice(&40000u16.to_be_bytes());
            upper.extend_from_slice(&self.dst_port.to_be_bytes());
            upper.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
            upper.extend_from_slice(&[0, 0]);
        }
        upper.extend_from_slice(&self.payload);
        // UDP and ICMPv6 checksums over the pseudo-header (mandatory on IPv6).
        let sum_at = match self.proto {
            17 => Some(6),
            IPPROTO_ICMPV6 => Some(2),
            _ => None,
        };
        if let Some(at) = sum_at.filter(|&at| upper.len() >= at + 2) {
            let mut sum =
                checksum(&[pseudo_header(self.proto, upper.len()), upper.clone()].concat());
            if sum == 0 && self.proto == 17 {
                sum = 0xffff; // UDP sends a computed zero as all ones
            }
            upper[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
        // Extension headers, each naming the one after it.
        let mut exts = Vec::new();
        let types: Vec<u8> = self.ext.iter().map(|(t, _)| *t).collect();
        for (i, (_, body)) in self.ext.iter().enumerate() {
            let next = types.get(i + 1).copied().unwrap_or(self.proto);
            let mut h = vec![next, 0];
            h.extend_from_slice(body);
            while !h.len().is_multiple_of(8) {
                h.push(0); // Pad1 options: zero bytes
            }
            h[1] = (h.len() / 8 - 1) as u8;
            exts.extend_from_slice(&h);
        }
        let first = types.first().copied().unwrap_or(self.proto);
        let mut f = Vec::new();
        f.extend_from_slice(&DST_MAC);
        f.extend_from_slice(&SRC_MAC);
        if let Some(vid) = self.vlan {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&0x86ddu16.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((exts.len() + upper.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[first, 64]);
        f.extend_from_slice(&SRC_IP6);
        f.extend_from_slice(&DST_IP6);
        f.extend_from_slice(&exts);
        f.extend_from_slice(&upper);
        f
    }
}

/// The IPv6 pseudo-header of an upper-layer checksum (RFC 8200 8.1) between
/// SRC_IP6 and DST_IP6, either way (the sum does not depend on their order).
pub fn pseudo_header(proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&SRC_IP6);
    p.extend_from_slice(&DST_IP6);
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, proto]);
    p
}

/// An IPv6 UDP datagram to `port`, no extension headers.
pub fn ipv6_udp(port: u16, payload: &[u8]) -> Vec<u8> {
    Ipv6Frame::udp(port, payload).build()
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
        assert_eq!(
            hb_user::checksum::checksum(&f[14..14 + ihl]),
            0,
            "hb's agrees"
        );
    }

    #[test]
    fn ipv6_extension_headers_chain_and_checksum_verifies() {
        let f = Ipv6Frame {
            ext: vec![
                (IPV6_HOPOPTS, vec![1, 4, 0, 0, 0, 0]),
                (IPV6_DSTOPTS, vec![0; 12]),
            ],
            ..Ipv6Frame::udp(694, &[7; 36])
        }
        .build();
        assert_eq!(f[14 + 6], IPV6_HOPOPTS, "first next header");
        assert_eq!(
            u16::from_be_bytes([f[18], f[19]]),
            8 + 16 + 8 + 36,
            "payload length"
        );
        let hbh = 14 + 40;
        assert_eq!((f[hbh], f[hbh + 1]), (IPV6_DSTOPTS, 0));
        let dst = hbh + 8;
        assert_eq!((f[dst], f[dst + 1]), (17, 1));
        let udp = &f[dst + 16..];
        assert_eq!(udp.len(), 8 + 36);
        let whole = [pseudo_header(17, udp.len()), udp.to_vec()].concat();
        assert_eq!(checksum(&whole), 0);
        assert_eq!(hb_user::checksum::checksum(&whole), 0, "hb's agrees");
    }

    #[test]
    fn checksum_of_odd_lengths_and_carries() {
        // RFC 1071 section 3: these words sum to 0xddf2.
        assert_eq!(checksum(&[0, 1, 0xf2, 3, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
        for bytes in [
            &[0x12u8, 0x34, 0x56][..],
            &[0xff; 7],
            &[0xff, 0xff, 0, 1],
            &[],
        ] {
            assert_eq!(
                checksum(bytes),
                hb_user::checksum::checksum(bytes),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn tag_is_inserted_after_the_addresses() {
        let f = tagged(&arp_request(), 42);
        assert_eq!(f[12..18], [0x81, 0x00, 0, 42, 0x08, 0x06]);
        assert_eq!(f.len(), arp_request().len() + 4);
    }
}
