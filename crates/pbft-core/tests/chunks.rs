//! Snapshot state transfer in verifiable chunks (PROTOCOL 25, PBFT TOCS
//! 2002 6.2): Merkle roots, proofs, their rejection, and the assembler.
#![allow(clippy::unwrap_used)]

use pbft_core::chunks::{
    chunk, chunk_count, chunk_with_proof, proof_len, snapshot_root, verify_chunk, Accepted,
    ChunkError, SnapshotAssembler, SnapshotTree, MAX_CHUNK_COUNT, SNAPSHOT_CHUNK_BYTES,
};
use pbft_types::{Digest, ReplicaId, SeqNo};
use proptest::prelude::*;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

const C: usize = SNAPSHOT_CHUNK_BYTES;
const SEQ: SeqNo = SeqNo(128);

fn snapshot(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

fn sizes() -> [usize; 6] {
    [0, 1, C - 1, C, C + 1, 5 * C + 7]
}

/// Every chunk with its proof, from the cached tree (checked equal to the
/// one-shot function).
fn all_chunks(snap: &[u8]) -> Vec<(Vec<u8>, Vec<Digest>)> {
    let tree = SnapshotTree::new(snap);
    (0..chunk_count(snap.len()))
        .map(|i| {
            let served = tree.chunk_with_proof(snap, i).unwrap();
            assert_eq!(Some(&served), chunk_with_proof(snap, i).as_ref());
            served
        })
        .collect()
}

#[test]
fn chunk_counts() {
    assert_eq!(chunk_count(0), 1);
    assert_eq!(chunk_count(1), 1);
    assert_eq!(chunk_count(C - 1), 1);
    assert_eq!(chunk_count(C), 1);
    assert_eq!(chunk_count(C + 1), 2);
    assert_eq!(chunk_count(5 * C + 7), 6);
    assert_eq!(chunk_count(6 * C), 6);
}

#[test]
fn round_trip_every_size() {
    for len in sizes() {
        let snap = snapshot(len, len as u64);
        let root = snapshot_root(&snap);
        let tree = SnapshotTree::new(&snap);
        assert_eq!(tree.root(), root);
        let count = chunk_count(len);
        assert_eq!(tree.chunk_count(), count);
        let chunks = all_chunks(&snap);
        let mut rebuilt = Vec::new();
        for (i, (data, proof)) in (0u32..).zip(&chunks) {
            assert_eq!(proof.len(), proof_len(i, count));
            verify_chunk(&root, i, count, data, proof).unwrap();
            rebuilt.extend_from_slice(data);
        }
        assert_eq!(rebuilt, snap);
        assert!(chunk_with_proof(&snap, count).is_none());
        assert!(tree.proof(count).is_none());
        assert!(chunk(&snap, count).is_none());

        let mut asm = SnapshotAssembler::new(root, SEQ, len);
        for (i, (data, proof)) in (0u32..).zip(&chunks) {
            assert_eq!(asm.next_missing(), Some(i));
            let done = asm
                .accept(ReplicaId(1), SEQ, i, count, data, proof)
                .unwrap();
            let expected = if i + 1 == count {
                Accepted::Complete
            } else {
                Accepted::Stored
            };
            assert_eq!(done, expected);
        }
        assert!(asm.is_complete());
        assert_eq!(asm.next_missing(), None);
        assert_eq!(asm.finish().unwrap(), snap);
    }
}

#[test]
fn roots_differ_between_sizes_and_contents() {
    let roots: std::collections::BTreeSet<Digest> = sizes()
        .into_iter()
        .map(|len| snapshot_root(&snapshot(len, 9)))
        .chain([snapshot_root(&snapshot(C, 10)), snapshot_root(&vec![0; C])])
        .collect();
    assert_eq!(roots.len(), sizes().len() + 2);
    // Zero padding does not verify as the shorter snapshot.
    assert_ne!(snapshot_root(&[]), snapshot_root(&[0]));
    assert_ne!(snapshot_root(&[1]), snapshot_root(&[1, 0]));
}

#[test]
fn flipped_byte_in_data_or_proof_is_rejected() {
    let snap = snapshot(5 * C + 7, 1);
    let root = snapshot_root(&snap);
    let count = chunk_count(snap.len());
    for (i, (data, proof)) in (0u32..).zip(all_chunks(&snap)) {
        for at in [0, data.len() / 2, data.len() - 1] {
            let mut bad = data.clone();
            bad[at] ^= 0x01;
            assert_eq!(
                verify_chunk(&root, i, count, &bad, &proof),
                Err(ChunkError::RootMismatch)
            );
        }
        for level in 0..proof.len() {
            let mut bad = proof.clone();
            bad[level].0[31] ^= 0x80;
            assert_eq!(
                verify_chunk(&root, i, count, &data, &bad),
                Err(ChunkError::RootMismatch)
            );
        }
        let mut bad_root = root;
        bad_root.0[0] ^= 1;
        assert_eq!(
            verify_chunk(&bad_root, i, count, &data, &proof),
            Err(ChunkError::RootMismatch)
        );
    }
}

#[test]
fn wrong_index_is_rejected() {
    let snap = snapshot(5 * C + 7, 2);
    let root = snapshot_root(&snap);
    let count = chunk_count(snap.len());
    let chunks = all_chunks(&snap);
    let (data, proof) = &chunks[1];
    // Same data and proof, claimed at another full-size index.
    for other in [0, 2, 3] {
        assert_eq!(
            verify_chunk(&root, other, count, data, proof),
            Err(ChunkError::RootMismatch),
            "index {other}"
        );
    }
    // At indices 4 and 5 of 6 the path has a promoted level: the proof is
    // shorter.
    for other in [4, 5] {
        assert!(matches!(
            verify_chunk(&root, other, count, data, proof),
            Err(ChunkError::ProofLength {
                expected: 2,
                got: 3
            })
        ));
    }
    // With the proof of the chunk actually at that index.
    for other in [0, 2, 3, 4] {
        assert_eq!(
            verify_chunk(&root, other, count, data, &chunks[other as usize].1),
            Err(ChunkError::RootMismatch),
            "index {other}"
        );
    }
    assert_eq!(
        verify_chunk(&root, count, count, data, proof),
        Err(ChunkError::IndexOutOfRange {
            index: count,
            count
        })
    );
    assert_eq!(
        verify_chunk(&root, u32::MAX, count, data, proof),
        Err(ChunkError::IndexOutOfRange {
            index: u32::MAX,
            count
        })
    );
}

#[test]
fn identical_chunks_at_different_indices_do_not_swap() {
    // The leaf binds the index: with identical chunks the proofs are
    // identical below the root, yet a chunk cannot move.
    let snap = vec![7u8; 4 * C];
    let root = snapshot_root(&snap);
    let chunks = all_chunks(&snap);
    assert_eq!(chunks[0].0, chunks[1].0);
    assert_eq!(
        verify_chunk(&root, 1, 4, &chunks[0].0, &chunks[0].1),
        Err(ChunkError::RootMismatch)
    );
}

#[test]
fn swapped_chunk_is_rejected() {
    let snap = snapshot(5 * C + 7, 3);
    let root = snapshot_root(&snap);
    let count = chunk_count(snap.len());
    let chunks = all_chunks(&snap);
    // Chunk 2's bytes at index 1, with either proof.
    assert_eq!(
        verify_chunk(&root, 1, count, &chunks[2].0, &chunks[1].1),
        Err(ChunkError::RootMismatch)
    );
    assert_eq!(
        verify_chunk(&root, 1, count, &chunks[2].0, &chunks[2].1),
        Err(ChunkError::RootMismatch)
    );
    // A snapshot with two chunks swapped has another root.
    let mut swapped = snap.clone();
    swapped[C..2 * C].copy_from_slice(&snap[2 * C..3 * C]);
    swapped[2 * C..3 * C].copy_from_slice(&snap[C..2 * C]);
    assert_ne!(snapshot_root(&swapped), root);
}

#[test]
fn truncated_snapshot_is_rejected() {
    let snap = snapshot(5 * C + 7, 4);
    let root = snapshot_root(&snap);
    let count = chunk_count(snap.len());
    let chunks = all_chunks(&snap);

    // Truncated at a chunk boundary: its chunks, proofs and count do not
    // verify against the full snapshot's root.
    let short = &snap[..3 * C];
    assert_ne!(snapshot_root(short), root);
    for (i, (data, proof)) in (0u32..).zip(all_chunks(short)) {
        assert_eq!(
            verify_chunk(&root, i, 3, &data, &proof),
            Err(ChunkError::RootMismatch)
        );
    }
    // The genuine first chunk claiming a count of 1 (a one-chunk snapshot).
    assert_eq!(
        verify_chunk(&root, 0, 1, &chunks[0].0, &[]),
        Err(ChunkError::RootMismatch)
    );
    // The genuine chunk 4 claimed as the last of 5, with the proof of a
    // 5-chunk tree built from the genuine prefix.
    let prefix = &snap[..5 * C];
    let (data4, proof4) = chunk_with_proof(prefix, 4).unwrap();
    assert_eq!(data4, chunks[4].0);
    assert_eq!(
        verify_chunk(&root, 4, 5, &data4, &proof4),
        Err(ChunkError::RootMismatch)
    );
    // The last chunk shortened by one byte, or extended by one.
    let (last, last_proof) = &chunks[5];
    assert_eq!(
        verify_chunk(&root, 5, count, &last[..last.len() - 1], last_proof),
        Err(ChunkError::RootMismatch)
    );
    let mut longer = last.clone();
    longer.push(0);
    assert_eq!(
        verify_chunk(&root, 5, count, &longer, last_proof),
        Err(ChunkError::RootMismatch)
    );
    // Truncating a multiple of the chunk size to one chunk.
    let two = snapshot(2 * C, 5);
    let two_root = snapshot_root(&two);
    assert_eq!(
        verify_chunk(&two_root, 0, 1, &two[..C], &[]),
        Err(ChunkError::RootMismatch)
    );
}

#[test]
fn chunk_from_another_snapshot_is_rejected() {
    let a = snapshot(5 * C + 7, 6);
    let b = snapshot(5 * C + 7, 7);
    let root_a = snapshot_root(&a);
    let count = chunk_count(a.len());
    for (i, (data, proof)) in (0u32..).zip(all_chunks(&b)) {
        assert_eq!(
            verify_chunk(&root_a, i, count, &data, &proof),
            Err(ChunkError::RootMismatch)
        );
    }
    // C differs from A in chunk 3 only: chunk 3 does not verify against A's
    // root, nor do the others with C's proofs (every path has a sibling
    // covering chunk 3).
    let mut c = a.clone();
    c[3 * C + 5] ^= 0xff;
    for (i, (data, proof)) in (0u32..).zip(all_chunks(&c)) {
        assert_eq!(
            verify_chunk(&root_a, i, count, &data, &proof),
            Err(ChunkError::RootMismatch),
            "chunk {i}"
        );
    }
}

#[test]
fn wrong_sizes_and_proof_lengths_are_rejected() {
    let snap = snapshot(5 * C + 7, 8);
    let root = snapshot_root(&snap);
    let count = chunk_count(snap.len());
    let chunks = all_chunks(&snap);
    let (data, proof) = &chunks[1];
    assert_eq!(
        verify_chunk(&root, 1, count, &data[..C - 1], proof),
        Err(ChunkError::WrongChunkSize {
            index: 1,
            len: C - 1,
            min: C,
            max: C
        })
    );
    assert!(matches!(
        verify_chunk(&root, 5, count, &[], &chunks[5].1),
        Err(ChunkError::WrongChunkSize {
            index: 5,
            len: 0,
            ..
        })
    ));
    assert!(matches!(
        verify_chunk(&root, 5, count, &vec![0; C + 1], &chunks[5].1),
        Err(ChunkError::WrongChunkSize { index: 5, .. })
    ));
    assert!(matches!(
        verify_chunk(&root, 0, 1, &vec![0; C + 1], &[]),
        Err(ChunkError::WrongChunkSize { index: 0, .. })
    ));
    let mut longer = proof.clone();
    longer.push(Digest::ZERO);
    assert_eq!(
        verify_chunk(&root, 1, count, data, &longer),
        Err(ChunkError::ProofLength {
            expected: proof.len(),
            got: proof.len() + 1
        })
    );
    assert_eq!(
        verify_chunk(&root, 1, count, data, &proof[1..]),
        Err(ChunkError::ProofLength {
            expected: proof.len(),
            got: proof.len() - 1
        })
    );
}

#[test]
fn chunk_count_bound() {
    let root = snapshot_root(&[]);
    assert_eq!(
        verify_chunk(&root, 0, 0, &[], &[]),
        Err(ChunkError::ChunkCountOutOfBounds {
            count: 0,
            max: MAX_CHUNK_COUNT
        })
    );
    assert_eq!(
        verify_chunk(&root, 0, MAX_CHUNK_COUNT + 1, &vec![0; C], &[]),
        Err(ChunkError::ChunkCountOutOfBounds {
            count: MAX_CHUNK_COUNT + 1,
            max: MAX_CHUNK_COUNT
        })
    );
    assert!(matches!(
        verify_chunk(&root, 0, u32::MAX, &[], &[Digest::ZERO; 64]),
        Err(ChunkError::ChunkCountOutOfBounds { .. })
    ));
    // Within the bound, a huge claimed count only costs a short proof check.
    assert!(matches!(
        verify_chunk(&root, 0, MAX_CHUNK_COUNT, &vec![0; C], &[]),
        Err(ChunkError::ProofLength {
            expected: 20,
            got: 0
        })
    ));
}

#[test]
fn assembler_out_of_order_with_duplicates() {
    let snap = snapshot(5 * C + 7, 11);
    let root = snapshot_root(&snap);
    let count = chunk_count(snap.len());
    let chunks = all_chunks(&snap);
    let mut asm = SnapshotAssembler::new(root, SEQ, 1 << 30);
    assert_eq!(asm.chunk_count(), None);
    assert_eq!(asm.next_missing(), Some(0));
    assert_eq!(asm.missing().collect::<Vec<_>>(), vec![0]);
    let order = [4u32, 1, 5, 4, 0, 1, 3];
    let mut seen = std::collections::BTreeSet::new();
    for (step, i) in order.into_iter().enumerate() {
        let (data, proof) = &chunks[i as usize];
        let peer = ReplicaId(step as u32 % 3 + 1);
        let result = asm.accept(peer, SEQ, i, count, data, proof).unwrap();
        if seen.insert(i) {
            assert_eq!(result, Accepted::Stored);
        } else {
            assert_eq!(result, Accepted::Duplicate);
        }
        assert_eq!(asm.received_chunks() as usize, seen.len());
    }
    assert_eq!(asm.chunk_count(), Some(count));
    assert_eq!(asm.next_missing(), Some(2));
    assert_eq!(asm.missing().collect::<Vec<_>>(), vec![2]);
    assert!(!asm.is_complete());
    assert!(asm.bad_peers().is_empty());
    // A duplicate is ignored even if garbled (it is not verified again).
    let mut garbled = chunks[3].0.clone();
    garbled[0] ^= 1;
    assert_eq!(
        asm.accept(ReplicaId(2), SEQ, 3, count, &garbled, &chunks[3].1),
        Ok(Accepted::Duplicate)
    );
    assert_eq!(
        asm.clone().finish(),
        Err(ChunkError::Incomplete { missing: 1 })
    );
    let (data, proof) = &chunks[2];
    assert_eq!(
        asm.accept(ReplicaId(1), SEQ, 2, count, data, proof),
        Ok(Accepted::Complete)
    );
    assert_eq!(
        asm.accept(ReplicaId(1), SEQ, 2, count, data, proof),
        Ok(Accepted::Duplicate)
    );
    assert!(asm.is_complete());
    assert_eq!(asm.finish().unwrap(), snap);
}

#[test]
fn assembler_refuses_too_large_snapshots() {
    let snap = snapshot(5 * C + 7, 12);
    let root = snapshot_root(&snap);
    let count = chunk_count(snap.len());
    let chunks = all_chunks(&snap);

    // The count alone implies more than the bound.
    let mut asm = SnapshotAssembler::new(root, SEQ, 3 * C);
    let (data, proof) = &chunks[0];
    let error = asm
        .accept(ReplicaId(1), SEQ, 0, count, data, proof)
        .unwrap_err();
    assert_eq!(
        error,
        ChunkError::TooLarge {
            bytes_min: 5 * C as u64 + 1,
            bytes_max: 3 * C
        }
    );
    assert!(!error.is_peer_fault());
    assert!(asm.bad_peers().is_empty());
    assert_eq!(asm.chunk_count(), None);

    // The count fits, the last chunk's length does not.
    let mut asm = SnapshotAssembler::new(root, SEQ, 5 * C + 6);
    for i in 0..5 {
        let (data, proof) = &chunks[i as usize];
        assert_eq!(
            asm.accept(ReplicaId(1), SEQ, i, count, data, proof),
            Ok(Accepted::Stored)
        );
    }
    let (data, proof) = &chunks[5];
    assert_eq!(
        asm.accept(ReplicaId(1), SEQ, 5, count, data, proof),
        Err(ChunkError::TooLarge {
            bytes_min: 5 * C as u64 + 7,
            bytes_max: 5 * C + 6
        })
    );
    assert!(!asm.is_complete());
    assert!(asm.bad_peers().is_empty());

    // Exactly at the bound is accepted.
    let mut asm = SnapshotAssembler::new(root, SEQ, snap.len());
    for (i, (data, proof)) in (0u32..).zip(&chunks) {
        asm.accept(ReplicaId(1), SEQ, i, count, data, proof)
            .unwrap();
    }
    assert_eq!(asm.finish().unwrap(), snap);

    // A forged huge count (not verifiable) is a peer fault.
    let mut asm = SnapshotAssembler::new(root, SEQ, 3 * C);
    let error = asm
        .accept(ReplicaId(3), SEQ, 0, MAX_CHUNK_COUNT, &chunks[0].0, &[])
        .unwrap_err();
    assert!(error.is_peer_fault());
    assert!(asm.bad_peers().contains(&ReplicaId(3)));
}

#[test]
fn assembler_records_bad_peers_and_rotates() {
    let snap = snapshot(3 * C + 1, 13);
    let root = snapshot_root(&snap);
    let count = chunk_count(snap.len());
    let chunks = all_chunks(&snap);
    let other = snapshot(3 * C + 1, 14);
    let other_chunks = all_chunks(&other);
    let mut asm = SnapshotAssembler::new(root, SEQ, 1 << 20);
    let candidates = [ReplicaId(1), ReplicaId(2), ReplicaId(3)];
    let picks: Vec<_> = (0..6)
        .map(|a| asm.pick_peer(&candidates, a).unwrap())
        .collect();
    assert_eq!(
        picks,
        [1, 2, 3, 1, 2, 3].map(ReplicaId).to_vec(),
        "rotation over all candidates"
    );

    // Replica 2 serves a chunk of another snapshot.
    let (data, proof) = &other_chunks[0];
    assert_eq!(
        asm.accept(ReplicaId(2), SEQ, 0, count, data, proof),
        Err(ChunkError::RootMismatch)
    );
    assert_eq!(
        asm.bad_peers().iter().copied().collect::<Vec<_>>(),
        [ReplicaId(2)]
    );
    assert_eq!(asm.chunk_count(), None, "nothing learnt from a bad chunk");
    let picks: Vec<_> = (0..4)
        .map(|a| asm.pick_peer(&candidates, a).unwrap())
        .collect();
    assert_eq!(picks, [1, 3, 1, 3].map(ReplicaId).to_vec());

    // A stale chunk (another checkpoint) is not a fault.
    let (data, proof) = &chunks[0];
    let error = asm
        .accept(ReplicaId(1), SeqNo(64), 0, count, data, proof)
        .unwrap_err();
    assert_eq!(
        error,
        ChunkError::WrongSeq {
            expected: SEQ,
            got: SeqNo(64)
        }
    );
    assert_eq!(asm.bad_peers().len(), 1);

    // Replica 1 serves a good chunk; replica 3 then claims another count.
    assert_eq!(
        asm.accept(ReplicaId(1), SEQ, 0, count, data, proof),
        Ok(Accepted::Stored)
    );
    let (data, proof) = &chunks[1];
    assert_eq!(
        asm.accept(ReplicaId(3), SEQ, 1, count + 1, data, proof),
        Err(ChunkError::CountMismatch {
            expected: count,
            got: count + 1
        })
    );
    // Replica 3 serves a flipped proof too.
    let mut bad_proof = proof.clone();
    bad_proof[0].0[0] ^= 1;
    assert_eq!(
        asm.accept(ReplicaId(3), SEQ, 1, count, data, &bad_proof),
        Err(ChunkError::RootMismatch)
    );
    assert_eq!(
        asm.bad_peers().iter().copied().collect::<Vec<_>>(),
        [ReplicaId(2), ReplicaId(3)]
    );
    assert_eq!(asm.pick_peer(&candidates, 0), Some(ReplicaId(1)));
    assert_eq!(asm.pick_peer(&candidates, 7), Some(ReplicaId(1)));
    assert_eq!(asm.pick_peer(&[ReplicaId(2), ReplicaId(3)], 0), None);
    assert_eq!(asm.pick_peer(&[], 0), None);
    assert_eq!(asm.next_missing(), Some(1));

    // An index out of range from replica 4.
    assert_eq!(
        asm.accept(ReplicaId(4), SEQ, count, count, data, proof),
        Err(ChunkError::IndexOutOfRange {
            index: count,
            count
        })
    );
    assert!(asm.bad_peers().contains(&ReplicaId(4)));

    for i in 1..count {
        let (data, proof) = &chunks[i as usize];
        asm.accept(ReplicaId(1), SEQ, i, count, data, proof)
            .unwrap();
    }
    assert_eq!(asm.finish().unwrap(), snap);
}

#[test]
fn finish_before_any_chunk_is_incomplete() {
    let asm = SnapshotAssembler::new(snapshot_root(&[]), SEQ, 0);
    assert_eq!(asm.finish(), Err(ChunkError::Incomplete { missing: 1 }));
    // The empty snapshot fits a zero bound.
    let mut asm = SnapshotAssembler::new(snapshot_root(&[]), SEQ, 0);
    let (data, proof) = chunk_with_proof(&[], 0).unwrap();
    assert_eq!(
        asm.accept(ReplicaId(0), SEQ, 0, 1, &data, &proof),
        Ok(Accepted::Complete)
    );
    assert_eq!(asm.finish().unwrap(), Vec::<u8>::new());
}

/// One single change to a served chunk (index, count, data or proof).
#[derive(Clone, Debug)]
enum Mutation {
    FlipData { at: usize, bit: u8 },
    AppendData { byte: u8 },
    TruncateData { by: usize },
    FlipProof { level: usize, at: usize, bit: u8 },
    DropProof { level: usize },
    AddProof { at: usize },
    Index { to: u32 },
    Count { to: u32 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipData { at, bit }),
        any::<u8>().prop_map(|byte| Mutation::AppendData { byte }),
        (1usize..100).prop_map(|by| Mutation::TruncateData { by }),
        (any::<usize>(), 0usize..32, 0u8..8).prop_map(|(level, at, bit)| Mutation::FlipProof {
            level,
            at,
            bit
        }),
        any::<usize>().prop_map(|level| Mutation::DropProof { level }),
        any::<usize>().prop_map(|at| Mutation::AddProof { at }),
        (0u32..16).prop_map(|to| Mutation::Index { to }),
        (0u32..16).prop_map(|to| Mutation::Count { to }),
    ]
}

