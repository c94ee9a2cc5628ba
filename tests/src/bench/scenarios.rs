//! The benchmark's scenarios, each on fresh testbeds (one per tool), each
//! returning rows for the report. The I/O lives here; what the rows mean and how
//! they are summarised is in `report.rs`, `stats.rs` and `vipwatch.rs`.

use super::{
    flood::{self, Endpoints, Rng},
    host::{cpu_per_minute, cpu_sample, rss_kib},
    report::{
        ChaosRow, CpuRow, FailoverCell, Fault, FloodRow, GapRow, HbStabilityRow, StabilityRow,
        TimelineRun, WindowRow,
    },
    testbed::{Settings, Testbed, Tool, BACKUP, PRIMARY},
    vipwatch::{analyse, VipWatch, WindowStats},
};
use crate::cluster::{forget_process, track_process, CLIENT_IP, IFACE, VIP};
use anyhow::{bail, Context, Result};
use hb_user::status::session_id;
use std::time::{Duration, Instant};

/// hb's settings: "fast", "default" (hb's own defaults, spelled out), and the
/// loss scenario's.
pub const HB_FAST: &[&str] = &["--interval", "10ms", "--dead-after", "30ms"];
pub const HB_DEFAULT: &[&str] = &["--interval", "100ms", "--dead-after", "500ms"];
pub const HB_LOSS: &[&str] = &["--interval", "10ms", "--dead-after", "50ms"];
/// keepalived's default advert_int, and the ones tried for its fast setting.
pub const KA_DEFAULT: f64 = 1.0;
pub const KA_CANDIDATES: [f64; 7] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];
/// hb's settings tried for its fast setting, fastest first (with --realtime).
pub const HB_CANDIDATES: [[&str; 4]; 4] = [
    ["--interval", "1ms", "--dead-after", "4ms"],
    ["--interval", "2ms", "--dead-after", "8ms"],
    ["--interval", "5ms", "--dead-after", "15ms"],
    ["--interval", "10ms", "--dead-after", "30ms"],
];
/// 100 heartbeats per second: where CPU and syscalls are compared.
pub const HB_100: &[&str] = &["--interval", "10ms", "--dead-after", "30ms"];
/// hb at a 1 ms interval, where its heartbeat gaps are measured.
pub const HB_1MS: &[&str] = &["--interval", "1ms", "--dead-after", "4ms"];

/// Run counts and window lengths: the full run, or `--quick`.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub quick: bool,
    pub runs: usize,
    pub stability: Duration,
    pub cpu: Duration,
    pub flood_phase: Duration,
    pub loss: Duration,
    pub starvation: Duration,
    pub incident: Duration,
    pub xdp_repeat: u32,
    /// hb's stability search: the idle window per setting.
    pub hb_stability: Duration,
    /// Heartbeat gap capture, per tool and load.
    pub gaps: Duration,
    /// The chaos schedule: how many faults, and the time each gets.
    pub chaos_faults: usize,
    pub chaos_slot: Duration,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        let s = Duration::from_secs;
        if quick {
            Self {
                quick,
                runs: 3,
                stability: s(10),
                cpu: s(10),
                flood_phase: s(2),
                loss: s(5),
                starvation: s(5),
                incident: s(5),
                xdp_repeat: 200_000,
                hb_stability: s(5),
                gaps: s(3),
                chaos_faults: 5,
                chaos_slot: Duration::from_millis(2500),
            }
        } else {
            Self {
                quick,
                runs: 20,
                stability: s(60),
                cpu: s(60),
                flood_phase: s(10),
                loss: s(60),
                starvation: s(60),
                incident: s(30),
                xdp_repeat: 2_000_000,
                hb_stability: s(600),
                gaps: s(30),
                chaos_faults: 10,
                chaos_slot: s(4),
            }
        }
    }
}

/// Progress lines with the elapsed time.
pub struct Progress(pub Instant);

impl Progress {
    pub fn say(&self, msg: impl AsRef<str>) {
        println!(
            "[{:>6.1} s] {}",
            self.0.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }
}

/// The interval of hb flags, in ms ("--interval 10ms").
pub fn hb_interval_ms(args: &[String]) -> Option<f64> {
    let v = args.iter().skip_while(|a| *a != "--interval").nth(1)?;
    let n: f64 = v
        .trim_end_matches("ms")
        .trim_end_matches('s')
        .parse()
        .ok()?;
    Some(if v.ends_with("ms") { n } else { n * 1000.0 })
}

/// Messages per second node `id` sends at `settings` in steady state.
fn sends_per_s(settings: &Settings, id: u32) -> f64 {
    match settings {
        Settings::Hb(a) => hb_interval_ms(a).map_or(0.0, |ms| 1000.0 / ms),
        Settings::Keepalived(adv) if id == PRIMARY => 1.0 / adv,
        Settings::Keepalived(_) => 0.0,
    }
}

fn role(id: u32) -> &'static str {
    if id == PRIMARY {
        "node 1 (master)"
    } else {
        "node 2 (backup)"
    }
}

