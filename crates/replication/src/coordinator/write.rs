//! Quorum writes: a request sent to every live replica ([`ClusterStore::write_all`]), and a body
//! streamed to the whole replica set at once through bounded channels, so that it is never held
//! whole and the slowest live replica paces the client (`replicate_body`). PutObject, with its
//! conditional writes decided once here, is the streamed write's main user.

use super::backlog::Hold;
use super::handoff::HintOf;
use super::{Failures, Replicas, Target, replica_failure, unavailable, validate_key};
use crate::ClusterStore;
use crate::quorum::{Consistency, Unavailable, WriteQuorum};
use crate::wire::{self, Ask, Checks, PutHeader};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use ironbucket_rpc::DataStream;
use ironbucket_store::*;
use ironbucket_types::ChecksumSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Chunks buffered per replica while a body streams to the replica set.
const CHANNEL_DEPTH: usize = 8;

impl ClusterStore {
    /// Sends `op` to every replica and waits until `level` of them did it. The first answer
    /// that is about the request itself (not a replica failure) is returned as is.
    /// A replica that misses the write (known down, unreachable, timed out) gets a hint when
    /// `hint` names the write (hinted handoff).
    pub(crate) async fn write_all<A: Ask>(
        &self,
        targets: &Replicas,
        level: Consistency,
        op: A,
        hint: Option<HintOf>,
    ) -> Result<A::Answer> {
        let hint = hint.map(Arc::new);
        let mut q = WriteQuorum::sets(targets.sets(), level);
        let mut first_ok: Option<A::Answer> = None;
        let mut first_err: Option<Error> = None;
        let mut failures = Failures::default();
        let me = self.strong()?;
        // Replicas known down fail first: a write that cannot reach its level starts nowhere.
        self.recheck_for_write(targets, level).await;
        let live = self.live(targets, &mut |n| q.fail(n).and_then(Result::err))?;
        self.hint_skipped(targets, &live, &hint);
        let mut asks = FuturesUnordered::new();
        for t in live {
            // Each replica's request runs as its own task: replicas beyond the level still
            // apply the write after the client has its answer (a dropped request would be
            // cancelled on the replica).
            let (me, t, op, hint) = (me.clone(), t.clone(), op.clone(), hint.clone());
            let task = tokio::spawn(async move {
                let _in_flight = (!t.local).then(|| me.backlog.enter(&t.name));
                let r = me.ask(&t, &op).await;
                if let (Err(e), Some(h)) = (&r, &hint)
                    && replica_failure(e)
                {
                    me.keep_hint(&t.name, h).await;
                }
                (t.name, r)
            });
            asks.push(task.map(|j| j.unwrap_or_else(|e| (String::new(), Err(Error::Internal(e.to_string()))))));
        }
        let mut hold = Hold::new(&me.backlog, self.handoff_config().max_backlog);
        let deadline = tokio::time::sleep(self.timeout());
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = asks.next() => {
                    let Some((node, r)) = next else {
                        if hold.waiting() {
                            return first_ok.ok_or_else(|| Error::Internal("quorum without an answer".into()));
                        }
                        return Err(first_err.unwrap_or_else(|| Error::Unavailable(format!("consistency level {level} was not met"))));
                    };
                    if hold.waiting() {
                        if let Err(e) = &r {
                            failures.note(&node, e);
                        }
                        if hold.released() {
                            return first_ok.ok_or_else(|| Error::Internal("quorum without an answer".into()));
                        }
                        continue;
                    }
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
                                super::keep_refusal(&mut first_err, e);
                            }
                            q.fail(&node)
                        }
                    };
                    match decided {
                        // The others' answers are not awaited (their requests still run on the
                        // replicas), unless this node's backlog is over its bound.
                        Some(Ok(_)) if hold.level_met() => {
                            return first_ok.ok_or_else(|| Error::Internal("quorum without an answer".into()));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(u)) => return Err(first_err.unwrap_or_else(|| failures.error(u))),
                        None => {}
                    }
                }
                _ = &mut deadline => {
                    if hold.waiting() {
                        return first_ok.ok_or_else(|| Error::Internal("quorum without an answer".into()));
                    }
                    return match q.timeout() {
                        Some(Err(u)) => Err(unavailable(u)),
                        _ => Err(Error::Unavailable(format!("consistency level {level} was not met in time"))),
                    };
                }
            }
        }
    }

    /// Keeps a hint for each replica of `targets` not among `live` (known down: the write goes
    /// on without it).
    fn hint_skipped(&self, targets: &[Target], live: &[&Target], hint: &Option<Arc<HintOf>>) {
        let (Some(h), Ok(me)) = (hint, self.strong()) else {
            return;
        };
        let down: Vec<String> = targets
            .iter()
            .filter(|t| !live.iter().any(|l| l.name == t.name))
            .map(|t| t.name.clone())
            .collect();
        if down.is_empty() {
            return;
        }
        let h = h.clone();
        tokio::spawn(async move {
            for node in down {
                me.keep_hint(&node, &h).await;
            }
        });
    }

    /// Pings the replicas known down when the write cannot meet `level` without them (see
    /// [`ClusterStore::recheck_when_short`]).
    pub(super) async fn recheck_for_write(&self, targets: &Replicas, level: Consistency) {
        self.recheck_when_short(targets, |down| {
            let mut q = WriteQuorum::sets(targets.sets(), level);
            down.iter().any(|n| matches!(q.fail(n), Some(Err(_))))
        })
        .await
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
            if down.contains(&t.name.as_str()) {
                if let Some(u) = fail(&t.name) {
                    return Err(Error::Unavailable(format!(
                        "consistency level {} needs {} of {} replicas and {} of them {} down or unreachable ({}); the request was not sent",
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

    /// Streams a body to one replica (this node's store directly, a peer as a push).
    pub(super) fn push<H: wire::Pushed>(
        self: Arc<Self>,
        t: Target,
        header: Arc<H>,
        body: DataStream,
    ) -> futures::future::BoxFuture<'static, Result<H::Answer>> {
        async move { self.push_inner(t, header, body).await }.boxed()
    }

    pub(super) async fn push_inner<H: wire::Pushed>(
        &self,
        t: Target,
        header: Arc<H>,
        body: DataStream,
    ) -> Result<H::Answer> {
        if t.local {
            return H::clone(&header).store(&self.local, wire::terminated(body)).await;
        }
        self.cp
            .peers()
            .push_call(&t.addr, &*header, body, Some(self.timeout_for(header.content_length())))
            .await
            .map_err(|e| Error::Unavailable(format!("node {}: {e}", t.name)))?
    }

    /// Streams `body` to every replica at once and waits for the write level. `send` starts one
    /// replica's transfer from its channel.
    pub(super) async fn replicate_body<T, F, Fut>(
        &self,
        targets: &Replicas,
        level: Consistency,
        mut body: ByteStream,
        trailer: Option<wire::Trailer>,
        send: F,
        hint: Option<HintOf>,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(Target, DataStream) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let hint = hint.map(Arc::new);
        let me = self.strong()?;
        let mut q = WriteQuorum::sets(targets.sets(), level);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, Result<T>)>();
        let mut senders: Vec<(String, mpsc::Sender<std::result::Result<Bytes, String>>)> = Vec::new();
        self.recheck_for_write(targets, level).await;
        let live = self.live(targets, &mut |n| q.fail(n).and_then(Result::err))?;
        self.hint_skipped(targets, &live, &hint);
        for t in live {
            let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
            senders.push((t.name.clone(), tx));
            let mut rx = rx;
            let data: DataStream = Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
            let fut = send(t.clone(), data);
            let (name, done) = (t.name.clone(), done_tx.clone());
            let (me, hint) = (me.clone(), hint.clone());
            let in_flight = (!t.local).then(|| me.backlog.enter(&t.name));
            tokio::spawn(async move {
                let r = fut.await;
                drop(in_flight);
                if let (Err(e), Some(h)) = (&r, &hint)
                    && replica_failure(e)
                {
                    me.keep_hint(&name, h).await;
                }
                let _ = done.send((name, r));
            });
        }
        drop(done_tx);
        // Replicas dropped from the transfer (too slow to take the data): they get a hint once
        // the body has been read whole.
        let cut: std::sync::Mutex<Vec<String>> = Default::default();
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
                            let (name, _) = senders.swap_remove(i);
                            cut.lock().unwrap_or_else(|p| p.into_inner()).push(name);
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
        let mut hold = Hold::new(&me.backlog, self.handoff_config().max_backlog);
        let deadline = tokio::time::sleep(Duration::from_secs(86_400 * 365));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = &mut feed, if !fed => {
                    fed = true;
                    r?;
                    let dropped = std::mem::take(&mut *cut.lock().unwrap_or_else(|p| p.into_inner()));
                    if let (Some(h), false) = (&hint, dropped.is_empty()) {
                        let (me, h) = (me.clone(), h.clone());
                        tokio::spawn(async move {
                            for node in dropped {
                                me.keep_hint(&node, &h).await;
                            }
                        });
                    }
                    if closed {
                        return Err(first_err.unwrap_or_else(|| Error::Unavailable(format!("consistency level {level} was not met"))));
                    }
                    deadline.as_mut().reset(tokio::time::Instant::now() + self.timeout());
                }
                next = done_rx.recv(), if !closed => {
                    let Some((node, r)) = next else {
                        if hold.waiting() {
                            return first_ok.ok_or_else(|| Error::Internal("quorum without an answer".into()));
                        }
                        if !fed {
                            // Every transfer ended before the body did: finish reading it.
                            closed = true;
                            continue;
                        }
                        return Err(first_err.unwrap_or_else(|| Error::Unavailable(format!("consistency level {level} was not met"))));
                    };
                    if hold.waiting() {
                        if hold.released() {
                            return first_ok.ok_or_else(|| Error::Internal("quorum without an answer".into()));
                        }
                        continue;
                    }
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
                        Some(Ok(_)) if hold.level_met() => {
                            return first_ok.ok_or_else(|| Error::Internal("quorum without an answer".into()));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(u)) => {
                            return Err(first_err.unwrap_or_else(|| failures.error(u)));
                        }
                        None => {}
                    }
                }
                _ = &mut deadline => {
                    if hold.waiting() {
                        return first_ok.ok_or_else(|| Error::Internal("quorum without an answer".into()));
                    }
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
        if req.conditions.if_match.is_some() || req.conditions.if_none_match.is_some() {
            // A conditional write is decided by a Paxos round on the key (ADR 0015).
            return self.cas_put(req, body).await;
        }
        let targets = self.targets(&req.bucket, &req.key)?;
        let level = self.level(true);
        let (hlc, origin) = self.stamp().await?;
        let (checks, trailer) = Checks::split(&mut req.checks);
        let hint = self.hint_for_new_version(&req.bucket, &req.key, hlc, origin);
        let header = Arc::new(PutHeader::new(&req, checks, hlc, origin));
        let me = self.strong()?;
        self.replicate_body(
            &targets,
            level,
            body,
            trailer,
            move |t, data| me.clone().push(t, header.clone(), data),
            Some(hint),
        )
        .await
    }
}
