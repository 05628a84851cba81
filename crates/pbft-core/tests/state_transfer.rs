//! State transfer (PBFT TOCS 2002 6.2, PROTOCOL 25) in the simulator: a
//! replica that was down for many checkpoints fetches a multi-chunk
//! snapshot, checks every chunk against the certified Merkle root, detects
//! a Byzantine peer serving corrupted chunks and asks another.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use pbft_core::byzantine::{pass, Action, Context, Strategy};
use pbft_core::sim::{Sim, SimConfig};
use pbft_core::{Output, Time};
use pbft_types::{FetchResponse, Message, ReplicaId, SeqNo};
use rand::RngCore;

/// Serves snapshot chunks with one byte flipped; honest otherwise.
struct CorruptChunks;

impl Strategy for CorruptChunks {
    fn name(&self) -> &'static str {
        "corrupt_chunks"
    }
    fn outgoing(&mut self, _: &Context<'_>, output: Output, _: &mut dyn RngCore) -> Vec<Action> {
        match output {
            Output::Send {
                to,
                message:
                    Message::FetchResponse(FetchResponse::SnapshotChunk {
                        seq,
                        chunk,
                        chunk_count,
                        mut data,
                        proof,
                    }),
            } => {
                if let Some(b) = data.first_mut() {
                    *b ^= 0x5a;
                }
                vec![Action::Emit(Output::Send {
                    to,
                    message: Message::FetchResponse(FetchResponse::SnapshotChunk {
                        seq,
                        chunk,
                        chunk_count,
                        data,
                        proof,
                    }),
                })]
            }
            other => pass(other),
        }
    }
}

/// Four replicas, large values (80 values of 12 KiB: the snapshot spans
/// several chunks of `pbft_core::chunks::SNAPSHOT_CHUNK_BYTES`),
/// short checkpoint interval; replica 3 is down from the start and comes
/// back once the others have garbage-collected far past it.
fn config(seed: u64) -> SimConfig {
    let mut config = SimConfig::new(seed, 4);
    config.clients = 2;
    config.requests_per_client = 40;
    config.value_bytes = 12 * 1024;
    config.params.batch_requests_max = 2;
    config.params.checkpoint_interval_seqs = 2;
    config.params.log_window_seqs = 4;
    config.params.pipeline_batches_max = 2;
    config.params.retransmit_interval_us = 20_000;
    config.params.view_change_timeout_us = 400_000;
    config.network.delay_us_max = 2_000;
    config.network.drop_ppm = 10_000;
    config.persist_delay_us_max = 300;
    config.crashes = vec![(ReplicaId(3), Time(0))];
    config.restarts = vec![(ReplicaId(3), Time(60_000 + seed * 1_000))];
    config
}

fn caught_up(sim: &Sim) -> (SeqNo, SeqNo) {
    let laggard = sim.replica(ReplicaId(3)).unwrap();
    (laggard.low_watermark(), laggard.last_executed())
}

#[test]
fn a_replica_down_for_many_checkpoints_catches_up_by_chunked_state_transfer() {
    for seed in 0..20 {
        let mut sim = Sim::new(config(seed)).unwrap();
        let report = sim
            .run_and_check(true)
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        let (low, executed) = caught_up(&sim);
        // It started from nothing and the others garbage-collected: only a
        // snapshot could bring it to a stable checkpoint this far (the run
        // ends when the clients are done, possibly while it still fetches
        // the batches after the snapshot).
        assert!(
            low >= SeqNo(8),
            "seed {seed}: low {low}, executed {executed}"
        );
        assert!(
            executed >= low,
            "seed {seed}: low {low}, executed {executed}"
        );
        assert_eq!(report.restarts, 1);
    }
}

/// Replica 1 is Byzantine and corrupts every chunk it serves: the laggard
/// rejects them (`invalid_proof`), marks it, and completes from others.
#[test]
fn a_peer_serving_corrupted_chunks_is_detected_and_another_is_asked() {
    let mut detected = 0;
    for seed in 0..20 {
        let mut sim = Sim::new(config(seed)).unwrap();
        sim.set_adversary(ReplicaId(1), Box::new(CorruptChunks));
        let report = sim
            .run_and_check(true)
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        let (low, _) = caught_up(&sim);
        assert!(low >= SeqNo(8), "seed {seed}: low {low}");
        detected += report.rejections.get("invalid_proof").copied().unwrap_or(0);
    }
    assert!(detected > 0, "no corrupted chunk was ever served");
}
