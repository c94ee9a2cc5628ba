//! keepalived (VRRPv3) as the benchmark's baseline, run in the same namespace LAN
//! as hb (`cluster.rs` builds it): one `keepalived --vrrp` per node, started in the
//! node's network namespace with its own configuration, log and pid files.
//!
//! keepalived forks: the process we start is a parent that watches a VRRP child
//! doing the real work (adverts, VIPs). It is started as the leader of its own
//! process group, so that a crash can be simulated by SIGKILL of the whole group
//! at once (killing the parent alone makes the child shut down gracefully).

use crate::cluster::{forget_process, track_process, NodeState};
use anyhow::{bail, Context, Result};
use nix::{sys::signal::Signal, unistd::Pid};
use std::{
    net::Ipv4Addr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// One node's VRRP instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Conf {
    pub iface: String,
    pub priority: u8,
    /// Seconds between adverts; VRRPv3 counts in centiseconds, so 0.01 is the least.
    pub advert_int: f64,
    pub vip: Ipv4Addr,
    pub prefix: u8,
    pub router_id: String,
}

impl Conf {
    /// keepalived.conf text. Both nodes start as BACKUP so that priority alone
    /// decides (keepalived 2.2.7 starts a non-255 "state MASTER" as BACKUP anyway);
    /// preemption is keepalived's default (on); everything not written here is
    /// keepalived's default too.
    pub fn render(&self) -> String {
        format!(
            "global_defs {{\n  router_id {rid}\n  vrrp_version 3\n}}\n\
             vrrp_instance VI_1 {{\n  state BACKUP\n  interface {iface}\n  virtual_router_id 51\n  \
             priority {prio}\n  advert_int {adv}\n  virtual_ipaddress {{\n    {vip}/{len} dev {iface}\n  }}\n}}\n",
            rid = self.router_id,
            iface = self.iface,
            prio = self.priority,
            adv = fmt_advert(self.advert_int),
            vip = self.vip,
            len = self.prefix,
        )
    }
}

/// An advert interval as keepalived reads it: "1", "0.01", "0.5".
pub fn fmt_advert(s: f64) -> String {
    let t = format!("{s:.2}");
    let t = t.trim_end_matches('0').trim_end_matches('.');
    t.to_string()
}

/// `keepalived --version`'s first line, e.g. "Keepalived v2.2.7 (01/16,2022)".
pub fn version() -> Result<String> {
    let out = Command::new("keepalived")
        .arg("--version")
        .output()
        .context(
            "keepalived is not installed: apt-get install -y keepalived (cargo xtask bench does)",
        )?;
    // It prints its version on stderr.
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("Keepalived v"))
        .map(|l| l.trim().to_string())
        .context("unexpected `keepalived --version` output")
}

/// A running keepalived of one node.
pub struct Keepalived {
    child: Option<Child>,
    pub log: PathBuf,
    /// Where this process's lines start in the (appended) log.
    log_start: u64,
    pid: u32,
}

/// The command line a node's keepalived is started with (pid files in `dir`).
pub fn args(conf: &Path, dir: &Path) -> Vec<String> {
    let p = |f: &str| dir.join(f).display().to_string();
    vec![
        "--dont-fork".into(),
        "--log-console".into(),
        "--no-syslog".into(),
        "--vrrp".into(),
        "--use-file".into(),
        conf.display().to_string(),
        "--pid".into(),
        p("keepalived.pid"),
        "--vrrp_pid".into(),
        p("vrrp.pid"),
        "--checkers_pid".into(),
        p("checkers.pid"),
    ]
}

impl Keepalived {
    /// Writes `conf` into `dir` and starts keepalived in namespace `ns`, logging
    /// (appending) to `dir/keepalived.log`.
    pub fn start(ns: &str, conf: &Conf, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let conf_path = dir.join("keepalived.conf");
        std::fs::write(&conf_path, conf.render())?;
        // A killed keepalived leaves its pid files; a new one would refuse to start
        // if a PID in them were still (or again) in use.
        for f in ["keepalived.pid", "vrrp.pid", "checkers.pid"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let log = dir.join("keepalived.log");
        let log_start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut cmd = Command::new("keepalived");
        cmd.args(args(&conf_path, dir))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        crate::netns::enter_on_exec(&mut cmd, ns)?;
        let child = cmd
            .spawn()
            .context("starting keepalived (apt-get install -y keepalived)")?;
        let pid = child.id();
        track_process(-(pid as i32));
        Ok(Self {
            child: Some(child),
            log,
            log_start,
            pid,
        })
    }

    /// The parent's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The VRRP child's PID: the parent's only child once it has started.
    pub fn vrrp_pid(&self) -> Option<u32> {
        children(self.pid).into_iter().next()
    }

    /// Waits up to `bound` for the VRRP child to exist.
    pub fn wait_vrrp_pid(&self, bound: Duration) -> Option<u32> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(p) = self.vrrp_pid() {
                return Some(p);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL to the parent and the VRRP child at once: a crash. Returns the
    /// instant just before the signal.
    pub fn crash(mut self) -> Result<Instant> {
        let child = self.vrrp_pid();
        let at = Instant::now();
        nix::sys::signal::killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL)?;
        self.reap(child, Duration::from_secs(5))?;
        Ok(at)
    }

    /// SIGTERM to the parent: keepalived's graceful stop (the child sends priority
    /// 0 adverts and removes the VIP). Returns the instant just before the signal.
    pub fn stop(mut self) -> Result<Instant> {
        let child = self.vrrp_pid();
        let at = Instant::now();
        nix::sys::signal::kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM)?;
        self.reap(child, Duration::from_secs(10))?;
        Ok(at)
    }

