//! The node's TOML files: the cluster file shared by every replica and
//! client, a replica's node file and a client's file. Every struct refuses
//! unknown fields, and [`NodeConfig::load`] checks everything an operator can
//! get wrong before the node starts.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pbft_crypto::SecretKey;
use pbft_types::{
    ClientEntry, ClientId, ClusterConfig, ClusterId, PublicKeyBytes, ReplicaEntry, ReplicaId,
};
use serde::{Deserialize, Serialize};

use crate::error::NodeError;

/// The cluster file: who the replicas and clients are.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// The cluster's id; every signature and message carries it. Below 2^63
    /// (TOML integers are signed).
    pub cluster_id: u64,
    /// Optional: the number of Byzantine faults the operator expects to
    /// tolerate. When given it must match `(n - 1) / 3` and `n >= 3f + 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f: Option<usize>,
    /// The replicas.
    pub replicas: Vec<ReplicaFileEntry>,
    /// The clients allowed to submit requests.
    #[serde(default)]
    pub clients: Vec<ClientFileEntry>,
}

/// A replica in the cluster file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaFileEntry {
    /// Its id, `0..n`.
    pub id: u32,
    /// Its ed25519 public key, 64 hexadecimal characters.
    pub public_key: String,
    /// Where it listens, `host:port`.
    pub address: String,
}

/// A client in the cluster file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFileEntry {
    /// Its id.
    pub id: u64,
    /// Its ed25519 public key, 64 hexadecimal characters.
    pub public_key: String,
}

impl ClusterFile {
    /// Reads and validates a cluster file.
    pub fn load(path: &Path) -> Result<ClusterConfig, NodeError> {
        let file: ClusterFile = read_toml(path)?;
        file.to_config(path)
    }

    /// Converts to a validated [`ClusterConfig`].
    pub fn to_config(&self, path: &Path) -> Result<ClusterConfig, NodeError> {
        let key = |what: String, hex: &str| {
            PublicKeyBytes::from_hex(hex).ok_or_else(|| NodeError::Invalid {
                path: path.to_owned(),
                field: what,
                reason: "not 64 hexadecimal characters".into(),
            })
        };
        let replicas = self
            .replicas
            .iter()
            .map(|r| {
                Ok(ReplicaEntry {
                    id: ReplicaId(r.id),
                    public_key: key(format!("replicas[id = {}].public_key", r.id), &r.public_key)?,
                    address: r.address.clone(),
                })
            })
            .collect::<Result<Vec<_>, NodeError>>()?;
        let clients = self
            .clients
            .iter()
            .map(|c| {
                Ok(ClientEntry {
                    id: ClientId(c.id),
                    public_key: key(format!("clients[id = {}].public_key", c.id), &c.public_key)?,
                })
            })
            .collect::<Result<Vec<_>, NodeError>>()?;
        let config = ClusterConfig {
            cluster_id: ClusterId(self.cluster_id),
            replicas,
            clients,
        }
        .validated()
        .map_err(|source| NodeError::Cluster {
            path: path.to_owned(),
            source,
        })?;
        if let Some(f) = self.f {
            let n = config.n();
            if n < 3 * f + 1 {
                return Err(NodeError::Invalid {
                    path: path.to_owned(),
                    field: "f".into(),
                    reason: format!(
                        "{n} replicas cannot tolerate f = {f} Byzantine faults: that needs n >= 3f + 1 = {}",
                        3 * f + 1
                    ),
                });
            }
            if f != config.f() {
                return Err(NodeError::Invalid {
                    path: path.to_owned(),
                    field: "f".into(),
                    reason: format!(
                        "{n} replicas tolerate f = {} (the quorums are sized for it); set f = {} or remove the field",
                        config.f(),
                        config.f()
                    ),
                });
            }
        }
        Ok(config)
    }

    /// The file form of a configuration.
    #[must_use]
    pub fn from_config(config: &ClusterConfig) -> Self {
        Self {
            cluster_id: config.cluster_id.0,
            f: Some(config.f()),
            replicas: config
                .replicas
                .iter()
                .map(|r| ReplicaFileEntry {
                    id: r.id.0,
                    public_key: r.public_key.to_hex(),
                    address: r.address.clone(),
                })
                .collect(),
            clients: config
                .clients
                .iter()
                .map(|c| ClientFileEntry {
                    id: c.id.0,
                    public_key: c.public_key.to_hex(),
                })
                .collect(),
        }
    }
}

/// How the store makes writes durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// Every write is synced before anything depending on it is sent. The
    /// persists that queue while a sync runs are written (and synced)
    /// together as one atomic write.
    #[default]
    SyncEveryWrite,
    /// Several protocol steps share one sync, still before anything that
    /// depends on them is sent.
    GroupCommit,
    /// No sync at all: a crash may lose promises. For benchmarks only.
    NoSyncBenchmarksOnly,
}

