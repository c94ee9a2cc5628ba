//! Messages for this node refused before the MAC counts: an unknown sender,
//! another cluster, another version or type; and the refusals over IPv6.

use super::{
    assert_passes_untouched, assert_refused, forged, hb, hb6, hb_frame, peer, plane, run, v4, v6,
    OURS, OUR_NODE, SENT_SEQ,
};
use hb_common::{
    maps::Outcome,
    wire::DEFAULT_PORT,
    wire2::{Head, LEN},
};
use hb_tests::frames::{self, Ipv4Frame, Ipv6Frame};

#[test]
fn unknown_node_is_refused() {
    let dp = plane();
    let h = frames::head(99, OUR_NODE, 0x99, 1, (OURS, SENT_SEQ));
    assert_refused(&dp, &v4(&h), Outcome::UnknownNode);
    assert_eq!(
        dp.peer(99).unwrap(),
        None,
        "no entry is created for an unknown node"
    );
}

#[test]
fn wrong_cluster_is_refused() {
    let dp = plane();
    let h = Head {
        cluster_id: 8,
        ..hb(1)
    };
    assert_refused(&dp, &v4(&h), Outcome::WrongCluster);
}

#[test]
fn wrong_version_and_type_are_refused() {
    let dp = plane();
    let good = frames::message(&hb(1));
    for (at, value, why) in [
        (2, 3, Outcome::BadVersion),
        (2, 0, Outcome::BadVersion),
        (2, 0xff, Outcome::BadVersion),
        // The v1 version byte in a v2-sized message: counted, but no v1
        // message either (not recorded as an old peer).
        (2, 1, Outcome::OldVersion),
        (3, 0, Outcome::BadType),
        (3, 7, Outcome::BadType),
    ] {
        let mut b = good;
        b[at] = value;
        assert_refused(&dp, &Ipv4Frame::udp(DEFAULT_PORT, &b).build(), why);
    }
    assert_eq!(peer(&dp).old_version_ns, 0);
    assert_eq!(
        run(&dp, &Ipv4Frame::udp(DEFAULT_PORT, &good).build()).2,
        Outcome::Accepted
    );
}

#[test]
fn refusals_over_ipv6() {
    let dp = plane();
    assert_refused(
        &dp,
        &Ipv6Frame::udp(DEFAULT_PORT, &forged(&hb(1))).build(),
        Outcome::BadMac,
    );
    assert_eq!(run(&dp, &hb6(10).build()).2, Outcome::Accepted);
    assert_refused(&dp, &hb6(10).build(), Outcome::Replayed);
    assert_refused(&dp, &hb6(9).build(), Outcome::Replayed);
    // The same message replayed over the other IP version is a replay too.
    assert_refused(&dp, &hb_frame(10), Outcome::Replayed);
    let h = Head {
        cluster_id: 8,
        ..hb(11)
    };
    assert_refused(&dp, &v6(&h).build(), Outcome::WrongCluster);
    let h = frames::head(99, OUR_NODE, 0x99, 1, (OURS, SENT_SEQ));
    assert_refused(&dp, &v6(&h).build(), Outcome::UnknownNode);
    // Junk to the heartbeat port passes on IPv6 as on IPv4.
    assert_passes_untouched(
        &dp,
        &Ipv6Frame::udp(DEFAULT_PORT, &[0xa5; LEN]).build(),
        "junk of an hb message's size",
    );
    assert_passes_untouched(
        &dp,
        &Ipv6Frame::udp(DEFAULT_PORT, &[1, 2, 3]).build(),
        "three bytes",
    );
    assert_eq!(peer(&dp).accepted, 1);
}
