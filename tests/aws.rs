#![cfg(feature = "aws")]
//! The AWS provider end to end: the real binary against a real LocalStack.

use std::fs;
use std::os::unix::fs::MetadataExt;

use testkit::localstack::Seeder;
use testkit::{SENTINEL, Scratch, Sidecar, unique};

fn sidecar(out: &Scratch) -> Sidecar {
    testkit::sidecar!().arg("--output-dir").arg(&out.path)
}

#[test]
fn arn_region_wins_over_the_environment() {
    let mut seed = Seeder::connect();
    let name = unique("arn");
    let (arn, _) = seed.string_in("eu-west-1", &name, "from eu-west-1");
    assert!(arn.contains(":eu-west-1:"), "{arn}");
    let out = Scratch::tmpfs("arn");

    // AWS_REGION says us-east-1, where no such secret exists; the ARN says eu-west-1.
    sidecar(&out)
        .arg("--secret")
        .arg(format!("aws://{arn}"))
        .run()
        .expect_code(0);
    let derived = name.replace('/', "_");
    assert_eq!(out.read(&derived), b"from eu-west-1");

    // Without the ARN the environment's region is used, and the secret is not there.
    let other = Scratch::tmpfs("arn-name");
    sidecar(&other)
        .arg("--secret")
        .arg(format!("aws://{name}"))
        .run()
        .expect_code(4);

    // With no region in the environment at all, the ARN alone is enough.
    sidecar(&other)
        .env_remove("AWS_REGION")
        .arg("--secret")
        .arg(format!("aws://{arn}"))
        .run()
        .expect_code(0);
}

#[test]
fn a_failed_rerun_keeps_the_previous_set_whole() {
    let mut seed = Seeder::connect();
    let name = unique("rerun");
    seed.string(&name, "first");
    let out = Scratch::tmpfs("rerun");

    sidecar(&out)
        .arg("--secret")
        .arg(format!("a=aws://{name}"))
        .run()
        .expect_code(0);
    let before = out.listing();

    seed.put(&name, "second");
    sidecar(&out)
        .arg("--secret")
        .arg(format!("a=aws://{name}"))
        .arg("--secret")
        .arg(format!("b=aws://{}", unique("never-created")))
        .run()
        .expect_code(4);
    assert_eq!(out.listing(), before, "a failed run changed the directory");
    assert_eq!(out.read("a"), b"first");

    // A successful rerun swaps in the new set and removes the old one completely.
    sidecar(&out)
        .arg("--secret")
        .arg(format!("renamed=aws://{name}"))
        .run()
        .expect_code(0);
    assert_eq!(out.visible(), ["renamed"]);
    assert_eq!(out.read("renamed"), b"second");
    let staging: Vec<_> = out
        .listing()
        .into_keys()
        .filter(|k| k.starts_with("..sidecar.") && !k.contains('/'))
        .collect();
    assert_eq!(staging.len(), 1, "{staging:?}");
}

#[test]
fn irsa_web_identity_without_static_keys() {
    let mut seed = Seeder::connect();
    let name = unique("irsa");
    seed.string(&name, "via sts");
    let out = Scratch::tmpfs("irsa");
    let token_dir = Scratch::disk("irsa-token");
    let token = token_dir.path.join("token");
    fs::write(
        &token,
        testkit::fake_jwt("system:serviceaccount:default:app"),
    )
    .unwrap();

    let irsa = || {
        sidecar(&out)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env(
                "AWS_ROLE_ARN",
                "arn:aws:iam::000000000000:role/secret-reader",
            )
            .env("AWS_ROLE_SESSION_NAME", "secret-sidecar-test")
            .arg("--secret")
            .arg(format!("s=aws://{name}"))
    };
    let run = irsa().env("AWS_WEB_IDENTITY_TOKEN_FILE", &token).run();
    run.expect_code(0)
        .expect_stderr("AWS identity loaded source=WebIdentityToken");
    assert_eq!(out.read("s"), b"via sts");

    // The token file is read when the exchange happens: a missing file is an identity
    // failure that names the file, and nothing new is published.
    let before = out.listing();
    irsa()
        .env(
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token_dir.path.join("missing"),
        )
        .run()
        .expect_code(3)
        .expect_stderr("authentication failed")
        .expect_stderr("missing");
    assert_eq!(out.listing(), before);
}

