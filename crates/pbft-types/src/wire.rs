//! The wire encoding: a versioned [`Envelope`] carrying the cluster id and a
//! [`Message`], encoded with postcard.
//!
//! Decoding takes a size limit and returns a typed [`WireError`] for any
//! malformed, truncated, oversized, foreign or wrong-version input; it never
//! panics and never allocates more than the input can describe.

use serde::{Deserialize, Serialize};

use crate::{ClusterId, Message};

/// The version of the wire format this build speaks.
/// Version 2: client requests carry an [`crate::Authenticator`] (a
/// signature or MACs) instead of a bare signature.
pub const WIRE_VERSION: u16 = 2;

/// The default decode limit for one envelope: 16 MiB.
pub const MESSAGE_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;

/// A message on the wire, with the version and the cluster it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`WIRE_VERSION`] of the sender.
    pub version: u16,
    /// The cluster the message belongs to.
    pub cluster_id: ClusterId,
    /// The message.
    pub message: Message,
}

/// Why bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input is larger than the limit.
    #[error("message of {got} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
        /// The input size.
        got: usize,
    },
    /// The version is not the one this build speaks.
    #[error("wire version {got} is not supported (expected {expected})")]
    WrongVersion {
        /// [`WIRE_VERSION`].
        expected: u16,
        /// The version found.
        got: u16,
    },
    /// The envelope belongs to another cluster.
    #[error("message is for cluster {got}, this is cluster {expected}")]
    WrongCluster {
        /// This cluster.
        expected: ClusterId,
        /// The cluster in the envelope.
        got: ClusterId,
    },
    /// The input ended in the middle of a value.
    #[error("message is truncated")]
    Truncated,
    /// Bytes are left over after the message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// The bytes do not describe a message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Encoding failed (only on a broken invariant, such as a writer error).
    #[error("encoding failed: {0}")]
    Encode(String),
}

impl From<postcard::Error> for WireError {
    fn from(e: postcard::Error) -> Self {
        match e {
            postcard::Error::DeserializeUnexpectedEnd => Self::Truncated,
            other => Self::Malformed(other.to_string()),
        }
    }
}

impl Envelope {
    /// Wraps a message for the given cluster at the current version.
    #[must_use]
    pub fn new(cluster_id: ClusterId, message: Message) -> Self {
        Self {
            version: WIRE_VERSION,
            cluster_id,
            message,
        }
    }
}

/// Encodes an envelope.
///
/// # Errors
/// [`WireError::Encode`] only if postcard fails, which it does not for these types.
pub fn encode(envelope: &Envelope) -> Result<Vec<u8>, WireError> {
    postcard::to_stdvec(envelope).map_err(|e| WireError::Encode(e.to_string()))
}

/// Encodes any serializable value with the canonical encoding (postcard).
/// Signatures and digests are computed over these bytes.
///
/// # Errors
/// [`WireError::Encode`] only if postcard fails.
pub fn to_canonical_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WireError> {
    postcard::to_stdvec(value).map_err(|e| WireError::Encode(e.to_string()))
}

/// Decodes one envelope of at most `limit` bytes, for the cluster `expected`.
///
/// The version is read first, so that a future format is reported as
/// [`WireError::WrongVersion`] rather than as garbage.
///
/// # Errors
/// A [`WireError`] naming what is wrong with the input.
pub fn decode(bytes: &[u8], limit: usize, expected: ClusterId) -> Result<Envelope, WireError> {
    if bytes.len() > limit {
        return Err(WireError::TooLarge {
            limit,
            got: bytes.len(),
        });
    }
    let (version, rest) = postcard::take_from_bytes::<u16>(bytes)?;
    if version != WIRE_VERSION {
        return Err(WireError::WrongVersion {
            expected: WIRE_VERSION,
            got: version,
        });
    }
    let (cluster_id, rest) = postcard::take_from_bytes::<ClusterId>(rest)?;
    if cluster_id != expected {
        return Err(WireError::WrongCluster {
            expected,
            got: cluster_id,
        });
    }
    let (message, rest) = postcard::take_from_bytes::<Message>(rest)?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    Ok(Envelope {
        version,
        cluster_id,
        message,
    })
}

/// Decodes any value from its canonical encoding, refusing trailing bytes.
///
/// # Errors
/// [`WireError`] as for [`decode`].
pub fn from_canonical_bytes<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    limit: usize,
) -> Result<T, WireError> {
    if bytes.len() > limit {
        return Err(WireError::TooLarge {
            limit,
            got: bytes.len(),
        });
    }
    let (value, rest) = postcard::take_from_bytes::<T>(bytes)?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    Ok(value)
}
