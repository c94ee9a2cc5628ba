//! `cargo xtask lab`: a local hb cluster in network namespaces, showing a failover
//! and the Linux-HA firewall incident not happening. Prints a timeline; exits
//! non-zero if any step misbehaves; cleans up on exit and on Ctrl-C.
//!
//! Usage: hb-lab [--nodes N]

use anyhow::{bail, Context, Result};
use hb_tests::{
    cluster::{clean_up_on_signals, Cluster, VIP},
    netns::mac_str,
};
use std::time::{Duration, Instant};

const TAG: &str = "lab";
const SETTINGS: &[&str] = &[
    "--interval",
    "10ms",
    "--dead-after",
    "50ms",
    "--init-dead",
    "1s",
];

struct Timeline(Instant);

impl Timeline {
    fn say(&self, msg: impl AsRef<str>) {
        println!(
            "[{:>7.3} s] {}",
            self.0.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }
}

fn main() {
    // Ctrl-C: destructors would not run; the namespaces go all the same.
    clean_up_on_signals(|| {});
    let nodes = parse_nodes().unwrap_or_else(|e| {
        eprintln!("hb-lab: {e:#}");
        std::process::exit(2);
    });
    match lab(nodes) {
        Ok(()) => println!("\nhb-lab: every step behaved. Namespaces removed."),
        Err(e) => {
            eprintln!("\nhb-lab: FAILED: {e:#}");
            std::process::exit(1);
        }
    }
}

fn parse_nodes() -> Result<usize> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(2),
        [flag, n] if flag == "--nodes" => {
            let n: usize = n.parse().context("--nodes takes a number")?;
            if !(2..=9).contains(&n) {
                bail!("--nodes must be 2 to 9");
            }
            Ok(n)
        }
        _ => bail!("usage: hb-lab [--nodes N]"),
    }
}

fn lab(n: usize) -> Result<()> {
    hb_tests::require_root("the lab");
    let t = Timeline(Instant::now());
    let priorities: Vec<u8> = (0..n).map(|i| 100 - 10 * i as u8).collect();
    let mut c = Cluster::new(TAG, &priorities, SETTINGS)?;
    t.say(format!(
        "LAN: bridge + {n} nodes + 1 client in namespaces {}-*; VIP {VIP}/24; hb-user {}",
        c.lab.prefix,
        SETTINGS.join(" ")
    ));
    for node in &c.nodes {
        t.say(format!(
            "  node {} at {} (MAC {}), priority {}",
            node.id,
            node.ip,
            mac_str(node.mac),
            node.priority
        ));
    }
    for id in 1..=n as u32 {
        c.start(id)?;
    }
    let first = 1;
    if !c.wait_for(Duration::from_secs(5), |c| c.holders() == [first]) {
        bail!(
            "expected node {first} alone to hold the VIP, got {:?}\n{}",
            c.holders(),
            c.logs()
        );
    }
    t.say(format!("node {first} (highest priority) holds the VIP"));
    let Some(m) = c.client_reach_vip() else {
        bail!("the client cannot reach the VIP\n{}", c.logs())
    };
    t.say(format!("client reaches the VIP at MAC {}", mac_str(m)));

    // 1. Crash of the holder's daemon.
    let probe = c.probe(Duration::from_millis(1))?;
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    t.say(format!(
        "SIGKILL node {first}'s hb-user (client pings the VIP every 1 ms)"
    ));
    c.signal(first, nix::sys::signal::Signal::SIGKILL)?;
    let next = 2;
    let new_mac = c.node(next).mac;
    if !c.wait_for(Duration::from_secs(5), |_| {
        probe.snapshot().first_from(new_mac, killed).is_some()
    }) {
        bail!("no reply from node {next} within 5 s\n{}", c.logs());
    }
    std::thread::sleep(Duration::from_millis(200));
    let rec = probe.stop();
    let moved = rec.first_from(new_mac, killed).expect("seen above").at - killed;
    let log = c.log(next);
    let why = log
        .lines()
        .find(|l| l.contains("taking"))
        .unwrap_or("")
        .trim();
    t.say(format!(
        "node {next} logged: {}",
        why.split("WARN").last().unwrap_or(why).trim()
    ));
    t.say(format!(
        "client's replies now come from node {next} ({}): {} ms after the kill; longest gap without a reply {} ms",
        mac_str(new_mac),
        moved.as_millis(),
        rec.longest_gap(killed, killed + moved + Duration::from_millis(100)).as_millis()
    ));
    // The crashed node's kernel still has the address; its pinned XDP program
    // stops it answering once the holder lease runs out (dead-after).
    let old_mac = c.node(first).mac;
    let last_old = rec
        .replies
        .iter()
        .filter(|r| r.at > killed && r.mac == old_mac)
        .map(|r| r.at)
        .max();
    match last_old {
        Some(at) => t.say(format!(
            "  node {first}'s kernel answered for the VIP until {} ms after the crash, then its XDP lease ran out (self-fence)",
            (at - killed).as_millis()
        )),
        None => t.say(format!("  node {first} answered nothing after the crash")),
    }

    // 2. The old holder returns and, with preemption, takes the VIP back.
    t.say(format!("restart node {first}'s hb-user"));
    c.start(first)?;
    if !c.wait_for(Duration::from_secs(5), |c| c.holders() == [first]) {
        bail!(
            "node {first} did not take the VIP back: {:?}\n{}",
            c.holders(),
            c.logs()
        );
    }
    t.say(format!(
        "node {first} is back and holds the VIP again (preemption); node {next} released it"
    ));

    // 3. The incident: a firewall drops the heartbeat port on every node.
    for id in 1..=n as u32 {
        c.firewall(id, true, "INPUT")?;
    }
    t.say(
        "iptables -A INPUT -p udp --dport 694 -j DROP on every node (Linux-HA split-brains here)",
    );
    let start = Instant::now();
    let mut samples = 0;
    while start.elapsed() < Duration::from_secs(10) {
        let h = c.holders();
        if h != [first] {
            bail!(
                "{} s into the firewall test the holders are {h:?}\n{}",
                start.elapsed().as_secs(),
                c.logs()
            );
        }
        samples += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    t.say(format!(
        "10 s, {samples} checks: exactly one holder (node {first}) the whole time; no failover"
    ));
    let status = c.status(next, false)?;
    t.say(format!(
        "hb-user status on node {next} (firewall still in place):"
    ));
    for line in status.lines() {
        println!("             {line}");
    }
    Ok(())
}
