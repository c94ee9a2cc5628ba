//! `--witness etcd://...`: the tie of a two-node cluster broken by a real
//! etcd server (Debian's etcd-server) on its own address in the test's LAN,
//! reachable from both nodes and the client. Partitions are made in the
//! switch (nftables, carriers up); etcd is stopped with SIGKILL.

use hb_tests::{
    cluster::{test_lan, Cluster, NodeState, BOUND, FAST},
    etcd::Etcd,
};
use nix::sys::signal::Signal;
use std::{
    net::Ipv4Addr,
    sync::MutexGuard,
    time::{Duration, Instant},
};

const ETCD_IP: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 250);
/// etcd's smallest lease: keys of a silent holder last this long at most.
const TTL: Duration = Duration::from_secs(2);
const METRICS: &str = "127.0.0.1:9694";

/// Two nodes (priorities 100, 90) with the witness, settled: node 1 holds
/// the VIP and its key.
fn witnessed(tag: &str, xdp_tx: bool) -> (MutexGuard<'static, ()>, Cluster, Etcd) {
    witnessed_ttl(tag, xdp_tx, "2s")
}

fn witnessed_ttl(tag: &str, xdp_tx: bool, ttl: &str) -> (MutexGuard<'static, ()>, Cluster, Etcd) {
    Etcd::require();
    let (guard, mut c) = test_lan(tag, &[100, 90], FAST, 1);
    let ns = c.add_host("etcd", "w0", ETCD_IP).unwrap();
    let etcd = Etcd::start(&ns, ETCD_IP, c.lab.scratch.join("etcd")).unwrap();
    for n in &mut c.nodes {
        n.extra.extend(
            ["--witness", &etcd.url(), "--witness-ttl", ttl]
                .into_iter()
                .chain(["--metrics", METRICS])
                .map(String::from),
        );
    }
    if xdp_tx {
        c.enable_xdp_tx().unwrap();
    }
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    c.expect_single_holder(1, BOUND);
    assert!(
        c.wait_for(BOUND, |c| key_of(c, 1).as_deref() == Some("ours")),
        "node 1 never owned its key: {:?}\n{}",
        key_of(&c, 1),
        c.logs()
    );
    (guard, c, etcd)
}

/// Whose the default group's key is, as node `id`'s status says.
fn key_of(c: &Cluster, id: u32) -> Option<String> {
    c.status_of(id)?.groups.first()?.witness_key.clone()
}

fn reachable(c: &Cluster, id: u32) -> Option<bool> {
    Some(c.status_of(id)?.witness?.reachable)
}

/// Node `id`'s `hb_witness_reachable` gauge.
fn reachable_metric(c: &Cluster, id: u32) -> Option<String> {
    let url = format!("http://{METRICS}/metrics");
    let text = c.exec(id, &["curl", "-sf", "--max-time", "2", &url]).ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with("hb_witness_reachable "))?;
    Some(line.rsplit(' ').next()?.to_string())
}

/// Waits until node `id` holds the VIP (a SIGKILLed holder keeps its
/// address, fenced by its data plane); how long that took.
fn time_to_take(c: &Cluster, id: u32, from: Instant, bound: Duration) -> Duration {
    assert!(
        c.wait_for(bound, |c| c.holders().contains(&id)),
        "node {id} did not take over within {bound:?}: holders {:?}\n{}",
        c.holders(),
        c.logs()
    );
    let took = from.elapsed();
    // The client is answered by it.
    assert!(
        c.wait_for(BOUND, |c| c.client_reach_vip() == Some(c.node(id).mac)),
        "the client does not reach node {id} at the VIP\n{}",
        c.logs()
    );
    took
}