/// Watches the VIP on both nodes for `window`, doing `during` meanwhile (it
/// returns when the window's work is done, or sleeps the window when a no-op).
fn observe<T>(
    bed: &Testbed,
    window: Duration,
    during: impl FnOnce() -> Result<T>,
) -> Result<(WindowStats, T)> {
    observe_for(bed, window, false, during).map(|(s, t, _)| (s, t))
}

/// [`observe`], optionally ending at the first VIP change (a stability search
/// needs no more: the setting is unstable); also returns the time observed.
fn observe_for<T>(
    bed: &Testbed,
    window: Duration,
    stop_on_change: bool,
    during: impl FnOnce() -> Result<T>,
) -> Result<(WindowStats, T, Duration)> {
    let nodes: Vec<(u32, String)> = bed
        .cluster
        .nodes
        .iter()
        .map(|n| (n.id, n.ns.clone()))
        .collect();
    let watch = VipWatch::start(&nodes, VIP)?;
    let initial = bed.cluster.holders();
    let from = Instant::now();
    let out = during()?;
    while from.elapsed() < window {
        std::thread::sleep(
            window
                .saturating_sub(from.elapsed())
                .min(Duration::from_secs(1)),
        );
        if stop_on_change
            && analyse(&initial, &watch.events(), from, Instant::now(), PRIMARY).changes() > 0
        {
            break;
        }
    }
    let to = Instant::now();
    let events = watch.stop();
    let stats = analyse(&initial, &events, from, to, PRIMARY);
    if stats.changes() > 0 {
        eprintln!(
            "  {}: {} VIP changes in a window without faults; last transitions:\n{}",
            bed.tool().name(),
            stats.changes(),
            bed.explain()
        );
    }
    Ok((stats, out, to - from))
}

/// CPU and memory of every daemon process of `bed` over `window`, and what
/// happened to the VIP meanwhile.
fn steady_window(bed: &Testbed, window: Duration) -> Result<(WindowStats, Vec<CpuRow>)> {
    let mut procs: Vec<(String, u32, u32, bool)> = Vec::new();
    for id in [PRIMARY, BACKUP] {
        let pid = bed
            .controller_pid(id)
            .with_context(|| format!("no controller process on node {id}"))?;
        let name = match bed.tool() {
            Tool::Hb => "hb-user",
            Tool::Keepalived => "keepalived --vrrp (VRRP child)",
        };
        procs.push((name.into(), id, pid, true));
        if let Some(parent) = bed.parent_pid(id) {
            procs.push(("keepalived (parent)".into(), id, parent, false));
        }
    }
    let before: Vec<_> = procs
        .iter()
        .map(|p| cpu_sample(p.2).context("reading /proc/<pid>/stat"))
        .collect::<Result<_>>()?;
    let (stats, ()) = observe(bed, window, || Ok(()))?;
    let mut rows = Vec::new();
    for ((name, id, pid, controller), a) in procs.into_iter().zip(before) {
        let b = cpu_sample(pid).with_context(|| format!("{name} on node {id} exited"))?;
        rows.push(CpuRow {
            tool: bed.tool(),
            process: name.clone(),
            node: role(id).into(),
            sends_per_s: if controller {
                sends_per_s(&bed.settings, id)
            } else {
                0.0
            },
            cpu_s_per_min: cpu_per_minute(&a, &b),
            rss_kib: rss_kib(pid).unwrap_or(0),
            window_s: window.as_secs_f64(),
            controller,
            syscalls_per_s: None,
        });
    }
    // Syscalls in a window of their own: tracing slows the process.
    for row in rows.iter_mut().filter(|r| r.controller) {
        let id = if row.node.starts_with("node 1") {
            PRIMARY
        } else {
            BACKUP
        };
        if let Some(pid) = bed.controller_pid(id) {
            let w = syscall_window(window);
            let n = super::syscalls::count(pid, w)?;
            row.syscalls_per_s = Some(n as f64 / w.as_secs_f64());
        }
    }
    Ok((stats, rows))
}

/// The syscall-count window: a sixth of the CPU window, 3 to 10 s.
fn syscall_window(cpu_window: Duration) -> Duration {
    (cpu_window / 6).clamp(Duration::from_secs(3), Duration::from_secs(10))
}

/// The search for keepalived's fastest stable advert_int. Returns the rows, the
/// chosen value, and the CPU rows of the stable window (steady state at the fast
/// setting, so it doubles as keepalived's CPU measurement).
pub fn keepalived_stability(
    plan: &Plan,
    p: &Progress,
    rows: &mut Vec<StabilityRow>,
) -> Result<(f64, Vec<CpuRow>)> {
    for adv in KA_CANDIDATES {
        let bed = Testbed::up(Settings::Keepalived(adv))?;
        let (stats, cpu) = steady_window(&bed, plan.stability)?;
        let stable = stats.changes() == 0;
        rows.push(StabilityRow {
            advert_int: adv,
            window_s: plan.stability.as_secs_f64(),
            changes: stats.changes(),
            stable,
        });
        p.say(format!(
            "keepalived advert_int {adv}: {} VIP changes in {:?} without faults: {}",
            stats.changes(),
            plan.stability,
            if stable { "stable" } else { "unstable" }
        ));
        if stable {
            return Ok((adv, cpu));
        }
    }
    bail!("keepalived was unstable at every advert_int up to 1 s")
}

