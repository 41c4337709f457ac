//! The anti-entropy tree: a hash tree over every version record and version tombstone this node
//! holds, kept up to date inside the same transaction as each change to them (never rebuilt by
//! a scan on the write path), so that two replicas can find what they disagree on by comparing
//! a few digests instead of their contents.
//!
//! An item is (bucket, key, tag) with the version's stamp, kind (version, delete marker, or
//! version tombstone) and metadata stamps; its hash covers all of them. Items are indexed by
//! their ring position ([`ironbucket_types::position`]) in `tree_items`.
//!
//! Digests are kept per *class*: the replica set an item's position belongs to, as the
//! installed [`Classify`] says (placement decides; this crate only asks). Within a class the
//! tree has three levels over the position's top bits: one root, [`GROUPS`] groups and
//! `GROUPS * LEAVES_PER_GROUP` leaves. A digest is the XOR of its items' 128-bit hashes and their
//! count, so adding or removing an item updates three cells. Two replicas of a class compare
//! roots, then groups, then leaves, then the items of the leaves that differ.
//!
//! The cells depend on the classifier. When a different one is installed (a layout change), or
//! items changed while none was installed, the cells are rebuilt in one pass over the item index
//! inside one commit.

use crate::records::{self, ObjectRecord, PurgeRecord};
use crate::{MetaStore, PURGED, Result, Scanner, Tx, VERSIONS};
use ironbucket_types::Hlc;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// (position, bucket, key, tag) -> encoded [`ItemSummary`].
pub(crate) const TREE_ITEMS: TableDefinition<(u64, &str, &[u8], &str), &[u8]> = TableDefinition::new("tree_items");
/// (class, level, index) -> encoded [`Digest`].
pub(crate) const TREE_CELLS: TableDefinition<(u64, u8, u32), &[u8]> = TableDefinition::new("tree_cells");
/// "fingerprint" (of the classifier the cells were made with), "dirty" (items changed without
/// a classifier: the cells must be rebuilt), "built" (the item index covers every record).
pub(crate) const TREE_STATE: TableDefinition<&str, u64> = TableDefinition::new("tree_state");

/// Groups under the root of a class.
pub const GROUPS: u32 = 256;
/// Leaves under each group.
pub const LEAVES_PER_GROUP: u32 = 256;
/// Bits of the position that select a leaf.
pub const LEAF_BITS: u32 = 16;

/// The tag of a version tombstone of `version_id` (version tags are sort keys: hex digits).
const PURGE_TAG: char = '~';

/// Which class (replica set) a ring position belongs to.
pub trait Classify: Send + Sync + 'static {
    fn class(&self, pos: u64) -> u64;
    /// Equal for two classifiers exactly when they answer alike for every position.
    fn fingerprint(&self) -> u64;
}

/// The XOR of some items' hashes and how many there are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub hash: u128,
    pub count: u64,
}

impl Digest {
    fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..16].copy_from_slice(&self.hash.to_le_bytes());
        out[16..].copy_from_slice(&self.count.to_le_bytes());
        out
    }

    fn decode(raw: &[u8]) -> Result<Self> {
        if raw.len() != 24 {
            return Err(crate::Error::Corrupt(format!("tree cell of {} bytes", raw.len())));
        }
        let mut h = [0u8; 16];
        h.copy_from_slice(&raw[..16]);
        let mut c = [0u8; 8];
        c.copy_from_slice(&raw[16..]);
        Ok(Self {
            hash: u128::from_le_bytes(h),
            count: u64::from_le_bytes(c),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.hash == 0
    }
}

/// What an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemKind {
    Version,
    DeleteMarker,
    /// A version deleted by id (a version tombstone).
    Purge,
}

/// An item as stored in the index (and sent to a replica comparing leaves).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemSummary {
    pub hash: u128,
    pub hlc: Hlc,
    pub origin: u64,
    pub kind: ItemKind,
    /// The version id ("null" for the null version).
    pub version_id: String,
    /// The body's size in bytes (0 for markers and tombstones).
    #[serde(default)]
    pub size: u64,
}

