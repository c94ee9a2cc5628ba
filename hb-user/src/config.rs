//! Settings of `hb-user run`: command-line flags, a TOML file with the same
//! keys, and the checks that need no network.
//!
//! Flags win over the file and defaults apply last. Flag values are taken as
//! strings and parsed here, so that every bad value, flag or file key, comes
//! back as one [`ConfigError`] naming the field the way the user wrote it.

use std::{collections::HashSet, fmt, net::IpAddr, path::PathBuf, str::FromStr, time::Duration};

use serde::{de, Deserialize, Deserializer};

/// Read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/hb/hb.toml";

const DEFAULT_KEY_FILE: &str = "/etc/hb/hb.key";
const DEFAULT_STATE_DIR: &str = "/var/lib/hb";
const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/hb";
const MAX_GARP_COUNT: u32 = 100;
/// Keeps every duration far from overflow wherever it is turned into
/// nanoseconds or timer deadlines; no sane setting comes near it.
const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Flags of `hb-user run`. All optional here: the config file may supply
/// what the command line leaves out; [`RunConfig::load`] checks the result.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Interface to attach to and send heartbeats on (repeat for several links).
    #[arg(long = "iface", value_name = "IF")]
    pub iface: Vec<String>,
    /// This node's id (1..=4294967295).
    #[arg(long, value_name = "N")]
    pub node_id: Option<String>,
    /// A peer as ID@IPV4 or ID@IPV6 (repeat; the same id once per link).
    #[arg(long = "peer", value_name = "ID@ADDR")]
    pub peer: Vec<String>,
    /// Virtual address to hold while active, as IPV4/PREFIX or IPV6/PREFIX (repeat).
    #[arg(long = "vip", value_name = "ADDR/PREFIX")]
    pub vip: Vec<String>,
    /// Election priority, 0-255, higher wins [default: 100].
    #[arg(long, value_name = "0-255")]
    pub priority: Option<String>,
    /// File holding the 128-bit key as 32 hex digits [default: /etc/hb/hb.key].
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Cluster id; heartbeats of other clusters are ignored [default: 1].
    #[arg(long, value_name = "N")]
    pub cluster_id: Option<String>,
    /// Heartbeat UDP port [default: 694].
    #[arg(long, value_name = "PORT")]
    pub port: Option<String>,
    /// Time between heartbeats [default: 100ms].
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// Silence after which a peer is declared dead [default: 500ms].
    #[arg(long, value_name = "DURATION")]
    pub dead_after: Option<String>,
    /// Time to wait for peers after start before taking over, at least
    /// --dead-after [default: 2s].
    #[arg(long, value_name = "DURATION")]
    pub init_dead: Option<String>,
    /// Do not take the VIPs back from a lower-priority active node.
    #[arg(long)]
    pub no_preempt: bool,
    /// XDP attach mode: auto, native or generic [default: auto].
    #[arg(long, value_name = "MODE")]
    pub xdp_mode: Option<String>,
    /// Directory for the lock, epoch and status files [default: /var/lib/hb].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Config file [default: /etc/hb/hb.toml, if it exists].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// bpffs directory to pin the program and maps under [default: /sys/fs/bpf/hb].
    #[arg(long, value_name = "DIR")]
    pub pin_root: Option<PathBuf>,
    /// Gratuitous ARPs sent per VIP on takeover, 0-100 [default: 5].
    #[arg(long, value_name = "N")]
    pub garp_count: Option<String>,
    /// Time between gratuitous ARPs [default: 10ms].
    #[arg(long, value_name = "DURATION")]
    pub garp_spacing: Option<String>,
    /// Let heartbeat packets go on to the network stack (for tcpdump/debugging).
    #[arg(long)]
    pub pass_heartbeats: bool,
    /// Quorum target: an IPv4 or IPv6 address pinged at the heartbeat cadence (repeat). A
    /// node that hears no peer and reaches no target is isolated: FAULT, never the VIP holder.
    #[arg(long = "ping", value_name = "ADDR")]
    pub ping: Vec<String>,
    /// Fencing command, run before taking the VIP from a peer that went silent; the
    /// VIP is taken only if it exits 0 within --fence-timeout.
    #[arg(long, value_name = "CMD")]
    pub fence_cmd: Option<String>,
    /// Time the fencing command may take [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub fence_timeout: Option<String>,
    /// Command run on every state transition with NEW OLD VIP IFACE REASON as arguments
    /// (and HB_NEW_STATE, HB_OLD_STATE, HB_VIP, HB_IFACE, HB_REASON in its environment).
    #[arg(long, value_name = "CMD")]
    pub notify: Option<String>,
    /// Time a notify command may take before it is killed [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub notify_timeout: Option<String>,
    /// Repeat the gratuitous ARP burst this often while holding the VIP [default: off].
    #[arg(long, value_name = "DURATION")]
    pub garp_refresh: Option<String>,
    /// Run the controller under SCHED_FIFO with its memory locked, so that a
    /// machine saturated by other work cannot delay heartbeats and polling.
    #[arg(long)]
    pub realtime: bool,
}

/// One address of one peer (IPv4 or IPv6); a peer reachable over two links
/// appears twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    pub id: u32,
    pub addr: IpAddr,
}

