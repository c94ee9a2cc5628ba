//! Interface facts and VIP addresses over rtnetlink (no `ip` command): looks up
//! links, lists IPv4 and IPv6 addresses and adds or removes a VIP idempotently.

use crate::config::routes::{RouteKind, RouteSpec, RuleSpec, Scope};
use anyhow::{bail, Context, Result};
use futures_util::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::{
    route::{RouteScope, RouteType},
    rule::RuleAction,
};
use rtnetlink::{
    packet_route::{
        address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage},
        link::{LinkAttribute, LinkFlags, LinkMessage},
        AddressFamily,
    },
    AddressMessageBuilder, Handle, RouteMessageBuilder,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tokio::task::JoinHandle;

/// What the controller needs to know about an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
    pub ifindex: u32,
    /// All zero when the link has no Ethernet address (e.g. a tun device).
    pub mac: [u8; 6],
    /// Administratively up and with carrier (IFF_UP and IFF_LOWER_UP or IFF_RUNNING).
    pub up: bool,
}

/// A netlink route socket bound to one network namespace.
pub struct Netlink {
    handle: Handle,
    task: JoinHandle<()>,
}

impl Netlink {
    /// Opens a netlink connection in the calling thread's network namespace and
    /// spawns its connection task on the current tokio runtime.
    pub fn connect() -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .context("Netlink::connect needs to run inside a tokio runtime")?;
        // The socket is created here, so it lives in this thread's namespace
        // whichever thread later drives the connection task.
        let (conn, handle, _) =
            rtnetlink::new_connection().context("opening a NETLINK_ROUTE socket")?;
        let task = runtime.spawn(conn);
        Ok(Self { handle, task })
    }

    /// Interface facts; Ok(None) when no such interface.
    pub async fn link(&self, name: &str) -> Result<Option<LinkInfo>> {
        // Such names cannot exist; the kernel would answer EINVAL, not ENODEV.
        if name.is_empty() || name.len() > 15 || name.contains(['\0', '/']) {
            return Ok(None);
        }
        let req = self.handle.link().get().match_name(name).execute();
        one_link(req)
            .await
            .with_context(|| format!("looking up interface {name}"))
    }

    pub async fn link_by_index(&self, ifindex: u32) -> Result<Option<LinkInfo>> {
        if ifindex == 0 {
            return Ok(None); // 0 would mean "dump all" to the kernel.
        }
        let req = self.handle.link().get().match_index(ifindex).execute();
        one_link(req)
            .await
            .with_context(|| format!("looking up interface #{ifindex}"))
    }

    /// IPv4 addresses (with prefix length) on the interface.
    pub async fn ipv4_addrs(&self, ifindex: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        let all = self.addrs(ifindex, AddressFamily::Inet).await?;
        Ok(all
            .into_iter()
            .filter_map(|(ip, prefix)| match ip {
                IpAddr::V4(ip) => Some((ip, prefix)),
                IpAddr::V6(_) => None,
            })
            .collect())
    }

    /// IPv6 addresses (with prefix length) on the interface, link-local ones and
    /// those still in duplicate address detection included.
    pub async fn ipv6_addrs(&self, ifindex: u32) -> Result<Vec<(Ipv6Addr, u8)>> {
        let all = self.addrs(ifindex, AddressFamily::Inet6).await?;
        Ok(all
            .into_iter()
            .filter_map(|(ip, prefix)| match ip {
                IpAddr::V6(ip) => Some((ip, prefix)),
                IpAddr::V4(_) => None,
            })
            .collect())
    }

    async fn addrs(&self, ifindex: u32, family: AddressFamily) -> Result<Vec<(IpAddr, u8)>> {
        let mut req = self.handle.address().get().set_link_index_filter(ifindex);
        req.message_mut().header.family = family;
        let mut stream = req.execute();
        let mut addrs = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .with_context(|| format!("listing addresses of interface #{ifindex}"))?
        {
            if let Some(ip) = local_addr(&msg) {
                addrs.push((ip, msg.header.prefix_len));
            }
        }
        Ok(addrs)
    }

    /// Adds addr/prefix to the interface; Ok(false) if it was already present
    /// (adopted, not duplicated), Ok(true) if added.
    ///
    /// Like keepalived, no flags are set: the kernel makes the VIP a secondary
    /// address when the interface already has a primary one in that subnet.
    pub async fn add_addr(&self, ifindex: u32, addr: Ipv4Addr, prefix: u8) -> Result<bool> {
        check_prefix(prefix, 32)?;
        let mut req = self.handle.address().add(ifindex, IpAddr::V4(addr), prefix);
        // rtnetlink fills in a broadcast address; a VIP does not need one.
        req.message_mut()
            .attributes
            .retain(|a| !matches!(a, AddressAttribute::Broadcast(_)));
        added(req.execute().await, ifindex, addr.into(), prefix)
    }

    /// Adds an IPv6 addr/prefix to the interface; Ok(false) if it was already
    /// present, Ok(true) if added.
    ///
    /// With IFA_F_NODAD, as keepalived does: duplicate address detection would
    /// keep the VIP "tentative" (unusable as a source, not answered for) for a
    /// second or more after a takeover, and would disable it for good
    /// ("dadfailed") if the old holder still answered for it, i.e. exactly when
    /// the takeover matters. The unsolicited neighbour advertisements of
    /// `garp::announce_v6` take over the address instead.
    pub async fn add_addr_v6(&self, ifindex: u32, addr: Ipv6Addr, prefix: u8) -> Result<bool> {
        check_prefix(prefix, 128)?;
        let mut req = self.handle.address().add(ifindex, IpAddr::V6(addr), prefix);
        let msg = req.message_mut();
        msg.header.flags = AddressHeaderFlags::Nodad;
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        added(req.execute().await, ifindex, addr.into(), prefix)
    }

    /// Removes addr/prefix from the interface; Ok(false) if it was not present.
    pub async fn del_addr(&self, ifindex: u32, addr: Ipv4Addr, prefix: u8) -> Result<bool> {
        check_prefix(prefix, 32)?;
        let msg = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(ifindex)
            .address(addr, prefix)
            .build();
        self.del(msg, ifindex, addr.into(), prefix).await
    }

    /// Removes an IPv6 addr/prefix from the interface; Ok(false) if it was not present.
    pub async fn del_addr_v6(&self, ifindex: u32, addr: Ipv6Addr, prefix: u8) -> Result<bool> {
        check_prefix(prefix, 128)?;
        let msg = AddressMessageBuilder::<Ipv6Addr>::new()
            .index(ifindex)
            .address(addr, prefix)
            .build();
        self.del(msg, ifindex, addr.into(), prefix).await
    }

    async fn del(
        &self,
        msg: AddressMessage,
        ifindex: u32,
        addr: IpAddr,
        prefix: u8,
    ) -> Result<bool> {
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(Errno::EADDRNOTAVAIL) => Ok(false),
            Err(e) => Err(e)
                .with_context(|| format!("removing {addr}/{prefix} from interface #{ifindex}")),
        }
    }
}

