//! The bridge between the core's persist records and the store, both ways:
//! [`to_ops`] maps each [`PersistRecord`] onto store operations (the table
//! in `pbft-storage`'s documentation), and [`durable_state`] turns what a
//! store recovered into the [`DurableState`] that
//! [`pbft_core::Replica::restore`] resumes from. Only the node wires the
//! two crates together: `pbft-core` does not depend on `pbft-storage`.

use pbft_core::{CommittedBatch, DurableState, PersistRecord, StableState};
use pbft_storage::{CommittedRecord, Op, PrePrepareRecord, Recovered, ViewState, WriteBatch};
use pbft_types::SeqNo;

/// Maps the core's persist records onto store operations (the table in
/// `pbft-storage`'s documentation).
///
/// # Errors
/// A record this node does not know how to store: it must never be
/// acknowledged as durable, so the node stops instead.
pub fn to_ops(records: Vec<PersistRecord>) -> Result<WriteBatch, String> {
    let mut batch = WriteBatch::new();
    for record in records {
        match record {
            PersistRecord::PrePrepare {
                pre_prepare,
                batch: b,
            } => {
                batch.push(Op::PutPrePrepare(PrePrepareRecord {
                    pre_prepare,
                    batch: b,
                }));
            }
            PersistRecord::Prepare(p) => {
                batch.push(Op::PutPrepare(p));
            }
            PersistRecord::Commit(c) => {
                batch.push(Op::PutCommit(c));
            }
            PersistRecord::CommittedBatch {
                pre_prepare,
                batch: b,
                commits,
            } => {
                batch.push(Op::PutCommitted(CommittedRecord {
                    pre_prepare,
                    batch: b,
                    commits,
                }));
            }
            PersistRecord::Checkpoint {
                checkpoint,
                snapshot,
            } => {
                let seq = checkpoint.value.seq;
                batch.push(Op::PutCheckpoint(checkpoint));
                batch.push(Op::PutSnapshot { seq, snapshot });
            }
            PersistRecord::StateTransfer {
                checkpoint,
                snapshot,
            } => {
                // The fetched snapshot becomes the stable state.
                let seq = checkpoint.value.seq;
                batch.push(Op::PutSnapshot { seq, snapshot });
                batch.push(Op::PutStableCheckpoint(checkpoint));
                batch.push(Op::TruncateBelow(seq));
            }
            PersistRecord::StableCheckpoint(cert) => {
                let seq = cert.value.seq;
                batch.push(Op::PutStableCheckpoint(cert));
                batch.push(Op::TruncateBelow(seq));
            }
            PersistRecord::PreparedCert(cert) => {
                batch.push(Op::PutPreparedCert(cert));
            }
            PersistRecord::ViewChange(vc) => {
                // PBFT 4.4: the replica left its view; a restart resumes the
                // view change and re-sends this message.
                batch.push(Op::PutViewState(ViewState {
                    view: vc.value.new_view,
                    in_view_change: true,
                    last_view_change: Some(vc),
                    last_new_view: None,
                }));
            }
            PersistRecord::NewView(nv) => {
                batch.push(Op::PutViewState(ViewState {
                    view: nv.value.view,
                    in_view_change: false,
                    last_view_change: None,
                    last_new_view: Some(nv),
                }));
            }
            other => {
                return Err(format!("this node cannot persist {other:?}"));
            }
        }
    }
    Ok(batch)
}

/// Why a store's contents cannot be resumed from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// The store holds a stable checkpoint proof but not its snapshot.
    #[error("the store holds the stable checkpoint at seq {0} without its snapshot")]
    MissingStableSnapshot(SeqNo),
    /// An own checkpoint without the snapshot it digests.
    #[error("the store holds the checkpoint at seq {0} without its snapshot")]
    MissingCheckpointSnapshot(SeqNo),
}

/// What a store recovered, in the core's terms. The reply table lives in
/// the snapshots (the core checkpoints it with the application state), so
/// `recovered.replies` is not used; prepared certificates are for the view
/// change (issue 4).
///
/// # Errors
/// [`RecoveryError`] when a certificate or checkpoint lacks its snapshot.
pub fn durable_state(recovered: &Recovered) -> Result<DurableState, RecoveryError> {
    let stable = match &recovered.stable_checkpoint {
        Some(cert) => {
            let snapshot = recovered
                .stable_snapshot()
                .ok_or(RecoveryError::MissingStableSnapshot(cert.value.seq))?;
            Some(StableState {
                cert: cert.clone(),
                snapshot: snapshot.to_vec(),
            })
        }
        None => None,
    };
    let low = stable.as_ref().map_or(SeqNo(0), |s| s.cert.value.seq);
    let mut checkpoints = std::collections::BTreeMap::new();
    for (seq, checkpoint) in recovered.checkpoints.range(low.next()..) {
        let snapshot = recovered
            .snapshots
            .get(seq)
            .ok_or(RecoveryError::MissingCheckpointSnapshot(*seq))?;
        checkpoints.insert(*seq, (checkpoint.clone(), snapshot.clone()));
    }
    Ok(DurableState {
        view: recovered.highest_view(),
        stable,
        pre_prepares: recovered
            .pre_prepares
            .iter()
            .map(|(k, r)| (*k, (r.pre_prepare.clone(), r.batch.clone())))
            .collect(),
        prepares: recovered.prepares.clone(),
        commits: recovered.commits.clone(),
        committed: recovered
            .committed
            .iter()
            .map(|(seq, r)| {
                (
                    *seq,
                    CommittedBatch {
                        pre_prepare: r.pre_prepare.clone(),
                        batch: r.batch.clone(),
                        commits: r.commits.clone(),
                    },
                )
            })
            .collect(),
        checkpoints,
        prepared: recovered.prepared_certs.clone(),
        view_change: recovered
            .view_state
            .as_ref()
            .and_then(|v| v.last_view_change.clone()),
        new_view: recovered
            .view_state
            .as_ref()
            .and_then(|v| v.last_new_view.clone()),
    })
}

/// One line describing a recovered state, for the log.
#[must_use]
pub fn summary(state: &DurableState) -> String {
    let stable = state.stable.as_ref().map_or(0, |s| s.cert.value.seq.0);
    let highest = state
        .pre_prepares
        .keys()
        .chain(state.prepares.keys())
        .chain(state.commits.keys())
        .map(|(_, s)| s.0)
        .chain(state.committed.keys().map(|s| s.0))
        .max()
        .unwrap_or(stable);
    format!(
        "view {}, stable checkpoint {stable}, {} own pre-prepares, {} prepares, {} commits, \
         {} committed batches, {} own checkpoints above it, highest seq {highest}",
        state.highest_view(),
        state.pre_prepares.len(),
        state.prepares.len(),
        state.commits.len(),
        state.committed.len(),
        state.checkpoints.len()
    )
}
