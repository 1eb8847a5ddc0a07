//! Refresh mode (`--refresh`) through the real binary: rotations in LocalStack and in the
//! Azure and Google fakes reach the files, atomically and only when something changed;
//! the application is told once per change; outages, throttling, revoked secrets, stale
//! sets, SIGTERM at any moment; and a soak of thousands of cycles.

#[cfg(feature = "aws")]
#[path = "refresh/aws.rs"]
mod aws;
#[cfg(feature = "azure")]
#[path = "refresh/azure.rs"]
mod azure;
#[cfg(feature = "gcp")]
#[path = "refresh/gcp.rs"]
mod gcp;
#[cfg(all(feature = "aws", feature = "gcp"))]
#[path = "refresh/soak.rs"]
mod soak;
#[cfg(feature = "aws")]
#[path = "refresh/usage.rs"]
mod usage;
