//! Parsers of single settings: a value as the user wrote it (a flag's string,
//! or a file value turned into one) to its type, or a message saying what was
//! expected. Rules between settings are in `validate.rs`.

use std::{collections::HashSet, net::IpAddr, path::PathBuf, str::FromStr, time::Duration};

use super::{PeerAddr, Vip, XdpModeArg};

/// Keeps every duration far from overflow wherever it is turned into
/// nanoseconds or timer deadlines; no sane setting comes near it.
const MAX_DURATION: Duration = Duration::from_secs(3600);

/// "10ms", "2s", "1.5s", "100 ms" → Duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("expected a duration with a unit such as 100ms, 1.5s or 2s, got {s:?} ({e})")
    })
}

/// A duration of at most an hour.
pub fn duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > MAX_DURATION {
        return Err(format!("{s:?} is too long (at most 1h)"));
    }
    Ok(d)
}

/// The heartbeat interval: at least 1 ms, the sender's resolution.
pub fn interval(s: &str) -> Result<Duration, String> {
    at_least(s, Duration::from_millis(1), "1ms")
}

/// A gratuitous ARP refresh more often than 10 per second would be a flood.
pub fn garp_refresh(s: &str) -> Result<Duration, String> {
    at_least(s, Duration::from_millis(100), "100ms")
}

pub fn at_least(s: &str, min: Duration, text: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d < min {
        return Err(format!("must be at least {text}"));
    }
    Ok(d)
}

/// `etcd://HOST:PORT[,HOST:PORT...]` → the endpoints as the etcd client
/// takes them (`http://HOST:PORT`).
pub fn witness_url(s: &str) -> Result<Vec<String>, String> {
    let form = "etcd://HOST:PORT[,HOST:PORT...]";
    let rest =
        (s.trim().strip_prefix("etcd://")).ok_or_else(|| format!("expected {form}, got {s:?}"))?;
    let mut out = Vec::new();
    for hp in rest.split(',').map(str::trim) {
        let bad = |why: &str| format!("{hp:?} in {s:?}: {why} (expected {form})");
        let (host, port) = hp.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        if host.is_empty() || host.contains('/') {
            return Err(bad("no host"));
        }
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(bad("an IPv6 address goes in brackets"));
        }
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad("the port must be 1-65535"));
        }
        out.push(format!("http://{hp}"));
    }
    Ok(out)
}

impl FromStr for crate::election::WitnessDown {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Self::Keep, Self::Heartbeats]
            .into_iter()
            .find(|d| d.name() == s.trim())
            .ok_or_else(|| format!("expected keep or heartbeats, got {s:?}"))
    }
}

/// A key prefix in etcd: absolute, without a trailing slash.
pub fn key_prefix(s: &str) -> Result<String, String> {
    let p = s.trim();
    if !p.starts_with('/') || p.len() < 2 || p.ends_with('/') || p.contains(char::is_whitespace) {
        return Err(format!(
            "expected a key prefix such as /hb (a leading /, no trailing /, no spaces), got {s:?}"
        ));
    }
    Ok(p.to_string())
}

pub fn int<T: TryFrom<u64> + Into<u64> + Copy>(s: &str, min: T, max: T) -> Result<T, String> {
    let range = || {
        format!(
            "expected an integer from {} to {}, got {s:?}",
            min.into(),
            max.into()
        )
    };
    let n: u64 = s.trim().parse().map_err(|_| range())?;
    if n < min.into() || n > max.into() {
        return Err(range());
    }
    T::try_from(n).map_err(|_| range())
}

pub fn node_id(s: &str) -> Result<u32, String> {
    int(s, 1, u32::MAX)
}

pub fn bool_value(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("expected true or false, got {s:?}")),
    }
}

/// A command line run by `sh -c`.
pub fn command(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

pub fn socket_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not ADDR:PORT (127.0.0.1:9694, [::1]:9694)"))
}

pub fn path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(PathBuf::from(s))
    }
}

impl FromStr for XdpModeArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "native" => Ok(Self::Native),
            "generic" => Ok(Self::Generic),
            _ => Err(format!("expected auto, native or generic, got {s:?}")),
        }
    }
}

/// The kernel's rule for interface names (dev_valid_name), so a typo fails
/// here rather than at attach time with a less helpful errno.
pub fn iface_name(name: &str) -> Result<(), String> {
    let ok = (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not an interface name (1 to 15 bytes, no '/', ':' or whitespace)"
        ))
    }
}

pub fn iface_list(list: &[String]) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Err("at least one interface is needed".into());
    }
    let mut seen = HashSet::new();
    for name in list {
        iface_name(name)?;
        if !seen.insert(name.as_str()) {
            return Err(format!("{name} is given twice"));
        }
    }
    Ok(list.to_vec())
}

