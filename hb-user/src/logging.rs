//! Where the log goes: under systemd, whose journal is stderr
//! (`JOURNAL_STREAM` names it), native journald entries with the event's
//! priority (ERROR 3, WARN 4, INFO 5...) and its fields (GROUP, STATE,
//! REASON, PEER, SILENCE_MS on transitions); elsewhere lines on stderr.

use std::os::unix::fs::MetadataExt;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

/// Whether stderr is the stream systemd's `JOURNAL_STREAM` names
/// ("DEVICE:INODE"): a redirected stderr is not.
fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(m) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino())
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("HB_LOG").unwrap_or_else(|_| "info".into())
}

/// Installs the logger for `hb-user run`.
pub fn init() {
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(j) => {
                let j = (j.with_syslog_identifier("hb-user".into())).with_field_prefix(None);
                tracing_subscriber::registry().with(filter()).with(j).init();
                return;
            }
            Err(e) => eprintln!("hb-user: no journald socket ({e}): logging to stderr"),
        }
    }
    // The message alone: the fields are for the journal.
    let message_only = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        if field.name() == "message" {
            write!(w, "{value:?}")
        } else {
            Ok(())
        }
    });
    tracing_subscriber::fmt()
        .fmt_fields(message_only)
        .with_env_filter(filter())
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
