//! One tool (hb or keepalived) on the namespace LAN of `cluster.rs`: two nodes
//! (node 1 priority 100, node 2 priority 90), the client and the VIP, with the
//! faults and checks every scenario needs expressed the same way for both tools.

use crate::{
    cluster::{Cluster, NodeState, IFACE, VIP},
    keepalived::{self, Keepalived},
    netns::HEARTBEAT_PORT,
};
use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// Namespace tag of every bench lab: the prefix Ctrl-C cleans up.
pub const TAG: &str = "bench";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tool {
    Hb,
    Keepalived,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Hb => "hb",
            Tool::Keepalived => "keepalived",
        }
    }
}

/// How a tool is configured.
#[derive(Clone, Debug, PartialEq)]
pub enum Settings {
    /// hb-user timer flags (besides the per-node ones the cluster adds).
    Hb(Vec<String>),
    /// keepalived's advert_int in seconds.
    Keepalived(f64),
}

impl Settings {
    pub fn hb(args: &[&str]) -> Self {
        Settings::Hb(args.iter().map(|s| s.to_string()).collect())
    }

    pub fn tool(&self) -> Tool {
        match self {
            Settings::Hb(_) => Tool::Hb,
            Settings::Keepalived(_) => Tool::Keepalived,
        }
    }

    /// "--interval 10ms --dead-after 30ms" or "advert_int 0.01".
    pub fn describe(&self) -> String {
        match self {
            Settings::Hb(a) => a.join(" "),
            Settings::Keepalived(adv) => format!("advert_int {}", keepalived::fmt_advert(*adv)),
        }
    }
}

/// The node that holds the VIP when all is well, and the one that takes over.
pub const PRIMARY: u32 = 1;
pub const BACKUP: u32 = 2;

pub struct Testbed {
    pub cluster: Cluster,
    pub settings: Settings,
    ka: Vec<Option<Keepalived>>,
    /// The witness hb's `--witness` names, when it does.
    pub etcd: Option<crate::etcd::Etcd>,
}

/// Where the bench's etcd listens (hb's `--witness` flags: [`witness_args`]).
pub const ETCD_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 203, 0, 250);

/// hb-user's flags for the bench's witness: etcd's smallest lease (2 s).
pub fn witness_args() -> Vec<String> {
    let url = format!("etcd://{ETCD_IP}:2379");
    ["--witness", &url, "--witness-ttl", "2s"]
        .map(String::from)
        .to_vec()
}

/// The keepalived.conf node `id` gets.
pub fn keepalived_conf(id: u32, advert_int: f64) -> keepalived::Conf {
    keepalived::Conf {
        iface: IFACE.into(),
        priority: if id == PRIMARY { 100 } else { 90 },
        advert_int,
        vip: VIP,
        prefix: 24,
        router_id: format!("n{id}"),
    }
}

impl Testbed {
    /// A fresh LAN (nothing started).
    pub fn new(settings: Settings) -> Result<Self> {
        let hb_args: Vec<&str> = match &settings {
            Settings::Hb(a) => a.iter().map(|s| s.as_str()).collect(),
            Settings::Keepalived(_) => Vec::new(),
        };
        let mut cluster = Cluster::new(TAG, &[100, 90], &hb_args)?;
        if matches!(settings, Settings::Hb(_)) {
            // hb's death notice leaves by XDP_TX, which a veth delivers only to
            // a peer with an XDP program: the switch ports get an empty one (a
            // real NIC needs nothing).
            cluster.enable_xdp_tx()?;
        }
        let etcd = if hb_args.contains(&"--witness") {
            let ns = cluster.add_host("etcd", "w0", ETCD_IP)?;
            let dir = cluster.lab.scratch.join("etcd");
            Some(crate::etcd::Etcd::start(&ns, ETCD_IP, dir)?)
        } else {
            None
        };
        Ok(Self {
            cluster,
            settings,
            ka: vec![None, None],
            etcd,
        })
    }

    pub fn tool(&self) -> Tool {
        self.settings.tool()
    }

