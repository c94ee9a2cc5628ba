//! `cargo xtask vm-deploy`: README.md's "## Deploy" section followed on two
//! fresh Debian 12 machines with real systemd, dpkg and journald (qemu,
//! rootfs.rs, guest.rs), checked as an operator checks: systemctl, the
//! journal's fields, `hb-user status --json`, and a client beside them that
//! pings the VIP the whole time and sees which MAC answers.
//!
//! The section's shell block is read from README.md and run line by line on
//! the nodes (the keygen line on the first node, its key then copied to the
//! other; the `editor` line becomes this node's settings appended to the
//! file), so a README change that breaks a deployment breaks this. Then:
//! reload (applied, and refused while the service goes on), the watchdog
//! restarting a stalled controller, the upgrade as the section describes it,
//! a power cut of the holder and its return, and a purge.

use super::{
    guest::{self, Boot, Guest, Net},
    qemu::Reaped,
    rootfs::{self, Node, Rootfs},
};
use crate::tools::{self, say};
use anyhow::{bail, ensure, Context, Result};
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

const VIP: &str = "10.213.0.50";
/// Generous for emulated CPUs: a guest can stall for a second.
const SETTINGS: &str = "interval = \"200ms\"\ndead_after = \"2s\"\ninit_dead = \"4s\"\n";
const BOOT_WITHIN: Duration = Duration::from_secs(300);
const DISK_SIZE: &str = "3G";

/// The README's deployment steps, as the section's shell block says them.
#[derive(Debug, PartialEq)]
enum Line {
    /// Run as written on every node.
    Everywhere(String),
    /// Run on the first node; the file it writes is then copied to the others.
    OnOneThenCopy { cmd: String, file: String },
    /// The operator's edit of a file: this node's settings go in.
    Edit(String),
}

/// The ```sh block under "## Deploy", comments dropped.
fn readme_lines(readme: &str) -> Result<Vec<Line>> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Deploy\n"))
        .context("README.md has no \"## Deploy\" section")?;
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .context("README.md's Deploy section has no ```sh block")?;
    let mut lines = Vec::new();
    for raw in block.lines() {
        let cmd = raw.split(" #").next().unwrap_or("").trim();
        if cmd.is_empty() || cmd.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = cmd.split_whitespace().collect();
        lines.push(if words[0] == "editor" {
            Line::Edit(words.get(1).context("editor without a file")?.to_string())
        } else if let Some(at) = words.iter().position(|w| *w == "--out") {
            Line::OnOneThenCopy {
                cmd: cmd.to_string(),
                file: words
                    .get(at + 1)
                    .context("--out without a file")?
                    .to_string(),
            }
        } else {
            Line::Everywhere(cmd.to_string())
        });
    }
    ensure!(
        lines
            .iter()
            .any(|l| matches!(l, Line::Everywhere(c) if c.starts_with("dpkg -i")))
            && lines.iter().any(|l| matches!(l, Line::Edit(_))),
        "README.md's Deploy block no longer installs the package and edits the settings: \
         update xtask/src/vm/deploy.rs with it"
    );
    Ok(lines)
}

/// Replies the client saw: when, echo sequence number, responder's MAC.
type Seen = Arc<Mutex<Vec<(Instant, u16, String)>>>;

/// The client's probe (tests' hb-vip-probe) running in the namespace.
struct Probe {
    seen: Seen,
    started: Instant,
    _child: Reaped,
}

