//! View change (PBFT 4.4) and its liveness rules (PBFT 4.5).
//!
//! - A backup whose view-change timer fires, `f + 1` replicas asking for
//!   higher views, or an invalid NEW-VIEW make a replica leave its view: it
//!   stops accepting normal-case messages, persists and multicasts a signed
//!   VIEW-CHANGE carrying its stable checkpoint proof and its prepared
//!   certificates above it (the sets `C` and `P`).
//! - The primary of the new view gathers `2f + 1` valid VIEW-CHANGEs (its
//!   own among them), computes the pre-prepares to re-propose ([`compute_o`]:
//!   the highest-view prepared digest for each sequence number, null
//!   requests for the gaps), persists and multicasts NEW-VIEW.
//! - A backup checks NEW-VIEW by verifying every VIEW-CHANGE in it and
//!   recomputing the pre-prepares; it then enters the view and prepares
//!   them. An invalid NEW-VIEW signed by the new primary makes it move on.
//! - Timeouts double with successive view changes until a request executes
//!   (PBFT 4.5), so that a slow but correct primary keeps its view.
//!
//! A VIEW-CHANGE is checked as a whole: one invalid certificate makes that
//! replica's VIEW-CHANGE invalid (only a faulty replica sends one), and it
//! counts for nothing; every other replica's VIEW-CHANGE is checked on its
//! own, so it never hides the valid ones.

use std::collections::BTreeMap;

use pbft_crypto::Verified;
use pbft_types::{
    Batch, Checkpoint, Digest, Fetch, Message, NewView, PrePrepare, Prepare, PreparedCert,
    QuorumCert, ReplicaId, SeqNo, Signed, View, ViewChange,
};

use super::{AfterPersist, Replica, Slot};
use crate::app::Application;
use crate::io::{Output, Peer, PersistRecord, Timer};
use crate::Rejection;

/// What a NEW-VIEW must contain, computed from its VIEW-CHANGEs (PBFT 4.4,
/// the set `O`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NewViewPlan {
    /// The highest stable checkpoint proven in the view changes (`min-s`).
    pub checkpoint: Option<QuorumCert<Checkpoint>>,
    /// `(seq, digest)` for every seq in `(min-s, max-s]`; [`Digest::ZERO`]
    /// is a null request.
    pub entries: Vec<(SeqNo, Digest)>,
}

impl NewViewPlan {
    fn min_s(&self) -> SeqNo {
        self.checkpoint.as_ref().map_or(SeqNo(0), |c| c.value.seq)
    }
}

/// PBFT 4.4: `min-s` is the highest stable checkpoint in `V`; `max-s` the
/// highest sequence number of a prepared certificate in `V`; each sequence
/// number between gets the digest of the prepared certificate of the
/// highest view for it, or the null digest. The view changes must have been
/// verified (so `max-s - min-s` is at most the log window).
pub(crate) fn compute_o<'a>(view_changes: impl IntoIterator<Item = &'a ViewChange>) -> NewViewPlan {
    let view_changes: Vec<&ViewChange> = view_changes.into_iter().collect();
    let mut checkpoint: Option<&QuorumCert<Checkpoint>> = None;
    for vc in &view_changes {
        if let Some(c) = &vc.checkpoint {
            if checkpoint.is_none_or(|best| c.value.seq > best.value.seq) {
                checkpoint = Some(c);
            }
        }
    }
    let min_s = checkpoint.map_or(SeqNo(0), |c| c.value.seq);
    let mut best: BTreeMap<SeqNo, (pbft_types::View, Digest)> = BTreeMap::new();
    for vc in &view_changes {
        for cert in &vc.prepared {
            let PrePrepare { view, seq, digest } = cert.pre_prepare.value;
            if seq <= min_s {
                continue;
            }
            let entry = best.entry(seq).or_insert((view, digest));
            if view > entry.0 {
                *entry = (view, digest);
            }
        }
    }
    let max_s = best.keys().next_back().copied().unwrap_or(min_s);
    let entries = (min_s.0 + 1..=max_s.0)
        .map(|s| {
            let seq = SeqNo(s);
            (seq, best.get(&seq).map_or(Digest::ZERO, |(_, d)| *d))
        })
        .collect();
    NewViewPlan {
        checkpoint: checkpoint.cloned(),
        entries,
    }
}

