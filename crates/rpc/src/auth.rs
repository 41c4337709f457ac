//! Peer authentication: every call carries `<cluster>:<node>:<unix-secs>:<mac>` with
//! mac = HMAC-SHA256(secret, "<cluster>:<node>:<unix-secs>"). The secret itself never crosses
//! the network; a token is accepted for 300 s either side of the receiver's clock.

use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) const HEADER: &str = "x-ironbucket-auth";
const MAX_SKEW_SECS: i64 = 300;

/// Makes and checks tokens for one cluster.
#[derive(Clone)]
pub struct Auth {
    cluster: String,
    key: [u8; 64],
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth({}, <secret>)", self.cluster)
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Auth {
    pub fn new(cluster: &str, secret: &str) -> Self {
        // HMAC key block: keys longer than the block are hashed first.
        let mut key = [0u8; 64];
        if secret.len() > 64 {
            key[..32].copy_from_slice(&Sha256::digest(secret.as_bytes()));
        } else {
            key[..secret.len()].copy_from_slice(secret.as_bytes());
        }
        Self {
            cluster: cluster.to_string(),
            key,
        }
    }

    fn mac(&self, msg: &str) -> String {
        let mut inner = Sha256::new();
        inner.update(self.key.map(|b| b ^ 0x36));
        inner.update(msg.as_bytes());
        let mut outer = Sha256::new();
        outer.update(self.key.map(|b| b ^ 0x5c));
        outer.update(inner.finalize());
        hex::encode(outer.finalize())
    }

    /// A 32-byte key derived from the cluster secret for `purpose` (HMAC-SHA256), the same on
    /// every node of the cluster.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Ok(b) = hex::decode(self.mac(purpose)) {
            out.copy_from_slice(&b[..32]);
        }
        out
    }

    /// A token for `node`, valid now.
    pub fn token(&self, node: &str) -> String {
        self.token_at(node, now_secs())
    }

    fn token_at(&self, node: &str, secs: i64) -> String {
        let msg = format!("{}:{node}:{secs}", self.cluster);
        let mac = self.mac(&msg);
        format!("{msg}:{mac}")
    }

    /// Checks a token; returns the calling node's id or why it is refused.
    pub fn check(&self, token: Option<&str>) -> Result<String, String> {
        let t = token.ok_or("no cluster credentials")?;
        let (msg, mac) = t.rsplit_once(':').ok_or("malformed cluster credentials")?;
        let mut parts = msg.splitn(3, ':');
        let (cluster, node, secs) = match (parts.next(), parts.next(), parts.next()) {
            (Some(c), Some(n), Some(s)) => (c, n, s),
            _ => return Err("malformed cluster credentials".into()),
        };
        if cluster != self.cluster {
            return Err(format!(
                "node {node} belongs to cluster {cluster:?}, not {:?}",
                self.cluster
            ));
        }
        let secs: i64 = secs.parse().map_err(|_| "malformed cluster credentials")?;
        let want = self.mac(msg);
        let same = want.len() == mac.len() && want.bytes().zip(mac.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
        if !same {
            return Err(format!("node {node} does not know the cluster secret"));
        }
        if (now_secs() - secs).abs() > MAX_SKEW_SECS {
            return Err(format!(
                "node {node}'s clock is more than {MAX_SKEW_SECS} s off (or the token was replayed)"
            ));
        }
        Ok(node.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let a = Auth::new("c", "secret-1");
        assert_eq!(a.check(Some(&a.token("n1"))), Ok("n1".into()));
        assert!(a.check(None).is_err());
        assert!(a.check(Some("garbage")).is_err());
        assert!(Auth::new("c", "secret-2").check(Some(&a.token("n1"))).is_err());
        assert!(Auth::new("d", "secret-1").check(Some(&a.token("n1"))).is_err());
        let old = a.token_at("n1", now_secs() - 1000);
        assert!(a.check(Some(&old)).unwrap_err().contains("clock"));
        let tampered = a.token("n1").replace(":n1:", ":n2:");
        assert!(a.check(Some(&tampered)).is_err());
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        assert_eq!(
            Auth::new("", "Jefe").mac("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
