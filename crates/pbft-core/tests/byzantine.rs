//! Byzantine replicas in the simulator (FAULTS.md 1 to 12 and 26).
//!
//! Every behaviour of [`pbft_core::byzantine`] runs for `PBFT_BYZ_SEEDS`
//! seeds (200 by default) with `n = 4` and one Byzantine replica and with
//! `n = 7` and two; the `*_forever` variants (faults never stop, so
//! liveness needs view changes) for `PBFT_BYZ_FOREVER_SEEDS` (30). Each
//! seed draws its own network (delays, loss and duplication until the
//! faults stop), batching, request authentication and the time the faults
//! stop. Checks: no safety violation among the correct
//! replicas (the simulator's checkers), and liveness: every client request
//! completes within [`LIVE_AFTER_US`] of simulated time after the faults
//! stop (the Byzantine replicas turn honest, partitions heal, twins end).
//!
//! Liveness with a Byzantine primary needs the view change (PBFT 4.4, 4.5):
//! the tests marked "needs view change" below cannot pass without it.
//!
//! A failing seed prints the command that replays it:
//! `PBFT_BYZ_SEED=N PBFT_BYZ_STRATEGY=name PBFT_BYZ_N=4 cargo test -p pbft-core --test byzantine -- byz_replay --nocapture`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeSet;
use std::time::Instant;

use pbft_core::byzantine::{
    Action, Amnesia, BadSignatures, CensoringPrimary, Chain, Context, DoubleVotingBackup,
    EquivocatingPrimary, FarFutureFlood, ForgedViewChange, Halves, Honest, SelectivePrimary,
    SilentPrimary, SmallScopeMutation, Strategy, Until, WrongState,
};
use pbft_core::sim::{NetworkConfig, Partition, Sim, SimConfig, SimReport, Violation};
use pbft_core::{Output, RequestAuth, Time};
use pbft_types::{ClientId, Message, NewView, ReplicaId, SeqNo, View};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seeds per scenario and cluster size by default; `PBFT_BYZ_SEEDS=N` runs `N`.
const SEEDS: u64 = 200;
/// Simulated time after the faults stop within which every request must
/// complete.
const LIVE_AFTER_US: u64 = 20_000_000;

/// Seeds per scenario and cluster size for the faults that never stop;
/// `PBFT_BYZ_FOREVER_SEEDS=N` runs `N`.
const FOREVER_SEEDS: u64 = 30;

fn seeds(name: &str) -> u64 {
    let (var, default) = if name.ends_with("_forever") {
        ("PBFT_BYZ_FOREVER_SEEDS", FOREVER_SEEDS)
    } else {
        ("PBFT_BYZ_SEEDS", SEEDS)
    };
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Suppresses the replica's own PRE-PREPAREs of view 0 after the first
/// sequence number, so that the cluster must change views with something
/// prepared.
struct StallViewZero;

impl Strategy for StallViewZero {
    fn name(&self) -> &'static str {
        "stall_view_zero"
    }
    fn outgoing(&mut self, ctx: &Context<'_>, output: Output, _: &mut dyn RngCore) -> Vec<Action> {
        match &output {
            Output::Send {
                message: Message::PrePrepare { pre_prepare, .. },
                ..
            }
            | Output::Broadcast(Message::PrePrepare { pre_prepare, .. })
                if pre_prepare.signer == ctx.me
                    && pre_prepare.value.view == View(0)
                    && pre_prepare.value.seq > SeqNo(1) =>
            {
                Vec::new()
            }
            _ => vec![Action::Emit(output)],
        }
    }
}

/// The behaviours, by the name used in reproduction commands.
const STRATEGIES: &[&str] = &[
    "equivocating_primary",
    "double_voting_backup",
    "colluding_equivocation",
    "silent_primary",
    "selective_primary",
    "censoring_primary",
    "forged_view_change",
    "new_view_ahead",
    "small_scope_mutation",
    "far_future_flood",
    "bad_signatures",
    "amnesia",
    "wrong_state",
    "twins",
    "partition_isolate_primary",
    "partition_split",
    "partition_one_way",
];

