//! The checking client's load: workers that put, overwrite, read, list and delete keys with
//! known contents through randomly chosen nodes, retrying as an S3 SDK's standard mode does
//! (three attempts, exponential backoff with jitter), and record every operation: what was
//! asked, through which node and in which state that node was, when it was sent and answered,
//! and how it ended. The checker (`check.rs`) works on these records only.

use crate::target::{Creds, Endpoint};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use rand::Rng;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the fault schedule has done to a node, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// Running, no fault: requests are sent to it.
    Up,
    /// Killed or paused: no requests are sent to it (a load balancer's health check notices).
    Down,
    /// Cut off from the others but its S3 port reachable: requests still sent, must fail fast.
    Minority,
    /// Under a fault that leaves it serving (slow link, full disk, clock ahead): requests sent.
    Degraded,
    /// Not a node: the load balancer in front of them all (the compose cluster's).
    Balancer,
}

impl NodeState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => NodeState::Down,
            2 => NodeState::Minority,
            3 => NodeState::Degraded,
            4 => NodeState::Balancer,
            _ => NodeState::Up,
        }
    }
}

/// Every node's state and a counter bumped at each change (a request whose node changed state
/// while it was under way is counted apart).
pub struct States {
    state: Vec<AtomicU8>,
    epoch: Vec<AtomicU64>,
    /// When each node's state last changed (microseconds since `start`).
    since: Vec<AtomicU64>,
    start: Instant,
}

impl States {
    pub fn new(n: usize) -> Self {
        Self {
            state: (0..n).map(|_| AtomicU8::new(0)).collect(),
            epoch: (0..n).map(|_| AtomicU64::new(0)).collect(),
            since: (0..n).map(|_| AtomicU64::new(0)).collect(),
            start: Instant::now(),
        }
    }

    pub fn set(&self, i: usize, s: NodeState) {
        self.state[i].store(s as u8, Ordering::SeqCst);
        self.epoch[i].fetch_add(1, Ordering::SeqCst);
        self.since[i].store(self.start.elapsed().as_micros() as u64, Ordering::SeqCst);
    }

    /// How long ago any node's state last changed (microseconds); `None` before the first
    /// change.
    pub fn since_last_change_us(&self) -> Option<u64> {
        let newest = (0..self.state.len())
            .filter(|i| self.get(*i).0 != NodeState::Balancer && self.epoch[*i].load(Ordering::SeqCst) > 0)
            .map(|i| self.since[i].load(Ordering::SeqCst))
            .max()?;
        Some((self.start.elapsed().as_micros() as u64).saturating_sub(newest))
    }

    /// How long node `i` has been in its state (microseconds).
    pub fn age_us(&self, i: usize) -> u64 {
        (self.start.elapsed().as_micros() as u64).saturating_sub(self.since[i].load(Ordering::SeqCst))
    }

    pub fn get(&self, i: usize) -> (NodeState, u64) {
        (
            NodeState::from_u8(self.state[i].load(Ordering::SeqCst)),
            self.epoch[i].load(Ordering::SeqCst),
        )
    }

    /// The sum of every node's counter: what a request through the load balancer watches (a
    /// change to any node behind it disturbs it).
    fn all_epochs(&self) -> u64 {
        self.epoch.iter().map(|e| e.load(Ordering::SeqCst)).sum()
    }

    /// Node `i`'s counter, or every node's for the load balancer.
    fn epoch_seen_by(&self, i: usize) -> u64 {
        match self.get(i) {
            (NodeState::Balancer, _) => self.all_epochs(),
            (_, epoch) => epoch,
        }
    }

