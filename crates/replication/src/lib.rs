//! [`ClusterStore`]: the `ObjectStore` of a node in a cluster. Buckets and their settings are
//! agreed through the control plane (Raft): creating a bucket or changing a policy through any
//! node is committed by a majority and in force on every reachable node when the call returns;
//! two clients creating the same bucket through different nodes get exactly one success.
//! Each node keeps the agreed bucket list materialized in its local metadata, where the object
//! operations find it.
//!
//! Objects are replicated: each key lives on the replication factor's worth of nodes chosen by
//! the placement ring, and any node coordinates any request at its consistency level
//! ([`coordinator`]); listings gather every member's keys ([`scatter`]).

mod cas;
mod coordinator;
mod lifecycle;
pub mod listing;
mod locate;
pub mod quorum;
mod reach;
mod readiness;
mod reseal;
mod scatter;
#[cfg(test)]
mod sim;
mod sync;
mod wire;

pub use coordinator::{Backlog, HandoffConfig, HandoffStats};
pub use lifecycle::LifecyclePass;
pub use locate::{Location, NodeCopy};
pub use reseal::ResealReport;
pub use sync::SyncConfig;
pub use sync::absent::JOB as REREPLICATE_JOB;

use async_trait::async_trait;
use ironbucket_consensus::{Command, ControlPlane, Outcome};
use ironbucket_meta::{BucketRecord, KeyRecord, ObjectLockConfig, Quota, Retention};
use ironbucket_runtime::{OnFailure, Registry, WorkerCtx};
use ironbucket_store::*;
use ironbucket_types::{now_millis, validate_bucket_name};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Says whether the failure detector reports a node down (by name).
pub type DownCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Says why this node must not stamp writes now (its clock runs ahead of its peers'), if so.
pub type ClockCheck = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// What a single node's data directory brings into the cluster it becomes the first node of
/// (`FROM_STANDALONE`): its buckets with every setting, and its access keys (secrets sealed with
/// the cluster's key, see [`LocalStore::standalone_keys`]). Each is proposed once this node is a
/// member, unless the cluster has one of that name already.
#[derive(Debug, Default)]
pub struct Standalone {
    pub buckets: Vec<BucketRecord>,
    pub keys: Vec<KeyRecord>,
}

/// The object store of a cluster node.
pub struct ClusterStore {
    local: Arc<LocalStore>,
    cp: Arc<ControlPlane>,
    /// The placement rings of the layouts in force (and a few before), built once each.
    ring: Mutex<Vec<Arc<ironbucket_cluster::Ring>>>,
    /// The failure detector, once it runs: replicas it reports down are skipped at once.
    down: OnceLock<DownCheck>,
    /// Whether this node's clock is fit to stamp writes (set by the server from what its peers'
    /// RPC credentials show).
    clock_check: OnceLock<ClockCheck>,
    /// This store itself, for background work (read repair, replica transfers).
    me: OnceLock<Weak<ClusterStore>>,
    /// Read repairs done and failed since the node started.
    repairs: Repairs,
    /// Hinted handoff: its bounds (set once by the server) and its figures.
    handoff_cfg: OnceLock<coordinator::HandoffConfig>,
    backlog: Backlog,
    handoff: coordinator::HandoffStats,
    /// Anti-entropy: its settings, the placement its tree follows, and its figures.
    sync: sync::AntiEntropy,
    /// Data moving between layout versions: this node's part.
    moves: sync::Mover,
    /// Conditional writes: this replica's promises and staged values (ADR 0015).
    cas: cas::acceptor::Acceptor,
    /// Pings under way to replicas known down, asked again before a request fails for want
    /// of them.
    rechecks: reach::Rechecks,
}

/// Counts of read repairs: object versions copied to a stale replica, metadata merged into
/// one, and repairs that failed.
#[derive(Debug, Default)]
pub struct Repairs {
    pub objects: std::sync::atomic::AtomicU64,
    pub metadata: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
}

impl Repairs {
    pub(crate) fn count(&self, which: &std::sync::atomic::AtomicU64) {
        which.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn unavailable(e: ironbucket_consensus::Error) -> Error {
    match e {
        ironbucket_consensus::Error::NoQuorum(m) => Error::Unavailable(format!(
            "Cluster metadata is read-only: {m}. Buckets and their settings cannot change until a majority of the voting nodes is reachable"
        )),
        other => Error::Unavailable(other.to_string()),
    }
}

impl ClusterStore {
    /// [`ClusterStore::new_in`] with a worker registry of its own (tests).
    pub fn new(local: Arc<LocalStore>, cp: Arc<ControlPlane>) -> Arc<Self> {
        Self::new_in(local, cp, &Registry::new())
    }

    /// Wraps the node's local store and starts keeping its bucket table in line with the
    /// control plane (the worker `cluster.materialize` in `workers`).
    pub fn new_in(local: Arc<LocalStore>, cp: Arc<ControlPlane>, workers: &Registry) -> Arc<Self> {
        Self::with_import(local, cp, workers, Standalone::default())
    }

    /// [`ClusterStore::new_in`] for a data directory that was a single node's: the buckets of
    /// `import` (with every setting) are proposed to the cluster once this node is a member,
    /// before its bucket table is first made to follow the cluster's (which would drop local
    /// buckets the cluster does not know).
    pub fn with_import(
        local: Arc<LocalStore>,
        cp: Arc<ControlPlane>,
        workers: &Registry,
        import: Standalone,
    ) -> Arc<Self> {
        let cas = cas::acceptor::Acceptor::open(
            &local.config().data_dir,
            local.clock().max_ahead_ms(),
            local.config().storage.fsync,
        );
        let s = Arc::new(Self {
            cas,
            local,
            cp,
            ring: Mutex::new(Vec::new()),
            down: OnceLock::new(),
            clock_check: OnceLock::new(),
            me: OnceLock::new(),
            repairs: Repairs::default(),
            handoff_cfg: OnceLock::new(),
            backlog: Backlog::default(),
            handoff: Default::default(),
            sync: Default::default(),
            moves: Default::default(),
            rechecks: Default::default(),
        });
        let _ = s.me.set(Arc::downgrade(&s));
        s.guard_tombstones();
        s.heal_corruption();
        let me = Arc::downgrade(&s);
        workers.spawn("cluster.anti-entropy", OnFailure::Restart, move |ctx| {
            Self::anti_entropy_loop(me.clone(), ctx)
        });
        let me = Arc::downgrade(&s);
        workers.spawn("cluster.rebalance", OnFailure::Restart, move |ctx| {
            Self::rebalance_loop(me.clone(), ctx)
        });
        let me = Arc::downgrade(&s);
        workers.spawn("cluster.rereplicate", OnFailure::Restart, move |ctx| {
            Self::absence_loop(me.clone(), ctx)
        });
        let me = Arc::downgrade(&s);
        let import = std::sync::Mutex::new(Some(import));
        workers.spawn("cluster.materialize", OnFailure::Restart, move |ctx| {
            let pending = import
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_default();
            Self::materialize(me.clone(), ctx, pending)
        });
        let me = Arc::downgrade(&s);
        workers.spawn("cluster.cas-sweep", OnFailure::Restart, move |ctx| {
            Self::cas_sweep_loop(me.clone(), ctx)
        });
        let me = Arc::downgrade(&s);
        workers.spawn("cluster.reachability", OnFailure::Restart, move |ctx| {
            Self::reach_loop(me.clone(), ctx)
        });
        let me = Arc::downgrade(&s);
        workers.spawn("cluster.handoff", OnFailure::Restart, move |ctx| {
            Self::handoff_loop(me.clone(), ctx)
        });
        if s.local.config().local_lifecycle {
            tracing::warn!(
                "the local store applies lifecycle rules itself: the cluster's lifecycle worker is not started"
            );
        } else {
            let me = Arc::downgrade(&s);
            workers.spawn("cluster.lifecycle", OnFailure::Restart, move |ctx| {
                Self::lifecycle_loop(me.clone(), ctx)
            });
        }
        s
    }

    /// Applies the buckets' lifecycle rules to the keys this node is the primary replica of,
    /// every `LIFECYCLE_INTERVAL_SECS`.
    async fn lifecycle_loop(me: Weak<Self>, ctx: WorkerCtx) -> std::result::Result<(), String> {
        loop {
            let Some(s) = me.upgrade() else { return Ok(()) };
            let interval = s.local.config().lifecycle_interval;
            ctx.busy();
            match s.run_lifecycle(&ctx).await {
                Ok(p) => tracing::debug!(?p, "lifecycle pass done"),
                Err(e) => ctx.note_error(format!("lifecycle pass failed: {e}")),
            }
            ctx.unit_done();
            drop(s);
            ctx.sleep(interval).await;
        }
    }

    /// Proposes a standalone data directory's buckets to the cluster once this node is a member
    /// and the cluster can commit (retrying until then). A bucket the cluster already has is
    /// left as the cluster has it, and logged.
    async fn import_standalone(me: &Weak<Self>, ctx: &WorkerCtx, import: Standalone) {
        let Standalone { buckets, keys } = import;
        loop {
            let Some(s) = me.upgrade() else { return };
            // Not `ready()`: that waits for the bucket table this import comes before.
            if s.control_ready().is_ok() {
                let mut failed = false;
                for b in &buckets {
                    if s.cp.with_state(|st| st.buckets.contains_key(&b.name)) {
                        continue;
                    }
                    let cmd = Command::CreateBucket {
                        record: b.clone().into(),
                        owner: None,
                    };
                    match s.cp.propose(cmd).await {
                        Ok(Outcome::Done) => tracing::info!(bucket = %b.name, "standalone bucket joined the cluster"),
                        Ok(Outcome::BucketExists { .. }) => {
                            tracing::warn!(bucket = %b.name, "the cluster has a bucket of this name already: its settings stay the cluster's, this node's objects in it are merged")
                        }
                        Ok(other) => {
                            tracing::warn!(bucket = %b.name, outcome = ?other, "standalone bucket not imported")
                        }
                        Err(e) => {
                            failed = true;
                            ctx.note_error(format!("cannot import bucket {} yet: {e}", b.name));
                        }
                    }
                }
                // Then the access keys (their bucket permissions name the buckets above); one the
                // cluster knows already keeps the cluster's record.
                for k in &keys {
                    if s.cp.with_state(|st| st.keys.contains_key(&k.access_key)) {
                        continue;
                    }
                    match s
                        .cp
                        .propose(Command::PutKey {
                            record: k.clone().into(),
                        })
                        .await
                    {
                        Ok(_) => tracing::info!(access_key = %k.access_key, "standalone access key joined the cluster"),
                        Err(e) => {
                            failed = true;
                            ctx.note_error(format!("cannot import access key {} yet: {e}", k.access_key));
                        }
                    }
                }
                if !failed {
                    ctx.progress(format!(
                        "imported {} standalone bucket(s) and {} access key(s)",
                        buckets.len(),
                        keys.len()
                    ));
                    return;
                }
            }
            drop(s);
            ctx.sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// Sets the bounds of the hints this node keeps (once, at start).
    pub fn set_handoff(&self, cfg: HandoffConfig) {
        let _ = self.handoff_cfg.set(cfg);
    }

    /// Hinted handoff's figures (`/metrics`, `/cluster/metrics/replication`).
    pub fn handoff(&self) -> &HandoffStats {
        &self.handoff
    }

    /// Read repairs done and failed since the node started (`/metrics`).
    pub fn repairs(&self) -> &Repairs {
        &self.repairs
    }

    /// Replica requests in flight from this node (asynchronous replication's lag).
    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    /// Lets the coordinator skip replicas the failure detector reports down instead of waiting
    /// for their timeouts. Set once.
    pub fn set_down_check(&self, down: DownCheck) {
        let _ = self.down.set(down);
    }

    /// Lets the coordinator refuse to stamp writes while this node's clock runs ahead of its
    /// peers' (its stamps would be refused by them, and its own copy would win over later
    /// writes). Set once.
    pub fn set_clock_check(&self, check: ClockCheck) {
        let _ = self.clock_check.set(check);
    }

    /// Why this node stamps no writes now (its clock runs ahead of its peers'), if it does not.
    pub fn stamps_refused(&self) -> Option<String> {
        self.clock_check.get().and_then(|c| c())
    }

    /// Applies the agreed bucket list to the local metadata after every change.
    async fn materialize(
        me: std::sync::Weak<Self>,
        ctx: WorkerCtx,
        import: Standalone,
    ) -> std::result::Result<(), String> {
        if !import.buckets.is_empty() || !import.keys.is_empty() {
            Self::import_standalone(&me, &ctx, import).await;
        }
        let Some(s) = me.upgrade() else { return Ok(()) };
        let mut applied = s.cp.applied_watch();
        drop(s);
        // The index this node's tables are known to match; the first round compares everything,
        // later ones apply only the buckets and keys the log changed since.
        let mut synced: Option<u64> = None;
        // Buckets deleted in the cluster but kept here because they still held data: looked at
        // again every round, so they go once they are empty.
        let mut kept_here: std::collections::BTreeSet<String> = Default::default();
        // After a failed round, the wait before the next (doubling to 5 s): it is tried again
        // whether or not the log moves on, so a disk error does not leave this node without a
        // bucket until the next change in the cluster.
        let mut retry: Option<std::time::Duration> = None;
        loop {
            let index = *applied.borrow_and_update();
            let Some(s) = me.upgrade() else { return Ok(()) };
            ctx.busy();
            // Fault injection for tests (`FAILPOINTS=materialize-delay=return(MS)`, builds with
            // the `failpoints` feature only): this node writes the cluster's buckets and keys to
            // its own metadata MS late, as a node that has just joined or is busy would.
            #[cfg(feature = "failpoints")]
            if let Some(ms) = fail::eval("materialize-delay", |a| a.and_then(|v| v.parse::<u64>().ok())).flatten() {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            let result = s.materialize_round(synced, &kept_here).await;
            match result {
                Ok(kept) => {
                    for b in &kept {
                        if !kept_here.contains(b) {
                            tracing::warn!(bucket = %b, "bucket was deleted in the cluster but still holds data on this node; kept locally");
                        }
                    }
                    kept_here = kept.into_iter().collect();
                    synced = Some(index);
                    retry = None;
                    s.cp.set_materialized(index);
                    ctx.unit_done();
                    ctx.progress(format!("applied up to log index {index}"));
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot apply the cluster's buckets and keys to local metadata");
                    ctx.note_error(format!("cannot apply the cluster's buckets and keys: {e}"));
                    retry = Some(retry.map_or(std::time::Duration::from_millis(100), |d| {
                        (d * 2).min(std::time::Duration::from_secs(5))
                    }));
                }
            }
            drop(s);
            ctx.idle();
            match retry {
                Some(wait) => {
                    tokio::select! {
                        changed = applied.changed() => if changed.is_err() { return Ok(()) },
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                None => {
                    if applied.changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// One round of writing the cluster's buckets and keys to this node's own metadata: the
    /// changes since log index `synced` (and the buckets kept here), or everything. The buckets
    /// deleted in the cluster but kept here (they hold data).
    async fn materialize_round(
        &self,
        synced: Option<u64>,
        kept_here: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<String>> {
        match synced.and_then(|i| self.cp.changes_since(i)) {
            Some(mut ids) => {
                ids.extend(kept_here.iter().map(|b| format!("b/{b}")));
                let (buckets, keys) = self.cp.with_state(|st| {
                    let buckets: Vec<(String, Option<BucketRecord>)> = ids
                        .iter()
                        .filter_map(|id| id.strip_prefix("b/"))
                        .map(|n| (n.to_string(), st.buckets.get(n).cloned().map(BucketRecord::from)))
                        .collect();
                    let keys: Vec<(String, Option<KeyRecord>)> = ids
                        .iter()
                        .filter_map(|id| id.strip_prefix("k/"))
                        .map(|k| (k.to_string(), st.keys.get(k).cloned().map(KeyRecord::from)))
                        .collect();
                    (buckets, keys)
                });
                self.local.sync_changed(buckets, keys).await
            }
            None => {
                let (buckets, keys): (Vec<BucketRecord>, Vec<KeyRecord>) = self.cp.with_state(|st| {
                    (
                        st.buckets.values().cloned().map(BucketRecord::from).collect(),
                        st.keys.values().cloned().map(KeyRecord::from).collect(),
                    )
                });
                async {
                    let kept = self.local.sync_buckets(buckets).await?;
                    self.local.sync_keys(keys).await?;
                    Ok::<_, Error>(kept)
                }
                .await
            }
        }
    }

    async fn propose(&self, cmd: Command) -> Result<()> {
        match self.cp.propose(cmd).await.map_err(unavailable)? {
            Outcome::Done | Outcome::AlreadyInitialized { .. } | Outcome::Lock { .. } => Ok(()),
            Outcome::BucketExists { .. } => Err(Error::BucketAlreadyOwnedByYou),
            Outcome::NoSuchBucket { .. } => Err(Error::NoSuchBucket),
            Outcome::NoSuchMember { name } => Err(Error::InvalidArgument(format!("no member named {name}"))),
            Outcome::NoSuchAccessKey { access_key } => Err(Error::NoSuchAccessKey(access_key)),
            Outcome::Failed { error } => Err(error),
            Outcome::Refused { reason } => Err(Error::InvalidRequest(reason)),
        }
    }

    async fn change(&self, bucket: &str, change: BucketChange) -> Result<()> {
        change.validate()?;
        if !self.cp.with_state(|s| s.buckets.contains_key(bucket)) {
            return Err(Error::NoSuchBucket);
        }
        self.propose(Command::ChangeBucket {
            name: bucket.to_string(),
            change,
        })
        .await
    }

    async fn create(&self, record: BucketRecord, owner: Option<String>) -> Result<()> {
        validate_bucket_name(&record.name)?;
        if self.cp.with_state(|s| s.buckets.contains_key(&record.name)) {
            return Err(Error::BucketAlreadyOwnedByYou);
        }
        self.propose(Command::CreateBucket {
            record: record.into(),
            owner,
        })
        .await
    }
}

#[async_trait]
impl ObjectStore for ClusterStore {
    async fn create_bucket_as(&self, spec: NewBucket) -> Result<()> {
        let record = spec.record(now_millis());
        let Some(owner) = spec.owner_key else {
            return self.create(record, None).await;
        };
        // One proposal (the bucket, its ACL and its owner's permission) needs every member to
        // apply the owner part: nodes of protocol version 1 do not know it. With any of them
        // (or a member that does not answer) the bucket and the permission take two proposals.
        if self.every_member_speaks(2).await {
            return self.create(record, Some(owner)).await;
        }
        let name = record.name.clone();
        self.create(record, None).await?;
        self.propose(Command::SetKeyPermission {
            access_key: owner,
            bucket: name,
            permission: Some("owner".into()),
        })
        .await
    }

    async fn put_object_lock_configuration(&self, bucket: &str, cfg: ObjectLockConfig) -> Result<()> {
        self.change(bucket, BucketChange::ObjectLock(cfg)).await
    }

    async fn get_object_lock_configuration(&self, bucket: &str) -> Result<ObjectLockConfig> {
        self.local.get_object_lock_configuration(bucket).await
    }

    async fn put_object_retention(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        retention: Option<Retention>,
        bypass_governance: bool,
    ) -> Result<()> {
        let change = MetaChange::Retention {
            retention,
            bypass: bypass_governance,
        };
        self.cas_lock_change(bucket, key, version_id, change).await
    }

    async fn get_object_retention(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<Retention> {
        let meta = self.meta_read(bucket, key, version_id).await?;
        meta.retention.value.ok_or(Error::NoSuchObjectLockConfiguration)
    }

    async fn put_object_legal_hold(&self, bucket: &str, key: &str, version_id: Option<&str>, on: bool) -> Result<()> {
        self.cas_lock_change(bucket, key, version_id, MetaChange::LegalHold(on))
            .await
    }

    async fn get_object_legal_hold(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<bool> {
        Ok(self.meta_read(bucket, key, version_id).await?.legal_hold.value)
    }

    async fn head_bucket(&self, bucket: &str) -> Result<BucketInfo> {
        self.local.head_bucket(bucket).await
    }

    async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        if !self.cp.with_state(|s| s.buckets.contains_key(bucket)) {
            return Err(Error::NoSuchBucket);
        }
        // Empty on every member (a member that cannot answer might hold objects).
        let (answers, failed) = self
            .ask_all(&wire::InUse {
                bucket: bucket.to_string(),
            })
            .await;
        if answers.iter().any(|(_, in_use)| *in_use) {
            return Err(Error::BucketNotEmpty);
        }
        if let Some((node, e)) = failed.into_iter().next() {
            return Err(Error::Unavailable(format!(
                "cannot tell whether the bucket is empty on every node ({node}: {e})"
            )));
        }
        self.propose(Command::DeleteBucket {
            name: bucket.to_string(),
        })
        .await
    }

    async fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        Ok(self.cp.with_state(|s| {
            s.buckets
                .values()
                .map(|b| BucketInfo {
                    name: b.name.clone(),
                    created: b.created,
                })
                .collect()
        }))
    }

    async fn put_bucket_tagging(&self, bucket: &str, tags: Vec<Tag>) -> Result<()> {
        self.change(bucket, BucketChange::tags(Some(tags))).await
    }

    async fn get_bucket_tagging(&self, bucket: &str) -> Result<Vec<Tag>> {
        self.local.get_bucket_tagging(bucket).await
    }

    async fn delete_bucket_tagging(&self, bucket: &str) -> Result<()> {
        self.change(bucket, BucketChange::Tags(None)).await
    }

    async fn put_object(&self, req: PutObject, body: ByteStream) -> Result<ObjectInfo> {
        self.put(req, body).await
    }

    async fn get_object(&self, req: GetObject) -> Result<GetObjectOutput> {
        self.get(req).await
    }

    async fn head_object(&self, req: GetObject) -> Result<ObjectInfo> {
        self.head(req).await
    }

    async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        bypass_governance: bool,
    ) -> Result<DeleteResult> {
        self.delete(bucket, key, version_id, bypass_governance).await
    }

    async fn delete_object_if_match(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        bypass_governance: bool,
        if_match: &[String],
    ) -> Result<DeleteResult> {
        self.cas_delete(bucket, key, version_id, bypass_governance, if_match)
            .await
    }

    async fn delete_objects(
        &self,
        bucket: &str,
        keys: Vec<(String, Option<String>)>,
        bypass_governance: bool,
    ) -> Result<Vec<Result<DeleteResult>>> {
        if keys.len() > 1000 {
            return Err(Error::InvalidRequest(
                "a DeleteObjects request may name at most 1000 keys".into(),
            ));
        }
        if !self.cp.with_state(|s| s.buckets.contains_key(bucket)) {
            return Err(Error::NoSuchBucket);
        }
        use futures::StreamExt;
        Ok(futures::stream::iter(keys)
            .map(|(k, v)| async move { self.delete(bucket, &k, v.as_deref(), bypass_governance).await })
            .buffered(16)
            .collect()
            .await)
    }

    async fn put_bucket_versioning(&self, bucket: &str, status: &str) -> Result<()> {
        self.change(bucket, BucketChange::Versioning(status.to_string())).await
    }

    async fn get_bucket_versioning(&self, bucket: &str) -> Result<Option<String>> {
        self.local.get_bucket_versioning(bucket).await
    }

    async fn list_object_versions(&self, bucket: &str, query: VersionListQuery) -> Result<VersionListing> {
        self.list_versions(bucket, query).await
    }

    async fn put_bucket_lifecycle(&self, bucket: &str, rules: Vec<LifecycleRule>) -> Result<()> {
        self.change(bucket, BucketChange::Lifecycle(Some(rules))).await
    }

    async fn get_bucket_lifecycle(&self, bucket: &str) -> Result<Vec<LifecycleRule>> {
        self.local.get_bucket_lifecycle(bucket).await
    }

    async fn delete_bucket_lifecycle(&self, bucket: &str) -> Result<()> {
        self.change(bucket, BucketChange::Lifecycle(None)).await
    }

    async fn put_bucket_cors(&self, bucket: &str, rules: Vec<CorsRule>) -> Result<()> {
        self.change(bucket, BucketChange::Cors(Some(rules))).await
    }

    async fn get_bucket_cors(&self, bucket: &str) -> Result<Vec<CorsRule>> {
        self.local.get_bucket_cors(bucket).await
    }

    async fn delete_bucket_cors(&self, bucket: &str) -> Result<()> {
        self.change(bucket, BucketChange::Cors(None)).await
    }

    async fn copy_object(&self, req: CopyObject) -> Result<ObjectInfo> {
        self.copy(req).await
    }

    async fn put_object_tagging(&self, bucket: &str, key: &str, tags: Vec<Tag>) -> Result<()> {
        validate_tags(&tags, 10)?;
        let tags = tags.into_iter().map(|t| (t.key, t.value)).collect();
        self.meta_write(bucket, key, None, MetaChange::Tags(tags)).await
    }

    async fn get_object_tagging(&self, bucket: &str, key: &str) -> Result<Vec<Tag>> {
        let meta = self.meta_read(bucket, key, None).await?;
        Ok(meta
            .tags
            .value
            .into_iter()
            .map(|(key, value)| Tag { key, value })
            .collect())
    }

    async fn delete_object_tagging(&self, bucket: &str, key: &str) -> Result<()> {
        self.meta_write(bucket, key, None, MetaChange::Tags(Vec::new())).await
    }

    async fn list_objects(&self, bucket: &str, query: ListQuery) -> Result<ListPage> {
        self.list(bucket, query).await
    }

    async fn create_multipart_upload(&self, req: CreateMultipart) -> Result<String> {
        self.create_upload(req).await
    }

    async fn upload_part(&self, req: UploadPart, body: ByteStream) -> Result<PartInfo> {
        self.part(req, body).await
    }

    async fn upload_part_copy(&self, req: UploadPartCopy) -> Result<PartInfo> {
        self.part_copy(req).await
    }

    async fn complete_multipart_upload(&self, req: CompleteMultipart) -> Result<ObjectInfo> {
        self.complete(req).await
    }

    async fn abort_multipart_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        let targets = self.targets(bucket, key)?;
        let op = wire::Abort {
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id: upload_id.to_string(),
        };
        self.write_all(&targets, self.level(true), op, None).await
    }

    async fn list_parts(&self, req: ListParts) -> Result<ListPartsPage> {
        self.parts(req).await
    }

    async fn list_multipart_uploads(&self, bucket: &str, query: UploadListQuery) -> Result<UploadListPage> {
        self.list_uploads(bucket, query).await
    }

    async fn create_key(&self, name: &str) -> Result<(KeyInfo, String)> {
        let (record, secret) = self.local.new_key_record(name)?;
        let access_key = record.access_key.clone();
        self.propose(Command::PutKey { record: record.into() }).await?;
        let info = self
            .local
            .list_keys()
            .await?
            .into_iter()
            .find(|k| k.access_key == access_key)
            .ok_or_else(|| Error::Internal(format!("key {access_key} was agreed but is not in force here")))?;
        Ok((info, secret))
    }

    async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        self.local.list_keys().await
    }

    async fn set_key_enabled(&self, access_key: &str, enabled: bool) -> Result<()> {
        self.propose(Command::SetKeyEnabled {
            access_key: access_key.to_string(),
            enabled,
        })
        .await
    }

    async fn delete_key(&self, access_key: &str) -> Result<()> {
        self.propose(Command::DeleteKey {
            access_key: access_key.to_string(),
        })
        .await
    }

    async fn set_key_permission(&self, access_key: &str, bucket: &str, permission: Option<Permission>) -> Result<()> {
        if permission.is_some() && !self.cp.with_state(|s| s.buckets.contains_key(bucket)) {
            return Err(Error::NoSuchBucket);
        }
        self.propose(Command::SetKeyPermission {
            access_key: access_key.to_string(),
            bucket: bucket.to_string(),
            permission: permission.map(|p| p.as_str().to_string()),
        })
        .await
    }

    async fn key_secret(&self, access_key: &str) -> Result<Option<(String, KeyInfo)>> {
        self.local.key_secret(access_key).await
    }

    async fn put_bucket_encryption(&self, bucket: &str, algorithm: Option<String>) -> Result<()> {
        // Every node must hold the master key; this one at least does.
        self.local.sse_check(algorithm.as_deref())?;
        self.change(bucket, BucketChange::Encryption(algorithm)).await
    }

    async fn get_bucket_encryption(&self, bucket: &str) -> Result<Option<String>> {
        self.local.get_bucket_encryption(bucket).await
    }

    async fn set_bucket_quota(&self, bucket: &str, quota: Option<Quota>) -> Result<()> {
        self.change(bucket, BucketChange::Quota(quota)).await
    }

    async fn bucket_usage(&self, bucket: &str) -> Result<BucketUsage> {
        self.local.bucket_usage(bucket).await
    }

    fn record_request(&self, bucket: &str, refused: bool) {
        self.local.record_request(bucket, refused)
    }

    async fn put_bucket_policy(&self, bucket: &str, policy: Option<String>) -> Result<()> {
        self.change(bucket, BucketChange::Policy(policy)).await
    }

    async fn put_bucket_acl(&self, bucket: &str, acl: Acl) -> Result<()> {
        self.change(bucket, BucketChange::Acl(acl)).await
    }

    async fn put_public_access_block(&self, bucket: &str, block: Option<PublicAccessBlock>) -> Result<()> {
        self.change(bucket, BucketChange::PublicAccessBlock(block)).await
    }

    async fn bucket_access(&self, bucket: &str) -> Result<BucketAccess> {
        self.local.bucket_access(bucket).await
    }

    async fn put_object_acl(&self, bucket: &str, key: &str, version_id: Option<&str>, acl: Acl) -> Result<()> {
        self.meta_write(bucket, key, version_id, MetaChange::Acl(acl)).await
    }

    async fn get_object_acl(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<Option<Acl>> {
        Ok(self.meta_read(bucket, key, version_id).await?.acl.value)
    }

    async fn usage(&self) -> Result<Usage> {
        self.local.usage().await
    }
}
