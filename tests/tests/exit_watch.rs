//! The exit watch (`hb_exit` on the `sched_process_exit` raw tracepoint),
//! attached for real: the registered controller's death marks it dead in
//! `owner`; its other threads ending, other processes ending, or a process that
//! unregistered first (a graceful stop) do not.

use hb_common::maps::Owner;
use hb_user::loader::DataPlane;
use std::{
    os::unix::fs::MetadataExt,
    process::{Child, Command},
    time::{Duration, Instant},
};

/// A controller's session, as `hb-user run` draws one at each start.
const SESSION: u64 = 0x1f2e_3d4c_5b6a_7988;

fn watching() -> DataPlane {
    hb_tests::require_root("attaching a raw tracepoint program");
    let mut dp = DataPlane::load().expect("load the object");
    dp.attach_exit().expect("attach the exit watch");
    assert!(dp.death_notice_armed());
    dp
}

fn sleeper() -> Child {
    Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep")
}

fn kill(mut c: Child) {
    c.kill().unwrap();
    c.wait().unwrap();
}

/// The owner entry once `dead_ns` is set, or as it is after `bound`.
fn owner_within(dp: &DataPlane, bound: Duration) -> Owner {
    let deadline = Instant::now() + bound;
    loop {
        let o = dp.owner().unwrap();
        if o.dead_ns != 0 || Instant::now() > deadline {
            return o;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_death_of_the_registered_process_marks_it_dead() {
    let mut dp = watching();
    let child = sleeper();
    dp.set_owner(3, SESSION, child.id()).unwrap();
    let o = dp.owner().unwrap();
    assert_eq!(
        (o.pid, o.node_id, o.session, o.dead_ns),
        (child.id(), 3, SESSION, 0)
    );
    assert_ne!(o.pidns_ino, 0);
    let t0 = hb_tests::monotonic_ns();
    kill(child);
    let o = owner_within(&dp, Duration::from_secs(2));
    assert!(o.dead_ns >= t0, "not marked dead: {o:?}");
    // Registering again (a restarted controller, with a new session) clears the mark.
    dp.set_owner(3, SESSION ^ 0xffff, std::process::id())
        .unwrap();
    let o = dp.owner().unwrap();
    assert_eq!((o.session, o.dead_ns), (SESSION ^ 0xffff, 0));
}

#[test]
fn threads_other_processes_and_an_unregistered_process_do_not_count() {
    let mut dp = watching();
    // This process registered: its threads come and go, it lives on.
    dp.set_owner(3, SESSION, std::process::id()).unwrap();
    for _ in 0..4 {
        std::thread::spawn(|| std::thread::sleep(Duration::from_millis(1)))
            .join()
            .unwrap();
    }
    kill(sleeper());
    Command::new("true").status().unwrap();
    assert_eq!(owner_within(&dp, Duration::from_millis(200)).dead_ns, 0);
    // A process that unregistered before it ended (a graceful stop).
    let child = sleeper();
    dp.set_owner(3, SESSION, child.id()).unwrap();
    dp.write_owner(Owner::default()).unwrap();
    kill(child);
    assert_eq!(
        owner_within(&dp, Duration::from_millis(200)),
        Owner::default()
    );
}

/// `sleep` as pid 1 of a new pid namespace (under `unshare`).
fn contained_sleeper() -> Child {
    Command::new("unshare")
        .args(["--pid", "--fork", "sleep", "60"])
        // It complains when its child is killed; that is the point here.
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn unshare")
}

/// The pid here of `unshare`'s child.
fn inner_pid(unshare: &Child) -> u32 {
    let children = format!("/proc/{0}/task/{0}/children", unshare.id());
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let text = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(pid) = text.split_whitespace().next() {
            return pid.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "unshare started no child");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The owner entry of pid 1 in the pid namespace of process `pid` (as seen here).
fn pid_one_of(pid: u32) -> Owner {
    let ns = std::fs::metadata(format!("/proc/{pid}/ns/pid")).unwrap();
    let dev = ns.dev();
    Owner {
        pid: 1,
        node_id: 3,
        session: SESSION,
        pidns_dev: (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev)),
        pidns_ino: ns.ino(),
        ..Default::default()
    }
}

fn kill_inner(mut unshare: Child, inner: u32) {
    // SAFETY: a signal to a process we started (through unshare).
    unsafe { libc::kill(inner as i32, libc::SIGKILL) };
    unshare.wait().unwrap();
}

#[test]
fn a_controller_in_a_container_is_watched_in_its_own_pid_namespace() {
    let mut dp = watching();
    // Registered as a containerised hb-user registers itself: its pid and pid
    // namespace as it sees them (pid 1 here).
    let unshare = contained_sleeper();
    let inner = inner_pid(&unshare);
    let theirs = pid_one_of(inner);
    let ours = pid_one_of(std::process::id());
    assert_ne!(
        theirs.pidns_ino, ours.pidns_ino,
        "a pid namespace of its own"
    );
    // Pid 1 of our namespace (init, which lives on) is not the container's.
    dp.write_owner(ours).unwrap();
    kill_inner(unshare, inner);
    assert_eq!(owner_within(&dp, Duration::from_millis(200)).dead_ns, 0);
    let unshare = contained_sleeper();
    let inner = inner_pid(&unshare);
    dp.write_owner(pid_one_of(inner)).unwrap();
    kill_inner(unshare, inner);
    assert_ne!(owner_within(&dp, Duration::from_secs(2)).dead_ns, 0);
}
