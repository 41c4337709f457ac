//! Peer authentication: every call carries `<cluster>:<node>:<unix-secs>:<mac>` with
//! mac = HMAC-SHA256(secret, "<cluster>:<node>:<unix-secs>"). The secret itself never crosses
//! the network; a token is accepted for 300 s either side of the receiver's clock.

use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) const HEADER: &str = "x-ironbucket-auth";
const TAG_LEN: usize = 16;

/// HMAC-SHA256 with a key already padded to the block size.
fn hmac(key: &[u8; 64], parts: &[&[u8]]) -> [u8; 32] {
    let mut inner = Sha256::new();
    inner.update(key.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha256::new();
    outer.update(key.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}
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
        hex::encode(hmac(&self.key, &[msg.as_bytes()]))
    }

    /// Authenticates a datagram (gossip): a 16-byte HMAC-SHA256 tag over the cluster name and
    /// `data`, with a key derived for `purpose`, followed by `data`.
    pub fn seal(&self, purpose: &str, data: &[u8]) -> Vec<u8> {
        let tag = self.tag(purpose, data);
        let mut out = Vec::with_capacity(TAG_LEN + data.len());
        out.extend_from_slice(&tag[..TAG_LEN]);
        out.extend_from_slice(data);
        out
    }

    /// The data of a packet made by [`Auth::seal`] with the same secret, cluster and purpose;
    /// `None` for anything else.
    pub fn open<'a>(&self, purpose: &str, packet: &'a [u8]) -> Option<&'a [u8]> {
        if packet.len() < TAG_LEN {
            return None;
        }
        let (tag, data) = packet.split_at(TAG_LEN);
        let want = self.tag(purpose, data);
        let diff = want[..TAG_LEN].iter().zip(tag).fold(0u8, |a, (x, y)| a | (x ^ y));
        (diff == 0).then_some(data)
    }

    fn tag(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        let mut key = [0u8; 64];
        key[..32].copy_from_slice(&self.derive_key(purpose));
        hmac(&key, &[self.cluster.as_bytes(), &[0], data])
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
    fn sealed_packets_open_only_with_the_same_secret_cluster_and_purpose() {
        let a = Auth::new("c", "secret-1");
        let p = a.seal("gossip", b"hello");
        assert_eq!(a.open("gossip", &p), Some(&b"hello"[..]));
        assert_eq!(a.open("other", &p), None);
        assert_eq!(Auth::new("c", "secret-2").open("gossip", &p), None);
        assert_eq!(Auth::new("d", "secret-1").open("gossip", &p), None);
        let mut bad = p.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(a.open("gossip", &bad), None);
        assert_eq!(a.open("gossip", &p[..10]), None);
    }

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
