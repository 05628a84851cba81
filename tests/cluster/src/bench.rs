//! `cargo xtask bench`: closed-loop clients against a 4-replica loopback
//! cluster, sweeping batch size, request size and number of clients, and
//! open-loop points at fixed offered rates (BENCH.md: where latency turns
//! up); prints a table, writes a CSV and a throughput-latency plot (SVG).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pbft_client::Client;
use pbft_core::KvOp;

use crate::cluster::{Cluster, ClusterOptions, Protocol, Runtime};
use crate::metrics::{cpu_ticks, ticks_per_second};
use crate::{err, Result};

/// The sweep.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The `pbft-node` binary.
    pub node_bin: PathBuf,
    /// Where the clusters go.
    pub work_dir: PathBuf,
    /// Where the CSV and the plot go.
    pub out_dir: PathBuf,
    /// Replicas.
    pub replicas: usize,
    /// Numbers of closed-loop clients.
    pub clients: Vec<usize>,
    /// `batch_requests_max` values.
    pub batches: Vec<usize>,
    /// Request payload sizes, bytes.
    pub payloads: Vec<usize>,
    /// Request authentication modes, each a series: `false` signatures,
    /// `true` MAC authenticators.
    pub macs: Vec<bool>,
    /// Warm-up before each window.
    pub warmup: Duration,
    /// Measurement window.
    pub window: Duration,
    /// `[storage] durability` (none: sync every write).
    pub durability: Option<String>,
    /// `[runtime] worker_threads` (none: the node's default).
    pub worker_threads: Option<usize>,
    /// Where clients send each request.
    pub fanout: Fanout,
    /// Requests outstanding per client (each value a series).
    pub in_flight: Vec<usize>,
    /// `pipeline_batches_max` (none: the node's default).
    pub pipeline_batches: Option<u64>,
    /// `batch_delay_us_max` (none: the node's default).
    pub batch_delay_us: Option<u64>,
    /// `K` (none: the node's default); the log window is `2K`.
    pub checkpoint_interval_seqs: Option<u64>,
    /// Distinct keys each closed loop writes, round robin: the replicated
    /// state holds at most loops x keys x payload bytes, and a checkpoint
    /// snapshots all of it.
    pub keys_per_loop: u64,
    /// How the binaries were built (for the table).
    pub build: String,
    /// Open-loop points measured after the closed-loop ones, for each
    /// series (auth, batch, payload).
    pub rates: Vec<Rate>,
    /// Clients that share an open-loop rate, each with up to
    /// [`pbft_client::REQUESTS_IN_FLIGHT_MAX`] requests outstanding.
    pub open_clients: usize,
    /// Skip the closed-loop points (then every rate must be absolute).
    pub closed_loop: bool,
}

/// An open-loop offered load.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    /// Requests per second, across the open-loop clients.
    PerSecond(f64),
    /// This percentage of the highest closed-loop throughput measured in
    /// the same series (same auth, batch and payload) in this run.
    PercentOfPeak(f64),
}

impl std::str::FromStr for Rate {
    type Err = String;

    /// `24000` (requests/s) or `50%` (of the series' closed-loop peak).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || {
            format!("rate `{s}`: expected requests/s (`24000`) or a percentage of the peak (`50%`)")
        };
        let (number, percent) = match s.strip_suffix('%') {
            Some(n) => (n, true),
            None => (s, false),
        };
        let v: f64 = number.trim().parse().map_err(|_| bad())?;
        if !v.is_finite() || v <= 0.0 || (percent && v > 1000.0) {
            return Err(bad());
        }
        Ok(if percent {
            Self::PercentOfPeak(v)
        } else {
            Self::PerSecond(v)
        })
    }
}

/// Requests an open-loop client may have outstanding beyond which the
/// generator drops what falls due (and counts it as an error): an offered
/// rate above capacity must not grow the generator's memory without bound.
pub const OPEN_LOOP_PENDING_PER_CLIENT_MAX: usize = 4096;

