//! Per-request hints from the front end to the store, carried in task-local context so that
//! the `ObjectStore` methods keep their S3 shape: the S3 layer runs each request inside
//! [`with_consistency`] when the client sent `x-ironbucket-consistency`; a cluster store reads
//! it with [`requested_consistency`] (a single node has nothing to choose and ignores it).

use ironbucket_types::Consistency;
use std::future::Future;

tokio::task_local! {
    static CONSISTENCY: Option<Consistency>;
}

/// Runs `f` with the client's consistency level in force.
pub async fn with_consistency<F: Future>(level: Option<Consistency>, f: F) -> F::Output {
    CONSISTENCY.scope(level, f).await
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
}
