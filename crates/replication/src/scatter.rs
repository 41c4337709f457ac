//! Cluster-wide listings: every member answers for the keys it holds, the coordinator merges.
//! ListObjects goes through [`crate::listing::Merger`] (newest version per key wins, deleted
//! keys drop out, pagination exact whichever node coordinates). ListObjectVersions merges the
//! members' raw pages ([`merge_versions`]: superseded, deleted and hidden entries drop out, and
//! nothing past the end of a truncated page is listed). ListMultipartUploads and ListParts take
//! the union of the members' pages (the first N items of a union are within the first N of
//! every member's answer).

use crate::ClusterStore;
use crate::listing::{Entry, Item, Merger, NodePage, Step};
use crate::quorum::Stamp;
use crate::wire::{Ask, ListNewest, Parts, Uploads, Versions};
use ironbucket_store::*;
use std::collections::BTreeMap;

/// Rounds a listing may take before giving up (each round moves past a truncated answer).
const MAX_ROUNDS: usize = 10_000;

impl ClusterStore {
    /// Members' answers, when they are sure to include every acknowledged write: each was
    /// acknowledged by W replicas (the default write level), so with fewer than W members
    /// missing one of them answered. Otherwise refused (never a silently partial listing).
    async fn gather<A: Ask>(&self, op: &A) -> Result<Vec<A::Answer>> {
        let rf = self.factor();
        // An acknowledged write is on at least W replicas (the default write level): with fewer
        // than W members missing, one of them answered. So once all but W-1 have answered, the
        // last ones are not waited for long (a slow member does not hold every listing up).
        let w = self.default_write_level().required(rf).max(1);
        let members = self.all_targets().len();
        let (ok, failed) = self.ask_members(op, members.saturating_sub(w - 1).max(1)).await;
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
            let op = ListNewest {
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
        let mut q = VersionListQuery {
            max_keys: max,
            lenient_marker: true,
            ..q
        };
        let mut out = VersionListing::default();
        // A round whose items were all superseded or hidden moves on, so that a page is empty
        // only at the end.
        for _ in 0..MAX_ROUNDS {
            let op = Versions {
                bucket: bucket.to_string(),
                query: q.clone(),
            };
            // A page that starts inside a key learns which of its versions is the latest.
            let latest = match (&q.key_marker, &q.version_id_marker) {
                (Some(k), Some(_)) => self.latest_version_id(bucket, k).await?,
                _ => None,
            };
            let pages: Vec<RawVersionPage> = self.gather(&op).await?;
            out = merge_versions(pages, &q, max, latest.as_deref());
            if !out.truncated
                || out.next_key_marker.is_none()
                || !out.versions.is_empty()
                || !out.common_prefixes.is_empty()
            {
                break;
            }
            q.key_marker = out.next_key_marker.clone();
            q.version_id_marker = out.next_version_id_marker.clone();
        }
        Ok(out)
    }

    pub(crate) async fn list_uploads(&self, bucket: &str, q: UploadListQuery) -> Result<UploadListPage> {
        if !self.cp.with_state(|s| s.buckets.contains_key(bucket)) {
            return Err(Error::NoSuchBucket);
        }
        let max = q.max_uploads.min(1000);
        let op = Uploads {
            bucket: bucket.to_string(),
            query: q,
        };
        let pages: Vec<UploadListPage> = self.gather(&op).await?;
        Ok(merge_uploads(pages, max))
    }

    pub(crate) async fn parts(&self, req: ListParts) -> Result<ListPartsPage> {
        let targets = self.targets(&req.bucket, &req.key)?;
        let op = Parts {
            bucket: req.bucket.clone(),
            key: req.key.clone(),
            upload_id: req.upload_id.clone(),
            part_number_marker: req.part_number_marker,
            max_parts: req.max_parts,
        };
        let asks = targets.iter().filter(|t| !self.is_down(t)).map(|t| {
            let op = &op;
            async move { self.ask(t, op).await }
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

/// Where an item of a version listing sorts: key (or common prefix), then newest first.
type Position = (String, std::cmp::Reverse<(Hlc, u64)>);

fn position(key: &str, info: Option<&ObjectInfo>) -> Position {
    let stamp = info.map(|i| (i.hlc, i.origin)).unwrap_or((
        Hlc {
            physical: u64::MAX,
            logical: u32::MAX,
        },
        u64::MAX,
    ));
    (key.to_string(), std::cmp::Reverse(stamp))
}

/// Merges the members' version pages (asked with query `q`) into one page of at most `max`
/// items (versions and common prefixes), exact whichever node coordinates:
/// - one entry per (key, version id), the newest stamp winning (a stale `null` version loses to
///   a newer one or to a tombstone); versions some member deleted by id are dropped; tombstones
///   are dropped once they have done that;
/// - a member's page that is truncated ends where its items end, so nothing past the earliest
///   such end is listed (another member may hold items there that it did not send);
/// - `is_latest` marks the first remaining entry of a key; in the key the page starts inside
///   (the marker's), it marks the version `marker_latest` names (the key's current version,
///   which may have been on an earlier page);
/// - the next markers name the last item consumed, listed or dropped.
pub(crate) fn merge_versions(
    pages: Vec<RawVersionPage>,
    q: &VersionListQuery,
    max: usize,
    marker_latest: Option<&str>,
) -> VersionListing {
    enum It {
        V(Box<VersionEntry>),
        P(String),
        Dropped(String, String),
    }
    let mut truncated = false;
    let mut horizon: Option<Position> = None;
    let mut purged: std::collections::HashMap<(String, String), ironbucket_store::Stamp> =
        std::collections::HashMap::new();
    let mut by_key: BTreeMap<String, Vec<(VersionEntry, bool)>> = BTreeMap::new();
    let mut prefixes: BTreeMap<String, ()> = BTreeMap::new();
    for p in pages {
        if p.truncated {
            truncated = true;
            let last_v = p.versions.last().map(|(v, _)| position(&v.info.key, Some(&v.info)));
            let last_p = p.common_prefixes.last().map(|cp| position(cp, None));
            if let Some(end) = last_v.max(last_p) {
                horizon = Some(match horizon {
                    Some(h) if h < end => h,
                    _ => end,
                });
            }
        }
        for (k, v, at) in p.purged {
            let e = purged.entry((k, v)).or_insert(at);
            *e = (*e).max(at);
        }
        for (v, hidden) in p.versions {
            by_key.entry(v.info.key.clone()).or_default().push((v, hidden));
        }
        for cp in p.common_prefixes {
            prefixes.insert(cp, ());
        }
    }
    let within = |pos: &Position| horizon.as_ref().is_none_or(|h| pos <= h);
    let mid_key = q.version_id_marker.as_ref().and(q.key_marker.as_deref());
    let mut items: Vec<(Position, It)> = Vec::new();
    for (key, mut vs) in by_key {
        vs.sort_by_key(|(v, _)| std::cmp::Reverse((v.info.hlc, v.info.origin)));
        let mut seen: Vec<String> = Vec::new();
        let inside = mid_key == Some(key.as_str());
        let mut first = true;
        for (mut v, hidden) in vs {
            let pos = position(&key, Some(&v.info));
            if !within(&pos) || seen.contains(&v.info.version_id) {
                continue;
            }
            seen.push(v.info.version_id.clone());
            // Deleted by id after this copy was written (a `null` version written again after
            // its deletion is a new version).
            let gone = purged
                .get(&(key.clone(), v.info.version_id.clone()))
                .is_some_and(|at| *at > (v.info.hlc, v.info.origin));
            if hidden || gone {
                items.push((pos, It::Dropped(key.clone(), v.info.version_id.clone())));
                continue;
            }
            v.is_latest = if inside {
                marker_latest == Some(v.info.version_id.as_str())
            } else {
                first
            };
            first = false;
            items.push((pos, It::V(Box::new(v))));
        }
    }
    for (cp, ()) in prefixes {
        let pos = position(&cp, None);
        if within(&pos) {
            items.push((pos, It::P(cp)));
        }
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = VersionListing::default();
    let mut listed = 0usize;
    let mut last: Option<(String, Option<String>)> = None;
    for (_, it) in items {
        if listed == max {
            // The page is full: what follows (dropped entries included) is the next page's,
            // so the marker stays on the last item listed.
            truncated = true;
            break;
        }
        match it {
            It::V(v) => {
                last = Some((v.info.key.clone(), Some(v.info.version_id.clone())));
                out.versions.push(*v);
                listed += 1;
            }
            It::P(p) => {
                last = Some((p.clone(), None));
                out.common_prefixes.push(p);
                listed += 1;
            }
            It::Dropped(k, v) => last = Some((k, Some(v))),
        }
    }
    out.truncated = truncated;
    if truncated && let Some((k, v)) = last {
        out.next_key_marker = Some(k);
        out.next_version_id_marker = v;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn v(key: &str, ms: u64, version_id: &str) -> VersionEntry {
        VersionEntry {
            info: ObjectInfo {
                key: key.into(),
                version_id: version_id.into(),
                size: 1,
                etag: "e".into(),
                last_modified: ms,
                content: Default::default(),
                user_meta: Default::default(),
                checksums: Default::default(),
                tag_count: 0,
                parts_count: None,
                retention: None,
                legal_hold: false,
                encrypted: false,
                sse_c: false,
                hlc: Hlc {
                    physical: ms,
                    logical: 0,
                },
                origin: 1,
            },
            is_latest: true,
            delete_marker: false,
        }
    }

    fn page(versions: Vec<(VersionEntry, bool)>, truncated: bool) -> RawVersionPage {
        RawVersionPage {
            versions,
            common_prefixes: Vec::new(),
            truncated,
            purged: Vec::new(),
        }
    }

    fn names(l: &VersionListing) -> Vec<(String, String, bool)> {
        l.versions
            .iter()
            .map(|e| (e.info.key.clone(), e.info.version_id.clone(), e.is_latest))
            .collect()
    }

    #[test]
    fn a_truncated_page_bounds_what_is_listed() {
        // Member A's page of 3 is all tombstones and it holds "z1" further on; B holds z0, z2.
        let a = page(
            vec![
                (v("a0", 5, "null"), true),
                (v("a1", 5, "null"), true),
                (v("a2", 5, "null"), true),
            ],
            true,
        );
        let b = page(vec![(v("z0", 1, "null"), false), (v("z2", 1, "null"), false)], false);
        let q = VersionListQuery::default();
        let first = merge_versions(vec![a, b], &q, 3, None);
        assert!(first.versions.is_empty(), "{first:?}");
        assert!(first.truncated);
        assert_eq!(first.next_key_marker.as_deref(), Some("a2"));
        assert_eq!(first.next_version_id_marker.as_deref(), Some("null"));
        // The next round, from that marker, sees z1 too.
        let a = page(vec![(v("z1", 1, "null"), false)], false);
        let b = page(vec![(v("z0", 1, "null"), false), (v("z2", 1, "null"), false)], false);
        let q = VersionListQuery {
            key_marker: first.next_key_marker,
            version_id_marker: first.next_version_id_marker,
            ..Default::default()
        };
        let next = merge_versions(vec![a, b], &q, 3, None);
        assert_eq!(
            names(&next),
            vec![
                ("z0".into(), "null".into(), true),
                ("z1".into(), "null".into(), true),
                ("z2".into(), "null".into(), true)
            ]
        );
        assert!(!next.truncated);
    }

    #[test]
    fn superseded_and_deleted_versions_are_dropped() {
        let q = VersionListQuery::default();
        // A tombstone on one member beats the stale null version on another, and is not listed.
        let a = page(vec![(v("k", 5, "null"), true)], false);
        let b = page(vec![(v("k", 3, "null"), false)], false);
        let l = merge_versions(vec![a, b], &q, 10, None);
        assert!(l.versions.is_empty() && !l.truncated, "{l:?}");
        // A version deleted by id on one member, still held by a stale one: dropped, and the
        // next version becomes the latest.
        let mut a = page(vec![(v("k", 1, "v1"), false)], false);
        a.purged.push((
            "k".into(),
            "v3".into(),
            (
                Hlc {
                    physical: 4,
                    logical: 0,
                },
                1,
            ),
        ));
        // A `null` version written again after its deletion by id is listed.
        a.purged.push((
            "n".into(),
            "null".into(),
            (
                Hlc {
                    physical: 2,
                    logical: 0,
                },
                1,
            ),
        ));
        a.versions.push((v("n", 6, "null"), false));
        let mut old = v("k", 1, "v1");
        old.is_latest = false;
        let b = page(vec![(v("k", 3, "v3"), false), (old, false)], false);
        let l = merge_versions(vec![a, b], &q, 10, None);
        assert_eq!(
            names(&l),
            vec![("k".into(), "v1".into(), true), ("n".into(), "null".into(), true)]
        );
    }

    #[test]
    fn pages_continue_inside_a_key_and_stop_at_prefixes() {
        // Page size 1 through a key with two versions: the second page starts inside the key,
        // so its entry is not the latest.
        let both = || page(vec![(v("k", 3, "v3"), false), (v("k", 1, "v1"), false)], false);
        let q = VersionListQuery::default();
        let first = merge_versions(vec![both(), both()], &q, 1, None);
        assert_eq!(names(&first), vec![("k".into(), "v3".into(), true)]);
        assert!(first.truncated);
        assert_eq!(first.next_version_id_marker.as_deref(), Some("v3"));
        let q = VersionListQuery {
            key_marker: first.next_key_marker,
            version_id_marker: first.next_version_id_marker,
            ..Default::default()
        };
        let only = || page(vec![(v("k", 1, "v1"), false)], false);
        let second = merge_versions(vec![only(), only()], &q, 1, Some("v3"));
        assert_eq!(names(&second), vec![("k".into(), "v1".into(), false)]);
        assert!(!second.truncated);
        // When the key's current version is the one on this page (the newer one was deleted by
        // id and the page started after its stale copy), it is the latest.
        let second = merge_versions(vec![only(), only()], &q, 1, Some("v1"));
        assert_eq!(names(&second), vec![("k".into(), "v1".into(), true)]);
        // A truncated page ending with a common prefix: nothing after it is listed yet.
        let mut a = page(Vec::new(), true);
        a.common_prefixes.push("a/".into());
        let b = page(vec![(v("b", 1, "null"), false)], false);
        let l = merge_versions(vec![a, b], &VersionListQuery::default(), 5, None);
        assert_eq!(l.common_prefixes, vec!["a/".to_string()]);
        assert!(l.versions.is_empty() && l.truncated);
        assert_eq!(l.next_key_marker.as_deref(), Some("a/"));
        assert_eq!(l.next_version_id_marker, None);
    }
}