/// A virtual IPv4 or IPv6 address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vip {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Vip {
    type Err = String;

    /// "10.0.0.100/24", checked as `--vip` is.
    fn from_str(s: &str) -> Result<Self, String> {
        parse_vip(s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpModeArg {
    Auto,
    Native,
    Generic,
}

/// Validated settings. Everything that can be checked without the network is checked here.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    pub ifaces: Vec<String>,
    pub node_id: u32,
    pub peers: Vec<PeerAddr>,
    pub vips: Vec<Vip>,
    pub priority: u8,
    pub key_file: PathBuf,
    pub cluster_id: u32,
    pub port: u16,
    pub interval: Duration,
    pub dead_after: Duration,
    pub init_dead: Duration,
    pub preempt: bool,
    pub xdp_mode: XdpModeArg,
    pub state_dir: PathBuf,
    pub pin_root: PathBuf,
    pub garp_count: u32,
    pub garp_spacing: Duration,
    pub pass_heartbeats: bool,
    pub ping: Vec<IpAddr>,
    pub fence_cmd: Option<String>,
    pub fence_timeout: Duration,
    pub notify: Option<String>,
    pub notify_timeout: Duration,
    pub garp_refresh: Option<Duration>,
    pub realtime: bool,
    /// Health checks (`[check.NAME]` tables), in name order.
    pub checks: Vec<crate::checks::CheckSpec>,
}

/// A bad setting: names the field as the user wrote it (the flag, e.g.
/// "--dead-after", or for a file key "dead_after in /etc/hb/hb.toml").
#[derive(Debug)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// "10ms", "2s", "1.5s", "100 ms" → Duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("expected a duration with a unit such as 100ms, 1.5s or 2s, got {s:?} ({e})")
    })
}

/// The config file. Integers are read as i64 and range-checked by the same
/// parsers as the flags, so "priority = 300" gets the same message as "--priority 300".
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    iface: Option<OneOrMany>,
    node_id: Option<i64>,
    peer: Option<OneOrMany>,
    vip: Option<OneOrMany>,
    priority: Option<i64>,
    key_file: Option<PathBuf>,
    cluster_id: Option<i64>,
    port: Option<i64>,
    interval: Option<String>,
    dead_after: Option<String>,
    init_dead: Option<String>,
    preempt: Option<bool>,
    xdp_mode: Option<String>,
    state_dir: Option<PathBuf>,
    pin_root: Option<PathBuf>,
    garp_count: Option<i64>,
    garp_spacing: Option<String>,
    pass_heartbeats: Option<bool>,
    ping: Option<OneOrMany>,
    fence_cmd: Option<String>,
    fence_timeout: Option<String>,
    notify: Option<String>,
    notify_timeout: Option<String>,
    garp_refresh: Option<String>,
    realtime: Option<bool>,
    check: Option<std::collections::BTreeMap<String, CheckFile>>,
}

/// A `[check.NAME]` table: one of a script run every interval (keepalived's
/// `vrrp_script`), a process name or a pid file (`vrrp_track_process`).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct CheckFile {
    script: Option<String>,
    process: Option<String>,
    pid_file: Option<PathBuf>,
    iface: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    rise: Option<i64>,
    fall: Option<i64>,
    weight: Option<i64>,
}

/// `key = "a"` or `key = ["a", "b"]`.
#[derive(Debug)]
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Picks the flag's value if given, else the file's, and remembers which one
/// it was so errors name it.
struct Sources<'a> {
    file_name: &'a str,
}

/// A value together with the field name to blame for it.
struct Given<T> {
    value: T,
    field: String,
}

impl<T> Given<T> {
    /// Parses the value, turning a parse error into a ConfigError for this field.
    fn parse<U>(self, f: impl FnOnce(T) -> Result<U, String>) -> Result<Given<U>, ConfigError> {
        let field = self.field;
        match f(self.value) {
            Ok(value) => Ok(Given { value, field }),
            Err(message) => Err(ConfigError { field, message }),
        }
    }
}

impl Sources<'_> {
    fn pick<T>(
        &self,
        flag: &str,
        from_flag: Option<T>,
        key: &str,
        from_file: Option<T>,
    ) -> Option<Given<T>> {
        if let Some(value) = from_flag {
            Some(Given {
                value,
                field: flag.to_owned(),
            })
        } else {
            from_file.map(|value| Given {
                value,
                field: self.file_key(key),
            })
        }
    }

    /// A repeatable flag: given flags replace the file's list entirely.
    fn pick_list(
        &self,
        flag: &str,
        from_flag: &[String],
        key: &str,
        from_file: Option<OneOrMany>,
    ) -> Option<Given<Vec<String>>> {
        let from_flag = (!from_flag.is_empty()).then(|| from_flag.to_vec());
        self.pick(flag, from_flag, key, from_file.map(|l| l.0))
    }

    fn file_key(&self, key: &str) -> String {
        format!("{key} in {}", self.file_name)
    }

    /// The error for a setting that has no default.
    fn required(&self, flag: &str, key: &str) -> ConfigError {
        ConfigError::new(flag, format!("required (flag or {})", self.file_key(key)))
    }
}

impl RunConfig {
    /// Reads the config file (`args.config`, else [`DEFAULT_CONFIG`] if it
    /// exists), merges it under the flags, and validates the result.
    pub fn load(args: &RunArgs) -> Result<RunConfig, ConfigError> {
        let (path, explicit) = Self::file(args);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => Some(t),
            // Only the implicit default may be absent; a named file must be there.
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(ConfigError::new(
                    "--config",
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        };
        let name = path.display().to_string();
        Self::from_parts(args, text.as_deref().map(|t| (name.as_str(), t)))
    }

    /// The config file `load` reads, and whether it was named (`--config`).
    pub fn file(args: &RunArgs) -> (PathBuf, bool) {
        match &args.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        }
    }

