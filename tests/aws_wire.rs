#![cfg(feature = "aws")]
//! AWS answers LocalStack cannot be made to give, from a scripted loopback server that
//! speaks the Secrets Manager JSON protocol.

use testkit::http::{Response, Server};
use testkit::{Scratch, Sidecar};

fn against(server: &Server, out: &Scratch) -> Sidecar {
    testkit::sidecar!()
        .env("AWS_ENDPOINT_URL", &server.url)
        .arg("--output-dir")
        .arg(&out.path)
}

#[test]
fn requests_carry_the_user_agent_suffix() {
    let server = Server::start(vec![Response::json(
        200,
        r#"{"ARN":"arn:aws:secretsmanager:us-east-1:1:secret:db-AbCdEf","Name":"db","VersionId":"v-1","SecretString":"ok"}"#,
    )]);
    let out = Scratch::tmpfs("wire-ua");
    against(&server, &out)
        .args(["--secret", "aws://db"])
        .run()
        .expect_code(0);
    assert_eq!(out.read("db"), b"ok");

    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let agent = requests[0].header("user-agent").unwrap_or_default();
    let expected = concat!("secret-sidecar/", env!("CARGO_PKG_VERSION"));
    assert!(
        agent.ends_with(expected),
        "user-agent {agent:?} lacks {expected}"
    );
    assert_eq!(
        requests[0].header("x-amz-target"),
        Some("secretsmanager.GetSecretValue")
    );
    let body = String::from_utf8_lossy(&requests[0].body);
    assert!(body.contains(r#""SecretId":"db""#), "{body}");
}

#[test]
fn an_unexpected_service_answer_is_an_internal_error() {
    let server = Server::start(vec![
        Response::json(
            400,
            r#"{"__type":"SomethingNobodyDocumentedException","message":"surprise"}"#,
        )
        .header("x-amzn-errortype", "SomethingNobodyDocumentedException"),
    ]);
    let out = Scratch::tmpfs("wire-internal");
    against(&server, &out)
        .args(["--secret", "aws://db"])
        .run()
        .expect_code(1)
        .expect_stderr("SomethingNobodyDocumentedException");
    out.expect_empty();
}

/// Throttled as Secrets Manager throttles (400 ThrottlingException, no Retry-After) on
/// every attempt: retried, then reported as transient. Throttled-then-served is a row of
/// tests/conformance.rs.
#[test]
fn throttling_on_every_attempt_is_transient_after_three_attempts() {
    let throttled = Server::start(vec![Response::json(
        400,
        r#"{"__type":"ThrottlingException","Message":"slow down"}"#,
    )]);
    let out = Scratch::tmpfs("wire-throttled");
    against(&throttled, &out)
        .args(["--secret", "aws://db", "--timeout", "30s"])
        .run()
        .expect_code(5);
    assert_eq!(
        throttled.requests().len(),
        3,
        "standard retry policy makes 3 attempts"
    );
    out.expect_empty();
}

/// A Secrets Manager that refuses BatchGetSecretValue and serves GetSecretValue.
fn batch_denied() -> Server {
    Server::with_handler(|request| {
        let body = String::from_utf8_lossy(&request.body);
        match request.header("x-amz-target") {
            Some("secretsmanager.BatchGetSecretValue") => Response::json(
                400,
                r#"{"__type":"AccessDeniedException","Message":"not authorized to perform: secretsmanager:BatchGetSecretValue"}"#,
            ),
            _ => {
                let id = body.split('"').nth(3).unwrap_or_default().to_owned();
                Response::json(
                    200,
                    format!(r#"{{"Name":"{id}","VersionId":"v","SecretString":"value of {id}"}}"#),
                )
            }
        }
    })
}

#[test]
fn a_denied_batch_falls_back_to_single_reads_unless_forced() {
    let server = batch_denied();
    let out = Scratch::tmpfs("wire-batch");
    against(&server, &out)
        .args(["--secret", "a=aws://one", "--secret", "b=aws://two"])
        .run()
        .expect_code(0);
    assert_eq!(out.read("a"), b"value of one");
    assert_eq!(out.read("b"), b"value of two");
    let targets: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.header("x-amz-target").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        targets
            .iter()
            .filter(|t| t.ends_with("BatchGetSecretValue"))
            .count(),
        1,
        "{targets:?}"
    );
    assert_eq!(
        targets
            .iter()
            .filter(|t| t.ends_with(".GetSecretValue"))
            .count(),
        2,
        "{targets:?}"
    );

    let forced = batch_denied();
    let other = Scratch::tmpfs("wire-batch-forced");
    against(&forced, &other)
        .args(["--secret", "a=aws://one", "--aws-batch", "always"])
        .run()
        .expect_code(4)
        .expect_stderr("BatchGetSecretValue");
    other.expect_empty();
}

#[test]
fn a_private_ca_is_trusted_through_ca_file_or_ssl_cert_file_only() {
    use testkit::tls::{HttpsServer, ca};
    let https = HttpsServer::with_handler(|_| {
        Response::json(
            200,
            r#"{"Name":"db","VersionId":"v1","SecretString":"over tls"}"#,
        )
    });
    let run = |out: &Scratch, extra: &dyn Fn(Sidecar) -> Sidecar| {
        extra(testkit::sidecar!().env("AWS_ENDPOINT_URL", &https.url))
            .arg("--output-dir")
            .arg(&out.path)
            .args(["--secret", "db=aws://db", "--timeout", "20s"])
            .run()
    };

    // --ca-file adds the test CA to the system roots.
    let out = Scratch::tmpfs("wire-ca-file");
    run(&out, &|s| s.arg("--ca-file").arg(&ca().pem_file)).expect_code(0);
    assert_eq!(out.read("db"), b"over tls");

    // SSL_CERT_FILE replaces the system roots with it, as rustls-native-certs does.
    let out = Scratch::tmpfs("wire-ssl-cert-file");
    run(&out, &|s| s.env("SSL_CERT_FILE", &ca().pem_file)).expect_code(0);
    assert_eq!(out.read("db"), b"over tls");

    // Neither: the certificate is not trusted and nothing is published.
    let before = https.requests().len();
    let out = Scratch::tmpfs("wire-untrusted");
    // A refused certificate is an authentication failure of the server: exit 3, and
    // not retried (tests/faults.rs counts the handshakes).
    run(&out, &|s| s)
        .expect_code(3)
        .expect_stderr("invalid peer certificate");
    assert_eq!(
        https.requests().len(),
        before,
        "a request got through an untrusted TLS session"
    );
    out.expect_empty();
}

/// Issue 19: with a web identity, the Secrets Manager connection is opened while STS is
/// still answering, by a bare `HEAD /` that carries no credentials, so that the read
/// finds TCP and TLS done when the credentials arrive.
#[test]
fn the_secrets_manager_connection_opens_while_sts_answers() {
    let sts = testkit::sts::Sts::answering_after(
        "ASIAFAKESTSACCESSKEY",
        std::time::Duration::from_millis(700),
    );
    let sts_answered = sts.answered();
    let early = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&early);
    let secrets = Server::with_handler(move |request| {
        if request.method() == "HEAD" {
            let answered = sts_answered.load(std::sync::atomic::Ordering::SeqCst);
            seen.lock().unwrap().push(answered);
            return Response::json(404, "");
        }
        Response::json(
            200,
            r#"{"Name":"db","VersionId":"v1","SecretString":"after sts"}"#,
        )
    });
    let token_dir = Scratch::disk("wire-warm-token");
    let token = token_dir.path.join("token");
    std::fs::write(
        &token,
        testkit::fake_jwt("system:serviceaccount:default:app"),
    )
    .unwrap();
    let out = Scratch::tmpfs("wire-warm");
    testkit::sidecar!()
        .assuming_role(sts.url(), "arn:aws:iam::123456789012:role/reader")
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token)
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", &secrets.url)
        .arg("--output-dir")
        .arg(&out.path)
        .args(["--secret", "db=aws://db"])
        .run()
        .expect_code(0);
    assert_eq!(out.read("db"), b"after sts");

    assert_eq!(
        *early.lock().unwrap(),
        [false],
        "one HEAD, before STS answered"
    );
    let requests = secrets.requests();
    let head = requests.iter().find(|r| r.method() == "HEAD").unwrap();
    assert_eq!(head.target(), "/");
    assert!(head.body.is_empty());
    for name in ["authorization", "x-amz-security-token", "x-amz-target"] {
        assert_eq!(head.header(name), None, "the warm-up carries {name}");
    }
    let read = requests.iter().find(|r| r.method() == "POST").unwrap();
    assert!(
        read.header("authorization")
            .is_some_and(|a| a.contains("Credential=ASIAFAKESTSACCESSKEY/")),
        "{read:?}"
    );
}

