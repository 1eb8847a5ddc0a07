#![cfg(feature = "azure")]
//! The Azure provider end to end: the real binary, with the official SDK clients inside it,
//! against local HTTPS fakes of Entra ID and Key Vault that speak the documented protocols
//! (testkit/src/azure.rs). No Key Vault emulator exists to install.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use testkit::azure::{
    AppServiceIdentity, CLIENT_ID, ConnectProxy, Entra, EntraMode, Imds, JWT_BEARER, KeyVault,
    SCOPE, TENANT, Workload,
};
use testkit::tls::ca;
use testkit::{SENTINEL, Scratch, Sidecar};

const AGENT: &str = concat!("secret-sidecar/", env!("CARGO_PKG_VERSION"));

/// The binary with the workload identity, the test CA and the vault reached by its URL,
/// publishing into `out`.
fn sidecar(azure: &Workload, out: &Scratch) -> Sidecar {
    azure
        .configure(testkit::sidecar!())
        .arg("--output-dir")
        .arg(&out.path)
}

#[track_caller]
fn assert_agent(request: &testkit::http::Request) {
    let agent = request.header("user-agent").unwrap_or_default();
    assert!(agent.ends_with(AGENT), "user-agent {agent:?} lacks {AGENT}");
}

#[test]
fn found_secret_is_published_through_workload_identity() {
    let azure = Workload::start();
    let value = "line one\nline two with trailing spaces  \n\u{00e9}\t\"quoted\"";
    let version = azure.vault.put("db-password", value);
    let out = Scratch::tmpfs("az-found");

    let run = sidecar(&azure, &out)
        .arg("--secret")
        .arg(format!("app.conf={}", azure.reference("db-password")))
        .run_with_umask("0000");
    run.expect_code(0)
        .expect_stderr("Azure credential selected credential=WorkloadIdentity")
        .expect_stderr(&format!(
            "Azure identity loaded credential=WorkloadIdentity scope={SCOPE}"
        ))
        .expect_stderr(&format!("reference={}", azure.reference("db-password")))
        .expect_stderr(&format!("version={version}"))
        .expect_stderr(&format!("bytes={}", value.len()));
    assert!(
        run.stdout.is_empty(),
        "stdout must stay empty: {}",
        run.stdout
    );
    assert_eq!(out.read("app.conf"), value.as_bytes());
    assert_eq!(out.mode("app.conf"), 0o440);
    assert_eq!(out.visible(), ["app.conf"]);

    // The token file was exchanged: Entra got exactly the file's token as the assertion,
    // for this client, tenant and scope.
    let exchanges = azure.entra.token_requests();
    assert_eq!(exchanges.len(), 1, "{exchanges:#?}");
    let exchange = &exchanges[0];
    assert_eq!(exchange["client_assertion"], azure.token);
    assert_eq!(exchange["client_assertion_type"], JWT_BEARER);
    assert_eq!(exchange["client_id"], CLIENT_ID);
    assert_eq!(exchange["grant_type"], "client_credentials");
    assert_eq!(exchange["scope"], SCOPE);
    let token_request = &azure.entra.server.requests()[0];
    assert_eq!(
        token_request.target(),
        format!("/{TENANT}/oauth2/v2.0/token")
    );
    assert_agent(token_request);

    // Key Vault: an unauthenticated request, the challenge, then the bearer Entra issued.
    let requests = azure.vault.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_eq!(requests[0].header("authorization"), None);
    assert_eq!(
        requests[1].header("authorization"),
        Some(format!("Bearer {}", azure.entra.access_token).as_str())
    );
    for request in &requests {
        assert!(
            request
                .target()
                .starts_with("/secrets/db-password/?api-version="),
            "{}",
            request.target()
        );
        assert_agent(request);
    }
}