/// The result of an add request: the request has NLM_F_EXCL, so an existing
/// address is EEXIST and checking and adding is one atomic step.
fn added(
    res: Result<(), rtnetlink::Error>,
    ifindex: u32,
    addr: IpAddr,
    prefix: u8,
) -> Result<bool> {
    match res {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(Errno::EEXIST) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("adding {addr}/{prefix} to interface #{ifindex}")),
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// True when `addr` is inside `net/prefix`; false for a prefix over 32.
pub fn in_subnet(addr: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    let mask = match prefix {
        0 => 0,
        1..=32 => u32::MAX << (32 - prefix),
        _ => return false,
    };
    u32::from(addr) & mask == u32::from(net) & mask
}

impl Netlink {
    /// The MAC of `ip`'s usable neighbour entry on `ifindex` (reachable, stale,
    /// delay, probe, permanent), if any.
    pub async fn neighbour(&self, ifindex: u32, ip: Ipv4Addr) -> Result<Option<[u8; 6]>> {
        use rtnetlink::packet_route::neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourState as S,
        };
        let mut entries = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute();
        while let Some(msg) = entries
            .try_next()
            .await
            .context("reading the neighbour table")?
        {
            if msg.header.ifindex != ifindex
                || !matches!(
                    msg.header.state,
                    S::Reachable | S::Stale | S::Delay | S::Probe | S::Permanent
                )
            {
                continue;
            }
            let mut dst = None;
            let mut lladdr = None;
            for a in &msg.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => dst = Some(*d),
                    NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                        lladdr = Some([l[0], l[1], l[2], l[3], l[4], l[5]])
                    }
                    _ => {}
                }
            }
            if dst == Some(ip) {
                return Ok(lladdr);
            }
        }
        Ok(None)
    }

    /// Asks the kernel to resolve `ip` on `ifindex` (NTF_USE: an ARP request now),
    /// so that a later [`Netlink::neighbour`] finds it. Works even when a firewall
    /// drops our UDP, which would otherwise never trigger resolution.
    pub async fn resolve(&self, ifindex: u32, ip: Ipv4Addr) -> Result<()> {
        use rtnetlink::packet_route::neighbour::NeighbourFlags;
        self.handle
            .neighbours()
            .add(ifindex, IpAddr::V4(ip))
            .flags(NeighbourFlags::Use)
            .replace()
            .execute()
            .await
            .with_context(|| format!("asking the kernel to resolve {ip}"))
    }

    /// [`Netlink::add_addr`] or [`Netlink::add_addr_v6`], by family.
    pub async fn add_ip(&self, ifindex: u32, addr: std::net::IpAddr, prefix: u8) -> Result<bool> {
        match addr {
            std::net::IpAddr::V4(a) => self.add_addr(ifindex, a, prefix).await,
            std::net::IpAddr::V6(a) => self.add_addr_v6(ifindex, a, prefix).await,
        }
    }

    /// [`Netlink::del_addr`] or [`Netlink::del_addr_v6`], by family.
    pub async fn del_ip(&self, ifindex: u32, addr: std::net::IpAddr, prefix: u8) -> Result<bool> {
        match addr {
            std::net::IpAddr::V4(a) => self.del_addr(ifindex, a, prefix).await,
            std::net::IpAddr::V6(a) => self.del_addr_v6(ifindex, a, prefix).await,
        }
    }

    /// Whether `addr/prefix` is configured on the interface.
    pub async fn has_ip(&self, ifindex: u32, addr: std::net::IpAddr, prefix: u8) -> Result<bool> {
        Ok(match addr {
            std::net::IpAddr::V4(a) => self.ipv4_addrs(ifindex).await?.contains(&(a, prefix)),
            std::net::IpAddr::V6(a) => self.ipv6_addrs(ifindex).await?.contains(&(a, prefix)),
        })
    }
}

