//! A busy hook cannot starve the daemon. Under `--realtime` the controller runs
//! SCHED_FIFO; a notify hook that inherited that policy and spins would keep
//! the controller off its CPU, and with as many busy hooks as CPUs (two nodes
//! on this 2-CPU machine) the controllers stop, their senders' watchdogs
//! silence them, and the election moves the VIP. Hooks run SCHED_OTHER instead.

use hb_tests::cluster::{test_lan, Cluster, NodeState, BOUND, FAST};
use nix::{
    sys::signal::{killpg, Signal},
    unistd::Pid,
};
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

/// How long each hook spins after a transition.
const SPIN_S: u32 = 10;
/// How long the holder must stay the holder once both hooks spin: past the
/// spinning, when starved controllers would run again and decide.
const WATCH: Duration = Duration::from_secs(15);

/// The hooks of this test: each records its pid, which leads its own process
/// group (hb starts every hook so), then spins for SPIN_S seconds on shell
/// builtins only, so that the group is that one process. Every one still
/// running is killed on drop, also when the test fails: a SIGKILLed hb-user
/// leaves its hooks running.
struct Spinners {
    /// In the hooks' command lines, so that only ours are signalled.
    mark: String,
    pids: PathBuf,
}

impl Spinners {
    fn new() -> Self {
        let mark = format!("hb-test-spin-{}", std::process::id());
        let pids = std::env::temp_dir().join(format!("{mark}.pids"));
        let _ = std::fs::remove_file(&pids);
        Self { mark, pids }
    }

    fn hook(&self) -> String {
        format!(
            "f() {{ echo $$ >> '{}'; exec bash -c 'e=$((SECONDS+{SPIN_S})); while ((SECONDS<e)); do :; done' {}; }}; f",
            self.pids.display(),
            self.mark
        )
    }

    /// Hooks that ran, as they recorded themselves.
    fn recorded(&self) -> usize {
        std::fs::read_to_string(&self.pids)
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// Live process group leaders whose command line has our mark: the hooks
    /// (hb-user's command line has it too, but leads no group).
    fn running(&self) -> Vec<i32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| {
                let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&self.mark));
                let leads = stat_field(pid, 5) == Some(i64::from(pid));
                let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit(')').next()?.trim_start().chars().next());
                ours && leads && !matches!(state, Some('Z' | 'X') | None)
            })
            .collect()
    }

    /// Kills every hook group until none has been seen for a while (a hook
    /// forked just before its hb-user died appears late), within 10 s.
    fn kill_all(&self) {
        let mut quiet = 0;
        for _ in 0..100 {
            let found = self.running();
            for &pid in &found {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            quiet = if found.is_empty() { quiet + 1 } else { 0 };
            if quiet == 5 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.kill_all();
        let _ = std::fs::remove_file(&self.pids);
    }
}

/// Field `n` (1-based, as in proc(5)) of /proc/<pid>/stat.
fn stat_field(pid: i32, n: usize) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split_whitespace().nth(n - 3)?.parse().ok()
}

/// Node `id`'s status file: (state, session).
fn status(c: &Cluster, id: u32) -> (Option<NodeState>, Option<String>) {
    let s = c.status_of(id);
    (s.as_ref().map(|s| s.state), s.map(|s| s.session))
}

#[test]
fn a_notify_hook_spinning_the_cpu_under_realtime_causes_no_failover() {
    // Dropped after the cluster, which kills the controllers: no hook starts after.
    let spinners = Spinners::new();
    let (_g, mut c) = test_lan("hkr", &[100, 90], FAST, 1);
    c.common
        .extend(["--realtime".into(), "--notify".into(), spinners.hook()]);
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    // Each node's first transition (node 1 to MASTER, node 2 to BACKUP) started
    // a hook: two spinning processes on two CPUs.
    assert!(
        c.wait_for(BOUND, |_| spinners.running().len() == 2),
        "hooks spinning: {:?} of {} recorded\n{}",
        spinners.running(),
        spinners.recorded(),
        c.logs()
    );
    // How they run, read now and asserted after what matters to users.
    let sched: Vec<(i32, Option<i64>, Option<i64>)> = spinners
        .running()
        .into_iter()
        .map(|pid| (pid, stat_field(pid, 41), stat_field(pid, 19)))
        .collect();
    let sessions = (status(&c, 1).1, status(&c, 2).1);
    let probe = c.probe(Duration::from_millis(20)).unwrap();
    let start = Instant::now();
    while start.elapsed() < WATCH {
        let holders = c.holders();
        assert_eq!(
            holders,
            [1],
            "the VIP moved {} ms into the hooks' spinning\n{}",
            start.elapsed().as_millis(),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Clients were answered throughout, by the holder alone: a starved
    // holder's sender stops renewing its lease, and its XDP then drops them.
    let rec = probe.stop();
    let gap = rec.longest_gap(start, Instant::now());
    assert!(
        gap < Duration::from_secs(1),
        "clients of the VIP got no reply for {} ms\n{}",
        gap.as_millis(),
        c.logs()
    );
    assert_eq!(
        rec.others_after(c.node(1).mac, start),
        0,
        "replies from node 2"
    );
    let (one, two) = (status(&c, 1), status(&c, 2));
    assert_eq!(one.0, Some(NodeState::Master), "{one:?}");
    assert_eq!(two.0, Some(NodeState::Backup), "{two:?}");
    assert_eq!((one.1, two.1), sessions, "a node restarted");
    assert_eq!(
        spinners.recorded(),
        2,
        "more transitions ran hooks\n{}",
        c.logs()
    );
    assert!(c.is_running(1) && c.is_running(2));

    // The hooks ran under the normal policy (field 41: 0 is SCHED_OTHER) at
    // nice 0 (field 19).
    assert_eq!(sched.len(), 2, "{sched:?}");
    for (pid, policy, nice) in sched {
        assert_eq!(policy, Some(0), "policy of hook {pid}");
        assert_eq!(nice, Some(0), "nice of hook {pid}");
    }
    spinners.kill_all();
    assert!(
        c.wait_for(BOUND, |_| spinners.running().is_empty()),
        "hooks left: {:?}",
        spinners.running()
    );
}
