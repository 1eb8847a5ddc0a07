//! The redirect, for real: in a network namespace made for the test and laid out like a
//! pod's (an `eth0` whose gateway never answers), `imds-proxy --install-redirect` writes
//! its nftables rule, the proxy serves on 127.0.0.1:8000, and legacy callers that know
//! only `http://169.254.169.254` get the workload identity's token: curl as the seed's
//! walk-through runs it, the Rust azure_identity crate reading Key Vault, and Azure's
//! Python SDK with no address configured. Root only; skipped with
//! a message otherwise. `nft` is used, when installed, only to look at the rules.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use super::clients::{python, python_reads, rust_reads};
use super::{Proxy, expect_no_tokens};
use testkit::SENTINEL;
use testkit::azure::{RESOURCE, Workload};
use testkit::netns;

const LEGACY_URL: &str = "http://169.254.169.254/metadata/identity/oauth2/token?resource=https://vault.azure.net&api-version=2018-02-01";

fn curl(extra: &[&str]) -> Output {
    Command::new("curl")
        .args(["-s", "--noproxy", "*", "--max-time", "3"])
        .args(extra)
        .arg(LEGACY_URL)
        .output()
        .expect("curl runs")
}

/// `nft -j list ruleset`, when nft is installed.
fn ruleset() -> Option<Value> {
    let output = Command::new("nft")
        .args(["-j", "list", "ruleset"])
        .output()
        .ok()?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_slice(&output.stdout).unwrap())
}

fn nft(args: &[&str]) -> bool {
    Command::new("nft")
        .args(args)
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn a_legacy_caller_reaches_the_proxy_through_the_redirect() {
    if !netns::is_root() {
        eprintln!("skipped: a network namespace of the test's own needs root");
        return;
    }
    // Everything below runs in the new namespace: the thread, the fakes it starts, and
    // every process it runs.
    std::thread::spawn(in_a_pod).join().unwrap();
}

fn in_a_pod() {
    netns::enter_new();
    netns::pod_network();
    let workload = Workload::start();
    let value = format!("{SENTINEL}-through-the-redirect");
    workload.vault.put("redirected", &value);

    // Before the redirect, 169.254.169.254 does not answer from this pod.
    let before = curl(&["-H", "Metadata:true"]);
    assert!(!before.status.success(), "{before:?}");

    // Someone else's rule, which the redirect must leave alone (nft only to set it up and
    // look: the binary needs none).
    let have_nft = nft(&["add", "table", "ip", "keep"])
        && nft(&[
            "add",
            "chain",
            "ip",
            "keep",
            "out",
            "{ type filter hook output priority 0; }",
        ])
        && nft(&["add", "rule", "ip", "keep", "out", "counter"]);
    if !have_nft {
        eprintln!("nft not installed: the rules are not inspected, only used");
    }
    for _ in 0..2 {
        let run = testkit::sidecar!()
            .args([
                "imds-proxy",
                "--install-redirect",
                "--listen",
                "127.0.0.1:8000",
            ])
            .run();
        run.expect_code(0).expect_stderr("redirect installed");
    }
    if let Some(rules) = ruleset() {
        let items = rules["nftables"].as_array().unwrap();
        let rules_in = |table: &str| {
            items
                .iter()
                .filter(|i| i["rule"]["table"] == table)
                .collect::<Vec<_>>()
        };
        let ours = rules_in("secret_sidecar_imds");
        assert_eq!(ours.len(), 1, "installed twice, one rule: {rules}");
        let dnat = &ours[0]["rule"]["expr"].as_array().unwrap().last().unwrap()["dnat"];
        assert_eq!(dnat["addr"], "127.0.0.1", "{rules}");
        assert_eq!(dnat["port"], 8000, "{rules}");
        assert_eq!(
            rules_in("keep").len(),
            1,
            "the other table's rule stays: {rules}"
        );
    }

    let proxy = Proxy::start_on(&workload, 8000, &[]);

    // The seed's own check: curl, plain HTTP, to 169.254.169.254.
    let answer = curl(&["-H", "Metadata:true"]);
    assert!(answer.status.success(), "{answer:?}");
    let token: Value = serde_json::from_slice(&answer.stdout).unwrap();
    assert_eq!(token["access_token"], workload.entra.access_token.as_str());
    assert_eq!(token["resource"], RESOURCE);
    // And IMDS's refusal without the header, through the same path.
    let refused = curl(&[]);
    let refused: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(
        refused["error_description"],
        "Required metadata header not specified"
    );

    // The Rust azure_identity crate, which knows only http://169.254.169.254.
    let (run, read) = rust_reads(&workload, "redirected", &[]);
    run.expect_stderr("instance metadata service");
    assert_eq!(read, value.as_bytes());
    expect_no_tokens(&run, &workload, &[]);

    // Azure's Python SDK with nothing configured: MSAL's IMDS flow at 169.254.169.254.
    if let Some(python) = python() {
        let read = python_reads(&python, &workload, "redirected", None, &[]);
        assert_eq!(read, value);
    }

    std::thread::sleep(Duration::from_millis(50));
    let run = proxy.stop();
    run.expect_code(0).expect_no_leak(value.as_bytes());
    expect_no_tokens(&run, &workload, &[]);
}
