//! Access keys: new key records (random id and secret, the secret sealed with the node's
//! key-encryption key), the admin calls on keys, request authentication's secret lookup, and
//! following the cluster's agreed key list.

use super::LocalStore;
use crate::model::*;
use crate::{Error, Result};
use ironbucket_types::now_millis;

impl LocalStore {
    /// A new access key record (random id and secret, the secret sealed) and its secret.
    pub fn new_key_record(&self, name: &str) -> Result<(ironbucket_meta::KeyRecord, String)> {
        use rand::Rng;
        if name.is_empty() || name.len() > 128 {
            return Err(Error::InvalidArgument("a key name is 1 to 128 characters".into()));
        }
        const AK: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        const SK: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let (ak, sk): (String, String) = {
            let mut rng = rand::thread_rng();
            (
                std::iter::once('K')
                    .chain((0..19).map(|_| AK[rng.gen_range(0..AK.len())] as char))
                    .collect(),
                (0..40).map(|_| SK[rng.gen_range(0..SK.len())] as char).collect(),
            )
        };
        let rec = ironbucket_meta::KeyRecord {
            access_key: ak,
            name: name.to_string(),
            secret_sealed: self
                .kek
                .seal_secret(sk.as_bytes())
                .map_err(|e| Error::Internal(e.to_string()))?,
            created: now_millis(),
            enabled: true,
            buckets: Default::default(),
        };
        Ok((rec, sk))
    }

    /// The access keys of a single node's data directory becoming a cluster's first node
    /// (`FROM_STANDALONE`), their secrets resealed with this store's key: a single node sealed
    /// them with `<data dir>/keys.kek`, a cluster node seals them with the key derived from the
    /// cluster secret. Records already sealed with this store's key (a restart after the import)
    /// are returned as they are; a record neither key opens is left out, with a warning.
    pub async fn standalone_keys(&self) -> Result<Vec<ironbucket_meta::KeyRecord>> {
        let path = self.cfg.data_dir.join("keys.kek");
        let old = if path.exists() {
            Some(load_or_create_kek(&path)?)
        } else {
            None
        };
        let mut out = Vec::new();
        for mut rec in self.scan(|m| m.list_keys()).await? {
            if self.kek.open_secret(&rec.secret_sealed).is_ok() {
                out.push(rec);
                continue;
            }
            match old.as_ref().map(|k| k.open_secret(&rec.secret_sealed)) {
                Some(Ok(secret)) => {
                    rec.secret_sealed = self
                        .kek
                        .seal_secret(&secret)
                        .map_err(|e| Error::Internal(e.to_string()))?;
                    out.push(rec);
                }
                _ => tracing::warn!(
                    access_key = %rec.access_key,
                    "FROM_STANDALONE: this access key's secret opens with neither keys.kek nor the cluster's key; it is not carried into the cluster"
                ),
            }
        }
        Ok(out)
    }

    /// Makes the local access key table match `keys` (the cluster's agreed list).
    pub async fn sync_keys(&self, keys: Vec<ironbucket_meta::KeyRecord>) -> Result<()> {
        let local = self.scan(|m| m.list_keys()).await?;
        let changed: Vec<_> = keys.iter().filter(|k| !local.contains(k)).cloned().collect();
        let gone: Vec<String> = local
            .iter()
            .filter(|l| !keys.iter().any(|k| k.access_key == l.access_key))
            .map(|l| l.access_key.clone())
            .collect();
        if changed.is_empty() && gone.is_empty() {
            return Ok(());
        }
        self.commit(vec![], move |t| {
            for k in &changed {
                t.put_key(k)?;
            }
            for ak in &gone {
                t.delete_key(ak)?;
            }
            Ok(())
        })
        .await
    }

    /// [`ObjectStore::create_key`](crate::ObjectStore::create_key) on this node.
    pub(super) async fn add_key(&self, name: &str) -> Result<(KeyInfo, String)> {
        let (rec, sk) = self.new_key_record(name)?;
        let info = key_info(&rec);
        self.commit(vec![], move |t| {
            if t.get_key(&rec.access_key)?.is_some() {
                return Err(Error::Internal("access key collision".into()));
            }
            t.put_key(&rec)?;
            Ok(())
        })
        .await?;
        Ok((info, sk))
    }

    /// [`ObjectStore::list_keys`](crate::ObjectStore::list_keys) on this node.
    pub(super) async fn key_infos(&self) -> Result<Vec<KeyInfo>> {
        Ok(self.scan(|m| m.list_keys()).await?.iter().map(key_info).collect())
    }

