//! Lifecycle rules: the pure decision of which actions apply to one key's versions, a page of
//! those decisions over the keys this node stores ([`LocalStore::lifecycle_page`]), and the pass
//! that carries them out on this node alone (a single node; a cluster decides once and applies
//! the decisions as replicated deletes instead, see `ironbucket_replication`).

use super::LocalStore;
use crate::{Error, LifecycleRule, Result};
use ironbucket_meta::ObjectRecord;
use ironbucket_types::now_millis;
use std::sync::atomic::Ordering;

/// What lifecycle rules decided for one version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleAction {
    /// Expire the current version `version_id`, written at `hlc` by `origin` (delete it, or
    /// add a delete marker in a versioned bucket). Carry it out only while that exact version
    /// (the stamp, not only the id: every version of an unversioned bucket is `null`) is still
    /// current.
    ExpireCurrent {
        version_id: String,
        hlc: ironbucket_types::Hlc,
        origin: u64,
    },
    /// Remove this version for good (noncurrent version or expired delete marker).
    Remove { version_id: String, marker: bool },
}

/// The decisions for the keys of one page, and the key to continue after (`None`: done).
pub type LifecyclePage = (Vec<(String, Vec<LifecycleAction>)>, Option<String>);

impl LocalStore {
    /// Decides lifecycle actions for up to `limit` keys of `bucket` this node stores, after
    /// `after`, keeping only keys for which `mine(key)` holds. Reads local metadata only (on
    /// the blocking pool).
    pub async fn lifecycle_page(
        &self,
        bucket: &str,
        rules: &[LifecycleRule],
        after: Option<&str>,
        limit: usize,
        mine: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<LifecyclePage> {
        let day_ms = (self.cfg.lifecycle_day.as_millis() as u64).max(1);
        let (b, a) = (bucket.to_string(), after.map(str::to_string));
        let keys = self.scan(move |m| m.version_keys(&b, a.as_deref(), limit)).await?;
        let next = (keys.len() == limit).then(|| keys.last().cloned()).flatten();
        let mine: Vec<String> = keys.into_iter().filter(|k| mine(k)).collect();
        let b = bucket.to_string();
        let keys = self
            .scan(move |m| {
                mine.into_iter()
                    .map(|k| m.versions_of(&b, &k).map(|v| (k, v)))
                    .collect::<ironbucket_meta::Result<Vec<_>>>()
            })
            .await?;
        let mut out = Vec::new();
        for (key, versions) in keys {
            let actions = lifecycle_actions(rules, &key, &versions, now_millis(), day_ms);
            if !actions.is_empty() {
                out.push((key, actions));
            }
        }
        Ok((out, next))
    }

    /// Incomplete multipart uploads of `bucket` that `rules` abort now: (key, upload id).
    pub async fn lifecycle_expired_uploads(
        &self,
        bucket: &str,
        rules: &[LifecycleRule],
    ) -> Result<Vec<(String, String)>> {
        let day_ms = (self.cfg.lifecycle_day.as_millis() as u64).max(1);
        let mut out = Vec::new();
        for rule in rules.iter().filter(|r| r.enabled) {
            let Some(days) = rule.abort_incomplete_multipart_days else {
                continue;
            };
            let cutoff = now_millis().saturating_sub(days as u64 * day_ms);
            for (b, u) in self.scan(move |m| m.uploads_older_than(cutoff, 1000)).await? {
                if b == bucket && u.key.starts_with(&rule.prefix) && !out.iter().any(|(_, id)| *id == u.upload_id) {
                    out.push((u.key, u.upload_id));
                }
            }
        }
        Ok(out)
    }

    /// Counts a lifecycle action carried out (`GET /metrics`: `ironbucket_lifecycle_removed`).
    pub fn count_lifecycle(&self, action: &LifecycleAction) {
        let i = match action {
            LifecycleAction::ExpireCurrent { .. } => 0,
            LifecycleAction::Remove { marker: false, .. } => 1,
            LifecycleAction::Remove { marker: true, .. } => 2,
        };
        self.lifecycle_counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an incomplete multipart upload aborted by a lifecycle rule.
    pub fn count_lifecycle_abort(&self) {
        self.lifecycle_counts[3].fetch_add(1, Ordering::Relaxed);
    }

    /// One pass over every bucket with lifecycle rules, applied to this node's data alone; a
    /// version under object lock is kept, and a failed action is logged and left for the next
    /// pass.
    pub(super) async fn apply_lifecycle(&self) -> Result<()> {
        for bucket in self.scan(|m| m.list_buckets()).await? {
            let Some(rules) = bucket.lifecycle.filter(|r| !r.is_empty()) else {
                continue;
            };
            let name = bucket.name;
            let mut after: Option<String> = None;
            loop {
                let (page, next) = self
                    .lifecycle_page(&name, &rules, after.as_deref(), 500, &|_| true)
                    .await?;
                for (key, actions) in page {
                    for action in actions {
                        let version = match &action {
                            LifecycleAction::ExpireCurrent { .. } => None,
                            LifecycleAction::Remove { version_id, .. } => Some(version_id.as_str()),
                        };
                        match self.remove_object(&name, &key, version, false).await {
                            Ok(_) => self.count_lifecycle(&action),
                            Err(Error::AccessDenied(_)) => {} // under object lock: kept
                            Err(e) => {
                                tracing::warn!(bucket = %name, key = %key, error = %e, "lifecycle action failed")
                            }
                        }
                    }
                }
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            for (key, upload_id) in self.lifecycle_expired_uploads(&name, &rules).await? {
                match self.abort_upload(name.clone(), key, upload_id).await {
                    Ok(()) => self.count_lifecycle_abort(),
                    Err(Error::NoSuchUpload) => {}
                    Err(e) => tracing::warn!(error = %e, "lifecycle abort failed"),
                }
            }
        }
        Ok(())
    }
}

/// The pure decision: which lifecycle actions apply to one key's versions (newest first).
fn lifecycle_actions(
    rules: &[LifecycleRule],
    key: &str,
    versions: &[ObjectRecord],
    now: u64,
    day_ms: u64,
) -> Vec<LifecycleAction> {
    let mut out = Vec::new();
    let Some(newest) = versions.first() else { return out };
    if newest.delete_marker {
        // A delete marker with nothing behind it is an expired object delete marker.
        if versions.len() == 1
            && rules
                .iter()
                .any(|r| r.expired_object_delete_marker && r.matches(key, 0, &[]))
        {
            out.push(LifecycleAction::Remove {
                version_id: newest.version_id.clone(),
                marker: true,
            });
        }
    } else if rules
        .iter()
        .any(|r| r.matches(key, newest.size, &newest.tags) && r.current_expired(newest.last_modified, now, day_ms))
    {
        out.push(LifecycleAction::ExpireCurrent {
            version_id: newest.version_id.clone(),
            hlc: newest.hlc,
            origin: newest.origin,
        });
    }
    for (noncurrent_seen, w) in versions.windows(2).enumerate() {
        let noncurrent_seen = noncurrent_seen as u32;
        let (successor, v) = (&w[0], &w[1]);
        let expired = rules.iter().any(|r| {
            r.matches(key, v.size, &v.tags)
                && r.noncurrent_expired(successor.last_modified, noncurrent_seen, now, day_ms)
        });
        if expired {
            out.push(LifecycleAction::Remove {
                version_id: v.version_id.clone(),
                marker: v.delete_marker,
            });
        }
    }
    out
}
