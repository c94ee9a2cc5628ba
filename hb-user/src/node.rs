//! The controller's decisions, apart from its I/O: typed inputs in, typed actions
//! out, time passed in. `controller.rs` turns what it reads (peer maps, link
//! events, ARP conflict counts, fencing outcomes) into [`Input`]s and performs
//! the [`Action`]s; everything it used to decide inline lives here: merging the
//! links into one view per peer, the election (`election.rs`), what a
//! transition does and in which order, the holder lease policy, rival holders
//! after a healed partition, and the conflict re-announcement rate limit.
//!
//! Tested from data (tests/cases/*.jsonl, see `cases.rs`) and by a property test.

use crate::{
    beat::Advert,
    election::{Event, KeyView, Machine, Params, PeerView},
};
use hb_common::NodeState;
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

/// What one link's data plane last recorded of one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// CLOCK_MONOTONIC of its last accepted message; None: never heard here.
    #[serde(default, with = "opt_ms")]
    pub last_seen: Option<Duration>,
    #[serde(default)]
    pub left: bool,
    /// Its session that this link's data plane adopted (0: none), when, and
    /// the highest sequence number accepted in it.
    #[serde(default)]
    pub session: u64,
    #[serde(default, with = "opt_ms")]
    pub adopted: Option<Duration>,
    #[serde(default)]
    pub seq: u64,
    /// The session a fresh death notice from its kernel named, if one came.
    #[serde(default)]
    pub gone_session: Option<u64>,
    #[serde(default)]
    pub priority: u8,
    #[serde(default = "init_state", with = "state_name")]
    pub state: NodeState,
    #[serde(default)]
    pub holds_vip: bool,
    #[serde(default = "yes")]
    pub reaches_ping: bool,
    /// The node it sees holding the VIPs (itself included), if any.
    #[serde(default)]
    pub holder: Option<u32>,
    /// CLOCK_MONOTONIC of its last authenticated wire version 1 heartbeat:
    /// it runs an old hb.
    #[serde(default, with = "opt_ms")]
    pub old_version: Option<Duration>,
    /// It waits out its preempt_delay (see [`PeerView::waiting`]).
    #[serde(default)]
    pub waiting: bool,
}

impl Default for Sample {
    /// Never heard.
    fn default() -> Self {
        Self {
            last_seen: None,
            left: false,
            session: 0,
            adopted: None,
            seq: 0,
            gone_session: None,
            priority: 0,
            state: NodeState::Init,
            holds_vip: false,
            reaches_ping: true,
            holder: None,
            old_version: None,
            waiting: false,
        }
    }
}

fn init_state() -> NodeState {
    NodeState::Init
}

fn yes() -> bool {
    true
}

/// An ARP claim for one of our VIPs from a MAC other than ours, newly counted by
/// XDP on one link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub link: usize,
    pub vip: String,
    pub mac: String,
    /// New claims since the last read.
    pub count: u64,
    /// The claiming MAC is a peer's (the source of its heartbeats).
    pub peer: Option<u32>,
}

/// Everything that reaches the core.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// The data planes' view of every peer, per link (`peers[id] = [sample per
    /// link]`), whether any of our links is up and whether we reach a ping target.
    Observe {
        #[serde(with = "ms")]
        now: Duration,
        link_up: bool,
        reach: bool,
        peers: BTreeMap<u32, Vec<Sample>>,
        /// When a message from our own node id in another session last came
        /// (another machine was given our id), on any link.
        #[serde(default, with = "opt_ms", skip_serializing_if = "Option::is_none")]
        collision: Option<Duration>,
    },
    /// The sender found our heartbeats had stopped for `silent` (more than
    /// dead-after) while we claimed the VIPs: the process was paused or starved.
    /// With the data planes' view of the peers at that moment.
    Lapsed {
        #[serde(with = "ms")]
        now: Duration,
        #[serde(with = "ms")]
        silent: Duration,
        peers: BTreeMap<u32, Vec<Sample>>,
    },
    /// ARP claims counted since the last read.
    Claims {
        #[serde(with = "ms")]
        now: Duration,
        claims: Vec<Claim>,
    },
    /// The kernel's address events changed which VIPs are on their
    /// interfaces: `missing` are the ones that are not (empty: all there).
    Vips {
        #[serde(with = "ms")]
        now: Duration,
        missing: Vec<String>,
    },
    /// Adding the VIPs failed (after [`Action::TakeVips`]).
    TakeFailed {
        #[serde(with = "ms")]
        now: Duration,
        error: String,
    },
    /// A health check's verdict changed (or its first one came).
    Check {
        name: String,
        healthy: bool,
        /// A new weight for the check (track files), else it keeps its own.
        #[serde(default)]
        weight: Option<i32>,
    },
    /// A reload changed the election's VIPs or tracked checks (name,
    /// weight): verdicts of the checks it still tracks are kept, and the
    /// next observation elects with the new weights.
    Resources {
        has_vips: bool,
        vip_list: String,
        checks: Vec<(String, i32)>,
    },
    /// The operator put the node in standby (`on`) or resumed it; the next
    /// observation releases or elects.
    Standby { on: bool },
    /// A reload changed the election's settings: the next observation
    /// elects with them.
    Settings {
        priority: u8,
        preempt: bool,
        fencing: bool,
    },
    /// A reload changed the configured peers: the next observation counts
    /// these (a new one unheard, a removed one forgotten).
    Peers { peers: Vec<u32> },
    /// The fencing command for `peers` finished.
    FenceDone {
        #[serde(with = "ms")]
        now: Duration,
        peers: Vec<u32>,
        ok: bool,
    },
    /// What the witness says of the election's key now (an answer to
    /// [`Action::AcquireKey`], a lease renewed or lost, the witness lost).
    Witness {
        #[serde(flatten)]
        key: KeyView,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// What the core asks the executor to do, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Log {
        level: Level,
        msg: String,
    },
    /// Set the holder lease in every link's data plane until this time
    /// (CLOCK_MONOTONIC); zero withdraws it.
    SetLease {
        #[serde(with = "ms")]
        until: Duration,
    },
    /// Tell the sender thread what heartbeats say now.
    Advertise {
        state: String,
        holds_vip: bool,
        reaches_ping: bool,
        lease: bool,
    },
    /// Heartbeats carry this priority from now on.
    Priority {
        priority: u8,
    },
    /// Add every VIP (netlink).
    TakeVips,
    /// Stop announcing and remove every VIP.
    ReleaseVips,
    /// A gratuitous ARP / unsolicited NA burst for every VIP.
    Announce {
        why: String,
    },
    /// Run the fencing command for these silent peers; answer with
    /// [`Input::FenceDone`].
    Fence {
        peers: Vec<u32>,
    },
    /// Ask the witness for the election's key (free, ours, or held for one
    /// of `gone`, peers that left or died); answer with [`Input::Witness`].
    AcquireKey {
        gone: Vec<u32>,
    },
    /// Give the key up (delete it if it is ours): we no longer hold.
    ReleaseKey,
    /// A lower-ranked peer also holds what we hold (a healed partition):
    /// run `notify_master_rx_lower_pri` (keepalived's, e.g. to point cloud
    /// routes back here).
    RivalHolder {
        peer: u32,
    },
    /// Run the notify hook for a transition.
    Notify {
        from: String,
        to: String,
        reason: String,
    },
    WriteStatus,
}

