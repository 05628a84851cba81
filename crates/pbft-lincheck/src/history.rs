//! The recorded history: operations, their outcomes, and the builder API.

use std::fmt;

use crate::text::fmt_bytes;

/// A client, as the workload numbers them; only used in reports.
pub type ClientId = u64;

/// An operation's index in its [`History`], in invocation order of the
/// builder (`#0`, `#1`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub usize);

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A key-value operation, as `pbft_core::app::KvOp`. Each touches one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Sets `key` to `value`; the output is [`Output::Put`].
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Reads `key`; the output is [`Output::Get`].
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Removes `key`; the output is [`Output::Delete`].
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl Op {
    /// A put.
    #[must_use]
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// A get.
    #[must_use]
    pub fn get(key: impl Into<Vec<u8>>) -> Self {
        Self::Get { key: key.into() }
    }

    /// A delete.
    #[must_use]
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Self::Delete { key: key.into() }
    }

    /// The key the operation touches.
    #[must_use]
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Put { key, .. } | Self::Get { key } | Self::Delete { key } => key,
        }
    }

    /// `"put"`, `"get"` or `"delete"`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Put { .. } => "put",
            Self::Get { .. } => "get",
            Self::Delete { .. } => "delete",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Put { key, value } => write!(f, "put {} {}", fmt_bytes(key), fmt_bytes(value)),
            Self::Get { key } => write!(f, "get {}", fmt_bytes(key)),
            Self::Delete { key } => write!(f, "delete {}", fmt_bytes(key)),
        }
    }
}

/// The result a client received for an operation that completed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// A put's `"ok"`.
    Put,
    /// A get's value, `None` when the key was absent.
    Get(Option<Vec<u8>>),
    /// A delete's answer: whether the key existed.
    Delete(bool),
}

impl Output {
    /// A get that returned `value`.
    #[must_use]
    pub fn value(value: impl Into<Vec<u8>>) -> Self {
        Self::Get(Some(value.into()))
    }

    /// A get that found the key absent.
    #[must_use]
    pub fn absent() -> Self {
        Self::Get(None)
    }

    /// `"put"`, `"get"` or `"delete"`: the operation this output belongs to.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Put => "put",
            Self::Get(_) => "get",
            Self::Delete(_) => "delete",
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Put => f.write_str("ok"),
            Self::Get(Some(v)) => f.write_str(&fmt_bytes(v)),
            Self::Get(None) | Self::Delete(false) => f.write_str("absent"),
            Self::Delete(true) => f.write_str("existed"),
        }
    }
}

/// How an operation ended, as far as its client knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not completed yet. The checker treats it as [`Outcome::Unknown`].
    Pending,
    /// Completed with `output` at `at_us`.
    Ok {
        /// What the client received.
        output: Output,
        /// Completion time.
        at_us: u64,
    },
    /// Definitely did not take effect (for example rejected before it was
    /// sent). The checker drops it.
    Fail {
        /// When the client learnt it.
        at_us: u64,
    },
    /// Timed out: it may or may not take effect, at any time after its
    /// invocation (its completion is open-ended).
    Unknown,
}

/// One operation of a [`History`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Its index in the history.
    pub id: OpId,
    /// The client that issued it.
    pub client: ClientId,
    /// The operation.
    pub op: Op,
    /// Invocation time, microseconds on a clock shared by all clients.
    pub invoke_us: u64,
    /// How it ended.
    pub outcome: Outcome,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} client {}: {} invoked at {}",
            self.id, self.client, self.op, self.invoke_us
        )?;
        match &self.outcome {
            Outcome::Pending => f.write_str(", pending"),
            Outcome::Ok { output, at_us } => write!(f, ", ok at {at_us} -> {output}"),
            Outcome::Fail { at_us } => write!(f, ", failed at {at_us}"),
            Outcome::Unknown => f.write_str(", unknown"),
        }
    }
}

