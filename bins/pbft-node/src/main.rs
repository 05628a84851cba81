//! `pbft-node`: the replica daemon and its operator commands.

// mimalloc instead of glibc malloc: a replica allocates and frees a few
// small buffers per request (decode, batch, reply), and malloc/free were
// ~6% of replica CPU at peak. Measured: +5% peak throughput (median of 5
// alternating runs, 46.9k vs 44.7k req/s; see the commit).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use pbft_node::{client_cmd, config, error, run, testnet};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A PBFT replica and the commands to set one up.
#[derive(Parser, Debug)]
#[command(name = "pbft-node", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a new identity: ed25519 secret key (mode 0600), public key and
    /// TLS certificate, in DIR.
    Keygen {
        /// Where to write identity.key, identity.pub and identity.crt.
        #[arg(long)]
        out: PathBuf,
        /// The name in the certificate (for logs; peers are known by key).
        #[arg(long, default_value = "pbft-node")]
        name: String,
    },
    /// Make a whole cluster on one host: cluster.toml, replica-i/ and
    /// client-j/ directories with configs and identities.
    Testnet {
        /// Number of replicas (n = 3f + 1 tolerates f Byzantine replicas).
        #[arg(long, default_value_t = 4)]
        replicas: usize,
        /// Number of client identities.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Host the replicas listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Replica i listens on UDP port base-port + i.
        #[arg(long, default_value_t = 7000)]
        base_port: u16,
        /// Replica i serves metrics on metrics-base-port + i (0: off).
        #[arg(long, default_value_t = 9100)]
        metrics_base_port: u16,
        /// The cluster id (default: random).
        #[arg(long)]
        cluster_id: Option<u64>,
        /// For containers: name replica i by this host name template, with
        /// {i} replaced by i (e.g. 'replica-{i}'); every replica then uses
        /// port base-port and metrics-base-port and listens on 0.0.0.0.
        #[arg(long, value_name = "TEMPLATE")]
        host_template: Option<String>,
        /// data_dir in every node.toml (relative to it, or absolute, e.g.
        /// /data in a container).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// How requests are authenticated: 'signatures' (clients sign every
        /// request) or 'macs' (clients send one MAC per replica: faster; a
        /// Byzantine client can then stall a batch until a view change).
        #[arg(long, default_value = "signatures", value_parser = ["signatures", "macs"])]
        request_auth: String,
    },
    /// Run a replica until SIGTERM.
    Run {
        /// The replica's node.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Key-value operations against a running cluster, through pbft-client.
    Client {
        /// The client's client.toml.
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        action: ClientAction,
    },
    /// Check a replica's node file (and the cluster file and key it names),
    /// or a client's file, and report the first problem.
    CheckConfig {
        /// A replica's node.toml.
        #[arg(long, conflicts_with = "client", required_unless_present = "client")]
        config: Option<PathBuf>,
        /// A client's client.toml.
        #[arg(long)]
        client: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ClientAction {
    /// Set KEY to VALUE.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Read KEY (ordered through the protocol).
    Get {
        /// The key.
        key: String,
    },
    /// Remove KEY.
    Delete {
        /// The key.
        key: String,
    },
    /// A closed-loop load: OPS puts, one at a time, with latency percentiles.
    Load {
        /// Number of puts.
        #[arg(long, default_value_t = 1000)]
        ops: u64,
        /// Bytes per value.
        #[arg(long, default_value_t = 64)]
        value_bytes: usize,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime, error::NodeError> {
    runtime_with(2)
}

/// One thread: a current-thread runtime (no cross-thread wake-ups); more:
/// a work-stealing pool.
fn runtime_with(worker_threads: usize) -> Result<tokio::runtime::Runtime, error::NodeError> {
    let mut builder = if worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(worker_threads);
        b
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| error::NodeError::Other(format!("starting the runtime: {e}")))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run { config } => config::NodeConfig::load(&config)
            .and_then(|c| runtime_with(c.runtime.worker_threads)?.block_on(run::run(c))),
        Command::Client { config, action } => config::ClientSettings::load(&config).and_then(|c| {
            let action = match action {
                ClientAction::Put { key, value } => client_cmd::Action::Put { key, value },
                ClientAction::Get { key } => client_cmd::Action::Get { key },
                ClientAction::Delete { key } => client_cmd::Action::Delete { key },
                ClientAction::Load { ops, value_bytes } => {
                    client_cmd::Action::Load { ops, value_bytes }
                }
            };
            runtime()?.block_on(client_cmd::run(c, action))
        }),
        Command::Keygen { out, name } => testnet::keygen(&out, &name).map(|key| {
            println!(
                "wrote {}/{{identity.key,identity.pub,identity.crt}}",
                out.display()
            );
            println!("public key: {}", key.public_key().to_hex());
        }),
        Command::Testnet {
            replicas,
            clients,
            out,
            host,
            base_port,
            metrics_base_port,
            cluster_id,
            host_template,
            data_dir,
            request_auth,
        } => {
            let spec = testnet::TestnetSpec {
                replicas,
                clients,
                out: out.clone(),
                host,
                base_port,
                metrics_base_port,
                cluster_id: cluster_id.unwrap_or_else(random_cluster_id),
                host_template,
                data_dir,
                request_auth: if request_auth == "macs" {
                    config::RequestAuthSetting::Macs
                } else {
                    config::RequestAuthSetting::Signatures
                },
            };
            testnet::testnet(&spec).map(|cluster| {
                println!(
                    "wrote a cluster of {} replicas (f = {}, quorum {}) and {} clients to {}",
                    cluster.n(),
                    cluster.f(),
                    cluster.quorum(),
                    cluster.clients.len(),
                    out.display()
                );
            })
        }
        Command::CheckConfig { config, client } => check_config(config, client),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pbft-node: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(node: Option<PathBuf>, client: Option<PathBuf>) -> Result<(), error::NodeError> {
    if let Some(path) = node {
        let c = config::NodeConfig::load(&path)?;
        println!(
            "{}: replica {} of {} (f = {}, quorum {}), listen {}, data {}, metrics {}, durability {:?}",
            path.display(),
            c.id,
            c.cluster.n(),
            c.cluster.f(),
            c.cluster.quorum(),
            c.listen,
            c.data_dir.display(),
            c.metrics_listen.map_or_else(|| "off".to_owned(), |a| a.to_string()),
            c.storage.durability,
        );
        println!(
            "protocol: K = {}, L = {}, pipeline {}, batch {} requests / {} us, view-change timeout {} ms",
            c.protocol.checkpoint_interval_seqs,
            c.protocol.log_window_seqs,
            c.protocol.pipeline_batches_max,
            c.protocol.batch_requests_max,
            c.protocol.batch_delay_us_max,
            c.protocol.view_change_timeout_ms,
        );
        println!(
            "identity key {} matches the cluster file",
            c.key.public_key().to_hex()
        );
    }
    if let Some(path) = client {
        let c = config::ClientSettings::load(&path)?;
        println!(
            "{}: client {} of a cluster of {} replicas (reply quorum {}), key {}, timeouts: retransmit {} ms, request {} ms",
            path.display(),
            c.id,
            c.cluster.n(),
            c.cluster.reply_quorum(),
            c.key.public_key().to_hex(),
            c.retransmit_timeout_ms,
            c.request_timeout_ms,
        );
    }
    Ok(())
}

fn random_cluster_id() -> u64 {
    // The id only has to differ between clusters; the key of a fresh
    // identity is as good a random source as any.
    let key = pbft_crypto::SecretKey::generate().public_key();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&key.0[..8]);
    // TOML integers are signed 64-bit: keep the id below 2^63.
    u64::from_le_bytes(bytes) >> 1
}
