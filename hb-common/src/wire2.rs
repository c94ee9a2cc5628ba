//! Wire format v2 (docs/PROTOCOL.md), the one hb speaks; `wire.rs` keeps
//! what is shared and version 1, recognized to name old peers. Sessions instead of persisted epochs: every controller start
//! draws a random session id, every message is addressed to one peer and echoes
//! that peer's session and the last sequence number heard from it, and a
//! receiver counts a message as life only when it echoes the receiver's current
//! session ([`judge`]). A 64-byte head carries what the XDP program decides
//! on, under its own MAC; the body (VIP groups, the sender's view of the
//! cluster) has a second MAC over the whole message, checked by the controller.

use crate::{
    maps::Key,
    siphash::{siphash24, siphash24_words},
    wire::{be32, be64, MsgType, MAGIC},
};

/// This format's version byte.
pub const VERSION: u8 = 2;
/// Size of every v2 payload on the wire.
pub const LEN: usize = 144;
/// Offset of the head MAC: it covers every byte before it.
pub const HEAD_MAC: usize = 56;
/// Offset of the body.
pub const BODY: usize = 64;
/// Offset of the body MAC: it covers every byte before it, head included.
pub const BODY_MAC: usize = 136;
/// VIP groups a message describes.
pub const GROUPS: usize = 8;
/// Head flag bit: the sender reaches one of its ping targets (or has none).
pub const FLAG_REACHES_PING: u8 = 1 << 0;
/// Head flag bit: the sender holds at least one group. A node whose
/// controller died stops answering for its VIPs on a peer's heartbeat with
/// this bit (the peer took over).
pub const FLAG_HOLDS: u8 = 1 << 1;
/// Group flag bit: the sender holds this group.
pub const GROUP_HOLDS: u8 = 1 << 0;
/// Group flag bit: the sender outranks the holder but waits out its
/// preempt_delay; the holder keeps the group until the bit clears.
pub const GROUP_WAITING: u8 = 1 << 1;

/// A message as the XDP program holds it: eighteen aligned eight-byte words,
/// word `i` holding bytes `8i..8i+8` in memory order, so that each
/// big-endian field and each SipHash block is one load.
pub type Words = [u64; LEN / 8];

/// `b` as [`Words`].
pub fn words(b: &[u8; LEN]) -> Words {
    let mut w = [0u64; LEN / 8];
    for (i, x) in w.iter_mut().enumerate() {
        let mut c = [0u8; 8];
        c.copy_from_slice(&b[8 * i..8 * i + 8]);
        *x = u64::from_ne_bytes(c);
    }
    w
}

/// Why a payload was refused, in the order the checks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not 144 bytes, or not "HB": not an hb v2 message (passed to the stack).
    NotOurs,
    /// The UDP or IP length fields promise more than the frame holds.
    BadLength,
    /// A v1 message (version byte 1).
    OldVersion,
    /// Any other version.
    BadVersion,
    BadType,
    WrongCluster,
    /// Addressed to another node (passed to the stack).
    NotForUs,
    /// From this node's own id, in a session that is not ours: another
    /// machine was given our id.
    IdCollision,
    /// From a node id that is not a configured peer.
    UnknownNode,
    BadMac,
    /// The body does not match its MAC (the head may still be valid).
    BadBodyMac,
    /// The peer's current session, with a sequence number already seen.
    Replayed,
    /// Another session of the peer than the adopted one, not proven fresh.
    StaleSession,
    /// A death notice that does not echo our session and a recent seq of it.
    GoneReplayed,
}

/// The fields the data plane decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub msg_type: MsgType,
    pub flags: u8,
    /// Raw `wire::NodeState` value.
    pub state: u8,
    /// Changes whenever the sender's body does: the receiver's data plane
    /// tells its controller about a new body without comparing bodies.
    pub body_gen: u16,
    pub cluster_id: u32,
    pub from: u32,
    pub to: u32,
    /// The sender's session: random, never 0.
    pub session: u64,
    /// The sender's sequence number in that session: from 1, one per message.
    pub seq: u64,
    /// The receiver's session as the sender last authenticated it; 0: none.
    pub your_session: u64,
    /// The highest sequence number the sender accepted from that session.
    pub your_seq: u64,
}

