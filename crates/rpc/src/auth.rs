//! Peer authentication: every call carries `<cluster>:<node>:<unix-secs>:<mac>` with
//! mac = HMAC-SHA256(secret, "<cluster>:<node>:<unix-secs>"). The secret itself never crosses
//! the network; a token is accepted for 300 s either side of the receiver's clock. The token's
//! time also tells the receiver how far the caller's clock is from its own ([`Checked`]).

use hmac::{KeyInit, Mac};
use sha2::Sha256;

pub(crate) const HEADER: &str = "x-ironbucket-auth";
const TAG_LEN: usize = 16;

/// HMAC-SHA256 of the concatenated `parts`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length.
    let Ok(mut m) = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return [0; 32];
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}
const MAX_SKEW_SECS: i64 = 300;

/// A token that checked out: who called, and how far its clock is ahead of ours (negative:
/// behind), to within about a second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub node: String,
    pub offset_ms: i64,
}

/// A token that did not: why, and when the caller proved it knows the secret but its clock is
/// too far off, who it is and by how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub why: String,
    pub skewed: Option<Checked>,
}

/// Makes and checks tokens for one cluster.
#[derive(Clone)]
pub struct Auth {
    cluster: String,
    key: Vec<u8>,
    /// Further secrets accepted from peers while the cluster secret is rotated (tokens and
    /// packets are made with `key` only).
    accepted: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth({}, <secret>)", self.cluster)
    }
}

/// This node's wall clock (with any test offset, see `ironbucket_types::set_clock_offset_ms`).
fn now_ms() -> i64 {
    ironbucket_types::now_millis() as i64
}

fn now_secs() -> i64 {
    now_ms() / 1000
}