#[test]
fn a_partition_between_the_nodes_leaves_exactly_one_holder() {
    let (_g, c, _etcd) = witnessed("wp", false);
    // The nodes cannot hear each other; both still reach etcd and the client.
    c.partition(&[("n1e0", Some("n2e0"))]).unwrap();
    // Without the witness both would hold (split_brain.rs shows it).
    c.holds_steadily(1, Duration::from_secs(30));
    let s = c.status_of(2).expect("node 2's status");
    assert_eq!(s.state, NodeState::Backup, "{s:?}");
    let g = &s.groups[0];
    assert_eq!(g.witness_key.as_deref(), Some("node 1"), "{g:?}");
    assert!(g.witness_waiting_ms.is_some_and(|ms| ms > 20_000), "{g:?}");
    assert!(g.reason.contains("witness key"), "{g:?}");
    // What `hb-user status` prints of it.
    let text = c.status(2, false).unwrap();
    assert!(
        text.contains("witness http://10.203.0.250:2379: reachable"),
        "{text}"
    );
    assert!(
        text.contains("key of default: node 1, a takeover waits"),
        "{text}"
    );
    c.heal().unwrap();
    c.holds_steadily(1, Duration::from_secs(2));
}

#[test]
fn the_holders_sigkill_moves_the_vip_after_its_key_expires() {
    let (_g, mut c, _etcd) = witnessed("wk", false);
    // No death notice reaches node 2 (veth XDP_TX needs a program on the
    // other end): node 1 just goes silent, its key alive until its lease ends.
    let killed = Instant::now();
    c.signal(1, Signal::SIGKILL).unwrap();
    let took = time_to_take(&c, 2, killed, TTL + BOUND);
    eprintln!(
        "SIGKILL, no death notice, witness TTL {} s: node 2 holds after {} ms (figure, not a bound)",
        TTL.as_secs(),
        took.as_millis()
    );
    // Far longer than dead-after (150 ms): the key held it back.
    assert!(took > Duration::from_millis(800), "{took:?}\n{}", c.logs());
    assert!(c.wait_for(BOUND, |c| key_of(c, 2).as_deref() == Some("ours")));
    let seen = c.status_of(2).unwrap().seen;
    assert_eq!(seen.witness_waits, 1, "{seen:?}");
    assert!(seen.witness_wait_ms > 500, "{seen:?}");
}

#[test]
fn with_the_death_notice_the_survivor_takes_the_key_at_once() {
    let (_g, mut c, etcd) = witnessed("wd", true);
    let killed = Instant::now();
    c.signal(1, Signal::SIGKILL).unwrap();
    let took = time_to_take(&c, 2, killed, BOUND);
    eprintln!(
        "SIGKILL with the death notice: node 2 holds after {} ms (figure, not a bound)",
        took.as_millis()
    );
    // Well inside the dead holder's lease: the notice, not its expiry.
    assert!(took < TTL / 2, "{took:?}\n{}", c.logs());
    assert!(
        c.wait_for(BOUND, |c| key_of(c, 2).as_deref() == Some("ours")),
        "{:?}\n{}",
        key_of(&c, 2),
        c.logs()
    );
    let keys = etcd.get_prefix("/hb/").unwrap();
    assert!(keys.contains("/hb/1/default"), "{keys}");
    let value = keys.lines().nth(1).unwrap_or_default();
    assert!(value.starts_with("2 "), "{keys}");
}

