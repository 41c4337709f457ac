//! Embedded metadata in redb: the bucket registry, object version records, multipart uploads
//! and their parts, usage counters and the blob garbage list.
//!
//! Reads use redb read transactions directly. Writes go through [`MetaStore::write`], which
//! hands the closure to a single committer thread; the committer runs every queued closure in
//! one write transaction and commits once (group commit), so concurrent writers share one
//! fsync instead of each paying for their own.
//!
//! Closures passed to `write` must check before they write: a closure that returns an error
//! must not have modified anything, because its transaction is shared with other writers.
//!
//! Depends only on `ironbucket-types`; knows nothing about HTTP, S3 or blob files.

mod hints;
mod list;
mod raft;
mod records;
mod reopen;
mod tree;
mod tx;

pub use hints::{Hint, HintRecord};
pub use list::{ListPage, ListQuery, UploadListPage, UploadListQuery, VersionListPage, VersionListQuery};
pub use raft::RaftDb;
pub use records::{
    BucketRecord, ContentHeaders, KeyRecord, MetaStamps, ObjectLockConfig, ObjectRecord, PartRecord, PurgeRecord,
    Quota, Retention, Segment, Stamp, UploadRecord, stamped_version_id,
};
pub use tree::{
    Classify, Digest, GROUPS, ItemKey, ItemKind, ItemSummary, LEAF_BITS, LEAVES_PER_GROUP, TreeItem, leaf_of, leaf_span,
};
pub use tx::Tx;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

pub(crate) const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
pub(crate) const OBJECTS: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("objects");
pub(crate) const UPLOADS: TableDefinition<(&str, &[u8], &str), &[u8]> = TableDefinition::new("uploads");
pub(crate) const PARTS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("parts");
pub(crate) const STATS: TableDefinition<&str, u64> = TableDefinition::new("stats");
pub(crate) const GARBAGE: TableDefinition<&str, u64> = TableDefinition::new("garbage");
/// Every version of every object (including `null` versions and delete markers), keyed by
/// (bucket, key, [`ObjectRecord::sort_key`]): newest first within a key. `OBJECTS` holds the
/// current live version of each key (no entry when the newest version is a delete marker).
pub(crate) const VERSIONS: TableDefinition<(&str, &[u8], &str), &[u8]> = TableDefinition::new("versions");
/// Access keys (other than the root key), by access key id.
pub(crate) const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
/// (bucket, key, version id) -> `PurgeRecord`: a version deleted by id in a cluster (a version
/// tombstone), so that a replica that missed the delete cannot bring it back.
pub(crate) const PURGED: TableDefinition<(&str, &[u8], &str), &[u8]> = TableDefinition::new("purged");
/// Small object bodies stored with the metadata (encoded blob bytes, keyed by blob id).
pub(crate) const INLINE: TableDefinition<&str, &[u8]> = TableDefinition::new("inline");

/// Errors of the metadata layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("metadata database error: {0}")]
    Db(String),
    #[error("metadata commit failed: {0}")]
    Commit(String),
    #[error("corrupt metadata record: {0}")]
    Corrupt(String),
    #[error("metadata store is shut down")]
    Closed,
    /// The committer thread died: no write can commit until the node is restarted.
    #[error("the metadata store has failed: {0}")]
    Failed(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Db(e.to_string())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A version tombstone past a cutoff: (bucket, key, version id, stamp).
pub type OldPurge = (String, Vec<u8>, String, ironbucket_types::Hlc);

/// Encoded bytes of an object's inline blobs, by blob id.
pub type InlineBlobs = Vec<(String, Vec<u8>)>;

/// Usage counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub objects: u64,
    pub bytes: u64,
}

