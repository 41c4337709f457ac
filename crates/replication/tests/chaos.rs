#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The real coordinator (`ClusterStore`, its RPC and three `LocalStore` replicas in this
//! process, RF 3) under injected faults, with a checker. `sim.rs` runs the quorum state machines
//! deterministically on a virtual clock; this runs the code that ships, on real sockets and
//! tasks, so it is seeded rather than deterministic: the seed fixes the workload and the fault
//! schedule (printed; `IRONBUCKET_CHAOS_SEED=<seed>` reruns it), the interleaving of background
//! tasks is the runtime's.
//!
//! Faults act on a node's inbound data path (object requests, pushed bodies, body reads; Raft
//! keeps working): refusing at once, hanging past the request timeout, answering a little late,
//! or applying a request after the coordinator gave up on it.
//! A client runs puts, deletes and gets one after another through random nodes at random levels.
//!
//! The checker:
//! - no read returns a value never written;
//! - a read whose level overlaps the last acknowledged write's (R + W > RF) returns that write or
//!   something written after it;
//! - a request that fails does so as unavailable (503), never with another error;
//! - after the faults end, a read at ALL through each node agrees with the last acknowledged
//!   write (or a later attempt), and read repair leaves every replica holding the same newest
//!   version.

use async_trait::async_trait;
use ironbucket_rpc::{DataStream, Handler, Incoming, Kind, pb};
use ironbucket_store::{ByteStream, Consistency, Error, GetObject, ObjectStore, PutObject, hints::with_consistency};
use ironbucket_testkit::inproc::{node_with, placed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

const RF: usize = 3;
const KEYS: usize = 4;
const OPS: usize = 160;
const TIMEOUT: Duration = Duration::from_millis(400);

const UP: u8 = 0;
const REFUSE: u8 = 1;
const HANG: u8 = 2;
const SLOW: u8 = 3;
const LATE: u8 = 4;

/// A node's RPC handler with a fault switch on its inbound data path.
struct Faulty {
    inner: Arc<dyn Handler>,
    mode: Arc<AtomicU8>,
    /// Requests on the data path not finished yet (late ones included).
    busy: Arc<AtomicUsize>,
}

/// Counts a request as busy while it lives.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn start(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Faulty {
    async fn fault(&self) -> Result<(), String> {
        match self.mode.load(Ordering::SeqCst) {
            REFUSE => Err("injected: the node refuses".into()),
            HANG => {
                tokio::time::sleep(TIMEOUT * 3).await;
                Err("injected: the node hung".into())
            }
            SLOW => {
                tokio::time::sleep(TIMEOUT / 8).await;
                Ok(())
            }
            LATE => {
                // Applied after the coordinator gave up on it: a write that failed may still land.
                tokio::time::sleep(TIMEOUT * 2).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Handler for Faulty {
    async fn ping(&self, from: &str) -> pb::PingReply {
        self.inner.ping(from).await
    }

    async fn call(&self, call: Incoming, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        let _busy = Busy::start(&self.busy);
        if matches!(call.kind, Kind::ObjectOp | Kind::ObjectVersions | Kind::CasOp) {
            self.fault().await?;
        }
        self.inner.call(call, payload).await
    }

    async fn push(&self, call: Incoming, header: Vec<u8>, data: DataStream) -> Result<Vec<u8>, String> {
        let _busy = Busy::start(&self.busy);
        self.fault().await?;
        self.inner.push(call, header, data).await
    }

    async fn pull(&self, call: Incoming, payload: Vec<u8>) -> Result<DataStream, String> {
        self.fault().await?;
        self.inner.pull(call, payload).await
    }
}

#[derive(Debug, Clone)]
enum Did {
    Put {
        key: usize,
        value: String,
        acked: bool,
        level: Consistency,
    },
    Delete {
        key: usize,
        acked: bool,
        level: Consistency,
    },
    /// A read; `None` when it failed as unavailable.
    Get { got: Option<Option<String>> },
}

fn level(rng: &mut StdRng) -> Consistency {
    match rng.gen_range(0..3) {
        0 => Consistency::One,
        1 => Consistency::Quorum,
        _ => Consistency::All,
    }
}

fn body(s: &str) -> ByteStream {
    Box::pin(futures::stream::iter(vec![Ok(bytes::Bytes::from(s.to_string()))]))
}

async fn read(store: &Arc<dyn ObjectStore>, key: usize, l: Consistency) -> Result<Option<String>, Error> {
    read_at(store, &format!("k{key}"), l).await
}

/// `chaos/key` read at `l` (`None`: no object).
async fn read_at(store: &Arc<dyn ObjectStore>, key: &str, l: Consistency) -> Result<Option<String>, Error> {
    let req = GetObject {
        bucket: "chaos".into(),
        key: key.into(),
        ..Default::default()
    };
    match with_consistency(Some(l), store.get_object(req)).await {
        Ok(out) => {
            let chunks: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(out.body)
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))?;
            Ok(Some(String::from_utf8(chunks.concat()).unwrap()))
        }
        Err(Error::NoSuchKey) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a read of `key` after `history` may return: `None` (not found) or a value, checked
/// against every write attempted before it.
fn check_read(history: &[Did], key: usize, l: Consistency, got: &Option<String>) -> Result<(), String> {
    let writes: Vec<(usize, &Did)> = history
        .iter()
        .enumerate()
        .filter(|(_, d)| matches!(d, Did::Put { key: k, .. } | Did::Delete { key: k, .. } if *k == key))
        .collect();
    // Where in the history the value was written (None: no write of it).
    let written_at = |v: &str| {
        writes
            .iter()
            .find(|(_, d)| matches!(d, Did::Put { value, .. } if value == v))
            .map(|(i, _)| *i)
    };
    if let Some(v) = got
        && written_at(v).is_none()
    {
        return Err(format!("read of k{key} returned {v:?}, which was never written"));
    }
    // The last write acknowledged at a level that overlaps this read's.
    let overlaps = |w: Consistency| w.required(RF) + l.required(RF) > RF;
    let last = writes.iter().rev().find(|(_, d)| match d {
        Did::Put { acked, level, .. } | Did::Delete { acked, level, .. } => *acked && overlaps(*level),
        Did::Get { .. } => false,
    });
    let Some((at, last)) = last else {
        return Ok(());
    };
    let attempted_after = |i: usize, delete: bool| {
        writes
            .iter()
            .any(|(j, d)| *j > i && matches!(d, Did::Delete { .. }) == delete)
    };
    match (last, got) {
        (Did::Put { value, .. }, Some(v)) if v == value => Ok(()),
        (_, Some(v)) if written_at(v).is_some_and(|j| j > *at) => Ok(()),
        (Did::Delete { .. }, None) => Ok(()),
        (Did::Put { .. }, None) if attempted_after(*at, true) => Ok(()),
        _ => Err(format!(
            "read of k{key} at {l} returned {got:?}, but op {at} ({last:?}) was acknowledged before it"
        )),
    }
}

/// Three nodes in this process, each behind a fault switch (`modes`), placed at RF 3.
async fn start(
    modes: &[Arc<AtomicU8>],
    busy: &Arc<AtomicUsize>,
) -> (
    Vec<tempfile::TempDir>,
    Vec<Arc<ironbucket_consensus::ControlPlane>>,
    Vec<Arc<ironbucket_replication::ClusterStore>>,
) {
    let dirs: Vec<_> = (0..RF).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut listeners = Vec::new();
    for _ in 0..RF {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let seeds: Vec<String> = listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
    let mut cps = Vec::new();
    let mut cluster = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let mode = modes[i].clone();
        let busy = busy.clone();
        let (cp, cs) = node_with(
            &format!("n{}", i + 1),
            l,
            seeds.clone(),
            dirs[i].path(),
            RF as u32,
            TIMEOUT,
            move |inner| Arc::new(Faulty { inner, mode, busy }),
        )
        .await;
        cps.push(cp);
        cluster.push(cs);
    }
    placed(&cps, RF).await;
    (dirs, cps, cluster)
}

async fn run(seed: u64) {
    eprintln!("chaos seed {seed} (rerun with IRONBUCKET_CHAOS_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let modes: Vec<Arc<AtomicU8>> = (0..RF).map(|_| Arc::new(AtomicU8::new(UP))).collect();
    let busy = Arc::new(AtomicUsize::new(0));
    let (_dirs, cps, cluster) = start(&modes, &busy).await;
    let stores: Vec<Arc<dyn ObjectStore>> = cluster.iter().map(|c| c.clone() as Arc<dyn ObjectStore>).collect();
    stores[0].create_bucket("chaos").await.unwrap();

    let mut history: Vec<Did> = Vec::new();
    let mut violations: Vec<String> = Vec::new();
    let mut acked = 0;
    for op in 0..OPS {
        // The fault schedule: now and then one node (rarely two) changes mode.
        if rng.gen_bool(0.15) {
            let n = rng.gen_range(0..RF);
            let m = match rng.gen_range(0..11) {
                0..=3 => UP,
                4..=5 => REFUSE,
                6 => HANG,
                7..=8 => SLOW,
                _ => LATE,
            };
            modes[n].store(m, Ordering::SeqCst);
            let down = modes.iter().filter(|m| m.load(Ordering::SeqCst) != UP).count();
            if down > 2 {
                modes[(n + 1) % RF].store(UP, Ordering::SeqCst);
            }
        }
        let via = &stores[rng.gen_range(0..RF)];
        let key = rng.gen_range(0..KEYS);
        let l = level(&mut rng);
        // Stamps follow the order of operations (one clock in this process).
        tokio::time::sleep(Duration::from_millis(2)).await;
        let did = match rng.gen_range(0..10) {
            0..=4 => {
                let value = format!("k{key}-op{op}");
                let req = PutObject {
                    bucket: "chaos".into(),
                    key: format!("k{key}"),
                    ..Default::default()
                };
                let r = with_consistency(Some(l), via.put_object(req, body(&value))).await;
                if let Err(e) = &r
                    && !matches!(e, Error::Unavailable(_))
                {
                    violations.push(format!("op {op}: put failed with {e:?}, not as unavailable"));
                }
                Did::Put {
                    key,
                    value,
                    acked: r.is_ok(),
                    level: l,
                }
            }
            5..=6 => {
                let r = with_consistency(Some(l), via.delete_object("chaos", &format!("k{key}"), None, false)).await;
                if let Err(e) = &r
                    && !matches!(e, Error::Unavailable(_))
                {
                    violations.push(format!("op {op}: delete failed with {e:?}, not as unavailable"));
                }
                Did::Delete {
                    key,
                    acked: r.is_ok(),
                    level: l,
                }
            }
            _ => {
                let got = match read(via, key, l).await {
                    Ok(v) => {
                        if let Err(m) = check_read(&history, key, l, &v) {
                            violations.push(format!("op {op}: {m}"));
                        }
                        Some(v)
                    }
                    Err(Error::Unavailable(_)) => None,
                    Err(e) => {
                        violations.push(format!("op {op}: get failed with {e:?}, not as unavailable"));
                        None
                    }
                };
                Did::Get { got }
            }
        };
        if matches!(did, Did::Put { acked: true, .. } | Did::Delete { acked: true, .. }) {
            acked += 1;
        }
        history.push(did);
    }
    // Heal, let the writes still in flight land, then read every key at ALL through each node.
    for m in &modes {
        m.store(UP, Ordering::SeqCst);
    }
    ironbucket_testkit::poll_until("the requests in flight to land", TIMEOUT * 10, || async {
        (busy.load(Ordering::SeqCst) == 0).then_some(())
    })
    .await;
    for key in 0..KEYS {
        for (n, s) in stores.iter().enumerate() {
            match read(s, key, Consistency::All).await {
                Ok(v) => {
                    if let Err(m) = check_read(&history, key, Consistency::All, &v) {
                        violations.push(format!("after healing, through n{}: {m}", n + 1));
                    }
                }
                Err(e) => violations.push(format!("after healing, k{key} through n{}: {e:?}", n + 1)),
            }
        }
    }
    // Read repair (in the background) leaves every replica with the same newest version.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for key in 0..KEYS {
        loop {
            let loc = cluster[0].locate("chaos", &format!("k{key}")).await.unwrap();
            let newest: Vec<_> = loc
                .nodes
                .iter()
                .map(|n| {
                    n.versions
                        .first()
                        .map(|v| (v.hlc.clone(), v.delete_marker, v.etag.clone()))
                })
                .collect();
            if loc.nodes.len() == RF && newest.windows(2).all(|w| w[0] == w[1]) {
                break;
            }
            if std::time::Instant::now() > deadline {
                violations.push(format!("k{key}: replicas still differ after repair: {newest:?}"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let reads = history
        .iter()
        .filter(|d| matches!(d, Did::Get { got: Some(_), .. }))
        .count();
    eprintln!("chaos seed {seed}: {OPS} operations, {acked} writes acknowledged, {reads} reads answered");
    assert!(
        acked > OPS / 5,
        "too few writes acknowledged ({acked}) for the run to say much"
    );
    assert!(violations.is_empty(), "seed {seed}:\n{}", violations.join("\n"));
    for cp in cps {
        cp.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_coordinator_keeps_its_promises_under_injected_faults() {
    let seeds: Vec<u64> = match std::env::var("IRONBUCKET_CHAOS_SEED") {
        Ok(s) => vec![s.parse().expect("IRONBUCKET_CHAOS_SEED is a number")],
        Err(_) => vec![1, 2, 3],
    };
    for seed in seeds {
        run(seed).await;
    }
}

/// Conditional writes under the same faults, one node at a time refusing, hanging past the
/// request timeout (cut off from the coordinators), answering late or applying requests after
/// the coordinator gave up: six `If-None-Match: *` PUTs race through random nodes on each of 40
/// keys while the faults change. At most one gets 200 per key; the others fail with 412, 409 or
/// 503 (never another error); after healing, every key read at ALL through each node holds the
/// winner's value, or (no winner) one of the requests of unknown outcome, or nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_have_one_winner_under_injected_faults() {
    let seed: u64 = std::env::var("IRONBUCKET_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    eprintln!("conditional chaos seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let modes: Vec<Arc<AtomicU8>> = (0..RF).map(|_| Arc::new(AtomicU8::new(UP))).collect();
    let busy = Arc::new(AtomicUsize::new(0));
    let (_dirs, cps, cluster) = start(&modes, &busy).await;
    let stores: Vec<Arc<dyn ObjectStore>> = cluster.iter().map(|c| c.clone() as Arc<dyn ObjectStore>).collect();
    stores[0].create_bucket("chaos").await.unwrap();
    let mut violations = Vec::new();
    let (mut won, mut refused, mut unknown) = (0, 0, 0);
    let mut outcomes: Vec<Vec<(String, Result<(), Error>)>> = Vec::new();
    for key in 0..40 {
        // One node at a time is faulty; the fault changes every few keys.
        if key % 3 == 0 {
            for m in &modes {
                m.store(UP, Ordering::SeqCst);
            }
            let m = match rng.gen_range(0..5) {
                0 => UP,
                1 => REFUSE,
                2 => HANG,
                3 => SLOW,
                _ => LATE,
            };
            modes[rng.gen_range(0..RF)].store(m, Ordering::SeqCst);
        }
        let racers: Vec<_> = (0..6)
            .map(|c| {
                let via = stores[rng.gen_range(0..RF)].clone();
                let value = format!("k{key}-c{c}");
                async move {
                    let mut req = PutObject {
                        bucket: "chaos".into(),
                        key: format!("c{key}"),
                        ..Default::default()
                    };
                    req.conditions.if_none_match = Some(vec!["*".into()]);
                    let r = via.put_object(req, body(&value)).await.map(|_| ());
                    (value, r)
                }
            })
            .collect();
        let results = futures::future::join_all(racers).await;
        let wins = results.iter().filter(|(_, r)| r.is_ok()).count();
        if wins > 1 {
            violations.push(format!("c{key}: {wins} winners"));
        }
        for (_, r) in &results {
            match r {
                Ok(()) => won += 1,
                Err(Error::PreconditionFailed | Error::ConditionalRequestConflict(_)) => refused += 1,
                Err(Error::Unavailable(_)) => unknown += 1,
                Err(e) => violations.push(format!("c{key}: a conditional PUT failed with {e:?}")),
            }
        }
        outcomes.push(results);
    }
    for m in &modes {
        m.store(UP, Ordering::SeqCst);
    }
    ironbucket_testkit::poll_until("the requests in flight to land", TIMEOUT * 10, || async {
        (busy.load(Ordering::SeqCst) == 0).then_some(())
    })
    .await;
    for (key, results) in outcomes.iter().enumerate() {
        for (n, s) in stores.iter().enumerate() {
            let got = match read_at(s, &format!("c{key}"), Consistency::All).await {
                Ok(v) => v,
                Err(e) => {
                    violations.push(format!("after healing, c{key} through n{}: {e:?}", n + 1));
                    continue;
                }
            };
            let winner = results.iter().find(|(_, r)| r.is_ok()).map(|(v, _)| v);
            let fine = match (&got, winner) {
                (Some(v), Some(w)) => v == w,
                (Some(v), None) => results
                    .iter()
                    .any(|(x, r)| x == v && matches!(r, Err(Error::Unavailable(_)))),
                (None, Some(_)) => false,
                (None, None) => true,
            };
            if !fine {
                violations.push(format!(
                    "after healing, c{key} through n{} holds {got:?}: {results:?}",
                    n + 1
                ));
            }
        }
    }
    eprintln!(
        "conditional chaos seed {seed}: 240 conditional PUTs on 40 keys: {won} won, {refused} refused (412/409), {unknown} of unknown outcome (503)"
    );
    assert!(won >= 20, "too few keys got a winner ({won}) for the run to say much");
    assert!(violations.is_empty(), "seed {seed}:\n{}", violations.join("\n"));
    for cp in cps {
        cp.shutdown().await;
    }
}
