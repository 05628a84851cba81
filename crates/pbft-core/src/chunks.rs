//! State transfer of checkpoint snapshots in verifiable chunks
//! (PROTOCOL 25; PBFT, Castro and Liskov, TOCS 2002, 6.2 "State Transfer").
//!
//! A checkpoint's snapshot (the canonical encoding of the application state
//! and the reply table) is cut into chunks of [`SNAPSHOT_CHUNK_BYTES`]; the
//! checkpoint's certified state digest is the Merkle root
//! ([`snapshot_root`]) over the chunks. A replica that is behind fetches the
//! chunks one by one (`Fetch::SnapshotChunk`) from any peer and checks each
//! one on arrival ([`verify_chunk`]) against the root that `2f + 1` signed
//! CHECKPOINT messages certify, so a faulty peer can waste at most one chunk
//! of bandwidth before it is detected, and the replica asks another peer
//! ([`SnapshotAssembler::bad_peers`], [`SnapshotAssembler::pick_peer`]).
//! PBFT's own state transfer (TOCS 2002, 6.2) uses a hierarchy of partition
//! digests for the same purpose; here the partitions are fixed-size chunks
//! of one byte string.
//!
//! # Chunking
//!
//! A snapshot of `len` bytes has [`chunk_count`]`(len) = max(1,
//! ceil(len / SNAPSHOT_CHUNK_BYTES))` chunks. Chunk `i` is the bytes
//! `i * SNAPSHOT_CHUNK_BYTES .. min(len, (i + 1) * SNAPSHOT_CHUNK_BYTES)`:
//! every chunk is exactly [`SNAPSHOT_CHUNK_BYTES`] long except the last,
//! which holds `1..=SNAPSHOT_CHUNK_BYTES` bytes. The empty snapshot is one
//! empty chunk (the only case where a chunk is empty). All replicas must
//! chunk identically, so the chunk size is a protocol constant.
//!
//! # Tree
//!
//! Three blake3 key-derivation contexts separate the three kinds of hash
//! (a leaf can never be taken for an inner node, nor an inner node for the
//! root):
//!
//! - leaf `i`: `blake3_derive_key(LEAF, u32_le(i) || chunk_i)`;
//! - inner node: `blake3_derive_key(NODE, left || right)`;
//! - root: `blake3_derive_key(ROOT, u32_le(chunk_count) || top)`, where `top`
//!   is the top of the tree.
//!
//! The tree is built level by level: adjacent nodes are paired left to
//! right, and an odd node at the end of a level is *promoted* unchanged to
//! the next level (never duplicated, so no two different leaf sequences
//! give the same top, unlike Bitcoin's duplication, CVE-2012-2459). This is
//! the same shape as RFC 6962's Merkle tree hash (the left subtree holds the
//! largest power of two of leaves strictly below the count). A proof is the
//! list of sibling hashes from the leaf up to the top, skipping the levels
//! where the node was promoted; its length is a function of
//! `(index, chunk_count)` only ([`proof_len`]), at most 32.
//!
//! # What the root binds
//!
//! The root commits to the chunk count, and each leaf to its index and its
//! bytes (hence its length). Together with the size rule above, the root
//! therefore also commits to the total length, `(chunk_count - 1) *
//! SNAPSHOT_CHUNK_BYTES + len(last chunk)`: a truncated or extended
//! snapshot, a chunk moved to another index, a chunk of another snapshot or
//! a chunk served with another chunk count does not verify. The total
//! length is not an input of [`verify_chunk`] because the wire message
//! (`FetchResponse::SnapshotChunk`) does not carry it and it is already
//! bound.
//!
//! # Serving and receiving
//!
//! A serving replica builds a [`SnapshotTree`] once per snapshot and answers
//! each request with [`SnapshotTree::chunk_with_proof`] (or, without a
//! cached tree, [`chunk_with_proof`], which hashes the whole snapshot). A
//! receiving replica creates a [`SnapshotAssembler`] with the certified
//! root, the checkpoint's sequence number and its local bound on snapshot
//! size, asks for [`SnapshotAssembler::next_missing`] (or several of
//! [`SnapshotAssembler::missing`]) from [`SnapshotAssembler::pick_peer`],
//! feeds every response to [`SnapshotAssembler::accept`], and once
//! [`SnapshotAssembler::is_complete`] calls [`SnapshotAssembler::finish`].
//! Nothing here reads a clock or draws a random number.

