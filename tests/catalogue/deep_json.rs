//! JSON secrets nested far deeper than any real one. Reading a key or exploding members
//! parses the document with serde_json, whose recursion limit (128) turns a document nested
//! 10,000 deep into "not valid JSON" (exit 7) instead of a stack overflow; under the limit,
//! deep documents are read as usual. Each provider's own answer nested deeply is a row of
//! `tests/faults.rs`.

use testkit::faults::{Endpoint, FILE, Provider};
use testkit::{Run, SENTINEL, Scratch};

/// `{"a":{"a":…"value"…}}`, `depth` objects deep.
fn nested(depth: usize, value: &str) -> String {
    format!(
        "{}{}{}",
        r#"{"a":"#.repeat(depth),
        serde_json::to_string(value).unwrap(),
        "}".repeat(depth)
    )
}

/// The JSON Pointer `/a/a/…/a`, `depth` members long.
fn pointer(depth: usize) -> String {
    "/a".repeat(depth)
}

fn providers() -> Vec<Provider> {
    vec![
        #[cfg(feature = "aws")]
        Provider::Aws,
        #[cfg(feature = "azure")]
        Provider::Azure,
        #[cfg(feature = "gcp")]
        Provider::Gcp,
    ]
}

/// Publishes `endpoint`'s secret (which holds `document`) with `options` after the
/// reference (`#KEY`, `?format=explode`).
fn publish(provider: Provider, document: &str, options: &str, out: &Scratch) -> Run {
    let endpoint = Endpoint::start(provider, vec![provider.ok_with(document)]);
    let run = endpoint
        .configure(testkit::sidecar!())
        .arg("--output-dir")
        .arg(&out.path)
        .arg("--secret")
        .arg(format!("{FILE}={}{options}", endpoint.reference()))
        .args(["--timeout", "20s"])
        .run();
    run.expect_no_leak(SENTINEL.as_bytes());
    for token in &endpoint.tokens {
        run.expect_no_leak(token.as_bytes());
    }
    assert_eq!(endpoint.attempts(), 1, "{provider:?}: read once");
    run
}

#[test]
fn a_secret_nested_ten_thousand_deep_is_bad_data_for_a_key_or_explode() {
    let deep = nested(10_000, SENTINEL);
    for provider in providers() {
        for options in [format!("#{}", pointer(200)), "?format=explode".to_owned()] {
            let out = Scratch::tmpfs("deep-json");
            publish(provider, &deep, &options, &out)
                .expect_code(7)
                .expect_stderr("not valid JSON");
            out.expect_empty();
        }
    }
}

#[test]
fn a_secret_nested_under_the_limit_is_read_as_usual() {
    let deep = nested(100, SENTINEL);
    for provider in providers() {
        let out = Scratch::tmpfs("deep-json-key");
        publish(provider, &deep, &format!("#{}", pointer(100)), &out).expect_code(0);
        assert_eq!(out.read(FILE), SENTINEL.as_bytes(), "{provider:?}");

        let out = Scratch::tmpfs("deep-json-explode");
        publish(provider, &deep, "?format=explode", &out).expect_code(0);
        let member = format!("{FILE}/a");
        assert_eq!(
            out.read(&member),
            nested(99, SENTINEL).as_bytes(),
            "{provider:?}"
        );
    }
}
