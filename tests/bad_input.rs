#![cfg(feature = "aws")]
//! Hostile and broken inputs that are not the network's fault: token files, credential
//! endpoints off the SDK's allowlist, output filesystems that refuse writes, and symbolic
//! links planted in the output directory. The real binary; nothing outside the output
//! directory may change, and nothing half-written may stay inside it.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use testkit::http::{Response, Server};
use testkit::localstack::Seeder;
use testkit::sts::{SECRET_ACCESS_KEY, SESSION_TOKEN, Sts};
use testkit::{SENTINEL, Scratch, Sidecar, fake_jwt, unique};

/// IRSA-shaped: no static keys, a role, a token file; STS is the fake, Secrets Manager
/// is LocalStack.
fn irsa(out: &Scratch, sts: &Sts, token_file: &Path) -> Sidecar {
    testkit::sidecar!()
        .assuming_role(sts.url(), "arn:aws:iam::000000000000:role/secret-reader")
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", token_file)
        .arg("--output-dir")
        .arg(&out.path)
}

#[test]
fn token_files_sts_rejects_are_identity_failures() {
    let mut seed = Seeder::connect();
    let name = unique("token");
    seed.string(&name, SENTINEL);
    let out = Scratch::tmpfs("token");
    let dir = Scratch::disk("token-files");
    let expired = {
        let token = fake_jwt("system:serviceaccount:default:app");
        // Rewrite the payload with an expiry in the past.
        let parts: Vec<&str> = token.split('.').collect();
        let payload = r#"{"iss":"https://oidc.example.test","sub":"system:serviceaccount:default:app","aud":"sts.amazonaws.com","exp":1000000000}"#;
        let encoded = testkit::base64(payload.as_bytes())
            .replace('+', "-")
            .replace('/', "_");
        format!(
            "{}.{}.{}",
            parts[0],
            encoded.trim_end_matches('='),
            parts[2]
        )
    };
    let cases = [
        ("empty", String::new(), "InvalidIdentityToken"),
        ("whitespace", "  \n\t ".to_owned(), "InvalidIdentityToken"),
        (
            "not a JWT",
            "definitely-not-a-jwt".to_owned(),
            "InvalidIdentityToken",
        ),
        ("expired", expired, "ExpiredTokenException"),
    ];
    for (what, content, code) in cases {
        let sts = Sts::start();
        let file = dir.path.join(what.replace(' ', "-"));
        fs::write(&file, &content).unwrap();
        irsa(&out, &sts, &file)
            .env("RUST_LOG", "trace")
            .arg("--secret")
            .arg(format!("s=aws://{name}"))
            .run()
            .expect_code(3)
            .expect_stderr(code)
            .expect_no_leak(SENTINEL.as_bytes());
        assert_eq!(
            sts.tokens(),
            std::slice::from_ref(&content),
            "{what}: STS must receive the file as it is"
        );
        out.expect_empty();
    }

    // A good token: STS's credentials sign the Secrets Manager call, and neither they nor
    // the value show up anywhere, even at trace level.
    let sts = Sts::start();
    let file = dir.path.join("good");
    let token = fake_jwt("system:serviceaccount:default:app");
    fs::write(&file, &token).unwrap();
    let run = irsa(&out, &sts, &file)
        .env("RUST_LOG", "trace")
        .arg("--secret")
        .arg(format!("s=aws://{name}"))
        .run();
    run.expect_code(0)
        .expect_stderr("AWS identity loaded source=WebIdentityToken")
        .expect_no_leak(SENTINEL.as_bytes())
        .expect_no_leak(SESSION_TOKEN.as_bytes())
        .expect_no_leak(SECRET_ACCESS_KEY.as_bytes())
        .expect_no_leak(token.as_bytes());
    assert_eq!(sts.tokens(), [token]);
    assert_eq!(out.read("s"), SENTINEL.as_bytes());
}

#[test]
fn a_container_credentials_uri_off_the_allowlist_is_refused() {
    // The SDK only accepts loopback, the ECS and EKS link-local addresses, or https; a
    // name that does not resolve is refused before any connection is attempted.
    let out = Scratch::tmpfs("full-uri");
    testkit::sidecar!()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://credentials.example.invalid/v1/creds",
        )
        .arg("--output-dir")
        .arg(&out.path)
        .args(["--secret", "aws://db", "--timeout", "20s"])
        .run()
        .expect_code(3)
        .expect_stderr("invalid full URI");
    out.expect_empty();
}

