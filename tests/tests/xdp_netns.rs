//! The XDP program attached to a veth in a network namespace, heartbeats sent from
//! another namespace over the kernel's UDP stack: the peer entry advances, also
//! while `iptables -A INPUT -p udp --dport 694 -j DROP` keeps a socket on port 694
//! deaf, and `bpftool` prints the pinned maps with named fields. Heartbeats over
//! IPv6 are recorded too, and gratuitous ARP for a watched VIP from the other
//! namespace shows up as a conflict.

use aya::programs::XdpMode;
use hb_common::{wire::DEFAULT_PORT, Key, PeerState};
use hb_tests::{
    frames::{heartbeat, key},
    netns::{sh, Lab},
};
use hb_user::{
    garp,
    loader::{DataPlane, Settings},
};
use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

const TX_IP: &str = "10.201.0.1";
const RX_IP: &str = "10.201.0.2";
const SENDER: u32 = 1;

/// Sends `n` heartbeats from the tx namespace, seqs `first..first+n`, signed with `key`.
fn send(lab: &Lab, ns: &str, key: Key, first: u64, n: u64) {
    let from: SocketAddr = (TX_IP.parse::<Ipv4Addr>().unwrap(), 0).into();
    let to: SocketAddr = (RX_IP.parse::<Ipv4Addr>().unwrap(), DEFAULT_PORT).into();
    send_between(lab, ns, from, to, key, first, n);
}

