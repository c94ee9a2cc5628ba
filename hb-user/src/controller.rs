//! `hb-user run`: validates everything, attaches the data plane, then runs one loop
//! that sends heartbeats every interval, polls the peers maps four times per
//! interval, steps the election and moves the VIPs.

use crate::{
    beat::{Advert, Beat, BeatLink, BeatParams},
    bpffs::PinRoot,
    clock::monotonic,
    config::{ConfigError, RunConfig, Vip, XdpModeArg},
    election::{Event, Machine, Params, PeerView},
    garp,
    hooks::{self, FenceOutcome, Notifier},
    kernel, keyfile,
    loader::{DataPlane, Origin, Settings},
    netlink::{self, Netlink},
    notice,
    pinger::Pinger,
    sender::{LinkSender, Sequencer, Targets},
    statedir::StateDir,
    status::StatusFile,
};
use anyhow::{Context, Result};
use aya::programs::XdpMode;
use hb_common::{
    maps::Key,
    wire::{FLAG_HOLDS_VIP, FLAG_REACHES_PING},
    MsgType, NodeState, PeerState,
};
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Why `run` failed: a bad setting (exit code 2, nothing touched), a kernel
/// that lacks a feature (nothing touched), or a runtime error.
pub enum RunError {
    Config(ConfigError),
    Kernel(kernel::Missing),
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
    /// Peer addresses and next hops, shared with the sender thread.
    targets: Targets,
    up: bool,
    /// The adopted data plane still held a valid lease: a previous run held the
    /// VIPs, and we keep answering for them until our first decision (a restart
    /// must not interrupt clients).
    inherited: bool,
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
    links: Vec<PlannedLink>,
    vips: Vec<PlacedVip>,
}

