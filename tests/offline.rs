#![cfg(feature = "aws")]
//! Failures that must be caught before any network call: usage, file names, the output
//! directory. The endpoint points at a closed port, so a test that reached the network
//! would see exit 5 instead of the code it expects.

use std::fs;
use std::os::unix::fs::symlink;

use testkit::{Scratch, Sidecar};

const CLOSED: &str = "http://127.0.0.1:9";

fn offline() -> Sidecar {
    testkit::sidecar!().env("AWS_ENDPOINT_URL", CLOSED)
}

#[test]
fn help_documents_every_exit_code() {
    let run = offline().arg("--help").run();
    run.expect_code(0);
    for code in 0..=7 {
        assert!(
            run.stdout.contains(&format!("\n  {code}  ")),
            "--help lacks exit code {code}"
        );
    }
    assert!(run.stdout.contains("SECRET_SIDECAR_OUTPUT_DIR"));
}

#[test]
fn usage_errors_exit_2_and_touch_nothing() {
    let out = Scratch::tmpfs("usage");
    let dir = out.path.to_str().unwrap();
    let cases: Vec<Vec<String>> = vec![
        vec![],
        vec!["--output-dir".into(), dir.into()],
        vec!["--secret".into(), "aws://x".into()],
        vec![
            "--output-dir".into(),
            dir.into(),
            "--secret".into(),
            "prod/db".into(),
        ],
        vec![
            "--output-dir".into(),
            dir.into(),
            "--secret".into(),
            "vault://x".into(),
        ],
        vec![
            "--output-dir".into(),
            dir.into(),
            "--secret".into(),
            "aws://x?bogus=1".into(),
        ],
        vec![
            "--output-dir".into(),
            dir.into(),
            "--secret".into(),
            "aws://x?version-stage=A&version-id=B".into(),
        ],
        vec![
            "--output-dir".into(),
            dir.into(),
            "--secret".into(),
            "aws://x".into(),
            "--mode".into(),
            "4755".into(),
        ],
        vec![
            "--output-dir".into(),
            dir.into(),
            "--secret".into(),
            "aws://x".into(),
            "--owner".into(),
            "app".into(),
        ],
        vec![
            "--output-dir".into(),
            dir.into(),
            "--secret".into(),
            "aws://x".into(),
            "--timeout".into(),
            "soon".into(),
        ],
        vec!["--output-dir".into(), dir.into(), "--no-such-flag".into()],
        vec![
            "--output-dir".into(),
            dir.into(),
            "--secret".into(),
            "aws://x".into(),
            "--ca-file".into(),
            "/nonexistent.pem".into(),
        ],
        vec![
            "--output-dir".into(),
            dir.into(),
            "--secret".into(),
            "aws://x".into(),
            "--ca-file".into(),
            "/etc/hostname".into(),
        ],
    ];
    for args in cases {
        let run = offline().args(&args).run();
        assert_eq!(run.code, 2, "{args:?} gave {}:\n{}", run.code, run.stderr);
        out.expect_empty();
    }
}

#[test]
fn path_traversal_table() {
    let out = Scratch::tmpfs("paths");
    let long_component = "x".repeat(256);
    let long_path = vec!["x"; 2049].join("/");
    let bad = [
        "/etc/passwd",
        "../escape",
        "a/../../escape",
        "a/..",
        "..data",
        "..anything",
        "a/..b",
        ".",
        "a/./b",
        "a//b",
        "trailing/",
        long_component.as_str(),
        long_path.as_str(),
    ];
    for name in bad {
        let run = offline()
            .arg("--output-dir")
            .arg(&out.path)
            .arg("--secret")
            .arg(format!("{name}=aws://x"))
            .run();
        assert_eq!(run.code, 2, "{name:?} gave {}:\n{}", run.code, run.stderr);
        out.expect_empty();
    }
    // An empty FILE= and collisions, exact or by case or by nesting.
    for pair in [
        ["=aws://x", "b=aws://y"],
        ["a=aws://x", "a=aws://y"],
        ["a=aws://x", "A=aws://y"],
        ["a=aws://x", "a/b=aws://y"],
        ["aws://p/q", "p_q=aws://y"],
    ] {
        let run = offline()
            .arg("--output-dir")
            .arg(&out.path)
            .args(pair.iter().flat_map(|s| ["--secret", s]))
            .run();
        assert_eq!(run.code, 2, "{pair:?} gave {}:\n{}", run.code, run.stderr);
    }
    out.expect_empty();
}

