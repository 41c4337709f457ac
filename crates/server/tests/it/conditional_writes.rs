//! Conditional writes that hold across the cluster (ADR 0015): 3 nodes at RF 3, 16 clients
//! spread over all nodes, no client retries. Racing `If-None-Match: *` on 1,000 keys has exactly
//! one winner per key; an `If-Match` counter ends at the number of successful increments; every
//! key's history is checked for linearizability. Once healthy, once with a node killed and
//! restarted during the run.

use crate::common::cluster::*;
use crate::common::*;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use ironbucket_testkit::linearizable::{self, Event, Op, Outcome};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const KEYS: usize = 1000;

/// `CAS_TEST_KEYS` runs the race on fewer keys (when chasing a failure).
fn keys() -> usize {
    std::env::var("CAS_TEST_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KEYS)
}
const BUCKET: &str = "cas";

/// A client that never retries (a retried conditional write would hide which attempt won).
fn plain_client(endpoint: &str) -> Client {
    let conf = config_for(endpoint, AK, SK)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(15))
                .build(),
        )
        .build();
    Client::from_conf(conf)
}

/// The clients of the three nodes (replaced when a node restarts on a new S3 port).
type Endpoints = Arc<RwLock<Vec<Client>>>;

#[derive(Default)]
struct Tally {
    ok: u64,
    failed_412: u64,
    failed_409: u64,
    unknown: u64,
}

/// How a write ended for its client: 200, 412/409 (nothing written), or unknown.
fn write_outcome<T, E: std::fmt::Debug>(
    r: &Result<T, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
    tally: &mut Tally,
) -> Outcome {
    match r {
        Ok(_) => {
            tally.ok += 1;
            Outcome::Ok
        }
        Err(e) => match status_of(e) {
            412 => {
                tally.failed_412 += 1;
                Outcome::Failed
            }
            409 => {
                tally.failed_409 += 1;
                Outcome::Failed
            }
            _ => {
                tally.unknown += 1;
                Outcome::Unknown
            }
        },
    }
}

async fn read_value(c: &Client, key: &str) -> Result<Option<(String, String)>, String> {
    match c.get_object().bucket(BUCKET).key(key).send().await {
        Ok(o) => {
            let etag = o.e_tag().unwrap_or_default().trim_matches('"').to_string();
            let body = body_bytes(o).await;
            Ok(Some((String::from_utf8(body).unwrap(), etag)))
        }
        Err(e) if status_of(&e) == 404 => Ok(None),
        Err(e) => Err(format!("{e:?}")),
    }
}

struct Run {
    start: Instant,
}

impl Run {
    fn now(&self) -> u128 {
        self.start.elapsed().as_nanos()
    }
}

