//! An XDP program that only returns XDP_PASS: the baseline `cargo xtask bench-xdp`
//! divides by, run in the same process as hb's program.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::xdp]
pub fn empty(_ctx: aya_ebpf::programs::XdpContext) -> u32 {
    aya_ebpf::bindings::xdp_action::XDP_PASS
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
