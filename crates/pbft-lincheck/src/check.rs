//! The checker: per-key decomposition and the just-in-time linearization
//! search with memoization.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasherDefault;

use crate::history::{History, Op, OpId, Operation, Outcome, Output};
use crate::text::fmt_bytes;

/// The default of [`CheckOptions::search_states_max`].
pub const DEFAULT_SEARCH_STATES_MAX: u64 = 1_000_000;

/// How far the checker may search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// The most search states (a set of linearized operations and the
    /// value of the key after them) explored for one key. A key that needs
    /// more makes the verdict [`CheckFailure::Inconclusive`]. Each state
    /// costs a few tens of bytes of memory while its key is checked.
    pub search_states_max: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            search_states_max: DEFAULT_SEARCH_STATES_MAX,
        }
    }
}

/// A successful check: a linearization of every key's sub-history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Linearization {
    /// For each key, its operations in linearization order: every completed
    /// operation, and the unknown or pending writes that had to take effect
    /// before some completed operation.
    pub order: BTreeMap<Vec<u8>, Vec<OpId>>,
    /// Unknown or pending writes that appear in no linearization: they never
    /// took effect, or took effect after everything any client observed.
    pub omitted: Vec<OpId>,
    /// Operations left out of the check: failed ones (they did not take
    /// effect) and unknown or pending gets (they change nothing and their
    /// result is unconstrained).
    pub dropped: Vec<OpId>,
    /// Search states explored, over all keys.
    pub states_explored: u64,
}

/// Why a check did not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckFailure {
    /// The history is not linearizable.
    Violation(Box<Violation>),
    /// The search bound was reached before a verdict; nothing is known.
    Inconclusive(Inconclusive),
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Violation(v) => v.fmt(f),
            Self::Inconclusive(i) => i.fmt(f),
        }
    }
}

impl std::error::Error for CheckFailure {}

/// The sub-history of one key that has no linearization, explained.
///
/// The search found no order of the key's operations that respects real
/// time and the sequential key-value semantics. The explanation is the
/// longest linearizable prefix it found, the state after it, and the
/// operations that could have come next, none of which leads anywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key (violations of other keys are in `other_keys`).
    pub key: Vec<u8>,
    /// The operations of the key that were checked, in invocation order.
    pub ops: Vec<Operation>,
    /// Gets that returned a value no put on the key ever wrote (failed puts
    /// excluded): each alone is a violation.
    pub never_written: Vec<OpId>,
    /// The longest linearizable prefix found, in order.
    pub prefix: Vec<OpId>,
    /// The key's value after `prefix` (`None`: absent).
    pub state_after_prefix: Option<Vec<u8>>,
    /// The operation whose completion closes the window: something among
    /// the candidates must take effect before it completes.
    pub deadline: Option<OpId>,
    /// The operations that could take effect next after `prefix`, in
    /// invocation order; none leads to a linearization.
    pub candidates: Vec<Candidate>,
    /// Other keys whose sub-histories are not linearizable either.
    pub other_keys: Vec<Vec<u8>>,
}

/// An operation that could have been linearized after the longest prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The operation.
    pub id: OpId,
    /// Whether its output is consistent with the state after the prefix
    /// (if so, every continuation after it failed instead). Always true of
    /// unknown or pending operations, which are only listed where they would
    /// make a completed candidate fit.
    pub consistent: bool,
}

/// Number of prefix operations a [`Violation`]'s `Display` shows.
const PREFIX_SHOWN: usize = 8;

