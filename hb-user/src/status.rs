//! `hb-user status`: what a node's controller and XDP program know, read from the
//! controller's status file and the data plane's maps, pinned or found through
//! the interface (so it works from any shell in the node's network namespace).

use crate::{config::Vip, loader::View};
use anyhow::{Context, Result};
use hb_common::{
    wire2::{Head, FLAG_HOLDS},
    MsgType, NodeState, PeerState, Stats,
};
use serde::{Deserialize, Serialize};
use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

/// Name of the status file in the state directory.
pub const STATUS_FILE: &str = "status.json";

/// One health check as the node sees it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CheckRow {
    pub name: String,
    /// None until its first result.
    pub healthy: Option<bool>,
    /// How its last reported run ended ("exit status: 0", "timed out after 1s").
    pub last: String,
    pub weight: i32,
    /// What it does now: "+20", "-20", "FAULT" or "" (nothing).
    pub effect: String,
}

/// What became of a reload.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReloadRow {
    /// Counts the reloads since the start: `hb-user reload` waits for it to move.
    pub count: u64,
    pub unix_ms: u128,
    /// "applied", "unchanged" or "refused".
    pub outcome: String,
    /// The settings that changed (applied), or why it was refused, naming the field.
    pub detail: String,
}

/// What the controller writes on start and on every transition.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct StatusFile {
    pub pid: u32,
    pub node_id: u32,
    pub priority: u8,
    /// This run's session id (hex): random, drawn at start.
    pub session: String,
    /// "INIT", "BACKUP", "MASTER" or "FAULT".
    #[serde(with = "state_name")]
    pub state: NodeState,
    pub since_unix_ms: u128,
    pub ifaces: Vec<String>,
    pub pin_root: PathBuf,
    /// "10.0.0.100/24@eth0"
    pub vips: Vec<VipOn>,
    pub dead_after_ms: u64,
    /// Ping targets (quorum) as of the last write.
    #[serde(default)]
    pub ping: Vec<PingRow>,
    /// When the controller last wrote this file (it does so every second).
    #[serde(default)]
    pub updated_unix_ms: u128,
    /// The maps are pinned (for bpftool); the data plane does not need it.
    #[serde(default)]
    pub pinned: bool,
    /// The exit watch is attached: peers get a death notice if the controller dies.
    #[serde(default)]
    pub death_notice_armed: bool,
    /// Each peer address, the link and the transmit path heartbeats take to it.
    #[serde(default)]
    pub transmit: Vec<String>,
    /// Who times the peers' silence: "sender" (the heartbeat thread, reading
    /// the mapped `seen` arrays) or "controller" (its own timer).
    #[serde(default)]
    pub silence_watch: String,
    /// Another machine sends with our node id (within dead-after): we hold
    /// no VIP while it does.
    #[serde(default)]
    pub id_collision: bool,
    /// MASTER with every VIP on its interface (what heartbeats say).
    #[serde(default)]
    pub holds_vip: bool,
    /// Configured VIPs the kernel does not have on their interfaces.
    #[serde(default)]
    pub vips_missing: Vec<String>,
    /// VIPs added back after they disappeared under us, since the start.
    #[serde(default)]
    pub vip_readds: u64,
    /// Why the node is in its state: the last transition's reason, as the
    /// notify hook got it ("" before the first).
    #[serde(default)]
    pub reason: String,
    /// What the node's decisions saw since the start.
    #[serde(default)]
    pub seen: Seen,
    /// The last reload (SIGHUP or `hb-user reload`) since the start, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadRow>,
    /// Each health check: its verdict, last run and effect on the priority.
    #[serde(default)]
    pub checks: Vec<CheckRow>,
    /// Per link (in `ifaces` order), how this run came to its data plane:
    /// "fresh" (loaded and attached now), "adopted" (a previous run's program
    /// of this build, taken over in place with its state) or "replaced"
    /// (another build's, swapped for this one's in place, state carried).
    #[serde(default)]
    pub origins: Vec<crate::loader::Origin>,
    /// Each VIP group: its own election's standing. The fields above sum
    /// them up: `state` is MASTER while any group is held, `holds_vip` while
    /// any is claimed; `priority` and `reason` are the first group's.
    #[serde(default)]
    pub groups: Vec<GroupRow>,
    /// The witness, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<WitnessRow>,
}

