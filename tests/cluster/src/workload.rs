//! The key-value workload: clients that record every operation they issue
//! (invoke, then ok, fail or unknown) into a [`History`] for the
//! linearizability checker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pbft_client::{Client, ClientError};
use pbft_core::KvOp;
use pbft_lincheck::{History, Op, OpId, Outcome, Output};
use tokio::task::JoinHandle;

use crate::rng::Rng;

/// Keys of the shared, overwritten set: `k/0`, `k/1`, ...
pub const HOT_PREFIX: &str = "k/";
/// Keys written once each (`u/CLIENT/N`): every acknowledged one must be
/// read back at the end.
pub const UNIQUE_PREFIX: &str = "u/";

/// The operation as the replicated service encodes it.
#[must_use]
pub fn to_kv(op: &Op) -> KvOp {
    match op {
        Op::Put { key, value } => KvOp::Put {
            key: key.clone(),
            value: value.clone(),
        },
        Op::Get { key } => KvOp::Get { key: key.clone() },
        Op::Delete { key } => KvOp::Delete { key: key.clone() },
    }
}

/// The output of `op` from the service's result bytes; `None` when the
/// bytes are not a result of that operation (see `pbft_core::KvOp`).
#[must_use]
pub fn decode_output(op: &Op, result: &[u8]) -> Option<Output> {
    match op {
        Op::Put { .. } => (result == b"ok").then_some(Output::Put),
        Op::Get { .. } => match result.split_first() {
            Some((1, value)) => Some(Output::value(value.to_vec())),
            Some((0, [])) => Some(Output::absent()),
            _ => None,
        },
        Op::Delete { .. } => match result {
            [1] => Some(Output::Delete(true)),
            [0] => Some(Output::Delete(false)),
            _ => None,
        },
    }
}

/// How a submitted operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// f + 1 matching replies.
    Ok(Output),
    /// Definitely not executed (refused before it was sent).
    Fail(String),
    /// May or may not have executed.
    Unknown(String),
    /// f + 1 replicas agreed on bytes that are no result of the operation.
    Malformed(Vec<u8>),
}

/// Classifies a client error: refused before sending (fail) or not (unknown).
#[must_use]
pub fn classify(e: &ClientError) -> Completion {
    match e {
        ClientError::Rejected { .. } | ClientError::Config(_) | ClientError::Crypto(_) => {
            Completion::Fail(e.to_string())
        }
        _ => Completion::Unknown(e.to_string()),
    }
}

/// Records operations into a history, with times on one clock.
#[derive(Debug)]
pub struct Recorder {
    origin: Instant,
    history: Mutex<History>,
    ok: AtomicU64,
    fail: AtomicU64,
    unknown: AtomicU64,
    malformed: Mutex<Vec<String>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder; its clock starts now.
    #[must_use]
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            history: Mutex::new(History::new()),
            ok: AtomicU64::new(0),
            fail: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            malformed: Mutex::new(Vec::new()),
        }
    }

    /// Microseconds since the recorder was made.
    #[must_use]
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The recorder's clock at `at`.
    #[must_use]
    pub fn us_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX)
    }

    /// Records an invocation, now.
    pub fn invoke(&self, client: u64, op: Op) -> OpId {
        let at = self.now_us();
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .invoke(client, op, at)
    }

    /// Records how `id` ended, now. A builder error (a harness bug) is
    /// kept as a malformed note so that it fails the run.
    pub fn complete(&self, id: OpId, completion: &Completion) {
        let at = self.now_us();
        let mut h = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let result = match completion {
            Completion::Ok(output) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                h.complete_ok(id, output.clone(), at)
            }
            Completion::Fail(_) => {
                self.fail.fetch_add(1, Ordering::Relaxed);
                h.complete_fail(id, at)
            }
            Completion::Unknown(_) => {
                self.unknown.fetch_add(1, Ordering::Relaxed);
                h.complete_unknown(id)
            }
            Completion::Malformed(bytes) => {
                self.unknown.fetch_add(1, Ordering::Relaxed);
                self.malformed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(format!(
                        "{id}: result {bytes:?} is no result of its operation"
                    ));
                h.complete_unknown(id)
            }
        };
        if let Err(e) = result {
            self.malformed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!("history: {e}"));
        }
    }

    /// Submits `op` through `client`, recording it; returns how it ended.
    pub async fn submit(&self, client_no: u64, client: &Client, op: Op) -> Completion {
        let bytes = to_kv(&op).encode();
        let id = self.invoke(client_no, op.clone());
        let completion = match client.submit(bytes).await {
            Ok(result) => match decode_output(&op, &result) {
                Some(output) => Completion::Ok(output),
                None => Completion::Malformed(result),
            },
            Err(e) => classify(&e),
        };
        self.complete(id, &completion);
        completion
    }

    /// A copy of the history so far.
    #[must_use]
    pub fn history(&self) -> History {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Operations (ok, failed, unknown) so far.
    #[must_use]
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.fail.load(Ordering::Relaxed),
            self.unknown.load(Ordering::Relaxed),
        )
    }

    /// Results that were no result of their operation, and harness bugs.
    #[must_use]
    pub fn malformed(&self) -> Vec<String> {
        self.malformed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The workload's shape.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    /// Number of hot keys shared by all clients.
    pub hot_keys: u64,
    /// Pause after each operation (keeps histories checkable).
    pub think: Duration,
    /// Bytes of padding in each value.
    pub value_pad: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            hot_keys: 8,
            think: Duration::from_millis(5),
            value_pad: 0,
            seed: 1,
        }
    }
}