/// Runs the binary in a private mount namespace with `mount_options` for a fresh tmpfs
/// at the output directory; returns the run and what the directory held afterwards.
fn in_private_tmpfs(mount_options: &str, server: &Server) -> (i32, String, String) {
    let out = Scratch::tmpfs("private-mount");
    let script = format!(
        "mount -t tmpfs -o {mount_options} tmpfs \"$0\" && \"$@\"; code=$?; echo \"== left: $(ls -A \"$0\" | tr '\\n' ' ')\" >&2; exit $code"
    );
    let run = testkit::sidecar!()
        .env("AWS_ENDPOINT_URL", &server.url)
        .args([
            "--secret",
            "db=aws://db",
            "--timeout",
            "20s",
            "--output-dir",
        ])
        .arg(&out.path)
        .run_under(&[
            "unshare",
            "-m",
            "sh",
            "-c",
            &script,
            out.path.to_str().unwrap(),
        ]);
    let stderr = run.stderr;
    let left = stderr
        .lines()
        .find_map(|l| l.strip_prefix("== left: "))
        .unwrap_or("?")
        .trim()
        .to_owned();
    (run.code, stderr, left)
}

#[test]
fn a_read_only_or_full_output_filesystem_exits_6_and_leaves_nothing() {
    if !testkit::process::is_root() {
        eprintln!("not root: cannot mount a private tmpfs");
        return;
    }
    let big = "x".repeat(64 * 1024);
    let server = Server::start(vec![Response::json(
        200,
        format!(r#"{{"Name":"db","VersionId":"v1","SecretString":"{big}"}}"#),
    )]);

    let (code, stderr, left) = in_private_tmpfs("ro,size=1m", &server);
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert_eq!(left, "", "read-only: {stderr}");

    // 16 KiB cannot hold a 64 KiB secret: ENOSPC mid-write, and the partial staging
    // directory is removed again.
    let (code, stderr, left) = in_private_tmpfs("size=16k", &server);
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert_eq!(left, "", "full: {stderr}");
}

#[test]
fn planted_symlinks_are_never_followed() {
    let server = Server::start(vec![Response::json(
        200,
        r#"{"Name":"db","VersionId":"v1","SecretString":"new"}"#,
    )]);
    let outside = Scratch::disk("outside");
    let victim = outside.path.join("victim");
    fs::write(&victim, "untouched").unwrap();
    fs::create_dir(outside.path.join("victim-dir")).unwrap();
    fs::write(outside.path.join("victim-dir/keep"), "untouched").unwrap();

    let run = |out: &Scratch| {
        testkit::sidecar!()
            .env("AWS_ENDPOINT_URL", &server.url)
            .arg("--output-dir")
            .arg(&out.path)
            .args(["--secret", "db=aws://db"])
            .run()
    };

    // A link where the file should go, pointing outside.
    let out = Scratch::tmpfs("planted-file");
    symlink(&victim, out.path.join("db")).unwrap();
    run(&out)
        .expect_code(6)
        .expect_stderr("not a link secret-sidecar made");

    // ..data pointing outside, and a staging-looking link to a directory outside.
    let out = Scratch::tmpfs("planted-data");
    symlink(outside.path.join("victim-dir"), out.path.join("..data")).unwrap();
    run(&out).expect_code(6).expect_stderr("..data");
    let out = Scratch::tmpfs("planted-staging");
    symlink(
        outside.path.join("victim-dir"),
        out.path.join("..sidecar.1.2.3.0"),
    )
    .unwrap();
    symlink("..sidecar.1.2.3.0", out.path.join("..data_tmp")).unwrap();
    run(&out).expect_code(0);
    assert_eq!(out.read("db"), b"new");

    assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
    assert_eq!(
        fs::read_to_string(outside.path.join("victim-dir/keep")).unwrap(),
        "untouched"
    );
    assert_eq!(
        fs::read_dir(outside.path.join("victim-dir"))
            .unwrap()
            .count(),
        1
    );
}
