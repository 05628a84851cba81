//! Hand-written histories with exact expected verdicts: those that must be
//! rejected (with the key and explanation checked) and those that must pass.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use pbft_lincheck::{
    check, check_with, CheckFailure, CheckOptions, History, Linearization, Op, OpId, Output,
    Violation,
};

fn ok(h: &mut History, client: u64, op: Op, invoke: u64, done: u64, out: Output) -> OpId {
    let id = h.invoke(client, op, invoke);
    h.complete_ok(id, out, done).unwrap();
    id
}

fn unknown(h: &mut History, client: u64, op: Op, invoke: u64) -> OpId {
    let id = h.invoke(client, op, invoke);
    h.complete_unknown(id).unwrap();
    id
}

fn get(v: &str) -> Output {
    Output::value(v)
}

fn passes(h: &History) -> Linearization {
    match check(h) {
        Ok(lin) => {
            common::verify(h, &lin);
            lin
        }
        Err(e) => panic!("expected linearizable, got:\n{e}\n{h}"),
    }
}

fn rejected(h: &History) -> Violation {
    match check(h) {
        Err(CheckFailure::Violation(v)) => {
            // The explanation renders and names the key.
            let text = v.to_string();
            assert!(text.contains("not linearizable: key"), "{text}");
            *v
        }
        other => panic!("expected a violation, got {other:?}\n{h}"),
    }
}

// ---------------------------------------------------------------- rejected

#[test]
fn stale_read_after_completed_write_is_rejected() {
    let mut h = History::new();
    let p1 = ok(&mut h, 1, Op::put("k", "1"), 0, 10, Output::Put);
    let p2 = ok(&mut h, 1, Op::put("k", "2"), 20, 30, Output::Put);
    let g = ok(&mut h, 2, Op::get("k"), 40, 50, get("1"));
    let v = rejected(&h);
    assert_eq!(v.key, b"k");
    assert!(v.never_written.is_empty());
    assert_eq!(v.prefix, vec![p1, p2]);
    assert_eq!(v.state_after_prefix, Some(b"2".to_vec()));
    assert_eq!(v.deadline, Some(g));
    assert_eq!(v.candidates.len(), 1);
    assert_eq!(v.candidates[0].id, g);
    assert!(!v.candidates[0].consistent);
    assert!(v.other_keys.is_empty());
}

#[test]
fn stale_absent_read_after_completed_write_is_rejected() {
    let mut h = History::new();
    ok(&mut h, 1, Op::put("k", "1"), 0, 10, Output::Put);
    ok(&mut h, 2, Op::get("k"), 11, 12, Output::absent());
    assert_eq!(rejected(&h).key, b"k");
}

#[test]
fn read_of_a_value_never_written_is_rejected() {
    let mut h = History::new();
    ok(&mut h, 1, Op::put("k", "a"), 0, 10, Output::Put);
    let g = ok(&mut h, 2, Op::get("k"), 5, 15, get("zz"));
    let v = rejected(&h);
    assert_eq!(v.never_written, vec![g]);
    assert!(
        v.to_string().contains("read of a value no put wrote"),
        "{v}"
    );
}

#[test]
fn read_of_a_value_only_a_failed_put_wrote_is_rejected() {
    let mut h = History::new();
    let p = h.invoke(1, Op::put("k", "x"), 0);
    h.complete_fail(p, 5).unwrap();
    let g = ok(&mut h, 2, Op::get("k"), 1, 20, get("x"));
    assert_eq!(rejected(&h).never_written, vec![g]);
}

#[test]
fn sequential_reads_in_an_impossible_order_are_rejected() {
    // "a" is written once, before both reads; "b" is written concurrently.
    // After a read saw "b", a later read cannot see "a" again.
    let mut h = History::new();
    ok(&mut h, 1, Op::put("k", "a"), 0, 10, Output::Put);
    ok(&mut h, 2, Op::put("k", "b"), 20, 100, Output::Put);
    let g1 = ok(&mut h, 3, Op::get("k"), 30, 40, get("b"));
    let g2 = ok(&mut h, 3, Op::get("k"), 50, 60, get("a"));
    let v = rejected(&h);
    assert_eq!(v.key, b"k");
    // The furthest the search gets: put a, put b, the read of b.
    assert_eq!(v.prefix.len(), 3);
    assert_eq!(v.prefix[2], g1);
    assert_eq!(v.deadline, Some(g2));
}

