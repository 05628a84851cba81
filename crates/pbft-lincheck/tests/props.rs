//! Property tests: histories produced by a real sequential key-value model
//! under random concurrent timing always pass (with a valid linearization),
//! and changing one read to a value never written always fails, naming
//! that key.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use common::{build, simulate, verify, Spec};
use pbft_lincheck::{check, CheckFailure, History, Op, Outcome, Output};
use proptest::prelude::*;

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<u8>(),
        0u8..10,
        any::<u16>(),
        0u16..20,
        0u16..30,
        0u16..30,
        0u8..100,
    )
        .prop_map(|(client, kind, key, gap, lat1, lat2, fate)| Spec {
            client,
            kind,
            key,
            gap,
            lat1,
            lat2,
            fate,
        })
}

/// (specs, clients, keys): few keys so that operations contend.
fn scenario() -> impl Strategy<Value = (Vec<Spec>, u64, u64)> {
    (prop::collection::vec(spec(), 1..80), 1u64..=8, 1u64..=4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn model_histories_are_linearizable((specs, clients, keys) in scenario()) {
        let history = build(&simulate(&specs, clients, keys));
        match check(&history) {
            Ok(lin) => verify(&history, &lin),
            Err(e) => panic!("a model history was refused:\n{e}\n{history}"),
        }
        // And the text format keeps it.
        prop_assert_eq!(History::from_text(&history.to_text()).unwrap(), history);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_refused(
        (specs, clients, keys) in scenario(),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut recs = simulate(&specs, clients, keys);
        let reads: Vec<usize> = recs
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                matches!(r.op, Op::Get { .. }) && matches!(r.outcome, Outcome::Ok { .. })
            })
            .map(|(j, _)| j)
            .collect();
        prop_assume!(!reads.is_empty());
        let j = reads[pick.index(reads.len())];
        if let Outcome::Ok { output, .. } = &mut recs[j].outcome {
            *output = Output::value("never written");
        }
        let history = build(&recs);
        match check(&history) {
            Err(CheckFailure::Violation(v)) => {
                prop_assert_eq!(v.key.as_slice(), recs[j].op.key());
                prop_assert!(v.never_written.iter().any(|id| id.0 == j));
            }
            other => panic!("a read of a value never written passed: {other:?}\n{history}"),
        }
    }
}