impl Netlink {
    /// Adds a group's route (`add`), or removes it; `dev` is its interface's
    /// index. An existing route is kept (EEXIST), a missing one is not an error
    /// to remove: true when it changed something.
    pub async fn route(&self, r: &RouteSpec, dev: Option<u32>, add: bool) -> Result<bool> {
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(r.dest.0, r.dest.1)
            .map_err(invalid)?;
        if let Some(v) = r.via {
            b = b.gateway(v).map_err(invalid)?;
        }
        if let Some(s) = r.src {
            b = b.pref_source(s).map_err(invalid)?;
        }
        if let Some(i) = dev {
            b = b.output_interface(i);
        }
        if let Some(m) = r.metric {
            b = b.priority(m);
        }
        if let Some(t) = r.table {
            b = b.table_id(t);
        }
        let scope = match (r.scope, r.via, r.kind) {
            (Some(Scope::Global), ..) => RouteScope::Universe,
            (Some(Scope::Link), ..) => RouteScope::Link,
            (Some(Scope::Host), ..) => RouteScope::Host,
            // As `ip route`: a route straight onto a link is scope link.
            (None, None, RouteKind::Unicast) => RouteScope::Link,
            (None, ..) => RouteScope::Universe,
        };
        b = b.scope(scope).kind(match r.kind {
            RouteKind::Unicast => RouteType::Unicast,
            RouteKind::Blackhole => RouteType::BlackHole,
            RouteKind::Unreachable => RouteType::Unreachable,
            RouteKind::Prohibit => RouteType::Prohibit,
        });
        let msg = b.build();
        let what = format!("{}/{}", r.dest.0, r.dest.1);
        let res = if add {
            self.handle.route().add(msg).execute().await
        } else {
            self.handle.route().del(msg).execute().await
        };
        match res {
            Ok(()) => Ok(true),
            Err(e) if add && errno(&e) == Some(Errno::EEXIST) => Ok(false),
            Err(e) if !add && errno(&e) == Some(Errno::ESRCH) => Ok(false),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "{} the route to {what}",
                    if add { "adding" } else { "removing" }
                )
            }),
        }
    }

    /// Adds a group's policy rule (`add`), or removes it.
    pub async fn rule(&self, r: &RuleSpec, add: bool) -> Result<bool> {
        let mut req = self
            .handle
            .rule()
            .add()
            .table_id(r.table)
            .action(RuleAction::ToTable);
        if let Some(p) = r.priority {
            req = req.priority(p);
        }
        if let Some(m) = r.fwmark {
            req = req.fw_mark(m);
        }
        if let Some(i) = &r.iif {
            req = req.input_interface(i.clone());
        }
        if let Some(o) = &r.oif {
            req = req.output_interface(o.clone());
        }
        let v6 = r.from.or(r.to).is_some_and(|(a, _)| a.is_ipv6());
        let msg = if v6 {
            let mut q = req.v6();
            if let Some((IpAddr::V6(a), l)) = r.from {
                q = q.source_prefix(a, l);
            }
            if let Some((IpAddr::V6(a), l)) = r.to {
                q = q.destination_prefix(a, l);
            }
            q.message_mut().clone()
        } else {
            let mut q = req.v4();
            if let Some((IpAddr::V4(a), l)) = r.from {
                q = q.source_prefix(a, l);
            }
            if let Some((IpAddr::V4(a), l)) = r.to {
                q = q.destination_prefix(a, l);
            }
            q.message_mut().clone()
        };
        let res = if add {
            let mut q = self.handle.rule().add();
            *q.message_mut() = msg;
            q.execute().await
        } else {
            self.handle.rule().del(msg).execute().await
        };
        match res {
            Ok(()) => Ok(true),
            Err(e) if add && errno(&e) == Some(Errno::EEXIST) => Ok(false),
            Err(e) if !add && errno(&e) == Some(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "{} the rule to table {}",
                    if add { "adding" } else { "removing" },
                    r.table
                )
            }),
        }
    }
}

