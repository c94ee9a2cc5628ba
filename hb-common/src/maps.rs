//! Types stored in the BPF maps, laid out identically on both sides (`#[repr(C)]`,
//! explicit padding so BTF and `bpftool` show every byte), and the maps' names.

/// Names of the maps in the object, and the file names they are pinned under in
/// `/sys/fs/bpf/hb/<iface>/`.
pub mod names {
    /// Object name of the peers map (BTF hash, node id -> [`super::PeerState`]).
    pub const PEERS: &str = "PEERS";
    /// Object name of the counters map (BTF per-CPU array of one [`super::Stats`]).
    pub const STATS: &str = "STATS";
    /// Object name of the configuration map (BTF array of one [`super::Config`]).
    pub const CONFIG: &str = "CONFIG";
    /// Object name of the MAC key map (BTF array of one [`super::Key`]).
    pub const KEY: &str = "KEY";
    /// Object name of the VIP watch map (BTF hash, IPv4 VIP -> [`super::VipWatch`]).
    pub const VIPS: &str = "VIPS";
    /// Object name of the holder lease map (BTF array of one [`super::Lease`]).
    pub const LEASE: &str = "LEASE";
    /// Object name of the controller watch (BTF array of one [`super::Owner`]).
    pub const OWNER: &str = "OWNER";
    /// Object name of the last heartbeat sent (BTF array of one [`super::Sent`]).
    pub const SENT: &str = "SENT";
    /// Object name of the event ring buffer (records of [`super::Event`]).
    pub const EVENTS: &str = "EVENTS";
    /// Object name of the arrival times (BTF array of [`super::SEEN_SLOTS`]
    /// [`super::Seen`], at each peer's `PeerState::slot`).
    pub const SEEN: &str = "SEEN";
    /// Object name of the IPv6 VIPs the self-fence covers (BTF hash, address -> 1).
    pub const VIPS6: &str = "VIPS6";
    /// Pinned file names, one per map above, in the same order.
    pub const PINNED: [(&str, &str); 11] = [
        (PEERS, "peers"),
        (STATS, "stats"),
        (CONFIG, "config"),
        (KEY, "key"),
        (VIPS, "vips"),
        (LEASE, "lease"),
        (OWNER, "owner"),
        (SENT, "sent"),
        (EVENTS, "events"),
        (SEEN, "seen"),
        (VIPS6, "vips6"),
    ];
    /// The XDP entry point.
    pub const PROGRAM: &str = "hb_xdp";
    /// The raw tracepoint program that sees the controller die.
    pub const EXIT_PROGRAM: &str = "hb_exit";
    /// The raw tracepoint it is attached to.
    pub const EXIT_TRACEPOINT: &str = "sched_process_exit";
}

/// Most peers one node tracks.
pub const MAX_PEERS: u32 = 64;

/// Most IPv4 VIPs one interface watches for ARP conflicts.
pub const MAX_VIPS: u32 = 256;

/// The controller's settings for the XDP program (single entry at index 0).
/// A zero `port` means "not configured yet": everything passes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub cluster_id: u32,
    /// Heartbeat UDP port, host byte order.
    pub port: u16,
    /// `CONFIG_*` bits.
    pub flags: u16,
    /// This interface's MAC: ARP claiming one of our VIPs from any other MAC is a conflict.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// [`vip_filter_bit`] of every watched VIP, OR-ed: ARP whose sender IP's bit
    /// is clear cannot be about a VIP and skips the `VIPS` hash lookup.
    pub vip_filter: u64,
    /// A heartbeat accepted after at least this long without one from its
    /// sender is an [`Event`] (ns; the controller sets half its dead-after), as
    /// is every change of what a peer says: the controller then needs no
    /// polling to see a peer come back or change.
    pub quiet_ns: u64,
    /// This node's id: messages are addressed to it, and one that claims to
    /// come from it in another session is an id collision.
    pub node_id: u32,
    pub _pad2: u32,
    /// [`vip6_filter_bit`] of every IPv6 VIP, OR-ed: IPv6 to an address whose
    /// bit is clear skips the `VIPS6` lookup.
    pub vip6_filter: u64,
}

/// The [`Config::vip_filter`] bit of an IPv4 address (network order): its last
/// octet modulo 64, so the VIPs of one subnet rarely share a bit.
#[inline(always)]
pub fn vip_filter_bit(ip: [u8; 4]) -> u64 {
    1 << (ip[3] & 63)
}