/// Issue 19: a host is looked up once for every connection the run opens to it (the STS
/// exchange, the warm-ups opened meanwhile and the reads in flight together), not once per
/// connection as the HTTP client's own resolver does.
#[test]
fn a_host_is_looked_up_once_for_all_its_connections() {
    use testkit::tls::{HttpsServer, ca};

    let sts = HttpsServer::with_handler(|_| testkit::sts::credentials("2099-01-01T00:00:00Z"));
    let secrets = HttpsServer::with_handler(|request| {
        if request.method() == "HEAD" {
            return Response::json(404, "");
        }
        // Slow enough that the reads overlap and each needs its own connection.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let body = String::from_utf8_lossy(&request.body);
        let id = body.split('"').nth(3).unwrap_or_default().to_owned();
        Response::json(
            200,
            format!(r#"{{"Name":"{id}","VersionId":"v","SecretString":"value of {id}"}}"#),
        )
    });
    let token_dir = Scratch::disk("wire-dns-token");
    let token = token_dir.path.join("token");
    std::fs::write(
        &token,
        testkit::fake_jwt("system:serviceaccount:default:app"),
    )
    .unwrap();
    let out = Scratch::tmpfs("wire-dns");
    let mut sidecar = testkit::sidecar!()
        .assuming_role(
            &format!("https://localhost:{}", sts.port),
            "arn:aws:iam::123456789012:role/reader",
        )
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token)
        .env(
            "AWS_ENDPOINT_URL_SECRETS_MANAGER",
            format!("https://localhost:{}", secrets.port),
        )
        .env("RUST_LOG", "secret_sidecar=debug")
        .arg("--ca-file")
        .arg(&ca().pem_file)
        .args(["--aws-batch", "never", "--concurrency", "4", "--output-dir"])
        .arg(&out.path);
    for i in 0..8 {
        sidecar = sidecar.arg("--secret").arg(format!("s{i}=aws://db-{i}"));
    }
    let run = sidecar.run();
    run.expect_code(0);
    assert_eq!(out.read("s7"), b"value of db-7");

    assert!(
        secrets.connections() >= 4,
        "{} connections: the reads did not overlap",
        secrets.connections()
    );
    let lookups: Vec<&str> = (run.stderr.lines())
        .filter(|line| line.contains("looking up host") && line.contains("localhost"))
        .collect();
    assert_eq!(lookups.len(), 1, "{}", run.stderr);
}

