//! Loads hb's XDP object, writes its configuration maps, attaches it to one
//! interface and pins the maps, the program and the XDP link under
//! `<pin root>/<iface>/` (default `/sys/fs/bpf/hb/<iface>/`): `bpftool map dump
//! pinned` shows the maps, and the program stays attached, still recording
//! heartbeats and enforcing the holder lease, when `hb-user` dies. A restarted
//! `hb-user` adopts what is pinned, or swaps a different program into the same
//! link atomically; a graceful stop removes the pins, which detaches it. A
//! failed start removes only what it pinned itself.
//!
//! The same object holds the exit watch (`hb_exit`, on the `sched_process_exit`
//! raw tracepoint), attached and pinned beside the XDP link so that it outlives
//! the controller too: once the start went through, the controller registers its
//! pid in `owner`, and should it die without a graceful stop the data plane
//! answers peers' heartbeats with a death notice.

use crate::{bpffs, kernel, mapped::MapCell, verifier};
use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf},
    programs::{
        links::{FdLink, PinnedLink},
        raw_trace_point::RawTracePointLinkId,
        xdp::{XdpLink, XdpLinkId},
        ProgramError, ProgramInfo, RawTracePoint, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use hb_common::maps::{
    names, vip_filter_bit, Config, Key, Lease, Owner, PeerState, Seen, Sent, Stats, VipWatch,
};
use std::{
    collections::{BTreeMap, HashSet},
    fs::File,
    net::Ipv4Addr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};
use tracing::{info, warn};

/// The compiled XDP object, embedded at build time (see build.rs).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("HB_BPF_OBJECT"));

/// Default root of the pinned maps.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/hb";

/// What the XDP program needs to know, written into its maps. `Default` is
/// "not configured": port 0 switches heartbeat handling off.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub cluster_id: u32,
    pub port: u16,
    /// Let heartbeats go on to the stack after handling them (debugging).
    pub pass_heartbeats: bool,
    pub key: Key,
    /// This node's id: messages are addressed to it.
    pub node_id: u32,
    /// Node ids of the configured peers: the allow-list. A peer's index here
    /// is its `seen` slot.
    pub peers: Vec<u32>,
    /// The MAC of the interface this program is attached to: ARP claiming a VIP
    /// from any other MAC counts as a conflict. Differs per link.
    pub mac: [u8; 6],
    /// IPv4 VIPs watched for ARP conflicts on this interface.
    pub vips_v4: Vec<Ipv4Addr>,
    /// A heartbeat after this long a silence is news for the controller (an
    /// `EVENTS` record), as is any change in what a peer says.
    pub quiet: Duration,
}

/// Pin file names besides the maps'.
const PROG_PIN: &str = "prog";
const LINK_PIN: &str = "link";
const EXIT_PROG_PIN: &str = "exit_prog";
const EXIT_LINK_PIN: &str = "exit_link";

/// How the data plane on an interface came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Loaded from the embedded object and attached now.
    Fresh,
    /// The same program and maps a previous run pinned, still attached: taken over.
    Adopted,
    /// A previous run's different program, replaced by ours in the same XDP link
    /// (no detach gap); peer entries carried over.
    Replaced,
}

/// The XDP program with its maps: loaded by this process, or adopted from pins.
pub struct DataPlane {
    /// The object this process loaded; None when adopted from pins.
    ebpf: Option<Ebpf>,
    /// Maps by object name (taken out of `ebpf`, or opened from pins).
    maps: BTreeMap<&'static str, Map>,
    /// The pin directory, and an exclusive lock on it: one controller per interface.
    pinned: Option<(PathBuf, File)>,
    /// The XDP link once pinned: attached for as long as its pin exists.
    link: Option<PinnedLink>,
    /// The link made by `attach` (or the swap), until `pin_objects` pins it.
    attached: Option<XdpLinkId>,
    /// The exit watch's link once pinned (or adopted): the death notice is armed.
    exit_link: Option<PinnedLink>,
    /// The exit watch's link made by `attach_exit`, until `pin_objects` pins it.
    exit_attached: Option<RawTracePointLinkId>,
    origin: Origin,
    /// The pin directory was made by this process.
    made_dir: bool,
    /// The start this data plane is part of went through: dropping it is a
    /// graceful stop (see Drop).
    started: bool,
}

