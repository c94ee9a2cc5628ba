//! Health checks (`[check.NAME]`): a script run every interval (keepalived's
//! `vrrp_script`), or a process looked for by name or pid file without
//! spawning anything (`track_process`), or a file holding a weight
//! (`track_file`), its result counted against rise and fall. The verdict
//! is an input to the core, which turns it into priority or FAULT; nothing
//! here is on the sender thread's path. Each check is a task of its own, so a
//! slow script delays only its own next run.

use std::time::Duration;
use tokio::sync::mpsc;

/// One check, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    pub name: String,
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// Passes in a row that make a failing check healthy, and failures in a
    /// row that make a healthy one fail.
    pub rise: u32,
    pub fall: u32,
    /// Positive: added to the priority while healthy; negative: added while
    /// failing; 0: failing means FAULT.
    pub weight: i32,
}

/// What a check looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A shell command line; exit 0 within the timeout is a pass.
    Script(String),
    /// A process whose name (`/proc/PID/comm`, at most 15 bytes, as `ps`
    /// and `pidof` show it) is this: passes while one runs.
    Process(String),
    /// A pid file: passes while the process it names runs.
    PidFile(std::path::PathBuf),
    /// An interface beyond the heartbeat links (keepalived's
    /// `track_interface`): passes while it is up with carrier. Judged by the
    /// controller from rtnetlink link events as they come, not by a task.
    Iface(String),
    /// A file holding an integer (keepalived's `track_file`): the value
    /// times the weight is added to the priority; with weight 0 any value
    /// but 0 is FAULT, as is a product of -254 or less. No file or no number
    /// in it reads as 0. Read every interval; no rise or fall.
    File(std::path::PathBuf),
}

/// A track file's verdict: (healthy, the weight that now applies), in the
/// core's terms of a positive weight counting while healthy, a negative one
/// while failing, and a failing weight 0 being FAULT.
pub fn file_verdict(value: i64, weight: i32) -> (bool, i32) {
    if weight == 0 {
        return (value == 0, 0);
    }
    let product = value.saturating_mul(weight as i64);
    match product {
        p if p <= -254 => (false, 0),
        p if p < 0 => (false, p as i32),
        p => (true, p.min(255) as i32),
    }
}

/// The integer a track file holds, and what the status shows for it.
fn read_value(path: &std::path::Path) -> (i64, String) {
    match std::fs::read_to_string(path) {
        Ok(t) => match t.trim().parse::<i64>() {
            Ok(v) => (v, format!("value {v}")),
            Err(_) => (0, "no number in it: 0".into()),
        },
        Err(e) => (0, format!("{e}: 0")),
    }
}

/// Rise and fall counting: pure.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// None until the first result: the first one decides at once.
    healthy: Option<bool>,
    streak: u32,
}

impl Verdict {
    /// Records one run; the new verdict when it changed.
    pub fn record(&mut self, pass: bool, rise: u32, fall: u32) -> Option<bool> {
        match self.healthy {
            None => {
                self.healthy = Some(pass);
                self.streak = 0;
                Some(pass)
            }
            Some(h) if h == pass => {
                self.streak = 0;
                None
            }
            Some(_) => {
                self.streak += 1;
                if self.streak >= if pass { rise } else { fall } {
                    self.healthy = Some(pass);
                    self.streak = 0;
                    Some(pass)
                } else {
                    None
                }
            }
        }
    }
}

/// A check's verdict changed (or its first one came).
#[derive(Clone, Debug)]
pub struct Report {
    pub index: usize,
    pub healthy: bool,
    /// A new weight, for checks whose weight changes (track files).
    pub weight: Option<i32>,
    /// The last run: "exit 0", "exit 7", "timed out after 1s", ...
    pub last: String,
}