/// hb's controller CPU at `settings` over the plan's CPU window.
pub fn hb_cpu(plan: &Plan, settings: &Settings) -> Result<(WindowStats, Vec<CpuRow>)> {
    let bed = Testbed::up(settings.clone())?;
    steady_window(&bed, plan.cpu)
}

/// Probe replies from `mac` for the last 20 ms: the client reaches the holder.
fn wait_client_on(probe: &crate::probe::Probe, mac: [u8; 6], bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        let rec = probe.snapshot();
        let recent: Vec<_> = rec.replies.iter().rev().take(20).collect();
        if recent.len() == 20
            && recent.iter().all(|r| r.mac == mac)
            && recent[0].at.elapsed() < Duration::from_millis(10)
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What the client sees when its replies do not come from node 1: who answered
/// lately, who holds the VIP, and the client's neighbour entry for it.
fn client_diagnosis(bed: &Testbed, probe: &crate::probe::Probe) -> String {
    let rec = probe.snapshot();
    let since = Instant::now() - Duration::from_millis(500);
    let mut by_mac: std::collections::BTreeMap<String, usize> = Default::default();
    for r in rec.replies.iter().filter(|r| r.at >= since) {
        let who = match bed.cluster.nodes.iter().find(|n| n.mac == r.mac) {
            Some(n) => format!("node {}", n.id),
            None => "another MAC".into(),
        };
        *by_mac.entry(who).or_default() += 1;
    }
    let neigh = bed
        .cluster
        .lab
        .exec(
            &bed.cluster.client,
            &["ip", "neigh", "show", &VIP.to_string()],
        )
        .unwrap_or_default();
    format!(
        "replies in the last 500 ms {by_mac:?}, holders {:?}, client's entry `{}`",
        bed.cluster.holders(),
        neigh.trim()
    )
}

/// One failover run.
struct Run {
    /// Fault to the client's first reply from node 2's MAC; None: not within the bound.
    ms: Option<f64>,
    /// Probe replies around it as (ms since the fault, node id).
    replies: Vec<(f64, u32)>,
    /// Why the client needed help before the fault, if it did.
    note: Option<String>,
    /// After a SIGKILL: how long after the new holder's first reply the crashed
    /// node still answered probes addressed to its MAC (None: it did not answer).
    old_answered_ms: Option<Option<f64>>,
}

/// One failover: fault on node 1, time until the client's first reply from node
/// 2's MAC, then the restore.
fn failover_run(bed: &mut Testbed, fault: Fault, bound: Duration) -> Result<Run> {
    bed.wait_steady()?;
    let (m1, m2) = (bed.cluster.node(PRIMARY).mac, bed.cluster.node(BACKUP).mac);
    let probe = bed.cluster.probe(Duration::from_millis(1))?;
    let mut note = None;
    if !wait_client_on(&probe, m1, Duration::from_secs(5)) {
        // The client did not follow node 1's return (its neighbour entry still
        // names another MAC): note it, flush the entry, and measure anyway.
        let why = client_diagnosis(bed, &probe);
        bed.cluster.lab.exec(
            &bed.cluster.client,
            &["ip", "neigh", "flush", "to", &VIP.to_string()],
        )?;
        if !wait_client_on(&probe, m1, Duration::from_secs(5)) {
            bail!(
                "the client's probe replies do not come from node 1 alone, even after flushing its ARP entry: {}",
                client_diagnosis(bed, &probe)
            );
        }
        note = Some(why);
    }
    std::thread::sleep(Duration::from_millis(20));
    let t0 = match fault {
        Fault::Crash => bed.crash(PRIMARY)?,
        Fault::LinkDown => bed.set_link(PRIMARY, false)?,
        Fault::Graceful => bed.stop(PRIMARY)?,
    };
    let mut took = None;
    while t0.elapsed() < bound {
        if let Some(r) = probe.snapshot().first_from(m2, t0) {
            took = Some(r.at - t0);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(30));
    let rec = probe.stop();
    // Does the crashed node still answer for the VIP once the new holder does? The
    // client's own cache follows the new holder's announcements, so ask the old
    // MAC directly, for a window as long as the failover took (at least 200 ms).
    let mut old_answered_ms = None;
    if let (Fault::Crash, Some(first_new)) = (fault, rec.first_from(m2, t0).map(|r| r.at)) {
        let window = took.unwrap_or_default().max(Duration::from_millis(200));
        let client_mac = bed
            .cluster
            .lab
            .mac(&bed.cluster.client, crate::cluster::IFACE)?;
        let answers = bed.cluster.lab.in_netns(&bed.cluster.client, || {
            crate::probe::directed_echo(
                crate::cluster::IFACE,
                client_mac,
                crate::cluster::CLIENT_IP,
                m1,
                VIP,
                Duration::from_millis(2),
                window,
            )
        })??;
        old_answered_ms = Some(
            answers
                .iter()
                .max()
                .map(|last| last.saturating_duration_since(first_new).as_secs_f64() * 1000.0),
        );
    }
    let ms = took.map(|d| d.as_secs_f64() * 1000.0);
    let until = ms.unwrap_or(bound.as_secs_f64() * 1000.0) + 30.0;
    let replies = rec
        .replies
        .iter()
        .map(|r| {
            let rel = if r.at >= t0 {
                (r.at - t0).as_secs_f64() * 1000.0
            } else {
                -((t0 - r.at).as_secs_f64() * 1000.0)
            };
            let node = if r.mac == m1 {
                1
            } else if r.mac == m2 {
                2
            } else {
                0
            };
            (rel, node)
        })
        .filter(|(rel, _)| *rel >= -20.0 && *rel <= until)
        .collect();
    match fault {
        Fault::Crash => {
            bed.clear_stale_vip(PRIMARY)?;
            bed.start(PRIMARY)?;
        }
        Fault::LinkDown => {
            bed.set_link(PRIMARY, true)?;
        }
        Fault::Graceful => bed.start(PRIMARY)?,
    }
    Ok(Run {
        ms,
        replies,
        note,
        old_answered_ms,
    })
}

/// `plan.runs` failovers of one cell on one testbed. On an error the runs so
/// far are kept and the error returned beside them.
pub fn failover_cell(
    plan: &Plan,
    bed: &mut Testbed,
    setting: &str,
    fault: Fault,
    timelines: &mut Vec<TimelineRun>,
) -> (FailoverCell, Option<anyhow::Error>) {
    let bound = match bed.settings {
        Settings::Keepalived(adv) if adv >= 0.5 => Duration::from_secs(10),
        _ => Duration::from_secs(5),
    };
    let mut cell = FailoverCell {
        tool: bed.tool(),
        setting: setting.into(),
        fault,
        samples_ms: Vec::new(),
        missed: 0,
        notes: Vec::new(),
        old_answered_ms: Vec::new(),
    };
    let mut runs: Vec<(f64, Vec<(f64, u32)>)> = Vec::new();
    for i in 1..=plan.runs {
        let run = match failover_run(bed, fault, bound) {
            Ok(run) => run,
            Err(e) => return (cell, Some(e)),
        };
        if let Some(why) = run.note {
            eprintln!("  run {i}: the client did not follow node 1's return: {why}");
            cell.notes.push(format!(
                "run {i}: before the fault the client's replies did not come from node 1 ({why}); \
                 its ARP entry was flushed"
            ));
        }
        if let Some(old) = run.old_answered_ms {
            cell.old_answered_ms.push(old);
        }
        match run.ms {
            Some(ms) => {
                cell.samples_ms.push(ms);
                runs.push((ms, run.replies));
            }
            None => cell.missed += 1,
        }
    }
    // The timeline plot shows each tool's median SIGKILL run at the fast setting.
    if fault == Fault::Crash && setting == "fast" && !runs.is_empty() {
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ms, replies) = runs.swap_remove((runs.len() - 1) / 2);
        timelines.push(TimelineRun {
            tool: bed.tool(),
            settings: bed.settings.describe(),
            failover_ms: ms,
            replies,
        });
    }
    (cell, None)
}

/// XDP counters of node `id`, summed over links.
fn hb_counters(bed: &Testbed, id: u32) -> Result<std::collections::BTreeMap<String, u64>> {
    let mut sum = std::collections::BTreeMap::new();
    for link in bed.cluster.report(id)?.counters {
        for (k, v) in link.counters {
            *sum.entry(k).or_insert(0) += v;
        }
    }
    Ok(sum)
}

/// "bad_magic 123, bad_length 4": the refusal counters that grew.
fn refusals(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> String {
    let grew: Vec<String> = after
        .iter()
        // Refusals only: not what passed, was accepted, or the ARP watch.
        .filter(|(k, _)| !["passed", "accepted"].contains(&k.as_str()) && !k.contains("arp"))
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(*before.get(k).unwrap_or(&0));
            (d > 0).then(|| format!("{k} {d}"))
        })
        .collect();
    if grew.is_empty() {
        "none".into()
    } else {
        grew.join(", ")
    }
}

