//! `cargo xtask bench-xdp`: ns per packet of hb's XDP program (wire format v2),
//! by traffic class, against an empty XDP program run in the same process
//! (BPF_PROG_TEST_RUN).
//!
//! Two configurations: the bench's own (peer 2, whose session is adopted, and
//! peer 3, not heard yet; one VIP; no lease), and "as deployed": the program
//! as `hb-user run` leaves it (node id, two peers, two VIPs, a holder lease,
//! our session in `sent`, the controller registered in `owner`, our own entry
//! for id collisions, the peer established). Rows of the second set are named
//! "as deployed: ...".
//!
//! Usage: bench-xdp <repeat> [--write <BENCHMARKS.md>]

use anyhow::{Context, Result};
use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use hb_common::{
    maps::Sent,
    wire::DEFAULT_PORT,
    wire2::{self, Head},
    Key,
};
use hb_tests::{
    bench::flood::Rng,
    frames::{self, arp, arp_request, key, Ipv4Frame, Ipv6Frame},
};
use hb_user::loader::{DataPlane, Settings};
use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

const ROUNDS: usize = 11;
/// Accepted messages measured one run each.
const SINGLE_RUNS: u64 = 20_000;

/// This node, its peers, the sessions (ours as in `sent`, the peer's adopted
/// one, and another one of the peer's, not proven fresh).
const OUR_NODE: u32 = 1;
const PEER: u32 = 2;
const OTHER_PEER: u32 = 3;
const OURS: u64 = 0x0b0b_5e55_0000_0001;
const PS: u64 = 0x0a0a_5e55_0000_0002;
const PS2: u64 = 0x0a0a_5e55_0000_0003;
/// Our last seq sent and the low end of the recent ones.
const SENT_SEQ: u64 = 1_000;
const RECENT_LO: u64 = 900;
const WRONG_KEY: Key = Key { k0: 9, k1: 9 };

/// (name, ns per packet, ratio to the empty program)
type Row = (String, f64, f64);

/// The kernel's per-run average for one test run of `repeat` runs, in ns.
fn ns_once(prog: &Xdp, frame: &[u8], repeat: u32) -> Result<f64> {
    let opts = TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..Default::default()
    };
    Ok(prog.test_run(opts)?.duration.as_nanos() as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median ns per run of `prog` and the median of its ratio to the empty program,
/// each round running the empty program right before it: on a shared machine the
/// speed drifts between rounds, and a ratio within one round cancels the drift.
fn ns_paired(prog: &Xdp, empty: &Xdp, frame: &[u8], repeat: u32) -> Result<(f64, f64)> {
    let (mut ns, mut ratio) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let base = ns_once(empty, frame, repeat)?;
        let t = ns_once(prog, frame, repeat)?;
        ns.push(t);
        ratio.push(t / base.max(1.0));
    }
    Ok((median(ns), median(ratio)))
}

/// Mean of single runs, each with its own frame (so each can be accepted).
fn ns_single_runs(prog: &Xdp, frames: &[Vec<u8>]) -> Result<f64> {
    let mut total = 0.0;
    for f in frames {
        let opts = TestRunOptions {
            data_in: Some(f),
            repeat: 1,
            ..Default::default()
        };
        total += prog.test_run(opts)?.duration.as_nanos() as f64;
    }
    Ok(total / frames.len() as f64)
}

/// A message of PEER in its session PS at `seq`, echoing our session: the
/// first one adopts PS, every later one with a higher seq is life.
fn hb(seq: u64) -> Head {
    frames::head(PEER, OUR_NODE, PS, seq, (OURS, SENT_SEQ))
}

fn v4(payload: &[u8]) -> Vec<u8> {
    Ipv4Frame::udp(DEFAULT_PORT, payload).build()
}

fn v6(payload: &[u8]) -> Vec<u8> {
    Ipv6Frame::udp(DEFAULT_PORT, payload).build()
}

