//! Heartbeats on their own clock: at millisecond intervals, nothing the
//! controller does (gratuitous ARP bursts, netlink, status writes, a peer
//! pausing and coming back) may delay them enough to fake a failure. Real
//! `hb-user` processes in namespaces; a VIP change is seen as a change of the
//! transition time each node writes to its status file, so even one shorter
//! than the sampling period counts.

use hb_tests::cluster::{test_lan, Cluster, NodeState, BOUND, FASTEST};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use std::time::{Duration, Instant};

/// (state, since_unix_ms) of node `id` from its status file.
fn transition_of(c: &Cluster, id: u32) -> Option<(NodeState, u128)> {
    c.status_of(id).map(|s| (s.state, s.since_unix_ms))
}

/// Node 1 holds the VIP and both status files say so.
fn settle(c: &mut Cluster) {
    c.expect_settled(1, BOUND);
    assert!(
        c.wait_for(BOUND, |c| c.state_of(1) == Some(NodeState::Master)),
        "node 1 never wrote MASTER\n{}",
        c.logs()
    );
}

/// Watches for `window`: node 1 must stay the only holder, and no node may
/// change state. Returns a description of the first change seen. It reads
/// the status files while it watches (a file read, not a process per look:
/// on two cores, 50 `ip netns exec` a second are load enough to delay the
/// softirqs that deliver the heartbeats), and asks the kernel who has the VIP
/// before and after; a flap between looks still moves a transition time.
fn watch_no_change(c: &Cluster, window: Duration) -> Result<(), String> {
    let holders = c.holders();
    if holders != [1] {
        return Err(format!("holders {holders:?}"));
    }
    let before: Vec<_> = (1..=2).map(|id| transition_of(c, id)).collect();
    let deadline = Instant::now() + window;
    while Instant::now() < deadline {
        let now: Vec<_> = (1..=2).map(|id| transition_of(c, id)).collect();
        if now != before {
            return Err(format!("transitions before {before:?}, now {now:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let holders = c.holders();
    if holders != [1] {
        return Err(format!("holders {holders:?}"));
    }
    let after: Vec<_> = (1..=2).map(|id| transition_of(c, id)).collect();
    if before != after {
        return Err(format!("transitions before {before:?}, after {after:?}"));
    }
    Ok(())
}

/// 2 ms heartbeats, dead-after 20 ms, as `--realtime` settings run. Not 8 ms
/// for 20 s: on the two-vCPU machines the tests run on, both vCPUs are now and
/// then descheduled 8-9 ms at once (both nodes' senders late by the same
/// amount at the same instant, with nothing else of the suite running), which no
/// priority inside it can prevent; the benchmark measures 2 ms / 8 ms there.
const STEADY: &[&str] = &[
    "--interval",
    "2ms",
    "--dead-after",
    "20ms",
    "--init-dead",
    "1s",
    "--realtime",
];

#[test]
fn a_pair_at_2ms_heartbeats_left_alone_has_no_vip_change() {
    let (_g, mut c) = test_lan("clk", &[100, 90], STEADY, 1);
    c.start_all().unwrap();
    settle(&mut c);
    if let Err(e) = watch_no_change(&c, Duration::from_secs(20)) {
        panic!("a healthy pair flapped: {e}\n{}", c.logs());
    }
}

#[test]
fn a_backup_paused_for_ten_dead_afters_and_resumed_causes_no_vip_change() {
    let (_g, mut c) = test_lan("pau", &[100, 90], FASTEST, 1);
    c.start_all().unwrap();
    settle(&mut c);
    let pid = Pid::from_raw(c.pid(2).expect("node 2 runs") as i32);
    let before = transition_of(&c, 1);
    for _ in 0..5 {
        kill(pid, Signal::SIGSTOP).unwrap();
        std::thread::sleep(Duration::from_millis(80));
        kill(pid, Signal::SIGCONT).unwrap();
        // The holder saw the backup die and come back: it re-announces the VIP,
        // and that burst must not stall its own heartbeats.
        if let Err(e) = watch_no_change(&c, Duration::from_secs(1)) {
            panic!("the pause caused a VIP change: {e}\n{}", c.logs());
        }
    }
    assert_eq!(
        transition_of(&c, 1),
        before,
        "the holder changed state\n{}",
        c.logs()
    );
}
