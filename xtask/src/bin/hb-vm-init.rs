//! PID 1 of the virtual machines `cargo xtask vm-test` boots (see xtask/src/vm/).
//!
//! The initramfs holds this program, the test binaries, the modules the kernel
//! needs to reach the host, and `/hb/plan`. It loads those modules, mounts the
//! host's root (virtiofs, read-only) under a tmpfs overlay so the tests find
//! `ip`, `nft`, `iptables` and the rest exactly as on the host while every write
//! stays in the guest, switches into it, runs each step of the plan and reports
//! the outcome to qemu through the isa-debug-exit port.

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn main() {
    eprintln!("hb-vm-init runs as PID 1 of an x86_64 Linux guest only");
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn main() {
    let code = match guest::run() {
        Ok(failed) => u8::from(failed > 0),
        Err(e) => {
            println!("hb-vm: init failed: {e:#}");
            2
        }
    };
    guest::power_off(code)
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod guest {
    use anyhow::{bail, Context, Result};
    use nix::{
        kmod::{finit_module, ModuleInitFlags},
        mount::{mount, MsFlags},
    };
    use std::{
        ffi::CString,
        fs::{self, File, OpenOptions},
        process::Command,
        time::Instant,
    };

    /// What the host put in `/hb/plan`, one directive per line, fields split by tabs.
    #[derive(Default)]
    struct Plan {
        /// Module files inside the initramfs, in load order.
        modules: Vec<String>,
        /// The unpacked kernel package's `lib/modules/<release>` on the host:
        /// bound over `/lib/modules/<release>` so the kernel's modprobe finds the
        /// guest kernel's modules (veth, bridge, nf_tables, ...) on demand.
        modules_dir: Option<String>,
        cwd: Option<String>,
        env: Vec<(String, String)>,
        /// (name, argv)
        steps: Vec<(String, Vec<String>)>,
    }

    fn read_plan() -> Result<Plan> {
        let text = fs::read_to_string("/hb/plan").context("reading /hb/plan")?;
        let mut plan = Plan::default();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let mut f = line.split('\t');
            match (f.next(), f.next()) {
                (Some("module"), Some(p)) => plan.modules.push(p.into()),
                (Some("modules_dir"), Some(p)) => plan.modules_dir = Some(p.into()),
                (Some("cwd"), Some(p)) => plan.cwd = Some(p.into()),
                (Some("env"), Some(kv)) => {
                    let (k, v) = kv.split_once('=').context("env without =")?;
                    plan.env.push((k.into(), v.into()));
                }
                (Some("step"), Some(name)) => plan
                    .steps
                    .push((name.into(), f.map(String::from).collect())),
                _ => bail!("bad plan line {line:?}"),
            }
        }
        Ok(plan)
    }

    fn mnt(
        src: &str,
        target: &str,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        fs::create_dir_all(target).ok();
        mount(Some(src), target, Some(fstype), flags, data)
            .with_context(|| format!("mounting {fstype} on {target}"))
    }

    fn bind(src: &str, target: &str) -> Result<()> {
        fs::create_dir_all(target).ok();
        mount(
            Some(src),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("binding {src} on {target}"))
    }

    fn load_module(path: &str) -> Result<()> {
        let f = File::open(path).with_context(|| format!("opening {path}"))?;
        // MODULE_INIT_COMPRESSED_FILE (5.17+): Debian compresses 6.12's modules
        // with xz and the kernel decompresses them itself.
        let flags = if path.ends_with(".xz") || path.ends_with(".zst") {
            ModuleInitFlags::from_bits_retain(4)
        } else {
            ModuleInitFlags::empty()
        };
        match finit_module(&f, &CString::default(), flags) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => bail!("loading {path}: {e}"),
        }
    }

    /// Runs the plan; returns how many steps failed.
    pub fn run() -> Result<usize> {
        mnt("devtmpfs", "/dev", "devtmpfs", MsFlags::empty(), None)?;
        // The kernel gave PID 1 no console (the initramfs has no /dev/console).
        let console = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")?;
        nix::unistd::dup2_stdin(&console)?;
        nix::unistd::dup2_stdout(&console)?;
        nix::unistd::dup2_stderr(&console)?;
        mnt("proc", "/proc", "proc", MsFlags::empty(), None)?;
        mnt("sysfs", "/sys", "sysfs", MsFlags::empty(), None)?;
        let plan = read_plan()?;
        for m in &plan.modules {
            load_module(m)?;
        }

        // The host's root, read-only, under a writable overlay kept in guest RAM.
        mnt("hostroot", "/lower", "virtiofs", MsFlags::MS_RDONLY, None)?;
        mnt("tmpfs", "/rw", "tmpfs", MsFlags::empty(), Some("mode=0755"))?;
        fs::create_dir_all("/rw/upper")?;
        fs::create_dir_all("/rw/work")?;
        mnt(
            "overlay",
            "/newroot",
            "overlay",
            MsFlags::empty(),
            Some("lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work"),
        )?;
        mnt("proc", "/newroot/proc", "proc", MsFlags::empty(), None)?;
        mnt("sysfs", "/newroot/sys", "sysfs", MsFlags::empty(), None)?;
        mnt(
            "devtmpfs",
            "/newroot/dev",
            "devtmpfs",
            MsFlags::empty(),
            None,
        )?;
        mnt(
            "devpts",
            "/newroot/dev/pts",
            "devpts",
            MsFlags::empty(),
            None,
        )?;
        mnt("tmpfs", "/newroot/dev/shm", "tmpfs", MsFlags::empty(), None)?;
        mnt(
            "tmpfs",
            "/newroot/tmp",
            "tmpfs",
            MsFlags::empty(),
            Some("mode=1777"),
        )?;
        mnt(
            "tmpfs",
            "/newroot/run",
            "tmpfs",
            MsFlags::empty(),
            Some("mode=0755"),
        )?;
        if let Some(dir) = &plan.modules_dir {
            let release = nix::sys::utsname::uname()?;
            let release = release.release().to_string_lossy().into_owned();
            bind(
                &format!("/newroot{dir}"),
                &format!("/newroot/lib/modules/{release}"),
            )?;
        }
        bind("/hb", "/newroot/hb")?;

        // switch_root: the initramfs cannot be pivoted away, so move the new root
        // over it and chroot into it.
        std::env::set_current_dir("/newroot")?;
        mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
            .context("moving the new root")?;
        nix::unistd::chroot(".")?;
        std::env::set_current_dir("/")?;

        std::env::set_var(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        std::env::set_var("HOME", "/root");
        for (k, v) in &plan.env {
            std::env::set_var(k, v);
        }
        if let Some(cwd) = &plan.cwd {
            std::env::set_current_dir(cwd).with_context(|| format!("cd {cwd}"))?;
        }

        let mut failed = 0;
        for (name, argv) in &plan.steps {
            println!("hb-vm: step {name}: {}", argv.join(" "));
            let t = Instant::now();
            let status = Command::new(&argv[0]).args(&argv[1..]).status();
            let secs = t.elapsed().as_secs_f64();
            match status {
                Ok(s) if s.success() => println!("hb-vm: step {name}: ok ({secs:.1} s)"),
                Ok(s) => {
                    failed += 1;
                    println!("hb-vm: step {name}: FAILED ({s}, {secs:.1} s)");
                }
                Err(e) => {
                    failed += 1;
                    println!("hb-vm: step {name}: FAILED (cannot start: {e})");
                }
            }
        }
        Ok(failed)
    }

    /// Tells qemu the outcome through isa-debug-exit (qemu exits with
    /// `code * 2 + 1`), then powers off in case the device is missing.
    pub fn power_off(code: u8) -> ! {
        nix::unistd::sync();
        // SAFETY: PID 1 of a throwaway guest; port 0xf4 is qemu's isa-debug-exit.
        unsafe {
            if libc::ioperm(0xf4, 4, 1) == 0 {
                core::arch::asm!("out dx, al", in("dx") 0xf4u16, in("al") code);
            }
        }
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
        loop {
            std::thread::park();
        }
    }
}