    fn routable(&self) -> Vec<usize> {
        (0..self.state.len())
            .filter(|i| self.get(*i).0 != NodeState::Down)
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Put(u64),
    /// `If-None-Match: *`: writes the value only if the key holds nothing.
    Create(u64),
    /// `If-Match: <ETag of expected>`: writes `value` only if the key holds `expected`.
    Swap {
        expected: u64,
        value: u64,
    },
    Delete,
    Get,
    List,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// A write or delete acknowledged.
    Done,
    /// A GET answered: the value it returned, or none (404 NoSuchKey).
    Read(Option<u64>),
    /// A GET returned bytes that are no value ever written to the key.
    Corrupt(String),
    /// A conditional write answered that its condition did not hold (412 PreconditionFailed,
    /// 409 ConditionalRequestConflict, or 404 NoSuchKey for `If-Match` on no object): served,
    /// nothing written.
    ConditionFailed(String),
    /// A listing: its keys with their ETags.
    Listed(Vec<(usize, String)>),
    /// No attempt reached a node that could act on it (refused connection, a 503 saying the
    /// request was not sent): it did nothing.
    NotSent(String),
    /// An attempt may have taken effect (timeout, dropped connection, other 5xx).
    Unknown(String),
    /// A 4xx: refused, nothing done (never expected of this load).
    Rejected(u16, String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub kind: Kind,
    pub key: usize,
    pub node: usize,
    pub state: NodeState,
    /// The node's state changed while the request was under way (for the load balancer: the
    /// state of any node behind it).
    pub disturbed: bool,
    /// Attempts the load balancer answered itself with 502 or 504 (it could not reach the node it
    /// chose: gone, and not yet found so by its checks), or cut off without an answer (its
    /// health check took the node out, frozen, while the request waited on it). The nodes never
    /// answer 502 or 504, and a node's own connection is never cut without an answer but by a
    /// kill (a change of state, counted apart).
    pub gateway_errors: u8,
    /// Sent through the load balancer less than [`BALANCER_CHECK_US`] after a node's state
    /// changed: before the balancer's health checks could have found the change.
    pub balancer_checking: bool,
    /// How long the node had been in its state when the request was sent (microseconds).
    pub state_age_us: u64,
    pub call_us: u64,
    pub ret_us: u64,
    pub attempts: u8,
    /// A write retried after an attempt that may have acted (no answer, a 5xx other than "not
    /// sent"): both may have taken effect, at different times (a store cannot tell a retry
    /// from a new request; an S3 SDK retries so too). The checker counts that attempt as a write
    /// of its own, of unknown outcome.
    pub retried_after_maybe: bool,
    /// How long the slowest attempt took to be answered (or to fail).
    pub slowest_attempt_us: u64,
    pub outcome: Outcome,
}

impl Record {
    pub fn succeeded(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Done | Outcome::Read(_) | Outcome::Listed(_) | Outcome::ConditionFailed(_)
        )
    }
}

/// The load's shape.
#[derive(Debug, Clone)]
pub struct Load {
    pub keys: usize,
    pub max_size: usize,
    /// One key in four written by conditional writes only (`--conditional`).
    pub conditional: bool,
}

/// The key's name.
pub fn key_name(k: usize) -> String {
    format!("k{k:03}")
}

/// The body of value `id` of key `k`: a header naming both, then bytes derived from `id`.
pub fn body(k: usize, id: u64, max_size: usize) -> Vec<u8> {
    let mut b = format!("chaos key={k} value={id}\n").into_bytes();
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (k as u64);
    let len = b.len() + (x % max_size.max(1) as u64) as usize;
    while b.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.push(x as u8);
    }
    b
}

/// The ETag of value `id` of key `k` (the MD5 of its body, as S3 gives a single-part upload).
pub fn etag(k: usize, id: u64, max_size: usize) -> String {
    hex::encode(<md5::Md5 as md5::Digest>::digest(body(k, id, max_size)))
}

