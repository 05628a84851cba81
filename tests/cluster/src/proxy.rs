//! The fault proxy: a userspace UDP relay in front of every replica.
//!
//! Each replica binds its QUIC endpoint to a private port (`listen` in its
//! node file) while the cluster file advertises the proxy's public port for
//! it. The proxy for replica `j` forwards every datagram that reaches its
//! public port to `j`'s private port, NAT-style: one upstream socket per
//! downstream source address (and copy of `j`), so that `j`'s answers go
//! back to the right sender. Every node sends from the one socket it binds
//! to its `listen` address, so the proxy knows which replica (or which
//! registered client) a datagram comes from by its source address.
//!
//! [`Rules`] say, per directed link between [`Peer`]s, whether to drop
//! everything (partitions, one-way links), a share of datagrams (loss), to
//! duplicate, or to delay them (with jitter, which also reorders); and per
//! (source, replica) which copy of the replica gets the traffic, for Twins
//! (two processes with one identity, each seeing part of the cluster). The
//! harness changes the rules while the cluster runs. QUIC carries on over
//! the relay and recovers from loss on its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::rng::Rng;
use crate::{err, Result};

/// One end of a link, for [`LinkRule`]s: a replica (every copy of it), or
/// any client (any source the proxy does not know as a replica).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// Replica `i`.
    Replica(u32),
    /// Any client.
    Client,
}

/// Who sent a datagram, as the proxy knows it from the source address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Copy `copy` of replica `id` (copy 0 is the replica; 1 is its twin).
    Replica {
        /// The replica id.
        id: u32,
        /// Which process of that identity.
        copy: u8,
    },
    /// A registered client (by the harness's numbering).
    Client(u64),
    /// An address nobody registered: treated as a client.
    Unknown,
}

impl Source {
    /// The link end this source belongs to.
    #[must_use]
    pub fn peer(self) -> Peer {
        match self {
            Self::Replica { id, .. } => Peer::Replica(id),
            Self::Client(_) | Self::Unknown => Peer::Client,
        }
    }
}

/// What happens to datagrams on one directed link.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkRule {
    /// Drop every datagram (a partition in this direction).
    pub drop: bool,
    /// Probability of dropping one datagram.
    pub loss: f64,
    /// Probability of sending a datagram twice.
    pub duplicate: f64,
    /// Fixed delay.
    pub delay_ms: u64,
    /// Extra random delay in `0..=jitter_ms` (reorders datagrams).
    pub jitter_ms: u64,
}

impl LinkRule {
    /// Drops everything.
    #[must_use]
    pub fn cut() -> Self {
        Self {
            drop: true,
            ..Self::default()
        }
    }

    /// Whether this rule changes nothing.
    #[must_use]
    pub fn is_clear(&self) -> bool {
        *self == Self::default()
    }
}

/// The proxy's rules: per directed link and per route.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    links: HashMap<(Peer, Peer), LinkRule>,
    routes: HashMap<(Source, u32), Option<u8>>,
}

impl Rules {
    /// Sets the rule for datagrams from `from` to `to`.
    pub fn set_link(&mut self, from: Peer, to: Peer, rule: LinkRule) {
        if rule.is_clear() {
            self.links.remove(&(from, to));
        } else {
            self.links.insert((from, to), rule);
        }
    }

    /// The rule for datagrams from `from` to `to` (clear when none was set).
    #[must_use]
    pub fn link(&self, from: Peer, to: Peer) -> LinkRule {
        self.links.get(&(from, to)).copied().unwrap_or_default()
    }

    /// Sends traffic from `from` to replica `to` to copy `copy` of it, or
    /// nowhere (`None`).
    pub fn set_route(&mut self, from: Source, to: u32, copy: Option<u8>) {
        self.routes.insert((from, to), copy);
    }

    /// Which copy of replica `to` gets traffic from `from` (copy 0 unless
    /// set otherwise).
    #[must_use]
    pub fn route(&self, from: Source, to: u32) -> Option<u8> {
        self.routes.get(&(from, to)).copied().unwrap_or(Some(0))
    }

    /// Removes every link rule (routes stay).
    pub fn heal_links(&mut self) {
        self.links.clear();
    }

    /// Removes every rule and route.
    pub fn clear(&mut self) {
        self.links.clear();
        self.routes.clear();
    }

    /// Number of link rules in force.
    #[must_use]
    pub fn link_rules(&self) -> usize {
        self.links.len()
    }
}

/// Counters of the whole proxy.
#[derive(Debug, Default)]
struct Stats {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
}

/// A snapshot of the proxy's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Datagrams forwarded (each copy of a duplicate counts).
    pub forwarded: u64,
    /// Datagrams dropped by a rule, a route or a full table.
    pub dropped: u64,
    /// Datagrams sent twice.
    pub duplicated: u64,
}