    /// [`ObjectStore::set_key_enabled`](crate::ObjectStore::set_key_enabled) on this node.
    pub(super) async fn enable_key(&self, access_key: &str, enabled: bool) -> Result<()> {
        let ak = access_key.to_string();
        self.commit(vec![], move |t| {
            let mut k = t.get_key(&ak)?.ok_or_else(|| Error::NoSuchAccessKey(ak.clone()))?;
            k.enabled = enabled;
            t.put_key(&k)?;
            Ok(())
        })
        .await
    }

    /// [`ObjectStore::delete_key`](crate::ObjectStore::delete_key) on this node.
    pub(super) async fn remove_key(&self, access_key: &str) -> Result<()> {
        let ak = access_key.to_string();
        self.commit(vec![], move |t| {
            if t.get_key(&ak)?.is_none() {
                return Err(Error::NoSuchAccessKey(ak.clone()));
            }
            t.delete_key(&ak)?;
            Ok(())
        })
        .await
    }

    /// [`ObjectStore::set_key_permission`](crate::ObjectStore::set_key_permission) on this node.
    pub(super) async fn set_permission(
        &self,
        access_key: &str,
        bucket: &str,
        permission: Option<Permission>,
    ) -> Result<()> {
        let (ak, bucket) = (access_key.to_string(), bucket.to_string());
        self.commit(vec![], move |t| {
            let mut k = t.get_key(&ak)?.ok_or_else(|| Error::NoSuchAccessKey(ak.clone()))?;
            match permission {
                Some(p) => {
                    if t.get_bucket(&bucket)?.is_none() {
                        return Err(Error::NoSuchBucket);
                    }
                    k.buckets.insert(bucket, p.as_str().to_string());
                }
                None => {
                    k.buckets.remove(&bucket);
                }
            }
            t.put_key(&k)?;
            Ok(())
        })
        .await
    }

    /// A sealed access key secret opened with the key-sealing key, or (during a cluster secret
    /// rotation) with one it replaced.
    fn open_key_secret(&self, access_key: &str, sealed: &str) -> Result<Vec<u8>> {
        if let Ok(s) = self.kek.open_secret(sealed) {
            return Ok(s);
        }
        self.cfg
            .accepted_key_sealing_keys
            .iter()
            .find_map(|k| k.open_secret(sealed).ok())
            .ok_or_else(|| Error::Corrupt(format!("the secret of key {access_key} cannot be opened")))
    }

    /// `sealed` sealed again with the current key-sealing key, when an accepted older key
    /// sealed it (`None`: the current key did, nothing to do). An error when no key opens it.
    pub fn reseal(&self, access_key: &str, sealed: &str) -> Result<Option<String>> {
        if self.kek.open_secret(sealed).is_ok() {
            return Ok(None);
        }
        let secret = self.open_key_secret(access_key, sealed)?;
        self.kek
            .seal_secret(&secret)
            .map(Some)
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// [`ObjectStore::key_secret`](crate::ObjectStore::key_secret) on this node.
    pub(super) async fn secret_of(&self, access_key: &str) -> Result<Option<(String, KeyInfo)>> {
        let Some(rec) = self.meta.get_key(access_key)? else {
            return Ok(None);
        };
        let secret = self.open_key_secret(access_key, &rec.secret_sealed)?;
        let secret = String::from_utf8(secret).map_err(|_| Error::Corrupt("key secret is not UTF-8".into()))?;
        Ok(Some((secret, key_info(&rec))))
    }
}

fn key_info(r: &ironbucket_meta::KeyRecord) -> KeyInfo {
    KeyInfo {
        access_key: r.access_key.clone(),
        name: r.name.clone(),
        created: r.created,
        enabled: r.enabled,
        buckets: r
            .buckets
            .iter()
            .filter_map(|(b, p)| Permission::parse(p).map(|p| (b.clone(), p)))
            .collect(),
    }
}

/// Reads the key-encryption key file, or creates it (32 random bytes, mode 600).
pub(super) fn load_or_create_kek(path: &std::path::Path) -> Result<ironbucket_storage::EncryptionKey> {
    use std::io::Write;
    if let Ok(raw) = std::fs::read(path) {
        let bytes: [u8; 32] = raw
            .try_into()
            .map_err(|_| Error::Corrupt(format!("{} is not a 32-byte key", path.display())))?;
        return Ok(ironbucket_storage::EncryptionKey::from_bytes(bytes));
    }
    let key = ironbucket_storage::EncryptionKey::random();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| Error::Internal(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(&key.to_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(key)
}
