//! The failover state machine: pure logic, no I/O, time passed in. The controller
//! feeds it what the XDP program saw of each peer and applies what it decides.
//!
//! States: INIT (just started: wait until every peer is heard or `init_dead`
//! passes), BACKUP, MASTER (holds the VIPs), FAULT (our links are down, or we are
//! isolated: no peer heard and no ping target answers).
//! The VIP holder is the live node with the highest rank: (reaches a ping target,
//! priority, node id). Without ping targets every node counts as reaching one.

use hb_common::NodeState;
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    time::Duration,
};

/// The settings the machine needs.
#[derive(Clone, Debug)]
pub struct Params {
    pub node_id: u32,
    pub priority: u8,
    pub preempt: bool,
    /// After the start, no preemption of a lower-ranked holder for this long
    /// (keepalived's `preempt_delay`).
    pub preempt_delay: Duration,
    pub dead_after: Duration,
    pub init_dead: Duration,
    /// Configured peer ids.
    pub peers: Vec<u32>,
    /// Ping targets are configured: hearing no peer and reaching no target means
    /// we are the isolated side of a partition.
    pub ping_quorum: bool,
    /// A fencing command is configured: silent peers are fenced before a takeover.
    pub fencing: bool,
    /// Wait after a failed fencing attempt before the next one.
    pub fence_retry: Duration,
    /// A witness (etcd) is configured: taking the VIPs from a silent peer
    /// needs its key, and this says what to do while it cannot be reached.
    pub witness: Option<WitnessDown>,
    /// While the key is wanted and not ours: ask again this often.
    pub witness_retry: Duration,
}

/// What a node does while the witness cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WitnessDown {
    /// The holder keeps its VIPs while it hears its peers; nobody takes
    /// them from a silent peer (the safe default).
    Keep,
    /// Decide from heartbeats alone, as without a witness (available, but a
    /// partition between the nodes makes two holders).
    Heartbeats,
}

impl WitnessDown {
    /// As the settings, status and metrics spell it.
    pub fn name(self) -> &'static str {
        match self {
            WitnessDown::Keep => "keep",
            WitnessDown::Heartbeats => "heartbeats",
        }
    }
}

/// What the witness last said of an election's key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyView {
    /// The key is ours until then (CLOCK_MONOTONIC): our etcd lease's end,
    /// counted from before the renewal that set it, so never later than the
    /// server's.
    #[serde(
        default,
        with = "crate::node::opt_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub owned_until: Option<Duration>,
    /// Another node's key: its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<u32>,
    /// The witness answered the last request.
    #[serde(default)]
    pub reachable: bool,
}

/// What we know of one peer right now (from the peers map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub id: u32,
    /// Monotonic time of its last accepted message, None if never heard.
    pub last_seen: Option<Duration>,
    /// Its last message was a leave: it stopped on purpose.
    pub left: bool,
    /// Its kernel sent a fresh death notice: its controller died. Handled as a
    /// leave: the kernel that sent it drops VIP traffic (the notice voids its
    /// holder lease), so nobody else answers for the VIP.
    pub gone: bool,
    pub priority: u8,
    pub state: NodeState,
    pub holds_vip: bool,
    /// It reaches one of its ping targets (or has none).
    pub reaches_ping: bool,
    /// The node it sees holding the VIPs (itself included), if any: a node
    /// we cannot hear may still be alive and holding.
    pub holder: Option<u32>,
    /// It speaks wire version 1 (an old hb): alive, but its heartbeats never
    /// count; we take nothing while it does.
    pub old_version: bool,
    /// It waits out its `preempt_delay`: a holder it outranks keeps the
    /// group until it asks.
    pub waiting: bool,
}

/// A node's rank: the highest wins.
pub type Rank = (bool, u8, u32);

impl PeerView {
    pub fn rank(&self) -> Rank {
        (self.reaches_ping, self.priority, self.id)
    }
}

/// Why something happened, for the log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// INIT ended because init-dead passed.
    InitDeadPassed {
        waited: Duration,
    },
    LinkDown,
    /// No peer heard and no ping target answers.
    Isolated,
    /// Out of FAULT: the link is up and we are not isolated.
    Reconnected,
    /// Taking over: no live peer outranks us. `after` says what changed.
    Elected {
        after: Option<Change>,
    },
    /// A live peer outranks us (or holds the VIP and we do not preempt).
    Outranked {
        by: u32,
        rank: Rank,
        holds_vip: bool,
    },
    /// We outrank the live holder, which yields when it hears us: break before
    /// make, so the VIP is never on both.
    AwaitingRelease {
        by: u32,
    },
    /// Our own heartbeats stopped for longer than dead-after (the process was
    /// paused or starved): peers may have taken over, so the holder steps down
    /// and the next step elects again.
    Lapsed {
        silent: Duration,
        dead_after: Duration,
    },
    /// A live peer sees another node holding the VIPs that we cannot hear (a
    /// partial partition): taking them would make two holders.
    HeldElsewhere {
        holder: u32,
        seen_by: u32,
    },
    /// A peer still speaks wire version 1: it may hold the VIPs, and we cannot
    /// read its heartbeats.
    OldPeer {
        peer: u32,
    },
    /// Another machine sends with our node id.
    IdCollision,
    /// The kernel would not take our VIPs (or they kept disappearing): we
    /// claim nothing for a while, so a peer serves them.
    VipFailed,
    /// Out of FAULT after a VIP failure: trying again, as after a start.
    VipRetry,
    /// A health check with weight 0 fails.
    CheckFailed {
        check: String,
    },
    /// The operator put the group in standby (`hb-user standby`).
    Standby,
    /// A peer is silent for no known reason and the witness key is not ours
    /// (held by another node, or the witness cannot be reached): taking or
    /// keeping the VIPs could make two holders.
    NoKey {
        held_by: Option<u32>,
        reachable: bool,
    },
    /// We outrank the holder, but preempt_delay has not passed since our start.
    PreemptDelayed {
        by: u32,
    },
}

/// The peer event that led to a takeover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Silent {
        peer: u32,
        silence: Duration,
        dead_after: Duration,
    },
    Left {
        peer: u32,
    },
    Gone {
        peer: u32,
    },
}

