//! Anti-entropy's messages (kind `tree.op`, protocol 5): a replica's tree digests and leaf
//! items for a peer comparing with it, its sync status, and the operator's "start a round now"
//! and rate change, which `POST /cluster/repair` and `PUT /cluster/repair/rate` send to every
//! member.

use crate::ClusterStore;
use ironbucket_api::RepairStatus;
use ironbucket_rpc::{Kind, Message};
use ironbucket_store::{Digest, Error, Result, TreeItem};
use serde::{Deserialize, Serialize};

/// A request to a peer's anti-entropy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum TreeAsk {
    /// The non-empty digests of `class` at `level` with an index in `from..=to`. Refused unless
    /// the peer's tree follows the placement with this fingerprint.
    Cells {
        fingerprint: u64,
        class: u64,
        level: u8,
        from: u32,
        to: u32,
    },
    /// The items of `class` in these leaves (at most [`MAX_LEAVES`]).
    Leaves {
        fingerprint: u64,
        class: u64,
        leaves: Vec<u32>,
    },
    /// This node's sync status.
    Status,
    /// Start a round now.
    Start,
    /// Set the copy bandwidth limit (bytes per second, 0: none).
    Rate(u64),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum TreeAnswer {
    Cells(Vec<(u32, Digest)>),
    Items(Vec<TreeItem>),
    Status(Box<RepairStatus>),
    Done,
}

/// Leaves asked for in one request (their items travel in one answer).
pub(crate) const MAX_LEAVES: usize = 32;

impl Message for TreeAsk {
    const KIND: Kind = Kind::TreeOp;
    type Reply = Result<TreeAnswer>;
}

impl ClusterStore {
    /// Answers a peer's [`TreeAsk`].
    pub(crate) async fn serve_tree(&self, ask: TreeAsk) -> Result<TreeAnswer> {
        match ask {
            TreeAsk::Cells {
                fingerprint,
                class,
                level,
                from,
                to,
            } => {
                self.same_placement(fingerprint)?;
                Ok(TreeAnswer::Cells(self.local.tree_cells(class, level, from, to).await?))
            }
            TreeAsk::Leaves {
                fingerprint,
                class,
                leaves,
            } => {
                let sets = self.same_placement(fingerprint)?;
                if leaves.len() > MAX_LEAVES {
                    return Err(Error::InvalidArgument(format!(
                        "at most {MAX_LEAVES} leaves per request, not {}",
                        leaves.len()
                    )));
                }
                Ok(TreeAnswer::Items(self.leaf_items(&sets, class, &leaves).await?))
            }
            TreeAsk::Status => Ok(TreeAnswer::Status(Box::new(self.repair_status().await))),
            TreeAsk::Start => {
                self.sync.force.store(true, std::sync::atomic::Ordering::Relaxed);
                self.sync.wake.notify_one();
                Ok(TreeAnswer::Done)
            }
            TreeAsk::Rate(bytes) => {
                self.sync.set_rate(bytes);
                Ok(TreeAnswer::Done)
            }
        }
    }

    /// This node's items of `class` in `leaves`.
    pub(crate) async fn leaf_items(
        &self,
        sets: &ironbucket_cluster::ReplicaSets,
        class: u64,
        leaves: &[u32],
    ) -> Result<Vec<TreeItem>> {
        let mut out = Vec::new();
        for leaf in leaves {
            let mut items = self.local.tree_leaf(*leaf).await?;
            items.retain(|i| sets.class_of(i.pos) == class);
            out.extend(items);
        }
        Ok(out)
    }

    /// The installed replica sets, if this node's tree follows the placement `fingerprint`
    /// names (else the two cannot compare: a layout change is being taken in).
    fn same_placement(&self, fingerprint: u64) -> Result<std::sync::Arc<ironbucket_cluster::ReplicaSets>> {
        match self.sync.installed() {
            Some(s) if s.fingerprint() == fingerprint => Ok(s),
            Some(_) => Err(Error::Unavailable(
                "this node's anti-entropy tree follows another placement layout (a layout change is being taken in)"
                    .into(),
            )),
            None => Err(Error::Unavailable(
                "this node's anti-entropy tree is not ready yet".into(),
            )),
        }
    }
}