/// Most upstream sockets the proxy keeps (one per source address and copy).
const UPSTREAMS_MAX: usize = 4_096;
/// Largest datagram relayed.
const DATAGRAM_BYTES_MAX: usize = 65_536;

type UpstreamKey = (u32, SocketAddr, u8);

struct Shared {
    rules: Mutex<Rules>,
    sources: Mutex<HashMap<SocketAddr, Source>>,
    targets: Mutex<HashMap<u32, Vec<SocketAddr>>>,
    upstreams: Mutex<HashMap<UpstreamKey, Arc<UdpSocket>>>,
    rng: Mutex<Rng>,
    stats: Stats,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running proxy. Dropping it stops it.
pub struct FaultProxy {
    shared: Arc<Shared>,
    public: Vec<SocketAddr>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts relaying: `public[j]` (already bound) forwards to
    /// `targets[j]`, replica `j`'s private address. Must run in a Tokio
    /// runtime.
    ///
    /// # Errors
    /// When a socket cannot be handed to Tokio, or the lists differ in length.
    pub fn start(
        public: Vec<std::net::UdpSocket>,
        targets: Vec<SocketAddr>,
        seed: u64,
    ) -> Result<Self> {
        if public.len() != targets.len() {
            return Err(err("the proxy needs one public socket per replica"));
        }
        let shared = Arc::new(Shared {
            rules: Mutex::new(Rules::default()),
            sources: Mutex::new(HashMap::new()),
            targets: Mutex::new(HashMap::new()),
            upstreams: Mutex::new(HashMap::new()),
            rng: Mutex::new(Rng::new(seed)),
            stats: Stats::default(),
            tasks: Mutex::new(Vec::new()),
        });
        let mut addrs = Vec::new();
        for (j, (socket, target)) in public.into_iter().zip(targets).enumerate() {
            let j = u32::try_from(j).map_err(|_| err("too many replicas"))?;
            addrs.push(socket.local_addr()?);
            socket.set_nonblocking(true)?;
            let socket = Arc::new(UdpSocket::from_std(socket)?);
            lock(&shared.targets).insert(j, vec![target]);
            lock(&shared.sources).insert(target, Source::Replica { id: j, copy: 0 });
            let task = tokio::spawn(downstream(shared.clone(), j, socket));
            lock(&shared.tasks).push(task);
        }
        Ok(Self {
            shared,
            public: addrs,
        })
    }

    /// The public addresses, by replica.
    #[must_use]
    pub fn public_addrs(&self) -> &[SocketAddr] {
        &self.public
    }

    /// Tells the proxy that datagrams from `addr` come from `source`.
    pub fn register(&self, addr: SocketAddr, source: Source) {
        lock(&self.shared.sources).insert(addr, source);
    }

    /// Adds a copy of replica `j` listening at `addr` (registered as its
    /// source too); returns the copy number.
    ///
    /// # Errors
    /// When `j` is not a replica of the proxy.
    pub fn add_copy(&self, j: u32, addr: SocketAddr) -> Result<u8> {
        let copy = {
            let mut targets = lock(&self.shared.targets);
            let copies = targets
                .get_mut(&j)
                .ok_or_else(|| err(format!("no replica {j} behind the proxy")))?;
            copies.push(addr);
            u8::try_from(copies.len() - 1).map_err(|_| err("too many copies"))?
        };
        self.register(addr, Source::Replica { id: j, copy });
        Ok(copy)
    }

    /// Changes the rules.
    pub fn update(&self, f: impl FnOnce(&mut Rules)) {
        f(&mut lock(&self.shared.rules));
    }

    /// A copy of the rules in force.
    #[must_use]
    pub fn rules(&self) -> Rules {
        lock(&self.shared.rules).clone()
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared.stats;
        ProxyStats {
            forwarded: s.forwarded.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            duplicated: s.duplicated.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        for task in lock(&self.shared.tasks).drain(..) {
            task.abort();
        }
        lock(&self.shared.upstreams).clear();
    }
}

impl Shared {
    fn source_of(&self, addr: SocketAddr) -> Source {
        lock(&self.sources)
            .get(&addr)
            .copied()
            .unwrap_or(Source::Unknown)
    }