/// Every client races `If-None-Match: *` on every key (all in the same order, so that the 16
/// reach each key together); returns each key's history and the tallies.
async fn race_creates(eps: &Endpoints, run: &Arc<Run>) -> (HashMap<usize, Vec<Event<String>>>, Tally) {
    let histories: Arc<Mutex<HashMap<usize, Vec<Event<String>>>>> = Default::default();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (eps, run, histories, tally) = (eps.clone(), run.clone(), histories.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            for k in 0..keys() {
                let client = eps.read().unwrap()[c % 3].clone();
                let value = format!("client-{c}");
                let call = run.now();
                let r = client
                    .put_object()
                    .bucket(BUCKET)
                    .key(format!("race/{k:04}"))
                    .if_none_match("*")
                    .body(value.clone().into_bytes().into())
                    .send()
                    .await;
                let ret = run.now();
                let outcome = write_outcome(&r, &mut tally.lock().unwrap());
                if outcome == Outcome::Unknown && r.as_ref().is_err_and(|e| status_of(e) == 0) {
                    // The node is gone: give it a moment before the next key.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                histories.lock().unwrap().entry(k).or_default().push(Event {
                    op: Op::Create(value),
                    outcome,
                    call,
                    ret,
                });
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let h = std::mem::take(&mut *histories.lock().unwrap());
    let t = std::mem::take(&mut *tally.lock().unwrap());
    (h, t)
}

/// Each client reads the counter and writes it plus one with `If-Match`, for `secs`.
async fn count_up(eps: &Endpoints, run: &Arc<Run>, secs: u64) -> (Vec<Event<String>>, Tally) {
    let history: Arc<Mutex<Vec<Event<String>>>> = Default::default();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (eps, run, history, tally) = (eps.clone(), run.clone(), history.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < until && n < 400 {
                n += 1;
                let client = eps.read().unwrap()[c % 3].clone();
                let call = run.now();
                let (value, etag) = match read_value(&client, "counter").await {
                    Ok(Some(v)) => v,
                    Ok(None) => panic!("the counter disappeared"),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                history.lock().unwrap().push(Event {
                    op: Op::Read(Some(value.clone())),
                    outcome: Outcome::Ok,
                    call,
                    ret: run.now(),
                });
                let next = (value.parse::<u64>().unwrap() + 1).to_string();
                let call = run.now();
                let r = client
                    .put_object()
                    .bucket(BUCKET)
                    .key("counter")
                    .if_match(format!("\"{etag}\""))
                    .body(next.clone().into_bytes().into())
                    .send()
                    .await;
                let ret = run.now();
                let outcome = write_outcome(&r, &mut tally.lock().unwrap());
                history.lock().unwrap().push(Event {
                    op: Op::Swap {
                        expected: value,
                        value: next,
                    },
                    outcome,
                    call,
                    ret,
                });
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let h = std::mem::take(&mut *history.lock().unwrap());
    let t = std::mem::take(&mut *tally.lock().unwrap());
    (h, t)
}

/// Kills node-3 after `after`, starts it again on its disk `down` later.
fn kill_and_restart(
    dir: std::path::PathBuf,
    nodes: Arc<Mutex<Vec<Server>>>,
    eps: Endpoints,
    seeds: String,
    port: u16,
    after: Duration,
    down: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        nodes.lock().unwrap()[2].kill9();
        eprintln!("node-3 killed");
        tokio::time::sleep(down).await;
        let srv = restart_node(&dir, "node-3", port, &seeds, &["--replication-factor", "3"]);
        let c = plain_client(&srv.s3);
        poll_until("node-3 ready again", Duration::from_secs(60), || async {
            is_ready(&srv).await.then_some(())
        })
        .await;
        eprintln!("node-3 back");
        eps.write().unwrap()[2] = c;
        nodes.lock().unwrap()[2] = srv;
    })
}

async fn scenario(kill: bool) {
    let (mut nodes, seeds, ports) = cluster_with(3, &["--replication-factor", "3"]).await;
    // node-3's data directory outlives its process (it is killed and started again on it).
    let dir3 = nodes[2].take_tmp().unwrap();
    let eps: Endpoints = Arc::new(RwLock::new(nodes.iter().map(|n| plain_client(&n.s3)).collect()));
    let nodes = Arc::new(Mutex::new(nodes));
    let admin = eps.read().unwrap()[0].clone();
    admin.create_bucket().bucket(BUCKET).send().await.unwrap();
    let run = Arc::new(Run { start: Instant::now() });
    let label = if kill { "node-3 killed and restarted" } else { "healthy" };

    // If-None-Match on 1,000 keys.
    let killer = kill.then(|| {
        kill_and_restart(
            dir3.path().to_path_buf(),
            nodes.clone(),
            eps.clone(),
            seeds.clone(),
            ports[2],
            Duration::from_secs(4),
            Duration::from_secs(4),
        )
    });
    let started = Instant::now();
    let (mut histories, tally) = race_creates(&eps, &run).await;
    let took = started.elapsed();
    if let Some(k) = killer {
        k.await.unwrap();
    }
    eprintln!(
        "{label}: If-None-Match on {KEYS} keys by {CLIENTS} clients in {:.1}s: {} x 200, {} x 412, {} x 409, {} unknown",
        took.as_secs_f64(),
        tally.ok,
        tally.failed_412,
        tally.failed_409,
        tally.unknown
    );
    let reader = eps.read().unwrap()[1].clone();
    let (mut winners, mut unknown_winners) = (0, 0);
    for k in 0..keys() {
        let key = format!("race/{k:04}");
        let call = run.now();
        let seen = read_value(&reader, &key).await.unwrap().map(|(v, _)| v);
        let h = histories.get_mut(&k).unwrap();
        let oks: Vec<&String> = h
            .iter()
            .filter(|e| e.outcome == Outcome::Ok)
            .map(|e| match &e.op {
                Op::Create(v) => v,
                _ => unreachable!(),
            })
            .collect();
        assert!(
            oks.len() <= 1,
            "{label}: {key} had {} winners: {oks:?}\n{h:#?}",
            oks.len()
        );
        let seen = seen.unwrap_or_else(|| panic!("{label}: {key} has no object after the race: {h:#?}"));
        match oks.first() {
            Some(w) => {
                assert_eq!(**w, seen, "{label}: {key} holds another value than its winner's");
                winners += 1;
            }
            None => {
                assert!(
                    h.iter()
                        .any(|e| e.outcome == Outcome::Unknown && e.op == Op::Create(seen.clone())),
                    "{label}: {key} holds {seen}, written by no winner and no request of unknown outcome"
                );
                unknown_winners += 1;
            }
        }
        h.push(Event {
            op: Op::Read(Some(seen)),
            outcome: Outcome::Ok,
            call,
            ret: run.now(),
        });
        if let Err(e) = linearizable::check(h, 2_000_000) {
            panic!("{label}: {key}: {e}\n{h:#?}");
        }
    }
    eprintln!(
        "{label}: If-None-Match on {KEYS} keys by {CLIENTS} clients in {:.1}s: {} winners (+{} of unknown outcome), {} x 412, {} x 409, {} unknown",
        took.as_secs_f64(),
        winners,
        unknown_winners,
        tally.failed_412,
        tally.failed_409,
        tally.unknown
    );
    assert_eq!(winners + unknown_winners, keys());
    if !kill {
        assert_eq!(winners, keys(), "healthy: every key has a winner that was told so");
        assert_eq!(tally.unknown, 0, "healthy: no request of unknown outcome");
    }

    // The If-Match counter.
    admin
        .put_object()
        .bucket(BUCKET)
        .key("counter")
        .body(b"0".to_vec().into())
        .send()
        .await
        .unwrap();
    let killer = kill.then(|| {
        kill_and_restart(
            dir3.path().to_path_buf(),
            nodes.clone(),
            eps.clone(),
            seeds.clone(),
            ports[2],
            Duration::from_secs(3),
            Duration::from_secs(4),
        )
    });
    let begin = run.now();
    let (mut history, tally) = count_up(&eps, &run, if kill { 14 } else { 8 }).await;
    if let Some(k) = killer {
        k.await.unwrap();
    }
    let (last, _) = read_value(&reader, "counter").await.unwrap().unwrap();
    let last: u64 = last.parse().unwrap();
    eprintln!(
        "{label}: If-Match counter by {CLIENTS} clients: {} increments acknowledged, {} x 412, {} x 409, {} unknown; final value {last}",
        tally.ok, tally.failed_412, tally.failed_409, tally.unknown
    );
    assert!(
        last >= tally.ok && last <= tally.ok + tally.unknown,
        "{label}: the counter ends at {last} after {} acknowledged increments ({} of unknown outcome)",
        tally.ok,
        tally.unknown
    );
    if !kill {
        assert_eq!(
            last, tally.ok,
            "healthy: the counter equals the acknowledged increments"
        );
        assert_eq!(tally.unknown, 0);
    }
    history.insert(
        0,
        Event {
            op: Op::Create("0".into()),
            outcome: Outcome::Ok,
            call: 0,
            ret: begin,
        },
    );
    let call = run.now();
    history.push(Event {
        op: Op::Read(Some(last.to_string())),
        outcome: Outcome::Ok,
        call,
        ret: run.now(),
    });
    let ops = history.len();
    let checked = Instant::now();
    if let Err(e) = linearizable::check(&history, 20_000_000) {
        panic!("{label}: the counter's history ({ops} operations) is not linearizable: {e}");
    }
    eprintln!(
        "{label}: the counter's history of {ops} operations is linearizable (checked in {:.1}s)",
        checked.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_conditional_writes_have_one_winner_when_healthy() {
    scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_conditional_writes_have_one_winner_while_a_node_is_killed_and_restarted() {
    scenario(true).await;
}

/// A restarted node reports ready only once it takes part in conditional writes again, so the
/// next step of a rolling restart (another node stopped the moment it is ready) leaves them a
/// quorum. (The chaos suite caught a restarted node refusing every ballot for its clock bound
/// after it was ready; with another node killed meanwhile, conditional writes failed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_is_ready_only_once_it_takes_part_in_conditional_writes() {
    let (mut nodes, seeds, ports) = cluster_with(3, &["--replication-factor", "3"]).await;
    let dir3 = nodes[2].take_tmp().unwrap();
    let c1 = plain_client(&nodes[0].s3);
    c1.create_bucket().bucket(BUCKET).send().await.unwrap();
    // Every node has promised a ballot once: a restart makes it wait out its clock bound.
    c1.put_object()
        .bucket(BUCKET)
        .key("before")
        .if_none_match("*")
        .body(b"0".to_vec().into())
        .send()
        .await
        .unwrap();
    for round in 0..3 {
        nodes[2].kill9();
        nodes[2] = restart_node(dir3.path(), "node-3", ports[2], &seeds, &["--replication-factor", "3"]);
        poll_until("node-3 ready again", Duration::from_secs(60), || async {
            is_ready(&nodes[2]).await.then_some(())
        })
        .await;
        // The moment it is ready, node-1 stops answering: node-2 and node-3 must carry the round.
        nodes[0].pause(true);
        let c2 = plain_client(&nodes[1].s3);
        let wrote = c2
            .put_object()
            .bucket(BUCKET)
            .key(format!("after-restart-{round}"))
            .if_none_match("*")
            .body(b"1".to_vec().into())
            .send()
            .await;
        nodes[0].pause(false);
        if let Err(e) = wrote {
            panic!("round {round}: a conditional write right after node-3 was ready failed: {e:?}");
        }
        poll_until("node-1 ready again", Duration::from_secs(60), || async {
            is_ready(&nodes[0]).await.then_some(())
        })
        .await;
    }
}

/// Captures `x-ironbucket-consistency-upgraded` from a response.
#[derive(Debug, Clone, Default)]
struct Upgraded(Arc<Mutex<Option<String>>>);

impl aws_sdk_s3::config::Intercept for Upgraded {
    fn name(&self) -> &'static str {
        "upgraded"
    }

    fn read_before_deserialization(
        &self,
        ctx: &aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef<'_>,
        _: &aws_sdk_s3::config::RuntimeComponents,
        _: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        *self.0.lock().unwrap() = ctx
            .response()
            .headers()
            .get("x-ironbucket-consistency-upgraded")
            .map(str::to_string);
        Ok(())
    }
}

/// One winner per key for each kind of conditional mutation, racing through all three nodes:
/// CopyObject's destination `If-None-Match`, CompleteMultipartUpload `If-None-Match`,
/// DeleteObject `If-Match`; and a conditional write asked at ONE runs at QUORUM and says so.
/// A loser may get 503 (outcome unknown: its round may have been chosen, or on a loaded machine
/// a node did not answer in time), never a second 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_conditional_mutation_has_one_winner_across_nodes() {
    let (nodes, _seeds, _ports) = cluster_with(3, &["--replication-factor", "3"]).await;
    let clients: Vec<Client> = nodes.iter().map(|n| plain_client(&n.s3)).collect();
    let c0 = &clients[0];
    c0.create_bucket().bucket(BUCKET).send().await.unwrap();
    let src = c0
        .put_object()
        .bucket(BUCKET)
        .key("src")
        .body(b"source".to_vec().into())
        .send()
        .await
        .unwrap();
    let src_etag = src.e_tag().unwrap().to_string();

    // CopyObject with If-None-Match: *, 6 copies of each of 20 destinations at once.
    let mut tasks = Vec::new();
    for k in 0..20 {
        for c in 0..6 {
            let client = clients[c % 3].clone();
            tasks.push(tokio::spawn(async move {
                let r = client
                    .copy_object()
                    .bucket(BUCKET)
                    .key(format!("copy/{k}"))
                    .copy_source(format!("{BUCKET}/src"))
                    .if_none_match("*")
                    .send()
                    .await;
                (k, r.map(|_| ()).map_err(|e| status_of(&e)))
            }));
        }
    }
    // A 503 says the outcome is unknown (a round that may have been chosen, or a node too busy
    // to answer in time on a loaded machine); two wins are never allowed.
    let (mut wins, mut unknown) = ([0; 20], [0; 20]);
    for t in tasks {
        match t.await.unwrap() {
            (k, Ok(())) => wins[k] += 1,
            (k, Err(503)) => unknown[k] += 1,
            (_, Err(st)) => assert!(st == 412 || st == 409, "a losing copy got {st}"),
        }
    }
    for (k, (w, u)) in wins.iter().zip(&unknown).enumerate() {
        assert!(*w <= 1, "two copies won destination {k}");
        assert!(*w == 1 || *u > 0, "no copy won destination {k}: {wins:?} {unknown:?}");
    }

    // CompleteMultipartUpload with If-None-Match: *, three uploads of one key, one per node.
    let mut uploads = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let id = c
            .create_multipart_upload()
            .bucket(BUCKET)
            .key("mp")
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_string();
        let part = c
            .upload_part()
            .bucket(BUCKET)
            .key("mp")
            .upload_id(&id)
            .part_number(1)
            .body(format!("upload-{i}").into_bytes().into())
            .send()
            .await
            .unwrap();
        uploads.push((c.clone(), id, part.e_tag().unwrap().to_string()));
    }
    let mut tasks = Vec::new();
    for (c, id, etag) in uploads {
        tasks.push(tokio::spawn(async move {
            let parts = aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .parts(
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(1)
                        .e_tag(etag)
                        .build(),
                )
                .build();
            c.complete_multipart_upload()
                .bucket(BUCKET)
                .key("mp")
                .upload_id(id)
                .multipart_upload(parts)
                .if_none_match("*")
                .send()
                .await
                .map(|_| ())
                .map_err(|e| status_of(&e))
        }));
    }
    let (mut won, mut unknown) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => won += 1,
            Err(503) => unknown += 1,
            Err(st) => assert!(st == 412 || st == 409, "a losing complete got {st}"),
        }
    }
    assert!(won <= 1, "two CompleteMultipartUploads won");
    assert!(won == 1 || unknown > 0, "no CompleteMultipartUpload won");

    // DeleteObject with If-Match: a wrong ETag is refused; of 6 racing deletes with the right
    // one, exactly one deletes and the others find no object.
    let st = status_of(
        &c0.delete_object()
            .bucket(BUCKET)
            .key("src")
            .if_match("\"0123456789abcdef0123456789abcdef\"")
            .send()
            .await
            .unwrap_err(),
    );
    assert_eq!(st, 412);
    let mut tasks = Vec::new();
    for c in 0..6 {
        let (client, etag) = (clients[c % 3].clone(), src_etag.clone());
        tasks.push(tokio::spawn(async move {
            client
                .delete_object()
                .bucket(BUCKET)
                .key("src")
                .if_match(etag)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| status_of(&e))
        }));
    }
    let (mut deleted, mut unknown) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => deleted += 1,
            Err(503) => unknown += 1,
            Err(st) => assert!(st == 404 || st == 412 || st == 409, "a losing delete got {st}"),
        }
    }
    assert!(deleted <= 1, "two conditional deletes won");
    assert!(deleted == 1 || unknown > 0, "no conditional delete won");
    assert_eq!(
        status_of(&c0.get_object().bucket(BUCKET).key("src").send().await.unwrap_err()),
        404
    );

    // A conditional write at ONE is carried out at QUORUM, and the response says so.
    let seen = Upgraded::default();
    clients[1]
        .put_object()
        .bucket(BUCKET)
        .key("at-one")
        .if_none_match("*")
        .body(b"x".to_vec().into())
        .customize()
        .mutate_request(|r| {
            r.headers_mut().insert("x-ironbucket-consistency", "ONE");
        })
        .interceptor(seen.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(seen.0.lock().unwrap().as_deref(), Some("QUORUM"));
    let seen = Upgraded::default();
    clients[1]
        .put_object()
        .bucket(BUCKET)
        .key("plain")
        .body(b"x".to_vec().into())
        .customize()
        .mutate_request(|r| {
            r.headers_mut().insert("x-ironbucket-consistency", "ONE");
        })
        .interceptor(seen.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        *seen.0.lock().unwrap(),
        None,
        "an unconditional write at ONE stays at ONE"
    );
}

