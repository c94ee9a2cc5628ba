//! The core (`node.rs`) driven from data: each `tests/cases/<case>.jsonl` holds
//! the node's settings on its first line, then one step per line: an input and
//! the actions the core must answer with, in order. Log lines are not compared
//! word for word: a step may list substrings (`"logs"`) that must appear among
//! its log lines. An advert is compared only when it changes (the sender thread
//! ignores repeats), as the executor performs it. A new behaviour is a new file.

use hb_user::{
    election::{Params, WitnessDown},
    node::{Action, Input, Node, NodeParams},
};
use serde::Deserialize;
use std::{path::Path, time::Duration};

#[derive(Deserialize)]
struct Settings {
    node_id: u32,
    priority: u8,
    peers: Vec<u32>,
    #[serde(default = "yes")]
    preempt: bool,
    #[serde(default)]
    preempt_delay_ms: u64,
    dead_after_ms: u64,
    #[serde(default = "two_s")]
    init_dead_ms: u64,
    #[serde(default)]
    ping_quorum: bool,
    #[serde(default)]
    fencing: bool,
    /// A witness, and what to do while it is down ("keep", "heartbeats").
    #[serde(default)]
    witness: Option<WitnessDown>,
    #[serde(default = "yes")]
    has_vips: bool,
    #[serde(default = "eth0")]
    links: Vec<String>,
    #[serde(default)]
    inherited_lease: bool,
    /// Health checks: (name, weight).
    #[serde(default)]
    checks: Vec<(String, i32)>,
}

fn yes() -> bool {
    true
}
fn two_s() -> u64 {
    2000
}
fn eth0() -> Vec<String> {
    vec!["eth0".into()]
}

#[derive(Deserialize)]
struct Step {
    #[serde(rename = "in")]
    input: Input,
    out: Vec<Action>,
    #[serde(default)]
    logs: Vec<String>,
}

fn run_case(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut lines = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("//"));
    let s: Settings = serde_json::from_str(lines.next().ok_or("empty case")?)
        .map_err(|e| format!("settings: {e}"))?;
    let mut node = Node::new(
        NodeParams {
            machine: Params {
                node_id: s.node_id,
                priority: s.priority,
                preempt: s.preempt,
                preempt_delay: Duration::from_millis(s.preempt_delay_ms),
                dead_after: Duration::from_millis(s.dead_after_ms),
                init_dead: Duration::from_millis(s.init_dead_ms),
                peers: s.peers,
                ping_quorum: s.ping_quorum,
                fencing: s.fencing,
                fence_retry: Duration::from_secs(1),
                witness: s.witness,
                witness_retry: Duration::from_millis(200),
            },
            has_vips: s.has_vips,
            links: s.links,
            vip_list: "10.0.0.100/24 on eth0".into(),
            inherited_lease: s.inherited_lease,
            checks: s.checks,
        },
        Duration::ZERO,
    );
    let mut advert = Some(node.advert());
    for (n, line) in lines.enumerate() {
        let step: Step =
            serde_json::from_str(line).map_err(|e| format!("step {}: {e}: {line}", n + 1))?;
        let actions = node.handle(step.input);
        let logs: Vec<&str> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Log { msg, .. } => Some(msg.as_str()),
                _ => None,
            })
            .collect();
        let mut got = Vec::new();
        for a in &actions {
            match a {
                Action::Log { .. } => {}
                Action::Advertise { .. } if advert.as_ref() == Some(a) => {}
                Action::Advertise { .. } => {
                    advert = Some(a.clone());
                    got.push(a.clone());
                }
                _ => got.push(a.clone()),
            }
        }
        if got != step.out {
            return Err(format!(
                "step {}: expected\n  {}\ngot\n  {}\nlogs: {logs:?}",
                n + 1,
                serde_json::to_string(&step.out).unwrap(),
                serde_json::to_string(&got).unwrap()
            ));
        }
        for want in &step.logs {
            if !logs.iter().any(|l| l.contains(want.as_str())) {
                return Err(format!(
                    "step {}: no log line with {want:?} in {logs:?}",
                    n + 1
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn every_case_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 8,
        "expected the case files in {}",
        dir.display()
    );
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            run_case(c)
                .err()
                .map(|e| format!("{}: {e}", c.file_name().unwrap().to_string_lossy()))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
