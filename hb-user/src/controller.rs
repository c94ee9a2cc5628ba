//! `hb-user run`: validates everything, attaches the data plane, then runs one loop
//! that sends heartbeats every interval, polls the peers maps four times per
//! interval, steps the election and moves the VIPs.

use crate::{
    clock::monotonic,
    config::{ConfigError, RunConfig, Vip, XdpModeArg},
    election::{Event, Machine, Params, PeerView},
    garp, keyfile,
    loader::{DataPlane, Settings},
    netlink::{self, Netlink},
    sender::{LinkSender, Sequencer},
    statedir::StateDir,
    status::StatusFile,
};
use anyhow::{Context, Result};
use aya::programs::XdpMode;
use hb_common::{wire::FLAG_HOLDS_VIP, MsgType, NodeState, PeerState};
use std::{net::Ipv4Addr, time::Duration};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

/// Why `run` failed: a bad setting (exit code 2, nothing touched) or a runtime error.
pub enum RunError {
    Config(ConfigError),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for RunError {
    fn from(e: anyhow::Error) -> Self {
        Self::Other(e)
    }
}

/// One interface hb runs on.
struct Link {
    iface: String,
    ifindex: u32,
    mac: [u8; 6],
    plane: DataPlane,
    sender: LinkSender,
    up: bool,
}

/// A VIP and the link it lives on.
#[derive(Clone, Copy)]
struct PlacedVip {
    vip: Vip,
    link: usize,
}

/// The checks that need the network, made before anything changes: interfaces
/// exist, each VIP is inside a subnet of one of them, peers map to links.
struct Plan {
    links: Vec<(String, u32, [u8; 6], Vec<Ipv4Addr>)>,
    vips: Vec<PlacedVip>,
}

async fn plan(cfg: &RunConfig, nl: &Netlink) -> Result<Plan, RunError> {
    let mut links = Vec::new();
    let mut subnets = Vec::new();
    for iface in &cfg.ifaces {
        let Some(info) = nl.link(iface).await? else {
            return Err(RunError::Config(ConfigError::new(
                "--iface",
                format!("no interface named {iface}"),
            )));
        };
        subnets.push(nl.ipv4_addrs(info.ifindex).await?);
        links.push((iface.clone(), info.ifindex, info.mac, Vec::new()));
    }
    let link_of = |addr: Ipv4Addr| {
        subnets.iter().position(|nets| {
            nets.iter()
                .any(|(net, prefix)| netlink::in_subnet(addr, *net, *prefix))
        })
    };
    let mut vips = Vec::new();
    for vip in &cfg.vips {
        let Some(link) = link_of(vip.addr) else {
            return Err(RunError::Config(ConfigError::new(
                "--vip",
                format!("{vip} is outside the subnets of {}", cfg.ifaces.join(", ")),
            )));
        };
        vips.push(PlacedVip { vip: *vip, link });
    }
    // A peer address goes out on the link whose subnet holds it; a routed one on
    // the first link.
    for p in &cfg.peers {
        links[link_of(p.addr).unwrap_or(0)].3.push(p.addr);
    }
    Ok(Plan { links, vips })
}

fn xdp_attach(plane: &mut DataPlane, iface: &str, mode: XdpModeArg) -> Result<&'static str> {
    match mode {
        XdpModeArg::Native => plane.attach(iface, XdpMode::Driver).map(|_| "native"),
        XdpModeArg::Generic => plane.attach(iface, XdpMode::Skb).map(|_| "generic"),
        XdpModeArg::Auto => match plane.attach(iface, XdpMode::Driver) {
            Ok(()) => Ok("native"),
            Err(e) => {
                warn!("native XDP unavailable on {iface} ({e:#}): falling back to generic XDP");
                plane.attach(iface, XdpMode::Skb).map(|_| "generic")
            }
        },
    }
}

