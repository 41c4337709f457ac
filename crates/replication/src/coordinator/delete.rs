//! Deletes: a stamped tombstone (by version id) or delete marker written like any version, after
//! object lock is checked against the metadata the version's holders agree on.

use super::handoff::HintOf;
use super::validate_key;
use crate::ClusterStore;
use crate::wire::DeleteAt;
use ironbucket_store::*;
use ironbucket_types::now_millis;

impl ClusterStore {
    pub(crate) async fn delete(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        bypass: bool,
    ) -> Result<DeleteResult> {
        validate_key(key)?;
        if let Some(v) = version_id
            && self.local.get_object_lock_configuration(bucket).await.is_ok()
        {
            // Ordered with retention and legal-hold changes by a round on the key (ADR 0015).
            return self.cas_delete_version(bucket, key, v, bypass).await;
        }
        let targets = self.targets(bucket, key)?;
        let (hlc, origin) = self.stamp().await?;
        // A delete by id names its version; a new delete marker is a new version (named by its
        // stamp in a versioned bucket).
        let hint = match version_id {
            Some(v) => HintOf {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version_id: Some(v.to_string()),
                hlc,
                origin,
            },
            None => self.hint_for_new_version(bucket, key, hlc, origin),
        };
        let op = DeleteAt {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version_id: version_id.map(str::to_string),
            bypass,
            hlc,
            origin,
        };
        self.write_all(&targets, self.level(true), op, Some(hint)).await
    }

    /// In a bucket with object lock, refuses to delete version `version_id` when the metadata its
    /// holders agree on (merged) locks it: a replica that missed a legal hold or a retention
    /// must not decide alone.
    pub(super) async fn check_unlocked(&self, bucket: &str, key: &str, version_id: &str, bypass: bool) -> Result<()> {
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
}
