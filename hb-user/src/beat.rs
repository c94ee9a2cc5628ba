//! The heartbeat clock: a thread of its own that sends on an absolute schedule,
//! so nothing else in the process (netlink, ARP bursts, status writes, hooks, the
//! election) can delay a heartbeat. Per beat it reads one atomic word (what to
//! advertise), encodes and signs into stack buffers, makes one `sendto` per peer
//! address and, while the node holds its VIPs, one map write that renews the
//! holder lease: the lease is tied to what was actually sent, so it never runs
//! longer than dead-after past the last heartbeat that claimed the VIPs. Before
//! each send it also records the message's (epoch, seq) in the link's `sent`
//! map, which a peer's death notice must echo. No allocation, lock or log line
//! on that path.
//!
//! The controller changes what is advertised with [`Beat::advertise`], which
//! wakes the thread at once: peers learn a transition immediately, not at the
//! next tick.

use crate::{
    clock::monotonic,
    mapped::MapCell,
    sender::{LinkSender, Sequencer},
};
use hb_common::{
    maps::{Lease, Sent},
    MsgType, NodeState,
};
use linux_futex::{Futex, Private, TimedWaitError};
use std::{
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering::SeqCst},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// What heartbeats say, and whether the lease is renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advert {
    pub state: NodeState,
    pub holds_vip: bool,
    pub reaches_ping: bool,
    /// Renew the holder lease with every heartbeat (holding the VIPs, or a
    /// restart inheriting a previous run's valid lease).
    pub lease: bool,
    /// Send leave messages, withdraw the lease and end the thread.
    pub leaving: bool,
}

impl Advert {
    fn pack(self) -> u32 {
        self.state as u32
            | u32::from(self.holds_vip) << 8
            | u32::from(self.reaches_ping) << 9
            | u32::from(self.lease) << 10
            | u32::from(self.leaving) << 11
    }

    fn unpack(w: u32) -> Self {
        Self {
            state: NodeState::from_u8(w as u8).unwrap_or(NodeState::Init),
            holds_vip: w & 1 << 8 != 0,
            reaches_ping: w & 1 << 9 != 0,
            lease: w & 1 << 10 != 0,
            leaving: w & 1 << 11 != 0,
        }
    }
}

/// Shared between the controller and the thread; every field lock-free.
struct Cell {
    advert: AtomicU32,
    /// Bumped by every `advertise`; the thread sleeps on it until its next
    /// deadline, so a bump wakes it early.
    wake: Futex<Private>,
    /// CLOCK_MONOTONIC ns of the last send, and sends so far (for status).
    last_sent_ns: AtomicU64,
    sent: AtomicU64,
    /// CLOCK_MONOTONIC ns when the controller's loop last ran (see `touch`).
    touched_ns: AtomicU64,
    /// How long our heartbeats had stopped (ns) when the thread found itself
    /// more than dead-after late while claiming the VIPs (the process was
    /// paused or starved: a peer may have taken over). Nonzero until the
    /// controller takes it; meanwhile the lease is not renewed.
    lapsed_ns: AtomicU64,
    /// Wakes the controller for a lapse.
    lapse: tokio::sync::Notify,
}

/// How long the controller's loop may stall before the thread stops sending: a
/// hung controller must look dead to its peers, as a crashed one does, instead of
/// claiming the VIPs forever. Longer than dead-after at fast settings, so that a
/// brief stall of the controller (the thing this thread exists to survive) does
/// not silence the node.
pub fn watchdog(dead_after: Duration) -> Duration {
    dead_after.max(Duration::from_millis(250))
}

/// One link as the thread sees it.
pub struct BeatLink {
    pub sender: LinkSender,
    /// The link's holder lease map; None when it could not be opened (the
    /// controller logs that).
    pub lease: Option<MapCell<Lease>>,
    /// The link's record of the last heartbeat sent; None when it could not be
    /// opened (peers' death notices are then refused as replays).
    pub sent: Option<MapCell<Sent>>,
}