/// Picks the next operation of client `c`'s `n`th step.
#[must_use]
pub fn next_op(spec: &WorkloadSpec, rng: &mut Rng, c: u64, n: u64) -> Op {
    let key = format!("{HOT_PREFIX}{}", rng.below(spec.hot_keys.max(1)));
    let value = || {
        let mut v = format!("{c}.{n}").into_bytes();
        v.resize(v.len() + spec.value_pad, b'.');
        v
    };
    match rng.below(100) {
        0..=39 => Op::put(key, value()),
        40..=79 => Op::get(key),
        80..=84 => Op::delete(key),
        _ => Op::put(format!("{UNIQUE_PREFIX}{c}/{n}"), value()),
    }
}

/// Running workload clients.
#[derive(Debug)]
pub struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    /// The clients (also usable after [`Workload::stop`]).
    pub clients: Vec<Arc<Client>>,
    /// The recorder.
    pub recorder: Arc<Recorder>,
}

impl Workload {
    /// Starts one closed loop per client.
    #[must_use]
    pub fn start(clients: Vec<Arc<Client>>, recorder: Arc<Recorder>, spec: &WorkloadSpec) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let base = Rng::new(spec.seed).fork(0x776f_726b);
        let tasks = clients
            .iter()
            .enumerate()
            .map(|(c, client)| {
                let client = client.clone();
                let recorder = recorder.clone();
                let stop = stop.clone();
                let spec = spec.clone();
                let mut rng = base.fork(c as u64);
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let op = next_op(&spec, &mut rng, c as u64, n);
                        n += 1;
                        recorder.submit(c as u64, &client, op).await;
                        if !spec.think.is_zero() {
                            tokio::time::sleep(spec.think).await;
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            tasks,
            clients,
            recorder,
        }
    }

    /// Stops the loops and waits for their operations in flight.
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    /// Runs `ops` on the clients in parallel (recorded), round robin.
    pub async fn run_ops(&self, ops: Vec<Op>) -> Vec<Completion> {
        let n = self.clients.len().max(1);
        let mut per_client: Vec<Vec<(usize, Op)>> = vec![Vec::new(); n];
        for (i, op) in ops.into_iter().enumerate() {
            per_client[i % n].push((i, op));
        }
        let mut tasks = Vec::new();
        for (c, ops) in per_client.into_iter().enumerate() {
            let Some(client) = self.clients.get(c).cloned() else {
                continue;
            };
            let recorder = self.recorder.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for (i, op) in ops {
                    out.push((i, recorder.submit(c as u64, &client, op).await));
                }
                out
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            if let Ok(v) = t.await {
                all.extend(v);
            }
        }
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, c)| c).collect()
    }
}

