//! View change (PBFT 4.4, 4.5) in the simulator: crashed and restarted
//! primaries, successive view changes, lossy networks. Every run checks
//! safety (no divergent execution or checkpoint, exactly-once, persist
//! before send) and liveness (every client request completes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Instant;

use pbft_core::sim::{Sim, SimConfig, SimReport};
use pbft_core::Time;
use pbft_types::ReplicaId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seeds per scenario; `PBFT_VC_SEEDS=N` runs `N`.
fn seeds(default: u64) -> u64 {
    std::env::var("PBFT_VC_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A random cluster (as `SimConfig::random`) whose primary of view 0
/// crashes for good at a random time, and, in a third of the seeds, whose
/// primary of view 1 crashes too when `f >= 2` (or restarts when `f = 1`).
fn primary_crash_config(seed: u64) -> SimConfig {
    let mut config = SimConfig::random(seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00c0_ffee);
    let f = (config.replicas - 1) / 3;
    config.crashes = vec![(ReplicaId(0), Time(rng.gen_range(0..=20_000)))];
    config.restarts = Vec::new();
    if rng.gen_ratio(1, 3) {
        if f >= 2 {
            config
                .crashes
                .push((ReplicaId(1), Time(rng.gen_range(0..=3_000_000))));
        } else {
            config
                .restarts
                .push((ReplicaId(0), Time(rng.gen_range(200_000..=4_000_000))));
        }
    }
    config.params.view_change_timeout_us = rng.gen_range(100_000..=600_000);
    config.requests_per_client = rng.gen_range(3..=8);
    config
}

fn run(name: &str, seed: u64, config: SimConfig) -> Result<SimReport, String> {
    let summary = format!("{config:?}");
    let mut sim = Sim::new(config).map_err(|e| format!("setup: {e}"))?;
    sim.run_and_check(true).map_err(|v| {
        format!(
            "{name}: seed {seed} failed: {v}\n  reproduce: PBFT_VC_SEED={seed} cargo test -p pbft-core --test view_change -- {name}_replay --nocapture\n  config: {summary}"
        )
    })
}

fn run_many(name: &str, seeds: std::ops::Range<u64>, make: fn(u64) -> SimConfig) -> Vec<SimReport> {
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut reports = Vec::new();
    for seed in seeds.clone() {
        match run(name, seed, make(seed)) {
            Ok(r) => reports.push(r),
            Err(e) => {
                eprintln!("{e}");
                failures.push(seed);
            }
        }
    }
    let views: u64 = reports.iter().map(|r| r.highest_view).sum();
    eprintln!(
        "{name}: seeds {seeds:?}: {} failed, mean highest view {:.2}, {:?} ({:?} per seed)",
        failures.len(),
        views as f64 / reports.len().max(1) as f64,
        started.elapsed(),
        started.elapsed() / u32::try_from(seeds.end - seeds.start).unwrap_or(1).max(1)
    );
    assert!(failures.is_empty(), "{name}: failing seeds {failures:?}");
    reports
}

/// The primary of view 0 crashes for good: the backups' timers fire, the
/// primary of view 1 gathers 2f + 1 VIEW-CHANGEs, sends NEW-VIEW, and every
/// request completes in view 1 or later.
#[test]
fn a_crashed_primary_is_replaced() {
    let reports = run_many(
        "a_crashed_primary_is_replaced",
        0..seeds(300),
        primary_crash_config,
    );
    // A run may finish before its primary crashes; most must change views.
    let changed = reports.iter().filter(|r| r.highest_view >= 1).count();
    assert!(
        changed * 10 >= reports.len() * 8,
        "{changed} of {} changed views",
        reports.len()
    );
}

#[test]
fn a_crashed_primary_is_replaced_replay() {
    if let Some(seed) = std::env::var("PBFT_VC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let config = primary_crash_config(seed);
        eprintln!("{config:#?}");
        let mut sim = Sim::new(config).unwrap();
        let result = sim.run_and_check(true);
        eprintln!("{:#?}", sim.report());
        for i in 0..sim.cluster().n() {
            let r = sim.replica(ReplicaId(i as u32)).unwrap();
            eprintln!(
                "replica {i}: view {} active {} low {} executed {} pending {} log {}",
                r.view(),
                r.is_view_active(),
                r.low_watermark(),
                r.last_executed(),
                r.pending_len(),
                r.log_len()
            );
        }
        result.unwrap();
    }
}

/// Seven replicas, the primaries of views 0 and 1 both crash (f = 2): two
/// successive view changes, the second with a doubled timeout.
#[test]
fn two_primaries_in_a_row_crash() {
    let make = |seed| {
        let mut config = SimConfig::new(seed, 7);
        config.clients = 3;
        config.requests_per_client = 5;
        config.params.batch_requests_max = 2;
        config.params.checkpoint_interval_seqs = 2;
        config.params.log_window_seqs = 4;
        config.params.pipeline_batches_max = 2;
        config.params.view_change_timeout_us = 200_000;
        config.params.retransmit_interval_us = 30_000;
        config.network.delay_us_max = 3_000;
        config.network.drop_ppm = 20_000;
        config.persist_delay_us_max = 500;
        config.crashes = vec![
            (ReplicaId(0), Time(5_000 + seed * 1_000)),
            (ReplicaId(1), Time(0)),
        ];
        config
    };
    let reports = run_many("two_primaries_in_a_row_crash", 0..seeds(40), make);
    for r in &reports {
        assert!(r.highest_view >= 2, "{r:?}");
    }
}

/// Crash-recovery churn: up to four times, one replica (any, primaries
/// included) crashes and restarts from its acknowledged records after a
/// random downtime, on a lossy network, with at most one down at a time
/// for n = 4 (two for n = 7). Restarted replicas re-enter through view
/// changes, fetched batches and state transfer.
fn churn_config(seed: u64) -> SimConfig {
    let mut config = SimConfig::random(seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0bad_5eed);
    let n = config.replicas as u32;
    let f = (config.replicas - 1) / 3;
    config.crashes = Vec::new();
    config.restarts = Vec::new();
    config.params.view_change_timeout_us = rng.gen_range(100_000..=500_000);
    config.requests_per_client = rng.gen_range(4..=10);
    for lane in 0..f {
        let mut at = rng.gen_range(0..=30_000u64);
        let mut last: Option<u32> = None;
        for _ in 0..rng.gen_range(1..=4) {
            // Lanes use disjoint replicas so that at most f are down at once.
            let mut who = rng.gen_range(0..n);
            while who as usize % f != lane || Some(who) == last {
                who = rng.gen_range(0..n);
            }
            last = Some(who);
            let down = rng.gen_range(1_000..=1_500_000);
            config.crashes.push((ReplicaId(who), Time(at)));
            config.restarts.push((ReplicaId(who), Time(at + down)));
            at += down + rng.gen_range(1_000..=800_000);
        }
    }
    config
}

#[test]
fn crash_recovery_churn_with_view_changes() {
    run_many(
        "crash_recovery_churn_with_view_changes",
        0..seeds(300),
        churn_config,
    );
}

#[test]
fn crash_recovery_churn_with_view_changes_replay() {
    if let Some(seed) = std::env::var("PBFT_VC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let config = churn_config(seed);
        eprintln!("{config:#?}");
        let mut sim = Sim::new(config).unwrap();
        let result = sim.run_and_check(true);
        eprintln!("{:#?}", sim.report());
        result.unwrap();
    }
}
