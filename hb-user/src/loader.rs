//! Loads hb's XDP object, writes its configuration maps and attaches it to one
//! interface through netlink ([`ifxdp`]), so that the kernel keeps it there,
//! still recording heartbeats and enforcing the holder lease, when `hb-user`
//! dies, in whatever mount namespace it ran. The maps and program are also
//! pinned under `<pin root>/<iface>/` (default `/sys/fs/bpf/hb/<iface>/`) when
//! a bpffs is at hand, for `bpftool map dump pinned`; nothing depends on the
//! pins. A restarted `hb-user` finds the previous program through the
//! interface and swaps its own in atomically, taking over its state; a
//! graceful stop detaches it. A failed start removes only what it made.
//!
//! The same object holds the exit watch (`hb_exit`, on the `sched_process_exit`
//! raw tracepoint), held by the controller alone: once the start went through,
//! the controller registers its pid in `owner`, and should it die without a
//! graceful stop the data plane answers peers' heartbeats with a death notice.

use crate::{bpffs, ifxdp, kernel, mapped::MapCell, verifier};
use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf},
    programs::{
        raw_trace_point::RawTracePointLinkId, ProgramError, ProgramInfo, RawTracePoint, Xdp,
        XdpMode,
    },
    Ebpf, EbpfLoader,
};
use hb_common::maps::{
    names, vip6_filter_bit, vip_filter_bit, Config, Key, Lease, Owner, PeerState, Seen, Sent,
    Stats, VipWatch,
};
use nix::fcntl::{Flock, FlockArg};
use std::{
    collections::{BTreeMap, HashSet},
    fs::File,
    net::Ipv4Addr,
    os::{fd::AsFd, unix::fs::MetadataExt},
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
    /// IPv4 VIPs watched for ARP conflicts on this interface (and fenced).
    pub vips_v4: Vec<Ipv4Addr>,
    /// IPv6 VIPs on this interface, fenced (neighbour solicitations, traffic).
    pub vips_v6: Vec<std::net::Ipv6Addr>,
    /// A heartbeat after this long a silence is news for the controller (an
    /// `EVENTS` record), as is any change in what a peer says.
    pub quiet: Duration,
}

/// Pin file name of the program, beside the maps'.
const PROG_PIN: &str = "prog";
/// Pins of versions that attached through a pinned bpf_link: removed on sight.
const OLD_PINS: [&str; 3] = ["link", "exit_prog", "exit_link"];

/// How the data plane on an interface came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Nothing of hb's was attached: loaded and attached now.
    Fresh,
    /// The same build's program was attached (a previous run's): ours took
    /// its place atomically, with its state (peers, lease, death mark).
    Adopted,
    /// Another build's program was attached: replaced the same way.
    Replaced,
}

/// Where our program is attached, through netlink ([`ifxdp`]), with a socket
/// in that interface's namespace to detach it.
#[derive(Debug)]
struct OnIface {
    ifindex: u32,
    mode: ifxdp::Mode,
    rtnl: ifxdp::Rtnl,
}

