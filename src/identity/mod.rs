//! How the workload proves who it is, where more than one part of the program needs it.
//!
//! - [`web_token`] (AWS builds): web-identity tokens obtained in-process, a Google ID token
//!   from the metadata server or an OAuth2 client-credentials access token, for STS
//!   `AssumeRoleWithWebIdentity`; used by the AWS provider (`--aws-token-source`) and by
//!   `token` mode; [`options`] holds the options that choose them;
//! - [`oauth2`] (AWS builds): the client-credentials request itself;
//! - [`google`] (Google builds): the metadata server and Google credential errors, shared
//!   by the gcp-metadata token source and the Secret Manager provider;
//! - [`azure`] (Azure builds): Key Vault's credential (workload identity's client
//!   assertion, managed identity, developer tools) and what to say when Entra ID refuses;
//! - [`token_file`]: reading a projected token file that kubelet may be replacing, and
//!   telling that race from a missing file when an SDK read it.
//!
//! Like a provider, each makes one attempt per call and tags its errors with a
//! [`crate::exit::Failure`] class; tokens stay in zeroizing memory and are never logged.

#[cfg(feature = "azure")]
pub mod azure;
#[cfg(feature = "gcp")]
pub mod google;
#[cfg(feature = "aws")]
pub mod oauth2;
#[cfg(feature = "aws")]
pub mod options;
pub mod token_file;
#[cfg(feature = "aws")]
pub mod web_token;
