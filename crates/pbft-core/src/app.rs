//! The replicated service: the [`Application`] trait, the client reply
//! table that makes execution exactly-once, and two applications.

use std::collections::BTreeMap;

use pbft_types::{from_canonical_bytes, to_canonical_bytes, ClientId, Digest, RequestNo};
use serde::{Deserialize, Serialize};

/// A deterministic replicated service.
///
/// Every correct replica calls `execute` with the same operations in the
/// same order, so the implementation must not read clocks, randomness or
/// anything else outside its own state.
pub trait Application {
    /// Executes one operation of `client` and returns its result.
    fn execute(&mut self, client: ClientId, op: &[u8]) -> Vec<u8>;
    /// The whole state, encoded canonically: equal states must give equal
    /// bytes, since checkpoints digest the snapshot (PBFT 4.3).
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the state with a snapshot taken by [`Application::snapshot`].
    ///
    /// # Errors
    /// [`AppError`] when the bytes are not a snapshot of this application.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), AppError>;
    /// A digest of the state; equal states have equal digests. (For the
    /// host's use, e.g. comparing replicas; checkpoints digest
    /// [`Application::snapshot`] with the reply table.)
    fn state_digest(&self) -> Digest;
}

/// A snapshot that could not be restored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed snapshot: {0}")]
pub struct AppError(pub String);

/// The cached reply of a client's last executed request (PBFT 4.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedReply {
    /// The last request number executed for the client.
    pub request_no: RequestNo,
    /// Its result.
    #[serde(with = "serde_bytes")]
    pub result: Vec<u8>,
}

/// The state a checkpoint covers: the application's snapshot and the reply
/// table, so that exactly-once survives state transfer (PBFT 4.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`Application::snapshot`].
    #[serde(with = "serde_bytes")]
    pub app: Vec<u8>,
    /// The reply table, by client.
    pub replies: BTreeMap<ClientId, CachedReply>,
}

/// The digest of a checkpoint's state: the Merkle root of the snapshot's
/// canonical encoding in chunks ([`crate::chunks::snapshot_root`]), so
/// that a replica fetching it checks every chunk (TOCS 6.2).
///
/// # Errors
/// A message if the snapshot cannot be encoded (a broken invariant).
pub fn checkpoint_digest(snapshot: &Snapshot) -> Result<Digest, String> {
    let bytes = to_canonical_bytes(snapshot).map_err(|e| e.to_string())?;
    Ok(crate::chunks::snapshot_root(&bytes))
}

/// An operation of [`KvApp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Sets a key; the result is `b"ok"`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Reads a key; the result is `[1] ++ value`, or `[0]` when absent.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Removes a key; the result is `[1]` if it existed, else `[0]`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl KvOp {
    /// The encoding: a tag byte (0 put, 1 get, 2 delete), the key length as
    /// a little-endian `u32`, the key, then (put) the value.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let (tag, key, value): (u8, &[u8], &[u8]) = match self {
            Self::Put { key, value } => (0, key, value),
            Self::Get { key } => (1, key, &[]),
            Self::Delete { key } => (2, key, &[]),
        };
        let len = u32::try_from(key.len()).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(5 + key.len() + value.len());
        out.push(tag);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        out
    }

    /// Parses [`KvOp::encode`]'s output; `None` for anything else.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        Some(match split_op(bytes)? {
            (0, key, value) => Self::Put {
                key: key.to_vec(),
                value: value.to_vec(),
            },
            (1, key, _) => Self::Get { key: key.to_vec() },
            (_, key, _) => Self::Delete { key: key.to_vec() },
        })
    }
}

/// The tag, key and value of an encoded [`KvOp`], borrowed from `bytes`
/// (execution copies only what it stores); `None` for a malformed one.
fn split_op(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (tag, rest) = bytes.split_first()?;
    let len_bytes: [u8; 4] = rest.get(..4)?.try_into().ok()?;
    let len = usize::try_from(u32::from_le_bytes(len_bytes)).ok()?;
    let rest = rest.get(4..)?;
    let key = rest.get(..len)?;
    let value = rest.get(len..)?;
    match tag {
        0 => Some((0, key, value)),
        1 | 2 if value.is_empty() => Some((*tag, key, value)),
        _ => None,
    }
}

/// The result of a malformed operation, for every application here.
pub const MALFORMED_OP_RESULT: &[u8] = b"error: malformed operation";

/// A key-value store: see [`KvOp`] for the operations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvApp {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl KvApp {
    /// The value of a key.
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    /// Number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the store is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The map's encoding, keys and values as byte strings (the same bytes as
/// the derived encoding of the map, made in one call per string rather than
/// one per byte).
struct KvMapRef<'a>(&'a BTreeMap<Vec<u8>, Vec<u8>>);

impl serde::Serialize for KvMapRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            self.0
                .iter()
                .map(|(k, v)| (serde_bytes::Bytes::new(k), serde_bytes::Bytes::new(v))),
        )
    }
}

const KV_CONTEXT: &str = "pbft-core 2026-11 kv state v1";

