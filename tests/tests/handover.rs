//! Planned hand-overs are break-before-make: on a graceful stop and when a
//! returning higher node takes the VIP back, the old holder stops answering for
//! the VIP before the new one starts. Checked as a client sees it: echo requests
//! for the VIP sent to each node's MAC directly (whatever the client's ARP cache
//! says), every millisecond, while the hand-over happens.

use hb_tests::{
    cluster::{test_lan, Cluster, BOUND, CLIENT_IP, FASTEST, IFACE, VIP},
    probe::directed_echo,
};
use nix::sys::signal::Signal;
use std::{
    fs::File,
    time::{Duration, Instant},
};

/// The last reply of `old` came before the first reply of `new`.
fn assert_break_before_make(old: &[Instant], new: &[Instant], what: &str, logs: String) {
    let (Some(last_old), Some(first_new)) = (old.iter().max(), new.iter().min()) else {
        panic!(
            "{what}: expected replies from both ({} old, {} new)\n{logs}",
            old.len(),
            new.len()
        );
    };
    assert!(
        last_old < first_new,
        "{what}: the old holder still answered {:?} after the new one started\n{logs}",
        last_old.duration_since(*first_new)
    );
}

#[test]
fn graceful_stop_and_preemption_never_have_both_nodes_answering() {
    let (_g, mut c) = test_lan("hov", &[100, 90], FASTEST, 1);
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);

    // SIGTERM of the holder: it releases, then says it left; node 2 takes over.
    let (r1, r2) = probe_with(&mut c, Duration::from_secs(2), |c| {
        c.signal(1, Signal::SIGTERM).unwrap();
    });
    c.expect_single_holder(2, BOUND);
    assert_break_before_make(&r1, &r2, "graceful stop", c.logs());

    // Node 1 comes back: it waits for node 2 to release before adding the VIP.
    let (r1, r2) = probe_with(&mut c, Duration::from_secs(3), |c| {
        c.start(1).unwrap();
    });
    c.expect_single_holder(1, BOUND);
    assert_break_before_make(&r2, &r1, "preemption", c.logs());
}

/// A holder paused for ten dead-afters (SIGSTOP, every thread) finds on
/// resuming that its heartbeats stopped, and renews no lease until it has
/// decided again. Node 2 took over meanwhile; either node 1 steps down and takes
/// the VIP back break-before-make, or node 2, hearing node 1's first heartbeat,
/// has already yielded and node 1 holds on (which comes first is a race of the
/// two resumed threads). The client never sees both answer.
#[test]
fn a_paused_holder_steps_down_before_it_answers_again() {
    let (_g, mut c) = test_lan("hop", &[100, 90], FASTEST, 1);
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    let pause = Duration::from_millis(80 * u64::from(hb_tests::cluster::time_scale()));
    let pid = nix::unistd::Pid::from_raw(c.pid(1).unwrap() as i32);
    let (r1, r2) = probe_with(&mut c, Duration::from_secs(3), |_| {
        nix::sys::signal::kill(pid, Signal::SIGSTOP).unwrap();
        std::thread::sleep(pause);
        nix::sys::signal::kill(pid, Signal::SIGCONT).unwrap();
    });
    c.expect_single_holder(1, BOUND);
    assert!(
        !r2.is_empty(),
        "node 2 never took over during the pause\n{}",
        c.logs()
    );
    let start = r1.iter().chain(&r2).min().copied().unwrap();
    let ms = |v: &[Instant]| -> Vec<f64> {
        let mut v: Vec<f64> = v
            .iter()
            .map(|t| t.duration_since(start).as_secs_f64() * 1000.0)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    // Answering = consecutive replies at most 3 ms apart (the probes go every 1 ms).
    let (both, _) = hb_tests::bench::scenarios::answer_times(&ms(&r1), &ms(&r2), 3.0, 0.0, 3000.0);
    assert!(
        both == 0.0,
        "both nodes answered for {both:.1} ms\n{}",
        c.logs()
    );
    assert!(
        c.wait_for(BOUND, |c| c
            .status_of(1)
            .is_some_and(|s| s.seen.lapses >= 1)),
        "node 1 did not notice the lapse: {:?}\n{}",
        c.status_of(1),
        c.log(1)
    );
}

/// Probes both nodes' MACs for `window` from the client while `during` runs on
/// this thread (200 ms after the probes start); returns the reply times from
/// node 1 and from node 2.
fn probe_with(
    c: &mut Cluster,
    window: Duration,
    during: impl FnOnce(&mut Cluster),
) -> (Vec<Instant>, Vec<Instant>) {
    let client_mac = c.lab.mac(&c.client, IFACE).unwrap();
    let netns = format!("/var/run/netns/{}", c.client);
    let spawn = |mac: [u8; 6]| {
        let netns = File::open(&netns).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            directed_echo(
                IFACE,
                client_mac,
                CLIENT_IP,
                mac,
                VIP,
                Duration::from_millis(1),
                window,
            )
            .unwrap()
        })
    };
    let (a, b) = (spawn(c.node(1).mac), spawn(c.node(2).mac));
    std::thread::sleep(Duration::from_millis(200));
    during(c);
    (a.join().unwrap(), b.join().unwrap())
}
