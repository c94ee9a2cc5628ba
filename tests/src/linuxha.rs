//! Linux-HA Heartbeat 3.0.6 (Debian `heartbeat`) in a network namespace, in its
//! v1 mode (`crm no`, resources from `haresources`): the other daemon that
//! speaks on UDP 694, for tests of hb coexisting with it.
//!
//! Heartbeat has its paths compiled in: its configuration in /etc/ha.d, its
//! uuid, generation and API FIFO in /var/lib/heartbeat, its pid file and
//! resource state under /run; and it takes its node name from `uname -n`. Two
//! instances on one host would share all of them (and one uuid). So each node
//! runs under `unshare` in its own mount, UTS and PID namespaces, entered after
//! the node's network namespace:
//! - the node's directory holds private copies of those three trees, which are
//!   bind-mounted over them in that mount namespace only: nothing is written to
//!   /etc or /var on the host (so `ip netns exec`'s /etc/netns/<name>/ is not
//!   needed, and it would not cover /var/lib or /run anyway);
//! - the hostname in the new UTS namespace is the node name given (the tests
//!   use the network namespace's name), which heartbeat then finds in `node`;
//! - /sys is remounted so that it shows the network namespace's interfaces, as
//!   `ip netns exec` does;
//! - heartbeat runs in the foreground (`-f`) as PID 1 of its PID namespace: a
//!   SIGKILL to that one PID makes the kernel end everything it forked (FIFO
//!   reader, per-medium read and write children, resource scripts, send_arp).
//!
//! The VIP is the `IPaddr` resource, which adds it with `ifconfig` (net-tools)
//! as an alias (`eth0:0`) of the interface; the holder is simply the node whose
//! interface has the address.

