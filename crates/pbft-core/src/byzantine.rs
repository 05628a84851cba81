//! Programmable Byzantine behaviour (FAULTS.md 1 to 11), independent of the
//! simulator so that a host (the node binary, behind a cargo feature) can
//! reuse it.
//!
//! A [`Strategy`] controls one replica. The replica itself stays the honest
//! state machine of [`crate::Replica`]; the strategy sits between it and the
//! transport:
//!
//! - [`Strategy::incoming`] sees every input before the replica does and may
//!   drop it (a censoring primary ignores one client);
//! - [`Strategy::outgoing`] sees every [`Output`] and returns what the host
//!   carries out instead ([`Action`]): the output unchanged, rewritten and
//!   re-signed with the replica's own key ([`Context::signer`]), split per
//!   destination (different messages to two halves of the cluster),
//!   suppressed (an empty vector), duplicated, delayed to a later time, or
//!   followed by injected messages.
//!
//! The transport authenticates the sending replica (FAULTS.md 9), so a
//! strategy never chooses the `from` of what it sends: it can only relay
//! another replica's signed message, or put another id in a `signer` field.
//!
//! Faults stop: [`Until`] makes any strategy honest (pass-through) from a
//! given time on, so that a test can require liveness after it (FAULTS.md:
//! "once faults stop, the cluster makes progress again within a bounded
//! time").
//!
//! Randomness is passed in (`&mut dyn RngCore`), so that a simulation stays
//! reproducible from its seed.

use std::collections::{BTreeMap, BTreeSet};

use pbft_crypto::{batch_digest, Signable, Signer};
use pbft_types::{
    Batch, Checkpoint, ClientId, ClusterConfig, Commit, Digest, Message, NewView, PrePrepare,
    Prepare, PreparedCert, QuorumCert, ReplicaId, SeqNo, Signature, Signed, View, ViewChange,
};
use rand::{Rng, RngCore};

use crate::io::{Input, Output, PersistRecord, Time};

/// What a strategy knows besides the output it is shown.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The replica it controls.
    pub me: ReplicaId,
    /// That replica's signer: rewritten messages are re-signed with it, so
    /// their signatures are valid.
    pub signer: &'a Signer<ReplicaId>,
    /// The cluster.
    pub config: &'a ClusterConfig,
    /// The current time.
    pub now: Time,
}

impl Context<'_> {
    /// Every replica but the controlled one, ascending.
    #[must_use]
    pub fn others(&self) -> Vec<ReplicaId> {
        self.config
            .replica_ids()
            .filter(|r| *r != self.me)
            .collect()
    }
}

/// What the host does with the result of [`Strategy::outgoing`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Carry out this output now.
    Emit(Output),
    /// Carry out this output at a later time (a delayed message).
    Delay {
        /// When.
        at: Time,
        /// The output.
        output: Output,
    },
}

/// A Byzantine behaviour of one replica.
pub trait Strategy {
    /// A short name, for logs and reproduction commands.
    fn name(&self) -> &'static str;

    /// Sees an input before the replica; `false` drops it.
    fn incoming(&mut self, ctx: &Context<'_>, input: &Input, rng: &mut dyn RngCore) -> bool {
        let _ = (ctx, input, rng);
        true
    }

    /// Sees one output of the replica and returns what the host carries out
    /// instead. An empty vector suppresses it.
    fn outgoing(&mut self, ctx: &Context<'_>, output: Output, rng: &mut dyn RngCore)
        -> Vec<Action>;
}

impl<S: Strategy + ?Sized> Strategy for Box<S> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn incoming(&mut self, ctx: &Context<'_>, input: &Input, rng: &mut dyn RngCore) -> bool {
        (**self).incoming(ctx, input, rng)
    }
    fn outgoing(
        &mut self,
        ctx: &Context<'_>,
        output: Output,
        rng: &mut dyn RngCore,
    ) -> Vec<Action> {
        (**self).outgoing(ctx, output, rng)
    }
}

// ----- helpers ---------------------------------------------------------------

/// The messages of a `Send` or `Broadcast`, one per destination, so that a
/// strategy can treat destinations differently; `None` for other outputs.
#[must_use]
pub fn per_destination(ctx: &Context<'_>, output: &Output) -> Option<Vec<(ReplicaId, Message)>> {
    match output {
        Output::Send { to, message } => Some(vec![(*to, message.clone())]),
        Output::Broadcast(message) => Some(
            ctx.others()
                .into_iter()
                .map(|to| (to, message.clone()))
                .collect(),
        ),
        _ => None,
    }
}

/// Whether `actions` differ from carrying out `original` unchanged (a
/// broadcast split into identical per-destination sends is unchanged): a
/// host counts the faults a strategy actually injected.
#[must_use]
pub fn altered(ctx: &Context<'_>, original: &Output, actions: &[Action]) -> bool {
    let Some(before) = per_destination(ctx, original) else {
        return !matches!(actions, [Action::Emit(o)] if o == original);
    };
    let mut after = Vec::with_capacity(before.len());
    for action in actions {
        match action {
            Action::Emit(o) => match per_destination(ctx, o) {
                Some(sends) => after.extend(sends),
                None => return true,
            },
            Action::Delay { .. } => return true,
        }
    }
    after != before
}

/// `Action::Emit(Output::Send { to, message })`.
#[must_use]
pub fn send(to: ReplicaId, message: Message) -> Action {
    Action::Emit(Output::Send { to, message })
}

/// `[Action::Emit(output)]`: pass an output through unchanged.
#[must_use]
pub fn pass(output: Output) -> Vec<Action> {
    vec![Action::Emit(output)]
}

/// Re-signs `value` as the controlled replica; `None` only if encoding fails.
fn sign<T: Signable<Signer = ReplicaId>>(ctx: &Context<'_>, value: T) -> Option<Signed<T>> {
    ctx.signer.sign(value).ok()
}

/// Two halves of the other replicas (FAULTS.md 1 and 2): the ones in
/// `b` get the alternative, the others the original.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Halves {
    /// The replicas that get the alternative message.
    pub b: BTreeSet<ReplicaId>,
}

impl Halves {
    /// The upper half of the other replicas (ascending ids) is `b`: for
    /// `n = 4` and replica 0, `{2, 3}`; for `n = 7`, `{4, 5, 6}`.
    #[must_use]
    pub fn split(config: &ClusterConfig, me: ReplicaId) -> Self {
        let others: Vec<ReplicaId> = config.replica_ids().filter(|r| *r != me).collect();
        let cut = others.len() / 2;
        Self {
            b: others.get(cut..).unwrap_or(&[]).iter().copied().collect(),
        }
    }

    /// Explicit halves.
    #[must_use]
    pub fn with_b(b: impl IntoIterator<Item = ReplicaId>) -> Self {
        Self {
            b: b.into_iter().collect(),
        }
    }
}

/// The deterministic alternative batch of an equivocating primary: the same
/// requests rotated by one (a reordered batch, so a different digest with
/// only authentic requests). `None` for a batch of fewer than two requests,
/// which has no reordering.
///
/// Deterministic so that colluding replicas (the negative control,
/// FAULTS.md 26) agree on the alternative digest without talking.
#[must_use]
pub fn alternative_batch(batch: &Batch) -> Option<Batch> {
    if batch.requests.len() < 2 {
        return None;
    }
    let mut requests = batch.requests.clone();
    requests.rotate_left(1);
    Some(Batch { requests })
}

