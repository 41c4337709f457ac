//! The load engine: prepare objects, run workers until the duration or object count is
//! reached, sample throughput every second, then clean up.

use crate::client::{Reply, S3Client, encode_key};
use crate::units::SizeSpec;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use md5::Digest;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Op {
    #[serde(rename = "PUT")]
    Put,
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "STAT")]
    Stat,
    #[serde(rename = "DELETE")]
    Delete,
    #[serde(rename = "LIST")]
    List,
    #[serde(rename = "MULTIPART")]
    Multipart,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "PUT",
            Op::Get => "GET",
            Op::Stat => "STAT",
            Op::Delete => "DELETE",
            Op::List => "LIST",
            Op::Multipart => "MULTIPART",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Put,
    Get,
    Mixed,
    List,
    Multipart,
    Delete,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Params {
    pub mode: Mode,
    pub endpoints: Vec<String>,
    pub bucket: String,
    pub prefix: String,
    pub size: SizeSpec,
    pub concurrency: usize,
    pub duration_secs: f64,
    pub objects: Option<u64>,
    pub prepare: u64,
    pub mix: Mix,
    pub part_size: u64,
    pub verify_ratio: f64,
    pub cleanup: bool,
    /// PUTs carry `If-None-Match: *`.
    pub if_none_match: bool,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Mix {
    pub get: u32,
    pub put: u32,
    pub delete: u32,
    pub stat: u32,
}

/// One finished operation.
#[derive(Clone, Copy)]
pub struct Sample {
    pub op: Op,
    pub micros: u32,
    pub ok: bool,
}

/// Random payloads with precomputed MD5s, so verifying an ETag costs nothing per request.
pub struct Payloads {
    buf: Bytes,
    variants: Vec<(usize, usize, String)>,
}

impl Payloads {
    pub fn new(size: SizeSpec, count: usize) -> Self {
        let mut rng = rand::thread_rng();
        let sizes: Vec<u64> = (0..count).map(|_| size.sample(&mut rng)).collect();
        let max = *sizes.iter().max().unwrap_or(&0) as usize;
        let total = max + count * 64;
        let mut raw = vec![0u8; total];
        rng.fill(&mut raw[..]);
        let buf = Bytes::from(raw);
        let variants = sizes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let off = i * 64;
                let len = *s as usize;
                (off, len, hex::encode(md5::Md5::digest(&buf[off..off + len])))
            })
            .collect();
        Self { buf, variants }
    }

    /// Variant 0: a full part; variant 1 (if `last` > 0): the final, shorter part, a prefix of
    /// the same bytes.
    pub fn for_parts(part_size: u64, last: u64) -> Self {
        let mut raw = vec![0u8; part_size as usize];
        rand::thread_rng().fill(&mut raw[..]);
        let buf = Bytes::from(raw);
        let mut variants = vec![(0, part_size as usize, hex::encode(md5::Md5::digest(&buf)))];
        if last > 0 {
            variants.push((0, last as usize, hex::encode(md5::Md5::digest(&buf[..last as usize]))));
        }
        Self { buf, variants }
    }

    pub fn pick(&self, rng: &mut impl Rng) -> usize {
        rng.gen_range(0..self.variants.len())
    }

    pub fn body(&self, v: usize) -> (Bytes, &str) {
        let (off, len, md5) = &self.variants[v];
        (self.buf.slice(*off..off + len), md5)
    }

    pub fn size(&self, v: usize) -> u64 {
        self.variants[v].1 as u64
    }
}

