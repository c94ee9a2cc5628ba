//! The failover state machine: pure logic, no I/O, time passed in. The controller
//! feeds it what the XDP program saw of each peer and applies what it decides.
//!
//! States: INIT (just started: wait until every peer is heard or `init_dead`
//! passes), BACKUP, MASTER (holds the VIPs), FAULT (our link is down).
//! The VIP holder is the live node with the highest (priority, node id).

use hb_common::NodeState;
use std::{collections::BTreeMap, fmt, time::Duration};

/// The settings the machine needs.
#[derive(Clone, Debug)]
pub struct Params {
    pub node_id: u32,
    pub priority: u8,
    pub preempt: bool,
    pub dead_after: Duration,
    pub init_dead: Duration,
    /// Configured peer ids.
    pub peers: Vec<u32>,
}

/// What we know of one peer right now (from the peers map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub id: u32,
    /// Monotonic time of its last accepted message, None if never heard.
    pub last_seen: Option<Duration>,
    /// Its last message was a leave: it stopped on purpose.
    pub left: bool,
    pub priority: u8,
    pub state: NodeState,
    pub holds_vip: bool,
}

/// A node's rank: the highest wins.
pub type Rank = (u8, u32);

/// Why something happened, for the log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// INIT ended because init-dead passed.
    InitDeadPassed {
        waited: Duration,
    },
    LinkDown,
    LinkUp,
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
    Transition {
        from: NodeState,
        to: NodeState,
        reason: Reason,
    },
}

pub struct Machine {
    p: Params,
    state: NodeState,
    /// When the current INIT began.
    init_since: Duration,
    alive: BTreeMap<u32, bool>,
    /// The last peer change seen since the last transition, kept for its reason.
    last_change: Option<Change>,
}

impl Machine {
    pub fn new(p: Params, now: Duration) -> Self {
        let alive = p.peers.iter().map(|&id| (id, false)).collect();
        Self {
            p,
            state: NodeState::Init,
            init_since: now,
            alive,
            last_change: None,
        }
    }

    pub fn state(&self) -> NodeState {
        self.state
    }

    pub fn rank(&self) -> Rank {
        (self.p.priority, self.p.node_id)
    }

    /// Whether `peer` was alive at the last step.
    pub fn is_alive(&self, peer: u32) -> bool {
        self.alive.get(&peer).copied().unwrap_or(false)
    }

    fn silence(&self, v: &PeerView, now: Duration) -> Duration {
        now.saturating_sub(v.last_seen.unwrap_or(self.init_since))
    }

