//! What the bench reads from the host: the machine it runs on, and a process's
//! CPU time and resident memory from /proc.

use std::time::Instant;

/// "AMD EPYC ..., 2 cores, Linux 6.18.44".
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!(
        "{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}

/// utime + stime in clock ticks from a /proc/<pid>/stat line (fields 14 and 15,
/// counted after the parenthesised command name, which may contain spaces).
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, so index 11.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// VmRSS in KiB from /proc/<pid>/status.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// A process's CPU seconds at an instant.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    pub pid: u32,
    pub at: Instant,
    pub cpu_s: f64,
}

pub fn cpu_sample(pid: u32) -> Option<CpuSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(CpuSample {
        pid,
        at: Instant::now(),
        cpu_s: parse_cpu_ticks(&stat)? as f64 / clk_tck(),
    })
}

/// CPU seconds per minute of wall time between two samples of one process.
pub fn cpu_per_minute(a: &CpuSample, b: &CpuSample) -> f64 {
    let wall = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    (b.cpu_s - a.cpu_s) * 60.0 / wall
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    parse_rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// `git describe`-like identification of the tree the bench was built from.
pub fn source_revision(dir: &std::path::Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev} with uncommitted changes")
            } else {
                rev
            }
        }
        None => "unknown revision".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_spaces_in_the_name() {
        let stat = "1234 (keep alived) S 1 1234 1234 0 -1 4194560 300 0 0 0 17 4 0 0 20 0 1 0 100 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(21));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_vmrss() {
        let status = "Name:\thb-user\nVmPeak:\t  9000 kB\nVmRSS:\t    3204 kB\n";
        assert_eq!(parse_rss_kib(status), Some(3204));
        assert_eq!(parse_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn cpu_per_minute_scales_to_a_minute() {
        let t = Instant::now();
        let a = CpuSample {
            pid: 1,
            at: t,
            cpu_s: 1.0,
        };
        let b = CpuSample {
            pid: 1,
            at: t + std::time::Duration::from_secs(30),
            cpu_s: 1.5,
        };
        assert!((cpu_per_minute(&a, &b) - 1.0).abs() < 1e-9);
    }
}
