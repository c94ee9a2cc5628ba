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

/// The sync sample's groups, priorities and sync group, exactly: nine
/// instances, of which heartbeats carry eight; the ninth is named on stderr
/// and leaves its sync group.
#[test]
fn sync_sample_exactly() {
    let file = Path::new(SAMPLES).join("keepalived.conf.vrrp.sync");
    let (code, out, err) = import(&file);
    assert_eq!(code, 0, "{err}");
    let t: toml::Table = out.parse().expect("TOML");
    let names = [
        "VI_1", "VI_2", "VI_3", "VI_4", "VI_5", "VI_6", "VI_7", "VI_8",
    ];
    assert!(
        err.lines()
            .any(|l| l.contains("vrrp_instance: hb carries at most 8 groups per node: VI_9")),
        "{err}"
    );
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
        ["VI_1", "VI_2", "VI_5", "VI_6", "VI_7", "VI_8"]
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

/// The interfaces a converted file names: the heartbeat links, the groups'
/// and their VIPs' (`dev IF`).
fn interfaces(t: &toml::Table) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let strs = |v: Option<&toml::Value>| -> Vec<String> {
        match v {
            Some(toml::Value::Array(a)) => a
                .iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect(),
            Some(toml::Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    };
    out.extend(strs(t.get("iface")));
    for g in t
        .get("group")
        .and_then(|g| g.as_table())
        .into_iter()
        .flat_map(|g| g.values())
    {
        out.extend(strs(g.get("iface")));
        for v in strs(g.get("vip")) {
            if let Some((_, dev)) = v.split_once(" dev ") {
                out.push(dev.trim().to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Every converted sample passes `hb-user check`, as a user runs it after the
/// review the header asks for (this node's peers and key file), in a
/// namespace that has the interfaces the file names.
#[test]
fn every_converted_sample_passes_check() {
    hb_tests::require_root("hb-user check in a namespace");
    let mut lab = hb_tests::netns::Lab::new("imc").expect("a lab");
    let ns = lab.netns("n").expect("a namespace");
    let key = lab.scratch.join("hb.key");
    let out = Command::new(hb_user_bin())
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .expect("hb-user keygen");
    assert!(out.status.success(), "{out:?}");
    let mut made: Vec<String> = Vec::new();
    for (i, f) in samples().iter().enumerate() {
        let name = f.display();
        let (code, text, err) = import(f);
        assert_eq!(code, 0, "{name}: {err}");
        let mut t: toml::Table = text.parse().expect("TOML");
        t.insert("peer".into(), toml::Value::Array(vec!["2@10.9.9.2".into()]));
        t.insert("key_file".into(), key.display().to_string().into());
        for dev in interfaces(&t) {
            if made.contains(&dev) {
                continue;
            }
            let peer = format!("hbp{}", made.len());
            lab.exec(
                &ns,
                &[
                    "ip", "link", "add", &dev, "type", "veth", "peer", "name", &peer,
                ],
            )
            .unwrap_or_else(|e| panic!("{name}: making {dev}: {e}"));
            for d in [&dev, &peer] {
                lab.exec(&ns, &["ip", "link", "set", d, "up"]).unwrap();
            }
            made.push(dev);
        }
        let file = lab.scratch.join(format!("sample{i}.toml"));
        std::fs::write(&file, toml::to_string(&t).unwrap()).unwrap();
        let state = lab.scratch.join(format!("state{i}"));
        let mut cmd = Command::new(hb_user_bin());
        cmd.arg("check")
            .arg("--config")
            .arg(&file)
            .arg("--state-dir")
            .arg(&state)
            .arg("--pin-root")
            .arg(lab.scratch.join("pins"));
        hb_tests::netns::enter_on_exec(&mut cmd, &ns).unwrap();
        let out = cmd.output().expect("hb-user check");
        assert!(
            out.status.success(),
            "{name}: hb-user check refused the converted file:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            toml::to_string(&t).unwrap()
        );
    }
}
