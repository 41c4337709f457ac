//! The replica's side of a conditional-write round (ADR 0015): promises, and values accepted but
//! not yet committed.
//!
//! - **Promises** live in memory. A replica takes a ballot (a stamp) into its clock like any
//!   write's stamp, refusing one further ahead than its bound, and starts with a *floor* of its
//!   start time plus that bound: every ballot it promised before a restart is below the floor, so
//!   nothing promised is forgotten by a restart. Until its clock passes the floor (the bound,
//!   5 s by default, after it starts) it takes part in no round. Promises untouched for
//!   [`PROMISE_TTL_MS`] are dropped and the floor raised to the highest dropped (bounded
//!   memory).
//! - **Accepted values** are durable: `<data>/cas/<id>.json` (the ballot and the write's header)
//!   and, for a body, `<id>.<ballot>.body`, both fsynced before the accept is answered. A value
//!   is applied through the ordinary stamped write of the store when committed, and then removed.
//!   An SSE-C key is never written to disk: it is kept in memory until the commit (a replica that
//!   restarts in between cannot apply that value; the others, and read repair with the key, do).
//! - **One round at a time.** A replica that promised a ballot refuses other prepares of the key
//!   for [`ROUND_GRACE_MS`] (renewed when the accept arrives, ended by the commit or a release):
//!   rounds that would preempt each other (Paxos's duelling proposers, each leaving a value
//!   accepted by some replicas) wait instead. Refusing is always safe; a proposer that died
//!   holds the key for the grace at most.
//! - Prepare, accept and commit of one key run one at a time (a lock per key stripe), so a
//!   prepare's read sees every value committed before its promise and none accepted after.

use super::history::{Fate, History, fate_uncommitted};
use super::{AcceptHeader, AcceptReply, AcceptedValue, Ballot, CasRead, Committed, Promise, Staged};
use crate::coordinator::wire_for;
use crate::quorum::Stamp;
use crate::wire::{self, wire_head};
use bytes::Bytes;
use futures::StreamExt;
use ironbucket_store::*;
use ironbucket_types::{Hlc, now_millis};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::io::AsyncWriteExt;

/// Promises kept at most this long after their key was last touched.
pub(crate) const PROMISE_TTL_MS: u64 = 600_000;
/// Committed values' records are kept this long; dropping one raises the commit floor, below
/// which an uncommitted value is taken as superseded.
pub(crate) const COMMITTED_TTL_MS: u64 = 600_000;
const COMMIT_FLOOR: &str = "commit-floor";
/// Keys with a promise kept at most (beyond it every promise is dropped and the floor raised).
const MAX_PROMISES: usize = 200_000;
const STRIPES: usize = 256;
/// How long a promise keeps other rounds of the key out.
pub(crate) const ROUND_GRACE_MS: u64 = 300;
/// Written (and synced) before a node's first promise: from then on a restart starts with a
/// floor.
const PROMISED: &str = "promised";

/// What is kept of the last value accepted for a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    ballot: Ballot,
    value: Staged,
    /// The staged body's file name (in the same directory), until the value is committed.
    body: Option<String>,
    /// Committed since: kept (without its body) for [`COMMITTED_TTL_MS`].
    #[serde(default)]
    committed: bool,
    /// The value was dropped uncommitted (superseded by a commit, or refused by the store for
    /// the request's own reasons); its fate is the last entry of `history`. Kept, without its
    /// body, for [`COMMITTED_TTL_MS`] so that the history outlives it.
    #[serde(default)]
    retired: bool,
    /// A commit of the value failed here with an error that may have left it durable.
    #[serde(default)]
    commit_failed: bool,
    /// The values this record replaced lately, and what became of each.
    #[serde(default)]
    history: History,
}

impl Record {
    /// Whether the record holds its value staged or committed (not retired).
    fn holds(&self, value: Stamp) -> bool {
        !self.retired && self.value.stamp() == value
    }
}

