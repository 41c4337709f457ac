#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Blob write (with and without fsync, plain and encrypted) and verified read.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::TryStreamExt;
use ironbucket_storage::{BlobStore, EncryptionKey, Keyring, StorageConfig};

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data_1m = vec![7u8; 1 << 20];
    let data_4k = vec![7u8; 4096];
    for (fsync, enc) in [(false, false), (true, false), (false, true)] {
        let dir = tempfile::tempdir().unwrap();
        let keys = enc.then(|| Keyring::new(EncryptionKey::from_bytes([1; 32]), vec![]));
        let store = BlobStore::open(
            dir.path(),
            StorageConfig {
                fsync,
                ..Default::default()
            },
            keys,
        )
        .unwrap();
        for (name, data) in [("4KiB", &data_4k), ("1MiB", &data_1m)] {
            let mut g = c.benchmark_group("blob write");
            g.throughput(Throughput::Bytes(data.len() as u64));
            g.sample_size(20);
            g.bench_function(format!("{name} fsync={fsync} encrypted={enc}"), |b| {
                b.iter(|| {
                    rt.block_on(async {
                        let mut w = store.create().await.unwrap();
                        w.write(data).await.unwrap();
                        let r = w.finish().await.unwrap();
                        store.delete(&r.id).await.unwrap();
                    })
                })
            });
            g.finish();
        }
        if !fsync {
            let blob = rt.block_on(async {
                let mut w = store.create().await.unwrap();
                w.write(&data_1m).await.unwrap();
                w.finish().await.unwrap()
            });
            let mut g = c.benchmark_group("blob read");
            g.throughput(Throughput::Bytes(1 << 20));
            g.bench_function(format!("1MiB verified encrypted={enc}"), |b| {
                b.iter(|| {
                    rt.block_on(async {
                        let s = store.read(&blob, 0, 1 << 20).await.unwrap();
                        let n: usize = s
                            .map_ok(|b| b.len())
                            .try_fold(0, |a, n| async move { Ok(a + n) })
                            .await
                            .unwrap();
                        assert_eq!(n, 1 << 20);
                    })
                })
            });
            g.finish();
        }
    }
}

criterion_group!(g, benches);
criterion_main!(g);
