//! Finding and installing the tools the tasks need.

use anyhow::{bail, Context, Result};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

/// The cargo that runs us, so host builds use the same toolchain.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Prints what is about to happen, in the same style for every step.
pub fn say(msg: impl AsRef<str>) {
    eprintln!("xtask: {}", msg.as_ref());
}

/// Runs a command, failing with its name when it fails.
pub fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Runs a command and returns its stdout.
pub fn output(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .chain(["/usr/sbin".into(), "/sbin".into()])
                .any(|d| d.join(program).is_file())
        })
        .unwrap_or(false)
}

/// Debian packages the tests, the lab and the benchmark use: installed when
/// missing (root only).
pub fn ensure_system_packages() -> Result<()> {
    ensure_packages(&[
        ("bpftool", "bpftool"),
        ("iptables", "iptables"),
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("tcpdump", "tcpdump"),
        // The benchmark counts syscalls per heartbeat.
        ("strace", "strace"),
        // The benchmark's baseline (cargo xtask bench and its test).
        ("keepalived", "keepalived"),
        // Linux-HA heartbeat (v1, UDP 694) for the coexistence test; its
        // IPaddr resource adds the VIP with ifconfig.
        ("/usr/libexec/heartbeat/heartbeat", "heartbeat"),
        ("ifconfig", "net-tools"),
        // The package test reads the man pages and loads each completion
        // script in its shell.
        ("man", "man-db"),
        ("zsh", "zsh"),
        ("fish", "fish"),
        // The metrics test checks a scrape with Prometheus's promtool; the
        // systemd tests run hb-user under setpriv and unshare, and verify
        // the unit.
        ("promtool", "prometheus"),
        ("setpriv", "util-linux"),
        ("systemd-analyze", "systemd"),
        // vm-deploy: the guests' Debian root, and the operator's ssh to them.
        ("debootstrap", "debootstrap"),
        ("ssh", "openssh-client"),
        ("mkfs.ext4", "e2fsprogs"),
        // The etcd witness's tests run a real etcd; etcd-client's build
        // compiles its protos with protoc and the well-known types.
        ("etcd", "etcd-server"),
        ("etcdctl", "etcd-client"),
        ("protoc", "protobuf-compiler"),
        (
            "/usr/include/google/protobuf/descriptor.proto",
            "libprotobuf-dev",
        ),
    ])
}

/// Installs the Debian package of each (program, package) whose program is
/// missing (a program given as an absolute path is looked for there).
pub fn ensure_packages(wanted: &[(&str, &str)]) -> Result<()> {
    let mut missing: Vec<&str> = wanted
        .iter()
        .filter(|(bin, _)| {
            if bin.starts_with('/') {
                !Path::new(bin).is_file()
            } else {
                !have(bin)
            }
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("missing packages {missing:?}; run as root so that xtask can apt-get install them");
    }
    say(format!("installing {}", missing.join(" ")));
    run(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update",
    )?;
    run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
    )
}
