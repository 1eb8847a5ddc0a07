//! The fault and hostile-input catalogue's remaining cases (issue 14), each through the
//! real binary: a projected token rotated while it is read, EKS Pod Identity agent faults,
//! a skewed clock, deeply nested JSON in secrets, and a Google answer without a checksum.
//! Network faults every provider meets are rows of `tests/faults.rs`; token mode's soak is
//! `tests/soak.rs`.

#[cfg(feature = "aws")]
mod clock_skew;
mod deep_json;
#[cfg(feature = "gcp")]
mod gcp_checksum;
#[cfg(feature = "aws")]
mod pod_identity;
mod rotation;
