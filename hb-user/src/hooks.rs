//! Notify and fencing hooks: user commands run on state transitions (like
//! keepalived's notify scripts) and before taking over a silent peer's VIP
//! (like STONITH).
//!
//! What users complain about in those tools, and what this module does instead:
//! - notify scripts run late, twice or out of order: one queue, one background
//!   task, each transition run exactly once, in order, one at a time;
//! - a hanging script blocks failover: `Notifier::send` only enqueues, and every
//!   hook has a timeout after which its whole process group is killed;
//! - killed scripts leave children behind: each hook leads its own process
//!   group, and the group (not just the shell) is killed;
//! - a busy script starves a realtime daemon: hooks run SCHED_OTHER at nice
//!   0, whatever policy the daemon runs under (`--realtime`).

use crate::beat::set_scheduler;
use nix::{
    sys::signal::{killpg, Signal},
    unistd::Pid,
};
use std::{io, process::ExitStatus, process::Stdio, time::Duration};
use tokio::{
    process::{Child, Command},
    sync::mpsc,
    task::JoinHandle,
};

/// One state transition to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub new_state: String,
    pub old_state: String,
    /// "10.0.0.100/24 on eth0, ..." or "".
    pub vip: String,
    /// "eth0,eth1".
    pub iface: String,
    pub reason: String,
    /// The priority heartbeats carry now.
    pub priority: u8,
    /// The group's name (a sync group's, for its own notify command).
    pub group: String,
    pub kind: Kind,
}

/// What moved: one VIP group, or a sync group (keepalived's `$1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Instance,
    Group,
}

/// How the notify command gets its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyArgs {
    /// NEW OLD VIP IFACE REASON.
    Hb,
    /// keepalived's: `INSTANCE NAME STATE PRIORITY`, STATE one of MASTER,
    /// BACKUP and FAULT, so that scripts written for keepalived's `notify`
    /// run unchanged. INIT is not a keepalived state: going to it is not
    /// notified (the BACKUP or MASTER after it is).
    Keepalived,
    /// keepalived's `notify_master`, `notify_backup`, `notify_fault` and
    /// `notify_stop`: the command as written, no arguments, on entering this
    /// state only ("STOP": a graceful stop). Not a value of `notify_args`.
    On(&'static str),
}

/// The state a graceful stop reports to `notify_stop` commands.
pub const STOP: &str = "STOP";

/// The event `notify_master_rx_lower_pri` commands get: a holder heard a
/// lower-ranked node also holding its group (a healed partition).
pub const RX_LOWER: &str = "MASTER_RX_LOWER_PRI";

impl std::str::FromStr for NotifyArgs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "hb" => Ok(Self::Hb),
            "keepalived" => Ok(Self::Keepalived),
            _ => Err(format!("expected hb or keepalived, got {s:?}")),
        }
    }
}

impl NotifyArgs {
    /// The arguments for `t`, or None when this mode does not notify it.
    pub fn of(self, t: &Transition) -> Option<Vec<String>> {
        match self {
            NotifyArgs::On(state) => (t.new_state == state).then(Vec::new),
            // Events for their own commands, not transitions.
            _ if t.new_state == STOP || t.new_state == RX_LOWER => None,
            NotifyArgs::Hb => Some(vec![
                t.new_state.clone(),
                t.old_state.clone(),
                t.vip.clone(),
                t.iface.clone(),
                t.reason.clone(),
            ]),
            NotifyArgs::Keepalived if t.new_state == "INIT" => None,
            NotifyArgs::Keepalived => Some(vec![
                match t.kind {
                    Kind::Instance => "INSTANCE".into(),
                    Kind::Group => "GROUP".into(),
                },
                t.group.clone(),
                t.new_state.clone(),
                t.priority.to_string(),
            ]),
        }
    }
}

/// Runs the notify command once per transition, strictly in the order `send`
/// was called, one at a time, each with a timeout, in a background task.
pub struct Notifier {
    tx: mpsc::UnboundedSender<Transition>,
    task: JoinHandle<()>,
}

