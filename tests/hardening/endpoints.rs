//! Issue 14, low items on endpoints: `AWS_ENDPOINT_URL*` in plain http only to this
//! machine unless allowed; a proxy never sees a request to loopback (the OAuth2 one
//! carries the client secret); the Google metadata e-mail lookup follows no redirect.

#[cfg(feature = "aws")]
mod aws {
    use testkit::http::{Response, Server};
    use testkit::oauth2::{Client, IdP};
    use testkit::secretsmanager::SecretsManager;
    use testkit::sts::Sts;
    use testkit::{SENTINEL, Scratch};

    /// A plain-http endpoint on another host is a usage error (exit 2) before anything is
    /// asked, for each variable; `--aws-allow-plain-http` lets it through, and the run then
    /// fails as the network does (the host does not exist).
    #[test]
    fn plain_http_aws_endpoints_to_other_hosts_need_the_flag() {
        let out = Scratch::tmpfs("plain-http");
        for variable in [
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_SECRETS_MANAGER",
            "AWS_ENDPOINT_URL_STS",
        ] {
            let run = |allow: &[&str]| {
                testkit::sidecar!()
                    .env(variable, "http://example.invalid:4566")
                    .args(["--secret", "db=aws://db", "--timeout", "3s"])
                    .args(allow)
                    .arg("--output-dir")
                    .arg(&out.path)
                    .run()
            };
            run(&[])
                .expect_code(2)
                .expect_stderr(variable)
                .expect_stderr("--aws-allow-plain-http");
            if variable != "AWS_ENDPOINT_URL_STS" {
                // Static keys never ask STS, so only the two that serve the read fail.
                let allowed = run(&["--aws-allow-plain-http"]);
                assert!(![0, 2].contains(&allowed.code), "{}", allowed.stderr);
            }
            out.expect_empty();
        }
    }

    /// Every proxy variable names a listener that records what reaches it. The token
    /// request to the loopback IdP (plain http, the client secret in it), the STS
    /// exchange and the secret read all go direct, and the run succeeds.
    #[test]
    fn proxies_never_see_requests_to_loopback() {
        let proxy = Server::start(vec![Response::json(502, "proxy: no upstream")]);
        let idp = IdP::start(Client {
            id: "proxied-client".to_owned(),
            secret: "proxied-client-secret-never-log-me".to_owned(),
            scope: None,
            lifetime: 3600,
        });
        let sts = Sts::start();
        let store = SecretsManager::start();
        store.put("db", SENTINEL);
        let files = Scratch::disk("proxy-secret");
        let secret = files.path.join("client-secret");
        std::fs::write(&secret, "proxied-client-secret-never-log-me").unwrap();
        let out = Scratch::tmpfs("proxy");
        let mut sidecar = store
            .configure(testkit::sidecar!())
            .assuming_role(sts.url(), "arn:aws:iam::000000000000:role/app");
        for variable in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy"] {
            sidecar = sidecar.env(variable, &proxy.url);
        }
        sidecar
            .args(["--aws-token-source", "oauth2-client-credentials"])
            .args(idp.client_args(&secret))
            .args([
                "--secret",
                "db=aws://db",
                "--timeout",
                "10s",
                "--output-dir",
            ])
            .arg(&out.path)
            .run()
            .expect_code(0);
        assert_eq!(out.read("db"), SENTINEL.as_bytes());
        let proxied: Vec<String> = proxy.requests().iter().map(|r| r.line.clone()).collect();
        assert!(proxied.is_empty(), "the proxy saw {proxied:?}");
        assert_eq!(idp.issued().len(), 1);
    }
}

/// GKE: the metadata server answers the e-mail lookup (for the log line) with a redirect to
/// another server. It is not followed, and the run goes on without the name.
#[cfg(feature = "gcp")]
#[test]
fn the_metadata_email_lookup_follows_no_redirect() {
    use testkit::Scratch;
    use testkit::gcp::{Metadata, SecretManager};
    use testkit::http::{Response, Server};

    const TOKEN: &str = "ya29.c.redirect-test-token";
    let elsewhere = Server::start(vec![Response::json(200, "someone@elsewhere.example")]);
    let redirect = Response::json(302, "").header(
        "location",
        format!(
            "{}/computeMetadata/v1/instance/service-accounts/default/email",
            elsewhere.url
        ),
    );
    let metadata = Metadata::answering(
        TOKEN,
        "app@my-project.iam.gserviceaccount.com",
        vec![("/email", redirect)],
    );
    let sm = SecretManager::start(TOKEN);
    sm.add("projects/my-project/secrets/db", b"redirected");
    let out = Scratch::tmpfs("metadata-redirect");
    let run = testkit::sidecar!()
        .env("HOME", "/nonexistent/home")
        .env("GCE_METADATA_HOST", metadata.host())
        .args(["--gcp-endpoint", &sm.url()])
        .args(["--secret", "db=gcp://my-project/db", "--output-dir"])
        .arg(&out.path)
        .run();
    run.expect_code(0);
    assert_eq!(out.read("db"), b"redirected");
    assert!(!run.stderr.contains("elsewhere"), "{}", run.stderr);
    let asked = metadata
        .requests()
        .iter()
        .filter(|r| r.target().ends_with("/email"))
        .count();
    assert!(asked >= 1, "the e-mail was never looked up");
    assert_eq!(elsewhere.requests().len(), 0, "the redirect was followed");
}
