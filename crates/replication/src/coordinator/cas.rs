//! Conditional writes: the proposer's side of a Paxos round per key (ADR 0015; the replica's
//! side is [`crate::cas::acceptor`]).
//!
//! A round prepares a ballot on the key's replicas, finishes any value an earlier round left
//! accepted but uncommitted, brings the promisers to one current version, decides the condition
//! against it, has the write accepted (staged, invisible) and commits it once the level
//! accepted. The body is held (in memory, or spooled to disk when large) so that a round refused
//! by a concurrent one can run again whole.

use super::handoff::HintOf;
use super::read::wire_for;
use super::{Replicas, Target, replica_failure, stamp_of, unavailable};
use crate::ClusterStore;
use crate::cas::acceptor::file_stream;
use crate::cas::history::{Verdict, fate_of, verdict};
use crate::cas::{
    AcceptHeader, AcceptReply, AcceptedValue, Ballot, CasOp, CasRead, CasReply, Committed, Promise, PullStaged, Staged,
};
use crate::quorum::{Consistency, Stamp, WriteQuorum};
use crate::wire::HeadReply;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use ironbucket_rpc::DataStream;
use ironbucket_store::*;
use ironbucket_types::Hlc;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

/// Once a write is chosen, how long the other replicas' accepts are still waited for.
const CHOSEN_GRACE: Duration = Duration::from_millis(50);

/// A conditional write's body, kept so that a round can run again whole.
pub(crate) enum Body {
    Empty,
    Held(Vec<Bytes>),
    Spooled(Spool),
}