impl<A: Application> Replica<A> {
    // ----- leaving a view -----------------------------------------------------

    /// PBFT 4.4: moves to `target` (above the current view), stops accepting
    /// normal-case messages and multicasts a VIEW-CHANGE once it is durable.
    pub(super) fn start_view_change(&mut self, target: View) {
        if target <= self.view {
            return;
        }
        self.view = target;
        self.view_active = false;
        self.view_change_backoff = self.view_change_backoff.saturating_add(1);
        self.leave_view();
        let prepared: Vec<PreparedCert> = self
            .prepared_certs
            .range(self.low.next()..)
            .map(|(_, c)| c.clone())
            .collect();
        let vc = ViewChange {
            new_view: target,
            checkpoint: self.stable_cert.clone(),
            prepared,
        };
        let vc = match self.signer.sign_verified(vc) {
            Ok(vc) => vc,
            Err(e) => return self.reject(Peer::Host, Rejection::Internal(e.to_string())),
        };
        self.stats.signatures_made += 1;
        self.view_changes.insert(self.id, vc.clone());
        self.view_changes
            .retain(|_, v| v.value().new_view >= target);
        let record = PersistRecord::ViewChange(vc.signed().clone());
        self.persist(vec![record], vec![AfterPersist::ViewChange(vc)]);
        self.outputs
            .push(Output::ViewChangeStarted { view: target });
        if self.view_change_armed {
            self.view_change_armed = false;
            self.outputs.push(Output::CancelTimer(Timer::ViewChange));
        }
        self.on_view_changes_updated();
    }

    /// Drops the normal-case state of the view being left: uncommitted
    /// slots (their batches are kept by digest for re-proposals, their
    /// prepared certificates are in `prepared_certs`), parked pre-prepares,
    /// the primary's assignments. Requests of dropped batches go back to
    /// the pending queue, so the timer keeps running for them.
    fn leave_view(&mut self) {
        let uncommitted: Vec<SeqNo> = self
            .log
            .iter()
            .filter(|(_, s)| !s.committed)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in uncommitted {
            let Some(slot) = self.log.remove(&seq) else {
                continue;
            };
            if let (Some(pp), Some(batch)) = (slot.pre_prepare, slot.batch) {
                let digest = pp.value().digest;
                for r in &batch.requests {
                    self.requeue(r);
                }
                self.known_batches.insert(digest, (seq, batch));
            }
        }
        self.parked.clear();
        self.in_flight.clear();
        self.batch_deadline = None;
        self.new_view_msg = None;
        self.bound_known_batches();
    }

    /// Puts a request of an abandoned batch back into the pending queue
    /// (within its bounds) unless it executed.
    fn requeue(&mut self, r: &pbft_types::ClientRequest) {
        let executed = self
            .replies
            .get(&r.signer)
            .is_some_and(|c| r.value.request_no <= c.request_no);
        if executed
            || self.pending.contains(r.signer, r.value.request_no)
            || self.pending.len() >= self.params.pending_requests_max
            || self.pending.client_len(r.signer) >= self.params.client_pending_requests_max
        {
            return;
        }
        // Marked unchecked: this replica need not have verified its
        // signature (a backup matches a batch's requests with those it
        // holds, `verify_requests`).
        self.pending.insert(r.clone(), false);
    }

    /// Batches kept for re-proposals are bounded by the log window: those at
    /// or below the low watermark go, and at most `log_window_seqs` stay.
    pub(super) fn bound_known_batches(&mut self) {
        let low = self.low;
        self.known_batches.retain(|_, (seq, _)| *seq > low);
        let max = usize::try_from(self.params.log_window_seqs).unwrap_or(usize::MAX);
        while self.known_batches.len() > max {
            let lowest = self
                .known_batches
                .iter()
                .min_by_key(|(_, (seq, _))| *seq)
                .map(|(d, _)| *d);
            match lowest {
                Some(d) => {
                    self.known_batches.remove(&d);
                }
                None => break,
            }
        }
    }

    /// The view-change timeout: doubled for each view change since a
    /// request last executed (PBFT 4.5), up to `2^view_change_backoff_max`.
    pub(super) fn view_change_timeout_us(&self) -> u64 {
        let exp = self
            .view_change_backoff
            .min(self.params.view_change_backoff_max);
        self.params
            .view_change_timeout_us
            .saturating_mul(1u64 << exp.min(63))
    }

