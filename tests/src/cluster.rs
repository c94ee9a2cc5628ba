//! A small LAN in network namespaces running real `hb-user` processes: a switch
//! namespace with a bridge, N node namespaces (each with `eth0` on the bridge) and
//! a client namespace. Used by the failover tests and by `cargo xtask lab`.
//! Processes are ended by PID and namespaces deleted on drop, also on panic.

use crate::netns::{sh, Lab, HEARTBEAT_PORT};
use anyhow::{bail, Context, Result};
pub use hb_common::NodeState;
use hb_user::status::STATUS_FILE;
pub use hb_user::status::{PingRow, Report, StatusFile, VipOn};
use nix::{sys::signal::Signal, unistd::Pid};
use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Timers the namespace tests run hb-user with: quick, yet with room for a noisy
/// 2-core machine.
pub const FAST: &[&str] = &[
    "--interval",
    "20ms",
    "--dead-after",
    "150ms",
    "--init-dead",
    "1s",
];

/// hb's fastest setting, which must be stable: 2 ms heartbeats, 8 ms
/// dead-after, with `--realtime` as such settings are meant to run (without
/// it, a 2-core machine busy with the test's own commands delayed a sender
/// past dead-after: 11 ms once, 9 ms once).
pub const FASTEST: &[&str] = &[
    "--interval",
    "2ms",
    "--dead-after",
    "8ms",
    "--init-dead",
    "1s",
    "--realtime",
];

/// hb-user's default timers (init-dead shortened, so that nodes settle sooner).
pub const DEFAULTS: &[&str] = &[
    "--interval",
    "100ms",
    "--dead-after",
    "500ms",
    "--init-dead",
    "1s",
];

/// How long a test waits for anything to happen.
pub const BOUND: Duration = Duration::from_secs(5);

/// How much longer than on real hardware the waits for a cluster to settle may
/// take: `HB_TEST_TIME_SCALE` (default 1). `cargo xtask vm-test` sets it, since
/// an emulated guest (TCG) runs every command several times slower; the bounds
/// stay generous bounds, never timings.
pub fn time_scale() -> u32 {
    std::env::var("HB_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

/// A test's LAN with `links` links, nothing started: held for the test's duration
/// (see [`exclusive`]), failing with a clear message without root.
pub fn test_lan(
    tag: &str,
    priorities: &[u8],
    args: &[&str],
    links: usize,
) -> (std::sync::MutexGuard<'static, ()>, Cluster) {
    let guard = exclusive();
    crate::require_root("namespace tests (XDP, netlink, iptables, nftables)");
    (
        guard,
        Cluster::with_links(tag, priorities, args, links).expect("build the namespace LAN"),
    )
}

/// Cluster tests in one test binary run one at a time: timing-sensitive tests must
/// not starve each other on 2 cores. Hold the guard for the test's duration.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// PIDs of the controllers the clusters of this process started, for a
/// signal handler that must clean up without unwinding (see `emergency_cleanup`).
static PIDS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Kills the processes this process started (controllers, and those given to
/// [`track_process`]) and deletes every namespace, mount and scratch directory
/// of its labs not dropped yet: for Ctrl-C, when destructors will not run.
pub fn emergency_cleanup() {
    for pid in PIDS.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    crate::netns::remove_live_labs();
}

/// On SIGINT or SIGTERM, a thread runs [`emergency_cleanup`], then `then`
/// (a binary's own leftovers), and exits 130. Installed once per process:
/// the first call wins, and every [`Lab`] makes one, so that an interrupted
/// test, lab or bench leaves no namespace behind; a panic unwinds through the
/// labs' and clusters' `Drop` instead. signal-hook's handler and self-pipe
/// rather than blocking the signals for sigwait: a blocked mask would be
/// inherited by every daemon started, and a SIGTERM'd hb-user or keepalived
/// would never stop.
pub fn clean_up_on_signals(then: fn()) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut signals = match signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ]) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("no cleanup on signals: {e}");
                return;
            }
        };
        std::thread::spawn(move || {
            if signals.forever().next().is_none() {
                return;
            }
            let me = std::env::args().next().unwrap_or_default();
            eprintln!("\n{me}: interrupted: cleaning up");
            emergency_cleanup();
            then();
            std::process::exit(130);
        });
    });
}

