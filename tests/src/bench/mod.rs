//! `cargo xtask bench`: hb next to keepalived in the namespace lab. Failover
//! times, controller CPU, floods, heartbeat loss, CPU starvation and the firewall
//! incident, written up as docs/BENCHMARKS.md with SVG plots.
//!
//! - `testbed`: one tool on the LAN, faults and checks the same way for both tools
//! - `scenarios`: what each measurement does (I/O)
//! - `vipwatch`: who holds the VIP over time (rtnetlink), false failovers
//! - `flood`: frames and the single-thread sender
//! - `host`: machine description, /proc CPU and memory
//! - `gaps`: heartbeat inter-departure gaps from the switch port
//! - `syscalls`: syscall counts (strace -c)
//! - `stats`, `report`, `svg`: pure summaries, markdown and plots

pub mod flood;
pub mod gaps;
pub mod host;
pub mod report;
pub mod scenarios;
pub mod stats;
pub mod svg;
pub mod syscalls;
pub mod testbed;
pub mod vipwatch;
