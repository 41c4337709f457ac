//! Cluster-wide listings: every member answers for the keys it holds, the coordinator merges.
//! ListObjects goes through [`crate::listing::Merger`] (newest version per key wins, deleted
//! keys drop out, pagination exact whichever node coordinates); ListObjectVersions,
//! ListMultipartUploads and ListParts take the union of the members' pages (the first N items
//! of a union are within the first N of every member's answer).

use crate::ClusterStore;
use crate::listing::{Entry, Item, Merger, NodePage, Step};
use crate::quorum::Stamp;
use crate::wire::Op;
use ironbucket_store::*;
use std::collections::BTreeMap;

/// Rounds a listing may take before giving up (each round moves past a truncated answer).
const MAX_ROUNDS: usize = 10_000;

impl ClusterStore {
    /// Members' answers, when they are sure to include every acknowledged write: each was
    /// acknowledged by W replicas (the default write level), so with fewer than W members
    /// missing one of them answered. Otherwise refused (never a silently partial listing).
    async fn gather<T: serde::de::DeserializeOwned>(&self, op: &Op) -> Result<Vec<T>> {
        let (ok, failed) = self.ask_all::<T>(op).await;
        let rf = self.factor();
        // An acknowledged write is on at least W replicas (the default write level): with fewer
        // than W members missing, one of them answered.
        let w = self.default_write_level().required(rf).max(1);
        if failed.len() >= w || ok.is_empty() {
            let names: Vec<String> = failed.iter().map(|(n, _)| n.clone()).collect();
            return Err(match failed.into_iter().next() {
                Some((_, Error::Unavailable(m))) | Some((_, Error::Internal(m))) => Error::Unavailable(format!(
                    "a listing needs a member holding every acknowledged write; {} member(s) could not answer ({}), and writes are acknowledged by {w} of {rf} replicas: {m}",
                    names.len(),
                    names.join(", ")
                )),
                Some((_, other)) => other,
                None => Error::Unavailable("no member could answer".into()),
            });
        }
        Ok(ok.into_iter().map(|(_, v)| v).collect())
    }

    pub(crate) async fn list(&self, bucket: &str, q: ListQuery) -> Result<ListPage> {
        if !self.cp.with_state(|s| s.buckets.contains_key(bucket)) {
            return Err(Error::NoSuchBucket);
        }
        let max = q.max_keys.min(1000);
        let mut merger: Merger<ObjectInfo> = Merger::new(&q.prefix, q.delimiter.as_deref(), q.marker.as_deref(), max);
        let mut after = merger.start_after();
        let limit = (max + 1).clamp(1, 1000);
        for _ in 0..MAX_ROUNDS {
            let op = Op::ListNewest {
                bucket: bucket.to_string(),
                prefix: q.prefix.clone(),
                after: after.clone(),
                limit,
            };
            let answers: Vec<(Vec<(ObjectInfo, bool)>, bool)> = self.gather(&op).await?;
            let pages: Vec<NodePage<ObjectInfo>> = answers
                .into_iter()
                .map(|(entries, truncated)| NodePage {
                    entries: entries
                        .into_iter()
                        .map(|(info, tombstone)| Entry {
                            key: info.key.clone(),
                            stamp: Stamp {
                                hlc: info.hlc,
                                node: info.origin,
                            },
                            tombstone,
                            meta: info,
                        })
                        .collect(),
                    truncated,
                })
                .collect();
            match merger.feed(&pages) {
                Step::Done(page) => {
                    let mut out = ListPage {
                        truncated: page.truncated,
                        next_marker: page.next_marker,
                        ..Default::default()
                    };
                    for item in page.items {
                        match item {
                            Item::Object { meta, .. } => out.objects.push(meta),
                            Item::CommonPrefix(p) => out.common_prefixes.push(p),
                        }
                    }
                    return Ok(out);
                }
                Step::More { after: a } => after = Some(a),
            }
        }
        Err(Error::Internal("a listing did not converge".into()))
    }

    pub(crate) async fn list_versions(&self, bucket: &str, q: VersionListQuery) -> Result<VersionListing> {
        if !self.cp.with_state(|s| s.buckets.contains_key(bucket)) {
            return Err(Error::NoSuchBucket);
        }
        let max = q.max_keys.min(1000);
        let op = Op::Versions {
            bucket: bucket.to_string(),
            query: VersionListQuery {
                max_keys: max,
                lenient_marker: true,
                ..q.clone()
            },
        };
        let pages: Vec<VersionListing> = self.gather(&op).await?;
        Ok(merge_versions(pages, max))
    }

    pub(crate) async fn list_uploads(&self, bucket: &str, q: UploadListQuery) -> Result<UploadListPage> {
        if !self.cp.with_state(|s| s.buckets.contains_key(bucket)) {
            return Err(Error::NoSuchBucket);
        }
        let max = q.max_uploads.min(1000);
        let op = Op::Uploads {
            bucket: bucket.to_string(),
            query: q,
        };
        let pages: Vec<UploadListPage> = self.gather(&op).await?;
        Ok(merge_uploads(pages, max))
    }

