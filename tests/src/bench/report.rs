//! The benchmark's results and their rendering as docs/BENCHMARKS.md (pure: the
//! scenarios fill a `Report`, `render` turns it into markdown, `goals` judges it).

use super::{
    stats::{fmt_ms, fmt_ratio, percentile, summarize, Summary},
    testbed::Tool,
};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    Crash,
    LinkDown,
    Graceful,
}

impl Fault {
    pub const ALL: [Fault; 3] = [Fault::Crash, Fault::LinkDown, Fault::Graceful];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Crash => "SIGKILL",
            Fault::LinkDown => "link down",
            Fault::Graceful => "graceful stop (SIGTERM)",
        }
    }
}

/// One (tool, setting, fault) cell: failover times in ms.
#[derive(Clone, Debug, PartialEq)]
pub struct FailoverCell {
    pub tool: Tool,
    /// "fast" or "default".
    pub setting: String,
    pub fault: Fault,
    pub samples_ms: Vec<f64>,
    /// Runs where the new holder never answered within the bound.
    pub missed: usize,
    /// Anything odd seen during the runs.
    pub notes: Vec<String>,
    /// SIGKILL runs: per run, how long after the new holder's first reply the
    /// crashed node still answered probes sent to its MAC (None: not at all).
    pub old_answered_ms: Vec<Option<f64>>,
}

impl FailoverCell {
    pub fn summary(&self) -> Option<Summary> {
        summarize(&self.samples_ms, self.missed)
    }
}