/// Where the bench's clients send requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fanout {
    /// To the primary only.
    Primary,
    /// To every replica (backups then hold the requests themselves).
    All,
    /// The faster for each mode: all replicas with signatures (backups
    /// skip the check of requests they hold), the primary with MACs (a
    /// backup checks its MAC entry in the batch for a fraction of a
    /// microsecond; three more messages per request cost more).
    Auto,
}

impl Fanout {
    fn to_all(self, macs: bool) -> bool {
        match self {
            Self::Primary => false,
            Self::All => true,
            Self::Auto => !macs,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Primary => "the primary",
            Self::All => "all replicas",
            Self::Auto => "all replicas (signatures) or the primary (MACs)",
        }
    }
}

/// One measured point.
#[derive(Clone, Debug)]
pub struct Point {
    /// Requests authenticated with MACs (else signatures).
    pub macs: bool,
    /// Batch size.
    pub batch: usize,
    /// Payload bytes.
    pub payload: usize,
    /// Clients.
    pub clients: usize,
    /// Requests each client keeps outstanding (closed loop), or may have
    /// outstanding (open loop).
    pub in_flight: usize,
    /// Open loop: the offered rate, requests/s (none: closed loop).
    pub offered_rps: Option<f64>,
    /// Completed requests per second.
    pub throughput: f64,
    /// Latency p50, ms.
    pub p50_ms: f64,
    /// Latency p99, ms.
    pub p99_ms: f64,
    /// Requests that failed in the window.
    pub errors: u64,
    /// CPU of the load generator, % of one core.
    pub loadgen_cpu: f64,
    /// CPU of all replicas, % of one core.
    pub nodes_cpu: f64,
}

impl Point {
    /// `macs` or `signatures`.
    #[must_use]
    pub fn auth_name(&self) -> &'static str {
        if self.macs {
            "macs"
        } else {
            "signatures"
        }
    }

    /// The load generator's share of the CPU used.
    #[must_use]
    pub fn loadgen_share(&self) -> f64 {
        let total = self.loadgen_cpu + self.nodes_cpu;
        if total > 0.0 {
            100.0 * self.loadgen_cpu / total
        } else {
            0.0
        }
    }
}

/// The CSV header.
pub const CSV_HEADER: &str = "auth,batch,payload_bytes,clients,in_flight,offered_rps,throughput_rps,p50_ms,p99_ms,errors,loadgen_cpu_pct,nodes_cpu_pct,loadgen_share_pct";

/// One CSV line.
#[must_use]
pub fn csv_line(p: &Point) -> String {
    format!(
        "{},{},{},{},{},{},{:.1},{:.3},{:.3},{},{:.1},{:.1},{:.1}",
        p.auth_name(),
        p.batch,
        p.payload,
        p.clients,
        p.in_flight,
        p.offered_rps
            .map_or_else(String::new, |r| format!("{r:.0}")),
        p.throughput,
        p.p50_ms,
        p.p99_ms,
        p.errors,
        p.loadgen_cpu,
        p.nodes_cpu,
        p.loadgen_share()
    )
}

fn table_line(p: &Point) -> String {
    format!(
        "{:>10} {:>6} {:>8} {:>8} {:>9} {:>9} {:>11.0} {:>9.2} {:>9.2} {:>7} {:>9.0}% {:>9.0}% {:>7.1}%",
        p.auth_name(),
        p.batch,
        p.payload,
        p.clients,
        p.in_flight,
        p.offered_rps.map_or_else(|| "closed".to_owned(), |r| format!("{r:.0}")),
        p.throughput,
        p.p50_ms,
        p.p99_ms,
        p.errors,
        p.loadgen_cpu,
        p.nodes_cpu,
        p.loadgen_share()
    )
}

fn table_header() -> String {
    format!(
        "{:>10} {:>6} {:>8} {:>8} {:>9} {:>9} {:>11} {:>9} {:>9} {:>7} {:>10} {:>10} {:>8}",
        "auth",
        "batch",
        "payload",
        "clients",
        "in-flight",
        "offered",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "loadgen",
        "replicas",
        "lg share"
    )
}

