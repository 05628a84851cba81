//! Exact outputs for given inputs (in the style of openraft's engine tests),
//! and small clusters driven by hand.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::collections::VecDeque;

use pbft_core::{
    CounterApp, DurableState, Input, Output, Params, Peer, PersistId, PersistRecord, Rejection,
    Replica, RequestAuth, RestoreError, Time, Timer, RELAYED_REQUESTS_RECEIVED_PER_INTERVAL_MAX,
};
use pbft_crypto::{batch_digest, SecretKey, Signer};
use pbft_types::{
    Authenticator, Batch, ClientEntry, ClientId, ClientRequest, ClusterConfig, ClusterId, Commit,
    Digest, Message, PrePrepare, Prepare, ReplicaEntry, ReplicaId, Reply, Request, RequestNo,
    SeqNo, Signed, View,
};

const T0: Time = Time(1_000);
const CLIENT: ClientId = ClientId(1);

struct Setup {
    config: ClusterConfig,
    signers: Vec<Signer<ReplicaId>>,
    client: Signer<ClientId>,
}

fn setup(n: usize) -> Setup {
    let keys: Vec<SecretKey> = (0..n)
        .map(|i| SecretKey::from_seed([i as u8 + 1; 32]))
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
    fn replica(&self, i: usize) -> Replica<CounterApp> {
        Replica::new(
            self.config.clone(),
            params(),
            self.signers[i].clone(),
            CounterApp::default(),
        )
        .unwrap()
    }
    fn request(&self, no: u64) -> ClientRequest {
        self.client
            .sign_request(Request {
                request_no: RequestNo(no),
                read_only: false,
                op: vec![],
            })
            .unwrap()
    }
    fn batch(&self, nos: &[u64]) -> Batch {
        Batch {
            requests: nos.iter().map(|n| self.request(*n)).collect(),
        }
    }
    fn pre_prepare(&self, signer: usize, view: u64, seq: u64, batch: &Batch) -> Signed<PrePrepare> {
        let digest = batch_digest(batch).unwrap();
        self.signers[signer]
            .sign(PrePrepare {
                view: View(view),
                seq: SeqNo(seq),
                digest,
            })
            .unwrap()
    }
    fn prepare(&self, signer: usize, seq: u64, digest: Digest) -> Signed<Prepare> {
        self.signers[signer]
            .sign(Prepare {
                view: View(0),
                seq: SeqNo(seq),
                digest,
            })
            .unwrap()
    }
    fn commit(&self, signer: usize, seq: u64, digest: Digest) -> Signed<Commit> {
        self.signers[signer]
            .sign(Commit {
                view: View(0),
                seq: SeqNo(seq),
                digest,
            })
            .unwrap()
    }
}

/// Flips a bit of a signed request's signature.
fn spoil(request: &mut ClientRequest) {
    match &mut request.auth {
        Authenticator::Signature(sig) => sig.0[5] ^= 1,
        Authenticator::Macs(macs) => macs[0].0[5] ^= 1,
    }
}

fn msg(from: u32, message: Message) -> Input {
    Input::Message {
        from: ReplicaId(from),
        message,
    }
}

fn pp_msg(pre_prepare: Signed<PrePrepare>, batch: &Batch) -> Message {
    Message::PrePrepare {
        pre_prepare,
        batch: batch.clone(),
    }
}

fn rejected(from: u32, reason: Rejection) -> Vec<Output> {
    vec![Output::Rejected {
        from: Peer::Replica(ReplicaId(from)),
        reason,
    }]
}

fn retransmit_timer() -> Output {
    Output::SetTimer {
        timer: Timer::Retransmit,
        at: T0.plus_us(1_000),
    }
}

#[test]
fn primary_persists_the_pre_prepare_before_broadcasting_it() {
    let s = setup(4);
    let mut primary = s.replica(0);
    let request = s.request(1);
    let out = primary.step(
        T0,
        Input::ClientRequest {
            from: CLIENT,
            request: request.clone(),
        },
    );
    let batch = Batch {
        requests: vec![request],
    };
    let pp = s.pre_prepare(0, 0, 1, &batch);
    assert_eq!(
        out,
        vec![
            Output::Persist {
                id: PersistId(0),
                records: vec![PersistRecord::PrePrepare {
                    pre_prepare: pp.clone(),
                    batch: batch.clone()
                }],
            },
            retransmit_timer(),
        ]
    );
    let out = primary.step(T0, Input::PersistDone(PersistId(0)));
    assert_eq!(
        out,
        vec![Output::Broadcast(Message::PrePrepare {
            pre_prepare: pp,
            batch
        })]
    );
}

#[test]
fn backup_persists_pre_prepare_and_prepare_before_sending_the_prepare() {
    let s = setup(4);
    let mut backup = s.replica(1);
    let batch = s.batch(&[1]);
    let pp = s.pre_prepare(0, 0, 1, &batch);
    let out = backup.step(
        T0,
        msg(
            0,
            Message::PrePrepare {
                pre_prepare: pp.clone(),
                batch: batch.clone(),
            },
        ),
    );
    let prepare = s.prepare(1, 1, pp.value.digest);
    assert_eq!(
        out,
        vec![
            Output::Persist {
                id: PersistId(0),
                records: vec![
                    PersistRecord::PrePrepare {
                        pre_prepare: pp.clone(),
                        batch
                    },
                    PersistRecord::Prepare(prepare.clone()),
                ],
            },
            retransmit_timer(),
        ]
    );
    // Nothing leaves before the acknowledgement; then exactly the prepare.
    let out = backup.step(T0, Input::PersistDone(PersistId(0)));
    assert_eq!(out, vec![Output::Broadcast(Message::Prepare(prepare))]);
    // The same pre-prepare again is a duplicate.
    let batch = s.batch(&[1]);
    let out = backup.step(
        T0,
        msg(
            0,
            Message::PrePrepare {
                pre_prepare: pp,
                batch,
            },
        ),
    );
    assert_eq!(out, rejected(0, Rejection::Duplicate));
}

/// Accepts a pre-prepare at `backup` and acknowledges the persist; returns
/// the digest.
fn accept(s: &Setup, backup: &mut Replica<CounterApp>, seq: u64, nos: &[u64]) -> Digest {
    let batch = s.batch(nos);
    let pp = s.pre_prepare(0, 0, seq, &batch);
    let out = backup.step(
        T0,
        msg(
            0,
            Message::PrePrepare {
                pre_prepare: pp.clone(),
                batch,
            },
        ),
    );
    let Some(Output::Persist { id, .. }) = out.first() else {
        panic!("no persist: {out:?}")
    };
    backup.step(T0, Input::PersistDone(*id));
    pp.value.digest
}

#[test]
fn seven_replicas_need_a_quorum_of_five() {
    let s = setup(7);
    assert_eq!((s.config.f(), s.config.quorum()), (2, 5));
    let mut backup = s.replica(1);
    let d = accept(&s, &mut backup, 1, &[1]);
    // Own prepare (durable) + 2 and 3: three of the 2f = 4 prepares needed.
    for i in [2, 3] {
        assert_eq!(
            backup.step(T0, msg(i, Message::Prepare(s.prepare(i as usize, 1, d)))),
            vec![]
        );
    }
    // The fourth prepare makes it prepared: the commit is persisted first.
    let out = backup.step(T0, msg(4, Message::Prepare(s.prepare(4, 1, d))));
    let commit = s.commit(1, 1, d);
    let cert = backup.prepared_certificate(SeqNo(1)).unwrap();
    assert_eq!(cert.prepares.signatures.len(), 4);
    assert_eq!(
        out,
        vec![Output::Persist {
            id: PersistId(1),
            records: vec![
                PersistRecord::Commit(commit.clone()),
                PersistRecord::PreparedCert(cert)
            ]
        }]
    );
    assert_eq!(
        backup.step(T0, Input::PersistDone(PersistId(1))),
        vec![Output::Broadcast(Message::Commit(commit))]
    );
    // Own commit + 0, 2, 3 = 4 commits: not yet committed-local.
    for i in [0, 2, 3] {
        assert_eq!(
            backup.step(T0, msg(i, Message::Commit(s.commit(i as usize, 1, d)))),
            vec![]
        );
    }
    assert_eq!(backup.last_executed(), SeqNo(0));
    // The fifth executes the batch and replies.
    let out = backup.step(T0, msg(4, Message::Commit(s.commit(4, 1, d))));
    assert_eq!(
        out[0],
        Output::Reply {
            client: CLIENT,
            reply: Reply {
                view: View(0),
                client: CLIENT,
                request_no: RequestNo(1),
                replica: ReplicaId(1),
                result: 1u64.to_le_bytes().to_vec(),
            },
        }
    );
    assert_eq!(
        out[1],
        Output::Executed {
            seq: SeqNo(1),
            view: View(0),
            digest: d,
            requests: vec![(CLIENT, RequestNo(1))]
        }
    );
    assert_eq!(backup.last_executed(), SeqNo(1));
}

#[test]
fn a_duplicate_vote_counts_once() {
    let s = setup(4);
    let mut backup = s.replica(1);
    let batch = s.batch(&[1]);
    let pp = s.pre_prepare(0, 0, 1, &batch);
    let d = pp.value.digest;
    backup.step(
        T0,
        msg(
            0,
            Message::PrePrepare {
                pre_prepare: pp,
                batch,
            },
        ),
    );
    // Own prepare not durable yet: 2's prepare twice is one vote, not 2f = 2.
    assert_eq!(
        backup.step(T0, msg(2, Message::Prepare(s.prepare(2, 1, d)))),
        vec![]
    );
    assert_eq!(
        backup.step(T0, msg(2, Message::Prepare(s.prepare(2, 1, d)))),
        rejected(2, Rejection::Duplicate)
    );
    // The own prepare becomes durable: now 2f prepares, the commit follows.
    let out = backup.step(T0, Input::PersistDone(PersistId(0)));
    assert!(
        matches!(&out[1], Output::Persist { records, .. } if matches!(records[0], PersistRecord::Commit(_)))
    );
    backup.step(T0, Input::PersistDone(PersistId(1)));
    // Commits: own + 2 twice = 2 < 3.
    assert_eq!(
        backup.step(T0, msg(2, Message::Commit(s.commit(2, 1, d)))),
        vec![]
    );
    assert_eq!(
        backup.step(T0, msg(2, Message::Commit(s.commit(2, 1, d)))),
        rejected(2, Rejection::Duplicate)
    );
    assert_eq!(backup.last_executed(), SeqNo(0));
    backup.step(T0, msg(3, Message::Commit(s.commit(3, 1, d))));
    assert_eq!(backup.last_executed(), SeqNo(1));
}

