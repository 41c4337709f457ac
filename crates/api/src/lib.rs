//! The admin HTTP API's contract: every request body and response body of `/health`,
//! `/workers`, `/keys`, `/buckets` and `/cluster/*`, in one place. `ironbucket-admin` serializes
//! these and `ironbucket-cli` deserializes the same types, so the two cannot drift apart.
//!
//! These are wire types: the server's internal types (control state, store records) convert
//! into them, and may change without changing the API. Depends only on serde and the worker
//! status of `ironbucket-runtime`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use ironbucket_runtime::{OnFailure, WorkerState, WorkerStatus};

/// Every error answer of the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `GET /health` and `GET /cluster/health`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, `unavailable` (the store does not answer) or `failed` (a fatal worker died).
    pub status: String,
    pub node_id: String,
    pub version: String,
    pub uptime_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<HealthCluster>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageFigures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The fatal worker that died, when `status` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at_ms: Option<u64>,
    /// `/cluster/health` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockReport>,
    /// `/cluster/health` only: what an operator should look at (a peer's clock, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCluster {
    pub name: String,
    pub id: String,
    pub raft_state: String,
    pub leader: Option<String>,
    pub members: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageFigures {
    pub objects: u64,
    pub used_bytes: u64,
    pub disk_total_bytes: u64,
    pub disk_free_bytes: u64,
}

/// This node's clock bound and what it has seen of its peers' clocks and protocol versions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockReport {
    /// The node protocol version this node speaks, and the oldest it still speaks.
    #[serde(default)]
    pub protocol_version: u32,
    #[serde(default)]
    pub min_protocol_version: u32,
    /// Remote stamps further ahead of this node's clock are refused.
    pub max_ahead_ms: u64,
    /// Stamped writes refused since start.
    pub stamps_refused: u64,
    pub peers: Vec<PeerClockView>,
    /// Peers whose clock is off by more than `max_ahead_ms`.
    pub skewed_nodes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerClockView {
    pub node: String,
    /// The peer's clock minus this node's, as its last RPC call showed (about 1 s resolution).
    pub offset_ms: i64,
    pub seen_ms_ago: u64,
    /// RPC calls refused because its clock was more than 300 s off.
    pub refused_calls: u64,
    pub beyond_bound: bool,
    /// The newest and oldest node protocol versions its last call stated.
    #[serde(default)]
    pub protocol_version: u32,
    #[serde(default)]
    pub min_protocol_version: u32,
    /// RPC calls refused because this node cannot speak its protocol version.
    #[serde(default)]
    pub refused_protocol_calls: u64,
}

/// `GET /health/ready`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    pub ready: bool,
    pub node_id: String,
    /// Why not, when not.
    pub reasons: Vec<String>,
}

/// `PUT /workers/{name}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetTranquility {
    pub tranquility: u32,
}

/// An access key as `GET /keys` lists it (never its secret), or as `POST /keys` creates it
/// (with the secret, shown only then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    pub access_key: String,
    pub name: String,
    pub created_ms: u64,
    pub enabled: bool,
    /// Bucket name to `read`, `write` or `owner`.
    pub buckets: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
}

/// `POST /keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateKey {
    #[serde(default)]
    pub name: String,
}

/// `PUT /keys/{ak}/buckets/{bucket}`: `read`, `write` or `owner`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPermission {
    pub permission: String,
}

/// The answer of a key change: which key, bucket and permission (null: revoked), or which
/// key was deleted, or its new state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChanged {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Present (null when revoked) for permission changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<Option<String>>,
}

/// A bucket's quota: either limit may be absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub max_bytes: Option<u64>,
    pub max_objects: Option<u64>,
}

/// `GET /buckets/{bucket}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketUsage {
    pub bucket: String,
    pub objects: u64,
    pub bytes: u64,
    pub quota: Option<Quota>,
    /// Requests per month (`YYYY-MM`).
    pub requests_by_month: BTreeMap<String, u64>,
}

