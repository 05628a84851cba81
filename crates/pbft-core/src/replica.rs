//! The replica state machine: normal case (PBFT 4.2), checkpoints and
//! garbage collection (PBFT 4.3).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use pbft_crypto::{Keyring, RequestVerifier, Signable, Signer, Verified};
use pbft_types::{
    Authenticator, Batch, Checkpoint, ClientId, ClientRequest, ClusterConfig, Commit, Digest,
    Fetch, FetchResponse, Message, NewView, PrePrepare, Prepare, PreparedCert, QuorumCert,
    ReplicaId, Reply, RequestNo, SeqNo, Signed, View, ViewChange,
};

use crate::app::{Application, CachedReply, Snapshot};
use crate::chunks::{snapshot_root, SnapshotTree};
use crate::io::{Input, Output, Peer, PersistId, PersistRecord, Time, Timer};
use crate::params::{Params, ParamsError, RequestAuth};
use crate::restore::{CommittedBatch, DurableState, RestoreError, StableState};
use crate::Rejection;

mod transfer;
mod view_change;

/// Counters of the work a replica did, for metrics and for the benchmark
/// (which subtracts the cost of cryptography from the core's time).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Signatures of replicas checked one by one.
    pub signatures_verified: u64,
    /// Client request signatures checked (in batches).
    pub request_signatures_verified: u64,
    /// Client request MAC entries checked (TOCS 3.2).
    pub request_macs_verified: u64,
    /// Parked pre-prepares accepted on `f + 1` other backups' prepares.
    pub pre_prepares_vouched: u64,
    /// Signatures made.
    pub signatures_made: u64,
    /// Batch digests computed.
    pub batch_digests: u64,
    /// Certificates of commits checked (fetched batches).
    pub certificates_verified: u64,
    /// Requests executed.
    pub requests_executed: u64,
    /// Batches executed.
    pub batches_executed: u64,
    /// Inputs rejected.
    pub rejections: u64,
    /// Client requests a backup relayed to the primary (PBFT 4.1).
    pub requests_relayed: u64,
}

/// Requests a backup relays to the primary per retransmission interval, at
/// most (PBFT 4.1); the rest go in the next intervals.
pub const RELAYED_REQUESTS_PER_INTERVAL_MAX: usize = 1_024;

/// Relayed requests the primary takes from one replica per retransmission
/// interval, at most: each may cost it a signature check, so a Byzantine
/// backup must not send them at any rate. Twice what a correct backup
/// sends, since the primary's window may overlap two of the backup's
/// intervals.
pub const RELAYED_REQUESTS_RECEIVED_PER_INTERVAL_MAX: usize = 2 * RELAYED_REQUESTS_PER_INTERVAL_MAX;

/// The digest a pre-prepare carries for `batch`: [`Digest::ZERO`] for the
/// empty batch of a null request (PBFT 4.4), which no normal-case
/// pre-prepare may carry, else the batch's blake3 digest.
fn batch_digest(batch: &Batch) -> Result<Digest, pbft_crypto::CryptoError> {
    if batch.requests.is_empty() {
        Ok(Digest::ZERO)
    } else {
        pbft_crypto::batch_digest(batch)
    }
}

/// One sequence number of the log, between the watermarks.
#[derive(Debug, Default)]
struct Slot {
    /// The accepted pre-prepare (PBFT 4.2), with its batch.
    pre_prepare: Option<Verified<PrePrepare>>,
    batch: Option<Batch>,
    /// Prepares by replica whose signatures are checked: this replica's
    /// own, and those a prepared certificate needed (`check_prepares`).
    /// Only those matching the pre-prepare count.
    prepares: BTreeMap<ReplicaId, Verified<Prepare>>,
    /// Prepares as received, signatures not checked yet (PROTOCOL 19): the
    /// authenticated channel vouches for the sender, so they count toward
    /// vouching for a parked batch, and their signatures are checked, in
    /// one batch and only as many as needed, when the slot would become
    /// prepared. A replica's vote is in one of the two maps at most (first
    /// one wins; a second, different one is a conflicting vote).
    prepares_unchecked: BTreeMap<ReplicaId, Signed<Prepare>>,
    /// Commits by replica, as received: the authenticated channel vouches
    /// for the sender (PBFT 4.2, PROTOCOL 18), so their signatures are
    /// checked only when they leave as a certificate (`commit_proof`).
    commits: BTreeMap<ReplicaId, Signed<Commit>>,
    /// This replica signed its prepare (or, as primary, proposed).
    prepare_signed: bool,
    /// This backup's own prepare is being persisted; once durable it
    /// counts toward `2f` without a signature check, so `check_prepares`
    /// waits for it.
    own_prepare_persisting: bool,
    /// Primary: its own pre-prepare is durable and may be (re)sent.
    pre_prepare_durable: bool,
    /// This replica signed its commit.
    commit_signed: bool,
    /// Committed-local, or proven committed by a certificate.
    committed: bool,
    /// A commit certificate received with a fetched batch.
    commit_cert: Option<QuorumCert<Commit>>,
    executed: bool,
}

/// What to do once a persist is acknowledged (persist before send).
#[derive(Debug)]
enum AfterPersist {
    BroadcastPrePrepare(SeqNo),
    Prepare(Verified<Prepare>),
    Commit(Verified<Commit>),
    Checkpoint(Verified<Checkpoint>),
    ViewChange(Verified<ViewChange>),
    BroadcastNewView(Signed<NewView>),
}

/// A pre-prepare whose batch holds requests this backup could not
/// authenticate itself: not received from their clients
/// ([`RequestAuth::Channel`]) or with a bad MAC entry
/// ([`RequestAuth::Macs`]). It is accepted once each of them arrives from
/// its client, or once `f + 1` other backups prepared it.
#[derive(Debug)]
struct Parked {
    pre_prepare: Verified<PrePrepare>,
    batch: Batch,
    /// Indices into `batch.requests` of the requests not authenticated here.
    missing: Vec<usize>,
}

/// Requests waiting to be ordered (primary) or executed (backup), in
/// arrival order, bounded in total and per client.
#[derive(Debug, Default)]
struct Pending {
    /// Each request with whether this replica verified its client
    /// signature already (a relayed request, or one kept by
    /// `drop_forged_pending`): such a request is not checked again.
    by_arrival: BTreeMap<u64, (ClientRequest, bool)>,
    by_client: BTreeMap<ClientId, BTreeMap<RequestNo, u64>>,
    next_arrival: u64,
}

impl Pending {
    fn len(&self) -> usize {
        self.by_arrival.len()
    }

    fn is_empty(&self) -> bool {
        self.by_arrival.is_empty()
    }

    fn contains(&self, client: ClientId, no: RequestNo) -> bool {
        self.by_client
            .get(&client)
            .is_some_and(|m| m.contains_key(&no))
    }

    fn get(&self, client: ClientId, no: RequestNo) -> Option<&ClientRequest> {
        let arrival = self.by_client.get(&client)?.get(&no)?;
        self.by_arrival.get(arrival).map(|(request, _)| request)
    }

    fn arrival(&self, client: ClientId, no: RequestNo) -> Option<u64> {
        self.by_client.get(&client)?.get(&no).copied()
    }

    /// Whether a held request carries a client signature not verified here.
    fn has_unchecked_signature(&self) -> bool {
        self.by_arrival
            .values()
            .any(|(r, checked)| !checked && matches!(r.auth, Authenticator::Signature(_)))
    }

    /// Requests that arrived in `from..to` (arrival indices), oldest first.
    fn arrived_in(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, &ClientRequest)> {
        self.by_arrival
            .range(from..to.max(from))
            .map(|(arrival, (request, _))| (*arrival, request))
    }

    fn client_len(&self, client: ClientId) -> usize {
        self.by_client.get(&client).map_or(0, BTreeMap::len)
    }

    /// Holds `request`; `signature_checked`: its client signature (if it
    /// has one) was verified here already.
    fn insert(&mut self, request: ClientRequest, signature_checked: bool) {
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.by_client
            .entry(request.signer)
            .or_default()
            .insert(request.value.request_no, arrival);
        self.by_arrival
            .insert(arrival, (request, signature_checked));
    }

    /// Removes the client's requests numbered `no` or lower.
    fn remove_up_to(&mut self, client: ClientId, no: RequestNo) {
        let Some(map) = self.by_client.get_mut(&client) else {
            return;
        };
        let keep = map.split_off(&no.next());
        for arrival in map.values() {
            self.by_arrival.remove(arrival);
        }
        if keep.is_empty() {
            self.by_client.remove(&client);
        } else {
            *map = keep;
        }
    }

    /// Takes up to `max` requests in arrival order, each with whether its
    /// signature was checked already.
    fn take_front(&mut self, max: usize) -> Vec<(ClientRequest, bool)> {
        let mut out = Vec::with_capacity(max.min(self.len()));
        while out.len() < max {
            let Some((_, (request, checked))) = self.by_arrival.pop_first() else {
                break;
            };
            if let Some(map) = self.by_client.get_mut(&request.signer) {
                map.remove(&request.value.request_no);
                if map.is_empty() {
                    self.by_client.remove(&request.signer);
                }
            }
            out.push((request, checked));
        }
        out
    }
}

