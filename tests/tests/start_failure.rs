//! A start that fails after hb-user chose its state dir and pin root leaves
//! nothing behind, except what a previous run legitimately left pinned, and
//! `hb-user status` then says plainly that hb-user is not running. The failure
//! is a real kernel refusal: native XDP on a bridge, whose driver has none.

use hb_tests::cluster::{hb_user_bin, test_lan, Cluster, NodeState, Report, BOUND, FAST, IFACE};
use nix::sys::signal::Signal;
use std::{path::Path, process::Command};

/// A device without native XDP, in node 1, on a subnet of its own.
const BRIDGE: &str = "br9";

fn lan(tag: &str) -> (std::sync::MutexGuard<'static, ()>, Cluster) {
    let (g, c) = test_lan(tag, &[100, 90], FAST, 1);
    for cmd in [
        vec!["ip", "link", "add", BRIDGE, "type", "bridge"],
        vec!["ip", "addr", "add", "10.77.0.1/24", "dev", BRIDGE],
        vec!["ip", "link", "set", BRIDGE, "up"],
    ] {
        c.exec(1, &cmd).unwrap();
    }
    (g, c)
}

/// Node 1's command line on `ifaces` in native XDP mode, with the flags in
/// `set` given these values instead.
fn run_args(c: &Cluster, ifaces: &[&str], set: &[(&str, &str)]) -> Vec<String> {
    let base = c.args(1);
    let mut args = vec!["run".to_string()];
    // Every flag `Cluster::args` writes takes a value.
    for pair in base[1..].chunks(2) {
        let [flag, value] = pair else {
            panic!("a flag without value in {base:?}")
        };
        if flag != "--iface" && !set.iter().any(|(f, _)| f == flag) {
            args.extend([flag.clone(), value.clone()]);
        }
    }
    for i in ifaces {
        args.extend(["--iface".into(), i.to_string()]);
    }
    for (f, v) in set {
        args.extend([f.to_string(), v.to_string()]);
    }
    args.extend(["--xdp-mode".into(), "native".into()]);
    args
}

/// Only the bridge, with a VIP and a peer on its subnet.
fn bridge_only(c: &Cluster, set: &[(&str, &str)]) -> Vec<String> {
    let mut all = vec![("--vip", "10.77.0.100/24"), ("--peer", "2@10.77.0.2")];
    all.extend_from_slice(set);
    run_args(c, &[BRIDGE], &all)
}

/// Runs node 1's start and expects the kernel's refusal of native XDP on the
/// bridge: exit code 1, the device and the way out named.
fn expect_refused(c: &Cluster, args: &[String]) {
    let (code, out, err) = c.run_as_node(1, args).unwrap();
    assert_eq!(code, 1, "exit code of a refused start\n{out}{err}");
    assert!(
        err.contains("the driver of br9 has no native XDP: run with --xdp-mode auto or generic"),
        "{err}"
    );
    assert!(!xdp_on(c, BRIDGE), "XDP left on {BRIDGE}");
}

fn xdp_on(c: &Cluster, dev: &str) -> bool {
    c.exec(1, &["ip", "link", "show", dev])
        .map(|o| o.contains("xdp"))
        .unwrap_or(false)
}