fn strategy(name: &str) -> Box<dyn Strategy> {
    match name {
        "equivocating_primary" => Box::new(EquivocatingPrimary::new()),
        "double_voting_backup" => Box::new(DoubleVotingBackup::new()),
        "silent_primary" => Box::new(SilentPrimary),
        "selective_primary" => Box::new(SelectivePrimary),
        "censoring_primary" => Box::new(CensoringPrimary {
            client: ClientId(1),
        }),
        "forged_view_change" => {
            // Stalling view 0 forces a view change, whose VIEW-CHANGEs (and
            // for n = 7 the NEW-VIEW of replica 1, view 1's primary) are
            // forged.
            let mut s = ForgedViewChange::new();
            s.inject_new_views = false;
            Box::new(Chain(vec![Box::new(StallViewZero), Box::new(s)]))
        }
        "new_view_ahead" => {
            // FAULTS.md 6 and 8: NEW-VIEWs (invalid) for views ahead of the
            // receivers, led by the Byzantine replica, up to u64::MAX.
            let forged = ForgedViewChange::new();
            let mut flood = FarFutureFlood::new();
            flood.per_output = 1;
            flood.budget = 100;
            Box::new(Chain(vec![Box::new(forged), Box::new(flood)]))
        }
        "small_scope_mutation" => Box::new(SmallScopeMutation::new()),
        "far_future_flood" => {
            // NEW-VIEWs ahead are `new_view_ahead`.
            let mut s = FarFutureFlood::new();
            s.new_views = false;
            Box::new(s)
        }
        "bad_signatures" => Box::new(BadSignatures::new()),
        "amnesia" => Box::new(Amnesia),
        "wrong_state" => Box::new(WrongState),
        _ => Box::new(Honest),
    }
}

/// Which replicas are Byzantine: the primary of view 0 (and for `n = 7`
/// also replica 1, the primary of view 1); a double-voting backup is
/// replica 1 (and 2).
fn byzantine_ids(name: &str, n: usize) -> Vec<ReplicaId> {
    let backup = name == "double_voting_backup";
    match (n, backup) {
        (4, false) => vec![ReplicaId(0)],
        (4, true) => vec![ReplicaId(1)],
        (_, false) => vec![ReplicaId(0), ReplicaId(1)],
        (_, true) => vec![ReplicaId(1), ReplicaId(2)],
    }
}

/// The cluster of one seed: small, with a network of its own.
fn base_config(seed: u64, n: usize, faults_until_us: u64) -> SimConfig {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xb12a_2f1e);
    let mut config = SimConfig::new(seed, n);
    // Fewer clients for n = 7, whose runs cost about n^2 signature checks.
    config.clients = if n > 4 { 2 } else { rng.gen_range(2..=3) };
    config.requests_per_client = if n > 4 { 2 } else { rng.gen_range(2..=3) };
    config.value_bytes = 8;
    config.params.checkpoint_interval_seqs = 2;
    config.params.log_window_seqs = 4;
    config.params.pipeline_batches_max = rng.gen_range(1..=2);
    config.params.batch_requests_max = rng.gen_range(1..=3);
    config.params.batch_delay_us_max = rng.gen_range(0..=3_000);
    // Both batching policies: with proposals at once on an idle pipeline,
    // light load makes batches of one request, which some strategies (the
    // equivocating primary) cannot rewrite.
    config.params.propose_when_idle = rng.gen_bool(0.5);
    config.params.retransmit_interval_us = 30_000;
    config.params.view_change_timeout_us = 150_000;
    // Diagnostic: `PBFT_BYZ_NO_VIEW_CHANGE=1` keeps the view-change timer
    // from firing within the run, to see which scenarios need it.
    if std::env::var_os("PBFT_BYZ_NO_VIEW_CHANGE").is_some() {
        config.params.view_change_timeout_us = 1_000_000_000_000;
    }
    config.params.future_messages_max = 64;
    if rng.gen_ratio(1, 4) {
        config.params.request_auth = RequestAuth::Channel;
        config.sign_requests = false;
    }
    let delay_us_max = rng.gen_range(100..=5_000);
    let lossy = rng.gen_ratio(1, 2);
    config.network = NetworkConfig {
        delay_us_min: rng.gen_range(0..=delay_us_max / 4),
        delay_us_max,
        drop_ppm: if lossy { rng.gen_range(0..=50_000) } else { 0 },
        duplicate_ppm: if lossy { rng.gen_range(0..=50_000) } else { 0 },
        heal_at_us: Some(faults_until_us),
    };
    config.persist_delay_us_max = rng.gen_range(0..=500);
    config.client_retry_us = 100_000;
    config.time_limit_us = faults_until_us + LIVE_AFTER_US;
    config.events_max = 3_000_000;
    config
}

