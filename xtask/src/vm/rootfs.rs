//! The fresh machines of `cargo xtask vm-deploy`: a Debian 12 root made by
//! debootstrap (minbase plus what a cloud image has: systemd as init, sshd,
//! the cloud kernel and its initramfs-tools initrd), then the security
//! archive's updates applied, so it holds two kernels: the point release's
//! and the updated one. Cached under target/vm/deploy/ by a key naming its
//! contents; one ext4 disk image per guest made from a copy of it with that
//! guest's hostname, address and root's authorized key (`mkfs.ext4 -d`: no
//! loop mount).

use crate::tools::{self, say};
use anyhow::{bail, ensure, Context, Result};
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY: &str = "http://deb.debian.org/debian-security";
/// Beyond minbase: what an operator's Debian 12 VM has and the Deploy
/// section relies on (systemctl, journalctl, ip, sshd to reach it).
const INCLUDE: &[&str] = &[
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "iproute2",
    "kmod",
    "procps",
    "iputils-ping",
];
/// Debian's cloud images' kernel.
const KERNEL: &str = "linux-image-cloud-amd64";
/// Bumped when the root's making changes, so a cached one is made again.
const RECIPE: u32 = 4;

/// A kernel of the root, with its initrd.
pub struct Kernel {
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    /// `uname -r` of a guest booted on it.
    pub release: String,
}

/// A debootstrapped root and its kernels.
pub struct Rootfs {
    pub dir: PathBuf,
    /// The security archive's kernel, what an up-to-date node boots.
    pub updated: Kernel,
    /// The point release's kernel, what a node not yet rebooted into its
    /// updates runs (the updated one when the point release's is current).
    pub point_release: Kernel,
}

/// One guest's settings baked into its disk.
pub struct Node<'a> {
    pub hostname: &'a str,
    /// eth0's address with its prefix, e.g. 10.213.0.1/24.
    pub address: &'a str,
    pub authorized_key: &'a Path,
    /// Files put in /root (the package to install).
    pub files: &'a [&'a Path],
}

pub fn cache_dir() -> PathBuf {
    tools::workspace_root().join("target/vm/deploy")
}

/// The cached root, or a new one from debootstrap (about a minute with a
/// near mirror).
pub fn prepare() -> Result<Rootfs> {
    if !tools::is_root() {
        bail!("vm-deploy needs root (debootstrap, network namespaces, tap devices)");
    }
    tools::ensure_packages(&[("debootstrap", "debootstrap"), ("mkfs.ext4", "e2fsprogs")])?;
    let key = format!("{SUITE}-{RECIPE}-{}-{KERNEL}", INCLUDE.join(","));
    let dir = cache_dir().join(format!("rootfs-{SUITE}-{RECIPE}"));
    let stamp = dir.join(".hb-rootfs");
    if fs::read_to_string(&stamp).ok().as_deref() != Some(key.as_str()) {
        let partial = dir.with_extension("partial");
        let _ = fs::remove_dir_all(&partial);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(cache_dir())?;
        say(format!("debootstrap {SUITE} into {}", partial.display()));
        let log = cache_dir().join("debootstrap.log");
        let out = fs::File::create(&log)?;
        let status = Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={},{KERNEL}", INCLUDE.join(",")))
            .args([SUITE])
            .arg(&partial)
            .arg(MIRROR)
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()
            .context("cannot start debootstrap")?;
        if !status.success() {
            bail!("debootstrap failed ({status}); see {}", log.display());
        }
        security_updates(&partial, &log)?;
        fs::write(partial.join(".hb-rootfs"), &key)?;
        fs::rename(&partial, &dir)?;
    }
    // What a bootloader boots: the kernel packages' /vmlinuz and
    // /initrd.img links to the newest kernel, and their .old links to the
    // one before.
    let link = |name: &str| -> Result<PathBuf> {
        let target = fs::read_link(dir.join(name))
            .with_context(|| format!("the root has no /{name} link"))?;
        Ok(dir.join(target.strip_prefix("/").unwrap_or(&target)))
    };
    let kernel = |suffix: &str| -> Result<Kernel> {
        let vmlinuz = link(&format!("vmlinuz{suffix}"))?;
        let release = vmlinuz
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .context("a kernel not named vmlinuz-RELEASE")?
            .to_string();
        Ok(Kernel {
            initrd: link(&format!("initrd.img{suffix}"))?,
            vmlinuz,
            release,
        })
    };
    let updated = kernel("")?;
    let point_release = if dir.join("vmlinuz.old").exists() {
        kernel(".old")?
    } else {
        kernel("")?
    };
    Ok(Rootfs {
        updated,
        point_release,
        dir,
    })
}