/// One item of a leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeItem {
    pub pos: u64,
    pub bucket: String,
    pub key: String,
    pub tag: String,
    pub summary: ItemSummary,
}

impl TreeItem {
    /// Where the item sits in the index (a cursor for `tree_after`).
    pub fn item_key(&self) -> ItemKey {
        (self.pos, self.bucket.clone(), self.key.clone(), self.tag.clone())
    }
}

/// An item's place in the index: position, bucket, key, tag.
pub type ItemKey = (u64, String, String, String);

/// An item of the index from its key parts and stored summary.
fn tree_item(pos: u64, bucket: &str, key: &[u8], tag: &str, summary: &[u8]) -> Result<TreeItem> {
    Ok(TreeItem {
        pos,
        bucket: bucket.to_string(),
        key: String::from_utf8(key.to_vec()).map_err(|_| crate::Error::Corrupt("object key is not UTF-8".into()))?,
        tag: tag.to_string(),
        summary: decode_item(summary)?,
    })
}

/// The leaf of a position.
pub fn leaf_of(pos: u64) -> u32 {
    (pos >> (64 - LEAF_BITS)) as u32
}

/// The positions a leaf covers (inclusive).
pub fn leaf_span(leaf: u32) -> (u64, u64) {
    let lo = u64::from(leaf) << (64 - LEAF_BITS);
    (lo, lo | ((1u64 << (64 - LEAF_BITS)) - 1))
}

fn item_hash(bucket: &str, key: &str, tag: &str, hlc: Hlc, origin: u64, kind: ItemKind, meta: u64) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [bucket.as_bytes(), key.as_bytes(), tag.as_bytes()] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(&hlc.physical.to_le_bytes());
    h.update(&hlc.logical.to_le_bytes());
    h.update(&origin.to_le_bytes());
    h.update(&[kind as u8]);
    h.update(&meta.to_le_bytes());
    h.digest128()
}

fn version_item(bucket: &str, key: &str, tag: &str, r: &ObjectRecord) -> ItemSummary {
    let kind = if r.delete_marker {
        ItemKind::DeleteMarker
    } else {
        ItemKind::Version
    };
    // Stamps resolved, so that "unchanged" and "changed at the version's own stamp" agree.
    let meta = r.meta_stamps.resolved(r.stamp()).digest();
    ItemSummary {
        hash: item_hash(bucket, key, tag, r.hlc, r.origin, kind, meta),
        hlc: r.hlc,
        origin: r.origin,
        kind,
        version_id: r.version_id.clone(),
        size: if r.delete_marker { 0 } else { r.size },
    }
}

fn purge_item(bucket: &str, key: &str, version_id: &str, p: &PurgeRecord) -> (String, ItemSummary) {
    let tag = format!("{PURGE_TAG}{version_id}");
    let s = ItemSummary {
        hash: item_hash(bucket, key, &tag, p.hlc, p.origin, ItemKind::Purge, 0),
        hlc: p.hlc,
        origin: p.origin,
        kind: ItemKind::Purge,
        version_id: version_id.to_string(),
        size: 0,
    };
    (tag, s)
}

/// The stored form of an item: fixed-width fields, then the version id (cheaper than JSON on
/// the write path, where every version change writes one).
fn encode_item(s: &ItemSummary) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(45 + s.version_id.len());
    out.extend_from_slice(&s.hash.to_le_bytes());
    out.extend_from_slice(&s.hlc.physical.to_le_bytes());
    out.extend_from_slice(&s.hlc.logical.to_le_bytes());
    out.extend_from_slice(&s.origin.to_le_bytes());
    out.push(match s.kind {
        ItemKind::Version => 0,
        ItemKind::DeleteMarker => 1,
        ItemKind::Purge => 2,
    });
    out.extend_from_slice(&s.size.to_le_bytes());
    out.extend_from_slice(s.version_id.as_bytes());
    Ok(out)
}