    // ----- receiving view changes ------------------------------------------------

    pub(super) fn on_view_change(&mut self, from: ReplicaId, signed: Signed<ViewChange>) {
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
        let v = signed.value.new_view;
        if v < self.view || (v == self.view && self.view_active) {
            // The sender is behind: our NEW-VIEW lets it catch up.
            if let Some(nv) = self.new_view_msg.clone() {
                self.outputs.push(Output::Send {
                    to: from,
                    message: Message::NewView(nv),
                });
            }
            return self.reject(
                peer,
                Rejection::WrongView {
                    expected: self.view,
                    got: v,
                },
            );
        }
        if let Some(existing) = self.view_changes.get(&from) {
            let old = existing.value().new_view;
            if old > v || (old == v && *existing.signed() == signed) {
                return self.reject(peer, Rejection::Duplicate);
            }
            if old == v {
                return self.reject(
                    peer,
                    Rejection::ConflictingVote {
                        replica: from,
                        seq: SeqNo(0),
                    },
                );
            }
        }
        let vc = match self.verify_view_change(signed, v) {
            Ok(vc) => vc,
            Err(reason) => return self.reject(peer, reason),
        };
        self.view_changes.insert(from, vc);
        self.on_view_changes_updated();
    }

    /// PBFT 4.4: a VIEW-CHANGE for `view` is valid when it is signed by its
    /// sender, its checkpoint proof verifies, and each prepared certificate
    /// is for an earlier view, inside the window above the checkpoint,
    /// signed by that view's primary and `2f` other replicas.
    fn verify_view_change(
        &mut self,
        signed: Signed<ViewChange>,
        view: View,
    ) -> Result<Verified<ViewChange>, Rejection> {
        let bad = Rejection::InvalidViewChange;
        if signed.value.new_view != view {
            return Err(bad("view"));
        }
        let window = self.params.log_window_seqs;
        if signed.value.prepared.len() as u64 > window {
            return Err(bad("more prepared certificates than the log window"));
        }
        let checkpoint_seq = signed
            .value
            .checkpoint
            .as_ref()
            .map_or(SeqNo(0), |c| c.value.seq);
        if checkpoint_seq.0 % self.params.checkpoint_interval_seqs != 0 {
            return Err(bad("checkpoint sequence number"));
        }
        let mut previous = checkpoint_seq;
        let high = SeqNo(checkpoint_seq.0.saturating_add(window));
        for cert in &signed.value.prepared {
            let s = cert.pre_prepare.value.seq;
            if s <= previous || s > high {
                return Err(bad(
                    "prepared sequence numbers out of order or outside the window",
                ));
            }
            previous = s;
        }
        self.stats.signatures_verified += 1;
        let vc = self
            .keyring
            .verify(signed)
            .map_err(|_| Rejection::BadSignature)?;
        if let Some(cert) = vc.value().checkpoint.clone() {
            self.stats.certificates_verified += 1;
            self.keyring
                .verify_cert(cert, self.quorum())
                .map_err(|_| bad("checkpoint certificate"))?;
        }
        for cert in vc.value().prepared.clone() {
            self.verify_prepared_cert(cert, view)?;
        }
        Ok(vc)
    }

    /// A prepared certificate for a view before `before`: the pre-prepare
    /// of that view's primary and `2f` prepares from other replicas over
    /// the same view, sequence number and digest.
    pub(super) fn verify_prepared_cert(
        &mut self,
        cert: PreparedCert,
        before: View,
    ) -> Result<(), Rejection> {
        let bad = Rejection::InvalidViewChange;
        let PreparedCert {
            pre_prepare,
            prepares,
        } = cert;
        let PrePrepare { view, seq, digest } = pre_prepare.value;
        if view >= before {
            return Err(bad("prepared certificate of a later view"));
        }
        let primary = self.config.primary(view);
        if pre_prepare.signer != primary {
            return Err(bad("pre-prepare not from the primary of its view"));
        }
        if prepares.value != (Prepare { view, seq, digest }) {
            return Err(bad("prepares do not match the pre-prepare"));
        }
        if prepares.signatures.iter().any(|(id, _)| *id == primary) {
            return Err(bad("a prepare from the primary"));
        }
        self.stats.signatures_verified += 1;
        self.keyring
            .verify(pre_prepare)
            .map_err(|_| bad("pre-prepare signature"))?;
        self.stats.certificates_verified += 1;
        self.keyring
            .verify_cert(prepares, self.prepare_quorum())
            .map_err(|_| bad("prepare certificate"))?;
        Ok(())
    }

