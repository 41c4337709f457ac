//! The anti-entropy tree of this node's metadata (kept by the metadata layer on every write;
//! the cluster layer installs the classifier and compares): reads for a replica comparing
//! with this one.

use super::LocalStore;
use crate::Result;
use ironbucket_meta::{Classify, Digest, ItemKey, TreeItem};
use std::sync::Arc;

impl LocalStore {
    /// Installs the classifier the tree's digests follow (see `ironbucket_meta::Classify`);
    /// `true` when the digests had to be rebuilt.
    pub async fn set_classifier(&self, c: Arc<dyn Classify>) -> Result<bool> {
        Ok(self.meta.set_classifier(c).await?)
    }

    /// Stops keeping the anti-entropy tree (a single node has no replica to compare with).
    pub async fn turn_tree_off(&self) -> Result<()> {
        Ok(self.meta.turn_tree_off().await?)
    }

    /// The installed classifier's fingerprint (`None`: none yet).
    pub fn tree_fingerprint(&self) -> Option<u64> {
        self.meta.tree_fingerprint()
    }

    /// The non-empty digests of `class` at `level` (0 root, 1 groups, 2 leaves) in `from..=to`.
    pub async fn tree_cells(&self, class: u64, level: u8, from: u32, to: u32) -> Result<Vec<(u32, Digest)>> {
        self.scan(move |m| m.tree_cells(class, level, from, to)).await
    }

    /// The items of one leaf, every class.
    pub async fn tree_leaf(&self, leaf: u32) -> Result<Vec<TreeItem>> {
        self.scan(move |m| m.tree_leaf(leaf)).await
    }

    /// Items with a position in `lo..=hi`, at most `limit`.
    pub async fn tree_range(&self, lo: u64, hi: u64, limit: usize) -> Result<Vec<TreeItem>> {
        self.scan(move |m| m.tree_range(lo, hi, limit)).await
    }

    /// Items after `after` in position order (`None`: from the start), at most `limit`.
    pub async fn tree_after(&self, after: Option<ItemKey>, limit: usize) -> Result<Vec<TreeItem>> {
        self.scan(move |m| m.tree_after(after.as_ref(), limit)).await
    }

    /// Forgets keys this node no longer holds a replica of (their data moved to other nodes):
    /// every version, delete marker and version tombstone of each goes, with the bodies, in one
    /// commit and without leaving a tombstone. Returns how many versions went.
    pub async fn forget_keys(&self, keys: Vec<(String, String)>) -> Result<u64> {
        self.commit(vec![], move |t| {
            let mut gone = 0;
            for (bucket, key) in &keys {
                for (sk, old) in t.versions_of(bucket, key)? {
                    super::versioning::remove_version_in_tx(t, bucket, key, &sk, &old)?;
                    gone += 1;
                }
                for vid in t.purges_of(bucket, key)? {
                    t.delete_purge(bucket, key.as_bytes(), &vid)?;
                }
            }
            Ok(gone)
        })
        .await
    }

    /// How many items the tree holds.
    pub async fn tree_len(&self) -> Result<u64> {
        self.scan(|m| m.tree_len()).await
    }
}
