//! After a cluster secret rotation: every access key secret still sealed with a key derived
//! from an accepted (older) secret is sealed again with the current one, through the control
//! plane, so the accepted secret can then be dropped without locking any key out.

use crate::ClusterStore;
use ironbucket_consensus::Outcome;
use ironbucket_store::{Error, Result};
use serde::Serialize;

/// What a reseal did, key by key.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResealReport {
    /// Keys whose secret was sealed again with the current key.
    pub resealed: Vec<String>,
    /// Keys already sealed with the current key.
    pub current: usize,
    /// Keys whose secret no configured key opens, or whose change was not agreed, with why.
    pub failed: Vec<(String, String)>,
}

impl ClusterStore {
    /// Seals every access key secret that an accepted older cluster secret sealed with the
    /// current one.
    pub async fn reseal_keys(&self) -> Result<ResealReport> {
        let keys: Vec<(String, String)> = self.cp.with_state(|s| {
            s.keys
                .values()
                .map(|k| (k.access_key.clone(), k.secret_sealed.clone()))
                .collect()
        });
        let mut report = ResealReport::default();
        for (ak, sealed) in keys {
            let to = match self.local.reseal(&ak, &sealed) {
                Ok(None) => {
                    report.current += 1;
                    continue;
                }
                Ok(Some(to)) => to,
                Err(e) => {
                    report.failed.push((ak, e.to_string()));
                    continue;
                }
            };
            match self.cp.reseal_key(&ak, &sealed, &to).await {
                Ok(Outcome::Done) => report.resealed.push(ak),
                Ok(Outcome::Refused { reason }) => report.failed.push((ak, reason)),
                Ok(other) => report.failed.push((ak, format!("{other:?}"))),
                Err(ironbucket_consensus::Error::Invalid(why)) => return Err(Error::InvalidRequest(why)),
                Err(e) => return Err(crate::unavailable(e)),
            }
        }
        if !report.resealed.is_empty() {
            tracing::info!(
                keys = report.resealed.len(),
                "access key secrets sealed again with the current cluster secret"
            );
        }
        Ok(report)
    }
}
