//! Throwaway network namespaces for one test: made with a per-test prefix,
//! deleted on drop (so also when the test panics).

use anyhow::{bail, Context, Result};
use std::{fs::File, os::fd::AsRawFd, path::PathBuf, process::Command};

/// Makes `cmd` enter network namespace `ns` between fork and exec, and
/// nothing else: the program shares the test's files and mounts (a node's
/// pins land in the test's bpffs). It also starts with no signal blocked: a
/// caller's thread that blocked signals must not pass its mask on, or the
/// program would not see SIGTERM.
pub fn enter_on_exec(cmd: &mut Command, ns: &str) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let netns =
        File::open(format!("/var/run/netns/{ns}")).with_context(|| format!("netns {ns}"))?;
    // SAFETY: setns, sigemptyset and sigprocmask are async-signal-safe. The
    // descriptor moves into the closure and lives as long as `cmd`.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    Ok(())
}

/// "02:00:00:00:00:01".
pub fn mac_str(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// Runs a command, failing with its full command line and stderr.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Prefixes of the labs alive in this process, for [`remove_live_labs`].
static LIVE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Deletes the namespaces, bpffs mounts and scratch directories of every lab
/// this process has not dropped yet: for a signal, when destructors will not
/// run (see `cluster::clean_up_on_signals`).
pub fn remove_live_labs() {
    let live: Vec<String> = LIVE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let list = sh(&["ip", "netns", "list"]).unwrap_or_default();
    for prefix in live {
        for ns in list
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&format!("{prefix}-")))
        {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        let scratch = std::env::temp_dir().join(&prefix);
        let _ = nix::mount::umount2(&scratch.join("bpffs"), nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&scratch);
    }
}

/// The iptables match of hb's heartbeats (the default port): what the
/// firewall of the incident drops.
pub const HEARTBEAT_PORT: &[&str] = &["-p", "udp", "--dport", "694"];

/// Adds (`on`) or deletes the rule `iptables <chain> <matching> -j DROP`.
pub fn firewall_rule(on: bool, chain: &str, matching: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["iptables".into(), if on { "-A" } else { "-D" }.into()];
    a.push(chain.into());
    a.extend(matching.iter().map(|s| s.to_string()));
    a.extend(["-j".into(), "DROP".into()]);
    a
}

/// A set of namespaces named `<prefix>-<name>`, and a scratch directory; all
/// removed on drop.
pub struct Lab {
    pub prefix: String,
    namespaces: Vec<String>,
    pub scratch: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Lab {
    /// `tag` names the test; the pid keeps parallel runs apart.
    pub fn new(tag: &str) -> Result<Self> {
        let prefix = Self::prefix_for(tag);
        let scratch = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)?;
        crate::cluster::clean_up_on_signals(|| {});
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(prefix.clone());
        Ok(Self {
            prefix,
            namespaces: Vec::new(),
            scratch,
            mounts: Vec::new(),
        })
    }

    /// The name prefix a lab with `tag` gets in this process.
    pub fn prefix_for(tag: &str) -> String {
        format!("hbt{}-{}", tag, std::process::id())
    }

