//! Heartbeat sockets, unicast to every peer (no multicast, which clouds drop), one
//! `LinkSender` per link, driven by the sender thread (`beat.rs`). IPv4 heartbeats to a peer whose next-hop MAC is known go out
//! through a packet socket as complete frames (`frame.rs`), so no OUTPUT firewall
//! rule can silence the node; otherwise, and for IPv6, through a kernel UDP socket
//! bound to the interface.

use crate::frame::{udp_frame, Ends};
use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use hb_common::{
    wire2::{self, Body, Group, Head, FLAG_HOLDS, FLAG_REACHES_PING, GROUPS, LEN},
    Key, MsgType, NodeState,
};
use nix::sys::socket::{
    bind, sendto, socket, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType, SockaddrLike,
};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd, OwnedFd},
    sync::Arc,
};

/// How heartbeats reach one peer address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// A frame through the packet socket: bypasses netfilter OUTPUT.
    Packet,
    /// The kernel's UDP socket (next hop unknown yet, IPv6, or no packet socket).
    Kernel,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Packet => "packet socket",
            Path::Kernel => "kernel UDP socket",
        }
    }
}

/// One peer address heartbeats go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dest {
    /// The peer's node id: each message is addressed to one peer.
    pub peer: u32,
    /// Its entry in the `seen` array (`PeerState::slot`).
    pub slot: u32,
    pub addr: IpAddr,
}

#[derive(Clone)]
struct Target {
    dest: Dest,
    addr: SocketAddr,
    /// Frame addresses, and the packet socket's destination (the next hop's
    /// MAC on the link), when the packet-socket path can be used.
    ends: Option<(Ends, LinkAddr)>,
}

/// One link's sockets. Made anew when the interface is recreated or its MAC
/// changes (`Targets::rebind`), and swapped in under the sender thread.
struct Sockets {
    ifindex: u32,
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    /// AF_PACKET socket on the interface; None when it could not be opened.
    packet: Option<OwnedFd>,
}

/// One link's sending side, used by the sender thread only: sockets and
/// targets are both read without a lock.
pub struct LinkSender {
    sockets: Arc<ArcSwap<Sockets>>,
    targets: Arc<ArcSwap<Vec<Target>>>,
    ip_id: u16,
}

/// The controller's side of a link's peer addresses: it learns next hops and
/// publishes them; the sender thread reads them without a lock.
pub struct Targets {
    pub iface: String,
    mac: [u8; 6],
    src_port: u16,
    /// A packet socket is open, so frames can be sent.
    usable: bool,
    targets: Arc<ArcSwap<Vec<Target>>>,
    sockets: Arc<ArcSwap<Sockets>>,
}

/// A UDP socket on `unspecified` (0.0.0.0 or ::), bound to `iface`, non-blocking
/// so that a full buffer costs a heartbeat, never a stall.
fn socket_on(iface: &str, unspecified: IpAddr) -> Result<UdpSocket> {
    let s = UdpSocket::bind((unspecified, 0)).context("binding the heartbeat socket")?;
    nix::sys::socket::setsockopt(
        &s,
        nix::sys::socket::sockopt::BindToDevice,
        &std::ffi::OsString::from(iface),
    )
    .with_context(|| format!("binding the heartbeat socket to {iface}"))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A raw AF_PACKET socket bound to `ifindex` that only sends (the frames carry
/// their own EtherType): the heartbeat frames here, the announcements in
/// `garp.rs`. Protocol 0, so it receives nothing and, above all, binding it
/// does not unhook a protocol handler: that costs the kernel an RCU grace
/// period (`synchronize_net`, about 10 ms), which delayed every takeover's first
/// announcement by as much. Non-blocking, so a full interface queue is an
/// error rather than a stall.
pub(crate) fn packet_socket(ifindex: u32) -> Result<OwnedFd> {
    if i32::try_from(ifindex).is_err() {
        bail!("interface index {ifindex} out of range");
    }
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(std::io::Error::from)
    .context("socket(AF_PACKET)")?;
    bind(fd.as_raw_fd(), &link_addr(ifindex, None))
        .map_err(std::io::Error::from)
        .context("bind(AF_PACKET)")?;
    Ok(fd)
}

/// The AF_PACKET address of interface `ifindex` (protocol 0), and of the
/// station `mac` on it when given: what a packet socket is bound to, and
/// where a frame sent through it goes.
pub(crate) fn link_addr(ifindex: u32, mac: Option<[u8; 6]>) -> LinkAddr {
    let mut sll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: 0,
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    if let Some(mac) = mac {
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&mac);
    }
    // nix builds a LinkAddr only from raw memory (`SockaddrLike::from_raw`).
    // SAFETY: the pointer is to `sll`, a whole initialised sockaddr_ll that
    // lives across the call, and the length is its size; from_raw copies it.
    let addr = unsafe {
        LinkAddr::from_raw(
            (&sll as *const libc::sockaddr_ll).cast(),
            Some(size_of::<libc::sockaddr_ll>() as libc::socklen_t),
        )
    };
    addr.expect("an AF_PACKET sockaddr_ll of its own size")
}

impl Sockets {
    /// Sockets on `iface` (index `ifindex`) for the address families of `targets`.
    fn open(iface: &str, ifindex: u32, targets: &[Dest]) -> Result<Self> {
        let want = |v6: bool| targets.iter().any(|t| t.addr.is_ipv6() == v6);
        let packet = match packet_socket(ifindex) {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(
                    "no packet socket on {iface} ({e:#}): heartbeats use the kernel UDP socket only"
                );
                None
            }
        };
        let v4 = want(false)
            .then(|| socket_on(iface, Ipv4Addr::UNSPECIFIED.into()))
            .transpose()?;
        let v6 = want(true)
            .then(|| socket_on(iface, Ipv6Addr::UNSPECIFIED.into()))
            .transpose()?;
        Ok(Self {
            ifindex,
            v4,
            v6,
            packet,
        })
    }

    fn src_port(&self) -> u16 {
        self.v4
            .as_ref()
            .and_then(|s| s.local_addr().ok())
            .map(|a| a.port())
            .unwrap_or(0)
    }
}