impl Probe {
    fn start(bin: &Path, net: &Net) -> Result<Probe> {
        let mut child = Reaped(
            Command::new(bin)
                .args([&net.ns, guest::BRIDGE, VIP, "100"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?,
        );
        let out = child.0.stdout.take().context("probe stdout")?;
        let seen: Seen = Arc::default();
        let s = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some((seq, mac)) = line.split_once(' ') {
                    if let Ok(seq) = seq.parse() {
                        s.lock().unwrap_or_else(|e| e.into_inner()).push((
                            Instant::now(),
                            seq,
                            mac.to_string(),
                        ));
                    }
                }
            }
        });
        Ok(Probe {
            seen,
            started: Instant::now(),
            _child: child,
        })
    }

    fn since(&self, t: Instant) -> Vec<(Instant, u16, String)> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.0 >= t)
            .cloned()
            .collect()
    }

    /// Waits (bounded) until a reply after `t` comes from `mac`.
    fn wait_mac(&self, mac: &str, t: Instant, within: Duration) -> Result<Duration> {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Some(r) = self.since(t).iter().find(|r| r.2 == mac) {
                return Ok(r.0 - t);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "the client saw no reply to {VIP} from {mac} within {} s",
            within.as_secs()
        )
    }
}

/// What the replies since `t` say: no echo answered by two MACs, and how
/// many times the answering MAC changed.
fn moves_since(replies: &[(Instant, u16, String)]) -> Result<usize> {
    let mut by_seq = std::collections::HashMap::<u16, &str>::new();
    for (_, seq, mac) in replies {
        if let Some(other) = by_seq.insert(*seq, mac) {
            ensure!(
                other == mac,
                "echo {seq} to {VIP} was answered by two MACs, {other} and {mac}: two holders"
            );
        }
    }
    Ok(replies.windows(2).filter(|w| w[0].2 != w[1].2).count())
}

/// The elapsed times of what passed, for the final report.
struct Report {
    t0: Instant,
    lines: Vec<String>,
}

impl Report {
    fn pass(&mut self, what: impl AsRef<str>) {
        let line = format!(
            "[{:>5.0} s] ok: {}",
            self.t0.elapsed().as_secs_f64(),
            what.as_ref()
        );
        say(format!("vm-deploy {line}"));
        self.lines.push(line);
    }
}

struct Cluster {
    nodes: Vec<Guest>,
    probe: Probe,
}

/// `hb-user status --json` of `g`.
fn status(g: &Guest) -> Result<serde_json::Value> {
    let out = g.sh("hb-user status --json")?;
    serde_json::from_str(&out).with_context(|| format!("{}: status --json: {out}", g.name))
}

/// The node's state (MASTER, BACKUP, ...), or "" when hb-user is not running.
fn state(g: &Guest) -> String {
    status(g)
        .ok()
        .and_then(|s| s["node"]["state"].as_str().map(String::from))
        .unwrap_or_default()
}

/// `systemctl show -p PROP --value hb`.
fn unit_prop(g: &Guest, prop: &str) -> Result<String> {
    Ok(g.sh(&format!("systemctl show -p {prop} --value hb"))?
        .trim()
        .to_string())
}

/// Polls `f` every half second until it is true, at most `within`.
fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let t0 = Instant::now();
    let mut last_err = None;
    for _ in 0..10_000 {
        match f() {
            Ok(true) => return Ok(t0.elapsed()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if t0.elapsed() > within {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    match last_err {
        Some(e) => bail!(
            "{what}: not within {} s (last error: {e:#})",
            within.as_secs()
        ),
        None => bail!("{what}: not within {} s", within.as_secs()),
    }
}

/// Waits until `holder` is MASTER and every other node BACKUP.
fn wait_roles(c: &Cluster, holder: usize, within: Duration) -> Result<Duration> {
    wait_for(
        &format!("{} MASTER and the others BACKUP", c.nodes[holder].name),
        within,
        || {
            Ok(c.nodes
                .iter()
                .enumerate()
                .all(|(i, g)| state(g) == if i == holder { "MASTER" } else { "BACKUP" }))
        },
    )
}

/// The node's settings the `editor` line stands for.
fn settings(index: usize, count: usize) -> String {
    let me = index + 1;
    let peers: Vec<String> = (1..=count)
        .filter(|&n| n != me)
        .map(|n| format!("\"{n}@{}.{n}\"", guest::SUBNET))
        .collect();
    format!(
        "\n# {} (cargo xtask vm-deploy)\niface = [\"eth0\"]\nnode_id = {me}\npeer = [{}]\n\
         vip = [\"{VIP}/24\"]\npriority = {}\n{SETTINGS}",
        if me == 1 { "node1" } else { "node2" },
        peers.join(", "),
        if me == 1 { 200 } else { 100 },
    )
}

/// Runs `f` on every node at once.
fn everywhere(c: &Cluster, f: impl Fn(&Guest) -> Result<()> + Sync) -> Result<()> {
    std::thread::scope(|s| {
        let hs: Vec<_> = c.nodes.iter().map(|g| s.spawn(|| f(g))).collect();
        hs.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| anyhow::anyhow!("a node's thread panicked"))?
        })
    })
}

