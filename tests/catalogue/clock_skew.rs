//! A node whose clock is off: the real binary under `faketime` (libfaketime, so the test
//! binary must be a glibc build), against a Secrets Manager that checks SigV4 time the way
//! AWS does (`testkit/src/clock.rs`). The refusal is an identity failure, exit 3, after one
//! request: retrying with the same clock cannot help, so there is no retry storm.
//!
//! What is real here: the skewed clock, the SDK's signing with it, the exit code. What is
//! faked: AWS's answer. LocalStack accepts any signing time (checked with ±15 minutes and
//! +3 hours), so it cannot stand in for AWS here.

use std::path::Path;
use std::process::Command;

use testkit::clock::SigningClock;
use testkit::faults::Provider;
use testkit::sts::{SESSION_TOKEN, Sts};
use testkit::{Run, SENTINEL, Scratch, Sidecar};

/// Whether `faketime` is installed and works on this binary (a static or musl build would
/// ignore it); says why not otherwise, for the skip message.
fn faketime() -> Result<(), String> {
    let probe = Command::new("faketime")
        .args(["-f", "+1d", "date", "+%s"])
        .output()
        .map_err(|err| format!("faketime is not installed ({err}); apt-get install faketime"))?;
    let shifted: u64 = String::from_utf8_lossy(&probe.stdout)
        .trim()
        .parse()
        .map_err(|_| "faketime did not run date".to_owned())?;
    if shifted < testkit::clock::now() + 86_000 {
        return Err("faketime does not shift the clock here".to_owned());
    }
    let elf = std::fs::read(testkit::binary!()).map_err(|err| err.to_string())?;
    let needle = b"libc.so.6";
    if !elf.windows(needle.len()).any(|w| w == needle) {
        return Err(
            "the binary is not linked against glibc; libfaketime cannot reach it".to_owned(),
        );
    }
    Ok(())
}

macro_rules! skip_without_faketime {
    () => {
        if let Err(why) = faketime() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

/// Runs `sidecar` publishing `aws://db` into `out` with the clock moved by `offset`.
fn skewed(sidecar: Sidecar, out: &Scratch, offset: &str) -> Run {
    sidecar
        .env("RUST_LOG", "trace")
        .arg("--output-dir")
        .arg(&out.path)
        .args(["--secret", "db=aws://db", "--timeout", "20s"])
        .run_under(&["faketime", "-f", offset])
}

#[track_caller]
fn expect_refused_once(run: &Run, aws: &SigningClock, out: &Scratch, says: &str) {
    run.expect_code(3)
        .expect_stderr(says)
        .expect_no_leak(SENTINEL.as_bytes());
    assert_eq!(aws.requests().len(), 1, "retried\n{}", run.stderr);
    out.expect_empty();
}

#[test]
fn a_clock_ahead_or_behind_is_an_identity_failure_without_retries() {
    skip_without_faketime!();
    for (offset, says) in [
        (
            "+15m",
            "InvalidSignatureException: Signature not yet current",
        ),
        ("-20m", "InvalidSignatureException: Signature expired"),
    ] {
        let aws = SigningClock::start(Provider::Aws.ok());
        let out = Scratch::tmpfs("skew");
        let run = skewed(
            testkit::sidecar!().env("AWS_ENDPOINT_URL", &aws.server.url),
            &out,
            offset,
        );
        expect_refused_once(&run, &aws, &out, says);
    }

    // The same fake with the right time serves the secret: it is the clock it refused.
    let aws = SigningClock::start(Provider::Aws.ok());
    let out = Scratch::tmpfs("skew-none");
    skewed(
        testkit::sidecar!().env("AWS_ENDPOINT_URL", &aws.server.url),
        &out,
        "+0",
    )
    .expect_code(0);
    assert_eq!(out.read("db"), SENTINEL.as_bytes());
}

#[test]
fn credentials_aws_holds_expired_are_an_identity_failure_exchanged_once() {
    skip_without_faketime!();
    // Role credentials that AWS, by its clock, holds expired while the process, by its
    // own clock, takes them for fresh (a few minutes behind: within what AWS allows a
    // signature, so only the credentials are refused).
    let sts = Sts::start();
    let aws = SigningClock::start(Provider::Aws.ok());
    aws.expire(SESSION_TOKEN);
    let files = Scratch::tmpfs("skew-token");
    let token = files.path.join("token");
    std::fs::write(
        &token,
        testkit::fake_jwt("system:serviceaccount:default:app"),
    )
    .unwrap();
    let out = Scratch::tmpfs("skew-expired");
    let run = skewed(
        irsa(&sts, &aws, &token),
        &out,
        // Inside the signature's 5 minutes, so only the credentials are wrong.
        "-4m",
    );
    expect_refused_once(&run, &aws, &out, "ExpiredTokenException");
    run.expect_no_leak(SESSION_TOKEN.as_bytes());
    assert_eq!(sts.tokens().len(), 1, "exchanged again\n{}", run.stderr);
}

fn irsa(sts: &Sts, aws: &SigningClock, token: &Path) -> Sidecar {
    testkit::sidecar!()
        .assuming_role(sts.url(), "arn:aws:iam::000000000000:role/app")
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", token)
        .env("AWS_ENDPOINT_URL", &aws.server.url)
}