/// The [`Config::vip6_filter`] bit of an IPv6 address: its last byte modulo 64.
#[inline(always)]
pub fn vip6_filter_bit(ip: &[u8; 16]) -> u64 {
    1 << (ip[15] & 63)
}

/// Let heartbeat-port packets go on to the stack after handling them (debugging:
/// tcpdump on a socket, or a second receiver). Off by default: they are dropped.
pub const CONFIG_PASS_HEARTBEATS: u16 = 1 << 0;

/// The 128-bit MAC key as SipHash reads it: little-endian words of key bytes 0..8, 8..16.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Key {
    pub k0: u64,
    pub k1: u64,
}

impl Key {
    pub fn from_bytes(b: [u8; 16]) -> Self {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&b[..8]);
        hi.copy_from_slice(&b[8..]);
        Self {
            k0: u64::from_le_bytes(lo),
            k1: u64::from_le_bytes(hi),
        }
    }
}

/// Never print a key by accident.
impl core::fmt::Debug for Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// What the XDP program knows of one peer, over all messages that passed its
/// checks. The controller inserts a zeroed entry for every configured peer
/// (the keys of this map are the allow-list; the XDP program only updates
/// existing entries) and one for its own id, where XDP records messages of
/// another machine that uses our id (`last_seen_ns`: the last one).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerState {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last message that counted
    /// as life; 0 = never.
    pub last_seen_ns: u64,
    /// Count of messages that counted as life.
    pub accepted: u64,
    /// The peer's adopted session (docs/PROTOCOL.md, "Sessions"); 0 = none yet.
    pub session: u64,
    /// The highest sequence number accepted in it.
    pub seq: u64,
    /// `bpf_ktime_get_ns()` of the last fresh death notice from this peer (its
    /// kernel saw its controller die); 0 = none.
    pub gone_ns: u64,
    /// The dead controller's session, from that notice.
    pub gone_session: u64,
    /// Our sequence number the notice echoed (the heartbeat it answered).
    pub gone_seq: u64,
    /// `bpf_ktime_get_ns()` of the last authenticated wire version 1 heartbeat
    /// from this peer (it runs an old hb); 0 = none, or a v1 leave came since.
    pub old_version_ns: u64,
    /// Interface the last accepted message came in on.
    pub ifindex: u32,
    /// Source IPv4 address of the last accepted message, network order; zero
    /// when it came over IPv6.
    pub src_ipv4: [u8; 4],
    /// Source IPv6 address of the last accepted message; zero when it came over IPv4.
    pub src_ipv6: [u8; 16],
    /// Source MAC address of the last accepted message.
    pub src_mac: [u8; 6],
    pub _pad: [u8; 2],
    /// This peer's entry in the `seen` array, set by the controller (the
    /// peer's index in its configuration).
    pub slot: u32,
    pub _pad2: u32,
    /// `bpf_ktime_get_ns()` when `session` was adopted: with several links,
    /// the controller trusts the link that adopted last (see `node.rs`).
    pub adopted_ns: u64,
    /// Our seq that the adopting message echoed (`wire2::Session::proof`).
    pub adopted_echo: u64,
    /// The last message that counted as life, whole (both MACs): the
    /// controller checks its body MAC and reads the groups from it.
    pub message: [u8; crate::wire2::LEN],
}

impl Default for PeerState {
    fn default() -> Self {
        Self {
            last_seen_ns: 0,
            accepted: 0,
            session: 0,
            seq: 0,
            gone_ns: 0,
            gone_session: 0,
            gone_seq: 0,
            old_version_ns: 0,
            ifindex: 0,
            src_ipv4: [0; 4],
            src_ipv6: [0; 16],
            src_mac: [0; 6],
            _pad: [0; 2],
            slot: 0,
            _pad2: 0,
            adopted_ns: 0,
            adopted_echo: 0,
            message: [0; crate::wire2::LEN],
        }
    }
}

impl PeerState {
    /// The peer's controller is gone: a fresh death notice named the session
    /// we adopted. A restarted controller's session, once adopted, ends it,
    /// whatever order late notices and heartbeats arrive in.
    #[inline(always)]
    pub fn gone(&self) -> bool {
        self.gone_ns != 0 && self.gone_session == self.session
    }

    /// The last message's type byte (`wire::MsgType`): a leave shows the peer
    /// stopped on purpose.
    pub fn msg_type(&self) -> u8 {
        self.message[3]
    }
}

