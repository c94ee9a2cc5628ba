//! Quorum by ping targets under attack, with real `hb-user` processes in
//! namespaces: an ICMP flood at the holder moves nothing, forged echo replies
//! do not keep an isolated node out of FAULT, and an IPv6 target counts.
//! Forged and flood frames are sent from the client namespace through a
//! packet socket, built by etherparse.

use etherparse::PacketBuilder;
use hb_tests::cluster::{test_lan, Cluster, NodeState, PingRow, BOUND, CLIENT_IP, FAST, IFACE};
use std::{
    fs::File,
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(10);
/// The flood's pace: far above any ping rate, below what starves a 2-core
/// machine's heartbeats (the benchmark floods at 170 kpps).
const FLOOD_PPS: u64 = 40_000;

/// Node `id`'s ping row for `target` (`hb-user status --json`).
fn ping_row(c: &Cluster, id: u32, target: &str) -> PingRow {
    let r = c.report(id).expect("hb-user status");
    r.node
        .as_ref()
        .and_then(|n| n.ping.iter().find(|p| p.target == target).cloned())
        .unwrap_or_else(|| panic!("no ping row for {target}: {r:?}"))
}

/// Runs `f` on a thread of its own inside namespace `ns`.
fn spawn_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let file = File::open(format!("/var/run/netns/{ns}")).expect("open the namespace");
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// A send-only packet socket on `dev` (protocol 0: it receives nothing), in
/// the calling thread's namespace.
fn packet_sender(dev: &str) -> OwnedFd {
    let name = std::ffi::CString::new(dev).unwrap();
    // SAFETY: if_nametoindex reads a C string; the socket is owned at once;
    // sockaddr_ll is zeroed, then filled.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        assert_ne!(ifindex, 0, "no interface {dev}");
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        let rc = libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        fd
    }
}

/// Sends one frame; true when the kernel took it.
fn send(fd: &OwnedFd, frame: &[u8]) -> bool {
    // SAFETY: frame is a valid buffer for the call.
    unsafe {
        libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) == frame.len() as isize
    }
}

/// An Ethernet/IPv4 ICMP echo frame (reply or request) with `payload`.
fn echo_frame(
    macs: ([u8; 6], [u8; 6]),
    ips: (Ipv4Addr, Ipv4Addr),
    reply: bool,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(macs.0, macs.1).ipv4(ips.0.octets(), ips.1.octets(), 64);
    let b = if reply {
        b.icmpv4_echo_reply(id, seq)
    } else {
        b.icmpv4_echo_request(id, seq)
    };
    let mut f = Vec::new();
    b.write(&mut f, payload).expect("an echo frame");
    f
}

