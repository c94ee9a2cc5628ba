//! Floods from the client namespace: prebuilt Ethernet frames sent from one
//! thread through an AF_PACKET socket with sendmmsg, as fast as it goes or at a
//! given rate. Frames are built here (pure): junk UDP, heartbeats under a wrong
//! key, replays of heartbeats a node already sent, and junk VRRP (IP protocol 112).

use anyhow::Result;
use hb_common::{
    wire2::{self, Head},
    Key,
};
use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_VRRP: u8 = 112;

/// Layer-2 and layer-3 ends of the flood.
#[derive(Clone, Copy, Debug)]
pub struct Endpoints {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
}

/// Ethernet + IPv4 (no options, checksum set) around `l4`.
pub fn ipv4_frame(e: &Endpoints, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(34 + l4.len());
    f.extend(e.dst_mac);
    f.extend(e.src_mac);
    f.extend([0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&e.src_ip.octets());
    ip[16..20].copy_from_slice(&e.dst_ip.octets());
    let sum = crate::frames::checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend(ip);
    f.extend(l4);
    f
}

/// A UDP datagram (checksum 0: none, allowed over IPv4) in a frame.
pub fn udp_frame(e: &Endpoints, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = Vec::with_capacity(8 + payload.len());
    udp.extend(sport.to_be_bytes());
    udp.extend(dport.to_be_bytes());
    udp.extend(((8 + payload.len()) as u16).to_be_bytes());
    udp.extend([0, 0]);
    udp.extend(payload);
    ipv4_frame(e, IPPROTO_UDP, &udp)
}

/// xorshift64*: reproducible junk without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// `n` frames of hb-shaped junk to UDP `port`: v2's length, magic and version, random after that, so XDP
/// parses and refuses each one (random bytes of another shape would pass to
/// the stack: they are not hb's).
pub fn junk_udp(e: &Endpoints, port: u16, n: usize, rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut p = rng.bytes(hb_common::wire2::LEN);
            p[..3].copy_from_slice(&[0x48, 0x42, hb_common::wire2::VERSION]);
            udp_frame(e, 40000 + (i % 1000) as u16, port, &p)
        })
        .collect()
}

/// `n` frames of random bytes as IP protocol 112 (VRRP): keepalived reads every one.
pub fn junk_vrrp(e: &Endpoints, n: usize, rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| ipv4_frame(e, IPPROTO_VRRP, &rng.bytes(36)))
        .collect()
}

/// The heartbeat head a master `from` sends to `to` in `session`, echoing
/// `to`'s session `your`: what the replays and forgeries imitate.
pub fn master_heartbeat(cluster_id: u32, from: u32, to: u32, session: u64, your: u64) -> Head {
    Head {
        cluster_id,
        ..crate::frames::head(from, to, session, 0, (your, 1))
    }
}

/// Heartbeat frames for `seqs` in the template's session, MACed with `key`.
pub fn heartbeats(
    e: &Endpoints,
    port: u16,
    template: Head,
    seqs: impl Iterator<Item = u64>,
    key: &Key,
) -> Vec<Vec<u8>> {
    seqs.map(|seq| {
        let h = Head { seq, ..template };
        udp_frame(
            e,
            port,
            port,
            &wire2::encode(&h, &crate::frames::body(h.from), key),
        )
    })
    .collect()
}

/// What a flood achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sent {
    pub packets: u64,
    pub elapsed: Duration,
}

impl Sent {
    pub fn rate(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

const BATCH: usize = 64;

/// Sends `frames` round-robin out of `iface` for `duration`, from the calling
/// thread (which must be in the client's namespace), at most `rate` frames per
/// second when given. Send errors (a full queue) count as not sent.
pub fn send(
    iface: &str,
    frames: &[Vec<u8>],
    duration: Duration,
    rate: Option<f64>,
) -> Result<Sent> {
    anyhow::ensure!(!frames.is_empty(), "nothing to send");
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: plain libc calls on a socket we own; the message headers point into
    // `frames` and `sll`, which outlive every sendmmsg call.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        anyhow::ensure!(ifindex != 0, "no interface {iface}");
        // Protocol 0: this socket receives nothing, so the flood is not copied back to us.
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        anyhow::ensure!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = 0x0800u16.to_be();
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frames[0][..6]);
        let mut iov: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut _,
                iov_len: f.len(),
            })
            .collect();
        let mut hdrs: Vec<libc::mmsghdr> = (0..frames.len())
            .map(|i| {
                let mut h: libc::mmsghdr = std::mem::zeroed();
                h.msg_hdr.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
                h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                h.msg_hdr.msg_iov = iov.as_mut_ptr().add(i);
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        let start = Instant::now();
        let mut sent: u64 = 0;
        let mut at = 0usize;
        loop {
            let elapsed = start.elapsed();
            if elapsed >= duration {
                return Ok(Sent {
                    packets: sent,
                    elapsed,
                });
            }
            if let Some(r) = rate {
                let due = Duration::from_secs_f64(sent as f64 / r);
                if due > elapsed {
                    std::thread::sleep((due - elapsed).min(Duration::from_millis(5)));
                    continue;
                }
            }
            let n = BATCH.min(frames.len() - at);
            let r = libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr().add(at), n as u32, 0);
            if r > 0 {
                sent += r as u64;
            }
            at = (at + n) % frames.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends() -> Endpoints {
        Endpoints {
            src_mac: [2, 0, 0, 0, 0, 0xc8],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(10, 203, 0, 200),
            dst_ip: Ipv4Addr::new(10, 203, 0, 2),
        }
    }

    #[test]
    fn frames_are_well_formed() {
        let f = udp_frame(&ends(), 694, 694, &[1; 36]);
        assert_eq!(f.len(), 14 + 20 + 8 + 36);
        assert_eq!(
            crate::frames::checksum(&f[14..34]),
            0,
            "IPv4 header checksum"
        );
        assert_eq!(
            u16::from_be_bytes([f[16], f[17]]),
            20 + 8 + 36,
            "IPv4 total length"
        );
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 8 + 36, "UDP length");
        let v = junk_vrrp(&ends(), 2, &mut Rng(1));
        assert_eq!(v[0][23], IPPROTO_VRRP);
        assert_ne!(v[0][34..], v[1][34..], "junk differs");
    }

    #[test]
    fn replays_carry_valid_macs_and_old_sequence_numbers() {
        let key = Key { k0: 1, k1: 2 };
        let t = master_heartbeat(1, 1, 2, 5, 9);
        let f = heartbeats(&ends(), 694, t, 1..4, &key);
        assert_eq!(f.len(), 3);
        let (h, _) = wire2::decode(&f[2][42..], &key, 1, 2).expect("valid heartbeat");
        assert_eq!((h.session, h.seq, h.from, h.your_session), (5, 3, 1, 9));
        let other = Key { k0: 3, k1: 4 };
        assert!(wire2::decode(&f[0][42..], &other, 1, 2).is_err());
    }
}
