//! Storage for the Raft log, the vote and the control-plane state machine, in a redb file of
//! its own (`raft.redb`). Values are opaque bytes: the consensus layer encodes them. Every write
//! is one durable transaction.

use crate::Error;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// The state machine, one row per stored part (a bucket, a key, a lock, ...), so that applying a
/// command rewrites only what it changed.
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state");

/// The Raft log and small named values (vote, last purged log id, state machine, snapshot).
#[derive(Clone)]
pub struct RaftDb {
    db: Arc<Database>,
}

impl RaftDb {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        {
            tx.open_table(LOG)?;
            tx.open_table(META)?;
            tx.open_table(STATE)?;
        }
        tx.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Appends (or overwrites) log entries by index, durably.
    pub fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), Error> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(LOG)?;
            for (i, e) in entries {
                t.insert(*i, e.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Entries with `start <= index < end` (`end`: `None` for no bound), in order.
    pub fn entries(&self, start: u64, end: Option<u64>) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(LOG)?;
        let mut out = Vec::new();
        let range = match end {
            Some(e) if e <= start => return Ok(out),
            Some(e) => t.range(start..e)?,
            None => t.range(start..)?,
        };
        for item in range {
            let (k, v) = item?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The entry with the highest index.
    pub fn last(&self) -> Result<Option<(u64, Vec<u8>)>, Error> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(LOG)?;
        Ok(t.last()?.map(|(k, v)| (k.value(), v.value().to_vec())))
    }

    /// Removes the entries with `index >= from` (a conflicting suffix).
    pub fn truncate_from(&self, from: u64) -> Result<(), Error> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(LOG)?;
            t.retain_in(from.., |_, _| false)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes the entries with `index <= upto` and records `marker` under `key`, in one commit.
    pub fn purge_upto(&self, upto: u64, key: &str, marker: &[u8]) -> Result<(), Error> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(LOG)?;
            t.retain_in(..=upto, |_, _| false)?;
            tx.open_table(META)?.insert(key, marker)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes named values, in one durable commit.
    pub fn reset(&self, keys: &[&str]) -> Result<(), Error> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(META)?;
            for k in keys {
                t.remove(*k)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(META)?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Every state machine row, in key order.
    pub fn state_rows(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(STATE)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Calls `each` with every state machine row, in key order, from one consistent read (a
    /// snapshot streamed to a file without holding the rows in memory).
    pub fn state_scan<E: From<Error>>(&self, mut each: impl FnMut(&str, &[u8]) -> Result<(), E>) -> Result<(), E> {
        let tx = self.db.begin_read().map_err(Error::from)?;
        let t = tx.open_table(STATE).map_err(Error::from)?;
        for item in t.iter().map_err(Error::from)? {
            let (k, v) = item.map_err(Error::from)?;
            each(k.value(), v.value())?;
        }
        Ok(())
    }

    /// Replaces every state machine row with the rows `next` yields until `None` (read from a
    /// snapshot file as they are written), in one durable commit.
    pub fn state_replace_from<E: From<Error>>(
        &self,
        mut next: impl FnMut() -> Result<Option<(String, Vec<u8>)>, E>,
    ) -> Result<(), E> {
        let tx = self.db.begin_write().map_err(Error::from)?;
        {
            let mut t = tx.open_table(STATE).map_err(Error::from)?;
            t.retain(|_, _| false).map_err(Error::from)?;
            while let Some((k, v)) = next()? {
                t.insert(k.as_str(), v.as_slice()).map_err(Error::from)?;
            }
        }
        tx.commit().map_err(Error::from)?;
        Ok(())
    }

    /// Writes `puts` and removes `dels` from the state machine rows, in one durable commit.
    pub fn state_apply(&self, puts: &[(String, Vec<u8>)], dels: &[String]) -> Result<(), Error> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(STATE)?;
            for (k, v) in puts {
                t.insert(k.as_str(), v.as_slice())?;
            }
            for k in dels {
                t.remove(k.as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Replaces every state machine row with `rows` and removes the named values `drop_meta`
    /// (a snapshot installed, or the whole-state value of an older version migrated), in one
    /// durable commit.
    pub fn state_replace(&self, rows: &[(String, Vec<u8>)], drop_meta: &[&str]) -> Result<(), Error> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(STATE)?;
            t.retain(|_, _| false)?;
            for (k, v) in rows {
                t.insert(k.as_str(), v.as_slice())?;
            }
            let mut m = tx.open_table(META)?;
            for k in drop_meta {
                m.remove(*k)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Sets several named values in one durable commit.
    pub fn put(&self, values: &[(&str, &[u8])]) -> Result<(), Error> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(META)?;
            for (k, v) in values {
                t.insert(*k, *v)?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_operations() {
        let dir = tempfile::tempdir().unwrap();
        let db = RaftDb::open(&dir.path().join("raft.redb")).unwrap();
        let e = |i: u64| (i, format!("e{i}").into_bytes());
        db.append(&(1..=10).map(e).collect::<Vec<_>>()).unwrap();
        assert_eq!(db.entries(3, Some(5)).unwrap(), vec![e(3), e(4)]);
        assert_eq!(db.entries(9, None).unwrap(), vec![e(9), e(10)]);
        assert!(db.entries(5, Some(5)).unwrap().is_empty());
        db.truncate_from(8).unwrap();
        assert_eq!(db.last().unwrap(), Some(e(7)));
        db.purge_upto(3, "purged", b"3").unwrap();
        assert_eq!(db.entries(0, None).unwrap().first(), Some(&e(4)));
        assert_eq!(db.get("purged").unwrap(), Some(b"3".to_vec()));
        db.put(&[("vote", b"v1"), ("sm", b"state")]).unwrap();
        drop(db);
        let db = RaftDb::open(&dir.path().join("raft.redb")).unwrap();
        assert_eq!(db.get("vote").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(db.last().unwrap(), Some(e(7)));
    }
}
