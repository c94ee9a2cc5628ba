//! Several VIP groups per node, as keepalived users run several
//! `vrrp_instance`s: two groups with reversed priorities give each node one
//! (active-active), a crash moves both to the survivor, and the returning node
//! takes its group back, after its `preempt_delay`. A sync group moves whole
//! when one member's check fails, with keepalived-style notify arguments for
//! the groups and the sync group. A reload that changes one group's priority
//! moves that group only: the other group's VIP answers throughout.

use hb_tests::cluster::{test_lan, Cluster, BOUND, FAST};
use hb_tests::probe::Probe;
use nix::sys::signal::Signal;
use std::{
    net::Ipv4Addr,
    path::PathBuf,
    sync::MutexGuard,
    time::{Duration, Instant},
};

const WEB: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 100);
const DB: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 101);

/// Node `id`'s groups: `web` and `db`, with the priorities given, db with
/// `db_delay` as its preempt_delay.
fn two_groups(web: u8, db: u8, db_delay: &str) -> String {
    format!(
        "[group.web]\nvip = [\"{WEB}/24\"]\npriority = {web}\n\n\
         [group.db]\nvip = [\"{DB}/24 dev eth0\"]\npriority = {db}\npreempt_delay = \"{db_delay}\"\n"
    )
}

fn holds(c: &Cluster, addr: Ipv4Addr, ids: &[u32]) -> bool {
    c.holders_of(addr) == ids
}

fn wait_holders(c: &Cluster, addr: Ipv4Addr, ids: &[u32], why: &str) {
    assert!(
        c.wait_for(BOUND, |c| holds(c, addr, ids)),
        "{why}: {addr} on {:?}, expected {ids:?}\n{}",
        c.holders_of(addr),
        c.logs()
    );
}