/// `frame` (IPv4, no options) sent to `dst` instead, header checksum redone.
fn to_addr(mut frame: Vec<u8>, dst: Ipv4Addr) -> Vec<u8> {
    frame[30..34].copy_from_slice(&dst.octets());
    frame[24..26].fill(0);
    let sum = frames::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
    frame
}

/// A Linux-HA Heartbeat status message, as it sends them to UDP 694.
fn linux_ha_status() -> Vec<u8> {
    b">>>\nt=status\nst=active\ndt=7530\nprotocol=1\nsrc=node1\nseq=1a\nhg=4d2b1234\nts=4d2b1256\nld=0.00 0.01 0.05 1/123 4567\nttl=3\nauth=1 6b8f0c2e9a41d7735c0b\n<<<\n".to_vec()
}

/// Loads and configures hb's program for node 1 with `peers` and `vips`, our
/// session published in `sent`, and PEER's session PS adopted (its message
/// at seq 1 run once). Returns the data plane and the next fresh seq.
fn plane(peers: Vec<u32>, vips: Vec<Ipv4Addr>, quiet: Duration) -> Result<(DataPlane, u64)> {
    let mut dp = DataPlane::load()?;
    dp.configure(&Settings {
        cluster_id: frames::CLUSTER,
        port: DEFAULT_PORT,
        pass_heartbeats: false,
        key: key(),
        node_id: OUR_NODE,
        peers,
        mac: frames::DST_MAC,
        vips_v4: vips,
        vips_v6: Vec::new(),
        quiet,
    })?;
    dp.sent_map()?.set(Sent {
        session: OURS,
        seq: SENT_SEQ,
        recent_lo: RECENT_LO,
    });
    ns_single_runs(dp.program()?, &[v4(&frames::message(&hb(1)))])?;
    let p = dp.peer(PEER)?.context("no entry for the peer")?;
    anyhow::ensure!(
        (p.session, p.seq, p.accepted) == (PS, 1, 1),
        "the peer's session was not adopted: {p:?}"
    );
    Ok((dp, 2))
}

/// Paired rows of `prog` for each case, named with `prefix`.
fn paired_rows(
    prog: &Xdp,
    empty: &Xdp,
    prefix: &str,
    cases: &[(&str, &[u8])],
    repeat: u32,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (name, frame) in cases {
        let (ns, ratio) = ns_paired(prog, empty, frame, repeat)?;
        rows.push((format!("{prefix}{name}"), ns, ratio));
    }
    Ok(rows)
}

/// The accepted path. A message counts once: after the first run of a repeated
/// test run the same frame is a replay. So accepted messages run one at a time,
/// each with a fresh seq (from `first`). A single run pays timer overhead and a
/// cold copy of the frame that a repeated run spreads out; the same frames
/// replayed (refused at the session check, after the MAC) pay the same, so
/// their difference is the cost of accepting (the session update, the peer's
/// entry and `seen` slot, the message copy), which is added to the repeated
/// replay's `replayed_ns`.
fn accepted_rows(
    prog: &Xdp,
    prefix: &str,
    first: u64,
    replayed_ns: f64,
    base: f64,
    single_base: f64,
) -> Result<Vec<Row>> {
    let fresh: Vec<Vec<u8>> = (first..first + SINGLE_RUNS)
        .map(|seq| v4(&frames::message(&hb(seq))))
        .collect();
    let accepted = ns_single_runs(prog, &fresh)?;
    let replayed = ns_single_runs(prog, &fresh)?;
    let update = replayed_ns + (accepted - replayed);
    Ok(vec![
        (
            format!("{prefix}valid heartbeat, accepted (single runs)"),
            accepted,
            accepted / single_base,
        ),
        (
            format!("{prefix}same frames replayed (single runs)"),
            replayed,
            replayed / single_base,
        ),
        (
            format!("{prefix}valid heartbeat, accepted (replayed + cost of the update)"),
            update,
            update / base,
        ),
    ])
}