    /// Waits for the parent (ours) and the VRRP child (reparented to us when we
    /// are a child subreaper, else to init) to be gone.
    fn reap(&mut self, vrrp: Option<u32>, bound: Duration) -> Result<()> {
        let deadline = Instant::now() + bound;
        let mut child = self.child.take().expect("running");
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = nix::sys::signal::killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
                let _ = child.wait();
                bail!("keepalived {} did not exit in time", self.pid);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Some(v) = vrrp {
            wait_gone(v, deadline);
        }
        forget_process(-(self.pid as i32));
        Ok(())
    }

    /// What this process logged so far.
    pub fn read_log(&self) -> String {
        let all = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(all.get(self.log_start as usize..).unwrap_or_default()).into_owned()
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let vrrp = self.vrrp_pid();
            let _ = nix::sys::signal::killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            let _ = c.wait();
            if let Some(v) = vrrp {
                wait_gone(v, Instant::now() + Duration::from_secs(2));
            }
            forget_process(-(self.pid as i32));
        }
    }
}

/// The last "Entering <STATE> STATE" keepalived logged, e.g. "MASTER", "BACKUP", "FAULT".
pub fn last_state(log: &str) -> Option<NodeState> {
    log.lines().rev().find_map(|l| {
        let rest = l.split("Entering ").nth(1)?;
        let state = rest.split_whitespace().next()?;
        if !rest.contains(" STATE") {
            return None;
        }
        [
            NodeState::Init,
            NodeState::Backup,
            NodeState::Master,
            NodeState::Fault,
        ]
        .into_iter()
        .find(|s| s.name() == state)
    })
}

/// PIDs listed in /proc/<pid>/task/<pid>/children.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// True while /proc/<pid> exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(") ")
            .map(|(_, rest)| !rest.starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Waits until `pid` is gone: reaped by us if it became our child (see
/// `become_subreaper`), or no longer in /proc; SIGKILL after `deadline`. A zombie
/// we cannot reap counts as gone.
fn wait_gone(pid: u32, deadline: Instant) {
    loop {
        // SAFETY: waitpid on one PID; a null status pointer is allowed.
        let r = unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG) };
        if r == pid as i32 || (r < 0 && !process_alive(pid)) {
            return;
        }
        if Instant::now() > deadline {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        if Instant::now() > deadline + Duration::from_secs(2) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Makes orphaned descendants (keepalived's VRRP child after its parent is
/// killed) our children, so they can be reaped instead of lingering as zombies
/// under an init that does not reap.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_vrrpv3_instance() {
        let c = Conf {
            iface: "eth0".into(),
            priority: 90,
            advert_int: 0.01,
            vip: Ipv4Addr::new(10, 203, 0, 100),
            prefix: 24,
            router_id: "n2".into(),
        };
        let t = c.render();
        for want in [
            "vrrp_version 3",
            "state BACKUP",
            "interface eth0",
            "virtual_router_id 51",
            "priority 90",
            "advert_int 0.01\n",
            "10.203.0.100/24 dev eth0",
        ] {
            assert!(t.contains(want), "{want:?} missing from\n{t}");
        }
        assert_eq!(t.matches('{').count(), t.matches('}').count());
    }

    #[test]
    fn advert_intervals_print_as_keepalived_reads_them() {
        assert_eq!(fmt_advert(1.0), "1");
        assert_eq!(fmt_advert(0.01), "0.01");
        assert_eq!(fmt_advert(0.1), "0.1");
        assert_eq!(fmt_advert(0.05), "0.05");
    }

    #[test]
    fn finds_the_last_state() {
        let log = "x: (VI_1) Entering BACKUP STATE (init)\nx: (VI_1) Entering MASTER STATE\nx: (VI_1) setting VIPs.\n";
        assert_eq!(last_state(log), Some(NodeState::Master));
        assert_eq!(last_state("nothing"), None);
    }
}
