//! Developer tasks: `cargo xtask <task>`. Each task sets up what it needs itself,
//! so that a fresh machine needs no manual step.

mod build_ebpf;
mod tools;

use anyhow::Result;
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
    /// Build everything and run every test (needs root: XDP, namespaces, iptables).
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

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::BuildEbpf => build_ebpf::build().map(|_| ()),
        Task::Test { args } => {
            tools::ensure_system_packages()?;
            build_ebpf::build()?;
            // The namespace tests run the real hb-user binary.
            tools::run(
                std::process::Command::new(tools::cargo()).args([
                    "build",
                    "--release",
                    "-p",
                    "hb-user",
                ]),
                "cargo build of hb-user",
            )?;
            let mut cmd = std::process::Command::new(tools::cargo());
            cmd.args(["test", "--workspace", "--release"]).args(&args);
            tools::run(&mut cmd, "cargo test")
        }
        Task::Lab { nodes } => {
            tools::ensure_system_packages()?;
            build_ebpf::build()?;
            tools::run(
                std::process::Command::new(tools::cargo()).args([
                    "build",
                    "--release",
                    "--quiet",
                    "-p",
                    "hb-user",
                    "-p",
                    "hb-tests",
                    "--bin",
                    "hb-user",
                    "--bin",
                    "hb-lab",
                ]),
                "cargo build",
            )?;
            let bin = tools::workspace_root().join("target/release/hb-lab");
            tools::run(
                std::process::Command::new(bin).args(["--nodes", &nodes.to_string()]),
                "hb-lab",
            )
        }
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
