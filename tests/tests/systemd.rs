//! hb-user as systemd runs it: the sd_notify protocol against a real
//! `NOTIFY_SOCKET` (a datagram socket this test binds), and the unit's
//! hardening: a pair whose nodes run with only the capabilities
//! `contrib/hb.service` grants still elects, fails over and adopts its data
//! plane after a crash.

use hb_tests::cluster::{test_lan, Cluster, NodeState, BOUND, FAST};
use nix::sys::signal::Signal;
use std::{
    os::unix::net::UnixDatagram,
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

/// The unit file as committed.
fn unit() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../contrib/hb.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What arrived on the socket: (when, one datagram's lines), and whether node
/// 1's data plane was attached and its status past INIT when READY=1 came.
#[derive(Default)]
struct Heard {
    messages: Vec<(Instant, Vec<String>)>,
    ready_after_attach: Vec<bool>,
}

impl Heard {
    fn with(&self, line: &str) -> Vec<Instant> {
        (self.messages.iter())
            .filter(|(_, l)| l.iter().any(|x| x == line || x.starts_with(line)))
            .map(|(t, _)| *t)
            .collect()
    }
}

#[test]
fn the_service_manager_hears_ready_watchdog_status_reloading_and_stopping() {
    let (_g, mut c) = test_lan("sdn", &[200, 100], FAST, 1);
    let file = c.use_file(1, "priority = 200\n").unwrap();
    let path = c.lab.scratch.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    // A 400 ms watchdog: WATCHDOG=1 at least every 200 ms.
    let watchdog = Duration::from_millis(400);
    c.nodes[0].env = vec![
        ("NOTIFY_SOCKET".into(), path.display().to_string()),
        ("WATCHDOG_USEC".into(), watchdog.as_micros().to_string()),
    ];
    let heard = Mutex::new(Heard::default());
    c.start(2).unwrap();
    c.start(1).unwrap();
    // Read here, checking what a READY=1 claims at the moment it comes.
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let mut read_one = |c: &Cluster, heard: &Mutex<Heard>| {
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            let mut h = heard.lock().unwrap();
            if lines.iter().any(|l| l == "READY=1") && h.with("READY=1").is_empty() {
                let settled = c.status_of(1).is_some_and(|s| s.state != NodeState::Init);
                h.ready_after_attach.push(c.xdp_attached(1) && settled);
            }
            h.messages.push((Instant::now(), lines));
        }
    };
    while started.elapsed() < BOUND && heard.lock().unwrap().with("READY=1").is_empty() {
        read_one(&c, &heard);
    }
    c.expect_single_holder(1, BOUND);
    // Two seconds of watchdog feeding.
    let from = Instant::now();
    while from.elapsed() < Duration::from_secs(2) {
        read_one(&c, &heard);
    }
    {
        let h = heard.lock().unwrap();
        assert_eq!(
            h.ready_after_attach,
            [true],
            "READY=1 must come once, after XDP is attached and the first state is known: {:?}",
            h.messages
        );
        let feeds: Vec<Instant> = h
            .with("WATCHDOG=1")
            .into_iter()
            .filter(|t| *t >= from)
            .collect();
        assert!(feeds.len() >= 5, "{} WATCHDOG=1 in 2 s", feeds.len());
        let gap = feeds.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(
            gap < watchdog,
            "WATCHDOG=1 {gap:?} apart: the manager would kill it"
        );
        let status = h.with("STATUS=default MASTER");
        assert!(
            !status.is_empty(),
            "no STATUS with the group's state: {:?}",
            h.messages
        );
    }

    // A reload: RELOADING=1 (with the time), then READY=1 once it is over.
    std::fs::write(&file, "priority = 50\n").unwrap();
    let dir = c.node(1).state_dir.display().to_string();
    let asked = Instant::now();
    let (code, out, err) = c
        .run_as_node(1, &["reload".into(), "--state-dir".into(), dir])
        .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        read_one(&c, &heard);
    }
    {
        let h = heard.lock().unwrap();
        let reloading: Vec<Instant> = h
            .with("RELOADING=1")
            .into_iter()
            .filter(|t| *t >= asked)
            .collect();
        let ready: Vec<Instant> = h
            .with("READY=1")
            .into_iter()
            .filter(|t| *t >= asked)
            .collect();
        assert_eq!(reloading.len(), 1, "{:?}", h.messages);
        assert!(
            ready.first().is_some_and(|r| *r >= reloading[0]),
            "READY=1 must follow RELOADING=1: {:?}",
            h.messages
        );
        assert!(
            h.messages.iter().any(|(t, l)| *t >= asked
                && l.contains(&"RELOADING=1".to_string())
                && l.iter().any(|x| x.starts_with("MONOTONIC_USEC="))),
            "RELOADING=1 carries MONOTONIC_USEC: {:?}",
            h.messages
        );
    }
    // The lower priority handed the VIP over, and the status says so.
    c.expect_single_holder(2, BOUND);
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        read_one(&c, &heard);
    }
    assert!(!heard
        .lock()
        .unwrap()
        .with("STATUS=default BACKUP")
        .is_empty());

    // The graceful stop says STOPPING=1.
    let stopping = Instant::now();
    c.signal(1, Signal::SIGTERM).unwrap();
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        read_one(&c, &heard);
    }
    let h = heard.lock().unwrap();
    assert!(
        h.with("STOPPING=1").iter().any(|t| *t >= stopping),
        "{:?}",
        h.messages
    );
}

