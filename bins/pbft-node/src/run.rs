//! `pbft-node run`: the replica daemon. It wires `pbft-core` to the QUIC
//! mesh, the RocksDB store, the clock and the metrics, and obeys persist
//! before send: the core releases a promising message only after the
//! persist it depends on was acknowledged, and the node acknowledges a
//! persist only once the store synced it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use pbft_core::{
    DurableState, Input, KvApp, Output, Params, PersistId, Replica, RequestAuth, Time, Timer,
};
use pbft_crypto::{Principal, Signer, TlsIdentity};
use pbft_quic::{Lane, Mesh, MeshConfig};
use pbft_storage::{Durability as StoreDurability, RocksConfig, RocksStore, Store, WriteBatch};
use pbft_types::{ClientId, Message, Reply, RequestNo};
use tokio::sync::mpsc;

use crate::config::{Durability, NodeConfig, RequestAuthSetting};
use crate::error::NodeError;
use crate::recovery::{durable_state, summary, to_ops};

/// Requests whose arrival time is kept for the commit-latency histogram.
const LATENCY_TRACKED_REQUESTS_MAX: usize = 65_536;
/// An arrival older than this at a stable checkpoint is forgotten.
const ARRIVAL_KEPT_MAX: Duration = Duration::from_secs(60);
/// Persist jobs queued for the storage thread; the core's pipeline bounds
/// them well below this.
const PERSIST_QUEUE_MAX: usize = 4_096;
/// Persist jobs written and synced together at most.
const PERSIST_GROUP_JOBS_MAX: usize = 1_024;
/// Inputs stepped in one turn of the loop before the outputs are flushed.
const INPUT_BURST_MAX: usize = 256;
/// Replies to one client sent as one message at most (requests executed in
/// one turn of the loop share a message: a frame, an encoding and a
/// hand-off at both ends instead of one per request).
const REPLIES_PER_MESSAGE_MAX: usize = 256;
/// Result bytes in one such message at most (a larger result goes alone).
const REPLIES_BYTES_MAX: usize = 256 * 1024;

fn params(config: &NodeConfig) -> Params {
    let p = &config.protocol;
    Params {
        checkpoint_interval_seqs: p.checkpoint_interval_seqs,
        log_window_seqs: p.log_window_seqs,
        pipeline_batches_max: p.pipeline_batches_max as u64,
        batch_requests_max: p.batch_requests_max,
        batch_delay_us_max: p.batch_delay_us_max,
        view_change_timeout_us: p.view_change_timeout_ms.saturating_mul(1_000),
        request_auth: match p.request_auth {
            RequestAuthSetting::Signatures => RequestAuth::ClientSignatures,
            RequestAuthSetting::Macs => RequestAuth::Macs,
        },
        ..Params::default()
    }
}

/// The storage thread: takes every persist job waiting, writes them as one
/// atomic batch, makes it durable (a synced write, or one `fsync` of the
/// log with group commit), and only then acknowledges them all: one sync
/// for all the protocol steps that queued meanwhile (BENCH.md: one sync per
/// batch per replica). A failed write or sync stops the replica (the store
/// poisons itself).
fn storage_thread(
    store: Arc<RocksStore>,
    jobs: std::sync::mpsc::Receiver<(PersistId, WriteBatch)>,
    done: mpsc::Sender<Result<Vec<PersistId>, String>>,
) {
    while let Ok((first_id, mut batch)) = jobs.recv() {
        let mut ids = vec![first_id];
        while ids.len() < PERSIST_GROUP_JOBS_MAX {
            let Ok((id, more)) = jobs.try_recv() else {
                break;
            };
            ids.push(id);
            batch.append(more);
        }
        let started = Instant::now();
        let mut result = store.write(&batch);
        histogram!("pbft_store_write_seconds").record(started.elapsed().as_secs_f64());
        histogram!("pbft_store_group_jobs").record(ids.len() as f64);
        if result.is_ok() {
            let sync_started = Instant::now();
            result = store.sync();
            histogram!("pbft_store_sync_seconds").record(sync_started.elapsed().as_secs_f64());
        }
        let message = match result {
            Ok(()) => Ok(ids),
            Err(e) => Err(format!("store failure, stopping: {e}")),
        };
        let failed = message.is_err();
        if done.blocking_send(message).is_err() || failed {
            return;
        }
    }
}

