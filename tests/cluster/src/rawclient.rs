//! Clients that do what `pbft-client` never does: never read their
//! replies (FAULTS.md 25), or send one signed request again (23).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pbft_client::ClientConfig;
use pbft_crypto::{Principal, Signer, TlsIdentity};
use pbft_quic::{ClientEndpoint, ClientEndpointConfig, Lane, Receiver};
use pbft_types::{ClientId, ClusterConfig, Message, ReplicaId, Request, RequestNo};
use tokio::task::JoinHandle;

use crate::{err, Result};

/// A client on the bare QUIC endpoint.
pub struct RawClient {
    endpoint: ClientEndpoint,
    receiver: Receiver,
    signer: Signer<ClientId>,
    cluster: ClusterConfig,
    next: u64,
}

impl std::fmt::Debug for RawClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawClient")
            .field("id", &self.signer.id())
            .finish_non_exhaustive()
    }
}

impl RawClient {
    /// Connects with a client configuration (identity, cluster, bind).
    ///
    /// # Errors
    /// When the endpoint cannot start.
    pub fn start(config: ClientConfig) -> Result<Self> {
        let identity = TlsIdentity::generate(&config.key, &format!("raw-client-{}", config.id))
            .map_err(|e| err(e.to_string()))?;
        let mut ec = ClientEndpointConfig::new(config.cluster.clone(), config.id, identity);
        ec.bind = config.bind;
        let (endpoint, receiver) = ClientEndpoint::start(ec).map_err(|e| err(e.to_string()))?;
        let next = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(1));
        Ok(Self {
            endpoint,
            receiver,
            signer: Signer::new(config.key, config.cluster.cluster_id, config.id),
            cluster: config.cluster,
            next,
        })
    }

    /// Waits until `count` replicas are connected, or `timeout`.
    pub async fn wait_connected(&self, count: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.endpoint.connected_peers().len() < count {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Signs `op` under the next request number.
    ///
    /// # Errors
    /// When signing fails.
    pub fn sign(&mut self, op: Vec<u8>) -> Result<(RequestNo, Message)> {
        let request_no = RequestNo(self.next);
        self.next += 1;
        let signed = self
            .signer
            .sign_request(Request {
                request_no,
                read_only: false,
                op,
            })
            .map_err(|e| err(e.to_string()))?;
        Ok((request_no, Message::Request(signed)))
    }

    /// Signs `op` under a request number of the caller's choice (a
    /// misbehaving client reuses one).
    ///
    /// # Errors
    /// When signing fails.
    pub fn sign_as(&self, request_no: RequestNo, op: Vec<u8>) -> Result<Message> {
        let signed = self
            .signer
            .sign_request(Request {
                request_no,
                read_only: false,
                op,
            })
            .map_err(|e| err(e.to_string()))?;
        Ok(Message::Request(signed))
    }

    /// Sends a message to one replica.
    pub fn send(&self, to: ReplicaId, message: &Message) -> bool {
        self.endpoint
            .send(to, Lane::Consensus, message.clone())
            .is_ok()
    }

    /// Sends a message to every replica.
    pub fn broadcast(&self, message: &Message) -> usize {
        self.endpoint
            .broadcast(Lane::Consensus, message.clone())
            .unwrap_or(0)
    }

    /// Waits for `f + 1` matching replies to `request_no` (re-broadcasting
    /// `message` every 500 ms); the agreed result, or `None` at `timeout`.
    pub async fn await_result(
        &mut self,
        request_no: RequestNo,
        message: &Message,
        timeout: Duration,
    ) -> Option<Vec<u8>> {
        let needed = self.cluster.reply_quorum();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut votes: BTreeMap<ReplicaId, Vec<u8>> = BTreeMap::new();
        let mut resend = tokio::time::Instant::now() + Duration::from_millis(500);
        loop {
            let wake = resend.min(deadline);
            tokio::select! {
                r = self.receiver.recv() => {
                    let r = r?;
                    let Principal::Replica(from) = r.from else { continue };
                    for reply in r.message.into_replies() {
                        if reply.replica == from && reply.request_no == request_no {
                            votes.insert(from, reply.result);
                            let mut tally: BTreeMap<&[u8], usize> = BTreeMap::new();
                            for v in votes.values() {
                                *tally.entry(v.as_slice()).or_insert(0) += 1;
                            }
                            if let Some((result, _)) = tally.into_iter().find(|(_, c)| *c >= needed) {
                                return Some(result.to_vec());
                            }
                        }
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= deadline {
                        return None;
                    }
                    self.broadcast(message);
                    resend = tokio::time::Instant::now() + Duration::from_millis(500);
                }
            }
        }
    }

    /// Closes the endpoint.
    pub async fn shutdown(self) {
        self.endpoint.shutdown().await;
    }
}

/// A client that sends requests and never reads a reply (FAULTS.md 25).
#[derive(Debug)]
pub struct SlowClient {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    task: Option<JoinHandle<()>>,
}

impl SlowClient {
    /// Starts sending a put every `every` to all replicas.
    ///
    /// # Errors
    /// When the endpoint cannot start.
    pub fn start(config: ClientConfig, every: Duration) -> Result<Self> {
        let mut raw = RawClient::start(config)?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let task = {
            let stop = stop.clone();
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let op = pbft_core::KvOp::Put {
                        key: format!("slow/{}", n % 64).into_bytes(),
                        value: vec![b's'; 512],
                    }
                    .encode();
                    n += 1;
                    if let Ok((_, message)) = raw.sign(op) {
                        raw.broadcast(&message);
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(every).await;
                }
                // The receiver was never read; it goes with the endpoint.
                raw.shutdown().await;
            })
        };
        Ok(Self {
            stop,
            sent,
            task: Some(task),
        })
    }

    /// Requests sent.
    #[must_use]
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops it.
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}