/// What the machine reports to the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    PeerUp {
        peer: u32,
    },
    PeerDown {
        peer: u32,
        silence: Duration,
    },
    PeerLeft {
        peer: u32,
    },
    /// Its controller died: a death notice from its kernel.
    PeerGone {
        peer: u32,
    },
    Transition {
        from: NodeState,
        to: NodeState,
        reason: Reason,
    },
    /// We would take the VIP, but these silent peers must be fenced first: run the
    /// fencing command and report with [`Machine::fence_done`].
    FenceNeeded {
        peers: Vec<u32>,
    },
    /// We hold or would take the VIPs and the witness key is not ours: ask
    /// for it (a transaction on its absence, or on its naming one of `gone`,
    /// peers whose leave or death notice says they hold nothing), and report
    /// with [`Machine::witness`].
    KeyNeeded {
        gone: Vec<u32>,
    },
    /// A takeover starts waiting for the witness key.
    KeyWait,
    /// The takeover waited this long for the witness key.
    KeyWaited {
        waited: Duration,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fence {
    Idle,
    Pending,
    RetryAt(Duration),
}

pub struct Machine {
    p: Params,
    state: NodeState,
    /// When the current INIT began.
    init_since: Duration,
    alive: BTreeMap<u32, bool>,
    /// The last peer change seen since the last transition, kept for its reason.
    last_change: Option<Change>,
    fence: Fence,
    /// Peers fenced since they were last heard: they need no second fencing.
    fenced: BTreeSet<u32>,
    /// Another machine uses our node id: hold nothing.
    collision: bool,
    /// After a VIP failure: FAULT until then.
    vip_fault_until: Option<Duration>,
    /// The VIPs failed here and have not been held since: no preemption.
    vip_suspect: bool,
    /// A health check with weight 0 fails: FAULT.
    check_fault: Option<String>,
    /// Put in standby by the operator (`hb-user standby`): FAULT, which no
    /// peer waits for, so the next node takes over at once.
    standby: bool,
    /// Until then, `preempt_delay` holds preemption back (None once passed).
    preempt_from: Option<Duration>,
    /// What the witness last said of our key.
    key: KeyView,
    /// When we last asked for the key, while we want it.
    key_asked: Option<Duration>,
    /// The witness has said something since we first asked.
    key_answered: bool,
    /// Since when a takeover waits for the key.
    key_wait: Option<Duration>,
}

impl Machine {
    pub fn new(p: Params, now: Duration) -> Self {
        let alive = p.peers.iter().map(|&id| (id, false)).collect();
        Self {
            state: NodeState::Init,
            init_since: now,
            alive,
            last_change: None,
            fence: Fence::Idle,
            fenced: BTreeSet::new(),
            collision: false,
            vip_fault_until: None,
            vip_suspect: false,
            check_fault: None,
            standby: false,
            preempt_from: (!p.preempt_delay.is_zero()).then(|| now + p.preempt_delay),
            key: KeyView::default(),
            key_asked: None,
            key_answered: false,
            key_wait: None,
            p,
        }
    }

    /// The VIPs are held here, all of them: preemption as configured again.
    pub fn vips_held(&mut self) {
        self.vip_suspect = false;
    }

    /// The VIPs could not be added (or would not stay): FAULT (releasing
    /// them) until `until`, then INIT as after a start.
    pub fn vip_failed(&mut self, until: Duration) -> Vec<Event> {
        self.vip_fault_until = Some(until);
        self.vip_suspect = true;
        if self.state == NodeState::Fault {
            return Vec::new();
        }
        let from = std::mem::replace(&mut self.state, NodeState::Fault);
        self.last_change = None;
        vec![Event::Transition {
            from,
            to: NodeState::Fault,
            reason: Reason::VipFailed,
        }]
    }

    /// Whether another machine uses our node id (see [`Machine::set_collision`]).
    pub fn collision(&self) -> bool {
        self.collision
    }

    /// Another machine sends with our node id (or stopped): while it does,
    /// every step elects BACKUP.
    pub fn set_collision(&mut self, on: bool) {
        self.collision = on;
    }

    pub fn state(&self) -> NodeState {
        self.state
    }

    /// Within preempt_delay of the start: heartbeats say so, so that a holder
    /// we outrank keeps the group meanwhile.
    pub fn waiting(&self) -> bool {
        self.preempt_from.is_some() && self.state != NodeState::Master
    }

    /// A health check with weight 0 fails (its name), or none does: FAULT while one does.
    pub fn set_check_fault(&mut self, check: Option<String>) {
        self.check_fault = check;
    }

    /// Standby (or back out of it): the next step releases and goes FAULT.
    pub fn set_standby(&mut self, on: bool) {
        self.standby = on;
    }

    pub fn standby(&self) -> bool {
        self.standby
    }

    /// A reload changed these; the next step elects with them.
    pub fn set_settings(&mut self, priority: u8, preempt: bool, fencing: bool) {
        self.p.priority = priority;
        self.p.preempt = preempt;
        self.p.fencing = fencing;
    }

    /// A reload changed the peers: a new one counts as unheard until it is
    /// heard, a removed one is forgotten.
    pub fn set_peers(&mut self, peers: &[u32]) {
        self.alive.retain(|id, _| peers.contains(id));
        for &id in peers {
            self.alive.entry(id).or_insert(false);
        }
        self.fenced.retain(|id| peers.contains(id));
        self.p.peers = peers.to_vec();
    }

    /// The witness's word on our key; the next step decides with it.
    pub fn witness(&mut self, key: KeyView) {
        self.key = key;
        self.key_answered = true;
    }

    pub fn key(&self) -> KeyView {
        self.key
    }

    /// Since when a takeover waits for the witness key, if it does.
    pub fn key_wait(&self) -> Option<Duration> {
        self.key_wait
    }

    /// Our rank, given whether we reach a ping target.
    pub fn rank(&self, reach: bool) -> Rank {
        (reach, self.p.priority, self.p.node_id)
    }

    /// The earliest time at which a step could decide differently with no new
    /// input: the end of INIT, a fencing retry. (Peers' silence deadlines are
    /// the caller's, who knows their last-seen times.)
    pub fn next_deadline(&self) -> Option<Duration> {
        let init = (self.state == NodeState::Init).then(|| self.init_since + self.p.init_dead);
        let retry = match self.fence {
            Fence::RetryAt(t) => Some(t),
            _ => None,
        };
        let vip_retry = self
            .vip_fault_until
            .filter(|_| self.state == NodeState::Fault);
        // The key asked for again; a holder's key ending.
        let key_retry = self.key_asked.map(|t| t + self.p.witness_retry);
        let key_end = (self.state == NodeState::Master)
            .then_some(self.key.owned_until)
            .flatten();
        init.into_iter()
            .chain(retry)
            .chain(vip_retry)
            .chain(self.preempt_from)
            .chain(key_retry)
            .chain(key_end)
            .min()
    }

    /// Our heartbeats stopped for `silent` (> dead-after) while we held the
    /// VIP: step down to BACKUP; the next step elects again (break-before-make
    /// if a peer took over meanwhile, straight back otherwise).
    pub fn lapse(&mut self, silent: Duration) -> Vec<Event> {
        if self.state != NodeState::Master {
            return Vec::new();
        }
        self.state = NodeState::Backup;
        vec![Event::Transition {
            from: NodeState::Master,
            to: NodeState::Backup,
            reason: Reason::Lapsed {
                silent,
                dead_after: self.p.dead_after,
            },
        }]
    }

    /// Whether `peer` was alive at the last step.
    pub fn is_alive(&self, peer: u32) -> bool {
        self.alive.get(&peer).copied().unwrap_or(false)
    }

    fn silence(&self, v: &PeerView, now: Duration) -> Duration {
        now.saturating_sub(v.last_seen.unwrap_or(self.init_since))
    }

    /// Advances the machine to `now`, given whether any of our links is up, whether
    /// we reach a ping target (true when none is configured), and the peers' views.
    pub fn step(
        &mut self,
        now: Duration,
        link_up: bool,
        reach: bool,
        peers: &[PeerView],
    ) -> Vec<Event> {
        let mut events = Vec::new();
        // Peer liveness first: it feeds the election and the up/down log lines.
        for v in peers {
            let heard_recently = v.last_seen.is_some() && self.silence(v, now) <= self.p.dead_after;
            let alive = heard_recently && !v.left && !v.gone;
            let was = self.alive.insert(v.id, alive).unwrap_or(false);
            if alive {
                // Heard again: a later silence needs fencing again.
                self.fenced.remove(&v.id);
            }
            if alive && !was {
                events.push(Event::PeerUp { peer: v.id });
            } else if !alive && was {
                if v.gone {
                    events.push(Event::PeerGone { peer: v.id });
                    self.last_change = Some(Change::Gone { peer: v.id });
                } else if v.left {
                    events.push(Event::PeerLeft { peer: v.id });
                    self.last_change = Some(Change::Left { peer: v.id });
                } else {
                    let silence = self.silence(v, now);
                    events.push(Event::PeerDown {
                        peer: v.id,
                        silence,
                    });
                    self.last_change = Some(Change::Silent {
                        peer: v.id,
                        silence,
                        dead_after: self.p.dead_after,
                    });
                }
            }
        }

        // The hold after a VIP failure is over (a deadline, once).
        if self.vip_fault_until.is_some_and(|t| now >= t) {
            self.vip_fault_until = None;
        }
        if self.preempt_from.is_some_and(|t| now >= t) {
            self.preempt_from = None;
        }
        let (mut to, mut reason) = self.decide(now, link_up, reach, peers);
        if to != NodeState::Master {
            self.key_asked = None;
            self.key_wait = None;
        } else if let Some(answered) = self.key_refuses(now, peers, &mut events) {
            // Held back: a BACKUP stays, INIT waits for the witness's first
            // answer then decides (BACKUP, saying why), a holder releases.
            if self.state == NodeState::Backup || (self.state == NodeState::Init && !answered) {
                return events;
            }
            to = NodeState::Backup;
            reason = Reason::NoKey {
                held_by: self.key.held_by,
                reachable: self.key.reachable,
            };
        }
        if to == NodeState::Master
            && self.state != NodeState::Master
            && !self.fence_allows(now, peers, &mut events)
        {
            return events;
        }
        if to == NodeState::Master && self.state != NodeState::Master {
            if let Some(since) = self.key_wait.take() {
                events.push(Event::KeyWaited {
                    waited: now.saturating_sub(since),
                });
            }
        }
        if to != self.state {
            if to == NodeState::Init {
                self.init_since = now;
            }

            events.push(Event::Transition {
                from: self.state,
                to,
                reason,
            });
            self.state = to;
            self.last_change = None;
        }
        events
    }

    /// For a node that holds or would take the VIPs: None unless the witness
    /// forbids it, else whether the witness has answered since we first
    /// asked. Without the key it is asked for (again every `witness_retry`);
    /// it is needed only while a peer is silent for no known reason (one that
    /// left or whose kernel sent a death notice holds nothing; a live one
    /// would be heard claiming), or, with `witness_down = heartbeats`, while
    /// the witness answers.
    fn key_refuses(
        &mut self,
        now: Duration,
        peers: &[PeerView],
        events: &mut Vec<Event>,
    ) -> Option<bool> {
        let down = self.p.witness?;
        if self.key.owned_until.is_some_and(|t| now < t) {
            self.key_asked = None;
            return None;
        }
        let handed = |v: &PeerView| (v.left && v.last_seen.is_some()) || v.gone;
        if self
            .key_asked
            .is_none_or(|t| now >= t + self.p.witness_retry)
        {
            if self.key_asked.is_none() {
                self.key_answered = false;
            }
            self.key_asked = Some(now);
            let gone = peers.iter().filter(|v| handed(v)).map(|v| v.id).collect();
            events.push(Event::KeyNeeded { gone });
        }
        let silent = peers.iter().any(|v| !(self.is_alive(v.id) || handed(v)));
        // Out of INIT only once the witness has had its say.
        let settled = self.key_answered || self.state != NodeState::Init;
        if settled && (!silent || (!self.key.reachable && down == WitnessDown::Heartbeats)) {
            return None;
        }
        if self.state != NodeState::Master && self.key_wait.is_none() {
            self.key_wait = Some(now);
            events.push(Event::KeyWait);
        }
        Some(self.key_answered)
    }

    /// Before a takeover: true when no silent peer is left unfenced; otherwise asks
    /// for fencing (once per attempt) and holds the takeover back.
    fn fence_allows(&mut self, now: Duration, peers: &[PeerView], events: &mut Vec<Event>) -> bool {
        if !self.p.fencing {
            return true;
        }
        // A peer that said it left gave the VIP up itself, and one whose kernel
        // sent a death notice has fenced itself: nothing to fence.
        let need: Vec<u32> = peers
            .iter()
            .filter(|v| {
                let left = (v.left && v.last_seen.is_some()) || v.gone;
                !(self.is_alive(v.id) || left || self.fenced.contains(&v.id))
            })
            .map(|v| v.id)
            .collect();
        if need.is_empty() {
            return true;
        }
        match self.fence {
            Fence::Idle => {}
            Fence::RetryAt(t) if now >= t => {}
            Fence::Pending | Fence::RetryAt(_) => return false,
        }
        self.fence = Fence::Pending;
        events.push(Event::FenceNeeded { peers: need });
        false
    }

    /// The fencing command for `peers` finished: succeeded (`ok`) or not.
    pub fn fence_done(&mut self, peers: &[u32], ok: bool, now: Duration) {
        if ok {
            self.fenced.extend(peers);
            self.fence = Fence::Idle;
        } else {
            self.fence = Fence::RetryAt(now + self.p.fence_retry);
        }
    }

    fn decide(
        &self,
        now: Duration,
        link_up: bool,
        reach: bool,
        peers: &[PeerView],
    ) -> (NodeState, Reason) {
        use NodeState::*;
        if !link_up {
            return (Fault, Reason::LinkDown);
        }
        if self.vip_fault_until.is_some_and(|t| now < t) {
            return (Fault, Reason::VipFailed);
        }
        if self.standby {
            return (Fault, Reason::Standby);
        }
        if let Some(check) = &self.check_fault {
            return (
                Fault,
                Reason::CheckFailed {
                    check: check.clone(),
                },
            );
        }
        let isolated = self.p.ping_quorum && !reach && !self.alive.values().any(|&a| a);
        match self.state {
            // Back from FAULT: peers look silent only because we could not hear them;
            // wait as a fresh start would rather than grab the VIP.
            Fault if isolated => return (Fault, Reason::Isolated),
            // While a live peer serves the VIPs that failed here, leave them
            // there: a FAULT node is one no peer yields to.
            Fault
                if self.vip_suspect && peers.iter().any(|v| self.is_alive(v.id) && v.holds_vip) =>
            {
                return (Fault, Reason::VipFailed)
            }
            Fault if self.vip_suspect => return (Init, Reason::VipRetry),
            Fault => return (Init, Reason::Reconnected),
            Init => {
                let waited = now.saturating_sub(self.init_since);
                // A peer that said it left, or whose kernel said its controller
                // died, is accounted for as much as a live one.
                let all_heard = self.alive.iter().all(|(id, &alive)| {
                    alive
                        || peers.iter().any(|v| {
                            v.id == *id
                                && ((v.left && v.last_seen.is_some()) || v.gone || v.old_version)
                        })
                });
                if !all_heard && waited < self.p.init_dead {
                    return (Init, Reason::Reconnected); // no transition, so no reason is shown
                }
                if isolated {
                    return (Fault, Reason::Isolated);
                }
                let (to, elect) = self.elect(reach, peers);
                // Taking the VIP without having heard everyone deserves saying so.
                if to == Master && !all_heard {
                    return (to, Reason::InitDeadPassed { waited });
                }
                return (to, elect);
            }
            Backup | Master if isolated => return (Fault, Reason::Isolated),
            Backup | Master => {}
        }
        self.elect(reach, peers)
    }

    /// BACKUP or MASTER, from the live peers' ranks and claims.
    fn elect(&self, reach: bool, peers: &[PeerView]) -> (NodeState, Reason) {
        if self.collision {
            return (NodeState::Backup, Reason::IdCollision);
        }
        if let Some(v) = peers.iter().find(|v| v.old_version) {
            return (NodeState::Backup, Reason::OldPeer { peer: v.id });
        }
        // A holder that a live peer hears and we do not: stay out.
        if self.state != NodeState::Master {
            let hidden = peers.iter().find_map(|v| {
                let h = v.holder?;
                let unheard = h != self.p.node_id && h != v.id && !self.is_alive(h);
                (self.is_alive(v.id) && unheard).then_some((h, v.id))
            });
            if let Some((holder, seen_by)) = hidden {
                return (NodeState::Backup, Reason::HeldElsewhere { holder, seen_by });
            }
        }
        let me = self.rank(reach);
        let live = peers
            .iter()
            .filter(|v| self.is_alive(v.id) && v.state != NodeState::Fault);
        let mut best_higher: Option<&PeerView> = None;
        // The same among peers past INIT: the ones a holder yields to.
        let mut best_higher_ready: Option<&PeerView> = None;
        let mut holder: Option<&PeerView> = None;
        for v in live {
            if v.rank() > me && best_higher.is_none_or(|b| v.rank() > b.rank()) {
                best_higher = Some(v);
            }
            if v.rank() > me
                && v.state != NodeState::Init
                && !v.waiting
                && best_higher_ready.is_none_or(|b| v.rank() > b.rank())
            {
                best_higher_ready = Some(v);
            }
            if v.holds_vip && holder.is_none_or(|h| v.rank() > h.rank()) {
                holder = Some(v);
            }
        }
        let outranked = |v: &PeerView| {
            (
                NodeState::Backup,
                Reason::Outranked {
                    by: v.id,
                    rank: v.rank(),
                    holds_vip: v.holds_vip,
                },
            )
        };
        let holding = self.state == NodeState::Master;
        // A node that could not hold the VIPs takes them from nobody who can.
        let delayed = self.preempt_from.is_some();
        // Within preempt_delay a node that does not hold takes from nobody.
        if self.p.preempt && !self.vip_suspect && (holding || !delayed) {
            // The best live node holds the VIP. A higher one still in INIT keeps a
            // node that does not hold it from taking it; the holder keeps it until
            // that node is past INIT (it asks for it by waiting, below), so a
            // higher node crash-looping in INIT causes no outage at each restart.
            let yield_to = if holding {
                best_higher_ready
            } else {
                best_higher
            };
            if let Some(v) = yield_to {
                return outranked(v);
            }
            if !holding {
                if let Some(h) = holder.filter(|h| h.rank() < me) {
                    return (NodeState::Backup, Reason::AwaitingRelease { by: h.id });
                }
            }
        } else if holding {
            // Keep it, unless a higher node also claims it (a healed partition).
            if let Some(v) = holder.filter(|h| h.rank() > me) {
                return outranked(v);
            }
        } else if let Some(v) = holder.or(best_higher) {
            // Without preemption (or before preempt_delay has passed since
            // the start), whoever holds it keeps it.
            if self.p.preempt && delayed && v.holds_vip && v.rank() < me {
                return (NodeState::Backup, Reason::PreemptDelayed { by: v.id });
            }
            return outranked(v);
        }
        (
            NodeState::Master,
            Reason::Elected {
                after: self.last_change.clone(),
            },
        )
    }
}

impl Reason {
    /// A name for the reason's kind, for metrics labels (the text has numbers).
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::InitDeadPassed { .. } => "init_dead_passed",
            Reason::LinkDown => "link_down",
            Reason::Isolated => "isolated",
            Reason::Reconnected => "reconnected",
            Reason::Elected { after: None } => "elected",
            Reason::Elected {
                after: Some(Change::Silent { .. }),
            } => "peer_silent",
            Reason::Elected {
                after: Some(Change::Left { .. }),
            } => "peer_left",
            Reason::Elected {
                after: Some(Change::Gone { .. }),
            } => "peer_gone",
            Reason::Outranked { .. } => "outranked",
            Reason::AwaitingRelease { .. } => "awaiting_release",
            Reason::Lapsed { .. } => "lapsed",
            Reason::HeldElsewhere { .. } => "held_elsewhere",
            Reason::OldPeer { .. } => "old_peer",
            Reason::IdCollision => "id_collision",
            Reason::VipFailed => "vip_failed",
            Reason::VipRetry => "vip_retry",
            Reason::CheckFailed { .. } => "check_failed",
            Reason::Standby => "standby",
            Reason::PreemptDelayed { .. } => "preempt_delayed",
            Reason::NoKey { .. } => "no_witness_key",
        }
    }

    /// The peer the transition is about, if one.
    pub fn peer(&self) -> Option<u32> {
        match self {
            Reason::Elected {
                after:
                    Some(Change::Silent { peer, .. } | Change::Left { peer } | Change::Gone { peer }),
            } => Some(*peer),
            Reason::Outranked { by, .. }
            | Reason::AwaitingRelease { by }
            | Reason::PreemptDelayed { by } => Some(*by),
            Reason::HeldElsewhere { holder, .. } => Some(*holder),
            Reason::OldPeer { peer } => Some(*peer),
            Reason::NoKey { held_by, .. } => *held_by,
            _ => None,
        }
    }

    /// For a takeover from a silent peer: how long it had been silent.
    pub fn silence(&self) -> Option<Duration> {
        match self {
            Reason::Elected {
                after: Some(Change::Silent { silence, .. }),
            } => Some(*silence),
            _ => None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::InitDeadPassed { waited } => {
                write!(
                    f,
                    "init-dead passed ({} ms) without hearing every peer",
                    waited.as_millis()
                )
            }
            Reason::LinkDown => write!(f, "link down"),
            Reason::Isolated => write!(f, "isolated: no peer heard and no ping target answers"),
            Reason::Reconnected => write!(f, "link up and not isolated"),
            Reason::VipFailed => write!(f, "the VIPs cannot be held on this node"),
            Reason::VipRetry => write!(f, "trying the VIPs again"),
            Reason::CheckFailed { check } => write!(f, "check {check} fails"),
            Reason::Standby => write!(f, "standby (hb-user standby): handed over"),
            Reason::PreemptDelayed { by } => write!(
                f,
                "we outrank peer {by}, which holds the VIP: preempt_delay has not passed since our start"
            ),
            Reason::Elected { after: None } => write!(f, "no live peer outranks us"),
            Reason::NoKey { held_by, reachable } => {
                write!(f, "a peer is silent and the witness key is not ours: ")?;
                match (held_by, reachable) {
                    (Some(n), _) => write!(f, "node {n} holds it"),
                    (None, true) => write!(f, "not granted, or our lease ran out"),
                    (None, false) => write!(f, "the witness cannot be reached"),
                }
            }
            Reason::AwaitingRelease { by } => write!(
                f,
                "we outrank peer {by}, which holds the VIP: waiting for it to release it"
            ),
            Reason::Elected { after: Some(c) } => write!(f, "{c}"),
            Reason::HeldElsewhere { holder, seen_by } => write!(
                f,
                "peer {seen_by} sees node {holder} holding the VIP, and we cannot hear node {holder}: staying out"
            ),
            Reason::OldPeer { peer } => write!(
                f,
                "peer {peer} speaks wire version 1: upgrade it; taking nothing while it may hold the VIP"
            ),
            Reason::IdCollision => write!(f, "another machine uses our node id"),
            Reason::Lapsed { silent, dead_after } => write!(
                f,
                "our heartbeats stopped for {} ms > dead-after {} ms (paused or starved): a peer may hold the VIP",
                silent.as_millis(),
                dead_after.as_millis()
            ),
            Reason::Outranked {
                by,
                rank: (reach, priority, id),
                holds_vip,
            } => write!(
                f,
                "peer {by} (priority {priority}, id {id}{}) {}",
                if *reach { "" } else { ", no ping target" },
                if *holds_vip {
                    "holds the VIP and outranks us"
                } else {
                    "outranks us"
                }
            ),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Rounded up: a silence just over dead-after must not print as equal to it.
            Change::Silent {
                peer,
                silence,
                dead_after,
            } => write!(
                f,
                "peer {peer} silent {} ms > dead-after {} ms",
                silence.as_micros().div_ceil(1000),
                dead_after.as_millis()
            ),
            Change::Left { peer } => write!(f, "peer {peer} left"),
            Change::Gone { peer } => write!(
                f,
                "peer {peer}: controller gone (death notice from its kernel)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeState::*;

    const MS: Duration = Duration::from_millis(1);

    fn params(node_id: u32, priority: u8, peers: &[u32]) -> Params {
        Params {
            node_id,
            priority,
            preempt: true,
            preempt_delay: Duration::ZERO,
            dead_after: 300 * MS,
            init_dead: 2000 * MS,
            peers: peers.to_vec(),
            ping_quorum: false,
            fencing: false,
            fence_retry: 1000 * MS,
            witness: None,
            witness_retry: 200 * MS,
        }
    }

    /// A peer heard at `at` ms, advertising `state`.
    fn peer(id: u32, priority: u8, at: u32, state: NodeState) -> PeerView {
        PeerView {
            id,
            last_seen: Some(at * MS),
            left: false,
            gone: false,
            priority,
            state,
            holds_vip: state == Master,
            reaches_ping: true,
            holder: None,
            old_version: false,
            waiting: false,
        }
    }

    fn silent(id: u32, priority: u8) -> PeerView {
        PeerView {
            last_seen: None,
            ..peer(id, priority, 0, Init)
        }
    }

    fn transitions(ev: &[Event]) -> Vec<(NodeState, NodeState)> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Transition { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect()
    }

    fn reason(ev: &[Event]) -> String {
        ev.iter()
            .find_map(|e| match e {
                Event::Transition { reason, .. } => Some(reason.to_string()),
                _ => None,
            })
            .unwrap_or_default()
    }

    #[test]
    fn init_waits_until_every_peer_is_heard() {
        let mut m = Machine::new(params(1, 100, &[2]), Duration::ZERO);
        assert!(m.step(10 * MS, true, true, &[silent(2, 90)]).is_empty());
        assert_eq!(m.state(), Init);
        let ev = m.step(20 * MS, true, true, &[peer(2, 90, 15, Backup)]);
        assert_eq!(ev[0], Event::PeerUp { peer: 2 });
        assert_eq!(transitions(&ev), [(Init, Master)]);
    }

    #[test]
    fn init_ends_at_init_dead_when_a_peer_stays_silent() {
        let mut m = Machine::new(params(1, 100, &[2]), Duration::ZERO);
        assert!(m.step(1999 * MS, true, true, &[silent(2, 90)]).is_empty());
        let ev = m.step(2000 * MS, true, true, &[silent(2, 90)]);
        assert_eq!(transitions(&ev), [(Init, Master)]);
    }

    #[test]
    fn the_lower_node_becomes_backup_with_the_reason() {
        let mut m = Machine::new(params(2, 90, &[1]), Duration::ZERO);
        let ev = m.step(10 * MS, true, true, &[peer(1, 100, 5, Master)]);
        assert_eq!(transitions(&ev), [(Init, Backup)]);
        assert_eq!(m.state(), Backup);
    }

    #[test]
    fn equal_priority_is_broken_by_node_id() {
        let mut hi = Machine::new(params(5, 100, &[4]), Duration::ZERO);
        let mut lo = Machine::new(params(4, 100, &[5]), Duration::ZERO);
        hi.step(10 * MS, true, true, &[peer(4, 100, 5, Init)]);
        lo.step(10 * MS, true, true, &[peer(5, 100, 5, Init)]);
        assert_eq!((hi.state(), lo.state()), (Master, Backup));
    }

    #[test]
    fn backup_takes_over_after_dead_after_with_the_measured_silence() {
        let mut m = Machine::new(params(2, 90, &[1]), Duration::ZERO);
        m.step(10 * MS, true, true, &[peer(1, 100, 10, Master)]);
        // Last heard at 100 ms; at 400 ms the silence is exactly dead-after: still alive.
        assert!(m
            .step(400 * MS, true, true, &[peer(1, 100, 100, Master)])
            .is_empty());
        let ev = m.step(412 * MS, true, true, &[peer(1, 100, 100, Master)]);
        assert_eq!(
            ev[0],
            Event::PeerDown {
                peer: 1,
                silence: 312 * MS
            }
        );
        assert_eq!(transitions(&ev), [(Backup, Master)]);
        assert_eq!(reason(&ev), "peer 1 silent 312 ms > dead-after 300 ms");
    }

    #[test]
    fn a_leave_hands_over_at_once() {
        let mut m = Machine::new(params(2, 90, &[1]), Duration::ZERO);
        m.step(10 * MS, true, true, &[peer(1, 100, 10, Master)]);
        let left = PeerView {
            left: true,
            holds_vip: false,
            ..peer(1, 100, 20, Backup)
        };
        let ev = m.step(21 * MS, true, true, &[left]);
        assert_eq!(ev[0], Event::PeerLeft { peer: 1 });
        assert_eq!(transitions(&ev), [(Backup, Master)]);
        assert_eq!(reason(&ev), "peer 1 left");
    }

    #[test]
    fn a_death_notice_hands_over_at_once_and_a_restart_ends_it() {
        let mut m = Machine::new(fencing(2, 90, &[1]), Duration::ZERO);
        m.step(10 * MS, true, true, &[peer(1, 100, 10, Master)]);
        // Heard 5 ms ago, still holding as far as its last heartbeat says: the
        // notice alone moves the VIP, and needs no fencing.
        let gone = PeerView {
            gone: true,
            ..peer(1, 100, 20, Master)
        };
        let ev = m.step(25 * MS, true, true, &[gone]);
        assert_eq!(ev[0], Event::PeerGone { peer: 1 });
        assert_eq!(transitions(&ev), [(Backup, Master)]);
        assert_eq!(
            reason(&ev),
            "peer 1: controller gone (death notice from its kernel)"
        );
        assert!(m.step(30 * MS, true, true, &[gone]).is_empty(), "once");
        // Its restarted controller is heard: up again. It outranks us, and we
        // yield once it is past INIT.
        let ev = m.step(60 * MS, true, true, &[peer(1, 100, 60, Init)]);
        assert_eq!(ev[0], Event::PeerUp { peer: 1 });
        assert!(transitions(&ev).is_empty(), "not to a node in INIT");
        let ev = m.step(70 * MS, true, true, &[peer(1, 100, 70, Backup)]);
        assert_eq!(transitions(&ev), [(Master, Backup)]);
    }

    #[test]
    fn a_gone_peer_counts_as_heard_in_init() {
        let mut m = Machine::new(params(2, 90, &[1]), Duration::ZERO);
        let gone = PeerView {
            gone: true,
            ..silent(1, 100)
        };
        let ev = m.step(10 * MS, true, true, &[gone]);
        assert_eq!(transitions(&ev), [(Init, Master)], "no wait for init-dead");
    }

    #[test]
    fn preemption_gives_the_vip_back_to_a_returning_higher_node() {
        let mut m = Machine::new(params(2, 90, &[1]), Duration::ZERO);
        m.step(2000 * MS, true, true, &[silent(1, 100)]);
        assert_eq!(m.state(), Master);
        // Node 1 restarts: while it is in INIT we keep the VIP; once it waits for
        // it (BACKUP, not holding) it outranks us, so we release.
        let ev = m.step(3000 * MS, true, true, &[peer(1, 100, 2990, Init)]);
        assert!(transitions(&ev).is_empty());
        let ev = m.step(3010 * MS, true, true, &[peer(1, 100, 3005, Backup)]);
        assert_eq!(transitions(&ev), [(Master, Backup)]);
        assert!(
            reason(&ev).contains("peer 1 (priority 100, id 1) outranks us"),
            "{}",
            reason(&ev)
        );
    }

    #[test]
    fn a_returning_higher_node_waits_for_the_holder_to_release() {
        let mut m = Machine::new(params(1, 100, &[2]), Duration::ZERO);
        // Break before make: node 2 holds the VIP, so we wait rather than add it too.
        let ev = m.step(10 * MS, true, true, &[peer(2, 90, 5, Master)]);
        assert_eq!(transitions(&ev), [(Init, Backup)]);
        assert!(
            reason(&ev).contains("waiting for it to release"),
            "{}",
            reason(&ev)
        );
        let ev = m.step(20 * MS, true, true, &[peer(2, 90, 15, Master)]);
        assert!(transitions(&ev).is_empty());
        // Its first heartbeat after releasing says so: we take it at once.
        let ev = m.step(30 * MS, true, true, &[peer(2, 90, 25, Backup)]);
        assert_eq!(transitions(&ev), [(Backup, Master)]);
        // Had it died instead, dead-after would have let us take over.
        let mut m = Machine::new(params(1, 100, &[2]), Duration::ZERO);
        m.step(10 * MS, true, true, &[peer(2, 90, 5, Master)]);
        let ev = m.step(400 * MS, true, true, &[peer(2, 90, 5, Master)]);
        assert_eq!(transitions(&ev), [(Backup, Master)]);
    }

    #[test]
    fn preempt_delay_leaves_a_lower_holder_alone_until_it_has_passed_since_the_start() {
        let mut p = params(1, 100, &[2]);
        p.preempt_delay = 1000 * MS;
        let mut m = Machine::new(p, Duration::ZERO);
        let ev = m.step(10 * MS, true, true, &[peer(2, 90, 5, Master)]);
        assert_eq!(transitions(&ev), [(Init, Backup)]);
        assert!(reason(&ev).contains("preempt_delay"), "{}", reason(&ev));
        assert!(m.waiting());
        assert_eq!(m.next_deadline(), Some(1000 * MS));
        let ev = m.step(990 * MS, true, true, &[peer(2, 90, 985, Master)]);
        assert!(transitions(&ev).is_empty());
        // Past the delay: preemption as usual, break before make.
        let ev = m.step(1000 * MS, true, true, &[peer(2, 90, 995, Master)]);
        assert!(transitions(&ev).is_empty());
        assert!(m.next_deadline().is_none() && !m.waiting());
        let ev = m.step(1010 * MS, true, true, &[peer(2, 90, 1005, Backup)]);
        assert_eq!(transitions(&ev), [(Backup, Master)]);
        // Nobody holding: the delay takes nothing from anyone, so it waits for nothing.
        let mut p = params(1, 100, &[2]);
        p.preempt_delay = 1000 * MS;
        let mut m = Machine::new(p, Duration::ZERO);
        let ev = m.step(10 * MS, true, true, &[peer(2, 90, 5, Backup)]);
        assert_eq!(transitions(&ev), [(Init, Master)]);
    }

    #[test]
    fn a_holder_keeps_the_vip_while_a_higher_node_waits_out_its_preempt_delay() {
        let mut m = Machine::new(params(2, 90, &[1]), Duration::ZERO);
        m.step(2000 * MS, true, true, &[silent(1, 100)]);
        assert_eq!(m.state(), Master);
        let waiting = PeerView {
            waiting: true,
            ..peer(1, 100, 2990, Backup)
        };
        let ev = m.step(3000 * MS, true, true, &[waiting]);
        assert!(transitions(&ev).is_empty(), "{ev:?}");
        // Its delay over, it asks: we release.
        let ev = m.step(3010 * MS, true, true, &[peer(1, 100, 3005, Backup)]);
        assert_eq!(transitions(&ev), [(Master, Backup)]);
    }

    #[test]
    fn a_holder_keeps_the_vip_while_a_higher_node_crash_loops_in_init() {
        let mut m = Machine::new(params(2, 90, &[1]), Duration::ZERO);
        m.step(2000 * MS, true, true, &[silent(1, 100)]);
        for t in (2010..4000).step_by(10) {
            // Node 1 keeps restarting: heard only in INIT.
            let ev = m.step(t * MS, true, true, &[peer(1, 100, t - 5, Init)]);
            assert!(transitions(&ev).is_empty(), "at {t} ms: {ev:?}");
        }
        assert_eq!(m.state(), Master);
    }

    #[test]
    fn without_preemption_the_holder_keeps_the_vip() {
        let mut p = params(2, 90, &[1]);
        p.preempt = false;
        let mut m = Machine::new(p, Duration::ZERO);
        m.step(2000 * MS, true, true, &[silent(1, 100)]);
        assert_eq!(m.state(), Master);
        assert!(
            transitions(&m.step(3000 * MS, true, true, &[peer(1, 100, 2990, Init)])).is_empty()
        );
        assert!(
            transitions(&m.step(3100 * MS, true, true, &[peer(1, 100, 3090, Backup)])).is_empty()
        );
        assert_eq!(m.state(), Master);
    }

    #[test]
    fn without_preemption_a_returning_higher_node_stays_backup() {
        let mut p = params(1, 100, &[2]);
        p.preempt = false;
        let mut m = Machine::new(p, Duration::ZERO);
        let ev = m.step(10 * MS, true, true, &[peer(2, 90, 5, Master)]);
        assert_eq!(transitions(&ev), [(Init, Backup)]);
        assert!(reason(&ev).contains("holds the VIP"), "{}", reason(&ev));
        // Only when the holder dies does it take over.
        let ev = m.step(400 * MS, true, true, &[peer(2, 90, 5, Master)]);
        assert_eq!(transitions(&ev), [(Backup, Master)]);
    }

    #[test]
    fn never_takes_the_vip_from_a_live_higher_holder() {
        for preempt in [true, false] {
            let mut p = params(2, 90, &[1]);
            p.preempt = preempt;
            let mut m = Machine::new(p, Duration::ZERO);
            for t in (10..1000).step_by(10) {
                m.step(t * MS, true, true, &[peer(1, 100, t - 5, Master)]);
                assert_ne!(m.state(), Master, "preempt={preempt} at {t} ms");
            }
        }
    }

    #[test]
    fn a_holder_yields_to_a_higher_holder_after_a_partition_heals() {
        for preempt in [true, false] {
            let mut p = params(2, 90, &[1]);
            p.preempt = preempt;
            let mut m = Machine::new(p, Duration::ZERO);
            m.step(2000 * MS, true, true, &[silent(1, 100)]);
            assert_eq!(m.state(), Master);
            let ev = m.step(2100 * MS, true, true, &[peer(1, 100, 2095, Master)]);
            assert_eq!(transitions(&ev), [(Master, Backup)], "preempt={preempt}");
        }
    }

    #[test]
    fn link_down_is_fault_and_link_up_waits_in_init() {
        let mut m = Machine::new(params(1, 100, &[2]), Duration::ZERO);
        m.step(10 * MS, true, true, &[peer(2, 90, 5, Backup)]);
        assert_eq!(m.state(), Master);
        let ev = m.step(20 * MS, false, true, &[peer(2, 90, 15, Backup)]);
        assert_eq!(transitions(&ev), [(Master, Fault)]);
        // While down, peers falling silent change nothing.
        m.step(1000 * MS, false, true, &[peer(2, 90, 15, Master)]);
        assert_eq!(m.state(), Fault);
        let ev = m.step(1010 * MS, true, true, &[peer(2, 90, 15, Master)]);
        assert_eq!(transitions(&ev), [(Fault, Init)]);
        // Hearing the peer (now the holder, lower but holding) ends INIT; we wait
        // for it to release before taking the VIP back.
        let ev = m.step(1020 * MS, true, true, &[peer(2, 90, 1015, Master)]);
        assert_eq!(transitions(&ev), [(Init, Backup)]);
        let ev = m.step(1030 * MS, true, true, &[peer(2, 90, 1025, Backup)]);
        assert_eq!(transitions(&ev), [(Backup, Master)]);
    }

    #[test]
    fn fault_peers_do_not_count() {
        let mut m = Machine::new(params(2, 90, &[1]), Duration::ZERO);
        m.step(10 * MS, true, true, &[peer(1, 100, 5, Fault)]);
        assert_eq!(m.state(), Master);
    }

    #[test]
    fn three_nodes_fail_over_in_rank_order() {
        let peers = |t: u32, one: bool, two: bool| {
            let mut v = Vec::new();
            v.push(if one {
                peer(1, 100, t, Master)
            } else {
                peer(1, 100, 0, Master)
            });
            v.push(if two {
                peer(2, 90, t, Backup)
            } else {
                peer(2, 90, 0, Backup)
            });
            v
        };
        let mut third = Machine::new(params(3, 80, &[1, 2]), Duration::ZERO);
        third.step(10 * MS, true, true, &peers(10, true, true));
        assert_eq!(third.state(), Backup);
        // Node 1 dies: node 2 outranks us, stay BACKUP.
        third.step(500 * MS, true, true, &peers(500, false, true));
        assert_eq!(third.state(), Backup);
        // Node 2 dies too: our turn.
        let ev = third.step(1000 * MS, true, true, &peers(500, false, false));
        assert_eq!(transitions(&ev), [(Backup, Master)]);
    }

    #[test]
    fn peer_up_and_down_are_reported_once() {
        let mut m = Machine::new(params(1, 100, &[2]), Duration::ZERO);
        let ev = m.step(10 * MS, true, true, &[peer(2, 90, 5, Backup)]);
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, Event::PeerUp { .. }))
                .count(),
            1
        );
        assert!(m
            .step(20 * MS, true, true, &[peer(2, 90, 15, Backup)])
            .is_empty());
        let ev = m.step(400 * MS, true, true, &[peer(2, 90, 15, Backup)]);
        assert_eq!(
            ev,
            [Event::PeerDown {
                peer: 2,
                silence: 385 * MS
            }]
        );
        assert!(m
            .step(500 * MS, true, true, &[peer(2, 90, 15, Backup)])
            .is_empty());
    }

    fn quorum(node_id: u32, priority: u8, peers: &[u32]) -> Params {
        Params {
            ping_quorum: true,
            ..params(node_id, priority, peers)
        }
    }

    #[test]
    fn isolated_node_goes_fault_and_never_takes_the_vip() {
        let mut m = Machine::new(quorum(1, 100, &[2]), Duration::ZERO);
        m.step(10 * MS, true, true, &[peer(2, 90, 5, Backup)]);
        assert_eq!(m.state(), Master);
        // Partition: peer silent and no ping target answers.
        let ev = m.step(400 * MS, true, false, &[peer(2, 90, 5, Backup)]);
        assert_eq!(transitions(&ev), [(Master, Fault)]);
        assert_eq!(
            reason(&ev),
            "isolated: no peer heard and no ping target answers"
        );
        for t in (500..3000).step_by(100) {
            m.step(t * MS, true, false, &[peer(2, 90, 5, Backup)]);
            assert_eq!(m.state(), Fault);
        }
        // The partition heals: the ping target answers again -> INIT, then the election.
        let ev = m.step(3000 * MS, true, true, &[peer(2, 90, 2995, Master)]);
        assert_eq!(transitions(&ev), [(Fault, Init)]);
    }

    #[test]
    fn the_side_that_reaches_the_ping_target_keeps_or_takes_the_vip() {
        let mut lower = Machine::new(quorum(2, 90, &[1]), Duration::ZERO);
        lower.step(10 * MS, true, true, &[peer(1, 100, 5, Master)]);
        assert_eq!(lower.state(), Backup);
        let ev = lower.step(400 * MS, true, true, &[peer(1, 100, 5, Master)]);
        assert_eq!(transitions(&ev), [(Backup, Master)]);
    }

    #[test]
    fn a_node_without_ping_targets_is_outranked_by_one_with() {
        let mut m = Machine::new(quorum(1, 100, &[2]), Duration::ZERO);
        // We cannot reach the target but still hear peer 2, which can: it outranks us
        // despite its lower priority.
        let p2 = peer(2, 90, 5, Backup);
        let ev = m.step(10 * MS, true, false, &[p2]);
        assert_eq!(transitions(&ev), [(Init, Backup)]);
        assert!(reason(&ev).contains("peer 2"), "{}", reason(&ev));
        let no_ping = PeerView {
            reaches_ping: false,
            ..p2
        };
        let mut m = Machine::new(quorum(1, 100, &[2]), Duration::ZERO);
        m.step(10 * MS, true, false, &[no_ping]);
        assert_eq!(m.state(), Master, "equal reachability: priority decides");
    }

    fn fencing(node_id: u32, priority: u8, peers: &[u32]) -> Params {
        Params {
            fencing: true,
            ..params(node_id, priority, peers)
        }
    }

    #[test]
    fn a_silent_peer_is_fenced_before_the_takeover() {
        let mut m = Machine::new(fencing(2, 90, &[1]), Duration::ZERO);
        m.step(10 * MS, true, true, &[peer(1, 100, 5, Master)]);
        let ev = m.step(400 * MS, true, true, &[peer(1, 100, 5, Master)]);
        assert!(
            ev.contains(&Event::FenceNeeded { peers: vec![1] }),
            "{ev:?}"
        );
        assert_eq!(m.state(), Backup, "no VIP before fencing succeeds");
        // Pending: not asked again.
        let ev = m.step(410 * MS, true, true, &[peer(1, 100, 5, Master)]);
        assert!(ev.is_empty(), "{ev:?}");
        m.fence_done(&[1], true, 420 * MS);
        let ev = m.step(430 * MS, true, true, &[peer(1, 100, 5, Master)]);
        assert_eq!(transitions(&ev), [(Backup, Master)]);
    }

    #[test]
    fn a_failed_fence_keeps_backup_and_retries_later() {
        let mut m = Machine::new(fencing(2, 90, &[1]), Duration::ZERO);
        m.step(10 * MS, true, true, &[peer(1, 100, 5, Master)]);
        m.step(400 * MS, true, true, &[peer(1, 100, 5, Master)]);
        m.fence_done(&[1], false, 500 * MS);
        for t in (510..1500).step_by(50) {
            let ev = m.step(t * MS, true, true, &[peer(1, 100, 5, Master)]);
            assert!(ev.is_empty(), "at {t} ms: {ev:?}");
            assert_eq!(m.state(), Backup);
        }
        let ev = m.step(1500 * MS, true, true, &[peer(1, 100, 5, Master)]);
        assert_eq!(
            ev,
            [Event::FenceNeeded { peers: vec![1] }],
            "retried after fence_retry"
        );
    }

    #[test]
    fn a_graceful_leave_needs_no_fencing() {
        let mut m = Machine::new(fencing(2, 90, &[1]), Duration::ZERO);
        m.step(10 * MS, true, true, &[peer(1, 100, 5, Master)]);
        let left = PeerView {
            left: true,
            holds_vip: false,
            ..peer(1, 100, 20, Backup)
        };
        let ev = m.step(21 * MS, true, true, &[left]);
        assert_eq!(transitions(&ev), [(Backup, Master)]);
    }

    #[test]
    fn a_fenced_peer_that_returns_and_dies_again_is_fenced_again() {
        let mut m = Machine::new(fencing(2, 90, &[1]), Duration::ZERO);
        m.step(10 * MS, true, true, &[peer(1, 100, 5, Master)]);
        m.step(400 * MS, true, true, &[peer(1, 100, 5, Master)]);
        m.fence_done(&[1], true, 410 * MS);
        m.step(420 * MS, true, true, &[peer(1, 100, 5, Master)]);
        assert_eq!(m.state(), Master);
        // Back, past INIT and waiting for the VIP: we yield.
        m.step(500 * MS, true, true, &[peer(1, 100, 495, Backup)]);
        assert_eq!(m.state(), Backup);
        let ev = m.step(900 * MS, true, true, &[peer(1, 100, 495, Master)]);
        assert!(
            ev.contains(&Event::FenceNeeded { peers: vec![1] }),
            "{ev:?}"
        );
    }

    fn owned(until_ms: u32) -> KeyView {
        KeyView {
            owned_until: Some(until_ms * MS),
            held_by: None,
            reachable: true,
        }
    }

    #[test]
    fn with_fencing_the_key_comes_first_then_the_fence() {
        let mut p = fencing(2, 90, &[1]);
        p.witness = Some(WitnessDown::Keep);
        let mut m = Machine::new(p, Duration::ZERO);
        m.step(10 * MS, true, true, &[peer(1, 100, 5, Master)]);
        // Silent: the key is asked for; nothing is fenced without it (the
        // peer may be alive and holding, across a partition).
        let ev = m.step(400 * MS, true, true, &[peer(1, 100, 95, Master)]);
        assert!(ev.contains(&Event::KeyNeeded { gone: vec![] }), "{ev:?}");
        assert!(!ev.iter().any(|e| matches!(e, Event::FenceNeeded { .. })));
        m.witness(owned(5000));
        let ev = m.step(410 * MS, true, true, &[peer(1, 100, 95, Master)]);
        assert!(
            ev.contains(&Event::FenceNeeded { peers: vec![1] }),
            "{ev:?}"
        );
        assert_eq!(m.state(), Backup);
        m.fence_done(&[1], true, 420 * MS);
        let ev = m.step(430 * MS, true, true, &[peer(1, 100, 95, Master)]);
        assert_eq!(transitions(&ev), [(Backup, Master)]);
    }

    #[test]
    fn with_ping_quorum_an_isolated_node_is_fault_whatever_the_witness_says() {
        let mut p = quorum(1, 100, &[2]);
        p.witness = Some(WitnessDown::Keep);
        let mut m = Machine::new(p, Duration::ZERO);
        m.witness(owned(9000));
        m.step(10 * MS, true, true, &[peer(2, 90, 5, Backup)]);
        m.step(20 * MS, true, true, &[peer(2, 90, 15, Backup)]);
        assert_eq!(m.state(), Master);
        let ev = m.step(500 * MS, true, false, &[peer(2, 90, 15, Backup)]);
        assert_eq!(transitions(&ev), [(Master, Fault)]);
    }

    #[test]
    fn a_holder_that_hears_its_peers_keeps_the_vips_without_the_key() {
        let mut p = params(1, 100, &[2]);
        p.witness = Some(WitnessDown::Keep);
        let mut m = Machine::new(p, Duration::ZERO);
        m.witness(owned(1000));
        m.step(10 * MS, true, true, &[peer(2, 90, 5, Backup)]);
        assert_eq!(m.state(), Master);
        // The witness is gone and our lease ran out: a peer we hear waits
        // for us, so the holder keeps them, and asks again.
        m.witness(KeyView::default());
        for t in (1100..3000).step_by(100) {
            let ev = m.step(t * MS, true, true, &[peer(2, 90, t - 5, Backup)]);
            assert!(transitions(&ev).is_empty(), "at {t} ms: {ev:?}");
        }
        assert_eq!(m.state(), Master);
    }
}
