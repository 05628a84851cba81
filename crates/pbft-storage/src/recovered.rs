//! What a replica resumes from, and the vote guard.

use std::collections::BTreeMap;

use pbft_types::{
    Checkpoint, ClientId, Commit, Digest, Prepare, PreparedCert, QuorumCert, SeqNo, Signed, View,
};

use crate::{CommittedRecord, Op, PrePrepareRecord, ReplyEntry, ViewState};

/// The kind of an own vote, for [`Recovered::own_vote`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VoteKind {
    /// A pre-prepare sent (primary) or accepted (backup).
    PrePrepare,
    /// A prepare.
    Prepare,
    /// A commit.
    Commit,
}

/// A second, different digest at a (view, seq) where the replica already
/// voted: voting it would be equivocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("already voted {kind:?} for {voted:?} at view {view} seq {seq}, refusing {proposed:?}")]
pub struct VoteConflict {
    /// The kind of vote.
    pub kind: VoteKind,
    /// The view.
    pub view: View,
    /// The sequence number.
    pub seq: SeqNo,
    /// The digest already voted for.
    pub voted: Digest,
    /// The digest that was proposed.
    pub proposed: Digest,
}

/// Everything a replica needs to resume, as read back from a store by
/// [`Store::recover`](crate::Store::recover).
///
/// Its size is bounded by the log window: [`Op::TruncateBelow`] at each
/// stable checkpoint removes everything older.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The last view state written, if any.
    pub view_state: Option<ViewState>,
    /// Own pre-prepares with their batches, by (view, seq).
    pub pre_prepares: BTreeMap<(View, SeqNo), PrePrepareRecord>,
    /// Own prepares, by (view, seq).
    pub prepares: BTreeMap<(View, SeqNo), Signed<Prepare>>,
    /// Own commits, by (view, seq).
    pub commits: BTreeMap<(View, SeqNo), Signed<Commit>>,
    /// Prepared certificates held, by (view, seq).
    pub prepared_certs: BTreeMap<(View, SeqNo), PreparedCert>,
    /// Batches with commit certificates, by seq.
    pub committed: BTreeMap<SeqNo, CommittedRecord>,
    /// Own checkpoint messages, by seq.
    pub checkpoints: BTreeMap<SeqNo, Signed<Checkpoint>>,
    /// The proof of the last stable checkpoint written.
    pub stable_checkpoint: Option<QuorumCert<Checkpoint>>,
    /// Application snapshots, by checkpoint seq.
    pub snapshots: BTreeMap<SeqNo, Vec<u8>>,
    /// The client reply table.
    pub replies: BTreeMap<ClientId, ReplyEntry>,
}

impl Recovered {
    /// The highest view the replica has reached: the view state's view or
    /// the view of any own vote or certificate, whichever is higher. A
    /// restarted replica must not act in a lower view.
    #[must_use]
    pub fn highest_view(&self) -> View {
        let keys = self
            .pre_prepares
            .keys()
            .chain(self.prepares.keys())
            .chain(self.commits.keys())
            .chain(self.prepared_certs.keys());
        keys.map(|(v, _)| *v)
            .chain(self.view_state.as_ref().map(|s| s.view))
            .max()
            .unwrap_or(View::ZERO)
    }

    /// The digest this replica already voted for with `kind` at
    /// (`view`, `seq`), if any.
    #[must_use]
    pub fn own_vote(&self, kind: VoteKind, view: View, seq: SeqNo) -> Option<Digest> {
        let key = (view, seq);
        match kind {
            VoteKind::PrePrepare => self
                .pre_prepares
                .get(&key)
                .map(|r| r.pre_prepare.value.digest),
            VoteKind::Prepare => self.prepares.get(&key).map(|p| p.value.digest),
            VoteKind::Commit => self.commits.get(&key).map(|c| c.value.digest),
        }
    }

    /// The vote guard: `Ok` if voting `digest` with `kind` at (`view`,
    /// `seq`) is allowed (no vote yet, or the same digest again), a
    /// [`VoteConflict`] if the replica already voted another digest there.
    ///
    /// # Errors
    /// [`VoteConflict`] for a second digest.
    pub fn check_vote(
        &self,
        kind: VoteKind,
        view: View,
        seq: SeqNo,
        digest: Digest,
    ) -> Result<(), VoteConflict> {
        match self.own_vote(kind, view, seq) {
            Some(voted) if voted != digest => Err(VoteConflict {
                kind,
                view,
                seq,
                voted,
                proposed: digest,
            }),
            _ => Ok(()),
        }
    }

    /// The stable checkpoint's snapshot, if the store holds it.
    #[must_use]
    pub fn stable_snapshot(&self) -> Option<&[u8]> {
        let seq = self.stable_checkpoint.as_ref()?.value.seq;
        self.snapshots.get(&seq).map(Vec::as_slice)
    }

    /// Applies one operation, with the semantics every store implements.
    pub(crate) fn apply(&mut self, op: &Op) {
        match op {
            Op::PutViewState(s) => self.view_state = Some(s.clone()),
            Op::PutPrePrepare(r) => {
                let k = (r.pre_prepare.value.view, r.pre_prepare.value.seq);
                self.pre_prepares.insert(k, r.clone());
            }
            Op::PutPrepare(p) => {
                self.prepares.insert((p.value.view, p.value.seq), p.clone());
            }
            Op::PutCommit(c) => {
                self.commits.insert((c.value.view, c.value.seq), c.clone());
            }
            Op::PutPreparedCert(c) => {
                let pp = &c.pre_prepare.value;
                self.prepared_certs.insert((pp.view, pp.seq), c.clone());
            }
            Op::PutCommitted(r) => {
                self.committed.insert(r.pre_prepare.value.seq, r.clone());
            }
            Op::PutCheckpoint(c) => {
                self.checkpoints.insert(c.value.seq, c.clone());
            }
            Op::PutStableCheckpoint(c) => self.stable_checkpoint = Some(c.clone()),
            Op::PutSnapshot { seq, snapshot } => {
                self.snapshots.insert(*seq, snapshot.clone());
            }
            Op::PutReply { client, entry } => {
                self.replies.insert(*client, entry.clone());
            }
            Op::TruncateBelow(low) => self.truncate_below(*low),
        }
    }

    fn truncate_below(&mut self, low: SeqNo) {
        let keep = |k: &(View, SeqNo)| k.1 >= low;
        self.pre_prepares.retain(|k, _| keep(k));
        self.prepares.retain(|k, _| keep(k));
        self.commits.retain(|k, _| keep(k));
        self.prepared_certs.retain(|k, _| keep(k));
        self.committed = self.committed.split_off(&low);
        self.checkpoints = self.checkpoints.split_off(&low);
        self.snapshots = self.snapshots.split_off(&low);
    }
}
