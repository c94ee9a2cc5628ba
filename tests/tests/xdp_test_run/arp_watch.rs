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
    // Five distinct claimants in four slots: a one-shot one gives way, the
    // repeat claimant stays.
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
            .any(|c| c.mac == FOREIGN_MAC && c.count == 2 && c.repeat == 1),
        "{w:?}"
    );
    assert_eq!(w.conflicts, 6);
    // The other VIP's entry is untouched.
    assert_eq!(watch(&dp, VIP2), Some(VipWatch::default()));
}

/// A claim of the VIP from `mac`.
fn claim(dp: &DataPlane, mac: [u8; 6]) {
    let f = frames::arp(2, mac, VIP.octets(), VIP.octets());
    assert_arp(dp, &f, Outcome::ArpConflict, "claim");
}

/// The `n`th of a flood of one-shot MACs, all distinct.
fn one_shot(n: u32) -> [u8; 6] {
    let [a, b, c, d] = n.to_be_bytes();
    [0x02, 0xf1, a, b, c, d]
}

/// The (MAC, count, repeat) of the VIP's claimants, in slot order.
fn claimants(dp: &DataPlane) -> Vec<([u8; 6], u64, u8)> {
    watch(dp, VIP)
        .unwrap()
        .claimants
        .iter()
        .filter(|c| c.count > 0)
        .map(|c| (c.mac, c.count, c.repeat))
        .collect()
}

#[test]
fn a_flood_of_one_shot_macs_does_not_evict_a_mac_that_keeps_claiming() {
    let dp = holding_plane();
    let rival = [0x02, 0, 0, 0, 0, 0xee];
    claim(&dp, rival);
    // Ten one-shot MACs between each of its claims: more than the slots, so
    // that it is pushed out before it claims again (least recently seen, and
    // by count it ties with them); its fingerprint in `recent` brings it
    // back as a repeat claimant, which no one-shot MAC pushes out.
    let mut n = 0;
    let mut back = 0;
    for round in 1..=50u64 {
        for _ in 0..10 {
            n += 1;
            claim(&dp, one_shot(n));
        }
        claim(&dp, rival);
        let held = claimants(&dp);
        let r = held.iter().find(|c| c.0 == rival);
        assert!(r.is_some(), "round {round}: rival hidden: {held:?}");
        back = r.unwrap().1;
        assert_eq!(r.unwrap().2, 1, "round {round}: a repeat claimant");
    }
    // Back after the first flood, counted in its slot since.
    assert_eq!(back, 50);
    let w = watch(&dp, VIP).unwrap();
    assert_eq!(w.conflicts, 51 + 500);
    // The flood went through the other slots, least recently seen first: the
    // last three one-shot MACs are there.
    let mut others: Vec<_> = claimants(&dp)
        .into_iter()
        .filter(|c| c.0 != rival)
        .collect();
    others.sort();
    assert_eq!(
        others,
        [
            (one_shot(n - 2), 1, 0),
            (one_shot(n - 1), 1, 0),
            (one_shot(n), 1, 0)
        ]
    );
    // It is reported with its last time.
    let r = w.claimants.iter().find(|c| c.mac == rival).unwrap();
    assert_eq!(r.last_ns, w.last_ns);
}

#[test]
fn among_one_shot_macs_the_least_recently_seen_gives_way() {
    let dp = holding_plane();
    let macs: Vec<[u8; 6]> = (1..=6).map(one_shot).collect();
    for &m in &macs[..4] {
        claim(&dp, m);
    }
    let before = watch(&dp, VIP).unwrap();
    let times: Vec<u64> = before.claimants.iter().map(|c| c.last_ns).collect();
    assert!(times.windows(2).all(|t| t[0] <= t[1]), "{before:?}");
    // 5 and 6 take the places of 1 and 2 (the oldest), not of one another
    // (all counts are 1: the lowest count would evict the newest, 5).
    claim(&dp, macs[4]);
    claim(&dp, macs[5]);
    let mut held: Vec<[u8; 6]> = claimants(&dp).into_iter().map(|c| c.0).collect();
    held.sort();
    assert_eq!(held, [macs[2], macs[3], macs[4], macs[5]]);
    // A repeat claimant is evicted only when every slot holds one, and then
    // the least recently seen of them.
    for &m in &[macs[2], macs[3], macs[4], macs[5]] {
        claim(&dp, m);
    }
    claim(&dp, macs[2]);
    claim(&dp, macs[0]);
    let mut held: Vec<_> = claimants(&dp);
    held.sort();
    assert_eq!(
        held,
        [
            (macs[0], 1, 1),
            (macs[2], 3, 1),
            (macs[4], 2, 1),
            (macs[5], 2, 1)
        ],
        "1 comes back as a repeat claimant (its fingerprint is in `recent`) in 4's place"
    );
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
