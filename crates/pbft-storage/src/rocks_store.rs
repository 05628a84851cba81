//! [`RocksStore`]: the durable store on RocksDB.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
};

use pbft_types::SeqNo;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, DBRecoveryMode, ErrorKind,
    IteratorMode, Options, WriteOptions, DB,
};

use crate::codec::{self, Cf, Encoded, FORMAT_VERSION, META_FORMAT, META_STABLE, META_VIEW_STATE};
use crate::{Durability, Recovered, RocksConfig, Store, StoreError, WalRecovery, WriteBatch};

/// What opening found at the tail of the write-ahead log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenReport {
    /// The log was intact.
    Clean,
    /// The log ended in a damaged record, which was dropped
    /// ([`WalRecovery::DropTornTail`]). Log this: after a crash it is the
    /// write that was interrupted (never acknowledged); without a crash it
    /// means the disk lost data.
    TornTailDropped {
        /// What RocksDB reported about the damage.
        detail: String,
    },
}

/// The durable store on RocksDB. See the crate docs for the layout.
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    config: RocksConfig,
    report: OpenReport,
    poisoned: AtomicBool,
    unsynced: AtomicBool,
    truncations: AtomicU32,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .field("config", &self.config)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

fn options(config: &RocksConfig, mode: DBRecoveryMode) -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_wal_recovery_mode(mode);
    opts.set_max_total_wal_size(config.wal_bytes_max);
    opts.set_write_buffer_size(config.write_buffer_bytes);
    opts.set_compression_type(DBCompressionType::Lz4);
    // Info logs would otherwise grow without bound in the database directory.
    opts.set_keep_log_file_num(4);
    opts.set_max_log_file_size(4 * 1024 * 1024);
    opts
}

fn cf_options(config: &RocksConfig) -> Options {
    let mut opts = Options::default();
    opts.set_write_buffer_size(config.write_buffer_bytes);
    opts.set_compression_type(DBCompressionType::Lz4);
    opts
}

impl RocksStore {
    /// Opens (or creates) the store in the directory `path`.
    ///
    /// The log is first replayed with RocksDB's `AbsoluteConsistency`
    /// recovery mode, so that any damage is detected; see [`WalRecovery`]
    /// for what happens then, and [`RocksStore::open_report`] for what was
    /// found.
    ///
    /// # Errors
    /// [`StoreError::WalCorrupted`] for a damaged log that the configuration
    /// does not tolerate, [`StoreError::Open`] for any other failure,
    /// [`StoreError::UnsupportedFormat`] for a store of another version.
    pub fn open(path: impl AsRef<Path>, config: RocksConfig) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let open = |mode| {
            let descriptors = Cf::ALL
                .iter()
                .map(|cf| ColumnFamilyDescriptor::new(cf.name(), cf_options(&config)));
            DB::open_cf_descriptors(&options(&config, mode), &path, descriptors)
        };
        let wal_error = |e: rocksdb::Error| StoreError::WalCorrupted {
            path: path.clone(),
            detail: e.into_string(),
        };
        let open_error = |e: rocksdb::Error| StoreError::Open {
            path: path.clone(),
            detail: e.into_string(),
        };
        let (db, report) = match open(DBRecoveryMode::AbsoluteConsistency) {
            Ok(db) => (db, OpenReport::Clean),
            Err(e) if e.kind() == ErrorKind::Corruption => match config.wal_recovery {
                WalRecovery::Strict => return Err(wal_error(e)),
                WalRecovery::DropTornTail => {
                    match open(DBRecoveryMode::TolerateCorruptedTailRecords) {
                        Ok(db) => (
                            db,
                            OpenReport::TornTailDropped {
                                detail: e.into_string(),
                            },
                        ),
                        Err(e2) if e2.kind() == ErrorKind::Corruption => return Err(wal_error(e2)),
                        Err(e2) => return Err(open_error(e2)),
                    }
                }
            },
            Err(e) => return Err(open_error(e)),
        };
        let store = Self {
            db,
            path,
            config,
            report,
            poisoned: AtomicBool::new(false),
            unsynced: AtomicBool::new(false),
            truncations: AtomicU32::new(0),
        };
        store.check_format()?;
        Ok(store)
    }

    fn check_format(&self) -> Result<(), StoreError> {
        let meta = self.cf(Cf::Meta)?;
        let found = self
            .db
            .get_cf(meta, META_FORMAT)
            .map_err(|e| read_error(Cf::Meta, e))?;
        match found {
            Some(bytes) => {
                let got: u32 = codec::decode(Cf::Meta, META_FORMAT, &bytes, 16)?;
                if got != FORMAT_VERSION {
                    return Err(StoreError::UnsupportedFormat {
                        expected: FORMAT_VERSION,
                        got,
                    });
                }
                Ok(())
            }
            None => {
                let bytes =
                    pbft_types::to_canonical_bytes(&FORMAT_VERSION).map_err(StoreError::Encode)?;
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                self.db
                    .put_cf_opt(meta, META_FORMAT, bytes, &wo)
                    .map_err(|e| self.fatal_write(e))
            }
        }
    }

    /// What opening found at the tail of the log.
    #[must_use]
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The database directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &RocksConfig {
        &self.config
    }

    /// Bytes of all files in the database directory (SST files, logs,
    /// manifest, options, info logs).
    ///
    /// # Errors
    /// [`StoreError::Read`] if the directory cannot be listed.
    pub fn disk_bytes(&self) -> Result<u64, StoreError> {
        dir_bytes(&self.path).map_err(|e| StoreError::Read {
            cf: "<directory>",
            detail: e.to_string(),
        })
    }

    /// Compacts every seq-keyed column family below `seq`, so that deleted
    /// records leave the disk. [`Op::TruncateBelow`](crate::Op) triggers
    /// this every [`RocksConfig::compact_every_truncations`] truncations.
    pub fn compact_below(&self, seq: SeqNo) {
        let end = codec::seq_key(seq);
        for cf in Cf::BY_SEQ {
            if let Ok(handle) = self.cf(cf) {
                self.db
                    .compact_range_cf(handle, None::<&[u8]>, Some(&end[..]));
            }
        }
    }

    fn cf(&self, cf: Cf) -> Result<&ColumnFamily, StoreError> {
        self.db.cf_handle(cf.name()).ok_or(StoreError::Read {
            cf: cf.name(),
            detail: "column family missing".to_owned(),
        })
    }

    fn fatal_write(&self, e: rocksdb::Error) -> StoreError {
        self.poisoned.store(true, Ordering::SeqCst);
        StoreError::Write {
            detail: e.into_string(),
        }
    }

    fn check_poisoned(&self) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Poisoned);
        }
        Ok(())
    }

    fn iter_cf(
        &self,
        cf: Cf,
        mut each: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for item in self.db.iterator_cf(self.cf(cf)?, IteratorMode::Start) {
            let (key, value) = item.map_err(|e| read_error(cf, e))?;
            each(&key, &value)?;
        }
        Ok(())
    }
}

