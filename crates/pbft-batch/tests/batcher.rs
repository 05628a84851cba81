//! Unit tests of the batcher, with exact expected batches.

// Test helpers may unwrap and index: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use pbft_batch::{Batch, BatchError, Batcher, BatcherConfig, CloseReason};

fn fixed(requests: usize, bytes: usize, delay_us: u64) -> Batcher<Vec<u8>> {
    Batcher::new(BatcherConfig {
        batch_requests_max: requests,
        batch_bytes_max: bytes,
        batch_delay_us_max: delay_us,
        adaptive: false,
        ..BatcherConfig::default()
    })
    .unwrap()
}

/// First byte of each request, reason, first arrival, close time, raw size.
type Summary = (Vec<u8>, CloseReason, u64, u64, usize);

fn summary(batch: &Batch<Vec<u8>>) -> Summary {
    (
        batch.requests().iter().map(|r| r[0]).collect(),
        batch.reason(),
        batch.first_arrival_us(),
        batch.closed_at_us(),
        batch.raw_encoded_len(),
    )
}

/// Pushes, then takes every batch ready at that time.
fn push(b: &mut Batcher<Vec<u8>>, now_us: u64, request: Vec<u8>) -> Vec<Summary> {
    b.push(now_us, request).unwrap();
    std::iter::from_fn(|| b.poll(now_us))
        .map(|batch| summary(&batch))
        .collect()
}

#[test]
fn closes_at_count() {
    let mut b = fixed(3, 1 << 20, 1_000);
    assert_eq!(push(&mut b, 0, vec![1]), vec![]);
    assert_eq!(push(&mut b, 5, vec![2]), vec![]);
    assert_eq!(b.pending_requests(), 2);
    assert_eq!(b.pending_bytes(), 2);
    assert_eq!(
        push(&mut b, 7, vec![3, 3]),
        vec![(vec![1, 2, 3], CloseReason::Count, 0, 7, 10 + 5 + 5 + 6)]
    );
    assert_eq!(b.pending_requests(), 0);
    assert_eq!(b.pending_bytes(), 0);
    assert_eq!(b.next_deadline_us(), None);
    assert_eq!(b.poll(10_000), None);
}

#[test]
fn closes_at_delay() {
    let mut b = fixed(100, 1 << 20, 250);
    assert_eq!(push(&mut b, 1_000, vec![1]), vec![]);
    assert_eq!(push(&mut b, 1_100, vec![2]), vec![]);
    assert_eq!(b.next_deadline_us(), Some(1_250));
    assert_eq!(b.poll(1_249), None);
    let batch = b.poll(1_250).unwrap();
    assert_eq!(
        summary(&batch),
        (vec![1, 2], CloseReason::Delay, 1_000, 1_250, 20)
    );
    // A push after the deadline first closes the overdue batch.
    assert_eq!(push(&mut b, 2_000, vec![3]), vec![]);
    assert_eq!(
        push(&mut b, 2_300, vec![4]),
        vec![(vec![3], CloseReason::Delay, 2_000, 2_300, 15)]
    );
    assert_eq!(b.next_deadline_us(), Some(2_550));
}

#[test]
fn closes_at_bytes() {
    // 10 header + 2 * (4 + 8) = 34 bytes: two 8-byte requests fill it.
    let mut b = fixed(100, 34, 1_000);
    assert_eq!(push(&mut b, 0, vec![1; 8]), vec![]);
    assert_eq!(
        push(&mut b, 1, vec![2; 8]),
        vec![(vec![1, 2], CloseReason::Bytes, 0, 1, 34)]
    );
    // A request that does not fit closes the open batch and starts the next.
    assert_eq!(push(&mut b, 2, vec![3; 2]), vec![]);
    assert_eq!(
        push(&mut b, 3, vec![4; 15]),
        vec![(vec![3], CloseReason::Bytes, 2, 3, 16)]
    );
    assert_eq!(b.pending_requests(), 1);
    // Largest request: 34 - 10 - 4 = 20 bytes.
    assert_eq!(
        b.push(4, vec![5; 21]),
        Err(BatchError::RequestTooLarge { limit: 20, got: 21 })
    );
    // After an open batch, a full-size request closes two batches.
    assert_eq!(
        push(&mut b, 5, vec![6; 20]),
        vec![
            (vec![4], CloseReason::Bytes, 3, 5, 29),
            (vec![6], CloseReason::Bytes, 5, 5, 34),
        ]
    );
}

#[test]
fn zero_delay_closes_every_push() {
    let mut b = fixed(100, 1 << 20, 0);
    assert_eq!(
        push(&mut b, 42, vec![9]),
        vec![(vec![9], CloseReason::Delay, 42, 42, 15)]
    );
}

