#![cfg(feature = "aws")]
//! Cross-cloud identity through the real binary: a web-identity token obtained in-process
//! (a Google ID token from the metadata server, or an OAuth2 client-credentials access
//! token from an identity provider) is exchanged with STS AssumeRoleWithWebIdentity, and
//! only the credentials STS returns can read the secret: STS hands out a 12-digit access
//! key id, which LocalStack takes as the account, and the secret exists in that account
//! alone. Then `token` mode, which keeps such a token fresh in a file.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
#[cfg(feature = "gcp")]
use testkit::gcp::Metadata;
use testkit::oauth2::{Client, IdP};
use testkit::sts::{SESSION_TOKEN, Sts};
use testkit::{SENTINEL, Scratch, Sidecar, unique};
#[cfg(feature = "gcp")]
use testkit::{jwt_subject, sts::SECRET_ACCESS_KEY};

const AUDIENCE: &str = "sts.amazonaws.com";
#[cfg(feature = "gcp")]
const GKE_SA: &str = "app@my-project.iam.gserviceaccount.com";
const CLIENT_ID: &str = "3f9c2a7e-secret-sidecar-aws";
const CLIENT_SECRET: &str = "idp-client-secret-4e1d-never-log-me";
const SCOPE: &str = "api://secret-sidecar-aws/.default";

/// A fresh 12-digit account, so the secret seeded in it is visible only to its keys.
fn account() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n =
        u64::from(std::process::id()) * 1000 + u64::from(COUNTER.fetch_add(1, Ordering::SeqCst));
    format!("7{:011}", n % 100_000_000_000)
}

/// Creates `name` = `value` in `account`'s Secrets Manager in LocalStack.
fn seed(account: &str, name: &str, value: &str) {
    testkit::localstack::Seeder::in_account(account).string(name, value);
}

/// The binary with no AWS credentials of its own: only the exchanged ones can work.
fn sidecar(sts: &Sts, account: &str) -> Sidecar {
    testkit::sidecar!()
        .assuming_role(
            sts.url(),
            format!("arn:aws:iam::{account}:role/secret-sidecar"),
        )
        .env("AWS_ROLE_SESSION_NAME", "identity-test")
        .env("RUST_LOG", "trace")
}

fn idp(lifetime: u64) -> IdP {
    IdP::start(Client {
        id: CLIENT_ID.to_owned(),
        secret: CLIENT_SECRET.to_owned(),
        scope: Some(SCOPE.to_owned()),
        lifetime,
    })
}

/// The client secret as a mounted Secret holds it, trailing newline included.
fn secret_file(dir: &Scratch, secret: &str) -> PathBuf {
    let path = dir.path.join("client-secret");
    fs::write(&path, format!("{secret}\n")).unwrap();
    path
}

#[cfg(feature = "gcp")]
#[test]
fn a_gke_pod_reads_an_aws_secret_with_its_google_id_token() {
    let account = account();
    let name = unique("gke-to-aws");
    seed(&account, &name, SENTINEL);
    let metadata = Metadata::start("ya29.gke-access-token-never-log-me", GKE_SA);
    let sts = Sts::issuing(&account);
    let out = Scratch::tmpfs("gke-to-aws");

    let run = sidecar(&sts, &account)
        .env("GCE_METADATA_HOST", metadata.host())
        .args(["--aws-token-source", "gcp-metadata"])
        .args(["--aws-token-audience", AUDIENCE])
        .args(["--secret", &format!("db=aws://{name}")])
        .arg("--output-dir")
        .arg(&out.path)
        .run();
    run.expect_code(0)
        .expect_stderr("web-identity token obtained")
        .expect_stderr("source=gcp-metadata");
    assert_eq!(out.read("db"), SENTINEL.as_bytes());

    // STS received exactly one token, the metadata server's ID token for the audience.
    let tokens = sts.tokens();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(jwt_subject(&tokens[0]), format!("{GKE_SA}|{AUDIENCE}"));
    let asked: Vec<String> = metadata
        .requests()
        .iter()
        .map(|r| r.target().to_owned())
        .filter(|t| t.contains("/service-accounts/default/identity"))
        .collect();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0].contains("audience=sts.amazonaws.com"), "{asked:?}");
    let form = testkit::http::form(&sts.server.requests()[0].body);
    assert_eq!(
        form["RoleArn"],
        format!("arn:aws:iam::{account}:role/secret-sidecar")
    );
    assert_eq!(form["RoleSessionName"], "identity-test");
    for never in [SENTINEL, &tokens[0], SESSION_TOKEN, SECRET_ACCESS_KEY] {
        run.expect_no_leak(never.as_bytes());
    }
}