/// Applies the mutation; `None` if it would change nothing (such as
/// truncating an empty chunk, or setting the index to itself).
fn mutate(
    m: &Mutation,
    index: u32,
    count: u32,
    data: &[u8],
    proof: &[Digest],
) -> Option<(u32, u32, Vec<u8>, Vec<Digest>)> {
    let (mut index2, mut count2, mut data2, mut proof2) =
        (index, count, data.to_vec(), proof.to_vec());
    match *m {
        Mutation::FlipData { at, bit } => {
            if data2.is_empty() {
                return None;
            }
            let at = at % data2.len();
            data2[at] ^= 1 << bit;
        }
        Mutation::AppendData { byte } => data2.push(byte),
        Mutation::TruncateData { by } => {
            if data2.is_empty() {
                return None;
            }
            data2.truncate(data2.len() - by.min(data2.len()));
        }
        Mutation::FlipProof { level, at, bit } => {
            if proof2.is_empty() {
                return None;
            }
            let level = level % proof2.len();
            proof2[level].0[at] ^= 1 << bit;
        }
        Mutation::DropProof { level } => {
            if proof2.is_empty() {
                return None;
            }
            proof2.remove(level % proof2.len());
        }
        Mutation::AddProof { at } => {
            let at = at % (proof2.len() + 1);
            proof2.insert(at, Digest([0xab; 32]));
        }
        Mutation::Index { to } => {
            if to == index {
                return None;
            }
            index2 = to;
        }
        Mutation::Count { to } => {
            if to == count {
                return None;
            }
            count2 = to;
        }
    }
    Some((index2, count2, data2, proof2))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random snapshots (up to about 7 chunks, biased to chunk boundaries)
    /// round-trip through the tree, the verifier and the assembler.
    #[test]
    fn random_snapshots_round_trip(
        chunks in 0usize..7,
        delta in prop_oneof![Just(0usize), Just(1usize), 0usize..C],
        seed in any::<u64>(),
        start in any::<u32>(),
    ) {
        let len = chunks * C + delta;
        let snap = snapshot(len, seed);
        let root = snapshot_root(&snap);
        let count = chunk_count(len);
        let served = all_chunks(&snap);
        prop_assert_eq!(served.len(), count as usize);
        let mut asm = SnapshotAssembler::new(root, SEQ, len);
        // Out of order: a rotation of the indices.
        for k in 0..count {
            let i = (start % count + k) % count;
            let (data, proof) = &served[i as usize];
            prop_assert_eq!(verify_chunk(&root, i, count, data, proof), Ok(()));
            let result = asm.accept(ReplicaId(1), SEQ, i, count, data, proof);
            prop_assert!(result.is_ok());
        }
        prop_assert!(asm.is_complete());
        prop_assert_eq!(asm.finish().unwrap(), snap);
    }

    /// Any single mutation of a served chunk is rejected, and the assembler
    /// records the peer as bad (when the snapshot at that index verified).
    #[test]
    fn any_single_mutation_is_rejected(
        chunks in 0usize..6,
        delta in prop_oneof![Just(0usize), Just(1usize), 0usize..C],
        seed in any::<u64>(),
        which in any::<u32>(),
        m in mutation(),
    ) {
        let len = chunks * C + delta;
        let snap = snapshot(len, seed);
        let root = snapshot_root(&snap);
        let count = chunk_count(len);
        let index = which % count;
        let (data, proof) = chunk_with_proof(&snap, index).unwrap();
        prop_assume!(verify_chunk(&root, index, count, &data, &proof).is_ok());
        let Some((i2, c2, d2, p2)) = mutate(&m, index, count, &data, &proof) else {
            return Ok(());
        };
        let result = verify_chunk(&root, i2, c2, &d2, &p2);
        prop_assert!(result.is_err(), "{:?} accepted", m);
        prop_assert!(result.unwrap_err().is_peer_fault());
        let mut asm = SnapshotAssembler::new(root, SEQ, len);
        prop_assert!(asm.accept(ReplicaId(5), SEQ, i2, c2, &d2, &p2).is_err());
        prop_assert!(asm.bad_peers().contains(&ReplicaId(5)));
    }
}
