//! Refresh mode's options checked before anything is fetched, and the probe without a
//! refresh process.

use testkit::Scratch;
use testkit::refresh::probe;

#[test]
fn refresh_options_are_checked_before_any_request() {
    let dir = Scratch::tmpfs("refresh-usage");
    let cases: [(&[&str], &str); 6] = [
        (
            &["--notify-url", "http://127.0.0.1:1/x"],
            "work with --refresh only",
        ),
        (
            &[
                "--refresh",
                "1s",
                "--notify-url",
                "http://example.com/reload",
            ],
            "--notify-allow-remote",
        ),
        (
            &["--refresh", "1s", "--notify-signal", "HUP"],
            "needs --notify-pid-file",
        ),
        (
            &[
                "--refresh",
                "1s",
                "--notify-process",
                "app",
                "--notify-signal",
                "KILL",
            ],
            "is not one of the signals",
        ),
        (
            &["--refresh", "10s", "--max-stale", "5s"],
            "must be longer than --refresh",
        ),
        (
            &["--refresh", "1s", "--metrics-addr", "192.0.2.1:9102"],
            "listening on",
        ),
    ];
    for (args, message) in cases {
        testkit::sidecar!()
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
            .arg("--output-dir")
            .arg(&dir.path)
            .args(["--secret", "aws://never/fetched"])
            .args(args)
            .run()
            .expect_code(2)
            .expect_stderr(message);
        dir.expect_empty();
    }
}

#[test]
fn the_probe_fails_without_a_refresh_process() {
    let dir = Scratch::tmpfs("refresh-probe");
    assert!(!probe(testkit::sidecar!(), &dir.path));
    // An init run publishes, but keeps nothing current: the probe still fails.
    std::fs::create_dir(dir.path.join("..status")).unwrap();
    std::fs::write(dir.path.join("..status/refresh"), "not json").unwrap();
    assert!(!probe(testkit::sidecar!(), &dir.path));
    testkit::sidecar!()
        .arg("--probe")
        .run()
        .expect_code(2)
        .expect_stderr("--probe needs --output-dir");
}
