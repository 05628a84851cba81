//! `pbft-cluster`: the harness behind `cargo xtask cluster-test`,
//! `cargo xtask demo` and `cargo xtask bench`.

// mimalloc, as in pbft-node: the load generator allocates a few small
// buffers per request (operation, authenticators, reply routing), and
// glibc's malloc and free were about a seventh of its CPU at peak.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use pbft_cluster::bench::{bench, BenchOptions, Fanout, Rate};
use pbft_cluster::cluster::{Protocol, Runtime};
use pbft_cluster::demo::{demo, DemoOptions};
use pbft_cluster::report::{table, Verdict};
use pbft_cluster::runner::{run, RunOptions};
use pbft_cluster::scenario::{self, format_steps, parse_steps, Expect, Needs, Scenario};
use pbft_cluster::workload::WorkloadSpec;

/// Real-process cluster harness for pbft.
#[derive(Parser, Debug)]
#[command(name = "pbft-cluster", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run fault scenarios against real node processes, with a verdict each.
    ClusterTest(ClusterTestArgs),
    /// The demo: 4 replicas, a workload, the primary killed half way.
    Demo {
        /// The pbft-node binary.
        #[arg(long)]
        node_bin: PathBuf,
        /// Where the cluster goes.
        #[arg(long, default_value = "target/demo")]
        work_dir: PathBuf,
        /// Run time, seconds.
        #[arg(long, default_value_t = 45)]
        seconds: u64,
        /// Client identities running the workload.
        #[arg(long, default_value_t = 8)]
        clients: usize,
    },
    /// The throughput/latency sweep.
    Bench(BenchArgs),
}