fn random_digest(rng: &mut dyn RngCore) -> Digest {
    let mut d = [0u8; 32];
    rng.fill_bytes(&mut d);
    Digest(d)
}

/// The view and sequence number a message names, if any.
fn view_seq(message: &Message) -> Option<(View, SeqNo)> {
    match message {
        Message::PrePrepare { pre_prepare, .. } => {
            Some((pre_prepare.value.view, pre_prepare.value.seq))
        }
        Message::Prepare(p) => Some((p.value.view, p.value.seq)),
        Message::Commit(c) => Some((c.value.view, c.value.seq)),
        _ => None,
    }
}

/// Tracks the highest view and sequence number of the controlled replica's
/// own messages (a strategy does not read the replica's state).
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    view: View,
    seq: SeqNo,
}

impl Seen {
    fn observe(&mut self, output: &Output) {
        let message = match output {
            Output::Send { message, .. } | Output::Broadcast(message) => message,
            Output::ViewChanged { view, .. } | Output::ViewChangeStarted { view } => {
                self.view = self.view.max(*view);
                return;
            }
            _ => return,
        };
        if let Some((v, s)) = view_seq(message) {
            self.view = self.view.max(v);
            self.seq = self.seq.max(s);
        }
        if let Message::Checkpoint(c) = message {
            self.seq = self.seq.max(c.value.seq);
        }
    }
}

// ----- faults stop -----------------------------------------------------------

/// Pass-through: an honest replica. Also marks a replica as Byzantine for
/// the checkers when the fault lives outside the outputs (amnesia,
/// FAULTS.md 10; twins).
#[derive(Clone, Copy, Debug, Default)]
pub struct Honest;

impl Strategy for Honest {
    fn name(&self) -> &'static str {
        "honest"
    }
    fn outgoing(&mut self, _: &Context<'_>, output: Output, _: &mut dyn RngCore) -> Vec<Action> {
        pass(output)
    }
}

/// Runs `strategy` before `until` and passes everything through from then
/// on: the faults stop, and liveness can be required after that time.
#[derive(Debug)]
pub struct Until<S> {
    /// The wrapped strategy.
    pub strategy: S,
    /// From this time on the replica behaves honestly.
    pub until: Time,
}

impl<S: Strategy> Strategy for Until<S> {
    fn name(&self) -> &'static str {
        self.strategy.name()
    }
    fn incoming(&mut self, ctx: &Context<'_>, input: &Input, rng: &mut dyn RngCore) -> bool {
        ctx.now >= self.until || self.strategy.incoming(ctx, input, rng)
    }
    fn outgoing(
        &mut self,
        ctx: &Context<'_>,
        output: Output,
        rng: &mut dyn RngCore,
    ) -> Vec<Action> {
        if ctx.now >= self.until {
            pass(output)
        } else {
            self.strategy.outgoing(ctx, output, rng)
        }
    }
}

/// Several strategies in a row: each output of one is shown to the next
/// (delayed outputs skip the rest); an input reaches the replica only if
/// every strategy lets it through. Composes behaviours, e.g. a flood from
/// an equivocating primary.
pub struct Chain(pub Vec<Box<dyn Strategy>>);

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|s| s.name()).collect();
        f.debug_tuple("Chain").field(&names).finish()
    }
}

impl Strategy for Chain {
    fn name(&self) -> &'static str {
        "chain"
    }
    fn incoming(&mut self, ctx: &Context<'_>, input: &Input, rng: &mut dyn RngCore) -> bool {
        self.0.iter_mut().all(|s| s.incoming(ctx, input, rng))
    }
    fn outgoing(
        &mut self,
        ctx: &Context<'_>,
        output: Output,
        rng: &mut dyn RngCore,
    ) -> Vec<Action> {
        let mut actions = pass(output);
        for strategy in &mut self.0 {
            let mut next = Vec::with_capacity(actions.len());
            for action in actions {
                match action {
                    Action::Emit(o) => next.extend(strategy.outgoing(ctx, o, rng)),
                    delayed @ Action::Delay { .. } => next.push(delayed),
                }
            }
            actions = next;
        }
        actions
    }
}

/// A slow replica (FAULTS.md 13 from the inside): each message to each
/// destination leaves after a random delay up to `delay_us_max`, so its
/// messages also arrive out of order.
#[derive(Clone, Copy, Debug)]
pub struct Delaying {
    /// The longest delay added.
    pub delay_us_max: u64,
}

impl Strategy for Delaying {
    fn name(&self) -> &'static str {
        "delaying"
    }
    fn outgoing(
        &mut self,
        ctx: &Context<'_>,
        output: Output,
        rng: &mut dyn RngCore,
    ) -> Vec<Action> {
        let Some(sends) = per_destination(ctx, &output) else {
            return pass(output);
        };
        sends
            .into_iter()
            .map(|(to, message)| Action::Delay {
                at: ctx.now.plus_us(rng.gen_range(0..=self.delay_us_max)),
                output: Output::Send { to, message },
            })
            .collect()
    }
}

// ----- 1. equivocating primary ----------------------------------------------

/// FAULTS.md 1: the primary sends different PRE-PREPAREs for one
/// (view, seq) to two halves of the backups (PBFT 4.2). The alternative is
/// [`alternative_batch`], re-signed; to half `b` the primary also sends
/// COMMITs (and, as a backup in a later view, PREPAREs) for the alternative
/// digest, so that each half sees a consistent story. Batches of one
/// request have no alternative and go out unchanged.
#[derive(Debug)]
pub struct EquivocatingPrimary {
    halves: Option<Halves>,
    /// `(view, seq)` -> (original digest, alternative pre-prepare and batch).
    alternatives: BTreeMap<(View, SeqNo), (Digest, Signed<PrePrepare>, Batch)>,
}

impl EquivocatingPrimary {
    /// Halves from [`Halves::split`].
    #[must_use]
    pub fn new() -> Self {
        Self {
            halves: None,
            alternatives: BTreeMap::new(),
        }
    }

    /// Explicit halves.
    #[must_use]
    pub fn with_halves(halves: Halves) -> Self {
        Self {
            halves: Some(halves),
            alternatives: BTreeMap::new(),
        }
    }

    fn learn(&mut self, ctx: &Context<'_>, pre_prepare: &Signed<PrePrepare>, batch: &Batch) {
        let key = (pre_prepare.value.view, pre_prepare.value.seq);
        if pre_prepare.signer != ctx.me || self.alternatives.contains_key(&key) {
            return;
        }
        let Some(alt) = alternative_batch(batch) else {
            return;
        };
        let Ok(digest) = batch_digest(&alt) else {
            return;
        };
        let header = PrePrepare {
            view: key.0,
            seq: key.1,
            digest,
        };
        if let Some(signed) = sign(ctx, header) {
            self.alternatives
                .insert(key, (pre_prepare.value.digest, signed, alt));
        }
    }

