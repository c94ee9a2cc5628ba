//! A real etcd server (Debian's `etcd-server`) for the witness tests: one
//! member in a namespace of the test's LAN, on its own address, its data in
//! the lab's scratch directory so that a stop and a start keep its leases.

use crate::cluster::{forget_process, track_process};
use anyhow::{bail, Context, Result};
use std::{
    fs::File,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const ETCD: &str = "/usr/bin/etcd";
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

pub struct Etcd {
    pub ns: String,
    pub ip: Ipv4Addr,
    dir: PathBuf,
    child: Option<Child>,
}

impl Etcd {
    /// Fails with a clear message when the package is missing.
    pub fn require() {
        for bin in [ETCD, ETCDCTL] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: the witness tests need a real etcd (apt-get install etcd-server etcd-client)"
            );
        }
    }

    /// Starts etcd in `ns` (which has `ip`), keeping its data in `dir`.
    pub fn start(ns: &str, ip: Ipv4Addr, dir: PathBuf) -> Result<Self> {
        Self::require();
        std::fs::create_dir_all(&dir)?;
        let mut e = Self {
            ns: ns.to_string(),
            ip,
            dir,
            child: None,
        };
        e.resume()?;
        Ok(e)
    }

    /// `etcd://IP:2379`, as hb-user's `--witness` takes it.
    pub fn url(&self) -> String {
        format!("etcd://{}:2379", self.ip)
    }

    /// Starts it again after [`Etcd::stop`], with the same data.
    pub fn resume(&mut self) -> Result<()> {
        let client = format!("http://{}:2379", self.ip);
        let out = File::create(self.dir.join("etcd.log"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, ETCD, "--name", "w"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            // The peer port on the namespace's loopback: one member, no peers.
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "w=http://127.0.0.1:2380"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = cmd.spawn().context("starting etcd")?;
        track_process(child.id() as i32);
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = Command::new("ip")
                .args(["netns", "exec", &self.ns, ETCDCTL, "--endpoints", &client])
                .args(["--dial-timeout", "1s", "endpoint", "health"])
                .env("ETCDCTL_API", "3")
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("etcd did not become healthy within 20 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it (SIGKILL: as a crash or a cut power would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            forget_process(c.id() as i32);
        }
    }

    /// `etcdctl get --prefix PREFIX`: keys and values, one per line.
    pub fn get_prefix(&self, prefix: &str) -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, ETCDCTL])
            .args(["--endpoints", &format!("http://{}:2379", self.ip)])
            .args(["--dial-timeout", "1s", "get", "--prefix", prefix])
            .env("ETCDCTL_API", "3")
            .output()?;
        if !out.status.success() {
            bail!("etcdctl get: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
