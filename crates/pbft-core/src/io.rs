//! What goes into a replica ([`Input`]) and what comes out ([`Output`]).

use pbft_types::{
    Batch, Checkpoint, ClientId, ClientRequest, Commit, Digest, Message, NewView, PrePrepare,
    Prepare, PreparedCert, QuorumCert, ReplicaId, Reply, RequestNo, SeqNo, Signed, View,
    ViewChange,
};
use serde::{Deserialize, Serialize};

use crate::Rejection;

/// A point in time, in microseconds since an origin the host chooses. The
/// core never reads a clock: the host passes `now` to every step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// `self + us`, saturating.
    #[must_use]
    pub fn plus_us(self, us: u64) -> Self {
        Self(self.0.saturating_add(us))
    }

    /// Microseconds since the origin.
    #[must_use]
    pub fn as_us(self) -> u64 {
        self.0
    }
}

/// The timers a replica asks its host to run. There is at most one of each
/// kind; setting one again moves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// The primary closes a partial batch when it fires
    /// (`batch_delay_us_max`, TOCS 5.1.4).
    Batch,
    /// Retransmission of this replica's own messages and of a fetch for the
    /// next batch to execute, when no progress was made since the last tick.
    Retransmit,
    /// PBFT 4.4 and 4.5: a backup waiting for a request to execute, or a
    /// replica waiting for the NEW-VIEW of the view it changes to. When it
    /// fires the replica moves to the next view ([`Output::ViewChangeStarted`]);
    /// successive view changes double the timeout.
    ViewChange,
}

/// Identifies one [`Output::Persist`]; the host answers with
/// [`Input::PersistDone`] once the records are durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PersistId(pub u64);

/// Something the replica needs durable before it promises it to others.
/// A store (issue 5) writes the records of one [`Output::Persist`]
/// atomically.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PersistRecord {
    /// A pre-prepare this replica sent (primary) or accepted (backup), with
    /// its batch.
    PrePrepare {
        /// The signed pre-prepare.
        pre_prepare: Signed<PrePrepare>,
        /// The batch it orders.
        batch: Batch,
    },
    /// This replica's prepare.
    Prepare(Signed<Prepare>),
    /// This replica's commit.
    Commit(Signed<Commit>),
    /// A batch learned committed through a certificate of `2f + 1` commits
    /// (fetched from a peer).
    CommittedBatch {
        /// The primary's pre-prepare.
        pre_prepare: Signed<PrePrepare>,
        /// The batch.
        batch: Batch,
        /// The commit certificate.
        commits: QuorumCert<Commit>,
    },
    /// This replica's checkpoint and the snapshot it digests (PBFT 4.3):
    /// the application's snapshot and the client reply table.
    Checkpoint {
        /// The signed checkpoint message.
        checkpoint: Signed<Checkpoint>,
        /// The encoded state at that point ([`crate::app::Snapshot`]).
        #[serde(with = "serde_bytes")]
        snapshot: Vec<u8>,
    },
    /// A snapshot fetched from a peer and installed (state transfer), with
    /// the stable checkpoint proof that certifies it.
    StateTransfer {
        /// The proof.
        checkpoint: QuorumCert<Checkpoint>,
        /// The encoded state ([`crate::app::Snapshot`]).
        #[serde(with = "serde_bytes")]
        snapshot: Vec<u8>,
    },
    /// A stable checkpoint with its proof; everything at or below its
    /// sequence number may be deleted.
    StableCheckpoint(QuorumCert<Checkpoint>),
    /// A prepared certificate (PBFT 4.4, an entry of the set `P`), made
    /// durable with the commit it justifies so that a restarted replica's
    /// VIEW-CHANGE still carries it.
    PreparedCert(PreparedCert),
    /// This replica's VIEW-CHANGE (PBFT 4.4): it has left its view and
    /// accepts no normal-case message until the NEW-VIEW. Kept until a later
    /// view is entered.
    ViewChange(Signed<ViewChange>),
    /// The NEW-VIEW that installed the current view (sent as primary or
    /// accepted as backup): a restarted replica re-installs its pre-prepares.
    NewView(Signed<NewView>),
}

/// An input to [`crate::Replica::step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A request from the authenticated channel of client `from`.
    ClientRequest {
        /// The client the channel authenticated.
        from: ClientId,
        /// The request.
        request: ClientRequest,
    },
    /// A message from the authenticated channel of replica `from`.
    Message {
        /// The replica the channel authenticated.
        from: ReplicaId,
        /// The message.
        message: Message,
    },
    /// A timer set with [`Output::SetTimer`] fired.
    TimerFired(Timer),
    /// The records of [`Output::Persist`] with this id are durable.
    PersistDone(PersistId),
}

/// Who sent an input that was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A replica.
    Replica(ReplicaId),
    /// A client.
    Client(ClientId),
    /// The host itself (a timer or persist acknowledgement).
    Host,
}

/// An effect the host must carry out, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send a message to one replica.
    Send {
        /// The destination.
        to: ReplicaId,
        /// The message.
        message: Message,
    },
    /// Send a message to every other replica.
    Broadcast(Message),
    /// Send a reply to a client.
    Reply {
        /// The client.
        client: ClientId,
        /// The reply.
        reply: Reply,
    },
    /// Make these records durable, then answer [`Input::PersistDone`]. The
    /// messages that depend on them are emitted only after that answer.
    Persist {
        /// The id to acknowledge.
        id: PersistId,
        /// The records, to be written atomically.
        records: Vec<PersistRecord>,
    },
    /// Fire `timer` at `at` (replacing an earlier setting).
    SetTimer {
        /// The timer.
        timer: Timer,
        /// When.
        at: Time,
    },
    /// Do not fire `timer`.
    CancelTimer(Timer),
    /// A batch was executed on the application (an event for observers;
    /// the replies are separate outputs).
    Executed {
        /// Its sequence number.
        seq: SeqNo,
        /// The view of its pre-prepare.
        view: View,
        /// The batch digest.
        digest: Digest,
        /// The requests that ran (duplicates of executed requests excluded).
        requests: Vec<(ClientId, RequestNo)>,
    },
    /// A checkpoint became stable; the log below it was discarded.
    CheckpointStable {
        /// Its sequence number (the new low watermark).
        seq: SeqNo,
        /// The certified state digest.
        state_digest: Digest,
    },
    /// This replica left its view and sent (once durable) a VIEW-CHANGE for
    /// `view` (PBFT 4.4): its timer fired, `f + 1` others asked for a higher
    /// view, or a NEW-VIEW was invalid.
    ViewChangeStarted {
        /// The view it moves to.
        view: View,
    },
    /// A NEW-VIEW was installed: the replica is in `view` and accepts its
    /// normal-case messages (PBFT 4.4).
    ViewChanged {
        /// The view entered.
        view: View,
        /// Its primary.
        primary: ReplicaId,
    },
    /// An input was refused; count it.
    Rejected {
        /// Who sent it.
        from: Peer,
        /// Why.
        reason: Rejection,
    },
}