    /// Like [`RunConfig::load`] with the file given as `(file_name, text)`;
    /// `file_name` is only used in messages.
    pub fn from_parts(
        args: &RunArgs,
        file: Option<(&str, &str)>,
    ) -> Result<RunConfig, ConfigError> {
        let (file_name, f) = match file {
            Some((name, text)) => (name, parse_file(name, text)?),
            None => (DEFAULT_CONFIG, FileConfig::default()),
        };
        let src = Sources { file_name };

        let ifaces = src
            .pick_list("--iface", &args.iface, "iface", f.iface)
            .ok_or_else(|| src.required("--iface", "iface"))?
            .parse(check_ifaces)?
            .value;
        let node_id = src
            .pick(
                "--node-id",
                args.node_id.clone(),
                "node_id",
                f.node_id.map(|n| n.to_string()),
            )
            .ok_or_else(|| src.required("--node-id", "node_id"))?
            .parse(|s| parse_node_id(&s))?
            .value;
        let peers = src
            .pick_list("--peer", &args.peer, "peer", f.peer)
            .ok_or_else(|| src.required("--peer", "peer"))?
            .parse(|l| check_peers(&l, node_id))?
            .value;
        let vips = match src.pick_list("--vip", &args.vip, "vip", f.vip) {
            Some(g) => g.parse(|l| check_vips(&l))?,
            None => Given {
                value: Vec::new(),
                field: "--vip".to_owned(),
            },
        };

        let int = |flag: &str, arg: &Option<String>, key: &str, file: Option<i64>| {
            src.pick(flag, arg.clone(), key, file.map(|n| n.to_string()))
        };
        let priority = match int("--priority", &args.priority, "priority", f.priority) {
            Some(g) => g.parse(|s| parse_int::<u8>(&s, 0, u8::MAX))?.value,
            None => 100,
        };
        let cluster_id = match int("--cluster-id", &args.cluster_id, "cluster_id", f.cluster_id) {
            Some(g) => g.parse(|s| parse_int::<u32>(&s, 0, u32::MAX))?.value,
            None => 1,
        };
        let port = match int("--port", &args.port, "port", f.port) {
            Some(g) => g.parse(|s| parse_int::<u16>(&s, 1, u16::MAX))?.value,
            None => 694,
        };
        let garp_count = match int("--garp-count", &args.garp_count, "garp_count", f.garp_count) {
            Some(g) => g.parse(|s| parse_int::<u32>(&s, 0, MAX_GARP_COUNT))?.value,
            None => 5,
        };

        let dur = |flag: &str,
                   arg: &Option<String>,
                   key: &str,
                   file: Option<String>,
                   default: Duration| {
            match src.pick(flag, arg.clone(), key, file) {
                Some(g) => g.parse(|s| parse_bounded_duration(&s)),
                None => Ok(Given {
                    value: default,
                    field: flag.to_owned(),
                }),
            }
        };
        let interval = dur(
            "--interval",
            &args.interval,
            "interval",
            f.interval,
            Duration::from_millis(100),
        )?;
        if interval.value < Duration::from_millis(1) {
            return Err(ConfigError::new(interval.field, "must be at least 1ms"));
        }
        let dead_after = dur(
            "--dead-after",
            &args.dead_after,
            "dead_after",
            f.dead_after,
            Duration::from_millis(500),
        )?;
        // One lost heartbeat must not be enough to declare a peer dead.
        if dead_after.value <= interval.value * 2 {
            return Err(ConfigError::new(
                dead_after.field,
                format!(
                    "{} must be more than twice the interval ({}), so that one lost heartbeat is not a failure",
                    humantime::format_duration(dead_after.value),
                    humantime::format_duration(interval.value),
                ),
            ));
        }
        let init_dead = dur(
            "--init-dead",
            &args.init_dead,
            "init_dead",
            f.init_dead,
            Duration::from_secs(2),
        )?;
        // A restarted node that stops waiting before a live holder could have
        // been heard takes the VIP from it: two holders at every restart.
        if init_dead.value < dead_after.value {
            return Err(ConfigError::new(
                init_dead.field,
                format!(
                    "{} is below {} ({}): a restarted node would take the VIP before it could hear a live holder",
                    humantime::format_duration(init_dead.value),
                    dead_after.field,
                    humantime::format_duration(dead_after.value),
                ),
            ));
        }
        let garp_spacing = dur(
            "--garp-spacing",
            &args.garp_spacing,
            "garp_spacing",
            f.garp_spacing,
            Duration::from_millis(10),
        )?;

        let fence_timeout = dur(
            "--fence-timeout",
            &args.fence_timeout,
            "fence_timeout",
            f.fence_timeout,
            Duration::from_secs(10),
        )?;
        let notify_timeout = dur(
            "--notify-timeout",
            &args.notify_timeout,
            "notify_timeout",
            f.notify_timeout,
            Duration::from_secs(10),
        )?;
        let garp_refresh = match src.pick(
            "--garp-refresh",
            args.garp_refresh.clone(),
            "garp_refresh",
            f.garp_refresh,
        ) {
            Some(g) => {
                let g = g.parse(|s| parse_bounded_duration(&s))?;
                if g.value < Duration::from_millis(100) {
                    return Err(ConfigError::new(g.field, "must be at least 100ms"));
                }
                Some(g.value)
            }
            None => None,
        };
        let ping = match src.pick_list("--ping", &args.ping, "ping", f.ping) {
            Some(g) => g.parse(|l| check_ping(&l))?.value,
            None => Vec::new(),
        };
        let vips = vips.parse(|v| check_vips_apart(v, &peers, &ping))?.value;
        let checks = f
            .check
            .unwrap_or_default()
            .into_iter()
            .map(|(name, c)| check_spec(&src, name, c))
            .collect::<Result<Vec<_>, _>>()?;
        let command = |flag: &str, arg: &Option<String>, key: &str, file: Option<String>| match src
            .pick(flag, arg.clone(), key, file)
        {
            Some(g) => g
                .parse(|c| {
                    if c.trim().is_empty() {
                        Err("must not be empty".to_owned())
                    } else {
                        Ok(c)
                    }
                })
                .map(|g| Some(g.value)),
            None => Ok(None),
        };
        let fence_cmd = command("--fence-cmd", &args.fence_cmd, "fence_cmd", f.fence_cmd)?;
        let notify = command("--notify", &args.notify, "notify", f.notify)?;

        let xdp_mode = match src.pick("--xdp-mode", args.xdp_mode.clone(), "xdp_mode", f.xdp_mode) {
            Some(g) => g.parse(|s| s.parse())?.value,
            None => XdpModeArg::Auto,
        };

        let path =
            |flag: &str, arg: &Option<PathBuf>, key: &str, file: Option<PathBuf>, default: &str| {
                match src.pick(flag, arg.clone(), key, file) {
                    Some(g) => g.parse(|p| {
                        if p.as_os_str().is_empty() {
                            Err("must not be empty".to_owned())
                        } else {
                            Ok(p)
                        }
                    }),
                    None => Ok(Given {
                        value: PathBuf::from(default),
                        field: flag.to_owned(),
                    }),
                }
                .map(|g| g.value)
            };
        let key_file = path(
            "--key-file",
            &args.key_file,
            "key_file",
            f.key_file,
            DEFAULT_KEY_FILE,
        )?;
        let state_dir = path(
            "--state-dir",
            &args.state_dir,
            "state_dir",
            f.state_dir,
            DEFAULT_STATE_DIR,
        )?;
        let pin_root = path(
            "--pin-root",
            &args.pin_root,
            "pin_root",
            f.pin_root,
            DEFAULT_PIN_ROOT,
        )?;

        // Switch-style flags can only turn their behaviour on, so the file decides otherwise.
        let preempt = !args.no_preempt && f.preempt.unwrap_or(true);
        let pass_heartbeats = args.pass_heartbeats || f.pass_heartbeats.unwrap_or(false);
        let realtime = args.realtime || f.realtime.unwrap_or(false);

        Ok(RunConfig {
            ifaces,
            node_id,
            peers,
            vips,
            priority,
            key_file,
            cluster_id,
            port,
            interval: interval.value,
            dead_after: dead_after.value,
            init_dead: init_dead.value,
            preempt,
            xdp_mode,
            state_dir,
            pin_root,
            garp_count,
            garp_spacing: garp_spacing.value,
            pass_heartbeats,
            ping,
            fence_cmd,
            fence_timeout: fence_timeout.value,
            notify,
            notify_timeout: notify_timeout.value,
            garp_refresh,
            realtime,
            checks,
        })
    }
}