/// The XDP program with its maps, loaded by this process. It is attached to
/// the interface through netlink, so the kernel keeps it there when this
/// process dies, whatever becomes of its mounts; the maps are also pinned for
/// `bpftool` when a bpffs is at hand.
pub struct DataPlane {
    ebpf: Ebpf,
    /// Maps by object name (taken out of `ebpf`).
    maps: BTreeMap<&'static str, Map>,
    /// Where our program is attached.
    on: Option<OnIface>,
    /// The pin directory, and an exclusive lock on it: one controller per interface.
    pinned: Option<(PathBuf, Flock<File>)>,
    /// The exit watch: held by this process only, it fires while the process
    /// dies (before its descriptors close) and goes with it.
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

/// The pin directory for `iface` under `root` (see [`bpffs::pin_root`]),
/// locked for this process: a second controller on the same interface fails
/// here. The lock goes with the process, crash included. True when the
/// directory was made here. Ok(None) when no bpffs can be had at `root`.
fn lock_pin_dir(root: &Path, iface: &str) -> Result<Option<(PathBuf, Flock<File>, bool)>> {
    // PinRoot::prepare said why when there is none.
    if bpffs::pin_root(root).is_err() {
        return Ok(None);
    }
    let dir = root.join(iface);
    let made = !dir.exists();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let f = File::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
    let Ok(lock) = Flock::lock(f, FlockArg::LockExclusiveNonblock) else {
        bail!(
            "another hb-user is running on {iface} ({} is locked)",
            dir.display()
        );
    };
    Ok(Some((dir, lock, made)))
}

fn remove_pins(dir: &Path) -> bool {
    let mut removed = false;
    for file in names::PINNED
        .iter()
        .map(|(_, f)| *f)
        .chain([PROG_PIN])
        .chain(OLD_PINS)
    {
        removed |= std::fs::remove_file(dir.join(file)).is_ok();
    }
    removed
}

/// hb's program found attached to an interface, with its maps.
pub struct Found {
    pub prog: ProgramInfo,
    pub mode: ifxdp::Mode,
    /// By object name; a map an older build lacks is absent.
    pub maps: BTreeMap<&'static str, Map>,
}

impl Found {
    /// hb's data plane on `ifindex`: Ok(None) when no XDP program is attached,
    /// an error naming it when another program is.
    pub fn on(ifindex: u32, iface: &str) -> Result<Option<Found>> {
        let Some(a) = ifxdp::query(ifindex)? else {
            return Ok(None);
        };
        // Listing programs by id takes CAP_SYS_ADMIN: without it every
        // entry is an error, which is not the program having vanished.
        let mut refused = None;
        let prog = aya::programs::loaded_programs()
            .filter_map(|p| p.map_err(|e| refused = Some(e)).ok())
            .find(|p| p.id() == a.prog_id);
        let prog = match (prog, refused) {
            (Some(p), _) => p,
            (None, Some(e)) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "reading the XDP program on {iface} (id {}) needs CAP_SYS_ADMIN",
                    a.prog_id
                )))
            }
            (None, None) => bail!("the XDP program on {iface} (id {}) vanished", a.prog_id),
        };
        if prog.name_as_str() != Some(names::PROGRAM) {
            bail!(
                "another XDP program ({}, id {}) is attached to {iface}: hb will not replace it",
                prog.name_as_str().unwrap_or("?"),
                a.prog_id
            );
        }
        let mut maps = BTreeMap::new();
        for id in prog.map_ids()?.unwrap_or_default() {
            let Ok(info) = aya::maps::MapInfo::from_id(id) else {
                continue;
            };
            let name = info.name_as_str().unwrap_or_default();
            if let Some((n, _)) = names::PINNED.iter().find(|(n, _)| *n == name) {
                maps.insert(*n, Map::from_map_data(MapData::from_id(id)?)?);
            }
        }
        Ok(Some(Found {
            prog,
            mode: a.mode,
            maps,
        }))
    }

    fn owner(&self) -> Option<Owner> {
        let m = self.maps.get(names::OWNER)?;
        Array::<_, Owner>::try_from(m).ok()?.get(&0, 0).ok()
    }
}

/// Says so when the previous data plane saw its controller die. Its lease
/// needs nothing here: XDP withdrew it when a peer took over after the
/// notice, and otherwise a quick restart keeps it, as after any crash.
fn report_dead_owner(o: Option<Owner>) {
    let Some(o) = o.filter(|o| o.dead_ns != 0) else {
        return;
    };
    let ago = crate::clock::monotonic().saturating_sub(Duration::from_nanos(o.dead_ns));
    info!(
        "the previous controller (pid {}, session {:016x}) died {} ms ago; its data plane has been answering peers' heartbeats with death notices since",
        o.pid,
        o.session,
        ago.as_millis()
    );
}

