//! `hb-user cleanup`: after a crash, the XDP program stays attached (the kernel
//! keeps it on the interface) and the VIPs stay configured, so that a restart can take over without a
//! gap. When no restart is coming, this removes all of it.

use crate::{loader::DataPlane, netlink::Netlink, status::StatusFile};
use anyhow::{bail, Result};
use std::path::Path;

pub async fn run(ifaces: &[String], state_dir: &Path, pin_root: &Path) -> Result<()> {
    let status_path = state_dir.join(crate::status::STATUS_FILE);
    let status: Option<StatusFile> = std::fs::read(&status_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(s) = &status {
        if Path::new(&format!("/proc/{}", s.pid)).exists() && s.pid != std::process::id() {
            bail!(
                "hb-user (pid {}) is still running: stop it (SIGTERM cleans up) instead",
                s.pid
            );
        }
    }
    let nl = Netlink::connect()?;
    for iface in ifaces {
        if DataPlane::cleanup(pin_root, iface)? {
            println!("{iface}: detached hb's XDP program and removed its pins");
        } else {
            println!("{iface}: nothing of hb's attached or pinned");
        }
        // The VIPs the crashed controller listed for this interface.
        let vips = status.iter().flat_map(|s| s.vips.iter());
        for v in vips.filter(|v| &v.iface == iface) {
            let Some(link) = nl.link(&v.iface).await? else {
                continue;
            };
            if nl.del_ip(link.ifindex, v.vip.addr, v.vip.prefix).await? {
                println!("{iface}: removed VIP {}", v.vip);
            }
        }
    }
    if status.is_some() {
        let _ = std::fs::remove_file(&status_path);
    }
    Ok(())
}
