//! The machinery shared by [`crate::Mesh`] and [`crate::ClientEndpoint`]:
//! peer slots with bounded send queues, connection registration (newer
//! replaces older), lane writers and readers, dialers with backoff.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pbft_crypto::{Keyring, Principal};
use pbft_types::{ClusterId, Envelope, Message, ReplicaId};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;

use crate::frame::{put_frame_header, FrameDecoder, FrameError, PerLane};
use crate::stats::{Refuse, Reject, Stats};
use crate::tls::{negotiated_alpn, peer_principal, Alpn, SERVER_NAME};
use crate::{CloseCode, Lane, Limits, QuicError, Received, StatsSnapshot};

/// Frames up to this size are copied into one coalesced buffer per write;
/// larger payloads are written as their own chunk without a copy.
const COALESCE_PAYLOAD_BYTES_MAX: usize = 4096;
/// Bytes asked of quinn per read.
const READ_CHUNK_BYTES_MAX: usize = 256 * 1024;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A frame waiting in a send queue; its permit holds its bytes against the
/// queue's byte bound until the frame has been written.
struct QueuedFrame {
    payload: Bytes,
    _bytes: OwnedSemaphorePermit,
}

struct LaneQueue {
    tx: mpsc::Sender<QueuedFrame>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<QueuedFrame>>>,
    bytes: Arc<Semaphore>,
}

impl LaneQueue {
    fn new(limits: &Limits) -> Self {
        let (tx, rx) = mpsc::channel(limits.send_queue_messages_max);
        Self {
            tx,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
            bytes: Arc::new(Semaphore::new(limits.send_queue_bytes_max)),
        }
    }
}

/// One peer: its send queues (kept across reconnections for replicas) and
/// its current connection.
pub(crate) struct PeerSlot {
    queues: PerLane<LaneQueue>,
    connection: Mutex<Option<quinn::Connection>>,
}

impl PeerSlot {
    fn new(limits: &Limits) -> Self {
        Self {
            queues: PerLane::new(|_| LaneQueue::new(limits)),
            connection: Mutex::new(None),
        }
    }

    fn live_connection(&self) -> Option<quinn::Connection> {
        lock(&self.connection)
            .clone()
            .filter(|c| c.close_reason().is_none())
    }
}

/// Who may connect to a listening endpoint, and for which API.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AcceptPolicy {
    pub(crate) me: ReplicaId,
    pub(crate) accept_clients: bool,
}

impl AcceptPolicy {
    fn check(self, alpn: Option<Alpn>, peer: Principal) -> Result<(), Refuse> {
        match (alpn, peer) {
            (None, _) => Err(Refuse::NoAlpn),
            (Some(Alpn::Mesh), Principal::Replica(id)) if id == self.me => Err(Refuse::OwnIdentity),
            (Some(Alpn::Mesh), Principal::Replica(_)) => Ok(()),
            (Some(Alpn::Mesh), Principal::Client(_)) => Err(Refuse::ClientOnMesh),
            (Some(Alpn::Client), Principal::Client(_)) if self.accept_clients => Ok(()),
            (Some(Alpn::Client), Principal::Client(_)) => Err(Refuse::ClientsNotAccepted),
            (Some(Alpn::Client), Principal::Replica(_)) => Err(Refuse::ReplicaOnClientApi),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) cluster_id: ClusterId,
    pub(crate) keyring: Arc<Keyring>,
    pub(crate) limits: Limits,
    pub(crate) stats: Arc<Stats>,
    pub(crate) endpoint: quinn::Endpoint,
    /// Outgoing configuration for dialing replicas.
    pub(crate) dial_config: quinn::ClientConfig,
    peers: Mutex<HashMap<Principal, Arc<PeerSlot>>>,
    /// Replica peers whose slots exist from the start (broadcast targets).
    replicas: Vec<Principal>,
    inbound: PerLane<mpsc::Sender<Received>>,
}

/// What the application reads: received messages, consensus lane first.
#[derive(Debug)]
pub struct Receiver {
    lanes: PerLane<mpsc::Receiver<Received>>,
}

impl Receiver {
    /// The next received message; consensus-lane messages are handed out
    /// before waiting bulk ones. `None` once the endpoint is gone.
    pub async fn recv(&mut self) -> Option<Received> {
        let PerLane { consensus, bulk } = &mut self.lanes;
        tokio::select! {
            biased;
            Some(r) = consensus.recv() => Some(r),
            Some(r) = bulk.recv() => Some(r),
            else => None,
        }
    }