/// One VIP group in the status.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct GroupRow {
    pub name: String,
    /// Its id on the wire (1-8): the same on every node.
    pub id: usize,
    /// The sync group it moves with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<String>,
    #[serde(with = "state_name")]
    pub state: NodeState,
    /// The priority its heartbeats carry (with its checks' weights).
    pub priority: u8,
    /// MASTER with every VIP of the group on its interface.
    pub holds_vip: bool,
    /// The node this one sees holding it (itself included); 0: none.
    pub holder: u32,
    pub vips: Vec<VipOn>,
    #[serde(default)]
    pub vips_missing: Vec<String>,
    pub reason: String,
    /// The checks it tracks, with what each does to it now.
    #[serde(default)]
    pub checks: Vec<CheckRow>,
    /// Put in standby (`hb-user standby`): it holds nothing until `resume`.
    #[serde(default)]
    pub standby: bool,
    /// With a witness: whose the election's key is ("ours", "node N", or
    /// "none": not ours and nobody else's as far as we asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_key: Option<String>,
    /// A takeover waits for the witness key: for this long so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_waiting_ms: Option<u64>,
}

/// The witness (`--witness`), when configured.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WitnessRow {
    /// As the client takes them (http://HOST:PORT).
    pub endpoints: Vec<String>,
    /// Its last request was answered.
    pub reachable: bool,
    pub ttl_ms: u64,
    /// What is left of our lease, as of its last renewal (0: none).
    pub lease_remaining_ms: u64,
    /// What the node does while the witness is unreachable: "keep" (the
    /// holder keeps its VIPs while it hears its peers; nobody takes them
    /// from a silent peer) or "heartbeats".
    pub down: String,
    /// The last failure ("" while it answers).
    #[serde(default)]
    pub error: String,
}

/// Counts of what the node's decisions saw since the start: what its log
/// says line by line, summed.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Seen {
    /// Peers heard (again): the first heartbeat, or one after silence.
    pub peer_up: u64,
    /// Peers found dead by silence (dead-after passed).
    pub peer_silent: u64,
    /// Peers that said they left (a graceful stop).
    pub peer_left: u64,
    /// Peers whose kernel reported their controller dead (a death notice).
    pub peer_gone: u64,
    /// State transitions.
    pub transitions: u64,
    /// Times our own heartbeats stopped for longer than dead-after while we
    /// held the VIPs (the process paused or starved).
    pub lapses: u64,
    /// Gratuitous ARP / unsolicited NA bursts, by cause: "takeover", "peer
    /// rejoined", "conflict", "split brain", "re-added".
    pub announces: std::collections::BTreeMap<String, u64>,
    /// Fencing commands run, and those that failed or timed out.
    pub fences: u64,
    pub fence_failures: u64,
    /// Takeovers that waited for the witness key, and how long the last one
    /// waited (what the witness added to a failover).
    #[serde(default)]
    pub witness_waits: u64,
    #[serde(default)]
    pub witness_wait_ms: u64,
}

/// A session id as the status shows it (16 hex digits; "none" before a
/// handshake): None unless it names one.
pub fn session_id(hex: &str) -> Option<u64> {
    u64::from_str_radix(hex, 16).ok().filter(|&s| s != 0)
}

/// A configured VIP and the interface it goes on: "10.0.0.100/24@eth0" in
/// the status file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(into = "String", try_from = "String")]
pub struct VipOn {
    pub vip: Vip,
    pub iface: String,
}

impl fmt::Display for VipOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.vip, self.iface)
    }
}

impl FromStr for VipOn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (vip, iface) = s
            .split_once('@')
            .ok_or_else(|| format!("expected ADDRESS/PREFIX@IFACE, got {s:?}"))?;
        Ok(Self {
            vip: vip.parse()?,
            iface: iface.to_string(),
        })
    }
}

impl From<VipOn> for String {
    fn from(v: VipOn) -> Self {
        v.to_string()
    }
}

impl TryFrom<String> for VipOn {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// [`NodeState`] as its name ("MASTER"), the spelling peers' rows, hooks and
/// logs use too.
mod state_name {
    use hb_common::NodeState;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    const ALL: [NodeState; 4] = [
        NodeState::Init,
        NodeState::Backup,
        NodeState::Master,
        NodeState::Fault,
    ];