#[test]
fn delete_reporting_absent_after_a_completed_put_is_rejected() {
    let mut h = History::new();
    ok(&mut h, 1, Op::put("k", "1"), 0, 10, Output::Put);
    let d = ok(&mut h, 2, Op::delete("k"), 20, 30, Output::Delete(false));
    let v = rejected(&h);
    assert_eq!(v.deadline, Some(d));
    assert_eq!(v.state_after_prefix, Some(b"1".to_vec()));
}

#[test]
fn delete_reporting_existed_on_a_never_written_key_is_rejected() {
    let mut h = History::new();
    ok(&mut h, 1, Op::delete("k"), 0, 10, Output::Delete(true));
    let v = rejected(&h);
    assert!(v.prefix.is_empty());
    assert_eq!(v.state_after_prefix, None);
}

#[test]
fn two_deletes_of_one_put_both_existing_are_rejected() {
    let mut h = History::new();
    ok(&mut h, 1, Op::put("k", "1"), 0, 10, Output::Put);
    ok(&mut h, 2, Op::delete("k"), 20, 40, Output::Delete(true));
    ok(&mut h, 3, Op::delete("k"), 25, 45, Output::Delete(true));
    rejected(&h);
}

#[test]
fn a_read_cannot_see_an_unknown_write_invoked_after_it_completed() {
    let mut h = History::new();
    ok(&mut h, 1, Op::get("k"), 0, 10, get("x"));
    unknown(&mut h, 2, Op::put("k", "x"), 20);
    rejected(&h);
}

#[test]
fn an_unknown_write_seen_then_unseen_without_another_write_is_rejected() {
    let mut h = History::new();
    unknown(&mut h, 1, Op::put("k", "x"), 0);
    ok(&mut h, 2, Op::get("k"), 10, 20, get("x"));
    ok(&mut h, 2, Op::get("k"), 30, 40, Output::absent());
    rejected(&h);
}

#[test]
fn a_client_own_write_then_stale_read_is_rejected() {
    let mut h = History::new();
    ok(&mut h, 1, Op::put("k", "old"), 0, 5, Output::Put);
    ok(&mut h, 1, Op::put("k", "new"), 10, 20, Output::Put);
    ok(&mut h, 1, Op::get("k"), 21, 30, get("old"));
    rejected(&h);
}

#[test]
fn the_violation_names_the_bad_key_among_good_ones() {
    let mut h = History::new();
    ok(&mut h, 1, Op::put("good", "1"), 0, 10, Output::Put);
    ok(&mut h, 2, Op::get("good"), 20, 30, get("1"));
    ok(&mut h, 1, Op::put("bad", "1"), 0, 10, Output::Put);
    ok(&mut h, 2, Op::get("bad"), 20, 30, Output::absent());
    ok(&mut h, 3, Op::get("worse"), 20, 30, get("never"));
    let v = rejected(&h);
    assert_eq!(v.key, b"bad");
    assert_eq!(v.ops.len(), 2);
    assert_eq!(v.other_keys, vec![b"worse".to_vec()]);
}

// ------------------------------------------------------------------ passes

#[test]
fn concurrent_put_and_get_may_see_either_value() {
    for seen in [Output::absent(), get("1")] {
        let mut h = History::new();
        ok(&mut h, 1, Op::put("k", "1"), 0, 100, Output::Put);
        ok(&mut h, 2, Op::get("k"), 10, 20, seen);
        passes(&h);
    }
    for seen in ["1", "2"] {
        let mut h = History::new();
        ok(&mut h, 1, Op::put("k", "1"), 0, 10, Output::Put);
        ok(&mut h, 2, Op::put("k", "2"), 20, 100, Output::Put);
        ok(&mut h, 3, Op::get("k"), 30, 40, get(seen));
        passes(&h);
    }
}

#[test]
fn concurrent_reads_may_see_values_in_either_order() {
    // Unlike the sequential case, overlapping reads may see "b" then "a".
    let mut h = History::new();
    ok(&mut h, 1, Op::put("k", "a"), 0, 10, Output::Put);
    ok(&mut h, 2, Op::put("k", "b"), 20, 100, Output::Put);
    ok(&mut h, 3, Op::get("k"), 30, 60, get("b"));
    ok(&mut h, 4, Op::get("k"), 50, 70, get("a"));
    passes(&h);
}

