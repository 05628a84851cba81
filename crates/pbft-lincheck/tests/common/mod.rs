//! Shared test support: histories generated from a real sequential
//! key-value model run with random concurrent timing, and a verifier of
//! the linearizations the checker returns.

// Not every test binary uses every helper.
#![allow(dead_code)]

use std::collections::HashMap;

use pbft_lincheck::{History, Linearization, Op, OpId, Outcome, Output};

/// One generated operation, before timing and results are worked out.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Which client (modulo the number of clients).
    pub client: u8,
    /// 0-3 put, 4-7 get, 8-9 delete.
    pub kind: u8,
    /// Which key (modulo the number of keys).
    pub key: u16,
    /// Idle time of the client before the operation.
    pub gap: u16,
    /// Invocation to linearization point.
    pub lat1: u16,
    /// Linearization point to completion (or invocation to timeout).
    pub lat2: u16,
    /// 0-84 ok, 85-89 fail, 90-94 unknown and applied, 95-97 unknown and
    /// not applied, 98-99 pending and applied.
    pub fate: u8,
}

/// An operation with its timing and what the model answered.
#[derive(Clone, Debug)]
pub struct Rec {
    /// The client.
    pub client: u64,
    /// The operation.
    pub op: Op,
    /// Invocation time.
    pub invoke: u64,
    /// Linearization point, if it took effect.
    pub lin: Option<u64>,
    /// The outcome (the output of an `Ok` is filled by the model).
    pub outcome: Outcome,
}

/// Runs `specs` against a sequential key-value model, each operation taking
/// effect at one point strictly inside its interval.
pub fn simulate(specs: &[Spec], clients: u64, keys: u64) -> Vec<Rec> {
    let clients = clients.max(1);
    let keys = keys.max(1);
    let mut free = vec![0u64; usize::try_from(clients).unwrap()];
    let mut recs = Vec::with_capacity(specs.len());
    for (j, s) in specs.iter().enumerate() {
        let client = u64::from(s.client) % clients;
        let slot = &mut free[usize::try_from(client).unwrap()];
        let key = format!("k{}", u64::from(s.key) % keys).into_bytes();
        let op = match s.kind % 10 {
            0..=3 => Op::put(key, format!("v{j}")),
            4..=7 => Op::get(key),
            _ => Op::delete(key),
        };
        let invoke = *slot + u64::from(s.gap);
        let lat1 = u64::from(s.lat1) + 1;
        let lat2 = u64::from(s.lat2) + 1;
        let (lin, outcome) = match s.fate % 100 {
            0..=84 => {
                let lin = invoke + lat1;
                *slot = lin + lat2;
                (
                    Some(lin),
                    Outcome::Ok {
                        output: Output::Put,
                        at_us: lin + lat2,
                    },
                )
            }
            85..=89 => {
                *slot = invoke + lat2;
                (
                    None,
                    Outcome::Fail {
                        at_us: invoke + lat2,
                    },
                )
            }
            90..=94 => {
                *slot = invoke + lat2;
                (Some(invoke + 5 * lat1), Outcome::Unknown)
            }
            95..=97 => {
                *slot = invoke + lat2;
                (None, Outcome::Unknown)
            }
            _ => {
                *slot = invoke + lat2;
                (Some(invoke + 3 * lat1), Outcome::Pending)
            }
        };
        recs.push(Rec {
            client,
            op,
            invoke,
            lin,
            outcome,
        });
    }
    let mut applied: Vec<(u64, usize)> = recs
        .iter()
        .enumerate()
        .filter_map(|(j, r)| r.lin.map(|l| (l, j)))
        .collect();
    applied.sort_unstable();
    let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for (_, j) in applied {
        let rec = &mut recs[j];
        let output = match &rec.op {
            Op::Put { key, value } => {
                model.insert(key.clone(), value.clone());
                Output::Put
            }
            Op::Get { key } => Output::Get(model.get(key).cloned()),
            Op::Delete { key } => Output::Delete(model.remove(key).is_some()),
        };
        if let Outcome::Ok { output: o, .. } = &mut rec.outcome {
            *o = output;
        }
    }
    recs
}

/// The history of `recs`, invoked in order.
pub fn build(recs: &[Rec]) -> History {
    let mut h = History::new();
    for r in recs {
        let id = h.invoke(r.client, r.op.clone(), r.invoke);
        match &r.outcome {
            Outcome::Pending => {}
            Outcome::Ok { output, at_us } => h.complete_ok(id, output.clone(), *at_us).unwrap(),
            Outcome::Fail { at_us } => h.complete_fail(id, *at_us).unwrap(),
            Outcome::Unknown => h.complete_unknown(id).unwrap(),
        }
    }
    h
}

/// A small deterministic generator (splitmix64).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `count` random specs.
    pub fn specs(&mut self, count: usize, max_latency: u16) -> Vec<Spec> {
        let m = u64::from(max_latency);
        (0..count)
            .map(|_| Spec {
                client: self.below(256) as u8,
                kind: self.below(10) as u8,
                key: self.below(65536) as u16,
                gap: self.below(m) as u16,
                lat1: self.below(m) as u16,
                lat2: self.below(m) as u16,
                fate: self.below(100) as u8,
            })
            .collect()
    }
}

/// Panics unless `lin` is a valid linearization of `history`: per key,
/// every completed operation appears once, the order respects real time,
/// and replaying it on a sequential model gives every recorded output.
pub fn verify(history: &History, lin: &Linearization) {
    let mut seen: HashMap<OpId, usize> = HashMap::new();
    for (key, order) in &lin.order {
        let mut value: Option<Vec<u8>> = None;
        for (pos, id) in order.iter().enumerate() {
            assert!(seen.insert(*id, pos).is_none(), "{id} placed twice");
            let op = history.get(*id).unwrap();
            assert_eq!(op.op.key(), key.as_slice());
            let output = match &op.op {
                Op::Put { value: v, .. } => {
                    value = Some(v.clone());
                    Output::Put
                }
                Op::Get { .. } => Output::Get(value.clone()),
                Op::Delete { .. } => Output::Delete(value.take().is_some()),
            };
            match &op.outcome {
                Outcome::Ok {
                    output: recorded, ..
                } => assert_eq!(recorded, &output, "{op}"),
                Outcome::Fail { .. } => panic!("failed op {id} linearized"),
                Outcome::Unknown | Outcome::Pending => {}
            }
        }
        // Real time: nothing placed before an operation that completed
        // before it was invoked.
        for (i, a) in order.iter().enumerate() {
            let a = history.get(*a).unwrap();
            for b in &order[i + 1..] {
                let b = history.get(*b).unwrap();
                if let Outcome::Ok { at_us, .. } | Outcome::Fail { at_us } = b.outcome {
                    assert!(
                        at_us >= a.invoke_us,
                        "{} placed before {} but follows it",
                        a.id,
                        b.id
                    );
                }
            }
        }
    }
    for op in history.ops() {
        if matches!(op.outcome, Outcome::Ok { .. }) {
            assert!(
                seen.contains_key(&op.id),
                "completed {} not linearized",
                op.id
            );
        }
    }
}