/// True when `pid`, in our pid namespace, is a running hb-user.
fn hb_user_runs(pid: u32) -> bool {
    pid != std::process::id()
        && std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim_end() == "hb-user")
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
            ebpf,
            maps,
            on: None,
            pinned: None,
            exit_attached: None,
            origin: Origin::Fresh,
            made_dir: false,
            started: false,
        })
    }

    /// hb on `iface` (`ifindex`) from `fresh` (just loaded, so that a verifier
    /// refusal comes before anything is made), configured with `settings`. A
    /// data plane of hb's already on the interface (a previous run's) is
    /// replaced atomically by ours, which takes over its state; otherwise
    /// `fresh` is attached with `attach`. The maps are pinned under
    /// `root/<iface>/` when a bpffs can be had there. Until
    /// [`DataPlane::started`], dropping the result undoes only what this call
    /// made: a previous run's state stays attached (in our program).
    pub fn open(
        mut fresh: Self,
        root: &Path,
        iface: &str,
        ifindex: u32,
        settings: &Settings,
        attach: impl FnOnce(&mut DataPlane) -> Result<()>,
    ) -> Result<(Self, Origin)> {
        if let Some((dir, lock, made_dir)) = lock_pin_dir(root, iface)? {
            // From here a failure drops `fresh`, which removes what it made.
            fresh.made_dir = made_dir;
            fresh.pinned = Some((dir, lock));
        }
        let found = Found::on(ifindex, iface)?;
        if let Some(o) = found.as_ref().and_then(Found::owner) {
            if o.pid != 0 && o.dead_ns == 0 && hb_user_runs(o.pid) {
                bail!(
                    "another hb-user (pid {}) is running on {iface}: stop it first",
                    o.pid
                );
            }
        }
        let origin = match found {
            Some(old) => {
                let same = old.prog.tag() == fresh.program()?.info()?.tag();
                report_dead_owner(old.owner());
                // State first, so that the swap loses nothing but what arrives
                // in between (a heartbeat or two, recorded again at the next).
                fresh.carry_from(&old, settings);
                fresh.configure(settings)?;
                let old_fd = old.prog.fd()?;
                let fd = fresh.program()?.fd()?.as_fd().try_clone_to_owned()?;
                let rtnl = ifxdp::Rtnl::open()?;
                rtnl.attach(ifindex, fd.as_fd(), old.mode, Some(old_fd.as_fd()))
                    .with_context(|| format!("replacing hb's XDP program on {iface} in place"))?;
                fresh.on = Some(OnIface {
                    ifindex,
                    mode: old.mode,
                    rtnl,
                });
                // A failed start from here leaves ours attached with the old state.
                fresh.origin = if same {
                    Origin::Adopted
                } else {
                    Origin::Replaced
                };
                fresh.origin
            }
            None => {
                fresh.configure(settings)?;
                attach(&mut fresh)?;
                Origin::Fresh
            }
        };
        fresh.arm_exit_watch();
        if fresh.pinned.is_some() {
            fresh.pin_objects()?;
        }
        Ok((fresh, origin))
    }

    /// The start went through: from now on dropping this data plane is a
    /// graceful stop, which detaches it and removes the pins, and a death
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

    /// Attaches the exit watch (`sched_process_exit`). Not pinned: the kernel
    /// runs it in the dying process before closing its descriptors, which is
    /// all it is for.
    pub fn attach_exit(&mut self) -> Result<()> {
        let prog = exit_program(&mut self.ebpf)?;
        let id = prog.attach(names::EXIT_TRACEPOINT).with_context(|| {
            format!("attaching to the raw tracepoint {}", names::EXIT_TRACEPOINT)
        })?;
        self.exit_attached = Some(id);
        Ok(())
    }

    /// Whether the exit watch is attached.
    pub fn death_notice_armed(&self) -> bool {
        self.exit_attached.is_some()
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

    /// Takes over a previous data plane's state, before ours replaces it:
    /// the configured peers' entries (anti-replay state; a peer no longer
    /// configured stays out of the allow-list), `seen`, the lease (a quick
    /// restart keeps answering for the VIPs; a program upgrade too), the
    /// owner with its death mark and the `sent` it answers with (death
    /// notices go on until we register), the VIP conflict records and the
    /// counters. A map whose layout differs (another build) is skipped.
    fn carry_from(&mut self, old: &Found, s: &Settings) {
        let slots: BTreeMap<u32, u32> = s
            .peers
            .iter()
            .copied()
            .zip(0u32..)
            .chain([(s.node_id, u32::MAX)])
            .collect();
        self.carry_hash::<u32, PeerState>(old, names::PEERS, |id, p| {
            slots.get(id) == Some(&p.slot)
        });
        // Read as `vips_of` does, so an older build's records are converted.
        if let (Some(o), Ok(m)) = (old.maps.get(names::VIPS), self.map_mut(names::VIPS)) {
            if let (Ok(records), Ok(mut n)) =
                (vips_of(o), HashMap::<_, [u8; 4], VipWatch>::try_from(m))
            {
                for (ip, w) in records {
                    let _ = n.insert(ip.octets(), w, 0);
                }
            }
        }
        self.carry_array::<Seen>(old, names::SEEN, hb_common::maps::SEEN_SLOTS);
        self.carry_array::<Lease>(old, names::LEASE, 1);
        self.carry_array::<Sent>(old, names::SENT, 1);
        self.carry_array::<Owner>(old, names::OWNER, 1);
        if let (Some(o), Ok(m)) = (old.maps.get(names::STATS), self.map_mut(names::STATS)) {
            if let (Ok(o), Ok(mut n)) = (
                PerCpuArray::<_, Stats>::try_from(o),
                PerCpuArray::<_, Stats>::try_from(m),
            ) {
                if let Ok(v) = o.get(&0, 0) {
                    let _ = n.set(0, v, 0);
                }
            }
        }
    }

    fn carry_hash<K: aya::Pod, V: aya::Pod>(
        &mut self,
        old: &Found,
        name: &str,
        keep: impl Fn(&K, &V) -> bool,
    ) {
        let (Some(o), Ok(m)) = (old.maps.get(name), self.map_mut(name)) else {
            return;
        };
        let (Ok(o), Ok(mut n)) = (
            HashMap::<_, K, V>::try_from(o),
            HashMap::<_, K, V>::try_from(m),
        ) else {
            return;
        };
        for (k, v) in o.iter().flatten().filter(|(k, v)| keep(k, v)) {
            let _ = n.insert(k, v, 0);
        }
    }

    fn carry_array<V: aya::Pod>(&mut self, old: &Found, name: &str, len: u32) {
        let (Some(o), Ok(m)) = (old.maps.get(name), self.map_mut(name)) else {
            return;
        };
        let (Ok(o), Ok(mut n)) = (Array::<_, V>::try_from(o), Array::<_, V>::try_from(m)) else {
            return;
        };
        for i in 0..len {
            if let Ok(v) = o.get(&i, 0) {
                let _ = n.set(i, v, 0);
            }
        }
    }

    /// Pins maps and program into the locked directory, replacing what is there
    /// (for `bpftool` and `hb-user status`; nothing depends on the pins staying).
    fn pin_objects(&mut self) -> Result<()> {
        let dir = self
            .pinned
            .as_ref()
            .map(|(d, _)| d.clone())
            .ok_or_else(|| anyhow!("no pin directory"))?;
        for file in OLD_PINS {
            let _ = std::fs::remove_file(dir.join(file));
        }
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
        Ok(())
    }

    /// Attaches to `iface` in `mode` (driver or generic), where no XDP program is.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<()> {
        let mode = match mode {
            XdpMode::Driver => ifxdp::Mode::Driver,
            XdpMode::Skb => ifxdp::Mode::Skb,
            other => bail!("XDP mode {other:?} is not one hb uses"),
        };
        let ifindex = nix::net::if_::if_nametoindex(iface)
            .with_context(|| format!("no interface named {iface}"))?;
        let fd = self.program()?.fd()?.as_fd().try_clone_to_owned()?;
        let rtnl = ifxdp::Rtnl::open()?;
        rtnl.attach(ifindex, fd.as_fd(), mode, None)
            .with_context(|| format!("attaching XDP to {iface} ({} mode)", mode.name()))?;
        self.on = Some(OnIface {
            ifindex,
            mode,
            rtnl,
        });
        if mode == ifxdp::Mode::Driver && driver(iface).as_deref() == Some("veth") {
            warn!("{iface} is a veth in native XDP mode: death notices (XDP_TX) reach the other end only if an XDP program is attached there; run with --xdp-mode generic on veth");
        }
        Ok(())
    }

    /// Follows our interface to index `ifindex` with MAC `mac`: when the
    /// interface was deleted and made again (a new index), attaches the same
    /// program (maps, peers and lease kept) there in the mode it had; and
    /// writes the MAC XDP tells our own ARP apart by. True when it re-attached.
    pub fn follow(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<bool> {
        let mut config = Array::<_, Config>::try_from(self.map_mut(names::CONFIG)?)?;
        let mut c = config.get(&0, 0)?;
        if c.mac != mac {
            c.mac = mac;
            config.set(0, c, 0)?;
        }
        let Some(on) = &self.on else {
            bail!("the program is not attached");
        };
        if on.ifindex == ifindex {
            return Ok(false);
        }
        let mode = on.mode;
        let fd = self.program()?.fd()?.as_fd().try_clone_to_owned()?;
        let rtnl = ifxdp::Rtnl::open()?;
        rtnl.attach(ifindex, fd.as_fd(), mode, None)
            .with_context(|| {
                format!(
                    "attaching XDP to interface #{ifindex} ({} mode)",
                    mode.name()
                )
            })?;
        self.on = Some(OnIface {
            ifindex,
            mode,
            rtnl,
        });
        Ok(true)
    }

    /// The pins follow a renamed interface (`root/<old>` to `root/<new>`).
    pub fn rename_pins(&mut self, iface: &str) -> Result<()> {
        let Some((dir, _)) = &mut self.pinned else {
            return Ok(());
        };
        let to = dir.with_file_name(iface);
        std::fs::rename(&*dir, &to)
            .with_context(|| format!("moving {} to {}", dir.display(), to.display()))?;
        *dir = to;
        Ok(())
    }

    /// How this run came to its program: loaded now, or taken over in place.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The mode our program is attached in.
    pub fn mode(&self) -> Option<&'static str> {
        self.on.as_ref().map(|o| o.mode.name())
    }

    /// Pins maps and program under `root/<iface>/` (locking it), for a data
    /// plane attached with [`DataPlane::attach`]; from then on dropping it
    /// is a graceful stop.
    pub fn pin(&mut self, root: &Path, iface: &str) -> Result<PathBuf> {
        if !bpffs::is_bpffs(root) {
            std::fs::create_dir_all(root)
                .with_context(|| format!("creating {}", root.display()))?;
        }
        let (dir, lock, _) =
            lock_pin_dir(root, iface)?.ok_or_else(|| anyhow!("no bpffs at {}", root.display()))?;
        remove_pins(&dir);
        self.started = true;
        self.pinned = Some((dir.clone(), lock));
        self.pin_objects()?;
        Ok(dir)
    }

    /// Removes what a crashed run left on `iface`: hb's program on the
    /// interface (detached) and the pins under `root`. Fails while a
    /// controller runs there. True when something was removed.
    pub fn cleanup(root: &Path, iface: &str) -> Result<bool> {
        let mut removed = false;
        if let Ok(ifindex) = nix::net::if_::if_nametoindex(iface) {
            if let Some(found) = Found::on(ifindex, iface)? {
                if let Some(o) = found
                    .owner()
                    .filter(|o| o.dead_ns == 0 && hb_user_runs(o.pid))
                {
                    bail!("hb-user (pid {}) is running on {iface}: stop it (SIGTERM cleans up) instead", o.pid);
                }
                ifxdp::Rtnl::open()?
                    .detach(ifindex, found.mode, found.prog.fd()?.as_fd())
                    .with_context(|| format!("detaching hb's XDP program from {iface}"))?;
                removed = true;
            }
        }
        if root.join(iface).is_dir() && bpffs::is_bpffs(root) {
            let (dir, _lock, _) = lock_pin_dir(root, iface)?
                .ok_or_else(|| anyhow!("no bpffs at {}", root.display()))?;
            removed |= remove_pins(&dir);
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(removed)
    }

    /// Whether the maps are pinned (for `bpftool`).
    pub fn is_pinned(&self) -> bool {
        self.pinned.is_some()
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
            vip6_filter: s
                .vips_v6
                .iter()
                .fold(0, |f, ip| f | vip6_filter_bit(&ip.octets())),
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
        sync_keys(
            &mut vips,
            s.vips_v4.iter().map(|ip| ip.octets()),
            VipWatch::default(),
        )?;
        let mut vips6 = HashMap::<_, [u8; 16], u32>::try_from(self.map_mut(names::VIPS6)?)?;
        sync_keys(&mut vips6, s.vips_v6.iter().map(|ip| ip.octets()), 1)?;
        Ok(())
    }

    /// Replaces the VIPs this data plane fences and watches (a reload). The
    /// config's filter gains the new ones before the maps change and loses
    /// the old ones after, so XDP never passes a VIP it should fence.
    pub fn set_vips(&mut self, v4: &[Ipv4Addr], v6: &[std::net::Ipv6Addr]) -> Result<()> {
        let bits = v4.iter().fold(0, |f, ip| f | vip_filter_bit(ip.octets()));
        let mut config = Array::<_, Config>::try_from(self.map_mut(names::CONFIG)?)?;
        let mut c = config.get(&0, 0)?;
        c.vip_filter |= bits;
        config.set(0, c, 0)?;
        let mut vips = HashMap::<_, [u8; 4], VipWatch>::try_from(self.map_mut(names::VIPS)?)?;
        sync_keys(
            &mut vips,
            v4.iter().map(|ip| ip.octets()),
            VipWatch::default(),
        )?;
        let mut vips6 = HashMap::<_, [u8; 16], u32>::try_from(self.map_mut(names::VIPS6)?)?;
        sync_keys(&mut vips6, v6.iter().map(|ip| ip.octets()), 1)?;
        let mut config = Array::<_, Config>::try_from(self.map_mut(names::CONFIG)?)?;
        c.vip_filter = bits;
        config.set(0, c, 0)?;
        Ok(())
    }

    /// Replaces the peer allow-list (a reload): `peers[i]`'s `seen` slot is
    /// `i`. A peer keeping its slot keeps its anti-replay state; one that
    /// moves or is new starts afresh (its next session is established as
    /// after our start), with its `seen` slot cleared, so the sender never
    /// echoes another peer's session to it; a peer no longer listed is
    /// refused from now on. Our own entry (id collisions) stays.
    pub fn set_peers(&mut self, node_id: u32, peers: &[u32]) -> Result<()> {
        let mut map = HashMap::<_, u32, PeerState>::try_from(self.map_mut(names::PEERS)?)?;
        let stale: Vec<u32> = (map.keys().filter_map(|k| k.ok()))
            .filter(|id| *id != node_id && !peers.contains(id))
            .collect();
        for id in &stale {
            match map.remove(id) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut cleared = Vec::new();
        for (id, slot) in peers.iter().zip(0u32..) {
            if map.get(id, 0).is_ok_and(|p| p.slot == slot) {
                continue;
            }
            map.insert(
                *id,
                PeerState {
                    slot,
                    ..PeerState::default()
                },
                0,
            )?;
            cleared.push(slot);
        }
        let mut seen = Array::<_, Seen>::try_from(self.map_mut(names::SEEN)?)?;
        for slot in cleared {
            seen.set(slot, Seen::default(), 0)?;
        }
        Ok(())
    }

    /// The XDP program, e.g. for `TestRun`.
    pub fn program(&self) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(names::PROGRAM)
            .ok_or_else(|| anyhow!("no program"))?
            .try_into()?)
    }

    fn program_mut(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
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

/// Makes `map`'s keys exactly `wanted`: stale keys removed, missing ones
/// added with `fresh`; existing values (conflict records) are kept.
fn sync_keys<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod>(
    map: &mut HashMap<&mut MapData, K, V>,
    wanted: impl Iterator<Item = K>,
    fresh: V,
) -> Result<()> {
    let wanted: HashSet<K> = wanted.collect();
    let stale: Vec<K> = map
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| !wanted.contains(k))
        .collect();
    for k in &stale {
        match map.remove(k) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for k in &wanted {
        if map.get(k, 0).is_err() {
            map.insert(*k, fresh, 0)?;
        }
    }
    Ok(())
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
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    /// struct ethtool_drvinfo: cmd, then driver[32] and fields hb does not read.
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
    }
    // SIOCETHTOOL predates the _IOWR encoding: a "bad" ioctl number.
    nix::ioctl_readwrite_bad!(ethtool, libc::SIOCETHTOOL, libc::ifreq);
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 160],
    };
    let mut ifr = libc::ifreq {
        ifr_name: [0; libc::IFNAMSIZ],
        ifr_ifru: libc::__c_anonymous_ifr_ifru {
            ifru_data: (&mut info as *mut DrvInfo).cast(),
        },
    };
    for (d, b) in ifr
        .ifr_name
        .iter_mut()
        .zip(iface.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = b as libc::c_char;
    }
    let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    // SAFETY: `ifr` names `iface` (NUL-terminated) and its data pointer is
    // `info`, which is larger than the kernel's struct ethtool_drvinfo (196
    // bytes); the kernel reads only those two fields of `ifr` and writes only
    // into `info`, and both outlive the call.
    unsafe { ethtool(std::os::fd::AsRawFd::as_raw_fd(&socket), &mut ifr) }.ok()?;
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// A data plane's maps for reading (`hb-user status`): from its pins, or,
/// without pins (a controller in a private mount namespace), through the
/// program attached to the interface.
pub struct View {
    maps: BTreeMap<&'static str, Map>,
    /// hb's program is attached to the interface (it goes on without a controller).
    pub attached: bool,
}