/// One advert_int tried in the search for keepalived's fastest stable setting.
#[derive(Clone, Debug, PartialEq)]
pub struct StabilityRow {
    pub advert_int: f64,
    pub window_s: f64,
    /// VIP changes with no fault injected.
    pub changes: usize,
    pub stable: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CpuRow {
    pub tool: Tool,
    /// "hb-user", "keepalived --vrrp (VRRP child)", "keepalived (parent)".
    pub process: String,
    /// "node 1 (master)".
    pub node: String,
    /// Heartbeats or adverts this process sends per second.
    pub sends_per_s: f64,
    pub cpu_s_per_min: f64,
    pub rss_kib: u64,
    pub window_s: f64,
    /// Whether this row is the tool's controller (compared for the goal).
    pub controller: bool,
    /// Syscalls per second, all threads (`strace -c -f`, a window of its own
    /// after the CPU window: tracing slows the process).
    pub syscalls_per_s: Option<f64>,
}

impl CpuRow {
    /// Syscalls per message sent (None for a process that sends nothing).
    pub fn syscalls_per_msg(&self) -> Option<f64> {
        self.syscalls_per_s
            .filter(|_| self.sends_per_s > 0.0)
            .map(|s| s / self.sends_per_s)
    }
}

/// One setting tried in the search for hb's fastest stable setting.
#[derive(Clone, Debug, PartialEq)]
pub struct HbStabilityRow {
    /// hb-user flags.
    pub settings: String,
    pub idle_s: f64,
    /// VIP changes with no fault, the client probing.
    pub idle_changes: usize,
    /// VIP changes under CPU starvation (None: not tried, an earlier phase failed).
    pub starvation_changes: Option<usize>,
    /// VIP changes over the three flood phases (None: not tried).
    pub flood_changes: Option<usize>,
    pub stable: bool,
}

/// Heartbeat (or VRRP advertisement) inter-departure gaps of node 1, as the
/// switch saw them.
#[derive(Clone, Debug, PartialEq)]
pub struct GapRow {
    pub tool: Tool,
    pub settings: String,
    /// "idle" or "2 busy loops".
    pub load: String,
    pub window_s: f64,
    pub gaps_ms: Vec<f64>,
}

/// The seeded fault schedule against one tool: how long two nodes answered the
/// client for the VIP, and how long none did.
#[derive(Clone, Debug, PartialEq)]
pub struct ChaosRow {
    pub tool: Tool,
    pub settings: String,
    /// The faults in schedule order.
    pub faults: Vec<String>,
    pub window_s: f64,
    pub double_ms: f64,
    pub none_ms: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FloodRow {
    pub tool: Tool,
    pub phase: String,
    pub packets: u64,
    pub rate_pps: f64,
    pub window_s: f64,
    /// What the target refused, e.g. "bad_mac 1234, replayed 56".
    pub refused: String,
    pub changes: usize,
    /// The backup's controller CPU during the phase, s/min.
    pub backup_cpu_s_per_min: Option<f64>,
}

/// A window of steady operation under some stress, with no fault injected.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowRow {
    pub tool: Tool,
    /// The tool's settings in this window.
    pub settings: String,
    pub window_s: f64,
    /// VIP changes (false failovers).
    pub changes: usize,
    pub double_s: f64,
    pub note: String,
}

/// Probe replies around one failover: ms relative to the fault, and who answered.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineRun {
    pub tool: Tool,
    pub settings: String,
    pub failover_ms: f64,
    /// (ms since the fault, node id that answered; 0 = an unknown MAC).
    pub replies: Vec<(f64, u32)>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Meta {
    pub quick: bool,
    pub machine: String,
    pub date: String,
    pub revision: String,
    pub keepalived_version: String,
    pub runs_per_cell: usize,
    pub elapsed_s: f64,
    /// hb-user flags per setting name ("fast", "default", "loss").
    pub hb_settings: BTreeMap<String, String>,
    /// keepalived advert_int per setting name.
    pub keepalived_settings: BTreeMap<String, String>,
    /// One node's keepalived.conf at the fast setting, and its command line.
    pub keepalived_conf: String,
    pub keepalived_cmd: String,
    pub hb_cmd: String,
    /// Whether `hb-user run --help` offers --realtime.
    pub hb_realtime: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub meta: Meta,
    /// bench-xdp's output (header line and table).
    pub xdp: Option<String>,
    /// The prose of the data-plane section (kept from the existing document).
    pub xdp_prose: String,
    pub stability: Vec<StabilityRow>,
    pub hb_stability: Vec<HbStabilityRow>,
    pub gaps: Vec<GapRow>,
    pub chaos: Vec<ChaosRow>,
    pub failover: Vec<FailoverCell>,
    pub cpu: Vec<CpuRow>,
    pub flood: Vec<FloodRow>,
    pub loss: Vec<WindowRow>,
    pub starvation: Vec<WindowRow>,
    pub incident: Vec<WindowRow>,
    pub timelines: Vec<TimelineRun>,
    /// Scenario name -> what went wrong; rendered in its section.
    pub errors: BTreeMap<String, String>,
    /// Image file names (relative to the document's img dir link) to link.
    pub images: Vec<(String, String)>,
    /// Path of the image directory as linked from the document, e.g. "img".
    pub img_link_dir: String,
}

/// After a whole-daemon SIGKILL, the crashed node's kernel still has the VIP: does
/// it go on answering next to the new holder? Probes sent straight to its MAC for
/// as long as the failover took (at least 200 ms) after the new holder's first reply.
pub fn old_holder_table(r: &Report) -> String {
    let cells: Vec<&FailoverCell> = r
        .failover
        .iter()
        .filter(|c| c.fault == Fault::Crash && !c.old_answered_ms.is_empty())
        .collect();
    if cells.is_empty() {
        return String::new();
    }
    let mut d = String::from(
        "\n### The crashed node after a SIGKILL\n\nAfter each SIGKILL run, ICMP echoes to the VIP were sent in frames addressed to the \
crashed node's MAC, from the new holder's first reply on, for as long as the failover took (at least 200 ms). \
\"Still answering\" is the share of runs in which the crashed node replied; \"for\" is how long after the \
new holder's first reply its last reply came (at least that long: the window ends there).\n\n",
    );
    let rows: Vec<Vec<String>> = cells
        .iter()
        .map(|c| {
            let answered: Vec<f64> = c.old_answered_ms.iter().flatten().copied().collect();
            let n = c.old_answered_ms.len();
            let longest = answered.iter().copied().fold(f64::NAN, f64::max);
            vec![
                c.tool.name().to_string(),
                c.setting.clone(),
                n.to_string(),
                format!(
                    "{} of {n} ({:.0}%)",
                    answered.len(),
                    100.0 * answered.len() as f64 / n as f64
                ),
                if answered.is_empty() {
                    "-".into()
                } else {
                    format!("{longest:.1} ms")
                },
            ]
        })
        .collect();
    d += &md_table(
        &[
            "tool",
            "setting",
            "SIGKILL runs",
            "still answering for the VIP",
            "for (longest)",
        ],
        "llrrr",
        &rows,
    );
    d
}

/// The heading of every section `render` writes: the integration test checks them.
pub const SECTIONS: [&str; 13] = [
    "## Goals",
    "## Settings",
    "## Failover time",
    "## hb's fastest stable setting",
    "## keepalived's fastest stable advert_int",
    "## Heartbeat gaps",
    "## Chaos: the same faults against both",
    "## Data-plane cost",
    "## Controller CPU and memory",
    "## Flood",
    "## Heartbeat loss",
    "## CPU starvation",
    "## The incident: a firewall on the heartbeat port",
];

pub const XDP_START: &str = "<!-- bench-xdp:start -->";
pub const XDP_END: &str = "<!-- bench-xdp:end -->";

/// The data-plane section's prose when the document has none yet.
pub const DEFAULT_XDP_PROSE: &str =
    "The XDP program sits on a production NIC and sees every packet, so what matters most
is its cost on traffic that is not a heartbeat. `cargo xtask bench-xdp` runs the real
object with `BPF_PROG_TEST_RUN` many times per frame and divides by an empty XDP
program (`return XDP_PASS`) run in the same process. Goals: non-heartbeat traffic
within 1.3x of the empty program; a valid heartbeat, MAC included, under 150 ns.
";

/// The prose between "## Data-plane cost" and the bench-xdp markers of an
/// existing document, so a rerun keeps what people wrote there.
pub fn extract_xdp_prose(doc: &str) -> Option<String> {
    let start = doc.find("## Data-plane cost\n")? + "## Data-plane cost\n".len();
    let end = doc[start..].find(XDP_START)? + start;
    let prose = doc[start..end].trim();
    (!prose.is_empty()).then(|| format!("{prose}\n"))
}

/// The bench-xdp block of an existing document (between the markers).
pub fn extract_xdp_block(doc: &str) -> Option<String> {
    let s = doc.find(XDP_START)? + XDP_START.len();
    let e = doc[s..].find(XDP_END)? + s;
    Some(doc[s..e].trim().to_string())
}

/// A markdown table; `align` has one letter per column, 'l' or 'r'.
pub fn md_table(head: &[&str], align: &str, rows: &[Vec<String>]) -> String {
    let mut t = format!("| {} |\n|", head.join(" | "));
    for (i, _) in head.iter().enumerate() {
        t += if align.as_bytes().get(i) == Some(&b'r') {
            "---:|"
        } else {
            "---|"
        };
    }
    t += "\n";
    for r in rows {
        let cells: Vec<String> = r.iter().map(|c| c.replace('|', "\\|")).collect();
        t += &format!("| {} |\n", cells.join(" | "));
    }
    t
}

/// One goal with the figure it is judged on; `met` is None when not measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Goal {
    pub goal: String,
    pub figure: String,
    pub met: Option<bool>,
}

fn cell<'a>(r: &'a Report, tool: Tool, setting: &str, fault: Fault) -> Option<&'a FailoverCell> {
    r.failover
        .iter()
        .find(|c| c.tool == tool && c.setting == setting && c.fault == fault)
}

