//! The control state as stored rows, so that applying a command rewrites only what it changed
//! instead of the whole state (which holds every bucket, key and lock). Pure: no IO.
//!
//! Rows: `h` (the header: cluster id and name, members, layout version, replication settings,
//! pending replacements, the last lock token), `b/<bucket>`, `k/<access key>`, `l/<lock>`,
//! `r/<barrier>`, `t/<admin token>`, `j/<join token>`. A row whose part no longer exists is
//! deleted.

use crate::locks::{Barrier, LockState};
use crate::records::{AccessKey, Bucket};
use crate::state::{Command, ControlState, Member, Replication};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The header row's key.
pub const HEADER: &str = "h";

/// Everything but the buckets, keys, locks and barriers: small, rewritten by the commands that
/// change membership, settings or lock tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Header {
    cluster_id: String,
    name: String,
    schema_version: u32,
    members: BTreeMap<String, Member>,
    layout_version: u64,
    replication: Replication,
    replacements: BTreeSet<String>,
    last_token: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    leader_leases: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    layout_moves: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    layout_history: Vec<ironbucket_types::Layout>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    layout_progress: BTreeMap<String, crate::layouts::LayoutProgress>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    leaving: BTreeMap<String, crate::layouts::Leave>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    joins_need_tokens: bool,
}

/// The rows `cmd` may change when applied to `state` (computed before applying it).
pub fn touched(state: &ControlState, cmd: &Command) -> Vec<String> {
    match cmd {
        Command::Init { .. }
        | Command::UpsertMember { .. }
        | Command::SetMemberState { .. }
        | Command::SetReplication { .. }
        | Command::AllowReplace { .. }
        | Command::ReplaceDone { .. }
        | Command::EnableLeaderLeases
        | Command::EnableLayoutMoves
        | Command::LayoutTrack { .. }
        | Command::Leave { .. }
        | Command::CancelMove
        | Command::EnableJoinTokens => vec![HEADER.into()],
        Command::PutJoinToken { token } => {
            let mut v = vec![format!("j/{}", token.id)];
            v.extend(
                state
                    .expired_join_tokens(token.created)
                    .iter()
                    .map(|id| format!("j/{id}")),
            );
            v
        }
        Command::UseJoinToken { id, .. } | Command::DeleteJoinToken { id } => vec![format!("j/{id}")],
        Command::CreateBucket { record, owner } => {
            let mut v = vec![format!("b/{}", record.name)];
            v.extend(owner.iter().map(|ak| format!("k/{ak}")));
            v.extend(
                state
                    .grantees(&record.name, owner.as_deref())
                    .iter()
                    .map(|ak| format!("k/{ak}")),
            );
            v
        }
        Command::ChangeBucket { name, .. } => vec![format!("b/{name}")],
        Command::DeleteBucket { name } => {
            let mut v = vec![format!("b/{name}")];
            v.extend(state.grantees(name, None).iter().map(|ak| format!("k/{ak}")));
            v
        }
        Command::PutKey { record } => vec![format!("k/{}", record.access_key)],
        Command::PutAdminToken { token } => vec![format!("t/{}", token.id)],
        Command::DeleteAdminToken { id } => vec![format!("t/{id}")],
        Command::SetKeyEnabled { access_key, .. }
        | Command::SetKeyPermission { access_key, .. }
        | Command::DeleteKey { access_key }
        | Command::ResealKey { access_key, .. } => vec![format!("k/{access_key}")],
        Command::Lock { cmd } => {
            // Lock commands may hand out a token (kept in the header).
            let mut v = state.locks.touched_by(cmd);
            v.push(HEADER.into());
            v
        }
    }
}