    fn dropped(&self) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends `data` from `socket` to `to` as `rule` says.
    async fn deliver(&self, rule: LinkRule, socket: &Arc<UdpSocket>, to: SocketAddr, data: &[u8]) {
        let (lost, copies, delays) = {
            let mut rng = lock(&self.rng);
            let lost = rule.drop || rng.chance(rule.loss);
            let copies = if rng.chance(rule.duplicate) { 2 } else { 1 };
            let delays: Vec<u64> = (0..copies)
                .map(|_| rule.delay_ms + rng.below(rule.jitter_ms + 1))
                .collect();
            (lost, copies, delays)
        };
        if lost {
            self.dropped();
            return;
        }
        if copies > 1 {
            self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
        }
        for delay in delays {
            self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            if delay == 0 {
                // An error loses the datagram, as a network would.
                let _ = socket.send_to(data, to).await;
            } else {
                let socket = socket.clone();
                let data = data.to_vec();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    let _ = socket.send_to(&data, to).await;
                });
            }
        }
    }

    /// The upstream socket for datagrams from `src` to copy `copy` of
    /// replica `j`; made (with its return path) on first use.
    async fn upstream(
        self: &Arc<Self>,
        j: u32,
        src: SocketAddr,
        copy: u8,
        public: &Arc<UdpSocket>,
    ) -> Option<Arc<UdpSocket>> {
        let key = (j, src, copy);
        if let Some(up) = lock(&self.upstreams).get(&key) {
            return Some(up.clone());
        }
        if lock(&self.upstreams).len() >= UPSTREAMS_MAX {
            return None;
        }
        let up = Arc::new(UdpSocket::bind("127.0.0.1:0").await.ok()?);
        lock(&self.upstreams).insert(key, up.clone());
        let task = tokio::spawn(upstream_loop(
            self.clone(),
            j,
            copy,
            up.clone(),
            public.clone(),
            src,
        ));
        lock(&self.tasks).push(task);
        Some(up)
    }
}

