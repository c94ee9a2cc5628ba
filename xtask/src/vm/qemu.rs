//! Boots one kernel under qemu with the host's root shared read-only through
//! virtiofs, streams the serial console, and reads the guest's verdict from the
//! isa-debug-exit device.

use anyhow::{bail, Context, Result};
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// qemu's build of virtiofsd (Debian's qemu-system-common ships it).
pub const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";
/// Guest RAM; the virtiofs memory backend must be the same size.
const MEM_MIB: u32 = 2048;

/// How a boot ended.
pub enum Verdict {
    /// Every step passed.
    Pass,
    /// The init reported failed steps (or could not set up the guest).
    Fail,
    /// No verdict: the guest crashed, panicked or ran out of time.
    Missing(String),
}

/// What one boot printed and how it ended.
pub struct Boot {
    pub verdict: Verdict,
    /// The guest init's `hb-vm: step ...` lines.
    pub steps: Vec<String>,
    pub elapsed: Duration,
}

/// Kills a child we started when dropped (also on error paths).
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether KVM can run a guest here. On these machines /dev/kvm exists but
/// qemu's KVM setup fails (an MSR write is refused), so only a real try tells.
fn kvm_works() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(try_kvm)
}

fn try_kvm() -> bool {
    std::fs::metadata("/dev/kvm").is_ok()
        && Command::new("qemu-system-x86_64")
            .args(["-accel", "kvm", "-cpu", "host", "-machine", "none"])
            .args(["-nodefaults", "-display", "none", "-S", "-monitor", "none"])
            .arg("-no-user-config")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut c| {
                // A working KVM idles at -S; a broken one exits at once.
                std::thread::sleep(Duration::from_millis(500));
                let alive = c.try_wait()?.is_none();
                let _ = c.kill();
                let _ = c.wait();
                Ok(alive)
            })
            .unwrap_or(false)
}

/// qemu's accelerator arguments: KVM where it works, else TCG.
pub fn accel_args() -> Vec<&'static str> {
    if kvm_works() {
        vec!["-accel", "kvm", "-cpu", "host"]
    } else {
        vec!["-accel", "tcg,thread=multi", "-cpu", "max"]
    }
}

/// What [`accel_args`] chose, for the log.
pub fn accel_name() -> &'static str {
    if kvm_works() {
        "KVM"
    } else {
        "KVM does not work here, emulating (TCG)"
    }
}

/// Boots `vmlinuz` with `initramfs`, printing the console prefixed with `label`
/// and keeping it in `log`; gives up after `timeout`.
pub fn boot(
    label: &str,
    vmlinuz: &Path,
    initramfs: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<Boot> {
    let run_dir = log.parent().context("log has no parent")?.to_path_buf();
    let sock: PathBuf = run_dir.join("virtiofs.sock");
    let _ = std::fs::remove_file(&sock);
    let vfsd = Reaped(
        Command::new(VIRTIOFSD)
            .arg(format!("--socket-path={}", sock.display()))
            .args(["-o", "source=/", "-o", "cache=auto", "-o", "sandbox=chroot"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {VIRTIOFSD}"))?,
    );
    let t0 = Instant::now();
    while !sock.exists() {
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("virtiofsd made no socket at {} within 10 s", sock.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    crate::tools::say(format!("{label}: {}", accel_name()));
    let accel = accel_args();
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(&accel)
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-m", &MEM_MIB.to_string(), "-smp", "2", "-serial", "stdio"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet mitigations=off",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-chardev",
        ])
        .arg(format!("socket,id=vfs,path={}", sock.display()))
        .args(["-device", "vhost-user-fs-pci,chardev=vfs,tag=hostroot"])
        .args([
            "-object",
            &format!("memory-backend-memfd,id=mem,size={MEM_MIB}M,share=on"),
            "-numa",
            "node,memdev=mem",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut qemu = Reaped(cmd.spawn().context("starting qemu-system-x86_64")?);
    let stdout = qemu.0.stdout.take().context("qemu stdout")?;

    // A watchdog ends a guest that hangs; the console reader then sees EOF.
    let pid = qemu.0.id();
    let done = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    {
        let (done, timed_out) = (done.clone(), timed_out.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            while !done.load(Ordering::Relaxed) {
                if t.elapsed() > timeout {
                    timed_out.store(true, Ordering::Relaxed);
                    // SAFETY: signalling the qemu we started, by its PID.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    }

    let mut logf = std::fs::File::create(log)?;
    let mut steps = Vec::new();
    for line in BufReader::new(stdout).split(b'\n') {
        let line = String::from_utf8_lossy(&line?).trim_end().to_string();
        // Escape sequences the firmware prints are noise in a log.
        let line: String = line
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect();
        writeln!(logf, "{line}")?;
        println!("[{label}] {line}");
        if line.starts_with("hb-vm: ") {
            steps.push(line);
        }
    }
    let status = qemu.0.wait()?;
    done.store(true, Ordering::Relaxed);
    drop(vfsd);
    let verdict = match status.code() {
        // isa-debug-exit: qemu exits with (code << 1) | 1.
        Some(1) => Verdict::Pass,
        Some(3) | Some(5) => Verdict::Fail,
        _ if timed_out.load(Ordering::Relaxed) => {
            Verdict::Missing(format!("no verdict within {} s", timeout.as_secs()))
        }
        _ => Verdict::Missing(format!(
            "the guest ended without a verdict (qemu {status}); see {}",
            log.display()
        )),
    };
    Ok(Boot {
        verdict,
        steps,
        elapsed: t0.elapsed(),
    })
}
