#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::sync::atomic::AtomicUsize;

/// Polls `f` every 10 ms until it holds or `secs` pass.
async fn until(secs: u64, f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

fn status(r: &Registry, name: &str) -> WorkerStatus {
    r.list().into_iter().find(|w| w.name == name).unwrap()
}

#[tokio::test]
async fn a_worker_that_panics_is_restarted_and_counted() {
    let r = Registry::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let runs2 = runs.clone();
    r.spawn("flaky", OnFailure::Restart, move |ctx| {
        let n = runs2.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < 2 {
                panic!("boom {n}");
            }
            ctx.unit_done();
            ctx.sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
    });
    assert!(until(5, || status(&r, "flaky").units == 1).await);
    let s = status(&r, "flaky");
    assert_eq!(s.restarts, 2);
    assert_eq!(r.restarts_total(), 2);
    assert_eq!(s.state, WorkerState::Idle);
    assert_eq!(s.last_error.as_deref(), Some("panicked: boom 1"));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert!(r.fatal().is_none(), "a restartable worker never fails the node");
}

#[tokio::test]
async fn an_error_is_a_failure_and_ok_is_the_end() {
    let r = Registry::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let runs2 = runs.clone();
    r.spawn("once-failing", OnFailure::Restart, move |_ctx| {
        let n = runs2.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                Err("disk said no".to_string())
            } else {
                Ok(())
            }
        }
    });
    assert!(until(5, || status(&r, "once-failing").state == WorkerState::Done).await);
    let s = status(&r, "once-failing");
    assert_eq!((s.restarts, s.last_error.as_deref()), (1, Some("disk said no")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2, "a finished worker is not run again");
}

#[tokio::test]
async fn a_fatal_worker_fails_the_node_and_is_not_restarted() {
    let r = Registry::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let runs2 = runs.clone();
    r.spawn("committer", OnFailure::Fatal, move |_ctx| {
        runs2.fetch_add(1, Ordering::SeqCst);
        async move {
            panic!("disk gone");
            #[allow(unreachable_code)]
            Ok(())
        }
    });
    assert!(until(5, || r.fatal().is_some()).await);
    let f = r.fatal().unwrap();
    assert_eq!(f.worker, "committer");
    assert!(f.reason.contains("disk gone"), "{f:?}");
    assert_eq!(status(&r, "committer").state, WorkerState::Dead);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn probes_report_failed_threads() {
    let r = Registry::new();
    let broken = Arc::new(Mutex::new(None::<String>));
    let b2 = broken.clone();
    r.probe("meta-commit", move || b2.lock().unwrap().clone());
    assert!(r.fatal().is_none());
    assert_eq!(status(&r, "meta-commit").state, WorkerState::Busy);
    *broken.lock().unwrap() = Some("thread panicked".into());
    let first = r.fatal().unwrap();
    assert_eq!(first.worker, "meta-commit");
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(r.fatal().unwrap().at_ms, first.at_ms, "the failure time stays put");
    let s = status(&r, "meta-commit");
    assert_eq!(
        (s.state, s.last_error.as_deref()),
        (WorkerState::Dead, Some("thread panicked"))
    );
}

#[tokio::test]
async fn names_are_unique_and_workers_can_be_woken_and_throttled() {
    let r = Registry::new();
    let woke = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let w = woke.clone();
        r.spawn("gc", OnFailure::Restart, move |ctx| {
            let w = w.clone();
            async move {
                loop {
                    ctx.sleep(Duration::from_secs(3600)).await;
                    w.fetch_add(1, Ordering::SeqCst);
                    ctx.unit_done();
                }
            }
        });
    }
    let names: Vec<String> = r.list().into_iter().map(|w| w.name).collect();
    assert_eq!(names, ["gc", "gc#2"]);
    assert!(until(5, || status(&r, "gc").state == WorkerState::Idle).await);
    assert!(r.wake("gc"));
    assert!(until(5, || status(&r, "gc").units == 1).await);
    assert_eq!(status(&r, "gc#2").units, 0);
    assert!(r.set_tranquility("gc#2", 4));
    assert_eq!(status(&r, "gc#2").tranquility, 4);
    assert!(!r.wake("nope") && !r.set_tranquility("nope", 1));
    // Setting the tranquility wakes the worker, so the new setting applies at once.
    assert!(until(5, || woke.load(Ordering::SeqCst) == 2).await);
}

/// A worker woken while it rests after a throttled round runs its next round now, not after
/// its interval (`/workers/X/wake` on a throttled garbage collector waited for the interval).
#[tokio::test]
async fn a_wake_during_the_throttle_rest_runs_the_next_round() {
    let r = Registry::new();
    r.spawn("gc", OnFailure::Restart, move |ctx| async move {
        loop {
            ctx.busy();
            ctx.unit_done();
            if !ctx.throttle(Duration::from_secs(60)).await {
                ctx.sleep(Duration::from_secs(3600)).await;
            }
        }
    });
    assert!(until(5, || status(&r, "gc").units == 1).await);
    // Tranquility 10: the rest after that (minute-long) round lasts a minute; setting it wakes
    // the worker once (a second round), which then rests throttled.
    assert!(r.set_tranquility("gc", 10));
    assert!(until(5, || status(&r, "gc").units == 2).await);
    assert!(until(5, || status(&r, "gc").state == WorkerState::Idle).await);
    assert!(r.wake("gc"));
    assert!(until(5, || status(&r, "gc").units == 3).await, "{:?}", status(&r, "gc"));
}

#[tokio::test]
async fn a_restarted_worker_that_never_reports_is_not_left_in_backoff() {
    let r = Registry::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let runs2 = runs.clone();
    r.spawn("quiet", OnFailure::Restart, move |_ctx| {
        let n = runs2.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                return Err("first run fails".to_string());
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    assert!(until(5, || runs.load(Ordering::SeqCst) == 2).await);
    assert!(until(5, || status(&r, "quiet").state == WorkerState::Starting).await);
    assert_eq!(status(&r, "quiet").restarts, 1);
}

#[test]
fn backoff_doubles_to_a_cap_and_resets_after_a_healthy_run() {
    let mut d = Duration::ZERO;
    let mut seen = vec![];
    for _ in 0..12 {
        d = next_backoff(d, Duration::from_millis(5));
        seen.push(d.as_millis());
    }
    assert_eq!(&seen[..4], &[100, 200, 400, 800]);
    assert_eq!(*seen.last().unwrap(), 30_000);
    assert_eq!(next_backoff(d, Duration::from_secs(61)), BACKOFF_MIN);
}
