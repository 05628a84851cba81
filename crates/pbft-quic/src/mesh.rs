//! The replica side: a mesh between replicas that also serves clients.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use pbft_crypto::{Keyring, Principal, TlsIdentity};
use pbft_types::{ClusterConfig, Message, ReplicaId};

use crate::node::{accept_loop, dial_loop, AcceptPolicy, Owner, Receiver, Shared};
use crate::stats::Stats;
use crate::{tls, Lane, Limits, QuicError, StatsSnapshot};

/// How to start a replica's [`Mesh`].
#[derive(Debug)]
pub struct MeshConfig {
    /// The cluster: replica ids, keys and addresses; client ids and keys.
    pub cluster: ClusterConfig,
    /// This replica.
    pub me: ReplicaId,
    /// This replica's certificate and key; its key must be the configured
    /// key of `me`.
    pub identity: TlsIdentity,
    /// Bounds and timers.
    pub limits: Limits,
    /// Whether clients may connect (on the client ALPN). A replica-only
    /// mesh for another protocol turns this off.
    pub accept_clients: bool,
    /// A socket already bound to this replica's address; when `None` the
    /// mesh binds the configured address. Tests bind `127.0.0.1:0` first
    /// and put the port in the configuration.
    pub socket: Option<UdpSocket>,
}

impl MeshConfig {
    /// A configuration with default limits that accepts clients and binds
    /// the configured address.
    #[must_use]
    pub fn new(cluster: ClusterConfig, me: ReplicaId, identity: TlsIdentity) -> Self {
        Self {
            cluster,
            me,
            identity,
            limits: Limits::default(),
            accept_clients: true,
            socket: None,
        }
    }
}

