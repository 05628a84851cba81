//! The line-based text format of a [`History`].
//!
//! ```text
//! pbft-lincheck history v1
//! # id client invoke_us op key [value] outcome
//! 0 1 100 put "k1" "v1" ok 250
//! 1 2 120 get "k1" ok 300 "v1"
//! 2 3 130 get "k2" ok 140 absent
//! 3 1 260 delete "k1" ok 400 existed
//! 4 2 310 put "k2" "v2" unknown
//! 5 3 150 put "k2" "v3" fail 160
//! 6 1 410 delete "k2" pending
//! ```
//!
//! The first line is [`HEADER`]; blank lines and lines starting with `#`
//! are ignored. Tokens are separated by spaces. Ids are `0, 1, 2, ...` in
//! order. Keys and values are byte strings in double quotes, where bytes
//! `!` to `~` other than `"` and `\` stand for themselves and any other
//! byte is written `\xNN` (two lower-case hex digits), so a byte string
//! never contains a space. Outputs: a get's value or `absent`; a delete's
//! `existed` or `absent`; nothing for a put.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use crate::history::{ClientId, History, HistoryError, Op, Outcome, Output};

/// The first line of the text format.
pub const HEADER: &str = "pbft-lincheck history v1";

/// A byte string in the text format's quoting: `"k\x00y"`.
#[must_use]
pub fn fmt_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        if (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\' {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

fn parse_bytes(token: &str, line: usize) -> Result<Vec<u8>, HistoryError> {
    let bad = || HistoryError::BadBytes {
        line,
        token: token.to_owned(),
    };
    let inner = token
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or_else(bad)?;
    let raw = inner.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'\\' => {
                if raw.get(i + 1) != Some(&b'x') {
                    return Err(bad());
                }
                let hex = raw.get(i + 2..i + 4).ok_or_else(bad)?;
                let hi = hex_digit(hex.first().copied()).ok_or_else(bad)?;
                let lo = hex_digit(hex.get(1).copied()).ok_or_else(bad)?;
                out.push(hi << 4 | lo);
                i += 4;
            }
            0x21..=0x7e if b != b'"' => {
                out.push(b);
                i += 1;
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

fn hex_digit(c: Option<u8>) -> Option<u8> {
    match c? {
        c @ b'0'..=b'9' => Some(c - b'0'),
        c @ b'a'..=b'f' => Some(c - b'a' + 10),
        c @ b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl History {
    /// The history in the text format (see the [module docs](crate::text)).
    #[must_use]
    pub fn to_text(&self) -> String {
        self.to_string()
    }

    /// Parses [`History::to_text`]'s format.
    ///
    /// # Errors
    /// [`HistoryError`] naming the first line that is not well formed.
    pub fn from_text(text: &str) -> Result<Self, HistoryError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
        let mut seen_header = false;
        let mut history = Self::new();
        for (line, content) in lines.by_ref() {
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            if !seen_header {
                if content != HEADER {
                    return Err(HistoryError::BadHeader { line });
                }
                seen_header = true;
                continue;
            }
            parse_line(&mut history, content, line)?;
        }
        if !seen_header {
            return Err(HistoryError::BadHeader { line: 1 });
        }
        Ok(history)
    }
}

struct Tokens<'a> {
    inner: std::str::SplitAsciiWhitespace<'a>,
    line: usize,
}

impl<'a> Tokens<'a> {
    fn next(&mut self, field: &'static str) -> Result<&'a str, HistoryError> {
        self.inner.next().ok_or(HistoryError::MissingField {
            line: self.line,
            field,
        })
    }

    fn number(&mut self, field: &'static str) -> Result<u64, HistoryError> {
        let token = self.next(field)?;
        token.parse().map_err(|_| HistoryError::BadNumber {
            line: self.line,
            field,
            token: token.to_owned(),
        })
    }

    fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, HistoryError> {
        parse_bytes(self.next(field)?, self.line)
    }
}

fn parse_line(history: &mut History, content: &str, line: usize) -> Result<(), HistoryError> {
    let mut t = Tokens {
        inner: content.split_ascii_whitespace(),
        line,
    };
    let id_token = t.next("id")?;
    let found: usize = id_token.parse().map_err(|_| HistoryError::BadNumber {
        line,
        field: "id",
        token: id_token.to_owned(),
    })?;
    if found != history.len() {
        return Err(HistoryError::UnexpectedId {
            line,
            expected: history.len(),
            found,
        });
    }
    let client: ClientId = t.number("client")?;
    let invoke_us = t.number("invoke time")?;
    let kind = t.next("operation")?;
    let op = match kind {
        "put" => Op::Put {
            key: t.bytes("key")?,
            value: t.bytes("value")?,
        },
        "get" => Op::Get {
            key: t.bytes("key")?,
        },
        "delete" => Op::Delete {
            key: t.bytes("key")?,
        },
        _ => {
            return Err(HistoryError::UnknownOpKind {
                line,
                token: kind.to_owned(),
            })
        }
    };
    let op_kind = op.kind();
    let id = history.invoke(client, op, invoke_us);
    let at_line = |e: HistoryError| HistoryError::AtLine {
        line,
        source: Box::new(e),
    };
    let outcome = t.next("outcome")?;
    match outcome {
        "ok" => {
            let at_us = t.number("completion time")?;
            let output = match op_kind {
                "put" => Output::Put,
                "get" => match t.next("output")? {
                    "absent" => Output::Get(None),
                    token if token.starts_with('"') => Output::Get(Some(parse_bytes(token, line)?)),
                    token => {
                        return Err(HistoryError::BadOutput {
                            line,
                            op: op_kind,
                            token: token.to_owned(),
                        })
                    }
                },
                _ => match t.next("output")? {
                    "existed" => Output::Delete(true),
                    "absent" => Output::Delete(false),
                    token => {
                        return Err(HistoryError::BadOutput {
                            line,
                            op: op_kind,
                            token: token.to_owned(),
                        })
                    }
                },
            };
            history.complete_ok(id, output, at_us).map_err(at_line)?;
        }
        "fail" => {
            let at_us = t.number("completion time")?;
            history.complete_fail(id, at_us).map_err(at_line)?;
        }
        "unknown" => history.complete_unknown(id).map_err(at_line)?,
        "pending" => {}
        _ => {
            return Err(HistoryError::UnknownOutcome {
                line,
                token: outcome.to_owned(),
            })
        }
    }
    if let Some(token) = t.inner.next() {
        return Err(HistoryError::TrailingToken {
            line,
            token: token.to_owned(),
        });
    }
    Ok(())
}

impl fmt::Display for History {
    /// The text format, header first, one line per operation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{HEADER}")?;
        for op in self.ops() {
            write!(f, "{} {} {} {}", op.id.0, op.client, op.invoke_us, op.op)?;
            match &op.outcome {
                Outcome::Pending => writeln!(f, " pending")?,
                Outcome::Unknown => writeln!(f, " unknown")?,
                Outcome::Fail { at_us } => writeln!(f, " fail {at_us}")?,
                Outcome::Ok {
                    output: Output::Put,
                    at_us,
                } => writeln!(f, " ok {at_us}")?,
                Outcome::Ok { output, at_us } => writeln!(f, " ok {at_us} {output}")?,
            }
        }
        Ok(())
    }
}

impl FromStr for History {
    type Err = HistoryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_text(s)
    }
}
