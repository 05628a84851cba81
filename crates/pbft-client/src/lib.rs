//! The client library of the `pbft` toolkit.
//!
//! A [`Client`] authenticates each request (an ed25519 signature by
//! default, or with [`Authentication::Macs`] an authenticator of one MAC per
//! replica, TOCS 3.2), sends it to the primary over its authenticated QUIC
//! connections, and returns the result
//! once `f + 1` distinct replicas sent matching replies (PBFT 4.1: at least
//! one of them is correct, so the result is the one the correct replicas
//! computed). If no quorum answers within the retransmission timeout, it
//! sends the request to every replica (PBFT 4.1: a backup relays it to the
//! primary and starts its view-change timer), doubling the timeout each
//! time, until the request timeout.
//!
//! Exactly once: request numbers increase per client, starting from the
//! wall clock in microseconds so that a restarted client never reuses one;
//! a retransmission carries the same number, and replicas answer it from
//! their reply table instead of executing it again.
//!
//! By default a client has one request outstanding at a time (a second
//! [`Client::submit`] waits for the first). With
//! [`ClientConfig::requests_in_flight_max`] above 1, that many calls may be
//! outstanding at once: they get request numbers in the order they are
//! sent, over one ordered stream, so the primary batches them, and every
//! replica executes them, in that order. A request overtaken by a later one
//! of the same client (possible only when a view change reorders them) is
//! stale for the replicas and times out: the outcome is then unknown, as
//! for any timeout.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use pbft_client::{Client, ClientConfig};
//! use pbft_crypto::SecretKey;
//! use pbft_types::ClientId;
//!
//! // The cluster file and the identity made by `pbft-node testnet`.
//! # let cluster: pbft_types::ClusterConfig = unimplemented!();
//! let key = SecretKey::read_pem_file("client-0/identity.key".as_ref())?;
//! let client = Client::connect(ClientConfig::new(cluster, ClientId(1), key)).await?;
//! let result = client.submit(b"any operation the service understands".to_vec()).await?;
//! println!("{} bytes of result", result.len());
//! client.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! The tests in `tests/quorum.rs` run real clients against replicas that
//! answer, lie or stay silent, over QUIC on loopback.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pbft_crypto::{
    CryptoError, Keyring, Principal, RequestAuthenticator, SecretKey, Signer, TlsIdentity,
};
use pbft_quic::{ClientEndpoint, ClientEndpointConfig, Lane, QuicError, Receiver};
use pbft_types::{ClientId, ClusterConfig, Message, ReplicaId, Request, RequestNo, View};
use tokio::sync::{oneshot, Mutex, Semaphore};
use tokio::time::Instant;

/// How to build a [`Client`].
#[derive(Debug)]
pub struct ClientConfig {
    /// The cluster.
    pub cluster: ClusterConfig,
    /// This client's id in the cluster.
    pub id: ClientId,
    /// This client's identity key (configured for `id`).
    pub key: SecretKey,
    /// Send to every replica when no quorum answered within this; doubles
    /// on each retransmission up to `retransmit_timeout_ms_max`.
    pub retransmit_timeout_ms: u64,
    /// Upper bound of the retransmission timeout.
    pub retransmit_timeout_ms_max: u64,
    /// Give up on a request after this long.
    pub request_timeout_ms: u64,
    /// Largest operation accepted (replicas refuse larger ones).
    pub op_bytes_max: usize,
    /// Local address to bind.
    pub bind: SocketAddr,
    /// The first request number; default: the wall clock in microseconds.
    pub first_request_no: Option<RequestNo>,
    /// Send each request to every replica at once, not only to the primary.
    /// A backup that received a request from its client needs not check
    /// its signature when the primary proposes it (the authenticated
    /// channel vouches for it), so this moves three quarters of the
    /// cluster's signature checks (n = 4) off the replicas, for three more
    /// messages per request. Off by default.
    pub send_to_all_replicas: bool,
    /// Requests outstanding at once (concurrent [`Client::submit`] calls);
    /// 1 (the default) to [`REQUESTS_IN_FLIGHT_MAX`]. Replicas hold at most
    /// `client_pending_requests_max` (64 by default) of one client's
    /// requests.
    pub requests_in_flight_max: usize,
    /// How requests are authenticated; the cluster must accept it (its
    /// replicas' `request_auth`).
    pub authentication: Authentication,
}

/// How a client authenticates its requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Authentication {
    /// An ed25519 signature per request (~15 µs here): every replica can
    /// check it, however the request reached it. Accepted by every cluster.
    #[default]
    Signature,
    /// An authenticator of one MAC per replica (TOCS 3.2; about a
    /// microsecond for n = 4), under keys derived from the client's and each
    /// replica's identity keys. Needs replicas with `request_auth = "macs"`.
    Macs,
}

