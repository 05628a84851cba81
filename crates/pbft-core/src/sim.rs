//! A deterministic simulator: `n` replicas and several clients in one
//! thread, a network that delays, drops, duplicates and reorders, crashed
//! replicas, simulated time, and checkers of the protocol's invariants.
//!
//! Everything random comes from one ChaCha seed, so a run is reproduced
//! from [`SimConfig::seed`]. Replicas sign and verify with real ed25519.
//!
//! Byzantine behaviour (FAULTS.md 1 to 11) plugs in through
//! [`crate::byzantine::Strategy`] ([`Sim::set_adversary`]): it sees every
//! input and output of the replica it controls and may drop, rewrite,
//! re-sign, split per destination, delay or multiply them. Replicas with an
//! adversary are excluded from the checkers. The simulator also runs twins
//! (two instances of one identity, [`Sim::add_twin`]), amnesia (a restart
//! from an older durable state, [`Sim::amnesia`]) and network partitions
//! that heal ([`Partition`], FAULTS.md 12).

use std::collections::{BTreeMap, BTreeSet};

use pbft_crypto::{Keyring, RequestAuthenticator, SecretKey, Signer};
use pbft_types::{
    Authenticator, ClientEntry, ClientId, ClientRequest, ClusterConfig, ClusterId, Digest, Message,
    ReplicaEntry, ReplicaId, Reply, Request, RequestNo, SeqNo, Signature,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::app::KvOp;
use crate::byzantine::{Action, Context, Strategy};
use crate::io::{Input, Output, PersistId, PersistRecord, Time, Timer};
use crate::{DurableState, KvApp, Params, Replica, RequestAuth};

/// The network's behaviour. Probabilities are in parts per million.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Smallest one-way delay.
    pub delay_us_min: u64,
    /// Largest one-way delay; messages are reordered within the range.
    pub delay_us_max: u64,
    /// Probability that a message is lost.
    pub drop_ppm: u32,
    /// Probability that a message is delivered twice.
    pub duplicate_ppm: u32,
    /// From this time on the network neither drops nor duplicates (a fair
    /// network eventually); `None` keeps it lossy for the whole run.
    pub heal_at_us: Option<u64>,
}

impl NetworkConfig {
    /// A perfect network with no delay.
    #[must_use]
    pub fn instant() -> Self {
        Self {
            delay_us_min: 0,
            delay_us_max: 0,
            drop_ppm: 0,
            duplicate_ppm: 0,
            heal_at_us: None,
        }
    }
}

/// A simulation's setup.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// Number of replicas.
    pub replicas: usize,
    /// Number of clients; each keeps one request outstanding.
    pub clients: usize,
    /// Requests each client submits.
    pub requests_per_client: usize,
    /// Size of each request's value (a put of this many bytes).
    pub value_bytes: usize,
    /// The protocol parameters of every replica.
    pub params: Params,
    /// The network.
    pub network: NetworkConfig,
    /// Largest delay before a persist is acknowledged.
    pub persist_delay_us_max: u64,
    /// Replicas that crash, and when (they stop, unless restarted).
    pub crashes: Vec<(ReplicaId, Time)>,
    /// Crashed replicas that restart, and when: a new replica is built with
    /// [`Replica::restore`] from exactly the records acknowledged durable
    /// before the crash (the others are lost, as in a power loss).
    pub restarts: Vec<(ReplicaId, Time)>,
    /// A client resends its request to every replica after this long.
    pub client_retry_us: u64,
    /// The run stops at this simulated time.
    pub time_limit_us: u64,
    /// Events processed at most (a guard against livelock).
    pub events_max: u64,
    /// Whether clients sign requests (needed with
    /// [`RequestAuth::ClientSignatures`]).
    pub sign_requests: bool,
    /// Whether clients authenticate requests with MACs instead (TOCS 3.2;
    /// needs [`RequestAuth::Macs`]); takes precedence over `sign_requests`.
    pub mac_requests: bool,
    /// A Byzantine client's trick with MACs: every client spoils the MAC
    /// entry of this replica, which must then accept batches on the
    /// prepares of `f + 1` other backups.
    pub spoiled_mac_replica: Option<ReplicaId>,
    /// Network partitions between replicas (FAULTS.md 12), each active for
    /// a time span.
    pub partitions: Vec<Partition>,
    /// Replicas no client request reaches (lost on the way, for the whole
    /// run); their replies still reach the clients. With the primary here,
    /// requests reach it only as backups relay them (PBFT 4.1).
    pub clients_cut_from: BTreeSet<ReplicaId>,
}

/// Links between replicas cut from `start_us` until `heal_us` (FAULTS.md
/// 12). A message sent over a cut link in that span is lost; clients reach
/// every replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// When the links are cut.
    pub start_us: u64,
    /// When they heal.
    pub heal_us: u64,
    /// Directed links `(from, to)` that are cut.
    pub blocked: BTreeSet<(ReplicaId, ReplicaId)>,
}

impl Partition {
    /// Cuts every link from a replica of `from` to a replica of `to` (one
    /// way).
    #[must_use]
    pub fn one_way(from: &[ReplicaId], to: &[ReplicaId], start_us: u64, heal_us: u64) -> Self {
        let blocked = from
            .iter()
            .flat_map(|a| to.iter().filter(move |b| *b != a).map(move |b| (*a, *b)))
            .collect();
        Self {
            start_us,
            heal_us,
            blocked,
        }
    }

