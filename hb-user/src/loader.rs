//! Loads hb's XDP object, writes its configuration maps, attaches it to one
//! interface and pins its maps under `<pin root>/<iface>/` (default
//! `/sys/fs/bpf/hb/<iface>/`), so that `bpftool map dump pinned` shows them.
//! Dropping a [`DataPlane`] detaches the program and removes the pins.

use crate::bpffs;
use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{Array, HashMap, PerCpuArray},
    programs::{Xdp, XdpMode},
    Ebpf,
};
use hb_common::maps::{names, Config, Key, PeerState, Stats};
use std::path::{Path, PathBuf};

/// The compiled XDP object, embedded at build time (see build.rs).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("HB_BPF_OBJECT"));

/// Default root of the pinned maps.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/hb";

/// What the XDP program needs to know, written into its maps.
#[derive(Clone, Debug)]
pub struct Settings {
    pub cluster_id: u32,
    pub port: u16,
    /// Let heartbeats go on to the stack after handling them (debugging).
    pub pass_heartbeats: bool,
    pub key: Key,
    /// Node ids of the configured peers: the allow-list.
    pub peers: Vec<u32>,
}

/// The loaded XDP program with its maps.
pub struct DataPlane {
    ebpf: Ebpf,
    pinned: Option<PathBuf>,
}

impl DataPlane {
    /// Loads the object into the kernel (verifier included); nothing is attached.
    pub fn load() -> Result<Self> {
        let mut ebpf = Ebpf::load(OBJECT).context("loading the XDP object")?;
        let prog: &mut Xdp = ebpf
            .program_mut(names::PROGRAM)
            .ok_or_else(|| anyhow!("program {} missing from the object", names::PROGRAM))?
            .try_into()?;
        prog.load().context("verifying the XDP program")?;
        Ok(Self { ebpf, pinned: None })
    }

    /// Writes config, key and the peer allow-list. Existing peer entries are kept,
    /// so that anti-replay state survives a reconfiguration.
    pub fn configure(&mut self, s: &Settings) -> Result<()> {
        let config = Config {
            cluster_id: s.cluster_id,
            port: s.port,
            flags: if s.pass_heartbeats {
                hb_common::maps::CONFIG_PASS_HEARTBEATS
            } else {
                0
            },
        };
        // Key and peers first: a configured port switches the program on.
        Array::<_, Key>::try_from(self.map_mut(names::KEY)?)?.set(0, s.key, 0)?;
        let mut peers = HashMap::<_, u32, PeerState>::try_from(self.map_mut(names::PEERS)?)?;
        for id in &s.peers {
            if peers.get(id, 0).is_err() {
                peers.insert(*id, PeerState::default(), 0)?;
            }
        }
        Array::<_, Config>::try_from(self.map_mut(names::CONFIG)?)?.set(0, config, 0)?;
        Ok(())
    }

    /// Attaches to `iface` in `mode`.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<()> {
        self.program_mut()?
            .attach(iface, mode)
            .with_context(|| format!("attaching XDP to {iface} ({mode:?})"))?;
        Ok(())
    }

    /// Pins every map under `root/<iface>/`, mounting a bpffs on `root`'s parent
    /// when that is not one already.
    pub fn pin(&mut self, root: &Path, iface: &str) -> Result<PathBuf> {
        let mount_point = root
            .parent()
            .ok_or_else(|| anyhow!("pin root {} has no parent", root.display()))?;
        if !bpffs::is_bpffs(root) {
            bpffs::ensure_mounted(mount_point)?;
        }
        let dir = root.join(iface);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        self.pinned = Some(dir.clone());
        for (map, file) in names::PINNED {
            let path = dir.join(file);
            // Pin after attaching: we hold the interface's XDP attachment, so pins
            // already here are a crashed run's.
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing stale {}", path.display()))?;
                tracing::info!("removed {} left by an earlier run", path.display());
            }
            self.map(map)?
                .pin(&path)
                .with_context(|| format!("pinning {}", path.display()))?;
        }
        Ok(dir)
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

    fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .ok_or_else(|| anyhow!("map {name} missing from the object"))
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
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

fn stats_of(map: &aya::maps::Map) -> Result<Stats> {
    let per_cpu = PerCpuArray::<_, Stats>::try_from(map)?.get(&0, 0)?;
    Ok(Stats::sum(per_cpu.iter()))
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        // The program detaches when `ebpf` drops; the pins would keep the maps alive.
        if let Some(dir) = self.pinned.take() {
            for (_, file) in names::PINNED {
                let _ = std::fs::remove_file(dir.join(file));
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}