/// What the XDP program saw of ARP claiming one of this node's IPv4 VIPs from
/// another MAC. The controller inserts a zeroed entry per VIP (the keys are the
/// watch list, IPv4 network order); the XDP program only updates existing entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipWatch {
    /// ARP requests and replies seen with the VIP as sender IP and a foreign sender MAC.
    pub conflicts: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last one; 0 = never.
    pub last_ns: u64,
    /// Sender MAC of the last one.
    pub last_mac: [u8; 6],
    pub _pad: [u8; 2],
    /// The last few distinct claiming MACs, so that a peer's announcement right
    /// after a stranger's does not hide the stranger. A new MAC takes the slot
    /// with the least (`repeat`, `last_ns`): free slots first, then the least
    /// recently seen one-shot claimant, and a repeat claimant only when every
    /// slot holds one; so a flood of one-shot MACs churns only the one-shot
    /// slots and a MAC that keeps claiming stays.
    pub claimants: [Claimant; CLAIMANTS],
    /// Fingerprints of recently seen new MACs, by hash (see [`recent_slot`]),
    /// each held [`RECENT_HOLD`] before another MAC may take its place: a MAC
    /// that is not in `claimants` but whose fingerprint is here is known as a
    /// repeat claimant, however many one-shot MACs came in between.
    pub recent: [u32; RECENT],
}

impl Default for VipWatch {
    fn default() -> Self {
        Self {
            conflicts: 0,
            last_ns: 0,
            last_mac: [0; 6],
            _pad: [0; 2],
            claimants: [Claimant::default(); CLAIMANTS],
            recent: [0; RECENT],
        }
    }
}

/// Distinct MACs remembered per VIP in [`VipWatch::claimants`].
pub const CLAIMANTS: usize = 4;

/// Entries of [`VipWatch::recent`] (a power of two).
pub const RECENT: usize = 256;

/// A [`VipWatch::recent`] entry is 20 bits of fingerprint over 12 bits of
/// time, in units of 2^`RECENT_TICK` ns (16.8 ms; wraps after 69 s).
pub const RECENT_TICK: u32 = 24;

/// Ticks a [`VipWatch::recent`] entry is held (1.07 s) before another MAC may
/// take it: a real rival claims more often than that, and a flood cannot
/// overwrite its fingerprint faster.
pub const RECENT_HOLD: u32 = 64;

/// Where `mac` goes in [`VipWatch::recent`] and the entry it writes there at
/// `now_ns` (`bpf_ktime_get_ns`): the fingerprint is the entry's top 20 bits,
/// never 0, so a zeroed entry matches no MAC.
#[inline(always)]
pub fn recent_slot(mac: &[u8; 6], now_ns: u64) -> (usize, u32) {
    let x = u64::from(mac[0])
        | u64::from(mac[1]) << 8
        | u64::from(mac[2]) << 16
        | u64::from(mac[3]) << 24
        | u64::from(mac[4]) << 32
        | u64::from(mac[5]) << 40;
    let h = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let fingerprint = ((h >> 36) as u32 & 0xf_ffff) | 1;
    let tick = (now_ns >> RECENT_TICK) as u32 & 0xfff;
    ((h >> 56) as usize % RECENT, fingerprint << 12 | tick)
}

/// Whether the [`VipWatch::recent`] entry `held`, written by another MAC, may
/// still not be taken by the one that would write `fresh` (from [`recent_slot`]).
#[inline(always)]
pub fn recent_held(held: u32, fresh: u32) -> bool {
    held != 0 && (fresh.wrapping_sub(held) & 0xfff) < RECENT_HOLD
}

/// One MAC that claimed a VIP: how many ARP packets it sent doing so since it
/// got its slot, and when it was last seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Claimant {
    pub mac: [u8; 6],
    /// 1: a repeat claimant (claimed again in this slot, or was known from
    /// [`VipWatch::recent`] when it got it); 0: one claim so far.
    pub repeat: u8,
    pub _pad: u8,
    pub count: u64,
    /// `bpf_ktime_get_ns()` of its last claim.
    pub last_ns: u64,
}

/// What the data plane tells the controller through the `EVENTS` ring buffer,
/// so that it waits for news instead of polling the maps: the record says
/// which peer or VIP to look at, the maps hold the facts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `EVENT_*`.
    pub kind: u32,
    /// The peer's node id (`EVENT_PEER`, `EVENT_GONE`, `EVENT_COLLISION`: our
    /// own); for `EVENT_CLAIM`, the
    /// VIP (network order, as the `VIPS` key).
    pub subject: u32,
    /// `bpf_ktime_get_ns()` when it happened.
    pub at_ns: u64,
}

