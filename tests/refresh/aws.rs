//! Against LocalStack: AWS Secrets Manager rotations, both ways a rotation moves
//! `AWSCURRENT`.

use std::fs;
use std::time::Duration;

use testkit::http::{Response, Server};
use testkit::localstack::Seeder;
use testkit::refresh::{
    App, Reader, Running, cycles, generation, generations, probe, sample, scrape, wait_until,
};
use testkit::{SENTINEL, Scratch, unique};

const WAIT: Duration = Duration::from_secs(20);

/// The sidecar publishing `a` and `b` from the secrets of those names into `dir`.
fn two_secrets(dir: &Scratch, a: &str, b: &str, interval: &str) -> testkit::Sidecar {
    testkit::sidecar!()
        .arg("--output-dir")
        .arg(&dir.path)
        .args(["--secret", &format!("a=aws://{a}")])
        .args(["--secret", &format!("b=aws://{b}")])
        .args(["--refresh", interval])
}

fn value(tag: &str, round: usize) -> String {
    format!("{tag}-{round}-{SENTINEL}")
}

/// Every cycle from now on has read the store since `after` calls were counted.
fn calls(scrape: &str, operation: &str) -> f64 {
    sample(
        scrape,
        &format!(
            "secret_sidecar_refresh_store_calls_total{{store=\"aws\",operation=\"{operation}\"}}"
        ),
    )
}

#[test]
fn a_rotation_reaches_the_files_and_the_app_is_told_once_per_change() {
    let mut seeder = Seeder::connect();
    let (a, b) = (unique("refresh-a"), unique("refresh-b"));
    seeder.string(&a, &value("a", 0));
    seeder.string(&b, &value("b", 0));
    let dir = Scratch::tmpfs("refresh-aws");
    let app = App::start("ra");
    let endpoint = Server::with_handler(|_| Response::json(200, "{}"));
    let running = Running::start(
        two_secrets(&dir, &a, &b, "150ms")
            .args(["--metrics-addr", "127.0.0.1:0"])
            .arg("--notify-pid-file")
            .arg(&app.pid_file)
            .args(["--notify-process", &format!("{}:SIGUSR1", app.name)])
            .args(["--notify-url", &format!("{}/reload", endpoint.url)]),
    );
    let metrics = running.metrics_addr();
    wait_until("the first publish", WAIT, || {
        probe(testkit::sidecar!(), &dir.path)
    });
    assert_eq!(dir.read("a"), value("a", 0).as_bytes());
    assert_eq!(dir.read("b"), value("b", 0).as_bytes());

    // Nothing changes: no new generation, no notification; one batch call per cycle.
    let first = generations(&dir.path);
    assert_eq!(first.len(), 1);
    let before = cycles(&scrape(&metrics));
    wait_until("five quiet cycles", WAIT, || {
        cycles(&scrape(&metrics)) >= before + 5.0
    });
    let quiet = scrape(&metrics);
    assert_eq!(
        generations(&dir.path),
        first,
        "a generation without a change"
    );
    assert!(app.signals().is_empty(), "notified without a change");
    assert!(endpoint.requests().is_empty(), "notified without a change");
    let (batches, singles) = (
        calls(&quiet, "BatchGetSecretValue"),
        calls(&quiet, "GetSecretValue"),
    );
    assert_eq!(singles, 0.0, "{quiet}");
    // One batch for the first publish and one per cycle (plus one in flight).
    let cycles_so_far = cycles(&quiet);
    assert!(
        batches == cycles_so_far + 1.0 || batches == cycles_so_far + 2.0,
        "{batches} batch calls for {cycles_so_far} cycles"
    );
    assert_eq!(
        sample(
            &quiet,
            "secret_sidecar_refresh_cycles_total{outcome=\"changed\"}"
        ),
        0.0
    );

    // A rotation of both: put a new value (AWSCURRENT moves with it).
    running.pause();
    seeder.put(&a, &value("a", 1));
    seeder.put(&b, &value("b", 1));
    running.resume();
    wait_until("the new values", WAIT, || {
        fs::read(dir.path.join("a")).ok() == Some(value("a", 1).into_bytes())
            && fs::read(dir.path.join("b")).ok() == Some(value("b", 1).into_bytes())
    });
    wait_until("the notifications", WAIT, || {
        app.signals().len() == 2 && endpoint.requests().len() == 1
    });

    // The other way: a version staged AWSPENDING, then AWSCURRENT moved onto it.
    let old = seeder.put(&a, &value("a", 2));
    wait_until("the third value", WAIT, || {
        fs::read(dir.path.join("a")).ok() == Some(value("a", 2).into_bytes())
    });
    let pending = seeder.put_pending(&a, &value("a", 3));
    let calm = cycles(&scrape(&metrics));
    wait_until("cycles after the pending version", WAIT, || {
        cycles(&scrape(&metrics)) >= calm + 3.0
    });
    assert_eq!(
        dir.read("a"),
        value("a", 2).as_bytes(),
        "AWSPENDING is not current"
    );
    seeder.promote(&a, &pending, &old);
    wait_until("the promoted version", WAIT, || {
        fs::read(dir.path.join("a")).ok() == Some(value("a", 3).into_bytes())
    });

    // Exactly once per change: three changes, each process told once with its own signal,
    // the endpoint once.
    wait_until("the last notifications", WAIT, || app.signals().len() == 6);
    let settled = cycles(&scrape(&metrics));
    wait_until("more quiet cycles", WAIT, || {
        cycles(&scrape(&metrics)) >= settled + 5.0
    });
    let mut signals = app.signals();
    signals.sort();
    assert_eq!(signals, ["HUP", "HUP", "HUP", "USR1", "USR1", "USR1"]);
    let requests = endpoint.requests();
    assert_eq!(requests.len(), 3, "one request per change");
    assert!(requests.iter().all(|r| r.line.starts_with("POST /reload ")));
    assert_eq!(
        sample(
            &scrape(&metrics),
            "secret_sidecar_refresh_cycles_total{outcome=\"changed\"}"
        ),
        3.0
    );

    let run = running.stop();
    run.expect_code(0)
        .expect_stderr("secret changed")
        .expect_stderr("stopped by SIGTERM; the published set stays in place");
    assert!(run.stdout.is_empty());
    for round in 0..4 {
        run.expect_no_leak(value("a", round).as_bytes());
    }
    assert_eq!(dir.read("a"), value("a", 3).as_bytes(), "the files stay");
    assert_eq!(generations(&dir.path).len(), 1, "no leftover generation");
}

