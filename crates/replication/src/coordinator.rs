//! The coordinator of the replicated data path: whichever node receives an S3 request finds the
//! key's replicas on the placement ring, sends the request to all of them that are not known
//! down, and answers once its consistency level is met ([`crate::quorum`] decides).
//!
//! - Writes are stamped here (HLC time + this node's id) and streamed to the whole replica set at
//!   once through bounded channels: the body is never held whole, and the slowest live replica
//!   paces the client. A replica that fails drops out; when too few remain, or the level is not
//!   met within `REQUEST_TIMEOUT_MS` after the body ended, the client gets a 503 naming the level.
//! - Reads ask every live replica, decide at R answers, take the newest version (preferring this
//!   node's copy to stream the body), fall back to another holder if a transfer fails, and repair
//!   replicas that answered with something older in the background.
//! - Deletes are stamped tombstones / delete markers written like any version.

use crate::ClusterStore;
use crate::quorum::{Consistency, ReadQuorum, Stamp, Unavailable, WriteQuorum};
use crate::wire::{self, Checks, GetWire, HeadReply, MetaOp, Op, PartHeader, PutHeader};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use ironbucket_rpc::DataStream;
use ironbucket_store::*;
use ironbucket_types::{ChecksumSet, now_millis};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Chunks buffered per replica while a body streams to the replica set.
const CHANNEL_DEPTH: usize = 8;

/// One replica of a key.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub name: String,
    pub addr: String,
    pub local: bool,
}

fn unavailable(u: Unavailable) -> Error {
    Error::Unavailable(u.to_string())
}

/// Why replicas failed a write, named in the 503 when the level cannot be met (a refused stamp
/// says which clock is wrong; a full disk says which node).
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn note(&mut self, node: &str, e: &Error) {
        if self.0.len() < 5 {
            self.0.push(format!("{node}: {e}"));
        }
    }

    fn error(&self, u: Unavailable) -> Error {
        if self.0.is_empty() {
            unavailable(u)
        } else {
            Error::Unavailable(format!("{u}. Replica failures: {}", self.0.join("; ")))
        }
    }
}

/// Errors that mean "this replica could not do it" (count against the level) rather than an
/// answer about the request itself.
fn replica_failure(e: &Error) -> bool {
    matches!(e, Error::Unavailable(_) | Error::Internal(_) | Error::Corrupt(_))
}

fn stamp_of(v: &VersionStamp) -> Stamp {
    Stamp {
        hlc: v.hlc,
        node: v.origin,
    }
}

impl ClusterStore {
    /// The replicas of `bucket/key`, primary first.
    pub(crate) fn targets(&self, bucket: &str, key: &str) -> Result<Vec<Target>> {
        let (layout, members) = self.cp.with_state(|s| {
            if !s.buckets.contains_key(bucket) {
                return (Err(Error::NoSuchBucket), Vec::new());
            }
            let layout =
                ironbucket_cluster::layout_of(s).map_err(|e| Error::Unavailable(format!("no placement layout: {e}")));
            let members: Vec<(String, String)> = s
                .active_members()
                .map(|m| (m.name.clone(), m.rpc_addr.clone()))
                .collect();
            (layout, members)
        });
        let layout = layout?;
        let ring = {
            let mut cached = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            match cached.as_ref() {
                Some(r) if *r.layout() == layout => r.clone(),
                _ => {
                    let r = Arc::new(
                        ironbucket_cluster::Ring::new(layout)
                            .map_err(|e| Error::Unavailable(format!("no placement layout: {e}")))?,
                    );
                    *cached = Some(r.clone());
                    r
                }
            }
        };
        let me = self.cp.node_name();
        let targets: Vec<Target> = ring
            .replica_names(bucket, key)
            .into_iter()
            .filter_map(|n| {
                members.iter().find(|(m, _)| m == n).map(|(name, addr)| Target {
                    name: name.clone(),
                    addr: addr.clone(),
                    local: name == me,
                })
            })
            .collect();
        if targets.is_empty() {
            return Err(Error::Unavailable(
                "the placement ring names no replica for this key".into(),
            ));
        }
        Ok(targets)
    }

    /// Every member (for listings and cluster-wide questions).
    pub(crate) fn all_targets(&self) -> Vec<Target> {
        let me = self.cp.node_name().to_string();
        self.cp.with_state(|s| {
            s.active_members()
                .map(|m| Target {
                    name: m.name.clone(),
                    addr: m.rpc_addr.clone(),
                    local: m.name == me,
                })
                .collect()
        })
    }

    pub(crate) fn is_down(&self, t: &Target) -> bool {
        !t.local && self.down.get().is_some_and(|f| f(&t.name))
    }

    /// The request's level: the `x-ironbucket-consistency` header, else the cluster default.
    pub(crate) fn level(&self, write: bool) -> Consistency {
        if let Some(l) = hints::requested_consistency() {
            return l;
        }
        self.cp
            .with_state(|s| {
                let r = &s.replication;
                if write {
                    &r.write_consistency
                } else {
                    &r.read_consistency
                }
                .parse()
                .ok()
            })
            .unwrap_or(Consistency::Quorum)
    }

    /// The cluster's default write level (what listings can rely on).
    pub(crate) fn default_write_level(&self) -> Consistency {
        self.cp
            .with_state(|s| s.replication.write_consistency.parse().ok())
            .unwrap_or(Consistency::Quorum)
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.cp.peers().config().request_timeout
    }

    fn stamp(&self) -> (Hlc, u64) {
        (self.local.now_hlc(), self.cp.id())
    }

    /// Runs `op` on one replica (this node's store directly, a peer over RPC).
    pub(crate) async fn ask<T: DeserializeOwned>(&self, t: &Target, op: &Op) -> Result<T> {
        let bytes = if t.local {
            wire::serve(&self.local, op.clone()).await
        } else {
            let payload = serde_json::to_vec(op).map_err(|e| Error::Internal(e.to_string()))?;
            self.cp
                .peers()
                .control(&t.addr, wire::OP, payload, Some(self.timeout()))
                .await
                .map_err(|e| Error::Unavailable(format!("node {}: {e}", t.name)))?
        };
        wire::decode(&bytes)
    }