/// The answer of `PUT` and `DELETE /buckets/{bucket}/quota`: the quota now in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaSet {
    pub bucket: String,
    pub quota: Option<Quota>,
}

/// `GET /cluster/status`: the control plane as this node sees it, with each member's liveness
/// and load as the failure detector reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node: String,
    pub cluster_name: String,
    pub cluster_id: String,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub raft_state: String,
    pub term: u64,
    pub leader: Option<String>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub layout_version: u64,
    pub replication: ReplicationView,
    pub members: Vec<MemberView>,
    /// Cluster-wide jobs and the node that runs each.
    pub job_leaders: BTreeMap<String, String>,
    /// Lease renewals are answered by the Raft leader without a log entry (every member speaks
    /// node protocol 4).
    #[serde(default)]
    pub leader_leases: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationView {
    pub factor: u32,
    pub strategy: String,
    pub read_consistency: String,
    pub write_consistency: String,
    pub vnodes: u32,
}

/// One member of the cluster (`GET /cluster/nodes` lists them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub name: String,
    pub raft_id: u64,
    pub rpc_addr: String,
    /// `voter` or `learner`.
    pub raft_role: String,
    /// `active`, `draining` or `removed`; `joining` before it is recorded.
    pub state: String,
    pub zone: String,
    pub rack: String,
    pub weight: u32,
    /// `storage` or `gateway` (earlier releases recorded `primary` or `secondary`: storage).
    #[serde(default)]
    pub role: String,
    /// `alive`, `suspect`, `down`, or `unknown` before the failure detector saw it.
    pub liveness: String,
    pub load: Option<LoadView>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadView {
    pub objects: u64,
    pub bytes: u64,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
}

/// `PUT /cluster/replication`: what to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationChange {
    #[serde(default)]
    pub factor: Option<u32>,
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub read_consistency: Option<String>,
    #[serde(default)]
    pub write_consistency: Option<String>,
}

/// `PUT /cluster/nodes/{name}`: what to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChange {
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub rack: Option<String>,
    #[serde(default)]
    pub weight: Option<u32>,
}

/// `POST /cluster/force-recover`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForceRecover {
    #[serde(default)]
    pub node: String,
}

/// `POST /cluster/locks/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequest {
    /// `acquire`, `renew` or `release`.
    #[serde(default)]
    pub op: String,
    #[serde(default)]
    pub holder: String,
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    #[serde(default)]
    pub permits: Option<u32>,
    #[serde(default)]
    pub wait: bool,
    #[serde(default)]
    pub token: u64,
}

/// `POST /cluster/barriers/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarrierRequest {
    #[serde(default)]
    pub participant: String,
    #[serde(default)]
    pub count: Option<u32>,
}

/// One version of a key as one node stores it (`/cluster/locate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVersion {
    pub version_id: String,
    pub etag: String,
    pub size: u64,
    pub last_modified: u64,
    /// Hybrid-logical-clock time of the write: `<ms>.<counter>`, then `@<origin>` when a cluster
    /// coordinator stamped it.
    pub hlc: String,
    pub delete_marker: bool,
}

/// What one node holds of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCopy {
    pub node: String,
    /// Named by the ring as a replica of the key.
    pub replica: bool,
    /// Newest first; empty when the node holds nothing (or could not be asked).
    pub versions: Vec<StoredVersion>,
    /// Why the node could not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /cluster/locate/{bucket}/{key}`: where a key should live and where it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub bucket: String,
    pub key: String,
    pub layout_version: u64,
    pub strategy: String,
    pub replication_factor: usize,
    /// The ring's replica set, primary first.
    pub replicas: Vec<String>,
    /// Every active member: the replicas first (in ring order), then the others by name.
    pub nodes: Vec<NodeCopy>,
}