    pub fn start(&mut self, id: u32) -> Result<()> {
        match self.settings {
            Settings::Hb(_) => self.cluster.start(id),
            Settings::Keepalived(adv) => {
                let ns = self.cluster.node(id).ns.clone();
                let dir = self.cluster.lab.scratch.join(format!("n{id}"));
                let k = Keepalived::start(&ns, &keepalived_conf(id, adv), &dir)?;
                self.ka[id as usize - 1] = Some(k);
                Ok(())
            }
        }
    }

    pub fn start_all(&mut self) -> Result<()> {
        self.start(PRIMARY)?;
        self.start(BACKUP)
    }

    /// Builds the LAN, starts both nodes and waits for steady state.
    pub fn up(settings: Settings) -> Result<Self> {
        let mut t = Self::new(settings)?;
        t.start_all()?;
        t.wait_steady()?;
        Ok(t)
    }

    /// Settled, then settled again after a quiet moment: a node that has just
    /// taken the VIP may still be busy announcing it, and measurements start from
    /// steady state, not from the tail of the last takeover.
    pub fn wait_steady(&self) -> Result<()> {
        self.wait_settled(Duration::from_secs(30))?;
        std::thread::sleep(Duration::from_millis(300));
        self.wait_settled(Duration::from_secs(30))?;
        // With the witness, the holder owns its key before a fault (etcd's
        // client may still be reconnecting after the last one).
        if self.etcd.is_some() {
            let owned = |c: &Cluster| {
                c.status_of(PRIMARY)
                    .and_then(|s| s.groups.first()?.witness_key.clone())
                    .is_some_and(|k| k == "ours")
            };
            if !self.cluster.wait_for(Duration::from_secs(30), owned) {
                bail!(
                    "node {PRIMARY} never owned its witness key\n{}",
                    self.cluster.logs()
                );
            }
        }
        Ok(())
    }

    /// SIGKILL of node `id`'s daemon (for keepalived, parent and VRRP child at
    /// once). Returns the instant just before the signal.
    pub fn crash(&mut self, id: u32) -> Result<Instant> {
        match self.settings {
            Settings::Hb(_) => {
                let at = Instant::now();
                self.cluster.signal(id, Signal::SIGKILL)?;
                Ok(at)
            }
            Settings::Keepalived(_) => self.take_ka(id)?.crash(),
        }
    }

    /// SIGTERM: each tool's graceful stop.
    pub fn stop(&mut self, id: u32) -> Result<Instant> {
        match self.settings {
            Settings::Hb(_) => {
                let at = Instant::now();
                self.cluster.signal(id, Signal::SIGTERM)?;
                Ok(at)
            }
            Settings::Keepalived(_) => self.take_ka(id)?.stop(),
        }
    }

    fn take_ka(&mut self, id: u32) -> Result<Keepalived> {
        self.ka[id as usize - 1]
            .take()
            .with_context(|| format!("keepalived of node {id} is not running"))
    }

    /// Node `id`'s eth0 up or down; the instant just before the change.
    pub fn set_link(&self, id: u32, up: bool) -> Result<Instant> {
        self.cluster.set_link(id, up)
    }

    /// After a crash: keepalived leaves the VIP configured on the dead node; remove
    /// it so the next run starts clean (a restarted hb-user cleans up itself).
    pub fn clear_stale_vip(&self, id: u32) -> Result<()> {
        if self.tool() == Tool::Keepalived && self.cluster.holders().contains(&id) {
            self.cluster.exec(
                id,
                &["ip", "addr", "del", &format!("{VIP}/24"), "dev", IFACE],
            )?;
        }
        Ok(())
    }

    /// The state the daemon of node `id` last said it is in (hb: its status
    /// file, written by the running process; keepalived: its log).
    pub fn state(&self, id: u32) -> Option<NodeState> {
        match self.settings {
            Settings::Hb(_) => {
                let s = self.cluster.status_of(id)?;
                // A killed controller's file stays behind: trust only the running one's.
                (Some(s.pid) == self.cluster.pid(id)).then_some(s.state)
            }
            Settings::Keepalived(_) => {
                let k = self.ka[id as usize - 1].as_ref()?;
                keepalived::last_state(&k.read_log())
            }
        }
    }