fn pinned_map(dir: &Path, file: &str) -> Result<Map> {
    let path = dir.join(file);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Map::from_map_data(data)?)
}

/// The pin directory for `iface` under `root` (on a bpffs, mounted on `root`'s
/// parent when needed), locked for this process: a second controller on the same
/// interface fails here. The lock goes with the process, crash included. True
/// when the directory was made here.
fn lock_pin_dir(root: &Path, iface: &str) -> Result<(PathBuf, File, bool)> {
    let mount_point = root
        .parent()
        .ok_or_else(|| anyhow!("pin root {} has no parent", root.display()))?;
    if !bpffs::is_bpffs(root) {
        bpffs::ensure_mounted(mount_point)?;
    }
    let dir = root.join(iface);
    let made = !dir.exists();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let f = File::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } != 0
    {
        bail!(
            "another hb-user is running on {iface} ({} is locked)",
            dir.display()
        );
    }
    Ok((dir, f, made))
}

fn remove_pins(dir: &Path) -> bool {
    let mut removed = false;
    for file in names::PINNED.iter().map(|(_, f)| *f).chain([
        PROG_PIN,
        LINK_PIN,
        EXIT_PROG_PIN,
        EXIT_LINK_PIN,
    ]) {
        removed |= std::fs::remove_file(dir.join(file)).is_ok();
    }
    removed
}

impl DataPlane {
    /// Loads the object into the kernel (verifier included); nothing is attached.
    pub fn load() -> Result<Self> {
        // No kernel BTF: the object needs no CO-RE relocation, and parsing
        // /sys/kernel/btf/vmlinux would cost megabytes of heap for nothing.
        let mut ebpf = EbpfLoader::new()
            .btf(None)
            .load(OBJECT)
            .with_context(|| format!("loading the XDP object (kernel {})", kernel::release()))?;
        let prog: &mut Xdp = ebpf
            .program_mut(names::PROGRAM)
            .ok_or_else(|| anyhow!("program {} missing from the object", names::PROGRAM))?
            .try_into()?;
        prog.load()
            .map_err(|e| refused(e, "verifying the XDP program"))?;
        exit_program(&mut ebpf)?
            .load()
            .map_err(|e| refused(e, "verifying the exit watch program"))?;
        let mut maps = BTreeMap::new();
        for (name, _) in names::PINNED {
            let map = ebpf
                .take_map(name)
                .ok_or_else(|| anyhow!("map {name} missing from the object"))?;
            maps.insert(name, map);
        }
        Ok(Self {
            ebpf: Some(ebpf),
            maps,
            pinned: None,
            link: None,
            attached: None,
            exit_link: None,
            exit_attached: None,
            origin: Origin::Fresh,
            made_dir: false,
            started: false,
        })
    }

    /// hb on `iface`, pinned under `root`, from `fresh` (just loaded, so that a
    /// verifier refusal comes before anything is made): what a previous run left
    /// pinned is adopted (same program) or replaced in place (different program);
    /// otherwise `fresh` is attached with `attach`. Then configured. Until
    /// [`DataPlane::started`], dropping the result undoes only what this call
    /// pinned.
    pub fn open(
        mut fresh: Self,
        root: &Path,
        iface: &str,
        settings: &Settings,
        attach: impl FnOnce(&mut DataPlane) -> Result<()>,
    ) -> Result<(Self, Origin)> {
        let (dir, lock, made_dir) = lock_pin_dir(root, iface)?;
        let origin = match PinnedLink::from_pin(dir.join(LINK_PIN)) {
            Ok(old) => {
                let old_tag = ProgramInfo::from_pin(dir.join(PROG_PIN))
                    .map(|p| p.tag())
                    .ok();
                if old_tag == Some(fresh.program()?.info()?.tag()) {
                    let mut maps = BTreeMap::new();
                    for (name, file) in names::PINNED {
                        maps.insert(name, pinned_map(&dir, file)?);
                    }
                    // Our freshly loaded copy is dropped unused.
                    fresh = Self {
                        ebpf: None,
                        maps,
                        pinned: None,
                        link: Some(old),
                        attached: None,
                        exit_link: PinnedLink::from_pin(dir.join(EXIT_LINK_PIN)).ok(),
                        exit_attached: None,
                        origin: Origin::Adopted,
                        made_dir: false,
                        started: false,
                    };
                    fresh.report_dead_owner()?;
                    Origin::Adopted
                } else {
                    fresh.carry_peers_from(&dir);
                    let fd_link: FdLink = old.into();
                    let xdp_link =
                        XdpLink::try_from(fd_link).context("the pinned link is not an XDP link")?;
                    let id = fresh
                        .program_mut()?
                        .attach_to_link(xdp_link)
                        .context("replacing the program in the pinned link")?;
                    fresh.attached = Some(id);
                    fresh.arm_exit_watch();
                    Origin::Replaced
                }
            }
            Err(_) => {
                // Pins without a live link are a crashed run's leftovers.
                remove_pins(&dir);
                if let Err(e) = attach(&mut fresh) {
                    if made_dir {
                        let _ = std::fs::remove_dir(&dir);
                    }
                    return Err(e);
                }
                fresh.arm_exit_watch();
                Origin::Fresh
            }
        };
        fresh.origin = origin;
        fresh.made_dir = made_dir;
        // From here a failure drops `fresh`, which removes what it pinned.
        fresh.pinned = Some((dir, lock));
        if origin != Origin::Adopted {
            fresh.pin_objects()?;
        }
        fresh.configure(settings)?;
        Ok((fresh, origin))
    }