type Completion = Box<dyn FnOnce(Result<()>) + Send>;
type Job = Box<dyn FnOnce(&mut Tx<'_>) -> Completion + Send>;

/// Handle to the metadata database. Cheap to clone.
#[derive(Clone)]
pub struct MetaStore {
    db: Arc<reopen::Reopenable>,
    jobs: mpsc::SyncSender<Job>,
    /// Set once, when the committer thread dies: why.
    failed: Arc<std::sync::OnceLock<String>>,
    /// The fingerprint of the anti-entropy tree's installed classifier.
    tree_fp: Arc<std::sync::Mutex<Option<u64>>>,
}

/// Default redb page cache: enough for the hot part of millions of keys, small enough that the
/// server's memory stays predictable (redb's own default is 1 GiB).
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Largest number of writers sharing one commit.
const MAX_BATCH: usize = 512;

impl MetaStore {
    /// Opens or creates the database file. `durable` makes every commit reach stable storage
    /// before writers are told it succeeded.
    pub fn open(path: &Path, durable: bool) -> Result<Self> {
        Self::open_with_cache(path, durable, DEFAULT_CACHE_BYTES)
    }

    /// Like [`MetaStore::open`] with an explicit page cache size in bytes.
    pub fn open_with_cache(path: &Path, durable: bool, cache_bytes: usize) -> Result<Self> {
        let db = reopen::Reopenable::open_file(path, cache_bytes)?;
        {
            let txn = db.begin_write()?;
            txn.open_table(BUCKETS)?;
            txn.open_table(OBJECTS)?;
            txn.open_table(UPLOADS)?;
            txn.open_table(PARTS)?;
            txn.open_table(STATS)?;
            txn.open_table(GARBAGE)?;
            txn.open_table(INLINE)?;
            txn.open_table(VERSIONS)?;
            txn.open_table(KEYS)?;
            txn.open_table(PURGED)?;
            txn.open_table(hints::HINTS)?;
            txn.open_table(tree::TREE_ITEMS)?;
            txn.open_table(tree::TREE_CELLS)?;
            txn.open_table(tree::TREE_STATE)?;
            tree::build_items_once(&txn)?;
            txn.commit()?;
        }
        let db = Arc::new(reopen::Reopenable::new(db, path.to_path_buf(), cache_bytes));
        let (jobs, rx) = mpsc::sync_channel::<Job>(4096);
        let db2 = db.clone();
        let failed = Arc::new(std::sync::OnceLock::new());
        let failed2 = failed.clone();
        std::thread::Builder::new()
            .name("meta-commit".into())
            .spawn(move || committer(db2, rx, durable, &failed2))
            .map_err(|e| Error::Db(format!("cannot start committer thread: {e}")))?;
        Ok(Self {
            db,
            jobs,
            failed,
            tree_fp: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    /// Why the store cannot commit writes, if it cannot: the committer thread died (until the
    /// node restarts), or the database is closed after an I/O error (until it reopens).
    pub fn failure(&self) -> Option<String> {
        self.failed.get().cloned().or_else(|| self.db.why())
    }

    /// [`MetaStore::failure`] as a closure that does not keep the database open.
    pub fn failure_probe(&self) -> impl Fn() -> Option<String> + Send + Sync + 'static {
        let failed = self.failed.clone();
        let db = Arc::downgrade(&self.db);
        move || failed.get().cloned().or_else(|| db.upgrade().and_then(|d| d.why()))
    }

    /// How many times the database was reopened after an I/O error since the node started.
    pub fn reopened(&self) -> u64 {
        self.db.reopened()
    }

    /// Runs `f` inside a shared write transaction and returns its result once the
    /// transaction is committed (durably, if the store was opened durable).
    pub async fn write<R, E, F>(&self, f: F) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
    {
        if let Some(why) = self.failed.get() {
            return Err(E::from(Error::Failed(why.clone())));
        }
        // While the database is closed after an I/O error, writers are refused at once rather
        // than queued: a full queue would hold blocking threads the readers need.
        if let Some(why) = self.db.why() {
            return Err(E::from(Error::Commit(why)));
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<R, E>>();
        let job: Job = Box::new(move |t: &mut Tx<'_>| {
            let r = f(t);
            Box::new(move |commit: Result<()>| {
                let out = match (r, commit) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(c)) => Err(E::from(c)),
                    (Ok(v), Ok(())) => Ok(v),
                };
                let _ = tx.send(out);
            }) as Completion
        });
        let jobs = self.jobs.clone();
        // The channel is bounded; a full queue blocks, so hand off outside the async thread.
        match jobs.try_send(job) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || jobs.send(job))
                    .await
                    .map_err(|_| E::from(Error::Closed))?
                    .map_err(|_| E::from(Error::Closed))?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {
                return Err(E::from(self.failed.get().cloned().map_or(Error::Closed, Error::Failed)));
            }
        }
        // A writer whose job was dropped unrun is told why: the commit thread died, or its
        // batch could not start (the database closed after an I/O error, say).
        rx.await.map_err(|_| match self.failed.get() {
            Some(why) => E::from(Error::Failed(why.clone())),
            None => E::from(self.db.refused().map_or(Error::Closed, Error::Commit)),
        })?
    }

    pub fn get_bucket(&self, name: &str) -> Result<Option<BucketRecord>> {
        let txn = self.db.get()?.begin_read()?;
        let t = txn.open_table(BUCKETS)?;
        t.get(name)?.map(|g| records::decode(g.value())).transpose()
    }

    pub fn get_key(&self, access_key: &str) -> Result<Option<KeyRecord>> {
        let txn = self.db.get()?.begin_read()?;
        let t = txn.open_table(KEYS)?;
        t.get(access_key)?.map(|g| records::decode(g.value())).transpose()
    }

    pub fn get_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>> {
        let txn = self.db.get()?.begin_read()?;
        let t = txn.open_table(OBJECTS)?;
        t.get((bucket, key.as_bytes()))?
            .map(|g| records::decode(g.value()))
            .transpose()
    }

    /// An object record and the bytes of its inline blobs, read in one snapshot.
    pub fn get_object_and_inline(&self, bucket: &str, key: &str) -> Result<Option<(ObjectRecord, InlineBlobs)>> {
        let txn = self.db.get()?.begin_read()?;
        let t = txn.open_table(OBJECTS)?;
        let Some(rec) = t
            .get((bucket, key.as_bytes()))?
            .map(|g| records::decode::<ObjectRecord>(g.value()))
            .transpose()?
        else {
            return Ok(None);
        };
        let inline = txn.open_table(INLINE)?;
        let mut blobs = Vec::new();
        for seg in &rec.segments {
            if seg.blob.starts_with('i')
                && let Some(v) = inline.get(seg.blob.as_str())?
            {
                blobs.push((seg.blob.clone(), v.value().to_vec()));
            }
        }
        Ok(Some((rec, blobs)))
    }

    /// One version of an object (`"null"` for the null version) and its inline blob bytes.
    pub fn get_version_and_inline(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<(ObjectRecord, InlineBlobs)>> {
        let txn = self.db.get()?.begin_read()?;
        let t = txn.open_table(VERSIONS)?;
        let Some(rec) = tx::find_version(&t, bucket, key, version_id)?.map(|(_, r)| r) else {
            return Ok(None);
        };
        let inline = txn.open_table(INLINE)?;
        let mut blobs = Vec::new();
        for seg in &rec.segments {
            if seg.blob.starts_with('i')
                && let Some(v) = inline.get(seg.blob.as_str())?
            {
                blobs.push((seg.blob.clone(), v.value().to_vec()));
            }
        }
        Ok(Some((rec, blobs)))
    }

    /// The versions of one key deleted by id in a cluster (version id, purge).
    pub fn purges_of(&self, bucket: &str, key: &str) -> Result<Vec<(String, PurgeRecord)>> {
        let txn = self.db.get()?.begin_read()?;
        let t = txn.open_table(PURGED)?;
        let mut out = Vec::new();
        for item in t.range((bucket, key.as_bytes(), "")..)? {
            let (k, v) = item?;
            let (b, kk, vid) = k.value();
            if b != bucket || kk != key.as_bytes() {
                break;
            }
            out.push((vid.to_string(), records::decode(v.value())?));
        }
        Ok(out)
    }

    /// All versions of one key, newest first.
    pub fn versions_of(&self, bucket: &str, key: &str) -> Result<Vec<ObjectRecord>> {
        let db = self.db.get()?;
        versions_in(&db, bucket, key)
    }

    /// The newest version of a key (a delete marker included), if any.
    pub fn newest_version(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>> {
        let txn = self.db.get()?.begin_read()?;
        let t = txn.open_table(VERSIONS)?;
        Ok(tx::versions_of(&t, bucket, key)?.into_iter().next().map(|(_, r)| r))
    }

    pub fn get_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Option<UploadRecord>> {
        let txn = self.db.get()?.begin_read()?;
        let t = txn.open_table(UPLOADS)?;
        t.get((bucket, key.as_bytes(), upload_id))?
            .map(|g| records::decode(g.value()))
            .transpose()
    }

    pub fn stats(&self) -> Result<Stats> {
        let txn = self.db.get()?.begin_read()?;
        let t = txn.open_table(STATS)?;
        let get = |k: &str| -> Result<u64> { Ok(t.get(k)?.map(|g| g.value()).unwrap_or(0)) };
        Ok(Stats {
            objects: get("objects")?,
            bytes: get("bytes")?,
        })
    }

    /// Usage of one bucket.
    pub fn bucket_stats(&self, bucket: &str) -> Result<Stats> {
        let txn = self.db.get()?.begin_read()?;
        let t = txn.open_table(STATS)?;
        let get = |k: String| -> Result<u64> { Ok(t.get(k.as_str())?.map(|g| g.value()).unwrap_or(0)) };
        Ok(Stats {
            objects: get(format!("b/{bucket}/objects"))?,
            bytes: get(format!("b/{bucket}/bytes"))?,
        })
    }
}

fn committer(
    handle: Arc<reopen::Reopenable>,
    rx: mpsc::Receiver<Job>,
    durable: bool,
    failed: &std::sync::OnceLock<String>,
) {
    // The anti-entropy tree's classifier (and whether the tree is kept at all), as the last
    // committed batch left them.
    let mut classes: Option<Arc<dyn tree::Classify>> = None;
    let mut tree_off = false;
    loop {
        // A database closed after an I/O error is tried again while no writer comes (writers
        // are refused at once meanwhile).
        let first = match rx.recv_timeout(std::time::Duration::from_millis(500)) {
            Ok(j) => j,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if handle.why().is_some() {
                    let _ = handle.get_or_reopen();
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        // A database closed after an I/O error is opened again first; while it cannot be, the
        // batch is dropped unrun and its writers are told why.
        let db = match handle.get_or_reopen() {
            Ok(db) => db,
            Err(e) => {
                handle.note_refused(e.to_string());
                continue;
            }
        };
        let mut completions = Vec::with_capacity(batch.len());
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            commit_batch(
                &handle,
                &db,
                &mut batch,
                &mut completions,
                durable,
                (&mut classes, &mut tree_off),
            )
        }));
        if let Err(p) = run {
            // A panic would otherwise end this thread silently, and every later write would
            // wait for a commit that never comes. Record why before the waiting writers are
            // released (dropping their completions), so that they and every later writer get
            // the reason at once and the node reports itself failed.
            let why = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(panic = %why, "the metadata commit thread died: writes are refused until restart");
            let _ = failed.set(format!("the metadata commit thread panicked: {why}"));
            return;
        }
    }
}