impl Notifier {
    /// `cmd` is a shell command line; the five values are appended as
    /// arguments (`/bin/sh -c '<cmd> "$@"' hb-notify NEW OLD VIP IFACE REASON`)
    /// and also set as HB_NEW_STATE, HB_OLD_STATE, HB_VIP, HB_IFACE, HB_REASON
    /// and HB_GROUP.
    /// Must be called inside a tokio runtime.
    /// With [`NotifyArgs::Keepalived`] the arguments are keepalived's instead.
    pub fn spawn(cmd: String, mode: NotifyArgs, timeout: Duration) -> Notifier {
        // Unbounded: a transition must never be dropped or make the caller wait;
        // transitions are rare, so the queue stays short.
        let (tx, mut rx) = mpsc::unbounded_channel::<Transition>();
        let task = tokio::spawn(async move {
            while let Some(t) = rx.recv().await {
                let Some(args) = mode.of(&t) else { continue };
                let env = [
                    ("HB_NEW_STATE", t.new_state.as_str()),
                    ("HB_OLD_STATE", t.old_state.as_str()),
                    ("HB_VIP", t.vip.as_str()),
                    ("HB_IFACE", t.iface.as_str()),
                    ("HB_REASON", t.reason.as_str()),
                    ("HB_GROUP", t.group.as_str()),
                ];
                let what = format!("notify hook ({} -> {})", t.old_state, t.new_state);
                // No retry: a hook that failed may have half-run, and running it
                // again is the "notify ran twice" bug.
                match run(&cmd, "hb-notify", &args, &env, timeout, false).await {
                    Run::Exited(s) if s.success() => tracing::debug!("{what} done"),
                    Run::Exited(s) => tracing::warn!("{what} failed: {s}"),
                    Run::TimedOut => {
                        tracing::warn!("{what} killed after {timeout:?} timeout")
                    }
                    Run::NotStarted(e) => tracing::warn!("{what} could not start: {e}"),
                }
            }
        });
        Notifier { tx, task }
    }

    /// Queues `t`; never blocks.
    pub fn send(&self, t: Transition) {
        // Fails only if the task is gone (it panicked); nothing useful to do but say so.
        if let Err(e) = self.tx.send(t) {
            tracing::warn!("notify hook not run, notifier stopped: {:?}", e.0);
        }
    }

