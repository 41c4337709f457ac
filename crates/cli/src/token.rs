//! `ironbucket-cli token`: admin API tokens with a role. The token is shown once, when it is
//! created; the node keeps only its SHA-256.

use crate::{admin_call, pct};
use anyhow::Result;
use clap::Subcommand;
use ironbucket_api as api;

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCommand {
    /// Create a token; prints it once (keep it: it cannot be shown again).
    Create {
        /// A name for the token (letters, digits, '-', '_', '.'), shown in the audit log.
        #[arg(long)]
        name: String,
        /// viewer (reads), operator (also drain, activate, repair, rebalance, workers) or
        /// admin (everything).
        #[arg(long, value_parser = parse_role)]
        role: api::Role,
    },
    /// List the tokens (names, roles, ids; never the tokens).
    List,
    /// Revoke a token by id or name.
    Revoke { token: String },
}

fn parse_role(s: &str) -> Result<api::Role, String> {
    s.parse()
}

pub(crate) async fn run(base: &str, admin_token: &str, cmd: TokenCommand, timeout: u64) -> Result<i32> {
    match cmd {
        TokenCommand::Create { name, role } => {
            let body = serde_json::to_value(api::CreateToken { name, role })?;
            admin_call(base, "POST", "/tokens", admin_token, Some(body), timeout).await
        }
        TokenCommand::List => admin_call(base, "GET", "/tokens", admin_token, None, timeout).await,
        TokenCommand::Revoke { token } => {
            let path = format!("/tokens/{}", pct(&token));
            admin_call(base, "DELETE", &path, admin_token, None, timeout).await
        }
    }
}

/// `ironbucket-cli cluster join-token`: the tokens a new node presents to join (admin role).
#[derive(Subcommand, Debug)]
pub(crate) enum JoinTokenCommand {
    /// Create a join token; prints it once. Start the new node with JOIN_TOKEN set to it; it
    /// joins as a learner (make it a voter with `cluster promote`).
    Create {
        /// How long the token admits joins, in seconds (1 to 86400).
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        /// How many nodes it admits (1 to 100).
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
    /// List the join tokens (ids, expiry, uses left, nodes that used them; never the tokens).
    List,
    /// Revoke a join token by id.
    Revoke { id: String },
}

pub(crate) async fn run_join(base: &str, admin_token: &str, cmd: JoinTokenCommand, timeout: u64) -> Result<i32> {
    match cmd {
        JoinTokenCommand::Create { ttl_secs, uses } => {
            let body = serde_json::to_value(api::CreateJoinToken {
                ttl_secs: Some(ttl_secs),
                uses: Some(uses),
            })?;
            admin_call(base, "POST", "/cluster/join-tokens", admin_token, Some(body), timeout).await
        }
        JoinTokenCommand::List => admin_call(base, "GET", "/cluster/join-tokens", admin_token, None, timeout).await,
        JoinTokenCommand::Revoke { id } => {
            let path = format!("/cluster/join-tokens/{}", pct(&id));
            admin_call(base, "DELETE", &path, admin_token, None, timeout).await
        }
    }
}
