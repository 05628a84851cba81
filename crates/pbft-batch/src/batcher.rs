//! The batcher: a deterministic state machine that groups requests into
//! batches.

use std::collections::VecDeque;

use crate::codec::{CodecConfig, HEADER_LEN, LEN_PREFIX_LEN};
use crate::error::BatchError;

/// Bounds and policy of a [`Batcher`]. Every bound is enforced; check them
/// with [`BatcherConfig::validate`] (done by [`Batcher::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatcherConfig {
    /// Most requests in one batch (the count trigger, and the ceiling of
    /// the adaptive target). Default 1024.
    pub batch_requests_max: usize,
    /// Floor of the adaptive target, and where it starts. Unused when
    /// `adaptive` is false. Default 1.
    pub batch_requests_min: usize,
    /// Most bytes of one batch in its raw encoding, header and length
    /// prefixes included (see [`raw_encoded_len`](crate::raw_encoded_len)).
    /// Default 1 MiB.
    pub batch_bytes_max: usize,
    /// Longest time a request waits in the batcher before its batch is
    /// closed, in microseconds, provided the caller polls at
    /// [`Batcher::next_deadline_us`]. Default 1000 (1 ms). 0 closes a batch
    /// on every push.
    pub batch_delay_us_max: u64,
    /// Most requests waiting in the batcher (open batch plus closed batches
    /// not yet taken by [`Batcher::poll`]). A push beyond is refused.
    /// Default 8192 (8 full batches).
    pub pending_requests_max: usize,
    /// Most request payload bytes waiting in the batcher. A push beyond is
    /// refused. Default 8 MiB (8 full batches).
    pub pending_bytes_max: usize,
    /// Adapt the count target to the load (see [`Batcher`]). Default true.
    pub adaptive: bool,
    /// Size of the caller's pipeline, in batches (for PBFT: proposals in
    /// flight). The adaptive target grows while
    /// [`Batcher::set_in_flight_batches`] reports at least this many, and
    /// shrinks while it reports fewer than half. Default 4.
    pub in_flight_batches_max: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            batch_requests_max: 1024,
            batch_requests_min: 1,
            batch_bytes_max: 1024 * 1024,
            batch_delay_us_max: 1_000,
            pending_requests_max: 8192,
            pending_bytes_max: 8 * 1024 * 1024,
            adaptive: true,
            in_flight_batches_max: 4,
        }
    }
}

impl BatcherConfig {
    /// Checks every field and their consistency.
    ///
    /// # Errors
    /// [`BatchError::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), BatchError> {
        let invalid = |field, reason| Err(BatchError::InvalidConfig { field, reason });
        CodecConfig::for_batcher(self).validate()?;
        if self.adaptive {
            if self.batch_requests_min == 0 {
                return invalid("batch_requests_min", "must be at least 1");
            }
            if self.batch_requests_min > self.batch_requests_max {
                return invalid("batch_requests_min", "must be at most batch_requests_max");
            }
            if self.in_flight_batches_max == 0 {
                return invalid("in_flight_batches_max", "must be at least 1");
            }
        }
        if self.pending_requests_max < self.batch_requests_max {
            return invalid(
                "pending_requests_max",
                "must be at least batch_requests_max",
            );
        }
        if self.pending_bytes_max < self.request_bytes_max() {
            return invalid(
                "pending_bytes_max",
                "must hold the largest request (batch_bytes_max - HEADER_LEN - LEN_PREFIX_LEN)",
            );
        }
        Ok(())
    }

    /// The largest request payload a batch can hold, in bytes.
    #[must_use]
    pub fn request_bytes_max(&self) -> usize {
        self.batch_bytes_max
            .saturating_sub(HEADER_LEN + LEN_PREFIX_LEN)
    }
}

/// Why a batch was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// It reached the count target (`batch_requests_max`, or the adaptive
    /// target).
    Count,
    /// The next request would not fit in `batch_bytes_max`, or no request
    /// could fit any more.
    Bytes,
    /// Its oldest request waited `batch_delay_us_max`.
    Delay,
    /// The caller asked with [`Batcher::flush`].
    Flush,
}

/// A closed batch: requests in arrival order, never empty, within the
/// count and byte bounds of the config that closed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<T> {
    requests: Vec<T>,
    raw_encoded_len: usize,
    reason: CloseReason,
    first_arrival_us: u64,
    closed_at_us: u64,
}

impl<T> Batch<T> {
    /// The requests, in arrival order.
    #[must_use]
    pub fn requests(&self) -> &[T] {
        &self.requests
    }

    /// Takes the requests out.
    #[must_use]
    pub fn into_requests(self) -> Vec<T> {
        self.requests
    }

