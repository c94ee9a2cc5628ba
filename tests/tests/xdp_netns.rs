//! The XDP program attached to a veth in a network namespace, heartbeats (wire
//! v2) sent from another namespace over the kernel's UDP stack: after the session
//! handshake the peer entry advances, also while `iptables -A INPUT -p udp --dport
//! 694 -j DROP` keeps a socket on port 694 deaf, and `bpftool` prints the pinned
//! maps with named fields. Heartbeats over IPv6 are recorded too, and gratuitous
//! ARP for a watched VIP from the other namespace shows up as a conflict.
//!
//! No controller runs here: the test plays the receiver's sender thread (it
//! writes the `sent` record, our session and recent sequence numbers) and the
//! peer (it answers the echo the receiver's data plane keeps in `seen`).

use aya::programs::XdpMode;
use hb_common::{
    maps::{Seen, Sent},
    wire::DEFAULT_PORT,
    wire2, Key, PeerState,
};
use hb_tests::{
    frames::{body, head, key},
    netns::{sh, Lab, HEARTBEAT_PORT},
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
/// The receiving node's id: messages are addressed to it.
const RECEIVER: u32 = 2;
/// The sender's session, and the receiver's (as its sender thread publishes it).
const TX_SESSION: u64 = 0x7a11_0000_0000_0001;
const RX_SESSION: u64 = 0x7b22_0000_0000_0002;
/// The receiver's last sequence number sent: our heartbeats echo it, so that
/// the sender's session is adopted as proven fresh.
const RX_SEQ: u64 = 40;

/// Plays the receiver's sender thread: our session, and `(0, RX_SEQ]` recent.
fn publish_sent(dp: &DataPlane) {
    dp.sent_map().unwrap().set(Sent {
        session: RX_SESSION,
        seq: RX_SEQ,
        recent_lo: 0,
    });
}

/// What the receiver's data plane echoes to the sender (its `seen` slot 0).
fn echo(dp: &DataPlane) -> Seen {
    dp.seen_map().unwrap().read(0)
}

/// Heartbeat `seq` of the sender in its session, echoing `your`, under `key`.
fn heartbeat(seq: u64, your: (u64, u64), key: &Key) -> [u8; wire2::LEN] {
    let h = head(SENDER, RECEIVER, TX_SESSION, seq, your);
    wire2::encode(&h, &body(SENDER), key)
}

/// Sends `n` heartbeats from the tx namespace, seqs `first..first+n`, echoing
/// the receiver's session, signed with `key`.
fn send(lab: &Lab, ns: &str, key: Key, first: u64, n: u64) {
    let from: SocketAddr = (TX_IP.parse::<Ipv4Addr>().unwrap(), 0).into();
    let to: SocketAddr = (RX_IP.parse::<Ipv4Addr>().unwrap(), DEFAULT_PORT).into();
    send_between(lab, ns, from, to, key, first, n);
}

/// Sends `n` heartbeats from `from` (in `ns`) to `to`, seqs `first..first+n`,
/// echoing the receiver's session and a recent seq of it.
fn send_between(
    lab: &Lab,
    ns: &str,
    from: SocketAddr,
    to: SocketAddr,
    key: Key,
    first: u64,
    n: u64,
) {
    let msgs: Vec<_> = (first..first + n)
        .map(|seq| heartbeat(seq, (RX_SESSION, RX_SEQ), &key))
        .collect();
    send_payloads(lab, ns, from, to, &msgs);
}

/// Sends `msgs` from `from` (in `ns`) to `to`, 2 ms apart.
fn send_payloads(lab: &Lab, ns: &str, from: SocketAddr, to: SocketAddr, msgs: &[[u8; wire2::LEN]]) {
    lab.in_netns(ns, || {
        let sock = UdpSocket::bind(from).expect("bind sender");
        for m in msgs {
            sock.send_to(m, to).expect("send");
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .unwrap();
}

/// The first contact: the sender's seq 1 knows no session of the receiver
/// (echo 0), which only echoes it back (a handshake step, no life); its next
/// heartbeats echo the receiver's session and are life from the first on.
fn handshake(lab: &Lab, ns: &str, from: SocketAddr, to: SocketAddr, dp: &DataPlane) {
    send_payloads(lab, ns, from, to, &[heartbeat(1, (0, 0), &key())]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while dp.stats().unwrap().handshake < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        dp.stats().unwrap().handshake,
        1,
        "{:?}",
        dp.stats().unwrap()
    );
    let p = dp.peer(SENDER).unwrap().unwrap();
    assert_eq!(
        (p.accepted, p.session, p.last_seen_ns),
        (0, 0, 0),
        "no life yet: {p:?}"
    );
    let e = echo(dp);
    assert_eq!(
        (e.echo_session, e.echo_seq),
        (TX_SESSION, 1),
        "the receiver echoes the sender"
    );
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
    let mut buf = [0u8; 256];
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
        node_id: RECEIVER,
        peers: vec![SENDER],
        mac: rx_mac,
        vips_v4: vec![Ipv4Addr::new(10, 201, 0, 100)],
        vips_v6: Vec::new(),
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
    publish_sent(&dp);

    // 1. Plain delivery: after the handshake the entry advances; heartbeats stop
    //    in XDP (socket gets none).
    let got = socket_receives(&lab, &rx, || {
        handshake(
            &lab,
            &tx,
            (TX_IP.parse::<Ipv4Addr>().unwrap(), 0).into(),
            (RX_IP.parse::<Ipv4Addr>().unwrap(), DEFAULT_PORT).into(),
            &dp,
        );
        send(&lab, &tx, key(), 2, 5)
    });
    let p = wait_accepted(&dp, 5);
    assert_eq!((p.accepted, p.session, p.seq), (5, TX_SESSION, 6));
    assert_eq!(dp.stats().unwrap().accepted, 5);
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
    let got = socket_receives(&lab, &rx, || send(&lab, &tx, key(), 7, 5));
    assert_eq!(wait_accepted(&dp, 10).accepted, 10);
    assert_eq!(
        got, 5,
        "without a firewall the socket gets every passed heartbeat"
    );

    // 3. The incident's firewall rule: the socket hears nothing, XDP still records every heartbeat.
    lab.firewall(&rx, true, "INPUT", HEARTBEAT_PORT).unwrap();
    let got = socket_receives(&lab, &rx, || send(&lab, &tx, key(), 12, 5));
    let p = wait_accepted(&dp, 15);
    assert_eq!(
        (p.accepted, p.seq),
        (15, 16),
        "XDP records heartbeats the firewall drops"
    );
    assert_eq!(got, 0, "iptables DROP keeps the socket deaf");
    // The rule itself saw (and dropped) the five heartbeats XDP passed on.
    let dropped = lab.firewall_dropped(&rx, "INPUT").unwrap();
    assert_eq!(dropped, 5, "iptables dropped what XDP passed");

    // 4. Forged heartbeats over the real path are counted and never recorded.
    send(&lab, &tx, Key { k0: 1, k1: 1 }, 100, 3);
    let deadline = Instant::now() + Duration::from_secs(5);
    while dp.stats().unwrap().bad_mac < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(dp.stats().unwrap().bad_mac, 3);
    assert_eq!(dp.peer(SENDER).unwrap().unwrap().seq, 16);
    // And a captured heartbeat sent again is a replay, never life.
    send(&lab, &tx, key(), 16, 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while dp.stats().unwrap().replayed < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(dp.stats().unwrap().replayed, 1);
    assert_eq!(dp.peer(SENDER).unwrap().unwrap().accepted, 15);

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
        "accepted",
        "session",
        "seq",
        "gone_ns",
        "gone_session",
        "gone_seq",
        "old_version_ns",
        "src_ipv4",
        "src_ipv6",
        "src_mac",
        "ifindex",
        "slot",
        "message",
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
    let entry = json
        .as_array()
        .and_then(|a| a.iter().find(|e| e["formatted"]["key"] == SENDER))
        .map(|e| &e["formatted"]["value"])
        .unwrap_or_else(|| panic!("no entry for node {SENDER}: {json}"));
    assert_eq!(entry["accepted"], 15, "bpftool JSON: {json}");
    assert_eq!(entry["seq"], 16);
    assert_eq!(entry["session"], TX_SESSION, "bpftool JSON: {json}");
    let stats = sh(&[
        "bpftool",
        "map",
        "dump",
        "pinned",
        pins.join("stats").to_str().unwrap(),
    ])
    .unwrap();
    for field in [
        "bad_mac",
        "accepted",
        "handshake",
        "replayed",
        "stale_session",
    ] {
        assert!(stats.contains(&format!("\"{field}\"")), "{field}: {stats}");
    }
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
            && config.contains("\"mac\"")
            && config.contains(&format!("\"node_id\": {RECEIVER}")),
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
        node_id: RECEIVER,
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
    publish_sent(&dp);

    // Heartbeats over IPv6 (neighbour discovery, which XDP passes, runs first),
    // the handshake included.
    let from = SocketAddr::from((TX_IP6, 0));
    let to = SocketAddr::from((RX_IP6, DEFAULT_PORT));
    handshake(&lab, &tx, from, to, &dp);
    send_between(&lab, &tx, from, to, key(), 2, 5);
    let p = wait_accepted(&dp, 5);
    assert_eq!((p.accepted, p.session, p.seq), (5, TX_SESSION, 6));
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
        7,
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