use std::collections::BTreeSet;

use pbft_types::{Digest, ReplicaId, SeqNo};
use thiserror::Error;

/// The size of every snapshot chunk but the last (PROTOCOL 25, PBFT TOCS
/// 2002 6.2). A protocol constant: all replicas must chunk a snapshot
/// identically for the Merkle root to agree.
pub const SNAPSHOT_CHUNK_BYTES: usize = 64 * 1024;

/// The largest chunk count [`verify_chunk`] accepts (PROTOCOL 25): `2^20`
/// chunks, a 64 GiB snapshot. It bounds the work and memory a peer's claimed
/// count can cause; a snapshot larger than this cannot be transferred.
pub const MAX_CHUNK_COUNT: u32 = 1 << 20;

/// blake3 key-derivation context of a leaf (one chunk).
const LEAF_CONTEXT: &str = "pbft-core 2026-11 snapshot chunk leaf v1";
/// blake3 key-derivation context of an inner node (two children).
const NODE_CONTEXT: &str = "pbft-core 2026-11 snapshot chunk node v1";
/// blake3 key-derivation context of the root (chunk count and tree top).
const ROOT_CONTEXT: &str = "pbft-core 2026-11 snapshot chunk root v1";

/// Why a snapshot chunk, or an assembled snapshot, is refused (PROTOCOL 25,
/// PBFT TOCS 2002 6.2). [`ChunkError::is_peer_fault`] tells whether the
/// peer that served it is provably faulty.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ChunkError {
    /// The claimed chunk count is zero or above [`MAX_CHUNK_COUNT`].
    #[error("chunk count {count} outside 1..={max}")]
    ChunkCountOutOfBounds {
        /// The claimed count.
        count: u32,
        /// The largest count accepted.
        max: u32,
    },
    /// The chunk index is not below the chunk count.
    #[error("chunk index {index} not below the chunk count {count}")]
    IndexOutOfRange {
        /// The claimed index.
        index: u32,
        /// The claimed count.
        count: u32,
    },
    /// The chunk's length breaks the size rule: every chunk but the last is
    /// exactly [`SNAPSHOT_CHUNK_BYTES`], the last is non-empty (unless it is
    /// the only one) and at most [`SNAPSHOT_CHUNK_BYTES`].
    #[error("chunk {index} has {len} bytes, expected {min}..={max}")]
    WrongChunkSize {
        /// The chunk index.
        index: u32,
        /// Its length.
        len: usize,
        /// The smallest valid length at this index.
        min: usize,
        /// The largest valid length at this index.
        max: usize,
    },
    /// The proof does not have one sibling hash per non-promoted level.
    #[error("proof has {got} hashes, expected {expected}")]
    ProofLength {
        /// The length the index and chunk count imply.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// The chunk and its proof, or the assembled snapshot, do not hash to
    /// the certified root.
    #[error("the snapshot chunk does not hash to the certified root")]
    RootMismatch,
    /// The chunk count differs from the one of the chunks already accepted.
    #[error("chunk count {got} differs from the verified count {expected}")]
    CountMismatch {
        /// The verified count.
        expected: u32,
        /// The claimed count.
        got: u32,
    },
    /// The chunk belongs to the snapshot of another checkpoint (for example
    /// a late answer to an earlier transfer).
    #[error("chunk of the snapshot at {got}, transferring the one at {expected}")]
    WrongSeq {
        /// The checkpoint being transferred.
        expected: SeqNo,
        /// The checkpoint of the chunk.
        got: SeqNo,
    },
    /// The certified snapshot is larger than the local bound (the chunk
    /// verified, so the peer is not at fault; the transfer cannot complete).
    #[error("the certified snapshot has at least {bytes_min} bytes, above the bound {bytes_max}")]
    TooLarge {
        /// A lower bound of the snapshot's length.
        bytes_min: u64,
        /// The local bound.
        bytes_max: usize,
    },
    /// [`SnapshotAssembler::finish`] was called before every chunk arrived.
    #[error("{missing} snapshot chunks are missing")]
    Incomplete {
        /// How many chunks are missing (1 if no chunk verified yet: the count
        /// is not known).
        missing: u32,
    },
}