    /// After a new valid VIEW-CHANGE: join a higher view on `f + 1`, send
    /// NEW-VIEW as the new primary, start the PBFT 4.5 timer.
    fn on_view_changes_updated(&mut self) {
        // PBFT 4.5: f + 1 replicas (so at least one correct) ask for views
        // above ours: move to the smallest view of such a set.
        let mut above: Vec<View> = self
            .view_changes
            .iter()
            .filter(|(id, vc)| **id != self.id && vc.value().new_view > self.view)
            .map(|(_, vc)| vc.value().new_view)
            .collect();
        let f = self.config.f();
        if above.len() > f {
            above.sort_unstable_by(|a, b| b.cmp(a));
            if let Some(target) = above.get(f).copied() {
                return self.start_view_change(target);
            }
        }
        if self.view_active {
            return;
        }
        let count = self
            .view_changes
            .values()
            .filter(|vc| vc.value().new_view == self.view)
            .count();
        if count < self.quorum() {
            return;
        }
        if self.is_primary() && self.view_changes.contains_key(&self.id) {
            return self.send_new_view();
        }
        // PBFT 4.5: with 2f + 1 view changes in, wait for the NEW-VIEW for
        // the (doubled) timeout, then move on.
        self.arm_view_change_timer();
    }

    // ----- the new primary --------------------------------------------------------

    /// PBFT 4.4: the new primary's NEW-VIEW from `2f + 1` view changes (its
    /// own and those of the lowest other ids, for determinism).
    fn send_new_view(&mut self) {
        let view = self.view;
        let mut chosen: Vec<Verified<ViewChange>> = Vec::with_capacity(self.quorum());
        if let Some(own) = self.view_changes.get(&self.id) {
            chosen.push(own.clone());
        }
        for (id, vc) in &self.view_changes {
            if chosen.len() >= self.quorum() {
                break;
            }
            if *id != self.id && vc.value().new_view == view {
                chosen.push(vc.clone());
            }
        }
        let plan = compute_o(chosen.iter().map(Verified::value));
        let mut pre_prepares = Vec::with_capacity(plan.entries.len());
        for (seq, digest) in &plan.entries {
            match self.signer.sign_verified(PrePrepare {
                view,
                seq: *seq,
                digest: *digest,
            }) {
                Ok(pp) => pre_prepares.push(pp),
                Err(e) => return self.reject(Peer::Host, Rejection::Internal(e.to_string())),
            }
        }
        self.stats.signatures_made += pre_prepares.len() as u64 + 1;
        let nv = NewView {
            view,
            view_changes: chosen.into_iter().map(Verified::into_signed).collect(),
            pre_prepares: pre_prepares.iter().map(|p| p.signed().clone()).collect(),
        };
        let nv = match self.signer.sign(nv) {
            Ok(nv) => nv,
            Err(e) => return self.reject(Peer::Host, Rejection::Internal(e.to_string())),
        };
        self.install_new_view(nv, plan, pre_prepares);
    }

    // ----- a backup receiving NEW-VIEW ------------------------------------------------

    pub(super) fn on_new_view(&mut self, from: ReplicaId, signed: Signed<NewView>) {
        let peer = Peer::Replica(from);
        let view = signed.value.view;
        let primary = self.config.primary(view);
        // PBFT 4.4: the NEW-VIEW is the new primary's signed message; any
        // replica may relay it (the answer to `Fetch::NewView` comes from
        // whichever peer was asked), and the signature, checked below,
        // binds it to the primary.
        if signed.signer != primary || primary == self.id {
            return self.reject(
                peer,
                Rejection::NotPrimary {
                    expected: primary,
                    got: signed.signer,
                },
            );
        }
        if view < self.view || (view == self.view && self.view_active) {
            return self.reject(peer, Rejection::Duplicate);
        }
        match self.verify_new_view(signed) {
            Ok((nv, plan, pre_prepares)) => self.install_new_view(nv, plan, pre_prepares),
            Err((reason, signed_by_primary)) => {
                self.reject(peer, reason);
                if signed_by_primary && view == self.view && !self.view_active {
                    // PBFT 4.4: an invalid NEW-VIEW from the primary of the
                    // view this replica waits for proves it faulty: move to
                    // the next view. One for a view ahead proves nothing
                    // about the view this replica is in, and following it
                    // would let one Byzantine replica drag correct replicas
                    // to any view (up to u64::MAX) one by one; such a
                    // replica joins higher views through f + 1 VIEW-CHANGEs
                    // or a valid NEW-VIEW instead (PBFT 4.5).
                    self.start_view_change(view.next());
                }
            }
        }
    }

