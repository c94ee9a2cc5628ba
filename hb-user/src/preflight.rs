//! The VIPs against the addresses already on this machine, checked before
//! anything changes. hb adds a VIP when it takes over and removes it when it
//! releases: a VIP that is already an address of this host would answer
//! whatever the election decides, or be taken from the host at the first
//! release.

use crate::{
    config::{ConfigError, Vip},
    controller::RunError,
    netlink::{self, Netlink},
};
use std::net::IpAddr;

/// A planned link as `controller::plan` makes it: name, ifindex, MAC, and the
/// peers (id, address) heartbeats go to on it.
pub type Link = (String, u32, [u8; 6], Vec<(u32, IpAddr)>);

/// An interface and its addresses (with prefix lengths), in the kernel's order.
#[derive(Clone, Debug)]
struct Iface {
    name: String,
    ifindex: u32,
    addrs: Vec<(IpAddr, u8)>,
}

/// Refuses (a [`ConfigError`] naming `--vip`) a VIP that is an address of
/// another interface than its own, or the address its own interface sends
/// heartbeats from; `vips` are each VIP with the ifindex it goes on.
pub async fn check_vips(
    nl: &Netlink,
    links: &[Link],
    vips: impl IntoIterator<Item = (Vip, u32)>,
) -> Result<(), RunError> {
    let vips: Vec<(Vip, u32)> = vips.into_iter().collect();
    if vips.is_empty() {
        return Ok(());
    }
    let peers: Vec<(u32, IpAddr, u32)> = links
        .iter()
        .flat_map(|l| l.3.iter().map(|&(id, addr)| (id, addr, l.1)))
        .collect();
    let (v4, v6) = (
        vips.iter().any(|(v, _)| v.addr.is_ipv4()),
        vips.iter().any(|(v, _)| v.addr.is_ipv6()),
    );
    let list = nix::net::if_::if_nameindex()
        .map_err(|e| anyhow::Error::new(e).context("listing the interfaces"))?;
    let mut ifaces = Vec::new();
    for i in list.iter() {
        let ifindex = i.index();
        let mut addrs: Vec<(IpAddr, u8)> = Vec::new();
        if v4 {
            let a = nl.ipv4_addrs(ifindex).await?;
            addrs.extend(a.into_iter().map(|(a, p)| (a.into(), p)));
        }
        if v6 {
            let a = nl.ipv6_addrs(ifindex).await?;
            addrs.extend(a.into_iter().map(|(a, p)| (a.into(), p)));
        }
        ifaces.push(Iface {
            name: i.name().to_string_lossy().into_owned(),
            ifindex,
            addrs,
        });
    }
    match refusal(&vips, &peers, &ifaces) {
        Some(m) => Err(RunError::Config(ConfigError::new("--vip", m))),
        None => Ok(()),
    }
}

