//! The self-fence: without a valid lease, ARP and IPv4 for the IPv4 VIPs,
//! neighbour solicitations and IPv6 for the IPv6 VIP, are dropped and counted.

use super::{
    assert_arp, assert_passes_untouched, plane, run, FOREIGN_MAC, OUR_MAC, VIP, VIP6, XDP_DROP,
};
use hb_common::maps::Outcome;
use hb_tests::frames::{self, Ipv4Frame};
use std::time::Duration;

#[test]
fn without_a_lease_arp_and_ipv4_for_the_vips_are_dropped() {
    let mut dp = plane();
    let who_has_vip = frames::arp(1, FOREIGN_MAC, frames::SRC_IP, VIP.octets());
    let to_vip = {
        let mut f = Ipv4Frame {
            proto: 1,
            ..Ipv4Frame::udp(0, &[8, 0, 0, 0, 0, 1, 0, 1])
        }
        .build();
        f[30..34].copy_from_slice(&VIP.octets()); // destination: the VIP
        f
    };
    let udp_to_vip = {
        let mut f = Ipv4Frame::udp(80, &[1, 2, 3]).build();
        f[30..34].copy_from_slice(&VIP.octets());
        f
    };
    // No lease (a backup, or a holder whose controller died long enough ago).
    for (f, why, what) in [
        (&who_has_vip, Outcome::FencedArp, "ARP who-has the VIP"),
        (&to_vip, Outcome::FencedIp, "ICMP to the VIP"),
        (&udp_to_vip, Outcome::FencedIp, "UDP to the VIP"),
    ] {
        let (action, _, outcome) = run(&dp, f);
        assert_eq!((action, outcome), (XDP_DROP, why), "{what}");
    }
    // Traffic for other addresses is not affected.
    assert_passes_untouched(
        &dp,
        &Ipv4Frame::udp(80, &[1, 2, 3]).build(),
        "UDP to the node address",
    );
    assert_passes_untouched(&dp, &frames::arp_request(), "ARP for the node address");
    // A valid lease lets the VIP's traffic in.
    let now = Duration::from_nanos(hb_tests::monotonic_ns());
    dp.set_lease(now + Duration::from_secs(60)).unwrap();
    assert_passes_untouched(&dp, &to_vip, "ICMP to the VIP with a lease");
    assert_arp(
        &dp,
        &who_has_vip,
        Outcome::Passed,
        "ARP who-has the VIP with a lease",
    );
    // An expired lease is no lease.
    dp.set_lease(now - Duration::from_millis(1)).unwrap();
    let (action, _, outcome) = run(&dp, &to_vip);
    assert_eq!((action, outcome), (XDP_DROP, Outcome::FencedIp));
    assert_eq!(dp.stats().unwrap().fenced_ip, 3);
    assert_eq!(dp.stats().unwrap().fenced_arp, 1);
}

/// An IPv6 frame to `dst` from a client: ICMPv6 of `icmp_type` with `body`
/// after its 4-byte header (checksums are not XDP's business).
fn ipv6_icmp(dst: [u8; 16], icmp_type: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&FOREIGN_MAC);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    let len = (4 + body.len()) as u16;
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&[0xfd, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x50]);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[icmp_type, 0, 0, 0]);
    f.extend_from_slice(body);
    f
}

/// A neighbour solicitation for `target`, to its solicited-node address.
fn solicit(target: std::net::Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let mut group = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    group[13..].copy_from_slice(&t[13..]);
    let mut body = vec![0; 4];
    body.extend_from_slice(&t);
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&FOREIGN_MAC);
    ipv6_icmp(group, 135, &body)
}

#[test]
fn without_a_lease_neighbour_solicitations_and_ipv6_for_the_vips_are_dropped() {
    let mut dp = plane();
    let ns = solicit(VIP6);
    let echo = ipv6_icmp(VIP6.octets(), 128, &[0, 1, 0, 1]);
    let other: std::net::Ipv6Addr = "fd00:9::1".parse().unwrap();
    // No lease.
    assert_eq!(
        (run(&dp, &ns).0, run(&dp, &ns).2),
        (XDP_DROP, Outcome::FencedNd),
        "NS for the VIP"
    );
    let (action, _, outcome) = run(&dp, &echo);
    assert_eq!(
        (action, outcome),
        (XDP_DROP, Outcome::FencedIp6),
        "echo to the VIP"
    );
    // Other addresses are not affected.
    assert_passes_untouched(&dp, &solicit(other), "NS for the node address");
    assert_passes_untouched(
        &dp,
        &ipv6_icmp(other.octets(), 128, &[0, 1, 0, 1]),
        "echo to the node address",
    );
    // A valid lease lets the VIP's traffic in; an expired one is none.
    let now = Duration::from_nanos(hb_tests::monotonic_ns());
    dp.set_lease(now + Duration::from_secs(60)).unwrap();
    assert_passes_untouched(&dp, &ns, "NS for the VIP with a lease");
    assert_passes_untouched(&dp, &echo, "echo to the VIP with a lease");
    dp.set_lease(now - Duration::from_millis(1)).unwrap();
    assert_eq!(run(&dp, &echo).2, Outcome::FencedIp6);
    let s = dp.stats().unwrap();
    assert_eq!((s.fenced_nd, s.fenced_ip6, s.fenced_ip), (2, 2, 0));
}