/// The largest [`ClientConfig::requests_in_flight_max`] accepted.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 64;

impl ClientConfig {
    /// Defaults: retransmit after 500 ms (up to 4 s), give up after 10 s,
    /// operations up to 64 KiB.
    #[must_use]
    pub fn new(cluster: ClusterConfig, id: ClientId, key: SecretKey) -> Self {
        Self {
            cluster,
            id,
            key,
            retransmit_timeout_ms: 500,
            retransmit_timeout_ms_max: 4_000,
            request_timeout_ms: 10_000,
            op_bytes_max: 64 * 1024,
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            first_request_no: None,
            send_to_all_replicas: false,
            requests_in_flight_max: 1,
            authentication: Authentication::Signature,
        }
    }
}

/// Why a request did not produce a result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No `f + 1` matching replies arrived in time. The request may still
    /// execute (the outcome is unknown).
    #[error("request {request_no} timed out after {waited_ms} ms ({replies} replies, {needed} matching needed)")]
    Timeout {
        /// The request.
        request_no: RequestNo,
        /// How long the client waited.
        waited_ms: u64,
        /// Replies received.
        replies: usize,
        /// Matching replies needed.
        needed: usize,
    },
    /// Every replica answered, and no result has `f + 1` matching replies:
    /// more than `f` replicas are faulty, or the service is not
    /// deterministic.
    #[error("request {request_no}: {replies} replies but no {needed} of them match")]
    NoMatchingQuorum {
        /// The request.
        request_no: RequestNo,
        /// Replies received.
        replies: usize,
        /// Matching replies needed.
        needed: usize,
    },
    /// The request was refused before it was sent.
    #[error("request rejected: {reason}")]
    Rejected {
        /// Why.
        reason: String,
    },
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] QuicError),
    /// Signing failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The endpoint closed.
    #[error("the client endpoint is closed")]
    Closed,
}

/// What the submitting calls and the reply router share.
#[derive(Debug)]
struct State {
    next_request_no: RequestNo,
    /// The highest view seen in accepted replies: its primary gets requests first.
    view: View,
    /// The outstanding requests, each with its replies so far and where
    /// the outcome goes; at most `requests_in_flight_max` entries.
    waiting: HashMap<RequestNo, Pending>,
}

/// One outstanding request, as the reply router sees it: the router counts
/// the replies (PBFT 4.1: `f + 1` matching from distinct replicas) and
/// wakes the call once, with the outcome, instead of once per reply.
#[derive(Debug)]
struct Pending {
    votes: Votes,
    needed: usize,
    replicas: usize,
    outcome: Option<oneshot::Sender<Outcome>>,
}

/// How replies settled a request.
#[derive(Debug)]
enum Outcome {
    /// `needed` replicas agree on the result; the highest view among them.
    Agreed(Vec<u8>, View),
    /// Every replica answered and no result has `needed` of them.
    NoQuorum(usize),
}

fn lock(state: &StdMutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Removes an outstanding request's entry however its call ends (result,
/// error or cancellation).
struct Waiting<'a> {
    state: &'a StdMutex<State>,
    request_no: RequestNo,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(self.state).waiting.remove(&self.request_no);
    }
}

/// A connected client. See the crate documentation.
pub struct Client {
    endpoint: ClientEndpoint,
    authenticator: RequestAuthenticator,
    authentication: Authentication,
    cluster: ClusterConfig,
    config_timeouts: (u64, u64, u64),
    op_bytes_max: usize,
    send_to_all_replicas: bool,
    state: Arc<StdMutex<State>>,
    /// Held while a request gets its number and is queued, so that numbers
    /// go out in order.
    send_order: Mutex<()>,
    in_flight: Semaphore,
    router: Router,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.authenticator.id())
            .finish_non_exhaustive()
    }
}

/// The votes of the replicas for one request.
#[derive(Debug, Default)]
struct Votes {
    by_replica: BTreeMap<ReplicaId, (View, Vec<u8>)>,
}

impl Votes {
    /// Records a replica's reply (its latest one counts) and returns the
    /// result and highest view once `needed` replicas agree on it.
    fn add(
        &mut self,
        replica: ReplicaId,
        view: View,
        result: Vec<u8>,
        needed: usize,
    ) -> Option<(Vec<u8>, View)> {
        // Only the result just recorded can have reached `needed` now (its
        // replica's earlier answer is replaced, which can only lower the
        // others' counts), so that one alone is counted: no tally to
        // allocate per reply.
        self.by_replica.insert(replica, (view, result));
        let latest = &self.by_replica.get(&replica)?.1;
        let (count, view) = self
            .by_replica
            .values()
            .filter(|(_, r)| r == latest)
            .fold((0, View(0)), |(n, hi), (v, _)| (n + 1, hi.max(*v)));
        (count >= needed).then(|| (latest.clone(), view))
    }

