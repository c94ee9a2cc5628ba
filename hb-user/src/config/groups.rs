//! `[group.NAME]` and `[sync.NAME]` tables: several VIP groups per node, like
//! keepalived's `vrrp_instance`s and `vrrp_sync_group`s. Without group tables
//! the top-level `vip`, `priority`, `preempt` and `notify` make one group,
//! `default`, that tracks every check. A group's keys default to the
//! top-level settings of the same name, so a value shared by every group is
//! written once.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;

use super::{
    parse::{command, duration, iface_name, int, vip},
    routes::{self, RouteSpec, RuleSpec},
    table::Table,
    validate, ConfigError, Sources, Vip,
};
use crate::hooks::NotifyArgs;
use hb_common::wire2::GROUPS;

/// The group a config without `[group.NAME]` tables has.
pub const DEFAULT_GROUP: &str = "default";

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupFile {
    id: Option<i64>,
    vip: Option<Vec<String>>,
    iface: Option<String>,
    priority: Option<i64>,
    preempt: Option<bool>,
    preempt_delay: Option<String>,
    track: Option<Vec<String>>,
    routes: Option<Vec<String>>,
    rules: Option<Vec<String>>,
    notify: Option<String>,
    notify_args: Option<String>,
    notify_master: Option<String>,
    notify_backup: Option<String>,
    notify_fault: Option<String>,
    notify_stop: Option<String>,
    notify_master_rx_lower_pri: Option<String>,
}

/// keepalived's per-state notify commands (`notify_master`, `notify_backup`,
/// `notify_fault`, `notify_stop`, `notify_master_rx_lower_pri`), run as
/// written: (state or event, command).
fn on_state(
    cmds: [Option<String>; 5],
    field: impl Fn(&str) -> String,
) -> Result<Vec<(&'static str, String)>, ConfigError> {
    let mut out = Vec::new();
    let keys = [
        ("notify_master", "MASTER"),
        ("notify_backup", "BACKUP"),
        ("notify_fault", "FAULT"),
        ("notify_stop", crate::hooks::STOP),
        ("notify_master_rx_lower_pri", crate::hooks::RX_LOWER),
    ];
    for ((key, state), cmd) in keys.into_iter().zip(cmds) {
        if let Some(c) = cmd {
            out.push((
                state,
                command(&c).map_err(|m| ConfigError::new(field(key), m))?,
            ));
        }
    }
    Ok(out)
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct SyncFile {
    groups: Vec<String>,
    notify: Option<String>,
    notify_args: Option<String>,
    notify_master: Option<String>,
    notify_backup: Option<String>,
    notify_fault: Option<String>,
    notify_stop: Option<String>,
}

/// A VIP of a group, with the interface it goes on when named (`dev IF`,
/// else the group's `iface`); none: the heartbeat link whose subnet holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupVip {
    pub vip: Vip,
    pub iface: Option<String>,
}

/// One VIP group, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    pub name: String,
    /// Its place in heartbeats (wire v2 carries [`GROUPS`]): `id` - 1. Every
    /// node must give a group the same id.
    pub slot: usize,
    pub vips: Vec<GroupVip>,
    pub priority: u8,
    pub preempt: bool,
    /// After the start, how long a node waits before it takes the group from
    /// a lower-priority holder (keepalived's `preempt_delay`).
    pub preempt_delay: Duration,
    /// The checks it tracks: (name, weight), the check's own weight unless
    /// the track line gives one. The default group tracks every check.
    pub track: Vec<(String, i32)>,
    pub notify: Option<String>,
    pub notify_args: NotifyArgs,
    /// Commands run as written on entering a state (`notify_master` & co).
    pub on_state: Vec<(&'static str, String)>,
    /// Routes and rules that move with it (keepalived's `virtual_routes`
    /// and `virtual_rules`).
    pub routes: Vec<RouteSpec>,
    pub rules: Vec<RuleSpec>,
    /// The sync group it moves with, if any.
    pub sync: Option<String>,
}