impl ChunkError {
    /// Whether the error proves the serving peer faulty: an honest peer only
    /// serves chunks of the certified snapshot, which always verify
    /// (PROTOCOL 25). Stale answers ([`ChunkError::WrongSeq`]), a snapshot
    /// above the local bound ([`ChunkError::TooLarge`]) and
    /// [`ChunkError::Incomplete`] are not the peer's fault.
    #[must_use]
    pub fn is_peer_fault(&self) -> bool {
        match self {
            Self::ChunkCountOutOfBounds { .. }
            | Self::IndexOutOfRange { .. }
            | Self::WrongChunkSize { .. }
            | Self::ProofLength { .. }
            | Self::RootMismatch
            | Self::CountMismatch { .. } => true,
            Self::WrongSeq { .. } | Self::TooLarge { .. } | Self::Incomplete { .. } => false,
        }
    }
}

/// The number of chunks of a snapshot of `len` bytes (PROTOCOL 25):
/// `max(1, ceil(len / SNAPSHOT_CHUNK_BYTES))`, so the empty snapshot is one
/// empty chunk. Saturates at `u32::MAX` (a snapshot of 256 TiB); anything
/// above [`MAX_CHUNK_COUNT`] cannot be transferred anyway.
#[must_use]
pub fn chunk_count(len: usize) -> u32 {
    let count = len.div_ceil(SNAPSHOT_CHUNK_BYTES).max(1);
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// The valid lengths of chunk `index` of a snapshot of `count` chunks
/// (PROTOCOL 25): exactly [`SNAPSHOT_CHUNK_BYTES`] for all but the last,
/// `1..=SNAPSHOT_CHUNK_BYTES` for the last, `0..=SNAPSHOT_CHUNK_BYTES` when
/// there is only one. Meaningful for `index < count`.
#[must_use]
pub fn chunk_len_range(index: u32, count: u32) -> (usize, usize) {
    if count <= 1 {
        (0, SNAPSHOT_CHUNK_BYTES)
    } else if index.saturating_add(1) < count {
        (SNAPSHOT_CHUNK_BYTES, SNAPSHOT_CHUNK_BYTES)
    } else {
        (1, SNAPSHOT_CHUNK_BYTES)
    }
}

/// The number of sibling hashes in the proof of chunk `index` of a snapshot
/// of `count` chunks (PROTOCOL 25): one per level where the node on the
/// path has a sibling, none where it is promoted. At most 32.
#[must_use]
pub fn proof_len(index: u32, count: u32) -> usize {
    let (mut index, mut width, mut len) = (index, count, 0);
    while width > 1 {
        if index % 2 == 1 || index.saturating_add(1) < width {
            len += 1;
        }
        index /= 2;
        width = width.div_ceil(2);
    }
    len
}

/// Chunk `index` of `snapshot` (PROTOCOL 25), or `None` if the snapshot has
/// no such chunk. Chunk 0 of the empty snapshot is the empty slice.
#[must_use]
pub fn chunk(snapshot: &[u8], index: u32) -> Option<&[u8]> {
    if index >= chunk_count(snapshot.len()) {
        return None;
    }
    let start = usize::try_from(index)
        .ok()?
        .checked_mul(SNAPSHOT_CHUNK_BYTES)?;
    let end = start
        .saturating_add(SNAPSHOT_CHUNK_BYTES)
        .min(snapshot.len());
    snapshot.get(start..end)
}

/// The Merkle root over the chunks of `snapshot` (PROTOCOL 25, PBFT TOCS
/// 2002 6.2): the value a checkpoint's state digest commits to. See the
/// [module documentation](self) for the tree and the domain separation.
#[must_use]
pub fn snapshot_root(snapshot: &[u8]) -> Digest {
    let mut level = leaf_hashes(snapshot);
    let count = leaf_count(&level);
    while level.len() > 1 {
        level = parent_level(&level);
    }
    root_hash(count, level.first().unwrap_or(&Digest::ZERO))
}

/// Chunk `index` of `snapshot` with its Merkle proof (PROTOCOL 25), as a
/// serving replica puts them in `FetchResponse::SnapshotChunk`; `None` if
/// there is no such chunk. Hashes the whole snapshot: a replica that serves
/// many chunks keeps a [`SnapshotTree`] instead.
#[must_use]
pub fn chunk_with_proof(snapshot: &[u8], index: u32) -> Option<(Vec<u8>, Vec<Digest>)> {
    SnapshotTree::new(snapshot).chunk_with_proof(snapshot, index)
}

/// Checks chunk `index` of a snapshot of `chunk_count` chunks, with its
/// `proof` (sibling hashes from the leaf up), against the certified `root`
/// (PROTOCOL 25, PBFT TOCS 2002 6.2). Cheap checks come first: the count
/// bound, the index, the chunk's size and the proof's length are checked
/// before anything is hashed, and at most one chunk and 32 nodes are hashed.
/// Never panics, whatever the peer sent.
///
/// # Errors
/// [`ChunkError::ChunkCountOutOfBounds`], [`ChunkError::IndexOutOfRange`],
/// [`ChunkError::WrongChunkSize`], [`ChunkError::ProofLength`] or
/// [`ChunkError::RootMismatch`].
pub fn verify_chunk(
    root: &Digest,
    index: u32,
    chunk_count: u32,
    data: &[u8],
    proof: &[Digest],
) -> Result<(), ChunkError> {
    if chunk_count == 0 || chunk_count > MAX_CHUNK_COUNT {
        return Err(ChunkError::ChunkCountOutOfBounds {
            count: chunk_count,
            max: MAX_CHUNK_COUNT,
        });
    }
    if index >= chunk_count {
        return Err(ChunkError::IndexOutOfRange {
            index,
            count: chunk_count,
        });
    }
    let (min, max) = chunk_len_range(index, chunk_count);
    if data.len() < min || data.len() > max {
        return Err(ChunkError::WrongChunkSize {
            index,
            len: data.len(),
            min,
            max,
        });
    }
    let expected = proof_len(index, chunk_count);
    if proof.len() != expected {
        return Err(ChunkError::ProofLength {
            expected,
            got: proof.len(),
        });
    }
    let mut node = leaf_hash(index, data);
    let mut siblings = proof.iter();
    let (mut position, mut width) = (index, chunk_count);
    while width > 1 {
        let has_sibling = position % 2 == 1 || position.saturating_add(1) < width;
        if has_sibling {
            let Some(sibling) = siblings.next() else {
                return Err(ChunkError::ProofLength {
                    expected,
                    got: proof.len(),
                });
            };
            node = if position % 2 == 1 {
                node_hash(sibling, &node)
            } else {
                node_hash(&node, sibling)
            };
        }
        position /= 2;
        width = width.div_ceil(2);
    }
    if root_hash(chunk_count, &node) == *root {
        Ok(())
    } else {
        Err(ChunkError::RootMismatch)
    }
}

/// The Merkle tree of one snapshot, kept by a serving replica so that each
/// chunk's proof costs no hashing (PROTOCOL 25, PBFT TOCS 2002 6.2). It
/// holds only hashes (about `64 * chunk_count` bytes), not the snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotTree {
    /// `levels[0]` are the leaves, the last level is the single top node.
    levels: Vec<Vec<Digest>>,
    /// The root (over the chunk count and the top).
    root: Digest,
}