    /// The start went through: from now on dropping this data plane is a
    /// graceful stop, which removes the pins whatever their origin, and a death
    /// of this process without one is reported to peers (the death notice), as
    /// node `node_id` in `session`. Registering clears a previous run's death
    /// mark: call it before the first heartbeat leaves.
    pub fn started(&mut self, node_id: u32, session: u64) {
        self.started = true;
        if let Err(e) = self.set_owner(node_id, session, std::process::id()) {
            warn!("no death notice: registering this process with the exit watch: {e:#}");
        } else if !self.death_notice_armed() {
            warn!("no death notice: the exit watch is not attached, so peers wait dead-after if this process dies");
        }
    }

    /// Attaches the exit watch where the kernel allows it. Without it hb works
    /// as before: a dead controller is noticed by its silence, after dead-after.
    fn arm_exit_watch(&mut self) {
        if let Err(e) = self.attach_exit() {
            warn!("the exit watch cannot attach ({e:#}): peers will notice a crash of this controller after dead-after only");
        }
    }

    /// Attaches the exit watch (`sched_process_exit`); pinned with the rest.
    pub fn attach_exit(&mut self) -> Result<()> {
        let prog = exit_program(self.ebpf_mut()?)?;
        let id = prog.attach(names::EXIT_TRACEPOINT).with_context(|| {
            format!("attaching to the raw tracepoint {}", names::EXIT_TRACEPOINT)
        })?;
        self.exit_attached = Some(id);
        Ok(())
    }

    /// Whether the exit watch is attached (and, once pinned, outlives us).
    pub fn death_notice_armed(&self) -> bool {
        self.exit_link.is_some() || self.exit_attached.is_some()
    }