/// Runs `batch` in one write transaction and tells each writer the outcome. A failure that
/// leaves the database refusing everything (an I/O error) closes it, to be reopened.
fn commit_batch(
    handle: &reopen::Reopenable,
    db: &Database,
    batch: &mut Vec<Job>,
    completions: &mut Vec<Completion>,
    durable: bool,
    (classes, tree_off): (&mut Option<Arc<dyn tree::Classify>>, &mut bool),
) {
    // Fault injection for tests (`FAILPOINTS=meta-commit=...`, builds with the `failpoints`
    // feature only): `panic` kills this thread as a bug would.
    fail::fail_point!("meta-commit");
    let mut poisoned = false;
    let result = (|| -> Result<()> {
        let mut txn = db.begin_write().inspect_err(|e| {
            poisoned = matches!(e, redb::TransactionError::Storage(s) if reopen::poisons(s));
        })?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        let (installed, off) = {
            let mut t = Tx::new(&txn, classes.clone(), *tree_off);
            for job in batch.drain(..) {
                completions.push(job(&mut t));
            }
            t.pending.flush(&txn)?;
            (t.classes, t.tree_off)
        };
        // Fault injection (`FAILPOINTS=meta-fsync=10%return`, `failpoints` builds only): the
        // commit fails as one whose fsync reported an I/O error; nothing of the batch is stored.
        fail::fail_point!("meta-fsync", |_| Err(Error::Db(
            "injected fsync failure (FAILPOINTS=meta-fsync)".into()
        )));
        txn.commit().inspect_err(|e| {
            poisoned = matches!(e, redb::CommitError::Storage(s) if reopen::poisons(s));
        })?;
        *classes = installed;
        *tree_off = off;
        Ok(())
    })();
    if let Err(e) = &result {
        tracing::error!(error = %e, writers = completions.len(), "metadata commit failed");
        if !batch.is_empty() {
            // Jobs that never ran (begin_write failed) are dropped: their writers are told this.
            handle.note_refused(e.to_string());
        }
        if poisoned {
            handle.close(e.to_string());
        }
    }
    for c in completions.drain(..) {
        c(result.clone().map_err(|e| Error::Commit(e.to_string())));
    }
}