/// Runs the sweep; returns the points.
///
/// # Errors
/// When a cluster cannot start or the files cannot be written.
pub async fn bench(opts: &BenchOptions) -> Result<Vec<Point>> {
    std::fs::create_dir_all(&opts.out_dir)?;
    if !opts.closed_loop
        && opts
            .rates
            .iter()
            .any(|r| matches!(r, Rate::PercentOfPeak(_)))
    {
        return Err(err(
            "a rate in percent of the peak needs the closed-loop points (drop --no-closed-loop)",
        ));
    }
    let closed_clients = if opts.closed_loop {
        opts.clients.iter().copied().max().unwrap_or(1)
    } else {
        0
    };
    let open_clients = if opts.rates.is_empty() {
        0
    } else {
        opts.open_clients.max(1)
    };
    let max_clients = closed_clients.max(open_clients).max(1);
    let in_flight_max =
        opts.in_flight
            .iter()
            .copied()
            .max()
            .unwrap_or(1)
            .max(if open_clients > 0 {
                pbft_client::REQUESTS_IN_FLIGHT_MAX
            } else {
                1
            });
    let tps = ticks_per_second() as f64;
    let defaults = Protocol::node_defaults();
    let pipeline_batches_max = opts
        .pipeline_batches
        .unwrap_or(defaults.pipeline_batches_max);
    let batch_delay_us_max = opts.batch_delay_us.unwrap_or(defaults.batch_delay_us_max);
    println!(
        "bench: {} replicas on loopback, {} build, durability {}, {} worker thread(s) per replica, pipeline {}, batch delay {} us, clients sending to {}, {} keys per loop; warm-up {:.0} s, window {:.0} s per point",
        opts.replicas,
        opts.build,
        opts.durability.as_deref().unwrap_or("sync-every-write (default)"),
        opts.worker_threads.map_or_else(|| "1 (default)".to_owned(), |n| n.to_string()),
        pipeline_batches_max,
        batch_delay_us_max,
        opts.fanout.describe(),
        opts.keys_per_loop,
        opts.warmup.as_secs_f64(),
        opts.window.as_secs_f64()
    );
    println!("{}", table_header());
    let mut points = Vec::new();
    let k = opts
        .checkpoint_interval_seqs
        .unwrap_or(defaults.checkpoint_interval_seqs);
    for (&macs, &batch) in opts
        .macs
        .iter()
        .flat_map(|m| opts.batches.iter().map(move |b| (m, b)))
    {
        let dir = opts.work_dir.join(format!("batch-{batch}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cluster = Cluster::create(ClusterOptions {
            node_bin: opts.node_bin.clone(),
            dir: dir.clone(),
            replicas: opts.replicas,
            clients: max_clients,
            proxy: false,
            protocol: Protocol {
                batch_requests_max: batch as u64,
                checkpoint_interval_seqs: k,
                log_window_seqs: 2 * k,
                macs,
                pipeline_batches_max,
                batch_delay_us_max,
                ..defaults.clone()
            },
            durability: opts.durability.clone(),
            worker_threads: opts.worker_threads,
            rust_log: "warn".into(),
            seed: batch as u64,
            byzantine_node_bin: None,
            runtime: Runtime::Process,
            faketime: false,
        })?;
        cluster.start_all()?;
        let mut clients = Vec::new();
        for j in 0..max_clients {
            let mut config = cluster.client_config(j)?;
            config.request_timeout_ms = 10_000;
            config.send_to_all_replicas = opts.fanout.to_all(macs);
            config.requests_in_flight_max = in_flight_max;
            let c = Client::connect(config)
                .await
                .map_err(|e| err(format!("client {j}: {e}")))?;
            clients.push(Arc::new(c));
        }
        for c in &clients {
            if !c.wait_connected(cluster.n(), Duration::from_secs(30)).await {
                return Err(err(format!(
                    "a client could not connect; logs:\n{}",
                    cluster.log_tail(10)
                )));
            }
        }
        for &payload in &opts.payloads {
            let mut peak: f64 = 0.0;
            if opts.closed_loop {
                for &in_flight in &opts.in_flight {
                    for &n_clients in &opts.clients {
                        let point = measure(
                            &cluster,
                            &clients[..n_clients],
                            in_flight,
                            (macs, batch, payload),
                            opts,
                            tps,
                        )
                        .await;
                        println!("{}", table_line(&point));
                        peak = peak.max(point.throughput);
                        points.push(point);
                    }
                }
            }
            for &rate in &opts.rates {
                let rps = match rate {
                    Rate::PerSecond(r) => r,
                    Rate::PercentOfPeak(pct) => peak * pct / 100.0,
                };
                if rps < 1.0 {
                    println!("bench: skipping {rate:?}: the closed-loop peak was {peak:.0} req/s");
                    continue;
                }
                let point = measure_open(
                    &cluster,
                    &clients[..open_clients],
                    rps,
                    (macs, batch, payload),
                    opts,
                    tps,
                )
                .await;
                println!("{}", table_line(&point));
                points.push(point);
            }
        }
        cluster.poll();
        for p in cluster.procs() {
            for e in &p.unexpected_exits {
                println!("bench: warning: {e}");
            }
        }
        cluster.kill_all();
        drop(cluster);
        let _ = std::fs::remove_dir_all(&dir);
        for c in clients {
            if let Ok(c) = Arc::try_unwrap(c) {
                c.shutdown().await;
            }
        }
    }
    let csv = opts.out_dir.join("bench.csv");
    let mut text = format!("{CSV_HEADER}\n");
    for p in &points {
        let _ = writeln!(text, "{}", csv_line(p));
    }
    std::fs::write(&csv, text)?;
    let svg = opts.out_dir.join("bench.svg");
    plot(&points, &svg, &opts.build)?;
    if let Some(best) = points
        .iter()
        .max_by(|a, b| a.throughput.total_cmp(&b.throughput))
    {
        println!(
            "bench: peak {:.0} req/s (batch {}, {} B, {} clients; p50 {:.2} ms, p99 {:.2} ms)",
            best.throughput, best.batch, best.payload, best.clients, best.p50_ms, best.p99_ms
        );
    }
    println!("bench: wrote {} and {}", csv.display(), svg.display());
    Ok(points)
}

