//! Wire v2 sessions with real `hb-user` processes in namespaces: what no
//! restart, lost state directory, captured heartbeat or misconfigured node id
//! can do to the cluster any more. Captures are taken by the test with a packet
//! socket and replayed with one; cuts are nftables rules in the switch.

use hb_tests::{
    cluster::{test_lan, Cluster, NodeState, Report, BOUND, FAST},
    frames,
    netns::all_frames_socket,
};
use nix::sys::signal::Signal;
use std::{
    os::fd::AsRawFd,
    sync::MutexGuard,
    time::{Duration, Instant},
};

const HB_PORT: u16 = 694;
/// Ethernet + IPv4 + UDP before an hb payload (the nodes send without options).
const PAYLOAD_OFF: usize = 14 + 20 + 8;

fn cluster(tag: &str, priorities: &[u8], links: usize) -> (MutexGuard<'static, ()>, Cluster) {
    let (guard, mut c) = test_lan(tag, priorities, FAST, links);
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    (guard, c)
}

/// `status --json` of node `id`; None while it has none (starting, stopped).
fn status(c: &Cluster, id: u32) -> Option<Report> {
    c.report(id).ok()
}

/// Counter `name` of node `id`, summed over its links.
fn counter(c: &Cluster, id: u32, name: &str) -> u64 {
    status(c, id)
        .into_iter()
        .flat_map(|r| r.counters)
        .map(|l| l.counters.get(name).copied().unwrap_or(0))
        .sum()
}

/// Whether node `id`'s status shows `peer` alive on any link.
fn peer_alive(c: &Cluster, id: u32, peer: u32) -> bool {
    status(c, id)
        .into_iter()
        .flat_map(|r| r.peers)
        .any(|p| p.peer == peer && p.alive)
}

/// Samples for `d`: node `id` alone holds the VIP the whole time.
/// hb messages from `src_mac` seen on `dev` in `ns` during `d`, whole frames.
/// Taken on the switch: the receiver's own XDP drops them before any tap.
fn capture(c: &Cluster, ns: &str, dev: &str, src_mac: [u8; 6], d: Duration) -> Vec<Vec<u8>> {
    let dev = dev.to_string();
    c.lab
        .in_netns(ns, move || {
            let fd = all_frames_socket(&dev, true).unwrap();
            let mut out = Vec::new();
            let mut buf = vec![0u8; 2048];
            let start = Instant::now();
            while start.elapsed() < d && out.len() < 10_000 {
                // SAFETY: recv into our buffer on our socket.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n <= 0 {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let f = &buf[..n as usize];
                let hb = f.len() == PAYLOAD_OFF + hb_common::wire2::LEN
                    && f[6..12] == src_mac
                    && f[12..14] == [0x08, 0x00]
                    && f[23] == 17
                    && u16::from_be_bytes([f[36], f[37]]) == HB_PORT;
                if hb {
                    out.push(f.to_vec());
                }
            }
            out
        })
        .unwrap()
}

/// Sends `frames` out of `dev` in `ns`, one every `gap`, cycling until `d` passed.
fn replay(
    c: &Cluster,
    ns: &str,
    dev: &str,
    frames: &[Vec<u8>],
    gap: Duration,
    d: Duration,
) -> usize {
    let start = Instant::now();
    let mut sent = 0;
    for f in frames.iter().cycle() {
        if start.elapsed() >= d || sent >= 100_000 {
            break;
        }
        c.lab.send_frames(ns, dev, &[f]).unwrap();
        sent += 1;
        std::thread::sleep(gap);
    }
    sent
}

