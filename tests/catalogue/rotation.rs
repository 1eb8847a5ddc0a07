//! A projected token rotated under the reader, the way kubelet rotates one: the
//! web-identity exchange keeps working, and what reaches the token service is always one
//! whole token that was written, never an empty or partial one.

use testkit::projected::Projected;
use testkit::{Run, SENTINEL, Scratch, Sidecar};

/// Runs the binary `runs` times while `projected` rotates as fast as it can; returns the
/// runs and how many rotations happened meanwhile. Each run reads the token once, so the
/// more runs, the likelier one lands in the moment between a swap and the removal of the
/// previous generation (unless such a read is retried, about one run in a hundred fails).
fn race(
    projected: &Projected,
    runs: usize,
    sidecar: impl Fn(&Scratch) -> Sidecar,
) -> (Vec<Run>, usize) {
    projected.rotate(|n| testkit::fake_jwt(&format!("system:serviceaccount:default:app-{n}")));
    let runs = (0..runs)
        .map(|_| {
            let out = Scratch::tmpfs("rotation");
            let run = sidecar(&out).run();
            if run.code == 0 {
                assert_eq!(out.read("db"), SENTINEL.as_bytes());
            }
            run
        })
        .collect();
    (runs, projected.stop())
}

/// Every run succeeded, the token rotated many times meanwhile, and each token the token
/// service received (one per run) is one that was written, whole, and never printed.
#[track_caller]
fn expect_whole_tokens(runs: &[Run], rotations: usize, received: &[String], projected: &Projected) {
    for run in runs {
        run.expect_code(0);
    }
    assert!(
        rotations > runs.len(),
        "the token rotated only {rotations} times"
    );
    assert_eq!(received.len(), runs.len(), "one exchange per run");
    let written = projected.written();
    let written = written.lock().unwrap();
    for token in received {
        assert!(
            written.contains(token),
            "the token service got {} bytes that were never a whole token",
            token.len()
        );
        for run in runs {
            run.expect_no_leak(token.as_bytes());
        }
    }
}

/// Runs per provider, a trade between the odds of meeting the race and the suite's time
/// (a run under TLS with Entra or Google STS takes three times an AWS one).
const RUNS: usize = 10;

#[cfg(feature = "aws")]
#[test]
fn irsa_exchanges_a_whole_token_while_kubelet_rotates_it() {
    use testkit::sts::Sts;
    let sts = Sts::start();
    let secrets = testkit::http::Server::start(vec![testkit::faults::Provider::Aws.ok()]);
    let projected = Projected::new(testkit::fake_jwt("system:serviceaccount:default:app"));
    let (runs, rotations) = race(&projected, 3 * RUNS, |out| {
        testkit::sidecar!()
            .assuming_role(sts.url(), "arn:aws:iam::000000000000:role/app")
            .env("AWS_WEB_IDENTITY_TOKEN_FILE", &projected.path)
            .env("AWS_ENDPOINT_URL", &secrets.url)
            .arg("--output-dir")
            .arg(&out.path)
            .args(["--secret", "db=aws://db", "--timeout", "20s"])
    });
    expect_whole_tokens(&runs, rotations, &sts.tokens(), &projected);
}

#[cfg(feature = "azure")]
#[test]
fn azure_workload_identity_presents_a_whole_token_while_kubelet_rotates_it() {
    use testkit::azure::{CLIENT_ID, Entra, KeyVault, TENANT, projected_token};
    let projected = Projected::new(projected_token());
    let written = projected.written();
    let entra = Entra::accepting(move |presented| written.lock().unwrap().contains(presented));
    let vault = KeyVault::start(&entra);
    vault.put("db", SENTINEL);
    let (runs, rotations) = race(&projected, RUNS, |out| {
        testkit::sidecar!()
            .env("AZURE_CLIENT_ID", CLIENT_ID)
            .env("AZURE_TENANT_ID", TENANT)
            .env("AZURE_FEDERATED_TOKEN_FILE", &projected.path)
            .env("AZURE_AUTHORITY_HOST", entra.authority_host())
            .arg("--azure-skip-challenge-resource-check")
            .arg("--ca-file")
            .arg(&testkit::tls::ca().pem_file)
            .arg("--output-dir")
            .arg(&out.path)
            .args([
                "--secret",
                &format!("db=azure://{}", vault.secret_url("db")),
                "--timeout",
                "20s",
            ])
    });
    let presented: Vec<String> = entra
        .token_requests()
        .into_iter()
        .filter_map(|mut form| form.remove("client_assertion"))
        .collect();
    expect_whole_tokens(&runs, rotations, &presented, &projected);
}

#[cfg(feature = "gcp")]
#[test]
fn google_federation_exchanges_a_whole_token_while_kubelet_rotates_it() {
    use testkit::gcp::{SecretManager, Sts, external_account_file, pool_audience};
    const ACCESS_TOKEN: &str = "ya29.rotation-federated-access-token";
    let projected = Projected::new(testkit::fake_jwt("system:serviceaccount:default:app"));
    let written = projected.written();
    let audience = pool_audience("my-pool", "my-cluster");
    let sts = Sts::accepting(
        &audience,
        move |presented| written.lock().unwrap().contains(presented),
        ACCESS_TOKEN,
    );
    let secrets = SecretManager::start(ACCESS_TOKEN);
    secrets.add("projects/my-project/secrets/db", SENTINEL.as_bytes());
    let files = Scratch::disk("rotation-gcp");
    let config = files.path.join("credential-configuration.json");
    std::fs::write(
        &config,
        external_account_file(&audience, &sts.token_url(), &projected.path, None),
    )
    .unwrap();
    let (runs, rotations) = race(&projected, RUNS, |out| {
        testkit::sidecar!()
            .env("HOME", "/nonexistent/home")
            .env("GOOGLE_APPLICATION_CREDENTIALS", &config)
            .args(["--gcp-endpoint", &secrets.url(), "--output-dir"])
            .arg(&out.path)
            .args(["--secret", "db=gcp://my-project/db", "--timeout", "20s"])
    });
    let presented: Vec<String> = sts
        .requests()
        .iter()
        .filter_map(|request| testkit::http::form(&request.body).remove("subject_token"))
        .collect();
    expect_whole_tokens(&runs, rotations, &presented, &projected);
}
