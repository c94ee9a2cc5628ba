//! What both wire versions share (magic, message types, node states, the
//! big-endian readers), and version 1: a fixed 36-byte UDP payload
//! authenticated by a SipHash-2-4 MAC over the 28 bytes before it. hb speaks
//! version 2 (`wire2.rs`); a version 1 message is still authenticated, so that
//! a node can name a peer that runs an old hb (docs/PROTOCOL.md, "Version 1").

use crate::{maps::Key, siphash::siphash24};

/// "HB": first two bytes of every heartbeat.
pub const MAGIC: u16 = 0x4842;
/// Wire format version.
pub const VERSION: u8 = 1;
/// Size of a heartbeat payload on the wire.
pub const WIRE_LEN: usize = 36;
/// Offset of the MAC: it covers every byte before it.
pub const MAC_OFFSET: usize = 28;
/// UDP port of Linux-HA Heartbeat, kept as hb's default.
pub const DEFAULT_PORT: u16 = 694;
/// Flag bit: the sender holds the virtual IP.
pub const FLAG_HOLDS_VIP: u8 = 1 << 0;
/// Flag bit: the sender reaches one of its ping targets (or has none configured).
pub const FLAG_REACHES_PING: u8 = 1 << 1;

/// What a message says.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgType {
    /// "I am alive."
    Heartbeat = 1,
    /// "I am stopping on purpose": peers need not wait for dead-after.
    Leave = 2,
    /// "This node's controller died": sent by its kernel (XDP) in answer to a
    /// heartbeat (docs/PROTOCOL.md, "Death notice").
    Gone = 3,
}

impl MsgType {
    #[inline(always)]
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Heartbeat),
            2 => Some(Self::Leave),
            3 => Some(Self::Gone),
            _ => None,
        }
    }
}

/// The sender's failover state, as advertised to its peers.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeState {
    Init = 0,
    Backup = 1,
    Master = 2,
    Fault = 3,
}

impl NodeState {
    #[inline(always)]
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Init),
            1 => Some(Self::Backup),
            2 => Some(Self::Master),
            3 => Some(Self::Fault),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Init => "INIT",
            Self::Backup => "BACKUP",
            Self::Master => "MASTER",
            Self::Fault => "FAULT",
        }
    }
}

/// Why a heartbeat-port payload was refused, in the order the checks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    BadLength,
    BadMagic,
    BadVersion,
    BadType,
    WrongCluster,
    UnknownNode,
    BadMac,
    Replayed,
}

/// A heartbeat's fields, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub msg_type: MsgType,
    pub flags: u8,
    pub priority: u8,
    /// Raw [`NodeState`] value; kept raw so that a newer sender's states still parse.
    pub state: u8,
    pub cluster_id: u32,
    pub node_id: u32,
    /// Grows on every start of the sender's controller (persisted by it).
    pub epoch: u32,
    /// Strictly increasing within an epoch.
    pub seq: u64,
}

