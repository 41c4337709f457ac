//! Re-wrapping after a master key rotation. A blob's chunks are sealed with its own data key;
//! the header holds that key wrapped by a master key. After `ENCRYPTION_KEY` changes (the old
//! key moved to `ENCRYPTION_OLD_KEYS`), re-wrapping a blob unwraps its data key with the old
//! master key and wraps it with the current one: only the 128-byte header changes, never the
//! data. A file's header is rewritten in place (it lies in the first disk sector) and synced; a
//! reader that catches it mid-write reads it again (see `BlobStore::read_with`).

use crate::format::{self, Header};
use crate::{BlobStore, Error, KeyError, Result};
use std::os::unix::fs::FileExt;

/// What re-wrapping one blob found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrap {
    /// Its data key was wrapped by an older master key; the current one wraps it now.
    Rewrapped,
    /// The current master key wraps it already.
    Current,
    /// Not wrapped by a master key: stored in plaintext, or sealed with a customer key (SSE-C).
    NotWrapped,
}

impl BlobStore {
    /// The header `hbuf` of blob `id` re-wrapped by the current master key, if it needs it.
    fn rewrapped_header(&self, id: &str, hbuf: &[u8]) -> Result<(Rewrap, Option<Vec<u8>>)> {
        let corrupt = |why: String| Error::Corrupt {
            id: id.to_string(),
            why,
        };
        let header = Header::decode(hbuf).map_err(corrupt)?;
        let Some(material) = header.crypto.as_ref().filter(|_| !header.customer_key) else {
            return Ok((Rewrap::NotWrapped, None));
        };
        let unknown = |key_id: String| Error::UnknownKey {
            id: id.to_string(),
            key_id,
        };
        let keys = self
            .inner
            .keys
            .as_ref()
            .ok_or_else(|| unknown(hex::encode(material.key_id)))?;
        match keys.rewrap(material) {
            Ok(None) => Ok((Rewrap::Current, None)),
            Ok(Some(m)) => {
                let mut out = Vec::with_capacity(format::HEADER_LEN);
                Header::new(header.chunk_size, Some(m), false).encode_into(&mut out);
                Ok((Rewrap::Rewrapped, Some(out)))
            }
            Err(KeyError::UnknownKey(k)) => Err(unknown(k)),
            Err(e) => Err(corrupt(e.to_string())),
        }
    }