/// Runs the replica until SIGTERM or SIGINT.
pub async fn run(config: NodeConfig) -> Result<(), NodeError> {
    if let Some(addr) = config.metrics_listen {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| NodeError::Other(format!("metrics endpoint {addr}: {e}")))?;
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    }
    let durability = match config.storage.durability {
        Durability::SyncEveryWrite => StoreDurability::SyncEveryWrite,
        Durability::GroupCommit => StoreDurability::GroupCommit,
        Durability::NoSyncBenchmarksOnly => StoreDurability::NoSyncBenchmarksOnly,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::Write {
        path: config.data_dir.clone(),
        source,
    })?;
    let store = RocksStore::open(
        &config.data_dir,
        RocksConfig {
            durability,
            ..RocksConfig::default()
        },
    )
    .map_err(|e| {
        NodeError::Other(format!(
            "opening the store in {}: {e}",
            config.data_dir.display()
        ))
    })?;
    if let pbft_storage::OpenReport::TornTailDropped { detail } = store.open_report() {
        // FAULTS.md 20: a write cut short by a crash (never acknowledged
        // with sync on every write) or a damaged tail; what follows it was
        // dropped and the peers supply what this replica lacks.
        tracing::warn!(%detail, "the store's write-ahead log ended in a torn record; dropped it");
    }
    let recovered = store
        .recover()
        .map_err(|e| NodeError::Other(format!("reading the store: {e}")))?;
    // Restart recovery (issue 5): resume from what the store made durable,
    // so that this replica never votes a second digest where it already
    // voted (FAULTS.md 10, amnesia).
    let durable = durable_state(&recovered).map_err(|e| {
        NodeError::Other(format!(
            "recovering from the store in {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let restarted = durable != DurableState::default();
    if restarted {
        tracing::info!(data_dir = %config.data_dir.display(), "recovered from the store: {}", summary(&durable));
    }
    let store = Arc::new(store);

    let me = config.id;
    let identity = TlsIdentity::generate(&config.key, &format!("replica-{me}"))?;
    let mut mesh_config = MeshConfig::new(config.cluster.clone(), me, identity);
    mesh_config.socket = Some(
        std::net::UdpSocket::bind(config.listen)
            .map_err(|e| NodeError::Other(format!("binding {}: {e}", config.listen)))?,
    );
    let (mesh, mut receiver) = Mesh::start(mesh_config)
        .map_err(|e| NodeError::Other(format!("starting the mesh: {e}")))?;
    let signer = Signer::new(config.key.clone(), config.cluster.cluster_id, me);
    // Scripted misbehaviour exists only in a `byzantine` build; a default
    // build refuses to run when asked for it.
    #[cfg(feature = "byzantine")]
    let mut byzantine =
        crate::byzantine::Byzantine::from_env(signer.clone(), config.cluster.clone())?;
    #[cfg(not(feature = "byzantine"))]
    if std::env::var_os("PBFT_BYZANTINE").is_some() {
        return Err(NodeError::Other(
            "PBFT_BYZANTINE is set, but this pbft-node was built without the `byzantine` \
             feature: refusing to run as an honest replica in a Byzantine test"
                .into(),
        ));
    }
    let mut replica = if restarted {
        Replica::restore(
            config.cluster.clone(),
            params(&config),
            signer,
            KvApp::default(),
            durable,
        )
        .map_err(|e| NodeError::Other(format!("restoring from the store: {e}")))?
    } else {
        Replica::new(
            config.cluster.clone(),
            params(&config),
            signer,
            KvApp::default(),
        )
        .map_err(|e| NodeError::Other(format!("protocol parameters: {e}")))?
    };
    tracing::info!(replica = %me, n = config.cluster.n(), f = config.cluster.f(), listen = %config.listen, "replica started");

    let (job_tx, job_rx) = std::sync::mpsc::sync_channel(PERSIST_QUEUE_MAX);
    let (done_tx, mut done_rx) = mpsc::channel(PERSIST_QUEUE_MAX);
    let storage = {
        let store = store.clone();
        std::thread::Builder::new()
            .name("pbft-storage".into())
            .spawn(move || storage_thread(store, job_rx, done_tx))
            .map_err(|e| NodeError::Other(format!("starting the storage thread: {e}")))?
    };

    let origin = Instant::now();
    let now = || Time(u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX));
    let mut timers: BTreeMap<Timer, Time> = BTreeMap::new();
    if restarted {
        // At once: re-send the durable votes and ask for what was missed.
        timers.insert(Timer::Retransmit, Time(0));
    }
    let mut arrivals: HashMap<(ClientId, RequestNo), Instant> = HashMap::new();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| NodeError::Other(format!("installing the SIGTERM handler: {e}")))?;
    let mut outputs: Vec<Output> = Vec::new();
    let mut inputs: Vec<Input> = Vec::new();
    let mut replies: BTreeMap<ClientId, Vec<Reply>> = BTreeMap::new();
    let result = loop {
        let next_timer = timers
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(t, at)| (*t, *at));
        let sleep_for = next_timer.map_or(Duration::from_secs(3600), |(_, at)| {
            Duration::from_micros(at.0.saturating_sub(now().0))
        });
        tokio::select! {
            biased;
            _ = sigterm.recv() => break Ok(()),
            _ = tokio::signal::ctrl_c() => break Ok(()),
            done = done_rx.recv() => match done {
                Some(Ok(ids)) => inputs.extend(ids.into_iter().map(Input::PersistDone)),
                Some(Err(e)) => break Err(NodeError::Other(e)),
                None => break Err(NodeError::Other("the storage thread stopped".into())),
            },
            received = receiver.recv() => match received {
                None => break Err(NodeError::Other("the mesh stopped".into())),
                Some(r) => inputs.extend(received_input(r, &mut arrivals)),
            },
            () = tokio::time::sleep(sleep_for), if next_timer.is_some() => {
                if let Some((timer, _)) = next_timer {
                    timers.remove(&timer);
                    inputs.push(Input::TimerFired(timer));
                }
            }
        }
        // Whatever else is already waiting is stepped before the outputs
        // go out: one wake-up of the writers and of the storage thread for
        // a burst of messages instead of one per message (BENCH.md: thread
        // hand-offs cost more than most protocol logic).
        let mut fatal_early = None;
        while inputs.len() < INPUT_BURST_MAX {
            match done_rx.try_recv() {
                Ok(Ok(ids)) => inputs.extend(ids.into_iter().map(Input::PersistDone)),
                Ok(Err(e)) => {
                    fatal_early = Some(e);
                    break;
                }
                Err(_) => match receiver.try_recv() {
                    Some(r) => inputs.extend(received_input(r, &mut arrivals)),
                    None => break,
                },
            }
        }
        if let Some(e) = fatal_early {
            break Err(NodeError::Other(e));
        }
        for input in inputs.drain(..) {
            #[cfg(feature = "byzantine")]
            let seen = byzantine.as_mut().is_none_or(|b| b.incoming(now(), &input));
            #[cfg(not(feature = "byzantine"))]
            let seen = true;
            if seen {
                outputs.extend(replica.step(now(), input));
            }
        }
        #[cfg(feature = "byzantine")]
        if let Some(b) = byzantine.as_mut() {
            b.rewrite(now(), &mut outputs);
        }
        let mut fatal = None;
        for output in outputs.drain(..) {
            match output {
                Output::Send { to, message } => {
                    if matches!(message, Message::Request(_)) {
                        // PBFT 4.1: a backup relays a request to the primary.
                        counter!("pbft_requests_relayed_total").increment(1);
                    }
                    let lane = lane_of(&message);
                    let _ = mesh.send(Principal::Replica(to), lane, message);
                }
                Output::Broadcast(message) => {
                    let lane = lane_of(&message);
                    let _ = mesh.broadcast(lane, message);
                }
                Output::Reply { client, reply } => {
                    replies.entry(client).or_default().push(reply);
                }
                Output::Persist { id, records } => match to_ops(records) {
                    Ok(batch) => {
                        if job_tx.send((id, batch)).is_err() {
                            fatal = Some("the storage thread stopped".to_owned());
                        }
                    }
                    Err(e) => fatal = Some(e),
                },
                Output::SetTimer { timer, at } => {
                    timers.insert(timer, at);
                }
                Output::CancelTimer(timer) => {
                    timers.remove(&timer);
                }
                Output::Executed { seq, requests, .. } => {
                    counter!("pbft_requests_committed_total").increment(requests.len() as u64);
                    histogram!("pbft_batch_requests").record(requests.len() as f64);
                    gauge!("pbft_last_executed_seq").set(seq.0 as f64);
                    for key in requests {
                        if let Some(at) = arrivals.remove(&key) {
                            histogram!("pbft_commit_latency_seconds")
                                .record(at.elapsed().as_secs_f64());
                        }
                    }
                }
                Output::CheckpointStable { seq, state_digest } => {
                    // Requests never executed here (rejected, or executed
                    // before they arrived) leave their arrival behind.
                    arrivals.retain(|_, at| at.elapsed() < ARRIVAL_KEPT_MAX);
                    gauge!("pbft_stable_checkpoint_seq").set(seq.0 as f64);
                    tracing::debug!(%seq, %state_digest, "checkpoint stable");
                }
                Output::ViewChangeStarted { view } => {
                    counter!("pbft_view_changes_started_total").increment(1);
                    tracing::warn!(%view, "view change: left the view, sending VIEW-CHANGE");
                }
                Output::ViewChanged { view, primary } => {
                    counter!("pbft_view_changes_total").increment(1);
                    gauge!("pbft_view").set(view.0 as f64);
                    gauge!("pbft_primary").set(f64::from(primary.0));
                    tracing::warn!(%view, %primary, "view change: entered the new view");
                }
                Output::Rejected { from, reason } => {
                    counter!("pbft_messages_rejected_total", "reason" => reason.label())
                        .increment(1);
                    tracing::debug!(?from, %reason, "rejected");
                }
            }
        }
        send_replies(&mesh, &mut replies);
        if let Some(e) = fatal {
            break Err(NodeError::Other(e));
        }
        gauge!("pbft_view").set(replica.view().0 as f64);
        // From the replica itself, not only from `Executed` and
        // `CheckpointStable` outputs: a state transfer moves both without
        // executing batches one by one.
        gauge!("pbft_last_executed_seq").set(replica.last_executed().0 as f64);
        gauge!("pbft_stable_checkpoint_seq").set(replica.low_watermark().0 as f64);
        gauge!("pbft_primary").set(f64::from(config.cluster.primary(replica.view()).0));
        gauge!("pbft_peers_connected").set(mesh.connected_peers().len() as f64);
    };
    tracing::info!(replica = %me, "shutting down");
    drop(job_tx);
    let _ = tokio::task::spawn_blocking(move || storage.join()).await;
    mesh.shutdown().await;
    result
}

