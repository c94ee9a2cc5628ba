//! The Internet checksum (RFC 1071), the one implementation the controller
//! side uses: IPv4 headers and UDP in `frame.rs`, ICMPv6 in `garp.rs`, ICMP
//! echo in `pinger.rs`.

/// A running one's-complement sum of 16-bit big-endian words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sum(u32);

impl Sum {
    pub const fn new() -> Self {
        Self(0)
    }

    /// Adds `bytes` as 16-bit words; an odd last byte is padded with zero, so
    /// every part but the last must have an even length.
    pub fn add_bytes(self, bytes: &[u8]) -> Self {
        // A u64 cannot overflow for any slice that fits in memory.
        let mut sum = u64::from(self.0);
        for pair in bytes.chunks(2) {
            sum += u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        Self(sum as u32)
    }

    /// The checksum field's value: the folded sum, inverted. Over a message
    /// that carries a correct checksum this is 0.
    pub fn finish(self) -> u16 {
        !(self.0 as u16)
    }
}

/// The checksum of `bytes` alone.
pub fn checksum(bytes: &[u8]) -> u16 {
    Sum::new().add_bytes(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: these words sum to 0xddf2.
        let b = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&b), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A captured header whose checksum field holds 0xb861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0, "a correct header verifies");
        h[10..12].fill(0);
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn odd_length_pads_and_parts_chain() {
        assert_eq!(
            checksum(&[0x12, 0x34, 0x56]),
            checksum(&[0x12, 0x34, 0x56, 0])
        );
        let whole = [1u8, 2, 3, 4, 5, 6, 7];
        assert_eq!(
            Sum::new()
                .add_bytes(&whole[..4])
                .add_bytes(&whole[4..])
                .finish(),
            checksum(&whole)
        );
        // Carries fold back in: 0xffff + 0x0001 is 0x0001 in one's complement.
        assert_eq!(checksum(&[0xff, 0xff, 0x00, 0x01]), !0x0001);
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(checksum(&vec![0xff; 200_000]), 0, "long input, no overflow");
    }
}