/// The sources an installed Debian 12 has, and their updates applied:
/// debootstrap takes the point release alone. The kernel metapackage brings
/// the security archive's kernel beside the point release's.
fn security_updates(root: &Path, log: &Path) -> Result<()> {
    fs::write(
        root.join("etc/apt/sources.list"),
        format!(
            "deb {MIRROR} {SUITE} main\ndeb {MIRROR} {SUITE}-updates main\n\
             deb {SECURITY} {SUITE}-security main\n"
        ),
    )?;
    let apt = |args: &str| -> Result<()> {
        let out = fs::OpenOptions::new().append(true).open(log)?;
        // apt and the kernel's postinst want /proc; mounted in a mount
        // namespace of their own, it goes with them whatever happens.
        let status = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "chroot"])
            .arg(root)
            .args(["sh", "-c"])
            .arg(format!(
                "mount -t proc proc /proc && exec apt-get -y -q \
                 -o Dpkg::Options::=--force-confold {args}"
            ))
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()
            .context("cannot start chroot apt-get")?;
        ensure!(
            status.success(),
            "apt-get {args} in the root failed ({status}); see {}",
            log.display()
        );
        Ok(())
    };
    apt("update")?;
    apt("full-upgrade")?;
    // What apt downloaded is no part of a machine.
    apt("clean")
}

impl Rootfs {
    /// Writes `disk` (a sparse ext4 image of `size`) holding this root set up
    /// as `node`.
    pub fn disk(&self, node: &Node, disk: &Path, size: &str) -> Result<()> {
        let tree = disk.with_extension("tree");
        let _ = fs::remove_dir_all(&tree);
        tools::run(
            Command::new("cp").arg("-a").arg(&self.dir).arg(&tree),
            "cp -a of the root",
        )?;
        let made = (|| -> Result<()> {
            let w = |rel: &str, text: String| -> Result<()> {
                let p = tree.join(rel);
                fs::create_dir_all(p.parent().context("a path without parent")?)?;
                fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
            };
            w("etc/hostname", format!("{}\n", node.hostname))?;
            w(
                "etc/hosts",
                format!("127.0.0.1 localhost\n127.0.1.1 {}\n", node.hostname),
            )?;
            w(
                "etc/fstab",
                "/dev/vda / ext4 rw,errors=remount-ro 0 1\n".into(),
            )?;
            // A static address, as on a server: systemd-networkd, enabled.
            w(
                "etc/systemd/network/10-eth0.network",
                format!(
                    "[Match]\nName=eth0\n\n[Network]\nAddress={}\n",
                    node.address
                ),
            )?;
            tools::output(
                Command::new("systemctl")
                    .arg(format!("--root={}", tree.display()))
                    .args(["enable", "systemd-networkd"]),
                "systemctl --root enable systemd-networkd",
            )?;
            let ssh = tree.join("root/.ssh");
            fs::create_dir_all(&ssh)?;
            set_mode(&ssh, 0o700)?;
            fs::copy(node.authorized_key, ssh.join("authorized_keys"))?;
            set_mode(&ssh.join("authorized_keys"), 0o600)?;
            for f in node.files {
                let name = f.file_name().context("a file without a name")?;
                fs::copy(f, tree.join("root").join(name))
                    .with_context(|| format!("copying {}", f.display()))?;
            }
            let _ = fs::remove_file(disk);
            tools::output(
                Command::new("mkfs.ext4")
                    .args(["-q", "-F", "-d"])
                    .arg(&tree)
                    .arg(disk)
                    .arg(size),
                "mkfs.ext4 -d",
            )?;
            Ok(())
        })();
        let _ = fs::remove_dir_all(&tree);
        made.with_context(|| format!("making {}", disk.display()))
    }
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", p.display()))
}
