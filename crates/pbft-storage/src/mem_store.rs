//! [`MemStore`]: the store of the simulator and of tests.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex, MutexGuard,
};

use crate::{codec, Durability, Recovered, Store, StoreError, StoreLimits, WriteBatch};

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<Recovered>,
    fail_writes: AtomicBool,
    poisoned: AtomicBool,
}

/// A store in memory, with the same semantics as [`RocksStore`]
/// (the same size limits, operation order and truncation), minus the disk.
///
/// Cloning a `MemStore` shares its state: keep a clone, drop the replica,
/// and [`MemStore::reopen`] to simulate a clean restart.
///
/// [`RocksStore`]: crate::RocksStore
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    inner: Arc<Inner>,
    limits: StoreLimits,
}

impl MemStore {
    /// An empty store with the default limits.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with these limits.
    #[must_use]
    pub fn with_limits(limits: StoreLimits) -> Self {
        Self {
            inner: Arc::default(),
            limits,
        }
    }

    /// A handle on the same data, as after a clean restart: everything
    /// written is kept, a poisoned state is cleared.
    #[must_use]
    pub fn reopen(&self) -> Self {
        self.inner.poisoned.store(false, Ordering::SeqCst);
        self.clone()
    }

    /// Fault injection: while set, every write fails with a fatal
    /// [`StoreError::Write`] and poisons the store.
    pub fn set_fail_writes(&self, fail: bool) {
        self.inner.fail_writes.store(fail, Ordering::SeqCst);
    }

    fn state(&self) -> MutexGuard<'_, Recovered> {
        // A panic while holding the lock can only come from a bug in
        // `Recovered::apply`; the data is still consistent per operation.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check_poisoned(&self) -> Result<(), StoreError> {
        if self.inner.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Poisoned);
        }
        Ok(())
    }
}

impl Store for MemStore {
    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.check_poisoned()?;
        for op in batch.ops() {
            codec::encode_op(op, &self.limits)?;
        }
        if self.inner.fail_writes.load(Ordering::SeqCst) {
            self.inner.poisoned.store(true, Ordering::SeqCst);
            return Err(StoreError::Write {
                detail: "injected write failure".to_owned(),
            });
        }
        let mut state = self.state();
        for op in batch.ops() {
            state.apply(op);
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.check_poisoned()
    }

    fn recover(&self) -> Result<Recovered, StoreError> {
        Ok(self.state().clone())
    }

    fn durability(&self) -> Durability {
        Durability::SyncEveryWrite
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Op, ViewState};

    #[test]
    fn a_failed_write_is_fatal_and_poisons_the_store() {
        let store = MemStore::new();
        let batch = WriteBatch::new().with(Op::PutViewState(ViewState::default()));
        store.set_fail_writes(true);
        let err = store.write(&batch).err();
        assert!(matches!(err, Some(StoreError::Write { .. })));
        assert!(err.is_some_and(|e| e.is_fatal()));
        store.set_fail_writes(false);
        assert!(matches!(store.write(&batch), Err(StoreError::Poisoned)));
        assert!(matches!(store.sync(), Err(StoreError::Poisoned)));
        assert!(store.recover().is_ok_and(|r| r.view_state.is_none()));
        // A restart clears the poison; nothing of the failed write is there.
        let store = store.reopen();
        assert!(store.write(&batch).is_ok());
        assert!(store.recover().is_ok_and(|r| r.view_state.is_some()));
    }
}