fn follow_readme(c: &Cluster, lines: &[Line], r: &mut Report) -> Result<()> {
    for line in lines {
        match line {
            Line::Everywhere(cmd) => everywhere(c, |g| g.sh(cmd).map(|_| ()))?,
            Line::OnOneThenCopy { cmd, file } => {
                let first = &c.nodes[0];
                first.sh(cmd)?;
                let bytes = first.sh(&format!("cat {file}"))?;
                for g in &c.nodes[1..] {
                    g.sh_in(
                        &format!("install -m 0600 /dev/stdin {file}"),
                        Some(bytes.as_bytes()),
                    )?;
                }
            }
            Line::Edit(file) => {
                for (i, g) in c.nodes.iter().enumerate() {
                    g.sh_in(
                        &format!("cat >> {file}"),
                        Some(settings(i, c.nodes.len()).as_bytes()),
                    )?;
                }
            }
        }
        r.pass(match line {
            Line::Everywhere(cmd) => format!("README, on every node: {cmd}"),
            Line::OnOneThenCopy { cmd, file } => {
                format!("README, on node1: {cmd}; {file} copied to node2 over ssh")
            }
            Line::Edit(file) => format!("README, each node's settings written into {file}"),
        });
    }
    Ok(())
}

/// Step 1: the service as systemd and a client see it.
fn check_running(c: &Cluster, r: &mut Report) -> Result<()> {
    for g in &c.nodes {
        ensure!(
            g.sh("systemctl is-active hb")?.trim() == "active",
            "{}: hb not active",
            g.name
        );
        ensure!(
            g.sh("systemctl is-enabled hb")?.trim() == "enabled",
            "{}: hb not enabled",
            g.name
        );
    }
    let took = wait_roles(c, 0, Duration::from_secs(60))?;
    r.pass(format!(
        "node1 (priority 200) MASTER, node2 BACKUP ({:.1} s after the start)",
        took.as_secs_f64()
    ));
    for g in &c.nodes {
        let st = state(g);
        let text = unit_prop(g, "StatusText")?;
        ensure!(
            text.contains(&st),
            "{}: the unit's STATUS {text:?} does not say {st}",
            g.name
        );
        let shown = g.sh("systemctl status hb --no-pager")?;
        ensure!(
            shown.contains(&text),
            "{}: systemctl status does not show {text:?}:\n{shown}",
            g.name
        );
    }
    r.pass("systemctl status shows each node's state (STATUS=)");
    c.probe
        .wait_mac(&c.nodes[0].mac, c.probe.started, Duration::from_secs(30))?;
    let recent = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let seen = c.probe.since(recent);
    ensure!(
        seen.iter().all(|s| s.2 == c.nodes[0].mac),
        "the client's pings of {VIP} were answered by {:?}, not only node1",
        seen.iter().map(|s| &s.2).collect::<Vec<_>>()
    );
    r.pass(format!(
        "the client's ping of {VIP} is answered by node1's MAC"
    ));
    Ok(())
}