    /// Number of requests (at least 1).
    #[must_use]
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Always false: the batcher never closes an empty batch.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Size of the raw encoding in bytes, header included (at most
    /// `batch_bytes_max`).
    #[must_use]
    pub fn raw_encoded_len(&self) -> usize {
        self.raw_encoded_len
    }

    /// Why the batch was closed.
    #[must_use]
    pub fn reason(&self) -> CloseReason {
        self.reason
    }

    /// When its first (oldest) request was pushed, in microseconds.
    #[must_use]
    pub fn first_arrival_us(&self) -> u64 {
        self.first_arrival_us
    }

    /// When it was closed, in microseconds.
    #[must_use]
    pub fn closed_at_us(&self) -> u64 {
        self.closed_at_us
    }
}

impl<T: AsRef<[u8]>> Batch<T> {
    /// Encodes the batch with [`encode`](crate::encode).
    ///
    /// # Errors
    /// As [`encode`](crate::encode): only if `config` has tighter bounds
    /// than the batcher that closed this batch.
    pub fn encode(&self, config: &CodecConfig) -> Result<Vec<u8>, BatchError> {
        crate::codec::encode(&self.requests, config)
    }
}

/// Groups requests into batches, closing a batch at `batch_requests_max`
/// requests (or the adaptive target), at `batch_bytes_max` bytes, or when its
/// oldest request has waited `batch_delay_us_max`, whichever comes first.
///
/// It reads no clock: every call takes `now_us`, microseconds on any
/// monotonic clock (a `now_us` older than one already seen is taken as that
/// one). Same calls, same batches.
///
/// The batcher is the bounded queue of requests waiting to be proposed: the
/// open batch plus the closed batches not taken yet. Driving it:
/// [`push`](Self::push) each request; [`poll`](Self::poll) hands out the
/// closed batches, oldest first, whenever the caller has room for one (for
/// PBFT: a free slot in the window of proposals in flight); arm a timer at
/// [`next_deadline_us`](Self::next_deadline_us) and call `poll` when it
/// fires, or [`tick`](Self::tick) if there is no room. While the caller
/// takes no batch, requests keep being batched inside up to
/// `pending_requests_max` / `pending_bytes_max`, after which pushes are
/// refused.
///
/// Adaptive mode (`adaptive = true`): the count target starts at
/// `batch_requests_min`. Each time a batch closes, the target doubles (up to
/// `batch_requests_max`) if the caller last reported its pipeline full
/// (`in_flight >= in_flight_batches_max`), and halves (down to
/// `batch_requests_min`) if it reported it less than half full. Under light
/// load batches therefore close at once, one request each; under load they
/// grow, so that per-batch costs (signatures, rounds, syncs) are shared.
/// The byte and delay bounds hold in both modes.
#[derive(Debug)]
pub struct Batcher<T> {
    config: BatcherConfig,
    /// Requests of the open batch, in arrival order.
    open: Vec<T>,
    /// Raw encoded size of the open batch, header included.
    open_raw_len: usize,
    /// Arrival of the open batch's oldest request.
    open_first_arrival_us: u64,
    /// Closed batches not yet handed out.
    ready: VecDeque<Batch<T>>,
    pending_requests: usize,
    pending_bytes: usize,
    target_requests: usize,
    in_flight_batches: usize,
    now_us: u64,
}

impl<T: AsRef<[u8]>> Batcher<T> {
    /// A batcher with an empty queue.
    ///
    /// # Errors
    /// [`BatchError::InvalidConfig`] if the config does not validate.
    pub fn new(config: BatcherConfig) -> Result<Self, BatchError> {
        config.validate()?;
        let target_requests = if config.adaptive {
            config.batch_requests_min
        } else {
            config.batch_requests_max
        };
        Ok(Self {
            config,
            open: Vec::new(),
            open_raw_len: HEADER_LEN,
            open_first_arrival_us: 0,
            ready: VecDeque::new(),
            pending_requests: 0,
            pending_bytes: 0,
            target_requests,
            in_flight_batches: 0,
            now_us: 0,
        })
    }

    /// Adds a request at the end of the open batch, closing batches as the
    /// bounds say; take them with [`poll`](Self::poll).
    ///
    /// A refused request is dropped (the caller counts it) and the batcher
    /// is unchanged, except that a batch due by delay at `now_us` is closed.
    ///
    /// # Errors
    /// [`BatchError::RequestTooLarge`] if the request can never fit in a
    /// batch; [`BatchError::PendingRequestsFull`] or
    /// [`BatchError::PendingBytesFull`] if the pending queue is full.
    pub fn push(&mut self, now_us: u64, request: T) -> Result<(), BatchError> {
        self.advance(now_us);
        self.close_if_due();
        let len = request.as_ref().len();
        let limit = self.config.request_bytes_max();
        if len > limit {
            return Err(BatchError::RequestTooLarge { limit, got: len });
        }
        if self.pending_requests >= self.config.pending_requests_max {
            return Err(BatchError::PendingRequestsFull {
                limit: self.config.pending_requests_max,
            });
        }
        let pending_bytes = self.pending_bytes.saturating_add(len);
        if pending_bytes > self.config.pending_bytes_max {
            return Err(BatchError::PendingBytesFull {
                limit: self.config.pending_bytes_max,
                got: pending_bytes,
            });
        }

        let encoded_len = LEN_PREFIX_LEN + len;
        if !self.open.is_empty() && self.open_raw_len + encoded_len > self.config.batch_bytes_max {
            self.close(CloseReason::Bytes);
        }
        if self.open.is_empty() {
            self.open_first_arrival_us = self.now_us;
        }
        self.open.push(request);
        self.open_raw_len += encoded_len;
        self.pending_requests += 1;
        self.pending_bytes = pending_bytes;

        if self.open.len() >= self.target_requests {
            self.close(CloseReason::Count);
        } else if self.config.batch_bytes_max - self.open_raw_len < LEN_PREFIX_LEN {
            self.close(CloseReason::Bytes);
        } else {
            self.close_if_due();
        }
        Ok(())
    }

