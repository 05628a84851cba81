//! The one error type of the crate.

use std::path::PathBuf;

use pbft_types::WireError;

/// Why a store operation failed.
///
/// **A failed write or sync is fatal.** After [`StoreError::Write`] or
/// [`StoreError::Sync`] the store no longer knows which of its writes are
/// durable; it poisons itself (every later call returns
/// [`StoreError::Poisoned`]) and the caller must stop the replica: it must
/// not send anything that depended on the write, and it must not keep
/// running on a state it cannot vouch for. Restart the process and recover
/// from the store. [`StoreError::is_fatal`] says which errors demand that.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[must_use = "a store error must be handled; a fatal one means the replica must stop"]
pub enum StoreError {
    /// The database could not be opened.
    #[error("cannot open the store at {path}: {detail}")]
    Open {
        /// The database directory.
        path: PathBuf,
        /// What the database reported.
        detail: String,
    },
    /// The write-ahead log is damaged in a way the configured
    /// [`WalRecovery`](crate::WalRecovery) does not tolerate: acknowledged
    /// writes may be lost, so the store refuses to open.
    #[error("write-ahead log of the store at {path} is corrupted: {detail}")]
    WalCorrupted {
        /// The database directory.
        path: PathBuf,
        /// What the database reported (names the log file and offset).
        detail: String,
    },
    /// The store was written by an incompatible version of this crate.
    #[error("store format version {got} is not supported (expected {expected})")]
    UnsupportedFormat {
        /// The version this build writes.
        expected: u32,
        /// The version found.
        got: u32,
    },
    /// A write batch could not be written. Fatal.
    #[error("write failed: {detail}")]
    Write {
        /// What the database reported.
        detail: String,
    },
    /// Syncing the log to stable storage failed. Fatal.
    #[error("sync failed: {detail}")]
    Sync {
        /// What the database reported.
        detail: String,
    },
    /// An earlier write or sync failed; the store refuses further use.
    #[error("the store is poisoned by an earlier failed write or sync")]
    Poisoned,
    /// Reading the store failed.
    #[error("reading column family {cf} failed: {detail}")]
    Read {
        /// The column family.
        cf: &'static str,
        /// What the database reported.
        detail: String,
    },
    /// A stored value does not decode.
    #[error("corrupt value in column family {cf} at key {key:02x?}: {source}")]
    CorruptValue {
        /// The column family.
        cf: &'static str,
        /// The key.
        key: Vec<u8>,
        /// Why it does not decode.
        #[source]
        source: WireError,
    },
    /// A stored key has the wrong shape.
    #[error("corrupt key in column family {cf}: {key:02x?} (expected {expected_len} bytes)")]
    CorruptKey {
        /// The column family.
        cf: &'static str,
        /// The key.
        key: Vec<u8>,
        /// The length keys of this family have.
        expected_len: usize,
    },
    /// A stored value decodes but does not belong under its key (for
    /// example a prepare for sequence number 7 stored under 8).
    #[error("value in column family {cf} does not match its key {key:02x?}")]
    KeyMismatch {
        /// The column family.
        cf: &'static str,
        /// The key.
        key: Vec<u8>,
    },
    /// A value is larger than the configured limit, so it could not be read
    /// back; nothing of the batch was written.
    #[error("value for column family {cf} has {got} bytes, more than the limit of {limit}")]
    ValueTooLarge {
        /// The column family.
        cf: &'static str,
        /// The limit.
        limit: usize,
        /// The encoded size.
        got: usize,
    },
    /// Encoding a value failed (a broken invariant); nothing was written.
    #[error("encoding a value failed: {0}")]
    Encode(#[source] WireError),
}

impl StoreError {
    /// Whether the replica must stop: the store's state is unknown, damaged
    /// or unusable. Only [`StoreError::ValueTooLarge`] and
    /// [`StoreError::Encode`] are not fatal to the store (nothing was
    /// written) — but even then the write did not happen, so whatever
    /// depended on it must not be sent.
    #[must_use]
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Self::ValueTooLarge { .. } | Self::Encode(_))
    }
}
