//! Protocol parameters: every bound has a name and a unit.

/// How replicas know that a request in a batch is authentic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestAuth {
    /// Clients sign requests with ed25519. The primary verifies a batch's
    /// requests when it closes the batch; a backup verifies, with batch
    /// verification, those it did not receive itself from their clients
    /// (a request that came over its client's authenticated channel needs
    /// no second check) before it accepts the pre-prepare. A client that
    /// withholds a request from some backups, or signs it badly, costs them
    /// a verification, never the primary its view.
    ClientSignatures,
    /// Clients send each request to every replica over their authenticated
    /// channel. A backup accepts a pre-prepare only once it holds every
    /// request of the batch itself (it parks the pre-prepare, within
    /// `parked_pre_prepares_max`, until the missing requests arrive).
    /// Signatures on requests are not checked.
    Channel,
    /// Clients may authenticate a request with an authenticator of MACs,
    /// one per replica (TOCS 3.2), as well as with a signature. Each
    /// replica checks its own MAC entry when the request reaches it (about
    /// a microsecond, against ~30 µs for a signature). A backup that finds
    /// its entry bad in a pre-prepare's batch cannot tell a lying primary
    /// from a lying client: it parks the pre-prepare (within
    /// `parked_pre_prepares_max`) and accepts it once `f + 1` other backups
    /// prepared it (at least one of them correct, and so convinced by its
    /// own entry), or once the client retransmits the request to it.
    /// The price is liveness, never safety: a Byzantine client whose MACs
    /// are good for the primary and bad for `f + 1` or more backups stalls
    /// that batch until a view change (the next primary checks its own
    /// entry); signatures leave no such opening, MACs are what reaches the
    /// throughput target.
    Macs,
}

impl RequestAuth {
    /// Whether requests authenticated with MACs are accepted.
    #[must_use]
    pub fn accepts_macs(self) -> bool {
        self == Self::Macs
    }
}

/// The parameters of the protocol, shared by every replica of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// `L`: the log window between the low and the high watermark, in
    /// sequence numbers (PBFT 4.3); a multiple of `checkpoint_interval_seqs`.
    pub log_window_seqs: u64,
    /// `K`: a checkpoint is taken every `K` sequence numbers (PBFT 4.3).
    pub checkpoint_interval_seqs: u64,
    /// Batches the primary keeps in flight (assigned, not yet executed).
    pub pipeline_batches_max: u64,
    /// Requests in one batch.
    pub batch_requests_max: usize,
    /// The primary closes a partial batch after this delay (at once when no
    /// batch is in flight and `propose_when_idle` is set).
    pub batch_delay_us_max: u64,
    /// The primary proposes a partial batch at once when no batch is in
    /// flight: an idle pipeline gains nothing by waiting, and under load
    /// requests still gather while earlier batches are in flight.
    pub propose_when_idle: bool,
    /// Requests held waiting for ordering, all clients together.
    pub pending_requests_max: usize,
    /// Requests held waiting for ordering, per client.
    pub client_pending_requests_max: usize,
    /// Size of one request's operation.
    pub request_op_bytes_max: usize,
    /// Messages above the high watermark kept for when the window moves.
    pub future_messages_max: usize,
    /// Pre-prepares parked waiting for their requests
    /// ([`RequestAuth::Channel`]).
    pub parked_pre_prepares_max: usize,
    /// Period of the retransmission timer.
    pub retransmit_interval_us: u64,
    /// The view-change timer (PBFT 4.4): how long a backup waits for a
    /// request to execute, and (PBFT 4.5) for a NEW-VIEW, before it moves
    /// to the next view.
    pub view_change_timeout_us: u64,
    /// Successive view changes double the timeout, at most this many times
    /// (PBFT 4.5): the longest wait is `view_change_timeout_us << max`.
    pub view_change_backoff_max: u32,
    /// How requests are authenticated.
    pub request_auth: RequestAuth,
    /// The largest snapshot this replica accepts in a state transfer (its
    /// memory bound while fetching one).
    pub snapshot_bytes_max: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            log_window_seqs: 256,
            checkpoint_interval_seqs: 128,
            pipeline_batches_max: 16,
            batch_requests_max: 128,
            batch_delay_us_max: 1_000,
            propose_when_idle: true,
            pending_requests_max: 65_536,
            client_pending_requests_max: 64,
            request_op_bytes_max: 64 * 1024,
            future_messages_max: 4_096,
            parked_pre_prepares_max: 64,
            retransmit_interval_us: 200_000,
            view_change_timeout_us: 2_000_000,
            view_change_backoff_max: 6,
            request_auth: RequestAuth::ClientSignatures,
            snapshot_bytes_max: 1 << 30,
        }
    }
}

/// Why a [`Params`] was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// A bound that must be positive is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// `L` is not a multiple of `K`.
    #[error(
        "log_window_seqs ({window}) must be a multiple of checkpoint_interval_seqs ({interval})"
    )]
    WindowNotMultiple {
        /// `L`.
        window: u64,
        /// `K`.
        interval: u64,
    },
    /// The pipeline is wider than the window.
    #[error("pipeline_batches_max ({pipeline}) exceeds log_window_seqs ({window})")]
    PipelineTooWide {
        /// The pipeline.
        pipeline: u64,
        /// The window.
        window: u64,
    },
    /// The cluster's public keys do not parse.
    #[error("cluster keys: {0}")]
    Keys(String),
    /// The replica id is not in the cluster configuration (or its key
    /// differs from the signer's).
    #[error("replica {0} is not in the cluster configuration")]
    UnknownReplica(pbft_types::ReplicaId),
}

impl Params {
    /// Checks the parameters.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), ParamsError> {
        let positive = [
            ("log_window_seqs", self.log_window_seqs),
            ("checkpoint_interval_seqs", self.checkpoint_interval_seqs),
            ("pipeline_batches_max", self.pipeline_batches_max),
            ("batch_requests_max", self.batch_requests_max as u64),
            ("pending_requests_max", self.pending_requests_max as u64),
            (
                "client_pending_requests_max",
                self.client_pending_requests_max as u64,
            ),
            ("retransmit_interval_us", self.retransmit_interval_us),
            ("view_change_timeout_us", self.view_change_timeout_us),
            ("snapshot_bytes_max", self.snapshot_bytes_max as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ParamsError::Zero(name));
            }
        }
        if self.log_window_seqs % self.checkpoint_interval_seqs != 0 {
            return Err(ParamsError::WindowNotMultiple {
                window: self.log_window_seqs,
                interval: self.checkpoint_interval_seqs,
            });
        }
        if self.pipeline_batches_max > self.log_window_seqs {
            return Err(ParamsError::PipelineTooWide {
                pipeline: self.pipeline_batches_max,
                window: self.log_window_seqs,
            });
        }
        Ok(())
    }
}
