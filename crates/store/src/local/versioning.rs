//! S3's versioning rules, applied inside one metadata transaction: a write becomes the key's new
//! version (replacing the `null` version unless versioning is enabled, taking the bucket's
//! default retention, within its quota); a stamped write or delete takes effect only when it is
//! the newest (last writer wins); a delete leaves a delete marker or removes one version for good.

use super::bucket::quota_check;
use crate::model::*;
use crate::{Error, Result};
use ironbucket_meta::{ObjectRecord, Retention, Segment, Tx};
use ironbucket_types::{Conditions, NULL_VERSION, now_millis};

/// Writes `rec` as the new current version of `bucket/key` inside a transaction: checks the
/// write conditions against the current version, gives the record its version id (`null`
/// unless versioning is enabled), replaces the previous `null` version (releasing the blobs the
/// new record does not reuse) and keeps the counters right.
pub(super) fn write_version(
    t: &mut Tx<'_>,
    bucket: &str,
    key: &str,
    rec: &mut ObjectRecord,
    conds: &Conditions,
) -> Result<()> {
    write_version_as(t, bucket, key, rec, conds, true)
}

/// A write stamped elsewhere (a cluster coordinator): last writer wins by stamp (HLC time, then
/// origin) against every version the key has, delete markers included. Returns whether it was
/// stored: a write older than the key's newest version is kept only as a noncurrent version in a
/// versioning-enabled bucket and dropped otherwise; a write already stored (the same stamp
/// delivered again) is not stored twice.
pub(super) fn write_stamped_version(
    t: &mut Tx<'_>,
    bucket: &str,
    key: &str,
    rec: &mut ObjectRecord,
    conds: &Conditions,
) -> Result<bool> {
    let b = t.get_bucket(bucket)?.ok_or(Error::NoSuchBucket)?;
    let enabled = b.versioning.as_deref() == Some("Enabled");
    if enabled && t.find_version(bucket, key, &rec.sort_key())?.is_some() {
        return Ok(false);
    }
    // A version deleted by id at or after this write's time stays deleted.
    let vid = if enabled {
        rec.sort_key()
    } else {
        NULL_VERSION.to_string()
    };
    if t.get_purge(bucket, key, &vid)?
        .is_some_and(|p| (p.hlc, p.origin) >= rec.stamp())
    {
        return Ok(false);
    }
    let newest = t.versions_of(bucket, key)?.into_iter().map(|(_, r)| r.stamp()).max();
    if newest.is_none_or(|n| n <= rec.stamp()) {
        write_version_as(t, bucket, key, rec, conds, true)?;
        return Ok(true);
    }
    if !enabled {
        return Ok(false);
    }
    write_version_as(t, bucket, key, rec, conds, false)?;
    Ok(true)
}

