//! Criterion benchmarks of the signature and digest costs that bound the
//! protocol's throughput: sign, verify, batch verify of 64, blake3.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pbft_crypto::{Keyring, SecretKey, Signer};
use pbft_types::{
    ClientEntry, ClientId, ClusterConfig, ClusterId, Digest, Prepare, ReplicaEntry, ReplicaId,
    Request, RequestNo, SeqNo, View,
};

fn setup(clients: usize) -> (Keyring, Vec<Signer<ClientId>>, Signer<ReplicaId>) {
    let replica_key = SecretKey::from_seed([200; 32]);
    let client_keys: Vec<SecretKey> = (0..clients)
        .map(|i| SecretKey::from_seed([u8::try_from(i).unwrap(); 32]))
        .collect();
    let config = ClusterConfig {
        cluster_id: ClusterId(1),
        replicas: vec![ReplicaEntry {
            id: ReplicaId(0),
            public_key: replica_key.public_key(),
            address: "127.0.0.1:7000".into(),
        }],
        clients: client_keys
            .iter()
            .enumerate()
            .map(|(i, k)| ClientEntry {
                id: ClientId(i as u64),
                public_key: k.public_key(),
            })
            .collect(),
    }
    .validated()
    .unwrap();
    let signers = client_keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| Signer::new(k, ClusterId(1), ClientId(i as u64)))
        .collect();
    (
        Keyring::new(&config).unwrap(),
        signers,
        Signer::new(replica_key, ClusterId(1), ReplicaId(0)),
    )
}

fn request(i: u64) -> Request {
    Request {
        request_no: RequestNo(i),
        read_only: false,
        op: vec![7; 64],
    }
}

fn bench(c: &mut Criterion) {
    let (keyring, clients, replica) = setup(64);
    let prepare = Prepare {
        view: View(3),
        seq: SeqNo(99),
        digest: Digest([5; 32]),
    };

    let mut g = c.benchmark_group("ed25519");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign_prepare", |b| {
        b.iter(|| replica.sign(prepare.clone()).unwrap())
    });
    let signed = replica.sign(prepare.clone()).unwrap();
    g.bench_function("verify_prepare", |b| {
        b.iter_batched(
            || signed.clone(),
            |s| keyring.verify(s).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let requests: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| c.sign(request(i as u64)).unwrap())
        .collect();
    g.throughput(Throughput::Elements(64));
    g.bench_function("verify_batch_64_requests", |b| {
        b.iter_batched(
            || requests.clone(),
            |r| {
                let out = keyring.verify_batch(r);
                assert!(out.iter().all(Result::is_ok));
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("verify_64_requests_one_by_one", |b| {
        b.iter_batched(
            || requests.clone(),
            |r| {
                for s in r {
                    keyring.verify(s).unwrap();
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("blake3");
    for size in [256usize, 64 * 1024] {
        let data = vec![0xa5u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("hash_{size}B"), |b| {
            b.iter(|| pbft_crypto::hash("bench", &data))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