use crate::cluster::{forget_process, track_process};
use crate::netns::sh;
use anyhow::{bail, Context, Result};
use nix::{sys::signal::Signal, unistd::Pid};
use std::{
    fs::File,
    net::Ipv4Addr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The daemon (not on PATH).
pub const HEARTBEAT: &str = "/usr/libexec/heartbeat/heartbeat";

/// One node's view of a two-node cluster with one VIP.
#[derive(Clone, Debug, PartialEq)]
pub struct Conf {
    /// This node's name, and its hostname inside its UTS namespace.
    pub node: String,
    /// The other node's name.
    pub peer: String,
    /// Where heartbeats go out (`ucast`) and the VIP is added.
    pub iface: String,
    /// The other node's address on `iface`.
    pub peer_ip: Ipv4Addr,
    /// The node that `haresources` gives the VIP to (it takes it back when it
    /// returns: `auto_failback on`).
    pub owner: String,
    pub vip: Ipv4Addr,
    pub prefix: u8,
    pub keepalive: Duration,
    pub deadtime: Duration,
    /// How long a starting node waits for its peer before acting alone.
    pub initdead: Duration,
    /// The sha1 shared secret of `authkeys`.
    pub key: String,
}

/// Whole milliseconds, as heartbeat reads times with a unit ("500ms").
fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl Conf {
    /// ha.cf. `udpport` must come before the media lines (heartbeat binds as it
    /// parses). Logging goes to `log` only: no syslog, no logd.
    pub fn ha_cf(&self, log: &Path) -> String {
        format!(
            "logfile {log}\nlogfacility none\nuse_logd no\n\
             keepalive {ka}\nwarntime {warn}\ndeadtime {dead}\ninitdead {init}\n\
             udpport 694\nucast {iface} {peer_ip}\n\
             auto_failback on\ncrm no\nnode {a}\nnode {b}\n",
            log = log.display(),
            ka = ms(self.keepalive),
            // Heartbeat wants warntime below deadtime.
            warn = ms(self.deadtime / 2),
            dead = ms(self.deadtime),
            init = ms(self.initdead),
            iface = self.iface,
            peer_ip = self.peer_ip,
            a = self.node,
            b = self.peer,
        )
    }

    /// haresources: the owner's one resource group, the VIP as
    /// `IPaddr::ip/prefix/iface`. The same on both nodes.
    pub fn haresources(&self) -> String {
        format!(
            "{} IPaddr::{}/{}/{}\n",
            self.owner, self.vip, self.prefix, self.iface
        )
    }

    /// authkeys (heartbeat refuses it unless mode 0600).
    pub fn authkeys(&self) -> String {
        format!("auth 1\n1 sha1 {}\n", self.key)
    }
}

/// Fails with what to install unless heartbeat and what its IPaddr resource
/// needs are there; else `heartbeat -V`, e.g. "3.0.6 (node: 958e11be...)".
pub fn version() -> Result<String> {
    if !Path::new(HEARTBEAT).is_file() {
        bail!(
            "Linux-HA heartbeat is not installed ({HEARTBEAT} is missing): \
             apt-get install -y heartbeat (cargo xtask test installs it)"
        );
    }
    if !["/usr/sbin/ifconfig", "/sbin/ifconfig"]
        .iter()
        .any(|p| Path::new(p).is_file())
    {
        bail!(
            "heartbeat's IPaddr resource needs ifconfig: apt-get install -y net-tools \
             (cargo xtask test installs it)"
        );
    }
    Ok(sh(&[HEARTBEAT, "-V"])?.trim().to_string())
}

/// Run by `unshare` (in the new namespaces) as `sh -c SCRIPT sh <node> <dir>`:
/// the private trees, the hostname, a sysfs of this network namespace, then
/// heartbeat in place of the shell (so it stays PID 1).
const SCRIPT: &str = r#"set -e
hostname "$1"
mount --bind "$2/ha.d" /etc/ha.d
mount --bind "$2/lib" /var/lib/heartbeat
mount --bind "$2/run" /run
mount -t sysfs sysfs /sys
exec /usr/libexec/heartbeat/heartbeat -f
"#;

/// A running heartbeat of one node.
pub struct LinuxHa {
    /// The `unshare` process: ours; it waits for heartbeat.
    child: Option<Child>,
    /// heartbeat's master control process as seen from here (PID 1 inside).
    pid: u32,
    dir: PathBuf,
    /// heartbeat's own log (ha.cf `logfile`; its resource scripts log there too).
    pub log: PathBuf,
    /// stdout and stderr of unshare, the script and heartbeat.
    pub out: PathBuf,
}

impl LinuxHa {
    /// Writes `conf` and the private trees into `dir` (made afresh; removed on
    /// drop) and starts heartbeat in network namespace `ns`.
    pub fn start(ns: &str, conf: &Conf, dir: &Path) -> Result<Self> {
        version()?;
        let _ = std::fs::remove_dir_all(dir);
        // /etc/ha.d: the package's scripts (harc, rc.d, resource.d, shellfuncs)
        // plus our three files.
        let ha_d = dir.join("ha.d");
        std::fs::create_dir_all(&ha_d)?;
        sh(&["cp", "-a", "/etc/ha.d/.", &ha_d.display().to_string()])?;
        let log = dir.join("ha-log");
        let out = dir.join("heartbeat.out");
        std::fs::write(ha_d.join("ha.cf"), conf.ha_cf(&log))?;
        std::fs::write(ha_d.join("haresources"), conf.haresources())?;
        let keys = ha_d.join("authkeys");
        std::fs::write(&keys, conf.authkeys())?;
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600))?;
        // /var/lib/heartbeat as the package ships it, empty: no uuid, so each
        // node makes its own. /run: what tmpfiles.d would make, plus the
        // resource agents' state directory.
        for d in [
            "lib/cores/root",
            "lib/cores/hacluster",
            "lib/cores/nobody",
            "lib/api",
            "lib/casual",
            "lib/ckpt",
            "run/heartbeat",
            "run/resource-agents",
        ] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let output = File::create(&out)?;
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--uts",
            "--pid",
            "--fork",
            // heartbeat gets SIGKILL if unshare dies (a killed test run).
            "--kill-child",
            // A /proc of the new PID namespace (implies a new mount namespace).
            "--mount-proc",
            "--propagation",
            "private",
            "sh",
            "-c",
            SCRIPT,
            "sh",
            &conf.node,
        ])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output);
        crate::netns::enter_on_exec(&mut cmd, ns)?;
        let mut child = cmd.spawn().context("starting unshare for heartbeat")?;
        let upid = child.id();
        track_process(upid as i32);
        // unshare's one child is the script, which becomes heartbeat by exec.
        let deadline = Instant::now() + Duration::from_secs(5);
        let pid = loop {
            if let Some(p) = crate::keepalived::children(upid).into_iter().next() {
                break p;
            }
            if Instant::now() > deadline || child.try_wait()?.is_some() {
                let _ = child.kill();
                let _ = child.wait();
                forget_process(upid as i32);
                bail!(
                    "heartbeat in {ns} did not start: {}",
                    std::fs::read_to_string(dir.join("heartbeat.out")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Ok(Self {
            child: Some(child),
            pid,
            dir: dir.to_path_buf(),
            log,
            out,
        })
    }

    /// heartbeat's master control process (a PID of this PID namespace).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether heartbeat still runs (it exits at once on a bad configuration).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// heartbeat's log and its stdout/stderr so far, for failure messages.
    pub fn read_log(&self) -> String {
        format!(
            "{}--- stdout/stderr ---\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(&self.out).unwrap_or_default()
        )
    }
}

impl Drop for LinuxHa {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // PID 1 of its PID namespace: the kernel kills the rest with it, and
            // unshare, which waits for it, exits once they are all gone.
            let _ = nix::sys::signal::kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = c.kill();
            let _ = c.wait();
            forget_process(c.id() as i32);
        }
        // The bind mounts lived in heartbeat's mount namespace, gone with it.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether an interface in namespace `ns` has address `vip` (IPaddr's alias
/// label does not matter: the address is on the interface either way).
pub fn holds(ns: &str, vip: Ipv4Addr) -> bool {
    sh(&["ip", "-n", ns, "-4", "-o", "addr", "show"])
        .map(|out| out.contains(&format!(" {vip}/")))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> Conf {
        Conf {
            node: "ns-a".into(),
            peer: "ns-b".into(),
            iface: "eth0".into(),
            peer_ip: Ipv4Addr::new(10, 203, 0, 2),
            owner: "ns-a".into(),
            vip: Ipv4Addr::new(10, 203, 0, 150),
            prefix: 24,
            keepalive: Duration::from_millis(500),
            deadtime: Duration::from_secs(3),
            initdead: Duration::from_secs(10),
            key: "k".into(),
        }
    }

    #[test]
    fn renders_a_v1_two_node_config() {
        let t = conf().ha_cf(Path::new("/tmp/x/ha-log"));
        for want in [
            "logfile /tmp/x/ha-log\n",
            "use_logd no\n",
            "keepalive 500ms\n",
            "warntime 1500ms\n",
            "deadtime 3000ms\n",
            "initdead 10000ms\n",
            "ucast eth0 10.203.0.2\n",
            "auto_failback on\n",
            "crm no\n",
            "node ns-a\nnode ns-b\n",
        ] {
            assert!(t.contains(want), "{want:?} missing from\n{t}");
        }
        assert!(t.find("udpport 694").unwrap() < t.find("ucast").unwrap());
        assert_eq!(conf().haresources(), "ns-a IPaddr::10.203.0.150/24/eth0\n");
        assert_eq!(conf().authkeys(), "auth 1\n1 sha1 k\n");
    }
}
