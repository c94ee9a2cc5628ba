//! `hb-user`: hb's controller. `run` (the default) is the failover daemon; `check`
//! validates its settings; `keygen` makes a key; `status` shows what a node knows.

use clap::{Parser, Subcommand};
use hb_user::{
    beat::set_scheduler,
    cleanup,
    config::{RunArgs, RunConfig},
    control,
    controller::{self, RunError},
    import, keyfile,
    reload::{self, Requested},
    status,
};
use nix::sys::mman::{mlockall, MlockAllFlags};
use std::{path::PathBuf, process::ExitCode};

#[derive(Parser)]
#[command(
    name = "hb-user",
    version,
    about = "hb: XDP heartbeats and VIP failover",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Cmd {
    /// Run the failover daemon (the default).
    Run(RunArgs),
    /// Check the settings without starting: the flags and config file, the key
    /// file, interfaces and VIPs against this host's addresses, the state dir,
    /// the kernel's features and the verifier. Exits 0, or 2 naming the field
    /// (1 for a kernel that lacks a feature). Attaches and changes nothing.
    Check(RunArgs),
    /// Make a running node read its config file again (as SIGHUP does) and
    /// apply what changed. Exits 0 when applied or unchanged, 2 when refused
    /// (a bad file, or a change that takes a restart: the error names the
    /// field, and the running settings are kept), 3 when hb-user is not running.
    Reload {
        #[arg(long, default_value = "/var/lib/hb")]
        state_dir: PathBuf,
    },
    /// Hand a group (every group without one) over to the next node and take
    /// nothing until `resume`, like Heartbeat's hb_standby; a restart keeps
    /// it. Exits 0, 2 for an unknown group, 3 when hb-user is not running.
    Standby {
        group: Option<String>,
        #[arg(long, default_value = "/var/lib/hb")]
        state_dir: PathBuf,
    },
    /// End a standby: the group (every group without one) elects again.
    Resume {
        group: Option<String>,
        #[arg(long, default_value = "/var/lib/hb")]
        state_dir: PathBuf,
    },
    /// Write a new 128-bit key (mode 0600), or print it.
    Keygen {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Remove what a crashed controller left behind: pinned program, link and maps
    /// (which detaches XDP), and the VIPs it held.
    Cleanup {
        #[arg(long = "iface", required = true)]
        iface: Vec<String>,
        #[arg(long, default_value = "/var/lib/hb")]
        state_dir: PathBuf,
        #[arg(long, default_value = hb_user::loader::DEFAULT_PIN_ROOT)]
        pin_root: PathBuf,
    },
    /// Show peers, counters, state and VIP holder of a running node. Exits 3
    /// when hb-user is not running on this node (no status file, nothing pinned).
    Status {
        #[arg(long)]
        iface: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "/var/lib/hb")]
        state_dir: PathBuf,
        #[arg(long, default_value = hb_user::loader::DEFAULT_PIN_ROOT)]
        pin_root: PathBuf,
    },
    /// Print an equivalent hb.toml for a keepalived.conf on stdout, and every
    /// directive it could not carry over on stderr (`line N: name: why`).
    /// Exits 0, or 2 for an unreadable file or a syntax error.
    ImportKeepalived { file: PathBuf },
    /// Write the man pages, shell completions and the commented hb.toml
    /// into DIR, for packaging (cargo xtask deb).
    #[command(hide = true)]
    Generate {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// A request over the control socket: 0, 2 refused, 3 not running.
fn control(state_dir: &std::path::Path, req: control::Request) -> ExitCode {
    match control::request(state_dir, &req) {
        Ok(a) if a.starts_with("ok") => {
            println!("hb-user: {}", a.trim_start_matches("ok").trim());
            ExitCode::SUCCESS
        }
        Ok(a) => {
            eprintln!("hb-user: {}", a.trim_start_matches("error").trim());
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("hb-user: not running? {e:#}");
            ExitCode::from(3)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        None => run(cli.run),
        Some(Cmd::Run(args)) => run(args),
        Some(Cmd::Check(args)) => check(args),
        Some(Cmd::Reload { state_dir }) => match reload::request(&state_dir) {
            Ok(Requested::Done(what)) => {
                println!("hb-user: reloaded: {what}");
                ExitCode::SUCCESS
            }
            Ok(Requested::Refused(why)) => {
                eprintln!("hb-user: reload refused: {why}");
                ExitCode::from(2)
            }
            Ok(Requested::NotRunning) => {
                eprintln!(
                    "hb-user: not running (no live status in {})",
                    state_dir.display()
                );
                ExitCode::from(3)
            }
            Err(e) => report(Err(e)),
        },
        Some(Cmd::Standby { group, state_dir }) => {
            control(&state_dir, control::Request::Standby(group))
        }
        Some(Cmd::Resume { group, state_dir }) => {
            control(&state_dir, control::Request::Resume(group))
        }
        Some(Cmd::Keygen { out }) => report(keyfile::generate(out.as_deref())),
        Some(Cmd::Cleanup {
            iface,
            state_dir,
            pin_root,
        }) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            report(
                rt.map_err(Into::into)
                    .and_then(|rt| rt.block_on(cleanup::run(&iface, &state_dir, &pin_root))),
            )
        }
        Some(Cmd::Status {
            iface,
            json,
            state_dir,
            pin_root,
        }) => match status::gather(&state_dir, &pin_root, iface.as_deref()) {
            Ok(r) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                } else {
                    print!("{}", status::render(&r));
                }
                // 3 is "program is not running" in the LSB status convention.
                if r.not_running.is_some() {
                    ExitCode::from(3)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => report(Err(e)),
        },
        Some(Cmd::ImportKeepalived { file }) => import::run(&file),
        Some(Cmd::Generate { out }) => report(hb_user::manpages::generate(
            <Cli as clap::CommandFactory>::command(),
            &out,
        )),
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hb-user: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The settings of `run` and `check`, or exit 2 naming the field.
fn settings(args: &RunArgs) -> Result<RunConfig, ExitCode> {
    RunConfig::load(args).map_err(|e| {
        eprintln!("hb-user: {e}");
        ExitCode::from(2)
    })
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// 2 for a setting, 1 for the kernel or anything else.
fn exit_for(r: Result<(), RunError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Config(e)) => {
            eprintln!("hb-user: {e}");
            ExitCode::from(2)
        }
        Err(RunError::Kernel(m)) => {
            eprintln!("hb-user: {m}");
            ExitCode::FAILURE
        }
        Err(RunError::Other(e)) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: RunArgs) -> ExitCode {
    let cfg = match settings(&args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return report(Err(e.into())),
    };
    match rt.block_on(controller::check(&cfg)) {
        Ok(()) => {
            println!(
                "hb-user: the settings are valid: node {} on {}, {} peer(s), {} VIP(s) in {} group(s)",
                cfg.membership.node_id,
                cfg.membership.ifaces.join(", "),
                cfg.membership.peers.len(),
                cfg.groups.iter().map(|g| g.vips.len()).sum::<usize>(),
                cfg.groups.len()
            );
            ExitCode::SUCCESS
        }
        // No logger here: the error goes to stderr as is.
        Err(RunError::Other(e)) => report(Err(e)),
        Err(e) => exit_for(Err(e)),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let cfg = match settings(&args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    hb_user::logging::init();
    if cfg.runtime.realtime {
        realtime();
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return report(Err(e.into())),
    };
    exit_for(rt.block_on(controller::run(args, cfg)))
}

/// SCHED_FIFO for the (single-threaded) controller and locked memory: a busy
/// machine must not delay heartbeats past dead-after. Failure is logged, not fatal.
/// With SCHED_RESET_ON_FORK: what it starts (hooks, threads) begins at
/// SCHED_OTHER and nice 0, so a busy hook cannot take its CPU; the sender
/// thread sets its own policy.
fn realtime() {
    if let Err(e) = set_scheduler(libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, 50) {
        tracing::warn!("--realtime: SCHED_FIFO refused: {e}");
    }
    if let Err(e) = mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE) {
        tracing::warn!("--realtime: mlockall refused: {}", std::io::Error::from(e));
    }
    tracing::info!("--realtime: SCHED_FIFO priority 50, memory locked");
}
