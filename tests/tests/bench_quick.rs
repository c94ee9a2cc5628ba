//! `hb-bench --quick` end to end (what `cargo xtask bench --quick` runs): every
//! scenario, hb and keepalived, in network namespaces. Checks that the report and
//! its plots are written with every table; no figure is judged here (the report
//! states the goals met or not). Needs root and keepalived: fails saying so.

use hb_tests::bench::{report::SECTIONS, svg::well_formed};
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The quick run takes about 5 minutes on 2 cores; leave room for a busy machine.
const BOUND: Duration = Duration::from_secs(10 * 60);

#[test]
fn quick_bench_writes_the_report_with_every_table() {
    hb_tests::require_root("the benchmark (namespaces, XDP, keepalived)");
    assert!(
        Command::new("keepalived").arg("--version").output().is_ok(),
        "keepalived is not installed: apt-get install -y keepalived (cargo xtask test installs it)"
    );
    let dir = std::env::temp_dir().join(format!("hb-bench-quick-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("BENCHMARKS.md");
    let img = dir.join("img");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hb-bench"))
        .args(["--quick", "--out"])
        .arg(&out)
        .arg("--img-dir")
        .arg(&img)
        .env("HB_BENCH_XDP_BIN", env!("CARGO_BIN_EXE_bench-xdp"))
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting hb-bench");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > BOUND {
            // SIGTERM: hb-bench cleans up its namespaces and daemons.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
            panic!("hb-bench --quick took more than {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let doc = std::fs::read_to_string(&out).expect("the report was written");
    assert!(
        status.success(),
        "hb-bench --quick failed ({status}); report:\n{doc}"
    );
    // Every section is there, with a table that has at least one data row.
    for s in SECTIONS {
        let at = doc
            .find(&format!("{s}\n"))
            .unwrap_or_else(|| panic!("section {s:?} missing from\n{doc}"));
        let body = &doc[at + s.len()..];
        let body = &body[..body.find("\n## ").unwrap_or(body.len())];
        let table_lines = body.lines().filter(|l| l.starts_with('|')).count();
        assert!(
            table_lines >= 3,
            "section {s:?} has no table with data:\n{body}"
        );
    }
    for svg in [
        "failover-cdf.svg",
        "failover-cdf-default.svg",
        "failover-timeline.svg",
    ] {
        let text = std::fs::read_to_string(img.join(svg)).unwrap_or_else(|e| panic!("{svg}: {e}"));
        well_formed(&text).unwrap_or_else(|e| panic!("{svg}: {e}"));
        assert!(doc.contains(&format!("img/{svg}")), "{svg} is not linked");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
