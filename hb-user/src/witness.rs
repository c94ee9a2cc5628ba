//! The witness (`--witness etcd://...`): an etcd v3 lease this node keeps
//! alive, and under it one key per election it holds or takes,
//! `PREFIX/CLUSTER_ID/NAME` = "NODE SESSION". etcd decides who owns a key;
//! the core decides what a key means (`election.rs`, `key_allows`). This task
//! owns the client: the controller sends it requests and reads one
//! [`Snapshot`] of everything it knows, so nothing in the loop waits on etcd.

use crate::clock::monotonic;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp, TxnOpResponse,
};
use std::{collections::BTreeMap, time::Duration};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

/// What the witness needs to know of this node.
#[derive(Clone, Debug)]
pub struct Spec {
    /// `http://HOST:PORT`, as the client takes them.
    pub endpoints: Vec<String>,
    pub ttl: Duration,
    pub prefix: String,
    pub cluster_id: u32,
    pub node_id: u32,
    pub session: u64,
    /// What the elections do while etcd cannot be reached (status, metrics).
    pub down: crate::election::WitnessDown,
}

/// An election's key, as the witness last said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyState {
    /// Ours, under our lease.
    pub owned: bool,
    /// Another node's: its id.
    pub held_by: Option<u32>,
}

/// Everything the task knows, published whole on each change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The last request (or renewal) was answered.
    pub reachable: bool,
    /// Our lease lasts until then (CLOCK_MONOTONIC), counted from before the
    /// renewal that set it: never later than the server's own end.
    pub lease_until: Option<Duration>,
    /// By election name.
    pub keys: BTreeMap<String, KeyState>,
    /// The last failure, for the status ("" while none).
    pub error: String,
}

enum Request {
    /// Get the key of election `name`: free, already ours, or naming one of
    /// `gone` ("NODE SESSION" of peers that left or died).
    Acquire { name: String, gone: Vec<String> },
    /// Delete the key if ours.
    Release { name: String },
    /// The graceful stop: delete our keys, revoke the lease.
    Leave(oneshot::Sender<()>),
}

/// The controller's end.
pub struct Witness {
    tx: mpsc::UnboundedSender<Request>,
    pub snapshot: watch::Receiver<Snapshot>,
    spec: Spec,
}

impl Witness {
    /// Starts the task on the current runtime. Connecting is lazy: an etcd
    /// down at the start is reported as unreachable, not an error.
    pub fn spawn(spec: Spec) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (snap_tx, snapshot) = watch::channel(Snapshot::default());
        tokio::spawn(Task::new(spec.clone(), snap_tx).run(rx));
        Self { tx, snapshot, spec }
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The value of a key naming `node` in `session`.
    pub fn value(node: u32, session: u64) -> String {
        format!("{node} {session:016x}")
    }

    pub fn acquire(&self, name: &str, gone: Vec<String>) {
        let _ = self.tx.send(Request::Acquire {
            name: name.to_string(),
            gone,
        });
    }

    pub fn release(&self, name: &str) {
        let _ = self.tx.send(Request::Release {
            name: name.to_string(),
        });
    }

    /// Deletes our keys and revokes the lease, waiting at most `limit`.
    pub async fn leave(&self, limit: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Request::Leave(tx)).is_ok() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }
}

