//! hb's XDP program: records authenticated heartbeats before netfilter and the
//! socket layer see them, drops forged and replayed ones, passes everything else.
//!
//! Also watches ARP for other hosts claiming this node's IPv4 VIPs (and lets that
//! ARP pass), and, once the controller has died, answers peers' heartbeats with
//! a death notice. This file holds the maps and the XDP entry point only; parsing
//! is in `parse.rs`, heartbeat checks in `heartbeat.rs`, the ARP watch in
//! `arp.rs`, the death notice in `gone.rs` and the exit watch (a second program,
//! on the `sched_process_exit` raw tracepoint) in `exit.rs`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod arp;
#[cfg(target_arch = "bpf")]
mod exit;
#[cfg(target_arch = "bpf")]
mod fence;
#[cfg(target_arch = "bpf")]
mod gone;
#[cfg(target_arch = "bpf")]
mod heartbeat;
#[cfg(target_arch = "bpf")]
mod parse;

#[cfg(target_arch = "bpf")]
mod prog {
    use aya_ebpf::{
        bindings::xdp_action,
        btf_maps::{Array, HashMap, PerCpuArray, RingBuf},
        macros::{btf_map, xdp},
        programs::XdpContext,
    };
    use hb_common::{
        maps::{
            Config, Event, Key, Lease, Outcome, Owner, PeerState, Seen, Sent, Stats, VipWatch,
            CONFIG_PASS_HEARTBEATS, EVENTS_BYTES, EVENT_GONE, MAP_MMAPABLE, MAX_PEERS, MAX_VIPS,
            SEEN_SLOTS,
        },
        wire2::{Refusal, Words, FLAG_HOLDS},
        MsgType,
    };

    use crate::{
        arp, fence, gone,
        heartbeat::{self, Received},
        parse::{self, Frame, Udp},
    };

    /// node id -> what we know of that peer. Keys are written by the controller
    /// (the allow-list, and our own id for collisions); values by this program.
    #[btf_map]
    pub static PEERS: HashMap<u32, PeerState, { MAX_PEERS as usize + 1 }> = HashMap::new();

    /// One `Stats` per CPU, at index 0.
    #[btf_map]
    pub static STATS: PerCpuArray<Stats, 1> = PerCpuArray::new();

    /// Scratch space for the message being checked, one per CPU: 144 bytes
    /// of it on the stack, with the MAC's and the checks' own, would not fit
    /// 6.1's stack bound (512 bytes over every frame, memcpy's included).
    /// Not pinned: it holds nothing between packets.
    #[btf_map]
    pub static SCRATCH: PerCpuArray<Words, 1> = PerCpuArray::new();

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

    /// IPv6 VIPs (keys, written by the controller; the value is unused): what
    /// the self-fence covers for IPv6.
    #[btf_map]
    pub static VIPS6: HashMap<[u8; 16], u32, { MAX_VIPS as usize }> = HashMap::new();

    /// The holder lease at index 0, renewed by the controller while it holds the
    /// VIPs; see `fence.rs`.
    #[btf_map]
    pub static LEASE: Array<Lease, 1, MAP_MMAPABLE> = Array::new();

    /// The controller's pid, node id and session at index 0, and whether it died:
    /// written by the controller, marked dead by `exit.rs`.
    #[btf_map]
    pub static OWNER: Array<Owner, 1> = Array::new();

    /// Our session and recent sequence numbers at index 0, written by the
    /// sender thread: what a new session of a peer, and a death notice, must echo.
    #[btf_map]
    pub static SENT: Array<Sent, 1, MAP_MMAPABLE> = Array::new();

    /// When each configured peer was last heard and what to echo to it
    /// (at its entry's `slot`), read by the sender thread through a mapping.
    #[btf_map]
    pub static SEEN: Array<Seen, { SEEN_SLOTS as usize }, MAP_MMAPABLE> = Array::new();

    /// News for the controller (`Event` records): it waits on this ring buffer
    /// instead of polling the maps.
    #[btf_map]
    pub static EVENTS: RingBuf<Event, { EVENTS_BYTES }> = RingBuf::new();