/// Object lock changes and deletes of the version they protect, racing through different nodes,
/// are ordered by a round on the key: a legal hold that was acknowledged is never followed by a
/// successful delete of its version (the hold came first and the delete is refused, or the
/// delete came first and the hold finds no version).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_legal_hold_and_a_delete_of_its_version_never_both_win() {
    let (nodes, _seeds, _ports) = cluster_with(3, &["--replication-factor", "3"]).await;
    let clients: Vec<Client> = nodes.iter().map(|n| plain_client(&n.s3)).collect();
    let c0 = &clients[0];
    c0.create_bucket()
        .bucket("locked")
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    let mut versions = Vec::new();
    for i in 0..40 {
        let v = c0
            .put_object()
            .bucket("locked")
            .key(format!("k{}", i % 4))
            .body(format!("v{i}").into_bytes().into())
            .send()
            .await
            .unwrap()
            .version_id()
            .unwrap()
            .to_string();
        versions.push((format!("k{}", i % 4), v));
    }
    let mut tasks = Vec::new();
    for (i, (key, v)) in versions.iter().cloned().enumerate() {
        let holder = clients[i % 3].clone();
        let deleter = clients[(i + 1) % 3].clone();
        let (k2, v2) = (key.clone(), v.clone());
        let hold = tokio::spawn(async move {
            holder
                .put_object_legal_hold()
                .bucket("locked")
                .key(key)
                .version_id(v)
                .legal_hold(
                    aws_sdk_s3::types::ObjectLockLegalHold::builder()
                        .status(aws_sdk_s3::types::ObjectLockLegalHoldStatus::On)
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| status_of(&e))
        });
        let delete = tokio::spawn(async move {
            deleter
                .delete_object()
                .bucket("locked")
                .key(k2)
                .version_id(v2)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| status_of(&e))
        });
        tasks.push((i, hold, delete));
    }
    let (mut held, mut deleted) = (0, 0);
    for (i, hold, delete) in tasks {
        let (h, d) = (hold.await.unwrap(), delete.await.unwrap());
        let (key, v) = &versions[i];
        let exists = c0
            .head_object()
            .bucket("locked")
            .key(key)
            .version_id(v)
            .customize()
            .mutate_request(|r| {
                r.headers_mut().insert("x-ironbucket-consistency", "ALL");
            })
            .send()
            .await
            .is_ok();
        // A 409 (collided until the timeout) or 503 (outcome unknown) is possible on a loaded
        // machine; what must never happen is both winning, or a held version gone.
        match (h, d) {
            (Ok(()), Err(st)) if st == 403 || st == 409 || st == 503 => {
                assert!(
                    exists,
                    "version {i}: held, delete refused ({st}), but the version is gone"
                );
                held += 1;
            }
            (Err(st), Ok(())) if st == 404 || st == 405 || st == 409 || st == 503 => {
                assert!(!exists, "version {i}: deleted, yet it is still there");
                deleted += 1;
            }
            (Err(a), Err(b)) if [409, 503].contains(&a) && [409, 503].contains(&b) => {}
            other => panic!("version {i}: legal hold and delete ended {other:?}"),
        }
    }
    eprintln!("legal hold vs delete on 40 versions: {held} held first, {deleted} deleted first");
    assert!(held + deleted >= 10, "{held} held and {deleted} deleted of 40");
}

