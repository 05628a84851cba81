//! State transfer (PBFT TOCS 2002 6.2, PROTOCOL 25): a replica that is
//! behind a stable checkpoint, or whose state at a checkpoint differs from
//! the certified one, fetches the checkpoint's snapshot in chunks, each
//! checked on arrival against the Merkle root that `2f + 1` signed
//! CHECKPOINT messages certify ([`crate::chunks`]); a peer that serves a bad
//! chunk is remembered and another is asked. The committed batches after
//! the checkpoint are then fetched with their commit certificates
//! (`Fetch::Batch`). Memory is bounded by `snapshot_bytes_max` on the
//! receiving side and by one cached tree on the serving side. None of this
//! depends on the view, so it also runs while a view change is in progress.

use pbft_types::{Checkpoint, Fetch, FetchResponse, Message, QuorumCert, ReplicaId, SeqNo};

use super::Replica;
use crate::app::{Application, Snapshot};
use crate::chunks::{Accepted, SnapshotAssembler, SnapshotTree};
use crate::io::{Output, Peer, PersistRecord};
use crate::Rejection;

/// A snapshot being fetched.
#[derive(Debug)]
pub(super) struct Transfer {
    /// The verified stable checkpoint whose snapshot is fetched.
    pub(super) cert: QuorumCert<Checkpoint>,
    assembler: SnapshotAssembler,
    /// Replicas known to hold the snapshot (they proved the checkpoint),
    /// asked first.
    holders: Vec<ReplicaId>,
    /// Rotates the peer asked after a bad chunk or a silent tick.
    attempt: u64,
    /// This replica executed past the checkpoint with a state that differs
    /// from the certified one: installing rolls it back (repair).
    repair: bool,
}

impl<A: Application> Replica<A> {
    /// The sequence number of the checkpoint being fetched, if any.
    pub(super) fn transfer_seq(&self) -> Option<SeqNo> {
        self.transfer.as_ref().map(|t| t.cert.value.seq)
    }

    /// Starts fetching the snapshot of a verified stable checkpoint from
    /// `holders` (first) and the other replicas.
    pub(super) fn start_transfer(
        &mut self,
        cert: QuorumCert<Checkpoint>,
        holders: Vec<ReplicaId>,
        repair: bool,
    ) {
        let seq = cert.value.seq;
        if let Some(t) = self.transfer.as_mut().filter(|t| t.cert.value.seq >= seq) {
            for h in holders {
                if !t.holders.contains(&h) {
                    t.holders.push(h);
                }
            }
            return self.request_chunk(None);
        }
        let assembler =
            SnapshotAssembler::new(cert.value.state_digest, seq, self.params.snapshot_bytes_max);
        self.transfer = Some(Transfer {
            cert,
            assembler,
            holders,
            attempt: 0,
            repair,
        });
        self.request_chunk(None);
    }

    /// Asks for the next missing chunk: from `preferred` if it is not known
    /// bad, else from a holder or any other replica, rotating with each
    /// attempt.
    fn request_chunk(&mut self, preferred: Option<ReplicaId>) {
        let Some(t) = self.transfer.as_ref() else {
            return;
        };
        let Some(chunk) = t.assembler.next_missing() else {
            return;
        };
        let bad = t.assembler.bad_peers();
        let to = match preferred.filter(|p| !bad.contains(p)) {
            Some(p) => Some(p),
            None => {
                let mut candidates: Vec<ReplicaId> = t
                    .holders
                    .iter()
                    .copied()
                    .filter(|h| *h != self.id)
                    .collect();
                for r in &self.config.replicas {
                    if r.id != self.id && !candidates.contains(&r.id) {
                        candidates.push(r.id);
                    }
                }
                t.assembler.pick_peer(&candidates, t.attempt)
            }
        };
        let seq = t.cert.value.seq;
        if let Some(to) = to {
            self.outputs.push(Output::Send {
                to,
                message: Message::Fetch(Fetch::SnapshotChunk { seq, chunk }),
            });
        }
    }

    /// No progress since the last tick: ask the next peer.
    pub(super) fn retransmit_transfer(&mut self) {
        if let Some(t) = self.transfer.as_mut() {
            t.attempt = t.attempt.wrapping_add(1);
            self.request_chunk(None);
        }
    }

    /// A stable checkpoint proof from `from` (PBFT 4.3): adopt it if this
    /// replica executed that far, else fetch the snapshot it certifies.
    pub(super) fn on_stable_checkpoint_proof(
        &mut self,
        from: ReplicaId,
        cert: QuorumCert<Checkpoint>,
    ) {
        let peer = Peer::Replica(from);
        let seq = cert.value.seq;
        if seq <= self.low {
            return self.reject(peer, Rejection::Duplicate);
        }
        if self.transfer_seq().is_some_and(|t| t >= seq) {
            // Already verified: this peer holds it too.
            return self.start_transfer(cert, vec![from], false);
        }
        self.stats.certificates_verified += 1;
        let Ok(cert) = self.keyring.verify_cert(cert, self.quorum()) else {
            return self.reject(peer, Rejection::InvalidProof("checkpoint certificate"));
        };
        let cert = cert.into_cert();
        let digest = cert.value.state_digest;
        if seq <= self.last_executed {
            // We executed that far but missed the checkpoint votes: adopt the
            // proof and collect garbage (PBFT 4.3), unless our state there
            // differs, which a state transfer repairs.
            let own = self
                .checkpoints
                .get(&seq)
                .and_then(|v| v.get(&self.id))
                .map(|c| c.value().state_digest);
            if own.is_some_and(|d| d != digest) {
                return self.start_transfer(cert, vec![from], true);
            }
            return self.garbage_collect(seq, digest, cert);
        }
        self.start_transfer(cert, vec![from], false);
    }