#[test]
fn with_etcd_stopped_the_holder_keeps_the_vip_and_afterwards_all_is_normal() {
    let (_g, mut c, mut etcd) = witnessed("ws", false);
    etcd.stop();
    assert!(
        c.wait_for(BOUND, |c| reachable(c, 1) == Some(false)
            && reachable(c, 2) == Some(false)),
        "the nodes still say the witness answers\n{}",
        c.logs()
    );
    assert_eq!(reachable_metric(&c, 2).as_deref(), Some("0"));
    let s = c.status_of(2).unwrap();
    assert_eq!(s.witness.as_ref().unwrap().down, "keep", "{s:?}");
    // Longer than the lease: the holder keeps the VIP, nobody takes over.
    c.holds_steadily(1, 3 * TTL);
    etcd.resume().unwrap();
    assert!(
        c.wait_for(BOUND, |c| reachable(c, 1) == Some(true)
            && reachable(c, 2) == Some(true)
            && key_of(c, 1).as_deref() == Some("ours")),
        "{:?} {:?}\n{}",
        c.status_of(1).and_then(|s| s.witness),
        key_of(&c, 1),
        c.logs()
    );
    assert_eq!(reachable_metric(&c, 2).as_deref(), Some("1"));
    // Normal again: a graceful stop hands VIP and key over at once (the
    // leaver revokes its lease before it says goodbye).
    let stopped = Instant::now();
    c.signal(1, Signal::SIGTERM).unwrap();
    let took = time_to_take(&c, 2, stopped, BOUND);
    eprintln!(
        "graceful stop with the witness: node 2 holds after {} ms (figure, not a bound)",
        took.as_millis()
    );
    assert!(took < TTL / 2, "{took:?}\n{}", c.logs());
    assert!(c.wait_for(BOUND, |c| key_of(c, 2).as_deref() == Some("ours")));
    assert_eq!(c.status_of(2).unwrap().seen.witness_waits, 0);
}

