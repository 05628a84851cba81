//! Throughput between loopback endpoints: 256 B and 64 KiB messages from one
//! replica to another, and a 256 B broadcast to three peers.
//!
//! `cargo bench -p pbft-quic -- --warm-up-time 1 --measurement-time 5`.
//! Throughput is reported in messages (elements) per second; multiply by the
//! message size for bytes per second.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pbft_crypto::{Principal, SecretKey, TlsIdentity};
use pbft_quic::{Lane, Mesh, MeshConfig, Receiver};
use pbft_types::{
    ClientId, ClusterConfig, ClusterId, Envelope, Message, ReplicaEntry, ReplicaId, Request,
    RequestNo, Signature,
};
use tokio::sync::Mutex;

const CLUSTER: ClusterId = ClusterId(42);

fn request(op_bytes: usize) -> Message {
    Message::Request(pbft_types::ClientRequest {
        value: Request {
            request_no: RequestNo(1),
            read_only: false,
            op: vec![7; op_bytes],
        },
        signer: ClientId(1),
        auth: pbft_types::Authenticator::Signature(Signature([0; 64])),
    })
}

/// A request whose encoded frame payload is `bytes` long (within a byte or two).
fn message_of(bytes: usize) -> Message {
    let overhead = pbft_types::encode(&Envelope::new(CLUSTER, request(0)))
        .unwrap()
        .len();
    let mut op = bytes.saturating_sub(overhead);
    while pbft_types::encode(&Envelope::new(CLUSTER, request(op)))
        .unwrap()
        .len()
        > bytes
    {
        op -= 1;
    }
    request(op)
}

fn start(n: usize, rt: &tokio::runtime::Runtime) -> (Vec<Mesh>, Vec<Arc<Mutex<Receiver>>>) {
    let keys: Vec<SecretKey> = (0..n)
        .map(|i| SecretKey::from_seed([i as u8 + 1; 32]))
        .collect();
    let sockets: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let cluster = ClusterConfig {
        cluster_id: CLUSTER,
        replicas: (0..n)
            .map(|i| ReplicaEntry {
                id: ReplicaId(i as u32),
                public_key: keys[i].public_key(),
                address: sockets[i].local_addr().unwrap().to_string(),
            })
            .collect(),
        clients: vec![],
    }
    .validated()
    .unwrap();
    let _guard = rt.enter();
    let mut meshes = Vec::new();
    let mut receivers = Vec::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let identity = TlsIdentity::generate(&keys[i], "bench").unwrap();
        let mut config = MeshConfig::new(cluster.clone(), ReplicaId(i as u32), identity);
        config.socket = Some(socket);
        let (mesh, rx) = Mesh::start(config).unwrap();
        meshes.push(mesh);
        receivers.push(Arc::new(Mutex::new(rx)));
    }
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while meshes.iter().any(|m| m.connected_peers().len() < n - 1) {
            assert!(Instant::now() < deadline, "mesh did not connect");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    (meshes, receivers)
}

async fn drain(rx: Arc<Mutex<Receiver>>, count: u64) {
    let mut rx = rx.lock().await;
    for _ in 0..count {
        rx.recv().await.expect("mesh closed");
    }
}

fn point_to_point(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (meshes, receivers) = start(2, &rt);
    let mut group = c.benchmark_group("point_to_point");
    for (name, bytes, lane) in [
        ("256B", 256, Lane::Consensus),
        ("64KiB", 64 * 1024, Lane::Bulk),
    ] {
        let message = message_of(bytes);
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let sender = meshes[0].clone();
                let message = message.clone();
                let rx = receivers[1].clone();
                rt.block_on(async move {
                    let start = Instant::now();
                    let send = tokio::spawn(async move {
                        for _ in 0..iters {
                            let to = Principal::Replica(ReplicaId(1));
                            sender.send_wait(to, lane, message.clone()).await.unwrap();
                        }
                    });
                    drain(rx, iters).await;
                    send.await.unwrap();
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
}

fn broadcast(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (meshes, receivers) = start(4, &rt);
    let message = message_of(256);
    let mut group = c.benchmark_group("broadcast_3_peers");
    group.throughput(Throughput::Elements(1));
    group.bench_function("256B", |b| {
        b.iter_custom(|iters| {
            let sender = meshes[0].clone();
            let message = message.clone();
            let rxs: Vec<_> = receivers[1..].to_vec();
            rt.block_on(async move {
                let start = Instant::now();
                let send = tokio::spawn(async move {
                    for _ in 0..iters {
                        sender
                            .broadcast_wait(Lane::Consensus, message.clone())
                            .await
                            .unwrap();
                    }
                });
                let drains: Vec<_> = rxs
                    .into_iter()
                    .map(|rx| tokio::spawn(drain(rx, iters)))
                    .collect();
                for d in drains {
                    d.await.unwrap();
                }
                send.await.unwrap();
                start.elapsed()
            })
        });
    });
    group.finish();
}

criterion_group!(benches, point_to_point, broadcast);
criterion_main!(benches);
