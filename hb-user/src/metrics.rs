//! `--metrics ADDR:PORT`: Prometheus text format on `/metrics`, served by a
//! small hyper server on the controller's runtime. The controller sets the
//! values (each second and at every transition); hooks record their runs
//! here; the sender thread's send gaps are read from its atomics at scrape
//! time, so nothing on the sender's path takes a lock.

use crate::beat::Gaps;
use anyhow::{Context, Result};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, MetricType},
    registry::Registry,
};
use std::{
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc, OnceLock},
    time::Duration,
};
use tracing::warn;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupState {
    pub group: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Transition {
    pub group: String,
    pub to: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Peer {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLink {
    pub peer: String,
    pub link: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Packets {
    pub link: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Fenced {
    pub link: String,
    pub family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Hook {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookRun {
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Check {
    pub check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WitnessDown {
    pub down: String,
}

/// An election: a group's name, or its sync group's.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Election {
    pub group: String,
}

type FGauge = Gauge<f64, AtomicU64>;

/// Hook run times: 1 ms to 10 s.
fn hook_buckets() -> Histogram {
    Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0])
}

pub struct Metrics {
    registry: Registry,
    pub group_state: Family<GroupState, Gauge>,
    pub transitions: Family<Transition, Counter>,
    pub peer_up: Family<Peer, Gauge>,
    pub peer_silence: Family<PeerLink, FGauge>,
    pub peer_accepted: Family<PeerLink, Counter>,
    pub packets: Family<Packets, Counter>,
    pub fenced: Family<Fenced, Counter>,
    pub lease: FGauge,
    pub hook_runs: Family<HookRun, Counter>,
    pub hook_seconds: Family<Hook, Histogram, fn() -> Histogram>,
    pub check_healthy: Family<Check, Gauge>,
    pub takeover_seconds: Histogram,
    pub witness_reachable: Gauge,
    pub witness_lease: FGauge,
    pub witness_key: Family<Election, Gauge>,
    pub witness_down: Family<WitnessDown, Gauge>,
    pub witness_wait_seconds: Histogram,
}

/// The node's metrics, once `--metrics` is set (hooks record through it).
static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();

pub fn get() -> Option<&'static Arc<Metrics>> {
    METRICS.get()
}

/// A hook ran (`kind`: notify, fence, check): its outcome and how long.
pub fn hook_ran(kind: &str, outcome: &str, took: Duration) {
    if let Some(m) = get() {
        let kind = kind.to_string();
        m.hook_runs
            .get_or_create(&HookRun {
                kind: kind.clone(),
                outcome: outcome.to_string(),
            })
            .inc();
        m.hook_seconds
            .get_or_create(&Hook { kind })
            .observe(took.as_secs_f64());
    }
}

/// Sets an absolute count (the kernel's) on a counter that only goes up.
pub fn count_to(c: &Counter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

/// The sender thread's gaps between heartbeats, read at each scrape.
#[derive(Debug)]
struct SendGaps(Arc<Gaps>);

impl Collector for SendGaps {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (buckets, sum, count) = self.0.read();
        let h = GapHistogram {
            buckets,
            sum,
            count,
        };
        let metric = encoder.encode_descriptor(
            "heartbeat_send_gap_seconds",
            "Time between consecutive heartbeats sent (the sender thread's clock).",
            None,
            MetricType::Histogram,
        )?;
        h.encode(metric)
    }
}

#[derive(Debug)]
struct GapHistogram {
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl EncodeMetric for GapHistogram {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum,
            self.count,
            &self.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Metrics {
    fn new(gaps: Arc<Gaps>) -> Self {
        let mut r = Registry::with_prefix("hb");
        let m = Metrics {
            group_state: Family::default(),
            transitions: Family::default(),
            peer_up: Family::default(),
            peer_silence: Family::default(),
            peer_accepted: Family::default(),
            packets: Family::default(),
            fenced: Family::default(),
            lease: FGauge::default(),
            hook_runs: Family::default(),
            hook_seconds: Family::new_with_constructor(hook_buckets),
            check_healthy: Family::default(),
            // Takeovers: a death notice takes ~1 ms, a silence dead-after.
            takeover_seconds: Histogram::new([
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ]),
            witness_reachable: Gauge::default(),
            witness_lease: FGauge::default(),
            witness_key: Family::default(),
            witness_down: Family::default(),
            // Waits for the key: none, or up to the witness TTL.
            witness_wait_seconds: Histogram::new([
                0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0,
            ]),
            registry: Registry::default(),
        };
        r.register(
            "group_state",
            "1 for each group's current state (INIT, BACKUP, MASTER, FAULT), 0 for the others.",
            m.group_state.clone(),
        );
        r.register(
            "group_transitions",
            "State changes by group, new state and reason.",
            m.transitions.clone(),
        );
        r.register(
            "peer_up",
            "1 while the peer is heard within dead-after.",
            m.peer_up.clone(),
        );
        r.register(
            "peer_last_heard_seconds",
            "Seconds since the peer was last heard on the link (-1: never).",
            m.peer_silence.clone(),
        );
        r.register(
            "peer_accepted_heartbeats",
            "Heartbeats from the peer the XDP program accepted on the link.",
            m.peer_accepted.clone(),
        );
        r.register(
            "xdp_packets",
            "Packets the XDP program saw, by link and outcome (refusals by reason).",
            m.packets.clone(),
        );
        r.register(
            "fence_drops",
            "Packets for a VIP the XDP program dropped while not holding it, by family.",
            m.fenced.clone(),
        );
        r.register(
            "lease_remaining_seconds",
            "Seconds left of the holder lease that lets VIP traffic through (0: none).",
            m.lease.clone(),
        );
        r.register(
            "hook_runs",
            "Hook runs by kind and outcome.",
            m.hook_runs.clone(),
        );
        r.register(
            "hook_duration_seconds",
            "How long hooks ran, by kind.",
            m.hook_seconds.clone(),
        );
        r.register(
            "check_healthy",
            "1 while the health check passes, 0 while it fails.",
            m.check_healthy.clone(),
        );
        r.register(
            "takeover_duration_seconds",
            "From the holder's last heartbeat (or its death notice) to our VIPs being added.",
            m.takeover_seconds.clone(),
        );
        r.register(
            "witness_reachable",
            "1 while the witness (etcd) answers, 0 while it does not (absent without --witness).",
            m.witness_reachable.clone(),
        );
        r.register(
            "witness_lease_remaining_seconds",
            "Seconds left of our witness lease, as of its last renewal (0: none).",
            m.witness_lease.clone(),
        );
        r.register(
            "witness_key_owned",
            "1 while the election's witness key is ours (group: the group's name, or its sync group's).",
            m.witness_key.clone(),
        );
        r.register(
            "witness_down_policy",
            "1 for what the node does while the witness is unreachable (witness_down).",
            m.witness_down.clone(),
        );
        r.register(
            "witness_wait_seconds",
            "How long takeovers from a silent peer waited for the witness key.",
            m.witness_wait_seconds.clone(),
        );
        r.register_collector(Box::new(SendGaps(gaps)));
        Metrics { registry: r, ..m }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            warn!("encoding the metrics: {e}");
        }
        out
    }
}

/// Binds `addr` for [`serve`]: done before anything changes, so that an
/// address in use fails the start naming it.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves `/metrics` on `listener` from here on, on the current runtime.
pub fn serve(listener: std::net::TcpListener, gaps: Arc<Gaps>) -> Result<Arc<Metrics>> {
    use http_body_util::Full;
    use hyper::{body::Bytes, server::conn::http1, service::service_fn, Response, StatusCode};
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let metrics = METRICS.get_or_init(|| Arc::new(Metrics::new(gaps))).clone();
    let m = metrics.clone();
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(_) => {
                    // Out of descriptors, say: not a busy loop.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let m = m.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let m = m.clone();
                    async move {
                        let r = if req.uri().path() == "/metrics" {
                            Response::builder()
                                .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                                .body(Full::new(Bytes::from(m.render())))
                        } else {
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from("see /metrics\n")))
                        };
                        r
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                // A slow or broken client costs its own task only.
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    http1::Builder::new().serve_connection(io, service),
                )
                .await;
            });
        }
    });
    Ok(metrics)
}