/// The value a body claims to be, if it is exactly that value's body.
pub fn value_of(k: usize, bytes: &[u8], max_size: usize) -> Result<u64, String> {
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let parsed = line
        .strip_prefix("chaos key=")
        .and_then(|r| r.split_once(" value="))
        .and_then(|(key, id)| Some((key.parse::<usize>().ok()?, id.parse::<u64>().ok()?)));
    match parsed {
        Some((key, id)) if key == k && body(k, id, max_size) == bytes => Ok(id),
        Some((key, id)) => Err(format!(
            "{} bytes claiming key {key} value {id} are not that value",
            bytes.len()
        )),
        None => Err(format!("{} bytes that are no value of this load", bytes.len())),
    }
}

/// The client of one node (or load balancer), as the load uses it: path style, no retries of
/// the SDK's own (the load retries, recording each attempt), 5 s per attempt; over HTTPS it
/// trusts only the endpoint's CA.
pub fn client(endpoint: &Endpoint, creds: &Creds) -> anyhow::Result<Client> {
    let http = match &endpoint.ca {
        None => aws_smithy_http_client::Builder::new().build_http(),
        Some(ca) => {
            use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
            let trust = TrustStore::empty()
                .with_native_roots(false)
                .with_pem_certificate(ca.clone());
            let ctx = TlsContext::builder()
                .with_trust_store(trust)
                .build()
                .map_err(|e| anyhow::anyhow!("the CA of {} is not usable: {e}", endpoint.url))?;
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
                .tls_context(ctx)
                .build_https()
        }
    };
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&endpoint.url)
        .credentials_provider(Credentials::new(
            &creds.access_key,
            &creds.secret_key,
            None,
            None,
            "chaos",
        ))
        .force_path_style(true)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(5))
                .build(),
        )
        .http_client(http)
        .build();
    Ok(Client::from_conf(conf))
}

tokio::task_local! {
    /// Attempts of the current operation answered 502 or 504 or cut off without an answer (see
    /// [`Record::gateway_errors`]).
    static GATEWAY: std::cell::Cell<u8>;
}

/// Counts an attempt of the current operation the load balancer answered itself.
fn count_gateway_error() {
    let _ = GATEWAY.try_with(|g| g.set(g.get().saturating_add(1)));
}

/// How one attempt ended.
enum Attempt<T> {
    Ok(T),
    NotFound,
    NotSent(String),
    Maybe(String),
    Rejected(u16, String),
}

