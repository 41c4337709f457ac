//! Cluster secret rotation in the control state: access key secrets are sealed with a key
//! derived from the cluster secret; after a rotation they are sealed again with the new one
//! (`POST /cluster/keys/reseal`). The replacement holds only if the record still carries the
//! sealed form it was made from, so a concurrent change is never overwritten. Proposed only once
//! every member speaks protocol 10 (an older node could not apply it).

use crate::state::{Command, ControlState, Outcome};
use crate::{ControlPlane, Error};

/// The node protocol version from which the log may carry `ResealKey`.
pub const RESEAL_KEYS: u32 = 10;

impl ControlState {
    pub(crate) fn reseal_key(&mut self, access_key: String, from: &str, to: String) -> Outcome {
        match self.keys.get_mut(&access_key) {
            Some(k) if k.secret_sealed == from => {
                k.secret_sealed = to;
                Outcome::Done
            }
            Some(_) => Outcome::Refused {
                reason: format!("the secret of key {access_key} changed meanwhile"),
            },
            None => Outcome::NoSuchAccessKey { access_key },
        }
    }
}

impl ControlPlane {
    /// Replaces key `access_key`'s sealed secret `from` by `to` (the same secret, sealed with
    /// the current key).
    pub async fn reseal_key(&self, access_key: &str, from: &str, to: &str) -> Result<Outcome, Error> {
        if !self.every_member_speaks(RESEAL_KEYS).await {
            return Err(Error::Invalid(format!(
                "resealing key secrets needs node protocol {RESEAL_KEYS} on every member; finish the upgrade (or wait until every member answers) and try again"
            )));
        }
        self.propose(Command::ResealKey {
            access_key: access_key.to_string(),
            from: from.to_string(),
            to: to.to_string(),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::records::AccessKey;

    #[test]
    fn a_reseal_holds_only_over_the_form_it_was_made_from() {
        let mut s = ControlState::default();
        s.keys.insert(
            "AK".into(),
            AccessKey {
                access_key: "AK".into(),
                name: "n".into(),
                secret_sealed: "old".into(),
                created: 1,
                enabled: true,
                buckets: Default::default(),
            },
        );
        assert!(matches!(
            s.reseal_key("AK".into(), "other", "new".into()),
            Outcome::Refused { .. }
        ));
        assert_eq!(s.reseal_key("AK".into(), "old", "new".into()), Outcome::Done);
        assert_eq!(s.keys["AK"].secret_sealed, "new");
        assert!(matches!(
            s.reseal_key("BK".into(), "old", "new".into()),
            Outcome::NoSuchAccessKey { .. }
        ));
    }
}