/// One `[check.NAME]`, with keepalived's defaults (interval 1s, rise and fall
/// 1, weight 0: failing means FAULT); the timeout defaults to the interval.
fn check_spec(
    src: &Sources,
    name: String,
    c: CheckFile,
) -> Result<crate::checks::CheckSpec, ConfigError> {
    let field = |key: &str| match key {
        "" => src.file_key(&format!("check.{name}")),
        _ => src.file_key(&format!("check.{name}.{key}")),
    };
    let bad = |key: &str, message: String| ConfigError::new(field(key), message);
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(bad(
            "",
            "a check's name is letters, digits, '_', '-' or '.'".into(),
        ));
    }
    use crate::checks::CheckKind;
    if let Some(i) = c.iface {
        if c.script.is_some() || c.process.is_some() || c.pid_file.is_some() {
            return Err(bad(
                "",
                "give exactly one of script, process, pid_file or iface".into(),
            ));
        }
        check_iface_name(&i).map_err(|m| bad("iface", m))?;
        return finish_check(
            src,
            name,
            CheckKind::Iface(i),
            c.interval,
            c.timeout,
            c.rise,
            c.fall,
            c.weight,
        );
    }
    let kind = match (c.script, c.process, c.pid_file) {
        (Some(s), None, None) if !s.trim().is_empty() => CheckKind::Script(s),
        (None, Some(p), None) if !p.is_empty() && p.len() <= 15 && !p.contains('/') => {
            CheckKind::Process(p)
        }
        (None, None, Some(p)) if !p.as_os_str().is_empty() => CheckKind::PidFile(p),
        (Some(_), None, None) => return Err(bad("script", "must not be empty".into())),
        (None, Some(_), None) => {
            return Err(bad(
                "process",
                "a process name as /proc/PID/comm shows it: 1 to 15 bytes, no '/'".into(),
            ))
        }
        (None, None, Some(_)) => return Err(bad("pid_file", "must not be empty".into())),
        _ => {
            return Err(bad(
                "",
                "give exactly one of script, process, pid_file or iface".into(),
            ))
        }
    };
    finish_check(
        src, name, kind, c.interval, c.timeout, c.rise, c.fall, c.weight,
    )
}

/// The timing and weight of a check of any kind.
#[allow(clippy::too_many_arguments)]
fn finish_check(
    src: &Sources,
    name: String,
    kind: crate::checks::CheckKind,
    interval: Option<String>,
    timeout: Option<String>,
    rise: Option<i64>,
    fall: Option<i64>,
    weight: Option<i64>,
) -> Result<crate::checks::CheckSpec, ConfigError> {
    let field = |key: &str| src.file_key(&format!("check.{name}.{key}"));
    let bad = |key: &str, message: String| ConfigError::new(field(key), message);
    let dur = |key: &str, v: Option<String>, default: Duration| match v {
        Some(s) => parse_bounded_duration(&s).map_err(|m| bad(key, m)),
        None => Ok(default),
    };
    let interval = dur("interval", interval, Duration::from_secs(1))?;
    if interval < Duration::from_millis(10) {
        return Err(bad("interval", "must be at least 10ms".into()));
    }
    let timeout = dur("timeout", timeout, interval)?;
    if timeout.is_zero() || timeout > interval {
        return Err(bad(
            "timeout",
            format!(
                "must be above 0 and at most the interval ({})",
                humantime::format_duration(interval)
            ),
        ));
    }
    let count = |key: &str, v: Option<i64>| {
        parse_int::<u32>(&v.unwrap_or(1).to_string(), 1, 1000).map_err(|m| bad(key, m))
    };
    let (rise, fall) = (count("rise", rise)?, count("fall", fall)?);
    let weight = match weight.unwrap_or(0) {
        w @ -255..=255 => w as i32,
        w => return Err(bad("weight", format!("expected -255..=255, got {w}"))),
    };
    Ok(crate::checks::CheckSpec {
        name,
        kind,
        interval,
        timeout,
        rise,
        fall,
        weight,
    })
}