    /// Sends `op` to every replica and waits until `level` of them did it. The first answer
    /// that is about the request itself (not a replica failure) is returned as is.
    pub(crate) async fn write_all<T: DeserializeOwned + Send + 'static>(
        &self,
        targets: &[Target],
        level: Consistency,
        op: Op,
    ) -> Result<T> {
        let mut q = WriteQuorum::new(targets.iter().map(|t| t.name.clone()), level);
        let mut first_ok: Option<T> = None;
        let mut first_err: Option<Error> = None;
        let mut failures = Failures::default();
        let me = self.strong()?;
        // Replicas known down fail first: a write that cannot reach its level starts nowhere.
        let live = self.live(targets, &mut |n| q.fail(n).and_then(Result::err))?;
        let mut asks = FuturesUnordered::new();
        for t in live {
            // Each replica's request runs as its own task: replicas beyond the level still
            // apply the write after the client has its answer (a dropped request would be
            // cancelled on the replica).
            let (me, t, op) = (me.clone(), t.clone(), op.clone());
            let task = tokio::spawn(async move {
                let r = me.ask::<T>(&t, &op).await;
                (t.name, r)
            });
            asks.push(task.map(|j| j.unwrap_or_else(|e| (String::new(), Err(Error::Internal(e.to_string()))))));
        }
        let deadline = tokio::time::sleep(self.timeout());
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = asks.next() => {
                    let Some((node, r)) = next else {
                        return Err(first_err.unwrap_or_else(|| Error::Unavailable(format!("consistency level {level} was not met"))));
                    };
                    let decided = match r {
                        Ok(v) => {
                            first_ok.get_or_insert(v);
                            q.ack(&node)
                        }
                        Err(e) => {
                            // A replica's own refusal (NoSuchUpload on one that missed the
                            // upload, say) counts as its failure; it is the answer only when
                            // the level cannot be met.
                            tracing::debug!(node = %node, error = %e, "replica failed");
                            if replica_failure(&e) {
                                failures.note(&node, &e);
                            } else {
                                first_err.get_or_insert(e);
                            }
                            q.fail(&node)
                        }
                    };
                    match decided {
                        Some(Ok(_)) => {
                            // The others' answers are not awaited (their requests still run on the replicas).
                            return first_ok.ok_or_else(|| Error::Internal("quorum without an answer".into()));
                        }
                        Some(Err(u)) => return Err(first_err.unwrap_or_else(|| failures.error(u))),
                        None => {}
                    }
                }
                _ = &mut deadline => {
                    return match q.timeout() {
                        Some(Err(u)) => Err(unavailable(u)),
                        _ => Err(Error::Unavailable(format!("consistency level {level} was not met in time"))),
                    };
                }
            }
        }
    }

    /// The replicas not known down; each known-down one is reported to `fail`, which says when
    /// the level can no longer be met.
    fn live<'a>(
        &self,
        targets: &'a [Target],
        fail: &mut dyn FnMut(&str) -> Option<Unavailable>,
    ) -> Result<Vec<&'a Target>> {
        let mut live = Vec::with_capacity(targets.len());
        let down: Vec<&str> = targets
            .iter()
            .filter(|t| self.is_down(t))
            .map(|t| t.name.as_str())
            .collect();
        for t in targets {
            if self.is_down(t) {
                if let Some(u) = fail(&t.name) {
                    return Err(Error::Unavailable(format!(
                        "consistency level {} needs {} of {} replicas and {} of them {} down ({}); the request was not sent",
                        u.level,
                        u.needed,
                        u.replicas,
                        down.len(),
                        if down.len() == 1 { "is" } else { "are" },
                        down.join(", ")
                    )));
                }
            } else {
                live.push(t);
            }
        }
        Ok(live)
    }

    /// Asks the replicas for `g`'s version; decides at the read level.
    async fn read_versions(&self, g: &GetWire, level: Consistency) -> Result<Found> {
        let targets = self.targets(&g.bucket, &g.key)?;
        let mut q: ReadQuorum<HeadReply> = ReadQuorum::new(targets.iter().map(|t| t.name.clone()), level);
        let mut answers: Vec<(Target, HeadReply)> = Vec::new();
        let op = Op::Head(g.clone());
        let mut asks = FuturesUnordered::new();
        for t in &targets {
            if self.is_down(t) {
                if let Some(Err(u)) = q.fail(&t.name) {
                    return Err(unavailable(u));
                }
                continue;
            }
            let op = &op;
            asks.push(async move { (t.clone(), self.ask::<HeadReply>(t, op).await) });
        }
        let deadline = tokio::time::sleep(self.timeout());
        tokio::pin!(deadline);
        let decided = loop {
            tokio::select! {
                next = asks.next() => {
                    let Some((t, r)) = next else {
                        return Err(Error::Unavailable(format!("consistency level {level} was not met")));
                    };
                    let step = match r {
                        Ok(reply) => {
                            let v = reply.version.as_ref().map(|v| (stamp_of(v), reply.clone()));
                            answers.push((t.clone(), reply));
                            q.answer(&t.name, v)
                        }
                        Err(e) if replica_failure(&e) => q.fail(&t.name),
                        Err(e) => return Err(e),
                    };
                    if let Some(s) = step {
                        break s.map_err(unavailable)?;
                    }
                }
                _ = &mut deadline => {
                    match q.timeout() {
                        Some(Err(u)) => return Err(unavailable(u)),
                        _ => return Err(Error::Unavailable(format!("consistency level {level} was not met in time"))),
                    }
                }
            }
        };
        let mut decided = decided;
        if decided.newest.is_none() && !asks.is_empty() {
            // "Not found" is believed only once every live replica has said so (within the
            // deadline): a replica that was away answers fastest and knows nothing of what was
            // written meanwhile. A hit is returned at R answers.
            loop {
                tokio::select! {
                    next = asks.next() => match next {
                        None => break,
                        Some((t, Ok(reply))) => answers.push((t, reply)),
                        Some(_) => {}
                    },
                    _ = &mut deadline => break,
                }
            }
            let newest = answers
                .iter()
                .filter_map(|(_, a)| a.version.as_ref().map(|v| (stamp_of(v), a.clone())))
                .max_by_key(|(s, _)| *s);
            let stale = answers
                .iter()
                .filter(|(_, a)| a.version.as_ref().map(stamp_of) < newest.as_ref().map(|(s, _)| *s))
                .map(|(t, _)| t.name.clone())
                .collect();
            decided = crate::quorum::ReadResult { newest, stale };
        }
        let stale: Vec<Target> = targets
            .iter()
            .filter(|t| decided.stale.contains(&t.name))
            .cloned()
            .collect();
        match decided.newest {
            Some((stamp, reply)) => {
                let held: Vec<&(Target, HeadReply)> = answers
                    .iter()
                    .filter(|(_, a)| a.version.as_ref().map(stamp_of) == Some(stamp))
                    .collect();
                let mut metas = held.iter().filter_map(|(_, a)| a.version.as_ref().map(|v| v.meta));
                let first = metas.next();
                let meta_differs = metas.any(|m| Some(m) != first);
                let mut holders: Vec<Target> = held.into_iter().map(|(t, _)| t.clone()).collect();
                holders.sort_by_key(|t| !t.local);
                Ok(Found {
                    reply,
                    holders,
                    stale,
                    meta_differs,
                })
            }
            None => {
                // No replica holds the key: every answer says why (NoSuchKey, NoSuchVersion...).
                let reply = answers
                    .into_iter()
                    .map(|(_, a)| a)
                    .next()
                    .ok_or_else(|| Error::Unavailable(format!("consistency level {level} was not met")))?;
                Ok(Found {
                    reply,
                    holders: Vec::new(),
                    stale: Vec::new(),
                    meta_differs: false,
                })
            }
        }
    }

    pub(crate) async fn head(&self, req: GetObject) -> Result<ObjectInfo> {
        let g = GetWire::new(&req);
        let found = self.read_versions(&g, self.level(false)).await?;
        self.repair(&g, &found.reply, &found.holders, found.stale.clone());
        let meta = self.settled_meta(&g, &found).await;
        let mut info = found.reply.result?;
        if let Some(m) = &meta {
            with_meta(&mut info, m);
        }
        Ok(info)
    }

    pub(crate) async fn get(&self, req: GetObject) -> Result<GetObjectOutput> {
        let g = GetWire::new(&req);
        let found = self.read_versions(&g, self.level(false)).await?;
        self.repair(&g, &found.reply, &found.holders, found.stale.clone());
        let meta = self.settled_meta(&g, &found).await;
        let holders = found.holders;
        let mut info = found.reply.result?;
        if let Some(m) = &meta {
            with_meta(&mut info, m);
        }
        let mut last = None;
        for t in &holders {
            match self.fetch(t, g.clone(), info.size).await {
                Ok(mut out) if out.info.hlc == info.hlc && out.info.origin == info.origin => {
                    if let Some(m) = &meta {
                        with_meta(&mut out.info, m);
                    }
                    return Ok(out);
                }
                // The holder moved on since it answered (a newer write landed): serve the newer.
                Ok(out) if (out.info.hlc, out.info.origin) > (info.hlc, info.origin) => return Ok(out),
                Ok(_) => {
                    last = Some(Error::Unavailable(
                        "a replica no longer holds the version it reported".into(),
                    ))
                }
                Err(e) if replica_failure(&e) => {
                    tracing::debug!(node = %t.name, error = %e, "reading from a replica failed; trying the next");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable("no replica could send the object".into())))
    }

    /// The object (or the range asked for) from one replica; `size` (the object's) sets how
    /// long the transfer may take.
    async fn fetch(&self, t: &Target, g: GetWire, size: u64) -> Result<GetObjectOutput> {
        if t.local {
            return self.local.get_object(g.request()).await;
        }
        let payload = serde_json::to_vec(&g).map_err(|e| Error::Internal(e.to_string()))?;
        let mut stream = self
            .cp
            .peers()
            .pull(&t.addr, wire::GET, payload, Some(self.timeout_for(Some(size))))
            .await
            .map_err(|e| Error::Unavailable(format!("node {}: {e}", t.name)))?;
        let head = match stream.next().await {
            Some(Ok(b)) => b,
            Some(Err(e)) => return Err(Error::Unavailable(format!("node {}: {e}", t.name))),
            None => return Err(Error::Unavailable(format!("node {} sent nothing", t.name))),
        };
        let (info, range): (ObjectInfo, Option<ByteRange>) = wire::decode(&head)?;
        let body: ByteStream = Box::pin(stream.map(|r| r.map_err(std::io::Error::other)));
        Ok(GetObjectOutput { info, range, body })
    }

    /// Brings replicas that answered with an older version (or none) up to `reply`'s, in the
    /// background. Bodies of SSE-C objects need the customer key, which only a request carries.
    fn repair(&self, g: &GetWire, reply: &HeadReply, holders: &[Target], stale: Vec<Target>) {
        let (Some(v), Some(source)) = (reply.version.clone(), holders.first().cloned()) else {
            return;
        };
        let size = reply.result.as_ref().map(|i| i.size).unwrap_or(0);
        if stale.is_empty() {
            return;
        }
        let Ok(me) = self.strong() else {
            return;
        };
        let (g, holders) = (g.clone(), holders.to_vec());
        tokio::spawn(async move { me.repair_all(&g, &v, size, &source, &holders, stale).await });
    }

    /// Brings each of `stale` up to version `v`, copied from `source` with the metadata the
    /// holders agree on once merged.
    async fn repair_all(
        &self,
        g: &GetWire,
        v: &VersionStamp,
        size: u64,
        source: &Target,
        holders: &[Target],
        stale: Vec<Target>,
    ) {
        let meta = if v.delete_marker {
            None
        } else {
            match self.merged_meta(&g.bucket, &g.key, &v.version_id, holders).await {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(bucket = %g.bucket, key = %g.key, error = %e, "read repair skipped: no holder sent the version's metadata");
                    return;
                }
            }
        };
        for t in stale {
            let r = self.repair_one(g, v, meta.as_ref(), size, source, &t).await;
            match r {
                Ok(()) => tracing::info!(bucket = %g.bucket, key = %g.key, node = %t.name, "read repair"),
                Err(e) => {
                    tracing::warn!(bucket = %g.bucket, key = %g.key, node = %t.name, error = %e, "read repair failed")
                }
            }
        }
    }

    /// The metadata of the version `found` names, merged across its holders, when they
    /// disagree on it (holders that lag are repaired in the background); `None` when they agree
    /// or nobody could say.
    async fn settled_meta(&self, g: &GetWire, found: &Found) -> Option<VersionMeta> {
        let v = found.reply.version.as_ref()?;
        if !found.meta_differs || v.delete_marker {
            return None;
        }
        self.merged_meta(&g.bucket, &g.key, &v.version_id, &found.holders)
            .await
            .ok()
    }

    /// Asks every holder of version `version_id` for its metadata and merges the answers (last
    /// writer wins per field); holders whose copy differs get the merge in the background.
    async fn merged_meta(&self, bucket: &str, key: &str, version_id: &str, holders: &[Target]) -> Result<VersionMeta> {
        let (merged, _, last) = self.collect_meta(bucket, key, version_id, holders).await;
        merged.ok_or_else(|| last.unwrap_or_else(|| Error::Unavailable("no replica holds the version".into())))
    }

    /// The metadata object lock is decided on: version `version_id`'s, merged from every live
    /// replica, of which at least a quorum (or the write level, if higher) must answer whatever
    /// level the request asked for, so that the answers include a replica that acknowledged any
    /// lock set at QUORUM or above. `None`: no replica holds the version.
    async fn lock_meta(&self, bucket: &str, key: &str, version_id: &str) -> Result<Option<VersionMeta>> {
        let targets = self.targets(bucket, key)?;
        let rf = targets.len();
        let need = Consistency::Quorum.required(rf).max(self.level(true).required(rf));
        let live: Vec<Target> = targets.into_iter().filter(|t| !self.is_down(t)).collect();
        let (merged, answered, _) = self.collect_meta(bucket, key, version_id, &live).await;
        if answered < need {
            return Err(Error::Unavailable(format!(
                "object lock is checked against at least {need} of {rf} replicas and {answered} answered; the request was not sent"
            )));
        }
        Ok(merged)
    }

    /// Asks `targets` for version `version_id`'s metadata: the merge of the answers, how many
    /// answered (a replica without the version answers too), and the last failure. Holders
    /// whose copy differs from the merge get it in the background.
    async fn collect_meta(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        targets: &[Target],
    ) -> (Option<VersionMeta>, usize, Option<Error>) {
        let op = Op::Meta {
            bucket: bucket.to_string(),
            key: key.to_string(),
            op: MetaOp::State(version_id.to_string()),
        };
        let answers = futures::future::join_all(targets.iter().map(|t| {
            let op = &op;
            async move { (t.clone(), self.ask::<VersionMeta>(t, op).await) }
        }))
        .await;
        let mut merged: Option<VersionMeta> = None;
        let mut last = None;
        let mut answered = 0;
        let mut states = Vec::with_capacity(answers.len());
        for (t, r) in answers {
            if !matches!(&r, Err(e) if replica_failure(e)) {
                answered += 1;
            }
            match r {
                Ok(m) => {
                    match &mut merged {
                        Some(x) => {
                            x.merge(&m);
                        }
                        None => merged = Some(m.clone()),
                    }
                    states.push((t, m));
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(merged) = merged else {
            return (None, answered, last);
        };
        let behind: Vec<Target> = states
            .into_iter()
            .filter(|(_, m)| *m != merged)
            .map(|(t, _)| t)
            .collect();
        if !behind.is_empty()
            && let Ok(me) = self.strong()
        {
            let op = Op::Meta {
                bucket: bucket.to_string(),
                key: key.to_string(),
                op: MetaOp::Merge {
                    version_id: version_id.to_string(),
                    meta: merged.clone(),
                },
            };
            tokio::spawn(async move {
                for t in behind {
                    match me.ask::<()>(&t, &op).await {
                        Ok(()) => tracing::info!(node = %t.name, "metadata read repair"),
                        Err(e) => tracing::warn!(node = %t.name, error = %e, "metadata read repair failed"),
                    }
                }
            });
        }
        (Some(merged), answered, last)
    }

    async fn repair_one(
        &self,
        g: &GetWire,
        v: &VersionStamp,
        meta: Option<&VersionMeta>,
        size: u64,
        source: &Target,
        to: &Target,
    ) -> Result<()> {
        if v.purged {
            // The version was deleted by id: delete it there too (with the same stamp). Object
            // lock still applies there: a version that replica keeps locked is not deleted by a
            // repair (the repair fails and is logged).
            let op = Op::Delete {
                bucket: g.bucket.clone(),
                key: g.key.clone(),
                version_id: Some(v.version_id.clone()),
                bypass: false,
                hlc: v.hlc,
                origin: v.origin,
            };
            return self.ask::<DeleteResult>(to, &op).await.map(|_| ());
        }
        if v.delete_marker {
            let op = Op::Delete {
                bucket: g.bucket.clone(),
                key: g.key.clone(),
                version_id: None,
                bypass: false,
                hlc: v.hlc,
                origin: v.origin,
            };
            return self.ask::<DeleteResult>(to, &op).await.map(|_| ());
        }
        let want = GetWire {
            version_id: Some(v.version_id.clone()),
            range: None,
            conditions: Conditions::default(),
            ..g.clone()
        };
        let src = self.fetch(source, want, size).await?;
        if src.info.hlc != v.hlc || src.info.origin != v.origin {
            return Err(Error::Internal("the source moved on; repair skipped".into()));
        }
        let meta = meta.ok_or_else(|| Error::Internal("no metadata to repair with".into()))?;
        let info = src.info;
        // A whole object's MD5 and checksums are verified again on the way in; a multipart
        // object keeps the ETag and composite checksums it was stored with.
        let multipart = info.parts_count.is_some();
        let checks = Checks {
            content_length: Some(info.size),
            content_md5: if multipart { None } else { hex_to_b64(&info.etag) },
            checksums: if multipart {
                Checksums::default()
            } else {
                info.checksums.clone()
            },
            compute: if multipart {
                Vec::new()
            } else {
                info.checksums.algorithms().collect()
            },
        };
        let header = PutHeader {
            bucket: g.bucket.clone(),
            key: g.key.clone(),
            meta: ObjectMeta {
                content: info.content.clone(),
                user_meta: info.user_meta.clone(),
                tags: meta
                    .tags
                    .value
                    .iter()
                    .map(|(key, value)| Tag {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                acl: meta.acl.value.clone(),
            },
            lock: LockRequest {
                retention: meta.retention.value.clone(),
                legal_hold: Some(meta.legal_hold.value),
            },
            sse: None,
            sse_c: g.sse_c,
            checks,
            conditions: Conditions::default(),
            hlc: v.hlc,
            origin: v.origin,
            repair: Some(Repair {
                stored_as: multipart.then(|| StoredAs {
                    etag: info.etag.clone(),
                    parts_count: info.parts_count,
                    checksums: info.checksums.clone(),
                }),
                meta_stamps: meta.stamps(),
            }),
        };
        let body: DataStream = Box::pin(
            src.body
                .map(|r| r.map_err(|e| e.to_string()))
                .chain(futures::stream::once(async { Ok(Bytes::new()) })),
        );
        self.push_inner(to.clone(), Arc::new(header), body).await.map(|_| ())
    }

    /// Streams a body to one replica (this node's store directly, a peer as a push).
    fn push<H: wire::Pushed>(
        self: Arc<Self>,
        t: Target,
        header: Arc<H>,
        body: DataStream,
    ) -> futures::future::BoxFuture<'static, Result<H::Answer>> {
        async move { self.push_inner(t, header, body).await }.boxed()
    }

    async fn push_inner<H: wire::Pushed>(&self, t: Target, header: Arc<H>, body: DataStream) -> Result<H::Answer> {
        if t.local {
            return H::clone(&header).store(&self.local, wire::terminated(body)).await;
        }
        let h = serde_json::to_vec(&*header).map_err(|e| Error::Internal(e.to_string()))?;
        let bytes = self
            .cp
            .peers()
            .push(
                &t.addr,
                H::KIND,
                h,
                body,
                Some(self.timeout_for(header.content_length())),
            )
            .await
            .map_err(|e| Error::Unavailable(format!("node {}: {e}", t.name)))?;
        wire::decode(&bytes)
    }

    /// A body transfer's deadline: the request timeout, plus time for the bytes at a floor of
    /// 1 MB/s (a 5 GiB part must not be cut at 30 s). A replica that stops taking data for a
    /// whole request timeout is dropped sooner (see `replicate_body`).
    fn timeout_for(&self, len: Option<u64>) -> Duration {
        self.timeout() + Duration::from_millis(len.unwrap_or(0) / 1_000)
    }

    /// Streams `body` to every replica at once and waits for the write level. `send` starts one
    /// replica's transfer from its channel.
    async fn replicate_body<T, F, Fut>(
        &self,
        targets: &[Target],
        level: Consistency,
        mut body: ByteStream,
        trailer: Option<wire::Trailer>,
        send: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(Target, DataStream) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let mut q = WriteQuorum::new(targets.iter().map(|t| t.name.clone()), level);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, Result<T>)>();
        let mut senders: Vec<(String, mpsc::Sender<std::result::Result<Bytes, String>>)> = Vec::new();
        let live = self.live(targets, &mut |n| q.fail(n).and_then(Result::err))?;
        for t in live {
            let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
            senders.push((t.name.clone(), tx));
            let mut rx = rx;
            let data: DataStream = Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
            let fut = send(t.clone(), data);
            let (name, done) = (t.name.clone(), done_tx.clone());
            tokio::spawn(async move {
                let r = fut.await;
                let _ = done.send((name, r));
            });
        }
        drop(done_tx);
        let mut hasher = trailer.as_ref().map(|(algs, _)| ChecksumSet::new(algs.iter().copied()));
        let idle = self.timeout();
        let feed = async {
            while let Some(chunk) = body.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => return Err(Error::from_body(e)),
                };
                if chunk.is_empty() {
                    continue;
                }
                if let Some(h) = hasher.as_mut() {
                    h.update(&chunk);
                }
                let mut i = 0;
                while i < senders.len() {
                    match tokio::time::timeout(idle, senders[i].1.send(Ok(chunk.clone()))).await {
                        Ok(Ok(())) => i += 1,
                        // That replica failed (its answer says why) or stopped taking data:
                        // without the end marker it stores nothing.
                        _ => {
                            tracing::debug!(node = %senders[i].0, "replica dropped from a transfer");
                            senders.swap_remove(i);
                        }
                    }
                }
                if senders.is_empty() {
                    break;
                }
            }
            if let (Some((_, trailer)), Some(h)) = (trailer, hasher) {
                verify_checksums(&h.finish(), &trailer())?;
            }
            // The end marker: only now may the replicas commit.
            for (_, tx) in &senders {
                let _ = tx.send(Ok(Bytes::new())).await;
            }
            Ok(())
        };
        // Feed the replicas while collecting early failures; a failed feed drops the senders
        // without the end marker, so no replica stores a partial body.
        let mut feed = std::pin::pin!(feed.fuse());
        let mut fed = false;
        let mut closed = false;
        let mut first_err: Option<Error> = None;
        let mut failures = Failures::default();
        let mut first_ok: Option<T> = None;
        let deadline = tokio::time::sleep(Duration::from_secs(86_400 * 365));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = &mut feed, if !fed => {
                    fed = true;
                    r?;
                    if closed {
                        return Err(first_err.unwrap_or_else(|| Error::Unavailable(format!("consistency level {level} was not met"))));
                    }
                    deadline.as_mut().reset(tokio::time::Instant::now() + self.timeout());
                }
                next = done_rx.recv(), if !closed => {
                    let Some((node, r)) = next else {
                        if !fed {
                            // Every transfer ended before the body did: finish reading it.
                            closed = true;
                            continue;
                        }
                        return Err(first_err.unwrap_or_else(|| Error::Unavailable(format!("consistency level {level} was not met"))));
                    };
                    let step = match r {
                        Ok(v) => {
                            first_ok.get_or_insert(v);
                            q.ack(&node)
                        }
                        Err(e) if replica_failure(&e) => {
                            tracing::debug!(node = %node, error = %e, "replica write failed");
                            failures.note(&node, &e);
                            q.fail(&node)
                        }
                        Err(e) => {
                            tracing::debug!(node = %node, error = %e, "replica refused the write");
                            first_err.get_or_insert(e);
                            q.fail(&node)
                        }
                    };
                    match step {
                        Some(Ok(_)) => {
                            return first_ok.ok_or_else(|| Error::Internal("quorum without an answer".into()));
                        }
                        Some(Err(u)) => {
                            return Err(first_err.unwrap_or_else(|| failures.error(u)));
                        }
                        None => {}
                    }
                }
                _ = &mut deadline => {
                    return match q.timeout() {
                        Some(Err(u)) => Err(unavailable(u)),
                        _ => Err(Error::Unavailable(format!("consistency level {level} was not met in time"))),
                    };
                }
            }
        }
    }

    pub(crate) async fn put(&self, mut req: PutObject, body: ByteStream) -> Result<ObjectInfo> {
        validate_key(&req.key)?;
        let targets = self.targets(&req.bucket, &req.key)?;
        let level = self.level(true);
        if req.conditions.if_match.is_some() || req.conditions.if_none_match.is_some() {
            // A conditional write is decided here, once, against the newest version a read at
            // the write's level finds; the replicas then get an unconditional stamped write (a
            // replica holding an older copy must not decide differently).
            let current = self.current_etag(&req.bucket, &req.key, level).await?;
            req.conditions.check_write(current.as_deref())?;
            req.conditions = Conditions::default();
        }
        let (hlc, origin) = self.stamp();
        let (checks, trailer) = Checks::split(&mut req.checks);
        let header = Arc::new(PutHeader::new(&req, checks, hlc, origin));
        let me = self.strong()?;
        self.replicate_body(&targets, level, body, trailer, move |t, data| {
            me.clone().push(t, header.clone(), data)
        })
        .await
    }

    /// The ETag of the key's current version as a read at `level` finds it (`None`: no object;
    /// an object this request may not read, such as an SSE-C one, counts as present with an
    /// unknown ETag).
    async fn current_etag(&self, bucket: &str, key: &str, level: Consistency) -> Result<Option<String>> {
        let g = wire_for(bucket, key, None);
        match self.read_versions(&g, level).await?.reply.result {
            Ok(info) => Ok(Some(info.etag)),
            Err(Error::NoSuchKey) | Err(Error::DeleteMarker { .. }) => Ok(None),
            Err(Error::NoSuchBucket) => Err(Error::NoSuchBucket),
            Err(e) if replica_failure(&e) => Err(e),
            Err(_) => Ok(Some(String::new())),
        }
    }

    pub(crate) async fn part(&self, mut req: UploadPart, body: ByteStream) -> Result<PartInfo> {
        let targets = self.targets(&req.bucket, &req.key)?;
        let level = self.level(true);
        let (checks, trailer) = Checks::split(&mut req.checks);
        let header = Arc::new(PartHeader::new(&req, checks));
        let me = self.strong()?;
        self.replicate_body(&targets, level, body, trailer, move |t, data| {
            me.clone().push(t, header.clone(), data)
        })
        .await
    }

    pub(crate) fn strong(&self) -> Result<Arc<ClusterStore>> {
        self.me
            .get()
            .and_then(|w| w.upgrade())
            .ok_or_else(|| Error::Internal("the cluster store is shutting down".into()))
    }

    pub(crate) async fn delete(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        bypass: bool,
    ) -> Result<DeleteResult> {
        validate_key(key)?;
        let targets = self.targets(bucket, key)?;
        if let Some(v) = version_id {
            self.check_unlocked(bucket, key, v, bypass).await?;
        }
        let (hlc, origin) = self.stamp();
        let op = Op::Delete {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version_id: version_id.map(str::to_string),
            bypass,
            hlc,
            origin,
        };
        self.write_all(&targets, self.level(true), op).await
    }

    /// In a bucket with object lock, refuses to delete version `version_id` when the metadata its
    /// holders agree on (merged) locks it: a replica that missed a legal hold or a retention
    /// must not decide alone.
    async fn check_unlocked(&self, bucket: &str, key: &str, version_id: &str, bypass: bool) -> Result<()> {
        if self.local.get_object_lock_configuration(bucket).await.is_err() {
            return Ok(());
        }
        let Some(meta) = self.lock_meta(bucket, key, version_id).await? else {
            return Ok(());
        };
        if meta.locked(now_millis(), bypass) {
            return Err(Error::AccessDenied(
                "Access Denied because object protected by object lock.".into(),
            ));
        }
        Ok(())
    }

    /// The version a metadata request is about (`version_id`, or the newest), found by a read at
    /// the request's level, and the replicas holding it. For a change, replicas that lack the
    /// version get it first (so that the change reaches them too).
    async fn meta_target(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        write: bool,
    ) -> Result<(String, Vec<Target>)> {
        let g = wire_for(bucket, key, version_id);
        let found = self.read_versions(&g, self.level(write)).await?;
        let v = match found.reply.version.clone() {
            Some(v) if !found.holders.is_empty() => v,
            _ => {
                // Nobody holds it: the replicas' own answer (NoSuchKey, NoSuchVersion...).
                found.reply.result?;
                return Err(Error::NoSuchKey);
            }
        };
        if v.purged && version_id.is_none() {
            // The newest news is a version deleted by id: the request is about the version
            // that is current now, which the replica's answer names.
            let info = found.reply.result?;
            let targets = self.targets(bucket, key)?;
            let holders = if write {
                targets
            } else {
                targets.into_iter().filter(|t| !self.is_down(t)).collect()
            };
            return Ok((info.version_id, holders));
        }
        if v.purged {
            return Err(Error::NoSuchVersion);
        }
        if v.delete_marker {
            return Err(match version_id {
                Some(_) => Error::DeleteMarker {
                    version_id: v.version_id,
                },
                None => Error::NoSuchKey,
            });
        }
        if !found.stale.is_empty() {
            let size = found.reply.result.as_ref().map(|i| i.size).unwrap_or(0);
            match (write, found.holders.first()) {
                (true, Some(source)) => {
                    self.repair_all(&g, &v, size, source, &found.holders, found.stale.clone())
                        .await
                }
                _ => self.repair(&g, &found.reply, &found.holders, found.stale.clone()),
            }
        }
        let holders = if write {
            self.targets(bucket, key)?
        } else {
            found.holders
        };
        Ok((v.version_id, holders))
    }

    /// A stamped change to one field of a version's metadata on every replica (at the write
    /// level). The version is named here, so replicas that disagree on the current version
    /// still change the same one; object lock rules are checked against the merged metadata
    /// first.
    pub(crate) async fn meta_write(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        change: MetaChange,
    ) -> Result<()> {
        if let MetaChange::Retention { retention, bypass } = &change {
            // An unknown mode is refused before anything is looked up.
            check_retention_change(None, retention.as_ref(), *bypass, 0)?;
        }
        if matches!(change, MetaChange::Retention { .. } | MetaChange::LegalHold(_))
            && let Err(Error::ObjectLockNotEnabled) = self.local.get_object_lock_configuration(bucket).await
        {
            return Err(Error::InvalidRequest(
                "Bucket is missing Object Lock Configuration".into(),
            ));
        }
        let (version_id, targets) = self.meta_target(bucket, key, version_id, true).await?;
        if matches!(change, MetaChange::Retention { .. })
            && let Some(current) = self.lock_meta(bucket, key, &version_id).await?
        {
            current.check(&change, now_millis())?;
        }
        let op = Op::Meta {
            bucket: bucket.to_string(),
            key: key.to_string(),
            op: MetaOp::Change {
                version_id,
                change,
                at: self.stamp(),
            },
        };
        let level = self.level(true);
        self.write_all::<()>(&targets, level, op).await.map_err(|e| match e {
            // Replicas that still lack the version (not repaired yet) count as failed ones.
            Error::NoSuchVersion => Error::Unavailable(format!(
                "consistency level {level} was not met: too few replicas hold the version yet"
            )),
            other => other,
        })
    }

    /// The id of the key's current version (a delete marker's included) as a read at the read
    /// level finds it; `None` when there is none.
    pub(crate) async fn latest_version_id(&self, bucket: &str, key: &str) -> Result<Option<String>> {
        let found = self
            .read_versions(&wire_for(bucket, key, None), self.level(false))
            .await?;
        Ok(match found.reply.version {
            Some(v) if !v.purged => Some(v.version_id),
            // The newest news is a version deleted by id: the replica's answer names the
            // version that is current again.
            Some(_) => found.reply.result.ok().map(|i| i.version_id),
            None => None,
        })
    }

    /// A version's metadata as its holders (read at the read level) agree on it once merged.
    pub(crate) async fn meta_read(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<VersionMeta> {
        let (version_id, holders) = self.meta_target(bucket, key, version_id, false).await?;
        self.merged_meta(bucket, key, &version_id, &holders).await
    }

    /// Asks every member (in parallel): the answers of those that could answer, and the
    /// failures (members known down included).
    pub(crate) async fn ask_all<T: DeserializeOwned>(&self, op: &Op) -> (Vec<(Target, T)>, Vec<(String, Error)>) {
        let targets = self.all_targets();
        let mut failed: Vec<(String, Error)> = targets
            .iter()
            .filter(|t| self.is_down(t))
            .map(|t| (t.name.clone(), Error::Unavailable(format!("node {} is down", t.name))))
            .collect();
        let asks = targets.iter().filter(|t| !self.is_down(t)).map(|t| async move {
            let r = self.ask::<T>(t, op).await;
            (t.clone(), r)
        });
        let mut ok = Vec::new();
        for (t, r) in futures::future::join_all(asks).await {
            match r {
                Ok(v) => ok.push((t, v)),
                Err(e) => failed.push((t.name, e)),
            }
        }
        (ok, failed)
    }

    /// The replication factor in force (at most the number of members holding data).
    pub(crate) fn factor(&self) -> usize {
        self.cp.with_state(|s| {
            let data = s
                .members
                .values()
                .filter(|m| m.state == ironbucket_consensus::MemberState::Active && m.weight > 0)
                .count();
            (s.replication.factor as usize).min(data).max(1)
        })
    }
}

