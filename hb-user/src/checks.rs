//! Health checks (`[check.NAME]`): a script run every interval, its result
//! counted against rise and fall, like keepalived's `vrrp_script`. The verdict
//! is an input to the core, which turns it into priority or FAULT; nothing
//! here is on the sender thread's path. Each check is a task of its own, so a
//! slow script delays only its own next run.

use std::time::Duration;
use tokio::sync::mpsc;

/// One check, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    pub name: String,
    /// A shell command line; exit 0 within the timeout is a pass.
    pub script: String,
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
    /// The last run: "exit 0", "exit 7", "timed out after 1s", ...
    pub last: String,
}

/// Starts every check's task; reports arrive on the returned channel. Must be
/// called inside a tokio runtime; the tasks end when the receiver is dropped.
pub fn spawn(specs: &[CheckSpec]) -> mpsc::UnboundedReceiver<Report> {
    let (tx, rx) = mpsc::unbounded_channel();
    for (index, spec) in specs.iter().cloned().enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut verdict = Verdict::default();
            let mut tick = tokio::time::interval(spec.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (pass, last) =
                    crate::hooks::check(&spec.script, &spec.name, spec.timeout).await;
                if let Some(healthy) = verdict.record(pass, spec.rise, spec.fall) {
                    if tx
                        .send(Report {
                            index,
                            healthy,
                            last,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
    }
    rx
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
}
