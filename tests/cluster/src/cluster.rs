//! The process supervisor: a testnet made by `pbft-node testnet`, real
//! `pbft-node run` processes, and the faults a process can suffer.

use std::fs;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use pbft_client::ClientConfig;
use pbft_crypto::SecretKey;
use pbft_types::{
    ClientEntry, ClientId, ClusterConfig, ClusterId, PublicKeyBytes, ReplicaEntry, ReplicaId,
};

use crate::metrics::{rss_kib, scrape, Metrics};
use crate::proxy::{FaultProxy, Source};
use crate::rng::Rng;
use crate::supervise::Supervised;
use crate::{err, Result};

/// Protocol parameters written into every node file (`[protocol]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protocol {
    /// `K`.
    pub checkpoint_interval_seqs: u64,
    /// `L`, a multiple of `K`.
    pub log_window_seqs: u64,
    /// Batches in flight.
    pub pipeline_batches_max: u64,
    /// Requests per batch.
    pub batch_requests_max: u64,
    /// Batch timeout.
    pub batch_delay_us_max: u64,
    /// Base view-change timeout.
    pub view_change_timeout_ms: u64,
    /// `request_auth`: replicas accept MAC authenticators, and the
    /// harness's clients use them.
    pub macs: bool,
}

impl Protocol {
    /// The node's defaults (as `pbft-node testnet` writes them).
    #[must_use]
    pub fn node_defaults() -> Self {
        Self {
            checkpoint_interval_seqs: 128,
            log_window_seqs: 256,
            pipeline_batches_max: 1,
            batch_requests_max: 256,
            batch_delay_us_max: 1_000,
            view_change_timeout_ms: 1_000,
            macs: false,
        }
    }

    /// For fault scenarios: frequent checkpoints (so that lagging replicas
    /// need state transfer and digests are compared often).
    #[must_use]
    pub fn scenarios() -> Self {
        Self {
            checkpoint_interval_seqs: 16,
            log_window_seqs: 64,
            ..Self::node_defaults()
        }
    }
}

/// What cluster to make.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The `pbft-node` binary.
    pub node_bin: PathBuf,
    /// Where the testnet, the stores and the logs go.
    pub dir: PathBuf,
    /// Replicas.
    pub replicas: usize,
    /// Client identities.
    pub clients: usize,
    /// Put the fault proxy between everyone and every replica.
    pub proxy: bool,
    /// Protocol parameters.
    pub protocol: Protocol,
    /// `[storage] durability` (none: the node's default, sync every write).
    pub durability: Option<String>,
    /// `[runtime] worker_threads` (none: the node's default, one thread).
    pub worker_threads: Option<usize>,
    /// `RUST_LOG` of the nodes.
    pub rust_log: String,
    /// Seeds the ports, the cluster id and the proxy.
    pub seed: u64,
    /// A `pbft-node` built with the `byzantine` feature, for replicas
    /// started with [`Cluster::make_byzantine`].
    pub byzantine_node_bin: Option<PathBuf>,
    /// Where the replicas run.
    pub runtime: Runtime,
    /// Preload libfaketime into every replica process, with its wall-clock
    /// offset in `replica-i/faketime` ([`Cluster::clock_step`]).
    pub faketime: bool,
}

/// libfaketime's multi-threaded build, where Debian's `faketime` package
/// puts it.
#[must_use]
pub fn faketime_lib() -> Option<PathBuf> {
    let dir = Path::new("/usr/lib");
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.is_file())
}

/// Where replica processes run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Runtime {
    /// Child processes of the harness.
    #[default]
    Process,
    /// One container per replica process, from this image (`cargo xtask
    /// image`: the node binary and its shared libraries, `FROM scratch`).
    /// The testnet directory is mounted at its own path, so node files,
    /// keys and stores are where they are for processes; containers share
    /// the host's network namespace, so the fault proxy sees each replica's
    /// source address as it does for processes. Kill is `docker kill`,
    /// pause `docker pause` (the cgroup freezer), SIGTERM `docker kill
    /// --signal TERM`; memory is read from the container's main process.
    Docker {
        /// The image tag.
        image: String,
    },
}

/// The environment variable that makes a `byzantine` build misbehave
/// (`bins/pbft-node/src/byzantine.rs`): `STRATEGY[:SECONDS]`.
pub const BYZANTINE_ENV: &str = "PBFT_BYZANTINE";

/// The log filter the scenarios run the nodes with: `info`, and the
/// checkpoint lines (with the state digest) of the node's main loop.
pub const SCENARIO_RUST_LOG: &str = "info,pbft_node::run=debug";

