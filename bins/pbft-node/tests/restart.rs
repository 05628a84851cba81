//! Restart recovery with the real stores (issue 5): a replica's persist
//! outputs go through the node's mapping ([`to_ops`]) into `RocksStore` and
//! `MemStore`; the store is reopened, recovered, converted
//! ([`durable_state`]) and the replica restored. The restarted replica
//! refuses to pre-prepare, prepare or commit a second digest where it voted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::VecDeque;

use pbft_core::{CounterApp, Input, Output, Params, Rejection, Replica, Time, Timer};
use pbft_crypto::{batch_digest, SecretKey, Signer};
use pbft_node::recovery::{durable_state, to_ops};
use pbft_storage::{MemStore, RocksConfig, RocksStore, Store};
use pbft_types::{
    Batch, ClientEntry, ClientId, ClusterConfig, ClusterId, Commit, Digest, Message, PrePrepare,
    Prepare, ReplicaEntry, ReplicaId, Request, RequestNo, SeqNo, Signed, View,
};

const T0: Time = Time(1_000);
const CLIENT: ClientId = ClientId(1);

struct Setup {
    config: ClusterConfig,
    signers: Vec<Signer<ReplicaId>>,
    client: Signer<ClientId>,
}

fn setup() -> Setup {
    let keys: Vec<SecretKey> = (0..4u8)
        .map(|i| SecretKey::from_seed([i + 1; 32]))
        .collect();
    let client_key = SecretKey::from_seed([200; 32]);
    let config = ClusterConfig {
        cluster_id: ClusterId(9),
        replicas: keys
            .iter()
            .enumerate()
            .map(|(i, k)| ReplicaEntry {
                id: ReplicaId(i as u32),
                public_key: k.public_key(),
                address: format!("127.0.0.1:{}", 7000 + i),
            })
            .collect(),
        clients: vec![ClientEntry {
            id: CLIENT,
            public_key: client_key.public_key(),
        }],
    }
    .validated()
    .unwrap();
    let signers = keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| Signer::new(k, config.cluster_id, ReplicaId(i as u32)))
        .collect();
    let client = Signer::new(client_key, config.cluster_id, CLIENT);
    Setup {
        config,
        signers,
        client,
    }
}

fn params() -> Params {
    Params {
        log_window_seqs: 4,
        checkpoint_interval_seqs: 2,
        pipeline_batches_max: 2,
        batch_requests_max: 1,
        batch_delay_us_max: 0,
        retransmit_interval_us: 1_000,
        view_change_timeout_us: 10_000,
        ..Params::default()
    }
}

impl Setup {
    fn batch(&self, no: u64) -> Batch {
        let request = self
            .client
            .sign_request(Request {
                request_no: RequestNo(no),
                read_only: false,
                op: vec![],
            })
            .unwrap();
        Batch {
            requests: vec![request],
        }
    }
    fn pre_prepare(&self, seq: u64, batch: &Batch) -> Signed<PrePrepare> {
        self.signers[0]
            .sign(PrePrepare {
                view: View(0),
                seq: SeqNo(seq),
                digest: batch_digest(batch).unwrap(),
            })
            .unwrap()
    }
    fn prepare(&self, from: usize, seq: u64, digest: Digest) -> Signed<Prepare> {
        self.signers[from]
            .sign(Prepare {
                view: View(0),
                seq: SeqNo(seq),
                digest,
            })
            .unwrap()
    }
    fn commit(&self, from: usize, seq: u64, digest: Digest) -> Signed<Commit> {
        self.signers[from]
            .sign(Commit {
                view: View(0),
                seq: SeqNo(seq),
                digest,
            })
            .unwrap()
    }
}

fn msg(from: u32, message: Message) -> Input {
    Input::Message {
        from: ReplicaId(from),
        message,
    }
}

/// Steps a replica, writing each persist to every store before
/// acknowledging it (persist before send, as the node does).
fn step(replica: &mut Replica<CounterApp>, stores: &[&dyn Store], input: Input) -> Vec<Output> {
    let mut queue = VecDeque::from([input]);
    let mut all = Vec::new();
    while let Some(input) = queue.pop_front() {
        for output in replica.step(T0, input) {
            if let Output::Persist { id, records } = &output {
                let batch = to_ops(records.clone()).unwrap();
                for store in stores {
                    store.write(&batch).unwrap();
                }
                queue.push_back(Input::PersistDone(*id));
            }
            all.push(output);
        }
    }
    all
}

fn restore(s: &Setup, store: &dyn Store) -> Replica<CounterApp> {
    let recovered = store.recover().unwrap();
    let state = durable_state(&recovered).unwrap();
    Replica::restore(
        s.config.clone(),
        params(),
        s.signers[1].clone(),
        CounterApp::default(),
        state,
    )
    .unwrap()
}

/// Nothing the replica sends is a pre-prepare, prepare or commit for `d`.
fn sends_nothing_for(outputs: &[Output], d: Digest) -> bool {
    outputs.iter().all(|o| {
        let m = match o {
            Output::Broadcast(m) | Output::Send { message: m, .. } => m,
            Output::Persist { .. } => return false,
            _ => return true,
        };
        match m {
            Message::PrePrepare { pre_prepare, .. } => pre_prepare.value.digest != d,
            Message::Prepare(p) => p.value.digest != d,
            Message::Commit(c) => c.value.digest != d,
            _ => true,
        }
    })
}

