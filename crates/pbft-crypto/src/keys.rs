//! Ed25519 identity keys and their files.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use pbft_types::PublicKeyBytes;

use crate::CryptoError;

/// An ed25519 secret key: a replica's or a client's identity.
///
/// The key bytes are wiped from memory when it is dropped.
#[derive(Clone)]
pub struct SecretKey {
    pub(crate) key: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(public {})", self.public_key().to_hex())
    }
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    #[must_use]
    pub fn generate() -> Self {
        Self {
            key: SigningKey::generate(&mut rand_core::OsRng),
        }
    }

    /// The key derived from a 32-byte seed: deterministic, for simulations
    /// and tests. Never use a guessable seed in production.
    #[must_use]
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The public half, as raw bytes for a cluster configuration.
    #[must_use]
    pub fn public_key(&self) -> PublicKeyBytes {
        PublicKeyBytes(self.key.verifying_key().to_bytes())
    }

    /// The key as PKCS#8 DER (as TLS libraries take it).
    ///
    /// # Errors
    /// [`CryptoError::Encode`] if encoding fails.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, CryptoError> {
        Ok(self
            .key
            .to_pkcs8_der()
            .map_err(|e| CryptoError::Encode(e.to_string()))?
            .as_bytes()
            .to_vec())
    }

    /// Writes the key as a PKCS#8 PEM file created with mode 0600. An
    /// existing file is never overwritten.
    ///
    /// # Errors
    /// [`CryptoError::KeyFileExists`], or [`CryptoError::Io`].
    pub fn write_pem_file(&self, path: &Path) -> Result<(), CryptoError> {
        let pem = self
            .key
            .to_pkcs8_pem(Default::default())
            .map_err(|e| CryptoError::Encode(e.to_string()))?;
        let io = |source| CryptoError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    CryptoError::KeyFileExists(path.to_owned())
                } else {
                    io(e)
                }
            })?;
        file.write_all(pem.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Reads a key written by [`SecretKey::write_pem_file`] (or by
    /// `openssl genpkey -algorithm ed25519`). A file that others may read or
    /// write is refused.
    ///
    /// # Errors
    /// [`CryptoError::InsecureKeyFile`], [`CryptoError::KeyFormat`] or [`CryptoError::Io`].
    pub fn read_pem_file(path: &Path) -> Result<Self, CryptoError> {
        let io = |source| CryptoError::Io {
            path: path.to_owned(),
            source,
        };
        let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CryptoError::InsecureKeyFile {
                path: path.to_owned(),
                mode,
            });
        }
        let text = fs::read_to_string(path).map_err(io)?;
        let key = SigningKey::from_pkcs8_pem(&text).map_err(|e| CryptoError::KeyFormat {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self { key })
    }
}

/// Writes a public key as an SPKI PEM file (world-readable is fine).
///
/// # Errors
/// [`CryptoError::Io`], or [`CryptoError::KeyFormat`] for an invalid key.
pub fn write_public_key_file(path: &Path, key: &PublicKeyBytes) -> Result<(), CryptoError> {
    let bad = |reason: String| CryptoError::KeyFormat {
        path: path.to_owned(),
        reason,
    };
    let vk = VerifyingKey::from_bytes(&key.0).map_err(|e| bad(e.to_string()))?;
    let pem = vk
        .to_public_key_pem(Default::default())
        .map_err(|e| bad(e.to_string()))?;
    fs::write(path, pem).map_err(|source| CryptoError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads a public key written by [`write_public_key_file`].
///
/// # Errors
/// [`CryptoError::Io`] or [`CryptoError::KeyFormat`].
pub fn read_public_key_file(path: &Path) -> Result<PublicKeyBytes, CryptoError> {
    let text = fs::read_to_string(path).map_err(|source| CryptoError::Io {
        path: path.to_owned(),
        source,
    })?;
    let vk = VerifyingKey::from_public_key_pem(&text).map_err(|e| CryptoError::KeyFormat {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(PublicKeyBytes(vk.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replica-0.key");
        let key = SecretKey::generate();
        key.write_pem_file(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = SecretKey::read_pem_file(&path).unwrap();
        assert_eq!(back.public_key(), key.public_key());
    }

    #[test]
    fn existing_key_file_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        SecretKey::generate().write_pem_file(&path).unwrap();
        let err = SecretKey::generate().write_pem_file(&path).unwrap_err();
        assert!(matches!(err, CryptoError::KeyFileExists(_)), "{err}");
    }

    #[test]
    fn key_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        SecretKey::generate().write_pem_file(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = SecretKey::read_pem_file(&path).unwrap_err();
            assert!(
                matches!(err, CryptoError::InsecureKeyFile { mode: m, .. } if m == mode),
                "{err}"
            );
            assert!(err.to_string().contains("chmod 600"));
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(SecretKey::read_pem_file(&path).is_ok());
    }

    #[test]
    fn garbage_key_file_is_a_format_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, "not a key").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            SecretKey::read_pem_file(&path),
            Err(CryptoError::KeyFormat { .. })
        ));
        assert!(matches!(
            SecretKey::read_pem_file(&dir.path().join("missing")),
            Err(CryptoError::Io { .. })
        ));
    }

    #[test]
    fn public_key_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pub");
        let key = SecretKey::generate().public_key();
        write_public_key_file(&path, &key).unwrap();
        assert_eq!(read_public_key_file(&path).unwrap(), key);
    }

    #[test]
    fn seeded_keys_are_deterministic() {
        assert_eq!(
            SecretKey::from_seed([3; 32]).public_key(),
            SecretKey::from_seed([3; 32]).public_key()
        );
        assert_ne!(
            SecretKey::from_seed([3; 32]).public_key(),
            SecretKey::from_seed([4; 32]).public_key()
        );
    }
}
