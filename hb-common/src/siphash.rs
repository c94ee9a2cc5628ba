//! SipHash-2-4 (Aumasson and Bernstein, 2012), the 64-bit output variant.
//!
//! Written for the BPF verifier as much as for the host: no tables, no loops whose
//! bound is unknown after inlining (callers pass fixed-size messages), and no
//! indexing that can fail.

/// Four 64-bit lanes of SipHash state.
struct Lanes {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
}

impl Lanes {
    #[inline(always)]
    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13);
        self.v1 ^= self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16);
        self.v3 ^= self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21);
        self.v3 ^= self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17);
        self.v1 ^= self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    #[inline(always)]
    fn compress(&mut self, m: u64) {
        self.v3 ^= m;
        self.round();
        self.round();
        self.v0 ^= m;
    }
}

impl Lanes {
    #[inline(always)]
    fn new(k0: u64, k1: u64) -> Self {
        Lanes {
            v0: k0 ^ 0x736f_6d65_7073_6575,
            v1: k1 ^ 0x646f_7261_6e64_6f6d,
            v2: k0 ^ 0x6c79_6765_6e65_7261,
            v3: k1 ^ 0x7465_6462_7974_6573,
        }
    }

    #[inline(always)]
    fn finish(mut self, last: u64) -> u64 {
        self.compress(last);
        self.v2 ^= 0xff;
        self.round();
        self.round();
        self.round();
        self.round();
        self.v0 ^ self.v1 ^ self.v2 ^ self.v3
    }
}

/// SipHash-2-4 of the first `N` eight-byte words of `w`, each holding its
/// eight message bytes in memory order (what an 8-byte load of them gives):
/// the same as [`siphash24`] of those `8 * N` bytes. The XDP program keeps a
/// message as aligned words, so each block is one load.
#[inline(always)]
pub fn siphash24_words<const N: usize, const M: usize>(k0: u64, k1: u64, w: &[u64; M]) -> u64 {
    let mut s = Lanes::new(k0, k1);
    let mut i = 0;
    while i < N && i < M {
        s.compress(u64::from_le(w[i]));
        i += 1;
    }
    s.finish(((8 * N) as u64) << 56)
}

/// SipHash-2-4 of `msg` under the key `(k0, k1)`, where `k0` and `k1` are the
/// little-endian readings of key bytes 0..8 and 8..16, as in the paper.
#[inline(always)]
pub fn siphash24(k0: u64, k1: u64, msg: &[u8]) -> u64 {
    let mut s = Lanes::new(k0, k1);
    let mut words = msg.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        s.compress(u64::from_le_bytes(b));
    }
    // Last block: the remaining bytes, then the message length mod 256 in the top byte.
    let mut last = (msg.len() as u64) << 56;
    for (i, byte) in words.remainder().iter().enumerate() {
        last |= (*byte as u64) << (8 * i);
    }
    s.finish(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::hash::Hasher;

    /// The 64 SipHash-2-4 vectors of the paper's appendix (and the reference
    /// implementation's `vectors.h`): key 00..0f, message 00..(n-1) for n = 0..63,
    /// each output read as a little-endian u64.
    const PAPER_VECTORS: [u64; 64] = [
        0x726fdb47dd0e0e31,
        0x74f839c593dc67fd,
        0x0d6c8009d9a94f5a,
        0x85676696d7fb7e2d,
        0xcf2794e0277187b7,
        0x18765564cd99a68d,
        0xcbc9466e58fee3ce,
        0xab0200f58b01d137,
        0x93f5f5799a932462,
        0x9e0082df0ba9e4b0,
        0x7a5dbbc594ddb9f3,
        0xf4b32f46226bada7,
        0x751e8fbc860ee5fb,
        0x14ea5627c0843d90,
        0xf723ca908e7af2ee,
        0xa129ca6149be45e5,
        0x3f2acc7f57c29bdb,
        0x699ae9f52cbe4794,
        0x4bc1b3f0968dd39c,
        0xbb6dc91da77961bd,
        0xbed65cf21aa2ee98,
        0xd0f2cbb02e3b67c7,
        0x93536795e3a33e88,
        0xa80c038ccd5ccec8,
        0xb8ad50c6f649af94,
        0xbce192de8a85b8ea,
        0x17d835b85bbb15f3,
        0x2f2e6163076bcfad,
        0xde4daaaca71dc9a5,
        0xa6a2506687956571,
        0xad87a3535c49ef28,
        0x32d892fad841c342,
        0x7127512f72f27cce,
        0xa7f32346f95978e3,
        0x12e0b01abb051238,
        0x15e034d40fa197ae,
        0x314dffbe0815a3b4,
        0x027990f029623981,
        0xcadcd4e59ef40c4d,
        0x9abfd8766a33735c,
        0x0e3ea96b5304a7d0,
        0xad0c42d6fc585992,
        0x187306c89bc215a9,
        0xd4a60abcf3792b95,
        0xf935451de4f21df2,
        0xa9538f0419755787,
        0xdb9acddff56ca510,
        0xd06c98cd5c0975eb,
        0xe612a3cb9ecba951,
        0xc766e62cfcadaf96,
        0xee64435a9752fe72,
        0xa192d576b245165a,
        0x0a8787bf8ecb74b2,
        0x81b3e73d20b49b6f,
        0x7fa8220ba3b2ecea,
        0x245731c13ca42499,
        0xb78dbfaf3a8d83bd,
        0xea1ad565322a1a0b,
        0x60e61c23a3795013,
        0x6606d7e446282b93,
        0x6ca4ecb15c5f91e1,
        0x9f626da15c9625f3,
        0xe51b38608ef25f57,
        0x958a324ceb064572,
    ];

    fn paper_key() -> (u64, u64) {
        let k: [u8; 16] = core::array::from_fn(|i| i as u8);
        (
            u64::from_le_bytes(k[..8].try_into().unwrap()),
            u64::from_le_bytes(k[8..].try_into().unwrap()),
        )
    }

    #[test]
    fn matches_the_paper_vectors() {
        let (k0, k1) = paper_key();
        let msg: [u8; 64] = core::array::from_fn(|i| i as u8);
        for (n, want) in PAPER_VECTORS.iter().enumerate() {
            assert_eq!(siphash24(k0, k1, &msg[..n]), *want, "message length {n}");
        }
    }

    #[test]
    fn matches_the_paper_worked_example() {
        // Appendix A: the 15-byte message 00..0e gives a129ca6149be45e5.
        let (k0, k1) = paper_key();
        let msg: [u8; 15] = core::array::from_fn(|i| i as u8);
        assert_eq!(siphash24(k0, k1, &msg), 0xa129_ca61_49be_45e5);
    }

    proptest::proptest! {
        #[test]
        fn matches_the_siphasher_crate(k0: u64, k1: u64, msg in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut h = siphasher::sip::SipHasher24::new_with_keys(k0, k1);
            h.write(&msg);
            proptest::prop_assert_eq!(siphash24(k0, k1, &msg), h.finish());
        }
    }
}