/// A replica's authenticated connections to the other replicas (and its
/// clients). Cheap to clone; the endpoint closes when the last clone is
/// dropped or [`Mesh::shutdown`] is called.
///
/// Replica `i` dials every replica `j > i` and accepts the others, so each
/// pair has one connection; a dialer redials with backoff when its
/// connection closes. Sends are never blocking: each peer has a bounded
/// queue per [`Lane`], and a full queue drops the new message
/// ([`QuicError::QueueFull`], counted). Delivery is at most once: messages
/// queued or in flight when a connection breaks may be lost, as the
/// protocol above tolerates.
#[derive(Clone)]
pub struct Mesh {
    owner: Arc<Owner>,
    me: ReplicaId,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

pub(crate) fn check_identity(
    keyring: &Keyring,
    identity: &TlsIdentity,
    expected: Principal,
) -> Result<(), QuicError> {
    match keyring.identify_certificate(&identity.cert_der) {
        Ok(p) if p == expected => Ok(()),
        Ok(p) => Err(QuicError::IdentityMismatch {
            expected,
            got: p.to_string(),
        }),
        Err(e) => Err(QuicError::IdentityMismatch {
            expected,
            got: e.to_string(),
        }),
    }
}

fn resolve(replica: ReplicaId, address: &str) -> Result<SocketAddr, QuicError> {
    use std::net::ToSocketAddrs;
    let bad = |reason: String| QuicError::BadAddress {
        replica,
        address: address.to_owned(),
        reason,
    };
    address
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to nothing".to_owned()))
}

impl Mesh {
    /// Binds the replica's address, starts accepting peers and clients and
    /// dialing the replicas with higher ids. Must be called inside a Tokio
    /// runtime.
    ///
    /// # Errors
    /// [`QuicError::NoRuntime`], [`QuicError::UnknownPeer`] (`me` is not
    /// configured), [`QuicError::IdentityMismatch`], [`QuicError::InvalidLimit`],
    /// [`QuicError::BadAddress`], [`QuicError::Io`] or a TLS setup error.
    pub fn start(config: MeshConfig) -> Result<(Self, Receiver), QuicError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| QuicError::NoRuntime)?;
        config.limits.validate()?;
        let me = config.me;
        let entry = config
            .cluster
            .replica(me)
            .ok_or(QuicError::UnknownPeer(Principal::Replica(me)))?;
        let keyring = Arc::new(Keyring::new(&config.cluster)?);
        check_identity(&keyring, &config.identity, Principal::Replica(me))?;
        let socket = match config.socket {
            Some(socket) => socket,
            None => UdpSocket::bind(resolve(me, &entry.address)?)?,
        };
        let _granted = crate::limits::size_socket_buffers(&socket, &config.limits);
        let stats = Arc::new(Stats::default());
        let server = tls::server_config(
            keyring.clone(),
            &config.identity,
            &config.limits,
            stats.clone(),
        )?;
        let dial = tls::client_config_with_stats(
            keyring.clone(),
            &config.identity,
            tls::Alpn::Mesh,
            &config.limits,
            stats.clone(),
        )?;
        let endpoint = {
            let _guard = runtime.enter();
            quinn::Endpoint::new(
                tls::endpoint_config(&config.identity, &config.limits)?,
                Some(server),
                socket,
                Arc::new(quinn::TokioRuntime),
            )?
        };
        let others: Vec<Principal> = config
            .cluster
            .replica_ids()
            .filter(|id| *id != me)
            .map(Principal::Replica)
            .collect();
        let (shared, receiver) = Shared::new(
            config.cluster.cluster_id,
            keyring,
            config.limits,
            stats,
            endpoint,
            dial,
            others,
        );
        let policy = AcceptPolicy {
            me,
            accept_clients: config.accept_clients,
        };
        let mut tasks = vec![runtime
            .spawn(accept_loop(shared.clone(), policy))
            .abort_handle()];
        for replica in config.cluster.replicas.iter().filter(|r| r.id > me) {
            let task = runtime.spawn(dial_loop(
                shared.clone(),
                replica.id,
                replica.address.clone(),
            ));
            tasks.push(task.abort_handle());
        }
        let owner = Arc::new(Owner {
            shared,
            tasks: Mutex::new(tasks),
        });
        Ok((Self { owner, me }, receiver))
    }

    /// This replica's id.
    #[must_use]
    pub fn id(&self) -> ReplicaId {
        self.me
    }

    /// The bound UDP address.
    ///
    /// # Errors
    /// [`QuicError::Io`].
    pub fn local_addr(&self) -> Result<SocketAddr, QuicError> {
        Ok(self.owner.shared.endpoint.local_addr()?)
    }

    /// Queues `message` to a replica or a connected client, without waiting.
    ///
    /// # Errors
    /// [`QuicError::QueueFull`] (dropped and counted), [`QuicError::NotConnected`]
    /// (a client without a connection), [`QuicError::UnknownPeer`],
    /// [`QuicError::FrameTooLarge`], [`QuicError::Wire`].
    pub fn send(&self, to: Principal, lane: Lane, message: Message) -> Result<(), QuicError> {
        let payload = self.owner.shared.encode(message)?;
        self.owner.shared.enqueue(to, lane, payload)
    }

    /// Like [`Mesh::send`], but waits for room in the queue instead of
    /// dropping (for bulk transfers and benchmarks).
    ///
    /// # Errors
    /// As [`Mesh::send`], without [`QuicError::QueueFull`].
    pub async fn send_wait(
        &self,
        to: Principal,
        lane: Lane,
        message: Message,
    ) -> Result<(), QuicError> {
        let payload = self.owner.shared.encode(message)?;
        self.owner.shared.enqueue_wait(to, lane, payload).await
    }

    /// Queues `message` to every other replica (encoded once). Returns how
    /// many queues took it; full queues drop it and count.
    ///
    /// # Errors
    /// [`QuicError::FrameTooLarge`], [`QuicError::Wire`].
    pub fn broadcast(&self, lane: Lane, message: Message) -> Result<usize, QuicError> {
        let payload = self.owner.shared.encode(message)?;
        Ok(self.owner.shared.enqueue_replicas(lane, &payload))
    }

    /// Like [`Mesh::broadcast`], waiting for room in each queue.
    ///
    /// # Errors
    /// [`QuicError::FrameTooLarge`], [`QuicError::Wire`], [`QuicError::Closed`].
    pub async fn broadcast_wait(&self, lane: Lane, message: Message) -> Result<(), QuicError> {
        let shared = &self.owner.shared;
        let payload = shared.encode(message)?;
        for peer in shared.replicas() {
            shared.enqueue_wait(*peer, lane, payload.clone()).await?;
        }
        Ok(())
    }

    /// The peers with a live connection, sorted.
    #[must_use]
    pub fn connected_peers(&self) -> Vec<Principal> {
        self.owner.shared.connected_peers()
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> StatsSnapshot {
        self.owner.shared.stats()
    }

    /// Closes every connection and the socket, and waits (up to 2 s) until
    /// peers have been told. Other clones of this handle stop working.
    pub async fn shutdown(self) {
        self.owner.shutdown().await;
    }
}