    fn rewrite(&self, ctx: &Context<'_>, message: Message) -> Message {
        let Some((view, seq)) = view_seq(&message) else {
            return message;
        };
        let Some((original, alt_pp, alt_batch)) = self.alternatives.get(&(view, seq)) else {
            return message;
        };
        match &message {
            Message::PrePrepare { pre_prepare, .. } if pre_prepare.signer == ctx.me => {
                Message::PrePrepare {
                    pre_prepare: alt_pp.clone(),
                    batch: alt_batch.clone(),
                }
            }
            Message::Commit(c) if c.signer == ctx.me && c.value.digest == *original => {
                let value = Commit {
                    digest: alt_pp.value.digest,
                    ..c.value.clone()
                };
                sign(ctx, value).map_or(message, Message::Commit)
            }
            Message::Prepare(p) if p.signer == ctx.me && p.value.digest == *original => {
                let value = Prepare {
                    digest: alt_pp.value.digest,
                    ..p.value.clone()
                };
                sign(ctx, value).map_or(message, Message::Prepare)
            }
            _ => message,
        }
    }
}

impl Default for EquivocatingPrimary {
    fn default() -> Self {
        Self::new()
    }
}

impl Strategy for EquivocatingPrimary {
    fn name(&self) -> &'static str {
        "equivocating_primary"
    }
    fn outgoing(&mut self, ctx: &Context<'_>, output: Output, _: &mut dyn RngCore) -> Vec<Action> {
        if let Output::Persist { records, .. } = &output {
            for r in records {
                if let PersistRecord::PrePrepare { pre_prepare, batch } = r {
                    self.learn(ctx, pre_prepare, batch);
                }
            }
        }
        let Some(sends) = per_destination(ctx, &output) else {
            return pass(output);
        };
        let halves = self
            .halves
            .clone()
            .unwrap_or_else(|| Halves::split(ctx.config, ctx.me));
        sends
            .into_iter()
            .map(|(to, m)| {
                if halves.b.contains(&to) {
                    send(to, self.rewrite(ctx, m))
                } else {
                    send(to, m)
                }
            })
            .collect()
    }
}

// ----- 2. double-voting backup ----------------------------------------------

/// FAULTS.md 2: a backup sends PREPAREs and COMMITs for two digests at one
/// (view, seq) (PBFT 4.2): the digest it accepted to one half, another to
/// half `b`. The other digest is the one of [`alternative_batch`] of the
/// batch it accepted (so it collides with an [`EquivocatingPrimary`] in the
/// negative control), else a random one.
#[derive(Debug)]
pub struct DoubleVotingBackup {
    halves: Option<Halves>,
    alternatives: BTreeMap<(View, SeqNo), Digest>,
}

impl DoubleVotingBackup {
    /// Halves from [`Halves::split`].
    #[must_use]
    pub fn new() -> Self {
        Self {
            halves: None,
            alternatives: BTreeMap::new(),
        }
    }

    /// Explicit halves.
    #[must_use]
    pub fn with_halves(halves: Halves) -> Self {
        Self {
            halves: Some(halves),
            alternatives: BTreeMap::new(),
        }
    }

    fn alternative(&mut self, key: (View, SeqNo), rng: &mut dyn RngCore) -> Digest {
        *self
            .alternatives
            .entry(key)
            .or_insert_with(|| random_digest(rng))
    }
}

impl Default for DoubleVotingBackup {
    fn default() -> Self {
        Self::new()
    }
}

impl Strategy for DoubleVotingBackup {
    fn name(&self) -> &'static str {
        "double_voting_backup"
    }
    fn outgoing(
        &mut self,
        ctx: &Context<'_>,
        output: Output,
        rng: &mut dyn RngCore,
    ) -> Vec<Action> {
        if let Output::Persist { records, .. } = &output {
            for r in records {
                if let PersistRecord::PrePrepare { pre_prepare, batch } = r {
                    let key = (pre_prepare.value.view, pre_prepare.value.seq);
                    if let Some(d) = alternative_batch(batch).and_then(|b| batch_digest(&b).ok()) {
                        self.alternatives.entry(key).or_insert(d);
                    }
                }
            }
        }
        let Some(sends) = per_destination(ctx, &output) else {
            return pass(output);
        };
        let halves = self
            .halves
            .clone()
            .unwrap_or_else(|| Halves::split(ctx.config, ctx.me));
        let mut actions = Vec::with_capacity(sends.len());
        for (to, m) in sends {
            if !halves.b.contains(&to) {
                actions.push(send(to, m));
                continue;
            }
            let rewritten = match &m {
                Message::Prepare(p) if p.signer == ctx.me => {
                    let digest = self.alternative((p.value.view, p.value.seq), rng);
                    sign(
                        ctx,
                        Prepare {
                            digest,
                            ..p.value.clone()
                        },
                    )
                    .map(Message::Prepare)
                }
                Message::Commit(c) if c.signer == ctx.me => {
                    let digest = self.alternative((c.value.view, c.value.seq), rng);
                    sign(
                        ctx,
                        Commit {
                            digest,
                            ..c.value.clone()
                        },
                    )
                    .map(Message::Commit)
                }
                _ => None,
            };
            actions.push(send(to, rewritten.unwrap_or(m)));
        }
        actions
    }
}

// ----- 3. silent primary ----------------------------------------------------

/// FAULTS.md 3: the replica never proposes: its own PRE-PREPAREs and
/// NEW-VIEWs are suppressed; it still answers everything else (prepares,
/// commits, checkpoints, fetches, replies). Only a view change (PBFT 4.4)
/// restores liveness.
#[derive(Clone, Copy, Debug, Default)]
pub struct SilentPrimary;

impl Strategy for SilentPrimary {
    fn name(&self) -> &'static str {
        "silent_primary"
    }
    fn outgoing(&mut self, ctx: &Context<'_>, output: Output, _: &mut dyn RngCore) -> Vec<Action> {
        let proposes = |m: &Message| match m {
            Message::PrePrepare { pre_prepare, .. } => pre_prepare.signer == ctx.me,
            Message::NewView(nv) => nv.signer == ctx.me,
            _ => false,
        };
        match &output {
            Output::Send { message, .. } | Output::Broadcast(message) if proposes(message) => {
                Vec::new()
            }
            _ => pass(output),
        }
    }
}

// ----- 4. selective primary -------------------------------------------------

/// FAULTS.md 4: the primary sends each PRE-PREPARE (and NEW-VIEW) to only
/// `f` backups, and its retransmissions too: the `f` backups are chosen
/// per (view, seq) ([`SelectivePrimary::chosen`]), so no other backup ever
/// gets the proposal from it. Without a view change the others never
/// prepare (PBFT 4.2 needs `2f` prepares).
#[derive(Clone, Copy, Debug, Default)]
pub struct SelectivePrimary;

impl SelectivePrimary {
    /// The `f` backups that get the proposal for `(view, seq)`: consecutive
    /// in id order from an offset that moves with the view and the
    /// sequence number.
    #[must_use]
    pub fn chosen(ctx: &Context<'_>, view: View, seq: SeqNo) -> Vec<ReplicaId> {
        let others = ctx.others();
        if others.is_empty() {
            return others;
        }
        let start = (view.0.wrapping_add(seq.0) % others.len() as u64) as usize;
        others
            .iter()
            .cycle()
            .skip(start)
            .take(ctx.config.f())
            .copied()
            .collect()
    }
}

