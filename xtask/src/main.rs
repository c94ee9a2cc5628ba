//! Developer tasks: `cargo xtask <task>`. Each task sets up what it needs itself,
//! so that a fresh machine needs no manual step.

mod build_ebpf;
mod deb;
mod suite;
mod tools;
mod vm;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "hb developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the XDP object (installs rust-src and bpf-linker when missing).
    BuildEbpf,
    /// Build the Debian package (target/debian/hb-user_*.deb): hb-user in
    /// /usr/sbin, the unit (not enabled), /etc/hb/hb.toml, man pages and
    /// completions (installs cargo-deb when missing).
    Deb,
    /// Build everything and run every test (needs root: XDP, namespaces, iptables),
    /// then `vm-test --kernel all`.
    Test {
        /// Extra arguments for `cargo test`, e.g. a test name filter.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// A local cluster in network namespaces: a failover and the firewall incident (root).
    Lab {
        /// Number of hb nodes.
        #[arg(long, default_value_t = 2)]
        nodes: u32,
    },
    /// hb next to keepalived in network namespaces: failover times, CPU, flood,
    /// loss, CPU starvation, the firewall incident; writes docs/BENCHMARKS.md and
    /// docs/img/*.svg (needs root; installs keepalived).
    Bench {
        /// A smoke run: 3 runs per cell and short windows (about 3 minutes).
        #[arg(long)]
        quick: bool,
        /// Only these scenarios (comma-separated: xdp, stability, cpu, failover,
        /// flood, loss, starvation, incident); for development.
        #[arg(long)]
        only: Option<String>,
    },
    /// The data plane's BPF_PROG_TEST_RUN suite and a two-node failover in
    /// virtual machines on Debian's kernels (downloads them; needs root and qemu,
    /// which it installs).
    VmTest {
        /// Which kernel series.
        #[arg(long, value_enum, default_value = "all")]
        kernel: KernelArg,
    },
    /// README.md's Deploy section followed on two fresh Debian 12 VMs with
    /// systemd (debootstrap, cached in target/vm/deploy/): dpkg -i, keygen,
    /// check, enable --now, reload, watchdog, upgrade, power cut, purge
    /// (needs root and qemu).
    VmDeploy,
    /// Measure the XDP program's cost per packet with BPF_PROG_TEST_RUN (needs root).
    BenchXdp {
        /// Runs per case.
        #[arg(long, default_value_t = 2_000_000)]
        repeat: u32,
        /// Also write the table into docs/BENCHMARKS.md.
        #[arg(long)]
        write: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KernelArg {
    /// Debian 12's stock kernel (linux-image-6.1.0-*-cloud-amd64).
    #[value(name = "6.1")]
    V6_1,
    /// Debian's 6.12 (linux-image-6.12.*+deb12-cloud-amd64).
    #[value(name = "6.12")]
    V6_12,
    /// Both.
    All,
}

impl KernelArg {
    fn series(self) -> Vec<vm::Series> {
        match self {
            KernelArg::V6_1 => vec![vm::Series::V6_1],
            KernelArg::V6_12 => vec![vm::Series::V6_12],
            KernelArg::All => vm::Series::ALL.to_vec(),
        }
    }
}

/// Release builds of the given binaries of the tests crate.
fn build_release_bins(bins: &[&str]) -> Result<()> {
    let mut cmd = std::process::Command::new(tools::cargo());
    cmd.args(["build", "--release", "--quiet", "-p", "hb-tests"]);
    for b in bins {
        cmd.args(["--bin", b]);
    }
    tools::run(&mut cmd, "cargo build")
}

/// hb-user as it is installed (the `dist` profile), for everything that runs it.
pub fn build_hb_user() -> Result<std::path::PathBuf> {
    tools::run(
        std::process::Command::new(tools::cargo()).args([
            "build",
            "--profile",
            "dist",
            "--quiet",
            "-p",
            "hb-user",
        ]),
        "cargo build of hb-user",
    )?;
    Ok(tools::workspace_root().join("target/dist/hb-user"))
}

/// vm-deploy on a built package and root: its client probe built too.
fn vm_deploy(deb: &std::path::Path, root: &vm::rootfs::Rootfs) -> Result<()> {
    tools::ensure_packages(&[
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("ssh", "openssh-client"),
        ("dpkg-deb", "dpkg"),
    ])?;
    build_release_bins(&["hb-vip-probe"])?;
    let probe = tools::workspace_root().join("target/release/hb-vip-probe");
    vm::deploy::run(deb, root, &probe)
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::BuildEbpf => build_ebpf::build().map(|_| ()),
        Task::Deb => {
            let deb = deb::build()?;
            println!("{}", deb.display());
            Ok(())
        }
        Task::Test { args } => {
            tools::ensure_system_packages()?;
            // vm-deploy's Debian root (a minute of debootstrap on a fresh
            // machine) is made while everything else builds and runs.
            let rootfs = args
                .is_empty()
                .then(|| std::thread::spawn(vm::rootfs::prepare));
            build_ebpf::build()?;
            // The namespace tests run the real hb-user binary, as installed;
            // the package test installs the package (HB_DEB).
            let hb_user = build_hb_user()?;
            let deb = deb::package(&hb_user)?;
            // Narrowed to some tests: cargo test as given. The whole suite: in
            // two lanes (suite.rs), then the same data plane on the kernels
            // users run.
            if !args.is_empty() {
                let mut cmd = std::process::Command::new(tools::cargo());
                cmd.args(["test", "--workspace", "--release"])
                    .args(&args)
                    .env("HB_USER_BIN", &hb_user)
                    .env("HB_DEB", &deb);
                return tools::run(&mut cmd, "cargo test");
            }
            // Every part runs, whichever fails first; the verdict names each.
            let mut failed = Vec::new();
            if let Err(e) = suite::run(&hb_user, &deb) {
                tools::say(format!("host tests: {e:#}"));
                failed.push("host tests");
            }
            if let Err(e) = vm::run(&vm::Series::ALL) {
                tools::say(format!("vm-test: {e:#}"));
                failed.push("vm-test");
            }
            let root = rootfs
                .context("the rootfs thread")?
                .join()
                .map_err(|_| anyhow::anyhow!("making vm-deploy's root panicked"))?;
            if let Err(e) = root.and_then(|root| vm_deploy(&deb, &root)) {
                tools::say(format!("vm-deploy: {e:#}"));
                failed.push("vm-deploy");
            }
            if !failed.is_empty() {
                anyhow::bail!("failed: {}", failed.join(", "));
            }
            Ok(())
        }
        Task::VmDeploy => {
            let root = vm::rootfs::prepare()?;
            build_ebpf::build()?;
            let deb = deb::package(&build_hb_user()?)?;
            vm_deploy(&deb, &root)
        }
        Task::Lab { nodes } => {
            tools::ensure_system_packages()?;
            build_ebpf::build()?;
            build_release_bins(&["hb-lab"])?;
            let hb_user = build_hb_user()?;
            let bin = tools::workspace_root().join("target/release/hb-lab");
            tools::run(
                std::process::Command::new(bin)
                    .args(["--nodes", &nodes.to_string()])
                    .env("HB_USER_BIN", &hb_user),
                "hb-lab",
            )
        }
        Task::Bench { quick, only } => {
            tools::ensure_system_packages()?;
            build_ebpf::build()?;
            build_release_bins(&["hb-bench", "bench-xdp"])?;
            let hb_user = build_hb_user()?;
            let root = tools::workspace_root();
            let mut cmd = std::process::Command::new(root.join("target/release/hb-bench"));
            cmd.env("HB_USER_BIN", &hb_user)
                .arg("--out")
                .arg(root.join("docs/BENCHMARKS.md"))
                .arg("--img-dir")
                .arg(root.join("docs/img"));
            if quick {
                cmd.arg("--quick");
            }
            if let Some(only) = only {
                cmd.args(["--only", &only]);
            }
            tools::run(&mut cmd, "hb-bench")
        }
        Task::VmTest { kernel } => vm::run(&kernel.series()),
        Task::BenchXdp { repeat, write } => {
            tools::ensure_system_packages()?;
            build_ebpf::build()?;
            let mut cmd = std::process::Command::new(tools::cargo());
            cmd.args([
                "run",
                "--release",
                "--quiet",
                "-p",
                "hb-tests",
                "--bin",
                "bench-xdp",
                "--",
            ])
            .arg(repeat.to_string());
            if write {
                cmd.arg("--write")
                    .arg(tools::workspace_root().join("docs/BENCHMARKS.md"));
            }
            tools::run(&mut cmd, "bench-xdp")
        }
    }
}
