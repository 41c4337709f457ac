//! Listings: ListObjects and ListObjectVersions, and the reads of the version index that a
//! cluster coordinator compares across replicas (a key's stored versions, its newest version,
//! raw version pages and newest-per-key pages with tombstones); also the removal of tombstones
//! once their grace period is over.

use super::LocalStore;
use super::versioning::marker_record;
use crate::model::*;
use crate::{Error, Result};
use ironbucket_meta::ObjectRecord;
use ironbucket_types::{Hlc, now_millis};

impl LocalStore {
    /// [`ObjectStore::list_objects`](crate::ObjectStore::list_objects) on this node.
    pub(super) async fn object_page(&self, bucket: &str, q: ListQuery) -> Result<ListPage> {
        self.bucket_must_exist(bucket)?;
        let mq = ListQuery {
            max_keys: q.max_keys.min(1000),
            ..q
        };
        let b = bucket.to_string();
        let page = self.scan(move |m| m.list_objects(&b, &mq)).await?;
        Ok(ListPage {
            objects: page.objects.iter().map(|(k, r)| Self::info(k, r)).collect(),
            common_prefixes: page.common_prefixes,
            truncated: page.truncated,
            next_marker: page.next_marker,
        })
    }

    /// [`ObjectStore::list_object_versions`](crate::ObjectStore::list_object_versions) on this node.
    pub(super) async fn version_listing(&self, bucket: &str, q: VersionListQuery) -> Result<VersionListing> {
        let (page, never_versioned) = self.version_page(bucket, q).await?;
        Ok(VersionListing {
            versions: page
                .versions
                .iter()
                // A cluster's tombstones of deleted keys (never-versioned buckets) are not versions.
                .filter(|(_, r, _)| !(never_versioned && r.delete_marker))
                .map(|(k, r, latest)| version_entry(k, r, *latest))
                .collect(),
            common_prefixes: page.common_prefixes,
            truncated: page.truncated,
            next_key_marker: page.next_key_marker,
            next_version_id_marker: page.next_version_id_marker,
        })
    }

    /// Every version of `key` this node holds, newest first (delete markers included; no SSE-C
    /// key needed: only metadata is shown).
    pub fn stored_versions(&self, bucket: &str, key: &str) -> Result<Vec<StoredVersion>> {
        self.bucket_must_exist(bucket)?;
        Ok(self
            .meta
            .versions_of(bucket, key)?
            .into_iter()
            .map(|r| StoredVersion {
                version_id: r.version_id,
                etag: r.etag,
                size: r.size,
                last_modified: r.last_modified,
                hlc: match r.origin {
                    0 => format!("{}.{}", r.hlc.physical, r.hlc.logical),
                    o => format!("{}.{}@{o}", r.hlc.physical, r.hlc.logical),
                },
                delete_marker: r.delete_marker,
            })
            .collect())
    }

