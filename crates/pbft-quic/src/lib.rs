//! Authenticated replica mesh and client endpoint for `pbft`, on QUIC
//! (quinn + rustls with the ring provider). Usable without `pbft-core`: it
//! moves [`pbft_types::Message`]s between configured identities.
//!
//! - **Identity.** Mutual TLS 1.3; every endpoint presents a self-signed
//!   certificate whose key is its ed25519 identity key, and accepts a peer
//!   only if [`pbft_crypto::Keyring::identify_certificate`] maps the
//!   presented certificate to a configured replica or client ([`tls`]). The
//!   role is checked after the handshake: the mesh API ([`tls::Alpn::Mesh`])
//!   takes replicas only, the client API takes clients only. A received
//!   message carries the authenticated sender ([`Received::from`]).
//! - **Duplicate ids: the newer connection replaces the older.** A
//!   restarted peer reconnects before its old connection has timed out;
//!   keeping the older one would lock it out until the idle timeout. Since
//!   an id is a key, only the holder of that key can replace its own
//!   connection; the old one is closed with [`CloseCode::Replaced`]. A dialer
//!   whose connection was replaced backs off to the maximum delay, so two
//!   processes sharing one identity churn slowly rather than in a loop.
//! - **Frames and lanes.** Each direction of a connection carries one
//!   unidirectional stream per [`Lane`] (consensus, bulk), opened once, its
//!   first byte the lane tag, then frames `u32 length || envelope`. Bulk
//!   data never sits in front of consensus messages on the wire (separate
//!   streams, consensus at higher priority) or in the receiver (consensus
//!   first). A frame over [`Limits::frame_bytes_max`], a truncated or
//!   undecodable frame, a bad or duplicate lane tag or a third stream
//!   closes the peer's connection with [`CloseCode::Protocol`] and is
//!   counted; a peer cannot open bidirectional streams at all.
//! - **Bounded queues, drop newest.** Each peer has a queue per lane bounded
//!   in messages and bytes ([`Limits::send_queue_messages_max`],
//!   [`Limits::send_queue_bytes_max`]). [`Mesh::send`] never blocks: a full
//!   queue drops the new message, counts it and returns
//!   [`QuicError::QueueFull`]. A client that does not read stalls QUIC flow
//!   control, its queue fills and further replies to it are dropped; the
//!   replica's memory for it stays bounded. Receiving applies
//!   back-pressure instead: readers wait for room in the bounded receive
//!   queue, which stalls the sender through flow control.
//! - **Connections.** Replica `i` dials each replica `j > i`; clients dial
//!   every replica. Dialers retry with exponential backoff
//!   ([`Limits::reconnect_backoff_min`] to `_max`). Keep-alives and an idle
//!   timeout detect dead peers; the stateless-reset key is derived from the
//!   identity key, so a restarted replica resets its old connections and
//!   peers redial at once.
//! - **Counters** via the `metrics` facade (names in the `stats` module
//!   source: `pbft_quic_frames_rejected_total{reason}`,
//!   `pbft_quic_send_queue_drops_total{lane}`, gauge
//!   `pbft_quic_peers_connected`, `pbft_quic_udp_receive_buffer_bytes`, ...)
//!   and [`StatsSnapshot`].
//!
//! # Example
//!
//! Two replicas on loopback exchange a message.
//!
//! ```
//! use pbft_crypto::{Principal, SecretKey, TlsIdentity};
//! use pbft_quic::{Lane, Mesh, MeshConfig};
//! use pbft_types::{ClusterConfig, ClusterId, Fetch, Message, ReplicaEntry, ReplicaId, SeqNo};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let keys: Vec<SecretKey> = (0..2u8).map(|i| SecretKey::from_seed([i; 32])).collect();
//!     // Bind first so that the configuration can name the ports.
//!     let sockets = (0..2)
//!         .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
//!         .collect::<Result<Vec<_>, _>>()?;
//!     let cluster = ClusterConfig {
//!         cluster_id: ClusterId(7),
//!         replicas: (0..2)
//!             .map(|i| Ok(ReplicaEntry {
//!                 id: ReplicaId(i as u32),
//!                 public_key: keys[i].public_key(),
//!                 address: sockets[i].local_addr()?.to_string(),
//!             }))
//!             .collect::<Result<_, std::io::Error>>()?,
//!         clients: vec![],
//!     }
//!     .validated()?;
//!     let mut receivers = Vec::new();
//!     let mut meshes = Vec::new();
//!     for (i, socket) in sockets.into_iter().enumerate() {
//!         let identity = TlsIdentity::generate(&keys[i], &format!("replica-{i}"))?;
//!         let mut config = MeshConfig::new(cluster.clone(), ReplicaId(i as u32), identity);
//!         config.socket = Some(socket);
//!         let (mesh, receiver) = Mesh::start(config)?;
//!         meshes.push(mesh);
//!         receivers.push(receiver);
//!     }
//!
//!     let message = Message::Fetch(Fetch::Batch { seq: SeqNo(3) });
//!     // Queued until replica 0 has dialed replica 1, then delivered.
//!     meshes[0].send(Principal::Replica(ReplicaId(1)), Lane::Consensus, message.clone())?;
//!     let received = receivers[1].recv().await.ok_or("mesh closed")?;
//!     assert_eq!(received.from, Principal::Replica(ReplicaId(0)));
//!     assert_eq!(received.message, message);
//!     for mesh in meshes {
//!         mesh.shutdown().await;
//!     }
//!     Ok(())
//! })
//! # }
//! ```

mod client;
mod error;
mod frame;
mod limits;
mod mesh;
mod node;
mod stats;
pub mod tls;

pub use client::{ClientEndpoint, ClientEndpointConfig};
pub use error::QuicError;
pub use frame::{Lane, FRAME_HEADER_BYTES};
pub use limits::{
    Limits, UDP_PAYLOAD_BYTES_MAX, UDP_PAYLOAD_BYTES_MIN, UDP_SOCKET_BUFFER_BYTES_MAX,
    UDP_SOCKET_BUFFER_BYTES_MIN,
};
pub use mesh::{Mesh, MeshConfig};
pub use node::Receiver;
pub use stats::StatsSnapshot;

use pbft_crypto::Principal;
use pbft_types::Message;

/// A message received from an authenticated peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The sender, from the certificate of the connection it came on.
    pub from: Principal,
    /// The lane it came on.
    pub lane: Lane,
    /// The message, decoded and checked for this cluster.
    pub message: Message,
}

/// QUIC application close codes this crate uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseCode {
    /// The endpoint shut down.
    Shutdown,
    /// A newer connection with the same identity replaced this one.
    Replaced,
    /// The peer's identity or role is not accepted here.
    Refused,
    /// The peer broke the framing or stream rules.
    Protocol,
}

impl CloseCode {
    /// The numeric code on the wire.
    #[must_use]
    pub const fn code(self) -> u32 {
        match self {
            Self::Shutdown => 0,
            Self::Replaced => 1,
            Self::Refused => 2,
            Self::Protocol => 3,
        }
    }
}

impl From<CloseCode> for quinn::VarInt {
    fn from(c: CloseCode) -> Self {
        quinn::VarInt::from_u32(c.code())
    }
}
