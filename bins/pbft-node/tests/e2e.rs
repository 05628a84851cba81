//! End to end: real `pbft-node` processes on loopback, driven through
//! `pbft-client`: a killed backup, a killed primary (view change), a
//! restarted primary catching up and taking part in the next view change,
//! restarts from the store, a refused client.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pbft_client::{Client, ClientConfig, ClientError};
use pbft_core::app::MALFORMED_OP_RESULT;
use pbft_core::KvOp;
use pbft_crypto::{SecretKey, Signer, TlsIdentity};
use pbft_quic::{ClientEndpoint, ClientEndpointConfig, Lane};
use pbft_types::{
    ClientEntry, ClientId, ClusterConfig, Digest, Message, Prepare, ReplicaId, Request, RequestNo,
    SeqNo, View,
};

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
    /// and starts the four replicas (no metrics endpoints).
    fn start_with(edit: impl Fn(&mut String)) -> Self {
        Self::start_full(0, edit)
    }

    /// As [`Self::start_with`]; replica `i` serves metrics on
    /// `metrics_base_port + i` unless it is 0.
    fn start_full(metrics_base_port: u16, edit: impl Fn(&mut String)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = free_base_port();
        let out = Command::new(NODE)
            .args(["testnet", "--replicas", "4", "--clients", "1"])
            .args(["--metrics-base-port", &metrics_base_port.to_string()])
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

/// Puts `k{i}` = `v{i}` for each `i`, each acknowledged.
async fn put_all(client: &Client, cluster: &Cluster, keys: std::ops::Range<usize>) {
    for i in keys {
        assert_eq!(
            put(client, &format!("k{i}"), &format!("v{i}"))
                .await
                .unwrap(),
            b"ok",
            "{}",
            cluster.logs()
        );
    }
}

/// Reads back what [`put_all`] wrote.
async fn get_all(client: &Client, keys: std::ops::Range<usize>) {
    for i in keys {
        let mut expected = vec![1u8];
        expected.extend_from_slice(format!("v{i}").as_bytes());
        assert_eq!(get(client, &format!("k{i}")).await, expected, "k{i}");
    }
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
    put_all(&c, &cluster, 0..20).await;
    // f = 1: with one backup dead the other three still form a quorum.
    cluster.kill(3);
    put_all(&c, &cluster, 20..40).await;
    get_all(&c, 0..40).await;
    c.shutdown().await;
    // SIGTERM: every live replica shuts down cleanly.
    assert_eq!(cluster.terminate_all(), vec![0, 0, 0], "{}", cluster.logs());
}

/// PBFT 4.4 on real processes: kill -9 the primary of view 0, the backups
/// change to view 1 and serve on; restart the old primary, it catches up;
/// then kill the primary of view 1: view 2 needs the restarted replica in
/// every quorum, so it must have caught up and joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_is_replaced_and_a_restarted_one_rejoins() {
    let mut cluster = Cluster::start();
    let c = client(
        cluster.config.clone(),
        ClientId(1),
        cluster.client_key(),
        60_000,
    )
    .await;
    assert!(
        c.wait_connected(4, Duration::from_secs(30)).await,
        "{}",
        cluster.logs()
    );
    let mut written = 0;
    let mut put_more = |count: usize| {
        let range = written..written + count;
        written += count;
        range
    };
    for i in put_more(10) {
        assert_eq!(
            put(&c, &format!("k{i}"), &format!("v{i}")).await.unwrap(),
            b"ok"
        );
    }
    cluster.kill(0);
    for i in put_more(10) {
        assert_eq!(
            put(&c, &format!("k{i}"), &format!("v{i}")).await.unwrap(),
            b"ok",
            "{}",
            cluster.logs()
        );
    }
    let logs = cluster.logs();
    assert!(logs.contains("entered the new view"), "{logs}");
    cluster.nodes[0] = Some(cluster.spawn(0));
    for i in put_more(10) {
        assert_eq!(
            put(&c, &format!("k{i}"), &format!("v{i}")).await.unwrap(),
            b"ok"
        );
    }
    // Give the restarted replica time to fetch what it missed and to learn
    // the new view, then take away the primary of view 1.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.kill(1);
    for i in put_more(10) {
        assert_eq!(
            put(&c, &format!("k{i}"), &format!("v{i}")).await.unwrap(),
            b"ok",
            "{}",
            cluster.logs()
        );
    }
    for i in 0..written {
        let mut expected = vec![1u8];
        expected.extend_from_slice(format!("v{i}").as_bytes());
        assert_eq!(get(&c, &format!("k{i}")).await, expected, "k{i}");
    }
    c.shutdown().await;
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

/// Four consecutive free TCP ports on loopback, for metrics endpoints.
fn free_tcp_base_port() -> u16 {
    for _ in 0..200 {
        let Ok(first) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let base = first.local_addr().unwrap().port();
        drop(first);
        if base < 60_000 && (0..4).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no free TCP ports");
}

/// `GET /metrics` from a node, as text (empty when it does not answer).
fn scrape(port: u16) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ =
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

/// The sum over the four replicas of the counter samples whose line starts
/// with `prefix` (a metric name with an optional label set).
fn counter_sum(base: u16, prefix: &str) -> f64 {
    (0..4)
        .map(|i| {
            scrape(base + i)
                .lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        })
        .sum()
}

/// Bad input from a configured client (BRIEF invariant 5): a request whose
/// signature is not its client's, a replica-only message from a client, and
/// a correctly signed request whose operation does not decode. The first two
/// are dropped and counted in `pbft_messages_rejected_total`; the third is
/// ordered and answered with the application's error result. The cluster
/// keeps serving throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_rejected_with_a_metric_and_the_cluster_keeps_serving() {
    let metrics = free_tcp_base_port();
    let cluster = Cluster::start_full(metrics, |_| {});
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
    assert_eq!(put(&c, "before", "1").await.unwrap(), b"ok");

    // A second connection with the client's own TLS identity (so the
    // replicas accept it) that signs requests with a key that is not the
    // client's, and sends a PREPARE as if it were a replica.
    let identity = TlsIdentity::generate(&cluster.client_key(), "bad-client").unwrap();
    let mut ec = ClientEndpointConfig::new(cluster.config.clone(), ClientId(1), identity);
    ec.bind = "127.0.0.1:0".parse().unwrap();
    let (endpoint, _receiver) = ClientEndpoint::start(ec).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while endpoint.connected_peers().len() < 4 {
        assert!(std::time::Instant::now() < deadline, "{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let forger = Signer::new(
        SecretKey::generate(),
        cluster.config.cluster_id,
        ClientId(1),
    );
    let forged = forger
        .sign_request(Request {
            request_no: RequestNo(u64::MAX / 2),
            read_only: false,
            op: KvOp::Put {
                key: "forged".into(),
                value: "x".into(),
            }
            .encode(),
        })
        .unwrap();
    let replica_signer = Signer::new(
        SecretKey::generate(),
        cluster.config.cluster_id,
        ReplicaId(0),
    );
    let prepare = Message::Prepare(
        replica_signer
            .sign(Prepare {
                view: View(0),
                seq: SeqNo(1),
                digest: Digest([7; 32]),
            })
            .unwrap(),
    );
    for _ in 0..5 {
        assert_eq!(
            endpoint
                .broadcast(Lane::Consensus, Message::Request(forged.clone()))
                .unwrap(),
            4
        );
        assert_eq!(
            endpoint
                .broadcast(Lane::Consensus, prepare.clone())
                .unwrap(),
            4
        );
    }

    // A correctly signed request whose operation is garbage: executed as an
    // error result, the same at every replica.
    assert_eq!(
        c.submit(vec![0xff, 0x00, 0x13, 0x37]).await.unwrap(),
        MALFORMED_OP_RESULT
    );
    assert_eq!(put(&c, "after", "2").await.unwrap(), b"ok");

    // The rejections were counted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let signatures = counter_sum(
            metrics,
            "pbft_messages_rejected_total{reason=\"bad_request_signature\"}",
        ) + counter_sum(
            metrics,
            "pbft_messages_rejected_total{reason=\"bad_signature\"}",
        );
        let non_requests = counter_sum(
            metrics,
            "pbft_messages_rejected_total{reason=\"client_sent_non_request\"}",
        );
        if signatures >= 1.0 && non_requests >= 4.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bad signatures counted {signatures}, non-requests {non_requests}\n{}\n{}",
            scrape(metrics),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The forged put never executed.
    assert_eq!(get(&c, "forged").await, vec![0u8]);
    assert_eq!(get(&c, "after").await, {
        let mut v = vec![1u8];
        v.extend_from_slice(b"2");
        v
    });
    endpoint.shutdown().await;
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
    put_all(&c, &cluster, 0..10).await;
    // SIGKILL backup 2; the others go on without it.
    cluster.kill(2);
    put_all(&c, &cluster, 10..20).await;
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

/// TOCS 3.2 on real processes: replicas with `request_auth = "macs"` serve
/// a client that sends one MAC per replica, also through a view change
/// (the new primary checks its own entry); a cluster left at signatures
/// refuses such a client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_cluster_serves_mac_clients_through_a_view_change() {
    let mut cluster = Cluster::start_with(|text| {
        *text = text.replace("request_auth = \"signatures\"", "request_auth = \"macs\"");
        assert!(text.contains("request_auth = \"macs\""), "{text}");
    });
    let mac_client = |cluster: &Cluster, timeout_ms: u64| {
        let mut c = ClientConfig::new(cluster.config.clone(), ClientId(1), cluster.client_key());
        c.bind = "127.0.0.1:0".parse().unwrap();
        c.request_timeout_ms = timeout_ms;
        c.retransmit_timeout_ms = 300;
        c.authentication = pbft_client::Authentication::Macs;
        c
    };
    let c = Client::connect(mac_client(&cluster, 60_000)).await.unwrap();
    assert!(
        c.wait_connected(4, Duration::from_secs(30)).await,
        "{}",
        cluster.logs()
    );
    put_all(&c, &cluster, 0..10).await;
    cluster.kill(0);
    put_all(&c, &cluster, 10..20).await;
    assert!(cluster.logs().contains("entered the new view"));
    get_all(&c, 0..20).await;
    c.shutdown().await;
    assert_eq!(cluster.terminate_all(), vec![0, 0, 0], "{}", cluster.logs());

    let mut signatures = Cluster::start();
    let refused = Client::connect(mac_client(&signatures, 3_000))
        .await
        .unwrap();
    assert!(refused.wait_connected(4, Duration::from_secs(30)).await);
    assert!(
        matches!(
            put(&refused, "k", "v").await,
            Err(ClientError::Timeout { .. })
        ),
        "{}",
        signatures.logs()
    );
    refused.shutdown().await;
    signatures.terminate_all();
}