impl LinkSender {
    /// Sockets on `iface` (index `ifindex`, MAC `mac`) sending to `targets`
    /// (peer id, address) on `port`, and the handle that publishes their next hops.
    pub fn new(
        iface: &str,
        ifindex: u32,
        mac: [u8; 6],
        targets: &[Dest],
        port: u16,
    ) -> Result<(Self, Targets)> {
        let sockets = Sockets::open(iface, ifindex, targets)?;
        let shared = Arc::new(ArcSwap::from_pointee(
            targets
                .iter()
                .map(|&dest| Target {
                    dest,
                    addr: SocketAddr::new(dest.addr, port),
                    ends: None,
                })
                .collect::<Vec<_>>(),
        ));
        let handle = Targets {
            iface: iface.to_string(),
            mac,
            src_port: sockets.src_port(),
            usable: sockets.packet.is_some(),
            targets: shared.clone(),
            sockets: Arc::new(ArcSwap::from_pointee(sockets)),
        };
        Ok((
            Self {
                sockets: handle.sockets.clone(),
                targets: shared,
                ip_id: 0,
            },
            handle,
        ))
    }

    /// Sends every target the message `message(its Dest)` builds for it. A
    /// failed send (link down, no route, neighbour not resolved yet, a full
    /// buffer) is returned as a count, not an error: the next beat tries
    /// again, and silence is what peers act on.
    pub fn send(&mut self, mut message: impl FnMut(&Dest) -> [u8; LEN]) -> usize {
        let mut failed = 0;
        let targets = self.targets.load();
        let sockets = self.sockets.load();
        for t in targets.iter() {
            let payload = &message(&t.dest);
            // A target read before a rebind swapped the sockets under us keeps
            // the old interface's address: this beat takes the kernel path.
            let ends = t
                .ends
                .as_ref()
                .filter(|(_, to)| to.ifindex() == sockets.ifindex as usize);
            if let (Some((ends, to)), Some(fd)) = (ends, &sockets.packet) {
                self.ip_id = self.ip_id.wrapping_add(1);
                let frame = udp_frame(ends, self.ip_id, payload);
                if send_frame(fd, to, &frame) {
                    continue;
                }
                // The packet socket failed (buffer full, say): the kernel path still may not.
            }
            let socket = if t.addr.is_ipv6() {
                &sockets.v6
            } else {
                &sockets.v4
            };
            let Some(socket) = socket else { continue };
            if socket.send_to(payload, t.addr).is_err() {
                failed += 1;
            }
        }
        failed
    }
}