#[test]
fn versions_are_chosen_by_parameter_or_identifier_and_env_vars_configure_azure() {
    let azure = Workload::start();
    let first = azure.vault.put("versioned", "v1");
    let second = azure.vault.put("versioned", "v2");
    let out = Scratch::tmpfs("az-versions");

    // The flag from the environment instead of the command line, and one client (one
    // challenge, one token) for the four secrets of the vault.
    let run = azure
        .identity(testkit::sidecar!())
        .env("SECRET_SIDECAR_AZURE_SKIP_CHALLENGE_RESOURCE_CHECK", "true")
        .env("SECRET_SIDECAR_CA_FILE", &ca().pem_file)
        .env("SECRET_SIDECAR_OUTPUT_DIR", &out.path)
        .env(
            "SECRET_SIDECAR_SECRET",
            format!(
                "latest={r},first={r}?version={first},second={r}/{second},old={r}/{first}",
                r = azure.reference("versioned")
            ),
        )
        .env("SECRET_SIDECAR_CONCURRENCY", "1")
        .run();
    run.expect_code(0);
    assert_eq!(out.read("latest"), b"v2");
    assert_eq!(out.read("first"), b"v1");
    assert_eq!(out.read("second"), b"v2");
    assert_eq!(out.read("old"), b"v1");
    assert_eq!(azure.entra.token_requests().len(), 1);
    let unauthenticated = azure
        .vault
        .requests()
        .iter()
        .filter(|r| r.header("authorization").is_none())
        .count();
    assert_eq!(unauthenticated, 1, "one challenge for the whole vault");

    // A version that does not exist is not found, like a missing secret.
    sidecar(&azure, &out)
        .arg("--secret")
        .arg(format!(
            "x={}?version=0123456789abcdef0123456789abcdef",
            azure.reference("versioned")
        ))
        .run()
        .expect_code(4)
        .expect_stderr("SecretNotFound");
}

/// Throttled on every attempt: the core's three attempts, then exit 5, and the previous
/// set stays. Throttled-then-served is a row of tests/conformance.rs.
#[test]
fn throttling_on_every_attempt_exits_5_and_keeps_the_previous_set() {
    let azure = Workload::start();
    azure.vault.put("busy", "before");
    let out = Scratch::tmpfs("az-throttle");
    sidecar(&azure, &out)
        .arg("--secret")
        .arg(format!("busy={}", azure.reference("busy")))
        .run()
        .expect_code(0);

    azure.vault.throttle("busy", 100);
    let before = azure.vault.authorized_gets("busy");
    sidecar(&azure, &out)
        .arg("--secret")
        .arg(format!("busy={}", azure.reference("busy")))
        .run()
        .expect_code(5)
        .expect_stderr("transient failure")
        .expect_stderr("after 3 attempts")
        .expect_stderr("HTTP 429 Throttled");
    assert_eq!(azure.vault.authorized_gets("busy") - before, 3);
    assert_eq!(out.read("busy"), b"before", "the previous set stays");
}