/// A spooled body, removed when dropped.
pub(crate) struct Spool(pub(super) PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Body {
    /// The body as a pushed stream (with the end marker).
    async fn stream(&self) -> Result<DataStream> {
        let data: DataStream = match self {
            Body::Empty => Box::pin(futures::stream::empty()),
            Body::Held(chunks) => Box::pin(futures::stream::iter(chunks.clone().into_iter().map(Ok))),
            Body::Spooled(s) => Box::pin(file_stream(s.0.clone()).await?.map(|r| r.map_err(|e| e.to_string()))),
        };
        Ok(ended(data))
    }
}

fn ended(data: DataStream) -> DataStream {
    Box::pin(data.chain(futures::stream::once(async { Ok(Bytes::new()) })))
}

/// The key's state as a round found it: the newest version among the promisers.
pub(crate) struct Current {
    pub head: HeadReply,
    /// [`CasRead::Version`]: the version's metadata as the promisers holding it agree on it
    /// (merged, last writer per field).
    pub meta: Option<VersionMeta>,
}

impl Current {
    /// The current version's ETag (`None`: no object, or a delete marker). An object this
    /// request may not read (SSE-C) counts as present with an unknown ETag.
    pub fn etag(&self) -> Result<Option<String>> {
        match &self.head.result {
            Ok(info) => Ok(Some(info.etag.clone())),
            Err(Error::NoSuchKey) | Err(Error::DeleteMarker { .. }) => Ok(None),
            Err(Error::NoSuchBucket) => Err(Error::NoSuchBucket),
            Err(e) if replica_failure(e) => Err(e.clone()),
            Err(_) => Ok(Some(String::new())),
        }
    }
}

/// Where a value's body comes from in an accept.
enum Source<'a> {
    /// This round's own body.
    Mine(&'a Body),
    /// An earlier round's value: held staged by these replicas.
    Staged(Vec<Target>),
}

/// How an accept went.
enum Accepted {
    Chosen(Vec<Target>),
    /// Not chosen: the highest ballot a refusal named, and whether any replica may hold it.
    NotChosen {
        highest: Option<Ballot>,
        maybe_held: bool,
    },
}

/// What a prepare got.
struct Prepared {
    promises: Vec<(Target, Promise)>,
    /// Every replica of the key promised.
    everyone: bool,
}

impl ClusterStore {
    /// The level a conditional write runs at: ONE is raised to QUORUM (one replica cannot
    /// decide for the key), and the client is told.
    fn cas_level(&self) -> Consistency {
        match self.level(true) {
            Consistency::One => {
                hints::note_upgraded(Consistency::Quorum);
                Consistency::Quorum
            }
            l => l,
        }
    }

    /// Runs rounds until one commits a write `decide` makes from the key's current state (or
    /// `decide` refuses: 412), within the request timeout.
    pub(crate) async fn cas_round(
        &self,
        bucket: &str,
        key: &str,
        read: CasRead,
        body: Body,
        decide: &mut (dyn FnMut(&Current, Hlc, u64) -> Result<Staged> + Send),
    ) -> Result<Committed> {
        let level = self.cas_level();
        let targets = self.targets(bucket, key)?;
        let deadline = Instant::now() + self.timeout();
        // A value of this request that some replica may hold accepted: until its fate is
        // known, the request cannot answer anything but its success or "unknown".
        let mut mine: Option<Staged> = None;
        let mut attempt = 0u32;
        loop {
            if attempt > 0 {
                pause(attempt, deadline).await.map_err(|()| match &mine {
                    Some(_) => {
                        tracing::debug!(bucket, key, "out of time while an earlier attempt's fate is open");
                        unknown_outcome()
                    }
                    None => Error::ConditionalRequestConflict(
                        "the conditional write collided with concurrent conditional writes of the same key until the request timed out; nothing was written, retry".into(),
                    ),
                })?;
            }
            attempt += 1;
            // The ballot is also the stamp of the version the round writes: a later round
            // writes a newer version.
            let (hlc, node) = self.stamp().await?;
            let ballot = Stamp { hlc, node };
            let prepared = match self
                .prepare(&targets, level, (bucket, key, &read), ballot, mine.is_some())
                .await
            {
                Ok(Ok(p)) => p,
                Ok(Err(higher)) => {
                    self.release(&targets, bucket, key, ballot);
                    if let Some(h) = higher {
                        self.observe(h)?;
                    }
                    continue;
                }
                Err(e) => {
                    self.release(&targets, bucket, key, ballot);
                    if mine.is_some() {
                        tracing::debug!(bucket, key, error = %e, "a prepare failed while an earlier attempt's fate is open");
                        return Err(unknown_outcome());
                    }
                    return Err(e);
                }
            };
            let current = newest(&prepared.promises);
            let current_stamp = current.head.version.as_ref().map(stamp_of);
            let records: Vec<AcceptedValue> = prepared
                .promises
                .iter()
                .filter_map(|(_, p)| p.accepted.clone())
                .collect();
            // The last value the promisers accepted. Uncommitted, it may have been chosen: it
            // is finished (Paxos's rule) before anything is decided. Values accepted under
            // lower ballots were superseded by it.
            let last = records.iter().max_by_key(|a| a.ballot).cloned();
            if let Some(m) = &mine {
                let committed = current_stamp == Some(m.stamp())
                    || records.iter().any(|a| a.committed && a.value.stamp() == m.stamp());
                tracing::debug!(bucket, key, mine = ?m.stamp(), current = ?current_stamp, committed, everyone = prepared.everyone, "settling an earlier attempt");
                if committed {
                    // This request's write was applied (by another round, or by this one's
                    // commit that fell short of the level): answered once it is on the level's
                    // replicas, as a commit would have made sure.
                    if current_stamp == Some(m.stamp())
                        && let Err(e) = self
                            .settle((bucket, key), (&targets, level), &prepared.promises, &current)
                            .await
                    {
                        tracing::debug!(bucket, key, error = %e, "this request's write is applied but not yet on the level's replicas");
                        self.release(&targets, bucket, key, ballot);
                        continue;
                    }
                    self.release(&targets, bucket, key, ballot);
                    return Ok(match current.head.result {
                        Ok(info) if current_stamp == Some(m.stamp()) => Committed::Object(Box::new(info)),
                        _ => Committed::Already,
                    });
                }
                let last_is_other_uncommitted = last
                    .as_ref()
                    .is_some_and(|a| !a.committed && a.value.stamp() != m.stamp());
                let anywhere = records.iter().any(|a| a.value.stamp() == m.stamp());
                let commit_since =
                    records.iter().any(|a| a.committed && a.ballot > m.stamp()) || current_stamp > Some(m.stamp());
                if !last_is_other_uncommitted && last.as_ref().is_none_or(|a| a.value.stamp() != m.stamp()) {
                    // What the replicas that replaced it say became of it.
                    let fate = fate_of(m.stamp(), prepared.promises.iter().map(|(_, p)| p.replaced.as_ref()));
                    tracing::debug!(bucket, key, mine = ?m.stamp(), ?fate, anywhere, commit_since, "an earlier attempt was replaced");
                    match verdict(fate, prepared.everyone, anywhere, commit_since) {
                        Verdict::TookEffect => {
                            // It took effect, and a later write replaced it since.
                            self.release(&targets, bucket, key, ballot);
                            return Ok(Committed::Already);
                        }
                        Verdict::Dead => {
                            tracing::debug!(bucket, key, mine = ?m.stamp(), everyone = prepared.everyone, "an earlier attempt never took effect");
                            mine = None;
                        }
                        Verdict::Unknown => {
                            self.release(&targets, bucket, key, ballot);
                            return Err(unknown_outcome());
                        }
                    }
                }
            }
            if let Some(a) = last.filter(|a| !a.committed) {
                let value = a.value;
                tracing::debug!(bucket, key, ?ballot, accepted_under = ?a.ballot, value = ?value.stamp(), "finishing an earlier round's value");
                let ours = mine.as_ref().is_some_and(|m| m.stamp() == value.stamp());
                let holders: Vec<Target> = prepared
                    .promises
                    .iter()
                    .filter(|(_, p)| p.accepted.as_ref().is_some_and(|x| x.value.stamp() == value.stamp()))
                    .map(|(t, _)| t.clone())
                    .collect();
                match self
                    .accept(&targets, level, ballot, &value, Source::Staged(holders))
                    .await
                {
                    Accepted::Chosen(accepters) => {
                        let source = Source::Staged(accepters.clone());
                        let done = self
                            .commit(&targets, level, (ballot, &value, &source), &accepters)
                            .await;
                        match done {
                            Ok(c) if ours => return Ok(c),
                            Err(e) if ours && !replica_failure(&e) => return Err(e),
                            Ok(_) => {}
                            Err(e) => {
                                tracing::debug!(bucket, key, ours, error = %e, "finishing an earlier conditional write fell short");
                                self.release(&targets, bucket, key, ballot);
                            }
                        }
                    }
                    Accepted::NotChosen { highest, .. } => {
                        self.release(&targets, bucket, key, ballot);
                        if let Some(h) = highest {
                            self.observe(h)?;
                        }
                    }
                }
                continue;
            }
            if current_stamp >= Some(ballot) {
                // The current version is stamped ahead of this node's clock: go above it.
                self.release(&targets, bucket, key, ballot);
                if let Some(s) = current_stamp {
                    self.observe(s)?;
                }
                continue;
            }
            if let Err(e) = self
                .settle((bucket, key), (&targets, level), &prepared.promises, &current)
                .await
            {
                self.release(&targets, bucket, key, ballot);
                return Err(e);
            }
            let value = match decide(&current, ballot.hlc, ballot.node) {
                Ok(v) => v,
                Err(e) => {
                    self.release(&targets, bucket, key, ballot);
                    return Err(e);
                }
            };
            match self.accept(&targets, level, ballot, &value, Source::Mine(&body)).await {
                Accepted::Chosen(accepters) => {
                    tracing::debug!(bucket, key, ?ballot, accepters = accepters.len(), "chosen");
                    match self
                        .commit(&targets, level, (ballot, &value, &Source::Mine(&body)), &accepters)
                        .await
                    {
                        Err(e) if replica_failure(&e) => {
                            // Chosen, but applied by fewer replicas than the level (one could
                            // not write, another had promised a concurrent round): the next
                            // round on the key finishes it. This request runs that round
                            // itself, within its time, rather than answer "unknown".
                            tracing::debug!(bucket, key, ?ballot, error = %e, "chosen, but the commit fell short: finishing it in a new round");
                            self.release(&targets, bucket, key, ballot);
                            mine = Some(value);
                        }
                        done => return done,
                    }
                }
                Accepted::NotChosen { highest, maybe_held } => {
                    tracing::debug!(bucket, key, ?ballot, ?highest, maybe_held, "not chosen");
                    self.release(&targets, bucket, key, ballot);
                    if let Some(h) = highest {
                        self.observe(h)?;
                    }
                    if maybe_held {
                        mine = Some(value);
                    }
                }
            }
        }
    }

    /// Frees the key on every replica from the round under `ballot` (in the background).
    fn release(&self, targets: &Replicas, bucket: &str, key: &str, ballot: Ballot) {
        let Ok(me) = self.strong() else { return };
        let (targets, bucket, key) = (targets.to_vec(), bucket.to_string(), key.to_string());
        tokio::spawn(async move {
            for t in targets.iter().filter(|t| !me.is_down(t)) {
                let op = CasOp::Release {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    ballot,
                };
                let _ = me.cas_ask(t, op).await;
            }
        });
    }

    /// Takes a stamp another node issued into this node's clock (its next ballot is above it).
    fn observe(&self, s: Stamp) -> Result<()> {
        self.local.clock().observe(s.hlc).map_err(|e| {
            Error::Unavailable(format!(
                "a replica answered with a stamp ahead of this node's clock: {e}"
            ))
        })
    }

    async fn cas_ask(&self, t: &Target, op: CasOp) -> Result<CasReply> {
        if t.local {
            return self.serve_cas(op).await;
        }
        self.cp
            .peers()
            .call(&t.addr, &op, Some(self.timeout()))
            .await
            .map_err(|e| Error::Unavailable(format!("node {}: {e}", t.name)))?
    }

    /// Prepare: promises at the level in every set. `Ok(Err(higher))` when refused by too
    /// many: by a higher ballot (to go above), or by a round under way (`None`: pause and
    /// retry). With `everyone`, waits for every live replica's answer (within the timeout).
    async fn prepare(
        &self,
        targets: &Replicas,
        level: Consistency,
        (bucket, key, read): (&str, &str, &CasRead),
        ballot: Ballot,
        everyone: bool,
    ) -> Result<std::result::Result<Prepared, Option<Ballot>>> {
        let mut q = WriteQuorum::sets(targets.sets(), level);
        let mut refused: Option<Ballot> = None;
        let mut busy = false;
        let mut failures = super::Failures::default();
        let mut down = 0;
        self.recheck_for_write(targets, level).await;
        for t in targets.iter().filter(|t| self.is_down(t)) {
            down += 1;
            if let Some(Err(u)) = q.fail(&t.name) {
                return Err(unavailable(u));
            }
        }
        let mut asks: FuturesUnordered<_> = targets
            .iter()
            .filter(|t| !self.is_down(t))
            .map(|t| async move {
                let op = CasOp::Prepare {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    ballot,
                    read: read.clone(),
                };
                (t.clone(), self.cas_ask(t, op).await.and_then(CasReply::promise))
            })
            .collect();
        let mut promises = Vec::new();
        let mut met = false;
        let deadline = tokio::time::sleep(self.timeout());
        tokio::pin!(deadline);
        let refusal = |refused: Option<Ballot>, busy: bool| (refused.is_some() || busy).then_some(refused);
        loop {
            tokio::select! {
                next = asks.next() => {
                    let Some((t, r)) = next else { break };
                    let step = match r {
                        Ok(p) if p.promised => {
                            promises.push((t.clone(), p));
                            q.ack(&t.name)
                        }
                        Ok(p) => {
                            if p.busy_ms > 0 {
                                busy = true;
                            } else {
                                refused = refused.max(Some(p.highest));
                            }
                            q.fail(&t.name)
                        }
                        Err(e) if replica_failure(&e) => {
                            failures.note(&t.name, &e);
                            q.fail(&t.name)
                        }
                        Err(e) => return Err(e),
                    };
                    match step {
                        Some(Ok(_)) => {
                            met = true;
                            if !everyone {
                                break;
                            }
                        }
                        Some(Err(u)) => {
                            return match refusal(refused, busy) {
                                Some(h) => Ok(Err(h)),
                                None => Err(failures.error(u)),
                            };
                        }
                        None => {}
                    }
                }
                _ = &mut deadline => break,
            }
        }
        if !met {
            return match (refusal(refused, busy), q.timeout()) {
                (Some(h), _) => Ok(Err(h)),
                (None, Some(Err(u))) => Err(failures.error(u)),
                _ => Err(Error::Unavailable(format!(
                    "consistency level {level} was not met in time"
                ))),
            };
        }
        let everyone = down == 0 && promises.len() == targets.len();
        Ok(Ok(Prepared { promises, everyone }))
    }

    /// Brings the promisers that lag behind the newest version among them up to it before a
    /// decision rests on it: the state decided on is then on the level's replicas. A promiser
    /// that cannot take the version (its disk refuses writes, say) fails the round only when
    /// those that hold it fall short of the level: any later round's promisers include one of
    /// them. It is repaired later (anti-entropy, a read's repair).
    async fn settle(
        &self,
        (bucket, key): (&str, &str),
        (targets, level): (&Replicas, Consistency),
        promises: &[(Target, Promise)],
        current: &Current,
    ) -> Result<()> {
        let Some(v) = current.head.version.clone() else {
            return Ok(());
        };
        let at = |p: &Promise| p.head.as_ref().and_then(|h| h.version.as_ref()).map(stamp_of);
        let mut holders: Vec<Target> = promises
            .iter()
            .filter(|(_, p)| at(p) == Some(stamp_of(&v)))
            .map(|(t, _)| t.clone())
            .collect();
        holders.sort_by_key(|t| !t.local);
        let lagging: Vec<Target> = promises
            .iter()
            .filter(|(_, p)| at(p) < Some(stamp_of(&v)))
            .map(|(t, _)| t.clone())
            .collect();
        let Some(source) = holders.first().cloned() else {
            return Ok(());
        };
        if lagging.is_empty() {
            return Ok(());
        }
        let size = current.head.result.as_ref().map(|i| i.size).unwrap_or(0);
        let g = wire_for(bucket, key, None);
        let failed = self.repair_all(&g, &v, size, &source, &holders, lagging.clone()).await;
        if failed.is_empty() {
            return Ok(());
        }
        let mut holding: Vec<&str> = holders
            .iter()
            .chain(&lagging)
            .map(|t| t.name.as_str())
            .filter(|n| !failed.iter().any(|f| f == n))
            .collect();
        if WriteQuorum::met_by(targets.sets(), level, holding.iter().copied()) {
            tracing::debug!(bucket, key, failed = ?failed, "settled on the level's replicas; the others are left to repair");
            return Ok(());
        }
        // The live replicas that did not promise (they answered after the level was met) may
        // hold the version already (the repair finds so at once) or take it.
        let others: Vec<Target> = targets
            .iter()
            .filter(|t| !promises.iter().any(|(p, _)| p.name == t.name) && !self.is_down(t))
            .cloned()
            .collect();
        let failed_others = self.repair_all(&g, &v, size, &source, &holders, others.clone()).await;
        holding.extend(
            others
                .iter()
                .map(|t| t.name.as_str())
                .filter(|n| !failed_others.iter().any(|f| f == n)),
        );
        if WriteQuorum::met_by(targets.sets(), level, holding.iter().copied()) {
            tracing::debug!(bucket, key, failed = ?failed, "settled on the level's replicas with the replicas that did not promise");
            return Ok(());
        }
        Err(Error::Unavailable(format!(
            "{} replica(s) could not be brought up to the key's current version before the condition was decided ({}), leaving it on fewer than consistency level {level} needs",
            failed.len(),
            failed.join(", ")
        )))
    }

    /// Accept: `value` goes to every live replica under `ballot`.
    async fn accept(
        &self,
        targets: &Replicas,
        level: Consistency,
        ballot: Ballot,
        value: &Staged,
        source: Source<'_>,
    ) -> Accepted {
        let mut q = WriteQuorum::sets(targets.sets(), level);
        self.recheck_for_write(targets, level).await;
        for t in targets.iter().filter(|t| self.is_down(t)) {
            if let Some(Err(_)) = q.fail(&t.name) {
                return Accepted::NotChosen {
                    highest: None,
                    maybe_held: false,
                };
            }
        }
        let source = &source;
        let mut asks: FuturesUnordered<_> = targets
            .iter()
            .filter(|t| !self.is_down(t))
            .map(|t| async move { (t.clone(), self.accept_one(t, ballot, value, source).await) })
            .collect();
        let mut accepters = Vec::new();
        let mut highest = None;
        let mut maybe_held = false;
        let deadline = tokio::time::sleep(self.timeout_for(None));
        tokio::pin!(deadline);
        let mut chosen = false;
        loop {
            tokio::select! {
                next = asks.next() => {
                    let Some((t, r)) = next else { break };
                    match r {
                        Ok(AcceptReply::Accepted) => {
                            maybe_held = true;
                            accepters.push(t.clone());
                            if let Some(Ok(_)) = q.ack(&t.name) {
                                chosen = true;
                                // The rest get a moment to accept too (they would otherwise
                                // only get the write by a hint).
                                deadline.as_mut().reset(Instant::now() + CHOSEN_GRACE);
                            }
                        }
                        Ok(AcceptReply::Refused { highest: h }) => {
                            highest = highest.max(Some(h));
                            q.fail(&t.name);
                        }
                        Ok(AcceptReply::NotHeld) => {
                            q.fail(&t.name);
                        }
                        Err(e) => {
                            // A transfer that failed part way may still have been staged.
                            maybe_held |= replica_failure(&e);
                            tracing::debug!(node = %t.name, error = %e, "a replica did not accept a conditional write");
                            q.fail(&t.name);
                        }
                    }
                }
                _ = &mut deadline => {
                    maybe_held |= !asks.is_empty();
                    break;
                }
            }
        }
        if chosen {
            Accepted::Chosen(accepters)
        } else {
            Accepted::NotChosen { highest, maybe_held }
        }
    }

    async fn accept_one(&self, t: &Target, ballot: Ballot, value: &Staged, source: &Source<'_>) -> Result<AcceptReply> {
        if let Source::Staged(holders) = source
            && holders.iter().any(|h| h.name == t.name)
        {
            let op = CasOp::AcceptRef {
                bucket: value.bucket().to_string(),
                key: value.key().to_string(),
                ballot,
                value: value.stamp(),
            };
            match self.cas_ask(t, op).await.and_then(CasReply::accept)? {
                AcceptReply::NotHeld => {}
                other => return Ok(other),
            }
        }
        let body = match source {
            _ if !value.has_body() => ended(Box::pin(futures::stream::empty())),
            Source::Mine(b) => b.stream().await?,
            Source::Staged(holders) => self.pull_staged(holders, value).await?,
        };
        let header = AcceptHeader {
            ballot,
            value: value.clone(),
        };
        if t.local {
            return self
                .cas
                .accept(&self.local, header, crate::wire::terminated(body))
                .await;
        }
        self.cp
            .peers()
            .push_call(&t.addr, &header, body, Some(self.timeout_for(None)))
            .await
            .map_err(|e| Error::Unavailable(format!("node {}: {e}", t.name)))?
    }

    /// An earlier round's staged body, from the first holder that still has it.
    async fn pull_staged(&self, holders: &[Target], value: &Staged) -> Result<DataStream> {
        let want = PullStaged {
            bucket: value.bucket().to_string(),
            key: value.key().to_string(),
            value: value.stamp(),
        };
        let mut last = Error::Unavailable("no replica holds the staged write any more".into());
        for h in holders {
            if h.local {
                match self.cas.pull(&want.bucket, &want.key, want.value).await {
                    Ok(b) => return Ok(ended(Box::pin(b.map(|r| r.map_err(|e| e.to_string()))))),
                    Err(e) => last = e,
                }
                continue;
            }
            let mut stream = match self.cp.peers().pull_call(&h.addr, &want, Some(self.timeout())).await {
                Ok(s) => s,
                Err(e) => {
                    last = Error::Unavailable(format!("node {}: {e}", h.name));
                    continue;
                }
            };
            let first = match stream.next().await {
                Some(Ok(b)) => b,
                _ => continue,
            };
            match ironbucket_rpc::decode_reply::<PullStaged>(&h.addr, &first) {
                Ok(Ok(())) => return Ok(ended(stream)),
                Ok(Err(e)) => last = e,
                Err(e) => last = Error::Internal(e.to_string()),
            }
        }
        Err(last)
    }

    /// Commit: every accepter applies the chosen `value`; answered once the level did. The
    /// replicas that did not accept it get a hint. When the accepters alone cannot make the level
    /// (one was lost before its commit), the other live replicas accept the chosen value under
    /// the same ballot and commit it too: the write is applied, and answering 503 would make the
    /// client's retry find it and answer 412.
    async fn commit(
        &self,
        targets: &Replicas,
        level: Consistency,
        (ballot, value, source): (Ballot, &Staged, &Source<'_>),
        accepters: &[Target],
    ) -> Result<Committed> {
        let stamp = value.stamp();
        let hint = match value {
            Staged::Delete(d) if d.version_id.is_some() => HintOf {
                bucket: d.bucket.clone(),
                key: d.key.clone(),
                version_id: d.version_id.clone(),
                hlc: stamp.hlc,
                origin: stamp.node,
            },
            _ => self.hint_for_new_version(value.bucket(), value.key(), stamp.hlc, stamp.node),
        };
        let accepted = |t: &Target| accepters.iter().any(|a| a.name == t.name);
        for t in targets.iter().filter(|t| !accepted(t)) {
            self.keep_hint(&t.name, &hint).await;
        }
        let mut q = WriteQuorum::sets(targets.sets(), level);
        // The others, in case the accepters fall short; those known down cannot help.
        let mut others: Vec<Target> = Vec::new();
        for t in targets.iter().filter(|t| !accepted(t)) {
            if self.is_down(t) {
                q.fail(&t.name);
            } else {
                others.push(t.clone());
            }
        }
        let commit_op = || CasOp::Commit {
            bucket: value.bucket().to_string(),
            key: value.key().to_string(),
            value: stamp,
        };
        let me = self.strong()?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for t in accepters {
            // Each commit runs as its own task: replicas beyond the level still apply it.
            let (me, t, tx, op) = (me.clone(), t.clone(), tx.clone(), commit_op());
            tokio::spawn(async move {
                let mut r = me.cas_ask(&t, op.clone()).await.and_then(CasReply::commit);
                // A replica that answered with a failure of its own (a disk error) keeps the
                // value staged: the commit is sent again, a few times, before it counts
                // against the level.
                for wait in COMMIT_RETRY_WAITS {
                    if !matches!(r, Err(Error::Internal(_))) {
                        break;
                    }
                    tokio::time::sleep(wait).await;
                    r = me.cas_ask(&t, op.clone()).await.and_then(CasReply::commit);
                }
                let _ = tx.send((t, r));
            });
        }
        drop(tx);
        let mut in_flight = accepters.len();
        let mut rx_open = true;
        // The others' accepts and commits, once started (they borrow the body).
        let mut extra = FuturesUnordered::new();
        let mut answer: Option<Committed> = None;
        let mut first_err: Option<Error> = None;
        let mut failures = super::Failures::default();
        let deadline = tokio::time::sleep(self.timeout_for(None));
        tokio::pin!(deadline);
        loop {
            if in_flight == 0 {
                if others.is_empty() {
                    return Err(first_err.unwrap_or_else(|| Error::Unavailable(format!(
                        "the conditional write was chosen but fewer replicas than consistency level {level} needs applied it; it will be applied by the next request on this key"
                    ))));
                }
                tracing::debug!(
                    bucket = value.bucket(),
                    key = value.key(),
                    others = others.len(),
                    "the accepters fell short of the level: the others take the chosen value"
                );
                for t in std::mem::take(&mut others) {
                    in_flight += 1;
                    extra.push(async move {
                        let r = match self.accept_one(&t, ballot, value, source).await {
                            Ok(AcceptReply::Accepted) => self.cas_ask(&t, commit_op()).await.and_then(CasReply::commit),
                            Ok(_) => Ok(Committed::Missing),
                            // Whatever kept it from taking the value (the staged body gone from
                            // the holders once they committed it, say), it says nothing about
                            // the request.
                            Err(e) => Err(Error::Unavailable(format!(
                                "node {}: could not take the chosen value: {e}",
                                t.name
                            ))),
                        };
                        (t, r)
                    });
                }
            }
            let (t, r) = tokio::select! {
                next = rx.recv(), if rx_open => match next {
                    Some(x) => x,
                    None => {
                        rx_open = false;
                        continue;
                    }
                },
                Some(x) = extra.next(), if !extra.is_empty() => x,
                _ = &mut deadline => {
                    return Err(Error::Unavailable(format!(
                        "the conditional write was chosen but not applied at consistency level {level} in time; it will be applied by the next request on this key"
                    )));
                }
            };
            in_flight -= 1;
            let step = match r {
                Ok(Committed::Missing) => {
                    failures.note(&t.name, &Error::Internal("the replica does not hold the write".into()));
                    q.fail(&t.name)
                }
                Ok(c) => {
                    if !matches!(c, Committed::Already) || answer.is_none() {
                        answer = Some(c);
                    }
                    q.ack(&t.name)
                }
                Err(e) if replica_failure(&e) => {
                    failures.note(&t.name, &e);
                    self.keep_hint(&t.name, &hint).await;
                    q.fail(&t.name)
                }
                Err(e) => {
                    super::keep_refusal(&mut first_err, e);
                    q.fail(&t.name)
                }
            };
            match step {
                Some(Ok(_)) => return answer.ok_or_else(|| Error::Internal("a commit without an answer".into())),
                Some(Err(u)) => return Err(first_err.unwrap_or_else(|| failures.error(u))),
                None => {}
            }
        }
    }
}

/// Pauses before a commit is sent again to a replica that failed it with an error of its own.
const COMMIT_RETRY_WAITS: [Duration; 2] = [Duration::from_millis(20), Duration::from_millis(100)];

/// The newest version among the promises (a promiser's answer; "no object" when none holds
/// one).
fn newest(promises: &[(Target, Promise)]) -> Current {
    let head = promises
        .iter()
        .filter_map(|(_, p)| p.head.clone())
        .max_by_key(|h| h.version.as_ref().map(stamp_of))
        .unwrap_or(HeadReply {
            version: None,
            result: Err(Error::NoSuchKey),
        });
    let at = head.version.as_ref().map(stamp_of);
    let mut meta: Option<VersionMeta> = None;
    for (_, p) in promises {
        let same = p.head.as_ref().and_then(|h| h.version.as_ref()).map(stamp_of) == at;
        if let (true, Some(m)) = (same, &p.meta) {
            match meta.as_mut() {
                Some(merged) => {
                    merged.merge(m);
                }
                None => meta = Some(m.clone()),
            }
        }
    }
    Current { head, meta }
}

fn unknown_outcome() -> Error {
    Error::Unavailable(
        "the conditional write reached some replicas before a concurrent one refused it, and whether it took effect cannot be told yet: read the object to find out".into(),
    )
}

/// A randomised pause before the next round (`Err` once the deadline is near).
async fn pause(attempt: u32, deadline: Instant) -> std::result::Result<(), ()> {
    let cap = (4u64 << attempt.min(6)).min(250);
    let ms = 1 + (uuid::Uuid::new_v4().as_u128() % cap as u128) as u64;
    let wake = Instant::now() + Duration::from_millis(ms);
    if wake >= deadline {
        return Err(());
    }
    tokio::time::sleep_until(wake).await;
    Ok(())
}
