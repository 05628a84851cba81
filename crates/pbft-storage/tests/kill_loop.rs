//! The kill loop: a child process writes through `RocksStore`
//! (`SyncEveryWrite`) and prints every acknowledged sequence number; the
//! parent kills it with SIGKILL at random moments, reopens the store and
//! checks that everything acknowledged is there.
//!
//! `PBFT_KILL_ITERATIONS` (default 200) sets the number of kills,
//! `PBFT_KILL_SEED` the random seed.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use pbft_storage::{Op, OpenReport, RocksConfig, RocksStore, Store, VoteKind, WriteBatch};
use pbft_types::{SeqNo, View};
use rand::{rngs::StdRng, Rng, SeedableRng};

const CHILD_DIR_ENV: &str = "PBFT_STORAGE_KILL_CHILD_DIR";
/// A checkpoint (and truncation below the previous one) every this many seqs.
const CHECKPOINT_EVERY: u64 = 16;

fn view_of(seq: u64) -> u64 {
    seq / 40
}

/// What the child writes at `seq`, in one atomic batch.
fn batch_for(seq: u64) -> WriteBatch {
    let view = view_of(seq);
    let d = digest(seq);
    let mut b = WriteBatch::new()
        .with(Op::PutViewState(view_state(view, false)))
        .with(Op::PutPrePrepare(pre_prepare(
            view,
            seq,
            d,
            batch(seq, 128, 256),
        )))
        .with(Op::PutPrepare(prepare(view, seq, d)))
        .with(Op::PutCommit(commit(view, seq, d)));
    if seq % CHECKPOINT_EVERY == 0 {
        b.push(Op::PutCheckpoint(checkpoint(seq)));
        b.push(Op::PutSnapshot {
            seq: SeqNo(seq),
            snapshot: seq.to_be_bytes().repeat(512),
        });
        b.push(Op::PutStableCheckpoint(stable(seq)));
        b.push(Op::TruncateBelow(SeqNo(seq)));
    }
    b
}

#[test]
#[ignore = "the child process of kill_loop; does nothing unless spawned by it"]
fn kill_loop_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let store = RocksStore::open(&dir, RocksConfig::default()).unwrap();
    let r = store.recover().unwrap();
    let mut seq = r.pre_prepares.keys().map(|k| k.1 .0).max().unwrap_or(0) + 1;
    let mut out = std::io::stdout().lock();
    writeln!(out, "OPEN {seq}").unwrap();
    out.flush().unwrap();
    loop {
        store.write(&batch_for(seq)).unwrap();
        store.sync().unwrap();
        writeln!(out, "ACK {seq}").unwrap();
        out.flush().unwrap();
        seq += 1;
    }
}

#[test]
fn kill_loop() {
    let iterations: u32 = std::env::var("PBFT_KILL_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("PBFT_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("kill loop: {iterations} iterations, PBFT_KILL_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let (mut acked_max, mut acks_total, mut killed_before_ack, mut torn_tails) = (0u64, 0u64, 0, 0);

    for i in 0..iterations {
        let mut child = Command::new(&exe)
            .args(["kill_loop_child", "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads=1", "-q"])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("ACK ") {
                    acks.push(n.parse::<u64>().unwrap());
                }
            }
            acks
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        // Kill at a random moment: sometimes during start-up and recovery,
        // mostly while it writes.
        let wait_ms = if rng.gen_bool(0.15) {
            rng.gen_range(0..40)
        } else {
            rng.gen_range(40..250)
        };
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        let acks = reader.join().unwrap();
        let errors = err_reader.join().unwrap();
        assert!(
            status.code().is_none(),
            "iteration {i}: the child exited by itself ({status}) instead of being killed:\n{errors}"
        );
        if let Some(last) = acks.last() {
            assert!(*last > acked_max, "iteration {i}: acks went backwards");
            acked_max = *last;
            acks_total += acks.len() as u64;
        } else {
            killed_before_ack += 1;
        }

        // Reopen: must succeed and hold everything acknowledged.
        let store = RocksStore::open(dir.path(), RocksConfig::default())
            .unwrap_or_else(|e| panic!("iteration {i}: reopen failed: {e}"));
        if matches!(store.open_report(), OpenReport::TornTailDropped { .. }) {
            torn_tails += 1;
        }
        let r = store
            .recover()
            .unwrap_or_else(|e| panic!("iteration {i}: recover failed: {e}"));
        check(i, &r, acked_max);
    }
    println!(
        "kill loop: {iterations} SIGKILLs in {:.1} s, {acks_total} acknowledged writes \
         (up to seq {acked_max}), {killed_before_ack} kills before the first ack, \
         {torn_tails} reopens dropped a torn log tail",
        started.elapsed().as_secs_f64()
    );
}

/// Everything acknowledged up to `acked` is in `r`, and what is there is
/// consistent (written atomically).
fn check(i: u32, r: &pbft_storage::Recovered, acked: u64) {
    if acked == 0 {
        return;
    }
    let highest = r.pre_prepares.keys().map(|k| k.1 .0).max().unwrap_or(0);
    assert!(
        highest >= acked,
        "iteration {i}: acked {acked}, recovered only up to {highest}"
    );
    // The stable checkpoint is the last multiple of CHECKPOINT_EVERY written.
    let low = highest / CHECKPOINT_EVERY * CHECKPOINT_EVERY;
    let stable = r
        .stable_checkpoint
        .as_ref()
        .map(|c| c.value.seq.0)
        .unwrap_or(0);
    assert_eq!(stable, low, "iteration {i}: stable checkpoint");
    if low > 0 {
        assert_eq!(
            r.stable_snapshot(),
            Some(&low.to_be_bytes().repeat(512)[..])
        );
    }
    // Nothing below the stable checkpoint survives truncation.
    assert!(
        r.pre_prepares.keys().all(|k| k.1 .0 >= low),
        "iteration {i}: truncation"
    );
    for seq in low.max(1)..=highest {
        let (view, s) = (View(view_of(seq)), SeqNo(seq));
        for kind in [VoteKind::PrePrepare, VoteKind::Prepare, VoteKind::Commit] {
            assert_eq!(
                r.own_vote(kind, view, s),
                Some(digest(seq)),
                "iteration {i}: {kind:?} at seq {seq} (acked {acked})"
            );
        }
    }
    let rec = &r.pre_prepares[&(View(view_of(highest)), SeqNo(highest))];
    assert_eq!(rec.batch, batch(highest, 128, 256), "iteration {i}: batch");
    assert_eq!(
        r.view_state.as_ref().map(|v| v.view),
        Some(View(view_of(highest))),
        "iteration {i}: view state written in the same batch"
    );
}
