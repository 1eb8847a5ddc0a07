//! The conformance table: what every provider must do the same way, written once and run
//! through the real binary against each provider's service (testkit/src/conformance.rs):
//! LocalStack for AWS where it can give the answer, the scripted Secrets Manager wire
//! server where it cannot (denied, throttled, malformed), and the Key Vault and Secret
//! Manager protocol fakes for Azure and Google.
//!
//! Every row asserts the exit code, what was published (content and mode) or that nothing
//! was, and that neither the sentinel nor a token reached stdout or stderr at
//! `RUST_LOG=trace`. The few things a provider says in its own words (its error codes, how
//! it names its identity) are the `*_says` tables below.
//!
//! The macros at the bottom make one test per row and provider: `aws_localstack::…` and
//! `aws_wire::…` (AWS, by backend, so that `--skip localstack` runs what needs no
//! LocalStack), `azure::…`, `gcp::…`.

use std::time::Instant;

use testkit::conformance::Service;
use testkit::faults::Provider;
use testkit::{Run, SENTINEL, Scratch, Sidecar};

/// A value with what careless handling breaks: newlines, trailing blanks, non-ASCII,
/// a tab, quotes; and the sentinel.
fn awkward_value() -> String {
    format!("line one\nline two with trailing spaces  \n\u{00e9}\t\"quoted\" {SENTINEL}")
}

/// The binary, set up for `service`, publishing into `out`.
fn sidecar(service: &Service, out: &Scratch) -> Sidecar {
    service
        .configure(testkit::sidecar!())
        .arg("--output-dir")
        .arg(&out.path)
}

/// Runs the binary publishing `secrets` (`--secret` values) into `out`, and checks that
/// it printed nothing to stdout and no secret or token anywhere.
fn run(service: &Service, out: &Scratch, secrets: &[String]) -> Run {
    let run = sidecar(service, out)
        .args(secrets.iter().flat_map(|s| ["--secret", s]))
        .run();
    expect_quiet(service, &run);
    run
}

/// A run at trace level (so that it logged everything it could: secret-sidecar has no
/// trace events of its own, the SDKs' are dropped unless --log-sdk-internals) that printed
/// nothing to stdout and neither the sentinel nor a token anywhere.
#[track_caller]
fn expect_quiet(service: &Service, run: &Run) {
    assert!(
        run.stderr.contains(" DEBUG "),
        "not traced:\n{}",
        run.stderr
    );
    expect_no_leak(service, run);
}

#[track_caller]
fn expect_no_leak(service: &Service, run: &Run) {
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
    run.expect_no_leak(SENTINEL.as_bytes());
    for token in service.tokens() {
        run.expect_no_leak(token.as_bytes());
    }
}

/// Exactly `files` are visible in `out`, each with its content and the default mode.
#[track_caller]
fn expect_published(out: &Scratch, files: &[(&str, &[u8])]) {
    let mut names: Vec<&str> = files.iter().map(|(name, _)| *name).collect();
    names.sort();
    assert_eq!(out.visible(), names);
    for (name, content) in files {
        assert_eq!(out.read(name), *content, "content of {name}");
        assert_eq!(out.mode(name), 0o440, "mode of {name}");
    }
}

/// How the run names the identity it loaded.
fn identity_says(provider: Provider) -> &'static str {
    match provider {
        #[cfg(feature = "aws")]
        Provider::Aws => "AWS identity loaded source=EnvironmentVariable",
        #[cfg(feature = "azure")]
        Provider::Azure => "Azure identity loaded credential=WorkloadIdentity",
        #[cfg(feature = "gcp")]
        Provider::Gcp => "GCP identity loaded source=metadata-server",
        #[cfg(feature = "aws")]
        Provider::Ssm => "AWS identity loaded source=EnvironmentVariable",
    }
}

/// The service's own words for a secret that does not exist.
fn not_found_says(provider: Provider) -> &'static str {
    match provider {
        #[cfg(feature = "aws")]
        Provider::Aws => "ResourceNotFoundException",
        #[cfg(feature = "azure")]
        Provider::Azure => "HTTP 404 SecretNotFound: A secret with (name/id) absent was not found",
        #[cfg(feature = "gcp")]
        Provider::Gcp => "not found or has no versions",
        #[cfg(feature = "aws")]
        Provider::Ssm => "ParameterNotFound",
    }
}