/// `hb-user status` as a user runs it: (exit code, stdout + stderr).
fn status(state_dir: &Path, pin_root: &Path, json: bool) -> (i32, String) {
    let mut cmd = Command::new(hb_user_bin());
    cmd.arg("status")
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--pin-root")
        .arg(pin_root);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Whether something is mounted on `path` in this mount namespace.
fn mounted(path: &Path) -> bool {
    let path = path.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(path))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn this_kernel_has_everything_the_start_probes_for() {
    hb_tests::require_root("probing the kernel's BPF features");
    let found = hb_user::kernel::Features::probe().unwrap();
    assert_eq!(found, hb_user::kernel::Features::ALL);
    hb_user::kernel::check(&found, &hb_user::kernel::release()).unwrap();
}

#[test]
fn a_refused_start_leaves_no_pins_no_state_and_status_says_not_running() {
    let (_g, c) = lan("sfa");
    let (state, pins) = (c.node(1).state_dir.clone(), c.pin_root(1));
    assert!(!state.exists() && !pins.exists());
    expect_refused(&c, &bridge_only(&c, &[]));
    assert!(!state.exists(), "state dir {} left", state.display());
    assert!(
        !pins.exists(),
        "pin root {} left: {:?} {:?}",
        pins.display(),
        files_in(&pins),
        files_in(&pins.join(BRIDGE))
    );

    let (code, text) = status(&state, &pins, false);
    assert_eq!(code, 3, "{text}");
    assert_eq!(
        text,
        format!(
            "hb-user is not running on this node: no status file in {} and nothing pinned under {}\n",
            state.display(),
            pins.display()
        )
    );
    let (code, json) = status(&state, &pins, true);
    assert_eq!(code, 3, "{json}");
    let r: Report = serde_json::from_str(&json).unwrap();
    assert!(!r.running, "{json}");
    assert!(
        r.not_running
            .is_some_and(|s| s.starts_with("hb-user is not running on this node")),
        "{json}"
    );
}

#[test]
fn a_refused_start_unmounts_the_bpffs_it_mounted() {
    let (_g, mut c) = lan("sfb");
    // Not on a bpffs: hb-user mounts one on the pin root itself, never on a parent.
    let own = c.lab.scratch.join("own");
    let pins = own.join("bpffs").join("hb");
    c.lab.track_mount(pins.clone());
    let pin_root = pins.to_str().unwrap().to_string();
    expect_refused(&c, &bridge_only(&c, &[("--pin-root", &pin_root)]));
    assert!(!mounted(&pins), "bpffs left on {}", pins.display());
    assert!(!own.exists(), "{} left", own.display());
    assert!(!c.node(1).state_dir.exists());
}

#[test]
fn a_pin_root_with_content_gets_no_bpffs_over_it() {
    let (_g, mut c) = lan("sfe");
    // A directory like /run: hb must not hide it under a mount.
    let dir = c.lab.scratch.join("run");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keep"), "x").unwrap();
    c.lab.track_mount(dir.clone());
    let mut args = c.args(1);
    let at = args.iter().position(|a| a == "--pin-root").unwrap();
    args[at + 1] = dir.display().to_string();
    let log = c.lab.scratch.join("sfe.log");
    let mut child = c.spawn_as_node(1, &args, &log).unwrap();
    // Decided (past INIT): its signal handlers are in place.
    assert!(
        c.wait_for(BOUND, |c| c.xdp_attached(1)
            && c.state_of(1).is_some_and(|s| s != NodeState::Init)),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(!mounted(&dir), "a bpffs was mounted over {}", dir.display());
    assert!(!mounted(dir.parent().unwrap()));
    assert_eq!(files_in(&dir), vec!["keep".to_string()]);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    );
    let _ = child.wait();
    assert!(!c.xdp_attached(1), "a graceful stop detaches");
}

#[test]
fn a_refused_second_link_detaches_the_first() {
    let (_g, c) = lan("sfc");
    expect_refused(&c, &run_args(&c, &[IFACE, BRIDGE], &[]));
    assert!(!c.xdp_attached(1), "XDP left on {IFACE}");
    assert!(!c.pin_root(1).exists(), "{:?}", files_in(&c.pin_root(1)));
    assert!(!c.node(1).state_dir.exists());
}

#[test]
fn a_refused_start_leaves_a_crashed_runs_data_plane_attached_with_its_state() {
    let (_g, mut c) = lan("sfd");
    c.start(1).unwrap();
    assert!(
        c.wait_for(BOUND, |c| c.xdp_attached(1) && c.state_of(1).is_some()),
        "{}",
        c.logs()
    );
    c.signal(1, Signal::SIGKILL).unwrap();
    let before = c.report(1).unwrap();
    assert!(before.planes[0].owner_dead_ms_ago.is_some(), "{before:?}");
    let status_file = c.node(1).state_dir.join("status.json");
    let last_words = std::fs::read_to_string(&status_file).unwrap();

    // The restart adopts eth0's data plane, then fails on the bridge.
    expect_refused(&c, &run_args(&c, &[IFACE, BRIDGE], &[]));
    assert!(
        c.xdp_attached(1),
        "the crashed run's XDP program was detached"
    );
    // Its state goes on: the crash's death mark (death notices continue) and
    // the peer it hears.
    let after = c.report(1).unwrap();
    assert!(after.planes[0].owner_dead_ms_ago.is_some(), "{after:?}");
    assert_eq!(after.planes[0].owner_pid, before.planes[0].owner_pid);
    assert!(
        after.peers[0].accepted >= before.peers[0].accepted,
        "{before:?}\n{after:?}"
    );
    assert!(!c.pin_root(1).join(BRIDGE).exists());
    assert_eq!(
        std::fs::read_to_string(&status_file).unwrap(),
        last_words,
        "the crashed run's status file changed"
    );
    let text = c.status(1, false).unwrap();
    assert!(
        text.contains("is not running: this is the last state it wrote"),
        "{text}"
    );
}

/// Node 1's command line with the flags in `set` given these values (added
/// when the cluster does not give them).
fn with(c: &Cluster, set: &[(&str, &str)]) -> Vec<String> {
    let mut a = c.args(1);
    for (flag, value) in set {
        match a.iter().position(|x| x == flag) {
            Some(i) => a[i + 1] = value.to_string(),
            None => a.extend([flag.to_string(), value.to_string()]),
        }
    }
    a
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_nobody(path: &Path) {
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
}

#[test]
fn unsafe_settings_exit_2_naming_the_field_and_attach_nothing() {
    let (_g, mut c) = test_lan("sfu", &[100, 90], FAST, 1);
    let scratch = c.lab.scratch.clone();
    let key = std::fs::read_to_string(c.key_file()).unwrap();
    let key_file = |name: &str, mode: u32, nobody: bool| {
        let p = scratch.join(name);
        std::fs::write(&p, &key).unwrap();
        chmod(&p, mode);
        if nobody {
            chown_nobody(&p);
        }
        p.display().to_string()
    };
    let (not_roots, group_readable) = (
        key_file("nobody.key", 0o600, true),
        key_file("group.key", 0o640, false),
    );
    let state_dir = |name: &str, mode: u32, nobody: bool| {
        let p = scratch.join(name);
        std::fs::create_dir_all(&p).unwrap();
        chmod(&p, mode);
        if nobody {
            chown_nobody(&p);
        }
        p.display().to_string()
    };
    let (open_dir, nobodys_dir) = (
        state_dir("open-state", 0o770, false),
        state_dir("nobody-state", 0o700, true),
    );
    let real = state_dir("real-state", 0o700, false);
    let link = scratch.join("linked-state");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let link = link.display().to_string();
    // An address of eth0's subnet on another interface of node 1 (on lo, as
    // load-balanced servers have their service address).
    c.exec(1, &["ip", "addr", "add", "10.203.0.77/32", "dev", "lo"])
        .unwrap();

    let cases: Vec<(Vec<String>, &str, Vec<String>)> = vec![
        (
            with(&c, &[("--init-dead", "0s")]),
            "--init-dead",
            vec!["below --dead-after".into()],
        ),
        (
            with(&c, &[("--vip", "10.203.0.2/24")]),
            "--vip",
            vec!["peer 2's address".into()],
        ),
        (
            with(&c, &[("--ping", "10.203.0.100")]),
            "--vip",
            vec!["ping target".into()],
        ),
        (
            with(&c, &[("--vip", "10.203.0.77/24")]),
            "--vip",
            vec!["already an address of lo".into()],
        ),
        (
            with(&c, &[("--vip", "10.203.0.1/24")]),
            "--vip",
            vec!["eth0's own address towards peer 2".into()],
        ),
        (
            with(&c, &[("--key-file", &not_roots)]),
            "--key-file",
            vec![
                format!("chown root:root {not_roots}"),
                format!("chmod 600 {not_roots}"),
            ],
        ),
        (
            with(&c, &[("--key-file", &group_readable)]),
            "--key-file",
            vec![
                format!("chown root:root {group_readable}"),
                format!("chmod 600 {group_readable}"),
            ],
        ),
        (
            with(&c, &[("--state-dir", &link)]),
            "--state-dir",
            vec!["is a symlink".into()],
        ),
        (
            with(&c, &[("--state-dir", &open_dir)]),
            "--state-dir",
            vec!["chmod go-w".into()],
        ),
        (
            with(&c, &[("--state-dir", &nobodys_dir)]),
            "--state-dir",
            vec!["chown root:root".into()],
        ),
    ];
    // `check` with the same settings finds the same, and changes nothing.
    let as_check = |args: &[String]| -> Vec<String> {
        std::iter::once("check".to_string())
            .chain(args.iter().skip(1).cloned())
            .collect()
    };
    let (code, out, err) = c.run_as_node(1, &as_check(&c.args(1))).unwrap();
    assert_eq!(code, 0, "check of sound settings\n{out}{err}");
    assert!(out.contains("the settings are valid"), "{out}");
    let runs_and_checks = cases.iter().flat_map(|(args, field, says)| {
        [(args.clone(), field, says), (as_check(args), field, says)]
    });
    for (args, field, says) in runs_and_checks {
        let (code, out, err) = c.run_as_node(1, &args).unwrap();
        let what = format!("{field} in {args:?}");
        assert_eq!(code, 2, "exit code for an unsafe {what}\n{out}{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(&format!("invalid {field}: ")), "{what}: {err}");
        for s in says {
            assert!(err.contains(s.as_str()), "{what}: no {s:?} in {err}");
        }
        assert!(!c.xdp_attached(1), "XDP attached after an unsafe {what}");
        assert!(c.holders().is_empty(), "a VIP added after an unsafe {what}");
        assert!(!c.pin_root(1).exists(), "pins after an unsafe {what}");
        assert!(
            !c.node(1).state_dir.exists(),
            "state dir after an unsafe {what}"
        );
        assert_eq!(files_in(Path::new(&real)), Vec::<String>::new(), "{what}");
    }

    // A crashed holder's VIP, still on its interface, is no unsafe VIP: the
    // restart adopts it.
    c.start(1).unwrap();
    c.expect_single_holder(1, BOUND);
    c.signal(1, Signal::SIGKILL).unwrap();
    assert_eq!(c.holders(), [1], "the VIP stays after a SIGKILL");
    c.start(1).unwrap();
    let pid = c.pid(1).unwrap();
    assert!(
        c.wait_for(BOUND, |c| c
            .status_of(1)
            .is_some_and(|s| s.pid == pid && s.state == NodeState::Master)),
        "the restart with the VIP left on eth0 did not take over: {:?}\n{}",
        c.status_of(1),
        c.logs()
    );
    assert_eq!(c.holders(), [1]);
    // `check` next to a running holder: its VIP is no conflict.
    let (code, out, err) = c.run_as_node(1, &as_check(&c.args(1))).unwrap();
    assert_eq!(code, 0, "check next to the running node\n{out}{err}");
    // It kept the address it found (never missing, not added back).
    let s = c.status_of(1).unwrap();
    assert!(
        s.holds_vip && s.vips_missing.is_empty() && s.vip_readds == 0,
        "{s:?}"
    );
}