    fn len(&self) -> usize {
        self.by_replica.len()
    }
}

impl Client {
    /// Starts the client's connections to every replica. Must be called in a
    /// Tokio runtime.
    ///
    /// # Errors
    /// [`ClientError::Config`] or [`ClientError::Transport`].
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        if config.retransmit_timeout_ms == 0 || config.request_timeout_ms == 0 {
            return Err(ClientError::Config("timeouts must be positive".into()));
        }
        if !(1..=REQUESTS_IN_FLIGHT_MAX).contains(&config.requests_in_flight_max) {
            return Err(ClientError::Config(format!(
                "requests_in_flight_max must be between 1 and {REQUESTS_IN_FLIGHT_MAX}"
            )));
        }
        let keyring = Keyring::new(&config.cluster)?;
        let authenticator = RequestAuthenticator::new(
            Signer::new(config.key.clone(), config.cluster.cluster_id, config.id),
            &keyring,
        )?;
        let identity = TlsIdentity::generate(&config.key, &format!("client-{}", config.id))?;
        let mut endpoint_config =
            ClientEndpointConfig::new(config.cluster.clone(), config.id, identity);
        endpoint_config.bind = config.bind;
        let (endpoint, receiver) = ClientEndpoint::start(endpoint_config)?;
        let first = config.first_request_no.unwrap_or_else(|| {
            RequestNo(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2)),
            )
        });
        let state = Arc::new(StdMutex::new(State {
            next_request_no: first,
            view: View(0),
            waiting: HashMap::new(),
        }));
        let router = Router(tokio::spawn(route_replies(
            receiver,
            config.id,
            state.clone(),
        )));
        Ok(Self {
            authenticator,
            authentication: config.authentication,
            cluster: config.cluster,
            config_timeouts: (
                config.retransmit_timeout_ms,
                config
                    .retransmit_timeout_ms_max
                    .max(config.retransmit_timeout_ms),
                config.request_timeout_ms,
            ),
            op_bytes_max: config.op_bytes_max,
            send_to_all_replicas: config.send_to_all_replicas,
            endpoint,
            state,
            send_order: Mutex::new(()),
            in_flight: Semaphore::new(config.requests_in_flight_max),
            router,
        })
    }

    /// This client's id.
    #[must_use]
    pub fn id(&self) -> ClientId {
        self.authenticator.id()
    }

    /// The replicas this client is connected to now.
    #[must_use]
    pub fn connected_replicas(&self) -> usize {
        self.endpoint.connected_peers().len()
    }

    /// Waits until at least `count` replicas are connected, or `timeout`.
    /// Returns whether they are.
    pub async fn wait_connected(&self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.connected_replicas() < count {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Submits an operation to be ordered and executed, and returns the
    /// result that `f + 1` replicas agree on.
    ///
    /// # Errors
    /// [`ClientError::Timeout`], [`ClientError::NoMatchingQuorum`],
    /// [`ClientError::Rejected`] (operation too large), [`ClientError::Closed`],
    /// [`ClientError::Transport`].
    pub async fn submit(&self, op: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        if op.len() > self.op_bytes_max {
            return Err(ClientError::Rejected {
                reason: format!(
                    "operation of {} bytes exceeds {} bytes",
                    op.len(),
                    self.op_bytes_max
                ),
            });
        }
        let Ok(_permit) = self.in_flight.acquire().await else {
            return Err(ClientError::Closed);
        };
        let (tx, mut outcome) = oneshot::channel();
        let needed = self.cluster.reply_quorum();
        let (waiting, message) = {
            let _order = self.send_order.lock().await;
            let (request_no, view) = {
                let mut state = lock(&self.state);
                let request_no = state.next_request_no;
                state.next_request_no = request_no.next();
                state.waiting.insert(
                    request_no,
                    Pending {
                        votes: Votes::default(),
                        needed,
                        replicas: self.cluster.n(),
                        outcome: Some(tx),
                    },
                );
                (request_no, state.view)
            };
            let waiting = Waiting {
                state: &self.state,
                request_no,
            };
            let request = Request {
                request_no,
                read_only: false,
                op,
            };
            let signed = match self.authentication {
                Authentication::Signature => self.authenticator.sign(request)?,
                Authentication::Macs => self.authenticator.mac(request)?,
            };
            let message = Message::Request(signed);
            let primary = self.cluster.primary(view);
            self.endpoint
                .send_wait(primary, Lane::Consensus, message.clone())
                .await?;
            if self.send_to_all_replicas {
                for replica in self.cluster.replica_ids().filter(|r| *r != primary) {
                    // Best effort: a backup that misses it checks the signature.
                    let _ = self
                        .endpoint
                        .send(replica, Lane::Consensus, message.clone());
                }
            }
            (waiting, message)
        };
        let request_no = waiting.request_no;
        let (retransmit_ms, retransmit_ms_max, request_ms) = self.config_timeouts;
        let started = Instant::now();
        let deadline = started + Duration::from_millis(request_ms);
        let mut retransmit_after = Duration::from_millis(retransmit_ms);
        let mut next_retransmit = started + retransmit_after;
        loop {
            let wake = next_retransmit.min(deadline);
            let settled = tokio::select! {
                o = &mut outcome => o,
                () = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if now >= deadline {
                        let replies = lock(&self.state)
                            .waiting
                            .get(&request_no)
                            .map_or(0, |p| p.votes.len());
                        return Err(ClientError::Timeout {
                            request_no,
                            waited_ms: u64::try_from(now.duration_since(started).as_millis()).unwrap_or(u64::MAX),
                            replies,
                            needed,
                        });
                    }
                    // PBFT 4.1: no quorum in time; send to every replica.
                    tracing::debug!(%request_no, "retransmitting to all replicas");
                    self.endpoint.broadcast(Lane::Consensus, message.clone())?;
                    retransmit_after = (retransmit_after * 2).min(Duration::from_millis(retransmit_ms_max));
                    next_retransmit = now + retransmit_after;
                    continue;
                }
            };
            return match settled {
                Ok(Outcome::Agreed(result, view)) => {
                    let mut state = lock(&self.state);
                    state.view = state.view.max(view);
                    Ok(result)
                }
                Ok(Outcome::NoQuorum(replies)) => Err(ClientError::NoMatchingQuorum {
                    request_no,
                    replies,
                    needed,
                }),
                Err(_) => Err(ClientError::Closed),
            };
        }
    }

    /// Closes the connections.
    pub async fn shutdown(self) {
        drop(self.router);
        self.endpoint.shutdown().await;
    }
}

