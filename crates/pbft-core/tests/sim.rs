//! Simulated clusters from seeds: drops, duplicates, reordering, a crashed
//! backup, 4 or 7 replicas, both request authentication modes. Every failing
//! seed prints the command that replays it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Instant;

use pbft_core::sim::{Sim, SimConfig};
use pbft_core::Time;
use pbft_types::{ReplicaId, SeqNo};

/// Seeds run by `cargo test` (at least 1000); `PBFT_SIM_SEEDS=N` runs `N`.
const SEEDS: u64 = 2_000;

fn seeds() -> u64 {
    std::env::var("PBFT_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEEDS)
}

fn run_seed(seed: u64) -> Result<pbft_core::sim::SimReport, String> {
    let config = SimConfig::random(seed);
    let summary = format!("{config:?}");
    let mut sim = Sim::new(config).map_err(|e| format!("setup: {e}"))?;
    sim.run_and_check(true).map_err(|v| {
        format!(
            "seed {seed} failed: {v}\n  reproduce: PBFT_SIM_SEED={seed} cargo test -p pbft-core --test sim -- seed_replay --nocapture\n  config: {summary}"
        )
    })
}

fn run_range(range: std::ops::Range<u64>) {
    let started = Instant::now();
    let mut failures = Vec::new();
    let (mut completed, mut stable, mut restarts) = (0, 0, 0);
    for seed in range.clone() {
        match run_seed(seed) {
            Ok(report) => {
                completed += report.requests_completed;
                stable += report.stable_checkpoints;
                restarts += report.restarts;
            }
            Err(e) => {
                eprintln!("{e}");
                failures.push(seed);
            }
        }
    }
    eprintln!(
        "seeds {range:?}: {} failed, {completed} requests completed, {stable} stable checkpoints, {restarts} restarts, {:?}",
        failures.len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

// Split in two so that the test harness runs them on both cores.
#[test]
fn seeds_first_half() {
    run_range(0..seeds() / 2);
}

#[test]
fn seeds_second_half() {
    run_range(seeds() / 2..seeds());
}

/// `PBFT_SIM_SEED=123 cargo test -p pbft-core --test sim -- seed_replay --nocapture`
#[test]
fn seed_replay() {
    let Ok(seed) = std::env::var("PBFT_SIM_SEED") else {
        return;
    };
    let seed: u64 = seed.parse().expect("PBFT_SIM_SEED must be a number");
    let config = SimConfig::random(seed);
    eprintln!("{config:#?}");
    let mut sim = Sim::new(config).unwrap();
    let result = sim.run_and_check(true);
    eprintln!("{:#?}", sim.report());
    for id in sim.cluster().replica_ids().collect::<Vec<_>>() {
        let r = sim.replica(id).unwrap();
        eprintln!(
            "replica {id}: executed {} low {} log {} pending {} future {} stats {:?}",
            r.last_executed(),
            r.low_watermark(),
            r.log_len(),
            r.pending_len(),
            r.future_len(),
            r.stats()
        );
    }
    result.unwrap();
}

#[test]
fn a_fair_network_completes_every_request() {
    for seed in 0..20 {
        let mut config = SimConfig::new(seed, 4);
        config.clients = 4;
        config.requests_per_client = 10;
        config.params.batch_requests_max = 4;
        config.params.checkpoint_interval_seqs = 4;
        config.params.log_window_seqs = 8;
        config.params.pipeline_batches_max = 4;
        config.network.delay_us_max = 5_000;
        let mut sim = Sim::new(config).unwrap();
        let report = sim.run_and_check(true).unwrap();
        assert_eq!(report.requests_completed, 40);
        assert!(report.stable_checkpoints > 0);
    }
}

/// TOCS 3.2 with a lying client: every request's MAC for backup 3 is bad.
/// Backup 3 refuses the requests when they reach it from the client and
/// cannot check them in batches, yet takes part: it accepts each batch on
/// the prepares of f + 1 = 2 other backups, and every request completes
/// without a view change. With its vouching rule removed, backup 3 would
/// never prepare, and one crashed backup more would stall the cluster; the
/// count of vouched pre-prepares shows the rule at work.
#[test]
fn a_backup_the_client_lies_to_follows_the_vouching_backups() {
    for seed in 0..10 {
        let mut config = SimConfig::new(seed, 4);
        config.clients = 3;
        config.requests_per_client = 6;
        config.params.batch_requests_max = 2;
        config.params.request_auth = pbft_core::RequestAuth::Macs;
        config.mac_requests = true;
        config.spoiled_mac_replica = Some(ReplicaId(3));
        config.network.delay_us_max = 3_000;
        let mut sim = Sim::new(config).unwrap();
        let report = sim.run_and_check(true).unwrap();
        assert_eq!(report.requests_completed, 18, "seed {seed}");
        let liar_victim = sim.replica(ReplicaId(3)).unwrap();
        assert!(liar_victim.stats().pre_prepares_vouched > 0, "seed {seed}");
        assert_eq!(liar_victim.view(), pbft_types::View(0), "seed {seed}");
        // It executes with the others (the run stops when the clients are
        // done, possibly one batch before it catches the last one).
        let primary = sim.replica(ReplicaId(0)).unwrap().last_executed();
        assert!(
            liar_victim.last_executed().0 + 1 >= primary.0,
            "seed {seed}: {:?} vs {primary:?}",
            liar_victim.last_executed()
        );
    }
}

/// A backup crashes and restarts from its acknowledged records while
/// another backup is down for good: the cluster needs the restarted replica
/// for every quorum, so it must resume safely and take part again.
#[test]
fn a_restarted_backup_is_needed_for_the_quorum_and_resumes() {
    for seed in 0..30 {
        let mut config = SimConfig::new(seed, 4);
        config.clients = 2;
        config.requests_per_client = 8;
        config.params.batch_requests_max = 2;
        config.params.checkpoint_interval_seqs = 2;
        config.params.log_window_seqs = 4;
        config.params.pipeline_batches_max = 2;
        config.params.retransmit_interval_us = 30_000;
        config.network.delay_us_max = 3_000;
        config.persist_delay_us_max = 500;
        config.crashes = vec![
            (ReplicaId(3), Time(0)),
            (ReplicaId(2), Time(2_000 + seed * 1_000)),
        ];
        config.restarts = vec![(ReplicaId(2), Time(50_000 + seed * 3_000))];
        let mut sim = Sim::new(config).unwrap();
        let report = sim
            .run_and_check(true)
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        assert_eq!(report.requests_completed, 16, "seed {seed}");
        assert_eq!(report.restarts, 1);
        let restarted = sim.replica(ReplicaId(2)).unwrap();
        assert!(restarted.last_executed() > SeqNo(0), "seed {seed}");
    }
}

/// The primary of view 0 crashes and restarts (view change is issue 4): it
/// resumes after its highest durable pre-prepare and the run completes.
#[test]
fn a_restarted_primary_resumes_its_sequence() {
    for seed in 0..30 {
        let mut config = SimConfig::new(seed, 4);
        config.clients = 3;
        config.requests_per_client = 6;
        config.params.batch_requests_max = 2;
        config.params.pipeline_batches_max = 3;
        config.network.delay_us_max = 2_000;
        config.persist_delay_us_max = 800;
        config.client_retry_us = 100_000;
        config.crashes = vec![(ReplicaId(0), Time(1_000 + seed * 700))];
        config.restarts = vec![(ReplicaId(0), Time(40_000 + seed * 2_000))];
        let mut sim = Sim::new(config).unwrap();
        let report = sim
            .run_and_check(true)
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        assert_eq!(report.requests_completed, 18, "seed {seed}");
    }
}

/// PBFT 4.1: the clients cannot reach the primary (their requests to it are
/// lost), the backups can. With authenticated requests the backups relay
/// them and every request completes in view 0, with no view change; under
/// channel authentication nothing vouches for a relayed request, so the
/// backups replace the primary instead, and the run completes in a later
/// view. The relays' count tells the two paths apart.
#[test]
fn backups_relay_the_requests_a_cut_off_primary_never_got() {
    use pbft_core::RequestAuth;
    for (seed, auth) in (0..12).zip(
        [
            RequestAuth::ClientSignatures,
            RequestAuth::Macs,
            RequestAuth::Channel,
        ]
        .into_iter()
        .cycle(),
    ) {
        let mut config = SimConfig::new(seed, 4);
        config.clients = 3;
        config.requests_per_client = 5;
        config.params.batch_requests_max = 2;
        config.params.retransmit_interval_us = 30_000;
        config.params.view_change_timeout_us = 1_000_000;
        config.params.request_auth = auth;
        config.sign_requests = auth != RequestAuth::Channel;
        config.mac_requests = auth == RequestAuth::Macs;
        config.network.delay_us_max = 3_000;
        config.client_retry_us = 200_000;
        config.clients_cut_from = [ReplicaId(0)].into();
        let mut sim = Sim::new(config).unwrap();
        let report = sim
            .run_and_check(true)
            .unwrap_or_else(|v| panic!("seed {seed} {auth:?}: {v}"));
        assert_eq!(report.requests_completed, 15, "seed {seed} {auth:?}");
        assert!(report.messages_cut >= 15, "seed {seed} {auth:?}");
        let relayed: u64 = (1..4)
            .map(|i| sim.replica(ReplicaId(i)).unwrap().stats().requests_relayed)
            .sum();
        if auth == RequestAuth::Channel {
            assert_eq!(relayed, 0, "seed {seed}");
            assert!(report.highest_view >= 1, "seed {seed}: {report:?}");
        } else {
            assert!(relayed >= 15, "seed {seed} {auth:?}: {relayed}");
            assert_eq!(report.view_changes_started, 0, "seed {seed} {auth:?}");
            assert_eq!(report.highest_view, 0, "seed {seed} {auth:?}");
        }
    }
}