    /// Closes the open batch if its delay ran out, and hands out the oldest
    /// closed batch not yet taken. Call until `None` to take them all.
    pub fn poll(&mut self, now_us: u64) -> Option<Batch<T>> {
        self.advance(now_us);
        self.close_if_due();
        self.take_ready()
    }

    /// Closes the open batch now, whatever its size (for instance at
    /// shutdown), and hands out the oldest closed batch. Call until `None`
    /// to empty the batcher.
    pub fn flush(&mut self, now_us: u64) -> Option<Batch<T>> {
        self.advance(now_us);
        if !self.open.is_empty() {
            self.close(CloseReason::Flush);
        }
        self.take_ready()
    }

    /// Closes the open batch if its delay ran out, without handing anything
    /// out: for a timer firing while the caller has no room for a batch.
    pub fn tick(&mut self, now_us: u64) {
        self.advance(now_us);
        self.close_if_due();
    }

    /// When the open batch closes by delay, in microseconds, or `None`
    /// without an open batch: arm a timer and call [`poll`](Self::poll) (or
    /// [`tick`](Self::tick)) then. Closed batches waiting to be taken are
    /// counted by [`ready_batches`](Self::ready_batches).
    #[must_use]
    pub fn next_deadline_us(&self) -> Option<u64> {
        if self.open.is_empty() {
            None
        } else {
            Some(self.open_deadline_us())
        }
    }

    /// Reports how many batches the caller has in flight (proposed, not yet
    /// committed). Feeds the adaptive target; has no effect otherwise.
    pub fn set_in_flight_batches(&mut self, in_flight_batches: usize) {
        self.in_flight_batches = in_flight_batches;
    }

    /// The count at which the open batch closes (the adaptive target, or
    /// `batch_requests_max` when not adaptive).
    #[must_use]
    pub fn target_requests(&self) -> usize {
        self.target_requests
    }

    /// Requests waiting in the batcher (open batch and closed batches not
    /// yet taken).
    #[must_use]
    pub fn pending_requests(&self) -> usize {
        self.pending_requests
    }

    /// Closed batches waiting to be taken with [`poll`](Self::poll).
    #[must_use]
    pub fn ready_batches(&self) -> usize {
        self.ready.len()
    }

    /// Payload bytes waiting in the batcher.
    #[must_use]
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// The config.
    #[must_use]
    pub fn config(&self) -> &BatcherConfig {
        &self.config
    }

    fn advance(&mut self, now_us: u64) {
        self.now_us = self.now_us.max(now_us);
    }

    fn open_deadline_us(&self) -> u64 {
        self.open_first_arrival_us
            .saturating_add(self.config.batch_delay_us_max)
    }

    fn close_if_due(&mut self) {
        if !self.open.is_empty() && self.now_us >= self.open_deadline_us() {
            self.close(CloseReason::Delay);
        }
    }

    fn take_ready(&mut self) -> Option<Batch<T>> {
        let batch = self.ready.pop_front()?;
        let count = batch.requests.len();
        let bytes = batch.raw_encoded_len - HEADER_LEN - LEN_PREFIX_LEN * count;
        self.pending_requests -= count;
        self.pending_bytes -= bytes;
        Some(batch)
    }

    fn close(&mut self, reason: CloseReason) {
        debug_assert!(!self.open.is_empty(), "closing an empty batch");
        let requests = std::mem::take(&mut self.open);
        self.ready.push_back(Batch {
            requests,
            raw_encoded_len: self.open_raw_len,
            reason,
            first_arrival_us: self.open_first_arrival_us,
            closed_at_us: self.now_us,
        });
        self.open_raw_len = HEADER_LEN;
        self.adapt();
    }

    fn adapt(&mut self) {
        if !self.config.adaptive {
            return;
        }
        let window = self.config.in_flight_batches_max;
        if self.in_flight_batches >= window {
            self.target_requests = self
                .target_requests
                .saturating_mul(2)
                .min(self.config.batch_requests_max);
        } else if self.in_flight_batches.saturating_mul(2) < window {
            self.target_requests = (self.target_requests / 2).max(self.config.batch_requests_min);
        }
    }
}
