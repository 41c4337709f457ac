//! Hints: writes a replica missed while it could not be reached, kept by the node that
//! coordinated them until it can bring the replica up to date (hinted handoff). One row per
//! (replica, write stamp), so a replica's hints come out in stamp order; a per-replica count is
//! kept alongside, so that bounding them never needs a scan.

use crate::{Result, STATS, Scanner, Tx, records};
use ironbucket_types::{Hlc, UnixMillis};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// (replica node, stamp physical ms, stamp counter, stamp origin) -> [`HintRecord`].
pub(crate) const HINTS: TableDefinition<(&str, u64, u32, u64), &[u8]> = TableDefinition::new("hints");

/// What a replica missed: the object, and the version when the write named one (`None`: the
/// key's newest version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HintRecord {
    pub bucket: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// When the hint was made (this node's clock).
    pub created: UnixMillis,
}

/// A stored hint: for whom, the write's stamp, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub node: String,
    pub hlc: Hlc,
    pub origin: u64,
    pub record: HintRecord,
}

fn count_key(node: &str) -> String {
    format!("h/{node}")
}

impl Tx<'_> {
    /// Keeps `h` unless its replica already has `max` hints (then `false`: the write is left to
    /// anti-entropy). A hint for the same write twice is kept once.
    pub fn put_hint(&mut self, h: &Hint, max: u64) -> Result<bool> {
        let mut stats = self.txn.open_table(STATS)?;
        let ck = count_key(&h.node);
        let count = stats.get(ck.as_str())?.map(|g| g.value()).unwrap_or(0);
        let mut t = self.txn.open_table(HINTS)?;
        let key = (h.node.as_str(), h.hlc.physical, h.hlc.logical, h.origin);
        if t.get(key)?.is_some() {
            return Ok(true);
        }
        if count >= max {
            return Ok(false);
        }
        t.insert(key, records::encode(&h.record)?.as_slice())?;
        stats.insert(ck.as_str(), count + 1)?;
        Ok(true)
    }

    /// Forgets a hint (replayed, or dropped).
    pub fn delete_hint(&mut self, node: &str, hlc: Hlc, origin: u64) -> Result<()> {
        let mut t = self.txn.open_table(HINTS)?;
        if t.remove((node, hlc.physical, hlc.logical, origin))?.is_some() {
            let mut stats = self.txn.open_table(STATS)?;
            let ck = count_key(node);
            let count = stats.get(ck.as_str())?.map(|g| g.value()).unwrap_or(0);
            if count <= 1 {
                stats.remove(ck.as_str())?;
            } else {
                stats.insert(ck.as_str(), count - 1)?;
            }
        }
        Ok(())
    }
}

impl Scanner {
    /// `node`'s oldest hints (in stamp order), at most `limit`.
    pub fn hints_for(&self, node: &str, limit: usize) -> Result<Vec<Hint>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(HINTS)?;
        let mut out = Vec::new();
        for item in t.range((node, 0u64, 0u32, 0u64)..=(node, u64::MAX, u32::MAX, u64::MAX))? {
            let (k, v) = item?;
            let (n, physical, logical, origin) = k.value();
            out.push(Hint {
                node: n.to_string(),
                hlc: Hlc { physical, logical },
                origin,
                record: records::decode(v.value())?,
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Hints pending per replica node.
    pub fn hint_counts(&self) -> Result<Vec<(String, u64)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(STATS)?;
        let mut out = Vec::new();
        for item in t.range("h/".."h0")? {
            let (k, v) = item?;
            if let Some(node) = k.value().strip_prefix("h/") {
                out.push((node.to_string(), v.value()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetaStore;

    fn hint(node: &str, physical: u64, key: &str) -> Hint {
        Hint {
            node: node.into(),
            hlc: Hlc { physical, logical: 0 },
            origin: 1,
            record: HintRecord {
                bucket: "b".into(),
                key: key.into(),
                version_id: None,
                created: 5,
            },
        }
    }

    #[tokio::test]
    async fn hints_come_out_per_node_in_stamp_order_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(&dir.path().join("meta.redb"), false).unwrap();
        let kept = m
            .write(|t| -> Result<Vec<bool>> {
                Ok(vec![
                    t.put_hint(&hint("n2", 30, "c"), 3)?,
                    t.put_hint(&hint("n2", 10, "a"), 3)?,
                    t.put_hint(&hint("n3", 20, "x"), 3)?,
                    t.put_hint(&hint("n2", 10, "a"), 3)?,
                    t.put_hint(&hint("n2", 20, "b"), 3)?,
                    t.put_hint(&hint("n2", 40, "d"), 3)?,
                ])
            })
            .await
            .unwrap();
        assert_eq!(
            kept,
            [true, true, true, true, true, false],
            "the fourth for n2 is refused"
        );
        let s = m.blocking_scanner().unwrap();
        let keys: Vec<String> = s
            .hints_for("n2", 10)
            .unwrap()
            .into_iter()
            .map(|h| h.record.key)
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(s.hint_counts().unwrap(), [("n2".to_string(), 3), ("n3".to_string(), 1)]);
        let first = s.hints_for("n2", 1).unwrap().remove(0);
        m.write(move |t| t.delete_hint("n2", first.hlc, first.origin))
            .await
            .unwrap();
        m.write(|t| {
            t.delete_hint(
                "n3",
                Hlc {
                    physical: 20,
                    logical: 0,
                },
                1,
            )
        })
        .await
        .unwrap();
        let s = m.blocking_scanner().unwrap();
        assert_eq!(s.hint_counts().unwrap(), [("n2".to_string(), 2)]);
        assert!(s.hints_for("n3", 10).unwrap().is_empty());
    }
}
