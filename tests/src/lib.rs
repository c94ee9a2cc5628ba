//! Helpers shared by hb's integration tests and benchmarks: frame building,
//! throwaway network namespaces, and the root check.

pub mod bench;
pub mod cluster;
pub mod etcd;
pub mod frames;
pub mod keepalived;
pub mod linuxha;
pub mod netns;
pub mod probe;

/// Fails the test with a clear message unless we run as root: XDP, BPF test runs,
/// namespaces and iptables all need it. Never a silent skip.
pub fn require_root(what: &str) {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "{what} needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN): run `sudo cargo xtask test`"
        );
    }
}

/// CLOCK_MONOTONIC now, in ns: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock_gettime");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Running where time is stretched (`HB_TEST_TIME_SCALE` above 1: the guests
/// `cargo xtask vm-test` boots under emulation, several times slower and
/// bursty), so tests check what happens there, and assert how fast only on
/// real hardware.
pub fn emulated() -> bool {
    cluster::time_scale() > 1
}