/// One PBFT replica as a pure state machine.
///
/// Drive it with [`Replica::step`]; it owns the [`Application`] and calls
/// it when a batch commits (so `Output::Executed` is an event, not a
/// command). See the crate documentation for the protocol and the
/// persist-before-send rule.
pub struct Replica<A> {
    id: ReplicaId,
    config: ClusterConfig,
    params: Params,
    signer: Signer<ReplicaId>,
    keyring: Keyring,
    /// Checks client requests: signatures, and this replica's MAC entry.
    request_verifier: RequestVerifier,
    app: A,
    /// The client reply table, part of the checkpointed state (PBFT 4.3).
    replies: BTreeMap<ClientId, CachedReply>,
    view: View,
    /// `h`: the sequence number of the last stable checkpoint.
    low: SeqNo,
    stable_cert: Option<QuorumCert<Checkpoint>>,
    last_executed: SeqNo,
    /// Primary: the next sequence number to assign.
    next_seq: SeqNo,
    log: BTreeMap<SeqNo, Slot>,
    /// Checkpoint votes by sequence number, then replica.
    checkpoints: BTreeMap<SeqNo, BTreeMap<ReplicaId, Verified<Checkpoint>>>,
    pending: Pending,
    /// Primary: requests assigned to a sequence number, not yet executed.
    in_flight: BTreeSet<(ClientId, RequestNo)>,
    /// Messages above the high watermark, per sender bound.
    future: VecDeque<(ReplicaId, Message)>,
    future_by_peer: BTreeMap<ReplicaId, usize>,
    parked: BTreeMap<SeqNo, Parked>,
    awaiting_persist: BTreeMap<PersistId, Vec<AfterPersist>>,
    next_persist: u64,
    outputs: Vec<Output>,
    now: Time,
    batch_timer_armed: bool,
    batch_deadline: Option<Time>,
    retransmit_armed: bool,
    view_change_armed: bool,
    /// `(last_executed, low)` at the previous retransmission tick.
    progress_mark: (SeqNo, SeqNo),
    /// Backup: pending requests that arrived before this arrival index were
    /// relayed to the primary of the view already (PBFT 4.1).
    relay_from: u64,
    /// Backup: the next arrival index at the previous retransmission tick;
    /// requests below it have waited a whole interval.
    relay_mark: u64,
    /// Backup: relays left in this retransmission interval.
    relay_budget: usize,
    /// Primary: relayed requests taken from each replica since
    /// `relays_received_since` (keys are configured replicas).
    relays_received: BTreeMap<ReplicaId, usize>,
    relays_received_since: Time,
    /// The highest sequence number any replica's message named (evidence
    /// that this replica is behind).
    highest_seen: SeqNo,
    /// Snapshots of this replica's own checkpoints above `low`, and the one
    /// at `low` (served to replicas that fell behind).
    snapshots: BTreeMap<SeqNo, Vec<u8>>,
    /// The snapshot being fetched (state transfer), if any.
    transfer: Option<transfer::Transfer>,
    /// The Merkle tree of the snapshot last served, by its sequence number.
    snapshot_tree: Option<(SeqNo, SnapshotTree)>,
    /// False from this replica's VIEW-CHANGE until the NEW-VIEW of `view`
    /// is installed: no normal-case message is accepted (PBFT 4.4).
    view_active: bool,
    /// The latest verified VIEW-CHANGE of each replica (at most `n`).
    view_changes: BTreeMap<ReplicaId, Verified<ViewChange>>,
    /// The NEW-VIEW that installed the current view (re-sent to laggards).
    new_view_msg: Option<Signed<NewView>>,
    /// The highest view this replica asked a peer's NEW-VIEW for, and when
    /// (it asks again once per `retransmit_interval_us` until it is in).
    new_view_asked: (View, Time),
    /// PBFT 4.4 `P`: the prepared certificate of the highest view for each
    /// sequence number above `low` (bounded by the window).
    prepared_certs: BTreeMap<SeqNo, PreparedCert>,
    /// Batches of abandoned slots by digest, for re-proposals in a new view
    /// (at most `log_window_seqs`, none at or below `low`).
    known_batches: BTreeMap<Digest, (SeqNo, Batch)>,
    /// View changes since a request last executed: the timeout doubles
    /// with each (PBFT 4.5).
    view_change_backoff: u32,
    stats: Stats,
}

impl<A: Application> Replica<A> {
    /// A replica in view 0 with the application's initial state.
    ///
    /// # Errors
    /// [`ParamsError`] for invalid parameters, a signer that is not a
    /// configured replica, or a configuration whose keys do not parse.
    pub fn new(
        config: ClusterConfig,
        params: Params,
        signer: Signer<ReplicaId>,
        app: A,
    ) -> Result<Self, ParamsError> {
        params.validate()?;
        let id = signer.id();
        match config.replica(id) {
            Some(entry) if entry.public_key == signer.public_key() => {}
            _ => return Err(ParamsError::UnknownReplica(id)),
        }
        let keyring = Keyring::new(&config).map_err(|e| ParamsError::Keys(e.to_string()))?;
        let request_verifier = RequestVerifier::new(&signer, &keyring)
            .map_err(|e| ParamsError::Keys(e.to_string()))?;
        Ok(Self {
            id,
            config,
            params,
            signer,
            keyring,
            request_verifier,
            app,
            replies: BTreeMap::new(),
            view: View(0),
            low: SeqNo(0),
            stable_cert: None,
            last_executed: SeqNo(0),
            next_seq: SeqNo(1),
            log: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            pending: Pending::default(),
            in_flight: BTreeSet::new(),
            future: VecDeque::new(),
            future_by_peer: BTreeMap::new(),
            parked: BTreeMap::new(),
            awaiting_persist: BTreeMap::new(),
            next_persist: 0,
            outputs: Vec::new(),
            now: Time(0),
            batch_timer_armed: false,
            batch_deadline: None,
            retransmit_armed: false,
            view_change_armed: false,
            progress_mark: (SeqNo(0), SeqNo(0)),
            relay_from: 0,
            relay_mark: 0,
            relay_budget: RELAYED_REQUESTS_PER_INTERVAL_MAX,
            relays_received: BTreeMap::new(),
            relays_received_since: Time(0),
            highest_seen: SeqNo(0),
            snapshots: BTreeMap::new(),
            transfer: None,
            snapshot_tree: None,
            view_active: true,
            view_changes: BTreeMap::new(),
            new_view_msg: None,
            new_view_asked: (View(0), Time(0)),
            prepared_certs: BTreeMap::new(),
            known_batches: BTreeMap::new(),
            view_change_backoff: 0,
            stats: Stats::default(),
        })
    }

    /// A replica restarted from what it made durable before it stopped
    /// (PBFT's stable-storage assumption, TOCS section 4; proactive recovery,
    /// TOCS 4.5, is out of scope).
    ///
    /// - The application and the client reply table come from the stable
    ///   snapshot, whose digest must be the one its certificate names
    ///   ([`crate::app::checkpoint_digest`]); the low watermark and the last executed
    ///   sequence number are set there (PBFT 4.3).
    /// - Committed batches above it (with verified commit certificates) are
    ///   executed again in sequence order while they chain.
    /// - The view is the highest known.
    /// - Own pre-prepares, prepares, commits and checkpoints of that view
    ///   go back into the log as durable (PBFT 4.2): a pre-prepare for
    ///   another digest at a (view, seq) where this replica voted is refused
    ///   with [`Rejection::ConflictingPrePrepare`], so it never prepares or
    ///   commits a second digest there; as primary it assigns sequence
    ///   numbers after its highest own pre-prepare of the view; and the
    ///   slots it voted in complete when peers send matching messages.
    ///
    /// Outputs produced while restoring (replies and `Executed` events of
    /// re-executed batches, a checkpoint to persist) are returned by the
    /// first [`Replica::step`]. A host should make that first input
    /// [`Input::TimerFired`]`(`[`Timer::Retransmit`]`)`: the replica then
    /// re-sends its durable votes and asks for what it missed.
    ///
    /// # Errors
    /// [`RestoreError`] when the durable state does not verify (a damaged
    /// store, or another replica's or cluster's): the host must not resume.
    pub fn restore(
        config: ClusterConfig,
        params: Params,
        signer: Signer<ReplicaId>,
        app: A,
        state: DurableState,
    ) -> Result<Self, RestoreError> {
        let mut r = Self::new(config, params, signer, app)?;
        let view = state.highest_view();
        r.view = view;
        if let Some(stable) = state.stable {
            r.restore_stable(stable)?;
        }
        let low = r.low;
        let id = r.id;
        for (seq, (checkpoint, snapshot)) in state.checkpoints.into_iter().filter(|(s, _)| *s > low)
        {
            let c = r.own_record(checkpoint, "checkpoint", seq)?;
            r.checkpoints.entry(seq).or_default().insert(id, c);
            r.snapshots.insert(seq, snapshot);
        }
        // Prepared certificates (PBFT 4.4, P): the highest view per seq.
        for ((_, seq), cert) in state.prepared.into_iter().filter(|((_, s), _)| *s > low) {
            r.verify_prepared_cert(cert.clone(), view.next())
                .map_err(|_| RestoreError::BadOwnRecord {
                    kind: "prepared certificate",
                    seq,
                })?;
            let higher = r
                .prepared_certs
                .get(&seq)
                .is_none_or(|c| c.pre_prepare.value.view < cert.pre_prepare.value.view);
            if higher {
                r.prepared_certs.insert(seq, cert);
            }
        }
        // Batches of earlier views' pre-prepares, for re-proposals.
        for ((v, seq), (pp, batch)) in &state.pre_prepares {
            if *v < view && *seq > low {
                r.known_batches
                    .insert(pp.value.digest, (*seq, batch.clone()));
            }
        }
        r.bound_known_batches();
        r.restore_view_state(state.view_change, state.new_view)?;
        // Only the current view's votes go into the log; earlier views'
        // votes are in the prepared certificates.
        let current = |key: &(View, SeqNo)| key.0 == view && key.1 > low;
        let mut highest_own = low;
        for ((_, seq), (pre_prepare, batch)) in
            state.pre_prepares.into_iter().filter(|(k, _)| current(k))
        {
            let digest =
                batch_digest(&batch).map_err(|_| RestoreError::BatchDigestMismatch(seq))?;
            if digest != pre_prepare.value.digest {
                return Err(RestoreError::BatchDigestMismatch(seq));
            }
            if pre_prepare.signer != r.config.primary(view) {
                return Err(RestoreError::BadOwnRecord {
                    kind: "pre-prepare",
                    seq,
                });
            }
            let pp = r
                .keyring
                .verify(pre_prepare)
                .map_err(|_| RestoreError::BadOwnRecord {
                    kind: "pre-prepare",
                    seq,
                })?;
            let own = pp.signer() == id;
            if own {
                highest_own = highest_own.max(seq);
                for q in &batch.requests {
                    r.in_flight.insert((q.signer, q.value.request_no));
                }
            }
            let slot = r.log.entry(seq).or_default();
            slot.pre_prepare = Some(pp);
            slot.batch = Some(batch);
            slot.prepare_signed = true;
            slot.pre_prepare_durable = own;
        }
        for ((_, seq), p) in state.prepares.into_iter().filter(|(k, _)| current(k)) {
            let p = r.own_record(p, "prepare", seq)?;
            let slot = r.log.entry(seq).or_default();
            slot.prepare_signed = true;
            slot.prepares.insert(id, p);
        }
        for ((_, seq), c) in state.commits.into_iter().filter(|(k, _)| current(k)) {
            let c = r.own_record(c, "commit", seq)?;
            let slot = r.log.entry(seq).or_default();
            slot.commit_signed = true;
            slot.commits.insert(id, c.into_signed());
        }
        for (seq, committed) in state.committed.into_iter().filter(|(s, _)| *s > low) {
            let CommittedBatch {
                pre_prepare,
                batch,
                commits,
            } = committed;
            let (pp, cert) = r
                .verify_committed_batch(pre_prepare, &batch, commits)
                .map_err(|reason| RestoreError::InvalidCommittedBatch { seq, reason })?;
            let slot = r.log.entry(seq).or_default();
            slot.pre_prepare = Some(pp);
            slot.batch = Some(batch);
            slot.commit_cert = Some(cert);
            slot.committed = true;
        }
        // PBFT 4.2: the primary never assigns a sequence number of its view
        // twice; it continues after its highest durable pre-prepare.
        r.next_seq = r.next_seq.max(highest_own.next());
        r.highest_seen = r.log.keys().next_back().copied().unwrap_or(low);
        r.execute_ready();
        if r.next_seq <= r.last_executed {
            r.next_seq = r.last_executed.next();
        }
        // The first retransmission tick re-sends the durable votes.
        r.progress_mark = (r.last_executed, r.low);
        r.stats = Stats::default();
        Ok(r)
    }

