//! `cargo xtask demo`: a 4-replica cluster on loopback, a key-value
//! workload through `pbft-client`, the primary killed half way, the view
//! change, continued progress, and a summary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pbft_client::Client;

use crate::cluster::{Cluster, ClusterOptions, Protocol, Runtime};
use crate::workload::{latency_ms, Recorder, Workload, WorkloadSpec};
use crate::{err, Result};

/// How to run the demo.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The `pbft-node` binary.
    pub node_bin: PathBuf,
    /// Where the cluster goes.
    pub work_dir: PathBuf,
    /// Replicas.
    pub replicas: usize,
    /// Clients.
    pub clients: usize,
    /// Total run time.
    pub seconds: u64,
    /// When the primary is killed.
    pub kill_at: u64,
    /// Seed (cluster id, workload).
    pub seed: u64,
}

/// What the demo measured.
#[derive(Clone, Debug, Default)]
pub struct DemoSummary {
    /// Operations committed (acknowledged by f + 1 replicas).
    pub ok: u64,
    /// Operations that failed or timed out.
    pub not_ok: u64,
    /// Throughput over the run, operations per second.
    pub throughput: f64,
    /// Latency p50 / p99, ms (whole run).
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// The view at the end.
    pub view: u64,
    /// The stable checkpoint at the end.
    pub stable_seq: u64,
    /// The last executed sequence number.
    pub executed_seq: u64,
    /// Seconds from the kill to a new view on a quorum of replicas.
    pub view_change_s: Option<f64>,
    /// Operations committed after the kill.
    pub ok_after_kill: u64,
}

