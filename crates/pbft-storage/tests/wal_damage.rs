//! A damaged write-ahead log tail is detected and reported.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use pbft_storage::{
    Op, OpenReport, RocksConfig, RocksStore, Store, StoreError, WalRecovery, WriteBatch,
};
use pbft_types::{SeqNo, View};

const RECORDS: u64 = 20;

/// A closed store whose newest log holds `RECORDS` writes of ~45 KB.
fn closed_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), RocksConfig::default()).unwrap();
    for seq in 1..=RECORDS {
        let d = digest(seq);
        let b = WriteBatch::new()
            .with(Op::PutPrePrepare(pre_prepare(
                0,
                seq,
                d,
                batch(seq, 128, 256),
            )))
            .with(Op::PutPrepare(prepare(0, seq, d)));
        store.write(&b).unwrap();
    }
    drop(store);
    dir
}

fn newest_log(dir: &Path) -> PathBuf {
    let mut logs: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let n = p
                .file_name()?
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((n, p))
        })
        .collect();
    logs.sort();
    logs.pop().unwrap().1
}

fn strict() -> RocksConfig {
    RocksConfig {
        wal_recovery: WalRecovery::Strict,
        ..RocksConfig::default()
    }
}

fn prepared_seqs(store: &RocksStore) -> Vec<u64> {
    let r = store.recover().unwrap();
    r.prepares.keys().map(|k| k.1 .0).collect()
}

#[test]
fn intact_log_opens_clean() {
    let dir = closed_store();
    let store = RocksStore::open(dir.path(), strict()).unwrap();
    assert_eq!(store.open_report(), &OpenReport::Clean);
    assert_eq!(prepared_seqs(&store), (1..=RECORDS).collect::<Vec<_>>());
}

#[test]
fn truncated_log_tail_is_detected() {
    let dir = closed_store();
    let log = newest_log(dir.path());
    let len = std::fs::metadata(&log).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    file.set_len(len - 1000).unwrap();
    drop(file);

    // Strict: refuses to open, naming the damage.
    let err = RocksStore::open(dir.path(), strict()).unwrap_err();
    println!("strict open of a truncated log: {err}");
    assert!(matches!(err, StoreError::WalCorrupted { .. }), "{err:?}");
    assert!(err.is_fatal());

    // Default: opens without the torn record, and says so.
    let store = RocksStore::open(dir.path(), RocksConfig::default()).unwrap();
    let report = store.open_report().clone();
    println!("default open of a truncated log: {report:?}");
    assert!(matches!(report, OpenReport::TornTailDropped { .. }));
    assert_eq!(prepared_seqs(&store), (1..RECORDS).collect::<Vec<_>>());
    let r = store.recover().unwrap();
    assert!(r.pre_prepares.contains_key(&(View(0), SeqNo(RECORDS - 1))));
    // The store is usable again, and the next open is clean.
    store
        .write(&WriteBatch::new().with(Op::PutPrepare(prepare(0, 99, digest(99)))))
        .unwrap();
    drop(store);
    let store = RocksStore::open(dir.path(), strict()).unwrap();
    assert_eq!(store.open_report(), &OpenReport::Clean);
    assert!(prepared_seqs(&store).contains(&99));
}

fn flip_byte(log: &Path, offset: u64) {
    let mut bytes = std::fs::read(log).unwrap();
    let i = usize::try_from(offset).unwrap();
    bytes[i] ^= 0x5a;
    std::fs::write(log, bytes).unwrap();
}

#[test]
fn corrupted_record_in_the_middle_of_the_log_is_refused() {
    let dir = closed_store();
    let log = newest_log(dir.path());
    let len = std::fs::metadata(&log).unwrap().len();
    flip_byte(&log, len / 2);
    // Acknowledged records follow the damage: no mode may open silently.
    for config in [RocksConfig::default(), strict()] {
        let err = RocksStore::open(dir.path(), config).unwrap_err();
        println!(
            "open with {:?} of a log corrupted in the middle: {err}",
            config.wal_recovery
        );
        assert!(matches!(err, StoreError::WalCorrupted { .. }), "{err:?}");
    }
}

#[test]
fn corrupted_last_record_is_refused() {
    let dir = closed_store();
    let log = newest_log(dir.path());
    let len = std::fs::metadata(&log).unwrap().len();
    flip_byte(&log, len - 100);
    let err = RocksStore::open(dir.path(), strict()).unwrap_err();
    println!("strict open of a log with a corrupted last record: {err}");
    assert!(matches!(err, StoreError::WalCorrupted { .. }), "{err:?}");
    // A checksum mismatch is not an incomplete record: even the default
    // mode refuses, since the damaged record was complete (acknowledged).
    let err = RocksStore::open(dir.path(), RocksConfig::default()).unwrap_err();
    println!("default open of a log with a corrupted last record: {err}");
    assert!(matches!(err, StoreError::WalCorrupted { .. }), "{err:?}");
}
