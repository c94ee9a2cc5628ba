//! The maps the sender thread writes through mapped memory, read by the kernel
//! and XDP.

use super::{assert_refused, plane, run, v4, we_sent, OUR_NODE, PEER, PS};
use hb_common::maps::Outcome;
use hb_tests::frames;

/// The sender thread writes the lease and the sent record through mapped
/// memory (no syscall per heartbeat): what it stores there is what the kernel,
/// and so XDP, reads.
#[test]
fn lease_and_sent_are_written_through_mapped_memory() {
    let dp = plane();
    let mut lease = dp.lease_map().unwrap();
    assert!(
        lease.is_mapped(),
        "the lease map is mmapable on this kernel"
    );
    lease.set(hb_common::maps::Lease {
        until_ns: 123_456_789,
    });
    assert_eq!(
        dp.lease().unwrap(),
        std::time::Duration::from_nanos(123_456_789)
    );
    lease.set(hb_common::maps::Lease { until_ns: 0 });
    assert_eq!(dp.lease().unwrap(), std::time::Duration::ZERO);
    we_sent(&dp, 0x5e55, 77, 70);
    let s = dp.sent_map().unwrap().get().unwrap();
    assert_eq!((s.session, s.seq, s.recent_lo), (0x5e55, 77, 70));
    // And XDP reads it: an echo of 77 in that session proves a peer fresh, 70 does not.
    let stale = frames::head(PEER, OUR_NODE, PS, 1, (0x5e55, 70));
    assert_refused(&dp, &v4(&stale), Outcome::StaleSession);
    let fresh = frames::head(PEER, OUR_NODE, PS, 2, (0x5e55, 77));
    assert_eq!(run(&dp, &v4(&fresh)).2, Outcome::Accepted);
}
