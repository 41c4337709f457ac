//! Encryption at rest: envelope encryption with AES-256-GCM.
//!
//! Each blob gets a fresh random data key, wrapped by the configured master key and stored in
//! the blob header with the master key's id. Chunk `i` is sealed with the data key, nonce `i`
//! and associated data `(i, last)`, so chunks cannot be reordered, swapped between blobs or the
//! blob truncated without detection. Old master keys stay readable for rotation.

use crate::format::{CryptoMaterial, TAG_LEN};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use rand::RngCore;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("encryption key must be 32 bytes given as 64 hex characters or 44 base64 characters")]
    BadFormat,
    #[error("no configured encryption key has id {0}")]
    UnknownKey(String),
    #[error("encryption failed")]
    Seal,
    #[error("decryption failed: wrong key or corrupt data")]
    Open,
}

/// A 256-bit master key.
#[derive(Clone)]
pub struct EncryptionKey {
    bytes: [u8; 32],
    id: [u8; 8],
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptionKey(id={})", hex::encode(self.id))
    }
}

impl EncryptionKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let digest = Sha256::digest(bytes);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Self { bytes, id }
    }

    /// Parses 64 hex characters or standard base64 of exactly 32 bytes.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        let raw = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(s).map_err(|_| KeyError::BadFormat)?
        } else {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| KeyError::BadFormat)?
        };
        let bytes: [u8; 32] = raw.try_into().map_err(|_| KeyError::BadFormat)?;
        Ok(Self::from_bytes(bytes))
    }

    /// Short public identifier (hex of the first 8 bytes of SHA-256 of the key).
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }
}

impl EncryptionKey {
    /// Seals a small secret (an access key's secret) as base64 of nonce || ciphertext || tag.
    pub fn seal_secret(&self, plain: &[u8]) -> Result<String, KeyError> {
        use base64::Engine;
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let cipher = Aes256Gcm::new((&self.bytes).into());
        let mut buf = plain.to_vec();
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"ironbucket-secret", &mut buf)
            .map_err(|_| KeyError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out.extend_from_slice(&tag);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// Opens what [`EncryptionKey::seal_secret`] sealed.
    pub fn open_secret(&self, sealed: &str) -> Result<Vec<u8>, KeyError> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| KeyError::Open)?;
        if raw.len() < 12 + TAG_LEN {
            return Err(KeyError::Open);
        }
        let (nonce, rest) = raw.split_at(12);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut buf = ct.to_vec();
        Aes256Gcm::new((&self.bytes).into())
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                b"ironbucket-secret",
                &mut buf,
                Tag::from_slice(tag),
            )
            .map_err(|_| KeyError::Open)?;
        Ok(buf)
    }

    /// A random key (for the node's key-encryption key file).
    pub fn random() -> Self {
        let mut b = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut b);
        Self::from_bytes(b)
    }

    /// The raw key bytes (to write the key file).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }
}

/// The current master key plus older ones that may still be needed to read.
#[derive(Debug, Clone)]
pub struct Keyring {
    current: EncryptionKey,
    old: Vec<EncryptionKey>,
}

impl Keyring {
    pub fn new(current: EncryptionKey, old: Vec<EncryptionKey>) -> Self {
        Self { current, old }
    }

    pub fn current_id(&self) -> String {
        self.current.id_hex()
    }

    /// Whether older master keys are configured (blobs may still be wrapped by one).
    pub fn has_old_keys(&self) -> bool {
        !self.old.is_empty()
    }

    fn find(&self, id: &[u8; 8]) -> Option<&EncryptionKey> {
        std::iter::once(&self.current)
            .chain(self.old.iter())
            .find(|k| &k.id == id)
    }

    pub(crate) fn new_blob_sealer(&self) -> Result<Sealer, KeyError> {
        wrap_new_data_key(&self.current.bytes, self.current.id, MASTER_AAD)
    }

    pub(crate) fn blob_opener(&self, m: &CryptoMaterial) -> Result<Sealer, KeyError> {
        let master = self
            .find(&m.key_id)
            .ok_or_else(|| KeyError::UnknownKey(hex::encode(m.key_id)))?;
        unwrap_data_key(&master.bytes, m, MASTER_AAD)
    }
}

impl Keyring {
    /// Whether the current master key wraps `m`'s data key.
    pub(crate) fn is_current(&self, m: &CryptoMaterial) -> bool {
        m.key_id == self.current.id
    }

