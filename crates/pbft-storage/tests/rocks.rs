//! Tests specific to `RocksStore`: durability modes, damaged values, the
//! format version.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pbft_storage::{Durability, Op, RocksConfig, RocksStore, Store, StoreError, WriteBatch};
use pbft_types::{SeqNo, View};

fn config(durability: Durability) -> RocksConfig {
    RocksConfig {
        durability,
        ..RocksConfig::default()
    }
}

#[test]
fn every_durability_mode_keeps_writes_across_a_clean_reopen() {
    for mode in [
        Durability::SyncEveryWrite,
        Durability::GroupCommit,
        Durability::NoSyncBenchmarksOnly,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), config(mode)).unwrap();
        assert_eq!(store.durability(), mode);
        for seq in 1..=10 {
            store.write(&all_ops(0, seq)).unwrap();
            if seq % 4 == 0 {
                store.sync().unwrap();
            }
        }
        store.sync().unwrap();
        store.sync().unwrap(); // nothing pending: free
        drop(store);
        let store = RocksStore::open(dir.path(), config(mode)).unwrap();
        assert_eq!(store.recover().unwrap().committed.len(), 10, "{mode:?}");
    }
}

/// Opens the database behind the store's back and writes raw bytes.
fn raw_put(dir: &std::path::Path, cf: &str, key: &[u8], value: &[u8]) {
    let mut opts = rocksdb::Options::default();
    opts.create_missing_column_families(true);
    let cfs = rocksdb::DB::list_cf(&opts, dir).unwrap();
    let db = rocksdb::DB::open_cf(&opts, dir, cfs).unwrap();
    db.put_cf(db.cf_handle(cf).unwrap(), key, value).unwrap();
}

fn store_with_one_prepare() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), RocksConfig::default()).unwrap();
    store
        .write(&WriteBatch::new().with(Op::PutPrepare(prepare(1, 2, digest(2)))))
        .unwrap();
    dir
}

fn recover_err(dir: &std::path::Path) -> StoreError {
    let store = RocksStore::open(dir, RocksConfig::default()).unwrap();
    store.recover().unwrap_err()
}

#[test]
fn corrupt_value_is_a_typed_error() {
    let dir = store_with_one_prepare();
    let mut key = 2u64.to_be_bytes().to_vec();
    key.extend_from_slice(&1u64.to_be_bytes());
    raw_put(dir.path(), "prepare", &key, &[0xff; 7]);
    let err = recover_err(dir.path());
    println!("{err}");
    assert!(
        matches!(err, StoreError::CorruptValue { cf: "prepare", .. }),
        "{err:?}"
    );
    assert!(err.is_fatal());
}

#[test]
fn huge_length_prefix_does_not_allocate() {
    let dir = store_with_one_prepare();
    // A pre-prepare record whose batch claims u64::MAX requests.
    let mut value =
        pbft_types::to_canonical_bytes(&pre_prepare(0, 5, digest(5), Default::default())).unwrap();
    value.pop();
    value.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    let mut key = 5u64.to_be_bytes().to_vec();
    key.extend_from_slice(&0u64.to_be_bytes());
    raw_put(dir.path(), "pre_prepare", &key, &value);
    let err = recover_err(dir.path());
    assert!(
        matches!(
            err,
            StoreError::CorruptValue {
                cf: "pre_prepare",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn corrupt_key_is_a_typed_error() {
    let dir = store_with_one_prepare();
    raw_put(dir.path(), "commit", &[1, 2, 3], &[0]);
    let err = recover_err(dir.path());
    assert!(
        matches!(
            err,
            StoreError::CorruptKey {
                cf: "commit",
                expected_len: 16,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn value_under_the_wrong_key_is_a_typed_error() {
    let dir = store_with_one_prepare();
    let value = pbft_types::to_canonical_bytes(&prepare(1, 2, digest(2))).unwrap();
    let mut key = 3u64.to_be_bytes().to_vec();
    key.extend_from_slice(&1u64.to_be_bytes());
    raw_put(dir.path(), "prepare", &key, &value);
    let err = recover_err(dir.path());
    assert!(
        matches!(err, StoreError::KeyMismatch { cf: "prepare", .. }),
        "{err:?}"
    );
}

#[test]
fn unknown_format_version_is_refused() {
    let dir = store_with_one_prepare();
    // A store of format 1 (requests with a bare signature) is refused, and
    // so is one from the future.
    for other in [1u8, 3] {
        raw_put(dir.path(), "meta", b"format_version", &[other]);
        let err = RocksStore::open(dir.path(), RocksConfig::default()).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::UnsupportedFormat { expected: 2, got } if got == u32::from(other)
            ),
            "{err:?}"
        );
    }
}

#[test]
fn a_second_open_of_the_same_directory_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let _store = RocksStore::open(dir.path(), RocksConfig::default()).unwrap();
    let err = RocksStore::open(dir.path(), RocksConfig::default()).unwrap_err();
    println!("{err}");
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
}

#[test]
fn truncation_with_compaction_keeps_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RocksConfig {
        compact_every_truncations: 1,
        ..RocksConfig::default()
    };
    let store = RocksStore::open(dir.path(), cfg).unwrap();
    for seq in 1..=64 {
        let mut b = all_ops(0, seq);
        if seq % 16 == 0 {
            b.push(Op::PutStableCheckpoint(stable(seq)));
            b.push(Op::TruncateBelow(SeqNo(seq)));
        }
        store.write(&b).unwrap();
    }
    let r = store.recover().unwrap();
    assert_eq!(
        r.prepares.keys().collect::<Vec<_>>(),
        [&(View(0), SeqNo(64))]
    );
    assert_eq!(r.stable_snapshot(), Some(&[64u8; 100][..]));
}
