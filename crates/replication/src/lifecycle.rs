//! Lifecycle rules in a cluster, decided once per key: only the key's primary replica (the first
//! node the ring names) decides, from its own copy of the key's versions, and carries the
//! decision out as an ordinary replicated delete through the coordinator. So every replica gets
//! the same delete marker (one stamp, one version id) and each expiration is counted once, where
//! a node-local pass would have every replica expire the key on its own.
//!
//! The primary's copy may lag (it missed a newer write): an expiration of the current version
//! is therefore carried out only if a read at QUORUM still finds that version current.

use crate::ClusterStore;
use ironbucket_runtime::WorkerCtx;
use ironbucket_store::{
    Consistency, Error, LifecycleAction, LifecycleRule, ObjectStore, Result, VersionEntry, VersionListQuery,
};
use std::time::Instant;

/// What one lifecycle pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LifecyclePass {
    /// Keys this node decided for (it is their primary replica).
    pub keys: u64,
    /// Actions carried out.
    pub applied: u64,
    /// Actions skipped: the version was locked, no longer current, or the delete failed (tried
    /// again next pass).
    pub skipped: u64,
}

impl ClusterStore {
    /// Whether this node is `bucket/key`'s primary replica in the current layout.
    fn is_primary(&self, bucket: &str, key: &str) -> bool {
        self.current_ring()
            .ok()
            .is_some_and(|r| r.replica_names(bucket, key).first() == Some(&self.cp.node_name()))
    }

    /// One pass over every bucket with lifecycle rules, for the keys this node is the primary
    /// replica of.
    pub async fn run_lifecycle(&self, ctx: &WorkerCtx) -> Result<LifecyclePass> {
        let mut pass = LifecyclePass::default();
        let buckets: Vec<(String, Vec<LifecycleRule>)> = self.cp.with_state(|s| {
            s.buckets
                .values()
                .filter_map(|b| {
                    b.lifecycle
                        .as_ref()
                        .filter(|r| !r.is_empty())
                        .map(|r| (b.name.clone(), r.clone()))
                })
                .collect()
        });
        for (bucket, rules) in buckets {
            let mut after: Option<String> = None;
            loop {
                let began = Instant::now();
                let mine = |k: &str| self.is_primary(&bucket, k);
                let (page, next) = self
                    .local
                    .lifecycle_page(&bucket, &rules, after.as_deref(), 200, &mine)
                    .await?;
                for (key, actions) in page {
                    pass.keys += 1;
                    for action in actions {
                        if self.apply_lifecycle_action(&bucket, &key, &action).await {
                            self.local.count_lifecycle(&action);
                            pass.applied += 1;
                        } else {
                            pass.skipped += 1;
                        }
                    }
                }
                ctx.progress(format!(
                    "{} actions applied, {} skipped, {} keys decided (bucket {bucket})",
                    pass.applied, pass.skipped, pass.keys
                ));
                ctx.throttle(began.elapsed()).await;
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            for (key, upload_id) in self.local.lifecycle_expired_uploads(&bucket, &rules).await? {
                if !self.is_primary(&bucket, &key) {
                    continue;
                }
                match self.abort_multipart_upload(&bucket, &key, &upload_id).await {
                    Ok(()) => {
                        self.local.count_lifecycle_abort();
                        pass.applied += 1;
                    }
                    Err(Error::NoSuchUpload) => {}
                    Err(e) => {
                        pass.skipped += 1;
                        ctx.note_error(format!("lifecycle abort of {bucket}/{key} failed: {e}"));
                    }
                }
            }
        }
        Ok(pass)
    }

    /// Carries out one decision; false when it was not (locked, superseded, or failed).
    async fn apply_lifecycle_action(&self, bucket: &str, key: &str, action: &LifecycleAction) -> bool {
        let version = match action {
            LifecycleAction::ExpireCurrent {
                version_id,
                hlc,
                origin,
            } => {
                // Decided on this node's copy, which may have missed a newer write: expire only
                // the exact version (its stamp) a quorum still holds as current.
                match self.current_version(bucket, key, Consistency::Quorum).await {
                    Ok(Some(v))
                        if !v.delete_marker && v.version_id == *version_id && v.hlc == *hlc && v.origin == *origin =>
                    {
                        None
                    }
                    Ok(_) => return false,
                    Err(e) => {
                        tracing::debug!(%bucket, %key, error = %e, "lifecycle: current version unknown; retried next pass");
                        return false;
                    }
                }
            }
            LifecycleAction::Remove {
                version_id,
                marker: true,
            } => {
                // An expired delete marker is one with nothing behind it. This node's copy may
                // have missed an older version: removing the marker would bring it back, so
                // the whole cluster's listing of the key must show the marker alone.
                match self.only_version(bucket, key).await {
                    Ok(Some(only)) if only == *version_id => Some(version_id.as_str()),
                    Ok(_) => return false,
                    Err(e) => {
                        tracing::debug!(%bucket, %key, error = %e, "lifecycle: versions unknown; retried next pass");
                        return false;
                    }
                }
            }
            LifecycleAction::Remove { version_id, .. } => Some(version_id.as_str()),
        };
        match self.delete_object(bucket, key, version, false).await {
            Ok(_) => true,
            Err(Error::AccessDenied(_)) => false, // under object lock: kept
            Err(e) => {
                tracing::warn!(%bucket, %key, error = %e, "lifecycle action failed; retried next pass");
                false
            }
        }
    }

    /// The version id of `key`'s only version as the cluster lists it, or `None` when it has
    /// none or several.
    async fn only_version(&self, bucket: &str, key: &str) -> Result<Option<String>> {
        let page = self
            .list_object_versions(
                bucket,
                VersionListQuery {
                    prefix: key.to_string(),
                    delimiter: None,
                    key_marker: None,
                    version_id_marker: None,
                    max_keys: 3,
                    lenient_marker: false,
                },
            )
            .await?;
        let mine: Vec<&VersionEntry> = page.versions.iter().filter(|v| v.info.key == key).collect();
        Ok(match mine.as_slice() {
            [one] => Some(one.info.version_id.clone()),
            _ => None,
        })
    }
}