/// Step 2: the journal, natively (fields, priorities).
fn check_journal(c: &Cluster, r: &mut Report) -> Result<()> {
    let count = |g: &Guest, args: &str| -> Result<usize> {
        Ok(
            g.sh(&format!("journalctl -u hb {args} -o json --no-pager"))?
                .lines()
                .filter(|l| l.starts_with('{'))
                .count(),
        )
    };
    let (holder, backup) = (&c.nodes[0], &c.nodes[1]);
    ensure!(
        count(holder, "-p warning")? > 0,
        "node1: journalctl -u hb -p warning lists nothing (its takeover?)"
    );
    ensure!(
        count(holder, "STATE=MASTER")? > 0,
        "node1: journalctl -u hb STATE=MASTER lists nothing"
    );
    ensure!(
        count(backup, "STATE=MASTER")? == 0,
        "node2 was MASTER at some point: journalctl -u hb STATE=MASTER lists entries"
    );
    r.pass("journal: the holder's takeover at warning and in STATE=MASTER, none on the backup");
    Ok(())
}

/// Step 3: `systemctl reload hb`, applied and refused.
fn check_reload(c: &Cluster, r: &mut Report) -> Result<()> {
    let g = &c.nodes[1];
    let prio = |g: &Guest| -> Result<u64> {
        status(g)?["node"]["priority"]
            .as_u64()
            .context("status --json has no priority")
    };
    let set = |p: &str| {
        g.sh(&format!(
            "sed -i 's/^priority = .*/priority = {p}/' /etc/hb/hb.toml"
        ))
    };
    let reload_to = |p: u64| -> Result<()> {
        set(&p.to_string())?;
        g.sh("systemctl reload hb")?;
        wait_for(
            &format!("node2's priority {p} after the reload"),
            Duration::from_secs(20),
            || Ok(prio(g)? == p),
        )
        .map(|_| ())
    };
    reload_to(150)?;
    r.pass("systemctl reload hb applies a new priority (status shows 150)");
    set("999")?;
    let out = g.run("systemctl reload hb", None)?;
    ensure!(
        !out.status.success(),
        "systemctl reload hb accepted priority = 999"
    );
    ensure!(
        g.sh("systemctl is-active hb")?.trim() == "active",
        "node2: hb not active after a refused reload"
    );
    ensure!(
        prio(g)? == 150,
        "node2: a refused reload changed the priority"
    );
    r.pass("a broken edit: systemctl reload hb fails, hb stays active with priority 150");
    // Back to the file the upgrade's restarts will read.
    reload_to(100)
}

/// Step 4: the watchdog restarts a stalled controller; the VIP stays.
fn check_watchdog(c: &Cluster, r: &mut Report) -> Result<()> {
    let g = &c.nodes[1];
    let pid = unit_prop(g, "MainPID")?;
    let restarts: u64 = unit_prop(g, "NRestarts")?.parse()?;
    let t = Instant::now();
    g.sh(&format!("kill -STOP {pid}"))?;
    let took = wait_for(
        "systemd's watchdog restarting node2's stopped hb-user",
        Duration::from_secs(90),
        || {
            Ok(unit_prop(g, "NRestarts")?.parse::<u64>()? > restarts
                && g.sh("systemctl is-active hb")?.trim() == "active"
                && unit_prop(g, "MainPID")? != pid)
        },
    )?;
    r.pass(format!(
        "kill -STOP of node2's hb-user: the watchdog restarted it ({:.1} s)",
        took.as_secs_f64()
    ));
    wait_roles(c, 0, Duration::from_secs(30))?;
    let seen = c.probe.since(t);
    ensure!(
        moves_since(&seen)? == 0 && seen.iter().all(|s| s.2 == c.nodes[0].mac),
        "the VIP moved during node2's watchdog restart"
    );
    r.pass("the VIP stayed on node1 throughout");
    Ok(())
}

