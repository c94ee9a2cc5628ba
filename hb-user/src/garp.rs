//! Gratuitous ARP after a takeover: tells the segment's hosts and switches that
//! the VIP is now at this node's MAC, through an AF_PACKET socket.

use anyhow::{bail, Context, Result};
use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

const ETH_P_ARP: u16 = libc::ETH_P_ARP as u16;
const ETH_P_IP: u16 = libc::ETH_P_IP as u16;
const ARPHRD_ETHER: u16 = libc::ARPHRD_ETHER;
const BROADCAST: [u8; 6] = [0xff; 6];

/// Sends `count` rounds, `spacing` apart (first round immediately), each round
/// one ARP request and one ARP reply announcing `ip` is-at `mac`, broadcast,
/// from interface `ifindex`. Both kinds, because some hosts only learn from
/// one; Linux takes the request even for an entry it updated less than
/// `locktime` (1 s) ago, the reply only after that.
pub async fn announce(
    ifindex: u32,
    mac: [u8; 6],
    ip: Ipv4Addr,
    count: u32,
    spacing: Duration,
) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    let sock =
        open(ifindex).with_context(|| format!("opening an ARP socket on interface #{ifindex}"))?;
    let request = frame(mac, ip, false);
    let reply = frame(mac, ip, true);
    for round in 0..count {
        if round > 0 {
            tokio::time::sleep(spacing).await;
        }
        for f in [&request, &reply] {
            send(&sock, f).with_context(|| {
                format!("sending gratuitous ARP for {ip} on interface #{ifindex}")
            })?;
        }
    }
    Ok(())
}

/// The frame bytes: Ethernet broadcast + ARP (op 1 request or 2 reply),
/// sender = target = `ip`, sender MAC = `mac`, target MAC 00:..:00 for the
/// request and ff:..:ff for the reply (as keepalived does).
pub fn frame(mac: [u8; 6], ip: Ipv4Addr, reply: bool) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&ARPHRD_ETHER.to_be_bytes());
    f[16..18].copy_from_slice(&ETH_P_IP.to_be_bytes());
    f[18] = 6; // hardware address length
    f[19] = 4; // protocol address length
    let op: u16 = if reply { 2 } else { 1 };
    f[20..22].copy_from_slice(&op.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    f[32..38].copy_from_slice(if reply { &BROADCAST } else { &[0; 6] });
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// A raw AF_PACKET socket bound to `ifindex`. Non-blocking, so a stalled
/// interface queue is an error rather than a hung controller.
fn open(ifindex: u32) -> Result<OwnedFd> {
    let Ok(index) = i32::try_from(ifindex) else {
        bail!("interface index {ifindex} out of range");
    };
    let proto = ETH_P_ARP.to_be();
    // SAFETY: plain syscall; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            i32::from(proto),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("socket(AF_PACKET)");
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };

    // SAFETY: sockaddr_ll is plain data, valid when zeroed.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index;
    // SAFETY: addr is a valid sockaddr_ll and the length is its size.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error()).context("bind(AF_PACKET)");
    }
    Ok(sock)
}

fn send(sock: &OwnedFd, frame: &[u8]) -> Result<()> {
    // SAFETY: frame is a valid buffer of frame.len() bytes.
    let n = unsafe { libc::send(sock.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error().into());
    }
    if n as usize != frame.len() {
        bail!("short send: {n} of {} bytes", frame.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::frame;
    use std::net::Ipv4Addr;

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

    #[test]
    fn request_layout() {
        let f = frame(MAC, IP, false);
        assert_eq!(f[0..6], [0xff; 6], "Ethernet destination: broadcast");
        assert_eq!(f[6..12], MAC, "Ethernet source");
        assert_eq!(f[12..14], [0x08, 0x06], "EtherType ARP");
        assert_eq!(f[14..16], [0x00, 0x01], "htype Ethernet");
        assert_eq!(f[16..18], [0x08, 0x00], "ptype IPv4");
        assert_eq!(f[18..20], [6, 4], "hlen, plen");
        assert_eq!(f[20..22], [0x00, 0x01], "op request");
        assert_eq!(f[22..28], MAC, "sender MAC");
        assert_eq!(f[28..32], [10, 0, 0, 100], "sender IP");
        assert_eq!(f[32..38], [0; 6], "target MAC");
        assert_eq!(f[38..42], [10, 0, 0, 100], "target IP");
    }

    #[test]
    fn reply_differs_only_in_op_and_target_mac() {
        let req = frame(MAC, IP, false);
        let rep = frame(MAC, IP, true);
        assert_eq!(rep[20..22], [0x00, 0x02], "op reply");
        assert_eq!(rep[32..38], [0xff; 6], "target MAC");
        let differing: Vec<usize> = (0..42).filter(|&i| req[i] != rep[i]).collect();
        assert_eq!(differing, vec![21, 32, 33, 34, 35, 36, 37]);
    }
}