    /// `m` with its data key wrapped by the current master key instead of an older one (a fresh
    /// wrapping nonce); `None` when the current key wraps it already. The data key, and so every
    /// chunk sealed with it, stays the same.
    pub(crate) fn rewrap(&self, m: &CryptoMaterial) -> Result<Option<CryptoMaterial>, KeyError> {
        if self.is_current(m) {
            return Ok(None);
        }
        let old = self
            .find(&m.key_id)
            .ok_or_else(|| KeyError::UnknownKey(hex::encode(m.key_id)))?;
        let mut data_key = m.wrapped_key[..32].to_vec();
        Aes256Gcm::new((&old.bytes).into())
            .decrypt_in_place_detached(
                Nonce::from_slice(&m.wrap_nonce),
                MASTER_AAD,
                &mut data_key,
                Tag::from_slice(&m.wrapped_key[32..]),
            )
            .map_err(|_| KeyError::Open)?;
        let mut wrap_nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut wrap_nonce);
        let tag = Aes256Gcm::new((&self.current.bytes).into())
            .encrypt_in_place_detached(Nonce::from_slice(&wrap_nonce), MASTER_AAD, &mut data_key)
            .map_err(|_| KeyError::Seal)?;
        let mut wrapped_key = [0u8; 48];
        wrapped_key[..32].copy_from_slice(&data_key);
        wrapped_key[32..].copy_from_slice(&tag);
        Ok(Some(CryptoMaterial {
            key_id: self.current.id,
            wrap_nonce,
            wrapped_key,
        }))
    }
}

const MASTER_AAD: &[u8] = b"ironbucket-data-key";

/// A key supplied by the client with each request (SSE-C). It wraps the blob's data key and is
/// never stored; only a salted fingerprint is kept to recognise it.
#[derive(Clone, PartialEq, Eq)]
pub struct CustomerKey {
    bytes: [u8; 32],
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomerKey(<redacted>)")
    }
}

const CUSTOMER_AAD: &[u8] = b"ironbucket-sse-c-data-key";

impl CustomerKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self { bytes }
    }

    /// The raw key, to forward it to the replicas of a write over the authenticated node RPC.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// A salted SHA-256 fingerprint (`salt:hash`, hex) to store instead of the key.
    pub fn fingerprint(&self) -> String {
        let mut salt = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        format!("{}:{}", hex::encode(salt), hex::encode(self.salted(&salt)))
    }

    /// Whether this key produced `fingerprint`.
    pub fn matches(&self, fingerprint: &str) -> bool {
        let Some((salt, hash)) = fingerprint.split_once(':') else {
            return false;
        };
        match (hex::decode(salt), hex::decode(hash)) {
            (Ok(salt), Ok(hash)) => {
                // Constant-time comparison.
                let mine = self.salted(&salt);
                hash.len() == mine.len() && hash.iter().zip(mine.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
            }
            _ => false,
        }
    }

    /// The ETag of an object written with this key whose plaintext has MD5 `md5`: 16 bytes of
    /// HMAC-SHA256 under a key derived from the customer key. Stable for the same key and body,
    /// and says nothing about the body without the key.
    pub fn etag_of(&self, md5: &[u8; 16]) -> [u8; 16] {
        use hmac::Mac;
        let key = self.salted(b"etag");
        let mut out = [0u8; 16];
        if let Ok(mut m) = <hmac::Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&key) {
            m.update(md5);
            out.copy_from_slice(&m.finalize().into_bytes()[..16]);
        }
        out
    }

    fn salted(&self, salt: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"ironbucket-sse-c-fingerprint");
        h.update(salt);
        h.update(self.bytes);
        h.finalize().into()
    }

    pub(crate) fn new_blob_sealer(&self) -> Result<Sealer, KeyError> {
        wrap_new_data_key(&self.bytes, [0u8; 8], CUSTOMER_AAD)
    }

    pub(crate) fn blob_opener(&self, m: &CryptoMaterial) -> Result<Sealer, KeyError> {
        unwrap_data_key(&self.bytes, m, CUSTOMER_AAD)
    }
}

/// A fresh data key wrapped by `wrapping_key`.
fn wrap_new_data_key(wrapping_key: &[u8; 32], key_id: [u8; 8], aad: &[u8]) -> Result<Sealer, KeyError> {
    let mut data_key = [0u8; 32];
    let mut wrap_nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut data_key);
    rand::thread_rng().fill_bytes(&mut wrap_nonce);
    let master = Aes256Gcm::new(wrapping_key.into());
    let mut wrapped = data_key.to_vec();
    let tag = master
        .encrypt_in_place_detached(Nonce::from_slice(&wrap_nonce), aad, &mut wrapped)
        .map_err(|_| KeyError::Seal)?;
    let mut wrapped_key = [0u8; 48];
    wrapped_key[..32].copy_from_slice(&wrapped);
    wrapped_key[32..].copy_from_slice(&tag);
    Ok(Sealer {
        cipher: Aes256Gcm::new((&data_key).into()),
        material: CryptoMaterial {
            key_id,
            wrap_nonce,
            wrapped_key,
        },
    })
}