/// A history error: a misuse of the builder, or a line the parser refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// No operation has this id.
    #[error("no operation {0}")]
    UnknownOp(OpId),
    /// The operation was already completed.
    #[error("operation {0} already completed")]
    AlreadyCompleted(OpId),
    /// A completion time before the invocation time.
    #[error("operation {id} completed at {complete_us}, before its invocation at {invoke_us}")]
    CompletedBeforeInvoke {
        /// The operation.
        id: OpId,
        /// Its invocation time.
        invoke_us: u64,
        /// The completion time given.
        complete_us: u64,
    },
    /// An output of another kind of operation (a get's value for a put...).
    #[error("operation {id} is a {op}, but its output is a {output}'s")]
    OutputMismatch {
        /// The operation.
        id: OpId,
        /// Its kind.
        op: &'static str,
        /// The output's kind.
        output: &'static str,
    },
    /// The text does not start with [`crate::HEADER`].
    #[error("line {line}: expected the header {:?}", crate::HEADER)]
    BadHeader {
        /// 1-based line number.
        line: usize,
    },
    /// A line ended before a field.
    #[error("line {line}: missing {field}")]
    MissingField {
        /// 1-based line number.
        line: usize,
        /// The field.
        field: &'static str,
    },
    /// A field that should be a decimal number is not.
    #[error("line {line}: {field} {token:?} is not a number")]
    BadNumber {
        /// 1-based line number.
        line: usize,
        /// The field.
        field: &'static str,
        /// The token.
        token: String,
    },
    /// A byte string that is not `"..."` with `\xNN` escapes.
    #[error("line {line}: {token:?} is not a quoted byte string")]
    BadBytes {
        /// 1-based line number.
        line: usize,
        /// The token.
        token: String,
    },
    /// An operation other than `put`, `get`, `delete`.
    #[error("line {line}: unknown operation {token:?}")]
    UnknownOpKind {
        /// 1-based line number.
        line: usize,
        /// The token.
        token: String,
    },
    /// An outcome other than `ok`, `fail`, `unknown`, `pending`.
    #[error("line {line}: unknown outcome {token:?}")]
    UnknownOutcome {
        /// 1-based line number.
        line: usize,
        /// The token.
        token: String,
    },
    /// An output that does not fit the operation (`existed` for a get...).
    #[error("line {line}: {token:?} is not an output of a {op}")]
    BadOutput {
        /// 1-based line number.
        line: usize,
        /// The operation's kind.
        op: &'static str,
        /// The token.
        token: String,
    },
    /// More tokens than the line's operation and outcome take.
    #[error("line {line}: unexpected {token:?} at the end")]
    TrailingToken {
        /// 1-based line number.
        line: usize,
        /// The token.
        token: String,
    },
    /// Operation ids must be 0, 1, 2, ... in order.
    #[error("line {line}: expected operation id {expected}, found {found}")]
    UnexpectedId {
        /// 1-based line number.
        line: usize,
        /// The next id.
        expected: usize,
        /// The id on the line.
        found: usize,
    },
    /// A builder error on a parsed line.
    #[error("line {line}: {source}")]
    AtLine {
        /// 1-based line number.
        line: usize,
        /// The builder's error.
        source: Box<HistoryError>,
    },
}

/// A client-visible history of key-value operations.
///
/// Build it with [`History::invoke`] when a client sends an operation and
/// one of the `complete_*` methods when it learns the outcome. All times
/// must come from one monotonic clock (microseconds, for example since the
/// start of the run). An operation that completed at the same microsecond
/// another was invoked is treated as concurrent with it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    ops: Vec<Operation>,
}

impl History {
    /// An empty history.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `client` invoked `op` at `at_us`; the operation is
    /// [`Outcome::Pending`] until completed.
    pub fn invoke(&mut self, client: ClientId, op: Op, at_us: u64) -> OpId {
        let id = OpId(self.ops.len());
        self.ops.push(Operation {
            id,
            client,
            op,
            invoke_us: at_us,
            outcome: Outcome::Pending,
        });
        id
    }

    /// Records that `id` completed with `output` at `at_us`.
    ///
    /// # Errors
    /// [`HistoryError`] when `id` is unknown or already completed, `at_us`
    /// is before its invocation, or `output` belongs to another kind of
    /// operation.
    pub fn complete_ok(
        &mut self,
        id: OpId,
        output: Output,
        at_us: u64,
    ) -> Result<(), HistoryError> {
        let op = self.pending_mut(id, Some(at_us))?;
        if op.op.kind() != output.kind() {
            return Err(HistoryError::OutputMismatch {
                id,
                op: op.op.kind(),
                output: output.kind(),
            });
        }
        op.outcome = Outcome::Ok { output, at_us };
        Ok(())
    }

    /// Records that `id` definitely did not take effect, learnt at `at_us`.
    ///
    /// # Errors
    /// [`HistoryError`] when `id` is unknown or already completed, or
    /// `at_us` is before its invocation.
    pub fn complete_fail(&mut self, id: OpId, at_us: u64) -> Result<(), HistoryError> {
        self.pending_mut(id, Some(at_us))?.outcome = Outcome::Fail { at_us };
        Ok(())
    }

    /// Records that `id` timed out: it may or may not take effect, at any
    /// time after its invocation.
    ///
    /// # Errors
    /// [`HistoryError`] when `id` is unknown or already completed.
    pub fn complete_unknown(&mut self, id: OpId) -> Result<(), HistoryError> {
        self.pending_mut(id, None)?.outcome = Outcome::Unknown;
        Ok(())
    }

    fn pending_mut(
        &mut self,
        id: OpId,
        at_us: Option<u64>,
    ) -> Result<&mut Operation, HistoryError> {
        let op = self.ops.get_mut(id.0).ok_or(HistoryError::UnknownOp(id))?;
        if op.outcome != Outcome::Pending {
            return Err(HistoryError::AlreadyCompleted(id));
        }
        if let Some(complete_us) = at_us {
            if complete_us < op.invoke_us {
                return Err(HistoryError::CompletedBeforeInvoke {
                    id,
                    invoke_us: op.invoke_us,
                    complete_us,
                });
            }
        }
        Ok(op)
    }

    /// The operations, indexed by [`OpId`].
    #[must_use]
    pub fn ops(&self) -> &[Operation] {
        &self.ops
    }

    /// One operation.
    #[must_use]
    pub fn get(&self, id: OpId) -> Option<&Operation> {
        self.ops.get(id.0)
    }

    /// Number of operations.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there are no operations.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