impl Action {
    /// The advert this action carries, for the sender thread.
    pub fn advert(&self) -> Option<Advert> {
        match self {
            Action::Advertise {
                state,
                holds_vip,
                reaches_ping,
                lease,
            } => Some(Advert {
                state: state_from_name(state),
                holds_vip: *holds_vip,
                reaches_ping: *reaches_ping,
                lease: *lease,
                leaving: false,
            }),
            _ => None,
        }
    }
}

/// The core's settings beyond the election's.
#[derive(Clone, Debug)]
pub struct NodeParams {
    pub machine: Params,
    /// At least one VIP is configured (without, hb is a failure detector).
    pub has_vips: bool,
    /// Interface names, by link index, for log lines.
    pub links: Vec<String>,
    /// How the VIPs are listed in log lines ("10.0.0.100/24 on eth0").
    pub vip_list: String,
    /// The data plane we adopted still held a valid lease: a previous run held
    /// the VIPs, and we keep answering for them until our first decision.
    pub inherited_lease: bool,
    /// Health checks by name, with their weight (checks.rs).
    pub checks: Vec<(String, i32)>,
}

pub struct Node {
    p: NodeParams,
    /// Per check: its weight and verdict (None before the first, which counts
    /// as failing: a service not yet seen working is not one to hold VIPs for).
    checks: BTreeMap<String, (i32, Option<bool>)>,
    /// The priority heartbeats carry: the configured one with the checks' weights.
    priority: u8,
    machine: Machine,
    inherited: bool,
    /// (peer, link index) -> heard within dead-after on that link.
    link_alive: BTreeMap<(u32, usize), bool>,
    /// Lower-ranked peers seen claiming the VIP while we hold it (a healed
    /// partition), so that each episode gets one fresh announcement.
    rival_holders: BTreeSet<u32>,
    /// Last re-announcement caused by a conflict: two holders that hear each
    /// other's ARP but not each other's heartbeats must not answer each burst
    /// with a burst.
    conflict_announced: Option<Duration>,
    reach: bool,
    /// When the earliest peer (on any link) heard within dead-after at the last
    /// observation falls silent, if no heartbeat comes first.
    silence_at: Option<Duration>,
    /// The (link index, peer) entries heard within dead-after at the last
    /// observation: those whose silence is a deadline.
    live: Vec<(usize, u32)>,
    /// While another machine uses our id: when that ends without news.
    collision_until: Option<Duration>,
    /// While a peer speaks wire version 1: when that ends without news.
    old_version_until: Option<Duration>,
    /// See [`Node::view`].
    view: (u32, u64),
    /// Peers heard speaking wire version 1, as of the last observation.
    old_peers: BTreeSet<u32>,
    /// VIPs the kernel does not have on their interfaces (its address events).
    missing: Vec<String>,
    /// When we last re-added VIPs that disappeared under us.
    readded: Option<Duration>,
    /// VIPs re-added after they disappeared, since the start.
    readds: u64,
    /// VIP failures since the start: each doubles the time we claim nothing.
    vip_failures: u32,
    /// Per (link, VIP): foreign claims not logged yet (bounded by the config).
    conflict_log: BTreeMap<(usize, String), ConflictLog>,
    /// What the decisions saw since the start, for the status.
    seen: crate::status::Seen,
    /// Why the last transition happened ("" before the first).
    reason: String,
    /// Its kind ([`Reason::kind`]), and for a takeover from a silent peer
    /// how long it had been silent.
    reason_kind: &'static str,
    silence: Option<Duration>,
    reason_peer: Option<u32>,
}

/// What one check does to the node now.
enum Effect {
    Fault,
    Add(i32),
    None,
}

/// keepalived's rules: a positive weight counts while the check passes, a
/// negative one while it fails (no verdict yet counts as failing), and a
/// failing check of weight 0 is FAULT.
fn effect(weight: i32, healthy: Option<bool>) -> Effect {
    let failing = healthy != Some(true);
    match weight {
        0 if failing => Effect::Fault,
        w if (w > 0 && !failing) || (w < 0 && failing) => Effect::Add(w),
        _ => Effect::None,
    }
}

/// A VIP that disappears again within this long after we re-added it is
/// being fought over (a network manager removing it): we stop claiming it.
const READD_QUIET: Duration = Duration::from_secs(1);

/// Re-announcements for ARP conflicts: at most one per this period.
const CONFLICT_QUIET: Duration = Duration::from_secs(1);

