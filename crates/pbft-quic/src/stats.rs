//! Counters: atomics for [`StatsSnapshot`] and the `metrics` facade.
//!
//! Metric names (all prefixed `pbft_quic_`):
//! - `frames_sent_total{lane}`, `frames_received_total{lane}`
//! - `frames_rejected_total{reason}`: `too_large`, `truncated`, `undecodable`,
//!   `protocol` (bad lane tag, duplicate lane, too many streams)
//! - `send_queue_drops_total{lane}`
//! - `connections_refused_total{reason}`: `unknown_certificate`,
//!   `client_on_mesh`, `replica_on_client_api`, `own_identity`,
//!   `clients_not_accepted`, `wrong_peer`, `no_alpn`
//! - `connections_replaced_total`, `handshakes_failed_total`, `dials_failed_total`
//! - gauge `peers_connected`

use std::sync::atomic::{AtomicU64, Ordering};

use crate::Lane;

/// Why a frame or stream was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reject {
    TooLarge,
    Truncated,
    Undecodable,
    Protocol,
}

impl Reject {
    fn label(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Truncated => "truncated",
            Self::Undecodable => "undecodable",
            Self::Protocol => "protocol",
        }
    }
}

/// Why a connection was refused after (or during) the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refuse {
    UnknownCertificate,
    ClientOnMesh,
    ReplicaOnClientApi,
    OwnIdentity,
    ClientsNotAccepted,
    WrongPeer,
    NoAlpn,
}

impl Refuse {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::UnknownCertificate => "unknown_certificate",
            Self::ClientOnMesh => "client_on_mesh",
            Self::ReplicaOnClientApi => "replica_on_client_api",
            Self::OwnIdentity => "own_identity",
            Self::ClientsNotAccepted => "clients_not_accepted",
            Self::WrongPeer => "wrong_peer",
            Self::NoAlpn => "no_alpn",
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    rejected_too_large: AtomicU64,
    rejected_truncated: AtomicU64,
    rejected_undecodable: AtomicU64,
    rejected_protocol: AtomicU64,
    send_queue_drops: AtomicU64,
    connections_established: AtomicU64,
    connections_refused: AtomicU64,
    connections_replaced: AtomicU64,
    handshakes_failed: AtomicU64,
    dials_failed: AtomicU64,
    peers_connected: AtomicU64,
}

fn inc(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    pub(crate) fn sent(&self, lane: Lane, frames: u64, bytes: u64) {
        inc(&self.frames_sent, frames);
        inc(&self.bytes_sent, bytes);
        metrics::counter!("pbft_quic_frames_sent_total", "lane" => lane.name()).increment(frames);
    }

    pub(crate) fn received(&self, lane: Lane, bytes: u64) {
        inc(&self.frames_received, 1);
        inc(&self.bytes_received, bytes);
        metrics::counter!("pbft_quic_frames_received_total", "lane" => lane.name()).increment(1);
    }

    pub(crate) fn reject(&self, reason: Reject) {
        let a = match reason {
            Reject::TooLarge => &self.rejected_too_large,
            Reject::Truncated => &self.rejected_truncated,
            Reject::Undecodable => &self.rejected_undecodable,
            Reject::Protocol => &self.rejected_protocol,
        };
        inc(a, 1);
        metrics::counter!("pbft_quic_frames_rejected_total", "reason" => reason.label())
            .increment(1);
    }

    pub(crate) fn drop_queued(&self, lane: Lane) {
        inc(&self.send_queue_drops, 1);
        metrics::counter!("pbft_quic_send_queue_drops_total", "lane" => lane.name()).increment(1);
    }

    pub(crate) fn refuse(&self, reason: Refuse) {
        inc(&self.connections_refused, 1);
        metrics::counter!("pbft_quic_connections_refused_total", "reason" => reason.label())
            .increment(1);
    }

    pub(crate) fn replaced(&self) {
        inc(&self.connections_replaced, 1);
        metrics::counter!("pbft_quic_connections_replaced_total").increment(1);
    }

    pub(crate) fn handshake_failed(&self) {
        inc(&self.handshakes_failed, 1);
        metrics::counter!("pbft_quic_handshakes_failed_total").increment(1);
    }

    pub(crate) fn dial_failed(&self) {
        inc(&self.dials_failed, 1);
        metrics::counter!("pbft_quic_dials_failed_total").increment(1);
    }

    pub(crate) fn peer_up(&self) {
        inc(&self.connections_established, 1);
        inc(&self.peers_connected, 1);
        metrics::gauge!("pbft_quic_peers_connected").increment(1.0);
    }

    pub(crate) fn peer_down(&self) {
        self.peers_connected.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("pbft_quic_peers_connected").decrement(1.0);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            frames_sent: g(&self.frames_sent),
            frames_received: g(&self.frames_received),
            bytes_sent: g(&self.bytes_sent),
            bytes_received: g(&self.bytes_received),
            frames_rejected_too_large: g(&self.rejected_too_large),
            frames_rejected_truncated: g(&self.rejected_truncated),
            frames_rejected_undecodable: g(&self.rejected_undecodable),
            frames_rejected_protocol: g(&self.rejected_protocol),
            send_queue_drops: g(&self.send_queue_drops),
            connections_established: g(&self.connections_established),
            connections_refused: g(&self.connections_refused),
            connections_replaced: g(&self.connections_replaced),
            handshakes_failed: g(&self.handshakes_failed),
            dials_failed: g(&self.dials_failed),
            peers_connected: g(&self.peers_connected),
        }
    }
}

/// A copy of one endpoint's counters (the same events as the metrics, for
/// tests and status pages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Frames written to streams.
    pub frames_sent: u64,
    /// Frames received and decoded.
    pub frames_received: u64,
    /// Payload bytes written.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Frames whose length prefix exceeded the limit.
    pub frames_rejected_too_large: u64,
    /// Streams that ended inside a frame.
    pub frames_rejected_truncated: u64,
    /// Frames that did not decode as an envelope of this cluster.
    pub frames_rejected_undecodable: u64,
    /// Stream-level violations: bad lane tag, duplicate lane, too many streams.
    pub frames_rejected_protocol: u64,
    /// Messages dropped because a send queue was full.
    pub send_queue_drops: u64,
    /// Authenticated connections registered (dialed or accepted).
    pub connections_established: u64,
    /// Connections refused for their identity or role.
    pub connections_refused: u64,
    /// Connections closed because a newer one claimed the same id.
    pub connections_replaced: u64,
    /// Incoming handshakes that failed or timed out.
    pub handshakes_failed: u64,
    /// Dial attempts that failed.
    pub dials_failed: u64,
    /// Peers with a live connection now.
    pub peers_connected: u64,
}
