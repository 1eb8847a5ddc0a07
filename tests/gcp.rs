#![cfg(feature = "gcp")]
//! Google Secret Manager through the real binary and the official Google clients, against
//! the protocol fakes in `testkit/src/gcp.rs`: a GKE-shaped environment (the metadata server,
//! `GCE_METADATA_HOST`) and a federation-shaped one (`GOOGLE_APPLICATION_CREDENTIALS` naming
//! an `external_account` file: projected token file → STS → optional impersonation).

use std::path::PathBuf;

use testkit::gcp::answer;
use testkit::gcp::{
    CLOUD_PLATFORM, IAM_SCOPE, Iam, Metadata, SecretManager, Sts, external_account_file,
    pool_audience,
};
use testkit::http::Server;
use testkit::{SENTINEL, Scratch, Sidecar, fake_jwt};

const GKE_TOKEN: &str = "ya29.c.gke-metadata-token-5f0c2a9e";
const STS_TOKEN: &str = "ya29.d.sts-federated-token-81b7c4d2";
const IAM_TOKEN: &str = "ya29.c.impersonated-token-3e9a61f0";
const APP_SA: &str = "app@my-project.iam.gserviceaccount.com";
const DB: &str = "projects/my-project/secrets/db-password";

/// The binary with no Google identity but what a test adds: no ADC file, no metadata host.
fn sidecar(sm: &SecretManager, out: &Scratch) -> Sidecar {
    testkit::sidecar!()
        .env("HOME", "/nonexistent/home")
        .arg("--gcp-endpoint")
        .arg(sm.url())
        .arg("--output-dir")
        .arg(&out.path)
}

/// GKE with Workload Identity: the pod's metadata server hands out the token.
struct Gke {
    metadata: Metadata,
    sm: SecretManager,
}

fn gke() -> Gke {
    Gke {
        metadata: Metadata::start(GKE_TOKEN, APP_SA),
        sm: SecretManager::start(GKE_TOKEN),
    }
}

impl Gke {
    fn sidecar(&self, out: &Scratch) -> Sidecar {
        sidecar(&self.sm, out).env("GCE_METADATA_HOST", self.metadata.host())
    }
}

/// Workload identity federation off GKE: a projected service-account token in a file, an
/// `external_account` configuration naming it, STS, and optionally IAM impersonation.
struct Federation {
    sts: Sts,
    iam: Option<Iam>,
    sm: SecretManager,
    subject_token: String,
    token_file: PathBuf,
    config: PathBuf,
    audience: String,
    _files: Scratch,
}

fn federation(impersonate: bool) -> Federation {
    federation_answering_after(impersonate, std::time::Duration::ZERO)
}

/// Federation with an STS that sends each answer `delay` after the request.
fn federation_answering_after(impersonate: bool, delay: std::time::Duration) -> Federation {
    let files = Scratch::disk("gcp-federation");
    let audience = pool_audience("my-pool", "my-cluster");
    let subject_token = fake_jwt("system:serviceaccount:prod:app");
    let token_file = files.path.join("token");
    std::fs::write(&token_file, &subject_token).unwrap();
    let sts = Sts::answering_after(&audience, &subject_token, STS_TOKEN, delay);
    let iam = impersonate.then(|| Iam::start(STS_TOKEN, APP_SA, IAM_TOKEN));
    let final_token = if impersonate { IAM_TOKEN } else { STS_TOKEN };
    let config = files.path.join("credential-configuration.json");
    std::fs::write(
        &config,
        external_account_file(
            &audience,
            &sts.token_url(),
            &token_file,
            iam.as_ref().map(|iam| iam.impersonation_url()).as_deref(),
        ),
    )
    .unwrap();
    Federation {
        sts,
        iam,
        sm: SecretManager::start(final_token),
        subject_token,
        token_file,
        config,
        audience,
        _files: files,
    }
}

impl Federation {
    fn sidecar(&self, out: &Scratch) -> Sidecar {
        sidecar(&self.sm, out).env("GOOGLE_APPLICATION_CREDENTIALS", &self.config)
    }
}

