//! A version's metadata (tags, retention, legal hold, ACL): found by a read at the request's
//! level, changed by a stamped write naming the version on every replica, and read as the merge
//! of what its holders say (last writer wins per field). Object lock is decided on that merge,
//! from enough replicas to include one that acknowledged any lock.

use super::handoff::HintOf;
use super::read::wire_for;
use super::{Replicas, Target, replica_failure};
use crate::ClusterStore;
use crate::quorum::Consistency;
use crate::wire::{MetaAt, MetaOp, MetaState, MetaWrite};
use ironbucket_store::*;

impl ClusterStore {
    /// The version a metadata request is about (`version_id`, or the newest), found by a read at
    /// the request's level, and the replicas holding it. For a change, replicas that lack the
    /// version get it first (so that the change reaches them too).
    pub(super) async fn meta_target(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        write: bool,
    ) -> Result<(String, Replicas)> {
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
                Replicas::plain(targets.read().into_iter().filter(|t| !self.is_down(t)).collect())
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
                        .await;
                }
                _ => self.repair(&g, &found.reply, &found.holders, found.stale.clone()),
            }
        }
        let holders = if write {
            self.targets(bucket, key)?
        } else {
            Replicas::plain(found.holders)
        };
        Ok((v.version_id, holders))
    }

    /// A stamped change to a version's tags or ACL on every replica (at the write level). The
    /// version is named here, so replicas that disagree on the current version still change the
    /// same one. Retention and legal hold are changed by a round on the key instead
    /// (`cas_lock_change`, ordered with deletes of the version).
    pub(crate) async fn meta_write(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        change: MetaChange,
    ) -> Result<()> {
        if matches!(change, MetaChange::Retention { .. } | MetaChange::LegalHold(_)) {
            return Err(Error::Internal(
                "object lock changes are decided by a conditional-write round".into(),
            ));
        }
        let (version_id, targets) = self.meta_target(bucket, key, version_id, true).await?;
        let at = self.stamp().await?;
        let hint = HintOf {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version_id: Some(version_id.clone()),
            hlc: at.0,
            origin: at.1,
        };
        let op = MetaWrite(MetaAt {
            bucket: bucket.to_string(),
            key: key.to_string(),
            op: MetaOp::Change { version_id, change, at },
        });
        let level = self.level(true);
        self.write_all(&targets, level, op, Some(hint))
            .await
            .map_err(|e| match e {
                // Replicas that still lack the version (not repaired yet) count as failed ones.
                Error::NoSuchVersion => Error::Unavailable(format!(
                    "consistency level {level} was not met: too few replicas hold the version yet"
                )),
                other => other,
            })
    }

    /// A version's metadata as its holders (read at the read level) agree on it once merged.
    pub(crate) async fn meta_read(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<VersionMeta> {
        let (version_id, holders) = self.meta_target(bucket, key, version_id, false).await?;
        self.merged_meta(bucket, key, &version_id, &holders).await
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

    /// Asks every holder of version `version_id` for its metadata and merges the answers (last
    /// writer wins per field); holders whose copy differs get the merge in the background.
    pub(crate) async fn merged_meta(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        holders: &[Target],
    ) -> Result<VersionMeta> {
        let (merged, _, last) = self.collect_meta(bucket, key, version_id, holders).await;
        merged.ok_or_else(|| last.unwrap_or_else(|| Error::Unavailable("no replica holds the version".into())))
    }

    /// The metadata object lock is decided on: version `version_id`'s, merged from every live
    /// replica, of which at least a quorum (or the write level, if higher) must answer whatever
    /// level the request asked for, so that the answers include a replica that acknowledged any
    /// lock set at QUORUM or above. `None`: no replica holds the version.
    pub(super) async fn lock_meta(&self, bucket: &str, key: &str, version_id: &str) -> Result<Option<VersionMeta>> {
        let targets = self.targets(bucket, key)?.read();
        let rf = targets.len();
        let need = Consistency::Quorum.required(rf).max(self.level(true).required(rf));
        self.recheck_when_short(&targets, |down| rf - down.len() < need).await;
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
        let op = MetaState {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version_id: version_id.to_string(),
        };
        let answers = futures::future::join_all(targets.iter().map(|t| {
            let op = &op;
            async move { (t.clone(), self.ask(t, op).await) }
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
            let op = MetaWrite(MetaAt {
                bucket: bucket.to_string(),
                key: key.to_string(),
                op: MetaOp::Merge {
                    version_id: version_id.to_string(),
                    meta: merged.clone(),
                },
            });
            tokio::spawn(async move {
                for t in behind {
                    match me.ask(&t, &op).await {
                        Ok(()) => {
                            me.repairs.count(&me.repairs.metadata);
                            tracing::info!(node = %t.name, "metadata read repair")
                        }
                        Err(e) => {
                            me.repairs.count(&me.repairs.failed);
                            tracing::warn!(node = %t.name, error = %e, "metadata read repair failed")
                        }
                    }
                }
            });
        }
        (Some(merged), answered, last)
    }
}
