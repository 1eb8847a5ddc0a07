//! The findings of the adversarial review (issue 14), each through the real binary with a
//! test that fails without its fix (`SECRET_SIDECAR_TEST_BINARY` runs them against another
//! build). One module per theme:
//!
//! - `log_guard`: credentials in malformed answers never reach the log, whatever
//!   `RUST_LOG` says, from every credential source;
//! - `publish`: a staging directory swapped for a link redirects nothing; two writers take
//!   turns; directory modes; tidying after the swap is best-effort;
//! - `text`: control characters in names and references, template errors and bounds;
//! - `tokens`: lifetimes too large for the clock, and OAuth2 errors that echo the secret;
//! - `bounds`: `--timeout` bounds the whole process; response, total and concurrency caps;
//! - `endpoints`: plain-http AWS endpoints, proxies and loopback, metadata redirects.
//!
//! Tests that need root (mounts, namespaces) say so in their name's doc and print why they
//! skip when not root. None needs LocalStack.

#[cfg(feature = "aws")]
#[path = "hardening/bounds.rs"]
mod bounds;
#[path = "hardening/endpoints.rs"]
mod endpoints;
#[path = "hardening/log_guard.rs"]
mod log_guard;
#[cfg(feature = "aws")]
#[path = "hardening/publish.rs"]
mod publish;
#[cfg(feature = "aws")]
#[path = "hardening/text.rs"]
mod text;
#[cfg(feature = "aws")]
#[path = "hardening/tokens.rs"]
mod tokens;
