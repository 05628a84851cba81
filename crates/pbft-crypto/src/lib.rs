//! Keys, signatures, certificates and TLS identities of the `pbft` toolkit.
//!
//! - [`SecretKey`]: ed25519 identity keys, and their PEM files (secret key
//!   files are created with mode 0600 and refused when others may read them).
//! - [`Signer`] and [`Keyring`]: what is signed is a blake3 digest over a
//!   domain tag, the cluster id, the message kind, the signer and the
//!   content ([`signing_digest`]). Verification is strict; many signatures
//!   are checked at once with [`Keyring::verify_batch`].
//! - [`RequestAuthenticator`] and [`RequestVerifier`]: client requests
//!   authenticated with a signature, or with one MAC per replica (TOCS 3.2)
//!   under keys each client shares with each replica, derived from their
//!   identity keys by static X25519 and blake3.
//! - Trust in the types: a [`Signed`](pbft_types::Signed) value from the wire
//!   is a claim; only this crate makes a [`Verified`] value or a
//!   [`VerifiedCert`] (distinct configured signers, enough of them, all over
//!   the same content).
//! - [`TlsIdentity`]: a self-signed certificate whose key is the identity
//!   key, and [`Keyring::identify_certificate`] to map a presented
//!   certificate to exactly one configured replica or client.
//!
//! # Example
//!
//! ```
//! use pbft_crypto::{Keyring, SecretKey, Signer};
//! use pbft_types::{ClusterConfig, ClusterId, Digest, Prepare, ReplicaEntry, ReplicaId, SeqNo, View};
//!
//! let keys: Vec<SecretKey> = (0..4u8).map(|i| SecretKey::from_seed([i; 32])).collect();
//! let config = ClusterConfig {
//!     cluster_id: ClusterId(1),
//!     replicas: keys.iter().enumerate().map(|(i, k)| ReplicaEntry {
//!         id: ReplicaId(i as u32),
//!         public_key: k.public_key(),
//!         address: format!("127.0.0.1:{}", 7000 + i),
//!     }).collect(),
//!     clients: vec![],
//! }.validated()?;
//! let keyring = Keyring::new(&config)?;
//!
//! // Three replicas prepare the same digest; their votes form a certificate.
//! let prepare = Prepare { view: View(0), seq: SeqNo(1), digest: Digest([9; 32]) };
//! let votes = (1..4).map(|i| {
//!     let signer = Signer::new(keys[i].clone(), ClusterId(1), ReplicaId(i as u32));
//!     keyring.verify(signer.sign(prepare.clone()).unwrap())
//! }).collect::<Result<Vec<_>, _>>()?;
//! let cert = keyring.certify(votes, config.quorum())?;
//! assert_eq!(cert.signers().count(), 3);
//!
//! // The same signature does not verify in another cluster.
//! let other = Keyring::new(&ClusterConfig { cluster_id: ClusterId(2), ..config.clone() })?;
//! let signed = Signer::new(keys[1].clone(), ClusterId(1), ReplicaId(1)).sign(prepare)?;
//! assert!(other.verify(signed).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod keys;
mod mac;
mod sign;
mod tls;

pub use error::CryptoError;
pub use keys::{read_public_key_file, write_public_key_file, SecretKey};
pub use mac::{RequestAuthenticator, RequestVerifier};
pub use sign::{
    batch_digest, hash, signing_digest, Keyring, Principal, Signable, SignedKind, Signer, SignerId,
    Verified, VerifiedCert,
};
pub use tls::{certificate_public_key, TlsIdentity};