#[test]
fn a_prepare_with_another_digest_does_not_count() {
    let s = setup(4);
    let mut backup = s.replica(1);
    let d = accept(&s, &mut backup, 1, &[1]);
    let other = Digest([0xee; 32]);
    // Validly signed, but for another digest: stored, not counted.
    assert_eq!(
        backup.step(T0, msg(2, Message::Prepare(s.prepare(2, 1, other)))),
        vec![]
    );
    assert!(backup.prepared_certificate(SeqNo(1)).is_none());
    // The same replica cannot vote again with the right digest.
    assert_eq!(
        backup.step(T0, msg(2, Message::Prepare(s.prepare(2, 1, d)))),
        rejected(
            2,
            Rejection::ConflictingVote {
                replica: ReplicaId(2),
                seq: SeqNo(1)
            }
        )
    );
    // A matching prepare from 3 completes 2f.
    let out = backup.step(T0, msg(3, Message::Prepare(s.prepare(3, 1, d))));
    assert!(
        matches!(&out[0], Output::Persist { records, .. } if matches!(records[0], PersistRecord::Commit(_)))
    );
    let cert = backup.prepared_certificate(SeqNo(1)).unwrap();
    let signers: Vec<ReplicaId> = cert.prepares.signatures.iter().map(|(r, _)| *r).collect();
    assert_eq!(signers, vec![ReplicaId(1), ReplicaId(3)]);
}

#[test]
fn pre_prepares_are_rejected_with_the_right_reason() {
    let s = setup(4);
    let mut backup = s.replica(1);
    let batch = s.batch(&[1]);

    // Below the low watermark, and beyond the buffer above the high one.
    let (low, high) = (SeqNo(0), SeqNo(4));
    assert_eq!(
        backup.step(T0, msg(0, pp_msg(s.pre_prepare(0, 0, 0, &batch), &batch))),
        rejected(
            0,
            Rejection::OutsideWindow {
                low,
                high,
                got: SeqNo(0)
            }
        )
    );
    // (It also tells the replica it may be behind: the retransmission timer starts.)
    assert_eq!(
        backup.step(T0, msg(0, pp_msg(s.pre_prepare(0, 0, 9, &batch), &batch))),
        [
            rejected(
                0,
                Rejection::OutsideWindow {
                    low,
                    high,
                    got: SeqNo(9)
                }
            ),
            vec![retransmit_timer()]
        ]
        .concat()
    );
    // Just above the window: buffered within the bound, not rejected.
    assert_eq!(
        backup.step(T0, msg(0, pp_msg(s.pre_prepare(0, 0, 5, &batch), &batch))),
        vec![]
    );
    assert_eq!(backup.future_len(), 1);
    // Another view (signed by that view's primary): refused, and the
    // replica asks that primary once for the NEW-VIEW it missed.
    assert_eq!(
        backup.step(T0, msg(1, pp_msg(s.pre_prepare(1, 1, 1, &batch), &batch))),
        [
            vec![Output::Send {
                to: ReplicaId(1),
                message: Message::Fetch(pbft_types::Fetch::NewView)
            }],
            rejected(
                1,
                Rejection::WrongView {
                    expected: View(0),
                    got: View(1)
                }
            )
        ]
        .concat()
    );
    assert_eq!(
        backup.step(T0, msg(1, pp_msg(s.pre_prepare(1, 1, 1, &batch), &batch))),
        rejected(
            1,
            Rejection::WrongView {
                expected: View(0),
                got: View(1)
            }
        )
    );
    // Not from the primary, and signer different from the sender.
    assert_eq!(
        backup.step(T0, msg(2, pp_msg(s.pre_prepare(2, 0, 1, &batch), &batch))),
        rejected(
            2,
            Rejection::NotPrimary {
                expected: ReplicaId(0),
                got: ReplicaId(2)
            }
        )
    );
    assert_eq!(
        backup.step(T0, msg(2, pp_msg(s.pre_prepare(0, 0, 1, &batch), &batch))),
        rejected(
            2,
            Rejection::SignerMismatch {
                from: ReplicaId(2),
                signer: ReplicaId(0)
            }
        )
    );
    // A batch that does not match the digest.
    let other = s.batch(&[2]);
    let got = batch_digest(&other).unwrap();
    let pp = s.pre_prepare(0, 0, 1, &batch);
    let expected = pp.value.digest;
    assert_eq!(
        backup.step(T0, msg(0, pp_msg(pp.clone(), &other))),
        rejected(0, Rejection::DigestMismatch { expected, got })
    );
    // A bad signature.
    let mut forged = pp.clone();
    forged.signature.0[0] ^= 1;
    assert_eq!(
        backup.step(T0, msg(0, pp_msg(forged, &batch))),
        rejected(0, Rejection::BadSignature)
    );
    // A request whose client signature is bad.
    let mut bad_batch = batch.clone();
    spoil(&mut bad_batch.requests[0]);
    let bad_pp = s.pre_prepare(0, 0, 1, &bad_batch);
    assert_eq!(
        backup.step(T0, msg(0, pp_msg(bad_pp, &bad_batch))),
        rejected(
            0,
            Rejection::BadRequestSignature {
                client: CLIENT,
                request_no: RequestNo(1)
            }
        )
    );
    // Accepted once; a second digest at the same view and seq conflicts.
    let out = backup.step(T0, msg(0, pp_msg(pp, &batch)));
    assert!(matches!(out[0], Output::Persist { .. }));
    assert_eq!(
        backup.step(T0, msg(0, pp_msg(s.pre_prepare(0, 0, 1, &other), &other))),
        rejected(
            0,
            Rejection::ConflictingPrePrepare {
                view: View(0),
                seq: SeqNo(1)
            }
        )
    );
}

/// A cluster driven by hand: messages delivered in order, persists
/// acknowledged at once, timers ignored, some replicas silent.
struct Cluster {
    setup: Setup,
    replicas: Vec<Replica<CounterApp>>,
    silent: Vec<usize>,
    queue: VecDeque<(usize, Input)>,
    replies: Vec<Reply>,
    outputs: Vec<(usize, Output)>,
}

impl Cluster {
    fn new(n: usize, silent: Vec<usize>) -> Self {
        let setup = setup(n);
        let replicas = (0..n).map(|i| setup.replica(i)).collect();
        Self {
            setup,
            replicas,
            silent,
            queue: VecDeque::new(),
            replies: Vec::new(),
            outputs: Vec::new(),
        }
    }

    fn submit(&mut self, request: &ClientRequest) {
        for i in 0..self.replicas.len() {
            self.queue.push_back((
                i,
                Input::ClientRequest {
                    from: CLIENT,
                    request: request.clone(),
                },
            ));
        }
        self.run();
    }

    fn run(&mut self) {
        while let Some((to, input)) = self.queue.pop_front() {
            if self.silent.contains(&to) {
                continue;
            }
            for output in self.replicas[to].step(T0, input) {
                match &output {
                    Output::Broadcast(m) => {
                        for i in (0..self.replicas.len()).filter(|i| *i != to) {
                            self.queue.push_back((i, msg(to as u32, m.clone())));
                        }
                    }
                    Output::Send { to: dest, message } => {
                        self.queue
                            .push_back((dest.0 as usize, msg(to as u32, message.clone())));
                    }
                    Output::Persist { id, .. } => {
                        self.queue.push_back((to, Input::PersistDone(*id)))
                    }
                    Output::Reply { reply, .. } => self.replies.push(reply.clone()),
                    _ => {}
                }
                self.outputs.push((to, output));
            }
        }
    }
}

#[test]
fn four_replicas_commit_with_one_silent_backup() {
    let mut c = Cluster::new(4, vec![3]);
    let request = c.setup.request(1);
    c.submit(&request);
    let mut repliers: Vec<u32> = c.replies.iter().map(|r| r.replica.0).collect();
    repliers.sort_unstable();
    assert_eq!(repliers, vec![0, 1, 2]);
    assert!(c.replies.iter().all(|r| r.result == 1u64.to_le_bytes()));
    for i in 0..3 {
        assert_eq!(c.replicas[i].last_executed(), SeqNo(1));
        assert_eq!(c.replicas[i].app().value, 1);
    }
    assert_eq!(c.replicas[3].last_executed(), SeqNo(0));
}

#[test]
fn a_duplicate_request_gets_the_cached_reply_and_runs_once() {
    let mut c = Cluster::new(4, vec![]);
    let request = c.setup.request(1);
    c.submit(&request);
    assert_eq!(c.replies.len(), 4);
    // The retransmission: each replica answers from its reply table.
    let out = c.replicas[1].step(
        T0,
        Input::ClientRequest {
            from: CLIENT,
            request: request.clone(),
        },
    );
    assert_eq!(
        out,
        vec![Output::Reply {
            client: CLIENT,
            reply: Reply {
                view: View(0),
                client: CLIENT,
                request_no: RequestNo(1),
                replica: ReplicaId(1),
                result: 1u64.to_le_bytes().to_vec(),
            },
        }]
    );
    c.submit(&request);
    assert!(c
        .replicas
        .iter()
        .all(|r| r.app().value == 1 && r.last_executed() == SeqNo(1)));
    // A request from another client's channel is refused.
    let out = c.replicas[1].step(
        T0,
        Input::ClientRequest {
            from: ClientId(2),
            request,
        },
    );
    assert_eq!(
        out,
        vec![Output::Rejected {
            from: Peer::Client(ClientId(2)),
            reason: Rejection::ClientMismatch {
                from: ClientId(2),
                signer: CLIENT
            },
        }]
    );
}

