//! Performance: 10,000 operations over 100 keys from 8 concurrent clients
//! (with failed, unknown and pending operations) check well under a second
//! in the dev profile. Prints the time (a figure to read, not an assertion:
//! the machine is shared); run with `--nocapture` to see it.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::time::Instant;

use pbft_lincheck::{check, CheckFailure};

#[test]
fn ten_thousand_ops_over_100_keys_with_8_clients() {
    let mut rng = common::Rng(42);
    let specs = rng.specs(10_000, 100);
    let history = common::build(&common::simulate(&specs, 8, 100));
    assert_eq!(history.len(), 10_000);

    let start = Instant::now();
    let lin = check(&history).unwrap();
    let pass = start.elapsed();
    common::verify(&history, &lin);
    assert_eq!(lin.order.len(), 100);

    // A violation is found about as fast: one stale read in the middle.
    let mut recs = common::simulate(&specs, 8, 100);
    let j = (5_000..)
        .find(|&j| {
            matches!(recs[j].op, pbft_lincheck::Op::Get { .. })
                && matches!(recs[j].outcome, pbft_lincheck::Outcome::Ok { .. })
        })
        .unwrap();
    if let pbft_lincheck::Outcome::Ok { output, .. } = &mut recs[j].outcome {
        *output = pbft_lincheck::Output::value("stale");
    }
    let bad = common::build(&recs);
    let start = Instant::now();
    let verdict = check(&bad);
    let fail = start.elapsed();
    assert!(matches!(verdict, Err(CheckFailure::Violation(_))));

    println!(
        "10k ops / 100 keys / 8 clients: pass in {:.1} ms ({} states), violation in {:.1} ms",
        pass.as_secs_f64() * 1e3,
        lin.states_explored,
        fail.as_secs_f64() * 1e3
    );
}