/// A peer was heard for the first time, after a quiet gap
/// ([`Config::quiet_ns`]), in a newly adopted session, or with a new message
/// type, flags, state or body generation; or its wire version 1 heartbeats
/// began or ended.
pub const EVENT_PEER: u32 = 1;
/// A fresh death notice from a peer's kernel was recorded.
pub const EVENT_GONE: u32 = 2;
/// A message from our own node id in another session: another machine was
/// given our id (see `PeerState`: our own entry).
pub const EVENT_COLLISION: u32 = 4;
/// ARP claimed one of our VIPs from a foreign MAC: a new claimant, or the first
/// claim after a quiet gap (a flood gives one event; the controller's periodic
/// sweep reads the counts).
pub const EVENT_CLAIM: u32 = 3;

/// Size of the `EVENTS` ring buffer: a power of two pages; 16 KiB holds 512
/// records, far more than a controller that drains it on every wake-up sees.
pub const EVENTS_BYTES: usize = 16 * 1024;

/// `BPF_F_MMAPABLE`: the lease and the last-sent record are arrays the sender
/// thread maps into its memory and writes with plain stores, so a heartbeat
/// costs no map-update syscall.
pub const MAP_MMAPABLE: usize = 1 << 10;

/// The holder lease (single entry at index 0): while `until_ns` is in the future
/// (CLOCK_MONOTONIC, as `bpf_ktime_get_ns`), this node may answer for its VIPs.
/// The controller renews it every quarter of dead-after while it holds the VIPs; when it stops
/// (demoted, or dead), the XDP program drops ARP for the VIPs and IPv4 to them,
/// so a node whose controller died stops answering within dead-after.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    pub until_ns: u64,
}

/// Who owns this data plane (single entry at index 0), for the death notice.
/// The controller writes its process id (as its own pid namespace sees it, with
/// that namespace's device and inode, so the check works in a container), node
/// id and session once its start went through; the `sched_process_exit` program
/// sets `dead_ns` when that process's main thread exits. A graceful stop clears
/// `pid` first. While `dead_ns` is set, XDP answers accepted heartbeats with a
/// death notice, and withdraws the holder lease on a heartbeat from a peer that
/// claims the VIPs (it took over).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    /// Thread-group id of the controller in its pid namespace; 0 = none.
    pub pid: u32,
    /// The controller's node id and session, which the death notice carries.
    pub node_id: u32,
    pub session: u64,
    /// The kernel `dev_t` (MKDEV(major, minor)) and inode of the controller's
    /// pid namespace, as `bpf_get_ns_current_pid_tgid` wants them.
    pub pidns_dev: u64,
    pub pidns_ino: u64,
    /// `bpf_ktime_get_ns()` when the controller was seen to die; 0 = alive.
    pub dead_ns: u64,
}

/// What this node sends now (single entry at index 0), written by the sender
/// thread before each beat: our session, and which of our sequence numbers are
/// recent. A message from a peer that proves a new session of it fresh, and a
/// death notice, must echo our session and a seq in `(recent_lo, seq]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub session: u64,
    /// The last sequence number sent.
    pub seq: u64,
    /// A sequence number sent two to four dead-afters ago (0 early on).
    pub recent_lo: u64,
}

/// Per configured peer, what the sender thread needs with plain loads: when
/// it was last heard (to watch its silence) and what our messages to it echo.
/// The map is `BPF_F_MMAPABLE`: the thread reads it on its own clock, and the
/// controller sleeps until something happens.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// `bpf_ktime_get_ns()` of the last message that counted as life; 0 = never.
    pub last_seen_ns: u64,
    /// The peer's session and seq of its last valid message: our messages to
    /// it echo them (your session, your seq).
    pub echo_session: u64,
    pub echo_seq: u64,
}

/// Entries of the `seen` map: one per configured peer (`PeerState::slot`).
pub const SEEN_SLOTS: u32 = MAX_PEERS;

