//! The harness against real `pbft-node` processes: a fault scenario passes,
//! and the negative control is caught. Needs the `pbft-node` binary: built
//! by `cargo test --workspace` (or `cargo build -p pbft-node`), found next
//! to this test's directory, or named by `PBFT_NODE_BIN`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use pbft_cluster::cluster::{Protocol, Runtime};
use pbft_cluster::report::Verdict;
use pbft_cluster::runner::{run, RunOptions};
use pbft_cluster::scenario::select;
use pbft_cluster::workload::WorkloadSpec;

fn node_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PBFT_NODE_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/real_cluster-HASH -> target/debug/pbft-node
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("pbft-node"))
        .unwrap();
    assert!(
        bin.exists(),
        "this test needs the pbft-node binary at {} (run `cargo build -p pbft-node` first, \
         or set PBFT_NODE_BIN)",
        bin.display()
    );
    bin
}

fn options(dir: &std::path::Path, seed: u64) -> RunOptions {
    RunOptions {
        node_bin: node_bin(),
        work_dir: dir.to_owned(),
        replicas: 4,
        clients: 4,
        seed,
        duration: Duration::from_secs(2),
        rss_max_mib: 1024,
        progress_max: Duration::from_secs(30),
        keep_logs: false,
        protocol: Protocol::scenarios(),
        workload: WorkloadSpec::default(),
        byzantine_node_bin: None,
        runtime: Runtime::Process,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backup_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = &select(&["kill-backup".into()]).unwrap()[0];
    let report = run(scenario, &options(dir.path(), 11)).await;
    assert_eq!(
        report.verdict,
        Verdict::Pass,
        "{}",
        pbft_cluster::report::table(std::slice::from_ref(&report), 4, 2)
    );
    assert!(report.ok > 50, "{report:?}");
    assert!(report.stable_seq > 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_negative_control_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = &select(&["negative-twins".into()]).unwrap()[0];
    let report = run(scenario, &options(dir.path(), 12)).await;
    assert_eq!(
        report.verdict,
        Verdict::ExpectedViolationCaught,
        "{}",
        pbft_cluster::report::table(std::slice::from_ref(&report), 4, 2)
    );
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.starts_with("linearizability")),
        "{:?}",
        report.violations
    );
}

/// The harness's copy of the node's `[protocol]` defaults (which the bench
/// and the scenarios start from) is what `pbft-node testnet` writes: a
/// change of a node default must change both.
#[test]
fn node_defaults_match_what_pbft_node_testnet_writes() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(node_bin())
        .args(["testnet", "--replicas", "4", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pbft-node testnet: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dir.path().join("replica-0/node.toml")).unwrap();
    let table: toml::Table = text.parse().unwrap();
    let written = table["protocol"].as_table().unwrap();
    let int = |key: &str| {
        u64::try_from(
            written[key]
                .as_integer()
                .unwrap_or_else(|| panic!("{key}: not an integer")),
        )
        .unwrap()
    };
    let ours = Protocol::node_defaults();
    let pairs = [
        ("checkpoint_interval_seqs", ours.checkpoint_interval_seqs),
        ("log_window_seqs", ours.log_window_seqs),
        ("pipeline_batches_max", ours.pipeline_batches_max),
        ("batch_requests_max", ours.batch_requests_max),
        ("batch_delay_us_max", ours.batch_delay_us_max),
        ("view_change_timeout_ms", ours.view_change_timeout_ms),
    ];
    for (key, expected) in pairs {
        assert_eq!(int(key), expected, "[protocol] {key}");
    }
    assert_eq!(
        written["request_auth"].as_str(),
        Some(if ours.macs { "macs" } else { "signatures" }),
        "[protocol] request_auth"
    );
}