/// `GET /cluster/metrics/replication`: how this node's replicas are kept up to date.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationMetrics {
    /// Hints this node keeps per replica node (writes it missed, to replay once it is back).
    pub hints_pending: BTreeMap<String, u64>,
    /// Since the node started: hints kept, replayed, dropped for their age, and not kept
    /// because the replica had the maximum.
    pub hints_kept: u64,
    pub hints_replayed: u64,
    pub hints_dropped: u64,
    pub hints_refused: u64,
    /// Read repairs this node coordinated since it started.
    pub read_repairs: ReadRepairs,
    /// Replica requests in flight from this node, per replica node (writes answered at their
    /// level whose other replicas are still being written), and in all.
    #[serde(default)]
    pub replica_writes_in_flight: BTreeMap<String, u64>,
    #[serde(default)]
    pub backlog: u64,
    /// `MAX_REPLICATION_BACKLOG`, and the writes that waited for their other replicas because
    /// the backlog was over it, since the node started.
    #[serde(default)]
    pub max_backlog: u64,
    #[serde(default)]
    pub backlog_waits: u64,
}

/// Read repairs: object versions copied to a stale replica, metadata merged into one, failures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRepairs {
    pub objects: u64,
    pub metadata: u64,
    pub failed: u64,
}

/// `GET /cluster/repair/status`: every member's anti-entropy state, as each reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RepairStatusAll {
    pub nodes: Vec<RepairStatus>,
    /// Members that could not be asked, and why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unreachable: BTreeMap<String, String>,
}

/// One node's anti-entropy: what it pulled from its peers, and how far behind each peer it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RepairStatus {
    pub node: String,
    /// Bandwidth limit of copies (MB/s, 10^6 bytes; 0: none).
    pub rate_mb_per_sec: f64,
    /// How often this node compares its tree with its peers'.
    pub interval_ms: u64,
    /// Comparison rounds since the node started.
    pub rounds: u64,
    /// A round is under way: (replica pairs compared, of).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<(u64, u64)>,
    /// Items (versions, delete markers, tombstones) in this node's tree.
    pub tree_items: u64,
    /// Since the node started: versions copied here with their bodies, bytes copied, tombstones
    /// and markers applied, metadata merged, copies that failed.
    pub objects_copied: u64,
    pub bytes_copied: u64,
    pub deletes_applied: u64,
    pub metadata_merged: u64,
    pub failures: u64,
    /// When the last round ended (ms since the epoch) and how long it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_round_at: Option<u64>,
    pub last_round_ms: u64,
    pub peers: Vec<PeerSync>,
    /// The root of this node's tree for each partition it belongs to: partition id (hex) ->
    /// `<items>:<digest hex>`. Replicas in sync report the same roots.
    #[serde(default)]
    pub roots: BTreeMap<String, String>,
    /// Whether this node compares with its peers (`ANTI_ENTROPY`).
    #[serde(default)]
    pub enabled: bool,
}

/// How this node stands with one peer (over the replica sets both belong to).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSync {
    pub node: String,
    /// Replica sets (partitions) the two share, and how many differed at the last comparison.
    pub partitions: u64,
    pub out_of_sync: u64,
    /// What the peer holds and this node lacks, as of the last comparison (settled writes only).
    pub items_behind: u64,
    pub bytes_behind: u64,
    /// Hints this node keeps for the peer (writes it missed).
    pub hints_pending: u64,
    /// When a round last found the two identical on every shared partition (ms since epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_complete_sync: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `PUT /cluster/repair/rate`: the anti-entropy bandwidth limit, on every member.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RepairRate {
    /// MB/s (10^6 bytes); 0 lifts the limit.
    pub mb_per_sec: f64,
}

/// `POST /cluster/repair` and `PUT /cluster/repair/rate`: which members took the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairStarted {
    pub nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unreachable: BTreeMap<String, String>,
}

