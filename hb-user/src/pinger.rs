//! Quorum by ping targets (like Heartbeat's ping/ipfail): one ICMP or ICMPv6
//! echo to every target per heartbeat interval from raw sockets; a target is
//! reachable while the newest request it answered is at most dead-after old.
//!
//! Only answers to our own recent requests count: a reply must carry our
//! identifier, the sequence number of one of the last [`WINDOW`] requests and,
//! as its whole payload, this run's random token, so an off-path sender cannot
//! keep an isolated node out of FAULT. Everything else is counted and ignored.
//! A flood cannot hold the controller's one thread: a socket filter drops in
//! the kernel every ICMP message but echo replies with our identifier, the
//! receive buffer is small (a flood overflows it in the kernel), and one
//! wake-up reads at most [`BATCH`] datagrams. The sockets never block.

use crate::{checksum::checksum, clock::monotonic};
use anyhow::{Context, Result};
use nix::sys::socket::{
    recvfrom, sendto, setsockopt, socket, sockopt::RcvBuf, AddressFamily, MsgFlags, SockFlag,
    SockProtocol, SockType, SockaddrIn, SockaddrIn6,
};
use socket2::{SockFilter, SockRef};
use std::{
    io,
    net::{IpAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsRawFd, OwnedFd},
    time::Duration,
};
use tokio::io::unix::AsyncFd;

/// Bytes of the per-run token, the whole payload of our requests.
pub const TOKEN_LEN: usize = 16;
pub type Token = [u8; TOKEN_LEN];
/// Requests a reply may answer: the last this many sent. Replies to older ones
/// are refused (a late reply says nothing about now).
pub const WINDOW: usize = 64;
/// Datagrams read per wake-up at most; the rest waits for the next one.
pub const BATCH: usize = 64;
/// Receive buffer asked for (the kernel doubles it): some dozens of replies,
/// so a flood is dropped by the kernel instead of queued for us.
const RCVBUF: usize = 32 * 1024;
/// What we read at most of one datagram: a reply is 44 bytes with its IPv4
/// header; a longer one is cut and then fails the checks.
const BUF: usize = 512;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Raw IPv4 sockets receive the IP header before the ICMP message.
    V4,
    /// Raw ICMPv6 sockets receive the ICMPv6 message alone.
    V6,
}

/// What a reply must echo: our identifier, a recent sequence number, our token.
#[derive(Clone, Debug)]
pub struct Ours {
    pub id: u16,
    pub token: Token,
    /// The last sequence number sent.
    seq: u16,
    /// (seq, send time) of each recent request, at seq % WINDOW.
    sent: [Option<(u16, Duration)>; WINDOW],
}

impl Ours {
    pub fn new(id: u16, token: Token) -> Self {
        Self {
            id,
            token,
            seq: 0,
            sent: [None; WINDOW],
        }
    }

    /// The next request's sequence number, remembered as sent at `at`.
    pub fn next_seq(&mut self, at: Duration) -> u16 {
        self.seq = self.seq.wrapping_add(1);
        self.sent[usize::from(self.seq) % WINDOW] = Some((self.seq, at));
        self.seq
    }

    /// When request `seq` was sent, if it is still in the window.
    pub fn sent_at(&self, seq: u16) -> Option<Duration> {
        match self.sent[usize::from(seq) % WINDOW] {
            Some((s, at)) if s == seq => Some(at),
            _ => None,
        }
    }
}

/// Why a datagram is not an answer to us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Too short, not ICMP, or a bad checksum.
    Malformed,
    /// Not an echo reply, or another program's (another identifier).
    NotOurs,
    /// Our identifier, but no request in the window has its sequence number:
    /// late, replayed or forged.
    UnknownSeq,
    /// Our identifier and a recent sequence number, but not our token: forged.
    BadToken,
}