impl Auth {
    pub fn new(cluster: &str, secret: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            key: secret.as_bytes().to_vec(),
            accepted: Vec::new(),
        }
    }

    /// Also accepts tokens and packets made with any of `secrets` (a secret rotation).
    pub fn with_accepted(mut self, secrets: &[String]) -> Self {
        self.accepted = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
        self
    }

    /// The same cluster with each accepted secret as its own secret.
    pub fn accepted(&self) -> Vec<Auth> {
        self.accepted
            .iter()
            .map(|k| Auth {
                cluster: self.cluster.clone(),
                key: k.clone(),
                accepted: Vec::new(),
            })
            .collect()
    }

    fn mac(&self, msg: &str) -> String {
        hex::encode(hmac(&self.key, &[msg.as_bytes()]))
    }

    /// Whether `mac` is the MAC of `msg` under the secret or an accepted one (constant time
    /// for each).
    fn mac_matches(&self, msg: &str, mac: &str) -> bool {
        std::iter::once(&self.key).chain(self.accepted.iter()).any(|k| {
            let want = hex::encode(hmac(k, &[msg.as_bytes()]));
            want.len() == mac.len() && want.bytes().zip(mac.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
        })
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
        let ok = std::iter::once(&self.key).chain(self.accepted.iter()).any(|k| {
            let want = self.tag_with(k, purpose, data);
            want[..TAG_LEN].iter().zip(tag).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
        });
        ok.then_some(data)
    }

    fn tag(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        self.tag_with(&self.key, purpose, data)
    }

    fn tag_with(&self, key: &[u8], purpose: &str, data: &[u8]) -> [u8; 32] {
        hmac(
            &hmac(key, &[purpose.as_bytes()]),
            &[self.cluster.as_bytes(), &[0], data],
        )
    }

    /// A 32-byte key derived from the cluster secret for `purpose` (HMAC-SHA256), the same on
    /// every node of the cluster.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        hmac(&self.key, &[purpose.as_bytes()])
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

    /// Checks a token; returns the calling node's id and clock offset, or why it is refused.
    pub fn check(&self, token: Option<&str>) -> Result<Checked, Refused> {
        let refuse = |why: String| Refused { why, skewed: None };
        let malformed = || refuse("malformed cluster credentials".into());
        let t = token.ok_or_else(|| refuse("no cluster credentials".into()))?;
        let (msg, mac) = t.rsplit_once(':').ok_or_else(malformed)?;
        let mut parts = msg.splitn(3, ':');
        let (cluster, node, secs) = match (parts.next(), parts.next(), parts.next()) {
            (Some(c), Some(n), Some(s)) => (c, n, s),
            _ => return Err(malformed()),
        };
        if cluster != self.cluster {
            return Err(refuse(format!(
                "node {node} belongs to cluster {cluster:?}, not {:?}",
                self.cluster
            )));
        }
        let secs: i64 = secs.parse().map_err(|_| malformed())?;
        if !self.mac_matches(msg, mac) {
            return Err(refuse(format!("node {node} does not know the cluster secret")));
        }
        // The token was made at `secs` on the caller's clock (rounded down, hence + 500 ms).
        let checked = Checked {
            node: node.to_string(),
            offset_ms: secs * 1000 + 500 - now_ms(),
        };
        if (now_secs() - secs).abs() > MAX_SKEW_SECS {
            return Err(Refused {
                why: format!(
                    "node {node}'s clock is {} s off this node's (at most {MAX_SKEW_SECS} s is accepted), or the token was replayed",
                    checked.offset_ms / 1000
                ),
                skewed: Some(checked),
            });
        }
        Ok(checked)
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
        // While the secret rotates, packets of the accepted secret open too.
        let rotating = Auth::new("c", "secret-2").with_accepted(&["secret-1".into()]);
        assert_eq!(rotating.open("gossip", &p), Some(&b"hello"[..]));
        assert_eq!(
            a.open("gossip", &rotating.seal("gossip", b"x")),
            None,
            "made with the new one"
        );
    }

    #[test]
    fn a_rotation_accepts_tokens_of_either_secret() {
        let old = Auth::new("c", "secret-1");
        let new = Auth::new("c", "secret-2").with_accepted(&["secret-1".into()]);
        assert_eq!(new.check(Some(&old.token("n1"))).unwrap().node, "n1");
        assert!(new.check(Some(&new.token("n2"))).is_ok());
        assert!(
            old.check(Some(&new.token("n2"))).is_err(),
            "tokens are made with the current one"
        );
        assert!(new.check(Some(&Auth::new("c", "secret-3").token("n3"))).is_err());
        assert_eq!(new.accepted().len(), 1);
        assert_eq!(new.accepted()[0].derive_key("p"), old.derive_key("p"));
    }

    #[test]
    fn tokens() {
        let a = Auth::new("c", "secret-1");
        let ok = a.check(Some(&a.token("n1"))).unwrap();
        assert_eq!(ok.node, "n1");
        assert!(ok.offset_ms.abs() <= 1000, "{ok:?}");
        assert!(a.check(None).is_err());
        assert!(a.check(Some("garbage")).is_err());
        assert!(Auth::new("c", "secret-2").check(Some(&a.token("n1"))).is_err());
        assert!(Auth::new("d", "secret-1").check(Some(&a.token("n1"))).is_err());
        let old = a.token_at("n1", now_secs() - 1000);
        let r = a.check(Some(&old)).unwrap_err();
        assert!(r.why.contains("clock"), "{r:?}");
        let skew = r.skewed.unwrap();
        assert_eq!(skew.node, "n1");
        assert!((-1_001_000..=-999_000).contains(&skew.offset_ms), "{skew:?}");
        // A caller an hour ahead that knows the secret is refused, and identified.
        let ahead = a.token_at("n9", now_secs() + 3600);
        assert_eq!(a.check(Some(&ahead)).unwrap_err().skewed.unwrap().node, "n9");
        // Without the secret, nothing is believed about the caller.
        let forged = Auth::new("c", "other").token_at("n9", now_secs() + 3600);
        assert_eq!(a.check(Some(&forged)).unwrap_err().skewed, None);
        let tampered = a.token("n1").replace(":n1:", ":n2:");
        assert!(a.check(Some(&tampered)).is_err());
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        assert_eq!(
            Auth::new("", "Jefe").mac("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
