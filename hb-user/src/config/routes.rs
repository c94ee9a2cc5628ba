//! A group's `routes` and `rules` (keepalived's `virtual_routes` and
//! `virtual_rules`): added when the group is taken, removed when it is
//! released. The syntax is keepalived's (`ip route` / `ip rule` words), the
//! subset hb carries: anything else is refused by name, so nothing is dropped
//! silently.

use std::net::IpAddr;

/// What a route does with what it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Unicast,
    Blackhole,
    Unreachable,
    Prohibit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Link,
    Host,
}

/// `[blackhole|unreachable|prohibit] DEST [src ADDR] [via|gw ADDR] [dev IF]
/// [metric N] [table N] [scope global|link|host]` (`src` may also come first,
/// as keepalived allows; DEST is ADDR/PREFIX, ADDR or `default`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub kind: RouteKind,
    pub dest: (IpAddr, u8),
    pub src: Option<IpAddr>,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
    pub metric: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<Scope>,
}

/// `[from PREFIX] [to PREFIX] [table N] [priority N] [iif IF] [oif IF]
/// [fwmark N]`, with `from` or `to` (`prio` and `preference` are
/// `priority`; `lookup` is `table`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub from: Option<(IpAddr, u8)>,
    pub to: Option<(IpAddr, u8)>,
    pub table: u32,
    pub priority: Option<u32>,
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub fwmark: Option<u32>,
}

/// ADDR/PREFIX or ADDR (a host), or `default` (`v6` picks its family).
fn prefix(s: &str, v6: bool) -> Result<(IpAddr, u8), String> {
    if s == "default" {
        let any: IpAddr = if v6 {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        };
        return Ok((any, 0));
    }
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("{s:?} is not an address or prefix"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match p {
        None => max,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|&l| l <= max)
            .ok_or_else(|| format!("{s:?}: the prefix length is 0 to {max}"))?,
    };
    Ok((addr, len))
}

fn addr(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| format!("{s:?} is not an address"))
}

fn number(key: &str, s: &str) -> Result<u32, String> {
    s.parse().map_err(|_| format!("{key} {s:?}: not a number"))
}

fn dev(s: &str) -> Result<String, String> {
    super::parse::iface_name(s)?;
    Ok(s.to_owned())
}

/// Walks `key value` pairs, calling `take` for each; a key without a value
/// or one `take` does not know is an error naming it.
fn pairs<'a>(
    words: &[&'a str],
    mut take: impl FnMut(&'a str, &'a str) -> Result<bool, String>,
) -> Result<(), String> {
    let mut w = words.iter();
    while let Some(&k) = w.next() {
        let Some(&v) = w.next() else {
            return Err(format!("{k} without a value"));
        };
        if !take(k, v)? {
            return Err(format!("{k:?} is not supported here"));
        }
    }
    Ok(())
}