    /// A received message if one is waiting, without blocking.
    pub fn try_recv(&mut self) -> Option<Received> {
        self.lanes
            .consensus
            .try_recv()
            .ok()
            .or_else(|| self.lanes.bulk.try_recv().ok())
    }
}

impl Shared {
    pub(crate) fn new(
        cluster_id: ClusterId,
        keyring: Arc<Keyring>,
        limits: Limits,
        stats: Arc<Stats>,
        endpoint: quinn::Endpoint,
        dial_config: quinn::ClientConfig,
        replicas: Vec<Principal>,
    ) -> (Arc<Self>, Receiver) {
        let mut receivers = Vec::new();
        let inbound = PerLane::new(|_| {
            let (tx, rx) = mpsc::channel(limits.receive_queue_messages_max);
            receivers.push(rx);
            tx
        });
        let mut receivers = receivers.into_iter();
        let (Some(consensus), Some(bulk)) = (receivers.next(), receivers.next()) else {
            unreachable!("PerLane::new makes exactly two channels");
        };
        let peers = replicas
            .iter()
            .map(|p| (*p, Arc::new(PeerSlot::new(&limits))))
            .collect();
        let shared = Arc::new(Self {
            cluster_id,
            keyring,
            limits,
            stats,
            endpoint,
            dial_config,
            peers: Mutex::new(peers),
            replicas,
            inbound,
        });
        (
            shared,
            Receiver {
                lanes: PerLane { consensus, bulk },
            },
        )
    }

    pub(crate) fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    pub(crate) fn connected_peers(&self) -> Vec<Principal> {
        let peers = lock(&self.peers);
        let mut out: Vec<Principal> = peers
            .iter()
            .filter(|(_, slot)| slot.live_connection().is_some())
            .map(|(p, _)| *p)
            .collect();
        out.sort();
        out
    }

    pub(crate) fn encode(&self, message: Message) -> Result<Bytes, QuicError> {
        let bytes = pbft_types::encode(&Envelope::new(self.cluster_id, message))?;
        if bytes.len() > self.limits.frame_bytes_max {
            return Err(QuicError::FrameTooLarge {
                limit: self.limits.frame_bytes_max,
                got: bytes.len(),
            });
        }
        Ok(Bytes::from(bytes))
    }

    fn slot(&self, peer: Principal) -> Result<Arc<PeerSlot>, QuicError> {
        if let Some(slot) = lock(&self.peers).get(&peer) {
            return Ok(slot.clone());
        }
        match peer {
            Principal::Replica(_) => Err(QuicError::UnknownPeer(peer)),
            Principal::Client(_) => Err(QuicError::NotConnected(peer)),
        }
    }

