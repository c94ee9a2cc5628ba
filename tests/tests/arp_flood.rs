//! Bounded under attack: ARP claiming the VIP from thousands of random MACs
//! must not grow the controller, flood its log, or move the VIP, nor hide a
//! real rival claiming it meanwhile.

use hb_tests::cluster::{test_lan, Cluster, NodeState, BOUND, FAST, VIP};
use std::time::{Duration, Instant};

/// The controller's resident set, in KiB.
fn rss_kib(c: &Cluster, id: u32) -> u64 {
    let pid = c.pid(id).expect("node runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn thirty_seconds_of_arp_from_ten_thousand_macs_moves_nothing() {
    let (_g, mut c) = test_lan("af", &[100, 90], FAST, 1);
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    // Let the controller reach its steady size first.
    std::thread::sleep(Duration::from_secs(2));
    let before = rss_kib(&c, 1);
    let lines_before = c.log(1).lines().count();
    let (mut sent, mut next, mut rival_sent) = (0u64, 0u32, 0u64);
    // A misconfigured host answering for the VIP among the flood.
    let rival = [0x02, 0xaf, 0xee, 0xee, 0xee, 0x02];
    let start = Instant::now();
    for round in 0u64.. {
        if start.elapsed() >= Duration::from_secs(30) {
            break;
        }
        // 100 claims a round, then 25 ms of quiet (about 2,000 claims/s with
        // the sending), from 10,000 MACs in turn; from the second round the
        // rival's claim heads every third batch (a round takes about 50 ms:
        // every 150 ms or so), so that 300 one-shot MACs come between its claims.
        let mut frames = Vec::with_capacity(101);
        if round % 3 == 1 {
            frames.push(hb_user::garp::frame(rival, VIP, true));
            rival_sent += 1;
        }
        frames.extend((0..100).map(|_| {
            next = (next + 1) % 10_000;
            let mac = [0x02, 0xaf, 0, (next >> 8) as u8, next as u8, 0x01];
            hb_user::garp::frame(mac, VIP, sent % 2 == 0)
        }));
        let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        c.lab.send_frames(&c.client, "eth0", &refs).unwrap();
        sent += 100;
        assert_eq!(
            c.holders(),
            [1],
            "the VIP moved under the flood\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(sent >= 30_000, "only {sent} claims sent");
    let after = rss_kib(&c, 1);
    let lines = c.log(1).lines().count() - lines_before;
    // Flat: a record per MAC would be megabytes; a log line per MAC thousands.
    assert!(
        after <= before + 1024,
        "controller RSS grew {before} -> {after} KiB"
    );
    assert!(lines <= 20, "{lines} log lines for the flood\n{}", c.log(1));
    let r = c.report(1).unwrap();
    assert!(
        r.vip_conflicts[0].conflicts >= sent / 2,
        "XDP counted the claims: {r:?}"
    );
    // The rival is there: kept as a repeat claimant, counted, seen lately.
    let rival_text = rival.map(|b| format!("{b:02x}")).join(":");
    let claimants = &r.vip_conflicts[0].claimants;
    let found = claimants
        .iter()
        .find(|c| c.mac == rival_text)
        .unwrap_or_else(|| panic!("rival {rival_text} hidden by the flood: {claimants:?}"));
    eprintln!("rival after the flood: {found:?} ({rival_sent} claims sent)");
    assert!(found.repeat, "{found:?}");
    assert!(
        found.count >= rival_sent / 4,
        "rival counted {} of {rival_sent} claims: kept only lately",
        found.count
    );
    assert!(found.last_ms_ago.is_some_and(|ms| ms < 5_000), "{found:?}");
    assert_eq!(r.node.map(|n| n.state), Some(NodeState::Master));
    assert_eq!(c.state_of(2), Some(NodeState::Backup));
}
