//! Settings of `hb-user run`: command-line flags, a TOML file with the same
//! keys, and the checks that need no network.
//!
//! Every setting is declared once, in `table.rs`. Flags win over the file and
//! defaults apply last. Values are taken as strings and parsed by one parser
//! per setting (`parse.rs`), so that every bad value, flag or file key, comes
//! back as one [`ConfigError`] naming the field the way the user wrote it; the
//! rules between settings are `validate.rs`.

mod checks;
pub mod groups;
pub mod parse;
pub mod routes;
mod table;
#[cfg(test)]
mod tests;
pub mod validate;

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::IpAddr,
    path::PathBuf,
    sync::OnceLock,
};

pub use parse::parse_duration;
pub use table::{
    Announce, Election, Hooks, Membership, Paths, RunArgs, Runtime, Table, Timers, SETTINGS,
};

/// Read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/hb/hb.toml";

/// One entry of the settings table.
#[derive(Debug)]
pub struct Setting {
    /// The field: in [`RunArgs`] (the flag) and in its subsystem's struct.
    pub id: &'static str,
    /// The config file's key.
    pub key: &'static str,
    pub default: Initial,
    pub reload: Reload,
    pub doc: &'static str,
}

/// A setting's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initial {
    /// No default: a flag or the file must give it.
    Required,
    /// Absent unless given (an empty list, or no value).
    Absent,
    /// Parsed like a user's value.
    Value(&'static str),
}

/// How a running node takes a changed setting at reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// Applied at once.
    Live,
    /// Shapes the data plane, the sessions or the VIPs' placement: a change
    /// is refused, and takes a restart.
    Restart,
}

/// Tables of the file besides the settings.
const TABLES: &[&str] = &["check", "group", "sync"];

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
        parse::vip(s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpModeArg {
    Auto,
    Native,
    Generic,
}

/// Validated settings: the table's, by subsystem, and the file's tables.
/// Everything that can be checked without the network is checked here.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    pub table: Table,
    /// Health checks (`[check.NAME]` tables), in name order.
    pub checks: Vec<crate::checks::CheckSpec>,
    /// VIP groups (`[group.NAME]` tables, in name order, or the default
    /// group) and sync groups.
    pub groups: Vec<groups::GroupSpec>,
    pub syncs: Vec<groups::SyncSpec>,
    /// The groups come from `[group.NAME]` tables (else the default group's
    /// changes are the top-level settings').
    pub group_tables: bool,
}

impl std::ops::Deref for RunConfig {
    type Target = Table;
    fn deref(&self) -> &Table {
        &self.table
    }
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

/// The file's top-level values, by key.
type File = BTreeMap<toml::Spanned<String>, toml::Value>;

/// Where each setting's value comes from: the flags, else the file, else the
/// default; remembers which, so that errors name the field as given.
pub(crate) struct Sources<'a> {
    file_name: &'a str,
    file: File,
    given: std::cell::RefCell<HashMap<&'static str, String>>,
}

/// "--no-preempt" for "preempt": each flag's long name, from clap.
fn flag(id: &str) -> String {
    static FLAGS: OnceLock<HashMap<String, String>> = OnceLock::new();
    let flags = FLAGS.get_or_init(|| {
        use clap::Args;
        RunArgs::augment_args(clap::Command::new("hb-user"))
            .get_arguments()
            .filter_map(|a| Some((a.get_id().to_string(), format!("--{}", a.get_long()?))))
            .collect()
    });
    flags.get(id).cloned().unwrap_or_else(|| id.to_owned())
}

/// A file value as the strings a flag would give.
fn strings(v: &toml::Value) -> Result<Vec<String>, String> {
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("expected a value, got a {}", other.type_str())),
    };
    match v {
        toml::Value::Array(a) => a.iter().map(scalar).collect(),
        v => Ok(vec![scalar(v)?]),
    }
}

