//! Syscalls a daemon makes over a window, every thread counted (`strace -c -f`
//! attached to the running process, then detached). strace slows the process it
//! traces but counts exactly; the bench divides by the heartbeats or
//! advertisements the process sent meanwhile.

use anyhow::{bail, Context, Result};
use std::{process::Command, time::Duration};

/// Total syscalls of `pid` (all threads) over `window`.
pub fn count(pid: u32, window: Duration) -> Result<u64> {
    let out = std::env::temp_dir().join(format!("hb-bench-strace-{pid}"));
    let mut child = Command::new("strace")
        .args(["-c", "-f", "-q", "-o"])
        .arg(&out)
        .args(["-p", &pid.to_string()])
        .spawn()
        .context("strace (apt-get install strace)")?;
    crate::cluster::track_process(child.id() as i32);
    std::thread::sleep(window);
    // SIGINT: strace detaches and writes its summary.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = child.wait();
    crate::cluster::forget_process(child.id() as i32);
    let text = std::fs::read_to_string(&out).context("reading strace's summary")?;
    let _ = std::fs::remove_file(&out);
    match total_calls(&text) {
        Some(n) => Ok(n),
        None => bail!("no total in strace's summary:\n{text}"),
    }
}

/// The calls column of strace -c's "total" line.
pub fn total_calls(summary: &str) -> Option<u64> {
    let line = summary.lines().find(|l| l.trim_end().ends_with(" total"))?;
    let cols: Vec<&str> = line.split_whitespace().collect();
    // % time, seconds, usecs/call, calls, [errors], "total"
    cols.get(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_total() {
        let s = "% time     seconds  usecs/call     calls    errors syscall\n------ ----------- ----------- --------- --------- ----------------\n 40.61    0.082324         101       815           epoll_wait\n------ ----------- ----------- --------- --------- ----------------\n100.00    0.202720          56      3566      1012 total\n";
        assert_eq!(super::total_calls(s), Some(3566));
        let no_errors = "100.00    0.000100          10        10           total\n";
        assert_eq!(super::total_calls(no_errors), Some(10));
        assert_eq!(super::total_calls("nothing"), None);
    }
}
