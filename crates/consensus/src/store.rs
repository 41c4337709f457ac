//! openraft's log storage and state machine, persisted in redb through `ironbucket_meta::RaftDb`.
//! Log entries, the vote and the state machine are JSON-encoded. The state machine is stored as
//! rows (`crate::rows`): applying an entry rewrites only the rows it changed, so its cost does
//! not grow with the number of buckets, keys or locks. Snapshots are files streamed in and out
//! (`crate::snapshot`).

#![allow(clippy::result_large_err)] // openraft's traits fix the (large) error types.

use crate::snapshot::SnapshotFile;
use crate::state::{ControlState, Outcome};
use crate::{NodeInfo, TypeConfig};
use ironbucket_meta::RaftDb;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

type SErr = StorageError<u64>;

fn io_read(e: impl std::fmt::Display) -> SErr {
    StorageIOError::read(openraft::AnyError::error(e.to_string())).into()
}

fn io_write(e: impl std::fmt::Display) -> SErr {
    StorageIOError::write(openraft::AnyError::error(e.to_string())).into()
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, SErr> {
    serde_json::to_vec(v).map_err(io_write)
}

fn dec<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, SErr> {
    serde_json::from_slice(b).map_err(io_read)
}

/// Runs blocking redb work off the async threads. On a current-thread runtime (the deterministic
/// simulation, whose clock is paused) the work runs inline instead: a blocking-pool thread would
/// let the paused clock jump ahead while the disk works, and its timing would decide the order.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> Result<R, SErr> + Send + 'static) -> Result<R, SErr> {
    if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread {
        return f();
    }
    tokio::task::spawn_blocking(f).await.map_err(io_write)?
}

#[derive(Clone)]
pub struct LogStore {
    db: RaftDb,
}

impl LogStore {
    pub fn new(db: RaftDb) -> Self {
        Self { db }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => Some(e + 1),
            Bound::Excluded(e) => Some(*e),
            Bound::Unbounded => None,
        };
        let db = self.db.clone();
        let raw = blocking(move || db.entries(start, end).map_err(io_read)).await?;
        raw.iter().map(|(_, b)| dec(b)).collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let purged: Option<LogId<u64>> = match self.db.get("last_purged").map_err(io_read)? {
            Some(b) => dec(&b)?,
            None => None,
        };
        let last = match self.db.last().map_err(io_read)? {
            Some((_, b)) => Some(dec::<Entry<TypeConfig>>(&b)?.log_id),
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), SErr> {
        let b = enc(vote)?;
        let db = self.db.clone();
        blocking(move || db.put(&[("vote", &b)]).map_err(io_write)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, SErr> {
        match self.db.get("vote").map_err(io_read)? {
            Some(b) => Ok(Some(dec(&b)?)),
            None => Ok(None),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), SErr> {
        let b = enc(&committed)?;
        let db = self.db.clone();
        blocking(move || db.put(&[("committed", &b)]).map_err(io_write)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, SErr> {
        match self.db.get("committed").map_err(io_read)? {
            Some(b) => dec(&b),
            None => Ok(None),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut batch = Vec::new();
        for e in entries {
            batch.push((e.log_id.index, enc(&e)?));
        }
        let db = self.db.clone();
        let r = blocking(move || db.append(&batch).map_err(io_write)).await;
        callback.log_io_completed(r.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())));
        r
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), SErr> {
        let db = self.db.clone();
        blocking(move || db.truncate_from(log_id.index).map_err(io_write)).await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), SErr> {
        let b = enc(&Some(log_id))?;
        let db = self.db.clone();
        blocking(move || db.purge_upto(log_id.index, "last_purged", &b).map_err(io_write)).await
    }
}

/// The applied state: the control state plus Raft's bookkeeping.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, NodeInfo>,
    pub state: ControlState,
}

/// The state machine row `a`: Raft's bookkeeping of what is applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedMeta {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, NodeInfo>,
}

const APPLIED_ROW: &str = "a";

/// The current snapshot as recorded in `raft.redb` (`snapshot`): its meta and file name in the
/// snapshot directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotRecord {
    meta: SnapshotMeta<u64, NodeInfo>,
    file: String,
}

/// What releases before streamed snapshots recorded: the snapshot's bytes themselves.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, NodeInfo>,
    data: Vec<u8>,
}