impl Node {
    pub fn new(p: NodeParams, now: Duration) -> Self {
        let mut n = Self {
            checks: p
                .checks
                .iter()
                .map(|(c, w)| (c.clone(), (*w, None)))
                .collect(),
            priority: p.machine.priority,
            machine: Machine::new(p.machine.clone(), now),
            inherited: p.inherited_lease,
            link_alive: BTreeMap::new(),
            rival_holders: BTreeSet::new(),
            conflict_announced: None,
            reach: !p.machine.ping_quorum,
            silence_at: None,
            live: Vec::new(),
            collision_until: None,
            old_version_until: None,
            view: (0, 0),
            old_peers: BTreeSet::new(),
            missing: Vec::new(),
            readded: None,
            readds: 0,
            vip_failures: 0,
            conflict_log: BTreeMap::new(),
            seen: Default::default(),
            reason: String::new(),
            reason_kind: "",
            silence: None,
            reason_peer: None,
            p,
        };
        n.weigh(&mut Vec::new());
        n
    }

    /// The last transition's reason kind, the silence a takeover followed
    /// (see [`crate::election::Reason::silence`]) and the peer it is about.
    pub fn last_reason(&self) -> (&'static str, Option<Duration>, Option<u32>) {
        (self.reason_kind, self.silence, self.reason_peer)
    }

    /// The priority heartbeats carry now (with the checks' weights).
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// Each check's verdict and what it does now: "+20", "-20", "FAULT" or "".
    pub fn checks(&self) -> Vec<(String, Option<bool>, String)> {
        self.checks
            .iter()
            .map(|(name, &(w, h))| {
                let effect = match effect(w, h) {
                    Effect::Fault => "FAULT".to_string(),
                    Effect::Add(w) => format!("{w:+}"),
                    Effect::None => String::new(),
                };
                (name.clone(), h, effect)
            })
            .collect()
    }

    /// Applies the checks to the configured priority ([`effect`]); the next
    /// step elects with the result.
    fn weigh(&mut self, out: &mut Vec<Action>) {
        let mut p = i32::from(self.p.machine.priority);
        let mut fault = None;
        for (name, &(w, h)) in &self.checks {
            match effect(w, h) {
                Effect::Fault => {
                    fault.get_or_insert_with(|| name.clone());
                }
                Effect::Add(w) => p += w,
                Effect::None => {}
            }
        }
        let p = p.clamp(0, 255) as u8;
        let m = &self.p.machine;
        self.machine.set_settings(p, m.preempt, m.fencing);
        self.machine.set_check_fault(fault);
        if p != self.priority {
            self.priority = p;
            out.push(Action::Priority { priority: p });
        }
    }

    /// Peer events, transitions, announcements and fencing since the start.
    pub fn seen(&self) -> &crate::status::Seen {
        &self.seen
    }

    /// Why the node is in its state: the last transition's reason ("" before
    /// the first), or what a takeover waits for.
    pub fn reason(&self) -> String {
        if self.machine.key_wait().is_some() {
            let k = self.machine.key();
            let why = crate::election::Reason::NoKey {
                held_by: k.held_by,
                reachable: k.reachable,
            };
            return format!("{why}: taking over waits for it");
        }
        self.reason.clone()
    }

    /// The (link index, peer) entries whose silence [`Node::next_deadline`]
    /// waits for. An executor that has the sender thread watch these (it wakes
    /// on their silence with its own clock) sleeps until [`Node::next_timer`].
    pub fn live(&self) -> &[(usize, u32)] {
        &self.live
    }

    /// [`Node::next_deadline`] without the peers' silence: the end of INIT, a
    /// fencing retry.
    pub fn next_timer(&self) -> Option<Duration> {
        let end = |t: Option<Duration>| t.map(|t| t + Duration::from_micros(1));
        self.machine
            .next_deadline()
            .into_iter()
            .chain(end(self.collision_until))
            .chain(end(self.old_version_until))
            .min()
    }

    /// Whether we reached a ping target at the last observation.
    pub fn reach(&self) -> bool {
        self.reach
    }

    /// The earliest time at which the core could decide differently without
    /// new input: a live peer (or one link of one) falling silent, the end of
    /// INIT, a fencing retry. The executor sleeps until then or until news
    /// arrives (a data-plane event, a link change, a fence result), instead of
    /// polling. Just past dead-after: silence must exceed it.
    pub fn next_deadline(&self) -> Option<Duration> {
        let silence = self.silence_at.map(|t| t + Duration::from_micros(1));
        silence.into_iter().chain(self.next_timer()).min()
    }

    pub fn state(&self) -> NodeState {
        self.machine.state()
    }

    /// Another machine sends with our node id (as of the last observation).
    pub fn collision(&self) -> bool {
        self.machine.collision()
    }

    pub fn holds_vip(&self) -> bool {
        self.machine.state() == NodeState::Master
    }

    /// What the witness last said of our key.
    pub fn witness_key(&self) -> KeyView {
        self.machine.key()
    }

    /// Since when a takeover waits for the witness key, if it does.
    pub fn key_wait(&self) -> Option<Duration> {
        self.machine.key_wait()
    }

    /// In standby (`hb-user standby`).
    pub fn standby(&self) -> bool {
        self.machine.standby()
    }

    /// We wait out our preempt_delay: heartbeats say so.
    pub fn waiting(&self) -> bool {
        self.machine.waiting()
    }

    /// We are MASTER and the kernel has every VIP on its interface: what our
    /// heartbeats say about holding.
    pub fn claims_vip(&self) -> bool {
        self.holds_vip() && self.missing.is_empty()
    }

    /// VIPs re-added after they disappeared under us.
    pub fn readds(&self) -> u64 {
        self.readds
    }

    /// The advert the node starts with.
    pub fn advert(&self) -> Action {
        let holding = self.holds_vip() && self.p.has_vips;
        Action::Advertise {
            state: self.state().name().into(),
            holds_vip: self.claims_vip(),
            reaches_ping: self.reach,
            lease: holding || self.inherited,
        }
    }