/// The send time of the request that `datagram` (as a raw socket of `family`
/// returns it) answers, or why it answers none of ours.
pub fn judge(family: Family, datagram: &[u8], ours: &Ours) -> Result<Duration, Reject> {
    let (icmp, reply) = match family {
        Family::V4 => {
            let first = *datagram.first().ok_or(Reject::Malformed)?;
            let ihl = usize::from(first & 0x0f) * 4;
            if first >> 4 != 4 || ihl < 20 || datagram.get(9) != Some(&1) {
                return Err(Reject::Malformed);
            }
            let icmp = datagram.get(ihl..).ok_or(Reject::Malformed)?;
            // Raw IPv4 sockets get datagrams before ICMP checks the checksum;
            // raw ICMPv6 sockets only get those whose checksum holds.
            if checksum(icmp) != 0 {
                return Err(Reject::Malformed);
            }
            (icmp, ICMP_ECHO_REPLY)
        }
        Family::V6 => (datagram, ICMPV6_ECHO_REPLY),
    };
    if icmp.len() < 8 {
        return Err(Reject::Malformed);
    }
    if icmp[0] != reply || icmp[1] != 0 || icmp[4..6] != ours.id.to_be_bytes() {
        return Err(Reject::NotOurs);
    }
    let sent_at = ours
        .sent_at(u16::from_be_bytes([icmp[6], icmp[7]]))
        .ok_or(Reject::UnknownSeq)?;
    if icmp[8..] != ours.token {
        return Err(Reject::BadToken);
    }
    Ok(sent_at)
}

/// An echo request: type, code, checksum, id, seq, then the token. The
/// kernel fills in the ICMPv6 checksum (it covers a pseudo-header).
pub fn echo_request(family: Family, ours: &Ours, seq: u16) -> [u8; 8 + TOKEN_LEN] {
    let mut p = [0u8; 8 + TOKEN_LEN];
    p[0] = match family {
        Family::V4 => ICMP_ECHO_REQUEST,
        Family::V6 => ICMPV6_ECHO_REQUEST,
    };
    p[4..6].copy_from_slice(&ours.id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..].copy_from_slice(&ours.token);
    if family == Family::V4 {
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// The classic BPF program that passes only echo replies with identifier
/// `id`, as iputils' ping installs: the rest is dropped before it is queued.
/// On a raw IPv4 socket the packet starts at the IP header, on a raw ICMPv6
/// socket at the ICMPv6 header.
fn filter(family: Family, id: u16) -> Vec<SockFilter> {
    use libc::BPF_RET;
    use libc::{BPF_ABS, BPF_B, BPF_H, BPF_IND, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_LDX, BPF_MSH};
    let op = |code: u32| code as u16;
    let pass = SockFilter::new(op(BPF_RET | BPF_K), 0, 0, u32::MAX);
    let drop = SockFilter::new(op(BPF_RET | BPF_K), 0, 0, 0);
    match family {
        Family::V4 => vec![
            // X = the IP header's length.
            SockFilter::new(op(BPF_LDX | BPF_B | BPF_MSH), 0, 0, 0),
            SockFilter::new(op(BPF_LD | BPF_B | BPF_IND), 0, 0, 0),
            SockFilter::new(op(BPF_JMP | BPF_JEQ | BPF_K), 0, 3, ICMP_ECHO_REPLY.into()),
            SockFilter::new(op(BPF_LD | BPF_H | BPF_IND), 0, 0, 4),
            SockFilter::new(op(BPF_JMP | BPF_JEQ | BPF_K), 0, 1, id.into()),
            pass,
            drop,
        ],
        Family::V6 => vec![
            SockFilter::new(op(BPF_LD | BPF_B | BPF_ABS), 0, 0, 0),
            SockFilter::new(
                op(BPF_JMP | BPF_JEQ | BPF_K),
                0,
                3,
                ICMPV6_ECHO_REPLY.into(),
            ),
            SockFilter::new(op(BPF_LD | BPF_H | BPF_ABS), 0, 0, 4),
            SockFilter::new(op(BPF_JMP | BPF_JEQ | BPF_K), 0, 1, id.into()),
            pass,
            drop,
        ],
    }
}

/// A raw, non-blocking ICMP (or ICMPv6) socket that receives only echo
/// replies with our identifier, into a small buffer.
fn open(family: Family, id: u16) -> Result<AsyncFd<OwnedFd>> {
    let (af, proto, name) = match family {
        Family::V4 => (AddressFamily::Inet, SockProtocol::Icmp, "ICMP"),
        Family::V6 => (AddressFamily::Inet6, SockProtocol::IcmpV6, "ICMPv6"),
    };
    let fd = socket(
        af,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        proto,
    )
    .with_context(|| format!("opening a raw {name} socket for --ping"))?;
    setsockopt(&fd, RcvBuf, &RCVBUF)
        .with_context(|| format!("sizing the {name} ping socket's buffer"))?;
    // Datagrams queued before the filter was attached are judged as usual.
    SockRef::from(&fd)
        .attach_filter(&filter(family, id))
        .with_context(|| format!("attaching the {name} ping socket's filter"))?;
    // SAFETY: the AsyncFd owns `fd`, which nothing replaces or closes while registered.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the {name} ping socket: {e}"))
}

/// Counts over this run for one target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Replies to our requests.
    pub accepted: u64,
    /// Datagrams from its address that passed the kernel's filter but answer
    /// none of our requests (a wrong sequence number or token, malformed).
    pub rejected: u64,
}

/// One target as the status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetReport {
    pub addr: IpAddr,
    /// Since the newest request it answered was sent (None: never answered).
    pub ago: Option<Duration>,
    pub counts: Counts,
}

