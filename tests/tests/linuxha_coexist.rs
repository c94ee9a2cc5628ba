//! Linux-HA Heartbeat 3.0.6 and hb in the same two namespaces, both on UDP 694:
//! first Linux-HA alone (the harness works, and it elects one holder), then
//! both at once, each cluster with its own VIP. What is checked is what a user
//! would: which namespace has each VIP, sampled for 30 s. Needs root and the
//! `heartbeat` package (`cargo xtask test` installs it); fails, never skips,
//! without them.

use hb_tests::{
    cluster::{exclusive, test_lan, time_scale, BOUND, FAST, VIP},
    linuxha::{self, Conf, LinuxHa},
    netns::Lab,
    require_root,
};
use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

/// Linux-HA's VIP: on the same /24 as hb's (.100), never the same address.
const LH_VIP: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 150);
/// Heartbeat's start: initdead (10 s, its own advice), then its resource
/// handshake; about 12 s here. Generous.
const SETTLE: Duration = Duration::from_secs(60);
/// How long the holders must stay as they are.
const STEADY: Duration = Duration::from_secs(30);

/// Fails with a clear message without root or without heartbeat.
fn require_heartbeat() -> String {
    require_root("Linux-HA coexistence tests (namespaces, mounts)");
    linuxha::version().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Linux-HA on two namespaces: node names are the namespace names, the first
/// owns the VIP.
struct LinuxHaPair {
    ns: [String; 2],
    nodes: Vec<LinuxHa>,
}

impl LinuxHaPair {
    /// Starts heartbeat in `ns[i]` (address `ips[i]` on eth0), files under `scratch`.
    fn start(ns: [&str; 2], ips: [Ipv4Addr; 2], scratch: &Path) -> Self {
        let mut nodes = Vec::new();
        for i in 0..2 {
            let conf = Conf {
                node: ns[i].into(),
                peer: ns[1 - i].into(),
                iface: "eth0".into(),
                peer_ip: ips[1 - i],
                owner: ns[0].into(),
                vip: LH_VIP,
                prefix: 24,
                keepalive: Duration::from_millis(500),
                deadtime: Duration::from_secs(3),
                initdead: Duration::from_secs(10),
                key: "hb-coexistence-test".into(),
            };
            let dir = scratch.join(format!("linuxha-{i}"));
            nodes.push(LinuxHa::start(ns[i], &conf, &dir).expect("start Linux-HA heartbeat"));
        }
        Self {
            ns: ns.map(String::from),
            nodes,
        }
    }

    /// The namespaces whose interfaces have Linux-HA's VIP now.
    fn holders(&self) -> Vec<String> {
        self.ns
            .iter()
            .filter(|ns| linuxha::holds(ns, LH_VIP))
            .cloned()
            .collect()
    }

    /// Both heartbeats' logs, and whether they still run.
    fn logs(&mut self) -> String {
        let mut s = String::new();
        for (ns, n) in self.ns.iter().zip(self.nodes.iter_mut()) {
            let running = n.running();
            s += &format!(
                "--- Linux-HA in {ns} (pid {}, running: {running}) ---\n{}",
                n.pid(),
                n.read_log()
            );
        }
        s
    }

    /// Waits (at most `SETTLE`, scaled) until the owner alone holds the VIP;
    /// returns how long that took.
    fn expect_owner_holds(&mut self) -> Duration {
        let start = Instant::now();
        let deadline = start + SETTLE * time_scale();
        while self.holders() != [self.ns[0].as_str()] {
            if Instant::now() > deadline {
                let (holders, owner) = (self.holders(), self.ns[0].clone());
                panic!(
                    "Linux-HA: expected {} alone to hold {LH_VIP} within {SETTLE:?}, holders {holders:?}\n{}",
                    owner,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        start.elapsed()
    }
}

#[test]
fn linuxha_alone_elects_one_holder() {
    let _g = exclusive();
    let version = require_heartbeat();
    let mut lab = Lab::new("lha").expect("lab");
    let a = lab.netns("a").unwrap();
    let b = lab.netns("b").unwrap();
    let ips = [Ipv4Addr::new(10, 203, 0, 1), Ipv4Addr::new(10, 203, 0, 2)];
    lab.veth(&a, "eth0", "10.203.0.1/24", &b, "eth0", "10.203.0.2/24")
        .unwrap();
    let mut lh = LinuxHaPair::start([&a, &b], ips, &lab.scratch);
    let took = lh.expect_owner_holds();
    eprintln!(
        "Linux-HA {version}: {a} holds {LH_VIP} after {} ms (figure, not a bound)",
        took.as_millis()
    );
    let start = Instant::now();
    while start.elapsed() < STEADY {
        let holders = lh.holders();
        if holders != [a.as_str()] {
            panic!(
                "at {:?}: Linux-HA's {LH_VIP} held by {holders:?}, want only {a}\n{}",
                start.elapsed(),
                lh.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Linux-HA runs first (an existing cluster), then hb starts on the same two
/// nodes, so it must neither break Linux-HA's running heartbeats on port 694
/// nor be confused by them: for 30 s each VIP stays with its own one holder.
#[test]
fn linuxha_and_hb_share_port_694() {
    let version = require_heartbeat();
    let (_g, mut c) = test_lan("lhc", &[100, 90], FAST, 1);
    let (n1, n2) = (c.node(1).ns.clone(), c.node(2).ns.clone());
    let mut lh = LinuxHaPair::start([&n1, &n2], [c.node(1).ip, c.node(2).ip], &c.lab.scratch);
    let took = lh.expect_owner_holds();
    eprintln!(
        "Linux-HA {version}: {n1} holds {LH_VIP} after {} ms (figure, not a bound)",
        took.as_millis()
    );
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    let start = Instant::now();
    while start.elapsed() < STEADY {
        let lh_holders = lh.holders();
        let hb_holders = c.holders();
        let hb_running = c.is_running(1) && c.is_running(2);
        if lh_holders != [n1.as_str()] || hb_holders != [1] || !hb_running {
            panic!(
                "at {:?} after hb started: Linux-HA's {LH_VIP} held by {lh_holders:?} (want only {n1}), \
                 hb's {VIP} by nodes {hb_holders:?} (want only 1), hb running: {hb_running}\n{}\n{}",
                start.elapsed(),
                lh.logs(),
                c.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