#[test]
fn an_external_idp_token_reaches_aws_with_either_client_authentication() {
    for method in ["basic", "body"] {
        let account = account();
        let name = unique("idp-to-aws");
        seed(&account, &name, SENTINEL);
        let idp = idp(3600);
        let sts = Sts::issuing(&account);
        let out = Scratch::tmpfs("idp-to-aws");
        let files = Scratch::disk("idp-secret");
        let secret = secret_file(&files, CLIENT_SECRET);

        let run = sidecar(&sts, &account)
            .args(["--aws-token-source", "oauth2-client-credentials"])
            .args(idp.client_args(&secret))
            .args(["--oauth2-client-auth", method])
            .args(["--secret", &format!("db=aws://{name}")])
            .arg("--output-dir")
            .arg(&out.path)
            .run();
        run.expect_code(0);
        assert_eq!(out.read("db"), SENTINEL.as_bytes(), "{method}");

        let issued = idp.issued();
        assert_eq!(issued.len(), 1, "{method}");
        assert_eq!(
            sts.tokens(),
            issued,
            "{method}: STS must get the IdP's token"
        );
        let request = &idp.requests()[0];
        let form = testkit::http::form(&request.body);
        assert_eq!(form["grant_type"], "client_credentials");
        assert_eq!(form["scope"], SCOPE);
        match method {
            "basic" => {
                assert!(request.header("authorization").is_some());
                assert!(!form.contains_key("client_secret"));
            }
            _ => {
                assert!(request.header("authorization").is_none());
                assert_eq!(form["client_id"], CLIENT_ID);
            }
        }
        for never in [SENTINEL, CLIENT_SECRET, &issued[0], SESSION_TOKEN] {
            run.expect_no_leak(never.as_bytes());
        }
    }
}

#[test]
fn identity_provider_refusals_and_outages_are_told_apart() {
    let account = account();
    let name = unique("idp-fail");
    seed(&account, &name, SENTINEL);
    let files = Scratch::disk("idp-fail");
    let wrong = "wrong-client-secret-5b2e-never-log-me";

    // A wrong secret: the IdP's invalid_client, exit 3, STS never asked.
    let idp_ok = idp(3600);
    let sts = Sts::issuing(&account);
    let out = Scratch::tmpfs("idp-fail");
    let run = sidecar(&sts, &account)
        .args(["--aws-token-source", "oauth2-client-credentials"])
        .args(idp_ok.client_args(&secret_file(&files, wrong)))
        .args(["--secret", &format!("aws://{name}")])
        .arg("--output-dir")
        .arg(&out.path)
        .run();
    run.expect_code(3)
        .expect_stderr("invalid_client (Client authentication failed.)")
        .expect_no_leak(wrong.as_bytes())
        .expect_no_leak(SENTINEL.as_bytes());
    assert_eq!(idp_ok.requests().len(), 1, "a refusal is not retried");
    assert!(sts.tokens().is_empty());
    out.expect_empty();

    // An outage: 503 three times (the retry policy), then exit 5.
    let idp_down = idp(3600);
    idp_down.set_down(true);
    let run = sidecar(&sts, &account)
        .args(["--aws-token-source", "oauth2-client-credentials"])
        .args(idp_down.client_args(&secret_file(&files, CLIENT_SECRET)))
        .args(["--secret", &format!("aws://{name}")])
        .arg("--output-dir")
        .arg(&out.path)
        .run();
    run.expect_code(5)
        .expect_stderr("temporarily_unavailable")
        .expect_no_leak(CLIENT_SECRET.as_bytes());
    assert_eq!(idp_down.requests().len(), 3);
    out.expect_empty();

    // STS refuses the token (already expired when it arrives): exit 3.
    let idp_expired = idp(0);
    let run = sidecar(&sts, &account)
        .args(["--aws-token-source", "oauth2-client-credentials"])
        .args(idp_expired.client_args(&secret_file(&files, CLIENT_SECRET)))
        .args(["--secret", &format!("aws://{name}")])
        .arg("--output-dir")
        .arg(&out.path)
        .run();
    run.expect_code(3).expect_stderr("ExpiredTokenException");
    for token in idp_expired.issued() {
        run.expect_no_leak(token.as_bytes());
    }
    out.expect_empty();

    // A server that echoes the secret in its error: the log never carries it.
    let mut echoed = testkit::http::Response::json(
        400,
        format!(
            r#"{{"error":"invalid_request","error_description":"client_secret {CLIENT_SECRET} is malformed"}}"#
        ),
    );
    echoed.headers = vec![("content-type", "application/json".to_owned())];
    let echo = testkit::http::Server::start(vec![echoed]);
    let run = sidecar(&sts, &account)
        .args(["--aws-token-source", "oauth2-client-credentials"])
        .args(["--oauth2-token-url", &format!("{}/token", echo.url)])
        .args([
            "--oauth2-client-id",
            CLIENT_ID,
            "--oauth2-client-secret-file",
        ])
        .arg(secret_file(&files, CLIENT_SECRET))
        .args(["--secret", &format!("aws://{name}")])
        .arg("--output-dir")
        .arg(&out.path)
        .run();
    run.expect_code(3)
        .expect_stderr("invalid_request (client_secret <redacted> is malformed)")
        .expect_no_leak(CLIENT_SECRET.as_bytes());

    // No secret file at all: the identity cannot be proven, exit 3.
    let run = sidecar(&sts, &account)
        .args(["--aws-token-source", "oauth2-client-credentials"])
        .args(idp_ok.client_args(&files.path.join("missing")))
        .args(["--secret", &format!("aws://{name}")])
        .arg("--output-dir")
        .arg(&out.path)
        .run();
    run.expect_code(3)
        .expect_stderr("--oauth2-client-secret-file");
}