/// Registers a process this process started besides the controllers (keepalived,
/// load generators) so that `emergency_cleanup` kills it too. A negative `pid`
/// names a process group (`kill(-pgid)`), for daemons that fork.
pub fn track_process(pid: i32) {
    PIDS.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

/// Undoes `track_process` once the process is gone.
pub fn forget_process(pid: i32) {
    PIDS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| *p != pid);
}

fn forget_pid(pid: u32) {
    PIDS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| *p != pid as i32);
}

/// The first LAN's /24; node i is .i, the client .200, the VIP .100. Link k
/// (a second bridge, for redundant links) is 10.(203+k).0.0/24.
pub const NET: [u8; 3] = [10, 203, 0];
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 100);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 200);
pub const IFACE: &str = "eth0";
/// The IPv6 LAN (on the first link) when the cluster runs over IPv6: node i is ::i.
pub const VIP6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0x203, 0, 0, 0, 0, 0, 0x100);

fn node_ip6(id: u32) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::new(0xfd00, 0x203, 0, 0, 0, 0, 0, id as u16)
}

/// The hb-user binary next to the test binary (`cargo xtask test` builds it), or $HB_USER_BIN.
pub fn hb_user_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HB_USER_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut dir = exe.parent().expect("parent").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("hb-user");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --release -p hb-user` (cargo xtask test does)",
        bin.display()
    );
    bin
}

pub struct Node {
    pub id: u32,
    pub ns: String,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub priority: u8,
    /// Arguments besides the ones every node gets.
    pub extra: Vec<String>,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    /// Its config file, when its priority comes from one (see [`Cluster::use_file`]).
    pub file: Option<PathBuf>,
    /// Its VIPs are in its file's groups (see [`Cluster::use_groups`]): no `--vip`.
    pub groups: bool,
    /// Its peers are in its file (see [`Cluster::use_peers_file`]): no `--peer`.
    pub peers_in_file: bool,
    /// A command hb-user runs under (`setpriv ... --`), as a service
    /// manager's limits would; empty: none.
    pub wrap: Vec<String>,
    /// Environment its hb-user gets besides the test's (`NOTIFY_SOCKET`...).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

pub struct Cluster {
    pub lab: Lab,
    /// The switch namespace (bridges br0, br1...; ports n<id>e<link>, c0).
    pub sw: String,
    pub client: String,
    /// Links per node: eth0, eth1...
    pub links: usize,
    /// Heartbeats and the VIP over IPv6 instead of IPv4 (see `new_ipv6`).
    pub ipv6: bool,
    pub nodes: Vec<Node>,
    /// Arguments every node gets (timers, etc.).
    pub common: Vec<String>,
    /// The hb-user every node runs: [`hb_user_bin`], unless
    /// [`Cluster::use_binary`] names another (an installed one).
    bin: PathBuf,
    key_file: PathBuf,
    bpffs: PathBuf,
    /// Pass programs on the bridge ends (see `enable_xdp_tx`).
    xdp_tx: Option<aya::Ebpf>,
}

impl Cluster {
    /// Builds the LAN with one node per priority (ids 1..), nothing started yet.
    pub fn new(tag: &str, priorities: &[u8], common: &[&str]) -> Result<Self> {
        Self::with_links(tag, priorities, common, 1)
    }

    /// The same with `links` independent bridges between the nodes (the client is on
    /// the first).
    pub fn with_links(tag: &str, priorities: &[u8], common: &[&str], links: usize) -> Result<Self> {
        let mut lab = Lab::new(tag)?;
        let sw = lab.netns("sw")?;
        for k in 0..links {
            lab.exec(
                &sw,
                &["ip", "link", "add", &format!("br{k}"), "type", "bridge"],
            )?;
            lab.exec(&sw, &["ip", "link", "set", &format!("br{k}"), "up"])?;
        }
        let client = lab.netns("client")?;
        plug(&lab, &sw, &client, IFACE, "c0", "br0", CLIENT_IP)?;
        let bpffs = lab.scratch.join("bpffs");
        std::fs::create_dir_all(&bpffs)?;
        nix::mount::mount(
            Some("bpf"),
            &bpffs,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .context("mounting a bpffs for the cluster's pins")?;
        lab.track_mount(bpffs.clone());
        let key_file = lab.scratch.join("hb.key");
        let bin = hb_user_bin();
        let out = Command::new(&bin)
            .args(["keygen", "--out"])
            .arg(&key_file)
            .output()?;
        if !out.status.success() {
            bail!("hb-user keygen: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut nodes = Vec::new();
        for (i, &priority) in priorities.iter().enumerate() {
            let id = i as u32 + 1;
            let ns = lab.netns(&format!("n{id}"))?;
            let ip = Ipv4Addr::new(NET[0], NET[1], NET[2], id as u8);
            for k in 0..links {
                let addr = Ipv4Addr::new(NET[0], NET[1] + k as u8, NET[2], id as u8);
                plug(
                    &lab,
                    &sw,
                    &ns,
                    &format!("eth{k}"),
                    &format!("n{id}e{k}"),
                    &format!("br{k}"),
                    addr,
                )?;
            }
            let mac = lab.mac(&ns, IFACE)?;
            let dir = lab.scratch.join(format!("n{id}"));
            std::fs::create_dir_all(&dir)?;
            nodes.push(Node {
                id,
                ns,
                ip,
                mac,
                priority,
                extra: Vec::new(),
                state_dir: dir.join("state"),
                log: dir.join("hb-user.log"),
                file: None,
                groups: false,
                peers_in_file: false,
                wrap: Vec::new(),
                env: Vec::new(),
                child: None,
            });
        }
        Ok(Self {
            lab,
            sw,
            client,
            links,
            ipv6: false,
            nodes,
            common: common.iter().map(|s| s.to_string()).collect(),
            bin,
            key_file,
            bpffs,
            xdp_tx: None,
        })
    }

    /// Another host on the first link's bridge (switch port `port`, so
    /// partitions can name it), with `ip` on its eth0: its namespace.
    pub fn add_host(&mut self, name: &str, port: &str, ip: Ipv4Addr) -> Result<String> {
        let ns = self.lab.netns(name)?;
        plug(&self.lab, &self.sw, &ns, IFACE, port, "br0", ip)?;
        Ok(ns)
    }

    /// Runs `bin` instead of [`hb_user_bin`] for every command from now on:
    /// starts, `status`, one-off runs (the key is made already).
    pub fn use_binary(&mut self, bin: impl Into<PathBuf>) {
        self.bin = bin.into();
    }

    /// Starts every node.
    pub fn start_all(&mut self) -> Result<()> {
        for id in 1..=self.nodes.len() as u32 {
            self.start(id)?;
        }
        Ok(())
    }

    /// What node `id`'s controller last wrote to its status file (None before
    /// its first write, or after a graceful stop removed it). A killed
    /// controller's file stays: compare `pid` with [`Cluster::pid`] to trust
    /// only the running one's.
    pub fn status_of(&self, id: u32) -> Option<StatusFile> {
        let bytes = std::fs::read(self.node(id).state_dir.join(STATUS_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The state node `id`'s controller last wrote to its status file.
    pub fn state_of(&self, id: u32) -> Option<NodeState> {
        self.status_of(id).map(|s| s.state)
    }

    /// `hb-user status --json` of node `id`, run in its namespace as a user
    /// runs it: the status file and the data plane's maps.
    pub fn report(&self, id: u32) -> Result<Report> {
        let text = self.status(id, true)?;
        serde_json::from_str(&text).with_context(|| format!("hb-user status --json: {text}"))
    }

    /// Panics unless, within `bound`, node `id` alone holds the VIP and every other
    /// running node is BACKUP (so it has heard the holder: tests that stop the holder
    /// next must not race a node still starting).
    pub fn expect_settled(&mut self, id: u32, bound: Duration) {
        self.expect_single_holder(id, bound);
        let others: Vec<u32> = self
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|&n| n != id)
            .collect();
        let running: Vec<u32> = others.into_iter().filter(|&n| self.is_running(n)).collect();
        assert!(
            self.wait_for(bound, |c| running
                .iter()
                .all(|&n| c.state_of(n) == Some(NodeState::Backup))),
            "backups not settled\n{}",
            self.logs()
        );
    }

    /// Runs `during`, then panics unless node `id` was BACKUP before and after
    /// with no transition between (the time of its last transition, in its
    /// status file, unchanged): it never took over meanwhile.
    pub fn expect_stays_backup(&mut self, id: u32, during: impl FnOnce(&mut Self)) {
        let before = self.status_of(id).expect("a status file");
        assert_eq!(before.state, NodeState::Backup, "node {id} before");
        during(self);
        let after = self.status_of(id).expect("a status file");
        assert_eq!(
            (after.state, after.since_unix_ms),
            (NodeState::Backup, before.since_unix_ms),
            "node {id} changed state meanwhile\n{}",
            self.log(id)
        );
    }

    /// Panics (with every log) unless node `id` alone holds the VIP throughout
    /// the next `d` (looked at every 25 ms).
    pub fn holds_steadily(&self, id: u32, d: Duration) {
        self.holders_throughout(d, |h| h == [id], &format!("node {id} alone holds"));
    }

    /// Panics (with every log) if node `id` holds the VIP at any time in the
    /// next `d` (looked at every 25 ms).
    pub fn never_holds(&self, id: u32, d: Duration) {
        self.holders_throughout(d, |h| !h.contains(&id), &format!("node {id} never holds"));
    }

    fn holders_throughout(&self, d: Duration, ok: impl Fn(&[u32]) -> bool, what: &str) {
        let start = Instant::now();
        while start.elapsed() < d {
            let h = self.holders();
            assert!(
                ok(&h),
                "not so that {what}: holders {h:?} at {:?}\n{}",
                start.elapsed(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Panics (with every log) unless node `id` alone holds the VIP within `bound`.
    pub fn expect_single_holder(&self, id: u32, bound: Duration) {
        assert!(
            self.wait_for(bound, |c| c.holders() == [id]),
            "expected node {id} alone to hold the VIP, holders {:?}\n{}",
            self.holders(),
            self.logs()
        );
    }

    /// A one-link cluster that runs over IPv6 only: IPv6 peers, an IPv6 VIP
    /// (fd00:203::100/64); the client has fd00:203::200.
    pub fn new_ipv6(tag: &str, priorities: &[u8], common: &[&str]) -> Result<Self> {
        let mut c = Self::new(tag, priorities, common)?;
        c.ipv6 = true;
        // nodad: duplicate address detection would hold the addresses back for a second.
        let client_ip = std::net::Ipv6Addr::new(0xfd00, 0x203, 0, 0, 0, 0, 0, 0x200);
        c.lab.exec(
            &c.client,
            &[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{client_ip}/64"),
                "dev",
                IFACE,
                "nodad",
            ],
        )?;
        for n in &c.nodes {
            c.lab.exec(
                &n.ns,
                &[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    &format!("{}/64", node_ip6(n.id)),
                    "dev",
                    IFACE,
                    "nodad",
                ],
            )?;
        }
        Ok(c)
    }

    pub fn node(&self, id: u32) -> &Node {
        &self.nodes[id as usize - 1]
    }

    /// The full `hb-user run` command line of node `id`.
    pub fn args(&self, id: u32) -> Vec<String> {
        let n = self.node(id);
        let mut a: Vec<String> = vec!["run".into()];
        for k in 0..self.links {
            a.extend(["--iface".into(), format!("eth{k}")]);
        }
        a.extend(["--node-id".into(), id.to_string()]);
        for p in self.nodes.iter().filter(|p| p.id != id && !n.peers_in_file) {
            if self.ipv6 {
                a.extend(["--peer".into(), format!("{}@{}", p.id, node_ip6(p.id))]);
                continue;
            }
            for k in 0..self.links {
                let o = p.ip.octets();
                a.extend([
                    "--peer".into(),
                    format!("{}@{}.{}.{}.{}", p.id, o[0], o[1] + k as u8, o[2], o[3]),
                ]);
            }
        }
        if !n.groups {
            a.extend([
                "--vip".into(),
                if self.ipv6 {
                    format!("{VIP6}/64")
                } else {
                    format!("{VIP}/24")
                },
            ]);
        }
        // A node run from a file takes its priority from there, so that a reload
        // can change it (flags win over the file).
        match &n.file {
            Some(f) => a.extend(["--config".into(), f.display().to_string()]),
            None => a.extend(["--priority".into(), n.priority.to_string()]),
        }
        a.extend(["--key-file".into(), self.key_file.display().to_string()]);
        a.extend(["--state-dir".into(), n.state_dir.display().to_string()]);
        a.extend(["--pin-root".into(), self.pin_root(id).display().to_string()]);
        a.extend(self.common.iter().cloned());
        a.extend(n.extra.iter().cloned());
        a
    }

    /// Writes node `id`'s config file (`text`, TOML) and runs it with
    /// `--config` from its next start on; it must give the priority. Returns
    /// the path, for rewriting before a reload.
    pub fn use_file(&mut self, id: u32, text: &str) -> Result<PathBuf> {
        let path = self.lab.scratch.join(format!("n{id}")).join("hb.toml");
        std::fs::write(&path, text)?;
        self.nodes[id as usize - 1].file = Some(path.clone());
        Ok(path)
    }

    /// Like [`Cluster::use_file`] for a file whose `[group.NAME]` tables hold
    /// the VIPs: the node gets no `--vip`.
    pub fn use_groups(&mut self, id: u32, text: &str) -> Result<PathBuf> {
        self.nodes[id as usize - 1].groups = true;
        self.use_file(id, text)
    }

    /// Like [`Cluster::use_file`] with the node's peers in the file too
    /// (`peer_line`), so that a reload can change them: no `--peer`.
    pub fn use_peers_file(&mut self, id: u32, text: &str) -> Result<PathBuf> {
        self.nodes[id as usize - 1].peers_in_file = true;
        self.use_file(id, text)
    }

    /// The `peer = [...]` line naming `peers` at their eth0 addresses.
    pub fn peer_line(&self, peers: &[u32]) -> String {
        let list: Vec<String> = (peers.iter())
            .map(|&p| format!("\"{p}@{}\"", self.node(p).ip))
            .collect();
        format!("peer = [{}]\n", list.join(", "))
    }

    /// Node ids whose eth0 carries `addr` right now.
    pub fn holders_of(&self, addr: impl Into<std::net::IpAddr>) -> Vec<u32> {
        self.holders_on(IFACE, addr)
    }

    /// Node ids whose interface `dev` carries `addr` right now.
    pub fn holders_on(&self, dev: &str, addr: impl Into<std::net::IpAddr>) -> Vec<u32> {
        let addr = addr.into();
        let family = if addr.is_ipv6() { "-6" } else { "-4" };
        self.nodes
            .iter()
            .filter(|n| {
                self.lab
                    .exec(&n.ns, &["ip", family, "-o", "addr", "show", "dev", dev])
                    .is_ok_and(|out| out.contains(&format!(" {addr}/")))
            })
            .map(|n| n.id)
            .collect()
    }

    /// A probe from the client to `addr` every `period`.
    pub fn probe_addr(&self, addr: Ipv4Addr, period: Duration) -> Result<crate::probe::Probe> {
        crate::probe::Probe::start(&self.client, IFACE, addr, period)
    }

    /// Node `id`'s pin root: a directory on the cluster's bpffs, made by hb-user.
    pub fn pin_root(&self, id: u32) -> PathBuf {
        self.bpffs.join(format!("n{id}"))
    }

    /// Starts node `id`'s controller in its namespace, logging to its log file.
    pub fn start(&mut self, id: u32) -> Result<()> {
        let args = self.args(id);
        if let Some(c) = self.nodes[id as usize - 1].child.as_mut() {
            if c.try_wait()?.is_none() {
                bail!("node {id} already runs");
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.node(id).log)?;
        let mut cmd = self.command(id, &args)?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("HB_LOG", "info");
        let child = cmd.spawn().context("spawning hb-user")?;
        PIDS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.id() as i32);
        self.nodes[id as usize - 1].child = Some(child);
        Ok(())
    }

    /// Starts node `id` as a user would by hand: `ip netns exec <ns> hb-user
    /// ...`, which gives it a mount namespace of its own with a fresh /sys
    /// (no bpffs), and without `--pin-root`. The PID is hb-user's (`ip`
    /// execs it), so [`Cluster::signal`] reaches it.
    pub fn start_as_deployed(&mut self, id: u32) -> Result<()> {
        let mut args = self.args(id);
        if let Some(at) = args.iter().position(|a| a == "--pin-root") {
            args.drain(at..at + 2);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.node(id).log)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.node(id).ns])
            .arg(&self.bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("HB_LOG", "info");
        let child = cmd.spawn().context("spawning ip netns exec hb-user")?;
        track_process(child.id() as i32);
        self.nodes[id as usize - 1].child = Some(child);
        Ok(())
    }

    /// Runs `hb-user <args>` as node `id` the way [`Cluster::start`] does (its
    /// network namespace, the test's mounts, so that what it mounts or pins is
    /// visible here) to completion: (exit code, stdout, stderr).
    pub fn run_as_node(&self, id: u32, args: &[String]) -> Result<(i32, String, String)> {
        let out = self.command(id, args)?.output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Starts `hb-user <args>` as node `id` would run (its namespace), logging
    /// to `log`: for a process with another configuration than the node's.
    /// The caller ends it; an aborted test's cleanup kills it.
    pub fn spawn_as_node(&self, id: u32, args: &[String], log: &std::path::Path) -> Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut cmd = self.command(id, args)?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("HB_LOG", "info");
        let child = cmd.spawn().context("spawning hb-user")?;
        track_process(child.id() as i32);
        Ok(child)
    }

    /// `hb-user <args>` entering node `id`'s network namespace, and nothing else.
    fn command(&self, id: u32, args: &[String]) -> Result<Command> {
        let n = self.node(id);
        let mut cmd = match n.wrap.split_first() {
            None => Command::new(&self.bin),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.bin);
                c
            }
        };
        cmd.args(args).envs(n.env.iter().map(|(k, v)| (k, v)));
        crate::netns::enter_on_exec(&mut cmd, &self.node(id).ns)?;
        Ok(cmd)
    }

    /// Sends `sig` to node `id`'s controller (by the PID we started) and waits for it to exit.
    pub fn signal(&mut self, id: u32, sig: Signal) -> Result<()> {
        let n = &mut self.nodes[id as usize - 1];
        let Some(mut child) = n.child.take() else {
            bail!("node {id} is not running")
        };
        nix::sys::signal::kill(Pid::from_raw(child.id() as i32), sig)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("node {id} did not exit within 10 s of {sig}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        forget_pid(child.id());
        Ok(())
    }

    /// The PID of node `id`'s controller, if this cluster started it and it was
    /// not signalled since (it may have exited on its own).
    pub fn pid(&self, id: u32) -> Option<u32> {
        self.node(id).child.as_ref().map(|c| c.id())
    }

    /// The key file every node reads (written by `hb-user keygen`).
    pub fn key_file(&self) -> &std::path::Path {
        &self.key_file
    }

    /// The cluster's key, read as hb-user reads it (`keyfile::read`).
    pub fn key(&self) -> Result<hb_common::Key> {
        Ok(hb_user::keyfile::read(&self.key_file)?)
    }

    pub fn is_running(&mut self, id: u32) -> bool {
        let n = &mut self.nodes[id as usize - 1];
        n.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Node ids whose eth0 carries the VIP right now.
    pub fn holders(&self) -> Vec<u32> {
        if self.ipv6 {
            self.holders_of(VIP6)
        } else {
            self.holders_of(VIP)
        }
    }

    /// Polls `cond` every 20 ms until it holds or `timeout` (times
    /// `HB_TEST_TIME_SCALE`, see [`time_scale`]) passes.
    pub fn wait_for(&self, timeout: Duration, mut cond: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout * time_scale();
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Node `id`'s log so far.
    pub fn log(&self, id: u32) -> String {
        std::fs::read_to_string(&self.node(id).log).unwrap_or_default()
    }

    /// All logs, for assertion messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} ---\n{}", n.id, self.log(n.id)))
            .collect()
    }

    /// Pings the VIP from the client (every 10 ms, up to 2 s) and returns the MAC
    /// of the first responder.
    pub fn client_reach_vip(&self) -> Option<[u8; 6]> {
        let probe = self.probe(Duration::from_millis(10)).ok()?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Some(r) = probe.snapshot().replies.first() {
                return Some(r.mac);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// A probe from the client to the VIP every `period`.
    pub fn probe(&self, period: Duration) -> Result<crate::probe::Probe> {
        self.probe_addr(VIP, period)
    }

    /// Pings the IPv6 VIP from the client (ICMPv6 echo, every 10 ms, up to 2 s) and
    /// returns the MAC the client's neighbour table then holds for it.
    pub fn client_reach_vip6(&self) -> Option<[u8; 6]> {
        let replied = self
            .lab
            .in_netns(&self.client, || {
                crate::probe::echo6_once(VIP6, Duration::from_secs(2))
            })
            .ok()?;
        if !replied {
            return None;
        }
        let out = self
            .lab
            .exec(
                &self.client,
                &["ip", "-6", "neigh", "show", &VIP6.to_string(), "dev", IFACE],
            )
            .ok()?;
        parse_lladdr(&out)
    }

    /// The MAC the client's neighbour table holds for the VIP.
    pub fn client_vip_mac(&self) -> Option<[u8; 6]> {
        let out = self
            .lab
            .exec(
                &self.client,
                &["ip", "neigh", "show", &VIP.to_string(), "dev", IFACE],
            )
            .ok()?;
        parse_lladdr(&out)
    }

    /// Runs a command in node `id`'s namespace.
    pub fn exec(&self, id: u32, args: &[&str]) -> Result<String> {
        self.lab.exec(&self.node(id).ns, args)
    }

    /// Makes the switch drop every frame between the given ports (`None`: any port),
    /// with carriers left up: a partition the nodes cannot see as a link failure.
    /// Ports are `n<id>e<link>` and `c0`. Replaces any earlier partition.
    pub fn partition(&self, pairs: &[(&str, Option<&str>)]) -> Result<()> {
        let mut rules = String::new();
        for (a, b) in pairs {
            match b {
                Some(b) => {
                    rules += &format!("  iifname \"{a}\" oifname \"{b}\" drop\n  iifname \"{b}\" oifname \"{a}\" drop\n");
                }
                None => rules += &format!("  iifname \"{a}\" drop\n  oifname \"{a}\" drop\n"),
            }
        }
        self.cut(&rules)
    }

    /// Makes the switch drop frames from port `from` to port `to` only: a
    /// one-way partition. Replaces any earlier partition.
    pub fn cut_one_way(&self, from: &str, to: &str) -> Result<()> {
        self.cut(&format!("  iifname \"{from}\" oifname \"{to}\" drop\n"))
    }

    fn cut(&self, drops: &str) -> Result<()> {
        self.heal()?;
        let rules = format!(
            "table bridge hbcut {{\n chain cut {{\n  type filter hook forward priority 0;\n{drops} }}\n}}\n"
        );
        let path = self.lab.scratch.join("partition.nft");
        std::fs::write(&path, rules)?;
        self.lab
            .exec(&self.sw, &["nft", "-f", path.to_str().expect("utf-8 path")])
            .map(|_| ())
    }

    /// Attaches an XDP program that passes everything (the benchmark's empty
    /// program) to the bridge end of every node's veth. A native XDP program's
    /// XDP_TX on a veth (the death notice) reaches the other end only when an
    /// XDP program runs there: the kernel queues the frame for the peer's NAPI
    /// but schedules that only for a peer with XDP, so without one the frame
    /// waits for unrelated traffic, then drops. Real NICs need nothing.
    pub fn enable_xdp_tx(&mut self) -> Result<()> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bpf/empty.bpf.o");
        let mut obj = aya::Ebpf::load_file(path)
            .with_context(|| format!("{path}: run cargo xtask build-ebpf"))?;
        let prog: &mut aya::programs::Xdp = obj
            .program_mut("empty")
            .context("no program empty")?
            .try_into()?;
        prog.load()?;
        for n in &self.nodes {
            for k in 0..self.links {
                let port = format!("n{}e{k}", n.id);
                self.lab
                    .in_netns(&self.sw, || {
                        prog.attach(&port, aya::programs::XdpMode::Driver)
                    })?
                    .with_context(|| format!("XDP on {port}"))?;
            }
        }
        // Attached for as long as the object lives.
        self.xdp_tx = Some(obj);
        Ok(())
    }

    /// Removes the partition.
    pub fn heal(&self) -> Result<()> {
        let _ = self
            .lab
            .exec(&self.sw, &["nft", "delete", "table", "bridge", "hbcut"]);
        Ok(())
    }

    /// Node `id`'s eth0 set up or down (carrier and addresses as `ip link set
    /// eth0 up|down` leaves them); returns the instant just before the change.
    pub fn set_link(&self, id: u32, up: bool) -> Result<Instant> {
        self.lab.set_link(&self.node(id).ns, IFACE, up)
    }

    /// The firewall of the incident on node `id`: hb's heartbeat port dropped
    /// by iptables in `chain` ("INPUT", "OUTPUT") while `on`.
    pub fn firewall(&self, id: u32, on: bool, chain: &str) -> Result<()> {
        self.lab
            .firewall(&self.node(id).ns, on, chain, HEARTBEAT_PORT)
    }

    /// Packets the firewall of [`Cluster::firewall`] dropped in `chain` of node `id`.
    pub fn firewall_dropped(&self, id: u32, chain: &str) -> Result<u64> {
        self.lab.firewall_dropped(&self.node(id).ns, chain)
    }

    /// The id of the XDP program on node `id`'s eth0, if any (`ip -j link`).
    pub fn xdp_prog_id(&self, id: u32) -> Option<u64> {
        let out = self.exec(id, &["ip", "-j", "link", "show", IFACE]).ok()?;
        let j: serde_json::Value = serde_json::from_str(&out).ok()?;
        j[0]["xdp"]["prog"]["id"].as_u64()
    }

    /// Deletes node `id`'s eth0 (its veth pair goes with it) and makes it
    /// again: the same name, address and bridge port, a new ifindex and MAC.
    pub fn remake_link(&self, id: u32) -> Result<()> {
        let n = self.node(id);
        self.exec(id, &["ip", "link", "del", IFACE])?;
        plug(
            &self.lab,
            &self.sw,
            &n.ns,
            IFACE,
            &format!("n{id}e0"),
            "br0",
            n.ip,
        )
    }

    /// Whether eth0 of node `id` has an XDP program attached.
    pub fn xdp_attached(&self, id: u32) -> bool {
        self.exec(id, &["ip", "link", "show", IFACE])
            .map(|o| o.contains("xdp"))
            .unwrap_or(false)
    }

    /// Runs `hb-user <args>` in node `id`'s namespace to completion: (exit code, stderr).
    pub fn run_once(&self, id: u32, args: &[String]) -> Result<(i32, String)> {
        let mut full = vec![
            "ip".to_string(),
            "netns".into(),
            "exec".into(),
            self.node(id).ns.clone(),
        ];
        full.push(self.bin.display().to_string());
        full.extend(args.iter().cloned());
        let out = Command::new(&full[0]).args(&full[1..]).output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// `hb-user status` of node `id`.
    pub fn status(&self, id: u32, json: bool) -> Result<String> {
        let n = self.node(id);
        let mut args = vec![
            "status".to_string(),
            "--state-dir".into(),
            n.state_dir.display().to_string(),
        ];
        if json {
            args.push("--json".into());
        }
        // In the node's network namespace, as a user runs it there: the data
        // plane is found through the interface.
        let out = self.command(id, &args)?.output()?;
        if !out.status.success() {
            bail!("hb-user status: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The MAC after "lladdr" in `ip neigh` output.
fn parse_lladdr(out: &str) -> Option<[u8; 6]> {
    let mac = out
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)?;
    let mut b = [0u8; 6];
    for (o, part) in b.iter_mut().zip(mac.split(':')) {
        *o = u8::from_str_radix(part, 16).ok()?;
    }
    Some(b)
}

/// A veth from `ns` (as eth0, with `ip`/24) to the bridge in `sw` (as `port`).
/// A veth from `ns` (as `dev`, with `ip`/24) to bridge `br` in `sw` (as `port`).
fn plug(
    lab: &Lab,
    sw: &str,
    ns: &str,
    dev: &str,
    port: &str,
    br: &str,
    ip: Ipv4Addr,
) -> Result<()> {
    sh(&[
        "ip", "link", "add", dev, "netns", ns, "type", "veth", "peer", "name", port, "netns", sw,
    ])?;
    lab.exec(sw, &["ip", "link", "set", port, "master", br, "up"])?;
    lab.exec(ns, &["ip", "addr", "add", &format!("{ip}/24"), "dev", dev])?;
    lab.exec(ns, &["ip", "link", "set", dev, "up"])?;
    Ok(())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Our own processes only, by PID; then the Lab deletes namespaces and mounts.
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                forget_pid(c.id());
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
