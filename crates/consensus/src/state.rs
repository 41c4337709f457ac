//! The control-plane state machine: what the cluster agrees on through Raft, and the pure
//! function that applies one command to it. No IO, no clocks, no randomness: every node applies
//! the same commands in the same order and reaches the same state.

use crate::joining::JoinToken;
use crate::layouts::{LayoutProgress, Leave};
use crate::locks::{LockCmd, LockOutcome, Locks};
use crate::records::{AccessKey, Bucket};
use ironbucket_meta::BucketRecord;
use ironbucket_store::BucketChange;
use ironbucket_types::{Consistency, Strategy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the state's layout, for upgrades.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    Active,
    Draining,
    Removed,
}

/// A node as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub raft_id: u64,
    pub rpc_addr: String,
    pub role: String,
    pub zone: String,
    pub rack: String,
    /// Relative capacity used by placement.
    pub weight: u32,
    pub state: MemberState,
}

/// Cluster-wide settings changeable at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    pub factor: u32,
    pub strategy: Strategy,
    pub read_consistency: Consistency,
    pub write_consistency: Consistency,
    /// Virtual nodes per node of weight 100 on the placement ring (set when the cluster forms;
    /// changing it later moves most objects).
    #[serde(default = "default_vnodes")]
    pub vnodes: u32,
}

/// Virtual nodes per node of weight 100 unless configured.
pub const DEFAULT_VNODES: u32 = 256;

fn default_vnodes() -> u32 {
    DEFAULT_VNODES
}

impl Default for Replication {
    fn default() -> Self {
        Self {
            factor: 1,
            strategy: Strategy::Simple,
            read_consistency: Consistency::Quorum,
            write_consistency: Consistency::Quorum,
            vnodes: DEFAULT_VNODES,
        }
    }
}

/// Everything the control plane agrees on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlState {
    /// Set once by the first command of a new cluster.
    pub cluster_id: String,
    pub name: String,
    pub schema_version: u32,
    pub members: BTreeMap<String, Member>,
    /// Bumped by every change of members, their states, zones or weights.
    pub layout_version: u64,
    pub replication: Replication,
    pub buckets: BTreeMap<String, Bucket>,
    /// Access keys (secrets sealed with the cluster's key-sealing key), by access key id.
    #[serde(default)]
    pub keys: BTreeMap<String, AccessKey>,
    /// Leases, waiters and barriers.
    #[serde(default)]
    pub locks: Locks,
    /// Members whose replacement by a wiped node an operator confirmed.
    #[serde(default)]
    pub replacements: std::collections::BTreeSet<String>,
    /// New leases are leader-renewed (renewals answered by the leader, no log entry): set once
    /// every member spoke protocol 4; from then on a node that speaks less cannot join.
    #[serde(default)]
    pub leader_leases: bool,
    /// Placement changes keep the layouts they replace until the data has moved (set once every
    /// member spoke protocol 6; never undone). See [`crate::layouts`].
    #[serde(default)]
    pub layout_moves: bool,
    /// Layouts data may still be placed by, oldest first (the current one is not in it).
    #[serde(default)]
    pub layout_history: Vec<ironbucket_types::Layout>,
    /// Each member's progress through the layout versions.
    #[serde(default)]
    pub layout_progress: BTreeMap<String, LayoutProgress>,
    /// Members on their way out, and why.
    #[serde(default)]
    pub leaving: BTreeMap<String, Leave>,
    /// Admin API tokens (only their SHA-256), by token id.
    #[serde(default)]
    pub admin_tokens: BTreeMap<String, AdminToken>,
    /// New nodes join only with a join token, as learners (set once every member spoke
    /// protocol 10; never undone). See [`crate::joining`].
    #[serde(default)]
    pub joins_need_tokens: bool,
    /// Join tokens (only their SHA-256), by token id.
    #[serde(default)]
    pub join_tokens: BTreeMap<String, JoinToken>,
}

/// An admin API bearer token: who it is for and what it may do. The token itself is never
/// stored, only the SHA-256 of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminToken {
    pub id: String,
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    pub created: u64,
}

/// The node protocol version from which the control state may carry admin tokens.
pub const ADMIN_TOKENS: u32 = 9;