fn decode_item(raw: &[u8]) -> Result<ItemSummary> {
    let bad = || crate::Error::Corrupt(format!("tree item of {} bytes", raw.len()));
    if raw.len() < 45 {
        return Err(bad());
    }
    let u64_at = |i: usize| -> Result<u64> { Ok(u64::from_le_bytes(raw[i..i + 8].try_into().map_err(|_| bad())?)) };
    Ok(ItemSummary {
        hash: u128::from_le_bytes(raw[..16].try_into().map_err(|_| bad())?),
        hlc: Hlc {
            physical: u64_at(16)?,
            logical: u32::from_le_bytes(raw[24..28].try_into().map_err(|_| bad())?),
        },
        origin: u64_at(28)?,
        kind: match raw[36] {
            0 => ItemKind::Version,
            1 => ItemKind::DeleteMarker,
            2 => ItemKind::Purge,
            _ => return Err(bad()),
        },
        size: u64_at(37)?,
        version_id: String::from_utf8(raw[45..].to_vec()).map_err(|_| bad())?,
    })
}

/// Cell changes of one commit, summed before they are written: every write of a batch changes
/// its class's root, so the root (and the groups) are read and written once per commit rather
/// than once per write.
#[derive(Default)]
pub(crate) struct PendingCells {
    cells: HashMap<(u64, u8, u32), (u128, i64)>,
    /// Items changed without a classifier: the cells must be rebuilt.
    dirty: bool,
}

impl PendingCells {
    fn add(&mut self, class: u64, pos: u64, hash: u128, count: i64) {
        let leaf = leaf_of(pos);
        for cell in [
            (class, 0u8, 0u32),
            (class, 1, leaf / LEAVES_PER_GROUP),
            (class, 2, leaf),
        ] {
            let d = self.cells.entry(cell).or_default();
            d.0 ^= hash;
            d.1 += count;
        }
    }

    /// Writes the summed changes (before the commit).
    pub(crate) fn flush(&mut self, txn: &WriteTransaction) -> Result<()> {
        if std::mem::take(&mut self.dirty) {
            txn.open_table(TREE_STATE)?.insert("dirty", 1)?;
        }
        if self.cells.is_empty() {
            return Ok(());
        }
        let mut cells = txn.open_table(TREE_CELLS)?;
        for (cell, (hash, count)) in self.cells.drain() {
            if hash == 0 && count == 0 {
                continue;
            }
            let cur = match cells.get(cell)? {
                Some(g) => Digest::decode(g.value())?,
                None => Digest::default(),
            };
            let next = Digest {
                hash: cur.hash ^ hash,
                count: cur.count.wrapping_add_signed(count),
            };
            if next.is_empty() {
                cells.remove(cell)?;
            } else {
                cells.insert(cell, next.encode().as_slice())?;
            }
        }
        Ok(())
    }
}