/// One point: `in_flight` closed loops on each client (the client's
/// `requests_in_flight_max` lets that many be outstanding at once).
async fn measure(
    cluster: &Cluster,
    clients: &[Arc<Client>],
    in_flight: usize,
    (macs, batch, payload): (bool, usize, usize),
    opts: &BenchOptions,
    tps: f64,
) -> Point {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let keys_per_loop = opts.keys_per_loop.max(1);
    let loops: Vec<(String, Arc<Client>)> = clients
        .iter()
        .enumerate()
        .flat_map(|(c, client)| (0..in_flight).map(move |t| (format!("{c}.{t}"), client.clone())))
        .collect();
    let tasks: Vec<_> = loops
        .into_iter()
        .map(|(c, client)| {
            let stop = stop.clone();
            let measuring = measuring.clone();
            tokio::spawn(async move {
                let mut lat_us: Vec<u32> = Vec::new();
                let mut errors = 0u64;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let op = KvOp::Put {
                        key: format!("b/{c}/{}", i % keys_per_loop).into_bytes(),
                        value: vec![b'v'; payload],
                    }
                    .encode();
                    i += 1;
                    let t = Instant::now();
                    let r = client.submit(op).await;
                    if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                        match r {
                            Ok(_) => lat_us
                                .push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX)),
                            Err(_) => errors += 1,
                        }
                    }
                }
                (lat_us, errors)
            })
        })
        .collect();
    let window = measure_window(cluster, opts, &measuring, tps).await;
    stop.store(true, Ordering::Relaxed);
    let secs = window.secs;
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            lat.extend(l);
            errors += e;
        }
    }
    lat.sort_unstable();
    let pct = |p: usize| percentile_ms(&lat, p);
    Point {
        macs,
        batch,
        payload,
        clients: clients.len(),
        in_flight,
        offered_rps: None,
        throughput: lat.len() as f64 / secs.max(1e-9),
        p50_ms: pct(50),
        p99_ms: pct(99),
        errors,
        loadgen_cpu: window.loadgen_cpu,
        nodes_cpu: window.nodes_cpu,
    }
}

