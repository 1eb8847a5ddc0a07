#![cfg(feature = "azure")]
//! `secret-sidecar imds-proxy`, run as a process against the Entra ID and Key Vault fakes:
//! the IMDS contract and its errors, the cache and its single exchange, expiry, the App
//! Service contract, start-up failures, and no token in any output at trace level.
//! `imds_proxy/clients.rs` has the clients nobody here wrote (Azure's Python SDK, the
//! Rust azure_identity crate, curl); `imds_proxy/redirect.rs` the nftables redirect in a
//! network namespace of its own (root).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::azure::{ARM_RESOURCE, CLIENT_ID, EntraMode, RESOURCE, Workload};
use testkit::tls::ca;
use testkit::{Run, Scratch, Sidecar};

#[path = "imds_proxy/clients.rs"]
mod clients;
#[path = "imds_proxy/redirect.rs"]
mod redirect;

const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";

/// A port nothing listens on now (the proxy binds it a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary as `imds-proxy`, with the workload identity of `workload`, at trace level.
fn proxy_command(workload: &Workload, port: u16) -> Sidecar {
    workload
        .identity(testkit::sidecar!())
        .env("RUST_LOG", "trace")
        .args(["--ca-file"])
        .arg(&ca().pem_file)
        .args(["imds-proxy", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--resource", RESOURCE])
}

/// A running proxy; its output goes to a file (a pipe could fill up at trace level).
struct Proxy {
    child: Child,
    port: u16,
    log: Scratch,
}

impl Proxy {
    /// Starts the proxy and waits until it answers a token for [`RESOURCE`].
    fn start(workload: &Workload, extra: &[&str]) -> Proxy {
        Proxy::start_on(workload, free_port(), extra)
    }

    fn start_on(workload: &Workload, port: u16, extra: &[&str]) -> Proxy {
        let log = Scratch::disk("imds-proxy-log");
        let mut command = proxy_command(workload, port).args(extra).command();
        command
            .stdout(std::fs::File::create(log.path.join("stdout")).unwrap())
            .stderr(std::fs::File::create(log.path.join("stderr")).unwrap());
        let mut proxy = Proxy {
            child: command.spawn().unwrap(),
            port,
            log,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = proxy.child.try_wait().unwrap() {
                panic!("the proxy exited ({status}): {}", proxy.stderr());
            }
            if let Ok((200, _)) =
                proxy.try_get(&token_target(RESOURCE, &[]), &[("Metadata", "true")])
            {
                return proxy;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the proxy is not ready: {}",
                proxy.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.path.join("stderr")).unwrap_or_default()
    }

    fn try_get(&self, target: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, String)> {
        request(self.port, "GET", target, headers)
    }

    /// `GET target` with `headers`: the status and the body.
    fn get(&self, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
        self.try_get(target, headers).unwrap()
    }

    /// The IMDS token answer for `resource`, parsed; panics unless it is a 200.
    fn token(&self, resource: &str, extra: &[(&str, &str)]) -> Value {
        let (status, body) = self.get(&token_target(resource, extra), &[("Metadata", "true")]);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// SIGTERM, then everything it wrote, as a [`Run`].
    fn stop(mut self) -> Run {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.child.wait().unwrap();
        Run::from(Output {
            status,
            stdout: std::fs::read(self.log.path.join("stdout")).unwrap(),
            stderr: std::fs::read(self.log.path.join("stderr")).unwrap(),
        })
    }
}

/// `/metadata/identity/oauth2/token?api-version=2018-02-01&resource=R[&k=v...]`.
fn token_target(resource: &str, extra: &[(&str, &str)]) -> String {
    let mut query = format!("api-version=2018-02-01&resource={}", encode(resource));
    for (name, value) in extra {
        query.push_str(&format!("&{name}={}", encode(value)));
    }
    format!("{TOKEN_PATH}?{query}")
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP/1.1 request on a new connection, as a legacy client would write it.
fn request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut text =
        format!("{method} {target} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {answer:?}")))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Neither the projected token, nor an access token, nor `others` anywhere in `run`.
fn expect_no_tokens(run: &Run, workload: &Workload, others: &[&str]) {
    run.expect_no_leak(workload.token.as_bytes())
        .expect_no_leak(workload.entra.access_token.as_bytes())
        .expect_no_leak(workload.entra.arm_token.as_bytes());
    for other in others {
        run.expect_no_leak(other.as_bytes());
    }
}

fn exchanges_for(workload: &Workload, resource: &str) -> usize {
    let scope = format!("{resource}/.default");
    workload
        .entra
        .token_requests()
        .iter()
        .filter(|form| form.get("scope") == Some(&scope))
        .count()
}

#[test]
fn a_caller_gets_the_workload_identity_token_in_imds_shape() {
    let workload = Workload::start();
    let proxy = Proxy::start(&workload, &[]);
    let answer = proxy.token(RESOURCE, &[("client_id", &CLIENT_ID.to_uppercase())]);
    assert_eq!(answer["access_token"], workload.entra.access_token.as_str());
    assert_eq!(answer["resource"], RESOURCE);
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["client_id"], CLIENT_ID);
    // IMDS's values are strings: seconds left and the Unix time it expires.
    let left: u64 = answer["expires_in"].as_str().unwrap().parse().unwrap();
    assert!((3500..=3599).contains(&left), "{answer}");
    let on: u64 = answer["expires_on"].as_str().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(on.abs_diff(now + left) <= 2, "{answer}");

    // The exchange Entra saw: the projected token as the client assertion, for the
    // resource's .default scope; once, the answers after the first from the cache.
    let requests = workload.entra.token_requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0]["client_assertion"], workload.token);
    assert_eq!(requests[0]["client_id"], CLIENT_ID);
    assert_eq!(requests[0]["scope"], format!("{RESOURCE}/.default"));

    // Another resource is another exchange, its slash kept in the scope (and so in the
    // token's audience).
    let arm = proxy.token(ARM_RESOURCE, &[]);
    assert_eq!(arm["access_token"], workload.entra.arm_token.as_str());
    assert_eq!(arm["resource"], ARM_RESOURCE);
    assert_eq!(exchanges_for(&workload, ARM_RESOURCE), 1);

    let run = proxy.stop();
    run.expect_code(0).expect_stderr("token obtained");
    expect_no_tokens(&run, &workload, &[]);
}

