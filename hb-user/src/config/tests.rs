use super::*;
use std::{net::Ipv4Addr, path::Path, time::Duration};

const FILE: &str = "/etc/hb/hb.toml";

fn args() -> RunArgs {
    RunArgs {
        ifaces: vec!["eth0".into()],
        node_id: vec!["1".into()],
        peers: vec!["2@192.168.1.2".into()],
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
    assert_eq!(c.membership.ifaces, ["eth0"]);
    assert_eq!(c.membership.node_id, 1);
    assert_eq!(
        c.membership.peers,
        [PeerAddr {
            id: 2,
            addr: Ipv4Addr::new(192, 168, 1, 2).into()
        }]
    );
    assert!(c.election.vips.is_empty());
    assert_eq!(c.election.priority, 100);
    assert_eq!(c.paths.key_file, Path::new("/etc/hb/hb.key"));
    assert_eq!(c.membership.cluster_id, 1);
    assert_eq!(c.membership.port, 694);
    assert_eq!(c.timers.interval, Duration::from_millis(100));
    assert_eq!(c.timers.dead_after, Duration::from_millis(500));
    assert_eq!(c.timers.init_dead, Duration::from_secs(2));
    assert!(c.election.preempt);
    assert_eq!(c.runtime.xdp_mode, XdpModeArg::Auto);
    assert_eq!(c.paths.state_dir, Path::new("/var/lib/hb"));
    assert_eq!(c.paths.pin_root, Path::new("/sys/fs/bpf/hb"));
    assert_eq!(c.announce.garp_count, 5);
    assert_eq!(c.announce.garp_spacing, Duration::from_millis(10));
    assert!(!c.runtime.pass_heartbeats);
}

#[test]
fn flags_override_file() {
    let mut a = args();
    a.priority = vec!["200".into()];
    a.interval = vec!["50ms".into()];
    a.vips = vec!["10.0.0.100/24".into()];
    a.preempt = vec!["false".into()];
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
    assert_eq!(c.membership.ifaces, ["eth0"]);
    assert_eq!(c.membership.node_id, 1);
    assert_eq!(c.membership.peers[0].id, 2);
    assert_eq!(
        c.election.vips,
        [Vip {
            addr: Ipv4Addr::new(10, 0, 0, 100).into(),
            prefix: 24
        }]
    );
    assert_eq!(c.election.priority, 200);
    assert_eq!(c.timers.interval, Duration::from_millis(50));
    assert_eq!(c.timers.dead_after, Duration::from_secs(1)); // not given as a flag
    assert!(!c.election.preempt);
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
    assert_eq!(c.election.vips[0].to_string(), "10.0.0.100/24");
    assert_eq!(c.election.priority, 150);
    assert_eq!(c.paths.key_file, Path::new("/etc/hb/other.key"));
    assert_eq!(c.membership.cluster_id, 3);
    assert_eq!(c.membership.port, 6940);
    assert_eq!(c.timers.interval, Duration::from_millis(1500));
    assert_eq!(c.timers.dead_after, Duration::from_secs(5));
    assert_eq!(c.timers.init_dead, Duration::from_secs(10));
    assert!(!c.election.preempt);
    assert_eq!(c.runtime.xdp_mode, XdpModeArg::Generic);
    assert_eq!(c.paths.state_dir, Path::new("/run/hb"));
    assert_eq!(c.paths.pin_root, Path::new("/sys/fs/bpf/hb2"));
    assert_eq!(c.announce.garp_count, 0);
    assert_eq!(c.announce.garp_spacing, Duration::from_millis(100));
    assert!(c.runtime.pass_heartbeats);
}

/// `sudo hb-user --iface eth0` with the rest in the file.
#[test]
fn iface_flag_with_rest_in_file() {
    let a = RunArgs {
        ifaces: vec!["eth0".into()],
        ..Default::default()
    };
    let file = "node_id = 1\npeer = [\"2@192.168.1.2\", \"2@192.168.2.2\"]\n";
    let c = ok(&a, Some(file));
    assert_eq!(c.membership.ifaces, ["eth0"]);
    assert_eq!(c.membership.node_id, 1);
    assert_eq!(c.membership.peers.len(), 2);
    assert!(c.membership.peers.iter().all(|p| p.id == 2));
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
    assert_eq!(e.field, format!("interval in {FILE}"));
    assert!(e.message.contains("with a unit"), "{e}");
    let e = err(&args(), Some("port = \n"));
    assert_eq!(e.field, FILE);
    assert!(e.message.contains("line 1"), "{e}");
    let e = err(&args(), Some("ping = [[\"10.0.0.1\"]]\n"));
    assert_eq!(e.field, format!("ping in {FILE}"));
    let e = err(&args(), Some("priority = [1, 2]\n"));
    assert_eq!(e.field, format!("priority in {FILE}"));
    assert!(e.message.contains("got a list"), "{e}");
    let e = err(&args(), Some("[priority]\nx = 1\n"));
    assert_eq!(e.field, format!("priority in {FILE}"));
}

#[test]
fn dead_after_must_exceed_twice_interval() {
    let mut a = args();
    a.interval = vec!["100ms".into()];
    a.dead_after = vec!["200ms".into()];
    assert_eq!(err(&a, None).field, "--dead-after");
    a.dead_after = vec!["201ms".into()];
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
    a.init_dead = vec!["0s".into()];
    let e = err(&a, None);
    assert_eq!(e.field, "--init-dead");
    assert!(e.message.contains("below --dead-after (500ms)"), "{e}");
    a.init_dead = vec!["499ms".into()];
    assert_eq!(err(&a, None).field, "--init-dead");
    a.init_dead = vec!["500ms".into()];
    ok(&a, None);
    // The default init-dead (2s) against a longer dead-after.
    let mut a = args();
    a.dead_after = vec!["3s".into()];
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
    a.vips = vec!["10.0.0.100/24".into(), "192.168.1.2/24".into()];
    let e = err(&a, None);
    assert_eq!(e.field, "--vip");
    assert!(
        e.message.contains("192.168.1.2/24 is peer 2's address"),
        "{e}"
    );
    let mut a = args();
    a.peers = vec!["2@fd00::2".into()];
    a.vips = vec!["fd00::2/64".into()];
    assert_eq!(err(&a, None).field, "--vip");
    let mut a = args();
    a.vips = vec!["10.0.0.100/24".into()];
    a.ping = vec!["10.0.0.254".into(), "10.0.0.100".into()];
    let e = err(&a, None);
    assert_eq!(e.field, "--vip");
    assert!(e.message.contains("is a ping target"), "{e}");
    let e = err(&args(), Some("vip = \"192.168.1.2/32\""));
    assert_eq!(e.field, "vip in /etc/hb/hb.toml");
    // Another address of the peers' subnet is fine.
    let mut a = args();
    a.vips = vec!["192.168.1.100/24".into()];
    a.ping = vec!["192.168.1.254".into()];
    ok(&a, None);
}

#[test]
fn priority_out_of_range() {
    let mut a = args();
    a.priority = vec!["300".into()];
    assert_eq!(err(&a, None).field, "--priority");
    a.priority = vec!["-1".into()];
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
        a.peers = vec![bad.into()];
        let e = err(&a, None);
        assert_eq!(e.field, "--peer", "{bad}");
        assert!(e.message.contains("ID@ADDRESS"), "{e}");
    }
    let e = err(
        &RunArgs {
            peers: vec![],
            ..args()
        },
        Some("peer = \"2@x\""),
    );
    assert_eq!(e.field, "peer in /etc/hb/hb.toml");
}

