//! secret-sidecar as a library: the binary in `main.rs` is a thin shell over [`run::run`].
//!
//! The modules are public so that fuzz targets and benchmarks can drive the parsers
//! directly; the command line is the only supported interface.

pub mod cli;
pub mod config;
pub mod exit;
pub mod extract;
#[cfg(any(feature = "aws", feature = "azure", feature = "gcp"))]
pub mod https;
#[cfg(feature = "aws")]
pub mod identity;
pub mod logging;
pub mod plan;
pub mod providers;
pub mod publish;
pub mod reference;
pub mod retry;
pub mod run;
pub mod secret;
pub mod shape;
#[cfg(feature = "aws")]
pub mod token;
