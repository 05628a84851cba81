//! What is written: [`Op`]s grouped in an atomic [`WriteBatch`].

use pbft_types::{
    Batch, Checkpoint, ClientId, Commit, NewView, PrePrepare, Prepare, PreparedCert, QuorumCert,
    Reply, RequestNo, SeqNo, Signed, View, ViewChange,
};
use serde::{Deserialize, Serialize};

/// The replica's view and view-change state (PBFT 4.4).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewState {
    /// The current view (or the view being changed to).
    pub view: View,
    /// Whether the replica is changing views (it accepts no pre-prepare,
    /// prepare or commit of `view` until the new view is installed).
    pub in_view_change: bool,
    /// The last view-change message this replica sent, re-sent after a
    /// restart.
    pub last_view_change: Option<Signed<ViewChange>>,
    /// The last new-view message this replica sent as primary.
    pub last_new_view: Option<Signed<NewView>>,
}

/// A pre-prepare this replica sent (primary) or accepted (backup), with the
/// batch it orders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrePrepareRecord {
    /// The signed pre-prepare.
    pub pre_prepare: Signed<PrePrepare>,
    /// Its batch.
    pub batch: Batch,
}

/// A batch known committed through a certificate of `2f + 1` commits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedRecord {
    /// The primary's pre-prepare.
    pub pre_prepare: Signed<PrePrepare>,
    /// The batch.
    pub batch: Batch,
    /// The commit certificate.
    pub commits: QuorumCert<Commit>,
}

/// One entry of the client reply table: the last request executed for a
/// client and the reply to re-send for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyEntry {
    /// The last request number executed for the client.
    pub request_no: RequestNo,
    /// The reply sent for it.
    pub reply: Reply,
}

/// One operation of a [`WriteBatch`]. Operations apply in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// Replace the view state.
    PutViewState(ViewState),
    /// This replica's pre-prepare (sent or accepted) with its batch, under
    /// its (view, seq).
    PutPrePrepare(PrePrepareRecord),
    /// This replica's prepare, under its (view, seq).
    PutPrepare(Signed<Prepare>),
    /// This replica's commit, under its (view, seq).
    PutCommit(Signed<Commit>),
    /// A prepared certificate this replica holds (for view changes), under
    /// the (view, seq) of its pre-prepare.
    PutPreparedCert(PreparedCert),
    /// A batch with its commit certificate, under its seq.
    PutCommitted(CommittedRecord),
    /// This replica's own checkpoint message, under its seq.
    PutCheckpoint(Signed<Checkpoint>),
    /// A stable checkpoint's proof; replaces the previous one.
    PutStableCheckpoint(QuorumCert<Checkpoint>),
    /// The application snapshot (with the reply table, as the application
    /// encodes it) at a checkpoint's seq.
    PutSnapshot {
        /// The checkpoint's sequence number.
        seq: SeqNo,
        /// The encoded state.
        snapshot: Vec<u8>,
    },
    /// One client's entry of the reply table; replaces the previous one.
    PutReply {
        /// The client.
        client: ClientId,
        /// Its last request and reply.
        entry: ReplyEntry,
    },
    /// Delete every record with a sequence number below `seq`: votes,
    /// pre-prepares and batches, certificates, committed batches, own
    /// checkpoints and snapshots. The stable checkpoint proof, the view
    /// state and the reply table stay.
    TruncateBelow(SeqNo),
}

/// Operations written atomically by [`Store::write`](crate::Store::write):
/// after a crash either all of them are in the store or none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<Op>,
}

impl WriteBatch {
    /// An empty batch.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an operation.
    pub fn push(&mut self, op: Op) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// Appends an operation (builder style).
    #[must_use]
    pub fn with(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }

    /// The operations, in order.
    #[must_use]
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Whether the batch holds no operation.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// How many operations the batch holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Moves `other`'s operations to the end of this batch: several
    /// batches written as one atomic write, in order.
    pub fn append(&mut self, other: WriteBatch) {
        self.ops.extend(other.ops);
    }
}

impl FromIterator<Op> for WriteBatch {
    fn from_iter<I: IntoIterator<Item = Op>>(iter: I) -> Self {
        Self {
            ops: iter.into_iter().collect(),
        }
    }
}

impl Extend<Op> for WriteBatch {
    fn extend<I: IntoIterator<Item = Op>>(&mut self, iter: I) {
        self.ops.extend(iter);
    }
}