impl Violation {
    fn op(&self, id: OpId) -> Option<&Operation> {
        self.ops.iter().find(|o| o.id == id)
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "not linearizable: key {} ({} operations checked on it)",
            fmt_bytes(&self.key),
            self.ops.len()
        )?;
        for id in &self.never_written {
            if let Some(op) = self.op(*id) {
                writeln!(f, "  read of a value no put wrote: {op}")?;
            }
        }
        let skipped = self.prefix.len().saturating_sub(PREFIX_SHOWN);
        writeln!(
            f,
            "  longest linearizable prefix: {} operations",
            self.prefix.len()
        )?;
        if skipped > 0 {
            writeln!(f, "    ... {skipped} earlier operations")?;
        }
        for id in self.prefix.iter().skip(skipped) {
            if let Some(op) = self.op(*id) {
                writeln!(f, "    {op}")?;
            }
        }
        let state = self
            .state_after_prefix
            .as_deref()
            .map_or("absent".to_owned(), fmt_bytes);
        writeln!(f, "  value after the prefix: {state}")?;
        if let Some(op) = self.deadline.and_then(|id| self.op(id)) {
            writeln!(
                f,
                "  one of these must take effect before {} completes, none can:",
                op.id
            )?;
        }
        for c in &self.candidates {
            if let Some(op) = self.op(c.id) {
                let why = if !matches!(op.outcome, Outcome::Ok { .. }) {
                    "may take effect here, but no continuation works"
                } else if c.consistent {
                    "fits, but every continuation fails"
                } else {
                    "its result contradicts the value"
                };
                writeln!(f, "    {op}  [{why}]")?;
            }
        }
        if !self.other_keys.is_empty() {
            let keys: Vec<String> = self.other_keys.iter().map(|k| fmt_bytes(k)).collect();
            writeln!(f, "  other keys not linearizable: {}", keys.join(" "))?;
        }
        Ok(())
    }
}

/// The search bound was reached: the history may or may not be
/// linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inconclusive {
    /// The keys whose search was cut off.
    pub keys: Vec<Vec<u8>>,
    /// The bound, [`CheckOptions::search_states_max`].
    pub search_states_max: u64,
}

impl fmt::Display for Inconclusive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| fmt_bytes(k)).collect();
        write!(
            f,
            "inconclusive: the search of key(s) {} exceeded {} states",
            keys.join(" "),
            self.search_states_max
        )
    }
}

/// Checks `history` with [`CheckOptions::default`]; see [`check_with`].
///
/// # Errors
/// [`CheckFailure::Violation`] if the history is not linearizable,
/// [`CheckFailure::Inconclusive`] if the search bound was reached.
pub fn check(history: &History) -> Result<Linearization, CheckFailure> {
    check_with(history, &CheckOptions::default())
}

/// Checks that `history` is linearizable with respect to a sequential
/// key-value store in which every key starts absent.
///
/// Linearizability is local (Herlihy & Wing), and every operation touches
/// one key, so each key's sub-history is checked on its own. Failed
/// operations are dropped; unknown and pending ones may take effect at any
/// point after their invocation, or never.
///
/// # Errors
/// [`CheckFailure::Violation`] for the first key (in byte order) whose
/// sub-history is not linearizable, naming the others; otherwise
/// [`CheckFailure::Inconclusive`] if a key's search exceeded
/// [`CheckOptions::search_states_max`].
pub fn check_with(
    history: &History,
    options: &CheckOptions,
) -> Result<Linearization, CheckFailure> {
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    let mut result = Linearization::default();
    for op in history.ops() {
        let open = matches!(op.outcome, Outcome::Unknown | Outcome::Pending);
        if matches!(op.outcome, Outcome::Fail { .. }) || (open && matches!(op.op, Op::Get { .. })) {
            result.dropped.push(op.id);
        } else {
            by_key.entry(op.op.key()).or_default().push(op);
        }
    }
    let mut violations: Vec<Violation> = Vec::new();
    let mut inconclusive: Vec<Vec<u8>> = Vec::new();
    for (key, ops) in by_key {
        let sub = SubHistory::new(&ops);
        match sub.search(options.search_states_max) {
            Search::Linearized { order, explored } => {
                result.states_explored += explored;
                let mut placed = vec![false; ops.len()];
                for &i in &order {
                    if let Some(p) = placed.get_mut(i) {
                        *p = true;
                    }
                }
                for (op, placed) in ops.iter().zip(placed) {
                    if !placed {
                        result.omitted.push(op.id);
                    }
                }
                let ids = order
                    .iter()
                    .filter_map(|&i| ops.get(i))
                    .map(|op| op.id)
                    .collect();
                result.order.insert(key.to_vec(), ids);
            }
            Search::Stuck(stuck) => violations.push(sub.violation(key, &ops, &stuck)),
            Search::Exhausted => inconclusive.push(key.to_vec()),
        }
    }
    result.omitted.sort_unstable();
    if !violations.is_empty() {
        let other_keys: Vec<Vec<u8>> = violations.iter().skip(1).map(|v| v.key.clone()).collect();
        let mut first = violations.swap_remove(0);
        first.other_keys = other_keys;
        return Err(CheckFailure::Violation(Box::new(first)));
    }
    if !inconclusive.is_empty() {
        return Err(CheckFailure::Inconclusive(Inconclusive {
            keys: inconclusive,
            search_states_max: options.search_states_max,
        }));
    }
    Ok(result)
}

