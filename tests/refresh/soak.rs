//! The soak: thousands of refresh cycles against the Google fakes (the quickest store
//! here, so that the cycles are many), a change every few cycles with a notification each.
//! It runs in the full suite only (it needs aws too), once: it is the slowest test here.

use std::time::{Duration, Instant};

use super::gcp::{Google, value};
use testkit::Scratch;
use testkit::http::{Response, Server};
use testkit::refresh::{Running, cycles, generations, probe, sample, scrape, wait_until};

const WAIT: Duration = Duration::from_secs(20);

/// Thousands of cycles at a short interval, a change every few cycles with a notification
/// each: memory and descriptors stay flat, and no generation is left behind.
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
    let done = until(CYCLES);
    let (rss_late, fds_late) = (running.rss_kib(), running.fds());
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    rotator.join().unwrap();
    // The last version reaches the files and its notification goes out (a cycle's
    // notification is sent before the next cycle starts), so the counts below are final.
    let settled = cycles(&scrape(&metrics));
    let scraped = until(settled + 3.0);

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
        cycles(&done) - CYCLES / 5.0
    );
    assert!(
        fds_late <= fds_early + 2,
        "descriptors grew from {fds_early} to {fds_late}"
    );
    let run = running.stop();
    run.expect_code(0);
    assert_eq!(generations(&dir.path).len(), 1, "{:?}", dir.listing());
    // Each change was notified, once.
    let notified = endpoint.requests().len() as f64;
    assert_eq!(
        notified, changes,
        "{notified} requests for {changes} changes"
    );
}
