//! The one error type of this crate.

use crate::codec::Compression;

/// Everything that can go wrong in this crate: an invalid configuration, a
/// request the [`Batcher`](crate::Batcher) refuses, or bytes that
/// [`decode`](crate::decode) refuses.
///
/// Variants carry the bound that was hit (`limit`) and what arrived (`got`),
/// so that callers can count and log them without parsing strings. None of
/// them is a panic: every input, however malformed, ends in one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// A configuration field is out of range or inconsistent with another.
    #[error("invalid config: `{field}` {reason}")]
    InvalidConfig {
        /// The name of the offending field, as spelled in the config struct.
        field: &'static str,
        /// Why it is invalid.
        reason: &'static str,
    },

    /// A single request is too large to ever fit in a batch.
    #[error("request of {got} bytes exceeds the {limit} bytes a batch can hold")]
    RequestTooLarge {
        /// The largest request payload a batch can hold, in bytes.
        limit: usize,
        /// The payload size of the refused request, in bytes.
        got: usize,
    },

    /// The pending queue holds `pending_requests_max` requests already; the
    /// request was dropped.
    #[error("pending queue full: {limit} requests")]
    PendingRequestsFull {
        /// `pending_requests_max`.
        limit: usize,
    },

    /// Accepting the request would take the pending payload bytes over
    /// `pending_bytes_max`; the request was dropped.
    #[error("pending queue full: {got} bytes would exceed {limit}")]
    PendingBytesFull {
        /// `pending_bytes_max`.
        limit: usize,
        /// The pending payload bytes had the request been accepted.
        got: usize,
    },

    /// A batch holds (or declares) more requests than allowed.
    #[error("batch of {got} requests exceeds the limit of {limit}")]
    TooManyRequests {
        /// `batch_requests_max`.
        limit: usize,
        /// The count of the batch (declared in the header when decoding).
        got: usize,
    },

    /// The encoded input given to `decode` is longer than any valid batch.
    #[error("encoded batch of {got} bytes exceeds the limit of {limit}")]
    InputTooLarge {
        /// `batch_bytes_max`.
        limit: usize,
        /// The length of the input, in bytes.
        got: usize,
    },

    /// The uncompressed size of a batch (header included) is over the
    /// bound. When decoding, this is checked on the size declared in the
    /// header, before any allocation or decompression: this is how a
    /// compression bomb is refused.
    #[error("batch of {got} bytes uncompressed exceeds the limit of {limit}")]
    BatchTooLarge {
        /// `batch_bytes_max` (or `u32::MAX`, the format's own bound).
        limit: usize,
        /// The uncompressed size, header included, in bytes.
        got: usize,
    },

    /// The input ends before a header, a length prefix or a request does.
    #[error("truncated batch: needed {needed} bytes, got {got}")]
    Truncated {
        /// How many bytes the structure being read needs.
        needed: usize,
        /// How many bytes were available.
        got: usize,
    },

    /// Bytes remain after the last declared request.
    #[error("{extra} trailing bytes after the last request")]
    TrailingBytes {
        /// The number of unread bytes.
        extra: usize,
    },

    /// The header's version byte is not one this crate reads.
    #[error("unsupported batch format version {got}, expected {expected}")]
    UnsupportedVersion {
        /// The version this crate writes and reads.
        expected: u8,
        /// The version byte found.
        got: u8,
    },

    /// The header's codec byte names no known compression.
    #[error("unknown codec byte {got}")]
    UnknownCodec {
        /// The codec byte found.
        got: u8,
    },

    /// The compressed payload is corrupt, or would decompress to more than the
    /// size the header declares.
    #[error("{codec:?} payload corrupt: {reason}")]
    Decompress {
        /// The codec the header named.
        codec: Compression,
        /// What the decompressor reported.
        reason: String,
    },

    /// The payload decompressed to fewer bytes than the header declares.
    #[error("payload decompressed to {got} bytes, header declares {declared}")]
    LengthMismatch {
        /// The body length declared in the header.
        declared: usize,
        /// The body length actually produced.
        got: usize,
    },
}
