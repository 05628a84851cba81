//! The conformance suite: every test runs against `MemStore` and
//! `RocksStore`, and both must behave the same.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pbft_storage::{
    MemStore, Op, Recovered, RocksConfig, RocksStore, Store, StoreError, StoreLimits, VoteKind,
    WriteBatch,
};
use pbft_types::{ClientId, Digest, SeqNo, View};

/// A store under test and how to restart it.
trait Fixture: Sized {
    type S: Store;
    fn with_limits(limits: StoreLimits) -> Self;
    fn new() -> Self {
        Self::with_limits(StoreLimits::default())
    }
    fn store(&self) -> &Self::S;
    /// A clean restart that keeps the data.
    fn reopen(self) -> Self;
}

struct Mem(MemStore);

impl Fixture for Mem {
    type S = MemStore;
    fn with_limits(limits: StoreLimits) -> Self {
        Self(MemStore::with_limits(limits))
    }
    fn store(&self) -> &MemStore {
        &self.0
    }
    fn reopen(self) -> Self {
        Self(self.0.reopen())
    }
}

struct Rocks {
    store: RocksStore,
    config: RocksConfig,
    dir: tempfile::TempDir,
}

impl Fixture for Rocks {
    type S = RocksStore;
    fn with_limits(limits: StoreLimits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = RocksConfig {
            limits,
            ..RocksConfig::default()
        };
        let store = RocksStore::open(dir.path(), config).unwrap();
        Self { store, config, dir }
    }
    fn store(&self) -> &RocksStore {
        &self.store
    }
    fn reopen(self) -> Self {
        let Self { store, config, dir } = self;
        drop(store);
        let store = RocksStore::open(dir.path(), config).unwrap();
        Self { store, config, dir }
    }
}

fn write<F: Fixture>(f: &F, batch: WriteBatch) {
    f.store().write(&batch).unwrap();
    f.store().sync().unwrap();
}

fn recover<F: Fixture>(f: &F) -> Recovered {
    f.store().recover().unwrap()
}

fn empty_store_recovers_nothing<F: Fixture>() {
    let f = F::new();
    assert_eq!(recover(&f), Recovered::default());
    let f = f.reopen();
    let r = recover(&f);
    assert_eq!(r, Recovered::default());
    assert_eq!(r.highest_view(), View::ZERO);
    assert_eq!(r.stable_snapshot(), None);
}

fn every_record_round_trips_across_reopen<F: Fixture>() {
    let f = F::new();
    let mut batch = all_ops(2, 7);
    batch.push(Op::PutViewState(view_state(3, true)));
    batch.push(Op::PutStableCheckpoint(stable(7)));
    batch.push(Op::PutReply {
        client: ClientId(42),
        entry: reply_entry(42, 9),
    });
    write(&f, batch.clone());
    let before = recover(&f);
    let f = f.reopen();
    let r = recover(&f);
    assert_eq!(r, before);

    let d = digest(7 * 10 + 2);
    let key = (View(2), SeqNo(7));
    assert_eq!(r.view_state, Some(view_state(3, true)));
    assert_eq!(r.pre_prepares[&key], pre_prepare(2, 7, d, batch_of(&batch)));
    assert_eq!(r.prepares[&key], prepare(2, 7, d));
    assert_eq!(r.commits[&key], commit(2, 7, d));
    assert_eq!(r.prepared_certs[&key], prepared_cert(2, 7, d));
    assert_eq!(r.committed[&SeqNo(7)], committed(2, 7, d));
    assert_eq!(r.checkpoints[&SeqNo(7)], checkpoint(7));
    assert_eq!(r.stable_checkpoint, Some(stable(7)));
    assert_eq!(r.stable_snapshot(), Some(&[7u8; 100][..]));
    assert_eq!(r.replies[&ClientId(42)], reply_entry(42, 9));
    assert_eq!(r.highest_view(), View(3));
}

fn batch_of(b: &WriteBatch) -> pbft_types::Batch {
    match &b.ops()[0] {
        Op::PutPrePrepare(r) => r.batch.clone(),
        _ => unreachable!(),
    }
}

