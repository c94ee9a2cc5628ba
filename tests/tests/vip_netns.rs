//! The VIP mover against real namespaces, netlink, ARP and IPv6 neighbour
//! discovery: `Netlink` looks up the node's veth and adds and removes an IPv4
//! or IPv6 VIP on it idempotently, and `garp::announce` / `garp::announce_v6`
//! from the node correct a client's neighbour entry for the VIP that still
//! points at a wrong (dead holder's) MAC.

use hb_tests::{
    netns::{mac_str, Lab},
    require_root,
};
use hb_user::{
    garp,
    netlink::{LinkInfo, Netlink},
};
use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket},
    time::{Duration, Instant},
};

const NODE_IP: &str = "10.202.0.1/24";
const CLIENT_IP: &str = "10.202.0.9/24";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 202, 0, 100);
const WRONG_MAC: &str = "02:00:00:00:00:99";

/// Runs the future made by `f` on a current-thread runtime, in a thread that
/// entered namespace `ns`, so `Netlink::connect` and the ARP socket land there.
fn run_in<T: Send, Fut: Future<Output = T>>(
    lab: &Lab,
    ns: &str,
    f: impl FnOnce() -> Fut + Send,
) -> T {
    lab.in_netns(ns, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(f())
    })
    .unwrap()
}

/// The client's neighbour entry for `ip`, as `ip neigh` prints it.
fn neigh_of(lab: &Lab, client: &str, dev: &str, ip: IpAddr) -> String {
    lab.exec(
        client,
        &["ip", "neigh", "show", &ip.to_string(), "dev", dev],
    )
    .unwrap()
}

/// The client's neighbour entry for the IPv4 VIP.
fn neigh(lab: &Lab, client: &str, dev: &str) -> String {
    neigh_of(lab, client, dev, VIP.into())
}

/// Waits (at most 3 s) until the client's entry for the IPv4 VIP shows `mac`.
fn wait_neigh(lab: &Lab, client: &str, dev: &str, mac: &str) -> bool {
    wait_neigh_of(lab, client, dev, VIP.into(), mac)
}