pub fn goals(r: &Report) -> Vec<Goal> {
    let mut g = Vec::new();
    let p50 = |tool, fault| {
        cell(r, tool, "fast", fault)
            .and_then(|c| c.summary())
            .map(|s| s.p50)
    };
    for (fault, bound) in [
        (Fault::Crash, 3.0),
        (Fault::LinkDown, 6.0),
        (Fault::Graceful, 2.0),
    ] {
        let hb = p50(Tool::Hb, fault);
        g.push(Goal {
            goal: format!(
                "hb failover p50 at its fastest stable setting <= {}, {}",
                fmt_ms(bound),
                fault.name()
            ),
            figure: hb.map_or("not measured".into(), fmt_ms),
            met: hb.map(|h| h <= bound),
        });
        let ka = p50(Tool::Keepalived, fault);
        g.push(Goal {
            goal: format!(
                "hb at least 5x faster than keepalived at its fastest stable setting, {} (p50)",
                fault.name()
            ),
            figure: match (hb, ka) {
                (Some(h), Some(k)) => format!(
                    "keepalived {} / hb {} = {}",
                    fmt_ms(k),
                    fmt_ms(h),
                    fmt_ratio(k, h)
                ),
                _ => "not measured".into(),
            },
            met: hb.zip(ka).map(|(h, k)| k >= 5.0 * h),
        });
    }
    for (load, realtime, bound) in [("idle", false, 1.5), ("2 busy loops", true, 2.0)] {
        let p999 = r
            .gaps
            .iter()
            .find(|x| {
                x.tool == Tool::Hb
                    && x.load == load
                    && x.settings.contains("--interval 1ms")
                    && (!realtime || x.settings.contains("--realtime"))
            })
            .and_then(|x| gap_summary(&x.gaps_ms))
            .map(|s| s[2]);
        g.push(Goal {
            goal: format!(
                "hb heartbeat gaps at a 1 ms interval, {load}{}: p99.9 <= {bound} ms",
                if realtime { " (--realtime)" } else { "" }
            ),
            figure: p999.map_or("not measured".into(), |v| format!("{v:.2} ms")),
            met: p999.map(|v| v <= bound),
        });
    }
    let busiest = |tool, f: &dyn Fn(&CpuRow) -> Option<f64>| {
        r.cpu
            .iter()
            .filter(|c| c.tool == tool && c.controller)
            .filter_map(f)
            .reduce(f64::max)
    };
    let cpu = |c: &CpuRow| Some(c.cpu_s_per_min);
    let (hb, ka) = (busiest(Tool::Hb, &cpu), busiest(Tool::Keepalived, &cpu));
    g.push(Goal {
        goal: "hb controller CPU <= 0.5x keepalived's VRRP master at 100 messages/s (busiest node of each)"
            .into(),
        figure: match (hb, ka) {
            (Some(h), Some(k)) => format!("hb {h:.3} s/min, keepalived {k:.3} s/min"),
            _ => "not measured".into(),
        },
        met: hb.zip(ka).map(|(h, k)| h <= 0.5 * k),
    });
    let sys = busiest(Tool::Hb, &|c: &CpuRow| c.syscalls_per_msg());
    g.push(Goal {
        goal: "hb <= 3 syscalls per heartbeat in steady state (busiest node)".into(),
        figure: sys.map_or("not measured".into(), |v| format!("{v:.2}")),
        met: sys.map(|v| v <= 3.0),
    });
    let rss = busiest(Tool::Hb, &|c: &CpuRow| Some(c.rss_kib as f64 / 1024.0));
    g.push(Goal {
        goal: "hb controller RSS <= 8 MiB".into(),
        figure: rss.map_or("not measured".into(), |v| format!("{v:.1} MiB")),
        met: rss.map(|v| v <= 8.0),
    });
    let udp = r.xdp.as_deref().and_then(xdp_ratio);
    g.push(Goal {
        goal: "non-heartbeat UDP through the XDP program <= 1.3x an empty program".into(),
        figure: udp.map_or("not measured".into(), |v| format!("{v:.2}x")),
        met: udp.map(|v| v <= 1.3),
    });
    let chaos = |tool| r.chaos.iter().find(|c| c.tool == tool);
    let (hc, kc) = (chaos(Tool::Hb), chaos(Tool::Keepalived));
    g.push(Goal {
        goal: "chaos schedule: zero ms of two nodes answering (hb)".into(),
        figure: hc.map_or("not measured".into(), |c| fmt_ms(c.double_ms)),
        met: hc.map(|c| c.double_ms == 0.0),
    });
    g.push(Goal {
        goal: "chaos schedule: hb's time with no node answering <= half keepalived's".into(),
        figure: match (hc, kc) {
            (Some(h), Some(k)) => format!(
                "hb {} / keepalived {}",
                fmt_ms(h.none_ms),
                fmt_ms(k.none_ms)
            ),
            _ => "not measured".into(),
        },
        met: hc.zip(kc).map(|(h, k)| h.none_ms <= 0.5 * k.none_ms),
    });
    let hb_changes = |rows: &[WindowRow], key: &str| -> Option<usize> {
        let v: Vec<usize> = rows
            .iter()
            .filter(|w| w.tool == Tool::Hb && !w.settings.contains("--realtime"))
            .map(|w| w.changes)
            .collect();
        (!v.is_empty() && !r.errors.contains_key(key)).then(|| v.iter().sum())
    };
    let flood: Vec<usize> = r
        .flood
        .iter()
        .filter(|f| f.tool == Tool::Hb)
        .map(|f| f.changes)
        .collect();
    let flood = (!flood.is_empty() && !r.errors.contains_key("flood")).then(|| flood.iter().sum());
    for (what, n) in [
        ("flood", flood),
        ("20% heartbeat loss", hb_changes(&r.loss, "loss")),
        ("CPU starvation", hb_changes(&r.starvation, "starvation")),
    ] {
        g.push(Goal {
            goal: format!("zero hb false failovers under {what}"),
            figure: n.map_or("not measured".into(), |n| format!("{n} VIP changes")),
            met: n.map(|n| n == 0),
        });
    }
    let double = r
        .incident
        .iter()
        .find(|w| w.tool == Tool::Hb)
        .map(|w| w.double_s);
    g.push(Goal {
        goal: "zero seconds of two VIP holders in the incident (hb)".into(),
        figure: double.map_or("not measured".into(), |d| fmt_ms(d * 1000.0)),
        met: double.map(|d| d == 0.0),
    });
    g
}

