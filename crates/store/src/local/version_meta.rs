//! A version's changeable metadata (tags, retention, legal hold, ACL): the S3 calls that set and
//! read it, and its stamped changes from cluster coordinators and read repair, where the last
//! writer wins per field.

use super::{LocalStore, tags_of};
use crate::model::*;
use crate::{Acl, Error, Result, validate_tags};
use ironbucket_meta::{ObjectRecord, Retention, Tx};
use ironbucket_types::now_millis;

impl LocalStore {
    /// Version `version_id`'s tags, retention, legal hold and ACL, each with the stamp of its
    /// last change (cluster replicas compare and merge these).
    pub fn version_meta(&self, bucket: &str, key: &str, version_id: &str) -> Result<VersionMeta> {
        self.bucket_must_exist(bucket)?;
        let rec = self
            .meta
            .versions_of(bucket, key)?
            .into_iter()
            .find(|r| r.version_id == version_id)
            .ok_or(Error::NoSuchVersion)?;
        if rec.delete_marker {
            return Err(Error::DeleteMarker {
                version_id: rec.version_id,
            });
        }
        Ok(meta_of(&rec))
    }

    /// A cluster coordinator's stamped change to one field of version `version_id`. The change
    /// takes effect only when `at` is newer than the field's last change (last writer wins per
    /// field), so replicas converge whatever order changes reach them in; an older one is
    /// acknowledged and dropped. Object lock rules are checked as for the unstamped calls.
    pub async fn change_meta_at(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        change: MetaChange,
        at: Stamp,
    ) -> Result<()> {
        if let MetaChange::Tags(t) = &change {
            validate_tags(&tags_of(t), 10)?;
        }
        self.observe(at.0)?;
        let lock = matches!(change, MetaChange::Retention { .. } | MetaChange::LegalHold(_));
        let (bucket, key, version_id) = (bucket.to_string(), key.to_string(), version_id.to_string());
        self.commit(vec![], move |t| {
            let apply = |rec: &mut ObjectRecord| apply_change(rec, change, at, now_millis());
            if lock {
                update_version(t, &bucket, &key, Some(&version_id), apply)
            } else {
                modify_version(t, &bucket, &key, Some(&version_id), apply)
            }
        })
        .await
    }

    /// Read repair of metadata: takes every field `meta` changed later than this replica's copy
    /// of version `version_id` did. No lock rules apply: the coordinators that stamped those
    /// changes checked them.
    pub async fn merge_meta(&self, bucket: &str, key: &str, version_id: &str, meta: VersionMeta) -> Result<()> {
        let (bucket, key, version_id) = (bucket.to_string(), key.to_string(), version_id.to_string());
        self.commit(vec![], move |t| {
            modify_version(t, &bucket, &key, Some(&version_id), |rec| {
                let mut mine = meta_of(rec);
                if mine.merge(&meta) {
                    rec.meta_stamps = mine.stamps();
                    rec.tags = mine.tags.value;
                    rec.retention = mine.retention.value;
                    rec.legal_hold = mine.legal_hold.value;
                    rec.acl = mine.acl.value;
                }
                Ok(())
            })
        })
        .await
    }

    /// [`ObjectStore::put_object_tagging`](crate::ObjectStore::put_object_tagging) on this node.
    pub(super) async fn set_object_tags(&self, bucket: &str, key: &str, tags: Vec<Tag>) -> Result<()> {
        validate_tags(&tags, 10)?;
        let (bucket, key) = (bucket.to_string(), key.to_string());
        self.commit(vec![], move |t| {
            if t.get_bucket(&bucket)?.is_none() {
                return Err(Error::NoSuchBucket);
            }
            let mut rec = t.get_object(&bucket, &key)?.ok_or(Error::NoSuchKey)?;
            rec.tags = tags.into_iter().map(|t| (t.key, t.value)).collect();
            t.put_object(&bucket, &key, &rec)?;
            // The same version is also kept in the version index.
            t.put_version(&bucket, &key, &rec)?;
            Ok(())
        })
        .await
    }

    /// [`ObjectStore::put_object_retention`](crate::ObjectStore::put_object_retention) on this node.
    pub(super) async fn set_retention(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        retention: Option<Retention>,
        bypass: bool,
    ) -> Result<()> {
        check_retention_change(None, retention.as_ref(), bypass, 0)?;
        let (bucket, key, version_id) = (bucket.to_string(), key.to_string(), version_id.map(str::to_string));
        self.commit(vec![], move |t| {
            update_version(t, &bucket, &key, version_id.as_deref(), |rec| {
                check_retention_change(rec.retention.as_ref(), retention.as_ref(), bypass, now_millis())?;
                rec.retention = retention;
                Ok(())
            })
        })
        .await
    }