/// A change to the control state, proposed through Raft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Names the cluster; only the first one takes effect.
    Init {
        cluster_id: String,
        name: String,
        replication: Replication,
    },
    /// Adds a member or updates its address, role, zone, rack or weight.
    UpsertMember {
        member: Member,
    },
    SetMemberState {
        name: String,
        state: MemberState,
    },
    SetReplication {
        replication: Replication,
    },
    /// Creates a bucket; fails if it exists. With `owner`, that access key gets `owner`
    /// permission on it in the same step.
    CreateBucket {
        record: Bucket,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// Changes one setting of a bucket (validated against its current settings on apply).
    ChangeBucket {
        name: String,
        change: BucketChange,
    },
    /// A lock, semaphore or barrier operation.
    Lock {
        cmd: LockCmd,
    },
    /// Adds an admin API token (protocol 9).
    PutAdminToken {
        token: AdminToken,
    },
    /// Revokes an admin API token (protocol 9).
    DeleteAdminToken {
        id: String,
    },
    /// Adds an access key.
    PutKey {
        record: AccessKey,
    },
    SetKeyEnabled {
        access_key: String,
        enabled: bool,
    },
    /// Grants (`Some("read" | "write" | "owner")`) or revokes a key's permission on a bucket.
    SetKeyPermission {
        access_key: String,
        bucket: String,
        permission: Option<String>,
    },
    DeleteKey {
        access_key: String,
    },
    /// An operator confirmed that a wiped node may take this member's place.
    AllowReplace {
        name: String,
    },
    /// The replacement happened (or was withdrawn).
    ReplaceDone {
        name: String,
    },
    /// From now on new leases are leader-renewed (every member speaks protocol 4). Never undone.
    EnableLeaderLeases,
    /// Removes a bucket (its emptiness is checked by the caller).
    DeleteBucket {
        name: String,
    },
    /// From now on placement changes keep the layouts they replace until the data has moved
    /// (every member speaks protocol 6). Never undone.
    EnableLayoutMoves,
    /// A member's progress through the layout versions.
    LayoutTrack {
        node: String,
        progress: LayoutProgress,
    },
    /// A member is to leave once its data has moved (it holds no new data from now on).
    Leave {
        name: String,
        why: Leave,
    },
    /// Back to the oldest layout data is still placed by.
    CancelMove,
    /// From now on new nodes join only with a join token, as learners (every member speaks
    /// protocol 10). Never undone.
    EnableJoinTokens,
    /// Adds a join token (protocol 10).
    PutJoinToken {
        token: JoinToken,
    },
    /// A joiner presented token `id` (its SHA-256 is `hash`) at `now`: spends one use.
    UseJoinToken {
        id: String,
        hash: String,
        node: String,
        now: u64,
    },
    /// Revokes a join token (protocol 10).
    DeleteJoinToken {
        id: String,
    },
    /// An access key's secret sealed again after a cluster secret rotation, if it is still
    /// sealed as `from` (protocol 10).
    ResealKey {
        access_key: String,
        from: String,
        to: String,
    },
}

/// The outcome of applying a command; errors are part of the replicated result so that every
/// node agrees on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    #[default]
    Done,
    /// Init on an already named cluster: nothing changed.
    AlreadyInitialized {
        cluster_id: String,
    },
    BucketExists {
        name: String,
    },
    NoSuchBucket {
        name: String,
    },
    NoSuchMember {
        name: String,
    },
    NoSuchAccessKey {
        access_key: String,
    },
    Lock {
        outcome: LockOutcome,
    },
    /// The change was refused (for example versioning suspended under object lock).
    Failed {
        error: ironbucket_store::Error,
    },
    /// A cluster change was refused, and why.
    Refused {
        reason: String,
    },
}

impl ControlState {
    /// Applies one command. Pure and deterministic.
    pub fn apply(&mut self, cmd: Command) -> Outcome {
        if self.layout_moves && Self::moves_placement(&cmd) {
            return self.apply_with_history(cmd);
        }
        self.apply_plain(cmd)
    }