/// Sends each client its replies of this turn, several per message
/// (bounded by [`REPLIES_PER_MESSAGE_MAX`] and [`REPLIES_BYTES_MAX`]).
fn send_replies(mesh: &Mesh, replies: &mut BTreeMap<ClientId, Vec<Reply>>) {
    for (client, list) in std::mem::take(replies) {
        let mut group: Vec<Reply> = Vec::new();
        let mut bytes = 0;
        let flush = |group: &mut Vec<Reply>| {
            let message = match group.len() {
                0 => return,
                1 => Message::Reply(group.remove(0)),
                _ => Message::Replies(std::mem::take(group)),
            };
            // A full queue drops the message (counted by the mesh); the
            // client retransmits and gets the cached reply.
            let _ = mesh.send(Principal::Client(client), Lane::Consensus, message);
        };
        for reply in list {
            if group.len() >= REPLIES_PER_MESSAGE_MAX
                || bytes + reply.result.len() > REPLIES_BYTES_MAX
            {
                flush(&mut group);
                bytes = 0;
            }
            bytes += reply.result.len();
            group.push(reply);
        }
        flush(&mut group);
    }
}

/// The core's input for a message from the mesh: replicas send protocol
/// messages, clients only requests (anything else is counted and dropped).
fn received_input(
    r: pbft_quic::Received,
    arrivals: &mut HashMap<(ClientId, RequestNo), Instant>,
) -> Option<Input> {
    match (r.from, r.message) {
        (Principal::Replica(from), message) => Some(Input::Message { from, message }),
        (Principal::Client(from), Message::Request(request)) => {
            if arrivals.len() < LATENCY_TRACKED_REQUESTS_MAX {
                arrivals
                    .entry((from, request.value.request_no))
                    .or_insert_with(Instant::now);
            }
            Some(Input::ClientRequest { from, request })
        }
        (Principal::Client(_), other) => {
            counter!("pbft_messages_rejected_total", "reason" => "client_sent_non_request")
                .increment(1);
            tracing::debug!(
                kind = other.kind_name(),
                "client sent a non-request message; dropped"
            );
            None
        }
    }
}

/// Bulk traffic (state transfer) travels apart from consensus messages.
fn lane_of(message: &Message) -> Lane {
    match message {
        Message::Fetch(_) | Message::FetchResponse(_) => Lane::Bulk,
        _ => Lane::Consensus,
    }
}