/// Runs the controller until SIGTERM or SIGINT.
pub async fn run(cfg: RunConfig) -> Result<(), RunError> {
    // Everything that can be wrong with the settings is found before anything changes.
    let key = keyfile::read(&cfg.key_file).map_err(RunError::Config)?;
    let nl = Netlink::connect()?;
    let plan = plan(&cfg, &nl).await?;
    let state_dir = StateDir::open(&cfg.state_dir)?;
    let epoch = state_dir.next_epoch()?;

    let peer_ids: Vec<u32> = {
        let mut v: Vec<u32> = cfg.peers.iter().map(|p| p.id).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let settings = Settings {
        cluster_id: cfg.cluster_id,
        port: cfg.port,
        pass_heartbeats: cfg.pass_heartbeats,
        key,
        peers: peer_ids.clone(),
    };
    let mut links = Vec::new();
    for (iface, ifindex, mac, targets) in plan.links {
        let mut plane = DataPlane::load()?;
        plane.configure(&settings)?;
        let mode = xdp_attach(&mut plane, &iface, cfg.xdp_mode).with_context(|| {
            format!("attaching to {iface}: is another hb-user or XDP program on it?")
        })?;
        let pins = plane.pin(&cfg.pin_root, &iface)?;
        info!(
            "XDP attached to {iface} ({mode} mode), maps pinned in {}",
            pins.display()
        );
        let sender = LinkSender::new(&iface, &targets, cfg.port)?;
        links.push(Link {
            iface,
            ifindex,
            mac,
            plane,
            sender,
            up: true,
        });
    }

    let mut c = Controller {
        machine: Machine::new(
            Params {
                node_id: cfg.node_id,
                priority: cfg.priority,
                preempt: cfg.preempt,
                dead_after: cfg.dead_after,
                init_dead: cfg.init_dead,
                peers: peer_ids.clone(),
            },
            monotonic(),
        ),
        seq: Sequencer::new(cfg.node_id, cfg.cluster_id, cfg.priority, epoch, key),
        peer_ids,
        links,
        vips: plan.vips,
        nl,
        state_dir,
        cfg,
        since_unix_ms: 0,
    };
    info!(
        "node {} epoch {epoch} priority {} on {}: INIT, waiting up to {} ms to hear {} peer(s)",
        c.cfg.node_id,
        c.cfg.priority,
        c.cfg.ifaces.join(", "),
        c.cfg.init_dead.as_millis(),
        c.peer_ids.len()
    );
    c.report_leftover_vips().await;
    c.write_status();
    c.main_loop().await?;
    c.shutdown().await;
    Ok(())
}

struct Controller {
    cfg: RunConfig,
    machine: Machine,
    seq: Sequencer,
    peer_ids: Vec<u32>,
    links: Vec<Link>,
    vips: Vec<PlacedVip>,
    nl: Netlink,
    state_dir: StateDir,
    since_unix_ms: u128,
}

impl Controller {
    async fn main_loop(&mut self) -> Result<()> {
        let mut beat = tokio::time::interval(self.cfg.interval);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut poll = tokio::time::interval((self.cfg.interval / 4).max(Duration::from_millis(1)));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    self.refresh_links().await;
                    self.send(MsgType::Heartbeat).await;
                }
                _ = poll.tick() => self.poll().await,
                _ = term.recv() => { info!("SIGTERM: leaving"); return Ok(()); }
                _ = int.recv() => { info!("SIGINT: leaving"); return Ok(()); }
            }
        }
    }

    fn holds_vip(&self) -> bool {
        self.machine.state() == NodeState::Master
    }

    async fn send(&mut self, msg: MsgType) {
        let payload = self.seq.next(msg, self.machine.state(), self.holds_vip());
        for l in &self.links {
            l.sender.send(&payload).await;
        }
    }

    /// Link state at the heartbeat cadence: one netlink query per link.
    async fn refresh_links(&mut self) {
        for l in &mut self.links {
            match self.nl.link_by_index(l.ifindex).await {
                Ok(Some(info)) => l.up = info.up,
                Ok(None) => l.up = false,
                Err(e) => warn!("reading the state of {}: {e:#}", l.iface),
            }
        }
    }

    /// What the XDP programs saw of each peer, merged over links: the freshest
    /// entry wins, so a peer is silent only when it is silent on every link.
    fn peer_views(&self) -> Vec<PeerView> {
        self.peer_ids
            .iter()
            .map(|&id| {
                let freshest = self
                    .links
                    .iter()
                    .filter_map(|l| l.plane.peer(id).ok().flatten())
                    .max_by_key(|p| p.last_seen_ns)
                    .unwrap_or_default();
                view(id, &freshest)
            })
            .collect()
    }

    async fn poll(&mut self) {
        let views = self.peer_views();
        let link_up = self.links.iter().any(|l| l.up);
        let events = self.machine.step(monotonic(), link_up, &views);
        for ev in events {
            self.apply(ev).await;
        }
    }

    async fn apply(&mut self, ev: Event) {
        match ev {
            Event::PeerUp { peer } => info!("peer {peer} up"),
            Event::PeerDown { peer, silence } => {
                warn!(
                    "peer {peer} down: silent {} ms > dead-after {} ms",
                    silence.as_millis(),
                    self.cfg.dead_after.as_millis()
                )
            }
            Event::PeerLeft { peer } => info!("peer {peer} left (graceful stop)"),
            Event::Transition { from, to, reason } => {
                let vips = self.vip_list();
                match (to, vips.is_empty()) {
                    (NodeState::Master, false) => warn!("{reason}: taking {vips}"),
                    (_, false) if from == NodeState::Master => {
                        warn!("{reason}: releasing {vips} ({})", to.name())
                    }
                    _ => info!("{} -> {}: {reason}", from.name(), to.name()),
                }
                self.since_unix_ms = unix_ms();
                if to == NodeState::Master {
                    self.take_vips().await;
                } else {
                    self.release_vips().await;
                }
                // Peers learn the change now, not at the next tick.
                self.send(MsgType::Heartbeat).await;
                self.write_status();
            }
        }
    }

    fn vip_list(&self) -> String {
        self.vips
            .iter()
            .map(|v| format!("{} on {}", v.vip, self.links[v.link].iface))
            .collect::<Vec<_>>()
            .join(", ")
    }

    async fn take_vips(&mut self) {
        for v in self.vips.clone() {
            let l = &self.links[v.link];
            match self.nl.add_addr(l.ifindex, v.vip.addr, v.vip.prefix).await {
                Ok(true) => {}
                Ok(false) => info!("{} was already on {}: adopted", v.vip, l.iface),
                Err(e) => {
                    warn!("adding {} to {}: {e:#}", v.vip, l.iface);
                    continue;
                }
            }
            // Announced in the background: the burst's spacing must not delay polling.
            let (ifindex, mac, iface, vip) = (l.ifindex, l.mac, l.iface.clone(), v.vip);
            let (count, spacing) = (self.cfg.garp_count, self.cfg.garp_spacing);
            tokio::spawn(async move {
                if let Err(e) = garp::announce(ifindex, mac, vip.addr, count, spacing).await {
                    warn!("gratuitous ARP for {vip} on {iface}: {e:#}");
                }
            });
        }
    }

    async fn release_vips(&mut self) {
        for v in &self.vips {
            let l = &self.links[v.link];
            if let Err(e) = self.nl.del_addr(l.ifindex, v.vip.addr, v.vip.prefix).await {
                warn!("removing {} from {}: {e:#}", v.vip, l.iface);
            }
        }
    }

    /// A VIP still configured from a run that crashed stays until the first
    /// decision: adopted if we become MASTER, removed otherwise.
    async fn report_leftover_vips(&self) {
        for v in &self.vips {
            let l = &self.links[v.link];
            if let Ok(addrs) = self.nl.ipv4_addrs(l.ifindex).await {
                if addrs.contains(&(v.vip.addr, v.vip.prefix)) {
                    info!(
                        "{} found on {} (left by an earlier run): kept until the election decides",
                        v.vip, l.iface
                    );
                }
            }
        }
    }

    fn write_status(&self) {
        let s = StatusFile {
            pid: std::process::id(),
            node_id: self.cfg.node_id,
            priority: self.cfg.priority,
            epoch: self.seq.epoch,
            state: self.machine.state().name().to_string(),
            since_unix_ms: self.since_unix_ms,
            ifaces: self.cfg.ifaces.clone(),
            pin_root: self.cfg.pin_root.clone(),
            vips: self
                .vips
                .iter()
                .map(|v| format!("{}@{}", v.vip, self.links[v.link].iface))
                .collect(),
            dead_after_ms: self.cfg.dead_after.as_millis() as u64,
        };
        if let Err(e) = self.state_dir.write_file(
            crate::status::STATUS_FILE,
            &serde_json::to_vec_pretty(&s).unwrap_or_default(),
        ) {
            warn!("writing status: {e:#}");
        }
    }

    /// Graceful stop: release the VIPs first, then tell peers we left, so a backup
    /// takes over at once instead of waiting for dead-after.
    async fn shutdown(&mut self) {
        if self.holds_vip() {
            warn!("stopping: releasing {}", self.vip_list());
        }
        self.release_vips().await;
        // A few copies: one lost leave only costs dead-after, but it need not.
        for _ in 0..3 {
            let payload = self.seq.next(MsgType::Leave, NodeState::Backup, false);
            for l in &self.links {
                l.sender.send(&payload).await;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _ = std::fs::remove_file(self.state_dir.path().join(crate::status::STATUS_FILE));
        info!("stopped: VIPs released, leave sent, XDP detached");
        // Dropping the links detaches XDP and removes the pins.
    }
}

fn view(id: u32, p: &PeerState) -> PeerView {
    PeerView {
        id,
        last_seen: (p.last_seen_ns != 0).then(|| Duration::from_nanos(p.last_seen_ns)),
        left: p.msg_type == MsgType::Leave as u8,
        priority: p.priority,
        state: NodeState::from_u8(p.state).unwrap_or(NodeState::Init),
        holds_vip: p.flags & FLAG_HOLDS_VIP != 0,
    }
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}