#[test]
fn sentinel_and_tokens_never_reach_any_output_even_at_trace_level() {
    let azure = Workload::start();
    azure.vault.put("leak-string", SENTINEL);
    azure
        .vault
        .put("leak-json", &format!(r#"{{"k":"{SENTINEL}","n":1}}"#));
    azure
        .vault
        .put("leak-binary", &testkit::base64(SENTINEL.as_bytes()));
    let out = Scratch::tmpfs("az-leak");

    let run = sidecar(&azure, &out)
        .env("RUST_LOG", "trace")
        .arg("--secret")
        .arg(format!("s={}", azure.reference("leak-string")))
        .arg("--secret")
        .arg(format!("j={}#k", azure.reference("leak-json")))
        .arg("--secret")
        .arg(format!(
            "b={}?format=base64",
            azure.reference("leak-binary")
        ))
        .run();
    run.expect_code(0)
        .expect_no_leak(SENTINEL.as_bytes())
        .expect_no_leak(azure.token.as_bytes())
        .expect_no_leak(azure.entra.access_token.as_bytes());
    run.expect_stderr("DEBUG fetched");
    for file in ["s", "j", "b"] {
        assert_eq!(out.read(file), SENTINEL.as_bytes());
    }
    let manifest = String::from_utf8(out.read("..manifest.json")).unwrap();
    for form in testkit::leak_forms(SENTINEL.as_bytes()) {
        assert!(!manifest.contains(&form), "{manifest}");
    }

    // Failures print errors; they carry neither the value nor a token.
    let failing = Scratch::tmpfs("az-leak-fail");
    for key in ["#/k/deeper", "#missing"] {
        sidecar(&azure, &failing)
            .env("RUST_LOG", "trace")
            .arg("--secret")
            .arg(format!("x={}{key}", azure.reference("leak-json")))
            .run()
            .expect_code(7)
            .expect_no_leak(SENTINEL.as_bytes())
            .expect_no_leak(azure.token.as_bytes())
            .expect_no_leak(azure.entra.access_token.as_bytes());
    }
    let fresh = Workload::start();
    fresh.entra.set_mode(EntraMode::Reject {
        code: 700211,
        description: "No matching federated identity record found for presented assertion issuer.",
    });
    sidecar(&fresh, &failing)
        .env("RUST_LOG", "trace")
        .arg("--secret")
        .arg(fresh.reference("anything"))
        .run()
        .expect_code(3)
        .expect_no_leak(fresh.token.as_bytes());
    failing.expect_empty();
}

#[test]
fn a_token_file_with_a_trailing_newline_still_works() {
    let azure = Workload::start();
    azure.vault.put("db", "value");
    fs::write(&azure.token_file, format!("{}\n", azure.token)).unwrap();
    let out = Scratch::tmpfs("az-newline");

    sidecar(&azure, &out)
        .arg("--secret")
        .arg(format!("db={}", azure.reference("db")))
        .run()
        .expect_code(0);
    assert_eq!(out.read("db"), b"value");
    assert_eq!(
        azure.entra.token_requests()[0]["client_assertion"],
        azure.token
    );
}

#[test]
fn a_missing_token_file_is_an_identity_failure() {
    let azure = Workload::start();
    azure.vault.put("db", "value");
    let out = Scratch::tmpfs("az-notoken");
    let missing = azure.token_file.with_file_name("not-there");

    sidecar(&azure, &out)
        .env("AZURE_FEDERATED_TOKEN_FILE", &missing)
        .arg("--secret")
        .arg(azure.reference("db"))
        .run()
        .expect_code(3)
        .expect_stderr("authentication failed")
        .expect_stderr(&missing.display().to_string());
    assert!(azure.entra.server.requests().is_empty());
    assert!(azure.vault.requests().is_empty());
    out.expect_empty();

    // Half of the webhook's variables is an identity error too, never a fall-back to
    // another identity.
    sidecar(&azure, &out)
        .env_remove("AZURE_TENANT_ID")
        .arg("--secret")
        .arg(azure.reference("db"))
        .run()
        .expect_code(3)
        .expect_stderr("AZURE_TENANT_ID not set");
}

#[test]
fn entra_rejecting_the_assertion_exits_3_with_the_aadsts_code() {
    let azure = Workload::start();
    azure.vault.put("db", "value");
    azure.entra.set_mode(EntraMode::Reject {
        code: 700211,
        description: "No matching federated identity record found for presented assertion issuer 'https://oidc.example.test/'.",
    });
    // A padded token file, so the error also says what was done about it.
    fs::write(&azure.token_file, format!("  {}\r\n", azure.token)).unwrap();
    let out = Scratch::tmpfs("az-rejected");

    sidecar(&azure, &out)
        .arg("--secret")
        .arg(azure.reference("db"))
        .run()
        .expect_code(3)
        .expect_stderr("authentication failed")
        .expect_stderr("AADSTS700211: No matching federated identity record")
        .expect_stderr("OIDC issuer")
        .expect_stderr("whitespace around the token, which was removed");
    assert_eq!(
        azure.entra.token_requests().len(),
        1,
        "identity failures are not retried"
    );
    assert_eq!(
        azure.entra.token_requests()[0]["client_assertion"],
        azure.token
    );
    out.expect_empty();
}

#[test]
fn a_challenge_for_another_domain_is_refused_unless_the_flag_allows_it() {
    let azure = Workload::start();
    azure.vault.put("db", "value");
    let out = Scratch::tmpfs("az-challenge");

    // 127.0.0.1 does not end in .vault.azure.net, the resource the challenge names.
    azure
        .identity(testkit::sidecar!())
        .arg("--ca-file")
        .arg(&ca().pem_file)
        .arg("--output-dir")
        .arg(&out.path)
        .arg("--secret")
        .arg(azure.reference("db"))
        .run()
        .expect_code(2)
        .expect_stderr("--azure-skip-challenge-resource-check");
    assert!(
        azure.entra.server.requests().is_empty(),
        "no token may be requested for a resource the vault's host does not belong to"
    );
    out.expect_empty();
}

#[test]
fn an_untrusted_server_certificate_is_refused() {
    let azure = Workload::start();
    azure.vault.put("db", "value");
    let out = Scratch::tmpfs("az-untrusted");

    // No --ca-file: the system roots do not include the test CA.
    azure
        .identity(testkit::sidecar!())
        .arg("--azure-skip-challenge-resource-check")
        .arg("--output-dir")
        .arg(&out.path)
        .arg("--secret")
        .arg(azure.reference("db"))
        .run()
        .expect_code(3)
        .expect_stderr("TLS certificate was refused");
    assert!(azure.vault.requests().is_empty());
    assert!(azure.entra.server.requests().is_empty());
    out.expect_empty();
}

/// The vault and Entra under their public names, reached through an HTTPS proxy, with
/// the test CA as the whole trust store (SSL_CERT_FILE): the pod's own configuration.
struct PublicNames {
    azure: Workload,
    proxy: ConnectProxy,
}

impl PublicNames {
    fn start() -> PublicNames {
        let azure = Workload::with_vault(|entra| {
            KeyVault::with_token(
                &entra.access_token,
                &format!("https://login.microsoftonline.com/{TENANT}"),
            )
        });
        let proxy = ConnectProxy::start(azure.entra.server.port, azure.vault.server.port);
        PublicNames { azure, proxy }
    }

    /// Exactly what the workload identity webhook injects, plus the proxy and trust store.
    fn pod(&self) -> Sidecar {
        testkit::sidecar!()
            .env("AZURE_CLIENT_ID", CLIENT_ID)
            .env("AZURE_TENANT_ID", TENANT)
            .env("AZURE_FEDERATED_TOKEN_FILE", &self.azure.token_file)
            .env("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com/")
            .env("HTTPS_PROXY", &self.proxy.url)
            .env("SSL_CERT_FILE", &ca().pem_file)
    }

    #[track_caller]
    fn assert_exchanged_through_public_names(&self) {
        let connects = self.proxy.connects();
        assert!(
            connects.contains(&"login.microsoftonline.com:443".to_owned())
                && connects.contains(&"my-vault.vault.azure.net:443".to_owned()),
            "{connects:?}"
        );
        let exchanges = self.azure.entra.token_requests();
        assert_eq!(exchanges.len(), 1);
        assert_eq!(exchanges[0]["client_assertion"], self.azure.token);
        for request in self.azure.vault.requests() {
            assert_eq!(request.header("host"), Some("my-vault.vault.azure.net"));
        }
        assert_eq!(
            self.azure.vault.requests()[1].header("authorization"),
            Some(format!("Bearer {}", self.azure.entra.access_token).as_str())
        );
    }
}

#[test]
fn a_pod_shaped_environment_publishes_with_nothing_else_configured() {
    let public = PublicNames::start();
    let version = public.azure.vault.put("db-password", "from the vault");
    let out = Scratch::tmpfs("az-pod");

    public
        .pod()
        .arg("--output-dir")
        .arg(&out.path)
        .arg("--secret")
        .arg("db=azure://my-vault/db-password")
        .run()
        .expect_code(0)
        .expect_stderr("credential=WorkloadIdentity")
        .expect_stderr("at https://login.microsoftonline.com/")
        .expect_stderr(&format!("version={version}"));
    assert_eq!(out.read("db"), b"from the vault");
    public.assert_exchanged_through_public_names();
}

#[test]
fn legacy_environment_of_the_original_init_container() {
    let public = PublicNames::start();
    public.azure.vault.put("db-password", "legacy value");
    let out = Scratch::tmpfs("az-legacy");

    public
        .pod()
        .env("AZURE_VAULT_NAME", "my-vault")
        .env("AZURE_SECRET_NAME", "db-password")
        .env("MOUNT_NAME", "db-creds")
        .arg("--output-dir")
        .arg(&out.path)
        .run()
        .expect_code(0);
    assert_eq!(out.read("db-creds"), b"legacy value");
    public.assert_exchanged_through_public_names();

    // Unlike the original, a failure is loud.
    let other = Scratch::tmpfs("az-legacy-missing");
    public
        .pod()
        .env("AZURE_VAULT_NAME", "my-vault")
        .env("AZURE_SECRET_NAME", "nope")
        .arg("--output-dir")
        .arg(&other.path)
        .run()
        .expect_code(4);
    other.expect_empty();
}

#[test]
fn managed_identity_through_the_app_service_endpoint() {
    let entra = Entra::start("unused");
    let vault = KeyVault::start(&entra);
    vault.put("db", "via managed identity");
    let identity = AppServiceIdentity::start(&entra.access_token, Some(CLIENT_ID));
    let out = Scratch::tmpfs("az-managed");

    testkit::sidecar!()
        .env("IDENTITY_ENDPOINT", identity.endpoint())
        .env("IDENTITY_HEADER", &identity.header_secret)
        .env("AZURE_CLIENT_ID", CLIENT_ID)
        .args(["--azure-skip-challenge-resource-check", "--ca-file"])
        .arg(&ca().pem_file)
        .arg("--output-dir")
        .arg(&out.path)
        .arg("--secret")
        .arg(format!("db=azure://{}", vault.secret_url("db")))
        .env("RUST_LOG", "trace")
        .run()
        .expect_code(0)
        .expect_stderr("credential=ManagedIdentity")
        .expect_stderr(&format!(
            "user-assigned identity {CLIENT_ID} from the App Service"
        ))
        .expect_no_leak(identity.header_secret.as_bytes())
        .expect_no_leak(entra.access_token.as_bytes());
    assert_eq!(out.read("db"), b"via managed identity");
    assert_eq!(identity.server.requests().len(), 1);
    assert!(entra.server.requests().is_empty());
}

#[test]
fn the_developer_credential_is_used_only_when_asked_for() {
    let azure = Workload::start();
    azure.vault.put("db", "via az");
    let bin = Scratch::disk("az-bin");
    let log = bin.path.join("az.log");
    let script = bin.path.join("az");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{log}'\n\
             printf '{{\"accessToken\":\"%s\",\"expiresOn\":\"2099-01-01 00:00:00.000000\",\"expires_on\":%s,\"subscription\":\"s\",\"tenant\":\"{TENANT}\",\"tokenType\":\"Bearer\"}}\\n' \
             '{token}' \"$(( $(date +%s) + 3600 ))\"\n",
            log = log.display(),
            token = azure.entra.access_token,
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.path.display(), std::env::var("PATH").unwrap());
    let out = Scratch::tmpfs("az-developer");

    // With the workload identity present and no choice made, az is not consulted.
    sidecar(&azure, &out)
        .env("PATH", &path)
        .arg("--secret")
        .arg(format!("db={}", azure.reference("db")))
        .run()
        .expect_code(0)
        .expect_stderr("credential=WorkloadIdentity");
    assert!(!log.exists(), "az ran without being asked for");

    // Asked for: the Azure CLI's token, for the scope the vault's challenge named.
    testkit::sidecar!()
        .env("PATH", &path)
        .args(["--azure-credential", "developer"])
        .args(["--azure-skip-challenge-resource-check", "--ca-file"])
        .arg(&ca().pem_file)
        .arg("--output-dir")
        .arg(&out.path)
        .arg("--secret")
        .arg(format!("db={}", azure.reference("db")))
        .run()
        .expect_code(0)
        .expect_stderr("credential=DeveloperTools")
        .expect_no_leak(azure.entra.access_token.as_bytes());
    assert_eq!(out.read("db"), b"via az");
    let calls = fs::read_to_string(&log).unwrap();
    assert_eq!(
        calls.trim(),
        format!("account get-access-token -o json --scope {SCOPE}")
    );
}

#[test]
fn managed_identity_through_the_instance_metadata_service() {
    let entra = Entra::start("unused");
    let vault = KeyVault::start(&entra);
    vault.put("db", "via imds");
    let imds = Imds::start(&entra.access_token, None);
    let out = Scratch::tmpfs("az-imds");

    // No identity variables at all: the system-assigned identity, from IMDS.
    testkit::sidecar!()
        .env("HTTP_PROXY", &imds.server.url)
        .args(["--azure-skip-challenge-resource-check", "--ca-file"])
        .arg(&ca().pem_file)
        .arg("--output-dir")
        .arg(&out.path)
        .arg("--secret")
        .arg(format!("db=azure://{}", vault.secret_url("db")))
        .run()
        .expect_code(0)
        .expect_stderr("credential=ManagedIdentity")
        .expect_stderr("the system-assigned identity from the instance metadata service");
    assert_eq!(out.read("db"), b"via imds");
    let requests = imds.server.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_agent(&requests[0]);
    assert!(entra.server.requests().is_empty());
}

#[test]
fn an_oversized_answer_is_cut_off_as_bad_data() {
    let azure = Workload::start();
    azure.vault.put("huge", &"x".repeat(5 * 1024 * 1024));
    let out = Scratch::tmpfs("az-huge");

    sidecar(&azure, &out)
        .arg("--secret")
        .arg(azure.reference("huge"))
        .run()
        .expect_code(7)
        .expect_stderr("the response is larger than 4194304 bytes");
    out.expect_empty();
}

/// Issue 19: the token is asked for while the vault's 401 challenge is still on its way,
/// not after it: this vault holds its challenge until Entra ID has received a token
/// request (or three seconds have passed), and says which came first.
#[test]
fn the_token_is_requested_before_the_challenge_comes_back() {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let token = testkit::azure::projected_token();
    let entra = Arc::new(Entra::start(&token));
    let files = Scratch::disk("az-early-token");
    let token_file = files.path.join("token");
    fs::write(&token_file, &token).unwrap();
    let challenged_after_token = Arc::new(Mutex::new(Vec::new()));
    let (log, issuer, bearer) = (
        Arc::clone(&challenged_after_token),
        Arc::clone(&entra),
        format!("Bearer {}", entra.access_token),
    );
    let vault = testkit::tls::HttpsServer::with_handler(move |request| {
        if request.header("authorization") == Some(bearer.as_str()) {
            return testkit::http::Response::json(
                200,
                r#"{"value":"early","id":"https://v/secrets/db/1"}"#,
            );
        }
        let waiting = Instant::now();
        while issuer.token_requests().is_empty() && waiting.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(10));
        }
        log.lock()
            .unwrap()
            .push(!issuer.token_requests().is_empty());
        testkit::azure::kv_error(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.", None)
            .header("www-authenticate", r#"Bearer authorization="https://login.microsoftonline.com/t", resource="https://vault.azure.net""#)
    });
    let out = Scratch::tmpfs("az-early");
    testkit::sidecar!()
        .env("AZURE_CLIENT_ID", CLIENT_ID)
        .env("AZURE_TENANT_ID", TENANT)
        .env("AZURE_FEDERATED_TOKEN_FILE", &token_file)
        .env("AZURE_AUTHORITY_HOST", entra.authority_host())
        .args(["--azure-skip-challenge-resource-check", "--ca-file"])
        .arg(&ca().pem_file)
        .arg("--output-dir")
        .arg(&out.path)
        .arg("--secret")
        .arg(format!("db=azure://{}/secrets/db", vault.url))
        .run()
        .expect_code(0);
    assert_eq!(out.read("db"), b"early");
    assert_eq!(
        *challenged_after_token.lock().unwrap(),
        [true],
        "the token request waited for the challenge"
    );
    assert_eq!(entra.token_requests().len(), 1);
}

/// Issue 19: the vault's host is looked up once for every connection the run opens to it
/// (the reads in flight together), not once per connection.
#[test]
fn the_vault_host_is_looked_up_once_for_all_its_connections() {
    let token = testkit::azure::projected_token();
    let entra = Entra::start(&token);
    let files = Scratch::disk("az-dns-token");
    let token_file = files.path.join("token");
    fs::write(&token_file, &token).unwrap();
    let bearer = format!("Bearer {}", entra.access_token);
    let vault = testkit::tls::HttpsServer::with_handler(move |request| {
        if request.header("authorization") != Some(bearer.as_str()) {
            return testkit::azure::kv_error(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.", None)
                .header("www-authenticate", r#"Bearer authorization="https://login.microsoftonline.com/t", resource="https://vault.azure.net""#);
        }
        // Slow enough that the reads overlap and each needs its own connection.
        std::thread::sleep(std::time::Duration::from_millis(100));
        testkit::http::Response::json(200, r#"{"value":"v","id":"https://v/secrets/db/1"}"#)
    });
    let out = Scratch::tmpfs("az-dns");
    let mut sidecar = testkit::sidecar!()
        .env("AZURE_CLIENT_ID", CLIENT_ID)
        .env("AZURE_TENANT_ID", TENANT)
        .env("AZURE_FEDERATED_TOKEN_FILE", &token_file)
        .env("AZURE_AUTHORITY_HOST", entra.authority_host())
        .env("RUST_LOG", "secret_sidecar=debug")
        .args(["--azure-skip-challenge-resource-check", "--ca-file"])
        .arg(&ca().pem_file)
        .args(["--concurrency", "4", "--output-dir"])
        .arg(&out.path);
    for i in 0..8 {
        sidecar = sidecar.arg("--secret").arg(format!(
            "s{i}=azure://https://localhost:{}/secrets/db-{i}",
            vault.port
        ));
    }
    let run = sidecar.run();
    run.expect_code(0);
    assert_eq!(out.read("s7"), b"v");

    assert!(
        vault.connections() >= 4,
        "{} connections: the reads did not overlap",
        vault.connections()
    );
    let lookups: Vec<&str> = (run.stderr.lines())
        .filter(|line| line.contains("looking up host") && line.contains("localhost"))
        .collect();
    assert_eq!(lookups.len(), 1, "{}", run.stderr);
}