#[test]
fn two_secrets_rotated_together_are_never_seen_mixed() {
    const ROUNDS: usize = 12;
    let mut seeder = Seeder::connect();
    let (a, b) = (unique("mixed-a"), unique("mixed-b"));
    seeder.string(&a, &value("a", 0));
    seeder.string(&b, &value("b", 0));
    let dir = Scratch::tmpfs("refresh-mixed");
    let running = Running::start(two_secrets(&dir, &a, &b, "30ms"));
    wait_until("the first publish", WAIT, || {
        probe(testkit::sidecar!(), &dir.path)
    });
    let reader = Reader::start(&dir.path, &["a", "b"]);
    for round in 1..=ROUNDS {
        // Both change while the sidecar cannot read: the next read sees both new.
        running.pause();
        std::thread::sleep(Duration::from_millis(50));
        seeder.put(&a, &value("a", round));
        seeder.put(&b, &value("b", round));
        running.resume();
        wait_until("the round's values", WAIT, || {
            generation(&dir.path, &["a", "b"]).is_some_and(|g| {
                g.files["a"] == value("a", round).as_bytes()
                    && g.files["b"] == value("b", round).as_bytes()
            })
        });
    }
    let seen = reader.finish();
    running.stop().expect_code(0);

    // Every generation a reader saw holds a and b of one round: never one new, one old.
    // The reader saw sets change (on a loaded machine it may miss a short-lived one).
    assert!(
        seen.generations.len() > ROUNDS / 2,
        "saw {} generations",
        seen.generations.len()
    );
    for generation in &seen.generations {
        let round = (0..=ROUNDS)
            .find(|r| generation.files["a"] == value("a", *r).as_bytes())
            .unwrap_or_else(|| panic!("a holds something never stored: {generation:?}"));
        assert_eq!(
            generation.files["b"],
            value("b", round).as_bytes(),
            "generation {} mixes rounds",
            generation.name
        );
    }
    // And through the links, every read is one whole stored value.
    for (name, contents) in &seen.links {
        for content in contents {
            assert!(
                (0..=ROUNDS).any(|r| *content == value(name, r).into_bytes()),
                "{name} read as something never stored"
            );
        }
    }
    assert_eq!(generations(&dir.path).len(), 1);
}