/// The state machine; `shared` is what the rest of the node reads.
#[derive(Clone)]
pub struct StateMachine {
    db: RaftDb,
    /// Where snapshot files live.
    snapshots: Arc<PathBuf>,
    /// The file a snapshot from the leader is being received into.
    receiving: Arc<std::sync::Mutex<Option<PathBuf>>>,
    pub(crate) shared: Arc<RwLock<Applied>>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
    recent: Arc<std::sync::Mutex<Recent>>,
}

/// The rows the last applies changed, so that whoever mirrors the state (the node's bucket and
/// key tables) can follow it change by change instead of comparing everything.
#[derive(Default)]
struct Recent {
    /// Changes after this index are all in `log` (0 before the first apply of this process:
    /// nothing is known, callers resync fully).
    known_after: u64,
    /// The newest index applied (a caller past it saw a log that was since replaced).
    last: u64,
    log: std::collections::VecDeque<(u64, Vec<String>)>,
}

/// Applies remembered by [`StateMachine::changes_since`].
const RECENT_APPLIES: usize = 4096;

impl StateMachine {
    /// Loads the stored rows; a store written by an older version (the whole state under one
    /// named value `sm`) is migrated to rows on the way. Snapshot files go to `snapshots`.
    pub fn open(db: RaftDb, snapshots: &Path) -> Result<Self, SErr> {
        std::fs::create_dir_all(snapshots).map_err(io_write)?;
        // Snapshots a crash interrupted while they were built or received.
        for e in std::fs::read_dir(snapshots).map_err(io_read)?.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("receiving-") || name.starts_with("building-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let applied: Applied = match db.get("sm").map_err(io_read)? {
            Some(b) => {
                let applied: Applied = dec(&b)?;
                let rows = Self::rows_of(&applied)?;
                db.state_replace(&rows, &["sm"]).map_err(io_write)?;
                applied
            }
            None => {
                let rows = db.state_rows().map_err(io_read)?;
                let meta: AppliedMeta = match rows.iter().find(|(k, _)| k == APPLIED_ROW) {
                    Some((_, v)) => dec(v)?,
                    None => AppliedMeta::default(),
                };
                let state =
                    crate::rows::decode(rows.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).map_err(io_read)?;
                Applied {
                    last_applied: meta.last_applied,
                    membership: meta.membership,
                    state,
                }
            }
        };
        let (tx, _) = tokio::sync::watch::channel(applied.last_applied.map_or(0, |l| l.index));
        Ok(Self {
            db,
            snapshots: Arc::new(snapshots.to_path_buf()),
            receiving: Default::default(),
            recent: Arc::new(std::sync::Mutex::new(Recent {
                known_after: applied.last_applied.map_or(0, |l| l.index),
                last: applied.last_applied.map_or(0, |l| l.index),
                log: Default::default(),
            })),
            shared: Arc::new(RwLock::new(applied)),
            changed: Arc::new(tx),
        })
    }

    /// The rows changed by the entries applied after `index`, or `None` when they are no
    /// longer known (too old, or a snapshot replaced the state): then compare everything.
    pub fn changes_since(&self, index: u64) -> Option<std::collections::BTreeSet<String>> {
        let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        // Too old, or from a log that was replaced (a forced recovery restarts the indices).
        if index < r.known_after || index > r.last {
            return None;
        }
        Some(
            r.log
                .iter()
                .filter(|(i, _)| *i > index)
                .flat_map(|(_, ids)| ids.iter().cloned())
                .collect(),
        )
    }

