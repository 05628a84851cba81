//! Mutual TLS 1.3 bound to the cluster configuration.
//!
//! There is no certificate authority: each identity presents a self-signed
//! certificate whose key is its ed25519 identity key (see
//! [`pbft_crypto::TlsIdentity`]). The verifiers below accept a certificate
//! exactly when [`Keyring::identify_certificate`] maps its key to a
//! configured principal, and check the handshake signature with that key
//! (ed25519 only). Names, validity dates and chains play no part: revoking
//! an identity is removing its key from the configuration.
//!
//! The application protocol (ALPN) tells which API a connection is for:
//! [`Alpn::Mesh`] (replica to replica) or [`Alpn::Client`] (client to
//! replica). The role check happens after the handshake, in the endpoint.

use std::sync::Arc;

use pbft_crypto::{Keyring, Principal, TlsIdentity};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::stats::{Refuse, Stats};
use crate::{Limits, QuicError};

/// The server name clients put in their handshake. Servers are identified
/// by key, so it only has to be a valid name.
pub const SERVER_NAME: &str = "pbft";

/// Which API a connection is for, carried as the TLS ALPN protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// Replica to replica: [`crate::Mesh`].
    Mesh,
    /// Client to replica: [`crate::ClientEndpoint`].
    Client,
}

impl Alpn {
    /// The ALPN protocol id.
    #[must_use]
    pub const fn as_bytes(self) -> &'static [u8] {
        match self {
            Self::Mesh => b"pbft-mesh/1",
            Self::Client => b"pbft-client/1",
        }
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        [Self::Mesh, Self::Client]
            .into_iter()
            .find(|a| a.as_bytes() == bytes)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which principals a verifier lets through the handshake.
#[derive(Clone, Copy, Debug)]
enum Accept {
    /// Servers are replicas.
    Replicas,
    /// Any configured replica or client; the endpoint checks the role.
    Anyone,
}

/// Accepts exactly the configured identities; verifies ed25519 handshake
/// signatures with the certificate's key.
#[derive(Debug)]
struct IdentityVerifier {
    keyring: Arc<Keyring>,
    algorithms: WebPkiSupportedAlgorithms,
    accept: Accept,
    stats: Arc<Stats>,
}

impl IdentityVerifier {
    fn new(keyring: Arc<Keyring>, accept: Accept, stats: Arc<Stats>) -> Self {
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        Self {
            keyring,
            algorithms,
            accept,
            stats,
        }
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<Principal, rustls::Error> {
        let refuse = |stats: &Stats| {
            stats.refuse(Refuse::UnknownCertificate);
            rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        };
        let principal = match self.keyring.identify_certificate(end_entity.as_ref()) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "refusing a certificate");
                return Err(refuse(&self.stats));
            }
        };
        match (self.accept, principal) {
            (Accept::Anyone, _) | (Accept::Replicas, Principal::Replica(_)) => Ok(principal),
            (Accept::Replicas, Principal::Client(_)) => Err(refuse(&self.stats)),
        }
    }

    fn verify13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ));
        }
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls13RequiredForQuic,
    ))
}

impl ServerCertVerifier for IdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for IdentityVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

fn cert_and_key(identity: &TlsIdentity) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let cert = CertificateDer::from(identity.cert_der.clone());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_pkcs8_der.clone()));
    (vec![cert], key)
}

/// The QUIC transport parameters derived from the limits.
pub(crate) fn transport_config(limits: &Limits) -> Result<Arc<quinn::TransportConfig>, QuicError> {
    let idle =
        quinn::IdleTimeout::try_from(limits.idle_timeout).map_err(|e| QuicError::InvalidLimit {
            name: "idle_timeout",
            reason: e.to_string(),
        })?;
    // Path MTU discovery from the safe 1200 bytes up to the configured bound
    // (RFC 9000 section 14.3, DPLPMTUD); black-hole detection falls back.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(limits.udp_payload_bytes_max);
    let mut t = quinn::TransportConfig::default();
    t.mtu_discovery_config(Some(mtu));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(0))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(limits.streams_uni_max))
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(limits.keep_alive_interval))
        .stream_receive_window(quinn::VarInt::from_u32(limits.stream_receive_window_bytes))
        .receive_window(quinn::VarInt::from_u32(
            limits.connection_receive_window_bytes,
        ))
        .send_window(limits.send_window_bytes)
        .datagram_receive_buffer_size(None);
    Ok(Arc::new(t))
}