/// How replicas authenticate client requests (`[protocol] request_auth`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestAuthSetting {
    /// Clients sign every request (ed25519): no client can stall the
    /// primary with a request some backups cannot check.
    #[default]
    Signatures,
    /// Clients may authenticate requests with one MAC per replica (TOCS
    /// 3.2), as well as sign them: several times the throughput, at the
    /// price that a Byzantine client can stall a batch until a view change
    /// (see `pbft_core::RequestAuth::Macs`).
    Macs,
}

/// How a client authenticates its requests (`authentication` in its file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuthSetting {
    /// An ed25519 signature per request.
    #[default]
    Signature,
    /// One MAC per replica; needs replicas with `request_auth = "macs"`.
    Macs,
}

/// Protocol parameters an operator may tune.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolSection {
    /// `K`: a checkpoint every this many sequence numbers.
    pub checkpoint_interval_seqs: u64,
    /// `L`: the log window above the low watermark, a multiple of `K`.
    pub log_window_seqs: u64,
    /// Batches the primary keeps in flight. 1 (the default) lets requests
    /// gather while a batch is ordered: on 2 cores with all replicas on one
    /// host it gave both more peak throughput and lower latency at half of
    /// peak than 2 or 8 (`pbft-cluster bench --pipeline`, README). Raise
    /// it when the round trip between hosts, not the CPU, bounds
    /// throughput.
    pub pipeline_batches_max: usize,
    /// Requests in one batch at most.
    pub batch_requests_max: usize,
    /// How long the primary waits to fill a batch (not at all when no
    /// batch is in flight).
    pub batch_delay_us_max: u64,
    /// Base view-change timeout; it doubles on each successive view change.
    pub view_change_timeout_ms: u64,
    /// How client requests are authenticated; every replica of a cluster
    /// must use the same setting.
    pub request_auth: RequestAuthSetting,
}

impl Default for ProtocolSection {
    fn default() -> Self {
        Self {
            checkpoint_interval_seqs: 128,
            log_window_seqs: 256,
            pipeline_batches_max: 1,
            batch_requests_max: 256,
            batch_delay_us_max: 1_000,
            view_change_timeout_ms: 1_000,
            request_auth: RequestAuthSetting::Signatures,
        }
    }
}

/// Storage settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// How writes are made durable.
    pub durability: Durability,
}

/// A replica's node file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// This replica's id in the cluster file.
    pub id: u32,
    /// The cluster file, relative to this file.
    pub cluster_file: PathBuf,
    /// The ed25519 secret key file (mode 0600), relative to this file.
    pub key_file: PathBuf,
    /// The data directory (the RocksDB log), relative to this file.
    pub data_dir: PathBuf,
    /// Where to listen; defaults to this replica's address in the cluster file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Where to serve Prometheus metrics (`/metrics`); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// Protocol parameters.
    #[serde(default)]
    pub protocol: ProtocolSection,
    /// Storage settings.
    #[serde(default)]
    pub storage: StorageSection,
    /// Threads.
    #[serde(default)]
    pub runtime: RuntimeSection,
}

/// How many threads run the replica.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSection {
    /// Threads that run the protocol and the network: 1 (the default) runs
    /// them all on one thread, which avoids cross-thread wake-ups (each
    /// costs about as much as a protocol step); more uses a work-stealing
    /// pool. The storage thread comes on top.
    pub worker_threads: usize,
}

/// Worker threads accepted at most.
pub const WORKER_THREADS_MAX: usize = 64;

impl Default for RuntimeSection {
    fn default() -> Self {
        Self { worker_threads: 1 }
    }
}

/// A loaded and checked replica configuration.
#[derive(Debug)]
pub struct NodeConfig {
    /// This replica.
    pub id: ReplicaId,
    /// The cluster.
    pub cluster: ClusterConfig,
    /// The identity key.
    pub key: SecretKey,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The UDP address to bind.
    pub listen: SocketAddr,
    /// The metrics address.
    pub metrics_listen: Option<SocketAddr>,
    /// Protocol parameters.
    pub protocol: ProtocolSection,
    /// Storage settings.
    pub storage: StorageSection,
    /// Threads.
    pub runtime: RuntimeSection,
}

