//! `--metrics`: a real scrape of `/metrics` (curl inside the node's
//! namespace) during a failover, parsed with a Prometheus text-format
//! parser and checked by `promtool check metrics` (Debian's prometheus).

use hb_tests::cluster::{test_lan, Cluster, NodeState, BOUND, FAST};
use nix::sys::signal::Signal;
use prometheus_parse::{Sample, Scrape, Value};
use std::time::{Duration, Instant};

const ADDR: &str = "127.0.0.1:9694";

/// Node `id`'s metrics as text.
fn scrape_text(c: &Cluster, id: u32) -> String {
    c.exec(
        id,
        &[
            "curl",
            "-sf",
            "--max-time",
            "2",
            &format!("http://{ADDR}/metrics"),
        ],
    )
    .unwrap_or_else(|e| panic!("scraping node {id}: {e:#}\n{}", c.logs()))
}

fn scrape(c: &Cluster, id: u32) -> Vec<Sample> {
    let text = scrape_text(c, id);
    Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("node {id}'s metrics do not parse: {e}\n{text}"))
        .samples
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let s = samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))?;
    match &s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
        Value::Histogram(b) => b
            .iter()
            .map(|h| h.count)
            .fold(None, |m, c| Some(m.map_or(c, |m: f64| m.max(c)))),
        Value::Summary(_) => None,
    }
}

fn state_is(samples: &[Sample], state: &str) -> bool {
    value(
        samples,
        "hb_group_state",
        &[("group", "default"), ("state", state)],
    ) == Some(1.0)
}

#[test]
fn a_scrape_during_a_failover_shows_the_state_flip_and_the_takeover() {
    let (_g, mut c) = test_lan("mtr", &[200, 100], FAST, 1);
    for n in &mut c.nodes {
        n.extra = vec!["--metrics".into(), ADDR.into()];
    }
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    // The sampled values come with the once-a-second sweep.
    assert!(
        c.wait_for(BOUND, |c| {
            let s = scrape(c, 2);
            state_is(&s, "BACKUP")
                && value(&s, "hb_peer_up", &[("peer", "1")]) == Some(1.0)
                && value(&s, "hb_peer_accepted_heartbeats_total", &[("peer", "1")])
                    .is_some_and(|v| v > 0.0)
        }),
        "node 2's metrics before the failover:\n{}",
        scrape_text(&c, 2)
    );
    // Node 1's sweep may come up to a second after node 2's.
    let sampled = |c: &Cluster| {
        let s = scrape(c, 1);
        value(&s, "hb_lease_remaining_seconds", &[]).is_some_and(|v| v > 0.0)
            && value(&s, "hb_xdp_packets_total", &[("outcome", "accepted")])
                .is_some_and(|v| v > 0.0)
            && value(&s, "hb_heartbeat_send_gap_seconds", &[]).is_some_and(|n| n > 10.0)
    };
    assert!(c.wait_for(BOUND, sampled), "{}", scrape_text(&c, 1));
    let s1 = scrape(&c, 1);
    assert!(state_is(&s1, "MASTER"), "{}", scrape_text(&c, 1));
    assert_eq!(
        value(&s1, "hb_group_state", &[("state", "BACKUP")]),
        Some(0.0)
    );
    assert!(
        value(&s1, "hb_lease_remaining_seconds", &[]).is_some_and(|v| v > 0.0),
        "the holder's lease: {}",
        scrape_text(&c, 1)
    );
    assert!(
        value(&s1, "hb_heartbeat_send_gap_seconds", &[]).is_some_and(|n| n > 10.0),
        "{}",
        scrape_text(&c, 1)
    );
    // Cumulative buckets, one +Inf, equal to the count.
    let text1 = scrape_text(&c, 1);
    let buckets: Vec<(String, f64)> = (text1.lines())
        .filter_map(|l| l.strip_prefix("hb_heartbeat_send_gap_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, v) = l.split_once("\"} ")?;
            Some((le.to_string(), v.parse().ok()?))
        })
        .collect();
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{text1}");
    assert_eq!(
        buckets.iter().filter(|(le, _)| le == "+Inf").count(),
        1,
        "{text1}"
    );
    assert_eq!(
        buckets.last().map(|b| b.0.as_str()),
        Some("+Inf"),
        "{text1}"
    );
    let accepted = value(&s1, "hb_xdp_packets_total", &[("outcome", "accepted")]);
    assert!(accepted.is_some_and(|v| v > 0.0), "{}", scrape_text(&c, 1));

    // The holder crashes: node 2's state gauge flips, the transition is
    // counted with its reason, and the takeover is timed.
    let before = value(
        &scrape(&c, 2),
        "hb_group_transitions_total",
        &[("to", "MASTER")],
    );
    assert_eq!(before, None, "no takeover yet");
    c.signal(1, Signal::SIGKILL).unwrap();
    assert!(
        c.wait_for(BOUND, |c| c.state_of(2) == Some(NodeState::Master)),
        "{}",
        c.logs()
    );
    let from = Instant::now();
    let mut s2 = scrape(&c, 2);
    while from.elapsed() < BOUND && value(&s2, "hb_peer_up", &[("peer", "1")]) != Some(0.0) {
        std::thread::sleep(Duration::from_millis(100));
        s2 = scrape(&c, 2);
    }
    let text = scrape_text(&c, 2);
    assert!(state_is(&s2, "MASTER"), "{text}");
    assert_eq!(
        value(&s2, "hb_group_state", &[("state", "BACKUP")]),
        Some(0.0),
        "{text}"
    );
    let took = samples_named(&s2, "hb_group_transitions_total")
        .into_iter()
        .filter(|s| s.labels.get("to") == Some("MASTER"))
        .map(|s| s.labels.get("reason").unwrap_or("").to_string())
        .collect::<Vec<_>>();
    assert!(
        took.iter().any(|r| r == "peer_gone" || r == "peer_silent"),
        "the takeover's reason: {took:?}\n{text}"
    );
    assert_eq!(
        value(&s2, "hb_takeover_duration_seconds", &[]),
        Some(1.0),
        "one takeover timed\n{text}"
    );
    assert_eq!(
        value(&s2, "hb_peer_up", &[("peer", "1")]),
        Some(0.0),
        "{text}"
    );

    // promtool, Prometheus's own checker, accepts the exposition.
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is needed: apt-get install prometheus");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn samples_named<'a>(samples: &'a [Sample], name: &str) -> Vec<&'a Sample> {
    samples.iter().filter(|s| s.metric == name).collect()
}

#[test]
fn a_metrics_address_in_use_fails_the_start_naming_it() {
    let (_g, c) = test_lan("mtb", &[200, 100], FAST, 1);
    // Something else holds the port in node 1's namespace.
    let ns = c.node(1).ns.clone();
    let mut holder = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "python3", "-c"])
        .arg("import socket,time; s=socket.socket(); s.bind(('127.0.0.1', 9694)); s.listen(); time.sleep(30)")
        .spawn()
        .expect("python3 holding the port");
    hb_tests::cluster::track_process(holder.id() as i32);
    std::thread::sleep(Duration::from_millis(500));
    let mut args = c.args(1);
    args.extend(["--metrics".into(), ADDR.into()]);
    let (code, out) = c.run_once(1, &args).unwrap();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("--metrics"),
        "the error names the setting: {out}"
    );
    assert!(!c.xdp_attached(1), "nothing may be left attached");
}