pub(crate) fn client_config_with_stats(
    keyring: Arc<Keyring>,
    identity: &TlsIdentity,
    alpn: Alpn,
    limits: &Limits,
    stats: Arc<Stats>,
) -> Result<quinn::ClientConfig, QuicError> {
    let verifier = Arc::new(IdentityVerifier::new(keyring, Accept::Replicas, stats));
    let (certs, key) = cert_and_key(identity);
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certs, key)?;
    tls.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| QuicError::QuicConfig(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport_config(limits)?);
    Ok(config)
}

/// A quinn client configuration that presents `identity`, accepts only
/// configured replicas as servers, and speaks `alpn`. The endpoints build
/// their own; this is public so that other protocols (and tests) can dial a
/// replica with the same authentication.
///
/// # Errors
/// [`QuicError::Tls`] (for example a key rustls cannot use) or
/// [`QuicError::QuicConfig`].
pub fn client_config(
    keyring: Arc<Keyring>,
    identity: &TlsIdentity,
    alpn: Alpn,
    limits: &Limits,
) -> Result<quinn::ClientConfig, QuicError> {
    client_config_with_stats(keyring, identity, alpn, limits, Arc::default())
}

/// The quinn server configuration of a replica: presents `identity`,
/// requires a client certificate of a configured principal, offers both
/// ALPN protocols.
pub(crate) fn server_config(
    keyring: Arc<Keyring>,
    identity: &TlsIdentity,
    limits: &Limits,
    stats: Arc<Stats>,
) -> Result<quinn::ServerConfig, QuicError> {
    let verifier = Arc::new(IdentityVerifier::new(keyring, Accept::Anyone, stats));
    let (certs, key) = cert_and_key(identity);
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![
        Alpn::Mesh.as_bytes().to_vec(),
        Alpn::Client.as_bytes().to_vec(),
    ];
    let quic = QuicServerConfig::try_from(tls).map_err(|e| QuicError::QuicConfig(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport_config(limits)?);
    config.max_incoming(limits.incoming_handshakes_max);
    config.migration(false);
    Ok(config)
}

/// The configured principal behind an established connection, from the
/// certificate it presented.
///
/// # Errors
/// [`QuicError::Crypto`] when the certificate maps to no configured identity
/// (cannot happen after our verifiers accepted it), or
/// [`QuicError::QuicConfig`] when the connection carries no certificate.
pub fn peer_principal(
    connection: &quinn::Connection,
    keyring: &Keyring,
) -> Result<Principal, QuicError> {
    let missing = || QuicError::QuicConfig("the peer presented no certificate".to_owned());
    let identity = connection.peer_identity().ok_or_else(missing)?;
    let certs = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| missing())?;
    let end_entity = certs.first().ok_or_else(missing)?;
    Ok(keyring.identify_certificate(end_entity.as_ref())?)
}

/// The ALPN protocol negotiated on a connection.
pub(crate) fn negotiated_alpn(connection: &quinn::Connection) -> Option<Alpn> {
    let data = connection.handshake_data()?;
    let data = data
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?;
    Alpn::from_bytes(data.protocol.as_deref()?)
}

/// quinn's stateless-reset key, derived from the identity's secret key so
/// that a restarted endpoint can reset the connections its previous run
/// left open (peers notice a restart at once instead of at idle timeout),
/// and the largest UDP payload the endpoint accepts.
///
/// # Errors
/// [`QuicError::InvalidLimit`] when `udp_payload_bytes_max` is out of range.
pub(crate) fn endpoint_config(
    identity: &TlsIdentity,
    limits: &Limits,
) -> Result<quinn::EndpointConfig, QuicError> {
    let secret = blake3::derive_key(
        "pbft-quic 2026-11 stateless reset key v1",
        &identity.key_pkcs8_der,
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let mut config = quinn::EndpointConfig::new(Arc::new(key));
    config
        .max_udp_payload_size(limits.udp_payload_bytes_max)
        .map_err(|e| QuicError::InvalidLimit {
            name: "udp_payload_bytes_max",
            reason: e.to_string(),
        })?;
    Ok(config)
}