    /// Tells the controller to look at `subject`. A full ring drops the record:
    /// the controller drains it on every wake-up and rereads the maps then.
    #[inline(always)]
    pub fn notify(kind: u32, subject: u32) {
        let ev = Event {
            kind,
            subject,
            at_ns: unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() },
        };
        let _ = EVENTS.output(ev, 0);
    }

    // Inlined into the entry point the macro generates: a second BPF frame
    // would cost 32 bytes of stack, and 6.1's verifier counts frames rounded
    // to 32 against the 512-byte limit ("combined stack size of 2 calls").
    #[xdp]
    #[inline(always)]
    pub fn hb_xdp(ctx: XdpContext) -> u32 {
        // Cheapest path first: non-IP, non-ARP traffic touches no map but STATS.
        let (udp, cfg) = match parse::frame(&ctx) {
            Frame::Ipv4 { dst, udp } => {
                let Some(cfg) = CONFIG.get(0) else {
                    return xdp_action::XDP_PASS;
                };
                if fence::blocks(dst, cfg, &VIPS, &LEASE) {
                    count(Outcome::FencedIp);
                    return xdp_action::XDP_DROP;
                }
                (udp, cfg)
            }
            Frame::Ipv6 {
                dst_off,
                nd_target_off,
                udp,
            } => {
                let Some(cfg) = CONFIG.get(0) else {
                    return xdp_action::XDP_PASS;
                };
                if let Some(t) = nd_target_off {
                    if fence::blocks6(&ctx, t, cfg, &VIPS6, &LEASE) {
                        count(Outcome::FencedNd);
                        return xdp_action::XDP_DROP;
                    }
                }
                if fence::blocks6(&ctx, dst_off, cfg, &VIPS6, &LEASE) {
                    count(Outcome::FencedIp6);
                    return xdp_action::XDP_DROP;
                }
                (udp, cfg)
            }
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
        if udp.found {
            heartbeat_port(&ctx, udp.udp, cfg)
        } else {
            count(Outcome::Passed);
            xdp_action::XDP_PASS
        }
    }

    /// A UDP datagram: a heartbeat when it is for our port.
    #[inline(always)]
    fn heartbeat_port(ctx: &XdpContext, udp: Udp, cfg: &Config) -> u32 {
        if cfg.port == 0 || udp.dst_port != cfg.port {
            count(Outcome::Passed);
            return xdp_action::XDP_PASS;
        }
        let outcome = match heartbeat::receive(ctx, &udp, cfg, &PEERS, &KEY, &SENT, &SEEN) {
            Ok(Received::Life(hb)) => {
                // The death check, on this path only: other traffic never pays for it.
                if hb.msg_type == MsgType::Heartbeat {
                    if let Some(owner) = OWNER.get(0).filter(|o| o.dead_ns != 0) {
                        // A peer that claims a group took over (after our notice):
                        // it answers for the VIPs now, so we stop. Until then a dead
                        // controller's lease runs on, and a quick restart adopts
                        // it without a gap for clients.
                        if hb.flags & FLAG_HOLDS != 0 {
                            if let Some(lease) = LEASE.get_ptr_mut(0) {
                                // SAFETY: an array value, written whole.
                                unsafe { (*lease).until_ns = 0 };
                            }
                        }
                        if gone::answer(ctx, &udp, cfg.port, &hb, owner, &KEY, &SENT) {
                            count(Outcome::GoneSent);
                            return xdp_action::XDP_TX;
                        }
                    }
                }
                Outcome::Accepted
            }
            Ok(Received::Handshake) => Outcome::Handshake,
            Ok(Received::Gone(node_id)) => {
                notify(EVENT_GONE, node_id);
                Outcome::Gone
            }
            // Not hb's, or not for this node: the stack has it, untouched.
            Err(Refusal::NotOurs | Refusal::NotForUs) => {
                count(Outcome::Passed);
                return xdp_action::XDP_PASS;
            }
            Err(refusal) => refusal.into(),
        };
        count(outcome);
        // Valid or not, hb messages end here: a flood of forgeries never reaches the stack.
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
