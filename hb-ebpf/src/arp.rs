//! ARP and the VIPs. Conflict watch: Ethernet/IPv4 ARP whose sender IP is one of
//! this node's VIPs and whose sender MAC is not this interface's is another host
//! claiming the VIP (a split brain, or a misconfigured host); it is counted and
//! passes. Self-fence: ARP whose target IP is a VIP is dropped while this node
//! holds no lease (see `fence.rs`); all other ARP passes.

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{Array, HashMap},
    helpers::bpf_ktime_get_ns,
    programs::XdpContext,
};
use hb_common::maps::{
    recent_held, recent_slot, vip_filter_bit, Config, Lease, Outcome, VipWatch, CLAIMANTS,
    EVENT_CLAIM, MAP_MMAPABLE, MAX_VIPS,
};
use network_types::arp::ArpHdr;

use crate::parse::ptr_at;

/// The outcome and action for the ARP packet at `off`: `FencedArp` (dropped) when
/// it targets a VIP and we hold no lease, else `ArpConflict` when a foreign MAC
/// claims a VIP, else `Passed`. A conflict is recorded in `vips` either way.
#[inline(always)]
pub fn inspect(
    ctx: &XdpContext,
    off: usize,
    config: &Array<Config, 1>,
    vips: &HashMap<[u8; 4], VipWatch, { MAX_VIPS as usize }>,
    lease: &Array<Lease, 1, MAP_MMAPABLE>,
) -> (Outcome, u32) {
    let outcome = watch(ctx, off, config, vips);
    if let (Some(arp), Some(cfg)) = (ptr_at::<ArpHdr>(ctx, off), config.get(0)) {
        // Only Ethernet/IPv4 ARP has an IPv4 target address at `tpa`.
        let (hlen, plen, tpa) = unsafe { ((*arp).hlen, (*arp).plen, (*arp).tpa) };
        if hlen == 6 && plen == 4 && crate::fence::blocks(tpa, cfg, vips, lease) {
            return (Outcome::FencedArp, xdp_action::XDP_DROP);
        }
    }
    (outcome, xdp_action::XDP_PASS)
}

/// Counts the ARP packet at `off` against the watched VIPs: `ArpConflict` when it
/// is one, `Passed` otherwise (not Ethernet/IPv4 ARP, not a request or reply,
/// truncated, not a VIP, or our own MAC).
#[inline(always)]
fn watch(
    ctx: &XdpContext,
    off: usize,
    config: &Array<Config, 1>,
    vips: &HashMap<[u8; 4], VipWatch, { MAX_VIPS as usize }>,
) -> Outcome {
    let Some(arp) = ptr_at::<ArpHdr>(ctx, off) else {
        return Outcome::Passed;
    };
    let (htype, ptype, hlen, plen, oper, sha, spa) = unsafe {
        (
            (*arp).htype,
            (*arp).ptype,
            (*arp).hlen,
            (*arp).plen,
            (*arp).oper,
            (*arp).sha,
            (*arp).spa,
        )
    };
    let op = u16::from_be_bytes(oper);
    if u16::from_be_bytes(htype) != 1
        || u16::from_be_bytes(ptype) != 0x0800
        || hlen != 6
        || plen != 4
        || (op != 1 && op != 2)
    {
        return Outcome::Passed;
    }
    let Some(cfg) = config.get(0) else {
        return Outcome::Passed;
    };
    // Most ARP is not about our VIPs: a bit test (an inlined array lookup away)
    // spares it the hash lookup.
    if cfg.vip_filter & vip_filter_bit(spa) == 0 {
        return Outcome::Passed;
    }
    let Some(entry) = vips.get_ptr_mut(spa) else {
        return Outcome::Passed;
    };
    // Our own MAC is no conflict (e.g. our gratuitous ARP reflected back to us).
    if same_mac(&sha, &cfg.mac) {
        return Outcome::Passed;
    }
    // SAFETY: a hash map value that only this program writes after the controller
    // created it. Two CPUs racing may lose one increment; the controller needs
    // "it went up", and the per-CPU `arp_conflict` counter stays exact.
    let w = unsafe { &mut *entry };
    let now = unsafe { bpf_ktime_get_ns() };
    let quiet = w.last_ns == 0 || now.wrapping_sub(w.last_ns) >= cfg.quiet_ns;
    w.conflicts += 1;
    w.last_ns = now;
    w.last_mac = sha;
    // News for the controller: a new claimant, or claims after a quiet gap; a
    // flood is one event (the controller's sweep reads the counts).
    if record_claimant(w, &sha, now) || quiet {
        crate::prog::notify(EVENT_CLAIM, u32::from_ne_bytes(spa));
    }
    Outcome::ArpConflict
}

/// Counts `mac` in its claimant slot: its own if present (it is a repeat
/// claimant now), else the slot with the least (`repeat`, `last_ns`). A new
/// MAC whose fingerprint `recent` holds claimed before: it comes in as a repeat
/// claimant, so a flood of one-shot MACs (the least recently seen of them
/// evicted first) never pushes out a MAC that keeps claiming. True when `mac`
/// is new here.
#[inline(always)]
fn record_claimant(w: &mut VipWatch, mac: &[u8; 6], now: u64) -> bool {
    let mut pick = 0;
    let mut least = u64::MAX;
    for i in 0..CLAIMANTS {
        let c = &mut w.claimants[i];
        if c.count != 0 && same_mac(&c.mac, mac) {
            c.count += 1;
            c.last_ns = now;
            c.repeat = 1;
            return false;
        }
        // Free slots (count 0) first; a repeat claimant sorts after every
        // one-shot one (ktime is far below 2^63).
        let rank = if c.count == 0 {
            0
        } else {
            c.last_ns | u64::from(c.repeat) << 63
        };
        if rank < least {
            least = rank;
            pick = i;
        }
    }
    let (at, fresh) = recent_slot(mac, now);
    let held = w.recent[at];
    let repeat = (held ^ fresh) >> 12 == 0;
    if repeat || !recent_held(held, fresh) {
        w.recent[at] = fresh;
    }
    let c = &mut w.claimants[pick];
    c.mac = *mac;
    c.repeat = u8::from(repeat);
    c.count = 1;
    c.last_ns = now;
    true
}

/// Byte-wise, so no `memcmp` call is emitted (BPF has none).
#[inline(always)]
fn same_mac(a: &[u8; 6], b: &[u8; 6]) -> bool {
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) | (a[5] ^ b[5])
        == 0
}