/// Groups that move together (keepalived's `vrrp_sync_group`): they elect
/// as one, so one member's failing check moves every member.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncSpec {
    pub name: String,
    /// Member groups, in the order given.
    pub groups: Vec<String>,
    pub notify: Option<String>,
    pub notify_args: NotifyArgs,
    pub on_state: Vec<(&'static str, String)>,
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// The groups and sync groups of the file, or the default group.
pub(super) fn resolve(
    src: &Sources,
    table: &Table,
    checks: &[crate::checks::CheckSpec],
    groups: BTreeMap<String, GroupFile>,
    syncs: BTreeMap<String, SyncFile>,
) -> Result<(Vec<GroupSpec>, Vec<SyncSpec>), ConfigError> {
    let e = &table.election;
    let h = &table.hooks;
    if groups.is_empty() {
        if let Some(name) = syncs.keys().next() {
            return Err(ConfigError::new(
                src.file_key(&format!("sync.{name}")),
                "a sync group needs [group.NAME] tables to name",
            ));
        }
        let default = GroupSpec {
            name: DEFAULT_GROUP.into(),
            slot: 0,
            vips: e
                .vips
                .iter()
                .map(|&vip| GroupVip { vip, iface: None })
                .collect(),
            priority: e.priority,
            preempt: e.preempt,
            preempt_delay: e.preempt_delay,
            track: checks.iter().map(|c| (c.name.clone(), c.weight)).collect(),
            notify: h.notify.clone(),
            notify_args: h.notify_args,
            on_state: Vec::new(),
            routes: Vec::new(),
            rules: Vec::new(),
            sync: None,
        };
        return Ok((vec![default], Vec::new()));
    }
    if !e.vips.is_empty() {
        return Err(ConfigError::new(
            src.field("vips"),
            "with [group.NAME] tables, VIPs go in their groups (vip = [...] in each)",
        ));
    }
    if groups.len() > GROUPS {
        return Err(ConfigError::new(
            src.file_key("group"),
            format!("{} groups: heartbeats carry at most {GROUPS}", groups.len()),
        ));
    }
    // A group without an id takes the lowest id no group names, in name
    // order: adding a group with its id moves no other group.
    let named: Vec<i64> = groups.values().filter_map(|g| g.id).collect();
    let mut free = (0..GROUPS).filter(|s| !named.contains(&(*s as i64 + 1)));
    let mut out = Vec::new();
    for (name, g) in groups {
        let field = |key: &str| src.file_key(&format!("group.{name}.{key}"));
        let bad = |key: &str, m: String| ConfigError::new(field(key), m);
        if !name_ok(&name) {
            return Err(ConfigError::new(
                src.file_key(&format!("group.{name}")),
                "a group's name is letters, digits, '_', '-' or '.'",
            ));
        }
        let slot = match g.id {
            None => free.next().unwrap_or(0),
            Some(id) => {
                int::<u8>(&id.to_string(), 1, GROUPS as u8).map_err(|m| bad("id", m))? as usize - 1
            }
        };
        if let Some(other) = out.iter().find(|o: &&GroupSpec| o.slot == slot) {
            return Err(bad(
                "id",
                format!(
                    "{} is group {}'s id too (a group without an id takes the lowest free one, in name order)",
                    slot + 1,
                    other.name
                ),
            ));
        }
        let iface = match g.iface {
            Some(i) => {
                iface_name(&i).map_err(|m| bad("iface", m))?;
                Some(i)
            }
            None => None,
        };
        let mut vips: Vec<GroupVip> = Vec::new();
        for s in g.vip.unwrap_or_default() {
            let v = group_vip(&s, iface.as_deref()).map_err(|m| bad("vip", m))?;
            vips.push(v);
        }
        let priority = match g.priority {
            Some(p) => int::<u8>(&p.to_string(), 0, u8::MAX).map_err(|m| bad("priority", m))?,
            None => e.priority,
        };
        let preempt_delay = match g.preempt_delay {
            Some(d) => duration(&d).map_err(|m| bad("preempt_delay", m))?,
            None => e.preempt_delay,
        };
        let mut track = Vec::new();
        for t in g.track.unwrap_or_default() {
            let (check, weight) = track_entry(&t, checks).map_err(|m| bad("track", m))?;
            if track.iter().any(|(c, _)| *c == check) {
                return Err(bad("track", format!("{check} is tracked twice")));
            }
            track.push((check, weight));
        }
        let notify = match g.notify {
            Some(c) => Some(command(&c).map_err(|m| bad("notify", m))?),
            None => h.notify.clone(),
        };
        let notify_args = match g.notify_args {
            Some(a) => a.parse().map_err(|m| bad("notify_args", m))?,
            None => h.notify_args,
        };
        let on_state = on_state(
            [
                g.notify_master,
                g.notify_backup,
                g.notify_fault,
                g.notify_stop,
                g.notify_master_rx_lower_pri,
            ],
            field,
        )?;
        let routes = (g.routes.unwrap_or_default().iter())
            .map(|r| routes::route(r).map_err(|m| bad("routes", format!("{r:?}: {m}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let rules = (g.rules.unwrap_or_default().iter())
            .map(|r| routes::rule(r).map_err(|m| bad("rules", format!("{r:?}: {m}"))))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(GroupSpec {
            on_state,
            routes,
            rules,
            name,
            slot,
            vips,
            priority,
            preempt: g.preempt.unwrap_or(e.preempt),
            preempt_delay,
            track,
            notify,
            notify_args,
            sync: None,
        });
    }
    // A VIP belongs to one group; none is an address that must stay put.
    let mut seen: BTreeMap<std::net::IpAddr, &str> = BTreeMap::new();
    for g in &out {
        let field = src.file_key(&format!("group.{}.vip", g.name));
        for v in &g.vips {
            if let Some(other) = seen.insert(v.vip.addr, &g.name) {
                return Err(ConfigError::new(
                    field,
                    format!("{} is in group {other} too", v.vip.addr),
                ));
            }
        }
        let vips: Vec<Vip> = g.vips.iter().map(|v| v.vip).collect();
        validate::vips_apart(&vips, &table.membership.peers, &table.membership.ping)
            .map_err(|b| ConfigError::new(&field, b.rule.to_string()))?;
    }
    let mut sync_out = Vec::new();
    for (name, s) in syncs {
        let field = |key: &str| src.file_key(&format!("sync.{name}.{key}"));
        if !name_ok(&name) {
            return Err(ConfigError::new(
                src.file_key(&format!("sync.{name}")),
                "a sync group's name is letters, digits, '_', '-' or '.'",
            ));
        }
        if s.groups.is_empty() {
            return Err(ConfigError::new(field("groups"), "names no group"));
        }
        for m in &s.groups {
            let Some(g) = out.iter_mut().find(|g| g.name == *m) else {
                return Err(ConfigError::new(
                    field("groups"),
                    format!("no [group.{m}] table"),
                ));
            };
            if let Some(other) = &g.sync {
                return Err(ConfigError::new(
                    field("groups"),
                    format!("{m} is in sync group {other} too"),
                ));
            }
            g.sync = Some(name.clone());
        }
        // They elect as one: with one priority and one preemption.
        let members: Vec<&GroupSpec> = out
            .iter()
            .filter(|g| g.sync.as_deref() == Some(&name))
            .collect();
        let first = members[0];
        for g in &members[1..] {
            for (key, same) in [
                ("priority", g.priority == first.priority),
                ("preempt", g.preempt == first.preempt),
                ("preempt_delay", g.preempt_delay == first.preempt_delay),
            ] {
                if !same {
                    return Err(ConfigError::new(
                        src.file_key(&format!("group.{}.{key}", g.name)),
                        format!(
                            "differs from group {}'s: the groups of sync group {name} elect as one",
                            first.name
                        ),
                    ));
                }
            }
        }
        let notify = match s.notify {
            Some(c) => Some(command(&c).map_err(|m| ConfigError::new(field("notify"), m))?),
            None => None,
        };
        let notify_args = match s.notify_args {
            Some(a) => a
                .parse()
                .map_err(|m| ConfigError::new(field("notify_args"), m))?,
            None => h.notify_args,
        };
        let on_state = on_state(
            [
                s.notify_master,
                s.notify_backup,
                s.notify_fault,
                s.notify_stop,
                None,
            ],
            field,
        )?;
        sync_out.push(SyncSpec {
            name,
            groups: s.groups,
            notify,
            notify_args,
            on_state,
        });
    }
    Ok((out, sync_out))
}

/// `"ADDR/PREFIX"` or `"ADDR/PREFIX dev IF"`.
fn group_vip(s: &str, iface: Option<&str>) -> Result<GroupVip, String> {
    let mut words = s.split_whitespace();
    let v = vip(words.next().unwrap_or(""))?;
    let iface = match (words.next(), words.next(), words.next()) {
        (None, ..) => iface.map(str::to_owned),
        (Some("dev"), Some(i), None) => {
            iface_name(i)?;
            Some(i.to_owned())
        }
        _ => {
            return Err(format!(
                "expected \"ADDR/PREFIX\" or \"ADDR/PREFIX dev IF\", got {s:?}"
            ))
        }
    };
    Ok(GroupVip { vip: v, iface })
}

/// `"NAME"` or `"NAME weight W"`: a configured check, with its weight.
fn track_entry(s: &str, checks: &[crate::checks::CheckSpec]) -> Result<(String, i32), String> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let (name, weight) = match words.as_slice() {
        [name] => (*name, None),
        [name, "weight", w] => {
            let w: i32 = w
                .parse()
                .ok()
                .filter(|w| (-255..=255).contains(w))
                .ok_or_else(|| format!("weight {w:?}: expected -255..=255"))?;
            (*name, Some(w))
        }
        _ => {
            return Err(format!(
                "expected \"CHECK\" or \"CHECK weight W\", got {s:?}"
            ))
        }
    };
    let Some(c) = checks.iter().find(|c| c.name == name) else {
        return Err(format!("no [check.{name}] table"));
    };
    Ok((name.to_owned(), weight.unwrap_or(c.weight)))
}

/// Election units: a sync group's members together, every other group alone;
/// by the first member's place in `groups`.
pub fn units(groups: &[GroupSpec]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let with = g.sync.as_ref().and_then(|s| {
            out.iter()
                .position(|u| groups[u[0]].sync.as_ref() == Some(s))
        });
        match with {
            Some(u) => out[u].push(i),
            None => out.push(vec![i]),
        }
    }
    out
}