/// One run: the scenario `name` with `n` replicas for `seed`.
struct Outcome {
    result: Result<SimReport, String>,
    faults_until_us: u64,
    /// Per replica instance: (id, view, last executed).
    replicas: Vec<(ReplicaId, u64, u64)>,
}

fn run(name: &str, n: usize, seed: u64, expect_live: bool) -> Outcome {
    // `<behaviour>_forever`: the Byzantine replicas never turn honest; the
    // cluster must still complete every request (PBFT 4.5: with at most f
    // faulty replicas, view changes find a correct primary).
    let (name, forever) = match name.strip_suffix("_forever") {
        Some(base) => (base, true),
        None => (name, false),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0f0f_5eed);
    let faults_until_us = rng.gen_range(100_000..=600_000);
    let mut config = base_config(seed, n, faults_until_us);
    let all: Vec<ReplicaId> = (0..n).map(|i| ReplicaId(i as u32)).collect();
    match name {
        "partition_isolate_primary" => {
            config.partitions = vec![Partition::isolate(
                ReplicaId(0),
                n,
                rng.gen_range(0..=50_000),
                faults_until_us,
            )];
        }
        "partition_split" => {
            // A minority of f replicas (the primary among them or not) cut
            // from the majority.
            let f = (n - 1) / 3;
            let mut ids = all.clone();
            let mut minority = Vec::new();
            while minority.len() < f {
                minority.push(ids.swap_remove(rng.gen_range(0..ids.len())));
            }
            config.partitions = vec![Partition::split(
                &minority,
                &ids,
                rng.gen_range(0..=50_000),
                faults_until_us,
            )];
        }
        "partition_one_way" => {
            // The primary's outgoing or incoming links are cut, and one
            // backup's in the other direction.
            let (a, b) = (&all[..1], &all[1..]);
            let first = if rng.gen() {
                Partition::one_way(a, b, 0, faults_until_us)
            } else {
                Partition::one_way(b, a, 0, faults_until_us)
            };
            let backup = all[rng.gen_range(1..n)];
            let rest: Vec<ReplicaId> = all.iter().copied().filter(|r| *r != backup).collect();
            let second = Partition::one_way(&rest, &[backup], 0, faults_until_us / 2);
            config.partitions = vec![first, second];
        }
        _ => {}
    }
    // Amnesia strikes while requests are in flight: the replica crashes
    // early, comes back soon from the store it had some time before, and
    // the clients still have requests to order.
    let amnesia_times = (name == "amnesia").then(|| {
        config.requests_per_client = if n > 4 { 3 } else { 4 };
        let crash = rng.gen_range(2_000..=30_000);
        let as_of = rng.gen_range(0..crash);
        let restart = crash + rng.gen_range(1_000..=20_000);
        (as_of, crash, restart)
    });
    let mut sim = Sim::new(config).expect("sim");
    let until = Time(if forever { u64::MAX } else { faults_until_us });
    if name == "twins" {
        // Twins of the primary (and of replica 1 for n = 7): each other
        // replica talks to the first instance, the twin, or both.
        let twinned = byzantine_ids(name, n);
        for id in &twinned {
            let (mut first, mut twin) = (BTreeSet::new(), BTreeSet::new());
            for r in all.iter().filter(|r| *r != id) {
                match rng.gen_range(0..3) {
                    0 => {
                        first.insert(*r);
                    }
                    1 => {
                        twin.insert(*r);
                    }
                    _ => {
                        first.insert(*r);
                        twin.insert(*r);
                    }
                }
            }
            sim.add_twin(*id, first, twin, Box::new(Honest), Some(until))
                .expect("twin");
            assert_eq!(sim.instances(*id).len(), 2);
        }
    } else if !name.starts_with("partition") {
        // Colluding: the primary equivocates to a random half `b` of the
        // correct replicas and (n = 7) replica 1 votes for each half's
        // digest (FAULTS.md 1 + 2 together, within f).
        let half_b = Halves::with_b(all.iter().copied().filter(|r| r.0 >= 2 && rng.gen()));
        for id in byzantine_ids(name, n) {
            let s: Box<dyn Strategy> = match (name, id.0) {
                ("colluding_equivocation", 0) => {
                    Box::new(EquivocatingPrimary::with_halves(half_b.clone()))
                }
                ("colluding_equivocation", _) => {
                    Box::new(DoubleVotingBackup::with_halves(half_b.clone()))
                }
                _ => strategy(name),
            };
            sim.set_adversary(id, Box::new(Until { strategy: s, until }));
            if let Some((as_of, crash, restart)) = amnesia_times {
                sim.amnesia(id, Time(as_of), Time(crash), Time(restart));
            }
        }
    }
    let byzantine = if name.starts_with("partition") {
        Vec::new()
    } else {
        byzantine_ids(name, n)
    };
    let result = sim
        .run_and_check(expect_live)
        .map_err(|v| v.to_string())
        .and_then(|report| {
            let correct = all.iter().filter(|id| !byzantine.contains(id));
            correct
                .map(|id| check_bounds(&sim, *id))
                .collect::<Result<Vec<()>, String>>()
                .map(|_| report)
        });
    let replicas = all
        .iter()
        .flat_map(|id| {
            sim.instances(*id)
                .into_iter()
                .map(|r| (*id, r.view().0, r.last_executed().0))
        })
        .collect();
    Outcome {
        result,
        faults_until_us,
        replicas,
    }
}