#[derive(clap::Args, Debug)]
struct ClusterTestArgs {
    /// The pbft-node binary.
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Run every scenario with MAC authenticators (`request_auth = "macs"`),
    /// not only the `-macs` variants.
    #[arg(long)]
    macs: bool,
    /// A scenario, a comma-separated list, `ci` (default) or `all`; repeatable.
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
    /// Steps of an ad-hoc scenario named `custom` (see --list for the language).
    #[arg(long)]
    steps: Option<String>,
    /// Replicas.
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    /// Workload clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Seed (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// How long each fault is held, seconds (`hold` in the steps).
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Bound on each replica's peak resident memory, MiB.
    #[arg(long, default_value_t = 512)]
    rss_max_mib: u64,
    /// Bound on the time from the end of the faults to progress, seconds.
    #[arg(long, default_value_t = 30)]
    progress_max: u64,
    /// Where each scenario's testnet and logs go.
    #[arg(long, default_value = "target/cluster-test")]
    work_dir: PathBuf,
    /// Keep the logs of passing scenarios too.
    #[arg(long)]
    keep_logs: bool,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// A pbft-node built with `--features byzantine`: enables the byz-* scenarios.
    #[arg(long)]
    byzantine_node_bin: Option<PathBuf>,
    /// Run every replica in a container of this image (needs a Docker
    /// engine; `cargo xtask cluster-test --docker` builds the image).
    #[arg(long)]
    docker_image: Option<String>,
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// The pbft-node binary.
    #[arg(long)]
    node_bin: PathBuf,
    /// A short sweep (3 points per series, 3 s windows).
    #[arg(long)]
    quick: bool,
    /// Client counts (comma-separated).
    #[arg(long, value_delimiter = ',')]
    clients: Option<Vec<usize>>,
    /// Batch sizes, `batch_requests_max` (comma-separated).
    #[arg(long, value_delimiter = ',')]
    batches: Option<Vec<usize>>,
    /// Payload sizes in bytes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "64,1024")]
    payloads: Vec<usize>,
    /// Measurement window per point, seconds.
    #[arg(long)]
    window: Option<u64>,
    /// Durability: sync-every-write (default), group-commit, no-sync-benchmarks-only.
    #[arg(long)]
    durability: Option<String>,
    /// Threads per replica (`[runtime] worker_threads`; default: the node's, 1).
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Where clients send requests: `primary`, `all` replicas at once
    /// (backups then skip the signature check of requests they hold), or
    /// `auto`: all with signatures, the primary with MACs.
    #[arg(long, default_value = "auto")]
    fanout: String,
    /// Batches the primary keeps in flight (`pipeline_batches_max`; default:
    /// the node's, 1).
    #[arg(long)]
    pipeline: Option<u64>,
    /// How long the primary holds a partial batch open, microseconds
    /// (`batch_delay_us_max`; default: the node's, 1000).
    #[arg(long)]
    batch_delay_us: Option<u64>,
    /// Request authentication, each a series: `signatures`, `macs`.
    #[arg(long, value_delimiter = ',', default_value = "signatures,macs")]
    auth: Vec<String>,
    /// Requests each client keeps outstanding (`requests_in_flight_max`;
    /// comma-separated, each value a series): 1 is the classic closed loop.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    in_flight: Vec<usize>,
    /// Checkpoint interval `K` (default: the node's, 128); the window is `2K`.
    #[arg(long)]
    checkpoint_interval: Option<u64>,
    /// Distinct keys each closed loop writes (the state, which every
    /// checkpoint snapshots whole, is at most loops x keys x payload).
    #[arg(long, default_value_t = 16)]
    keys_per_loop: u64,
    /// Where the clusters go.
    #[arg(long, default_value = "target/bench/run")]
    work_dir: PathBuf,
    /// Where the CSV and plot go.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
    /// How the binaries were built (shown in the table and plot).
    #[arg(long, default_value = "release")]
    build: String,
    /// Open-loop points, after the closed-loop ones of each series:
    /// offered rates, each requests/s (`24000`) or a percentage of the
    /// series' closed-loop peak in this run (`50%`); comma-separated.
    #[arg(long, value_delimiter = ',')]
    rate: Vec<Rate>,
    /// Clients that share each open-loop rate (each may have 64 requests
    /// outstanding).
    #[arg(long, default_value_t = 16)]
    open_clients: usize,
    /// Only the open-loop points (`--rate` must then be absolute).
    #[arg(long)]
    no_closed_loop: bool,
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    // The bench's load generator shares the 2 cores with the replicas: one
    // thread, no cross-thread wake-ups (PBFT_BENCH_LOADGEN_THREADS=2 to
    // compare).
    let bench = std::env::args().nth(1).as_deref() == Some("bench");
    let threads = std::env::var("PBFT_BENCH_LOADGEN_THREADS")
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(1);
    if bench && threads <= 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pbft-cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Replicas run in process groups of their own: an interrupt of the
    // harness kills them (see pbft_cluster::supervise).
    pbft_cluster::supervise::watch_interrupts(&rt);
    match cli.command {
        Command::ClusterTest(args) => rt.block_on(cluster_test(args)),
        Command::Demo {
            node_bin,
            work_dir,
            seconds,
            clients,
        } => {
            let opts = DemoOptions {
                node_bin,
                work_dir,
                replicas: 4,
                clients,
                seconds,
                kill_at: seconds / 2,
                seed: clock_seed(),
            };
            match rt.block_on(demo(&opts)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Bench(args) => {
            let quick = args.quick;
            let opts = BenchOptions {
                node_bin: args.node_bin,
                work_dir: args.work_dir,
                out_dir: args.out_dir,
                replicas: 4,
                clients: args.clients.unwrap_or_else(|| {
                    if quick {
                        vec![1, 8, 32]
                    } else {
                        vec![1, 4, 16, 64, 128]
                    }
                }),
                batches: args.batches.unwrap_or_else(|| {
                    if quick {
                        vec![16, 256]
                    } else {
                        vec![1, 16, 64, 256, 1024]
                    }
                }),
                payloads: args.payloads,
                macs: {
                    let mut modes = Vec::new();
                    for a in &args.auth {
                        match a.as_str() {
                            "signatures" => modes.push(false),
                            "macs" => modes.push(true),
                            other => {
                                eprintln!("bench: --auth {other}: expected `signatures` or `macs`");
                                return ExitCode::FAILURE;
                            }
                        }
                    }
                    modes
                },
                warmup: Duration::from_secs(if quick { 1 } else { 5 }),
                window: Duration::from_secs(args.window.unwrap_or(if quick { 3 } else { 30 })),
                durability: args.durability,
                worker_threads: args.worker_threads,
                in_flight: args.in_flight,
                checkpoint_interval_seqs: args.checkpoint_interval,
                pipeline_batches: args.pipeline,
                batch_delay_us: args.batch_delay_us,
                keys_per_loop: args.keys_per_loop,
                fanout: match args.fanout.as_str() {
                    "all" => Fanout::All,
                    "primary" => Fanout::Primary,
                    "auto" => Fanout::Auto,
                    other => {
                        eprintln!("bench: --fanout {other}: expected `auto`, `primary` or `all`");
                        return ExitCode::FAILURE;
                    }
                },
                build: args.build,
                rates: args.rate,
                open_clients: args.open_clients,
                closed_loop: !args.no_closed_loop,
            };
            match rt.block_on(bench(&opts)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() ^ u64::from(d.subsec_micros()))
}

fn list() {
    println!("scenarios (FAULTS.md entries; * = in the CI set `ci`):");
    for s in scenario::catalog() {
        let needs = match s.needs {
            Needs::Nothing => "",
            Needs::ViewChange => " [needs view change]",
            Needs::ByzantineBuild => " [needs the byzantine node build: --byzantine]",
            Needs::Root => " [needs root: mounts a tmpfs]",
            Needs::Faketime => " [needs libfaketime (Debian: faketime) and local processes]",
        };
        let expect = if s.expect == Expect::Violation {
            " [negative control: must fail the checks]"
        } else {
            ""
        };
        let star = if scenario::CI_SET.contains(&s.name.as_str()) {
            "*"
        } else {
            " "
        };
        println!(
            "{star} {:<24} {:<8} {}{needs}{expect}\n    steps: {}",
            s.name,
            format!("{:?}", s.faults),
            s.about,
            format_steps(&s.steps)
        );
    }
    println!(
        "\nstep language: wait 2s | hold | kill|start|term|pause|resume|wipe TARGET | restart-all | rolling | reverse\n\
         | isolate TARGET | isolate-replicas TARGET | split K | cut FROM TO | link all|clients|FROM TO loss=P dup=P delay=MS jitter=MS\n\
         | heal | garbage N | slow-client start|stop | dup-put | dup-replay | twins-split | impostors\n\
         | byzantine STRATEGY TARGET;  TARGET: primary | backupK | rK | random | same"
    );
}

async fn cluster_test(args: ClusterTestArgs) -> ExitCode {
    if args.list {
        list();
        return ExitCode::SUCCESS;
    }
    if let Some(image) = &args.docker_image {
        match pbft_cluster::cluster::docker_engine() {
            Err(e) => {
                eprintln!(
                    "cluster-test --docker: no Docker engine is usable on this machine ({e}); \
                     nothing was run. Run without --docker to use local processes behind the \
                     fault proxy."
                );
                return ExitCode::FAILURE;
            }
            Ok(version) => println!(
                "cluster-test: replicas run in containers of {image} (Docker engine {version})"
            ),
        }
    }
    let Some(node_bin) = args.node_bin.clone() else {
        eprintln!("cluster-test: --node-bin is required (cargo xtask cluster-test passes it)");
        return ExitCode::FAILURE;
    };
    let mut scenarios: Vec<Scenario> = if args.steps.is_some() && args.scenarios.is_empty() {
        Vec::new()
    } else {
        match scenario::select(&args.scenarios) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cluster-test: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    if let Some(text) = &args.steps {
        match parse_steps(text) {
            Ok(steps) => scenarios.push(Scenario {
                name: "custom".into(),
                faults: Vec::new(),
                about: "steps from --steps".into(),
                needs: Needs::Nothing,
                expect: Expect::Pass,
                steps,
                macs: args.macs,
            }),
            Err(e) => {
                eprintln!("cluster-test: --steps: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let seed = args.seed.unwrap_or_else(clock_seed);
    let work_dir = if args.work_dir.is_absolute() {
        args.work_dir.clone()
    } else {
        std::env::current_dir()
            .map(|d| d.join(&args.work_dir))
            .unwrap_or_else(|_| args.work_dir.clone())
    };
    let opts = RunOptions {
        node_bin,
        work_dir,
        replicas: args.replicas,
        clients: args.clients.max(2),
        seed,
        duration: Duration::from_secs(args.duration),
        rss_max_mib: args.rss_max_mib,
        progress_max: Duration::from_secs(args.progress_max),
        keep_logs: args.keep_logs,
        protocol: Protocol {
            macs: args.macs,
            ..Protocol::scenarios()
        },
        workload: WorkloadSpec::default(),
        byzantine_node_bin: args.byzantine_node_bin.clone(),
        runtime: args
            .docker_image
            .clone()
            .map_or(Runtime::Process, |image| Runtime::Docker { image }),
    };
    println!(
        "cluster-test: {} scenario(s), {} replicas, seed {seed}, hold {} s, work dir {}",
        scenarios.len(),
        opts.replicas,
        args.duration,
        opts.work_dir.display()
    );
    let mut reports = Vec::new();
    for s in &scenarios {
        eprintln!("== {}: {}", s.name, s.about);
        let r = run(s, &opts).await;
        eprintln!("{}", pbft_cluster::report::row(&r));
        if !r.checked.is_empty() {
            eprintln!("  checked: {}", r.checked.join("; "));
        }
        reports.push(r);
    }
    println!("\n{}", table(&reports, opts.replicas, args.duration));
    let bad = reports.iter().filter(|r| !r.verdict.is_ok()).count();
    let unavailable = reports
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Unavailable(_)))
        .count();
    println!(
        "cluster-test: {} passed, {} failed{}",
        reports.len() - bad,
        bad,
        if unavailable > 0 {
            format!(" ({unavailable} unavailable on this build)")
        } else {
            String::new()
        }
    );
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