    /// Verifies a NEW-VIEW: the primary's signature, `2f + 1` valid
    /// view changes for its view from distinct replicas, and pre-prepares
    /// equal to those recomputed from them. The flag tells whether the
    /// primary's signature was valid (then a failure proves it faulty).
    #[allow(clippy::type_complexity)]
    fn verify_new_view(
        &mut self,
        signed: Signed<NewView>,
    ) -> Result<(Signed<NewView>, NewViewPlan, Vec<Verified<PrePrepare>>), (Rejection, bool)> {
        let bad = |r: &'static str| (Rejection::InvalidViewChange(r), true);
        let view = signed.value.view;
        let n = self.config.n();
        if signed.value.view_changes.len() > n
            || signed.value.pre_prepares.len() as u64 > self.params.log_window_seqs
        {
            return Err((Rejection::InvalidViewChange("too many entries"), false));
        }
        self.stats.signatures_verified += 1;
        let verified = self
            .keyring
            .verify(signed)
            .map_err(|_| (Rejection::BadSignature, false))?;
        let signed = verified.into_signed();
        let mut signers = std::collections::BTreeSet::new();
        for vc in &signed.value.view_changes {
            if !signers.insert(vc.signer) {
                return Err(bad("a replica's view change appears twice"));
            }
        }
        if signers.len() < self.quorum() {
            return Err(bad("fewer than 2f + 1 view changes"));
        }
        for vc in signed.value.view_changes.clone() {
            let cached = self
                .view_changes
                .get(&vc.signer)
                .is_some_and(|known| *known.signed() == vc);
            if !cached {
                self.verify_view_change(vc, view).map_err(|r| (r, true))?;
            }
        }
        let plan = compute_o(signed.value.view_changes.iter().map(|vc| &vc.value));
        if plan.entries.len() != signed.value.pre_prepares.len() {
            return Err(bad("pre-prepares differ from the recomputed set"));
        }
        let primary = self.config.primary(view);
        for (pp, (seq, digest)) in signed.value.pre_prepares.iter().zip(&plan.entries) {
            if pp.signer != primary
                || pp.value
                    != (PrePrepare {
                        view,
                        seq: *seq,
                        digest: *digest,
                    })
            {
                return Err(bad("pre-prepares differ from the recomputed set"));
            }
        }
        self.stats.signatures_verified += signed.value.pre_prepares.len() as u64;
        let mut pre_prepares = Vec::with_capacity(plan.entries.len());
        for result in self.keyring.verify_batch(signed.value.pre_prepares.clone()) {
            pre_prepares.push(result.map_err(|_| bad("pre-prepare signature"))?);
        }
        Ok((signed, plan, pre_prepares))
    }

    // ----- entering the new view ---------------------------------------------------