impl View {
    /// The data plane of `iface` (pins in `dir`); Ok(None) when there is none.
    pub fn open(dir: &Path, iface: &str) -> Result<Option<View>> {
        // Another program on the interface (or none) is simply not hb's.
        let found = nix::net::if_::if_nametoindex(iface)
            .ok()
            .and_then(|ifindex| Found::on(ifindex, iface).ok().flatten());
        let attached = found.is_some();
        let mut maps = BTreeMap::new();
        if dir.join("peers").exists() {
            for (name, file) in names::PINNED {
                if dir.join(file).exists() {
                    maps.insert(name, pinned_map(dir, file)?);
                }
            }
        } else if let Some(f) = found {
            maps = f.maps;
        } else {
            return Ok(None);
        }
        Ok(Some(View { maps, attached }))
    }

    fn map(&self, name: &str) -> Result<&Map> {
        self.maps
            .get(name)
            .ok_or_else(|| anyhow!("the data plane has no {name} map (another version?)"))
    }

    /// Every peer entry, sorted by node id.
    pub fn peers(&self) -> Result<Vec<(u32, PeerState)>> {
        let peers = HashMap::<_, u32, PeerState>::try_from(self.map(names::PEERS)?)?;
        let mut v = peers.iter().collect::<Result<Vec<_>, _>>()?;
        v.sort_by_key(|(id, _)| *id);
        Ok(v)
    }

