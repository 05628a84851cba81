//! The normal case in the simulator with real ed25519 and no network delay:
//! n = 4, batches of 1, 16 and 128 requests of 64 B, with client signatures,
//! with MAC authenticators (TOCS 3.2) and with channel-authenticated requests.
//!
//! Criterion reports committed requests per second (the four replicas run
//! one after the other on one thread, so this is the cluster's throughput on
//! one core). Before each group the bench prints the core's own time per
//! request: the run's wall time minus the measured cost of the signatures,
//! verifications and digests the replicas performed (the simulator's own
//! work stays included, so this is an upper bound).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pbft_core::sim::{NetworkConfig, Sim, SimConfig};
use pbft_core::{RequestAuth, Stats};
use pbft_crypto::{
    batch_digest, Keyring, RequestAuthenticator, RequestVerifier, SecretKey, Signer,
};
use pbft_types::{
    Batch, ClientEntry, ClientId, ClusterConfig, ClusterId, Digest, Prepare, ReplicaEntry,
    ReplicaId, Request, RequestNo, SeqNo, View,
};

const REQUEST_BYTES: usize = 64;
const PIPELINE: u64 = 4;

fn config(batch: usize, auth: RequestAuth) -> SimConfig {
    let mut c = SimConfig::new(1, 4);
    c.network = NetworkConfig::instant();
    // Enough clients (one request outstanding each) to fill the pipeline.
    c.clients = (batch * PIPELINE as usize * 2).max(8);
    let total = match batch {
        1 => 256,
        2..=16 => 1024,
        _ => 4096,
    };
    c.requests_per_client = (total / c.clients).max(4);
    // The put's value makes the encoded operation 64 bytes.
    c.value_bytes = REQUEST_BYTES - 5 - "client-000".len();
    c.params.batch_requests_max = batch;
    c.params.pipeline_batches_max = PIPELINE;
    c.params.batch_delay_us_max = 1_000;
    c.params.checkpoint_interval_seqs = 64;
    c.params.log_window_seqs = 128;
    c.params.pending_requests_max = 1 << 16;
    c.params.request_auth = auth;
    c.sign_requests = auth == RequestAuth::ClientSignatures;
    c.mac_requests = auth == RequestAuth::Macs;
    c.client_retry_us = 60_000_000;
    c
}

fn total_requests(c: &SimConfig) -> u64 {
    (c.clients * c.requests_per_client) as u64
}

struct CryptoCosts {
    verify: f64,
    sign: f64,
    request_verify_batched: f64,
    request_mac_verify: f64,
    digest_per_request: f64,
}

/// Measures the cost of each cryptographic operation the replicas perform.
fn crypto_costs() -> CryptoCosts {
    let keys: Vec<SecretKey> = (0..4u8)
        .map(|i| SecretKey::from_seed([i + 1; 32]))
        .collect();
    let client_key = SecretKey::from_seed([99; 32]);
    let config = ClusterConfig {
        cluster_id: ClusterId(1),
        replicas: keys
            .iter()
            .enumerate()
            .map(|(i, k)| ReplicaEntry {
                id: ReplicaId(i as u32),
                public_key: k.public_key(),
                address: format!("127.0.0.1:{}", 7000 + i),
            })
            .collect(),
        clients: vec![ClientEntry {
            id: ClientId(1),
            public_key: client_key.public_key(),
        }],
    }
    .validated()
    .unwrap();
    let keyring = Keyring::new(&config).unwrap();
    let signer = Signer::new(keys[1].clone(), ClusterId(1), ReplicaId(1));
    let prepare = Prepare {
        view: View(0),
        seq: SeqNo(1),
        digest: Digest([1; 32]),
    };
    let rounds = 500;
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(signer.sign(prepare.clone()).unwrap());
    }
    let sign = start.elapsed().as_secs_f64() / f64::from(rounds);
    let signed = signer.sign(prepare).unwrap();
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(keyring.verify(signed.clone()).unwrap());
    }
    let verify = start.elapsed().as_secs_f64() / f64::from(rounds);
    let client = Signer::new(client_key, ClusterId(1), ClientId(1));
    let requests: Vec<_> = (1..=128u64)
        .map(|n| {
            client
                .sign_request(Request {
                    request_no: RequestNo(n),
                    read_only: false,
                    op: vec![7; REQUEST_BYTES],
                })
                .unwrap()
        })
        .collect();
    let verifier = RequestVerifier::new(&signer, &keyring).unwrap();
    let start = Instant::now();
    for _ in 0..20 {
        for r in verifier.verify_many(&requests) {
            r.unwrap();
        }
    }
    let request_verify_batched = start.elapsed().as_secs_f64() / (20.0 * 128.0);
    let macs = RequestAuthenticator::new(client.clone(), &keyring).unwrap();
    let mac_requests: Vec<_> = requests
        .iter()
        .map(|r| macs.mac(r.value.clone()).unwrap())
        .collect();
    let start = Instant::now();
    for _ in 0..200 {
        for r in verifier.verify_many(&mac_requests) {
            r.unwrap();
        }
    }
    let request_mac_verify = start.elapsed().as_secs_f64() / (200.0 * 128.0);
    let batch = Batch { requests };
    let start = Instant::now();
    for _ in 0..200 {
        std::hint::black_box(batch_digest(&batch).unwrap());
    }
    let digest_per_request = start.elapsed().as_secs_f64() / (200.0 * 128.0);
    CryptoCosts {
        verify,
        sign,
        request_verify_batched,
        request_mac_verify,
        digest_per_request,
    }
}