/// The request line without the query the client adds (`$alt=json;enum-encoding=int`).
fn route(request: &testkit::http::Request) -> String {
    let target = request.target();
    let path = target.split('?').next().unwrap_or(target);
    format!("{} {path}", request.method())
}

fn bearer(request: &testkit::http::Request) -> Option<&str> {
    request.header("authorization")?.strip_prefix("Bearer ")
}

/// What the client asks for, without credentials, to open a connection while the token
/// is on its way (issue 19); no secret can have this name.
const WARM_UP: &str = "GET /v1/projects/-/secrets/-/versions/-:access";

/// The requests that read secrets, the connection warm-ups left out (whether they happen
/// depends on whether the token arrives before the clients are ready, which is a race).
fn reads(sm: &SecretManager) -> Vec<testkit::http::Request> {
    let requests = sm.requests();
    for request in requests.iter().filter(|r| route(r) == WARM_UP) {
        assert_eq!(
            request.header("authorization"),
            None,
            "a warm-up carried credentials"
        );
    }
    requests
        .into_iter()
        .filter(|r| route(r) != WARM_UP)
        .collect()
}

/// Runs `sidecar` (publishing into `out`) for one secret and checks that Secret Manager saw one warm-up without
/// credentials, then the read with `token`.
fn reads_after_one_warm_up(sidecar: Sidecar, out: &Scratch, sm: &SecretManager, token: &str) {
    sm.add(DB, b"s3cr3t-early");
    sidecar
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(0);
    assert_eq!(out.read("db-password"), b"s3cr3t-early");

    let requests = sm.requests();
    let routes: Vec<String> = requests.iter().map(route).collect();
    assert_eq!(
        routes,
        [
            WARM_UP,
            "GET /v1/projects/my-project/secrets/db-password/versions/latest:access"
        ],
        "one warm-up, then the read"
    );
    assert_eq!(requests[0].header("authorization"), None);
    assert_eq!(bearer(&requests[1]), Some(token));
}

/// Issue 19: on GKE too, the client opens its Secret Manager connection while the
/// metadata server is still answering for the token (the client's universe-domain question
/// no longer waits for it), with a request that carries no credentials; the read follows
/// with the metadata server's token.
#[test]
fn gke_metadata_opens_the_secret_manager_connection_while_the_token_comes() {
    let metadata =
        Metadata::answering_after(GKE_TOKEN, APP_SA, std::time::Duration::from_millis(700));
    let env = Gke {
        metadata,
        sm: SecretManager::start(GKE_TOKEN),
    };
    let out = Scratch::tmpfs("gke-warm");
    reads_after_one_warm_up(env.sidecar(&out), &out, &env.sm, GKE_TOKEN);
}

/// The client no longer waits for the credentials' universe domain before it is built
/// (above); the run still refuses credentials of another universe than the client's, as
/// google-cloud-gax would, before any secret is asked for with their token.
#[test]
fn credentials_of_another_universe_domain_are_refused_before_any_read() {
    let env = gke();
    env.sm.add(DB, b"never-read");
    let out = Scratch::tmpfs("gke-universe");
    env.sidecar(&out)
        .env("GOOGLE_CLOUD_UNIVERSE_DOMAIN", "universe.example")
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(2)
        .expect_stderr("universe domain 'googleapis.com'")
        .expect_stderr("expects 'universe.example'")
        .expect_no_leak(GKE_TOKEN.as_bytes());
    assert!(reads(&env.sm).is_empty(), "no secret is asked for");
    out.expect_empty();
}

