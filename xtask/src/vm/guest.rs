//! The machines of `cargo xtask vm-deploy` and their network: a namespace
//! holding a bridge, one tap per guest and the operator's client address;
//! qemu guests booted from their own disks on their own kernel and initrd;
//! commands on them over ssh, as an operator runs them. Everything is
//! removed on drop, also when a step failed: only the processes started here
//! are killed, by their PIDs.

use super::qemu::Reaped;
use crate::tools;
use anyhow::{bail, Context, Result};
use std::{
    io::Write,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The guests' LAN; the client (the namespace itself) is .100.
pub const SUBNET: &str = "10.213.0";
pub const CLIENT: &str = "10.213.0.100";
pub const BRIDGE: &str = "br0";
const GUEST_MIB: u32 = 768;

/// A network namespace with the bridge the guests' taps are on.
pub struct Net {
    pub ns: String,
}

fn ip(args: &[&str]) -> Result<()> {
    tools::output(
        Command::new("ip").args(args),
        &format!("ip {}", args.join(" ")),
    )
    .map(|_| ())
}

impl Net {
    /// `hbdep<pid>` with a bridge, `taps` taps on it and the client address.
    pub fn new(taps: usize) -> Result<Net> {
        let net = Net {
            ns: format!("hbdep{}", std::process::id()),
        };
        let ns = net.ns.as_str();
        ip(&["netns", "add", ns])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "link", "add", BRIDGE, "type", "bridge"])?;
        for t in 1..=taps {
            let tap = format!("tap{t}");
            ip(&["-n", ns, "tuntap", "add", "dev", &tap, "mode", "tap"])?;
            ip(&["-n", ns, "link", "set", &tap, "master", BRIDGE, "up"])?;
        }
        ip(&["-n", ns, "link", "set", BRIDGE, "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{CLIENT}/24"),
            "dev",
            BRIDGE,
        ])?;
        Ok(net)
    }

    /// `cmd` run inside the namespace.
    pub fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // The taps go with the namespace.
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

/// One booted guest.
pub struct Guest {
    pub name: String,
    pub addr: String,
    pub mac: String,
    /// This boot's serial console.
    pub console: PathBuf,
    key: PathBuf,
    control: PathBuf,
    ns: String,
    run_dir: PathBuf,
    /// qemu's command line but the console, to boot again after a power cut.
    qemu_args: Vec<std::ffi::OsString>,
    boots: u32,
    started: Instant,
    // Dropped in this order: the ssh master before the machine.
    master: Option<Reaped>,
    qemu: Option<Reaped>,
}

/// What boots a guest.
pub struct Boot<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub disk: &'a Path,
    /// 1-based: tap N, address .N, MAC ...:0N.
    pub index: u8,
    pub run_dir: &'a Path,
    pub ssh_key: &'a Path,
    pub accel: &'a [&'a str],
}

