//! What the Debian package installs besides the binary, made from the
//! definitions themselves so that it cannot drift from them: `hb-user(8)` and
//! a page per subcommand from the clap command (clap_mangen), `hb.toml(5)`
//! from the settings table and the file's tables, completions for bash, zsh
//! and fish (clap_complete), and `hb.toml`, every key commented out with its
//! default (the package's /etc/hb/hb.toml, committed as contrib/hb.toml).
//! `hb-user generate --out DIR` writes them all.

use std::{fs, path::Path};

use anyhow::Context;
use clap::Command;
use clap_complete::Shell;
use roff::{bold, italic, roman, Roff};

use crate::config::{Initial, Reload, RunArgs, Setting, DEFAULT_CONFIG, SETTINGS};

/// The commented config file's name in the output directory.
const CONFIG_FILE: &str = "hb.toml";

/// Example values (TOML) of the settings that have no default: shown
/// commented out in `hb.toml` and used in hb.toml(5)'s example.
const EXAMPLES: &[(&str, &str)] = &[
    ("iface", r#"["eth0"]"#),
    ("node_id", "1"),
    ("peer", r#"["2@10.0.0.2"]"#),
    ("ping", r#"["10.0.0.254"]"#),
    ("vip", r#"["10.0.0.100/24"]"#),
    ("garp_refresh", r#""60s""#),
    ("fence_cmd", r#""/usr/local/sbin/fence-peer""#),
    ("notify", r#""/usr/local/sbin/hb-notify""#),
    ("metrics", r#""127.0.0.1:9694""#),
    ("witness", r#""etcd://10.0.0.250:2379""#),
];

/// A key of a `[group.NAME]`, `[sync.NAME]` or `[check.NAME]` table.
#[derive(Clone, Copy)]
struct TableKey {
    key: &'static str,
    /// What it takes, as written in the file.
    value: &'static str,
    doc: &'static str,
}

const fn k(key: &'static str, value: &'static str, doc: &'static str) -> TableKey {
    TableKey { key, value, doc }
}

const GROUP_KEYS: &[TableKey] = &[
    k(
        "id",
        "1-8",
        "The group's place in heartbeats: the same on every node. Without it, the lowest id no group names, in name order.",
    ),
    k(
        "vip",
        r#"["ADDR/PREFIX", "ADDR/PREFIX dev IF"]"#,
        "The group's VIPs. A VIP outside every heartbeat subnet names its interface (dev IF, else the group's iface).",
    ),
    k(
        "iface",
        r#""IF""#,
        "The interface of its VIPs that name none; else each goes on the heartbeat link whose subnet holds it.",
    ),
    k("priority", "0-255", "As the top-level key, its default."),
    k(
        "preempt",
        "true | false",
        "As the top-level key, its default.",
    ),
    k(
        "preempt_delay",
        r#""DURATION""#,
        "As the top-level key, its default.",
    ),
    k(
        "track",
        r#"["CHECK", "CHECK weight W"]"#,
        "The [check.NAME] tables it tracks, with the check's weight unless given. Without groups, the default group tracks every check.",
    ),
    k(
        "routes",
        r#"["10.1.0.0/16 via 10.0.0.254 dev eth0"]"#,
        "Routes in ip route's words, added after its VIPs when it is taken and removed before them when it is released (keepalived's virtual_routes).",
    ),
    k(
        "rules",
        r#"["from 10.0.0.100/32 table 100"]"#,
        "Rules in ip rule's words, likewise (keepalived's virtual_rules).",
    ),
    k("notify", r#""CMD""#, "As the top-level key, its default."),
    k(
        "notify_args",
        "\"hb\" | \"keepalived\"",
        "As the top-level key, its default.",
    ),
    k(
        "notify_master_rx_lower_pri",
        r#""CMD""#,
        "A command run when the group's holder hears a lower-priority node also holding it (a healed partition: the lower one yields).",
    ),
];

const SYNC_KEYS: &[TableKey] = &[
    k(
        "groups",
        r#"["GROUP", ...]"#,
        "Required: the member groups. They elect as one, so one member's failing check moves them all; they must share priority, preempt and preempt_delay.",
    ),
    k(
        "notify",
        r#""CMD""#,
        "A command run on the sync group's transitions (with notify_args = \"keepalived\": GROUP NAME STATE PRIORITY).",
    ),
    k(
        "notify_args",
        "\"hb\" | \"keepalived\"",
        "As the top-level key, its default.",
    ),
];

/// keepalived's per-state commands, which groups and sync groups both take.
const STATE_KEYS: &[TableKey] = &[
    k(
        "notify_master",
        r#""CMD""#,
        "Run as written, without arguments, on entering MASTER (keepalived's notify_master).",
    ),
    k(
        "notify_backup",
        r#""CMD""#,
        "Run as written, without arguments, on entering BACKUP (keepalived's notify_backup).",
    ),
    k(
        "notify_fault",
        r#""CMD""#,
        "Run as written, without arguments, on entering FAULT (keepalived's notify_fault).",
    ),
    k(
        "notify_stop",
        r#""CMD""#,
        "Run as written, without arguments, at a graceful stop (keepalived's notify_stop).",
    ),
];

const CHECK_KEYS: &[TableKey] = &[
    k(
        "script",
        r#""CMD""#,
        "A shell command run every interval: exit 0 within the timeout passes (keepalived's vrrp_script).",
    ),
    k(
        "process",
        r#""NAME""#,
        "Passes while a process of this name (/proc/PID/comm, at most 15 bytes) runs; nothing is spawned.",
    ),
    k(
        "pid_file",
        r#""PATH""#,
        "Passes while the process the file names runs.",
    ),
    k(
        "iface",
        r#""IF""#,
        "An interface beyond the heartbeat links: passes while it is up with carrier (keepalived's track_interface).",
    ),
    k(
        "file",
        r#""PATH""#,
        "A file holding an integer: the value times the weight is added to the priority; with weight 0 any value but 0 is FAULT. No file reads as 0 (keepalived's track_file).",
    ),
    k(
        "interval",
        r#""DURATION""#,
        "Time between runs, at least 10ms. Default: 1s.",
    ),
    k(
        "timeout",
        r#""DURATION""#,
        "Time a run may take, at most the interval. Default: the interval.",
    ),
    k(
        "rise",
        "1-1000",
        "Passes in a row that make a failing check healthy. Default: 1.",
    ),
    k(
        "fall",
        "1-1000",
        "Failures in a row that make a healthy check fail. Default: 1.",
    ),
    k(
        "weight",
        "-255..255",
        "Added to the priority while passing (positive) or failing (negative); 0: failing means FAULT, holding nothing. Default: 0 (1 for file).",
    ),
];

/// Writes every page, completion and the commented config file into `out`
/// (made if missing). `cmd` is hb-user's whole command line.
pub fn generate(cmd: Command, out: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut files = man_pages(cmd.clone());
    files.push(("hb.toml.5".into(), config_page()));
    files.extend(completions(cmd));
    files.push((CONFIG_FILE.into(), commented_config()));
    for (name, text) in files {
        let path = out.join(&name);
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// `hb-user.8` and `hb-user-SUB.8` for each subcommand that is not hidden:
/// (file name, roff).
fn man_pages(cmd: Command) -> Vec<(String, String)> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_display_name().unwrap_or(sub.get_name()).to_owned();
        let mut extra = Roff::new();
        see_also(&mut extra, &[("hb-user", "8"), ("hb.toml", "5")]);
        pages.push((format!("{name}.8"), page(sub.clone(), extra)));
    }
    let mut extra = Roff::new();
    main_page_sections(&mut extra);
    let name = cmd.get_name().to_owned();
    pages.insert(0, (format!("{name}.8"), page(cmd, extra)));
    pages
}

/// clap_mangen's page in section 8, with `extra` sections after it.
fn page(cmd: Command, extra: Roff) -> String {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("8")
        .render(&mut buf)
        .expect("writing to a Vec");
    let mut text = String::from_utf8(buf).expect("clap_mangen writes UTF-8");
    // Without roff's preamble, which the page already has.
    text.push_str(&extra.to_roff());
    text
}

/// The main page's FILES, EXIT STATUS, ENVIRONMENT and SEE ALSO.
fn main_page_sections(r: &mut Roff) {
    r.control("SH", ["FILES"]);
    let files = [
        (DEFAULT_CONFIG.to_owned(), "The config file, hb.toml(5)."),
        (
            default_of("key_file"),
            "The cluster's key (hb-user keygen): root's, mode 0600, the same on every node.",
        ),
        (
            default_of("state_dir"),
            "The lock, the status file and the control socket.",
        ),
        (
            default_of("pin_root"),
            "The pinned program and maps, for bpftool.",
        ),
    ];
    for (path, doc) in files {
        r.control("TP", []).text([bold(path)]).text([roman(doc)]);
    }
    r.control("SH", ["EXIT STATUS"]);
    for (code, doc) in [
        ("0", "Success."),
        (
            "1",
            "A kernel that lacks a feature hb needs (named), or another failure.",
        ),
        (
            "2",
            "A bad setting, named as given (flag or file key); nothing was attached or changed. For reload, standby and resume: the request was refused.",
        ),
        (
            "3",
            "For status, reload, standby and resume: hb-user is not running.",
        ),
    ] {
        r.control("TP", []).text([bold(code)]).text([roman(doc)]);
    }
    r.control("SH", ["ENVIRONMENT"]);
    r.control("TP", []).text([bold("HB_LOG")]).text([roman(
        "The log filter, in tracing-subscriber's EnvFilter syntax (debug, hb_user=trace); default info.",
    )]);
    see_also(r, &[("hb.toml", "5"), ("bpftool", "8"), ("systemctl", "1")]);
}

fn see_also(r: &mut Roff, pages: &[(&str, &str)]) {
    r.control("SH", ["SEE ALSO"]);
    let mut line = Vec::new();
    for (i, (name, section)) in pages.iter().enumerate() {
        if i > 0 {
            line.push(roman(", "));
        }
        line.push(bold(*name));
        line.push(roman(format!("({section})")));
    }
    r.text(line);
}

/// The default of the setting whose file key is `key` (a path setting).
fn default_of(key: &str) -> String {
    match SETTINGS.iter().find(|s| s.key == key).map(|s| s.default) {
        Some(Initial::Value(v)) => v.to_owned(),
        _ => panic!("the settings table has no default for {key}"),
    }
}

/// A setting's flag as `hb-user run` takes it: ("--dead-after", "DURATION").
fn flag(s: &Setting) -> (String, Option<String>) {
    use clap::Args;
    let cmd = RunArgs::augment_args(Command::new("hb-user"));
    let arg = cmd
        .get_arguments()
        .find(|a| a.get_id() == s.id)
        .unwrap_or_else(|| panic!("RunArgs has no flag for {}", s.id));
    let long = format!("--{}", arg.get_long().unwrap_or(s.id));
    let value = match arg.get_num_args() {
        Some(n) if n.max_values() == 0 => None,
        _ => arg
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string()),
    };
    (long, value)
}

/// A setting's doc without the "[default: ...]" some carry, and its default
/// as the man page says it.
fn doc_and_default(s: &Setting) -> (String, String) {
    let (doc, given) = match s.doc.split_once(" [default: ") {
        Some((doc, rest)) => (
            format!("{doc}{}", rest.split_once(']').map_or("", |(_, r)| r)),
            rest.split_once(']').map(|(d, _)| d.to_owned()),
        ),
        None => (s.doc.to_owned(), None),
    };
    let default = match s.default {
        Initial::Value(v) => v.to_owned(),
        Initial::Required => "required".to_owned(),
        Initial::Absent => given.unwrap_or_else(|| "none".to_owned()),
    };
    (doc, default)
}

fn reload_text(r: Reload) -> &'static str {
    match r {
        Reload::Live => "A reload applies a change.",
        Reload::Restart => "A change takes a restart: a reload refuses it.",
    }
}

/// A TOML value for a default as the table writes it ("100ms", "694").
fn toml_value(v: &str) -> String {
    if v.parse::<i64>().is_ok() || v == "true" || v == "false" {
        v.to_owned()
    } else {
        toml::Value::String(v.to_owned()).to_string()
    }
}

/// hb.toml(5): every setting of the table, then the tables' keys.
fn config_page() -> String {
    let mut r = Roff::new();
    let source = format!("hb {}", env!("CARGO_PKG_VERSION"));
    r.control("TH", ["hb.toml", "5", "", &source, "File Formats"]);
    r.control("SH", ["NAME"]);
    r.text([roman("hb.toml - the settings of hb-user(8)")]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([bold(DEFAULT_CONFIG)]);
    r.control("SH", ["DESCRIPTION"]);
    r.text([roman(format!(
        "A TOML file read by hb-user run and hb-user check (from {DEFAULT_CONFIG} when it exists, \
         or as --config names), and again at a reload (hb-user reload, SIGHUP). Each setting is a \
         top-level key and a flag of hb-user run: the flag wins over the file, the default applies \
         last. A setting whose flag may be repeated takes a list; a single value also does. A bad \
         value, an unknown key or a rule between settings broken is refused with one line naming \
         the key and the file, before anything is attached or changed."
    ))]);
    r.control("PP", []);
    r.text([roman(
        "A reload validates the whole file as a start would and applies what changed, or refuses \
         it as a whole and keeps the running settings when a key that takes a restart changed.",
    )]);
    r.control("SH", ["SETTINGS"]);
    for s in SETTINGS {
        let (long, value) = flag(s);
        let (doc, default) = doc_and_default(s);
        let mut head = vec![bold(s.key), roman(" (flag "), bold(long)];
        if let Some(v) = value {
            head.extend([roman(" "), italic(v)]);
        }
        head.push(roman(")"));
        r.control("TP", []).text(head);
        r.text([roman(doc)]);
        let default = match s.default {
            Initial::Required => "Required.".to_owned(),
            _ => format!("Default: {default}."),
        };
        r.text([roman(format!("{default} {}", reload_text(s.reload)))]);
    }
    table_section(
        &mut r,
        "[group.NAME]",
        "A VIP group (keepalived's vrrp_instance), up to 8: each elects on its own, and one heartbeat per peer carries them all. Without group tables, the top-level vip, priority, preempt, preempt_delay and notify make one group, default. With them, VIPs go in their groups only. A name is letters, digits, '_', '-' or '.'.",
        &[GROUP_KEYS, STATE_KEYS],
    );
    table_section(
        &mut r,
        "[sync.NAME]",
        "Groups that move together (keepalived's vrrp_sync_group).",
        &[SYNC_KEYS, STATE_KEYS],
    );
    table_section(
        &mut r,
        "[check.NAME]",
        "A health check, with exactly one of script, process, pid_file, iface or file. A check with no result yet counts as failing; the weighed priority is what heartbeats carry.",
        &[CHECK_KEYS],
    );
    r.control("SH", ["EXAMPLE"]);
    r.control("nf", []);
    for line in page_example().lines() {
        r.text([roman(line)]);
    }
    r.control("fi", []);
    r.control("SH", ["FILES"]);
    r.control("TP", []).text([bold(DEFAULT_CONFIG)]);
    r.text([roman(
        "As installed: every key commented out with its default; iface, node_id and peer, which have none, with examples.",
    )]);
    see_also(
        &mut r,
        &[
            ("hb-user", "8"),
            ("hb-user-check", "8"),
            ("hb-user-reload", "8"),
        ],
    );
    r.render()
}

fn table_section(r: &mut Roff, name: &str, doc: &str, keys: &[&[TableKey]]) {
    r.control("SH", [name]);
    r.text([roman(doc)]);
    for key in keys.iter().copied().flatten() {
        r.control("TP", [])
            .text([bold(key.key), roman(" = "), italic(key.value)]);
        r.text([roman(key.doc)]);
    }
}

/// A two-node pair's file, node 1's, with a group and a check.
fn page_example() -> String {
    let mut out = String::new();
    for key in ["iface", "node_id", "peer"] {
        out += &format!("{key} = {}\n", example_of(key).expect("an example"));
    }
    out += "priority = 150\n\n[group.web]\nvip = [\"10.0.0.100/24\"]\ntrack = [\"nginx\"]\n\n";
    out += "[check.nginx]\nprocess = \"nginx\"\nweight = -100\n";
    out
}

fn example_of(key: &str) -> Option<&'static str> {
    EXAMPLES.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// Shell completions: (file name, script) for bash, zsh and fish, named as
/// their packages look for them.
fn completions(cmd: Command) -> Vec<(String, String)> {
    let mut cmd = without_hidden(&cmd);
    let name = cmd.get_name().to_owned();
    [
        (Shell::Bash, format!("{name}.bash")),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ]
    .into_iter()
    .map(|(shell, file)| {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, &name, &mut buf);
        let mut script = String::from_utf8(buf).expect("clap_complete writes UTF-8");
        if shell == Shell::Bash {
            // clap_complete 4.6 spells a hyphenated binary's state one way in
            // the loop (hb__user__subcmd__check) and another in the case arms
            // (hb__subcmd__user__subcmd__check), so no subcommand's options
            // complete (clap-rs/clap#6421): the arms spelled as the loop.
            script = script.replace(&name.replace('-', "__subcmd__"), &name.replace('-', "__"));
        }
        (file, script)
    })
    .collect()
}

/// `cmd` without its hidden subcommands, which clap_complete would offer:
/// the same names, version, about and arguments. clap cannot remove a
/// subcommand, and takes only `'static` names: those few are leaked, once
/// per `generate`.
fn without_hidden(cmd: &Command) -> Command {
    let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
    let args = cmd
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .cloned();
    let subs = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(without_hidden);
    let mut out = Command::new(leak(cmd.get_name()))
        .args(args)
        .subcommands(subs);
    if let Some(v) = cmd.get_version() {
        out = out.version(leak(v));
    }
    if let Some(a) = cmd.get_about() {
        out = out.about(a.clone());
    }
    out
}

/// `text` as `# ` comment lines of at most 79 columns.
fn comment(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 79 && line.len() > 1 {
            out += &line;
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out += &line;
    out.push('\n');
    out
}

/// The package's /etc/hb/hb.toml: every setting commented out with its
/// default (or an example, for those without one) and its doc.
fn commented_config() -> String {
    let mut out = comment(
        "hb-user's settings: hb.toml(5) describes every key, and a flag of the same name \
         (hb-user --help) wins over the file. Each key below is commented out with its \
         default; iface, node_id and peer have none and must be given (the values shown are \
         examples). Check the file with `hb-user check`; a running node reads it again on \
         `systemctl reload hb`.",
    );
    for s in SETTINGS {
        let (doc, _) = doc_and_default(s);
        let doc = match s.reload {
            Reload::Live => doc,
            Reload::Restart => format!("{doc} A change takes a restart."),
        };
        out.push('\n');
        out += &comment(&doc);
        let line = match s.default {
            Initial::Value(v) => format!("# {} = {}\n", s.key, toml_value(v)),
            Initial::Required => format!("# {} = {}    # required\n", s.key, example_value(s)),
            Initial::Absent => {
                let (_, default) = doc_and_default(s);
                format!(
                    "# {} = {}    # an example; default: {default}\n",
                    s.key,
                    example_value(s)
                )
            }
        };
        out += &line;
    }
    out.push('\n');
    out += &comment(
        "VIP groups, sync groups and health checks are tables: [group.NAME], [sync.NAME] and \
         [check.NAME] (hb.toml(5) lists their keys). With group tables, the VIPs go in the \
         groups, not in the top-level vip. For example:",
    );
    out +=
        "#\n# [group.web]\n# vip = [\"10.0.0.100/24\"]\n# priority = 200\n# track = [\"nginx\"]\n";
    out += "#\n# [check.nginx]\n# process = \"nginx\"\n";
    out
}

fn example_value(s: &Setting) -> String {
    // A setting added without an example still gets a line; a test asks for one.
    match example_of(s.key) {
        Some(v) => v.to_owned(),
        None => toml_value(&flag(s).1.unwrap_or_else(|| "VALUE".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;

    /// hb-user's shape, as main.rs declares it: the run flags at the top,
    /// and subcommands.
    fn command() -> Command {
        use clap::Args;
        let top = Command::new("hb-user")
            .version("0.1.0")
            .about("hb: XDP heartbeats and VIP failover")
            .args_conflicts_with_subcommands(true);
        RunArgs::augment_args(top)
            .subcommand(RunArgs::augment_args(
                Command::new("check").about("Check the settings"),
            ))
            .subcommand(Command::new("keygen").about("Write a new key"))
            .subcommand(Command::new("generate").hide(true))
    }

    /// A page as man shows its words: roff's escaped dashes unescaped.
    fn plain(roff: &str) -> String {
        roff.replace("\\-", "-")
    }

    #[test]
    fn pages_name_every_setting_by_key_and_flag() {
        let pages = man_pages(command());
        let main = plain(&pages[0].1);
        assert_eq!(pages[0].0, "hb-user.8");
        let config = plain(&config_page());
        for s in SETTINGS {
            let (long, _) = flag(s);
            assert!(main.contains(&long), "hb-user.8 lacks {long}");
            assert!(config.contains(&long), "hb.toml.5 lacks {long}");
            assert!(
                config.contains(&format!("\\fB{}\\fR", s.key)),
                "hb.toml.5 lacks the key {}",
                s.key
            );
        }
        for t in ["[group.NAME]", "[sync.NAME]", "[check.NAME]"] {
            assert!(config.contains(t), "hb.toml.5 lacks {t}");
        }
    }

    #[test]
    fn each_visible_subcommand_has_a_page_listed_on_the_main_one() {
        let pages = man_pages(command());
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["hb-user.8", "hb-user-check.8", "hb-user-keygen.8"]);
        let main = plain(&pages[0].1);
        assert!(main.contains("hb-user-check(8)"), "{main}");
        assert!(!main.contains("generate"), "a hidden subcommand is listed");
        assert!(main.contains(".SH FILES") && main.contains(".SH \"SEE ALSO\""));
    }

    #[test]
    fn completions_know_the_subcommands_and_flags() {
        for (file, script) in completions(command()) {
            for word in ["check", "keygen", "--dead-after"] {
                assert!(script.contains(word), "{file} lacks {word}");
            }
            assert!(
                !script.contains("generate"),
                "{file} offers a hidden subcommand"
            );
            assert!(
                !script.contains("hb__subcmd__user"),
                "{file}: clap-rs/clap#6421"
            );
        }
    }

    /// Each table key the page documents is one the file takes, and each one
    /// the file takes is documented: serde names the known fields when it
    /// refuses an unknown one.
    #[test]
    fn the_documented_table_keys_are_the_files() {
        for (table, keys) in [
            ("group", [GROUP_KEYS, STATE_KEYS].concat()),
            ("sync", [SYNC_KEYS, STATE_KEYS].concat()),
            ("check", CHECK_KEYS.to_vec()),
        ] {
            let text = format!("[{table}.x]\nno_such_key = 1\n");
            let err = RunConfig::from_parts(&RunArgs::default(), Some(("hb.toml", &text)))
                .expect_err("an unknown key")
                .to_string();
            let known = err
                .split_once("expected one of ")
                .unwrap_or_else(|| panic!("{table}: {err}"))
                .1;
            let mut known: Vec<&str> = known
                .split(", ")
                .map(|w| w.trim().trim_matches('`'))
                .collect();
            known.sort();
            let mut documented: Vec<&str> = keys.iter().map(|k| k.key).collect();
            documented.sort();
            assert_eq!(documented, known, "[{table}.NAME] keys");
        }
    }

    #[test]
    fn every_setting_without_a_default_has_an_example() {
        for s in SETTINGS {
            if !matches!(s.default, Initial::Value(_)) {
                assert!(example_of(s.key).is_some(), "no example for {}", s.key);
            }
        }
        for (key, _) in EXAMPLES {
            assert!(
                SETTINGS.iter().any(|s| s.key == *key),
                "an example for {key}, which is not a setting"
            );
        }
    }

    /// The file as installed reads as no file would, but for the required
    /// settings, which its reader must give.
    #[test]
    fn the_commented_config_parses_and_asks_for_the_required_settings() {
        let text = commented_config();
        let err = RunConfig::from_parts(&RunArgs::default(), Some(("hb.toml", &text)))
            .expect_err("iface, node_id and peer are commented out")
            .to_string();
        assert!(err.contains("required"), "{err}");
        let args = RunArgs {
            ifaces: vec!["eth0".into()],
            node_id: vec!["1".into()],
            peers: vec!["2@10.0.0.2".into()],
            ..Default::default()
        };
        let with_file = RunConfig::from_parts(&args, Some(("hb.toml", &text))).unwrap();
        let without = RunConfig::from_parts(&args, None).unwrap();
        assert_eq!(with_file, without, "the commented file changes nothing");
    }

    /// Every commented line uncommented (but the top-level vip, which group
    /// tables exclude) is a valid file: the defaults and examples are values
    /// the parsers take.
    #[test]
    fn the_commented_config_uncommented_is_valid() {
        let text: String = commented_config()
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                let key = l.split(" = ").next().unwrap_or("");
                (l.starts_with('[') && l.ends_with(']') && !l.contains(' '))
                    || (l.contains(" = ")
                        && !key.contains(' ')
                        && key != "vip"
                        && key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        for s in SETTINGS.iter().filter(|s| s.key != "vip") {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{} = ", s.key))),
                "{} is not in the file",
                s.key
            );
        }
        RunConfig::from_parts(&RunArgs::default(), Some(("hb.toml", &text)))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
    }

    /// contrib/hb.toml, which the package installs, is what `generate` writes.
    #[test]
    fn contrib_hb_toml_is_generated() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../contrib/hb.toml");
        let committed = fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == commented_config(),
            "{path} differs from what `hb-user generate` writes (a setting \
             changed?): `cargo xtask deb` writes target/deb-assets/hb.toml, copy it there"
        );
    }

    #[test]
    fn generate_writes_every_file() {
        let dir = std::env::temp_dir().join(format!("hb-manpages-{}", std::process::id()));
        generate(command(), &dir).unwrap();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let want = [
            "_hb-user",
            "hb-user-check.8",
            "hb-user-keygen.8",
            "hb-user.8",
            "hb-user.bash",
            "hb-user.fish",
            "hb.toml",
            "hb.toml.5",
        ];
        assert_eq!(names, want);
        for n in want {
            assert!(fs::metadata(dir.join(n)).unwrap().len() > 0, "{n} is empty");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
