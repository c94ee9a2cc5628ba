//! hb's controller side. `loader` owns the XDP program and its maps; the
//! controller modules build on it.

pub mod bpffs;
pub mod loader;
