//! The protocol messages (PBFT 4.1 to 4.5 and state transfer).
//!
//! Messages that travel as proof are carried as [`Signed`] values: the signer
//! and signature sit beside the content, and `pbft-crypto` defines the bytes
//! that are signed (a domain tag, the cluster id, the kind, the signer and
//! the content). A `Signed<T>` decoded from the wire is *unverified*; only
//! `pbft-crypto` turns it into a verified value.

use serde::{Deserialize, Serialize};

use crate::{ClientId, Digest, Mac, ReplicaId, RequestNo, SeqNo, Signature, View};

/// A value with the identity of its signer and the signature.
///
/// Decoded from the wire this is a claim, not a fact: nothing is checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<T, I = ReplicaId> {
    /// The content that was signed.
    pub value: T,
    /// Who claims to have signed it.
    pub signer: I,
    /// The ed25519 signature over the signing digest of `value`.
    pub signature: Signature,
}

impl<T, I> AsRef<T> for Signed<T, I> {
    fn as_ref(&self) -> &T {
        &self.value
    }
}

/// A client's request `<REQUEST, op, t, c>` (PBFT 4.1); the client `c` is the
/// signer of the [`ClientRequest`] that carries it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Request {
    /// The request number `t`, increasing per client.
    pub request_no: RequestNo,
    /// Read-only requests may be answered without ordering (TOCS 5.1.3).
    pub read_only: bool,
    /// The operation, opaque to the protocol.
    #[serde(with = "serde_bytes")]
    pub op: Vec<u8>,
}

/// How a client vouches for its request (PBFT 4.1; TOCS 3.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Authenticator {
    /// An ed25519 signature over the request. Every replica can check it,
    /// whoever forwarded the request.
    Signature(Signature),
    /// An authenticator (TOCS 3.2): one MAC per replica, in replica id
    /// order, each under the key the client shares with that replica.
    /// Replica `i` can check entry `i` only, so a request that reached it
    /// through another replica proves nothing to a third.
    Macs(Vec<Mac>),
}

/// A client's request with the client's authenticator. Decoded from the
/// wire, `signer` and `auth` are a claim that `pbft-crypto` checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    /// The request.
    pub value: Request,
    /// The client that claims to have sent it.
    pub signer: ClientId,
    /// Its signature or MACs over `value`.
    pub auth: Authenticator,
}

/// A replica's reply `<REPLY, v, t, c, i, r>` (PBFT 4.1). It travels on the
/// authenticated channel from replica `i` to client `c`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The view the replica was in.
    pub view: View,
    /// The client the reply is for.
    pub client: ClientId,
    /// The request number it answers.
    pub request_no: RequestNo,
    /// The replica that executed it.
    pub replica: ReplicaId,
    /// The result of the operation.
    #[serde(with = "serde_bytes")]
    pub result: Vec<u8>,
}

/// A batch of client requests, ordered as one unit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The requests, executed in this order.
    pub requests: Vec<ClientRequest>,
}

/// `<PRE-PREPARE, v, n, d>` (PBFT 4.2), signed by the primary; the batch
/// travels beside it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PrePrepare {
    /// The view.
    pub view: View,
    /// The sequence number assigned.
    pub seq: SeqNo,
    /// The digest of the batch; [`Digest::ZERO`] for a null request.
    pub digest: Digest,
}

/// `<PREPARE, v, n, d, i>` (PBFT 4.2), signed by backup `i`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Prepare {
    /// The view.
    pub view: View,
    /// The sequence number.
    pub seq: SeqNo,
    /// The digest prepared.
    pub digest: Digest,
}

/// `<COMMIT, v, n, D(m), i>` (PBFT 4.2), signed by replica `i`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Commit {
    /// The view.
    pub view: View,
    /// The sequence number.
    pub seq: SeqNo,
    /// The digest committed.
    pub digest: Digest,
}

/// `<CHECKPOINT, n, d, i>` (PBFT 4.3), signed by replica `i`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The sequence number of the last batch executed.
    pub seq: SeqNo,
    /// The digest of the service state (with the client reply table) there.
    pub state_digest: Digest,
}

/// Signatures of distinct replicas over one content.
///
/// Decoded from the wire this is a claim; `pbft-crypto` checks that the
/// signers are distinct configured replicas, that there are enough of them,
/// and that every signature is over `value`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumCert<T> {
    /// The content all signers signed.
    pub value: T,
    /// `(signer, signature)`, sorted by signer.
    pub signatures: Vec<(ReplicaId, Signature)>,
}

/// Proof that a batch prepared at some replica (PBFT 4.4, the set `P`): the
/// pre-prepare and `2f` matching prepares from distinct backups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedCert {
    /// The primary's signed pre-prepare.
    pub pre_prepare: Signed<PrePrepare>,
    /// `2f` prepares for the same view, sequence number and digest.
    pub prepares: QuorumCert<Prepare>,
}