/// Timing and identity of the thread.
pub struct BeatParams {
    pub interval: Duration,
    pub dead_after: Duration,
    /// SCHED_FIFO for the thread (above the controller's priority).
    pub realtime: bool,
    /// Leave messages sent on a graceful stop.
    pub leave_copies: u32,
    /// See [`watchdog`].
    pub watchdog: Duration,
}

/// The running thread, owned by the controller.
pub struct Beat {
    cell: Arc<Cell>,
    thread: Option<JoinHandle<()>>,
}

/// SCHED_FIFO priority of the sender thread; the controller runs at 50.
pub const SENDER_PRIORITY: i32 = 60;

impl Beat {
    /// Starts sending `first` at once, then every interval.
    pub fn spawn(
        p: BeatParams,
        seq: Sequencer,
        links: Vec<BeatLink>,
        first: Advert,
    ) -> std::io::Result<Self> {
        let cell = Arc::new(Cell {
            advert: AtomicU32::new(first.pack()),
            wake: Futex::new(0),
            last_sent_ns: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            touched_ns: AtomicU64::new(monotonic().as_nanos() as u64),
            lapsed_ns: AtomicU64::new(0),
            lapse: tokio::sync::Notify::new(),
        });
        let c = cell.clone();
        let thread = std::thread::Builder::new()
            .name("hb-beat".into())
            .spawn(move || Clock::new(p, seq, links, c).run())?;
        Ok(Self {
            cell,
            thread: Some(thread),
        })
    }

    /// Changes what heartbeats say; the thread sends one at once.
    pub fn advertise(&self, a: Advert) {
        let old = self.cell.advert.swap(a.pack(), SeqCst);
        if old != a.pack() {
            self.cell.wake.value.fetch_add(1, SeqCst);
            self.cell.wake.wake(1);
        }
    }

    /// Resolves when the thread reports a lapse (see [`Beat::take_lapse`]).
    pub async fn lapsed(&self) {
        self.cell.lapse.notified().await
    }

    /// How long our heartbeats had stopped, if the thread found itself more
    /// than dead-after late while claiming the VIPs. The lease stays unrenewed
    /// until [`Beat::clear_lapse`], which the controller calls once it has
    /// re-advertised.
    pub fn lapse(&self) -> Option<Duration> {
        let ns = self.cell.lapsed_ns.load(SeqCst);
        (ns != 0).then(|| Duration::from_nanos(ns))
    }

    pub fn clear_lapse(&self) {
        self.cell.lapsed_ns.store(0, SeqCst);
    }

    /// The controller's loop is alive; called every poll.
    pub fn touch(&self) {
        self.cell
            .touched_ns
            .store(monotonic().as_nanos() as u64, SeqCst);
    }

    pub fn advert(&self) -> Advert {
        Advert::unpack(self.cell.advert.load(SeqCst))
    }

    /// When the last heartbeat left (CLOCK_MONOTONIC), and how many did.
    pub fn sent(&self) -> (Duration, u64) {
        (
            Duration::from_nanos(self.cell.last_sent_ns.load(SeqCst)),
            self.cell.sent.load(SeqCst),
        )
    }