#[test]
fn imds_errors_are_imds_shaped() {
    let workload = Workload::start();
    let proxy = Proxy::start(&workload, &[]);
    let error = |status: u16, body: &str, code: &str, description: &str| {
        let parsed: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{body}"));
        assert_eq!(parsed["error"], code, "{status} {body}");
        assert!(
            parsed["error_description"]
                .as_str()
                .unwrap_or_default()
                .contains(description),
            "{status} {body}"
        );
    };
    let metadata = [("Metadata", "true")];
    let good = token_target(RESOURCE, &[]);

    // The SDKs' probe (no header, no query) and a request without the header.
    for target in [TOKEN_PATH.to_owned(), good.clone()] {
        let (status, body) = proxy.get(&target, &[]);
        assert_eq!(status, 400);
        error(
            status,
            &body,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    let (status, body) = proxy.get(&good, &[("Metadata", "false")]);
    assert_eq!(status, 400, "{body}");
    let (status, body) = proxy.get(
        &good,
        &[("Metadata", "true"), ("X-Forwarded-For", "10.0.0.9")],
    );
    assert_eq!(status, 400);
    error(status, &body, "invalid_request", "X-Forwarded-For");

    for version in ["", "api-version=2099-01-01&", "api-version=latest&"] {
        let target = format!("{TOKEN_PATH}?{version}resource={}", encode(RESOURCE));
        let (status, body) = proxy.get(&target, &metadata);
        assert_eq!(status, 400, "{target}");
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert!(
            parsed["error"]
                .as_str()
                .unwrap()
                .contains("api-version is invalid"),
            "{body}"
        );
        assert_eq!(parsed["newest-versions"][0], "2025-04-07", "{body}");
    }
    // Versions IMDS serves, old and new.
    for version in ["2017-09-01", "2019-08-01", "2025-04-07"] {
        let target = format!(
            "{TOKEN_PATH}?api-version={version}&resource={}",
            encode(RESOURCE)
        );
        assert_eq!(proxy.get(&target, &metadata).0, 200, "{version}");
    }
    let (status, body) = proxy.get(&format!("{TOKEN_PATH}?api-version=2018-02-01"), &metadata);
    assert_eq!(status, 400);
    error(
        status,
        &body,
        "invalid_request",
        "Required audience parameter not specified",
    );
    let (status, body) = proxy.get(&format!("{good}&resource=x"), &metadata);
    assert_eq!(status, 400);
    error(status, &body, "invalid_request", "more than once");

    // Another identity, by any of its names; this one's object and resource ids are
    // unknown to the proxy unless given.
    for named in [
        ("client_id", "00000000-0000-0000-0000-000000000001"),
        ("object_id", "0d3f2c1b-1111-2222-3333-444455556666"),
        (
            "msi_res_id",
            "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/other",
        ),
    ] {
        let (status, body) = proxy.get(&token_target(RESOURCE, &[named]), &metadata);
        assert_eq!(status, 400, "{named:?}");
        error(status, &body, "invalid_request", "Identity not found");
    }
    let (status, _) = request(proxy.port, "POST", &good, &metadata).unwrap();
    assert_eq!(status, 405);

    // What a pod's IMDS does not have is not found, never made up.
    for path in [
        "/metadata/instance?api-version=2021-02-01",
        "/metadata/identity/credential?cred-api-version=1.0",
        "/metadata/scheduledevents?api-version=2020-07-01",
        "/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net",
        "/",
    ] {
        let (status, body) = proxy.get(path, &metadata);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("access_token"), "{path}: {body}");
    }

    // Entra refusing the assertion: its own error and AADSTS code, as IMDS passes them.
    workload.entra.set_mode(EntraMode::Reject {
        code: 700213,
        description: "No matching federated identity record found for presented assertion subject 'system:serviceaccount:default:app'.",
    });
    let (status, body) = proxy.get(&token_target(ARM_RESOURCE, &[]), &metadata);
    assert_eq!(status, 400, "{body}");
    error(status, &body, "invalid_client", "AADSTS700213");
    // The token cached before is still served.
    assert_eq!(proxy.get(&good, &metadata).0, 200);

    let run = proxy.stop();
    run.expect_code(0)
        .expect_stderr("no token from Entra ID")
        .expect_stderr("check: no federated credential matches the token's subject")
        .expect_stderr("answered 404");
    expect_no_tokens(&run, &workload, &[]);
}

#[test]
fn a_hundred_callers_at_once_share_one_exchange_or_one_refusal() {
    let workload = Workload::start();
    let proxy = Proxy::start(&workload, &[]);
    // Slow enough that every caller arrives while the one exchange is under way.
    workload.entra.set_delay(Duration::from_millis(700));
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let callers: Vec<_> = (0..100)
            .map(|_| scope.spawn(|| proxy.token(ARM_RESOURCE, &[])))
            .collect();
        callers.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for answer in &answers {
        assert_eq!(answer["access_token"], workload.entra.arm_token.as_str());
    }
    assert_eq!(exchanges_for(&workload, ARM_RESOURCE), 1);

    // A refusal is shared too (azure_identity's own cache would make one exchange per
    // caller, one after the other): Entra does not know this resource.
    let storage = "https://storage.azure.com/";
    let refusals: Vec<(u16, String)> = std::thread::scope(|scope| {
        let callers: Vec<_> = (0..100)
            .map(|_| {
                scope.spawn(|| proxy.get(&token_target(storage, &[]), &[("Metadata", "true")]))
            })
            .collect();
        callers.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for (status, body) in &refusals {
        assert_eq!(*status, 400, "{body}");
        assert!(body.contains("AADSTS1002012"), "{body}");
    }
    assert_eq!(exchanges_for(&workload, storage), 1);
    // Not cached: the next caller asks again.
    assert_eq!(
        proxy
            .get(&token_target(storage, &[]), &[("Metadata", "true")])
            .0,
        400
    );
    assert_eq!(exchanges_for(&workload, storage), 2);

    let run = proxy.stop();
    run.expect_code(0);
    expect_no_tokens(&run, &workload, &[]);
}

#[test]
fn a_token_is_fetched_again_before_it_expires() {
    let workload = Workload::start();
    // Five minutes before expiry a token is no longer handed out: 310 s is fresh for 10.
    workload.entra.set_lifetime(310);
    let proxy = Proxy::start(&workload, &[]);
    let first = proxy.token(RESOURCE, &[]);
    assert_eq!(
        exchanges_for(&workload, RESOURCE),
        1,
        "served from the cache"
    );
    let left: u64 = first["expires_in"].as_str().unwrap().parse().unwrap();
    assert!(left > 300 && left <= 310, "{first}");
    std::thread::sleep(Duration::from_secs(11));
    let second = proxy.token(RESOURCE, &[]);
    assert_eq!(exchanges_for(&workload, RESOURCE), 2);
    let on = |answer: &Value| {
        answer["expires_on"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(on(&second) >= on(&first) + 10, "{first} {second}");
    let left: u64 = second["expires_in"].as_str().unwrap().parse().unwrap();
    assert!(left > 300, "{second}");
    proxy.stop().expect_code(0);
}

#[test]
fn the_app_service_contract_needs_the_shared_header() {
    let workload = Workload::start();
    let secrets = Scratch::tmpfs("identity-header");
    let header = format!(
        "identity-header-{}-0123456789abcdef",
        testkit::unique_id('x')
    );
    std::fs::write(secrets.path.join("identity-header"), format!("{header}\n")).unwrap();
    let file = secrets.path.join("identity-header");
    let proxy = Proxy::start(
        &workload,
        &["--identity-header-file", file.to_str().unwrap()],
    );
    let target = format!(
        "/msi/token?api-version=2019-08-01&resource={}",
        encode(RESOURCE)
    );

    let (status, body) = proxy.get(&target, &[("X-IDENTITY-HEADER", &header)]);
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["access_token"], workload.entra.access_token.as_str());
    assert_eq!(answer["client_id"], CLIENT_ID);
    assert_eq!(answer["resource"], RESOURCE);
    assert!(
        answer["expires_on"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok(),
        "{body}"
    );
    assert!(answer.get("expires_in").is_none(), "{body}");

    for presented in ["", "identity-header-wrong", &header[1..]] {
        let (status, body) = proxy.get(
            &target,
            &[("X-IDENTITY-HEADER", presented), ("Metadata", "true")],
        );
        assert_eq!(status, 401, "{presented}: {body}");
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["statusCode"], 401, "{body}");
    }
    let (status, _) = proxy.get(
        &format!(
            "/msi/token?api-version=2017-09-01&resource={}",
            encode(RESOURCE)
        ),
        &[("X-IDENTITY-HEADER", &header)],
    );
    assert_eq!(status, 400);

    let run = proxy.stop();
    run.expect_code(0);
    expect_no_tokens(&run, &workload, &[&header]);
}

#[test]
fn the_proxy_fails_closed_at_start() {
    let workload = Workload::start();
    let port = free_port();

    // Not a loopback address: refused before anything else.
    let run = workload
        .identity(testkit::sidecar!())
        .args(["imds-proxy", "--listen", "0.0.0.0:8000"])
        .run();
    run.expect_code(2).expect_stderr("not a loopback address");

    // No projected token file.
    let run = proxy_command(&workload, port)
        .env(
            "AZURE_FEDERATED_TOKEN_FILE",
            "/nonexistent/azure-identity-token",
        )
        .run();
    run.expect_code(3)
        .expect_stderr("AZURE_FEDERATED_TOKEN_FILE=/nonexistent");

    // Entra's certificate not trusted (no --ca-file): an identity failure, not retried.
    let before = workload.entra.server.connections();
    let run = workload
        .identity(testkit::sidecar!())
        .args(["imds-proxy", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--resource", RESOURCE])
        .run();
    run.expect_code(3).expect_stderr("certificate was refused");
    assert_eq!(workload.entra.server.connections(), before + 1, "retried");

    // Half the workload identity variables.
    let run = proxy_command(&workload, port)
        .env_remove("AZURE_CLIENT_ID")
        .run();
    run.expect_code(3).expect_stderr("AZURE_CLIENT_ID not set");

    // Entra refusing the first exchange: the identity exit code, Entra's words and what
    // to check, and the port never serves.
    workload.entra.set_mode(EntraMode::Reject {
        code: 700211,
        description: "No matching federated identity record found for presented assertion issuer 'https://oidc.example.test/'.",
    });
    let run = proxy_command(&workload, port).run();
    run.expect_code(3)
        .expect_stderr("AADSTS700211")
        .expect_stderr("compare `az identity federated-credential list`");
    expect_no_tokens(&run, &workload, &[]);

    // A short header secret.
    let secrets = Scratch::tmpfs("identity-header");
    std::fs::write(secrets.path.join("h"), "short").unwrap();
    let run = proxy_command(&workload, port)
        .args([
            "--identity-header-file",
            secrets.path.join("h").to_str().unwrap(),
        ])
        .run();
    run.expect_code(2)
        .expect_stderr("at least 32")
        .expect_no_leak(b"short");
}

#[test]
fn the_probe_passes_once_a_token_can_be_had() {
    let workload = Workload::start();
    let port = free_port();
    let probe = |port: u16| {
        testkit::sidecar!()
            .args([
                "imds-proxy",
                "--probe",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--resource", RESOURCE])
            .run()
    };
    probe(port)
        .expect_code(1)
        .expect_stderr("no answer from the proxy");
    let proxy = Proxy::start(&workload, &[]);
    let run = probe(proxy.port);
    run.expect_code(0);
    expect_no_tokens(&run, &workload, &[]);
    proxy.stop().expect_code(0);
}