/// `<VIEW-CHANGE, v + 1, n, C, P, i>` (PBFT 4.4), signed by replica `i`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChange {
    /// The view the replica moves to.
    pub new_view: View,
    /// The proof of its last stable checkpoint `C`; `None` for the initial
    /// state at sequence number 0.
    pub checkpoint: Option<QuorumCert<Checkpoint>>,
    /// `P`: a prepared certificate for each sequence number above the
    /// checkpoint that prepared at the replica, the highest view for each.
    pub prepared: Vec<PreparedCert>,
}

/// `<NEW-VIEW, v + 1, V, O>` (PBFT 4.4), signed by the new primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewView {
    /// The new view.
    pub view: View,
    /// `V`: the view changes it was computed from.
    pub view_changes: Vec<Signed<ViewChange>>,
    /// `O`: the pre-prepares of the new view, one per sequence number from
    /// the lowest checkpoint above to the highest prepared one.
    pub pre_prepares: Vec<Signed<PrePrepare>>,
}

/// What a replica that fell behind asks of another (state transfer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fetch {
    /// The latest stable checkpoint with its certificate.
    StableCheckpoint,
    /// One chunk of the snapshot taken at a checkpoint.
    SnapshotChunk {
        /// The checkpoint's sequence number.
        seq: SeqNo,
        /// The chunk index.
        chunk: u32,
    },
    /// A committed batch with its proof.
    Batch {
        /// Its sequence number.
        seq: SeqNo,
    },
    /// The batch with this digest, re-proposed at `seq` by a NEW-VIEW
    /// (PBFT 4.4: a replica fetches the batches it lacks). The digest is
    /// the proof: no signature is needed.
    PreparedBatch {
        /// The sequence number of the re-proposal.
        seq: SeqNo,
        /// The digest of the batch.
        digest: Digest,
    },
    /// The NEW-VIEW that installed the peer's current view (asked by a
    /// replica that sees messages of a view it has not entered).
    NewView,
}

/// The answer to a [`Fetch`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FetchResponse {
    /// The latest stable checkpoint proof.
    StableCheckpoint(QuorumCert<Checkpoint>),
    /// A chunk of a snapshot, with the Merkle path from the chunk's hash to
    /// the root that the checkpoint's state digest commits to.
    SnapshotChunk {
        /// The checkpoint's sequence number.
        seq: SeqNo,
        /// The chunk index.
        chunk: u32,
        /// How many chunks the snapshot has.
        chunk_count: u32,
        /// The chunk's bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Sibling hashes from the leaf up to the root.
        proof: Vec<Digest>,
    },
    /// A committed batch with the proof that it committed.
    Batch {
        /// The primary's pre-prepare for it.
        pre_prepare: Signed<PrePrepare>,
        /// The batch.
        batch: Batch,
        /// `2f + 1` matching commits.
        commits: QuorumCert<Commit>,
    },
    /// A batch asked for by [`Fetch::PreparedBatch`]; the receiver checks
    /// its digest.
    PreparedBatch {
        /// The sequence number it was asked for.
        seq: SeqNo,
        /// The batch.
        batch: Batch,
    },
    /// The replica does not have what was asked.
    NotAvailable {
        /// The sequence number asked for.
        seq: SeqNo,
    },
}

/// Every message of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A client's authenticated request.
    Request(ClientRequest),
    /// A replica's reply to a client.
    Reply(Reply),
    /// Several replies of one replica to one client, for requests executed
    /// together (one message instead of one per request).
    Replies(Vec<Reply>),
    /// The primary's proposal with its batch.
    PrePrepare {
        /// The signed header.
        pre_prepare: Signed<PrePrepare>,
        /// The batch whose digest it carries.
        batch: Batch,
    },
    /// A backup's prepare.
    Prepare(Signed<Prepare>),
    /// A replica's commit.
    Commit(Signed<Commit>),
    /// A replica's checkpoint.
    Checkpoint(Signed<Checkpoint>),
    /// A replica's view change.
    ViewChange(Signed<ViewChange>),
    /// The new primary's new view.
    NewView(Signed<NewView>),
    /// A state-transfer request.
    Fetch(Fetch),
    /// A state-transfer response.
    FetchResponse(FetchResponse),
}

impl Message {
    /// The replies this message carries (none for other kinds).
    #[must_use]
    pub fn into_replies(self) -> Vec<Reply> {
        match self {
            Self::Reply(r) => vec![r],
            Self::Replies(rs) => rs,
            _ => Vec::new(),
        }
    }

    /// A short name for logs and metrics labels.
    #[must_use]
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Request(_) => "request",
            Self::Reply(_) => "reply",
            Self::Replies(_) => "replies",
            Self::PrePrepare { .. } => "pre_prepare",
            Self::Prepare(_) => "prepare",
            Self::Commit(_) => "commit",
            Self::Checkpoint(_) => "checkpoint",
            Self::ViewChange(_) => "view_change",
            Self::NewView(_) => "new_view",
            Self::Fetch(_) => "fetch",
            Self::FetchResponse(_) => "fetch_response",
        }
    }
}