#[test]
fn a_node_that_lost_its_state_dir_is_heard_again_and_one_node_holds() {
    let (_g, mut c) = cluster("ws", &[150, 100], 1);
    // Two restarts, then a third with the state directory gone (a reinstall,
    // a restored backup, a snapshot revert).
    for wipe in [false, false, true] {
        c.signal(1, Signal::SIGKILL).unwrap();
        if wipe {
            std::fs::remove_dir_all(&c.node(1).state_dir).unwrap();
        }
        c.start(1).unwrap();
        if !wipe {
            // Each run lives long enough to be heard.
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    // Settled within 1 s: node 1 (its new status file: the wiped node's
    // election has decided) holds alone, node 2 is BACKUP. The VIP address a
    // killed node leaves behind is not a decision, so the states are checked too.
    let settled = |c: &Cluster| {
        c.holders() == [1]
            && c.state_of(1) == Some(NodeState::Master)
            && c.state_of(2) == Some(NodeState::Backup)
    };
    assert!(
        c.wait_for(Duration::from_secs(1), settled),
        "holders {:?} 1 s after the wiped restart\n{}",
        c.holders(),
        c.logs()
    );
    assert!(
        c.wait_for(BOUND, |c| peer_alive(c, 2, 1) && peer_alive(c, 1, 2)),
        "the wiped node is not heard: {}\n{}",
        c.status(2, false).unwrap(),
        c.logs()
    );
    c.holds_steadily(1, Duration::from_secs(1));
}

#[test]
fn a_capture_of_a_dead_peer_is_refused_by_a_restarted_receiver() {
    let (_g, mut c) = cluster("rp", &[150, 100], 1);
    let n1 = c.node(1).ns.clone();
    let mac1 = c.node(1).mac;
    let frames = capture(&c, &c.sw, "n2e0", mac1, Duration::from_millis(1500));
    assert!(frames.len() > 20, "captured {} heartbeats", frames.len());
    // The peer goes down; the receiver restarts with fresh maps (as after a
    // reboot or `hb-user cleanup`), knowing nothing of any session.
    c.signal(1, Signal::SIGTERM).unwrap();
    c.signal(2, Signal::SIGTERM).unwrap();
    c.start(2).unwrap();
    // The recording plays at the heartbeat rate: node 2 must see through it and
    // take over once init-dead passes.
    let replays = std::thread::scope(|s| {
        let player = s.spawn(|| {
            replay(
                &c,
                &n1,
                "eth0",
                &frames,
                Duration::from_millis(20),
                Duration::from_secs(4),
            )
        });
        assert!(
            c.wait_for(Duration::from_secs(3), |c| c.holders() == [2]),
            "node 2 did not take over during the replay: holders {:?}\n{}",
            c.holders(),
            c.logs()
        );
        assert!(!peer_alive(&c, 2, 1), "{}", c.status(2, false).unwrap());
        player.join().unwrap()
    });
    let refused =
        counter(&c, 2, "handshake") + counter(&c, 2, "stale_session") + counter(&c, 2, "replayed");
    assert_eq!(
        counter(&c, 2, "accepted"),
        0,
        "{}",
        c.status(2, false).unwrap()
    );
    assert!(
        refused as usize >= replays / 2,
        "{refused} of {replays} replays counted: {}",
        c.status(2, false).unwrap()
    );
}

#[test]
fn a_capture_from_one_link_replayed_on_a_lagging_link_is_refused() {
    let (_g, mut c) = cluster("rl2", &[150, 100], 2);
    let (n1, n2) = (c.node(1).ns.clone(), c.node(2).ns.clone());
    let mac1 = c.node(1).mac;
    let mac2_eth1 = c.lab.mac(&n2, "eth1").unwrap();
    // Node 2's second link is cut while node 1 goes on heartbeating on both:
    // that link's record of node 1 falls behind.
    c.partition(&[("n2e1", None)]).unwrap();
    let frames = capture(&c, &c.sw, "n2e0", mac1, Duration::from_millis(1500));
    assert!(frames.len() > 20, "captured {} heartbeats", frames.len());
    c.signal(1, Signal::SIGTERM).unwrap();
    c.expect_single_holder(2, BOUND);
    c.heal().unwrap();
    // The eth0 recording, readdressed to node 2's eth1, played on the link
    // that lagged: newer than anything that link saw, older than eth0's.
    let moved: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let mut f = f.clone();
            f[..6].copy_from_slice(&mac2_eth1);
            f
        })
        .collect();
    std::thread::scope(|s| {
        let player = s.spawn(|| {
            replay(
                &c,
                &n1,
                "eth1",
                &moved,
                Duration::from_millis(20),
                Duration::from_secs(2),
            )
        });
        c.holds_steadily(2, Duration::from_millis(1500));
        assert!(!peer_alive(&c, 2, 1), "{}", c.status(2, false).unwrap());
        player.join().unwrap();
    });
}

