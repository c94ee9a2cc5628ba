use super::*;

fn conv(s: &str) -> Converted {
    convert(s, "k.conf").expect("converts")
}

fn parsed(c: &Converted) -> toml::Table {
    c.toml.parse().unwrap_or_else(|e| panic!("{e}\n{}", c.toml))
}

const INSTANCE: &str = r#"
global_defs {
   router_id LVS_DEVEL
}
vrrp_script chk_x {
    script "/bin/check \"a\""
    interval 2
    timeout 0.5
    rise 2
    fall 3
    weight -20
    user nobody
}
vrrp_instance VI_1 {
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 0.5
    preempt_delay 5
    smtp_alert
    authentication {
        auth_type PASS
        auth_pass 1111
    }
    unicast_peer {
        10.0.0.2
        10.0.0.3
    }
    virtual_ipaddress {
        192.168.200.16
        192.168.200.17/24 dev eth1 label eth1:0
        fe80::1
    }
    track_script {
        chk_x weight -10
    }
    track_interface {
        eth1
        eth2 weight 5
    }
    notify "/bin/notify"
    virtual_routes {
        10.1.0.0/16 via 192.168.200.1 dev eth0
    }
}
"#;

#[test]
fn an_instance_with_its_checks() {
    let c = conv(INSTANCE);
    let t = parsed(&c);
    assert_eq!(t["iface"].as_array().unwrap().len(), 1);
    assert_eq!(t["node_id"].as_integer(), Some(1));
    assert_eq!(t["interval"].as_str(), Some("500ms"));
    assert_eq!(t["dead_after"].as_str(), Some("1500ms"));
    let peers: Vec<_> = t["peer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(peers, ["2@10.0.0.2", "3@10.0.0.3"]);
    let g = &t["group"]["VI_1"];
    assert_eq!(g["id"].as_integer(), Some(1), "ids are written out");
    let vips: Vec<_> = g["vip"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        vips,
        [
            "192.168.200.16/32",
            "192.168.200.17/24 dev eth1",
            "fe80::1/128"
        ]
    );
    assert_eq!(g["iface"].as_str(), Some("eth0"));
    assert_eq!(g["priority"].as_integer(), Some(150));
    assert_eq!(g["preempt"].as_bool(), Some(false));
    assert_eq!(g["preempt_delay"].as_str(), Some("5s"));
    assert_eq!(g["notify"].as_str(), Some("/bin/notify"));
    assert_eq!(g["notify_args"].as_str(), Some("keepalived"));
    let track: Vec<_> = g["track"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(track, ["chk_x weight -10", "eth1", "eth2 weight 5"]);
    assert_eq!(
        g["routes"][0].as_str(),
        Some("10.1.0.0/16 via 192.168.200.1 dev eth0")
    );
    let chk = &t["check"]["chk_x"];
    assert_eq!(chk["script"].as_str(), Some("/bin/check \"a\""));
    assert_eq!(chk["interval"].as_str(), Some("2s"));
    assert_eq!(chk["timeout"].as_str(), Some("500ms"));
    assert_eq!(chk["rise"].as_integer(), Some(2));
    assert_eq!(chk["fall"].as_integer(), Some(3));
    assert_eq!(chk["weight"].as_integer(), Some(-20));
    assert_eq!(t["check"]["eth1"]["iface"].as_str(), Some("eth1"));
    assert_eq!(t["check"]["eth1"]["weight"].as_integer(), Some(0));
    assert_eq!(t["check"]["eth2"]["weight"].as_integer(), Some(5));
    assert!(c
        .toml
        .contains("# virtual_router_id 51: hb's group ids are 1-8, the same on every node"));
    assert!(c
        .toml
        .starts_with("# converted from k.conf by hb-user import-keepalived"));

    let skipped = c.skipped.join("\n");
    for s in [
        "line 3: router_id:",
        "line 12: user:",
        "line 22: smtp_alert: not supported by hb",
        "line 23: authentication: replaced",
        "line 33: label: VIP option",
    ] {
        assert!(skipped.contains(s), "{s} not in\n{skipped}");
    }
    // state BACKUP is what nopreempt needs: not reported.
    assert!(!skipped.contains("state"), "{skipped}");
}

#[test]
fn state_is_reported_and_multicast_has_no_peers() {
    let c = conv("vrrp_instance A {\n state MASTER\n interface eth0\n virtual_ipaddress {\n 10.0.0.1\n }\n}\n");
    let t = parsed(&c);
    assert_eq!(t["peer"].as_array().map(Vec::len), Some(0));
    assert!(c.toml.contains("multicast"));
    assert_eq!(t["interval"].as_str(), Some("1s"));
    assert_eq!(t["dead_after"].as_str(), Some("3s"));
    assert_eq!(
        c.skipped,
        ["line 2: state: not needed: hb elects by priority"]
    );
}

#[test]
fn sync_groups_lvs_and_includes() {
    let c = conv(
        "vrrp_sync_group G1 {\n group {\n A\n B\n }\n notify_master \"/bin/m x\"\n}\n\
         virtual_server 10.0.0.1 80 {\n lb_algo rr\n real_server 10.0.0.2 80 {\n HTTP_GET {\n }\n }\n}\n\
         include /etc/keepalived/other.conf\n\
         vrrp_instance A {\n virtual_ipaddress {\n 10.0.0.5\n }\n}\n\
         vrrp_instance B {\n virtual_ipaddress {\n 10.0.0.6\n }\n}\n",
    );
    let t = parsed(&c);
    let s = &t["sync"]["G1"];
    assert_eq!(s["groups"].as_array().map(Vec::len), Some(2));
    assert_eq!(s["notify_master"].as_str(), Some("/bin/m x"));
    assert_eq!(
        c.skipped,
        [
            "line 8: virtual_server: LVS load balancing is not part of hb",
            "line 15: include: not followed: convert the included file separately",
        ]
    );
}

#[test]
fn different_advert_ints_are_reported() {
    let c = conv(
        "vrrp_instance A {\n advert_int 2\n virtual_ipaddress {\n 10.0.0.1\n }\n}\n\
         vrrp_instance B {\n advert_int 1\n virtual_ipaddress {\n 10.0.0.2\n }\n}\n",
    );
    assert_eq!(parsed(&c)["interval"].as_str(), Some("1s"));
    assert_eq!(c.skipped.len(), 1);
    assert!(
        c.skipped[0].starts_with("line 2: advert_int: differs"),
        "{:?}",
        c.skipped
    );
}

#[test]
fn track_process_and_file() {
    let c = conv(
        "vrrp_track_process p {\n process haproxy\n weight 10\n quorum 2\n}\n\
         vrrp_track_file f {\n file \"/run/x\"\n weight -5\n}\n",
    );
    let t = parsed(&c);
    assert_eq!(t["check"]["p"]["process"].as_str(), Some("haproxy"));
    assert_eq!(t["check"]["p"]["weight"].as_integer(), Some(10));
    assert_eq!(t["check"]["f"]["file"].as_str(), Some("/run/x"));
    assert_eq!(t["check"]["f"]["weight"].as_integer(), Some(-5));
    assert_eq!(c.skipped, ["line 4: quorum: not supported by hb"]);
}

#[test]
fn odd_input_is_reported_not_broken() {
    let c = conv(
        "vrrp_instance \"a b.c\" {\n priority high\n priority 1\n priority 2\n virtual_ipaddress {\n 300.1.1.1\n 10.0.0.1/40\n }\n}\n\
         vrrp_instance\nvrrp_script s {\n interval -1\n}\nvrrp_script s {\n}\n@high foo 1\n",
    );
    let t = parsed(&c);
    assert_eq!(t["group"]["a b.c"]["priority"].as_integer(), Some(1));
    let skipped = c.skipped.join("\n");
    for s in [
        "line 2: priority: \"high\" is not an integer",
        "line 4: priority: repeated",
        "line 6: 300.1.1.1: not an IP",
        "line 7: 10.0.0.1/40: not an IP",
        "line 1: vrrp_instance: a b.c has no virtual_ipaddress",
        "line 10: vrrp_instance: a block without a name",
        "line 12: interval:",
        "line 11: vrrp_script: s has no script hb runs",
        "line 14: vrrp_script: s has no script hb runs",
        "line 16: @high: conditional",
    ] {
        assert!(skipped.contains(s), "{s} not in\n{skipped}");
    }
}

#[test]
fn syntax_errors_name_the_line() {
    assert_eq!(convert("a {\n", "f").unwrap_err().line, 1);
    assert_eq!(convert("a {\n}\n}\n", "f").unwrap_err().line, 3);
}

#[test]
fn durations_and_prefixes() {
    assert_eq!(seconds_to_ms("1"), Some(1000));
    assert_eq!(seconds_to_ms("0.25"), Some(250));
    assert_eq!(seconds_to_ms("0"), None);
    assert_eq!(seconds_to_ms("NaN"), None);
    assert_eq!(seconds_to_ms("1e300"), None);
    assert_eq!(fmt_ms(1500), "1500ms");
    assert_eq!(with_prefix("::1").as_deref(), Some("::1/128"));
    assert_eq!(with_prefix("10.0.0.1/8").as_deref(), Some("10.0.0.1/8"));
    assert_eq!(quote("a\"\\\u{1}"), "\"a\\\"\\\\\\u0001\"");
}

proptest::proptest! {
    /// Any input converts to valid TOML or is a syntax error: never a panic.
    #[test]
    fn never_panics(s in "[a-z_ {}\"!#\n0-9./@:-]{0,300}") {
        if let Ok(c) = convert(&s, "f") {
            proptest::prop_assert!(c.toml.parse::<toml::Table>().is_ok(), "{}", c.toml);
            for l in &c.skipped {
                proptest::prop_assert!(l.starts_with("line "), "{}", l);
            }
        }
    }
}

#[test]
fn what_run_would_refuse_is_left_out_with_its_line() {
    let c = conv(
        "vrrp_sync_group G {\n group {\n A\n GONE\n }\n}\n\
         vrrp_instance A {\n track_script {\n nope\n }\n virtual_ipaddress {\n 10.0.0.5\n }\n}\n\
         vrrp_instance B {\n virtual_ipaddress {\n 10.0.0.5\n 10.0.0.6\n }\n}\n",
    );
    let t = parsed(&c);
    let skipped = c.skipped.join("\n");
    for s in [
        "line 4: GONE: no group of that name was carried over",
        "line 9: nope: no check of that name was carried over",
        "line 17: 10.0.0.5: already a VIP of group A",
    ] {
        assert!(skipped.contains(s), "{s} not in\n{skipped}");
    }
    assert_eq!(t["sync"]["G"]["groups"].as_array().map(Vec::len), Some(1));
    assert!(t["group"]["A"].get("track").is_none());
    assert_eq!(t["init_dead"].as_str(), t["dead_after"].as_str());
    let nine: String = (0..9)
        .map(|i| format!("vrrp_instance I{i} {{\n virtual_ipaddress {{\n 10.0.1.{i}\n }}\n}}\n"))
        .collect();
    let c = conv(&nine);
    assert_eq!(parsed(&c)["group"].as_table().map(|g| g.len()), Some(8));
    assert!(
        c.skipped
            .iter()
            .any(|s| s.starts_with("line 41: vrrp_instance:") && s.contains("at most 8")),
        "{:?}",
        c.skipped
    );
}