fn later_writes_replace_earlier_ones<F: Fixture>() {
    let f = F::new();
    write(
        &f,
        WriteBatch::new()
            .with(Op::PutViewState(view_state(1, false)))
            .with(Op::PutStableCheckpoint(stable(4)))
            .with(Op::PutReply {
                client: ClientId(1),
                entry: reply_entry(1, 1),
            }),
    );
    write(
        &f,
        WriteBatch::new()
            .with(Op::PutViewState(view_state(2, true)))
            .with(Op::PutStableCheckpoint(stable(8)))
            .with(Op::PutReply {
                client: ClientId(1),
                entry: reply_entry(1, 2),
            }),
    );
    let f = f.reopen();
    let r = recover(&f);
    assert_eq!(r.view_state, Some(view_state(2, true)));
    assert_eq!(r.stable_checkpoint, Some(stable(8)));
    assert_eq!(r.replies.len(), 1);
    assert_eq!(r.replies[&ClientId(1)], reply_entry(1, 2));
}

fn truncate_below_removes_only_lower_seqs<F: Fixture>() {
    let f = F::new();
    for seq in 1..=20 {
        for view in [0, 1, 300] {
            write(&f, all_ops(view, seq));
        }
    }
    write(
        &f,
        WriteBatch::new()
            .with(Op::PutViewState(view_state(300, false)))
            .with(Op::PutReply {
                client: ClientId(5),
                entry: reply_entry(5, 1),
            })
            .with(Op::PutStableCheckpoint(stable(10)))
            .with(Op::TruncateBelow(SeqNo(10))),
    );
    let f = f.reopen();
    let r = recover(&f);
    let seqs = |keys: Vec<SeqNo>| {
        assert!(keys.iter().all(|s| *s >= SeqNo(10)), "{keys:?}");
        keys.len()
    };
    assert_eq!(seqs(r.pre_prepares.keys().map(|k| k.1).collect()), 33);
    assert_eq!(seqs(r.prepares.keys().map(|k| k.1).collect()), 33);
    assert_eq!(seqs(r.commits.keys().map(|k| k.1).collect()), 33);
    assert_eq!(seqs(r.prepared_certs.keys().map(|k| k.1).collect()), 33);
    assert_eq!(seqs(r.committed.keys().copied().collect()), 11);
    assert_eq!(seqs(r.checkpoints.keys().copied().collect()), 11);
    assert_eq!(seqs(r.snapshots.keys().copied().collect()), 11);
    assert_eq!(r.stable_checkpoint, Some(stable(10)));
    assert_eq!(r.stable_snapshot(), Some(&[10u8; 100][..]));
    assert_eq!(r.replies.len(), 1);
    assert_eq!(r.highest_view(), View(300));

    // Truncating below 0 is a no-op; truncating twice is idempotent.
    write(&f, WriteBatch::new().with(Op::TruncateBelow(SeqNo(0))));
    write(&f, WriteBatch::new().with(Op::TruncateBelow(SeqNo(10))));
    assert_eq!(recover(&f), r);
}

fn operations_apply_in_order<F: Fixture>() {
    let f = F::new();
    let mut b = all_ops(0, 3);
    b.push(Op::TruncateBelow(SeqNo(5)));
    write(&f, b);
    let mut b = WriteBatch::new().with(Op::TruncateBelow(SeqNo(5)));
    b.extend(all_ops(1, 4).ops().iter().cloned());
    write(&f, b);
    let f = f.reopen();
    let r = recover(&f);
    assert_eq!(
        r.prepares.keys().collect::<Vec<_>>(),
        [&(View(1), SeqNo(4))]
    );
    assert_eq!(r.committed.keys().collect::<Vec<_>>(), [&SeqNo(4)]);
}