    /// Creates namespace `<prefix>-<name>` with its loopback up; returns its name.
    pub fn netns(&mut self, name: &str) -> Result<String> {
        let ns = format!("{}-{name}", self.prefix);
        let _ = sh(&["ip", "netns", "del", &ns]);
        sh(&["ip", "netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        self.exec(&ns, &["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs a command inside namespace `ns`.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// A veth pair `a` in `ns_a` and `b` in `ns_b`, with addresses, up.
    pub fn veth(
        &self,
        ns_a: &str,
        a: &str,
        addr_a: &str,
        ns_b: &str,
        b: &str,
        addr_b: &str,
    ) -> Result<()> {
        sh(&[
            "ip", "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b,
        ])?;
        self.exec(ns_a, &["ip", "addr", "add", addr_a, "dev", a])?;
        self.exec(ns_b, &["ip", "addr", "add", addr_b, "dev", b])?;
        self.exec(ns_a, &["ip", "link", "set", a, "up"])?;
        self.exec(ns_b, &["ip", "link", "set", b, "up"])?;
        Ok(())
    }

    /// A bpffs mounted in the scratch directory (unmounted on drop): its `hb`
    /// subdirectory is a pin root no other test or daemon shares.
    pub fn pin_root(&mut self) -> PathBuf {
        let mount_point = self.scratch.join("bpffs");
        std::fs::create_dir_all(&mount_point).expect("creating the bpffs mount point");
        nix::mount::mount(
            Some("bpf"),
            &mount_point,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mounting a bpffs for the test's pins");
        self.mounts.push(mount_point.clone());
        mount_point.join("hb")
    }

    /// Unmounts `mount_point` (detached) when the lab is dropped.
    pub fn track_mount(&mut self, mount_point: PathBuf) {
        self.mounts.push(mount_point);
    }

    /// The MAC address of `dev` in `ns`.
    pub fn mac(&self, ns: &str, dev: &str) -> Result<[u8; 6]> {
        let out = self.exec(ns, &["cat", &format!("/sys/class/net/{dev}/address")])?;
        let mut mac = [0u8; 6];
        for (m, part) in mac.iter_mut().zip(out.trim().split(':')) {
            *m = u8::from_str_radix(part, 16)?;
        }
        Ok(mac)
    }

    /// The ifindex of `dev` in `ns`.
    pub fn ifindex(&self, ns: &str, dev: &str) -> Result<u32> {
        Ok(self
            .exec(ns, &["cat", &format!("/sys/class/net/{dev}/ifindex")])?
            .trim()
            .parse()?)
    }

    /// Sends raw Ethernet frames out of `dev` in `ns` (an AF_PACKET socket), e.g. a
    /// forged gratuitous ARP.
    pub fn send_frames(&self, ns: &str, dev: &str, frames: &[&[u8]]) -> Result<()> {
        let dev = std::ffi::CString::new(dev)?;
        self.in_netns(ns, || -> Result<()> {
            // SAFETY: plain libc calls on a socket we own for the scope of this closure.
            unsafe {
                let ifindex = libc::if_nametoindex(dev.as_ptr());
                anyhow::ensure!(ifindex != 0, "no such interface");
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
                anyhow::ensure!(
                    fd >= 0,
                    "AF_PACKET socket: {}",
                    std::io::Error::last_os_error()
                );
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_ifindex = ifindex as i32;
                sll.sll_halen = 6;
                let mut result = Ok(());
                for f in frames {
                    sll.sll_addr[..6].copy_from_slice(&f[..6]);
                    let n = libc::sendto(
                        fd,
                        f.as_ptr().cast(),
                        f.len(),
                        0,
                        (&sll as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    );
                    if n < 0 {
                        result = Err(anyhow::anyhow!(
                            "sendto: {}",
                            std::io::Error::last_os_error()
                        ));
                    }
                }
                libc::close(fd);
                result
            }
        })?
    }

    /// The first frame seen on `dev` in `ns` (either direction) for which `want`
    /// holds, within `timeout`: an AF_PACKET capture, opened at once, so call it
    /// on a thread before causing the frame.
    pub fn capture(
        &self,
        ns: &str,
        dev: &str,
        timeout: std::time::Duration,
        want: impl Fn(&[u8]) -> bool + Send + Sync,
    ) -> Result<Option<Vec<u8>>> {
        let dev = std::ffi::CString::new(dev)?;
        self.in_netns(ns, || -> Result<Option<Vec<u8>>> {
            let deadline = std::time::Instant::now() + timeout;
            let fd = all_frames_socket(dev.to_str()?, false)?;
            // SAFETY: plain libc calls on a socket we own for the scope of this closure.
            unsafe {
                let tick = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 20_000,
                };
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tick as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                );
                let mut buf = vec![0u8; 2048];
                while std::time::Instant::now() < deadline {
                    let n = libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0);
                    if n > 0 && want(&buf[..n as usize]) {
                        return Ok(Some(buf[..n as usize].to_vec()));
                    }
                }
                Ok(None)
            }
        })?
    }

    /// The firewall of the incident in `ns`: hb's heartbeat port dropped by
    /// iptables in `chain` ("INPUT", "OUTPUT") while `on`, the rule deleted
    /// otherwise. `matching` other than [`HEARTBEAT_PORT`] drops another
    /// protocol's (VRRP: `-p 112`).
    pub fn firewall(&self, ns: &str, on: bool, chain: &str, matching: &[&str]) -> Result<()> {
        let rule = firewall_rule(on, chain, matching);
        let args: Vec<&str> = rule.iter().map(String::as_str).collect();
        self.exec(ns, &args).map(|_| ())
    }

    /// Packets the first DROP rule of `chain` in `ns` dropped (iptables'
    /// own counter).
    pub fn firewall_dropped(&self, ns: &str, chain: &str) -> Result<u64> {
        let listing = self.exec(ns, &["iptables", "-L", chain, "-v", "-x", "-n"])?;
        let rule = listing
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some("DROP"))
            .with_context(|| format!("no DROP rule in {chain}: {listing}"))?;
        Ok(rule.split_whitespace().next().unwrap_or_default().parse()?)
    }

    /// Sets `dev` in `ns` up or down (SIOCSIFFLAGS from a thread in the
    /// namespace, so that the instant returned, just before the change, is not
    /// skewed by starting a process).
    pub fn set_link(&self, ns: &str, dev: &str, up: bool) -> Result<std::time::Instant> {
        self.in_netns(ns, || set_iface_up(dev, up))?
    }

    /// Runs `f` on a thread that has entered namespace `ns` (network namespace only:
    /// mounts and files stay the test's own).
    pub fn in_netns<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = File::open(format!("/var/run/netns/{ns}"))
            .with_context(|| format!("opening netns {ns}"))?;
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
        })
    }
}

