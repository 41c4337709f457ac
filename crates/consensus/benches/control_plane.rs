#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The control plane's cost as its state grows: one CreateBucket applied through the Raft state
//! machine (the apply and the durable redb commit of what it changed) with 1,000, 10,000 and
//! 100,000 buckets already there, and the process's resident memory with that state loaded.
//! A flat per-operation time is the point: an apply must cost in proportion to the change, not
//! to the state.

use criterion::{Criterion, criterion_group, criterion_main};
use ironbucket_consensus::records::Bucket;
use ironbucket_consensus::{Applied, Command, StateMachine, TypeConfig};
use ironbucket_meta::RaftDb;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, SnapshotMeta};
use std::time::Duration;

fn bucket(name: String) -> Bucket {
    Bucket {
        name,
        created: 1_700_000_000_000,
        ..Default::default()
    }
}

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

/// Resident memory of this process in MiB (Linux).
fn rss_mib() -> f64 {
    let pages: f64 = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse().ok()))
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn control_plane(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("control_plane");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    for n in [1_000u64, 10_000, 100_000] {
        let dir = tempfile::tempdir().unwrap();
        let db = RaftDb::open(&dir.path().join("raft.redb")).unwrap();
        let mut sm = StateMachine::open(db, &dir.path().join("snapshots")).unwrap();
        // Start from a snapshot holding `n` buckets (the fast way to get there).
        let mut applied = Applied::default();
        for i in 0..n {
            let b = bucket(format!("bucket-{i:07}"));
            applied.state.buckets.insert(b.name.clone(), b);
        }
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(n)),
            last_membership: Default::default(),
            snapshot_id: format!("bench-{n}"),
        };
        let data = serde_json::to_vec(&applied).unwrap();
        drop(applied);
        rt.block_on(async {
            use tokio::io::AsyncWriteExt;
            let mut f = sm.begin_receiving_snapshot().await.unwrap();
            f.write_all(&data).await.unwrap();
            drop(data);
            sm.install_snapshot(&meta, f).await.unwrap();
        });
        eprintln!(
            "control_plane: {n} buckets loaded, resident memory {:.1} MiB",
            rss_mib()
        );
        let mut next = n;
        g.bench_function(format!("create_bucket_at_{n}_buckets"), |b| {
            b.iter(|| {
                next += 1;
                let e: Entry<TypeConfig> = Entry {
                    log_id: log_id(next),
                    payload: EntryPayload::Normal(Command::CreateBucket {
                        record: bucket(format!("new-{next:09}")),
                        owner: None,
                    }),
                };
                rt.block_on(sm.apply(vec![e])).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, control_plane);
criterion_main!(benches);
