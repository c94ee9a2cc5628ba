//! `cargo xtask bench`: hb side by side with keepalived in the namespace lab.
//! Prints a progress line per scenario and each table when it is complete, then
//! writes the report (docs/BENCHMARKS.md) and its SVG plots. Cleans up on exit and
//! on Ctrl-C. Exits non-zero if a scenario could not be measured (the report is
//! written all the same, saying which).
//!
//! Usage: hb-bench [--quick] [--out FILE] [--img-dir DIR] [--only LIST]
//! LIST: comma-separated among xdp, stability, hb-stability, cpu, failover,
//! flood, loss, starvation, incident, gaps, chaos (for development; the report
//! then misses the rest).

use anyhow::{bail, Context, Result};
use hb_tests::{
    bench::{
        host, report,
        report::{Fault, Report},
        scenarios::{
            self, Plan, Progress, HB_100, HB_1MS, HB_DEFAULT, HB_FAST, HB_LOSS, KA_DEFAULT,
        },
        svg,
        testbed::{self, keepalived_conf, Settings, Testbed, Tool},
    },
    cluster::{clean_up_on_signals, hb_user_bin},
    keepalived,
};
use std::{
    path::{Path, PathBuf},
    time::Instant,
};

const SCENARIOS: [&str; 11] = [
    "xdp",
    "stability",
    "hb-stability",
    "cpu",
    "failover",
    "flood",
    "loss",
    "starvation",
    "incident",
    "gaps",
    "chaos",
];

struct Args {
    quick: bool,
    out: PathBuf,
    img_dir: PathBuf,
    only: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        quick: false,
        out: "docs/BENCHMARKS.md".into(),
        img_dir: "docs/img".into(),
        only: SCENARIOS.iter().map(|s| s.to_string()).collect(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--out" => a.out = it.next().context("--out needs a file")?.into(),
            "--img-dir" => a.img_dir = it.next().context("--img-dir needs a directory")?.into(),
            "--only" => {
                a.only = it
                    .next()
                    .context("--only needs a list")?
                    .split(',')
                    .map(String::from)
                    .collect();
                if let Some(bad) = a.only.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
                    bail!("unknown scenario {bad}; one of {}", SCENARIOS.join(", "));
                }
            }
            _ => bail!("usage: hb-bench [--quick] [--out FILE] [--img-dir DIR] [--only LIST]"),
        }
    }
    Ok(a)
}

/// Where the hb-user copy lives (see `snapshot_hb_user`).
static BIN_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Ctrl-C or SIGTERM: besides what every lab cleans up, the hb-user copy.
fn remove_bin_dir() {
    if let Some(d) = BIN_DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A private copy of hb-user, so that a rebuild during a long run cannot mix
/// two versions in one report; removed on exit.
fn snapshot_hb_user() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hb-bench-bin-{}", std::process::id()));
    let copy = dir.join("hb-user");
    let made = std::fs::create_dir_all(&dir).and_then(|_| std::fs::copy(hb_user_bin(), &copy));
    if let Err(e) = made {
        eprintln!("hb-bench: copying hb-user: {e}");
        std::process::exit(2);
    }
    // SAFETY: no other thread reads the environment yet.
    std::env::set_var("HB_USER_BIN", &copy);
    dir
}

