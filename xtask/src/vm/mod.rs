//! `cargo xtask vm-test`: the data plane's `BPF_PROG_TEST_RUN` suite and a
//! two-node failover in namespaces, run inside virtual machines booted on
//! Debian's own kernel packages (6.1, Debian 12's stock kernel, and 6.12), so
//! that what the verifier and the kernel of a user's machine do is proved, not
//! assumed from the development kernel.
//!
//! Per kernel: `apt-get download` + unpack (kernel.rs), an initramfs with the
//! guest init, the test binaries and the boot modules (initramfs.rs), a boot
//! under qemu (qemu.rs) with the host's root shared read-only over virtiofs.

pub mod deploy;
mod guest;
mod initramfs;
mod kernel;
mod qemu;
pub mod rootfs;

pub use kernel::Series;

use crate::tools::{self, say};
use anyhow::{bail, Context, Result};
use initramfs::Entry;
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

/// Test binaries of the `tests` crate the guest runs, and the arguments of each
/// step: (step name, test target, libtest arguments).
const STEPS: &[(&str, &str, &[&str])] = &[
    ("xdp_test_run", "xdp_test_run", &[]),
    // XDP on veth behind real iptables rules: the firewall incident.
    ("xdp_netns", "xdp_netns", &["--test-threads=1"]),
    // The kernel-feature probes pass here, and a refused start leaves nothing.
    (
        "start_failure",
        "start_failure",
        &[
            "--exact",
            "this_kernel_has_everything_the_start_probes_for",
            "a_refused_start_leaves_no_pins_no_state_and_status_says_not_running",
            "--test-threads=1",
        ],
    ),
    // XDP kept on the interface through netlink (under `ip netns exec` too),
    // the take-over at a restart and the holder lease after a SIGKILL.
    (
        "data_plane",
        "data_plane",
        &[
            "--exact",
            "a_crashed_holder_stops_answering_for_the_vip",
            "a_restarted_controller_takes_over_the_attached_program",
            "under_ip_netns_exec_without_pins_a_crashed_holder_is_fenced_and_a_restart_takes_over",
            "a_crashed_holder_of_an_ipv6_vip_stops_answering_for_it",
            "--test-threads=1",
        ],
    ),
    (
        "failover",
        "failover",
        &[
            "--exact",
            "two_nodes_elect_the_higher_one",
            "sigkill_of_the_holder_moves_the_vip_and_the_client_follows",
            "--test-threads=1",
        ],
    ),
    // The program attached again to an interface made anew, renamed, re-addressed.
    ("iface_lifecycle", "iface_lifecycle", &["--test-threads=1"]),
    // The exit watch (raw tracepoint) and the death notice it triggers (XDP_TX).
    ("exit_watch", "exit_watch", &["--test-threads=1"]),
    (
        "death_notice",
        "death_notice",
        &[
            "--exact",
            "sigkill_of_the_holder_moves_the_vip_well_before_dead_after",
            "a_replayed_death_notice_is_refused_counted_and_logged",
            "--test-threads=1",
        ],
    ),
];

/// Modules the guest needs before it can reach the host's root, and veth, which
/// the tests need (all where the kernel has them as modules, not built in).
const BOOT_MODULES: &[&str] = &["virtio_pci", "virtiofs", "overlay", "veth"];

/// A guest that takes longer than this is stuck (a boot takes about 12 s and
/// the steps a few minutes under TCG).
const BOOT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The test binaries (by test target name), built by `cargo test --no-run`.
fn build_test_binaries() -> Result<Vec<(String, PathBuf)>> {
    let mut cmd = Command::new(tools::cargo());
    cmd.args([
        "test",
        "--release",
        "--no-run",
        "--message-format=json",
        "-p",
        "hb-tests",
    ]);
    for (_, target, _) in STEPS {
        cmd.args(["--test", target]);
    }
    let out = tools::output(&mut cmd, "cargo test --no-run")?;
    let mut bins = Vec::new();
    for line in out.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(exe), Some(name)) = (v["executable"].as_str(), v["target"]["name"].as_str()) {
            bins.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    Ok(bins)
}

/// The guest init, linked statically: the initramfs has no C library.
fn build_init() -> Result<PathBuf> {
    let root = tools::workspace_root();
    let target_dir = root.join("target/vm-init");
    tools::run(
        Command::new(tools::cargo())
            .args([
                "build",
                "--release",
                "--quiet",
                "-p",
                "xtask",
                "--bin",
                "hb-vm-init",
            ])
            .args(["--target", "x86_64-unknown-linux-gnu", "--target-dir"])
            .arg(&target_dir)
            .env(
                "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                "-C target-feature=+crt-static",
            ),
        "cargo build of hb-vm-init",
    )?;
    Ok(target_dir.join("x86_64-unknown-linux-gnu/release/hb-vm-init"))
}