/// Row `id` as stored now; `None` when its part does not exist (the row is deleted).
pub fn encode(state: &ControlState, id: &str) -> Result<Option<Vec<u8>>, serde_json::Error> {
    if id == HEADER {
        let h = Header {
            cluster_id: state.cluster_id.clone(),
            name: state.name.clone(),
            schema_version: state.schema_version,
            members: state.members.clone(),
            layout_version: state.layout_version,
            replication: state.replication.clone(),
            replacements: state.replacements.clone(),
            last_token: state.locks.last_token,
            leader_leases: state.leader_leases,
            layout_moves: state.layout_moves,
            layout_history: state.layout_history.clone(),
            layout_progress: state.layout_progress.clone(),
            leaving: state.leaving.clone(),
            joins_need_tokens: state.joins_need_tokens,
        };
        return serde_json::to_vec(&h).map(Some);
    }
    let Some((kind, name)) = id.split_once('/') else {
        return Ok(None);
    };
    match kind {
        "b" => state.buckets.get(name).map(serde_json::to_vec).transpose(),
        "k" => state.keys.get(name).map(serde_json::to_vec).transpose(),
        "l" => state.locks.locks.get(name).map(serde_json::to_vec).transpose(),
        "r" => state.locks.barriers.get(name).map(serde_json::to_vec).transpose(),
        "t" => state.admin_tokens.get(name).map(serde_json::to_vec).transpose(),
        "j" => state.join_tokens.get(name).map(serde_json::to_vec).transpose(),
        _ => Ok(None),
    }
}

/// Every row of `state` (a snapshot installed, or a store migrated from the whole-state form).
pub fn all(state: &ControlState) -> Result<Vec<(String, Vec<u8>)>, serde_json::Error> {
    let ids = std::iter::once(HEADER.to_string())
        .chain(state.buckets.keys().map(|k| format!("b/{k}")))
        .chain(state.keys.keys().map(|k| format!("k/{k}")))
        .chain(state.locks.locks.keys().map(|k| format!("l/{k}")))
        .chain(state.locks.barriers.keys().map(|k| format!("r/{k}")))
        .chain(state.admin_tokens.keys().map(|k| format!("t/{k}")))
        .chain(state.join_tokens.keys().map(|k| format!("j/{k}")));
    let mut out = Vec::new();
    for id in ids {
        if let Some(v) = encode(state, &id)? {
            out.push((id, v));
        }
    }
    Ok(out)
}