#[test]
fn a_holder_cut_off_from_its_peer_and_etcd_releases_within_the_lease() {
    let (_g, c, _etcd) = witnessed("wi", false);
    // Node 1 hears nobody and reaches nothing; node 2 still reaches etcd.
    let cut = Instant::now();
    c.partition(&[("n1e0", None)]).unwrap();
    let mut released = None;
    let mut taken = None;
    while cut.elapsed() < TTL + 2 * BOUND && (released.is_none() || taken.is_none()) {
        let h = c.holders();
        assert!(
            h.len() <= 1,
            "two holders {:?} after {:?}\n{}",
            h,
            cut.elapsed(),
            c.logs()
        );
        if released.is_none() && !h.contains(&1) {
            released = Some(cut.elapsed());
        }
        if taken.is_none() && h == [2] {
            taken = Some(cut.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (Some(released), Some(taken)) = (released, taken) else {
        panic!(
            "released {released:?}, taken {taken:?}: holders {:?}\n{}",
            c.holders(),
            c.logs()
        );
    };
    eprintln!(
        "isolated holder released after {} ms, the peer took over after {} ms (TTL {} s; figures, not bounds)",
        released.as_millis(),
        taken.as_millis(),
        TTL.as_secs()
    );
    assert!(released <= TTL + Duration::from_millis(500), "{released:?}");
    let s = c.status_of(1).unwrap();
    assert_ne!(s.state, NodeState::Master, "{s:?}");
    c.heal().unwrap();
    // Node 1's lease ended on the server meanwhile: it gets a new one, and
    // the holder (node 1 again, by preemption) owns the key.
    assert!(
        c.wait_for(2 * BOUND, |c| c.holders() == [1]
            && reachable(c, 1) == Some(true)
            && key_of(c, 1).as_deref() == Some("ours")),
        "holders {:?}, node 1's witness {:?}, key {:?}\n{}",
        c.holders(),
        c.status_of(1).and_then(|s| s.witness),
        key_of(&c, 1),
        c.logs()
    );
}

#[test]
fn a_crashed_holder_restarted_alone_takes_its_own_key_back_at_once() {
    // A long lease: its previous run's key would keep it out for seconds.
    let (_g, mut c, _etcd) = witnessed_ttl("wr", false, "5s");
    // Node 2 dies (no death notice reaches node 1): silent from now on.
    c.signal(2, Signal::SIGKILL).unwrap();
    wait_exit(&mut c, 2);
    c.holds_steadily(1, Duration::from_secs(1));
    c.signal(1, Signal::SIGKILL).unwrap();
    wait_exit(&mut c, 1);
    let restarted = Instant::now();
    c.start(1).unwrap();
    // Its peer is silent, so it needs the key, which its previous run
    // holds: that run is dead (this one adopts its data plane), so it takes
    // the key at once, after init-dead (1 s), not when the old lease ends.
    let pid = c.pid(1).expect("node 1 runs");
    assert!(
        c.wait_for(BOUND, |c| c
            .status_of(1)
            .is_some_and(|s| s.pid == pid && s.state == NodeState::Master)
            && key_of(c, 1).as_deref() == Some("ours")),
        "{:?}\n{}",
        c.status_of(1),
        c.logs()
    );
    let took = restarted.elapsed();
    let seen = c.status_of(1).unwrap().seen;
    assert_eq!(seen.witness_waits, 1, "{seen:?}");
    assert!(
        seen.witness_wait_ms < 1000,
        "{seen:?} after {took:?}\n{}",
        c.logs()
    );
}

/// Waits (bounded) until node `id`'s hb-user has exited.
fn wait_exit(c: &mut Cluster, id: u32) {
    let start = Instant::now();
    while c.is_running(id) {
        assert!(
            start.elapsed() < BOUND,
            "node {id} still runs\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn each_group_has_its_key_and_a_partition_leaves_each_with_its_holder() {
    const WEB: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 100);
    const DB: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 101);
    Etcd::require();
    let (_g, mut c) = test_lan("wg", &[100, 90], FAST, 1);
    let ns = c.add_host("etcd", "w0", ETCD_IP).unwrap();
    let etcd = Etcd::start(&ns, ETCD_IP, c.lab.scratch.join("etcd")).unwrap();
    // Reversed priorities: node 1 holds web, node 2 holds db.
    for (id, web, db) in [(1, 200, 100), (2, 100, 200)] {
        let text = format!(
            "witness = \"{}\"\nwitness_ttl = \"2s\"\n\n\
             [group.web]\nvip = [\"{WEB}/24\"]\npriority = {web}\n\n\
             [group.db]\nvip = [\"{DB}/24\"]\npriority = {db}\n",
            etcd.url()
        );
        c.use_groups(id, &text).unwrap();
    }
    c.start_all().unwrap();
    let keys = |c: &Cluster, id: u32| -> Vec<(String, Option<String>)> {
        let s = c
            .status_of(id)
            .unwrap_or_else(|| panic!("node {id}'s status"));
        s.groups
            .into_iter()
            .map(|g| (g.name, g.witness_key))
            .collect()
    };
    let ours = |c: &Cluster| {
        c.holders_of(WEB) == [1]
            && c.holders_of(DB) == [2]
            && keys(c, 1).contains(&("web".into(), Some("ours".into())))
            && keys(c, 2).contains(&("db".into(), Some("ours".into())))
    };
    assert!(
        c.wait_for(BOUND, ours),
        "{:?} {:?}\n{}",
        keys(&c, 1),
        keys(&c, 2),
        c.logs()
    );
    let listed = etcd.get_prefix("/hb/1/").unwrap();
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 4, "{listed}");
    assert!(
        lines[0] == "/hb/1/db" && lines[1].starts_with("2 "),
        "{listed}"
    );
    assert!(
        lines[2] == "/hb/1/web" && lines[3].starts_with("1 "),
        "{listed}"
    );
    // Cut apart, each keeps its own group and waits for the other's key.
    c.partition(&[("n1e0", Some("n2e0"))]).unwrap();
    let start = Instant::now();
    while start.elapsed() < 4 * TTL {
        let (web, db) = (c.holders_of(WEB), c.holders_of(DB));
        assert!(
            web == [1] && db == [2],
            "web on {web:?}, db on {db:?} after {:?}\n{}",
            start.elapsed(),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(keys(&c, 1).contains(&("db".into(), Some("node 2".into()))));
    assert!(keys(&c, 2).contains(&("web".into(), Some("node 1".into()))));
}