#[test]
fn gke_metadata_identity_publishes_a_secret() {
    let env = gke();
    env.sm.add(DB, b"s3cr3t-from-gke");
    let out = Scratch::tmpfs("gcp-gke");
    let run = env
        .sidecar(&out)
        .args(["--secret", "db=gcp://my-project/db-password"])
        .run();
    run.expect_code(0)
        .expect_stderr("GCP identity loaded")
        .expect_stderr("source=metadata-server")
        .expect_stderr(&format!("account={APP_SA}"))
        .expect_stderr("version=1");
    assert_eq!(out.read("db"), b"s3cr3t-from-gke");
    assert_eq!(out.mode("db"), 0o440);

    let metadata = env.metadata.requests();
    assert!(
        metadata.iter().any(|r| r
            .target()
            .starts_with("/computeMetadata/v1/instance/service-accounts/default/token")),
        "{metadata:#?}"
    );
    assert!(
        metadata
            .iter()
            .all(|r| r.header("metadata-flavor") == Some("Google")),
        "every metadata request carries Metadata-Flavor: {metadata:#?}"
    );

    let requests = reads(&env.sm);
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(
        route(&requests[0]),
        "GET /v1/projects/my-project/secrets/db-password/versions/latest:access"
    );
    assert_eq!(bearer(&requests[0]), Some(GKE_TOKEN));
    assert_eq!(
        requests[0].header("user-agent"),
        Some(concat!("secret-sidecar/", env!("CARGO_PKG_VERSION")))
    );
}

#[test]
fn the_metadata_fake_demands_the_flavor_header_like_the_real_one() {
    use std::io::{Read, Write};
    let env = gke();
    let ask = |extra: &str| {
        let mut stream = std::net::TcpStream::connect(env.metadata.host()).unwrap();
        write!(
            stream,
            "GET /computeMetadata/v1/instance/service-accounts/default/token HTTP/1.1\r\n\
             host: metadata.google.internal\r\n{extra}connection: close\r\n\r\n"
        )
        .unwrap();
        // The fake keeps connections alive; closing our side ends the exchange.
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    };
    let refused = ask("");
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    let served = ask("metadata-flavor: Google\r\n");
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    assert!(served.contains("metadata-flavor: Google"), "{served}");
}

