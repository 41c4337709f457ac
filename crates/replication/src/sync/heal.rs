//! Corrupt bodies the scrub finds: the local copy of a version is dropped only when another
//! replica holds the same version (same stamp); anti-entropy then copies it back from there,
//! its checksums verified on the way in.

use crate::ClusterStore;
use crate::coordinator::wire_for;
use ironbucket_store::CorruptVersion;
use std::sync::Arc;

impl ClusterStore {
    /// Installs the scrub's corruption handler in the local store.
    pub(crate) fn heal_corruption(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        self.local.set_corruption_handler(Arc::new(move |item: CorruptVersion| {
            let me = me.clone();
            Box::pin(async move {
                match me.upgrade() {
                    Some(s) => s.another_replica_holds(&item).await,
                    None => false,
                }
            })
        }));
    }

    /// Whether a live replica other than this node holds `item`'s version with its stamp.
    async fn another_replica_holds(&self, item: &CorruptVersion) -> bool {
        let Ok(targets) = self.targets(&item.bucket, &item.key) else {
            return false;
        };
        let g = wire_for(&item.bucket, &item.key, Some(&item.version_id));
        for t in targets.iter().filter(|t| !t.local && !self.is_down(t)) {
            match self.ask(t, &g).await {
                Ok(reply) => {
                    if reply
                        .version
                        .is_some_and(|v| v.hlc == item.hlc && v.origin == item.origin && !v.purged)
                    {
                        return true;
                    }
                }
                Err(e) => tracing::debug!(node = %t.name, error = %e, "replica not asked about a corrupt version"),
            }
        }
        false
    }
}