    /// Cuts both ways between the sides `a` and `b` (a minority/majority
    /// split).
    #[must_use]
    pub fn split(a: &[ReplicaId], b: &[ReplicaId], start_us: u64, heal_us: u64) -> Self {
        let mut p = Self::one_way(a, b, start_us, heal_us);
        p.blocked
            .extend(Self::one_way(b, a, start_us, heal_us).blocked);
        p
    }

    /// Isolates `id` from the other replicas of a cluster of `n`.
    #[must_use]
    pub fn isolate(id: ReplicaId, n: usize, start_us: u64, heal_us: u64) -> Self {
        let others: Vec<ReplicaId> = (0..n)
            .map(|i| ReplicaId(u32::try_from(i).unwrap_or(u32::MAX)))
            .filter(|r| *r != id)
            .collect();
        Self::split(&[id], &others, start_us, heal_us)
    }

    /// Whether the link `from -> to` is cut at `now`.
    #[must_use]
    pub fn blocks(&self, now: Time, from: ReplicaId, to: ReplicaId) -> bool {
        now.0 >= self.start_us && now.0 < self.heal_us && self.blocked.contains(&(from, to))
    }
}

impl SimConfig {
    /// A fair, instant network with `replicas` replicas and default
    /// parameters.
    #[must_use]
    pub fn new(seed: u64, replicas: usize) -> Self {
        Self {
            seed,
            replicas,
            clients: 2,
            requests_per_client: 4,
            value_bytes: 16,
            params: Params::default(),
            network: NetworkConfig::instant(),
            persist_delay_us_max: 0,
            crashes: Vec::new(),
            restarts: Vec::new(),
            client_retry_us: 500_000,
            time_limit_us: 60_000_000,
            events_max: 50_000_000,
            sign_requests: true,
            mac_requests: false,
            spoiled_mac_replica: None,
            partitions: Vec::new(),
            clients_cut_from: BTreeSet::new(),
        }
    }

    /// The mix the seed tests run: for each seed a random combination of
    /// drops, duplicates, reordering, one crashed backup, 4 or 7 replicas,
    /// small windows and batches, and either request authentication mode.
    #[must_use]
    pub fn random(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c0de);
        let replicas = if rng.gen_ratio(1, 5) { 7 } else { 4 };
        let checkpoint_interval_seqs = rng.gen_range(2..=4);
        let channel = rng.gen_ratio(1, 4);
        let params = Params {
            log_window_seqs: checkpoint_interval_seqs * rng.gen_range(2..=3),
            checkpoint_interval_seqs,
            pipeline_batches_max: rng.gen_range(1..=4),
            batch_requests_max: rng.gen_range(1..=4),
            batch_delay_us_max: rng.gen_range(0..=2_000),
            // Drawn last (below).
            propose_when_idle: true,
            pending_requests_max: 64,
            client_pending_requests_max: 4,
            request_op_bytes_max: 1024,
            future_messages_max: 256,
            parked_pre_prepares_max: 8,
            retransmit_interval_us: 30_000,
            view_change_timeout_us: 1_000_000,
            view_change_backoff_max: 6,
            snapshot_bytes_max: 1 << 20,
            request_auth: if channel {
                RequestAuth::Channel
            } else {
                RequestAuth::ClientSignatures
            },
        };
        let delay_us_max = rng.gen_range(100..=10_000);
        let lossy = rng.gen_ratio(3, 4);
        let network = NetworkConfig {
            delay_us_min: rng.gen_range(0..=delay_us_max / 4),
            delay_us_max,
            drop_ppm: if lossy { rng.gen_range(0..=100_000) } else { 0 },
            duplicate_ppm: if lossy { rng.gen_range(0..=100_000) } else { 0 },
            heal_at_us: rng.gen_ratio(1, 2).then(|| rng.gen_range(0..=500_000)),
        };
        let mut crashes = if rng.gen_ratio(1, 2) {
            // Only a backup stops for good: replacing a crashed primary is
            // view change (issue 4).
            let who = ReplicaId(rng.gen_range(1..u32::try_from(replicas).unwrap_or(4)));
            vec![(who, Time(rng.gen_range(0..=200_000)))]
        } else {
            Vec::new()
        };
        let clients = rng.gen_range(1..=3);
        let requests_per_client = rng.gen_range(2..=5);
        let persist_delay_us_max = rng.gen_range(0..=1_000);
        // Crash-restart (drawn last, so the rest of each seed's mix is
        // unchanged): half of the crashed backups come back after a while;
        // among the other seeds, one in six crashes the primary and restarts
        // it (without view change it must come back for liveness).
        let mut restarts = Vec::new();
        if let Some(&(who, at)) = crashes.first() {
            if rng.gen_ratio(1, 2) {
                restarts.push((who, at.plus_us(rng.gen_range(0..=100_000))));
            }
        } else if rng.gen_ratio(1, 6) {
            let at = Time(rng.gen_range(0..=100_000));
            crashes.push((ReplicaId(0), at));
            restarts.push((ReplicaId(0), at.plus_us(rng.gen_range(0..=100_000))));
        }
        let mut params = params;
        params.propose_when_idle = rng.gen_bool(0.5);
        // Drawn last as well: half of the signing seeds use MACs.
        let macs = !channel && rng.gen_bool(0.5);
        if macs {
            params.request_auth = RequestAuth::Macs;
        }
        // And last: one in six authenticated seeds has the clients cut from
        // one replica, the primary of view 0 included (PBFT 4.1: backups
        // relay). Under channel authentication a backup cut from clients
        // could not accept any batch, which with a crashed backup is more
        // than `f` faults.
        let clients_cut_from = if !channel && rng.gen_ratio(1, 6) {
            let n = u32::try_from(replicas).unwrap_or(4);
            BTreeSet::from([ReplicaId(rng.gen_range(0..n))])
        } else {
            BTreeSet::new()
        };
        Self {
            seed,
            replicas,
            clients,
            requests_per_client,
            value_bytes: 8,
            params,
            network,
            persist_delay_us_max,
            crashes,
            restarts,
            client_retry_us: 200_000,
            time_limit_us: 120_000_000,
            events_max: 2_000_000,
            sign_requests: !channel,
            mac_requests: macs,
            spoiled_mac_replica: None,
            partitions: Vec::new(),
            clients_cut_from,
        }
    }
}

