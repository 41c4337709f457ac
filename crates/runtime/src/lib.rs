//! Runtime services shared by every layer: supervised background workers.
//!
//! Every long-running background job of a node (garbage removal, lifecycle, gossip, leader
//! duties, and later hint replay, anti-entropy, rebalance and scrub) runs as a named worker in a
//! [`Registry`]. The registry runs each worker's body as its own task and watches it: a body that
//! panics or returns an error is restarted with exponential backoff and the restart is counted;
//! a body that returns `Ok(())` has finished for good (its owner is gone). A worker declared
//! [`OnFailure::Fatal`] is not restarted: its failure marks the whole node failed
//! ([`Registry::fatal`]), which turns `/health` red. Threads that are not tasks (the metadata
//! committer) take part through a probe ([`Registry::probe`]).
//!
//! The admin API lists the registry ([`Registry::list`]) and sets a worker's tranquility (how
//! long it rests after each unit of work, as a multiple of the time the unit took).
//!
//! Depends only on `ironbucket-types`; knows nothing about storage, HTTP or the cluster.

use ironbucket_types::now_millis;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What a worker is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Started, has not reported yet.
    Starting,
    /// Working on a unit of work.
    Busy,
    /// Waiting for its next round.
    Idle,
    /// Failed; waiting before it is restarted.
    Backoff,
    /// Finished for good (its owner is gone).
    Done,
    /// Failed and not restarted: a fatal worker whose failure stops the node.
    Dead,
}

/// What the registry does when a worker fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Restart it with exponential backoff and count the restart.
    Restart,
    /// Do not restart it: the node has failed (`/health` red, writes refused).
    Fatal,
}

/// One worker as the admin API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub name: String,
    pub state: WorkerState,
    pub on_failure: OnFailure,
    /// What it last said about its progress (free text, e.g. "1200 objects checked").
    pub progress: Option<String>,
    /// The last error or panic message, kept after the worker recovers.
    pub last_error: Option<String>,
    pub last_error_ms: Option<u64>,
    /// Times it was restarted after a failure.
    pub restarts: u64,
    /// Units of work completed since the node started.
    pub units: u64,
    /// Rest after each unit of work, as a multiple of the time the unit took (0: none).
    pub tranquility: u32,
    pub started_ms: u64,
    pub last_active_ms: Option<u64>,
}

/// Why the node has failed: the first fatal worker that died.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fatal {
    pub worker: String,
    pub reason: String,
    pub at_ms: u64,
}

struct Slot {
    status: Mutex<WorkerStatus>,
    tranquility: AtomicU32,
    wake: Notify,
}

impl Slot {
    fn new(name: String, on_failure: OnFailure) -> Self {
        Slot {
            status: Mutex::new(WorkerStatus {
                name,
                state: WorkerState::Starting,
                on_failure,
                progress: None,
                last_error: None,
                last_error_ms: None,
                restarts: 0,
                units: 0,
                tranquility: 0,
                started_ms: now_millis(),
                last_active_ms: None,
            }),
            tranquility: AtomicU32::new(0),
            wake: Notify::new(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut WorkerStatus)) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
    }

    fn snapshot(&self) -> WorkerStatus {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        s.tranquility = self.tranquility.load(Ordering::Relaxed);
        s
    }
}

type Check = Box<dyn Fn() -> Option<String> + Send + Sync>;

enum Entry {
    Task(Arc<Slot>),
    Probe {
        name: String,
        started_ms: u64,
        check: Check,
        /// When the probe first reported a failure.
        failed_ms: OnceLock<u64>,
    },
}

#[derive(Default)]
struct Inner {
    entries: Mutex<Vec<Entry>>,
    fatal: Mutex<Option<Fatal>>,
    restarts: AtomicU64,
}

/// The node's background workers. Cheap to clone; every clone is the same registry.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registry({} workers)", self.list().len())
    }
}