impl SnapshotTree {
    /// Hashes every chunk of `snapshot` and builds the tree.
    #[must_use]
    pub fn new(snapshot: &[u8]) -> Self {
        let leaves = leaf_hashes(snapshot);
        let count = leaf_count(&leaves);
        let mut levels = vec![leaves];
        while let Some(level) = levels.last().filter(|level| level.len() > 1) {
            let parent = parent_level(level);
            levels.push(parent);
        }
        let top = levels
            .last()
            .and_then(|level| level.first())
            .copied()
            .unwrap_or(Digest::ZERO);
        Self {
            levels,
            root: root_hash(count, &top),
        }
    }

    /// The root, equal to [`snapshot_root`] of the snapshot.
    #[must_use]
    pub fn root(&self) -> Digest {
        self.root
    }

    /// The snapshot's chunk count.
    #[must_use]
    pub fn chunk_count(&self) -> u32 {
        self.levels.first().map_or(0, |leaves| leaf_count(leaves))
    }

    /// The proof of chunk `index` (sibling hashes from the leaf up), or
    /// `None` if there is no such chunk.
    #[must_use]
    pub fn proof(&self, index: u32) -> Option<Vec<Digest>> {
        if index >= self.chunk_count() {
            return None;
        }
        let mut position = usize::try_from(index).ok()?;
        let mut proof = Vec::new();
        for level in self.levels.iter().take(self.levels.len().saturating_sub(1)) {
            let sibling = if position % 2 == 1 {
                level.get(position - 1)
            } else {
                level.get(position + 1)
            };
            if let Some(sibling) = sibling {
                proof.push(*sibling);
            }
            position /= 2;
        }
        Some(proof)
    }

