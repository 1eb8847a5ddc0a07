//! Clients nobody here wrote obtain a token through the proxy and read a Key Vault secret
//! with it: Azure's Python SDK (`ManagedIdentityCredential` + `SecretClient`, from
//! `scripts/azure-sdk.sh`'s venv, named by SECRET_SIDECAR_TEST_AZURE_PYTHON) and the Rust
//! azure_identity `ManagedIdentityCredential` (the binary's own `--azure-credential
//! managed` path), each over the IMDS contract and the App Service one.

use std::path::PathBuf;
use std::process::Command;

use super::{Proxy, expect_no_tokens};
use testkit::azure::{CLIENT_ID, Workload};
use testkit::tls::ca;
use testkit::{SENTINEL, Scratch};

/// The venv's Python, or `None` (with a message) when the test script did not provide it.
pub fn python() -> Option<String> {
    let python = std::env::var("SECRET_SIDECAR_TEST_AZURE_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    if python.is_none() {
        eprintln!(
            "SECRET_SIDECAR_TEST_AZURE_PYTHON unset: Azure's Python SDK not run (scripts/test.sh \
             installs it with scripts/azure-sdk.sh)"
        );
    }
    python
}

pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/imds_proxy/azure_sdk.py")
}

/// Runs the Python client with only `env` (and PATH) in its environment; returns the
/// secret it read.
pub fn python_reads(
    python: &str,
    workload: &Workload,
    name: &str,
    client_id: Option<&str>,
    env: &[(&str, String)],
) -> String {
    let mut command = Command::new(python);
    command
        .arg(script())
        .arg(&workload.vault.server.url)
        .arg(name)
        .arg(&ca().pem_file)
        .args(client_id)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(n, v)| (*n, v.as_str())));
    let output = command.output().expect("the venv's python runs");
    assert!(
        output.status.success(),
        "the Python SDK failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A secret in the workload's vault whose value is a sentinel.
fn stored(workload: &Workload, name: &str) -> String {
    let value = format!("{SENTINEL}-{name}");
    workload.vault.put(name, &value);
    value
}

fn header_file(secrets: &Scratch) -> (String, PathBuf) {
    let header = format!(
        "header-{}-0123456789abcdef0123456789",
        testkit::unique_id('x')
    );
    let file = secrets.path.join("identity-header");
    std::fs::write(&file, &header).unwrap();
    (header, file)
}

#[test]
fn azure_python_sdk_reads_key_vault_with_a_token_from_the_imds_contract() {
    let Some(python) = python() else { return };
    let workload = Workload::start();
    let value = stored(&workload, "python-imds");
    let proxy = Proxy::start(&workload, &[]);
    // MSAL's IMDS flow, at the address AAD Pod Identity set-ups point it to; user-assigned,
    // so the request names the client id.
    let read = python_reads(
        &python,
        &workload,
        "python-imds",
        Some(CLIENT_ID),
        &[(
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            format!("http://127.0.0.1:{}", proxy.port),
        )],
    );
    assert_eq!(read, value);
    assert_eq!(workload.vault.authorized_gets("python-imds"), 1);
    let run = proxy.stop();
    run.expect_code(0).expect_no_leak(value.as_bytes());
    expect_no_tokens(&run, &workload, &[]);
}

#[test]
fn azure_python_sdk_reads_key_vault_with_a_token_from_the_app_service_contract() {
    let Some(python) = python() else { return };
    let workload = Workload::start();
    let value = stored(&workload, "python-app-service");
    let secrets = Scratch::tmpfs("identity-header");
    let (header, file) = header_file(&secrets);
    let proxy = Proxy::start(
        &workload,
        &["--identity-header-file", file.to_str().unwrap()],
    );
    let read = python_reads(
        &python,
        &workload,
        "python-app-service",
        None,
        &[
            (
                "IDENTITY_ENDPOINT",
                format!("http://127.0.0.1:{}/msi/token", proxy.port),
            ),
            ("IDENTITY_HEADER", header.clone()),
        ],
    );
    assert_eq!(read, value);
    let run = proxy.stop();
    run.expect_code(0).expect_no_leak(value.as_bytes());
    expect_no_tokens(&run, &workload, &[&header]);
}

/// The binary as an ordinary Key Vault client with `--azure-credential managed`: the
/// azure_identity crate's ManagedIdentityCredential, not the proxy's code.
pub fn rust_reads(
    workload: &Workload,
    name: &str,
    env: &[(&str, String)],
) -> (testkit::Run, Vec<u8>) {
    let out = Scratch::tmpfs("imds-client-out");
    let mut sidecar = testkit::sidecar!()
        .args([
            "--azure-credential",
            "managed",
            "--azure-skip-challenge-resource-check",
        ])
        .arg("--ca-file")
        .arg(&ca().pem_file)
        .arg("--output-dir")
        .arg(&out.path)
        .arg("--secret")
        .arg(format!("{name}={}", workload.reference(name)));
    for (variable, value) in env {
        sidecar = sidecar.env(variable, value);
    }
    let run = sidecar.run();
    run.expect_code(0).expect_stderr("ManagedIdentity");
    let read = out.read(name);
    (run, read)
}

#[test]
fn rust_azure_identity_reads_key_vault_with_a_token_from_the_imds_contract() {
    let workload = Workload::start();
    let value = stored(&workload, "rust-imds");
    let proxy = Proxy::start(&workload, &[]);
    // azure_identity always asks http://169.254.169.254; an HTTP proxy that is the IMDS
    // proxy stands in for the redirect here (redirect.rs does it for real, as root).
    let (run, read) = rust_reads(
        &workload,
        "rust-imds",
        &[
            ("AZURE_CLIENT_ID", CLIENT_ID.to_owned()),
            ("HTTP_PROXY", format!("http://127.0.0.1:{}", proxy.port)),
        ],
    );
    assert_eq!(read, value.as_bytes());
    run.expect_stderr("instance metadata service");
    expect_no_tokens(&run, &workload, &[]);
    let run = proxy.stop();
    run.expect_code(0).expect_no_leak(value.as_bytes());
    expect_no_tokens(&run, &workload, &[]);
}

#[test]
fn rust_azure_identity_reads_key_vault_with_a_token_from_the_app_service_contract() {
    let workload = Workload::start();
    let value = stored(&workload, "rust-app-service");
    let secrets = Scratch::tmpfs("identity-header");
    let (header, file) = header_file(&secrets);
    let proxy = Proxy::start(
        &workload,
        &["--identity-header-file", file.to_str().unwrap()],
    );
    let (run, read) = rust_reads(
        &workload,
        "rust-app-service",
        &[
            (
                "IDENTITY_ENDPOINT",
                format!("http://127.0.0.1:{}/msi/token", proxy.port),
            ),
            ("IDENTITY_HEADER", header.clone()),
        ],
    );
    assert_eq!(read, value.as_bytes());
    run.expect_stderr("App Service identity endpoint");
    expect_no_tokens(&run, &workload, &[&header]);
    let run = proxy.stop();
    run.expect_code(0);
    expect_no_tokens(&run, &workload, &[&header]);
}