struct Promises {
    floor: Ballot,
    by_key: HashMap<String, (Ballot, u64)>,
    since_prune: u32,
}

pub(crate) struct Acceptor {
    dir: PathBuf,
    /// The marker that this node has promised a ballot is on disk.
    promised_once: std::sync::atomic::AtomicBool,
    fsync: bool,
    promises: Mutex<Promises>,
    /// The round under way per key: its ballot and until when it keeps others out.
    rounds: Mutex<HashMap<String, (Ballot, u64)>>,
    /// Uncommitted values accepted under a ballot below this were superseded by a committed one
    /// whose record has been dropped since (persisted in `commit-floor`).
    commit_floor: Mutex<Ballot>,
    /// SSE-C keys of staged values (never on disk), by value file id.
    customer_keys: Mutex<HashMap<String, [u8; 32]>>,
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl Acceptor {
    /// The acceptor of a node whose data lives in `data_dir`; `max_ahead_ms` is the bound on
    /// stamps it takes from others (its restart floor).
    pub fn open(data_dir: &Path, max_ahead_ms: u64, fsync: bool) -> Self {
        let dir = data_dir.join("cas");
        // A node that never promised anything has nothing to forget.
        let promised_before = dir.join(PROMISED).exists();
        let floor = Stamp {
            hlc: Hlc {
                physical: if promised_before {
                    now_millis() + max_ahead_ms + 1
                } else {
                    0
                },
                logical: 0,
            },
            node: 0,
        };
        let commit_floor = std::fs::read(dir.join(COMMIT_FLOOR))
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .unwrap_or_default();
        Self {
            promised_once: std::sync::atomic::AtomicBool::new(promised_before),
            commit_floor: Mutex::new(commit_floor),
            rounds: Mutex::new(HashMap::new()),
            dir,
            fsync,
            promises: Mutex::new(Promises {
                floor,
                by_key: HashMap::new(),
                since_prune: 0,
            }),
            customer_keys: Mutex::new(HashMap::new()),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// In how many milliseconds this replica takes part in conditional writes, if it does not
    /// yet (it started less than its clock bound ago: see [`Self::open`]).
    pub fn joins_in(&self) -> Option<u64> {
        let floor = self.promises.lock().unwrap_or_else(|p| p.into_inner()).floor;
        let now = now_millis();
        (floor.hlc.physical >= now).then(|| floor.hlc.physical - now + 1)
    }

    /// Refuses a ballot at or below the floor (this replica started less than its clock bound
    /// ago, or dropped that key's promise long ago).
    fn check_floor(&self, ballot: Ballot) -> Result<()> {
        let floor = self.promises.lock().unwrap_or_else(|p| p.into_inner()).floor;
        if ballot <= floor {
            let wait = floor.hlc.physical.saturating_sub(now_millis());
            return Err(Error::Unavailable(format!(
                "this replica started moments ago and takes part in conditional writes in {wait} ms (a ballot from before its start could otherwise be promised twice)"
            )));
        }
        Ok(())
    }

    fn id(bucket: &str, key: &str) -> String {
        let mut h = sha2::Sha256::new();
        h.update(bucket.as_bytes());
        h.update([0u8]);
        h.update(key.as_bytes());
        hex::encode(&h.finalize()[..20])
    }

    fn stripe(&self, id: &str) -> &tokio::sync::Mutex<()> {
        let n = u16::from_str_radix(&id[..4], 16).unwrap_or(0) as usize;
        &self.stripes[n % STRIPES]
    }

    /// The ballot a new one must exceed for `id`: its promise, or the floor.
    fn highest(&self, id: &str) -> Ballot {
        let p = self.promises.lock().unwrap_or_else(|p| p.into_inner());
        p.by_key.get(id).map_or(p.floor, |(b, _)| (*b).max(p.floor))
    }

    fn promise(&self, id: &str, ballot: Ballot) {
        let mut p = self.promises.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_millis();
        let e = p.by_key.entry(id.to_string()).or_insert((ballot, now));
        e.0 = e.0.max(ballot);
        e.1 = now;
        p.since_prune += 1;
        if p.since_prune >= 4096 || p.by_key.len() > MAX_PROMISES {
            p.since_prune = 0;
            prune(&mut p, now);
        }
    }

    async fn first_promise(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.promised_once.load(Ordering::Acquire) {
            return Ok(());
        }
        let io = |e: std::io::Error| Error::Internal(format!("cannot record the first promise: {e}"));
        tokio::fs::create_dir_all(&self.dir).await.map_err(io)?;
        let f = tokio::fs::File::create(self.dir.join(PROMISED)).await.map_err(io)?;
        if self.fsync {
            f.sync_all().await.map_err(io)?;
        }
        self.sync_dir().await?;
        self.promised_once.store(true, Ordering::Release);
        Ok(())
    }

    /// Another round's ballot holds the key: how much longer (ms).
    fn busy(&self, id: &str, ballot: Ballot) -> u64 {
        let now = now_millis();
        let mut r = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
        match r.get(id) {
            Some((b, until)) if *b != ballot && *until > now => *until - now,
            Some((_, until)) if *until <= now => {
                r.remove(id);
                0
            }
            _ => 0,
        }
    }

    /// `ballot`'s round holds the key for [`ROUND_GRACE_MS`] from now.
    fn hold(&self, id: &str, ballot: Ballot) {
        let mut r = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() > MAX_PROMISES {
            let now = now_millis();
            r.retain(|_, (_, until)| *until > now);
        }
        r.insert(id.to_string(), (ballot, now_millis() + ROUND_GRACE_MS));
    }

    /// The round of `ballot` (any round, when `None`) no longer holds the key.
    fn free(&self, id: &str, ballot: Option<Ballot>) {
        let mut r = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
        if r.get(id).is_some_and(|(b, _)| ballot.is_none_or(|x| x == *b)) {
            r.remove(id);
        }
    }

    /// Release: the round of `ballot` ends without a write.
    pub fn release(&self, bucket: &str, key: &str, ballot: Ballot) {
        self.free(&Self::id(bucket, key), Some(ballot));
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    async fn load(&self, id: &str) -> Result<Option<Record>> {
        match tokio::fs::read(self.record_path(id)).await {
            Ok(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| Error::Internal(format!("unreadable staged conditional write {id}: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Internal(format!("cannot read a staged conditional write: {e}"))),
        }
    }

    async fn store(&self, id: &str, rec: &Record) -> Result<()> {
        let io = |e: std::io::Error| Error::Internal(format!("cannot stage a conditional write: {e}"));
        let raw = serde_json::to_vec(rec).map_err(|e| Error::Internal(e.to_string()))?;
        let tmp = self.dir.join(format!("{id}.json.tmp"));
        let mut f = tokio::fs::File::create(&tmp).await.map_err(io)?;
        f.write_all(&raw).await.map_err(io)?;
        if self.fsync {
            f.sync_all().await.map_err(io)?;
        }
        drop(f);
        tokio::fs::rename(&tmp, self.record_path(id)).await.map_err(io)?;
        self.sync_dir().await
    }

    async fn sync_dir(&self) -> Result<()> {
        if !self.fsync {
            return Ok(());
        }
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|d| d.sync_all()))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::Internal(format!("cannot sync the staging directory: {e}")))
    }

    async fn remove(&self, id: &str, rec: &Record) {
        let _ = tokio::fs::remove_file(self.record_path(id)).await;
        if let Some(b) = &rec.body {
            let _ = tokio::fs::remove_file(self.dir.join(b)).await;
        }
        self.customer_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&value_id(id, rec.value.stamp()));
    }

    /// Prepare: promise `ballot` unless a higher one was promised, and read the key under it.
    pub async fn prepare(
        &self,
        local: &LocalStore,
        bucket: &str,
        key: &str,
        ballot: Ballot,
        read: CasRead,
    ) -> Result<Promise> {
        self.check_floor(ballot)?;
        local
            .clock()
            .observe(ballot.hlc)
            .map_err(|e| Error::Unavailable(format!("a replica refused the conditional write's stamp: {e}")))?;
        let id = Self::id(bucket, key);
        let _held = self.stripe(&id).lock().await;
        let highest = self.highest(&id);
        if ballot <= highest {
            return Ok(Promise {
                promised: false,
                highest,
                accepted: None,
                head: None,
                meta: None,
                busy_ms: 0,
                replaced: None,
            });
        }
        let busy_ms = self.busy(&id, ballot);
        if busy_ms > 0 {
            return Ok(Promise {
                promised: false,
                highest,
                accepted: None,
                head: None,
                meta: None,
                busy_ms,
                replaced: None,
            });
        }
        self.first_promise().await?;
        self.hold(&id, ballot);
        self.promise(&id, ballot);
        let mut record = self.load(&id).await?;
        if let Some(r) = &mut record
            && !r.committed
            && !r.retired
            && r.ballot < *self.commit_floor.lock().unwrap_or_else(|p| p.into_inner())
        {
            // Superseded by a commit whose record was dropped since.
            let fate = fate_uncommitted(local, &r.value, r.commit_failed);
            self.retire(&id, r, fate, ballot).await?;
        }
        let replaced = Some(record.as_ref().map_or_else(History::fresh, |r| r.history.clone()));
        let accepted = record.filter(|r| !r.retired).map(|r| AcceptedValue {
            ballot: r.ballot,
            value: r.value,
            committed: r.committed,
        });
        let (head, meta) = match read {
            CasRead::Head => (Some(wire_head(local, wire_for(bucket, key, None)).await?), None),
            CasRead::Version(v) => (
                Some(wire_head(local, wire_for(bucket, key, Some(&v))).await?),
                local.version_meta(bucket, key, &v).ok(),
            ),
        };
        Ok(Promise {
            promised: true,
            highest: ballot,
            accepted,
            head,
            meta,
            busy_ms: 0,
            replaced,
        })
    }

    /// Drops the uncommitted value of `rec` (its body too), keeping the record with `fate` at
    /// the end of its history (dropped under ballot `at`).
    async fn retire(&self, id: &str, rec: &mut Record, fate: Fate, at: Ballot) -> Result<()> {
        if let Some(b) = rec.body.take() {
            let _ = tokio::fs::remove_file(self.dir.join(b)).await;
        }
        self.customer_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&value_id(id, rec.value.stamp()));
        rec.history.push(rec.value.stamp(), fate, at);
        rec.retired = true;
        self.store(id, rec).await
    }

    /// Accept: stage `h.value` (and its body) unless a higher ballot was promised since.
    pub async fn accept(&self, local: &LocalStore, h: AcceptHeader, body: ByteStream) -> Result<AcceptReply> {
        self.check_floor(h.ballot)?;
        let (bucket, key) = (h.value.bucket().to_string(), h.value.key().to_string());
        let id = Self::id(&bucket, &key);
        if self.busy(&id, h.ballot) == 0 {
            self.hold(&id, h.ballot);
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| Error::Internal(format!("cannot create {}: {e}", self.dir.display())))?;
        let mut value = h.value;
        let body_file = if value.has_body() {
            let b = h.ballot;
            let name = format!("{id}.{}.{}.{}.body", b.hlc.physical, b.hlc.logical, b.node);
            self.write_body(&name, body).await?;
            Some(name)
        } else {
            None
        };
        let sse_c = match &mut value {
            Staged::Put(p) => p.sse_c.take(),
            _ => None,
        };
        let _held = self.stripe(&id).lock().await;
        let highest = self.highest(&id);
        if h.ballot < highest {
            if let Some(b) = &body_file {
                let _ = tokio::fs::remove_file(self.dir.join(b)).await;
            }
            return Ok(AcceptReply::Refused { highest });
        }
        self.promise(&id, h.ballot);
        let old = self.load(&id).await?;
        let history = match &old {
            None => History::fresh(),
            Some(o) if o.retired || o.value.stamp() == value.stamp() => o.history.clone(),
            Some(o) => {
                let fate = if o.committed {
                    Fate::Applied
                } else {
                    fate_uncommitted(local, &o.value, o.commit_failed)
                };
                let mut replaced = o.history.clone();
                replaced.push(o.value.stamp(), fate, h.ballot);
                replaced
            }
        };
        let rec = Record {
            ballot: h.ballot,
            value,
            body: body_file,
            committed: false,
            retired: false,
            commit_failed: false,
            history,
        };
        if let Some(k) = sse_c {
            self.customer_keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(value_id(&id, rec.value.stamp()), k);
        }
        self.store(&id, &rec).await?;
        if let Some(old) = old
            && old.body != rec.body
            && let Some(b) = old.body
        {
            let _ = tokio::fs::remove_file(self.dir.join(b)).await;
        }
        Ok(AcceptReply::Accepted)
    }

    async fn write_body(&self, name: &str, mut body: ByteStream) -> Result<()> {
        let io = |e: std::io::Error| Error::Internal(format!("cannot stage a conditional write's body: {e}"));
        let path = self.dir.join(name);
        let mut f = tokio::fs::File::create(&path).await.map_err(io)?;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => f.write_all(&c).await.map_err(io)?,
                Err(e) => {
                    drop(f);
                    let _ = tokio::fs::remove_file(&path).await;
                    return Err(Error::from_body(e));
                }
            }
        }
        if self.fsync {
            f.sync_all().await.map_err(io)?;
        }
        Ok(())
    }

