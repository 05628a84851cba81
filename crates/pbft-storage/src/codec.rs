//! Column families, key layout and value encoding, shared by the stores.
//!
//! Keys are big-endian so that RocksDB's byte order is numeric order.
//! Records of a (view, seq) are keyed **seq first** (`seq ‖ view`, 16
//! bytes): iteration is ordered by seq then view, and truncation below a
//! sequence number is one `delete_range` per column family.

// Without RocksDB only the size checks of `MemStore` use this module.
#![cfg_attr(not(feature = "rocksdb"), allow(dead_code))]

use std::borrow::Cow;

use pbft_types::{from_canonical_bytes, to_canonical_bytes, SeqNo, View};
use serde::{Deserialize, Serialize};

use crate::{Op, StoreError, StoreLimits};

/// The version of the on-disk layout, stored under [`META_FORMAT`].
/// Version 2: batches hold requests with an authenticator (wire version 2).
pub(crate) const FORMAT_VERSION: u32 = 2;

/// `meta` key of the format version.
pub(crate) const META_FORMAT: &[u8] = b"format_version";
/// `meta` key of the view state.
pub(crate) const META_VIEW_STATE: &[u8] = b"view_state";
/// `meta` key of the stable checkpoint proof.
pub(crate) const META_STABLE: &[u8] = b"stable_checkpoint";

/// The column families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cf {
    /// Single values: format version, view state, stable checkpoint.
    Meta,
    /// `seq ‖ view` -> `PrePrepareRecord`.
    PrePrepare,
    /// `seq ‖ view` -> `Signed<Prepare>`.
    Prepare,
    /// `seq ‖ view` -> `Signed<Commit>`.
    Commit,
    /// `seq ‖ view` -> `PreparedCert`.
    PreparedCert,
    /// `seq` -> `CommittedRecord`.
    Committed,
    /// `seq` -> `Signed<Checkpoint>`.
    Checkpoint,
    /// `seq` -> raw snapshot bytes.
    Snapshot,
    /// `client` -> `ReplyEntry`.
    Reply,
}

impl Cf {
    /// Every column family.
    pub(crate) const ALL: [Cf; 9] = [
        Cf::Meta,
        Cf::PrePrepare,
        Cf::Prepare,
        Cf::Commit,
        Cf::PreparedCert,
        Cf::Committed,
        Cf::Checkpoint,
        Cf::Snapshot,
        Cf::Reply,
    ];

    /// Families keyed by seq first, truncated by `TruncateBelow`.
    pub(crate) const BY_SEQ: [Cf; 7] = [
        Cf::PrePrepare,
        Cf::Prepare,
        Cf::Commit,
        Cf::PreparedCert,
        Cf::Committed,
        Cf::Checkpoint,
        Cf::Snapshot,
    ];

    /// The RocksDB name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::PrePrepare => "pre_prepare",
            Cf::Prepare => "prepare",
            Cf::Commit => "commit",
            Cf::PreparedCert => "prepared_cert",
            Cf::Committed => "committed",
            Cf::Checkpoint => "checkpoint",
            Cf::Snapshot => "snapshot",
            Cf::Reply => "reply",
        }
    }
}

/// `seq ‖ view`, big-endian.
pub(crate) fn seq_view_key(seq: SeqNo, view: View) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&seq.0.to_be_bytes());
    k[8..].copy_from_slice(&view.0.to_be_bytes());
    k
}

/// `seq`, big-endian.
pub(crate) fn seq_key(seq: SeqNo) -> [u8; 8] {
    seq.0.to_be_bytes()
}

/// Parses a `seq ‖ view` key.
pub(crate) fn parse_seq_view(cf: Cf, key: &[u8]) -> Result<(SeqNo, View), StoreError> {
    let bad = || StoreError::CorruptKey {
        cf: cf.name(),
        key: key.to_vec(),
        expected_len: 16,
    };
    let (s, v) = key.split_at_checked(8).ok_or_else(bad)?;
    let s: [u8; 8] = s.try_into().map_err(|_| bad())?;
    let v: [u8; 8] = v.try_into().map_err(|_| bad())?;
    Ok((SeqNo(u64::from_be_bytes(s)), View(u64::from_be_bytes(v))))
}

