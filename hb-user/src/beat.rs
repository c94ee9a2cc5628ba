//! The heartbeat clock: a thread of its own that sends on an absolute schedule,
//! so nothing else in the process (netlink, ARP bursts, status writes, hooks, the
//! election) can delay a heartbeat. Per beat it reads one atomic word (what to
//! advertise), encodes and signs into stack buffers, makes one `sendto` per peer
//! address and, while the node holds its VIPs, one map write that renews the
//! holder lease: the lease is tied to what was actually sent, so it never runs
//! longer than dead-after past the last heartbeat that claimed the VIPs. Each
//! message is addressed to one peer and echoes that peer's session and seq,
//! read with plain loads from the link's mmapable `seen` array. Before each
//! beat it records our session and recent sequence numbers in the link's
//! `sent` map, which a new session of a peer, and a death notice, must echo.
//! No allocation, lock or log line on that path.
//!
//! The controller changes what is advertised with [`Beat::advertise`], which
//! wakes the thread at once: peers learn a transition immediately, not at the
//! next tick.
//!
//! The thread also watches the peers' silence for the controller
//! ([`Beat::watch`]): the data plane writes each peer's arrival time into the
//! mmapable `seen` array, the thread reads it with plain loads whenever it
//! wakes, sleeps no later than the earliest "silent for dead-after" deadline,
//! and wakes the controller only when one passes. So a steady cluster costs the
//! controller no wake-up at all, and silence is noticed with the precision of
//! this thread's clock rather than a timer wheel's.

use crate::{
    clock::monotonic,
    mapped::{MapCell, Mapping},
    sender::{LinkSender, Says, Sequencer},
};
use hb_common::{
    maps::{Lease, Seen, Sent},
    wire2::{Group, GROUPS, GROUP_HOLDS},
    MsgType, NodeState,
};
use linux_futex::{Futex, Private, TimedWaitError};
use std::{
    sync::{
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst},
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
    /// Gaps between heartbeats sent, for the metrics.
    gaps: Arc<Gaps>,
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
    /// The (link, `seen` slot) entries whose silence the thread watches, packed by
    /// [`pack_watch`]; the first `watch_len` are valid. `watch_gen` is bumped
    /// with every change, so that the thread forgets what it already reported.
    watch: [AtomicU64; WATCH_MAX],
    watch_len: AtomicUsize,
    watch_gen: AtomicU64,
    /// Wakes the controller: a watched entry fell silent for dead-after.
    silent: tokio::sync::Notify,
    /// What heartbeats report of the cluster (`Node::view`): per group slot
    /// the holder we see, and the peers we hear.
    holders: [AtomicU32; GROUPS],
    heard: AtomicU64,
    /// Per group slot, our standing in it ([`pack_group`]).
    groups: [AtomicU32; GROUPS],
}

fn pack_group(g: Group) -> u32 {
    u32::from(g.priority) | u32::from(g.state) << 8 | u32::from(g.flags) << 16
}

fn unpack_group(w: u32) -> Group {
    Group {
        priority: w as u8,
        state: (w >> 8) as u8,
        flags: (w >> 16) as u8,
    }
}

/// Most (link, slot) entries the thread watches; more, and the controller
/// watches silence itself.
pub const WATCH_MAX: usize = 64;

fn pack_watch(link: usize, slot: u32) -> u64 {
    (link as u64) << 32 | u64::from(slot)
}

fn unpack_watch(w: u64) -> (usize, u32) {
    ((w >> 32) as usize, w as u32)
}

/// How long the controller's loop may stall before the thread stops sending: a
/// hung controller must look dead to its peers, as a crashed one does, instead of
/// claiming the VIPs forever. Longer than dead-after at fast settings, so that a
/// brief stall of the controller (the thing this thread exists to survive) does
/// not silence the node.
pub fn watchdog(dead_after: Duration) -> Duration {
    dead_after.max(Duration::from_millis(500))
}

/// Upper bounds (seconds) of the send-gap histogram's buckets.
pub const GAP_BOUNDS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