    pub(crate) async fn parts(&self, req: ListParts) -> Result<ListPartsPage> {
        let targets = self.targets(&req.bucket, &req.key)?;
        let op = Op::Parts {
            bucket: req.bucket.clone(),
            key: req.key.clone(),
            upload_id: req.upload_id.clone(),
            part_number_marker: req.part_number_marker,
            max_parts: req.max_parts,
        };
        let asks = targets.iter().filter(|t| !self.is_down(t)).map(|t| {
            let op = &op;
            async move { self.ask::<ListPartsPage>(t, op).await }
        });
        let mut pages = Vec::new();
        let mut first_err = None;
        for r in futures::future::join_all(asks).await {
            match r {
                Ok(p) => pages.push(p),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if pages.is_empty() {
            return Err(first_err.unwrap_or(Error::NoSuchUpload));
        }
        let max = req.max_parts.clamp(1, 1000);
        let algorithm = pages.iter().find_map(|p| p.checksum_algorithm);
        let mut parts: BTreeMap<u32, PartInfo> = BTreeMap::new();
        let mut truncated = false;
        for p in pages {
            truncated |= p.truncated;
            for part in p.parts {
                // A part uploaded twice: the later upload wins, as on one node.
                match parts.get(&part.part_number) {
                    Some(have) if have.last_modified > part.last_modified => {}
                    _ => {
                        parts.insert(part.part_number, part);
                    }
                }
            }
        }
        let mut parts: Vec<PartInfo> = parts.into_values().collect();
        if parts.len() > max {
            parts.truncate(max);
            truncated = true;
        }
        Ok(ListPartsPage {
            next_part_number_marker: truncated.then(|| parts.last().map(|p| p.part_number)).flatten(),
            parts,
            truncated,
            checksum_algorithm: algorithm,
        })
    }
}

/// Union of the members' version pages: S3 order (key ascending, newest first), one entry per
/// (key, version id) keeping the newest (a stale `null` version loses), at most `max` items
/// counting common prefixes.
pub(crate) fn merge_versions(pages: Vec<VersionListing>, max: usize) -> VersionListing {
    enum It {
        V(Box<VersionEntry>),
        P(String),
    }
    let mut truncated = false;
    let mut by_key: BTreeMap<String, Vec<VersionEntry>> = BTreeMap::new();
    let mut prefixes: BTreeMap<String, ()> = BTreeMap::new();
    for p in pages {
        truncated |= p.truncated;
        for v in p.versions {
            by_key.entry(v.info.key.clone()).or_default().push(v);
        }
        for cp in p.common_prefixes {
            prefixes.insert(cp, ());
        }
    }
    let mut items: Vec<(String, It)> = Vec::new();
    for (key, mut vs) in by_key {
        vs.sort_by_key(|v| std::cmp::Reverse((v.info.hlc, v.info.origin)));
        let mut seen: Vec<String> = Vec::new();
        let mut first = true;
        for mut v in vs {
            if seen.contains(&v.info.version_id) {
                continue;
            }
            seen.push(v.info.version_id.clone());
            v.is_latest = v.is_latest && first;
            first = false;
            items.push((key.clone(), It::V(Box::new(v))));
        }
    }
    for (cp, ()) in prefixes {
        items.push((cp.clone(), It::P(cp)));
    }
    // Stable: a key's versions keep their order.
    items.sort_by(|a, b| a.0.cmp(&b.0));
    if items.len() > max {
        items.truncate(max);
        truncated = true;
    }
    let mut out = VersionListing {
        truncated,
        ..Default::default()
    };
    for (_, it) in items {
        match it {
            It::V(v) => {
                if truncated {
                    out.next_key_marker = Some(v.info.key.clone());
                    out.next_version_id_marker = Some(v.info.version_id.clone());
                }
                out.versions.push(*v);
            }
            It::P(p) => {
                if truncated {
                    out.next_key_marker = Some(p.clone());
                    out.next_version_id_marker = None;
                }
                out.common_prefixes.push(p);
            }
        }
    }
    out
}

/// Union of the members' upload pages (an upload is open on every replica of its key).
pub(crate) fn merge_uploads(pages: Vec<UploadListPage>, max: usize) -> UploadListPage {
    let mut truncated = false;
    let mut uploads: BTreeMap<(String, String), UploadInfo> = BTreeMap::new();
    let mut prefixes: BTreeMap<String, ()> = BTreeMap::new();
    for p in pages {
        truncated |= p.truncated;
        for u in p.uploads {
            uploads.entry((u.key.clone(), u.upload_id.clone())).or_insert(u);
        }
        for cp in p.common_prefixes {
            prefixes.insert(cp, ());
        }
    }
    let mut items: Vec<(String, Option<UploadInfo>)> = uploads
        .into_iter()
        .map(|((k, _), u)| (k, Some(u)))
        .chain(prefixes.into_keys().map(|p| (p, None)))
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    if items.len() > max {
        items.truncate(max);
        truncated = true;
    }
    let mut out = UploadListPage {
        truncated,
        ..Default::default()
    };
    for (k, u) in items {
        match u {
            Some(u) => {
                if truncated {
                    out.next_key_marker = Some(u.key.clone());
                    out.next_upload_id_marker = Some(u.upload_id.clone());
                }
                out.uploads.push(u);
            }
            None => {
                if truncated {
                    out.next_key_marker = Some(k.clone());
                    out.next_upload_id_marker = None;
                }
                out.common_prefixes.push(k);
            }
        }
    }
    out
}