/// Parses an 8-byte big-endian key.
pub(crate) fn parse_u64(cf: Cf, key: &[u8]) -> Result<u64, StoreError> {
    let k: [u8; 8] = key.try_into().map_err(|_| StoreError::CorruptKey {
        cf: cf.name(),
        key: key.to_vec(),
        expected_len: 8,
    })?;
    Ok(u64::from_be_bytes(k))
}

/// Decodes a record with the size limit; a typed error on any damage.
pub(crate) fn decode<'a, T: Deserialize<'a>>(
    cf: Cf,
    key: &[u8],
    bytes: &'a [u8],
    limit: usize,
) -> Result<T, StoreError> {
    from_canonical_bytes(bytes, limit).map_err(|source| StoreError::CorruptValue {
        cf: cf.name(),
        key: key.to_vec(),
        source,
    })
}

/// One encoded operation.
pub(crate) enum Encoded<'a> {
    /// Put `value` under `key` in `cf`.
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Cow<'a, [u8]>,
    },
    /// Delete every seq-keyed record below the seq.
    TruncateBelow(SeqNo),
}

fn record<'a, T: Serialize>(
    cf: Cf,
    key: &[u8],
    value: &T,
    limit: usize,
) -> Result<Encoded<'a>, StoreError> {
    let bytes = to_canonical_bytes(value).map_err(StoreError::Encode)?;
    if bytes.len() > limit {
        return Err(StoreError::ValueTooLarge {
            cf: cf.name(),
            limit,
            got: bytes.len(),
        });
    }
    Ok(Encoded::Put {
        cf,
        key: key.to_vec(),
        value: Cow::Owned(bytes),
    })
}

/// Encodes an operation, refusing values over the limits.
pub(crate) fn encode_op<'a>(op: &'a Op, limits: &StoreLimits) -> Result<Encoded<'a>, StoreError> {
    let max = limits.record_bytes_max;
    match op {
        Op::PutViewState(s) => record(Cf::Meta, META_VIEW_STATE, s, max),
        Op::PutPrePrepare(r) => {
            let p = &r.pre_prepare.value;
            record(Cf::PrePrepare, &seq_view_key(p.seq, p.view), r, max)
        }
        Op::PutPrepare(p) => record(
            Cf::Prepare,
            &seq_view_key(p.value.seq, p.value.view),
            p,
            max,
        ),
        Op::PutCommit(c) => record(Cf::Commit, &seq_view_key(c.value.seq, c.value.view), c, max),
        Op::PutPreparedCert(c) => {
            let p = &c.pre_prepare.value;
            record(Cf::PreparedCert, &seq_view_key(p.seq, p.view), c, max)
        }
        Op::PutCommitted(r) => record(Cf::Committed, &seq_key(r.pre_prepare.value.seq), r, max),
        Op::PutCheckpoint(c) => record(Cf::Checkpoint, &seq_key(c.value.seq), c, max),
        Op::PutStableCheckpoint(c) => record(Cf::Meta, META_STABLE, c, max),
        Op::PutSnapshot { seq, snapshot } => {
            let limit = limits.snapshot_bytes_max;
            if snapshot.len() > limit {
                return Err(StoreError::ValueTooLarge {
                    cf: Cf::Snapshot.name(),
                    limit,
                    got: snapshot.len(),
                });
            }
            Ok(Encoded::Put {
                cf: Cf::Snapshot,
                key: seq_key(*seq).to_vec(),
                value: Cow::Borrowed(snapshot.as_slice()),
            })
        }
        Op::PutReply { client, entry } => record(Cf::Reply, &client.0.to_be_bytes(), entry, max),
        Op::TruncateBelow(seq) => Ok(Encoded::TruncateBelow(*seq)),
    }
}