impl Strategy for SelectivePrimary {
    fn name(&self) -> &'static str {
        "selective_primary"
    }
    fn outgoing(&mut self, ctx: &Context<'_>, output: Output, _: &mut dyn RngCore) -> Vec<Action> {
        let proposal = |m: &Message| match m {
            Message::PrePrepare { pre_prepare, .. } if pre_prepare.signer == ctx.me => {
                Some((pre_prepare.value.view, pre_prepare.value.seq))
            }
            Message::NewView(nv) if nv.signer == ctx.me => Some((nv.value.view, SeqNo(0))),
            _ => None,
        };
        let Some(sends) = per_destination(ctx, &output) else {
            return pass(output);
        };
        sends
            .into_iter()
            .filter(|(to, m)| proposal(m).is_none_or(|(v, s)| Self::chosen(ctx, v, s).contains(to)))
            .map(|(to, m)| send(to, m))
            .collect()
    }
}

// ----- 5. censoring primary -------------------------------------------------

/// FAULTS.md 5: the primary ignores one client: its requests (from the
/// client's channel, or relayed by a backup) never reach the replica, so
/// they are never proposed. Backups waiting for them start their
/// view-change timers (PBFT 4.4); only a view change restores liveness for
/// that client.
#[derive(Clone, Copy, Debug)]
pub struct CensoringPrimary {
    /// The client censored.
    pub client: ClientId,
}

impl Strategy for CensoringPrimary {
    fn name(&self) -> &'static str {
        "censoring_primary"
    }
    fn incoming(&mut self, _: &Context<'_>, input: &Input, _: &mut dyn RngCore) -> bool {
        match input {
            Input::ClientRequest { from, request } => {
                *from != self.client && request.signer != self.client
            }
            Input::Message {
                message: Message::Request(r),
                ..
            } => r.signer != self.client,
            _ => true,
        }
    }
    fn outgoing(&mut self, ctx: &Context<'_>, output: Output, _: &mut dyn RngCore) -> Vec<Action> {
        // Requests of the client that still made it into a batch (a
        // re-proposal) are stripped, and the pre-prepare re-signed.
        let strip = |message: Message| -> Option<Message> {
            match message {
                Message::PrePrepare { pre_prepare, batch }
                    if pre_prepare.signer == ctx.me
                        && batch.requests.iter().any(|r| r.signer == self.client) =>
                {
                    let requests: Vec<_> = batch
                        .requests
                        .into_iter()
                        .filter(|r| r.signer != self.client)
                        .collect();
                    if requests.is_empty() {
                        return None;
                    }
                    let batch = Batch { requests };
                    let digest = batch_digest(&batch).ok()?;
                    let pre_prepare = sign(
                        ctx,
                        PrePrepare {
                            digest,
                            ..pre_prepare.value
                        },
                    )?;
                    Some(Message::PrePrepare { pre_prepare, batch })
                }
                other => Some(other),
            }
        };
        match output {
            Output::Broadcast(m) => strip(m)
                .map(|m| vec![Action::Emit(Output::Broadcast(m))])
                .unwrap_or_default(),
            Output::Send { to, message } => strip(message)
                .map(|m| vec![send(to, m)])
                .unwrap_or_default(),
            other => pass(other),
        }
    }
}

// ----- 6. forged VIEW-CHANGE / NEW-VIEW -------------------------------------

/// FAULTS.md 6: forged VIEW-CHANGE and NEW-VIEW messages (PBFT 4.4),
/// re-signed so that the outer signature is valid:
///
/// - its own VIEW-CHANGEs lose their prepared certificates, carry a
///   corrupted certificate (a prepare signature flipped), or a bad
///   sequence range (a certificate moved above the window, or twice), or
///   a fabricated certificate that cannot verify;
/// - its own NEW-VIEWs drop a re-proposed (prepared) request, turn one
///   into a null request, or drop a VIEW-CHANGE from `V`;
/// - it injects VIEW-CHANGEs for raised views (forged as above, validly
///   signed) and NEW-VIEWs for views it is the primary of, built on its own
///   VIEW-CHANGE alone ([`ForgedViewChange::inject_new_views`]).
#[derive(Debug)]
pub struct ForgedViewChange {
    /// Whether to inject NEW-VIEWs for views ahead (an invalid NEW-VIEW
    /// for a view the receiver is not changing to must not move it).
    pub inject_new_views: bool,
    seen: Seen,
    last_inject: Option<Time>,
    injected: u64,
}

/// Injected forgeries per replica, at most.
const FORGED_INJECT_MAX: u64 = 32;
/// Injected forgeries at most this often.
const FORGED_INJECT_EVERY_US: u64 = 30_000;

impl ForgedViewChange {
    /// Every forgery, injected NEW-VIEWs included.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inject_new_views: true,
            seen: Seen::default(),
            last_inject: None,
            injected: 0,
        }
    }

    /// A prepared certificate that cannot verify: a pre-prepare signed by
    /// this replica (whether or not it led that view) and prepares that
    /// claim other signers but carry this replica's signature.
    fn bogus_cert(
        ctx: &Context<'_>,
        vc: &ViewChange,
        seq: SeqNo,
        rng: &mut dyn RngCore,
    ) -> Option<PreparedCert> {
        let value = PrePrepare {
            view: View(vc.new_view.0.saturating_sub(1)),
            seq,
            digest: random_digest(rng),
        };
        let pre_prepare = sign(ctx, value.clone())?;
        let prepare = Prepare {
            view: value.view,
            seq: value.seq,
            digest: value.digest,
        };
        let signature = sign(ctx, prepare.clone())?.signature;
        let signatures = ctx
            .others()
            .into_iter()
            .take(2 * ctx.config.f())
            .map(|id| (id, signature))
            .collect();
        Some(PreparedCert {
            pre_prepare,
            prepares: QuorumCert {
                value: prepare,
                signatures,
            },
        })
    }

    fn forge_view_change(ctx: &Context<'_>, vc: &ViewChange, rng: &mut dyn RngCore) -> ViewChange {
        let mut vc = vc.clone();
        let low = vc.checkpoint.as_ref().map_or(SeqNo(0), |c| c.value.seq);
        match rng.gen_range(0..4) {
            // Omitted prepared certificates.
            0 => vc.prepared.clear(),
            // A corrupted certificate.
            1 => {
                let found = vc.prepared.iter_mut().find_map(|c| {
                    c.prepares
                        .signatures
                        .first_mut()
                        .map(|(_, s)| s.0[0] ^= 0x01)
                });
                if found.is_none() {
                    vc.prepared
                        .extend(Self::bogus_cert(ctx, &vc, low.next(), rng));
                }
            }
            // One sequence number twice.
            2 => match vc.prepared.first().cloned() {
                Some(first) => vc.prepared.push(first),
                None => vc
                    .prepared
                    .extend(Self::bogus_cert(ctx, &vc, low.next(), rng)),
            },
            // A bad sequence range: far above the window, or below the
            // checkpoint.
            _ => {
                if let Some(c) = vc.prepared.first_mut() {
                    c.pre_prepare.value.seq =
                        SeqNo(c.pre_prepare.value.seq.0.saturating_add(1_000));
                    c.prepares.value.seq = c.pre_prepare.value.seq;
                } else {
                    let seq = if rng.gen() { SeqNo(u64::MAX) } else { low };
                    vc.prepared.extend(Self::bogus_cert(ctx, &vc, seq, rng));
                }
            }
        }
        vc
    }

    fn forge_new_view(ctx: &Context<'_>, nv: &NewView, rng: &mut dyn RngCore) -> NewView {
        let mut nv = nv.clone();
        match rng.gen_range(0..3) {
            0 if !nv.pre_prepares.is_empty() => {
                let i = rng.gen_range(0..nv.pre_prepares.len());
                nv.pre_prepares.remove(i);
            }
            1 => {
                let prepared = nv
                    .pre_prepares
                    .iter_mut()
                    .find(|pp| pp.value.digest != Digest::ZERO);
                if let Some(pp) = prepared {
                    let value = PrePrepare {
                        digest: Digest::ZERO,
                        ..pp.value.clone()
                    };
                    if let Some(signed) = sign(ctx, value) {
                        *pp = signed;
                    }
                } else {
                    nv.view_changes.pop();
                }
            }
            _ => {
                nv.view_changes.pop();
            }
        }
        nv
    }

    fn inject(&mut self, ctx: &Context<'_>, rng: &mut dyn RngCore) -> Vec<Action> {
        let due = self
            .last_inject
            .is_none_or(|t| ctx.now.0 >= t.0.saturating_add(FORGED_INJECT_EVERY_US));
        if !due || self.injected >= FORGED_INJECT_MAX {
            return Vec::new();
        }
        self.last_inject = Some(ctx.now);
        self.injected += 1;
        let raised = View(self.seen.view.0.saturating_add(rng.gen_range(1..=3)));
        let empty = ViewChange {
            new_view: raised,
            checkpoint: None,
            prepared: Vec::new(),
        };
        let vc = Self::forge_view_change(ctx, &empty, rng);
        let mut actions = Vec::new();
        let Some(signed_vc) = sign(ctx, vc) else {
            return actions;
        };
        actions.push(Action::Emit(Output::Broadcast(Message::ViewChange(
            signed_vc.clone(),
        ))));
        // A NEW-VIEW for the next view this replica is the primary of,
        // justified by its own VIEW-CHANGE only.
        let n = ctx.config.n() as u64;
        let mut view = View(self.seen.view.0.saturating_add(1));
        for _ in 0..n {
            if ctx.config.primary(view) == ctx.me {
                break;
            }
            view = View(view.0.saturating_add(1));
        }
        if self.inject_new_views && ctx.config.primary(view) == ctx.me {
            let own = sign(
                ctx,
                ViewChange {
                    new_view: view,
                    checkpoint: None,
                    prepared: Vec::new(),
                },
            );
            let nv = NewView {
                view,
                view_changes: own.into_iter().collect(),
                pre_prepares: Vec::new(),
            };
            if let Some(signed) = sign(ctx, nv) {
                actions.push(Action::Emit(Output::Broadcast(Message::NewView(signed))));
            }
        }
        actions
    }
}