/// The value of a key: `None` absent, else an index into the key's
/// distinct written values.
type State = Option<u32>;

/// A value id no state ever holds: a read of a value never written.
const NEVER_WRITTEN: u32 = u32::MAX;

/// An operation of one key, with its values interned.
#[derive(Clone, Copy, Debug)]
enum Step {
    Put(u32),
    /// A completed get and the state it saw.
    Get(State),
    /// A delete, with whether it reported the key existed (`None`: open).
    Delete(Option<bool>),
}

impl Step {
    /// The state after applying `self` to `state`, if its output fits.
    fn apply(self, state: State) -> Option<State> {
        match self {
            Self::Put(v) => Some(Some(v)),
            Self::Get(seen) => (seen == state).then_some(state),
            Self::Delete(None) => Some(None),
            Self::Delete(Some(existed)) => (existed == state.is_some()).then_some(None),
        }
    }
}

/// Head of the list of completed operations' calls and returns.
const MAIN: usize = 0;
/// Head of the list of open (unknown or pending) operations' calls.
const OPEN: usize = 1;
const NIL: usize = usize::MAX;

/// One key's sub-history as Lowe's doubly linked lists of events, in time
/// order (calls first at equal times, so that touching intervals count as
/// concurrent). Completed operations have a call and a return entry in the
/// main list. Open operations never have to take effect, so they have only
/// a call entry, in a list of their own: the search tries them only after
/// every completed candidate, which keeps passing histories with many
/// timeouts cheap. Entry numbers follow time order across both lists.
struct SubHistory {
    steps: Vec<Step>,
    /// Operation `i` is the `slot[i]`-th completed or open operation, by
    /// call time; it is completed if `closed[i]`.
    closed: Vec<bool>,
    slot: Vec<usize>,
    closed_count: usize,
    open_count: usize,
    values: Vec<Vec<u8>>,
    /// Whether some completed get returned the value.
    observed: Vec<bool>,
    never_written: Vec<usize>,
    /// Entry `e` (0 and 1 are the heads) belongs to operation `entry_op[e]`.
    entry_op: Vec<usize>,
    entry_is_call: Vec<bool>,
    call_entry: Vec<usize>,
    /// `NIL` for open operations.
    return_entry: Vec<usize>,
    /// The list each entry starts in, linked in time order.
    initial_next: Vec<usize>,
    initial_prev: Vec<usize>,
}

/// Where the search got stuck at its deepest.
struct Stuck {
    /// Number of search steps (a completed operation, maybe with a helper).
    depth: usize,
    prefix: Vec<usize>,
    state: State,
    deadline: Option<usize>,
    candidates: Vec<(usize, bool)>,
}

enum Search {
    Linearized { order: Vec<usize>, explored: u64 },
    Stuck(Stuck),
    Exhausted,
}