/// Why one of `vips` (each with the ifindex it is placed on) cannot be used,
/// given `peers` (id, address, ifindex heartbeats to it leave from) and every
/// interface's addresses.
///
/// On its own interface a VIP may be present: a crashed holder's stays until
/// the restarted controller's first decision. It is refused there only as the
/// address heartbeats to a peer go out from, which is the host's own: for
/// IPv4 the first address whose subnet holds the peer (the kernel lists a
/// subnet's primary address before its secondaries, and a VIP added next to
/// the host's address is a secondary); for IPv6, which has no secondaries, the
/// only addresses there being VIPs.
fn refusal(vips: &[(Vip, u32)], peers: &[(u32, IpAddr, u32)], ifaces: &[Iface]) -> Option<String> {
    let name = |ifindex: u32| {
        ifaces
            .iter()
            .find(|i| i.ifindex == ifindex)
            .map_or_else(|| format!("#{ifindex}"), |i| i.name.clone())
    };
    let is_vip = |a: IpAddr| vips.iter().any(|(v, _)| v.addr == a);
    for &(vip, home) in vips {
        if let Some(other) = ifaces
            .iter()
            .find(|i| i.ifindex != home && i.addrs.iter().any(|&(a, _)| a == vip.addr))
        {
            return Some(format!(
                "{vip} is already an address of {} (hb would place it on {}): this host answers for it whatever the election decides",
                other.name,
                name(home)
            ));
        }
        let Some(own) = ifaces.iter().find(|i| i.ifindex == home) else {
            continue;
        };
        for &(id, peer, _) in peers.iter().filter(|p| p.2 == home) {
            let towards: Vec<IpAddr> = own
                .addrs
                .iter()
                .filter(|&&(a, p)| netlink::in_prefix(peer, a, p))
                .map(|&(a, _)| a)
                .collect();
            let source = match vip.addr {
                IpAddr::V4(_) => towards.first() == Some(&vip.addr),
                IpAddr::V6(_) => towards.contains(&vip.addr) && towards.iter().all(|&a| is_vip(a)),
            };
            if source {
                return Some(format!(
                    "{vip} is {}'s own address towards peer {id} ({peer}), the one heartbeats leave from: a VIP must be an address no host has",
                    own.name
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(s: &str) -> Vip {
        let (a, p) = s.split_once('/').unwrap();
        Vip {
            addr: a.parse().unwrap(),
            prefix: p.parse().unwrap(),
        }
    }

    fn iface(name: &str, ifindex: u32, addrs: &[&str]) -> Iface {
        Iface {
            name: name.into(),
            ifindex,
            addrs: addrs
                .iter()
                .map(|s| {
                    let v = vip(s);
                    (v.addr, v.prefix)
                })
                .collect(),
        }
    }

    /// eth0 (#2) with the host's 10.0.0.1/24 and fd00::1/64 and `extra`,
    /// lo (#1), eth1 (#3) with 10.1.0.1/24; the peer 10.0.0.2 (and fd00::2) on eth0.
    fn host(extra: &[&str], eth1: &[&str]) -> Vec<Iface> {
        let mut eth0 = vec!["10.0.0.1/24", "fd00::1/64", "fe80::1/64"];
        eth0.extend_from_slice(extra);
        let mut e1 = vec!["10.1.0.1/24"];
        e1.extend_from_slice(eth1);
        vec![
            iface("lo", 1, &["127.0.0.1/8", "::1/128"]),
            iface("eth0", 2, &eth0),
            iface("eth1", 3, &e1),
        ]
    }

    fn peers() -> Vec<(u32, IpAddr, u32)> {
        vec![
            (2, "10.0.0.2".parse().unwrap(), 2),
            (2, "fd00::2".parse().unwrap(), 2),
        ]
    }

    fn check(v: &str, ifaces: &[Iface]) -> Option<String> {
        refusal(&[(vip(v), 2)], &peers(), ifaces)
    }

    #[test]
    fn a_vip_nobody_has_passes() {
        assert_eq!(check("10.0.0.100/24", &host(&[], &[])), None);
        assert_eq!(check("fd00::100/64", &host(&[], &[])), None);
    }

    #[test]
    fn a_crashed_holders_vip_left_on_its_own_interface_passes() {
        // Next to the host's address: a secondary, listed after it.
        assert_eq!(check("10.0.0.100/24", &host(&["10.0.0.100/24"], &[])), None);
        // As a /32 it has a subnet of its own, which holds no peer.
        assert_eq!(check("10.0.0.100/32", &host(&["10.0.0.100/32"], &[])), None);
        // IPv6 lists newer addresses first; the host's own is still there.
        let mut h = host(&[], &[]);
        h[1].addrs.insert(0, (vip("fd00::100/64").addr, 64));
        assert_eq!(check("fd00::100/64", &h), None);
    }

    #[test]
    fn a_vip_on_another_interface_is_refused() {
        let m = check("10.1.0.1/24", &host(&[], &[])).unwrap();
        assert!(
            m.contains("already an address of eth1 (hb would place it on eth0)"),
            "{m}"
        );
        let m = check("10.0.0.100/24", &host(&[], &["10.0.0.100/32"])).unwrap();
        assert!(m.contains("eth1"), "{m}");
        // On lo, as load-balanced real servers have it.
        let mut h = host(&[], &[]);
        h[0].addrs.push((vip("10.0.0.100/32").addr, 32));
        assert!(check("10.0.0.100/24", &h).unwrap().contains("of lo"));
        let mut h = host(&[], &[]);
        h[2].addrs.push((vip("fd00::100/64").addr, 64));
        assert!(check("fd00::100/64", &h).unwrap().contains("of eth1"));
    }

    #[test]
    fn the_address_heartbeats_leave_from_is_refused() {
        let m = check("10.0.0.1/24", &host(&[], &[])).unwrap();
        assert!(
            m.contains("eth0's own address towards peer 2 (10.0.0.2)"),
            "{m}"
        );
        // The host's address as a secondary behind the VIP: still the VIP first.
        let h = vec![iface("eth0", 2, &["10.0.0.100/24", "10.0.0.1/24"])];
        assert!(check("10.0.0.100/24", &h).is_some());
        // IPv6: the only address towards the peer.
        let h = vec![iface("eth0", 2, &["fd00::1/64", "fe80::1/64"])];
        let m = check("fd00::1/64", &h).unwrap();
        assert!(m.contains("towards peer 2 (fd00::2)"), "{m}");
    }

    #[test]
    fn each_link_is_checked_against_the_peers_on_it() {
        // The peer is reached over eth1: its address there is the source, and
        // eth0's address (placed on eth0, no peer there) is not.
        let p = [(2, "10.1.0.2".parse().unwrap(), 3)];
        let m = refusal(&[(vip("10.1.0.1/24"), 3)], &p, &host(&[], &[])).unwrap();
        assert!(
            m.contains("eth1's own address towards peer 2 (10.1.0.2)"),
            "{m}"
        );
        assert_eq!(
            refusal(&[(vip("10.1.0.100/24"), 3)], &p, &host(&[], &[])),
            None
        );
    }
}