    /// Node 1 alone holds the VIP and says MASTER; node 2 says BACKUP.
    pub fn settled(&self) -> bool {
        self.cluster.holders() == [PRIMARY]
            && self.state(PRIMARY) == Some(NodeState::Master)
            && self.state(BACKUP) == Some(NodeState::Backup)
    }

    pub fn wait_settled(&self, bound: Duration) -> Result<()> {
        if self.cluster.wait_for(bound, |_| self.settled()) {
            return Ok(());
        }
        bail!(
            "{} did not settle within {bound:?} (node 1 MASTER with the VIP, node 2 BACKUP): holders {:?}, states {:?}/{:?}\n{}",
            self.tool().name(),
            self.cluster.holders(),
            self.state(PRIMARY),
            self.state(BACKUP),
            self.logs()
        )
    }

    /// The process doing the work on node `id`: hb-user, or keepalived's VRRP child.
    pub fn controller_pid(&self, id: u32) -> Option<u32> {
        match self.settings {
            Settings::Hb(_) => self.cluster.pid(id),
            Settings::Keepalived(_) => self.ka[id as usize - 1]
                .as_ref()?
                .wait_vrrp_pid(Duration::from_secs(2)),
        }
    }

    /// keepalived's parent process (none for hb).
    pub fn parent_pid(&self, id: u32) -> Option<u32> {
        self.ka[id as usize - 1].as_ref().map(|k| k.pid())
    }

    /// iptables match for this tool's heartbeats.
    pub fn iptables_match(&self) -> &'static [&'static str] {
        match self.tool() {
            Tool::Hb => HEARTBEAT_PORT,
            Tool::Keepalived => &["-p", "112"],
        }
    }

    /// nftables match for this tool's heartbeats.
    pub fn nft_match(&self) -> &'static str {
        match self.tool() {
            Tool::Hb => "udp dport 694",
            Tool::Keepalived => "ip protocol 112",
        }
    }

    /// The firewall of the incident on every node: this tool's heartbeats
    /// dropped by iptables in `chain` while `on`.
    pub fn firewall(&self, on: bool, chain: &str) -> Result<()> {
        for n in &self.cluster.nodes {
            self.cluster
                .lab
                .firewall(&n.ns, on, chain, self.iptables_match())?;
        }
        Ok(())
    }

    /// The daemons' last state-change lines: why the VIP moved, printed when a
    /// window saw a false failover.
    pub fn explain(&self) -> String {
        let keys: &[&str] = match self.tool() {
            Tool::Hb => &["->", "silent", "taking", "releas", "yield"],
            Tool::Keepalived => &["Entering", "timeout", "higher priority", "lower priority"],
        };
        let mut out = String::new();
        for n in &self.cluster.nodes {
            let log = match self.tool() {
                Tool::Hb => self.cluster.log(n.id),
                Tool::Keepalived => std::fs::read_to_string(
                    self.cluster
                        .lab
                        .scratch
                        .join(format!("n{}/keepalived.log", n.id)),
                )
                .unwrap_or_default(),
            };
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| keys.iter().any(|k| l.contains(k)))
                .collect();
            for l in &lines[lines.len().saturating_sub(6)..] {
                out += &format!("    node {}: {}\n", n.id, l.trim());
            }
        }
        out
    }

    /// Every daemon's log, for error messages.
    pub fn logs(&self) -> String {
        match self.tool() {
            Tool::Hb => self.cluster.logs(),
            Tool::Keepalived => self
                .cluster
                .nodes
                .iter()
                .map(|n| {
                    let log = std::fs::read_to_string(
                        self.cluster
                            .lab
                            .scratch
                            .join(format!("n{}/keepalived.log", n.id)),
                    )
                    .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    format!(
                        "--- node {} keepalived (last lines) ---\n{}\n",
                        n.id,
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .collect(),
        }
    }
}
