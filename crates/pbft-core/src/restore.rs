//! What a replica resumes from after a restart ([`DurableState`]), in the
//! core's own terms, and why a restore can fail ([`RestoreError`]).
//!
//! PBFT (Castro and Liskov, TOCS 2002, section 4 and the discussion of
//! stable storage): a replica that loses its volatile state must not forget
//! the messages it sent, or after a restart it could pre-prepare, prepare or
//! commit a second digest at a (view, seq) where it already voted
//! (equivocation by amnesia). Everything the replica promised was persisted
//! before it was sent ([`PersistRecord`]); [`crate::Replica::restore`]
//! rebuilds a replica from exactly those records. A host builds the
//! [`DurableState`] from its store (the node does it from
//! `pbft_storage::Recovered`), or replays the records it acknowledged with
//! [`DurableState::apply`] (the simulator does that).
//!
//! Proactive recovery (TOCS 4.5: rebooting from a clean copy, refreshing
//! keys, checking the state against the peers) is out of scope.

use std::collections::BTreeMap;

use pbft_types::{
    Batch, Checkpoint, Commit, NewView, PrePrepare, Prepare, PreparedCert, QuorumCert, SeqNo,
    Signed, View, ViewChange,
};

use crate::io::PersistRecord;
use crate::Rejection;

/// A batch proven committed by a certificate of `2f + 1` commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedBatch {
    /// The primary's pre-prepare.
    pub pre_prepare: Signed<PrePrepare>,
    /// The batch.
    pub batch: Batch,
    /// The commit certificate.
    pub commits: QuorumCert<Commit>,
}

/// The stable checkpoint a replica resumes from: the proof and the encoded
/// state it certifies ([`crate::app::Snapshot`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StableState {
    /// The proof (`2f + 1` matching checkpoints).
    pub cert: QuorumCert<Checkpoint>,
    /// The encoded [`crate::app::Snapshot`] whose digest the proof certifies.
    pub snapshot: Vec<u8>,
}

/// Everything a replica made durable, as a restarted replica needs it.
///
/// Own votes are keyed by (view, seq): at most one digest per key, since a
/// replica never votes twice there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableState {
    /// The highest view the replica reached (votes of higher views raise
    /// it in [`crate::Replica::restore`]).
    pub view: View,
    /// The last stable checkpoint with its snapshot; `None`: the initial
    /// state.
    pub stable: Option<StableState>,
    /// Own pre-prepares (sent as primary or accepted as backup), with
    /// their batches.
    pub pre_prepares: BTreeMap<(View, SeqNo), (Signed<PrePrepare>, Batch)>,
    /// Own prepares.
    pub prepares: BTreeMap<(View, SeqNo), Signed<Prepare>>,
    /// Own commits.
    pub commits: BTreeMap<(View, SeqNo), Signed<Commit>>,
    /// Batches with commit certificates (fetched from peers), by seq.
    pub committed: BTreeMap<SeqNo, CommittedBatch>,
    /// Own checkpoints with the snapshots they digest, by seq.
    pub checkpoints: BTreeMap<SeqNo, (Signed<Checkpoint>, Vec<u8>)>,
    /// Prepared certificates (PBFT 4.4, the set `P`), by (view, seq).
    pub prepared: BTreeMap<(View, SeqNo), PreparedCert>,
    /// This replica's last VIEW-CHANGE, if it has not entered that view.
    pub view_change: Option<Signed<ViewChange>>,
    /// The NEW-VIEW of the last view this replica entered.
    pub new_view: Option<Signed<NewView>>,
}