/// The service's own words for a read the identity may not make.
fn denied_says(provider: Provider) -> &'static [&'static str] {
    match provider {
        #[cfg(feature = "aws")]
        Provider::Aws => &[
            "service error: AccessDeniedException: User: ",
            "secretsmanager:GetSecretValue",
        ],
        #[cfg(feature = "azure")]
        Provider::Azure => &[
            "HTTP 403 Forbidden/AccessDenied",
            "does not have secrets get permission",
        ],
        #[cfg(feature = "gcp")]
        Provider::Gcp => &["PERMISSION_DENIED", "secretmanager.versions.access"],
        #[cfg(feature = "aws")]
        Provider::Ssm => &[
            "service error: AccessDeniedException: User: ",
            "ssm:GetParameter",
        ],
    }
}

/// What the run says of an answer it could not parse.
fn malformed_says(provider: Provider) -> &'static str {
    match provider {
        #[cfg(feature = "aws")]
        Provider::Aws => "failed to parse JSON",
        #[cfg(feature = "azure")]
        Provider::Azure => "the answer is not a Key Vault secret bundle",
        // The parser's details could quote the body, so the provider withholds them.
        #[cfg(feature = "gcp")]
        Provider::Gcp => "the response could not be parsed",
        // Parameter Store's client reads answers by schema: it names what did not fit.
        #[cfg(feature = "aws")]
        Provider::Ssm => "type mismatch: expected integer",
    }
}

fn a_string_secret_is_published_byte_exact_with_the_default_mode(provider: Provider) {
    let mut service = Service::start(provider);
    let value = awkward_value();
    let version = service.put("db", &value);
    let reference = service.reference("db");
    let out = Scratch::tmpfs("conformance-found");

    let run = sidecar(&service, &out)
        .arg("--secret")
        .arg(format!("app.conf={reference}"))
        .run_with_umask("0000");
    expect_quiet(&service, &run);
    run.expect_code(0)
        .expect_stderr(identity_says(provider))
        .expect_stderr(&format!(
            "published reference={reference} version={version}"
        ))
        .expect_stderr(&format!("bytes={}", value.len()));
    // umask 000 must not widen the mode.
    expect_published(&out, &[("app.conf", value.as_bytes())]);
}

fn a_missing_secret_exits_4_and_publishes_nothing(provider: Provider) {
    let mut service = Service::start(provider);
    service.put("present", SENTINEL);
    let absent = service.reference("absent");
    let out = Scratch::tmpfs("conformance-missing");

    let secrets = [
        format!("a={}", service.reference("present")),
        format!("b={absent}"),
    ];
    let run = run(&service, &out, &secrets);
    run.expect_code(4)
        .expect_stderr("secret not found")
        .expect_stderr(&absent)
        .expect_stderr(not_found_says(provider));
    // The class label opens the message once (a regression: it was printed twice).
    let labels = run.stderr.matches("secret not found").count();
    assert_eq!(labels, 1, "{}", run.stderr);
    out.expect_empty();
}

fn a_missing_version_exits_4_and_publishes_nothing(provider: Provider) {
    let mut service = Service::start(provider);
    service.put("db", SENTINEL);
    let reference = service.at_version("db", service.missing_version());
    let out = Scratch::tmpfs("conformance-missing-version");

    run(&service, &out, std::slice::from_ref(&reference))
        .expect_code(4)
        .expect_stderr("secret not found")
        .expect_stderr(&reference);
    out.expect_empty();
}

