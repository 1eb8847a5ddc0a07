//! Against the Google fakes: a new version of `latest`, an alias that moves, a numbered
//! version read once; an outage with a stale probe and the recovery; and the soak.

use std::fs;
use std::time::Duration;

use testkit::gcp::{Metadata, SecretManager};
use testkit::refresh::{Running, generations, probe, wait_until};
use testkit::{SENTINEL, Scratch, Sidecar};

const TOKEN: &str = "ya29.c.refresh-test-token-7d1e";
const ACCOUNT: &str = "app@my-project.iam.gserviceaccount.com";
const WAIT: Duration = Duration::from_secs(20);

pub(crate) struct Google {
    metadata: Metadata,
    pub(crate) sm: SecretManager,
}

impl Google {
    pub(crate) fn start() -> Google {
        Google {
            metadata: Metadata::start(TOKEN, ACCOUNT),
            sm: SecretManager::start(TOKEN),
        }
    }

    pub(crate) fn sidecar(&self, out: &Scratch) -> Sidecar {
        testkit::sidecar!()
            .env("HOME", "/nonexistent/home")
            .env("GCE_METADATA_HOST", self.metadata.host())
            .arg("--gcp-endpoint")
            .arg(self.sm.url())
            .arg("--output-dir")
            .arg(&out.path)
    }

    /// Access requests for `version` of `secret` (`projects/P/secrets/S`).
    fn reads(&self, secret: &str, version: &str) -> usize {
        let path = format!("/v1/{secret}/versions/{version}:access");
        self.sm
            .requests()
            .iter()
            .filter(|r| r.target().split('?').next() == Some(path.as_str()))
            .count()
    }
}

pub(crate) fn value(tag: &str, round: usize) -> String {
    format!("{tag}-{round}-{SENTINEL}")
}

#[test]
fn new_versions_and_moved_aliases_reach_the_files_and_pinned_versions_are_read_once() {
    let google = Google::start();
    let (latest, aliased) = (
        "projects/my-project/secrets/latest-db",
        "projects/my-project/secrets/aliased-db",
    );
    google.sm.add(latest, value("latest", 1).as_bytes());
    google.sm.add(aliased, value("aliased", 1).as_bytes());
    google.sm.add(aliased, value("aliased", 2).as_bytes());
    google.sm.alias(aliased, "prod", 1);
    let dir = Scratch::tmpfs("refresh-gcp");
    let running = Running::start(
        google
            .sidecar(&dir)
            .args(["--secret", "latest=gcp://my-project/latest-db"])
            .args(["--secret", "prod=gcp://my-project/aliased-db?version=prod"])
            .args(["--secret", "pinned=gcp://my-project/aliased-db?version=2"])
            .args(["--refresh", "100ms"]),
    );
    wait_until("the first publish", WAIT, || {
        probe(testkit::sidecar!(), &dir.path)
    });
    assert_eq!(dir.read("prod"), value("aliased", 1).as_bytes());
    assert_eq!(dir.read("pinned"), value("aliased", 2).as_bytes());

    let version = google.sm.add(latest, value("latest", 2).as_bytes());
    assert_eq!(version, 2);
    wait_until("the new latest version", WAIT, || {
        fs::read(dir.path.join("latest")).ok() == Some(value("latest", 2).into_bytes())
    });
    google.sm.alias(aliased, "prod", 2);
    wait_until("the moved alias", WAIT, || {
        fs::read(dir.path.join("prod")).ok() == Some(value("aliased", 2).into_bytes())
    });
    let reads = google.reads(latest, "latest");
    wait_until("more cycles", WAIT, || {
        google.reads(latest, "latest") > reads + 3
    });

    // `latest` and the alias are read every cycle; the numbered version only once.
    assert_eq!(
        google.reads(aliased, "2"),
        1,
        "a pinned version is read once"
    );
    assert!(google.reads(aliased, "prod") > 3);
    let run = running.stop();
    run.expect_code(0);
    run.expect_no_leak(value("aliased", 2).as_bytes());
    assert_eq!(generations(&dir.path).len(), 1);
}

#[test]
fn an_outage_keeps_the_set_goes_stale_and_recovers_without_a_restart() {
    let google = Google::start();
    let secret = "projects/my-project/secrets/outage-db";
    google.sm.add(secret, value("outage", 1).as_bytes());
    let dir = Scratch::tmpfs("refresh-outage");
    let mut running = Running::start(
        google
            .sidecar(&dir)
            .args(["--secret", "db=gcp://my-project/outage-db"])
            .args(["--refresh", "100ms", "--max-stale", "1500ms"]),
    );
    wait_until("the first publish", WAIT, || {
        probe(testkit::sidecar!(), &dir.path)
    });
    let first = generations(&dir.path);

    google.sm.set_down(true);
    wait_until("the stale probe", WAIT, || {
        !probe(testkit::sidecar!(), &dir.path)
    });
    wait_until("the process to say so", WAIT, || {
        running.log().contains("the published set is stale")
    });
    // Through the outage the set is untouched and the process keeps going.
    assert_eq!(generations(&dir.path), first);
    assert_eq!(dir.read("db"), value("outage", 1).as_bytes());
    assert!(running.running());

    google.sm.add(secret, value("outage", 2).as_bytes());
    google.sm.set_down(false);
    wait_until("the value after the outage", WAIT, || {
        fs::read(dir.path.join("db")).ok() == Some(value("outage", 2).into_bytes())
    });
    wait_until("a passing probe", WAIT, || {
        probe(testkit::sidecar!(), &dir.path)
    });
    let run = running.stop();
    run.expect_code(0)
        .expect_stderr("refreshing failed; the published set stays as it was")
        .expect_stderr("class=\"transient failure\"")
        .expect_no_leak(value("outage", 2).as_bytes());
}
