//! Truncated frames and IP lengths that do not hold an hb message: passed
//! before the UDP header, refused as a bad length after it, over IPv4 and
//! IPv6.

use super::{assert_passes_untouched, assert_refused, hb6, hb_frame, plane, run};
use aya::programs::{TestRun, TestRunOptions};
use hb_common::{maps::Outcome, wire2::LEN};
use hb_tests::frames::{Ipv6Frame, IPV6_HOPOPTS};

#[test]
fn every_truncation_is_handled() {
    let dp = plane();
    let full = hb_frame(1);
    // eth 14 + ip 20 + udp 8: from there on the frame is recognisably for the heartbeat port.
    let udp_end = 14 + 20 + 8;
    assert_eq!(full.len(), udp_end + LEN);
    for len in 0..full.len() {
        let frame = &full[..len];
        if len < 14 {
            // The kernel itself refuses test frames shorter than an Ethernet header.
            let mut out = [0u8; 256];
            let opts = TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..Default::default()
            };
            assert!(
                dp.program().unwrap().test_run(opts).is_err(),
                "kernel accepted a {len}-byte frame"
            );
        } else if len < udp_end {
            assert_passes_untouched(&dp, frame, &format!("{len}-byte truncated frame"));
        } else {
            // The UDP and IP lengths promise an hb message the frame does not hold.
            assert_refused(&dp, frame, Outcome::BadLength);
        }
    }
    assert_eq!(
        run(&dp, &full).2,
        Outcome::Accepted,
        "the full frame still counts"
    );
}

#[test]
fn ipv4_lengths_are_checked() {
    let dp = plane();
    let good = hb_frame(1);
    let tot_len_at = 14 + 2;
    // IPv4 total length one short of the UDP datagram.
    let mut short = good.clone();
    short[tot_len_at..tot_len_at + 2].copy_from_slice(&(20 + 8 + LEN as u16 - 1).to_be_bytes());
    assert_refused(&dp, &short, Outcome::BadLength);
    // A larger total length and trailing bytes (Ethernet padding) are fine.
    let mut padded = good.clone();
    padded[tot_len_at..tot_len_at + 2].copy_from_slice(&(20 + 8 + LEN as u16 + 6).to_be_bytes());
    padded.extend_from_slice(&[0; 6]);
    assert_eq!(run(&dp, &padded).2, Outcome::Accepted);
}

#[test]
fn ipv6_lengths_are_checked() {
    let dp = plane();
    let good = hb6(1).build();
    let payload_len_at = 14 + 4;
    let udp_len_at = 14 + 40 + 4;
    let datagram = (8 + LEN) as u16;
    // IPv6 payload length one short of the UDP datagram.
    let mut short = good.clone();
    short[payload_len_at..payload_len_at + 2].copy_from_slice(&(datagram - 1).to_be_bytes());
    assert_refused(&dp, &short, Outcome::BadLength);
    // UDP length not 8 + 144: not an hb message.
    let mut long = good.clone();
    long[udp_len_at..udp_len_at + 2].copy_from_slice(&(datagram + 1).to_be_bytes());
    assert_passes_untouched(&dp, &long, "UDP length 153");
    // Payload length that counts the extension header but not the datagram.
    let mut ext = Ipv6Frame {
        ext: vec![(IPV6_HOPOPTS, vec![1, 4, 0, 0, 0, 0])],
        ..hb6(1)
    }
    .build();
    ext[payload_len_at..payload_len_at + 2].copy_from_slice(&(8 + datagram - 1).to_be_bytes());
    assert_refused(&dp, &ext, Outcome::BadLength);
    // A larger payload length (trailing bytes) is fine, as on IPv4.
    let mut padded = good.clone();
    padded[payload_len_at..payload_len_at + 2].copy_from_slice(&(datagram + 16).to_be_bytes());
    padded.extend_from_slice(&[0; 16]);
    assert_eq!(run(&dp, &padded).2, Outcome::Accepted);
}

#[test]
fn every_ipv6_truncation_is_handled() {
    let dp = plane();
    for ext in [vec![], vec![(IPV6_HOPOPTS, vec![1, 4, 0, 0, 0, 0])]] {
        let ext_len = ext.len() * 8;
        let full = Ipv6Frame { ext, ..hb6(1) }.build();
        let udp_end = 14 + 40 + ext_len + 8;
        for len in 14..full.len() {
            let frame = &full[..len];
            if len < udp_end {
                assert_passes_untouched(&dp, frame, &format!("{len}-byte truncated IPv6 frame"));
            } else {
                assert_refused(&dp, frame, Outcome::BadLength);
            }
        }
    }
    assert_eq!(run(&dp, &hb6(1).build()).2, Outcome::Accepted);
}