    /// Graceful end: leave messages, the lease withdrawn, the thread joined.
    pub fn leave(mut self, reaches_ping: bool) {
        self.advertise(Advert {
            state: NodeState::Backup,
            holds_vip: false,
            reaches_ping,
            lease: false,
            leaving: true,
        });
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The thread's own state.
struct Clock {
    p: BeatParams,
    seq: Sequencer,
    links: Vec<BeatLink>,
    cell: Arc<Cell>,
    /// Whether a lease is set in the links' maps (so withdrawing it is needed).
    leased: bool,
}

impl Clock {
    fn new(p: BeatParams, seq: Sequencer, links: Vec<BeatLink>, cell: Arc<Cell>) -> Self {
        Self {
            p,
            seq,
            links,
            cell,
            leased: false,
        }
    }

    fn run(mut self) {
        if self.p.realtime {
            realtime_thread();
        }
        let mut next = Instant::now();
        loop {
            let woken = self.cell.wake.value.load(SeqCst);
            let a = Advert::unpack(self.cell.advert.load(SeqCst));
            if a.leaving {
                self.leave(a);
                return;
            }
            self.beat(MsgType::Heartbeat, a);
            // Sleep until the next deadline on the grid or an `advertise`. A
            // deadline already past (we were not scheduled) is not made up for
            // with a burst: the next beat goes at once, then the grid resumes.
            let now = Instant::now();
            while next <= now {
                next += self.p.interval;
            }
            while let Err(TimedWaitError::Interrupted) =
                self.cell.wake.wait_bitset_until(woken, u32::MAX, next)
            {}
        }
    }

    /// One message to every peer address on every link, then the lease.
    fn beat(&mut self, msg: MsgType, a: Advert) {
        // Read before sending: a peer hears this heartbeat after `now`, so a lease
        // ending at now + dead-after ends before that peer can declare us dead.
        let now = monotonic();
        let touched = Duration::from_nanos(self.cell.touched_ns.load(SeqCst));
        if msg == MsgType::Heartbeat && now.saturating_sub(touched) > self.p.watchdog {
            return;
        }
        // Late by more than dead-after while claiming the VIPs: peers may have
        // declared us dead and taken over. No renewal until the controller has
        // decided again (it steps down; break-before-make from there).
        let last = self.cell.last_sent_ns.load(SeqCst);
        let silent = now.saturating_sub(Duration::from_nanos(last));
        if msg == MsgType::Heartbeat && last != 0 && a.lease && silent > self.p.dead_after {
            self.cell
                .lapsed_ns
                .store(silent.as_nanos().max(1) as u64, SeqCst);
            self.cell.lapse.notify_one();
        }
        let lapsed = self.cell.lapsed_ns.load(SeqCst) != 0;
        let payload = self.seq.next(msg, a.state, a.holds_vip, a.reaches_ping);
        let sent = Sent {
            epoch: self.seq.epoch,
            _pad: 0,
            seq: self.seq.seq(),
        };
        for l in &mut self.links {
            // Before the send: the answer to it may come back at once.
            if let Some(m) = &mut l.sent {
                m.set(sent);
            }
            l.sender.send(&payload);
        }
        self.cell.last_sent_ns.store(now.as_nanos() as u64, SeqCst);
        self.cell.sent.fetch_add(1, SeqCst);
        if a.lease && !lapsed {
            self.set_lease(now + self.p.dead_after);
            // A release that raced with this renewal must still win: the
            // controller changes the advert before it withdraws the lease, so
            // reading the advert again after our write sees it.
            if !Advert::unpack(self.cell.advert.load(SeqCst)).lease {
                self.set_lease(Duration::ZERO);
            }
        } else if self.leased {
            self.set_lease(Duration::ZERO);
        }
    }

    fn set_lease(&mut self, until: Duration) {
        let lease = Lease {
            until_ns: until.as_nanos() as u64,
        };
        for l in &mut self.links {
            if let Some(m) = &mut l.lease {
                m.set(lease);
            }
        }
        self.leased = until != Duration::ZERO;
    }

    fn leave(&mut self, a: Advert) {
        self.set_lease(Duration::ZERO);
        // A few copies: one lost leave only costs dead-after, but it need not.
        for i in 0..self.p.leave_copies {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.beat(MsgType::Leave, a);
        }
    }
}

/// SCHED_FIFO for the calling thread; failure leaves it at normal priority
/// (the process-wide `--realtime` setup already logged why).
fn realtime_thread() {
    let param = libc::sched_param {
        sched_priority: SENDER_PRIORITY,
    };
    // SAFETY: sched_setscheduler(0, ..) on Linux applies to the calling thread.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adverts_pack_and_unpack() {
        for state in [
            NodeState::Init,
            NodeState::Backup,
            NodeState::Master,
            NodeState::Fault,
        ] {
            for bits in 0..16u32 {
                let a = Advert {
                    state,
                    holds_vip: bits & 1 != 0,
                    reaches_ping: bits & 2 != 0,
                    lease: bits & 4 != 0,
                    leaving: bits & 8 != 0,
                };
                assert_eq!(Advert::unpack(a.pack()), a);
            }
        }
    }
}
