//! Sends heartbeats: one UDP socket per link (bound to the interface, so a peer
//! address reachable over several links is tried over each), unicast to every peer,
//! so no multicast is needed (clouds drop it).

use anyhow::{Context, Result};
use hb_common::{Heartbeat, Key, MsgType, NodeState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::net::UdpSocket;

/// One link's sockets (IPv4 and, when a peer has an IPv6 address, IPv6) and the
/// peer addresses it sends to.
pub struct LinkSender {
    pub iface: String,
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    targets: Vec<SocketAddr>,
}

/// A UDP socket on `unspecified` (0.0.0.0 or ::), bound to `iface`.
fn socket_on(iface: &str, unspecified: IpAddr) -> Result<UdpSocket> {
    let std =
        std::net::UdpSocket::bind((unspecified, 0)).context("binding the heartbeat socket")?;
    nix::sys::socket::setsockopt(
        &std,
        nix::sys::socket::sockopt::BindToDevice,
        &std::ffi::OsString::from(iface),
    )
    .with_context(|| format!("binding the heartbeat socket to {iface}"))?;
    std.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(std)?)
}

impl LinkSender {
    /// Sockets bound to `iface` (SO_BINDTODEVICE) sending to `targets` on `port`.
    pub fn new(iface: &str, targets: &[IpAddr], port: u16) -> Result<Self> {
        let want = |v6: bool| targets.iter().any(|t| t.is_ipv6() == v6);
        Ok(Self {
            iface: iface.to_string(),
            v4: want(false)
                .then(|| socket_on(iface, Ipv4Addr::UNSPECIFIED.into()))
                .transpose()?,
            v6: want(true)
                .then(|| socket_on(iface, Ipv6Addr::UNSPECIFIED.into()))
                .transpose()?,
            targets: targets.iter().map(|a| SocketAddr::new(*a, port)).collect(),
        })
    }

    /// Sends one encoded message to every target. A failed send (link down, no
    /// route, neighbour not resolved yet) is returned as a count, not an error: the
    /// next tick tries again, and silence is what peers act on.
    pub async fn send(&self, payload: &[u8]) -> usize {
        let mut failed = 0;
        for t in &self.targets {
            let socket = if t.is_ipv6() { &self.v6 } else { &self.v4 };
            let Some(socket) = socket else { continue };
            if socket.send_to(payload, t).await.is_err() {
                failed += 1;
            }
        }
        failed
    }
}

/// Builds successive messages of one controller run: same epoch, strictly
/// increasing sequence numbers.
pub struct Sequencer {
    pub node_id: u32,
    pub cluster_id: u32,
    pub priority: u8,
    pub epoch: u32,
    seq: u64,
    key: Key,
}

impl Sequencer {
    pub fn new(node_id: u32, cluster_id: u32, priority: u8, epoch: u32, key: Key) -> Self {
        Self {
            node_id,
            cluster_id,
            priority,
            epoch,
            seq: 0,
            key,
        }
    }

    /// The next message, encoded and signed.
    pub fn next(
        &mut self,
        msg_type: MsgType,
        state: NodeState,
        holds_vip: bool,
        reaches_ping: bool,
    ) -> [u8; hb_common::wire::WIRE_LEN] {
        use hb_common::wire::{FLAG_HOLDS_VIP, FLAG_REACHES_PING};
        self.seq += 1;
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        Heartbeat {
            msg_type,
            flags: flag(holds_vip, FLAG_HOLDS_VIP) | flag(reaches_ping, FLAG_REACHES_PING),
            priority: self.priority,
            state: state as u8,
            cluster_id: self.cluster_id,
            node_id: self.node_id,
            epoch: self.epoch,
            seq: self.seq,
        }
        .encode(&self.key)
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_grows_and_messages_decode() {
        let key = Key { k0: 1, k1: 2 };
        let mut s = Sequencer::new(3, 9, 80, 4, key);
        let a = hb_common::wire::decode(
            &s.next(MsgType::Heartbeat, NodeState::Master, true, true),
            &key,
            9,
        )
        .unwrap();
        let b = hb_common::wire::decode(
            &s.next(MsgType::Leave, NodeState::Backup, false, true),
            &key,
            9,
        )
        .unwrap();
        assert_eq!((a.node_id, a.epoch, a.seq, a.priority), (3, 4, 1, 80));
        assert!(a.holds_vip() && !b.holds_vip());
        assert!(b.is_after(a.epoch, a.seq));
        assert_eq!(b.msg_type, MsgType::Leave);
    }
}
