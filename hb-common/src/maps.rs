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
    /// [`super::Seen`], at [`super::seen_slot`] of the node id).
    pub const SEEN: &str = "SEEN";
    /// Pinned file names, one per map above, in the same order.
    pub const PINNED: [(&str, &str); 10] = [
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
}

/// The [`Config::vip_filter`] bit of an IPv4 address (network order): its last
/// octet modulo 64, so the VIPs of one subnet rarely share a bit.
#[inline(always)]
pub fn vip_filter_bit(ip: [u8; 4]) -> u64 {
    1 << (ip[3] & 63)
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

/// What the XDP program knows of one peer. The controller inserts a zeroed entry
/// for every configured peer: the keys of this map are the allow-list, and the
/// XDP program only ever updates existing entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerState {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last accepted message; 0 = never.
    pub last_seen_ns: u64,
    /// Sequence number of the last accepted message.
    pub seq: u64,
    /// Count of accepted messages.
    pub accepted: u64,
    /// Epoch of the last accepted message.
    pub epoch: u32,
    /// Interface the last accepted message came in on.
    pub ifindex: u32,
    /// Source IPv4 address of the last accepted message, network order; zero
    /// when it came over IPv6.
    pub src_ipv4: [u8; 4],
    /// Source IPv6 address of the last accepted message; zero when it came over IPv4.
    pub src_ipv6: [u8; 16],
    /// Source MAC address of the last accepted message.
    pub src_mac: [u8; 6],
    /// Last message's flags (`wire::FLAG_*`).
    pub flags: u8,
    /// Last message's advertised priority.
    pub priority: u8,
    /// Last message's advertised state (`wire::NodeState`).
    pub state: u8,
    /// Last message's type (`wire::MsgType`): a leave shows the peer stopped on purpose.
    pub msg_type: u8,
    pub _pad: [u8; 2],
    /// `bpf_ktime_get_ns()` of the last fresh death notice from this peer (its
    /// kernel saw its controller die); 0 = none. Kept apart from the heartbeat
    /// fields above: a notice carries our numbers, not the peer's, so it must not
    /// move the peer's anti-replay state.
    pub gone_ns: u64,
    /// Epoch of the peer's controller that died, from that notice.
    pub gone_epoch: u32,
    pub _pad2: u32,
    /// Our sequence number the notice echoed (the heartbeat it answered).
    pub gone_seq: u64,
}

impl PeerState {
    /// The peer's controller is gone: a fresh death notice was recorded for an
    /// epoch at least as new as its last accepted heartbeat's. A restarted
    /// controller's first heartbeat (a newer epoch) ends it, whatever order
    /// late notices and heartbeats arrive in.
    #[inline(always)]
    pub fn gone(&self) -> bool {
        self.gone_ns != 0 && self.gone_epoch >= self.epoch
    }
}

/// What the XDP program saw of ARP claiming one of this node's IPv4 VIPs from
/// another MAC. The controller inserts a zeroed entry per VIP (the keys are the
/// watch list, IPv4 network order); the XDP program only updates existing entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipWatch {
    /// ARP requests and replies seen with the VIP as sender IP and a foreign sender MAC.
    pub conflicts: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last one; 0 = never.
    pub last_ns: u64,
    /// Sender MAC of the last one.
    pub last_mac: [u8; 6],
    pub _pad: [u8; 2],
    /// The last few distinct claiming MACs with their counts, so that a peer's
    /// announcement right after a stranger's does not hide the stranger.
    pub claimants: [Claimant; CLAIMANTS],
}

/// Distinct MACs remembered per VIP in [`VipWatch::claimants`].
pub const CLAIMANTS: usize = 4;

/// One MAC that claimed a VIP, and how many ARP packets it sent doing so.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Claimant {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    pub count: u64,
}

/// What the data plane tells the controller through the `EVENTS` ring buffer,
/// so that it waits for news instead of polling the maps: the record says
/// which peer or VIP to look at, the maps hold the facts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `EVENT_*`.
    pub kind: u32,
    /// The peer's node id (`EVENT_PEER`, `EVENT_GONE`); for `EVENT_CLAIM`, the
    /// VIP (network order, as the `VIPS` key).
    pub subject: u32,
    /// `bpf_ktime_get_ns()` when it happened.
    pub at_ns: u64,
}

