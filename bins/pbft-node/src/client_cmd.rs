//! `pbft-node client`: key-value operations and a small closed-loop load
//! generator, through `pbft-client`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pbft_client::{Client, ClientConfig};
use pbft_core::KvOp;

use crate::config::ClientSettings;
use crate::error::NodeError;

/// What the client command does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Read a key (ordered through the protocol).
    Get {
        /// The key.
        key: String,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Closed-loop load: `ops` puts of `value_bytes` bytes.
    Load {
        /// Number of puts.
        ops: u64,
        /// Bytes per value.
        value_bytes: usize,
    },
}

async fn connect(settings: &ClientSettings) -> Result<Client, NodeError> {
    let mut config = ClientConfig::new(settings.cluster.clone(), settings.id, settings.key.clone());
    config.request_timeout_ms = settings.request_timeout_ms;
    config.retransmit_timeout_ms = settings.retransmit_timeout_ms;
    config.send_to_all_replicas = settings.send_to_all_replicas;
    config.authentication = match settings.authentication {
        crate::config::ClientAuthSetting::Signature => pbft_client::Authentication::Signature,
        crate::config::ClientAuthSetting::Macs => pbft_client::Authentication::Macs,
    };
    let client = Client::connect(config)
        .await
        .map_err(|e| NodeError::Other(e.to_string()))?;
    let needed = settings.cluster.quorum();
    if !client
        .wait_connected(needed, Duration::from_millis(settings.request_timeout_ms))
        .await
    {
        tracing::warn!(
            connected = client.connected_replicas(),
            needed,
            "fewer replicas connected than a quorum"
        );
    }
    Ok(client)
}

/// Runs one action and prints its result.
pub async fn run(settings: ClientSettings, action: Action) -> Result<(), NodeError> {
    let client = Arc::new(connect(&settings).await?);
    let submit = |op: KvOp| {
        let client = client.clone();
        async move {
            client
                .submit(op.encode())
                .await
                .map_err(|e| NodeError::Other(e.to_string()))
        }
    };
    match action {
        Action::Put { key, value } => {
            let r = submit(KvOp::Put {
                key: key.into_bytes(),
                value: value.into_bytes(),
            })
            .await?;
            println!("{}", String::from_utf8_lossy(&r));
        }
        Action::Get { key } => {
            let r = submit(KvOp::Get {
                key: key.into_bytes(),
            })
            .await?;
            match r.split_first() {
                Some((1, value)) => println!("{}", String::from_utf8_lossy(value)),
                Some((0, _)) => println!("(absent)"),
                _ => println!("unexpected result {r:?}"),
            }
        }
        Action::Delete { key } => {
            let r = submit(KvOp::Delete {
                key: key.into_bytes(),
            })
            .await?;
            println!("{}", if r == [1] { "deleted" } else { "(absent)" });
        }
        Action::Load { ops, value_bytes } => {
            let started = Instant::now();
            let mut latencies_us = Vec::with_capacity(usize::try_from(ops).unwrap_or(0));
            for i in 0..ops {
                let t = Instant::now();
                submit(KvOp::Put {
                    key: format!("load-{}-{i}", settings.id).into_bytes(),
                    value: vec![b'x'; value_bytes],
                })
                .await?;
                latencies_us.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
            latencies_us.sort_unstable();
            let pct = |p: usize| {
                latencies_us
                    .get((latencies_us.len() * p / 100).min(latencies_us.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(0)
            };
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{ops} puts in {secs:.2} s: {:.0} ops/s, latency p50 {:.2} ms, p99 {:.2} ms",
                ops as f64 / secs.max(1e-9),
                pct(50) as f64 / 1000.0,
                pct(99) as f64 / 1000.0
            );
        }
    }
    if let Ok(client) = Arc::try_unwrap(client) {
        client.shutdown().await;
    }
    Ok(())
}