    /// Chunk `index` of `snapshot` (the snapshot this tree was built from)
    /// with its proof, or `None` if there is no such chunk.
    #[must_use]
    pub fn chunk_with_proof(&self, snapshot: &[u8], index: u32) -> Option<(Vec<u8>, Vec<Digest>)> {
        let data = chunk(snapshot, index)?;
        Some((data.to_vec(), self.proof(index)?))
    }
}

/// What [`SnapshotAssembler::accept`] did with a chunk that it did not
/// refuse (PROTOCOL 25).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// The chunk verified and was stored; more chunks are missing.
    Stored,
    /// The chunk was already held; it was ignored (not verified again).
    Duplicate,
    /// The chunk verified and was stored, and it was the last one missing:
    /// [`SnapshotAssembler::finish`] can be called.
    Complete,
}

/// The receiving side of a snapshot transfer (PROTOCOL 25, PBFT TOCS 2002
/// 6.2): collects the chunks of the snapshot whose root a stable checkpoint
/// certifies, accepting each one only if it verifies, within a bound on the
/// snapshot's size, and remembers which peers served a bad chunk.
///
/// The chunk count is learnt from the first chunk that verifies (the root
/// commits to it); memory for the snapshot is reserved only then, so it is
/// bounded by the certified snapshot's size and by `snapshot_bytes_max`.
#[derive(Clone, Debug)]
pub struct SnapshotAssembler {
    seq: SeqNo,
    root: Digest,
    snapshot_bytes_max: usize,
    /// Set by the first chunk that verifies.
    chunk_count: Option<u32>,
    /// Which chunks are held, `chunk_count` entries.
    received: Vec<bool>,
    /// How many entries of `received` are true.
    received_count: u32,
    /// Every chunk but the last, at its offset.
    full_chunks: Vec<u8>,
    /// The last chunk, once received.
    last_chunk: Option<Vec<u8>>,
    /// Peers that served a chunk proving them faulty.
    bad_peers: BTreeSet<ReplicaId>,
}

impl SnapshotAssembler {
    /// A transfer of the snapshot of the checkpoint at `seq`, whose state
    /// digest `root` is certified by `2f + 1` signed checkpoints, refusing
    /// snapshots longer than `snapshot_bytes_max` bytes.
    #[must_use]
    pub fn new(root: Digest, seq: SeqNo, snapshot_bytes_max: usize) -> Self {
        Self {
            seq,
            root,
            snapshot_bytes_max,
            chunk_count: None,
            received: Vec::new(),
            received_count: 0,
            full_chunks: Vec::new(),
            last_chunk: None,
            bad_peers: BTreeSet::new(),
        }
    }

