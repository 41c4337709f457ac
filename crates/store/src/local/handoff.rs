//! Storage for hinted handoff (the cluster layer decides and replays): the writes a replica
//! missed, kept in this node's metadata until they are replayed or dropped.

use super::LocalStore;
use crate::Result;
use ironbucket_meta::Hint;
use ironbucket_types::Hlc;

impl LocalStore {
    /// Keeps `h` durably; `false` when its replica already has `max_per_node` hints.
    pub async fn keep_hint(&self, h: Hint, max_per_node: u64) -> Result<bool> {
        self.commit(vec![], move |t| Ok(t.put_hint(&h, max_per_node)?)).await
    }

    /// Forgets a hint (replayed, or dropped).
    pub async fn forget_hint(&self, node: &str, hlc: Hlc, origin: u64) -> Result<()> {
        let node = node.to_string();
        self.commit(vec![], move |t| Ok(t.delete_hint(&node, hlc, origin)?))
            .await
    }

    /// `node`'s oldest hints, in the order of the writes' stamps.
    pub async fn hints_for(&self, node: &str, limit: usize) -> Result<Vec<Hint>> {
        let node = node.to_string();
        self.scan(move |m| m.hints_for(&node, limit)).await
    }

    /// Hints pending per replica node.
    pub async fn hint_counts(&self) -> Result<Vec<(String, u64)>> {
        self.scan(|m| m.hint_counts()).await
    }
}
