//! A linearizability checker for key-value histories.
//!
//! `cargo xtask cluster-test` records what its clients saw of the
//! replicated key-value store (`pbft_core::app::KvOp`): for each operation
//! the client, the operation, when it was invoked and when it completed,
//! and how: [`Outcome::Ok`] with its output, [`Outcome::Fail`] (it
//! definitely did not take effect) or [`Outcome::Unknown`] (it timed out
//! and may take effect at any time after its invocation, or never). This
//! crate decides whether that [`History`] is linearizable, that is,
//! whether the operations can be put in one order that respects real time
//! (an operation that completed before another was invoked comes first)
//! and in which every output is what a sequential store would answer.
//!
//! # Algorithm
//!
//! Linearizability is local (Herlihy & Wing's P-compositionality): a
//! history is linearizable if and only if the sub-history of each key is,
//! and every operation touches one key. [`check`] therefore splits the
//! history by key and, for each, runs the search of Wing & Gong as improved
//! by Lowe ("just-in-time linearization") with memoization of the pairs
//! (set of linearized operations, value of the key), the algorithm of
//! Knossos and Porcupine. Failed operations are dropped; unknown writes get
//! an open-ended completion, so the search may place them anywhere after
//! their invocation, or after everything, which is the same as never. A
//! key's search stops after [`CheckOptions::search_states_max`] states and
//! the verdict is then [`CheckFailure::Inconclusive`], never a pass.
//!
//! A [`Violation`] names the key and explains itself: the longest
//! linearizable prefix found, the value after it, and the operations that
//! could have come next, none of which can. Its `Display` is meant for a
//! log.
//!
//! # Example
//!
//! ```
//! use pbft_lincheck::{check, CheckFailure, History, Op, Output};
//!
//! let mut h = History::new();
//! // Client 1 writes "a", then client 2 reads it: linearizable.
//! let put = h.invoke(1, Op::put("k", "a"), 0);
//! h.complete_ok(put, Output::Put, 10)?;
//! let get = h.invoke(2, Op::get("k"), 20);
//! h.complete_ok(get, Output::value("a"), 30)?;
//! assert!(check(&h).is_ok());
//!
//! // A later read that sees the key absent is a stale read.
//! let stale = h.invoke(3, Op::get("k"), 40);
//! h.complete_ok(stale, Output::absent(), 50)?;
//! let Err(CheckFailure::Violation(v)) = check(&h) else { panic!("must be rejected") };
//! assert_eq!(v.key, b"k");
//! println!("{v}");
//!
//! // The history survives a round trip through its text format.
//! let text = h.to_text();
//! assert_eq!(text.parse::<History>()?, h);
//! # Ok::<(), pbft_lincheck::HistoryError>(())
//! ```

#![forbid(unsafe_code)]

mod check;
mod history;
pub mod text;

pub use check::{
    check, check_with, Candidate, CheckFailure, CheckOptions, Inconclusive, Linearization,
    Violation, DEFAULT_SEARCH_STATES_MAX,
};
pub use history::{ClientId, History, HistoryError, Op, OpId, Operation, Outcome, Output};
pub use text::{fmt_bytes, HEADER};
