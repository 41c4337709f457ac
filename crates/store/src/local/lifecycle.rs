//! Lifecycle rules: the pure decision of which actions apply to one key's versions, and the pass
//! over every bucket with rules that carries them out (run by the lifecycle worker).

use super::LocalStore;
use crate::{Error, LifecycleRule, Result};
use ironbucket_meta::ObjectRecord;
use ironbucket_types::now_millis;
use std::sync::atomic::Ordering;

/// What the lifecycle worker decided for one version.
enum LifecycleAction {
    /// Expire the current version (delete, or a delete marker in a versioned bucket).
    ExpireCurrent,
    /// Remove this version for good (noncurrent version or expired delete marker).
    Remove { version_id: String, marker: bool },
}

impl LocalStore {
    /// One pass over every bucket with lifecycle rules; a version under object lock is kept,
    /// and a failed action is logged and left for the next pass.
    pub(super) async fn apply_lifecycle(&self) -> Result<()> {
        let day_ms = (self.cfg.lifecycle_day.as_millis() as u64).max(1);
        for bucket in self.meta.list_buckets()? {
            let Some(rules) = bucket.lifecycle.filter(|r| !r.is_empty()) else {
                continue;
            };
            let name = bucket.name;
            let mut after: Option<String> = None;
            loop {
                let keys = self.meta.version_keys(&name, after.as_deref(), 500)?;
                let Some(last) = keys.last().cloned() else { break };
                for key in keys {
                    let now = now_millis();
                    let versions = self.meta.versions_of(&name, &key)?;
                    for action in lifecycle_actions(&rules, &key, &versions, now, day_ms) {
                        let r = match &action {
                            LifecycleAction::ExpireCurrent => self.remove_object(&name, &key, None, false).await,
                            LifecycleAction::Remove { version_id, .. } => {
                                self.remove_object(&name, &key, Some(version_id), false).await
                            }
                        };
                        match (r, &action) {
                            (Ok(_), LifecycleAction::ExpireCurrent) => {
                                self.lifecycle_counts[0].fetch_add(1, Ordering::Relaxed);
                            }
                            (Ok(_), LifecycleAction::Remove { marker: false, .. }) => {
                                self.lifecycle_counts[1].fetch_add(1, Ordering::Relaxed);
                            }
                            (Ok(_), LifecycleAction::Remove { marker: true, .. }) => {
                                self.lifecycle_counts[2].fetch_add(1, Ordering::Relaxed);
                            }
                            (Err(Error::AccessDenied(_)), _) => {} // under object lock: kept
                            (Err(e), _) => {
                                tracing::warn!(bucket = %name, key = %key, error = %e, "lifecycle action failed")
                            }
                        }
                    }
                }
                after = Some(last);
            }
            // Incomplete multipart uploads.
            for rule in rules.iter().filter(|r| r.enabled) {
                let Some(days) = rule.abort_incomplete_multipart_days else {
                    continue;
                };
                let cutoff = now_millis().saturating_sub(days as u64 * day_ms);
                for (b, u) in self.meta.uploads_older_than(cutoff, 1000)? {
                    if b == name && u.key.starts_with(&rule.prefix) {
                        match self.abort_upload(b, u.key.clone(), u.upload_id.clone()).await {
                            Ok(()) => {
                                self.lifecycle_counts[3].fetch_add(1, Ordering::Relaxed);
                            }
                            Err(Error::NoSuchUpload) => {}
                            Err(e) => tracing::warn!(error = %e, "lifecycle abort failed"),
                        }
                    }
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
        out.push(LifecycleAction::ExpireCurrent);
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