#[test]
fn checkpoints_stabilize_and_garbage_collection_moves_the_window() {
    let mut c = Cluster::new(4, vec![]);
    // K = 2, L = 4, one request per batch, two batches in flight.
    for no in 1..=4 {
        let request = c.setup.request(no);
        for i in 0..4 {
            c.queue.push_back((
                i,
                Input::ClientRequest {
                    from: CLIENT,
                    request: request.clone(),
                },
            ));
        }
    }
    // Run without letting anything execute past seq 4 first: the primary
    // may assign only up to H = 4 before a checkpoint is stable.
    c.run();
    for r in &c.replicas {
        assert_eq!(r.last_executed(), SeqNo(4));
        assert_eq!(r.low_watermark(), SeqNo(4));
        assert_eq!(r.high_watermark(), SeqNo(8));
        assert_eq!(r.log_len(), 0, "log freed below the stable checkpoint");
        assert_eq!(r.checkpoint_votes_len(), 0);
        let cert = r.stable_checkpoint().unwrap();
        assert_eq!(cert.value.seq, SeqNo(4));
        assert!(cert.signatures.len() >= 3);
    }
    let stable: Vec<SeqNo> = c
        .outputs
        .iter()
        .filter(|(i, _)| *i == 0)
        .filter_map(|(_, o)| match o {
            Output::CheckpointStable { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(stable, vec![SeqNo(2), SeqNo(4)]);
    // The stable checkpoint is persisted with its proof.
    assert!(c.outputs.iter().any(|(i, o)| *i == 1
        && matches!(o, Output::Persist { records, .. }
            if matches!(&records[0], PersistRecord::StableCheckpoint(cert) if cert.value.seq == SeqNo(4)))));
    // Old messages are now outside the window.
    let d = Digest([1; 32]);
    let out = c.replicas[1].step(T0, msg(2, Message::Commit(c.setup.commit(2, 3, d))));
    assert_eq!(
        out,
        rejected(
            2,
            Rejection::OutsideWindow {
                low: SeqNo(4),
                high: SeqNo(8),
                got: SeqNo(3)
            }
        )
    );
    // The window moved: more requests commit at seq 5 and 6.
    for no in 5..=6 {
        let request = c.setup.request(no);
        c.submit(&request);
    }
    assert!(c
        .replicas
        .iter()
        .all(|r| r.last_executed() == SeqNo(6) && r.low_watermark() == SeqNo(6)));
    assert!(c.replicas.iter().all(|r| r.app().value == 6));
}

#[test]
fn channel_authentication_parks_a_batch_until_the_request_arrives() {
    let s = setup(4);
    let p = Params {
        request_auth: RequestAuth::Channel,
        ..params()
    };
    let mut backup = Replica::new(
        s.config.clone(),
        p,
        s.signers[1].clone(),
        CounterApp::default(),
    )
    .unwrap();
    let batch = s.batch(&[1]);
    let pp = s.pre_prepare(0, 0, 1, &batch);
    // The backup has not received request 1 from the client: parked.
    let out = backup.step(
        T0,
        msg(
            0,
            Message::PrePrepare {
                pre_prepare: pp.clone(),
                batch: batch.clone(),
            },
        ),
    );
    assert_eq!(out, vec![retransmit_timer()]);
    // The request arrives over the client's channel: the pre-prepare is accepted.
    let out = backup.step(
        T0,
        Input::ClientRequest {
            from: CLIENT,
            request: s.request(1),
        },
    );
    assert!(matches!(&out[0], Output::Persist { records, .. } if records.len() == 2));
}

#[test]
fn peer_input_is_bounded_and_never_panics() {
    let s = setup(4);
    let mut backup = s.replica(1);
    let d = Digest([3; 32]);
    // A flood of commits above the window from one peer is buffered only
    // up to its share of future_messages_max, then rejected.
    let mut rejected_count = 0;
    for seq in 5..=8 {
        for _ in 0..2_000 {
            let out = backup.step(T0, msg(2, Message::Commit(s.commit(2, seq, d))));
            rejected_count += out
                .iter()
                .filter(|o| matches!(o, Output::Rejected { .. }))
                .count();
        }
    }
    assert!(backup.future_len() <= params().future_messages_max / 4);
    assert!(rejected_count > 0);
    // Messages this crate does not handle are rejected with a reason.
    let reply = Reply {
        view: View(0),
        client: CLIENT,
        request_no: RequestNo(1),
        replica: ReplicaId(2),
        result: vec![],
    };
    let out = backup.step(T0, msg(2, Message::Reply(reply)));
    assert_eq!(out, rejected(2, Rejection::Unsupported("reply")));
    // Nothing stable yet to serve.
    let out = backup.step(
        T0,
        msg(2, Message::Fetch(pbft_types::Fetch::StableCheckpoint)),
    );
    assert_eq!(out, rejected(2, Rejection::NotAvailable(SeqNo(1))));
    let out = backup.step(T0, msg(9, Message::Commit(s.commit(2, 1, d))));
    assert_eq!(
        out,
        vec![Output::Rejected {
            from: Peer::Replica(ReplicaId(9)),
            reason: Rejection::UnknownReplica(ReplicaId(9))
        }]
    );
}

#[test]
fn retransmission_never_sends_a_pre_prepare_that_is_not_durable() {
    // Found by the simulator (seed 1391): the retransmission timer fired
    // between the primary's proposal and its persist acknowledgement.
    let s = setup(4);
    let mut primary = s.replica(0);
    let request = s.request(1);
    primary.step(
        T0,
        Input::ClientRequest {
            from: CLIENT,
            request,
        },
    );
    let later = T0.plus_us(1_000);
    let out = primary.step(later, Input::TimerFired(Timer::Retransmit));
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Broadcast(Message::PrePrepare { .. }))),
        "{out:?}"
    );
    let out = primary.step(later, Input::PersistDone(PersistId(0)));
    assert!(matches!(
        &out[0],
        Output::Broadcast(Message::PrePrepare { .. })
    ));
}

// ----- restart recovery (issue 5; FAULTS.md 10, amnesia) -------------------

/// The records of every `Persist` in `outputs`, all acknowledged.
fn durable(outputs: &[Output]) -> DurableState {
    let mut state = DurableState::default();
    for o in outputs {
        if let Output::Persist { records, .. } = o {
            for r in records {
                state.apply(r);
            }
        }
    }
    state
}

impl Setup {
    fn restore(&self, i: usize, state: DurableState) -> Replica<CounterApp> {
        Replica::restore(
            self.config.clone(),
            params(),
            self.signers[i].clone(),
            CounterApp::default(),
            state,
        )
        .unwrap()
    }
}

fn pp_message(pre_prepare: Signed<PrePrepare>, batch: Batch) -> Message {
    Message::PrePrepare { pre_prepare, batch }
}

/// Drives a backup through the pre-prepare of (v0, s1, d1) and returns
/// every output, acknowledging each persist.
fn backup_prepares(s: &Setup, backup: &mut Replica<CounterApp>, batch: &Batch) -> Vec<Output> {
    let pp = s.pre_prepare(0, 0, 1, batch);
    let mut all = backup.step(T0, msg(0, pp_message(pp, batch.clone())));
    all.extend(backup.step(T0, Input::PersistDone(PersistId(0))));
    all
}

#[test]
fn a_backup_restarted_after_preparing_refuses_a_second_digest() {
    let s = setup(4);
    let mut backup = s.replica(1);
    let b1 = s.batch(&[1]);
    let d1 = batch_digest(&b1).unwrap();
    let outputs = backup_prepares(&s, &mut backup, &b1);
    drop(backup);
    let mut restarted = s.restore(1, durable(&outputs));
    assert_eq!(restarted.view(), View(0));
    assert_eq!(restarted.last_executed(), SeqNo(0));
    // The first tick re-sends the durable prepare and asks for seq 1.
    let out = restarted.step(T0, Input::TimerFired(Timer::Retransmit));
    assert_eq!(
        out,
        vec![
            Output::Broadcast(Message::Prepare(s.prepare(1, 1, d1))),
            Output::Broadcast(Message::Fetch(pbft_types::Fetch::Batch { seq: SeqNo(1) })),
            retransmit_timer(),
        ]
    );
    // A pre-prepare for another digest at (v0, s1): refused, no prepare.
    let b2 = s.batch(&[2]);
    let out = restarted.step(T0, msg(0, pp_message(s.pre_prepare(0, 0, 1, &b2), b2)));
    assert_eq!(
        out,
        rejected(
            0,
            Rejection::ConflictingPrePrepare {
                view: View(0),
                seq: SeqNo(1)
            }
        )
    );
    // The slot it voted in still completes: 2f matching prepares (its own
    // durable one and replica 2's) make it commit d1, and only d1.
    let out = restarted.step(T0, msg(2, Message::Prepare(s.prepare(2, 1, d1))));
    let cert = restarted.prepared_certificate(SeqNo(1)).unwrap();
    assert_eq!(cert.pre_prepare.value.digest, d1);
    assert_eq!(
        out,
        vec![Output::Persist {
            id: PersistId(0),
            records: vec![
                PersistRecord::Commit(s.commit(1, 1, d1)),
                PersistRecord::PreparedCert(cert)
            ],
        }]
    );
    let out = restarted.step(T0, Input::PersistDone(PersistId(0)));
    assert_eq!(
        out,
        vec![Output::Broadcast(Message::Commit(s.commit(1, 1, d1)))]
    );
    restarted.step(T0, msg(0, Message::Commit(s.commit(0, 1, d1))));
    let out = restarted.step(T0, msg(2, Message::Commit(s.commit(2, 1, d1))));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Executed { seq: SeqNo(1), digest, .. } if *digest == d1)));
    assert_eq!(restarted.app().value, 1);
}

#[test]
fn a_backup_restarted_after_committing_never_commits_a_second_digest() {
    let s = setup(4);
    let mut backup = s.replica(1);
    let b1 = s.batch(&[1]);
    let d1 = batch_digest(&b1).unwrap();
    let mut outputs = backup_prepares(&s, &mut backup, &b1);
    outputs.extend(backup.step(T0, msg(2, Message::Prepare(s.prepare(2, 1, d1)))));
    outputs.extend(backup.step(T0, Input::PersistDone(PersistId(1))));
    assert!(outputs
        .iter()
        .any(|o| *o == Output::Broadcast(Message::Commit(s.commit(1, 1, d1)))));
    drop(backup);
    let mut restarted = s.restore(1, durable(&outputs));
    let out = restarted.step(T0, Input::TimerFired(Timer::Retransmit));
    assert_eq!(
        out,
        vec![
            Output::Broadcast(Message::Prepare(s.prepare(1, 1, d1))),
            Output::Broadcast(Message::Commit(s.commit(1, 1, d1))),
            Output::Broadcast(Message::Fetch(pbft_types::Fetch::Batch { seq: SeqNo(1) })),
            retransmit_timer(),
        ]
    );
    let b2 = s.batch(&[2]);
    let d2 = batch_digest(&b2).unwrap();
    let out = restarted.step(T0, msg(0, pp_message(s.pre_prepare(0, 0, 1, &b2), b2)));
    assert_eq!(
        out,
        rejected(
            0,
            Rejection::ConflictingPrePrepare {
                view: View(0),
                seq: SeqNo(1)
            }
        )
    );
    // A full set of prepares and commits for d2: stored, never counted; no
    // commit for d2 leaves, nothing executes.
    for from in [2, 3] {
        let out = restarted.step(
            T0,
            msg(from, Message::Prepare(s.prepare(from as usize, 1, d2))),
        );
        assert_eq!(out, vec![]);
    }
    for from in [0, 2, 3] {
        let out = restarted.step(
            T0,
            msg(from, Message::Commit(s.commit(from as usize, 1, d2))),
        );
        assert_eq!(out, vec![]);
    }
    assert_eq!(restarted.last_executed(), SeqNo(0));
    assert_eq!(restarted.app().value, 0);
}