#[cfg(test)]
mod tests;

/// Reads that scan many rows (listings, whole-table walks). Only [`MetaStore::scan`] hands one
/// out, and it runs the closure on tokio's blocking pool: a scan can never hold an async worker
/// thread (point reads stay on [`MetaStore`]; writes go through the commit thread).
pub struct Scanner {
    pub(crate) db: Arc<Database>,
}

impl MetaStore {
    /// Runs `f` (the reads of a scan) on the blocking pool and returns its result.
    pub async fn scan<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Scanner) -> Result<R> + Send + 'static,
    {
        let scanner = Scanner { db: self.db.get()? };
        tokio::task::spawn_blocking(move || f(&scanner))
            .await
            .map_err(|e| Error::Db(format!("a metadata scan failed: {e}")))?
    }

    /// A scanner for code that already runs on a thread of its own (benchmarks, tools, tests):
    /// async code uses [`MetaStore::scan`].
    pub fn blocking_scanner(&self) -> Result<Scanner> {
        Ok(Scanner { db: self.db.get()? })
    }
}

impl Scanner {
    /// All versions of one key, newest first (as [`MetaStore::versions_of`], within a scan).
    pub fn versions_of(&self, bucket: &str, key: &str) -> Result<Vec<ObjectRecord>> {
        versions_in(&self.db, bucket, key)
    }

