//! Quorum by ping targets (like Heartbeat's ping/ipfail): one ICMP echo to every
//! target per heartbeat interval from a raw socket; a target is reachable while its
//! last reply is at most dead-after old.

use anyhow::{Context, Result};
use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};
use tokio::io::unix::AsyncFd;

pub struct Pinger {
    fd: AsyncFd<OwnedFd>,
    id: u16,
    seq: u16,
    /// Each target and the monotonic time of its last reply.
    targets: Vec<(Ipv4Addr, Option<Duration>)>,
}

fn echo_request(id: u16, seq: u16) -> [u8; 8] {
    let mut p = [8, 0, 0, 0, 0, 0, 0, 0];
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    let sum = crate::checksum::checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The source address of an echo reply with our id, from a raw socket's datagram
/// (the IPv4 header included).
fn reply_source(buf: &[u8], id: u16) -> Option<Ipv4Addr> {
    let ihl = usize::from(*buf.first()? & 0x0f) * 4;
    let icmp = buf.get(ihl..ihl + 8)?;
    if icmp[0] != 0 || icmp[4..6] != id.to_be_bytes() {
        return None;
    }
    let src: [u8; 4] = buf.get(12..16)?.try_into().ok()?;
    Some(Ipv4Addr::from(src))
}

impl Pinger {
    pub fn new(targets: &[Ipv4Addr]) -> Result<Self> {
        // SAFETY: socket(2); the descriptor is owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error())
                .context("opening a raw ICMP socket for --ping");
        }
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self {
            // SAFETY: we own `fd` and neither replace nor close it while registered.
            fd: unsafe { AsyncFd::register(fd) }
                .map_err(|e| anyhow::anyhow!("registering the ping socket: {e}"))?,
            id: (std::process::id() as u16) ^ 0x6862,
            seq: 0,
            targets: targets.iter().map(|t| (*t, None)).collect(),
        })
    }

    /// Sends one echo request to every target. A failed send is an unanswered ping.
    pub fn send(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        let pkt = echo_request(self.id, self.seq);
        for (t, _) in &self.targets {
            let dest = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(t.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: valid buffer and address for the call's duration.
            unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    (&dest as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                );
            }
        }
    }

    /// Waits until a datagram is readable, then records every reply queued.
    pub async fn receive(&mut self, now: impl Fn() -> Duration) -> Result<()> {
        let mut guard = self.fd.readable().await?;
        let mut buf = [0u8; 1500];
        loop {
            // SAFETY: buf outlives the call.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                guard.clear_ready();
                return Ok(());
            }
            if let Some(src) = reply_source(&buf[..n as usize], self.id) {
                let t = now();
                for (target, last) in &mut self.targets {
                    if *target == src {
                        *last = Some(t);
                    }
                }
            }
        }
    }

    /// True when some target answered within `window` of `now`.
    pub fn reachable(&self, now: Duration, window: Duration) -> bool {
        self.targets
            .iter()
            .any(|(_, last)| last.is_some_and(|l| now.saturating_sub(l) <= window))
    }

    /// When reachability runs out if no reply comes first: the newest reply
    /// plus `window`; None when no target ever answered.
    pub fn reach_ends(&self, window: Duration) -> Option<Duration> {
        self.targets
            .iter()
            .filter_map(|(_, last)| *last)
            .max()
            .map(|l| l + window)
    }

    /// Each target and the time since its last reply (None: never answered).
    pub fn report(&self, now: Duration) -> Vec<(Ipv4Addr, Option<Duration>)> {
        self.targets
            .iter()
            .map(|(t, last)| (*t, last.map(|l| now.saturating_sub(l))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_checksum_and_reply_parsing() {
        let p = echo_request(0x1234, 7);
        assert_eq!(crate::checksum::checksum(&p), 0, "checksum verifies");
        let mut reply = vec![
            0x45u8, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 9, 10, 0, 0, 1,
        ];
        reply.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
        assert_eq!(
            reply_source(&reply, 0x1234),
            Some(Ipv4Addr::new(10, 0, 0, 9))
        );
        assert_eq!(reply_source(&reply, 0x9999), None, "another process's ping");
        reply[20] = 8;
        assert_eq!(
            reply_source(&reply, 0x1234),
            None,
            "a request is not a reply"
        );
        assert_eq!(reply_source(&reply[..22], 0x1234), None, "truncated");
    }
}
