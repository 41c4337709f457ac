//! Typed access to the tables inside a (shared) write transaction.

use crate::records::{self, BucketRecord, KeyRecord, ObjectRecord, PartRecord, PurgeRecord, UploadRecord};
use crate::{BUCKETS, GARBAGE, INLINE, KEYS, OBJECTS, PARTS, PURGED, Result, STATS, UPLOADS, VERSIONS};
use redb::{ReadableTable, WriteTransaction};

/// A view of the shared write transaction handed to [`crate::MetaStore::write`] closures.
pub struct Tx<'a> {
    pub(crate) txn: &'a WriteTransaction,
    /// The anti-entropy tree's classifier (`None` until one is installed).
    pub(crate) classes: Option<std::sync::Arc<dyn crate::tree::Classify>>,
    /// The tree's cell changes of this commit, written just before it.
    pub(crate) pending: crate::tree::PendingCells,
    /// The tree is not kept (a single node).
    pub(crate) tree_off: bool,
}

pub(crate) fn parts_of(
    t: &impl ReadableTable<(&'static str, u32), &'static [u8]>,
    upload_id: &str,
) -> Result<Vec<PartRecord>> {
    let mut out = Vec::new();
    for item in t.range((upload_id, 0u32)..=(upload_id, u32::MAX))? {
        let (_, v) = item?;
        out.push(records::decode(v.value())?);
    }
    Ok(out)
}

type VersionTable = (&'static str, &'static [u8], &'static str);

/// All versions of a key, newest first, with their sort keys.
pub(crate) fn versions_of(
    t: &impl ReadableTable<VersionTable, &'static [u8]>,
    bucket: &str,
    key: &str,
) -> Result<Vec<(String, ObjectRecord)>> {
    let mut out = Vec::new();
    for item in t.range((bucket, key.as_bytes(), "")..)? {
        let (k, v) = item?;
        let (b, kk, sk) = k.value();
        if b != bucket || kk != key.as_bytes() {
            break;
        }
        out.push((sk.to_string(), records::decode(v.value())?));
    }
    Ok(out)
}

/// The version of a key with this id (`"null"` for the null version), with its sort key.
pub(crate) fn find_version(
    t: &impl ReadableTable<VersionTable, &'static [u8]>,
    bucket: &str,
    key: &str,
    version_id: &str,
) -> Result<Option<(String, ObjectRecord)>> {
    if version_id != "null" {
        // Non-null version ids are their sort keys.
        return Ok(t
            .get((bucket, key.as_bytes(), version_id))?
            .map(|g| records::decode(g.value()))
            .transpose()?
            .map(|r| (version_id.to_string(), r)));
    }
    Ok(versions_of(t, bucket, key)?
        .into_iter()
        .find(|(_, r)| r.version_id == "null"))
}

impl<'a> Tx<'a> {
    pub fn get_key(&self, access_key: &str) -> Result<Option<KeyRecord>> {
        let t = self.txn.open_table(KEYS)?;
        t.get(access_key)?.map(|g| records::decode(g.value())).transpose()
    }

    pub fn put_key(&mut self, rec: &KeyRecord) -> Result<()> {
        let raw = records::encode(rec)?;
        self.txn
            .open_table(KEYS)?
            .insert(rec.access_key.as_str(), raw.as_slice())?;
        Ok(())
    }

    /// Takes every key's permission on bucket `name` away, except `keep`'s: a bucket that is
    /// deleted leaves no grant behind for a new bucket of the same name to inherit.
    pub fn revoke_bucket_grants(&mut self, name: &str, keep: Option<&str>) -> Result<()> {
        let mut changed = Vec::new();
        for item in self.txn.open_table(KEYS)?.iter()? {
            let (k, v) = item?;
            if keep == Some(k.value()) {
                continue;
            }
            let mut rec: KeyRecord = records::decode(v.value())?;
            if rec.buckets.remove(name).is_some() {
                changed.push(rec);
            }
        }
        for rec in changed {
            self.put_key(&rec)?;
        }
        Ok(())
    }

    pub fn delete_key(&mut self, access_key: &str) -> Result<()> {
        self.txn.open_table(KEYS)?.remove(access_key)?;
        Ok(())
    }

    pub fn versions_of(&self, bucket: &str, key: &str) -> Result<Vec<(String, ObjectRecord)>> {
        let t = self.txn.open_table(VERSIONS)?;
        versions_of(&t, bucket, key)
    }

    pub fn find_version(&self, bucket: &str, key: &str, version_id: &str) -> Result<Option<(String, ObjectRecord)>> {
        let t = self.txn.open_table(VERSIONS)?;
        find_version(&t, bucket, key, version_id)
    }

    /// Records that a version was deleted by id (a version tombstone).
    pub fn put_purge(&mut self, bucket: &str, key: &str, version_id: &str, p: &PurgeRecord) -> Result<()> {
        let raw = records::encode(p)?;
        self.txn
            .open_table(PURGED)?
            .insert((bucket, key.as_bytes(), version_id), raw.as_slice())?;
        self.tree_purge(bucket, key, version_id, Some(p))
    }

    pub fn get_purge(&self, bucket: &str, key: &str, version_id: &str) -> Result<Option<PurgeRecord>> {
        let t = self.txn.open_table(PURGED)?;
        t.get((bucket, key.as_bytes(), version_id))?
            .map(|g| records::decode(g.value()))
            .transpose()
    }

    /// The version ids of the key's version tombstones.
    pub fn purges_of(&self, bucket: &str, key: &str) -> Result<Vec<String>> {
        let t = self.txn.open_table(PURGED)?;
        let mut out = Vec::new();
        for item in t.range((bucket, key.as_bytes(), "")..)? {
            let (k, _) = item?;
            let (b, kk, vid) = k.value();
            if b != bucket || kk != key.as_bytes() {
                break;
            }
            out.push(vid.to_string());
        }
        Ok(out)
    }

    pub fn delete_purge(&mut self, bucket: &str, key: &[u8], version_id: &str) -> Result<()> {
        let gone = self
            .txn
            .open_table(PURGED)?
            .remove((bucket, key, version_id))?
            .is_some();
        if gone {
            let key = std::str::from_utf8(key).map_err(|_| crate::Error::Corrupt("object key is not UTF-8".into()))?;
            self.tree_purge(bucket, key, version_id, None)?;
        }
        Ok(())
    }

    pub fn put_version(&mut self, bucket: &str, key: &str, rec: &ObjectRecord) -> Result<()> {
        let raw = records::encode(rec)?;
        let sk = rec.sort_key();
        self.txn
            .open_table(VERSIONS)?
            .insert((bucket, key.as_bytes(), sk.as_str()), raw.as_slice())?;
        self.tree_version(bucket, key, &sk, Some(rec))
    }

    pub fn delete_version(&mut self, bucket: &str, key: &str, sort_key: &str) -> Result<()> {
        let gone = self
            .txn
            .open_table(VERSIONS)?
            .remove((bucket, key.as_bytes(), sort_key))?
            .is_some();
        if gone {
            self.tree_version(bucket, key, sort_key, None)?;
        }
        Ok(())
    }

    pub(crate) fn new(
        txn: &'a WriteTransaction,
        classes: Option<std::sync::Arc<dyn crate::tree::Classify>>,
        tree_off: bool,
    ) -> Self {
        Self {
            txn,
            classes,
            pending: Default::default(),
            tree_off,
        }
    }

    pub fn get_bucket(&self, name: &str) -> Result<Option<BucketRecord>> {
        let t = self.txn.open_table(BUCKETS)?;
        t.get(name)?.map(|g| records::decode(g.value())).transpose()
    }

    pub fn put_bucket(&mut self, rec: &BucketRecord) -> Result<()> {
        let raw = records::encode(rec)?;
        self.txn
            .open_table(BUCKETS)?
            .insert(rec.name.as_str(), raw.as_slice())?;
        Ok(())
    }

    /// Removes a bucket's record, and the tombstones it may still hold (a bucket is deleted
    /// only when [`Tx::bucket_in_use`] says it holds nothing else): they mean nothing once the
    /// bucket is gone, and a new bucket of the same name must not inherit them.
    pub fn delete_bucket(&mut self, name: &str) -> Result<()> {
        self.txn.open_table(BUCKETS)?.remove(name)?;
        let empty: &[u8] = &[];
        let mut left: Vec<(Vec<u8>, String)> = Vec::new();
        for item in self.txn.open_table(VERSIONS)?.range((name, empty, "")..)? {
            let (k, _) = item?;
            let (b, key, sk) = k.value();
            if b != name {
                break;
            }
            left.push((key.to_vec(), sk.to_string()));
        }
        let mut purges: Vec<(Vec<u8>, String)> = Vec::new();
        for item in self.txn.open_table(PURGED)?.range((name, empty, "")..)? {
            let (k, _) = item?;
            let (b, key, vid) = k.value();
            if b != name {
                break;
            }
            purges.push((key.to_vec(), vid.to_string()));
        }
        for (key, sk) in left {
            let key = String::from_utf8(key).map_err(|_| crate::Error::Corrupt("object key is not UTF-8".into()))?;
            self.delete_version(name, &key, &sk)?;
        }
        for (key, vid) in purges {
            self.delete_purge(name, &key, &vid)?;
        }
        Ok(())
    }

    /// Whether the bucket holds any object or in-progress multipart upload. In a bucket that
    /// never had versioning, delete markers are a cluster's tombstones of deleted keys and do
    /// not count.
    pub fn bucket_in_use(&self, name: &str) -> Result<bool> {
        let versioned = self.get_bucket(name)?.is_some_and(|b| b.versioning.is_some());
        let objects = self.txn.open_table(OBJECTS)?;
        let empty: &[u8] = &[];
        if let Some(item) = objects.range((name, empty)..)?.next() {
            let (k, _) = item?;
            if k.value().0 == name {
                return Ok(true);
            }
        }
        let versions = self.txn.open_table(VERSIONS)?;
        for item in versions.range((name, empty, "")..)? {
            let (k, v) = item?;
            if k.value().0 != name {
                break;
            }
            if versioned || !records::decode::<ObjectRecord>(v.value())?.delete_marker {
                return Ok(true);
            }
        }
        let uploads = self.txn.open_table(UPLOADS)?;
        if let Some(item) = uploads.range((name, empty, "")..)?.next() {
            let (k, _) = item?;
            if k.value().0 == name {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub fn get_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>> {
        let t = self.txn.open_table(OBJECTS)?;
        t.get((bucket, key.as_bytes()))?
            .map(|g| records::decode(g.value()))
            .transpose()
    }

    pub fn put_object(&mut self, bucket: &str, key: &str, rec: &ObjectRecord) -> Result<()> {
        let raw = records::encode(rec)?;
        self.txn
            .open_table(OBJECTS)?
            .insert((bucket, key.as_bytes()), raw.as_slice())?;
        Ok(())
    }

    pub fn delete_object(&mut self, bucket: &str, key: &str) -> Result<()> {
        self.txn.open_table(OBJECTS)?.remove((bucket, key.as_bytes()))?;
        Ok(())
    }

    pub fn get_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Option<UploadRecord>> {
        let t = self.txn.open_table(UPLOADS)?;
        t.get((bucket, key.as_bytes(), upload_id))?
            .map(|g| records::decode(g.value()))
            .transpose()
    }

    pub fn put_upload(&mut self, bucket: &str, rec: &UploadRecord) -> Result<()> {
        let raw = records::encode(rec)?;
        self.txn
            .open_table(UPLOADS)?
            .insert((bucket, rec.key.as_bytes(), rec.upload_id.as_str()), raw.as_slice())?;
        Ok(())
    }

    pub fn delete_upload(&mut self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        self.txn
            .open_table(UPLOADS)?
            .remove((bucket, key.as_bytes(), upload_id))?;
        Ok(())
    }

    pub fn parts(&self, upload_id: &str) -> Result<Vec<PartRecord>> {
        let t = self.txn.open_table(PARTS)?;
        parts_of(&t, upload_id)
    }

    pub fn get_part(&self, upload_id: &str, part_number: u32) -> Result<Option<PartRecord>> {
        let t = self.txn.open_table(PARTS)?;
        t.get((upload_id, part_number))?
            .map(|g| records::decode(g.value()))
            .transpose()
    }

    pub fn put_part(&mut self, upload_id: &str, rec: &PartRecord) -> Result<()> {
        let raw = records::encode(rec)?;
        self.txn
            .open_table(PARTS)?
            .insert((upload_id, rec.part_number), raw.as_slice())?;
        Ok(())
    }

    pub fn delete_parts(&mut self, upload_id: &str) -> Result<()> {
        let mut t = self.txn.open_table(PARTS)?;
        t.retain_in((upload_id, 0u32)..=(upload_id, u32::MAX), |_, _| false)?;
        Ok(())
    }

    /// Adjusts the usage counters, node-wide and of `bucket`.
    pub fn add_stats(&mut self, bucket: &str, objects: i64, bytes: i64) -> Result<()> {
        let mut t = self.txn.open_table(STATS)?;
        let (bo, bb) = (format!("b/{bucket}/objects"), format!("b/{bucket}/bytes"));
        for (k, d) in [
            ("objects", objects),
            ("bytes", bytes),
            (bo.as_str(), objects),
            (bb.as_str(), bytes),
        ] {
            if d != 0 {
                let cur = t.get(k)?.map(|g| g.value()).unwrap_or(0);
                t.insert(k, cur.saturating_add_signed(d))?;
            }
        }
        Ok(())
    }

    /// Usage of one bucket (objects, bytes) as of this transaction.
    pub fn bucket_stats(&self, bucket: &str) -> Result<crate::Stats> {
        let t = self.txn.open_table(STATS)?;
        let get = |k: String| -> Result<u64> { Ok(t.get(k.as_str())?.map(|g| g.value()).unwrap_or(0)) };
        Ok(crate::Stats {
            objects: get(format!("b/{bucket}/objects"))?,
            bytes: get(format!("b/{bucket}/bytes"))?,
        })
    }

    /// Adds to named counters (request counts).
    pub fn add_counters(&mut self, counts: &[(String, u64)]) -> Result<()> {
        let mut t = self.txn.open_table(STATS)?;
        for (k, d) in counts {
            let cur = t.get(k.as_str())?.map(|g| g.value()).unwrap_or(0);
            t.insert(k.as_str(), cur.saturating_add(*d))?;
        }
        Ok(())
    }

    /// Records a blob to delete once this transaction has committed.
    pub fn add_garbage(&mut self, blob_id: &str) -> Result<()> {
        self.txn
            .open_table(GARBAGE)?
            .insert(blob_id, ironbucket_types::now_millis())?;
        Ok(())
    }

    /// Stores an inline blob's encoded bytes.
    pub fn put_inline(&mut self, blob_id: &str, bytes: &[u8]) -> Result<()> {
        self.txn.open_table(INLINE)?.insert(blob_id, bytes)?;
        Ok(())
    }

    /// Replaces an inline blob's encoded bytes with `new` if they are still `old` (a blob
    /// deleted or replaced meanwhile is left as it is). Whether it replaced them.
    pub fn replace_inline(&mut self, blob_id: &str, old: &[u8], new: &[u8]) -> Result<bool> {
        let mut t = self.txn.open_table(INLINE)?;
        let same = t.get(blob_id)?.is_some_and(|v| v.value() == old);
        if same {
            t.insert(blob_id, new)?;
        }
        Ok(same)
    }

    /// Lets go of a blob no record uses any more: inline blobs are removed in this
    /// transaction, blob files go on the garbage list.
    pub fn release_blob(&mut self, blob_id: &str) -> Result<()> {
        if blob_id.starts_with('i') {
            self.txn.open_table(INLINE)?.remove(blob_id)?;
            Ok(())
        } else {
            self.add_garbage(blob_id)
        }
    }

    pub fn remove_garbage(&mut self, blob_id: &str) -> Result<()> {
        self.txn.open_table(GARBAGE)?.remove(blob_id)?;
        Ok(())
    }
}