/// The measured window of a point and the CPU used in it.
struct Window {
    secs: f64,
    /// % of one core.
    loadgen_cpu: f64,
    /// All replicas, % of one core.
    nodes_cpu: f64,
}

/// Waits out the warm-up, then sets `measuring` for the window and reads
/// the CPU ticks of the load generator and the replicas around it.
async fn measure_window(
    cluster: &Cluster,
    opts: &BenchOptions,
    measuring: &AtomicBool,
    tps: f64,
) -> Window {
    tokio::time::sleep(opts.warmup).await;
    let pids: Vec<u32> = cluster.procs().filter_map(|p| p.pid()).collect();
    let me = std::process::id();
    let node_ticks = |pids: &[u32]| pids.iter().filter_map(|p| cpu_ticks(*p)).sum::<u64>();
    let (self0, nodes0) = (cpu_ticks(me).unwrap_or(0), node_ticks(&pids));
    let t0 = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(opts.window).await;
    measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let (self1, nodes1) = (cpu_ticks(me).unwrap_or(0), node_ticks(&pids));
    let cpu = |ticks: u64| 100.0 * ticks as f64 / tps / secs.max(1e-9);
    Window {
        secs,
        loadgen_cpu: cpu(self1.saturating_sub(self0)),
        nodes_cpu: cpu(nodes1.saturating_sub(nodes0)),
    }
}

/// Latency percentiles, ms, of sorted microsecond samples.
fn percentile_ms(sorted_us: &[u32], pct: usize) -> f64 {
    sorted_us
        .get((sorted_us.len() * pct / 100).min(sorted_us.len().saturating_sub(1)))
        .map_or(0.0, |v| f64::from(*v) / 1000.0)
}

/// What an open-loop point collects.
#[derive(Default)]
struct OpenLoopTally {
    /// Latencies, us, of requests issued in the window.
    lat_us: Mutex<Vec<u32>>,
    /// Requests issued in the window that failed, or fell due while the
    /// client had [`OPEN_LOOP_PENDING_PER_CLIENT_MAX`] outstanding.
    errors: AtomicU64,
    /// How late the generator issued requests issued in the window, us.
    lag_us: Mutex<Vec<u32>>,
}