impl Guest {
    /// Starts qemu on `boot.disk` in `net`'s namespace; [`Guest::wait_ssh`]
    /// waits for it.
    pub fn start(net: &Net, name: &str, boot: &Boot) -> Result<Guest> {
        let i = boot.index;
        let mac = format!("52:54:00:d3:00:{i:02x}");
        let mut cmd = net.exec("qemu-system-x86_64");
        cmd.args(boot.accel)
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-no-reboot", "-monitor", "none"])
            .args(["-m", &GUEST_MIB.to_string(), "-smp", "1"])
            .arg("-kernel")
            .arg(boot.kernel)
            .arg("-initrd")
            .arg(boot.initrd)
            .args([
                "-append",
                "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1",
            ])
            // cache=unsafe: a guest's flushes need not reach the host's disk,
            // which outlives it anyway.
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio,cache=unsafe",
                boot.disk.display()
            ))
            .args([
                "-netdev",
                &format!("tap,id=n0,ifname=tap{i},script=no,downscript=no"),
            ])
            .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={mac}")]);
        let mut g = Guest {
            name: name.to_string(),
            addr: format!("{SUBNET}.{i}"),
            mac,
            console: PathBuf::new(),
            key: boot.ssh_key.to_path_buf(),
            control: boot.run_dir.join(format!("{name}.ssh")),
            ns: net.ns.clone(),
            run_dir: boot.run_dir.to_path_buf(),
            qemu_args: cmd.get_args().map(|a| a.to_os_string()).collect(),
            boots: 0,
            started: Instant::now(),
            master: None,
            qemu: None,
        };
        g.power_on()?;
        Ok(g)
    }

    /// Boots the machine (again), its console in a file of this boot's own.
    pub fn power_on(&mut self) -> Result<()> {
        self.boots += 1;
        self.console = self.run_dir.join(match self.boots {
            1 => format!("{}-console.log", self.name),
            n => format!("{}-console-boot{n}.log", self.name),
        });
        let mut cmd = Command::new("ip");
        // A guest must not outlive a killed xtask, burning both CPUs: the
        // kernel kills qemu when the thread that started it ends (the flag
        // survives `ip netns exec`'s exec). Guests start on the main thread.
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let qemu = cmd
            .args(&self.qemu_args)
            .arg("-serial")
            .arg(format!("file:{}", self.console.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting qemu-system-x86_64")?;
        self.started = Instant::now();
        self.qemu = Some(Reaped(qemu));
        Ok(())
    }

    fn ssh_cmd(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, "ssh", "-i"])
            .arg(&self.key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"])
            .args(["-o", "ConnectTimeout=5", "-o", "ServerAliveInterval=5"])
            .arg("-o")
            .arg(format!("ControlPath={}", self.control.display()));
        c
    }

    /// Waits (bounded) until sshd answers, then keeps one connection open
    /// that every later command rides on: under emulation a key exchange
    /// costs about a second. Returns the time since qemu started.
    pub fn wait_ssh(&mut self, within: Duration) -> Result<Duration> {
        let t0 = self.started;
        for attempt in 0.. {
            if let Some(q) = self.qemu.as_mut() {
                if let Some(status) = q.0.try_wait()? {
                    bail!(
                        "{}: qemu ended before sshd answered ({status}); console: {}\n{}",
                        self.name,
                        self.console.display(),
                        tail(&self.console, 30)
                    );
                }
            }
            let ok = self
                .ssh_cmd()
                .args([
                    "-o",
                    "ControlMaster=no",
                    &format!("root@{}", self.addr),
                    "true",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            if t0.elapsed() > within || attempt > 1000 {
                bail!(
                    "{}: sshd did not answer within {} s: the guest did not boot; console: {}\n{}",
                    self.name,
                    within.as_secs(),
                    self.console.display(),
                    tail(&self.console, 30)
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        let up = t0.elapsed();
        let _ = std::fs::remove_file(&self.control);
        let master = self
            .ssh_cmd()
            .args(["-M", "-N", &format!("root@{}", self.addr)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the ssh master connection")?;
        self.master = Some(Reaped(master));
        for _ in 0..100 {
            if self.control.exists() {
                return Ok(up);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("{}: the ssh master made no control socket", self.name)
    }

    /// Runs `script` with sh on the guest, `input` on its stdin.
    pub fn run(&self, script: &str, input: Option<&[u8]>) -> Result<Output> {
        let mut c = self.ssh_cmd();
        c.args([
            "-o",
            "ControlMaster=no",
            &format!("root@{}", self.addr),
            script,
        ])
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().context("starting ssh")?;
        if let Some(bytes) = input {
            child.stdin.take().context("ssh stdin")?.write_all(bytes)?;
        }
        Ok(child.wait_with_output()?)
    }

    /// `script` must exit 0: its stdout.
    pub fn sh(&self, script: &str) -> Result<String> {
        self.sh_in(script, None)
    }

    pub fn sh_in(&self, script: &str, input: Option<&[u8]>) -> Result<String> {
        let out = self.run(script, input)?;
        if !out.status.success() {
            bail!(
                "{}: `{script}` failed ({}):\n{}{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Pulls the plug: qemu killed, no shutdown in the guest.
    pub fn power_off(&mut self) {
        self.master = None;
        self.qemu = None;
    }
}

/// The last `n` lines of a file.
pub fn tail(p: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
