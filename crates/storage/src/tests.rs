use super::*;
use futures::TryStreamExt;

async fn read_all(store: &BlobStore, b: &BlobRef, start: u64, end: u64) -> Result<Vec<u8>> {
    let s = store.read(b, start, end).await?;
    let chunks: Vec<Bytes> = s.try_collect().await.map_err(Error::Io)?;
    Ok(chunks.concat())
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn stores(dir: &Path) -> Vec<BlobStore> {
    let cfg = StorageConfig {
        fsync: false,
        chunk_size: 4096,
    };
    let ring = Keyring::new(EncryptionKey::from_bytes([9; 32]), vec![]);
    vec![
        BlobStore::open(&dir.join("plain"), cfg.clone(), None).unwrap(),
        BlobStore::open(&dir.join("enc"), cfg, Some(ring)).unwrap(),
    ]
}

#[tokio::test]
async fn round_trip_sizes_and_ranges() {
    let dir = tempfile::tempdir().unwrap();
    for store in stores(dir.path()) {
        for n in [0usize, 1, 4095, 4096, 4097, 3 * 4096, 50_000] {
            let body = data(n);
            let mut w = store.create().await.unwrap();
            for piece in body.chunks(1000) {
                w.write(piece).await.unwrap();
            }
            let b = w.finish().await.unwrap();
            assert_eq!(b.size, n as u64);
            assert_eq!(read_all(&store, &b, 0, n as u64).await.unwrap(), body);
            if n > 10 {
                for (s, e) in [(0, 1), (1, n - 1), (4095, 4097.min(n)), (n - 1, n), (n / 2, n)] {
                    assert_eq!(
                        read_all(&store, &b, s as u64, e as u64).await.unwrap(),
                        &body[s..e],
                        "n={n} {s}..{e}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn corruption_is_detected_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    for store in stores(dir.path()) {
        let body = data(10_000);
        let mut w = store.create().await.unwrap();
        w.write(&body).await.unwrap();
        let b = w.finish().await.unwrap();
        let path = store.path_of(&b.id);
        let mut raw = std::fs::read(&path).unwrap();
        raw[format::HEADER_LEN + 5000] ^= 0x40; // inside chunk 1
        std::fs::write(&path, &raw).unwrap();
        // Chunk 0 still reads; any range touching chunk 1 fails.
        assert_eq!(read_all(&store, &b, 0, 100).await.unwrap(), &body[..100]);
        assert!(read_all(&store, &b, 0, 10_000).await.is_err());
        // Truncation is detected too.
        std::fs::write(&path, &raw[..raw.len() - 10]).unwrap();
        assert!(read_all(&store, &b, 9000, 10_000).await.is_err());
    }
}

#[tokio::test]
async fn abandoned_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path(), StorageConfig::default(), None).unwrap();
    let mut w = store.create().await.unwrap();
    w.write(b"partial").await.unwrap();
    drop(w);
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
}

#[tokio::test]
async fn rotated_keys_still_read_and_unknown_key_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StorageConfig {
        fsync: false,
        chunk_size: 4096,
    };
    let k1 = EncryptionKey::from_bytes([1; 32]);
    let k2 = EncryptionKey::from_bytes([2; 32]);
    let s1 = BlobStore::open(dir.path(), cfg.clone(), Some(Keyring::new(k1.clone(), vec![]))).unwrap();
    let mut w = s1.create().await.unwrap();
    w.write(b"secret data").await.unwrap();
    let b = w.finish().await.unwrap();
    let raw = std::fs::read(s1.path_of(&b.id)).unwrap();
    assert!(
        !raw.windows(11).any(|w| w == b"secret data"),
        "plaintext must not be on disk"
    );
    let s2 = BlobStore::open(dir.path(), cfg.clone(), Some(Keyring::new(k2.clone(), vec![k1]))).unwrap();
    assert_eq!(read_all(&s2, &b, 0, 11).await.unwrap(), b"secret data");
    let s3 = BlobStore::open(dir.path(), cfg, Some(Keyring::new(k2, vec![]))).unwrap();
    assert!(matches!(s3.read(&b, 0, 11).await, Err(Error::UnknownKey { .. })));
}

#[tokio::test]
async fn inline_blobs_round_trip_and_detect_corruption() {
    let dir = tempfile::tempdir().unwrap();
    for store in stores(dir.path()) {
        for n in [0usize, 1, 4095, 4096, 10_000] {
            let body = data(n);
            let mut w = store.create_inline().unwrap();
            assert!(w.is_inline() && BlobStore::is_inline(w.id()));
            w.write(&body).await.unwrap();
            let (b, enc) = w.finish_inline().unwrap();
            assert_eq!(b.size, n as u64);
            let s = store.read_inline(&b, enc.clone(), 0, n as u64).await.unwrap();
            let got: Vec<Bytes> = s.try_collect().await.unwrap();
            assert_eq!(got.concat(), body);
            if n > 10 {
                let s = store.read_inline(&b, enc.clone(), 5, n as u64 - 3).await.unwrap();
                let got: Vec<Bytes> = s.try_collect().await.unwrap();
                assert_eq!(got.concat(), &body[5..n - 3]);
                let mut bad = enc.to_vec();
                let at = bad.len() - 20;
                bad[at] ^= 1;
                assert!(store.read_inline(&b, Bytes::from(bad), 0, n as u64).await.is_err());
            }
        }
        // Nothing was written to disk for inline blobs.
        assert_eq!(std::fs::read_dir(store.root().join("blobs")).unwrap().count(), 0);
    }
}

#[tokio::test]
async fn customer_keys_seal_blobs_without_storing_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for store in stores(dir.path()) {
        let ck = CustomerKey::from_bytes([42; 32]);
        let wrong = CustomerKey::from_bytes([43; 32]);
        let body = data(200_000);
        let mut w = store.create_with(Some(&ck)).await.unwrap();
        w.write(&body).await.unwrap();
        let b = w.finish().await.unwrap();
        let raw = std::fs::read(store.path_of(&b.id)).unwrap();
        assert!(
            !raw.windows(64).any(|w| w == &body[1000..1064]),
            "plaintext must not be on disk"
        );
        assert!(!raw.windows(32).any(|w| w == [42u8; 32]), "the key must not be on disk");
        let got: Vec<Bytes> = store
            .read_with(&b, 10, 150_000, Some(&ck))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got.concat(), &body[10..150_000]);
        assert!(matches!(
            store.read(&b, 0, 10).await,
            Err(Error::CustomerKeyRequired(_))
        ));
        assert!(matches!(
            store.read_with(&b, 0, 10, Some(&wrong)).await,
            Err(Error::CustomerKeyMismatch(_))
        ));
        let mut w = store.create_inline_with(Some(&ck)).unwrap();
        w.write(b"tiny").await.unwrap();
        let (b, enc) = w.finish_inline().unwrap();
        let got: Vec<Bytes> = store
            .read_inline_with(&b, enc.clone(), 0, 4, Some(&ck))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got.concat(), b"tiny");
        assert!(store.read_inline(&b, enc, 0, 4).await.is_err());
    }
}