/// The sender's standing in one VIP group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Group {
    pub priority: u8,
    /// Raw `wire::NodeState` value for this group.
    pub state: u8,
    /// [`GROUP_HOLDS`].
    pub flags: u8,
}

/// What the controller reads: the groups and the sender's view of the cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Body {
    pub groups: [Group; GROUPS],
    /// Per group, the node the sender sees holding it (itself included); 0: none.
    pub holders: [u32; GROUPS],
    /// Bit `id % 64` for each peer the sender hears live.
    pub heard: u64,
}

/// The head MAC a message should carry.
#[inline(always)]
pub fn head_mac<const N: usize>(b: &[u8; N], key: &Key) -> u64 {
    let mut head = [0u8; HEAD_MAC];
    head.copy_from_slice(&b[..HEAD_MAC]);
    siphash24(key.k0, key.k1, &head)
}

/// The body MAC a message should carry.
pub fn body_mac(b: &[u8; LEN], key: &Key) -> u64 {
    siphash24(key.k0, key.k1, &b[..BODY_MAC])
}

#[inline(always)]
pub fn head_mac_ok(b: &[u8; LEN], key: &Key) -> bool {
    head_mac_ok_words(&words(b), key)
}

/// [`head_mac_ok`] of a message held as [`Words`].
#[inline(always)]
pub fn head_mac_ok_words(w: &Words, key: &Key) -> bool {
    u64::from_be(w[HEAD_MAC / 8])
        == siphash24_words::<{ HEAD_MAC / 8 }, { LEN / 8 }>(key.k0, key.k1, w)
}

pub fn body_mac_ok(b: &[u8; LEN], key: &Key) -> bool {
    be64(b, BODY_MAC) == body_mac(b, key)
}

impl Head {
    /// Magic, version and type, then the fields; no MAC is checked here.
    #[inline(always)]
    pub fn parse_unauthenticated(b: &[u8; LEN]) -> Result<Self, Refusal> {
        Self::from_words(&words(b))
    }

    /// [`Head::parse_unauthenticated`] of a message held as [`Words`].
    #[inline(always)]
    pub fn from_words(w: &Words) -> Result<Self, Refusal> {
        let be = |i: usize| u64::from_be(w[i]);
        let w0 = be(0);
        if (w0 >> 48) as u16 != MAGIC {
            return Err(Refusal::NotOurs);
        }
        match (w0 >> 40) as u8 {
            VERSION => {}
            1 => return Err(Refusal::OldVersion),
            _ => return Err(Refusal::BadVersion),
        }
        let Some(msg_type) = MsgType::from_u8((w0 >> 32) as u8) else {
            return Err(Refusal::BadType);
        };
        Ok(Self {
            msg_type,
            flags: (w0 >> 24) as u8,
            state: (w0 >> 16) as u8,
            body_gen: w0 as u16,
            cluster_id: (be(1) >> 32) as u32,
            from: be(1) as u32,
            to: (be(2) >> 32) as u32,
            session: be(3),
            seq: be(4),
            your_session: be(5),
            your_seq: be(6),
        })
    }

    /// Bytes 0..56 of `b` (a message, or a notice's head).
    fn write<const N: usize>(&self, b: &mut [u8; N]) {
        b[0..2].copy_from_slice(&MAGIC.to_be_bytes());
        b[2] = VERSION;
        b[3] = self.msg_type as u8;
        b[4] = self.flags;
        b[5] = self.state;
        b[6..8].copy_from_slice(&self.body_gen.to_be_bytes());
        b[8..12].copy_from_slice(&self.cluster_id.to_be_bytes());
        b[12..16].copy_from_slice(&self.from.to_be_bytes());
        b[16..20].copy_from_slice(&self.to.to_be_bytes());
        b[24..32].copy_from_slice(&self.session.to_be_bytes());
        b[32..40].copy_from_slice(&self.seq.to_be_bytes());
        b[40..48].copy_from_slice(&self.your_session.to_be_bytes());
        b[48..56].copy_from_slice(&self.your_seq.to_be_bytes());
    }
}