/// Name, ifindex, MAC and the peer addresses heartbeats to go out on it.
type PlannedLink = (String, u32, [u8; 6], Vec<IpAddr>);

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
        let mut nets: Vec<(IpAddr, u8)> = nl
            .ipv4_addrs(info.ifindex)
            .await?
            .into_iter()
            .map(|(a, p)| (a.into(), p))
            .collect();
        nets.extend(
            nl.ipv6_addrs(info.ifindex)
                .await?
                .into_iter()
                .map(|(a, p)| (IpAddr::from(a), p)),
        );
        subnets.push(nets);
        links.push((iface.clone(), info.ifindex, info.mac, Vec::new()));
    }
    // Link-local networks (fe80::/64) would claim every IPv6 address: skip them.
    let link_of = |addr: IpAddr| {
        subnets.iter().position(|nets| {
            nets.iter().any(|(net, prefix)| {
                let link_local = matches!(net, IpAddr::V6(n) if n.is_unicast_link_local());
                !link_local && netlink::in_prefix(addr, *net, *prefix)
            })
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

/// Says what an attach refusal usually means.
fn attach_hint(e: anyhow::Error, iface: &str) -> anyhow::Error {
    let errno = e
        .chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .and_then(|io| io.raw_os_error());
    match errno {
        Some(libc::EOPNOTSUPP) => e.context(format!(
            "the driver of {iface} has no native XDP: run with --xdp-mode auto or generic"
        )),
        Some(libc::EBUSY | libc::EEXIST) => {
            e.context(format!("another XDP program is attached to {iface}"))
        }
        _ => e.context(format!("attaching to {iface}")),
    }
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

/// What a start made, for the loop.
struct Started {
    epoch: u32,
    links: Vec<Link>,
    /// The sockets and lease maps the sender thread takes.
    beat_links: Vec<BeatLink>,
    pinger: Option<Pinger>,
    ioctl_socket: std::net::UdpSocket,
}

/// The start's steps after the state dir and pin root: the epoch, a data plane
/// per link (from the objects loaded before anything changed), the sockets. On
/// an error the data planes opened so far are dropped, which removes what they
/// pinned and leaves what a previous run pinned (see `DataPlane`'s Drop).
fn start(
    cfg: &RunConfig,
    state_dir: &StateDir,
    key: Key,
    peer_ids: &[u32],
    planned: Vec<PlannedLink>,
    vips: &[PlacedVip],
    loaded: Vec<DataPlane>,
) -> Result<Started, RunError> {
    let epoch = state_dir.next_epoch()?;
    let mut links = Vec::new();
    let mut beat_links = Vec::new();
    for (i, ((iface, ifindex, mac, targets), fresh)) in planned.into_iter().zip(loaded).enumerate()
    {
        let settings = Settings {
            cluster_id: cfg.cluster_id,
            port: cfg.port,
            pass_heartbeats: cfg.pass_heartbeats,
            key,
            peers: peer_ids.to_vec(),
            mac,
            // Each link's program watches ARP for the VIPs that live on it.
            vips_v4: vips
                .iter()
                .filter(|v| v.link == i)
                .filter_map(|v| match v.vip.addr {
                    IpAddr::V4(a) => Some(a),
                    IpAddr::V6(_) => None,
                })
                .collect(),
        };
        let mut mode = "";
        let (plane, origin) = DataPlane::open(fresh, &cfg.pin_root, &iface, &settings, |p| {
            mode = xdp_attach(p, &iface, cfg.xdp_mode).map_err(|e| attach_hint(e, &iface))?;
            Ok(())
        })?;
        let pins = cfg.pin_root.join(&iface);
        match origin {
            Origin::Fresh => info!(
                "XDP attached to {iface} ({mode} mode), program, link and maps pinned in {}",
                pins.display()
            ),
            Origin::Adopted => info!(
                "adopted the XDP program still attached to {iface} (pinned in {}): no gap, peer state kept",
                pins.display()
            ),
            Origin::Replaced => info!(
                "replaced the XDP program pinned on {iface} with this build's, in place: no gap, peer state kept"
            ),
        }
        if !plane.is_pinned() {
            warn!("the XDP link on {iface} could not be pinned: it will not outlive this process");
        }
        let inherited = origin != Origin::Fresh && plane.lease()? > monotonic();
        let (sender, targets) = LinkSender::new(&iface, ifindex, mac, &targets, cfg.port)?;
        let lease = plane
            .lease_map()
            .map_err(|e| warn!("the sender cannot renew the lease on {iface}: {e:#}"))
            .ok();
        let sent = plane
            .sent_map()
            .map_err(|e| warn!("death notices from peers on {iface} will be refused: {e:#}"))
            .ok();
        beat_links.push(BeatLink {
            sender,
            lease,
            sent,
        });
        links.push(Link {
            iface,
            ifindex,
            mac,
            plane,
            targets,
            up: true,
            inherited,
        });
    }
    let pinger = if cfg.ping.is_empty() {
        None
    } else {
        Some(Pinger::new(&cfg.ping)?)
    };
    let ioctl_socket =
        std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("opening an ioctl socket")?;
    Ok(Started {
        epoch,
        links,
        beat_links,
        pinger,
        ioctl_socket,
    })
}

/// Runs the controller until SIGTERM or SIGINT.
pub async fn run(cfg: RunConfig) -> Result<(), RunError> {
    // Everything that can be wrong with the settings, the kernel or the program
    // is found before anything changes.
    let key = keyfile::read(&cfg.key_file).map_err(RunError::Config)?;
    let nl = Netlink::connect()?;
    let plan = plan(&cfg, &nl).await?;
    let found = kernel::Features::probe()?;
    kernel::check(&found, &kernel::release()).map_err(RunError::Kernel)?;
    let loaded = plan
        .links
        .iter()
        .map(|_| DataPlane::load())
        .collect::<Result<Vec<_>>>()?;

    // A start that fails from here removes what it made, and only that.
    let state_dir = StateDir::open(&cfg.state_dir)?;
    let pin_root = match PinRoot::prepare(&cfg.pin_root) {
        Ok(r) => r,
        Err(e) => {
            state_dir.discard();
            return Err(e.into());
        }
    };
    let peer_ids: Vec<u32> = {
        let mut v: Vec<u32> = cfg.peers.iter().map(|p| p.id).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let Started {
        epoch,
        mut links,
        beat_links,
        pinger,
        ioctl_socket,
    } = match start(
        &cfg, &state_dir, key, &peer_ids, plan.links, &plan.vips, loaded,
    ) {
        Ok(s) => s,
        Err(e) => {
            // `start` dropped the data planes it opened, which took their pins.
            pin_root.undo();
            state_dir.discard();
            return Err(e);
        }
    };
    for l in &mut links {
        l.plane.started(cfg.node_id, epoch);
    }

    // Heartbeats start now, on their own thread and clock.
    let beat = Beat::spawn(
        BeatParams {
            interval: cfg.interval,
            dead_after: cfg.dead_after,
            realtime: cfg.realtime,
            leave_copies: 3,
        },
        Sequencer::new(cfg.node_id, cfg.cluster_id, cfg.priority, epoch, key),
        beat_links,
        Advert {
            state: NodeState::Init,
            holds_vip: false,
            reaches_ping: pinger.is_none(),
            lease: links.iter().any(|l| l.inherited),
            leaving: false,
        },
    )
    .context("starting the heartbeat thread")?;

    let (fence_tx, mut fence_rx) = mpsc::unbounded_channel();
    let mut c = Controller {
        machine: Machine::new(
            Params {
                node_id: cfg.node_id,
                priority: cfg.priority,
                preempt: cfg.preempt,
                dead_after: cfg.dead_after,
                init_dead: cfg.init_dead,
                peers: peer_ids.clone(),
                ping_quorum: !cfg.ping.is_empty(),
                fencing: cfg.fence_cmd.is_some(),
                fence_retry: Duration::from_secs(1),
            },
            monotonic(),
        ),
        pinger,
        notifier: cfg
            .notify
            .clone()
            .map(|cmd| Notifier::spawn(cmd, cfg.notify_timeout)),
        fence_tx,
        link_alive: BTreeMap::new(),
        rival_holders: BTreeSet::new(),
        conflicts: BTreeMap::new(),
        conflict_announced: None,
        bursts: Vec::new(),
        ioctl_socket,
        hop_refreshes: 0,
        replays: notice::Replays::default(),
        beat: Some(beat),
        epoch,
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
    c.refresh_next_hops().await;
    c.write_status();
    // A loop that cannot run still releases, says goodbye and removes its status.
    let ran = c.main_loop(&mut fence_rx).await;
    c.shutdown().await;
    Ok(ran?)
}

struct Controller {
    cfg: RunConfig,
    machine: Machine,
    /// The sender thread; taken by the graceful stop.
    beat: Option<Beat>,
    epoch: u32,
    peer_ids: Vec<u32>,
    links: Vec<Link>,
    vips: Vec<PlacedVip>,
    nl: Netlink,
    state_dir: StateDir,
    since_unix_ms: u128,
    pinger: Option<Pinger>,
    notifier: Option<Notifier>,
    /// Fencing results come back through here, so the loop never waits on a command.
    fence_tx: mpsc::UnboundedSender<(Vec<u32>, FenceOutcome)>,
    /// (peer, link index) -> heard within dead-after on that link.
    link_alive: BTreeMap<(u32, usize), bool>,
    /// Lower-ranked peers seen claiming the VIP while we hold it (a healed partition),
    /// so that each episode gets one fresh announcement.
    rival_holders: BTreeSet<u32>,
    /// (link index, VIP, claiming MAC) -> ARP claims the XDP program counted, as last read.
    conflicts: BTreeMap<(usize, Ipv4Addr, [u8; 6]), u64>,
    /// Last re-announcement caused by a conflict: two holders that hear each other's
    /// ARP but not each other's heartbeats must not answer each burst with a burst.
    conflict_announced: Option<Duration>,
    /// Gratuitous ARP bursts in flight, aborted when we release the VIP.
    bursts: Vec<tokio::task::JoinHandle<()>>,
    /// A datagram socket for interface-flag ioctls (in our network namespace).
    ioctl_socket: std::net::UdpSocket,
    /// Counts next-hop refreshes: unresolved peers every time, all every tenth.
    hop_refreshes: u64,
    /// Death notices refused as replays, as last counted.
    replays: notice::Replays,
}

impl Controller {
    async fn main_loop(
        &mut self,
        fence_rx: &mut mpsc::UnboundedReceiver<(Vec<u32>, FenceOutcome)>,
    ) -> Result<()> {
        use tokio::time::{interval, MissedTickBehavior::Skip};
        let mut beat = interval(self.cfg.interval);
        beat.set_missed_tick_behavior(Skip);
        let mut poll = interval((self.cfg.interval / 4).max(Duration::from_millis(1)));
        poll.set_missed_tick_behavior(Skip);
        // Off by default; a 1-hour period stands in for "never" and is skipped below.
        let mut refresh = interval(self.cfg.garp_refresh.unwrap_or(Duration::from_secs(3600)));
        refresh.set_missed_tick_behavior(Skip);
        refresh.tick().await;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // `status` shows ping reachability and liveness of the file itself: refresh it.
        let mut status = interval(Duration::from_secs(1));
        status.set_missed_tick_behavior(Skip);
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    self.refresh_links();
                    self.watch_conflicts();
                    self.replays.watch(self.links.iter().map(|l| (l.iface.as_str(), &l.plane)));
                    if let Some(p) = &mut self.pinger { p.send(); }
                    // Reachability may have changed; the thread sends on its own clock.
                    self.advertise();
                }
                _ = poll.tick() => self.poll().await,
                r = async { self.pinger.as_mut().expect("guarded").receive(monotonic).await }, if self.pinger.is_some() => {
                    if let Err(e) = r { warn!("ping socket: {e:#}"); }
                }
                Some((peers, outcome)) = fence_rx.recv() => self.fenced(peers, outcome),
                _ = status.tick() => {
                    self.refresh_next_hops().await;
                    self.write_status();
                }
                _ = refresh.tick(), if self.cfg.garp_refresh.is_some() => {
                    if self.holds_vip() { self.announce("refresh"); }
                }
                _ = term.recv() => { info!("SIGTERM: leaving"); return Ok(()); }
                _ = int.recv() => { info!("SIGINT: leaving"); return Ok(()); }
            }
        }
    }

    fn holds_vip(&self) -> bool {
        self.machine.state() == NodeState::Master
    }

    /// Whether we reach a ping target (true when none is configured).
    fn reach(&self) -> bool {
        self.pinger
            .as_ref()
            .is_none_or(|p| p.reachable(monotonic(), self.cfg.dead_after))
    }

    /// Tells the sender thread what heartbeats say now (it sends at once when
    /// that changed), and whether they renew the holder lease.
    fn advertise(&mut self) {
        let state = self.machine.state();
        let holding = self.holds_vip() && !self.vips.is_empty();
        for l in &mut self.links {
            l.inherited &= state == NodeState::Init;
        }
        let a = Advert {
            state,
            holds_vip: self.holds_vip(),
            reaches_ping: self.reach(),
            lease: holding || self.links.iter().any(|l| l.inherited),
            leaving: false,
        };
        if let Some(b) = &self.beat {
            b.advertise(a);
        }
    }

    /// Sets the lease in every link's data plane from here (the sender thread
    /// renews it with each heartbeat while it holds): before an announcement, so
    /// XDP lets the VIPs' traffic in, and at once on a release.
    fn set_lease(&mut self, until: Duration) {
        for l in &mut self.links {
            if let Err(e) = l.plane.set_lease(until) {
                warn!("setting the holder lease on {}: {e:#}", l.iface);
            }
        }
    }

    /// Link state at the heartbeat cadence: one netlink query per link.
    /// Link state at the heartbeat cadence: one SIOCGIFFLAGS ioctl per link, far
    /// cheaper than a netlink round trip at 100 checks a second.
    fn refresh_links(&mut self) {
        for l in &mut self.links {
            match netlink::oper_up(&self.ioctl_socket, &l.iface) {
                Ok(up) => l.up = up,
                Err(e) => warn!("reading the state of {}: {e:#}", l.iface),
            }
        }
    }

    /// What the XDP programs saw of each peer, merged over links: the freshest
    /// entry wins, so a peer is silent only when it is silent on every link. With
    /// several links, a link falling silent or coming back is logged on its own.
    fn peer_views(&mut self, now: Duration) -> Vec<PeerView> {
        let dead_after = self.cfg.dead_after;
        let mut views = Vec::with_capacity(self.peer_ids.len());
        for &id in &self.peer_ids {
            let entries: Vec<PeerState> = self
                .links
                .iter()
                .map(|l| l.plane.peer(id).ok().flatten().unwrap_or_default())
                .collect();
            if self.links.len() > 1 {
                let alive: Vec<bool> = entries
                    .iter()
                    .map(|p| {
                        p.last_seen_ns != 0
                            && now.saturating_sub(Duration::from_nanos(p.last_seen_ns))
                                <= dead_after
                    })
                    .collect();
                for (i, &a) in alive.iter().enumerate() {
                    let was = self.link_alive.insert((id, i), a);
                    if was == Some(true) && !a {
                        let others: Vec<&str> = (0..alive.len())
                            .filter(|&j| alive[j])
                            .map(|j| self.links[j].iface.as_str())
                            .collect();
                        if others.is_empty() {
                            warn!(
                                "peer {id}: link {} silent, and every other link too",
                                self.links[i].iface
                            );
                        } else {
                            warn!(
                                "peer {id}: link {} silent, {} alive: no failover",
                                self.links[i].iface,
                                others.join(", ")
                            );
                        }
                    } else if was == Some(false) && a {
                        info!("peer {id}: link {} alive again", self.links[i].iface);
                    }
                }
            }
            let gone = notice::gone(&entries);
            let freshest = entries
                .into_iter()
                .max_by_key(|p| p.last_seen_ns)
                .unwrap_or_default();
            views.push(PeerView {
                gone,
                ..view(id, &freshest)
            });
        }
        views
    }

    async fn poll(&mut self) {
        let now = monotonic();
        let views = self.peer_views(now);
        let link_up = self.links.iter().any(|l| l.up);
        let reach = self.reach();
        let events = self.machine.step(now, link_up, reach, &views);
        for ev in events {
            self.apply(ev).await;
        }
        self.watch_rivals(&views);
    }

    /// The holder lease in every link's data plane: renewed to now + dead-after
    /// while we hold the VIPs (or, still in INIT, hold what a previous run held),
    /// withdrawn otherwise. Should this loop stop, the lease runs out and XDP stops
    /// answering for the VIPs within dead-after.
    /// Next hops of the IPv4 peers, for the packet-socket transmit path: the MAC
    /// from the neighbour table, and our address in the peer's subnet (not a VIP).
    /// A missing entry is asked for (the kernel sends ARP), so the next refresh
    /// finds it; until then heartbeats take the kernel socket. Routed peers too.
    async fn refresh_next_hops(&mut self) {
        let vips: Vec<IpAddr> = self.vips.iter().map(|v| v.vip.addr).collect();
        // Known next hops are checked every tenth time (a peer may change its NIC).
        let all = self.hop_refreshes.is_multiple_of(10);
        self.hop_refreshes += 1;
        for l in &mut self.links {
            let targets: Vec<Ipv4Addr> = l
                .targets
                .paths()
                .into_iter()
                .filter_map(|(ip, path)| match ip {
                    IpAddr::V4(a) if all || path == crate::sender::Path::Kernel => Some(a),
                    _ => None,
                })
                .collect();
            if targets.is_empty() {
                continue;
            }
            let Ok(addrs) = self.nl.ipv4_addrs(l.ifindex).await else {
                continue;
            };
            for dst in targets {
                let src = addrs
                    .iter()
                    .find(|(a, p)| {
                        !vips.contains(&IpAddr::V4(*a)) && netlink::in_subnet(dst, *a, *p)
                    })
                    .map(|(a, _)| *a);
                let mut hop = None;
                if let Some(src) = src {
                    match self.nl.neighbour(l.ifindex, dst).await {
                        Ok(Some(mac)) => hop = Some((mac, src)),
                        Ok(None) => {
                            if let Err(e) = self.nl.resolve(l.ifindex, dst).await {
                                warn!("{e:#}");
                            }
                        }
                        Err(e) => warn!("{e:#}"),
                    }
                }
                if let Some(path) = l.targets.set_next_hop(dst, hop) {
                    info!("heartbeats to {dst} on {}: {}", l.iface, path.name());
                }
            }
        }
    }

    /// A healed partition: a lower-ranked peer still claims the VIP we hold. It yields
    /// as soon as it hears us; we re-announce at once so caches point here again.
    fn watch_rivals(&mut self, views: &[PeerView]) {
        if !self.holds_vip() {
            self.rival_holders.clear();
            return;
        }
        for v in views {
            let rival = v.holds_vip && self.machine.is_alive(v.id);
            if rival && self.rival_holders.insert(v.id) {
                warn!("peer {} also holds the VIP (partition healed?): it ranks lower and will yield; re-announcing", v.id);
                self.announce("split brain");
            } else if !rival {
                self.rival_holders.remove(&v.id);
            }
        }
    }

    /// ARP claims for our VIPs from foreign MACs, as counted by XDP. A peer's
    /// announcement after it took over is reported quietly; an unknown MAC is a
    /// conflict, and while we hold the VIP it is a split-brain signal: re-announce
    /// (the election itself runs on every poll).
    fn watch_conflicts(&mut self) {
        let mut fresh = Vec::new();
        for (i, l) in self.links.iter().enumerate() {
            let Ok(entries) = l.plane.vip_watch() else {
                continue;
            };
            for (vip, w) in entries {
                for c in w.claimants.iter().filter(|c| c.count != 0) {
                    let seen = self.conflicts.insert((i, vip, c.mac), c.count).unwrap_or(0);
                    if c.count > seen {
                        fresh.push((l.iface.clone(), vip, c.mac, c.count - seen));
                    }
                }
            }
        }
        let now = monotonic();
        let mut reannounce = false;
        for (iface, vip, mac, n) in fresh {
            let m = mac.map(|b| format!("{b:02x}")).join(":");
            let peer = self.peer_ids.iter().copied().find(|&id| {
                self.links.iter().any(|l| {
                    l.plane
                        .peer(id)
                        .ok()
                        .flatten()
                        .is_some_and(|p| p.src_mac == mac)
                })
            });
            match (peer, self.holds_vip()) {
                (Some(id), false) => info!("VIP {vip} announced on {iface} by peer {id} ({m})"),
                (Some(id), true) => {
                    warn!("VIP conflict on {iface}: peer {id} ({m}) claims {vip} ({n} ARP) while we hold it: re-announcing");
                    reannounce = true;
                }
                (None, false) => warn!("VIP conflict on {iface}: {vip} claimed by foreign MAC {m} ({n} ARP); we do not hold it"),
                (None, true) => {
                    warn!("VIP conflict on {iface}: {vip} claimed by foreign MAC {m} ({n} ARP) while we hold it: re-announcing");
                    reannounce = true;
                }
            }
        }
        let quiet = self
            .conflict_announced
            .is_some_and(|t| now.saturating_sub(t) < Duration::from_secs(1));
        if reannounce && !quiet {
            self.conflict_announced = Some(now);
            self.announce("conflict");
        }
    }

    /// A fencing command finished.
    fn fenced(&mut self, peers: Vec<u32>, outcome: FenceOutcome) {
        let list = peers
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let ok = outcome == FenceOutcome::Fenced;
        if ok {
            info!("fenced peer(s) {list}: taking over");
        } else {
            warn!("fencing peer(s) {list} failed ({outcome:?}): staying BACKUP, retrying in 1 s");
        }
        self.machine.fence_done(&peers, ok, monotonic());
    }

    async fn apply(&mut self, ev: Event) {
        match ev {
            Event::PeerUp { peer } => {
                info!("peer {peer} up");
                // Back from a partition, it may have taken the VIP meanwhile and
                // turned caches towards it; it yields when it hears us, and caches
                // must follow us again.
                if self.holds_vip() && !self.vips.is_empty() {
                    info!("peer {peer} rejoined while we hold the VIP: re-announcing");
                    self.announce("peer rejoined");
                }
            }
            Event::PeerDown { peer, silence } => {
                warn!(
                    "peer {peer} down: silent {} ms > dead-after {} ms",
                    silence.as_millis(),
                    self.cfg.dead_after.as_millis()
                )
            }
            Event::PeerLeft { peer } => info!("peer {peer} left (graceful stop)"),
            Event::PeerGone { peer } => {
                warn!("peer {peer}: controller gone (death notice from its kernel)")
            }
            Event::FenceNeeded { peers } => {
                let cmd = self.cfg.fence_cmd.clone().unwrap_or_default();
                let (tx, node, timeout) = (
                    self.fence_tx.clone(),
                    self.cfg.node_id,
                    self.cfg.fence_timeout,
                );
                warn!("fencing silent peer(s) {peers:?} before taking over");
                tokio::spawn(async move {
                    let outcome = hooks::fence(&cmd, node, &peers, timeout).await;
                    let _ = tx.send((peers, outcome));
                });
            }
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
                if let Some(n) = &self.notifier {
                    n.send(hooks::Transition {
                        new_state: to.name().into(),
                        old_state: from.name().into(),
                        vip: vips.clone(),
                        iface: self.cfg.ifaces.join(","),
                        reason: reason.to_string(),
                    });
                }
                if to == NodeState::Master {
                    // The lease first: XDP must let the VIP's traffic in before we
                    // announce it. Peers learn the change at once from the sender.
                    if !self.vips.is_empty() {
                        self.set_lease(monotonic() + self.cfg.dead_after);
                    }
                    self.advertise();
                    self.take_vips().await;
                    // Let the announcement tasks send their first round now, before
                    // the hooks and status below.
                    tokio::task::yield_now().await;
                } else {
                    // The advert first: the sender stops renewing, then the lease goes.
                    self.advertise();
                    self.release_vips().await;
                    if !self.links.iter().any(|l| l.inherited) {
                        self.set_lease(Duration::ZERO);
                    }
                }
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
            match self.nl.add_ip(l.ifindex, v.vip.addr, v.vip.prefix).await {
                Ok(true) => {}
                Ok(false) => info!("{} was already on {}: adopted", v.vip, l.iface),
                Err(e) => {
                    warn!("adding {} to {}: {e:#}", v.vip, l.iface);
                    continue;
                }
            }
        }
        self.announce("takeover");
    }

    /// A gratuitous ARP burst for every VIP, in the background: the burst's spacing
    /// must not delay polling.
    fn announce(&mut self, why: &'static str) {
        self.bursts.retain(|t| !t.is_finished());
        for v in &self.vips {
            let l = &self.links[v.link];
            let (ifindex, mac, iface, vip) = (l.ifindex, l.mac, l.iface.clone(), v.vip);
            let (count, spacing) = (self.cfg.garp_count, self.cfg.garp_spacing);
            self.bursts.push(tokio::spawn(async move {
                if let Err(e) = garp::announce_ip(ifindex, mac, vip.addr, count, spacing).await {
                    warn!("gratuitous ARP ({why}) for {vip} on {iface}: {e:#}");
                }
            }));
        }
    }

    async fn release_vips(&mut self) {
        // A burst still running would keep pointing caches at us after we yielded.
        for t in self.bursts.drain(..) {
            t.abort();
        }
        for v in &self.vips {
            let l = &self.links[v.link];
            if let Err(e) = self.nl.del_ip(l.ifindex, v.vip.addr, v.vip.prefix).await {
                warn!("removing {} from {}: {e:#}", v.vip, l.iface);
            }
        }
    }

    /// A VIP still configured from a run that crashed stays until the first
    /// decision: adopted if we become MASTER, removed otherwise.
    async fn report_leftover_vips(&self) {
        for v in &self.vips {
            let l = &self.links[v.link];
            if let Ok(true) = self.nl.has_ip(l.ifindex, v.vip.addr, v.vip.prefix).await {
                info!(
                    "{} found on {} (left by an earlier run): kept until the election decides",
                    v.vip, l.iface
                );
            }
        }
    }

    fn ping_rows(&self) -> Vec<crate::status::PingRow> {
        let Some(p) = &self.pinger else {
            return Vec::new();
        };
        let now = monotonic();
        p.report(now)
            .into_iter()
            .map(|(t, ago)| crate::status::PingRow {
                target: t.to_string(),
                last_reply_ms_ago: ago.map(|d| d.as_millis() as u64),
                reachable: ago.is_some_and(|d| d <= self.cfg.dead_after),
            })
            .collect()
    }

    fn write_status(&self) {
        let s = StatusFile {
            pid: std::process::id(),
            node_id: self.cfg.node_id,
            priority: self.cfg.priority,
            epoch: self.epoch,
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
            ping: self.ping_rows(),
            updated_unix_ms: unix_ms(),
            pinned: self.links.iter().all(|l| l.plane.is_pinned()),
            transmit: self
                .links
                .iter()
                .flat_map(|l| {
                    l.targets
                        .paths()
                        .into_iter()
                        .map(move |(ip, path)| format!("{ip} via {}: {}", l.iface, path.name()))
                })
                .collect(),
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
        for l in &mut self.links {
            l.inherited = false;
        }
        // Leave messages (a few copies, 1 ms apart) and the lease withdrawn by the
        // sender thread, which then ends.
        let reach = self.reach();
        if let Some(b) = self.beat.take() {
            let _ = tokio::task::spawn_blocking(move || b.leave(reach)).await;
        }
        self.set_lease(Duration::ZERO);
        let _ = std::fs::remove_file(self.state_dir.path().join(crate::status::STATUS_FILE));
        // The last transitions' hooks still run (bounded), in order.
        if let Some(n) = self.notifier.take() {
            n.drain(self.cfg.notify_timeout + Duration::from_secs(1))
                .await;
        }
        info!("stopped: VIPs released, leave sent, XDP detached");
        // Dropping the links detaches XDP and removes the pins.
    }
}

fn view(id: u32, p: &PeerState) -> PeerView {
    PeerView {
        id,
        last_seen: (p.last_seen_ns != 0).then(|| Duration::from_nanos(p.last_seen_ns)),
        left: p.msg_type == MsgType::Leave as u8,
        gone: p.gone(),
        priority: p.priority,
        state: NodeState::from_u8(p.state).unwrap_or(NodeState::Init),
        holds_vip: p.flags & FLAG_HOLDS_VIP != 0,
        reaches_ping: p.flags & FLAG_REACHES_PING != 0,
    }
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}