impl Default for ForgedViewChange {
    fn default() -> Self {
        Self::new()
    }
}

impl Strategy for ForgedViewChange {
    fn name(&self) -> &'static str {
        "forged_view_change"
    }
    fn outgoing(
        &mut self,
        ctx: &Context<'_>,
        output: Output,
        rng: &mut dyn RngCore,
    ) -> Vec<Action> {
        self.seen.observe(&output);
        let mut actions = match output {
            Output::Broadcast(Message::ViewChange(vc)) if vc.signer == ctx.me => {
                let forged = Self::forge_view_change(ctx, &vc.value, rng);
                let m = sign(ctx, forged).map_or(Message::ViewChange(vc), Message::ViewChange);
                vec![Action::Emit(Output::Broadcast(m))]
            }
            Output::Broadcast(Message::NewView(nv)) if nv.signer == ctx.me => {
                let forged = Self::forge_new_view(ctx, &nv.value, rng);
                let m = sign(ctx, forged).map_or(Message::NewView(nv), Message::NewView);
                vec![Action::Emit(Output::Broadcast(m))]
            }
            other => pass(other),
        };
        actions.extend(self.inject(ctx, rng));
        actions
    }
}

// ----- 7. small-scope mutations (ByzzFuzz) ----------------------------------

/// FAULTS.md 7, after ByzzFuzz (Winter et al., OOPSLA 2023): small mutations
/// of the replica's own messages, re-signed so that signatures are valid,
/// to a random subset of destinations: view + 1, seq + 1, replay of an
/// earlier PRE-PREPARE (an earlier view's or sequence number's), a stale
/// CHECKPOINT digest (an earlier checkpoint's) or a wrong one. A mutated
/// message replaces the original or goes out beside it; some messages are
/// delayed.
#[derive(Debug)]
pub struct SmallScopeMutation {
    /// Probability, in parts per million, that a message to one destination
    /// is mutated.
    pub mutate_ppm: u32,
    earlier_pre_prepares: Vec<(Signed<PrePrepare>, Batch)>,
    earlier_checkpoints: Vec<Digest>,
}

/// Earlier pre-prepares and checkpoint digests kept for replay, at most.
const REPLAY_KEPT_MAX: usize = 16;

impl SmallScopeMutation {
    /// Mutates about one message in three.
    #[must_use]
    pub fn new() -> Self {
        Self {
            mutate_ppm: 330_000,
            earlier_pre_prepares: Vec::new(),
            earlier_checkpoints: Vec::new(),
        }
    }

    fn remember(&mut self, message: &Message) {
        match message {
            Message::PrePrepare { pre_prepare, batch }
                if !self
                    .earlier_pre_prepares
                    .iter()
                    .any(|(p, _)| p == pre_prepare) =>
            {
                if self.earlier_pre_prepares.len() >= REPLAY_KEPT_MAX {
                    self.earlier_pre_prepares.remove(0);
                }
                self.earlier_pre_prepares
                    .push((pre_prepare.clone(), batch.clone()));
            }
            Message::Checkpoint(c) if !self.earlier_checkpoints.contains(&c.value.state_digest) => {
                if self.earlier_checkpoints.len() >= REPLAY_KEPT_MAX {
                    self.earlier_checkpoints.remove(0);
                }
                self.earlier_checkpoints.push(c.value.state_digest);
            }
            _ => {}
        }
    }

    fn mutate(&self, ctx: &Context<'_>, m: &Message, rng: &mut dyn RngCore) -> Option<Message> {
        let plus = |x: u64| x.saturating_add(1);
        match m {
            Message::PrePrepare { pre_prepare, batch } if pre_prepare.signer == ctx.me => {
                let mut value = pre_prepare.value.clone();
                match rng.gen_range(0..3) {
                    0 => value.view = View(plus(value.view.0)),
                    1 => value.seq = SeqNo(plus(value.seq.0)),
                    _ => {
                        let i = rng.gen_range(0..self.earlier_pre_prepares.len().max(1));
                        let (pp, b) = self.earlier_pre_prepares.get(i)?;
                        return Some(Message::PrePrepare {
                            pre_prepare: pp.clone(),
                            batch: b.clone(),
                        });
                    }
                }
                Some(Message::PrePrepare {
                    pre_prepare: sign(ctx, value)?,
                    batch: batch.clone(),
                })
            }
            Message::Prepare(p) if p.signer == ctx.me => {
                let mut value = p.value.clone();
                if rng.gen() {
                    value.view = View(plus(value.view.0));
                } else {
                    value.seq = SeqNo(plus(value.seq.0));
                }
                sign(ctx, value).map(Message::Prepare)
            }
            Message::Commit(c) if c.signer == ctx.me => {
                let mut value = c.value.clone();
                if rng.gen() {
                    value.view = View(plus(value.view.0));
                } else {
                    value.seq = SeqNo(plus(value.seq.0));
                }
                sign(ctx, value).map(Message::Commit)
            }
            Message::Checkpoint(c) if c.signer == ctx.me => {
                let stale = self
                    .earlier_checkpoints
                    .iter()
                    .rev()
                    .find(|d| **d != c.value.state_digest)
                    .copied();
                let state_digest = match stale {
                    Some(d) if rng.gen() => d,
                    _ => random_digest(rng),
                };
                sign(
                    ctx,
                    Checkpoint {
                        seq: c.value.seq,
                        state_digest,
                    },
                )
                .map(Message::Checkpoint)
            }
            _ => None,
        }
    }
}

