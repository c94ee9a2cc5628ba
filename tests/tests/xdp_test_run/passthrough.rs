//! What is not an hb v2 message for this node passes untouched and is counted
//! as passed: messages to another node, other UDP 694 traffic (Linux-HA),
//! fragments, other protocols, ports and EtherTypes.

use super::{
    assert_passes_untouched, forged, hb, hb6, hb_frame, peer, plane, run, v4, v6, OTHER_PEER, OURS,
    PEER, PS, SENT_SEQ,
};
use hb_common::{maps::Outcome, wire::DEFAULT_PORT, wire2::LEN};
use hb_tests::{
    bench::flood::Rng,
    frames::{self, Ipv4Frame, Ipv6Frame, IPV6_DSTOPTS, IPV6_HOPOPTS},
};

/// A Linux-HA Heartbeat status message, as it sends them to UDP 694.
fn linux_ha_status() -> Vec<u8> {
    b">>>\nt=status\nst=active\ndt=7530\nprotocol=1\nsrc=node1\nseq=1a\nhg=4d2b1234\nts=4d2b1256\nld=0.00 0.01 0.05 1/123 4567\nttl=3\nauth=1 6b8f0c2e9a41d7735c0b\n<<<\n".to_vec()
}

#[test]
fn a_message_to_another_node_passes_untouched() {
    let dp = plane();
    assert_eq!(run(&dp, &hb_frame(1)).2, Outcome::Accepted);
    for (what, to) in [
        ("another node", 5),
        ("another configured peer", OTHER_PEER),
        ("node 0", 0),
    ] {
        let h = frames::head(PEER, to, PS, 2, (OURS, SENT_SEQ));
        assert_passes_untouched(&dp, &v4(&h), what);
        assert_passes_untouched(&dp, &v6(&h).build(), what);
        // Its MAC is not ours to check.
        let f = Ipv4Frame::udp(DEFAULT_PORT, &forged(&h)).build();
        assert_passes_untouched(&dp, &f, what);
    }
    let stranger = frames::head(99, 5, 0x99, 1, (0, 0));
    assert_passes_untouched(&dp, &v4(&stranger), "between two strangers");
    // The message for us is still fresh.
    assert_eq!(run(&dp, &hb_frame(2)).2, Outcome::Accepted);
}

/// Linux-HA Heartbeat uses UDP 694 too: whatever is not an hb v2 message (its
/// length and magic) goes to the stack untouched.
#[test]
fn udp_694_that_is_not_an_hb_message_passes_untouched() {
    let dp = plane();
    let mut rng = Rng(0x694);
    let good = frames::message(&hb(1));
    let mut magic = good;
    magic[0] = b'X';
    for (what, payload) in [
        ("100 random bytes", rng.bytes(100)),
        ("a Linux-HA status message", linux_ha_status()),
        ("144 random bytes", rng.bytes(LEN)),
        ("36 random bytes (a v1 length)", rng.bytes(36)),
        ("an hb message with another magic", magic.to_vec()),
        ("an hb message one byte short", good[..LEN - 1].to_vec()),
        (
            "an hb message and one byte more",
            [good.as_slice(), &[0]].concat(),
        ),
        ("nothing", vec![]),
        ("one byte", vec![0x48]),
    ] {
        assert_passes_untouched(&dp, &Ipv4Frame::udp(DEFAULT_PORT, &payload).build(), what);
        assert_passes_untouched(&dp, &frames::ipv6_udp(DEFAULT_PORT, &payload), what);
        let tagged = Ipv4Frame {
            vlan: Some(3),
            ..Ipv4Frame::udp(DEFAULT_PORT, &payload)
        };
        assert_passes_untouched(&dp, &tagged.build(), what);
    }
    assert_eq!(dp.stats().unwrap().passed, 27);
    assert_eq!(peer(&dp).accepted, 0);
}

