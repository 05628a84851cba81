//! The PBFT protocol (Castro and Liskov, OSDI 1999) as a pure state machine:
//! the normal case (PBFT 4.2), checkpoints and garbage collection (4.3),
//! with a deterministic simulator ([`sim`]).
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
//!   `Rejected` with a typed [`Rejection`] the host counts).
//!
//! The replica owns the [`Application`] and calls it when a batch commits,
//! strictly in sequence order; [`Output::Executed`] only reports it.
//!
//! # Persist before send
//!
//! A message that promises something (pre-prepare, prepare, commit,
//! checkpoint) is emitted only after the host acknowledged, with
//! [`Input::PersistDone`], the [`Output::Persist`] holding the record it
//! depends on ([`PersistRecord`]: the pre-prepare with its batch, the
//! prepare, the commit, the checkpoint with its snapshot). A replica's own
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
//! where it already did. The simulator crashes and restarts replicas from
//! their acknowledged records ([`sim::SimConfig::restarts`]).
//!
//! # Request authentication
//!
//! Chosen by [`Params::request_auth`]:
//! - [`RequestAuth::ClientSignatures`] (default): clients sign requests with
//!   ed25519. The primary verifies the requests of a batch together (ed25519
//!   batch verification) when it closes the batch and drops forged ones; a
//!   backup verifies every request of a batch with
//!   `Keyring::verify_batch` before it accepts the pre-prepare. A Byzantine
//!   primary therefore cannot invent or alter a request.
//! - [`RequestAuth::Channel`]: clients send each request to every replica
//!   over their authenticated channel; a backup accepts a pre-prepare only
//!   when it holds every request of the batch itself, received from the
//!   client, and parks it (bounded) until then.
//!
//! Exactly once: each replica keeps, per client, the last request number
//! executed and its reply; a retransmission gets the cached reply, a batch
//! entry at or below that number is skipped. The table is part of the
//! checkpointed state and of its digest ([`app::checkpoint_digest`]).
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
//! snapshot (one chunk, `Fetch::SnapshotChunk { chunk: 0 }`), restores it,
//! and installs it only if its digest matches the certified one. A replica
//! that receives a checkpoint below its own stable one answers with its
//! proof.
//!
//! View change (PBFT 4.4) is not implemented here (issue 4): a backup starts
//! and stops the view-change timer and reports
//! [`Output::ViewChangeSuspected`] when it fires;
//! [`Replica::prepared_certificate`] gives the entries of the `P` set
//! (the verified pre-prepare and `2f` verified prepares are kept per slot).
//! Multi-chunk snapshots with Merkle proofs are also left to issue 4.
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
pub use replica::{Replica, Stats};
pub use restore::{CommittedBatch, DurableState, RestoreError, StableState};