#[test]
fn reversed_priorities_give_each_node_a_group_and_a_crash_moves_both() {
    let (_g, mut c) = test_lan("vgr", &[200, 100], FAST, 1);
    c.use_groups(1, &two_groups(200, 100, "0s")).unwrap();
    c.use_groups(2, &two_groups(100, 200, "2s")).unwrap();
    c.start_all().unwrap();
    wait_holders(&c, WEB, &[1], "web's higher node");
    wait_holders(&c, DB, &[2], "db's higher node");
    // What a user checks: each group's holder in `status --json`.
    let groups = |c: &Cluster| -> Vec<(String, usize, u32)> {
        let node = c.report(1).ok().and_then(|r| r.node);
        let groups = node.map(|n| n.groups).unwrap_or_default();
        groups
            .iter()
            .map(|g| (g.name.clone(), g.id, g.holder))
            .collect()
    };
    let want = [("db".to_string(), 1, 2), ("web".to_string(), 2, 1)];
    assert!(
        c.wait_for(BOUND, |c| groups(c) == want),
        "node 1's status: {:?}\n{}",
        groups(&c),
        c.logs()
    );

    // Node 2 crashes: both groups on node 1. A crash cleans up nothing (db's
    // address stays on node 2, fenced by its data plane): what counts is who
    // answers the client.
    let probe = c.probe_addr(DB, Duration::from_millis(10)).unwrap();
    let killed = Instant::now();
    c.signal(2, Signal::SIGKILL).unwrap();
    let n1 = c.node(1).mac;
    assert!(
        c.wait_for(BOUND, |c| c.holders_of(DB).contains(&1)
            && probe.snapshot().first_from(n1, killed).is_some()),
        "node 1 never answered for db after node 2 crashed\n{}",
        c.logs()
    );
    drop(probe);
    assert!(holds(&c, WEB, &[1]), "{}", c.logs());

    // Back: db returns to node 2, but not before its preempt_delay (2 s after
    // its start); web stays.
    let started = Instant::now();
    c.start(2).unwrap();
    assert!(
        c.wait_for(BOUND, |c| c.status_of(2).is_some_and(|s| s
            .groups
            .iter()
            .all(|g| g.state == hb_common::NodeState::Backup))),
        "node 2 never settled as BACKUP\n{}",
        c.logs()
    );
    while started.elapsed() < Duration::from_millis(1500) {
        assert!(
            holds(&c, DB, &[1]),
            "db moved {} ms after node 2's start, before its preempt_delay of 2 s\n{}",
            started.elapsed().as_millis(),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_holders(&c, DB, &[2], "db after node 2's preempt_delay");
    assert!(holds(&c, WEB, &[1]), "web moved\n{}", c.logs());
}

#[test]
fn a_sync_group_moves_whole_when_one_members_check_fails() {
    let (_g, mut c) = test_lan("vgs", &[200, 100], FAST, 1);
    let flag = c.lab.scratch.join("down");
    let scratch = c.lab.scratch.clone();
    let notes = |id: u32| scratch.join(format!("notify{id}"));
    for (id, prio) in [(1u32, 200u8), (2, 100)] {
        let notes = notes(id);
        let flag = if id == 1 {
            flag.display().to_string()
        } else {
            // Node 2's check never fails.
            "/nonexistent/hb-test-flag".to_string()
        };
        let text = format!(
            "priority = {prio}\nnotify = \"echo >> {n}\"\nnotify_args = \"keepalived\"\n\n\
             [check.svc]\nscript = \"test ! -e {flag}\"\ninterval = \"100ms\"\n\n\
             [group.web]\nvip = [\"{WEB}/24\"]\ntrack = [\"svc\"]\n\n\
             [group.db]\nvip = [\"{DB}/24\"]\nnotify_master = \"echo db-master-cmd $# >> {n}\"\n\n\
             [sync.pair]\ngroups = [\"web\", \"db\"]\nnotify = \"echo >> {n}\"\n",
            n = notes.display()
        );
        c.use_groups(id, &text).unwrap();
    }
    c.start_all().unwrap();
    wait_holders(&c, WEB, &[1], "web");
    wait_holders(&c, DB, &[1], "db");
    // web's check fails on node 1: the whole sync group goes to node 2.
    std::fs::write(&flag, "").unwrap();
    wait_holders(&c, DB, &[2], "db, whose sync partner's check failed");
    assert!(holds(&c, WEB, &[2]), "{}", c.logs());
    let s = c.status_of(1).unwrap();
    assert!(
        s.groups
            .iter()
            .all(|g| g.state == hb_common::NodeState::Fault),
        "{:?}",
        s.groups
    );
    // keepalived's notify arguments: each instance, then the sync group.
    let read = |id| std::fs::read_to_string(notes(id)).unwrap_or_default();
    assert!(
        c.wait_for(BOUND, |_| {
            let n = read(2);
            [
                "INSTANCE db MASTER 100",
                "INSTANCE web MASTER 100",
                "GROUP pair MASTER 100",
                // keepalived's notify_master: as written, without arguments.
                "db-master-cmd 0",
            ]
            .iter()
            .all(|l| n.lines().any(|x| x == *l))
        }),
        "node 2's notify calls:\n{}",
        read(2)
    );
    assert!(
        read(1).lines().any(|l| l == "GROUP pair FAULT 200"),
        "node 1's notify calls:\n{}",
        read(1)
    );
}

/// `hb-user reload` as node `id`: exit code, stdout, stderr.
fn reload(c: &Cluster, id: u32) -> (i32, String, String) {
    let dir = c.node(id).state_dir.display().to_string();
    c.run_as_node(id, &["reload".into(), "--state-dir".into(), dir])
        .unwrap()
}

/// Web on node 1, db on node 2, settled, with a client probing web's VIP:
/// the lab, the nodes' files, the probe and when it had settled.
fn active_active(
    tag: &str,
) -> (
    MutexGuard<'static, ()>,
    Cluster,
    [PathBuf; 2],
    Probe,
    Instant,
) {
    let (g, mut c) = test_lan(tag, &[200, 100], FAST, 1);
    let files = [
        c.use_groups(1, &two_groups(200, 100, "0s")).unwrap(),
        c.use_groups(2, &two_groups(100, 200, "0s")).unwrap(),
    ];
    c.start_all().unwrap();
    wait_holders(&c, WEB, &[1], "web");
    wait_holders(&c, DB, &[2], "db");
    let probe = c.probe_addr(WEB, Duration::from_millis(10)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    (g, c, files, probe, Instant::now())
}

#[test]
fn a_reload_moves_only_the_group_whose_priority_changed() {
    let (_g, mut c, [_, file2], probe, from) = active_active("vgh");
    // db's priority on node 2 drops below node 1's: db moves, web stays.
    std::fs::write(&file2, two_groups(100, 50, "0s")).unwrap();
    let (code, out, err) = reload(&c, 2);
    assert_eq!(code, 0, "{out}{err}");
    wait_holders(&c, DB, &[1], "db after node 2's reload");
    std::thread::sleep(Duration::from_millis(300));
    let to = Instant::now();
    let rec = probe.stop();
    let gap = rec.longest_gap(from, to);
    assert!(
        gap < Duration::from_millis(200),
        "web's VIP went unanswered for {} ms during another group's move\n{}",
        gap.as_millis(),
        c.logs()
    );
    assert!(holds(&c, WEB, &[1]), "{}", c.logs());
    // A broken file changes nothing and says why, naming the field.
    std::fs::write(&file2, "[group.db]\npriority = 500\n").unwrap();
    let (code, out, err) = reload(&c, 2);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("group.db.priority"),
        "{out}{err}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(holds(&c, DB, &[1]) && holds(&c, WEB, &[1]), "{}", c.logs());
    assert!(c.is_running(2));
}

/// Node `id`'s routes to 198.51.100.0/24 and 203.0.113.0/24 and its rules
/// for table 100, as `ip` prints them (empty: none).
fn routes_of(c: &Cluster, id: u32) -> (String, String, String) {
    let run = |args: &[&str]| c.exec(id, args).unwrap_or_default().trim().to_string();
    (
        run(&["ip", "route", "show", "198.51.100.0/24"]),
        run(&["ip", "route", "show", "type", "blackhole"]),
        run(&["ip", "rule", "show", "table", "100"]),
    )
}

#[test]
fn routes_and_rules_move_with_their_group() {
    let (_g, mut c) = test_lan("vgr2", &[200, 100], FAST, 1);
    for (id, prio) in [(1, 200), (2, 100)] {
        let text = format!(
            "[group.web]\nvip = [\"{WEB}/24\"]\npriority = {prio}\n\
             routes = [\"198.51.100.0/24 via 10.203.0.254 dev eth0\", \"blackhole 203.0.113.0/24\"]\n\
             rules = [\"from {WEB}/32 table 100\"]\n"
        );
        c.use_groups(id, &text).unwrap();
    }
    c.start_all().unwrap();
    wait_holders(&c, WEB, &[1], "web");
    let has = |c: &Cluster, id| {
        let (r, b, rule) = routes_of(c, id);
        r.contains("via 10.203.0.254")
            && b.contains("203.0.113.0/24")
            && rule.contains("lookup 100")
    };
    let none = |c: &Cluster, id| routes_of(c, id) == (String::new(), String::new(), String::new());
    assert!(
        c.wait_for(BOUND, |c| has(c, 1) && none(c, 2)),
        "node 1 {:?}, node 2 {:?}\n{}",
        routes_of(&c, 1),
        routes_of(&c, 2),
        c.logs()
    );
    // A graceful stop takes them along with the VIP; the new holder adds them.
    c.signal(1, Signal::SIGTERM).unwrap();
    wait_holders(&c, WEB, &[2], "web after node 1 stopped");
    assert!(
        c.wait_for(BOUND, |c| has(c, 2) && none(c, 1)),
        "node 1 {:?}, node 2 {:?}\n{}",
        routes_of(&c, 1),
        routes_of(&c, 2),
        c.logs()
    );
}

#[test]
fn a_healed_partition_tells_the_holder_of_the_lower_one() {
    let (_g, mut c) = test_lan("vgp", &[200, 100], FAST, 1);
    let notes = c.lab.scratch.join("rx");
    for (id, prio) in [(1, 200), (2, 100)] {
        let text = format!(
            "[group.web]\nvip = [\"{WEB}/24\"]\npriority = {prio}\n\
             notify_master_rx_lower_pri = \"echo rx{id} $# >> {}\"\n",
            notes.display()
        );
        c.use_groups(id, &text).unwrap();
    }
    c.start_all().unwrap();
    wait_holders(&c, WEB, &[1], "web");
    // Cut the nodes apart (both still reach the client): two holders.
    c.partition(&[("n1e0", Some("n2e0"))]).unwrap();
    wait_holders(&c, WEB, &[1, 2], "web during the partition");
    // Node 1 hears node 2 again first (which of the two does is a race on a
    // real heal; node 2 yields the moment it hears node 1).
    c.cut_one_way("n1e0", "n2e0").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c.heal().unwrap();
    // The higher holder hears the lower one: keepalived's
    // notify_master_rx_lower_pri runs there, as written; the lower yields.
    let read = || std::fs::read_to_string(&notes).unwrap_or_default();
    assert!(
        c.wait_for(BOUND, |_| read().lines().any(|l| l == "rx1 0")),
        "notify_master_rx_lower_pri calls: {:?}\n{}",
        read(),
        c.logs()
    );
    wait_holders(&c, WEB, &[1], "web after the heal");
    assert!(!read().contains("rx2"), "{}", read());
}

#[test]
fn a_reload_adds_and_removes_a_groups_vips_while_the_other_group_answers() {
    const DB2: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 102);
    let (_g, c, files, probe, from) = active_active("vgv");
    // db gets a second VIP on both nodes: its holder adds it at once.
    for (id, (web, db)) in [(1, (200, 100)), (2, (100, 200))] {
        let text = two_groups(web, db, "0s").replace(
            &format!("vip = [\"{DB}/24 dev eth0\"]"),
            &format!("vip = [\"{DB}/24 dev eth0\", \"{DB2}/24\"]"),
        );
        assert!(text.contains(&DB2.to_string()));
        std::fs::write(&files[id as usize - 1], text).unwrap();
        let (code, out, err) = reload(&c, id);
        assert_eq!(code, 0, "{out}{err}");
    }
    wait_holders(&c, DB2, &[2], "db's new VIP");
    assert!(holds(&c, DB, &[2]) && holds(&c, WEB, &[1]), "{}", c.logs());
    let s = c.status_of(2).unwrap();
    let db = s.groups.iter().find(|g| g.name == "db").unwrap();
    assert_eq!(db.vips.len(), 2, "{:?}", db.vips);
    // And it goes again.
    for (id, (web, db)) in [(1, (200, 100)), (2, (100, 200))] {
        std::fs::write(&files[id as usize - 1], two_groups(web, db, "0s")).unwrap();
        let (code, out, err) = reload(&c, id);
        assert_eq!(code, 0, "{out}{err}");
    }
    wait_holders(&c, DB2, &[], "db's removed VIP");
    std::thread::sleep(Duration::from_millis(300));
    let gap = probe.stop().longest_gap(from, Instant::now());
    assert!(
        gap < Duration::from_millis(200),
        "web's VIP went unanswered for {} ms while db's VIPs changed\n{}",
        gap.as_millis(),
        c.logs()
    );
    assert!(holds(&c, DB, &[2]) && holds(&c, WEB, &[1]), "{}", c.logs());
}

#[test]
fn a_reload_adds_a_group_and_removes_one_and_its_holder_hands_it_over() {
    const API: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 103);
    let (_g, c, files, probe, from) = active_active("vga");
    let api = |priority: u8| {
        format!("\n[group.api]\nid = 3\nvip = [\"{API}/24\"]\npriority = {priority}\n")
    };
    // A third group on both nodes, higher on node 1: it starts there, the
    // other groups stay where they are.
    for (id, (web, db, a)) in [(1, (200, 100, 200)), (2, (100, 200, 100))] {
        let text = two_groups(web, db, "0s") + &api(a);
        std::fs::write(&files[id as usize - 1], text).unwrap();
        let (code, out, err) = reload(&c, id);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("group"), "the changed setting is named: {out}");
    }
    wait_holders(&c, API, &[1], "the added group");
    assert!(holds(&c, DB, &[2]) && holds(&c, WEB, &[1]), "{}", c.logs());
    let names = |id: u32| -> Vec<String> {
        let s = c.status_of(id).unwrap();
        s.groups.iter().map(|g| g.name.clone()).collect()
    };
    assert!(names(1).contains(&"api".to_string()), "{:?}", names(1));

    // db leaves node 2's file first. Without db, web's defaulted id would
    // be db's: refused, naming it, and nothing moves.
    let without_db = |web: u8, a: u8, id: &str| {
        format!("[group.web]\n{id}vip = [\"{WEB}/24\"]\npriority = {web}\n") + &api(a)
    };
    std::fs::write(&files[1], without_db(100, 100, "")).unwrap();
    let (code, out, err) = reload(&c, 2);
    assert_eq!(code, 2, "{out}{err}");
    assert!(format!("{out}{err}").contains("group.web.id"), "{out}{err}");
    assert!(holds(&c, DB, &[2]) && holds(&c, WEB, &[1]), "{}", c.logs());
    // With web's id written: node 2 releases db, and node 1, which still
    // has it, takes it; then it leaves node 1's file too, and nobody has it.
    std::fs::write(&files[1], without_db(100, 100, "id = 2\n")).unwrap();
    let (code, out, err) = reload(&c, 2);
    assert_eq!(code, 0, "{out}{err}");
    wait_holders(&c, DB, &[1], "db after its holder dropped it");
    std::fs::write(&files[0], without_db(200, 200, "id = 2\n")).unwrap();
    let (code, out, err) = reload(&c, 1);
    assert_eq!(code, 0, "{out}{err}");
    wait_holders(&c, DB, &[], "db removed from both nodes");
    assert!(!names(1).contains(&"db".to_string()), "{:?}", names(1));
    std::thread::sleep(Duration::from_millis(300));
    let gap = probe.stop().longest_gap(from, Instant::now());
    assert!(
        gap < Duration::from_millis(200),
        "web's VIP went unanswered for {} ms while groups came and went\n{}",
        gap.as_millis(),
        c.logs()
    );
    assert!(holds(&c, WEB, &[1]) && holds(&c, API, &[1]), "{}", c.logs());
    // The groups that stayed still fail over: node 1's crash moves both (a
    // crash removes nothing: node 1's addresses stay, fenced by its data
    // plane; what counts is that node 2 holds them).
    let mut c = c;
    c.signal(1, Signal::SIGKILL).unwrap();
    let masters = |c: &Cluster| -> Vec<String> {
        let s = c.status_of(2).unwrap();
        let held = s
            .groups
            .iter()
            .filter(|g| g.state == hb_common::NodeState::Master);
        held.map(|g| g.name.clone()).collect()
    };
    assert!(
        c.wait_for(BOUND, |c| masters(c) == ["api", "web"]
            && c.holders_of(WEB).contains(&2)
            && c.holders_of(API).contains(&2)),
        "node 2 holds {:?} after node 1's crash\n{}",
        masters(&c),
        c.logs()
    );
}
