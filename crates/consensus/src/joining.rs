//! Who may join: operator-issued join tokens, and promotion of a learner to voter.
//!
//! Once every member speaks protocol 10 the leader turns join tokens on (never undone). From
//! then on a node that is not in the cluster yet must present a join token (`JOIN_TOKEN`), which
//! an operator makes with `POST /cluster/join-tokens` (`ironbucket-cli cluster join-token
//! create`): knowing the cluster secret is no longer enough. The joiner enters as a Raft learner
//! (it follows the log and holds data, but does not vote); an operator makes it a voter with
//! `POST /cluster/nodes/{name}/promote`. Only the SHA-256 of a token is agreed through Raft; a
//! token admits a bounded number of joins until it expires or is revoked.
//!
//! The state changes are pure ([`ControlState::use_join_token`] and friends); the
//! [`ControlPlane`] methods are the shell that proposes them.

use crate::state::{Command, ControlState, Outcome};
use crate::{ControlPlane, Error};
use serde::{Deserialize, Serialize};

/// The node protocol version from which joins need a join token and enter as learners.
pub const JOIN_TOKENS: u32 = 10;

/// What every token starts with; `ibj_<id>_<secret>`.
const PREFIX: &str = "ibj_";

/// Longest a join token may live: a day.
pub const MAX_JOIN_TOKEN_TTL_SECS: u64 = 24 * 3600;
/// Most joins one token may admit.
pub const MAX_JOIN_TOKEN_USES: u32 = 100;

/// A join token as the cluster stores it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    pub id: String,
    /// Hex SHA-256 of the whole token.
    pub hash: String,
    /// Milliseconds since the epoch.
    pub created: u64,
    pub expires: u64,
    /// Joins it still admits.
    pub uses_left: u32,
    /// The nodes that joined with it.
    #[serde(default)]
    pub used_by: Vec<String>,
}

/// A new token (the text to hand to the joiner, shown once) and its stored form.
pub fn mint(now: u64, ttl_secs: u64, uses: u32) -> (String, JoinToken) {
    let id = hex::encode(rand::random::<[u8; 6]>());
    let token = format!("{PREFIX}{id}_{}", hex::encode(rand::random::<[u8; 24]>()));
    let rec = JoinToken {
        id,
        hash: hash(&token),
        created: now,
        expires: now.saturating_add(ttl_secs.saturating_mul(1000)),
        uses_left: uses,
        used_by: Vec::new(),
    };
    (token, rec)
}

/// Hex SHA-256 of a token's text.
pub fn hash(token: &str) -> String {
    ironbucket_types::token::token_digest(token)
}

/// The id a token's text names, if it is shaped like a join token.
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.trim().strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && id.len() <= 32 && !secret.is_empty()).then_some(id)
}

impl ControlState {
    /// Adds a token; tokens that expired by its creation time go (their rows are in
    /// [`ControlState::expired_join_tokens`]).
    pub(crate) fn put_join_token(&mut self, token: JoinToken) -> Outcome {
        let now = token.created;
        self.join_tokens.retain(|_, t| t.expires > now);
        self.join_tokens.insert(token.id.clone(), token);
        Outcome::Done
    }

    /// Ids of the tokens expired at `now`.
    pub(crate) fn expired_join_tokens(&self, now: u64) -> Vec<String> {
        self.join_tokens
            .iter()
            .filter(|(_, t)| t.expires <= now)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Spends one use of token `id` on `node`, when `hash` matches and it is neither expired nor
    /// used up. A node that already joined with it may present it again (a retried join).
    pub(crate) fn use_join_token(&mut self, id: &str, hash: &str, node: &str, now: u64) -> Outcome {
        let refused = |reason: String| Outcome::Refused { reason };
        let Some(t) = self.join_tokens.get_mut(id).filter(|t| t.hash == hash) else {
            return refused(
                "the join token is not known to this cluster (wrong, revoked or from another cluster)".into(),
            );
        };
        if t.used_by.iter().any(|n| n == node) {
            return Outcome::Done;
        }
        if now >= t.expires {
            return refused(format!("join token {id} has expired: create a new one"));
        }
        if t.uses_left == 0 {
            return refused(format!("join token {id} has admitted as many nodes as it may"));
        }
        t.uses_left -= 1;
        t.used_by.push(node.to_string());
        Outcome::Done
    }

    pub(crate) fn delete_join_token(&mut self, id: &str) -> Outcome {
        match self.join_tokens.remove(id) {
            Some(_) => Outcome::Done,
            None => Outcome::Refused {
                reason: format!("no join token with id {id:?}"),
            },
        }
    }
}

impl ControlPlane {
    /// Makes a join token valid for `ttl_secs` and `uses` joins; returns its text (shown once)
    /// and its record.
    pub async fn create_join_token(&self, ttl_secs: u64, uses: u32) -> Result<(String, JoinToken), Error> {
        if !(1..=MAX_JOIN_TOKEN_TTL_SECS).contains(&ttl_secs) {
            return Err(Error::Invalid(format!(
                "a join token lives 1 to {MAX_JOIN_TOKEN_TTL_SECS} seconds"
            )));
        }
        if !(1..=MAX_JOIN_TOKEN_USES).contains(&uses) {
            return Err(Error::Invalid(format!(
                "a join token admits 1 to {MAX_JOIN_TOKEN_USES} nodes"
            )));
        }
        self.joins_gated()?;
        let (text, rec) = mint(ironbucket_types::now_millis(), ttl_secs, uses);
        self.propose(Command::PutJoinToken { token: rec.clone() }).await?;
        Ok((text, rec))
    }