/// Ping targets: unicast IPv4 or IPv6 addresses, no duplicates. Not link-local
/// IPv6 (the echo would need an interface to leave by) nor IPv4-mapped IPv6.
fn check_ping(list: &[String]) -> Result<Vec<IpAddr>, String> {
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

/// Parses the file; toml's own messages span several lines, so this keeps
/// the one-line message and points at the line it is about.
fn parse_file(name: &str, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let message = match e.span() {
            Some(span) => {
                let start = span.start.min(text.len());
                let line_no = text[..start].matches('\n').count() + 1;
                let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
                let line: String = line.chars().take(60).collect();
                format!("line {line_no} ({line}): {}", e.message().trim())
            }
            None => e.message().trim().to_owned(),
        };
        ConfigError::new(name, message.replace('\n', " "))
    })
}

fn parse_int<T: TryFrom<u64> + Into<u64> + Copy>(s: &str, min: T, max: T) -> Result<T, String> {
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

fn parse_node_id(s: &str) -> Result<u32, String> {
    parse_int(s, 1, u32::MAX)
}

fn parse_bounded_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > MAX_DURATION {
        return Err(format!("{s:?} is too long (at most 1h)"));
    }
    Ok(d)
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
fn check_iface_name(name: &str) -> Result<(), String> {
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

fn check_ifaces(list: Vec<String>) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Err("at least one interface is needed".into());
    }
    let mut seen = HashSet::new();
    for name in &list {
        check_iface_name(name)?;
        if !seen.insert(name.as_str()) {
            return Err(format!("{name} is given twice"));
        }
    }
    Ok(list)
}

/// A unicast address a peer can have: not unspecified, broadcast, multicast or loopback.
fn unicast(addr: IpAddr) -> bool {
    let special = match addr {
        IpAddr::V4(a) => a.is_broadcast(),
        IpAddr::V6(_) => false,
    };
    !(addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() || special)
}