impl Body {
    pub fn parse(b: &[u8; LEN]) -> Self {
        let mut body = Body::default();
        for g in 0..GROUPS {
            let at = BODY + 4 * g;
            body.groups[g] = Group {
                priority: b[at],
                state: b[at + 1],
                flags: b[at + 2],
            };
            body.holders[g] = be32(b, BODY + 32 + 4 * g);
        }
        body.heard = be64(b, BODY + 64);
        body
    }

    fn write(&self, b: &mut [u8; LEN]) {
        for g in 0..GROUPS {
            let at = BODY + 4 * g;
            b[at] = self.groups[g].priority;
            b[at + 1] = self.groups[g].state;
            b[at + 2] = self.groups[g].flags;
            b[BODY + 32 + 4 * g..BODY + 36 + 4 * g].copy_from_slice(&self.holders[g].to_be_bytes());
        }
        b[BODY + 64..BODY + 72].copy_from_slice(&self.heard.to_be_bytes());
    }
}

/// One message with both MACs under `key`.
pub fn encode(head: &Head, body: &Body, key: &Key) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    head.write(&mut b);
    body.write(&mut b);
    let h = head_mac(&b, key);
    b[HEAD_MAC..BODY].copy_from_slice(&h.to_be_bytes());
    let m = body_mac(&b, key);
    b[BODY_MAC..].copy_from_slice(&m.to_be_bytes());
    b
}

/// Every stateless check, in the data plane's order, for the node `me` of
/// `cluster_id`; then the body MAC. (The allow-list, an id collision and the
/// session rules need the receiver's state: [`judge`].)
pub fn decode(
    payload: &[u8],
    key: &Key,
    cluster_id: u32,
    me: u32,
) -> Result<(Head, Body), Refusal> {
    let Ok(b) = <&[u8; LEN]>::try_from(payload) else {
        return Err(Refusal::NotOurs);
    };
    let head = Head::parse_unauthenticated(b)?;
    if head.cluster_id != cluster_id {
        return Err(Refusal::WrongCluster);
    }
    if head.to != me {
        return Err(Refusal::NotForUs);
    }
    if !head_mac_ok(b, key) {
        return Err(Refusal::BadMac);
    }
    if !body_mac_ok(b, key) {
        return Err(Refusal::BadBodyMac);
    }
    Ok((head, Body::parse(b)))
}

/// What a receiver keeps of one peer's session, over all links.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Session {
    /// The peer's adopted session; 0: none yet.
    pub adopted: u64,
    /// The highest sequence number accepted in it.
    pub seq: u64,
    /// What our messages to the peer echo (your session, your seq).
    pub echo_session: u64,
    pub echo_seq: u64,
    /// Our seq that the message adopting `adopted` echoed: a later adoption
    /// must echo a higher one, so an earlier session of the peer, captured
    /// within our recent window, is never adopted again.
    pub proof: u64,
}

/// What an authenticated head does to the receiver's [`Session`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A sign of life in the adopted session.
    Life,
    /// A new session of the peer, proven fresh: adopted, and a sign of life.
    Adopt,
    /// The adopted session moves on, but the peer has not heard our current
    /// session yet: no sign of life.
    Advance,
    /// A session of a peer we have adopted none of: echoed, so that the peer
    /// can prove it; no sign of life.
    Echo,
}

impl Verdict {
    pub fn is_life(self) -> bool {
        matches!(self, Self::Life | Self::Adopt)
    }
}

