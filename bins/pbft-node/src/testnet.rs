//! `pbft-node keygen` and `pbft-node testnet`: identities and a whole
//! loopback cluster, ready to run.

use std::fs;
use std::path::{Path, PathBuf};

use pbft_crypto::{write_public_key_file, SecretKey, TlsIdentity};
use pbft_types::{ClientEntry, ClientId, ClusterConfig, ClusterId, ReplicaEntry, ReplicaId};

use crate::config::{
    ClientAuthSetting, ClientFile, ClusterFile, NodeFile, ProtocolSection, RequestAuthSetting,
    RuntimeSection, StorageSection,
};
use crate::error::NodeError;

/// The file names inside one identity's directory.
pub const KEY_FILE: &str = "identity.key";
/// The public key, PEM.
pub const PUBLIC_KEY_FILE: &str = "identity.pub";
/// The TLS certificate, PEM (regenerated from the key at start; written for
/// operators and other tools).
pub const CERT_FILE: &str = "identity.crt";

/// Writes a new identity (secret key with mode 0600, public key, TLS
/// certificate) into `dir`, creating it. Refuses to overwrite a key.
pub fn keygen(dir: &Path, name: &str) -> Result<SecretKey, NodeError> {
    fs::create_dir_all(dir).map_err(|source| NodeError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let key = SecretKey::generate();
    key.write_pem_file(&dir.join(KEY_FILE))?;
    write_public_key_file(&dir.join(PUBLIC_KEY_FILE), &key.public_key())?;
    let tls = TlsIdentity::generate(&key, name)?;
    write(&dir.join(CERT_FILE), &tls.cert_pem)?;
    Ok(key)
}

/// What `testnet` should make.
#[derive(Clone, Debug)]
pub struct TestnetSpec {
    /// Replicas.
    pub replicas: usize,
    /// Client identities.
    pub clients: usize,
    /// Output directory.
    pub out: PathBuf,
    /// Host the replicas listen on.
    pub host: String,
    /// Replica `i` listens on `base_port + i`.
    pub base_port: u16,
    /// Replica `i` serves metrics on `metrics_base_port + i`; none if 0.
    pub metrics_base_port: u16,
    /// The cluster id.
    pub cluster_id: u64,
    /// For containers: replica `i`'s address in the cluster file is this
    /// template with `{i}` replaced by `i` (e.g. `replica-{i}`), every replica
    /// uses the same port `base_port`, listens on `0.0.0.0:base_port` and
    /// serves metrics on `0.0.0.0:metrics_base_port`. `host` is then unused.
    pub host_template: Option<String>,
    /// `data_dir` written into every `node.toml` (relative to it, or absolute).
    pub data_dir: PathBuf,
    /// `request_auth` of every replica; with `macs`, clients use MACs too.
    pub request_auth: RequestAuthSetting,
}

/// The placeholder for the replica index in [`TestnetSpec::host_template`].
pub const HOST_TEMPLATE_INDEX: &str = "{i}";

impl TestnetSpec {
    /// Replica `i`'s address in the cluster file.
    fn address(&self, i: usize) -> String {
        match &self.host_template {
            Some(template) => format!(
                "{}:{}",
                template.replace(HOST_TEMPLATE_INDEX, &i.to_string()),
                self.base_port
            ),
            None => format!("{}:{}", self.host, usize::from(self.base_port) + i),
        }
    }

    /// Every replica's `listen` (none: its address in the cluster file).
    fn listen(&self) -> Option<String> {
        self.host_template
            .as_ref()
            .map(|_| format!("0.0.0.0:{}", self.base_port))
    }

    /// Replica `i`'s `metrics_listen` (none when metrics are off).
    fn metrics_listen(&self, i: usize) -> Option<String> {
        if self.metrics_base_port == 0 {
            return None;
        }
        Some(match self.host_template {
            Some(_) => format!("0.0.0.0:{}", self.metrics_base_port),
            None => format!("{}:{}", self.host, usize::from(self.metrics_base_port) + i),
        })
    }
}

/// Generates a whole cluster: `cluster.toml`, `replica-i/` with `node.toml`
/// and an identity, `client-j/` with `client.toml` and an identity.
pub fn testnet(spec: &TestnetSpec) -> Result<ClusterConfig, NodeError> {
    if spec.replicas == 0 {
        return Err(NodeError::Other("--replicas must be at least 1".into()));
    }
    if spec.out.join("cluster.toml").exists() {
        return Err(NodeError::Other(format!(
            "{} already holds a testnet; choose another --out or remove it",
            spec.out.display()
        )));
    }
    if let Some(template) = &spec.host_template {
        if !template.contains(HOST_TEMPLATE_INDEX) {
            return Err(NodeError::Other(format!(
                "--host-template {template:?} must contain {HOST_TEMPLATE_INDEX} \
                 (replaced by the replica index), e.g. 'replica-{HOST_TEMPLATE_INDEX}'"
            )));
        }
    }
    let last_port = usize::from(spec.base_port) + spec.replicas;
    if last_port > usize::from(u16::MAX) {
        return Err(NodeError::Other(
            "--base-port leaves no room for the replicas".into(),
        ));
    }
    let mut replicas = Vec::new();
    for i in 0..spec.replicas {
        let dir = spec.out.join(format!("replica-{i}"));
        let key = keygen(&dir, &format!("replica-{i}"))?;
        replicas.push(ReplicaEntry {
            id: ReplicaId(
                u32::try_from(i).map_err(|_| NodeError::Other("too many replicas".into()))?,
            ),
            public_key: key.public_key(),
            address: spec.address(i),
        });
    }
    let mut clients = Vec::new();
    for j in 0..spec.clients {
        let dir = spec.out.join(format!("client-{j}"));
        let key = keygen(&dir, &format!("client-{j}"))?;
        clients.push(ClientEntry {
            id: ClientId(j as u64 + 1),
            public_key: key.public_key(),
        });
    }
    let cluster = ClusterConfig {
        cluster_id: ClusterId(spec.cluster_id),
        replicas,
        clients,
    }
    .validated()
    .map_err(|source| NodeError::Cluster {
        path: spec.out.join("cluster.toml"),
        source,
    })?;
    let cluster_text = toml::to_string_pretty(&ClusterFile::from_config(&cluster))
        .map_err(|e| NodeError::Other(e.to_string()))?;
    write(
        &spec.out.join("cluster.toml"),
        &format!(
            "# The cluster: every replica's and client's identity key, and where replicas listen.\n\
             # f = (n - 1) / 3 Byzantine replicas are tolerated; quorums are derived from n.\n{cluster_text}"
        ),
    )?;
    for i in 0..spec.replicas {
        let node = NodeFile {
            id: i as u32,
            cluster_file: "../cluster.toml".into(),
            key_file: KEY_FILE.into(),
            data_dir: spec.data_dir.clone(),
            listen: spec.listen(),
            metrics_listen: spec.metrics_listen(i),
            protocol: ProtocolSection {
                request_auth: spec.request_auth,
                ..ProtocolSection::default()
            },
            storage: StorageSection::default(),
            runtime: RuntimeSection::default(),
        };
        let text = toml::to_string_pretty(&node).map_err(|e| NodeError::Other(e.to_string()))?;
        write(
            &spec.out.join(format!("replica-{i}/node.toml")),
            &format!("{NODE_HEADER}{text}"),
        )?;
    }
    for j in 0..spec.clients {
        let client = ClientFile {
            id: j as u64 + 1,
            cluster_file: "../cluster.toml".into(),
            key_file: KEY_FILE.into(),
            request_timeout_ms: 10_000,
            retransmit_timeout_ms: 500,
            send_to_all_replicas: false,
            authentication: match spec.request_auth {
                RequestAuthSetting::Signatures => ClientAuthSetting::Signature,
                RequestAuthSetting::Macs => ClientAuthSetting::Macs,
            },
        };
        let text = toml::to_string_pretty(&client).map_err(|e| NodeError::Other(e.to_string()))?;
        write(
            &spec.out.join(format!("client-{j}/client.toml")),
            &format!("{CLIENT_HEADER}{text}"),
        )?;
    }
    Ok(cluster)
}

const NODE_HEADER: &str = "\
# pbft-node replica configuration. Paths are relative to this file.
#
# id               this replica's id in the cluster file
# cluster_file     the cluster's identities and addresses
# key_file         ed25519 identity key (mode 0600; the node refuses it otherwise)
# data_dir         the durable log (RocksDB)
# listen           UDP address to bind; default: this replica's address in the cluster file
# metrics_listen   Prometheus endpoint (http://ADDR/metrics); absent = off
#
# [protocol] (defaults shown when written by `pbft-node testnet`)
# checkpoint_interval_seqs  K: a checkpoint every K sequence numbers
# log_window_seqs           L: sequence numbers accepted above the stable checkpoint (multiple of K)
# pipeline_batches_max      batches the primary keeps in flight
# batch_requests_max        requests per batch at most
# batch_delay_us_max        how long the primary waits to fill a batch (not at all when none is in flight)
# view_change_timeout_ms    base view-change timeout (doubles on each successive view change)
# request_auth              signatures (default: clients sign every request) | macs (clients may
#                           send one MAC per replica instead: faster; a Byzantine client can then
#                           stall a batch until a view change)
#
# [storage]
# durability   sync-every-write (default) | group-commit | no-sync-benchmarks-only
#
# [runtime]
# worker_threads   threads for the protocol and the network (1: one thread, the default)
";

const CLIENT_HEADER: &str = "\
# pbft-node client configuration. Paths are relative to this file.
# request_timeout_ms      give up on a request after this long
# retransmit_timeout_ms   resend a request to every replica when no quorum answered in this long
# send_to_all_replicas    send each request to every replica at once (backups skip its signature check)
# authentication          signature (default) | macs (one MAC per replica; needs request_auth = 'macs')
";

fn write(path: &Path, text: &str) -> Result<(), NodeError> {
    fs::write(path, text).map_err(|source| NodeError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientSettings, NodeConfig};

    fn spec(dir: &Path, replicas: usize) -> TestnetSpec {
        TestnetSpec {
            replicas,
            clients: 2,
            out: dir.to_owned(),
            host: "127.0.0.1".into(),
            base_port: 17000,
            metrics_base_port: 19100,
            cluster_id: 42,
            host_template: None,
            data_dir: "data".into(),
            request_auth: RequestAuthSetting::Signatures,
        }
    }

    #[test]
    fn macs_are_written_for_replicas_and_clients() {
        let dir = tempfile::tempdir().unwrap();
        testnet(&TestnetSpec {
            request_auth: RequestAuthSetting::Macs,
            ..spec(dir.path(), 4)
        })
        .unwrap();
        let node = NodeConfig::load(&dir.path().join("replica-0/node.toml")).unwrap();
        assert_eq!(node.protocol.request_auth, RequestAuthSetting::Macs);
        let client = ClientSettings::load(&dir.path().join("client-0/client.toml")).unwrap();
        assert_eq!(client.authentication, ClientAuthSetting::Macs);
        // The default stays signatures on both sides.
        let other = tempfile::tempdir().unwrap();
        testnet(&spec(other.path(), 4)).unwrap();
        let node = NodeConfig::load(&other.path().join("replica-0/node.toml")).unwrap();
        assert_eq!(node.protocol.request_auth, RequestAuthSetting::Signatures);
        let client = ClientSettings::load(&other.path().join("client-0/client.toml")).unwrap();
        assert_eq!(client.authentication, ClientAuthSetting::Signature);
    }

    #[test]
    fn host_template_names_replicas_by_host_on_one_port() {
        let dir = tempfile::tempdir().unwrap();
        let container = TestnetSpec {
            host_template: Some("replica-{i}".into()),
            base_port: 7000,
            metrics_base_port: 9100,
            data_dir: "/data".into(),
            ..spec(dir.path(), 4)
        };
        let cluster = testnet(&container).unwrap();
        let addresses: Vec<_> = cluster.replicas.iter().map(|r| r.address.clone()).collect();
        assert_eq!(
            addresses,
            [
                "replica-0:7000",
                "replica-1:7000",
                "replica-2:7000",
                "replica-3:7000"
            ]
        );
        for i in 0..4 {
            let path = dir.path().join(format!("replica-{i}/node.toml"));
            let text = fs::read_to_string(&path).unwrap();
            assert!(text.contains("listen = \"0.0.0.0:7000\""), "{text}");
            assert!(text.contains("metrics_listen = \"0.0.0.0:9100\""), "{text}");
            let node = NodeConfig::load(&path).unwrap();
            assert_eq!(node.id, ReplicaId(i));
            assert_eq!(node.listen.to_string(), "0.0.0.0:7000");
            assert_eq!(node.metrics_listen.unwrap().to_string(), "0.0.0.0:9100");
            assert_eq!(node.data_dir, Path::new("/data"));
            assert_eq!(node.cluster, cluster);
        }
        // Clients load the same cluster file.
        let client = ClientSettings::load(&dir.path().join("client-0/client.toml")).unwrap();
        assert_eq!(client.cluster, cluster);

        // A template without the index would give every replica one address.
        let other = tempfile::tempdir().unwrap();
        let err = testnet(&TestnetSpec {
            host_template: Some("replica".into()),
            ..spec(other.path(), 4)
        })
        .unwrap_err();
        assert!(err.to_string().contains("{i}"), "{err}");
    }

    #[test]
    fn testnet_configs_load() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = testnet(&spec(dir.path(), 4)).unwrap();
        assert_eq!(cluster.n(), 4);
        for i in 0..4 {
            let node =
                NodeConfig::load(&dir.path().join(format!("replica-{i}/node.toml"))).unwrap();
            assert_eq!(node.id, ReplicaId(i));
            assert_eq!(node.listen.port(), 17000 + i as u16);
            assert_eq!(node.metrics_listen.unwrap().port(), 19100 + i as u16);
            assert_eq!(node.cluster, cluster);
        }
        let client = ClientSettings::load(&dir.path().join("client-1/client.toml")).unwrap();
        assert_eq!(client.id, ClientId(2));
        // A second testnet into the same directory is refused.
        assert!(testnet(&spec(dir.path(), 4)).is_err());
    }

    fn load_err(dir: &Path) -> String {
        NodeConfig::load(&dir.join("replica-0/node.toml"))
            .unwrap_err()
            .to_string()
    }

    fn edit(path: &Path, from: &str, to: &str) {
        let text = fs::read_to_string(path).unwrap();
        assert!(text.contains(from), "{from:?} not in {}", path.display());
        fs::write(path, text.replacen(from, to, 1)).unwrap();
    }

    #[test]
    fn config_errors_are_clear() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        testnet(&spec(dir.path(), 4)).unwrap();
        let node = dir.path().join("replica-0/node.toml");
        let cluster = dir.path().join("cluster.toml");

        // A secret key readable by others.
        let key = dir.path().join("replica-0").join(KEY_FILE);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_err(dir.path()).contains("chmod 600"));
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();

        // A missing key.
        edit(
            &node,
            "key_file = \"identity.key\"",
            "key_file = \"missing.key\"",
        );
        assert!(
            load_err(dir.path()).contains("missing.key"),
            "{}",
            load_err(dir.path())
        );
        edit(
            &node,
            "key_file = \"missing.key\"",
            "key_file = \"identity.key\"",
        );

        // Another replica's key.
        edit(
            &node,
            "key_file = \"identity.key\"",
            "key_file = \"../replica-1/identity.key\"",
        );
        assert!(load_err(dir.path()).contains("not replica 0's key"));
        edit(
            &node,
            "key_file = \"../replica-1/identity.key\"",
            "key_file = \"identity.key\"",
        );

        // An unknown field.
        edit(&node, "id = 0", "id = 0\nbatch_size = 7");
        assert!(
            load_err(dir.path()).contains("batch_size"),
            "{}",
            load_err(dir.path())
        );
        edit(&node, "id = 0\nbatch_size = 7", "id = 0");

        // An address that does not parse.
        edit(&cluster, "127.0.0.1:17002", "127.0.0.1:notaport");
        assert!(
            load_err(dir.path()).contains("not host:port"),
            "{}",
            load_err(dir.path())
        );
        edit(&cluster, "127.0.0.1:notaport", "127.0.0.1:17002");

        // n < 3f + 1.
        edit(&cluster, "f = 1", "f = 2");
        assert!(
            load_err(dir.path()).contains("needs n >= 3f + 1 = 7"),
            "{}",
            load_err(dir.path())
        );
        edit(&cluster, "f = 2", "f = 1");

        // A window that is not a multiple of K.
        edit(&node, "log_window_seqs = 256", "log_window_seqs = 100");
        assert!(
            load_err(dir.path()).contains("multiple of checkpoint_interval_seqs"),
            "{}",
            load_err(dir.path())
        );
    }
}