impl Targets {
    /// The link is now `iface`, index `ifindex`, with MAC `mac` (recreated,
    /// renamed, or given a new address): new sockets there, swapped in under the
    /// sender thread, and every next hop forgotten (frames carried the old MAC),
    /// so heartbeats take the kernel socket until the next refresh finds them.
    pub fn rebind(&mut self, iface: &str, ifindex: u32, mac: [u8; 6]) -> Result<()> {
        let dests: Vec<Dest> = self.targets.load().iter().map(|t| t.dest).collect();
        let sockets = Sockets::open(iface, ifindex, &dests)?;
        self.iface = iface.to_string();
        self.mac = mac;
        self.src_port = sockets.src_port();
        self.usable = sockets.packet.is_some();
        let mut next: Vec<Target> = self.targets.load().as_ref().clone();
        for t in &mut next {
            t.ends = None;
        }
        // Targets first: no frame with the old MAC goes out on the new sockets.
        self.targets.store(Arc::new(next));
        self.sockets.store(Arc::new(sockets));
        Ok(())
    }

    /// The peers' addresses changed (a reload): heartbeats go to `dests` on
    /// `port` from the next beat. A target whose address stays keeps its next
    /// hop; sockets for a new address family are opened first.
    pub fn set_dests(&mut self, dests: &[Dest], port: u16) -> Result<()> {
        let old = self.targets.load();
        let next: Vec<Target> = (dests.iter())
            .map(|&dest| Target {
                dest,
                addr: SocketAddr::new(dest.addr, port),
                ends: old
                    .iter()
                    .find(|t| t.dest.addr == dest.addr)
                    .and_then(|t| t.ends),
            })
            .collect();
        let sockets = self.sockets.load();
        let lacks = |v6: bool| {
            let has = if v6 { &sockets.v6 } else { &sockets.v4 };
            has.is_none() && dests.iter().any(|d| d.addr.is_ipv6() == v6)
        };
        if lacks(false) || lacks(true) {
            let opened = Sockets::open(&self.iface, sockets.ifindex, dests)?;
            self.src_port = opened.src_port();
            self.usable = opened.packet.is_some();
            // Sockets first: the new targets' family has one.
            self.sockets.store(Arc::new(opened));
            // Frames carry the source port, which the new socket changed.
            self.targets.store(Arc::new(
                next.into_iter()
                    .map(|t| Target { ends: None, ..t })
                    .collect(),
            ));
        } else {
            self.targets.store(Arc::new(next));
        }
        Ok(())
    }

    /// Sets (or, with `None`, clears) the next hop of `dst`: its MAC and our source
    /// address towards it. Returns the path `dst` now takes when it changed.
    pub fn set_next_hop(&self, dst: Ipv4Addr, hop: Option<([u8; 6], Ipv4Addr)>) -> Option<Path> {
        let mut next: Vec<Target> = self.targets.load().as_ref().clone();
        let (mut changed, mut dirty) = (None, false);
        let ifindex = self.sockets.load().ifindex;
        for t in &mut next {
            if t.addr.ip() != IpAddr::V4(dst) {
                continue;
            }
            let ends = hop.filter(|_| self.usable).map(|(dst_mac, src_ip)| {
                let ends = Ends {
                    src_mac: self.mac,
                    dst_mac,
                    src_ip,
                    dst_ip: dst,
                    src_port: self.src_port,
                    dst_port: t.addr.port(),
                };
                (ends, link_addr(ifindex, Some(dst_mac)))
            });
            if ends.is_some() != t.ends.is_some() {
                changed = Some(if ends.is_some() {
                    Path::Packet
                } else {
                    Path::Kernel
                });
            }
            dirty |= ends != t.ends;
            t.ends = ends;
        }
        // Published only on a change: the sender thread's view is swapped, never locked.
        if dirty {
            self.targets.store(Arc::new(next));
        }
        changed
    }

    /// Each target and the path its heartbeats take.
    pub fn paths(&self) -> Vec<(IpAddr, Path)> {
        self.targets
            .load()
            .iter()
            .map(|t| {
                (
                    t.addr.ip(),
                    if t.ends.is_some() {
                        Path::Packet
                    } else {
                        Path::Kernel
                    },
                )
            })
            .collect()
    }
}

/// One frame out of the packet socket to `to`; true when all of it was sent.
fn send_frame(fd: &OwnedFd, to: &LinkAddr, frame: &[u8]) -> bool {
    sendto(fd.as_raw_fd(), frame, to, MsgFlags::empty()) == Ok(frame.len())
}

/// What one beat's messages say, the same to every peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Says {
    pub msg_type: MsgType,
    /// The node's standing as a whole (the head): MASTER while it holds any
    /// group.
    pub state: NodeState,
    pub holds_vip: bool,
    pub reaches_ping: bool,
    /// Per group slot: our priority, state and whether we hold it.
    pub groups: [Group; GROUPS],
    /// Per group slot, the node we see holding it (ourselves included); 0: none.
    pub holders: [u32; GROUPS],
    /// Bit `id % 64` of each peer we hear.
    pub heard: u64,
}