#[test]
fn a_primary_restarted_after_a_pre_prepare_assigns_the_next_seq() {
    let s = setup(4);
    let mut primary = s.replica(0);
    let r1 = s.request(1);
    let mut outputs = primary.step(
        T0,
        Input::ClientRequest {
            from: CLIENT,
            request: r1.clone(),
        },
    );
    outputs.extend(primary.step(T0, Input::PersistDone(PersistId(0))));
    drop(primary);
    let mut restarted = s.restore(0, durable(&outputs));
    assert!(restarted.is_primary());
    let b1 = Batch {
        requests: vec![r1.clone()],
    };
    let out = restarted.step(T0, Input::TimerFired(Timer::Retransmit));
    assert_eq!(
        out,
        vec![
            Output::Broadcast(pp_message(s.pre_prepare(0, 0, 1, &b1), b1)),
            Output::Broadcast(Message::Fetch(pbft_types::Fetch::Batch { seq: SeqNo(1) })),
            retransmit_timer(),
        ]
    );
    // The request already ordered is not ordered again.
    let out = restarted.step(
        T0,
        Input::ClientRequest {
            from: CLIENT,
            request: r1,
        },
    );
    assert_eq!(
        out,
        vec![Output::Rejected {
            from: Peer::Client(CLIENT),
            reason: Rejection::Duplicate
        }]
    );
    // The next batch gets seq 2, never seq 1 again.
    let r2 = s.request(2);
    let out = restarted.step(
        T0,
        Input::ClientRequest {
            from: CLIENT,
            request: r2.clone(),
        },
    );
    let b2 = Batch { requests: vec![r2] };
    assert_eq!(
        out,
        vec![Output::Persist {
            id: PersistId(0),
            records: vec![PersistRecord::PrePrepare {
                pre_prepare: s.pre_prepare(0, 0, 2, &b2),
                batch: b2
            }],
        }]
    );
}

#[test]
fn a_replica_restarted_after_a_stable_checkpoint_resumes_from_it() {
    let mut c = Cluster::new(4, vec![]);
    // K = 2: seqs 1 and 2 make checkpoint 2 stable; seq 3 executes above it.
    for no in 1..=3 {
        let request = c.setup.request(no);
        c.submit(&request);
    }
    assert!(c.replicas.iter().all(|r| r.last_executed() == SeqNo(3)));
    let outputs: Vec<Output> = c
        .outputs
        .iter()
        .filter(|(i, _)| *i == 1)
        .map(|(_, o)| o.clone())
        .collect();
    let state = durable(&outputs);
    assert_eq!(state.stable.as_ref().unwrap().cert.value.seq, SeqNo(2));
    let mut restarted = c.setup.restore(1, state);
    assert_eq!(restarted.low_watermark(), SeqNo(2));
    assert_eq!(restarted.last_executed(), SeqNo(2));
    assert_eq!(restarted.app().value, 2);
    assert_eq!(
        restarted.cached_reply(CLIENT).unwrap().request_no,
        RequestNo(2)
    );
    // A duplicate of request 2 gets the cached reply, it does not run again.
    let out = restarted.step(
        T0,
        Input::ClientRequest {
            from: CLIENT,
            request: c.setup.request(2),
        },
    );
    assert_eq!(
        out,
        vec![
            Output::Reply {
                client: CLIENT,
                reply: Reply {
                    view: View(0),
                    client: CLIENT,
                    request_no: RequestNo(2),
                    replica: ReplicaId(1),
                    result: 2u64.to_le_bytes().to_vec(),
                },
            },
            // Seq 3 is unfinished here: the retransmission timer runs.
            retransmit_timer(),
        ]
    );
    assert_eq!(restarted.app().value, 2);
    // Seq 3, voted before the restart, completes with the peers' votes.
    let d3 = batch_digest(&c.setup.batch(&[3])).unwrap();
    restarted.step(T0, msg(2, Message::Prepare(c.setup.prepare(2, 3, d3))));
    restarted.step(T0, msg(0, Message::Commit(c.setup.commit(0, 3, d3))));
    let out = restarted.step(T0, msg(2, Message::Commit(c.setup.commit(2, 3, d3))));
    assert!(out.iter().any(|o| matches!(o, Output::Reply { reply, .. }
        if reply.request_no == RequestNo(3) && reply.result == 3u64.to_le_bytes())));
    assert_eq!(restarted.last_executed(), SeqNo(3));
    assert_eq!(restarted.app().value, 3);
}

#[test]
fn a_snapshot_that_does_not_match_its_certificate_is_refused() {
    let mut c = Cluster::new(4, vec![]);
    for no in 1..=2 {
        let request = c.setup.request(no);
        c.submit(&request);
    }
    let outputs: Vec<Output> = c
        .outputs
        .iter()
        .filter(|(i, _)| *i == 1)
        .map(|(_, o)| o.clone())
        .collect();
    let mut state = durable(&outputs);
    let stable = state.stable.as_mut().unwrap();
    let mut snapshot: pbft_core::app::Snapshot =
        pbft_types::from_canonical_bytes(&stable.snapshot, usize::MAX).unwrap();
    snapshot.app = 7u64.to_le_bytes().to_vec();
    stable.snapshot = pbft_types::to_canonical_bytes(&snapshot).unwrap();
    let result = Replica::restore(
        c.setup.config.clone(),
        params(),
        c.setup.signers[1].clone(),
        CounterApp::default(),
        state,
    );
    assert!(matches!(
        result,
        Err(RestoreError::SnapshotDigestMismatch(SeqNo(2)))
    ));
}

#[test]
fn a_durable_prepare_without_its_pre_prepare_still_blocks_a_second_digest() {
    let s = setup(4);
    let b1 = s.batch(&[1]);
    let d1 = batch_digest(&b1).unwrap();
    let mut state = DurableState::default();
    state.apply(&PersistRecord::Prepare(s.prepare(1, 1, d1)));
    let mut restarted = s.restore(1, state);
    let b2 = s.batch(&[2]);
    let out = restarted.step(T0, msg(0, pp_message(s.pre_prepare(0, 0, 1, &b2), b2)));
    let mut expected = rejected(
        0,
        Rejection::ConflictingPrePrepare {
            view: View(0),
            seq: SeqNo(1),
        },
    );
    // Its first step: seq 1 is unfinished, the retransmission timer runs.
    expected.push(retransmit_timer());
    assert_eq!(out, expected);
}

#[test]
fn another_replicas_records_are_refused() {
    let s = setup(4);
    let mut backup = s.replica(1);
    let outputs = backup_prepares(&s, &mut backup, &s.batch(&[1]));
    let result = Replica::restore(
        s.config.clone(),
        params(),
        s.signers[2].clone(),
        CounterApp::default(),
        durable(&outputs),
    );
    assert!(matches!(
        result,
        Err(RestoreError::BadOwnRecord {
            kind: "prepare",
            seq: SeqNo(1)
        })
    ));
}

// ----- view change (PBFT 4.4) -------------------------------------------------

fn view_change_of(
    s: &Setup,
    signer: usize,
    view: u64,
    prepared: Vec<pbft_types::PreparedCert>,
) -> Signed<pbft_types::ViewChange> {
    s.signers[signer]
        .sign(pbft_types::ViewChange {
            new_view: View(view),
            checkpoint: None,
            prepared,
        })
        .unwrap()
}

/// A prepared certificate in view 0 for `seq` and `batch`: the primary's
/// pre-prepare and the prepares of replicas 2 and 3 (2f = 2).
fn prepared_cert(s: &Setup, seq: u64, batch: &Batch) -> pbft_types::PreparedCert {
    let pp = s.pre_prepare(0, 0, seq, batch);
    let d = pp.value.digest;
    pbft_types::PreparedCert {
        pre_prepare: pp,
        prepares: pbft_types::QuorumCert {
            value: Prepare {
                view: View(0),
                seq: SeqNo(seq),
                digest: d,
            },
            signatures: [2, 3]
                .iter()
                .map(|i| (ReplicaId(*i), s.prepare(*i as usize, seq, d).signature))
                .collect(),
        },
    }
}

#[test]
fn a_backup_whose_timer_fires_persists_then_sends_its_view_change() {
    let s = setup(4);
    let mut backup = s.replica(2);
    let out = backup.step(
        T0,
        Input::ClientRequest {
            from: CLIENT,
            request: s.request(1),
        },
    );
    // The retransmission timer runs too: it relays the request to the
    // primary if it waits a whole interval (PBFT 4.1).
    assert_eq!(
        out,
        vec![
            retransmit_timer(),
            Output::SetTimer {
                timer: Timer::ViewChange,
                at: T0.plus_us(10_000)
            }
        ]
    );
    let out = backup.step(Time(11_000), Input::TimerFired(Timer::ViewChange));
    let vc = view_change_of(&s, 2, 1, vec![]);
    // (The retransmission timer armed with the request still runs.)
    assert_eq!(
        out,
        vec![
            Output::Persist {
                id: PersistId(0),
                records: vec![PersistRecord::ViewChange(vc.clone())]
            },
            Output::ViewChangeStarted { view: View(1) },
        ]
    );
    assert!(!backup.is_view_active());
    // While changing views, normal-case messages of the old view are refused.
    let b = s.batch(&[1]);
    assert_eq!(
        backup.step(
            Time(11_000),
            msg(0, pp_message(s.pre_prepare(0, 0, 1, &b), b))
        ),
        rejected(
            0,
            Rejection::WrongView {
                expected: View(1),
                got: View(0)
            }
        )
    );
    // Once durable, the VIEW-CHANGE leaves.
    assert_eq!(
        backup.step(Time(11_000), Input::PersistDone(PersistId(0))),
        vec![Output::Broadcast(Message::ViewChange(vc))]
    );
}

