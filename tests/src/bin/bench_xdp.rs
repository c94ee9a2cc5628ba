//! `cargo xtask bench-xdp`: ns per packet of hb's XDP program, by traffic class,
//! against an empty XDP program run in the same process (BPF_PROG_TEST_RUN).
//!
//! Usage: bench-xdp <repeat> [--write <BENCHMARKS.md>]

use anyhow::{Context, Result};
use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use hb_common::{wire::DEFAULT_PORT, Key};
use hb_tests::frames::{self, arp, arp_request, heartbeat, key, Ipv4Frame, Ipv6Frame};
use hb_user::loader::{DataPlane, Settings};
use std::{net::Ipv4Addr, path::PathBuf};

const ROUNDS: usize = 11;

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

/// Mean of `n` single runs, each with its own frame (so each can be accepted).
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

    let vip = Ipv4Addr::new(10, 9, 0, 100);
    let mut dp = DataPlane::load()?;
    dp.configure(&Settings {
        cluster_id: 7,
        port: DEFAULT_PORT,
        pass_heartbeats: false,
        key: key(),
        peers: vec![2],
        mac: frames::DST_MAC,
        vips_v4: vec![vip],
        quiet: std::time::Duration::from_millis(50),
    })?;
    let hb = dp.program()?;

    let valid = |seq| Ipv4Frame::udp(DEFAULT_PORT, &heartbeat(2, 1, seq).encode(&key())).build();
    let forged = Ipv4Frame::udp(
        DEFAULT_PORT,
        &heartbeat(2, 1, 1).encode(&Key { k0: 9, k1: 9 }),
    )
    .build();
    let udp = Ipv4Frame::udp(53, &[0u8; 36]).build();
    let udp6 = Ipv6Frame::udp(53, &[0u8; 36]).build();
    let icmp6 = Ipv6Frame::neighbour_solicitation().build();
    let forged6 = Ipv6Frame::udp(
        DEFAULT_PORT,
        &heartbeat(2, 1, 1).encode(&Key { k0: 9, k1: 9 }),
    )
    .build();
    // An ARP request for an address that is not a VIP: one VIPS lookup, a miss.
    let arp_other = arp_request();
    let arp_conflict = arp(1, [0x02, 0, 0, 0, 0, 0x66], vip.octets(), frames::DST_IP);

    let base = median(
        (0..ROUNDS)
            .map(|_| ns_once(empty_prog, &udp, repeat))
            .collect::<Result<_>>()?,
    );
    // (name, ns per packet, ratio to the empty program)
    let mut rows: Vec<(&str, f64, f64)> = vec![("empty XDP program (baseline)", base, 1.0)];
    eprintln!("bench-xdp: {repeat} runs x {ROUNDS} rounds per case");
    for (name, frame) in [
        ("non-IP frame (ARP)", &arp_other),
        ("ARP for a VIP from a foreign MAC", &arp_conflict),
        ("non-heartbeat UDP (port 53)", &udp),
        ("non-heartbeat IPv6 UDP (port 53)", &udp6),
        ("ICMPv6 (neighbour solicitation)", &icmp6),
        ("forged heartbeat (bad MAC)", &forged),
        ("forged heartbeat over IPv6 (bad MAC)", &forged6),
        ("replayed heartbeat (MAC ok, seq old)", &valid(1)),
    ] {
        let (ns, ratio) = ns_paired(hb, empty_prog, frame, repeat)?;
        rows.push((name, ns, ratio));
    }
    let replayed_repeat = rows.last().expect("rows").1;
    // Accepted heartbeats need a fresh seq each run, so they are run one at a time.
    // A single run pays timer overhead and a cold copy of the frame that a repeated
    // run spreads out; the same frames replayed (refused at the last check) pay the
    // same, so their difference is the cost of accepting: the peer update.
    let n = 20_000u64;
    let fresh: Vec<Vec<u8>> = (2..2 + n).map(valid).collect();
    let single_base = ns_single_runs(empty_prog, &vec![udp.clone(); n as usize])?;
    let accepted = ns_single_runs(hb, &fresh)?;
    let replayed = ns_single_runs(hb, &fresh)?;
    rows.push(("empty XDP program (single runs)", single_base, 1.0));
    rows.push((
        "valid heartbeat, accepted (single runs)",
        accepted,
        accepted / single_base,
    ));
    rows.push((
        "same frames replayed (single runs)",
        replayed,
        replayed / single_base,
    ));
    let update = replayed_repeat + (accepted - replayed);
    rows.push((
        "valid heartbeat, accepted (replayed + cost of the update)",
        update,
        update / base,
    ));

    let mut table = String::from("| traffic | ns/packet | x empty |\n|---|---:|---:|\n");
    for (name, ns, ratio) in &rows {
        table += &format!("| {name} | {ns:.1} | {ratio:.2} |\n");
    }
    let header = format!(
        "Measured by `cargo xtask bench-xdp` on {} ({repeat} runs x {ROUNDS} rounds, each against the empty program run just before it; medians of ns and of the ratio; accepted heartbeats: {n} single runs, mean).\n\n",
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