/// The package again, with a newer version (a repacked .deb).
fn newer_package(deb: &Path, dir: &Path) -> Result<(PathBuf, String)> {
    let tree = dir.join("deb-tree");
    let _ = std::fs::remove_dir_all(&tree);
    tools::run(
        Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree),
        "dpkg-deb -R",
    )?;
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control)?;
    let old = text
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .context("the package's control has no Version")?
        .to_string();
    let new = format!("{old}+deploy1");
    std::fs::write(
        &control,
        text.replace(&format!("Version: {old}"), &format!("Version: {new}")),
    )?;
    let out = dir.join(format!("hb-user_{new}_amd64.deb"));
    tools::output(
        Command::new("dpkg-deb")
            .args(["-Zxz", "-b"])
            .arg(&tree)
            .arg(&out),
        "dpkg-deb -b",
    )?;
    std::fs::remove_dir_all(&tree)?;
    Ok((out, new))
}

/// Waits until `g`'s `hb-user status` shows its peers again.
fn wait_peers(g: &Guest) -> Result<Duration> {
    wait_for(
        &format!("{}: hb-user status showing its peer", g.name),
        Duration::from_secs(60),
        || {
            let s = status(g)?;
            Ok(s["peers"]
                .as_array()
                .is_some_and(|p| !p.is_empty() && p.iter().all(|p| p["alive"] == true)))
        },
    )
}

/// Step 5: the upgrade, one node at a time, as the Deploy section says.
fn check_upgrade(c: &Cluster, deb: &Path, dir: &Path, r: &mut Report) -> Result<()> {
    let (new_deb, version) = newer_package(deb, dir)?;
    let name = new_deb
        .file_name()
        .context("deb name")?
        .to_string_lossy()
        .to_string();
    let bytes = std::fs::read(&new_deb)?;
    let mut sums = Vec::new();
    for g in &c.nodes {
        g.sh_in(&format!("cat > /root/{name}"), Some(&bytes))?;
        sums.push(g.sh("sha256sum /etc/hb/hb.toml")?);
    }
    let t = Instant::now();
    let (holder, backup) = (&c.nodes[0], &c.nodes[1]);
    let upgrade = |g: &Guest| -> Result<()> {
        let pid = unit_prop(g, "MainPID")?;
        g.sh(&format!("dpkg -i /root/{name}"))?;
        ensure!(
            unit_prop(g, "MainPID")? == pid,
            "{}: dpkg -i restarted hb",
            g.name
        );
        let v = g.sh("dpkg-query -W -f '${Version}' hb-user")?;
        ensure!(v == version, "{}: dpkg shows {v}, not {version}", g.name);
        g.sh("systemctl restart hb")?;
        wait_peers(g)?;
        Ok(())
    };
    upgrade(backup)?;
    r.pass("backup upgraded: dpkg -i restarted nothing, systemctl restart hb, peers shown again");
    let standby = Instant::now();
    holder.sh("hb-user standby")?;
    let took = c
        .probe
        .wait_mac(&backup.mac, standby, Duration::from_secs(30))?;
    r.pass(format!(
        "hb-user standby on the holder: the client follows node2 ({:.1} s)",
        took.as_secs_f64()
    ));
    upgrade(holder)?;
    ensure!(
        state(holder) != "MASTER",
        "node1 took the VIP at its restart despite the standby"
    );
    let back = Instant::now();
    holder.sh("hb-user resume")?;
    let took = c
        .probe
        .wait_mac(&holder.mac, back, Duration::from_secs(30))?;
    wait_roles(c, 0, Duration::from_secs(30))?;
    r.pass(format!(
        "holder upgraded and resumed: the client follows node1 back ({:.1} s)",
        took.as_secs_f64()
    ));
    for (g, sum) in c.nodes.iter().zip(&sums) {
        ensure!(
            &g.sh("sha256sum /etc/hb/hb.toml")? == sum,
            "{}: the upgrade changed the edited hb.toml",
            g.name
        );
    }
    let moves = moves_since(&c.probe.since(t))?;
    ensure!(
        moves <= 2,
        "the VIP moved {moves} times during the upgrade (the README says at most twice)"
    );
    r.pass(format!(
        "upgrade to {version}: hb.toml kept, never two holders, the VIP moved {moves} times"
    ));
    Ok(())
}

