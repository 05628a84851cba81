//! The cluster configuration: who the replicas and clients are, and the
//! quorum sizes derived from their number.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{ClientId, ClusterId, PublicKeyBytes, ReplicaId, View};

/// Largest number of replicas a cluster may have. Vote sets and certificates
/// are sized by it.
pub const REPLICAS_MAX: usize = 1024;

/// One replica of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaEntry {
    /// The replica's id, `0..n`.
    pub id: ReplicaId,
    /// Its ed25519 identity key: it signs protocol messages with it, and its
    /// TLS certificate carries the same key.
    pub public_key: PublicKeyBytes,
    /// Where other replicas and clients reach it, `host:port`.
    pub address: String,
}

/// One client allowed to submit requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// The client's id.
    pub id: ClientId,
    /// Its ed25519 identity key: it signs requests with it, and its TLS
    /// certificate carries the same key.
    pub public_key: PublicKeyBytes,
}

/// Why a cluster configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No replica is configured.
    #[error("the cluster has no replicas")]
    Empty,
    /// More replicas than [`REPLICAS_MAX`].
    #[error("the cluster has {got} replicas, at most {max} are supported")]
    TooManyReplicas {
        /// The limit.
        max: usize,
        /// The number configured.
        got: usize,
    },
    /// Two replicas share an id.
    #[error("replica id {0} appears more than once")]
    DuplicateReplicaId(ReplicaId),
    /// Replica ids must be exactly `0..n`.
    #[error("replica ids must be 0..{n}, but {id} is out of that range")]
    ReplicaIdOutOfRange {
        /// The number of replicas.
        n: usize,
        /// The offending id.
        id: ReplicaId,
    },
    /// Two clients share an id.
    #[error("client id {0} appears more than once")]
    DuplicateClientId(ClientId),
    /// Two identities (replicas or clients) share a public key.
    #[error("public key {0} is used by more than one identity")]
    DuplicateKey(String),
    /// Two replicas share an address.
    #[error("address {0:?} is used by more than one replica")]
    DuplicateAddress(String),
    /// An address is not `host:port`.
    #[error("replica {id} has address {address:?}, which is not host:port")]
    BadAddress {
        /// The replica.
        id: ReplicaId,
        /// The address as written.
        address: String,
    },
}

/// The membership of a cluster and the quorum arithmetic derived from it.
///
/// Quorums are never constants: `f = (n - 1) / 3`, the agreement quorum is
/// `2f + 1` when `n = 3f + 1` (in general `ceil((n + f + 1) / 2)`, so that any
/// two quorums share a correct replica for any `n`), and a client accepts a
/// result vouched for by `f + 1` replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's id, bound into every signature and envelope.
    pub cluster_id: ClusterId,
    /// The replicas, in any order; ids must be exactly `0..n`.
    pub replicas: Vec<ReplicaEntry>,
    /// The clients allowed to submit requests.
    #[serde(default)]
    pub clients: Vec<ClientEntry>,
}

impl ClusterConfig {
    /// Checks the configuration and returns it sorted by replica id.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first problem found.
    pub fn validated(mut self) -> Result<Self, ConfigError> {
        let n = self.replicas.len();
        if n == 0 {
            return Err(ConfigError::Empty);
        }
        if n > REPLICAS_MAX {
            return Err(ConfigError::TooManyReplicas {
                max: REPLICAS_MAX,
                got: n,
            });
        }
        let mut ids = BTreeSet::new();
        let mut keys = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        for r in &self.replicas {
            if usize::try_from(r.id.0).map_or(true, |i| i >= n) {
                // A duplicate makes some id fall out of 0..n; name the duplicate
                // if there is one, it is the clearer message.
                if let Some(dup) = first_duplicate(self.replicas.iter().map(|r| r.id)) {
                    return Err(ConfigError::DuplicateReplicaId(dup));
                }
                return Err(ConfigError::ReplicaIdOutOfRange { n, id: r.id });
            }
            if !ids.insert(r.id) {
                return Err(ConfigError::DuplicateReplicaId(r.id));
            }
            if !keys.insert(r.public_key) {
                return Err(ConfigError::DuplicateKey(r.public_key.to_hex()));
            }
            if !is_host_port(&r.address) {
                return Err(ConfigError::BadAddress {
                    id: r.id,
                    address: r.address.clone(),
                });
            }
            if !addresses.insert(r.address.to_ascii_lowercase()) {
                return Err(ConfigError::DuplicateAddress(r.address.clone()));
            }
        }
        let mut client_ids = BTreeSet::new();
        for c in &self.clients {
            if !client_ids.insert(c.id) {
                return Err(ConfigError::DuplicateClientId(c.id));
            }
            if !keys.insert(c.public_key) {
                return Err(ConfigError::DuplicateKey(c.public_key.to_hex()));
            }
        }
        self.replicas.sort_by_key(|r| r.id);
        self.clients.sort_by_key(|c| c.id);
        Ok(self)
    }