    /// Registers process `pid` (in our pid namespace) as this data plane's
    /// controller, node `node_id` in `session`, alive: a death mark is cleared.
    pub fn set_owner(&mut self, node_id: u32, session: u64, pid: u32) -> Result<()> {
        let ns = std::fs::metadata("/proc/self/ns/pid").context("reading /proc/self/ns/pid")?;
        // The helper compares the kernel's dev_t, MKDEV(major, minor), not the
        // encoding stat(2) returns.
        let dev = ns.dev();
        self.write_owner(Owner {
            pid,
            node_id,
            session,
            pidns_dev: (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev)),
            pidns_ino: ns.ino(),
            dead_ns: 0,
        })
    }

    /// Writes the owner entry as given (`Owner::default()` unregisters).
    pub fn write_owner(&mut self, owner: Owner) -> Result<()> {
        Array::<_, Owner>::try_from(self.map_mut(names::OWNER)?)?.set(0, owner, 0)?;
        Ok(())
    }

    /// The registered controller and its death mark.
    pub fn owner(&self) -> Result<Owner> {
        Ok(Array::<_, Owner>::try_from(self.map(names::OWNER)?)?.get(&0, 0)?)
    }

    /// Says so when an adopted data plane saw its controller die. Its lease
    /// needs nothing here: XDP withdrew it when a peer took over after the
    /// notice, and otherwise a quick restart keeps it, as after any crash.
    fn report_dead_owner(&self) -> Result<()> {
        let o = self.owner()?;
        if o.dead_ns == 0 {
            return Ok(());
        }
        let ago = crate::clock::monotonic().saturating_sub(Duration::from_nanos(o.dead_ns));
        info!(
            "the previous controller (pid {}, session {:016x}) died {} ms ago; its data plane has been answering peers' heartbeats with death notices since",
            o.pid,
            o.session,
            ago.as_millis()
        );
        Ok(())
    }

    /// Copies peer entries (anti-replay state, last seen) from a previous run's
    /// pinned peers map, when its layout is readable as ours.
    fn carry_peers_from(&mut self, dir: &Path) {
        let Ok(old) = pinned_map(dir, "peers") else {
            return;
        };
        let Ok(old) = HashMap::<_, u32, PeerState>::try_from(&old) else {
            return;
        };
        let Ok(map) = self.map_mut(names::PEERS) else {
            return;
        };
        let Ok(mut peers) = HashMap::<_, u32, PeerState>::try_from(map) else {
            return;
        };
        for (id, p) in old.iter().flatten() {
            let _ = peers.insert(id, p, 0);
        }
    }

    /// Pins maps, program and (when attached) the link into the locked directory,
    /// replacing what is there.
    fn pin_objects(&mut self) -> Result<()> {
        let dir = self
            .pinned
            .as_ref()
            .map(|(d, _)| d.clone())
            .ok_or_else(|| anyhow!("no pin directory"))?;
        for (name, file) in names::PINNED {
            let path = dir.join(file);
            let _ = std::fs::remove_file(&path);
            self.map(name)?
                .pin(&path)
                .with_context(|| format!("pinning {}", path.display()))?;
        }
        let prog_path = dir.join(PROG_PIN);
        let _ = std::fs::remove_file(&prog_path);
        self.program_mut()?
            .pin(&prog_path)
            .with_context(|| format!("pinning {}", prog_path.display()))?;
        if let Some(id) = self.exit_attached.take() {
            let exit_prog = dir.join(EXIT_PROG_PIN);
            let exit_link = dir.join(EXIT_LINK_PIN);
            let _ = std::fs::remove_file(&exit_prog);
            let prog = exit_program(self.ebpf_mut()?)?;
            prog.pin(&exit_prog)
                .with_context(|| format!("pinning {}", exit_prog.display()))?;
            let fd_link: FdLink = prog.take_link(id)?.into();
            // Replacing a previous run's pin detaches its watch (it wrote its own maps).
            let _ = std::fs::remove_file(&exit_link);
            self.exit_link = Some(
                fd_link
                    .pin(&exit_link)
                    .with_context(|| format!("pinning {}", exit_link.display()))?,
            );
        }
        // The link: taken from the program, so that only its pin keeps it attached.
        let link_path = dir.join(LINK_PIN);
        if let Some(id) = self.attached.take() {
            {
                let link = self.program_mut()?.take_link(id)?;
                let fd_link = FdLink::try_from(link).context(
                    "XDP attached through netlink (old kernel): the link cannot be pinned",
                )?;
                let _ = std::fs::remove_file(&link_path);
                self.link = Some(
                    fd_link
                        .pin(&link_path)
                        .with_context(|| format!("pinning {}", link_path.display()))?,
                );
            }
        }
        Ok(())
    }

    /// Attaches to `iface` in `mode`.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<()> {
        let id = self
            .program_mut()?
            .attach(iface, mode)
            .with_context(|| format!("attaching XDP to {iface} ({mode:?})"))?;
        self.attached = Some(id);
        if mode == XdpMode::Driver && driver(iface).as_deref() == Some("veth") {
            warn!("{iface} is a veth in native XDP mode: death notices (XDP_TX) reach the other end only if an XDP program is attached there; run with --xdp-mode generic on veth");
        }
        Ok(())
    }

    /// Pins maps, program and link under `root/<iface>/` (locking it), for a data
    /// plane attached with [`DataPlane::attach`].
    pub fn pin(&mut self, root: &Path, iface: &str) -> Result<PathBuf> {
        let (dir, lock, _) = lock_pin_dir(root, iface)?;
        remove_pins(&dir);
        self.started = true;
        self.pinned = Some((dir.clone(), lock));
        self.pin_objects()?;
        Ok(dir)
    }

    /// Removes what a crashed run left pinned for `iface` under `root` (which
    /// detaches its program). Fails while a controller runs there. True when
    /// something was removed.
    pub fn cleanup(root: &Path, iface: &str) -> Result<bool> {
        if !root.join(iface).exists() {
            return Ok(false);
        }
        let (dir, _lock, _) = lock_pin_dir(root, iface)?;
        let removed = remove_pins(&dir);
        let _ = std::fs::remove_dir(&dir);
        Ok(removed)
    }

    /// Whether the program is pinned with its link (it outlives this process).
    pub fn is_pinned(&self) -> bool {
        self.link.is_some()
    }

    /// Sets the holder lease: this node may answer for its VIPs until `until`
    /// (CLOCK_MONOTONIC); `Duration::ZERO` withdraws it at once.
    pub fn set_lease(&mut self, until: Duration) -> Result<()> {
        let lease = Lease {
            until_ns: until.as_nanos() as u64,
        };
        Array::<_, Lease>::try_from(self.map_mut(names::LEASE)?)?.set(0, lease, 0)?;
        Ok(())
    }

    /// A second handle on the lease map, for the sender thread, which renews
    /// the lease with every heartbeat that claims the VIPs.
    pub fn lease_map(&self) -> Result<MapCell<Lease>> {
        self.array_handle(names::LEASE).map(MapCell::new)
    }

    /// A second handle on the array map `name`, for another thread.
    fn array_handle<V: aya::Pod>(&self, name: &str) -> Result<Array<MapData, V>> {
        let Map::Array(data) = self.map(name)? else {
            bail!("map {name} is not an array");
        };
        let fd = std::os::fd::AsFd::as_fd(data.fd()).try_clone_to_owned()?;
        Ok(Array::try_from(Map::Array(MapData::from_fd(fd)?))?)
    }

    /// A second handle on the map of the last heartbeat sent, for the sender
    /// thread, which writes it before every send.
    pub fn sent_map(&self) -> Result<MapCell<Sent>> {
        self.array_handle(names::SENT).map(MapCell::new)
    }

    /// The `seen` array mapped into this process, for the sender thread's
    /// silence watch; an error when the kernel cannot map it (the controller
    /// then watches silence itself).
    pub fn seen_map(&self) -> Result<crate::mapped::Mapping<Seen>> {
        let map = self.array_handle::<Seen>(names::SEEN)?;
        crate::mapped::Mapping::new(&map, hb_common::maps::SEEN_SLOTS as usize)
    }

    /// A handle on the event ring buffer, for the controller to wait on.
    pub fn events(&self) -> Result<RingBuf<MapData>> {
        let Map::RingBuf(data) = self.map(names::EVENTS)? else {
            bail!("map {} is not a ring buffer", names::EVENTS);
        };
        let fd = std::os::fd::AsFd::as_fd(data.fd()).try_clone_to_owned()?;
        Ok(RingBuf::try_from(Map::RingBuf(MapData::from_fd(fd)?))?)
    }

    /// The lease's expiry (CLOCK_MONOTONIC), zero when none.
    pub fn lease(&self) -> Result<Duration> {
        let l = Array::<_, Lease>::try_from(self.map(names::LEASE)?)?.get(&0, 0)?;
        Ok(Duration::from_nanos(l.until_ns))
    }

    /// Writes config, key, the peer allow-list and the VIP watch list. Existing
    /// peer and VIP entries are kept, so that anti-replay state and conflict
    /// counts survive a reconfiguration; VIPs no longer configured are removed.
    pub fn configure(&mut self, s: &Settings) -> Result<()> {
        let config = Config {
            cluster_id: s.cluster_id,
            port: s.port,
            flags: if s.pass_heartbeats {
                hb_common::maps::CONFIG_PASS_HEARTBEATS
            } else {
                0
            },
            mac: s.mac,
            _pad: [0; 2],
            vip_filter: s
                .vips_v4
                .iter()
                .fold(0, |f, ip| f | vip_filter_bit(ip.octets())),
            quiet_ns: s.quiet.as_nanos() as u64,
            node_id: s.node_id,
            _pad2: 0,
        };
        // Key and peers first: a configured port switches the program on.
        Array::<_, Key>::try_from(self.map_mut(names::KEY)?)?.set(0, s.key, 0)?;
        let mut peers = HashMap::<_, u32, PeerState>::try_from(self.map_mut(names::PEERS)?)?;
        // Each peer's slot is its index; our own entry records id collisions.
        let slots = s.peers.iter().zip(0u32..).chain([(&s.node_id, u32::MAX)]);
        for (id, slot) in slots {
            let kept = peers.get(id, 0).ok().filter(|p| p.slot == slot);
            if kept.is_none() {
                peers.insert(
                    *id,
                    PeerState {
                        slot,
                        ..PeerState::default()
                    },
                    0,
                )?;
            }
        }
        Array::<_, Config>::try_from(self.map_mut(names::CONFIG)?)?.set(0, config, 0)?;
        // After the config, so the MAC our own ARP is told apart by is already there.
        let mut vips = HashMap::<_, [u8; 4], VipWatch>::try_from(self.map_mut(names::VIPS)?)?;
        let wanted: HashSet<[u8; 4]> = s.vips_v4.iter().map(|ip| ip.octets()).collect();
        let stale: Vec<[u8; 4]> = vips
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !wanted.contains(k))
            .collect();
        for k in &stale {
            match vips.remove(k) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for k in &wanted {
            if vips.get(k, 0).is_err() {
                vips.insert(*k, VipWatch::default(), 0)?;
            }
        }
        Ok(())
    }

    /// The XDP program, e.g. for `TestRun` (not when adopted from pins).
    pub fn program(&self) -> Result<&Xdp> {
        let ebpf = self
            .ebpf
            .as_ref()
            .ok_or_else(|| anyhow!("adopted: no program object"))?;
        Ok(ebpf
            .program(names::PROGRAM)
            .ok_or_else(|| anyhow!("no program"))?
            .try_into()?)
    }

    fn ebpf_mut(&mut self) -> Result<&mut Ebpf> {
        self.ebpf
            .as_mut()
            .ok_or_else(|| anyhow!("adopted: no program object"))
    }

    fn program_mut(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf_mut()?
            .program_mut(names::PROGRAM)
            .ok_or_else(|| anyhow!("no program"))?
            .try_into()?)
    }

    fn map(&self, name: &str) -> Result<&Map> {
        self.maps
            .get(name)
            .ok_or_else(|| anyhow!("map {name} missing from the object"))
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut Map> {
        self.maps
            .get_mut(name)
            .ok_or_else(|| anyhow!("map {name} missing from the object"))
    }

    /// Every peer entry, sorted by node id.
    pub fn peers(&self) -> Result<Vec<(u32, PeerState)>> {
        let map = HashMap::<_, u32, PeerState>::try_from(self.map(names::PEERS)?)?;
        let mut v = map.iter().collect::<Result<Vec<_>, _>>()?;
        v.sort_by_key(|(id, _)| *id);
        Ok(v)
    }

    /// One peer's entry.
    pub fn peer(&self, id: u32) -> Result<Option<PeerState>> {
        let map = HashMap::<_, u32, PeerState>::try_from(self.map(names::PEERS)?)?;
        match map.get(&id, 0) {
            Ok(p) => Ok(Some(p)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Counters summed over CPUs.
    pub fn stats(&self) -> Result<Stats> {
        stats_of(self.map(names::STATS)?)
    }

    /// Every watched IPv4 VIP with its ARP conflict record, sorted by address.
    pub fn vip_watch(&self) -> Result<Vec<(Ipv4Addr, VipWatch)>> {
        vips_of(self.map(names::VIPS)?)
    }
}

/// The exit watch program of `ebpf`.
fn exit_program(ebpf: &mut Ebpf) -> Result<&mut RawTracePoint> {
    Ok(ebpf
        .program_mut(names::EXIT_PROGRAM)
        .ok_or_else(|| anyhow!("program {} missing from the object", names::EXIT_PROGRAM))?
        .try_into()?)
}

/// A load error, with the verifier's refusal spelled out when it is one.
fn refused(e: ProgramError, what: &str) -> anyhow::Error {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => anyhow!(verifier::refusal(
            &kernel::release(),
            &io_error,
            &verifier_log.to_string()
        )),
        e => anyhow::Error::new(e).context(what.to_string()),
    }
}

/// The driver of `iface` (ETHTOOL_GDRVINFO), e.g. "veth"; None when unknown.
fn driver(iface: &str) -> Option<String> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    /// struct ethtool_drvinfo: cmd, then driver[32] and fields hb does not read.
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
    }
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 160],
    };
    let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    // SAFETY: an ifreq naming `iface` and pointing at `info`, which is larger
    // than the kernel's struct ethtool_drvinfo; both outlive the call.
    let r = unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, b) in ifr
            .ifr_name
            .iter_mut()
            .zip(iface.bytes().take(libc::IFNAMSIZ - 1))
        {
            *d = b as libc::c_char;
        }
        ifr.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            SIOCETHTOOL,
            &mut ifr,
        )
    };
    if r != 0 {
        return None;
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// The peers and summed counters of a pinned map directory (for `status`).
pub fn pinned_maps(dir: &Path) -> Result<(Vec<(u32, PeerState)>, Stats)> {
    let open = |file: &str| -> Result<aya::maps::Map> {
        let path = dir.join(file);
        let data = aya::maps::MapData::from_pin(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(aya::maps::Map::from_map_data(data)?)
    };
    let peers_map = open("peers")?;
    let peers = HashMap::<_, u32, PeerState>::try_from(&peers_map)?;
    let mut v = peers.iter().collect::<Result<Vec<_>, _>>()?;
    v.sort_by_key(|(id, _)| *id);
    Ok((v, stats_of(&open("stats")?)?))
}

/// The holder lease's expiry (CLOCK_MONOTONIC ns; 0 = none) in a pinned map
/// directory, and whether the XDP link is pinned there (for `status`).
pub fn pinned_lease(dir: &Path) -> Result<(u64, bool)> {
    let path = dir.join("lease");
    let until = if path.exists() {
        let map = pinned_map(dir, "lease")?;
        Array::<_, Lease>::try_from(&map)?.get(&0, 0)?.until_ns
    } else {
        0
    };
    Ok((until, dir.join(LINK_PIN).exists()))
}

/// The registered controller of a pinned map directory and whether the exit
/// watch is pinned there (for `status`); None for a version without it.
pub fn pinned_owner(dir: &Path) -> Result<Option<(Owner, bool)>> {
    if !dir.join("owner").exists() {
        return Ok(None);
    }
    let map = pinned_map(dir, "owner")?;
    let o = Array::<_, Owner>::try_from(&map)?.get(&0, 0)?;
    Ok(Some((o, dir.join(EXIT_LINK_PIN).exists())))
}

/// The watched VIPs of a pinned map directory (for `status`); empty when the
/// directory has no `vips` pin (pinned by a version without the ARP watch).
pub fn pinned_vips(dir: &Path) -> Result<Vec<(Ipv4Addr, VipWatch)>> {
    let path = dir.join("vips");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let data = aya::maps::MapData::from_pin(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    vips_of(&aya::maps::Map::from_map_data(data)?)
}

fn vips_of(map: &aya::maps::Map) -> Result<Vec<(Ipv4Addr, VipWatch)>> {
    let vips = HashMap::<_, [u8; 4], VipWatch>::try_from(map)?;
    let mut v = vips
        .iter()
        .map(|r| r.map(|(k, w)| (Ipv4Addr::from(k), w)))
        .collect::<Result<Vec<_>, _>>()?;
    v.sort_by_key(|(ip, _)| *ip);
    Ok(v)
}

fn stats_of(map: &aya::maps::Map) -> Result<Stats> {
    let per_cpu = PerCpuArray::<_, Stats>::try_from(map)?.get(&0, 0)?;
    Ok(Stats::sum(per_cpu.iter()))
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        // A graceful end: without its pins the link detaches once our descriptor
        // closes, and the maps go with the program. (A crash skips this: the pins
        // keep everything attached for the next run to adopt.) A failed start
        // removes what it pinned itself, and leaves a previous run's data plane,
        // adopted or swapped in place, pinned and attached as it found it.
        let Some((dir, _lock)) = self.pinned.take() else {
            return;
        };
        // Not a death: unregistered before the watch goes with the pins.
        if self.started {
            let _ = self.write_owner(Owner::default());
        }
        if self.started || self.origin == Origin::Fresh {
            remove_pins(&dir);
            if self.started || self.made_dir {
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
}