/// Step 6: a power cut of the holder, and its return.
fn check_power_cut(c: &mut Cluster, r: &mut Report) -> Result<()> {
    let t = Instant::now();
    c.nodes[0].power_off();
    let took = c
        .probe
        .wait_mac(&c.nodes[1].mac.clone(), t, Duration::from_secs(30))?;
    ensure!(
        state(&c.nodes[1]) == "MASTER",
        "node2 answers for the VIP but is not MASTER"
    );
    ensure!(
        moves_since(&c.probe.since(t))? <= 1,
        "after node1's power cut the VIP moved more than once"
    );
    r.pass(format!(
        "power cut of node1: the client follows node2 ({:.1} s)",
        took.as_secs_f64()
    ));
    // The machine comes back: hb starts at boot (enabled), with no pins
    // left, and takes its VIP back once (priority 200, preempt).
    let back = Instant::now();
    let node1 = &mut c.nodes[0];
    node1.power_on()?;
    let up = node1.wait_ssh(BOOT_WITHIN)?;
    // After network-online.target, so a while after sshd.
    wait_for(
        "node1: hb started at boot",
        Duration::from_secs(120),
        || {
            let out = node1.run("systemctl is-active hb", None)?;
            Ok(String::from_utf8_lossy(&out.stdout).trim() == "active")
        },
    )?;
    let took = c
        .probe
        .wait_mac(&c.nodes[0].mac, back, Duration::from_secs(60))?;
    wait_roles(c, 0, Duration::from_secs(30))?;
    let moves = moves_since(&c.probe.since(back))?;
    ensure!(
        moves <= 1,
        "the VIP moved {moves} times while node1 came back"
    );
    r.pass(format!(
        "node1 booted again ({:.0} s): hb started at boot and took the VIP back ({:.0} s after power on)",
        up.as_secs_f64(),
        took.as_secs_f64()
    ));
    Ok(())
}

/// Step 7: `dpkg --purge` removes the state and keeps the key.
fn check_purge(g: &Guest, r: &mut Report) -> Result<()> {
    g.sh("dpkg --purge hb-user")?;
    g.sh("test ! -e /var/lib/hb && test ! -e /etc/hb/hb.toml && test -f /etc/hb/hb.key && ! command -v hb-user")?;
    r.pass(format!(
        "{}: dpkg --purge removed /var/lib/hb and hb.toml, kept the key",
        g.name
    ));
    Ok(())
}

/// Saves each running guest's journal next to its console.
fn keep_journals(c: &Cluster, dir: &Path) {
    for g in &c.nodes {
        if let Ok(out) = g.run("journalctl -b --no-pager", None) {
            let _ = std::fs::write(dir.join(format!("{}-journal.log", g.name)), out.stdout);
        }
    }
}