    fn remember(&self, index: u64, ids: Vec<String>) {
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.last = index;
        r.log.push_back((index, ids));
        while r.log.len() > RECENT_APPLIES {
            if let Some((i, _)) = r.log.pop_front() {
                r.known_after = i;
            }
        }
    }

    pub(crate) fn forget_changes(&self, index: u64) {
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.log.clear();
        r.known_after = index;
        r.last = index;
    }

    /// Every row of `a` (the bookkeeping row included).
    pub(crate) fn rows_of(a: &Applied) -> Result<Vec<(String, Vec<u8>)>, SErr> {
        let mut rows = crate::rows::all(&a.state).map_err(io_write)?;
        rows.push((APPLIED_ROW.into(), Self::meta_row(a)?));
        Ok(rows)
    }

    fn meta_row(a: &Applied) -> Result<Vec<u8>, SErr> {
        enc(&AppliedMeta {
            last_applied: a.last_applied,
            membership: a.membership.clone(),
        })
    }

    /// Index of the last applied entry, updated after every apply.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Applied> {
        self.shared.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl StateMachine {
    fn snapshot_path(&self, file: &str) -> PathBuf {
        self.snapshots.join(file)
    }

    /// Records `meta` and `file` as the current snapshot and removes every other snapshot file
    /// (a follower still reading one keeps its open handle).
    fn record_snapshot(db: &RaftDb, dir: &Path, meta: &SnapshotMeta<u64, NodeInfo>, file: &str) -> Result<(), SErr> {
        let rec = enc(&SnapshotRecord {
            meta: meta.clone(),
            file: file.to_string(),
        })?;
        db.put(&[("snapshot", &rec)]).map_err(io_write)?;
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                let in_the_making = name.starts_with("receiving-") || name.starts_with("building-");
                if name.ends_with(".snap") && name != file && !in_the_making {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }
}

/// A file name unique to this process for a snapshot in the making.
fn fresh(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}.snap", std::process::id())
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    /// Serializes the state straight into a new file (under the state's read lock, so that it
    /// is the state at one index), syncs it and records it as the current snapshot.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let (shared, db, dir) = (self.shared.clone(), self.db.clone(), self.snapshots.clone());
        let building = dir.join(fresh("building"));
        let (meta, file) = blocking(move || {
            let out = std::fs::File::create(&building).map_err(io_write)?;
            let mut w = std::io::BufWriter::new(out);
            let (last, membership) = {
                let a = shared.read().unwrap_or_else(|p| p.into_inner());
                serde_json::to_writer(&mut w, &*a).map_err(io_write)?;
                (a.last_applied, a.membership.clone())
            };
            let out = w.into_inner().map_err(|e| io_write(e.error()))?;
            out.sync_all().map_err(io_write)?;
            let size = out.metadata().map_err(io_read)?.len();
            let id = match last {
                Some(l) => format!("{}-{}-{size}", l.leader_id.term, l.index),
                None => format!("0-0-{size}"),
            };
            let file = format!("{id}.snap");
            std::fs::rename(&building, dir.join(&file)).map_err(io_write)?;
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: membership,
                snapshot_id: id,
            };
            Self::record_snapshot(&db, &dir, &meta, &file)?;
            Ok((meta, file))
        })
        .await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile::open(&self.snapshot_path(&file)).map_err(io_read)?),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, StoredMembership<u64, NodeInfo>), SErr> {
        let a = self.read();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        let (last, puts, dels) = {
            let mut a = self.shared.write().unwrap_or_else(|p| p.into_inner());
            let mut touched = std::collections::BTreeSet::new();
            for e in entries {
                a.last_applied = Some(e.log_id);
                match e.payload {
                    EntryPayload::Blank => out.push(Outcome::Done),
                    EntryPayload::Normal(cmd) => {
                        touched.extend(crate::rows::touched(&a.state, &cmd));
                        out.push(a.state.apply(cmd));
                    }
                    EntryPayload::Membership(m) => {
                        a.membership = StoredMembership::new(Some(e.log_id), m);
                        out.push(Outcome::Done);
                    }
                }
            }
            // Only the rows these entries changed, and the bookkeeping row.
            let mut puts = vec![(APPLIED_ROW.to_string(), Self::meta_row(&a)?)];
            let mut dels = Vec::new();
            for id in &touched {
                match crate::rows::encode(&a.state, id).map_err(io_write)? {
                    Some(v) => puts.push((id.clone(), v)),
                    None => dels.push(id.clone()),
                }
            }
            let last = a.last_applied.map_or(0, |l| l.index);
            self.remember(last, touched.into_iter().collect());
            (last, puts, dels)
        };
        let db = self.db.clone();
        blocking(move || db.state_apply(&puts, &dels).map_err(io_write)).await?;
        self.changed.send_replace(last);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, SErr> {
        let path = self.snapshots.join(fresh("receiving"));
        let f = SnapshotFile::create(&path).map_err(io_write)?;
        if let Some(old) = self.receiving.lock().unwrap_or_else(|p| p.into_inner()).replace(path) {
            let _ = std::fs::remove_file(old);
        }
        Ok(Box::new(f))
    }

    /// Installs a snapshot received into a file: deserialized from the file as it is read, its
    /// rows written in one commit, the file kept as this node's current snapshot.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, NodeInfo>,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), SErr> {
        snapshot.sync().map_err(io_write)?;
        let received = snapshot.path().to_path_buf();
        let ours = self.receiving.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (db, dir, meta2) = (self.db.clone(), self.snapshots.clone(), meta.clone());
        let applied = blocking(move || {
            let input = snapshot.into_file().map_err(io_read)?;
            let mut applied: Applied = serde_json::from_reader(std::io::BufReader::new(input)).map_err(io_read)?;
            applied.last_applied = meta2.last_log_id;
            applied.membership = meta2.last_membership.clone();
            let rows = Self::rows_of(&applied)?;
            db.state_replace(&rows, &[]).map_err(io_write)?;
            // Kept as this node's current snapshot: the received file moves into place; a
            // snapshot handed over otherwise (openraft's tests) is copied.
            let file = format!("{}.snap", meta2.snapshot_id);
            if ours.as_deref() == Some(received.as_path()) {
                std::fs::rename(&received, dir.join(&file)).map_err(io_write)?;
            } else {
                std::fs::copy(&received, dir.join(&file)).map_err(io_write)?;
                if let Some(o) = ours {
                    let _ = std::fs::remove_file(o);
                }
            }
            Self::record_snapshot(&db, &dir, &meta2, &file)?;
            Ok(applied)
        })
        .await?;
        let last = applied.last_applied.map_or(0, |l| l.index);
        self.forget_changes(last);
        *self.shared.write().unwrap_or_else(|p| p.into_inner()) = applied;
        self.changed.send_replace(last);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let Some(b) = self.db.get("snapshot").map_err(io_read)? else {
            return Ok(None);
        };
        let rec: SnapshotRecord = match serde_json::from_slice(&b) {
            Ok(r) => r,
            Err(_) => {
                // Recorded by a release that kept the bytes themselves: move them to a file.
                let old: StoredSnapshot = dec(&b)?;
                let file = format!("{}.snap", old.meta.snapshot_id);
                std::fs::write(self.snapshot_path(&file), &old.data).map_err(io_write)?;
                Self::record_snapshot(&self.db, &self.snapshots, &old.meta, &file)?;
                SnapshotRecord { meta: old.meta, file }
            }
        };
        match SnapshotFile::open(&self.snapshot_path(&rec.file)) {
            Ok(f) => Ok(Some(Snapshot {
                meta: rec.meta,
                snapshot: Box::new(f),
            })),
            // The file is gone (removed by hand): none; openraft builds a new one when needed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_read(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A store written by an older version (the whole state under `sm`) opens with the same
    /// state, migrated to rows, and reopens from the rows alone.
    #[test]
    fn the_whole_state_form_is_migrated_to_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let mut old = Applied::default();
        old.state.cluster_id = "c1".into();
        for name in ["a", "b"] {
            old.state.buckets.insert(
                name.into(),
                crate::records::Bucket {
                    name: name.into(),
                    ..Default::default()
                },
            );
        }
        old.last_applied = Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), 42));
        {
            let db = RaftDb::open(&path).unwrap();
            db.put(&[("sm", &serde_json::to_vec(&old).unwrap())]).unwrap();
            let sm = StateMachine::open(db.clone(), &path.with_extension("snapshots")).unwrap();
            assert_eq!(sm.read().state, old.state);
            assert_eq!(db.get("sm").unwrap(), None, "the old form is gone");
            assert!(db.state_rows().unwrap().iter().any(|(k, _)| k == "b/a"));
        }
        let db = RaftDb::open(&path).unwrap();
        let sm = StateMachine::open(db, &path.with_extension("snapshots")).unwrap();
        let a = sm.read();
        assert_eq!(a.state, old.state);
        assert_eq!(a.last_applied, old.last_applied);
    }

    /// A snapshot is a file: built into the snapshot directory, received chunk by chunk into a
    /// file that becomes the receiver's current snapshot, and a snapshot recorded by an older
    /// release (its bytes in the database) moves to a file when first asked for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshots_are_files_streamed_in_and_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let open = |n: &str| {
            let db = RaftDb::open(&dir.path().join(format!("{n}.redb"))).unwrap();
            (
                db.clone(),
                StateMachine::open(db, &dir.path().join(format!("{n}-snapshots"))).unwrap(),
            )
        };
        let (_, mut a) = open("a");
        {
            let mut w = a.shared.write().unwrap();
            for i in 0..500 {
                let name = format!("bucket-{i:04}");
                w.state.buckets.insert(
                    name.clone(),
                    crate::records::Bucket {
                        name,
                        ..Default::default()
                    },
                );
            }
            w.last_applied = Some(LogId::new(openraft::CommittedLeaderId::new(2, 1), 600));
        }
        let mut snap = a.build_snapshot().await.unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path().join("a-snapshots"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(files.len(), 1, "one file, the current snapshot");
        assert_eq!(snap.meta.last_log_id.unwrap().index, 600);

        // The receiver gets it in 4 KiB chunks, as openraft sends it.
        let (db_b, mut b) = open("b");
        let mut into = b.begin_receiving_snapshot().await.unwrap();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = snap.snapshot.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            into.write_all(&buf[..n]).await.unwrap();
        }
        b.install_snapshot(&snap.meta, into).await.unwrap();
        assert_eq!(b.read().state, a.read().state);
        assert!(db_b.state_rows().unwrap().iter().any(|(k, _)| k == "b/bucket-0499"));
        let names: Vec<String> = std::fs::read_dir(dir.path().join("b-snapshots"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [format!("{}.snap", snap.meta.snapshot_id)],
            "the received file is kept"
        );
        let current = b.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snap.meta);

        // An older release's record: the bytes themselves.
        let (db_c, mut c) = open("c");
        let data = serde_json::to_vec(&*a.read()).unwrap();
        let old = enc(&StoredSnapshot {
            meta: snap.meta.clone(),
            data: data.clone(),
        })
        .unwrap();
        db_c.put(&[("snapshot", &old)]).unwrap();
        let mut got = c.get_current_snapshot().await.unwrap().unwrap();
        let mut bytes = Vec::new();
        got.snapshot.read_to_end(&mut bytes).await.unwrap();
        assert_eq!(bytes, data);
        let rec: SnapshotRecord = dec(&db_c.get("snapshot").unwrap().unwrap()).unwrap();
        assert_eq!(rec.file, format!("{}.snap", snap.meta.snapshot_id));
    }
}