impl Tx<'_> {
    /// Sets (or with `None` removes) one item and updates its cells.
    fn tree_set(&mut self, bucket: &str, key: &str, tag: &str, new: Option<ItemSummary>) -> Result<()> {
        if self.tree_off {
            return Ok(());
        }
        let pos = ironbucket_types::position(bucket, key);
        let old = {
            let mut items = self.txn.open_table(TREE_ITEMS)?;
            let old = match &new {
                Some(s) => items.insert((pos, bucket, key.as_bytes(), tag), encode_item(s)?.as_slice())?,
                None => items.remove((pos, bucket, key.as_bytes(), tag))?,
            };
            old.map(|g| decode_item(g.value())).transpose()?
        };
        let hash = old.as_ref().map_or(0, |o| o.hash) ^ new.as_ref().map_or(0, |n| n.hash);
        let count = i64::from(new.is_some()) - i64::from(old.is_some());
        if hash == 0 && count == 0 {
            return Ok(());
        }
        match &self.classes {
            Some(c) => self.pending.add(c.class(pos), pos, hash, count),
            None => self.pending.dirty = true,
        }
        Ok(())
    }

    pub(crate) fn tree_version(
        &mut self,
        bucket: &str,
        key: &str,
        sort_key: &str,
        r: Option<&ObjectRecord>,
    ) -> Result<()> {
        let s = r.map(|r| version_item(bucket, key, sort_key, r));
        self.tree_set(bucket, key, sort_key, s)
    }

    pub(crate) fn tree_purge(
        &mut self,
        bucket: &str,
        key: &str,
        version_id: &str,
        p: Option<&PurgeRecord>,
    ) -> Result<()> {
        match p {
            Some(p) => {
                let (tag, s) = purge_item(bucket, key, version_id, p);
                self.tree_set(bucket, key, &tag, Some(s))
            }
            None => self.tree_set(bucket, key, &format!("{PURGE_TAG}{version_id}"), None),
        }
    }

    /// Installs `c`: the cells are rebuilt first unless they were made with an equal one and
    /// nothing changed since without one.
    pub(crate) fn install_classifier(&mut self, c: Arc<dyn Classify>) -> Result<bool> {
        if self.tree_off {
            // Turned off earlier in this run: the item index is rebuilt from the records.
            self.tree_off = false;
            build_items_once(self.txn)?;
        }
        let (fp, dirty) = {
            let st = self.txn.open_table(TREE_STATE)?;
            let fp = st.get("fingerprint")?.map(|g| g.value());
            (fp, st.get("dirty")?.is_some_and(|g| g.value() != 0))
        };
        let rebuild = dirty || self.pending.dirty || fp != Some(c.fingerprint());
        if rebuild {
            // The rebuild counts every item as it is now: pending changes are in it.
            self.pending = PendingCells::default();
            rebuild_cells(self.txn, c.as_ref())?;
            let mut st = self.txn.open_table(TREE_STATE)?;
            st.insert("fingerprint", c.fingerprint())?;
            st.remove("dirty")?;
        }
        self.classes = Some(c);
        Ok(rebuild)
    }
}

impl Tx<'_> {
    /// Stops keeping the tree (a single node has no replica to compare with): the index and the
    /// cells are dropped, and rebuilt from the records if a classifier is installed later (or
    /// when the database is opened again).
    pub(crate) fn turn_tree_off(&mut self) -> Result<()> {
        self.tree_off = true;
        self.pending = PendingCells::default();
        self.classes = None;
        self.txn.open_table(TREE_ITEMS)?.retain(|_, _| false)?;
        self.txn.open_table(TREE_CELLS)?.retain(|_, _| false)?;
        let mut st = self.txn.open_table(TREE_STATE)?;
        for k in ["built", "fingerprint", "dirty"] {
            st.remove(k)?;
        }
        Ok(())
    }
}

/// Recomputes every cell from the item index.
fn rebuild_cells(txn: &WriteTransaction, c: &dyn Classify) -> Result<()> {
    let mut acc: HashMap<(u64, u8, u32), Digest> = HashMap::new();
    {
        let items = txn.open_table(TREE_ITEMS)?;
        for item in items.iter()? {
            let (k, v) = item?;
            let pos = k.value().0;
            let s = decode_item(v.value())?;
            let class = c.class(pos);
            let leaf = leaf_of(pos);
            for cell in [
                (class, 0u8, 0u32),
                (class, 1, leaf / LEAVES_PER_GROUP),
                (class, 2, leaf),
            ] {
                let d = acc.entry(cell).or_default();
                d.hash ^= s.hash;
                d.count += 1;
            }
        }
    }
    let mut cells = txn.open_table(TREE_CELLS)?;
    cells.retain(|_, _| false)?;
    for (k, d) in acc {
        cells.insert(k, d.encode().as_slice())?;
    }
    Ok(())
}