/// One open-loop point: the clients together issue `rps` requests per
/// second at fixed intervals, whether or not earlier ones have completed,
/// for the warm-up and the window. Latency runs from the moment a request
/// is handed to the client library (the generator wakes on tokio's
/// millisecond timer and then issues every request that has fallen due, so
/// arrivals come in small bursts); a request issued in the window counts
/// toward throughput when it completes, even after the window (waited for
/// up to the client's request timeout).
async fn measure_open(
    cluster: &Cluster,
    clients: &[Arc<Client>],
    rps: f64,
    (macs, batch, payload): (bool, usize, usize),
    opts: &BenchOptions,
    tps: f64,
) -> Point {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(OpenLoopTally::default());
    let keys_per_loop = opts.keys_per_loop.max(1);
    let n_clients = clients.len().max(1);
    // Each client issues rps / n_clients; their schedules are staggered.
    let period = Duration::from_secs_f64(n_clients as f64 / rps);
    let start = Instant::now();
    let generators: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(c, client)| {
            let (stop, measuring, tally, client) = (
                stop.clone(),
                measuring.clone(),
                tally.clone(),
                client.clone(),
            );
            let first = start + period.mul_f64(c as f64 / n_clients as f64);
            tokio::spawn(async move {
                let pending = Arc::new(AtomicUsize::new(0));
                let mut tasks = tokio::task::JoinSet::new();
                let mut k: u32 = 0;
                let mut key = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep_until((first + period * k).into()).await;
                    let now = Instant::now();
                    while first + period * k <= now {
                        let due = first + period * k;
                        k = k.saturating_add(1);
                        let counted = measuring.load(Ordering::Relaxed);
                        if pending.load(Ordering::Relaxed) >= OPEN_LOOP_PENDING_PER_CLIENT_MAX {
                            if counted {
                                tally.errors.fetch_add(1, Ordering::Relaxed);
                            }
                            continue;
                        }
                        if counted {
                            let lag = u32::try_from(now.duration_since(due).as_micros())
                                .unwrap_or(u32::MAX);
                            tally
                                .lag_us
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push(lag);
                        }
                        let op = KvOp::Put {
                            key: format!("o/{c}/{}", key % keys_per_loop).into_bytes(),
                            value: vec![b'v'; payload],
                        }
                        .encode();
                        key += 1;
                        pending.fetch_add(1, Ordering::Relaxed);
                        let (client, tally, pending) =
                            (client.clone(), tally.clone(), pending.clone());
                        tasks.spawn(async move {
                            let t = Instant::now();
                            let r = client.submit(op).await;
                            pending.fetch_sub(1, Ordering::Relaxed);
                            if counted {
                                match r {
                                    Ok(_) => tally
                                        .lat_us
                                        .lock()
                                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                                        .push(
                                            u32::try_from(t.elapsed().as_micros())
                                                .unwrap_or(u32::MAX),
                                        ),
                                    Err(_) => {
                                        tally.errors.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                        });
                    }
                    // Reap finished requests so the set stays small.
                    while tasks.try_join_next().is_some() {}
                }
                while tasks.join_next().await.is_some() {}
            })
        })
        .collect();
    let window = measure_window(cluster, opts, &measuring, tps).await;
    stop.store(true, Ordering::Relaxed);
    let secs = window.secs;
    for g in generators {
        let _ = g.await;
    }
    let take = |m: &Mutex<Vec<u32>>| {
        let mut v =
            std::mem::take(&mut *m.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        v.sort_unstable();
        v
    };
    let lat = take(&tally.lat_us);
    let lag = take(&tally.lag_us);
    let lag_p99 = percentile_ms(&lag, 99);
    if lag_p99 > 2.0 {
        println!(
            "bench: warning: the load generator issued requests up to {lag_p99:.1} ms late (p99) at {rps:.0} req/s: it is short of CPU, so the offered rate is not what was asked"
        );
    }
    Point {
        macs,
        batch,
        payload,
        clients: clients.len(),
        in_flight: pbft_client::REQUESTS_IN_FLIGHT_MAX,
        offered_rps: Some(rps),
        throughput: lat.len() as f64 / secs.max(1e-9),
        p50_ms: percentile_ms(&lat, 50),
        p99_ms: percentile_ms(&lat, 99),
        errors: tally.errors.load(Ordering::Relaxed),
        loadgen_cpu: window.loadgen_cpu,
        nodes_cpu: window.nodes_cpu,
    }
}

/// Writes the throughput-latency plot: p50 latency against throughput, one
/// line per (batch size, payload), points in order of clients.
///
/// # Errors
/// When the file cannot be written.
pub fn plot(points: &[Point], path: &std::path::Path, build: &str) -> Result<()> {
    use plotters::prelude::*;
    let e = |e: &dyn std::fmt::Display| err(format!("plot: {e}"));
    let series = plot_series(points);
    let plotted = || series.iter().flat_map(|s| s.xy.iter().copied());
    let xmax = plotted().map(|(x, _)| x).fold(1.0, f64::max) * 1.1;
    // Latency spans two or three decades across a sweep (1 ms alone, 100 ms
    // and more past saturation): a log axis keeps the low points apart.
    let ymin = plotted().map(|(_, y)| y).fold(f64::INFINITY, f64::min);
    let ymin = if ymin.is_finite() { ymin * 0.8 } else { 0.1 };
    let ymax = plotted().map(|(_, y)| y).fold(ymin * 10.0, f64::max) * 1.25;
    // The legend beside the chart has a row per series; a full sweep has
    // 40 or more, so the picture grows to hold them.
    let row_px: u32 = 18;
    let legend_px = u32::try_from(series.len())
        .unwrap_or(u32::MAX)
        .saturating_mul(row_px)
        .saturating_add(80);
    let root = SVGBackend::new(path, (1280, legend_px.max(660))).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (left, right) = root.split_horizontally(900);
    let mut chart = ChartBuilder::on(&left)
        .caption(
            format!("pbft: throughput vs p50 latency, 4 replicas on loopback ({build})"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, (ymin..ymax).log_scale())
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("throughput (requests/s)")
        .y_desc("p50 latency (ms, log scale)")
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()
        .map_err(|x| e(&x))?;
    for (i, s) in series.iter().enumerate() {
        let (color, marker) = plot_style(i);
        chart
            .draw_series(LineSeries::new(s.xy.clone(), color.stroke_width(2)))
            .map_err(|x| e(&x))?;
        for &at in &s.xy {
            draw_marker(chart.plotting_area(), marker, at, color)?;
        }
    }
    // The legend beside the chart, one row per series, so that it never
    // hides a point.
    let mut y: i32 = 60;
    for (i, s) in series.iter().enumerate() {
        let (color, marker) = plot_style(i);
        right
            .draw(&PathElement::new(
                vec![(5, y), (35, y)],
                color.stroke_width(2),
            ))
            .map_err(|x| e(&x))?;
        draw_marker(&right, marker, (20, y), color)?;
        right
            .draw(&Text::new(
                s.label.clone(),
                (42, y - 6),
                ("sans-serif", 13).into_font(),
            ))
            .map_err(|x| e(&x))?;
        y = y.saturating_add_unsigned(row_px);
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// One line of the plot: its legend label and its points in load order.
struct PlotSeries {
    label: String,
    xy: Vec<(f64, f64)>,
}

/// One series per (auth, batch, payload, in-flight) with the closed-loop
/// points in order of clients, and the open-loop points of the same
/// series apart, in order of offered rate.
fn plot_series(points: &[Point]) -> Vec<PlotSeries> {
    let mut keys: Vec<(bool, usize, usize, usize, bool)> = points
        .iter()
        .map(|p| {
            (
                p.macs,
                p.batch,
                p.payload,
                p.in_flight,
                p.offered_rps.is_some(),
            )
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .map(|(macs, batch, payload, in_flight, open)| {
            let mut pts: Vec<&Point> = points
                .iter()
                .filter(|p| {
                    p.macs == macs
                        && p.batch == batch
                        && p.payload == payload
                        && p.in_flight == in_flight
                        && p.offered_rps.is_some() == open
                })
                .collect();
            pts.sort_by(|a, b| {
                a.offered_rps
                    .unwrap_or(0.0)
                    .total_cmp(&b.offered_rps.unwrap_or(0.0))
                    .then(a.clients.cmp(&b.clients))
            });
            let load = if open {
                "open loop".to_owned()
            } else {
                format!("{in_flight} in flight")
            };
            PlotSeries {
                label: format!(
                    "{}, batch {batch}, {payload} B, {load}",
                    if macs { "MACs" } else { "signatures" }
                ),
                xy: pts
                    .iter()
                    .map(|p| (p.throughput, p.p50_ms.max(1e-3)))
                    .collect(),
            }
        })
        .collect()
}

/// Strong colours that stay apart on white (Tableau 10).
const PLOT_COLORS: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Series `i`'s colour and marker: ten colours, then the next marker shape.
fn plot_style(i: usize) -> (plotters::style::RGBColor, usize) {
    let (r, g, b) = PLOT_COLORS[i % PLOT_COLORS.len()];
    (
        plotters::style::RGBColor(r, g, b),
        i / PLOT_COLORS.len() % 4,
    )
}

/// Draws a point marker, a circle, triangle, cross or square, on `area`
/// (the chart's plotting area, or the legend beside it).
fn draw_marker<DB, CT>(
    area: &plotters::drawing::DrawingArea<DB, CT>,
    shape: usize,
    at: CT::From,
    color: plotters::style::RGBColor,
) -> Result<()>
where
    DB: plotters::prelude::DrawingBackend,
    CT: plotters::coord::CoordTranslate,
    CT::From: Clone,
{
    use plotters::prelude::*;
    let style = color.filled();
    match shape {
        0 => area.draw(&Circle::new(at, 4, style)),
        1 => area.draw(&TriangleMarker::new(at, 5, style)),
        2 => area.draw(&Cross::new(at, 4, color.stroke_width(2))),
        _ => area.draw(&(EmptyElement::at(at) + Rectangle::new([(-3, -3), (3, 3)], style))),
    }
    .map_err(|x| err(format!("plot: {x}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn point(clients: usize, throughput: f64) -> Point {
        Point {
            macs: true,
            batch: 16,
            payload: 64,
            clients,
            in_flight: 1,
            offered_rps: None,
            throughput,
            p50_ms: 1.5,
            p99_ms: 4.0,
            errors: 0,
            loadgen_cpu: 20.0,
            nodes_cpu: 180.0,
        }
    }

    #[test]
    fn csv_and_plot() {
        let p = point(4, 1234.5);
        assert!((p.loadgen_share() - 10.0).abs() < 1e-9);
        assert_eq!(
            csv_line(&p),
            "macs,16,64,4,1,,1234.5,1.500,4.000,0,20.0,180.0,10.0"
        );
        let open = Point {
            offered_rps: Some(1500.0),
            in_flight: 64,
            ..point(16, 1490.0)
        };
        assert_eq!(
            csv_line(&open),
            "macs,16,64,16,64,1500,1490.0,1.500,4.000,0,20.0,180.0,10.0"
        );
        assert_eq!(
            CSV_HEADER.split(',').count(),
            csv_line(&p).split(',').count()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.svg");
        plot(
            &[point(1, 500.0), p, point(16, 3000.0), open],
            &path,
            "test",
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        assert!(svg.contains("batch 16, 64 B, 1 in flight"));
        assert!(svg.contains("batch 16, 64 B, open loop"));
        // A full sweep's legend (a row per series) fits: the picture grows.
        let many: Vec<Point> = (1..=50)
            .map(|batch| Point {
                batch,
                ..point(1, 100.0 * batch as f64)
            })
            .collect();
        plot(&many, &path, "test").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(
            svg.contains(r#"height="980""#),
            "{}",
            &svg[..200.min(svg.len())]
        );
        assert!(svg.contains("batch 50, 64 B, 1 in flight"));
    }

    #[test]
    fn rates_parse() {
        assert_eq!("24000".parse::<Rate>(), Ok(Rate::PerSecond(24000.0)));
        assert_eq!("50%".parse::<Rate>(), Ok(Rate::PercentOfPeak(50.0)));
        assert_eq!(
            " 12.5 %".trim().parse::<Rate>(),
            Ok(Rate::PercentOfPeak(12.5))
        );
        for bad in ["", "%", "-5", "0", "0%", "abc", "5000%", "NaN", "inf"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn percentiles() {
        assert!((percentile_ms(&[], 50) - 0.0).abs() < 1e-12);
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert!((percentile_ms(&v, 50) - 51.0).abs() < 1e-12);
        assert!((percentile_ms(&v, 99) - 100.0).abs() < 1e-12);
        assert!((percentile_ms(&[7000], 99) - 7.0).abs() < 1e-12);
    }
}