pub fn route(s: &str) -> Result<RouteSpec, String> {
    let mut words: Vec<&str> = s.split_whitespace().collect();
    let mut src = None;
    // keepalived allows `src ADDR` before the destination.
    if words.first() == Some(&"src") && words.len() >= 2 {
        src = Some(addr(words[1])?);
        words.drain(..2);
    }
    let kind = match words.first() {
        Some(&"blackhole") => RouteKind::Blackhole,
        Some(&"unreachable") => RouteKind::Unreachable,
        Some(&"prohibit") => RouteKind::Prohibit,
        _ => RouteKind::Unicast,
    };
    if kind != RouteKind::Unicast {
        words.remove(0);
    }
    let Some((&d, rest)) = words.split_first() else {
        return Err("no destination".into());
    };
    // The family of `default` follows the other addresses.
    let v6 = s.contains(':');
    let mut r = RouteSpec {
        kind,
        dest: prefix(d, v6)?,
        src,
        via: None,
        dev: None,
        metric: None,
        table: None,
        scope: None,
    };
    pairs(rest, |k, v| {
        match k {
            "src" => r.src = Some(addr(v)?),
            "via" | "gw" => r.via = Some(addr(v)?),
            "dev" => r.dev = Some(dev(v)?),
            "metric" | "priority" | "preference" => r.metric = Some(number(k, v)?),
            "table" => r.table = Some(number(k, v)?),
            "scope" => {
                r.scope = Some(match v {
                    "global" | "universe" => Scope::Global,
                    "link" => Scope::Link,
                    "host" => Scope::Host,
                    _ => return Err(format!("scope {v:?}: global, link or host")),
                })
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let family = r.dest.0.is_ipv4();
    for a in [r.src, r.via].into_iter().flatten() {
        if a.is_ipv4() != family {
            return Err(format!("{a} is not of the destination's family"));
        }
    }
    if kind != RouteKind::Unicast && (r.via.is_some() || r.dev.is_some()) {
        return Err("a blackhole, unreachable or prohibit route has no via or dev".into());
    }
    if kind == RouteKind::Unicast && r.via.is_none() && r.dev.is_none() {
        return Err("a route needs via ADDR or dev IF".into());
    }
    Ok(r)
}

pub fn rule(s: &str) -> Result<RuleSpec, String> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let v6 = s.contains(':');
    let mut r = RuleSpec {
        from: None,
        to: None,
        table: 0,
        priority: None,
        iif: None,
        oif: None,
        fwmark: None,
    };
    pairs(&words, |k, v| {
        match k {
            "from" => r.from = Some(prefix(v, v6)?),
            "to" => r.to = Some(prefix(v, v6)?),
            "table" | "lookup" => r.table = number(k, v)?,
            "priority" | "prio" | "preference" | "pref" => r.priority = Some(number(k, v)?),
            "iif" => r.iif = Some(dev(v)?),
            "oif" => r.oif = Some(dev(v)?),
            "fwmark" => r.fwmark = Some(number(k, v)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if r.from.is_none() && r.to.is_none() {
        return Err("a rule needs from or to".into());
    }
    if r.table == 0 {
        return Err("a rule needs table N".into());
    }
    if let (Some(f), Some(t)) = (r.from, r.to) {
        if f.0.is_ipv4() != t.0.is_ipv4() {
            return Err("from and to are of different families".into());
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalived_routes_parse() {
        let r = route("src 192.168.100.1 192.168.109.0/24 via 192.168.200.254 dev eth1").unwrap();
        assert_eq!(
            (r.dest, r.src, r.via, r.dev.as_deref()),
            (
                ("192.168.109.0".parse().unwrap(), 24),
                Some("192.168.100.1".parse().unwrap()),
                Some("192.168.200.254".parse().unwrap()),
                Some("eth1")
            )
        );
        let r = route("0.0.0.0/0 gw 192.168.0.1 table 100").unwrap();
        assert_eq!((r.dest.1, r.table), (0, Some(100)));
        let r = route("blackhole 192.168.113.1/32").unwrap();
        assert_eq!(r.kind, RouteKind::Blackhole);
        let r = route("default via fd00::1 metric 5").unwrap();
        assert_eq!((r.dest.0.is_ipv6(), r.metric), (true, Some(5)));
        for (bad, says) in [
            (
                "192.168.113.0/24 via 192.168.100.252 or 192.168.100.253",
                "\"or\"",
            ),
            ("10.0.0.0/8", "via ADDR or dev IF"),
            ("10.0.0.0/33 dev eth0", "prefix length"),
            ("10.0.0.0/8 via fd00::1", "family"),
            ("10.0.0.0/8 dev", "without a value"),
            ("blackhole 10.0.0.0/8 dev eth0", "no via or dev"),
        ] {
            let e = route(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn keepalived_rules_parse() {
        let r = rule("from 192.168.200.0/24 table 2").unwrap();
        assert_eq!(
            (r.from, r.table),
            (Some(("192.168.200.0".parse().unwrap(), 24)), 2)
        );
        let r = rule("to 10.1.0.0/16 lookup 7 prio 100 fwmark 3").unwrap();
        assert_eq!((r.priority, r.fwmark, r.table), (Some(100), Some(3), 7));
        for (bad, says) in [
            ("to 192.168.200./24 table 2", "not an address"),
            ("from 10.0.0.0/8", "table"),
            ("table 5", "from or to"),
            ("from 10.0.0.0/8 table 5 goto 7", "\"goto\""),
        ] {
            let e = rule(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