impl Application for KvApp {
    fn execute(&mut self, _client: ClientId, op: &[u8]) -> Vec<u8> {
        match split_op(op) {
            Some((0, key, value)) => {
                match self.map.get_mut(key) {
                    // Overwrites reuse the value's buffer (and keep the key).
                    Some(v) => {
                        v.clear();
                        v.extend_from_slice(value);
                    }
                    None => {
                        self.map.insert(key.to_vec(), value.to_vec());
                    }
                }
                b"ok".to_vec()
            }
            Some((1, key, _)) => match self.map.get(key) {
                Some(v) => {
                    let mut out = Vec::with_capacity(1 + v.len());
                    out.push(1);
                    out.extend_from_slice(v);
                    out
                }
                None => vec![0],
            },
            Some((_, key, _)) => vec![u8::from(self.map.remove(key).is_some())],
            None => MALFORMED_OP_RESULT.to_vec(),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        // Encoding a map of byte strings cannot fail.
        to_canonical_bytes(&KvMapRef(&self.map)).unwrap_or_default()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), AppError> {
        let map: BTreeMap<serde_bytes::ByteBuf, serde_bytes::ByteBuf> =
            from_canonical_bytes(snapshot, usize::MAX).map_err(|e| AppError(e.to_string()))?;
        self.map = map
            .into_iter()
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect();
        Ok(())
    }

    fn state_digest(&self) -> Digest {
        pbft_crypto::hash(KV_CONTEXT, &self.snapshot())
    }
}

/// A counter: an 8-byte little-endian operation adds that amount, any other
/// operation adds one; the result is the new value, 8 bytes little-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterApp {
    /// The current value.
    pub value: u64,
}

impl Application for CounterApp {
    fn execute(&mut self, _client: ClientId, op: &[u8]) -> Vec<u8> {
        let add = <[u8; 8]>::try_from(op).map_or(1, u64::from_le_bytes);
        self.value = self.value.wrapping_add(add);
        self.value.to_le_bytes().to_vec()
    }

    fn snapshot(&self) -> Vec<u8> {
        self.value.to_le_bytes().to_vec()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), AppError> {
        let bytes = <[u8; 8]>::try_from(snapshot)
            .map_err(|_| AppError(format!("{} bytes, expected 8", snapshot.len())))?;
        self.value = u64::from_le_bytes(bytes);
        Ok(())
    }

    fn state_digest(&self) -> Digest {
        pbft_crypto::hash("pbft-core 2026-11 counter state v1", &self.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_ops_round_trip_and_execute() {
        let mut kv = KvApp::default();
        let put = KvOp::Put {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
        };
        assert_eq!(KvOp::decode(&put.encode()), Some(put.clone()));
        assert_eq!(kv.execute(ClientId(1), &put.encode()), b"ok");
        let get = KvOp::Get { key: b"a".to_vec() };
        assert_eq!(kv.execute(ClientId(1), &get.encode()), b"\x011");
        let del = KvOp::Delete { key: b"a".to_vec() };
        assert_eq!(kv.execute(ClientId(1), &del.encode()), [1]);
        assert_eq!(kv.execute(ClientId(1), &get.encode()), [0]);
        assert_eq!(kv.execute(ClientId(1), b"\x07"), MALFORMED_OP_RESULT);
        assert_eq!(KvOp::decode(&[0, 9, 0, 0, 0, 1]), None);
    }

    #[test]
    fn snapshots_restore() {
        let mut kv = KvApp::default();
        kv.execute(
            ClientId(1),
            &KvOp::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            }
            .encode(),
        );
        let mut other = KvApp::default();
        other.restore(&kv.snapshot()).unwrap();
        assert_eq!(other, kv);
        assert_eq!(other.state_digest(), kv.state_digest());
        assert!(other.restore(b"\xff\xff\xff").is_err());

        let mut c = CounterApp::default();
        c.execute(ClientId(1), &5u64.to_le_bytes());
        assert_eq!(c.execute(ClientId(1), b"x"), 6u64.to_le_bytes());
        let mut d = CounterApp::default();
        d.restore(&c.snapshot()).unwrap();
        assert_eq!(d, c);
    }

    /// The byte-string encodings write exactly the bytes the derived ones
    /// did (postcard: a length, then the bytes), so stores and snapshots
    /// written before still decode, and digests do not change.
    #[test]
    fn byte_string_encodings_match_the_derived_ones() {
        let mut map = BTreeMap::new();
        map.insert(b"key".to_vec(), vec![7u8; 300]);
        map.insert(Vec::new(), Vec::new());
        assert_eq!(
            to_canonical_bytes(&KvMapRef(&map)).unwrap(),
            to_canonical_bytes(&map).unwrap()
        );
        #[derive(Serialize)]
        struct Derived {
            request_no: u64,
            result: Vec<u8>,
        }
        let reply = CachedReply {
            request_no: RequestNo(9),
            result: vec![1; 200],
        };
        let derived = Derived {
            request_no: 9,
            result: vec![1; 200],
        };
        assert_eq!(
            to_canonical_bytes(&reply).unwrap(),
            to_canonical_bytes(&derived).unwrap()
        );
    }
}