#[test]
fn a_deleted_secret_keeps_its_last_value_unless_told_to_remove_it() {
    let mut seeder = Seeder::connect();
    for strict in [false, true] {
        let (kept, gone) = (unique("deleted-keep"), unique("deleted-gone"));
        seeder.string(&kept, &value("kept", 0));
        seeder.string(&gone, &value("gone", 0));
        let dir = Scratch::tmpfs("refresh-deleted");
        let app = App::start("rd");
        let mut sidecar = testkit::sidecar!()
            .arg("--output-dir")
            .arg(&dir.path)
            .args(["--secret", &format!("kept=aws://{kept}")])
            .args(["--secret", &format!("gone=aws://{gone}")])
            .args(["--refresh", "100ms", "--max-stale", "1s"])
            .args(["--notify-process", &app.name]);
        if strict {
            sidecar = sidecar.args(["--on-revoked", "remove"]);
        }
        let running = Running::start(sidecar);
        wait_until("the first publish", WAIT, || {
            probe(testkit::sidecar!(), &dir.path)
        });
        seeder.delete(&gone);
        if strict {
            // The file goes, the app is told, the set is current again.
            wait_until("the file's removal", WAIT, || {
                !dir.path.join("gone").exists()
            });
            wait_until("the notification", WAIT, || app.signals() == ["HUP"]);
            assert_eq!(dir.read("kept"), value("kept", 0).as_bytes());
            let manifest = String::from_utf8(dir.read("..manifest.json")).unwrap();
            assert!(manifest.contains("secret not found"), "{manifest}");
            std::thread::sleep(Duration::from_millis(1500));
            assert!(probe(testkit::sidecar!(), &dir.path), "removal is a check");
        } else {
            // The file stays as it was; the set goes stale and the probe says so.
            wait_until("the stale probe", WAIT, || {
                !probe(testkit::sidecar!(), &dir.path)
            });
            // The probe reads the deadline from the status file; the warning comes with the
            // next cycle after it, so it may lag the probe by a cycle.
            wait_until("the stale warning", WAIT, || {
                running.log().contains("the published set is stale")
            });
            assert_eq!(dir.read("gone"), value("gone", 0).as_bytes());
            assert!(app.signals().is_empty());
        }
        let run = running.stop();
        run.expect_code(0);
        if !strict {
            run.expect_stderr("its files keep the last value read (--on-revoked keep)")
                .expect_stderr("the published set is stale");
        }
        run.expect_no_leak(value("gone", 0).as_bytes());
    }
}

#[test]
fn sigterm_at_any_moment_leaves_one_complete_set() {
    let mut seeder = Seeder::connect();
    let (a, b) = (unique("term-a"), unique("term-b"));
    seeder.string(&a, &value("a", 0));
    seeder.string(&b, &value("b", 0));
    let dir = Scratch::tmpfs("refresh-term");
    for round in 1..=8 {
        let running = Running::start(two_secrets(&dir, &a, &b, "10ms"));
        wait_until("the first publish", WAIT, || {
            probe(testkit::sidecar!(), &dir.path)
        });
        seeder.put(&a, &value("a", round));
        seeder.put(&b, &value("b", round));
        // Somewhere in a cycle: reading, publishing or waiting.
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..60)));
        let run = running.stop();
        run.expect_code(0);
        assert_eq!(generations(&dir.path).len(), 1, "{:?}", dir.listing());
        assert!(!dir.path.join("..data_tmp").exists());
        let set = generation(&dir.path, &["a", "b"]).expect("a complete set");
        let a_round = (0..=round)
            .find(|r| set.files["a"] == value("a", *r).as_bytes())
            .expect("a is a stored value");
        let b_round = (0..=round)
            .find(|r| set.files["b"] == value("b", *r).as_bytes())
            .expect("b is a stored value");
        // A rotation of two secrets is two calls: a read may fall between them, but never
        // put b ahead of a.
        assert!(
            b_round <= a_round,
            "b from round {b_round}, a from {a_round}"
        );
    }
}