fn read_error(cf: Cf, e: rocksdb::Error) -> StoreError {
    StoreError::Read {
        cf: cf.name(),
        detail: e.into_string(),
    }
}

fn mismatch(cf: Cf, key: &[u8]) -> StoreError {
    StoreError::KeyMismatch {
        cf: cf.name(),
        key: key.to_vec(),
    }
}

fn dir_bytes(path: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

impl Store for RocksStore {
    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.check_poisoned()?;
        let mut wb = rocksdb::WriteBatch::default();
        let mut truncated_to = None;
        for op in batch.ops() {
            match codec::encode_op(op, &self.config.limits)? {
                Encoded::Put { cf, key, value } => wb.put_cf(self.cf(cf)?, key, value),
                Encoded::TruncateBelow(seq) => {
                    if seq > SeqNo::ZERO {
                        for cf in Cf::BY_SEQ {
                            wb.delete_range_cf(self.cf(cf)?, [0u8; 8], codec::seq_key(seq));
                        }
                        truncated_to = Some(seq);
                    }
                }
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.config.durability == Durability::SyncEveryWrite);
        self.db
            .write_opt(wb, &wo)
            .map_err(|e| self.fatal_write(e))?;
        if self.config.durability == Durability::GroupCommit {
            self.unsynced.store(true, Ordering::SeqCst);
        }
        if let Some(seq) = truncated_to {
            let every = self.config.compact_every_truncations;
            let n = self
                .truncations
                .fetch_add(1, Ordering::SeqCst)
                .wrapping_add(1);
            if every > 0 && n % every == 0 {
                self.compact_below(seq);
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.check_poisoned()?;
        if self.config.durability == Durability::GroupCommit
            && self.unsynced.swap(false, Ordering::SeqCst)
        {
            self.db.flush_wal(true).map_err(|e| {
                self.poisoned.store(true, Ordering::SeqCst);
                StoreError::Sync {
                    detail: e.into_string(),
                }
            })?;
        }
        Ok(())
    }

    fn recover(&self) -> Result<Recovered, StoreError> {
        let limits = self.config.limits;
        let max = limits.record_bytes_max;
        let mut r = Recovered::default();
        let meta = self.cf(Cf::Meta)?;
        let get = |key: &[u8]| {
            self.db
                .get_cf(meta, key)
                .map_err(|e| read_error(Cf::Meta, e))
        };
        if let Some(bytes) = get(META_VIEW_STATE)? {
            r.view_state = Some(codec::decode(Cf::Meta, META_VIEW_STATE, &bytes, max)?);
        }
        if let Some(bytes) = get(META_STABLE)? {
            r.stable_checkpoint = Some(codec::decode(Cf::Meta, META_STABLE, &bytes, max)?);
        }
        self.iter_cf(Cf::PrePrepare, |k, v| {
            let (seq, view) = codec::parse_seq_view(Cf::PrePrepare, k)?;
            let rec: crate::PrePrepareRecord = codec::decode(Cf::PrePrepare, k, v, max)?;
            let p = &rec.pre_prepare.value;
            if (p.seq, p.view) != (seq, view) {
                return Err(mismatch(Cf::PrePrepare, k));
            }
            r.pre_prepares.insert((view, seq), rec);
            Ok(())
        })?;
        self.iter_cf(Cf::Prepare, |k, v| {
            let (seq, view) = codec::parse_seq_view(Cf::Prepare, k)?;
            let p: pbft_types::Signed<pbft_types::Prepare> = codec::decode(Cf::Prepare, k, v, max)?;
            if (p.value.seq, p.value.view) != (seq, view) {
                return Err(mismatch(Cf::Prepare, k));
            }
            r.prepares.insert((view, seq), p);
            Ok(())
        })?;
        self.iter_cf(Cf::Commit, |k, v| {
            let (seq, view) = codec::parse_seq_view(Cf::Commit, k)?;
            let c: pbft_types::Signed<pbft_types::Commit> = codec::decode(Cf::Commit, k, v, max)?;
            if (c.value.seq, c.value.view) != (seq, view) {
                return Err(mismatch(Cf::Commit, k));
            }
            r.commits.insert((view, seq), c);
            Ok(())
        })?;
        self.iter_cf(Cf::PreparedCert, |k, v| {
            let (seq, view) = codec::parse_seq_view(Cf::PreparedCert, k)?;
            let c: pbft_types::PreparedCert = codec::decode(Cf::PreparedCert, k, v, max)?;
            let p = &c.pre_prepare.value;
            if (p.seq, p.view) != (seq, view) {
                return Err(mismatch(Cf::PreparedCert, k));
            }
            r.prepared_certs.insert((view, seq), c);
            Ok(())
        })?;
        self.iter_cf(Cf::Committed, |k, v| {
            let seq = SeqNo(codec::parse_u64(Cf::Committed, k)?);
            let c: crate::CommittedRecord = codec::decode(Cf::Committed, k, v, max)?;
            if c.pre_prepare.value.seq != seq {
                return Err(mismatch(Cf::Committed, k));
            }
            r.committed.insert(seq, c);
            Ok(())
        })?;
        self.iter_cf(Cf::Checkpoint, |k, v| {
            let seq = SeqNo(codec::parse_u64(Cf::Checkpoint, k)?);
            let c: pbft_types::Signed<pbft_types::Checkpoint> =
                codec::decode(Cf::Checkpoint, k, v, max)?;
            if c.value.seq != seq {
                return Err(mismatch(Cf::Checkpoint, k));
            }
            r.checkpoints.insert(seq, c);
            Ok(())
        })?;
        self.iter_cf(Cf::Snapshot, |k, v| {
            let seq = SeqNo(codec::parse_u64(Cf::Snapshot, k)?);
            if v.len() > limits.snapshot_bytes_max {
                return Err(StoreError::CorruptValue {
                    cf: Cf::Snapshot.name(),
                    key: k.to_vec(),
                    source: pbft_types::WireError::TooLarge {
                        limit: limits.snapshot_bytes_max,
                        got: v.len(),
                    },
                });
            }
            r.snapshots.insert(seq, v.to_vec());
            Ok(())
        })?;
        self.iter_cf(Cf::Reply, |k, v| {
            let client = pbft_types::ClientId(codec::parse_u64(Cf::Reply, k)?);
            let e: crate::ReplyEntry = codec::decode(Cf::Reply, k, v, max)?;
            if e.reply.client != client {
                return Err(mismatch(Cf::Reply, k));
            }
            r.replies.insert(client, e);
            Ok(())
        })?;
        Ok(r)
    }

    fn durability(&self) -> Durability {
        self.config.durability
    }
}
