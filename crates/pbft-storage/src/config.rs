//! Configuration: durability modes, WAL recovery and limits.

use pbft_types::MESSAGE_BYTES_MAX_DEFAULT;

/// When a write becomes durable against power loss.
///
/// The contract is the same in every mode: **write, then call
/// [`Store::sync`](crate::Store::sync) before sending any message that
/// promises what was written** (persist before send). Only the cost of
/// `sync` differs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Every [`Store::write`](crate::Store::write) is synced to stable
    /// storage before it returns (`WriteOptions::set_sync(true)`);
    /// [`Store::sync`](crate::Store::sync) is then free. The default.
    #[default]
    SyncEveryWrite,
    /// Writes reach the operating system (they survive a process crash, not
    /// a power loss) and [`Store::sync`](crate::Store::sync) makes all of
    /// them durable with one `fsync` of the log (`flush_wal(true)`). The
    /// node writes the records of several protocol steps, syncs once, and
    /// only then sends the messages that depend on any of them.
    GroupCommit,
    /// Nothing is ever synced: a power loss can lose acknowledged writes and
    /// make the replica vote twice. For benchmarks only.
    NoSyncBenchmarksOnly,
}

/// What to do when the newest write-ahead log ends in a damaged record.
///
/// With [`Durability::SyncEveryWrite`] a record is acknowledged only after
/// its `fsync` returned, so a crash (or power loss) can only tear the one
/// record that was being written, which nobody was promised. The store
/// always first opens with RocksDB's `AbsoluteConsistency` mode, which
/// refuses any damage, and so *detects* every damaged tail; what follows
/// depends on this setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WalRecovery {
    /// Reopen with RocksDB's `TolerateCorruptedTailRecords`: an incomplete
    /// record at the end of the log (a write torn by a crash) is dropped
    /// and reported as
    /// [`OpenReport::TornTailDropped`](crate::OpenReport::TornTailDropped);
    /// a complete record that fails its checksum, anywhere in the log and
    /// the last one included, still fails the open with
    /// [`StoreError::WalCorrupted`](crate::StoreError::WalCorrupted)
    /// (`tests/wal_damage.rs`). The default: a crash in the middle of a
    /// write must not keep a replica down.
    ///
    /// The bytes alone cannot tell a torn write that was never acknowledged
    /// from an acknowledged record whose end the disk lost (a truncated
    /// file): the node must log the report loudly, and operators who prefer
    /// to decide by hand choose [`WalRecovery::Strict`].
    #[default]
    DropTornTail,
    /// Refuse to open on any damage (`AbsoluteConsistency`); an operator
    /// decides.
    Strict,
}

/// Size limits for decoding stored values: a corrupt length prefix can not
/// make recovery allocate without bound, and a value larger than the limit
/// is refused at write time (it could not be read back).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StoreLimits {
    /// The largest record (vote, batch, certificate, view change, reply).
    pub record_bytes_max: usize,
    /// The largest application snapshot.
    pub snapshot_bytes_max: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            record_bytes_max: MESSAGE_BYTES_MAX_DEFAULT,
            snapshot_bytes_max: 1024 * 1024 * 1024,
        }
    }
}

/// Configuration of a [`RocksStore`](crate::RocksStore).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RocksConfig {
    /// When writes become durable.
    pub durability: Durability,
    /// What to do with a damaged log tail.
    pub wal_recovery: WalRecovery,
    /// Decode limits.
    pub limits: StoreLimits,
    /// Memtable size per column family (`write_buffer_size`).
    pub write_buffer_bytes: usize,
    /// Total size of live write-ahead logs before RocksDB flushes the
    /// column families that hold them back (`max_total_wal_size`).
    pub wal_bytes_max: u64,
    /// Every this many [`Op::TruncateBelow`](crate::Op::TruncateBelow), the
    /// truncated key ranges are compacted so that deleted data leaves the
    /// disk; 0 leaves it to RocksDB's own compactions.
    pub compact_every_truncations: u32,
}

impl Default for RocksConfig {
    fn default() -> Self {
        Self {
            durability: Durability::default(),
            wal_recovery: WalRecovery::default(),
            limits: StoreLimits::default(),
            write_buffer_bytes: 8 * 1024 * 1024,
            wal_bytes_max: 16 * 1024 * 1024,
            compact_every_truncations: 8,
        }
    }
}
