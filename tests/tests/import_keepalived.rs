//! `hb-user import-keepalived` on every sample keepalived ships: each converts
//! (exit 0) to TOML with a group per vrrp_instance, every skip is a `line N:`
//! line, and the directives hb lacks are named, none dropped silently.

use hb_tests::cluster::hb_user_bin;
use std::{path::Path, process::Command};

const SAMPLES: &str = "/usr/share/doc/keepalived/samples";

/// Directives hb has no equivalent for, and the name stderr gives them: the
/// LVS ones are reported once, as their enclosing virtual_server.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("virtual_server", "virtual_server"),
    ("virtual_server_group", "virtual_server"),
    ("real_server", "virtual_server"),
    ("HTTP_GET", "virtual_server"),
    ("lvs_sched", "virtual_server"),
    ("lvs_sync_daemon_interface", "lvs_sync_daemon_interface"),
    ("smtp_alert", "smtp_alert"),
    ("static_ipaddress", "static_ipaddress"),
    ("static_routes", "static_routes"),
    ("router_id", "router_id"),
    ("notification_email", "notification_email"),
];

/// (exit code, stdout, stderr) of the converter on `file`.
fn import(file: &Path) -> (i32, String, String) {
    let out = Command::new(hb_user_bin())
        .arg("import-keepalived")
        .arg(file)
        .output()
        .expect("run hb-user");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn samples() -> Vec<std::path::PathBuf> {
    let dir = std::fs::read_dir(SAMPLES).unwrap_or_else(|e| {
        panic!("{SAMPLES}: {e}: install the Debian package keepalived for its samples")
    });
    let mut files: Vec<_> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("keepalived.conf."))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no keepalived.conf.* in {SAMPLES}");
    files
}

/// The first word of each line of `text` outside comments, with its line number.
fn first_words(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let w = l.split_whitespace().next()?;
            (!w.starts_with('!') && !w.starts_with('#')).then(|| (i + 1, w.to_string()))
        })
        .collect()
}

fn check_sample(file: &Path) {
    let name = file.display();
    let (code, out, err) = import(file);
    assert_eq!(code, 0, "{name}: exit code\n{err}");
    let t: toml::Table = out
        .parse()
        .unwrap_or_else(|e| panic!("{name}: stdout is not TOML: {e}\n{out}"));
    let text = std::fs::read_to_string(file).expect("read sample");
    let words = first_words(&text);
    if words.iter().any(|(_, w)| w == "vrrp_instance") {
        let groups = t.get("group").and_then(|g| g.as_table());
        let with_vip = groups.is_some_and(|g| {
            g.values().any(|g| {
                g.get("vip")
                    .and_then(|v| v.as_array())
                    .is_some_and(|v| !v.is_empty())
            })
        });
        assert!(with_vip, "{name}: no [group.NAME] with a vip\n{out}");
    }
    for l in err.lines() {
        let rest = l.strip_prefix("line ").unwrap_or("");
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        assert!(
            digits > 0 && rest[digits..].starts_with(": "),
            "{name}: stderr line not `line N: ...`: {l}"
        );
    }
    for (line, w) in &words {
        let Some((_, reported)) = UNSUPPORTED.iter().find(|(d, _)| d == w) else {
            continue;
        };
        let named = if reported == w {
            err.contains(&format!("line {line}: {w}:"))
        } else {
            err.contains(&format!(": {reported}:"))
        };
        assert!(
            named,
            "{name}: {w} on line {line} is not reported as {reported}\n{err}"
        );
    }
}

#[test]
fn every_sample_converts() {
    for f in samples() {
        check_sample(&f);
    }
}

/// The sync sample's groups, priorities and sync group, exactly.
#[test]
fn sync_sample_exactly() {
    let file = Path::new(SAMPLES).join("keepalived.conf.vrrp.sync");
    let (code, out, err) = import(&file);
    assert_eq!(code, 0, "{err}");
    let t: toml::Table = out.parse().expect("TOML");
    let names = [
        "VI_1", "VI_2", "VI_3", "VI_4", "VI_5", "VI_6", "VI_7", "VI_8", "VI_9",
    ];
    let groups = t["group"].as_table().expect("groups");
    assert_eq!(groups.keys().collect::<Vec<_>>(), names);
    for (n, g) in groups {
        assert_eq!(g["priority"].as_integer(), Some(100), "{n}");
    }
    assert_eq!(groups["VI_2"]["iface"].as_str(), Some("eth1"));
    assert_eq!(groups["VI_1"]["vip"][0].as_str(), Some("192.168.200.18/25"));
    let strs = |v: &toml::Value| -> Vec<String> {
        v.as_array()
            .expect("array")
            .iter()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    };
    assert_eq!(strs(&t["iface"]), ["eth0", "eth1"]);
    let g1 = &t["sync"]["G1"];
    assert_eq!(
        strs(&g1["groups"]),
        ["VI_1", "VI_2", "VI_5", "VI_6", "VI_7", "VI_8", "VI_9"]
    );
    assert_eq!(
        g1["notify_master"].as_str(),
        Some("/usr/local/bin/vrrp.mast arg1 arg2")
    );
    assert_eq!(strs(&t["sync"]["G2"]["groups"]), ["VI_3", "VI_4"]);
    assert_eq!(t["interval"].as_str(), Some("1s"));
}

#[test]
fn syntax_error_and_unreadable_file_exit_2() {
    let dir = std::env::temp_dir().join(format!("hb-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.conf");
    std::fs::write(&bad, "vrrp_instance A {\n  priority 1\n").expect("write");
    let (code, _, err) = import(&bad);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("line 1:") && err.contains("never closed"),
        "{err}"
    );
    let (code, _, err) = import(&dir.join("missing.conf"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
