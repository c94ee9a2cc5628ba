//! The interface changes under a running node: deleted and made again (a new
//! ifindex and MAC), given a new MAC, renamed. hb follows it without a restart:
//! XDP attached again with its state, heartbeats on new sockets, the holder
//! announcing its new MAC; and the data plane on the new interface still does
//! its job (a takeover there, the fence after a crash there).

use hb_tests::cluster::{test_lan, Cluster, NodeState, BOUND, FAST, IFACE, VIP};
use nix::sys::signal::Signal;
use std::time::Duration;

/// Within `BOUND`, node `of`'s status says peer `peer` is alive.
fn expect_hears(c: &Cluster, of: u32, peer: u32) {
    let hears = |c: &Cluster| {
        c.report(of)
            .is_ok_and(|r| r.peers.iter().any(|p| p.peer == peer && p.alive))
    };
    assert!(
        c.wait_for(BOUND, hears),
        "node {of} does not hear node {peer}: {:?}\n{}",
        c.report(of),
        c.logs()
    );
}

/// Node 1's one data plane is attached, as its status says.
fn attached(c: &Cluster) -> bool {
    c.report(1)
        .is_ok_and(|r| r.planes.first().is_some_and(|p| p.attached))
}

/// Pings the VIP from the client until the reply comes from `mac` (the
/// client's neighbour cache may need a gratuitous ARP to learn it).
fn expect_vip_at(c: &Cluster, mac: [u8; 6]) {
    let mut last = None;
    let at_mac = |c: &Cluster| {
        last = c.client_reach_vip();
        last == Some(mac)
    };
    assert!(
        c.wait_for(BOUND, at_mac),
        "the VIP is not answered from {mac:02x?}: last reply from {last:02x?}\n{}",
        c.logs()
    );
}

#[test]
fn an_interface_deleted_and_made_again_is_followed_without_a_restart() {
    let (_g, mut c) = test_lan("lf", &[100, 90], FAST, 1);
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    let (old_index, old_mac) = (
        c.lab.ifindex(&c.node(1).ns, IFACE).unwrap(),
        c.lab.mac(&c.node(1).ns, IFACE).unwrap(),
    );
    c.remake_link(1).unwrap();
    let n1 = c.node(1).ns.clone();
    let (index, mac) = (
        c.lab.ifindex(&n1, IFACE).unwrap(),
        c.lab.mac(&n1, IFACE).unwrap(),
    );
    assert_ne!(index, old_index, "the interface was not made again");
    assert_ne!(mac, old_mac);
    // Node 1 is attached on the new interface, both hear each other again,
    // and node 1 (higher, preempting) holds the VIP there, answering with the
    // new MAC; no restart, the same process.
    let pid = c.pid(1);
    assert!(
        c.wait_for(BOUND, |c| c.xdp_attached(1)),
        "no XDP on the new {IFACE}\n{}",
        c.logs()
    );
    expect_hears(&c, 2, 1);
    expect_hears(&c, 1, 2);
    c.expect_settled(1, BOUND);
    assert!(c.is_running(1));
    assert_eq!(c.pid(1), pid);
    expect_vip_at(&c, mac);
    assert!(attached(&c), "{:?}", c.report(1));
    // The fence on the new interface: node 1 crashes, its XDP marks it dead
    // and stops answering for the VIP; node 2 alone serves it.
    c.signal(1, Signal::SIGKILL).unwrap();
    assert!(
        c.wait_for(BOUND, |c| c.state_of(2) == Some(NodeState::Master)),
        "{}",
        c.logs()
    );
    let mac2 = c.node(2).mac;
    expect_vip_at(&c, mac2);
    let probe = c.probe(Duration::from_millis(5)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let rec = probe.stop();
    assert!(!rec.replies.is_empty(), "no reply for the VIP");
    assert!(
        rec.replies.iter().all(|r| r.mac == mac2),
        "the crashed node still answers for the VIP from its new interface"
    );
}

#[test]
fn a_new_mac_and_a_new_name_are_followed_without_a_restart() {
    let (_g, mut c) = test_lan("lm", &[100, 90], FAST, 1);
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    let pid = c.pid(1);
    // A new MAC while up: the holder keeps the VIP and tells the LAN.
    let mac = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];
    let mac_str = hb_tests::netns::mac_str(mac);
    c.exec(1, &["ip", "link", "set", IFACE, "address", &mac_str])
        .unwrap();
    expect_vip_at(&c, mac);
    expect_hears(&c, 2, 1);
    c.expect_single_holder(1, BOUND);
    // A new name (an interface is renamed only while down): node 2 takes
    // over meanwhile; node 1 follows the interface under its new name.
    const NEW: &str = "hbx0";
    c.exec(1, &["ip", "link", "set", IFACE, "down"]).unwrap();
    c.exec(1, &["ip", "link", "set", IFACE, "name", NEW])
        .unwrap();
    c.exec(1, &["ip", "link", "set", NEW, "up"]).unwrap();
    expect_hears(&c, 2, 1);
    expect_hears(&c, 1, 2);
    assert!(c.is_running(1));
    assert_eq!(c.pid(1), pid);
    let shows_new = |c: &Cluster| c.status_of(1).is_some_and(|s| s.ifaces == [NEW]) && attached(c);
    assert!(
        c.wait_for(BOUND, shows_new),
        "status does not follow the rename: {:?}",
        c.report(1)
    );
    // Node 1, higher and preempting, holds the VIP on the renamed interface.
    let on_new = |c: &Cluster| {
        c.exec(1, &["ip", "-4", "-o", "addr", "show", "dev", NEW])
            .is_ok_and(|o| o.contains(&format!(" {VIP}/")))
    };
    // (`holders` looks at eth0, which node 1 no longer has: node 2 released.)
    assert!(
        c.wait_for(BOUND, |c| on_new(c) && c.holders().is_empty()),
        "the VIP is not on {NEW} alone: node 2's eth0 has it too: {}\n{}",
        c.holders() == [2],
        c.logs()
    );
    expect_vip_at(&c, mac);
}