    /// Advances the machine to `now`, given our link state and the peers' views.
    pub fn step(&mut self, now: Duration, link_up: bool, peers: &[PeerView]) -> Vec<Event> {
        let mut events = Vec::new();
        // Peer liveness first: it feeds the election and the up/down log lines.
        for v in peers {
            let heard_recently = v.last_seen.is_some() && self.silence(v, now) <= self.p.dead_after;
            let alive = heard_recently && !v.left;
            let was = self.alive.insert(v.id, alive).unwrap_or(false);
            if alive && !was {
                events.push(Event::PeerUp { peer: v.id });
            } else if !alive && was {
                if v.left {
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

        let (to, reason) = self.decide(now, link_up, peers);
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

    fn decide(&self, now: Duration, link_up: bool, peers: &[PeerView]) -> (NodeState, Reason) {
        use NodeState::*;
        if !link_up {
            return (Fault, Reason::LinkDown);
        }
        match self.state {
            // Back from FAULT: peers look silent only because we could not hear them;
            // wait as a fresh start would rather than grab the VIP.
            Fault => return (Init, Reason::LinkUp),
            Init => {
                let waited = now.saturating_sub(self.init_since);
                // A peer that said it left is accounted for as much as a live one.
                let all_heard = self.alive.iter().all(|(id, &alive)| {
                    alive
                        || peers
                            .iter()
                            .any(|v| v.id == *id && v.left && v.last_seen.is_some())
                });
                if !all_heard && waited < self.p.init_dead {
                    return (Init, Reason::LinkUp); // no transition, so no reason is shown
                }
                let (to, elect) = self.elect(peers);
                // Taking the VIP without having heard everyone deserves saying so.
                if to == Master && !all_heard {
                    return (to, Reason::InitDeadPassed { waited });
                }
                return (to, elect);
            }
            Backup | Master => {}
        }
        self.elect(peers)
    }

    /// BACKUP or MASTER, from the live peers' ranks and claims.
    fn elect(&self, peers: &[PeerView]) -> (NodeState, Reason) {
        let me = self.rank();
        let live = peers
            .iter()
            .filter(|v| self.is_alive(v.id) && v.state != NodeState::Fault);
        let mut best_higher: Option<&PeerView> = None;
        let mut holder: Option<&PeerView> = None;
        for v in live {
            let r = (v.priority, v.id);
            if r > me && best_higher.is_none_or(|b| r > (b.priority, b.id)) {
                best_higher = Some(v);
            }
            if v.holds_vip && holder.is_none_or(|h| r > (h.priority, h.id)) {
                holder = Some(v);
            }
        }
        let outranked = |v: &PeerView| {
            (
                NodeState::Backup,
                Reason::Outranked {
                    by: v.id,
                    rank: (v.priority, v.id),
                    holds_vip: v.holds_vip,
                },
            )
        };
        let holding = self.state == NodeState::Master;
        if self.p.preempt {
            // The best live node holds the VIP; a higher one still in INIT counts, since
            // it takes over as soon as it has heard its peers.
            if let Some(v) = best_higher {
                return outranked(v);
            }
        } else if holding {
            // Keep it, unless a higher node also claims it (a healed partition).
            if let Some(v) = holder.filter(|h| (h.priority, h.id) > me) {
                return outranked(v);
            }
        } else if let Some(v) = holder.or(best_higher) {
            // Without preemption, whoever holds it keeps it.
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
            Reason::LinkUp => write!(f, "link up again"),
            Reason::Elected { after: None } => write!(f, "no live peer outranks us"),
            Reason::Elected { after: Some(c) } => write!(f, "{c}"),
            Reason::Outranked {
                by,
                rank,
                holds_vip,
            } => write!(
                f,
                "peer {by} (priority {}, id {}) {}",
                rank.0,
                rank.1,
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
            Change::Silent {
                peer,
                silence,
                dead_after,
            } => write!(
                f,
                "peer {peer} silent {} ms > dead-after {} ms",
                silence.as_micros().div_ceil(1000), // rounded up: just over dead-after must not print as equal
                dead_after.as_millis()
            ),
            Change::Left { peer } => write!(f, "peer {peer} left"),
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
            dead_after: 300 * MS,
            init_dead: 2000 * MS,
            peers: peers.to_vec(),
        }
    }

    /// A peer heard at `at` ms, advertising `state`.
    fn peer(id: u32, priority: u8, at: u32, state: NodeState) -> PeerView {
        PeerView {
            id,
            last_seen: Some(at * MS),
            left: false,
            priority,
            state,
            holds_vip: state == Master,
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
        assert!(m.step(10 * MS, true, &[silent(2, 90)]).is_empty());
        assert_eq!(m.state(), Init);
        let ev = m.step(20 * MS, true, &[peer(2, 90, 15, Backup)]);
        assert_eq!(ev[0], Event::PeerUp { peer: 2 });
        assert_eq!(transitions(&ev), [(Init, Master)]);
    }

    #[test]
    fn init_ends_at_init_dead_when_a_peer_stays_silent() {
        let mut m = Machine::new(params(1, 100, &[2]), Duration::ZERO);
        assert!(m.step(1999 * MS, true, &[silent(2, 90)]).is_empty());
        let ev = m.step(2000 * MS, true, &[silent(2, 90)]);
        assert_eq!(transitions(&ev), [(Init, Master)]);
    }

    #[test]
    fn the_lower_node_becomes_backup_with_the_reason() {
        let mut m = Machine::new(params(2, 90, &[1]), Duration::ZERO);
        let ev = m.step(10 * MS, true, &[peer(1, 100, 5, Master)]);
        assert_eq!(transitions(&ev), [(Init, Backup)]);
        assert_eq!(m.state(), Backup);
    }

    #[test]
    fn equal_priority_is_broken_by_node_id() {
        let mut hi = Machine::new(params(5, 100, &[4]), Duration::ZERO);
        let mut lo = Machine::new(params(4, 100, &[5]), Duration::ZERO);
        hi.step(10 * MS, true, &[peer(4, 100, 5, Init)]);
        lo.step(10 * MS, true, &[peer(5, 100, 5, Init)]);
        assert_eq!((hi.state(), lo.state()), (Master, Backup));
    }

    #[test]
    fn backup_takes_over_after_dead_after_with_the_measured_silence() {
        let mut m = Machine::new(params(2, 90, &[1]), Duration::ZERO);
        m.step(10 * MS, true, &[peer(1, 100, 10, Master)]);
        // Last heard at 100 ms; at 400 ms the silence is exactly dead-after: still alive.
        assert!(m
            .step(400 * MS, true, &[peer(1, 100, 100, Master)])
            .is_empty());
        let ev = m.step(412 * MS, true, &[peer(1, 100, 100, Master)]);
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
        m.step(10 * MS, true, &[peer(1, 100, 10, Master)]);
        let left = PeerView {
            left: true,
            holds_vip: false,
            ..peer(1, 100, 20, Backup)
        };
        let ev = m.step(21 * MS, true, &[left]);
        assert_eq!(ev[0], Event::PeerLeft { peer: 1 });
        assert_eq!(transitions(&ev), [(Backup, Master)]);
        assert_eq!(reason(&ev), "peer 1 left");
    }

    #[test]
    fn preemption_gives_the_vip_back_to_a_returning_higher_node() {
        let mut m = Machine::new(params(2, 90, &[1]), Duration::ZERO);
        m.step(2000 * MS, true, &[silent(1, 100)]);
        assert_eq!(m.state(), Master);
        // Node 1 restarts: INIT, not holding; it outranks us, so we release.
        let ev = m.step(3000 * MS, true, &[peer(1, 100, 2990, Init)]);
        assert_eq!(transitions(&ev), [(Master, Backup)]);
        assert!(
            reason(&ev).contains("peer 1 (priority 100, id 1) outranks us"),
            "{}",
            reason(&ev)
        );
    }

    #[test]
    fn without_preemption_the_holder_keeps_the_vip() {
        let mut p = params(2, 90, &[1]);
        p.preempt = false;
        let mut m = Machine::new(p, Duration::ZERO);
        m.step(2000 * MS, true, &[silent(1, 100)]);
        assert_eq!(m.state(), Master);
        assert!(transitions(&m.step(3000 * MS, true, &[peer(1, 100, 2990, Init)])).is_empty());
        assert!(transitions(&m.step(3100 * MS, true, &[peer(1, 100, 3090, Backup)])).is_empty());
        assert_eq!(m.state(), Master);
    }

    #[test]
    fn without_preemption_a_returning_higher_node_stays_backup() {
        let mut p = params(1, 100, &[2]);
        p.preempt = false;
        let mut m = Machine::new(p, Duration::ZERO);
        let ev = m.step(10 * MS, true, &[peer(2, 90, 5, Master)]);
        assert_eq!(transitions(&ev), [(Init, Backup)]);
        assert!(reason(&ev).contains("holds the VIP"), "{}", reason(&ev));
        // Only when the holder dies does it take over.
        let ev = m.step(400 * MS, true, &[peer(2, 90, 5, Master)]);
        assert_eq!(transitions(&ev), [(Backup, Master)]);
    }

    #[test]
    fn never_takes_the_vip_from_a_live_higher_holder() {
        for preempt in [true, false] {
            let mut p = params(2, 90, &[1]);
            p.preempt = preempt;
            let mut m = Machine::new(p, Duration::ZERO);
            for t in (10..1000).step_by(10) {
                m.step(t * MS, true, &[peer(1, 100, t - 5, Master)]);
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
            m.step(2000 * MS, true, &[silent(1, 100)]);
            assert_eq!(m.state(), Master);
            let ev = m.step(2100 * MS, true, &[peer(1, 100, 2095, Master)]);
            assert_eq!(transitions(&ev), [(Master, Backup)], "preempt={preempt}");
        }
    }

    #[test]
    fn link_down_is_fault_and_link_up_waits_in_init() {
        let mut m = Machine::new(params(1, 100, &[2]), Duration::ZERO);
        m.step(10 * MS, true, &[peer(2, 90, 5, Backup)]);
        assert_eq!(m.state(), Master);
        let ev = m.step(20 * MS, false, &[peer(2, 90, 15, Backup)]);
        assert_eq!(transitions(&ev), [(Master, Fault)]);
        // While down, peers falling silent change nothing.
        m.step(1000 * MS, false, &[peer(2, 90, 15, Master)]);
        assert_eq!(m.state(), Fault);
        let ev = m.step(1010 * MS, true, &[peer(2, 90, 15, Master)]);
        assert_eq!(transitions(&ev), [(Fault, Init)]);
        // Hearing the peer (now the holder, lower but holding) ends INIT.
        let ev = m.step(1020 * MS, true, &[peer(2, 90, 1015, Master)]);
        assert_eq!(transitions(&ev), [(Init, Master)]);
    }

    #[test]
    fn fault_peers_do_not_count() {
        let mut m = Machine::new(params(2, 90, &[1]), Duration::ZERO);
        m.step(10 * MS, true, &[peer(1, 100, 5, Fault)]);
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
        third.step(10 * MS, true, &peers(10, true, true));
        assert_eq!(third.state(), Backup);
        // Node 1 dies: node 2 outranks us, stay BACKUP.
        third.step(500 * MS, true, &peers(500, false, true));
        assert_eq!(third.state(), Backup);
        // Node 2 dies too: our turn.
        let ev = third.step(1000 * MS, true, &peers(500, false, false));
        assert_eq!(transitions(&ev), [(Backup, Master)]);
    }

    #[test]
    fn peer_up_and_down_are_reported_once() {
        let mut m = Machine::new(params(1, 100, &[2]), Duration::ZERO);
        let ev = m.step(10 * MS, true, &[peer(2, 90, 5, Backup)]);
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, Event::PeerUp { .. }))
                .count(),
            1
        );
        assert!(m.step(20 * MS, true, &[peer(2, 90, 15, Backup)]).is_empty());
        let ev = m.step(400 * MS, true, &[peer(2, 90, 15, Backup)]);
        assert_eq!(
            ev,
            [Event::PeerDown {
                peer: 2,
                silence: 385 * MS
            }]
        );
        assert!(m
            .step(500 * MS, true, &[peer(2, 90, 15, Backup)])
            .is_empty());
    }
}