    /// The number of replicas, `n`.
    #[must_use]
    pub fn n(&self) -> usize {
        self.replicas.len()
    }

    /// The number of faulty replicas tolerated, `f = (n - 1) / 3`.
    #[must_use]
    pub fn f(&self) -> usize {
        self.n().saturating_sub(1) / 3
    }

    /// The agreement quorum: `2f + 1` for `n = 3f + 1`, and
    /// `ceil((n + f + 1) / 2)` in general, so that two quorums always
    /// intersect in at least `f + 1` replicas, one of them correct.
    #[must_use]
    pub fn quorum(&self) -> usize {
        (self.n() + self.f()) / 2 + 1
    }

    /// The number of matching replies a client needs: `f + 1`.
    #[must_use]
    pub fn reply_quorum(&self) -> usize {
        self.f() + 1
    }

    /// Replicas needed to prove a fact (at least one correct): `f + 1`.
    #[must_use]
    pub fn weak_quorum(&self) -> usize {
        self.f() + 1
    }

    /// The primary of a view: replica `v mod n` (PBFT 4.1).
    #[must_use]
    pub fn primary(&self, view: View) -> ReplicaId {
        let n = self.n().max(1) as u64;
        // n <= REPLICAS_MAX, so the remainder fits in u32.
        ReplicaId(u32::try_from(view.0 % n).unwrap_or(0))
    }

    /// The entry of a replica.
    #[must_use]
    pub fn replica(&self, id: ReplicaId) -> Option<&ReplicaEntry> {
        self.replicas
            .get(usize::try_from(id.0).ok()?)
            .filter(|r| r.id == id)
    }

    /// The entry of a client.
    #[must_use]
    pub fn client(&self, id: ClientId) -> Option<&ClientEntry> {
        self.clients
            .binary_search_by_key(&id, |c| c.id)
            .ok()
            .and_then(|i| self.clients.get(i))
    }

    /// The replica ids, `0..n`.
    pub fn replica_ids(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        self.replicas.iter().map(|r| r.id)
    }
}

fn first_duplicate<T: Ord + Copy>(items: impl Iterator<Item = T>) -> Option<T> {
    let mut seen = BTreeSet::new();
    items.into_iter().find(|i| !seen.insert(*i))
}