/// The session rules (docs/PROTOCOL.md, "Sessions"): `ours` is the
/// receiver's current session, and our sequence numbers sent within the last
/// two dead-afters are `recent_lo < n <= recent_hi`.
#[inline(always)]
pub fn judge(
    s: &Session,
    h: &Head,
    ours: u64,
    recent_lo: u64,
    recent_hi: u64,
) -> Result<Verdict, Refusal> {
    // Before we have sent anything (session 0) nothing can echo us.
    let echoes_us = ours != 0 && h.your_session == ours;
    if s.adopted != 0 && h.session == s.adopted {
        if h.seq <= s.seq {
            return Err(Refusal::Replayed);
        }
        return Ok(if echoes_us {
            Verdict::Life
        } else {
            Verdict::Advance
        });
    }
    if echoes_us {
        let recent = recent_lo < h.your_seq && h.your_seq <= recent_hi;
        return if recent && h.your_seq > s.proof {
            Ok(Verdict::Adopt)
        } else {
            Err(Refusal::StaleSession)
        };
    }
    if s.adopted == 0 {
        Ok(Verdict::Echo)
    } else {
        Err(Refusal::StaleSession)
    }
}

/// A death notice `h` (its your-session and your-seq echo the heartbeat it
/// answers) is fresh when it answers one of our recent heartbeats.
#[inline(always)]
pub fn notice_fresh(h: &Head, ours: u64, recent_lo: u64, recent_hi: u64) -> bool {
    ours != 0 && h.your_session == ours && recent_lo < h.your_seq && h.your_seq <= recent_hi
}

/// The head of a death notice (type 3) and its MAC: bytes 0..64 of the
/// message, as eight words in memory order (see [`Words`]); the body and the
/// body MAC are zero (the receiver's data plane decides on the head alone).
#[inline(always)]
pub fn notice_head(h: &Head, key: &Key) -> [u64; BODY / 8] {
    let be = |v: u64| v.to_be();
    let mut w = [0u64; BODY / 8];
    w[0] = be((MAGIC as u64) << 48
        | (VERSION as u64) << 40
        | (h.msg_type as u64) << 32
        | (h.flags as u64) << 24
        | (h.state as u64) << 16
        | h.body_gen as u64);
    w[1] = be((h.cluster_id as u64) << 32 | h.from as u64);
    w[2] = be((h.to as u64) << 32);
    w[3] = be(h.session);
    w[4] = be(h.seq);
    w[5] = be(h.your_session);
    w[6] = be(h.your_seq);
    w[7] = be(siphash24_words::<{ HEAD_MAC / 8 }, { BODY / 8 }>(
        key.k0, key.k1, &w,
    ));
    w
}

