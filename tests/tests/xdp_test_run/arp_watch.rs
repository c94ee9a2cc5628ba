//! The ARP conflict watch: ARP claiming a VIP from a foreign MAC is counted
//! per VIP and per claimant and passes; other ARP passes uncounted; the watch
//! follows the configured VIPs and MAC.

use super::{assert_arp, holding_plane, settings, FOREIGN_MAC, OUR_MAC, VIP, VIP2};
use hb_common::maps::{Outcome, VipWatch};
use hb_tests::frames;
use hb_user::loader::{DataPlane, Settings};
use std::net::Ipv4Addr;

/// The VIP watch entry of `ip`, if it is watched.
fn watch(dp: &DataPlane, ip: Ipv4Addr) -> Option<VipWatch> {
    dp.vip_watch()
        .unwrap()
        .into_iter()
        .find(|(v, _)| *v == ip)
        .map(|(_, w)| w)
}

#[test]
fn foreign_arp_for_a_vip_is_counted_and_passes() {
    let dp = holding_plane();
    assert_eq!(
        watch(&dp, VIP),
        Some(VipWatch::default()),
        "zeroed entry per VIP"
    );
    let t0 = hb_tests::monotonic_ns();
    let request = frames::arp(1, FOREIGN_MAC, VIP.octets(), frames::DST_IP);
    assert_arp(&dp, &request, Outcome::ArpConflict, "foreign request");
    let t1 = hb_tests::monotonic_ns();
    let w = watch(&dp, VIP).unwrap();
    assert_eq!((w.conflicts, w.last_mac), (1, FOREIGN_MAC));
    assert!(
        t0 <= w.last_ns && w.last_ns <= t1,
        "last_ns {} not in [{t0}, {t1}]",
        w.last_ns
    );

    // A gratuitous reply from another MAC, behind a VLAN tag.
    let other = [0x02, 0, 0, 0, 0, 0x77];
    let reply = frames::tagged(&frames::arp(2, other, VIP.octets(), VIP.octets()), 5);
    assert_arp(
        &dp,
        &reply,
        Outcome::ArpConflict,
        "foreign gratuitous reply",
    );
    let w = watch(&dp, VIP).unwrap();
    assert_eq!((w.conflicts, w.last_mac), (2, other));
    assert!(w.last_ns >= t1);
    assert_eq!(dp.stats().unwrap().arp_conflict, 2);
    // Each claimant keeps its own count: a later claimant does not hide an earlier one.
    assert_arp(&dp, &request, Outcome::ArpConflict, "foreign request again");
    let counts: Vec<([u8; 6], u64)> = watch(&dp, VIP)
        .unwrap()
        .claimants
        .iter()
        .filter(|c| c.count > 0)
        .map(|c| (c.mac, c.count))
        .collect();
    assert_eq!(counts, [(FOREIGN_MAC, 2), (other, 1)]);
    // Five distinct claimants in four slots: the rarest gives way, the busiest stays.
    for last in 0x10..0x13u8 {
        let mac = [0x02, 0, 0, 0, 0, last];
        assert_arp(
            &dp,
            &frames::arp(1, mac, VIP.octets(), VIP.octets()),
            Outcome::ArpConflict,
            "new claimant",
        );
    }
    let w = watch(&dp, VIP).unwrap();
    assert!(
        w.claimants
            .iter()
            .any(|c| c.mac == FOREIGN_MAC && c.count == 2),
        "{w:?}"
    );
    assert_eq!(w.conflicts, 6);
    // The other VIP's entry is untouched.
    assert_eq!(watch(&dp, VIP2), Some(VipWatch::default()));
}