/// Runs the demo, printing as it goes.
///
/// # Errors
/// When the cluster cannot start, or it made no progress after the kill.
pub async fn demo(opts: &DemoOptions) -> Result<DemoSummary> {
    let _ = std::fs::remove_dir_all(&opts.work_dir);
    println!(
        "demo: generating a {}-replica cluster with fresh keys and certificates in {}",
        opts.replicas,
        opts.work_dir.display()
    );
    let mut cluster = Cluster::create(ClusterOptions {
        node_bin: opts.node_bin.clone(),
        dir: opts.work_dir.clone(),
        replicas: opts.replicas,
        clients: opts.clients,
        proxy: false,
        protocol: Protocol::node_defaults(),
        durability: None,
        worker_threads: None,
        rust_log: "info".into(),
        seed: opts.seed,
        byzantine_node_bin: None,
        runtime: Runtime::Process,
        faketime: false,
    })?;
    let n = cluster.n();
    println!(
        "demo: n = {n}, f = {}, quorum {}, view-change timeout {} ms; starting {n} pbft-node processes",
        cluster.config.f(),
        cluster.config.quorum(),
        cluster.opts.protocol.view_change_timeout_ms
    );
    cluster.start_all()?;
    let mut clients = Vec::new();
    for j in 0..opts.clients {
        let mut config = cluster.client_config(j)?;
        config.request_timeout_ms = 15_000;
        config.retransmit_timeout_ms = 300;
        let c = Client::connect(config)
            .await
            .map_err(|e| err(format!("client {j}: {e}")))?;
        clients.push(Arc::new(c));
    }
    for c in &clients {
        if !c.wait_connected(n, Duration::from_secs(30)).await {
            return Err(err(format!(
                "clients could not connect to every replica; logs:\n{}",
                cluster.log_tail(10)
            )));
        }
    }
    println!(
        "demo: {} clients connected; running a key-value workload (put/get/delete) for {} s, killing the primary at {} s",
        opts.clients, opts.seconds, opts.kill_at
    );
    let recorder = Arc::new(Recorder::new());
    let mut workload = Workload::start(
        clients,
        recorder.clone(),
        &WorkloadSpec {
            hot_keys: 256,
            think: Duration::ZERO,
            value_pad: 32,
            seed: opts.seed,
        },
    );
    let started = Instant::now();
    let mut summary = DemoSummary::default();
    let mut killed: Option<(usize, u64, Instant, u64)> = None;
    let mut restarted = false;
    let mut last_ok = 0;
    let mut kill_us = 0;
    for second in 1..=opts.seconds {
        tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
        cluster.poll();
        let all = cluster.all_metrics().await;
        let (ok, _, _) = recorder.counts();
        let live: Vec<_> = all.iter().flatten().collect();
        let view = live.iter().map(|m| m.int("pbft_view")).max().unwrap_or(0);
        let exec = live
            .iter()
            .map(|m| m.int("pbft_last_executed_seq"))
            .max()
            .unwrap_or(0);
        let stable = live
            .iter()
            .map(|m| m.int("pbft_stable_checkpoint_seq"))
            .max()
            .unwrap_or(0);
        let primary = cluster.primary().await;
        println!(
            "t={second:>3}s  ops {ok:>7} (+{:>5}/s)  view {view}  primary {}  executed seq {exec:>6}  stable checkpoint {stable:>6}  replicas up {}/{n}",
            ok - last_ok,
            primary.map_or_else(|| "?".into(), |(p, _)| format!("r{p}")),
            cluster.nodes.iter().filter(|p| p.is_running()).count()
        );
        last_ok = ok;
        if second == opts.kill_at && killed.is_none() {
            let (p, v) = primary.unwrap_or((0, 0));
            println!("demo: kill -9 of the primary r{p} (view {v})");
            cluster.kill(p)?;
            kill_us = recorder.now_us();
            killed = Some((p, v, Instant::now(), ok));
        }
        if let Some((p, v, at, _)) = killed {
            if summary.view_change_s.is_none() {
                // A quorum of the live replicas in a later view.
                let moved = live.iter().filter(|m| m.int("pbft_view") > v).count();
                if moved >= cluster.config.quorum().min(n - 1) {
                    let s = at.elapsed().as_secs_f64();
                    summary.view_change_s = Some(s);
                    println!(
                        "demo: VIEW CHANGE: view {v} -> {view}, new primary {} ({s:.1} s after the kill)",
                        primary.map_or_else(|| "?".into(), |(p, _)| format!("r{p}"))
                    );
                }
            }
            if !restarted && at.elapsed() >= Duration::from_secs(10) {
                println!("demo: restarting r{p} from its store; it catches up as a backup");
                cluster.start(p)?;
                restarted = true;
            }
        }
    }
    workload.stop().await;
    let history = recorder.history();
    let (ok, failed, unknown) = recorder.counts();
    let secs = started.elapsed().as_secs_f64();
    let (_, p50, p99) = latency_ms(&history, 0, u64::MAX);
    let all = cluster.all_metrics().await;
    summary.ok = ok;
    summary.not_ok = failed + unknown;
    summary.throughput = ok as f64 / secs.max(1e-9);
    summary.p50_ms = p50;
    summary.p99_ms = p99;
    summary.view = all
        .iter()
        .flatten()
        .map(|m| m.int("pbft_view"))
        .max()
        .unwrap_or(0);
    summary.stable_seq = all
        .iter()
        .flatten()
        .map(|m| m.int("pbft_stable_checkpoint_seq"))
        .max()
        .unwrap_or(0);
    summary.executed_seq = all
        .iter()
        .flatten()
        .map(|m| m.int("pbft_last_executed_seq"))
        .max()
        .unwrap_or(0);
    summary.ok_after_kill = killed.map_or(0, |(_, _, _, before)| ok - before);
    let (n_before, p50_before, p99_before) = latency_ms(&history, 0, kill_us);
    let (n_after, p50_after, p99_after) = latency_ms(&history, kill_us, u64::MAX);
    println!("\n== demo summary");
    println!("  operations committed   {ok} ({failed} failed, {unknown} timed out)");
    println!(
        "  throughput             {:.0} ops/s over {secs:.0} s",
        summary.throughput
    );
    println!("  latency                p50 {p50:.2} ms, p99 {p99:.2} ms");
    println!(
        "    before the kill      p50 {p50_before:.2} ms, p99 {p99_before:.2} ms ({n_before} ops)"
    );
    println!(
        "    after the kill       p50 {p50_after:.2} ms, p99 {p99_after:.2} ms ({n_after} ops, view change included)"
    );
    println!(
        "  view                   {} (view change {})",
        summary.view,
        summary
            .view_change_s
            .map_or_else(|| "NOT SEEN".into(), |s| format!("{s:.1} s after the kill"))
    );
    println!(
        "  sequence numbers       executed {}, stable checkpoint {}",
        summary.executed_seq, summary.stable_seq
    );
    println!("  committed after kill   {}", summary.ok_after_kill);
    for (i, m) in all.iter().enumerate() {
        let state = m.as_ref().map_or_else(
            || "not answering".to_owned(),
            |m| {
                format!(
                    "view {}, executed {}, stable checkpoint {}",
                    m.int("pbft_view"),
                    m.int("pbft_last_executed_seq"),
                    m.int("pbft_stable_checkpoint_seq")
                )
            },
        );
        let restarted = if killed.is_some_and(|(p, ..)| p == i) {
            " (the killed primary, restarted)"
        } else {
            ""
        };
        println!("  replica {i}              {state}{restarted}");
    }
    cluster.kill_all();
    if summary.view_change_s.is_none() || summary.ok_after_kill == 0 {
        println!("  logs in {}", cluster.logs.display());
        return Err(err(
            "no view change or no progress after the primary was killed (does this build have the view change?)",
        ));
    }
    let _ = std::fs::remove_dir_all(&opts.work_dir);
    Ok(summary)
}
