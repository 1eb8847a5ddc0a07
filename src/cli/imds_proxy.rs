//! The `imds-proxy` subcommand's options (the mode is `crate::imds_proxy`).

use std::net::SocketAddr;
use std::path::PathBuf;

/// The `imds-proxy` subcommand's options; --ca-file, --timeout and --log-format apply too.
#[derive(Debug, Clone, clap::Args)]
pub struct ImdsProxyArgs {
    /// Where to serve, a loopback address and port. The pod's traffic to
    /// 169.254.169.254:80 reaches it through --install-redirect; SDKs reach it through
    /// IDENTITY_ENDPOINT=http://ADDR:PORT/msi/token. Another address is refused: the proxy
    /// hands out tokens to whoever asks.
    ///
    /// Example: --listen 127.0.0.1:8000
    #[arg(
        long = "listen",
        value_name = "ADDR:PORT",
        env = "SECRET_SIDECAR_IMDS_LISTEN",
        default_value = "127.0.0.1:8000"
    )]
    pub imds_listen: SocketAddr,

    /// The resource whose token is obtained at start and that --probe asks for: ready
    /// means a token for it can be had. Use the one your application asks for.
    ///
    /// Example: --resource https://vault.azure.net
    #[arg(
        long = "resource",
        value_name = "RESOURCE",
        env = "SECRET_SIDECAR_IMDS_RESOURCE",
        default_value = "https://management.azure.com/"
    )]
    pub imds_resource: String,

    /// A file holding the secret that callers of the App Service contract
    /// (IDENTITY_ENDPOINT, IDENTITY_HEADER) must send in X-IDENTITY-HEADER: mount the same
    /// Kubernetes Secret key here and into the app's IDENTITY_HEADER. At least 32
    /// characters. Without it, only the IMDS contract is served.
    ///
    /// Example: --identity-header-file /var/run/secrets/imds-proxy/identity-header
    #[arg(
        long = "identity-header-file",
        value_name = "FILE",
        env = "SECRET_SIDECAR_IMDS_IDENTITY_HEADER_FILE"
    )]
    pub imds_identity_header_file: Option<PathBuf>,

    /// The workload identity's object (principal) id, so that callers that name their
    /// identity by object_id get its token; others get IMDS's "Identity not found".
    ///
    /// Example: --object-id 0d3f2c1b-1111-2222-3333-444455556666
    #[arg(
        long = "object-id",
        value_name = "ID",
        env = "SECRET_SIDECAR_IMDS_OBJECT_ID"
    )]
    pub imds_object_id: Option<String>,

    /// The workload identity's Azure resource id (az identity show --query id), so that
    /// callers that name their identity by msi_res_id or mi_res_id get its token.
    ///
    /// Example: --resource-id /subscriptions/SUB/resourcegroups/RG/providers/Microsoft.ManagedIdentity/userAssignedIdentities/NAME
    #[arg(
        long = "resource-id",
        value_name = "ID",
        env = "SECRET_SIDECAR_IMDS_RESOURCE_ID"
    )]
    pub imds_resource_id: Option<String>,

    /// Install the redirect instead of serving: an nftables rule in this network
    /// namespace (the pod's) that sends TCP to 169.254.169.254:80 to --listen, then exit.
    /// Needs CAP_NET_ADMIN (an init container running as uid 0 with only NET_ADMIN added).
    /// Idempotent: it replaces its own table (ip secret_sidecar_imds) and touches nothing
    /// else.
    ///
    /// Example: --install-redirect
    #[arg(
        long = "install-redirect",
        env = "SECRET_SIDECAR_IMDS_INSTALL_REDIRECT",
        conflicts_with = "imds_probe"
    )]
    pub imds_install_redirect: bool,

    /// Check instead of serve: exit 0 once the proxy on --listen answers a token for
    /// --resource, 1 otherwise. For the sidecar's startup probe. No environment variable:
    /// it would turn the sidecar itself into a probe.
    ///
    /// Example: --probe
    #[arg(long = "probe")]
    pub imds_probe: bool,
}
