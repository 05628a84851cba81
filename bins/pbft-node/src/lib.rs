//! The `pbft-node` replica daemon as a library: its configuration files,
//! the operator commands and the run loop, so that tests and tools can use
//! them. The binary (`src/main.rs`) is a thin command-line layer over it.

#[cfg(feature = "byzantine")]
pub mod byzantine;
pub mod client_cmd;
pub mod config;
pub mod error;
pub mod recovery;
pub mod run;
pub mod testnet;
