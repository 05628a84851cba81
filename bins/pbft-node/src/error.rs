//! The node's errors.

use std::path::PathBuf;

/// Everything that stops the node or an operator command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A TOML file does not parse (syntax, unknown field, wrong type).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is not acceptable.
    #[error("{path}: {field}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The cluster file describes an invalid cluster.
    #[error("{path}: {source}")]
    Cluster {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: pbft_types::ConfigError,
    },
    /// A key or certificate problem.
    #[error(transparent)]
    Crypto(#[from] pbft_crypto::CryptoError),
    /// Anything else, with its context.
    #[error("{0}")]
    Other(String),
}
