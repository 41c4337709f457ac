//! Quorum reads: every live replica is asked for the version, the newest wins at the read level
//! (with "not found" believed only once every live replica said so), and GET streams the body
//! from a holder of that version, falling back to the next holder if a transfer fails.

use super::{Target, replica_failure, stamp_of, unavailable};
use crate::ClusterStore;
use crate::quorum::{Consistency, ReadQuorum};
use crate::wire::{GetWire, HeadReply};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use ironbucket_store::*;

impl ClusterStore {
    /// Asks the replicas for `g`'s version; decides at the read level.
    pub(super) async fn read_versions(&self, g: &GetWire, level: Consistency) -> Result<Found> {
        let targets = self.targets(&g.bucket, &g.key)?.read();
        self.recheck_when_short(&targets, |down| {
            let mut q: ReadQuorum<()> = ReadQuorum::new(targets.iter().map(|t| t.name.clone()), level);
            down.iter().any(|n| matches!(q.fail(n), Some(Err(_))))
        })
        .await;
        let mut q: ReadQuorum<HeadReply> = ReadQuorum::new(targets.iter().map(|t| t.name.clone()), level);
        let mut answers: Vec<(Target, HeadReply)> = Vec::new();
        let op = g.clone();
        let mut asks = FuturesUnordered::new();
        for t in &targets {
            if self.is_down(t) {
                if let Some(Err(u)) = q.fail(&t.name) {
                    return Err(unavailable(u));
                }
                continue;
            }
            let op = &op;
            asks.push(async move { (t.clone(), self.ask(t, op).await) });
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
                let others = targets
                    .iter()
                    .filter(|t| !self.is_down(t))
                    .filter(|t| !holders.iter().chain(&stale).any(|h| h.name == t.name))
                    .cloned()
                    .collect();
                Ok(Found {
                    reply,
                    holders,
                    stale,
                    meta_differs,
                    replicas: targets.len(),
                    others,
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
                    replicas: targets.len(),
                    others: Vec::new(),
                })
            }
        }
    }

    /// The key's newest version (a delete marker included) as a read at `level` finds it;
    /// `None` when no replica holds one. Needs no SSE-C key: only stamps are compared.
    pub(crate) async fn current_version(
        &self,
        bucket: &str,
        key: &str,
        level: Consistency,
    ) -> Result<Option<VersionStamp>> {
        let found = self.read_versions(&wire_for(bucket, key, None), level).await?;
        Ok(found.reply.version)
    }

    pub(crate) async fn head(&self, req: GetObject) -> Result<ObjectInfo> {
        let g = GetWire::new(&req);
        let level = self.level(false);
        let mut tries = 0;
        let found = loop {
            match self.read_repaired(&g, level).await? {
                Ok(found) => break found,
                Err(_) if tries + 1 < READS_WHEN_MOVED_ON => tries += 1,
                Err(e) => return Err(e),
            }
        };
        let meta = self.settled_meta(&g, &found).await;
        let mut info = found.reply.result?;
        if let Some(m) = &meta {
            with_meta(&mut info, m);
        }
        Ok(info)
    }

    pub(crate) async fn get(&self, req: GetObject) -> Result<GetObjectOutput> {
        let g = GetWire::new(&req);
        let level = self.level(false);
        let mut tries = 0;
        loop {
            let why = match self.get_once(&g, level).await? {
                Read::Served(out) => return Ok(*out),
                Read::MovedOn => Error::Unavailable(format!(
                    "{}/{} was written again while each of {READS_WHEN_MOVED_ON} reads fetched it; retry",
                    g.bucket, g.key
                )),
                Read::NotRepaired(e) => e,
            };
            tries += 1;
            if tries >= READS_WHEN_MOVED_ON {
                return Err(why);
            }
        }
    }

    /// The version the replicas agree on at `level`, repaired; the inner `Err` when its repair
    /// could not put it on the level's replicas (it is being replaced, the source moved on, or a
    /// replica failed): the caller reads again.
    async fn read_repaired(&self, g: &GetWire, level: Consistency) -> Result<std::result::Result<Found, Error>> {
        let found = self.read_versions(g, level).await?;
        match self.repair_found(g, &found, level).await {
            Ok(()) => Ok(Ok(found)),
            Err(e) => {
                tracing::debug!(bucket = %g.bucket, key = %g.key, error = %e, "reading again");
                Ok(Err(e))
            }
        }
    }

    /// One read: the version the replicas agree on at `level`, repaired, then its body.
    async fn get_once(&self, g: &GetWire, level: Consistency) -> Result<Read> {
        let found = match self.read_repaired(g, level).await? {
            Ok(found) => found,
            Err(e) => return Ok(Read::NotRepaired(e)),
        };
        let meta = self.settled_meta(g, &found).await;
        // Fault injection for tests (`FAILPOINTS=read-fetch-delay=return(MS)`, builds with the
        // `failpoints` feature only): MS pass between a read's decision and its body's fetch,
        // as on a busy node.
        #[cfg(feature = "failpoints")]
        if let Some(ms) = fail::eval("read-fetch-delay", |a| a.and_then(|v| v.parse::<u64>().ok())).flatten() {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
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
                    return Ok(Read::Served(Box::new(out)));
                }
                // The holder moved on since it answered: a newer write landed there, which may
                // still be under way (on this replica alone). At ONE it is served; above, a
                // version is served only once it is on the level's replicas, or a read just
                // after this one could return the older one: read again.
                Ok(out) if (out.info.hlc, out.info.origin) > (info.hlc, info.origin) => {
                    if level == Consistency::One {
                        return Ok(Read::Served(Box::new(out)));
                    }
                    tracing::debug!(bucket = %g.bucket, key = %g.key, node = %t.name, "the replica holds a newer version than it answered; reading again");
                    return Ok(Read::MovedOn);
                }
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

    /// Brings the replicas a read found stale up to the version it returns. At QUORUM and ALL
    /// before answering (blocking read repair, as Cassandra's): a version one read returned is
    /// then on the level's replicas, so no later read at the level returns an older one (reads
    /// stay linearizable with conditional writes, ADR 0015). At ONE in the background.
    ///
    /// When the repairs that fail leave the version on fewer replicas than the level needs (it
    /// may be a write still under way, held by its coordinator alone), the read is refused
    /// (503): answering with it would let a later read at the level return an older version.
    async fn repair_found(&self, g: &GetWire, found: &Found, level: Consistency) -> Result<()> {
        let stale = found.stale.clone();
        let (Some(v), Some(source)) = (found.reply.version.as_ref(), found.holders.first()) else {
            return Ok(());
        };
        if level == Consistency::One || stale.is_empty() {
            self.repair(g, &found.reply, &found.holders, stale);
            return Ok(());
        }
        let size = found.reply.result.as_ref().map(|i| i.size).unwrap_or(0);
        let asked = stale.len();
        let failed = self.repair_all(g, v, size, source, &found.holders, stale).await.len();
        if failed == 0 {
            return Ok(());
        }
        let mut holding = found.holders.len() + asked - failed;
        let needed = level.required(found.replicas);
        if holding < needed && !found.others.is_empty() {
            // The replicas that answered too late may hold it (or something newer) already; a
            // repair there succeeds at once then, and copies it otherwise.
            let late = found.others.len();
            let failed_late = self
                .repair_all(g, v, size, source, &found.holders, found.others.clone())
                .await
                .len();
            holding += late - failed_late;
        }
        tracing::debug!(bucket = %g.bucket, key = %g.key, failed, holding, needed, "blocking read repair left replicas stale");
        if holding < needed {
            return Err(Error::Unavailable(format!(
                "the newest version of {}/{} is on {holding} of {} replicas and read repair could not copy it to {needed} for consistency level {level}; the read was not answered, retry",
                g.bucket, g.key, found.replicas
            )));
        }
        Ok(())
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

    /// The object (or the range asked for) from one replica; `size` (the object's) sets how
    /// long the transfer may take.
    pub(super) async fn fetch(&self, t: &Target, g: GetWire, size: u64) -> Result<GetObjectOutput> {
        if t.local {
            return self.local.get_object(g.request()).await;
        }
        let mut stream = self
            .cp
            .peers()
            .pull_call(&t.addr, &g, Some(self.timeout_for(Some(size))))
            .await
            .map_err(|e| Error::Unavailable(format!("node {}: {e}", t.name)))?;
        let head = match stream.next().await {
            Some(Ok(b)) => b,
            Some(Err(e)) => return Err(Error::Unavailable(format!("node {}: {e}", t.name))),
            None => return Err(Error::Unavailable(format!("node {} sent nothing", t.name))),
        };
        let (info, range) =
            ironbucket_rpc::decode_reply::<GetWire>(&t.addr, &head).map_err(|e| Error::Internal(e.to_string()))??;
        let body: ByteStream = Box::pin(stream.map(|r| r.map_err(std::io::Error::other)));
        Ok(GetObjectOutput { info, range, body })
    }
}

/// Reads of one GET or HEAD when each finds the key being written again (the replica sending
/// the body holds a newer version than the read found, or the read's repair could not put its
/// version on the level's replicas).
const READS_WHEN_MOVED_ON: usize = 4;

/// How one read of a GET ended.
enum Read {
    Served(Box<GetObjectOutput>),
    /// The replica sending the body holds a newer version than the read decided on.
    MovedOn,
    /// The read's repair left its version on fewer replicas than the level needs.
    NotRepaired(Error),
}

/// What a cluster read found: the winning answer, the replicas holding that version (this node
/// first), the stale ones, and whether the holders disagree on the version's metadata.
pub(super) struct Found {
    pub(super) reply: HeadReply,
    pub(super) holders: Vec<Target>,
    pub(super) stale: Vec<Target>,
    meta_differs: bool,
    /// How many replicas the key has (the read's level counts among them).
    replicas: usize,
    /// The replicas up that did not answer before the read decided.
    others: Vec<Target>,
}

/// A read of `bucket/key` (version `version_id`, or the newest) with nothing else asked.
pub(crate) fn wire_for(bucket: &str, key: &str, version_id: Option<&str>) -> GetWire {
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
