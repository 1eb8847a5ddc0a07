#![cfg(any(feature = "aws", feature = "azure"))]
//! Certificates stored as secrets, published as PEM key, leaf, chain or bundle (issue 18),
//! through the real binary: PKCS#12 files without a password (as OpenSSL writes them, and
//! as Key Vault does, with the null password) and PEM bundles, a leaf and an intermediate
//! below a root, made in the test with `openssl`; served by the Key Vault fake with the
//! content type Key Vault gives them, and by LocalStack's Secrets Manager (base64 text and
//! raw bytes). What is published is read back by `openssl` itself: the key must be the
//! leaf's, the chain must verify against the root.

use testkit::pki::{Pkcs12, Pki};
use testkit::{Run, Scratch, base64};

/// The four files of one certificate, as published.
const FILES: [(&str, &str); 4] = [
    ("tls.key", "pem-key"),
    ("tls.crt", "pem-cert"),
    ("chain.pem", "pem-chain"),
    ("bundle.pem", "pem-bundle"),
];

/// Checks the four files in `out` with openssl: the key is the leaf's, the certificate is
/// the leaf, the chain is leaf then intermediate and verifies against the root, the
/// bundle is the key then the chain.
#[track_caller]
fn expect_converted(pki: &Pki, out: &Scratch, run: &Run) {
    run.expect_code(0);
    // The private key never reaches the logs, in any form.
    run.expect_no_leak(&pki.read("leaf.key"));
    let key_pem = out.read("tls.key");
    assert!(
        key_pem.starts_with(b"-----BEGIN PRIVATE KEY-----\n"),
        "{}",
        String::from_utf8_lossy(&key_pem[..20])
    );
    for (name, _) in FILES {
        std::fs::write(pki.path(name), out.read(name)).unwrap();
    }
    let public = |args: &[&str]| pki.openssl_says(args);
    let leaf_public = public(&["x509", "-in", "leaf.crt", "-noout", "-pubkey"]);
    assert_eq!(public(&["pkey", "-in", "tls.key", "-pubout"]), leaf_public);
    assert_eq!(
        public(&["pkey", "-in", "bundle.pem", "-pubout"]),
        leaf_public
    );
    let fingerprint =
        |file: &str| public(&["x509", "-in", file, "-noout", "-fingerprint", "-sha256"]);
    assert_eq!(fingerprint("tls.crt"), fingerprint("leaf.crt"));
    assert_eq!(out.read("tls.crt"), normalized(&pki.read("leaf.crt")));
    // The chain: leaf, then intermediate, byte for byte as openssl writes them.
    let expected_chain = [
        normalized(&pki.read("leaf.crt")),
        normalized(&pki.read("inter.crt")),
    ]
    .concat();
    assert_eq!(out.read("chain.pem"), expected_chain);
    assert_eq!(
        out.read("bundle.pem"),
        [key_pem.clone(), expected_chain].concat()
    );
    let verified = public(&[
        "verify",
        "-CAfile",
        "root.crt",
        "-untrusted",
        "chain.pem",
        "tls.crt",
    ]);
    assert_eq!(verified.trim(), "tls.crt: OK");
}

/// A PEM certificate with its base64 at 64 columns and LF line ends, as openssl writes it.
fn normalized(pem: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(pem)
        .replace("\r\n", "\n")
        .into_bytes()
}

fn secrets(reference: &str) -> Vec<String> {
    FILES
        .iter()
        .flat_map(|(file, format)| {
            let joiner = if reference.contains('?') { '&' } else { '?' };
            [
                "--secret".to_owned(),
                format!("{file}={reference}{joiner}format={format}"),
            ]
        })
        .collect()
}

#[cfg(feature = "azure")]
mod key_vault {
    use super::*;
    use testkit::azure::Workload;

    fn run(azure: &Workload, out: &Scratch, reference: &str) -> Run {
        azure
            .configure(testkit::sidecar!())
            .env("RUST_LOG", "trace")
            .arg("--output-dir")
            .arg(&out.path)
            .args(secrets(reference))
            .run()
    }

    #[test]
    fn pkcs12_and_pem_certificates_become_pem_key_and_chain() {
        let pki = Pki::generate();
        let azure = Workload::start();
        let stored = [
            (
                "kv-pfx",
                base64(&pki.pkcs12(Pkcs12::KeyVault)),
                "application/x-pkcs12",
            ),
            (
                "openssl-pfx",
                base64(&pki.pkcs12(Pkcs12::OpenSslModern)),
                "application/x-pkcs12",
            ),
            (
                "legacy-pfx",
                base64(&pki.pkcs12(Pkcs12::OpenSslLegacy)),
                "application/x-pkcs12",
            ),
            ("pem", pki.pem_bundle(), "application/x-pem-file"),
        ];
        for (name, value, content_type) in stored {
            azure.vault.put_certificate(name, &value, content_type);
            let out = Scratch::tmpfs("kv-certificate");
            let run = run(&azure, &out, &azure.reference(name));
            expect_converted(&pki, &out, &run);
        }
    }

    /// A truststore (certificates, no key) has no key to publish; random bytes are no
    /// certificate at all. Both exit 7 and publish nothing.
    #[test]
    fn what_is_not_a_certificate_with_its_key_exits_7() {
        let pki = Pki::generate();
        let azure = Workload::start();
        azure.vault.put_certificate(
            "truststore",
            &base64(&pki.pkcs12(Pkcs12::Truststore)),
            "application/x-pkcs12",
        );
        azure
            .vault
            .put("noise", &base64(b"\x30\x03\x02\x01\x03 not a PFX at all"));
        for (name, says) in [
            ("truststore", "holds no private key"),
            ("noise", "neither PEM nor a PKCS#12 file"),
        ] {
            let out = Scratch::tmpfs("kv-not-certificate");
            run(&azure, &out, &azure.reference(name))
                .expect_code(7)
                .expect_stderr("bad secret data")
                .expect_stderr(says);
            out.expect_empty();
        }
    }
}

#[cfg(feature = "aws")]
mod secrets_manager {
    use super::*;
    use testkit::localstack::Seeder;
    use testkit::unique;

    /// Key Vault's format kept in Secrets Manager: a base64 PFX as a string secret, and
    /// the PFX's bytes as a binary secret.
    #[test]
    fn a_pfx_in_secrets_manager_becomes_pem_key_and_chain() {
        let pki = Pki::generate();
        let mut seed = Seeder::connect();
        let pfx = pki.pkcs12(Pkcs12::KeyVault);
        let text = unique("pfx-text");
        seed.string(&text, &base64(&pfx));
        let binary = unique("pfx-binary");
        seed.binary(&binary, &pfx);
        let json = unique("pfx-json");
        seed.string(&json, &serde_json::json!({"pfx": base64(&pfx)}).to_string());
        for reference in [
            format!("aws://{text}"),
            format!("aws://{binary}"),
            format!("aws://{json}#pfx"),
        ] {
            let out = Scratch::tmpfs("sm-certificate");
            let (stem, key) = match reference.split_once('#') {
                Some((stem, key)) => (stem.to_owned(), format!("#{key}")),
                None => (reference.clone(), String::new()),
            };
            let args: Vec<String> = secrets(&stem)
                .into_iter()
                .map(|arg| match arg.starts_with("--") {
                    true => arg,
                    false => format!("{arg}{key}"),
                })
                .collect();
            let run = testkit::sidecar!()
                .env("RUST_LOG", "trace")
                .arg("--output-dir")
                .arg(&out.path)
                .args(args)
                .run();
            expect_converted(&pki, &out, &run);
        }
    }
}
