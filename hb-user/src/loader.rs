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
use hb_common::maps::{names, vip_filter_bit, Config, Key, PeerState, Stats, VipWatch};
use std::{
    collections::HashSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

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
    /// Node ids of the configured peers: the allow-list.
    pub peers: Vec<u32>,
    /// The MAC of the interface this program is attached to: ARP claiming a VIP
    /// from any other MAC counts as a conflict. Differs per link.
    pub mac: [u8; 6],
    /// IPv4 VIPs watched for ARP conflicts on this interface.
    pub vips_v4: Vec<Ipv4Addr>,
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

    /// Every watched IPv4 VIP with its ARP conflict record, sorted by address.
    pub fn vip_watch(&self) -> Result<Vec<(Ipv4Addr, VipWatch)>> {
        vips_of(self.map(names::VIPS)?)
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
        // The program detaches when `ebpf` drops; the pins would keep the maps alive.
        if let Some(dir) = self.pinned.take() {
            for (_, file) in names::PINNED {
                let _ = std::fs::remove_file(dir.join(file));
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}
