//! `hb-user import-keepalived FILE`: an hb.toml for a keepalived.conf. The
//! VRRP parts map onto hb's groups, checks and sync groups; every directive that
//! does not carry over is listed as `line N: name: why`, so that nothing is
//! dropped without the user knowing.

pub mod lexer;

use lexer::{Node, SyntaxError};
use std::{io::Write, net::IpAddr, path::Path, process::ExitCode};

/// The conversion of one file: the TOML text and the directives left behind.
#[derive(Debug, Default)]
pub struct Converted {
    pub toml: String,
    pub skipped: Vec<String>,
}

/// Prints the TOML on stdout and the skips on stderr: exit 0, or 2 for an
/// unreadable file or a syntax error.
pub fn run(file: &Path) -> ExitCode {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "hb-user import-keepalived: cannot read {}: {e}",
                file.display()
            );
            return ExitCode::from(2);
        }
    };
    // Lossy: a stray Latin-1 byte in a comment should not stop the conversion.
    let text = String::from_utf8_lossy(&bytes);
    match convert(&text, &file.display().to_string()) {
        Ok(c) => {
            // Write errors (a closed pipe) are the reader's business, not a panic.
            let _ = std::io::stdout().lock().write_all(c.toml.as_bytes());
            let mut err = std::io::stderr().lock();
            for s in &c.skipped {
                let _ = writeln!(err, "{s}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "hb-user import-keepalived: {}: line {}: {}",
                file.display(),
                e.line,
                e.msg
            );
            ExitCode::from(2)
        }
    }
}

/// The hb.toml for `text`, read from `source` (named in the header).
pub fn convert(text: &str, source: &str) -> Result<Converted, SyntaxError> {
    let tree = lexer::parse(&lexer::lex(text))?;
    let mut c = Conv::default();
    for n in &tree {
        c.top(n);
    }
    c.prune();
    Ok(Converted {
        toml: c.render(source),
        skipped: c.skipped,
    })
}

/// keepalived's advert_int when an instance sets none.
const DEFAULT_ADVERT_MS: u64 = 1000;

/// One `[kind.name]` table: its keys in order, each written once.
struct Table {
    kind: &'static str,
    name: String,
    comments: Vec<String>,
    keys: Vec<(String, String)>,
    /// What names other tables, with its line: a group's tracks (check
    /// name, entry), a sync group's members (group name, entry); written as
    /// `track` or `groups` once every table is known (`Conv::prune`).
    refs: Vec<(usize, String, String)>,
}

impl Table {
    fn new(kind: &'static str, name: &str) -> Table {
        Table {
            kind,
            name: name.to_string(),
            comments: Vec::new(),
            keys: Vec::new(),
            refs: Vec::new(),
        }
    }

    fn has(&self, key: &str) -> bool {
        self.keys.iter().any(|(k, _)| k == key)
    }
}

#[derive(Default)]
struct Conv {
    skipped: Vec<String>,
    ifaces: Vec<String>,
    /// Unique peer addresses, in file order.
    peers: Vec<String>,
    /// Every instance's advert interval (ms), with the line that set it.
    intervals: Vec<(Option<usize>, u64)>,
    tables: Vec<Table>,
    /// Each VIP address, and the group that has it.
    vip_owner: std::collections::BTreeMap<String, String>,
}

impl Conv {
    fn skip(&mut self, n: &Node, why: &str) {
        let why = if n.name.starts_with('@') {
            "conditional configuration (keepalived -i) is not supported"
        } else {
            why
        };
        self.skip_word(n.line, &n.name, why);
    }

    fn skip_word(&mut self, line: usize, word: &str, why: &str) {
        self.skipped.push(format!("line {line}: {word}: {why}"));
    }

    /// Sets `key` once: a repeated directive keeps its first value (TOML forbids two).
    /// An instance's or a sync group's notify commands: `notify` gets
    /// keepalived's arguments (`notify_args`), the per-state ones run as written.
    fn notify(&mut self, t: &mut Table, c: &Node) {
        if c.name != "notify" {
            return self.set(t, c, &c.name, quote(&c.args.join(" ")));
        }
        if let Some(s) = self.arg(c) {
            self.set(t, c, "notify", quote(s));
            self.set(t, c, "notify_args", quote("keepalived"));
        }
    }

    fn set(&mut self, t: &mut Table, n: &Node, key: &str, value: String) {
        if t.has(key) {
            self.skip(n, "repeated, the first one is kept");
        } else {
            t.keys.push((key.to_string(), value));
        }
    }