/// FAULTS.md: memory stayed bounded. At the end of a run every correct
/// replica holds at most its window of slots (`L`) and checkpoint vote sets
/// (`L / K + 1`), and at most the configured future messages and pending
/// requests, whatever the Byzantine replicas sent.
fn check_bounds(sim: &Sim, id: ReplicaId) -> Result<(), String> {
    let r = sim.replica(id).ok_or("no replica")?;
    let p = r.params();
    let window = p.log_window_seqs as usize;
    let checks = [
        ("log slots", r.log_len(), window),
        ("future messages", r.future_len(), p.future_messages_max),
        (
            "checkpoint vote sets",
            r.checkpoint_votes_len(),
            window / p.checkpoint_interval_seqs as usize + 1,
        ),
        ("pending requests", r.pending_len(), p.pending_requests_max),
    ];
    for (what, got, max) in checks {
        if got > max {
            return Err(format!("replica {id} holds {got} {what}, more than {max}"));
        }
    }
    Ok(())
}

fn reproduce(name: &str, n: usize, seed: u64) -> String {
    format!(
        "PBFT_BYZ_SEED={seed} PBFT_BYZ_STRATEGY={name} PBFT_BYZ_N={n} cargo test -p pbft-core --test byzantine -- byz_replay --nocapture"
    )
}