/// Issue 19: a read waits for the warm-up on its connection when that is still out after
/// STS has answered (for as long again as STS took, at most), rather than making the pool
/// open a second connection, a second handshake for nothing. Here the warm-up ends 200 ms
/// after STS answers, well inside the 600 ms the run waits at most.
#[test]
fn the_read_takes_the_warmed_connection_when_its_warm_up_ends_soon_after_sts() {
    use std::time::Duration;
    use testkit::tls::{HttpsServer, ca};

    let sts =
        testkit::sts::Sts::answering_after("ASIAFAKESTSACCESSKEY", Duration::from_millis(600));
    let secrets = HttpsServer::with_handler(|request| {
        if request.method() == "HEAD" {
            std::thread::sleep(Duration::from_millis(800));
            return Response::json(404, "");
        }
        Response::json(
            200,
            r#"{"Name":"db","VersionId":"v1","SecretString":"on the warm connection"}"#,
        )
    });
    let token_dir = Scratch::disk("wire-settle-token");
    let token = token_dir.path.join("token");
    std::fs::write(
        &token,
        testkit::fake_jwt("system:serviceaccount:default:app"),
    )
    .unwrap();
    let out = Scratch::tmpfs("wire-settle");
    testkit::sidecar!()
        .assuming_role(sts.url(), "arn:aws:iam::123456789012:role/reader")
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token)
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", &secrets.url)
        .arg("--ca-file")
        .arg(&ca().pem_file)
        .arg("--output-dir")
        .arg(&out.path)
        .args(["--secret", "db=aws://db"])
        .run()
        .expect_code(0);
    assert_eq!(out.read("db"), b"on the warm connection");
    let methods: Vec<String> = secrets
        .requests()
        .iter()
        .map(|r| r.method().to_owned())
        .collect();
    assert_eq!(methods, ["HEAD", "POST"]);
    assert_eq!(
        secrets.connections(),
        1,
        "the read opened a connection of its own"
    );
}