/// A route the builder refused (the parser keeps families consistent).
fn invalid(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Link changes as the kernel announces them (RTMGRP_LINK): the controller learns
/// that a link went down or came back the moment it happens, without asking.
pub struct LinkEvents {
    rx: futures_channel::mpsc::UnboundedReceiver<(
        rtnetlink::packet_core::NetlinkMessage<rtnetlink::packet_route::RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
    task: JoinHandle<()>,
}

/// One announced change of an interface or of its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// New or changed (flags, name, address).
    Changed(LinkInfo),
    /// Deleted.
    Removed { ifindex: u32 },
    /// An address was added to (`present`) or removed from an interface.
    Address {
        ifindex: u32,
        addr: IpAddr,
        present: bool,
    },
}

impl LinkEvents {
    /// Subscribes in the calling thread's network namespace. Subscribe before
    /// reading the links' state, so that no change falls between the two.
    pub fn subscribe() -> Result<Self> {
        use rtnetlink::sys::AsyncSocket;
        let runtime = tokio::runtime::Handle::try_current()
            .context("LinkEvents::subscribe needs to run inside a tokio runtime")?;
        let (mut conn, _handle, rx) =
            rtnetlink::new_connection().context("opening a NETLINK_ROUTE socket")?;
        conn.socket_mut()
            .socket_mut()
            .bind(&rtnetlink::sys::SocketAddr::new(
                0,
                rtnetlink::constants::RTMGRP_LINK
                    | rtnetlink::constants::RTMGRP_IPV4_IFADDR
                    | rtnetlink::constants::RTMGRP_IPV6_IFADDR,
            ))
            .context("subscribing to link and address changes (RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR)")?;
        Ok(Self {
            rx,
            task: runtime.spawn(conn),
        })
    }

    /// The next link or address change; None when the socket closed.
    pub async fn next(&mut self) -> Option<LinkEvent> {
        use futures_util::StreamExt;
        use rtnetlink::{packet_core::NetlinkPayload, packet_route::RouteNetlinkMessage};
        while let Some((msg, _)) = self.rx.next().await {
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                    return Some(LinkEvent::Changed(link_info(&l)))
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
                    return Some(LinkEvent::Removed {
                        ifindex: l.header.index,
                    })
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) => {
                    if let Some(addr) = local_addr(&a) {
                        return Some(LinkEvent::Address {
                            ifindex: a.header.index,
                            addr,
                            present: true,
                        });
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(a)) => {
                    if let Some(addr) = local_addr(&a) {
                        return Some(LinkEvent::Address {
                            ifindex: a.header.index,
                            addr,
                            present: false,
                        });
                    }
                }
                _ => {}
            }
        }
        None
    }
}

