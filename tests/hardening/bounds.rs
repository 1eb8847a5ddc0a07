//! Issue 14, low items on bounds: `--timeout` bounds the whole process, even with a DNS
//! lookup stuck in a blocking thread; every AWS response is capped, credential endpoints
//! included; a run holds at most 16 MiB of secrets; batch reads share `--concurrency`.

use std::time::Duration;

use testkit::http::Fault;
use testkit::pod_identity::{Agent, SECRET_ACCESS_KEY, SESSION_TOKEN};
use testkit::process::is_root;
use testkit::secretsmanager::SecretsManager;
use testkit::sts::{self, Sts};
use testkit::{Scratch, Sidecar, fake_jwt};

/// Root only (a network and a mount namespace). The resolver in `/etc/resolv.conf` is an
/// address on a link where nothing answers, asked 4 times for 5 seconds each: a lookup
/// blocks a thread for 20 seconds or more. With `--timeout 2s` the run must end, exit 5,
/// in about 2 seconds; dropping the runtime used to wait for the lookup (12 s here).
#[test]
fn timeout_bounds_the_whole_process_with_a_resolver_that_never_answers() {
    if !is_root() {
        eprintln!("skipped: not root, so no network namespace with a silent resolver");
        return;
    }
    let files = Scratch::disk("silent-resolver");
    let resolv = files.path.join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 10.99.99.2\noptions timeout:5 attempts:4\n",
    )
    .unwrap();
    let out = Scratch::tmpfs("silent-resolver");
    // 10.99.99.2 sits on a veth whose other end has no address: queries leave and are
    // never answered, not even refused.
    let script = r#"
        ip link set lo up && ip link add v0 type veth peer name v1 &&
        ip addr add 10.99.99.1/24 dev v0 && ip link set v0 up && ip link set v1 up &&
        mount --bind "$RESOLV" /etc/resolv.conf || exit 99
        start=$(date +%s%N); "$@"; code=$?; end=$(date +%s%N)
        echo "== exit $code after $(( (end - start) / 1000000 )) ms" >&2"#;
    let run = testkit::sidecar!()
        .env("AWS_ENDPOINT_URL", "https://secretsmanager.hardening.test")
        .env("RESOLV", &resolv)
        .args(["--secret", "db=aws://db", "--timeout", "2s", "--output-dir"])
        .arg(&out.path)
        .run_under(&["unshare", "-m", "-n", "sh", "-c", script, "sh"]);
    let outcome = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("== exit "))
        .unwrap_or_else(|| panic!("the namespace was not set up:\n{}", run.stderr));
    let (code, ms) = outcome.split_once(" after ").unwrap();
    let ms: u64 = ms.trim_end_matches(" ms").parse().unwrap();
    assert_eq!(code, "5", "{}", run.stderr);
    assert!(ms < 6000, "the process took {ms} ms with --timeout 2s");
    out.expect_empty();
}

/// No AWS keys of its own: the web identity token file and STS at `sts`.
fn irsa(sts: &Sts, files: &Scratch, out: &Scratch) -> Sidecar {
    let token_file = files.path.join("token");
    std::fs::write(&token_file, fake_jwt("system:serviceaccount:default:app")).unwrap();
    let store = SecretsManager::start();
    store
        .configure(testkit::sidecar!())
        .assuming_role(sts.url(), "arn:aws:iam::000000000000:role/app")
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", token_file)
        .args(["--secret", "db=aws://db", "--timeout", "3s", "--output-dir"])
        .arg(&out.path)
}

/// STS and a container credentials endpoint that stream without end: cut off at the 4 MiB
/// cap as the answer streams in, so memory stays small, and the run fails as an identity
/// failure (these endpoints had no cap: they were read until the deadline).
#[test]
fn endless_credential_answers_are_cut_off_at_the_cap() {
    let files = Scratch::disk("endless-credentials");
    let out = Scratch::tmpfs("endless-credentials");
    let endless = sts::credentials("2099-01-01T00:00:00Z").fault(Fault::Endless);
    let sts = Sts::answering(endless);
    let (run, peak) = irsa(&sts, &files, &out).run_measuring_memory();
    let mib = peak >> 20;
    eprintln!("endless STS answer: peak resident memory {mib} MiB");
    assert!(mib < 64, "peak {mib} MiB: the cap did not hold");
    // aws-config reports it as credentials it could not load.
    run.expect_code(3).expect_stderr("length limit exceeded");

    let endless = Agent::credentials().fault(Fault::Endless);
    let agent = Agent::start(vec![endless]);
    let store = SecretsManager::start();
    let (run, peak) = store
        .configure(testkit::sidecar!())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", agent.full_uri())
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &agent.token_file)
        .args(["--secret", "db=aws://db", "--timeout", "3s", "--output-dir"])
        .arg(&out.path)
        .run_measuring_memory();
    let mib = peak >> 20;
    eprintln!("endless container credentials: peak resident memory {mib} MiB");
    assert!(mib < 64, "peak {mib} MiB: the cap did not hold");
    run.expect_code(3).expect_stderr("length limit exceeded");
    for secret in [SECRET_ACCESS_KEY, SESSION_TOKEN, &agent.token] {
        run.expect_no_leak(secret.as_bytes());
    }
    out.expect_empty();
}

/// Five answers of 3.5 MiB each, every one under the 4 MiB per-answer cap: together past
/// the 16 MiB a run may hold, so the run fails with bad data and publishes nothing.
#[test]
fn a_run_holds_at_most_sixteen_mebibytes_of_secrets() {
    let store = SecretsManager::start();
    let big = "x".repeat(3584 * 1024);
    let mut sidecar = store.configure(testkit::sidecar!());
    for i in 0..5 {
        store.put(&format!("big{i}"), big.clone());
        sidecar = sidecar.arg("--secret").arg(format!("big{i}=aws://big{i}"));
    }
    let out = Scratch::tmpfs("total-cap");
    sidecar
        .args(["--aws-batch", "never", "--concurrency", "1", "--output-dir"])
        .arg(&out.path)
        .run()
        .expect_code(7)
        .expect_stderr("more than 16777216 bytes");
    out.expect_empty();
}

/// 100 secrets are 5 BatchGetSecretValue calls of 20; with `--concurrency 2` no more than
/// two are in flight at once (they all went out together).
#[test]
fn batch_reads_share_the_concurrency_bound() {
    let store = SecretsManager::with_batch_delay(Duration::from_millis(300));
    let mut sidecar = store.configure(testkit::sidecar!());
    for i in 0..100 {
        store.put(&format!("s{i:03}"), format!("value {i}"));
        sidecar = sidecar
            .arg("--secret")
            .arg(format!("s{i:03}=aws://s{i:03}"));
    }
    let out = Scratch::tmpfs("batch-concurrency");
    sidecar
        .args(["--concurrency", "2", "--output-dir"])
        .arg(&out.path)
        .run()
        .expect_code(0);
    assert_eq!(out.read("s042"), b"value 42");
    assert_eq!(store.calls("BatchGetSecretValue"), 5);
    assert_eq!(store.calls("GetSecretValue"), 0);
    assert_eq!(store.most_batch_calls_at_once(), 2);
}