/// Runs `name` for every seed with `n` replicas; returns the failing seeds
/// (each printed with its reproduction command).
fn run_seeds(name: &str, n: usize, expect_live: bool) -> Vec<u64> {
    let started = Instant::now();
    let count = seeds(name);
    let mut failures = Vec::new();
    let (mut completed, mut view_changes, mut highest_view, mut highest_seed) = (0, 0, 0, 0);
    let mut totals = SimReport::default();
    for seed in 0..count {
        let outcome = run(name, n, seed, expect_live);
        match outcome.result {
            Ok(report) => {
                completed += report.requests_completed;
                view_changes += report.view_changes_started;
                if report.highest_view > highest_view {
                    highest_view = report.highest_view;
                    highest_seed = seed;
                }
                totals.adversary_faults += report.adversary_faults;
                totals.messages_cut += report.messages_cut;
                totals.restarts += report.restarts;
                for (label, c) in report.rejections {
                    *totals.rejections.entry(label).or_default() += c;
                }
            }
            Err(v) => {
                eprintln!(
                    "{name} n={n} seed {seed} failed (faults stop at {} us): {v}\n  reproduce: {}",
                    outcome.faults_until_us,
                    reproduce(name, n, seed)
                );
                failures.push(seed);
            }
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "TIMING {name} n={n}: {count} seeds, {:.1} ms/seed, {} failed, {completed} requests, {view_changes} view changes started, highest view {highest_view} (seed {highest_seed}), {} faults injected, {} messages cut, rejections {:?}",
        elapsed.as_secs_f64() * 1000.0 / count.max(1) as f64,
        failures.len(),
        totals.adversary_faults,
        totals.messages_cut,
        totals.rejections,
    );
    if failures.is_empty() && count >= 20 {
        check_evidence(name, n, &totals);
    }
    failures
}

/// The fault was really injected and seen (a harness that never injects
/// proves nothing): summed over the seeds of one scenario.
fn check_evidence(name: &str, n: usize, totals: &SimReport) {
    let name = name.trim_end_matches("_forever");
    let rejected = |label: &str| totals.rejections.get(label).copied().unwrap_or(0);
    match name {
        "amnesia" => {
            assert!(totals.restarts > 0, "{name} n={n}: no restart");
            assert!(
                rejected("conflicting_pre_prepare") > 0,
                "{name} n={n}: no conflicting pre-prepare was offered: {totals:?}"
            );
        }
        "twins" => {}
        "bad_signatures" => {
            assert!(rejected("bad_signature") > 0, "{name} n={n}: {totals:?}");
            assert!(rejected("signer_mismatch") > 0, "{name} n={n}: {totals:?}");
        }
        "far_future_flood" => {
            assert!(rejected("outside_window") > 0, "{name} n={n}: {totals:?}");
        }
        "forged_view_change" => {
            assert!(
                rejected("invalid_view_change") > 0,
                "{name} n={n}: {totals:?}"
            );
        }
        _ if name.starts_with("partition") => {
            assert!(totals.messages_cut > 0, "{name} n={n}: no message cut");
        }
        _ => assert!(
            totals.adversary_faults > 0,
            "{name} n={n}: the adversary never changed anything"
        ),
    }
}

/// `n = 4` with one Byzantine replica and `n = 7` with two.
fn both_sizes(name: &str) {
    let four = run_seeds(name, 4, true);
    let seven = run_seeds(name, 7, true);
    assert!(
        four.is_empty() && seven.is_empty(),
        "{name}: failing seeds n=4 {four:?}, n=7 {seven:?}"
    );
}

// ----- behaviours whose faults stop -----------------------------------------
// "Needs view change" below: measured with `PBFT_BYZ_NO_VIEW_CHANGE=1`
// (the view-change timer never fires), these fail liveness for some seeds:
// the faulty primary leaves a sequence number that only a new view fills.
// The others recover without one once the faults stop (the primary turns
// honest); their `*_forever` variants below need the view change.

/// FAULTS.md 1 (needs view change).
#[test]
fn equivocating_primary() {
    both_sizes("equivocating_primary");
}

/// FAULTS.md 3.
#[test]
fn silent_primary() {
    both_sizes("silent_primary");
}

/// FAULTS.md 4.
#[test]
fn selective_primary() {
    both_sizes("selective_primary");
}

/// FAULTS.md 5: the censored client's requests are never proposed by the
/// faulty primary until a view change or the faults stop.
#[test]
fn censoring_primary() {
    both_sizes("censoring_primary");
}

/// FAULTS.md 6: view 0 stalls, so the view change runs with forged
/// VIEW-CHANGEs (and, for n = 7, a forged NEW-VIEW of view 1's primary).
#[test]
fn forged_view_change() {
    both_sizes("forged_view_change");
}

/// FAULTS.md 6 and 8: a Byzantine replica sends (invalid) NEW-VIEWs for
/// views ahead of everyone's, views it is the primary of, up to u64::MAX.
/// PBFT 4.5 (PROTOCOL.md 17): no correct replica may move to a higher view
/// on fewer than f + 1 messages; the simulator's `ViewJump` checker fails
/// the run if one does.
#[test]
fn new_view_ahead() {
    both_sizes("new_view_ahead");
}

/// FAULTS.md 7 on the primary (needs view change: a mutated pre-prepare
/// can take a sequence number).
#[test]
fn small_scope_mutation() {
    both_sizes("small_scope_mutation");
}

/// FAULTS.md 8 on the primary.
#[test]
fn far_future_flood() {
    both_sizes("far_future_flood");
}

/// FAULTS.md 9 on the primary.
#[test]
fn bad_signatures() {
    both_sizes("bad_signatures");
}

/// FAULTS.md 10: the primary restarts from an older store and re-assigns
/// sequence numbers (needs view change: the backups refuse its conflicting
/// pre-prepares).
#[test]
fn amnesia() {
    both_sizes("amnesia");
}

/// FAULTS.md 11 on the primary.
#[test]
fn wrong_state() {
    both_sizes("wrong_state");
}

/// FAULTS.md 1 and 2 colluding: the primary equivocates to a random half
/// and (n = 7) backup 1 votes for both digests, each to its half (needs
/// view change).
#[test]
fn colluding_equivocation() {
    both_sizes("colluding_equivocation");
}

/// FAULTS.md 2: backups double-vote.
#[test]
fn double_voting_backup() {
    both_sizes("double_voting_backup");
}

/// Twins of the primary (and of replica 1 for n = 7), Bano et al. 2021
/// (n = 7 needs view change).
#[test]
fn twins() {
    both_sizes("twins");
}

/// FAULTS.md 12: the primary isolated, then healed.
#[test]
fn partition_isolate_primary() {
    both_sizes("partition_isolate_primary");
}

/// FAULTS.md 12: a minority of f replicas cut from the majority, healed.
#[test]
fn partition_split() {
    both_sizes("partition_split");
}

/// FAULTS.md 12: one-way links, healed.
#[test]
fn partition_one_way() {
    both_sizes("partition_one_way");
}

/// Sends one NEW-VIEW for `u64::MAX` (a view the controlled replica leads
/// when `u64::MAX mod n` is its id), then never proposes.
struct NewViewAtMax {
    sent: bool,
}

impl Strategy for NewViewAtMax {
    fn name(&self) -> &'static str {
        "new_view_at_max"
    }
    fn outgoing(
        &mut self,
        ctx: &Context<'_>,
        output: Output,
        rng: &mut dyn RngCore,
    ) -> Vec<Action> {
        let mut actions = SilentPrimary.outgoing(ctx, output, rng);
        if !self.sent {
            self.sent = true;
            let nv = NewView {
                view: View(u64::MAX),
                view_changes: Vec::new(),
                pre_prepares: Vec::new(),
            };
            actions.push(Action::Emit(Output::Broadcast(Message::NewView(
                ctx.signer.sign(nv).unwrap(),
            ))));
        }
        actions
    }
}

