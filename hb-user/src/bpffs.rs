//! Making sure a pin directory sits on a BPF filesystem.

use crate::created;
use anyhow::{anyhow, Context, Result};
use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sys::statfs::{statfs, BPF_FS_MAGIC},
};
use std::path::{Path, PathBuf};

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

/// Mounts a bpffs at `mount_point` unless one is there already.
pub fn ensure_mounted(mount_point: &Path) -> Result<()> {
    if is_bpffs(mount_point) {
        return Ok(());
    }
    std::fs::create_dir_all(mount_point)
        .with_context(|| format!("creating {}", mount_point.display()))?;
    mount_bpffs(mount_point)
}

/// A pin root made ready for a start, remembering what that took, so that a
/// failed start removes exactly that (see [`PinRoot::undo`]).
#[derive(Debug, Default)]
pub struct PinRoot {
    /// Directories made for the mount point, outermost first.
    mount_dirs: Vec<PathBuf>,
    /// The bpffs hb mounted, if it mounted one.
    mounted: Option<PathBuf>,
    /// The pin root and its missing parents, made on the bpffs.
    root_dirs: Vec<PathBuf>,
}

impl PinRoot {
    /// Makes `root` exist on a bpffs, mounting one on its parent when neither
    /// is on one already.
    pub fn prepare(root: &Path) -> Result<Self> {
        let mount_point = root
            .parent()
            .ok_or_else(|| anyhow!("pin root {} has no parent", root.display()))?;
        let mut made = Self::default();
        if !is_bpffs(root) && !is_bpffs(mount_point) {
            made.mount_dirs = created::create_dirs(mount_point, 0o777)
                .with_context(|| format!("creating {}", mount_point.display()))?;
            if let Err(e) = mount_bpffs(mount_point) {
                made.undo();
                return Err(e);
            }
            made.mounted = Some(mount_point.to_path_buf());
        }
        match created::create_dirs(root, 0o777) {
            Ok(dirs) => made.root_dirs = dirs,
            Err(e) => {
                made.undo();
                return Err(e).with_context(|| format!("creating {}", root.display()));
            }
        }
        Ok(made)
    }

    /// After a failed start, once its pins are gone: removes the directories
    /// `prepare` made (when empty) and unmounts the bpffs it mounted.
    pub fn undo(self) {
        created::remove_dirs(&self.root_dirs);
        if let Some(m) = &self.mounted {
            let _ = umount2(m, MntFlags::MNT_DETACH);
        }
        created::remove_dirs(&self.mount_dirs);
    }
}