fn parse_peer(s: &str) -> Result<PeerAddr, String> {
    let bad = |why: &str| {
        format!("expected ID@ADDRESS such as 2@192.168.1.2 or 2@fd00::2, got {s:?} ({why})")
    };
    let (id, addr) = s.trim().split_once('@').ok_or_else(|| bad("no '@'"))?;
    let id = parse_node_id(id).map_err(|_| bad("ID must be an integer from 1 to 4294967295"))?;
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

fn check_peers(list: &[String], node_id: u32) -> Result<Vec<PeerAddr>, String> {
    if list.is_empty() {
        return Err("at least one peer is needed".into());
    }
    let mut peers: Vec<PeerAddr> = Vec::with_capacity(list.len());
    for s in list {
        let p = parse_peer(s)?;
        if p.id == node_id {
            return Err(format!("{s}: peer id {} is this node's own id", p.id));
        }
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

fn parse_vip(s: &str) -> Result<Vip, String> {
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

fn check_vips(list: &[String]) -> Result<Vec<Vip>, String> {
    let mut vips: Vec<Vip> = Vec::with_capacity(list.len());
    for s in list {
        let v = parse_vip(s)?;
        if vips.iter().any(|w| w.addr == v.addr) {
            return Err(format!("{} is given twice", v.addr));
        }
        vips.push(v);
    }
    Ok(vips)
}

/// A VIP moves between nodes, so it cannot be an address that must stay put:
/// a peer's (heartbeats to it would reach whoever holds the VIP, us included)
/// or a ping target's (the holder would always "reach" it, itself).
fn check_vips_apart(
    vips: Vec<Vip>,
    peers: &[PeerAddr],
    ping: &[IpAddr],
) -> Result<Vec<Vip>, String> {
    for v in &vips {
        if let Some(p) = peers.iter().find(|p| p.addr == v.addr) {
            return Err(format!(
                "{v} is peer {}'s address: a VIP must be an address no node has",
                p.id
            ));
        }
        if ping.contains(&v.addr) {
            return Err(format!(
                "{v} is a ping target: the holder would answer its own quorum pings"
            ));
        }
    }
    Ok(vips)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{net::Ipv4Addr, path::Path};

    const FILE: &str = "/etc/hb/hb.toml";

    fn args() -> RunArgs {
        RunArgs {
            iface: vec!["eth0".into()],
            node_id: Some("1".into()),
            peer: vec!["2@192.168.1.2".into()],
            ..Default::default()
        }
    }

    fn err(args: &RunArgs, file: Option<&str>) -> ConfigError {
        match RunConfig::from_parts(args, file.map(|t| (FILE, t))) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => {
                assert!(!e.to_string().contains('\n'), "multi-line: {e}");
                e
            }
        }
    }

    fn ok(args: &RunArgs, file: Option<&str>) -> RunConfig {
        RunConfig::from_parts(args, file.map(|t| (FILE, t))).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn defaults() {
        let c = ok(&args(), None);
        assert_eq!(c.ifaces, ["eth0"]);
        assert_eq!(c.node_id, 1);
        assert_eq!(
            c.peers,
            [PeerAddr {
                id: 2,
                addr: Ipv4Addr::new(192, 168, 1, 2).into()
            }]
        );
        assert!(c.vips.is_empty());
        assert_eq!(c.priority, 100);
        assert_eq!(c.key_file, Path::new("/etc/hb/hb.key"));
        assert_eq!(c.cluster_id, 1);
        assert_eq!(c.port, 694);
        assert_eq!(c.interval, Duration::from_millis(100));
        assert_eq!(c.dead_after, Duration::from_millis(500));
        assert_eq!(c.init_dead, Duration::from_secs(2));
        assert!(c.preempt);
        assert_eq!(c.xdp_mode, XdpModeArg::Auto);
        assert_eq!(c.state_dir, Path::new("/var/lib/hb"));
        assert_eq!(c.pin_root, Path::new("/sys/fs/bpf/hb"));
        assert_eq!(c.garp_count, 5);
        assert_eq!(c.garp_spacing, Duration::from_millis(10));
        assert!(!c.pass_heartbeats);
    }

    #[test]
    fn flags_override_file() {
        let mut a = args();
        a.priority = Some("200".into());
        a.interval = Some("50ms".into());
        a.vip = vec!["10.0.0.100/24".into()];
        a.no_preempt = true;
        let file = r#"
            iface = ["eth1", "eth2"]
            node_id = 7
            peer = "9@10.1.1.9"
            vip = ["10.0.0.200/24"]
            priority = 10
            interval = "200ms"
            dead_after = "1s"
            preempt = true
        "#;
        let c = ok(&a, Some(file));
        assert_eq!(c.ifaces, ["eth0"]);
        assert_eq!(c.node_id, 1);
        assert_eq!(c.peers[0].id, 2);
        assert_eq!(
            c.vips,
            [Vip {
                addr: Ipv4Addr::new(10, 0, 0, 100).into(),
                prefix: 24
            }]
        );
        assert_eq!(c.priority, 200);
        assert_eq!(c.interval, Duration::from_millis(50));
        assert_eq!(c.dead_after, Duration::from_secs(1)); // not given as a flag
        assert!(!c.preempt);
    }

    #[test]
    fn file_fills_in_missing_flags() {
        let file = r#"
            vip = "10.0.0.100/24"
            priority = 150
            key_file = "/etc/hb/other.key"
            cluster_id = 3
            port = 6940
            interval = "1.5s"
            dead_after = "5 s"
            init_dead = "10s"
            preempt = false
            xdp_mode = "generic"
            state_dir = "/run/hb"
            pin_root = "/sys/fs/bpf/hb2"
            garp_count = 0
            garp_spacing = "100ms"
            pass_heartbeats = true
        "#;
        let c = ok(&args(), Some(file));
        assert_eq!(c.vips[0].to_string(), "10.0.0.100/24");
        assert_eq!(c.priority, 150);
        assert_eq!(c.key_file, Path::new("/etc/hb/other.key"));
        assert_eq!(c.cluster_id, 3);
        assert_eq!(c.port, 6940);
        assert_eq!(c.interval, Duration::from_millis(1500));
        assert_eq!(c.dead_after, Duration::from_secs(5));
        assert_eq!(c.init_dead, Duration::from_secs(10));
        assert!(!c.preempt);
        assert_eq!(c.xdp_mode, XdpModeArg::Generic);
        assert_eq!(c.state_dir, Path::new("/run/hb"));
        assert_eq!(c.pin_root, Path::new("/sys/fs/bpf/hb2"));
        assert_eq!(c.garp_count, 0);
        assert_eq!(c.garp_spacing, Duration::from_millis(100));
        assert!(c.pass_heartbeats);
    }

    /// `sudo hb-user --iface eth0` with the rest in the file.
    #[test]
    fn iface_flag_with_rest_in_file() {
        let a = RunArgs {
            iface: vec!["eth0".into()],
            ..Default::default()
        };
        let file = "node_id = 1\npeer = [\"2@192.168.1.2\", \"2@192.168.2.2\"]\n";
        let c = ok(&a, Some(file));
        assert_eq!(c.ifaces, ["eth0"]);
        assert_eq!(c.node_id, 1);
        assert_eq!(c.peers.len(), 2);
        assert!(c.peers.iter().all(|p| p.id == 2));
    }

    #[test]
    fn unknown_file_key() {
        let e = err(&args(), Some("priority = 1\nbogus_key = 3\n"));
        assert_eq!(e.field, FILE);
        assert!(e.message.contains("bogus_key"), "{e}");
        assert!(e.message.contains("line 2"), "{e}");
    }

    #[test]
    fn file_type_and_syntax_errors() {
        let e = err(&args(), Some("interval = 100\n"));
        assert_eq!(e.field, FILE);
        assert!(e.message.contains("interval"), "{e}");
        let e = err(&args(), Some("port = \n"));
        assert_eq!(e.field, FILE);
        assert!(e.message.contains("line 1"), "{e}");
        let e = err(&args(), Some("iface = [1]\n"));
        assert!(e.message.contains("iface"), "{e}");
    }

    #[test]
    fn dead_after_must_exceed_twice_interval() {
        let mut a = args();
        a.interval = Some("100ms".into());
        a.dead_after = Some("200ms".into());
        assert_eq!(err(&a, None).field, "--dead-after");
        a.dead_after = Some("201ms".into());
        ok(&a, None);
        // The default dead_after against a longer interval from the file.
        let e = err(&args(), Some("interval = \"1s\"\n"));
        assert_eq!(e.field, "--dead-after");
        let e = err(&args(), Some("interval = \"1s\"\ndead_after = \"2s\"\n"));
        assert_eq!(
            e.to_string().split(':').next(),
            Some("invalid dead_after in /etc/hb/hb.toml")
        );
    }

    #[test]
    fn init_dead_below_dead_after_is_refused() {
        let mut a = args();
        a.init_dead = Some("0s".into());
        let e = err(&a, None);
        assert_eq!(e.field, "--init-dead");
        assert!(e.message.contains("below --dead-after (500ms)"), "{e}");
        a.init_dead = Some("499ms".into());
        assert_eq!(err(&a, None).field, "--init-dead");
        a.init_dead = Some("500ms".into());
        ok(&a, None);
        // The default init-dead (2s) against a longer dead-after.
        let mut a = args();
        a.dead_after = Some("3s".into());
        assert_eq!(err(&a, None).field, "--init-dead");
        // Both from the file: named as written there.
        let e = err(&args(), Some("dead_after = \"3s\"\ninit_dead = \"1s\"\n"));
        assert_eq!(e.field, "init_dead in /etc/hb/hb.toml");
        assert!(
            e.message
                .contains("below dead_after in /etc/hb/hb.toml (3s)"),
            "{e}"
        );
    }

    #[test]
    fn a_vip_is_neither_a_peer_nor_a_ping_target() {
        let mut a = args();
        a.vip = vec!["10.0.0.100/24".into(), "192.168.1.2/24".into()];
        let e = err(&a, None);
        assert_eq!(e.field, "--vip");
        assert!(
            e.message.contains("192.168.1.2/24 is peer 2's address"),
            "{e}"
        );
        let mut a = args();
        a.peer = vec!["2@fd00::2".into()];
        a.vip = vec!["fd00::2/64".into()];
        assert_eq!(err(&a, None).field, "--vip");
        let mut a = args();
        a.vip = vec!["10.0.0.100/24".into()];
        a.ping = vec!["10.0.0.254".into(), "10.0.0.100".into()];
        let e = err(&a, None);
        assert_eq!(e.field, "--vip");
        assert!(e.message.contains("is a ping target"), "{e}");
        let e = err(&args(), Some("vip = \"192.168.1.2/32\""));
        assert_eq!(e.field, "vip in /etc/hb/hb.toml");
        // Another address of the peers' subnet is fine.
        let mut a = args();
        a.vip = vec!["192.168.1.100/24".into()];
        a.ping = vec!["192.168.1.254".into()];
        ok(&a, None);
    }

    #[test]
    fn priority_out_of_range() {
        let mut a = args();
        a.priority = Some("300".into());
        assert_eq!(err(&a, None).field, "--priority");
        a.priority = Some("-1".into());
        assert_eq!(err(&a, None).field, "--priority");
        let e = err(&args(), Some("priority = 256"));
        assert_eq!(e.field, "priority in /etc/hb/hb.toml");
    }

    #[test]
    fn bad_peer_syntax() {
        for bad in [
            "2@x",
            "2",
            "x@10.0.0.2",
            "0@10.0.0.2",
            "2@10.0.0.256",
            "2@255.255.255.255",
            "2@",
        ] {
            let mut a = args();
            a.peer = vec![bad.into()];
            let e = err(&a, None);
            assert_eq!(e.field, "--peer", "{bad}");
            assert!(e.message.contains("ID@ADDRESS"), "{e}");
        }
        let e = err(
            &RunArgs {
                peer: vec![],
                ..args()
            },
            Some("peer = \"2@x\""),
        );
        assert_eq!(e.field, "peer in /etc/hb/hb.toml");
    }

    #[test]
    fn peer_rules() {
        let mut a = args();
        a.peer = vec!["1@10.0.0.2".into()];
        let e = err(&a, None);
        assert_eq!(e.field, "--peer");
        assert!(e.message.contains("own"), "{e}");
        a.peer = vec!["2@10.0.0.2".into(), "2@10.0.0.2".into()];
        assert_eq!(err(&a, None).field, "--peer");
        a.peer = vec!["2@10.0.0.2".into(), "3@10.0.0.2".into()];
        assert_eq!(err(&a, None).field, "--peer");
        let e = err(
            &RunArgs {
                peer: vec![],
                ..args()
            },
            Some("peer = [\"1@10.0.0.1\"]"),
        );
        assert_eq!(e.field, "peer in /etc/hb/hb.toml");
    }

    #[test]
    fn bad_vip() {
        for bad in [
            "10.0.0.1",
            "10.0.0.1/0",
            "10.0.0.1/33",
            "10.0.0.1/x",
            "x/24",
            "0.0.0.0/8",
        ] {
            let mut a = args();
            a.vip = vec![bad.into()];
            let e = err(&a, None);
            assert_eq!(e.field, "--vip", "{bad}");
        }
        let mut a = args();
        a.vip = vec!["10.0.0.1/24".into(), "10.0.0.1/32".into()];
        assert_eq!(err(&a, None).field, "--vip");
    }

    #[test]
    fn zero_port() {
        let mut a = args();
        a.port = Some("0".into());
        assert_eq!(err(&a, None).field, "--port");
        assert_eq!(
            err(&args(), Some("port = 0")).field,
            "port in /etc/hb/hb.toml"
        );
        assert_eq!(
            err(&args(), Some("port = 65536")).field,
            "port in /etc/hb/hb.toml"
        );
    }

    #[test]
    fn missing_required() {
        let e = err(&RunArgs::default(), None);
        assert_eq!(e.field, "--iface");
        let a = RunArgs {
            iface: vec!["eth0".into()],
            ..Default::default()
        };
        let e = err(&a, None);
        assert_eq!(
            e.to_string(),
            "invalid --node-id: required (flag or node_id in /etc/hb/hb.toml)"
        );
        let e = err(&a, Some("node_id = 1"));
        assert_eq!(e.field, "--peer");
    }

    #[test]
    fn other_rules() {
        let mut a = args();
        a.iface = vec!["eth0".into(), "eth0".into()];
        assert_eq!(err(&a, None).field, "--iface");
        a.iface = vec!["a-very-long-name0".into()];
        assert_eq!(err(&a, None).field, "--iface");
        a.iface = vec!["eth 0".into()];
        assert_eq!(err(&a, None).field, "--iface");

        let mut a = args();
        a.node_id = Some("0".into());
        assert_eq!(err(&a, None).field, "--node-id");

        let mut a = args();
        a.interval = Some("fast".into());
        let e = err(&a, None);
        assert_eq!(e.field, "--interval");
        assert!(e.message.contains("100ms"), "{e}");
        a.interval = Some("500us".into());
        assert_eq!(err(&a, None).field, "--interval");

        let mut a = args();
        a.garp_count = Some("101".into());
        assert_eq!(err(&a, None).field, "--garp-count");

        let mut a = args();
        a.xdp_mode = Some("skb".into());
        assert_eq!(err(&a, None).field, "--xdp-mode");

        let mut a = args();
        a.init_dead = Some("2years".into());
        assert_eq!(err(&a, None).field, "--init-dead");
    }

    #[test]
    fn parses_the_flags() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let cli = Cli::try_parse_from([
            "hb-user",
            "--iface",
            "eth0",
            "--iface",
            "eth1",
            "--node-id",
            "1",
            "--peer",
            "2@10.0.0.2",
            "--peer",
            "2@10.1.0.2",
            "--vip",
            "10.0.0.100/24",
            "--no-preempt",
            "--dead-after",
            "1s",
            "--pass-heartbeats",
            "--xdp-mode",
            "native",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let c = ok(&cli.run, None);
        assert_eq!(c.ifaces, ["eth0", "eth1"]);
        assert_eq!(c.peers.len(), 2);
        assert!(!c.preempt && c.pass_heartbeats);
        assert_eq!(c.xdp_mode, XdpModeArg::Native);
        assert_eq!(c.dead_after, Duration::from_secs(1));
    }

    #[test]
    fn load_missing_explicit_config() {
        let mut a = args();
        a.config = Some(PathBuf::from("/nonexistent/hb-test.toml"));
        let e = RunConfig::load(&a).unwrap_err();
        assert_eq!(e.field, "--config");
        assert!(e.message.contains("/nonexistent/hb-test.toml"), "{e}");
    }

    #[test]
    fn split_brain_settings() {
        let c = ok(&args(), None);
        assert!(
            c.ping.is_empty()
                && c.fence_cmd.is_none()
                && c.notify.is_none()
                && c.garp_refresh.is_none()
        );
        assert_eq!(
            (c.fence_timeout, c.notify_timeout),
            (Duration::from_secs(10), Duration::from_secs(10))
        );
        let file = r#"
            ping = ["10.0.0.254", "10.0.0.253"]
            fence_cmd = "/usr/local/bin/fence"
            fence_timeout = "3s"
            notify = "/usr/local/bin/notify"
            garp_refresh = "60s"
        "#;
        let c = ok(&args(), Some(file));
        assert_eq!(
            c.ping,
            [Ipv4Addr::new(10, 0, 0, 254), Ipv4Addr::new(10, 0, 0, 253)].map(IpAddr::V4)
        );
        assert_eq!(c.fence_cmd.as_deref(), Some("/usr/local/bin/fence"));
        assert_eq!(c.fence_timeout, Duration::from_secs(3));
        assert_eq!(c.notify.as_deref(), Some("/usr/local/bin/notify"));
        assert_eq!(c.garp_refresh, Some(Duration::from_secs(60)));
        let mut a = args();
        a.ping = vec!["10.0.0.300".into()];
        assert_eq!(err(&a, None).field, "--ping");
        let mut a = args();
        a.ping = vec!["10.0.0.1".into(), "10.0.0.1".into()];
        assert_eq!(err(&a, None).field, "--ping");
        let mut a = args();
        a.ping = vec!["fd00::1".into(), "10.0.0.1".into()];
        assert_eq!(
            ok(&a, None).ping,
            [
                "fd00::1".parse::<IpAddr>().unwrap(),
                "10.0.0.1".parse().unwrap()
            ]
        );
        for bad in ["fe80::1", "ff02::1", "::", "::ffff:10.0.0.1"] {
            let mut a = args();
            a.ping = vec![bad.into()];
            assert_eq!(err(&a, None).field, "--ping", "{bad}");
        }
        let mut a = args();
        a.fence_cmd = Some("  ".into());
        assert_eq!(err(&a, None).field, "--fence-cmd");
        let mut a = args();
        a.garp_refresh = Some("10ms".into());
        assert_eq!(err(&a, None).field, "--garp-refresh");
        assert_eq!(
            err(&args(), Some("notify_timeout = \"soon\"")).field,
            "notify_timeout in /etc/hb/hb.toml"
        );
    }

    #[test]
    fn ipv6_peers_and_vips() {
        let mut a = args();
        a.peer = vec!["2@fd00::2".into(), "2@[fd00:1::2]".into()];
        a.vip = vec!["fd00::100/64".into(), "10.0.0.100/24".into()];
        let c = ok(&a, None);
        assert_eq!(c.peers[0].addr, "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!(c.peers[1].addr, "fd00:1::2".parse::<IpAddr>().unwrap());
        assert_eq!(c.vips[0].to_string(), "fd00::100/64");
        let mut a = args();
        a.vip = vec!["fd00::100/129".into()];
        assert!(err(&a, None).message.contains("1 to 128"));
        let mut a = args();
        a.vip = vec!["fe80::1/64".into()];
        assert_eq!(err(&a, None).field, "--vip", "a link-local VIP is refused");
        let mut a = args();
        a.peer = vec!["2@ff02::1".into()];
        assert_eq!(err(&a, None).field, "--peer", "multicast is not a peer");
    }

    #[test]
    fn checks_take_keepalived_defaults_and_name_the_bad_key() {
        use crate::checks::CheckKind;
        let c = ok(
            &args(),
            Some("[check.web]\nscript = \"curl -sf http://x/\"\n"),
        );
        let w = &c.checks[0];
        assert_eq!(
            (
                w.name.as_str(),
                w.interval,
                w.timeout,
                w.rise,
                w.fall,
                w.weight
            ),
            (
                "web",
                Duration::from_secs(1),
                Duration::from_secs(1),
                1,
                1,
                0
            )
        );
        assert_eq!(w.kind, CheckKind::Script("curl -sf http://x/".into()));
        let c = ok(
            &args(),
            Some("[check.h]\nprocess = \"haproxy\"\nweight = -20\n"),
        );
        assert_eq!(
            (c.checks[0].kind.clone(), c.checks[0].weight),
            (CheckKind::Process("haproxy".into()), -20)
        );
        for (text, field) in [
            (
                "[check.a]\nscript = \"x\"\nweight = 300\n",
                "check.a.weight",
            ),
            (
                "[check.a]\nscript = \"x\"\ninterval = \"1s\"\ntimeout = \"2s\"\n",
                "check.a.timeout",
            ),
            ("[check.a]\nscript = \"x\"\nrise = 0\n", "check.a.rise"),
            ("[check.a]\nscript = \"x\"\nprocess = \"y\"\n", "check.a"),
            (
                "[check.a]\nprocess = \"/usr/sbin/haproxy\"\n",
                "check.a.process",
            ),
        ] {
            let e = err(&args(), Some(text));
            assert_eq!(e.field, format!("{field} in {FILE}"), "{text}: {e}");
        }
        let e = err(&args(), Some("[check.a]\nscript = \"x\"\nfrobnicate = 1\n"));
        assert!(e.to_string().contains("frobnicate"), "{e}");
    }
}