/// What a cluster read found: the winning answer, the replicas holding that version (this node
/// first), the stale ones, and whether the holders disagree on the version's metadata.
struct Found {
    reply: HeadReply,
    holders: Vec<Target>,
    stale: Vec<Target>,
    meta_differs: bool,
}

/// A read of `bucket/key` (version `version_id`, or the newest) with nothing else asked.
fn wire_for(bucket: &str, key: &str, version_id: Option<&str>) -> GetWire {
    GetWire {
        sse_c: None,
        bucket: bucket.to_string(),
        key: key.to_string(),
        version_id: version_id.map(str::to_string),
        range: None,
        conditions: Conditions::default(),
    }
}

/// An object's info with its metadata as the replicas agree on it.
fn with_meta(info: &mut ObjectInfo, m: &VersionMeta) {
    info.tag_count = m.tags.value.len();
    info.retention = m.retention.value.clone();
    info.legal_hold = m.legal_hold.value;
}

fn validate_key(key: &str) -> Result<()> {
    ironbucket_types::validate_object_key(key).map_err(Error::from)
}

/// An MD5 ETag (hex) as a Content-MD5 value (base64); `None` for multipart ETags.
fn hex_to_b64(etag: &str) -> Option<String> {
    use base64::Engine;
    let raw = hex::decode(etag).ok().filter(|r| r.len() == 16)?;
    Some(base64::engine::general_purpose::STANDARD.encode(raw))
}