/// What controls a Byzantine replica in the simulator: a
/// [`crate::byzantine::Strategy`].
pub use crate::byzantine::Strategy as Adversary;

/// An invariant the checkers found broken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// Two correct replicas executed different batches at one sequence number.
    #[error("seq {seq}: replica {a} executed {da:?}, replica {b} executed {db:?}")]
    DivergentExecution {
        /// The sequence number.
        seq: SeqNo,
        /// One replica.
        a: ReplicaId,
        /// Its digest.
        da: Digest,
        /// Another.
        b: ReplicaId,
        /// Its digest.
        db: Digest,
    },
    /// Stable checkpoints at one sequence number with different digests.
    #[error("stable checkpoint {seq}: digests differ between replicas {a} and {b}")]
    DivergentCheckpoint {
        /// The sequence number.
        seq: SeqNo,
        /// One replica.
        a: ReplicaId,
        /// Another.
        b: ReplicaId,
    },
    /// A correct replica moved to a view more than one above every view a
    /// correct replica had reached: PBFT 4.5 (PROTOCOL.md 17) lets a
    /// replica move up by one on its own timer, or to the smallest view of
    /// `f + 1` others (one of them correct), never further on the word of
    /// at most `f` faulty replicas.
    #[error("replica {replica} jumped to view {got}; correct replicas had reached {highest}")]
    ViewJump {
        /// The replica.
        replica: ReplicaId,
        /// The highest view a correct replica had started or entered.
        highest: u64,
        /// The view it moved to.
        got: u64,
    },
    /// A replica could not be restored from its durable records.
    #[error("replica {replica} could not restart: {reason}")]
    RestoreFailed {
        /// The replica.
        replica: ReplicaId,
        /// The [`crate::RestoreError`].
        reason: String,
    },
    /// A request executed twice at one replica.
    #[error("replica {replica} executed request {request_no} of client {client} twice")]
    ExecutedTwice {
        /// The replica.
        replica: ReplicaId,
        /// The client.
        client: ClientId,
        /// The request.
        request_no: RequestNo,
    },
    /// A replica executed a request its client never sent.
    #[error("replica {replica} executed request {request_no} of client {client}, never sent")]
    Invented {
        /// The replica.
        replica: ReplicaId,
        /// The client.
        client: ClientId,
        /// The request.
        request_no: RequestNo,
    },
    /// A message left a replica before the record promising it was durable.
    #[error("replica {replica} sent {kind} for seq {seq} before persisting it")]
    SentBeforePersist {
        /// The replica.
        replica: ReplicaId,
        /// The message kind.
        kind: &'static str,
        /// Its sequence number.
        seq: SeqNo,
    },
    /// Clients that did not finish (only checked when liveness is expected).
    #[error("{unfinished} of {clients} clients unfinished at {time_us} us ({completed} requests completed)")]
    NotLive {
        /// Clients not done.
        unfinished: usize,
        /// All clients.
        clients: usize,
        /// Requests completed.
        completed: u64,
        /// Simulated time at the end.
        time_us: u64,
    },
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Requests completed at clients (`f + 1` matching replies).
    pub requests_completed: u64,
    /// Simulated time at the end.
    pub time_us: u64,
    /// Events processed.
    pub events: u64,
    /// Messages delivered between replicas.
    pub messages_delivered: u64,
    /// Batches executed, summed over replicas.
    pub batches_executed: u64,
    /// Stable checkpoints, summed over replicas.
    pub stable_checkpoints: u64,
    /// Replicas restarted from their durable records.
    pub restarts: u64,
    /// Rejections by label, summed over replicas.
    pub rejections: BTreeMap<&'static str, u64>,
    /// VIEW-CHANGEs started, summed over replicas.
    pub view_changes_started: u64,
    /// The highest view any replica entered.
    pub highest_view: u64,
    /// Faults adversaries injected: inputs they dropped and outputs they
    /// changed ([`crate::byzantine::altered`]).
    pub adversary_faults: u64,
    /// Messages lost to partitions ([`Partition`]) and client requests lost
    /// to [`SimConfig::clients_cut_from`].
    pub messages_cut: u64,
}

#[derive(Debug)]
enum Event {
    /// An input for the replica instance at this index of `nodes`.
    Input {
        node: usize,
        input: Input,
    },
    /// An output an adversary delayed.
    Emit {
        node: usize,
        output: Output,
    },
    Reply {
        client: usize,
        reply: Reply,
    },
    Timer {
        node: usize,
        timer: Timer,
        generation: u64,
    },
    ClientRetry {
        client: usize,
        generation: u64,
    },
    Crash(ReplicaId),
    Restart(ReplicaId),
    /// Twins stop: the second instance of the identity crashes for good and
    /// the first one reaches every replica again.
    EndTwins(ReplicaId),
}