#[test]
fn fragments_pass() {
    let dp = plane();
    let payload = frames::message(&hb(1));
    // A later fragment has no UDP header: whatever its bytes, it is not ours.
    let later = Ipv4Frame {
        frag_offset: 3,
        ..Ipv4Frame::udp(DEFAULT_PORT, &payload)
    };
    assert_passes_untouched(&dp, &later.build(), "non-first fragment");
    let last = Ipv4Frame {
        frag_offset: 185,
        more_fragments: false,
        ..Ipv4Frame::udp(DEFAULT_PORT, &payload)
    };
    assert_passes_untouched(&dp, &last.build(), "last fragment");
    // A first fragment of a datagram longer than an hb message is not one.
    let mut first = Ipv4Frame {
        more_fragments: true,
        ..Ipv4Frame::udp(DEFAULT_PORT, &payload)
    }
    .build();
    let udp_len_at = 14 + 20 + 4;
    first[udp_len_at..udp_len_at + 2].copy_from_slice(&1400u16.to_be_bytes());
    assert_passes_untouched(&dp, &first, "first fragment of a long datagram");
    assert_eq!(peer(&dp).accepted, 0);
}

#[test]
fn other_traffic_passes_untouched() {
    let dp = plane();
    let payload = frames::message(&hb(1));
    let tcp = Ipv4Frame {
        proto: 6,
        ..Ipv4Frame::udp(DEFAULT_PORT, &payload)
    };
    assert_passes_untouched(&dp, &tcp.build(), "TCP to port 694");
    assert_passes_untouched(
        &dp,
        &Ipv4Frame::udp(53, &payload).build(),
        "UDP to another port",
    );
    assert_passes_untouched(
        &dp,
        &Ipv4Frame::udp(695, &payload).build(),
        "UDP to port 695",
    );
    let tagged = Ipv4Frame {
        vlan: Some(7),
        ..Ipv4Frame::udp(5353, &[1, 2, 3])
    };
    assert_passes_untouched(&dp, &tagged.build(), "tagged UDP to another port");
    assert_passes_untouched(&dp, &frames::arp_request(), "ARP");
    assert_passes_untouched(
        &dp,
        &frames::ipv6_udp(53, &payload),
        "IPv6 UDP to another port",
    );
    let tcp6 = Ipv6Frame {
        proto: 6,
        payload: [&[0x9c, 0x40, 0x02, 0xb6][..], &[0; 16]].concat(),
        ..Ipv6Frame::udp(DEFAULT_PORT, &[])
    };
    assert_passes_untouched(&dp, &tcp6.build(), "IPv6 TCP to port 694");
    assert_passes_untouched(
        &dp,
        &Ipv6Frame::neighbour_solicitation().build(),
        "ICMPv6 neighbour solicitation",
    );
    let tagged_ns = Ipv6Frame {
        vlan: Some(9),
        ..Ipv6Frame::neighbour_solicitation()
    };
    assert_passes_untouched(&dp, &tagged_ns.build(), "tagged ICMPv6");
    // Other EtherTypes, e.g. LLDP.
    let mut lldp = frames::arp_request();
    lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    assert_passes_untouched(&dp, &lldp, "LLDP");
    assert_eq!(peer(&dp).accepted, 0);
}

#[test]
fn ipv6_fragments_and_unwalked_headers_pass() {
    let dp = plane();
    for (what, ext) in [
        ("first fragment", vec![Ipv6Frame::fragment(0, true)]),
        ("later fragment", vec![Ipv6Frame::fragment(3, true)]),
        (
            "atomic fragment (offset 0, no more)",
            vec![Ipv6Frame::fragment(0, false)],
        ),
        (
            "fragment after hop-by-hop",
            vec![
                (IPV6_HOPOPTS, vec![1, 4, 0, 0, 0, 0]),
                Ipv6Frame::fragment(0, false),
            ],
        ),
        // More extension headers than the program walks: not a heartbeat.
        (
            "four destination-options headers",
            vec![(IPV6_DSTOPTS, vec![1, 4, 0, 0, 0, 0]); 4],
        ),
        // AH is not walked either.
        ("authentication header", vec![(51, vec![0; 14])]),
    ] {
        let f = Ipv6Frame { ext, ..hb6(1) };
        assert_passes_untouched(&dp, &f.build(), what);
    }
    // "No next header" after the IPv6 header.
    let none = Ipv6Frame {
        proto: 59,
        ..Ipv6Frame::udp(DEFAULT_PORT, &[])
    };
    assert_passes_untouched(&dp, &none.build(), "no next header");
    // A bad IP version in an IPv6 EtherType frame.
    let mut v4ish = hb6(1).build();
    v4ish[14] = 0x40;
    assert_passes_untouched(&dp, &v4ish, "version 4 in an IPv6 frame");
    assert_eq!(peer(&dp).accepted, 0);
}