/// PBFT 4.5: one invalid NEW-VIEW for the last view (`u64::MAX`), led by a
/// Byzantine replica that then stays silent forever, must not move correct
/// replicas there: views cannot go past `u64::MAX`, so the cluster would
/// never find a correct primary again.
#[test]
fn a_new_view_for_the_last_view_does_not_stall_the_cluster() {
    let mut failed = Vec::new();
    for seed in 0..20 {
        let mut config = base_config(seed, 4, 100_000);
        config.time_limit_us = LIVE_AFTER_US;
        let mut sim = Sim::new(config).unwrap();
        // u64::MAX mod 4 == 3: replica 3 leads view u64::MAX.
        let byzantine = ReplicaId(3);
        assert_eq!(sim.cluster().primary(View(u64::MAX)), byzantine);
        sim.set_adversary(byzantine, Box::new(NewViewAtMax { sent: false }));
        if let Err(v) = sim.run_and_check(true) {
            eprintln!("seed {seed}: {v}");
            failed.push(seed);
        }
    }
    assert!(failed.is_empty(), "seeds {failed:?}");
}

// ----- faults that never stop: liveness needs the view change ---------------
// PBFT 4.5: with at most f faulty replicas the cluster stays live forever
// after the network is fair: a view change replaces a faulty primary (for
// n = 7 both view 0's and view 1's primaries are faulty).