    /// The checkpoint whose snapshot is transferred.
    #[must_use]
    pub fn seq(&self) -> SeqNo {
        self.seq
    }

    /// The certified root.
    #[must_use]
    pub fn root(&self) -> Digest {
        self.root
    }

    /// The chunk count, once a chunk verified.
    #[must_use]
    pub fn chunk_count(&self) -> Option<u32> {
        self.chunk_count
    }

    /// How many distinct chunks are held.
    #[must_use]
    pub fn received_chunks(&self) -> u32 {
        self.received_count
    }

    /// Whether every chunk is held.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.chunk_count == Some(self.received_count)
    }

    /// The lowest chunk index not held yet, to ask for next: 0 before any
    /// chunk verified (which also teaches the chunk count), `None` when
    /// complete.
    #[must_use]
    pub fn next_missing(&self) -> Option<u32> {
        self.missing().next()
    }

    /// Every chunk index not held yet, in increasing order (for fetching
    /// several chunks at once: `missing().take(k)`); only 0 before any chunk
    /// verified.
    pub fn missing(&self) -> impl Iterator<Item = u32> + '_ {
        let unknown = self.chunk_count.is_none().then_some(0);
        let known = self
            .received
            .iter()
            .zip(0u32..)
            .filter(|(held, _)| !**held)
            .map(|(_, index)| index);
        unknown.into_iter().chain(known)
    }

    /// Takes the fields of a `FetchResponse::SnapshotChunk` received from
    /// replica `from` and stores the chunk if it verifies against the
    /// certified root. A chunk already held is ignored. A chunk that proves
    /// `from` faulty ([`ChunkError::is_peer_fault`]) adds it to
    /// [`Self::bad_peers`]. Never panics, whatever the peer sent.
    ///
    /// # Errors
    /// [`ChunkError::WrongSeq`] for a chunk of another checkpoint,
    /// [`ChunkError::CountMismatch`] for a count other than the verified
    /// one, [`ChunkError::TooLarge`] if the certified snapshot exceeds
    /// `snapshot_bytes_max` (the transfer cannot complete: give up), and the
    /// errors of [`verify_chunk`].
    pub fn accept(
        &mut self,
        from: ReplicaId,
        seq: SeqNo,
        index: u32,
        chunk_count: u32,
        data: &[u8],
        proof: &[Digest],
    ) -> Result<Accepted, ChunkError> {
        let result = self.accept_inner(seq, index, chunk_count, data, proof);
        if let Err(error) = &result {
            if error.is_peer_fault() {
                self.bad_peers.insert(from);
            }
        }
        result
    }

    fn accept_inner(
        &mut self,
        seq: SeqNo,
        index: u32,
        count: u32,
        data: &[u8],
        proof: &[Digest],
    ) -> Result<Accepted, ChunkError> {
        if seq != self.seq {
            return Err(ChunkError::WrongSeq {
                expected: self.seq,
                got: seq,
            });
        }
        if let Some(expected) = self.chunk_count {
            if count != expected {
                return Err(ChunkError::CountMismatch {
                    expected,
                    got: count,
                });
            }
            if self.is_held(index) {
                return Ok(Accepted::Duplicate);
            }
        }
        verify_chunk(&self.root, index, count, data, proof)?;
        // Verified: the count, the index and the data are the certified ones.
        let full_bytes = usize::try_from(count - 1)
            .ok()
            .and_then(|full| full.checked_mul(SNAPSHOT_CHUNK_BYTES));
        let is_last = index + 1 == count;
        let bytes_min = u64::from(count - 1) * SNAPSHOT_CHUNK_BYTES as u64
            + if is_last {
                data.len() as u64
            } else {
                u64::from(count > 1)
            };
        let full_bytes = match full_bytes {
            Some(full) if bytes_min <= self.snapshot_bytes_max as u64 => full,
            _ => {
                return Err(ChunkError::TooLarge {
                    bytes_min,
                    bytes_max: self.snapshot_bytes_max,
                })
            }
        };
        if self.chunk_count.is_none() {
            self.chunk_count = Some(count);
            self.received = vec![false; usize::try_from(count).unwrap_or(0)];
            self.full_chunks = vec![0; full_bytes];
        }
        if is_last {
            self.last_chunk = Some(data.to_vec());
        } else {
            let start = usize::try_from(index)
                .ok()
                .and_then(|i| i.checked_mul(SNAPSHOT_CHUNK_BYTES));
            let slot = start.and_then(|start| {
                self.full_chunks
                    .get_mut(start..start.saturating_add(SNAPSHOT_CHUNK_BYTES))
            });
            // Always some: the index is below the count and the size checked.
            let Some(slot) = slot.filter(|slot| slot.len() == data.len()) else {
                return Err(ChunkError::IndexOutOfRange { index, count });
            };
            slot.copy_from_slice(data);
        }
        if let Some(held) = usize::try_from(index)
            .ok()
            .and_then(|i| self.received.get_mut(i))
        {
            *held = true;
        }
        self.received_count += 1;
        Ok(if self.is_complete() {
            Accepted::Complete
        } else {
            Accepted::Stored
        })
    }

    fn is_held(&self, index: u32) -> bool {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.received.get(i))
            .copied()
            .unwrap_or(false)
    }

    /// The peers that served a chunk proving them faulty, to be asked no
    /// more for this transfer.
    #[must_use]
    pub fn bad_peers(&self) -> &BTreeSet<ReplicaId> {
        &self.bad_peers
    }

    /// Which peer to ask on the `attempt`-th request: the
    /// `attempt mod k`-th of the `k` `candidates` not in
    /// [`Self::bad_peers`] (in the order given), so that successive attempts
    /// rotate among the peers not known to be faulty. `None` if every
    /// candidate is bad. Deterministic: no randomness, no clock. A caller
    /// can spread requests for different chunks by passing, for example,
    /// `chunk index + retries` as `attempt`.
    #[must_use]
    pub fn pick_peer(&self, candidates: &[ReplicaId], attempt: u64) -> Option<ReplicaId> {
        let good = candidates
            .iter()
            .filter(|peer| !self.bad_peers.contains(peer));
        let k = good.clone().count();
        if k == 0 {
            return None;
        }
        let skip = usize::try_from(attempt % k as u64).unwrap_or(0);
        good.copied().nth(skip)
    }

    /// The assembled snapshot, after checking its root once more over all
    /// its bytes.
    ///
    /// # Errors
    /// [`ChunkError::Incomplete`] if chunks are missing,
    /// [`ChunkError::TooLarge`] or [`ChunkError::RootMismatch`] if the
    /// assembled bytes are not the certified snapshot (a broken invariant:
    /// every chunk verified).
    pub fn finish(self) -> Result<Vec<u8>, ChunkError> {
        let (Some(count), Some(last)) = (self.chunk_count, self.last_chunk) else {
            return Err(ChunkError::Incomplete {
                missing: self
                    .chunk_count
                    .map_or(1, |count| count - self.received_count),
            });
        };
        if self.received_count != count {
            return Err(ChunkError::Incomplete {
                missing: count - self.received_count,
            });
        }
        let mut snapshot = self.full_chunks;
        snapshot.extend_from_slice(&last);
        if snapshot.len() > self.snapshot_bytes_max {
            return Err(ChunkError::TooLarge {
                bytes_min: snapshot.len() as u64,
                bytes_max: self.snapshot_bytes_max,
            });
        }
        if snapshot_root(&snapshot) != self.root {
            return Err(ChunkError::RootMismatch);
        }
        Ok(snapshot)
    }
}