    /// Accept by reference: the value this replica holds staged, under a new ballot.
    pub async fn accept_ref(&self, bucket: &str, key: &str, ballot: Ballot, value: Stamp) -> Result<AcceptReply> {
        self.check_floor(ballot)?;
        let id = Self::id(bucket, key);
        let _held = self.stripe(&id).lock().await;
        let highest = self.highest(&id);
        if ballot < highest {
            return Ok(AcceptReply::Refused { highest });
        }
        match self.load(&id).await? {
            Some(mut rec) if rec.holds(value) => {
                self.promise(&id, ballot);
                rec.ballot = ballot;
                self.store(&id, &rec).await?;
                Ok(AcceptReply::Accepted)
            }
            _ => Ok(AcceptReply::NotHeld),
        }
    }

    /// Commit: apply the staged value `value` through the store's stamped write. Its record is
    /// kept, marked committed, without the body.
    pub async fn commit(&self, local: &LocalStore, bucket: &str, key: &str, value: Stamp) -> Result<Committed> {
        // Fault injection for tests (`FAILPOINTS=cas-commit-lost=return`, builds with the
        // `failpoints` feature only): this replica is lost between its accept and the commit.
        #[cfg(feature = "failpoints")]
        if fail::eval("cas-commit-lost", |_| ()).is_some() {
            return Err(Error::Unavailable(
                "fault point cas-commit-lost: the replica is gone".into(),
            ));
        }
        let id = Self::id(bucket, key);
        let _held = self.stripe(&id).lock().await;
        self.free(&id, None);
        let mut rec = match self.load(&id).await? {
            Some(r) if r.holds(value) && !r.committed => r,
            Some(r) if r.holds(value) => return Ok(Committed::Already),
            _ => {
                let newest = local.newest_version(bucket, key, None)?;
                let held = newest.is_some_and(|v| {
                    Stamp {
                        hlc: v.hlc,
                        node: v.origin,
                    } >= value
                });
                return Ok(if held { Committed::Already } else { Committed::Missing });
            }
        };
        let r = self.apply(local, &id, &rec).await;
        match &r {
            // A replica failure keeps the value staged (the commit may be sent again); whether
            // it left the value applied is unknown from now on.
            Err(Error::Unavailable(_) | Error::Internal(_) | Error::Corrupt(_)) => {
                if !rec.commit_failed {
                    rec.commit_failed = true;
                    let _ = self.store(&id, &rec).await;
                }
            }
            // An answer about the request (an upload this replica never had): nothing applied,
            // nothing to keep but the history.
            Err(_) => {
                let at = rec.ballot;
                let _ = self.retire(&id, &mut rec, Fate::NotApplied, at).await;
            }
            Ok(_) => {
                let done = Record {
                    body: None,
                    committed: true,
                    ..rec.clone()
                };
                self.store(&id, &done).await?;
                if let Some(b) = &rec.body {
                    let _ = tokio::fs::remove_file(self.dir.join(b)).await;
                }
                self.customer_keys
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&value_id(&id, value));
            }
        }
        r
    }

    /// Drops committed values' records older than [`COMMITTED_TTL_MS`], raising the commit
    /// floor (persisted first) to the highest ballot dropped. Returns how many were dropped.
    pub async fn sweep(&self) -> Result<usize> {
        let io = |e: std::io::Error| Error::Internal(format!("cannot sweep committed conditional writes: {e}"));
        let mut dir = match tokio::fs::read_dir(&self.dir).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(e)),
        };
        let cutoff = std::time::SystemTime::now() - std::time::Duration::from_millis(COMMITTED_TTL_MS);
        let mut old = Vec::new();
        while let Some(e) = dir.next_entry().await.map_err(io)? {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            let modified = e.metadata().await.and_then(|m| m.modified()).map_err(io)?;
            if modified < cutoff {
                old.push(id.to_string());
            }
        }
        let mut dropped = 0;
        for id in old {
            let _held = self.stripe(&id).lock().await;
            let Some(rec) = self.load(&id).await? else {
                continue;
            };
            if rec.retired {
                self.remove(&id, &rec).await;
                dropped += 1;
                continue;
            }
            if !rec.committed {
                continue;
            }
            let raised = {
                let mut floor = self.commit_floor.lock().unwrap_or_else(|p| p.into_inner());
                (rec.ballot > *floor).then(|| {
                    *floor = rec.ballot;
                    *floor
                })
            };
            if let Some(floor) = raised {
                let raw = serde_json::to_vec(&floor).map_err(|e| Error::Internal(e.to_string()))?;
                let tmp = self.dir.join(format!("{COMMIT_FLOOR}.tmp"));
                tokio::fs::write(&tmp, raw).await.map_err(io)?;
                tokio::fs::rename(&tmp, self.dir.join(COMMIT_FLOOR)).await.map_err(io)?;
                self.sync_dir().await?;
            }
            self.remove(&id, &rec).await;
            dropped += 1;
        }
        Ok(dropped)
    }

    async fn apply(&self, local: &LocalStore, id: &str, rec: &Record) -> Result<Committed> {
        match rec.value.clone() {
            Staged::Put(mut h) => {
                h.sse_c = self
                    .customer_keys
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&value_id(id, rec.value.stamp()))
                    .copied();
                let name = rec
                    .body
                    .as_ref()
                    .ok_or_else(|| Error::Internal("a staged PUT without its body".into()))?;
                let body = file_stream(self.dir.join(name)).await?;
                wire::put_stamped(local, *h, body)
                    .await
                    .map(|i| Committed::Object(Box::new(i)))
            }
            Staged::Delete(d) => local
                .delete_object_at(&d.bucket, &d.key, d.version_id.as_deref(), d.bypass, d.hlc, d.origin)
                .await
                .map(Committed::Deleted),
            Staged::Complete(c) => local
                .complete_multipart_upload_at(c.req, c.hlc, c.origin)
                .await
                .map(|i| Committed::Object(Box::new(i))),
            Staged::Meta(m) => match m.op {
                crate::wire::MetaOp::Change { version_id, change, at } => local
                    .change_meta_at(&m.bucket, &m.key, &version_id, change, at)
                    .await
                    .map(|()| Committed::Changed),
                _ => Err(Error::Internal("only metadata changes are staged".into())),
            },
        }
    }

    /// The body of the staged value `value` (finishing an earlier round on another replica).
    pub async fn pull(&self, bucket: &str, key: &str, value: Stamp) -> Result<ByteStream> {
        let id = Self::id(bucket, key);
        let _held = self.stripe(&id).lock().await;
        match self.load(&id).await? {
            Some(Record {
                value: v,
                body: Some(name),
                ..
            }) if v.stamp() == value => file_stream(self.dir.join(name)).await,
            _ => Err(Error::NoSuchKey),
        }
    }
}