impl Default for SmallScopeMutation {
    fn default() -> Self {
        Self::new()
    }
}

impl Strategy for SmallScopeMutation {
    fn name(&self) -> &'static str {
        "small_scope_mutation"
    }
    fn outgoing(
        &mut self,
        ctx: &Context<'_>,
        output: Output,
        rng: &mut dyn RngCore,
    ) -> Vec<Action> {
        let Some(sends) = per_destination(ctx, &output) else {
            return pass(output);
        };
        let mut actions = Vec::with_capacity(sends.len() + 2);
        for (to, m) in sends {
            let mutated = (rng.gen_range(0..1_000_000) < self.mutate_ppm)
                .then(|| self.mutate(ctx, &m, rng))
                .flatten();
            match mutated {
                Some(bad) => {
                    actions.push(send(to, bad));
                    match rng.gen_range(0..3) {
                        0 => {} // replaced
                        1 => actions.push(send(to, m.clone())),
                        _ => actions.push(Action::Delay {
                            at: ctx.now.plus_us(rng.gen_range(1..=20_000)),
                            output: Output::Send {
                                to,
                                message: m.clone(),
                            },
                        }),
                    }
                }
                None => actions.push(send(to, m.clone())),
            }
            self.remember(&m);
        }
        actions
    }
}

// ----- 8. far-future flood --------------------------------------------------

/// FAULTS.md 8: besides its honest messages, the replica floods the others
/// with validly signed messages far above the high watermark: PREPAREs,
/// COMMITs, CHECKPOINTs and PRE-PREPAREs at sequence numbers from just
/// above the window up to `u64::MAX`, VIEW-CHANGEs for views up to
/// `u64::MAX`, and (empty, invalid) NEW-VIEWs for far views it is the
/// primary of (PBFT 4.2 watermarks, 4.5: no replica moves to a higher view
/// on fewer than `f + 1` messages; the receivers' buffers must stay bounded
/// and nothing may be trusted before it is checked).
#[derive(Debug)]
pub struct FarFutureFlood {
    /// Messages injected per output of the replica, at most.
    pub per_output: usize,
    /// Messages injected in total, at most.
    pub budget: u64,
    /// Whether the flood includes NEW-VIEWs for far views.
    pub new_views: bool,
    seen: Seen,
    sent: u64,
}

impl FarFutureFlood {
    /// 2 per output, 400 in all.
    #[must_use]
    pub fn new() -> Self {
        Self {
            per_output: 2,
            budget: 400,
            new_views: true,
            seen: Seen::default(),
            sent: 0,
        }
    }

    fn far_seq(&self, rng: &mut dyn RngCore) -> SeqNo {
        let base = self.seen.seq.0;
        SeqNo(match rng.gen_range(0..5) {
            0 => base.saturating_add(rng.gen_range(1..=64)),
            1 => base.saturating_add(rng.gen_range(64..=100_000)),
            2 => u64::MAX,
            3 => u64::MAX - rng.gen_range(0..=16),
            _ => rng.gen_range(base..=u64::MAX),
        })
    }

    fn far_view(&self, rng: &mut dyn RngCore) -> View {
        View(match rng.gen_range(0..3) {
            0 => self.seen.view.0.saturating_add(rng.gen_range(1..=1_000)),
            1 => u64::MAX,
            _ => rng.gen_range(self.seen.view.0..=u64::MAX),
        })
    }

    fn one(&self, ctx: &Context<'_>, rng: &mut dyn RngCore) -> Option<Message> {
        let view = if rng.gen_ratio(1, 4) {
            self.far_view(rng)
        } else {
            self.seen.view
        };
        let seq = self.far_seq(rng);
        let digest = random_digest(rng);
        let kinds = if self.new_views { 6 } else { 5 };
        Some(match rng.gen_range(0..kinds) {
            0 => Message::Prepare(sign(ctx, Prepare { view, seq, digest })?),
            1 => Message::Commit(sign(ctx, Commit { view, seq, digest })?),
            2 => Message::Checkpoint(sign(
                ctx,
                Checkpoint {
                    seq,
                    state_digest: digest,
                },
            )?),
            3 => Message::PrePrepare {
                pre_prepare: sign(ctx, PrePrepare { view, seq, digest })?,
                batch: Batch::default(),
            },
            4 => Message::ViewChange(sign(
                ctx,
                ViewChange {
                    new_view: self.far_view(rng),
                    checkpoint: None,
                    prepared: Vec::new(),
                },
            )?),
            // A NEW-VIEW (empty, so invalid) for a far view whose primary
            // this replica is: up to the highest such view below u64::MAX.
            _ => {
                let view = own_view_at_or_below(ctx, self.far_view(rng));
                Message::NewView(sign(
                    ctx,
                    NewView {
                        view,
                        view_changes: Vec::new(),
                        pre_prepares: Vec::new(),
                    },
                )?)
            }
        })
    }
}

/// The highest view at or below `view` whose primary is the controlled
/// replica (`view mod n == me`), or `view` itself if there is none.
#[must_use]
pub fn own_view_at_or_below(ctx: &Context<'_>, view: View) -> View {
    let n = ctx.config.n() as u64;
    let me = u64::from(ctx.me.0);
    if n == 0 {
        return view;
    }
    let base = view.0 - view.0 % n;
    match base.checked_add(me) {
        Some(v) if v <= view.0 => View(v),
        _ => base
            .checked_sub(n)
            .and_then(|b| b.checked_add(me))
            .map_or(view, View),
    }
}

impl Default for FarFutureFlood {
    fn default() -> Self {
        Self::new()
    }
}

impl Strategy for FarFutureFlood {
    fn name(&self) -> &'static str {
        "far_future_flood"
    }
    fn outgoing(
        &mut self,
        ctx: &Context<'_>,
        output: Output,
        rng: &mut dyn RngCore,
    ) -> Vec<Action> {
        self.seen.observe(&output);
        let mut actions = pass(output);
        let others = ctx.others();
        for _ in 0..self.per_output {
            if self.sent >= self.budget || others.is_empty() {
                break;
            }
            let Some(m) = self.one(ctx, rng) else {
                break;
            };
            let to = others[rng.gen_range(0..others.len())];
            self.sent += 1;
            actions.push(send(to, m));
        }
        actions
    }
}

// ----- 9. bad signatures ----------------------------------------------------

/// The order `l` of the ed25519 base point, little-endian: adding it to the
/// scalar `s` of a signature gives a non-canonical encoding of the same
/// scalar, which strict verification must refuse.
const ED25519_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
];

