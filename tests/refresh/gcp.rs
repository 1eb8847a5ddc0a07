//! Against the Google fakes: a new version of `latest`, an alias that moves, a numbered
//! version read once; an outage with a stale probe and the recovery; and the soak.

use std::fs;
use std::time::{Duration, Instant};

use testkit::gcp::{Metadata, SecretManager};
use testkit::http::{Response, Server};
use testkit::refresh::{Running, cycles, generations, probe, sample, scrape, wait_until};
use testkit::{SENTINEL, Scratch, Sidecar};

const TOKEN: &str = "ya29.c.refresh-test-token-7d1e";
const ACCOUNT: &str = "app@my-project.iam.gserviceaccount.com";
const WAIT: Duration = Duration::from_secs(20);

struct Google {
    metadata: Metadata,
    sm: SecretManager,
}

impl Google {
    fn start() -> Google {
        Google {
            metadata: Metadata::start(TOKEN, ACCOUNT),
            sm: SecretManager::start(TOKEN),
        }
    }

    fn sidecar(&self, out: &Scratch) -> Sidecar {
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

fn value(tag: &str, round: usize) -> String {
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

/// Thousands of cycles at a short interval, a change every few cycles with a notification
/// each: memory and descriptors stay flat, and no generation is left behind.
#[cfg(feature = "aws")] // once, in the full suite: it is the slowest test here
#[test]
fn soak_thousands_of_cycles_with_flat_memory_and_descriptors() {
    const CYCLES: f64 = 2000.0;
    let google = std::sync::Arc::new(Google::start());
    let secrets = [
        "projects/my-project/secrets/soak-a",
        "projects/my-project/secrets/soak-b",
    ];
    for secret in secrets {
        google.sm.add(secret, value(secret, 0).as_bytes());
    }
    let endpoint = Server::with_handler(|_| Response::json(200, "{}"));
    let dir = Scratch::tmpfs("refresh-soak");
    let running = Running::start(
        google
            .sidecar(&dir)
            .args(["--secret", "a=gcp://my-project/soak-a"])
            .args(["--secret", "b=gcp://my-project/soak-b"])
            .args(["--refresh", "1ms", "--metrics-addr", "127.0.0.1:0"])
            .args(["--notify-url", &format!("{}/reload", endpoint.url)]),
    );
    let metrics = running.metrics_addr();
    wait_until("the first publish", WAIT, || {
        probe(testkit::sidecar!(), &dir.path)
    });

    // A new version every 25 ms, on a thread of its own.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rotator = {
        let (google, stop) = (std::sync::Arc::clone(&google), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut round = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                round += 1;
                let secret = secrets[round % secrets.len()];
                google.sm.add(secret, value(secret, round).as_bytes());
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };
    let until = |target: f64| {
        let started = Instant::now();
        loop {
            let scraped = scrape(&metrics);
            if cycles(&scraped) >= target {
                return scraped;
            }
            assert!(
                started.elapsed() < Duration::from_secs(240),
                "only {} cycles",
                cycles(&scraped)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    until(CYCLES / 5.0);
    let (rss_early, fds_early) = (running.rss_kib(), running.fds());
    let scraped = until(CYCLES);
    let (rss_late, fds_late) = (running.rss_kib(), running.fds());
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    rotator.join().unwrap();

    let changes = sample(
        &scraped,
        "secret_sidecar_refresh_cycles_total{outcome=\"changed\"}",
    );
    assert!(changes > 50.0, "only {changes} changes");
    assert_eq!(
        sample(
            &scraped,
            "secret_sidecar_refresh_cycles_total{outcome=\"failed\"}"
        ),
        0.0
    );
    assert!(
        rss_late <= rss_early + 1024,
        "RSS grew from {rss_early} KiB to {rss_late} KiB over {} cycles",
        cycles(&scraped) - CYCLES / 5.0
    );
    assert!(
        fds_late <= fds_early + 2,
        "descriptors grew from {fds_early} to {fds_late}"
    );
    let run = running.stop();
    run.expect_code(0);
    assert_eq!(generations(&dir.path).len(), 1, "{:?}", dir.listing());
    // Each change was notified (the last one may still have been on its way).
    let notified = endpoint.requests().len() as f64;
    assert!(
        notified >= changes - 1.0 && notified <= changes,
        "{notified} requests for {changes} changes"
    );
}