/// A client that signs with a key that is not its own cannot make the
/// backups suspect a correct primary: before a backup changes views (PBFT
/// 4.4) it verifies the requests it waits for and drops the forged ones.
/// An authentic request beside a forged one still starts the view change.
#[test]
fn a_forged_request_alone_never_starts_a_view_change() {
    let s = setup(4);
    let forger = Signer::new(SecretKey::from_seed([77; 32]), s.config.cluster_id, CLIENT);
    let forged = |no: u64| {
        forger
            .sign_request(Request {
                request_no: RequestNo(no),
                read_only: false,
                op: vec![],
            })
            .unwrap()
    };
    let mut backup = s.replica(2);
    let out = backup.step(
        T0,
        Input::ClientRequest {
            from: CLIENT,
            request: forged(1),
        },
    );
    assert_eq!(
        out,
        vec![
            retransmit_timer(),
            Output::SetTimer {
                timer: Timer::ViewChange,
                at: T0.plus_us(10_000)
            }
        ]
    );
    let out = backup.step(Time(11_000), Input::TimerFired(Timer::ViewChange));
    assert_eq!(
        out,
        vec![Output::Rejected {
            from: Peer::Client(CLIENT),
            reason: Rejection::BadRequestSignature {
                client: CLIENT,
                request_no: RequestNo(1),
            },
        }]
    );
    assert!(backup.is_view_active());
    assert_eq!(backup.view(), View(0));
    assert_eq!(backup.pending_len(), 0);
    assert_eq!(backup.stats().request_signatures_verified, 1);

    // A forged request and an authentic one: the forged one is dropped, the
    // authentic one is still late, so the backup moves to view 1.
    for request in [forged(2), s.request(3)] {
        backup.step(
            Time(12_000),
            Input::ClientRequest {
                from: CLIENT,
                request,
            },
        );
    }
    let out = backup.step(Time(23_000), Input::TimerFired(Timer::ViewChange));
    assert_eq!(
        out[0],
        Output::Rejected {
            from: Peer::Client(CLIENT),
            reason: Rejection::BadRequestSignature {
                client: CLIENT,
                request_no: RequestNo(2),
            },
        }
    );
    assert!(
        out.contains(&Output::ViewChangeStarted { view: View(1) }),
        "{out:?}"
    );
    assert!(!backup.is_view_active());
    assert_eq!(backup.pending_len(), 1);
    assert_eq!(backup.stats().request_signatures_verified, 3);
}

/// A replica that missed a view change (here the old primary, restarted)
/// learns the view from a peer: messages of a higher view make it ask the
/// sender for the NEW-VIEW, again once per retransmission interval while
/// they keep coming (a lost request or answer must not strand it), and the
/// NEW-VIEW relayed by a replica that is not the primary is accepted since
/// the primary's signature authenticates it (PBFT 4.4).
#[test]
fn a_replica_behind_a_view_change_fetches_the_new_view_from_any_peer() {
    let s = setup(4);
    let mut old_primary = s.replica(0);
    let view1 = |signer: usize| {
        Message::Prepare(
            s.signers[signer]
                .sign(Prepare {
                    view: View(1),
                    seq: SeqNo(1),
                    digest: Digest([5; 32]),
                })
                .unwrap(),
        )
    };
    let wrong_view = |from: u32| Output::Rejected {
        from: Peer::Replica(ReplicaId(from)),
        reason: Rejection::WrongView {
            expected: View(0),
            got: View(1),
        },
    };
    let ask = |to: u32| Output::Send {
        to: ReplicaId(to),
        message: Message::Fetch(pbft_types::Fetch::NewView),
    };
    assert_eq!(
        old_primary.step(T0, msg(2, view1(2))),
        vec![ask(2), wrong_view(2)]
    );
    // Within the interval: no second request.
    assert_eq!(
        old_primary.step(T0.plus_us(999), msg(3, view1(3))),
        vec![wrong_view(3)]
    );
    // The answer was lost: after the interval it asks again.
    assert_eq!(
        old_primary.step(T0.plus_us(1_000), msg(3, view1(3))),
        vec![ask(3), wrong_view(3)]
    );
    // Replica 3 relays the NEW-VIEW of view 1's primary (replica 1).
    let nv = s.signers[1]
        .sign(pbft_types::NewView {
            view: View(1),
            view_changes: vec![
                view_change_of(&s, 1, 1, vec![]),
                view_change_of(&s, 2, 1, vec![]),
                view_change_of(&s, 3, 1, vec![]),
            ],
            pre_prepares: vec![],
        })
        .unwrap();
    let out = old_primary.step(T0.plus_us(1_000), msg(3, Message::NewView(nv.clone())));
    assert!(
        out.contains(&Output::ViewChanged {
            view: View(1),
            primary: ReplicaId(1)
        }),
        "{out:?}"
    );
    assert_eq!(
        (old_primary.view(), old_primary.is_view_active()),
        (View(1), true)
    );
    // A NEW-VIEW signed by a replica that is not the view's primary is not.
    let mut other = s.replica(2);
    let by_3 = s.signers[3]
        .sign(pbft_types::NewView {
            view: View(1),
            view_changes: nv.value.view_changes.clone(),
            pre_prepares: vec![],
        })
        .unwrap();
    assert_eq!(
        other.step(T0, msg(3, Message::NewView(by_3))),
        vec![Output::Rejected {
            from: Peer::Replica(ReplicaId(3)),
            reason: Rejection::NotPrimary {
                expected: ReplicaId(1),
                got: ReplicaId(3)
            },
        }]
    );
    assert_eq!(other.view(), View(0));
}

/// A backup that moved to view 1 alone (its timer fired while the others
/// stayed in view 0) refuses view-0 messages (PBFT 4.4: it promised not
/// to vote there) but notes how far they go, and its retransmission tick
/// fetches the committed batch, which is final in every view.
#[test]
fn a_replica_alone_in_a_higher_view_fetches_what_the_others_commit() {
    let s = setup(4);
    let mut ahead = s.replica(3);
    ahead.step(
        T0,
        Input::ClientRequest {
            from: CLIENT,
            request: s.request(1),
        },
    );
    ahead.step(Time(11_000), Input::TimerFired(Timer::ViewChange));
    assert_eq!((ahead.view(), ahead.is_view_active()), (View(1), false));
    let b = s.batch(&[1]);
    let d = batch_digest(&b).unwrap();
    assert_eq!(
        ahead.step(Time(11_100), msg(2, Message::Commit(s.commit(2, 1, d)))),
        rejected(
            2,
            Rejection::WrongView {
                expected: View(1),
                got: View(0)
            }
        )
    );
    let out = ahead.step(Time(12_000), Input::TimerFired(Timer::Retransmit));
    assert!(
        out.contains(&Output::Broadcast(Message::Fetch(
            pbft_types::Fetch::Batch { seq: SeqNo(1) }
        ))),
        "{out:?}"
    );
    // The others went on to seq 2. The answer for seq 1 installs it, and the
    // replica asks the same peer for seq 2 at once instead of waiting for
    // the next tick (catching up at the round-trip rate).
    let b2 = s.batch(&[2]);
    let d2 = batch_digest(&b2).unwrap();
    ahead.step(Time(12_100), msg(2, Message::Commit(s.commit(2, 2, d2))));
    let commits = pbft_types::QuorumCert {
        value: Commit {
            view: View(0),
            seq: SeqNo(1),
            digest: d,
        },
        signatures: [0usize, 1, 2]
            .iter()
            .map(|i| (ReplicaId(*i as u32), s.commit(*i, 1, d).signature))
            .collect(),
    };
    let response = Message::FetchResponse(pbft_types::FetchResponse::Batch {
        pre_prepare: s.pre_prepare(0, 0, 1, &b),
        batch: b,
        commits,
    });
    let out = ahead.step(Time(12_200), msg(2, response));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Executed { seq: SeqNo(1), .. })),
        "{out:?}"
    );
    assert!(
        out.contains(&Output::Send {
            to: ReplicaId(2),
            message: Message::Fetch(pbft_types::Fetch::Batch { seq: SeqNo(2) }),
        }),
        "{out:?}"
    );
}