    /// [`ObjectStore::get_object_retention`](crate::ObjectStore::get_object_retention) on this node.
    pub(super) async fn retention_of(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<Retention> {
        let rec = match version_id {
            Some(v) => self.version_and_inline(bucket, key, v)?.0,
            None => self.object_record(bucket, key)?,
        };
        rec.retention.ok_or(Error::NoSuchObjectLockConfiguration)
    }

    /// [`ObjectStore::put_object_legal_hold`](crate::ObjectStore::put_object_legal_hold) on this node.
    pub(super) async fn set_legal_hold(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        on: bool,
    ) -> Result<()> {
        let (bucket, key, version_id) = (bucket.to_string(), key.to_string(), version_id.map(str::to_string));
        self.commit(vec![], move |t| {
            update_version(t, &bucket, &key, version_id.as_deref(), |rec| {
                rec.legal_hold = on;
                Ok(())
            })
        })
        .await
    }

    /// [`ObjectStore::get_object_legal_hold`](crate::ObjectStore::get_object_legal_hold) on this node.
    pub(super) async fn legal_hold_of(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<bool> {
        let rec = match version_id {
            Some(v) => self.version_and_inline(bucket, key, v)?.0,
            None => self.object_record(bucket, key)?,
        };
        Ok(rec.legal_hold)
    }

    /// [`ObjectStore::put_object_acl`](crate::ObjectStore::put_object_acl) on this node.
    pub(super) async fn set_object_acl(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        acl: Acl,
    ) -> Result<()> {
        let (bucket, key, version_id) = (bucket.to_string(), key.to_string(), version_id.map(str::to_string));
        self.commit(vec![], move |t| {
            modify_version(t, &bucket, &key, version_id.as_deref(), |r| {
                r.acl = Some(acl);
                Ok(())
            })
        })
        .await
    }

    /// [`ObjectStore::get_object_acl`](crate::ObjectStore::get_object_acl) on this node.
    pub(super) async fn object_acl(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<Option<Acl>> {
        let rec = match version_id {
            Some(v) => self.version_and_inline(bucket, key, v)?.0,
            None => self.object_record(bucket, key)?,
        };
        if rec.delete_marker {
            return Err(Error::DeleteMarker {
                version_id: rec.version_id,
            });
        }
        Ok(rec.acl)
    }
}

/// Changes one version's lock settings in place (in the version index and, when it is the
/// current version, in the current-object index). The bucket must have object lock.
fn update_version(
    t: &mut Tx<'_>,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    change: impl FnOnce(&mut ObjectRecord) -> Result<()>,
) -> Result<()> {
    let b = t.get_bucket(bucket)?.ok_or(Error::NoSuchBucket)?;
    if b.object_lock.is_none() {
        return Err(Error::InvalidRequest(
            "Bucket is missing Object Lock Configuration".into(),
        ));
    }
    modify_version(t, bucket, key, version_id, change)
}

/// Changes one version's record in place (in the version index and, when it is the current
/// version, in the current-object index).
fn modify_version(
    t: &mut Tx<'_>,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    change: impl FnOnce(&mut ObjectRecord) -> Result<()>,
) -> Result<()> {
    if t.get_bucket(bucket)?.is_none() {
        return Err(Error::NoSuchBucket);
    }
    let mut rec = match version_id {
        Some(v) => t.find_version(bucket, key, v)?.ok_or(Error::NoSuchVersion)?.1,
        None => t.get_object(bucket, key)?.ok_or(Error::NoSuchKey)?,
    };
    if rec.delete_marker {
        return Err(Error::DeleteMarker {
            version_id: rec.version_id,
        });
    }
    change(&mut rec)?;
    t.put_version(bucket, key, &rec)?;
    if t.get_object(bucket, key)?
        .is_some_and(|cur| cur.version_id == rec.version_id)
    {
        t.put_object(bucket, key, &rec)?;
    }
    Ok(())
}

/// A version's changeable metadata with the stamps of its last changes.
fn meta_of(rec: &ObjectRecord) -> VersionMeta {
    let s = rec.meta_stamps;
    let at = |x: Option<Stamp>| x.unwrap_or_else(|| rec.stamp());
    VersionMeta {
        tags: Lww {
            value: rec.tags.clone(),
            at: at(s.tags),
        },
        retention: Lww {
            value: rec.retention.clone(),
            at: at(s.retention),
        },
        legal_hold: Lww {
            value: rec.legal_hold,
            at: at(s.legal_hold),
        },
        acl: Lww {
            value: rec.acl.clone(),
            at: at(s.acl),
        },
    }
}

/// Sets one field of `rec` when `at` is newer than that field's last change (object lock rules
/// checked at `now`, in ms).
fn apply_change(
    rec: &mut ObjectRecord,
    change: MetaChange,
    at: Stamp,
    now: ironbucket_types::UnixMillis,
) -> Result<()> {
    let s = rec.meta_stamps;
    let last = match &change {
        MetaChange::Tags(_) => s.tags,
        MetaChange::Retention { .. } => s.retention,
        MetaChange::LegalHold(_) => s.legal_hold,
        MetaChange::Acl(_) => s.acl,
    }
    .unwrap_or_else(|| rec.stamp());
    if at <= last {
        return Ok(());
    }
    match change {
        MetaChange::Tags(t) => {
            rec.tags = t;
            rec.meta_stamps.tags = Some(at);
        }
        MetaChange::Retention { retention, bypass } => {
            check_retention_change(rec.retention.as_ref(), retention.as_ref(), bypass, now)?;
            rec.retention = retention;
            rec.meta_stamps.retention = Some(at);
        }
        MetaChange::LegalHold(on) => {
            rec.legal_hold = on;
            rec.meta_stamps.legal_hold = Some(at);
        }
        MetaChange::Acl(a) => {
            rec.acl = Some(a);
            rec.meta_stamps.acl = Some(at);
        }
    }
    Ok(())
}