/// The client's frames reach node 2 through the bridge's forwarding table, not
/// by flooding every port: a few echo requests to node 2 (a VRRP backup sends
/// nothing on its own) teach the bridge where node 2 is.
fn prime_bridge(bed: &Testbed) -> Result<()> {
    let ip = bed.cluster.node(BACKUP).ip;
    let probe =
        crate::probe::Probe::start(&bed.cluster.client, IFACE, ip, Duration::from_millis(5))?;
    let deadline = Instant::now() + Duration::from_secs(2);
    while probe.snapshot().replies.is_empty() {
        if Instant::now() > deadline {
            bail!("node 2 does not answer the client");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn endpoints(bed: &Testbed) -> Result<Endpoints> {
    Ok(Endpoints {
        src_mac: bed.cluster.lab.mac(&bed.cluster.client, IFACE)?,
        dst_mac: bed.cluster.node(BACKUP).mac,
        src_ip: CLIENT_IP,
        dst_ip: bed.cluster.node(BACKUP).ip,
    })
}

fn flood_phase(
    bed: &Testbed,
    frames: &[Vec<u8>],
    window: Duration,
    rate: Option<f64>,
) -> Result<(WindowStats, flood::Sent, Option<f64>)> {
    let backup = bed.controller_pid(BACKUP);
    let cpu0 = backup.and_then(cpu_sample);
    let client = bed.cluster.client.clone();
    let (stats, sent) = observe(bed, window, || {
        bed.cluster
            .lab
            .in_netns(&client, || flood::send(IFACE, frames, window, rate))?
    })?;
    let cpu = cpu0
        .zip(backup.and_then(cpu_sample))
        .map(|(a, b)| cpu_per_minute(&a, &b));
    Ok((stats, sent, cpu))
}

/// hb's three flood phases on the backup; returns the rows and the junk rate.
pub fn flood_hb(
    plan: &Plan,
    p: &Progress,
    settings: &Settings,
    rows: &mut Vec<FloodRow>,
) -> Result<f64> {
    let bed = Testbed::up(settings.clone())?;
    prime_bridge(&bed)?;
    let e = endpoints(&bed)?;
    let key = bed.cluster.key()?;
    let r = bed.cluster.report(BACKUP)?;
    let peer = r.peers.first().context("no peer in node 2's status")?;
    let session = session_id(&peer.session).context("node 2 adopted no session of node 1")?;
    let seq = peer.seq;
    let node = r.node.context("node 2 has no status file")?;
    let ours = session_id(&node.session).context("node 2's session in its status")?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let port = hb_common::wire::DEFAULT_PORT;
    let template = flood::master_heartbeat(1, PRIMARY, BACKUP, session, ours);
    let wrong = hb_common::Key {
        k0: rng.next_u64(),
        k1: rng.next_u64(),
    };
    let phases: [(&str, Vec<Vec<u8>>); 3] = [
        (
            "junk UDP to port 694",
            flood::junk_udp(&e, port, 4096, &mut rng),
        ),
        (
            "heartbeats with a wrong key",
            flood::heartbeats(
                &e,
                port,
                template,
                (1..=4096).map(|i| seq + 1_000_000 + i),
                &wrong,
            ),
        ),
        (
            "replayed heartbeats (old seq, valid MAC)",
            flood::heartbeats(
                &e,
                port,
                template,
                seq.saturating_sub(4095).max(1)..=seq,
                &key,
            ),
        ),
    ];
    let mut junk_rate = 0.0;
    for (name, frames) in phases {
        let before = hb_counters(&bed, BACKUP)?;
        let (stats, sent, cpu) = flood_phase(&bed, &frames, plan.flood_phase, None)?;
        let after = hb_counters(&bed, BACKUP)?;
        if junk_rate == 0.0 {
            junk_rate = sent.rate();
        }
        p.say(format!(
            "flood hb, {name}: {} packets at {:.0} pps, {} VIP changes",
            sent.packets,
            sent.rate(),
            stats.changes()
        ));
        rows.push(FloodRow {
            tool: Tool::Hb,
            phase: name.into(),
            packets: sent.packets,
            rate_pps: sent.rate(),
            window_s: plan.flood_phase.as_secs_f64(),
            refused: refusals(&before, &after),
            changes: stats.changes(),
            backup_cpu_s_per_min: cpu,
        });
    }
    Ok(junk_rate)
}

/// keepalived's backup under junk VRRP at `rate`.
pub fn flood_keepalived(
    plan: &Plan,
    p: &Progress,
    adv: f64,
    rate: f64,
    rows: &mut Vec<FloodRow>,
) -> Result<()> {
    let bed = Testbed::up(Settings::Keepalived(adv))?;
    prime_bridge(&bed)?;
    // To the VRRP group, in frames addressed to the backup's MAC: keepalived binds
    // its receiving socket to 224.0.0.18, so junk unicast to the backup's address
    // would reach no VRRP socket at all.
    let e = Endpoints {
        dst_ip: std::net::Ipv4Addr::new(224, 0, 0, 18),
        ..endpoints(&bed)?
    };
    let frames = flood::junk_vrrp(&e, 4096, &mut Rng(0x2545_f491));
    let (stats, sent, cpu) = flood_phase(&bed, &frames, plan.flood_phase, Some(rate))?;
    p.say(format!(
        "flood keepalived, junk VRRP: {} packets at {:.0} pps, {} VIP changes",
        sent.packets,
        sent.rate(),
        stats.changes()
    ));
    rows.push(FloodRow {
        tool: Tool::Keepalived,
        phase: "junk IP protocol 112 (VRRP), paced to at most hb's junk rate".into(),
        packets: sent.packets,
        rate_pps: sent.rate(),
        window_s: plan.flood_phase.as_secs_f64(),
        refused: "(no counters)".into(),
        changes: stats.changes(),
        backup_cpu_s_per_min: cpu,
    });
    Ok(())
}

/// 20% of the master's heartbeats to the backup dropped on the switch.
pub fn loss(plan: &Plan, settings: Settings) -> Result<WindowRow> {
    let bed = Testbed::up(settings)?;
    let m = bed.nft_match();
    let rules = format!(
        "table bridge hbloss {{\n chain cut {{\n  type filter hook forward priority 0;\n  \
         iifname \"n1e0\" oifname \"n2e0\" {m} counter\n  \
         iifname \"n1e0\" oifname \"n2e0\" {m} numgen random mod 100 < 20 counter drop\n }}\n}}\n"
    );
    let path = bed.cluster.lab.scratch.join("loss.nft");
    std::fs::write(&path, rules)?;
    let sw = bed.cluster.sw.clone();
    let (stats, ()) = observe(&bed, plan.loss, || {
        bed.cluster
            .lab
            .exec(&sw, &["nft", "-f", path.to_str().expect("utf-8")])
            .map(|_| ())
    })?;
    let listing = bed
        .cluster
        .lab
        .exec(&sw, &["nft", "list", "table", "bridge", "hbloss"])?;
    let counts = nft_packet_counts(&listing);
    let note = match counts.as_slice() {
        [all, dropped] if *all > 0 => format!(
            "{dropped} of {all} heartbeats dropped ({:.1}%)",
            100.0 * *dropped as f64 / *all as f64
        ),
        _ => "no heartbeats matched the loss rule".into(),
    };
    Ok(WindowRow {
        tool: bed.tool(),
        settings: bed.settings.describe(),
        window_s: plan.loss.as_secs_f64(),
        changes: stats.changes(),
        double_s: stats.double.as_secs_f64(),
        note,
    })
}

/// "counter packets N" values of an `nft list` output, in rule order.
pub fn nft_packet_counts(listing: &str) -> Vec<u64> {
    listing
        .split("counter packets ")
        .skip(1)
        .filter_map(|s| s.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Both cores busy for the window.
pub fn starvation(plan: &Plan, settings: Settings) -> Result<WindowRow> {
    let bed = Testbed::up(settings)?;
    let cores = hogs_count();
    let mut hogs = Vec::new();
    let (stats, ()) = observe(&bed, plan.starvation, || start_hogs(&mut hogs))
        .inspect_err(|_| stop_hogs(&mut hogs))?;
    stop_hogs(&mut hogs);
    Ok(WindowRow {
        tool: bed.tool(),
        settings: bed.settings.describe(),
        window_s: plan.starvation.as_secs_f64(),
        changes: stats.changes(),
        double_s: stats.double.as_secs_f64(),
        note: format!("{cores} busy loops"),
    })
}

fn stop_hogs(hogs: &mut Vec<std::process::Child>) {
    for mut c in hogs.drain(..) {
        let _ = c.kill();
        let _ = c.wait();
        forget_process(c.id() as i32);
    }
}

/// The heartbeat port (or VRRP) dropped by iptables INPUT on both nodes.
pub fn incident(plan: &Plan, settings: Settings) -> Result<WindowRow> {
    let bed = Testbed::up(settings)?;
    let (stats, ()) = observe(&bed, plan.incident, || bed.firewall(true, "INPUT"))?;
    let holders_at_end = bed.cluster.holders();
    bed.firewall(false, "INPUT")?;
    Ok(WindowRow {
        tool: bed.tool(),
        settings: bed.settings.describe(),
        window_s: plan.incident.as_secs_f64(),
        changes: stats.changes(),
        double_s: stats.double.as_secs_f64(),
        note: format!("holders at the end: {holders_at_end:?}"),
    })
}

/// The search for hb's fastest stable setting: per candidate, an idle window
/// with the client probing, then CPU starvation, then the flood phases; the
/// first with no VIP change in any is the fast setting (its flags returned).
pub fn hb_stability(
    plan: &Plan,
    p: &Progress,
    realtime: bool,
    rows: &mut Vec<HbStabilityRow>,
) -> Result<Vec<String>> {
    for cand in HB_CANDIDATES {
        let mut args: Vec<&str> = cand.to_vec();
        if realtime {
            args.push("--realtime");
        }
        let s = Settings::hb(&args);
        let mut row = HbStabilityRow {
            settings: args.join(" "),
            idle_s: plan.hb_stability.as_secs_f64(),
            idle_changes: 0,
            starvation_changes: None,
            flood_changes: None,
            stable: false,
        };
        {
            let bed = Testbed::up(s.clone())?;
            let (stats, probe, took) = observe_for(&bed, plan.hb_stability, true, || {
                bed.cluster.probe(Duration::from_millis(2))
            })?;
            drop(probe.stop());
            row.idle_changes = stats.changes();
            row.idle_s = took.as_secs_f64();
        }
        if row.idle_changes == 0 {
            row.starvation_changes = Some(starvation(plan, s.clone())?.changes);
        }
        if row.starvation_changes == Some(0) {
            let mut flood = Vec::new();
            flood_hb(plan, p, &s, &mut flood)?;
            row.flood_changes = Some(flood.iter().map(|f| f.changes).sum());
        }
        row.stable = row.flood_changes == Some(0);
        p.say(format!(
            "hb `{}`: {} VIP changes idle, {:?} starved, {:?} flooded: {}",
            row.settings,
            row.idle_changes,
            row.starvation_changes,
            row.flood_changes,
            if row.stable { "stable" } else { "unstable" }
        ));
        let stable = row.stable;
        rows.push(row);
        if stable {
            return Ok(args.iter().map(|a| a.to_string()).collect());
        }
    }
    bail!("hb was unstable at every setting up to 10 ms / 30 ms")
}

/// Node 1's heartbeat (or advertisement) gaps at `settings`, idle or with a
/// busy loop per core.
pub fn gaps(plan: &Plan, settings: Settings, starve: bool) -> Result<GapRow> {
    let bed = Testbed::up(settings)?;
    let mac = bed.cluster.node(PRIMARY).mac;
    let port = format!("n{PRIMARY}e0");
    let capture =
        super::gaps::Capture::start(&bed.cluster.sw, &port, mac, hb_common::wire::DEFAULT_PORT)?;
    let mut hogs = Vec::new();
    if starve {
        start_hogs(&mut hogs)?;
    }
    std::thread::sleep(plan.gaps);
    stop_hogs(&mut hogs);
    let stamps = capture.stop()?;
    Ok(GapRow {
        tool: bed.tool(),
        settings: bed.settings.describe(),
        load: if starve {
            format!("{} busy loops", hogs_count())
        } else {
            "idle".into()
        },
        window_s: plan.gaps.as_secs_f64(),
        gaps_ms: super::gaps::gaps_ms(&stamps),
    })
}

fn hogs_count() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn start_hogs(hogs: &mut Vec<std::process::Child>) -> Result<()> {
    for _ in 0..hogs_count() {
        let c = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .context("starting a busy loop")?;
        track_process(c.id() as i32);
        hogs.push(c);
    }
    Ok(())
}

/// The faults of the chaos schedule.
#[derive(Clone, Copy, Debug)]
enum Chaos {
    CrashRestart,
    GracefulRestart,
    LinkFlap,
    Pause,
    Firewall,
}

impl Chaos {
    const ALL: [Chaos; 5] = [
        Chaos::CrashRestart,
        Chaos::GracefulRestart,
        Chaos::LinkFlap,
        Chaos::Pause,
        Chaos::Firewall,
    ];

    fn name(self) -> &'static str {
        match self {
            Chaos::CrashRestart => "SIGKILL and restart",
            Chaos::GracefulRestart => "graceful restart",
            Chaos::LinkFlap => "300 ms link flap",
            Chaos::Pause => "300 ms SIGSTOP",
            Chaos::Firewall => "1 s firewall rule",
        }
    }
}

/// The schedule: every fault in turn, in an order shuffled from `seed` (the
/// same for both tools).
fn chaos_schedule(n: usize, seed: u64) -> Vec<Chaos> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut round = Chaos::ALL.to_vec();
        for i in (1..round.len()).rev() {
            round.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        out.extend(round);
    }
    out.truncate(n);
    out
}

/// Time covered by `replies` (ms since the start, sorted): a node answers from
/// one reply to the next when they are at most `join` apart (a lone reply
/// covers no time). Returns merged, sorted intervals.
pub fn answering(replies: &[f64], join: f64) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for &t in replies {
        match out.last_mut() {
            Some(last) if t - last.1 <= join => last.1 = t,
            _ => out.push((t, t)),
        }
    }
    out
}

fn length(iv: &[(f64, f64)]) -> f64 {
    iv.iter().map(|(a, b)| b - a).sum()
}

/// Overlap of two sorted interval lists.
fn overlap(a: &[(f64, f64)], b: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (lo, hi) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        if lo < hi {
            out.push((lo, hi));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// (two answering, none answering) in ms over `[from, to]`.
pub fn answer_times(r1: &[f64], r2: &[f64], join: f64, from: f64, to: f64) -> (f64, f64) {
    let clip = |iv: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
        iv.into_iter()
            .map(|(a, b)| (a.max(from), b.min(to)))
            .filter(|(a, b)| a < b)
            .collect()
    };
    let (a, b) = (clip(answering(r1, join)), clip(answering(r2, join)));
    // + 0.0: a sum of nothing is -0.0.
    let both = length(&overlap(&a, &b)) + 0.0;
    let none = (to - from) - (length(&a) + length(&b) - both);
    (both, none.max(0.0))
}

/// The seeded fault schedule against `settings`, the client probing both MACs.
pub fn chaos(plan: &Plan, settings: Settings, seed: u64) -> Result<ChaosRow> {
    let mut bed = Testbed::up(settings)?;
    let schedule = chaos_schedule(plan.chaos_faults, seed);
    let period = Duration::from_millis(2);
    let window = plan.chaos_slot * schedule.len() as u32 + Duration::from_secs(1);
    let client_mac = bed.cluster.lab.mac(&bed.cluster.client, IFACE)?;
    let netns = format!("/var/run/netns/{}", bed.cluster.client);
    let spawn = |mac: [u8; 6]| -> Result<std::thread::JoinHandle<Result<Vec<Instant>>>> {
        let netns = std::fs::File::open(&netns)?;
        Ok(std::thread::spawn(move || {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            crate::probe::directed_echo(IFACE, client_mac, CLIENT_IP, mac, VIP, period, window)
        }))
    };
    let start = Instant::now();
    let probes = [
        spawn(bed.cluster.node(PRIMARY).mac)?,
        spawn(bed.cluster.node(BACKUP).mac)?,
    ];
    std::thread::sleep(Duration::from_millis(500));
    let mut result = Ok(());
    for (i, fault) in schedule.iter().enumerate() {
        let slot_end = start + Duration::from_millis(500) + plan.chaos_slot * (i as u32 + 1);
        // The holder takes the fault (node 1 when nobody holds).
        let id = bed.cluster.holders().first().copied().unwrap_or(PRIMARY);
        let mut step = || -> Result<()> {
            match fault {
                Chaos::CrashRestart => {
                    bed.crash(id)?;
                    std::thread::sleep(Duration::from_millis(500));
                    bed.clear_stale_vip(id)?;
                    bed.start(id)?;
                }
                Chaos::GracefulRestart => {
                    bed.stop(id)?;
                    bed.start(id)?;
                }
                Chaos::LinkFlap => {
                    bed.set_link(id, false)?;
                    std::thread::sleep(Duration::from_millis(300));
                    bed.set_link(id, true)?;
                }
                Chaos::Pause => {
                    let pid = bed.controller_pid(id).context("no controller")?;
                    let pid = nix::unistd::Pid::from_raw(pid as i32);
                    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)?;
                    std::thread::sleep(Duration::from_millis(300));
                    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT)?;
                }
                Chaos::Firewall => {
                    bed.firewall(true, "INPUT")?;
                    std::thread::sleep(Duration::from_secs(1));
                    bed.firewall(false, "INPUT")?;
                }
            }
            Ok(())
        };
        if let Err(e) = step() {
            result = Err(e.context(format!("chaos: {}", fault.name())));
            break;
        }
        std::thread::sleep(slot_end.saturating_duration_since(Instant::now()));
    }
    let ms = |v: Vec<Instant>| -> Vec<f64> {
        v.into_iter()
            .map(|t| t.saturating_duration_since(start).as_secs_f64() * 1000.0)
            .collect()
    };
    let [p1, p2] = probes;
    let r1 = ms(p1.join().map_err(|_| anyhow::anyhow!("probe panicked"))??);
    let r2 = ms(p2.join().map_err(|_| anyhow::anyhow!("probe panicked"))??);
    result?;
    // From the first fault's slot to the end of the probes' window.
    let (from, to) = (500.0, window.as_secs_f64() * 1000.0);
    let join = 3.0 * period.as_secs_f64() * 1000.0;
    let (double_ms, none_ms) = answer_times(&r1, &r2, join, from, to);
    Ok(ChaosRow {
        tool: bed.tool(),
        settings: bed.settings.describe(),
        faults: schedule.iter().map(|f| f.name().to_string()).collect(),
        window_s: (to - from) / 1000.0,
        double_ms,
        none_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_times_split_both_one_and_none() {
        // Node 1 answers 0..100 ms, node 2 from 90 ms on: 10 ms both, then a
        // hole in node 2's answers from 118 to 170 ms: 52 ms none.
        let r1: Vec<f64> = (0..=50).map(|i| i as f64 * 2.0).collect();
        let mut r2: Vec<f64> = (45..=100).map(|i| i as f64 * 2.0).collect();
        r2.retain(|t| !(120.0..170.0).contains(t));
        let (both, none) = answer_times(&r1, &r2, 6.0, 0.0, 200.0);
        assert!((both - 10.0).abs() < 1e-9, "{both}");
        assert!((none - 52.0).abs() < 1e-9, "{none}");
        // A clean hand-over: no overlap, the gap between the last and the first.
        let (both, none) = answer_times(&[0.0, 2.0, 4.0], &[5.0, 7.0], 6.0, 0.0, 7.0);
        assert_eq!((both, none), (0.0, 1.0));
    }

    #[test]
    fn the_chaos_schedule_is_seeded_and_covers_every_fault() {
        let a: Vec<&str> = chaos_schedule(10, 7).iter().map(|c| c.name()).collect();
        let b: Vec<&str> = chaos_schedule(10, 7).iter().map(|c| c.name()).collect();
        assert_eq!(a, b);
        for f in Chaos::ALL {
            assert_eq!(a.iter().filter(|n| **n == f.name()).count(), 2);
        }
    }

    #[test]
    fn reads_hb_intervals() {
        let a: Vec<String> = HB_FAST.iter().map(|s| s.to_string()).collect();
        assert_eq!(hb_interval_ms(&a), Some(10.0));
        let b: Vec<String> = ["--interval", "1s"].iter().map(|s| s.to_string()).collect();
        assert_eq!(hb_interval_ms(&b), Some(1000.0));
        assert_eq!(sends_per_s(&Settings::Keepalived(0.05), 1), 20.0);
        assert_eq!(sends_per_s(&Settings::Keepalived(0.05), 2), 0.0);
    }

    #[test]
    fn reads_nft_counters() {
        let l = "table bridge hbloss {\n chain cut {\n  iifname \"n1e0\" udp dport 694 counter packets 500 bytes 1 \n  iifname \"n1e0\" udp dport 694 numgen random mod 100 < 20 counter packets 98 bytes 2 drop\n }\n}";
        assert_eq!(nft_packet_counts(l), vec![500, 98]);
    }
}