    /// Installs the stable checkpoint a restore starts from.
    fn restore_stable(&mut self, stable: StableState) -> Result<(), RestoreError> {
        let StableState { cert, snapshot } = stable;
        let seq = cert.value.seq;
        let cert = self
            .keyring
            .verify_cert(cert, self.quorum())
            .map_err(|_| RestoreError::InvalidStableCertificate(seq))?
            .into_cert();
        let bad = |reason: String| RestoreError::BadSnapshot { seq, reason };
        if snapshot_root(&snapshot) != cert.value.state_digest {
            return Err(RestoreError::SnapshotDigestMismatch(seq));
        }
        let decoded = pbft_types::from_canonical_bytes::<Snapshot>(&snapshot, usize::MAX)
            .map_err(|e| bad(e.to_string()))?;
        self.app
            .restore(&decoded.app)
            .map_err(|e| bad(format!("{e:?}")))?;
        self.replies = decoded.replies;
        self.low = seq;
        self.last_executed = seq;
        self.next_seq = seq.next();
        self.stable_cert = Some(cert);
        self.snapshots.insert(seq, snapshot);
        Ok(())
    }

    /// Verifies a record of this replica's own signed message.
    fn own_record<T: pbft_crypto::Signable<Signer = ReplicaId>>(
        &self,
        signed: Signed<T>,
        kind: &'static str,
        seq: SeqNo,
    ) -> Result<Verified<T>, RestoreError> {
        let bad = RestoreError::BadOwnRecord { kind, seq };
        if signed.signer != self.id {
            return Err(bad);
        }
        self.keyring.verify(signed).map_err(|_| bad)
    }

    // ----- accessors -------------------------------------------------------