impl DurableState {
    /// Adds one record that became durable, as a store would: a stable
    /// checkpoint discards everything at or below it (PBFT 4.3). A stable
    /// checkpoint whose snapshot is not durable here is not adopted (the
    /// records below it are kept, so the replica can still resume from the
    /// previous one).
    pub fn apply(&mut self, record: &PersistRecord) {
        match record {
            PersistRecord::PrePrepare { pre_prepare, batch } => {
                let key = (pre_prepare.value.view, pre_prepare.value.seq);
                self.pre_prepares
                    .entry(key)
                    .or_insert_with(|| (pre_prepare.clone(), batch.clone()));
            }
            PersistRecord::Prepare(p) => {
                self.prepares
                    .entry((p.value.view, p.value.seq))
                    .or_insert_with(|| p.clone());
            }
            PersistRecord::Commit(c) => {
                self.commits
                    .entry((c.value.view, c.value.seq))
                    .or_insert_with(|| c.clone());
            }
            PersistRecord::CommittedBatch {
                pre_prepare,
                batch,
                commits,
            } => {
                self.committed.insert(
                    pre_prepare.value.seq,
                    CommittedBatch {
                        pre_prepare: pre_prepare.clone(),
                        batch: batch.clone(),
                        commits: commits.clone(),
                    },
                );
            }
            PersistRecord::Checkpoint {
                checkpoint,
                snapshot,
            } => {
                self.checkpoints
                    .insert(checkpoint.value.seq, (checkpoint.clone(), snapshot.clone()));
            }
            PersistRecord::StateTransfer {
                checkpoint,
                snapshot,
            } => self.set_stable(checkpoint.clone(), snapshot.clone()),
            PersistRecord::PreparedCert(cert) => {
                let key = (cert.pre_prepare.value.view, cert.pre_prepare.value.seq);
                self.prepared.entry(key).or_insert_with(|| cert.clone());
            }
            PersistRecord::ViewChange(vc) => {
                if self
                    .new_view
                    .as_ref()
                    .is_some_and(|nv| nv.value.view >= vc.value.new_view)
                {
                    return;
                }
                self.view_change = Some(vc.clone());
            }
            PersistRecord::NewView(nv) => {
                if self
                    .view_change
                    .as_ref()
                    .is_some_and(|vc| vc.value.new_view <= nv.value.view)
                {
                    self.view_change = None;
                }
                if self
                    .new_view
                    .as_ref()
                    .is_none_or(|old| old.value.view < nv.value.view)
                {
                    self.new_view = Some(nv.clone());
                }
            }
            PersistRecord::StableCheckpoint(cert) => {
                let seq = cert.value.seq;
                let snapshot = match &self.stable {
                    Some(s) if s.cert.value.seq == seq => Some(s.snapshot.clone()),
                    _ => self.checkpoints.get(&seq).map(|(_, s)| s.clone()),
                };
                if let Some(snapshot) = snapshot {
                    self.set_stable(cert.clone(), snapshot);
                }
            }
        }
    }

    fn set_stable(&mut self, cert: QuorumCert<Checkpoint>, snapshot: Vec<u8>) {
        let seq = cert.value.seq;
        if self.stable.as_ref().is_some_and(|s| s.cert.value.seq > seq) {
            return;
        }
        let above = |key: &(View, SeqNo)| key.1 > seq;
        self.pre_prepares.retain(|k, _| above(k));
        self.prepares.retain(|k, _| above(k));
        self.commits.retain(|k, _| above(k));
        self.prepared.retain(|k, _| above(k));
        self.committed = self.committed.split_off(&seq.next());
        self.checkpoints = self.checkpoints.split_off(&seq.next());
        self.stable = Some(StableState { cert, snapshot });
    }

    /// The highest view of the state: [`DurableState::view`] or the view of
    /// any own vote, whichever is higher.
    #[must_use]
    pub fn highest_view(&self) -> View {
        self.pre_prepares
            .keys()
            .chain(self.prepares.keys())
            .chain(self.commits.keys())
            .chain(self.prepared.keys())
            .map(|(v, _)| *v)
            .chain(std::iter::once(self.view))
            .chain(self.view_change.iter().map(|vc| vc.value.new_view))
            .chain(self.new_view.iter().map(|nv| nv.value.view))
            .max()
            .unwrap_or(self.view)
    }
}

/// Why a replica could not be restored from a [`DurableState`]. Each one
/// means the durable state is damaged or belongs to another replica or
/// cluster: the host must stop rather than resume from it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The parameters, signer or configuration are invalid
    /// (as in [`crate::Replica::new`]).
    #[error("invalid parameters: {0}")]
    Params(#[from] crate::ParamsError),
    /// The stable checkpoint certificate does not verify.
    #[error("the stable checkpoint certificate at seq {0} does not verify")]
    InvalidStableCertificate(SeqNo),
    /// The stable snapshot does not decode or the application refuses it.
    #[error("the snapshot at seq {seq} does not restore: {reason}")]
    BadSnapshot {
        /// The checkpoint's sequence number.
        seq: SeqNo,
        /// Why.
        reason: String,
    },
    /// The stable snapshot's digest is not the one its certificate names
    /// ([`crate::app::checkpoint_digest`], the Merkle root of its bytes).
    #[error("the snapshot at seq {0} does not match its certificate")]
    SnapshotDigestMismatch(SeqNo),
    /// A record of this replica's own messages is not signed by it, or
    /// does not verify.
    #[error("own {kind} at seq {seq} is not a valid message of this replica")]
    BadOwnRecord {
        /// The record kind.
        kind: &'static str,
        /// Its sequence number.
        seq: SeqNo,
    },
    /// A pre-prepare's batch does not hash to its digest.
    #[error("the batch of the pre-prepare at seq {0} does not match its digest")]
    BatchDigestMismatch(SeqNo),
    /// A committed batch's proof does not verify.
    #[error("the committed batch at seq {seq} does not verify: {reason:?}")]
    InvalidCommittedBatch {
        /// Its sequence number.
        seq: SeqNo,
        /// Why.
        reason: Rejection,
    },
}