/// FAULTS.md 1, forever (needs view change).
#[test]
fn equivocating_primary_forever() {
    both_sizes("equivocating_primary_forever");
}

/// FAULTS.md 3, forever (needs view change).
#[test]
fn silent_primary_forever() {
    both_sizes("silent_primary_forever");
}

/// FAULTS.md 4, forever (needs view change).
#[test]
fn selective_primary_forever() {
    both_sizes("selective_primary_forever");
}

/// FAULTS.md 5, forever (needs view change).
#[test]
fn censoring_primary_forever() {
    both_sizes("censoring_primary_forever");
}

/// FAULTS.md 2, 6, 7, 8, 9, 11 forever, and twins for the whole run.
#[test]
fn other_behaviours_forever() {
    let mut failed = Vec::new();
    for name in [
        "double_voting_backup_forever",
        "forged_view_change_forever",
        "small_scope_mutation_forever",
        "far_future_flood_forever",
        "bad_signatures_forever",
        "wrong_state_forever",
        "twins_forever",
    ] {
        let four = run_seeds(name, 4, true);
        let seven = run_seeds(name, 7, true);
        if !four.is_empty() || !seven.is_empty() {
            failed.push((name, four, seven));
        }
    }
    assert!(
        failed.is_empty(),
        "failing (name, n=4 seeds, n=7 seeds): {failed:?}"
    );
}

// ----- negative controls (FAULTS.md 26) -------------------------------------

/// f + 1 = 2 Byzantine replicas of n = 4: the primary equivocates to
/// {1, 2} and {3}, and backup 1 votes for both digests. Replicas 2 and 3
/// each see a quorum (2f + 1 = 3) for a different batch at one sequence
/// number: the checker must report DivergentExecution. The network is
/// reliable and the first batch holds every client's first request, so the
/// violation is deterministic: every seed must catch it.
fn negative_control_equivocation(seed: u64) -> Result<SimReport, Violation> {
    let mut config = SimConfig::new(seed, 4);
    config.clients = 3;
    config.requests_per_client = 2;
    config.params.batch_requests_max = 3;
    config.params.batch_delay_us_max = 5_000;
    config.params.checkpoint_interval_seqs = 2;
    config.params.log_window_seqs = 4;
    config.params.pipeline_batches_max = 2;
    config.network = NetworkConfig {
        delay_us_min: 100,
        delay_us_max: 1_000,
        drop_ppm: 0,
        duplicate_ppm: 0,
        heal_at_us: None,
    };
    config.time_limit_us = 3_000_000;
    let mut sim = Sim::new(config).unwrap();
    let b = Halves::with_b([ReplicaId(3)]);
    sim.set_adversary(
        ReplicaId(0),
        Box::new(EquivocatingPrimary::with_halves(b.clone())),
    );
    sim.set_adversary(ReplicaId(1), Box::new(DoubleVotingBackup::with_halves(b)));
    sim.run_and_check(false)
}