/// Sends `n` heartbeats from `from` (in `ns`) to `to`, seqs `first..first+n`.
fn send_between(
    lab: &Lab,
    ns: &str,
    from: SocketAddr,
    to: SocketAddr,
    key: Key,
    first: u64,
    n: u64,
) {
    lab.in_netns(ns, || {
        let sock = UdpSocket::bind(from).expect("bind sender");
        for seq in first..first + n {
            sock.send_to(&heartbeat(SENDER, 1, seq).encode(&key), to)
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
    let rx_mac = lab.mac(&rx, &rx_if).unwrap();
    let rx_ifindex = lab.ifindex(&rx, &rx_if).unwrap();
    let pin_root = lab.pin_root();

    let settings = Settings {
        cluster_id: 7,
        port: DEFAULT_PORT,
        pass_heartbeats: false,
        key: key(),
        peers: vec![SENDER],
        mac: rx_mac,
        vips_v4: vec![Ipv4Addr::new(10, 201, 0, 100)],
        quiet: std::time::Duration::from_millis(50),
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
        "src_ipv6",
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
        config.contains("\"cluster_id\": 7")
            && config.contains("\"port\": 694")
            && config.contains("\"mac\""),
        "{config}"
    );
    let vips = sh(&[
        "bpftool",
        "map",
        "dump",
        "pinned",
        pins.join("vips").to_str().unwrap(),
    ])
    .unwrap();
    for field in ["conflicts", "last_ns", "last_mac"] {
        assert!(vips.contains(&format!("\"{field}\"")), "{vips}");
    }

    // Dropping the data plane detaches XDP and removes the pins.
    drop(dp);
    assert!(!pins.join("peers").exists(), "pins removed on drop");
    let link = lab.exec(&rx, &["ip", "link", "show", &rx_if]).unwrap();
    assert!(!link.contains("xdp"), "XDP detached on drop: {link}");
}

const TX_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x203, 0, 0, 0, 0, 0, 1);
const RX_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x203, 0, 0, 0, 0, 0, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 100);

#[test]
fn ipv6_heartbeats_and_arp_conflicts_over_veth() {
    hb_tests::require_root("attaching XDP in network namespaces");
    let mut lab = Lab::new("x6").unwrap();
    let tx = lab.netns("tx").unwrap();
    let rx = lab.netns("rx").unwrap();
    let (tx_if, rx_if) = (format!("{}a", lab.prefix), format!("{}b", lab.prefix));
    lab.veth(&tx, &tx_if, "10.203.0.1/24", &rx, &rx_if, "10.203.0.2/24")
        .unwrap();
    // nodad: usable at once, no second of duplicate address detection.
    for (ns, dev, ip) in [(&tx, &tx_if, TX_IP6), (&rx, &rx_if, RX_IP6)] {
        lab.exec(
            ns,
            &[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{ip}/64"),
                "dev",
                dev,
                "nodad",
            ],
        )
        .unwrap();
    }
    let tx_mac = lab.mac(&tx, &tx_if).unwrap();
    let rx_mac = lab.mac(&rx, &rx_if).unwrap();
    let tx_ifindex = lab.ifindex(&tx, &tx_if).unwrap();
    let pin_root = lab.pin_root();

    let settings = Settings {
        cluster_id: 7,
        port: DEFAULT_PORT,
        key: key(),
        peers: vec![SENDER],
        mac: rx_mac,
        vips_v4: vec![VIP],
        quiet: std::time::Duration::from_millis(50),
        ..Default::default()
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

    // Heartbeats over IPv6 (neighbour discovery, which XDP passes, runs first).
    let from = SocketAddr::from((TX_IP6, 0));
    let to = SocketAddr::from((RX_IP6, DEFAULT_PORT));
    send_between(&lab, &tx, from, to, key(), 1, 5);
    let p = wait_accepted(&dp, 5);
    assert_eq!((p.accepted, p.epoch, p.seq), (5, 1, 5));
    assert_eq!(Ipv6Addr::from(p.src_ipv6), TX_IP6);
    assert_eq!(p.src_ipv4, [0; 4]);
    assert_eq!(p.src_mac, tx_mac);
    // Then over IPv4 from the same peer: the IPv6 source is cleared.
    send_between(
        &lab,
        &tx,
        SocketAddr::from(([10, 203, 0, 1], 0)),
        SocketAddr::from(([10, 203, 0, 2], DEFAULT_PORT)),
        key(),
        6,
        1,
    );
    let p = wait_accepted(&dp, 6);
    assert_eq!(
        (p.accepted, p.src_ipv4, p.src_ipv6),
        (6, [10, 203, 0, 1], [0; 16])
    );

    // The tx namespace claims our VIP with gratuitous ARP (a request and a reply).
    // We hold the lease (as a VIP holder does), so the ARP passes and is counted as
    // a conflict rather than self-fenced.
    dp.set_lease(Duration::from_nanos(hb_tests::monotonic_ns()) + Duration::from_secs(60))
        .unwrap();
    assert!(dp.vip_watch().unwrap()[0].1.conflicts == 0);
    let t0 = hb_tests::monotonic_ns();
    lab.in_netns(&tx, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(garp::announce(tx_ifindex, tx_mac, VIP, 1, Duration::ZERO))
    })
    .unwrap()
    .expect("gratuitous ARP from tx");
    let deadline = Instant::now() + Duration::from_secs(5);
    while dp.stats().unwrap().arp_conflict < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let watch = dp.vip_watch().unwrap();
    assert_eq!(watch.len(), 1);
    let (ip, w) = watch[0];
    assert_eq!(ip, VIP);
    assert_eq!((w.conflicts, w.last_mac), (2, tx_mac));
    assert!(w.last_ns >= t0);
    assert_eq!(dp.stats().unwrap().arp_conflict, 2);
    // status reads the same through the pins.
    let pinned = hb_user::loader::pinned_vips(&pins).unwrap();
    assert_eq!(pinned, watch);
    let json: serde_json::Value = serde_json::from_str(
        &sh(&[
            "bpftool",
            "-j",
            "map",
            "dump",
            "pinned",
            pins.join("vips").to_str().unwrap(),
        ])
        .unwrap(),
    )
    .unwrap();
    let entry = &json[0]["formatted"];
    assert_eq!(entry["value"]["conflicts"], 2, "bpftool JSON: {json}");
    assert_eq!(entry["value"]["last_mac"].as_array().map(Vec::len), Some(6));
    assert_eq!(entry["key"], serde_json::json!([10, 203, 0, 100]), "{json}");
}