    /// Enters the view of a valid NEW-VIEW (sent or accepted): the stable
    /// checkpoint moves to `min-s` (fetching its state if this replica is
    /// behind), each re-proposed sequence number gets the new pre-prepare,
    /// and a backup prepares them once the NEW-VIEW and its prepares are
    /// durable (PBFT 4.4).
    fn install_new_view(
        &mut self,
        nv: Signed<NewView>,
        plan: NewViewPlan,
        pre_prepares: Vec<Verified<PrePrepare>>,
    ) {
        let view = nv.value.view;
        if view > self.view {
            self.leave_view();
        }
        self.view = view;
        self.view_active = true;
        // PBFT 4.1: requests still waiting are relayed to the new primary
        // once they have waited a whole interval in this view.
        self.relay_from = 0;
        self.relay_mark = 0;
        self.new_view_msg = Some(nv.clone());
        self.view_changes.retain(|_, vc| vc.value().new_view > view);
        if self.view_change_armed {
            self.view_change_armed = false;
            self.outputs.push(Output::CancelTimer(Timer::ViewChange));
        }
        let primary = self.primary();
        let is_primary = primary == self.id;
        self.outputs.push(Output::ViewChanged { view, primary });
        self.adopt_checkpoint(plan.checkpoint.clone(), &nv);
        let mut records = vec![PersistRecord::NewView(nv.clone())];
        let mut after = Vec::new();
        if is_primary {
            after.push(AfterPersist::BroadcastNewView(nv));
        }
        let mut missing = Vec::new();
        for pp in pre_prepares {
            let (seq, digest) = (pp.value().seq, pp.value().digest);
            if seq <= self.low {
                continue;
            }
            if self.log.get(&seq).is_some_and(|s| s.committed) {
                // Committed here already (PBFT 4.4 guarantees the same digest);
                // peers that lack it fetch it with its commit certificate.
                continue;
            }
            let batch = if digest == Digest::ZERO {
                Some(Batch::default())
            } else {
                self.known_batches.get(&digest).map(|(_, b)| b.clone())
            };
            if batch.is_none() {
                missing.push((seq, digest));
            }
            if let Some(b) = &batch {
                if is_primary {
                    for r in &b.requests {
                        self.in_flight.insert((r.signer, r.value.request_no));
                    }
                }
            }
            let slot = self.log.entry(seq).or_default();
            *slot = Slot {
                pre_prepare: Some(pp),
                batch,
                prepare_signed: true,
                own_prepare_persisting: !is_primary,
                ..Slot::default()
            };
            if !is_primary {
                let prepare = match self.signer.sign_verified(Prepare { view, seq, digest }) {
                    Ok(p) => p,
                    Err(e) => return self.reject(Peer::Host, Rejection::Internal(e.to_string())),
                };
                self.stats.signatures_made += 1;
                records.push(PersistRecord::Prepare(prepare.signed().clone()));
                after.push(AfterPersist::Prepare(prepare));
            }
        }
        self.persist(records, after);
        for (seq, digest) in missing {
            self.outputs
                .push(Output::Broadcast(Message::Fetch(Fetch::PreparedBatch {
                    seq,
                    digest,
                })));
        }
        let max_s = plan
            .entries
            .last()
            .map_or(plan.min_s(), |(seq, _)| *seq)
            .max(plan.min_s());
        if is_primary {
            self.next_seq = max_s.max(self.last_executed).max(self.low).next();
            if !self.pending.is_empty() {
                self.batch_deadline = Some(self.now.plus_us(self.params.batch_delay_us_max));
            }
        }
        self.replay_future();
        self.execute_ready();
        self.update_view_change_timer();
    }

    /// The NEW-VIEW's stable checkpoint (`min-s`): adopt it if this replica
    /// executed that far, or fetch its state from the replicas whose
    /// view changes proved it.
    fn adopt_checkpoint(&mut self, cert: Option<QuorumCert<Checkpoint>>, nv: &Signed<NewView>) {
        let Some(cert) = cert else {
            return;
        };
        let seq = cert.value.seq;
        if seq <= self.low {
            return;
        }
        if seq <= self.last_executed {
            let digest = cert.value.state_digest;
            let own = self
                .checkpoints
                .get(&seq)
                .and_then(|v| v.get(&self.id))
                .map(|c| c.value().state_digest);
            if own.is_none_or(|d| d == digest) {
                self.garbage_collect(seq, digest, cert);
            }
            return;
        }
        let holders: Vec<ReplicaId> = nv
            .value
            .view_changes
            .iter()
            .filter(|vc| {
                vc.signer != self.id
                    && vc
                        .value
                        .checkpoint
                        .as_ref()
                        .is_some_and(|c| c.value.seq == seq)
            })
            .map(|vc| vc.signer)
            .collect();
        self.start_transfer(cert, holders, false);
    }