#[test]
fn the_new_primary_re_proposes_the_prepared_batch_and_backups_check_new_view() {
    let s = setup(4);
    let b = s.batch(&[1]);
    let cert = prepared_cert(&s, 1, &b);
    let d = cert.pre_prepare.value.digest;
    let vc2 = view_change_of(&s, 2, 1, vec![cert.clone()]);
    let vc3 = view_change_of(&s, 3, 1, vec![]);
    let mut primary = s.replica(1);
    // One view change for view 1 is not enough to leave view 0 (f + 1 = 2).
    assert_eq!(
        primary.step(T0, msg(2, Message::ViewChange(vc2.clone()))),
        vec![]
    );
    assert!(primary.is_view_active());
    // The second joins view 1 (PBFT 4.5), and with its own that is 2f + 1:
    // the primary of view 1 sends NEW-VIEW re-proposing seq 1 with `d`.
    let out = primary.step(T0, msg(3, Message::ViewChange(vc3.clone())));
    let vc1 = view_change_of(&s, 1, 1, vec![]);
    let pp1 = s.signers[1]
        .sign(PrePrepare {
            view: View(1),
            seq: SeqNo(1),
            digest: d,
        })
        .unwrap();
    let nv = s.signers[1]
        .sign(pbft_types::NewView {
            view: View(1),
            view_changes: vec![vc1.clone(), vc2.clone(), vc3.clone()],
            pre_prepares: vec![pp1.clone()],
        })
        .unwrap();
    assert_eq!(
        out,
        vec![
            Output::Persist {
                id: PersistId(0),
                records: vec![PersistRecord::ViewChange(vc1)]
            },
            Output::ViewChangeStarted { view: View(1) },
            Output::ViewChanged {
                view: View(1),
                primary: ReplicaId(1)
            },
            Output::Persist {
                id: PersistId(1),
                records: vec![PersistRecord::NewView(nv.clone())]
            },
            // It does not hold the batch: it asks for it by digest.
            Output::Broadcast(Message::Fetch(pbft_types::Fetch::PreparedBatch {
                seq: SeqNo(1),
                digest: d
            })),
            retransmit_timer(),
        ]
    );
    assert_eq!(
        primary.step(T0, Input::PersistDone(PersistId(1))),
        vec![Output::Broadcast(Message::NewView(nv.clone()))]
    );

    // A backup that never timed out checks the NEW-VIEW by recomputing it,
    // enters view 1 and prepares the re-proposal once both are durable.
    let mut backup = s.replica(3);
    let out = backup.step(T0, msg(1, Message::NewView(nv.clone())));
    let prepare = s.signers[3]
        .sign(Prepare {
            view: View(1),
            seq: SeqNo(1),
            digest: d,
        })
        .unwrap();
    assert_eq!(
        out,
        vec![
            Output::ViewChanged {
                view: View(1),
                primary: ReplicaId(1)
            },
            Output::Persist {
                id: PersistId(0),
                records: vec![
                    PersistRecord::NewView(nv.clone()),
                    PersistRecord::Prepare(prepare.clone())
                ]
            },
            Output::Broadcast(Message::Fetch(pbft_types::Fetch::PreparedBatch {
                seq: SeqNo(1),
                digest: d
            })),
            retransmit_timer(),
        ]
    );
    assert_eq!(
        backup.step(T0, Input::PersistDone(PersistId(0))),
        vec![Output::Broadcast(Message::Prepare(prepare))]
    );

    // A NEW-VIEW that drops the prepared request (a null request at seq 1
    // instead of `d`) does not match the recomputation: the new primary is
    // faulty and a backup waiting for view 1 moves on to view 2. A replica
    // still working in view 0 refuses it and stays: it proves nothing about
    // view 0's primary.
    let mut other = s.replica(2);
    let mut working = s.replica(3);
    other.step(
        T0,
        Input::ClientRequest {
            from: CLIENT,
            request: s.request(1),
        },
    );
    other.step(Time(11_000), Input::TimerFired(Timer::ViewChange));
    assert_eq!((other.view(), other.is_view_active()), (View(1), false));
    let null = s.signers[1]
        .sign(PrePrepare {
            view: View(1),
            seq: SeqNo(1),
            digest: Digest::ZERO,
        })
        .unwrap();
    let forged = s.signers[1]
        .sign(pbft_types::NewView {
            view: View(1),
            view_changes: nv.value.view_changes.clone(),
            pre_prepares: vec![null],
        })
        .unwrap();
    let invalid = Output::Rejected {
        from: Peer::Replica(ReplicaId(1)),
        reason: Rejection::InvalidViewChange("pre-prepares differ from the recomputed set"),
    };
    let out = working.step(T0, msg(1, Message::NewView(forged.clone())));
    assert_eq!(out, vec![invalid.clone()]);
    assert_eq!((working.view(), working.is_view_active()), (View(0), true));
    let out = other.step(Time(11_000), msg(1, Message::NewView(forged)));
    assert_eq!(out[0], invalid);
    assert!(out.contains(&Output::ViewChangeStarted { view: View(2) }));
    assert_eq!(other.view(), View(2));
}

/// A backup checks the client signatures only of the requests it did not
/// receive from their client itself: a request it holds, identical, came
/// over the client's authenticated channel (PBFT 4.1, TOCS 3.2).
#[test]
fn a_backup_verifies_only_the_requests_it_did_not_receive_from_the_client() {
    let s = setup(4);
    let backup = |i: usize| {
        let p = Params {
            batch_requests_max: 2,
            ..params()
        };
        Replica::new(
            s.config.clone(),
            p,
            s.signers[i].clone(),
            CounterApp::default(),
        )
        .unwrap()
    };
    let from_client = |r: &mut Replica<CounterApp>, no: u64| {
        r.step(
            T0,
            Input::ClientRequest {
                from: CLIENT,
                request: s.request(no),
            },
        );
    };

    // Holds request 1, not request 2: one signature checked.
    let mut b1 = backup(1);
    from_client(&mut b1, 1);
    let batch = s.batch(&[1, 2]);
    let out = b1.step(T0, msg(0, pp_msg(s.pre_prepare(0, 0, 1, &batch), &batch)));
    assert!(matches!(out[0], Output::Persist { .. }), "{out:?}");
    assert_eq!(b1.stats().request_signatures_verified, 1);

    // Holds both: none checked, even where the primary spoiled a signature
    // (the channel authenticated the request, not the signature).
    let mut b2 = backup(2);
    from_client(&mut b2, 1);
    from_client(&mut b2, 2);
    let mut spoiled = s.batch(&[1, 2]);
    spoil(&mut spoiled.requests[0]);
    let out = b2.step(
        T0,
        msg(0, pp_msg(s.pre_prepare(0, 0, 1, &spoiled), &spoiled)),
    );
    assert!(matches!(out[0], Output::Persist { .. }), "{out:?}");
    assert_eq!(b2.stats().request_signatures_verified, 0);

    // A request it does not hold, with a bad signature: rejected.
    let mut b3 = backup(3);
    from_client(&mut b3, 1);
    let mut forged = s.batch(&[1, 2]);
    spoil(&mut forged.requests[1]);
    // (It holds a request, so it also arms its retransmission timer.)
    let out = b3.step(T0, msg(0, pp_msg(s.pre_prepare(0, 0, 1, &forged), &forged)));
    assert_eq!(
        out[..1],
        rejected(
            0,
            Rejection::BadRequestSignature {
                client: CLIENT,
                request_no: RequestNo(2)
            }
        )
    );
    // A held request whose operation the primary altered is checked, and
    // fails.
    let mut altered = s.batch(&[1]);
    altered.requests[0].value.op = b"altered".to_vec();
    let out = b3.step(
        T0,
        msg(0, pp_msg(s.pre_prepare(0, 0, 1, &altered), &altered)),
    );
    assert_eq!(
        out[..1],
        rejected(
            0,
            Rejection::BadRequestSignature {
                client: CLIENT,
                request_no: RequestNo(1)
            }
        )
    );
    assert_eq!(b3.stats().request_signatures_verified, 2);
}

/// A backup that enters view 1 from a NEW-VIEW re-proposing a batch it does
/// not hold prepares and commits it by digest (PBFT 4.4). If its fetch of
/// the batch is lost, the batch must still arrive: the retransmission tick
/// asks for it again, and a committed batch fetched with its proof fills
/// the slot instead of being refused as a duplicate.
#[test]
fn a_batch_committed_by_digest_is_fetched_again_until_it_executes() {
    let s = setup(4);
    let b = s.batch(&[1]);
    let cert = prepared_cert(&s, 1, &b);
    let d = cert.pre_prepare.value.digest;
    let pp1 = s.signers[1]
        .sign(PrePrepare {
            view: View(1),
            seq: SeqNo(1),
            digest: d,
        })
        .unwrap();
    let nv = s.signers[1]
        .sign(pbft_types::NewView {
            view: View(1),
            view_changes: vec![
                view_change_of(&s, 1, 1, vec![]),
                view_change_of(&s, 2, 1, vec![cert]),
                view_change_of(&s, 3, 1, vec![]),
            ],
            pre_prepares: vec![pp1.clone()],
        })
        .unwrap();
    let fetch = Output::Broadcast(Message::Fetch(pbft_types::Fetch::PreparedBatch {
        seq: SeqNo(1),
        digest: d,
    }));
    let mut backup = s.replica(3);
    let out = backup.step(T0, msg(1, Message::NewView(nv)));
    assert!(out.contains(&fetch), "{out:?}");
    // The fetch is lost. The view's votes arrive: prepared, then committed
    // by digest, but nothing executes without the batch.
    backup.step(T0, Input::PersistDone(PersistId(0)));
    let vote = |signer: usize, commit: bool| {
        let key = &s.signers[signer];
        if commit {
            Message::Commit(
                key.sign(Commit {
                    view: View(1),
                    seq: SeqNo(1),
                    digest: d,
                })
                .unwrap(),
            )
        } else {
            Message::Prepare(
                key.sign(Prepare {
                    view: View(1),
                    seq: SeqNo(1),
                    digest: d,
                })
                .unwrap(),
            )
        }
    };
    backup.step(T0, msg(2, vote(2, false)));
    backup.step(T0, Input::PersistDone(PersistId(1)));
    backup.step(T0, msg(1, vote(1, true)));
    let out = backup.step(T0, msg(2, vote(2, true)));
    assert!(
        !out.iter().any(|o| matches!(o, Output::Executed { .. })),
        "{out:?}"
    );
    assert_eq!(backup.last_executed(), SeqNo(0));
    // The retransmission tick asks for the batch by digest again.
    let out = backup.step(T0.plus_us(2_000), Input::TimerFired(Timer::Retransmit));
    assert!(out.contains(&fetch), "{out:?}");
    // A committed batch with its proof (what `Fetch::Batch` returns) fills
    // the slot: its digest matches the one committed here.
    let commits = pbft_types::QuorumCert {
        value: Commit {
            view: View(1),
            seq: SeqNo(1),
            digest: d,
        },
        signatures: [1usize, 2, 3]
            .iter()
            .map(|i| {
                let Message::Commit(c) = vote(*i, true) else {
                    unreachable!()
                };
                (ReplicaId(*i as u32), c.signature)
            })
            .collect(),
    };
    let response = Message::FetchResponse(pbft_types::FetchResponse::Batch {
        pre_prepare: pp1,
        batch: b,
        commits,
    });
    let out = backup.step(T0.plus_us(2_000), msg(2, response));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Executed { seq: SeqNo(1), digest, .. } if *digest == d)),
        "{out:?}"
    );
    assert_eq!(backup.last_executed(), SeqNo(1));
}

fn macs_params() -> Params {
    Params {
        request_auth: RequestAuth::Macs,
        ..params()
    }
}

impl Setup {
    fn mac_request(&self, no: u64) -> ClientRequest {
        let keyring = pbft_crypto::Keyring::new(&self.config).unwrap();
        pbft_crypto::RequestAuthenticator::new(self.client.clone(), &keyring)
            .unwrap()
            .mac(Request {
                request_no: RequestNo(no),
                read_only: false,
                op: vec![],
            })
            .unwrap()
    }
    fn replica_with(&self, i: usize, params: Params) -> Replica<CounterApp> {
        Replica::new(
            self.config.clone(),
            params,
            self.signers[i].clone(),
            CounterApp::default(),
        )
        .unwrap()
    }
}

