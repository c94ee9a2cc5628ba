//! The client's probe: one ICMP echo to the VIP every period, from a raw socket in
//! the client namespace; replies are captured at layer 2 (an AF_PACKET socket) so
//! each carries the responder's MAC. Shared by the failover tests, the lab and the
//! benchmark: "failover time" is the time from a fault to the first reply from
//! the new holder's MAC.

use anyhow::{Context, Result};
use std::{
    fs::File,
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// One echo reply seen by the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    pub at: Instant,
    pub seq: u16,
    pub mac: [u8; 6],
}

/// What the probe saw.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub sent: Vec<(Instant, u16)>,
    pub replies: Vec<Reply>,
}

impl Record {
    /// The first reply from `mac` at or after `since`.
    pub fn first_from(&self, mac: [u8; 6], since: Instant) -> Option<&Reply> {
        self.replies.iter().find(|r| r.mac == mac && r.at >= since)
    }

    /// Replies from any MAC but `mac` at or after `since`.
    pub fn others_after(&self, mac: [u8; 6], since: Instant) -> usize {
        self.replies
            .iter()
            .filter(|r| r.mac != mac && r.at >= since)
            .count()
    }

    /// Longest time without any reply between `from` and `to` (both included as edges).
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let mut last = from;
        let mut gap = Duration::ZERO;
        for r in self.replies.iter().filter(|r| r.at >= from && r.at <= to) {
            gap = gap.max(r.at - last);
            last = r.at;
        }
        gap.max(to.saturating_duration_since(last))
    }
}

pub struct Probe {
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
    thread: Option<JoinHandle<Result<()>>>,
}

const ETH_P_IP: u16 = 0x0800;

impl Probe {
    /// Starts probing `target` every `period` from namespace `netns` (a name under
    /// /var/run/netns), out of interface `iface`.
    pub fn start(netns: &str, iface: &str, target: Ipv4Addr, period: Duration) -> Result<Self> {
        let ns = File::open(format!("/var/run/netns/{netns}"))
            .with_context(|| format!("netns {netns}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(Record::default()));
        let (stop2, record2, iface) = (stop.clone(), record.clone(), iface.to_string());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || -> Result<()> {
            let setup = (|| -> Result<(OwnedFd, OwnedFd)> {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                Ok((icmp_socket()?, capture_socket(&iface)?))
            })();
            let (icmp, capture) = match setup {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    return Err(e);
                }
            };
            run(&icmp, &capture, target, period, &stop2, &record2)
        });
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                stop,
                record,
                thread: Some(thread),
            }),
            Ok(Err(e)) => anyhow::bail!("probe setup: {e}"),
            Err(_) => anyhow::bail!("probe thread died"),
        }
    }

    /// A copy of what was seen so far.
    pub fn snapshot(&self) -> Record {
        self.record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops probing and returns everything seen.
    pub fn stop(mut self) -> Record {
        self.halt();
        self.snapshot()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Probes addressed at one MAC: ICMP echo requests to `target` in Ethernet frames
/// sent to `dst_mac` (whatever the client's neighbour table says), every `period`
/// for `window`, from the calling thread's namespace out of `iface` with source
/// `src_mac`/`src_ip`. Returns the times of the echo replies that came back from
/// `dst_mac`: does that host still answer for `target`?
pub fn directed_echo(
    iface: &str,
    src_mac: [u8; 6],
    src_ip: Ipv4Addr,
    dst_mac: [u8; 6],
    target: Ipv4Addr,
    period: Duration,
    window: Duration,
) -> Result<Vec<Instant>> {
    let capture = capture_socket(iface)?;
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: if_nametoindex reads a C string; socket owned at once.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    anyhow::ensure!(
        raw >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    let tx = unsafe { OwnedFd::from_raw_fd(raw) };
    let id = (std::process::id() as u16) ^ 0x6f6c;
    let mut got = Vec::new();
    let (start, mut seq, mut next) = (Instant::now(), 0u16, Instant::now());
    let mut buf = [0u8; 2048];
    while start.elapsed() < window {
        if Instant::now() >= next {
            seq = seq.wrapping_add(1);
            let icmp = echo_request(id, seq);
            let ip = ipv4_header(src_ip, target, icmp.len());
            let mut f = Vec::with_capacity(14 + 36);
            f.extend_from_slice(&dst_mac);
            f.extend_from_slice(&src_mac);
            f.extend_from_slice(&ETH_P_IP.to_be_bytes());
            f.extend_from_slice(&ip);
            f.extend_from_slice(&icmp);
            // SAFETY: sockaddr_ll zeroed then filled; the frame outlives the call.
            unsafe {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_ifindex = ifindex as i32;
                sll.sll_halen = 6;
                sll.sll_addr[..6].copy_from_slice(&dst_mac);
                libc::sendto(
                    tx.as_raw_fd(),
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
            }
            next += period;
        }
        let mut fds = [nix::poll::PollFd::new(
            capture.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1u16));
        loop {
            let n =
                unsafe { libc::recv(capture.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                break;
            }
            if let Some((_, mac)) = parse_reply(&buf[..n as usize], target, id) {
                if mac == dst_mac {
                    got.push(Instant::now());
                }
            }
        }
    }
    Ok(got)
}

/// Sends ICMPv6 echo requests to `target` every 10 ms from the calling thread's
/// namespace until one is answered (true) or `timeout` passes (false). The kernel
/// computes ICMPv6 checksums on raw sockets itself.
pub fn echo6_once(target: std::net::Ipv6Addr, timeout: Duration) -> bool {
    // SAFETY: socket(2); owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET6,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK,
            libc::IPPROTO_ICMPV6,
        )
    };
    if raw < 0 {
        return false;
    }
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut dest: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    dest.sin6_family = libc::AF_INET6 as u16;
    dest.sin6_addr.s6_addr = target.octets();
    let deadline = Instant::now() + timeout;
    let mut seq: u16 = 0;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        seq = seq.wrapping_add(1);
        let mut req = [128u8, 0, 0, 0, 0x68, 0x62, 0, 0];
        req[6..8].copy_from_slice(&seq.to_be_bytes());
        unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&dest as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as u32,
            );
        }
        std::thread::sleep(Duration::from_millis(10));
        loop {
            let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_in6>() as u32;
            let n = unsafe {
                libc::recvfrom(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_in6).cast(),
                    &mut len,
                )
            };
            if n <= 0 {
                break;
            }
            // Echo reply (129) from the target with our identifier.
            if n >= 8
                && buf[0] == 129
                && buf[4..6] == [0x68, 0x62]
                && from.sin6_addr.s6_addr == target.octets()
            {
                return true;
            }
        }
    }
    false
}