/// Fills the item index from the version and tombstone tables (a database made before the tree
/// existed); the cells follow when a classifier is installed.
pub(crate) fn build_items_once(txn: &WriteTransaction) -> Result<()> {
    if txn.open_table(TREE_STATE)?.get("built")?.is_some() {
        return Ok(());
    }
    let mut items = txn.open_table(TREE_ITEMS)?;
    let versions = txn.open_table(VERSIONS)?;
    let mut n = 0u64;
    for item in versions.iter()? {
        let (k, v) = item?;
        let (bucket, key, sk) = k.value();
        let key = std::str::from_utf8(key).map_err(|_| crate::Error::Corrupt("object key is not UTF-8".into()))?;
        let r: ObjectRecord = records::decode(v.value())?;
        let s = version_item(bucket, key, sk, &r);
        let pos = ironbucket_types::position(bucket, key);
        items.insert((pos, bucket, key.as_bytes(), sk), encode_item(&s)?.as_slice())?;
        n += 1;
    }
    let purged = txn.open_table(PURGED)?;
    for item in purged.iter()? {
        let (k, v) = item?;
        let (bucket, key, vid) = k.value();
        let key = std::str::from_utf8(key).map_err(|_| crate::Error::Corrupt("object key is not UTF-8".into()))?;
        let p: PurgeRecord = records::decode(v.value())?;
        let (tag, s) = purge_item(bucket, key, vid, &p);
        let pos = ironbucket_types::position(bucket, key);
        items.insert((pos, bucket, key.as_bytes(), tag.as_str()), encode_item(&s)?.as_slice())?;
        n += 1;
    }
    let mut st = txn.open_table(TREE_STATE)?;
    st.insert("built", 1)?;
    if n > 0 {
        st.insert("dirty", 1)?;
        tracing::info!(
            items = n,
            "anti-entropy tree: item index built from the existing records"
        );
    }
    Ok(())
}

impl MetaStore {
    /// Installs the classifier the tree's cells follow (rebuilding them when it differs from
    /// the one they were made with). Returns whether they were rebuilt.
    pub async fn set_classifier(&self, c: Arc<dyn Classify>) -> Result<bool> {
        let fp = c.fingerprint();
        let rebuilt = self.write(move |t| t.install_classifier(c)).await?;
        *self.tree_fp.lock().unwrap_or_else(|p| p.into_inner()) = Some(fp);
        Ok(rebuilt)
    }