fn classify<E: ProvideErrorMetadata + std::fmt::Debug, T>(
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Attempt<T> {
    let status = e.raw_response().map(|r| r.status().as_u16());
    if let Some(502 | 504) = status {
        count_gateway_error();
    }
    let message = e.message().unwrap_or_default().to_string();
    match (&e, status) {
        (_, Some(404)) if e.code() == Some("NoSuchKey") => Attempt::NotFound,
        (_, Some(503)) if message.contains("was not sent") => Attempt::NotSent(format!("503: {message}")),
        (_, Some(s)) if (400..500).contains(&s) && s != 408 && s != 429 => {
            Attempt::Rejected(s, format!("{}: {message}", e.code().unwrap_or("?")))
        }
        (_, Some(s)) => Attempt::Maybe(format!("{s} {}: {message}", e.code().unwrap_or("?"))),
        (SdkError::DispatchFailure(_), None) => {
            let text = format!("{e:?}");
            if text.contains("Connection refused") || text.contains("ConnectionRefused") {
                Attempt::NotSent("connection refused".into())
            } else if text.contains("IncompleteMessage") || text.contains("connection closed before message completed")
            {
                count_gateway_error();
                Attempt::Maybe(format!("closed without an answer: {}", short(&text)))
            } else {
                Attempt::Maybe(format!("dispatch failure: {}", short(&text)))
            }
        }
        (SdkError::TimeoutError(_), None) => Attempt::Maybe("no answer within 5 s".into()),
        _ => Attempt::Maybe(short(&format!("{e:?}"))),
    }
}

fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

/// Runs `attempt` up to three times as the SDKs' standard retry mode does: again after a
/// transient failure (5xx, timeout, connection error), after `rand(0..1) × 2^n` seconds.
async fn with_retries<T, F, Fut>(mut attempt: F) -> (Vec<Attempt<T>>, u64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Attempt<T>>,
{
    let mut out = Vec::new();
    let mut slowest = 0;
    for n in 0..3u8 {
        let t = Instant::now();
        let a = attempt().await;
        slowest = slowest.max(t.elapsed().as_micros() as u64);
        let retry = matches!(a, Attempt::NotSent(_) | Attempt::Maybe(_));
        out.push(a);
        if !retry || n == 2 {
            break;
        }
        let wait = rand::thread_rng().gen_range(0.0..1.0) * f64::from(1u32 << n);
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
    (out, slowest)
}

/// One write attempt: acknowledged, or how it failed.
async fn acknowledged<O, E: ProvideErrorMetadata + std::fmt::Debug>(
    sent: impl std::future::Future<Output = Result<O, SdkError<E, aws_sdk_s3::config::http::HttpResponse>>>,
) -> Attempt<()> {
    match sent.await {
        Ok(_) => Attempt::Ok(()),
        Err(e) => classify(e),
    }
}

/// A write's outcome from its attempts (and how many there were, and the slowest one's time):
/// done if one was; unknown if one may have acted.
fn write_outcome((attempts, slowest): (Vec<Attempt<()>>, u64)) -> (Outcome, u8, u64) {
    let count = attempts.len() as u8;
    (write_attempts(attempts), count, slowest)
}

fn write_attempts(attempts: Vec<Attempt<()>>) -> Outcome {
    let mut maybe = None;
    let mut last = Outcome::NotSent(String::new());
    for a in attempts {
        match a {
            Attempt::Ok(()) | Attempt::NotFound => return Outcome::Done,
            Attempt::Maybe(m) => maybe = Some(m),
            Attempt::NotSent(m) => last = Outcome::NotSent(m),
            Attempt::Rejected(s, m) => last = Outcome::Rejected(s, m),
        }
    }
    match maybe {
        Some(m) => Outcome::Unknown(m),
        None => last,
    }
}

/// A conditional write's outcome from its attempts: done if one was; its condition failed if
/// the last attempt said so and no earlier one may have acted (a retry of a write that did act
/// finds its own value there: then the outcome is unknown).
fn conditional_outcome((attempts, slowest): (Vec<Attempt<()>>, u64)) -> (Outcome, u8, u64) {
    let count = attempts.len() as u8;
    let mut maybe = None;
    let mut last = Outcome::NotSent(String::new());
    for a in attempts {
        match a {
            Attempt::Ok(()) => return (Outcome::Done, count, slowest),
            Attempt::Maybe(m) => maybe = Some(m),
            Attempt::NotSent(m) => last = Outcome::NotSent(m),
            Attempt::NotFound => last = Outcome::ConditionFailed("404 NoSuchKey".into()),
            Attempt::Rejected(st @ (409 | 412), m) => last = Outcome::ConditionFailed(format!("{st} {m}")),
            Attempt::Rejected(st, m) => last = Outcome::Rejected(st, m),
        }
    }
    let outcome = match (maybe, last) {
        (Some(m), Outcome::ConditionFailed(why)) => Outcome::Unknown(format!("{m}; then {why}")),
        (Some(m), Outcome::NotSent(_)) => Outcome::Unknown(m),
        (_, last) => last,
    };
    (outcome, count, slowest)
}

/// What one worker shares with the others.
pub struct Shared {
    /// One per node, then the load balancer's if there is one.
    pub clients: Vec<Client>,
    pub bucket: String,
    pub states: Arc<States>,
    pub records: Mutex<Vec<Record>>,
    pub next_value: AtomicU64,
    pub start: Instant,
    pub load: Load,
}

impl Shared {
    pub fn micros(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// How long the load balancer's health checks take at most to find a node gone, frozen or cut
/// off (HAProxy: a check every 500 ms, out after 2 failures, a check timing out after 1 s).
pub const BALANCER_CHECK_US: u64 = 2_000_000;

/// One operation through node `node`, recorded.
pub async fn run_op(s: &Shared, kind: Kind, key: usize, node: usize) -> Record {
    GATEWAY
        .scope(std::cell::Cell::new(0), run_op_counted(s, kind, key, node))
        .await
}

async fn run_op_counted(s: &Shared, kind: Kind, key: usize, node: usize) -> Record {
    let (state, _) = s.states.get(node);
    let epoch = s.states.epoch_seen_by(node);
    let state_age_us = s.states.age_us(node);
    let balancer_checking = state == NodeState::Balancer
        && s.states
            .since_last_change_us()
            .is_some_and(|age| age < BALANCER_CHECK_US);
    let c = &s.clients[node];
    let name = key_name(key);
    let call_us = s.micros();
    let max = s.load.max_size;
    let mut retried_after_maybe = false;
    let (outcome, attempts, slowest_attempt_us) = match &kind {
        Kind::Put(value) | Kind::Create(value) | Kind::Swap { value, .. } => {
            // The condition on what the key holds: none for a plain put.
            let if_match = match &kind {
                Kind::Swap { expected, .. } => Some(format!("\"{}\"", etag(key, *expected, max))),
                _ => None,
            };
            let if_none_match = matches!(kind, Kind::Create(_)).then(|| "*".to_string());
            let data = body(key, *value, max);
            let put = || {
                c.put_object()
                    .bucket(&s.bucket)
                    .key(&name)
                    .set_if_match(if_match.clone())
                    .set_if_none_match(if_none_match.clone())
                    .body(ByteStream::from(data.clone()))
                    .send()
            };
            let tried = with_retries(|| acknowledged(put())).await;
            retried_after_maybe = maybe_then_retried(&tried.0);
            if matches!(kind, Kind::Put(_)) {
                write_outcome(tried)
            } else {
                conditional_outcome(tried)
            }
        }
        Kind::Delete => {
            let tried = with_retries(|| acknowledged(c.delete_object().bucket(&s.bucket).key(&name).send())).await;
            retried_after_maybe = maybe_then_retried(&tried.0);
            write_outcome(tried)
        }
        Kind::Get => {
            let (a, slow) = with_retries(|| {
                let req = c.get_object().bucket(&s.bucket).key(&name);
                async move {
                    match req.send().await {
                        Ok(out) => match out.body.collect().await {
                            Ok(b) => Attempt::Ok(b.into_bytes().to_vec()),
                            Err(e) => Attempt::Maybe(format!("body cut short: {e}")),
                        },
                        Err(e) => classify(e),
                    }
                }
            })
            .await;
            let count = a.len() as u8;
            let outcome = match a.into_iter().last() {
                Some(Attempt::Ok(bytes)) => match value_of(key, &bytes, max) {
                    Ok(id) => Outcome::Read(Some(id)),
                    Err(why) => Outcome::Corrupt(why),
                },
                Some(Attempt::NotFound) => Outcome::Read(None),
                Some(Attempt::NotSent(m)) => Outcome::NotSent(m),
                Some(Attempt::Maybe(m)) => Outcome::Unknown(m),
                None => Outcome::Unknown("no attempt".into()),
                Some(Attempt::Rejected(st, m)) => Outcome::Rejected(st, m),
            };
            (outcome, count, slow)
        }
        Kind::List => {
            let (a, slow) = with_retries(|| {
                let req = c.list_objects_v2().bucket(&s.bucket);
                async move {
                    match req.send().await {
                        Ok(out) => Attempt::Ok(
                            out.contents()
                                .iter()
                                .filter_map(|o| {
                                    let k = o.key()?.strip_prefix('k')?.parse::<usize>().ok()?;
                                    Some((k, o.e_tag().unwrap_or_default().trim_matches('"').to_string()))
                                })
                                .collect::<Vec<_>>(),
                        ),
                        Err(e) => classify(e),
                    }
                }
            })
            .await;
            let count = a.len() as u8;
            let outcome = match a.into_iter().last() {
                Some(Attempt::Ok(entries)) => Outcome::Listed(entries),
                Some(Attempt::NotSent(m)) => Outcome::NotSent(m),
                Some(Attempt::Rejected(st, m)) => Outcome::Rejected(st, m),
                Some(Attempt::Maybe(m)) => Outcome::Unknown(m),
                Some(Attempt::NotFound) | None => Outcome::Unknown("no answer".into()),
            };
            (outcome, count, slow)
        }
    };
    let ret_us = s.micros();
    let epoch_after = s.states.epoch_seen_by(node);
    let gateway_errors = GATEWAY.try_with(std::cell::Cell::get).unwrap_or(0);
    Record {
        kind,
        key,
        node,
        state,
        disturbed: epoch_after != epoch,
        gateway_errors,
        balancer_checking,
        state_age_us,
        call_us,
        ret_us,
        attempts,
        retried_after_maybe,
        slowest_attempt_us,
        outcome,
    }
}

/// Whether an attempt that may have acted was followed by another one.
fn maybe_then_retried<T>(attempts: &[Attempt<T>]) -> bool {
    let earlier = attempts.len().saturating_sub(1);
    attempts[..earlier].iter().any(|a| matches!(a, Attempt::Maybe(_)))
}

/// Whether key `k` is written only by conditional writes (one key in four). IronBucket orders
/// an unconditional write racing a conditional one of the same key by its stamp, not by the
/// conditional write's round (docs/cluster.md, "Not covered"; S3 promises no more), so the two
/// kinds are not mixed on one key: a history mixing them need not be linearizable.
pub fn conditional_key(k: usize) -> bool {
    k % 4 == 3
}

/// One worker: random operations on random keys through random routable nodes until `until`.
/// Conditional writes expect what this worker last saw of the key (its own reads and writes).
pub async fn worker(s: Arc<Shared>, until: Instant) {
    let mut seen: HashMap<usize, Option<u64>> = HashMap::new();
    while Instant::now() < until {
        let nodes = s.states.routable();
        if nodes.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let (node, key, roll) = {
            let mut r = rand::thread_rng();
            (
                nodes[r.gen_range(0..nodes.len())],
                r.gen_range(0..s.load.keys),
                r.gen_range(0..100u32),
            )
        };
        let new_value = || s.next_value.fetch_add(1, Ordering::SeqCst);
        let kind = match roll {
            0..48 if s.load.conditional && conditional_key(key) => match seen.get(&key).copied().flatten() {
                Some(expected) => Kind::Swap {
                    expected,
                    value: new_value(),
                },
                None => Kind::Create(new_value()),
            },
            0..40 => Kind::Put(new_value()),
            40..48 => Kind::Delete,
            48..92 => Kind::Get,
            _ => Kind::List,
        };
        let rec = run_op(&s, kind, key, node).await;
        match (&rec.kind, &rec.outcome) {
            (Kind::Put(v) | Kind::Create(v) | Kind::Swap { value: v, .. }, Outcome::Done) => {
                seen.insert(key, Some(*v));
            }
            (Kind::Delete, Outcome::Done) => {
                seen.insert(key, None);
            }
            (_, Outcome::Read(v)) => {
                seen.insert(key, *v);
            }
            _ => {}
        }
        s.records.lock().unwrap_or_else(|p| p.into_inner()).push(rec);
    }
}

#[cfg(test)]
mod states_tests {
    use super::*;

    #[test]
    fn the_last_change_is_a_nodes_not_the_balancers() {
        let st = States::new(4);
        st.set(3, NodeState::Balancer);
        assert_eq!(st.since_last_change_us(), None, "no node has changed yet");
        st.set(1, NodeState::Minority);
        let age = st.since_last_change_us().unwrap();
        assert!(age < BALANCER_CHECK_US, "{age}");
        std::thread::sleep(Duration::from_millis(20));
        assert!(st.since_last_change_us().unwrap() >= 20_000);
    }
}
