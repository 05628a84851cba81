//! The durable log of a `pbft` replica: a [`Store`] trait, [`RocksStore`]
//! on RocksDB and [`MemStore`] in memory, which pass one conformance suite
//! (`tests/conformance.rs`).
//!
//! A replica must never forget what it promised: after a crash it must not
//! vote a second digest at a (view, seq) where it already voted, and a
//! request a client saw committed must survive. The replica writes its
//! promises as a [`WriteBatch`] of [`Op`]s, atomically, and sends the
//! messages that promise them only after [`Store::sync`] (persist before
//! send). On restart, [`Store::recover`] returns a [`Recovered`] with
//! everything it needs to resume, including the vote guard
//! [`Recovered::check_vote`].
//!
//! # Example
//!
//! ```
//! use pbft_storage::{MemStore, Op, Store, VoteKind, WriteBatch};
//! use pbft_types::{Digest, Prepare, ReplicaId, SeqNo, Signature, Signed, View};
//!
//! let store = MemStore::new();
//! let prepare = Signed {
//!     value: Prepare { view: View(1), seq: SeqNo(5), digest: Digest([7; 32]) },
//!     signer: ReplicaId(2),
//!     signature: Signature([0; 64]),
//! };
//! store.write(&WriteBatch::new().with(Op::PutPrepare(prepare)))?;
//! store.sync()?; // only now may the prepare be sent
//!
//! // After a restart the replica refuses to prepare another digest there.
//! let recovered = store.reopen().recover()?;
//! assert_eq!(recovered.own_vote(VoteKind::Prepare, View(1), SeqNo(5)), Some(Digest([7; 32])));
//! assert!(recovered.check_vote(VoteKind::Prepare, View(1), SeqNo(5), Digest([8; 32])).is_err());
//! assert!(recovered.check_vote(VoteKind::Prepare, View(1), SeqNo(5), Digest([7; 32])).is_ok());
//! # Ok::<(), pbft_storage::StoreError>(())
//! ```
//!
//! The same with RocksDB in a temporary directory (the `rocksdb` feature,
//! on by default):
//!
//! ```
//! # #[cfg(feature = "rocksdb")] {
//! use pbft_storage::{Op, RocksConfig, RocksStore, Store, WriteBatch};
//! use pbft_types::{SeqNo, View};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = RocksStore::open(dir.path(), RocksConfig::default())?;
//! let view = pbft_storage::ViewState { view: View(3), ..Default::default() };
//! store.write(&WriteBatch::new().with(Op::PutViewState(view)))?;
//! drop(store);
//! let store = RocksStore::open(dir.path(), RocksConfig::default())?;
//! assert_eq!(store.recover()?.highest_view(), View(3));
//! # }
//! # Ok::<(), pbft_storage::StoreError>(())
//! ```
//!
//! # Mapping from the core's persist outputs
//!
//! The node turns each `Output::Persist { id, records }` of `pbft-core`
//! into one [`WriteBatch`], writes it, calls [`Store::sync`] (or, in
//! [`Durability::GroupCommit`], syncs once for the batches of several
//! steps), and only then feeds `Input::PersistDone(id)` back to the core,
//! which releases the messages that depend on it. Record by record:
//!
//! | `pbft_core::PersistRecord`                   | [`Op`]s |
//! |----------------------------------------------|---------|
//! | `PrePrepare { pre_prepare, batch }`          | [`Op::PutPrePrepare`] |
//! | `Prepare(p)`                                 | [`Op::PutPrepare`] |
//! | `Commit(c)`                                  | [`Op::PutCommit`] |
//! | `CommittedBatch { pre_prepare, batch, commits }` | [`Op::PutCommitted`] |
//! | `Checkpoint { checkpoint, snapshot }`        | [`Op::PutCheckpoint`] + [`Op::PutSnapshot`] at `checkpoint.value.seq` |
//! | `StableCheckpoint(cert)`                     | [`Op::PutStableCheckpoint`] + [`Op::TruncateBelow`]`(cert.value.seq)` |
//! | view change / new view (issue 4)             | [`Op::PutViewState`], [`Op::PutPreparedCert`] |
//! | reply table, if kept outside the snapshot    | [`Op::PutReply`] |
//!
//! On restart the node hands [`Recovered`] to the core: the highest view
//! ([`Recovered::highest_view`]), its own votes (the core must refuse a
//! second digest, see [`Recovered::check_vote`]), the pre-prepared batches
//! in the window, the stable checkpoint with its proof and snapshot, and
//! the reply table.
//!
//! # Layout on disk ([`RocksStore`])
//!
//! One column family per kind of record; keys are big-endian so that
//! RocksDB's byte order is numeric order. Records of a (view, seq) are
//! keyed `seq ‖ view` (16 bytes), records of a seq by `seq` (8 bytes), so
//! that [`Op::TruncateBelow`] is one range deletion per column family.
//!
//! | column family   | key            | value |
//! |-----------------|----------------|-------|
//! | `meta`          | `format_version`, `view_state`, `stable_checkpoint` | `u32`, [`ViewState`], `QuorumCert<Checkpoint>` |
//! | `pre_prepare`   | `seq ‖ view`   | [`PrePrepareRecord`] |
//! | `prepare`       | `seq ‖ view`   | `Signed<Prepare>` |
//! | `commit`        | `seq ‖ view`   | `Signed<Commit>` |
//! | `prepared_cert` | `seq ‖ view`   | `PreparedCert` |
//! | `committed`     | `seq`          | [`CommittedRecord`] |
//! | `checkpoint`    | `seq`          | `Signed<Checkpoint>` |
//! | `snapshot`      | `seq`          | raw bytes |
//! | `reply`         | `client`       | [`ReplyEntry`] |
//!
//! Values use the canonical encoding of `pbft-types` (postcard) and are
//! decoded with the size limits of [`StoreLimits`]; a damaged key or value
//! is a typed [`StoreError`], never a panic.
//!
//! # Durability and the write-ahead log
//!
//! See [`Durability`] for the three modes and [`WalRecovery`] for the
//! recovery mode. In short: the store opens with RocksDB's
//! `AbsoluteConsistency`, so that every damaged log is *detected*; by
//! default it then accepts dropping an incomplete tail record
//! (`TolerateCorruptedTailRecords`), which after a crash can only be the
//! write that was never acknowledged, and reports that in
//! [`RocksStore::open_report`]. It never uses `PointInTime` recovery,
//! which silently stops replaying at the first corruption and would drop
//! acknowledged, synced votes behind it.
//!
//! # Errors
//!
//! A failed write or sync is fatal ([`StoreError::is_fatal`]): the store
//! poisons itself and the replica must stop rather than continue with a
//! state it cannot vouch for.

mod batch;
mod codec;
mod config;
mod error;
mod mem_store;
mod recovered;
#[cfg(feature = "rocksdb")]
mod rocks_store;
mod store;

pub use batch::{CommittedRecord, Op, PrePrepareRecord, ReplyEntry, ViewState, WriteBatch};
pub use config::{Durability, RocksConfig, StoreLimits, WalRecovery};
pub use error::StoreError;
pub use mem_store::MemStore;
pub use recovered::{Recovered, VoteConflict, VoteKind};
#[cfg(feature = "rocksdb")]
pub use rocks_store::{OpenReport, RocksStore};
pub use store::Store;
