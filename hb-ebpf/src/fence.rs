//! Self-fencing of the VIPs: without a valid holder lease (the controller renews
//! it while it holds the VIPs), this node must not answer for them, even if the
//! addresses are still configured because its controller died. Then ARP asking
//! for a VIP and IPv4 addressed to one, and for IPv6 VIPs neighbour
//! solicitations for one and IPv6 addressed to one, are dropped here, so the
//! survivor is the only responder.

use aya_ebpf::programs::XdpContext;
use aya_ebpf::{
    btf_maps::{Array, HashMap},
    helpers::bpf_ktime_get_ns,
};
use hb_common::maps::{
    vip6_filter_bit, vip_filter_bit, Config, Lease, VipWatch, MAP_MMAPABLE, MAX_VIPS,
};

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

/// The same for the IPv6 address at `off` in the frame (a destination, or a
/// neighbour solicitation's target). Non-VIP traffic pays one byte read and
/// one bit test.
#[inline(always)]
pub fn blocks6(
    ctx: &XdpContext,
    off: usize,
    cfg: &Config,
    vips6: &HashMap<[u8; 16], u32, { MAX_VIPS as usize }>,
    lease: &Array<Lease, 1, MAP_MMAPABLE>,
) -> bool {
    if cfg.vip6_filter == 0 {
        return false;
    }
    let Some(ip) = crate::parse::ptr_at::<[u8; 16]>(ctx, off) else {
        return false;
    };
    // SAFETY: bounds-checked by ptr_at. The lookup reads the key from the
    // packet itself: 16 bytes more of stack would not fit 6.1's bound.
    let ip: &[u8; 16] = unsafe { &*ip };
    if cfg.vip6_filter & vip6_filter_bit(ip) == 0 || vips6.get_ptr(ip).is_none() {
        return false;
    }
    let until = lease.get(0).map(|l| l.until_ns).unwrap_or(0);
    until <= unsafe { bpf_ktime_get_ns() }
}