/// The unit's `CapabilityBoundingSet`, as setpriv's `--bounding-set` list.
fn unit_caps() -> String {
    let unit = unit();
    let line = (unit.lines())
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("contrib/hb.service sets CapabilityBoundingSet");
    let caps: Vec<String> = (line.split_whitespace())
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    format!("-all,{}", caps.join(","))
}

#[test]
fn the_units_capabilities_are_enough_to_run_fail_over_and_adopt() {
    let (_g, mut c) = test_lan("sdc", &[200, 100], FAST, 1);
    let caps = unit_caps();
    for n in &mut c.nodes {
        // As the unit runs it: root, with only its capabilities, and no way
        // to gain others.
        n.wrap = vec![
            "setpriv".into(),
            format!("--bounding-set={caps}"),
            "--inh-caps=-all".into(),
            "--no-new-privs".into(),
            "--".into(),
        ];
    }
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    let status = c.status_of(1).unwrap();
    assert!(
        status.death_notice_armed,
        "the exit watch must attach: {}",
        c.logs()
    );
    // A crash of the holder: node 2 takes over; node 1 restarts and adopts
    // its data plane (the pins outlive the process), then takes the VIP back.
    c.signal(1, Signal::SIGKILL).unwrap();
    assert!(
        c.wait_for(BOUND, |c| c.state_of(2) == Some(NodeState::Master)),
        "node 2 never took over\n{}",
        c.logs()
    );
    c.start(1).unwrap();
    c.expect_single_holder(1, BOUND);
    c.signal(2, Signal::SIGTERM).unwrap();
    c.signal(1, Signal::SIGTERM).unwrap();
    assert!(
        c.holders().is_empty(),
        "a graceful stop releases\n{}",
        c.logs()
    );
}

/// One journald native-protocol datagram as its fields: `KEY=value\n`, or
/// `KEY\n`, a little-endian u64 length, the value and `\n`.
fn journal_fields(mut d: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    while let Some(nl) = d.iter().position(|&b| b == b'\n') {
        let line = &d[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let k = String::from_utf8_lossy(&line[..eq]).to_string();
            out.insert(k, String::from_utf8_lossy(&line[eq + 1..]).to_string());
            d = &d[nl + 1..];
        } else {
            let k = String::from_utf8_lossy(line).to_string();
            let rest = &d[nl + 1..];
            if rest.len() < 8 {
                break;
            }
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let Some(v) = rest.get(8..8 + len) else { break };
            out.insert(k, String::from_utf8_lossy(v).to_string());
            d = rest.get(8 + len + 1..).unwrap_or(&[]);
        }
    }
    out
}

