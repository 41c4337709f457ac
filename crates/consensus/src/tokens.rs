//! Admin API tokens agreed through Raft, so a token created on one node opens every node's
//! admin API. Their log entries are proposed only once every member speaks protocol 9 (an
//! older node could not apply them).

use crate::state::{ADMIN_TOKENS, AdminToken, Command, Outcome};
use crate::{ControlPlane, Error};

impl ControlPlane {
    /// Adds `token`; refused while a member speaks a protocol older than 9.
    pub async fn put_admin_token(&self, token: AdminToken) -> Result<Outcome, Error> {
        self.tokens_allowed().await?;
        self.propose(Command::PutAdminToken { token }).await
    }

    /// Revokes the token with `id`.
    pub async fn delete_admin_token(&self, id: &str) -> Result<Outcome, Error> {
        self.tokens_allowed().await?;
        self.propose(Command::DeleteAdminToken { id: id.to_string() }).await
    }

    async fn tokens_allowed(&self) -> Result<(), Error> {
        if self.every_member_speaks(ADMIN_TOKENS).await {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "admin tokens need node protocol {ADMIN_TOKENS} on every member; finish the upgrade (or wait until every member answers) and try again"
        )))
    }
}