fn a_denied_secret_exits_4_and_is_not_retried(provider: Provider) {
    let service = Service::denying(provider, "db", SENTINEL);
    let reference = service.reference("db");
    let out = Scratch::tmpfs("conformance-denied");

    let run = run(&service, &out, &[format!("db={reference}")]);
    run.expect_code(4)
        .expect_stderr("access denied")
        .expect_stderr(&reference);
    for words in denied_says(provider) {
        run.expect_stderr(words);
    }
    // The service's words, not an SDK's dump of its error structure.
    assert!(!run.stderr.contains("Error {"), "{}", run.stderr);
    assert_eq!(service.reads("db"), Some(1), "retried\n{}", run.stderr);
    out.expect_empty();
}

fn versions_are_selected_by_id_and_by_name(provider: Provider) {
    let mut service = Service::start(provider);
    let (old, new) = (format!("{SENTINEL} one"), format!("{SENTINEL} two"));
    let first = service.put("db", &old);
    let second = service.put("db", &new);
    let mut expected = vec![
        ("latest".to_owned(), service.reference("db"), &new),
        ("first".to_owned(), service.at_version("db", &first), &old),
        ("second".to_owned(), service.at_version("db", &second), &new),
    ];
    for (i, reference) in service.names_for("db", &first).into_iter().enumerate() {
        expected.push((format!("named{i}"), reference, &old));
    }
    let out = Scratch::tmpfs("conformance-versions");

    let secrets: Vec<String> = expected
        .iter()
        .map(|(file, reference, _)| format!("{file}={reference}"))
        .collect();
    run(&service, &out, &secrets).expect_code(0);
    let files: Vec<(&str, &[u8])> = expected
        .iter()
        .map(|(file, _, value)| (file.as_str(), value.as_bytes()))
        .collect();
    expect_published(&out, &files);
}

fn a_binary_secret_is_published_byte_exact(provider: Provider) {
    let mut service = Service::start(provider);
    let value: Vec<u8> = (0..=255u8)
        .chain([0, 0xff, 0xfe, b'\n'])
        .chain(SENTINEL.bytes())
        .collect();
    let reference = service.put_binary("keystore", &value);
    let out = Scratch::tmpfs("conformance-binary");

    run(&service, &out, &[format!("keystore.p12={reference}")])
        .expect_code(0)
        .expect_no_leak(&value);
    expect_published(&out, &[("keystore.p12", &value)]);
}

fn json_keys_and_pointers_are_published_from_one_read(provider: Provider) {
    let mut service = Service::start(provider);
    let password = format!("{SENTINEL} \"w0rd\"\n");
    // A number is published as its JSON text (issue 18: an RDS secret's port).
    let json = serde_json::json!({"username": "app", "password": password, "db": {"port": 5432}});
    service.put("db", &json.to_string());
    let reference = service.reference("db");
    let out = Scratch::tmpfs("conformance-json");

    let secrets = [
        format!("user={reference}#username"),
        format!("{reference}#password"),
        format!("port={reference}#/db/port"),
    ];
    let run = run(&service, &out, &secrets);
    run.expect_code(0);
    let derived = format!("{}_password", service.file_name("db"));
    expect_published(
        &out,
        &[
            ("user", b"app"),
            (&derived, password.as_bytes()),
            ("port", b"5432"),
        ],
    );
    let published = run.stderr.matches(" published reference=").count();
    assert_eq!(published, 3, "{}", run.stderr);
    // Three references, one secret: one read.
    let fetched = run.stderr.matches(" DEBUG fetched target=").count();
    assert_eq!(fetched, 1, "{}", run.stderr);
    if let Some(reads) = service.reads("db") {
        assert_eq!(reads, 1);
    }
}

