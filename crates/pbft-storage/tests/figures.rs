//! The figures of the report, as ignored tests that print them:
//!
//! ```text
//! cargo test -p pbft-storage --test figures -- --ignored --nocapture --test-threads=1
//! ```
//!
//! They run in the dev profile, where dependencies (RocksDB, postcard) are
//! optimized; the criterion bench `benches/append.rs` measures the same in
//! release.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::{Seek, SeekFrom, Write},
    time::{Duration, Instant},
};

use common::*;
use pbft_storage::{Durability, Op, RocksConfig, RocksStore, Store, WriteBatch};
use pbft_types::SeqNo;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// 1M requests of 64 B in batches of 128 (7,813 sequence numbers); per
/// sequence number the replica's pre-prepare with the batch, its prepare
/// and its commit; a checkpoint (64 KiB snapshot) every 128 sequence
/// numbers, made stable and truncated below at once.
#[test]
#[ignore = "prints a figure; takes tens of seconds"]
fn disk_bytes_after_one_million_requests() {
    for compact_every_truncations in [8, 0] {
        let dir = tempfile::tempdir().unwrap();
        let config = RocksConfig {
            compact_every_truncations,
            ..RocksConfig::default()
        };
        let store = RocksStore::open(dir.path(), config).unwrap();
        let requests: u64 = std::env::var("PBFT_DISK_REQUESTS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000);
        let seqs = requests.div_ceil(128);
        let started = Instant::now();
        let mut peak = 0;
        for seq in 1..=seqs {
            let d = digest(seq);
            let mut b = WriteBatch::new()
                .with(Op::PutPrePrepare(pre_prepare(
                    0,
                    seq,
                    d,
                    batch(seq, 128, 64),
                )))
                .with(Op::PutPrepare(prepare(0, seq, d)))
                .with(Op::PutCommit(commit(0, seq, d)));
            if seq % 128 == 0 {
                b.push(Op::PutCheckpoint(checkpoint(seq)));
                b.push(Op::PutSnapshot {
                    seq: SeqNo(seq),
                    snapshot: vec![1; 64 * 1024],
                });
                b.push(Op::PutStableCheckpoint(stable(seq)));
                b.push(Op::TruncateBelow(SeqNo(seq)));
            }
            store.write(&b).unwrap();
            if seq % 128 == 0 {
                peak = peak.max(store.disk_bytes().unwrap());
            }
        }
        let end = store.disk_bytes().unwrap();
        let r = store.recover().unwrap();
        println!(
            "compact_every_truncations={compact_every_truncations}: {requests} requests \
             ({seqs} batches) in {:.1} s: {end} bytes on disk at the end, peak {peak} \
             (sampled at each checkpoint); {} batches in the window",
            started.elapsed().as_secs_f64(),
            r.pre_prepares.len()
        );
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), e.metadata().unwrap().len())
            })
            .collect();
        files.sort();
        println!("  files: {files:?}");
    }
}

fn append_record(seq: u64) -> WriteBatch {
    let mut b = WriteBatch::new().with(Op::PutPrePrepare(pre_prepare(
        0,
        seq,
        digest(seq),
        batch(seq, 128, 256),
    )));
    if seq % 128 == 0 {
        b.push(Op::TruncateBelow(SeqNo(seq)));
    }
    b
}

/// Appends/s of a record holding 128 requests of 256 B, sync on and off,
/// and the fdatasync latency of 4 KiB, as medians of single operations.
#[test]
#[ignore = "prints a figure"]
fn append_and_fsync_medians() {
    for (durability, n) in [
        (Durability::SyncEveryWrite, 1000),
        (Durability::NoSyncBenchmarksOnly, 5000),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = RocksConfig {
            durability,
            ..RocksConfig::default()
        };
        let store = RocksStore::open(dir.path(), config).unwrap();
        let records: Vec<WriteBatch> = (1..=n).map(append_record).collect();
        let mut samples = Vec::with_capacity(records.len());
        let started = Instant::now();
        for b in &records {
            let t = Instant::now();
            store.write(b).unwrap();
            store.sync().unwrap();
            samples.push(t.elapsed());
        }
        let total = started.elapsed();
        let m = median(samples);
        println!(
            "{durability:?}: median append {:.1} us -> {:.0} appends/s (mean {:.0} appends/s over {n})",
            m.as_secs_f64() * 1e6,
            1.0 / m.as_secs_f64(),
            f64::from(n as u32) / total.as_secs_f64()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut file = std::fs::File::create(dir.path().join("fsync")).unwrap();
    let page = [7u8; 4096];
    let samples = (0..1000)
        .map(|_| {
            let t = Instant::now();
            file.seek(SeekFrom::Start(0)).unwrap();
            file.write_all(&page).unwrap();
            file.sync_data().unwrap();
            t.elapsed()
        })
        .collect();
    println!(
        "fdatasync of 4 KiB in {}: median {:.1} us",
        dir.path().display(),
        median(samples).as_secs_f64() * 1e6
    );
}
