//! Bringing one key up to a peer's copy: the versions, delete markers and version tombstones the
//! peer holds and this node lacks (or holds older, or with older metadata) are taken in with the
//! peer's stamps, bodies copied as read repair copies them. Only this node changes: the peer
//! takes what it lacks in its own round. Pure decisions ([`plan`]) apart from the IO
//! ([`ClusterStore::pull_key`]).

use crate::ClusterStore;
use crate::coordinator::{Target, wire_for};
use crate::wire::DeleteAt;
use ironbucket_store::{Error, ItemKind, ItemSummary, Result, VersionStamp};
use ironbucket_types::NULL_VERSION;

/// One thing to take in from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// A version deleted by id there.
    Purge(ItemSummary),
    /// A delete marker (or a never-versioned bucket's tombstone).
    Marker(ItemSummary),
    /// A version with its body.
    Copy(ItemSummary),
    /// A version both hold whose metadata differs.
    Merge(ItemSummary),
}

/// What this node must take in of one key, from its items (`mine`) and the peer's (`theirs`),
/// each as (tag, summary). `collectible` says which tombstones are past their grace period:
/// this node may have collected such a tombstone already, so it is taken in only where it
/// still deletes something here (else the two would pass it back and forth).
pub(crate) fn plan(
    mine: &[(String, ItemSummary)],
    theirs: &[(String, ItemSummary)],
    collectible: &dyn Fn(&ItemSummary) -> bool,
) -> Vec<Step> {
    let purged_here = |vid: &str, at: (ironbucket_types::Hlc, u64)| {
        mine.iter()
            .any(|(_, m)| m.kind == ItemKind::Purge && m.version_id == vid && (m.hlc, m.origin) >= at)
    };
    // The newest null version (or null marker) here: an older null one there is replaced, not
    // taken.
    let newest_null_here = mine
        .iter()
        .filter(|(_, m)| m.kind != ItemKind::Purge && m.version_id == NULL_VERSION)
        .map(|(_, m)| (m.hlc, m.origin))
        .max();
    let deletes_something = |t: &ItemSummary| {
        mine.iter().any(|(_, m)| {
            m.kind != ItemKind::Purge && m.version_id == t.version_id && (m.hlc, m.origin) < (t.hlc, t.origin)
        })
    };
    let mut steps = Vec::new();
    for (tag, t) in theirs {
        let same_tag = mine.iter().find(|(mt, _)| mt == tag).map(|(_, m)| m);
        if same_tag.is_some_and(|m| m.hash == t.hash) {
            continue;
        }
        let at = (t.hlc, t.origin);
        let tombstone = t.kind == ItemKind::Purge || (t.kind == ItemKind::DeleteMarker && t.version_id == NULL_VERSION);
        if tombstone && collectible(t) && !deletes_something(t) {
            continue;
        }
        match t.kind {
            ItemKind::Purge => {
                if !purged_here(&t.version_id, at) {
                    steps.push(Step::Purge(t.clone()));
                }
            }
            ItemKind::DeleteMarker | ItemKind::Version => {
                if purged_here(&t.version_id, at) {
                    continue;
                }
                if t.version_id == NULL_VERSION && newest_null_here.is_some_and(|n| n > at) {
                    continue;
                }
                match (same_tag, t.kind) {
                    // The same version: only its metadata can differ (markers have none).
                    (Some(_), ItemKind::Version) => steps.push(Step::Merge(t.clone())),
                    (Some(_), _) => {}
                    (None, ItemKind::DeleteMarker) => steps.push(Step::Marker(t.clone())),
                    (None, _) => steps.push(Step::Copy(t.clone())),
                }
            }
        }
    }
    steps
}

/// What pulling one key did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Pulled {
    pub copied: u64,
    pub bytes: u64,
    pub deletes: u64,
    pub merged: u64,
    pub failed: u64,
}

impl ClusterStore {
    /// Takes in `steps` of `bucket/key` from `peer`, each with the peer's stamp. A step that
    /// fails is counted and logged; the others go on.
    pub(crate) async fn pull_key(&self, peer: &Target, bucket: &str, key: &str, steps: Vec<Step>) -> Pulled {
        let mut out = Pulled::default();
        let me = Target {
            name: self.cp.node_name().to_string(),
            addr: String::new(),
            local: true,
        };
        for step in steps {
            let r = match &step {
                Step::Purge(t) | Step::Marker(t) => {
                    let op = DeleteAt {
                        bucket: bucket.to_string(),
                        key: key.to_string(),
                        version_id: matches!(step, Step::Purge(_)).then(|| t.version_id.clone()),
                        bypass: false,
                        hlc: t.hlc,
                        origin: t.origin,
                    };
                    self.ask(&me, &op).await.map(|_| out.deletes += 1)
                }
                Step::Merge(t) => self
                    .merged_meta(bucket, key, &t.version_id, &[me.clone(), peer.clone()])
                    .await
                    .map(|_| out.merged += 1),
                Step::Copy(t) => self.copy_version(peer, &me, bucket, key, t).await.map(|_| {
                    out.copied += 1;
                    out.bytes += t.size;
                }),
            };
            if let Err(e) = r {
                // Gone there meanwhile (deleted, bucket removed): nothing to take in.
                if matches!(e, Error::NoSuchKey | Error::NoSuchVersion | Error::NoSuchBucket) {
                    continue;
                }
                out.failed += 1;
                tracing::warn!(bucket, key, peer = %peer.name, step = ?step, error = %e, "anti-entropy could not take in a version");
            }
        }
        out
    }