    /// Re-wraps the data key of blob file `id` with the current master key.
    pub async fn rewrap_file(&self, id: &str) -> Result<Rewrap> {
        let path = self.blob_path(id);
        let store = self.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || -> Result<Rewrap> {
            let f = match std::fs::OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound(id)),
                Err(e) => return Err(e.into()),
            };
            let mut h = vec![0u8; format::HEADER_LEN];
            f.read_exact_at(&mut h, 0).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Error::Corrupt {
                    id: id.clone(),
                    why: "short header".into(),
                },
                _ => e.into(),
            })?;
            let (what, new) = store.rewrapped_header(&id, &h)?;
            if let Some(new) = new {
                f.write_all_at(&new, 0)?;
                f.sync_data()?;
            }
            Ok(what)
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?
    }

    /// An inline blob's encoded bytes with the data key re-wrapped by the current master key
    /// (`None` when they need no change).
    pub fn rewrap_inline(&self, id: &str, encoded: &[u8]) -> Result<(Rewrap, Option<Vec<u8>>)> {
        if encoded.len() < format::HEADER_LEN {
            return Err(Error::Corrupt {
                id: id.to_string(),
                why: "inline blob shorter than its header".into(),
            });
        }
        let (what, new) = self.rewrapped_header(id, &encoded[..format::HEADER_LEN])?;
        Ok((
            what,
            new.map(|mut h| {
                h.extend_from_slice(&encoded[format::HEADER_LEN..]);
                h
            }),
        ))
    }

    /// The shard directories of the blob files (`blobs/<2 characters>`), sorted.
    pub fn blob_shards(&self) -> std::io::Result<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(self.inner.root.join("blobs"))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        Ok(v)
    }

    /// The ids of the blob files in `shard`.
    pub fn blob_ids_in(&self, shard: &str) -> std::io::Result<Vec<String>> {
        match std::fs::read_dir(self.inner.root.join("blobs").join(shard)) {
            Ok(rd) => Ok(rd
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{BlobRef, EncryptionKey, Keyring, StorageConfig};
    use futures::StreamExt;

    async fn body(store: &BlobStore, blob: &BlobRef) -> Result<Vec<u8>> {
        let mut s = store.read(blob, 0, blob.size).await?;
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.map_err(Error::Io)?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_rotated_key_rewraps_headers_and_the_old_key_can_go() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StorageConfig {
            chunk_size: 4096,
            ..Default::default()
        };
        let (k1, k2) = (EncryptionKey::from_bytes([1; 32]), EncryptionKey::from_bytes([2; 32]));
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let old = BlobStore::open(dir.path(), cfg.clone(), Some(Keyring::new(k1.clone(), vec![]))).unwrap();
        let mut w = old.create().await.unwrap();
        w.write(&data).await.unwrap();
        let blob = w.finish().await.unwrap();
        let mut w = old.create_inline().unwrap();
        w.write(b"small").await.unwrap();
        let (iblob, encoded) = w.finish_inline().unwrap();
        let before = std::fs::read(old.path_of(&blob.id)).unwrap();

        // Rotated: k2 is current, k1 still configured as old.
        let rotated = BlobStore::open(dir.path(), cfg.clone(), Some(Keyring::new(k2.clone(), vec![k1]))).unwrap();
        assert_eq!(rotated.blob_shards().unwrap(), vec![blob.id[..2].to_string()]);
        assert_eq!(rotated.blob_ids_in(&blob.id[..2]).unwrap(), vec![blob.id.clone()]);
        assert_eq!(rotated.rewrap_file(&blob.id).await.unwrap(), Rewrap::Rewrapped);
        assert_eq!(rotated.rewrap_file(&blob.id).await.unwrap(), Rewrap::Current);
        let after = std::fs::read(rotated.path_of(&blob.id)).unwrap();
        assert_ne!(before[..format::HEADER_LEN], after[..format::HEADER_LEN]);
        assert_eq!(
            before[format::HEADER_LEN..],
            after[format::HEADER_LEN..],
            "the data is untouched"
        );
        let (what, new) = rotated.rewrap_inline(&iblob.id, &encoded).unwrap();
        assert_eq!(what, Rewrap::Rewrapped);
        let new = bytes::Bytes::from(new.unwrap());
        assert_eq!(rotated.rewrap_inline(&iblob.id, &new).unwrap(), (Rewrap::Current, None));

        // Only k2 now: everything still reads.
        let only_new = BlobStore::open(dir.path(), cfg.clone(), Some(Keyring::new(k2, vec![]))).unwrap();
        assert_eq!(body(&only_new, &blob).await.unwrap(), data);
        let mut s = only_new.read_inline(&iblob, new, 0, iblob.size).await.unwrap();
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b"small");
        // Without the key it was wrapped by, a blob is reported, not damaged.
        let unrelated = BlobStore::open(
            dir.path(),
            cfg,
            Some(Keyring::new(EncryptionKey::from_bytes([3; 32]), vec![])),
        )
        .unwrap();
        let err = unrelated.rewrap_file(&blob.id).await.unwrap_err();
        assert!(matches!(err, Error::UnknownKey { .. }), "{err:?}");
        assert_eq!(std::fs::read(only_new.path_of(&blob.id)).unwrap(), after);
    }

    #[tokio::test]
    async fn plaintext_and_missing_blobs_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let plain = BlobStore::open(dir.path(), StorageConfig::default(), None).unwrap();
        let mut w = plain.create().await.unwrap();
        w.write(b"plain").await.unwrap();
        let blob = w.finish().await.unwrap();
        let keyed = BlobStore::open(
            dir.path(),
            StorageConfig::default(),
            Some(Keyring::new(EncryptionKey::from_bytes([1; 32]), vec![])),
        )
        .unwrap();
        assert_eq!(keyed.rewrap_file(&blob.id).await.unwrap(), Rewrap::NotWrapped);
        assert!(matches!(keyed.rewrap_file("ffnope").await, Err(Error::NotFound(_))));
    }
}