#[test]
fn token_sources_refuse_incomplete_or_unsafe_options() {
    let sts = Sts::issuing("000000000000");
    let out = Scratch::tmpfs("identity-usage");
    let files = Scratch::disk("identity-usage");
    let secret = secret_file(&files, CLIENT_SECRET);
    let secret = secret.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &["--aws-token-source", "gcp-metadata"],
            "--aws-token-audience",
        ),
        (
            &["--aws-token-source", "oauth2-client-credentials"],
            "needs --oauth2-token-url, --oauth2-client-id, --oauth2-client-secret-file",
        ),
        (
            &[
                "--aws-token-source",
                "oauth2-client-credentials",
                "--oauth2-token-url",
                "http://idp.example.com/token",
                "--oauth2-client-id",
                "x",
                "--oauth2-client-secret-file",
                secret,
            ],
            "plain http to a non-loopback host",
        ),
        (
            &["--aws-token-audience", AUDIENCE],
            "--aws-token-audience is for --aws-token-source gcp-metadata",
        ),
        (
            &[
                "--aws-token-source",
                "gcp-metadata",
                "--aws-token-audience",
                AUDIENCE,
                "--oauth2-token-url",
                "https://idp.example.com/token",
            ],
            "--oauth2-* options are for the oauth2-client-credentials source",
        ),
        (&["--aws-token-source", "vault"], "invalid value 'vault'"),
    ];
    for (args, message) in cases {
        sidecar(&sts, "000000000000")
            .args(args)
            .args(["--secret", "aws://x"])
            .arg("--output-dir")
            .arg(&out.path)
            .run()
            .expect_code(2)
            .expect_stderr(message);
    }
    // The role is required: without it there is nothing to exchange the token for.
    #[cfg(feature = "gcp")]
    {
        let metadata = Metadata::start("ya29.unused", GKE_SA);
        sidecar(&sts, "000000000000")
            .env_remove("AWS_ROLE_ARN")
            .env("GCE_METADATA_HOST", metadata.host())
            .args(["--aws-token-source", "gcp-metadata"])
            .args(["--aws-token-audience", AUDIENCE])
            .args(["--secret", "aws://x", "--output-dir"])
            .arg(&out.path)
            .run()
            .expect_code(2)
            .expect_stderr("needs AWS_ROLE_ARN");
    }
    assert!(sts.tokens().is_empty());
}

/// `token --probe` for `file`: whether the startup probe passes.
fn probe(file: &Path) -> bool {
    testkit::sidecar!()
        .args(["token", "--probe", "--out"])
        .arg(file)
        .run()
        .code
        == 0
}

#[track_caller]
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads `file` as an app would, over and over, keeping every distinct content seen.
fn watch(file: PathBuf) -> (Arc<AtomicBool>, std::thread::JoinHandle<BTreeSet<Vec<u8>>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let reader = std::thread::spawn(move || {
        let mut seen = BTreeSet::new();
        while !flag.load(Ordering::SeqCst) {
            if let Ok(bytes) = fs::read(&file) {
                seen.insert(bytes);
            }
        }
        seen
    });
    (stop, reader)
}