    /// This replica's id.
    #[must_use]
    pub fn id(&self) -> ReplicaId {
        self.id
    }
    /// The current view.
    #[must_use]
    pub fn view(&self) -> View {
        self.view
    }
    /// Whether this replica is in its view (false while it changes views,
    /// from its VIEW-CHANGE to the NEW-VIEW; PBFT 4.4).
    #[must_use]
    pub fn is_view_active(&self) -> bool {
        self.view_active
    }
    /// Whether this replica is the primary of its view.
    #[must_use]
    pub fn is_primary(&self) -> bool {
        self.config.primary(self.view) == self.id
    }
    /// `h`, the last stable checkpoint.
    #[must_use]
    pub fn low_watermark(&self) -> SeqNo {
        self.low
    }
    /// `H = h + L`.
    #[must_use]
    pub fn high_watermark(&self) -> SeqNo {
        SeqNo(self.low.0.saturating_add(self.params.log_window_seqs))
    }
    /// The last sequence number executed.
    #[must_use]
    pub fn last_executed(&self) -> SeqNo {
        self.last_executed
    }
    /// The proof of the last stable checkpoint (`None` at the start).
    #[must_use]
    pub fn stable_checkpoint(&self) -> Option<&QuorumCert<Checkpoint>> {
        self.stable_cert.as_ref()
    }
    /// Log entries held (sequence numbers with any state).
    #[must_use]
    pub fn log_len(&self) -> usize {
        self.log.len()
    }
    /// Sequence numbers with checkpoint votes held.
    #[must_use]
    pub fn checkpoint_votes_len(&self) -> usize {
        self.checkpoints.len()
    }
    /// Requests held waiting for ordering or execution.
    #[must_use]
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
    /// Messages buffered above the high watermark.
    #[must_use]
    pub fn future_len(&self) -> usize {
        self.future.len()
    }
    /// The application.
    #[must_use]
    pub fn app(&self) -> &A {
        &self.app
    }
    /// The parameters.
    #[must_use]
    pub fn params(&self) -> &Params {
        &self.params
    }
    /// The work counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.stats
    }
    /// The cached reply of a client's last executed request.
    #[must_use]
    pub fn cached_reply(&self, client: ClientId) -> Option<&CachedReply> {
        self.replies.get(&client)
    }

    /// The prepared certificate for `seq` (PBFT 4.4, the set `P`): the
    /// pre-prepare and `2f` matching prepares from distinct backups, or
    /// `None` if the batch did not prepare here. View change (issue 4)
    /// carries these.
    #[must_use]
    pub fn prepared_certificate(&self, seq: SeqNo) -> Option<PreparedCert> {
        let slot = self.log.get(&seq)?;
        let pp = slot.pre_prepare.as_ref()?;
        let votes = self
            .matching_prepares(slot, pp.value())
            .cloned()
            .collect::<Vec<_>>();
        let cert = self.keyring.certify(votes, self.prepare_quorum()).ok()?;
        Some(PreparedCert {
            pre_prepare: pp.signed().clone(),
            prepares: cert.into_cert(),
        })
    }

    // ----- the entry point ---------------------------------------------------

    /// Handles one input at time `now` and returns the outputs, which the
    /// host carries out in order.
    pub fn step(&mut self, now: Time, input: Input) -> Vec<Output> {
        self.now = now;
        match input {
            Input::ClientRequest { from, request } => self.on_client_request(from, request),
            Input::Message { from, message } => self.on_message(from, message),
            Input::TimerFired(timer) => self.on_timer(timer),
            Input::PersistDone(id) => self.on_persist_done(id),
        }
        self.arm_timers();
        std::mem::take(&mut self.outputs)
    }

    fn reject(&mut self, from: Peer, reason: Rejection) {
        self.stats.rejections += 1;
        self.outputs.push(Output::Rejected { from, reason });
    }

    fn quorum(&self) -> usize {
        self.config.quorum()
    }

    /// Prepares needed besides the pre-prepare: `2f` for `n = 3f + 1`.
    fn prepare_quorum(&self) -> usize {
        self.config.quorum().saturating_sub(1)
    }

    fn primary(&self) -> ReplicaId {
        self.config.primary(self.view)
    }

    fn persist(&mut self, records: Vec<PersistRecord>, after: Vec<AfterPersist>) {
        let id = PersistId(self.next_persist);
        self.next_persist += 1;
        if !after.is_empty() {
            self.awaiting_persist.insert(id, after);
        }
        self.outputs.push(Output::Persist { id, records });
    }

    // ----- client requests (PBFT 4.1) ---------------------------------------

    fn on_client_request(&mut self, from: ClientId, request: ClientRequest) {
        let peer = Peer::Client(from);
        if request.signer != from {
            return self.reject(
                peer,
                Rejection::ClientMismatch {
                    from,
                    signer: request.signer,
                },
            );
        }
        self.admit_request(peer, request);
    }

    /// PBFT 4.1: a client request a backup relayed, because the client
    /// retransmitted it to every replica and the backup waited a whole
    /// retransmission interval without seeing it executed. The client's
    /// authenticator travels with it, so the primary checks it in full
    /// before it holds it (a signature too, not later in a batch: a relay
    /// is rare, and a forged copy must not hold the request number's place
    /// in `pending`).
    /// Under [`RequestAuth::Channel`] nothing but the client's own channel
    /// vouches for a request, so relays are refused.
    fn on_relayed_request(&mut self, from: ReplicaId, request: ClientRequest) {
        let peer = Peer::Replica(from);
        if self.params.request_auth == RequestAuth::Channel {
            return self.reject(peer, Rejection::Unsupported("relayed request"));
        }
        if !self.view_active {
            let view = self.view;
            return self.reject(peer, Rejection::ViewChangeInProgress { view });
        }
        if !self.is_primary() {
            let primary = self.primary();
            return self.reject(peer, Rejection::RelayedToBackup { primary });
        }
        let window_end = self
            .relays_received_since
            .plus_us(self.params.retransmit_interval_us);
        if self.now >= window_end {
            self.relays_received.clear();
            self.relays_received_since = self.now;
        }
        let taken = self.relays_received.entry(from).or_insert(0);
        if *taken >= RELAYED_REQUESTS_RECEIVED_PER_INTERVAL_MAX {
            return self.reject(peer, Rejection::Full("relayed_requests"));
        }
        *taken += 1;
        self.admit_request(peer, request);
    }

    /// The checks every request passes, from its client or relayed by a
    /// backup (`peer`), before it waits in `pending`.
    fn admit_request(&mut self, peer: Peer, request: ClientRequest) {
        let from = request.signer;
        let relayed = matches!(peer, Peer::Replica(_));
        if self.config.client(from).is_none() {
            return self.reject(peer, Rejection::UnknownClient(from));
        }
        let size = request.value.op.len();
        if size > self.params.request_op_bytes_max {
            let max = self.params.request_op_bytes_max;
            return self.reject(peer, Rejection::RequestTooLarge { max, got: size });
        }
        let no = request.value.request_no;
        if let Authenticator::Macs(_) = &request.auth {
            // TOCS 3.2: this replica's entry of the authenticator, checked
            // at once (it is cheap), so that what waits in `pending` is
            // authentic here.
            if !self.params.request_auth.accepts_macs() {
                return self.reject(
                    peer,
                    Rejection::AuthenticatorNotAccepted {
                        client: from,
                        request_no: no,
                        kind: "MACs",
                    },
                );
            }
            self.stats.request_macs_verified += 1;
            if self.request_verifier.verify(&request).is_err() {
                return self.reject(
                    peer,
                    Rejection::BadRequestMac {
                        client: from,
                        request_no: no,
                    },
                );
            }
        }
        if let Some(cached) = self.replies.get(&from) {
            if no == cached.request_no && relayed {
                // The backup that relayed it answers the client itself.
                return self.reject(peer, Rejection::Duplicate);
            }
            if no == cached.request_no {
                // PBFT 4.1: a retransmitted request gets the stored reply again.
                let reply = Reply {
                    view: self.view,
                    client: from,
                    request_no: no,
                    replica: self.id,
                    result: cached.result.clone(),
                };
                self.outputs.push(Output::Reply {
                    client: from,
                    reply,
                });
                return;
            }
            if no < cached.request_no {
                let last = cached.request_no;
                return self.reject(
                    peer,
                    Rejection::StaleRequest {
                        client: from,
                        last,
                        got: no,
                    },
                );
            }
        }
        if let (Some(arrival), false) = (self.pending.arrival(from, no), relayed) {
            if arrival < self.relay_from && self.relays_requests() && self.relay_budget > 0 {
                // PBFT 4.1: the client retransmitted a request this backup
                // relayed already and still waits for; the relay may have
                // been lost (or the primary restarted), so relay it again.
                // The client's backoff paces this, the budget bounds it.
                self.relay_budget -= 1;
                self.stats.requests_relayed += 1;
                let to = self.primary();
                self.outputs.push(Output::Send {
                    to,
                    message: Message::Request(request),
                });
                return;
            }
        }
        if self.pending.contains(from, no) || self.in_flight.contains(&(from, no)) {
            return self.reject(peer, Rejection::Duplicate);
        }
        if self.pending.len() >= self.params.pending_requests_max {
            return self.reject(peer, Rejection::Full("pending_requests"));
        }
        if self.pending.client_len(from) >= self.params.client_pending_requests_max {
            return self.reject(peer, Rejection::Full("client_pending_requests"));
        }
        let signed = matches!(request.auth, Authenticator::Signature(_));
        if relayed && signed {
            // Checked last: the cheap checks above turn most copies away.
            self.stats.request_signatures_verified += 1;
            if self.request_verifier.verify(&request).is_err() {
                let request_no = no;
                let client = from;
                return self.reject(peer, Rejection::BadRequestSignature { client, request_no });
            }
        }
        // A relayed request's signature is not checked again in its batch.
        self.pending.insert(request, relayed && signed);
        if self.is_primary() {
            if self.batch_deadline.is_none() {
                self.batch_deadline = Some(self.now.plus_us(self.params.batch_delay_us_max));
            }
            self.try_propose();
        } else if !self.parked.is_empty() {
            self.retry_parked();
        }
    }

    // ----- the primary: batching and pre-prepare (PBFT 4.2, TOCS 5.1.4) -----

    fn can_propose(&self) -> bool {
        let in_flight = self.next_seq.0.saturating_sub(self.last_executed.0 + 1);
        self.is_primary()
            && self.view_active
            && self.next_seq <= self.high_watermark()
            && in_flight < self.params.pipeline_batches_max
    }

    /// Closes batches while the pipeline and the window allow: a full batch
    /// at once, a partial one when `batch_delay_us_max` has passed or (with
    /// `propose_when_idle`) when no batch is in flight.
    fn try_propose(&mut self) {
        while !self.pending.is_empty() && self.can_propose() {
            let full = self.pending.len() >= self.params.batch_requests_max;
            let due = self.batch_deadline.is_some_and(|d| d <= self.now);
            let idle = self.params.propose_when_idle && self.next_seq.0 <= self.last_executed.0 + 1;
            if !full && !due && !idle {
                break;
            }
            let candidates = self.pending.take_front(self.params.batch_requests_max);
            let requests = self.authentic_requests(candidates);
            if !requests.is_empty() {
                self.propose(Batch { requests });
            }
            self.batch_deadline = (!self.pending.is_empty())
                .then(|| self.now.plus_us(self.params.batch_delay_us_max));
        }
    }

    /// The primary's check of requests: not stale, and (with client
    /// signatures) verified in one batch.
    fn authentic_requests(&mut self, candidates: Vec<(ClientRequest, bool)>) -> Vec<ClientRequest> {
        let fresh: Vec<(ClientRequest, bool)> = candidates
            .into_iter()
            .filter(|(r, _)| {
                let last = self
                    .replies
                    .get(&r.signer)
                    .map_or(RequestNo(0), |c| c.request_no);
                r.value.request_no > last
                    && !self.in_flight.contains(&(r.signer, r.value.request_no))
            })
            .collect();
        if self.params.request_auth == RequestAuth::Channel || fresh.is_empty() {
            return fresh.into_iter().map(|(r, _)| r).collect();
        }
        self.verified_client_requests(fresh)
    }

    /// Client signatures checked in one ed25519 batch: the authentic
    /// requests in their order; each forged one is rejected with
    /// [`Rejection::BadRequestSignature`]. Requests with MACs were checked
    /// when they arrived (`on_client_request`), and requests marked `true`
    /// had their signature checked here before; both pass unchanged.
    fn verified_client_requests(
        &mut self,
        requests: Vec<(ClientRequest, bool)>,
    ) -> Vec<ClientRequest> {
        let unchecked = |r: &ClientRequest, checked: bool| {
            !checked && matches!(r.auth, Authenticator::Signature(_))
        };
        let signed: Vec<&ClientRequest> = requests
            .iter()
            .filter(|(r, checked)| unchecked(r, *checked))
            .map(|(r, _)| r)
            .collect();
        if signed.is_empty() {
            return requests.into_iter().map(|(r, _)| r).collect();
        }
        self.stats.request_signatures_verified += signed.len() as u64;
        let mut verdicts = self.request_verifier.verify_many(signed).into_iter();
        let mut out = Vec::with_capacity(requests.len());
        for (r, checked) in requests {
            let forged = unchecked(&r, checked) && verdicts.next().is_some_and(|v| v.is_err());
            if forged {
                let (client, request_no) = (r.signer, r.value.request_no);
                self.reject(
                    Peer::Client(client),
                    Rejection::BadRequestSignature { client, request_no },
                );
            } else {
                out.push(r);
            }
        }
        out
    }

    fn propose(&mut self, batch: Batch) {
        let seq = self.next_seq;
        let digest = match batch_digest(&batch) {
            Ok(d) => d,
            Err(e) => return self.reject(Peer::Host, Rejection::Internal(e.to_string())),
        };
        self.stats.batch_digests += 1;
        let pp = match self.signer.sign_verified(PrePrepare {
            view: self.view,
            seq,
            digest,
        }) {
            Ok(pp) => pp,
            Err(e) => return self.reject(Peer::Host, Rejection::Internal(e.to_string())),
        };
        self.stats.signatures_made += 1;
        self.next_seq = seq.next();
        for r in &batch.requests {
            self.in_flight.insert((r.signer, r.value.request_no));
        }
        let record = PersistRecord::PrePrepare {
            pre_prepare: pp.signed().clone(),
            batch: batch.clone(),
        };
        let slot = self.log.entry(seq).or_default();
        slot.pre_prepare = Some(pp);
        slot.batch = Some(batch);
        slot.prepare_signed = true;
        // Persist before send: the pre-prepare leaves once it is durable.
        self.persist(vec![record], vec![AfterPersist::BroadcastPrePrepare(seq)]);
    }

    // ----- replica messages -------------------------------------------------

    fn on_message(&mut self, from: ReplicaId, message: Message) {
        let peer = Peer::Replica(from);
        if self.config.replica(from).is_none() {
            return self.reject(peer, Rejection::UnknownReplica(from));
        }
        match message {
            Message::PrePrepare { pre_prepare, batch } => {
                self.on_pre_prepare(from, pre_prepare, batch)
            }
            Message::Prepare(p) => self.on_prepare(from, p),
            Message::Commit(c) => self.on_commit(from, c),
            Message::Checkpoint(c) => self.on_checkpoint(from, c),
            Message::Fetch(f) => self.on_fetch(from, f),
            Message::FetchResponse(r) => self.on_fetch_response(from, r),
            Message::ViewChange(vc) => self.on_view_change(from, vc),
            Message::NewView(nv) => self.on_new_view(from, nv),
            Message::Request(r) => self.on_relayed_request(from, r),
            other => self.reject(peer, Rejection::Unsupported(other.kind_name())),
        }
    }

    /// Checks view and window of a normal-case message. `Ok(false)` means
    /// the message was buffered for later (above the high watermark).
    fn admit(
        &mut self,
        from: ReplicaId,
        view: View,
        seq: SeqNo,
        message: &Message,
    ) -> Result<bool, Rejection> {
        if view != self.view {
            if view > self.view {
                self.ask_new_view(from, view);
            } else {
                // A replica that moved to a view alone (its VIEW-CHANGE
                // found no quorum, e.g. it was cut off when its timer
                // fired) waits for a NEW-VIEW that may never come, while
                // the others go on in a lower view. It must not vote
                // there (PBFT 4.4), but committed batches are final in
                // every view: noting how far the others are lets its
                // retransmission tick fetch them with their commit
                // certificates, so its state keeps up until it rejoins.
                // Clamped to the window: unverified input moves only what
                // is fetched next, once per interval.
                self.highest_seen = self.highest_seen.max(seq.min(self.high_watermark()));
            }
            return Err(Rejection::WrongView {
                expected: self.view,
                got: view,
            });
        }
        if !self.view_active {
            return Err(Rejection::ViewChangeInProgress { view });
        }
        self.admit_seq(from, seq, message)
    }

    fn admit_seq(
        &mut self,
        from: ReplicaId,
        seq: SeqNo,
        message: &Message,
    ) -> Result<bool, Rejection> {
        let (low, high) = (self.low, self.high_watermark());
        self.highest_seen = self.highest_seen.max(seq);
        if seq <= low {
            return Err(Rejection::OutsideWindow {
                low,
                high,
                got: seq,
            });
        }
        if seq > high {
            // Bounded per sender: a flood from one peer cannot push out others.
            let per_peer = (self.params.future_messages_max / self.config.n().max(1)).max(1);
            let count = self.future_by_peer.entry(from).or_default();
            if *count >= per_peer || seq.0 > high.0.saturating_add(self.params.log_window_seqs) {
                return Err(Rejection::OutsideWindow {
                    low,
                    high,
                    got: seq,
                });
            }
            *count += 1;
            self.future.push_back((from, message.clone()));
            return Ok(false);
        }
        Ok(true)
    }

    /// PBFT 4.2: a backup accepts a pre-prepare if it is signed by the
    /// primary of the current view, in the window, its digest matches the
    /// batch, no other digest was accepted at (v, n), and every request is
    /// authentic.
    fn on_pre_prepare(&mut self, from: ReplicaId, signed: Signed<PrePrepare>, batch: Batch) {
        let peer = Peer::Replica(from);
        if let Err(reason) = self.check_pre_prepare(from, &signed, &batch) {
            if signed.value.view > self.view && signed.signer == from {
                self.ask_new_view(from, signed.value.view);
            }
            return self.reject(peer, reason);
        }
        let (view, seq) = (signed.value.view, signed.value.seq);
        let message = Message::PrePrepare {
            pre_prepare: signed,
            batch,
        };
        match self.admit(from, view, seq, &message) {
            Err(reason) => return self.reject(peer, reason),
            Ok(false) => return,
            Ok(true) => {}
        }
        let Message::PrePrepare {
            pre_prepare: signed,
            batch,
        } = message
        else {
            return;
        };
        if let Some(slot) = self.log.get(&seq) {
            if let Some(existing) = &slot.pre_prepare {
                let reason = if existing.value().digest == signed.value.digest {
                    Rejection::Duplicate
                } else {
                    // PBFT 4.2: no other digest at the same view and sequence number.
                    Rejection::ConflictingPrePrepare { view, seq }
                };
                return self.reject(peer, reason);
            }
            if slot.committed {
                return self.reject(peer, Rejection::Duplicate);
            }
            // A restored replica may hold its own vote without the
            // pre-prepare: never vote a second digest at (v, n) (PBFT 4.2).
            let own_digest = slot
                .prepares
                .get(&self.id)
                .map(|p| (p.value().view, p.value().digest))
                .or_else(|| {
                    slot.commits
                        .get(&self.id)
                        .map(|c| (c.value.view, c.value.digest))
                });
            if own_digest.is_some_and(|(v, d)| v == view && d != signed.value.digest) {
                return self.reject(peer, Rejection::ConflictingPrePrepare { view, seq });
            }
        }
        if self.parked.contains_key(&seq) {
            return self.reject(peer, Rejection::Duplicate);
        }
        let computed = match batch_digest(&batch) {
            Ok(d) => d,
            Err(e) => return self.reject(peer, Rejection::Internal(e.to_string())),
        };
        self.stats.batch_digests += 1;
        if computed != signed.value.digest {
            return self.reject(
                peer,
                Rejection::DigestMismatch {
                    expected: signed.value.digest,
                    got: computed,
                },
            );
        }
        self.stats.signatures_verified += 1;
        let pp = match self.keyring.verify(signed) {
            Ok(pp) => pp,
            Err(_) => return self.reject(peer, Rejection::BadSignature),
        };
        let missing = match self.params.request_auth {
            RequestAuth::ClientSignatures | RequestAuth::Macs => {
                match self.verify_requests(&batch) {
                    Ok(missing) => missing,
                    Err(reason) => return self.reject(peer, reason),
                }
            }
            RequestAuth::Channel => self.unheld(&batch),
        };
        if missing.is_empty() {
            return self.accept_pre_prepare(pp, batch);
        }
        if self.parked.len() >= self.params.parked_pre_prepares_max {
            return self.reject(peer, Rejection::Full("parked_pre_prepares"));
        }
        self.parked.insert(
            seq,
            Parked {
                pre_prepare: pp,
                batch,
                missing,
            },
        );
        // Prepares of other backups may have arrived first.
        self.accept_if_vouched(seq);
    }

    /// Cheap structural checks, before any hashing or signature check.
    fn check_pre_prepare(
        &self,
        from: ReplicaId,
        signed: &Signed<PrePrepare>,
        batch: &Batch,
    ) -> Result<(), Rejection> {
        if signed.signer != from {
            return Err(Rejection::SignerMismatch {
                from,
                signer: signed.signer,
            });
        }
        if signed.value.view != self.view {
            return Err(Rejection::WrongView {
                expected: self.view,
                got: signed.value.view,
            });
        }
        if !self.view_active {
            return Err(Rejection::ViewChangeInProgress { view: self.view });
        }
        let primary = self.config.primary(signed.value.view);
        if from != primary || from == self.id {
            return Err(Rejection::NotPrimary {
                expected: primary,
                got: from,
            });
        }
        let count = batch.requests.len();
        if count == 0 || count > self.params.batch_requests_max {
            return Err(Rejection::MalformedBatch("request count out of bounds"));
        }
        let mut seen = BTreeSet::new();
        for r in &batch.requests {
            if r.value.op.len() > self.params.request_op_bytes_max {
                let max = self.params.request_op_bytes_max;
                return Err(Rejection::RequestTooLarge {
                    max,
                    got: r.value.op.len(),
                });
            }
            if !seen.insert((r.signer, r.value.request_no)) {
                return Err(Rejection::MalformedBatch("a request appears twice"));
            }
        }
        Ok(())
    }

    /// The requests of a batch this backup did not receive itself from
    /// their clients, checked: a request it holds, identical, came over
    /// that client's authenticated channel (the node binds the channel's
    /// certificate to the client id, and `on_client_request` to the
    /// request's signer, PBFT 4.1, TOCS 3.2), so it is not checked again.
    /// Signatures are checked with ed25519 batch verification; a bad one is
    /// transferable evidence (a correct primary checks every signature
    /// before it proposes) and the pre-prepare is refused. A bad MAC entry
    /// proves nothing (the client may have made it bad for this replica
    /// only): those requests are returned as missing, by index, and the
    /// pre-prepare waits for `f + 1` other backups to vouch for it.
    fn verify_requests(&mut self, batch: &Batch) -> Result<Vec<usize>, Rejection> {
        let unheld: Vec<(usize, &ClientRequest)> = batch
            .requests
            .iter()
            .enumerate()
            .filter(|(_, r)| !self.holds(r))
            .collect();
        if unheld.is_empty() {
            return Ok(Vec::new());
        }
        let mut missing = Vec::new();
        for (_, r) in &unheld {
            match r.auth {
                Authenticator::Signature(_) => self.stats.request_signatures_verified += 1,
                Authenticator::Macs(_) if !self.params.request_auth.accepts_macs() => {
                    return Err(Rejection::AuthenticatorNotAccepted {
                        client: r.signer,
                        request_no: r.value.request_no,
                        kind: "MACs",
                    })
                }
                Authenticator::Macs(_) => self.stats.request_macs_verified += 1,
            }
        }
        let verdicts = self
            .request_verifier
            .verify_many(unheld.iter().map(|(_, r)| *r));
        for ((i, r), verdict) in unheld.iter().zip(verdicts) {
            match (verdict, &r.auth) {
                (Ok(()), _) => {}
                (Err(_), Authenticator::Signature(_)) => {
                    return Err(Rejection::BadRequestSignature {
                        client: r.signer,
                        request_no: r.value.request_no,
                    })
                }
                (Err(_), Authenticator::Macs(_)) => missing.push(*i),
            }
        }
        Ok(missing)
    }

    /// Whether this replica received `request`, identical, from its client.
    fn holds(&self, request: &ClientRequest) -> bool {
        self.pending
            .get(request.signer, request.value.request_no)
            .is_some_and(|held| held.value == request.value)
    }

    fn executed(&self, request: &ClientRequest) -> bool {
        self.replies
            .get(&request.signer)
            .is_some_and(|c| request.value.request_no <= c.request_no)
    }

    /// [`RequestAuth::Channel`]: the requests of a batch this replica did
    /// not receive from their clients (executed ones excepted: execution
    /// skips them).
    fn unheld(&self, batch: &Batch) -> Vec<usize> {
        batch
            .requests
            .iter()
            .enumerate()
            .filter(|(_, r)| !self.executed(r) && !self.holds(r))
            .map(|(i, _)| i)
            .collect()
    }

    /// A parked pre-prepare is ready once every request it lacked arrived
    /// from its client (or executed meanwhile).
    fn parked_ready(&self, p: &Parked) -> bool {
        p.missing.iter().all(|i| {
            p.batch
                .requests
                .get(*i)
                .is_none_or(|r| self.executed(r) || self.holds(r))
        })
    }

    /// TOCS 3.2: `f + 1` backups other than this one prepared the parked
    /// pre-prepare at `seq`. At least one of them is correct and accepted
    /// it only after authenticating every request itself, so the batch is
    /// authentic although this replica could not check all of it.
    fn accept_if_vouched(&mut self, seq: SeqNo) {
        let Some(p) = self.parked.get(&seq) else {
            return;
        };
        let pp = p.pre_prepare.value();
        // Counted on the channel's word: `f + 1` distinct replicas include
        // a correct one (the signatures matter only in a certificate).
        let primary = self.config.primary(pp.view);
        let vouchers = self.log.get(&seq).map_or(0, |slot| {
            self.matching_prepares(slot, pp)
                .filter(|v| v.signer() != self.id)
                .count()
                + Self::matching_unchecked(slot, pp, primary)
                    .iter()
                    .filter(|id| **id != self.id)
                    .count()
        });
        if vouchers > self.config.f() {
            if let Some(p) = self.parked.remove(&seq) {
                self.stats.pre_prepares_vouched += 1;
                self.accept_pre_prepare(p.pre_prepare, p.batch);
            }
        }
    }

    fn retry_parked(&mut self) {
        let ready: Vec<SeqNo> = self
            .parked
            .iter()
            .filter(|(_, p)| self.parked_ready(p))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in ready {
            if let Some(p) = self.parked.remove(&seq) {
                if seq > self.low
                    && !self
                        .log
                        .get(&seq)
                        .is_some_and(|s| s.pre_prepare.is_some() || s.committed)
                {
                    self.accept_pre_prepare(p.pre_prepare, p.batch);
                }
            }
        }
    }

    /// PBFT 4.2: the backup enters the pre-prepare and its batch in the log
    /// and, once both and its prepare are durable, multicasts the prepare.
    fn accept_pre_prepare(&mut self, pp: Verified<PrePrepare>, batch: Batch) {
        let PrePrepare { view, seq, digest } = pp.value().clone();
        let prepare = match self.signer.sign_verified(Prepare { view, seq, digest }) {
            Ok(p) => p,
            Err(e) => return self.reject(Peer::Host, Rejection::Internal(e.to_string())),
        };
        self.stats.signatures_made += 1;
        let records = vec![
            PersistRecord::PrePrepare {
                pre_prepare: pp.signed().clone(),
                batch: batch.clone(),
            },
            PersistRecord::Prepare(prepare.signed().clone()),
        ];
        let slot = self.log.entry(seq).or_default();
        slot.pre_prepare = Some(pp);
        slot.batch = Some(batch);
        slot.prepare_signed = true;
        slot.own_prepare_persisting = true;
        self.persist(records, vec![AfterPersist::Prepare(prepare)]);
        self.advance(seq);
    }

    /// PBFT 4.2: prepares from distinct backups, for the current view and
    /// the window; the first vote of a replica at a sequence number counts.
    fn on_prepare(&mut self, from: ReplicaId, signed: Signed<Prepare>) {
        let peer = Peer::Replica(from);
        if signed.signer != from {
            return self.reject(
                peer,
                Rejection::SignerMismatch {
                    from,
                    signer: signed.signer,
                },
            );
        }
        if from == self.primary() {
            return self.reject(peer, Rejection::PrepareFromPrimary(from));
        }
        let (view, seq) = (signed.value.view, signed.value.seq);
        let message = Message::Prepare(signed);
        match self.admit(from, view, seq, &message) {
            Err(reason) => return self.reject(peer, reason),
            Ok(false) => return,
            Ok(true) => {}
        }
        let Message::Prepare(signed) = message else {
            return;
        };
        // A vote whose signature was checked already: the same again is a
        // duplicate, another one a conflicting vote.
        let checked = self
            .log
            .get(&seq)
            .and_then(|slot| slot.prepares.get(&from))
            .map(|existing| *existing.value() == signed.value);
        if let Some(same) = checked {
            let reason = if same {
                Rejection::Duplicate
            } else {
                Rejection::ConflictingVote { replica: from, seq }
            };
            return self.reject(peer, reason);
        }
        // Counted on the channel's word; the signature is checked when a
        // prepared certificate needs it (`check_prepares`, PROTOCOL 19).
        self.record_vote(
            from,
            seq,
            signed,
            |slot| &mut slot.prepares_unchecked,
            |_, p| Some(p),
        );
        if self.parked.contains_key(&seq) {
            self.accept_if_vouched(seq);
        }
    }

    /// PBFT 4.2: commits from distinct replicas (the primary included).
    fn on_commit(&mut self, from: ReplicaId, signed: Signed<Commit>) {
        let peer = Peer::Replica(from);
        if signed.signer != from {
            return self.reject(
                peer,
                Rejection::SignerMismatch {
                    from,
                    signer: signed.signer,
                },
            );
        }
        let (view, seq) = (signed.value.view, signed.value.seq);
        let message = Message::Commit(signed);
        match self.admit(from, view, seq, &message) {
            Err(reason) => return self.reject(peer, reason),
            Ok(false) => return,
            Ok(true) => {}
        }
        let Message::Commit(signed) = message else {
            return;
        };
        // Counted on the channel's word: no signature check here.
        self.record_vote(from, seq, signed, |slot| &mut slot.commits, |_, c| Some(c));
    }

    /// PBFT 4.2: what accepting a prepare and a commit share. A vote counts
    /// once per replica: the same vote again is a duplicate, a different
    /// one at the same sequence number a conflicting vote; `admit` may
    /// refuse a vote (`None`: a bad signature), then the slot may advance.
    fn record_vote<T, V: AsRef<T>>(
        &mut self,
        from: ReplicaId,
        seq: SeqNo,
        signed: Signed<T>,
        votes: fn(&mut Slot) -> &mut BTreeMap<ReplicaId, V>,
        admit: fn(&mut Self, Signed<T>) -> Option<V>,
    ) where
        T: Signable<Signer = ReplicaId> + PartialEq,
    {
        let peer = Peer::Replica(from);
        let earlier = self
            .log
            .get_mut(&seq)
            .and_then(|slot| votes(slot).get(&from))
            .map(|existing| *existing.as_ref() == signed.value);
        if let Some(same) = earlier {
            let reason = if same {
                Rejection::Duplicate
            } else {
                Rejection::ConflictingVote { replica: from, seq }
            };
            return self.reject(peer, reason);
        }
        let Some(vote) = admit(self, signed) else {
            return self.reject(peer, Rejection::BadSignature);
        };
        votes(self.log.entry(seq).or_default()).insert(from, vote);
        self.advance(seq);
    }

    fn matching_prepares<'a>(
        &'a self,
        slot: &'a Slot,
        pp: &'a PrePrepare,
    ) -> impl Iterator<Item = &'a Verified<Prepare>> + 'a {
        let primary = self.config.primary(pp.view);
        slot.prepares.values().filter(move |p| {
            p.signer() != primary && p.value().view == pp.view && p.value().digest == pp.digest
        })
    }

    /// The replicas whose unchecked prepares match `pp`, in id order.
    fn matching_unchecked(slot: &Slot, pp: &PrePrepare, primary: ReplicaId) -> Vec<ReplicaId> {
        slot.prepares_unchecked
            .values()
            .filter(|p| {
                p.signer != primary && p.value.view == pp.view && p.value.digest == pp.digest
            })
            .map(|p| p.signer)
            .collect()
    }

    /// PBFT 4.2 with PROTOCOL 19: prepares count on the authenticated
    /// channel's word, but a prepared certificate holds only prepares whose
    /// signatures this replica checked, because the certificate may leave
    /// as proof in a VIEW-CHANGE (PBFT 4.4) and a correct replica sends only
    /// certificates that verify. So once the checked and unchecked matching
    /// prepares reach `2f`, just the missing number of unchecked ones is
    /// checked, in one batch; a bad one is refused (`BadSignature`) and the
    /// slot waits for another. A backup whose own prepare is on its way to
    /// disk waits for it (it counts without a check), so prepares beyond
    /// the `2f` needed are never checked: two checks per batch fewer at each
    /// replica for `n = 4`.
    fn check_prepares(&mut self, seq: SeqNo) {
        // Each round either fills the quorum or refuses at least one vote.
        for _ in 0..=self.config.n() {
            let Some(slot) = self.log.get(&seq) else {
                return;
            };
            let Some(pp) = slot.pre_prepare.as_ref() else {
                return;
            };
            let pp = pp.value();
            let primary = self.config.primary(pp.view);
            let missing = self
                .prepare_quorum()
                .saturating_sub(self.matching_prepares(slot, pp).count());
            if missing == 0 || slot.own_prepare_persisting {
                return;
            }
            let candidates = Self::matching_unchecked(slot, pp, primary);
            if candidates.len() < missing {
                return;
            }
            let Some(slot) = self.log.get_mut(&seq) else {
                return;
            };
            let votes: Vec<Signed<Prepare>> = candidates
                .iter()
                .take(missing)
                .filter_map(|id| slot.prepares_unchecked.remove(id))
                .collect();
            self.stats.signatures_verified += votes.len() as u64;
            let signers: Vec<ReplicaId> = votes.iter().map(|v| v.signer).collect();
            let verdicts = self.keyring.verify_batch(votes);
            let mut refused = Vec::new();
            for (signer, verdict) in signers.into_iter().zip(verdicts) {
                match verdict {
                    Ok(p) => {
                        if let Some(slot) = self.log.get_mut(&seq) {
                            slot.prepares.insert(signer, p);
                        }
                    }
                    Err(_) => refused.push(signer),
                }
            }
            if refused.is_empty() {
                return;
            }
            for signer in refused {
                self.reject(Peer::Replica(signer), Rejection::BadSignature);
            }
        }
    }

    /// PBFT 4.2 `prepared(m, v, n, i)`: the pre-prepare and `2f` matching
    /// prepares from distinct backups. In the normal case the batch came
    /// with the pre-prepare; a re-proposal of a NEW-VIEW may prepare by
    /// digest while its batch is fetched (execution waits for it).
    fn is_prepared(&self, slot: &Slot) -> bool {
        match &slot.pre_prepare {
            Some(pp) => self.matching_prepares(slot, pp.value()).count() >= self.prepare_quorum(),
            None => false,
        }
    }

    /// PBFT 4.2 `committed-local(m, v, n, i)`: prepared, and `2f + 1`
    /// matching commits from distinct replicas, this replica's own (durable)
    /// commit among them.
    fn is_committed_local(&self, slot: &Slot) -> bool {
        let Some(pp) = &slot.pre_prepare else {
            return false;
        };
        let pp = pp.value();
        slot.commits.contains_key(&self.id)
            && slot
                .commits
                .values()
                .filter(|c| c.value.view == pp.view && c.value.digest == pp.digest)
                .count()
                >= self.quorum()
            && self.is_prepared(slot)
    }

    /// Moves a sequence number forward: commit once prepared, execute once
    /// committed-local.
    fn advance(&mut self, seq: SeqNo) {
        let Some(slot) = self.log.get(&seq) else {
            return;
        };
        if slot.committed {
            return;
        }
        if !self.is_prepared(slot) {
            self.check_prepares(seq);
        }
        let Some(slot) = self.log.get(&seq) else {
            return;
        };
        if !slot.commit_signed && self.is_prepared(slot) {
            let Some(pp) = slot.pre_prepare.as_ref() else {
                return;
            };
            let PrePrepare { view, seq, digest } = pp.value().clone();
            // PBFT 4.2: a prepared replica multicasts its commit.
            let commit = match self.signer.sign_verified(Commit { view, seq, digest }) {
                Ok(c) => c,
                Err(e) => return self.reject(Peer::Host, Rejection::Internal(e.to_string())),
            };
            self.stats.signatures_made += 1;
            if let Some(slot) = self.log.get_mut(&seq) {
                slot.commit_signed = true;
            }
            let mut records = vec![PersistRecord::Commit(commit.signed().clone())];
            // PBFT 4.4: the prepared certificate joins the set P, durable
            // with the commit it justifies.
            if let Some(cert) = self.prepared_certificate(seq) {
                records.push(PersistRecord::PreparedCert(cert.clone()));
                self.prepared_certs.insert(seq, cert);
            }
            self.persist(records, vec![AfterPersist::Commit(commit)]);
            return;
        }
        if self.is_committed_local(slot) {
            if let Some(slot) = self.log.get_mut(&seq) {
                slot.committed = true;
            }
            self.execute_ready();
        }
    }

    // ----- persistence acknowledgements --------------------------------------

    fn on_persist_done(&mut self, id: PersistId) {
        let Some(after) = self.awaiting_persist.remove(&id) else {
            // Persists without dependent messages are not tracked.
            if id.0 >= self.next_persist {
                self.reject(Peer::Host, Rejection::UnknownPersist(id.0));
            }
            return;
        };
        for action in after {
            match action {
                AfterPersist::BroadcastPrePrepare(seq) => {
                    if let Some(slot) = self.log.get_mut(&seq) {
                        slot.pre_prepare_durable = true;
                    }
                    if let Some(message) = self.own_pre_prepare_message(seq) {
                        self.outputs.push(Output::Broadcast(message));
                    }
                }
                AfterPersist::Prepare(p) => {
                    let seq = p.value().seq;
                    if let Some(slot) = self.log.get_mut(&seq) {
                        if slot
                            .pre_prepare
                            .as_ref()
                            .is_some_and(|pp| pp.value().view == p.value().view)
                        {
                            slot.own_prepare_persisting = false;
                        }
                    }
                    if p.value().view != self.view || !self.view_active {
                        continue;
                    }
                    self.outputs
                        .push(Output::Broadcast(Message::Prepare(p.signed().clone())));
                    if seq > self.low {
                        self.log
                            .entry(seq)
                            .or_default()
                            .prepares
                            .entry(self.id)
                            .or_insert(p);
                        self.advance(seq);
                    }
                }
                AfterPersist::Commit(c) => {
                    let seq = c.value().seq;
                    if c.value().view != self.view || !self.view_active {
                        continue;
                    }
                    self.outputs
                        .push(Output::Broadcast(Message::Commit(c.signed().clone())));
                    if seq > self.low {
                        self.log
                            .entry(seq)
                            .or_default()
                            .commits
                            .entry(self.id)
                            .or_insert_with(|| c.into_signed());
                        self.advance(seq);
                    }
                }
                AfterPersist::ViewChange(vc) => {
                    if vc.value().new_view == self.view && !self.view_active {
                        self.outputs
                            .push(Output::Broadcast(Message::ViewChange(vc.signed().clone())));
                    }
                }
                AfterPersist::BroadcastNewView(nv) => {
                    if nv.value.view == self.view {
                        self.outputs.push(Output::Broadcast(Message::NewView(nv)));
                    }
                }
                AfterPersist::Checkpoint(c) => {
                    let seq = c.value().seq;
                    self.outputs
                        .push(Output::Broadcast(Message::Checkpoint(c.signed().clone())));
                    if seq > self.low {
                        self.checkpoints
                            .entry(seq)
                            .or_default()
                            .entry(self.id)
                            .or_insert(c);
                        self.check_stable(seq);
                    }
                }
            }
        }
    }

    fn own_pre_prepare_message(&self, seq: SeqNo) -> Option<Message> {
        let slot = self.log.get(&seq).filter(|s| s.pre_prepare_durable)?;
        let pp = slot
            .pre_prepare
            .as_ref()
            .filter(|pp| pp.signer() == self.id)?;
        Some(Message::PrePrepare {
            pre_prepare: pp.signed().clone(),
            batch: slot.batch.clone()?,
        })
    }

    // ----- execution (PBFT 4.2) and checkpoints (PBFT 4.3) -------------------

    /// Executes committed batches strictly in sequence order.
    fn execute_ready(&mut self) {
        loop {
            let seq = self.last_executed.next();
            let Some(slot) = self.log.get_mut(&seq) else {
                break;
            };
            if !slot.committed || slot.executed {
                break;
            }
            let Some((view, digest)) = slot
                .pre_prepare
                .as_ref()
                .map(|pp| (pp.value().view, pp.value().digest))
            else {
                break;
            };
            let Some(batch) = slot.batch.take() else {
                break;
            };
            slot.executed = true;
            let mut ran = Vec::with_capacity(batch.requests.len());
            for r in &batch.requests {
                let (client, request_no, op) = (r.signer, r.value.request_no, &r.value.op);
                self.in_flight.remove(&(client, request_no));
                self.pending.remove_up_to(client, request_no);
                let last = self
                    .replies
                    .get(&client)
                    .map_or(RequestNo(0), |c| c.request_no);
                if request_no <= last {
                    // Exactly once: a request number already executed is skipped.
                    continue;
                }
                let result = self.app.execute(client, op);
                let reply = Reply {
                    view: self.view,
                    client,
                    request_no,
                    replica: self.id,
                    result: result.clone(),
                };
                self.replies
                    .insert(client, CachedReply { request_no, result });
                self.outputs.push(Output::Reply { client, reply });
                ran.push((client, request_no));
            }
            if let Some(slot) = self.log.get_mut(&seq) {
                slot.batch = Some(batch);
            }
            if !ran.is_empty() && self.view_active {
                // PBFT 4.5: a request executed in this view.
                self.view_change_backoff = 0;
            }
            self.stats.requests_executed += ran.len() as u64;
            self.stats.batches_executed += 1;
            self.last_executed = seq;
            self.outputs.push(Output::Executed {
                seq,
                view,
                digest,
                requests: ran,
            });
            if seq.0 % self.params.checkpoint_interval_seqs == 0 {
                self.take_checkpoint(seq);
            }
        }
        self.update_view_change_timer();
        self.try_propose();
    }

    /// PBFT 4.3: after executing a multiple of K, digest the state (with the
    /// reply table), persist the snapshot, then multicast the checkpoint.
    fn take_checkpoint(&mut self, seq: SeqNo) {
        let snapshot = Snapshot {
            app: self.app.snapshot(),
            replies: self.replies.clone(),
        };
        let snapshot = match pbft_types::to_canonical_bytes(&snapshot) {
            Ok(s) => s,
            Err(e) => return self.reject(Peer::Host, Rejection::Internal(e.to_string())),
        };
        // The state digest is the Merkle root over the snapshot's chunks, so
        // that a replica fetching it checks each chunk (PROTOCOL 25).
        let state_digest = snapshot_root(&snapshot);
        let own = self.checkpoints.get(&seq).and_then(|v| v.get(&self.id));
        if own.is_some_and(|c| c.value().state_digest == state_digest) {
            // Restored: this checkpoint is durable already.
            return self.check_stable(seq);
        }
        let checkpoint = match self.signer.sign_verified(Checkpoint { seq, state_digest }) {
            Ok(c) => c,
            Err(e) => return self.reject(Peer::Host, Rejection::Internal(e.to_string())),
        };
        self.stats.signatures_made += 1;
        self.snapshots.insert(seq, snapshot.clone());
        let record = PersistRecord::Checkpoint {
            checkpoint: checkpoint.signed().clone(),
            snapshot,
        };
        self.persist(vec![record], vec![AfterPersist::Checkpoint(checkpoint)]);
    }

    fn on_checkpoint(&mut self, from: ReplicaId, signed: Signed<Checkpoint>) {
        let peer = Peer::Replica(from);
        if signed.signer != from {
            return self.reject(
                peer,
                Rejection::SignerMismatch {
                    from,
                    signer: signed.signer,
                },
            );
        }
        let seq = signed.value.seq;
        if seq.0 % self.params.checkpoint_interval_seqs != 0 {
            return self.reject(peer, Rejection::NotCheckpointSeq(seq));
        }
        if seq <= self.low {
            // The peer is behind us: our proof lets it move its window too.
            if let Some(cert) = self.stable_cert.clone() {
                let message = Message::FetchResponse(FetchResponse::StableCheckpoint(cert));
                self.outputs.push(Output::Send { to: from, message });
            }
        }
        let message = Message::Checkpoint(signed);
        match self.admit_seq(from, seq, &message) {
            Err(reason) => return self.reject(peer, reason),
            Ok(false) => return,
            Ok(true) => {}
        }
        let Message::Checkpoint(signed) = message else {
            return;
        };
        if let Some(existing) = self.checkpoints.get(&seq).and_then(|v| v.get(&from)) {
            let reason = if *existing.value() == signed.value {
                Rejection::Duplicate
            } else {
                Rejection::ConflictingVote { replica: from, seq }
            };
            return self.reject(peer, reason);
        }
        self.stats.signatures_verified += 1;
        let Ok(checkpoint) = self.keyring.verify(signed) else {
            return self.reject(peer, Rejection::BadSignature);
        };
        self.checkpoints
            .entry(seq)
            .or_default()
            .insert(from, checkpoint);
        self.check_stable(seq);
    }

    /// PBFT 4.3: `2f + 1` matching checkpoints (this replica's own among
    /// them, so its state is the certified one) make a checkpoint stable.
    fn check_stable(&mut self, seq: SeqNo) {
        if seq <= self.low {
            return;
        }
        let Some(votes) = self.checkpoints.get(&seq) else {
            return;
        };
        let Some(own) = votes.get(&self.id) else {
            return;
        };
        let own_digest = own.value().state_digest;
        let mut by_digest: BTreeMap<Digest, Vec<Verified<Checkpoint>>> = BTreeMap::new();
        for v in votes.values() {
            by_digest
                .entry(v.value().state_digest)
                .or_default()
                .push(v.clone());
        }
        let Some((digest, matching)) = by_digest
            .into_iter()
            .find(|(_, v)| v.len() >= self.quorum())
        else {
            return;
        };
        let holders: Vec<ReplicaId> = matching.iter().map(Verified::signer).collect();
        let cert = match self.keyring.certify(matching, self.quorum()) {
            Ok(c) => c.into_cert(),
            Err(e) => return self.reject(Peer::Host, Rejection::Internal(e.to_string())),
        };
        if digest != own_digest {
            // TOCS 6.2: 2f + 1 replicas certify another state at this
            // checkpoint: ours is wrong; repair it by state transfer.
            if self.transfer_seq().is_none_or(|t| t < seq) {
                self.start_transfer(cert, holders, true);
            }
            return;
        }
        self.garbage_collect(seq, digest, cert);
    }

    /// PBFT 4.3: the low watermark moves to the stable checkpoint, and the
    /// log, votes and batches at or below it are discarded.
    fn garbage_collect(&mut self, seq: SeqNo, state_digest: Digest, cert: QuorumCert<Checkpoint>) {
        self.low = seq;
        self.log = self.log.split_off(&seq.next());
        self.checkpoints = self.checkpoints.split_off(&seq.next());
        self.parked = self.parked.split_off(&seq.next());
        self.snapshots = self.snapshots.split_off(&seq);
        self.prepared_certs = self.prepared_certs.split_off(&seq.next());
        self.bound_known_batches();
        if self.transfer_seq().is_some_and(|t| t <= seq) {
            self.transfer = None;
        }
        self.stable_cert = Some(cert.clone());
        if self.next_seq <= seq {
            self.next_seq = seq.next();
        }
        self.persist(vec![PersistRecord::StableCheckpoint(cert)], Vec::new());
        self.outputs
            .push(Output::CheckpointStable { seq, state_digest });
        self.replay_future();
        self.try_propose();
    }

    /// Re-handles buffered messages once the window moved; those still above
    /// it are buffered again.
    fn replay_future(&mut self) {
        let buffered = std::mem::take(&mut self.future);
        self.future_by_peer.clear();
        for (from, message) in buffered {
            self.on_message(from, message);
        }
    }

    // ----- fetching committed batches ------------------------------------------

    /// Serves a committed batch with its proof: the pre-prepare and `2f + 1`
    /// signed commits (PROTOCOL 25).
    fn on_fetch(&mut self, from: ReplicaId, fetch: Fetch) {
        let peer = Peer::Replica(from);
        let response = match fetch {
            Fetch::Batch { seq } => match self.committed_batch_proof(seq) {
                Some(response) => Some(response),
                // Garbage-collected: point the peer at the stable checkpoint.
                None if seq <= self.low => self
                    .stable_cert
                    .clone()
                    .map(FetchResponse::StableCheckpoint),
                None => None,
            },
            Fetch::StableCheckpoint => self
                .stable_cert
                .clone()
                .map(FetchResponse::StableCheckpoint),
            Fetch::SnapshotChunk { seq, chunk } => match self.serve_chunk(seq, chunk) {
                Some(response) => Some(response),
                None => return self.reject(peer, Rejection::NotAvailable(seq)),
            },
            Fetch::PreparedBatch { seq, digest } => self
                .prepared_batch(seq, digest)
                .map(|batch| FetchResponse::PreparedBatch { seq, batch }),
            Fetch::NewView => {
                if let Some(nv) = self.new_view_msg.clone().filter(|_| self.view_active) {
                    self.outputs.push(Output::Send {
                        to: from,
                        message: Message::NewView(nv),
                    });
                }
                return;
            }
        };
        match response {
            Some(response) => self.outputs.push(Output::Send {
                to: from,
                message: Message::FetchResponse(response),
            }),
            None => self.reject(peer, Rejection::NotAvailable(self.last_executed.next())),
        }
    }

    fn committed_batch_proof(&mut self, seq: SeqNo) -> Option<FetchResponse> {
        let cert = self.commit_proof(seq)?;
        let slot = self.log.get(&seq)?;
        Some(FetchResponse::Batch {
            pre_prepare: slot.pre_prepare.as_ref()?.signed().clone(),
            batch: slot.batch.clone()?,
            commits: cert,
        })
    }

    /// The certificate of `2f + 1` signed commits for a committed slot,
    /// made once and kept: the commits were counted on the channel's word
    /// (PROTOCOL 18), so their signatures are checked here, together, and
    /// a bad one (a Byzantine replica's) is left out. `None` if fewer than
    /// a quorum of them verify (the peer asks another replica).
    fn commit_proof(&mut self, seq: SeqNo) -> Option<QuorumCert<Commit>> {
        let slot = self.log.get(&seq).filter(|s| s.committed)?;
        if let Some(cert) = &slot.commit_cert {
            return Some(cert.clone());
        }
        let pp = slot.pre_prepare.as_ref()?.value();
        let votes: Vec<Signed<Commit>> = slot
            .commits
            .values()
            .filter(|c| c.value.view == pp.view && c.value.digest == pp.digest)
            .cloned()
            .collect();
        self.stats.signatures_verified += votes.len() as u64;
        let valid: Vec<Verified<Commit>> = self
            .keyring
            .verify_batch(votes)
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        let cert = self.keyring.certify(valid, self.quorum()).ok()?.into_cert();
        if let Some(slot) = self.log.get_mut(&seq) {
            slot.commit_cert = Some(cert.clone());
        }
        Some(cert)
    }

    fn on_fetch_response(&mut self, from: ReplicaId, response: FetchResponse) {
        let peer = Peer::Replica(from);
        let (pre_prepare, batch, commits) = match response {
            FetchResponse::Batch {
                pre_prepare,
                batch,
                commits,
            } => (pre_prepare, batch, commits),
            FetchResponse::StableCheckpoint(cert) => {
                return self.on_stable_checkpoint_proof(from, cert)
            }
            FetchResponse::SnapshotChunk {
                seq,
                chunk,
                chunk_count,
                data,
                proof,
            } => {
                return self.on_snapshot_chunk(from, seq, chunk, chunk_count, &data, &proof);
            }
            FetchResponse::PreparedBatch { seq, batch } => {
                return self.on_prepared_batch(from, seq, batch)
            }
            FetchResponse::NotAvailable { .. } => return,
        };
        let seq = pre_prepare.value.seq;
        if seq > self.last_executed
            && self
                .log
                .get(&seq)
                .is_some_and(|s| s.committed && s.batch.is_none())
        {
            // Committed here by digest (a NEW-VIEW's re-proposal, PBFT 4.4)
            // while the batch never came: the digest this replica committed
            // is the proof, the batch only has to match it.
            return self.on_prepared_batch(from, seq, batch);
        }
        if seq <= self.last_executed || self.log.get(&seq).is_some_and(|s| s.committed) {
            return self.reject(peer, Rejection::Duplicate);
        }
        let (low, high) = (self.low, self.high_watermark());
        if seq > high {
            return self.reject(
                peer,
                Rejection::OutsideWindow {
                    low,
                    high,
                    got: seq,
                },
            );
        }
        match self.verify_committed_batch(pre_prepare, &batch, commits) {
            Ok((pp, cert)) => self.install_committed(from, pp, batch, cert),
            Err(reason) => self.reject(peer, reason),
        }
    }

    /// A batch proven committed: a pre-prepare of the primary of its view
    /// (no later than ours), the batch's digest, and a certificate of
    /// `2f + 1` commits for the same view, sequence number and digest.
    fn verify_committed_batch(
        &mut self,
        pre_prepare: Signed<PrePrepare>,
        batch: &Batch,
        commits: QuorumCert<Commit>,
    ) -> Result<(Verified<PrePrepare>, QuorumCert<Commit>), Rejection> {
        let PrePrepare { view, seq, digest } = pre_prepare.value.clone();
        if view > self.view || pre_prepare.signer != self.config.primary(view) {
            return Err(Rejection::InvalidProof(
                "pre-prepare not from the primary of its view",
            ));
        }
        if commits.value != (Commit { view, seq, digest }) {
            return Err(Rejection::InvalidProof(
                "commits do not match the pre-prepare",
            ));
        }
        let computed = batch_digest(batch).map_err(|e| Rejection::Internal(e.to_string()))?;
        self.stats.batch_digests += 1;
        if computed != digest {
            return Err(Rejection::DigestMismatch {
                expected: digest,
                got: computed,
            });
        }
        self.stats.signatures_verified += 1;
        let pp = self
            .keyring
            .verify(pre_prepare)
            .map_err(|_| Rejection::BadSignature)?;
        self.stats.certificates_verified += 1;
        let cert = self
            .keyring
            .verify_cert(commits, self.quorum())
            .map_err(|_| Rejection::InvalidProof("commit certificate"))?;
        Ok((pp, cert.into_cert()))
    }

    fn install_committed(
        &mut self,
        from: ReplicaId,
        pp: Verified<PrePrepare>,
        batch: Batch,
        cert: QuorumCert<Commit>,
    ) {
        let seq = pp.value().seq;
        self.persist(
            vec![PersistRecord::CommittedBatch {
                pre_prepare: pp.signed().clone(),
                batch: batch.clone(),
                commits: cert.clone(),
            }],
            Vec::new(),
        );
        self.parked.remove(&seq);
        let slot = self.log.entry(seq).or_default();
        slot.pre_prepare = Some(pp);
        slot.batch = Some(batch);
        slot.commit_cert = Some(cert);
        slot.committed = true;
        self.execute_ready();
        // Catching up: ask the same peer for the next batch if it is not
        // committed here yet and later ones are known to exist, so that a
        // replica behind fetches at the round-trip rate, not once a tick.
        let next = self.last_executed.next();
        if self.known_beyond_executed() && !self.log.get(&next).is_some_and(|s| s.committed) {
            self.outputs.push(Output::Send {
                to: from,
                message: Message::Fetch(Fetch::Batch { seq: next }),
            });
        }
    }

    // ----- timers ----------------------------------------------------------------

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Batch => {
                self.batch_timer_armed = false;
                self.try_propose();
            }
            Timer::Retransmit => {
                self.retransmit_armed = false;
                let mark = (self.last_executed, self.low);
                if mark == self.progress_mark {
                    self.retransmit();
                }
                self.progress_mark = mark;
                self.relay_waiting_requests();
            }
            Timer::ViewChange => {
                self.view_change_armed = false;
                if self.view_active && !self.is_primary() && !self.drop_forged_pending() {
                    // Every request it waited for was forged: nothing
                    // legitimate is late, so the primary is not suspected.
                    return;
                }
                // PBFT 4.4: a backup waited too long for a request; PBFT 4.5:
                // or for the NEW-VIEW of the view it changes to.
                if !self.view_active || !self.is_primary() {
                    self.start_view_change(self.view.next());
                }
            }
        }
    }

    /// A backup holds client requests unverified (the primary verifies them
    /// when it closes a batch, backups when they accept a pre-prepare), so a
    /// client could send requests with forged signatures that no correct
    /// primary will ever order, and make every backup suspect a correct
    /// primary. Before it suspects the primary (PBFT 4.4), a backup
    /// verifies the requests it waits for, in one batch, and drops the
    /// forged ones with [`Rejection::BadRequestSignature`]. Returns whether
    /// an authentic request is still pending. With
    /// [`RequestAuth::Channel`] the channel authenticated them already.
    fn drop_forged_pending(&mut self) -> bool {
        let unchecked = self.pending.has_unchecked_signature();
        if self.params.request_auth == RequestAuth::Channel || !unchecked {
            return !self.pending.is_empty();
        }
        let all = self.pending.take_front(self.pending.len());
        for request in self.verified_client_requests(all) {
            // Authentic: the next timeout does not verify it again.
            let signed = matches!(request.auth, Authenticator::Signature(_));
            self.pending.insert(request, signed);
        }
        !self.pending.is_empty()
    }

    /// Whether some replica's message, or this replica's log, names a
    /// sequence number it has not executed: there is a batch to fetch.
    /// (`highest_seen` counts messages refused for their view: a replica
    /// alone in a higher view keeps up with the others' commits.)
    fn known_beyond_executed(&self) -> bool {
        let next = self.last_executed.next();
        self.log.range(next..).next().is_some()
            || self.checkpoints.range(next..).next().is_some()
            || self.highest_seen >= next
    }

    /// Whether something this replica took part in is not finished: a batch
    /// not executed, or a checkpoint of its own not stable.
    fn has_outstanding_work(&self) -> bool {
        self.log.range(self.last_executed.next()..).next().is_some()
            || self.highest_seen > self.last_executed
            || self.next_seq.0 > self.last_executed.0 + 1
            || self
                .checkpoints
                .range(self.low.next()..)
                .any(|(_, v)| v.contains_key(&self.id))
            || !self.parked.is_empty()
            || !self.view_active
            || self.transfer.is_some()
            || (self.relays_requests() && !self.pending.is_empty())
    }

    /// Whether this replica relays the client requests it holds to the
    /// primary (PBFT 4.1): a backup in an active view, where requests carry
    /// their clients' authenticators.
    fn relays_requests(&self) -> bool {
        self.view_active && !self.is_primary() && self.params.request_auth != RequestAuth::Channel
    }

    /// PBFT 4.1: a backup relays to the primary each client request it has
    /// held for a whole retransmission interval (it reached the backup,
    /// through the client's retransmission to every replica, and is not
    /// executed yet), once per view, at most
    /// [`RELAYED_REQUESTS_PER_INTERVAL_MAX`] per interval (a client's
    /// retransmission of a request relayed already is relayed again at
    /// once, within the same budget). Not at once: a client
    /// that sends every request to every replica
    /// (`send_to_all_replicas`) would have the backups flood the primary
    /// with copies of what it already has, and in a healthy cluster a
    /// request executes long before the interval ends. The view-change
    /// timer runs meanwhile (PBFT 4.4), so a primary that ignores relayed
    /// requests is still replaced.
    fn relay_waiting_requests(&mut self) {
        let mark = std::mem::replace(&mut self.relay_mark, self.pending.next_arrival);
        self.relay_budget = RELAYED_REQUESTS_PER_INTERVAL_MAX;
        if !self.relays_requests() {
            return;
        }
        let primary = self.primary();
        let waiting: Vec<(u64, ClientRequest)> = self
            .pending
            .arrived_in(self.relay_from, mark)
            .take(self.relay_budget)
            .map(|(arrival, r)| (arrival, r.clone()))
            .collect();
        self.relay_from = match waiting.last() {
            Some((arrival, _)) if waiting.len() == self.relay_budget => arrival + 1,
            _ => mark.max(self.relay_from),
        };
        self.relay_budget -= waiting.len();
        self.stats.requests_relayed += waiting.len() as u64;
        self.outputs
            .extend(waiting.into_iter().map(|(_, request)| Output::Send {
                to: primary,
                message: Message::Request(request),
            }));
    }

    /// No progress since the last tick: send again what this replica said
    /// about unfinished sequence numbers, its unstable checkpoint, and ask
    /// for the next batch to execute.
    fn retransmit(&mut self) {
        if let Some(vc) = self.own_view_change_message() {
            // PBFT 4.4: waiting for the NEW-VIEW, send the VIEW-CHANGE again.
            self.outputs.push(Output::Broadcast(vc));
        }
        self.retransmit_transfer();
        let mut messages = Vec::new();
        for (seq, slot) in self.log.range(self.last_executed.next()..) {
            if let Some(m) = self.own_pre_prepare_message(*seq) {
                messages.push(m);
            }
            if let (Some(pp), None) = (&slot.pre_prepare, &slot.batch) {
                // PBFT 4.4: a re-proposal whose batch this replica lacks;
                // the first fetch (on entering the view) may have been lost.
                messages.push(Message::Fetch(Fetch::PreparedBatch {
                    seq: *seq,
                    digest: pp.value().digest,
                }));
            }
            if let Some(p) = slot.prepares.get(&self.id) {
                messages.push(Message::Prepare(p.signed().clone()));
            }
            if let Some(c) = slot.commits.get(&self.id) {
                messages.push(Message::Commit(c.clone()));
            }
        }
        if let Some(c) = self
            .checkpoints
            .range(self.low.next()..)
            .rev()
            .find_map(|(_, v)| v.get(&self.id))
        {
            messages.push(Message::Checkpoint(c.signed().clone()));
        }
        if self.known_beyond_executed() {
            let seq = self.last_executed.next();
            messages.push(Message::Fetch(Fetch::Batch { seq }));
        }
        self.outputs
            .extend(messages.into_iter().map(Output::Broadcast));
    }

    /// PBFT 4.4: a backup runs the view-change timer while it waits for a
    /// request to execute, and restarts it when one executes.
    fn update_view_change_timer(&mut self) {
        if self.is_primary() || !self.view_active {
            return;
        }
        if self.pending.is_empty() {
            if self.view_change_armed {
                self.view_change_armed = false;
                self.outputs.push(Output::CancelTimer(Timer::ViewChange));
            }
        } else {
            self.view_change_armed = true;
            let at = self.now.plus_us(self.view_change_timeout_us());
            self.outputs.push(Output::SetTimer {
                timer: Timer::ViewChange,
                at,
            });
        }
    }

    fn arm_timers(&mut self) {
        if !self.retransmit_armed && self.has_outstanding_work() {
            self.retransmit_armed = true;
            let at = self.now.plus_us(self.params.retransmit_interval_us);
            self.outputs.push(Output::SetTimer {
                timer: Timer::Retransmit,
                at,
            });
        }
        if self.is_primary() {
            if let Some(deadline) = self.batch_deadline {
                // A deadline already passed is served when the pipeline frees.
                if !self.batch_timer_armed && !self.pending.is_empty() && deadline > self.now {
                    self.batch_timer_armed = true;
                    self.outputs.push(Output::SetTimer {
                        timer: Timer::Batch,
                        at: deadline,
                    });
                }
            }
        } else if self.view_active && !self.pending.is_empty() {
            self.arm_view_change_timer();
        }
    }

    /// Sets the view-change timer for the current (backed-off) timeout
    /// unless it runs already.
    pub(super) fn arm_view_change_timer(&mut self) {
        if !self.view_change_armed {
            self.view_change_armed = true;
            let at = self.now.plus_us(self.view_change_timeout_us());
            self.outputs.push(Output::SetTimer {
                timer: Timer::ViewChange,
                at,
            });
        }
    }
}
