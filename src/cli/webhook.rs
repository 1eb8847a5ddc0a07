//! The `webhook` subcommand's options (the mode is `crate::webhook`).

use std::path::PathBuf;

/// The `webhook` subcommand's options; --log-format applies too.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// The address and port to serve HTTPS on.
    ///
    /// Example: --listen 0.0.0.0:8443
    #[arg(
        long = "listen",
        value_name = "ADDR:PORT",
        env = "SECRET_SIDECAR_WEBHOOK_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    pub webhook_listen: std::net::SocketAddr,

    /// The server certificate (PEM, with its chain), re-read when it changes.
    ///
    /// Example: --tls-cert-file /etc/webhook/tls/tls.crt
    #[arg(
        long = "tls-cert-file",
        value_name = "FILE",
        env = "SECRET_SIDECAR_WEBHOOK_TLS_CERT_FILE"
    )]
    pub webhook_tls_cert_file: PathBuf,

    /// The server certificate's private key (PEM), re-read when it changes.
    ///
    /// Example: --tls-key-file /etc/webhook/tls/tls.key
    #[arg(
        long = "tls-key-file",
        value_name = "FILE",
        env = "SECRET_SIDECAR_WEBHOOK_TLS_KEY_FILE"
    )]
    pub webhook_tls_key_file: PathBuf,

    /// The secret-sidecar image the injected containers run, with a tag or (better) a
    /// digest: pods cannot choose it.
    ///
    /// Example: --image registry.example.com/secret-sidecar:0.1.0@sha256:...
    #[arg(
        long = "image",
        value_name = "IMAGE",
        env = "SECRET_SIDECAR_WEBHOOK_IMAGE"
    )]
    pub webhook_image: String,

    /// For clusters without the EKS pod identity webhook: when a pod's ServiceAccount is
    /// annotated with eks.amazonaws.com/role-arn, add what that webhook adds (a projected
    /// token with the STS audience, AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE in every
    /// container, the injected one included). Reads ServiceAccounts from the API server
    /// (in-cluster credentials or KUBECONFIG; RBAC: get serviceaccounts).
    ///
    /// Example: --inject-irsa
    #[arg(long = "inject-irsa", env = "SECRET_SIDECAR_WEBHOOK_INJECT_IRSA")]
    pub webhook_inject_irsa: bool,

    /// CPU request and limit of the injected containers (requests equal limits).
    ///
    /// Example: --cpu 100m
    #[arg(
        long = "cpu",
        value_name = "QUANTITY",
        env = "SECRET_SIDECAR_WEBHOOK_CPU",
        default_value = "100m"
    )]
    pub webhook_cpu: String,

    /// Memory request and limit of the injected containers (requests equal limits).
    ///
    /// Example: --memory 64Mi
    #[arg(
        long = "memory",
        value_name = "QUANTITY",
        env = "SECRET_SIDECAR_WEBHOOK_MEMORY",
        default_value = "64Mi"
    )]
    pub webhook_memory: String,

    /// The sizeLimit of the in-memory volume the secrets are published into.
    ///
    /// Example: --volume-size 1Mi
    #[arg(
        long = "volume-size",
        value_name = "QUANTITY",
        env = "SECRET_SIDECAR_WEBHOOK_VOLUME_SIZE",
        default_value = "1Mi"
    )]
    pub webhook_volume_size: String,
}