#[test]
fn arp_that_is_no_conflict_passes() {
    let dp = holding_plane();
    let cases = [
        (
            "our own gratuitous ARP",
            frames::arp(1, OUR_MAC, VIP.octets(), VIP.octets()),
        ),
        (
            "who-has the VIP from a client",
            frames::arp(1, FOREIGN_MAC, frames::SRC_IP, VIP.octets()),
        ),
        ("ARP for another address", frames::arp_request()),
        (
            "ARP probe (sender 0.0.0.0)",
            frames::arp(1, FOREIGN_MAC, [0; 4], VIP.octets()),
        ),
        (
            "RARP-style op 3",
            frames::arp(3, FOREIGN_MAC, VIP.octets(), VIP.octets()),
        ),
    ];
    for (what, f) in &cases {
        assert_arp(&dp, f, Outcome::Passed, what);
    }
    // Addresses sharing a VIP's filter bit (same last octet modulo 64) still
    // need the hash lookup to say "not a VIP".
    for ip in [[10, 9, 0, 36], [10, 9, 1, 100], [192, 168, 7, 164]] {
        assert_eq!(
            hb_common::maps::vip_filter_bit(ip),
            hb_common::maps::vip_filter_bit(VIP.octets())
        );
        let f = frames::arp(1, FOREIGN_MAC, ip, VIP.octets());
        assert_arp(
            &dp,
            &f,
            Outcome::Passed,
            &format!("{ip:?} shares the filter bit"),
        );
    }
    // Not Ethernet/IPv4 ARP, though the sender field would read as the VIP.
    let good = frames::arp(1, FOREIGN_MAC, VIP.octets(), VIP.octets());
    for (at, value, what) in [
        (15, 6, "htype 6"),
        (16, 0x86, "ptype IPv6"),
        (18, 8, "hlen 8"),
        (19, 16, "plen 16"),
    ] {
        let mut f = good.clone();
        f[at] = value;
        assert_arp(&dp, &f, Outcome::Passed, what);
    }
    assert_eq!(watch(&dp, VIP).unwrap().conflicts, 0);
    let watched: Vec<Ipv4Addr> = dp
        .vip_watch()
        .unwrap()
        .into_iter()
        .map(|(ip, _)| ip)
        .collect();
    assert_eq!(
        watched,
        vec![VIP, VIP2],
        "no entry is created for other addresses"
    );
}

#[test]
fn truncated_arp_passes() {
    let dp = holding_plane();
    let full = frames::arp(1, FOREIGN_MAC, VIP.octets(), VIP.octets());
    for len in 14..full.len() {
        assert_arp(
            &dp,
            &full[..len],
            Outcome::Passed,
            &format!("{len}-byte ARP"),
        );
    }
    assert_eq!(watch(&dp, VIP).unwrap().conflicts, 0);
    // Trailing padding (Ethernet minimum frame) is fine.
    let padded = [full.as_slice(), &[0; 18]].concat();
    assert_arp(&dp, &padded, Outcome::ArpConflict, "padded ARP");
}

#[test]
fn reconfiguring_vips_keeps_counts_and_drops_removed_ones() {
    let mut dp = holding_plane();
    let f = frames::arp(2, FOREIGN_MAC, VIP.octets(), VIP.octets());
    assert_arp(&dp, &f, Outcome::ArpConflict, "before");
    let vip3 = Ipv4Addr::new(10, 9, 0, 102);
    dp.configure(&Settings {
        vips_v4: vec![VIP, vip3],
        quiet: std::time::Duration::from_millis(50),
        ..settings()
    })
    .unwrap();
    let watched = dp.vip_watch().unwrap();
    assert_eq!(watched.len(), 2, "{watched:?}");
    assert_eq!(watch(&dp, VIP).unwrap().conflicts, 1, "count survives");
    assert_eq!(watch(&dp, vip3), Some(VipWatch::default()));
    assert_eq!(watch(&dp, VIP2), None, "removed VIP unwatched");
    let f2 = frames::arp(2, FOREIGN_MAC, VIP2.octets(), VIP2.octets());
    assert_arp(&dp, &f2, Outcome::Passed, "no longer a VIP");
    // A new MAC (the interface changed): our own old MAC now is foreign.
    dp.configure(&Settings {
        mac: FOREIGN_MAC,
        ..settings()
    })
    .unwrap();
    assert_arp(&dp, &f, Outcome::Passed, "sender is now our MAC");
    let own_old = frames::arp(1, OUR_MAC, VIP.octets(), VIP.octets());
    assert_arp(
        &dp,
        &own_old,
        Outcome::ArpConflict,
        "old MAC is foreign now",
    );
    // No VIPs at all: nothing is watched.
    dp.configure(&Settings {
        vips_v4: vec![],
        quiet: std::time::Duration::from_millis(50),
        ..settings()
    })
    .unwrap();
    assert!(dp.vip_watch().unwrap().is_empty());
    assert_arp(&dp, &f, Outcome::Passed, "no VIPs");
}