/// The guest's `/hb/plan` (format: see src/bin/hb-vm-init.rs).
fn plan(k: &kernel::Kernel, modules: &[String]) -> String {
    let mut p = String::new();
    for m in modules {
        p += &format!(
            "module\t/hb/modules/{}\n",
            m.rsplit('/').next().unwrap_or(m)
        );
    }
    p += &format!("modules_dir\t{}\n", k.modules.display());
    p += &format!("cwd\t{}\n", tools::workspace_root().join("tests").display());
    p += "env\tHB_USER_BIN=/hb/bin/hb-user\n";
    p += "env\tRUST_BACKTRACE=1\n";
    // Emulated CPUs (TCG) run every command several times slower: settle waits
    // get four times their bound (tests/src/cluster.rs `time_scale`).
    p += "env\tHB_TEST_TIME_SCALE=4\n";
    for (name, target, args) in STEPS {
        p += &format!("step\t{name}\t/hb/bin/{target}\t--color=never");
        for a in *args {
            p += &format!("\t{a}");
        }
        p += "\n";
    }
    p
}

fn initramfs(
    k: &kernel::Kernel,
    init: &Path,
    hb_user: &Path,
    bins: &[(String, PathBuf)],
    out: &Path,
) -> Result<()> {
    let modules = k.module_closure(BOOT_MODULES)?;
    let mut entries = vec![
        Entry::dir("dev"),
        Entry::dir("proc"),
        Entry::dir("sys"),
        Entry::exe("init", init),
        Entry::dir("hb"),
        Entry::bytes("hb/plan", plan(k, &modules).into_bytes()),
        Entry::dir("hb/bin"),
        Entry::exe("hb/bin/hb-user", hb_user),
        Entry::dir("hb/modules"),
    ];
    for (name, path) in bins {
        entries.push(Entry::exe(format!("hb/bin/{name}"), path));
    }
    for m in &modules {
        let file = m.rsplit('/').next().unwrap_or(m);
        entries.push(Entry::file(
            format!("hb/modules/{file}"),
            &k.modules.join(m),
        ));
    }
    initramfs::write(out, entries)
}

/// Runs the suite on each of `series`; fails when any kernel fails.
pub fn run(series: &[Series]) -> Result<()> {
    if !tools::is_root() {
        bail!("vm-test needs root (virtiofsd shares the host's root with the guest)");
    }
    tools::ensure_packages(&[
        ("qemu-system-x86_64", "qemu-system-x86"),
        (qemu::VIRTIOFSD, "qemu-system-common"),
        ("depmod", "kmod"),
        ("dpkg-deb", "dpkg"),
    ])?;
    crate::build_ebpf::build()?;
    let hb_user = crate::build_hb_user()?;
    let bins = build_test_binaries()?;
    for (_, target, _) in STEPS {
        if !bins.iter().any(|(n, _)| n == target) {
            bail!("cargo built no test binary {target}");
        }
    }
    let init = build_init()?;

    let mut results = Vec::new();
    for &s in series {
        let k = kernel::prepare(s)?;
        let dir = tools::workspace_root().join("target/vm").join(s.label());
        std::fs::create_dir_all(&dir)?;
        let cpio = dir.join("initramfs.cpio");
        initramfs(&k, &init, &hb_user, &bins, &cpio)
            .with_context(|| format!("initramfs for {}", k.release))?;
        say(format!("booting {} ({}) under qemu", k.release, k.package));
        let log = dir.join("console.log");
        let mut boot = qemu::boot(s.label(), &k.vmlinuz, &cpio, &log, BOOT_TIMEOUT)?;
        // A guest kernel that died before running any step (under TCG one
        // oopsed in early boot, in sched_clock_cpu) says nothing about hb:
        // boot it once more, keeping the first console log.
        if matches!(boot.verdict, qemu::Verdict::Missing(_)) && boot.steps.is_empty() {
            let first = dir.join("console-first-boot.log");
            std::fs::rename(&log, &first)?;
            say(format!(
                "{}: the guest died before any step (see {}); booting it again",
                k.release,
                first.display()
            ));
            boot = qemu::boot(s.label(), &k.vmlinuz, &cpio, &log, BOOT_TIMEOUT)?;
        }
        results.push((k, boot));
    }

    println!("\nvm-test report");
    let mut failed = 0;
    for (k, b) in &results {
        let verdict = match &b.verdict {
            qemu::Verdict::Pass => "pass".to_string(),
            qemu::Verdict::Fail => {
                failed += 1;
                "FAIL".to_string()
            }
            qemu::Verdict::Missing(why) => {
                failed += 1;
                format!("FAIL: {why}")
            }
        };
        println!(
            "  {} ({}): {verdict} in {:.0} s",
            k.release,
            k.series.label(),
            b.elapsed.as_secs_f64()
        );
        for s in b
            .steps
            .iter()
            .filter(|s| s.contains(": ok") || s.contains("FAILED") || s.contains("failed"))
        {
            println!("    {}", s.trim_start_matches("hb-vm: "));
        }
    }
    if failed > 0 {
        bail!("vm-test failed on {failed} of {} kernels", results.len());
    }
    Ok(())
}