fn unwrap_data_key(wrapping_key: &[u8; 32], m: &CryptoMaterial, aad: &[u8]) -> Result<Sealer, KeyError> {
    let cipher = Aes256Gcm::new(wrapping_key.into());
    let mut data_key = m.wrapped_key[..32].to_vec();
    let tag = Tag::from_slice(&m.wrapped_key[32..]);
    cipher
        .decrypt_in_place_detached(Nonce::from_slice(&m.wrap_nonce), aad, &mut data_key, tag)
        .map_err(|_| KeyError::Open)?;
    let key: [u8; 32] = data_key.try_into().map_err(|_| KeyError::Open)?;
    Ok(Sealer {
        cipher: Aes256Gcm::new((&key).into()),
        material: m.clone(),
    })
}

/// Seals and opens the chunks of one blob.
pub(crate) struct Sealer {
    cipher: Aes256Gcm,
    material: CryptoMaterial,
}

fn nonce(index: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&index.to_be_bytes());
    n
}

fn aad(index: u64, last: bool) -> [u8; 9] {
    let mut a = [0u8; 9];
    a[..8].copy_from_slice(&index.to_be_bytes());
    a[8] = last as u8;
    a
}

impl Sealer {
    pub(crate) fn header_material(&self) -> CryptoMaterial {
        self.material.clone()
    }

    pub(crate) fn seal_into(&self, index: u64, last: bool, plain: &[u8], out: &mut Vec<u8>) -> Result<(), KeyError> {
        let at = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce(index)), &aad(index, last), &mut out[at..])
            .map_err(|_| KeyError::Seal)?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    pub(crate) fn open(&self, index: u64, last: bool, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        if sealed.len() < TAG_LEN {
            return Err(KeyError::Open);
        }
        let (ct, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let mut buf = ct.to_vec();
        self.cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&nonce(index)),
                &aad(index, last),
                &mut buf,
                Tag::from_slice(tag),
            )
            .map_err(|_| KeyError::Open)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip() {
        let k = EncryptionKey::from_bytes([5; 32]);
        let sealed = k.seal_secret(b"s3cr3t").unwrap();
        assert!(!sealed.contains("s3cr3t"));
        assert_eq!(k.open_secret(&sealed).unwrap(), b"s3cr3t");
        assert!(EncryptionKey::from_bytes([6; 32]).open_secret(&sealed).is_err());
    }

    #[test]
    fn parse_keys() {
        let hex_key = "00".repeat(32);
        assert!(EncryptionKey::parse(&hex_key).is_ok());
        let b64 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert!(EncryptionKey::parse(b64).is_ok());
        assert_eq!(EncryptionKey::parse("short").err(), Some(KeyError::BadFormat));
        assert_eq!(EncryptionKey::parse(&"00".repeat(31)).err(), Some(KeyError::BadFormat));
    }

    #[test]
    fn seal_open_and_tamper() {
        let ring = Keyring::new(EncryptionKey::from_bytes([7; 32]), vec![]);
        let s = ring.new_blob_sealer().unwrap();
        let mut out = Vec::new();
        s.seal_into(3, true, b"hello", &mut out).unwrap();
        let o = ring.blob_opener(&s.header_material()).unwrap();
        assert_eq!(o.open(3, true, &out).unwrap(), b"hello");
        assert!(o.open(3, false, &out).is_err(), "last flag is bound");
        assert!(o.open(4, true, &out).is_err(), "index is bound");
        out[0] ^= 1;
        assert!(o.open(3, true, &out).is_err());
        let other = Keyring::new(EncryptionKey::from_bytes([8; 32]), vec![]);
        assert!(matches!(
            other.blob_opener(&s.header_material()),
            Err(KeyError::UnknownKey(_))
        ));
        let rotated = Keyring::new(
            EncryptionKey::from_bytes([8; 32]),
            vec![EncryptionKey::from_bytes([7; 32])],
        );
        assert!(rotated.blob_opener(&s.header_material()).is_ok());
    }

    #[test]
    fn customer_keys() {
        let k = CustomerKey::from_bytes([9; 32]);
        let fp = k.fingerprint();
        assert!(k.matches(&fp));
        assert_ne!(fp, k.fingerprint(), "salted");
        let other = CustomerKey::from_bytes([10; 32]);
        assert!(!other.matches(&fp));
        assert!(!k.matches("garbage"));
        assert_eq!(format!("{k:?}"), "CustomerKey(<redacted>)");
        let s = k.new_blob_sealer().unwrap();
        let mut out = Vec::new();
        s.seal_into(0, true, b"data", &mut out).unwrap();
        assert_eq!(
            k.blob_opener(&s.header_material())
                .unwrap()
                .open(0, true, &out)
                .unwrap(),
            b"data"
        );
        assert_eq!(other.blob_opener(&s.header_material()).err(), Some(KeyError::Open));
        // A master key with the same bytes cannot open a customer-wrapped data key (other AAD).
        let ring = Keyring::new(EncryptionKey::from_bytes([9; 32]), vec![]);
        let mut m = s.header_material();
        m.key_id = ring.current.id;
        assert!(ring.blob_opener(&m).is_err());
    }
}