#[test]
fn unknown_writes_may_or_may_not_have_happened() {
    for seen in [Output::absent(), get("x")] {
        let mut h = History::new();
        unknown(&mut h, 1, Op::put("k", "x"), 0);
        ok(&mut h, 2, Op::get("k"), 10, 20, seen.clone());
        ok(&mut h, 2, Op::get("k"), 30, 40, seen);
        let lin = passes(&h);
        assert_eq!(
            lin.order[&b"k".to_vec()].len(),
            if lin.omitted.is_empty() { 3 } else { 2 }
        );
    }
    // Absent first, then seen much later: the write took effect late.
    let mut h = History::new();
    let w = unknown(&mut h, 1, Op::put("k", "x"), 0);
    ok(&mut h, 2, Op::get("k"), 10, 20, Output::absent());
    ok(&mut h, 2, Op::get("k"), 1_000_000, 1_000_010, get("x"));
    let lin = passes(&h);
    assert_eq!(lin.order[&b"k".to_vec()][1], w);
}

#[test]
fn unknown_deletes_may_or_may_not_have_happened() {
    for seen in [Output::absent(), get("1")] {
        let mut h = History::new();
        ok(&mut h, 1, Op::put("k", "1"), 0, 10, Output::Put);
        unknown(&mut h, 1, Op::delete("k"), 20);
        ok(&mut h, 2, Op::get("k"), 30, 40, seen);
        passes(&h);
    }
}

#[test]
fn reads_of_absent_keys_before_any_write_pass() {
    let mut h = History::new();
    ok(&mut h, 1, Op::get("k"), 0, 10, Output::absent());
    ok(&mut h, 2, Op::delete("k"), 5, 15, Output::Delete(false));
    ok(&mut h, 1, Op::get("other"), 20, 30, Output::absent());
    ok(&mut h, 1, Op::put("k", "v"), 40, 50, Output::Put);
    ok(&mut h, 2, Op::get("k"), 60, 70, get("v"));
    ok(&mut h, 2, Op::delete("k"), 80, 90, Output::Delete(true));
    ok(&mut h, 2, Op::get("k"), 100, 110, Output::absent());
    let lin = passes(&h);
    assert_eq!(lin.order.len(), 2);
    assert_eq!(lin.order[&b"k".to_vec()].len(), 6);
}

#[test]
fn failed_ops_and_open_reads_are_dropped() {
    let mut h = History::new();
    let f = h.invoke(1, Op::put("k", "x"), 0);
    h.complete_fail(f, 5).unwrap();
    let g = unknown(&mut h, 2, Op::get("k"), 0);
    let p = h.invoke(3, Op::get("k"), 1); // pending forever
    ok(&mut h, 1, Op::get("k"), 10, 20, Output::absent());
    let lin = passes(&h);
    assert_eq!(lin.dropped, vec![f, g, p]);
}

#[test]
fn pending_writes_count_as_unknown() {
    let mut h = History::new();
    h.invoke(1, Op::put("k", "x"), 0);
    ok(&mut h, 2, Op::get("k"), 10, 20, get("x"));
    passes(&h);
}

#[test]
fn touching_intervals_are_concurrent() {
    // The put completes in the microsecond the get is invoked: either order.
    let mut h = History::new();
    ok(&mut h, 1, Op::put("k", "1"), 0, 10, Output::Put);
    ok(&mut h, 2, Op::get("k"), 10, 20, Output::absent());
    passes(&h);
}

#[test]
fn empty_history_passes() {
    let lin = passes(&History::new());
    assert!(lin.order.is_empty());
}

// ---------------------------------------------------------- search bound

/// Many concurrent writes, then a read no order of them explains: proving
/// it means visiting every subset of the writes.
fn hard_violation(writes: u64) -> History {
    let mut h = History::new();
    for i in 0..writes {
        ok(
            &mut h,
            i,
            Op::put("k", format!("w{i}")),
            0,
            100 + i,
            Output::Put,
        );
    }
    ok(&mut h, 100, Op::get("k"), 200, 210, Output::absent());
    h
}

#[test]
fn exceeding_the_bound_is_inconclusive_never_a_pass() {
    let h = hard_violation(12);
    let small = CheckOptions {
        search_states_max: 1000,
    };
    match check_with(&h, &small) {
        Err(CheckFailure::Inconclusive(i)) => {
            assert_eq!(i.keys, vec![b"k".to_vec()]);
            assert_eq!(i.search_states_max, 1000);
            assert!(i.to_string().contains("inconclusive"));
        }
        other => panic!("expected inconclusive, got {other:?}"),
    }
    // With the default bound the violation is found.
    rejected(&h);
}

#[test]
fn a_violation_elsewhere_wins_over_inconclusive() {
    let mut h = hard_violation(12);
    ok(&mut h, 1, Op::get("other"), 0, 10, get("never"));
    let small = CheckOptions {
        search_states_max: 1000,
    };
    match check_with(&h, &small) {
        Err(CheckFailure::Violation(v)) => assert_eq!(v.key, b"other"),
        other => panic!("expected a violation, got {other:?}"),
    }
}
