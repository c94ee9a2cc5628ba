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