impl Drop for LinkEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// True when `addr` is inside `net/prefix`, for either family (never across families).
pub fn in_prefix(addr: std::net::IpAddr, net: std::net::IpAddr, prefix: u8) -> bool {
    use std::net::IpAddr::{V4, V6};
    match (addr, net) {
        (V4(a), V4(n)) => in_subnet(a, n, prefix),
        (V6(a), V6(n)) => {
            let mask = match prefix {
                0 => 0,
                1..=128 => u128::MAX << (128 - u32::from(prefix)),
                _ => return false,
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn check_prefix(prefix: u8, max: u8) -> Result<()> {
    if prefix > max {
        let family = if max == 32 { "IPv4" } else { "IPv6" };
        bail!("{family} prefix length {prefix} is over {max}");
    }
    Ok(())
}

/// The kernel's errno of a netlink NACK.
fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(Errno::from_raw(-msg.raw_code())),
        _ => None,
    }
}

/// The first link of a single-link request; ENODEV means no such link.
async fn one_link(
    stream: impl futures_util::Stream<Item = Result<LinkMessage, rtnetlink::Error>>,
) -> Result<Option<LinkInfo>> {
    let mut stream = std::pin::pin!(stream);
    match stream.try_next().await {
        Ok(Some(msg)) => Ok(Some(link_info(&msg))),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        name: String::new(),
        ifindex: msg.header.index,
        mac: [0; 6],
        up: false,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => info.name = name.clone(),
            LinkAttribute::Address(a) => {
                if let Ok(mac) = <[u8; 6]>::try_from(a.as_slice()) {
                    info.mac = mac;
                }
            }
            _ => {}
        }
    }
    let flags = msg.header.flags;
    info.up =
        flags.contains(LinkFlags::Up) && flags.intersects(LinkFlags::LowerUp | LinkFlags::Running);
    info
}

/// IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on a
/// point-to-point link); some messages (all IPv6 ones but point-to-point)
/// carry only IFA_ADDRESS.
fn local_addr(msg: &AddressMessage) -> Option<IpAddr> {
    let find = |local: bool| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) if local => Some(*ip),
            AddressAttribute::Address(ip) if !local => Some(*ip),
            _ => None,
        })
    };
    find(true).or_else(|| find(false))
}

#[cfg(test)]
mod tests {
    use super::in_subnet;
    use std::net::Ipv4Addr;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn inside_and_outside() {
        assert!(in_subnet(ip("10.0.0.100"), ip("10.0.0.0"), 24));
        assert!(in_subnet(ip("10.0.0.100"), ip("10.0.0.1"), 24)); // host bits ignored
        assert!(!in_subnet(ip("10.0.1.100"), ip("10.0.0.0"), 24));
        assert!(in_subnet(ip("10.0.1.100"), ip("10.0.0.0"), 23));
        assert!(!in_subnet(ip("10.0.2.100"), ip("10.0.0.0"), 23));
    }

    #[test]
    fn edge_prefixes() {
        assert!(in_subnet(ip("192.168.1.1"), ip("10.0.0.0"), 0));
        assert!(in_subnet(ip("10.0.0.1"), ip("10.0.0.1"), 32));
        assert!(!in_subnet(ip("10.0.0.2"), ip("10.0.0.1"), 32));
        assert!(in_subnet(ip("128.0.0.0"), ip("255.0.0.0"), 1));
        assert!(!in_subnet(ip("127.0.0.0"), ip("128.0.0.0"), 1));
        assert!(!in_subnet(ip("10.0.0.1"), ip("10.0.0.1"), 33));
    }

    #[test]
    fn in_prefix_covers_both_families() {
        let a: std::net::IpAddr = "fd00:203::5".parse().unwrap();
        let n: std::net::IpAddr = "fd00:203::1".parse().unwrap();
        use super::in_prefix;
        assert!(in_prefix(a, n, 64));
        assert!(!in_prefix(a, "fd00:204::1".parse().unwrap(), 64));
        assert!(in_prefix(a, "fd00:204::1".parse().unwrap(), 16));
        assert!(
            !in_prefix(a, "10.0.0.1".parse().unwrap(), 0),
            "never across families"
        );
        assert!(in_prefix(
            "10.0.0.5".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            24
        ));
        assert!(!in_prefix(a, n, 129));
    }
}