/// One `pbft-node run` process (a replica, or a twin copy of one).
#[derive(Debug)]
pub struct NodeProc {
    /// The replica id.
    pub replica: u32,
    /// 0 for the replica, 1 for its twin.
    pub copy: u8,
    /// Its node file.
    pub config: PathBuf,
    /// Its log (stderr, appended across restarts).
    pub log: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The address it binds.
    pub listen: SocketAddr,
    /// Its metrics endpoint.
    pub metrics: SocketAddr,
    child: Option<Supervised>,
    paused: bool,
    /// Exits the harness did not cause (crashes, panics), described.
    pub unexpected_exits: Vec<String>,
    /// Highest resident memory seen, KiB.
    pub peak_rss_kib: u64,
    /// Times started.
    pub starts: u32,
    /// The Byzantine strategy it runs (from the `byzantine` build), if any.
    pub byzantine: Option<String>,
    /// Its container's name ([`Runtime::Docker`]).
    pub container: Option<String>,
    /// While its store is on a small tmpfs ([`Cluster::fill_disk`]): where
    /// the store was moved aside. An exit is then expected, not a crash.
    pub full_disk: Option<PathBuf>,
    /// Exits the harness expected (a full disk), described.
    pub expected_exits: Vec<String>,
    /// The host pid of its container's main process, once known.
    host_pid: Option<u32>,
}

impl NodeProc {
    /// Its process id while it runs (in a container: the host pid of the
    /// container's main process, once known).
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        let child = self.child.as_ref()?;
        match &self.container {
            Some(_) => self.host_pid,
            None => Some(child.id()),
        }
    }

    /// Whether the process exists (it may be paused).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether it is stopped by SIGSTOP.
    #[must_use]
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether it is running and not paused.
    #[must_use]
    pub fn is_live(&self) -> bool {
        self.is_running() && !self.paused
    }

    fn label(&self) -> String {
        if self.copy == 0 {
            format!("replica {}", self.replica)
        } else {
            format!("replica {} (twin {})", self.replica, self.copy)
        }
    }
}

/// A running cluster. Dropping it kills every process.
#[derive(Debug)]
pub struct Cluster {
    /// How it was made.
    pub opts: ClusterOptions,
    /// The cluster file.
    pub config: ClusterConfig,
    /// The testnet directory (`cluster.toml`, `replica-i/`, `client-j/`).
    pub net: PathBuf,
    /// The logs directory.
    pub logs: PathBuf,
    /// Replicas, by id.
    pub nodes: Vec<NodeProc>,
    /// Twin copies, started by [`Cluster::add_twin`].
    pub twins: Vec<NodeProc>,
    /// The fault proxy, when on.
    pub proxy: Option<FaultProxy>,
    /// Client `j` binds `client_addrs[j]` (registered with the proxy).
    pub client_addrs: Vec<SocketAddr>,
    started: Instant,
}

/// UDP ports [`free_udp`] hands out: below Linux's ephemeral range
/// (32768-60999 by default) and the public range of [`port_ranges`].
const PRIVATE_UDP_PORTS: std::ops::Range<u16> = 10_000..20_000;

/// A free UDP port on loopback for a replica's private socket or a client,
/// which binds it later (a replica again at each restart). Not from port 0:
/// an ephemeral port handed out here may be handed out again, meanwhile,
/// to any socket bound to port 0 (the proxy's upstream sockets, a client's
/// endpoint), and the replica then fails to bind its own address while
/// the datagrams meant for it reach that socket (seen in CI: a replica's
/// "address in use", another refusing connections from its own identity).
/// Ports come from [`PRIVATE_UDP_PORTS`] in turn (none twice until the
/// range wraps), starting at an offset drawn from the process id so that
/// two harnesses on one machine rarely meet; one found bound is skipped.
fn free_udp() -> Result<SocketAddr> {
    static NEXT: Mutex<Option<u16>> = Mutex::new(None);
    let (lo, hi) = (PRIVATE_UDP_PORTS.start, PRIVATE_UDP_PORTS.end);
    let span = hi - lo;
    let offset = u16::try_from(std::process::id() % u32::from(span)).unwrap_or(0);
    let mut next = NEXT.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..span {
        let port = next.unwrap_or(lo + offset);
        *next = Some(if port + 1 >= hi { lo } else { port + 1 });
        if let Ok(socket) = UdpSocket::bind(("127.0.0.1", port)) {
            return Ok(socket.local_addr()?);
        }
    }
    Err(err(format!("no free UDP port on loopback in {lo}..{hi}")))
}