/// A packet socket bound to `dev` in the calling thread's namespace that sees
/// every frame, either direction. ETH_P_ALL, not a protocol: on a bridge port
/// the bridge takes a frame before protocol-bound sockets would see it.
pub fn all_frames_socket(dev: &str, nonblock: bool) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let name = std::ffi::CString::new(dev)?;
    let all = (libc::ETH_P_ALL as u16).to_be();
    let flags = libc::SOCK_RAW | if nonblock { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: if_nametoindex reads a C string; the socket is owned at once;
    // sockaddr_ll is zeroed, then filled.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        anyhow::ensure!(ifindex != 0, "no interface {dev}");
        let fd = libc::socket(libc::AF_PACKET, flags, i32::from(all));
        anyhow::ensure!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = all;
        sll.sll_ifindex = ifindex as i32;
        let bound = libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        anyhow::ensure!(
            bound == 0,
            "binding to {dev}: {}",
            std::io::Error::last_os_error()
        );
        Ok(fd)
    }
}

/// SIOCGIFFLAGS / SIOCSIFFLAGS on `dev` in the calling thread's namespace.
fn set_iface_up(dev: &str, up: bool) -> Result<std::time::Instant> {
    // SAFETY: ioctl on a socket we own with an ifreq we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(dev.bytes()) {
            *d = s as libc::c_char;
        }
        let result = (|| {
            if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) < 0 {
                bail!("SIOCGIFFLAGS {dev}: {}", std::io::Error::last_os_error());
            }
            let flags = ifr.ifr_ifru.ifru_flags;
            let up_flag = libc::IFF_UP as libc::c_short;
            ifr.ifr_ifru.ifru_flags = if up {
                flags | up_flag
            } else {
                flags & !up_flag
            };
            let at = std::time::Instant::now();
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) < 0 {
                bail!("SIOCSIFFLAGS {dev}: {}", std::io::Error::last_os_error());
            }
            Ok(at)
        })();
        libc::close(fd);
        result
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            let _ = sh(&["ip", "netns", "del", &ns]);
        }
        for m in self.mounts.drain(..) {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| *p != self.prefix);
    }
}