    /// A batch fetched for a re-proposal: installed if a slot waits for
    /// exactly its digest.
    pub(super) fn on_prepared_batch(&mut self, from: ReplicaId, seq: SeqNo, batch: Batch) {
        let peer = Peer::Replica(from);
        let Some(expected) = self
            .log
            .get(&seq)
            .filter(|s| s.batch.is_none())
            .and_then(|s| s.pre_prepare.as_ref())
            .map(|pp| pp.value().digest)
        else {
            return self.reject(peer, Rejection::Duplicate);
        };
        let computed = match super::batch_digest(&batch) {
            Ok(d) => d,
            Err(e) => return self.reject(peer, Rejection::Internal(e.to_string())),
        };
        self.stats.batch_digests += 1;
        if computed != expected {
            return self.reject(
                peer,
                Rejection::DigestMismatch {
                    expected,
                    got: computed,
                },
            );
        }
        if self.is_primary() {
            for r in &batch.requests {
                self.in_flight.insert((r.signer, r.value.request_no));
            }
        }
        if let Some(slot) = self.log.get_mut(&seq) {
            slot.batch = Some(batch);
        }
        self.advance(seq);
        self.execute_ready();
    }

    /// Serves a batch by digest, from the log or the batches kept from
    /// earlier views.
    pub(super) fn prepared_batch(&self, seq: SeqNo, digest: Digest) -> Option<Batch> {
        let in_log = self.log.get(&seq).and_then(|s| {
            let pp = s.pre_prepare.as_ref()?;
            (pp.value().digest == digest).then(|| s.batch.clone())?
        });
        in_log.or_else(|| self.known_batches.get(&digest).map(|(_, b)| b.clone()))
    }

    /// A normal-case message of a view above ours: ask its sender once for
    /// the NEW-VIEW that installed it.
    pub(super) fn ask_new_view(&mut self, from: ReplicaId, view: View) {
        // Asked once per view, a lost request or answer (a peer still
        // connecting after a restart, a dropped datagram) would leave this
        // replica behind for good; asking every message would let a peer's
        // flood make it flood. Once per retransmission interval while
        // messages of a higher view keep arriving is both live and bounded.
        let (asked, at) = self.new_view_asked;
        let again = self.now.0 >= at.0.saturating_add(self.params.retransmit_interval_us);
        if view > self.view && (view > asked || again) {
            self.new_view_asked = (view.max(asked), self.now);
            self.outputs.push(Output::Send {
                to: from,
                message: Message::Fetch(Fetch::NewView),
            });
        }
    }

    /// The re-sent VIEW-CHANGE while waiting for the NEW-VIEW.
    pub(super) fn own_view_change_message(&self) -> Option<Message> {
        let vc = self.view_changes.get(&self.id)?;
        (vc.value().new_view == self.view && !self.view_active)
            .then(|| Message::ViewChange(vc.signed().clone()))
    }

    /// Restores view-change state after a restart: the NEW-VIEW that
    /// installed the highest view (its pre-prepares re-enter the log), or
    /// this replica's VIEW-CHANGE for it (it waits for the NEW-VIEW).
    pub(super) fn restore_view_state(
        &mut self,
        view_change: Option<Signed<ViewChange>>,
        new_view: Option<Signed<NewView>>,
    ) -> Result<(), crate::RestoreError> {
        let bad = |kind| crate::RestoreError::BadOwnRecord {
            kind,
            seq: SeqNo(0),
        };
        if let Some(vc) = view_change.filter(|vc| vc.value.new_view == self.view) {
            if vc.signer != self.id {
                return Err(bad("view-change"));
            }
            let vc = self.keyring.verify(vc).map_err(|_| bad("view-change"))?;
            self.view_changes.insert(self.id, vc);
            self.view_active = false;
            return Ok(());
        }
        if let Some(nv) = new_view.filter(|nv| nv.value.view == self.view) {
            let (nv, plan, pre_prepares) = self.verify_new_view(nv).map_err(|_| bad("new-view"))?;
            self.view_active = true;
            self.new_view_msg = Some(nv);
            for pp in pre_prepares {
                let (seq, digest) = (pp.value().seq, pp.value().digest);
                if seq <= self.low || self.log.get(&seq).is_some_and(|s| s.committed) {
                    continue;
                }
                let batch = if digest == Digest::ZERO {
                    Some(Batch::default())
                } else {
                    self.known_batches.get(&digest).map(|(_, b)| b.clone())
                };
                let slot = self.log.entry(seq).or_default();
                slot.pre_prepare = Some(pp);
                slot.batch = batch;
                slot.prepare_signed = true;
            }
            if self.is_primary() {
                let max_s = plan
                    .entries
                    .last()
                    .map_or(plan.min_s(), |(s, _)| *s)
                    .max(plan.min_s());
                self.next_seq = self.next_seq.max(max_s.next());
            }
        }
        Ok(())
    }
}
