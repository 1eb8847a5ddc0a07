//! A Secret Manager answer without `dataCrc32c`. Google documents that versions encrypted
//! with a customer-managed key (CMEK) and created before 16 July 2021 have no checksum
//! stored, so none is returned when they are accessed
//! (cloud.google.com/secret-manager/docs/data-integrity). Such an answer is legitimate: the
//! payload is published as it came, with nothing to check it against (docs/gcp.md). A
//! checksum that is present and wrong is refused (tests/gcp.rs).

use testkit::faults::{Endpoint, FILE, Provider};
use testkit::gcp::{PROJECT_NUMBER, answer};
use testkit::{SENTINEL, Scratch};

#[test]
fn an_answer_without_a_checksum_is_published_as_it_came() {
    let body = serde_json::json!({
        "name": format!("projects/{PROJECT_NUMBER}/secrets/db/versions/1"),
        "payload": {"data": testkit::base64(SENTINEL.as_bytes())},
    });
    let unchecked = answer(200, "application/json; charset=UTF-8", body.to_string());
    let endpoint = Endpoint::start(Provider::Gcp, vec![unchecked]);
    let out = Scratch::tmpfs("gcp-no-crc");
    let run = endpoint
        .aim(testkit::sidecar!(), &out)
        .args(["--timeout", "20s"])
        .run();
    run.expect_code(0)
        .expect_stderr("version=1")
        .expect_no_leak(SENTINEL.as_bytes());
    assert_eq!(out.read(FILE), SENTINEL.as_bytes());
    assert_eq!(endpoint.attempts(), 1);
}