fn free_tcp() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// `count` consecutive ports free for UDP (the sockets, kept bound) and
/// `count` consecutive ports free for TCP.
fn port_ranges(count: usize, rng: &mut Rng) -> Result<(Vec<UdpSocket>, u16)> {
    let count16 = u16::try_from(count).map_err(|_| err("too many replicas"))?;
    for _ in 0..500 {
        // Below Linux's ephemeral range (32768-60999), where clients' and
        // scrapes' own ports come from.
        let base = 20_000 + rng.below(12_000) as u16;
        let udp: std::result::Result<Vec<UdpSocket>, _> = (0..count16)
            .map(|i| UdpSocket::bind(("127.0.0.1", base + i)))
            .collect();
        let Ok(udp) = udp else { continue };
        let metrics_base = 10_000 + rng.below(9_000) as u16;
        let tcp_free =
            (0..count16).all(|i| TcpListener::bind(("127.0.0.1", metrics_base + i)).is_ok());
        if tcp_free {
            return Ok((udp, metrics_base));
        }
    }
    Err(err("no free port range on loopback"))
}

fn edit_toml(path: &Path, edit: impl FnOnce(&mut toml::Table)) -> Result<()> {
    let text = fs::read_to_string(path)?;
    let mut table: toml::Table = text
        .parse()
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    edit(&mut table);
    let out = toml::to_string_pretty(&table).map_err(|e| err(e.to_string()))?;
    fs::write(path, out)?;
    Ok(())
}

/// Reads a cluster file (`cluster.toml` as `pbft-node testnet` writes it).
///
/// # Errors
/// When it cannot be read or is not a valid cluster.
pub fn load_cluster(path: &Path) -> Result<ClusterConfig> {
    let text = fs::read_to_string(path)?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    let bad = |what: &str| err(format!("{}: bad or missing {what}", path.display()));
    let cluster_id = table
        .get("cluster_id")
        .and_then(toml::Value::as_integer)
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| bad("cluster_id"))?;
    let key = |t: &toml::Table| {
        t.get("public_key")
            .and_then(toml::Value::as_str)
            .and_then(PublicKeyBytes::from_hex)
            .ok_or_else(|| bad("public_key"))
    };
    let id = |t: &toml::Table| {
        t.get("id")
            .and_then(toml::Value::as_integer)
            .ok_or_else(|| bad("id"))
    };
    let tables = |name: &str| -> Vec<toml::Table> {
        table
            .get(name)
            .and_then(toml::Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_table().cloned()).collect())
            .unwrap_or_default()
    };
    let mut replicas = Vec::new();
    for r in tables("replicas") {
        replicas.push(ReplicaEntry {
            id: ReplicaId(u32::try_from(id(&r)?).map_err(|_| bad("id"))?),
            public_key: key(&r)?,
            address: r
                .get("address")
                .and_then(toml::Value::as_str)
                .ok_or_else(|| bad("address"))?
                .to_owned(),
        });
    }
    let mut clients = Vec::new();
    for c in tables("clients") {
        clients.push(ClientEntry {
            id: ClientId(u64::try_from(id(&c)?).map_err(|_| bad("id"))?),
            public_key: key(&c)?,
        });
    }
    ClusterConfig {
        cluster_id: ClusterId(cluster_id),
        replicas,
        clients,
    }
    .validated()
    .map_err(|e| err(format!("{}: {e}", path.display())))
}