/// Declares [`Outcome`] and [`Stats`] from one list, so that the counter
/// order, the field names `bpftool` prints and the outcomes cannot drift apart.
macro_rules! counters {
    ($($(#[$doc:meta])* $variant:ident => $field:ident,)*) => {
        /// Outcome of one packet, and index of its counter in [`Stats`].
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Outcome {
            $($(#[$doc])* $variant,)*
        }

        /// Per-CPU packet counters, one field per [`Outcome`] in the same
        /// order, so that `bpftool map dump` prints them by name.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Stats {
            $(pub $field: u64,)*
        }

        impl Outcome {
            /// Every outcome, in counter order.
            pub const ALL: [Outcome; Stats::COUNT] = [$(Outcome::$variant,)*];
        }

        impl Stats {
            /// Number of counters, the length of [`Stats::FIELDS`].
            pub const COUNT: usize = [$(stringify!($field),)*].len();
            /// Counter names, in [`Outcome`] order.
            pub const FIELDS: [&'static str; Self::COUNT] = [$(stringify!($field),)*];

            pub fn as_array(&self) -> [u64; Self::COUNT] {
                [$(self.$field,)*]
            }

            fn from_array(a: [u64; Self::COUNT]) -> Self {
                let [$($field,)*] = a;
                Stats { $($field,)* }
            }
        }
    };
}

counters! {
    /// Not an hb message, or not addressed to this node (other traffic,
    /// Linux-HA Heartbeat on the same port, a non-first fragment): passed
    /// untouched.
    Passed => passed,
    /// A message that counted as a sign of life.
    Accepted => accepted,
    /// An hb message whose length fields promise more than the frame holds.
    BadLength => bad_length,
    /// A wire version 1 message (an old peer: see `PeerState::old_version_ns`).
    OldVersion => old_version,
    BadVersion => bad_version,
    BadType => bad_type,
    WrongCluster => wrong_cluster,
    UnknownNode => unknown_node,
    BadMac => bad_mac,
    /// The peer's adopted session with a sequence number already seen.
    Replayed => replayed,
    /// Another session of the peer, not proven fresh (a capture, or a peer
    /// that restarted and has not heard us yet).
    StaleSession => stale_session,
    /// Valid, but not yet life: part of the session handshake.
    Handshake => handshake,
    /// Our own node id from a session that is not ours: another machine has it.
    IdCollision => id_collision,
    /// ARP claiming one of our VIPs from another MAC: counted, and passed untouched.
    ArpConflict => arp_conflict,
    /// Dropped by the self-fence: ARP asking for a VIP while we hold no lease.
    FencedArp => fenced_arp,
    /// Dropped by the self-fence: IPv4 to a VIP while we hold no lease.
    FencedIp => fenced_ip,
    /// Dropped by the self-fence: a neighbour solicitation for an IPv6 VIP
    /// while we hold no lease.
    FencedNd => fenced_nd,
    /// Dropped by the self-fence: IPv6 to a VIP while we hold no lease.
    FencedIp6 => fenced_ip6,
    /// A heartbeat accepted while our controller is dead, answered with a death
    /// notice (XDP_TX) instead of being dropped.
    GoneSent => gone_sent,
    /// A fresh death notice from a peer: recorded in its entry.
    Gone => gone,
    /// A death notice that echoes none of our recent heartbeats (a replay).
    GoneReplayed => gone_replayed,
}

impl From<crate::wire2::Refusal> for Outcome {
    #[inline(always)]
    fn from(r: crate::wire2::Refusal) -> Self {
        use crate::wire2::Refusal as R;
        match r {
            R::NotOurs | R::NotForUs => Self::Passed,
            R::BadLength => Self::BadLength,
            R::OldVersion => Self::OldVersion,
            R::BadVersion => Self::BadVersion,
            R::BadType => Self::BadType,
            R::WrongCluster => Self::WrongCluster,
            R::IdCollision => Self::IdCollision,
            R::UnknownNode => Self::UnknownNode,
            R::BadMac | R::BadBodyMac => Self::BadMac,
            R::Replayed => Self::Replayed,
            R::StaleSession => Self::StaleSession,
            R::GoneReplayed => Self::GoneReplayed,
        }
    }
}

impl Stats {
    pub fn get(&self, o: Outcome) -> u64 {
        self.as_array()[o as usize]
    }

    /// Sum of per-CPU values.
    pub fn sum<'a>(per_cpu: impl IntoIterator<Item = &'a Stats>) -> Stats {
        let mut t = [0u64; Self::COUNT];
        for s in per_cpu {
            for (acc, v) in t.iter_mut().zip(s.as_array()) {
                *acc += v;
            }
        }
        Self::from_array(t)
    }
}

// Both sides rely on these sizes; a change here is a change of the map ABI.
const _: () = assert!(core::mem::size_of::<PeerState>() == 120 + crate::wire2::LEN);
// XDP reads the message's first word with one aligned load.
const _: () = assert!(core::mem::offset_of!(PeerState, message) % 8 == 0);
const _: () = assert!(core::mem::size_of::<Stats>() == Stats::COUNT * 8);
const _: () = assert!(core::mem::size_of::<Config>() == 48);
const _: () = assert!(core::mem::size_of::<Event>() == 16);
const _: () = assert!(core::mem::size_of::<VipWatch>() == 24 + 24 * CLAIMANTS + 4 * RECENT);
const _: () = assert!(RECENT.is_power_of_two() && RECENT <= 256);
const _: () = assert!(core::mem::size_of::<Lease>() == 8);
const _: () = assert!(core::mem::size_of::<Owner>() == 40);
const _: () = assert!(core::mem::size_of::<Sent>() == 24);
const _: () = assert!(core::mem::size_of::<Seen>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)], made only of integers and byte arrays, with no
    // implicit padding (sizes asserted above).
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Key {}
    unsafe impl aya::Pod for super::PeerState {}
    unsafe impl aya::Pod for super::Stats {}
    unsafe impl aya::Pod for super::VipWatch {}
    unsafe impl aya::Pod for super::Lease {}
    unsafe impl aya::Pod for super::Owner {}
    unsafe impl aya::Pod for super::Sent {}
    unsafe impl aya::Pod for super::Seen {}
    unsafe impl aya::Pod for super::Event {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recent_entry_is_held_for_the_hold_time_across_the_tick_wrap() {
        let mac = [2, 0, 0, 0, 0, 1];
        let tick = 1u64 << RECENT_TICK;
        for start in [0, 4090 * tick, 123_456_789 * tick] {
            let (at, e) = recent_slot(&mac, start);
            assert!(at < RECENT);
            assert_ne!(e >> 12, 0, "a zeroed entry matches no MAC");
            let later = |t: u64| recent_slot(&[2, 0, 0, 0, 0, 9], start + t * tick).1;
            assert!(recent_held(e, later(0)));
            assert!(recent_held(e, later(u64::from(RECENT_HOLD) - 1)));
            assert!(!recent_held(e, later(u64::from(RECENT_HOLD))));
        }
        assert!(!recent_held(0, recent_slot(&mac, 5).1), "free");
    }

    #[test]
    fn stats_sum_and_lookup() {
        let a = Stats {
            accepted: 2,
            bad_mac: 1,
            ..Default::default()
        };
        let b = Stats {
            accepted: 3,
            replayed: 4,
            ..Default::default()
        };
        let c = Stats {
            arp_conflict: 2,
            ..Default::default()
        };
        let s = Stats::sum([&a, &b, &c]);
        assert_eq!(s.get(Outcome::ArpConflict), 2);
        assert_eq!(Stats::FIELDS[Outcome::ArpConflict as usize], "arp_conflict");
        assert_eq!(s.get(Outcome::Accepted), 5);
        assert_eq!(s.get(Outcome::BadMac), 1);
        assert_eq!(s.get(Outcome::Replayed), 4);
        assert_eq!(
            Stats::FIELDS[Outcome::WrongCluster as usize],
            "wrong_cluster"
        );
    }

    #[test]
    fn gone_needs_a_notice_naming_the_adopted_session() {
        let p = PeerState {
            session: 4,
            ..Default::default()
        };
        assert!(!p.gone(), "no notice");
        let notice = PeerState {
            gone_ns: 1,
            gone_session: 4,
            ..p
        };
        assert!(
            notice.gone(),
            "a late heartbeat of the dead session does not undo it"
        );
        let restarted = PeerState {
            session: 5,
            ..notice
        };
        assert!(!restarted.gone(), "a newly adopted session ends it");
        assert_eq!(
            Stats::FIELDS[Outcome::GoneReplayed as usize],
            "gone_replayed"
        );
        assert_eq!(Stats::COUNT, Outcome::GoneReplayed as usize + 1);
    }

    #[test]
    fn key_bytes_are_read_little_endian() {
        let k = Key::from_bytes(core::array::from_fn(|i| i as u8));
        assert_eq!(k.k0, 0x0706050403020100);
        assert_eq!(k.k1, 0x0f0e0d0c0b0a0908);
        assert_eq!(format!("{k:?}"), "Key(..)");
    }
}
