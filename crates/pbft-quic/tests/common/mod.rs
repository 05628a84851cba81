//! Loopback clusters for the integration tests.
#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pbft_crypto::{Keyring, SecretKey, TlsIdentity};
use pbft_quic::tls::{client_config, Alpn};
use pbft_quic::{
    ClientEndpoint, ClientEndpointConfig, Limits, Mesh, MeshConfig, Received, Receiver,
};
use pbft_types::{
    ClientEntry, ClientId, ClusterConfig, ClusterId, Fetch, Message, ReplicaEntry, ReplicaId,
    Request, SeqNo, Signature,
};

pub const WAIT: Duration = Duration::from_secs(60);

pub struct TestCluster {
    pub replica_keys: Vec<SecretKey>,
    pub client_keys: Vec<SecretKey>,
    pub config: ClusterConfig,
    pub addrs: Vec<SocketAddr>,
    sockets: Vec<Option<UdpSocket>>,
    pub limits: Limits,
}

/// Fast reconnects and short timers for tests; generous timeouts so a
/// loaded machine does not cause spurious failures.
pub fn test_limits() -> Limits {
    Limits {
        reconnect_backoff_min: Duration::from_millis(20),
        reconnect_backoff_max: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(10),
        keep_alive_interval: Duration::from_secs(1),
        ..Limits::default()
    }
}

impl TestCluster {
    pub fn new(n: usize, clients: usize, seed: u8) -> Self {
        let replica_keys: Vec<SecretKey> = (0..n)
            .map(|i| SecretKey::from_seed([seed, 1, i as u8, 0].repeat(8).try_into().unwrap()))
            .collect();
        let client_keys: Vec<SecretKey> = (0..clients)
            .map(|i| SecretKey::from_seed([seed, 2, i as u8, 0].repeat(8).try_into().unwrap()))
            .collect();
        let sockets: Vec<UdpSocket> = (0..n)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
        let config = ClusterConfig {
            cluster_id: ClusterId(u64::from(seed)),
            replicas: (0..n)
                .map(|i| ReplicaEntry {
                    id: ReplicaId(i as u32),
                    public_key: replica_keys[i].public_key(),
                    address: addrs[i].to_string(),
                })
                .collect(),
            clients: (0..clients)
                .map(|i| ClientEntry {
                    id: ClientId(i as u64 + 1),
                    public_key: client_keys[i].public_key(),
                })
                .collect(),
        }
        .validated()
        .unwrap();
        Self {
            replica_keys,
            client_keys,
            config,
            addrs,
            sockets: sockets.into_iter().map(Some).collect(),
            limits: test_limits(),
        }
    }

    pub fn replica_identity(&self, i: usize) -> TlsIdentity {
        TlsIdentity::generate(&self.replica_keys[i], &format!("replica-{i}")).unwrap()
    }

    pub fn client_identity(&self, c: usize) -> TlsIdentity {
        TlsIdentity::generate(&self.client_keys[c], &format!("client-{c}")).unwrap()
    }

    pub fn keyring(&self) -> Arc<Keyring> {
        Arc::new(Keyring::new(&self.config).unwrap())
    }

    /// Starts replica `i` on its address (rebinding it after a restart).
    pub fn start_replica(&mut self, i: usize) -> (Mesh, Receiver) {
        let socket = match self.sockets[i].take() {
            Some(s) => s,
            None => rebind(self.addrs[i]),
        };
        let mut config = MeshConfig::new(
            self.config.clone(),
            ReplicaId(i as u32),
            self.replica_identity(i),
        );
        config.limits = self.limits.clone();
        config.socket = Some(socket);
        Mesh::start(config).unwrap()
    }

    pub fn start_all(&mut self) -> (Vec<Mesh>, Vec<Receiver>) {
        (0..self.addrs.len()).map(|i| self.start_replica(i)).unzip()
    }

    /// Starts client `c` (id `c + 1`).
    pub fn start_client(&self, c: usize) -> (ClientEndpoint, Receiver) {
        let mut config = ClientEndpointConfig::new(
            self.config.clone(),
            ClientId(c as u64 + 1),
            self.client_identity(c),
        );
        config.limits = self.limits.clone();
        config.bind = "127.0.0.1:0".parse().unwrap();
        ClientEndpoint::start(config).unwrap()
    }
}

/// Binds `addr` again once the previous socket on it is gone.
pub fn rebind(addr: SocketAddr) -> UdpSocket {
    let deadline = Instant::now() + WAIT;
    loop {
        match UdpSocket::bind(addr) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("rebinding {addr}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot rebind {addr}: {e}"),
        }
    }
}

/// Polls `cond` until it holds.
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn recv(rx: &mut Receiver) -> Received {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("timed out receiving")
        .expect("receiver closed")
}

/// A small message tagged with `n`.
pub fn msg(n: u64) -> Message {
    Message::Fetch(Fetch::Batch { seq: SeqNo(n) })
}

/// A request of about `op_bytes` bytes.
pub fn request(client: u64, n: u64, op_bytes: usize) -> Message {
    Message::Request(pbft_types::ClientRequest {
        value: Request {
            request_no: pbft_types::RequestNo(n),
            read_only: false,
            op: vec![7; op_bytes],
        },
        signer: ClientId(client),
        auth: pbft_types::Authenticator::Signature(Signature([0; 64])),
    })
}

/// A raw quinn connection with any identity and ALPN, for misbehaving peers.
pub struct Raw {
    pub endpoint: quinn::Endpoint,
    pub connection: Result<quinn::Connection, quinn::ConnectionError>,
}

pub async fn raw_connect(
    keyring: Arc<Keyring>,
    identity: &TlsIdentity,
    alpn: Alpn,
    to: SocketAddr,
) -> Raw {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint
        .set_default_client_config(client_config(keyring, identity, alpn, &test_limits()).unwrap());
    let connecting = endpoint.connect(to, pbft_quic::tls::SERVER_NAME).unwrap();
    let connection = tokio::time::timeout(WAIT, connecting)
        .await
        .expect("handshake timed out");
    Raw {
        endpoint,
        connection,
    }
}

/// Waits until the raw connection is closed by the other side; returns why.
pub async fn closed(raw: &Raw) -> Option<quinn::ConnectionError> {
    match &raw.connection {
        Ok(c) => Some(
            tokio::time::timeout(WAIT, c.closed())
                .await
                .expect("connection was not closed"),
        ),
        Err(_) => None,
    }
}

pub fn app_close_code(e: &quinn::ConnectionError) -> Option<u64> {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner()),
        _ => None,
    }
}
