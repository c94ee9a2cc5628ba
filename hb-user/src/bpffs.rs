//! Making sure a pin directory sits on a BPF filesystem.

use crate::created;
use anyhow::{anyhow, Context, Result};
use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sys::statfs::{statfs, BPF_FS_MAGIC},
};
use std::path::{Path, PathBuf};
use tracing::warn;

/// True when `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path)
        .map(|s| s.filesystem_type() == BPF_FS_MAGIC)
        .unwrap_or(false)
}

fn mount_bpffs(mount_point: &Path) -> Result<()> {
    mount(
        Some("bpf"),
        mount_point,
        Some("bpf"),
        MsFlags::empty(),
        Some("mode=0700"),
    )
    .with_context(|| format!("mounting bpffs on {}", mount_point.display()))
}

/// Ok when `root` is on a bpffs (pins can be made in it).
pub fn pin_root(root: &Path) -> Result<()> {
    if is_bpffs(root) {
        Ok(())
    } else {
        Err(anyhow!("{} is not on a bpffs", root.display()))
    }
}

/// A pin root made ready for a start, remembering what that took, so that a
/// failed start removes exactly that (see [`PinRoot::undo`]). Pins are for
/// inspection only (the kernel keeps the data plane on the interface), so a
/// root that cannot be had is a warning, not a failure.
#[derive(Debug, Default)]
pub struct PinRoot {
    /// The bpffs hb mounted, if it mounted one (always on the root itself).
    mounted: Option<PathBuf>,
    /// The pin root and its missing parents, made here.
    root_dirs: Vec<PathBuf>,
}

impl PinRoot {
    /// Makes `root` exist on a bpffs: in a bpffs already mounted on its parent
    /// (`/sys/fs/bpf`), or on a bpffs mounted on `root` itself when `root` is
    /// new or an empty directory. Never mounts anywhere else, and never over a
    /// directory with something in it. Without a bpffs (`ip netns exec`
    /// gives a fresh /sys with none, where no directory can be made) it says
    /// why and goes on without pins.
    pub fn prepare(root: &Path) -> Self {
        let mut made = Self::default();
        if is_bpffs(root) {
            return made;
        }
        let parent_is_bpffs = root.parent().is_some_and(is_bpffs);
        if root.exists() && !parent_is_bpffs {
            let empty = std::fs::read_dir(root).map(|mut d| d.next().is_none());
            if !matches!(empty, Ok(true)) {
                warn!("--pin-root {} is a directory with content, not a bpffs: no pins (hb mounts a bpffs only on a new or empty pin root)", root.display());
                return made;
            }
        }
        match created::create_dirs(root, 0o700) {
            Ok(dirs) => made.root_dirs = dirs,
            Err(e) => {
                warn!(
                    "no pins: cannot make {} ({e:#}); the data plane does not need them",
                    root.display()
                );
                return made;
            }
        }
        if !parent_is_bpffs {
            if let Err(e) = mount_bpffs(root) {
                warn!("no pins: {e:#}");
                made.undo();
                return Self::default();
            }
            made.mounted = Some(root.to_path_buf());
        }
        made
    }

    /// After a failed start, once its pins are gone: unmounts the bpffs it
    /// mounted and removes the directories it made (when empty).
    pub fn undo(self) {
        if let Some(m) = &self.mounted {
            let _ = umount2(m, MntFlags::MNT_DETACH);
        }
        created::remove_dirs(&self.root_dirs);
    }
}