/// Latency percentiles (ms) of completed operations invoked in
/// `[from_us, to_us)`: (count, p50, p99).
#[must_use]
pub fn latency_ms(history: &History, from_us: u64, to_us: u64) -> (usize, f64, f64) {
    let mut lat: Vec<u64> = history
        .ops()
        .iter()
        .filter(|o| o.invoke_us >= from_us && o.invoke_us < to_us)
        .filter_map(|o| match o.outcome {
            Outcome::Ok { at_us, .. } => Some(at_us - o.invoke_us),
            _ => None,
        })
        .collect();
    lat.sort_unstable();
    let pct = |p: usize| {
        lat.get((lat.len() * p / 100).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |v| *v as f64 / 1000.0)
    };
    (lat.len(), pct(50), pct(99))
}

/// The read-back after a run: the hot keys, and every unique key whose put
/// was acknowledged or may have executed.
#[must_use]
pub fn read_back_keys(history: &History, hot_keys: u64, cap: usize) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..hot_keys)
        .map(|k| format!("{HOT_PREFIX}{k}").into_bytes())
        .collect();
    let mut unique: Vec<Vec<u8>> = history
        .ops()
        .iter()
        .filter(|o| o.op.key().starts_with(UNIQUE_PREFIX.as_bytes()))
        .filter(|o| !matches!(o.outcome, Outcome::Fail { .. }))
        .map(|o| o.op.key().to_vec())
        .collect();
    unique.sort();
    unique.dedup();
    unique.truncate(cap);
    keys.extend(unique);
    keys
}