fn leaf_hash(index: u32, data: &[u8]) -> Digest {
    let mut hasher = blake3::Hasher::new_derive_key(LEAF_CONTEXT);
    hasher.update(&index.to_le_bytes());
    hasher.update(data);
    Digest(*hasher.finalize().as_bytes())
}

fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut hasher = blake3::Hasher::new_derive_key(NODE_CONTEXT);
    hasher.update(left.as_bytes());
    hasher.update(right.as_bytes());
    Digest(*hasher.finalize().as_bytes())
}

fn root_hash(chunk_count: u32, top: &Digest) -> Digest {
    let mut hasher = blake3::Hasher::new_derive_key(ROOT_CONTEXT);
    hasher.update(&chunk_count.to_le_bytes());
    hasher.update(top.as_bytes());
    Digest(*hasher.finalize().as_bytes())
}

/// The leaf hashes of every chunk (one empty chunk for the empty snapshot).
fn leaf_hashes(snapshot: &[u8]) -> Vec<Digest> {
    if snapshot.is_empty() {
        return vec![leaf_hash(0, &[])];
    }
    snapshot
        .chunks(SNAPSHOT_CHUNK_BYTES)
        .zip(0u32..)
        .map(|(data, index)| leaf_hash(index, data))
        .collect()
}