struct Target {
    addr: IpAddr,
    /// The send time of the newest request it answered.
    last: Option<Duration>,
    counts: Counts,
}

/// The pinger's state apart from its sockets: what was sent, what came back.
struct Book {
    ours: Ours,
    targets: Vec<Target>,
    /// Rejected datagrams from any address, targets' included.
    rejected: u64,
}

impl Book {
    fn record(&mut self, family: Family, datagram: &[u8], from: IpAddr) {
        let verdict = judge(family, datagram, &self.ours);
        match (verdict, self.targets.iter_mut().find(|t| t.addr == from)) {
            (Ok(sent_at), Some(t)) => {
                t.last = t.last.max(Some(sent_at));
                t.counts.accepted += 1;
            }
            (Err(_), Some(t)) => {
                t.counts.rejected += 1;
                self.rejected += 1;
            }
            // Even a well-formed answer from an address we do not ping.
            (_, None) => self.rejected += 1,
        }
    }
}

/// Reads with `read` and records at most [`BATCH`] datagrams. Ok(true): it
/// stopped at the bound, more may be queued; Ok(false): the socket is empty.
fn drain(
    book: &mut Book,
    family: Family,
    mut read: impl FnMut(&mut [u8]) -> io::Result<(usize, IpAddr)>,
) -> io::Result<bool> {
    let mut buf = [0u8; BUF];
    for _ in 0..BATCH {
        match read(&mut buf) {
            Ok((n, from)) => book.record(family, &buf[..n.min(BUF)], from),
            // Also what a raw ICMPv6 socket says when the datagram it was
            // about to return failed its checksum (the kernel dropped it): the
            // rest is read when the next datagram arrives.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// One datagram and its source from a raw socket of `family`.
fn recv(fd: &OwnedFd, family: Family, buf: &mut [u8]) -> io::Result<(usize, IpAddr)> {
    let from = match family {
        Family::V4 => {
            let (n, from) = recvfrom::<SockaddrIn>(fd.as_raw_fd(), buf)?;
            (n, from.map(|a| IpAddr::V4(a.ip())))
        }
        Family::V6 => {
            let (n, from) = recvfrom::<SockaddrIn6>(fd.as_raw_fd(), buf)?;
            (n, from.map(|a| IpAddr::V6(a.ip())))
        }
    };
    match from {
        (n, Some(a)) => Ok((n, a)),
        (_, None) => Err(io::Error::other("a datagram without a source address")),
    }
}

pub struct Pinger {
    v4: Option<AsyncFd<OwnedFd>>,
    v6: Option<AsyncFd<OwnedFd>>,
    book: Book,
}

impl Pinger {
    pub fn new(targets: &[IpAddr]) -> Result<Self> {
        let mut token = [0u8; TOKEN_LEN];
        getrandom::fill(&mut token)
            .context("drawing the ping token from the kernel's random source")?;
        let id = getrandom::u32().context("drawing the ping identifier")? as u16;
        let wants = |v6: bool| targets.iter().any(|t| t.is_ipv6() == v6);
        Ok(Self {
            v4: wants(false).then(|| open(Family::V4, id)).transpose()?,
            v6: wants(true).then(|| open(Family::V6, id)).transpose()?,
            book: Book {
                ours: Ours::new(id, token),
                targets: targets
                    .iter()
                    .map(|&addr| Target {
                        addr,
                        last: None,
                        counts: Counts::default(),
                    })
                    .collect(),
                rejected: 0,
            },
        })
    }

    /// Sends one echo request to every target. A failed send (no route, a
    /// full buffer) is an unanswered ping.
    pub fn send(&mut self) {
        let seq = self.book.ours.next_seq(monotonic());
        for t in &self.book.targets {
            let _ = match (t.addr, &self.v4, &self.v6) {
                (IpAddr::V4(a), Some(fd), _) => sendto(
                    fd.as_raw_fd(),
                    &echo_request(Family::V4, &self.book.ours, seq),
                    &SockaddrIn::from(SocketAddrV4::new(a, 0)),
                    MsgFlags::MSG_DONTWAIT,
                ),
                (IpAddr::V6(a), _, Some(fd)) => sendto(
                    fd.as_raw_fd(),
                    &echo_request(Family::V6, &self.book.ours, seq),
                    &SockaddrIn6::from(SocketAddrV6::new(a, 0, 0, 0)),
                    MsgFlags::MSG_DONTWAIT,
                ),
                _ => continue, // no socket of its family: cannot happen
            };
        }
    }

    /// Waits until a socket is readable, then records at most [`BATCH`]
    /// datagrams from it. When more are queued the socket stays readable, so
    /// the controller's next turn of its loop reads on.
    pub async fn receive(&mut self) -> Result<()> {
        let Self { v4, v6, book } = self;
        let (mut guard, family) = match (v4.as_ref(), v6.as_ref()) {
            (Some(a), Some(b)) => tokio::select! {
                g = a.readable() => (g?, Family::V4),
                g = b.readable() => (g?, Family::V6),
            },
            (Some(a), None) => (a.readable().await?, Family::V4),
            (None, Some(b)) => (b.readable().await?, Family::V6),
            (None, None) => std::future::pending().await,
        };
        // try_io clears the readiness when a read would block.
        let drained = drain(book, family, |buf| {
            guard
                .try_io(|fd| recv(fd.get_ref(), family, buf))
                .unwrap_or_else(|_| Err(io::ErrorKind::WouldBlock.into()))
        });
        if drained.is_err() {
            // Wait for the next event rather than spin on a failing socket.
            guard.clear_ready();
        }
        drained.map(|_| ()).context("reading the ping socket")
    }

    /// True when some target answered within `window` of `now`.
    pub fn reachable(&self, now: Duration, window: Duration) -> bool {
        self.book
            .targets
            .iter()
            .any(|t| t.last.is_some_and(|l| now.saturating_sub(l) <= window))
    }

    /// When reachability runs out if no reply comes first: the newest
    /// answered request plus `window`; None when no target ever answered.
    pub fn reach_ends(&self, window: Duration) -> Option<Duration> {
        self.book
            .targets
            .iter()
            .filter_map(|t| t.last)
            .max()
            .map(|l| l + window)
    }

    /// Each target, the time since the newest request it answered, its counts.
    pub fn report(&self, now: Duration) -> Vec<TargetReport> {
        self.book
            .targets
            .iter()
            .map(|t| TargetReport {
                addr: t.addr,
                ago: t.last.map(|l| now.saturating_sub(l)),
                counts: t.counts,
            })
            .collect()
    }

    /// Datagrams rejected over this run, from any address.
    pub fn rejected(&self) -> u64 {
        self.book.rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const TOKEN: Token = *b"0123456789abcdef";
    const MS: Duration = Duration::from_millis(1);

    fn ours() -> Ours {
        let mut o = Ours::new(0x1234, TOKEN);
        for i in 1..=5 {
            o.next_seq(MS * i); // seqs 1..=5 sent at 1..=5 ms
        }
        o
    }

    /// An echo reply as a raw IPv4 socket returns it: header, then ICMP with
    /// a correct checksum, echoing `payload`.
    fn reply_v4(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut icmp = vec![ICMP_ECHO_REPLY, 0, 0, 0];
        icmp.extend_from_slice(&id.to_be_bytes());
        icmp.extend_from_slice(&seq.to_be_bytes());
        icmp.extend_from_slice(payload);
        let sum = checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut d = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 9, 10, 0, 0, 1,
        ];
        let len = (d.len() + icmp.len()) as u16;
        d[2..4].copy_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&icmp);
        d
    }

    fn reply_v6(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut icmp = vec![ICMPV6_ECHO_REPLY, 0, 0, 0];
        icmp.extend_from_slice(&id.to_be_bytes());
        icmp.extend_from_slice(&seq.to_be_bytes());
        icmp.extend_from_slice(payload);
        icmp
    }

    #[test]
    fn a_reply_to_a_recent_request_with_our_token_is_accepted() {
        let o = ours();
        assert_eq!(
            judge(Family::V4, &reply_v4(0x1234, 3, &TOKEN), &o),
            Ok(MS * 3)
        );
        assert_eq!(
            judge(Family::V6, &reply_v6(0x1234, 5, &TOKEN), &o),
            Ok(MS * 5)
        );
    }

    #[test]
    fn the_token_is_compared_in_full() {
        let o = ours();
        for family in [Family::V4, Family::V6] {
            let build = |p: &[u8]| match family {
                Family::V4 => reply_v4(0x1234, 3, p),
                Family::V6 => reply_v6(0x1234, 3, p),
            };
            for i in 0..TOKEN_LEN {
                let mut t = TOKEN;
                t[i] ^= 0x01;
                assert_eq!(
                    judge(family, &build(&t), &o),
                    Err(Reject::BadToken),
                    "byte {i}"
                );
            }
            assert_eq!(
                judge(family, &build(&TOKEN[..15]), &o),
                Err(Reject::BadToken)
            );
            let longer = [&TOKEN[..], &[0]].concat();
            assert_eq!(judge(family, &build(&longer), &o), Err(Reject::BadToken));
            assert_eq!(judge(family, &build(&[]), &o), Err(Reject::BadToken));
        }
    }

    #[test]
    fn only_sequence_numbers_in_the_window_count() {
        let mut o = ours();
        let r = |seq| judge(Family::V4, &reply_v4(0x1234, seq, &TOKEN), &o);
        assert_eq!(r(0), Err(Reject::UnknownSeq), "never sent");
        assert_eq!(r(6), Err(Reject::UnknownSeq), "not sent yet");
        assert_eq!(
            r(1 + WINDOW as u16),
            Err(Reject::UnknownSeq),
            "same slot, not sent"
        );
        // WINDOW more requests push seq 1..=5 out.
        for i in 0..WINDOW as u32 {
            o.next_seq(MS * (10 + i));
        }
        let r = |seq| judge(Family::V4, &reply_v4(0x1234, seq, &TOKEN), &o);
        assert_eq!(r(5), Err(Reject::UnknownSeq), "fell out of the window");
        assert_eq!(r(6), Ok(MS * 10), "the oldest still in it");
        assert_eq!(
            r(5 + WINDOW as u16),
            Ok(MS * (10 + WINDOW as u32 - 1)),
            "the newest"
        );
        // Wrapping around u16 keeps working.
        let mut o = Ours::new(1, TOKEN);
        for _ in 0..u16::MAX {
            o.next_seq(MS);
        }
        let last = o.next_seq(MS * 2);
        assert_eq!(last, 0);
        assert_eq!(judge(Family::V6, &reply_v6(1, 0, &TOKEN), &o), Ok(MS * 2));
        assert_eq!(
            judge(Family::V6, &reply_v6(1, u16::MAX, &TOKEN), &o),
            Ok(MS)
        );
    }

    #[test]
    fn other_identifiers_types_and_malformed_datagrams_are_refused() {
        let o = ours();
        assert_eq!(
            judge(Family::V4, &reply_v4(0x4321, 3, &TOKEN), &o),
            Err(Reject::NotOurs),
            "another program's ping"
        );
        let mut req = reply_v4(0x1234, 3, &TOKEN);
        req[20] = ICMP_ECHO_REQUEST;
        req[22..24].fill(0);
        let sum = checksum(&req[20..]);
        req[22..24].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(
            judge(Family::V4, &req, &o),
            Err(Reject::NotOurs),
            "a request"
        );
        let mut v6 = reply_v6(0x1234, 3, &TOKEN);
        v6[0] = ICMPV6_ECHO_REQUEST;
        assert_eq!(judge(Family::V6, &v6, &o), Err(Reject::NotOurs));
        v6[0] = ICMPV6_ECHO_REPLY;
        v6[1] = 1;
        assert_eq!(judge(Family::V6, &v6, &o), Err(Reject::NotOurs), "code 1");

        let good = reply_v4(0x1234, 3, &TOKEN);
        let mut bad_sum = good.clone();
        bad_sum[22] ^= 0xff;
        assert_eq!(
            judge(Family::V4, &bad_sum, &o),
            Err(Reject::Malformed),
            "checksum"
        );
        let mut tcp = good.clone();
        tcp[9] = 6;
        assert_eq!(
            judge(Family::V4, &tcp, &o),
            Err(Reject::Malformed),
            "not ICMP"
        );
        let mut v6_hdr = good.clone();
        v6_hdr[0] = 0x65;
        assert_eq!(
            judge(Family::V4, &v6_hdr, &o),
            Err(Reject::Malformed),
            "version"
        );
        let mut long_ihl = good.clone();
        long_ihl[0] = 0x4f;
        assert_eq!(
            judge(Family::V4, &long_ihl, &o),
            Err(Reject::Malformed),
            "IHL past the end"
        );
        for n in [0, 1, 10, 20, 27] {
            assert_eq!(
                judge(Family::V4, &good[..n], &o),
                Err(Reject::Malformed),
                "{n} bytes"
            );
        }
        for n in [0, 4, 7] {
            assert_eq!(
                judge(Family::V6, &v6[..n], &o),
                Err(Reject::Malformed),
                "{n} bytes"
            );
        }
    }

    #[test]
    fn requests_carry_our_id_seq_and_token_and_verify() {
        let o = ours();
        let p = echo_request(Family::V4, &o, 7);
        assert_eq!(p[..2], [8, 0]);
        assert_eq!(p[4..8], [0x12, 0x34, 0, 7]);
        assert_eq!(p[8..], TOKEN);
        assert_eq!(checksum(&p), 0, "checksum verifies");
        let p = echo_request(Family::V6, &o, 7);
        assert_eq!(
            p[..4],
            [128, 0, 0, 0],
            "the kernel fills the ICMPv6 checksum"
        );
        assert_eq!(p[4..8], [0x12, 0x34, 0, 7]);
    }

    fn book(targets: &[IpAddr]) -> Book {
        Book {
            ours: ours(),
            targets: targets
                .iter()
                .map(|&addr| Target {
                    addr,
                    last: None,
                    counts: Counts::default(),
                })
                .collect(),
            rejected: 0,
        }
    }

    #[test]
    fn replies_count_for_their_target_only_and_rejections_are_counted() {
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
        let b = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9));
        let stranger = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 66));
        let mut k = book(&[a, b]);
        k.record(Family::V4, &reply_v4(0x1234, 2, &TOKEN), a);
        k.record(Family::V4, &reply_v4(0x1234, 1, &TOKEN), a); // older: last stays
        k.record(Family::V4, &reply_v4(0x1234, 4, &[0; 16]), a); // forged
        k.record(Family::V4, &reply_v4(0x1234, 5, &TOKEN), stranger);
        assert_eq!(k.targets[0].last, Some(MS * 2));
        assert_eq!(
            k.targets[0].counts,
            Counts {
                accepted: 2,
                rejected: 1
            }
        );
        assert_eq!(k.targets[1].last, None);
        assert_eq!(k.rejected, 2, "the forged one and the stranger's");
    }

    #[test]
    fn a_wake_up_reads_at_most_a_batch() {
        let target = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
        let mut k = book(&[target]);
        let flood = reply_v4(0x1234, 3, &[0xee; 16]);
        let mut reads = 0;
        let more = drain(&mut k, Family::V4, |buf| {
            reads += 1;
            buf[..flood.len()].copy_from_slice(&flood);
            Ok((flood.len(), target))
        });
        assert!(more.unwrap(), "stopped at the bound, not at the end");
        assert_eq!((reads, k.rejected), (BATCH, BATCH as u64));
        // An empty socket ends the batch early, an interrupted read is
        // retried, other errors are returned.
        let mut results = vec![
            Err(io::ErrorKind::WouldBlock.into()),
            Err(io::ErrorKind::Interrupted.into()),
        ];
        assert!(!drain(&mut k, Family::V6, |_| results.pop().unwrap()).unwrap());
        assert!(results.is_empty());
        let e = drain(&mut k, Family::V4, |_| {
            Err(io::Error::from_raw_os_error(libc::EPERM))
        });
        assert!(e.is_err());
        assert_eq!(k.rejected, BATCH as u64, "nothing more recorded");
    }
}
