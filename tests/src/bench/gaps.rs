//! Heartbeat inter-departure gaps as the switch sees them: a packet socket on
//! the holder's switch port records the kernel's receive timestamp
//! (SO_TIMESTAMPNS) of every heartbeat (UDP to port 694) or VRRP advertisement
//! (IP protocol 112) that node sends, so a starved capture thread does not
//! invent gaps of its own.

use anyhow::{Context, Result};
use nix::sys::socket::{
    recvmsg, setsockopt, sockopt::ReceiveTimestampns, ControlMessageOwned, MsgFlags,
};
use std::{
    io::IoSliceMut,
    os::fd::{AsFd, AsRawFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

const ETH_P_IP: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_VRRP: u8 = 112;

/// Whether `frame` is a heartbeat or advertisement from `src_mac`.
pub fn is_advert(frame: &[u8], src_mac: [u8; 6], port: u16) -> bool {
    if frame.len() < 14 + 20 || frame[6..12] != src_mac {
        return false;
    }
    if u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_IP {
        return false;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    match ip[9] {
        IPPROTO_VRRP => true,
        IPPROTO_UDP if ip.len() >= ihl + 4 => {
            u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]) == port
        }
        _ => false,
    }
}

/// A running capture; `stop` returns the kernel timestamps (ns, CLOCK_REALTIME).
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Vec<u64>>>,
}

impl Capture {
    /// Starts capturing on `iface` in namespace `ns` (by its /var/run/netns name).
    pub fn start(ns: &str, iface: &str, src_mac: [u8; 6], port: u16) -> Result<Self> {
        let netns = std::fs::File::open(format!("/var/run/netns/{ns}"))
            .with_context(|| format!("opening netns {ns}"))?;
        let iface = iface.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || -> Result<Vec<u64>> {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            let sock = crate::netns::all_frames_socket(&iface, true)?;
            setsockopt(&sock, ReceiveTimestampns, &true).context("SO_TIMESTAMPNS")?;
            let _ = ready_tx.send(());
            let mut stamps = Vec::new();
            let mut buf = [0u8; 256];
            let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
            // Bounded by the caller's stop, and by a day for safety.
            let until = Instant::now() + Duration::from_secs(86_400);
            while !halt.load(Ordering::Relaxed) && Instant::now() < until {
                let mut fds = [nix::poll::PollFd::new(
                    sock.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(20u16));
                loop {
                    let mut iov = [IoSliceMut::new(&mut buf)];
                    let Ok(msg) = recvmsg::<()>(
                        sock.as_raw_fd(),
                        &mut iov,
                        Some(&mut cmsg),
                        MsgFlags::MSG_DONTWAIT,
                    ) else {
                        break;
                    };
                    let ts = msg.cmsgs().ok().and_then(|mut c| {
                        c.find_map(|m| match m {
                            ControlMessageOwned::ScmTimestampns(t) => {
                                Some(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
                            }
                            _ => None,
                        })
                    });
                    let n = msg.bytes;
                    if let Some(ts) = ts {
                        if is_advert(&buf[..n.min(buf.len())], src_mac, port) {
                            stamps.push(ts);
                        }
                    }
                }
            }
            Ok(stamps)
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("the capture thread did not start")?;
        Ok(Self { stop, thread })
    }

    pub fn stop(self) -> Result<Vec<u64>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("capture thread panicked"))?
    }
}

/// Gaps between consecutive timestamps, in ms.
pub fn gaps_ms(stamps: &[u64]) -> Vec<f64> {
    stamps
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]) as f64 / 1e6)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_between_stamps() {
        assert_eq!(gaps_ms(&[1_000_000, 2_500_000, 2_500_000]), vec![1.5, 0.0]);
        assert!(gaps_ms(&[5]).is_empty());
    }

    #[test]
    fn adverts_are_told_from_other_frames() {
        let mac = [2, 0, 0, 0, 0, 1];
        let mut f = vec![0u8; 14 + 20 + 8];
        f[6..12].copy_from_slice(&mac);
        f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        f[14] = 0x45;
        f[14 + 9] = IPPROTO_UDP;
        f[14 + 22..14 + 24].copy_from_slice(&694u16.to_be_bytes());
        assert!(is_advert(&f, mac, 694));
        assert!(!is_advert(&f, [9; 6], 694), "another sender");
        assert!(!is_advert(&f, mac, 53), "another port");
        f[14 + 9] = IPPROTO_VRRP;
        assert!(is_advert(&f, mac, 694), "VRRP");
        f[14 + 9] = 1;
        assert!(!is_advert(&f, mac, 694), "ICMP");
    }
}