#[test]
fn a_second_machine_with_our_id_is_an_error_and_holds_nothing() {
    let (_g, mut c) = test_lan("id", &[100, 90, 200], FAST, 1);
    c.start(1).unwrap();
    c.start(2).unwrap();
    c.expect_settled(1, BOUND);
    // Node 3's machine is given node 1's id (a copied configuration) and the
    // highest priority: alone, it would take the VIP.
    let args: Vec<String> = {
        let a = c.args(3);
        let mut out = Vec::new();
        let mut it = a.into_iter();
        while let Some(x) = it.next() {
            match x.as_str() {
                "--node-id" => {
                    it.next();
                    out.extend(["--node-id".to_string(), "1".into()]);
                }
                "--peer" => {
                    let p = it.next().unwrap();
                    if !p.starts_with("1@") {
                        out.extend(["--peer".to_string(), p]);
                    }
                }
                _ => out.push(x),
            }
        }
        out
    };
    let log = c.node(3).log.clone();
    let mut intruder = c.spawn_as_node(3, &args, &log).unwrap();
    let intruder_pid = intruder.id() as i32;
    let seen = c.wait_for(BOUND, |c| {
        status(c, 3).is_some_and(|r| {
            r.node.as_ref().is_some_and(|n| n.id_collision) && !r.id_collisions.is_empty()
        })
    });
    let status3 = c.status(3, false).unwrap_or_default();
    // Past the intruder's init-dead, it still holds nothing; node 1 still does.
    std::thread::sleep(Duration::from_millis(1500));
    let holders = c.holders();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(intruder_pid), Signal::SIGTERM);
    let _ = intruder.wait();
    hb_tests::cluster::forget_process(intruder_pid);
    assert!(
        seen,
        "no id collision in the intruder's status: {status3}\n{}",
        c.logs()
    );
    assert_eq!(holders, [1], "{}", c.logs());
    assert!(
        std::fs::read_to_string(&log).unwrap().contains("ERROR"),
        "the collision is logged as an error"
    );
}

#[test]
fn three_nodes_with_only_the_link_a_b_cut_keep_one_holder() {
    let (_g, c) = cluster("abc", &[150, 100, 50], 1);
    // B (node 2) no longer hears A (node 1); C hears both and reports A holding.
    c.partition(&[("n1e0", Some("n2e0"))]).unwrap();
    c.holds_steadily(1, Duration::from_secs(3));
    assert_eq!(c.state_of(2), Some(NodeState::Backup), "{}", c.logs());
    c.heal().unwrap();
    c.holds_steadily(1, Duration::from_millis(500));
}

#[test]
fn a_peer_speaking_wire_v1_is_refused_counted_and_kept_out_of_the_way() {
    let (_g, mut c) = test_lan("v1", &[100, 150], FAST, 1);
    // Node 1 is an old hb: the test speaks for it, with v1 heartbeats.
    c.start(2).unwrap();
    let (n1, n2) = (c.node(1).ns.clone(), c.node(2).ns.clone());
    let mac2 = c.lab.mac(&n2, "eth0").unwrap();
    // Signed with the cluster's key (cluster 1, the default), as a v1 node would.
    let key = c.key().unwrap();
    let v1: Vec<Vec<u8>> = (1..=150u64)
        .map(|seq| {
            let hb = hb_common::wire::Heartbeat {
                msg_type: hb_common::MsgType::Heartbeat,
                flags: hb_common::wire::FLAG_HOLDS_VIP,
                priority: 100,
                state: hb_common::NodeState::Master as u8,
                cluster_id: 1,
                node_id: 1,
                epoch: 3,
                seq,
            };
            let mut f = frames::Ipv4Frame::udp(HB_PORT, &hb.encode(&key)).build();
            f[..6].copy_from_slice(&mac2);
            f
        })
        .collect();
    std::thread::scope(|s| {
        let player = s.spawn(|| {
            replay(
                &c,
                &n1,
                "eth0",
                &v1,
                Duration::from_millis(20),
                Duration::from_secs(3),
            )
        });
        // Past init-dead (1 s) node 2 still takes nothing: node 1 may hold it.
        std::thread::sleep(Duration::from_millis(2000));
        let r = status(&c, 2).expect("node 2's status");
        assert_eq!(c.holders(), Vec::<u32>::new(), "{}", c.logs());
        assert!(counter(&c, 2, "old_version") > 10, "{r:?}");
        assert!(r.peers.iter().any(|p| p.old_version), "{r:?}");
        // And says why it takes nothing.
        let node = r.node.expect("node 2's status file");
        assert!(
            node.state == NodeState::Backup && node.reason.contains("wire version 1"),
            "{node:?}"
        );
        player.join().unwrap();
    });
    // The old peer is gone (upgraded, say): node 2 takes over.
    c.expect_single_holder(2, BOUND);
}
