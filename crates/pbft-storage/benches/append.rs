//! Appends per second of a record holding a batch of 128 requests of
//! 256 B, with sync on (`SyncEveryWrite`) and off (`NoSyncBenchmarksOnly`),
//! and the latency of one `fdatasync` of 4 KiB in the same filesystem.
//!
//! `cargo bench -p pbft-storage --bench append`; medians are in
//! `target/criterion/*/*/new/estimates.json`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::{
    io::{Seek, SeekFrom, Write},
    time::Duration,
};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pbft_storage::{Durability, Op, PrePrepareRecord, RocksConfig, RocksStore, Store, WriteBatch};
use pbft_types::{
    Authenticator, Batch, ClientId, ClientRequest, Digest, PrePrepare, ReplicaId, Request,
    RequestNo, SeqNo, Signature, Signed, View,
};

fn record(seq: u64) -> WriteBatch {
    let requests = (0..128u64)
        .map(|i| ClientRequest {
            value: Request {
                request_no: RequestNo(seq),
                read_only: false,
                op: vec![i as u8; 256],
            },
            signer: ClientId(i),
            auth: Authenticator::Signature(Signature([1; 64])),
        })
        .collect();
    let pre_prepare = Signed {
        value: PrePrepare {
            view: View(0),
            seq: SeqNo(seq),
            digest: Digest([2; 32]),
        },
        signer: ReplicaId(0),
        signature: Signature([3; 64]),
    };
    let mut b = WriteBatch::new().with(Op::PutPrePrepare(PrePrepareRecord {
        pre_prepare,
        batch: Batch { requests },
    }));
    if seq % 128 == 0 {
        b.push(Op::TruncateBelow(SeqNo(seq)));
    }
    b
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_128x256B");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(10));
    for (name, durability) in [
        ("sync", Durability::SyncEveryWrite),
        ("nosync", Durability::NoSyncBenchmarksOnly),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = RocksConfig {
            durability,
            ..RocksConfig::default()
        };
        let store = RocksStore::open(dir.path(), config).unwrap();
        let mut seq = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                seq += 1;
                store.write(&record(seq)).unwrap();
                store.sync().unwrap();
            })
        });
    }
    group.finish();
}

fn fsync(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut file = std::fs::File::create(dir.path().join("fsync")).unwrap();
    let page = [7u8; 4096];
    c.bench_function("fdatasync_4KiB", |b| {
        b.iter(|| {
            file.seek(SeekFrom::Start(0)).unwrap();
            file.write_all(&page).unwrap();
            file.sync_data().unwrap();
        })
    });
}

criterion_group!(benches, append, fsync);
criterion_main!(benches);