#[test]
fn under_systemd_the_log_goes_to_the_journal_with_priorities_and_fields() {
    use std::os::unix::fs::MetadataExt;
    let (_g, mut c) = test_lan("sdj", &[200, 100], FAST, 1);
    // journald's socket, as systemd would offer it: ours, bind-mounted onto
    // /run/systemd/journal/socket in a mount namespace of node 1's own.
    let sock_path = c.lab.scratch.join("journal.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let setup = format!(
        "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && \
         touch /run/systemd/journal/socket && \
         mount --bind {} /run/systemd/journal/socket && exec \"$0\" \"$@\"",
        sock_path.display()
    );
    // systemd names the journal stream it gives as stderr: here, the log file.
    let log = c.node(1).log.clone();
    std::fs::write(&log, "").unwrap();
    let m = std::fs::metadata(&log).unwrap();
    let n = &mut c.nodes[0];
    n.wrap = vec![
        "unshare".into(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "--".into(),
        "sh".into(),
        "-c".into(),
        setup,
    ];
    n.env = vec![("JOURNAL_STREAM".into(), format!("{}:{}", m.dev(), m.ino()))];
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    let mut entries = Vec::new();
    let mut buf = vec![0u8; 65536];
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Ok(n) = sock.recv(&mut buf) {
            entries.push(journal_fields(&buf[..n]));
        }
    }
    // The takeover: a warning (priority 4) with the transition's fields.
    let takeover = entries
        .iter()
        .find(|e| e.get("STATE").map(String::as_str) == Some("MASTER"));
    let Some(t) = takeover else {
        panic!(
            "no journal entry with STATE=MASTER: {entries:?}\n{}",
            c.logs()
        );
    };
    assert_eq!(t.get("PRIORITY").map(String::as_str), Some("4"), "{t:?}");
    assert_eq!(t.get("GROUP").map(String::as_str), Some("default"), "{t:?}");
    assert_eq!(
        t.get("REASON").map(String::as_str),
        Some("elected"),
        "{t:?}"
    );
    assert_eq!(
        t.get("SYSLOG_IDENTIFIER").map(String::as_str),
        Some("hb-user"),
        "{t:?}"
    );
    assert!(
        t.get("MESSAGE").is_some_and(|m| m.contains("taking")),
        "{t:?}"
    );
    // Info lines are priority 5 or 6, never warnings.
    assert!(
        entries
            .iter()
            .any(|e| e.get("PRIORITY").is_some_and(|p| p == "5" || p == "6")),
        "{entries:?}"
    );
    // Nothing on stderr: the journal has it.
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        !stderr.contains("taking"),
        "the log went to stderr too: {stderr}"
    );
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    // The unit as installed: hb-user and its man pages where it says.
    let dir = std::env::temp_dir().join(format!("hb-sdv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let generated = dir.join("gen");
    let out = std::process::Command::new(hb_tests::cluster::hb_user_bin())
        .args(["generate", "--out"])
        .arg(&generated)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (page, section) in [("hb-user.8", "man8"), ("hb.toml.5", "man5")] {
        std::fs::create_dir_all(dir.join("man").join(section)).unwrap();
        std::fs::copy(
            generated.join(page),
            dir.join("man").join(section).join(page),
        )
        .unwrap();
    }
    let bin = hb_tests::cluster::hb_user_bin().display().to_string();
    let unit_path = dir.join("hb.service");
    std::fs::write(&unit_path, unit().replace("/usr/sbin/hb-user", &bin)).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .env("MANPATH", dir.join("man"))
        .output()
        .expect("systemd-analyze (Debian package systemd) is needed");
    let _ = std::fs::remove_dir_all(&dir);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    assert!(
        !said.contains("hb.service"),
        "systemd-analyze verify: {said}"
    );
}