/// Waits (at most 3 s) until the client's entry for `ip` shows `mac`.
fn wait_neigh_of(lab: &Lab, client: &str, dev: &str, ip: IpAddr, mac: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !neigh_of(lab, client, dev, ip).contains(mac) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn vip_is_added_announced_and_removed() {
    require_root("vip_netns");
    let mut lab = Lab::new("vn").unwrap();
    let node = lab.netns("node").unwrap();
    let client = lab.netns("client").unwrap();
    let (nif, cif) = (format!("{}a", lab.prefix), format!("{}b", lab.prefix));
    assert!(nif.len() <= 15, "interface name {nif} too long");
    lab.veth(&node, &nif, NODE_IP, &client, &cif, CLIENT_IP)
        .unwrap();
    let mac = lab.mac(&node, &nif).unwrap();
    let ifindex = lab.ifindex(&node, &nif).unwrap();

    // Link facts, and adding the VIP twice: the second add adopts it.
    let (link, by_index, missing, missing_index, added, readded, addrs) =
        run_in(&lab, &node, || async {
            let nl = Netlink::connect()?;
            anyhow::Ok((
                nl.link(&nif).await?,
                nl.link_by_index(ifindex).await?,
                nl.link("hbnosuchif0").await?,
                nl.link_by_index(999_999).await?,
                nl.add_addr(ifindex, VIP, 24).await?,
                nl.add_addr(ifindex, VIP, 24).await?,
                nl.ipv4_addrs(ifindex).await?,
            ))
        })
        .unwrap();
    let expected = LinkInfo {
        name: nif.clone(),
        ifindex,
        mac,
        up: true,
    };
    assert_eq!(link, Some(expected.clone()));
    assert_eq!(by_index, Some(expected));
    assert_eq!(missing, None);
    assert_eq!(missing_index, None);
    assert!(added, "first add_addr should add");
    assert!(!readded, "second add_addr should find it present");
    assert_eq!(
        addrs.iter().filter(|a| **a == (VIP, 24)).count(),
        1,
        "{addrs:?}"
    );
    assert!(
        addrs.contains(&(Ipv4Addr::new(10, 202, 0, 1), 24)),
        "{addrs:?}"
    );
    let shown = lab
        .exec(&node, &["ip", "-o", "-4", "addr", "show", "dev", &nif])
        .unwrap();
    assert!(
        shown.contains("10.202.0.100/24") && shown.contains("secondary"),
        "VIP should be a secondary address: {shown}"
    );

    // The client learns the VIP (a UDP datagram makes it resolve the VIP, so
    // no `ping` is needed on the machine), then its entry goes wrong as if a
    // dead node had held the VIP.
    let want = mac_str(mac);
    lab.in_netns(&client, || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        sock.send_to(b"hello", (VIP, 9)).expect("send to the VIP");
    })
    .unwrap();
    assert!(
        wait_neigh(&lab, &client, &cif, &want),
        "client never resolved the VIP"
    );
    let vip = VIP.to_string();
    lab.exec(
        &client,
        &[
            "ip", "neigh", "replace", &vip, "lladdr", WRONG_MAC, "dev", &cif, "nud", "stale",
        ],
    )
    .unwrap();
    assert!(neigh(&lab, &client, &cif).contains(WRONG_MAC));
    // No locktime sysctl needed: Linux ignores ARP updates of an entry changed
    // less than `locktime` (1 s) ago, except what it counts as gratuitous ARP.
    // Our request (sender IP == target IP) counts, so it overrides at once; our
    // reply (target MAC ff:..:ff, as keepalived sends) does not, and alone
    // would leave the entry wrong here.

    let spacing = Duration::from_millis(50);
    let started = Instant::now();
    run_in(&lab, &node, || {
        garp::announce(ifindex, mac, VIP, 3, spacing)
    })
    .unwrap();
    assert!(
        started.elapsed() >= 2 * spacing,
        "3 rounds are 2 spacings apart"
    );
    assert!(
        wait_neigh(&lab, &client, &cif, &want),
        "client entry {:?} should show {want}",
        neigh(&lab, &client, &cif)
    );

    // Gratuitous ARP on an interface that does not exist is an error, not a panic.
    let bad = run_in(&lab, &node, || {
        garp::announce(999_999, mac, VIP, 1, spacing)
    });
    assert!(bad.is_err());

    // Removing the VIP, twice: the second finds nothing to remove.
    let (removed, reremoved, addrs) = run_in(&lab, &node, || async {
        let nl = Netlink::connect()?;
        anyhow::Ok((
            nl.del_addr(ifindex, VIP, 24).await?,
            nl.del_addr(ifindex, VIP, 24).await?,
            nl.ipv4_addrs(ifindex).await?,
        ))
    })
    .unwrap();
    assert!(removed, "first del_addr should remove");
    assert!(!reremoved, "second del_addr should find it gone");
    assert_eq!(addrs, vec![(Ipv4Addr::new(10, 202, 0, 1), 24)]);
}

const NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x202, 0, 0, 0, 0, 0, 1);
const CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x202, 0, 0, 0, 0, 0, 9);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x202, 0, 0, 0, 0, 0, 0x100);

