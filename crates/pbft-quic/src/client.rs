//! The client side: connections to every replica.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use pbft_crypto::{Keyring, Principal, TlsIdentity};
use pbft_types::{ClientId, ClusterConfig, Message, ReplicaId};

use crate::mesh::check_identity;
use crate::node::{dial_loop, Owner, Receiver, Shared};
use crate::stats::Stats;
use crate::{tls, Lane, Limits, QuicError, StatsSnapshot};

/// How to start a [`ClientEndpoint`].
#[derive(Debug)]
pub struct ClientEndpointConfig {
    /// The cluster: replica ids, keys and addresses; this client's key.
    pub cluster: ClusterConfig,
    /// This client.
    pub me: ClientId,
    /// This client's certificate and key; its key must be the configured key of `me`.
    pub identity: TlsIdentity,
    /// Bounds and timers.
    pub limits: Limits,
    /// The local address to bind (port 0 for any).
    pub bind: SocketAddr,
}

impl ClientEndpointConfig {
    /// Default limits, binding `0.0.0.0:0`.
    #[must_use]
    pub fn new(cluster: ClusterConfig, me: ClientId, identity: TlsIdentity) -> Self {
        Self {
            cluster,
            me,
            identity,
            limits: Limits::default(),
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }
}

/// A client's connections to all replicas, kept up with backoff. Received
/// messages come from replicas only. Cheap to clone.
#[derive(Clone)]
pub struct ClientEndpoint {
    owner: Arc<Owner>,
    me: ClientId,
}

impl std::fmt::Debug for ClientEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientEndpoint")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl ClientEndpoint {
    /// Binds a local socket and starts dialing every replica. Must be called
    /// inside a Tokio runtime.
    ///
    /// # Errors
    /// [`QuicError::NoRuntime`], [`QuicError::UnknownPeer`],
    /// [`QuicError::IdentityMismatch`], [`QuicError::InvalidLimit`],
    /// [`QuicError::Io`] or a TLS setup error.
    pub fn start(config: ClientEndpointConfig) -> Result<(Self, Receiver), QuicError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| QuicError::NoRuntime)?;
        config.limits.validate()?;
        let me = config.me;
        if config.cluster.client(me).is_none() {
            return Err(QuicError::UnknownPeer(Principal::Client(me)));
        }
        let keyring = Arc::new(Keyring::new(&config.cluster)?);
        check_identity(&keyring, &config.identity, Principal::Client(me))?;
        let stats = Arc::new(Stats::default());
        let dial = tls::client_config_with_stats(
            keyring.clone(),
            &config.identity,
            tls::Alpn::Client,
            &config.limits,
            stats.clone(),
        )?;
        let socket = UdpSocket::bind(config.bind)?;
        let _granted = crate::limits::size_socket_buffers(&socket, &config.limits);
        let endpoint = {
            let _guard = runtime.enter();
            quinn::Endpoint::new(
                tls::endpoint_config(&config.identity, &config.limits)?,
                None,
                socket,
                Arc::new(quinn::TokioRuntime),
            )?
        };
        let replicas: Vec<Principal> = config
            .cluster
            .replica_ids()
            .map(Principal::Replica)
            .collect();
        let (shared, receiver) = Shared::new(
            config.cluster.cluster_id,
            keyring,
            config.limits,
            stats,
            endpoint,
            dial,
            replicas,
        );
        let tasks = config
            .cluster
            .replicas
            .iter()
            .map(|r| {
                runtime
                    .spawn(dial_loop(shared.clone(), r.id, r.address.clone()))
                    .abort_handle()
            })
            .collect();
        let owner = Arc::new(Owner {
            shared,
            tasks: Mutex::new(tasks),
        });
        Ok((Self { owner, me }, receiver))
    }

    /// This client's id.
    #[must_use]
    pub fn id(&self) -> ClientId {
        self.me
    }

    /// Queues `message` to one replica without waiting.
    ///
    /// # Errors
    /// [`QuicError::QueueFull`] (dropped and counted), [`QuicError::UnknownPeer`],
    /// [`QuicError::FrameTooLarge`], [`QuicError::Wire`].
    pub fn send(&self, to: ReplicaId, lane: Lane, message: Message) -> Result<(), QuicError> {
        let payload = self.owner.shared.encode(message)?;
        self.owner
            .shared
            .enqueue(Principal::Replica(to), lane, payload)
    }

    /// Like [`ClientEndpoint::send`], waiting for room in the queue.
    ///
    /// # Errors
    /// As [`ClientEndpoint::send`], without [`QuicError::QueueFull`].
    pub async fn send_wait(
        &self,
        to: ReplicaId,
        lane: Lane,
        message: Message,
    ) -> Result<(), QuicError> {
        let payload = self.owner.shared.encode(message)?;
        self.owner
            .shared
            .enqueue_wait(Principal::Replica(to), lane, payload)
            .await
    }

    /// Queues `message` to every replica (encoded once); returns how many
    /// queues took it.
    ///
    /// # Errors
    /// [`QuicError::FrameTooLarge`], [`QuicError::Wire`].
    pub fn broadcast(&self, lane: Lane, message: Message) -> Result<usize, QuicError> {
        let payload = self.owner.shared.encode(message)?;
        Ok(self.owner.shared.enqueue_replicas(lane, &payload))
    }

    /// The replicas with a live connection, sorted.
    #[must_use]
    pub fn connected_peers(&self) -> Vec<Principal> {
        self.owner.shared.connected_peers()
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> StatsSnapshot {
        self.owner.shared.stats()
    }

    /// Closes the connections and the socket.
    pub async fn shutdown(self) {
        self.owner.shutdown().await;
    }
}