/// The "x empty" ratio of non-heartbeat UDP in bench-xdp's table.
fn xdp_ratio(table: &str) -> Option<f64> {
    let row = table
        .lines()
        .find(|l| l.starts_with("| non-heartbeat UDP (port 53)"))?;
    row.trim_end_matches('|')
        .rsplit('|')
        .next()?
        .trim()
        .parse()
        .ok()
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

fn error_note(r: &Report, key: &str) -> String {
    r.errors
        .get(key)
        .map(|e| {
            format!(
                "\n**Not (fully) measured**: {}\n",
                e.lines().next().unwrap_or(e)
            )
        })
        .unwrap_or_default()
}

/// The setting of hb's runs with the witness: the fast one plus `--witness`,
/// shown in the fast table's last columns.
pub const WITNESS_FAST: &str = "fast + witness";

pub fn failover_table(r: &Report, setting: &str) -> String {
    let mut rows = Vec::new();
    let witness = setting == "fast" && r.failover.iter().any(|c| c.setting == WITNESS_FAST);
    for fault in Fault::ALL {
        let hb = cell(r, Tool::Hb, setting, fault).and_then(|c| c.summary());
        let hw = cell(r, Tool::Hb, WITNESS_FAST, fault).and_then(|c| c.summary());
        let ka = cell(r, Tool::Keepalived, setting, fault).and_then(|c| c.summary());
        let f = |s: Option<Summary>, pick: fn(&Summary) -> f64| {
            s.map_or("-".into(), |s| fmt_ms(pick(&s)))
        };
        let runs = |s: Option<Summary>| {
            s.map_or("-".into(), |s| {
                if s.missed > 0 {
                    format!("{} (+{} missed)", s.n, s.missed)
                } else {
                    s.n.to_string()
                }
            })
        };
        let ratio = |pick: fn(&Summary) -> f64| match (hb, ka) {
            (Some(h), Some(k)) => fmt_ratio(pick(&h), pick(&k)),
            _ => "-".into(),
        };
        let mut row = vec![
            fault.name().to_string(),
            runs(hb),
            f(hb, |s| s.p50),
            f(hb, |s| s.p95),
            f(hb, |s| s.max),
            runs(ka),
            f(ka, |s| s.p50),
            f(ka, |s| s.p95),
            f(ka, |s| s.max),
            ratio(|s| s.p50),
            ratio(|s| s.p95),
        ];
        if witness {
            row.extend([
                runs(hw),
                f(hw, |s| s.p50),
                f(hw, |s| s.p95),
                f(hw, |s| s.max),
            ]);
        }
        rows.push(row);
    }
    let mut head = vec![
        "fault",
        "hb runs",
        "hb p50",
        "hb p95",
        "hb max",
        "keepalived runs",
        "keepalived p50",
        "keepalived p95",
        "keepalived max",
        "hb/keepalived p50",
        "hb/keepalived p95",
    ];
    let mut align = "lrrrrrrrrrr".to_string();
    if witness {
        head.extend([
            "hb + witness runs",
            "hb + witness p50",
            "hb + witness p95",
            "hb + witness max",
        ]);
        align += "rrrr";
    }
    md_table(&head, &align, &rows)
}

pub fn goals_table(r: &Report) -> String {
    md_table(
        &["goal", "figure", "verdict"],
        "lll",
        &goals(r)
            .into_iter()
            .map(|g| vec![g.goal, g.figure, verdict(g.met).into()])
            .collect::<Vec<_>>(),
    )
}

pub fn stability_table(rows: &[StabilityRow]) -> String {
    md_table(
        &["advert_int", "window", "VIP changes", "stable"],
        "rrrl",
        &rows
            .iter()
            .map(|s| {
                vec![
                    format!("{} s", crate::keepalived::fmt_advert(s.advert_int)),
                    format!("{:.0} s", s.window_s),
                    s.changes.to_string(),
                    if s.stable { "yes".into() } else { "no".into() },
                ]
            })
            .collect::<Vec<_>>(),
    )
}

pub fn cpu_table(rows: &[CpuRow]) -> String {
    md_table(
        &[
            "tool",
            "process",
            "node",
            "messages sent/s",
            "CPU s/min",
            "RSS",
            "window",
            "syscalls/s",
            "syscalls per message",
        ],
        "lllrrrrrr",
        &rows
            .iter()
            .map(|c| {
                vec![
                    c.tool.name().into(),
                    c.process.clone(),
                    c.node.clone(),
                    format!("{:.0}", c.sends_per_s),
                    format!("{:.3}", c.cpu_s_per_min),
                    format!("{:.1} MiB", c.rss_kib as f64 / 1024.0),
                    format!("{:.0} s", c.window_s),
                    c.syscalls_per_s.map_or("-".into(), |v| format!("{v:.0}")),
                    c.syscalls_per_msg()
                        .map_or("-".into(), |v| format!("{v:.2}")),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

pub fn hb_stability_table(rows: &[HbStabilityRow]) -> String {
    let n = |v: Option<usize>| v.map_or("not tried".into(), |v| v.to_string());
    md_table(
        &[
            "settings",
            "idle window",
            "VIP changes idle",
            "under CPU starvation",
            "under floods",
            "stable",
        ],
        "lrrrrl",
        &rows
            .iter()
            .map(|s| {
                vec![
                    format!("`{}`", s.settings),
                    format!("{:.0} s", s.idle_s),
                    s.idle_changes.to_string(),
                    n(s.starvation_changes),
                    n(s.flood_changes),
                    if s.stable { "yes".into() } else { "no".into() },
                ]
            })
            .collect::<Vec<_>>(),
    )
}

/// p50, p99, p99.9 and max of one gap series.
pub fn gap_summary(gaps: &[f64]) -> Option<[f64; 4]> {
    let mut g = gaps.to_vec();
    g.sort_by(f64::total_cmp);
    Some([
        percentile(&g, 50.0)?,
        percentile(&g, 99.0)?,
        percentile(&g, 99.9)?,
        *g.last()?,
    ])
}

pub fn gaps_table(rows: &[GapRow]) -> String {
    md_table(
        &[
            "tool", "settings", "load", "gaps", "p50", "p99", "p99.9", "max",
        ],
        "lllrrrrr",
        &rows
            .iter()
            .map(|g| {
                let s = gap_summary(&g.gaps_ms);
                let f = |i: usize| s.map_or("-".into(), |s| format!("{:.2} ms", s[i]));
                vec![
                    g.tool.name().into(),
                    format!("`{}`", g.settings),
                    g.load.clone(),
                    g.gaps_ms.len().to_string(),
                    f(0),
                    f(1),
                    f(2),
                    f(3),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

pub fn chaos_table(rows: &[ChaosRow]) -> String {
    md_table(
        &[
            "tool",
            "settings",
            "faults",
            "window",
            "two nodes answering",
            "no node answering",
        ],
        "llrrrr",
        &rows
            .iter()
            .map(|c| {
                vec![
                    c.tool.name().into(),
                    format!("`{}`", c.settings),
                    c.faults.len().to_string(),
                    format!("{:.0} s", c.window_s),
                    fmt_ms(c.double_ms),
                    fmt_ms(c.none_ms),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

pub fn flood_table(rows: &[FloodRow]) -> String {
    md_table(
        &[
            "tool",
            "phase",
            "window",
            "packets sent",
            "rate",
            "refused by the backup",
            "false failovers",
            "backup controller CPU",
        ],
        "llrrrlrr",
        &rows
            .iter()
            .map(|f| {
                vec![
                    f.tool.name().into(),
                    f.phase.clone(),
                    format!("{:.0} s", f.window_s),
                    f.packets.to_string(),
                    format!("{:.0} pps", f.rate_pps),
                    f.refused.clone(),
                    f.changes.to_string(),
                    f.backup_cpu_s_per_min
                        .map_or("-".into(), |c| format!("{c:.2} s/min")),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

pub fn window_table(rows: &[WindowRow]) -> String {
    md_table(
        &[
            "tool",
            "settings",
            "window",
            "false failovers (VIP changes)",
            "time with two holders",
            "notes",
        ],
        "llrrrl",
        &rows
            .iter()
            .map(|w| {
                vec![
                    w.tool.name().into(),
                    format!("`{}`", w.settings),
                    format!("{:.0} s", w.window_s),
                    w.changes.to_string(),
                    fmt_ms(w.double_s * 1000.0),
                    w.note.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

/// docs/BENCHMARKS.md.
pub fn render(r: &Report) -> String {
    let m = &r.meta;
    let mut d = String::new();
    d += "# Benchmarks\n\n";
    d += "Figures, not pass/fail tests. Everything below was measured by `cargo xtask bench`";
    d += if m.quick {
        " **--quick** (few runs and short windows: a smoke run, not figures to quote)"
    } else {
        ""
    };
    d += &format!(
        " in one run: hb and keepalived side by side, in the same namespace lab, with the same probe.\n\n\
- Machine: {}\n- Date: {}\n- hb: revision {}\n- keepalived: {} (Debian package)\n- Runs per failover cell: {}; bench wall time {:.0} s\n\n",
        m.machine, m.date, m.revision, m.keepalived_version, m.runs_per_cell, m.elapsed_s
    );
    d += "The lab (tests/src/cluster.rs): a bridge in a switch namespace, two nodes (node 1 priority 100, \
node 2 priority 90) and a client, each in its own network namespace on veth pairs; VIP 10.203.0.100/24. \
The client's probe (tests/src/probe.rs) sends an ICMP echo to the VIP every 1 ms and records, per reply, \
the time and the responder's MAC. **Failover time** = from the fault instant (taken just before the \
signal or the interface ioctl) to the first reply from the new holder's MAC. **False failovers** are VIP \
changes with no fault injected, seen by rtnetlink address notifications in each node's namespace.\n\n";

    d += "## Goals\n\n";
    d += &goals_table(r);
    if let Some(s) = r.stability.iter().find(|s| s.stable) {
        d += &format!(
            "\nkeepalived's fastest stable setting on this machine: advert_int {} s (no VIP change in {:.0} s \
without faults), the fast setting of every keepalived figure below.\n",
            crate::keepalived::fmt_advert(s.advert_int),
            s.window_s
        );
    }
    let flapped = r
        .starvation
        .iter()
        .any(|w| w.tool == Tool::Hb && w.changes > 0 && !w.settings.contains("--realtime"));
    if flapped {
        d += "\nhb flapped under CPU starvation at normal scheduling priority";
        d += if m.hb_realtime {
            "; the `--realtime` row of the starvation table shows hb with real-time scheduling.\n"
        } else {
            "; hb-user has no `--realtime` option yet (SCHED_FIFO for its threads would fix this).\n"
        };
    }
    if !r.errors.is_empty() {
        d += "\nScenarios that did not complete: ";
        d += &r.errors.keys().cloned().collect::<Vec<_>>().join(", ");
        d += " (see their sections).\n";
    }

    d += "\n## Settings\n\n";
    let mut rows = Vec::new();
    for (name, flags) in &m.hb_settings {
        rows.push(vec![format!("hb {name}"), format!("`{flags}`")]);
    }
    for (name, adv) in &m.keepalived_settings {
        rows.push(vec![format!("keepalived {name}"), format!("`{adv}`")]);
    }
    d += &md_table(&["tool and setting", "settings"], "ll", &rows);
    d += &format!(
        "\nhb runs as `{}` with the flags above; everything else is hb's default (`--init-dead 2s`, \
preemption on, `--xdp-mode auto`).\n\nkeepalived runs as `{}` with, on node 1 at the fast setting \
(node 2: priority 90, router_id n2; the default setting: advert_int 1):\n\n```\n{}```\n",
        m.hb_cmd, m.keepalived_cmd, m.keepalived_conf
    );
    d += "\nFaults: **SIGKILL** of the holder's daemon (for keepalived, the parent and its VRRP child at once: \
killing the parent alone makes the child stop gracefully); **link down**: `ip link set eth0 down` in the \
holder's namespace (done as the same ioctl); **graceful stop**: SIGTERM. After a SIGKILL the dead \
node's kernel keeps the VIP and keeps answering, so the probe counts only replies from the new holder. \
Between runs the killed daemon is restarted (for keepalived the stale VIP is deleted first), the link \
brought back up, and the bench waits until node 1 is MASTER with the VIP, node 2 BACKUP, and the client's \
replies come from node 1.\n";

    d += "\n## Failover time\n\n";
    d += "Percentiles are nearest-rank (with 20 runs, p95 is the 19th fastest). Ratios below 1 mean hb is faster.\n\n";
    d += "The fast table's **hb + witness** columns: hb at the fast setting with `--witness` to an etcd \
server (Debian's etcd-server) in a namespace of the same LAN, `--witness-ttl 2s` (etcd's smallest lease); each run \
starts once node 1 owns its key. A SIGKILL is announced by the death notice and a graceful stop by the leave, \
after which the survivor overwrites the key at once; after a link down node 1 is just silent, so node 2 waits \
for node 1's lease to end.\n\n";
    let fast_ka = m
        .keepalived_settings
        .get("fast")
        .cloned()
        .unwrap_or_default();
    d += &format!(
        "### Fast setting (hb `{}`, keepalived `{fast_ka}`)\n\n",
        m.hb_settings.get("fast").cloned().unwrap_or_default()
    );
    d += &failover_table(r, "fast");
    d += &format!(
        "\n### Default setting (hb `{}`, keepalived `{}`)\n\n",
        m.hb_settings.get("default").cloned().unwrap_or_default(),
        m.keepalived_settings
            .get("default")
            .cloned()
            .unwrap_or_default()
    );
    d += &failover_table(r, "default");
    for c in r.failover.iter().filter(|c| !c.notes.is_empty()) {
        d += &format!(
            "\nNotes on {} {} {}:\n",
            c.tool.name(),
            c.setting,
            c.fault.name()
        );
        for n in &c.notes {
            d += &format!("- {n}\n");
        }
    }
    d += &old_holder_table(r);
    d += &error_note(r, "failover");
    for (file, alt) in r.images.iter().filter(|(f, _)| !f.starts_with("gaps")) {
        d += &format!("\n![{alt}]({}/{file})\n", r.img_link_dir);
    }

    d += "\n## hb's fastest stable setting\n\n";
    d += "The fast setting of hb is the first of 1 ms / 4 ms, 2 ms / 8 ms, 5 ms / 15 ms and 10 ms / 30 ms \
(interval / dead-after, with `--realtime`) at which two nodes make no VIP change over the idle window \
while the client probes the VIP every 2 ms, none over the CPU starvation window (two busy loops), and \
none over the three flood phases. The idle window of a setting ends at its first VIP change (it is unstable then). \
Every hb figure called \"fast\" below is at that setting.\n\n";
    d += &hb_stability_table(&r.hb_stability);
    d += &error_note(r, "hb-stability");

    d += "\n## keepalived's fastest stable advert_int\n\n";
    d += "The fast setting of keepalived is the lowest advert_int at which two nodes stay put for the \
whole window with no fault (no VIP change), trying 0.01 s (VRRPv3's least) upwards and stopping at the \
first stable one.\n\n";
    d += &stability_table(&r.stability);
    d += &error_note(r, "stability");

    d += "\n## Heartbeat gaps\n\n";
    d += "Inter-departure gaps of node 1's heartbeats (hb, at a 1 ms interval) and VRRP advertisements \
(keepalived, at its fastest stable advert_int), from the kernel receive timestamps (SO_TIMESTAMPNS) of \
a packet socket on node 1's switch port, idle and with two busy loops saturating both cores.\n\n";
    d += &gaps_table(&r.gaps);
    d += &error_note(r, "gaps");
    for (file, alt) in r.images.iter().filter(|(f, _)| f.starts_with("gaps")) {
        d += &format!("\n![{alt}]({}/{file})\n", r.img_link_dir);
    }

    d += "\n## Chaos: the same faults against both\n\n";
    d += "One seeded schedule of faults on the VIP holder, the same for both tools, one every few seconds: \
SIGKILL and restart, graceful restart (SIGTERM, start), a 300 ms link flap, the daemon paused \
(SIGSTOP) for 300 ms, and the firewall rule of the incident for 1 s. Meanwhile the client sends ICMP \
echoes to the VIP every 2 ms in frames addressed to each node's MAC; a node answers from one reply to \
the next when they are at most 6 ms apart. \"Two nodes answering\" is the time both did, \"no node \
answering\" the time neither did. Faults in order: ";
    if let Some(c) = r.chaos.first() {
        d += &c.faults.join(", ");
    }
    d += ".\n\n";
    d += &chaos_table(&r.chaos);
    d += &error_note(r, "chaos");

    d += "\n## Data-plane cost\n\n";
    d += if r.xdp_prose.is_empty() {
        DEFAULT_XDP_PROSE
    } else {
        &r.xdp_prose
    };
    d += &format!(
        "\n{XDP_START}\n{}\n{XDP_END}\n",
        r.xdp.as_deref().unwrap_or("_bench-xdp did not run_").trim()
    );
    d += &error_note(r, "xdp");

    d += "\n## Controller CPU and memory\n\n";
    d += "CPU seconds per minute (utime + stime from /proc/<pid>/stat) over a steady-state window at \
100 messages per second (hb `--interval 10ms --dead-after 30ms`, keepalived `advert_int 0.01`) with no \
fault, and resident memory (VmRSS) at its end; then syscalls over a second window, every thread \
counted by `strace -c -f` (which slows the process, so it gets a window of its own). keepalived's work is done by its \
VRRP child; its parent only watches the child and is listed for completeness. hb nodes both send \
heartbeats; a VRRP backup sends nothing.\n\n";
    d += &cpu_table(&r.cpu);
    d += &error_note(r, "cpu");

    d += "\n## Flood\n\n";
    d += "From the client's namespace, one thread sends prebuilt frames with sendmmsg on an AF_PACKET \
socket as fast as it can, aimed at the backup (node 2), at the fast setting: junk UDP to port 694 \
(144-byte payloads with hb's magic and version and random bytes after: XDP parses and drops each one), \
then heartbeats correctly framed but MACed with a wrong key, then replays (node 1's heartbeats to \
the backup in its current session, echoing the backup's current session, with sequence numbers it \
already sent and valid MACs). \
keepalived gets the same junk (random bytes as IP protocol 112, to the VRRP group 224.0.0.18 in frames \
addressed to the backup's MAC), paced to at most the rate hb's junk phase achieved; what the sender \
reached is in the table (the receiver's kernel work runs on the sending core too, in softirq). \
Refusals are the deltas of hb's XDP counters (`hb-user status --json`) on the backup.\n\n";
    d += &flood_table(&r.flood);
    d += &error_note(r, "flood");

    d += "\n## Heartbeat loss\n\n";
    d += "20% random loss of the master's heartbeats to the backup, made on the switch (an nftables \
bridge rule `iifname n1e0 oifname n2e0 <heartbeat match> numgen random mod 100 < 20 drop` in the \
switch namespace) rather than with iptables OUTPUT on the master, so that it also applies to a sender \
that bypasses netfilter (a packet socket). The notes give the loss the rule's counters measured.\n\n";
    d += &window_table(&r.loss);
    d += &error_note(r, "loss");

    d += "\n## CPU starvation\n\n";
    d += "Both cores saturated by two busy-loop processes (`sh -c 'while :; do :; done'`, normal \
priority) for the whole window, at the fast setting.\n\n";
    d += &window_table(&r.starvation);
    d += &error_note(r, "starvation");

    d += "\n## The incident: a firewall on the heartbeat port\n\n";
    d += "`iptables -A INPUT -p udp --dport 694 -j DROP` (hb) or `iptables -A INPUT -p 112 -j DROP` \
(keepalived) on both nodes, at the fast setting: the rule behind the classic Linux-HA split brain. \
\"Time with two holders\" is how long both nodes had the VIP configured.\n\n";
    d += &window_table(&r.incident);
    d += &error_note(r, "incident");
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut r = Report::default();
        r.meta
            .hb_settings
            .insert("fast".into(), "--interval 10ms --dead-after 30ms".into());
        r.meta
            .keepalived_settings
            .insert("fast".into(), "advert_int 0.05".into());
        r.meta.keepalived_conf = "vrrp_instance VI_1 {\n}\n".into();
        for (tool, base) in [(Tool::Hb, 30.0), (Tool::Keepalived, 200.0)] {
            for fault in Fault::ALL {
                r.failover.push(FailoverCell {
                    tool,
                    setting: "fast".into(),
                    fault,
                    samples_ms: vec![base + 3.0, base + 1.0, base + 2.0],
                    missed: 0,
                    notes: Vec::new(),
                    old_answered_ms: if fault == Fault::Crash {
                        match tool {
                            Tool::Hb => vec![None, None, None],
                            Tool::Keepalived => vec![Some(201.0), Some(230.5), Some(199.0)],
                        }
                    } else {
                        Vec::new()
                    },
                });
            }
        }
        r.stability.push(StabilityRow {
            advert_int: 0.01,
            window_s: 60.0,
            changes: 4,
            stable: false,
        });
        r.cpu.push(CpuRow {
            tool: Tool::Hb,
            process: "hb-user".into(),
            node: "node 1 (master)".into(),
            sends_per_s: 100.0,
            cpu_s_per_min: 0.25,
            rss_kib: 4096,
            window_s: 60.0,
            controller: true,
            syscalls_per_s: Some(250.0),
        });
        r.cpu.push(CpuRow {
            tool: Tool::Keepalived,
            process: "keepalived --vrrp (VRRP child)".into(),
            node: "node 1 (master)".into(),
            sends_per_s: 20.0,
            cpu_s_per_min: 0.5,
            rss_kib: 3000,
            window_s: 60.0,
            controller: true,
            syscalls_per_s: Some(90.0),
        });
        r.hb_stability.push(HbStabilityRow {
            settings: "--interval 1ms --dead-after 4ms --realtime".into(),
            idle_s: 600.0,
            idle_changes: 0,
            starvation_changes: Some(0),
            flood_changes: Some(0),
            stable: true,
        });
        for (load, realtime, gap) in [("idle", true, 1.2), ("2 busy loops", true, 1.9)] {
            r.gaps.push(GapRow {
                tool: Tool::Hb,
                settings: format!(
                    "--interval 1ms --dead-after 4ms{}",
                    if realtime { " --realtime" } else { "" }
                ),
                load: load.into(),
                window_s: 30.0,
                gaps_ms: vec![1.0, 1.0, gap],
            });
        }
        for (tool, double_ms, none_ms) in [(Tool::Hb, 0.0, 40.0), (Tool::Keepalived, 5000.0, 120.0)]
        {
            r.chaos.push(ChaosRow {
                tool,
                settings: "x".into(),
                faults: vec!["SIGKILL and restart".into(), "link flap".into()],
                window_s: 50.0,
                double_ms,
                none_ms,
            });
        }
        r.flood.push(FloodRow {
            tool: Tool::Hb,
            phase: "junk UDP to port 694".into(),
            packets: 123456,
            rate_pps: 12345.0,
            window_s: 10.0,
            refused: "bad_mac 123000".into(),
            changes: 0,
            backup_cpu_s_per_min: Some(0.3),
        });
        let w = |tool, changes, double_s| WindowRow {
            tool,
            settings: "--interval 10ms".into(),
            window_s: 60.0,
            changes,
            double_s,
            note: "x".into(),
        };
        r.loss = vec![w(Tool::Hb, 0, 0.0), w(Tool::Keepalived, 7, 0.5)];
        r.starvation = vec![w(Tool::Hb, 2, 0.1)];
        r.incident = vec![w(Tool::Hb, 0, 0.0), w(Tool::Keepalived, 1, 29.96)];
        r.xdp = Some(
            "Measured by bench-xdp.\n\n| traffic | ns/packet | x empty |\n|---|---:|---:|\n| empty | 27.0 | 1.00 |\n| non-heartbeat UDP (port 53) | 33.0 | 1.27 |"
                .into(),
        );
        r
    }

    #[test]
    fn tables_render_with_alignment_and_escaping() {
        let t = md_table(&["a", "b"], "lr", &[vec!["x|y".into(), "1".into()]]);
        assert_eq!(t, "| a | b |\n|---|---:|\n| x\\|y | 1 |\n");
    }

    #[test]
    fn the_report_has_every_section_and_the_data() {
        let r = sample();
        let doc = render(&r);
        for s in SECTIONS {
            assert!(doc.contains(s), "{s} missing");
        }
        for want in [
            "32.0 ms",  // hb p50 (fast)
            "202.0 ms", // keepalived p50
            "0.16x",    // 32 / 202
            "0.250",    // hb CPU
            "123456",
            "29.96 s",
            "| 0.01 s | 60 s | 4 | no |",
            XDP_START,
            XDP_END,
            "| empty | 27.0 | 1.00 |",
            "### The crashed node after a SIGKILL",
            "| `--interval 1ms --dead-after 4ms --realtime` | 600 s | 0 | 0 | 0 | yes |",
            "| hb | `--interval 1ms --dead-after 4ms --realtime` | idle | 3 | 1.00 ms | 1.20 ms | 1.20 ms | 1.20 ms |",
            "| keepalived | `x` | 2 | 50 s | 5.00 s | 120.0 ms |",
            "| 250 | 2.50 |",
            "| hb | fast | 3 | 0 of 3 (0%) | - |",
            "| keepalived | fast | 3 | 3 of 3 (100%) | 230.5 ms |",
        ] {
            assert!(doc.contains(want), "{want:?} missing from\n{doc}");
        }
        // The xdp block can be extracted back.
        assert!(extract_xdp_block(&doc)
            .unwrap()
            .contains("| empty | 27.0 | 1.00 |"));
        assert_eq!(
            extract_xdp_prose(&doc).as_deref(),
            Some(DEFAULT_XDP_PROSE.trim_end())
                .map(|s| format!("{s}\n"))
                .as_deref()
        );
    }

    #[test]
    fn goals_are_judged_on_the_figures() {
        let g = goals(&sample());
        let find = |s: &str| g.iter().find(|g| g.goal.contains(s)).unwrap().clone();
        // hb's samples are 31-33 ms: far from the 3 ms goal, but 6x keepalived's.
        let crash = find("<= 3.0 ms, SIGKILL");
        assert_eq!(crash.met, Some(false), "{crash:?}");
        let ratio = find("5x faster than keepalived at its fastest stable setting, SIGKILL");
        assert_eq!(ratio.met, Some(true), "202/32 >= 5: {ratio:?}");
        assert_eq!(find("a 1 ms interval, idle").met, Some(true));
        assert_eq!(find("2 busy loops (--realtime)").met, Some(true));
        assert_eq!(find("CPU <= 0.5x").met, Some(true), "0.25 vs 0.5");
        assert_eq!(find("3 syscalls per heartbeat").met, Some(true), "250/100");
        assert_eq!(find("RSS <= 8 MiB").met, Some(true));
        assert_eq!(find("non-heartbeat UDP").met, Some(true), "1.27");
        assert_eq!(find("zero ms of two nodes").met, Some(true));
        assert_eq!(
            find("no node answering <= half").met,
            Some(true),
            "40 <= 60"
        );
        assert_eq!(find("under 20% heartbeat loss").met, Some(true));
        assert_eq!(find("under CPU starvation").met, Some(false));
        assert_eq!(find("two VIP holders").met, Some(true));
        let doc = render(&sample());
        assert!(doc.contains("**not met**"));
        assert!(doc.contains("hb flapped under CPU starvation"));
    }

    #[test]
    fn unmeasured_goals_say_so() {
        let g = goals(&Report::default());
        assert!(g.iter().all(|g| g.met.is_none()), "{g:?}");
    }
}
