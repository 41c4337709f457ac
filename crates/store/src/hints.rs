//! Per-request hints from the front end to the store, carried in task-local context so that
//! the `ObjectStore` methods keep their S3 shape: the S3 layer runs each request inside
//! [`with_consistency`] when the client sent `x-ironbucket-consistency`; a cluster store reads
//! it with [`requested_consistency`] (a single node has nothing to choose and ignores it). A
//! store that carries a request out at a higher level than asked (a conditional write at ONE)
//! says so with [`note_upgraded`], and the front end tells the client
//! ([`with_consistency_noted`]).

use ironbucket_types::Consistency;
use std::future::Future;
use std::sync::{Arc, Mutex};

tokio::task_local! {
    static CONSISTENCY: Option<Consistency>;
    static UPGRADED: Arc<Mutex<Option<Consistency>>>;
}

/// Runs `f` with the client's consistency level in force.
pub async fn with_consistency<F: Future>(level: Option<Consistency>, f: F) -> F::Output {
    with_consistency_noted(level, f).await.0
}

/// Runs `f` with the client's consistency level in force; also returns the level the store
/// upgraded the request to, if it did.
pub async fn with_consistency_noted<F: Future>(level: Option<Consistency>, f: F) -> (F::Output, Option<Consistency>) {
    let note = Arc::new(Mutex::new(None));
    let out = UPGRADED.scope(note.clone(), CONSISTENCY.scope(level, f)).await;
    let upgraded = *note.lock().unwrap_or_else(|p| p.into_inner());
    (out, upgraded)
}

/// The store carried the current request out at `level`, higher than the client asked.
pub fn note_upgraded(level: Consistency) {
    let _ = UPGRADED.try_with(|n| *n.lock().unwrap_or_else(|p| p.into_inner()) = Some(level));
}

/// The level the current request asked for, if any.
pub fn requested_consistency() -> Option<Consistency> {
    CONSISTENCY.try_with(|c| *c).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scoped_level_is_seen_inside_only() {
        assert_eq!(requested_consistency(), None);
        let inside = with_consistency(Some(Consistency::All), async { requested_consistency() }).await;
        assert_eq!(inside, Some(Consistency::All));
        assert_eq!(requested_consistency(), None);
    }

    #[tokio::test]
    async fn an_upgrade_is_noted_for_the_front_end() {
        let ((), up) =
            with_consistency_noted(Some(Consistency::One), async { note_upgraded(Consistency::Quorum) }).await;
        assert_eq!(up, Some(Consistency::Quorum));
        let ((), up) = with_consistency_noted(None, async {}).await;
        assert_eq!(up, None);
    }
}