fn a_key_the_value_lacks_exits_7_and_publishes_nothing(provider: Provider) {
    let mut service = Service::start(provider);
    service.put("db", &format!(r#"{{"password":"{SENTINEL}","port":5432}}"#));
    service.put("plain", SENTINEL);
    let (db, plain) = (service.reference("db"), service.reference("plain"));
    let out = Scratch::tmpfs("conformance-bad-key");

    // A missing member, a pointer through a string, a value that is no JSON at all.
    for bad in [
        format!("{db}#missing"),
        format!("{db}#/password/x"),
        format!("{plain}#password"),
    ] {
        let secrets = [format!("ok={db}#password"), format!("bad={bad}")];
        run(&service, &out, &secrets)
            .expect_code(7)
            .expect_stderr("bad secret data")
            .expect_stderr(&bad);
        out.expect_empty();
    }
}

fn throttling_is_retried_until_the_secret_is_served(provider: Provider) {
    let (service, asked) = Service::throttling(provider, "db", SENTINEL, 2);
    let out = Scratch::tmpfs("conformance-throttled");

    let started = Instant::now();
    let run = run(&service, &out, &[format!("db={}", service.reference("db"))]);
    run.expect_code(0);
    expect_published(&out, &[("db", SENTINEL.as_bytes())]);
    assert_eq!(
        service.reads("db"),
        Some(3),
        "two throttled reads, then the value"
    );
    // The jittered back-off alone waits at most 0.1 s + 0.2 s.
    if let Some(wait) = asked {
        let took = started.elapsed();
        assert!(
            took >= 2 * wait,
            "waited {took:?}, asked twice for {wait:?}"
        );
    }
}

fn a_malformed_answer_exits_1_and_is_never_quoted(provider: Provider) {
    let service = Service::scripted(provider, vec![provider.malformed()]);
    let out = Scratch::tmpfs("conformance-malformed");

    // Its parse error would carry the body: not at the default level, not at trace.
    for log in ["info", "trace"] {
        let run = sidecar(&service, &out)
            .env("RUST_LOG", log)
            .arg("--secret")
            .arg(format!("db={}", service.reference("db")))
            .run();
        expect_no_leak(&service, &run);
        run.expect_code(1)
            .expect_stderr("internal error")
            .expect_stderr(malformed_says(provider));
        out.expect_empty();
    }
    assert_eq!(
        service.reads("db"),
        Some(2),
        "retried: one read per run expected"
    );
}

/// Rows every store can express (AWS: LocalStack).
macro_rules! stored_rows {
    () => {
        rows! {
            a_string_secret_is_published_byte_exact_with_the_default_mode,
            a_missing_secret_exits_4_and_publishes_nothing,
            a_missing_version_exits_4_and_publishes_nothing,
            versions_are_selected_by_id_and_by_name,
            a_binary_secret_is_published_byte_exact,
            json_keys_and_pointers_are_published_from_one_read,
            a_key_the_value_lacks_exits_7_and_publishes_nothing,
        }
    };
}

/// Rows LocalStack cannot express (AWS: the scripted wire server).
macro_rules! scripted_rows {
    () => {
        rows! {
            a_denied_secret_exits_4_and_is_not_retried,
            throttling_is_retried_until_the_secret_is_served,
            a_malformed_answer_exits_1_and_is_never_quoted,
        }
    };
}

macro_rules! rows {
    ($($row:ident),* $(,)?) => {$(
        #[test]
        fn $row() {
            crate::$row(PROVIDER);
        }
    )*};
}

/// One module per provider (and per backend for AWS), behind its cargo feature. A new
/// provider is one more module here (and its arms in testkit/src/conformance.rs).
#[cfg(feature = "aws")]
mod aws_localstack {
    const PROVIDER: testkit::faults::Provider = testkit::faults::Provider::Aws;
    stored_rows!();
}

#[cfg(feature = "aws")]
mod aws_wire {
    const PROVIDER: testkit::faults::Provider = testkit::faults::Provider::Aws;
    scripted_rows!();
}

#[cfg(feature = "aws")]
mod ssm_localstack {
    const PROVIDER: testkit::faults::Provider = testkit::faults::Provider::Ssm;
    stored_rows!();
}

#[cfg(feature = "aws")]
mod ssm_wire {
    const PROVIDER: testkit::faults::Provider = testkit::faults::Provider::Ssm;
    scripted_rows!();
}

#[cfg(feature = "azure")]
mod azure {
    const PROVIDER: testkit::faults::Provider = testkit::faults::Provider::Azure;
    stored_rows!();
    scripted_rows!();
}

#[cfg(feature = "gcp")]
mod gcp {
    const PROVIDER: testkit::faults::Provider = testkit::faults::Provider::Gcp;
    stored_rows!();
    scripted_rows!();
}