#[test]
fn no_credentials_at_all_is_an_identity_failure() {
    let out = Scratch::tmpfs("nocreds");
    sidecar(&out)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["--secret", "aws://anything", "--timeout", "20s"])
        .run()
        .expect_code(3)
        .expect_stderr("no credentials in the environment");
    out.expect_empty();
}

#[test]
fn legacy_environment_of_the_original_init_container() {
    let mut seed = Seeder::connect();
    let name = unique("legacy");
    seed.string(&name, "legacy value");
    let out = Scratch::tmpfs("legacy");

    sidecar(&out)
        .env("SECRET_NAME", &name)
        .env("MOUNT_NAME", "db-creds")
        .run()
        .expect_code(0);
    assert_eq!(out.read("db-creds"), b"legacy value");

    // Unlike the original, a failure is loud.
    let other = Scratch::tmpfs("legacy-missing");
    sidecar(&other)
        .env("SECRET_NAME", unique("nope"))
        .run()
        .expect_code(4);
    other.expect_empty();
}

#[test]
fn environment_variables_configure_everything() {
    let mut seed = Seeder::connect();
    let a = unique("env-a");
    let b = unique("env-b");
    seed.string(&a, "A");
    seed.string(&b, r#"{"k":"B"}"#);
    let out = Scratch::tmpfs("env");

    testkit::sidecar!()
        .env("SECRET_SIDECAR_OUTPUT_DIR", &out.path)
        .env(
            "SECRET_SIDECAR_SECRET",
            format!("a=aws://{a},b=aws://{b}#k"),
        )
        .env("SECRET_SIDECAR_MODE", "0400")
        .env("SECRET_SIDECAR_LOG_FORMAT", "json")
        .run()
        .expect_code(0)
        .expect_stderr(r#""message":"published""#);
    assert_eq!(out.read("a"), b"A");
    assert_eq!(out.read("b"), b"B");
    assert_eq!(out.mode("a"), 0o400);
}

#[test]
fn config_file_sets_per_secret_file_key_mode_and_owner() {
    let mut seed = Seeder::connect();
    let name = unique("config");
    seed.string(&name, r#"{"user":"u","password":"p"}"#);
    let out = Scratch::tmpfs("config");
    let dir = Scratch::disk("config-file");
    let config = dir.path.join("secrets.yaml");
    fs::write(
        &config,
        format!(
            "secrets:\n  - ref: aws://{name}\n    file: db/user\n    key: user\n  - ref: aws://{name}#password\n    file: db/password\n    mode: \"0400\"\n    owner: \"4321:8765\"\n"
        ),
    )
    .unwrap();

    let as_root = fs::metadata("/proc/self").unwrap().uid() == 0;
    let run = sidecar(&out)
        .arg("--config")
        .arg(&config)
        .arg("--mode")
        .arg("0444")
        .run();
    if !as_root {
        // Without CAP_CHOWN the owner cannot be set, and nothing is published.
        run.expect_code(6);
        out.expect_empty();
        return;
    }
    run.expect_code(0);
    assert_eq!(out.visible(), ["db"]);
    assert_eq!(out.read("db/user"), b"u");
    assert_eq!(out.read("db/password"), b"p");
    assert_eq!(out.mode("db/user"), 0o444);
    assert_eq!(out.mode("db/password"), 0o400);
    let meta = fs::metadata(out.path.join("db/password")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4321, 8765));
}

#[test]
fn sentinel_never_reaches_any_output_even_at_trace_level() {
    let mut seed = Seeder::connect();
    let string = unique("leak-string");
    let json = unique("leak-json");
    let binary = unique("leak-binary");
    seed.string(&string, SENTINEL);
    seed.string(&json, &format!(r#"{{"k":"{SENTINEL}","n":1}}"#));
    seed.binary(&binary, SENTINEL.as_bytes());
    let out = Scratch::tmpfs("leak");

    let trace = |sidecar: Sidecar| sidecar.env("RUST_LOG", "trace").run();
    let secrets = |sidecar: Sidecar| {
        sidecar
            .arg("--secret")
            .arg(format!("s=aws://{string}"))
            .arg("--secret")
            .arg(format!("j=aws://{json}#k"))
            .arg("--secret")
            .arg(format!("b=aws://{binary}"))
    };
    let run = trace(secrets(sidecar(&out)));
    run.expect_code(0)
        .expect_no_leak(SENTINEL.as_bytes())
        .expect_stderr("DEBUG fetched");
    // The SDKs' own trace events are many; unless asked for, none of them is shown.
    let internals = trace(secrets(sidecar(&out)).arg("--log-sdk-internals"));
    internals.expect_code(0);
    assert!(
        internals.stderr.len() > 10_000 && run.stderr.len() * 5 < internals.stderr.len(),
        "the SDK guard made no difference: {} bytes with it, {} without",
        run.stderr.len(),
        internals.stderr.len()
    );
    // The test can fail: the value really went through the process.
    for file in ["s", "j", "b"] {
        assert_eq!(out.read(file), SENTINEL.as_bytes());
    }

    // Failure paths print errors; they must not carry the value either.
    let failing = Scratch::tmpfs("leak-fail");
    for key in ["#/k/deeper", "#missing"] {
        let run = trace(
            sidecar(&failing)
                .arg("--secret")
                .arg(format!("x=aws://{json}{key}")),
        );
        run.expect_code(7).expect_no_leak(SENTINEL.as_bytes());
    }
    let run = trace(
        sidecar(&failing)
            .arg("--secret")
            .arg(format!("x=aws://{string}#k")),
    );
    run.expect_code(7).expect_no_leak(SENTINEL.as_bytes());

    // Nothing but the intended files holds it: no stray temporary files anywhere, and the
    // manifest describes the files without their values.
    for (path, kind) in out.listing() {
        if path.ends_with("..manifest.json") {
            let manifest = String::from_utf8(out.read(&path)).unwrap();
            for form in testkit::leak_forms(SENTINEL.as_bytes()) {
                assert!(
                    !manifest.contains(&form),
                    "the manifest holds the value: {manifest}"
                );
            }
            assert!(manifest.contains(&format!("aws://{string}")), "{manifest}");
        } else if kind.starts_with("file") {
            assert!(
                ["s", "j", "b"].iter().any(|f| path.ends_with(f)),
                "unexpected file {path}"
            );
        }
    }
}

#[test]
fn current_versions_are_batched_twenty_per_call() {
    let mut seed = Seeder::connect();
    let names: Vec<String> = (0..25).map(|i| unique(&format!("batch{i}"))).collect();
    for name in &names {
        seed.string(name, &format!("value of {name}"));
    }
    let out = Scratch::tmpfs("batch");
    let args: Vec<String> = names
        .iter()
        .enumerate()
        .flat_map(|(i, n)| ["--secret".into(), format!("s{i}=aws://{n}")])
        .collect();

    let run = sidecar(&out)
        .env("RUST_LOG", "secret_sidecar=debug")
        .args(&args)
        .run();
    run.expect_code(0);
    assert_eq!(
        run.stderr
            .matches("BatchGetSecretValue asked=20 got=20")
            .count(),
        1,
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr
            .matches("BatchGetSecretValue asked=5 got=5")
            .count(),
        1,
        "{}",
        run.stderr
    );
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            out.read(&format!("s{i}")),
            format!("value of {name}").as_bytes()
        );
    }

    // never: one GetSecretValue per secret, same files.
    let run = sidecar(&out)
        .env("RUST_LOG", "secret_sidecar=debug")
        .args(&args)
        .args(["--aws-batch", "never"])
        .run();
    run.expect_code(0);
    assert!(
        !run.stderr.contains("BatchGetSecretValue"),
        "{}",
        run.stderr
    );
    assert_eq!(
        out.read("s24"),
        format!("value of {}", names[24]).as_bytes()
    );
}

#[test]
fn a_secret_missing_from_a_batch_is_asked_for_alone() {
    let mut seed = Seeder::connect();
    let present = unique("batch-present");
    seed.string(&present, "here");
    let absent = unique("batch-absent");
    let out = Scratch::tmpfs("batch-missing");

    let run = sidecar(&out)
        .env("RUST_LOG", "secret_sidecar=debug")
        .arg("--secret")
        .arg(format!("a=aws://{present}"))
        .arg("--secret")
        .arg(format!("b=aws://{absent}"))
        .run();
    run.expect_code(4)
        .expect_stderr("BatchGetSecretValue asked=2 got=1")
        .expect_stderr("ResourceNotFoundException");
    out.expect_empty();

    // Optional: skipped, and the batched one is published.
    sidecar(&out)
        .arg("--secret")
        .arg(format!("a=aws://{present}"))
        .arg("--secret")
        .arg(format!("b=aws://{absent}?optional"))
        .run()
        .expect_code(0);
    assert_eq!(out.visible(), ["a"]);
}