    /// Applies one command without keeping layout history.
    pub(crate) fn apply_plain(&mut self, cmd: Command) -> Outcome {
        match cmd {
            Command::Init {
                cluster_id,
                name,
                replication,
            } => {
                if !self.cluster_id.is_empty() {
                    return Outcome::AlreadyInitialized {
                        cluster_id: self.cluster_id.clone(),
                    };
                }
                self.cluster_id = cluster_id;
                self.name = name;
                self.schema_version = SCHEMA_VERSION;
                self.replication = replication;
                Outcome::Done
            }
            Command::UpsertMember { member } => {
                if self.members.get(&member.name) != Some(&member) {
                    self.members.insert(member.name.clone(), member);
                    self.layout_version += 1;
                }
                Outcome::Done
            }
            Command::SetMemberState { name, state } => match self.members.get_mut(&name) {
                Some(m) => {
                    if m.state != state {
                        m.state = state;
                        self.layout_version += 1;
                    }
                    // Active again: no longer on its way out.
                    if state == MemberState::Active {
                        self.leaving.remove(&name);
                    }
                    Outcome::Done
                }
                None => Outcome::NoSuchMember { name },
            },
            Command::Lock { cmd } => Outcome::Lock {
                outcome: self.locks.apply(cmd),
            },
            Command::PutAdminToken { token } => {
                if self
                    .admin_tokens
                    .values()
                    .any(|t| t.name == token.name && t.id != token.id)
                {
                    return Outcome::Refused {
                        reason: format!("an admin token named {:?} exists already", token.name),
                    };
                }
                self.admin_tokens.insert(token.id.clone(), token);
                Outcome::Done
            }
            Command::DeleteAdminToken { id } => match self.admin_tokens.remove(&id) {
                Some(_) => Outcome::Done,
                None => Outcome::Refused {
                    reason: format!("no admin token with id {id:?}"),
                },
            },
            Command::PutKey { record } => {
                self.keys.insert(record.access_key.clone(), record);
                Outcome::Done
            }
            Command::SetKeyEnabled { access_key, enabled } => match self.keys.get_mut(&access_key) {
                Some(k) => {
                    k.enabled = enabled;
                    Outcome::Done
                }
                None => Outcome::NoSuchAccessKey { access_key },
            },
            Command::SetKeyPermission {
                access_key,
                bucket,
                permission,
            } => match self.keys.get_mut(&access_key) {
                Some(k) => {
                    match permission {
                        Some(p) => k.buckets.insert(bucket, p),
                        None => k.buckets.remove(&bucket),
                    };
                    Outcome::Done
                }
                None => Outcome::NoSuchAccessKey { access_key },
            },
            Command::DeleteKey { access_key } => match self.keys.remove(&access_key) {
                Some(_) => Outcome::Done,
                None => Outcome::NoSuchAccessKey { access_key },
            },
            Command::AllowReplace { name } => {
                if !self.members.contains_key(&name) {
                    return Outcome::NoSuchMember { name };
                }
                self.replacements.insert(name);
                Outcome::Done
            }
            Command::ReplaceDone { name } => {
                self.replacements.remove(&name);
                Outcome::Done
            }
            Command::EnableLeaderLeases => {
                self.leader_leases = true;
                Outcome::Done
            }
            Command::SetReplication { replication } => {
                self.replication = replication;
                Outcome::Done
            }
            Command::CreateBucket { record, owner } => {
                if self.buckets.contains_key(&record.name) {
                    return Outcome::BucketExists { name: record.name };
                }
                if let Some(ak) = &owner {
                    let Some(k) = self.keys.get_mut(ak) else {
                        return Outcome::NoSuchAccessKey { access_key: ak.clone() };
                    };
                    k.buckets.insert(record.name.clone(), "owner".into());
                }
                // Grants left by an earlier bucket of this name (deleted before deletes revoked).
                self.revoke_grants(&record.name, owner.as_deref());
                self.buckets.insert(record.name.clone(), record);
                Outcome::Done
            }
            Command::ChangeBucket { name, change } => match self.buckets.get_mut(&name) {
                Some(b) => {
                    // Validate on a copy: a refused change leaves the record as it was.
                    let mut next = BucketRecord::from(b.clone());
                    match change.apply(&mut next) {
                        Ok(()) => {
                            *b = Bucket::from(next);
                            Outcome::Done
                        }
                        Err(error) => Outcome::Failed { error },
                    }
                }
                None => Outcome::NoSuchBucket { name },
            },
            Command::DeleteBucket { name } => match self.buckets.remove(&name) {
                Some(_) => {
                    // A new bucket of this name, perhaps someone else's, must not be open to
                    // the keys that had a permission on this one.
                    self.revoke_grants(&name, None);
                    Outcome::Done
                }
                None => Outcome::NoSuchBucket { name },
            },
            Command::EnableLayoutMoves => {
                self.layout_moves = true;
                Outcome::Done
            }
            Command::LayoutTrack { node, progress } => self.track(node, progress),
            Command::Leave { name, why } => self.leave(name, why),
            Command::CancelMove => self.cancel_move(),
            Command::EnableJoinTokens => {
                self.joins_need_tokens = true;
                Outcome::Done
            }
            Command::PutJoinToken { token } => self.put_join_token(token),
            Command::UseJoinToken { id, hash, node, now } => self.use_join_token(&id, &hash, &node, now),
            Command::DeleteJoinToken { id } => self.delete_join_token(&id),
            Command::ResealKey { access_key, from, to } => self.reseal_key(access_key, &from, to),
        }
    }