/// A peer was heard for the first time, after a quiet gap
/// ([`Config::quiet_ns`]), or with a new state, flags, priority, message type
/// or epoch.
pub const EVENT_PEER: u32 = 1;
/// A fresh death notice from a peer's kernel was recorded.
pub const EVENT_GONE: u32 = 2;
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
/// id and epoch once its start went through; the `sched_process_exit` program
/// sets `dead_ns` when that process's main thread exits. A graceful stop clears
/// `pid` first. While `dead_ns` is set, XDP answers accepted heartbeats with a
/// death notice, and withdraws the holder lease on a heartbeat from a peer that
/// claims the VIPs (it took over).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    /// Thread-group id of the controller in its pid namespace; 0 = none.
    pub pid: u32,
    /// The controller's node id and epoch, which the death notice carries.
    pub node_id: u32,
    pub epoch: u32,
    pub _pad: u32,
    /// The kernel `dev_t` (MKDEV(major, minor)) and inode of the controller's
    /// pid namespace, as `bpf_get_ns_current_pid_tgid` wants them.
    pub pidns_dev: u64,
    pub pidns_ino: u64,
    /// `bpf_ktime_get_ns()` when the controller was seen to die; 0 = alive.
    pub dead_ns: u64,
}

/// The last heartbeat this node sent (single entry at index 0), written by the
/// sender thread before each send: a death notice from a peer must echo one of
/// the last few of these (`wire::Gone::echoes`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub epoch: u32,
    pub _pad: u32,
    pub seq: u64,
}

/// When a configured peer was last heard on this link, for the sender thread:
/// the map is `BPF_F_MMAPABLE`, so it watches every peer's silence with plain
/// loads on its own clock, and the controller sleeps until something happens.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// `bpf_ktime_get_ns()` of the last accepted heartbeat or leave; 0 = never.
    pub last_seen_ns: u64,
}

/// Slots of the `seen` map: one per peer when no two configured node ids are
/// equal modulo this (the controller checks, and watches silence itself if
/// they are).
pub const SEEN_SLOTS: u32 = MAX_PEERS;

/// The `seen` slot of a node id.
#[inline(always)]
pub const fn seen_slot(node_id: u32) -> u32 {
    node_id % SEEN_SLOTS
}

/// Outcome of one packet, and index of its counter in [`Stats`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not a heartbeat (other traffic, non-first fragment): passed untouched.
    Passed = 0,
    Accepted,
    BadLength,
    BadMagic,
    BadVersion,
    BadType,
    WrongCluster,
    UnknownNode,
    BadMac,
    Replayed,
    /// ARP claiming one of our VIPs from another MAC: counted, and passed untouched.
    ArpConflict,
    /// Dropped by the self-fence: ARP asking for a VIP while we hold no lease.
    FencedArp,
    /// Dropped by the self-fence: IPv4 to a VIP while we hold no lease.
    FencedIp,
    /// A heartbeat accepted while our controller is dead, answered with a death
    /// notice (XDP_TX) instead of being dropped.
    GoneSent,
    /// A fresh death notice from a peer: recorded in its entry.
    Gone,
    /// A death notice that echoes none of our recent sequence numbers (a replay).
    GoneReplayed,
}

impl Outcome {
    /// Every outcome, in counter order.
    pub const ALL: [Outcome; Stats::COUNT] = [
        Outcome::Passed,
        Outcome::Accepted,
        Outcome::BadLength,
        Outcome::BadMagic,
        Outcome::BadVersion,
        Outcome::BadType,
        Outcome::WrongCluster,
        Outcome::UnknownNode,
        Outcome::BadMac,
        Outcome::Replayed,
        Outcome::ArpConflict,
        Outcome::FencedArp,
        Outcome::FencedIp,
        Outcome::GoneSent,
        Outcome::Gone,
        Outcome::GoneReplayed,
    ];
}

impl From<crate::wire::Refusal> for Outcome {
    #[inline(always)]
    fn from(r: crate::wire::Refusal) -> Self {
        use crate::wire::Refusal as R;
        match r {
            R::BadLength => Self::BadLength,
            R::BadMagic => Self::BadMagic,
            R::BadVersion => Self::BadVersion,
            R::BadType => Self::BadType,
            R::WrongCluster => Self::WrongCluster,
            R::UnknownNode => Self::UnknownNode,
            R::BadMac => Self::BadMac,
            R::Replayed => Self::Replayed,
            R::GoneReplayed => Self::GoneReplayed,
        }
    }
}