    /// Queues an encoded frame without waiting: a full queue drops the
    /// message (drop newest) and counts it.
    pub(crate) fn enqueue(
        &self,
        peer: Principal,
        lane: Lane,
        payload: Bytes,
    ) -> Result<(), QuicError> {
        let slot = self.slot(peer)?;
        let queue = slot.queues.get(lane);
        let full = || {
            self.stats.drop_queued(lane);
            QuicError::QueueFull { peer, lane }
        };
        let Ok(permit) = queue
            .bytes
            .clone()
            .try_acquire_many_owned(frame_permits(&payload))
        else {
            return Err(full());
        };
        match queue.tx.try_send(QueuedFrame {
            payload,
            _bytes: permit,
        }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(full()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(QuicError::Closed),
        }
    }

    /// Queues an encoded frame, waiting for room in the queue.
    pub(crate) async fn enqueue_wait(
        &self,
        peer: Principal,
        lane: Lane,
        payload: Bytes,
    ) -> Result<(), QuicError> {
        let slot = self.slot(peer)?;
        let queue = slot.queues.get(lane);
        let permit = queue
            .bytes
            .clone()
            .acquire_many_owned(frame_permits(&payload))
            .await
            .map_err(|_| QuicError::Closed)?;
        queue
            .tx
            .send(QueuedFrame {
                payload,
                _bytes: permit,
            })
            .await
            .map_err(|_| QuicError::Closed)
    }

    /// Queues one encoded frame to every replica peer; returns how many
    /// queues took it (the others dropped it and counted).
    pub(crate) fn enqueue_replicas(&self, lane: Lane, payload: &Bytes) -> usize {
        self.replicas
            .iter()
            .filter(|p| self.enqueue(**p, lane, payload.clone()).is_ok())
            .count()
    }

    pub(crate) fn replicas(&self) -> &[Principal] {
        &self.replicas
    }

    /// Makes `connection` the peer's connection. Newer replaces older: an
    /// existing connection for the same principal is closed.
    fn register(&self, peer: Principal, connection: &quinn::Connection) -> Arc<PeerSlot> {
        let mut peers = lock(&self.peers);
        let slot = peers
            .entry(peer)
            .or_insert_with(|| Arc::new(PeerSlot::new(&self.limits)))
            .clone();
        drop(peers);
        let old = lock(&slot.connection).replace(connection.clone());
        match old {
            Some(old) => {
                tracing::info!(%peer, "a newer connection replaces the current one");
                old.close(
                    CloseCode::Replaced.into(),
                    b"replaced by a newer connection",
                );
                self.stats.replaced();
            }
            None => self.stats.peer_up(),
        }
        slot
    }

    /// Forgets `connection` if it is still the peer's current one. A
    /// client's slot (and its queued replies) goes with its connection, so
    /// memory is held only for connected clients.
    fn unregister(&self, peer: Principal, connection: &quinn::Connection) {
        let mut peers = lock(&self.peers);
        let Some(slot) = peers.get(&peer).cloned() else {
            return;
        };
        let mut current = lock(&slot.connection);
        if current.as_ref().map(quinn::Connection::stable_id) == Some(connection.stable_id()) {
            *current = None;
            self.stats.peer_down();
            if matches!(peer, Principal::Client(_)) {
                peers.remove(&peer);
            }
        }
    }
}

fn frame_permits(payload: &Bytes) -> u32 {
    // encode() checked len <= frame_bytes_max <= send_queue_bytes_max <= u32::MAX.
    u32::try_from(payload.len()).unwrap_or(u32::MAX)
}

/// Serves an authenticated connection until it closes: one writer per lane,
/// and a reader for each lane stream the peer opens.
pub(crate) async fn run_connection(
    shared: Arc<Shared>,
    peer: Principal,
    connection: quinn::Connection,
) {
    let slot = shared.register(peer, &connection);
    let mut writers = Vec::new();
    for lane in Lane::ALL {
        let task = tokio::spawn(write_lane(
            shared.clone(),
            slot.clone(),
            connection.clone(),
            lane,
        ));
        writers.push(task.abort_handle());
    }
    let seen = Arc::new(PerLane::new(|_| AtomicBool::new(false)));
    let mut streams: u32 = 0;
    while let Ok(recv) = connection.accept_uni().await {
        streams = streams.saturating_add(1);
        if streams > 2 {
            // One stream per lane for the life of a connection.
            shared.stats.reject(Reject::Protocol);
            connection.close(CloseCode::Protocol.into(), b"too many streams");
            break;
        }
        tokio::spawn(read_lane(
            shared.clone(),
            peer,
            connection.clone(),
            recv,
            seen.clone(),
        ));
    }
    for w in writers {
        w.abort();
    }
    shared.unregister(peer, &connection);
}

async fn write_lane(
    shared: Arc<Shared>,
    slot: Arc<PeerSlot>,
    connection: quinn::Connection,
    lane: Lane,
) {
    let Ok(mut send) = connection.open_uni().await else {
        return;
    };
    let _ = send.set_priority(lane.priority());
    if send.write_all(&[lane.tag()]).await.is_err() {
        return;
    }
    let queue = slot.queues.get(lane);
    // The queue outlives connections; the current connection's writer owns it.
    let mut rx = tokio::select! {
        rx = queue.rx.clone().lock_owned() => rx,
        _ = connection.closed() => return,
    };
    let batch_max = shared.limits.write_batch_messages_max;
    let mut batch: Vec<QueuedFrame> = Vec::with_capacity(batch_max);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut small = BytesMut::new();
    loop {
        let n = tokio::select! {
            biased;
            _ = connection.closed() => return,
            n = rx.recv_many(&mut batch, batch_max) => n,
        };
        if n == 0 {
            return;
        }
        let mut bytes: u64 = 0;
        for frame in &batch {
            let len = frame.payload.len();
            bytes += len as u64;
            put_frame_header(&mut small, len);
            if len <= COALESCE_PAYLOAD_BYTES_MAX {
                small.extend_from_slice(&frame.payload);
            } else {
                chunks.push(small.split().freeze());
                chunks.push(frame.payload.clone());
            }
        }
        if !small.is_empty() {
            chunks.push(small.split().freeze());
        }
        if send.write_all_chunks(&mut chunks).await.is_err() {
            return;
        }
        chunks.clear();
        shared.stats.sent(lane, n as u64, bytes);
        // Releases the frames' byte permits.
        batch.clear();
    }
}

async fn read_lane(
    shared: Arc<Shared>,
    peer: Principal,
    connection: quinn::Connection,
    mut recv: quinn::RecvStream,
    seen: Arc<PerLane<AtomicBool>>,
) {
    let refuse = |reason: Reject, why: &'static [u8]| {
        shared.stats.reject(reason);
        tracing::debug!(%peer, reason = ?reason, "closing a peer for a bad stream or frame");
        connection.close(CloseCode::Protocol.into(), why);
    };
    let mut tag = [0u8; 1];
    let timeout = shared.limits.handshake_timeout;
    match tokio::time::timeout(timeout, recv.read_exact(&mut tag)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return,
        Err(_) => return refuse(Reject::Protocol, b"no lane tag"),
    }
    let Some(lane) = Lane::from_tag(tag[0]) else {
        return refuse(Reject::Protocol, b"bad lane tag");
    };
    if seen.get(lane).swap(true, Ordering::Relaxed) {
        return refuse(Reject::Protocol, b"duplicate lane");
    }
    let inbound = shared.inbound.get(lane).clone();
    let limit = shared.limits.frame_bytes_max;
    let mut decoder = FrameDecoder::new(limit);
    loop {
        match recv.read_chunk(READ_CHUNK_BYTES_MAX, true).await {
            Ok(Some(chunk)) => decoder.push(&chunk.bytes),
            Ok(None) => {
                if decoder.finish() == Err(FrameError::Truncated) {
                    refuse(Reject::Truncated, b"truncated frame");
                }
                return;
            }
            Err(_) => return,
        }
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(FrameError::TooLarge { got }) => {
                    tracing::debug!(%peer, got, limit, "oversized frame");
                    return refuse(Reject::TooLarge, b"frame too large");
                }
                Err(FrameError::Truncated) => return refuse(Reject::Truncated, b"truncated frame"),
            };
            let envelope = match pbft_types::decode(&frame, limit, shared.cluster_id) {
                Ok(envelope) => envelope,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "undecodable frame");
                    return refuse(Reject::Undecodable, b"undecodable frame");
                }
            };
            shared.stats.received(lane, frame.len() as u64);
            let received = Received {
                from: peer,
                lane,
                message: envelope.message,
            };
            if inbound.send(received).await.is_err() {
                return;
            }
        }
    }
}

