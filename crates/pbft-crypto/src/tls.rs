//! TLS identities bound to ed25519 identity keys.
//!
//! Design: every replica and client presents a self-signed X.509 certificate
//! whose subject key *is* its ed25519 identity key. No certificate authority
//! is involved: the cluster configuration already lists every identity's
//! public key, so a presented certificate is accepted exactly when its key
//! is configured, and the TLS 1.3 handshake proves possession of the secret
//! key. Revoking an identity is removing its key from the configuration;
//! there is no CA key to guard or rotate. See ARCHITECTURE.md.

use pbft_types::PublicKeyBytes;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{CryptoError, Keyring, Principal, SecretKey};

/// A certificate and its secret key, in the DER forms rustls takes.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The self-signed X.509 certificate, DER.
    pub cert_der: Vec<u8>,
    /// The same certificate as PEM text, for files.
    pub cert_pem: String,
    /// The ed25519 secret key, PKCS#8 DER.
    pub key_pkcs8_der: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_der_bytes", &self.cert_der.len())
            .finish()
    }
}

impl TlsIdentity {
    /// Makes a self-signed certificate for the identity key, with `name` as
    /// its common name and DNS subject alternative name (for logs only: peers
    /// are identified by key, not by name).
    ///
    /// # Errors
    /// [`CryptoError::CertificateGeneration`].
    pub fn generate(key: &SecretKey, name: &str) -> Result<Self, CryptoError> {
        let gen = |e: rcgen::Error| CryptoError::CertificateGeneration(e.to_string());
        let key_pkcs8_der = key.to_pkcs8_der()?;
        let key_pair = rcgen::KeyPair::try_from(key_pkcs8_der.as_slice()).map_err(gen)?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(gen)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key_pair).map_err(gen)?;
        Ok(Self {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pkcs8_der,
        })
    }
}

/// The ed25519 public key a DER certificate carries.
///
/// # Errors
/// [`CryptoError::CertificateParse`] or [`CryptoError::CertificateKeyNotEd25519`].
pub fn certificate_public_key(cert_der: &[u8]) -> Result<PublicKeyBytes, CryptoError> {
    let (rest, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| CryptoError::CertificateParse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CryptoError::CertificateParse(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    let spki = cert.public_key();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_SIG_ED25519 {
        return Err(CryptoError::CertificateKeyNotEd25519);
    }
    let key: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| CryptoError::CertificateKeyNotEd25519)?;
    Ok(PublicKeyBytes(key))
}

impl Keyring {
    /// Maps a certificate presented in a TLS handshake to exactly one
    /// configured identity, or refuses it. Call it from the TLS verifier; the
    /// handshake itself proves that the peer holds the key.
    ///
    /// # Errors
    /// [`CryptoError::CertificateParse`], [`CryptoError::CertificateKeyNotEd25519`]
    /// or [`CryptoError::UnknownCertificateKey`].
    pub fn identify_certificate(&self, cert_der: &[u8]) -> Result<Principal, CryptoError> {
        let key = certificate_public_key(cert_der)?;
        self.principal_of(&key)
            .ok_or_else(|| CryptoError::UnknownCertificateKey(key.to_hex()))
    }
}