fn main() -> Result<()> {
    hb_tests::require_root("bench-xdp");
    let mut args = std::env::args().skip(1);
    let repeat: u32 = args
        .next()
        .context("usage: bench-xdp <repeat> [--write FILE]")?
        .parse()?;
    let write: Option<PathBuf> = match args.next().as_deref() {
        Some("--write") => Some(args.next().context("--write needs a file")?.into()),
        _ => None,
    };

    let empty_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bpf/empty.bpf.o");
    let mut empty = Ebpf::load_file(empty_path)
        .with_context(|| format!("{empty_path}: run cargo xtask build-ebpf"))?;
    let empty_prog: &mut Xdp = empty
        .program_mut("empty")
        .context("no program")?
        .try_into()?;
    empty_prog.load()?;
    let empty_prog: &Xdp = empty_prog;

    let vip = Ipv4Addr::new(10, 9, 0, 100);
    let vip2 = Ipv4Addr::new(10, 9, 0, 101);

    // Traffic that is not hb's.
    let mut rng = Rng(0x694);
    let udp = Ipv4Frame::udp(53, &[0u8; wire2::LEN]).build();
    let udp6 = Ipv6Frame::udp(53, &[0u8; wire2::LEN]).build();
    let tcp = Ipv4Frame {
        proto: 6,
        ..Ipv4Frame::udp(80, &[0u8; 64])
    }
    .build();
    let icmp6 = Ipv6Frame::neighbour_solicitation().build();
    let junk694 = v4(&rng.bytes(100));
    let linux_ha = v4(&linux_ha_status());
    // An ARP request for an address that is not a VIP: a filter bit test, no lookup.
    let arp_other = arp_request();
    let arp_conflict = arp(1, [0x02, 0, 0, 0, 0, 0x66], vip.octets(), frames::DST_IP);
    let to_vip = to_addr(Ipv4Frame::udp(80, &[0u8; 64]).build(), vip);
    // hb messages: each refused at its own check, or passed.
    let forged = v4(&wire2::encode(&hb(1), &frames::body(PEER), &WRONG_KEY));
    let forged6 = v6(&wire2::encode(&hb(1), &frames::body(PEER), &WRONG_KEY));
    let replayed = v4(&frames::message(&hb(1)));
    let stale = v4(&frames::message(&frames::head(
        PEER,
        OUR_NODE,
        PS2,
        1,
        (0, 0),
    )));
    let hello = v4(&frames::message(&frames::head(
        OTHER_PEER,
        OUR_NODE,
        0x33,
        1,
        (0, 0),
    )));
    let elsewhere = v4(&frames::message(&frames::head(PEER, 5, PS, 2, (0, 0))));
    let v1 = v4(&frames::v1_heartbeat(PEER, 1, 1, false));

    let base = median(
        (0..ROUNDS)
            .map(|_| ns_once(empty_prog, &udp, repeat))
            .collect::<Result<_>>()?,
    );
    let single_base = ns_single_runs(empty_prog, &vec![udp.clone(); SINGLE_RUNS as usize])?;
    let mut rows: Vec<Row> = vec![("empty XDP program (baseline)".into(), base, 1.0)];
    eprintln!("bench-xdp: {repeat} runs x {ROUNDS} rounds per case");

    // The bench's own configuration: peer 2 established, peer 3 not heard yet
    // (its first contact is the handshake row); one VIP; no lease.
    let (dp, next) = plane(vec![PEER, OTHER_PEER], vec![vip], Duration::from_millis(50))?;
    let prog = dp.program()?;
    let cases: [(&str, &[u8]); 15] = [
        ("non-IP frame (ARP)", &arp_other),
        ("ARP for a VIP from a foreign MAC", &arp_conflict),
        ("non-heartbeat UDP (port 53)", &udp),
        ("non-heartbeat IPv6 UDP (port 53)", &udp6),
        ("TCP (port 80)", &tcp),
        ("ICMPv6 (neighbour solicitation)", &icmp6),
        ("UDP 694, not hb: 100 random bytes", &junk694),
        ("UDP 694, not hb: Linux-HA status message", &linux_ha),
        ("hb message to another node (passed)", &elsewhere),
        ("v1 heartbeat of a configured peer (old_version)", &v1),
        ("first contact (handshake: echoed)", &hello),
        ("forged heartbeat (bad MAC)", &forged),
        ("forged heartbeat over IPv6 (bad MAC)", &forged6),
        ("wrong session, not proven fresh (stale_session)", &stale),
        ("replayed heartbeat (MAC ok, seq old)", &replayed),
    ];
    rows.extend(paired_rows(prog, empty_prog, "", &cases, repeat)?);
    let replayed_ns = rows.last().expect("rows").1;
    rows.push(("empty XDP program (single runs)".into(), single_base, 1.0));
    rows.extend(accepted_rows(
        prog,
        "",
        next,
        replayed_ns,
        base,
        single_base,
    )?);

    // As deployed: what `hb-user run` leaves (its default quiet: half of
    // dead-after 500 ms), holding the VIPs.
    let (mut dp, next) = plane(
        vec![PEER, OTHER_PEER],
        vec![vip, vip2],
        Duration::from_millis(250),
    )?;
    dp.set_lease(Duration::from_nanos(hb_tests::monotonic_ns()) + Duration::from_secs(3600))?;
    dp.set_owner(OUR_NODE, OURS, std::process::id())?;
    anyhow::ensure!(
        dp.peer(OUR_NODE)?.is_some_and(|p| p.slot == u32::MAX),
        "no entry for our own id"
    );
    let prog = dp.program()?;
    let cases: [(&str, &[u8]); 8] = [
        ("non-heartbeat UDP (port 53)", &udp),
        ("TCP (port 80)", &tcp),
        ("non-IP frame (ARP)", &arp_other),
        ("UDP to a VIP (lease held)", &to_vip),
        ("UDP 694, not hb: Linux-HA status message", &linux_ha),
        ("forged heartbeat (bad MAC)", &forged),
        ("wrong session, not proven fresh (stale_session)", &stale),
        ("replayed heartbeat (MAC ok, seq old)", &replayed),
    ];
    rows.extend(paired_rows(
        prog,
        empty_prog,
        "as deployed: ",
        &cases,
        repeat,
    )?);
    let replayed_ns = rows.last().expect("rows").1;
    rows.extend(accepted_rows(
        prog,
        "as deployed: ",
        next,
        replayed_ns,
        base,
        single_base,
    )?);
    let stats = dp.stats()?;
    anyhow::ensure!(
        stats.fenced_ip == 0 && stats.bad_length == 0,
        "the deployed data plane refused what it should not: {stats:?}"
    );

    let mut table = String::from("| traffic | ns/packet | x empty |\n|---|---:|---:|\n");
    for (name, ns, ratio) in &rows {
        table += &format!("| {name} | {ns:.1} | {ratio:.2} |\n");
    }
    let header = format!(
        "Measured by `cargo xtask bench-xdp` on {} ({repeat} runs x {ROUNDS} rounds, each against the empty program run just before it; medians of ns and of the ratio; accepted heartbeats: {SINGLE_RUNS} single runs, mean, against as many single runs of the empty program). Wire format v2. \"as deployed\": configured as `hb-user run` leaves it (two peers, two VIPs, the holder lease, our session, our own entry).\n\n",
        hb_tests::bench::host::machine()
    );
    print!("{header}{table}");
    if let Some(path) = write {
        let section = format!("<!-- bench-xdp:start -->\n{header}{table}<!-- bench-xdp:end -->");
        let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n\n## Data-plane cost\n\n<!-- bench-xdp:start -->\n<!-- bench-xdp:end -->\n".into());
        let (start, end) = (
            doc.find("<!-- bench-xdp:start -->"),
            doc.find("<!-- bench-xdp:end -->"),
        );
        let updated = match (start, end) {
            (Some(s), Some(e)) => format!(
                "{}{section}{}",
                &doc[..s],
                &doc[e + "<!-- bench-xdp:end -->".len()..]
            ),
            _ => format!("{doc}\n{section}\n"),
        };
        std::fs::write(&path, updated)?;
        eprintln!("bench-xdp: wrote {}", path.display());
    }
    Ok(())
}
