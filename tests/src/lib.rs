//! Helpers shared by hb's integration tests and benchmarks: frame building,
//! throwaway network namespaces, and the root check.

pub mod bench;
pub mod cluster;
pub mod frames;
pub mod keepalived;
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

/// Running in a guest that `cargo xtask vm-test` boots under emulation (TCG, no
/// KVM; it says so on the kernel command line): ten times slower and bursty, so
/// tests check what happens there, and assert how fast only on real hardware.
pub fn emulated() -> bool {
    std::fs::read_to_string("/proc/cmdline")
        .is_ok_and(|c| c.split_whitespace().any(|w| w == "hb.emulated=1"))
}