/// `s` after `v` (from [`judge`] on `h`).
#[inline(always)]
pub fn apply(s: &mut Session, h: &Head, v: Verdict) {
    if v == Verdict::Adopt {
        s.adopted = h.session;
        s.proof = h.your_seq;
    }
    if v != Verdict::Echo {
        s.seq = h.seq;
    }
    s.echo_session = h.session;
    s.echo_seq = h.seq;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::NodeState;
    use proptest::prelude::*;

    /// Key file `000102030405060708090a0b0c0d0e0f`.
    const KEY: Key = Key {
        k0: 0x0706050403020100,
        k1: 0x0f0e0d0c0b0a0908,
    };

    fn head(from: u32, to: u32, session: u64, seq: u64, your: (u64, u64)) -> Head {
        Head {
            msg_type: MsgType::Heartbeat,
            flags: FLAG_REACHES_PING,
            state: NodeState::Backup as u8,
            body_gen: 0,
            cluster_id: 7,
            from,
            to,
            session,
            seq,
            your_session: your.0,
            your_seq: your.1,
        }
    }

    fn body() -> Body {
        let mut b = Body::default();
        b.groups[0] = Group {
            priority: 100,
            state: NodeState::Master as u8,
            flags: GROUP_HOLDS,
        };
        b.holders[0] = 1;
        b.heard = 1 << 2;
        b
    }

    #[test]
    fn round_trip_and_layout() {
        let h = head(1, 2, 0x1111_2222_3333_4444, 5, (0x5555_6666_7777_8888, 9));
        let b = encode(&h, &body(), &KEY);
        assert_eq!(&b[..8], &[0x48, 0x42, 2, 1, 1, 1, 0, 0]);
        assert_eq!(&b[8..24], &[0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0]);
        assert_eq!(&b[24..32], &0x1111_2222_3333_4444u64.to_be_bytes());
        assert_eq!(&b[32..40], &5u64.to_be_bytes());
        assert_eq!(&b[40..48], &0x5555_6666_7777_8888u64.to_be_bytes());
        assert_eq!(&b[48..56], &9u64.to_be_bytes());
        let reference = |bytes: &[u8]| {
            use core::hash::Hasher;
            let mut s = siphasher::sip::SipHasher24::new_with_keys(KEY.k0, KEY.k1);
            s.write(bytes);
            s.finish()
        };
        assert_eq!(&b[56..64], &reference(&b[..56]).to_be_bytes());
        assert_eq!(&b[64..68], &[100, 2, 1, 0]);
        assert_eq!(&b[68..96], &[0; 28]);
        assert_eq!(&b[96..100], &[0, 0, 0, 1]);
        assert_eq!(&b[100..128], &[0; 28]);
        assert_eq!(&b[128..136], &4u64.to_be_bytes());
        assert_eq!(&b[136..], &reference(&b[..136]).to_be_bytes());
        assert_eq!(decode(&b, &KEY, 7, 2), Ok((h, body())));
    }

    #[test]
    fn a_notice_head_is_an_encoded_head() {
        let h = Head {
            msg_type: MsgType::Gone,
            ..head(1, 2, 3, 4, (5, 6))
        };
        let full = encode(&h, &Body::default(), &KEY);
        let w = notice_head(&h, &KEY);
        assert_eq!(w[..], words(&full)[..BODY / 8]);
    }

    #[test]
    fn each_check_refuses_with_its_reason() {
        let good = encode(&head(1, 2, 3, 4, (0, 0)), &body(), &KEY);
        assert_eq!(decode(&good[..LEN - 1], &KEY, 7, 2), Err(Refusal::NotOurs));
        let mut b = good;
        b[0] = b'X';
        assert_eq!(decode(&b, &KEY, 7, 2), Err(Refusal::NotOurs));
        let mut b = good;
        b[2] = 1;
        assert_eq!(decode(&b, &KEY, 7, 2), Err(Refusal::OldVersion));
        b[2] = 3;
        assert_eq!(decode(&b, &KEY, 7, 2), Err(Refusal::BadVersion));
        let mut b = good;
        b[3] = 0;
        assert_eq!(decode(&b, &KEY, 7, 2), Err(Refusal::BadType));
        assert_eq!(decode(&good, &KEY, 8, 2), Err(Refusal::WrongCluster));
        assert_eq!(decode(&good, &KEY, 7, 3), Err(Refusal::NotForUs));
        let other = Key { k0: 1, k1: 2 };
        assert_eq!(decode(&good, &other, 7, 2), Err(Refusal::BadMac));
        let mut b = good;
        b[BODY] ^= 1;
        assert_eq!(decode(&b, &KEY, 7, 2), Err(Refusal::BadBodyMac));
        // Every bit of the message is covered by one MAC or the other.
        for bit in 0..LEN * 8 {
            let mut b = good;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&b, &KEY, 7, 2).is_err(),
                "bit {bit} flipped was accepted"
            );
        }
    }

    /// Runs `h` through the rules for the receiver with session `ours` whose
    /// recent sequence numbers are (lo, hi].
    fn feed(s: &mut Session, h: &Head, ours: u64, lo: u64, hi: u64) -> Result<Verdict, Refusal> {
        let v = judge(s, h, ours, lo, hi)?;
        apply(s, h, v);
        Ok(v)
    }

    #[test]
    fn the_three_way_handshake_then_life() {
        // A (session 0xa) and B (session 0xb) start knowing nothing of each other.
        let (mut at_a, mut at_b) = (Session::default(), Session::default());
        // A's first heartbeat: B echoes it, no life yet.
        assert_eq!(
            feed(&mut at_b, &head(1, 2, 0xa, 1, (0, 0)), 0xb, 0, 1),
            Ok(Verdict::Echo)
        );
        // B's heartbeat echoes A's session and seq: A adopts B (proven fresh).
        let from_b = head(2, 1, 0xb, 1, (at_b.echo_session, at_b.echo_seq));
        assert_eq!(feed(&mut at_a, &from_b, 0xa, 0, 1), Ok(Verdict::Adopt));
        // A's next echoes B: B adopts A. Both sides count life from now on.
        let from_a = head(1, 2, 0xa, 2, (at_a.echo_session, at_a.echo_seq));
        assert_eq!(feed(&mut at_b, &from_a, 0xb, 0, 1), Ok(Verdict::Adopt));
        assert_eq!(
            feed(&mut at_b, &head(1, 2, 0xa, 3, (0xb, 1)), 0xb, 0, 2),
            Ok(Verdict::Life)
        );
        assert_eq!((at_b.adopted, at_b.seq), (0xa, 3));
        // The same message again, or an older one of the session: a replay.
        assert_eq!(
            feed(&mut at_b, &head(1, 2, 0xa, 3, (0xb, 1)), 0xb, 0, 2),
            Err(Refusal::Replayed)
        );
        assert_eq!(
            feed(&mut at_b, &head(1, 2, 0xa, 2, (0xb, 1)), 0xb, 0, 2),
            Err(Refusal::Replayed)
        );
    }

    #[test]
    fn nothing_from_before_the_receivers_session_counts() {
        // B restarted (session 0xb2) and lost everything; A is dead. Captures
        // of A from any earlier session echo B's old session 0xb1.
        let mut at_b = Session::default();
        for seq in 1..50 {
            let old = head(1, 2, 0xa, seq, (0xb1, seq));
            let v = feed(&mut at_b, &old, 0xb2, 100, 200).unwrap();
            assert!(!v.is_life(), "seq {seq}: {v:?}");
        }
        // A capture of another old session of A: still no life.
        assert!(
            !feed(&mut at_b, &head(1, 2, 0xa0, 7, (0xb0, 3)), 0xb2, 100, 200)
                .unwrap()
                .is_life()
        );
    }

    #[test]
    fn an_earlier_session_is_never_adopted_again() {
        // A's old session 0xa1 was adopted with an echo of our seq 95; A
        // restarted as 0xa2 and proved itself with an echo of seq 97.
        let mut s = Session::default();
        assert_eq!(
            feed(&mut s, &head(1, 2, 0xa1, 7, (0xb, 95)), 0xb, 90, 100),
            Ok(Verdict::Adopt)
        );
        assert_eq!(
            feed(&mut s, &head(1, 2, 0xa2, 1, (0xb, 97)), 0xb, 90, 100),
            Ok(Verdict::Adopt)
        );
        // A capture of the old session, echoing an older seq of ours (it was
        // sent before the restart), still within the recent window: refused.
        assert_eq!(
            judge(&s, &head(1, 2, 0xa1, 8, (0xb, 96)), 0xb, 90, 100),
            Err(Refusal::StaleSession)
        );
    }

    #[test]
    fn before_we_sent_anything_a_first_contact_is_echoed() {
        let s = Session::default();
        assert_eq!(
            judge(&s, &head(1, 2, 0xa, 1, (0, 0)), 0, 0, 0),
            Ok(Verdict::Echo)
        );
    }

    #[test]
    fn a_restarted_peer_is_adopted_and_its_old_session_is_not() {
        let mut s = Session {
            adopted: 0xa1,
            seq: 40,
            echo_session: 0xa1,
            echo_seq: 40,
            proof: 10,
        };
        // A restarted (0xa2): its first messages know nothing of us.
        assert_eq!(
            judge(&s, &head(1, 2, 0xa2, 1, (0, 0)), 0xb, 90, 100),
            Err(Refusal::StaleSession)
        );
        // Once it heard us, it echoes our recent seq: adopted.
        assert_eq!(
            feed(&mut s, &head(1, 2, 0xa2, 2, (0xb, 99)), 0xb, 90, 100),
            Ok(Verdict::Adopt)
        );
        // A capture of its previous session from within ours, echoing an old
        // seq of ours: refused, not re-adopted.
        assert_eq!(
            judge(&s, &head(1, 2, 0xa1, 41, (0xb, 50)), 0xb, 90, 100),
            Err(Refusal::StaleSession)
        );
        // And an echo of a seq we never sent is no proof either.
        assert_eq!(
            judge(&s, &head(1, 2, 0xa3, 1, (0xb, 101)), 0xb, 90, 100),
            Err(Refusal::StaleSession)
        );
    }

    /// docs/PROTOCOL.md, "Worked example": the same bytes.
    const WORKED_EXAMPLE: [&str; 4] = [
        "48 42 02 01 01 00 00 00 00 00 00 07 00 00 00 01 00 00 00 02 00 00 00 00 01 23 45 67 89 ab cd ef 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 37 4c d2 ee 91 e8 0e db 64 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 df 22 60 16 48 7c 60 dc",
        "48 42 02 01 01 00 00 00 00 00 00 07 00 00 00 02 00 00 00 01 00 00 00 00 fe dc ba 98 76 54 32 10 00 00 00 00 00 00 00 01 01 23 45 67 89 ab cd ef 00 00 00 00 00 00 00 01 6e 79 7c 56 1d 0a 84 b4 5a 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 72 f0 84 df ff 67 85 9b",
        "48 42 02 01 01 02 00 01 00 00 00 07 00 00 00 01 00 00 00 02 00 00 00 00 01 23 45 67 89 ab cd ef 00 00 00 00 00 00 00 02 fe dc ba 98 76 54 32 10 00 00 00 00 00 00 00 01 c7 a1 76 cd 24 a1 37 df 64 02 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 04 ad e4 d6 62 95 f7 d1 85",
        "48 42 02 01 01 01 00 01 00 00 00 07 00 00 00 02 00 00 00 01 00 00 00 00 fe dc ba 98 76 54 32 10 00 00 00 00 00 00 00 02 01 23 45 67 89 ab cd ef 00 00 00 00 00 00 00 02 c7 39 00 34 0e a3 5a 33 5a 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 02 03 4c 55 09 58 cb 24 e3",
    ];

    /// The worked example of docs/PROTOCOL.md: a handshake and a heartbeat
    /// between node 1 (session 0x0123456789abcdef) and node 2
    /// (0xfedcba9876543210), cluster 7, key file 000102030405060708090a0b0c0d0e0f.
    pub fn worked_example() -> [[u8; LEN]; 4] {
        let (a, b) = (0x0123_4567_89ab_cdefu64, 0xfedc_ba98_7654_3210u64);
        let group = |priority, state: NodeState, holds: bool| Group {
            priority,
            state: state as u8,
            flags: if holds { GROUP_HOLDS } else { 0 },
        };
        let msg = |from, to, session, seq, your, state: NodeState, g: Group, holder, heard| {
            let mut body = Body {
                heard,
                ..Body::default()
            };
            body.groups[0] = g;
            body.holders[0] = holder;
            // Each node's second body differs from its first: generation 1.
            let h = Head {
                state: state as u8,
                body_gen: (seq > 1) as u16,
                ..head(from, to, session, seq, your)
            };
            encode(&h, &body, &KEY)
        };
        [
            // 1. Node 1 starts: it knows no session of node 2.
            msg(
                1,
                2,
                a,
                1,
                (0, 0),
                NodeState::Init,
                group(100, NodeState::Init, false),
                0,
                0,
            ),
            // 2. Node 2 echoes node 1's session and seq.
            msg(
                2,
                1,
                b,
                1,
                (a, 1),
                NodeState::Init,
                group(90, NodeState::Init, false),
                0,
                0,
            ),
            // 3. Node 1 adopts node 2 (its echo is fresh) and, hearing it, echoes it
            //    back: node 2 adopts node 1. Node 1 outranks it and takes group 0.
            msg(
                1,
                2,
                a,
                2,
                (b, 1),
                NodeState::Master,
                group(100, NodeState::Master, true),
                1,
                1 << 2,
            ),
            // 4. A heartbeat of node 2 in the established sessions.
            msg(
                2,
                1,
                b,
                2,
                (a, 2),
                NodeState::Backup,
                group(90, NodeState::Backup, false),
                1,
                1 << 1,
            ),
        ]
    }

    #[test]
    fn worked_example_runs_the_handshake() {
        let m = worked_example();
        let (a, b) = (0x0123_4567_89ab_cdefu64, 0xfedc_ba98_7654_3210u64);
        let (mut at1, mut at2) = (Session::default(), Session::default());
        let read = |bytes: &[u8; LEN], me| decode(bytes, &KEY, 7, me).unwrap().0;
        assert_eq!(feed(&mut at2, &read(&m[0], 2), b, 0, 1), Ok(Verdict::Echo));
        assert_eq!(feed(&mut at1, &read(&m[1], 1), a, 0, 1), Ok(Verdict::Adopt));
        assert_eq!(feed(&mut at2, &read(&m[2], 2), b, 0, 1), Ok(Verdict::Adopt));
        assert_eq!(feed(&mut at1, &read(&m[3], 1), a, 0, 2), Ok(Verdict::Life));
        for (i, msg) in m.iter().enumerate() {
            let hex: Vec<String> = msg.iter().map(|x| format!("{x:02x}")).collect();
            if hex.join(" ") != WORKED_EXAMPLE[i] {
                println!("HEX{i} {}", hex.join(" "));
            }
            assert_eq!(hex.join(" "), WORKED_EXAMPLE[i], "message {}", i + 1);
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok((h, b)) = decode(&bytes, &KEY, 7, 2) {
                let again = encode(&h, &b, &KEY);
                prop_assert_eq!(again.as_slice(), bytes.as_slice());
            }
        }

        #[test]
        fn round_trips_any_fields(flags: u8, state: u8, from: u32, session: u64, seq: u64, ys: u64, yq: u64, prio: [u8; 8], holders: [u32; 8], heard: u64, leave: bool) {
            let h = Head {
                msg_type: if leave { MsgType::Leave } else { MsgType::Heartbeat },
                flags, state, body_gen: seq as u16, cluster_id: 7, from, to: 2, session, seq, your_session: ys, your_seq: yq,
            };
            let mut b = Body { holders, heard, ..Body::default() };
            for (g, p) in prio.iter().enumerate() {
                b.groups[g] = Group { priority: *p, state: p % 4, flags: p & 1 };
            }
            prop_assert_eq!(decode(&encode(&h, &b, &KEY), &KEY, 7, 2), Ok((h, b)));
        }

        /// Whatever an attacker replays, the peer's session never goes back to
        /// one adopted before, and life needs an echo of our session.
        #[test]
        fn life_needs_our_session(msgs in proptest::collection::vec((0u64..4, 0u64..20, 0u64..4, 0u64..20), 0..40)) {
            let ours = 3;
            let mut s = Session::default();
            for (session, seq, ys, yq) in msgs {
                let h = head(1, 2, session + 1, seq, (ys, yq));
                let before = s;
                if let Ok(v) = feed(&mut s, &h, ours, 10, 15) {
                    if v.is_life() {
                        prop_assert_eq!(h.your_session, ours);
                    }
                    if v == Verdict::Adopt {
                        prop_assert!(10 < h.your_seq && h.your_seq <= 15);
                    }
                    if before.adopted == h.session {
                        prop_assert!(h.seq > before.seq);
                    }
                }
            }
        }
    }
}
