//! hb's controller side. `loader` owns the XDP program and its maps; the
//! controller modules build on it.

pub mod beat;
pub mod bpffs;
pub mod checks;
pub mod checksum;
pub mod cleanup;
pub mod clock;
pub mod config;
pub mod control;
pub mod controller;
pub mod created;
pub mod election;
pub mod events;
pub mod frame;
pub mod garp;
pub mod hooks;
pub mod ifxdp;
pub mod import;
pub mod kernel;
pub mod keyfile;
pub mod loader;
pub mod logging;
pub mod manpages;
pub mod mapped;
pub mod metrics;
pub mod netlink;
pub mod node;
pub mod notice;
pub mod pinger;
pub mod preflight;
pub mod reload;
pub mod sender;
pub mod statedir;
pub mod status;
pub mod systemd;
pub mod verifier;
