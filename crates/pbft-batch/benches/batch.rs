//! Batch build, encode (+ compress) and decode, for 64 B and 1 KiB requests,
//! compressible and random payloads; lz4 (the crate's codec) against zstd
//! level 1 (dev-dependency, for this comparison only).
//!
//! Throughput is in bytes of raw batch (MB/s); requests/s is
//! `REQUESTS_PER_BATCH / median time`.
//!
//! `cargo bench -p pbft-batch -- --warm-up-time 1 --measurement-time 3`

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pbft_batch::{
    decode, encode, raw_encoded_len, Batcher, BatcherConfig, CodecConfig, Compression, HEADER_LEN,
};

const REQUESTS_PER_BATCH: usize = 256;
const ZSTD_LEVEL: i32 = 1;

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Key-value commands as a client would send them: compressible.
fn compressible(size: usize, rng: &mut Rng) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    let mut s = format!(
        "{{\"op\":\"put\",\"client\":{},\"seq\":{},\"key\":\"user:{:08}\",\"value\":\"",
        rng.next() % 64,
        rng.next() % 100_000,
        rng.next() % 1_000_000
    );
    while s.len() < size {
        s.push_str(WORDS[(rng.next() % 8) as usize]);
        s.push(' ');
    }
    let mut bytes = s.into_bytes();
    bytes.truncate(size);
    bytes
}

fn random(size: usize, rng: &mut Rng) -> Vec<u8> {
    (0..size).map(|_| rng.next() as u8).collect()
}

fn requests(size: usize, kind: &str) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..REQUESTS_PER_BATCH)
        .map(|_| match kind {
            "compressible" => compressible(size, &mut rng),
            _ => random(size, &mut rng),
        })
        .collect()
}

fn codec(compression: Compression) -> CodecConfig {
    CodecConfig {
        compression,
        ..CodecConfig::default()
    }
}

fn zstd_encode(requests: &[Vec<u8>]) -> Vec<u8> {
    let raw = encode(requests, &codec(Compression::None)).unwrap();
    let body = zstd::bulk::compress(&raw[HEADER_LEN..], ZSTD_LEVEL).unwrap();
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&raw[..HEADER_LEN]);
    out[1] = 2;
    out.extend_from_slice(&body);
    out
}

fn zstd_decode(bytes: &[u8]) -> usize {
    let mut header = [0u8; 4];
    header.copy_from_slice(&bytes[6..10]);
    let body_len = u32::from_le_bytes(header) as usize;
    let body = zstd::bulk::decompress(&bytes[HEADER_LEN..], body_len).unwrap();
    // Same split as the crate: re-frame as raw and decode.
    let mut raw = Vec::with_capacity(HEADER_LEN + body.len());
    raw.extend_from_slice(&bytes[..HEADER_LEN]);
    raw[1] = 0;
    raw.extend_from_slice(&body);
    decode(&raw, &codec(Compression::None)).unwrap().len()
}

const SIZES: [(usize, &str); 2] = [(64, "64B"), (1024, "1KiB")];
const KINDS: [&str; 2] = ["compressible", "random"];

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    for (size, label) in SIZES {
        let requests = requests(size, "random");
        group.throughput(Throughput::BytesDecimal(raw_encoded_len(&requests) as u64));
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            let mut batcher: Batcher<&[u8]> = Batcher::new(BatcherConfig {
                batch_requests_max: REQUESTS_PER_BATCH,
                adaptive: false,
                ..BatcherConfig::default()
            })
            .unwrap();
            let mut now_us = 0;
            b.iter(|| {
                for request in &requests {
                    now_us += 1;
                    batcher.push(now_us, request.as_slice()).unwrap();
                }
                black_box(batcher.poll(now_us).unwrap().len())
            });
        });
    }
    group.finish();
}

fn encode_decode(c: &mut Criterion) {
    for (size, label) in SIZES {
        for kind in KINDS {
            let requests = requests(size, kind);
            let raw_len = raw_encoded_len(&requests);
            let raw = encode(&requests, &codec(Compression::None)).unwrap();
            let lz4 = encode(&requests, &codec(Compression::Lz4)).unwrap();
            let zstd = zstd_encode(&requests);
            eprintln!(
                "ratio {label} {kind}: raw {raw_len} B, lz4 stored {} B ({:.2}x, flag {}), zstd-{ZSTD_LEVEL} {} B ({:.2}x)",
                lz4.len(),
                raw_len as f64 / lz4.len() as f64,
                lz4[1],
                zstd.len(),
                raw_len as f64 / zstd.len() as f64,
            );

            let mut group = c.benchmark_group(format!("encode/{label}/{kind}"));
            group.throughput(Throughput::BytesDecimal(raw_len as u64));
            for (name, compression) in [("raw", Compression::None), ("lz4", Compression::Lz4)] {
                let config = codec(compression);
                group.bench_function(name, |b| {
                    b.iter(|| black_box(encode(black_box(&requests), &config).unwrap().len()));
                });
            }
            group.bench_function("zstd1", |b| {
                b.iter(|| black_box(zstd_encode(black_box(&requests)).len()));
            });
            group.finish();

            let mut group = c.benchmark_group(format!("decode/{label}/{kind}"));
            group.throughput(Throughput::BytesDecimal(raw_len as u64));
            let config = CodecConfig::default();
            for (name, bytes) in [("raw", &raw), ("lz4", &lz4)] {
                group.bench_function(name, |b| {
                    b.iter(|| black_box(decode(black_box(bytes), &config).unwrap().len()));
                });
            }
            group.bench_function("zstd1", |b| {
                b.iter(|| black_box(zstd_decode(black_box(&zstd))));
            });
            group.finish();
        }
    }
}

criterion_group!(benches, build, encode_decode);
criterion_main!(benches);