#[test]
fn token_mode_keeps_the_token_fresh_and_survives_an_outage() {
    // Long enough that the refresh at 80% leaves over a second before expiry, so the
    // probe during the outage sees a valid token even on a loaded machine.
    const LIFETIME: u64 = 6;
    let idp = idp(LIFETIME);
    let dir = Scratch::tmpfs("token-mode");
    let files = Scratch::disk("token-mode-secret");
    let secret = secret_file(&files, CLIENT_SECRET);
    let file = dir.path.join("token");
    assert!(!probe(&file), "the probe passes before any token exists");

    let (stop_reading, reader) = watch(file.clone());
    let mut refresher = testkit::sidecar!()
        .env("RUST_LOG", "trace")
        .args(["token", "--source", "oauth2-client-credentials", "--out"])
        .arg(&file)
        .args(idp.client_args(&secret))
        .spawn();

    // The first token appears, then the probe passes.
    wait_until("the first token", Duration::from_secs(10), || file.exists());
    assert!(probe(&file));
    let first = fs::read(&file).unwrap();
    assert_eq!(first, idp.issued()[0].as_bytes());
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
        0o440
    );

    // Replaced before it expires: at 80% of its lifetime.
    let started = Instant::now();
    wait_until("a refreshed token", Duration::from_secs(10), || {
        fs::read(&file).is_ok_and(|t| t != first)
    });
    assert!(
        started.elapsed() < Duration::from_secs(LIFETIME),
        "refreshed too late"
    );
    let second = fs::read(&file).unwrap();
    assert_eq!(second, idp.issued()[1].as_bytes());

    // An outage: refreshes fail, the last good token stays and is still valid.
    let before = idp.requests().len();
    idp.set_down(true);
    wait_until("a failed refresh", Duration::from_secs(10), || {
        idp.requests().len() > before
    });
    assert_eq!(fs::read(&file).unwrap(), second);
    assert!(probe(&file), "the last good token is still valid");
    assert!(refresher.running());

    // The IdP comes back: a new token follows without a restart.
    idp.set_down(false);
    wait_until("a token after the outage", Duration::from_secs(20), || {
        fs::read(&file).is_ok_and(|t| t != second)
    });
    assert_eq!(
        fs::read(&file).unwrap(),
        idp.issued().last().unwrap().as_bytes()
    );

    let run = refresher.stop();
    run.expect_code(0)
        .expect_stderr("refreshing the token failed; keeping the last good one")
        .expect_stderr("stopped by SIGTERM");
    stop_reading.store(true, Ordering::SeqCst);
    let seen = reader.join().unwrap();

    // Every read saw one whole token the IdP issued: never a partial or empty file.
    let issued: BTreeSet<Vec<u8>> = idp.issued().into_iter().map(String::into_bytes).collect();
    assert!(seen.len() >= 3, "saw {} tokens", seen.len());
    assert!(
        seen.is_subset(&issued),
        "a read saw something the IdP never issued"
    );
    run.expect_no_leak(CLIENT_SECRET.as_bytes());
    for token in &issued {
        run.expect_no_leak(token);
    }
    assert!(
        fs::read(&file).is_ok(),
        "the token stays after a clean stop"
    );
}

#[cfg(feature = "gcp")]
#[test]
fn token_mode_writes_the_metadata_servers_id_token() {
    let metadata = Metadata::start("ya29.unused", GKE_SA);
    let dir = Scratch::tmpfs("token-gcp");
    let file = dir.path.join("token");
    let refresher = testkit::sidecar!()
        .env("GCE_METADATA_HOST", metadata.host())
        .args(["token", "--source", "gcp-metadata", "--audience", AUDIENCE])
        .args(["--mode", "0400", "--out"])
        .arg(&file)
        .spawn();
    wait_until("the ID token", Duration::from_secs(10), || file.exists());
    let token = String::from_utf8(fs::read(&file).unwrap()).unwrap();
    assert_eq!(jwt_subject(&token), format!("{GKE_SA}|{AUDIENCE}"));
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
        0o400
    );
    assert!(probe(&file));
    refresher
        .stop()
        .expect_code(0)
        .expect_no_leak(token.as_bytes());
}

#[test]
fn token_mode_fails_closed_at_start() {
    let files = Scratch::disk("token-fail");
    let idp = idp(60);

    // The first token cannot be had: exit 3, no file.
    let dir = Scratch::tmpfs("token-fail");
    let file = dir.path.join("token");
    let run = testkit::sidecar!()
        .args(["token", "--source", "oauth2-client-credentials", "--out"])
        .arg(&file)
        .args(idp.client_args(&secret_file(&files, "not-the-secret")))
        .run();
    run.expect_code(3).expect_stderr("invalid_client");
    dir.expect_empty();

    // A directory shared with other files: publishing would replace them, so refuse.
    let shared = Scratch::tmpfs("token-shared");
    fs::write(shared.path.join("db-password"), "x").unwrap();
    testkit::sidecar!()
        .args(["token", "--source", "oauth2-client-credentials", "--out"])
        .arg(shared.path.join("token"))
        .args(idp.client_args(&secret_file(&files, CLIENT_SECRET)))
        .run()
        .expect_code(6)
        .expect_stderr("also holds db-password");
    assert!(idp.issued().is_empty());

    // A probe of a token that has expired fails.
    let stale = Scratch::tmpfs("token-stale");
    let expired = {
        let part = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        format!(
            "{}.{}.c2ln",
            part(r#"{"alg":"RS256"}"#),
            part(r#"{"exp":1000}"#)
        )
    };
    fs::write(stale.path.join("token"), expired).unwrap();
    assert!(!probe(&stale.path.join("token")));
}