/// Stores a new version; `make_current`: it also becomes the key's current version.
fn write_version_as(
    t: &mut Tx<'_>,
    bucket: &str,
    key: &str,
    rec: &mut ObjectRecord,
    conds: &Conditions,
    make_current: bool,
) -> Result<()> {
    let b = t.get_bucket(bucket)?.ok_or(Error::NoSuchBucket)?;
    let current = t.get_object(bucket, key)?;
    conds.check_write(current.as_ref().map(|o| o.etag.as_str()))?;
    let enabled = b.versioning.as_deref() == Some("Enabled");
    rec.version_id = if enabled {
        rec.sort_key()
    } else {
        NULL_VERSION.to_string()
    };
    match &b.object_lock {
        Some(lock) => {
            // A read repair's copy carries the retention decided for the version (stamped),
            // which may be none: the bucket's default applies to new writes only.
            if rec.retention.is_none()
                && rec.meta_stamps.is_empty()
                && let Some(mode) = &lock.default_mode
            {
                let days = lock.default_days.map(|d| d as u64).unwrap_or(0)
                    + lock.default_years.map(|y| y as u64 * 365).unwrap_or(0);
                rec.retention = Some(Retention {
                    mode: mode.clone(),
                    until: rec.last_modified + days * 86_400_000,
                });
            }
        }
        None if rec.retention.is_some() || rec.legal_hold => {
            return Err(Error::InvalidRequest(
                "Bucket is missing Object Lock Configuration".into(),
            ));
        }
        None => {}
    }
    let (mut d_objects, mut d_bytes) = (1i64, rec.size as i64);
    if !enabled {
        // A stamped write (origin != 0) may replace a tombstone, which only the version index
        // holds: look the null version up there.
        let known = (b.versioning.is_none() && rec.origin == 0).then_some(current.as_ref());
        let (o, by) = drop_null_version(t, bucket, key, &rec.segments, known)?;
        d_objects -= o;
        d_bytes -= by;
    }
    if let Some(q) = &b.quota {
        quota_check(q, t.bucket_stats(bucket)?, d_objects, d_bytes)?;
    }
    t.put_version(bucket, key, rec)?;
    if make_current {
        t.put_object(bucket, key, rec)?;
    }
    t.add_stats(bucket, d_objects, d_bytes)?;
    Ok(())
}

/// Removes the `null` version of a key, if any, releasing blobs not in `keep`. Returns the
/// (objects, bytes) it accounted for.
///
/// `known`: in a bucket that never had versioning the null version is the current object, which
/// the caller has already read (`Some(current)`); `None` means look it up among the versions.
fn drop_null_version(
    t: &mut Tx<'_>,
    bucket: &str,
    key: &str,
    keep: &[Segment],
    known: Option<Option<&ObjectRecord>>,
) -> Result<(i64, i64)> {
    let found = match known {
        Some(cur) => cur.map(|c| (c.sort_key(), c.clone())),
        None => t.find_version(bucket, key, NULL_VERSION)?,
    };
    let Some((sk, old)) = found else {
        return Ok((0, 0));
    };
    for b in old.blob_ids() {
        if !keep.iter().any(|s| s.blob == b) {
            t.release_blob(b)?;
        }
    }
    t.delete_version(bucket, key, &sk)?;
    Ok(if old.delete_marker {
        (0, 0)
    } else {
        (1, old.size as i64)
    })
}

pub(super) fn marker_record(hlc: ironbucket_types::Hlc) -> ObjectRecord {
    ObjectRecord {
        version_id: NULL_VERSION.to_string(),
        delete_marker: true,
        hlc,
        origin: 0,
        size: 0,
        etag: String::new(),
        last_modified: hlc.physical,
        content: Default::default(),
        user_meta: Default::default(),
        checksums: Default::default(),
        tags: vec![],
        segments: vec![],
        parts_count: None,
        retention: None,
        legal_hold: false,
        key_id: None,
        acl: None,
        sse_c: None,
        meta_stamps: Default::default(),
    }
}

/// DeleteObject without a version id: removes the object in an unversioned bucket, adds a
/// delete marker in a versioned one (replacing the `null` version when suspended).
pub(super) fn delete_in_tx(
    t: &mut Tx<'_>,
    bucket: &str,
    key: &str,
    hlc: ironbucket_types::Hlc,
) -> Result<DeleteResult> {
    let b = t.get_bucket(bucket)?.ok_or(Error::NoSuchBucket)?;
    let key_s = key.to_string();
    match b.versioning.as_deref() {
        None => {
            let current = t.get_object(bucket, key)?;
            let (o, by) = drop_null_version(t, bucket, key, &[], Some(current.as_ref()))?;
            t.delete_object(bucket, key)?;
            t.add_stats(bucket, -o, -by)?;
            Ok(DeleteResult {
                key: key_s,
                version_id: None,
                delete_marker: false,
            })
        }
        Some(state) => {
            let mut marker = marker_record(hlc);
            if state == "Enabled" {
                marker.version_id = marker.sort_key();
            } else {
                let (o, by) = drop_null_version(t, bucket, key, &[], None)?;
                t.add_stats(bucket, -o, -by)?;
            }
            t.put_version(bucket, key, &marker)?;
            t.delete_object(bucket, key)?;
            Ok(DeleteResult {
                key: key_s,
                version_id: Some(marker.version_id),
                delete_marker: true,
            })
        }
    }
}