fn restarted_replica_refuses_a_second_digest<F: Fixture>() {
    let f = F::new();
    let (view, seq) = (View(4), SeqNo(17));
    let voted = digest(1);
    write(
        &f,
        WriteBatch::new().with(Op::PutPrePrepare(pre_prepare(
            4,
            17,
            voted,
            batch(17, 4, 32),
        ))),
    );
    write(
        &f,
        WriteBatch::new().with(Op::PutPrepare(prepare(4, 17, voted))),
    );
    write(
        &f,
        WriteBatch::new().with(Op::PutCommit(commit(4, 17, voted))),
    );
    let f = f.reopen();
    let r = recover(&f);
    for kind in [VoteKind::PrePrepare, VoteKind::Prepare, VoteKind::Commit] {
        assert_eq!(r.own_vote(kind, view, seq), Some(voted));
        let conflict = r.check_vote(kind, view, seq, digest(2)).unwrap_err();
        assert_eq!((conflict.voted, conflict.proposed), (voted, digest(2)));
        // The same digest again (a retransmission) is fine.
        r.check_vote(kind, view, seq, voted).unwrap();
        // Another view or sequence number is not constrained.
        r.check_vote(kind, View(5), seq, digest(2)).unwrap();
        r.check_vote(kind, view, SeqNo(18), digest(2)).unwrap();
    }
    assert_eq!(r.highest_view(), view);
    assert_eq!(r.pre_prepares[&(view, seq)].batch, batch(17, 4, 32));
}

fn oversized_value_is_refused_and_nothing_written<F: Fixture>() {
    let f = F::with_limits(StoreLimits {
        record_bytes_max: 1024,
        snapshot_bytes_max: 64,
    });
    let big = WriteBatch::new()
        .with(Op::PutPrepare(prepare(0, 1, digest(1))))
        .with(Op::PutPrePrepare(pre_prepare(
            0,
            1,
            digest(1),
            batch(1, 10, 200),
        )));
    let err = f.store().write(&big).unwrap_err();
    assert!(
        matches!(err, StoreError::ValueTooLarge { limit: 1024, .. }),
        "{err}"
    );
    assert!(!err.is_fatal());
    let snap = WriteBatch::new()
        .with(Op::PutPrepare(prepare(0, 2, digest(2))))
        .with(Op::PutSnapshot {
            seq: SeqNo(2),
            snapshot: vec![0; 65],
        });
    let err = f.store().write(&snap).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::ValueTooLarge {
                limit: 64,
                got: 65,
                ..
            }
        ),
        "{err}"
    );
    // The store is still usable and holds nothing of the refused batches.
    write(
        &f,
        WriteBatch::new().with(Op::PutPrepare(prepare(0, 3, digest(3)))),
    );
    let f = f.reopen();
    let r = recover(&f);
    assert_eq!(
        r.prepares.keys().collect::<Vec<_>>(),
        [&(View(0), SeqNo(3))]
    );
}

fn commit_group_writes_every_batch<F: Fixture>() {
    let f = F::new();
    let batches: Vec<WriteBatch> = (1..=5).map(|s| all_ops(0, s)).collect();
    f.store().commit_group(&batches).unwrap();
    let f = f.reopen();
    assert_eq!(recover(&f).committed.len(), 5);
}

fn empty_batch_is_fine<F: Fixture>() {
    let f = F::new();
    write(&f, WriteBatch::new());
    assert_eq!(recover(&f.reopen()), Recovered::default());
}

fn digests_differ_per_view<F: Fixture>() {
    // The same seq in two views may hold different digests (a view change
    // re-proposes): both are kept, each guarding its own view.
    let f = F::new();
    write(
        &f,
        WriteBatch::new().with(Op::PutPrepare(prepare(0, 1, digest(1)))),
    );
    write(
        &f,
        WriteBatch::new().with(Op::PutPrepare(prepare(1, 1, Digest::ZERO))),
    );
    let r = recover(&f.reopen());
    assert_eq!(
        r.own_vote(VoteKind::Prepare, View(0), SeqNo(1)),
        Some(digest(1))
    );
    assert_eq!(
        r.own_vote(VoteKind::Prepare, View(1), SeqNo(1)),
        Some(Digest::ZERO)
    );
    assert_eq!(r.highest_view(), View(1));
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod mem_store {
            $( #[test] fn $name() { super::$name::<super::Mem>() } )*
        }
        mod rocks_store {
            $( #[test] fn $name() { super::$name::<super::Rocks>() } )*
        }
    };
}

suite!(
    empty_store_recovers_nothing,
    every_record_round_trips_across_reopen,
    later_writes_replace_earlier_ones,
    truncate_below_removes_only_lower_seqs,
    operations_apply_in_order,
    restarted_replica_refuses_a_second_digest,
    oversized_value_is_refused_and_nothing_written,
    commit_group_writes_every_batch,
    empty_batch_is_fine,
    digests_differ_per_view,
);
