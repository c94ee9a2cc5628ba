//! XDP attached through rtnetlink (`IFLA_XDP`), not through a bpf_link: the
//! kernel keeps the program on the interface until someone detaches it or the
//! interface goes, whatever becomes of this process, its mount namespace or the
//! bpffs it pinned in (`ip netns exec` and systemd's private mounts take those
//! away with the process). A restarted controller finds the program through
//! the interface ([`query`]), and its maps through the program.
//!
//! Synchronous on purpose: the loader and a graceful stop's `Drop` run outside
//! any await point. A [`Rtnl`] socket stays in the network namespace it was
//! opened in, so a data plane dropped from another namespace (a test's
//! thread) still detaches from the right interface.

use anyhow::{bail, Context, Result};
use rtnetlink::{
    packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST},
    packet_route::{
        link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
        RouteNetlinkMessage,
    },
    sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr},
};
use std::os::fd::{AsRawFd, BorrowedFd};

// include/uapi/linux/if_link.h
const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// Since 5.7: replace only if the program attached is the expected one.
const XDP_FLAGS_REPLACE: u32 = 1 << 4;

/// How a program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// In the driver (native).
    Driver,
    /// Generic XDP, after the driver built the skb.
    Skb,
}

impl Mode {
    fn flag(self) -> u32 {
        match self {
            Mode::Driver => XDP_FLAGS_DRV_MODE,
            Mode::Skb => XDP_FLAGS_SKB_MODE,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Driver => "native",
            Mode::Skb => "generic",
        }
    }
}

/// The program on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attached {
    pub prog_id: u32,
    pub mode: Mode,
}

/// A NETLINK_ROUTE socket in the calling thread's network namespace.
pub struct Rtnl(Socket);

impl std::fmt::Debug for Rtnl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rtnl")
    }
}

impl Rtnl {
    pub fn open() -> std::io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self(socket))
    }
}

/// What is attached to `ifindex`; None when nothing (or only offloaded or
/// several programs, which hb never makes).
pub fn query(ifindex: u32) -> Result<Option<Attached>> {
    Rtnl::open()?.query(ifindex)
}

impl Rtnl {
    /// What is attached to `ifindex` (see [`query`]).
    pub fn query(&self, ifindex: u32) -> Result<Option<Attached>> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        let reply = self
            .request(RouteNetlinkMessage::GetLink(msg), 0)
            .with_context(|| format!("reading the XDP state of interface #{ifindex}"))?;
        let Some(RouteNetlinkMessage::NewLink(link)) = reply else {
            bail!("no answer about interface #{ifindex}");
        };
        let mut mode = None;
        let mut prog_id = 0;
        for attr in &link.attributes {
            if let LinkAttribute::Xdp(xdp) = attr {
                for x in xdp {
                    match x {
                        LinkXdp::Attached(XdpAttached::Driver) => mode = Some(Mode::Driver),
                        LinkXdp::Attached(XdpAttached::SocketBuffer) => mode = Some(Mode::Skb),
                        LinkXdp::ProgId(id) => prog_id = *id,
                        _ => {}
                    }
                }
            }
        }
        Ok(mode
            .filter(|_| prog_id != 0)
            .map(|mode| Attached { prog_id, mode }))
    }

    /// Attaches `prog` to `ifindex` in `mode`: only where nothing is attached
    /// (`replace` None; EBUSY otherwise), or atomically in place of `replace`,
    /// which must be what is attached (EEXIST otherwise): no instant without a
    /// program.
    pub fn attach(
        &self,
        ifindex: u32,
        prog: BorrowedFd<'_>,
        mode: Mode,
        replace: Option<BorrowedFd<'_>>,
    ) -> std::io::Result<()> {
        let mut xdp = vec![LinkXdp::Fd(prog.as_raw_fd())];
        match replace {
            None => xdp.push(LinkXdp::Flags(mode.flag() | XDP_FLAGS_UPDATE_IF_NOEXIST)),
            Some(old) => {
                xdp.push(LinkXdp::Flags(mode.flag() | XDP_FLAGS_REPLACE));
                xdp.push(LinkXdp::ExpectedFd(old.as_raw_fd() as u32));
            }
        }
        self.set_xdp(ifindex, xdp)
    }

    /// Detaches `expected` from `ifindex`; a no-op (Ok) when another program is
    /// attached there by now, or none.
    pub fn detach(
        &self,
        ifindex: u32,
        mode: Mode,
        expected: BorrowedFd<'_>,
    ) -> std::io::Result<()> {
        let xdp = vec![
            LinkXdp::Fd(-1),
            LinkXdp::Flags(mode.flag() | XDP_FLAGS_REPLACE),
            LinkXdp::ExpectedFd(expected.as_raw_fd() as u32),
        ];
        match self.set_xdp(ifindex, xdp) {
            // EEXIST: not ours any more; ENODEV: the interface is gone, and the
            // program with it.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENODEV)) => Ok(()),
            r => r,
        }
    }

    fn set_xdp(&self, ifindex: u32, xdp: Vec<LinkXdp>) -> std::io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        msg.attributes.push(LinkAttribute::Xdp(xdp));
        self.request(RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)
            .map(|_| ())
    }

    /// Sends one request and returns its answer (None for a bare ack); a NACK is
    /// the kernel's errno.
    fn request(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> std::io::Result<Option<RouteNetlinkMessage>> {
        let socket = &self.0;
        let mut req =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(msg));
        req.header.flags = NLM_F_REQUEST | flags;
        req.header.sequence_number = 1;
        req.finalize();
        let mut buf = vec![0; req.buffer_len()];
        req.serialize(&mut buf);
        socket.send(&buf, 0)?;
        // One answer, then (for a GET) nothing else: RTM_GETLINK by index is not a dump.
        let mut answer = Vec::with_capacity(64 * 1024);
        socket.recv(&mut answer, 0)?;
        let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&answer)
            .map_err(|e| bad(format!("a netlink answer hb cannot read: {e}")))?;
        match reply.payload {
            NetlinkPayload::Error(e) => match e.code {
                None => Ok(None),
                Some(code) => Err(std::io::Error::from_raw_os_error(-code.get())),
            },
            NetlinkPayload::InnerMessage(m) => Ok(Some(m)),
            other => Err(bad(format!(
                "an unexpected netlink answer (type {})",
                other.message_type()
            ))),
        }
    }
}
