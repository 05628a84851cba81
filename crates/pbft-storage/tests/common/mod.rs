//! Builders of protocol values for the store tests.
#![allow(dead_code, clippy::unwrap_used)]

use pbft_storage::{CommittedRecord, Op, PrePrepareRecord, ReplyEntry, ViewState, WriteBatch};
use pbft_types::{
    Authenticator, Batch, Checkpoint, ClientId, ClientRequest, Commit, Digest, PrePrepare, Prepare,
    PreparedCert, QuorumCert, ReplicaId, Reply, Request, RequestNo, SeqNo, Signature, Signed, View,
    ViewChange,
};

/// A digest derived from a number.
pub fn digest(n: u64) -> Digest {
    let mut d = [0u8; 32];
    d[..8].copy_from_slice(&n.to_be_bytes());
    d[31] = 0xd1;
    Digest(d)
}

pub fn signed<T>(value: T) -> Signed<T> {
    Signed {
        value,
        signer: ReplicaId(1),
        signature: Signature([9; 64]),
    }
}

/// A batch of `count` requests of `op_bytes` bytes each.
pub fn batch(seed: u64, count: usize, op_bytes: usize) -> Batch {
    let requests = (0..count)
        .map(|i| ClientRequest {
            value: Request {
                request_no: RequestNo(seed * 1000 + i as u64),
                read_only: false,
                op: vec![(seed as u8).wrapping_add(i as u8); op_bytes],
            },
            signer: ClientId(i as u64),
            auth: Authenticator::Signature(Signature([3; 64])),
        })
        .collect();
    Batch { requests }
}

pub fn pre_prepare(view: u64, seq: u64, d: Digest, batch: Batch) -> PrePrepareRecord {
    PrePrepareRecord {
        pre_prepare: signed(PrePrepare {
            view: View(view),
            seq: SeqNo(seq),
            digest: d,
        }),
        batch,
    }
}

pub fn prepare(view: u64, seq: u64, d: Digest) -> Signed<Prepare> {
    signed(Prepare {
        view: View(view),
        seq: SeqNo(seq),
        digest: d,
    })
}

pub fn commit(view: u64, seq: u64, d: Digest) -> Signed<Commit> {
    signed(Commit {
        view: View(view),
        seq: SeqNo(seq),
        digest: d,
    })
}

pub fn prepared_cert(view: u64, seq: u64, d: Digest) -> PreparedCert {
    PreparedCert {
        pre_prepare: pre_prepare(view, seq, d, Batch::default()).pre_prepare,
        prepares: QuorumCert {
            value: prepare(view, seq, d).value,
            signatures: vec![
                (ReplicaId(1), Signature([1; 64])),
                (ReplicaId(2), Signature([2; 64])),
            ],
        },
    }
}

pub fn committed(view: u64, seq: u64, d: Digest) -> CommittedRecord {
    CommittedRecord {
        pre_prepare: pre_prepare(view, seq, d, Batch::default()).pre_prepare,
        batch: batch(seq, 2, 8),
        commits: QuorumCert {
            value: commit(view, seq, d).value,
            signatures: vec![(ReplicaId(0), Signature([4; 64])); 3],
        },
    }
}

pub fn checkpoint(seq: u64) -> Signed<Checkpoint> {
    signed(Checkpoint {
        seq: SeqNo(seq),
        state_digest: digest(seq + 77),
    })
}

pub fn stable(seq: u64) -> QuorumCert<Checkpoint> {
    QuorumCert {
        value: checkpoint(seq).value,
        signatures: vec![(ReplicaId(0), Signature([5; 64])); 3],
    }
}

pub fn reply_entry(client: u64, request_no: u64) -> ReplyEntry {
    ReplyEntry {
        request_no: RequestNo(request_no),
        reply: Reply {
            view: View(1),
            client: ClientId(client),
            request_no: RequestNo(request_no),
            replica: ReplicaId(1),
            result: vec![7; 10],
        },
    }
}

pub fn view_state(view: u64, in_view_change: bool) -> ViewState {
    ViewState {
        view: View(view),
        in_view_change,
        last_view_change: in_view_change.then(|| {
            signed(ViewChange {
                new_view: View(view),
                checkpoint: Some(stable(0)),
                prepared: vec![prepared_cert(view.saturating_sub(1), 3, digest(3))],
            })
        }),
        last_new_view: None,
    }
}

/// Every kind of record for one (view, seq).
pub fn all_ops(view: u64, seq: u64) -> WriteBatch {
    let d = digest(seq * 10 + view);
    WriteBatch::new()
        .with(Op::PutPrePrepare(pre_prepare(
            view,
            seq,
            d,
            batch(seq, 3, 16),
        )))
        .with(Op::PutPrepare(prepare(view, seq, d)))
        .with(Op::PutCommit(commit(view, seq, d)))
        .with(Op::PutPreparedCert(prepared_cert(view, seq, d)))
        .with(Op::PutCommitted(committed(view, seq, d)))
        .with(Op::PutCheckpoint(checkpoint(seq)))
        .with(Op::PutSnapshot {
            seq: SeqNo(seq),
            snapshot: vec![seq as u8; 100],
        })
}