#[test]
fn closed_batches_wait_inside_and_the_queue_is_bounded() {
    let mut b = Batcher::new(BatcherConfig {
        batch_requests_max: 2,
        batch_bytes_max: 1_000,
        pending_requests_max: 5,
        pending_bytes_max: 1_000,
        adaptive: false,
        ..BatcherConfig::default()
    })
    .unwrap();
    // The caller's pipeline is full: it takes nothing.
    for i in 0..5 {
        b.push(i, vec![i as u8]).unwrap();
    }
    assert_eq!(b.ready_batches(), 2);
    assert_eq!(b.pending_requests(), 5);
    assert_eq!(b.next_deadline_us(), Some(1_004));
    b.tick(1_004);
    assert_eq!(b.ready_batches(), 3);
    assert_eq!(b.next_deadline_us(), None);
    assert_eq!(
        b.push(5, vec![5]),
        Err(BatchError::PendingRequestsFull { limit: 5 })
    );
    // Room again: take one batch, and the next push is accepted.
    assert_eq!(
        summary(&b.poll(1_006).unwrap()),
        (vec![0, 1], CloseReason::Count, 0, 1, 20)
    );
    b.push(1_007, vec![7]).unwrap();
    assert_eq!(b.pending_requests(), 4);

    let mut c = Batcher::new(BatcherConfig {
        batch_requests_max: 100,
        batch_bytes_max: 1_000,
        pending_bytes_max: 1_000,
        adaptive: false,
        ..BatcherConfig::default()
    })
    .unwrap();
    for _ in 0..3 {
        c.push(0, vec![0; 300]).unwrap();
    }
    assert_eq!(
        c.push(0, vec![0; 101]),
        Err(BatchError::PendingBytesFull {
            limit: 1_000,
            got: 1_001
        })
    );
    c.push(0, vec![0; 100]).unwrap();
    assert_eq!(c.pending_bytes(), 1_000);
}

#[test]
fn flush_empties_the_batcher() {
    let mut b = fixed(100, 1 << 20, 1_000);
    assert_eq!(b.flush(0), None);
    b.push(3, vec![1]).unwrap();
    b.push(4, vec![2]).unwrap();
    let batch = b.flush(5).unwrap();
    assert_eq!(summary(&batch), (vec![1, 2], CloseReason::Flush, 3, 5, 20));
    assert_eq!(b.flush(6), None);
    assert_eq!(b.pending_requests(), 0);
}

#[test]
fn time_going_backwards_is_clamped() {
    let mut b = fixed(100, 1 << 20, 100);
    b.push(1_000, vec![1]).unwrap();
    b.push(10, vec![2]).unwrap();
    assert_eq!(b.next_deadline_us(), Some(1_100));
    assert_eq!(b.poll(50), None);
    let batch = b.poll(1_100).unwrap();
    assert_eq!(batch.first_arrival_us(), 1_000);
    assert_eq!(batch.len(), 2);
}

#[test]
fn adaptive_target_grows_when_saturated_and_shrinks_when_idle() {
    let mut b: Batcher<Vec<u8>> = Batcher::new(BatcherConfig {
        batch_requests_max: 8,
        batch_requests_min: 1,
        in_flight_batches_max: 4,
        batch_delay_us_max: 1_000,
        ..BatcherConfig::default()
    })
    .unwrap();
    let mut sizes = Vec::new();
    let mut targets = Vec::new();
    let mut now = 0;
    // Pipeline full: every close doubles the target, up to 8.
    b.set_in_flight_batches(4);
    for _ in 0..30 {
        now += 1;
        b.push(now, vec![0]).unwrap();
        if let Some(batch) = b.poll(now) {
            sizes.push(batch.len());
            targets.push(b.target_requests());
        }
    }
    assert_eq!(sizes, vec![1, 2, 4, 8, 8]);
    assert_eq!(targets, vec![2, 4, 8, 8, 8]);
    // Half full: the target holds.
    b.set_in_flight_batches(2);
    assert_eq!(b.flush(now).unwrap().len(), 30 - 23);
    assert_eq!(b.target_requests(), 8);
    // Less than half full: each close halves it, down to 1.
    b.set_in_flight_batches(1);
    sizes.clear();
    for _ in 0..16 {
        now += 1;
        b.push(now, vec![0]).unwrap();
        if let Some(batch) = b.poll(now) {
            sizes.push(batch.len());
        }
    }
    assert_eq!(sizes, vec![8, 4, 2, 1, 1]);
    assert_eq!(b.target_requests(), 1);
}

#[test]
fn config_validation_names_the_field() {
    let ok = BatcherConfig::default();
    assert_eq!(ok.validate(), Ok(()));
    let field = |c: BatcherConfig| match Batcher::<Vec<u8>>::new(c) {
        Err(BatchError::InvalidConfig { field, .. }) => field,
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    let cases = [
        (
            BatcherConfig {
                batch_requests_max: 0,
                ..ok.clone()
            },
            "batch_requests_max",
        ),
        (
            BatcherConfig {
                batch_requests_min: 0,
                ..ok.clone()
            },
            "batch_requests_min",
        ),
        (
            BatcherConfig {
                batch_requests_min: 2000,
                ..ok.clone()
            },
            "batch_requests_min",
        ),
        (
            BatcherConfig {
                batch_bytes_max: 10,
                ..ok.clone()
            },
            "batch_bytes_max",
        ),
        (
            BatcherConfig {
                pending_requests_max: 1000,
                ..ok.clone()
            },
            "pending_requests_max",
        ),
        (
            BatcherConfig {
                pending_bytes_max: 1000,
                ..ok.clone()
            },
            "pending_bytes_max",
        ),
        (
            BatcherConfig {
                in_flight_batches_max: 0,
                ..ok.clone()
            },
            "in_flight_batches_max",
        ),
    ];
    for (config, expected) in cases {
        assert_eq!(field(config), expected);
    }
    // Not adaptive: the adaptive fields are ignored.
    assert_eq!(
        BatcherConfig {
            adaptive: false,
            batch_requests_min: 0,
            in_flight_batches_max: 0,
            ..ok
        }
        .validate(),
        Ok(())
    );
}