fn check(ret: i32, what: &str) -> Result<i32> {
    if ret < 0 {
        Err(std::io::Error::last_os_error()).with_context(|| what.to_string())
    } else {
        Ok(ret)
    }
}

fn icmp_socket() -> Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = check(
        unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                libc::IPPROTO_ICMP,
            )
        },
        "raw ICMP socket",
    )?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn capture_socket(iface: &str) -> Result<OwnedFd> {
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: as above; if_nametoindex reads a C string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    anyhow::ensure!(
        ifindex != 0,
        "no interface {iface} in the probe's namespace"
    );
    let fd = check(
        unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                (ETH_P_IP.to_be()) as i32,
            )
        },
        "AF_PACKET socket",
    )?;
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_IP.to_be();
    sll.sll_ifindex = ifindex as i32;
    check(
        unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        },
        "binding the capture socket",
    )?;
    Ok(fd)
}

/// An ICMP echo request carrying "hb-probe", encoded by etherparse.
fn echo_request(id: u16, seq: u16) -> [u8; 16] {
    use etherparse::{IcmpEchoHeader, Icmpv4Header, Icmpv4Type};
    const PAYLOAD: &[u8; 8] = b"hb-probe";
    let h =
        Icmpv4Header::with_checksum(Icmpv4Type::EchoRequest(IcmpEchoHeader { id, seq }), PAYLOAD);
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&h.to_bytes());
    p[8..].copy_from_slice(PAYLOAD);
    p
}

/// A 20-byte IPv4 header (TTL 64, don't fragment, ICMP) before `payload_len`
/// bytes, encoded by etherparse.
fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, payload_len: usize) -> Vec<u8> {
    let mut h = etherparse::Ipv4Header::new(
        payload_len as u16,
        64,
        etherparse::IpNumber::ICMP,
        src.octets(),
        dst.octets(),
    )
    .expect("an echo request fits in a datagram");
    h.header_checksum = h.calc_header_checksum();
    h.to_bytes().to_vec()
}