struct Lease {
    id: i64,
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

struct Task {
    spec: Spec,
    me: String,
    /// Each request's bound: a third of the TTL (at most 1 s), so that a
    /// renewal that fails still leaves time for the next one.
    timeout: Duration,
    client: Option<Client>,
    lease: Option<Lease>,
    snap: Snapshot,
    out: watch::Sender<Snapshot>,
    /// A request was handled since the last publish.
    answer: bool,
}

/// Not connected, or a request failed: try again after this long.
const RETRY: Duration = Duration::from_millis(250);

impl Task {
    fn new(spec: Spec, out: watch::Sender<Snapshot>) -> Self {
        let timeout = (spec.ttl / 3).min(Duration::from_secs(1));
        Self {
            me: Witness::value(spec.node_id, spec.session),
            spec,
            timeout,
            client: None,
            lease: None,
            snap: Snapshot::default(),
            out,
            answer: false,
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{}/{name}", self.spec.prefix, self.spec.cluster_id)
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>) {
        // Renew at a third of the TTL: two renewals may fail before it ends.
        let period = self.spec.ttl / 3;
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                req = rx.recv() => {
                    let Some(first) = req else { return };
                    // Every request is answered, changed or not: the core
                    // waits for an answer (INIT does).
                    self.answer = true;
                    for req in batch(first, &mut rx) {
                        match req {
                            Request::Acquire { name, gone } => self.acquire(&name, &gone).await,
                            Request::Release { name } => self.release(&name).await,
                            Request::Leave(done) => {
                                self.leave().await;
                                let _ = done.send(());
                                return;
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(next) => {
                    let ok = self.renew().await;
                    next = tokio::time::Instant::now() + if ok { period } else { RETRY };
                }
            }
            self.publish();
        }
    }

    fn publish(&mut self) {
        let answer = std::mem::take(&mut self.answer);
        self.out.send_if_modified(|s| {
            let changed = *s != self.snap;
            if changed {
                *s = self.snap.clone();
            }
            changed || answer
        });
    }

    fn failed(&mut self, what: &str, e: impl std::fmt::Display) {
        let error = format!("{what}: {e}");
        if self.snap.reachable {
            warn!("witness unreachable ({error})");
        }
        self.snap.reachable = false;
        self.snap.error = error;
    }

    fn answered(&mut self) {
        if !self.snap.reachable {
            info!("witness reachable");
        }
        self.snap.reachable = true;
        self.snap.error.clear();
    }

    /// The client, connected (lazily: a server down fails the first request).
    async fn client(&mut self) -> Option<Client> {
        if self.client.is_none() {
            let opts = ConnectOptions::new()
                .with_connect_timeout(self.timeout)
                .with_timeout(self.timeout)
                .with_keep_alive(self.timeout, self.timeout);
            match bounded(
                self.timeout,
                Client::connect(&self.spec.endpoints, Some(opts)),
            )
            .await
            {
                Ok(c) => self.client = Some(c),
                Err(e) => {
                    self.failed("connect", e);
                    return None;
                }
            }
        }
        self.client.clone()
    }

    /// Keeps the lease alive, or grants one. False when that failed.
    async fn renew(&mut self) -> bool {
        let Some(mut c) = self.client().await else {
            return false;
        };
        let sent = monotonic();
        let Some(lease) = &mut self.lease else {
            let secs = self.spec.ttl.as_secs_f64().ceil() as i64;
            return match bounded(self.timeout, c.lease_grant(secs, None)).await {
                Ok(g) => {
                    self.lease = Some(Lease {
                        id: g.id(),
                        keeper: None,
                    });
                    self.snap.lease_until = Some(sent + usable(g.ttl()));
                    self.answered();
                    true
                }
                Err(e) => {
                    self.failed("lease grant", e);
                    false
                }
            };
        };
        let id = lease.id;
        if lease.keeper.is_none() {
            match bounded(self.timeout, c.lease_keep_alive(id)).await {
                Ok(k) => lease.keeper = Some(k),
                Err(e) => {
                    self.failed("lease keep-alive", e);
                    return false;
                }
            }
        }
        let (keeper, stream) = lease.keeper.as_mut().expect("set above");
        let answer = bounded(self.timeout, async {
            keeper.keep_alive().await?;
            stream.message().await
        })
        .await;
        match answer {
            Ok(Some(r)) if r.ttl() > 0 => {
                self.snap.lease_until = Some(sent + usable(r.ttl()));
                self.answered();
                true
            }
            Ok(_) => {
                self.lease_lost();
                self.answered();
                false
            }
            Err(e) if lease_gone(&e) => {
                self.lease_lost();
                self.answered();
                false
            }
            Err(e) => {
                lease.keeper = None;
                self.failed("lease keep-alive", e);
                false
            }
        }
    }

    /// Expired on the server (we were cut off past the TTL): every key under
    /// it is gone; the next renewal grants a new lease, and the core asks
    /// again for the keys it needs.
    fn lease_lost(&mut self) {
        if let Some(l) = self.lease.take() {
            warn!("witness lease {:x} expired: our keys are gone", l.id);
        }
        self.snap.lease_until = None;
        for k in self.snap.keys.values_mut() {
            k.owned = false;
        }
    }

    async fn acquire(&mut self, name: &str, gone: &[String]) {
        // A lease found gone on the way is granted anew, once.
        for _ in 0..2 {
            if !self.try_acquire(name, gone).await {
                return;
            }
        }
    }

    /// True when it must be tried again: our lease was gone.
    async fn try_acquire(&mut self, name: &str, gone: &[String]) -> bool {
        if self.lease.is_none() && !self.renew().await {
            return false;
        }
        let (Some(mut c), Some(lease)) = (self.client().await, self.lease.as_ref().map(|l| l.id))
        else {
            return false;
        };
        let key = self.key(name);
        let me = self.me.clone();
        let put = || {
            TxnOp::put(
                key.clone(),
                me.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )
        };
        // Free: ours. Else read who has it.
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([put()])
            .or_else([TxnOp::get(key.clone(), None)]);
        let r = match bounded(self.timeout, c.txn(txn)).await {
            Ok(r) => r,
            Err(e) => return self.acquire_failed(e),
        };
        self.answered();
        let mut state = KeyState {
            owned: r.succeeded(),
            held_by: None,
        };
        if !state.owned {
            let kv = r.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(g) => g.kvs().first().cloned(),
                _ => None,
            });
            if let Some(kv) = kv {
                let value = String::from_utf8_lossy(kv.value()).to_string();
                let ours = value == me && kv.lease() == lease;
                // Ours under a lost lease or from our previous run (this
                // process adopted what a crash left), or a peer's that said
                // it left or died: overwrite it, if nobody else did.
                let owner = value.split(' ').next().and_then(|n| n.parse::<u32>().ok());
                let handed = owner == Some(self.spec.node_id) || gone.contains(&value);
                if ours {
                    state.owned = true;
                } else if handed {
                    let txn = Txn::new()
                        .when([Compare::mod_revision(
                            key.clone(),
                            CompareOp::Equal,
                            kv.mod_revision(),
                        )])
                        .and_then([put()]);
                    match bounded(self.timeout, c.txn(txn)).await {
                        Ok(r) => state.owned = r.succeeded(),
                        Err(e) => return self.acquire_failed(e),
                    }
                    if state.owned && value != me {
                        info!("witness: took key {key} from {value} (left or died)");
                    }
                }
                if !state.owned {
                    state.held_by = owner;
                }
            }
        }
        self.snap.keys.insert(name.to_string(), state);
        false
    }

    /// A transaction of an acquire failed: true (try again) when it was our
    /// lease that was gone.
    fn acquire_failed(&mut self, e: String) -> bool {
        if lease_gone(&e) {
            self.lease_lost();
            return true;
        }
        self.failed("acquire", e);
        false
    }

    async fn release(&mut self, name: &str) {
        let was = self.snap.keys.remove(name);
        if !was.is_some_and(|k| k.owned) {
            return;
        }
        let Some(mut c) = self.client().await else {
            return;
        };
        let key = self.key(name);
        let txn = Txn::new()
            .when([Compare::value(
                key.clone(),
                CompareOp::Equal,
                self.me.clone(),
            )])
            .and_then([TxnOp::delete(key, None)]);
        match bounded(self.timeout, c.txn(txn)).await {
            Ok(_) => self.answered(),
            // It stays until our lease ends: peers wait that long at most.
            Err(e) => self.failed("release", e),
        }
    }

    /// Revoking the lease deletes every key under it at once.
    async fn leave(&mut self) {
        let (Some(mut c), Some(lease)) = (self.client.clone(), self.lease.take()) else {
            return;
        };
        if let Err(e) = bounded(self.timeout, c.lease_revoke(lease.id)).await {
            warn!("witness: could not revoke our lease ({e}): our keys last until it ends");
        }
        self.snap.keys.clear();
        self.snap.lease_until = None;
        self.publish();
    }
}

/// What we count on of a lease of `ttl` seconds: nine tenths. The server
/// ends it `ttl` after it received the renewal (and revokes expired leases
/// on a half-second round), so a holder cut off from etcd and its peers has
/// released well before a peer can get the key.
fn usable(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64) * 9 / 10
}

/// etcd's answer for a lease it no longer has (expired and revoked).
fn lease_gone(e: &str) -> bool {
    e.contains("requested lease not found")
}

/// `first` and whatever else is queued, with only the last ask for each
/// election's key: while etcd does not answer, asks pile up at the core's
/// retry rate, and one answer serves them all.
fn batch(first: Request, rx: &mut mpsc::UnboundedReceiver<Request>) -> Vec<Request> {
    let mut all = vec![first];
    while let Ok(r) = rx.try_recv() {
        all.push(r);
    }
    let mut keep = Vec::with_capacity(all.len());
    for (i, r) in all.iter().enumerate() {
        let later = |name: &str| {
            all[i + 1..]
                .iter()
                .any(|l| matches!(l, Request::Acquire { name: n, .. } if n == name))
        };
        keep.push(!matches!(r, Request::Acquire { name, .. } if later(name)));
    }
    let mut keep = keep.into_iter();
    all.retain(|_| keep.next().unwrap_or(true));
    all
}

/// `f`, failing after `limit` (each request is also bounded by the client's
/// timeout; this bounds the connection's setup and the streams).
async fn bounded<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
    }
}
