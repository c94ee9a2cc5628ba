//! The host test suite in two lanes: the long quick-bench binary runs beside
//! the others, which run one after another as `cargo test` would run them.
//! Namespace names carry a per-test prefix and the test's pid, so binaries in
//! different lanes never share a name; the saving is the bench's minutes.
//! Binaries that hold a pair to millisecond heartbeats run last, alone: the
//! bench's floods and hot loops would take the CPU their sender needs (two
//! cores), and the bench is long done by then, so waiting costs nothing.

use crate::tools;
use anyhow::{bail, Context, Result};
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

/// Test binaries that run in the second lane, by target name.
const BESIDE: &[&str] = &["bench_quick"];

/// Timing-sensitive binaries (1-2 ms heartbeats): run after the second lane
/// has finished, so nothing else competes for the CPU.
const AFTER_LANE: &[&str] = &["sender_clock", "handover"];

/// One test executable as cargo built it.
struct TestBin {
    name: String,
    exe: PathBuf,
    /// Its package's directory: cargo runs tests there.
    dir: PathBuf,
}

/// Builds every test executable of the workspace (release) and lists them.
fn build() -> Result<Vec<TestBin>> {
    let out = tools::output(
        Command::new(tools::cargo()).args([
            "test",
            "--workspace",
            "--release",
            "--no-run",
            "--message-format=json",
        ]),
        "cargo test --no-run",
    )?;
    let mut bins = Vec::new();
    for line in out.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(exe), Some(name), Some(manifest)) = (
            v["executable"].as_str(),
            v["target"]["name"].as_str(),
            v["manifest_path"].as_str(),
        ) else {
            continue;
        };
        if v["profile"]["test"] != true {
            continue;
        }
        let dir = Path::new(manifest)
            .parent()
            .context("a manifest path without a directory")?;
        bins.push(TestBin {
            name: name.to_string(),
            exe: PathBuf::from(exe),
            dir: dir.to_path_buf(),
        });
    }
    if bins.is_empty() {
        bail!("cargo test --no-run listed no test executable");
    }
    Ok(bins)
}

/// What every test binary is given: `HB_USER_BIN`, the hb-user to run, and
/// `HB_DEB`, the package to install.
struct Built<'a> {
    hb_user: &'a Path,
    deb: &'a Path,
}

/// Runs `bin` with [`Built`]'s variables, its output to the terminal or to
/// `log`. True when it passed.
fn run_one(bin: &TestBin, built: &Built, log: Option<&Path>) -> Result<bool> {
    let mut cmd = Command::new(&bin.exe);
    cmd.current_dir(&bin.dir)
        .env("HB_USER_BIN", built.hb_user)
        .env("HB_DEB", built.deb);
    if let Some(log) = log {
        let f =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdout(f.try_clone()?).stderr(f);
    } else {
        cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
    }
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", bin.exe.display()))?;
    tools::say(format!(
        "{}: {} in {} s",
        bin.name,
        if status.success() { "passed" } else { "FAILED" },
        start.elapsed().as_secs()
    ));
    Ok(status.success())
}

/// Builds and runs the host suite; fails naming every binary that failed.
pub fn run(hb_user: &Path, deb: &Path) -> Result<()> {
    let built = &Built { hb_user, deb };
    let bins = build()?;
    // A renamed binary would silently leave its lane: name it instead.
    for name in BESIDE.iter().chain(AFTER_LANE) {
        if !bins.iter().any(|b| b.name == *name) {
            bail!("suite.rs names a test binary that cargo did not build: {name}");
        }
    }
    let (beside, rest): (Vec<_>, Vec<_>) = bins
        .into_iter()
        .partition(|b| BESIDE.contains(&b.name.as_str()));
    let (after, rest): (Vec<_>, Vec<_>) = rest
        .into_iter()
        .partition(|b| AFTER_LANE.contains(&b.name.as_str()));
    let logs = tools::workspace_root().join("target/test-logs");
    std::fs::create_dir_all(&logs)?;
    let failed = std::thread::scope(|s| -> Result<Vec<String>> {
        let lane = s.spawn(|| -> Result<Vec<(String, PathBuf, bool)>> {
            beside
                .iter()
                .map(|b| {
                    let log = logs.join(format!("{}.log", b.name));
                    tools::say(format!(
                        "{} runs beside the others: {}",
                        b.name,
                        log.display()
                    ));
                    Ok((b.name.clone(), log.clone(), run_one(b, built, Some(&log))?))
                })
                .collect()
        });
        let mut failed = Vec::new();
        for b in &rest {
            if !run_one(b, built, None)? {
                failed.push(b.name.clone());
            }
        }
        let done = lane
            .join()
            .map_err(|_| anyhow::anyhow!("the second test lane panicked"))??;
        for (name, log, ok) in done {
            // Its output, now that it cannot interleave with the others'.
            eprintln!("---- {name} ({}) ----", log.display());
            eprint!("{}", std::fs::read_to_string(&log).unwrap_or_default());
            if !ok {
                failed.push(name);
            }
        }
        Ok(failed)
    })?;
    let mut failed = failed;
    // The kernel frees the namespaces the others left in a workqueue, after
    // they are gone by name: let it finish before the millisecond tests.
    std::thread::sleep(std::time::Duration::from_secs(3));
    for b in &after {
        if !run_one(b, built, None)? {
            failed.push(b.name.clone());
        }
    }
    if !failed.is_empty() {
        bail!("test binaries failed: {}", failed.join(", "));
    }
    Ok(())
}