    /// `n`'s single argument, or a skip saying it is missing.
    fn arg<'a>(&mut self, n: &'a Node) -> Option<&'a str> {
        match n.args.as_slice() {
            [a] => Some(a),
            [] => {
                self.skip(n, "no value");
                None
            }
            [a, ..] => {
                self.skip(n, "only the first value is carried over");
                Some(a)
            }
        }
    }

    fn duration(&mut self, n: &Node) -> Option<u64> {
        let a = self.arg(n)?;
        let ms = seconds_to_ms(a);
        if ms.is_none() {
            self.skip(n, &format!("{a:?} is not a duration in seconds"));
        }
        ms
    }

    fn int(&mut self, n: &Node) -> Option<i64> {
        let a = self.arg(n)?;
        let v = a.parse().ok();
        if v.is_none() {
            self.skip(n, &format!("{a:?} is not an integer"));
        }
        v
    }

    fn table_exists(&self, kind: &str, name: &str) -> bool {
        self.tables.iter().any(|t| t.kind == kind && t.name == name)
    }

    /// The block's name (its one argument), or a skip when it has none or is taken.
    fn block_name<'a>(&mut self, n: &'a Node, kind: &str) -> Option<&'a str> {
        let Some(name) = n.args.first() else {
            self.skip(n, "a block without a name");
            return None;
        };
        if self.table_exists(kind, name) {
            self.skip(
                n,
                &format!("{name} is defined twice, the first one is kept"),
            );
            return None;
        }
        Some(name)
    }

    fn top(&mut self, n: &Node) {
        match n.name.as_str() {
            "vrrp_instance" => self.instance(n),
            "vrrp_sync_group" => self.sync_group(n),
            "vrrp_script" => self.script(n),
            "vrrp_track_process" => self.track_process(n),
            "vrrp_track_file" => self.track_file(n),
            "global_defs" => {
                for c in n.kids() {
                    self.skip(c, "global_defs setting not supported by hb");
                }
            }
            "static_ipaddress" | "static_routes" | "static_rules" => self.skip(
                n,
                "not supported by hb: configure it in the system's network setup",
            ),
            "virtual_server" | "virtual_server_group" => {
                self.skip(n, "LVS load balancing is not part of hb")
            }
            "include" => self.skip(n, "not followed: convert the included file separately"),
            _ => self.skip(n, "not supported by hb"),
        }
    }

    fn instance(&mut self, n: &Node) {
        let Some(name) = self.block_name(n, "group") else {
            return;
        };
        let groups = self.tables.iter().filter(|t| t.kind == "group").count();
        if groups == hb_common::wire2::GROUPS {
            let why = format!(
                "hb carries at most {} groups per node: {name} not carried over",
                hb_common::wire2::GROUPS
            );
            return self.skip(n, &why);
        }
        let mut t = Table::new("group", name);
        // hb's `preempt = false` covers what `state BACKUP` + `nopreempt` say.
        let nopreempt = n.kids().iter().any(|c| c.name == "nopreempt");
        let (mut vips, mut routes, mut rules) = (vec![], vec![], vec![]);
        let mut advert = None;
        for c in n.kids() {
            match c.name.as_str() {
                "interface" => {
                    if let Some(i) = self.arg(c) {
                        self.set(&mut t, c, "iface", quote(i));
                        if !self.ifaces.iter().any(|x| x == i) {
                            self.ifaces.push(i.to_string());
                        }
                    }
                }
                "state" if !nopreempt => self.skip(c, "not needed: hb elects by priority"),
                "state" => {}
                "virtual_router_id" => t.comments.push(format!(
                    "# virtual_router_id {}: hb's group ids are 1-8, the same on every node",
                    c.args.join(" ")
                )),
                "priority" => {
                    if let Some(p) = self.int(c) {
                        self.set(&mut t, c, "priority", p.to_string());
                    }
                }
                "advert_int" => {
                    if let Some(ms) = self.duration(c) {
                        advert.get_or_insert((Some(c.line), ms));
                    }
                }
                "nopreempt" => self.set(&mut t, c, "preempt", "false".into()),
                "preempt_delay" => {
                    if let Some(ms) = self.duration(c) {
                        self.set(&mut t, c, "preempt_delay", quote(&fmt_ms(ms)));
                    }
                }
                "virtual_ipaddress" | "virtual_ipaddress_excluded" => {
                    for v in c.kids() {
                        let Some(text) = self.vip(v) else { continue };
                        // A VIP belongs to one group.
                        let addr = v.name.split('/').next().unwrap_or("").to_string();
                        match self.vip_owner.get(&addr) {
                            Some(g) => {
                                let why = format!("already a VIP of group {g}: not carried over");
                                self.skip_word(v.line, &addr, &why);
                            }
                            None => {
                                self.vip_owner.insert(addr, name.to_string());
                                vips.push(text);
                            }
                        }
                    }
                }
                "track_script" | "track_process" | "track_file" => {
                    for e in c.kids() {
                        let entries = self.track_entries(e, false);
                        t.refs
                            .extend(entries.into_iter().map(|(n, q)| (e.line, n, q)));
                    }
                }
                "track_interface" => {
                    for e in c.kids() {
                        let entries = self.track_entries(e, true);
                        t.refs
                            .extend(entries.into_iter().map(|(n, q)| (e.line, n, q)));
                    }
                }
                "notify" | "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" => {
                    self.notify(&mut t, c)
                }
                // Only what `run` reads: the rest is listed with its line.
                "virtual_routes" | "virtual_rules" => {
                    for r in c.kids() {
                        let text = r.text();
                        let parsed = if c.name == "virtual_routes" {
                            crate::config::routes::route(&text).map(|_| ())
                        } else {
                            crate::config::routes::rule(&text).map(|_| ())
                        };
                        match parsed {
                            Ok(()) if c.name == "virtual_routes" => routes.push(quote(&text)),
                            Ok(()) => rules.push(quote(&text)),
                            Err(m) => self.skip_word(r.line, &text, &m),
                        }
                    }
                }
                "unicast_peer" => {
                    for p in c.kids() {
                        self.peer(p);
                    }
                }
                "authentication" => self.skip(c, "replaced by hb's key file (key_file)"),
                _ => self.skip(c, "not supported by hb"),
            }
        }
        self.intervals
            .push(advert.unwrap_or((None, DEFAULT_ADVERT_MS)));
        if vips.is_empty() {
            self.skip(n, &format!("{name} has no virtual_ipaddress"));
        }
        for (key, list) in [("vip", vips), ("routes", routes), ("rules", rules)] {
            if !list.is_empty() {
                t.keys.push((key.into(), array(&list)));
            }
        }
        self.tables.push(t);
    }

    /// `ADDR[/PREFIX] [dev X] [options]` as `"ADDR/PREFIX[ dev X]"`.
    fn vip(&mut self, n: &Node) -> Option<String> {
        let Some(addr) = with_prefix(&n.name) else {
            self.skip(n, "not an IP address or prefix");
            return None;
        };
        let mut out = addr;
        let mut args = n.args.iter();
        while let Some(a) = args.next() {
            let valued = matches!(
                a.as_str(),
                "dev"
                    | "brd"
                    | "broadcast"
                    | "label"
                    | "scope"
                    | "peer"
                    | "metric"
                    | "preferred_lft"
                    | "valid_lft"
                    | "track_group"
            );
            let value = if valued { args.next() } else { None };
            match (a.as_str(), value) {
                ("dev", Some(d)) => {
                    out.push_str(" dev ");
                    out.push_str(d);
                }
                _ => self.skip_word(n.line, a, "VIP option not supported by hb"),
            }
        }
        Some(quote(&out))
    }

    /// The names on a track_* line, each with its `weight W` (name, entry);
    /// a track_interface entry also gets its `[check.IFACE]`.
    fn track_entries(&mut self, n: &Node, iface: bool) -> Vec<(String, String)> {
        let mut names: Vec<(String, Option<String>)> = vec![(n.name.clone(), None)];
        let mut words = n.args.iter();
        while let Some(w) = words.next() {
            match (w.as_str(), words.clone().next()) {
                ("weight", Some(v)) if v.parse::<i64>().is_ok() => {
                    words.next();
                    if let Some(last) = names.last_mut() {
                        last.1 = Some(v.clone());
                    }
                }
                ("weight", _) | ("reverse", _) => {
                    self.skip_word(n.line, w, "track option not supported by hb")
                }
                _ => names.push((w.clone(), None)),
            }
        }
        let mut out = Vec::new();
        for (name, weight) in names {
            if iface && !self.table_exists("check", &name) {
                let mut c = Table::new("check", &name);
                c.keys.push(("iface".into(), quote(&name)));
                c.keys.push((
                    "weight".into(),
                    weight.clone().unwrap_or_else(|| "0".into()),
                ));
                self.tables.push(c);
            }
            let entry = quote(&match weight {
                Some(w) => format!("{name} weight {w}"),
                None => name.clone(),
            });
            out.push((name, entry));
        }
        out
    }

    fn peer(&mut self, n: &Node) {
        if n.name.parse::<IpAddr>().is_err() {
            self.skip(n, "not an IP address");
            return;
        }
        for a in &n.args {
            self.skip_word(n.line, a, "unicast_peer option not supported by hb");
        }
        if !self.peers.contains(&n.name) {
            self.peers.push(n.name.clone());
        }
    }

    fn sync_group(&mut self, n: &Node) {
        let Some(name) = self.block_name(n, "sync") else {
            return;
        };
        let mut t = Table::new("sync", name);
        for c in n.kids() {
            match c.name.as_str() {
                "group" => {
                    let names = (c.kids().iter())
                        .flat_map(|g| std::iter::once(&g.name).chain(&g.args).map(|n| (g.line, n)));
                    t.refs
                        .extend(names.map(|(line, n)| (line, n.clone(), quote(n))));
                }
                "notify" | "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" => {
                    self.notify(&mut t, c)
                }
                _ => self.skip(c, "not supported by hb"),
            }
        }
        if t.refs.is_empty() {
            return self.skip(n, &format!("{name} names no group: not carried over"));
        }
        self.tables.push(t);
    }

    /// Options common to the three kinds of check: weight, and the skips.
    fn check_weight(&mut self, t: &mut Table, c: &Node) {
        match c.args.as_slice() {
            [w, rest @ ..] if w.parse::<i64>().is_ok() => {
                self.set(t, c, "weight", w.clone());
                for r in rest {
                    self.skip_word(c.line, r, "weight option not supported by hb");
                }
            }
            _ => self.skip(c, "not an integer weight"),
        }
    }

    fn script(&mut self, n: &Node) {
        let Some(name) = self.block_name(n, "check") else {
            return;
        };
        let mut t = Table::new("check", name);
        let kids = n.kids();
        for c in kids {
            match c.name.as_str() {
                // An unquoted script is its words as written.
                "script" if !c.args.is_empty() => {
                    self.set(&mut t, c, "script", quote(&c.args.join(" ")))
                }
                "interval" | "timeout" => {
                    if let Some(ms) = self.duration(c) {
                        self.set(&mut t, c, &c.name, quote(&fmt_ms(ms)));
                    }
                }
                "rise" | "fall" => match self.int(c) {
                    Some(v) if v >= 1 => self.set(&mut t, c, &c.name, v.to_string()),
                    Some(_) => self.skip(c, "must be at least 1"),
                    None => {}
                },
                "weight" => self.check_weight(&mut t, c),
                _ => self.skip(c, "not supported by hb"),
            }
        }
        if !t.has("script") {
            return self.skip(
                n,
                &format!("{name} has no script hb runs: not carried over"),
            );
        }
        self.tables.push(t);
    }

    /// Writes the references (`track`, `groups`) to the tables that exist;
    /// the others are listed with their line.
    fn prune(&mut self) {
        let exists: Vec<(&'static str, String)> = self
            .tables
            .iter()
            .map(|t| (t.kind, t.name.clone()))
            .collect();
        let mut skips = Vec::new();
        for t in &mut self.tables {
            let (key, kind) = match t.kind {
                "group" => ("track", "check"),
                "sync" => ("groups", "group"),
                _ => continue,
            };
            let mut kept = Vec::new();
            for (line, name, entry) in t.refs.drain(..) {
                if exists.iter().any(|(k, n)| *k == kind && *n == name) {
                    kept.push(entry);
                } else {
                    skips.push((
                        line,
                        name,
                        format!("no {kind} of that name was carried over"),
                    ));
                }
            }
            if !kept.is_empty() {
                t.keys.push((key.into(), array(&kept)));
            }
        }
        for (line, name, why) in skips {
            self.skip_word(line, &name, &why);
        }
        // A sync group left with no member says nothing.
        let empty: Vec<String> = (self.tables.iter())
            .filter(|t| t.kind == "sync" && !t.has("groups"))
            .map(|t| t.name.clone())
            .collect();
        self.tables
            .retain(|t| !(t.kind == "sync" && empty.contains(&t.name)));
    }

    fn track_process(&mut self, n: &Node) {
        self.simple_check(n, "process");
    }

    fn track_file(&mut self, n: &Node) {
        self.simple_check(n, "file");
    }

    /// A vrrp_track_process or vrrp_track_file: what it watches, and its weight.
    fn simple_check(&mut self, n: &Node, what: &str) {
        let Some(name) = self.block_name(n, "check") else {
            return;
        };
        let mut t = Table::new("check", name);
        for c in n.kids() {
            match c.name.as_str() {
                w if w == what => {
                    if let Some(v) = self.arg(c) {
                        self.set(&mut t, c, what, quote(v));
                    }
                }
                "weight" => self.check_weight(&mut t, c),
                _ => self.skip(c, "not supported by hb"),
            }
        }
        self.tables.push(t);
    }

    /// One interval for the node: the smallest advert_int; others are reported.
    fn interval(&mut self) -> u64 {
        let min = self
            .intervals
            .iter()
            .map(|&(_, ms)| ms)
            .min()
            .unwrap_or(DEFAULT_ADVERT_MS);
        let differ: Vec<usize> = self
            .intervals
            .iter()
            .filter(|&&(_, ms)| ms != min)
            .filter_map(|&(line, _)| line)
            .collect();
        for line in differ {
            self.skip_word(
                line,
                "advert_int",
                &format!(
                    "differs between instances: hb has one interval, the smallest ({})",
                    fmt_ms(min)
                ),
            );
        }
        min
    }

    fn render(&mut self, source: &str) -> String {
        let interval = self.interval();
        let mut o = format!(
            "# converted from {source} by hb-user import-keepalived; review node_id, peer and key_file\n"
        );
        let ifaces: Vec<String> = self.ifaces.iter().map(|i| quote(i)).collect();
        if ifaces.is_empty() {
            o += "# no vrrp_instance named an interface: set the one heartbeats go on\n";
            o += "iface = [\"eth0\"]\n";
        } else {
            o += &format!("iface = {}\n", array(&ifaces));
        }
        o += "# set this node's id\nnode_id = 1\n";
        if self.peers.is_empty() {
            o += "# hb needs the peers' addresses: keepalived's multicast adverts have no equivalent\n";
        } else {
            o += "# the ids (2, 3, ...) must match the peers' node_id\n";
        }
        let peers: Vec<String> = (2..)
            .zip(&self.peers)
            .map(|(id, a)| quote(&format!("{id}@{a}")))
            .collect();
        o += &format!("peer = {}\n", array(&peers));
        o += &format!("interval = {}\n", quote(&fmt_ms(interval)));
        o += "# 3 x interval: VRRP's master-down interval\n";
        let dead_after = quote(&fmt_ms(interval.saturating_mul(3)));
        o += &format!("dead_after = {dead_after}\n");
        o += "# a starting node waits as long for a holder (keepalived's backup waits the master-down interval)\n";
        o += &format!("init_dead = {dead_after}\n");
        o += "# shared by all nodes, replaces keepalived's authentication: `hb-user keygen --out /etc/hb/hb.key`\n";
        o += "key_file = \"/etc/hb/hb.key\"\n";
        // Ids written out, so that adding or removing a group later in a
        // reload renumbers none (a group without one takes a free id).
        let mut groups: Vec<&str> = (self.tables.iter())
            .filter(|t| t.kind == "group")
            .map(|t| t.name.as_str())
            .collect();
        groups.sort_unstable();
        for t in &self.tables {
            o += &format!("\n[{}.{}]\n", t.kind, key(&t.name));
            for c in &t.comments {
                o += c;
                o += "\n";
            }
            if let Some(i) = groups
                .iter()
                .position(|g| *g == t.name)
                .filter(|_| t.kind == "group")
            {
                o += &format!("id = {}\n", i + 1);
            }
            for (k, v) in &t.keys {
                o += &format!("{k} = {v}\n");
            }
        }
        o
    }
}

/// keepalived's seconds (maybe fractional) as ms; None for no positive duration.
fn seconds_to_ms(s: &str) -> Option<u64> {
    let secs: f64 = s.parse().ok()?;
    let ms = (secs * 1000.0).round();
    // Up to a year: beyond that it is a typo, and `as` would saturate silently.
    (1.0..=365.0 * 86_400_000.0)
        .contains(&ms)
        .then_some(ms as u64)
}

fn fmt_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// `addr` with its prefix: a bare address is a host (/32, /128).
fn with_prefix(addr: &str) -> Option<String> {
    let (a, p) = match addr.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (addr, None),
    };
    let ip: IpAddr = a.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match p {
        Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max)?,
        None => max,
    };
    Some(format!("{ip}/{prefix}"))
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            c if c.is_control() => o.push_str(&format!("\\u{:04X}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A table name: bare when TOML allows it, else quoted.
fn key(s: &str) -> String {
    let bare = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        s.to_string()
    } else {
        quote(s)
    }
}

/// Already quoted items as a TOML array.
fn array(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests;