fn value_id(id: &str, s: Stamp) -> String {
    format!("{id}.{}.{}.{}", s.hlc.physical, s.hlc.logical, s.node)
}

/// Drops promises untouched for [`PROMISE_TTL_MS`] (all of them beyond [`MAX_PROMISES`]),
/// raising the floor to the highest dropped: no ballot at or below it is promised again.
fn prune(p: &mut Promises, now: u64) {
    let cutoff = now.saturating_sub(PROMISE_TTL_MS);
    let all = p.by_key.len() > MAX_PROMISES;
    let mut floor = p.floor;
    p.by_key.retain(|_, (b, touched)| {
        let keep = !all && *touched >= cutoff;
        if !keep {
            floor = floor.max(*b);
        }
        keep
    });
    p.floor = floor;
}

/// A staged file as a body stream (opened now: a later removal does not cut it).
pub(crate) async fn file_stream(path: PathBuf) -> Result<ByteStream> {
    use tokio::io::AsyncReadExt;
    let f = tokio::fs::File::open(&path)
        .await
        .map_err(|e| Error::Internal(format!("cannot open a staged body {}: {e}", path.display())))?;
    let s = futures::stream::unfold(Some(f), |f| async move {
        let mut f = f?;
        let mut buf = vec![0u8; 256 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(Box::pin(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ballot(ms: u64, node: u64) -> Ballot {
        Stamp {
            hlc: Hlc {
                physical: ms,
                logical: 0,
            },
            node,
        }
    }

    #[test]
    fn a_node_that_never_promised_has_no_floor() {
        let dir = tempfile::tempdir().unwrap();
        let a = Acceptor::open(dir.path(), 5_000, false);
        assert!(a.check_floor(ballot(now_millis(), 1)).is_ok());
    }

    #[test]
    fn pruning_raises_the_floor_to_what_it_drops() {
        let mut p = Promises {
            floor: ballot(10, 0),
            by_key: HashMap::new(),
            since_prune: 0,
        };
        p.by_key.insert("old".into(), (ballot(500, 2), 1_000));
        p.by_key.insert("new".into(), (ballot(900, 1), 2_000_000));
        prune(&mut p, 2_000_000);
        assert_eq!(p.floor, ballot(500, 2));
        assert!(p.by_key.contains_key("new"));
        assert!(!p.by_key.contains_key("old"));
    }

    #[test]
    fn the_floor_is_above_every_ballot_promised_before_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cas")).unwrap();
        std::fs::write(dir.path().join("cas").join(PROMISED), b"").unwrap();
        let a = Acceptor::open(dir.path(), 5_000, false);
        // A ballot at most 5 s ahead of the clock before the restart is below the floor.
        let before = ballot(now_millis() - 1 + 5_000, u64::MAX);
        assert!(a.highest("k") > before);
        assert!(a.check_floor(before).is_err());
        assert!(a.check_floor(ballot(now_millis() + 5_002, 1)).is_ok());
    }
}
