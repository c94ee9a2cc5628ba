//! `[check.NAME]` tables: health checks with keepalived's defaults.
//! A track `file`'s weight defaults to 1, as keepalived's does.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{
    parse::{duration, iface_name, int},
    ConfigError, Sources,
};
use crate::checks::{CheckKind, CheckSpec};

/// A `[check.NAME]` table: one of a script run every interval (keepalived's
/// `vrrp_script`), a process name or a pid file (`vrrp_track_process`), or an
/// interface (`track_interface`).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckFile {
    script: Option<String>,
    process: Option<String>,
    pid_file: Option<PathBuf>,
    iface: Option<String>,
    file: Option<PathBuf>,
    interval: Option<String>,
    timeout: Option<String>,
    rise: Option<i64>,
    fall: Option<i64>,
    weight: Option<i64>,
}

/// One `[check.NAME]`, with keepalived's defaults (interval 1s, rise and fall
/// 1, weight 0: failing means FAULT); the timeout defaults to the interval.
pub(super) fn spec(src: &Sources, name: String, c: CheckFile) -> Result<CheckSpec, ConfigError> {
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
    let one_of = || {
        bad(
            "",
            "give exactly one of script, process, pid_file, iface or file".into(),
        )
    };
    let kind = match (c.script, c.process, c.pid_file, c.iface) {
        (None, None, None, None) => match c.file {
            Some(p) if !p.as_os_str().is_empty() => CheckKind::File(p),
            Some(_) => return Err(bad("file", "must not be empty".into())),
            None => return Err(one_of()),
        },
        _ if c.file.is_some() => return Err(one_of()),
        (Some(s), None, None, None) if !s.trim().is_empty() => CheckKind::Script(s),
        (None, Some(p), None, None) if !p.is_empty() && p.len() <= 15 && !p.contains('/') => {
            CheckKind::Process(p)
        }
        (None, None, Some(p), None) if !p.as_os_str().is_empty() => CheckKind::PidFile(p),
        (None, None, None, Some(i)) => {
            iface_name(&i).map_err(|m| bad("iface", m))?;
            CheckKind::Iface(i)
        }
        (Some(_), None, None, None) => return Err(bad("script", "must not be empty".into())),
        (None, Some(_), None, None) => {
            return Err(bad(
                "process",
                "a process name as /proc/PID/comm shows it: 1 to 15 bytes, no '/'".into(),
            ))
        }
        (None, None, Some(_), None) => return Err(bad("pid_file", "must not be empty".into())),
        _ => return Err(one_of()),
    };
    let dur = |key: &str, v: Option<String>, default: Duration| match v {
        Some(s) => duration(&s).map_err(|m| bad(key, m)),
        None => Ok(default),
    };
    let interval = dur("interval", c.interval, Duration::from_secs(1))?;
    if interval < Duration::from_millis(10) {
        return Err(bad("interval", "must be at least 10ms".into()));
    }
    let timeout = dur("timeout", c.timeout, interval)?;
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
        int::<u32>(&v.unwrap_or(1).to_string(), 1, 1000).map_err(|m| bad(key, m))
    };
    let (rise, fall) = (count("rise", c.rise)?, count("fall", c.fall)?);
    let default_weight = if matches!(kind, CheckKind::File(_)) {
        1
    } else {
        0
    };
    let weight = match c.weight.unwrap_or(default_weight) {
        w @ -255..=255 => w as i32,
        w => return Err(bad("weight", format!("expected -255..=255, got {w}"))),
    };
    Ok(CheckSpec {
        name,
        kind,
        interval,
        timeout,
        rise,
        fall,
        weight,
    })
}