/// Builds the messages of one controller run: one session, drawn at random
/// at the start, and one sequence number per beat (its messages to every
/// peer and link share it), strictly increasing.
pub struct Sequencer {
    pub node_id: u32,
    pub cluster_id: u32,
    pub session: u64,
    seq: u64,
    key: Key,
    /// The body last sent and its generation (bumped on every change).
    body: Body,
    body_gen: u16,
}

/// A fresh session id: random, never 0.
pub fn new_session() -> Result<u64> {
    loop {
        let s = getrandom::u64().context("drawing a session id from the kernel's random source")?;
        if s != 0 {
            return Ok(s);
        }
    }
}

impl Sequencer {
    pub fn new(node_id: u32, cluster_id: u32, session: u64, key: Key) -> Self {
        Self {
            node_id,
            cluster_id,
            session,
            seq: 0,
            key,
            body: Body::default(),
            body_gen: 0,
        }
    }

    /// The next beat's sequence number.
    pub fn tick(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Sets what this beat's messages say (call after [`Sequencer::tick`]).
    pub fn say(&mut self, w: &Says) {
        let body = Body {
            groups: w.groups,
            holders: w.holders,
            heard: w.heard,
        };
        if body != self.body {
            self.body = body;
            self.body_gen = self.body_gen.wrapping_add(1);
        }
    }

    /// This beat's message to peer `to`, echoing `echo` (its session and
    /// seq as our data plane last saw them), signed.
    pub fn message(&self, w: &Says, to: u32, echo: (u64, u64)) -> [u8; LEN] {
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        let head = Head {
            msg_type: w.msg_type,
            flags: flag(w.holds_vip, FLAG_HOLDS) | flag(w.reaches_ping, FLAG_REACHES_PING),
            state: w.state as u8,
            body_gen: self.body_gen,
            cluster_id: self.cluster_id,
            from: self.node_id,
            to,
            session: self.session,
            seq: self.seq,
            your_session: echo.0,
            your_seq: echo.1,
        };
        wire2::encode(&head, &self.body, &self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hb_common::wire2::GROUP_HOLDS;

    #[test]
    fn messages_carry_the_session_and_a_new_body_generation_on_change() {
        let key = Key { k0: 1, k1: 2 };
        let mut s = Sequencer::new(3, 9, 0xabc, key);
        let mut groups = [Group::default(); GROUPS];
        groups[0] = Group {
            priority: 80,
            state: NodeState::Master as u8,
            flags: GROUP_HOLDS,
        };
        let mut holders = [0; GROUPS];
        holders[0] = 3;
        let says = Says {
            msg_type: MsgType::Heartbeat,
            state: NodeState::Master,
            holds_vip: true,
            reaches_ping: true,
            groups,
            holders,
            heard: 1 << 4,
        };
        s.tick();
        s.say(&says);
        let (h, b) = wire2::decode(&s.message(&says, 4, (0x44, 7)), &key, 9, 4).unwrap();
        assert_eq!((h.from, h.to, h.session, h.seq), (3, 4, 0xabc, 1));
        assert_eq!((h.your_session, h.your_seq), (0x44, 7));
        assert_eq!(h.flags, FLAG_HOLDS | FLAG_REACHES_PING);
        assert_eq!(
            (b.groups[0].priority, b.holders[0], b.heard),
            (80, 3, 1 << 4)
        );
        let gen = h.body_gen;
        s.tick();
        s.say(&says);
        let (h2, _) = wire2::decode(&s.message(&says, 4, (0x44, 8)), &key, 9, 4).unwrap();
        assert_eq!(
            (h2.seq, h2.body_gen),
            (2, gen),
            "same body, same generation"
        );
        let leave = Says {
            msg_type: MsgType::Leave,
            state: NodeState::Backup,
            holds_vip: false,
            groups: [Group::default(); GROUPS],
            holders: [0; GROUPS],
            ..says
        };
        s.tick();
        s.say(&leave);
        let (h3, b3) = wire2::decode(&s.message(&leave, 4, (0x44, 8)), &key, 9, 4).unwrap();
        assert_ne!(h3.body_gen, gen);
        assert_eq!(
            (h3.msg_type, b3.holders[0], b3.groups[0].flags),
            (MsgType::Leave, 0, 0)
        );
        assert!(new_session().unwrap() != 0);
    }
}