#[test]
fn ipv6_vip_is_added_announced_and_removed() {
    require_root("vip_netns");
    let mut lab = Lab::new("v6").unwrap();
    let node = lab.netns("node").unwrap();
    let client = lab.netns("client").unwrap();
    let (nif, cif) = (format!("{}a", lab.prefix), format!("{}b", lab.prefix));
    lab.veth(&node, &nif, NODE_IP, &client, &cif, CLIENT_IP)
        .unwrap();
    for (ns, dev, ip) in [(&node, &nif, NODE_IP6), (&client, &cif, CLIENT_IP6)] {
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
    let mac = lab.mac(&node, &nif).unwrap();
    let ifindex = lab.ifindex(&node, &nif).unwrap();

    let (added, readded, too_long, addrs) = run_in(&lab, &node, || async {
        let nl = Netlink::connect()?;
        anyhow::Ok((
            nl.add_addr_v6(ifindex, VIP6, 64).await?,
            nl.add_addr_v6(ifindex, VIP6, 64).await?,
            nl.add_addr_v6(ifindex, VIP6, 129).await.is_err(),
            nl.ipv6_addrs(ifindex).await?,
        ))
    })
    .unwrap();
    assert!(added, "first add_addr_v6 should add");
    assert!(!readded, "second add_addr_v6 should find it present");
    assert!(too_long, "a prefix over 128 is refused");
    assert_eq!(
        addrs.iter().filter(|a| **a == (VIP6, 64)).count(),
        1,
        "{addrs:?}"
    );
    assert!(addrs.contains(&(NODE_IP6, 64)), "{addrs:?}");
    assert!(
        addrs.iter().any(|(ip, _)| ip.is_unicast_link_local()),
        "{addrs:?}"
    );
    // No duplicate address detection: usable at once, never "tentative".
    let shown = lab
        .exec(&node, &["ip", "-o", "-6", "addr", "show", "dev", &nif])
        .unwrap();
    let line = shown
        .lines()
        .find(|l| l.contains("fd00:202::100/64"))
        .unwrap_or_else(|| panic!("VIP missing: {shown}"));
    assert!(
        line.contains("nodad") && !line.contains("tentative"),
        "{line}"
    );

    // The client resolves the VIP (neighbour solicitation, answered at once
    // thanks to nodad), then its entry goes wrong as if a dead node had held it.
    let want = mac_str(mac);
    lab.in_netns(&client, || {
        let sock = UdpSocket::bind((CLIENT_IP6, 0)).expect("bind");
        sock.send_to(b"hello", (VIP6, 9)).expect("send to the VIP");
    })
    .unwrap();
    assert!(
        wait_neigh_of(&lab, &client, &cif, VIP6.into(), &want),
        "client never resolved the VIP: {}",
        neigh_of(&lab, &client, &cif, VIP6.into())
    );
    let vip = VIP6.to_string();
    lab.exec(
        &client,
        &[
            "ip", "-6", "neigh", "replace", &vip, "lladdr", WRONG_MAC, "dev", &cif, "nud", "stale",
        ],
    )
    .unwrap();
    assert!(neigh_of(&lab, &client, &cif, VIP6.into()).contains(WRONG_MAC));

    // Unsolicited neighbour advertisements with Override fix it.
    let spacing = Duration::from_millis(50);
    let started = Instant::now();
    run_in(&lab, &node, || {
        garp::announce_v6(ifindex, mac, VIP6, 3, spacing)
    })
    .unwrap();
    assert!(
        started.elapsed() >= 2 * spacing,
        "3 rounds are 2 spacings apart"
    );
    assert!(
        wait_neigh_of(&lab, &client, &cif, VIP6.into(), &want),
        "client entry {:?} should show {want}",
        neigh_of(&lab, &client, &cif, VIP6.into())
    );

    let bad = run_in(&lab, &node, || {
        garp::announce_v6(999_999, mac, VIP6, 1, spacing)
    });
    assert!(bad.is_err(), "no such interface is an error, not a panic");

    let (removed, reremoved, addrs) = run_in(&lab, &node, || async {
        let nl = Netlink::connect()?;
        anyhow::Ok((
            nl.del_addr_v6(ifindex, VIP6, 64).await?,
            nl.del_addr_v6(ifindex, VIP6, 64).await?,
            nl.ipv6_addrs(ifindex).await?,
        ))
    })
    .unwrap();
    assert!(removed, "first del_addr_v6 should remove");
    assert!(!reremoved, "second del_addr_v6 should find it gone");
    assert!(!addrs.iter().any(|(ip, _)| *ip == VIP6), "{addrs:?}");
    assert!(addrs.contains(&(NODE_IP6, 64)), "{addrs:?}");
}