/// Big-endian readers over a fixed-size message (both wire versions): a
/// fixed-size array keeps the XDP program's bounds provable.
#[inline(always)]
pub(crate) fn be16<const N: usize>(b: &[u8; N], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub(crate) fn be32<const N: usize>(b: &[u8; N], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
pub(crate) fn be64<const N: usize>(b: &[u8; N], at: usize) -> u64 {
    (be32(b, at) as u64) << 32 | be32(b, at + 4) as u64
}

/// The MAC of a frame's first [`MAC_OFFSET`] bytes.
#[inline(always)]
pub fn mac(buf: &[u8; WIRE_LEN], key: &Key) -> u64 {
    let mut body = [0u8; MAC_OFFSET];
    body.copy_from_slice(&buf[..MAC_OFFSET]);
    siphash24(key.k0, key.k1, &body)
}

/// True when the frame's MAC is the one `key` gives.
#[inline(always)]
pub fn mac_ok(buf: &[u8; WIRE_LEN], key: &Key) -> bool {
    be64(buf, MAC_OFFSET) == mac(buf, key)
}

/// A message's first bytes: magic, version, type; the rest zero.
#[inline(always)]
fn header(msg_type: MsgType) -> [u8; WIRE_LEN] {
    let mut b = [0u8; WIRE_LEN];
    b[0..2].copy_from_slice(&MAGIC.to_be_bytes());
    b[2] = VERSION;
    b[3] = msg_type as u8;
    b
}

/// `b` with its MAC under `key` written after the body.
#[inline(always)]
fn sealed(mut b: [u8; WIRE_LEN], key: &Key) -> [u8; WIRE_LEN] {
    let m = mac(&b, key);
    b[MAC_OFFSET..].copy_from_slice(&m.to_be_bytes());
    b
}

impl Heartbeat {
    /// Encodes the heartbeat and appends its MAC under `key`.
    pub fn encode(&self, key: &Key) -> [u8; WIRE_LEN] {
        let mut b = header(self.msg_type);
        b[4] = self.flags;
        b[5] = self.priority;
        b[6] = self.state;
        // b[7] is reserved: sent as zero, covered by the MAC, ignored by v1 readers.
        b[8..12].copy_from_slice(&self.cluster_id.to_be_bytes());
        b[12..16].copy_from_slice(&self.node_id.to_be_bytes());
        b[16..20].copy_from_slice(&self.epoch.to_be_bytes());
        b[20..28].copy_from_slice(&self.seq.to_be_bytes());
        sealed(b, key)
    }

    /// Reads the fields after checking magic, version and message type. The MAC is
    /// NOT checked here: the XDP program checks cluster and peer first (cheap) and
    /// the MAC after (costly); [`decode`] runs every check in that same order.
    #[inline(always)]
    pub fn parse_unauthenticated(b: &[u8; WIRE_LEN]) -> Result<Self, Refusal> {
        if be16(b, 0) != MAGIC {
            return Err(Refusal::BadMagic);
        }
        if b[2] != VERSION {
            return Err(Refusal::BadVersion);
        }
        let Some(msg_type) = MsgType::from_u8(b[3]) else {
            return Err(Refusal::BadType);
        };
        Ok(Self {
            msg_type,
            flags: b[4],
            priority: b[5],
            state: b[6],
            cluster_id: be32(b, 8),
            node_id: be32(b, 12),
            epoch: be32(b, 16),
            seq: be64(b, 20),
        })
    }

    pub fn holds_vip(&self) -> bool {
        self.flags & FLAG_HOLDS_VIP != 0
    }
}

/// Decodes and authenticates a UDP payload for `cluster_id`: every stateless check
/// the XDP program makes (the peer allow-list and anti-replay need its maps).
pub fn decode(payload: &[u8], key: &Key, cluster_id: u32) -> Result<Heartbeat, Refusal> {
    let Ok(buf) = <&[u8; WIRE_LEN]>::try_from(payload) else {
        return Err(Refusal::BadLength);
    };
    let hb = Heartbeat::parse_unauthenticated(buf)?;
    if hb.cluster_id != cluster_id {
        return Err(Refusal::WrongCluster);
    }
    if !mac_ok(buf, key) {
        return Err(Refusal::BadMac);
    }
    Ok(hb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: Key = Key {
        k0: 0x0706050403020100,
        k1: 0x0f0e0d0c0b0a0908,
    };

    fn sample() -> Heartbeat {
        Heartbeat {
            msg_type: MsgType::Heartbeat,
            flags: FLAG_HOLDS_VIP,
            priority: 100,
            state: NodeState::Master as u8,
            cluster_id: 7,
            node_id: 2,
            epoch: 3,
            seq: 0x0102_0304_0506_0708,
        }
    }

    #[test]
    fn round_trip() {
        let hb = sample();
        assert_eq!(decode(&hb.encode(&KEY), &KEY, 7), Ok(hb));
        let leave = Heartbeat {
            msg_type: MsgType::Leave,
            flags: 0,
            ..hb
        };
        assert_eq!(decode(&leave.encode(&KEY), &KEY, 7), Ok(leave));
    }

    #[test]
    fn layout_matches_the_protocol_document() {
        let b = sample().encode(&KEY);
        assert_eq!(&b[..8], &[0x48, 0x42, 1, 1, FLAG_HOLDS_VIP, 100, 2, 0]);
        assert_eq!(&b[8..12], &[0, 0, 0, 7]);
        assert_eq!(&b[12..16], &[0, 0, 0, 2]);
        assert_eq!(&b[16..20], &[0, 0, 0, 3]);
        assert_eq!(&b[20..28], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let m = siphash24(KEY.k0, KEY.k1, &b[..28]);
        assert_eq!(&b[28..], &m.to_be_bytes());
    }

    #[test]
    fn each_check_refuses_with_its_reason() {
        let good = sample().encode(&KEY);
        assert_eq!(decode(&good[..35], &KEY, 7), Err(Refusal::BadLength));
        assert_eq!(
            decode(&[good.as_slice(), &[0]].concat(), &KEY, 7),
            Err(Refusal::BadLength)
        );
        let mut b = good;
        b[0] = b'X';
        assert_eq!(decode(&b, &KEY, 7), Err(Refusal::BadMagic));
        let mut b = good;
        b[2] = 2;
        assert_eq!(decode(&b, &KEY, 7), Err(Refusal::BadVersion));
        let mut b = good;
        b[3] = 9;
        assert_eq!(decode(&b, &KEY, 7), Err(Refusal::BadType));
        assert_eq!(decode(&good, &KEY, 8), Err(Refusal::WrongCluster));
        let other = Key {
            k0: KEY.k0 ^ 1,
            k1: KEY.k1,
        };
        assert_eq!(decode(&good, &other, 7), Err(Refusal::BadMac));
        // Every single-bit flip in the MAC-covered body or the MAC itself is refused.
        for bit in 0..WIRE_LEN * 8 {
            let mut b = good;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&b, &KEY, 7).is_err(),
                "bit {bit} flipped was accepted"
            );
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics_and_needs_the_mac(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(hb) = decode(&bytes, &KEY, 7) {
                // Only a frame that re-encodes to the same bytes (a valid MAC) passes.
                let again = hb.encode(&KEY);
                prop_assert_eq!(again.as_slice(), bytes.as_slice());
            }
        }

        #[test]
        fn well_framed_payloads_with_a_random_mac_are_refused(body in proptest::collection::vec(any::<u8>(), 28), tag: u64) {
            let mut b = [0u8; WIRE_LEN];
            b[..28].copy_from_slice(&body);
            b[0..2].copy_from_slice(&MAGIC.to_be_bytes());
            b[2] = VERSION;
            b[3] = 1;
            b[8..12].copy_from_slice(&7u32.to_be_bytes());
            b[28..].copy_from_slice(&tag.to_be_bytes());
            let genuine = mac(&b, &KEY);
            prop_assert_eq!(decode(&b, &KEY, 7).is_ok(), tag == genuine);
        }


        #[test]
        fn round_trips_any_fields(flags: u8, priority: u8, state: u8, cluster_id: u32, node_id: u32, epoch: u32, seq: u64, leave: bool) {
            let hb = Heartbeat { msg_type: if leave { MsgType::Leave } else { MsgType::Heartbeat }, flags, priority, state, cluster_id, node_id, epoch, seq };
            prop_assert_eq!(decode(&hb.encode(&KEY), &KEY, cluster_id), Ok(hb));
        }
    }
}