/// A unicast address a peer can have: not unspecified, broadcast, multicast or loopback.
fn unicast(addr: IpAddr) -> bool {
    let special = match addr {
        IpAddr::V4(a) => a.is_broadcast(),
        IpAddr::V6(_) => false,
    };
    !(addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() || special)
}

pub fn peer(s: &str) -> Result<PeerAddr, String> {
    let bad = |why: &str| {
        format!("expected ID@ADDRESS such as 2@192.168.1.2 or 2@fd00::2, got {s:?} ({why})")
    };
    let (id, addr) = s.trim().split_once('@').ok_or_else(|| bad("no '@'"))?;
    let id = node_id(id).map_err(|_| bad("ID must be an integer from 1 to 4294967295"))?;
    // "[fd00::2]" is accepted too, as URLs write IPv6 addresses.
    let addr = addr.trim().trim_start_matches('[').trim_end_matches(']');
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| bad("not an IPv4 or IPv6 address"))?;
    if !unicast(addr) {
        return Err(bad("not a unicast address"));
    }
    Ok(PeerAddr { id, addr })
}

pub fn peer_list(list: &[String]) -> Result<Vec<PeerAddr>, String> {
    if list.is_empty() {
        return Err("at least one peer is needed".into());
    }
    let mut peers: Vec<PeerAddr> = Vec::with_capacity(list.len());
    for s in list {
        let p = peer(s)?;
        // One address is one node: the same address under two ids would make
        // heartbeats from it count for whichever id the packet claims.
        if let Some(q) = peers.iter().find(|q| q.addr == p.addr) {
            return Err(if q.id == p.id {
                format!("{s} is given twice")
            } else {
                format!(
                    "{} is given for both peer {} and peer {}",
                    p.addr, q.id, p.id
                )
            });
        }
        peers.push(p);
    }
    let ids: HashSet<u32> = peers.iter().map(|p| p.id).collect();
    if ids.len() > hb_common::maps::MAX_PEERS as usize {
        return Err(format!(
            "{} peers given, at most {} are supported",
            ids.len(),
            hb_common::maps::MAX_PEERS
        ));
    }
    Ok(peers)
}

pub fn vip(s: &str) -> Result<Vip, String> {
    let bad = |why: &str| {
        format!("expected ADDRESS/PREFIX such as 10.0.0.100/24 or fd00::100/64, got {s:?} ({why})")
    };
    let (addr, prefix) = s
        .trim()
        .split_once('/')
        .ok_or_else(|| bad("no '/PREFIX'"))?;
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| bad("not an IPv4 or IPv6 address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .trim()
        .parse()
        .ok()
        .filter(|p| (1..=max).contains(p))
        .ok_or_else(|| bad(&format!("PREFIX must be 1 to {max}")))?;
    let link_local = matches!(addr, IpAddr::V6(a) if a.is_unicast_link_local());
    if !unicast(addr) || link_local {
        return Err(bad("not a usable unicast address"));
    }
    Ok(Vip { addr, prefix })
}

pub fn vip_list(list: &[String]) -> Result<Vec<Vip>, String> {
    let mut vips: Vec<Vip> = Vec::with_capacity(list.len());
    for s in list {
        let v = vip(s)?;
        if vips.iter().any(|w| w.addr == v.addr) {
            return Err(format!("{} is given twice", v.addr));
        }
        vips.push(v);
    }
    Ok(vips)
}

/// Ping targets: unicast IPv4 or IPv6 addresses, no duplicates. Not link-local
/// IPv6 (the echo would need an interface to leave by) nor IPv4-mapped IPv6.
pub fn ping_list(list: &[String]) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for s in list {
        let a: IpAddr = s
            .trim()
            .parse()
            .map_err(|_| format!("expected an IPv4 or IPv6 address, got {s:?}"))?;
        let unicast = match a {
            IpAddr::V4(v) => !(v.is_unspecified() || v.is_broadcast() || v.is_multicast()),
            IpAddr::V6(v) => !(v.is_unspecified() || v.is_multicast()),
        };
        if !unicast {
            return Err(format!("{a} is not a unicast address"));
        }
        if let IpAddr::V6(v) = a {
            if v.is_unicast_link_local() || v.to_ipv4_mapped().is_some() {
                return Err(format!(
                    "{a}: give a global or unique-local IPv6 address, or IPv4 as such"
                ));
            }
        }
        if out.contains(&a) {
            return Err(format!("{a} is given twice"));
        }
        out.push(a);
    }
    Ok(out)
}