/// The same signature with `s + l` in place of `s` (non-canonical).
#[must_use]
pub fn non_canonical(signature: Signature) -> Signature {
    let mut out = signature.0;
    let mut carry = 0u16;
    for (i, l) in ED25519_L.iter().enumerate() {
        let idx = 32 + i;
        let sum = u16::from(out[idx]) + u16::from(*l) + carry;
        out[idx] = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    Signature(out)
}

/// How [`BadSignatures`] spoils one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spoil {
    Flip,
    NonCanonical,
    ClaimOther,
    Relay,
}

/// FAULTS.md 9: the replica's own signed messages (PRE-PREPARE, PREPARE,
/// COMMIT, CHECKPOINT, VIEW-CHANGE, NEW-VIEW) go out with a flipped
/// signature bit, a non-canonical signature encoding ([`non_canonical`]),
/// another replica's id in the `signer` field, or are replaced by a message
/// another replica signed, relayed on this replica's connection (the
/// transport authenticates `from`, so the receiver must see the mismatch).
/// A spoiled message replaces the valid one or precedes it.
#[derive(Debug)]
pub struct BadSignatures {
    /// Probability, in parts per million, that a message to one
    /// destination is spoiled.
    pub spoil_ppm: u32,
    received: Vec<Message>,
}

/// Messages of other replicas kept for relaying, at most.
const RELAY_KEPT_MAX: usize = 32;

impl BadSignatures {
    /// Spoils about one message in two.
    #[must_use]
    pub fn new() -> Self {
        Self {
            spoil_ppm: 500_000,
            received: Vec::new(),
        }
    }

    fn spoil(
        &self,
        ctx: &Context<'_>,
        m: &Message,
        how: Spoil,
        rng: &mut dyn RngCore,
    ) -> Option<Message> {
        if how == Spoil::Relay {
            return self
                .received
                .get(rng.gen_range(0..self.received.len().max(1)))
                .cloned();
        }
        let others = ctx.others();
        let other = *others.get(rng.gen_range(0..others.len().max(1)))?;
        let edit = |sig: &mut Signature, signer: &mut ReplicaId| match how {
            Spoil::Flip => sig.0[rng_index(sig)] ^= 0x20,
            Spoil::NonCanonical => *sig = non_canonical(*sig),
            Spoil::ClaimOther => *signer = other,
            Spoil::Relay => {}
        };
        let mut m = m.clone();
        match &mut m {
            Message::PrePrepare { pre_prepare: s, .. } if s.signer == ctx.me => {
                edit(&mut s.signature, &mut s.signer)
            }
            Message::Prepare(s) if s.signer == ctx.me => edit(&mut s.signature, &mut s.signer),
            Message::Commit(s) if s.signer == ctx.me => edit(&mut s.signature, &mut s.signer),
            Message::Checkpoint(s) if s.signer == ctx.me => edit(&mut s.signature, &mut s.signer),
            Message::ViewChange(s) if s.signer == ctx.me => edit(&mut s.signature, &mut s.signer),
            Message::NewView(s) if s.signer == ctx.me => edit(&mut s.signature, &mut s.signer),
            _ => return None,
        }
        Some(m)
    }
}

/// A byte of the signature to flip, derived from the signature itself (so
/// no rng is needed inside the closure): one of the 64 bytes.
fn rng_index(sig: &Signature) -> usize {
    usize::from(sig.0[63] ^ sig.0[0]) % 64
}

impl Default for BadSignatures {
    fn default() -> Self {
        Self::new()
    }
}

impl Strategy for BadSignatures {
    fn name(&self) -> &'static str {
        "bad_signatures"
    }
    fn incoming(&mut self, ctx: &Context<'_>, input: &Input, _: &mut dyn RngCore) -> bool {
        if let Input::Message { message, .. } = input {
            let other_signed = match message {
                Message::PrePrepare { pre_prepare, .. } => pre_prepare.signer != ctx.me,
                Message::Prepare(s) => s.signer != ctx.me,
                Message::Commit(s) => s.signer != ctx.me,
                Message::Checkpoint(s) => s.signer != ctx.me,
                Message::ViewChange(s) => s.signer != ctx.me,
                _ => false,
            };
            if other_signed {
                if self.received.len() >= RELAY_KEPT_MAX {
                    self.received.remove(0);
                }
                self.received.push(message.clone());
            }
        }
        true
    }
    fn outgoing(
        &mut self,
        ctx: &Context<'_>,
        output: Output,
        rng: &mut dyn RngCore,
    ) -> Vec<Action> {
        let Some(sends) = per_destination(ctx, &output) else {
            return pass(output);
        };
        let mut actions = Vec::with_capacity(sends.len() + 1);
        for (to, m) in sends {
            if rng.gen_range(0..1_000_000) >= self.spoil_ppm {
                actions.push(send(to, m));
                continue;
            }
            let how = match rng.gen_range(0..4) {
                0 => Spoil::Flip,
                1 => Spoil::NonCanonical,
                2 => Spoil::ClaimOther,
                _ => Spoil::Relay,
            };
            match self.spoil(ctx, &m, how, rng) {
                Some(bad) => {
                    actions.push(send(to, bad));
                    if rng.gen() {
                        actions.push(send(to, m));
                    }
                }
                None => actions.push(send(to, m)),
            }
        }
        actions
    }
}

// ----- 10. amnesia ----------------------------------------------------------

/// FAULTS.md 10: the replica restarts from an older copy of its store. The
/// fault lives in the host (the simulator's
/// [`crate::sim::Sim::amnesia`] restores it from an earlier
/// [`crate::DurableState`]); its outputs are its own. A primary that forgot
/// its pre-prepares assigns their sequence numbers again to other batches:
/// the backups are offered conflicting PRE-PREPAREs (PBFT 4.2) and must
/// refuse them; a backup that forgot its prepares may accept one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Amnesia;

impl Strategy for Amnesia {
    fn name(&self) -> &'static str {
        "amnesia"
    }
    fn outgoing(&mut self, _: &Context<'_>, output: Output, _: &mut dyn RngCore) -> Vec<Action> {
        pass(output)
    }
}

// ----- 11. wrong state ------------------------------------------------------

/// FAULTS.md 11: the replica's state diverges from the others': its replies
/// carry another result and its CHECKPOINTs another state digest (a
/// consistent wrong one, re-signed). Clients must not accept its results
/// without `f` others (PBFT 4.1), and its checkpoints must never become
/// stable with the correct ones (PBFT 4.3).
#[derive(Clone, Copy, Debug, Default)]
pub struct WrongState;