/// `GET /cluster/rebalance/status`: the layouts data is still placed by and each node's move.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RebalanceStatus {
    /// The layout in force.
    pub layout_version: u64,
    /// The oldest layout reads still use (equal to `layout_version` when nothing moves).
    pub read_version: u64,
    /// Older layouts data may still be placed by (empty: nothing is moving).
    pub moving_from: Vec<u64>,
    /// Whether placement changes move data at all (every member speaks protocol 6).
    pub moves_enabled: bool,
    /// Nothing is moving and every node has dropped the copies it no longer holds.
    pub done: bool,
    /// Objects moved, bytes moved and the rate, summed over the nodes.
    pub objects_moved: u64,
    pub bytes_moved: u64,
    pub bytes_per_sec: f64,
    /// Fraction of the move done (0 to 1) and the time left at the current rate, when known.
    pub progress: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_secs: Option<u64>,
    pub nodes: Vec<NodeMove>,
    /// Members asked to leave (decommission, removal of a dead node), and why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub leaving: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unreachable: BTreeMap<String, String>,
}

/// One node's part in a move.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeMove {
    pub node: String,
    /// Layout versions: the newest it writes with (older writes settled), the newest whose data
    /// it took in, the oldest it still reads from (as the control plane records them).
    pub acked: u64,
    pub synced: u64,
    pub reading: u64,
    /// What its mover does now.
    pub state: String,
    /// The layout version it is taking data in for (0: none).
    pub target_version: u64,
    /// Nodes it takes data from, and how many it has finished.
    pub sources: u64,
    pub sources_done: u64,
    /// Fraction of the ring scanned at its sources (0 to 1).
    pub progress: f64,
    pub objects_moved: u64,
    pub bytes_moved: u64,
    pub bytes_per_sec: f64,
    /// Keys whose copies it dropped because their data moved to their new owners.
    pub keys_dropped: u64,
    pub failures: u64,
}

/// `GET /cluster/layout`: the layout in force and what each node holds of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayoutView {
    pub version: u64,
    pub strategy: String,
    pub factor: usize,
    /// Older layout versions data still moves from.
    pub moving_from: Vec<u64>,
    pub nodes: Vec<NodeShare>,
}

/// A node's part of a layout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeShare {
    pub name: String,
    pub zone: String,
    pub weight: u32,
    /// Fraction of the keys it holds a replica of (0 to 1).
    pub share: f64,
}

/// `POST /cluster/layout/plan`: a change to weigh before making it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutPlanRequest {
    /// New weights by node name.
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    /// Nodes to drain (take out of the layout).
    #[serde(default)]
    pub drain: Vec<String>,
    /// Nodes to add.
    #[serde(default)]
    pub add: Vec<NodeShare>,
    /// A new replication factor.
    #[serde(default)]
    pub factor: Option<usize>,
}

/// What a proposed layout would do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayoutPlan {
    pub current: LayoutView,
    pub proposed: LayoutView,
    /// Fraction of keys whose replica set would change, and new copies per key.
    pub keys_changing: f64,
    pub copies_per_key: f64,
    /// Objects and bytes the move would copy, estimated from the nodes' gossiped load.
    pub objects_to_copy: u64,
    pub bytes_to_copy: u64,
}

/// What an admin API token may do: `viewer` reads (GET), `operator` also drains, activates,
/// repairs, rebalances and tunes workers, `admin` also removes and decommissions nodes, manages
/// keys, tokens, quotas, replication and the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}: viewer, operator or admin")),
        }
    }
}

/// `POST /tokens`: a new admin token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateToken {
    pub name: String,
    pub role: Role,
}

/// An admin token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Milliseconds since the epoch.
    pub created: u64,
}

/// The answer of `POST /tokens`: the token, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    #[serde(flatten)]
    pub view: TokenView,
    pub token: String,
}

/// `POST /cluster/join-tokens`: a new join token (defaults: one hour, one join).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateJoinToken {
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    #[serde(default)]
    pub uses: Option<u32>,
}

/// A join token as listed (never the token itself). Times in milliseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenView {
    pub id: String,
    pub created: u64,
    pub expires: u64,
    /// Joins it still admits.
    pub uses_left: u32,
    /// Nodes that joined with it.
    pub used_by: Vec<String>,
}

/// The answer of `POST /cluster/join-tokens`: the token, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenCreated {
    #[serde(flatten)]
    pub view: JoinTokenView,
    pub token: String,
}