/// Restart delays: 100 ms doubling to 30 s; a run that lasted a minute starts over at 100 ms.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The next restart delay after a run that lasted `ran`, given the previous delay (pure).
pub fn next_backoff(prev: Duration, ran: Duration) -> Duration {
    if ran >= HEALTHY_RUN || prev.is_zero() {
        BACKOFF_MIN
    } else {
        (prev * 2).min(BACKOFF_MAX)
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    fn unique_name(entries: &[Entry], name: String) -> String {
        let taken = |n: &str| {
            entries.iter().any(|e| match e {
                Entry::Task(s) => s.status.lock().unwrap_or_else(|p| p.into_inner()).name == n,
                Entry::Probe { name, .. } => name == n,
            })
        };
        if !taken(&name) {
            return name;
        }
        (2..).map(|i| format!("{name}#{i}")).find(|n| !taken(n)).unwrap_or(name)
    }

    /// Runs `body` as the worker `name` (made unique with a `#N` suffix if taken) on the current
    /// Tokio runtime. `body` is called again for every restart; it returns `Ok(())` when the
    /// worker has finished for good, `Err` for a failure. A panic counts as a failure.
    pub fn spawn<F, Fut>(&self, name: impl Into<String>, on_failure: OnFailure, mut body: F) -> WorkerCtx
    where
        F: FnMut(WorkerCtx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let slot = {
            let mut entries = self.inner.entries.lock().unwrap_or_else(|p| p.into_inner());
            let name = Self::unique_name(&entries, name.into());
            let slot = Arc::new(Slot::new(name, on_failure));
            entries.push(Entry::Task(slot.clone()));
            slot
        };
        let ctx = WorkerCtx { slot: slot.clone() };
        let registry = Arc::downgrade(&self.inner);
        let ctx2 = ctx.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::ZERO;
            loop {
                let began = Instant::now();
                // A restarted body is running again, whether or not it reports.
                slot.update(|s| s.state = WorkerState::Starting);
                let outcome = match tokio::spawn(body(ctx2.clone())).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(j) if j.is_panic() => Some(format!("panicked: {}", panic_message(j.into_panic()))),
                    Err(_) => None, // cancelled: the runtime is shutting down
                };
                let Some(reason) = outcome else {
                    slot.update(|s| s.state = WorkerState::Done);
                    return;
                };
                let name = slot.snapshot().name;
                let now = now_millis();
                slot.update(|s| {
                    s.last_error = Some(reason.clone());
                    s.last_error_ms = Some(now);
                });
                if on_failure == OnFailure::Fatal {
                    tracing::error!(worker = %name, %reason, "fatal worker failed: this node stops serving writes");
                    slot.update(|s| s.state = WorkerState::Dead);
                    if let Some(inner) = Weak::upgrade(&registry) {
                        inner.set_fatal(&name, &reason);
                    }
                    return;
                }
                backoff = next_backoff(backoff, began.elapsed());
                tracing::warn!(worker = %name, %reason, retry_in_ms = backoff.as_millis() as u64, "worker failed; restarting it");
                slot.update(|s| {
                    s.state = WorkerState::Backoff;
                    s.restarts += 1;
                });
                if let Some(inner) = Weak::upgrade(&registry) {
                    inner.restarts.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(backoff).await;
            }
        });
        ctx
    }

    /// Adds a watched thread or resource: `check` says why it has failed (`None` while it is
    /// fine). A probe that fails is fatal: it marks the node failed.
    pub fn probe(&self, name: impl Into<String>, check: impl Fn() -> Option<String> + Send + Sync + 'static) {
        let mut entries = self.inner.entries.lock().unwrap_or_else(|p| p.into_inner());
        let name = Self::unique_name(&entries, name.into());
        entries.push(Entry::Probe {
            name,
            started_ms: now_millis(),
            check: Box::new(check),
            failed_ms: OnceLock::new(),
        });
    }

    /// Every worker and probe, in the order they were added.
    pub fn list(&self) -> Vec<WorkerStatus> {
        let entries = self.inner.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .map(|e| match e {
                Entry::Task(s) => s.snapshot(),
                Entry::Probe {
                    name,
                    started_ms,
                    check,
                    failed_ms,
                } => {
                    let failed = check();
                    let failed_at = failed.as_ref().map(|_| *failed_ms.get_or_init(now_millis));
                    WorkerStatus {
                        name: name.clone(),
                        state: if failed.is_some() {
                            WorkerState::Dead
                        } else {
                            WorkerState::Busy
                        },
                        on_failure: OnFailure::Fatal,
                        progress: None,
                        last_error: failed,
                        last_error_ms: failed_at,
                        restarts: 0,
                        units: 0,
                        tranquility: 0,
                        started_ms: *started_ms,
                        last_active_ms: None,
                    }
                }
            })
            .collect()
    }

    /// Why the node has failed, if it has: the first fatal worker that died, or a probe that
    /// reports a failure.
    pub fn fatal(&self) -> Option<Fatal> {
        if let Some(f) = self.inner.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Some(f);
        }
        let entries = self.inner.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.iter().find_map(|e| match e {
            Entry::Probe {
                name, check, failed_ms, ..
            } => check().map(|reason| Fatal {
                worker: name.clone(),
                reason,
                at_ms: *failed_ms.get_or_init(now_millis),
            }),
            Entry::Task(_) => None,
        })
    }

    /// Restarts of every worker since the node started.
    pub fn restarts_total(&self) -> u64 {
        self.inner.restarts.load(Ordering::Relaxed)
    }

    fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        let entries = self.inner.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.iter().find_map(|e| match e {
            Entry::Task(s) if s.status.lock().unwrap_or_else(|p| p.into_inner()).name == name => Some(s.clone()),
            _ => None,
        })
    }

    /// Sets how long `name` rests after each unit of work (a multiple of the unit's duration).
    /// `false` when there is no such worker.
    pub fn set_tranquility(&self, name: &str, tranquility: u32) -> bool {
        match self.slot(name) {
            Some(s) => {
                s.tranquility.store(tranquility, Ordering::Relaxed);
                s.wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// Ends `name`'s current rest so it runs its next round now. `false` when there is no
    /// such worker.
    pub fn wake(&self, name: &str) -> bool {
        match self.slot(name) {
            Some(s) => {
                s.wake.notify_one();
                true
            }
            None => false,
        }
    }
}

impl Inner {
    fn set_fatal(&self, worker: &str, reason: &str) {
        let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(Fatal {
                worker: worker.to_string(),
                reason: reason.to_string(),
                at_ms: now_millis(),
            });
        }
    }
}

/// A worker's view of its own slot: what it reports and how it rests.
#[derive(Clone)]
pub struct WorkerCtx {
    slot: Arc<Slot>,
}

impl WorkerCtx {
    pub fn name(&self) -> String {
        self.slot.snapshot().name
    }

    /// The worker starts a unit of work.
    pub fn busy(&self) {
        self.slot.update(|s| s.state = WorkerState::Busy);
    }

    /// The worker waits for something (its next round, or an event).
    pub fn idle(&self) {
        self.slot.update(|s| s.state = WorkerState::Idle);
    }

    /// The worker finished a unit of work.
    pub fn unit_done(&self) {
        let now = now_millis();
        self.slot.update(|s| {
            s.units += 1;
            s.last_active_ms = Some(now);
        });
    }

    /// Free-text progress ("1200 of 3000 objects").
    pub fn progress(&self, p: impl Into<String>) {
        let p = p.into();
        self.slot.update(|s| s.progress = Some(p));
    }

    /// Records an error the worker recovered from by itself (no restart).
    pub fn note_error(&self, e: impl std::fmt::Display) {
        let (e, now) = (e.to_string(), now_millis());
        self.slot.update(|s| {
            s.last_error = Some(e);
            s.last_error_ms = Some(now);
        });
    }

    pub fn tranquility(&self) -> u32 {
        self.slot.tranquility.load(Ordering::Relaxed)
    }

    /// Ends the worker's current rest, or its next one if it is busy now (wake-ups while it
    /// works are kept, and a burst of them counts as one).
    pub fn wake(&self) {
        self.slot.wake.notify_one();
    }

    /// Rests for `d` (idle), or less if the worker is woken ([`Registry::wake`]): `true` then.
    pub async fn sleep(&self, d: Duration) -> bool {
        self.idle();
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.slot.wake.notified() => true,
        }
    }

    /// Rests after a unit of work that took `worked`: `worked × tranquility`, capped at a minute.
    /// `true` when a wake-up ended the rest (a worker that rests again before its next round
    /// should not then: the wake-up asked for that round).
    pub async fn throttle(&self, worked: Duration) -> bool {
        let t = self.tranquility();
        t > 0 && self.sleep((worked * t).min(Duration::from_secs(60))).await
    }
}

#[cfg(test)]
mod tests;