    /// Keys (all but `keep`) holding a permission on bucket `name`.
    pub fn grantees(&self, name: &str, keep: Option<&str>) -> Vec<String> {
        self.keys
            .iter()
            .filter(|(ak, k)| Some(ak.as_str()) != keep && k.buckets.contains_key(name))
            .map(|(ak, _)| ak.clone())
            .collect()
    }

    fn revoke_grants(&mut self, name: &str, keep: Option<&str>) {
        for ak in self.grantees(name, keep) {
            if let Some(k) = self.keys.get_mut(&ak) {
                k.buckets.remove(name);
            }
        }
    }

    /// Members that are not removed.
    pub fn active_members(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| m.state != MemberState::Removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(name: &str) -> Bucket {
        Bucket {
            name: name.into(),
            created: 1,
            ..Default::default()
        }
    }

    fn member(name: &str, zone: &str) -> Member {
        Member {
            name: name.into(),
            raft_id: 7,
            rpc_addr: "a:1".into(),
            role: "primary".into(),
            zone: zone.into(),
            rack: String::new(),
            weight: 100,
            state: MemberState::Active,
        }
    }

    #[test]
    fn create_bucket_with_an_owner_is_one_step() {
        let mut s = ControlState::default();
        let owner = Some("AK1".to_string());
        // The owner key must exist, or nothing changes.
        assert_eq!(
            s.apply(Command::CreateBucket {
                record: bucket("b"),
                owner: owner.clone()
            }),
            Outcome::NoSuchAccessKey {
                access_key: "AK1".into()
            }
        );
        assert!(s.buckets.is_empty());
        s.keys.insert(
            "AK1".into(),
            AccessKey {
                access_key: "AK1".into(),
                name: "k".into(),
                secret_sealed: String::new(),
                created: 0,
                enabled: true,
                buckets: Default::default(),
            },
        );
        assert_eq!(
            s.apply(Command::CreateBucket {
                record: bucket("b"),
                owner
            }),
            Outcome::Done
        );
        assert!(s.buckets.contains_key("b"));
        assert_eq!(s.keys["AK1"].buckets.get("b").map(String::as_str), Some("owner"));
    }

    /// Security review finding: a key's permission outlived its bucket, so a new bucket of the
    /// same name, created by someone else, was open to the old key.
    #[test]
    fn deleting_a_bucket_revokes_every_grant_on_it() {
        let mut s = ControlState::default();
        for ak in ["AK1", "AK2"] {
            s.keys.insert(
                ak.into(),
                AccessKey {
                    access_key: ak.into(),
                    name: ak.into(),
                    secret_sealed: String::new(),
                    created: 0,
                    enabled: true,
                    buckets: Default::default(),
                },
            );
        }
        let create = |owner: &str| Command::CreateBucket {
            record: bucket("b"),
            owner: Some(owner.into()),
        };
        assert_eq!(s.apply(create("AK1")), Outcome::Done);
        s.keys
            .get_mut("AK2")
            .unwrap()
            .buckets
            .insert("b".into(), "write".into());
        s.keys
            .get_mut("AK2")
            .unwrap()
            .buckets
            .insert("other".into(), "read".into());
        let del = Command::DeleteBucket { name: "b".into() };
        let rows = crate::rows::touched(&s, &del);
        assert!(
            rows.contains(&"k/AK1".to_string()) && rows.contains(&"k/AK2".to_string()),
            "{rows:?}"
        );
        assert_eq!(s.apply(del), Outcome::Done);
        assert!(!s.keys["AK1"].buckets.contains_key("b"));
        assert!(!s.keys["AK2"].buckets.contains_key("b"));
        assert!(s.keys["AK2"].buckets.contains_key("other"));
        // A stale grant (left by an older version) does not survive a new bucket of the name.
        s.keys
            .get_mut("AK1")
            .unwrap()
            .buckets
            .insert("b".into(), "owner".into());
        let create2 = create("AK2");
        assert!(crate::rows::touched(&s, &create2).contains(&"k/AK1".to_string()));
        assert_eq!(s.apply(create2), Outcome::Done);
        assert!(!s.keys["AK1"].buckets.contains_key("b"));
        assert_eq!(s.keys["AK2"].buckets.get("b").map(String::as_str), Some("owner"));
    }

    #[test]
    fn init_only_once() {
        let mut s = ControlState::default();
        let init = |id: &str| Command::Init {
            cluster_id: id.into(),
            name: "c".into(),
            replication: Replication::default(),
        };
        assert_eq!(s.apply(init("one")), Outcome::Done);
        assert_eq!(
            s.apply(init("two")),
            Outcome::AlreadyInitialized {
                cluster_id: "one".into()
            }
        );
        assert_eq!(s.cluster_id, "one");
        assert_eq!(s.schema_version, SCHEMA_VERSION);
    }

    #[test]
    fn buckets_exactly_once() {
        let mut s = ControlState::default();
        assert_eq!(
            s.apply(Command::CreateBucket {
                record: bucket("b"),
                owner: None
            }),
            Outcome::Done
        );
        assert_eq!(
            s.apply(Command::CreateBucket {
                record: bucket("b"),
                owner: None
            }),
            Outcome::BucketExists { name: "b".into() }
        );
        let policy = |p: &str| Command::ChangeBucket {
            name: "b".into(),
            change: BucketChange::Policy(Some(p.into())),
        };
        assert_eq!(s.apply(policy("{}")), Outcome::Done);
        assert_eq!(s.buckets["b"].policy.as_deref(), Some("{}"));
        // A refused change leaves the record untouched and the refusal is the result.
        let lock = Command::ChangeBucket {
            name: "b".into(),
            change: BucketChange::ObjectLock(Default::default()),
        };
        let before = s.buckets["b"].clone();
        assert!(matches!(s.apply(lock), Outcome::Failed { .. }));
        assert_eq!(s.buckets["b"], before);
        assert_eq!(
            s.apply(Command::ChangeBucket {
                name: "x".into(),
                change: BucketChange::Quota(None)
            }),
            Outcome::NoSuchBucket { name: "x".into() }
        );
        assert_eq!(s.apply(Command::DeleteBucket { name: "b".into() }), Outcome::Done);
        assert_eq!(
            s.apply(Command::DeleteBucket { name: "b".into() }),
            Outcome::NoSuchBucket { name: "b".into() }
        );
    }

    #[test]
    fn members_and_layout_version() {
        let mut s = ControlState::default();
        s.apply(Command::UpsertMember {
            member: member("n1", "z1"),
        });
        assert_eq!(s.layout_version, 1);
        s.apply(Command::UpsertMember {
            member: member("n1", "z1"),
        });
        assert_eq!(s.layout_version, 1, "no change, no new layout");
        s.apply(Command::UpsertMember {
            member: member("n1", "z2"),
        });
        assert_eq!(s.layout_version, 2);
        s.apply(Command::SetMemberState {
            name: "n1".into(),
            state: MemberState::Draining,
        });
        assert_eq!(s.layout_version, 3);
        assert_eq!(
            s.apply(Command::SetMemberState {
                name: "zz".into(),
                state: MemberState::Removed
            }),
            Outcome::NoSuchMember { name: "zz".into() }
        );
        assert_eq!(s.active_members().count(), 1);
    }

    #[test]
    fn same_commands_same_state() {
        let cmds = vec![
            Command::CreateBucket {
                record: bucket("a"),
                owner: None,
            },
            Command::UpsertMember {
                member: member("n", "z"),
            },
            Command::CreateBucket {
                record: bucket("b"),
                owner: None,
            },
            Command::DeleteBucket { name: "a".into() },
        ];
        let mut x = ControlState::default();
        let mut y = ControlState::default();
        for c in cmds.clone() {
            x.apply(c);
        }
        for c in cmds {
            y.apply(c);
        }
        assert_eq!(x, y);
        let json = serde_json::to_string(&x).unwrap();
        assert_eq!(serde_json::from_str::<ControlState>(&json).unwrap(), x);
    }
}