    pub fn stats(&self) -> Result<Stats> {
        stats_of(self.map(names::STATS)?)
    }

    /// The holder lease's expiry (CLOCK_MONOTONIC ns; 0 = none).
    pub fn lease_ns(&self) -> u64 {
        self.map(names::LEASE)
            .ok()
            .and_then(|m| Array::<_, Lease>::try_from(m).ok()?.get(&0, 0).ok())
            .map_or(0, |l| l.until_ns)
    }

    /// The registered controller and its death mark.
    pub fn owner(&self) -> Owner {
        self.map(names::OWNER)
            .ok()
            .and_then(|m| Array::<_, Owner>::try_from(m).ok()?.get(&0, 0).ok())
            .unwrap_or_default()
    }

    /// The watched VIPs with their ARP conflict records.
    pub fn vips(&self) -> Result<Vec<(Ipv4Addr, VipWatch)>> {
        match self.maps.get(names::VIPS) {
            Some(m) => vips_of(m),
            None => Ok(Vec::new()),
        }
    }
}

/// The watched VIPs of a pinned map directory.
pub fn pinned_vips(dir: &Path) -> Result<Vec<(Ipv4Addr, VipWatch)>> {
    vips_of(&pinned_map(dir, "vips")?)
}

/// The VIP watch records of `map`, also of a program of an older build (the
/// map of a program being replaced, or pinned by a controller still running).
fn vips_of(map: &aya::maps::Map) -> Result<Vec<(Ipv4Addr, VipWatch)>> {
    let mut v = match HashMap::<_, [u8; 4], VipWatch>::try_from(map) {
        Ok(vips) => vips
            .iter()
            .map(|r| r.map(|(k, w)| (Ipv4Addr::from(k), w)))
            .collect::<Result<Vec<_>, _>>()?,
        Err(aya::maps::MapError::InvalidValueSize { .. }) => {
            HashMap::<_, [u8; 4], VipWatchV1>::try_from(map)?
                .iter()
                .map(|r| r.map(|(k, w)| (Ipv4Addr::from(k), w.into())))
                .collect::<Result<Vec<_>, _>>()?
        }
        Err(e) => return Err(e.into()),
    };
    v.sort_by_key(|(ip, _)| *ip);
    Ok(v)
}

