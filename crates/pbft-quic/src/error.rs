//! The one error type of this crate.

use pbft_crypto::{CryptoError, Principal};
use pbft_types::{ReplicaId, WireError};

use crate::Lane;

/// Everything that can go wrong when starting an endpoint or sending.
///
/// Problems with what a *peer* sends are not errors of the caller: they are
/// counted ([`crate::StatsSnapshot`], metrics) and the offending stream or
/// connection is closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    /// Endpoints spawn tasks and must be started inside a Tokio runtime.
    #[error("no Tokio runtime: start the endpoint from within a Tokio runtime")]
    NoRuntime,
    /// The local identity is not the configured one.
    #[error("the TLS identity presented by this endpoint is {got}, the configuration expects {expected}")]
    IdentityMismatch {
        /// The configured principal this endpoint was started as.
        expected: Principal,
        /// What the certificate's key maps to (or why it maps to nothing).
        got: String,
    },
    /// A principal that is not in the cluster configuration.
    #[error("{0} is not in the cluster configuration")]
    UnknownPeer(Principal),
    /// A configured replica address does not resolve to a socket address.
    #[error("replica {replica} has an unusable address {address:?}: {reason}")]
    BadAddress {
        /// Whose address.
        replica: ReplicaId,
        /// The configured text.
        address: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A limit is out of range or inconsistent with another one.
    #[error("invalid limit {name}: {reason}")]
    InvalidLimit {
        /// The field of [`crate::Limits`].
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// Binding or configuring the UDP socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// Building the rustls configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// Building the QUIC configuration failed.
    #[error("QUIC configuration: {0}")]
    QuicConfig(String),
    /// A key or certificate problem.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// Encoding a message failed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// An encoded message is larger than a frame may be.
    #[error("encoded message of {got} bytes exceeds the frame limit of {limit} bytes")]
    FrameTooLarge {
        /// [`crate::Limits::frame_bytes_max`].
        limit: usize,
        /// The encoded size.
        got: usize,
    },
    /// The peer has no send queue: a client that is not connected.
    #[error("{0} is not connected")]
    NotConnected(Principal),
    /// The send queue to the peer is full; the message was dropped (and counted).
    #[error("send queue to {peer} on the {lane:?} lane is full; message dropped")]
    QueueFull {
        /// The destination.
        peer: Principal,
        /// The lane.
        lane: Lane,
    },
    /// The endpoint has been shut down.
    #[error("the endpoint is shut down")]
    Closed,
}
