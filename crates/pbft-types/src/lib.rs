//! Message types, identifiers, the cluster configuration and the wire
//! encoding of the `pbft` toolkit.
//!
//! This crate knows nothing of cryptography, networking or storage: a
//! [`Signed`] value here is only a claim, which `pbft-crypto` verifies.
//!
//! # Example
//!
//! ```
//! use pbft_types::{
//!     decode, encode, ClusterId, Digest, Envelope, Message, Prepare, ReplicaId, SeqNo,
//!     Signature, Signed, View, MESSAGE_BYTES_MAX_DEFAULT,
//! };
//!
//! let prepare = Signed {
//!     value: Prepare { view: View(0), seq: SeqNo(1), digest: Digest([7; 32]) },
//!     signer: ReplicaId(2),
//!     signature: Signature([0; 64]),
//! };
//! let envelope = Envelope::new(ClusterId(42), Message::Prepare(prepare));
//! let bytes = encode(&envelope)?;
//! let back = decode(&bytes, MESSAGE_BYTES_MAX_DEFAULT, ClusterId(42))?;
//! assert_eq!(back, envelope);
//!
//! // Another cluster's message, or a truncated one, is a typed error.
//! assert!(decode(&bytes, MESSAGE_BYTES_MAX_DEFAULT, ClusterId(43)).is_err());
//! assert!(decode(&bytes[..bytes.len() - 1], MESSAGE_BYTES_MAX_DEFAULT, ClusterId(42)).is_err());
//! # Ok::<(), pbft_types::WireError>(())
//! ```

mod config;
mod ids;
mod message;
mod wire;

pub use config::{ClientEntry, ClusterConfig, ConfigError, ReplicaEntry, REPLICAS_MAX};
pub use ids::{
    ClientId, ClusterId, Digest, Mac, PublicKeyBytes, ReplicaId, RequestNo, SeqNo, Signature, View,
    MAC_BYTES,
};
pub use message::{
    Authenticator, Batch, Checkpoint, ClientRequest, Commit, Fetch, FetchResponse, Message,
    NewView, PrePrepare, Prepare, PreparedCert, QuorumCert, Reply, Request, Signed, ViewChange,
};
pub use wire::{
    decode, encode, from_canonical_bytes, to_canonical_bytes, Envelope, WireError,
    MESSAGE_BYTES_MAX_DEFAULT, WIRE_VERSION,
};
