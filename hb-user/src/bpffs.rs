//! Making sure a pin directory sits on a BPF filesystem.

use anyhow::{Context, Result};
use nix::{
    mount::{mount, MsFlags},
    sys::statfs::{statfs, BPF_FS_MAGIC},
};
use std::path::Path;

/// True when `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path)
        .map(|s| s.filesystem_type() == BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// Mounts a bpffs at `mount_point` unless one is there already.
pub fn ensure_mounted(mount_point: &Path) -> Result<()> {
    if is_bpffs(mount_point) {
        return Ok(());
    }
    std::fs::create_dir_all(mount_point)
        .with_context(|| format!("creating {}", mount_point.display()))?;
    mount(
        Some("bpf"),
        mount_point,
        Some("bpf"),
        MsFlags::empty(),
        Some("mode=0700"),
    )
    .with_context(|| format!("mounting bpffs on {}", mount_point.display()))?;
    Ok(())
}