impl Sources<'_> {
    fn file_key(&self, key: &str) -> String {
        format!("{key} in {}", self.file_name)
    }

    /// The field name to blame for `id`: its flag unless the file gave it.
    fn field(&self, id: &'static str) -> String {
        self.given
            .borrow()
            .get(id)
            .cloned()
            .unwrap_or_else(|| flag(id))
    }

    /// The values given for `id` (flags, else the file) and the field that gave them.
    fn values(
        &self,
        id: &'static str,
        flags: &[String],
        key: &str,
    ) -> Result<Option<(Vec<String>, String)>, ConfigError> {
        let found = if !flags.is_empty() {
            Some((flags.to_vec(), flag(id)))
        } else if let Some(v) = self.file.get(key) {
            let field = self.file_key(key);
            let list = strings(v).map_err(|m| ConfigError::new(&field, m))?;
            Some((list, field))
        } else {
            None
        };
        if let Some((_, field)) = &found {
            self.given.borrow_mut().insert(id, field.clone());
        }
        Ok(found)
    }

    /// A single value.
    fn one<T>(
        &self,
        id: &'static str,
        flags: &[String],
        key: &str,
        default: Initial,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.values(id, flags, key)? {
            Some((list, field)) => {
                let [v] = list.as_slice() else {
                    let why = if list.is_empty() {
                        "expected one value, got an empty list"
                    } else if field.starts_with("--") {
                        "given more than once"
                    } else {
                        "expected one value, got a list"
                    };
                    return Err(ConfigError::new(field, why));
                };
                parse(v).map_err(|m| ConfigError::new(field, m))
            }
            None => match default {
                Initial::Value(d) => parse(d)
                    .map_err(|m| ConfigError::new(flag(id), format!("built-in default: {m}"))),
                _ => Err(self.required(id, key)),
            },
        }
    }

    /// A single value that may be absent.
    fn opt<T>(
        &self,
        id: &'static str,
        flags: &[String],
        key: &str,
        default: Initial,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        if default == Initial::Absent && flags.is_empty() && !self.file.contains_key(key) {
            return Ok(None);
        }
        self.one(id, flags, key, default, parse).map(Some)
    }

    /// Every value; flags replace the file's list.
    fn list<T>(
        &self,
        id: &'static str,
        flags: &[String],
        key: &str,
        default: Initial,
        parse: impl Fn(&[String]) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.values(id, flags, key)? {
            Some((list, field)) => parse(&list).map_err(|m| ConfigError::new(field, m)),
            None if default == Initial::Required => Err(self.required(id, key)),
            None => parse(&[]).map_err(|m| ConfigError::new(flag(id), m)),
        }
    }

    /// The error for a setting that has no default.
    fn required(&self, id: &str, key: &str) -> ConfigError {
        ConfigError::new(
            flag(id),
            format!("required (flag or {})", self.file_key(key)),
        )
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
        let (file_name, mut file) = match file {
            Some((name, text)) => (name, parse_file(name, text)?),
            None => (DEFAULT_CONFIG, File::new()),
        };
        let check = take_table::<checks::CheckFile>(&mut file, "check", file_name)?;
        let group = take_table::<groups::GroupFile>(&mut file, "group", file_name)?;
        let sync = take_table::<groups::SyncFile>(&mut file, "sync", file_name)?;
        let src = Sources {
            file_name,
            file,
            given: Default::default(),
        };
        let table = Table::resolve(&src, args)?;
        validate::check(&table, |id| src.field(id))
            .map_err(|b| ConfigError::new(src.field(b.setting), b.rule.to_string()))?;
        let checks = check
            .into_iter()
            .map(|(name, c)| checks::spec(&src, name, c))
            .collect::<Result<Vec<_>, _>>()?;
        let group_tables = !group.is_empty();
        let (groups, syncs) = groups::resolve(&src, &table, &checks, group, sync)?;
        Ok(RunConfig {
            table,
            checks,
            groups,
            syncs,
            group_tables,
        })
    }

    /// The file keys of the settings that differ in `new`, and whether each
    /// applies live.
    pub fn changed(&self, new: &RunConfig) -> Vec<(&'static str, Reload)> {
        let mut out: Vec<_> = (self.table.changed(&new.table).into_iter())
            .map(|s| (s.key, s.reload))
            .collect();
        if self.checks != new.checks {
            out.push(("check", Reload::Live));
        }
        // The default group's VIPs and settings are the top-level keys, named above.
        if self.group_tables || new.group_tables {
            if self.groups != new.groups {
                out.push(("group", Reload::Live));
            }
            if self.syncs != new.syncs {
                out.push(("sync", Reload::Live));
            }
        }
        out
    }
}

/// Removes `[name.X]` tables from the file, each read as a `T`.
fn take_table<T: serde::de::DeserializeOwned>(
    file: &mut File,
    name: &str,
    file_name: &str,
) -> Result<BTreeMap<String, T>, ConfigError> {
    let Some(v) = file.remove(name) else {
        return Ok(BTreeMap::new());
    };
    let toml::Value::Table(t) = v else {
        return Err(ConfigError::new(
            format!("{name} in {file_name}"),
            format!("expected [{name}.NAME] tables"),
        ));
    };
    t.into_iter()
        .map(|(k, v)| {
            let field = format!("{name}.{k} in {file_name}");
            let v = v
                .try_into::<T>()
                .map_err(|e| ConfigError::new(field, e.message().trim().replace('\n', " ")))?;
            Ok((k, v))
        })
        .collect()
}

/// Parses the file, and refuses keys the table does not have; toml's own
/// messages span several lines, so this keeps the one-line message and
/// points at the line it is about.
fn parse_file(name: &str, text: &str) -> Result<File, ConfigError> {
    let at = |start: usize, message: &str| {
        let start = start.min(text.len());
        let line_no = text[..start].matches('\n').count() + 1;
        let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
        let line: String = line.chars().take(60).collect();
        ConfigError::new(
            name,
            format!("line {line_no} ({line}): {}", message.trim()).replace('\n', " "),
        )
    };
    let file: File = toml::from_str(text).map_err(|e| match e.span() {
        Some(span) => at(span.start, e.message()),
        None => ConfigError::new(name, e.message().trim().replace('\n', " ")),
    })?;
    for k in file.keys() {
        let known =
            SETTINGS.iter().any(|s| s.key == k.get_ref()) || TABLES.contains(&&**k.get_ref());
        if !known {
            return Err(at(
                k.span().start,
                &format!("unknown key `{}`", k.get_ref()),
            ));
        }
    }
    Ok(file)
}
