//! The Azure and Google protocol fakes of this test kit, served until stdin closes, for
//! `bench/latency.sh`: the latency benchmark puts them behind its delaying proxy so that
//! the real binary and the contenders meet the same servers the integration tests use
//! (Entra ID's client-assertion grant and Key Vault's 401 challenge, the GKE metadata
//! server, Google STS and Secret Manager), rather than copies written for the benchmark.
//!
//! ```text
//! bench-fakes DIR K...
//! ```
//!
//! Seeds `bench-K-I` (I < K) for each K in the vault and in Secret Manager (project
//! `bench`), writes the projected tokens the identities present to `DIR`, and prints one
//! JSON line on stdout with every address and name the benchmark needs. Every server
//! listens on 127.0.0.1 only. Entra ID and Key Vault serve HTTPS with the test kit's CA
//! (its PEM file is in the JSON); the Google fakes serve plain HTTP and the proxy adds
//! TLS in front of STS and Secret Manager, as the real endpoints have it.

use std::io::Read as _;
use std::path::PathBuf;

use testkit::{azure, gcp, tls};

/// The value of secret I of the K set, the same shape bench/seed.py gives AWS's.
fn value(k: usize, i: usize) -> String {
    format!(r#"{{"username":"app{i}","password":"bench-password-{k}-{i}-0123456789abcdef"}}"#)
}

fn port(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a URL ending in :PORT")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: bench-fakes DIR K..."));
    let counts: Vec<usize> = args.map(|k| k.parse().expect("K is a count")).collect();

    let assertion = azure::projected_token();
    let azure_token = dir.join("azure-federated-token");
    std::fs::write(&azure_token, &assertion).unwrap();
    let entra = azure::Entra::start(&assertion);
    let vault = azure::KeyVault::start(&entra);

    let access_token = "ya29.bench-access-token-never-log-me";
    let email = "bench@bench-project.iam.gserviceaccount.com";
    let metadata = gcp::Metadata::start(access_token, email);
    let subject = testkit::fake_jwt("system:serviceaccount:bench:app");
    let gcp_subject = dir.join("gcp-subject-token");
    std::fs::write(&gcp_subject, &subject).unwrap();
    let audience = gcp::pool_audience("bench", "kubernetes");
    let sts = gcp::Sts::start(&audience, &subject, access_token);
    let secret_manager = gcp::SecretManager::start(access_token);

    for &k in &counts {
        for i in 0..k {
            vault.put(&format!("bench-{k}-{i}"), &value(k, i));
            let name = format!("projects/bench/secrets/bench-{k}-{i}");
            secret_manager.add(&name, value(k, i).as_bytes());
        }
    }

    let description = serde_json::json!({
        "testkit_ca": tls::ca().pem_file,
        "entra_port": entra.server.port,
        "vault_port": vault.server.port,
        "azure_tenant": azure::TENANT,
        "azure_client_id": azure::CLIENT_ID,
        "azure_scope": azure::SCOPE,
        "azure_federated_token_file": azure_token,
        "metadata_port": port(&metadata.server.url),
        "gcp_sts_port": port(&sts.server.url),
        "gcp_audience": audience,
        "gcp_subject_token_file": gcp_subject,
        "secret_manager_port": port(&secret_manager.url()),
    });
    println!("{description}");

    // Serve until the benchmark closes our stdin (or exits and the pipe closes with it).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