    /// Copies version `t` of `bucket/key` from `peer` to this node, with the metadata the peer
    /// holds for it.
    async fn copy_version(&self, peer: &Target, me: &Target, bucket: &str, key: &str, t: &ItemSummary) -> Result<()> {
        let g = wire_for(bucket, key, Some(&t.version_id));
        let meta = self
            .merged_meta(bucket, key, &t.version_id, std::slice::from_ref(peer))
            .await?;
        let v = VersionStamp {
            hlc: t.hlc,
            origin: t.origin,
            version_id: t.version_id.clone(),
            delete_marker: false,
            purged: false,
            meta: 0,
        };
        self.repair_one(&g, &v, Some(&meta), t.size, peer, me).await
    }
}

#[cfg(test)]
#[allow(clippy::cloned_ref_to_slice_refs)] // one-item slices read best inline here
mod tests {
    use super::*;
    use ironbucket_types::Hlc;

    fn item(kind: ItemKind, vid: &str, t: u64, hash: u128) -> (String, ItemSummary) {
        let tag = match kind {
            ItemKind::Purge => format!("~{vid}"),
            _ => format!("{vid}@{t}"),
        };
        (
            tag,
            ItemSummary {
                hash,
                hlc: Hlc {
                    physical: t,
                    logical: 0,
                },
                origin: 1,
                kind,
                version_id: vid.into(),
                size: 10,
            },
        )
    }

    fn never(_: &ItemSummary) -> bool {
        false
    }

    #[test]
    fn old_tombstones_are_taken_only_where_they_still_delete_something() {
        let always = |_: &ItemSummary| true;
        let v = item(ItemKind::Version, NULL_VERSION, 10, 1);
        let tomb = item(ItemKind::DeleteMarker, NULL_VERSION, 30, 3);
        let p = item(ItemKind::Purge, "v1", 30, 9);
        // Collected here already (nothing left of the key): not taken back.
        assert!(plan(&[], &[tomb.clone(), p.clone()], &always).is_empty());
        // This node missed the delete and still holds the version: the tombstone goes in.
        assert_eq!(
            plan(&[v.clone()], &[tomb.clone()], &always),
            vec![Step::Marker(tomb.1.clone())]
        );
        let v1 = item(ItemKind::Version, "v1", 10, 1);
        assert_eq!(plan(&[v1], &[p.clone()], &always), vec![Step::Purge(p.1.clone())]);
    }

    #[test]
    fn missing_versions_are_copied_and_equal_ones_left() {
        let a = item(ItemKind::Version, "v1", 10, 1);
        let b = item(ItemKind::Version, "v2", 20, 2);
        assert_eq!(
            plan(&[a.clone()], &[a.clone(), b.clone()], &never),
            vec![Step::Copy(b.1.clone())]
        );
        assert!(
            plan(&[a.clone(), b.clone()], &[a.clone()], &never).is_empty(),
            "what they lack is theirs to pull"
        );
    }

    #[test]
    fn tombstones_win_over_the_versions_they_deleted() {
        let v = item(ItemKind::Version, "v1", 10, 1);
        let p = item(ItemKind::Purge, "v1", 30, 9);
        // They deleted v1 by id: purge here.
        assert_eq!(plan(&[v.clone()], &[p.clone()], &never), vec![Step::Purge(p.1.clone())]);
        // Deleted here: their copy of v1 is not taken back.
        assert!(plan(&[p.clone()], &[v.clone()], &never).is_empty());
    }

    #[test]
    fn null_versions_newest_wins() {
        let old = item(ItemKind::Version, NULL_VERSION, 10, 1);
        let new = item(ItemKind::Version, NULL_VERSION, 20, 2);
        let tomb = item(ItemKind::DeleteMarker, NULL_VERSION, 30, 3);
        assert_eq!(
            plan(&[old.clone()], &[new.clone()], &never),
            vec![Step::Copy(new.1.clone())]
        );
        assert!(plan(&[new.clone()], &[old.clone()], &never).is_empty());
        assert_eq!(
            plan(&[new.clone()], &[tomb.clone()], &never),
            vec![Step::Marker(tomb.1.clone())]
        );
        assert!(
            plan(&[tomb.clone()], &[new.clone()], &never).is_empty(),
            "a newer tombstone here keeps it deleted"
        );
    }

    #[test]
    fn same_version_other_metadata_is_merged() {
        let a = item(ItemKind::Version, "v1", 10, 1);
        let mut b = a.clone();
        b.1.hash = 2;
        assert_eq!(plan(&[a.clone()], &[b.clone()], &never), vec![Step::Merge(b.1.clone())]);
        let m = item(ItemKind::DeleteMarker, "v2", 10, 5);
        let mut m2 = m.clone();
        m2.1.hash = 6;
        assert!(plan(&[m], &[m2], &never).is_empty());
    }
}