fn leaf_count(leaves: &[Digest]) -> u32 {
    u32::try_from(leaves.len()).unwrap_or(u32::MAX)
}

/// The next level up: adjacent pairs hashed, an odd last node promoted.
fn parent_level(level: &[Digest]) -> Vec<Digest> {
    let mut parent = Vec::with_capacity(level.len().div_ceil(2));
    let mut pairs = level.chunks_exact(2);
    for pair in &mut pairs {
        if let [left, right] = pair {
            parent.push(node_hash(left, right));
        }
    }
    parent.extend_from_slice(pairs.remainder());
    parent
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// RFC 6962's recursive definition: the left subtree holds the largest
    /// power of two of leaves strictly below the count.
    fn rfc6962_top(leaves: &[Digest]) -> Digest {
        match leaves {
            [] => Digest::ZERO,
            [leaf] => *leaf,
            _ => {
                let mut k = 1;
                while k * 2 < leaves.len() {
                    k *= 2;
                }
                let (left, right) = leaves.split_at(k);
                node_hash(&rfc6962_top(left), &rfc6962_top(right))
            }
        }
    }

    fn fake_leaves(n: u32) -> Vec<Digest> {
        (0..n).map(|i| leaf_hash(i, b"x")).collect()
    }

    #[test]
    fn level_promotion_is_the_rfc6962_shape() {
        for n in 1..=70 {
            let mut level = fake_leaves(n);
            let expected = rfc6962_top(&level);
            while level.len() > 1 {
                level = parent_level(&level);
            }
            assert_eq!(level, vec![expected], "n = {n}");
        }
    }

    #[test]
    fn proof_len_matches_the_tree() {
        for n in 1..=70u32 {
            let leaves = fake_leaves(n);
            let mut levels = vec![leaves];
            while levels.last().unwrap().len() > 1 {
                let parent = parent_level(levels.last().unwrap());
                levels.push(parent);
            }
            let tree = SnapshotTree {
                levels,
                root: Digest::ZERO,
            };
            for i in 0..n {
                assert_eq!(tree.proof(i).unwrap().len(), proof_len(i, n), "{i} of {n}");
            }
            assert!(proof_len(0, n) <= 7);
        }
        assert_eq!(proof_len(0, u32::MAX), 32);
        // The last leaf of 2^32 - 1 is promoted once.
        assert_eq!(proof_len(u32::MAX - 1, u32::MAX), 31);
    }

    #[test]
    fn empty_snapshot_is_one_empty_chunk() {
        assert_eq!(snapshot_root(&[]), root_hash(1, &leaf_hash(0, &[])));
        assert_eq!(chunk(&[], 0), Some(&[][..]));
        assert_eq!(chunk(&[], 1), None);
    }

    #[test]
    fn contexts_differ() {
        let contexts = [LEAF_CONTEXT, NODE_CONTEXT, ROOT_CONTEXT];
        let set: BTreeSet<&str> = contexts.into_iter().collect();
        assert_eq!(set.len(), 3);
        // A single leaf's root is not its leaf hash, nor a node hash.
        let leaf = leaf_hash(0, b"a");
        assert_ne!(snapshot_root(b"a"), leaf);
    }
}
