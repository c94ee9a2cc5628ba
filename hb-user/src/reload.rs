//! What a reload (SIGHUP, `hb-user reload`) may change in a running node.
//!
//! The new settings are validated as a start would, then compared with the
//! running ones. Settings the running node can take over are applied (groups,
//! peers, checks, VIPs and hooks among them: the controller's `apply`); a
//! change to one that shapes the data plane or its sockets (interfaces, ports,
//! timers, key, paths), or one that would renumber a running group, is
//! refused as a whole, naming the setting, and nothing changes: a reload never
//! leaves a node half-configured. Flags win over the file at every reload as at
//! the start, so a change can only come from the file.

use crate::config::{ConfigError, Reload, RunConfig};

/// The settings a reload applies without a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    pub priority: u8,
    pub preempt: bool,
    pub fencing: bool,
}

/// The reload's outcome: the file keys of the settings that change, in table
/// order. Empty: nothing to do. A change to a setting that takes a restart
/// refuses the whole reload, naming the first such setting.
pub fn changes(
    old: &RunConfig,
    new: &RunConfig,
    file_name: &str,
) -> Result<Vec<&'static str>, ConfigError> {
    let changed = old.changed(new);
    if let Some((key, _)) = changed.iter().find(|(_, r)| *r == Reload::Restart) {
        return Err(ConfigError::new(
            format!("{key} in {file_name}"),
            "changed, and this setting takes a restart of hb-user: the running settings are kept",
        ));
    }
    // Peers read a group's standing from its id's slot: a group that keeps
    // its name but changes id would be another group to nodes not reloaded
    // yet.
    for g in &new.groups {
        if let Some(o) = old
            .groups
            .iter()
            .find(|o| o.name == g.name && o.slot != g.slot)
        {
            return Err(ConfigError::new(
                format!("group.{}.id in {file_name}", g.name),
                format!(
                    "would change from {} to {}: a running group keeps its id (one without an id takes the lowest free one, in name order); write id = {} in it, or change ids on every node with a restart",
                    o.slot + 1,
                    g.slot + 1,
                    o.slot + 1
                ),
            ));
        }
    }
    Ok(changed.into_iter().map(|(key, _)| key).collect())
}

impl Live {
    /// The live settings of the election of `groups` (indexes into
    /// `c.groups`: one group, or a sync group's members, which share them).
    pub fn of(c: &RunConfig, groups: &[usize]) -> Live {
        let g = &c.groups[groups[0]];
        Live {
            priority: g.priority,
            preempt: g.preempt,
            fencing: c.hooks.fence_cmd.is_some(),
        }
    }
}

/// What `hb-user reload` found.
pub enum Requested {
    /// Applied, or nothing to change: the log line.
    Done(String),
    /// The node kept its settings: why, naming the field.
    Refused(String),
    /// No hb-user runs with this state directory.
    NotRunning,
}

/// `hb-user reload`: SIGHUP to the controller whose status file is in
/// `state_dir`, then its verdict, from the status file it rewrites.
pub fn request(state_dir: &std::path::Path) -> anyhow::Result<Requested> {
    use crate::status::{pid_alive, StatusFile, STATUS_FILE};
    use anyhow::Context;
    let read = || -> Option<StatusFile> {
        let b = std::fs::read(state_dir.join(STATUS_FILE)).ok()?;
        serde_json::from_slice(&b).ok()
    };
    let Some(before) = read().filter(|s| pid_alive(s.pid)) else {
        return Ok(Requested::NotRunning);
    };
    let count = before.reload.as_ref().map_or(0, |r| r.count);
    let pid = nix::unistd::Pid::from_raw(before.pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)
        .with_context(|| format!("signalling hb-user (pid {pid})"))?;
    // A reload reads one file and compares settings: well under a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let Some(r) = read().and_then(|s| s.reload).filter(|r| r.count > count) else {
            continue;
        };
        return Ok(match r.outcome.as_str() {
            "refused" => Requested::Refused(r.detail),
            "unchanged" => Requested::Done("nothing changed".into()),
            _ => Requested::Done(format!("applied: {}", r.detail)),
        });
    }
    anyhow::bail!("hb-user (pid {pid}) did not report the reload within 10 s")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunArgs;

    fn cfg(file: &str) -> RunConfig {
        let args = RunArgs {
            ifaces: vec!["eth0".into()],
            node_id: vec!["1".into()],
            peers: vec!["2@192.168.1.2".into()],
            ..Default::default()
        };
        RunConfig::from_parts(&args, Some(("hb.toml", file))).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn live_settings_are_applied() {
        let old = cfg("priority = 100\n");
        let new = cfg("priority = 50\npreempt = false\nnotify = \"/bin/true\"\n");
        assert_eq!(
            changes(&old, &new, "hb.toml").unwrap(),
            ["priority", "preempt", "notify"]
        );
        assert!(changes(&old, &old, "hb.toml").unwrap().is_empty());
    }

    #[test]
    fn a_restart_only_change_refuses_the_whole_reload() {
        let old = cfg("priority = 100\n");
        let new = cfg("priority = 50\nport = 7000\n");
        let e = changes(&old, &new, "hb.toml").unwrap_err();
        assert_eq!(e.field, "port in hb.toml");
        let new = cfg("cluster_id = 7\n");
        assert_eq!(
            changes(&old, &new, "hb.toml").unwrap_err().field,
            "cluster_id in hb.toml"
        );
        // A group that stays keeps its id, even a defaulted one.
        let two = cfg("[group.b]\n[group.c]\n");
        let new = cfg("[group.c]\n");
        let e = changes(&two, &new, "hb.toml").unwrap_err();
        assert_eq!(e.field, "group.c.id in hb.toml");
        assert!(e.message.contains("id = 2"), "{e}");
        let new = cfg("[group.c]\nid = 2\n");
        assert_eq!(changes(&two, &new, "hb.toml").unwrap(), ["group"]);
        // A group added with its own id moves none.
        let new = cfg("[group.a]\nid = 3\n[group.b]\n[group.c]\n");
        assert_eq!(changes(&two, &new, "hb.toml").unwrap(), ["group"]);
        // VIPs are the running node's to move.
        let new = cfg("vip = \"192.168.1.100/24\"\n");
        assert_eq!(changes(&old, &new, "hb.toml").unwrap(), ["vip"]);
    }
}
