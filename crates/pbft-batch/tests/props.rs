//! Property tests: round trip, no panic on arbitrary bytes, bombs refused,
//! and the batcher's bounds and delay.

// Test helpers may unwrap and index: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use pbft_batch::{
    decode, encode, raw_encoded_len, BatchError, Batcher, BatcherConfig, CloseReason, CodecConfig,
    Compression, HEADER_LEN,
};
use proptest::prelude::*;

/// Requests that are sometimes compressible (repeated bytes), sometimes not.
fn requests() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let request = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (any::<u8>(), 0usize..2000).prop_map(|(b, n)| vec![b; n]),
        (0usize..64).prop_map(|n| b"{\"op\":\"put\",\"key\":\"k\"}".repeat(n)),
    ];
    proptest::collection::vec(request, 0..64)
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![Just(Compression::None), Just(Compression::Lz4)]
}

proptest! {
    #[test]
    fn round_trip(
        requests in requests(),
        compression in compression(),
        compress_bytes_min in 0usize..2048,
        compress_savings_percent_min in 0u32..=100,
    ) {
        let config = CodecConfig {
            compression,
            compress_bytes_min,
            compress_savings_percent_min,
            ..CodecConfig::default()
        };
        let bytes = encode(&requests, &config).unwrap();
        prop_assert!(bytes.len() <= raw_encoded_len(&requests));
        let decoded = decode(&bytes, &config).unwrap();
        prop_assert_eq!(decoded.len(), requests.len());
        prop_assert_eq!(decoded.to_vecs(), requests);
        if compression == Compression::None {
            prop_assert_eq!(decoded.compression(), Compression::None);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode(&bytes, &CodecConfig::default());
    }

    #[test]
    fn corrupted_batches_never_panic(
        requests in requests(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let config = CodecConfig::default();
        let mut bytes = encode(&requests, &config).unwrap();
        for (index, value) in flips {
            let i = index.index(bytes.len());
            bytes[i] ^= value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(decoded) = decode(&bytes, &config) {
            // Whatever decodes respects the bounds.
            prop_assert!(decoded.len() <= config.batch_requests_max);
            prop_assert!(decoded.iter().map(|r| r.len() + 4).sum::<usize>() + HEADER_LEN
                <= config.batch_bytes_max);
        }
    }

    #[test]
    fn bomb_is_refused(extra in 1usize..(1 << 20), byte in any::<u8>()) {
        let strict = CodecConfig { batch_bytes_max: 64 * 1024, ..CodecConfig::default() };
        let lax = CodecConfig { batch_bytes_max: 16 << 20, ..CodecConfig::default() };
        // One highly compressible request just over the strict bound.
        let request = vec![byte; strict.batch_bytes_max - HEADER_LEN - 4 + extra];
        let bytes = encode(&[&request], &lax).unwrap();
        prop_assert_eq!(bytes[1], 1, "compressed");
        prop_assert!(bytes.len() <= strict.batch_bytes_max, "small on the wire");
        prop_assert!(
            matches!(
                decode(&bytes, &strict),
                Err(BatchError::BatchTooLarge { limit, .. }) if limit == strict.batch_bytes_max
            ),
            "bomb must be refused"
        );
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Advance the clock, then push a request of this many bytes.
    Push { dt_us: u64, len: usize },
    /// Advance the clock, then take every ready batch.
    Poll { dt_us: u64 },
    /// Report the pipeline's occupancy.
    InFlight(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        6 => (0u64..400, prop_oneof![0usize..40, 0usize..300])
            .prop_map(|(dt_us, len)| Op::Push { dt_us, len }),
        2 => (0u64..1_500).prop_map(|dt_us| Op::Poll { dt_us }),
        1 => (0usize..6).prop_map(Op::InFlight),
    ];
    proptest::collection::vec(op, 0..400)
}

fn batcher_config() -> impl Strategy<Value = BatcherConfig> {
    (
        1usize..20,
        1usize..20,
        40usize..2_000,
        0u64..1_000,
        any::<bool>(),
        1usize..5,
        0usize..3,
    )
        .prop_map(
            |(requests_max, requests_min, bytes_max, delay_us, adaptive, window, slack)| {
                let requests_max = requests_max.max(requests_min);
                BatcherConfig {
                    batch_requests_max: requests_max,
                    batch_requests_min: requests_min,
                    batch_bytes_max: bytes_max,
                    batch_delay_us_max: delay_us,
                    pending_requests_max: requests_max * (1 + slack),
                    pending_bytes_max: bytes_max * (1 + slack),
                    adaptive,
                    in_flight_batches_max: window,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Drives the batcher like a host would: before the clock passes the
    /// batcher's deadline, poll at the deadline (a timer firing); poll ops
    /// take every ready batch. Checks every batch's bounds, that no request
    /// waited past the delay before its batch closed, that requests come
    /// out in order, exactly once, and that the queue stays bounded.
    #[test]
    fn batcher_respects_bounds_and_delay(config in batcher_config(), ops in ops()) {
        let mut batcher: Batcher<Vec<u8>> = Batcher::new(config.clone()).unwrap();
        let mut now_us = 0u64;
        let mut accepted: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut arrival_of: Vec<u64> = Vec::new();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut next_id = 0u32;
        let mut take = true;

        let check = |batch: pbft_batch::Batch<Vec<u8>>, out: &mut Vec<Vec<u8>>,
                         arrival_of: &[u64]| -> Result<(), TestCaseError> {
            prop_assert!(!batch.is_empty());
            prop_assert!(batch.len() <= config.batch_requests_max);
            prop_assert!(batch.raw_encoded_len() <= config.batch_bytes_max);
            prop_assert_eq!(batch.raw_encoded_len(), raw_encoded_len(batch.requests()));
            prop_assert!(encode(batch.requests(), &CodecConfig::for_batcher(&config)).is_ok());
            for request in batch.requests() {
                let id = u32::from_le_bytes(request[..4].try_into().unwrap()) as usize;
                let waited = batch.closed_at_us() - arrival_of[id];
                prop_assert!(waited <= config.batch_delay_us_max,
                    "request {} waited {} us", id, waited);
            }
            if batch.reason() == CloseReason::Delay {
                prop_assert_eq!(
                    batch.closed_at_us(),
                    batch.first_arrival_us() + config.batch_delay_us_max
                );
            }
            out.extend(batch.into_requests());
            Ok(())
        };

        for op in ops {
            let dt_us = match op {
                Op::Push { dt_us, .. } | Op::Poll { dt_us } => dt_us,
                Op::InFlight(_) => 0,
            };
            let target = now_us + dt_us;
            // Timers fire before the clock passes them.
            while let Some(deadline) = batcher.next_deadline_us() {
                if deadline > target {
                    break;
                }
                now_us = now_us.max(deadline);
                if take {
                    while let Some(batch) = batcher.poll(now_us) {
                        check(batch, &mut out, &arrival_of)?;
                    }
                } else {
                    // The host's pipeline is full: close without taking.
                    batcher.tick(now_us);
                }
            }
            now_us = target;
            match op {
                Op::Push { len, .. } => {
                    let mut request = next_id.to_le_bytes().to_vec();
                    request.resize(len.max(4), 0xAB);
                    match batcher.push(now_us, request.clone()) {
                        Ok(()) => {
                            prop_assert_eq!(arrival_of.len(), next_id as usize);
                            arrival_of.push(now_us);
                            accepted.push((now_us, request));
                            next_id += 1;
                        }
                        Err(BatchError::RequestTooLarge { limit, got }) => {
                            prop_assert_eq!(limit, config.request_bytes_max());
                            prop_assert!(got > limit);
                        }
                        Err(BatchError::PendingRequestsFull { limit }) => {
                            prop_assert_eq!(batcher.pending_requests(), limit);
                        }
                        Err(BatchError::PendingBytesFull { limit, got }) => {
                            prop_assert!(got > limit);
                        }
                        Err(other) => prop_assert!(false, "unexpected {:?}", other),
                    }
                }
                Op::Poll { .. } => {
                    take = true;
                    while let Some(batch) = batcher.poll(now_us) {
                        check(batch, &mut out, &arrival_of)?;
                    }
                }
                Op::InFlight(n) => {
                    batcher.set_in_flight_batches(n);
                    // A full pipeline stops taking batches until the next poll op.
                    take = n < config.in_flight_batches_max;
                }
            }
            prop_assert!(batcher.pending_requests() <= config.pending_requests_max);
            prop_assert!(batcher.pending_bytes() <= config.pending_bytes_max);
            prop_assert!(batcher.target_requests() <= config.batch_requests_max);
            prop_assert!(batcher.target_requests() >= 1);
        }
        // Drain: every accepted request comes out once, in order.
        loop {
            while let Some(batch) = batcher.poll(now_us) {
                check(batch, &mut out, &arrival_of)?;
            }
            match batcher.next_deadline_us() {
                Some(deadline) => now_us = now_us.max(deadline),
                None => break,
            }
        }
        prop_assert_eq!(batcher.pending_requests(), 0);
        prop_assert_eq!(batcher.pending_bytes(), 0);
        let expected: Vec<Vec<u8>> = accepted.into_iter().map(|(_, r)| r).collect();
        prop_assert_eq!(out, expected);
    }
}
