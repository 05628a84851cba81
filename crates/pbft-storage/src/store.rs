//! The [`Store`] trait.

use crate::{Durability, Recovered, StoreError, WriteBatch};

/// The durable log of one replica.
///
/// # Contract
/// - [`write`](Store::write) applies a [`WriteBatch`] atomically: after a
///   crash either all of its operations are in the store or none.
/// - Persist before send: after `write`, call [`sync`](Store::sync) before
///   any message that promises what was written leaves the process. With
///   [`Durability::SyncEveryWrite`] `write` already synced and `sync` is
///   free; with [`Durability::GroupCommit`] `sync` makes every write since
///   the last one durable with one fsync.
/// - A failed `write` or `sync` is fatal ([`StoreError::is_fatal`]): the
///   store poisons itself and the replica must stop.
/// - [`recover`](Store::recover) returns what the writes so far left, as
///   after a restart.
pub trait Store: Send + Sync {
    /// Writes a batch atomically.
    ///
    /// # Errors
    /// [`StoreError::ValueTooLarge`] / [`StoreError::Encode`] before anything
    /// is written; a fatal [`StoreError::Write`] (the store is then
    /// poisoned) or [`StoreError::Poisoned`].
    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError>;

    /// Makes every write so far durable against power loss.
    ///
    /// # Errors
    /// A fatal [`StoreError::Sync`] (the store is then poisoned) or
    /// [`StoreError::Poisoned`].
    fn sync(&self) -> Result<(), StoreError>;

    /// Reads back everything a replica needs to resume.
    ///
    /// # Errors
    /// [`StoreError::Read`], or a typed corruption error
    /// ([`StoreError::CorruptValue`], [`StoreError::CorruptKey`],
    /// [`StoreError::KeyMismatch`]).
    fn recover(&self) -> Result<Recovered, StoreError>;

    /// The durability mode.
    fn durability(&self) -> Durability;

    /// Group commit: writes the batches (each atomically) and syncs once.
    ///
    /// # Errors
    /// As [`write`](Store::write) and [`sync`](Store::sync); on an error
    /// nothing of the group may be relied on.
    fn commit_group(&self, batches: &[WriteBatch]) -> Result<(), StoreError> {
        for batch in batches {
            self.write(batch)?;
        }
        self.sync()
    }
}