    /// The newest version this node holds of `key` (delete markers and tombstones included), or
    /// the version `version_id`: what a cluster read compares across replicas.
    pub fn newest_version(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<Option<VersionStamp>> {
        self.bucket_must_exist(bucket)?;
        let versions = self.meta.versions_of(bucket, key)?;
        let found = match version_id {
            Some(v) => versions.into_iter().find(|r| r.version_id == v),
            None => versions.into_iter().max_by_key(|r| r.stamp()),
        };
        let found = found.map(|r| VersionStamp {
            hlc: r.hlc,
            origin: r.origin,
            meta: r.meta_stamps.resolved(r.stamp()).digest(),
            version_id: r.version_id,
            delete_marker: r.delete_marker,
            purged: false,
        });
        // A version deleted by id after the newest one this node holds is the news to spread.
        let purge = self
            .meta
            .purges_of(bucket, key)?
            .into_iter()
            .filter(|(vid, _)| version_id.is_none_or(|v| v == vid))
            .max_by_key(|(_, p)| (p.hlc, p.origin));
        Ok(match (found, purge) {
            (f, Some((vid, p))) if f.as_ref().is_none_or(|f| (f.hlc, f.origin) < (p.hlc, p.origin)) => {
                Some(VersionStamp {
                    hlc: p.hlc,
                    origin: p.origin,
                    meta: 0,
                    version_id: vid,
                    delete_marker: true,
                    purged: true,
                })
            }
            (f, _) => f,
        })
    }

    /// One page of ListObjectVersions for a cluster coordinator ([`RawVersionPage`]):
    /// tombstones included and flagged, and the versions deleted by id among the page's keys.
    pub async fn list_versions_raw(&self, bucket: &str, q: VersionListQuery) -> Result<RawVersionPage> {
        let start = match (&q.key_marker, &q.version_id_marker) {
            // A page that starts inside the marker key covers the rest of that key.
            (Some(k), Some(_)) => before_key(k),
            (Some(k), None) => Some(k.clone()),
            _ => None,
        };
        let prefix = q.prefix.clone();
        let (page, never_versioned) = self.version_page(bucket, q).await?;
        let until = if page.truncated {
            let last_version = page.versions.last().map(|(k, _, _)| k.clone());
            let last_prefix = page.common_prefixes.last().map(|p| format!("{p}\u{10FFFF}"));
            last_version.max(last_prefix)
        } else {
            None
        };
        let (b, p) = (bucket.to_string(), prefix.clone());
        let purged = self
            .scan(move |m| m.purges_in(&b, &p, start.as_deref(), until.as_deref()))
            .await?
            .into_iter()
            .map(|(k, v, p)| (k, v, (p.hlc, p.origin)))
            .collect();
        Ok(RawVersionPage {
            versions: page
                .versions
                .iter()
                .map(|(k, r, latest)| (version_entry(k, r, *latest), never_versioned && r.delete_marker))
                .collect(),
            common_prefixes: page.common_prefixes,
            truncated: page.truncated,
            purged,
        })
    }

    /// A page of the bucket's versions as stored, and whether the bucket never had versioning.
    async fn version_page(
        &self,
        bucket: &str,
        mut q: VersionListQuery,
    ) -> Result<(ironbucket_meta::VersionListPage, bool)> {
        let never_versioned = self.bucket_must_exist(bucket)?.versioning.is_none();
        q.max_keys = q.max_keys.min(1000);
        let b = bucket.to_string();
        let page = self
            .meta
            .scan(move |m| m.list_versions(&b, &q))
            .await
            .map_err(|e| match e {
                ironbucket_meta::Error::Corrupt(m) if m.starts_with("no version") => {
                    Error::InvalidArgument("the version-id-marker does not name a version of the key-marker".into())
                }
                other => other.into(),
            })?;
        Ok((page, never_versioned))
    }

    /// Cluster listing: this node's newest version of each key after `after` under `prefix`,
    /// tombstones included, in key order, at most `limit` keys; and whether more follow.
    pub async fn list_newest(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<(ObjectInfo, bool)>, bool)> {
        let (mut out, truncated) = self.list_newest_versions(bucket, prefix, after.clone(), limit).await?;
        // Versions deleted by id are news too: a key's entry carries the newest of its version
        // and its purge stamps (so a replica still holding a deleted version loses the merge),
        // and a key with nothing left but a purge is a tombstone entry.
        let until = if truncated {
            out.last().map(|(i, _)| i.key.clone())
        } else {
            None
        };
        let (b, p) = (bucket.to_string(), prefix.to_string());
        let purges = self
            .scan(move |m| m.purges_in(&b, &p, after.as_deref(), until.as_deref()))
            .await?;
        for (key, _, p) in purges {
            match out.binary_search_by(|(i, _)| i.key.as_str().cmp(key.as_str())) {
                Ok(i) => {
                    let e = &mut out[i].0;
                    if (p.hlc, p.origin) > (e.hlc, e.origin) {
                        e.hlc = p.hlc;
                        e.origin = p.origin;
                    }
                }
                Err(i) => {
                    let rec = ObjectRecord {
                        origin: p.origin,
                        ..marker_record(p.hlc)
                    };
                    out.insert(i, (Self::info(&key, &rec), true));
                }
            }
        }
        Ok((out, truncated))
    }

    async fn list_newest_versions(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<(ObjectInfo, bool)>, bool)> {
        self.bucket_must_exist(bucket)?;
        let limit = limit.clamp(1, 1000);
        let b = bucket.to_string();
        let mut q = VersionListQuery {
            prefix: prefix.to_string(),
            delimiter: None,
            key_marker: after,
            version_id_marker: None,
            max_keys: 1000,
            lenient_marker: false,
        };
        let mut out: Vec<(ObjectInfo, bool)> = Vec::new();
        loop {
            let (b2, q2) = (b.clone(), q.clone());
            let page = self.scan(move |m| m.list_versions(&b2, &q2)).await?;
            for (k, r, _) in &page.versions {
                match out.last_mut() {
                    Some((last, dm)) if last.key == *k => {
                        if r.stamp() > (last.hlc, last.origin) {
                            *last = Self::info(k, r);
                            *dm = r.delete_marker;
                        }
                    }
                    _ => {
                        if out.len() == limit {
                            return Ok((out, true));
                        }
                        out.push((Self::info(k, r), r.delete_marker));
                    }
                }
            }
            if !page.truncated {
                return Ok((out, false));
            }
            q.key_marker = page.next_key_marker;
            q.version_id_marker = page.next_version_id_marker;
        }
    }

    /// Removes the tombstones (`null` delete markers in buckets that never had versioning, and
    /// records of versions deleted by id) older than the grace period and, in a cluster, held
    /// by every replica (the tombstone guard); returns how many. At most 10,000 per call.
    pub async fn collect_tombstones(&self) -> Result<usize> {
        let cutoff = now_millis().saturating_sub(self.cfg.tombstone_grace.as_millis() as u64);
        let guard = self.tombstone_guard.get().cloned();
        let safe = move |bucket: &str, key: &str, hlc: Hlc| guard.as_ref().is_none_or(|g| g(bucket, key, hlc));
        let mut removed = 0;
        for b in self.scan(|m| m.list_buckets()).await? {
            if b.versioning.is_some() {
                continue;
            }
            let mut q = VersionListQuery {
                max_keys: 1000,
                ..Default::default()
            };
            let mut old: Vec<(String, String)> = Vec::new();
            loop {
                let (name, q2) = (b.name.clone(), q.clone());
                let page = self.scan(move |m| m.list_versions(&name, &q2)).await?;
                old.extend(
                    page.versions
                        .iter()
                        .filter(|(k, r, _)| r.delete_marker && r.last_modified < cutoff && safe(&b.name, k, r.hlc))
                        .map(|(k, r, _)| (k.clone(), r.sort_key())),
                );
                if !page.truncated || old.len() >= 10_000 {
                    break;
                }
                q.key_marker = page.next_key_marker;
                q.version_id_marker = page.next_version_id_marker;
            }
            if old.is_empty() {
                continue;
            }
            removed += old.len();
            let bucket = b.name.clone();
            self.commit(vec![], move |t| {
                for (key, sk) in &old {
                    t.delete_version(&bucket, key, sk)?;
                }
                Ok(())
            })
            .await?;
            if removed >= 10_000 {
                break;
            }
        }
        let purges: Vec<_> = self
            .scan(move |m| m.purges_older_than(cutoff, 10_000))
            .await?
            .into_iter()
            .filter(|(b, k, _, hlc)| safe(b, &String::from_utf8_lossy(k), *hlc))
            .collect();
        if !purges.is_empty() {
            removed += purges.len();
            self.commit(vec![], move |t| {
                for (b, k, v, _) in &purges {
                    t.delete_purge(b, k, v)?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(removed)
    }
}

fn version_entry(key: &str, r: &ObjectRecord, latest: bool) -> VersionEntry {
    VersionEntry {
        info: LocalStore::info(key, r),
        is_latest: latest,
        delete_marker: r.delete_marker,
    }
}

/// A string sorting before `key` (`key` without its last character), for scans that start
/// "after" a key and must include `key` itself (`None` when `key` is empty).
fn before_key(key: &str) -> Option<String> {
    let mut s = key.to_string();
    s.pop()?;
    Some(s)
}
