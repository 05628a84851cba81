//! End to end: real `pbft-node` processes on loopback, driven through
//! `pbft-client`. (View change comes with the issue that builds it; these
//! tests cover what runs today, restart from the store included.)
#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pbft_client::{Client, ClientConfig, ClientError};
use pbft_core::KvOp;
use pbft_crypto::SecretKey;
use pbft_types::{ClientEntry, ClientId, ClusterConfig};

const NODE: &str = env!("CARGO_BIN_EXE_pbft-node");

/// Four consecutive free UDP ports (checked by binding them); tests of one
/// process take different ranges.
fn free_base_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    for _ in 0..200 {
        let attempt = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base = 20_000 + ((std::process::id() * 7919 + attempt * 104_729) % 40_000) as u16;
        if (0..4).all(|i| UdpSocket::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no free UDP ports");
}

struct Cluster {
    dir: tempfile::TempDir,
    nodes: Vec<Option<Child>>,
    config: ClusterConfig,
}

impl Cluster {
    fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Generates the testnet, lets `edit` change each node's config text,
    /// and starts the four replicas.
    fn start_with(edit: impl Fn(&mut String)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = free_base_port();
        let out = Command::new(NODE)
            .args([
                "testnet",
                "--replicas",
                "4",
                "--clients",
                "1",
                "--metrics-base-port",
                "0",
            ])
            .args(["--base-port", &base.to_string(), "--out"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for i in 0..4 {
            let path = dir.path().join(format!("replica-{i}/node.toml"));
            let mut text = std::fs::read_to_string(&path).unwrap();
            edit(&mut text);
            std::fs::write(&path, text).unwrap();
        }
        let config = load_cluster(dir.path());
        let mut cluster = Self {
            dir,
            nodes: Vec::new(),
            config,
        };
        for i in 0..4 {
            let child = cluster.spawn(i);
            cluster.nodes.push(Some(child));
        }
        cluster
    }

    fn spawn(&self, i: usize) -> Child {
        // Appending: a restarted replica's log follows its earlier run's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("replica-{i}.log")))
            .unwrap();
        Command::new(NODE)
            .args(["run", "--config"])
            .arg(self.dir.path().join(format!("replica-{i}/node.toml")))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn client_key(&self) -> SecretKey {
        SecretKey::read_pem_file(&self.dir.path().join("client-0/identity.key")).unwrap()
    }

    fn kill(&mut self, i: usize) {
        let mut child = self.nodes[i].take().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    fn terminate_all(&mut self) -> Vec<i32> {
        let mut codes = Vec::new();
        for child in self.nodes.iter_mut().flatten() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
        }
        for child in self.nodes.iter_mut().filter_map(Option::take) {
            let mut child = child;
            codes.push(child.wait().unwrap().code().unwrap_or(-1));
        }
        codes
    }

    fn logs(&self) -> String {
        (0..4)
            .map(|i| {
                let p = self.dir.path().join(format!("replica-{i}.log"));
                format!(
                    "--- replica {i}\n{}",
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn load_cluster(dir: &Path) -> ClusterConfig {
    pbft_node::config::ClusterFile::load(&dir.join("cluster.toml")).unwrap()
}

async fn client(config: ClusterConfig, id: ClientId, key: SecretKey, timeout_ms: u64) -> Client {
    let mut c = ClientConfig::new(config, id, key);
    c.bind = "127.0.0.1:0".parse().unwrap();
    c.request_timeout_ms = timeout_ms;
    c.retransmit_timeout_ms = 300;
    Client::connect(c).await.unwrap()
}

async fn put(client: &Client, key: &str, value: &str) -> Result<Vec<u8>, ClientError> {
    client
        .submit(
            KvOp::Put {
                key: key.into(),
                value: value.into(),
            }
            .encode(),
        )
        .await
}

async fn get(client: &Client, key: &str) -> Vec<u8> {
    client
        .submit(KvOp::Get { key: key.into() }.encode())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_serve_and_survive_a_killed_backup() {
    let mut cluster = Cluster::start();
    let c = client(
        cluster.config.clone(),
        ClientId(1),
        cluster.client_key(),
        30_000,
    )
    .await;
    assert!(
        c.wait_connected(4, Duration::from_secs(30)).await,
        "{}",
        cluster.logs()
    );
    for i in 0..20 {
        assert_eq!(
            put(&c, &format!("k{i}"), &format!("v{i}")).await.unwrap(),
            b"ok",
            "{}",
            cluster.logs()
        );
    }
    // f = 1: with one backup dead the other three still form a quorum.
    cluster.kill(3);
    for i in 20..40 {
        assert_eq!(
            put(&c, &format!("k{i}"), &format!("v{i}")).await.unwrap(),
            b"ok",
            "{}",
            cluster.logs()
        );
    }
    for i in 0..40 {
        let mut expected = vec![1u8];
        expected.extend_from_slice(format!("v{i}").as_bytes());
        assert_eq!(get(&c, &format!("k{i}")).await, expected);
    }
    c.shutdown().await;
    // SIGTERM: every live replica shuts down cleanly.
    assert_eq!(cluster.terminate_all(), vec![0, 0, 0], "{}", cluster.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_client_is_refused_and_the_cluster_keeps_serving() {
    let cluster = Cluster::start();
    // A client whose key the replicas do not know: it believes it is
    // configured, the replicas refuse its certificate.
    let rogue_key = SecretKey::generate();
    let mut rogue_view = cluster.config.clone();
    rogue_view.clients.push(ClientEntry {
        id: ClientId(99),
        public_key: rogue_key.public_key(),
    });
    let rogue_view = rogue_view.validated().unwrap();
    let rogue = client(rogue_view, ClientId(99), rogue_key, 2_000).await;
    match put(&rogue, "x", "y").await {
        Err(ClientError::Timeout { replies: 0, .. }) => {}
        other => panic!("the rogue client got {other:?}"),
    }
    assert_eq!(rogue.connected_replicas(), 0);
    rogue.shutdown().await;

    let c = client(
        cluster.config.clone(),
        ClientId(1),
        cluster.client_key(),
        30_000,
    )
    .await;
    assert_eq!(
        put(&c, "a", "b").await.unwrap(),
        b"ok",
        "{}",
        cluster.logs()
    );
    c.shutdown().await;
}

fn expected(i: usize) -> Vec<u8> {
    let mut expected = vec![1u8];
    expected.extend_from_slice(format!("v{i}").as_bytes());
    expected
}

/// Restart recovery (issue 5): a SIGKILLed backup restarts from its data
/// directory and catches up (the cluster then needs it for its quorum);
/// then all four stop with SIGTERM and restart, and every acknowledged
/// write is still readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_restart_from_their_stores() {
    // Small checkpoints so that stable checkpoints and snapshots are
    // written and recovered too.
    let mut cluster = Cluster::start_with(|text| {
        *text = text
            .replace(
                "checkpoint_interval_seqs = 128",
                "checkpoint_interval_seqs = 4",
            )
            .replace("log_window_seqs = 256", "log_window_seqs = 8");
    });
    let c = client(
        cluster.config.clone(),
        ClientId(1),
        cluster.client_key(),
        30_000,
    )
    .await;
    assert!(
        c.wait_connected(4, Duration::from_secs(30)).await,
        "{}",
        cluster.logs()
    );
    for i in 0..10 {
        assert_eq!(
            put(&c, &format!("k{i}"), &format!("v{i}")).await.unwrap(),
            b"ok",
            "{}",
            cluster.logs()
        );
    }
    // SIGKILL backup 2; the others go on without it.
    cluster.kill(2);
    for i in 10..20 {
        assert_eq!(
            put(&c, &format!("k{i}"), &format!("v{i}")).await.unwrap(),
            b"ok",
            "{}",
            cluster.logs()
        );
    }
    // It restarts from its store; then backup 3 dies, so every quorum
    // needs the restarted replica: it must have caught up.
    let child = cluster.spawn(2);
    cluster.nodes[2] = Some(child);
    for i in 20..25 {
        assert_eq!(
            put(&c, &format!("k{i}"), &format!("v{i}")).await.unwrap(),
            b"ok",
            "{}",
            cluster.logs()
        );
    }
    cluster.kill(3);
    for i in 25..40 {
        assert_eq!(
            put(&c, &format!("k{i}"), &format!("v{i}")).await.unwrap(),
            b"ok",
            "{}",
            cluster.logs()
        );
    }
    for i in 0..40 {
        assert_eq!(
            get(&c, &format!("k{i}")).await,
            expected(i),
            "{}",
            cluster.logs()
        );
    }
    let child = cluster.spawn(3);
    cluster.nodes[3] = Some(child);
    c.shutdown().await;
    // All four stop with SIGTERM and restart from their stores.
    assert_eq!(
        cluster.terminate_all(),
        vec![0, 0, 0, 0],
        "{}",
        cluster.logs()
    );
    for i in 0..4 {
        let child = cluster.spawn(i);
        cluster.nodes[i] = Some(child);
    }
    let c = client(
        cluster.config.clone(),
        ClientId(1),
        cluster.client_key(),
        30_000,
    )
    .await;
    assert!(
        c.wait_connected(4, Duration::from_secs(30)).await,
        "{}",
        cluster.logs()
    );
    for i in 0..40 {
        assert_eq!(
            get(&c, &format!("k{i}")).await,
            expected(i),
            "{}",
            cluster.logs()
        );
    }
    assert_eq!(
        put(&c, "k40", "v40").await.unwrap(),
        b"ok",
        "{}",
        cluster.logs()
    );
    assert_eq!(get(&c, "k40").await, expected(40));
    let logs = cluster.logs();
    let recovered: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("recovered from the store"))
        .collect();
    // Backup 2 once after its SIGKILL, backup 3 once, and all four after SIGTERM.
    assert_eq!(recovered.len(), 6, "{logs}");
    eprintln!("{}", recovered.join("\n"));
    c.shutdown().await;
    assert_eq!(
        cluster.terminate_all(),
        vec![0, 0, 0, 0],
        "{}",
        cluster.logs()
    );
}
