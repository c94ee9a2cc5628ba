//! Maintenance without dead time: `hb-user standby` on the holder hands the
//! VIP to the next node while a client pings it, with a gap under three
//! intervals; the standby survives a restart and shows in `status`; `hb-user
//! resume` gives the VIP back (preemption), again without dead time.

use hb_tests::cluster::{test_lan, Cluster, NodeState, BOUND, DEFAULTS};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// DEFAULTS' interval.
const INTERVAL: Duration = Duration::from_millis(100);

fn ask(c: &Cluster, id: u32, args: &[&str]) -> (i32, String) {
    let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    a.extend([
        "--state-dir".into(),
        c.node(id).state_dir.display().to_string(),
    ]);
    let (code, out, err) = c.run_as_node(id, &a).unwrap();
    (code, out + &err)
}

fn standby_of(c: &Cluster, id: u32) -> Option<bool> {
    let s = c.status_of(id)?;
    Some(s.groups.first()?.standby)
}

/// Runs `act`, then waits until node `to` alone holds the VIP and its MAC
/// answers the client; the longest the client went unanswered meanwhile.
fn hand_over(c: &mut Cluster, to: u32, act: impl FnOnce(&mut Cluster)) -> Duration {
    let probe = c.probe(Duration::from_millis(5)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let from = Instant::now();
    act(c);
    let mac = c.node(to).mac;
    assert!(
        c.wait_for(BOUND, |c| c.holders() == [to]
            && probe.snapshot().first_from(mac, from).is_some()),
        "node {to} never took over: holders {:?}\n{}",
        c.holders(),
        c.logs()
    );
    std::thread::sleep(Duration::from_millis(200));
    let rec = probe.stop();
    rec.longest_gap(from, Instant::now())
}

#[test]
fn standby_hands_over_survives_a_restart_and_resume_takes_back() {
    let (_g, mut c) = test_lan("sby", &[200, 100], DEFAULTS, 1);
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);

    let gap = hand_over(&mut c, 2, |c| {
        let (code, out) = ask(c, 1, &["standby"]);
        assert_eq!(code, 0, "{out}");
    });
    assert!(
        gap < 3 * INTERVAL,
        "standby left the VIP unanswered for {} ms\n{}",
        gap.as_millis(),
        c.logs()
    );
    assert!(
        c.wait_for(BOUND, |c| standby_of(c, 1) == Some(true)
            && c.state_of(1) == Some(NodeState::Fault)),
        "node 1's status: {:?}",
        c.status_of(1).map(|s| (s.state, s.groups))
    );

    // A restart keeps the standby: node 1 takes nothing back.
    c.signal(1, Signal::SIGTERM).unwrap();
    c.start(1).unwrap();
    assert!(
        c.wait_for(BOUND, |c| standby_of(c, 1) == Some(true)),
        "the standby did not survive the restart\n{}",
        c.logs()
    );
    c.never_holds(1, Duration::from_secs(2));

    // An unknown group is refused, naming the groups there are.
    let (code, out) = ask(&c, 1, &["resume", "nope"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("no group nope") && out.contains("default"),
        "{out}"
    );

    let gap = hand_over(&mut c, 1, |c| {
        let (code, out) = ask(c, 1, &["resume", "default"]);
        assert_eq!(code, 0, "{out}");
    });
    assert!(
        gap < 3 * INTERVAL,
        "resume left the VIP unanswered for {} ms\n{}",
        gap.as_millis(),
        c.logs()
    );
    assert_eq!(standby_of(&c, 1), Some(false));
}

#[test]
fn standby_answers_not_running_without_a_node() {
    let (_g, c) = test_lan("sbn", &[100], DEFAULTS, 1);
    let (code, out) = ask(&c, 1, &["standby"]);
    assert_eq!(code, 3, "{out}");
}