/// Boots two machines on `root` and follows the Deploy section with `deb`.
pub fn run(deb: &Path, root: &Rootfs, probe_bin: &Path) -> Result<()> {
    let t0 = Instant::now();
    let mut r = Report {
        t0,
        lines: Vec::new(),
    };
    let lines = readme_lines(&std::fs::read_to_string(
        tools::workspace_root().join("README.md"),
    )?)?;
    let dir = rootfs::cache_dir().join("run");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("id_ed25519");
    tools::output(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key),
        "ssh-keygen",
    )?;
    let pubkey = key.with_extension("pub");
    let names = ["node1", "node2"];
    let disks: Vec<PathBuf> = names.iter().map(|n| dir.join(format!("{n}.img"))).collect();
    std::thread::scope(|s| -> Result<()> {
        let hs: Vec<_> = names
            .iter()
            .zip(&disks)
            .enumerate()
            .map(|(i, (n, d))| {
                let (pubkey, deb) = (&pubkey, deb);
                s.spawn(move || {
                    let address = format!("{}.{}/24", guest::SUBNET, i + 1);
                    root.disk(
                        &Node {
                            hostname: n,
                            address: &address,
                            authorized_key: pubkey,
                            files: &[deb],
                        },
                        d,
                        DISK_SIZE,
                    )
                })
            })
            .collect();
        for h in hs {
            h.join()
                .map_err(|_| anyhow::anyhow!("making a disk panicked"))??;
        }
        Ok(())
    })?;
    r.pass("two disks from the debootstrapped root");
    let net = Net::new(names.len())?;
    let accel: Vec<&str> = super::qemu::accel_args();
    // node2 has not rebooted into its kernel update yet: both kernels an
    // operator's Debian 12 node may be running are proved.
    let kernels = [&root.updated, &root.point_release];
    let mut nodes = Vec::new();
    for (i, ((n, d), k)) in names.iter().zip(&disks).zip(kernels).enumerate() {
        nodes.push(Guest::start(
            &net,
            n,
            &Boot {
                kernel: &k.vmlinuz,
                initrd: &k.initrd,
                disk: d,
                index: i as u8 + 1,
                run_dir: &dir,
                ssh_key: &key,
                accel: &accel,
            },
        )?);
    }
    for (g, k) in nodes.iter_mut().zip(kernels) {
        let up = g.wait_ssh(BOOT_WITHIN)?;
        let release = g.sh("uname -r")?;
        ensure!(
            release.trim() == k.release,
            "{} runs kernel {release}, not {}",
            g.name,
            k.release
        );
        r.pass(format!(
            "{} booted {} (systemd, sshd) in {:.0} s",
            g.name,
            k.release,
            up.as_secs_f64()
        ));
    }
    let probe = Probe::start(probe_bin, &net)?;
    let mut c = Cluster { nodes, probe };
    let steps = (|| -> Result<()> {
        follow_readme(&c, &lines, &mut r)?;
        check_running(&c, &mut r)?;
        check_journal(&c, &mut r)?;
        check_reload(&c, &mut r)?;
        check_watchdog(&c, &mut r)?;
        check_upgrade(&c, deb, &dir, &mut r)?;
        check_power_cut(&mut c, &mut r)?;
        check_purge(&c.nodes[1], &mut r)
    })();
    println!("\nvm-deploy report (README.md's Deploy section on two Debian 12 VMs)");
    for l in &r.lines {
        println!("  {l}");
    }
    if let Err(e) = steps {
        keep_journals(&c, &dir);
        println!(
            "  FAILED after {:.0} s: consoles and journals in {}",
            t0.elapsed().as_secs_f64(),
            dir.display()
        );
        return Err(e);
    }
    drop(c);
    drop(net);
    for d in &disks {
        let _ = std::fs::remove_file(d);
    }
    println!("  passed in {:.0} s", t0.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_block_becomes_steps() {
        let readme = "# x\n## Deploy\n\ntext\n```sh\ndpkg -i a.deb   # every node\n\
                      hb-user keygen --out /etc/hb/hb.key  # one node\neditor /etc/hb/hb.toml\n\
                      systemctl enable --now hb\n```\n## Next\n```sh\nrm -rf /\n```\n";
        assert_eq!(
            readme_lines(readme).unwrap(),
            vec![
                Line::Everywhere("dpkg -i a.deb".into()),
                Line::OnOneThenCopy {
                    cmd: "hb-user keygen --out /etc/hb/hb.key".into(),
                    file: "/etc/hb/hb.key".into()
                },
                Line::Edit("/etc/hb/hb.toml".into()),
                Line::Everywhere("systemctl enable --now hb".into()),
            ]
        );
        assert!(readme_lines("x\n## Deploy\n```sh\nsystemctl enable --now hb\n```\n").is_err());
    }

    #[test]
    fn two_macs_for_one_echo_is_two_holders() {
        let t = Instant::now();
        let r = |seq, mac: &str| (t, seq, mac.to_string());
        assert_eq!(
            moves_since(&[r(1, "a"), r(2, "a"), r(4, "b"), r(5, "a")]).unwrap(),
            2
        );
        assert!(moves_since(&[r(1, "a"), r(1, "b")]).is_err());
    }
}