    /// The links go by new names (log lines and status only: no decision).
    pub fn renamed(&mut self, links: Vec<String>, vip_list: String) {
        self.p.links = links;
        self.p.vip_list = vip_list;
    }

    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Observe {
                now,
                link_up,
                reach,
                peers,
                collision,
            } => self.observe(now, link_up, reach, &peers, collision, &mut out),
            Input::Claims { now, claims } => self.claims(now, &claims, &mut out),
            Input::Lapsed { now, silent, peers } => self.lapsed(now, silent, &peers, &mut out),
            Input::Vips { now, missing } => self.vips(now, missing, &mut out),
            Input::TakeFailed { now, error } => {
                self.vip_failure(now, &format!("cannot add {error}"), &mut out)
            }
            Input::Check {
                name,
                healthy,
                weight,
            } => {
                if let Some(c) = self.checks.get_mut(&name) {
                    c.1 = Some(healthy);
                    c.0 = weight.unwrap_or(c.0);
                    let verdict = if healthy { "passes" } else { "fails" };
                    let weight = weight.map_or(String::new(), |w| format!(" (weight {w})"));
                    info(&mut out, format!("check {name} {verdict}{weight}"));
                    self.weigh(&mut out);
                    out.push(Action::WriteStatus);
                }
            }
            Input::Resources {
                has_vips,
                vip_list,
                checks,
            } => {
                self.p.has_vips = has_vips;
                self.p.vip_list = vip_list;
                let old = std::mem::take(&mut self.checks);
                self.checks = (checks.iter())
                    .map(|(n, w)| (n.clone(), (*w, old.get(n).and_then(|c| c.1))))
                    .collect();
                self.p.checks = checks;
                self.weigh(&mut out);
                out.push(Action::WriteStatus);
            }
            Input::Standby { on } => {
                if on != self.machine.standby() {
                    self.machine.set_standby(on);
                    let what = if on {
                        "standby: handing over"
                    } else {
                        "resumed: electing again"
                    };
                    info(&mut out, what.to_string());
                    out.push(Action::WriteStatus);
                }
            }
            Input::Settings {
                priority,
                preempt,
                fencing,
            } => {
                let was = &self.p.machine;
                // A reload that changed another group's settings, not ours.
                if (was.priority, was.preempt, was.fencing) == (priority, preempt, fencing) {
                    return out;
                }
                info(
                    &mut out,
                    format!(
                        "reloaded: priority {} -> {priority}, preempt {} -> {preempt}, fencing {} -> {fencing}",
                        was.priority, was.preempt, was.fencing
                    ),
                );
                self.p.machine.priority = priority;
                self.p.machine.preempt = preempt;
                self.p.machine.fencing = fencing;
                self.weigh(&mut out);
                out.push(Action::WriteStatus);
            }
            Input::Peers { peers } => {
                if peers != self.p.machine.peers {
                    info(
                        &mut out,
                        format!("reloaded: peers {:?} -> {peers:?}", self.p.machine.peers),
                    );
                    self.link_alive.retain(|(id, _), _| peers.contains(id));
                    self.rival_holders.retain(|id| peers.contains(id));
                    self.old_peers.retain(|id| peers.contains(id));
                    self.live.retain(|(_, id)| peers.contains(id));
                    self.machine.set_peers(&peers);
                    self.p.machine.peers = peers;
                    out.push(Action::WriteStatus);
                }
            }
            Input::Witness { key } => {
                if key != self.machine.key() {
                    out.push(Action::WriteStatus);
                }
                self.machine.witness(key);
            }
            Input::FenceDone { now, peers, ok } => {
                let list = peers
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                if ok {
                    info(&mut out, format!("fenced peer(s) {list}: taking over"));
                } else {
                    warn(
                        &mut out,
                        format!("fencing peer(s) {list} failed: staying BACKUP, retrying in 1 s"),
                    );
                    self.seen.fence_failures += 1;
                }
                self.machine.fence_done(&peers, ok, now);
            }
        }
        for a in &out {
            if let Action::Announce { why } = a {
                *self.seen.announces.entry(why.clone()).or_default() += 1;
            }
        }
        out
    }

    fn observe(
        &mut self,
        now: Duration,
        link_up: bool,
        reach: bool,
        peers: &BTreeMap<u32, Vec<Sample>>,
        collision: Option<Duration>,
        out: &mut Vec<Action>,
    ) {
        self.reach = reach;
        self.watch_collision(now, collision, out);
        let views = self.merge(now, peers, out);
        // Peer events are about the state before this step: a peer heard while we
        // were taking over is not one that rejoined while we held the VIPs.
        let held = self.holds_vip();
        for ev in self.machine.step(now, link_up, reach, &views) {
            self.apply(now, held, ev, out);
        }
        self.watch_rivals(&views, out);
        self.see(&views);
        out.push(self.advert());
    }

    /// The kernel's address state changed. A holder whose VIP disappeared
    /// (an admin's `ip addr flush`, a network manager) adds it back and
    /// announces it; if it disappears again right after, we stop claiming.
    fn vips(&mut self, now: Duration, missing: Vec<String>, out: &mut Vec<Action>) {
        self.missing = missing;
        if self.holds_vip() && self.missing.is_empty() {
            self.machine.vips_held();
        }
        if self.holds_vip() && !self.missing.is_empty() {
            let list = self.missing.join(", ");
            if self.readded.is_some_and(|t| now < t + READD_QUIET) {
                let why = format!("{list} disappeared again right after being re-added");
                self.vip_failure(now, &why, out);
                return;
            }
            warn(
                out,
                format!(
                    "{list} disappeared from its interface (removed outside hb): adding it back"
                ),
            );
            self.readded = Some(now);
            self.readds += 1;
            out.push(Action::TakeVips);
            out.push(announce("re-added"));
        }
        out.push(self.advert());
        out.push(Action::WriteStatus);
    }

    /// The VIPs cannot be held here: release and claim nothing for a while
    /// (FAULT), so that a peer serves them; then try again as after a start.
    fn vip_failure(&mut self, now: Duration, why: &str, out: &mut Vec<Action>) {
        // Doubling, up to 32 times: a node that cannot hold the VIPs must not
        // take them back from a peer that can every few seconds.
        let hold = self.p.machine.init_dead.max(READD_QUIET) * (1 << self.vip_failures.min(5));
        self.vip_failures += 1;
        error(
            out,
            format!("{why}: not claiming the VIPs for {} ms", hold.as_millis()),
        );
        let held = self.holds_vip();
        for ev in self.machine.vip_failed(now + hold) {
            self.apply(now, held, ev, out);
        }
        out.push(self.advert());
    }

    /// What our heartbeats report of the cluster: the node we see holding the
    /// VIPs (ourselves included; 0: none) and a bit (`id % 64`) per peer we
    /// hear. A peer that cannot hear that holder stays out (the partial
    /// partition of three nodes).
    pub fn view(&self) -> (u32, u64) {
        self.view
    }

    fn see(&mut self, views: &[PeerView]) {
        let live = |v: &&PeerView| self.machine.is_alive(v.id);
        let holder = if self.claims_vip() {
            Some(self.p.machine.node_id)
        } else {
            views
                .iter()
                .filter(live)
                .filter(|v| v.holds_vip)
                .max_by_key(|v| v.rank())
                .map(|v| v.id)
        };
        let heard = views
            .iter()
            .filter(live)
            .fold(0u64, |b, v| b | 1 << (v.id % 64));
        self.view = (holder.unwrap_or(0), heard);
    }

    /// One view per peer, merged over links: the freshest entry wins, so a peer
    /// is silent only when it is silent on every link. With several links, a
    /// link falling silent or coming back is logged on its own.
    fn merge(
        &mut self,
        now: Duration,
        peers: &BTreeMap<u32, Vec<Sample>>,
        out: &mut Vec<Action>,
    ) -> Vec<PeerView> {
        let dead_after = self.p.machine.dead_after;
        let mut views = Vec::with_capacity(peers.len());
        let mut old_until = None;
        // Only the links that speak for a peer now count as life (see `current`).
        let peers: BTreeMap<u32, Vec<Sample>> = peers
            .iter()
            .map(|(&id, samples)| {
                let cur = current(samples);
                let eff = samples
                    .iter()
                    .zip(cur)
                    .map(|(s, c)| {
                        if c {
                            *s
                        } else {
                            Sample {
                                last_seen: None,
                                left: false,
                                ..*s
                            }
                        }
                    })
                    .collect();
                (id, eff)
            })
            .collect();
        let peers = &peers;
        // Entries heard within dead-after, not a leave: their silence is a deadline.
        let live: Vec<(usize, u32, Duration)> = peers
            .iter()
            .flat_map(|(&id, samples)| {
                samples.iter().enumerate().filter_map(move |(link, s)| {
                    let t = s.last_seen.filter(|&t| now.saturating_sub(t) <= dead_after);
                    t.filter(|_| !s.left).map(|t| (link, id, t))
                })
            })
            .collect();
        self.silence_at = live.iter().map(|&(_, _, t)| t + dead_after).min();
        self.live = live.into_iter().map(|(link, id, _)| (link, id)).collect();
        for (&id, samples) in peers {
            if samples.len() > 1 {
                let alive: Vec<bool> = samples
                    .iter()
                    .map(|s| {
                        s.last_seen
                            .is_some_and(|t| now.saturating_sub(t) <= dead_after)
                    })
                    .collect();
                for (i, &a) in alive.iter().enumerate() {
                    let was = self.link_alive.insert((id, i), a);
                    let name = |j: usize| self.p.links.get(j).cloned().unwrap_or_default();
                    if was == Some(true) && !a {
                        let others: Vec<String> =
                            (0..alive.len()).filter(|&j| alive[j]).map(name).collect();
                        if others.is_empty() {
                            warn(
                                out,
                                format!(
                                    "peer {id}: link {} silent, and every other link too",
                                    name(i)
                                ),
                            );
                        } else {
                            warn(
                                out,
                                format!(
                                    "peer {id}: link {} silent, {} alive: no failover",
                                    name(i),
                                    others.join(", ")
                                ),
                            );
                        }
                    } else if was == Some(false) && a {
                        info(out, format!("peer {id}: link {} alive again", name(i)));
                    }
                }
            }
            let freshest = samples
                .iter()
                .copied()
                .max_by_key(|s| s.last_seen)
                .unwrap_or_default();
            // Its controller is gone when a death notice on any link names the
            // session we hear from it now (the freshest link's): a notice that
            // reached one link counts, a restarted controller's newly adopted
            // session on any link ends it.
            let gone = samples
                .iter()
                .any(|s| s.gone_session.is_some_and(|g| g == freshest.session));
            let old_version = samples
                .iter()
                .filter_map(|s| s.old_version)
                .max()
                .filter(|&t| now.saturating_sub(t) <= dead_after);
            let was_old = self.old_peers.contains(&id);
            if old_version.is_some() && !was_old {
                warn(out, format!("peer {id} speaks wire version 1 (an old hb): upgrade it; taking no VIP while it runs"));
                self.old_peers.insert(id);
            } else if old_version.is_none() && was_old {
                info(out, format!("peer {id} no longer speaks wire version 1"));
                self.old_peers.remove(&id);
            }
            if let Some(t) = old_version {
                let at = t + dead_after;
                old_until = Some(old_until.map_or(at, |o: Duration| o.min(at)));
            }
            views.push(PeerView {
                id,
                last_seen: freshest.last_seen,
                left: freshest.left,
                gone,
                priority: freshest.priority,
                state: freshest.state,
                holds_vip: freshest.holds_vip,
                reaches_ping: freshest.reaches_ping,
                holder: freshest.holder,
                old_version: old_version.is_some(),
                waiting: freshest.waiting,
            });
        }
        self.old_version_until = old_until;
        views
    }

    /// Another machine uses our node id while messages of it came within
    /// dead-after: said once per episode, and the election holds no VIP.
    fn watch_collision(&mut self, now: Duration, last: Option<Duration>, out: &mut Vec<Action>) {
        let dead_after = self.p.machine.dead_after;
        let on = last.filter(|&t| now.saturating_sub(t) <= dead_after);
        if on.is_some() && !self.machine.collision() {
            out.push(Action::Log {
                level: Level::Error,
                msg: format!(
                    "another machine sends as node {} (our id) in another session: two nodes were given one id; holding no VIP while it lasts",
                    self.p.machine.node_id
                ),
            });
        } else if on.is_none() && self.machine.collision() {
            info(
                out,
                format!(
                    "no other machine has sent as node {} for dead-after: the id collision is over",
                    self.p.machine.node_id
                ),
            );
        }
        self.machine.set_collision(on.is_some());
        self.collision_until = on.map(|t| t + dead_after);
    }

    fn apply(&mut self, now: Duration, held: bool, ev: Event, out: &mut Vec<Action>) {
        match ev {
            Event::PeerUp { peer } => {
                self.seen.peer_up += 1;
                info(out, format!("peer {peer} up"));
                // Back from a partition, it may have taken the VIP meanwhile and
                // turned caches towards it; it yields when it hears us, and caches
                // must follow us again.
                if held && self.p.has_vips {
                    info(
                        out,
                        format!("peer {peer} rejoined while we hold the VIP: re-announcing"),
                    );
                    out.push(announce("peer rejoined"));
                }
            }
            Event::PeerDown { peer, silence } => {
                self.seen.peer_silent += 1;
                warn(
                    out,
                    format!(
                        "peer {peer} down: silent {} ms > dead-after {} ms",
                        silence.as_millis(),
                        self.p.machine.dead_after.as_millis()
                    ),
                )
            }
            Event::PeerLeft { peer } => {
                self.seen.peer_left += 1;
                info(out, format!("peer {peer} left (graceful stop)"))
            }
            Event::PeerGone { peer } => {
                self.seen.peer_gone += 1;
                warn(
                    out,
                    format!("peer {peer}: controller gone (death notice from its kernel)"),
                )
            }
            Event::KeyNeeded { gone } => out.push(Action::AcquireKey { gone }),
            Event::KeyWait => {
                warn(
                    out,
                    "a peer is silent for no known reason: taking over waits for the witness key"
                        .to_string(),
                );
                out.push(Action::WriteStatus);
            }
            Event::KeyWaited { waited } => {
                self.seen.witness_waits += 1;
                self.seen.witness_wait_ms = waited.as_millis() as u64;
                info(
                    out,
                    format!(
                        "the witness key is ours after {} ms: taking over",
                        waited.as_millis()
                    ),
                );
            }
            Event::FenceNeeded { peers } => {
                self.seen.fences += 1;
                warn(
                    out,
                    format!("fencing silent peer(s) {peers:?} before taking over"),
                );
                out.push(Action::Fence { peers });
            }
            Event::Transition { from, to, reason } => {
                self.seen.transitions += 1;
                self.reason = reason.to_string();
                self.reason_kind = reason.kind();
                self.silence = reason.silence();
                self.reason_peer = reason.peer();
                let vips = &self.p.vip_list;
                match (to, self.p.has_vips) {
                    (NodeState::Master, true) => warn(out, format!("{reason}: taking {vips}")),
                    (_, true) if from == NodeState::Master => {
                        warn(out, format!("{reason}: releasing {vips} ({})", to.name()))
                    }
                    _ => info(out, format!("{} -> {}: {reason}", from.name(), to.name())),
                }
                out.push(Action::Notify {
                    from: from.name().into(),
                    to: to.name().into(),
                    reason: reason.to_string(),
                });
                if to != NodeState::Init {
                    self.inherited = false;
                }
                if to == NodeState::Master {
                    // We add them now; a failure comes back as TakeFailed. Until
                    // then they count as ours, so that no peer sees a holder
                    // without them in between.
                    self.missing.clear();
                    // The lease first: XDP must let the VIPs' traffic in before we
                    // announce them. Peers learn the change at once from the sender.
                    if self.p.has_vips {
                        out.push(Action::SetLease {
                            until: now + self.p.machine.dead_after,
                        });
                    }
                    out.push(self.advert());
                    out.push(Action::TakeVips);
                    out.push(announce("takeover"));
                } else {
                    // The advert first: the sender stops renewing, then the lease goes.
                    out.push(self.advert());
                    out.push(Action::ReleaseVips);
                    if !self.inherited {
                        out.push(Action::SetLease {
                            until: Duration::ZERO,
                        });
                    }
                    // Only once the VIPs are gone may a peer get the key.
                    if from == NodeState::Master && self.p.machine.witness.is_some() {
                        out.push(Action::ReleaseKey);
                    }
                }
                out.push(Action::WriteStatus);
            }
        }
    }

    /// A healed partition: a lower-ranked peer still claims the VIP we hold. It
    /// yields as soon as it hears us; we re-announce at once so caches point here
    /// again.
    fn watch_rivals(&mut self, views: &[PeerView], out: &mut Vec<Action>) {
        if !self.holds_vip() {
            self.rival_holders.clear();
            return;
        }
        for v in views {
            let rival = v.holds_vip && self.machine.is_alive(v.id);
            if rival && self.rival_holders.insert(v.id) {
                warn(out, format!("peer {} also holds the VIP (partition healed?): it ranks lower and will yield; re-announcing", v.id));
                out.push(announce("split brain"));
                out.push(Action::RivalHolder { peer: v.id });
            } else if !rival {
                self.rival_holders.remove(&v.id);
            }
        }
    }

    /// Our heartbeats stopped for `silent` while we held the VIPs (the sender
    /// renews no lease meanwhile). A live peer that now claims them took over
    /// while we were silent: step down, and the next observation elects again,
    /// break-before-make. Otherwise nobody noticed: hold on.
    fn lapsed(
        &mut self,
        now: Duration,
        silent: Duration,
        peers: &BTreeMap<u32, Vec<Sample>>,
        out: &mut Vec<Action>,
    ) {
        let dead_after = self.p.machine.dead_after;
        let views = self.merge(now, peers, out);
        let taker = views.iter().find(|v| {
            v.holds_vip
                && !v.left
                && !v.gone
                && v.last_seen
                    .is_some_and(|t| now.saturating_sub(t) <= dead_after)
        });
        let held = self.holds_vip();
        if held {
            self.seen.lapses += 1;
        }
        match taker {
            Some(v) if held => {
                let id = v.id;
                for ev in self.machine.lapse(silent) {
                    self.apply(now, held, ev, out);
                }
                info(out, format!("peer {id} took the VIP while we were silent"));
            }
            _ if held => info(
                out,
                format!(
                    "our heartbeats were {} ms late, but no live peer claims the VIP now: holding on",
                    silent.as_millis()
                ),
            ),
            _ => {}
        }
        out.push(self.advert());
    }

    /// ARP claims for our VIPs from foreign MACs. A peer's announcement after it
    /// took over is reported quietly; an unknown MAC is a conflict, and while we
    /// hold the VIP it is a split-brain signal: re-announce (at most once a second).
    fn claims(&mut self, now: Duration, claims: &[Claim], out: &mut Vec<Action>) {
        let mut reannounce = false;
        let holds = self.holds_vip();
        // Foreign MACs, per (link, VIP): one line per CONFLICT_LOG_QUIET at
        // most, whatever a flood of random MACs sends.
        let mut foreign: BTreeMap<(usize, String), Vec<&Claim>> = BTreeMap::new();
        for c in claims {
            let iface = self.p.links.get(c.link).cloned().unwrap_or_default();
            let (vip, m, n) = (&c.vip, &c.mac, c.count);
            match (c.peer, holds) {
                (Some(id), false) => info(
                    out,
                    format!("VIP {vip} announced on {iface} by peer {id} ({m})"),
                ),
                (Some(id), true) => {
                    warn(out, format!("VIP conflict on {iface}: peer {id} ({m}) claims {vip} ({n} ARP) while we hold it: re-announcing"));
                    reannounce = true;
                }
                (None, _) => {
                    foreign.entry((c.link, vip.clone())).or_default().push(c);
                    reannounce |= holds;
                }
            }
        }
        for (key, group) in foreign {
            let iface = self.p.links.get(key.0).cloned().unwrap_or_default();
            let log = self.conflict_log.entry(key.clone()).or_default();
            log.macs += group.len() as u64;
            log.arps += group.iter().map(|c| c.count).sum::<u64>();
            if log
                .at
                .is_some_and(|t| now.saturating_sub(t) < CONFLICT_LOG_QUIET)
            {
                continue;
            }
            let first = group[0];
            let others = match (log.macs - 1, log.arps - first.count) {
                (0, _) => String::new(),
                (macs, arps) => format!(", and {macs} more MAC(s) with {arps} ARP"),
            };
            let tail = if holds {
                "while we hold it: re-announcing"
            } else {
                "; we do not hold it"
            };
            let (vip, m, n) = (&key.1, &first.mac, first.count);
            warn(out, format!("VIP conflict on {iface}: {vip} claimed by foreign MAC {m} ({n} ARP){others} {tail}"));
            *log = ConflictLog {
                at: Some(now),
                ..ConflictLog::default()
            };
        }
        let quiet = self
            .conflict_announced
            .is_some_and(|t| now.saturating_sub(t) < CONFLICT_QUIET);
        if reannounce && !quiet {
            self.conflict_announced = Some(now);
            out.push(announce("conflict"));
        }
    }
}