/// A stamped DeleteObject without a version id (see [`LocalStore::delete_object_at`](super::LocalStore::delete_object_at)).
pub(super) fn delete_stamped_in_tx(
    t: &mut Tx<'_>,
    bucket: &str,
    key: &str,
    hlc: ironbucket_types::Hlc,
    origin: u64,
) -> Result<DeleteResult> {
    let b = t.get_bucket(bucket)?.ok_or(Error::NoSuchBucket)?;
    let enabled = b.versioning.as_deref() == Some("Enabled");
    let mut marker = marker_record(hlc);
    marker.origin = origin;
    if enabled {
        marker.version_id = marker.sort_key();
    }
    let result = DeleteResult {
        key: key.to_string(),
        version_id: b.versioning.is_some().then(|| marker.version_id.clone()),
        delete_marker: b.versioning.is_some(),
    };
    let versions = t.versions_of(bucket, key)?;
    if versions.iter().any(|(_, r)| r.stamp() == marker.stamp()) {
        // The same delete delivered again.
        return Ok(result);
    }
    if versions.iter().any(|(_, r)| r.stamp() > marker.stamp()) {
        // A newer write already won; a versioned bucket keeps the marker as history.
        if enabled {
            t.put_version(bucket, key, &marker)?;
        }
        return Ok(result);
    }
    if !enabled {
        let (o, by) = drop_null_version(t, bucket, key, &[], None)?;
        t.add_stats(bucket, -o, -by)?;
    }
    t.put_version(bucket, key, &marker)?;
    t.delete_object(bucket, key)?;
    Ok(result)
}

/// DeleteObject with a version id: removes that version for good; the newest remaining version
/// becomes current (none if it is a delete marker).
/// Removes one stored version (sort key `sk`, record `old`): its blobs, its record, its usage,
/// and the key's current version is whatever is newest after it. No tombstone, no lock check.
pub(super) fn remove_version_in_tx(
    t: &mut Tx<'_>,
    bucket: &str,
    key: &str,
    sk: &str,
    old: &ObjectRecord,
) -> Result<()> {
    for b in old.blob_ids() {
        t.release_blob(b)?;
    }
    t.delete_version(bucket, key, sk)?;
    if !old.delete_marker {
        t.add_stats(bucket, -1, -(old.size as i64))?;
    }
    match t.versions_of(bucket, key)?.into_iter().next() {
        Some((_, newest)) if !newest.delete_marker => t.put_object(bucket, key, &newest)?,
        _ => t.delete_object(bucket, key)?,
    }
    Ok(())
}

pub(super) fn delete_version_in_tx(
    t: &mut Tx<'_>,
    bucket: &str,
    key: &str,
    version_id: &str,
    bypass: bool,
) -> Result<DeleteResult> {
    if t.get_bucket(bucket)?.is_none() {
        return Err(Error::NoSuchBucket);
    }
    let Some((sk, old)) = t.find_version(bucket, key, version_id)? else {
        // Deleting a version that does not exist succeeds, as in S3.
        return Ok(DeleteResult {
            key: key.to_string(),
            version_id: Some(version_id.to_string()),
            delete_marker: false,
        });
    };
    if old.locked(now_millis(), bypass) {
        return Err(Error::AccessDenied(
            "Access Denied because object protected by object lock.".into(),
        ));
    }
    remove_version_in_tx(t, bucket, key, &sk, &old)?;
    Ok(DeleteResult {
        key: key.to_string(),
        version_id: Some(old.version_id),
        delete_marker: old.delete_marker,
    })
}