#[test]
fn negative_control_f_plus_one_equivocation_is_caught() {
    let started = Instant::now();
    let mut missed = Vec::new();
    for seed in 0..20 {
        match negative_control_equivocation(seed) {
            Err(Violation::DivergentExecution { .. }) => {}
            other => {
                eprintln!(
                    "negative control seed {seed} not caught: {other:?}\n  reproduce: {}",
                    reproduce("negative_equivocation", 4, seed)
                );
                missed.push(seed);
            }
        }
    }
    eprintln!(
        "TIMING negative_equivocation n=4: 20 seeds, {:.1} ms/seed, {} caught",
        started.elapsed().as_secs_f64() * 50.0,
        20 - missed.len()
    );
    assert!(
        missed.is_empty(),
        "seeds where f + 1 equivocating replicas went unnoticed: {missed:?}"
    );
}

/// f + 1 = 2 twinned identities of n = 4 (the primary and backup 1): each
/// side (first instances with replica 2, twins with replica 3) forms a
/// quorum of its own. When the two primaries order the client requests
/// differently the correct replicas 2 and 3 execute different batches.
fn negative_control_twins(seed: u64) -> Result<SimReport, Violation> {
    let mut config = SimConfig::new(seed, 4);
    config.clients = 3;
    config.requests_per_client = 2;
    config.params.batch_requests_max = 3;
    config.params.batch_delay_us_max = 2_000;
    config.network.delay_us_min = 100;
    config.network.delay_us_max = 3_000;
    config.time_limit_us = 3_000_000;
    let mut sim = Sim::new(config).unwrap();
    let side = |r: u32| -> BTreeSet<ReplicaId> { [ReplicaId(r)].into_iter().collect() };
    for id in [ReplicaId(0), ReplicaId(1)] {
        let other = ReplicaId(1 - id.0);
        let mut first = side(2);
        first.insert(other);
        let mut twin = side(3);
        twin.insert(other);
        sim.add_twin(id, first, twin, Box::new(Honest), None)
            .unwrap();
    }
    sim.run_and_check(false)
}

#[test]
fn negative_control_f_plus_one_twins_is_caught() {
    let started = Instant::now();
    let caught = (0..20)
        .filter(|&seed| {
            matches!(
                negative_control_twins(seed),
                Err(Violation::DivergentExecution { .. })
            )
        })
        .count();
    eprintln!(
        "TIMING negative_twins n=4: 20 seeds, {:.1} ms/seed, {caught} caught",
        started.elapsed().as_secs_f64() * 50.0,
    );
    assert!(
        caught >= 1,
        "f + 1 twinned replicas never caused a detected violation in 20 seeds"
    );
}

/// Replays one seed of one scenario with details:
/// `PBFT_BYZ_SEED=N PBFT_BYZ_STRATEGY=name PBFT_BYZ_N=4 cargo test -p pbft-core --test byzantine -- byz_replay --nocapture`
#[test]
fn byz_replay() {
    let Ok(seed) = std::env::var("PBFT_BYZ_SEED") else {
        return;
    };
    let seed: u64 = seed.parse().expect("PBFT_BYZ_SEED must be a number");
    let name = std::env::var("PBFT_BYZ_STRATEGY").expect("PBFT_BYZ_STRATEGY");
    let n: usize = std::env::var("PBFT_BYZ_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let result = match name.as_str() {
        "negative_equivocation" => negative_control_equivocation(seed).map_err(|v| v.to_string()),
        "negative_twins" => negative_control_twins(seed).map_err(|v| v.to_string()),
        _ => {
            assert!(
                STRATEGIES.contains(&name.trim_end_matches("_forever")),
                "unknown strategy {name}; one of {STRATEGIES:?}"
            );
            let outcome = run(&name, n, seed, true);
            eprintln!("faults stop at {} us", outcome.faults_until_us);
            for (id, view, executed) in &outcome.replicas {
                eprintln!("replica {id}: view {view}, last executed {executed}");
            }
            outcome.result
        }
    };
    eprintln!("{result:#?}");
    if name.starts_with("negative") {
        assert!(result.is_err(), "negative control not caught");
    } else {
        result.unwrap();
    }
}