#[test]
fn peer_rules() {
    let mut a = args();
    a.peers = vec!["1@10.0.0.2".into()];
    let e = err(&a, None);
    assert_eq!(e.field, "--peer");
    assert!(e.message.contains("own"), "{e}");
    a.peers = vec!["2@10.0.0.2".into(), "2@10.0.0.2".into()];
    assert_eq!(err(&a, None).field, "--peer");
    a.peers = vec!["2@10.0.0.2".into(), "3@10.0.0.2".into()];
    assert_eq!(err(&a, None).field, "--peer");
    let e = err(
        &RunArgs {
            peers: vec![],
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
        a.vips = vec![bad.into()];
        let e = err(&a, None);
        assert_eq!(e.field, "--vip", "{bad}");
    }
    let mut a = args();
    a.vips = vec!["10.0.0.1/24".into(), "10.0.0.1/32".into()];
    assert_eq!(err(&a, None).field, "--vip");
}

#[test]
fn zero_port() {
    let mut a = args();
    a.port = vec!["0".into()];
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
        ifaces: vec!["eth0".into()],
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
    a.ifaces = vec!["eth0".into(), "eth0".into()];
    assert_eq!(err(&a, None).field, "--iface");
    a.ifaces = vec!["a-very-long-name0".into()];
    assert_eq!(err(&a, None).field, "--iface");
    a.ifaces = vec!["eth 0".into()];
    assert_eq!(err(&a, None).field, "--iface");

    let mut a = args();
    a.node_id = vec!["0".into()];
    assert_eq!(err(&a, None).field, "--node-id");

    let mut a = args();
    a.interval = vec!["fast".into()];
    let e = err(&a, None);
    assert_eq!(e.field, "--interval");
    assert!(e.message.contains("100ms"), "{e}");
    a.interval = vec!["500us".into()];
    assert_eq!(err(&a, None).field, "--interval");

    let mut a = args();
    a.garp_count = vec!["101".into()];
    assert_eq!(err(&a, None).field, "--garp-count");

    let mut a = args();
    a.xdp_mode = vec!["skb".into()];
    assert_eq!(err(&a, None).field, "--xdp-mode");

    let mut a = args();
    a.init_dead = vec!["2years".into()];
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
    assert_eq!(c.membership.ifaces, ["eth0", "eth1"]);
    assert_eq!(c.membership.peers.len(), 2);
    assert!(!c.election.preempt && c.runtime.pass_heartbeats);
    assert_eq!(c.runtime.xdp_mode, XdpModeArg::Native);
    assert_eq!(c.timers.dead_after, Duration::from_secs(1));
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
        c.membership.ping.is_empty()
            && c.hooks.fence_cmd.is_none()
            && c.hooks.notify.is_none()
            && c.announce.garp_refresh.is_none()
    );
    assert_eq!(
        (c.hooks.fence_timeout, c.hooks.notify_timeout),
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
        c.membership.ping,
        [Ipv4Addr::new(10, 0, 0, 254), Ipv4Addr::new(10, 0, 0, 253)].map(IpAddr::V4)
    );
    assert_eq!(c.hooks.fence_cmd.as_deref(), Some("/usr/local/bin/fence"));
    assert_eq!(c.hooks.fence_timeout, Duration::from_secs(3));
    assert_eq!(c.hooks.notify.as_deref(), Some("/usr/local/bin/notify"));
    assert_eq!(c.announce.garp_refresh, Some(Duration::from_secs(60)));
    let mut a = args();
    a.ping = vec!["10.0.0.300".into()];
    assert_eq!(err(&a, None).field, "--ping");
    let mut a = args();
    a.ping = vec!["10.0.0.1".into(), "10.0.0.1".into()];
    assert_eq!(err(&a, None).field, "--ping");
    let mut a = args();
    a.ping = vec!["fd00::1".into(), "10.0.0.1".into()];
    assert_eq!(
        ok(&a, None).membership.ping,
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
    a.fence_cmd = vec!["  ".into()];
    assert_eq!(err(&a, None).field, "--fence-cmd");
    let mut a = args();
    a.garp_refresh = vec!["10ms".into()];
    assert_eq!(err(&a, None).field, "--garp-refresh");
    assert_eq!(
        err(&args(), Some("notify_timeout = \"soon\"")).field,
        "notify_timeout in /etc/hb/hb.toml"
    );
}

#[test]
fn ipv6_peers_and_vips() {
    let mut a = args();
    a.peers = vec!["2@fd00::2".into(), "2@[fd00:1::2]".into()];
    a.vips = vec!["fd00::100/64".into(), "10.0.0.100/24".into()];
    let c = ok(&a, None);
    assert_eq!(
        c.membership.peers[0].addr,
        "fd00::2".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        c.membership.peers[1].addr,
        "fd00:1::2".parse::<IpAddr>().unwrap()
    );
    assert_eq!(c.election.vips[0].to_string(), "fd00::100/64");
    let mut a = args();
    a.vips = vec!["fd00::100/129".into()];
    assert!(err(&a, None).message.contains("1 to 128"));
    let mut a = args();
    a.vips = vec!["fe80::1/64".into()];
    assert_eq!(err(&a, None).field, "--vip", "a link-local VIP is refused");
    let mut a = args();
    a.peers = vec!["2@ff02::1".into()];
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
    let c = ok(&args(), Some("[check.w]\nfile = \"/run/w\"\n"));
    assert_eq!(
        (c.checks[0].kind.clone(), c.checks[0].weight),
        (CheckKind::File("/run/w".into()), 1),
        "a track file's weight defaults to 1"
    );
    let e = err(
        &args(),
        Some("[check.w]\nfile = \"/run/w\"\nscript = \"x\"\n"),
    );
    assert_eq!(e.field, format!("check.w in {FILE}"));
    let e = err(&args(), Some("[check.a]\nscript = \"x\"\nfrobnicate = 1\n"));
    assert!(e.to_string().contains("frobnicate"), "{e}");
}

#[test]
fn the_table_declares_each_setting_once_with_a_flag() {
    let mut keys = std::collections::HashSet::new();
    for s in SETTINGS {
        assert!(keys.insert(s.key), "{} declared twice", s.key);
        assert!(flag(s.id).starts_with("--"), "{} has no flag", s.id);
        assert!(!s.doc.is_empty());
    }
    // Every built-in default parses: resolving with only the required
    // settings given is the `defaults` test; here a changed table shows it.
    assert_eq!(flag("preempt"), "--no-preempt");
    let c = ok(&args(), None);
    assert!(c.changed(&c).is_empty());
    let d = ok(&args(), Some("priority = 7\nport = 7000\n"));
    assert_eq!(
        c.changed(&d),
        [("port", Reload::Restart), ("priority", Reload::Live)]
    );
}

#[test]
fn a_single_valued_flag_given_twice_is_refused() {
    let mut a = args();
    a.priority = vec!["1".into(), "2".into()];
    let e = err(&a, None);
    assert_eq!(e.field, "--priority");
    assert!(e.message.contains("more than once"), "{e}");
}

#[test]
fn without_group_tables_the_top_level_settings_make_the_default_group() {
    let c = ok(
        &args(),
        Some("vip = \"192.168.1.100/24\"\npriority = 90\n[check.web]\nscript = \"true\"\nweight = -10\n"),
    );
    assert!(!c.group_tables);
    let [g] = c.groups.as_slice() else {
        panic!("{:?}", c.groups)
    };
    assert_eq!(
        (g.name.as_str(), g.slot, g.priority, g.preempt, g.vips.len()),
        ("default", 0, 90, true, 1)
    );
    assert_eq!(g.track, [("web".to_string(), -10)]);
}

#[test]
fn group_tables_inherit_top_level_settings_and_track_named_checks() {
    let c = ok(
        &args(),
        Some(
            "priority = 150\npreempt = false\nnotify = \"/bin/true\"\n\
             [check.web]\nscript = \"true\"\nweight = -10\n\
             [group.web]\nvip = [\"192.168.1.100/24\", \"192.168.1.101/24 dev eth0\"]\ntrack = [\"web weight -60\"]\n\
             [group.db]\nid = 5\nvip = [\"192.168.1.200/24\"]\npriority = 50\npreempt = true\npreempt_delay = \"3s\"\n",
        ),
    );
    assert!(c.group_tables);
    let names: Vec<(&str, usize)> = c.groups.iter().map(|g| (g.name.as_str(), g.slot)).collect();
    // Name order; a group without an id takes the lowest free one.
    assert_eq!(names, [("db", 4), ("web", 0)]);
    let (db, web) = (&c.groups[0], &c.groups[1]);
    assert_eq!(
        (db.priority, db.preempt, db.preempt_delay, db.track.len()),
        (50, true, Duration::from_secs(3), 0)
    );
    assert_eq!((web.priority, web.preempt), (150, false));
    assert_eq!(web.track, [("web".to_string(), -60)]);
    assert_eq!(web.notify.as_deref(), Some("/bin/true"));
    assert_eq!(web.vips[1].iface.as_deref(), Some("eth0"));
}

#[test]
fn bad_groups_name_the_field() {
    for (text, field, says) in [
        (
            "vip = \"192.168.1.100/24\"\n[group.a]\nvip = [\"192.168.1.101/24\"]\n",
            "vip",
            "go in their groups",
        ),
        ("[group.a]\nid = 9\n", "group.a.id", "1 to 8"),
        (
            "[group.a]\nid = 2\n[group.b]\nid = 2\n",
            "group.b.id",
            "group a's id",
        ),
        (
            "[group.a]\nvip = [\"nope\"]\n",
            "group.a.vip",
            "ADDRESS/PREFIX",
        ),
        (
            "[group.a]\nvip = [\"192.168.1.100/24 on eth0\"]\n",
            "group.a.vip",
            "dev IF",
        ),
        (
            "[group.a]\nvip = [\"192.168.1.100/24\"]\n[group.b]\nvip = [\"192.168.1.100/24\"]\n",
            "group.b.vip",
            "in group a too",
        ),
        (
            "[group.a]\nvip = [\"192.168.1.2/24\"]\n",
            "group.a.vip",
            "peer 2's address",
        ),
        (
            "[group.a]\ntrack = [\"nope\"]\n",
            "group.a.track",
            "no [check.nope]",
        ),
        (
            "[group.a]\nvirtual_routes = []\n",
            "group.a",
            "unknown field",
        ),
        (
            "[group.a]\nroutes = [\"10.0.0.0/8\"]\n",
            "group.a.routes",
            "via ADDR or dev IF",
        ),
        (
            "[group.a]\nrules = [\"from 10.0.0.0/8\"]\n",
            "group.a.rules",
            "table",
        ),
        (
            "[group.a]\nnotify_master = \" \"\n",
            "group.a.notify_master",
            "must not be empty",
        ),
        (
            "[group.a]\n[sync.s]\ngroups = [\"b\"]\n",
            "sync.s.groups",
            "no [group.b]",
        ),
        ("[sync.s]\ngroups = [\"a\"]\n", "sync.s", "[group.NAME]"),
        (
            "[group.a]\npriority = 1\n[group.b]\npriority = 2\n[sync.s]\ngroups = [\"a\", \"b\"]\n",
            "group.b.priority",
            "elect as one",
        ),
        (
            "[group.a]\n[sync.s]\ngroups = [\"a\"]\n[sync.t]\ngroups = [\"a\"]\n",
            "sync.t.groups",
            "sync group s too",
        ),
    ] {
        let e = err(&args(), Some(text));
        assert_eq!(e.field, format!("{field} in {FILE}"), "{text}: {e}");
        assert!(e.message.contains(says), "{text}: {e}");
    }
    let nine: String = (0..9).map(|i| format!("[group.g{i}]\n")).collect();
    let e = err(&args(), Some(&nine));
    assert!(e.message.contains("at most 8"), "{e}");
}

#[test]
fn a_sync_group_makes_one_election_of_its_members() {
    let c = ok(
        &args(),
        Some("[group.a]\n[group.b]\n[group.c]\n[sync.s]\ngroups = [\"c\", \"a\"]\n"),
    );
    assert_eq!(groups::units(&c.groups), [vec![0, 2], vec![1]]);
    assert_eq!(c.groups[0].sync.as_deref(), Some("s"));
}

#[test]
fn a_reload_applies_groups_added_removed_and_synced() {
    let a = ok(&args(), Some("[group.a]\npriority = 10\n[group.b]\n"));
    let b = ok(&args(), Some("[group.a]\npriority = 20\n[group.b]\n"));
    assert_eq!(a.changed(&b), [("group", Reload::Live)]);
    let c = ok(&args(), Some("[group.a]\npriority = 10\n"));
    assert_eq!(a.changed(&c), [("group", Reload::Live)]);
    let d = ok(
        &args(),
        Some("[group.a]\npriority = 10\nvip = [\"192.168.1.9/24\"]\n[group.b]\n"),
    );
    assert_eq!(a.changed(&d), [("group", Reload::Live)]);
    let e = ok(
        &args(),
        Some("[group.a]\npriority = 10\n[group.b]\npriority = 10\n[sync.s]\ngroups = [\"a\", \"b\"]\n"),
    );
    assert_eq!(
        a.changed(&e),
        [("group", Reload::Live), ("sync", Reload::Live)]
    );
    // Without group tables the top-level keys say it all.
    let f = ok(&args(), Some("priority = 10\n"));
    let g = ok(&args(), Some("priority = 20\n"));
    assert_eq!(f.changed(&g), [("priority", Reload::Live)]);
}

#[test]
fn per_state_notify_commands_are_keepalived_s() {
    let c = ok(
        &args(),
        Some("[group.a]\nnotify_master = \"/bin/m x\"\nnotify_stop = \"/bin/s\"\nnotify_master_rx_lower_pri = \"/bin/r\"\n[sync.s]\ngroups = [\"a\"]\nnotify_fault = \"/bin/f\"\n"),
    );
    assert_eq!(
        c.groups[0].on_state,
        [
            ("MASTER", "/bin/m x".to_string()),
            ("STOP", "/bin/s".to_string()),
            ("MASTER_RX_LOWER_PRI", "/bin/r".to_string())
        ]
    );
    assert_eq!(c.syncs[0].on_state, [("FAULT", "/bin/f".to_string())]);
}

#[test]
fn witness_settings() {
    let c = ok(&args(), None);
    assert_eq!(c.witness.witness, None);
    let mut a = args();
    a.witness = vec!["etcd://10.0.0.250:2379,[fd00::250]:2379, etcd.lan:2379".into()];
    let c = ok(
        &a,
        Some("witness_ttl = \"5s\"\nwitness_down = \"heartbeats\""),
    );
    assert_eq!(
        c.witness.witness.as_deref(),
        Some(
            &[
                "http://10.0.0.250:2379".to_string(),
                "http://[fd00::250]:2379".into(),
                "http://etcd.lan:2379".into()
            ][..]
        )
    );
    assert_eq!(c.witness.witness_ttl, std::time::Duration::from_secs(5));
    assert_eq!(
        c.witness.witness_down,
        crate::election::WitnessDown::Heartbeats
    );
    for bad in [
        "10.0.0.250:2379",
        "http://10.0.0.250:2379",
        "etcd://10.0.0.250",
        "etcd://10.0.0.250:0",
        "etcd://fd00::250:2379",
        "etcd://:2379",
    ] {
        a.witness = vec![bad.into()];
        let e = err(&a, None);
        assert_eq!(e.field, "--witness", "{bad}");
        assert!(e.message.contains("etcd://HOST:PORT"), "{e}");
    }
    let e = err(&args(), Some("witness_down = \"maybe\""));
    assert_eq!(e.field, "witness_down in /etc/hb/hb.toml");
    let e = err(&args(), Some("witness_ttl = \"500ms\""));
    assert_eq!(e.field, "witness_ttl in /etc/hb/hb.toml");
    let e = err(&args(), Some("witness_prefix = \"hb/\""));
    assert_eq!(e.field, "witness_prefix in /etc/hb/hb.toml");
}