#[test]
fn a_nul_byte_in_a_config_file_name_is_refused() {
    // A NUL cannot pass through argv, but it can through YAML.
    let out = Scratch::tmpfs("nul");
    let config = out.path.join("..config.yaml");
    fs::write(&config, "secrets:\n  - ref: aws://x\n    file: \"a\\0b\"\n").unwrap();
    offline()
        .arg("--output-dir")
        .arg(&out.path)
        .arg("--config")
        .arg(&config)
        .run()
        .expect_code(2)
        .expect_stderr("NUL");
}

#[test]
fn config_errors_name_the_line_and_never_quote_values() {
    let out = Scratch::tmpfs("config");
    let config = Scratch::disk("config");
    let path = config.path.join("secrets.yaml");
    fs::write(
        &path,
        "secrets:\n  - ref: aws://db\n    mode: \"0400\"\n    pasword: sentinel-7c1f9a-never-log-me\n",
    )
    .unwrap();
    offline()
        .arg("--output-dir")
        .arg(&out.path)
        .arg("--config")
        .arg(&path)
        .run()
        .expect_code(2)
        .expect_stderr("pasword")
        .expect_stderr("line 4")
        .expect_no_leak(testkit::SENTINEL.as_bytes());

    fs::write(
        &path,
        "secrets:\n  - ref: [\"sentinel-7c1f9a-never-log-me\"]\n",
    )
    .unwrap();
    offline()
        .arg("--output-dir")
        .arg(&out.path)
        .arg("--config")
        .arg(&path)
        .run()
        .expect_code(2)
        .expect_stderr("line 2")
        .expect_no_leak(testkit::SENTINEL.as_bytes());

    offline()
        .arg("--output-dir")
        .arg(&out.path)
        .arg("--config")
        .arg(config.path.join("missing.yaml"))
        .run()
        .expect_code(2);
    out.expect_empty();
}

#[test]
fn output_directory_problems_exit_6_before_any_fetch() {
    let out = Scratch::tmpfs("outdir");
    let secret = ["--secret", "aws://x"];

    offline()
        .arg("--output-dir")
        .arg(out.path.join("missing"))
        .args(secret)
        .run()
        .expect_code(6)
        .expect_stderr("does not exist");

    symlink(&out.path, out.path.join("link")).unwrap();
    offline()
        .arg("--output-dir")
        .arg(out.path.join("link"))
        .args(secret)
        .run()
        .expect_code(6)
        .expect_stderr("symbolic link");

    fs::write(out.path.join("file"), "").unwrap();
    offline()
        .arg("--output-dir")
        .arg(out.path.join("file"))
        .args(secret)
        .run()
        .expect_code(6)
        .expect_stderr("not a directory");

    let disk = Scratch::disk("not-tmpfs");
    offline()
        .arg("--output-dir")
        .arg(&disk.path)
        .args(secret)
        .run()
        .expect_code(6)
        .expect_stderr("not on tmpfs");
    disk.expect_empty();

    // The same directory is accepted with the explicit opt-out; the closed endpoint then
    // fails the fetch, which proves the directory check passed.
    offline()
        .arg("--output-dir")
        .arg(&disk.path)
        .arg("--allow-non-tmpfs")
        .args(secret)
        .arg("--timeout=5s")
        .run()
        .expect_code(5);
    disk.expect_empty();
}

#[test]
fn an_unreachable_endpoint_is_transient_and_bounded() {
    let out = Scratch::tmpfs("unreachable");
    let started = std::time::Instant::now();
    offline()
        .arg("--output-dir")
        .arg(&out.path)
        .args(["--secret", "aws://x", "--timeout", "20s"])
        .run()
        .expect_code(5)
        .expect_stderr("transient failure");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    out.expect_empty();
}

#[test]
fn a_misspelt_environment_variable_is_reported() {
    let out = Scratch::tmpfs("misspelt");
    offline()
        .env("SECRET_SIDECAR_OUTPUTDIR", &out.path)
        .args(["--secret", "aws://x"])
        .run()
        .expect_code(2)
        .expect_stderr("SECRET_SIDECAR_OUTPUTDIR is set but no option reads it");
}
