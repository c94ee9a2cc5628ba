//! `hb-user run`: validates everything, attaches the data plane, then runs one loop
//! that sends heartbeats every interval, polls the peers maps four times per
//! interval, steps the election and moves the VIPs.

use crate::{
    beat::{Advert, Beat, BeatLink, BeatParams},
    bpffs::PinRoot,
    clock::monotonic,
    config::{groups, ConfigError, RunArgs, RunConfig, Vip, XdpModeArg},
    election::{Params, WitnessDown},
    events::{Events, News},
    garp,
    hooks::{self, FenceOutcome, Notifier, NotifyArgs},
    kernel, keyfile,
    loader::{DataPlane, Origin, Settings},
    netlink::{self, LinkEvent, LinkEvents, Netlink},
    node::{Action, Claim, Input, Level, Node, NodeParams, Sample},
    notice,
    pinger::Pinger,
    sender::{Dest, LinkSender, Sequencer, Targets},
    statedir::StateDir,
    status::StatusFile,
};
use anyhow::{Context, Result};
use aya::programs::XdpMode;
use hb_common::{
    maps::Key,
    wire2::{self, Body, Group, Head, FLAG_HOLDS, FLAG_REACHES_PING, GROUP_HOLDS, GROUP_WAITING},
    MsgType, NodeState, PeerState,
};
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// Why `run` failed: a bad setting (exit code 2, nothing touched), a kernel
/// that lacks a feature (nothing touched), or a runtime error.
pub enum RunError {
    Config(ConfigError),
    Kernel(kernel::Missing),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for RunError {
    fn from(e: anyhow::Error) -> Self {
        // A setting refused on the way (an unsafe state dir) is still a setting.
        match e.downcast::<ConfigError>() {
            Ok(c) => Self::Config(c),
            Err(e) => Self::Other(e),
        }
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
    /// The kernel deleted the interface (or moved it away): one made again
    /// under the same name is ours (see `follow`).
    gone: bool,
    /// The adopted data plane still held a valid lease: a previous run held the
    /// VIPs, and we keep answering for them until our first decision (a restart
    /// must not interrupt clients).
    inherited: bool,
}

/// A VIP, where it lives and its group (an index into `cfg.groups`).
#[derive(Clone)]
struct PlacedVip {
    vip: Vip,
    on: On,
    group: usize,
}

/// Where a VIP goes.
#[derive(Clone)]
enum On {
    /// A heartbeat link (an index into the links), whose data plane fences it.
    Link(usize),
    /// Another interface (`lo`, a NIC without heartbeats), by the index it
    /// had at the start. Every heartbeat link's data plane fences it (Linux
    /// answers ARP for a host's address on any interface), and it is
    /// announced on its own interface, or on the heartbeat links for one
    /// without ARP (`mac` None: `lo`).
    Other {
        iface: String,
        ifindex: u32,
        mac: Option<[u8; 6]>,
    },
}

impl PlacedVip {
    /// The interface it goes on now: index and name.
    fn at(&self, links: &[Link]) -> (u32, String) {
        match &self.on {
            On::Link(l) => (links[*l].ifindex, links[*l].iface.clone()),
            On::Other { iface, ifindex, .. } => (*ifindex, iface.clone()),
        }
    }

    /// Whether link `i`'s data plane fences it.
    fn fenced_on(&self, i: usize) -> bool {
        match self.on {
            On::Link(l) => l == i,
            On::Other { .. } => true,
        }
    }
}

/// One election (`groups::units`): a VIP group, or the member groups of a
/// sync group together. Each has its own core; the peers, links and the
/// sender are shared.
struct Unit {
    /// Its groups, as indexes into `cfg.groups`.
    groups: Vec<usize>,
    /// The group's name, or the sync group's.
    name: String,
    /// The wire slot peers' standing is read from (the first group's); every
    /// member's slot carries ours.
    slot: usize,
    node: Node,
    /// What its last `Advertise` said.
    advert: Advert,
    /// A takeover in progress: when the holder was last heard, for the
    /// takeover-duration metric once the VIPs are added.
    takeover_from: Option<Duration>,
    /// Takeovers that waited for the witness key, as counted into the metrics.
    witness_waits: u64,
}

/// The checks that need the network, made before anything changes: interfaces
/// exist, each VIP is inside a subnet of one of them and is no address of this
/// host yet (preflight.rs), peers map to links.
struct Plan {
    links: Vec<PlannedLink>,
    vips: Vec<PlacedVip>,
}

/// Name, ifindex, MAC and the peer (id, address) pairs heartbeats go to on it.
type PlannedLink = (String, u32, [u8; 6], Vec<(u32, IpAddr)>);

async fn plan(cfg: &RunConfig, nl: &Netlink) -> Result<Plan, RunError> {
    let mut links = Vec::new();
    let mut subnets = Vec::new();
    for iface in &cfg.membership.ifaces {
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
    for (group, g) in cfg.groups.iter().enumerate() {
        let field = if g.name == groups::DEFAULT_GROUP && !cfg.group_tables {
            "--vip".to_string()
        } else {
            format!("group.{}.vip", g.name)
        };
        for v in &g.vips {
            let vip = v.vip;
            let on = match &v.iface {
                // A heartbeat link's subnet holds it: there.
                None => match link_of(vip.addr) {
                    Some(l) => On::Link(l),
                    None => {
                        let hint = if cfg.group_tables {
                            "name the interface it goes on: \"ADDR/PREFIX dev IF\" (dev lo for a /32 answered on every link)"
                        } else {
                            "name the interface it goes on in a [group.NAME] table: vip = [\"ADDR/PREFIX dev IF\"]"
                        };
                        return Err(RunError::Config(ConfigError::new(
                            field,
                            format!(
                                "{vip} is outside the subnets of {}: {hint}",
                                cfg.membership.ifaces.join(", ")
                            ),
                        )));
                    }
                },
                Some(i) => match cfg.membership.ifaces.iter().position(|x| x == i) {
                    Some(l) => On::Link(l),
                    None => {
                        let Some(info) = nl.link(i).await? else {
                            return Err(RunError::Config(ConfigError::new(
                                field,
                                format!("{vip} dev {i}: no interface named {i}"),
                            )));
                        };
                        let mac = (info.mac != [0; 6]).then_some(info.mac);
                        let host = if vip.addr.is_ipv4() { 32 } else { 128 };
                        // A wider prefix on lo makes the host answer for all of it.
                        if mac.is_none() && vip.prefix != host {
                            return Err(RunError::Config(ConfigError::new(
                                field,
                                format!("{vip} dev {i}: a VIP on an interface without ARP is one address, /{host}"),
                            )));
                        }
                        On::Other {
                            iface: i.clone(),
                            ifindex: info.ifindex,
                            mac,
                        }
                    }
                },
            };
            vips.push(PlacedVip { vip, on, group });
        }
    }
    // A peer address goes out on the link whose subnet holds it; a routed one on
    // the first link.
    for p in &cfg.membership.peers {
        links[link_of(p.addr).unwrap_or(0)].3.push((p.id, p.addr));
    }
    let homes: Vec<(Vip, u32)> = vips
        .iter()
        .map(|v| match &v.on {
            On::Link(l) => (v.vip, links[*l].1),
            On::Other { ifindex, .. } => (v.vip, *ifindex),
        })
        .collect();
    crate::preflight::check_vips(nl, &links, homes).await?;
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
    session: u64,
    links: Vec<Link>,
    /// The sockets and lease maps the sender thread takes.
    beat_links: Vec<BeatLink>,
    pinger: Option<Pinger>,
}

/// The start's steps after the state dir and pin root: the session, a data plane
/// per link (from the objects loaded before anything changed), the sockets. On
/// an error the data planes opened so far are dropped, which removes what they
/// pinned and leaves what a previous run pinned (see `DataPlane`'s Drop).
fn start(
    cfg: &RunConfig,
    key: Key,
    peer_ids: &[u32],
    planned: Vec<PlannedLink>,
    vips: &[PlacedVip],
    loaded: Vec<DataPlane>,
) -> Result<Started, RunError> {
    let session = crate::sender::new_session()?;
    let mut links = Vec::new();
    let mut beat_links = Vec::new();
    for (i, ((iface, ifindex, mac, targets), fresh)) in planned.into_iter().zip(loaded).enumerate()
    {
        let (mut vips_v4, mut vips_v6) = (Vec::new(), Vec::new());
        for v in vips.iter().filter(|v| v.fenced_on(i)) {
            match v.vip.addr {
                IpAddr::V4(a) => vips_v4.push(a),
                IpAddr::V6(a) => vips_v6.push(a),
            }
        }
        let settings = Settings {
            cluster_id: cfg.membership.cluster_id,
            port: cfg.membership.port,
            pass_heartbeats: cfg.runtime.pass_heartbeats,
            key,
            node_id: cfg.membership.node_id,
            peers: peer_ids.to_vec(),
            mac,
            // Each link's program watches ARP for and fences the VIPs that live on it.
            vips_v4,
            vips_v6,
            // Heard again after half a dead-after: soon enough to see a peer
            // come back before it could have been declared dead twice.
            quiet: cfg.timers.dead_after / 2,
        };
        let mut mode = "";
        let (plane, origin) = DataPlane::open(
            fresh,
            &cfg.paths.pin_root,
            &iface,
            ifindex,
            &settings,
            |p| {
                mode = xdp_attach(p, &iface, cfg.runtime.xdp_mode)
                    .map_err(|e| attach_hint(e, &iface))?;
                Ok(())
            },
        )?;
        let pins = if plane.is_pinned() {
            format!(
                "maps pinned in {}",
                cfg.paths.pin_root.join(&iface).display()
            )
        } else {
            "maps not pinned".to_string()
        };
        match origin {
            Origin::Fresh => info!("XDP attached to {iface} ({mode} mode), {pins}"),
            Origin::Adopted => info!(
                "took over the XDP program a previous run left on {iface}, in place: no gap, peer state and lease kept; {pins}"
            ),
            Origin::Replaced => info!(
                "replaced the XDP program a previous build left on {iface} with this build's, in place: no gap, peer state and lease kept; {pins}"
            ),
        }
        let inherited = origin != Origin::Fresh && plane.lease()? > monotonic();
        // A peer's `seen` slot is its index among the configured ids.
        let dests: Vec<Dest> = targets
            .iter()
            .map(|&(peer, addr)| Dest {
                peer,
                slot: peer_ids.iter().position(|&p| p == peer).unwrap_or(0) as u32,
                addr,
            })
            .collect();
        let (sender, targets) = LinkSender::new(&iface, ifindex, mac, &dests, cfg.membership.port)?;
        let lease = plane
            .lease_map()
            .map_err(|e| warn!("the sender cannot renew the lease on {iface}: {e:#}"))
            .ok();
        let sent = plane
            .sent_map()
            .map_err(|e| warn!("death notices from peers on {iface} will be refused: {e:#}"))
            .ok();
        let unmapped = lease.as_ref().is_some_and(|c| !c.is_mapped())
            || sent.as_ref().is_some_and(|c| !c.is_mapped());
        if unmapped {
            warn!("the lease or sent map on {iface} cannot be mapped into memory: each heartbeat costs map update syscalls");
        }
        // Messages echo each peer's session from it: without it no session
        // is ever established.
        let seen = plane
            .seen_map()
            .with_context(|| format!("mapping the seen map on {iface} into memory"))?;
        beat_links.push(BeatLink {
            sender,
            lease,
            sent,
            seen,
        });
        links.push(Link {
            iface,
            ifindex,
            mac,
            plane,
            targets,
            up: true,
            gone: false,
            inherited,
        });
    }
    let pinger = if cfg.membership.ping.is_empty() {
        None
    } else {
        Some(Pinger::new(&cfg.membership.ping)?)
    };
    Ok(Started {
        session,
        links,
        beat_links,
        pinger,
    })
}

/// What the checks before a start found, for the start.
struct Checked {
    key: Key,
    nl: Netlink,
    plan: Plan,
}

/// The checks that change nothing: the key file, the interfaces and VIPs
/// against the host's addresses (`plan`), the kernel's features.
async fn checks(cfg: &RunConfig) -> Result<Checked, RunError> {
    let key = keyfile::read(&cfg.paths.key_file).map_err(RunError::Config)?;
    let nl = Netlink::connect()?;
    let plan = plan(cfg, &nl).await?;
    let found = kernel::Features::probe()?;
    kernel::check(&found, &kernel::release()).map_err(RunError::Kernel)?;
    Ok(Checked { key, nl, plan })
}

/// `hb-user check`: everything a start checks before it changes anything
/// (`checks`, the state dir, the verifier's word on the program), and nothing
/// else: no attachment, no pin, no state dir made, no address touched. Like
/// `keepalived -t`, it may run next to a running node.
pub async fn check(cfg: &RunConfig) -> Result<(), RunError> {
    checks(cfg).await?;
    StateDir::check(&cfg.paths.state_dir)?;
    DataPlane::load()?;
    Ok(())
}

/// Runs the controller until SIGTERM or SIGINT.
/// `args` are the command line's flags: a reload reads the file under them again.
pub async fn run(args: RunArgs, cfg: RunConfig) -> Result<(), RunError> {
    // Before anything changes: from here no signal ends hb-user without its
    // graceful stop (SIGHUP's default would kill it with the VIPs on).
    let signals = Signals::install()?;
    let metrics_listener = match cfg.runtime.metrics {
        Some(addr) => Some(
            crate::metrics::bind(addr)
                .map_err(|e| RunError::Config(ConfigError::new("--metrics", format!("{e:#}"))))?,
        ),
        None => None,
    };
    // Everything that can be wrong with the settings, the kernel or the program
    // is found before anything changes.
    let Checked { key, nl, plan } = checks(&cfg).await?;
    let loaded = plan
        .links
        .iter()
        .map(|_| DataPlane::load())
        .collect::<Result<Vec<_>>>()?;

    // A start that fails from here removes what it made, and only that.
    let state_dir = StateDir::open(&cfg.paths.state_dir)?;
    let pin_root = PinRoot::prepare(&cfg.paths.pin_root);
    let peer_ids = peer_ids(&cfg);
    let Started {
        session,
        mut links,
        beat_links,
        pinger,
    } = match start(&cfg, key, &peer_ids, plan.links, &plan.vips, loaded) {
        Ok(s) => s,
        Err(e) => {
            // `start` dropped the data planes it opened, which took their pins.
            pin_root.undo();
            state_dir.discard();
            return Err(e);
        }
    };
    for l in &mut links {
        l.plane.started(cfg.membership.node_id, session);
    }
    // Subscribed before the links are read, so no change falls between the two.
    let link_events = LinkEvents::subscribe()?;
    let events = Events::new(
        links
            .iter()
            .map(|l| l.plane.events())
            .collect::<Result<_>>()?,
    )?;
    for l in &mut links {
        l.up = nl.link_by_index(l.ifindex).await?.is_some_and(|i| i.up);
    }

    let inherited = links.iter().any(|l| l.inherited);
    let units = units(
        &cfg,
        &peer_ids,
        &plan.vips,
        &links,
        inherited,
        pinger.is_none(),
    );
    // The first heartbeat already carries each group's standing: a peer
    // must never see a restarted node's groups at priority 0.
    let mut first = [Group::default(); wire2::GROUPS];
    for u in &units {
        for &g in &u.groups {
            first[cfg.groups[g].slot] = group_word(u);
        }
    }

    // Heartbeats start now, on their own thread and clock.
    let beat = Beat::spawn(
        BeatParams {
            interval: cfg.timers.interval,
            dead_after: cfg.timers.dead_after,
            realtime: cfg.runtime.realtime,
            leave_copies: 3,
            watchdog: crate::beat::watchdog(cfg.timers.dead_after),
        },
        Sequencer::new(
            cfg.membership.node_id,
            cfg.membership.cluster_id,
            session,
            key,
        ),
        beat_links,
        Advert {
            state: NodeState::Init,
            holds_vip: false,
            reaches_ping: pinger.is_none(),
            lease: inherited,
            leaving: false,
        },
        first,
    )
    .context("starting the heartbeat thread")?;
    let metrics = match metrics_listener {
        Some(l) => Some(crate::metrics::serve(l, beat.gaps())?),
        None => None,
    };

    let (fence_tx, mut fence_rx) = mpsc::unbounded_channel();
    let witness = cfg.witness.witness.clone().map(|endpoints| {
        crate::witness::Witness::spawn(crate::witness::Spec {
            endpoints,
            ttl: cfg.witness.witness_ttl,
            prefix: cfg.witness.witness_prefix.clone(),
            cluster_id: cfg.membership.cluster_id,
            node_id: cfg.membership.node_id,
            session,
            down: cfg.witness.witness_down,
        })
    });
    let mut c = Controller {
        witness,
        units,
        check_rx: (!cfg.checks.is_empty()).then(|| crate::checks::spawn(&cfg.checks)),
        check_last: vec![String::new(); cfg.checks.len()],
        iface_checks: Vec::new(),
        pinger,
        notifiers: notifiers(&cfg),
        fence_tx,
        fencing: BTreeMap::new(),
        conflicts: BTreeMap::new(),
        bursts: Vec::new(),
        link_events,
        events,
        observed: Duration::ZERO,
        hop_refreshes: 0,
        replays: notice::Replays::default(),
        beat_watches: false,
        bodies: BTreeMap::new(),
        beat: Some(beat),
        session,
        key,
        peer_ids,
        links,
        vip_present: vec![false; plan.vips.len()],
        vips: plan.vips,
        nl,
        state_dir,
        cfg,
        args,
        signals,
        reloads: None,
        control: None,
        since_unix_ms: 0,
        systemd: crate::systemd::Systemd::new(),
        metrics,
    };
    c.control = crate::control::Control::listen(c.state_dir.path())
        .map_err(|e| warn!("hb-user standby and resume will not reach this node: {e:#}"))
        .ok();
    for u in 0..c.units.len() {
        c.publish(u);
    }
    let priority = if c.cfg.group_tables {
        let g = c
            .cfg
            .groups
            .iter()
            .map(|g| format!("{} {}", g.name, g.priority));
        format!("groups {}", g.collect::<Vec<_>>().join(", "))
    } else {
        format!("priority {}", c.cfg.election.priority)
    };
    info!(
        "node {} session {session:016x} {priority} on {}: INIT, waiting up to {} ms to hear {} peer(s)",
        c.cfg.membership.node_id,
        c.cfg.membership.ifaces.join(", "),
        c.cfg.timers.init_dead.as_millis(),
        c.peer_ids.len()
    );
    c.restore_standby().await;
    c.start_iface_checks().await;
    c.report_leftover_vips().await;
    c.read_vips().await;
    c.refresh_next_hops().await;
    c.write_status();
    // A loop that cannot run still releases, says goodbye and removes its status.
    let ran = c.main_loop(&mut fence_rx).await;
    c.shutdown().await;
    Ok(ran?)
}

/// The elections of `cfg`'s groups, each in INIT.
fn units(
    cfg: &RunConfig,
    peer_ids: &[u32],
    vips: &[PlacedVip],
    links: &[Link],
    inherited: bool,
    reach: bool,
) -> Vec<Unit> {
    (groups::units(&cfg.groups).into_iter())
        .map(|members| new_unit(cfg, peer_ids, members, vips, links, inherited, reach))
        .collect()
}

/// The election of the groups `members` (indexes into `cfg.groups`), in INIT.
fn new_unit(
    cfg: &RunConfig,
    peer_ids: &[u32],
    members: Vec<usize>,
    vips: &[PlacedVip],
    links: &[Link],
    inherited: bool,
    reach: bool,
) -> Unit {
    let first = &cfg.groups[members[0]];
    let mine: Vec<PlacedVip> = (vips.iter())
        .filter(|v| members.contains(&v.group))
        .cloned()
        .collect();
    let node = Node::new(
        NodeParams {
            machine: Params {
                node_id: cfg.membership.node_id,
                priority: first.priority,
                preempt: first.preempt,
                preempt_delay: first.preempt_delay,
                dead_after: cfg.timers.dead_after,
                init_dead: cfg.timers.init_dead,
                peers: peer_ids.to_vec(),
                ping_quorum: !cfg.membership.ping.is_empty(),
                fencing: cfg.hooks.fence_cmd.is_some(),
                fence_retry: Duration::from_secs(1),
                witness: cfg
                    .witness
                    .witness
                    .is_some()
                    .then_some(cfg.witness.witness_down),
                witness_retry: WITNESS_RETRY,
            },
            has_vips: !mine.is_empty(),
            links: links.iter().map(|l| l.iface.clone()).collect(),
            vip_list: vip_list(&mine, links),
            inherited_lease: inherited,
            checks: tracked(cfg, &members),
        },
        monotonic(),
    );
    Unit {
        name: first.sync.clone().unwrap_or_else(|| first.name.clone()),
        slot: first.slot,
        groups: members,
        node,
        advert: Advert {
            state: NodeState::Init,
            holds_vip: false,
            reaches_ping: reach,
            lease: inherited,
            leaving: false,
        },
        takeover_from: None,
        witness_waits: 0,
    }
}

/// What makes an election the same one across a reload: its groups' names
/// and ids, and their sync group.
fn unit_key(cfg: &RunConfig, members: &[usize]) -> Vec<(String, usize, Option<String>)> {
    (members.iter())
        .map(|&g| {
            let g = &cfg.groups[g];
            (g.name.clone(), g.slot, g.sync.clone())
        })
        .collect()
}

/// The configured peers' ids, sorted, once each: a peer's index here is
/// its `seen` slot.
fn peer_ids(cfg: &RunConfig) -> Vec<u32> {
    let mut v: Vec<u32> = cfg.membership.peers.iter().map(|p| p.id).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The checks the groups `members` track, with their weights; one tracked
/// by several members counts once.
fn tracked(cfg: &RunConfig, members: &[usize]) -> Vec<(String, i32)> {
    let mut checks: Vec<(String, i32)> = Vec::new();
    for &g in members {
        for (name, w) in &cfg.groups[g].track {
            if !checks.iter().any(|(n, _)| n == name) {
                checks.push((name.clone(), *w));
            }
        }
    }
    checks
}

/// What heartbeats say of an election's groups.
fn group_word(unit: &Unit) -> Group {
    let flag = |on: bool, bit: u8| if on { bit } else { 0 };
    Group {
        priority: unit.node.priority(),
        state: unit.advert.state as u8,
        flags: flag(unit.advert.holds_vip, GROUP_HOLDS) | flag(unit.node.waiting(), GROUP_WAITING),
    }
}

/// The notify commands of each group, then of each sync group: `notify`
/// and the per-state ones.
fn notifiers(cfg: &RunConfig) -> Vec<Vec<Notifier>> {
    let t = cfg.hooks.notify_timeout;
    let spawn = |notify: &Option<String>, args, on_state: &[(&'static str, String)]| {
        let main = notify.clone().map(|cmd| Notifier::spawn(cmd, args, t));
        let each = (on_state.iter())
            .map(|(state, cmd)| Notifier::spawn(cmd.clone(), NotifyArgs::On(state), t));
        main.into_iter().chain(each).collect()
    };
    (cfg.groups
        .iter()
        .map(|g| spawn(&g.notify, g.notify_args, &g.on_state)))
    .chain(
        cfg.syncs
            .iter()
            .map(|s| spawn(&s.notify, s.notify_args, &s.on_state)),
    )
    .collect()
}

/// While an election wants the witness key and it is not ours, it asks
/// again this often (each ask is one etcd transaction).
const WITNESS_RETRY: Duration = Duration::from_millis(200);

struct Controller {
    /// `--witness`: the etcd task (witness.rs), when configured.
    witness: Option<crate::witness::Witness>,
    cfg: RunConfig,
    /// The command line's flags, which win over the file at every reload too.
    args: RunArgs,
    signals: Signals,
    /// Health checks' verdicts (checks.rs), when any is configured.
    check_rx: Option<crate::checks::Running>,
    /// Per check, how its last reported run ended.
    check_last: Vec<String>,
    /// Interface checks: (check index, ifindex when last seen, up).
    iface_checks: Vec<(usize, u32, bool)>,
    /// The last reload's outcome, for the status.
    reloads: Option<crate::status::ReloadRow>,
    /// `hb-user standby` / `resume` requests (None: the socket could not be made).
    control: Option<crate::control::Control>,
    /// Every decision (node.rs), one core per election; this file performs them.
    units: Vec<Unit>,
    /// The sender thread; taken by the graceful stop.
    beat: Option<Beat>,
    /// Our session (random, drawn at this start) and the key, for the
    /// peers' body MACs.
    session: u64,
    key: Key,
    peer_ids: Vec<u32>,
    links: Vec<Link>,
    vips: Vec<PlacedVip>,
    /// Per VIP: on its interface, as the kernel's address events say.
    vip_present: Vec<bool>,
    nl: Netlink,
    state_dir: StateDir,
    since_unix_ms: u128,
    pinger: Option<Pinger>,
    /// Per group, then per sync group (`notifiers`).
    notifiers: Vec<Vec<Notifier>>,
    /// Fencing results come back through here, so the loop never waits on a command.
    fence_tx: mpsc::UnboundedSender<(Vec<u32>, FenceOutcome)>,
    /// Fencing commands running, by the peers they fence: the elections
    /// waiting for each (one command serves every group).
    fencing: BTreeMap<Vec<u32>, Vec<usize>>,
    /// (link index, VIP, claiming MAC) -> (ARP claims the XDP program counted,
    /// when it saw the last), as last read.
    conflicts: BTreeMap<(usize, Ipv4Addr, [u8; 6]), (u64, u64)>,
    /// Gratuitous ARP bursts in flight, by election, aborted when it releases.
    bursts: Vec<(usize, tokio::task::JoinHandle<()>)>,
    /// The kernel's announcements of link changes: the truth about link state.
    link_events: LinkEvents,
    /// The data planes' news (events.rs): what wakes us besides deadlines.
    events: Events,
    /// When the core last observed (CLOCK_MONOTONIC).
    observed: Duration,
    /// Counts next-hop refreshes: unresolved peers every time, all every tenth.
    hop_refreshes: u64,
    /// Death notices refused as replays, as last counted.
    replays: notice::Replays,
    /// It does, as of the last look: our own timer skips peers' silence.
    beat_watches: bool,
    /// Per (link index, peer), the last body whose MAC held.
    bodies: BTreeMap<(usize, u32), Body>,
    /// The service manager's notifications (systemd.rs).
    systemd: crate::systemd::Systemd,
    /// `--metrics`: what the scrape reads (metrics.rs).
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl Controller {
    async fn main_loop(
        &mut self,
        fence_rx: &mut mpsc::UnboundedReceiver<(Vec<u32>, FenceOutcome)>,
    ) -> Result<()> {
        use tokio::time::{interval, sleep_until, Instant, MissedTickBehavior::Skip};
        // Pings go out every interval, when configured.
        let mut ping = interval(self.cfg.timers.interval);
        ping.set_missed_tick_behavior(Skip);
        // Off by default; a 1-hour period stands in for "never" and is skipped below.
        let mut refresh = interval(
            self.cfg
                .announce
                .garp_refresh
                .unwrap_or(Duration::from_secs(3600)),
        );
        refresh.set_missed_tick_behavior(Skip);
        refresh.tick().await;
        // One look before waiting (after the signal handlers, so that a stop
        // right after a first takeover is still graceful): peers an adopted
        // data plane already hears are steady, so no news would come of them.
        self.poll().await;
        // The once-a-second sweep: status (ping reachability, liveness of the
        // file itself), next hops, and counts that need no prompt action.
        let mut status = interval(Duration::from_secs(1));
        status.set_missed_tick_behavior(Skip);
        loop {
            // Sleep until news or the earliest deadline; the watchdog is fed on
            // every wake and at least every half of its period.
            let now = monotonic();
            let at = Instant::now() + self.next_wake().saturating_sub(now);
            tokio::select! {
                news = self.events.next() => self.news(news).await,
                _ = async { self.beat.as_ref().expect("guarded").lapsed().await }, if self.beat.is_some() => self.poll().await,
                _ = async { self.beat.as_ref().expect("guarded").silent().await }, if self.beat.is_some() => self.poll().await,
                _ = sleep_until(at) => self.poll().await,
                ev = self.link_events.next() => {
                    let Some(ev) = ev else {
                        anyhow::bail!("the link event socket closed");
                    };
                    self.iface_checks(&ev).await;
                    if let LinkEvent::Address { ifindex, addr, present } = ev {
                        self.address_changed(ifindex, addr, present).await;
                    // A link going down is acted on now; one that moved has new
                    // next hops and addresses to read.
                    } else if self.link_changed(ev) {
                        self.refresh_next_hops().await;
                        self.read_vips().await;
                        self.poll().await;
                    }
                }
                _ = ping.tick(), if self.pinger.is_some() => {
                    if let Some(p) = &mut self.pinger { p.send(); }
                }
                r = async { self.pinger.as_mut().expect("guarded").receive().await }, if self.pinger.is_some() => {
                    match r {
                        // A reply that makes a target reachable again is news.
                        Ok(()) if self.reach() != self.units[0].node.reach() => self.poll().await,
                        Ok(()) => {}
                        Err(e) => warn!("ping socket: {e:#}"),
                    }
                }
                Some((peers, outcome)) = fence_rx.recv() => self.fenced(peers, outcome).await,
                Ok(()) = async { self.witness.as_mut().expect("guarded").snapshot.changed().await }, if self.witness.is_some() => {
                    self.witness_said().await;
                }
                Some((req, reply)) = async { self.control.as_mut().expect("guarded").next().await }, if self.control.is_some() => {
                    let answer = self.control_request(req).await;
                    let _ = reply.send(answer);
                }
                Some(r) = async { self.check_rx.as_mut().expect("guarded").rx.recv().await }, if self.check_rx.is_some() => {
                    self.check_last[r.index] = r.last;
                    self.check_metric(r.index, r.healthy);
                    let name = self.cfg.checks[r.index].name.clone();
                    for u in 0..self.units.len() {
                        let actions = self.units[u].node.handle(Input::Check {
                            name: name.clone(),
                            healthy: r.healthy,
                            weight: r.weight,
                        });
                        self.perform(u, actions).await;
                    }
                    self.poll().await;
                }
                _ = status.tick() => {
                    self.watch_conflicts().await;
                    self.replays.watch(self.links.iter().map(|l| (l.iface.as_str(), &l.plane)));
                    self.refresh_next_hops().await;
                    self.write_status();
                    self.sample_metrics();
                }
                _ = refresh.tick(), if self.cfg.announce.garp_refresh.is_some() => {
                    self.announce("refresh");
                }
                sig = self.signals.next() => match sig {
                    Sig::Stop(name) => { info!("{name}: leaving"); return Ok(()); }
                    Sig::Reload => {
                        self.reload().await;
                        refresh = interval(self.cfg.announce.garp_refresh.unwrap_or(Duration::from_secs(3600)));
                        refresh.set_missed_tick_behavior(Skip);
                        refresh.tick().await;
                    }
                    Sig::Ignored(name) => info!("{name}: ignored (SIGTERM stops, SIGHUP reloads)"),
                },
            }
            if let Some(b) = &self.beat {
                b.touch();
            }
            self.tell_systemd();
        }
    }

    /// A transition of election `u` to `to`, for the metrics: counted by
    /// reason, the state gauges flipped, and a takeover's start noted.
    fn count_transition(&mut self, u: usize, to: &str) {
        let Some(m) = self.metrics.clone() else {
            return;
        };
        let (kind, silence, _) = self.units[u].node.last_reason();
        m.transitions
            .get_or_create(&crate::metrics::Transition {
                group: self.units[u].name.clone(),
                to: to.to_string(),
                reason: kind.to_string(),
            })
            .inc();
        let (waits, wait_ms) = {
            let seen = self.units[u].node.seen();
            (seen.witness_waits, seen.witness_wait_ms)
        };
        if waits > self.units[u].witness_waits {
            self.units[u].witness_waits = waits;
            let waited = Duration::from_millis(wait_ms);
            m.witness_wait_seconds.observe(waited.as_secs_f64());
        }
        if to == NodeState::Master.name() {
            self.units[u].takeover_from =
                Some(monotonic().saturating_sub(silence.unwrap_or_default()));
        }
        self.group_metrics();
    }

    /// Each group's state, one gauge per state.
    fn group_metrics(&self) {
        let Some(m) = &self.metrics else { return };
        for unit in &self.units {
            let now = unit.node.state();
            for &g in &unit.groups {
                for s in [
                    NodeState::Init,
                    NodeState::Backup,
                    NodeState::Master,
                    NodeState::Fault,
                ] {
                    let labels = crate::metrics::GroupState {
                        group: self.cfg.groups[g].name.clone(),
                        state: s.name().to_string(),
                    };
                    m.group_state.get_or_create(&labels).set((s == now) as i64);
                }
            }
        }
    }

    fn check_metric(&self, index: usize, healthy: bool) {
        if let Some(m) = &self.metrics {
            let labels = crate::metrics::Check {
                check: self.cfg.checks[index].name.clone(),
            };
            m.check_healthy.get_or_create(&labels).set(healthy as i64);
        }
    }

    /// The once-a-second sample: peers, the data planes' counters, the lease.
    fn sample_metrics(&self) {
        use crate::metrics::{count_to, Fenced, Packets, Peer, PeerLink};
        let Some(m) = &self.metrics else { return };
        self.group_metrics();
        let now = monotonic();
        let live = self.units[0].node.live();
        for &id in &self.peer_ids {
            let up = live.iter().any(|&(_, p)| p == id);
            let peer = Peer {
                peer: id.to_string(),
            };
            m.peer_up.get_or_create(&peer).set(up as i64);
        }
        for l in &self.links {
            for &id in &self.peer_ids {
                let Ok(Some(p)) = l.plane.peer(id) else {
                    continue;
                };
                let labels = PeerLink {
                    peer: id.to_string(),
                    link: l.iface.clone(),
                };
                let ago = if p.last_seen_ns == 0 {
                    -1.0
                } else {
                    now.saturating_sub(Duration::from_nanos(p.last_seen_ns))
                        .as_secs_f64()
                };
                m.peer_silence.get_or_create(&labels).set(ago);
                count_to(&m.peer_accepted.get_or_create(&labels), p.accepted);
            }
            if let Ok(stats) = l.plane.stats() {
                let all = stats.as_array();
                for (field, n) in hb_common::maps::Stats::FIELDS.iter().zip(all) {
                    let labels = Packets {
                        link: l.iface.clone(),
                        outcome: field.to_string(),
                    };
                    count_to(&m.packets.get_or_create(&labels), n);
                }
                for (family, n) in [
                    ("arp", stats.fenced_arp),
                    ("ipv4", stats.fenced_ip),
                    ("nd", stats.fenced_nd),
                    ("ipv6", stats.fenced_ip6),
                ] {
                    let labels = Fenced {
                        link: l.iface.clone(),
                        family: family.into(),
                    };
                    count_to(&m.fenced.get_or_create(&labels), n);
                }
            }
        }
        if let Some(l) = self.links.first() {
            let left = l.plane.lease().unwrap_or_default().saturating_sub(now);
            m.lease.set(left.as_secs_f64());
        }
    }

    /// READY once every election has left INIT, STATUS with each group's
    /// state, WATCHDOG from this loop (so a stuck loop is restarted).
    /// Nothing (no allocation) when not run by systemd: this is every wake.
    fn tell_systemd(&mut self) {
        if !self.systemd.enabled() {
            return;
        }
        let settled = self.units.iter().all(|u| u.node.state() != NodeState::Init);
        // One election per group at most: no allocation for the comparison.
        let mut states = [NodeState::Init; wire2::GROUPS];
        for (s, u) in states.iter_mut().zip(&self.units) {
            *s = u.node.state();
        }
        let states = &states[..self.units.len().min(wire2::GROUPS)];
        let status = || {
            let s: Vec<String> = (self.units.iter())
                .map(|u| format!("{} {}", u.name, u.node.state().name()))
                .collect();
            s.join(", ")
        };
        self.systemd.update(monotonic(), settled, states, status);
    }

    /// When to look again without news, as an absolute time (a deadline in
    /// the past means at once): the core's next deadline; the end of ping
    /// reachability while the core still counts us as reaching a target; and
    /// half the watchdog period after the last look, so that the core sees
    /// time pass even when other wake-ups (ping ticks) keep coming.
    fn next_wake(&self) -> Duration {
        let look = self.observed + crate::beat::watchdog(self.cfg.timers.dead_after) / 2;
        let reach = self
            .pinger
            .as_ref()
            .filter(|_| self.units[0].node.reach())
            .and_then(|p| p.reach_ends(self.cfg.timers.dead_after))
            .map(|t| t + Duration::from_micros(1));
        // Peers' silence is the sender thread's to watch when it can.
        let core = (self.units.iter())
            .filter_map(|u| {
                if self.beat_watches {
                    u.node.next_timer()
                } else {
                    u.node.next_deadline()
                }
            })
            .min();
        [core, reach, self.systemd.next_feed()]
            .into_iter()
            .flatten()
            .fold(look, Duration::min)
    }

    /// Records from the data plane: a peer heard anew or changed, a death
    /// notice (both: observe now), an ARP claim (read the VIP watch now).
    async fn news(&mut self, news: Vec<News>) {
        if news.iter().any(|n| matches!(n, News::Claim(_))) {
            self.watch_conflicts().await;
        }
        if news.iter().any(|n| !matches!(n, News::Claim(_))) {
            self.poll().await;
        }
    }

    /// Whether we hold any group.
    fn holds_vip(&self) -> bool {
        self.units.iter().any(|u| u.node.holds_vip())
    }

    /// Tells the sender what election `u` says now: its groups' slots, and
    /// the node as a whole (MASTER while it holds any group; the lease
    /// renewed while any group wants it).
    fn publish(&mut self, u: usize) {
        let Some(b) = &self.beat else {
            return;
        };
        let unit = &self.units[u];
        let g = group_word(unit);
        for &m in &unit.groups {
            b.set_group(self.cfg.groups[m].slot, g);
        }
        let first = self.units[0].advert;
        let master = self
            .units
            .iter()
            .any(|u| u.advert.state == NodeState::Master);
        b.advertise(Advert {
            state: if master {
                NodeState::Master
            } else {
                first.state
            },
            holds_vip: self.units.iter().any(|u| u.advert.holds_vip),
            reaches_ping: first.reaches_ping,
            lease: self.units.iter().any(|u| u.advert.lease),
            leaving: false,
        });
    }

    /// Whether we reach a ping target (true when none is configured).
    fn reach(&self) -> bool {
        self.pinger
            .as_ref()
            .is_none_or(|p| p.reachable(monotonic(), self.cfg.timers.dead_after))
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

    /// Applies a link change the kernel announced; true when one of our links
    /// went up or down, or moved (see `follow`).
    fn link_changed(&mut self, ev: LinkEvent) -> bool {
        let info = match ev {
            LinkEvent::Changed(info) => info,
            LinkEvent::Removed { ifindex } => {
                let Some(l) = self.links.iter_mut().find(|l| l.ifindex == ifindex) else {
                    return false;
                };
                warn!("link {} deleted: waiting for it to come back", l.iface);
                l.gone = true;
                return std::mem::replace(&mut l.up, false);
            }
            LinkEvent::Address { .. } => return false,
        };
        // Ours by index; or, while ours is gone, a new interface by its name.
        let Some(i) = self
            .links
            .iter()
            .position(|l| l.ifindex == info.ifindex)
            .or_else(|| {
                self.links
                    .iter()
                    .position(|l| l.gone && l.iface == info.name)
            })
        else {
            return false;
        };
        let moved = self.follow(i, &info);
        let l = &mut self.links[i];
        if l.gone || l.up == info.up {
            return moved;
        }
        l.up = info.up;
        if info.up {
            info!("link {} up", l.iface);
        } else {
            warn!("link {} down", l.iface);
        }
        true
    }

    /// Keeps link `i` on its interface as the kernel changes it: made again
    /// under its name (a new index: the same program, maps and lease attached
    /// there), renamed (followed by index; the pins move along), or given a new
    /// MAC (XDP's config and the heartbeat frames carry it, and a holder
    /// announces it). New sockets in each case. True when anything changed.
    fn follow(&mut self, i: usize, info: &netlink::LinkInfo) -> bool {
        let l = &mut self.links[i];
        let (made_again, renamed, new_mac) = (
            l.ifindex != info.ifindex,
            l.iface != info.name,
            l.mac != info.mac,
        );
        if !made_again && !renamed && !new_mac {
            return false;
        }
        match l.plane.follow(info.ifindex, info.mac) {
            Ok(true) => info!(
                "{} is back as interface #{}: XDP attached again, peer state and lease kept",
                info.name, info.ifindex
            ),
            Ok(false) => {}
            Err(e) => {
                // Tried again on the interface's next change (e.g. going up).
                warn!(
                    "following {} to interface #{}: {e:#}",
                    info.name, info.ifindex
                );
                return false;
            }
        }
        if renamed {
            warn!(
                "{} was renamed {}: following it (the settings still name {})",
                l.iface, info.name, l.iface
            );
            if let Err(e) = l.plane.rename_pins(&info.name) {
                warn!("{e:#}");
            }
        }
        if new_mac {
            info!(
                "{} has a new MAC {}",
                info.name,
                info.mac.map(|b| format!("{b:02x}")).join(":")
            );
        }
        if let Err(e) = l.targets.rebind(&info.name, info.ifindex, info.mac) {
            warn!("heartbeat sockets on {}: {e:#}", info.name);
        }
        l.iface = info.name.clone();
        l.ifindex = info.ifindex;
        l.mac = info.mac;
        l.gone = false;
        if renamed {
            let names: Vec<String> = self.links.iter().map(|l| l.iface.clone()).collect();
            for u in 0..self.units.len() {
                let list = self.vip_list(u);
                self.units[u].node.renamed(names.clone(), list);
            }
        }
        // Neighbours still send to the old MAC: tell them.
        if new_mac && !made_again {
            self.announce("new MAC");
        }
        true
    }

    /// The witness's snapshot changed: each election learns what it says of
    /// its key, and elects with it.
    async fn witness_said(&mut self) {
        let Some(w) = &mut self.witness else { return };
        let snap = w.snapshot.borrow_and_update().clone();
        for u in 0..self.units.len() {
            let k = snap
                .keys
                .get(&self.units[u].name)
                .copied()
                .unwrap_or_default();
            let key = crate::election::KeyView {
                owned_until: snap.lease_until.filter(|_| k.owned),
                held_by: k.held_by,
                reachable: snap.reachable,
            };
            let actions = self.units[u].node.handle(Input::Witness { key });
            self.perform(u, actions).await;
        }
        self.witness_metrics(&snap);
        self.poll().await;
    }

    /// The witness's state for the scrape.
    fn witness_metrics(&self, snap: &crate::witness::Snapshot) {
        let (Some(m), Some(w)) = (&self.metrics, &self.witness) else {
            return;
        };
        m.witness_reachable.set(snap.reachable as i64);
        let left = snap
            .lease_until
            .map_or(0.0, |t| t.saturating_sub(monotonic()).as_secs_f64());
        m.witness_lease.set(left);
        for u in &self.units {
            let owned = snap.keys.get(&u.name).is_some_and(|k| k.owned);
            let labels = crate::metrics::Election {
                group: u.name.clone(),
            };
            m.witness_key.get_or_create(&labels).set(owned as i64);
        }
        let down = w.spec().down;
        for d in [WitnessDown::Keep, WitnessDown::Heartbeats] {
            let labels = crate::metrics::WitnessDown {
                down: d.name().into(),
            };
            m.witness_down
                .get_or_create(&labels)
                .set((d == down) as i64);
        }
    }

    /// The witness values ("NODE SESSION") of peers that left or whose
    /// kernel sent a death notice: every session the data planes hold for
    /// them, the notice's included.
    fn handed_over(&self, peers: &[u32]) -> Vec<String> {
        let mut out = Vec::new();
        for &id in peers {
            for l in &self.links {
                if let Ok(Some(p)) = l.plane.peer(id) {
                    for s in [p.session, p.gone_session] {
                        let v = crate::witness::Witness::value(id, s);
                        if s != 0 && !out.contains(&v) {
                            out.push(v);
                        }
                    }
                }
            }
        }
        out
    }

    /// What each link's XDP program recorded of each peer, per election (its
    /// group slot's standing).
    fn samples(&mut self) -> Vec<BTreeMap<u32, Vec<Sample>>> {
        let mut out = vec![BTreeMap::new(); self.units.len()];
        for &id in &self.peer_ids {
            let mut per_link = vec![Vec::with_capacity(self.links.len()); self.units.len()];
            for (i, l) in self.links.iter().enumerate() {
                let p = l.plane.peer(id).ok().flatten().unwrap_or_default();
                let last = self.bodies.entry((i, id)).or_default();
                let base = sample(&p, &self.key, last);
                for (u, unit) in self.units.iter().enumerate() {
                    per_link[u].push(in_slot(base, last, unit.slot));
                }
            }
            for (u, s) in per_link.into_iter().enumerate() {
                out[u].insert(id, s);
            }
        }
        out
    }

    /// When a message from our own id in another session last came, on any
    /// link (XDP records it in our own entry).
    fn collision(&self) -> Option<Duration> {
        self.links
            .iter()
            .filter_map(|l| l.plane.peer(self.cfg.membership.node_id).ok().flatten())
            .map(|p| p.last_seen_ns)
            .max()
            .filter(|&ns| ns != 0)
            .map(Duration::from_nanos)
    }

    async fn poll(&mut self) {
        if let Some(b) = &self.beat {
            b.touch();
            // Our own heartbeats stopped for longer than dead-after: step down
            // first, then observe (and elect) as usual.
            if let Some(silent) = b.lapse() {
                let now = monotonic();
                for (u, peers) in self.samples().into_iter().enumerate() {
                    let actions = self.units[u]
                        .node
                        .handle(Input::Lapsed { now, silent, peers });
                    self.perform(u, actions).await;
                }
                if let Some(b) = &self.beat {
                    b.clear_lapse();
                }
            }
        }
        self.observed = monotonic();
        let (link_up, reach, collision) = (
            self.links.iter().any(|l| l.up),
            self.reach(),
            self.collision(),
        );
        let samples = self.samples();
        let mut all = Vec::new();
        for (u, peers) in samples.into_iter().enumerate() {
            let input = Input::Observe {
                now: self.observed,
                link_up,
                reach,
                peers,
                collision,
            };
            all.push(self.units[u].node.handle(input));
        }
        // Before performing: the status written among the actions says it.
        // Every election sees the same peers live; the first one's list serves.
        let slot = |peer: u32| self.peer_ids.iter().position(|&p| p == peer);
        let watch: Vec<(usize, u32)> = self.units[0]
            .node
            .live()
            .iter()
            .filter_map(|&(link, peer)| Some((link, slot(peer)? as u32)))
            .collect();
        self.beat_watches = self.beat.as_ref().is_some_and(|b| {
            for u in &self.units {
                let (holder, heard) = u.node.view();
                for &g in &u.groups {
                    b.view(self.cfg.groups[g].slot, holder, heard);
                }
            }
            b.watch(&watch)
        });
        for (u, actions) in all.into_iter().enumerate() {
            self.perform(u, actions).await;
            // The end of a preempt_delay changes what heartbeats say without
            // a transition (the sender sends only on a change).
            self.publish(u);
        }
    }

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

    /// ARP claims for our VIPs from foreign MACs, as counted by XDP. A peer's
    /// announcement after it took over is reported quietly; an unknown MAC is a
    /// conflict, and while we hold the VIP it is a split-brain signal: re-announce
    /// (the election itself runs on every poll).
    async fn watch_conflicts(&mut self) {
        let mut fresh = Vec::new();
        // Only what XDP holds now (a few MACs per VIP) is kept: a flood of
        // random MACs cannot grow this.
        let mut now_held = BTreeMap::new();
        for (i, l) in self.links.iter().enumerate() {
            let Ok(entries) = l.plane.vip_watch() else {
                continue;
            };
            for (vip, w) in entries {
                for c in w.claimants.iter().filter(|c| c.count != 0) {
                    let seen = self.conflicts.get(&(i, vip, c.mac)).copied();
                    now_held.insert((i, vip, c.mac), (c.count, c.last_ns));
                    // Claims since the last sweep; a MAC that lost its slot
                    // and came back counts from 1 again, at a later time.
                    let new = match seen {
                        None => c.count,
                        Some((_, at)) if c.last_ns <= at => 0,
                        Some((n, _)) if c.count > n => c.count - n,
                        Some(_) => c.count,
                    };
                    if new != 0 {
                        fresh.push((i, vip, c.mac, new));
                    }
                }
            }
        }
        self.conflicts = now_held;
        let claims = fresh
            .into_iter()
            .map(|(link, vip, mac, count)| Claim {
                link,
                vip: vip.to_string(),
                mac: mac.map(|b| format!("{b:02x}")).join(":"),
                count,
                peer: self.peer_ids.iter().copied().find(|&id| {
                    self.links.iter().any(|l| {
                        l.plane
                            .peer(id)
                            .ok()
                            .flatten()
                            .is_some_and(|p| p.src_mac == mac)
                    })
                }),
            })
            .collect();
        let claims: Vec<Claim> = claims;
        let now = monotonic();
        for u in 0..self.units.len() {
            let mine: Vec<Claim> = claims
                .iter()
                .filter(|c| {
                    self.vips.iter().any(|v| {
                        self.units[u].groups.contains(&v.group) && v.vip.addr.to_string() == c.vip
                    })
                })
                .cloned()
                .collect();
            if mine.is_empty() {
                continue;
            }
            let actions = self.units[u]
                .node
                .handle(Input::Claims { now, claims: mine });
            self.perform(u, actions).await;
        }
    }

    /// A fencing command finished.
    async fn fenced(&mut self, peers: Vec<u32>, outcome: FenceOutcome) {
        let ok = outcome == FenceOutcome::Fenced;
        if !ok {
            warn!("fencing command for {peers:?}: {outcome:?}");
        }
        for u in self.fencing.remove(&peers).unwrap_or_default() {
            let actions = self.units[u].node.handle(Input::FenceDone {
                now: monotonic(),
                peers: peers.clone(),
                ok,
            });
            self.perform(u, actions).await;
        }
    }

    /// Performs election `u`'s actions, in order.
    async fn perform(&mut self, u: usize, actions: Vec<Action>) {
        let mut queue = std::collections::VecDeque::from(actions);
        // With several elections, log lines say which.
        let tag = if self.units.len() > 1 {
            format!("{}: ", self.units[u].name)
        } else {
            String::new()
        };
        while let Some(a) = queue.pop_front() {
            match a {
                Action::Log { level, msg } => {
                    // A transition's line carries its fields (journald's GROUP,
                    // STATE, REASON, PEER, SILENCE_MS): the Notify after it.
                    let group = self.units[u].name.as_str();
                    let (reason, silence, peer) = self.units[u].node.last_reason();
                    let to = match queue.front() {
                        Some(Action::Notify { to, .. }) => Some(to.as_str()),
                        _ => None,
                    };
                    let (reason, silence_ms, peer) = match to {
                        Some(_) => (Some(reason), silence.map(|s| s.as_millis() as u64), peer),
                        None => (None, None, None),
                    };
                    match level {
                        Level::Info => {
                            info!(group, state = to, reason, peer, silence_ms, "{tag}{msg}")
                        }
                        Level::Warn => {
                            warn!(group, state = to, reason, peer, silence_ms, "{tag}{msg}")
                        }
                        Level::Error => {
                            error!(group, state = to, reason, peer, silence_ms, "{tag}{msg}")
                        }
                    }
                }
                // The lease covers the node: withdrawn once no election wants it.
                Action::SetLease { until } => {
                    let others =
                        (self.units.iter().enumerate()).any(|(i, o)| i != u && o.advert.lease);
                    if !until.is_zero() || !others {
                        self.set_lease(until);
                    }
                }
                Action::Advertise { .. } => {
                    if let Some(adv) = a.advert() {
                        self.units[u].advert = adv;
                        self.publish(u);
                    }
                }
                Action::TakeVips => {
                    if let Err(error) = self.take_vips(u).await {
                        let now = monotonic();
                        queue.extend(self.units[u].node.handle(Input::TakeFailed { now, error }));
                    } else if let Some(t0) = self.units[u].takeover_from.take() {
                        if let Some(m) = &self.metrics {
                            m.takeover_seconds
                                .observe(monotonic().saturating_sub(t0).as_secs_f64());
                        }
                    }
                }
                Action::ReleaseVips => self.release_vips(u).await,
                Action::Announce { why } => {
                    self.announce_unit(u, &why);
                    // Let the burst's first round go now, before the hooks and status.
                    tokio::task::yield_now().await;
                }
                Action::Fence { peers } => {
                    if let Some(waiting) = self.fencing.get_mut(&peers) {
                        // Another group's command for the same peers is running.
                        if !waiting.contains(&u) {
                            waiting.push(u);
                        }
                        continue;
                    }
                    self.fencing.insert(peers.clone(), vec![u]);
                    let cmd = self.cfg.hooks.fence_cmd.clone().unwrap_or_default();
                    let (tx, node, timeout) = (
                        self.fence_tx.clone(),
                        self.cfg.membership.node_id,
                        self.cfg.hooks.fence_timeout,
                    );
                    tokio::spawn(async move {
                        let outcome = hooks::fence(&cmd, node, &peers, timeout).await;
                        let _ = tx.send((peers, outcome));
                    });
                }
                Action::AcquireKey { gone } => {
                    let gone = self.handed_over(&gone);
                    if let Some(w) = &self.witness {
                        w.acquire(&self.units[u].name, gone);
                    }
                }
                Action::ReleaseKey => {
                    if let Some(w) = &self.witness {
                        w.release(&self.units[u].name);
                    }
                }
                Action::Notify { from, to, reason } => {
                    self.since_unix_ms = unix_ms();
                    self.count_transition(u, &to);
                    self.notify(u, from, to, reason);
                }
                Action::Priority { .. } => self.publish(u),
                Action::RivalHolder { peer } => {
                    let why = format!("peer {peer}, which ranks lower, also holds it");
                    self.notify(u, "MASTER".into(), hooks::RX_LOWER.into(), why);
                }
                Action::WriteStatus => self.write_status(),
            }
        }
    }

    /// A transition of election `u`: each of its groups' notify commands,
    /// then its sync group's.
    fn notify(&self, u: usize, from: String, to: String, reason: String) {
        let unit = &self.units[u];
        let iface = (self.links.iter())
            .map(|l| l.iface.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let t = |group: &str, kind: hooks::Kind, vip: String| hooks::Transition {
            new_state: to.clone(),
            old_state: from.clone(),
            vip,
            iface: iface.clone(),
            reason: reason.clone(),
            priority: unit.node.priority(),
            group: group.to_string(),
            kind,
        };
        for &g in &unit.groups {
            let vips: Vec<PlacedVip> = self.vips.iter().filter(|v| v.group == g).cloned().collect();
            let tr = t(
                &self.cfg.groups[g].name,
                hooks::Kind::Instance,
                vip_list(&vips, &self.links),
            );
            for n in &self.notifiers[g] {
                n.send(tr.clone());
            }
        }
        let sync = self.cfg.groups[unit.groups[0]].sync.as_ref();
        if let Some(i) = sync.and_then(|s| self.cfg.syncs.iter().position(|x| x.name == *s)) {
            let tr = t(&unit.name, hooks::Kind::Group, self.vip_list(u));
            for n in &self.notifiers[self.cfg.groups.len() + i] {
                n.send(tr.clone());
            }
        }
    }

    /// Election `u`'s VIPs, as indexes into `vips`.
    fn unit_vips(&self, u: usize) -> Vec<usize> {
        let groups = &self.units[u].groups;
        (0..self.vips.len())
            .filter(|&i| groups.contains(&self.vips[i].group))
            .collect()
    }

    fn vip_list(&self, u: usize) -> String {
        let vips: Vec<PlacedVip> = self
            .unit_vips(u)
            .into_iter()
            .map(|i| self.vips[i].clone())
            .collect();
        vip_list(&vips, &self.links)
    }

    /// Adds election `u`'s VIPs not there yet; the errors, if any, in one line.
    async fn take_vips(&mut self, u: usize) -> Result<(), String> {
        let mut errors = Vec::new();
        for i in self.unit_vips(u) {
            if self.vip_present[i] {
                continue;
            }
            let vip = self.vips[i].vip;
            let (ifindex, iface) = self.vips[i].at(&self.links);
            match self.nl.add_ip(ifindex, vip.addr, vip.prefix).await {
                Ok(true) => {}
                Ok(false) => info!("{vip} was already on {iface}: adopted"),
                Err(e) => {
                    errors.push(format!("{vip} on {iface}: {e:#}"));
                    continue;
                }
            }
            self.vip_present[i] = true;
        }
        if !errors.is_empty() {
            // The core stops claiming (Input::TakeFailed).
            return Err(errors.join("; "));
        }
        // After the VIPs: a route may take one as its source.
        self.move_routes(u, true).await;
        // What heartbeats say about holding follows what the kernel has now.
        self.vips_changed(u).await;
        Ok(())
    }

    /// Adds (`take`) or removes election `u`'s groups' routes and rules
    /// (`routes`, `rules`: keepalived's `virtual_routes`, `virtual_rules`).
    /// A failure is logged and the rest go on: the VIPs still move.
    async fn move_routes(&mut self, u: usize, take: bool) {
        let groups = self.units[u].groups.clone();
        for g in groups {
            let spec = &self.cfg.groups[g];
            let (routes, rules, name) =
                (spec.routes.clone(), spec.rules.clone(), spec.name.clone());
            // Rules after routes when adding, before them when removing.
            if !take {
                for r in rules.iter().rev() {
                    if let Err(e) = self.nl.rule(r, false).await {
                        warn!("group {name}: {e:#}");
                    }
                }
            }
            let ordered: Vec<_> = if take {
                routes.iter().collect()
            } else {
                routes.iter().rev().collect()
            };
            for r in ordered {
                let dev = match &r.dev {
                    None => None,
                    Some(d) => match self.nl.link(d).await {
                        Ok(Some(i)) => Some(i.ifindex),
                        _ => {
                            warn!(
                                "group {name}: no interface {d} for the route to {}/{}",
                                r.dest.0, r.dest.1
                            );
                            continue;
                        }
                    },
                };
                if let Err(e) = self.nl.route(r, dev, take).await {
                    warn!("group {name}: {e:#}");
                }
            }
            if take {
                for r in &rules {
                    if let Err(e) = self.nl.rule(r, true).await {
                        warn!("group {name}: {e:#}");
                    }
                }
            }
        }
    }

    /// Election `u`'s VIPs not on their interfaces, for its core.
    fn missing_vips(&self, u: usize) -> Vec<String> {
        (self.unit_vips(u).into_iter())
            .filter(|&i| !self.vip_present[i])
            .map(|i| {
                let v = &self.vips[i];
                format!("{} on {}", v.vip, v.at(&self.links).1)
            })
            .collect()
    }

    /// Which VIPs are on their interfaces, as the kernel says now.
    async fn read_present(&mut self) {
        for (i, v) in self.vips.iter().enumerate() {
            let (ifindex, _) = v.at(&self.links);
            self.vip_present[i] = matches!(
                self.nl.has_ip(ifindex, v.vip.addr, v.vip.prefix).await,
                Ok(true)
            );
        }
    }

    /// Reads which VIPs are on their interfaces (at start; events after).
    async fn read_vips(&mut self) {
        self.read_present().await;
        for u in 0..self.units.len() {
            let missing = self.missing_vips(u);
            self.units[u].node.handle(Input::Vips {
                now: monotonic(),
                missing,
            });
        }
    }

    /// The kernel announced an address change: the truth about our VIPs.
    async fn address_changed(&mut self, ifindex: u32, addr: IpAddr, present: bool) {
        let mut changed = Vec::new();
        for (i, v) in self.vips.iter().enumerate() {
            if v.at(&self.links).0 == ifindex && v.vip.addr == addr {
                if self.vip_present[i] != present {
                    changed.push(v.group);
                }
                self.vip_present[i] = present;
            }
        }
        for u in 0..self.units.len() {
            if self.units[u].groups.iter().any(|g| changed.contains(g)) {
                self.vips_changed(u).await;
            }
        }
    }

    async fn vips_changed(&mut self, u: usize) {
        let input = Input::Vips {
            now: monotonic(),
            missing: self.missing_vips(u),
        };
        let actions = self.units[u].node.handle(input);
        // A re-add from here performs TakeVips, which comes back here: boxed.
        Box::pin(self.perform(u, actions)).await;
    }

    /// A gratuitous ARP burst for the VIPs of every election we hold.
    fn announce(&mut self, why: &str) {
        for u in 0..self.units.len() {
            if self.units[u].node.holds_vip() {
                self.announce_unit(u, why);
            }
        }
    }

    /// A gratuitous ARP burst for election `u`'s VIPs, in the background: the
    /// burst's spacing must not delay polling.
    fn announce_unit(&mut self, u: usize, why: &str) {
        self.bursts.retain(|(_, t)| !t.is_finished());
        for i in self.unit_vips(u) {
            let vip = self.vips[i].vip;
            // Its own interface, or, for one without ARP (lo), the heartbeat
            // links, where the kernel answers ARP for it.
            let on: Vec<(u32, [u8; 6], String)> = match &self.vips[i].on {
                On::Link(l) => {
                    let l = &self.links[*l];
                    vec![(l.ifindex, l.mac, l.iface.clone())]
                }
                On::Other {
                    iface,
                    ifindex,
                    mac: Some(mac),
                } => vec![(*ifindex, *mac, iface.clone())],
                On::Other { mac: None, .. } => (self.links.iter())
                    .map(|l| (l.ifindex, l.mac, l.iface.clone()))
                    .collect(),
            };
            for (ifindex, mac, iface) in on {
                let why = why.to_string();
                let (count, spacing) =
                    (self.cfg.announce.garp_count, self.cfg.announce.garp_spacing);
                self.bursts.push((
                    u,
                    tokio::spawn(async move {
                        if let Err(e) =
                            garp::announce_ip(ifindex, mac, vip.addr, count, spacing).await
                        {
                            warn!("gratuitous ARP ({why}) for {vip} on {iface}: {e:#}");
                        }
                    }),
                ));
            }
        }
    }

    async fn release_vips(&mut self, u: usize) {
        // Before the VIPs, which a route may take as its source.
        self.move_routes(u, false).await;
        // A burst still running would keep pointing caches at us after we yielded.
        self.bursts.retain(|(b, t)| {
            if *b == u {
                t.abort();
            }
            *b != u
        });
        for i in self.unit_vips(u) {
            let vip = self.vips[i].vip;
            let (ifindex, iface) = self.vips[i].at(&self.links);
            match self.nl.del_ip(ifindex, vip.addr, vip.prefix).await {
                Ok(_) => self.vip_present[i] = false,
                Err(e) => warn!("removing {vip} from {iface}: {e:#}"),
            }
        }
    }

    /// A VIP still configured from a run that crashed stays until the first
    /// decision: adopted if we become MASTER, removed otherwise.
    async fn report_leftover_vips(&self) {
        for v in &self.vips {
            let (ifindex, iface) = v.at(&self.links);
            if let Ok(true) = self.nl.has_ip(ifindex, v.vip.addr, v.vip.prefix).await {
                info!(
                    "{} found on {iface} (left by an earlier run): kept until the election decides",
                    v.vip
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
            .map(|t| crate::status::PingRow {
                target: t.addr.to_string(),
                last_reply_ms_ago: t.ago.map(|d| d.as_millis() as u64),
                reachable: t.ago.is_some_and(|d| d <= self.cfg.timers.dead_after),
                rejected: t.counts.rejected,
            })
            .collect()
    }

    /// Election `u`'s checks as status rows.
    fn check_rows(&self, u: usize) -> Vec<crate::status::CheckRow> {
        (self.units[u].node.checks().into_iter())
            .filter_map(|(name, healthy, effect)| {
                let i = self.cfg.checks.iter().position(|c| c.name == name)?;
                let weight = (self.units[u].groups.iter())
                    .find_map(|&g| {
                        let t = &self.cfg.groups[g].track;
                        t.iter().find(|(n, _)| *n == name).map(|(_, w)| *w)
                    })
                    .unwrap_or(self.cfg.checks[i].weight);
                Some(crate::status::CheckRow {
                    name,
                    healthy,
                    last: self.check_last[i].clone(),
                    weight,
                    effect,
                })
            })
            .collect()
    }

    fn write_status(&self) {
        let vip_on = |v: &PlacedVip| crate::status::VipOn {
            vip: v.vip,
            iface: v.at(&self.links).1,
        };
        let mut groups = Vec::new();
        let now = monotonic();
        for (u, unit) in self.units.iter().enumerate() {
            for &g in &unit.groups {
                let spec = &self.cfg.groups[g];
                groups.push(crate::status::GroupRow {
                    name: spec.name.clone(),
                    id: spec.slot + 1,
                    sync: spec.sync.clone(),
                    state: unit.node.state(),
                    priority: unit.node.priority(),
                    holds_vip: unit.node.claims_vip(),
                    holder: unit.node.view().0,
                    vips: self
                        .vips
                        .iter()
                        .filter(|v| v.group == g)
                        .map(vip_on)
                        .collect(),
                    vips_missing: self.missing_vips(u),
                    reason: unit.node.reason().to_string(),
                    checks: self.check_rows(u),
                    standby: unit.node.standby(),
                    witness_key: self.witness.as_ref().map(|_| {
                        let k = unit.node.witness_key();
                        match (k.owned_until.is_some_and(|t| t > now), k.held_by) {
                            (true, _) => "ours".to_string(),
                            (false, Some(n)) => format!("node {n}"),
                            (false, None) => "none".to_string(),
                        }
                    }),
                    witness_waiting_ms: (unit.node.key_wait())
                        .map(|t| now.saturating_sub(t).as_millis() as u64),
                });
            }
        }
        let first = &self.units[0].node;
        // Every check once, with its effect in the first election tracking it.
        let mut checks: Vec<crate::status::CheckRow> = Vec::new();
        for u in 0..self.units.len() {
            for c in self.check_rows(u) {
                if !checks.iter().any(|x| x.name == c.name) {
                    checks.push(c);
                }
            }
        }
        let s = StatusFile {
            pid: std::process::id(),
            node_id: self.cfg.membership.node_id,
            priority: first.priority(),
            session: format!("{:016x}", self.session),
            state: if self.holds_vip() {
                NodeState::Master
            } else {
                first.state()
            },
            since_unix_ms: self.since_unix_ms,
            ifaces: self.links.iter().map(|l| l.iface.clone()).collect(),
            origins: self.links.iter().map(|l| l.plane.origin()).collect(),
            pin_root: self.cfg.paths.pin_root.clone(),
            vips: self.vips.iter().map(vip_on).collect(),
            dead_after_ms: self.cfg.timers.dead_after.as_millis() as u64,
            ping: self.ping_rows(),
            updated_unix_ms: unix_ms(),
            pinned: self.links.iter().all(|l| l.plane.is_pinned()),
            death_notice_armed: self.links.iter().all(|l| l.plane.death_notice_armed()),
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
            silence_watch: if self.beat_watches {
                "sender"
            } else {
                "controller"
            }
            .into(),
            id_collision: first.collision(),
            holds_vip: self.units.iter().any(|u| u.node.claims_vip()),
            vips_missing: (0..self.units.len())
                .flat_map(|u| self.missing_vips(u))
                .collect(),
            vip_readds: self.units.iter().map(|u| u.node.readds()).sum(),
            reason: first.reason().to_string(),
            seen: first.seen().clone(),
            reload: self.reloads.clone(),
            checks,
            groups,
            witness: self.witness.as_ref().map(|w| {
                let snap = w.snapshot.borrow();
                let spec = w.spec();
                crate::status::WitnessRow {
                    endpoints: spec.endpoints.clone(),
                    reachable: snap.reachable,
                    ttl_ms: spec.ttl.as_millis() as u64,
                    lease_remaining_ms: (snap.lease_until)
                        .map_or(0, |t| t.saturating_sub(now).as_millis() as u64),
                    down: spec.down.name().to_string(),
                    error: snap.error.clone(),
                }
            }),
        };
        if let Err(e) = self.state_dir.write_file(
            crate::status::STATUS_FILE,
            &serde_json::to_vec_pretty(&s).unwrap_or_default(),
        ) {
            warn!("writing status: {e:#}");
        }
    }

    /// `hb-user standby [GROUP]` or `resume [GROUP]`: the elections named (a
    /// group's, also through a sync group's name; every one without a name)
    /// go to or out of standby at once, and the state dir remembers it.
    async fn control_request(&mut self, req: Result<crate::control::Request, String>) -> String {
        use crate::control::Request;
        let (on, group) = match req {
            Err(m) => return format!("error {m}"),
            Ok(Request::Standby(g)) => (true, g),
            Ok(Request::Resume(g)) => (false, g),
        };
        let units: Vec<usize> = match &group {
            None => (0..self.units.len()).collect(),
            Some(name) => (0..self.units.len())
                .filter(|&u| {
                    self.units[u].name == *name
                        || (self.units[u].groups.iter()).any(|&g| self.cfg.groups[g].name == *name)
                })
                .collect(),
        };
        if units.is_empty() {
            let names: Vec<&str> = self.cfg.groups.iter().map(|g| g.name.as_str()).collect();
            return format!(
                "error no group {} (groups: {})",
                group.unwrap_or_default(),
                names.join(", ")
            );
        }
        for &u in &units {
            let actions = self.units[u].node.handle(Input::Standby { on });
            self.perform(u, actions).await;
        }
        self.poll().await;
        let saved = self.save_standby();
        let names: Vec<String> = units.iter().map(|&u| self.units[u].name.clone()).collect();
        let what = if on { "standby" } else { "resumed" };
        match saved {
            Ok(()) => format!("ok {what}: {}", names.join(", ")),
            Err(e) => format!(
                "ok {what}: {} (not remembered across a restart: {e:#})",
                names.join(", ")
            ),
        }
    }

    /// Writes the names of the groups in standby to the state dir.
    fn save_standby(&self) -> Result<()> {
        let names: Vec<&str> = (self.units.iter())
            .filter(|u| u.node.standby())
            .flat_map(|u| u.groups.iter().map(|&g| self.cfg.groups[g].name.as_str()))
            .collect();
        let mut text = names.join("\n");
        text.push('\n');
        // An operator's word: a power cut right after it must not undo it.
        self.state_dir
            .write_file_synced(crate::control::STANDBY_FILE, text.as_bytes())
    }

    /// Groups put in standby before a restart stay there.
    async fn restore_standby(&mut self) {
        let path = self.state_dir.path().join(crate::control::STANDBY_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        for name in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let unit = (0..self.units.len())
                .find(|&u| (self.units[u].groups.iter()).any(|&g| self.cfg.groups[g].name == name));
            match unit {
                Some(u) => {
                    info!("group {name} stays in standby (hb-user resume ends it)");
                    let actions = self.units[u].node.handle(Input::Standby { on: true });
                    self.perform(u, actions).await;
                }
                None => warn!("{}: no group {name} any more", path.display()),
            }
        }
    }

    /// Interface checks' first verdicts, from the kernel's view now (the link
    /// events are subscribed already, so no change is missed).
    async fn start_iface_checks(&mut self) {
        for (index, spec) in self.cfg.checks.iter().enumerate() {
            let crate::checks::CheckKind::Iface(name) = &spec.kind else {
                continue;
            };
            let info = self.nl.link(name).await.ok().flatten();
            let (ifindex, up) = info.map_or((0, false), |i| (i.ifindex, i.up));
            self.iface_checks.push((index, ifindex, up));
        }
        for k in 0..self.iface_checks.len() {
            self.iface_verdict(k).await;
        }
    }

    /// A link event for a tracked interface (by name; by index once deleted).
    async fn iface_checks(&mut self, ev: &LinkEvent) {
        for k in 0..self.iface_checks.len() {
            let (index, ifindex, up) = self.iface_checks[k];
            let crate::checks::CheckKind::Iface(name) = &self.cfg.checks[index].kind else {
                continue;
            };
            let now = match ev {
                LinkEvent::Changed(i) if i.name == *name => Some((i.ifindex, i.up)),
                // Renamed away, or deleted.
                LinkEvent::Changed(i) if i.ifindex == ifindex => Some((ifindex, false)),
                LinkEvent::Removed { ifindex: gone } if *gone == ifindex => Some((0, false)),
                _ => None,
            };
            if let Some((ifindex, new)) = now {
                self.iface_checks[k].1 = ifindex;
                if new != up {
                    self.iface_checks[k].2 = new;
                    self.iface_verdict(k).await;
                    self.poll().await;
                }
            }
        }
    }

    async fn iface_verdict(&mut self, k: usize) {
        let (index, ifindex, up) = self.iface_checks[k];
        self.check_last[index] = match (ifindex, up) {
            (0, _) => "no such interface".into(),
            (_, true) => "up".into(),
            (_, false) => "down".into(),
        };
        let name = self.cfg.checks[index].name.clone();
        self.check_metric(index, up);
        for u in 0..self.units.len() {
            let actions = self.units[u].node.handle(Input::Check {
                name: name.clone(),
                healthy: up,
                weight: None,
            });
            self.perform(u, actions).await;
        }
    }

    /// SIGHUP: the file read again under the flags, validated as a start would,
    /// and applied when every change is one a running node can take
    /// (reload.rs); otherwise nothing changes. The outcome goes to the log and
    /// the status, where `hb-user reload` finds it.
    async fn reload(&mut self) {
        self.systemd.reloading();
        let (path, _) = RunConfig::file(&self.args);
        let name = path.display().to_string();
        let outcome = RunConfig::load(&self.args).and_then(|new| {
            let changed = crate::reload::changes(&self.cfg, &new, &name)?;
            Ok((new, changed))
        });
        // VIPs and peers are placed and checked against the host as a start
        // does, before anything changes.
        let outcome = match outcome {
            Ok((new, changed)) if !changed.is_empty() => match plan(&new, &self.nl).await {
                Ok(p) => Ok((new, changed, Some(p))),
                Err(RunError::Config(e)) => Err(e),
                Err(RunError::Other(e)) => Err(ConfigError::new("vip", format!("{e:#}"))),
                Err(RunError::Kernel(_)) => Err(ConfigError::new("vip", "the kernel")),
            },
            Ok((new, changed)) => Ok((new, changed, None)),
            Err(e) => Err(e),
        };
        let count = self.reloads.as_ref().map_or(0, |r| r.count) + 1;
        let (outcome, detail) = match outcome {
            Err(e) => {
                error!("reload of {name} refused, the running settings are kept: {e}");
                ("refused", e.to_string())
            }
            Ok((new, changed, Some(plan))) => {
                let detail = changed.join(", ");
                info!("reload of {name}: applying {detail}");
                self.apply(new, plan).await;
                ("applied", detail)
            }
            Ok(_) => {
                info!("reload of {name}: nothing changed");
                ("unchanged", String::new())
            }
        };
        self.reloads = Some(crate::status::ReloadRow {
            count,
            unix_ms: unix_ms(),
            outcome: outcome.into(),
            detail,
        });
        self.write_status();
        self.systemd.reloaded();
    }

    /// Applies a reload's settings (`plan`: where its VIPs go, which link
    /// reaches each peer). An election whose groups (names, ids, sync group)
    /// stay goes on as it is, with its new settings; one whose groups went
    /// releases them first and says STOP; a new one starts in INIT, as at a
    /// start but without waiting init_dead for peers already heard.
    async fn apply(&mut self, new: RunConfig, plan: Plan) {
        let members = groups::units(&new.groups);
        let keys: Vec<_> = members.iter().map(|m| unit_key(&new, m)).collect();
        let old_keys: Vec<_> = (self.units.iter())
            .map(|u| unit_key(&self.cfg, &u.groups))
            .collect();
        let gone: Vec<usize> = (0..self.units.len())
            .filter(|&u| !keys.contains(&old_keys[u]))
            .collect();
        // Under the settings that made them: the elections that go.
        for &u in &gone {
            let unit = &self.units[u];
            info!(
                "reload: {} removed ({}): releasing it",
                unit.name,
                unit.node.state().name()
            );
            self.release_vips(u).await;
            if let Some(w) = &self.witness {
                w.release(&self.units[u].name);
            }
            let from = self.units[u].node.state().name().to_string();
            self.notify(u, from, hooks::STOP.into(), "removed by a reload".into());
            if let Some(b) = &self.beat {
                for &g in &self.units[u].groups {
                    b.clear_group(self.cfg.groups[g].slot);
                }
            }
        }
        type Hooks = Vec<(Option<String>, NotifyArgs, Vec<(&'static str, String)>)>;
        fn hooks(c: &RunConfig) -> (Hooks, Duration) {
            let g =
                (c.groups.iter()).map(|g| (g.notify.clone(), g.notify_args, g.on_state.clone()));
            let s = (c.syncs.iter()).map(|s| (s.notify.clone(), s.notify_args, s.on_state.clone()));
            (g.chain(s).collect(), c.hooks.notify_timeout)
        }
        if hooks(&new) != hooks(&self.cfg) {
            // The old ones finish what they were given, in order, in the background.
            let drain = self.cfg.hooks.notify_timeout + Duration::from_secs(1);
            for old in self.notifiers.drain(..).flatten() {
                tokio::spawn(async move { old.drain(drain).await });
            }
            self.notifiers = notifiers(&new);
        }
        // Routes and VIPs that go, under the settings that made them.
        self.drop_resources(&gone, &plan.vips).await;

        let peer_ids = peer_ids(&new);
        let reach = self.reach();
        let mut old: Vec<Option<Unit>> = self.units.drain(..).map(Some).collect();
        // Old election index -> new one.
        let mut moved: Vec<Option<usize>> = vec![None; old.len()];
        for (i, m) in members.into_iter().enumerate() {
            let kept = old_keys.iter().position(|k| *k == keys[i]);
            let unit = match kept.and_then(|o| Some((o, old[o].take()?))) {
                Some((o, mut unit)) => {
                    moved[o] = Some(i);
                    unit.groups = m;
                    unit
                }
                None => {
                    let unit = new_unit(&new, &peer_ids, m, &plan.vips, &self.links, false, reach);
                    info!("reload: {} added: INIT", unit.name);
                    unit
                }
            };
            self.units.push(unit);
        }
        for waiting in self.fencing.values_mut() {
            *waiting = waiting.iter().filter_map(|&u| moved[u]).collect();
        }
        self.bursts.retain(|(u, _)| moved[*u].is_some());
        for (u, _) in &mut self.bursts {
            *u = moved[*u].expect("kept above");
        }
        let checks_changed = self.cfg.checks != new.checks;
        self.cfg = new;
        self.set_peers(peer_ids, &plan.links).await;
        if checks_changed {
            // The old tasks end here (a script running is killed); each
            // election keeps its checks' last verdicts until the new ones come.
            self.check_rx = None;
            self.check_rx =
                (!self.cfg.checks.is_empty()).then(|| crate::checks::spawn(&self.cfg.checks));
            self.check_last = vec![String::new(); self.cfg.checks.len()];
            self.iface_checks.clear();
        }
        self.set_resources(plan.vips).await;
        if checks_changed {
            self.start_iface_checks().await;
        }
        for u in 0..self.units.len() {
            let live = crate::reload::Live::of(&self.cfg, &self.units[u].groups);
            let actions = self.units[u].node.handle(Input::Settings {
                priority: live.priority,
                preempt: live.preempt,
                fencing: live.fencing,
            });
            self.perform(u, actions).await;
            self.publish(u);
        }
        // A removed election may have been the last to want the lease.
        if !gone.is_empty() && !self.units.iter().any(|u| u.advert.lease) {
            self.set_lease(Duration::ZERO);
        }
        if !gone.is_empty() || moved.iter().flatten().count() != self.units.len() {
            if let Err(e) = self.save_standby() {
                warn!("reload: remembering the groups in standby: {e:#}");
            }
        }
        // Elect with the new settings now.
        self.poll().await;
    }

    /// A reload's peers (`links`: per link, the peers heartbeats reach there):
    /// every data plane's allow-list and `seen` slots, the sender's targets
    /// on each link, and each election's list.
    async fn set_peers(&mut self, peer_ids: Vec<u32>, links: &[PlannedLink]) {
        let node_id = self.cfg.membership.node_id;
        let port = self.cfg.membership.port;
        for (l, (_, _, _, targets)) in self.links.iter_mut().zip(links) {
            if let Err(e) = l.plane.set_peers(node_id, &peer_ids) {
                warn!("reload: the peers of the data plane on {}: {e:#}", l.iface);
            }
            let dests: Vec<Dest> = (targets.iter())
                .map(|&(peer, addr)| Dest {
                    peer,
                    slot: peer_ids.iter().position(|&p| p == peer).unwrap_or(0) as u32,
                    addr,
                })
                .collect();
            if let Err(e) = l.targets.set_dests(&dests, port) {
                warn!("reload: heartbeat targets on {}: {e:#}", l.iface);
            }
        }
        self.bodies.retain(|(_, p), _| peer_ids.contains(p));
        self.peer_ids = peer_ids.clone();
        for u in 0..self.units.len() {
            let actions = self.units[u].node.handle(Input::Peers {
                peers: peer_ids.clone(),
            });
            self.perform(u, actions).await;
        }
    }

    /// Before a reload's new VIPs: the elections in `gone` release
    /// everything; the routes and rules of every other held election go
    /// (they come back with the new settings), and so do the VIPs not in
    /// `new`.
    async fn drop_resources(&mut self, gone: &[usize], new: &[PlacedVip]) {
        for u in 0..self.units.len() {
            if !gone.contains(&u) && self.units[u].node.holds_vip() {
                self.move_routes(u, false).await;
            }
        }
        for i in 0..self.vips.len() {
            let v = self.vips[i].clone();
            let at = v.at(&self.links);
            let kept = new
                .iter()
                .any(|n| n.vip == v.vip && n.at(&self.links) == at);
            if kept || !self.vip_present[i] {
                continue;
            }
            match self.nl.del_ip(at.0, v.vip.addr, v.vip.prefix).await {
                Ok(_) => info!("reload: {} removed from {}", v.vip, at.1),
                Err(e) => warn!("reload: removing {} from {}: {e:#}", v.vip, at.1),
            }
        }
    }

    /// A reload's VIPs (placed by `plan`), routes, rules and tracks: the data
    /// planes fence the new set, each election learns its VIPs and checks,
    /// and the ones held add what is new and announce it.
    async fn set_resources(&mut self, vips: Vec<PlacedVip>) {
        self.vips = vips;
        self.vip_present = vec![false; self.vips.len()];
        for i in 0..self.links.len() {
            let (mut v4, mut v6) = (Vec::new(), Vec::new());
            for v in self.vips.iter().filter(|v| v.fenced_on(i)) {
                match v.vip.addr {
                    IpAddr::V4(a) => v4.push(a),
                    IpAddr::V6(a) => v6.push(a),
                }
            }
            let l = &mut self.links[i];
            if let Err(e) = l.plane.set_vips(&v4, &v6) {
                warn!("reload: the VIPs of the data plane on {}: {e:#}", l.iface);
            }
        }
        self.read_present().await;
        for u in 0..self.units.len() {
            let checks = tracked(&self.cfg, &self.units[u].groups);
            let input = Input::Resources {
                has_vips: !self.unit_vips(u).is_empty(),
                vip_list: self.vip_list(u),
                checks,
            };
            let actions = self.units[u].node.handle(input);
            self.perform(u, actions).await;
            if self.units[u].node.holds_vip() {
                if let Err(e) = self.take_vips(u).await {
                    let actions = (self.units[u].node).handle(Input::TakeFailed {
                        now: monotonic(),
                        error: e,
                    });
                    self.perform(u, actions).await;
                }
                self.announce_unit(u, "reload");
            } else {
                self.vips_changed(u).await;
            }
        }
    }

    /// Graceful stop: release the VIPs first, then tell peers we left, so a backup
    /// takes over at once instead of waiting for dead-after.
    async fn shutdown(&mut self) {
        self.systemd.stopping();
        for u in 0..self.units.len() {
            if self.units[u].node.holds_vip() {
                warn!("stopping: releasing {}", self.vip_list(u));
            }
            self.release_vips(u).await;
        }
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
        // After the leaves: a peer that hears ours overwrites our keys at once
        // (a leave hands them over); the revoke just deletes them.
        if let Some(w) = &self.witness {
            w.leave(Duration::from_secs(1)).await;
        }
        let _ = std::fs::remove_file(self.state_dir.path().join(crate::status::STATUS_FILE));
        self.control = None;
        let _ = std::fs::remove_file(self.state_dir.path().join(crate::control::SOCKET));
        // The last transitions' hooks still run (bounded), in order.
        // notify_stop commands, then every queue runs dry (bounded), in order.
        for u in 0..self.units.len() {
            let from = self.units[u].node.state().name().to_string();
            self.notify(u, from, hooks::STOP.into(), "graceful stop".into());
        }
        for n in self.notifiers.drain(..).flatten() {
            n.drain(self.cfg.hooks.notify_timeout + Duration::from_secs(1))
                .await;
        }
        info!("stopped: VIPs released, leave sent, XDP detached");
        // Dropping the links detaches XDP and removes the pins.
    }
}

/// What a signal asks of the controller.
enum Sig {
    Stop(&'static str),
    Reload,
    Ignored(&'static str),
}

/// Every signal whose default would end the process, handled: TERM, INT and
/// QUIT stop gracefully, HUP reloads, the rest are logged and ignored.
struct Signals {
    /// One small task per signal forwards it here, so the loop's wait costs
    /// no allocation per wake.
    rx: mpsc::UnboundedReceiver<&'static str>,
}

impl Signals {
    fn install() -> Result<Self> {
        use libc::{
            SIGALRM, SIGHUP, SIGINT, SIGIO, SIGPROF, SIGPWR, SIGQUIT, SIGSTKFLT, SIGTERM, SIGUSR1,
            SIGUSR2, SIGVTALRM,
        };
        let kinds = [
            (SIGTERM, "SIGTERM"),
            (SIGINT, "SIGINT"),
            (SIGQUIT, "SIGQUIT"),
            (SIGHUP, "SIGHUP"),
            (SIGUSR1, "SIGUSR1"),
            (SIGUSR2, "SIGUSR2"),
            (SIGALRM, "SIGALRM"),
            (SIGVTALRM, "SIGVTALRM"),
            (SIGPROF, "SIGPROF"),
            (SIGIO, "SIGIO"),
            (SIGPWR, "SIGPWR"),
            (SIGSTKFLT, "SIGSTKFLT"),
        ];
        let (tx, rx) = mpsc::unbounded_channel();
        for (n, name) in kinds {
            // Installed here, before the task first runs: none is missed.
            let mut s =
                signal(SignalKind::from_raw(n)).with_context(|| format!("handling {name}"))?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(name).is_err() {
                        return;
                    }
                }
            });
        }
        Ok(Self { rx })
    }

    /// The next signal to arrive.
    async fn next(&mut self) -> Sig {
        match self.rx.recv().await {
            Some(name @ ("SIGTERM" | "SIGINT" | "SIGQUIT")) => Sig::Stop(name),
            Some("SIGHUP") => Sig::Reload,
            Some(name) => Sig::Ignored(name),
            // The tasks never end while the runtime runs.
            None => Sig::Stop("end of signals"),
        }
    }
}

/// "10.0.0.100/24 on eth0, ..." for log lines and hooks.
fn vip_list(vips: &[PlacedVip], links: &[Link]) -> String {
    vips.iter()
        .map(|v| format!("{} on {}", v.vip, v.at(links).1))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One link's record of a peer, for the core. The head was checked by XDP;
/// the body (priority, the holder it sees) is read only when its MAC holds,
/// else the last valid one (`last`) stays in force.
fn sample(p: &PeerState, key: &Key, last: &mut Body) -> Sample {
    let at = |ns: u64| (ns != 0).then(|| Duration::from_nanos(ns));
    let mut s = Sample {
        last_seen: at(p.last_seen_ns),
        session: p.session,
        adopted: at(p.adopted_ns),
        seq: p.seq,
        gone_session: (p.gone_ns != 0).then_some(p.gone_session),
        old_version: at(p.old_version_ns),
        ..Sample::default()
    };
    let Ok(head) = Head::parse_unauthenticated(&p.message) else {
        return s;
    };
    if wire2::body_mac_ok(&p.message, key) {
        *last = Body::parse(&p.message);
    }
    s.left = head.msg_type == MsgType::Leave;
    s.state = NodeState::from_u8(head.state).unwrap_or(NodeState::Init);
    s.holds_vip = head.flags & FLAG_HOLDS != 0;
    s.reaches_ping = head.flags & FLAG_REACHES_PING != 0;
    s
}

/// A link's record of a peer ([`sample`]) with the peer's standing in one
/// group slot, from its last valid body: its priority, state and claim there,
/// and the holder it sees.
fn in_slot(mut s: Sample, body: &Body, slot: usize) -> Sample {
    let g = body.groups[slot];
    s.priority = g.priority;
    s.holder = (body.holders[slot] != 0).then_some(body.holders[slot]);
    // Before any valid body, the head's word stands.
    if *body != Body::default() {
        s.state = NodeState::from_u8(g.state).unwrap_or(NodeState::Init);
        s.holds_vip = g.flags & GROUP_HOLDS != 0;
        s.waiting = g.flags & GROUP_WAITING != 0;
    }
    s
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}
