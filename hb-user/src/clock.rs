//! CLOCK_MONOTONIC, the clock `bpf_ktime_get_ns` reads: the peers map's
//! timestamps and the controller's "now" must come from the same clock.

use std::time::Duration;

pub fn monotonic() -> Duration {
    // CLOCK_MONOTONIC cannot fail on Linux.
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}