impl ClusterStore {
    /// Opens the upload on every replica of the key under one id.
    pub(crate) async fn create_upload(&self, req: CreateMultipart) -> Result<String> {
        validate_key(&req.key)?;
        validate_tags(&req.meta.tags, 10)?;
        let targets = self.targets(&req.bucket, &req.key)?;
        let op = Op::CreateUpload {
            bucket: req.bucket,
            key: req.key,
            meta: req.meta,
            checksum_algorithm: req.checksum_algorithm,
            sse_c: req.sse_c.as_ref().map(|k| *k.as_bytes()),
            upload_id: new_upload_id(),
        };
        self.write_all(&targets, self.level(true), op).await
    }

    /// Each replica assembles the object from the parts it holds, under one stamp.
    pub(crate) async fn complete(&self, req: CompleteMultipart) -> Result<ObjectInfo> {
        let targets = self.targets(&req.bucket, &req.key)?;
        let (hlc, origin) = self.stamp();
        let op = Op::Complete { req, hlc, origin };
        self.write_all(&targets, self.level(true), op).await
    }

    /// CopyObject: a cluster read of the source streamed into a cluster write.
    pub(crate) async fn copy(&self, req: CopyObject) -> Result<ObjectInfo> {
        validate_key(&req.key)?;
        if !self.cp.with_state(|s| s.buckets.contains_key(&req.bucket)) {
            return Err(Error::NoSuchBucket);
        }
        let same = req.src_bucket == req.bucket && req.src_key == req.key && req.src_version_id.is_none();
        if same && req.replace_meta.is_none() && req.replace_tags.is_none() {
            return Err(Error::InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.".into(),
            ));
        }
        let src = self
            .get(GetObject {
                sse_c: req.src_sse_c.clone(),
                bucket: req.src_bucket.clone(),
                key: req.src_key.clone(),
                version_id: req.src_version_id.clone(),
                range: None,
                conditions: req.source_conditions.clone(),
            })
            .await
            .map_err(|e| match e {
                Error::NotModified => Error::PreconditionFailed,
                other => other,
            })?;
        let info = src.info;
        let tags = match req.replace_tags {
            Some(t) => t,
            None if info.tag_count == 0 => Vec::new(),
            None => self
                .meta_read(&req.src_bucket, &req.src_key, Some(&info.version_id))
                .await?
                .tags
                .value
                .into_iter()
                .map(|(key, value)| Tag { key, value })
                .collect(),
        };
        let mut meta = req.replace_meta.unwrap_or_else(|| ObjectMeta {
            content: info.content.clone(),
            user_meta: info.user_meta.clone(),
            tags: Vec::new(),
            acl: None,
        });
        meta.tags = tags;
        meta.acl = req.acl;
        let whole = info.parts_count.is_none();
        let put = PutObject {
            lock: LockRequest::default(),
            sse_c: req.sse_c,
            sse: None,
            bucket: req.bucket,
            key: req.key,
            meta,
            checks: BodyChecks {
                content_length: Some(info.size),
                content_md5: if whole { hex_to_b64(&info.etag) } else { None },
                checksums: if whole {
                    info.checksums.clone()
                } else {
                    Checksums::default()
                },
                compute: info.checksums.algorithms().collect(),
                trailer: None,
            },
            conditions: Conditions::default(),
        };
        self.put(put, src.body).await
    }

    /// UploadPartCopy: a cluster read of the source (range) streamed into a replicated part.
    pub(crate) async fn part_copy(&self, req: UploadPartCopy) -> Result<PartInfo> {
        let range = match req.range {
            Some(RangeSpec::FromTo {
                first,
                last: Some(last),
            }) if first <= last => Some(RangeSpec::FromTo {
                first,
                last: Some(last),
            }),
            Some(_) => {
                return Err(Error::InvalidArgument(
                    "the x-amz-copy-source-range value must be of the form bytes=first-last".into(),
                ));
            }
            None => None,
        };
        let src = self
            .get(GetObject {
                sse_c: req.src_sse_c.clone(),
                bucket: req.src_bucket.clone(),
                key: req.src_key.clone(),
                version_id: None,
                range,
                conditions: req.source_conditions.clone(),
            })
            .await
            .map_err(|e| match e {
                Error::NotModified => Error::PreconditionFailed,
                Error::InvalidRange { size } => Error::InvalidArgument(format!(
                    "the x-amz-copy-source-range value must be of the form bytes=first-last where first and last are zero-based offsets within the {size}-byte source object"
                )),
                other => other,
            })?;
        let len = src.range.map(|r| r.end - r.start).unwrap_or(src.info.size);
        let part = UploadPart {
            sse_c: req.sse_c,
            bucket: req.bucket,
            key: req.key,
            upload_id: req.upload_id,
            part_number: req.part_number,
            checks: BodyChecks {
                content_length: Some(len),
                ..Default::default()
            },
        };
        self.part(part, src.body).await
    }
}

fn new_upload_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