    /// Waits (bounded by `limit`) until every queued notification has run, so
    /// the final transition's hook is not lost on a graceful stop. Past `limit`
    /// the rest of the queue is dropped and a running hook's group is killed.
    pub async fn drain(self, limit: Duration) {
        let Notifier { tx, mut task } = self;
        drop(tx); // the task ends once the queue is empty
        if tokio::time::timeout(limit, &mut task).await.is_err() {
            tracing::warn!("notify hooks still running after {limit:?}; abandoning them");
            // Dropping the in-flight `run` future kills its process group (`Group`).
            task.abort();
            let _ = task.await;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceOutcome {
    Fenced,
    /// Exit code; None = killed by a signal.
    Failed(Option<i32>),
    TimedOut,
    NotStarted,
}

/// Runs the fencing command for `peers` (silent peers whose VIP we are about
/// to take) and waits for it, up to `timeout` (then kills its process group).
/// `/bin/sh -c '<cmd> "$@"' hb-fence <peer ids...>`, with HB_FENCE_PEERS="2 3"
/// and HB_NODE_ID set. Spawn failure => NotStarted (logged by the caller).
/// If this future is dropped early, the command's process group is killed.
pub async fn fence(cmd: &str, node_id: u32, peers: &[u32], timeout: Duration) -> FenceOutcome {
    let args: Vec<String> = peers.iter().map(u32::to_string).collect();
    let (list, node) = (args.join(" "), node_id.to_string());
    let env = [
        ("HB_FENCE_PEERS", list.as_str()),
        ("HB_NODE_ID", node.as_str()),
    ];
    match run(cmd, "hb-fence", &args, &env, timeout, false).await {
        Run::Exited(s) if s.success() => FenceOutcome::Fenced,
        Run::Exited(s) => FenceOutcome::Failed(s.code()),
        Run::TimedOut => FenceOutcome::TimedOut,
        Run::NotStarted(_) => FenceOutcome::NotStarted,
    }
}

/// Runs a health check's script (`/bin/sh -c`, HB_CHECK set to its name,
/// output discarded: it runs every interval): whether it passed, and how it ended.
pub async fn check(script: &str, name: &str, timeout: Duration) -> (bool, String) {
    let none: [&str; 0] = [];
    match run(
        script,
        "hb-check",
        &none,
        &[("HB_CHECK", name)],
        timeout,
        true,
    )
    .await
    {
        Run::Exited(s) => (s.success(), s.to_string()),
        Run::TimedOut => (false, format!("timed out after {timeout:?}")),
        Run::NotStarted(e) => (false, format!("could not start: {e}")),
    }
}

enum Run {
    Exited(ExitStatus),
    TimedOut,
    NotStarted(io::Error),
}

/// A hook's shell, leader of its own process group. Dropping it before the
/// shell is reaped (timeout, or the caller's future dropped) SIGKILLs the whole
/// group, so whatever the hook started dies too. Once reaped it does nothing: a
/// finished hook's pgid may no longer be ours to signal.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        // `id()` is None once the child has been reaped.
        if let Some(pid) = self.0.id() {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            // tokio reaps a dropped, unwaited child in the background.
        }
    }
}

/// Runs `/bin/sh -c '<cmd> "$@"' <argv0> <args...>` with `env` added, and
/// waits for it, up to `timeout`.
async fn run<S: AsRef<str>>(
    cmd: &str,
    argv0: &str,
    args: &[S],
    env: &[(&str, &str)],
    timeout: Duration,
    quiet: bool,
) -> Run {
    let started = std::time::Instant::now();
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(format!("{cmd} \"$@\""))
        .arg(argv0)
        .args(args.iter().map(AsRef::as_ref))
        .envs(env.iter().copied())
        // Hooks must not read the daemon's stdin; their output goes to the
        // daemon's log as is (inherited, so no pipe can fill up and block them).
        .stdin(Stdio::null())
        // Own process group: a timeout kills the hook's children too, and
        // a Ctrl-C on the daemon's terminal doesn't hit them first.
        .process_group(0);
    if quiet {
        c.stdout(Stdio::null()).stderr(Stdio::null());
    }
    // SAFETY: `normal_scheduling` makes two syscalls on the child only, both
    // async-signal-safe, and allocates nothing.
    unsafe {
        c.pre_exec(normal_scheduling);
    }
    let mut g = match c.spawn() {
        Ok(child) => Group(child),
        Err(e) => return counted(argv0, started, Run::NotStarted(e)),
    };
    let r = match tokio::time::timeout(timeout, g.0.wait()).await {
        Ok(Ok(s)) => Run::Exited(s),
        // wait() failing is near impossible; treat the hook as hung.
        Ok(Err(_)) | Err(_) => {
            if let Some(pid) = g.0.id() {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            // Reap it (SIGKILL can't be ignored, so this is prompt).
            let _ = g.0.wait().await;
            Run::TimedOut
        }
    };
    counted(argv0, started, r)
}

/// A hook's run, as the metrics count it: by kind (`hb-notify`: notify)
/// and outcome, with its duration.
fn counted(argv0: &str, started: std::time::Instant, r: Run) -> Run {
    let outcome = match &r {
        Run::Exited(s) if s.success() => "ok",
        Run::Exited(_) => "failed",
        Run::TimedOut => "timed_out",
        Run::NotStarted(_) => "not_started",
    };
    let kind = argv0.trim_start_matches("hb-");
    crate::metrics::hook_ran(kind, outcome, started.elapsed());
    r
}

/// Between fork and exec: SCHED_OTHER at nice 0. A hook forked from the
/// SCHED_FIFO controller would inherit its policy, and one that spins would
/// keep the controller off that CPU; `--realtime` also sets
/// SCHED_RESET_ON_FORK, and this holds for any caller. libc for setpriority,
/// which nix does not wrap.
fn normal_scheduling() -> io::Result<()> {
    set_scheduler(libc::SCHED_OTHER, 0)?;
    // SAFETY: a plain syscall on integers; it changes the calling (child)
    // process's nice value and no memory.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{fs, path::PathBuf, time::Instant};

    /// A unique temp file path, removed on drop.
    struct Tmp(PathBuf);
    impl Tmp {
        fn new(tag: &str) -> Tmp {
            let n = std::process::id();
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            Tmp(std::env::temp_dir().join(format!("hb-hooks-{tag}-{n}-{t}")))
        }
        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
        fn read(&self) -> String {
            fs::read_to_string(&self.0).unwrap_or_default()
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }

    fn tr(new: &str, old: &str, reason: &str) -> Transition {
        Transition {
            new_state: new.into(),
            old_state: old.into(),
            vip: "10.0.0.100/24 on eth0".into(),
            iface: "eth0".into(),
            reason: reason.into(),
            priority: 100,
            group: "default".into(),
            kind: Kind::Instance,
        }
    }

    #[tokio::test]
    async fn keepalived_arguments_run_keepalived_scripts_unchanged() {
        let out = Tmp::new("kaargs");
        // What a keepalived notify script does: TYPE=$1 NAME=$2 STATE=$3 PRIO=$4.
        let cmd = format!("f() {{ echo \"$#:$1:$2:$3:$4\" >> '{}'; }}; f", out.path());
        let n = Notifier::spawn(cmd, NotifyArgs::Keepalived, Duration::from_secs(5));
        for (new, old) in [
            ("BACKUP", "INIT"),
            ("MASTER", "BACKUP"),
            ("FAULT", "MASTER"),
            ("INIT", "FAULT"),
            ("BACKUP", "INIT"),
        ] {
            n.send(tr(new, old, "r"));
        }
        n.drain(Duration::from_secs(5)).await;
        assert_eq!(
            out.read(),
            "4:INSTANCE:default:BACKUP:100\n4:INSTANCE:default:MASTER:100\n\
             4:INSTANCE:default:FAULT:100\n4:INSTANCE:default:BACKUP:100\n",
            "INIT is not notified"
        );
        assert_eq!("keepalived".parse(), Ok(NotifyArgs::Keepalived));
        // keepalived's notify_master & co: no arguments, their state only.
        let on = NotifyArgs::On("MASTER");
        assert_eq!(on.of(&tr("MASTER", "BACKUP", "x")), Some(vec![]));
        assert_eq!(on.of(&tr("BACKUP", "MASTER", "x")), None);
        assert_eq!(
            NotifyArgs::On(STOP).of(&tr(STOP, "MASTER", "x")),
            Some(vec![])
        );
        assert_eq!(NotifyArgs::Hb.of(&tr(STOP, "MASTER", "x")), None);
        assert!("x".parse::<NotifyArgs>().is_err());
    }

    /// Whether `pid` is still running. A zombie counts as gone: it is dead,
    /// and reaping an orphan is init's job (some containers' init never does).
    fn alive(pid: i32) -> bool {
        if nix::sys::signal::kill(Pid::from_raw(pid), None).is_err() {
            return false;
        }
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            // State is the field after "(comm)".
            Ok(s) => !matches!(
                s.rsplit(')').next().unwrap().trim_start().chars().next(),
                Some('Z' | 'X')
            ),
            Err(_) => false,
        }
    }

    async fn eventually_dead(pid: i32) -> bool {
        for _ in 0..50 {
            if !alive(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    fn pids(f: &Tmp) -> Vec<i32> {
        f.read()
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn in_order_exactly_once_and_send_does_not_block() {
        let out = Tmp::new("order");
        // `f` is a shell function so the appended "$@" become its arguments.
        let cmd = format!(
            "f() {{ echo \"$1 $2\" >> '{}'; sleep 0.2; }}; f",
            out.path()
        );
        let n = Notifier::spawn(cmd, NotifyArgs::Hb, Duration::from_secs(5));
        let t0 = Instant::now();
        for i in 1..=5 {
            n.send(tr(&format!("s{i}"), &format!("s{}", i - 1), "r"));
        }
        assert!(
            t0.elapsed() < Duration::from_millis(50),
            "{:?}",
            t0.elapsed()
        );
        n.drain(Duration::from_secs(10)).await;
        assert_eq!(out.read(), "s1 s0\ns2 s1\ns3 s2\ns4 s3\ns5 s4\n");
    }

    #[tokio::test]
    async fn env_and_args_arrive_intact() {
        let out = Tmp::new("env");
        let cmd = format!(
            "f() {{ printf '%s|' \"$#\" \"$@\" \"$HB_NEW_STATE\" \"$HB_OLD_STATE\" \"$HB_VIP\" \
             \"$HB_IFACE\" \"$HB_REASON\" > '{}'; }}; f",
            out.path()
        );
        let reason = "peer 2 silent 312 ms > dead-after 300 ms; it's \"gone\" $HOME `x`";
        let n = Notifier::spawn(cmd, NotifyArgs::Hb, Duration::from_secs(5));
        n.send(Transition {
            new_state: "MASTER".into(),
            old_state: "BACKUP".into(),
            vip: "10.0.0.100/24 on eth0, 10.0.1.100/24 on eth1".into(),
            iface: "eth0,eth1".into(),
            reason: reason.into(),
            priority: 100,
            group: "default".into(),
            kind: Kind::Instance,
        });
        n.drain(Duration::from_secs(5)).await;
        let vals = "MASTER|BACKUP|10.0.0.100/24 on eth0, 10.0.1.100/24 on eth1|eth0,eth1";
        assert_eq!(out.read(), format!("5|{vals}|{reason}|{vals}|{reason}|"));
    }

    #[tokio::test]
    async fn failing_and_hanging_hooks_do_not_stop_the_queue() {
        let out = Tmp::new("fail");
        let pidf = Tmp::new("fail-pids");
        // "fail" exits 3; "hang" records its shell's and its sleep's pids and
        // waits on the sleep; the others append their new state.
        let cmd = format!(
            "f() {{ case $1 in fail) exit 3;; \
             hang) sleep 30 & echo $$ $! > '{p}'; wait;; \
             *) echo $1 >> '{o}';; esac; }}; f",
            p = pidf.path(),
            o = out.path()
        );
        let n = Notifier::spawn(cmd, NotifyArgs::Hb, Duration::from_millis(200));
        for s in ["a", "fail", "b", "hang", "c"] {
            n.send(tr(s, "x", "r"));
        }
        let t0 = Instant::now();
        n.drain(Duration::from_secs(10)).await;
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert_eq!(out.read(), "a\nb\nc\n");
        let p = pids(&pidf);
        assert_eq!(p.len(), 2, "hang hook wrote {p:?}");
        for pid in p {
            assert!(eventually_dead(pid).await, "pid {pid} survived the timeout");
        }
    }

    #[tokio::test]
    async fn fence_outcomes() {
        let t = Duration::from_secs(5);
        assert_eq!(fence("exit 0", 1, &[2], t).await, FenceOutcome::Fenced);
        assert_eq!(
            fence("exit 7", 1, &[2], t).await,
            FenceOutcome::Failed(Some(7))
        );
        assert_eq!(
            fence("kill -9 $$", 1, &[2], t).await,
            FenceOutcome::Failed(None)
        );

        // Peers arrive both as arguments and in HB_FENCE_PEERS.
        let out = Tmp::new("fence-args");
        let cmd = format!(
            "f() {{ echo \"$#:$*:$HB_FENCE_PEERS:$HB_NODE_ID\" > '{}'; }}; f",
            out.path()
        );
        assert_eq!(fence(&cmd, 1, &[2, 3], t).await, FenceOutcome::Fenced);
        assert_eq!(out.read(), "2:2 3:2 3:1\n");
    }

    #[tokio::test]
    async fn fence_timeout_kills_the_group() {
        let pidf = Tmp::new("fence-pids");
        let cmd = format!(
            "f() {{ sleep 30 & echo $$ $! > '{}'; wait; }}; f",
            pidf.path()
        );
        let t0 = Instant::now();
        let r = fence(&cmd, 1, &[2, 3], Duration::from_millis(200)).await;
        assert_eq!(r, FenceOutcome::TimedOut);
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        let p = pids(&pidf);
        assert_eq!(p.len(), 2, "fence hook wrote {p:?}");
        // The shell (group leader) and its background sleep are both gone.
        for pid in p {
            assert!(eventually_dead(pid).await, "pid {pid} survived the timeout");
        }
    }

    #[tokio::test]
    async fn dropped_fence_kills_the_group() {
        // A caller that gives up on fencing (e.g. a select! branch) must not
        // leave the command running.
        let pidf = Tmp::new("fence-cancel");
        let cmd = format!(
            "f() {{ sleep 30 & echo $$ $! > '{}'; wait; }}; f",
            pidf.path()
        );
        let r = tokio::time::timeout(
            Duration::from_millis(500),
            fence(&cmd, 1, &[2], Duration::from_secs(60)),
        )
        .await;
        assert!(r.is_err(), "fence should still have been running");
        let p = pids(&pidf);
        assert_eq!(p.len(), 2, "fence hook wrote {p:?}");
        for pid in p {
            assert!(eventually_dead(pid).await, "pid {pid} survived the cancel");
        }
    }

    /// Fields 41 (policy: 0 is SCHED_OTHER) and 19 (nice) of a stat line.
    fn policy_and_nice(stat: &str) -> (i64, i64) {
        let after_comm: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let field = |n: usize| after_comm[n - 3].parse().unwrap();
        (field(41), field(19))
    }

    /// Hooks started from a SCHED_FIFO thread at nice -5, as the controller
    /// runs under --realtime (without the SCHED_RESET_ON_FORK main.rs adds,
    /// so that the hook's own setup is what is tested).
    #[test]
    fn hooks_started_from_a_realtime_thread_run_with_normal_scheduling() {
        let (notified, fenced) = (Tmp::new("sched-notify"), Tmp::new("sched-fence"));
        let cmd = |out: &Tmp| format!("f() {{ cat /proc/$$/stat > '{}'; }}; f", out.path());
        let (notify_cmd, fence_cmd) = (cmd(&notified), cmd(&fenced));
        std::thread::spawn(move || {
            if let Err(e) = set_scheduler(libc::SCHED_FIFO, 10) {
                panic!("SCHED_FIFO refused ({e}): this test needs root or CAP_SYS_NICE");
            }
            // SAFETY: plain syscalls on integers, on this thread.
            unsafe {
                assert_eq!(libc::setpriority(libc::PRIO_PROCESS, 0, -5), 0);
                assert_eq!(libc::sched_getscheduler(0), libc::SCHED_FIFO);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let n = Notifier::spawn(notify_cmd, NotifyArgs::Hb, Duration::from_secs(5));
                n.send(tr("MASTER", "BACKUP", "r"));
                n.drain(Duration::from_secs(5)).await;
                let f = fence(&fence_cmd, 1, &[2], Duration::from_secs(5)).await;
                assert_eq!(f, FenceOutcome::Fenced);
            });
        })
        .join()
        .unwrap();
        for (what, out) in [("notify", &notified), ("fence", &fenced)] {
            let stat = out.read();
            assert!(!stat.is_empty(), "the {what} hook did not run");
            assert_eq!(policy_and_nice(&stat), (0, 0), "{what} hook: {stat}");
        }
    }
}