    pub fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(KEYS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (_, v) = item?;
            out.push(records::decode(v.value())?);
        }
        Ok(out)
    }
    pub fn list_buckets(&self) -> Result<Vec<BucketRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(BUCKETS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (_, v) = item?;
            out.push(records::decode(v.value())?);
        }
        Ok(out)
    }
    /// Distinct keys that have versions in a bucket, after `after`, at most `limit`.
    pub fn version_keys(&self, bucket: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(VERSIONS)?;
        let mut out: Vec<String> = Vec::new();
        let start: Vec<u8> = match after {
            // Past every version of `after`: the key followed by a zero byte.
            Some(a) => a.bytes().chain(std::iter::once(0)).collect(),
            None => Vec::new(),
        };
        for item in t.range((bucket, start.as_slice(), "")..)? {
            let (k, _) = item?;
            let (b, key, _) = k.value();
            if b != bucket {
                break;
            }
            if out.last().is_some_and(|l| l.as_bytes() == key) {
                continue;
            }
            out.push(String::from_utf8(key.to_vec()).map_err(|_| Error::Corrupt("object key is not UTF-8".into()))?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
    /// The purges (key, version id, record) of keys under `prefix`, after `after` and up to
    /// `until` (inclusive), in key order.
    pub fn purges_in(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        until: Option<&str>,
    ) -> Result<Vec<(String, String, PurgeRecord)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PURGED)?;
        let mut out = Vec::new();
        let start = match after {
            Some(a) if a > prefix => a,
            _ => prefix,
        };
        for item in t.range((bucket, start.as_bytes(), "")..)? {
            let (k, v) = item?;
            let (b, key, vid) = k.value();
            if b != bucket || !key.starts_with(prefix.as_bytes()) {
                break;
            }
            if after.is_some_and(|a| key <= a.as_bytes()) {
                continue;
            }
            if until.is_some_and(|u| key > u.as_bytes()) {
                break;
            }
            let key = String::from_utf8(key.to_vec()).map_err(|_| Error::Corrupt("object key is not UTF-8".into()))?;
            out.push((key, vid.to_string(), records::decode(v.value())?));
        }
        Ok(out)
    }
    /// Version tombstones stamped before `cutoff`: (bucket, key, version id, stamp).
    pub fn purges_older_than(&self, cutoff: u64, limit: usize) -> Result<Vec<OldPurge>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PURGED)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            let p: PurgeRecord = records::decode(v.value())?;
            if p.hlc.physical < cutoff {
                let (b, key, vid) = k.value();
                out.push((b.to_string(), key.to_vec(), vid.to_string(), p.hlc));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
    /// Version records of every bucket in table order after `after` (bucket, key, sort key;
    /// exclusive), at most `limit`: (bucket, key, sort key, record).
    pub fn versions_after(
        &self,
        after: Option<&(String, String, String)>,
        limit: usize,
    ) -> Result<Vec<(String, String, String, ObjectRecord)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(VERSIONS)?;
        let empty: &[u8] = &[];
        let range = match after {
            Some((b, k, sk)) => t.range((b.as_str(), k.as_bytes(), sk.as_str())..)?,
            None => t.range(("", empty, "")..)?,
        };
        let mut out = Vec::new();
        for item in range {
            let (k, v) = item?;
            let (b, key, sk) = k.value();
            if after.is_some_and(|(ab, ak, ask)| (b, key, sk) == (ab.as_str(), ak.as_bytes(), ask.as_str())) {
                continue;
            }
            let key = String::from_utf8(key.to_vec()).map_err(|_| Error::Corrupt("object key is not UTF-8".into()))?;
            out.push((b.to_string(), key, sk.to_string(), records::decode(v.value())?));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
    /// Inline blobs in id order after `after` (exclusive), at most `limit`: (id, encoded bytes).
    pub fn inline_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, Vec<u8>)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(INLINE)?;
        let mut out = Vec::new();
        for item in t.range(after.unwrap_or("")..)? {
            let (k, v) = item?;
            if Some(k.value()) == after {
                continue;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
    pub fn list_versions(&self, bucket: &str, q: &VersionListQuery) -> Result<VersionListPage> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(VERSIONS)?;
        list::list_versions(&t, bucket, q)
    }
    pub fn list_objects(&self, bucket: &str, q: &ListQuery) -> Result<ListPage> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(OBJECTS)?;
        list::list_objects(&t, bucket, q)
    }
    pub fn list_parts(&self, upload_id: &str) -> Result<Vec<PartRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PARTS)?;
        tx::parts_of(&t, upload_id)
    }
    pub fn list_uploads(&self, bucket: &str, q: &UploadListQuery) -> Result<UploadListPage> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(UPLOADS)?;
        list::list_uploads(&t, bucket, q)
    }
    /// Every upload in every bucket started before `before` (for the abandoned-upload worker).
    pub fn uploads_older_than(&self, before: u64, limit: usize) -> Result<Vec<(String, UploadRecord)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(UPLOADS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            let rec: UploadRecord = records::decode(v.value())?;
            if rec.initiated < before {
                out.push((k.value().0.to_string(), rec));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
    /// Counters whose names start with `prefix`, with the prefix removed.
    pub fn counters(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(STATS)?;
        let mut out = Vec::new();
        for item in t.range(prefix..)? {
            let (k, v) = item?;
            let k = k.value();
            let Some(rest) = k.strip_prefix(prefix) else { break };
            out.push((rest.to_string(), v.value()));
        }
        Ok(out)
    }
    /// Blob ids waiting to be deleted.
    pub fn garbage(&self, limit: usize) -> Result<Vec<String>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(GARBAGE)?;
        let mut out = Vec::new();
        for item in t.iter()?.take(limit) {
            let (k, _) = item?;
            out.push(k.value().to_string());
        }
        Ok(out)
    }
}

fn versions_in(db: &Database, bucket: &str, key: &str) -> Result<Vec<ObjectRecord>> {
    let txn = db.begin_read()?;
    let t = txn.open_table(VERSIONS)?;
    Ok(tx::versions_of(&t, bucket, key)?.into_iter().map(|(_, r)| r).collect())
}
