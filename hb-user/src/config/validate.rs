//! The rules between settings, each one a [`Rule`]. A setting's own syntax is
//! checked by its parser (`parse.rs`); what is checked here is what no single
//! value can show alone.

use std::{fmt, net::IpAddr, time::Duration};

use super::{table::Table, PeerAddr, Vip};

/// A broken rule, and the setting (its table id) to blame for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Broken {
    pub setting: &'static str,
    pub rule: Rule,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// One lost heartbeat must not be enough to declare a peer dead.
    DeadAfterTooShort {
        dead_after: Duration,
        interval: Duration,
    },
    /// A restarted node that stops waiting before a live holder could have
    /// been heard takes the VIP from it: two holders at every restart.
    InitDeadTooShort {
        init_dead: Duration,
        dead_after: Duration,
        /// How the user named dead_after (flag or file key).
        dead_after_field: String,
    },
    /// A peer given with this node's own id.
    PeerIsThisNode { peer: PeerAddr },
    /// A VIP moves between nodes: a peer's address must stay put, or
    /// heartbeats to it would reach whoever holds the VIP, us included.
    VipIsPeer { vip: Vip, peer: u32 },
    /// The holder would always "reach" a ping target that is a VIP: itself.
    VipIsPingTarget { vip: Vip },
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = humantime::format_duration;
        match self {
            Rule::DeadAfterTooShort { dead_after, interval } => write!(
                f,
                "{} must be more than twice the interval ({}), so that one lost heartbeat is not a failure",
                d(*dead_after),
                d(*interval)
            ),
            Rule::InitDeadTooShort { init_dead, dead_after, dead_after_field } => write!(
                f,
                "{} is below {dead_after_field} ({}): a restarted node would take the VIP before it could hear a live holder",
                d(*init_dead),
                d(*dead_after)
            ),
            Rule::PeerIsThisNode { peer } => write!(
                f,
                "{}@{}: peer id {} is this node's own id",
                peer.id, peer.addr, peer.id
            ),
            Rule::VipIsPeer { vip, peer } => write!(
                f,
                "{vip} is peer {peer}'s address: a VIP must be an address no node has"
            ),
            Rule::VipIsPingTarget { vip } => write!(
                f,
                "{vip} is a ping target: the holder would answer its own quorum pings"
            ),
        }
    }
}

/// Every rule, in the order a user fixes them: timers, then membership, then VIPs.
/// `field` names a setting as the user gave it (flag or file key).
pub fn check(t: &Table, field: impl Fn(&'static str) -> String) -> Result<(), Broken> {
    let broken = |setting, rule| Err(Broken { setting, rule });
    let (interval, dead_after, init_dead) =
        (t.timers.interval, t.timers.dead_after, t.timers.init_dead);
    if dead_after <= interval * 2 {
        return broken(
            "dead_after",
            Rule::DeadAfterTooShort {
                dead_after,
                interval,
            },
        );
    }
    if init_dead < dead_after {
        return broken(
            "init_dead",
            Rule::InitDeadTooShort {
                init_dead,
                dead_after,
                dead_after_field: field("dead_after"),
            },
        );
    }
    if let Some(p) = t
        .membership
        .peers
        .iter()
        .find(|p| p.id == t.membership.node_id)
    {
        return broken("peers", Rule::PeerIsThisNode { peer: p.clone() });
    }
    vips_apart(&t.election.vips, &t.membership.peers, &t.membership.ping)
}

/// VIPs against the addresses that must stay put.
pub fn vips_apart(vips: &[Vip], peers: &[PeerAddr], ping: &[IpAddr]) -> Result<(), Broken> {
    for v in vips {
        if let Some(p) = peers.iter().find(|p| p.addr == v.addr) {
            return Err(Broken {
                setting: "vips",
                rule: Rule::VipIsPeer {
                    vip: *v,
                    peer: p.id,
                },
            });
        }
        if ping.contains(&v.addr) {
            return Err(Broken {
                setting: "vips",
                rule: Rule::VipIsPingTarget { vip: *v },
            });
        }
    }
    Ok(())
}
