use std::path::PathBuf;

use pbft_types::ReplicaId;

use crate::Principal;

/// Everything that can go wrong in `pbft-crypto`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The signature does not verify for the claimed signer.
    #[error("bad signature from {signer}")]
    BadSignature {
        /// The claimed signer.
        signer: Principal,
    },
    /// The signer is not in the cluster configuration.
    #[error("{0} is not a configured identity")]
    UnknownSigner(Principal),
    /// A configured public key is not a valid ed25519 point.
    #[error("public key of {principal} is invalid: {reason}")]
    InvalidPublicKey {
        /// Whose key.
        principal: Principal,
        /// Why.
        reason: &'static str,
    },
    /// A certificate lists one signer twice (or its signers are not sorted).
    #[error("certificate lists replica {0} twice or out of order")]
    DuplicateSigner(ReplicaId),
    /// A certificate has fewer signers than the quorum it must prove.
    #[error("certificate has {got} signers, {needed} are needed")]
    NotEnoughSigners {
        /// The threshold.
        needed: usize,
        /// Distinct valid signers found.
        got: usize,
    },
    /// Votes gathered into a certificate are not over the same content.
    #[error("votes for a certificate differ in content")]
    MismatchedContent,
    /// A key file is readable or writable by others than its owner.
    #[error("secret key file {path} has mode {mode:o}; it must be readable by its owner only (chmod 600)")]
    InsecureKeyFile {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file would be overwritten.
    #[error("key file {0} already exists; refusing to overwrite an identity")]
    KeyFileExists(PathBuf),
    /// A key file does not hold a key of the expected format.
    #[error("key file {path} is not a PEM ed25519 key: {reason}")]
    KeyFormat {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Making a TLS certificate failed.
    #[error("cannot make a TLS certificate: {0}")]
    CertificateGeneration(String),
    /// A presented certificate could not be parsed.
    #[error("cannot parse the presented certificate: {0}")]
    CertificateParse(String),
    /// A presented certificate does not carry an ed25519 key.
    #[error("the presented certificate's key is not ed25519")]
    CertificateKeyNotEd25519,
    /// A presented certificate's key belongs to no configured identity.
    #[error("the presented certificate's key {0} belongs to no configured replica or client")]
    UnknownCertificateKey(String),
    /// A request's MAC for this replica does not verify.
    #[error("bad request MAC from client {client}")]
    BadMac {
        /// The claimed client.
        client: pbft_types::ClientId,
    },
    /// A request's authenticator has not one MAC per replica.
    #[error("authenticator of client {client} has {macs} MACs for {replicas} replicas")]
    MalformedAuthenticator {
        /// The claimed client.
        client: pbft_types::ClientId,
        /// MACs it carries.
        macs: usize,
        /// Replicas configured.
        replicas: usize,
    },
    /// Encoding a value to sign failed (a broken invariant).
    #[error("cannot encode the value to sign: {0}")]
    Encode(String),
}