    /// A chunk of the snapshot being fetched (PROTOCOL 25): stored if it
    /// verifies against the certified root; a bad one marks its sender and
    /// another replica is asked.
    pub(super) fn on_snapshot_chunk(
        &mut self,
        from: ReplicaId,
        seq: SeqNo,
        chunk: u32,
        chunk_count: u32,
        data: &[u8],
        proof: &[pbft_types::Digest],
    ) {
        let peer = Peer::Replica(from);
        let Some(t) = self.transfer.as_mut().filter(|t| t.cert.value.seq == seq) else {
            return self.reject(peer, Rejection::Duplicate);
        };
        match t
            .assembler
            .accept(from, seq, chunk, chunk_count, data, proof)
        {
            Ok(Accepted::Duplicate) => self.reject(peer, Rejection::Duplicate),
            Ok(Accepted::Stored) => self.request_chunk(Some(from)),
            Ok(Accepted::Complete) => {
                if let Some(t) = self.transfer.take() {
                    self.install_snapshot(from, t);
                }
            }
            Err(e) => {
                if matches!(e, crate::chunks::ChunkError::TooLarge { .. }) {
                    // Above this replica's bound: the transfer cannot finish.
                    self.transfer = None;
                    return self.reject(peer, Rejection::Full("snapshot_bytes_max"));
                }
                let fault = e.is_peer_fault();
                if let Some(t) = self.transfer.as_mut() {
                    t.attempt = t.attempt.wrapping_add(1);
                }
                self.reject(peer, Rejection::InvalidProof("snapshot chunk"));
                if fault {
                    self.request_chunk(None);
                }
            }
        }
    }

    /// Installs a complete, verified snapshot: the application, the reply
    /// table, the stable checkpoint; then executes the committed batches
    /// after it.
    fn install_snapshot(&mut self, from: ReplicaId, t: Transfer) {
        let peer = Peer::Replica(from);
        let Transfer {
            cert,
            assembler,
            repair,
            ..
        } = t;
        let seq = cert.value.seq;
        if seq <= self.low || (!repair && seq <= self.last_executed) {
            // Caught up meanwhile: installing it would roll execution back.
            return self.reject(peer, Rejection::Duplicate);
        }
        let data = match assembler.finish() {
            Ok(d) => d,
            Err(_) => return self.reject(peer, Rejection::InvalidProof("snapshot root")),
        };
        // The bytes are the certified ones: failing to decode them is a
        // broken application, not a faulty peer.
        let Ok(snapshot) = pbft_types::from_canonical_bytes::<Snapshot>(&data, usize::MAX) else {
            return self.reject(
                Peer::Host,
                Rejection::Internal("the certified snapshot does not decode".into()),
            );
        };
        if let Err(e) = self.app.restore(&snapshot.app) {
            return self.reject(Peer::Host, Rejection::Internal(e.to_string()));
        }
        self.replies = snapshot.replies;
        for (client, cached) in &self.replies {
            self.pending.remove_up_to(*client, cached.request_no);
        }
        let replies = &self.replies;
        self.in_flight
            .retain(|(c, no)| replies.get(c).is_none_or(|r| *no > r.request_no));
        if repair {
            // Batches executed on the wrong state run again on the repaired
            // one; our checkpoints above it were of the wrong state.
            for slot in self.log.range_mut(seq.next()..).map(|(_, s)| s) {
                slot.executed = false;
            }
            let id = self.id;
            for votes in self.checkpoints.range_mut(seq.next()..).map(|(_, v)| v) {
                votes.remove(&id);
            }
        }
        self.last_executed = seq;
        self.snapshots.insert(seq, data.clone());
        self.persist(
            vec![PersistRecord::StateTransfer {
                checkpoint: cert.clone(),
                snapshot: data,
            }],
            Vec::new(),
        );
        let state_digest = cert.value.state_digest;
        self.garbage_collect(seq, state_digest, cert);
        self.execute_ready();
    }

    /// Serves a chunk of a snapshot this replica holds, with its Merkle
    /// proof; the tree of the last snapshot served is cached.
    pub(super) fn serve_chunk(&mut self, seq: SeqNo, chunk: u32) -> Option<FetchResponse> {
        let data = self.snapshots.get(&seq)?;
        if self.snapshot_tree.as_ref().is_none_or(|(s, _)| *s != seq) {
            self.snapshot_tree = Some((seq, SnapshotTree::new(data)));
        }
        let (_, tree) = self.snapshot_tree.as_ref()?;
        let (data, proof) = tree.chunk_with_proof(data, chunk)?;
        Some(FetchResponse::SnapshotChunk {
            seq,
            chunk,
            chunk_count: tree.chunk_count(),
            data,
            proof,
        })
    }
}