impl Strategy for WrongState {
    fn name(&self) -> &'static str {
        "wrong_state"
    }
    fn outgoing(&mut self, ctx: &Context<'_>, output: Output, _: &mut dyn RngCore) -> Vec<Action> {
        let wrong = |d: Digest| pbft_crypto::hash("pbft byzantine wrong state", &d.0);
        match output {
            Output::Reply { client, mut reply } => {
                reply.result.push(0xBA);
                vec![Action::Emit(Output::Reply { client, reply })]
            }
            Output::Broadcast(Message::Checkpoint(c)) if c.signer == ctx.me => {
                let value = Checkpoint {
                    seq: c.value.seq,
                    state_digest: wrong(c.value.state_digest),
                };
                let m = sign(ctx, value).map_or(Message::Checkpoint(c), Message::Checkpoint);
                vec![Action::Emit(Output::Broadcast(m))]
            }
            Output::Send {
                to,
                message: Message::Checkpoint(c),
            } if c.signer == ctx.me => {
                let value = Checkpoint {
                    seq: c.value.seq,
                    state_digest: wrong(c.value.state_digest),
                };
                let m = sign(ctx, value).map_or(Message::Checkpoint(c), Message::Checkpoint);
                vec![send(to, m)]
            }
            other => pass(other),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pbft_crypto::{Keyring, SecretKey};
    use pbft_types::{ClientEntry, ClusterId, ReplicaEntry, Request, RequestNo};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    struct Fixture {
        config: ClusterConfig,
        signers: Vec<Signer<ReplicaId>>,
        clients: Vec<Signer<ClientId>>,
    }

    fn fixture(n: usize) -> Fixture {
        let keys: Vec<SecretKey> = (0..n)
            .map(|i| SecretKey::from_seed([i as u8 + 1; 32]))
            .collect();
        let client_keys: Vec<SecretKey> = (0..3)
            .map(|i| SecretKey::from_seed([100 + i; 32]))
            .collect();
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
        .unwrap();
        let signers = keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| Signer::new(k, ClusterId(9), ReplicaId(i as u32)))
            .collect();
        let clients = client_keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| Signer::new(k, ClusterId(9), ClientId(i as u64 + 1)))
            .collect();
        Fixture {
            config,
            signers,
            clients,
        }
    }

    fn ctx(f: &Fixture, me: u32) -> Context<'_> {
        Context {
            me: ReplicaId(me),
            signer: &f.signers[me as usize],
            config: &f.config,
            now: Time(1_000),
        }
    }

    fn batch(f: &Fixture, count: usize) -> Batch {
        Batch {
            requests: f.clients[..count]
                .iter()
                .map(|c| {
                    c.sign_request(Request {
                        request_no: RequestNo(1),
                        read_only: false,
                        op: vec![1, 2, 3],
                    })
                    .unwrap()
                })
                .collect(),
        }
    }

    #[test]
    fn halves_split_the_other_replicas() {
        let f = fixture(4);
        let h = Halves::split(&f.config, ReplicaId(0));
        assert_eq!(h.b, [ReplicaId(2), ReplicaId(3)].into_iter().collect());
        let f = fixture(7);
        let h = Halves::split(&f.config, ReplicaId(1));
        assert_eq!(
            h.b,
            [ReplicaId(4), ReplicaId(5), ReplicaId(6)]
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn own_view_is_led_by_the_controlled_replica() {
        for n in [4, 7] {
            let f = fixture(n);
            for me in 0..n as u32 {
                let c = ctx(&f, me);
                for view in [
                    View(0),
                    View(5),
                    View(1_000),
                    View(u64::MAX - 1),
                    View(u64::MAX),
                ] {
                    let v = own_view_at_or_below(&c, view);
                    if v.0 >= me.into() || view.0 >= me.into() {
                        assert!(v <= view);
                        assert_eq!(f.config.primary(v), ReplicaId(me), "n {n} me {me} {view:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_split_broadcast_is_not_altered_a_changed_one_is() {
        let f = fixture(4);
        let c = ctx(&f, 0);
        let m = Message::Fetch(pbft_types::Fetch::StableCheckpoint);
        let original = Output::Broadcast(m.clone());
        let split: Vec<Action> = c
            .others()
            .into_iter()
            .map(|to| send(to, m.clone()))
            .collect();
        assert!(!altered(&c, &original, &split));
        assert!(!altered(&c, &original, &pass(original.clone())));
        assert!(altered(&c, &original, &split[..2]));
        assert!(altered(&c, &original, &[]));
    }

    #[test]
    fn the_equivocating_primary_sends_a_valid_other_pre_prepare_to_half_b() {
        let f = fixture(4);
        let c = ctx(&f, 0);
        let keyring = Keyring::new(&f.config).unwrap();
        let b = batch(&f, 3);
        let pp = f.signers[0]
            .sign(PrePrepare {
                view: View(0),
                seq: SeqNo(1),
                digest: batch_digest(&b).unwrap(),
            })
            .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut s = EquivocatingPrimary::new();
        let persist = Output::Persist {
            id: crate::PersistId(0),
            records: vec![PersistRecord::PrePrepare {
                pre_prepare: pp.clone(),
                batch: b.clone(),
            }],
        };
        assert_eq!(s.outgoing(&c, persist.clone(), &mut rng), pass(persist));
        let out = s.outgoing(
            &c,
            Output::Broadcast(Message::PrePrepare {
                pre_prepare: pp.clone(),
                batch: b.clone(),
            }),
            &mut rng,
        );
        assert_eq!(out.len(), 3);
        let mut digests = BTreeSet::new();
        for action in out {
            let Action::Emit(Output::Send {
                to,
                message: Message::PrePrepare { pre_prepare, batch },
            }) = action
            else {
                panic!("not a pre-prepare send");
            };
            assert_eq!(batch_digest(&batch).unwrap(), pre_prepare.value.digest);
            assert_eq!(
                (pre_prepare.value.view, pre_prepare.value.seq),
                (View(0), SeqNo(1))
            );
            keyring.verify(pre_prepare.clone()).unwrap();
            assert_eq!(
                pre_prepare == pp,
                to == ReplicaId(1),
                "half a gets the original"
            );
            digests.insert(pre_prepare.value.digest);
        }
        assert_eq!(digests.len(), 2);
    }

    #[test]
    fn non_canonical_signatures_fail_strict_verification() {
        let f = fixture(4);
        let keyring = Keyring::new(&f.config).unwrap();
        let signed = f.signers[1]
            .sign(Prepare {
                view: View(0),
                seq: SeqNo(1),
                digest: Digest([3; 32]),
            })
            .unwrap();
        keyring.verify(signed.clone()).unwrap();
        let mut bad = signed;
        bad.signature = non_canonical(bad.signature);
        assert!(keyring.verify(bad).is_err());
        let sig = Signature([0; 64]);
        assert_eq!(&non_canonical(sig).0[32..], &ED25519_L);
    }

    #[test]
    fn until_passes_everything_through_once_faults_stop() {
        let f = fixture(4);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut s = Until {
            strategy: SilentPrimary,
            until: Time(1_000),
        };
        let pp = f.signers[0]
            .sign(PrePrepare {
                view: View(0),
                seq: SeqNo(1),
                digest: Digest([1; 32]),
            })
            .unwrap();
        let o = Output::Broadcast(Message::PrePrepare {
            pre_prepare: pp,
            batch: batch(&f, 1),
        });
        let mut before = ctx(&f, 0);
        before.now = Time(999);
        assert!(s.outgoing(&before, o.clone(), &mut rng).is_empty());
        assert_eq!(s.outgoing(&ctx(&f, 0), o.clone(), &mut rng), pass(o));
    }

    #[test]
    fn alternative_batch_reorders_two_requests_or_more() {
        let f = fixture(4);
        assert!(alternative_batch(&Batch::default()).is_none());
        assert!(alternative_batch(&batch(&f, 1)).is_none());
        let b = batch(&f, 2);
        let alt = alternative_batch(&b).unwrap();
        assert_ne!(batch_digest(&alt).unwrap(), batch_digest(&b).unwrap());
    }
}
