//! The metadata database file, reopened after an I/O error.
//!
//! Once a write to its file fails (a full disk, an fsync error), redb refuses every later
//! operation of that `Database` value with "Previous I/O error occurred. Please close and
//! re-open the database", reads of pages not in its cache included. Left alone, a node whose
//! disk filled up for a moment would refuse metadata writes (and most reads) until it is
//! restarted. [`Reopenable`] holds the open database for the readers and the commit thread; the
//! commit thread closes it when a commit fails that way and opens it again (redb repairs the
//! file on open) before its next batch, at most once a second, until the open succeeds (the
//! disk has room again). Meanwhile readers and writers get an error saying so.

use crate::{Error, Result};
use redb::Database;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How often a closed database is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How long a reopen waits for the readers still holding the old database to let it go
/// (short: the commit thread has a queue to answer; it tries again at its next turn).
const HOLDERS_WAIT: Duration = Duration::from_millis(50);

/// The open database, or why it is closed.
pub(crate) struct Reopenable {
    db: RwLock<Option<Arc<Database>>>,
    /// Why it was closed (kept after a reopen, for the record), and when it was last tried.
    state: Mutex<Closed>,
    path: PathBuf,
    cache_bytes: usize,
}

#[derive(Default)]
struct Closed {
    why: Option<String>,
    /// Why the last reopen failed.
    reopen_error: Option<String>,
    /// Why the commit thread last dropped a batch unrun (its writers are told this).
    refused: Option<String>,
    /// The closed database, while readers still hold it.
    old: Option<Arc<Database>>,
    last_try: Option<Instant>,
    reopened: u64,
}

impl Reopenable {
    pub fn new(db: Database, path: PathBuf, cache_bytes: usize) -> Self {
        Self {
            db: RwLock::new(Some(Arc::new(db))),
            state: Mutex::new(Closed::default()),
            path,
            cache_bytes,
        }
    }

    /// Opens (or creates) the file at `path` as the metadata store does.
    pub fn open_file(path: &std::path::Path, cache_bytes: usize) -> Result<Database> {
        Ok(redb::Builder::new().set_cache_size(cache_bytes).create(path)?)
    }

    /// The open database, or an error saying why it is closed.
    pub fn get(&self) -> Result<Arc<Database>> {
        if let Some(db) = self.db.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(db.clone());
        }
        Err(self.closed_error())
    }

    fn closed_error(&self) -> Error {
        Error::Db(self.why().unwrap_or_else(|| "the metadata database is closed".into()))
    }

    /// Why the database is closed, if it is.
    pub fn why(&self) -> Option<String> {
        if self.db.read().unwrap_or_else(|p| p.into_inner()).is_some() {
            return None;
        }
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut why = format!(
            "the metadata database is closed after an I/O error and reopens once it can (is the disk full?): {}",
            st.why.as_deref().unwrap_or("an I/O error")
        );
        if let Some(e) = &st.reopen_error {
            why.push_str(&format!("; the last try to reopen it failed: {e}"));
        }
        Some(why)
    }

    /// Notes why the commit thread dropped a batch without running it.
    pub fn note_refused(&self, why: String) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).refused = Some(why);
    }

    /// Why a writer's batch was dropped unrun: the database is closed, or the last refusal.
    pub fn refused(&self) -> Option<String> {
        self.why()
            .or_else(|| self.state.lock().unwrap_or_else(|p| p.into_inner()).refused.clone())
    }

    /// How many times the database was reopened since the node started.
    pub fn reopened(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).reopened
    }

    /// Closes the database after an I/O error that left it refusing everything (`why`).
    pub fn close(&self, why: String) {
        let old = self.db.write().unwrap_or_else(|p| p.into_inner()).take();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        tracing::error!(error = %why, "the metadata database refuses everything after an I/O error: closing it, to reopen it once it can");
        st.why = Some(why);
        st.reopen_error = None;
        if old.is_some() {
            st.old = old;
        }
        st.last_try = Some(Instant::now());
    }

    /// The open database; a closed one is opened again first (at most once per [`RETRY`]).
    /// Runs on the commit thread (it blocks); readers are never held up by it.
    pub fn get_or_reopen(&self) -> Result<Arc<Database>> {
        if let Ok(db) = self.get() {
            return Ok(db);
        }
        let old = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.last_try.is_some_and(|t| t.elapsed() < RETRY) {
                drop(st);
                return Err(self.closed_error());
            }
            st.last_try = Some(Instant::now());
            st.old.take()
        };
        // redb holds the file until every handle of the old database is gone.
        if let Some(old) = old {
            let until = Instant::now() + HOLDERS_WAIT;
            while Arc::strong_count(&old) > 1 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            if Arc::strong_count(&old) > 1 {
                self.state.lock().unwrap_or_else(|p| p.into_inner()).old = Some(old);
                return Err(self.closed_error());
            }
        }
        let opened = Self::open_file(&self.path, self.cache_bytes);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match opened {
            Ok(db) => {
                let db = Arc::new(db);
                *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(db.clone());
                st.reopened += 1;
                st.reopen_error = None;
                tracing::warn!(after = ?st.why, "the metadata database is open again");
                Ok(db)
            }
            Err(e) => {
                st.reopen_error = Some(e.to_string());
                drop(st);
                Err(self.closed_error())
            }
        }
    }
}

/// Whether a redb error means the database refuses everything from now on (an I/O error in a
/// write, or one seen before).
pub(crate) fn poisons(e: &redb::StorageError) -> bool {
    matches!(e, redb::StorageError::Io(_) | redb::StorageError::PreviousIo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened() -> (tempfile::TempDir, Reopenable) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        let db = Reopenable::open_file(&path, 1 << 20).unwrap();
        (dir, Reopenable::new(db, path, 1 << 20))
    }

    #[test]
    fn a_closed_database_says_why_and_opens_again_after_the_pause() {
        let (_dir, r) = opened();
        assert!(r.get().is_ok() && r.why().is_none());
        r.close("I/O error: No space left on device (os error 28)".into());
        let Err(err) = r.get() else {
            panic!("still open after close")
        };
        let err = err.to_string();
        assert!(
            err.contains("closed after an I/O error") && err.contains("No space left"),
            "{err}"
        );
        assert!(r.why().is_some());
        // Not before the pause.
        assert!(r.get_or_reopen().is_err());
        std::thread::sleep(RETRY);
        assert!(r.get_or_reopen().is_ok());
        assert!(r.get().is_ok() && r.why().is_none());
        assert_eq!(r.reopened(), 1);
    }

    #[test]
    fn a_reader_holding_the_old_database_delays_the_reopen_without_blocking() {
        let (_dir, r) = opened();
        let held = r.get().unwrap();
        r.close("I/O error".into());
        std::thread::sleep(RETRY);
        let t = Instant::now();
        assert!(r.get_or_reopen().is_err(), "redb keeps the file while a handle lives");
        assert!(t.elapsed() < Duration::from_secs(1));
        drop(held);
        std::thread::sleep(RETRY);
        assert!(r.get_or_reopen().is_ok());
    }
}
