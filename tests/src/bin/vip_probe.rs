//! `hb-vip-probe NETNS IFACE VIP PERIOD_MS`: the client probe of
//! `cargo xtask vm-deploy`, which has no probe of its own. Pings VIP from the
//! namespace every PERIOD_MS (probe.rs) and prints each echo reply as it comes,
//! as `SEQ MAC`, until killed or its stdin closes: the caller stamps the lines
//! and asks who answered when.

use anyhow::{Context, Result};
use hb_tests::{netns::mac_str, probe::Probe};
use std::{io::Write, net::Ipv4Addr, time::Duration};

fn main() {
    if let Err(e) = run() {
        eprintln!("hb-vip-probe: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [netns, iface, vip, period] = args.as_slice() else {
        anyhow::bail!("usage: hb-vip-probe NETNS IFACE VIP PERIOD_MS");
    };
    let vip: Ipv4Addr = vip.parse().context("VIP")?;
    let period = Duration::from_millis(period.parse().context("PERIOD_MS")?);
    let probe = Probe::start(netns, iface, vip, period)?;
    // The caller going away closes our stdin: stop then, not only on a signal.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let mut printed = 0;
    let mut out = std::io::stdout().lock();
    loop {
        std::thread::sleep(period.min(Duration::from_millis(50)));
        let replies = probe.snapshot().replies;
        for r in &replies[printed..] {
            writeln!(out, "{} {}", r.seq, mac_str(r.mac))?;
        }
        out.flush()?;
        printed = replies.len();
    }
}