fn main() {
    let bin_dir = snapshot_hb_user();
    BIN_DIR.set(bin_dir.clone()).expect("set once");
    clean_up_on_signals(remove_bin_dir);
    // keepalived's VRRP child outlives a SIGKILLed parent for a moment: reap it.
    keepalived::become_subreaper();
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("hb-bench: {e:#}");
        std::process::exit(2);
    });
    let result = run(&args);
    let _ = std::fs::remove_dir_all(&bin_dir);
    match result {
        Ok(true) => println!("\nhb-bench: done"),
        Ok(false) => {
            eprintln!("\nhb-bench: some scenarios were not measured (see the report)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("\nhb-bench: FAILED: {e:#}");
            std::process::exit(1);
        }
    }
}

/// bench-xdp next to this binary, or $HB_BENCH_XDP_BIN.
fn bench_xdp_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HB_BENCH_XDP_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("parent").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("bench-xdp")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Runs a scenario, recording its error in the report instead of stopping.
fn attempt(r: &mut Report, p: &Progress, key: &str, f: impl FnOnce(&mut Report) -> Result<()>) {
    if let Err(e) = f(r) {
        p.say(format!("{key}: FAILED: {e:#}"));
        // The first line only: a daemon's log may follow.
        let line = format!("{e:#}")
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        r.errors
            .entry(key.into())
            .and_modify(|all| *all = format!("{all}; {line}"))
            .or_insert(line);
    }
}

fn run(args: &Args) -> Result<bool> {
    hb_tests::require_root("hb-bench");
    let plan = Plan::new(args.quick);
    let p = Progress(Instant::now());
    let want = |s: &str| args.only.iter().any(|o| o == s);
    let mut r = Report::default();
    let ka_version = keepalived::version()?;
    let hb_bin = hb_user_bin();
    let help = std::process::Command::new(&hb_bin)
        .args(["run", "--help"])
        .output()
        .context("hb-user run --help")?;
    let realtime = String::from_utf8_lossy(&help.stdout).contains("--realtime");
    p.say(format!(
        "hb-bench {}: {} runs per failover cell; {ka_version}; hb-user {}{}",
        if args.quick { "--quick" } else { "(full)" },
        plan.runs,
        hb_bin.display(),
        if realtime { " (has --realtime)" } else { "" }
    ));
    let old_doc = std::fs::read_to_string(&args.out).unwrap_or_default();
    r.xdp_prose = report::extract_xdp_prose(&old_doc).unwrap_or_default();
    r.meta = report::Meta {
        quick: args.quick,
        machine: host::machine(),
        date: now_utc(),
        revision: host::source_revision(&workspace()),
        keepalived_version: ka_version,
        runs_per_cell: plan.runs,
        hb_realtime: realtime,
        ..Default::default()
    };
    for (name, flags) in [
        ("100/s", HB_100),
        ("default", HB_DEFAULT),
        ("loss", HB_LOSS),
    ] {
        r.meta.hb_settings.insert(name.into(), flags.join(" "));
    }
    r.meta.keepalived_settings.insert(
        "default".into(),
        format!("advert_int {}", keepalived::fmt_advert(KA_DEFAULT)),
    );

    // 1. Data-plane cost: bench-xdp's own table.
    if want("xdp") {
        attempt(&mut r, &p, "xdp", |r| {
            p.say("data-plane cost: bench-xdp");
            let out = std::process::Command::new(bench_xdp_bin())
                .arg(plan.xdp_repeat.to_string())
                .output()
                .with_context(|| format!("running {}", bench_xdp_bin().display()))?;
            if !out.status.success() {
                r.xdp = report::extract_xdp_block(&old_doc);
                bail!("bench-xdp: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            let table = String::from_utf8_lossy(&out.stdout).trim().to_string();
            println!("{table}\n");
            r.xdp = Some(table);
            Ok(())
        });
    } else {
        r.xdp = report::extract_xdp_block(&old_doc);
    }

    // 2. keepalived's fastest stable advert_int (its steady window gives its CPU).
    let mut ka_fast = KA_CANDIDATES_FALLBACK;
    if want("stability") {
        attempt(&mut r, &p, "stability", |r| {
            p.say("keepalived: searching its fastest stable advert_int");
            let (adv, cpu) = scenarios::keepalived_stability(&plan, &p, &mut r.stability)?;
            ka_fast = adv;
            r.cpu.extend(cpu);
            Ok(())
        });
        println!("{}", report::stability_table(&r.stability));
    }
    let ka_fast_s = Settings::Keepalived(ka_fast);
    r.meta.keepalived_settings.insert(
        "fast".into(),
        format!(
            "advert_int {}{}",
            keepalived::fmt_advert(ka_fast),
            if want("stability") {
                ""
            } else {
                " (not searched in this run)"
            }
        ),
    );
    let conf_dir = PathBuf::from("<node dir>");
    r.meta.keepalived_conf = keepalived_conf(1, ka_fast).render();
    r.meta.keepalived_cmd = format!(
        "keepalived {}",
        keepalived::args(&conf_dir.join("keepalived.conf"), &conf_dir).join(" ")
    );
    // 2b. hb's fastest stable setting (with --realtime when hb-user has it).
    let mut hb_fast_args: Vec<String> = HB_FAST.iter().map(|s| s.to_string()).collect();
    if realtime {
        hb_fast_args.push("--realtime".into());
    }
    let mut searched = false;
    if want("hb-stability") {
        attempt(&mut r, &p, "hb-stability", |r| {
            p.say("hb: searching its fastest stable setting");
            hb_fast_args = scenarios::hb_stability(&plan, &p, realtime, &mut r.hb_stability)?;
            searched = true;
            Ok(())
        });
        println!("{}", report::hb_stability_table(&r.hb_stability));
    }
    let hb_fast = Settings::Hb(hb_fast_args.clone());
    r.meta.hb_settings.insert(
        "fast".into(),
        format!(
            "{}{}",
            hb_fast_args.join(" "),
            if searched {
                ""
            } else {
                " (not searched in this run)"
            }
        ),
    );
    let hb_100 = Settings::hb(HB_100);

    // 3. Controller CPU at 100 heartbeats/s (keepalived's came with its
    //    stability window, at 100 adverts/s when 0.01 s is stable).
    if want("cpu") {
        attempt(&mut r, &p, "cpu", |r| {
            p.say(format!(
                "controller CPU: hb at 100 heartbeats/s for {:?}",
                plan.cpu
            ));
            let bed = Testbed::new(hb_fast.clone())?;
            r.meta.hb_cmd = hb_command(&bed);
            drop(bed);
            let (stats, rows) = scenarios::hb_cpu(&plan, &hb_100)?;
            if stats.changes() > 0 {
                p.say(format!(
                    "  hb: {} VIP changes in steady state!",
                    stats.changes()
                ));
            }
            r.cpu.splice(0..0, rows);
            Ok(())
        });
        println!("{}", report::cpu_table(&r.cpu));
    }
    if r.meta.hb_cmd.is_empty() {
        r.meta.hb_cmd = "hb-user run --iface eth0 --node-id <id> --peer <other>@10.203.0.<other> --vip 10.203.0.100/24 --priority 100|90 --key-file <lab>/hb.key --state-dir <node dir>/state --pin-root <lab bpffs>/n<id>".into();
    }

    // 4. Failover times.
    if want("failover") {
        let hb_default = Settings::hb(HB_DEFAULT);
        let ka_default = Settings::Keepalived(KA_DEFAULT);
        // hb with the witness (etcd) at the fast setting: its columns of the
        // fast table say what the witness costs each kind of failover.
        let hb_witness = match &hb_fast {
            Settings::Hb(a) => Settings::Hb([a.clone(), testbed::witness_args()].concat()),
            other => other.clone(),
        };
        for (setting, tools) in [
            ("fast", vec![&hb_fast, &ka_fast_s]),
            (report::WITNESS_FAST, vec![&hb_witness]),
            ("default", vec![&hb_default, &ka_default]),
        ] {
            for s in tools {
                let tool = s.tool();
                // One testbed per tool and setting; a fresh one after a cell failed.
                let mut bed: Option<Testbed> = None;
                for fault in Fault::ALL {
                    attempt(&mut r, &p, "failover", |r| {
                        if bed.is_none() {
                            bed = Some(Testbed::up(s.clone())?);
                        }
                        let t = Instant::now();
                        let (cell, err) = scenarios::failover_cell(
                            &plan,
                            bed.as_mut().expect("just made"),
                            setting,
                            fault,
                            &mut r.timelines,
                        );
                        let sum = cell.summary();
                        p.say(format!(
                            "failover {setting}: {} {}: {} runs{} in {:.0} s: p50 {} max {}",
                            tool.name(),
                            fault.name(),
                            cell.samples_ms.len(),
                            if cell.missed > 0 {
                                format!(" (+{} missed)", cell.missed)
                            } else {
                                String::new()
                            },
                            t.elapsed().as_secs_f64(),
                            sum.map_or("-".into(), |s| hb_tests::bench::stats::fmt_ms(s.p50)),
                            sum.map_or("-".into(), |s| hb_tests::bench::stats::fmt_ms(s.max)),
                        ));
                        r.failover.push(cell);
                        if let Some(e) = err {
                            bed = None;
                            return Err(e.context(format!(
                                "{} {setting} {}",
                                tool.name(),
                                fault.name()
                            )));
                        }
                        Ok(())
                    });
                }
            }
            if setting != report::WITNESS_FAST {
                println!(
                    "\n{setting} setting:\n{}",
                    report::failover_table(&r, setting)
                );
            }
        }
    }

    // 5. Flood.
    if want("flood") {
        attempt(&mut r, &p, "flood", |r| {
            let rate = scenarios::flood_hb(&plan, &p, &hb_fast, &mut r.flood)?;
            scenarios::flood_keepalived(&plan, &p, ka_fast, rate, &mut r.flood)
        });
        println!("{}", report::flood_table(&r.flood));
    }

    // 6-8. Windows of stress with no fault.
    let stress = |key: &str, r: &mut Report, runs: Vec<Settings>| {
        for s in runs {
            attempt(r, &p, key, |r| {
                let row = match key {
                    "loss" => scenarios::loss(&plan, s.clone())?,
                    "starvation" => scenarios::starvation(&plan, s.clone())?,
                    _ => scenarios::incident(&plan, s.clone())?,
                };
                p.say(format!(
                    "{key}: {} `{}`: {} VIP changes, {:.2} s with two holders; {}",
                    row.tool.name(),
                    row.settings,
                    row.changes,
                    row.double_s,
                    row.note
                ));
                match key {
                    "loss" => r.loss.push(row),
                    "starvation" => r.starvation.push(row),
                    _ => r.incident.push(row),
                }
                Ok(())
            });
        }
    };
    if want("loss") {
        stress(
            "loss",
            &mut r,
            vec![Settings::hb(HB_LOSS), ka_fast_s.clone()],
        );
        println!("{}", report::window_table(&r.loss));
    }
    if want("starvation") {
        // The fast setting without and with --realtime.
        let plain: Vec<&str> = hb_fast_args
            .iter()
            .map(|s| s.as_str())
            .filter(|a| *a != "--realtime")
            .collect();
        let mut runs = vec![Settings::hb(&plain)];
        if realtime {
            let mut a = plain.clone();
            a.push("--realtime");
            runs.push(Settings::hb(&a));
        }
        runs.push(ka_fast_s.clone());
        stress("starvation", &mut r, runs);
        println!("{}", report::window_table(&r.starvation));
    }
    if want("incident") {
        stress("incident", &mut r, vec![hb_fast.clone(), ka_fast_s.clone()]);
        println!("{}", report::window_table(&r.incident));
    }

    // 9. Heartbeat gaps: hb at 1 ms (with --realtime when it has it), keepalived
    //    at its fastest; idle and starved.
    if want("gaps") {
        let mut hb_1ms: Vec<&str> = HB_1MS.to_vec();
        if realtime {
            hb_1ms.push("--realtime");
        }
        for s in [Settings::hb(&hb_1ms), ka_fast_s.clone()] {
            for starve in [false, true] {
                attempt(&mut r, &p, "gaps", |r| {
                    let row = scenarios::gaps(&plan, s.clone(), starve)?;
                    p.say(format!(
                        "gaps: {} `{}` {}: {} gaps",
                        row.tool.name(),
                        row.settings,
                        row.load,
                        row.gaps_ms.len()
                    ));
                    r.gaps.push(row);
                    Ok(())
                });
            }
        }
        println!("{}", report::gaps_table(&r.gaps));
    }

    // 10. The seeded chaos schedule against both.
    if want("chaos") {
        for s in [hb_fast.clone(), ka_fast_s.clone()] {
            attempt(&mut r, &p, "chaos", |r| {
                let row = scenarios::chaos(&plan, s.clone(), 0x5eed_c4a0)?;
                p.say(format!(
                    "chaos: {} `{}`: two answering {:.1} ms, none {:.1} ms",
                    row.tool.name(),
                    row.settings,
                    row.double_ms,
                    row.none_ms
                ));
                r.chaos.push(row);
                Ok(())
            });
        }
        println!("{}", report::chaos_table(&r.chaos));
    }

    // Plots and the report.
    r.meta.elapsed_s = p.0.elapsed().as_secs_f64();
    write_plots(&mut r, args)?;
    println!("{}", report::goals_table(&r));
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, report::render(&r))
        .with_context(|| format!("writing {}", args.out.display()))?;
    p.say(format!(
        "wrote {} and plots in {}",
        args.out.display(),
        args.img_dir.display()
    ));
    Ok(r.errors.is_empty())
}

/// The fast setting used when the search is not run.
const KA_CANDIDATES_FALLBACK: f64 = scenarios::KA_CANDIDATES[0];

/// hb-user's command line on node 1, with the lab's scratch paths made generic.
fn hb_command(bed: &Testbed) -> String {
    let scratch = bed.cluster.lab.scratch.display().to_string();
    format!("hb-user {}", bed.cluster.args(1).join(" ")).replace(&scratch, "<lab>")
}

fn write_plots(r: &mut Report, args: &Args) -> Result<()> {
    std::fs::create_dir_all(&args.img_dir)
        .with_context(|| format!("creating {}", args.img_dir.display()))?;
    // Link the images relative to the report when they live below its directory.
    let out_dir = args
        .out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .canonicalize()
        .unwrap_or_default();
    let img = args.img_dir.canonicalize()?;
    r.img_link_dir = img
        .strip_prefix(&out_dir)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| img.display().to_string());
    let mut images = Vec::new();
    for setting in ["fast", "default"] {
        let series: Vec<svg::Series> = r
            .failover
            .iter()
            .filter(|c| c.setting == setting && !c.samples_ms.is_empty())
            .map(|c| svg::Series {
                label: format!("{} {}", c.tool.name(), c.fault.name()),
                family: (c.tool == Tool::Keepalived) as usize,
                samples_ms: c.samples_ms.clone(),
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        let ka = r
            .meta
            .keepalived_settings
            .get(setting)
            .cloned()
            .unwrap_or_default();
        let settings = format!(
            "hb {}; keepalived {}",
            r.meta.hb_settings.get(setting).cloned().unwrap_or_default(),
            ka.split(" (").next().unwrap_or_default()
        );
        let file = if setting == "fast" {
            "failover-cdf.svg".to_string()
        } else {
            format!("failover-cdf-{setting}.svg")
        };
        let doc = svg::cdf(
            &format!("Failover time, {setting} setting ({settings})"),
            &series,
        )
        .map_err(anyhow::Error::msg)?;
        std::fs::write(args.img_dir.join(&file), doc)?;
        images.push((file, format!("Failover time CDF, {setting} setting")));
    }
    if !r.timelines.is_empty() {
        let mut rows = Vec::new();
        let mut tracks = Vec::new();
        for t in &r.timelines {
            let base = rows.len();
            rows.push(format!("{} node 1 (killed)", t.tool.name()));
            rows.push(format!("{} node 2", t.tool.name()));
            tracks.push(svg::TimelineTrack {
                label: format!("{} ({})", t.tool.name(), t.settings),
                family: (t.tool == Tool::Keepalived) as usize,
                replies: t
                    .replies
                    .iter()
                    .filter(|(_, node)| *node > 0)
                    .map(|&(ms, node)| (ms, base + node as usize - 1))
                    .collect(),
                failover_ms: t.failover_ms,
            });
        }
        let doc = svg::timeline(
            "Probe replies around a SIGKILL of the holder (median run, fast setting)",
            &rows,
            &tracks,
        )
        .map_err(anyhow::Error::msg)?;
        std::fs::write(args.img_dir.join("failover-timeline.svg"), doc)?;
        images.push((
            "failover-timeline.svg".into(),
            "Probe replies by responder around one SIGKILL failover".into(),
        ));
    }
    if !r.gaps.is_empty() {
        let series: Vec<svg::Series> = r
            .gaps
            .iter()
            .filter(|g| !g.gaps_ms.is_empty())
            .map(|g| svg::Series {
                label: format!("{} {} ({})", g.tool.name(), g.load, g.settings),
                family: (g.tool == Tool::Keepalived) as usize,
                samples_ms: g.gaps_ms.clone(),
            })
            .collect();
        if !series.is_empty() {
            let doc = svg::cdf("Heartbeat inter-departure gaps (node 1)", &series)
                .map_err(anyhow::Error::msg)?;
            std::fs::write(args.img_dir.join("gaps-cdf.svg"), doc)?;
            images.push((
                "gaps-cdf.svg".into(),
                "Heartbeat inter-departure gaps, CDF".into(),
            ));
        }
    }
    r.images = images;
    Ok(())
}
