//! Self-fencing of the VIPs: without a valid holder lease (the controller renews
//! it while it holds the VIPs), this node must not answer for them, even if the
//! addresses are still configured because its controller died. Then ARP asking
//! for a VIP and IPv4 addressed to one are dropped here, so the survivor is the
//! only responder.

use aya_ebpf::{
    btf_maps::{Array, HashMap},
    helpers::bpf_ktime_get_ns,
};
use hb_common::maps::{vip_filter_bit, Config, Lease, VipWatch, MAP_MMAPABLE, MAX_VIPS};

/// True when traffic for `ip` must be dropped: it is one of our VIPs and we hold
/// no valid lease. Non-VIP traffic pays one bit test.
#[inline(always)]
pub fn blocks(
    ip: [u8; 4],
    cfg: &Config,
    vips: &HashMap<[u8; 4], VipWatch, { MAX_VIPS as usize }>,
    lease: &Array<Lease, 1, MAP_MMAPABLE>,
) -> bool {
    if cfg.vip_filter & vip_filter_bit(ip) == 0 || vips.get_ptr(ip).is_none() {
        return false;
    }
    let until = lease.get(0).map(|l| l.until_ns).unwrap_or(0);
    until <= unsafe { bpf_ktime_get_ns() }
}