/// A conditional write chosen by two replicas (the third is slow to accept), one of which is
/// lost before its commit: the coordinator has the third replica accept and commit the chosen
/// value and answers 200. It answered 503 ("not acknowledged") while its own commit applied the
/// write, and the client's retry then got 412 (the chaos suite's `kill-random` with
/// `--conditional` found it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chosen_write_whose_accepter_is_lost_before_the_commit_is_applied_and_acknowledged() {
    let ports = free_ports(3);
    let seeds = seeds_of(&ports);
    let extra = ["--replication-factor", "3", "--write-consistency", "QUORUM"];
    let start = |i: usize, envs: &[(&str, &str)]| start_node(i, &ports, &seeds, &extra, envs);
    let nodes = [
        start(0, &[]),
        // node-2 accepts, then every commit it is sent fails (as if it died in between).
        start(1, &[("FAILPOINTS", "cas-commit-lost=return")]),
        // node-3 takes 1 s over every body it is sent, its accept included: the write is
        // chosen by node-1 and node-2 before it accepts.
        start(2, &[("FAILPOINTS", "replica-delay=return(1000)")]),
    ];
    converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(60)).await;
    let c1 = plain_client(&nodes[0].s3);
    c1.create_bucket().bucket("lost").send().await.unwrap();
    let body = data(2048, 7);
    c1.put_object()
        .bucket("lost")
        .key("k")
        .if_none_match("*")
        .body(body.clone().into())
        .send()
        .await
        .expect("the chosen write is acknowledged");
    // Applied at the level: node-1 and node-3 hold it (node-2 refuses every commit).
    poll_until("the write on node-1 and node-3", Duration::from_secs(10), || async {
        let v = located(&nodes[0], "lost", "k").await;
        let holders: Vec<String> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["versions"].as_array().is_some_and(|vs| !vs.is_empty()))
            .map(|n| n["node"].as_str().unwrap().to_string())
            .collect();
        (holders.contains(&"node-1".to_string()) && holders.contains(&"node-3".to_string())).then_some(())
    })
    .await;
    let got = c1.get_object().bucket("lost").key("k").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().as_ref(), body.as_slice());
    // The key exists now: a second If-None-Match write fails (412; on a loaded machine node-2,
    // which missed the commit, may not be brought up in time: 503; or its rounds, finishing the
    // value node-2 still holds accepted, run out of time: 409 ConditionalRequestConflict, seen
    // once in CI) and writes nothing.
    let e = c1
        .put_object()
        .bucket("lost")
        .key("k")
        .if_none_match("*")
        .body(data(10, 8).into())
        .send()
        .await
        .unwrap_err();
    assert!([409, 412, 503].contains(&status_of(&e)), "{e:?}");
    let got = c1.get_object().bucket("lost").key("k").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().as_ref(), body.as_slice());
}
