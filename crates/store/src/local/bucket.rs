//! Buckets: creating and removing them, changing their settings (each change validated and
//! applied in one commit), following the cluster's agreed bucket list, and what they use:
//! object and byte counts, quotas, monthly request counts.

use super::LocalStore;
use crate::model::*;
use crate::{BucketChange, Error, Result};
use ironbucket_meta::BucketRecord;
use ironbucket_types::{now_millis, validate_bucket_name};
use std::sync::atomic::Ordering;

impl LocalStore {
    /// [`ObjectStore::create_bucket_as`](crate::ObjectStore::create_bucket_as) on this node: the
    /// bucket, its ACL and its owning key's permission in one commit.
    pub(super) async fn add_bucket(&self, spec: crate::NewBucket) -> Result<()> {
        validate_bucket_name(&spec.name)?;
        let rec = spec.record(now_millis());
        let owner = spec.owner_key;
        self.commit(vec![], move |t| {
            if t.get_bucket(&rec.name)?.is_some() {
                return Err(Error::BucketAlreadyOwnedByYou);
            }
            let key = match &owner {
                Some(ak) => {
                    let mut k = t.get_key(ak)?.ok_or_else(|| Error::NoSuchAccessKey(ak.clone()))?;
                    k.buckets
                        .insert(rec.name.clone(), crate::Permission::Owner.as_str().to_string());
                    Some(k)
                }
                None => None,
            };
            t.put_bucket(&rec)?;
            // Grants left by an earlier bucket of this name (from before deletes revoked them).
            t.revoke_bucket_grants(&rec.name, owner.as_deref())?;
            if let Some(k) = key {
                t.put_key(&k)?;
            }
            Ok(())
        })
        .await
    }

    /// [`ObjectStore::delete_bucket`](crate::ObjectStore::delete_bucket) on this node.
    pub(super) async fn remove_bucket(&self, bucket: &str) -> Result<()> {
        let name = bucket.to_string();
        self.commit(vec![], move |t| {
            if t.get_bucket(&name)?.is_none() {
                return Err(Error::NoSuchBucket);
            }
            if t.bucket_in_use(&name)? {
                return Err(Error::BucketNotEmpty);
            }
            t.delete_bucket(&name)?;
            t.revoke_bucket_grants(&name, None)?;
            Ok(())
        })
        .await
    }

    /// [`ObjectStore::list_buckets`](crate::ObjectStore::list_buckets) on this node.
    pub(super) async fn bucket_infos(&self) -> Result<Vec<BucketInfo>> {
        Ok(self
            .scan(|m| m.list_buckets())
            .await?
            .into_iter()
            .map(|b| BucketInfo {
                name: b.name,
                created: b.created,
            })
            .collect())
    }

    /// Validates and applies a settings change to a bucket, in one commit.
    pub async fn change_bucket(&self, bucket: &str, change: BucketChange) -> Result<()> {
        change.validate()?;
        self.update_bucket(bucket, move |b| change.apply(b)).await
    }

    /// Changes a bucket's record in one commit.
    async fn update_bucket(
        &self,
        bucket: &str,
        change: impl FnOnce(&mut BucketRecord) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let name = bucket.to_string();
        self.commit(vec![], move |t| {
            let mut b = t.get_bucket(&name)?.ok_or(Error::NoSuchBucket)?;
            change(&mut b)?;
            t.put_bucket(&b)?;
            Ok(())
        })
        .await
    }

    /// Makes the local bucket table match `buckets` (the cluster's agreed list): creates and
    /// updates records; removes buckets that are gone unless they still hold data here.
    /// Returns the names that could not be removed.
    /// Every bucket's record, with all its settings.
    pub async fn bucket_records(&self) -> Result<Vec<BucketRecord>> {
        self.scan(|m| m.list_buckets()).await
    }

    pub async fn sync_buckets(&self, buckets: Vec<BucketRecord>) -> Result<Vec<String>> {
        let local = self.scan(|m| m.list_buckets()).await?;
        let wanted: std::collections::BTreeMap<String, BucketRecord> =
            buckets.into_iter().map(|b| (b.name.clone(), b)).collect();
        let changed: Vec<BucketRecord> = wanted
            .values()
            .filter(|w| !local.iter().any(|l| l == *w))
            .cloned()
            .collect();
        let gone: Vec<String> = local
            .iter()
            .filter(|l| !wanted.contains_key(&l.name))
            .map(|l| l.name.clone())
            .collect();
        if changed.is_empty() && gone.is_empty() {
            return Ok(vec![]);
        }
        self.commit(vec![], move |t| {
            for b in &changed {
                t.put_bucket(b)?;
            }
            let mut kept = Vec::new();
            for name in gone {
                if t.bucket_in_use(&name)? {
                    kept.push(name);
                } else {
                    t.delete_bucket(&name)?;
                }
            }
            Ok(kept)
        })
        .await
    }

