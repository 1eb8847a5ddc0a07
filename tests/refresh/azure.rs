//! Against the Azure fakes: a new version in Key Vault, a named version read once, and a
//! throttling vault whose Retry-After is honoured.

use std::fs;
use std::time::{Duration, Instant};

use testkit::azure::Workload;
use testkit::refresh::{Running, generations, probe, wait_until};
use testkit::{SENTINEL, Scratch};

const WAIT: Duration = Duration::from_secs(20);

fn value(tag: &str, round: usize) -> String {
    format!("{tag}-{round}-{SENTINEL}")
}

#[test]
fn a_new_version_reaches_the_file_and_a_named_version_is_read_once() {
    let azure = Workload::start();
    let pinned = azure.vault.put("pinned", &value("pinned", 1));
    azure.vault.put("db", &value("db", 1));
    let dir = Scratch::tmpfs("refresh-azure");
    let running = Running::start(
        azure
            .configure(testkit::sidecar!())
            .arg("--output-dir")
            .arg(&dir.path)
            .args(["--secret", &format!("db={}", azure.reference("db"))])
            .args([
                "--secret",
                &format!("pinned={}?version={pinned}", azure.reference("pinned")),
            ])
            .args(["--refresh", "100ms"]),
    );
    wait_until("the first publish", WAIT, || {
        probe(testkit::sidecar!(), &dir.path)
    });
    azure.vault.put("db", &value("db", 2));
    wait_until("the new version", WAIT, || {
        fs::read(dir.path.join("db")).ok() == Some(value("db", 2).into_bytes())
    });
    let reads = azure.vault.authorized_gets("db");
    wait_until("more cycles", WAIT, || {
        azure.vault.authorized_gets("db") > reads + 3
    });
    assert_eq!(azure.vault.authorized_gets("pinned"), 1, "read again");
    let run = running.stop();
    run.expect_code(0).expect_no_leak(value("db", 2).as_bytes());
    assert_eq!(generations(&dir.path).len(), 1);
}

#[test]
fn throttling_is_honoured_between_cycles() {
    let azure = Workload::start();
    azure.vault.put("busy", &value("busy", 1));
    let dir = Scratch::tmpfs("refresh-throttle");
    let running = Running::start(
        azure
            .configure(testkit::sidecar!())
            .arg("--output-dir")
            .arg(&dir.path)
            .args(["--secret", &format!("busy={}", azure.reference("busy"))])
            .args(["--refresh", "50ms"]),
    );
    wait_until("the first publish", WAIT, || {
        probe(testkit::sidecar!(), &dir.path)
    });
    // Every answer asks for a second's pause: unheeded, a 50 ms cycle would ask ~40 times.
    azure.vault.throttle("busy", 1000);
    let before = azure.vault.authorized_gets("busy");
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    let asked = azure.vault.authorized_gets("busy") - before;
    let waited = started.elapsed();
    assert!(
        asked as u128 <= waited.as_millis() / 1000 + 2,
        "{asked} requests in {waited:?} despite Retry-After: 1"
    );
    azure.vault.throttle("busy", 0);
    azure.vault.put("busy", &value("busy", 2));
    wait_until("the value after the throttling", WAIT, || {
        fs::read(dir.path.join("busy")).ok() == Some(value("busy", 2).into_bytes())
    });
    running
        .stop()
        .expect_code(0)
        .expect_stderr("refreshing failed; the published set stays as it was");
}