impl NodeConfig {
    /// Reads the node file and everything it names, and checks it all.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let file: NodeFile = read_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let cluster = ClusterFile::load(&base.join(&file.cluster_file))?;
        let id = ReplicaId(file.id);
        let me = cluster.replica(id).ok_or_else(|| NodeError::Invalid {
            path: path.to_owned(),
            field: "id".into(),
            reason: format!(
                "replica {id} is not in the cluster file ({} replicas)",
                cluster.n()
            ),
        })?;
        let key = SecretKey::read_pem_file(&base.join(&file.key_file))?;
        if key.public_key() != me.public_key {
            return Err(NodeError::Invalid {
                path: path.to_owned(),
                field: "key_file".into(),
                reason: format!(
                    "the key's public half {} is not replica {id}'s key in the cluster file",
                    key.public_key().to_hex()
                ),
            });
        }
        let listen_text = file.listen.clone().unwrap_or_else(|| me.address.clone());
        let listen = parse_socket_addr(path, "listen", &listen_text)?;
        let metrics_listen = file
            .metrics_listen
            .as_deref()
            .map(|m| parse_socket_addr(path, "metrics_listen", m))
            .transpose()?;
        let p = &file.protocol;
        let invalid = |field: &str, reason: String| NodeError::Invalid {
            path: path.to_owned(),
            field: format!("protocol.{field}"),
            reason,
        };
        if p.checkpoint_interval_seqs == 0 {
            return Err(invalid(
                "checkpoint_interval_seqs",
                "must be at least 1".into(),
            ));
        }
        if p.log_window_seqs < p.checkpoint_interval_seqs
            || p.log_window_seqs % p.checkpoint_interval_seqs != 0
        {
            return Err(invalid(
                "log_window_seqs",
                format!(
                    "must be a multiple of checkpoint_interval_seqs ({}), e.g. {}",
                    p.checkpoint_interval_seqs,
                    2 * p.checkpoint_interval_seqs
                ),
            ));
        }
        if p.batch_requests_max == 0 || p.pipeline_batches_max == 0 || p.view_change_timeout_ms == 0
        {
            return Err(invalid(
                "batch_requests_max",
                "batch_requests_max, pipeline_batches_max and view_change_timeout_ms must be at least 1".into(),
            ));
        }
        if !(1..=WORKER_THREADS_MAX).contains(&file.runtime.worker_threads) {
            return Err(NodeError::Invalid {
                path: path.to_owned(),
                field: "runtime.worker_threads".into(),
                reason: format!("must be between 1 and {WORKER_THREADS_MAX}"),
            });
        }
        Ok(Self {
            id,
            cluster,
            key,
            data_dir: base.join(&file.data_dir),
            listen,
            metrics_listen,
            protocol: file.protocol,
            storage: file.storage,
            runtime: file.runtime,
        })
    }
}

/// A client's file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    /// This client's id in the cluster file.
    pub id: u64,
    /// The cluster file, relative to this file.
    pub cluster_file: PathBuf,
    /// The ed25519 secret key file (mode 0600), relative to this file.
    pub key_file: PathBuf,
    /// Give up on a request after this long.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Send a request to every replica when no quorum answered in this long.
    #[serde(default = "default_retransmit_timeout_ms")]
    pub retransmit_timeout_ms: u64,
    /// Send every request to all replicas at once (backups then need not
    /// check its signature); default: to the primary only.
    #[serde(default)]
    pub send_to_all_replicas: bool,
    /// `signature` (default) or `macs` (the replicas must accept MACs).
    #[serde(default)]
    pub authentication: ClientAuthSetting,
}

fn default_request_timeout_ms() -> u64 {
    10_000
}
fn default_retransmit_timeout_ms() -> u64 {
    500
}

/// A loaded and checked client configuration.
#[derive(Debug)]
pub struct ClientSettings {
    /// This client.
    pub id: ClientId,
    /// The cluster.
    pub cluster: ClusterConfig,
    /// The identity key.
    pub key: SecretKey,
    /// See [`ClientFile::request_timeout_ms`].
    pub request_timeout_ms: u64,
    /// See [`ClientFile::retransmit_timeout_ms`].
    pub retransmit_timeout_ms: u64,
    /// See [`ClientFile::send_to_all_replicas`].
    pub send_to_all_replicas: bool,
    /// See [`ClientFile::authentication`].
    pub authentication: ClientAuthSetting,
}

impl ClientSettings {
    /// Reads the client file and everything it names, and checks it all.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let file: ClientFile = read_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let cluster = ClusterFile::load(&base.join(&file.cluster_file))?;
        let id = ClientId(file.id);
        let me = cluster.client(id).ok_or_else(|| NodeError::Invalid {
            path: path.to_owned(),
            field: "id".into(),
            reason: format!("client {id} is not in the cluster file"),
        })?;
        let key = SecretKey::read_pem_file(&base.join(&file.key_file))?;
        if key.public_key() != me.public_key {
            return Err(NodeError::Invalid {
                path: path.to_owned(),
                field: "key_file".into(),
                reason: format!("the key is not client {id}'s key in the cluster file"),
            });
        }
        Ok(Self {
            id,
            cluster,
            key,
            request_timeout_ms: file.request_timeout_ms,
            retransmit_timeout_ms: file.retransmit_timeout_ms,
            send_to_all_replicas: file.send_to_all_replicas,
            authentication: file.authentication,
        })
    }
}

fn parse_socket_addr(path: &Path, field: &str, text: &str) -> Result<SocketAddr, NodeError> {
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| NodeError::Invalid {
            path: path.to_owned(),
            field: field.into(),
            reason: format!("{text:?} is not an address (host:port)"),
        })
}

/// Reads a TOML file into `T`, with the file name in every error.
pub fn read_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, NodeError> {
    let text = fs::read_to_string(path).map_err(|source| NodeError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| NodeError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}