/// Acknowledged writes that the read-back contradicts. For each key, the
/// unambiguous last write (acknowledged; every other write of the key that
/// may have executed completed before it was invoked) must be what a read
/// invoked after it completed returns. Returns (writes verified, lost).
#[must_use]
pub fn lost_writes(history: &History, reads_from_us: u64) -> (usize, Vec<String>) {
    use std::collections::BTreeMap;
    let mut by_key: BTreeMap<&[u8], Vec<&pbft_lincheck::Operation>> = BTreeMap::new();
    for o in history.ops() {
        by_key.entry(o.op.key()).or_default().push(o);
    }
    let mut verified = 0;
    let mut lost = Vec::new();
    for (key, ops) in by_key {
        let writes: Vec<_> = ops
            .iter()
            .filter(|o| !matches!(o.op, Op::Get { .. }))
            .filter(|o| !matches!(o.outcome, Outcome::Fail { .. }))
            .collect();
        // The candidate: an acknowledged write after which no other write
        // of the key may have taken effect.
        let last = writes.iter().find(|w| {
            let Outcome::Ok { .. } = w.outcome else {
                return false;
            };
            writes.iter().all(|other| {
                other.id == w.id
                    || matches!(other.outcome, Outcome::Ok { at_us, .. } if at_us < w.invoke_us)
            })
        });
        let Some(last) = last else { continue };
        let Outcome::Ok { at_us: done, .. } = last.outcome else {
            continue;
        };
        let expected = match &last.op {
            Op::Put { value, .. } => Output::value(value.clone()),
            _ => Output::absent(),
        };
        for read in ops.iter().filter(|o| {
            matches!(o.op, Op::Get { .. }) && o.invoke_us >= reads_from_us && o.invoke_us > done
        }) {
            if let Outcome::Ok { output, .. } = &read.outcome {
                if *output == expected {
                    verified += 1;
                } else {
                    lost.push(format!(
                        "{}: acknowledged {} ({}) but the read-back {} returned {}",
                        pbft_lincheck::fmt_bytes(key),
                        last.op,
                        last.id,
                        read.id,
                        output
                    ));
                }
            }
        }
    }
    (verified, lost)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn outputs_decode_from_service_results() {
        assert_eq!(decode_output(&Op::put("k", "v"), b"ok"), Some(Output::Put));
        assert_eq!(decode_output(&Op::put("k", "v"), b"no"), None);
        assert_eq!(
            decode_output(&Op::get("k"), &[1, b'v']),
            Some(Output::value("v"))
        );
        assert_eq!(decode_output(&Op::get("k"), &[0]), Some(Output::absent()));
        assert_eq!(decode_output(&Op::get("k"), &[0, 1]), None);
        assert_eq!(
            decode_output(&Op::delete("k"), &[1]),
            Some(Output::Delete(true))
        );
        assert_eq!(decode_output(&Op::delete("k"), &[2]), None);
        assert_eq!(
            to_kv(&Op::put("a", "b")),
            KvOp::Put {
                key: b"a".to_vec(),
                value: b"b".to_vec()
            }
        );
    }

    #[test]
    fn recorder_records_every_outcome() {
        let r = Recorder::new();
        let a = r.invoke(1, Op::put("k", "1"));
        let b = r.invoke(2, Op::get("k"));
        let c = r.invoke(3, Op::put("k", "2"));
        let d = r.invoke(4, Op::get("k"));
        r.complete(a, &Completion::Ok(Output::Put));
        r.complete(b, &Completion::Ok(Output::value("1")));
        r.complete(c, &Completion::Unknown("timeout".into()));
        r.complete(d, &Completion::Fail("rejected".into()));
        assert_eq!(r.counts(), (2, 1, 1));
        let h = r.history();
        assert_eq!(h.len(), 4);
        assert!(matches!(h.ops()[2].outcome, Outcome::Unknown));
        assert!(matches!(h.ops()[3].outcome, Outcome::Fail { .. }));
        assert!(pbft_lincheck::check(&h).is_ok());
        assert!(r.malformed().is_empty());
        // Completing twice is a harness bug and is kept, not ignored.
        r.complete(a, &Completion::Ok(Output::Put));
        assert_eq!(r.malformed().len(), 1);
        let e = r.invoke(5, Op::get("k"));
        r.complete(e, &Completion::Malformed(vec![9]));
        assert_eq!(r.malformed().len(), 2);
    }

    #[test]
    fn lost_writes_finds_a_missing_acknowledged_write() {
        let r = Recorder::new();
        let w = r.invoke(1, Op::put("u/1/0", "a"));
        r.complete(w, &Completion::Ok(Output::Put));
        let w2 = r.invoke(1, Op::put("k/0", "b"));
        r.complete(w2, &Completion::Ok(Output::Put));
        std::thread::sleep(Duration::from_millis(2));
        let from = r.now_us();
        let g = r.invoke(2, Op::get("u/1/0"));
        r.complete(g, &Completion::Ok(Output::value("a")));
        let g2 = r.invoke(2, Op::get("k/0"));
        r.complete(g2, &Completion::Ok(Output::absent()));
        let (verified, lost) = lost_writes(&r.history(), from);
        assert_eq!(verified, 1);
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].contains("k/0"), "{lost:?}");
        // An unknown later write makes the key ambiguous: not counted.
        let u = r.invoke(3, Op::put("k/0", "c"));
        r.complete(u, &Completion::Unknown("timeout".into()));
        let (_, lost) = lost_writes(&r.history(), from);
        assert!(lost.is_empty(), "{lost:?}");
        let keys = read_back_keys(&r.history(), 2, 10);
        assert_eq!(
            keys,
            vec![b"k/0".to_vec(), b"k/1".to_vec(), b"u/1/0".to_vec()]
        );
    }

    #[test]
    fn ops_follow_the_seed() {
        let spec = WorkloadSpec::default();
        let a: Vec<Op> = {
            let mut rng = Rng::new(5);
            (0..50).map(|n| next_op(&spec, &mut rng, 0, n)).collect()
        };
        let b: Vec<Op> = {
            let mut rng = Rng::new(5);
            (0..50).map(|n| next_op(&spec, &mut rng, 0, n)).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().any(|o| matches!(o, Op::Get { .. })));
        assert!(a.iter().any(|o| matches!(o, Op::Put { .. })));
    }
}