/// One replica instance. `nodes[i]` for `i < n` is replica `i`; twins
/// (FAULTS.md, Twins) are appended after them with the same `id`.
struct Node {
    id: ReplicaId,
    /// The replicas this instance exchanges messages with (`None`: all).
    reach: Option<BTreeSet<ReplicaId>>,
    /// 0 for the first instance of an identity, 1 for its twin: two
    /// twinned identities talk only between instances of one side.
    side: u8,
    /// Whether the identity has a twin.
    twinned: bool,
    /// Durable states over time (FAULTS.md 10), kept when `amnesia` is set.
    history: Vec<(Time, DurableState)>,
    /// At its next restart the replica resumes from its durable state as
    /// of this time instead of the latest one (amnesia).
    amnesia: Option<Time>,
    replica: Replica<KvApp>,
    signer: Signer<ReplicaId>,
    /// Whether this replica restarts, so its records are kept.
    restarts: bool,
    /// Records of persists not yet acknowledged (lost at a crash).
    unacked: BTreeMap<PersistId, Vec<PersistRecord>>,
    /// What was acknowledged durable, as a store would hold it.
    state: DurableState,
    crashed: bool,
    adversary: Option<Box<dyn Strategy>>,
    timers: BTreeMap<Timer, u64>,
    /// Persist ids issued and not yet acknowledged, with what they make durable.
    persisting: BTreeMap<PersistId, Vec<(&'static str, SeqNo)>>,
    durable: BTreeSet<(&'static str, SeqNo)>,
}

struct SimClient {
    id: ClientId,
    requests: Vec<ClientRequest>,
    /// Index of the outstanding request.
    next: usize,
    replies: BTreeMap<ReplicaId, Vec<u8>>,
    generation: u64,
}

/// The simulator. Build with [`Sim::new`], optionally add adversaries, then
/// [`Sim::run`] and [`Sim::check`].
pub struct Sim {
    config: SimConfig,
    rng: ChaCha8Rng,
    now: Time,
    queue: BTreeMap<(Time, u64), Event>,
    event_counter: u64,
    nodes: Vec<Node>,
    clients: Vec<SimClient>,
    cluster: ClusterConfig,
    executed: BTreeMap<SeqNo, (ReplicaId, Digest)>,
    /// Per replica, each request executed and the sequence number it ran
    /// at: a restarted replica executes again from its stable checkpoint,
    /// which is allowed only at the same sequence number.
    executed_requests: BTreeMap<ReplicaId, BTreeMap<(ClientId, RequestNo), SeqNo>>,
    stable: BTreeMap<SeqNo, (ReplicaId, Digest)>,
    /// The highest view a correct replica started a view change to or
    /// entered ([`Violation::ViewJump`]).
    correct_view_max: u64,
    violations: Vec<Violation>,
    report: SimReport,
}

impl Sim {
    /// Builds the cluster (keys derived from the seed), the clients and
    /// their signed requests.
    ///
    /// # Errors
    /// A message if the configuration or parameters are invalid.
    pub fn new(config: SimConfig) -> Result<Self, String> {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let replica_keys: Vec<SecretKey> = (0..config.replicas)
            .map(|_| SecretKey::from_seed(rng.gen()))
            .collect();
        let client_keys: Vec<SecretKey> = (0..config.clients)
            .map(|_| SecretKey::from_seed(rng.gen()))
            .collect();
        let cluster = ClusterConfig {
            cluster_id: ClusterId(config.seed),
            replicas: replica_keys
                .iter()
                .enumerate()
                .map(|(i, k)| ReplicaEntry {
                    id: ReplicaId(u32::try_from(i).unwrap_or(u32::MAX)),
                    public_key: k.public_key(),
                    address: format!("127.0.0.1:{}", 7000 + i),
                })
                .collect(),
            clients: client_keys
                .iter()
                .enumerate()
                .map(|(i, k)| ClientEntry {
                    id: ClientId(i as u64 + 1),
                    public_key: k.public_key(),
                })
                .collect(),
        }
        .validated()
        .map_err(|e| e.to_string())?;
        let keyring = Keyring::new(&cluster).map_err(|e| e.to_string())?;
        let mut nodes = Vec::with_capacity(config.replicas);
        for entry in &cluster.replicas {
            let key = replica_keys
                .get(entry.id.0 as usize)
                .cloned()
                .ok_or("missing key")?;
            let signer = Signer::new(key, cluster.cluster_id, entry.id);
            let replica = Replica::new(
                cluster.clone(),
                config.params.clone(),
                signer.clone(),
                KvApp::default(),
            )
            .map_err(|e| e.to_string())?;
            nodes.push(Node {
                id: entry.id,
                reach: None,
                side: 0,
                twinned: false,
                history: Vec::new(),
                amnesia: None,
                replica,
                signer,
                restarts: config.restarts.iter().any(|(r, _)| *r == entry.id),
                unacked: BTreeMap::new(),
                state: DurableState::default(),
                crashed: false,
                adversary: None,
                timers: BTreeMap::new(),
                persisting: BTreeMap::new(),
                durable: BTreeSet::new(),
            });
        }
        let mut clients = Vec::with_capacity(config.clients);
        for (i, key) in client_keys.into_iter().enumerate() {
            let id = ClientId(i as u64 + 1);
            let signer = Signer::new(key, cluster.cluster_id, id);
            let macs =
                RequestAuthenticator::new(signer.clone(), &keyring).map_err(|e| e.to_string())?;
            let mut requests = Vec::with_capacity(config.requests_per_client);
            for no in 1..=config.requests_per_client as u64 {
                let value = vec![u8::try_from(no % 251).unwrap_or(0); config.value_bytes];
                let op = KvOp::Put {
                    key: format!("client-{i}").into_bytes(),
                    value,
                }
                .encode();
                let request = Request {
                    request_no: RequestNo(no),
                    read_only: false,
                    op,
                };
                let signed = if config.mac_requests {
                    let mut r = macs.mac(request).map_err(|e| e.to_string())?;
                    if let (Some(spoiled), Authenticator::Macs(entries)) =
                        (config.spoiled_mac_replica, &mut r.auth)
                    {
                        if let Some(m) = entries.get_mut(spoiled.0 as usize) {
                            m.0[0] ^= 1;
                        }
                    }
                    r
                } else if config.sign_requests {
                    signer.sign_request(request).map_err(|e| e.to_string())?
                } else {
                    ClientRequest {
                        value: request,
                        signer: id,
                        auth: Authenticator::Signature(Signature([0; 64])),
                    }
                };
                requests.push(signed);
            }
            clients.push(SimClient {
                id,
                requests,
                next: 0,
                replies: BTreeMap::new(),
                generation: 0,
            });
        }
        let mut sim = Self {
            rng,
            now: Time(0),
            queue: BTreeMap::new(),
            event_counter: 0,
            nodes,
            clients,
            cluster,
            executed: BTreeMap::new(),
            executed_requests: BTreeMap::new(),
            stable: BTreeMap::new(),
            correct_view_max: 0,
            violations: Vec::new(),
            report: SimReport::default(),
            config,
        };
        for (who, at) in sim.config.crashes.clone() {
            sim.schedule(at, Event::Crash(who));
        }
        for (who, at) in sim.config.restarts.clone() {
            sim.schedule(at, Event::Restart(who));
        }
        for c in 0..sim.clients.len() {
            sim.client_send(c);
        }
        Ok(sim)
    }

    /// Lets `adversary` control replica `id` (its first instance); the
    /// identity is then excluded from the checkers.
    pub fn set_adversary(&mut self, id: ReplicaId, adversary: Box<dyn Strategy>) {
        if let Some(node) = self.nodes.get_mut(id.0 as usize) {
            node.adversary = Some(adversary);
        }
    }

    /// Twins (Bano et al., OPODIS 2021): a second [`Replica`] with the
    /// identity and key of `id`, started fresh. The first instance exchanges
    /// messages only with the replicas in `reach_first`, the twin only with
    /// those in `reach_twin`; clients reach both. Instances of two twinned
    /// identities talk only within one side. Both instances are Byzantine
    /// (excluded from the checkers; `twin_adversary` controls the twin).
    /// At `until`, the twin crashes for good and the first instance reaches
    /// everyone again, so that liveness can be required after it.
    ///
    /// # Errors
    /// A message if the replica cannot be built.
    pub fn add_twin(
        &mut self,
        id: ReplicaId,
        reach_first: BTreeSet<ReplicaId>,
        reach_twin: BTreeSet<ReplicaId>,
        twin_adversary: Box<dyn Strategy>,
        until: Option<Time>,
    ) -> Result<(), String> {
        let signer = self
            .nodes
            .get(id.0 as usize)
            .map(|n| n.signer.clone())
            .ok_or("no such replica")?;
        let replica = Replica::new(
            self.cluster.clone(),
            self.config.params.clone(),
            signer.clone(),
            KvApp::default(),
        )
        .map_err(|e| e.to_string())?;
        if let Some(first) = self.nodes.get_mut(id.0 as usize) {
            first.reach = Some(reach_first);
            first.twinned = true;
            if first.adversary.is_none() {
                first.adversary = Some(Box::new(crate::byzantine::Honest));
            }
        }
        self.nodes.push(Node {
            id,
            reach: Some(reach_twin),
            side: 1,
            twinned: true,
            history: Vec::new(),
            amnesia: None,
            replica,
            signer,
            restarts: false,
            unacked: BTreeMap::new(),
            state: DurableState::default(),
            crashed: false,
            adversary: Some(twin_adversary),
            timers: BTreeMap::new(),
            persisting: BTreeMap::new(),
            durable: BTreeSet::new(),
        });
        if let Some(at) = until {
            self.schedule(at, Event::EndTwins(id));
        }
        Ok(())
    }

    /// Amnesia (FAULTS.md 10): replica `id` crashes at `crash_at` and
    /// restarts at `restart_at` from the durable state it had at `as_of`
    /// (the latest one acknowledged at or before that time), as if its
    /// store had been rolled back. The replica should be marked Byzantine
    /// ([`Sim::set_adversary`] with [`crate::byzantine::Amnesia`]): a correct
    /// replica never loses acknowledged writes.
    pub fn amnesia(&mut self, id: ReplicaId, as_of: Time, crash_at: Time, restart_at: Time) {
        if let Some(node) = self.nodes.get_mut(id.0 as usize) {
            node.restarts = true;
            node.amnesia = Some(as_of);
            node.history.push((Time(0), DurableState::default()));
        }
        self.schedule(crash_at, Event::Crash(id));
        self.schedule(restart_at, Event::Restart(id));
    }

    /// The replica instances of identity `id` (more than one for twins).
    #[must_use]
    pub fn instances(&self, id: ReplicaId) -> Vec<&Replica<KvApp>> {
        self.nodes
            .iter()
            .filter(|n| n.id == id)
            .map(|n| &n.replica)
            .collect()
    }

    /// The cluster configuration.
    #[must_use]
    pub fn cluster(&self) -> &ClusterConfig {
        &self.cluster
    }

    /// A replica, to inspect.
    #[must_use]
    pub fn replica(&self, id: ReplicaId) -> Option<&Replica<KvApp>> {
        self.nodes.get(id.0 as usize).map(|n| &n.replica)
    }

    /// The report so far.
    #[must_use]
    pub fn report(&self) -> &SimReport {
        &self.report
    }

    fn schedule(&mut self, at: Time, event: Event) {
        let at = at.max(self.now);
        self.event_counter += 1;
        self.queue.insert((at, self.event_counter), event);
    }

    fn lossy(&self) -> bool {
        self.config
            .network
            .heal_at_us
            .is_none_or(|heal| self.now.0 < heal)
    }

    /// Schedules a network delivery with delay, loss and duplication.
    fn transmit(&mut self, make: impl Fn() -> Event) {
        let net = &self.config.network;
        let (drop_ppm, dup_ppm) = if self.lossy() {
            (net.drop_ppm, net.duplicate_ppm)
        } else {
            (0, 0)
        };
        let (lo, hi) = (net.delay_us_min, net.delay_us_max.max(net.delay_us_min));
        if drop_ppm > 0 && self.rng.gen_range(0..1_000_000) < drop_ppm {
            return;
        }
        let copies = if dup_ppm > 0 && self.rng.gen_range(0..1_000_000) < dup_ppm {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if hi > lo {
                self.rng.gen_range(lo..=hi)
            } else {
                lo
            };
            let at = self.now.plus_us(delay);
            self.schedule(at, make());
        }
    }

    fn client_send(&mut self, c: usize) {
        let Some(client) = self.clients.get_mut(c) else {
            return;
        };
        let Some(request) = client.requests.get(client.next).cloned() else {
            return;
        };
        client.generation += 1;
        let (id, generation) = (client.id, client.generation);
        for node in 0..self.nodes.len() {
            if self
                .nodes
                .get(node)
                .is_some_and(|n| self.config.clients_cut_from.contains(&n.id))
            {
                self.report.messages_cut += 1;
                continue;
            }
            let request = request.clone();
            self.transmit(|| Event::Input {
                node,
                input: Input::ClientRequest {
                    from: id,
                    request: request.clone(),
                },
            });
        }
        let at = self.now.plus_us(self.config.client_retry_us);
        self.schedule(
            at,
            Event::ClientRetry {
                client: c,
                generation,
            },
        );
    }

    fn all_clients_done(&self) -> bool {
        self.clients.iter().all(|c| c.next >= c.requests.len())
    }

    /// Runs until every client is done, the queue is empty, a limit is hit,
    /// or a checker found a violation (the rest of the run proves nothing).
    pub fn run(&mut self) -> &SimReport {
        while !self.all_clients_done()
            && self.report.events < self.config.events_max
            && self.violations.is_empty()
        {
            let Some(((at, _), event)) = self.queue.pop_first() else {
                break;
            };
            if at.0 > self.config.time_limit_us {
                break;
            }
            self.now = at;
            self.report.events += 1;
            self.handle(event);
        }
        self.report.time_us = self.now.0;
        &self.report
    }

    /// Runs, then checks every invariant; `expect_live` also requires every
    /// request to complete.
    ///
    /// # Errors
    /// The first [`Violation`] found.
    pub fn run_and_check(&mut self, expect_live: bool) -> Result<SimReport, Violation> {
        self.run();
        self.check(expect_live)
    }

    /// The invariants checked so far, and liveness if asked.
    ///
    /// # Errors
    /// The first [`Violation`] found.
    pub fn check(&self, expect_live: bool) -> Result<SimReport, Violation> {
        if let Some(v) = self.violations.first() {
            return Err(v.clone());
        }
        if expect_live && !self.all_clients_done() {
            return Err(Violation::NotLive {
                unfinished: self
                    .clients
                    .iter()
                    .filter(|c| c.next < c.requests.len())
                    .count(),
                clients: self.clients.len(),
                completed: self.report.requests_completed,
                time_us: self.now.0,
            });
        }
        Ok(self.report.clone())
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Input { node, input } => self.step(node, input),
            Event::Emit { node, output } => {
                if self.nodes.get(node).is_some_and(|n| !n.crashed) {
                    self.apply(node, output);
                }
            }
            Event::Timer {
                node,
                timer,
                generation,
            } => {
                let current = self
                    .nodes
                    .get(node)
                    .and_then(|n| n.timers.get(&timer))
                    .copied();
                if current == Some(generation) {
                    if let Some(n) = self.nodes.get_mut(node) {
                        n.timers.remove(&timer);
                    }
                    self.step(node, Input::TimerFired(timer));
                }
            }
            Event::Reply { client, reply } => self.on_reply(client, reply),
            Event::ClientRetry { client, generation } => {
                let current = self
                    .clients
                    .get(client)
                    .map(|c| (c.generation, c.next < c.requests.len()));
                if current == Some((generation, true)) {
                    self.client_send(client);
                }
            }
            Event::Crash(id) => {
                if let Some(node) = self.nodes.get_mut(id.0 as usize) {
                    node.crashed = true;
                }
            }
            Event::Restart(id) => self.restart(id),
            Event::EndTwins(id) => {
                for node in self.nodes.iter_mut().filter(|n| n.id == id) {
                    if node.side == 0 {
                        node.reach = None;
                        node.twinned = false;
                    } else {
                        node.crashed = true;
                    }
                }
            }
        }
    }

    /// A crashed replica comes back from its acknowledged records only:
    /// unacknowledged persists are lost, timers and in-flight persist
    /// acknowledgements of the old process are gone.
    fn restart(&mut self, id: ReplicaId) {
        let ix = id.0 as usize;
        let Some(node) = self.nodes.get_mut(ix) else {
            return;
        };
        if !node.crashed {
            return;
        }
        if let Some(as_of) = node.amnesia.take() {
            // FAULTS.md 10: resume from an older copy of the store.
            let older = node
                .history
                .iter()
                .rev()
                .find(|(t, _)| *t <= as_of)
                .map(|(_, s)| s.clone());
            if let Some(older) = older {
                node.state = older;
            }
        }
        let restored = Replica::restore(
            self.cluster.clone(),
            self.config.params.clone(),
            node.signer.clone(),
            KvApp::default(),
            node.state.clone(),
        );
        match restored {
            Ok(replica) => {
                node.replica = replica;
                node.crashed = false;
                node.timers.clear();
                node.persisting.clear();
                node.unacked.clear();
                self.report.restarts += 1;
            }
            Err(e) => {
                self.violations.push(Violation::RestoreFailed {
                    replica: id,
                    reason: e.to_string(),
                });
                return;
            }
        }
        self.queue.retain(|_, event| {
            !matches!(event, Event::Input { node, input: Input::PersistDone(_) } if *node == ix)
        });
        self.step(ix, Input::TimerFired(Timer::Retransmit));
    }

    fn on_reply(&mut self, c: usize, reply: Reply) {
        let quorum = self.cluster.reply_quorum();
        let Some(client) = self.clients.get_mut(c) else {
            return;
        };
        let Some(current) = client.requests.get(client.next) else {
            return;
        };
        if reply.request_no != current.value.request_no || reply.client != client.id {
            return;
        }
        client.replies.insert(reply.replica, reply.result.clone());
        let matching = client
            .replies
            .values()
            .filter(|r| **r == reply.result)
            .count();
        if matching >= quorum {
            client.next += 1;
            client.replies.clear();
            self.report.requests_completed += 1;
            self.client_send(c);
        }
    }

    /// One input to the replica instance `ix`, through its adversary if it
    /// has one; the outputs (rewritten by the adversary) are carried out.
    fn step(&mut self, ix: usize, input: Input) {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(ix) else {
            return;
        };
        if node.crashed {
            return;
        }
        if let Input::PersistDone(id) = &input {
            if let Some(keys) = node.persisting.remove(id) {
                node.durable.extend(keys);
            }
            if let Some(records) = node.unacked.remove(id) {
                for record in &records {
                    node.state.apply(record);
                }
                if node.amnesia.is_some() {
                    node.history.push((now, node.state.clone()));
                }
            }
        }
        let Node {
            replica,
            signer,
            adversary,
            id: me,
            ..
        } = node;
        let ctx = Context {
            me: *me,
            signer,
            config: &self.cluster,
            now,
        };
        if let Some(adversary) = adversary.as_mut() {
            if !adversary.incoming(&ctx, &input, &mut self.rng) {
                self.report.adversary_faults += 1;
                return;
            }
        }
        let outputs = replica.step(now, input);
        let Some(adversary) = adversary.as_mut() else {
            for output in outputs {
                self.apply(ix, output);
            }
            return;
        };
        let mut actions = Vec::with_capacity(outputs.len());
        for o in outputs {
            let original = o.clone();
            let rewritten = adversary.outgoing(&ctx, o, &mut self.rng);
            if crate::byzantine::altered(&ctx, &original, &rewritten) {
                self.report.adversary_faults += 1;
            }
            actions.extend(rewritten);
        }
        for action in actions {
            match action {
                Action::Emit(output) => self.apply(ix, output),
                Action::Delay { at, output } => {
                    self.schedule(at, Event::Emit { node: ix, output });
                }
            }
        }
    }

    fn correct(&self, id: ReplicaId) -> bool {
        self.nodes
            .get(id.0 as usize)
            .is_some_and(|n| n.adversary.is_none())
    }

    /// Checks persist before send for this replica's own promises.
    fn check_persisted(&mut self, from: ReplicaId, message: &Message) {
        let key = match message {
            Message::PrePrepare { pre_prepare, .. } if pre_prepare.signer == from => {
                ("pre_prepare", pre_prepare.value.seq)
            }
            Message::Prepare(p) if p.signer == from => ("prepare", p.value.seq),
            Message::Commit(c) if c.signer == from => ("commit", c.value.seq),
            Message::Checkpoint(c) if c.signer == from => ("checkpoint", c.value.seq),
            _ => return,
        };
        let durable = self
            .nodes
            .get(from.0 as usize)
            .is_some_and(|n| n.durable.contains(&key));
        if !durable && self.correct(from) {
            self.violations.push(Violation::SentBeforePersist {
                replica: from,
                kind: key.0,
                seq: key.1,
            });
        }
    }

    /// Sends from instance `ix` to every instance of `to` it can reach:
    /// partitions (FAULTS.md 12) and twins' reach decide.
    fn send(&mut self, ix: usize, to: ReplicaId, message: Message) {
        let Some(sender) = self.nodes.get(ix) else {
            return;
        };
        let from = sender.id;
        let now = self.now;
        if self
            .config
            .partitions
            .iter()
            .any(|p| p.blocks(now, from, to))
        {
            self.report.messages_cut += 1;
            return;
        }
        if sender.reach.as_ref().is_some_and(|r| !r.contains(&to)) {
            return;
        }
        let targets: Vec<usize> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.id == to
                    && n.reach.as_ref().is_none_or(|r| r.contains(&from))
                    && !(n.twinned && sender.twinned && n.side != sender.side)
            })
            .map(|(i, _)| i)
            .collect();
        for node in targets {
            self.report.messages_delivered += 1;
            self.transmit(|| Event::Input {
                node,
                input: Input::Message {
                    from,
                    message: message.clone(),
                },
            });
        }
    }

    fn id_of(&self, ix: usize) -> ReplicaId {
        self.nodes.get(ix).map_or(ReplicaId(u32::MAX), |n| n.id)
    }

    /// Carries out one output of the replica instance `ix`.
    fn apply(&mut self, ix: usize, output: Output) {
        let from = self.id_of(ix);
        match output {
            Output::Send { to, message } => {
                self.check_persisted(from, &message);
                self.send(ix, to, message);
            }
            Output::Broadcast(message) => {
                self.check_persisted(from, &message);
                for r in 0..self.cluster.n() {
                    let to = ReplicaId(r as u32);
                    if to != from {
                        self.send(ix, to, message.clone());
                    }
                }
            }
            Output::Reply { client, reply } => {
                let c = usize::try_from(client.0.saturating_sub(1)).unwrap_or(usize::MAX);
                self.transmit(|| Event::Reply {
                    client: c,
                    reply: reply.clone(),
                });
            }
            Output::Persist { id, records } => {
                let keys = records.iter().filter_map(record_key).collect();
                if let Some(node) = self.nodes.get_mut(ix) {
                    node.persisting.insert(id, keys);
                    if node.restarts {
                        node.unacked.insert(id, records);
                    }
                }
                let delay = if self.config.persist_delay_us_max > 0 {
                    self.rng.gen_range(0..=self.config.persist_delay_us_max)
                } else {
                    0
                };
                let at = self.now.plus_us(delay);
                self.schedule(
                    at,
                    Event::Input {
                        node: ix,
                        input: Input::PersistDone(id),
                    },
                );
            }
            Output::SetTimer { timer, at } => {
                self.event_counter += 1;
                let generation = self.event_counter;
                if let Some(node) = self.nodes.get_mut(ix) {
                    node.timers.insert(timer, generation);
                }
                self.schedule(
                    at,
                    Event::Timer {
                        node: ix,
                        timer,
                        generation,
                    },
                );
            }
            Output::CancelTimer(timer) => {
                if let Some(node) = self.nodes.get_mut(ix) {
                    node.timers.remove(&timer);
                }
            }
            Output::Executed {
                seq,
                digest,
                requests,
                ..
            } => self.on_executed(from, seq, digest, &requests),
            Output::CheckpointStable { seq, state_digest } => {
                self.report.stable_checkpoints += 1;
                if self.correct(from) {
                    match self.stable.get(&seq) {
                        Some((other, d)) if *d != state_digest => {
                            self.violations.push(Violation::DivergentCheckpoint {
                                seq,
                                a: *other,
                                b: from,
                            });
                        }
                        Some(_) => {}
                        None => {
                            self.stable.insert(seq, (from, state_digest));
                        }
                    }
                }
            }
            Output::ViewChangeStarted { view } => {
                self.report.view_changes_started += 1;
                self.check_view(from, view.0);
            }
            Output::ViewChanged { view, .. } => {
                self.report.highest_view = self.report.highest_view.max(view.0);
                self.check_view(from, view.0);
            }
            Output::Rejected { reason, .. } => {
                *self.report.rejections.entry(reason.label()).or_default() += 1;
            }
        }
    }

    /// [`Violation::ViewJump`]: a correct replica's new view is at most one
    /// above the highest view a correct replica had reached.
    fn check_view(&mut self, from: ReplicaId, view: u64) {
        if !self.correct(from) {
            return;
        }
        if view > self.correct_view_max.saturating_add(1) {
            self.violations.push(Violation::ViewJump {
                replica: from,
                highest: self.correct_view_max,
                got: view,
            });
        }
        self.correct_view_max = self.correct_view_max.max(view);
    }

    fn on_executed(
        &mut self,
        from: ReplicaId,
        seq: SeqNo,
        digest: Digest,
        requests: &[(ClientId, RequestNo)],
    ) {
        self.report.batches_executed += 1;
        if !self.correct(from) {
            return;
        }
        match self.executed.get(&seq) {
            Some((other, d)) if *d != digest => {
                self.violations.push(Violation::DivergentExecution {
                    seq,
                    a: *other,
                    da: *d,
                    b: from,
                    db: digest,
                });
            }
            Some(_) => {}
            None => {
                self.executed.insert(seq, (from, digest));
            }
        }
        let sent = |client: ClientId, no: RequestNo| {
            client.0 >= 1
                && client.0 <= self.clients.len() as u64
                && no.0 >= 1
                && no.0 <= self.config.requests_per_client as u64
        };
        let mut found = Vec::new();
        let set = self.executed_requests.entry(from).or_default();
        for &(client, request_no) in requests {
            if *set.entry((client, request_no)).or_insert(seq) != seq {
                found.push(Violation::ExecutedTwice {
                    replica: from,
                    client,
                    request_no,
                });
            }
            if !sent(client, request_no) {
                found.push(Violation::Invented {
                    replica: from,
                    client,
                    request_no,
                });
            }
        }
        self.violations.extend(found);
    }
}

fn record_key(record: &PersistRecord) -> Option<(&'static str, SeqNo)> {
    match record {
        PersistRecord::PrePrepare { pre_prepare, .. } => {
            Some(("pre_prepare", pre_prepare.value.seq))
        }
        PersistRecord::Prepare(p) => Some(("prepare", p.value.seq)),
        PersistRecord::Commit(c) => Some(("commit", c.value.seq)),
        PersistRecord::Checkpoint { checkpoint, .. } => Some(("checkpoint", checkpoint.value.seq)),
        _ => None,
    }
}