fn int(v: u64) -> toml::Value {
    toml::Value::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

impl Cluster {
    /// Generates the testnet and starts the proxy; no node runs yet (see
    /// [`Cluster::start_all`]). Must run in a Tokio runtime.
    ///
    /// # Errors
    /// When `pbft-node testnet` fails, or ports or files are unavailable.
    pub fn create(opts: ClusterOptions) -> Result<Self> {
        let mut rng = Rng::new(opts.seed).fork(0x706f_7274);
        // Ports are random so that concurrent runs do not collide; the
        // cluster id follows the seed.
        rng = rng.fork(u64::from(std::process::id()));
        let net = opts.dir.join("net");
        let logs = opts.dir.join("logs");
        fs::create_dir_all(&logs)?;
        let (public, metrics_base) = port_ranges(opts.replicas, &mut rng)?;
        let base_port = public[0].local_addr()?.port();
        let cluster_id = Rng::new(opts.seed).next_u64() >> 1;
        let out = Command::new(&opts.node_bin)
            .args(["testnet", "--replicas", &opts.replicas.to_string()])
            .args(["--clients", &opts.clients.to_string()])
            .args(["--base-port", &base_port.to_string()])
            .args(["--metrics-base-port", &metrics_base.to_string()])
            .args(["--cluster-id", &cluster_id.to_string()])
            .arg("--out")
            .arg(&net)
            .output()
            .map_err(|e| err(format!("running {}: {e}", opts.node_bin.display())))?;
        if !out.status.success() {
            return Err(err(format!(
                "pbft-node testnet failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let config = load_cluster(&net.join("cluster.toml"))?;
        let mut nodes = Vec::new();
        let mut targets = Vec::new();
        for (i, socket) in public.iter().enumerate() {
            let public_addr = socket.local_addr()?;
            let listen = if opts.proxy { free_udp()? } else { public_addr };
            targets.push(listen);
            let metrics: SocketAddr = format!("127.0.0.1:{}", usize::from(metrics_base) + i)
                .parse()
                .map_err(|_| err("metrics address"))?;
            let path = net.join(format!("replica-{i}/node.toml"));
            let protocol = opts.protocol.clone();
            let durability = opts.durability.clone();
            let worker_threads = opts.worker_threads;
            edit_toml(&path, |t| {
                t.insert("listen".into(), toml::Value::String(listen.to_string()));
                let mut p = toml::Table::new();
                p.insert(
                    "checkpoint_interval_seqs".into(),
                    int(protocol.checkpoint_interval_seqs),
                );
                p.insert("log_window_seqs".into(), int(protocol.log_window_seqs));
                p.insert(
                    "pipeline_batches_max".into(),
                    int(protocol.pipeline_batches_max),
                );
                p.insert(
                    "batch_requests_max".into(),
                    int(protocol.batch_requests_max),
                );
                p.insert(
                    "batch_delay_us_max".into(),
                    int(protocol.batch_delay_us_max),
                );
                p.insert(
                    "view_change_timeout_ms".into(),
                    int(protocol.view_change_timeout_ms),
                );
                let auth = if protocol.macs { "macs" } else { "signatures" };
                p.insert("request_auth".into(), toml::Value::String(auth.into()));
                t.insert("protocol".into(), toml::Value::Table(p));
                if let Some(d) = durability {
                    let mut s = toml::Table::new();
                    s.insert("durability".into(), toml::Value::String(d));
                    t.insert("storage".into(), toml::Value::Table(s));
                }
                if let Some(n) = worker_threads {
                    let mut r = toml::Table::new();
                    r.insert("worker_threads".into(), int(n as u64));
                    t.insert("runtime".into(), toml::Value::Table(r));
                }
            })?;
            nodes.push(NodeProc {
                replica: u32::try_from(i).map_err(|_| err("too many replicas"))?,
                copy: 0,
                data_dir: net.join(format!("replica-{i}/data")),
                config: path,
                log: logs.join(format!("replica-{i}.log")),
                listen,
                metrics,
                child: None,
                paused: false,
                unexpected_exits: Vec::new(),
                peak_rss_kib: 0,
                starts: 0,
                byzantine: None,
                container: container_name(&opts, i, 0),
                host_pid: None,
                full_disk: None,
                expected_exits: Vec::new(),
            });
        }
        let proxy = if opts.proxy {
            Some(FaultProxy::start(public, targets, opts.seed)?)
        } else {
            drop(public);
            None
        };
        let mut client_addrs = Vec::new();
        for j in 0..opts.clients {
            let addr = free_udp()?;
            if let Some(p) = &proxy {
                p.register(addr, Source::Client(j as u64));
            }
            client_addrs.push(addr);
        }
        Ok(Self {
            opts,
            config,
            net,
            logs,
            nodes,
            twins: Vec::new(),
            proxy,
            client_addrs,
            started: Instant::now(),
        })
    }

    /// Number of replicas.
    #[must_use]
    pub fn n(&self) -> usize {
        self.nodes.len()
    }

    /// Seconds since the cluster was made.
    #[must_use]
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The configuration for client `j` (its identity from the testnet;
    /// bound to its registered address when the proxy is on).
    ///
    /// # Errors
    /// When its key cannot be read.
    pub fn client_config(&self, j: usize) -> Result<ClientConfig> {
        let key = SecretKey::read_pem_file(&self.net.join(format!("client-{j}/identity.key")))
            .map_err(|e| err(e.to_string()))?;
        let mut c = ClientConfig::new(self.config.clone(), ClientId(j as u64 + 1), key);
        if self.opts.protocol.macs {
            c.authentication = pbft_client::Authentication::Macs;
        }
        c.bind = if self.proxy.is_some() {
            self.client_addrs
                .get(j)
                .copied()
                .ok_or_else(|| err("no such client"))?
        } else {
            "127.0.0.1:0".parse().map_err(|_| err("address"))?
        };
        Ok(c)
    }

    /// The key of client `j`.
    ///
    /// # Errors
    /// When it cannot be read.
    pub fn client_key(&self, j: usize) -> Result<SecretKey> {
        SecretKey::read_pem_file(&self.net.join(format!("client-{j}/identity.key")))
            .map_err(|e| err(e.to_string()))
    }

    fn spawn(&self, node: &NodeProc) -> Result<Supervised> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        if let (Runtime::Docker { image }, Some(name)) = (&self.opts.runtime, &node.container) {
            return self.spawn_container(node, image, name, log);
        }
        let mut command = match &node.byzantine {
            Some(strategy) => {
                let bin = self.opts.byzantine_node_bin.as_ref().ok_or_else(|| {
                    err("a Byzantine replica needs a pbft-node built with --features byzantine")
                })?;
                let mut c = Command::new(bin);
                c.env(BYZANTINE_ENV, strategy);
                c
            }
            None => Command::new(&self.opts.node_bin),
        };
        if self.opts.faketime {
            let lib = faketime_lib().ok_or_else(|| err("libfaketime is not installed"))?;
            let file = node.config.with_file_name("faketime");
            if !file.exists() {
                fs::write(&file, "+0\n")?;
            }
            // Wall clock only (an NTP step): CLOCK_MONOTONIC, which the
            // node's timers use, never jumps. The offset file is read
            // again at most once a second.
            command
                .env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", &file)
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        command
            .args(["run", "--config"])
            .arg(&node.config)
            .env("RUST_LOG", &self.opts.rust_log)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // A process group of its own: see the `supervise` module.
        Supervised::spawn_in_own_group(&mut command)
            .map_err(|e| err(format!("starting {}: {e}", self.opts.node_bin.display())))
    }

    /// `docker run` (attached: the container's stderr goes to the log, and
    /// the `docker` process lives as long as the container).
    fn spawn_container(
        &self,
        node: &NodeProc,
        image: &str,
        name: &str,
        log: fs::File,
    ) -> Result<Supervised> {
        // A container left by an earlier start of this replica.
        let _ = docker(&["rm", "--force", name]);
        let net = self.net.canonicalize()?;
        let mount = format!("{}:{}", net.display(), net.display());
        let user = format!(
            "{}:{}",
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw()
        );
        let mut command = Command::new("docker");
        command.args(["run", "--name", name, "--network", "host", "--user", &user]);
        command.args(["--volume", &mount]);
        command.args(["--env", &format!("RUST_LOG={}", self.opts.rust_log)]);
        command.args(["--env", "NO_COLOR=1"]);
        if let Some(strategy) = &node.byzantine {
            let bin = self.opts.byzantine_node_bin.as_ref().ok_or_else(|| {
                err("a Byzantine replica needs a pbft-node built with --features byzantine")
            })?;
            // The Byzantine build needs the same shared libraries as the
            // image's binary (it differs by a feature), so it runs in the
            // same image, mounted beside it.
            let bin = bin.canonicalize()?;
            command.args([
                "--volume",
                &format!("{}:/usr/local/bin/pbft-node-byzantine:ro", bin.display()),
            ]);
            command.args(["--entrypoint", "/usr/local/bin/pbft-node-byzantine"]);
            command.args(["--env", &format!("{BYZANTINE_ENV}={strategy}")]);
        }
        command
            .arg(image)
            .args(["run", "--config"])
            .arg(node.config.canonicalize()?)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map(|child| Supervised::container(child, name))
            .map_err(|e| err(format!("starting docker: {e}")))
    }

    fn node_mut(&mut self, i: usize) -> Result<&mut NodeProc> {
        self.nodes
            .get_mut(i)
            .ok_or_else(|| err(format!("no replica {i}")))
    }

    /// Starts replica `i` (nothing if it runs).
    ///
    /// # Errors
    /// When the process cannot start.
    pub fn start(&mut self, i: usize) -> Result<()> {
        if self.node_mut(i)?.is_running() {
            return Ok(());
        }
        let child = self.spawn(&self.nodes[i])?;
        let node = self.node_mut(i)?;
        node.child = Some(child);
        node.host_pid = None;
        node.paused = false;
        node.starts += 1;
        Ok(())
    }

    /// Makes replica `i` run `strategy` (see [`BYZANTINE_ENV`]) from its
    /// next start on; restarts it if it runs.
    ///
    /// # Errors
    /// Without a Byzantine build, or when the process cannot start.
    pub fn make_byzantine(&mut self, i: usize, strategy: &str) -> Result<()> {
        if self.opts.byzantine_node_bin.is_none() {
            return Err(err(
                "a Byzantine replica needs a pbft-node built with --features byzantine",
            ));
        }
        let running = self.node_mut(i)?.is_running();
        self.kill(i)?;
        self.node_mut(i)?.byzantine = Some(strategy.to_owned());
        if running {
            self.start(i)?;
        }
        Ok(())
    }

    /// Whether replica `i` is Byzantine (not held to the checks).
    #[must_use]
    pub fn is_byzantine(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|n| n.byzantine.is_some())
    }

    /// Starts every replica that does not run.
    ///
    /// # Errors
    /// When a process cannot start.
    pub fn start_all(&mut self) -> Result<()> {
        for i in 0..self.n() {
            self.start(i)?;
        }
        Ok(())
    }

    /// kill -9 replica `i` (nothing if it does not run).
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let node = self.node_mut(i)?;
        kill_proc(node)
    }

    /// SIGTERM replica `i` and wait for it (SIGKILL after 10 s).
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn terminate(&mut self, i: usize) -> Result<()> {
        let node = self.node_mut(i)?;
        let Some(mut child) = node.child.take() else {
            return Ok(());
        };
        if node.paused {
            match &node.container {
                Some(name) => docker(&["unpause", name])?,
                None => signal(child.id(), "CONT")?,
            }
            node.paused = false;
        }
        match &node.container {
            Some(name) => docker(&["kill", "--signal", "TERM", name])?,
            None => signal(child.id(), "TERM")?,
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait()? {
                Some(status) => {
                    if !status.success() {
                        node.unexpected_exits
                            .push(format!("exited with {status} after SIGTERM"));
                    }
                    return Ok(());
                }
                None if Instant::now() > deadline => {
                    node.unexpected_exits
                        .push("did not stop within 10 s of SIGTERM".into());
                    if let Some(name) = &node.container {
                        let _ = docker(&["kill", name]);
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(());
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// SIGSTOP replica `i`.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        let node = self.node_mut(i)?;
        if !node.is_running() || node.paused {
            return Ok(());
        }
        match (&node.container, node.child.as_ref()) {
            (Some(name), _) => docker(&["pause", name])?,
            (None, Some(child)) => signal(child.id(), "STOP")?,
            (None, None) => return Ok(()),
        }
        node.paused = true;
        Ok(())
    }

    /// SIGCONT replica `i`.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn resume(&mut self, i: usize) -> Result<()> {
        let node = self.node_mut(i)?;
        if !node.paused {
            return Ok(());
        }
        match (&node.container, node.child.as_ref()) {
            (Some(name), _) => docker(&["unpause", name])?,
            (None, Some(child)) => signal(child.id(), "CONT")?,
            (None, None) => {}
        }
        node.paused = false;
        Ok(())
    }

    /// Deletes replica `i`'s store (it must not run).
    ///
    /// # Errors
    /// When it runs, or the directory cannot be removed.
    pub fn wipe(&mut self, i: usize) -> Result<()> {
        let node = self.node_mut(i)?;
        if node.is_running() {
            return Err(err(format!(
                "replica {i} runs; stop it before wiping its store"
            )));
        }
        if node.data_dir.exists() {
            fs::remove_dir_all(&node.data_dir)?;
        }
        Ok(())
    }

    /// Moves stopped replica `i`'s store onto a tmpfs mounted at its data
    /// directory with `room_bytes` free beyond what the store holds now, so
    /// that its writes fail once it fills (ENOSPC). Needs root.
    ///
    /// # Errors
    /// When it runs, or the mount or copy fails.
    pub fn fill_disk(&mut self, i: usize, room_bytes: u64) -> Result<String> {
        let node = self.node_mut(i)?;
        if node.is_running() || node.full_disk.is_some() {
            return Err(err(format!(
                "replica {i} runs or is on a small disk already"
            )));
        }
        let data = node.data_dir.clone();
        let aside = data.with_extension("real-disk");
        let used = dir_bytes(&data)?;
        fs::rename(&data, &aside)?;
        fs::create_dir_all(&data)?;
        let size = used + room_bytes;
        run_quiet(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}")])
                .arg("pbft-disk-full")
                .arg(&data),
        )?;
        node.full_disk = Some(aside.clone());
        copy_dir(&aside, &data)?;
        Ok(format!(
            "store moved onto a {size}-byte tmpfs ({used} bytes used, {room_bytes} free)"
        ))
    }

    /// Moves replica `i`'s store back from the tmpfs of
    /// [`Cluster::fill_disk`] (it must have stopped) and unmounts it.
    ///
    /// # Errors
    /// When it runs, or the copy or unmount fails.
    pub fn heal_disk(&mut self, i: usize) -> Result<String> {
        let node = self.node_mut(i)?;
        if node.is_running() {
            return Err(err(format!("replica {i} runs")));
        }
        let Some(aside) = node.full_disk.clone() else {
            return Ok("its disk was not full".into());
        };
        let data = node.data_dir.clone();
        let exits = node.expected_exits.join("; ");
        fs::remove_dir_all(&aside)?;
        fs::create_dir_all(&aside)?;
        copy_dir(&data, &aside)?;
        run_quiet(Command::new("umount").arg(&data))?;
        fs::remove_dir(&data)?;
        fs::rename(&aside, &data)?;
        node.full_disk = None;
        Ok(format!(
            "stopped on the full disk ({exits}); store moved back"
        ))
    }

    /// Steps replica `i`'s wall clock by `seconds` (libfaketime reads the
    /// new offset within a second; a restart keeps it). Returns the offset
    /// from real time now.
    ///
    /// # Errors
    /// Without [`ClusterOptions::faketime`], or when the file cannot be
    /// written.
    pub fn clock_step(&mut self, i: usize, seconds: i64) -> Result<i64> {
        if !self.opts.faketime {
            return Err(err("clock steps need the cluster made with faketime"));
        }
        let node = self.node_mut(i)?;
        let file = node.config.with_file_name("faketime");
        let now: i64 = fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().trim_start_matches('+').parse().ok())
            .unwrap_or(0);
        let offset = now.saturating_add(seconds);
        fs::write(&file, format!("{offset:+}\n"))?;
        Ok(offset)
    }

    /// Tears the tail of replica `i`'s newest non-empty write-ahead log
    /// file (RocksDB's `NNNNNN.log` in its data directory): cuts off the
    /// last 40% of its final record region (at most 4 KiB, at least 1
    /// byte), so the file ends in the middle of a record, as a write cut
    /// short by power loss leaves it. The replica must not run. Returns
    /// what was done.
    ///
    /// # Errors
    /// When it runs, or it has no non-empty log file.
    pub fn tear(&mut self, i: usize) -> Result<String> {
        let node = self.node_mut(i)?;
        if node.is_running() {
            return Err(err(format!(
                "replica {i} runs; stop it before tearing its log"
            )));
        }
        let mut logs: Vec<(u64, PathBuf, u64)> = Vec::new();
        for entry in fs::read_dir(&node.data_dir)? {
            let path = entry?.path();
            let Some(number) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let len = fs::metadata(&path)?.len();
            if len > 0 {
                logs.push((number, path, len));
            }
        }
        let (_, path, len) = logs
            .into_iter()
            .max_by_key(|(number, _, _)| *number)
            .ok_or_else(|| err(format!("replica {i} has no non-empty write-ahead log")))?;
        let cut = (len * 2 / 5).clamp(1, 4096);
        fs::OpenOptions::new()
            .write(true)
            .open(&path)?
            .set_len(len - cut)?;
        Ok(format!(
            "tore {} from {len} to {} bytes",
            path.display(),
            len - cut
        ))
    }

    /// Starts a twin of replica `j`: a second process with its identity,
    /// its own store, behind the proxy as copy 1 of `j`. Returns the copy.
    ///
    /// # Errors
    /// Without the proxy, or when the process cannot start.
    pub fn add_twin(&mut self, j: usize) -> Result<u8> {
        let proxy = self
            .proxy
            .as_ref()
            .ok_or_else(|| err("twins need the fault proxy"))?;
        let original = self.nodes.get(j).ok_or_else(|| err("no such replica"))?;
        let config = original.config.with_file_name("node-twin.toml");
        fs::copy(&original.config, &config)?;
        let listen = free_udp()?;
        let metrics = free_tcp()?;
        edit_toml(&config, |t| {
            t.insert("listen".into(), toml::Value::String(listen.to_string()));
            t.insert(
                "metrics_listen".into(),
                toml::Value::String(metrics.to_string()),
            );
            t.insert("data_dir".into(), toml::Value::String("data-twin".into()));
        })?;
        let copy = proxy.add_copy(original.replica, listen)?;
        let mut twin = NodeProc {
            replica: original.replica,
            copy,
            data_dir: config.with_file_name("data-twin"),
            config,
            log: self.logs.join(format!("replica-{j}-twin.log")),
            listen,
            metrics,
            child: None,
            paused: false,
            unexpected_exits: Vec::new(),
            peak_rss_kib: 0,
            starts: 1,
            byzantine: None,
            container: container_name(&self.opts, j, 1),
            host_pid: None,
            full_disk: None,
            expected_exits: Vec::new(),
        };
        twin.child = Some(self.spawn(&twin)?);
        self.twins.push(twin);
        Ok(copy)
    }

    /// kill -9 every twin.
    ///
    /// # Errors
    /// When a signal cannot be sent.
    pub fn kill_twins(&mut self) -> Result<()> {
        for twin in &mut self.twins {
            kill_proc(twin)?;
        }
        Ok(())
    }

    /// Every process, replicas then twins.
    pub fn procs(&self) -> impl Iterator<Item = &NodeProc> {
        self.nodes.iter().chain(self.twins.iter())
    }

    /// Notes processes that exited on their own, and samples memory.
    pub fn poll(&mut self) {
        for node in self.nodes.iter_mut().chain(self.twins.iter_mut()) {
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let label = node.label();
                    let exits = if node.full_disk.is_some() {
                        &mut node.expected_exits
                    } else {
                        &mut node.unexpected_exits
                    };
                    exits.push(format!(
                        "{label} exited on its own with {status} (see {})",
                        node.log.display()
                    ));
                    node.child = None;
                    node.paused = false;
                    continue;
                }
            }
            if let (Some(name), Some(_), None) = (&node.container, &node.child, node.host_pid) {
                node.host_pid = container_pid(name);
            }
            if let Some((_, peak)) = node.pid().and_then(rss_kib) {
                node.peak_rss_kib = node.peak_rss_kib.max(peak);
            }
        }
    }

    /// Metrics of replica `i`, if it answers within a second.
    pub async fn metrics(&self, i: usize) -> Option<Metrics> {
        let node = self.nodes.get(i)?;
        if !node.is_live() {
            return None;
        }
        scrape(node.metrics, Duration::from_secs(1)).await.ok()
    }

    /// Metrics of every live replica (None for the others).
    pub async fn all_metrics(&self) -> Vec<Option<Metrics>> {
        let mut out = Vec::new();
        for i in 0..self.n() {
            out.push(self.metrics(i).await);
        }
        out
    }

    /// The primary most live replicas name (`pbft_primary`), and its view.
    pub async fn primary(&self) -> Option<(usize, u64)> {
        let all = self.all_metrics().await;
        let mut votes: std::collections::BTreeMap<(u64, u64), usize> = Default::default();
        for m in all.iter().flatten() {
            if let (Some(view), Some(primary)) = (m.get("pbft_view"), m.get("pbft_primary")) {
                *votes.entry((view as u64, primary as u64)).or_insert(0) += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|((view, _), count)| (*count, *view))
            .map(|((view, primary), _)| (primary as usize, view))
    }

    /// The last lines (info level and above) of every log, for a report.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in self.procs() {
            let text = fs::read_to_string(&node.log).unwrap_or_default();
            // Info and above: the debug lines are checkpoints and rejections.
            let all: Vec<&str> = text.lines().filter(|l| !l.contains(" DEBUG ")).collect();
            out.push_str(&format!("--- {} ({})\n", node.label(), node.log.display()));
            for line in &all[all.len().saturating_sub(lines)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Kills every process (SIGKILL).
    pub fn kill_all(&mut self) {
        for node in self.nodes.iter_mut().chain(self.twins.iter_mut()) {
            let _ = kill_proc(node);
        }
    }
}

fn kill_proc(node: &mut NodeProc) -> Result<()> {
    if let Some(mut child) = node.child.take() {
        if let Some(name) = &node.container {
            if node.paused {
                let _ = docker(&["unpause", name]);
            }
            // The container may have exited already; then only the
            // attached `docker run` is left to reap.
            let _ = docker(&["kill", name]);
        }
        child.kill()?;
        child.wait()?;
    }
    if let Some(name) = &node.container {
        let _ = docker(&["rm", "--force", name]);
    }
    node.paused = false;
    node.host_pid = None;
    Ok(())
}

/// The container name of replica `i`'s copy `copy` under
/// [`Runtime::Docker`]: unique per harness process and seed, so that
/// concurrent runs and leftovers of a killed run do not collide.
fn container_name(opts: &ClusterOptions, i: usize, copy: u8) -> Option<String> {
    match opts.runtime {
        Runtime::Process => None,
        Runtime::Docker { .. } => Some(format!(
            "pbft-ct-{}-{}-r{i}c{copy}",
            std::process::id(),
            opts.seed
        )),
    }
}

/// Runs `docker ARGS`, quietly; its stderr on failure.
pub(crate) fn docker(args: &[&str]) -> Result<()> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("running docker: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The host pid of a running container's main process.
fn container_pid(name: &str) -> Option<u32> {
    let out = Command::new("docker")
        .args(["inspect", "--format", "{{.State.Pid}}", name])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let pid: u32 = String::from_utf8(out.stdout).ok()?.trim().parse().ok()?;
    (pid != 0).then_some(pid)
}

/// Whether a Docker engine answers; its version, or why not.
///
/// # Errors
/// Why no engine is usable.
pub fn docker_engine() -> Result<String> {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("cannot run docker: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(err(format!(
            "`docker info` failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
        )))
    }
}

/// Sends a signal (`STOP`, `CONT`, `TERM`) to a process.
fn signal(pid: u32, name: &str) -> Result<()> {
    use rustix::process::{kill_process, Pid, Signal};
    let sig = match name {
        "STOP" => Signal::STOP,
        "CONT" => Signal::CONT,
        "TERM" => Signal::TERM,
        _ => return Err(err(format!("unknown signal {name}"))),
    };
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| err(format!("bad pid {pid}")))?;
    kill_process(pid, sig).map_err(|e| err(format!("kill -{name} {}: {e}", pid.as_raw_nonzero())))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
        for node in &self.nodes {
            if node.full_disk.is_some() {
                let _ = Command::new("umount").arg(&node.data_dir).status();
            }
        }
    }
}

/// Bytes in the files below `dir`.
fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Copies the files below `from` into `to` (which exists).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.metadata()?.is_dir() {
            fs::create_dir_all(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Runs a command, its stderr in the error.
fn run_quiet(command: &mut Command) -> Result<()> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("running {command:?}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(err(format!(
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
