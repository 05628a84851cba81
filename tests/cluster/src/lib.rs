//! The real-process cluster harness of the `pbft` toolkit: what
//! `cargo xtask cluster-test`, `cargo xtask demo` and `cargo xtask bench` run.
//!
//! - [`cluster`]: generates a testnet with `pbft-node testnet`, starts and
//!   supervises real `pbft-node run` processes (kill -9, SIGTERM, SIGSTOP /
//!   SIGCONT, restart, store wipe, twin copies), samples their memory and
//!   scrapes their Prometheus metrics ([`metrics`]).
//! - [`proxy`]: the fault proxy, a userspace UDP relay in front of every
//!   replica through which all replica and client traffic flows; per
//!   directed link it drops (partitions, one-way links), loses, delays and
//!   duplicates datagrams, and routes to one of several copies of a replica
//!   (Twins). No root, no network namespaces.
//! - [`workload`]: key-value clients (`pbft-client`) that record every
//!   operation (invoke, ok, fail, unknown) into a [`pbft_lincheck::History`];
//!   [`rawclient`] adds clients that misbehave (never read replies, replay a
//!   request).
//! - [`scenario`]: the named fault scenarios (FAULTS.md) as data, and
//!   [`runner`]: runs one scenario and checks it; [`report`] formats the
//!   verdicts.
//! - [`demo`] and [`bench`]: the demo and the benchmark sweep.
//! - [`supervise`]: each replica process in a process group of its own,
//!   and all of them killed when the harness is interrupted.

pub mod bench;
pub mod cluster;
pub mod demo;
pub mod metrics;
pub mod proxy;
pub mod rawclient;
pub mod report;
pub mod rng;
pub mod runner;
pub mod scenario;
pub mod supervise;
pub mod workload;

/// An error of the harness itself (not a verdict): setup, I/O, a node that
/// cannot start.
#[derive(Debug)]
pub struct HarnessError(pub String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

impl From<std::io::Error> for HarnessError {
    fn from(e: std::io::Error) -> Self {
        Self(e.to_string())
    }
}

/// Shorthand for harness results.
pub type Result<T> = std::result::Result<T, HarnessError>;

/// Makes a [`HarnessError`] from anything printable.
pub fn err(message: impl Into<String>) -> HarnessError {
    HarnessError(message.into())
}