/// TOCS 3.2: a replica checks its own MAC entry as the request arrives;
/// a cluster that chose signatures refuses MACs outright.
#[test]
fn request_macs_are_checked_on_arrival_and_refused_where_not_accepted() {
    let s = setup(4);
    let arrive = |r: &mut Replica<CounterApp>, request: ClientRequest| {
        without_timers(r.step(
            T0,
            Input::ClientRequest {
                from: CLIENT,
                request,
            },
        ))
    };
    let from_client = |reason| {
        vec![Output::Rejected {
            from: Peer::Client(CLIENT),
            reason,
        }]
    };
    let mut signatures_only = s.replica(1);
    assert_eq!(
        arrive(&mut signatures_only, s.mac_request(1)),
        from_client(Rejection::AuthenticatorNotAccepted {
            client: CLIENT,
            request_no: RequestNo(1),
            kind: "MACs"
        })
    );
    let mut backup = s.replica_with(1, macs_params());
    assert_eq!(arrive(&mut backup, s.mac_request(1)), vec![]);
    assert_eq!(backup.pending_len(), 1);
    let mut spoiled = s.mac_request(2);
    spoil_entry(&mut spoiled, 1);
    assert_eq!(
        arrive(&mut backup, spoiled),
        from_client(Rejection::BadRequestMac {
            client: CLIENT,
            request_no: RequestNo(2)
        })
    );
    assert_eq!(backup.pending_len(), 1);
    // A signed request is still accepted in a MAC cluster (checked later,
    // in a batch, as with signatures).
    assert_eq!(arrive(&mut backup, s.request(3)), vec![]);
    assert_eq!(backup.pending_len(), 2);
    assert_eq!(backup.stats().request_macs_verified, 2);
}

fn spoil_entry(request: &mut ClientRequest, replica: usize) {
    let Authenticator::Macs(macs) = &mut request.auth else {
        panic!("not MACs")
    };
    macs[replica].0[0] ^= 1;
}

/// A backup whose MAC entry of a batched request is bad cannot tell a
/// lying primary from a lying client: it parks the pre-prepare, and accepts
/// it once f + 1 other backups prepared it (one of them is correct and
/// checked its own entry). One prepare (possibly a Byzantine one) is not
/// enough.
#[test]
fn a_backup_accepts_a_batch_it_cannot_authenticate_once_f_plus_one_backups_vouch() {
    let s = setup(4);
    let mut backup = s.replica_with(3, macs_params());
    let mut request = s.mac_request(1);
    spoil_entry(&mut request, 3);
    let batch = Batch {
        requests: vec![request],
    };
    let pp = s.pre_prepare(0, 0, 1, &batch);
    let d = pp.value.digest;
    let parked = backup.step(T0, msg(0, pp_msg(pp.clone(), &batch)));
    assert_eq!(without_timers(parked), vec![]);
    let one = backup.step(T0, msg(1, Message::Prepare(s.prepare(1, 1, d))));
    assert_eq!(without_timers(one), vec![]);
    assert_eq!(backup.log_len(), 1, "only the prepare's slot");
    let out = backup.step(T0, msg(2, Message::Prepare(s.prepare(2, 1, d))));
    let own = s.signers[3]
        .sign(Prepare {
            view: View(0),
            seq: SeqNo(1),
            digest: d,
        })
        .unwrap();
    assert_eq!(
        out.first(),
        Some(&Output::Persist {
            id: PersistId(0),
            records: vec![
                PersistRecord::PrePrepare {
                    pre_prepare: pp,
                    batch
                },
                PersistRecord::Prepare(own),
            ],
        }),
        "{out:?}"
    );
    assert_eq!(backup.stats().pre_prepares_vouched, 1);

    // The prepares may come first: the pre-prepare is then accepted at once.
    let mut late = s.replica_with(3, macs_params());
    let mut request = s.mac_request(1);
    spoil_entry(&mut request, 3);
    let batch = Batch {
        requests: vec![request],
    };
    let pp = s.pre_prepare(0, 0, 1, &batch);
    let d = pp.value.digest;
    late.step(T0, msg(1, Message::Prepare(s.prepare(1, 1, d))));
    late.step(T0, msg(2, Message::Prepare(s.prepare(2, 1, d))));
    let out = late.step(T0, msg(0, pp_msg(pp, &batch)));
    assert!(
        matches!(out.first(), Some(Output::Persist { .. })),
        "{out:?}"
    );

    // The client retransmits the same request to the backup itself, with a
    // good entry: the backup now holds that content from its client, and
    // the parked pre-prepare needs no vouchers.
    let mut healed = s.replica_with(3, macs_params());
    let good = s.mac_request(1);
    let mut bad = good.clone();
    spoil_entry(&mut bad, 3);
    let batch = Batch {
        requests: vec![bad],
    };
    let pp = s.pre_prepare(0, 0, 1, &batch);
    healed.step(T0, msg(0, pp_msg(pp, &batch)));
    assert_eq!(healed.log_len(), 0);
    let out = healed.step(
        T0,
        Input::ClientRequest {
            from: CLIENT,
            request: good,
        },
    );
    assert!(
        matches!(out.first(), Some(Output::Persist { .. })),
        "{out:?}"
    );
    assert_eq!(healed.log_len(), 1);
}

fn without_timers(out: Vec<Output>) -> Vec<Output> {
    out.into_iter()
        .filter(|o| !matches!(o, Output::SetTimer { .. } | Output::CancelTimer(_)))
        .collect()
}

/// PROTOCOL 18: commits count on the authenticated channel's word (their
/// sender is the connection's), so a replica does not check their
/// signatures as they arrive. They are checked when they leave as proof:
/// a committed batch served to a peer carries only commits that verify,
/// and a Byzantine replica's spoiled one is left out.
#[test]
fn commits_count_on_the_channel_and_are_checked_when_they_leave_as_proof() {
    let s = setup(4);
    let mut backup = s.replica(1);
    let d = accept(&s, &mut backup, 1, &[1]);
    backup.step(T0, msg(2, Message::Prepare(s.prepare(2, 1, d))));
    backup.step(T0, Input::PersistDone(PersistId(1)));
    let mut spoiled = s.commit(3, 1, d);
    spoiled.signature.0[7] ^= 1;
    assert_eq!(backup.step(T0, msg(3, Message::Commit(spoiled))), vec![]);
    backup.step(T0, msg(0, Message::Commit(s.commit(0, 1, d))));
    assert_eq!(backup.last_executed(), SeqNo(1));
    assert_eq!(
        backup.stats().signatures_verified,
        2,
        "pre-prepare and one prepare"
    );

    // A fetch of the batch: own, 0's and (spoiled) 3's commits are held;
    // 3's is dropped and the other two are not a quorum, so nothing is
    // served until 2's commit arrives.
    let fetch = msg(
        2,
        Message::Fetch(pbft_types::Fetch::Batch { seq: SeqNo(1) }),
    );
    let out = backup.step(T0, fetch.clone());
    assert!(
        !out.iter().any(|o| matches!(o, Output::Send { .. })),
        "{out:?}"
    );
    backup.step(T0, msg(2, Message::Commit(s.commit(2, 1, d))));
    let out = backup.step(T0, fetch);
    let served: Vec<ReplicaId> = out
        .iter()
        .find_map(|o| match o {
            Output::Send {
                message: Message::FetchResponse(pbft_types::FetchResponse::Batch { commits, .. }),
                ..
            } => Some(commits.signatures.iter().map(|(id, _)| *id).collect()),
            _ => None,
        })
        .expect("a committed batch with its proof");
    assert_eq!(served, [ReplicaId(0), ReplicaId(1), ReplicaId(2)]);
}

fn client_request(request: ClientRequest) -> Input {
    Input::ClientRequest {
        from: CLIENT,
        request,
    }
}

fn set_timer(timer: Timer, at: Time) -> Output {
    Output::SetTimer { timer, at }
}

/// PBFT 4.1: a backup relays to the primary a request it has held for a
/// whole retransmission interval, once per view; a client's retransmission
/// of it is relayed again at once. The primary checks the client's
/// authenticator and orders the request as if the client had sent it.
#[test]
fn a_backup_relays_a_request_it_waited_on_for_a_whole_interval() {
    let s = setup(4);
    let request = s.request(1);
    let mut backup = s.replica(1);
    assert_eq!(
        backup.step(T0, client_request(request.clone())),
        vec![
            retransmit_timer(),
            set_timer(Timer::ViewChange, T0.plus_us(10_000)),
        ]
    );
    // The first tick marks what arrived so far; nothing has waited a whole
    // interval yet.
    let t1 = T0.plus_us(1_000);
    assert_eq!(
        backup.step(t1, Input::TimerFired(Timer::Retransmit)),
        vec![set_timer(Timer::Retransmit, t1.plus_us(1_000))]
    );
    let t2 = t1.plus_us(1_000);
    let relay = Output::Send {
        to: ReplicaId(0),
        message: Message::Request(request.clone()),
    };
    assert_eq!(
        backup.step(t2, Input::TimerFired(Timer::Retransmit)),
        vec![
            relay.clone(),
            set_timer(Timer::Retransmit, t2.plus_us(1_000))
        ]
    );
    // Once per view.
    let t3 = t2.plus_us(1_000);
    assert_eq!(
        backup.step(t3, Input::TimerFired(Timer::Retransmit)),
        vec![set_timer(Timer::Retransmit, t3.plus_us(1_000))]
    );
    // The client retransmits: relayed again at once.
    assert_eq!(
        backup.step(t3, client_request(request.clone())),
        vec![relay]
    );
    assert_eq!(backup.stats().requests_relayed, 2);

    // The primary proposes it exactly as it proposes a client's own request
    // (whose outputs `primary_persists_the_pre_prepare_before_broadcasting_it`
    // spells out).
    let mut primary = s.replica(0);
    let out = primary.step(T0, msg(1, Message::Request(request.clone())));
    let mut direct = s.replica(0);
    let from_client = direct.step(T0, client_request(request.clone()));
    assert!(matches!(out[0], Output::Persist { .. }), "{out:?}");
    assert_eq!(out, from_client);
    // Checked once, as it arrived (a forged copy must not hold its place),
    // and not again with its batch.
    assert_eq!(primary.stats().request_signatures_verified, 1);
    assert_eq!(direct.stats().request_signatures_verified, 1);
    // A second copy, from another backup, is a duplicate.
    assert_eq!(
        without_timers(primary.step(T0, msg(2, Message::Request(request)))),
        rejected(2, Rejection::Duplicate)
    );
}