#[test]
fn versions_aliases_and_full_resource_names_select_versions() {
    let env = gke();
    env.sm.add(DB, b"one");
    env.sm.add(DB, b"two");
    env.sm.add(DB, b"three");
    env.sm.alias(DB, "stable", 2);
    let out = Scratch::tmpfs("gcp-versions");
    env.sidecar(&out)
        .args([
            "--secret",
            "latest=gcp://my-project/db-password",
            "--secret",
            "first=gcp://my-project/db-password?version=1",
            "--secret",
            "alias=gcp://my-project/db-password?version=stable",
            "--secret",
            "full=gcp://projects/my-project/secrets/db-password/versions/1",
            "--secret",
            "full-latest=gcp://projects/my-project/secrets/db-password",
        ])
        .run()
        .expect_code(0);
    assert_eq!(out.read("latest"), b"three");
    assert_eq!(out.read("first"), b"one");
    assert_eq!(out.read("alias"), b"two");
    assert_eq!(out.read("full"), b"one");
    assert_eq!(out.read("full-latest"), b"three");
    let manifest = String::from_utf8(out.read("..manifest.json")).unwrap();
    assert!(manifest.contains(r#""version": "2""#), "{manifest}");
}

#[test]
fn regional_secrets_are_read_by_their_regional_name() {
    let env = gke();
    env.sm.add(
        "projects/my-project/locations/europe-west1/secrets/db-password",
        b"regional",
    );
    let out = Scratch::tmpfs("gcp-regional");
    env.sidecar(&out)
        .args([
            "--secret",
            "a=gcp://my-project/db-password?location=europe-west1",
            "--secret",
            "b=gcp://projects/my-project/locations/europe-west1/secrets/db-password/versions/1",
        ])
        .run()
        .expect_code(0);
    assert_eq!(out.read("a"), b"regional");
    assert_eq!(out.read("b"), b"regional");
    let routes: Vec<String> = env.sm.requests().iter().map(route).collect();
    assert!(
        routes.contains(
            &"GET /v1/projects/my-project/locations/europe-west1/secrets/db-password/versions/latest:access"
                .to_owned()
        ),
        "{routes:#?}"
    );
}

/// Missing secrets and versions are rows of tests/conformance.rs; an optional one is
/// skipped.
#[test]
fn a_missing_optional_secret_is_skipped() {
    let env = gke();
    env.sm.add(DB, b"present");
    let out = Scratch::tmpfs("gcp-missing");
    env.sidecar(&out)
        .args([
            "--secret",
            "gcp://my-project/db-password",
            "--secret",
            "gcp://my-project/nope?optional",
        ])
        .run()
        .expect_code(0);
    assert_eq!(out.visible(), ["db-password"]);
}

#[test]
fn throttling_that_outlasts_the_retries_exits_5() {
    let env = gke();
    env.sm.add(DB, b"never-served");
    env.sm.throttle(100, None);
    let out = Scratch::tmpfs("gcp-exhausted");
    env.sidecar(&out)
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(5)
        .expect_stderr("RESOURCE_EXHAUSTED")
        .expect_stderr("after 3 attempts");
    assert_eq!(reads(&env.sm).len(), 3);
    out.expect_empty();
}

#[test]
fn a_corrupted_checksum_exits_7_and_publishes_nothing() {
    let env = gke();
    env.sm.add(DB, b"intact");
    env.sm.add(
        "projects/my-project/secrets/flipped",
        b"bit-flipped-in-transit",
    );
    env.sm.corrupt("projects/my-project/secrets/flipped");
    let out = Scratch::tmpfs("gcp-crc");
    env.sidecar(&out)
        .args([
            "--secret",
            "gcp://my-project/db-password",
            "--secret",
            "gcp://my-project/flipped",
        ])
        .run()
        .expect_code(7)
        .expect_stderr("dataCrc32c");
    out.expect_empty();
}

#[test]
fn federation_exchanges_the_projected_token_at_sts() {
    let env = federation(false);
    env.sm.add(DB, b"s3cr3t-federated");
    let out = Scratch::tmpfs("gcp-federation");
    env.sidecar(&out)
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(0)
        .expect_stderr("source=external-account")
        .expect_stderr(&format!("subject_token=file:{}", env.token_file.display()))
        .expect_stderr(&env.audience);
    assert_eq!(out.read("db-password"), b"s3cr3t-federated");

    let exchanges = env.sts.requests();
    assert_eq!(exchanges.len(), 1, "one exchange per run: {exchanges:#?}");
    let form = testkit::http::form(&exchanges[0].body);
    assert_eq!(exchanges[0].line, "POST /v1/token HTTP/1.1");
    assert_eq!(
        form["subject_token"],
        std::fs::read_to_string(&env.token_file).unwrap(),
        "STS received the projected token file's content"
    );
    assert_eq!(form["subject_token_type"], testkit::gcp::JWT_TOKEN_TYPE);
    assert_eq!(form["grant_type"], testkit::gcp::TOKEN_EXCHANGE);
    assert_eq!(form["audience"], env.audience);
    assert_eq!(form["scope"], CLOUD_PLATFORM);

    let reads = reads(&env.sm);
    assert_eq!(reads.len(), 1);
    assert_eq!(
        bearer(&reads[0]),
        Some(STS_TOKEN),
        "Secret Manager got the STS token"
    );
}

#[test]
fn federation_with_impersonation_uses_the_service_accounts_token() {
    let env = federation(true);
    env.sm.add(DB, b"s3cr3t-impersonated");
    let out = Scratch::tmpfs("gcp-impersonation");
    env.sidecar(&out)
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(0)
        .expect_stderr(&format!("impersonating={APP_SA}"));
    assert_eq!(out.read("db-password"), b"s3cr3t-impersonated");

    let exchange = &env.sts.requests()[0];
    let form = testkit::http::form(&exchange.body);
    assert_eq!(form["subject_token"], env.subject_token);
    // The STS token only needs to call IAM; the final token carries the user's scope.
    assert_eq!(form["scope"], IAM_SCOPE);

    let iam = env.iam.as_ref().unwrap().requests();
    assert_eq!(iam.len(), 1, "{iam:#?}");
    assert_eq!(bearer(&iam[0]), Some(STS_TOKEN));
    let body: serde_json::Value = serde_json::from_slice(&iam[0].body).unwrap();
    assert_eq!(body["scope"], serde_json::json!([CLOUD_PLATFORM]));

    assert_eq!(bearer(&reads(&env.sm)[0]), Some(IAM_TOKEN));
}

/// Issue 19: while the STS exchange is in flight, the client opens its Secret Manager
/// connection with a request that carries no credentials and names no real secret; the
/// read follows on that connection with the STS token.
#[test]
fn federation_opens_the_secret_manager_connection_while_sts_answers() {
    let env = federation_answering_after(false, std::time::Duration::from_millis(700));
    let out = Scratch::tmpfs("gcp-warm");
    reads_after_one_warm_up(env.sidecar(&out), &out, &env.sm, STS_TOKEN);
}

#[test]
fn federation_with_a_url_sourced_subject_token() {
    let audience = pool_audience("my-pool", "oidc");
    let subject = fake_jwt("system:serviceaccount:prod:app");
    let served = subject.clone();
    let token_source = Server::with_handler(move |request| {
        if request.header("x-token-source-auth") != Some("local") {
            return answer(401, "text/plain", "");
        }
        answer(
            200,
            "application/json",
            serde_json::json!({"id_token": served}).to_string(),
        )
    });
    let sts = Sts::start(&audience, &subject, STS_TOKEN);
    let sm = SecretManager::start(STS_TOKEN);
    sm.add(DB, b"from-a-url-token");
    let files = Scratch::disk("gcp-url-source");
    let config = files.path.join("config.json");
    let body = serde_json::json!({
        "type": "external_account",
        "audience": audience,
        "subject_token_type": testkit::gcp::JWT_TOKEN_TYPE,
        "token_url": sts.token_url(),
        "credential_source": {
            "url": format!("{}/token", token_source.url),
            "headers": {"x-token-source-auth": "local"},
            "format": {"type": "json", "subject_token_field_name": "id_token"},
        },
    });
    std::fs::write(&config, body.to_string()).unwrap();
    let out = Scratch::tmpfs("gcp-url-source");
    sidecar(&sm, &out)
        .env("GOOGLE_APPLICATION_CREDENTIALS", &config)
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(0)
        .expect_stderr("subject_token=url:");
    assert_eq!(out.read("db-password"), b"from-a-url-token");
    assert_eq!(
        testkit::http::form(&sts.requests()[0].body)["subject_token"],
        subject
    );
}

#[test]
fn a_rejected_token_exchange_exits_3_without_echoing_the_token() {
    let env = federation(false);
    // The projected token is no longer the one the pool trusts.
    let stale = fake_jwt("system:serviceaccount:prod:someone-else");
    std::fs::write(&env.token_file, &stale).unwrap();
    let out = Scratch::tmpfs("gcp-sts-rejected");
    env.sidecar(&out)
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(3)
        .expect_stderr("authentication failed")
        .expect_stderr("invalid_grant")
        .expect_no_leak(stale.as_bytes());
    assert!(reads(&env.sm).is_empty(), "no secret is asked for");
    out.expect_empty();
}

#[test]
fn an_error_body_that_echoes_a_token_is_scrubbed() {
    let audience = pool_audience("my-pool", "echo");
    let subject = fake_jwt("system:serviceaccount:prod:app");
    // A misbehaving proxy in front of STS that quotes the request back.
    let echo = Server::with_handler(|request| {
        answer(
            400,
            "application/json",
            serde_json::json!({
            "error": "invalid_request",
            "error_description": format!(
                "bad request: {}",
                testkit::http::form(&request.body)["subject_token"]
            ),
            })
            .to_string(),
        )
    });
    let files = Scratch::disk("gcp-echo");
    let token_file = files.path.join("token");
    std::fs::write(&token_file, &subject).unwrap();
    let config = files.path.join("config.json");
    std::fs::write(
        &config,
        external_account_file(
            &audience,
            &format!("{}/v1/token", echo.url),
            &token_file,
            None,
        ),
    )
    .unwrap();
    let sm = SecretManager::start(STS_TOKEN);
    let out = Scratch::tmpfs("gcp-echo");
    sidecar(&sm, &out)
        .env("GOOGLE_APPLICATION_CREDENTIALS", &config)
        .env("RUST_LOG", "trace")
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(3)
        .expect_stderr("<redacted token>")
        .expect_no_leak(subject.as_bytes());
}

#[test]
fn secrets_and_tokens_never_reach_any_output_even_at_trace_level() {
    let json_secret = format!(r#"{{"password":"{SENTINEL}"}}"#);
    let binary_secret = [b"\x00\xff".as_slice(), SENTINEL.as_bytes()].concat();

    // GKE-shaped.
    let env = gke();
    env.sm.add(DB, SENTINEL.as_bytes());
    env.sm
        .add("projects/my-project/secrets/json", json_secret.as_bytes());
    env.sm
        .add("projects/my-project/secrets/binary", &binary_secret);
    let out = Scratch::tmpfs("gcp-leak-gke");
    env.sidecar(&out)
        .env("RUST_LOG", "trace")
        .args([
            "--secret",
            "gcp://my-project/db-password",
            "--secret",
            "gcp://my-project/json#password",
            "--secret",
            "gcp://my-project/binary",
        ])
        .run()
        .expect_code(0)
        .expect_no_leak(SENTINEL.as_bytes())
        .expect_no_leak(&binary_secret)
        .expect_no_leak(GKE_TOKEN.as_bytes());
    assert_eq!(out.read("json_password"), SENTINEL.as_bytes());

    // Federation-shaped, with impersonation: subject token, STS token and final token.
    let env = federation(true);
    env.sm.add(DB, SENTINEL.as_bytes());
    let out = Scratch::tmpfs("gcp-leak-federation");
    env.sidecar(&out)
        .env("RUST_LOG", "trace")
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(0)
        .expect_no_leak(SENTINEL.as_bytes())
        .expect_no_leak(env.subject_token.as_bytes())
        .expect_no_leak(STS_TOKEN.as_bytes())
        .expect_no_leak(IAM_TOKEN.as_bytes());

    // And a failure at trace level: denied, with the token still unlogged.
    let env = gke();
    env.sm.add(DB, SENTINEL.as_bytes());
    env.sm.deny(DB);
    env.sidecar(&Scratch::tmpfs("gcp-leak-denied"))
        .env("RUST_LOG", "trace")
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(4)
        .expect_no_leak(GKE_TOKEN.as_bytes())
        .expect_no_leak(SENTINEL.as_bytes());
}

#[test]
fn a_metadata_server_without_a_service_account_is_an_identity_failure() {
    // GKE Workload Identity with a KSA that has no binding: the token endpoint says 404.
    let metadata = Server::with_handler(|_| {
        answer(404, "application/text", "Not Found").header("metadata-flavor", "Google")
    });
    let sm = SecretManager::start(GKE_TOKEN);
    let out = Scratch::tmpfs("gcp-no-sa");
    sidecar(&sm, &out)
        .env(
            "GCE_METADATA_HOST",
            metadata.url.trim_start_matches("http://"),
        )
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(3)
        .expect_stderr("metadata server at");
    assert!(reads(&sm).is_empty(), "no secret is asked for");
}

#[test]
fn no_google_credentials_at_all_is_exit_3() {
    let sm = SecretManager::start(GKE_TOKEN);
    let out = Scratch::tmpfs("gcp-no-creds");
    sidecar(&sm, &out)
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(3)
        .expect_stderr("GOOGLE_APPLICATION_CREDENTIALS");

    sidecar(&sm, &out)
        .env(
            "GOOGLE_APPLICATION_CREDENTIALS",
            "/nonexistent/credentials.json",
        )
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(3)
        .expect_stderr("/nonexistent/credentials.json");
    assert!(reads(&sm).is_empty(), "no secret is asked for");
}

#[test]
fn unauthenticated_at_secret_manager_is_exit_3() {
    let metadata = Metadata::start("ya29.a-token-secret-manager-rejects", APP_SA);
    let sm = SecretManager::start(GKE_TOKEN);
    let out = Scratch::tmpfs("gcp-unauthenticated");
    sidecar(&sm, &out)
        .env("GCE_METADATA_HOST", metadata.host())
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(3)
        .expect_stderr("UNAUTHENTICATED");
}

#[test]
fn unsafe_or_unsupported_settings_are_usage_errors() {
    let env = gke();
    env.sm.add(DB, b"x");
    let out = Scratch::tmpfs("gcp-usage");
    env.sidecar(&out)
        .env("GOOGLE_CLOUD_RUST_LOGGING", "true")
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(2)
        .expect_stderr("GOOGLE_CLOUD_RUST_LOGGING");
    env.sidecar(&out)
        .args(["--ca-file", "/etc/ssl/certs/ca-certificates.crt"])
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(2)
        .expect_stderr("SSL_CERT_FILE");
    testkit::sidecar!()
        .env("GCE_METADATA_HOST", env.metadata.host())
        .args([
            "--gcp-endpoint",
            "http://secretmanager.example.com",
            "--output-dir",
        ])
        .arg(&out.path)
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(2)
        .expect_stderr("https");
    testkit::sidecar!()
        .args(["--output-dir"])
        .arg(&out.path)
        .args(["--secret", "gcp://My Project/db"])
        .run()
        .expect_code(2);
    assert!(env.sm.requests().is_empty());
    out.expect_empty();
}

#[test]
fn the_fakes_checksum_is_standard_crc32c() {
    assert_eq!(testkit::gcp::crc32c(b"123456789"), 0xE306_9283);
}

#[test]
fn a_service_account_key_works_and_is_logged_as_discouraged() {
    use base64::Engine as _;
    let files = Scratch::disk("gcp-sa-key");
    let pem_path = files.path.join("key.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem_path)
        .output()
        .expect("this test makes a throwaway RSA key with the openssl command");
    assert!(made.status.success(), "{made:?}");
    let pem = std::fs::read_to_string(&pem_path).unwrap();
    let key = files.path.join("key.json");
    std::fs::write(
        &key,
        serde_json::json!({
            "type": "service_account",
            "project_id": "my-project",
            "private_key_id": "0123456789abcdef",
            "private_key": pem,
            "client_email": APP_SA,
            "client_id": "100000000000000000001",
            "token_uri": "https://oauth2.googleapis.com/token",
        })
        .to_string(),
    )
    .unwrap();
    // The auth crate signs a self-signed JWT with the key; Secret Manager sees it as the
    // bearer token. The fake checks its claims (not the signature).
    let sm = SecretManager::accepting(|bearer| {
        let Some(claims) = bearer.split('.').nth(1) else {
            return false;
        };
        let Ok(claims) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims) else {
            return false;
        };
        let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap_or_default();
        claims["iss"] == APP_SA && claims["sub"] == APP_SA && claims["exp"].is_number()
    });
    sm.add(DB, b"from-a-key");
    let out = Scratch::tmpfs("gcp-sa-key");
    let middle_of_the_key = pem.lines().nth(5).unwrap().to_owned();
    sidecar(&sm, &out)
        .env("GOOGLE_APPLICATION_CREDENTIALS", &key)
        .env("RUST_LOG", "trace")
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(0)
        .expect_stderr("source=service-account-key")
        .expect_stderr(&format!("account={APP_SA}"))
        .expect_stderr("long-lived credential")
        .expect_no_leak(middle_of_the_key.as_bytes());
    assert_eq!(out.read("db-password"), b"from-a-key");
}

#[test]
fn an_https_endpoint_is_trusted_through_ssl_cert_file() {
    let metadata = Metadata::start(GKE_TOKEN, APP_SA);
    let sm = SecretManager::https(GKE_TOKEN);
    sm.add(DB, b"over-tls");
    let out = Scratch::tmpfs("gcp-https");
    // Not trusted: the system roots do not know the test CA.
    sidecar(&sm, &out)
        .env("GCE_METADATA_HOST", metadata.host())
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(3)
        .expect_stderr("TLS certificate was refused");
    out.expect_empty();
    assert!(reads(&sm).is_empty(), "no secret is asked for");

    // SSL_CERT_FILE replaces the roots for the Google clients, as docs/gcp.md says.
    sidecar(&sm, &out)
        .env("GCE_METADATA_HOST", metadata.host())
        .env("SSL_CERT_FILE", &testkit::tls::ca().pem_file)
        .args(["--secret", "gcp://my-project/db-password"])
        .run()
        .expect_code(0);
    assert_eq!(out.read("db-password"), b"over-tls");
    assert_eq!(bearer(&reads(&sm)[0]), Some(GKE_TOKEN));
}