    /// Stops keeping the anti-entropy tree (a single node): writes no longer pay for it.
    pub async fn turn_tree_off(&self) -> Result<()> {
        self.write(|t| t.turn_tree_off()).await?;
        *self.tree_fp.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    /// The fingerprint of the installed classifier (`None` before one is installed: the cells
    /// cannot be compared yet).
    pub fn tree_fingerprint(&self) -> Option<u64> {
        *self.tree_fp.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Scanner {
    /// The non-empty cells of `class` at `level` with an index in `from..=to`.
    pub fn tree_cells(&self, class: u64, level: u8, from: u32, to: u32) -> Result<Vec<(u32, Digest)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(TREE_CELLS)?;
        let mut out = Vec::new();
        for item in t.range((class, level, from)..=(class, level, to))? {
            let (k, v) = item?;
            out.push((k.value().2, Digest::decode(v.value())?));
        }
        Ok(out)
    }

    /// The items of one leaf (every class), in position order.
    pub fn tree_leaf(&self, leaf: u32) -> Result<Vec<TreeItem>> {
        let (lo, hi) = leaf_span(leaf);
        self.tree_range(lo, hi, usize::MAX)
    }

    /// Items with a position in `lo..=hi`, at most `limit`.
    pub fn tree_range(&self, lo: u64, hi: u64, limit: usize) -> Result<Vec<TreeItem>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(TREE_ITEMS)?;
        let empty: &[u8] = &[];
        let mut out = Vec::new();
        for item in t.range((lo, "", empty, "")..)? {
            let (k, v) = item?;
            let (pos, bucket, key, tag) = k.value();
            if pos > hi || out.len() >= limit {
                break;
            }
            out.push(tree_item(pos, bucket, key, tag, v.value())?);
        }
        Ok(out)
    }

    /// Items after `after` (a position, bucket, key and tag; `None`: from the start), in
    /// position order, at most `limit`.
    pub fn tree_after(&self, after: Option<&ItemKey>, limit: usize) -> Result<Vec<TreeItem>> {
        use std::ops::Bound;
        let txn = self.db.begin_read()?;
        let t = txn.open_table(TREE_ITEMS)?;
        let mut out = Vec::new();
        let range = match after {
            Some((pos, b, k, tag)) => t.range::<(u64, &str, &[u8], &str)>((
                Bound::Excluded((*pos, b.as_str(), k.as_bytes(), tag.as_str())),
                Bound::Unbounded,
            ))?,
            None => t.range::<(u64, &str, &[u8], &str)>(..)?,
        };
        for item in range {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let (pos, bucket, key, tag) = k.value();
            out.push(tree_item(pos, bucket, key, tag, v.value())?);
        }
        Ok(out)
    }

    /// How many items the index holds.
    pub fn tree_len(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(TREE_ITEMS)?.len()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::ContentHeaders;

    fn version(key_hlc: u64, origin: u64, marker: bool) -> ObjectRecord {
        ObjectRecord {
            version_id: "null".into(),
            delete_marker: marker,
            hlc: Hlc {
                physical: key_hlc,
                logical: 0,
            },
            origin,
            size: 1,
            etag: "e".into(),
            last_modified: key_hlc,
            content: ContentHeaders::default(),
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

    /// Two classes: by the position's lowest bit.
    struct Parity;
    impl Classify for Parity {
        fn class(&self, pos: u64) -> u64 {
            pos & 1
        }
        fn fingerprint(&self) -> u64 {
            7
        }
    }

    fn open() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(&dir.path().join("meta.redb"), false).unwrap();
        (dir, m)
    }

    fn cells(m: &MetaStore) -> Vec<(u64, u8, u32, Digest)> {
        let s = m.blocking_scanner().unwrap();
        let mut out = Vec::new();
        for class in [0, 1] {
            for level in 0..3u8 {
                for (i, d) in s.tree_cells(class, level, 0, u32::MAX).unwrap() {
                    out.push((class, level, i, d));
                }
            }
        }
        out
    }

    async fn put(m: &MetaStore, key: &str, r: ObjectRecord) {
        let key = key.to_string();
        m.write(move |t| t.put_version("b", &key, &r)).await.unwrap();
    }

    #[tokio::test]
    async fn incremental_cells_equal_a_rebuild_and_empty_out() {
        let (_d, m) = open();
        m.set_classifier(Arc::new(Parity)).await.unwrap();
        for i in 0..300u64 {
            put(&m, &format!("k{i}"), version(100 + i, 1, i % 7 == 0)).await;
        }
        // Overwrite some with a newer stamp (a new item) and change metadata of others (the
        // same item, another hash).
        for i in 0..50u64 {
            let old = version(100 + i, 1, i % 7 == 0);
            let key = format!("k{i}");
            m.write(move |t| {
                t.delete_version("b", &key, &old.sort_key())?;
                let mut new = old.clone();
                new.hlc.physical += 1_000;
                t.put_version("b", &key, &new)
            })
            .await
            .unwrap();
        }
        for i in 50..80u64 {
            let mut r = version(100 + i, 1, false);
            r.meta_stamps.tags = Some((
                Hlc {
                    physical: 5_000,
                    logical: 0,
                },
                2,
            ));
            put(&m, &format!("k{i}"), r).await;
        }
        let purge = PurgeRecord {
            hlc: Hlc {
                physical: 9,
                logical: 1,
            },
            origin: 3,
        };
        m.write(move |t| t.put_purge("b", "gone", "v1", &purge)).await.unwrap();
        let incremental = cells(&m);
        let roots: u64 = incremental.iter().filter(|c| c.1 == 0).map(|c| c.3.count).sum();
        assert_eq!(roots, 301);
        assert_eq!(m.blocking_scanner().unwrap().tree_len().unwrap(), 301);
        // A rebuild (forced by a different fingerprint, then back) gives the same cells.
        struct Parity2;
        impl Classify for Parity2 {
            fn class(&self, pos: u64) -> u64 {
                pos & 1
            }
            fn fingerprint(&self) -> u64 {
                8
            }
        }
        assert!(m.set_classifier(Arc::new(Parity2)).await.unwrap());
        assert_eq!(cells(&m), incremental);
        assert!(
            !m.set_classifier(Arc::new(Parity2)).await.unwrap(),
            "same fingerprint: no rebuild"
        );
        // Removing everything leaves no cell.
        m.write(|t| {
            for i in 0..300u64 {
                let key = format!("k{i}");
                for (sk, _) in t.versions_of("b", &key)? {
                    t.delete_version("b", &key, &sk)?;
                }
            }
            t.delete_purge("b", b"gone", "v1")
        })
        .await
        .unwrap();
        assert!(cells(&m).is_empty(), "{:?}", cells(&m));
        assert_eq!(m.blocking_scanner().unwrap().tree_len().unwrap(), 0);
    }

    #[tokio::test]
    async fn same_records_give_the_same_tree_whatever_the_order() {
        let (_a, m1) = open();
        let (_b, m2) = open();
        m1.set_classifier(Arc::new(Parity)).await.unwrap();
        m2.set_classifier(Arc::new(Parity)).await.unwrap();
        for i in 0..100u64 {
            put(&m1, &format!("k{i}"), version(10 + i, 1, false)).await;
        }
        for i in (0..100u64).rev() {
            put(&m2, &format!("k{i}"), version(10 + i, 1, false)).await;
        }
        assert_eq!(cells(&m1), cells(&m2));
        // One version differs: exactly one leaf (and its group and root) differ.
        put(&m2, "k5", version(999, 1, false)).await;
        let (a, b) = (cells(&m1), cells(&m2));
        let differ: Vec<_> = a.iter().filter(|c| !b.contains(c)).collect();
        assert_eq!(differ.len(), 3, "{differ:?}");
        let leaf = differ.iter().find(|c| c.1 == 2).unwrap().2;
        let items = m2.blocking_scanner().unwrap().tree_leaf(leaf).unwrap();
        assert!(items.iter().any(|i| i.key == "k5"), "{items:?}");
    }

    #[tokio::test]
    async fn changes_before_a_classifier_are_counted_once_one_is_installed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let m = MetaStore::open(&path, false).unwrap();
            m.set_classifier(Arc::new(Parity)).await.unwrap();
            put(&m, "a", version(1, 1, false)).await;
        }
        // Reopened (once the committer thread has let go of the file): a write lands before
        // the classifier is installed again.
        let mut tries = 0;
        let m = loop {
            match MetaStore::open(&path, false) {
                Ok(m) => break m,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(m.tree_fingerprint(), None);
        put(&m, "b", version(2, 1, false)).await;
        assert!(m.set_classifier(Arc::new(Parity)).await.unwrap(), "dirty: rebuilt");
        let roots: u64 = cells(&m).iter().filter(|c| c.1 == 0).map(|c| c.3.count).sum();
        assert_eq!(roots, 2);
        assert_eq!(m.tree_fingerprint(), Some(7));
    }

    #[tokio::test]
    async fn a_tree_turned_off_costs_nothing_and_comes_back_from_the_records() {
        let (_d, m) = open();
        m.turn_tree_off().await.unwrap();
        for i in 0..20u64 {
            put(&m, &format!("k{i}"), version(10 + i, 1, false)).await;
        }
        assert_eq!(
            m.blocking_scanner().unwrap().tree_len().unwrap(),
            0,
            "nothing kept while off"
        );
        assert!(cells(&m).is_empty());
        assert!(
            m.set_classifier(Arc::new(Parity)).await.unwrap(),
            "rebuilt from the records"
        );
        assert_eq!(m.blocking_scanner().unwrap().tree_len().unwrap(), 20);
        let roots: u64 = cells(&m).iter().filter(|c| c.1 == 0).map(|c| c.3.count).sum();
        assert_eq!(roots, 20);
        // And kept from then on.
        put(&m, "k99", version(99, 1, false)).await;
        assert_eq!(m.blocking_scanner().unwrap().tree_len().unwrap(), 21);
    }

    #[test]
    fn leaves_cover_the_ring() {
        assert_eq!(leaf_span(0).0, 0);
        assert_eq!(leaf_span(u32::MAX >> (32 - LEAF_BITS)).1, u64::MAX);
        for pos in [0u64, 1, 12345678901234, u64::MAX] {
            let (lo, hi) = leaf_span(leaf_of(pos));
            assert!(lo <= pos && pos <= hi);
        }
        assert_eq!(GROUPS * LEAVES_PER_GROUP, 1 << LEAF_BITS);
    }
}