/// Accepts incoming connections until the endpoint closes.
pub(crate) async fn accept_loop(shared: Arc<Shared>, policy: AcceptPolicy) {
    while let Some(incoming) = shared.endpoint.accept().await {
        tokio::spawn(accept_one(shared.clone(), policy, incoming));
    }
}

async fn accept_one(shared: Arc<Shared>, policy: AcceptPolicy, incoming: quinn::Incoming) {
    let connection = match tokio::time::timeout(shared.limits.handshake_timeout, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "incoming handshake failed");
            shared.stats.handshake_failed();
            return;
        }
        Err(_) => {
            shared.stats.handshake_failed();
            return;
        }
    };
    let peer = match peer_principal(&connection, &shared.keyring) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = %e, "connection without a configured identity");
            shared.stats.refuse(Refuse::UnknownCertificate);
            connection.close(CloseCode::Refused.into(), b"unknown identity");
            return;
        }
    };
    if let Err(reason) = policy.check(negotiated_alpn(&connection), peer) {
        tracing::info!(%peer, reason = reason.label(), "refusing a connection");
        shared.stats.refuse(reason);
        connection.close(CloseCode::Refused.into(), reason.label().as_bytes());
        return;
    }
    run_connection(shared, peer, connection).await;
}

/// Keeps a connection to `target` up: dials, serves the connection until it
/// closes, and redials with exponential backoff.
pub(crate) async fn dial_loop(shared: Arc<Shared>, target: ReplicaId, address: String) {
    let peer = Principal::Replica(target);
    let (min, max) = (
        shared.limits.reconnect_backoff_min,
        shared.limits.reconnect_backoff_max,
    );
    let mut backoff = min;
    loop {
        // A connection the peer opened to us serves as well; wait for it.
        let existing = shared.slot(peer).ok().and_then(|s| s.live_connection());
        if let Some(existing) = existing {
            existing.closed().await;
        }
        match dial_once(&shared, target, &address).await {
            Ok(connection) => {
                let started = Instant::now();
                run_connection(shared.clone(), peer, connection.clone()).await;
                let replaced = matches!(
                    connection.close_reason(),
                    Some(quinn::ConnectionError::ApplicationClosed(ref c))
                        if c.error_code == CloseCode::Replaced.into()
                );
                if replaced {
                    // Someone else presents our identity to this peer.
                    tracing::warn!(%peer, "our connection was replaced by another with our identity");
                    backoff = max;
                } else if started.elapsed() >= max {
                    backoff = min;
                }
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "dial failed");
                shared.stats.dial_failed();
            }
        }
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(max);
    }
}