/// The reply router's task, stopped with its client.
struct Router(tokio::task::JoinHandle<()>);

impl Drop for Router {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Hands each reply to the call waiting for it. A reply counts for the
/// replica whose channel carried it, and only for one of this client's
/// outstanding requests; anything else is dropped.
async fn route_replies(mut receiver: Receiver, me: ClientId, state: Arc<StdMutex<State>>) {
    while let Some(received) = receiver.recv().await {
        let Principal::Replica(from) = received.from else {
            continue;
        };
        for reply in received.message.into_replies() {
            if reply.replica != from || reply.client != me {
                continue;
            }
            let mut state = lock(&state);
            // Replies after the outcome (or for a call gone) change nothing.
            let Some(pending) = state
                .waiting
                .get_mut(&reply.request_no)
                .filter(|p| p.outcome.is_some())
            else {
                continue;
            };
            let outcome =
                match pending
                    .votes
                    .add(reply.replica, reply.view, reply.result, pending.needed)
                {
                    Some((result, view)) => Outcome::Agreed(result, view),
                    None if pending.votes.len() == pending.replicas => {
                        Outcome::NoQuorum(pending.votes.len())
                    }
                    None => continue,
                };
            if let Some(tx) = pending.outcome.take() {
                let _ = tx.send(outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn votes_need_f_plus_one_matching_from_distinct_replicas() {
        let mut v = Votes::default();
        assert_eq!(v.add(ReplicaId(0), View(0), b"a".to_vec(), 2), None);
        // The same replica again does not make two votes.
        assert_eq!(v.add(ReplicaId(0), View(0), b"a".to_vec(), 2), None);
        assert_eq!(v.add(ReplicaId(1), View(0), b"b".to_vec(), 2), None);
        assert_eq!(
            v.add(ReplicaId(2), View(3), b"a".to_vec(), 2),
            Some((b"a".to_vec(), View(3)))
        );
    }

    #[test]
    fn a_replica_that_changes_its_answer_counts_once() {
        let mut v = Votes::default();
        assert_eq!(v.add(ReplicaId(0), View(0), b"a".to_vec(), 2), None);
        assert_eq!(v.add(ReplicaId(0), View(0), b"b".to_vec(), 2), None);
        assert_eq!(v.add(ReplicaId(1), View(0), b"a".to_vec(), 2), None);
        assert_eq!(v.len(), 2);
    }
}