/// Runs backup 1 through seqs 1-3 writing to `store`: seqs 1 and 2
/// commit and execute, checkpoint 2 becomes stable, seq 3 is prepared and
/// committed by the backup but not executed. Returns the digests.
fn run_backup(s: &Setup, store: &dyn Store) -> Vec<Digest> {
    let stores = [store];
    let mut backup = Replica::new(
        s.config.clone(),
        params(),
        s.signers[1].clone(),
        CounterApp::default(),
    )
    .unwrap();
    let mut digests = Vec::new();
    for seq in 1..=3u64 {
        let batch = s.batch(seq);
        let d = batch_digest(&batch).unwrap();
        digests.push(d);
        let pp = s.pre_prepare(seq, &batch);
        let pre_prepare = Message::PrePrepare {
            pre_prepare: pp,
            batch,
        };
        step(&mut backup, &stores, msg(0, pre_prepare));
        step(
            &mut backup,
            &stores,
            msg(2, Message::Prepare(s.prepare(2, seq, d))),
        );
        if seq == 3 {
            break;
        }
        let mut out = Vec::new();
        for from in [0, 2] {
            let commit = Message::Commit(s.commit(from, seq, d));
            out.extend(step(&mut backup, &stores, msg(from as u32, commit)));
        }
        if seq == 2 {
            // Checkpoint 2 becomes stable with the votes of 0 and 2.
            let own = out
                .iter()
                .find_map(|o| match o {
                    Output::Broadcast(Message::Checkpoint(c)) => Some(c.value.clone()),
                    _ => None,
                })
                .unwrap();
            for from in [0, 2] {
                let c = s.signers[from].sign(own.clone()).unwrap();
                step(
                    &mut backup,
                    &stores,
                    msg(from as u32, Message::Checkpoint(c)),
                );
            }
            assert_eq!(backup.low_watermark(), SeqNo(2));
        }
    }
    assert_eq!(backup.last_executed(), SeqNo(2));
    digests
}

/// Restores backup 1 from `store` and checks it refuses a second digest
/// at (v0, s3) and still completes d3.
fn check_restored(s: &Setup, store: &dyn Store, digests: &[Digest]) {
    let mut restarted = restore(s, store);
    assert_eq!(restarted.view(), View(0));
    assert_eq!(restarted.low_watermark(), SeqNo(2));
    assert_eq!(restarted.last_executed(), SeqNo(2));
    assert_eq!(restarted.app().value, 2);
    assert_eq!(
        restarted.cached_reply(CLIENT).unwrap().request_no,
        RequestNo(2)
    );
    let d3 = digests[2];
    // The first tick re-sends the durable prepare and commit of s3.
    let out = restarted.step(T0, Input::TimerFired(Timer::Retransmit));
    assert!(out.contains(&Output::Broadcast(Message::Prepare(s.prepare(1, 3, d3)))));
    assert!(out.contains(&Output::Broadcast(Message::Commit(s.commit(1, 3, d3)))));
    // A second digest at (v0, s3): the pre-prepare is refused...
    let other = s.batch(9);
    let d9 = batch_digest(&other).unwrap();
    let pre_prepare = Message::PrePrepare {
        pre_prepare: s.pre_prepare(3, &other),
        batch: other,
    };
    let out = restarted.step(T0, msg(0, pre_prepare));
    assert_eq!(
        out,
        vec![Output::Rejected {
            from: pbft_core::Peer::Replica(ReplicaId(0)),
            reason: Rejection::ConflictingPrePrepare {
                view: View(0),
                seq: SeqNo(3)
            },
        }]
    );
    // ...and a prepare and a commit for it (from the Byzantine replica 3)
    // never make it prepare or commit d9.
    let mut out = restarted.step(T0, msg(3, Message::Prepare(s.prepare(3, 3, d9))));
    out.extend(restarted.step(T0, msg(3, Message::Commit(s.commit(3, 3, d9)))));
    assert!(sends_nothing_for(&out, d9), "{out:?}");
    assert_eq!(restarted.last_executed(), SeqNo(2));
    // The slot it voted in completes when the peers retransmit (their votes
    // were never its to persist): the prepare of 2, the commits of 0 and 2.
    restarted.step(T0, msg(2, Message::Prepare(s.prepare(2, 3, d3))));
    restarted.step(T0, msg(0, Message::Commit(s.commit(0, 3, d3))));
    let out = restarted.step(T0, msg(2, Message::Commit(s.commit(2, 3, d3))));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Executed { seq: SeqNo(3), digest, .. } if *digest == d3)));
    assert_eq!(restarted.app().value, 3);
}

#[test]
fn a_replica_restarted_from_rocks_store_refuses_a_second_digest() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let digests = {
        let rocks = RocksStore::open(&path, RocksConfig::default()).unwrap();
        run_backup(&s, &rocks)
    };
    let reopened = RocksStore::open(&path, RocksConfig::default()).unwrap();
    check_restored(&s, &reopened, &digests);
}

#[test]
fn a_replica_restarted_from_mem_store_refuses_a_second_digest() {
    let s = setup();
    let mem = MemStore::new();
    let digests = run_backup(&s, &mem);
    check_restored(&s, &mem, &digests);
}