/// Foreign ARP claims for one VIP since its last log line.
#[derive(Clone, Copy, Debug, Default)]
struct ConflictLog {
    at: Option<Duration>,
    macs: u64,
    arps: u64,
}

/// Log lines about foreign MACs claiming a VIP: at most one per this period.
const CONFLICT_LOG_QUIET: Duration = Duration::from_secs(10);

/// Which links' entries speak for a peer now: those in the session adopted
/// last (on any link), at the highest sequence number any link accepted in
/// it. A link whose entry lags (it was cut while the others went on) counts
/// again once it catches up; until then a capture from another link replayed
/// on it is not life. So the links share one anti-replay window per peer,
/// ordered by (session, seq), not by arrival time.
pub fn current(samples: &[Sample]) -> Vec<bool> {
    let newest = samples
        .iter()
        .filter(|s| s.session != 0)
        .max_by_key(|s| s.adopted);
    let Some(newest) = newest else {
        return vec![true; samples.len()];
    };
    let top = samples
        .iter()
        .filter(|s| s.session == newest.session)
        .map(|s| s.seq)
        .max()
        .unwrap_or(0);
    samples
        .iter()
        .map(|s| s.session == newest.session && s.seq == top)
        .collect()
}

fn info(out: &mut Vec<Action>, msg: String) {
    out.push(Action::Log {
        level: Level::Info,
        msg,
    });
}

