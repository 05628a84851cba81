//! Why an input was refused: one typed reason per rejection, counted by the
//! host as a metric. Peer input never panics; it ends here.

use pbft_types::{ClientId, Digest, ReplicaId, RequestNo, SeqNo, View};

/// Why a replica refused an input. The host counts these (for example with
/// [`Rejection::label`] as a metrics label); none of them is fatal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// A message's signer is not the transport-authenticated sender.
    #[error("message signed by replica {signer} arrived from replica {from}")]
    SignerMismatch {
        /// The authenticated sender.
        from: ReplicaId,
        /// The claimed signer.
        signer: ReplicaId,
    },
    /// A request's signer is not the client whose channel it arrived on.
    #[error("request signed by client {signer} arrived from client {from}")]
    ClientMismatch {
        /// The authenticated client.
        from: ClientId,
        /// The claimed signer.
        signer: ClientId,
    },
    /// A signature did not verify.
    #[error("bad signature")]
    BadSignature,
    /// A client request's signature did not verify (in a batch or alone).
    #[error("bad signature on request {request_no} of client {client}")]
    BadRequestSignature {
        /// The client.
        client: ClientId,
        /// Its request number.
        request_no: RequestNo,
    },
    /// A client request's MAC for this replica did not verify, or its
    /// authenticator is malformed (TOCS 3.2).
    #[error("bad MAC on request {request_no} of client {client}")]
    BadRequestMac {
        /// The client.
        client: ClientId,
        /// Its request number.
        request_no: RequestNo,
    },
    /// A request authenticated in a way this cluster does not accept
    /// (MACs when [`crate::RequestAuth::ClientSignatures`] is chosen).
    #[error("request {request_no} of client {client}: {kind} not accepted by this cluster")]
    AuthenticatorNotAccepted {
        /// The client.
        client: ClientId,
        /// Its request number.
        request_no: RequestNo,
        /// The kind of authenticator.
        kind: &'static str,
    },
    /// The client is not in the cluster configuration.
    #[error("unknown client {0}")]
    UnknownClient(ClientId),
    /// The replica id is not in the cluster configuration.
    #[error("unknown replica {0}")]
    UnknownReplica(ReplicaId),
    /// A message for another view.
    #[error("message for view {got}, current view is {expected}")]
    WrongView {
        /// The current view.
        expected: View,
        /// The message's view.
        got: View,
    },
    /// A sequence number outside the watermarks `(low, high]`.
    #[error("sequence number {got} outside the window ({low}, {high}]")]
    OutsideWindow {
        /// The low watermark `h`.
        low: SeqNo,
        /// The high watermark `H = h + L`.
        high: SeqNo,
        /// The message's sequence number.
        got: SeqNo,
    },
    /// A pre-prepare not signed by the primary of its view.
    #[error("pre-prepare from {got}, the primary of the view is {expected}")]
    NotPrimary {
        /// The primary.
        expected: ReplicaId,
        /// The signer.
        got: ReplicaId,
    },
    /// A client request relayed to a replica that is not the primary of the
    /// view (PBFT 4.1: backups relay to the primary).
    #[error("relayed request reached a backup; the primary of the view is {primary}")]
    RelayedToBackup {
        /// The primary of the current view.
        primary: ReplicaId,
    },
    /// A prepare from the primary (the primary's vote is its pre-prepare).
    #[error("prepare from the primary {0}")]
    PrepareFromPrimary(ReplicaId),
    /// The batch does not hash to the digest of the pre-prepare.
    #[error("batch digest {got:?} differs from the pre-prepare's {expected:?}")]
    DigestMismatch {
        /// The digest announced.
        expected: Digest,
        /// The digest computed.
        got: Digest,
    },
    /// Another pre-prepare with a different digest was already accepted for
    /// this view and sequence number (PBFT 4.2).
    #[error("conflicting pre-prepare at view {view}, seq {seq}")]
    ConflictingPrePrepare {
        /// The view.
        view: View,
        /// The sequence number.
        seq: SeqNo,
    },
    /// A replica voted twice at one (view, seq) with different digests.
    #[error("replica {replica} voted for two digests at seq {seq}")]
    ConflictingVote {
        /// The voter.
        replica: ReplicaId,
        /// The sequence number.
        seq: SeqNo,
    },
    /// The same message again; duplicates are idempotent.
    #[error("duplicate")]
    Duplicate,
    /// A batch with no request, too many requests, or a request twice.
    #[error("malformed batch: {0}")]
    MalformedBatch(&'static str),
    /// A request whose operation is larger than the configured bound.
    #[error("request of {got} bytes, at most {max} are accepted")]
    RequestTooLarge {
        /// The bound.
        max: usize,
        /// The size.
        got: usize,
    },
    /// A request number at or below the last one executed for the client
    /// (the cached reply, if any, was sent again).
    #[error("request {got} of client {client} is stale, last executed is {last}")]
    StaleRequest {
        /// The client.
        client: ClientId,
        /// The last request number executed.
        last: RequestNo,
        /// The request number received.
        got: RequestNo,
    },
    /// A named bound is full; the input was dropped.
    #[error("{0} is full")]
    Full(&'static str),
    /// A checkpoint at a sequence number that is not a multiple of K.
    #[error("checkpoint at seq {0}, which is not a checkpoint sequence number")]
    NotCheckpointSeq(SeqNo),
    /// A message this replica does not handle (yet): view change, new view,
    /// snapshot fetches (issue 4), or a message kind that never comes from a
    /// replica.
    #[error("unsupported message kind {0}")]
    Unsupported(&'static str),
    /// A fetch for something this replica does not hold (any more).
    #[error("cannot serve fetch for seq {0}")]
    NotAvailable(SeqNo),
    /// A fetched batch proof that does not prove what it claims.
    #[error("invalid proof: {0}")]
    InvalidProof(&'static str),
    /// A normal-case message while this replica changes to `view`
    /// (PBFT 4.4: it accepts only checkpoint, view-change and new-view
    /// messages until the NEW-VIEW).
    #[error("changing to view {view}: normal-case messages are not accepted")]
    ViewChangeInProgress {
        /// The view being changed to.
        view: View,
    },
    /// A VIEW-CHANGE or NEW-VIEW that does not verify (PBFT 4.4).
    #[error("invalid view change: {0}")]
    InvalidViewChange(&'static str),
    /// A persist acknowledgement for an unknown id.
    #[error("unknown persist id {0}")]
    UnknownPersist(u64),
    /// Encoding or signing failed (a broken local invariant, reported rather
    /// than panicking).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Rejection {
    /// A short, stable label for metrics.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::SignerMismatch { .. } => "signer_mismatch",
            Self::ClientMismatch { .. } => "client_mismatch",
            Self::BadSignature => "bad_signature",
            Self::BadRequestSignature { .. } => "bad_request_signature",
            Self::BadRequestMac { .. } => "bad_request_mac",
            Self::AuthenticatorNotAccepted { .. } => "authenticator_not_accepted",
            Self::UnknownClient(_) => "unknown_client",
            Self::UnknownReplica(_) => "unknown_replica",
            Self::WrongView { .. } => "wrong_view",
            Self::OutsideWindow { .. } => "outside_window",
            Self::NotPrimary { .. } => "not_primary",
            Self::RelayedToBackup { .. } => "relayed_to_backup",
            Self::PrepareFromPrimary(_) => "prepare_from_primary",
            Self::DigestMismatch { .. } => "digest_mismatch",
            Self::ConflictingPrePrepare { .. } => "conflicting_pre_prepare",
            Self::ConflictingVote { .. } => "conflicting_vote",
            Self::Duplicate => "duplicate",
            Self::MalformedBatch(_) => "malformed_batch",
            Self::RequestTooLarge { .. } => "request_too_large",
            Self::StaleRequest { .. } => "stale_request",
            Self::Full(_) => "full",
            Self::NotCheckpointSeq(_) => "not_checkpoint_seq",
            Self::Unsupported(_) => "unsupported",
            Self::NotAvailable(_) => "not_available",
            Self::InvalidProof(_) => "invalid_proof",
            Self::ViewChangeInProgress { .. } => "view_change_in_progress",
            Self::InvalidViewChange(_) => "invalid_view_change",
            Self::UnknownPersist(_) => "unknown_persist",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<pbft_crypto::CryptoError> for Rejection {
    fn from(e: pbft_crypto::CryptoError) -> Self {
        match e {
            pbft_crypto::CryptoError::BadSignature { .. }
            | pbft_crypto::CryptoError::UnknownSigner(_) => Self::BadSignature,
            other => Self::Internal(other.to_string()),
        }
    }
}
