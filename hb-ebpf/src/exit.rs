//! The exit watch: a raw tracepoint program on `sched_process_exit`, which the
//! kernel calls in the context of every exiting thread. When that thread is the
//! main thread (thread-group leader) of the controller named in `OWNER`, the
//! controller has died (a graceful stop clears `OWNER.pid` first, so only a
//! crash, a SIGKILL or an OOM kill gets here): mark it dead, so that XDP answers
//! peers' heartbeats with a death notice and voids the holder lease.
//!
//! The leader, not the last thread: which thread exits last would need
//! `task_struct` offsets (CO-RE, which this toolchain does not emit), and
//! hb-user's main thread ends only with the whole process (exit_group or a fatal
//! signal). Other threads (the sender, tokio's blocking pool) come and go and
//! must not count. The pid is compared in the controller's own pid namespace
//! (`bpf_get_ns_current_pid_tgid`), so a controller in a container is seen too.
//!
//! The cost for the rest of the system: one array lookup per thread exit, and a
//! helper call while a controller is registered.

use aya_ebpf::{
    bindings::bpf_pidns_info,
    helpers::{bpf_get_ns_current_pid_tgid, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};

use crate::prog::OWNER;

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn hb_exit(_ctx: RawTracePointContext) -> i32 {
    let Some(owner) = OWNER.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: an array value; the controller writes it only while alive.
    let o = unsafe { &mut *owner };
    if o.pid == 0 || o.dead_ns != 0 {
        return 0;
    }
    let mut ns = bpf_pidns_info { pid: 0, tgid: 0 };
    // SAFETY: the helper writes `size` bytes into `ns`, which has that size.
    let r = unsafe {
        bpf_get_ns_current_pid_tgid(
            o.pidns_dev,
            o.pidns_ino,
            &mut ns,
            core::mem::size_of::<bpf_pidns_info>() as u32,
        )
    };
    // Another pid namespace (r != 0), another process, or one of its threads.
    if r != 0 || ns.tgid != o.pid || ns.pid != ns.tgid {
        return 0;
    }
    o.dead_ns = unsafe { bpf_ktime_get_ns() };
    0
}