/// Live counters shared by workers, the sampler and the progress line.
#[derive(Default)]
pub struct Live {
    pub ops: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    pub started: AtomicU64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Tick {
    pub t: f64,
    pub ops: u64,
    pub bytes: u64,
    pub errors: u64,
}

pub struct Outcome {
    pub samples: Vec<Sample>,
    pub bytes: HashMap<Op, u64>,
    pub errors: HashMap<String, u64>,
    pub elapsed: Duration,
    pub timeline: Vec<Tick>,
}

struct Shared {
    client: S3Client,
    p: Params,
    payloads: Payloads,
    /// Objects known to exist: key and payload variant.
    objects: Mutex<Vec<(String, usize)>>,
    /// Mixed mode: objects PUT during the run; DELETEs take from here so they never race
    /// with GET/STAT on the prepared objects (a GET of a concurrently deleted key would be
    /// a benchmark artifact, not a server error).
    fresh: Mutex<Vec<(String, usize)>>,
    /// Every key this run created (for cleanup).
    created: Mutex<Vec<String>>,
    seq: AtomicU64,
    live: Live,
    stop: AtomicBool,
}

struct Worker {
    samples: Vec<Sample>,
    bytes: HashMap<Op, u64>,
    errors: HashMap<String, u64>,
}

impl Worker {
    fn record(&mut self, sh: &Shared, op: Op, t0: Instant, result: Result<u64, String>) {
        let micros = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
        match result {
            Ok(bytes) => {
                self.samples.push(Sample { op, micros, ok: true });
                *self.bytes.entry(op).or_default() += bytes;
                sh.live.ops.fetch_add(1, Ordering::Relaxed);
                sh.live.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Err(code) => {
                self.samples.push(Sample { op, micros, ok: false });
                *self.errors.entry(code).or_default() += 1;
                sh.live.ops.fetch_add(1, Ordering::Relaxed);
                sh.live.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn obj_path(sh: &Shared, key: &str) -> String {
    format!("/{}/{}", sh.p.bucket, encode_key(key))
}

fn check(r: &Reply, want: &[u16]) -> Result<(), String> {
    if want.contains(&r.status) {
        Ok(())
    } else {
        Err(r.error_code())
    }
}

async fn put_one(sh: &Shared, key: &str, v: usize) -> Result<u64, String> {
    let (body, md5) = sh.payloads.body(v);
    let len = body.len() as u64;
    let mut headers = vec![("content-length", len.to_string())];
    if sh.p.if_none_match {
        headers.push(("if-none-match", "*".to_string()));
    }
    let r = sh
        .client
        .send("PUT", &obj_path(sh, key), &headers, body)
        .await
        .map_err(|e| format!("ConnectionError: {}", root(&e)))?;
    check(&r, &[200])?;
    let etag = r.header("etag").unwrap_or("").trim_matches('"');
    if etag != md5 {
        return Err("BadETag".into());
    }
    Ok(len)
}

async fn get_one(sh: &Shared, key: &str, v: usize, verify: bool) -> Result<u64, String> {
    let r = sh
        .client
        .send_with(
            "GET",
            &obj_path(sh, key),
            &[],
            Bytes::new(),
            crate::client::Body::Count { md5: verify },
        )
        .await
        .map_err(|e| format!("ConnectionError: {}", root(&e)))?;
    check(&r, &[200])?;
    let (want, md5) = sh.payloads.body(v);
    if r.len != want.len() as u64 {
        return Err("ShortBody".into());
    }
    if verify && r.md5.as_deref() != Some(md5) {
        return Err("BodyMismatch".into());
    }
    Ok(r.len)
}

async fn stat_one(sh: &Shared, key: &str, v: usize) -> Result<u64, String> {
    let r = sh
        .client
        .send("HEAD", &obj_path(sh, key), &[], Bytes::new())
        .await
        .map_err(|e| format!("ConnectionError: {}", root(&e)))?;
    check(&r, &[200])?;
    let len: u64 = r
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    if len != sh.payloads.size(v) {
        return Err("WrongLength".into());
    }
    Ok(0)
}

async fn delete_one(sh: &Shared, key: &str) -> Result<u64, String> {
    let r = sh
        .client
        .send("DELETE", &obj_path(sh, key), &[], Bytes::new())
        .await
        .map_err(|e| format!("ConnectionError: {}", root(&e)))?;
    check(&r, &[204, 200])?;
    Ok(0)
}

fn root(e: &anyhow::Error) -> String {
    e.root_cause().to_string()
}

fn xml_value<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let a = body.find(&open)? + open.len();
    let b = body[a..].find(&close)? + a;
    Some(&body[a..b])
}

async fn multipart_one(sh: &Shared, key: &str, part: &Payloads) -> Result<u64, String> {
    let path = obj_path(sh, key);
    let total = sh.p.size.max;
    let r = sh
        .client
        .send("POST", &format!("{path}?uploads"), &[], Bytes::new())
        .await
        .map_err(|e| format!("ConnectionError: {}", root(&e)))?;
    check(&r, &[200])?;
    let body = String::from_utf8_lossy(&r.body).to_string();
    let upload_id = xml_value(&body, "UploadId").ok_or("NoUploadId")?.to_string();
    let mut etags = Vec::new();
    let mut sent = 0u64;
    let mut n = 1;
    while sent < total {
        let size = (total - sent).min(sh.p.part_size);
        let v = if size == sh.p.part_size { 0 } else { 1 };
        let (b, md5) = part.body(v);
        let r = sh
            .client
            .send(
                "PUT",
                &format!("{path}?partNumber={n}&uploadId={upload_id}"),
                &[("content-length", size.to_string())],
                b,
            )
            .await
            .map_err(|e| format!("ConnectionError: {}", root(&e)))?;
        check(&r, &[200])?;
        let etag = r.header("etag").unwrap_or("").trim_matches('"').to_string();
        if etag != md5 {
            return Err("BadPartETag".into());
        }
        etags.push(etag);
        sent += size;
        n += 1;
    }
    let mut xml = String::from("<CompleteMultipartUpload>");
    for (i, e) in etags.iter().enumerate() {
        xml.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>\"{e}\"</ETag></Part>",
            i + 1
        ));
    }
    xml.push_str("</CompleteMultipartUpload>");
    let r = sh
        .client
        .send(
            "POST",
            &format!("{path}?uploadId={upload_id}"),
            &[("content-type", "application/xml".into())],
            Bytes::from(xml),
        )
        .await
        .map_err(|e| format!("ConnectionError: {}", root(&e)))?;
    check(&r, &[200])?;
    if r.body.windows(7).any(|w| w == b"<Error>") {
        return Err(r.error_code());
    }
    Ok(total)
}

/// Lists the run's prefix page by page; `token` carries the position between calls.
async fn list_one(sh: &Shared, token: &mut Option<String>) -> Result<u64, String> {
    let mut q = format!(
        "/{}?list-type=2&max-keys=1000&prefix={}",
        sh.p.bucket,
        encode_key(&sh.p.prefix)
    );
    if let Some(t) = token.as_ref() {
        q.push_str("&continuation-token=");
        q.push_str(&encode_key(t).replace('/', "%2F"));
    }
    let r = sh
        .client
        .send("GET", &q, &[], Bytes::new())
        .await
        .map_err(|e| format!("ConnectionError: {}", root(&e)))?;
    check(&r, &[200])?;
    let body = String::from_utf8_lossy(&r.body);
    let keys = body.matches("<Key>").count() as u64;
    let truncated = xml_value(&body, "IsTruncated") == Some("true");
    *token = if truncated {
        xml_value(&body, "NextContinuationToken").map(str::to_string)
    } else {
        None
    };
    if truncated && token.is_none() {
        return Err("NoContinuationToken".into());
    }
    if keys == 0 && sh.p.prepare > 0 {
        return Err("EmptyListing".into());
    }
    Ok(keys)
}

fn random_object(sh: &Shared, rng: &mut impl Rng) -> Option<(String, usize)> {
    let objects = sh.objects.lock().ok()?;
    if objects.is_empty() {
        return None;
    }
    let i = rng.gen_range(0..objects.len());
    Some(objects[i].clone())
}

fn new_key(sh: &Shared) -> String {
    let n = sh.seq.fetch_add(1, Ordering::Relaxed);
    format!("{}obj-{n:09}", sh.p.prefix)
}

async fn worker(sh: Arc<Shared>, deadline: Instant, limit: u64, part: Arc<Payloads>) -> Worker {
    let mut w = Worker {
        samples: Vec::with_capacity(4096),
        bytes: HashMap::new(),
        errors: HashMap::new(),
    };
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut token = None;
    let mix = sh.p.mix;
    let mix_total = (mix.get + mix.put + mix.delete + mix.stat).max(1);
    loop {
        if sh.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        if sh.live.started.fetch_add(1, Ordering::Relaxed) >= limit {
            break;
        }
        let op = match sh.p.mode {
            Mode::Put => Op::Put,
            Mode::Get => Op::Get,
            Mode::List => Op::List,
            Mode::Multipart => Op::Multipart,
            Mode::Delete => Op::Delete,
            Mode::Mixed => {
                let x = rng.gen_range(0..mix_total);
                if x < mix.get {
                    Op::Get
                } else if x < mix.get + mix.put {
                    Op::Put
                } else if x < mix.get + mix.put + mix.delete {
                    Op::Delete
                } else {
                    Op::Stat
                }
            }
        };
        let t0 = Instant::now();
        let result = match op {
            Op::Put => {
                let key = new_key(&sh);
                let v = sh.payloads.pick(&mut rng);
                let r = put_one(&sh, &key, v).await;
                if r.is_ok() {
                    if let Ok(mut c) = sh.created.lock() {
                        c.push(key.clone());
                    }
                    if sh.p.mode == Mode::Mixed
                        && let Ok(mut o) = sh.fresh.lock()
                    {
                        o.push((key, v));
                    }
                }
                r
            }
            Op::Get | Op::Stat => {
                let pick = random_object(&sh, &mut rng);
                match pick {
                    None => Err("NoObjectsLeft".to_string()),
                    Some((key, v)) if op == Op::Get => {
                        let verify = rng.gen_bool(sh.p.verify_ratio.clamp(0.0, 1.0));
                        get_one(&sh, &key, v, verify).await
                    }
                    Some((key, v)) => stat_one(&sh, &key, v).await,
                }
            }
            Op::Delete => {
                let pool = if sh.p.mode == Mode::Mixed {
                    &sh.fresh
                } else {
                    &sh.objects
                };
                let pick = pool.lock().ok().and_then(|mut o| {
                    if o.is_empty() {
                        None
                    } else {
                        let i = rng.gen_range(0..o.len());
                        Some(o.swap_remove(i))
                    }
                });
                match pick {
                    None => {
                        // Nothing left to delete: the delete run is over; in mixed mode,
                        // nothing written yet to delete, so choose another operation.
                        if sh.p.mode == Mode::Delete {
                            break;
                        }
                        sh.live.started.fetch_sub(1, Ordering::Relaxed);
                        continue;
                    }
                    Some((key, _)) => delete_one(&sh, &key).await,
                }
            }
            Op::List => list_one(&sh, &mut token).await,
            Op::Multipart => {
                let key = new_key(&sh);
                let r = multipart_one(&sh, &key, &part).await;
                if r.is_ok()
                    && let Ok(mut c) = sh.created.lock()
                {
                    c.push(key);
                }
                r
            }
        };
        w.record(&sh, op, t0, result);
    }
    w
}

pub type Progress = Box<dyn Fn(&str, u64, u64, u64, f64) + Send + Sync>;

/// Creates the bucket if needed, prepares objects, runs the measured phase, cleans up.
pub async fn run(p: Params, access_key: &str, secret_key: &str, region: &str, progress: Progress) -> Result<Outcome> {
    let client = S3Client::new(p.endpoints.clone(), access_key, secret_key, region, p.concurrency);
    let r = client
        .send("PUT", &format!("/{}", p.bucket), &[], Bytes::new())
        .await
        .context("cannot reach the endpoint")?;
    if r.status != 200
        && !matches!(
            r.error_code().as_str(),
            "BucketAlreadyOwnedByYou" | "BucketAlreadyExists"
        )
    {
        // Report it as the run's result rather than aborting: a wrong secret, for instance,
        // must show up as 100% SignatureDoesNotMatch.
        progress(&format!("create bucket failed: {}", r.error_code()), 0, 0, 1, 0.0);
    }
    let variants = if p.size.min == p.size.max { 8 } else { 64 };
    let payloads = Payloads::new(
        if p.mode == Mode::Multipart {
            SizeSpec { min: 0, max: 0 }
        } else {
            p.size
        },
        variants,
    );
    let part = Arc::new(if p.mode == Mode::Multipart {
        Payloads::for_parts(p.part_size, p.size.max % p.part_size)
    } else {
        Payloads::new(SizeSpec { min: 0, max: 0 }, 1)
    });
    let sh = Arc::new(Shared {
        client,
        p: p.clone(),
        payloads,
        objects: Mutex::new(Vec::new()),
        fresh: Mutex::new(Vec::new()),
        created: Mutex::new(Vec::new()),
        seq: AtomicU64::new(0),
        live: Live::default(),
        stop: AtomicBool::new(false),
    });

    // Prepare objects for modes that read or delete them.
    if matches!(p.mode, Mode::Get | Mode::Mixed | Mode::List | Mode::Delete) && p.prepare > 0 {
        let prep_seq = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..p.concurrency.max(1) {
            let sh = sh.clone();
            let prep_seq = prep_seq.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::from_entropy();
                let mut failures = 0u64;
                while prep_seq.fetch_add(1, Ordering::Relaxed) < sh.p.prepare {
                    let key = new_key(&sh);
                    let v = sh.payloads.pick(&mut rng);
                    match put_one(&sh, &key, v).await {
                        Ok(_) => {
                            if let Ok(mut c) = sh.created.lock() {
                                c.push(key.clone());
                            }
                            if let Ok(mut o) = sh.objects.lock() {
                                o.push((key, v));
                            }
                        }
                        Err(_) => failures += 1,
                    }
                }
                failures
            }));
        }
        let start = Instant::now();
        let mut failed = 0;
        loop {
            let done = tasks.iter().all(|t| t.is_finished());
            let n = sh.objects.lock().map(|o| o.len()).unwrap_or(0) as u64;
            progress("preparing", n, 0, 0, start.elapsed().as_secs_f64());
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for t in tasks {
            failed += t.await.unwrap_or(0);
        }
        if failed > 0 && sh.objects.lock().map(|o| o.is_empty()).unwrap_or(true) {
            // Every preparation upload failed; the measured phase will report the errors.
            progress(
                &format!("preparation failed for all {failed} objects"),
                0,
                0,
                failed,
                0.0,
            );
        }
    }