/// The running checks' tasks; dropping it ends them (a script running then
/// is killed with its process group).
pub struct Running {
    pub rx: mpsc::UnboundedReceiver<Report>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts every check's task; reports arrive on the returned channel. Must be
/// called inside a tokio runtime.
pub fn spawn(specs: &[CheckSpec]) -> Running {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (index, spec) in specs.iter().cloned().enumerate() {
        if matches!(spec.kind, CheckKind::Iface(_)) {
            continue;
        }
        let tx = tx.clone();
        let task = tokio::spawn(async move {
            let mut verdict = Verdict::default();
            let mut file_last = None;
            let mut tick = tokio::time::interval(spec.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (pass, last) = match &spec.kind {
                    CheckKind::Script(s) => crate::hooks::check(s, &spec.name, spec.timeout).await,
                    CheckKind::Process(name) => running(name),
                    CheckKind::PidFile(path) => pid_file(path),
                    CheckKind::Iface(_) => return,
                    CheckKind::File(path) => {
                        let (value, last) = read_value(path);
                        let now = file_verdict(value, spec.weight);
                        if file_last == Some(now) {
                            continue;
                        }
                        file_last = Some(now);
                        let report = Report {
                            index,
                            healthy: now.0,
                            weight: Some(now.1),
                            last,
                        };
                        if tx.send(report).is_err() {
                            return;
                        }
                        continue;
                    }
                };
                if let Some(healthy) = verdict.record(pass, spec.rise, spec.fall) {
                    if tx
                        .send(Report {
                            index,
                            healthy,
                            weight: None,
                            last,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        tasks.push(task.abort_handle());
    }
    Running { rx, tasks }
}

/// Whether a process named `name` runs: one pass over /proc, no process spawned.
fn running(name: &str) -> (bool, String) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (false, "cannot read /proc".into());
    };
    let found = dir
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .find(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        });
    match found {
        Some(e) => (true, format!("pid {}", e.file_name().to_string_lossy())),
        None => (false, format!("no process named {name}")),
    }
}

/// Whether the process a pid file names runs (kill 0: EPERM still means it does).
fn pid_file(path: &std::path::Path) -> (bool, String) {
    use nix::{errno::Errno, sys::signal::kill, unistd::Pid};
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return (false, format!("{}: {e}", path.display())),
    };
    let Some(pid) = text.trim().parse::<i32>().ok().filter(|&p| p > 0) else {
        return (false, format!("{}: no pid in it", path.display()));
    };
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => (true, format!("pid {pid}")),
        Err(e) => (false, format!("pid {pid}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_result_decides_then_rise_and_fall_count_in_a_row() {
        let mut v = Verdict::default();
        assert_eq!(v.record(true, 2, 3), Some(true));
        assert_eq!(v.record(false, 2, 3), None);
        assert_eq!(v.record(false, 2, 3), None);
        // A pass in between starts the count again.
        assert_eq!(v.record(true, 2, 3), None);
        assert_eq!(v.record(false, 2, 3), None);
        assert_eq!(v.record(false, 2, 3), None);
        assert_eq!(v.record(false, 2, 3), Some(false));
        assert_eq!(v.record(true, 2, 3), None);
        assert_eq!(v.record(true, 2, 3), Some(true));
        let mut v = Verdict::default();
        assert_eq!(v.record(false, 1, 1), Some(false));
        assert_eq!(v.record(true, 1, 1), Some(true));
    }

    #[test]
    fn a_track_file_value_times_its_weight() {
        assert_eq!(file_verdict(0, 0), (true, 0));
        assert_eq!(
            file_verdict(3, 0),
            (false, 0),
            "weight 0: non-zero is FAULT"
        );
        assert_eq!(file_verdict(5, 10), (true, 50));
        assert_eq!(file_verdict(-5, 10), (false, -50));
        assert_eq!(file_verdict(-30, 10), (false, 0), "-254 or less is FAULT");
        assert_eq!(file_verdict(100, 10), (true, 255));
        let f = std::env::temp_dir().join(format!("hb-check-file-{}", std::process::id()));
        std::fs::write(&f, " -7\n").unwrap();
        assert_eq!(read_value(&f).0, -7);
        std::fs::write(&f, "x").unwrap();
        assert_eq!(read_value(&f).0, 0);
        std::fs::remove_file(&f).unwrap();
        assert_eq!(read_value(&f).0, 0);
    }

    #[test]
    fn processes_are_found_by_name_and_pid_file() {
        let me = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert!(running(me.trim_end()).0);
        assert!(!running("hb-no-such-process").0);
        let f = std::env::temp_dir().join(format!("hb-check-pid-{}", std::process::id()));
        std::fs::write(&f, format!("{}\n", std::process::id())).unwrap();
        assert!(pid_file(&f).0);
        std::fs::write(&f, "garbage").unwrap();
        assert!(!pid_file(&f).0);
        std::fs::remove_file(&f).unwrap();
        assert!(!pid_file(&f).0);
    }
}