/// An echo request in `frame` (Ethernet, IPv4 without options) from `src`
/// to `dst`: its id, seq and payload.
fn echo_request_in(frame: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Option<(u16, u16, Vec<u8>)> {
    let ip = frame.get(14..)?;
    let ok = frame.get(12..14)? == [8, 0]
        && ip.first()? == &0x45
        && ip.get(9)? == &1
        && ip.get(12..16)? == src.octets()
        && ip.get(16..20)? == dst.octets();
    let icmp = ip.get(20..)?;
    if !ok || icmp.len() < 8 || icmp[0] != 8 {
        return None;
    }
    let at = |i: usize| u16::from_be_bytes([icmp[i], icmp[i + 1]]);
    Some((at(4), at(6), icmp[8..].to_vec()))
}

/// Sets its flag when dropped: a failing assertion stops the sending threads
/// too (each is bounded in time anyway).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A random-looking u64 stream (xorshift), seeded: enough for junk ids.
fn junk(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn an_icmp_flood_at_the_holder_moves_nothing() {
    let ping = CLIENT_IP.to_string();
    let mut args = FAST.to_vec();
    args.extend(["--ping", &ping]);
    let (_g, mut c) = test_lan("pf", &[100, 90], &args, 1);
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    assert!(
        c.wait_for(BOUND, |c| ping_row(c, 1, &ping).reachable),
        "{}",
        c.logs()
    );
    let (n1_mac, n1_ip) = (c.node(1).mac, c.node(1).ip);
    let client_mac = c.lab.mac(&c.client, IFACE).unwrap();
    // Node 1's real request, as anyone on the path sees it: its id and a seq.
    let req = c
        .lab
        .capture(&c.client, IFACE, BOUND, |f| {
            echo_request_in(f, n1_ip, CLIENT_IP).is_some()
        })
        .unwrap()
        .expect("node 1 pings the client");
    let (id, seq, token) = echo_request_in(&req, n1_ip, CLIENT_IP).unwrap();
    // A mix: echo requests to the node, replies with other ids (the
    // kernel's filter drops both), and replies with node 1's id and recent seqs
    // whose token is wrong in one byte (these reach the pinger, which must
    // reject them without losing the target's true replies).
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    let frames: Vec<Vec<u8>> = (0..256u16)
        .map(|i| {
            let macs = (client_mac, n1_mac);
            let ips = (CLIENT_IP, n1_ip);
            let other = (junk(&mut seed) as u16) | 1;
            let other = if other == id { other ^ 2 } else { other };
            match i % 8 {
                0..=2 => echo_frame(macs, ips, false, other, i, b"flood-request"),
                3..=5 => echo_frame(macs, ips, true, other, i, &token),
                _ => {
                    let mut forged = if token.is_empty() {
                        vec![0xee; 16]
                    } else {
                        token.clone()
                    };
                    let at = usize::from(i) % forged.len();
                    forged[at] ^= 0x80;
                    echo_frame(macs, ips, true, id, seq.wrapping_add(i % 32), &forged)
                }
            }
        })
        .collect();
    let before = ping_row(&c, 1, &ping).rejected;
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_panic = StopOnDrop(stop.clone());
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, sent) = (stop.clone(), sent.clone());
        spawn_in(&c.client, move || {
            let fd = packet_sender(IFACE);
            let start = Instant::now();
            let mut n = 0u64;
            // Bounded in time, paced (so bounded in count) in bursts of 100.
            while start.elapsed() < FLOOD && !stop.load(Ordering::Relaxed) {
                for f in frames.iter().cycle().skip(n as usize % 256).take(100) {
                    if send(&fd, f) {
                        n += 1;
                    }
                }
                sent.store(n, Ordering::Relaxed);
                let due = start + Duration::from_micros(n * 1_000_000 / FLOOD_PPS);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        })
    };
    // While it lasts: node 1 alone holds, and its controller is not held up
    // (it writes its status file every second).
    let start = Instant::now();
    let mut failure = None;
    while start.elapsed() < FLOOD && failure.is_none() {
        let holders = c.holders();
        let s = c.status_of(1);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let age = now_ms.saturating_sub(s.as_ref().map_or(0, |s| s.updated_unix_ms));
        let state = s.map(|s| s.state);
        if holders != [1] || state != Some(NodeState::Master) || age > 3000 {
            failure = Some(format!(
                "at {:?}: holders {holders:?}, node 1 {state:?} (status {age} ms old)",
                start.elapsed(),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    flood.join().expect("the flood thread");
    if let Some(f) = failure {
        panic!("{f}\n{}", c.logs());
    }
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent >= 100_000, "only {sent} frames sent");
    let row = ping_row(&c, 1, &ping);
    let rejected = row.rejected.saturating_sub(before);
    eprintln!("{sent} frames sent, {rejected} forged replies rejected (figures, not bounds)");
    assert!(
        rejected >= 1000,
        "the forged replies reached the pinger: {row:?}"
    );
    assert!(row.reachable, "{row:?}");
    assert_eq!(c.state_of(2), Some(NodeState::Backup));
    assert!(c.is_running(1) && c.is_running(2), "{}", c.logs());
}

#[test]
fn forged_replies_do_not_keep_an_isolated_node_out_of_fault() {
    // Node 1 pings an address nobody has (its frames go to a MAC nobody has,
    // so the bridge floods them, and the client sees them); node 2 pings the
    // client. Node 2 outranks node 1 (it reaches a target) and holds.
    const NOBODY: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 250);
    const NOBODY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x50];
    let (_g, mut c) = test_lan("ps", &[100, 90], FAST, 1);
    c.nodes[0].extra = vec!["--ping".into(), NOBODY.to_string()];
    c.nodes[1].extra = vec!["--ping".into(), CLIENT_IP.to_string()];
    c.exec(
        1,
        &[
            "ip",
            "neigh",
            "replace",
            &NOBODY.to_string(),
            "lladdr",
            "02:00:00:00:02:50",
            "dev",
            IFACE,
            "nud",
            "permanent",
        ],
    )
    .unwrap();
    c.start_all().unwrap();
    c.expect_settled(2, BOUND);
    let (n1_mac, n1_ip) = (c.node(1).mac, c.node(1).ip);
    // The forger answers each of node 1's requests at once in NOBODY's name,
    // with the right id and seq, the payload wrong in one byte.
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_panic = StopOnDrop(stop.clone());
    let forged = Arc::new(AtomicU64::new(0));
    let forger = {
        let (stop, forged) = (stop.clone(), forged.clone());
        spawn_in(&c.client, move || {
            let capture = hb_tests::netns::all_frames_socket(IFACE, true).expect("capture");
            let tx = packet_sender(IFACE);
            let start = Instant::now();
            let mut buf = [0u8; 2048];
            let mut n = 0u64;
            while start.elapsed() < Duration::from_secs(30) && !stop.load(Ordering::Relaxed) {
                let mut fds = [nix::poll::PollFd::new(
                    capture.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(20u16));
                // At most 64 frames a turn, so the time bound holds.
                for _ in 0..64 {
                    // SAFETY: buf outlives the call.
                    let got = unsafe {
                        libc::recv(capture.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                    };
                    if got <= 0 {
                        break;
                    }
                    let Some((id, seq, payload)) =
                        echo_request_in(&buf[..got as usize], n1_ip, NOBODY)
                    else {
                        continue;
                    };
                    let mut p = if payload.is_empty() {
                        vec![0xee; 16]
                    } else {
                        payload
                    };
                    let at = n as usize % p.len();
                    p[at] ^= 0x01;
                    let f = echo_frame((NOBODY_MAC, n1_mac), (NOBODY, n1_ip), true, id, seq, &p);
                    if send(&tx, &f) {
                        n += 1;
                        forged.store(n, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    assert!(
        c.wait_for(BOUND, |_| forged.load(Ordering::Relaxed) >= 10),
        "the forger saw no request from node 1\n{}",
        c.log(1)
    );
    // Cut the nodes off from each other (the client still reaches both):
    // node 1 hears no peer and reaches no target.
    c.partition(&[("n1e0", Some("n2e0"))]).unwrap();
    let cut = forged.load(Ordering::Relaxed);
    let fault = c.wait_for(BOUND, |c| c.state_of(1) == Some(NodeState::Fault));
    let mut steady = None;
    if fault {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) && steady.is_none() {
            let (s1, holders) = (c.state_of(1), c.holders());
            if s1 != Some(NodeState::Fault) || holders != [2] {
                steady = Some(format!(
                    "at {:?}: node 1 {s1:?}, holders {holders:?}",
                    start.elapsed()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let row = ping_row(&c, 1, &NOBODY.to_string());
    stop.store(true, Ordering::Relaxed);
    forger.join().expect("the forger thread");
    assert!(
        fault,
        "node 1 is {:?} with forged replies, not FAULT: {row:?}\n{}",
        c.state_of(1),
        c.log(1)
    );
    if let Some(s) = steady {
        panic!("{s}\n{}", c.logs());
    }
    let after = forged.load(Ordering::Relaxed) - cut;
    assert!(after >= 20, "only {after} forged replies after the cut");
    assert!(!row.reachable, "{row:?}");
    assert!(
        row.rejected >= 20,
        "the forged replies are counted: {row:?}"
    );
}

#[test]
fn an_ipv6_target_counts_for_quorum() {
    let target = "fd00:203::200"; // the client
    let mut args = FAST.to_vec();
    args.extend(["--ping", target]);
    let _g = hb_tests::cluster::exclusive();
    hb_tests::require_root("namespace tests (XDP, netlink, nftables)");
    let mut c = Cluster::new_ipv6("p6", &[100, 90], &args).unwrap();
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    assert!(
        c.wait_for(BOUND, |c| ping_row(c, 1, target).reachable),
        "{}",
        c.logs()
    );
    assert_eq!(ping_row(&c, 1, target).rejected, 0);
    // Node 1 cut off from everything: no peer, no target.
    c.partition(&[("n1e0", None)]).unwrap();
    assert!(
        c.wait_for(BOUND, |c| c.state_of(1) == Some(NodeState::Fault)),
        "{}",
        c.log(1)
    );
    c.expect_single_holder(2, BOUND);
    assert!(!ping_row(&c, 1, target).reachable);
    assert!(ping_row(&c, 2, target).reachable);
}