/// (seq, source MAC) of an echo reply from `target` to us, if `frame` is one.
fn parse_reply(frame: &[u8], target: Ipv4Addr, id: u16) -> Option<(u16, [u8; 6])> {
    if frame.len() < 14 + 20 + 8 || frame[12..14] != ETH_P_IP.to_be_bytes() {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[9] != 1 || ip[12..16] != target.octets() || ip.len() < ihl + 8 {
        return None;
    }
    let icmp = &ip[ihl..];
    if icmp[0] != 0 || icmp[4..6] != id.to_be_bytes() {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&frame[6..12]);
    Some((u16::from_be_bytes([icmp[6], icmp[7]]), mac))
}

fn run(
    icmp: &OwnedFd,
    capture: &OwnedFd,
    target: Ipv4Addr,
    period: Duration,
    stop: &AtomicBool,
    record: &Mutex<Record>,
) -> Result<()> {
    let id = (std::process::id() as u16) ^ 0x4842;
    let dest = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(target.octets()),
        },
        sin_zero: [0; 8],
    };
    let mut seq: u16 = 0;
    let mut next = Instant::now();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next {
            seq = seq.wrapping_add(1);
            let pkt = echo_request(id, seq);
            // A failed send (no neighbour yet, say) is just a probe with no reply.
            unsafe {
                libc::sendto(
                    icmp.as_raw_fd(),
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    &dest as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                );
            }
            record
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .sent
                .push((now, seq));
            next += period;
            if next < now {
                next = now + period; // fell behind (a stall): do not burst
            }
            // The raw socket gets a copy of every reply too: drain it.
            while unsafe { libc::recv(icmp.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) } > 0
            {
            }
        }
        let wait_ms = next
            .saturating_duration_since(Instant::now())
            .as_millis()
            .min(50) as u16;
        let mut fds = [nix::poll::PollFd::new(
            capture.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(wait_ms));
        loop {
            let n =
                unsafe { libc::recv(capture.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                break;
            }
            let at = Instant::now();
            if let Some((seq, mac)) = parse_reply(&buf[..n as usize], target, id) {
                record
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .replies
                    .push(Reply { at, seq, mac });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_and_header_are_as_before_and_verify() {
        let p = echo_request(7, 9);
        assert_eq!(
            p[..8],
            [8, 0, 0x8d, 0x48, 0, 7, 0, 9],
            "type, code, checksum, id, seq"
        );
        assert_eq!(&p[8..], b"hb-probe");
        assert_eq!(hb_user::checksum::checksum(&p), 0, "hb's checksum agrees");
        let ip = ipv4_header(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 100), 16);
        assert_eq!(
            ip[..12],
            [0x45, 0, 0, 36, 0, 0, 0x40, 0, 64, 1, ip[10], ip[11]],
            "the bytes the probe always sent"
        );
        assert_eq!(ip[12..], [10, 0, 0, 1, 10, 0, 0, 100]);
        assert_eq!(hb_user::checksum::checksum(&ip), 0, "hb's checksum agrees");
    }

    #[test]
    fn parses_only_replies_from_the_target_with_our_id() {
        let target = Ipv4Addr::new(10, 0, 0, 100);
        let mut f = vec![0u8; 14 + 20 + 16];
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 7]);
        f[12..14].copy_from_slice(&[8, 0]);
        f[14] = 0x45;
        f[14 + 9] = 1;
        f[14 + 12..14 + 16].copy_from_slice(&target.octets());
        f[34] = 0; // echo reply
        f[38..40].copy_from_slice(&5u16.to_be_bytes());
        f[40..42].copy_from_slice(&3u16.to_be_bytes());
        assert_eq!(parse_reply(&f, target, 5), Some((3, [2, 0, 0, 0, 0, 7])));
        assert_eq!(parse_reply(&f, target, 6), None, "other id");
        assert_eq!(
            parse_reply(&f, Ipv4Addr::new(10, 0, 0, 1), 5),
            None,
            "other source"
        );
        f[34] = 8;
        assert_eq!(parse_reply(&f, target, 5), None, "a request is not a reply");
    }

    #[test]
    fn record_arithmetic() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let r = Record {
            sent: vec![],
            replies: vec![
                Reply {
                    at: t0 + ms(1),
                    seq: 1,
                    mac: [1; 6],
                },
                Reply {
                    at: t0 + ms(2),
                    seq: 2,
                    mac: [1; 6],
                },
                Reply {
                    at: t0 + ms(40),
                    seq: 40,
                    mac: [2; 6],
                },
            ],
        };
        assert_eq!(r.first_from([2; 6], t0).unwrap().seq, 40);
        assert_eq!(r.others_after([2; 6], t0 + ms(2)), 1);
        assert_eq!(r.longest_gap(t0, t0 + ms(50)), ms(38));
    }
}