    pub fn serialize<S: Serializer>(s: &NodeState, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<NodeState, D::Error> {
        let name = String::deserialize(de)?;
        ALL.into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| D::Error::custom(format!("unknown node state {name:?}")))
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PingRow {
    pub target: String,
    /// None: never answered.
    pub last_reply_ms_ago: Option<u64>,
    pub reachable: bool,
    /// Echo replies from the target's address that answer none of our
    /// requests (a wrong sequence number or token: forged or stale).
    #[serde(default)]
    pub rejected: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PeerRow {
    pub peer: u32,
    pub link: String,
    /// None: never heard.
    pub last_seen_ms_ago: Option<u64>,
    pub alive: bool,
    /// Its session this data plane adopted (hex; "none" before the handshake).
    pub session: String,
    pub seq: u64,
    pub accepted: u64,
    pub state: String,
    pub priority: u8,
    pub holds_vip: bool,
    pub left: bool,
    /// Its kernel sent a fresh death notice: its controller died (see `gone_*`).
    pub gone: bool,
    /// The last death notice: how long ago (None: never), the session of the
    /// controller it reported dead, and our sequence number it echoed.
    pub gone_ms_ago: Option<u64>,
    pub gone_session: String,
    pub gone_seq: u64,
    /// It sent wire version 1 heartbeats within dead-after: an old hb, which
    /// this node cannot work with (upgrade it).
    pub old_version: bool,
    /// Source address of its last accepted heartbeat (IPv4 or IPv6).
    pub src: String,
}

/// Messages with our own node id from another machine, seen by XDP on one link.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Collision {
    pub link: String,
    pub messages: u64,
    pub last_ms_ago: u64,
    /// The other machine's session (hex).
    pub session: String,
}

/// ARP claims for a VIP from foreign MACs, seen by XDP on one link.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct VipConflicts {
    pub link: String,
    pub vip: String,
    pub conflicts: u64,
    /// None: never.
    pub last_ms_ago: Option<u64>,
    pub last_mac: String,
    /// The MACs XDP remembers claiming it, most recently seen first.
    pub claimants: Vec<ClaimantRow>,
}

/// `aa:bb:cc:dd:ee:ff`.
fn mac_text(mac: &[u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// One MAC that claimed a VIP.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ClaimantRow {
    pub mac: String,
    /// ARP claims since it got its slot.
    pub count: u64,
    /// None: not known (a record carried over from an older build).
    pub last_ms_ago: Option<u64>,
    /// It claimed more than once: kept before one-shot MACs (a flood of random
    /// MACs does not push it out).
    pub repeat: bool,
    /// The peer whose heartbeats come from this MAC, if any.
    pub peer: Option<u32>,
}

/// The data plane on one link: does it outlive the controller, may it answer
/// for the VIPs.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct LinkPlane {
    pub link: String,
    /// hb's program is attached to the interface: it records heartbeats and
    /// enforces the lease with or without a controller.
    pub attached: bool,
    /// Time left on the holder lease; None: no valid lease (XDP self-fences the VIPs).
    pub lease_ms_left: Option<u64>,
    /// The controller runs with its exit watch: peers get a death notice if it dies.
    pub death_notice_armed: bool,
    /// The registered controller's pid; None: none (a graceful stop unregisters).
    pub owner_pid: Option<u32>,
    /// Since when the exit watch saw that controller die (None: it did not):
    /// the data plane answers heartbeats with death notices meanwhile.
    pub owner_dead_ms_ago: Option<u64>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct LinkCounters {
    pub link: String,
    pub counters: std::collections::BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Report {
    /// None when no controller runs (no status file).
    pub node: Option<StatusFile>,
    pub running: bool,
    pub peers: Vec<PeerRow>,
    pub counters: Vec<LinkCounters>,
    pub vip_conflicts: Vec<VipConflicts>,
    pub planes: Vec<LinkPlane>,
    /// Messages from our own node id in another session, per link: another
    /// machine was given our id.
    pub id_collisions: Vec<Collision>,
    /// "this node", "peer N", or "none".
    pub vip_holder: String,
    /// Set when there is nothing to show: no status file and nothing pinned
    /// (the node never started, or its start failed and cleaned up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_running: Option<String>,
}

fn monotonic_ns() -> u64 {
    crate::clock::monotonic().as_nanos() as u64
}

pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Gathers the report. `iface` narrows it to one link.
pub fn gather(state_dir: &Path, pin_root: &Path, iface: Option<&str>) -> Result<Report> {
    let node: Option<StatusFile> = match std::fs::read(state_dir.join(STATUS_FILE)) {
        Ok(b) => Some(serde_json::from_slice(&b).context("reading the status file")?),
        Err(_) => None,
    };
    let running = node.as_ref().is_some_and(|n| pid_alive(n.pid));
    let pin_root = node
        .as_ref()
        .map(|n| n.pin_root.clone())
        .unwrap_or_else(|| pin_root.to_path_buf());
    let dead_after_ns = node.as_ref().map(|n| n.dead_after_ms).unwrap_or(500) * 1_000_000;
    let links: Vec<String> = match iface {
        Some(i) => vec![i.to_string()],
        None => match &node {
            Some(n) => n.ifaces.clone(),
            // No controller ran here: what is pinned, and the interfaces that
            // carry hb's program (a crashed controller without pins).
            None => {
                let mut l: std::collections::BTreeSet<String> = std::fs::read_dir(&pin_root)
                    .map(|d| {
                        d.filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
                            .filter(|l| has_pins(&pin_root.join(l)))
                            .collect()
                    })
                    .unwrap_or_default();
                let ifaces = nix::net::if_::if_nameindex().ok();
                for i in ifaces.iter().flat_map(|i| i.iter()) {
                    let name = i.name().to_string_lossy().into_owned();
                    if matches!(crate::loader::Found::on(i.index(), &name), Ok(Some(_))) {
                        l.insert(name);
                    }
                }
                l.into_iter().collect()
            }
        },
    };
    if node.is_none() && links.is_empty() {
        return Ok(Report {
            node,
            running,
            peers: Vec::new(),
            counters: Vec::new(),
            vip_conflicts: Vec::new(),
            planes: Vec::new(),
            id_collisions: Vec::new(),
            vip_holder: "none".into(),
            not_running: Some(format!(
                "hb-user is not running on this node: no status file in {} and nothing pinned under {}",
                state_dir.display(),
                pin_root.display()
            )),
        });
    }
    let now = monotonic_ns();
    let mut peers = Vec::new();
    let mut counters = Vec::new();
    let mut vip_conflicts = Vec::new();
    let mut planes = Vec::new();
    let mut id_collisions = Vec::new();
    let mut sampled = Vec::new();
    for link in &links {
        let Some(view) = View::open(&pin_root.join(link), link)? else {
            continue;
        };
        let until = view.lease_ns();
        let owner = view.owner();
        let dead = owner.dead_ns != 0;
        planes.push(LinkPlane {
            link: link.clone(),
            attached: view.attached,
            lease_ms_left: (until > now).then(|| (until - now) / 1_000_000),
            death_notice_armed: running
                && !dead
                && node.as_ref().is_some_and(|n| n.death_notice_armed),
            owner_pid: (owner.pid != 0).then_some(owner.pid),
            owner_dead_ms_ago: dead.then(|| now.saturating_sub(owner.dead_ns) / 1_000_000),
        });
        let (entries, stats) = (view.peers()?, view.stats()?);
        for (vip, w) in view.vips()? {
            let mut claimants: Vec<_> = w.claimants.iter().filter(|c| c.count != 0).collect();
            claimants.sort_by_key(|c| std::cmp::Reverse(c.last_ns));
            let ago = |ns: u64| (ns != 0).then(|| now.saturating_sub(ns) / 1_000_000);
            vip_conflicts.push(VipConflicts {
                link: link.clone(),
                vip: vip.to_string(),
                conflicts: w.conflicts,
                last_ms_ago: ago(w.last_ns),
                last_mac: mac_text(&w.last_mac),
                claimants: claimants
                    .into_iter()
                    .map(|c| ClaimantRow {
                        mac: mac_text(&c.mac),
                        count: c.count,
                        last_ms_ago: ago(c.last_ns),
                        repeat: c.repeat != 0,
                        peer: entries
                            .iter()
                            .find(|(_, p)| p.slot != u32::MAX && p.src_mac == c.mac)
                            .map(|(id, _)| *id),
                    })
                    .collect(),
            });
        }
        for (id, p) in entries {
            // Our own entry (no slot) records another machine with our id.
            if p.slot == u32::MAX {
                if p.last_seen_ns != 0 {
                    id_collisions.push(Collision {
                        link: link.clone(),
                        messages: p.accepted,
                        last_ms_ago: now.saturating_sub(p.last_seen_ns) / 1_000_000,
                        session: format!("{:016x}", p.session),
                    });
                }
                continue;
            }
            peers.push(row(id, link, &p, now, dead_after_ns));
            sampled.push(crate::node::Sample {
                session: p.session,
                adopted: (p.adopted_ns != 0).then(|| Duration::from_nanos(p.adopted_ns)),
                seq: p.seq,
                ..Default::default()
            });
        }
        counters.push(LinkCounters {
            link: link.clone(),
            counters: Stats::FIELDS
                .into_iter()
                .map(String::from)
                .zip(stats.as_array())
                .collect(),
        });
    }
    // With several links, only the entries that speak for a peer now count
    // (the controller's rule, `node::current`): a lagging link replaying a
    // capture does not make a dead peer look alive here either.
    let mut by_peer: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, r) in peers.iter().enumerate() {
        by_peer.entry(r.peer).or_default().push(i);
    }
    for rows in by_peer.values() {
        let samples: Vec<crate::node::Sample> = rows.iter().map(|&i| sampled[i]).collect();
        for (&i, cur) in rows.iter().zip(crate::node::current(&samples)) {
            peers[i].alive &= cur;
        }
    }
    let holder = if running && node.as_ref().is_some_and(|n| n.state == NodeState::Master) {
        "this node".to_string()
    } else {
        peers
            .iter()
            .find(|p| p.alive && p.holds_vip)
            .map(|p| format!("peer {}", p.peer))
            .unwrap_or_else(|| "none".into())
    };
    Ok(Report {
        node,
        running,
        peers,
        counters,
        vip_conflicts,
        planes,
        id_collisions,
        vip_holder: holder,
        not_running: None,
    })
}

/// Whether `dir` holds a data plane's maps.
fn has_pins(dir: &Path) -> bool {
    dir.join("peers").exists()
}

fn row(id: u32, link: &str, p: &PeerState, now: u64, dead_after_ns: u64) -> PeerRow {
    let ago = (p.last_seen_ns != 0).then(|| now.saturating_sub(p.last_seen_ns));
    let head = Head::parse_unauthenticated(&p.message).ok();
    let left = head.is_some_and(|h| h.msg_type == MsgType::Leave);
    let gone = p.gone();
    let hex = |s: u64| {
        if s == 0 {
            "none".to_string()
        } else {
            format!("{s:016x}")
        }
    };
    PeerRow {
        peer: id,
        link: link.to_string(),
        last_seen_ms_ago: ago.map(|ns| ns / 1_000_000),
        alive: ago.is_some_and(|ns| ns <= dead_after_ns) && !left && !gone,
        session: hex(p.session),
        seq: p.seq,
        accepted: p.accepted,
        state: head
            .map(|h| {
                NodeState::from_u8(h.state)
                    .map(|s| s.name().to_string())
                    .unwrap_or_else(|| format!("?{}", h.state))
            })
            .unwrap_or_else(|| "-".into()),
        priority: hb_common::wire2::Body::parse(&p.message).groups[0].priority,
        holds_vip: head.is_some_and(|h| h.flags & FLAG_HOLDS != 0),
        left,
        gone,
        gone_ms_ago: (p.gone_ns != 0).then(|| now.saturating_sub(p.gone_ns) / 1_000_000),
        gone_session: hex(p.gone_session),
        gone_seq: p.gone_seq,
        old_version: p.old_version_ns != 0 && now.saturating_sub(p.old_version_ns) <= dead_after_ns,
        src: if p.src_ipv6 != [0; 16] {
            std::net::Ipv6Addr::from(p.src_ipv6).to_string()
        } else {
            std::net::Ipv4Addr::from(p.src_ipv4).to_string()
        },
    }
}

/// The human-readable table.
pub fn render(r: &Report) -> String {
    if let Some(why) = &r.not_running {
        return format!("{why}\n");
    }
    let mut out = String::new();
    match &r.node {
        Some(n) => {
            let since = Duration::from_millis(
                (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis()
                    .saturating_sub(n.since_unix_ms)) as u64,
            );
            out += &format!(
                "node {} (priority {}, session {}): {}{} on {}\n",
                n.node_id,
                n.priority,
                n.session,
                n.state.name(),
                if n.since_unix_ms > 0 {
                    format!(" for {:.1} s", since.as_secs_f64())
                } else {
                    String::new()
                },
                n.ifaces.join(", ")
            );
            if !n.reason.is_empty() {
                out += &format!("  why: {}\n", n.reason);
            }
            if !r.running {
                out += &format!(
                    "  controller (pid {}) is not running: this is the last state it wrote\n",
                    n.pid
                );
            }
            for p in &n.ping {
                let mut last = p
                    .last_reply_ms_ago
                    .map(|ms| format!("last reply {ms} ms ago"))
                    .unwrap_or_else(|| "never answered".into());
                if p.rejected > 0 {
                    last += &format!(", {} forged or stale replies rejected", p.rejected);
                }
                out += &format!(
                    "ping {}: {} ({last})\n",
                    p.target,
                    if p.reachable {
                        "reachable"
                    } else {
                        "UNREACHABLE"
                    }
                );
            }
            out += &format!(
                "VIPs: {}   holder: {}\n",
                if n.vips.is_empty() {
                    "none".into()
                } else {
                    n.vips
                        .iter()
                        .map(VipOn::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                r.vip_holder
            );
            if n.state == NodeState::Master && !n.vips_missing.is_empty() {
                out += &format!(
                    "  not on their interface (the kernel's address state): {}\n",
                    n.vips_missing.join(", ")
                );
            }
            if n.vip_readds > 0 {
                out += &format!(
                    "  VIPs added back after they disappeared: {} time(s)\n",
                    n.vip_readds
                );
            }
            if let Some(w) = &n.witness {
                out += &format!(
                    "witness {}: {} (lease {} ms left of {} ms; while unreachable: {})\n",
                    w.endpoints.join(","),
                    if w.reachable {
                        "reachable"
                    } else {
                        "UNREACHABLE"
                    },
                    w.lease_remaining_ms,
                    w.ttl_ms,
                    w.down
                );
                if !w.error.is_empty() {
                    out += &format!("  last error: {}\n", w.error);
                }
                for g in &n.groups {
                    let key = g.witness_key.as_deref().unwrap_or("none");
                    let wait = g.witness_waiting_ms.map_or(String::new(), |ms| {
                        format!(", a takeover waits for it ({ms} ms so far)")
                    });
                    out += &format!("  key of {}: {key}{wait}\n", g.name);
                }
            }
            for g in n.groups.iter().filter(|g| g.standby) {
                out += &format!(
                    "  group {} is in standby: hb-user resume {} ends it\n",
                    g.name, g.name
                );
            }
            // One group is the node itself, said above.
            if n.groups.len() > 1 {
                out += "\nGROUP            ID  STATE    PRIO  HOLDER  VIPS\n";
                for g in &n.groups {
                    let holder = match g.holder {
                        0 => "none".to_string(),
                        h if h == n.node_id => "this".to_string(),
                        h => format!("peer {h}"),
                    };
                    let name = match &g.sync {
                        Some(s) => format!("{} ({s})", g.name),
                        None => g.name.clone(),
                    };
                    out += &format!(
                        "{:<16} {:<3} {:<8} {:<5} {:<7} {}\n",
                        name,
                        g.id,
                        g.state.name(),
                        g.priority,
                        holder,
                        g.vips
                            .iter()
                            .map(VipOn::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    if !g.reason.is_empty() {
                        out += &format!("  why: {}\n", g.reason);
                    }
                }
            }
        }
        None => {
            out += &format!(
                "no controller status (not running?)   VIP holder: {}\n",
                r.vip_holder
            )
        }
    }
    out += "\nPEER  LINK        LAST SEEN     SESSION/SEQ                STATE    PRIO  VIP  ACCEPTED\n";
    for p in &r.peers {
        let seen = match (p.last_seen_ms_ago, p.left, p.gone) {
            (_, _, true) => "GONE".to_string(),
            (None, _, _) => "never".to_string(),
            (Some(ms), true, _) => format!("{ms} ms (left)"),
            (Some(ms), false, _) => format!("{ms} ms{}", if p.alive { "" } else { " DEAD" }),
        };
        out += &format!(
            "{:<5} {:<11} {:<13} {:<26} {:<8} {:<5} {:<4} {}\n",
            p.peer,
            p.link,
            seen,
            format!("{}/{}", p.session, p.seq),
            p.state,
            p.priority,
            if p.holds_vip { "yes" } else { "-" },
            p.accepted
        );
    }
    for p in r.peers.iter().filter(|p| p.gone) {
        out += &format!(
            "peer {} on {}: controller gone (death notice from its kernel {} ms ago: session {} died)\n",
            p.peer,
            p.link,
            p.gone_ms_ago.unwrap_or(0),
            p.gone_session
        );
    }
    for p in r.peers.iter().filter(|p| p.old_version) {
        out += &format!(
            "peer {} on {}: speaks wire version 1 (an old hb): upgrade it; this node takes no VIP meanwhile\n",
            p.peer, p.link
        );
    }
    for c in &r.id_collisions {
        out += &format!(
            "ERROR on {}: another machine sends with this node's id (session {}, {} messages, last {} ms ago): two nodes were given one id\n",
            c.link, c.session, c.messages, c.last_ms_ago
        );
    }
    out += "\n";
    for p in &r.planes {
        let lease = match p.lease_ms_left {
            Some(ms) => format!("lease held, expires in {ms} ms"),
            None => "no lease: XDP drops ARP, neighbour solicitations and traffic for the VIPs (self-fence)".into(),
        };
        let notice = match (p.owner_dead_ms_ago, p.death_notice_armed) {
            (Some(ms), _) => format!(
                "controller (pid {}) died {ms} ms ago: answering heartbeats with death notices",
                p.owner_pid.unwrap_or(0)
            ),
            (None, true) => "death notice armed".into(),
            (None, false) => "no death notice (no controller with an exit watch)".into(),
        };
        out += &format!(
            "data plane on {}: {}; {lease}; {notice}\n",
            p.link,
            if p.attached {
                "attached (outlives the controller)"
            } else {
                "NOT attached"
            }
        );
    }
    if let Some(n) = &r.node {
        for t in &n.transmit {
            out += &format!("heartbeats to {t}\n");
        }
    }
    for v in &r.vip_conflicts {
        if let Some(ago) = v.last_ms_ago {
            out += &format!(
                "\nVIP {} on {}: {} ARP claim(s) from foreign MACs, last from {} {ago} ms ago\n",
                v.vip, v.link, v.conflicts, v.last_mac
            );
            for c in &v.claimants {
                out += &format!("  {}: {} claim(s)", c.mac, c.count);
                if let Some(ago) = c.last_ms_ago {
                    out += &format!(", last {ago} ms ago");
                }
                if c.repeat {
                    out += ", repeat claimant";
                }
                if let Some(id) = c.peer {
                    out += &format!(", peer {id}");
                }
                out += "\n";
            }
        }
    }
    for c in &r.counters {
        out += &format!("\ncounters on {}:", c.link);
        for k in Stats::FIELDS {
            out += &format!(" {k}={}", c.counters.get(k).copied().unwrap_or(0));
        }
        out += "\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spellings users and scripts read stay what they were when the
    /// fields were strings.
    #[test]
    fn state_and_vips_keep_their_json_spelling() {
        let json = r#"{"pid":1,"node_id":2,"priority":100,"session":"00000000000000ab",
            "state":"MASTER","since_unix_ms":0,"ifaces":["eth0"],"pin_root":"/sys/fs/bpf/hb",
            "vips":["10.0.0.100/24@eth0","fd00::100/64@eth1"],"dead_after_ms":500}"#;
        let s: StatusFile = serde_json::from_str(json).unwrap();
        assert_eq!(s.state, NodeState::Master);
        assert_eq!(
            s.vips[1],
            VipOn {
                vip: Vip {
                    addr: "fd00::100".parse().unwrap(),
                    prefix: 64
                },
                iface: "eth1".into()
            }
        );
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["state"], "MASTER");
        assert_eq!(
            back["vips"],
            serde_json::json!(["10.0.0.100/24@eth0", "fd00::100/64@eth1"])
        );
        for state in ["INIT", "BACKUP", "FAULT"] {
            let j = json.replace("MASTER", state);
            let s: StatusFile = serde_json::from_str(&j).unwrap();
            assert_eq!(s.state.name(), state);
        }
        assert!(serde_json::from_str::<StatusFile>(&json.replace("MASTER", "BOSS")).is_err());
        assert!(serde_json::from_str::<StatusFile>(&json.replace("@eth0", "")).is_err());
    }
}
