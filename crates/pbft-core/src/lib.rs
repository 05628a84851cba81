//! The PBFT protocol (Castro and Liskov, OSDI 1999; TOCS 2002) as a pure
//! state machine: the normal case (PBFT 4.2), checkpoints and garbage
//! collection (4.3), view change (4.4, 4.5) and state transfer in verifiable
//! chunks (TOCS 6.2, [`chunks`]), with a deterministic simulator ([`sim`])
//! and programmable Byzantine replicas ([`byzantine`]).
//!
//! # Shape
//!
//! Like `quinn-proto` and `raft-rs`, this crate performs no I/O, reads no
//! clock and starts no thread. A [`Replica`] is driven by one entry point,
//! [`Replica::step`]`(now, input) -> Vec<Output>`:
//!
//! - [`Input`]: a client request (from the client's authenticated channel),
//!   a message from replica `from` (the transport authenticated `from`; a
//!   message whose signer differs is rejected), a timer that fired, or the
//!   acknowledgement that a persist is durable.
//! - [`Output`]: send, broadcast, reply to a client, persist records, set or
//!   cancel a timer, and events (`Executed`, `CheckpointStable`,
//!   `ViewChangeStarted`, `ViewChanged`, `Rejected` with a typed
//!   [`Rejection`] the host counts).
//!
//! The replica owns the [`Application`] and calls it when a batch commits,
//! strictly in sequence order; [`Output::Executed`] only reports it.
//!
//! # Persist before send
//!
//! A message that promises something (pre-prepare, prepare, commit,
//! checkpoint, view change, new view) is emitted only after the host acknowledged, with
//! [`Input::PersistDone`], the [`Output::Persist`] holding the record it
//! depends on ([`PersistRecord`]: the pre-prepare with its batch, the
//! prepare, the commit with the prepared certificate that justifies it, the
//! checkpoint with its snapshot, the view change, the new view). A replica's own
//! prepare, commit and checkpoint also count in its own quorums only once
//! durable. The simulator checks this for every message.
//!
//! # Restart recovery
//!
//! A host that restarts a replica builds a [`DurableState`] from what it
//! made durable (a store, or [`DurableState::apply`] over the acknowledged
//! records) and calls [`Replica::restore`]: the stable snapshot is checked
//! against its certificate, committed batches above it are executed again,
//! and the replica's own votes go back into the log, so that it never
//! pre-prepares, prepares or commits a second digest at a (view, seq)
//! where it already did; a replica that was changing views resumes waiting
//! for the NEW-VIEW (and re-sends its VIEW-CHANGE), one that entered a view
//! re-installs that view's re-proposals from the NEW-VIEW. The simulator crashes and restarts replicas from
//! their acknowledged records ([`sim::SimConfig::restarts`]).
//!
//! # Request authentication
//!
//! Chosen by [`Params::request_auth`]:
//! - [`RequestAuth::ClientSignatures`] (default): clients sign requests with
//!   ed25519. The primary verifies the requests of a batch together (ed25519
//!   batch verification) when it closes the batch and drops forged ones; a
//!   backup verifies, with `Keyring::verify_batch`, every request of the
//!   batch it did not receive itself from the client over the client's
//!   authenticated channel, before it accepts the pre-prepare. A Byzantine
//!   primary therefore cannot invent or alter a request; clients that send
//!   each request to every replica spare the backups their verifications.
//! - [`RequestAuth::Macs`] (TOCS 3.2): clients may attach an authenticator
//!   of one MAC per replica instead of a signature (about a microsecond
//!   against ~15 µs to sign and ~12-30 µs to check). Each replica checks its
//!   own entry when the request arrives; a backup checks its entry for the
//!   requests of a batch it did not receive itself. A bad entry is no
//!   evidence against the primary (the client may have spoiled it for this
//!   replica alone), so the backup parks the pre-prepare and accepts it once
//!   `f + 1` other backups prepared it, or once the client sends it the
//!   request. Safety is unchanged; a Byzantine client can stall one batch
//!   until a view change, which signatures prevent.
//! - [`RequestAuth::Channel`]: clients send each request to every replica
//!   over their authenticated channel; a backup accepts a pre-prepare only
//!   when it holds every request of the batch itself, received from the
//!   client, and parks it (bounded) until then.
//!
//! Exactly once: each replica keeps, per client, the last request number
//! executed and its reply; a retransmission gets the cached reply, a batch
//! entry at or below that number is skipped. The table is part of the
//! checkpointed state ([`app::Snapshot`]), whose digest is the Merkle root
//! of its encoding ([`chunks::snapshot_root`]).
//!
//! # Bounds
//!
//! Everything is bounded by a named [`Params`] field: the log window `L`
//! (`log_window_seqs`), the pipeline, batch size, pending requests (total
//! and per client), messages above the high watermark (per sender), parked
//! pre-prepares. Messages for another view or outside the window are
//! rejected with [`Rejection::WrongView`] or [`Rejection::OutsideWindow`];
//! those just above the window are buffered within the bound.
//!
//! # Liveness helpers
//!
//! With no progress for `retransmit_interval_us`, a replica sends again its
//! own messages for unexecuted sequence numbers and its unstable
//! checkpoint, and asks for the next batch with `Fetch::Batch`; a replica
//! that has it committed answers with the pre-prepare, the batch and `2f + 1`
//! signed commits. A replica whose fetch falls below a peer's stable
//! checkpoint gets the checkpoint proof instead: if it already executed that
//! far it adopts the proof (and collects garbage); otherwise it fetches the
//! snapshot (state transfer, below). A replica that receives a checkpoint
//! below its own stable one answers with its proof.
//!
//! PBFT 4.1, relaying: a client that gets no answer in time sends its
//! request to every replica. A backup that has held a request for a whole
//! retransmission interval without executing it sends it to the primary
//! ([`Output::Send`] of `Message::Request`), once per view, and again at
//! once when the client retransmits it; at most
//! [`RELAYED_REQUESTS_PER_INTERVAL_MAX`] per interval. The primary checks
//! the client's authenticator in full before it holds a relayed request
//! (a forged one is rejected with the relaying replica named), and takes
//! at most [`RELAYED_REQUESTS_RECEIVED_PER_INTERVAL_MAX`] from one replica
//! per interval. Under
//! [`RequestAuth::Channel`] only the client's own channel vouches for a
//! request, so nothing is relayed and a primary the clients cannot reach
//! is replaced by a view change instead.
//!
//! # View change (PBFT 4.4, 4.5)
//!
//! A backup runs the view-change timer while it holds a request it has not
//! executed. When it fires, or when `f + 1` replicas sent valid
//! VIEW-CHANGEs for higher views (then it joins the smallest such view), or
//! when a NEW-VIEW signed by the new primary does not verify, the replica
//! leaves its view: it accepts no normal-case message, and persists then
//! multicasts a signed VIEW-CHANGE with its stable checkpoint proof and its
//! prepared certificates above it (kept per sequence number, the highest
//! view, durable with the commit they justify). The new primary gathers
//! `2f + 1` valid ones (its own included), computes the re-proposals (the
//! highest-view prepared digest for each sequence number above the highest
//! proven checkpoint, null requests for the gaps), and persists then
//! multicasts NEW-VIEW. Backups verify every VIEW-CHANGE in it, recompute
//! the re-proposals, and prepare them; batches they lack are fetched by
//! digest (`Fetch::PreparedBatch`). Successive view changes double the
//! timeout (up to `view_change_backoff_max`) until a request executes, so
//! that a slow but correct primary eventually keeps its view. A replica that
//! sees messages of a later view asks their sender for its NEW-VIEW.
//!
//! # State transfer (TOCS 6.2)
//!
//! A replica behind a stable checkpoint, or whose state at a checkpoint
//! differs from the one `2f + 1` replicas certify, fetches that
//! checkpoint's snapshot in chunks of [`chunks::SNAPSHOT_CHUNK_BYTES`],
//! each checked on arrival against the certified Merkle root; a peer that
//! serves a bad chunk is marked and another one asked. Memory is bounded by
//! `snapshot_bytes_max`. The committed batches after it are then fetched
//! with their commit certificates. None of it depends on the view, so it
//! also runs during a view change.
//!
//! # Example
//!
//! Four replicas, two clients, a lossy network and one crashed backup:
//!
//! ```
//! use pbft_core::sim::{NetworkConfig, Sim, SimConfig};
//! use pbft_core::Time;
//! use pbft_types::ReplicaId;
//!
//! let mut config = SimConfig::new(7, 4);
//! config.network = NetworkConfig {
//!     delay_us_min: 100,
//!     delay_us_max: 2_000,
//!     drop_ppm: 20_000,
//!     duplicate_ppm: 20_000,
//!     heal_at_us: None,
//! };
//! config.crashes = vec![(ReplicaId(3), Time(0))];
//! let mut sim = Sim::new(config)?;
//! let report = sim.run_and_check(true)?;
//! assert_eq!(report.requests_completed, 8);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod app;
pub mod byzantine;
pub mod chunks;
mod error;
mod io;
mod params;
mod replica;
pub mod restore;
pub mod sim;

pub use app::{Application, CounterApp, KvApp, KvOp};
pub use error::Rejection;
pub use io::{Input, Output, Peer, PersistId, PersistRecord, Time, Timer};
pub use params::{Params, ParamsError, RequestAuth};
pub use replica::{
    Replica, Stats, RELAYED_REQUESTS_PER_INTERVAL_MAX, RELAYED_REQUESTS_RECEIVED_PER_INTERVAL_MAX,
};
pub use restore::{CommittedBatch, DurableState, RestoreError, StableState};