/// The state the rows hold. Rows of other kinds (`a`, Raft's own) are skipped.
pub fn decode<'a>(rows: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<ControlState, String> {
    let mut s = ControlState::default();
    let bad = |id: &str, e: serde_json::Error| format!("stored control state row {id:?} is corrupt: {e}");
    for (id, v) in rows {
        if id == HEADER {
            let h: Header = serde_json::from_slice(v).map_err(|e| bad(id, e))?;
            s.cluster_id = h.cluster_id;
            s.name = h.name;
            s.schema_version = h.schema_version;
            s.members = h.members;
            s.layout_version = h.layout_version;
            s.replication = h.replication;
            s.replacements = h.replacements;
            s.locks.last_token = h.last_token;
            s.leader_leases = h.leader_leases;
            s.layout_moves = h.layout_moves;
            s.layout_history = h.layout_history;
            s.layout_progress = h.layout_progress;
            s.leaving = h.leaving;
            s.joins_need_tokens = h.joins_need_tokens;
            continue;
        }
        let Some((kind, name)) = id.split_once('/') else {
            continue;
        };
        let name = name.to_string();
        match kind {
            "b" => {
                let r: Bucket = serde_json::from_slice(v).map_err(|e| bad(id, e))?;
                s.buckets.insert(name, r);
            }
            "k" => {
                let r: AccessKey = serde_json::from_slice(v).map_err(|e| bad(id, e))?;
                s.keys.insert(name, r);
            }
            "l" => {
                let r: LockState = serde_json::from_slice(v).map_err(|e| bad(id, e))?;
                s.locks.locks.insert(name, r);
            }
            "r" => {
                let r: Barrier = serde_json::from_slice(v).map_err(|e| bad(id, e))?;
                s.locks.barriers.insert(name, r);
            }
            "t" => {
                let r: crate::state::AdminToken = serde_json::from_slice(v).map_err(|e| bad(id, e))?;
                s.admin_tokens.insert(name, r);
            }
            "j" => {
                let r: crate::joining::JoinToken = serde_json::from_slice(v).map_err(|e| bad(id, e))?;
                s.join_tokens.insert(name, r);
            }
            _ => {}
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::locks::LockCmd;
    use crate::state::MemberState;

    fn bucket(name: &str) -> Bucket {
        Bucket {
            name: name.into(),
            created: 1,
            ..Default::default()
        }
    }

    fn key(ak: &str) -> AccessKey {
        AccessKey {
            access_key: ak.into(),
            name: "n".into(),
            secret_sealed: String::new(),
            created: 0,
            enabled: true,
            buckets: Default::default(),
        }
    }

    /// Applying commands and rewriting only the rows each one touched keeps the stored rows
    /// equal to the whole state: what a restart reads back is what was applied.
    #[test]
    fn touched_rows_keep_the_stored_state_whole() {
        let lock = |name: &str, holder: &str, now: u64| Command::Lock {
            cmd: LockCmd::Acquire {
                name: name.into(),
                holder: holder.into(),
                ttl_ms: 100,
                permits: 1,
                wait: true,
                now,
                leader_renewed: false,
            },
        };
        let cmds = vec![
            Command::Init {
                cluster_id: "c".into(),
                name: "n".into(),
                replication: Replication::default(),
            },
            Command::UpsertMember {
                member: Member {
                    name: "m1".into(),
                    raft_id: 1,
                    rpc_addr: "a:1".into(),
                    role: "primary".into(),
                    zone: String::new(),
                    rack: String::new(),
                    weight: 100,
                    state: MemberState::Active,
                },
            },
            Command::PutKey { record: key("AK") },
            Command::CreateBucket {
                record: bucket("b1"),
                owner: Some("AK".into()),
            },
            Command::CreateBucket {
                record: bucket("b2"),
                owner: None,
            },
            Command::SetKeyPermission {
                access_key: "AK".into(),
                bucket: "b2".into(),
                permission: Some("read".into()),
            },
            lock("x", "h1", 1000),
            lock("x", "h2", 1010), // queued behind h1
            lock("y", "h3", 1020),
            // At 2000 both leases expired: h2 gets x, y disappears, though neither is named.
            Command::Lock {
                cmd: LockCmd::Tick { now: 2000 },
            },
            Command::Lock {
                cmd: LockCmd::Arrive {
                    barrier: "go".into(),
                    participant: "p".into(),
                    count: 2,
                },
            },
            Command::DeleteBucket { name: "b1".into() },
            Command::EnableJoinTokens,
            Command::PutJoinToken {
                token: crate::joining::mint(1_000, 1, 1).1,
            },
            Command::UseJoinToken {
                id: "nope".into(),
                hash: "x".into(),
                node: "n9".into(),
                now: 1_500,
            },
            // The first token expired at 2000: this one's row goes in, the first one's out.
            Command::PutJoinToken {
                token: crate::joining::mint(5_000, 60, 2).1,
            },
            Command::DeleteKey {
                access_key: "AK".into(),
            },
            Command::SetMemberState {
                name: "m1".into(),
                state: MemberState::Draining,
            },
        ];
        let mut state = ControlState::default();
        let mut stored: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for cmd in cmds {
            let ids = touched(&state, &cmd);
            state.apply(cmd);
            for id in ids {
                match encode(&state, &id).unwrap() {
                    Some(v) => stored.insert(id, v),
                    None => stored.remove(&id),
                };
            }
            let back = decode(stored.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).unwrap();
            assert_eq!(back, state);
        }
        assert!(state.locks.locks.contains_key("x") && !state.locks.locks.contains_key("y"));
        // The whole-state form gives the same rows.
        let whole: BTreeMap<String, Vec<u8>> = all(&state).unwrap().into_iter().collect();
        assert_eq!(whole, stored);
    }
}