/// What a primary refuses from a relaying replica: a forged signature (the
/// relaying backup is named, and the request holds no place), a relay to
/// a backup, a relay during a view change, a relay under channel
/// authentication, and a request that already executed (the backup answers
/// its client itself).
#[test]
fn relayed_requests_are_refused_with_a_reason() {
    let s = setup(4);
    let mut primary = s.replica(0);
    let mut forged = s.request(1);
    spoil(&mut forged);
    assert_eq!(
        without_timers(primary.step(T0, msg(3, Message::Request(forged)))),
        rejected(
            3,
            Rejection::BadRequestSignature {
                client: CLIENT,
                request_no: RequestNo(1)
            }
        )
    );
    assert_eq!(primary.pending_len(), 0);
    // The authentic request still gets its place.
    let out = primary.step(T0, msg(1, Message::Request(s.request(1))));
    assert!(matches!(out[0], Output::Persist { .. }), "{out:?}");

    let mut backup = s.replica(2);
    assert_eq!(
        backup.step(T0, msg(1, Message::Request(s.request(1)))),
        rejected(
            1,
            Rejection::RelayedToBackup {
                primary: ReplicaId(0)
            }
        )
    );
    assert_eq!(backup.pending_len(), 0);

    let channel = Params {
        request_auth: RequestAuth::Channel,
        ..params()
    };
    let mut primary = s.replica_with(0, channel.clone());
    assert_eq!(
        primary.step(T0, msg(1, Message::Request(s.request(1)))),
        rejected(1, Rejection::Unsupported("relayed request"))
    );
    // A backup under channel authentication never relays (its retransmit
    // timer is not even armed for the request).
    let mut backup = s.replica_with(1, channel);
    assert_eq!(
        backup.step(T0, client_request(s.request(1))),
        vec![set_timer(Timer::ViewChange, T0.plus_us(10_000))]
    );

    let mut c = Cluster::new(4, vec![]);
    let request = c.setup.request(1);
    c.submit(&request);
    assert_eq!(
        without_timers(c.replicas[0].step(T0, msg(1, Message::Request(request)))),
        rejected(1, Rejection::Duplicate)
    );
}

/// A replica that started a view change neither relays nor accepts relays
/// (the primary it would relay to is the one it suspects).
#[test]
fn relays_stop_during_a_view_change() {
    let s = setup(4);
    let mut backup = s.replica(2);
    backup.step(T0, client_request(s.request(1)));
    let out = backup.step(Time(11_000), Input::TimerFired(Timer::ViewChange));
    assert!(
        out.contains(&Output::ViewChangeStarted { view: View(1) }),
        "{out:?}"
    );
    assert_eq!(
        backup.step(Time(11_000), msg(3, Message::Request(s.request(2)))),
        rejected(3, Rejection::ViewChangeInProgress { view: View(1) })
    );
    for t in [12_000, 13_000] {
        let out = backup.step(Time(t), Input::TimerFired(Timer::Retransmit));
        assert!(
            !out.iter().any(|o| matches!(
                o,
                Output::Send {
                    message: Message::Request(_),
                    ..
                }
            )),
            "{out:?}"
        );
    }
    assert_eq!(backup.stats().requests_relayed, 0);
}

/// A Byzantine backup cannot make the primary take relayed requests at any
/// rate (each may cost a signature check): past
/// `RELAYED_REQUESTS_RECEIVED_PER_INTERVAL_MAX` in one retransmission
/// interval they are refused unread; another replica's budget is its own,
/// and the next interval starts afresh.
#[test]
fn relays_from_one_replica_are_bounded_per_interval() {
    let s = setup(4);
    let mut primary = s.replica(0);
    let request = s.request(1);
    let out = primary.step(T0, msg(1, Message::Request(request.clone())));
    assert!(matches!(out[0], Output::Persist { .. }), "{out:?}");
    for _ in 1..RELAYED_REQUESTS_RECEIVED_PER_INTERVAL_MAX {
        assert_eq!(
            without_timers(primary.step(T0, msg(1, Message::Request(request.clone())))),
            rejected(1, Rejection::Duplicate)
        );
    }
    assert_eq!(
        primary.step(T0, msg(1, Message::Request(request.clone()))),
        rejected(1, Rejection::Full("relayed_requests"))
    );
    assert_eq!(
        without_timers(primary.step(T0, msg(2, Message::Request(request.clone())))),
        rejected(2, Rejection::Duplicate)
    );
    // params(): a 1 ms retransmission interval.
    assert_eq!(
        without_timers(primary.step(T0.plus_us(1_000), msg(1, Message::Request(request)))),
        rejected(1, Rejection::Duplicate)
    );
}

fn is_commit_persist(o: &Output) -> bool {
    matches!(o, Output::Persist { records, .. } if matches!(records.first(), Some(PersistRecord::Commit(_))))
}

/// PROTOCOL 19: prepares count on the authenticated channel's word and only
/// those a prepared certificate needs have their signatures checked. With
/// its own prepare durable, a backup (n = 4) checks one other prepare; the
/// third backup's, arriving after, is never checked.
#[test]
fn prepares_beyond_the_quorum_are_never_checked() {
    let s = setup(4);
    let mut backup = s.replica(1);
    let d = accept(&s, &mut backup, 1, &[1]);
    assert_eq!(backup.stats().signatures_verified, 1, "the pre-prepare");
    let out = backup.step(T0, msg(2, Message::Prepare(s.prepare(2, 1, d))));
    assert!(out.iter().any(is_commit_persist), "{out:?}");
    assert_eq!(backup.stats().signatures_verified, 2);
    assert_eq!(
        backup.step(T0, msg(3, Message::Prepare(s.prepare(3, 1, d)))),
        vec![]
    );
    assert_eq!(backup.stats().signatures_verified, 2, "3's is not checked");
    let cert = backup.prepared_certificate(SeqNo(1)).unwrap();
    let signers: Vec<ReplicaId> = cert.prepares.signatures.iter().map(|(r, _)| *r).collect();
    assert_eq!(signers, vec![ReplicaId(1), ReplicaId(2)]);
    // A vote that was checked is still one vote: the same again is a
    // duplicate, another digest a conflicting vote.
    assert_eq!(
        backup.step(T0, msg(2, Message::Prepare(s.prepare(2, 1, d)))),
        rejected(2, Rejection::Duplicate)
    );
    assert_eq!(
        backup.step(
            T0,
            msg(2, Message::Prepare(s.prepare(2, 1, Digest([0xee; 32]))))
        ),
        rejected(
            2,
            Rejection::ConflictingVote {
                replica: ReplicaId(2),
                seq: SeqNo(1)
            }
        )
    );
}

/// The other backups' prepares may arrive while the backup's own is still
/// on its way to disk: the check waits for the own prepare, which counts
/// without one, so again only one other prepare is checked. A spoiled
/// prepare counts on the channel's word until the certificate needs it;
/// then it is refused with a typed reason and the next one is checked in
/// its place, so the certificate holds only signatures that verify.
#[test]
fn a_spoiled_prepare_is_refused_when_the_certificate_needs_it() {
    let s = setup(4);
    let mut backup = s.replica(1);
    let batch = s.batch(&[1]);
    let pp = s.pre_prepare(0, 0, 1, &batch);
    let d = pp.value.digest;
    backup.step(T0, msg(0, pp_msg(pp, &batch)));
    let mut spoiled = s.prepare(2, 1, d);
    spoiled.signature.0[3] ^= 1;
    assert_eq!(backup.step(T0, msg(2, Message::Prepare(spoiled))), vec![]);
    assert_eq!(
        backup.step(T0, msg(3, Message::Prepare(s.prepare(3, 1, d)))),
        vec![]
    );
    assert_eq!(
        backup.stats().signatures_verified,
        1,
        "nothing checked while the own prepare is not durable"
    );
    let out = backup.step(T0, Input::PersistDone(PersistId(0)));
    assert_eq!(
        out[..2],
        [
            Output::Broadcast(Message::Prepare(s.prepare(1, 1, d))),
            Output::Rejected {
                from: Peer::Replica(ReplicaId(2)),
                reason: Rejection::BadSignature
            },
        ],
        "{out:?}"
    );
    assert!(is_commit_persist(&out[2]), "{out:?}");
    assert_eq!(
        backup.stats().signatures_verified,
        3,
        "pre-prepare, 2's (bad) and 3's"
    );
    let cert = backup.prepared_certificate(SeqNo(1)).unwrap();
    let signers: Vec<ReplicaId> = cert.prepares.signatures.iter().map(|(r, _)| *r).collect();
    assert_eq!(signers, vec![ReplicaId(1), ReplicaId(3)]);

    // Own prepare durable and one spoiled prepare: refused at once, and the
    // slot waits for a good one.
    let d2 = accept(&s, &mut backup, 2, &[2]);
    let mut spoiled = s.prepare(3, 2, d2);
    spoiled.signature.0[3] ^= 1;
    assert_eq!(
        backup.step(T0, msg(3, Message::Prepare(spoiled))),
        rejected(3, Rejection::BadSignature)
    );
    assert!(backup.prepared_certificate(SeqNo(2)).is_none());
    let out = backup.step(T0, msg(2, Message::Prepare(s.prepare(2, 2, d2))));
    assert!(out.iter().any(is_commit_persist), "{out:?}");
}

/// What one batch costs the cluster in ed25519 work (n = 4): the primary
/// signs the pre-prepare, the backups their prepares, everyone a commit
/// (8 signatures); the backups check the pre-prepare and one other
/// prepare each, the primary two prepares (8 checks). Checking every
/// prepare as it arrived cost 12.
#[test]
fn a_batch_costs_the_cluster_eight_signatures_and_eight_checks() {
    let mut c = Cluster::new(4, vec![]);
    let request = c.setup.request(1);
    c.submit(&request);
    for r in &c.replicas {
        assert_eq!(r.last_executed(), SeqNo(1));
    }
    let made: u64 = c.replicas.iter().map(|r| r.stats().signatures_made).sum();
    let checked: Vec<u64> = c
        .replicas
        .iter()
        .map(|r| r.stats().signatures_verified)
        .collect();
    assert_eq!(made, 8);
    assert_eq!(checked, vec![2, 2, 2, 2]);
}