/// `VipWatch` as builds before per-claimant times had it: claimants of a MAC
/// and a count only.
#[repr(C)]
#[derive(Clone, Copy)]
struct VipWatchV1 {
    conflicts: u64,
    last_ns: u64,
    last_mac: [u8; 6],
    _pad: [u8; 2],
    claimants: [ClaimantV1; hb_common::maps::CLAIMANTS],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct ClaimantV1 {
    mac: [u8; 6],
    _pad: [u8; 2],
    count: u64,
}

const _: () = assert!(std::mem::size_of::<VipWatchV1>() == 88);

// SAFETY: #[repr(C)], integers and byte arrays only, no implicit padding (size
// asserted above).
unsafe impl aya::Pod for VipWatchV1 {}

impl From<VipWatchV1> for VipWatch {
    /// Counts carry over; a claimant's time is known only for the last MAC,
    /// and a MAC that claimed more than once is a repeat claimant.
    fn from(old: VipWatchV1) -> Self {
        let mut w = VipWatch {
            conflicts: old.conflicts,
            last_ns: old.last_ns,
            last_mac: old.last_mac,
            ..VipWatch::default()
        };
        for (c, ClaimantV1 { mac, count, .. }) in w.claimants.iter_mut().zip(old.claimants) {
            *c = hb_common::maps::Claimant {
                mac,
                repeat: u8::from(count > 1),
                _pad: 0,
                count,
                last_ns: if count != 0 && mac == old.last_mac {
                    old.last_ns
                } else {
                    0
                },
            };
        }
        w
    }
}

fn stats_of(map: &aya::maps::Map) -> Result<Stats> {
    let per_cpu = PerCpuArray::<_, Stats>::try_from(map)?.get(&0, 0)?;
    Ok(Stats::sum(per_cpu.iter()))
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        // A graceful end (or a failed fresh start): detach and unpin. A crash
        // skips this, and the kernel keeps the program on the interface for
        // the next run to take over. A failed start that replaced a previous
        // run's program leaves ours attached with that run's state.
        if !self.started && self.origin != Origin::Fresh {
            return;
        }
        // Not a death: unregistered before the watch goes.
        if self.started {
            let _ = self.write_owner(Owner::default());
        }
        if let (Some(on), Ok(prog)) = (&self.on, self.program()) {
            if let Ok(fd) = prog.fd() {
                if let Err(e) = on.rtnl.detach(on.ifindex, on.mode, fd.as_fd()) {
                    warn!("detaching XDP from interface #{}: {e}", on.ifindex);
                }
            }
        }
        if let Some((dir, _lock)) = self.pinned.take() {
            remove_pins(&dir);
            if self.started || self.made_dir {
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
}

#[cfg(test)]
mod vip_watch_v1 {
    use super::*;

    #[test]
    fn an_older_builds_record_converts() {
        let mut old = VipWatchV1 {
            conflicts: 7,
            last_ns: 99,
            last_mac: [2, 0, 0, 0, 0, 2],
            _pad: [0; 2],
            claimants: [ClaimantV1 {
                mac: [0; 6],
                _pad: [0; 2],
                count: 0,
            }; hb_common::maps::CLAIMANTS],
        };
        old.claimants[0].mac = [2, 0, 0, 0, 0, 1];
        old.claimants[0].count = 6;
        old.claimants[1].mac = [2, 0, 0, 0, 0, 2];
        old.claimants[1].count = 1;
        let w = VipWatch::from(old);
        assert_eq!((w.conflicts, w.last_ns, w.last_mac), (7, 99, old.last_mac));
        let c: Vec<_> = w
            .claimants
            .iter()
            .map(|c| (c.mac[5], c.count, c.repeat, c.last_ns))
            .collect();
        assert_eq!(c, [(1, 6, 1, 0), (2, 1, 0, 99), (0, 0, 0, 0), (0, 0, 0, 0)]);
        assert_eq!(w.recent, VipWatch::default().recent);
    }
}
