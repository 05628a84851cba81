//! The operator commands, run as a real process.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn node(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pbft-node"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn keygen_writes_an_identity_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("id");
    let o = node(&[
        "keygen",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "replica-9",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("public key: "));
    let mode = std::fs::metadata(out.join("identity.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(std::fs::read_to_string(out.join("identity.crt"))
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    // Running it again must not replace the identity.
    let again = node(&["keygen", "--out", out.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(text(&again).contains("already exists"), "{}", text(&again));
}

#[test]
fn testnet_then_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("net");
    let o = node(&[
        "testnet",
        "--replicas",
        "7",
        "--clients",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("7 replicas (f = 2, quorum 5)"),
        "{}",
        text(&o)
    );
    let cfg = out.join("replica-3/node.toml");
    let o = node(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("replica 3 of 7 (f = 2, quorum 5)"),
        "{}",
        text(&o)
    );
    let client = out.join("client-1/client.toml");
    let o = node(&["check-config", "--client", client.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    // A secret key readable by others stops the node with a clear message.
    let key = out.join("replica-3/identity.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = node(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("chmod 600"), "{}", text(&o));
}
