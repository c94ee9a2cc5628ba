//! Who holds the VIP, over time, without polling: one thread per node namespace
//! listens to the kernel's address notifications (rtnetlink RTM_NEWADDR and
//! RTM_DELADDR), so every take and release is timestamped to within a wakeup and
//! the bench adds no load while it watches. `analyse` turns the events of a
//! window into false failovers and seconds with two holders (pure).

use anyhow::{Context, Result};
use std::{
    fs::File,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Node `node` took (`held`) or released the VIP at `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipEvent {
    pub at: Instant,
    pub node: u32,
    pub held: bool,
}

pub struct VipWatch {
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<VipEvent>>>,
    threads: Vec<JoinHandle<()>>,
}

const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

/// For each IPv4 address message about `vip` in a netlink datagram: true when
/// added, false when removed.
pub fn parse_addr_messages(buf: &[u8], vip: Ipv4Addr) -> Vec<bool> {
    let u16_at = |b: &[u8], i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        let kind = u16_at(buf, off + 4);
        // nlmsghdr (16) + ifaddrmsg (8: family, prefixlen, flags, scope, index).
        if (kind == RTM_NEWADDR || kind == RTM_DELADDR)
            && len >= 24
            && buf[off + 16] == libc::AF_INET as u8
        {
            let (mut local, mut address) = (None, None);
            let mut a = off + 24;
            while a + 4 <= off + len {
                let alen = u16_at(buf, a) as usize;
                let atype = u16_at(buf, a + 2);
                if alen < 4 || a + alen > off + len {
                    break;
                }
                if alen == 8 {
                    let ip = Ipv4Addr::new(buf[a + 4], buf[a + 5], buf[a + 6], buf[a + 7]);
                    match atype {
                        IFA_LOCAL => local = Some(ip),
                        IFA_ADDRESS => address = Some(ip),
                        _ => {}
                    }
                }
                a += (alen + 3) & !3;
            }
            if local.or(address) == Some(vip) {
                out.push(kind == RTM_NEWADDR);
            }
        }
        off += (len + 3) & !3;
    }
    out
}

fn netlink_socket() -> Result<OwnedFd> {
    // SAFETY: socket(2) and bind(2) on a zeroed sockaddr_nl; the fd is owned at once.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        anyhow::ensure!(
            fd >= 0,
            "netlink socket: {}",
            std::io::Error::last_os_error()
        );
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sa: libc::sockaddr_nl = std::mem::zeroed();
        sa.nl_family = libc::AF_NETLINK as u16;
        sa.nl_groups = RTMGRP_IPV4_IFADDR;
        let r = libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        );
        anyhow::ensure!(r == 0, "netlink bind: {}", std::io::Error::last_os_error());
        Ok(fd)
    }
}

impl VipWatch {
    /// Watches `vip` in each `(node id, namespace)`; returns once every listener
    /// is subscribed, so no change after this call is missed.
    pub fn start(nodes: &[(u32, String)], vip: Ipv4Addr) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for (node, ns) in nodes.iter().cloned() {
            let file = File::open(format!("/var/run/netns/{ns}")).context("netns")?;
            let (stop, events, ready) = (stop.clone(), events.clone(), ready_tx.clone());
            threads.push(std::thread::spawn(move || {
                let fd = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(anyhow::Error::from)
                    .and_then(|_| netlink_socket());
                let fd = match fd {
                    Ok(fd) => {
                        let _ = ready.send(Ok(()));
                        fd
                    }
                    Err(e) => {
                        let _ = ready.send(Err(format!("{e:#}")));
                        return;
                    }
                };
                let mut buf = vec![0u8; 64 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    let mut pfd = libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: poll on one valid pollfd; recv into our buffer.
                    if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
                        continue;
                    }
                    let n = unsafe {
                        libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                    };
                    let at = Instant::now();
                    if n <= 0 {
                        continue;
                    }
                    let found = parse_addr_messages(&buf[..n as usize], vip);
                    if !found.is_empty() {
                        let mut ev = events.lock().unwrap_or_else(|e| e.into_inner());
                        ev.extend(found.into_iter().map(|held| VipEvent { at, node, held }));
                    }
                }
            }));
        }
        drop(ready_tx);
        for _ in 0..nodes.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => anyhow::bail!("VIP watch: {e}"),
                Err(_) => anyhow::bail!("VIP watch thread died"),
            }
        }
        Ok(Self {
            stop,
            events,
            threads,
        })
    }

    /// Everything seen so far.
    pub fn events(&self) -> Vec<VipEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn stop(mut self) -> Vec<VipEvent> {
        self.halt();
        self.events()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for VipWatch {
    fn drop(&mut self) {
        self.halt();
    }
}

/// What happened to the VIP in a window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WindowStats {
    /// Times a node other than the expected holder took the VIP.
    pub takeovers: usize,
    /// Times the expected holder released it.
    pub releases: usize,
    /// Time with two or more holders.
    pub double: Duration,
    /// Time with no holder.
    pub none: Duration,
}

impl WindowStats {
    /// Any change at all: a false failover when no fault was injected.
    pub fn changes(&self) -> usize {
        self.takeovers + self.releases
    }
}

/// Replays `events` over [`from`, `to`] starting from the holders `initial` (as
/// seen at `from`). Repeated notifications for a state already known count once.
pub fn analyse(
    initial: &[u32],
    events: &[VipEvent],
    from: Instant,
    to: Instant,
    expected: u32,
) -> WindowStats {
    let mut held: Vec<u32> = initial.to_vec();
    let mut ev: Vec<VipEvent> = events
        .iter()
        .copied()
        .filter(|e| e.at >= from && e.at <= to)
        .collect();
    ev.sort_by_key(|e| e.at);
    let mut s = WindowStats::default();
    let mut last = from;
    let account = |held: &[u32], until: Instant, s: &mut WindowStats, last: &mut Instant| {
        let span = until.saturating_duration_since(*last);
        match held.len() {
            0 => s.none += span,
            1 => {}
            _ => s.double += span,
        }
        *last = until;
    };
    for e in ev {
        account(&held, e.at, &mut s, &mut last);
        let had = held.contains(&e.node);
        if e.held && !had {
            held.push(e.node);
            if e.node != expected {
                s.takeovers += 1;
            }
        } else if !e.held && had {
            held.retain(|n| *n != e.node);
            if e.node == expected {
                s.releases += 1;
            }
        }
    }
    account(&held, to, &mut s, &mut last);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, ip: [u8; 4]) -> Vec<u8> {
        let mut m = Vec::new();
        let len: u32 = 16 + 8 + 8 + 8;
        m.extend(len.to_ne_bytes());
        m.extend(kind.to_ne_bytes());
        m.extend([0u8; 10]); // flags, seq, pid
        m.extend([libc::AF_INET as u8, 24, 0, 0, 2, 0, 0, 0]);
        for t in [IFA_ADDRESS, IFA_LOCAL] {
            m.extend(8u16.to_ne_bytes());
            m.extend(t.to_ne_bytes());
            m.extend(ip);
        }
        m
    }

    #[test]
    fn parses_address_notifications_for_the_vip_only() {
        let vip = Ipv4Addr::new(10, 203, 0, 100);
        let mut buf = message(RTM_NEWADDR, vip.octets());
        buf.extend(message(RTM_NEWADDR, [10, 203, 0, 1]));
        buf.extend(message(RTM_DELADDR, vip.octets()));
        buf.extend(message(99, vip.octets()));
        assert_eq!(parse_addr_messages(&buf, vip), vec![true, false]);
        assert!(parse_addr_messages(&buf[..10], vip).is_empty());
    }

    #[test]
    fn counts_takeovers_and_double_holding() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let ev = |t: u64, node, held| VipEvent {
            at: t0 + ms(t),
            node,
            held,
        };
        let events = [
            ev(100, 2, true),  // node 2 takes it: two holders
            ev(100, 2, true),  // repeated notification
            ev(400, 2, false), // and gives it back
            ev(500, 1, false), // node 1 drops it: none
            ev(600, 1, true),
            ev(2000, 2, true), // after the window
        ];
        let s = analyse(&[1], &events, t0, t0 + ms(1000), 1);
        assert_eq!(s.takeovers, 1);
        assert_eq!(s.releases, 1);
        assert_eq!(s.double, ms(300));
        assert_eq!(s.none, ms(100));
        assert_eq!(s.changes(), 2);
        let quiet = analyse(&[1], &[], t0, t0 + ms(1000), 1);
        assert_eq!(quiet, WindowStats::default());
        let both = analyse(&[1, 2], &[], t0, t0 + ms(1000), 1);
        assert_eq!(both.double, ms(1000));
    }
}