async fn dial_once(
    shared: &Shared,
    target: ReplicaId,
    address: &str,
) -> Result<quinn::Connection, QuicError> {
    let bad = |reason: String| QuicError::BadAddress {
        replica: target,
        address: address.to_owned(),
        reason,
    };
    let addr = tokio::net::lookup_host(address)
        .await
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to nothing".to_owned()))?;
    let connecting = shared
        .endpoint
        .connect_with(shared.dial_config.clone(), addr, SERVER_NAME)
        .map_err(|e| QuicError::QuicConfig(e.to_string()))?;
    let connection = tokio::time::timeout(shared.limits.handshake_timeout, connecting)
        .await
        .map_err(|_| QuicError::QuicConfig("handshake timed out".to_owned()))?
        .map_err(|e| QuicError::QuicConfig(e.to_string()))?;
    let peer = peer_principal(&connection, &shared.keyring)?;
    if peer != Principal::Replica(target) {
        shared.stats.refuse(Refuse::WrongPeer);
        connection.close(CloseCode::Refused.into(), b"not the replica dialed");
        return Err(QuicError::IdentityMismatch {
            expected: Principal::Replica(target),
            got: peer.to_string(),
        });
    }
    Ok(connection)
}

/// Up to +25 % jitter so that peers restarted together do not redial in step.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let spread = d / 4;
    let extra = spread.mul_f64(f64::from(nanos % 1000) / 1000.0);
    d + extra
}

/// Tasks of an endpoint, aborted and the endpoint closed when the last
/// handle goes.
pub(crate) struct Owner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tasks: Mutex<Vec<AbortHandle>>,
}

impl Owner {
    pub(crate) fn close(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        self.shared
            .endpoint
            .close(CloseCode::Shutdown.into(), b"shutdown");
    }

    pub(crate) async fn shutdown(&self) {
        self.close();
        let idle = self.shared.endpoint.wait_idle();
        let _ = tokio::time::timeout(Duration::from_secs(2), idle).await;
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.close();
    }
}