    /// Revokes join token `id`.
    pub async fn delete_join_token(&self, id: &str) -> Result<Outcome, Error> {
        self.joins_gated()?;
        self.propose(Command::DeleteJoinToken { id: id.to_string() }).await
    }

    /// The join tokens, by id.
    pub fn join_tokens(&self) -> Vec<JoinToken> {
        self.with_state(|s| s.join_tokens.values().cloned().collect())
    }

    /// Makes learner `name` a voter.
    pub async fn promote(&self, name: &str) -> Result<(), Error> {
        self.joins_gated()?;
        if !self.with_state(|s| s.members.contains_key(name)) && !self.raft_nodes().iter().any(|(_, n)| n.name == name)
        {
            return Err(Error::Invalid(format!("no member named {name}")));
        }
        self.on_leader(crate::wire::MembershipOp::Promote { name: name.to_string() })
            .await
    }

    /// On the leader: checks the join token a joiner presents and spends one of its uses.
    pub(crate) async fn admit(&self, name: &str, token: Option<&str>) -> Result<(), String> {
        let token = token.filter(|t| !t.trim().is_empty()).ok_or_else(|| {
            format!(
                "node {name} cannot join: this cluster admits new nodes only with a join token; create one with `ironbucket-cli cluster join-token create` on a member and start the node with JOIN_TOKEN set to it"
            )
        })?;
        let id = token_id(token).ok_or_else(|| {
            format!("node {name} cannot join: its JOIN_TOKEN is not a join token (they start with {PREFIX})")
        })?;
        let cmd = Command::UseJoinToken {
            id: id.to_string(),
            hash: hash(token),
            node: name.to_string(),
            now: ironbucket_types::now_millis(),
        };
        match self.propose_inner(cmd, false).await {
            Ok((Outcome::Done, _)) => Ok(()),
            Ok((Outcome::Refused { reason }, _)) => Err(format!("node {name} cannot join: {reason}")),
            Ok((other, _)) => Err(format!("node {name} cannot join: unexpected outcome {other:?}")),
            Err(e) => Err(format!("node {name} cannot join yet: {e}")),
        }
    }

    fn joins_gated(&self) -> Result<(), Error> {
        if self.with_state(|s| s.joins_need_tokens) {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "join tokens and promotion need node protocol {JOIN_TOKENS} on every member; until the upgrade is finished, joining nodes become voters directly"
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_token_admits_its_uses_then_no_more_and_a_retry_is_not_a_new_use() {
        let mut s = ControlState::default();
        let (text, rec) = mint(1_000, 60, 2);
        let id = token_id(&text).unwrap().to_string();
        assert_eq!(id, rec.id);
        assert_eq!(s.put_join_token(rec), Outcome::Done);
        let h = hash(&text);
        assert_eq!(s.use_join_token(&id, &h, "n4", 2_000), Outcome::Done);
        assert_eq!(s.use_join_token(&id, &h, "n4", 2_500), Outcome::Done, "a retried join");
        assert_eq!(s.join_tokens[&id].uses_left, 1);
        assert_eq!(s.use_join_token(&id, &h, "n5", 3_000), Outcome::Done);
        let r = s.use_join_token(&id, &h, "n6", 3_000);
        assert!(
            matches!(&r, Outcome::Refused { reason } if reason.contains("as many nodes")),
            "{r:?}"
        );
    }

    #[test]
    fn wrong_expired_and_revoked_tokens_are_refused() {
        let mut s = ControlState::default();
        let (text, rec) = mint(1_000, 60, 5);
        let id = rec.id.clone();
        s.put_join_token(rec);
        let wrong = format!("{text}x");
        let r = s.use_join_token(&id, &hash(&wrong), "n4", 2_000);
        assert!(
            matches!(&r, Outcome::Refused { reason } if reason.contains("not known")),
            "{r:?}"
        );
        let r = s.use_join_token(&id, &hash(&text), "n4", 61_000);
        assert!(
            matches!(&r, Outcome::Refused { reason } if reason.contains("expired")),
            "{r:?}"
        );
        assert_eq!(s.delete_join_token(&id), Outcome::Done);
        let r = s.use_join_token(&id, &hash(&text), "n4", 2_000);
        assert!(matches!(&r, Outcome::Refused { .. }), "{r:?}");
        assert!(matches!(s.delete_join_token(&id), Outcome::Refused { .. }));
    }

    #[test]
    fn a_new_token_clears_the_expired_ones() {
        let mut s = ControlState::default();
        let (_, old) = mint(1_000, 1, 1);
        let old_id = old.id.clone();
        s.put_join_token(old);
        assert_eq!(s.expired_join_tokens(5_000), vec![old_id.clone()]);
        let (_, new) = mint(5_000, 60, 1);
        s.put_join_token(new);
        assert!(!s.join_tokens.contains_key(&old_id));
        assert_eq!(s.join_tokens.len(), 1);
    }

    #[test]
    fn only_join_shaped_texts_name_an_id() {
        assert_eq!(token_id("ibj_abc_def"), Some("abc"));
        assert_eq!(token_id(" ibj_abc_def\n"), Some("abc"));
        for bad in ["", "ibj_", "ibj_abc", "ibj__x", "ibt_abc_def", "abc_def"] {
            assert_eq!(token_id(bad), None, "{bad}");
        }
    }
}