    /// Applies the cluster's changes to some buckets and keys (`None`: deleted) in one commit,
    /// the incremental form of [`LocalStore::sync_buckets`] and `sync_keys`. Returns the deleted
    /// buckets kept because they still hold data here.
    pub async fn sync_changed(
        &self,
        buckets: Vec<(String, Option<BucketRecord>)>,
        keys: Vec<(String, Option<ironbucket_meta::KeyRecord>)>,
    ) -> Result<Vec<String>> {
        if buckets.is_empty() && keys.is_empty() {
            return Ok(vec![]);
        }
        self.commit(vec![], move |t| {
            let mut kept = Vec::new();
            for (name, rec) in &buckets {
                match rec {
                    Some(b) => t.put_bucket(b)?,
                    None if t.get_bucket(name)?.is_none() => {}
                    None if t.bucket_in_use(name)? => kept.push(name.clone()),
                    None => t.delete_bucket(name)?,
                }
            }
            for (ak, rec) in &keys {
                match rec {
                    Some(k) => t.put_key(k)?,
                    None => t.delete_key(ak)?,
                }
            }
            Ok(kept)
        })
        .await
    }

    /// Whether a bucket holds any object version, delete marker or multipart upload here.
    pub async fn bucket_in_use(&self, bucket: &str) -> Result<bool> {
        let name = bucket.to_string();
        self.commit(vec![], move |t| Ok(t.bucket_in_use(&name)?)).await
    }

    /// Refuses a write that would exceed the bucket's quota before any data is stored
    /// (checked again, exactly, when the write commits).
    pub(super) fn quota_precheck(&self, b: &BucketRecord, key: &str, bytes: u64) -> Result<()> {
        let bucket = b.name.as_str();
        if let Some(q) = &b.quota {
            // An overwrite in an unversioned bucket frees the old body's bytes.
            let freed = match b.versioning {
                None => self.meta.get_object(bucket, key)?.map(|o| o.size).unwrap_or(0),
                Some(_) => 0,
            };
            quota_check(q, self.meta.bucket_stats(bucket)?, 0, bytes as i64 - freed as i64)?;
        }
        Ok(())
    }

    /// [`ObjectStore::bucket_usage`](crate::ObjectStore::bucket_usage) on this node.
    pub(super) async fn usage_of(&self, bucket: &str) -> Result<BucketUsage> {
        let b = self.bucket_must_exist(bucket)?;
        let s = self.meta.bucket_stats(bucket)?;
        let prefix = format!("r/{bucket}/");
        let mut requests: std::collections::BTreeMap<String, u64> =
            self.scan(move |m| m.counters(&prefix)).await?.into_iter().collect();
        // Include what has not been flushed yet.
        if let Ok(m) = self.requests.lock()
            && let Some(n) = m.get(bucket)
        {
            *requests.entry(month_of(now_millis())).or_default() += n;
        }
        Ok(BucketUsage {
            objects: s.objects,
            bytes: s.bytes,
            quota: b.quota,
            requests,
        })
    }

    /// [`ObjectStore::record_request`](crate::ObjectStore::record_request) on this node.
    pub(super) fn count_request(&self, bucket: &str) {
        if let Ok(mut m) = self.requests.lock() {
            match m.get_mut(bucket) {
                Some(n) => *n += 1,
                None => {
                    m.insert(bucket.to_string(), 1);
                }
            }
        }
    }

    /// [`ObjectStore::usage`](crate::ObjectStore::usage) on this node.
    pub(super) async fn node_usage(&self) -> Result<Usage> {
        let s = self.meta.stats()?;
        let dir = self.cfg.data_dir.clone();
        let (total, free) = tokio::task::spawn_blocking(move || {
            (
                fs4::total_space(&dir).unwrap_or(0),
                fs4::available_space(&dir).unwrap_or(0),
            )
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Usage {
            objects: s.objects,
            bytes: s.bytes,
            disk_total: total,
            disk_free: free,
            lifecycle: crate::LifecycleCounts {
                expired_objects: self.lifecycle_counts[0].load(Ordering::Relaxed),
                noncurrent_versions: self.lifecycle_counts[1].load(Ordering::Relaxed),
                delete_markers: self.lifecycle_counts[2].load(Ordering::Relaxed),
                aborted_uploads: self.lifecycle_counts[3].load(Ordering::Relaxed),
            },
        })
    }
}

/// Refuses growth beyond a bucket's quota.
pub(super) fn quota_check(
    q: &crate::Quota,
    used: ironbucket_meta::Stats,
    add_objects: i64,
    add_bytes: i64,
) -> Result<()> {
    if add_objects > 0
        && let Some(max) = q.max_objects
        && used.objects.saturating_add_signed(add_objects) > max
    {
        return Err(Error::QuotaExceeded(format!(
            "the bucket's quota of {max} objects is reached"
        )));
    }
    if add_bytes > 0
        && let Some(max) = q.max_bytes
        && used.bytes.saturating_add_signed(add_bytes) > max
    {
        return Err(Error::QuotaExceeded(format!(
            "the bucket's quota of {max} bytes would be exceeded"
        )));
    }
    Ok(())
}

/// `YYYY-MM` of a Unix time in milliseconds (UTC).
pub(super) fn month_of(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}")
}