fn is_host_port(address: &str) -> bool {
    if address.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    match address.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && !host.contains(':')
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(n: usize) -> ClusterConfig {
        ClusterConfig {
            cluster_id: ClusterId(7),
            replicas: (0..n)
                .map(|i| ReplicaEntry {
                    id: ReplicaId(i as u32),
                    public_key: key(i as u32),
                    address: format!("127.0.0.1:{}", 7000 + i),
                })
                .collect(),
            clients: vec![ClientEntry {
                id: ClientId(1),
                public_key: key(100_000),
            }],
        }
    }

    fn key(i: u32) -> PublicKeyBytes {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        PublicKeyBytes(k)
    }

    #[test]
    fn quorum_arithmetic() {
        // (n, f, quorum, reply quorum)
        for (n, f, q, r) in [
            (1, 0, 1, 1),
            (4, 1, 3, 2),
            (7, 2, 5, 3),
            (10, 3, 7, 4),
            (100, 33, 67, 34),
        ] {
            let c = config(n).validated().unwrap();
            assert_eq!(
                (c.n(), c.f(), c.quorum(), c.reply_quorum()),
                (n, f, q, r),
                "n = {n}"
            );
            assert_eq!(c.quorum(), 2 * c.f() + 1);
        }
    }

    #[test]
    fn quorums_intersect_in_a_correct_replica_for_every_n() {
        for n in 1..=200 {
            let c = config(n).validated().unwrap();
            let (q, f) = (c.quorum(), c.f());
            assert!(
                2 * q > n + f,
                "n = {n}: two quorums of {q} may share only faulty replicas"
            );
            assert!(
                q <= n - f,
                "n = {n}: a quorum of {q} needs faulty replicas to answer"
            );
        }
    }

    #[test]
    fn primary_rotates() {
        let c = config(4).validated().unwrap();
        assert_eq!(c.primary(View(0)), ReplicaId(0));
        assert_eq!(c.primary(View(5)), ReplicaId(1));
        assert_eq!(c.primary(View(u64::MAX)), ReplicaId((u64::MAX % 4) as u32));
    }

    #[test]
    fn rejects_empty() {
        assert_eq!(config(0).validated(), Err(ConfigError::Empty));
    }

    #[test]
    fn rejects_duplicate_id() {
        let mut c = config(4);
        c.replicas[3].id = ReplicaId(1);
        assert_eq!(
            c.validated(),
            Err(ConfigError::DuplicateReplicaId(ReplicaId(1)))
        );
    }

    #[test]
    fn rejects_id_out_of_range() {
        let mut c = config(4);
        c.replicas[3].id = ReplicaId(9);
        assert_eq!(
            c.validated(),
            Err(ConfigError::ReplicaIdOutOfRange {
                n: 4,
                id: ReplicaId(9)
            })
        );
    }

    #[test]
    fn rejects_duplicate_key() {
        let mut c = config(4);
        c.replicas[2].public_key = c.replicas[0].public_key;
        assert!(matches!(c.validated(), Err(ConfigError::DuplicateKey(_))));
        let mut c = config(4);
        c.clients[0].public_key = c.replicas[0].public_key;
        assert!(matches!(c.validated(), Err(ConfigError::DuplicateKey(_))));
    }

    #[test]
    fn rejects_duplicate_address() {
        let mut c = config(4);
        c.replicas[2].address = c.replicas[1].address.clone();
        assert_eq!(
            c.validated(),
            Err(ConfigError::DuplicateAddress("127.0.0.1:7001".into()))
        );
    }

    #[test]
    fn rejects_bad_address() {
        for bad in ["", "localhost", "host:0", "host:99999", ":80", "a b:80"] {
            let mut c = config(4);
            c.replicas[1].address = bad.into();
            assert!(
                matches!(c.validated(), Err(ConfigError::BadAddress { .. })),
                "{bad:?}"
            );
        }
        let mut c = config(4);
        c.replicas[1].address = "replica-1:7000".into();
        c.replicas[2].address = "[::1]:7000".into();
        assert!(c.validated().is_ok());
    }

    #[test]
    fn rejects_duplicate_client() {
        let mut c = config(4);
        c.clients.push(ClientEntry {
            id: ClientId(1),
            public_key: key(200_000),
        });
        assert_eq!(
            c.validated(),
            Err(ConfigError::DuplicateClientId(ClientId(1)))
        );
    }

    #[test]
    fn sorts_and_looks_up() {
        let mut c = config(4);
        c.replicas.reverse();
        let c = c.validated().unwrap();
        assert_eq!(c.replica(ReplicaId(2)).unwrap().id, ReplicaId(2));
        assert!(c.replica(ReplicaId(4)).is_none());
        assert!(c.client(ClientId(1)).is_some());
        assert!(c.client(ClientId(2)).is_none());
    }
}