fn run_once(c: &SimConfig) -> (Duration, Stats) {
    let mut sim = Sim::new(c.clone()).unwrap();
    let start = Instant::now();
    let report = sim.run_and_check(true).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(report.requests_completed, total_requests(c));
    let mut total = Stats::default();
    for id in sim.cluster().replica_ids().collect::<Vec<_>>() {
        let s = sim.replica(id).unwrap().stats();
        total.signatures_verified += s.signatures_verified;
        total.request_signatures_verified += s.request_signatures_verified;
        total.request_macs_verified += s.request_macs_verified;
        total.signatures_made += s.signatures_made;
        total.batch_digests += s.batch_digests;
        total.requests_executed += s.requests_executed;
    }
    (elapsed, total)
}

fn normal_case(crit: &mut Criterion) {
    let costs = crypto_costs();
    eprintln!(
        "crypto: sign {:.1} us, verify {:.1} us, request verify (batched) {:.1} us, request MAC {:.2} us, digest {:.2} us/request",
        costs.sign * 1e6,
        costs.verify * 1e6,
        costs.request_verify_batched * 1e6,
        costs.request_mac_verify * 1e6,
        costs.digest_per_request * 1e6
    );
    for auth in [
        RequestAuth::ClientSignatures,
        RequestAuth::Macs,
        RequestAuth::Channel,
    ] {
        let name = match auth {
            RequestAuth::ClientSignatures => "client_signatures",
            RequestAuth::Macs => "macs",
            RequestAuth::Channel => "channel_auth",
        };
        let mut group = crit.benchmark_group(format!("n4_{name}"));
        for batch in [1usize, 16, 128] {
            let c = config(batch, auth);
            let requests = total_requests(&c);
            // The core's own time: wall time minus the crypto it performed.
            let mut samples = Vec::new();
            for _ in 0..3 {
                let (elapsed, s) = run_once(&c);
                let crypto = s.signatures_verified as f64 * costs.verify
                    + s.signatures_made as f64 * costs.sign
                    + s.request_signatures_verified as f64 * costs.request_verify_batched
                    + s.request_macs_verified as f64 * costs.request_mac_verify
                    + s.batch_digests as f64 * batch as f64 * costs.digest_per_request;
                let wall = elapsed.as_secs_f64();
                samples.push((wall, crypto));
            }
            samples.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (wall, crypto) = samples[1];
            // Per request per replica: the four replicas share the thread.
            let per_request_replica = |t: f64| t * 1e6 / requests as f64 / 4.0;
            eprintln!(
                "{name} batch {batch}: {requests} requests, {:.0} req/s (cluster on one thread); per request per replica: total {:.2} us, crypto {:.2} us, core+sim {:.2} us",
                requests as f64 / wall,
                per_request_replica(wall),
                per_request_replica(crypto),
                per_request_replica((wall - crypto).max(0.0)),
            );
            group.throughput(Throughput::Elements(requests));
            group.sample_size(10);
            group.bench_function(format!("batch_{batch}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += run_once(&c).0;
                    }
                    total
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, normal_case);
criterion_main!(benches);