fn warn(out: &mut Vec<Action>, msg: String) {
    out.push(Action::Log {
        level: Level::Warn,
        msg,
    });
}

fn error(out: &mut Vec<Action>, msg: String) {
    out.push(Action::Log {
        level: Level::Error,
        msg,
    });
}

fn announce(why: &str) -> Action {
    Action::Announce { why: why.into() }
}

fn state_from_name(name: &str) -> NodeState {
    [
        NodeState::Init,
        NodeState::Backup,
        NodeState::Master,
        NodeState::Fault,
    ]
    .into_iter()
    .find(|s| s.name() == name)
    .unwrap_or(NodeState::Init)
}

/// Durations as integer milliseconds in case files.
mod ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

pub(crate) mod opt_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// States by name ("MASTER") in case files.
mod state_name {
    use hb_common::NodeState;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(st: &NodeState, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(st.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NodeState, D::Error> {
        Ok(super::state_from_name(&String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DEAD_AFTER: Duration = Duration::from_millis(300);

    fn node(id: u32, priority: u8, peers: &[u32], preempt: bool) -> Node {
        Node::new(
            NodeParams {
                machine: Params {
                    node_id: id,
                    priority,
                    preempt,
                    preempt_delay: Duration::ZERO,
                    dead_after: DEAD_AFTER,
                    init_dead: Duration::from_millis(1000),
                    peers: peers.to_vec(),
                    ping_quorum: false,
                    fencing: false,
                    fence_retry: Duration::from_secs(1),
                    witness: None,
                    witness_retry: Duration::from_millis(200),
                },
                has_vips: true,
                links: vec!["eth0".into(), "eth1".into()],
                vip_list: "10.0.0.100/24 on eth0".into(),
                inherited_lease: false,
                checks: Vec::new(),
            },
            Duration::ZERO,
        )
    }

    fn heard(at_ms: u64, state: NodeState) -> Sample {
        Sample {
            last_seen: Some(Duration::from_millis(at_ms)),
            priority: 100,
            state,
            holds_vip: state == NodeState::Master,
            ..Sample::default()
        }
    }

    fn observe(n: &mut Node, now_ms: u64, peers: &[(u32, Vec<Sample>)]) -> Vec<Action> {
        n.handle(Input::Observe {
            now: Duration::from_millis(now_ms),
            link_up: true,
            reach: true,
            peers: peers.iter().cloned().collect(),
            collision: None,
        })
    }

    /// Without news the executor sleeps until `next_deadline`: the end of INIT,
    /// then the moment the earliest live peer entry (any link) falls silent.
    #[test]
    fn the_next_deadline_is_init_end_then_the_earliest_silence() {
        let us = Duration::from_micros(1);
        let mut n = node(2, 90, &[1, 3], false);
        assert_eq!(n.next_deadline(), Some(Duration::from_millis(1000)), "INIT");
        // Peer 1 heard on both links, peer 3 never: still INIT, and peer 1's
        // older link entry is the earlier silence.
        let p1 = vec![heard(40, NodeState::Master), heard(30, NodeState::Master)];
        observe(&mut n, 50, &[(1, p1), (3, vec![Sample::default(); 2])]);
        assert_eq!(n.next_deadline(), Some(Duration::from_millis(330) + us));
        // Those silences are the entries a sender thread would watch; the rest
        // is the INIT timer.
        assert_eq!(n.live(), &[(0, 1), (1, 1)]);
        assert_eq!(n.next_timer(), Some(Duration::from_millis(1000)));
        // Past INIT (peer 3 heard), only silences are left.
        let p1 = vec![heard(60, NodeState::Master), heard(61, NodeState::Master)];
        let p3 = vec![heard(65, NodeState::Backup), Sample::default()];
        observe(&mut n, 70, &[(1, p1), (3, p3)]);
        assert_eq!(n.state(), NodeState::Backup);
        assert_eq!(n.next_deadline(), Some(Duration::from_millis(360) + us));
        assert_eq!(n.live(), &[(0, 1), (1, 1), (0, 3)]);
        assert_eq!(n.next_timer(), None);
        // A peer that left, and entries older than dead-after, set none.
        let left = Sample {
            left: true,
            ..heard(80, NodeState::Backup)
        };
        observe(
            &mut n,
            500,
            &[
                (1, vec![left, Sample::default()]),
                (3, vec![heard(100, NodeState::Backup); 2]),
            ],
        );
        assert_eq!(n.next_deadline(), None);
        assert!(n.live().is_empty());
    }

    /// One peer sample: heard `ago` ms before now (None: never), its priority,
    /// state and claim.
    fn sample_strategy() -> impl Strategy<Value = (Option<u64>, bool, u8, u8, bool)> {
        (
            proptest::option::of(0u64..600),
            proptest::bool::weighted(0.1),
            prop_oneof![Just(50u8), Just(100), Just(150)],
            0u8..4,
            any::<bool>(),
        )
    }

    proptest! {
        /// Over any sequence of observations: VIPs are never added twice without
        /// a removal between, the lease is set before every add, and we never
        /// add them while a live higher-ranked peer says it holds them.
        #[test]
        fn never_two_adds_and_never_over_a_live_higher_holder(
            preempt in any::<bool>(),
            steps in proptest::collection::vec(
                (1u64..200, any::<bool>(), proptest::collection::vec(sample_strategy(), 2)),
                1..60,
            ),
        ) {
            let mut n = node(2, 100, &[1, 3], preempt);
            let mut now = Duration::ZERO;
            let mut holding = false;
            for (dt, link_up, samples) in steps {
                now += Duration::from_millis(dt);
                let mut peers = BTreeMap::new();
                let mut live_higher_holder = false;
                for (id, (ago, left, priority, state, holds)) in [1u32, 3].into_iter().zip(samples) {
                    let state = NodeState::from_u8(state).unwrap();
                    let last_seen = ago.map(|a| now.saturating_sub(Duration::from_millis(a)));
                    let live = ago.is_some_and(|a| Duration::from_millis(a) <= DEAD_AFTER && a <= now.as_millis() as u64)
                        && !left && state != NodeState::Fault;
                    if live && holds && (priority, id) > (100, 2) {
                        live_higher_holder = true;
                    }
                    let s = Sample { last_seen, left, priority, state, holds_vip: holds, reaches_ping: true, ..Sample::default() };
                    // The second link heard nothing: the merge must still see the peer.
                    peers.insert(id, vec![s, Sample::default()]);
                }
                let actions = n.handle(Input::Observe { now, link_up, reach: true, peers, collision: None });
                let mut leased = false;
                for a in &actions {
                    match a {
                        Action::SetLease { until } => leased = *until > Duration::ZERO,
                        Action::TakeVips => {
                            prop_assert!(!holding, "two adds without a removal: {actions:?}");
                            prop_assert!(leased, "VIPs added before the lease: {actions:?}");
                            prop_assert!(!live_higher_holder, "took over a live higher holder: {actions:?}");
                            holding = true;
                        }
                        Action::ReleaseVips => holding = false,
                        _ => {}
                    }
                }
                prop_assert_eq!(holding, n.holds_vip());
            }
        }
    }
}