/// The thread's gaps between heartbeats, as plain atomics (no lock on the
/// sender's path): a count per bucket (the last for longer ones), the sum.
#[derive(Debug, Default)]
pub struct Gaps {
    buckets: [AtomicU64; GAP_BOUNDS.len() + 1],
    sum_ns: AtomicU64,
}

impl Gaps {
    fn record(&self, gap: Duration) {
        let s = gap.as_secs_f64();
        let i = GAP_BOUNDS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(GAP_BOUNDS.len());
        self.buckets[i].fetch_add(1, SeqCst);
        self.sum_ns.fetch_add(gap.as_nanos() as u64, SeqCst);
    }

    /// (upper bound, count) per bucket, not cumulative (the encoder adds
    /// them up), with +Inf last; the sum in seconds and the count.
    pub fn read(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let mut total = 0;
        let mut out = Vec::with_capacity(GAP_BOUNDS.len() + 1);
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(SeqCst);
            total += n;
            out.push((GAP_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY), n));
        }
        let sum = Duration::from_nanos(self.sum_ns.load(SeqCst)).as_secs_f64();
        (out, sum, total)
    }
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
    /// The link's `seen` array, mapped: what to echo to each peer, and when
    /// it was last heard.
    pub seen: Mapping<Seen>,
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
    /// Starts sending `first` (with the groups' standing `groups`, by slot)
    /// at once, then every interval.
    pub fn spawn(
        p: BeatParams,
        seq: Sequencer,
        links: Vec<BeatLink>,
        first: Advert,
        groups: [Group; GROUPS],
    ) -> std::io::Result<Self> {
        let cell = Arc::new(Cell {
            advert: AtomicU32::new(first.pack()),
            wake: Futex::new(0),
            last_sent_ns: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            touched_ns: AtomicU64::new(monotonic().as_nanos() as u64),
            lapsed_ns: AtomicU64::new(0),
            lapse: tokio::sync::Notify::new(),
            watch: std::array::from_fn(|_| AtomicU64::new(0)),
            watch_len: AtomicUsize::new(0),
            watch_gen: AtomicU64::new(0),
            silent: tokio::sync::Notify::new(),
            holders: std::array::from_fn(|_| AtomicU32::new(0)),
            heard: AtomicU64::new(0),
            gaps: Arc::default(),
            groups: std::array::from_fn(|g| AtomicU32::new(pack_group(groups[g]))),
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

    /// Watches these (link index, `seen` slot) entries' silence from now on,
    /// replacing the last set; false when the thread cannot (too many
    /// entries), and the caller must keep a timer of its own.
    pub fn watch(&self, entries: &[(usize, u32)]) -> bool {
        if entries.len() > WATCH_MAX {
            self.cell.watch_len.store(0, SeqCst);
            return false;
        }
        let changed = self.cell.watch_len.load(SeqCst) != entries.len()
            || entries
                .iter()
                .zip(&self.cell.watch)
                .any(|(&(l, p), w)| w.load(SeqCst) != pack_watch(l, p));
        if changed {
            // Emptied first, so the thread never pairs a new length with old entries.
            self.cell.watch_len.store(0, SeqCst);
            for (&(l, p), w) in entries.iter().zip(&self.cell.watch) {
                w.store(pack_watch(l, p), SeqCst);
            }
            self.cell.watch_len.store(entries.len(), SeqCst);
        }
        // Also for an unchanged set: the controller has just looked, so what the
        // thread reported is handled, and a peer still silent is reported again.
        self.cell.watch_gen.fetch_add(1, SeqCst);
        if changed {
            // A new entry's deadline may come before the thread's next tick.
            self.cell.wake.value.fetch_add(1, SeqCst);
            self.cell.wake.wake(1);
        }
        true
    }

    /// Resolves when a watched entry has been silent for dead-after.
    pub async fn silent(&self) {
        self.cell.silent.notified().await
    }

    /// The gaps between heartbeats sent, for the metrics.
    pub fn gaps(&self) -> Arc<Gaps> {
        self.cell.gaps.clone()
    }

    /// Changes what heartbeats say; the thread sends one at once.
    pub fn advertise(&self, a: Advert) {
        let old = self.cell.advert.swap(a.pack(), SeqCst);
        if old != a.pack() {
            self.cell.wake.value.fetch_add(1, SeqCst);
            self.cell.wake.wake(1);
        }
    }

    /// Changes what heartbeats report of the cluster ([`crate::node::Node::view`]):
    /// the holder we see in a group slot, and the peers we hear; the thread
    /// sends at once when it changed.
    pub fn view(&self, slot: usize, holder: u32, heard: u64) {
        let old = (
            self.cell.holders[slot].swap(holder, SeqCst),
            self.cell.heard.swap(heard, SeqCst),
        );
        if old != (holder, heard) {
            self.wake();
        }
    }

    /// Changes what heartbeats say of our standing in a group slot; the
    /// thread sends at once when it changed.
    pub fn set_group(&self, slot: usize, g: Group) {
        if self.cell.groups[slot].swap(pack_group(g), SeqCst) != pack_group(g) {
            self.wake();
        }
    }

    /// A reload removed the group in `slot`: heartbeats carry nothing for
    /// it (state INIT, priority 0, no holder), so a peer that still has it
    /// elects without us.
    pub fn clear_group(&self, slot: usize) {
        self.cell.holders[slot].store(0, SeqCst);
        self.set_group(slot, Group::default());
        self.wake();
    }

    fn wake(&self) {
        self.cell.wake.value.fetch_add(1, SeqCst);
        self.cell.wake.wake(1);
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
    /// The watch generation last seen, and whether a silence was reported in it.
    watch_gen: u64,
    reported: bool,
    /// Our sequence numbers at the last two turns of the recent window (every
    /// two dead-afters), and when the last turn was: a seq sent after
    /// `recent[0]` is recent.
    recent: [u64; 2],
    turned: Duration,
}

impl Clock {
    fn new(p: BeatParams, seq: Sequencer, links: Vec<BeatLink>, cell: Arc<Cell>) -> Self {
        Self {
            p,
            seq,
            links,
            cell,
            leased: false,
            watch_gen: 0,
            reported: false,
            recent: [0; 2],
            turned: Duration::ZERO,
        }
    }

    fn run(mut self) {
        if self.p.realtime {
            realtime_thread();
        }
        let mut next = Instant::now();
        // The advert word last sent: a wake-up with the same word and before the
        // next tick is for the silence watch only, and sends nothing.
        let mut sent_word = None;
        loop {
            let woken = self.cell.wake.value.load(SeqCst);
            let word = (
                self.cell.advert.load(SeqCst),
                self.cell.heard.load(SeqCst),
                std::array::from_fn::<u32, GROUPS, _>(|g| self.cell.holders[g].load(SeqCst)),
                std::array::from_fn::<u32, GROUPS, _>(|g| self.cell.groups[g].load(SeqCst)),
            );
            let a = Advert::unpack(word.0);
            if a.leaving {
                self.leave(a);
                return;
            }
            if sent_word != Some(word) || Instant::now() >= next {
                self.beat(MsgType::Heartbeat, a);
                sent_word = Some(word);
                // The next deadline on the grid. One already past (we were not
                // scheduled) is not made up for with a burst: the next beat goes
                // at once, then the grid resumes.
                let now = Instant::now();
                while next <= now {
                    next += self.p.interval;
                }
            }
            // Sleep until the next tick, the earliest silence deadline, or an
            // `advertise` / `watch`.
            let until = match self.watch_silence() {
                Some(at) => {
                    let now = monotonic();
                    next.min(Instant::now() + at.saturating_sub(now))
                }
                None => next,
            };
            while let Err(TimedWaitError::Interrupted) =
                self.cell.wake.wait_bitset_until(woken, u32::MAX, until)
            {}
        }
    }

    /// Reads the watched entries' arrival times: wakes the controller once per
    /// watch generation if one has been silent for more than dead-after, and
    /// returns the earliest deadline still ahead (CLOCK_MONOTONIC).
    fn watch_silence(&mut self) -> Option<Duration> {
        let gen = self.cell.watch_gen.load(SeqCst);
        if gen != self.watch_gen {
            self.watch_gen = gen;
            self.reported = false;
        }
        let n = self.cell.watch_len.load(SeqCst);
        let now = monotonic();
        let mut earliest: Option<Duration> = None;
        let mut silent = false;
        for w in &self.cell.watch[..n.min(WATCH_MAX)] {
            let (link, slot) = unpack_watch(w.load(SeqCst));
            let Some(seen) = self.links.get(link).map(|l| &l.seen) else {
                continue;
            };
            let last = seen.read(slot as usize).last_seen_ns;
            let deadline = Duration::from_nanos(last) + self.p.dead_after;
            if now > deadline {
                silent = true;
            } else {
                let at = deadline + Duration::from_micros(1);
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
        }
        if silent && !self.reported {
            self.reported = true;
            self.cell.silent.notify_one();
        }
        earliest
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
        let seq = self.seq.tick();
        if now.saturating_sub(self.turned) >= 2 * self.p.dead_after {
            self.recent = [self.recent[1], seq - 1];
            self.turned = now;
        }
        // Never name ourselves a group's holder unless this message claims
        // it (a leave, or a view older than the advert).
        let mut groups = [Group::default(); GROUPS];
        let mut holders = [0; GROUPS];
        for g in 0..GROUPS {
            groups[g] = unpack_group(self.cell.groups[g].load(SeqCst));
            if !a.holds_vip {
                groups[g].flags &= !GROUP_HOLDS;
            }
            let h = self.cell.holders[g].load(SeqCst);
            let claims = groups[g].flags & GROUP_HOLDS != 0;
            holders[g] = if h == self.seq.node_id && !claims {
                0
            } else {
                h
            };
        }
        let says = Says {
            msg_type: msg,
            state: a.state,
            holds_vip: a.holds_vip,
            reaches_ping: a.reaches_ping,
            groups,
            holders,
            heard: self.cell.heard.load(SeqCst),
        };
        self.seq.say(&says);
        let sent = Sent {
            session: self.seq.session,
            seq,
            recent_lo: self.recent[0],
        };
        let seq = &self.seq;
        for l in &mut self.links {
            // Before the send: the answer to it may come back at once.
            if let Some(m) = &mut l.sent {
                m.set(sent);
            }
            let seen = &l.seen;
            l.sender.send(|d| {
                let s = seen.read(d.slot as usize);
                seq.message(&says, d.peer, (s.echo_session, s.echo_seq))
            });
        }
        self.cell.last_sent_ns.store(now.as_nanos() as u64, SeqCst);
        self.cell.sent.fetch_add(1, SeqCst);
        if last != 0 && msg == MsgType::Heartbeat {
            self.cell.gaps.record(silent);
        }
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
/// (the process-wide `--realtime` setup already logged why). Reset on fork,
/// as the controller's (main.rs): nothing started from here inherits it.
fn realtime_thread() {
    let _ = set_scheduler(
        libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK,
        SENDER_PRIORITY,
    );
}

/// sched_setscheduler(2) on the calling thread (pid 0 is the caller on Linux):
/// `policy` (flags such as SCHED_RESET_ON_FORK or'ed in) at `priority`. libc,
/// because nix does not wrap it. Allocates nothing and is async-signal-safe,
/// so a `pre_exec` hook may call it (hooks.rs).
pub fn set_scheduler(policy: libc::c_int, priority: libc::c_int) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: the kernel only reads `param`, a valid sched_param that lives
    // across the call; no Rust memory changes.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_entries_pack_and_unpack() {
        for (link, slot) in [(0, 1), (3, u32::MAX), (WATCH_MAX, 0)] {
            assert_eq!(unpack_watch(pack_watch(link, slot)), (link, slot));
        }
    }

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
