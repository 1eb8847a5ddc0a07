//! secret-sidecar as a library: the binary in `main.rs` is a thin shell over the modes.
//!
//! The modules are public so that fuzz targets and benchmarks can drive the parsers
//! directly; the command line is the only supported interface. They form layers, each
//! using only the ones below it (`ARCHITECTURE.md`; `tests/layers.rs` holds the code to
//! that), listed here from the top.

#[cfg(not(any(feature = "aws", feature = "azure", feature = "gcp")))]
compile_error!("secret-sidecar needs at least one provider feature: aws, azure or gcp");

// Modes: what the process does, one module each.
#[cfg(feature = "azure")]
pub mod imds_proxy;
pub mod init;
pub mod refresh;
#[cfg(feature = "aws")]
pub mod token;
#[cfg(feature = "webhook")]
pub mod webhook;

// The pipeline the modes share: fetch a plan's secrets, render them into files.
pub mod fetch;
pub mod render;

// The command line and the validated plan.
pub mod cli;
pub mod plan;

// Shaping fetched values into file contents.
pub mod certificate;
pub mod extract;
pub mod shape;

// References and the config file.
pub mod config;
pub mod reference;

// Secret stores.
pub mod providers;

// Workload identity shared by providers and modes.
pub mod identity;

// Foundation: no module here uses one above.
pub mod calls;
pub mod env;
pub mod exit;
pub mod logging;
pub mod net;
pub mod notify;
pub mod paths;
pub mod publish;
pub mod retry;
pub mod secret;
pub mod serve;
pub mod signal;