/// Datagrams to replica `j`'s public port, from anyone.
async fn downstream(shared: Arc<Shared>, j: u32, public: Arc<UdpSocket>) {
    let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
    loop {
        let Ok((len, src)) = public.recv_from(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let source = shared.source_of(src);
        let (copy, rule) = {
            let rules = lock(&shared.rules);
            (
                rules.route(source, j),
                rules.link(source.peer(), Peer::Replica(j)),
            )
        };
        let Some(copy) = copy else {
            shared.dropped();
            continue;
        };
        let target = lock(&shared.targets)
            .get(&j)
            .and_then(|copies| copies.get(usize::from(copy)).copied());
        let Some(target) = target else {
            shared.dropped();
            continue;
        };
        let Some(up) = shared.upstream(j, src, copy, &public).await else {
            shared.dropped();
            continue;
        };
        shared.deliver(rule, &up, target, &buf[..len]).await;
    }
}

/// Datagrams from copy `copy` of replica `j` back to `src`.
async fn upstream_loop(
    shared: Arc<Shared>,
    j: u32,
    copy: u8,
    up: Arc<UdpSocket>,
    public: Arc<UdpSocket>,
    src: SocketAddr,
) {
    let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
    let source = shared.source_of(src);
    loop {
        let Ok((len, _from)) = up.recv_from(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let (route, rule) = {
            let rules = lock(&shared.rules);
            (
                rules.route(source, j),
                rules.link(Peer::Replica(j), source.peer()),
            )
        };
        if route != Some(copy) {
            // The route moved away from this copy: its answers are cut too.
            shared.dropped();
            continue;
        }
        shared.deliver(rule, &public, src, &buf[..len]).await;
    }
}

/// Sends `count` garbage datagrams to `to`: random bytes of random sizes,
/// some shaped like QUIC long-header (Initial) packets, some short-header.
///
/// # Errors
/// When no socket can be bound.
pub async fn garbage_burst(to: SocketAddr, count: usize, rng: &mut Rng) -> Result<usize> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let mut sent = 0;
    for i in 0..count {
        let len = match i % 3 {
            0 => 1 + rng.below(40) as usize,
            1 => 1200 + rng.below(200) as usize,
            _ => 1 + rng.below(1500) as usize,
        };
        let mut data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if let Some(first) = data.first_mut() {
            *first = match i % 3 {
                // Long header, Initial, QUIC v1.
                1 => 0xC3,
                // Short header.
                0 => 0x40 | (*first & 0x3F),
                _ => *first,
            };
        }
        if i % 3 == 1 && data.len() > 5 {
            data[1..5].copy_from_slice(&1u32.to_be_bytes());
        }
        if socket.send_to(&data, to).await.is_ok() {
            sent += 1;
        }
        if i % 64 == 63 {
            tokio::task::yield_now().await;
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A UDP echo server standing in for a replica.
    async fn echo_server() -> (SocketAddr, Arc<AtomicU64>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let count = received.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                count.fetch_add(1, Ordering::Relaxed);
                let _ = socket.send_to(&buf[..len], from).await;
            }
        });
        (addr, received)
    }

    async fn recv(socket: &UdpSocket, ms: u64) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        match tokio::time::timeout(Duration::from_millis(ms), socket.recv_from(&mut buf)).await {
            Ok(Ok((len, _))) => Some(buf[..len].to_vec()),
            _ => None,
        }
    }

    async fn setup() -> (FaultProxy, UdpSocket, Arc<AtomicU64>) {
        let (server, received) = echo_server().await;
        let public = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let proxy = FaultProxy::start(vec![public], vec![server], 1).unwrap();
        // The sender plays replica 1.
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        proxy.register(
            sender.local_addr().unwrap(),
            Source::Replica { id: 1, copy: 0 },
        );
        sender.connect(proxy.public_addrs()[0]).await.unwrap();
        (proxy, sender, received)
    }

    #[tokio::test]
    async fn forwards_both_ways_and_drops_as_told() {
        let (proxy, sender, received) = setup().await;
        sender.send(b"hello").await.unwrap();
        assert_eq!(recv(&sender, 2000).await.as_deref(), Some(&b"hello"[..]));
        assert_eq!(received.load(Ordering::Relaxed), 1);

        // A partition: nothing reaches the replica.
        proxy.update(|r| r.set_link(Peer::Replica(1), Peer::Replica(0), LinkRule::cut()));
        sender.send(b"cut").await.unwrap();
        assert_eq!(recv(&sender, 300).await, None);
        assert_eq!(received.load(Ordering::Relaxed), 1);

        // One-way: the replica receives, its answers are dropped.
        proxy.update(|r| {
            r.heal_links();
            r.set_link(Peer::Replica(0), Peer::Replica(1), LinkRule::cut());
        });
        sender.send(b"one-way").await.unwrap();
        assert_eq!(recv(&sender, 300).await, None);
        assert_eq!(received.load(Ordering::Relaxed), 2);

        // Healed.
        proxy.update(Rules::heal_links);
        sender.send(b"again").await.unwrap();
        assert_eq!(recv(&sender, 2000).await.as_deref(), Some(&b"again"[..]));
        let stats = proxy.stats();
        assert_eq!(stats.dropped, 2, "{stats:?}");
        // Other sources (clients) were never cut.
        assert_eq!(
            proxy.rules().link(Peer::Client, Peer::Replica(0)),
            LinkRule::default()
        );
    }

    #[tokio::test]
    async fn loss_delay_and_duplication() {
        let (proxy, sender, received) = setup().await;
        proxy.update(|r| {
            r.set_link(
                Peer::Replica(1),
                Peer::Replica(0),
                LinkRule {
                    loss: 0.5,
                    ..LinkRule::default()
                },
            );
        });
        for _ in 0..200 {
            sender.send(b"x").await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = received.load(Ordering::Relaxed);
        assert!((50..150).contains(&got), "half of 200 expected, got {got}");
        // Drop the echoes.
        while recv(&sender, 100).await.is_some() {}

        proxy.update(|r| {
            r.heal_links();
            r.set_link(
                Peer::Replica(1),
                Peer::Replica(0),
                LinkRule {
                    delay_ms: 200,
                    duplicate: 1.0,
                    ..LinkRule::default()
                },
            );
        });
        let before = received.load(Ordering::Relaxed);
        let started = std::time::Instant::now();
        sender.send(b"slow").await.unwrap();
        assert_eq!(recv(&sender, 2000).await.as_deref(), Some(&b"slow"[..]));
        assert!(started.elapsed() >= Duration::from_millis(190));
        assert_eq!(recv(&sender, 1000).await.as_deref(), Some(&b"slow"[..]));
        assert_eq!(received.load(Ordering::Relaxed), before + 2);
    }

    #[tokio::test]
    async fn routes_to_a_twin_copy() {
        let (proxy, sender, received) = setup().await;
        let (twin, twin_received) = echo_server().await;
        let copy = proxy.add_copy(0, twin).unwrap();
        assert_eq!(copy, 1);
        proxy.update(|r| r.set_route(Source::Replica { id: 1, copy: 0 }, 0, Some(1)));
        sender.send(b"to the twin").await.unwrap();
        assert_eq!(
            recv(&sender, 2000).await.as_deref(),
            Some(&b"to the twin"[..])
        );
        assert_eq!(twin_received.load(Ordering::Relaxed), 1);
        assert_eq!(received.load(Ordering::Relaxed), 0);
        // No route: dropped.
        proxy.update(|r| r.set_route(Source::Replica { id: 1, copy: 0 }, 0, None));
        sender.send(b"nowhere").await.unwrap();
        assert_eq!(recv(&sender, 300).await, None);
    }

    #[tokio::test]
    async fn garbage_is_sent() {
        let (addr, received) = echo_server().await;
        let mut rng = Rng::new(3);
        assert_eq!(garbage_burst(addr, 30, &mut rng).await.unwrap(), 30);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(received.load(Ordering::Relaxed), 30);
    }
}