    let limit = match (p.mode, p.objects) {
        (Mode::Put | Mode::Multipart, Some(n)) => n,
        (Mode::Delete, _) => u64::MAX,
        (_, Some(n)) if p.prepare == 0 => n,
        _ => u64::MAX,
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(p.duration_secs);
    let mut handles = Vec::new();
    for _ in 0..p.concurrency.max(1) {
        handles.push(tokio::spawn(worker(sh.clone(), deadline, limit, part.clone())));
    }
    let mut timeline = Vec::new();
    let (mut last_ops, mut last_bytes, mut last_err) = (0, 0, 0);
    let mut next_tick = start + Duration::from_secs(1);
    loop {
        let done = handles.iter().all(|h| h.is_finished());
        let now = Instant::now();
        let (ops, bytes, errs) = (
            sh.live.ops.load(Ordering::Relaxed),
            sh.live.bytes.load(Ordering::Relaxed),
            sh.live.errors.load(Ordering::Relaxed),
        );
        if now >= next_tick || done {
            timeline.push(Tick {
                t: now.duration_since(start).as_secs_f64(),
                ops: ops - last_ops,
                bytes: bytes - last_bytes,
                errors: errs - last_err,
            });
            (last_ops, last_bytes, last_err) = (ops, bytes, errs);
            next_tick += Duration::from_secs(1);
        }
        progress("running", ops, bytes, errs, now.duration_since(start).as_secs_f64());
        if done {
            break;
        }
        // A run that outlives its deadline by far (a hung server) is stopped.
        if now > deadline + Duration::from_secs(60) {
            sh.stop.store(true, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(100).min(next_tick.saturating_duration_since(Instant::now()))).await;
    }
    let elapsed = start.elapsed();
    let mut samples = Vec::new();
    let mut bytes: HashMap<Op, u64> = HashMap::new();
    let mut errors: HashMap<String, u64> = HashMap::new();
    for h in handles {
        let w = h.await.context("worker panicked")?;
        samples.extend(w.samples);
        for (k, v) in w.bytes {
            *bytes.entry(k).or_default() += v;
        }
        for (k, v) in w.errors {
            *errors.entry(k).or_default() += v;
        }
    }

    if p.cleanup {
        let keys: Vec<String> = sh.created.lock().map(|c| c.clone()).unwrap_or_default();
        cleanup(&sh, keys, &progress).await;
    }
    if samples.is_empty() {
        bail!("no operation ran: check --duration, --objects and the endpoint");
    }
    Ok(Outcome {
        samples,
        bytes,
        errors,
        elapsed,
        timeline,
    })
}

/// Deletes the keys this run created, 1000 per DeleteObjects request.
async fn cleanup(sh: &Arc<Shared>, keys: Vec<String>, progress: &Progress) {
    let start = Instant::now();
    let mut done = 0u64;
    for batch in keys.chunks(1000) {
        let mut xml = String::from("<Delete><Quiet>true</Quiet>");
        for k in batch {
            xml.push_str("<Object><Key>");
            xml.push_str(&k.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"));
            xml.push_str("</Key></Object>");
        }
        xml.push_str("</Delete>");
        let md5 = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            md5::Md5::digest(xml.as_bytes()),
        );
        let _ = sh
            .client
            .send(
                "POST",
                &format!("/{}?delete", sh.p.bucket),
                &[("content-md5", md5), ("content-type", "application/xml".into())],
                Bytes::from(xml),
            )
            .await;
        done += batch.len() as u64;
        progress("cleaning up", done, 0, 0, start.elapsed().as_secs_f64());
    }
}
