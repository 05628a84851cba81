//! The text format: exact output, round trips, and typed parse and builder
//! errors.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use pbft_lincheck::{fmt_bytes, History, HistoryError, Op, OpId, Output, HEADER};

fn sample() -> History {
    let mut h = History::new();
    let a = h.invoke(1, Op::put("k1", "v1"), 100);
    let b = h.invoke(2, Op::get("k1"), 120);
    let c = h.invoke(3, Op::get("k2"), 130);
    h.complete_ok(c, Output::absent(), 140).unwrap();
    h.complete_ok(a, Output::Put, 250).unwrap();
    h.complete_ok(b, Output::value("v1"), 300).unwrap();
    let d = h.invoke(1, Op::delete("k1"), 260);
    h.complete_ok(d, Output::Delete(true), 400).unwrap();
    let e = h.invoke(2, Op::put("k2", "v2"), 310);
    h.complete_unknown(e).unwrap();
    let f = h.invoke(3, Op::put("k2", "v3"), 150);
    h.complete_fail(f, 160).unwrap();
    h.invoke(1, Op::delete("k2"), 410);
    let g = h.invoke(4, Op::delete("k3"), 420);
    h.complete_ok(g, Output::Delete(false), 430).unwrap();
    let w = h.invoke(5, Op::put(&b"sp ace\"\\\x00\xff"[..], ""), 500);
    h.complete_ok(w, Output::Put, 510).unwrap();
    h
}

const SAMPLE_TEXT: &str = r#"pbft-lincheck history v1
0 1 100 put "k1" "v1" ok 250
1 2 120 get "k1" ok 300 "v1"
2 3 130 get "k2" ok 140 absent
3 1 260 delete "k1" ok 400 existed
4 2 310 put "k2" "v2" unknown
5 3 150 put "k2" "v3" fail 160
6 1 410 delete "k2" pending
7 4 420 delete "k3" ok 430 absent
8 5 500 put "sp\x20ace\x22\x5c\x00\xff" "" ok 510
"#;

#[test]
fn text_is_exact() {
    assert_eq!(sample().to_text(), SAMPLE_TEXT);
}

#[test]
fn text_round_trips() {
    let h = sample();
    assert_eq!(History::from_text(&h.to_text()).unwrap(), h);
    assert_eq!(SAMPLE_TEXT.parse::<History>().unwrap(), h);
}

#[test]
fn comments_blank_lines_and_upper_case_hex_are_accepted() {
    let text =
        "# a log\n\npbft-lincheck history v1\n# id client ...\n0 1 5 get \"\\xFF\" ok 6 absent\n\n";
    let h = History::from_text(text).unwrap();
    assert_eq!(h.ops()[0].op, Op::get(vec![0xff]));
}

#[test]
fn generated_histories_round_trip() {
    let mut rng = common::Rng(7);
    let specs = rng.specs(500, 50);
    let h = common::build(&common::simulate(&specs, 8, 10));
    assert_eq!(History::from_text(&h.to_text()).unwrap(), h);
}

#[test]
fn fmt_bytes_escapes_everything_but_printable_ascii() {
    assert_eq!(fmt_bytes(b"a~!"), r#""a~!""#);
    assert_eq!(fmt_bytes(b""), r#""""#);
    assert_eq!(fmt_bytes(b" \"\\\n"), r#""\x20\x22\x5c\x0a""#);
}

fn err(body: &str) -> HistoryError {
    History::from_text(&format!("{HEADER}\n{body}\n")).unwrap_err()
}

#[test]
fn parse_errors_are_typed() {
    assert_eq!(
        History::from_text(""),
        Err(HistoryError::BadHeader { line: 1 })
    );
    assert_eq!(
        History::from_text("\nhistory v0\n"),
        Err(HistoryError::BadHeader { line: 2 })
    );
    assert_eq!(
        err("0 1 5"),
        HistoryError::MissingField {
            line: 2,
            field: "operation"
        }
    );
    assert_eq!(
        err("0 1 5 put \"k\""),
        HistoryError::MissingField {
            line: 2,
            field: "value"
        }
    );
    assert_eq!(
        err("0 1 5 get \"k\""),
        HistoryError::MissingField {
            line: 2,
            field: "outcome"
        }
    );
    assert_eq!(
        err("0 x 5 get \"k\" unknown"),
        HistoryError::BadNumber {
            line: 2,
            field: "client",
            token: "x".into()
        }
    );
    assert_eq!(
        err("0 1 -5 get \"k\" unknown"),
        HistoryError::BadNumber {
            line: 2,
            field: "invoke time",
            token: "-5".into()
        }
    );
    assert_eq!(
        err("1 1 5 get \"k\" unknown"),
        HistoryError::UnexpectedId {
            line: 2,
            expected: 0,
            found: 1
        }
    );
    assert_eq!(
        err("0 1 5 cas \"k\" unknown"),
        HistoryError::UnknownOpKind {
            line: 2,
            token: "cas".into()
        }
    );
    for token in [
        "k",
        "\"k",
        "\"a\\x0\"",
        "\"a\\y00\"",
        "\"\\xgg\"",
        "\"a\"b\"",
    ] {
        assert_eq!(
            err(&format!("0 1 5 get {token} unknown")),
            HistoryError::BadBytes {
                line: 2,
                token: token.into()
            },
            "{token}"
        );
    }
    assert_eq!(
        err("0 1 5 get \"k\" done"),
        HistoryError::UnknownOutcome {
            line: 2,
            token: "done".into()
        }
    );
    assert_eq!(
        err("0 1 5 get \"k\" ok 6 existed"),
        HistoryError::BadOutput {
            line: 2,
            op: "get",
            token: "existed".into()
        }
    );
    assert_eq!(
        err("0 1 5 delete \"k\" ok 6 \"v\""),
        HistoryError::BadOutput {
            line: 2,
            op: "delete",
            token: "\"v\"".into()
        }
    );
    assert_eq!(
        err("0 1 5 put \"k\" \"v\" ok 6 absent"),
        HistoryError::TrailingToken {
            line: 2,
            token: "absent".into()
        }
    );
    assert_eq!(
        err("0 1 5 put \"k\" \"v\" ok 4"),
        HistoryError::AtLine {
            line: 2,
            source: Box::new(HistoryError::CompletedBeforeInvoke {
                id: OpId(0),
                invoke_us: 5,
                complete_us: 4
            })
        }
    );
    assert_eq!(
        err("0 1 5 put \"k\" \"v\" ok 4").to_string(),
        "line 2: operation #0 completed at 4, before its invocation at 5"
    );
}

#[test]
fn builder_errors_are_typed() {
    let mut h = History::new();
    let id = h.invoke(1, Op::put("k", "v"), 10);
    assert_eq!(
        h.complete_ok(OpId(9), Output::Put, 20),
        Err(HistoryError::UnknownOp(OpId(9)))
    );
    assert_eq!(
        h.complete_ok(id, Output::absent(), 20),
        Err(HistoryError::OutputMismatch {
            id,
            op: "put",
            output: "get"
        })
    );
    assert_eq!(
        h.complete_fail(id, 9),
        Err(HistoryError::CompletedBeforeInvoke {
            id,
            invoke_us: 10,
            complete_us: 9
        })
    );
    h.complete_ok(id, Output::Put, 10).unwrap();
    assert_eq!(
        h.complete_unknown(id),
        Err(HistoryError::AlreadyCompleted(id))
    );
    assert_eq!(
        h.complete_fail(id, 30),
        Err(HistoryError::AlreadyCompleted(id))
    );
    assert_eq!(h.len(), 1);
}
