//! hb's XDP program: records authenticated heartbeats before netfilter and the
//! socket layer see them, drops forged and replayed ones, passes everything else.
//!
//! Also watches ARP for other hosts claiming this node's IPv4 VIPs (and lets that
//! ARP pass). This file holds the maps and the entry point only; parsing is in
//! `parse.rs`, heartbeat checks in `heartbeat.rs`, the ARP watch in `arp.rs`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod arp;
#[cfg(target_arch = "bpf")]
mod fence;
#[cfg(target_arch = "bpf")]
mod heartbeat;
#[cfg(target_arch = "bpf")]
mod parse;

#[cfg(target_arch = "bpf")]
mod prog {
    use aya_ebpf::{
        bindings::xdp_action,
        btf_maps::{Array, HashMap, PerCpuArray},
        macros::{btf_map, xdp},
        programs::XdpContext,
    };
    use hb_common::maps::{
        Config, Key, Lease, Outcome, PeerState, Stats, VipWatch, CONFIG_PASS_HEARTBEATS, MAX_PEERS,
        MAX_VIPS,
    };

    use crate::{
        arp, fence, heartbeat,
        parse::{self, Frame, Udp},
    };

    /// node id -> what we know of that peer. Keys are written by the controller
    /// (the allow-list); values by this program.
    #[btf_map]
    pub static PEERS: HashMap<u32, PeerState, { MAX_PEERS as usize }> = HashMap::new();

    /// One `Stats` per CPU, at index 0.
    #[btf_map]
    pub static STATS: PerCpuArray<Stats, 1> = PerCpuArray::new();

    /// One `Config` at index 0, written by the controller.
    #[btf_map]
    pub static CONFIG: Array<Config, 1> = Array::new();

    /// The MAC key at index 0, written by the controller. Never logged.
    #[btf_map]
    pub static KEY: Array<Key, 1> = Array::new();

    /// IPv4 VIP (network order) -> ARP conflicts seen for it. Keys are written by
    /// the controller (the watch list); values by this program.
    #[btf_map]
    pub static VIPS: HashMap<[u8; 4], VipWatch, { MAX_VIPS as usize }> = HashMap::new();

    /// The holder lease at index 0, renewed by the controller while it holds the
    /// VIPs; see `fence.rs`.
    #[btf_map]
    pub static LEASE: Array<Lease, 1> = Array::new();

    #[xdp]
    pub fn hb_xdp(ctx: XdpContext) -> u32 {
        // Cheapest path first: non-IP, non-ARP traffic touches no map but STATS.
        let udp = match parse::frame(&ctx) {
            Frame::Ipv4 { dst, udp } => {
                let Some(cfg) = CONFIG.get(0) else {
                    return xdp_action::XDP_PASS;
                };
                if fence::blocks(dst, cfg, &VIPS, &LEASE) {
                    count(Outcome::FencedIp);
                    return xdp_action::XDP_DROP;
                }
                match udp {
                    Some(udp) => return heartbeat_port(&ctx, udp, cfg),
                    None => {
                        count(Outcome::Passed);
                        return xdp_action::XDP_PASS;
                    }
                }
            }
            Frame::Udp(udp) => udp,
            Frame::Arp(off) => {
                let (outcome, action) = arp::inspect(&ctx, off, &CONFIG, &VIPS, &LEASE);
                count(outcome);
                return action;
            }
            Frame::Other => {
                count(Outcome::Passed);
                return xdp_action::XDP_PASS;
            }
        };
        let Some(cfg) = CONFIG.get(0) else {
            return xdp_action::XDP_PASS;
        };
        heartbeat_port(&ctx, udp, cfg)
    }

    /// A UDP datagram: a heartbeat when it is for our port.
    #[inline(always)]
    fn heartbeat_port(ctx: &XdpContext, udp: Udp, cfg: &Config) -> u32 {
        if cfg.port == 0 || udp.dst_port != cfg.port {
            count(Outcome::Passed);
            return xdp_action::XDP_PASS;
        }
        let outcome = match heartbeat::receive(ctx, &udp, cfg, &PEERS, &KEY) {
            Ok(()) => Outcome::Accepted,
            Err(refusal) => refusal.into(),
        };
        count(outcome);
        // Valid or not, heartbeats end here: a flood of forgeries never reaches the stack.
        if cfg.flags & CONFIG_PASS_HEARTBEATS != 0 {
            xdp_action::XDP_PASS
        } else {
            xdp_action::XDP_DROP
        }
    }

    #[inline(always)]
    fn count(outcome: Outcome) {
        if let Some(stats) = STATS.get_ptr_mut(0) {
            // Stats is #[repr(C)] of u64 in Outcome order (asserted in hb-common).
            // SAFETY: per-CPU slot, so no other writer; index < Stats::COUNT.
            unsafe { *(stats as *mut u64).add(outcome as usize) += 1 };
        }
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable: the verifier rejects a program whose panic path is reachable.
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("hb-ebpf builds for the BPF target only: run `cargo xtask build-ebpf`");
}
