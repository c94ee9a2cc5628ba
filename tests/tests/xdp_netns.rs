//! The XDP program attached to a veth in a network namespace, heartbeats sent from
//! another namespace over the kernel's UDP stack: the peer entry advances, also
//! while `iptables -A INPUT -p udp --dport 694 -j DROP` keeps a socket on port 694
//! deaf, and `bpftool` prints the pinned maps with named fields.

use aya::programs::XdpMode;
use hb_common::{wire::DEFAULT_PORT, Key, PeerState};
use hb_tests::{
    frames::{heartbeat, key},
    netns::{sh, Lab},
};
use hb_user::loader::{DataPlane, Settings};
use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

const TX_IP: &str = "10.201.0.1";
const RX_IP: &str = "10.201.0.2";
const SENDER: u32 = 1;

/// Sends `n` heartbeats from the tx namespace, seqs `first..first+n`, signed with `key`.
fn send(lab: &Lab, ns: &str, key: Key, first: u64, n: u64) {
    lab.in_netns(ns, || {
        let sock = UdpSocket::bind((TX_IP, 0)).expect("bind sender");
        for seq in first..first + n {
            sock.send_to(
                &heartbeat(SENDER, 1, seq).encode(&key),
                (RX_IP, DEFAULT_PORT),
            )
            .expect("send");
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .unwrap();
}

/// Waits (bounded) until the peer entry has `count` accepted heartbeats.
fn wait_accepted(dp: &DataPlane, count: u64) -> PeerState {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let p = dp.peer(SENDER).unwrap().unwrap();
        if p.accepted >= count || Instant::now() > deadline {
            return p;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How many datagrams a socket bound to port 694 in the rx namespace receives
/// while `during` runs.
fn socket_receives(lab: &Lab, ns: &str, during: impl FnOnce() + Send) -> usize {
    let sock = lab
        .in_netns(ns, || {
            UdpSocket::bind((RX_IP, DEFAULT_PORT)).expect("bind 694")
        })
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    during();
    let mut n = 0;
    let mut buf = [0u8; 128];
    while n < 1000 && sock.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    n
}

#[test]
fn heartbeats_are_recorded_even_behind_an_input_firewall() {
    hb_tests::require_root("attaching XDP in network namespaces");
    let mut lab = Lab::new("xn").unwrap();
    let tx = lab.netns("tx").unwrap();
    let rx = lab.netns("rx").unwrap();
    let (tx_if, rx_if) = (format!("{}a", lab.prefix), format!("{}b", lab.prefix));
    lab.veth(
        &tx,
        &tx_if,
        &format!("{TX_IP}/24"),
        &rx,
        &rx_if,
        &format!("{RX_IP}/24"),
    )
    .unwrap();
    let tx_mac = lab.mac(&tx, &tx_if).unwrap();
    let rx_ifindex = lab.ifindex(&rx, &rx_if).unwrap();
    let pin_root = lab.pin_root();

    let settings = Settings {
        cluster_id: 7,
        port: DEFAULT_PORT,
        pass_heartbeats: false,
        key: key(),
        peers: vec![SENDER],
    };
    let mut dp = lab
        .in_netns(&rx, || -> anyhow::Result<DataPlane> {
            let mut dp = DataPlane::load()?;
            dp.configure(&settings)?;
            dp.attach(&rx_if, XdpMode::Driver)?;
            Ok(dp)
        })
        .unwrap()
        .expect("load and attach in the rx namespace");
    let pins = dp.pin(&pin_root, &rx_if).expect("pin maps");

    // 1. Plain delivery: the entry advances; heartbeats stop in XDP (socket gets none).
    let got = socket_receives(&lab, &rx, || send(&lab, &tx, key(), 1, 5));
    let p = wait_accepted(&dp, 5);
    assert_eq!((p.accepted, p.epoch, p.seq), (5, 1, 5));
    assert_eq!(p.src_ipv4, [10, 201, 0, 1]);
    assert_eq!(p.src_mac, tx_mac);
    assert_eq!(p.ifindex, rx_ifindex);
    assert!(hb_tests::monotonic_ns() - p.last_seen_ns < 5_000_000_000);
    assert_eq!(got, 0, "heartbeats are dropped in XDP by default");

    // 2. With the debug switch on and no firewall, the socket on 694 does receive them:
    //    so the silence in step 3 is the firewall's doing.
    dp.configure(&Settings {
        pass_heartbeats: true,
        ..settings.clone()
    })
    .unwrap();
    let got = socket_receives(&lab, &rx, || send(&lab, &tx, key(), 6, 5));
    assert_eq!(wait_accepted(&dp, 10).accepted, 10);
    assert_eq!(
        got, 5,
        "without a firewall the socket gets every passed heartbeat"
    );

    // 3. The incident's firewall rule: the socket hears nothing, XDP still records every heartbeat.
    lab.exec(
        &rx,
        &[
            "iptables", "-A", "INPUT", "-p", "udp", "--dport", "694", "-j", "DROP",
        ],
    )
    .unwrap();
    let got = socket_receives(&lab, &rx, || send(&lab, &tx, key(), 11, 5));
    let p = wait_accepted(&dp, 15);
    assert_eq!(
        (p.accepted, p.seq),
        (15, 15),
        "XDP records heartbeats the firewall drops"
    );
    assert_eq!(got, 0, "iptables DROP keeps the socket deaf");
    // The rule itself saw (and dropped) the five heartbeats XDP passed on.
    let listing = lab
        .exec(&rx, &["iptables", "-L", "INPUT", "-v", "-x", "-n"])
        .unwrap();
    let rule = listing
        .lines()
        .find(|l| l.contains("udp dpt:694"))
        .unwrap_or_else(|| panic!("no rule: {listing}"));
    let dropped: u64 = rule.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(dropped, 5, "iptables dropped what XDP passed: {rule}");

    // 4. Forged heartbeats over the real path are counted and never recorded.
    send(&lab, &tx, Key { k0: 1, k1: 1 }, 100, 3);
    let deadline = Instant::now() + Duration::from_secs(5);
    while dp.stats().unwrap().bad_mac < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(dp.stats().unwrap().bad_mac, 3);
    assert_eq!(dp.peer(SENDER).unwrap().unwrap().seq, 15);

    // 5. bpftool shows the pinned maps by field name.
    let peers = sh(&[
        "bpftool",
        "map",
        "dump",
        "pinned",
        pins.join("peers").to_str().unwrap(),
    ])
    .unwrap();
    for field in [
        "last_seen_ns",
        "epoch",
        "seq",
        "accepted",
        "src_ipv4",
        "src_mac",
        "ifindex",
        "priority",
        "state",
    ] {
        assert!(
            peers.contains(&format!("\"{field}\"")),
            "bpftool peers dump lacks {field}: {peers}"
        );
    }
    let json: serde_json::Value = serde_json::from_str(
        &sh(&[
            "bpftool",
            "-j",
            "map",
            "dump",
            "pinned",
            pins.join("peers").to_str().unwrap(),
        ])
        .unwrap(),
    )
    .unwrap();
    let entry = &json[0]["formatted"]["value"];
    assert_eq!(entry["accepted"], 15, "bpftool JSON: {json}");
    assert_eq!(entry["seq"], 15);
    let stats = sh(&[
        "bpftool",
        "map",
        "dump",
        "pinned",
        pins.join("stats").to_str().unwrap(),
    ])
    .unwrap();
    assert!(
        stats.contains("\"bad_mac\"") && stats.contains("\"accepted\""),
        "{stats}"
    );
    let config = sh(&[
        "bpftool",
        "map",
        "dump",
        "pinned",
        pins.join("config").to_str().unwrap(),
    ])
    .unwrap();
    assert!(
        config.contains("\"cluster_id\": 7") && config.contains("\"port\": 694"),
        "{config}"
    );

    // Dropping the data plane detaches XDP and removes the pins.
    drop(dp);
    assert!(!pins.join("peers").exists(), "pins removed on drop");
    let link = lab.exec(&rx, &["ip", "link", "show", &rx_if]).unwrap();
    assert!(!link.contains("xdp"), "XDP detached on drop: {link}");
}