/// Cache keys are a few words; SipHash would cost more than the search, so
/// hash with a simple multiplicative hasher (the keys are not adversarial).
#[derive(Default)]
struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in chunks.by_ref() {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type Cache = HashSet<Box<[u64]>, BuildHasherDefault<FastHasher>>;

/// The set of linearized operations: completed ones and open ones apart,
/// each as a bit set indexed by call order.
struct Linearized {
    closed: Vec<u64>,
    open: Vec<u64>,
}

impl Linearized {
    /// An exact, compact encoding of (set, state) for the cache. Completed
    /// operations are linearized roughly in call order, so their set is a
    /// run of full words, a short tail, then zeros: only the tail is kept.
    fn key(&self, state: State) -> Box<[u64]> {
        let full = self
            .closed
            .iter()
            .position(|&w| w != !0)
            .unwrap_or(self.closed.len());
        let end = self
            .closed
            .iter()
            .rposition(|&w| w != 0)
            .map_or(0, |p| p + 1)
            .max(full);
        let open_end = self.open.iter().rposition(|&w| w != 0).map_or(0, |p| p + 1);
        let tail = self.closed.get(full..end).unwrap_or_default();
        let open = self.open.get(..open_end).unwrap_or_default();
        let mut key = Vec::with_capacity(3 + tail.len() + open.len());
        key.push(state.map_or(0, |v| u64::from(v) + 1));
        key.push(full as u64);
        key.push(tail.len() as u64);
        key.extend_from_slice(tail);
        key.extend_from_slice(open);
        key.into_boxed_slice()
    }
}

impl SubHistory {
    fn new(ops: &[&Operation]) -> Self {
        let mut value_ids: HashMap<&[u8], u32> = HashMap::new();
        let mut values: Vec<Vec<u8>> = Vec::new();
        for op in ops {
            if let Op::Put { value, .. } = &op.op {
                value_ids.entry(value.as_slice()).or_insert_with(|| {
                    values.push(value.clone());
                    u32::try_from(values.len() - 1).unwrap_or(NEVER_WRITTEN)
                });
            }
        }
        let mut never_written = Vec::new();
        let mut observed = vec![false; values.len()];
        let mut steps = Vec::with_capacity(ops.len());
        let mut closed = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let output = match &op.outcome {
                Outcome::Ok { output, .. } => Some(output),
                _ => None,
            };
            closed.push(output.is_some());
            steps.push(match (&op.op, output) {
                (Op::Put { value, .. }, _) => Step::Put(
                    value_ids
                        .get(value.as_slice())
                        .copied()
                        .unwrap_or(NEVER_WRITTEN),
                ),
                (Op::Get { .. }, Some(Output::Get(Some(v)))) => {
                    let id = value_ids.get(v.as_slice()).copied();
                    match id.and_then(|v| observed.get_mut(v as usize)) {
                        Some(seen) => *seen = true,
                        None => never_written.push(i),
                    }
                    Step::Get(Some(id.unwrap_or(NEVER_WRITTEN)))
                }
                // Open gets were dropped; a get's output is a get's.
                (Op::Get { .. }, _) => Step::Get(None),
                (Op::Delete { .. }, Some(Output::Delete(existed))) => Step::Delete(Some(*existed)),
                (Op::Delete { .. }, _) => Step::Delete(None),
            });
        }

        // Events: (time, is return, op); open operations have no return.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            events.push((op.invoke_us, false, i));
            if let Outcome::Ok { at_us, .. } = op.outcome {
                events.push((at_us, true, i));
            }
        }
        events.sort_unstable();
        let entries = events.len() + 2;
        let mut entry_op = vec![NIL; 2];
        let mut entry_is_call = vec![false; 2];
        let mut call_entry = vec![NIL; ops.len()];
        let mut return_entry = vec![NIL; ops.len()];
        let mut slot = vec![0; ops.len()];
        let (mut closed_count, mut open_count) = (0, 0);
        let mut initial_next = vec![NIL; entries];
        let mut initial_prev = vec![NIL; entries];
        let mut tails = [MAIN, OPEN];
        for (k, &(_, is_return, i)) in events.iter().enumerate() {
            let e = k + 2;
            entry_op.push(i);
            entry_is_call.push(!is_return);
            let is_closed = closed.get(i).copied().unwrap_or(false);
            if is_return {
                if let Some(s) = return_entry.get_mut(i) {
                    *s = e;
                }
            } else {
                if let Some(s) = call_entry.get_mut(i) {
                    *s = e;
                }
                let counter = if is_closed {
                    &mut closed_count
                } else {
                    &mut open_count
                };
                if let Some(s) = slot.get_mut(i) {
                    *s = *counter;
                }
                *counter += 1;
            }
            let tail = &mut tails[usize::from(!is_closed)];
            if let Some(n) = initial_next.get_mut(*tail) {
                *n = e;
            }
            if let Some(p) = initial_prev.get_mut(e) {
                *p = *tail;
            }
            *tail = e;
        }
        Self {
            steps,
            closed,
            slot,
            closed_count,
            open_count,
            values,
            observed,
            never_written,
            entry_op,
            entry_is_call,
            call_entry,
            return_entry,
            initial_next,
            initial_prev,
        }
    }

    fn op_of(&self, entry: usize) -> usize {
        self.entry_op.get(entry).copied().unwrap_or(NIL)
    }

    fn is_call(&self, entry: usize) -> bool {
        self.entry_is_call.get(entry).copied().unwrap_or(false)
    }

    fn is_closed(&self, op: usize) -> bool {
        self.closed.get(op).copied().unwrap_or(false)
    }

    fn flip(&self, set: &mut Linearized, op: usize) {
        let bits = if self.is_closed(op) {
            &mut set.closed
        } else {
            &mut set.open
        };
        let s = self.slot.get(op).copied().unwrap_or(0);
        if let Some(word) = bits.get_mut(s / 64) {
            *word ^= 1 << (s % 64);
        }
    }

    /// The state after open operation `o` at `state`, if `o` makes the
    /// completed operation `c` fit where it did not: the only reason to
    /// linearize an open operation (see [`SubHistory::search`]).
    fn helps(&self, o: usize, c: usize, state: State) -> Option<State> {
        let step = self.steps.get(c)?;
        if step.apply(state).is_some() {
            return None;
        }
        let after = self.steps.get(o)?.apply(state)?;
        step.apply(after).map(|_| after)
    }

    /// Open operations of one class are interchangeable as helpers: those
    /// with the same effect, and all puts of values no get returned (they
    /// can only ever help a delete that found the key).
    fn helper_class(&self, op: usize, state: State) -> Option<State> {
        match self.steps.get(op)? {
            Step::Put(v) if !self.observed.get(*v as usize).copied().unwrap_or(true) => {
                Some(Some(NEVER_WRITTEN))
            }
            step => step.apply(state),
        }
    }

    /// The first open call after `from` (an entry of the open list, or its
    /// head) invoked before `deadline` that helps `c`, and not redundant: an
    /// earlier open call with the same effect would do as well.
    fn next_helper(
        &self,
        c: usize,
        from: usize,
        state: State,
        deadline: usize,
        next: &[usize],
    ) -> Option<usize> {
        let link = |e: usize| next.get(e).copied().unwrap_or(NIL);
        let mut o = link(from);
        while o != NIL && o < deadline {
            let op = self.op_of(o);
            if self.helps(op, c, state).is_some() {
                let class = self.helper_class(op, state);
                let mut earlier = link(OPEN);
                while earlier != o && self.helper_class(self.op_of(earlier), state) != class {
                    earlier = link(earlier);
                }
                if earlier == o {
                    return Some(o);
                }
            }
            o = link(o);
        }
        None
    }

    /// Lowe's just-in-time linearization (as in Knossos and Porcupine),
    /// with memoization of (linearized set, state): walk the completed
    /// operations' events in time order; linearize the first call whose
    /// output fits the current state and whose (set, state) pair is new,
    /// and restart from the head; at the first return whose call is not
    /// linearized yet (the deadline), undo the last choice and try the next
    /// candidate after it.
    ///
    /// Open operations have no output and no deadline, so in any
    /// linearization they can be dropped or moved later until each one left
    /// sits right before a completed operation that needs it: one whose
    /// output does not fit the state without it and does with it. The
    /// search therefore only ever linearizes an open operation (invoked
    /// before the deadline) paired with the completed one it helps, and
    /// tries only one of several open operations with the same effect.
    fn search(&self, states_max: u64) -> Search {
        let mut next = self.initial_next.clone();
        let mut prev = self.initial_prev.clone();
        let mut set = Linearized {
            closed: vec![0; self.closed_count.div_ceil(64)],
            open: vec![0; self.open_count.div_ceil(64)],
        };
        let mut cache = Cache::default();
        let mut state: State = None;
        // (completed call entry, helping open call entry or NIL, state before)
        let mut stack: Vec<(usize, usize, State)> = Vec::new();
        let mut remaining_closed = self.closed_count;
        let mut explored = 0u64;
        let mut best: Option<Stuck> = None;
        let link = |v: &[usize], e: usize| v.get(e).copied().unwrap_or(NIL);
        // The completed call being considered, and the open call after
        // which to look for a helper (`None`: try it alone first).
        let mut cursor = (link(&next, MAIN), None::<usize>);
        let mut deadline = self.deadline(&next);
        loop {
            if remaining_closed == 0 {
                let mut order = Vec::with_capacity(stack.len());
                for &(c, o, _) in &stack {
                    if o != NIL {
                        order.push(self.op_of(o));
                    }
                    order.push(self.op_of(c));
                }
                return Search::Linearized { order, explored };
            }
            let (c, helper_from) = cursor;
            if c == NIL || !self.is_call(c) {
                // Dead end: no candidate before the deadline leads anywhere.
                if best.as_ref().is_none_or(|b| stack.len() > b.depth) {
                    best = Some(self.stuck(&stack, state, deadline, &next));
                }
                let Some((c, o, before)) = stack.pop() else {
                    return Search::Stuck(best.unwrap_or(Stuck {
                        depth: 0,
                        prefix: Vec::new(),
                        state: None,
                        deadline: None,
                        candidates: Vec::new(),
                    }));
                };
                state = before;
                for e in [c, o] {
                    if e != NIL {
                        let i = self.op_of(e);
                        self.flip(&mut set, i);
                        self.unlift(&mut next, &mut prev, i);
                    }
                }
                remaining_closed += 1;
                deadline = self.deadline(&next);
                // Alone it fitted, so no helper is worth trying for it.
                cursor = if o == NIL {
                    (link(&next, c), None)
                } else {
                    (c, Some(o))
                };
                continue;
            }
            let ci = self.op_of(c);
            let (helper, new_state) = match helper_from {
                None => match self.steps.get(ci).and_then(|s| s.apply(state)) {
                    Some(new_state) => (NIL, new_state),
                    None => {
                        cursor = (c, Some(OPEN));
                        continue;
                    }
                },
                Some(from) => match self.next_helper(ci, from, state, deadline, &next) {
                    Some(o) => {
                        let oi = self.op_of(o);
                        let after = self.helps(oi, ci, state);
                        match after.and_then(|a| self.steps.get(ci).and_then(|s| s.apply(a))) {
                            Some(new_state) => (o, new_state),
                            None => {
                                cursor = (c, Some(o));
                                continue;
                            }
                        }
                    }
                    None => {
                        cursor = (link(&next, c), None);
                        continue;
                    }
                },
            };
            let ops = [helper, c].map(|e| (e != NIL).then(|| self.op_of(e)));
            for i in ops.iter().flatten() {
                self.flip(&mut set, *i);
            }
            if cache.insert(set.key(new_state)) {
                explored += 1;
                if explored > states_max {
                    return Search::Exhausted;
                }
                stack.push((c, helper, state));
                state = new_state;
                for i in ops.iter().flatten() {
                    self.lift(&mut next, &mut prev, *i);
                }
                remaining_closed -= 1;
                cursor = (link(&next, MAIN), None);
                deadline = self.deadline(&next);
                continue;
            }
            for i in ops.iter().flatten() {
                self.flip(&mut set, *i);
            }
            cursor = if helper == NIL {
                (link(&next, c), None)
            } else {
                (c, Some(helper))
            };
        }
    }

    /// The first return in the main list.
    fn deadline(&self, next: &[usize]) -> usize {
        let mut e = next.get(MAIN).copied().unwrap_or(NIL);
        while e != NIL && self.is_call(e) {
            e = next.get(e).copied().unwrap_or(NIL);
        }
        e
    }

    fn stuck(
        &self,
        stack: &[(usize, usize, State)],
        state: State,
        deadline: usize,
        next: &[usize],
    ) -> Stuck {
        let calls = |head: usize| {
            let mut out = Vec::new();
            let mut e = next.get(head).copied().unwrap_or(NIL);
            while e != NIL && e < deadline && self.is_call(e) {
                out.push(self.op_of(e));
                e = next.get(e).copied().unwrap_or(NIL);
            }
            out
        };
        let closed = calls(MAIN);
        let mut candidates: Vec<(usize, bool)> = closed
            .iter()
            .map(|&i| (i, self.steps.get(i).and_then(|s| s.apply(state)).is_some()))
            .collect();
        // Open operations only where they would let a completed one fit.
        for o in calls(OPEN) {
            if closed.iter().any(|&c| self.helps(o, c, state).is_some()) {
                candidates.push((o, true));
            }
        }
        let mut prefix = Vec::with_capacity(stack.len());
        for &(c, o, _) in stack {
            if o != NIL {
                prefix.push(self.op_of(o));
            }
            prefix.push(self.op_of(c));
        }
        Stuck {
            depth: stack.len(),
            prefix,
            state,
            deadline: (deadline != NIL).then(|| self.op_of(deadline)),
            candidates,
        }
    }

    fn lift(&self, next: &mut [usize], prev: &mut [usize], op: usize) {
        for e in [self.call_entry.get(op), self.return_entry.get(op)]
            .into_iter()
            .flatten()
        {
            if *e != NIL {
                unlink(next, prev, *e);
            }
        }
    }

    fn unlift(&self, next: &mut [usize], prev: &mut [usize], op: usize) {
        for e in [self.return_entry.get(op), self.call_entry.get(op)]
            .into_iter()
            .flatten()
        {
            if *e != NIL {
                relink(next, prev, *e);
            }
        }
    }

    fn violation(&self, key: &[u8], ops: &[&Operation], stuck: &Stuck) -> Violation {
        let id = |i: usize| ops.get(i).map_or(OpId(usize::MAX), |op| op.id);
        let mut checked: Vec<Operation> = ops.iter().map(|&op| op.clone()).collect();
        checked.sort_by_key(|op| (op.invoke_us, op.id));
        let mut candidates: Vec<Candidate> = stuck
            .candidates
            .iter()
            .map(|&(i, consistent)| Candidate {
                id: id(i),
                consistent,
            })
            .collect();
        candidates.sort_by_key(|c| c.id);
        Violation {
            key: key.to_vec(),
            ops: checked,
            never_written: self.never_written.iter().map(|&i| id(i)).collect(),
            prefix: stuck.prefix.iter().map(|&i| id(i)).collect(),
            state_after_prefix: stuck.state.and_then(|v| {
                self.values
                    .get(usize::try_from(v).unwrap_or(usize::MAX))
                    .cloned()
            }),
            deadline: stuck.deadline.map(id),
            candidates,
            other_keys: Vec::new(),
        }
    }
}

fn unlink(next: &mut [usize], prev: &mut [usize], e: usize) {
    let (p, n) = (
        prev.get(e).copied().unwrap_or(NIL),
        next.get(e).copied().unwrap_or(NIL),
    );
    if let Some(slot) = next.get_mut(p) {
        *slot = n;
    }
    if let Some(slot) = prev.get_mut(n) {
        *slot = p;
    }
}

fn relink(next: &mut [usize], prev: &mut [usize], e: usize) {
    let (p, n) = (
        prev.get(e).copied().unwrap_or(NIL),
        next.get(e).copied().unwrap_or(NIL),
    );
    if let Some(slot) = next.get_mut(p) {
        *slot = e;
    }
    if let Some(slot) = prev.get_mut(n) {
        *slot = e;
    }
}