/// Per-CPU packet counters, one field per [`Outcome`] in the same order, so that
/// `bpftool map dump` prints them by name.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub passed: u64,
    pub accepted: u64,
    pub bad_length: u64,
    pub bad_magic: u64,
    pub bad_version: u64,
    pub bad_type: u64,
    pub wrong_cluster: u64,
    pub unknown_node: u64,
    pub bad_mac: u64,
    pub replayed: u64,
    pub arp_conflict: u64,
    pub fenced_arp: u64,
    pub fenced_ip: u64,
    pub gone_sent: u64,
    pub gone: u64,
    pub gone_replayed: u64,
}

impl Stats {
    /// Number of counters, the length of [`Stats::FIELDS`].
    pub const COUNT: usize = 16;
    /// Counter names, in [`Outcome`] order.
    pub const FIELDS: [&'static str; Self::COUNT] = [
        "passed",
        "accepted",
        "bad_length",
        "bad_magic",
        "bad_version",
        "bad_type",
        "wrong_cluster",
        "unknown_node",
        "bad_mac",
        "replayed",
        "arp_conflict",
        "fenced_arp",
        "fenced_ip",
        "gone_sent",
        "gone",
        "gone_replayed",
    ];

    pub fn as_array(&self) -> [u64; Self::COUNT] {
        [
            self.passed,
            self.accepted,
            self.bad_length,
            self.bad_magic,
            self.bad_version,
            self.bad_type,
            self.wrong_cluster,
            self.unknown_node,
            self.bad_mac,
            self.replayed,
            self.arp_conflict,
            self.fenced_arp,
            self.fenced_ip,
            self.gone_sent,
            self.gone,
            self.gone_replayed,
        ]
    }

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
        let [passed, accepted, bad_length, bad_magic, bad_version, bad_type, wrong_cluster, unknown_node, bad_mac, replayed, arp_conflict, fenced_arp, fenced_ip, gone_sent, gone, gone_replayed] =
            t;
        Stats {
            passed,
            accepted,
            bad_length,
            bad_magic,
            bad_version,
            bad_type,
            wrong_cluster,
            unknown_node,
            bad_mac,
            replayed,
            arp_conflict,
            fenced_arp,
            fenced_ip,
            gone_sent,
            gone,
            gone_replayed,
        }
    }
}

// Both sides rely on these sizes; a change here is a change of the map ABI.
const _: () = assert!(core::mem::size_of::<PeerState>() == 88);
const _: () = assert!(core::mem::size_of::<Stats>() == Stats::COUNT * 8);
const _: () = assert!(core::mem::size_of::<Config>() == 32);
const _: () = assert!(core::mem::size_of::<Event>() == 16);
const _: () = assert!(core::mem::size_of::<VipWatch>() == 24 + 16 * CLAIMANTS);
const _: () = assert!(Outcome::GoneReplayed as usize + 1 == Stats::COUNT);
const _: () = assert!(core::mem::size_of::<Lease>() == 8);
const _: () = assert!(core::mem::size_of::<Owner>() == 40);
const _: () = assert!(core::mem::size_of::<Sent>() == 16);
const _: () = assert!(core::mem::size_of::<Seen>() == 8);

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
    fn gone_needs_a_notice_at_least_as_new_as_the_last_heartbeat() {
        let p = PeerState {
            epoch: 4,
            ..Default::default()
        };
        assert!(!p.gone(), "no notice");
        let notice = PeerState {
            gone_ns: 1,
            gone_epoch: 4,
            ..p
        };
        assert!(
            notice.gone(),
            "a late heartbeat of the dead epoch does not undo it"
        );
        let restarted = PeerState { epoch: 5, ..notice };
        assert!(!restarted.gone(), "a heartbeat of a newer epoch ends it");
        assert!(
            PeerState {
                gone_ns: 1,
                gone_epoch: 1,
                ..Default::default()
            }
            .gone(),
            "a notice from a peer never heard"
        );
        assert_eq!(
            Stats::FIELDS[Outcome::GoneReplayed as usize],
            "gone_replayed"
        );
    }

    #[test]
    fn key_bytes_are_read_little_endian() {
        let k = Key::from_bytes(core::array::from_fn(|i| i as u8));
        assert_eq!(k.k0, 0x0706050403020100);
        assert_eq!(k.k1, 0x0f0e0d0c0b0a0908);
        assert_eq!(format!("{k:?}"), "Key(..)");
    }
}
