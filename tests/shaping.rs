#![cfg(feature = "aws")]
//! Shaping the output: every format, aggregate files, optional secrets, per-file modes
//! and owners, and the manifest, through the real binary against LocalStack.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use testkit::localstack::Seeder;
use testkit::{SENTINEL, Scratch, Sidecar, base64, unique};

fn sidecar(out: &Scratch) -> Sidecar {
    testkit::sidecar!().arg("--output-dir").arg(&out.path)
}

fn config(dir: &Scratch, text: &str) -> std::path::PathBuf {
    let path = dir
        .path
        .join(format!("{}.yaml", unique("config").replace('/', "-")));
    fs::write(&path, text).unwrap();
    path
}

fn as_root() -> bool {
    fs::metadata("/proc/self").unwrap().uid() == 0
}

#[test]
fn explode_makes_one_file_per_member() {
    let mut seed = Seeder::connect();
    let name = unique("explode");
    seed.string(
        &name,
        r#"{"username":"app","password":"p w","port":5432,"tls":{"on":true}}"#,
    );
    let out = Scratch::tmpfs("explode");

    sidecar(&out)
        .arg("--secret")
        .arg(format!("db=aws://{name}?format=explode&mode=0400"))
        .run()
        .expect_code(0);
    assert_eq!(out.visible(), ["db"]);
    assert_eq!(out.read("db/username"), b"app");
    assert_eq!(out.read("db/password"), b"p w");
    assert_eq!(out.read("db/port"), b"5432");
    assert_eq!(out.read("db/tls"), br#"{"on":true}"#);
    assert_eq!(out.mode("db/password"), 0o400);
}

#[test]
fn explode_refuses_members_that_are_not_file_names_or_collide() {
    let mut seed = Seeder::connect();
    let out = Scratch::tmpfs("explode-bad");
    for document in [
        r#"{"../etc":"x"}"#,
        r#"{"a/b":"x"}"#,
        r#"{"..data":"x"}"#,
        r#"{"User":"x","user":"y"}"#,
        r#"["x"]"#,
    ] {
        let name = unique("explode-bad");
        seed.string(&name, document);
        sidecar(&out)
            .arg("--secret")
            .arg(format!("d=aws://{name}?format=explode"))
            .run()
            .expect_code(7);
        out.expect_empty();
    }
}

#[test]
fn base64_is_decoded_byte_exact() {
    let mut seed = Seeder::connect();
    let name = unique("base64");
    // A keystore-like blob: every byte value, stored as wrapped base64 text.
    let bytes: Vec<u8> = (0..=255u8).collect();
    let encoded = base64(&bytes);
    let wrapped: Vec<&str> = encoded
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    seed.string(&name, &format!("{}\n", wrapped.join("\n")));
    let nested = unique("base64-json");
    seed.string(&nested, &format!(r#"{{"p12":"{encoded}"}}"#));
    let out = Scratch::tmpfs("base64");

    sidecar(&out)
        .arg("--secret")
        .arg(format!("keystore.p12=aws://{name}?format=base64"))
        .arg("--secret")
        .arg(format!("nested.p12=aws://{nested}?format=base64#p12"))
        .run()
        .expect_code(0);
    assert_eq!(out.read("keystore.p12"), bytes);
    assert_eq!(out.read("nested.p12"), bytes);

    let not_base64 = unique("not-base64");
    seed.string(&not_base64, "this is not base64!");
    let other = Scratch::tmpfs("base64-bad");
    sidecar(&other)
        .arg("--secret")
        .arg(format!("x=aws://{not_base64}?format=base64"))
        .run()
        .expect_code(7);
    other.expect_empty();
}

#[test]
fn optional_secrets_are_skipped_only_when_missing() {
    let mut seed = Seeder::connect();
    let present = unique("present");
    seed.string(&present, "here");
    let absent = unique("absent");
    let out = Scratch::tmpfs("optional");

    let run = sidecar(&out)
        .arg("--secret")
        .arg(format!("a=aws://{present}"))
        .arg("--secret")
        .arg(format!("b=aws://{absent}?optional"))
        .run();
    run.expect_code(0).expect_stderr("optional secret skipped");
    assert_eq!(out.visible(), ["a"]);
    let manifest = String::from_utf8(out.read("..manifest.json")).unwrap();
    assert!(
        manifest.contains(&format!("aws://{absent}?optional")),
        "{manifest}"
    );
    assert!(manifest.contains("not found (optional)"), "{manifest}");

    // Still required elsewhere (here: by an aggregate), it fails the run.
    let dir = Scratch::disk("optional-config");
    let path = config(
        &dir,
        &format!(
            "secrets:\n  - ref: aws://{absent}\n    optional: true\nfiles:\n  - file: e.env\n    format: env\n    values:\n      X: aws://{absent}\n"
        ),
    );
    let other = Scratch::tmpfs("optional-agg");
    sidecar(&other)
        .arg("--config")
        .arg(&path)
        .run()
        .expect_code(4);
    other.expect_empty();
}

#[test]
fn optional_does_not_hide_access_denied() {
    let server = testkit::http::Server::start(vec![testkit::http::Response::json(
        400,
        r#"{"__type":"AccessDeniedException","Message":"no"}"#,
    )]);
    let out = Scratch::tmpfs("optional-denied");
    sidecar(&out)
        .env("AWS_ENDPOINT_URL", &server.url)
        .args(["--secret", "x=aws://db?optional"])
        .run()
        .expect_code(4)
        .expect_stderr("access denied");
    out.expect_empty();
}

/// Values that break naive env files: quotes, `$`, backslashes, spaces, newlines, `#`.
const TRICKY: [(&str, &str); 7] = [
    ("PLAIN", "simple"),
    ("SPACES", "  leading and trailing  "),
    ("DOLLAR", "$HOME $PATH $(id) `id` $"),
    ("DOUBLE", r#"say "hi" # not a comment"#),
    ("SINGLE", "it's"),
    ("BACKSLASH", r"C:\path\to\thing"),
    ("MULTILINE", "line one\nline two\n"),
];

#[test]
fn env_file_round_trips_through_sh_and_dotenv() {
    let mut seed = Seeder::connect();
    let name = unique("env");
    let document = serde_json::to_string(
        &TRICKY
            .iter()
            .cloned()
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
    .unwrap();
    seed.string(&name, &document);
    let out = Scratch::tmpfs("env");
    let dir = Scratch::disk("env-config");
    let mut text =
        "files:\n  - file: app.env\n    format: env\n    multiline: true\n    mode: \"0400\"\n    values:\n".to_owned();
    for (key, _) in TRICKY {
        text.push_str(&format!("      {key}: aws://{name}#{key}\n"));
    }
    sidecar(&out)
        .arg("--config")
        .arg(config(&dir, &text))
        .run()
        .expect_code(0);
    assert_eq!(out.mode("app.env"), 0o400);
    let env_file = out.path.join("app.env");

    for (key, want) in TRICKY {
        // POSIX sh: `set -a; . FILE` and read the variable back byte for byte.
        let got = Command::new("sh")
            .arg("-c")
            .arg(format!("set -a; . \"$0\"; printf '%s' \"${key}\""))
            .arg(&env_file)
            .env_clear()
            .output()
            .unwrap();
        assert!(
            got.status.success(),
            "sh failed: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert_eq!(
            String::from_utf8(got.stdout).unwrap(),
            want,
            "sh read {key} back differently"
        );
    }

    // python-dotenv, when the test runner provides a Python that has it.
    match std::env::var("SECRET_SIDECAR_TEST_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
    {
        Some(python) => {
            let got = Command::new(python)
                .args([
                    "-c",
                    "import json,sys,dotenv; print(json.dumps(dotenv.dotenv_values(sys.argv[1])))",
                ])
                .arg(&env_file)
                .output()
                .unwrap();
            assert!(
                got.status.success(),
                "{}",
                String::from_utf8_lossy(&got.stderr)
            );
            let parsed: std::collections::BTreeMap<String, String> =
                serde_json::from_slice(&got.stdout).unwrap();
            for (key, want) in TRICKY {
                assert_eq!(
                    parsed.get(key).map(String::as_str),
                    Some(want),
                    "python-dotenv read {key} back differently"
                );
            }
        }
        None => eprintln!("SECRET_SIDECAR_TEST_PYTHON unset: python-dotenv round trip not checked"),
    }
}

#[test]
fn env_file_refuses_a_value_no_parser_agrees_on() {
    let mut seed = Seeder::connect();
    let out = Scratch::tmpfs("env-bad");
    let dir = Scratch::disk("env-bad-config");
    for value in [
        format!("it's {SENTINEL} $HOME"),
        format!("{SENTINEL} ${{PATH}}"),
    ] {
        let name = unique("env-bad");
        seed.string(&name, &value);
        let path = config(
            &dir,
            &format!(
                "files:\n  - file: app.env\n    format: env\n    values:\n      X: aws://{name}\n"
            ),
        );
        sidecar(&out)
            .arg("--config")
            .arg(path)
            .run()
            .expect_code(7)
            .expect_stderr("publish it as its own file")
            .expect_no_leak(SENTINEL.as_bytes());
        out.expect_empty();
    }
}

/// A value with a line break would set a variable of its own for a line-oriented reader
/// (docker --env-file, `while read`): refused unless the file says its readers cope.
#[test]
fn env_file_refuses_line_breaks_unless_the_file_allows_them() {
    let mut seed = Seeder::connect();
    let name = unique("env-newline");
    seed.string(&name, &format!("{SENTINEL}\nLD_PRELOAD=/tmp/evil.so"));
    let out = Scratch::tmpfs("env-newline");
    let dir = Scratch::disk("env-newline-config");
    let entry = |extra: &str| {
        format!(
            "files:\n  - file: app.env\n    format: env\n{extra}    values:\n      DB_PASSWORD: aws://{name}\n"
        )
    };
    sidecar(&out)
        .arg("--config")
        .arg(config(&dir, &entry("")))
        .run()
        .expect_code(7)
        .expect_stderr("value DB_PASSWORD contains a line break")
        .expect_no_leak(SENTINEL.as_bytes())
        .expect_no_leak(b"LD_PRELOAD=/tmp/evil.so");
    out.expect_empty();

    sidecar(&out)
        .arg("--config")
        .arg(config(&dir, &entry("    multiline: true\n")))
        .run()
        .expect_code(0);
    let published = String::from_utf8(out.read("app.env")).unwrap();
    assert_eq!(
        published,
        format!("DB_PASSWORD='{SENTINEL}\nLD_PRELOAD=/tmp/evil.so'\n")
    );
}

#[test]
fn json_aggregate_reads_back_exactly() {
    let mut seed = Seeder::connect();
    let user = unique("json-user");
    let db = unique("json-db");
    seed.string(&user, "app\"user");
    seed.string(&db, r#"{"password":"p\nw"}"#);
    let out = Scratch::tmpfs("json-agg");
    let dir = Scratch::disk("json-agg-config");
    let path = config(
        &dir,
        &format!(
            "files:\n  - file: creds.json\n    format: json\n    values:\n      user: aws://{user}\n      password: aws://{db}#password\n"
        ),
    );
    sidecar(&out).arg("--config").arg(path).run().expect_code(0);
    let parsed: serde_json::Value = serde_json::from_slice(&out.read("creds.json")).unwrap();
    assert_eq!(
        parsed,
        serde_json::json!({"user": "app\"user", "password": "p\nw"})
    );
}

#[test]
fn template_renders_a_dsn_and_fails_closed_on_a_missing_variable() {
    let mut seed = Seeder::connect();
    let db = unique("tpl-db");
    seed.string(
        &db,
        &format!(r#"{{"username":"app","password":"{SENTINEL}","host":"db.internal"}}"#),
    );
    let out = Scratch::tmpfs("template");
    let dir = Scratch::disk("template-config");
    let template_file = dir.path.join("application.properties.j2");
    fs::write(&template_file, "spring.datasource.url=jdbc:postgresql://{{ db.host }}/app\nspring.datasource.password={{ db.password }}\n").unwrap();
    let path = config(
        &dir,
        &format!(
            "files:\n  - file: application.properties\n    format: template\n    template_file: {}\n    values:\n      db: aws://{db}\n  - file: dsn\n    format: template\n    template: \"postgres://{{{{ user }}}}@{{{{ db.host }}}}\"\n    values:\n      db: aws://{db}\n      user: aws://{db}#username\n",
            template_file.display()
        ),
    );
    sidecar(&out)
        .arg("--config")
        .arg(&path)
        .run()
        .expect_code(0);
    assert_eq!(
        String::from_utf8(out.read("application.properties")).unwrap(),
        format!(
            "spring.datasource.url=jdbc:postgresql://db.internal/app\nspring.datasource.password={SENTINEL}\n"
        )
    );
    assert_eq!(out.read("dsn"), b"postgres://app@db.internal");

    // A variable the secret does not have: exit 7, nothing new published, no value shown.
    let before = out.listing();
    fs::write(
        &template_file,
        "password={{ db.password }}\nport={{ db.port }}\n",
    )
    .unwrap();
    sidecar(&out)
        .arg("--config")
        .arg(&path)
        .run()
        .expect_code(7)
        .expect_stderr("undefined")
        .expect_no_leak(SENTINEL.as_bytes());
    assert_eq!(out.listing(), before);

    // A template that does not compile is a usage error, found before any fetch.
    fs::write(&template_file, "{{ db.password ").unwrap();
    sidecar(&out)
        .arg("--config")
        .arg(&path)
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .run()
        .expect_code(2);
}

#[test]
fn per_file_modes_and_owners_hold_for_a_non_root_reader() {
    if !as_root() {
        eprintln!(
            "not root: chown and setpriv are unavailable; covered by the exit-6 path in tests/aws.rs"
        );
        return;
    }
    let mut seed = Seeder::connect();
    let name = unique("perms");
    seed.string(&name, "top secret");
    let out = Scratch::tmpfs("perms");
    fs::set_permissions(
        &out.path,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    sidecar(&out)
        .arg("--mode")
        .arg("0440")
        .arg("--owner")
        .arg("0:0")
        .arg("--secret")
        .arg(format!("group-readable=aws://{name}?owner=0:65532"))
        .arg("--secret")
        .arg(format!(
            "owner-only=aws://{name}?owner=65532:65532&mode=0400"
        ))
        .arg("--secret")
        .arg(format!("root-only=aws://{name}?mode=0400"))
        .run_with_umask("0022")
        .expect_code(0);

    // Everything below runs as uid/gid 65532 with no supplementary groups.
    let as_reader = |args: &[&str], file: &str| {
        Command::new("setpriv")
            .args(["--reuid", "65532", "--regid", "65532", "--clear-groups"])
            .args(args)
            .arg(out.path.join(file))
            .output()
            .unwrap()
    };
    let stat = |file: &str| {
        let got = as_reader(&["stat", "-L", "-c", "%a %u:%g"], file);
        assert!(
            got.status.success(),
            "{}",
            String::from_utf8_lossy(&got.stderr)
        );
        String::from_utf8(got.stdout).unwrap().trim().to_owned()
    };
    let can_read = |file: &str| as_reader(&["cat"], file).status.success();
    assert_eq!(stat("group-readable"), "440 0:65532");
    assert_eq!(stat("owner-only"), "400 65532:65532");
    assert_eq!(stat("root-only"), "400 0:0");
    assert!(can_read("group-readable"), "group member cannot read 0440");
    assert!(can_read("owner-only"), "owner cannot read 0400");
    assert!(
        !can_read("root-only"),
        "uid 65532 read a root-only 0400 file"
    );
}

#[test]
fn the_fsgroup_recipe_lets_another_uid_read_the_files() {
    if !as_root() {
        eprintln!("not root: cannot set up an fsGroup-style volume or switch users");
        return;
    }
    let mut seed = Seeder::connect();
    let name = unique("fsgroup");
    seed.string(&name, "for the app");
    let out = Scratch::tmpfs("fsgroup");
    // What kubelet makes of an emptyDir with fsGroup 1000: group 1000, setgid, writable.
    std::os::unix::fs::chown(&out.path, Some(0), Some(1000)).unwrap();
    fs::set_permissions(
        &out.path,
        std::os::unix::fs::PermissionsExt::from_mode(0o2777),
    )
    .unwrap();

    // The sidecar runs as 65532:65532 with the fsGroup as a supplementary group.
    sidecar(&out)
        .arg("--secret")
        .arg(format!("db=aws://{name}"))
        .run_under(&[
            "setpriv", "--reuid", "65532", "--regid", "65532", "--groups", "1000",
        ])
        .expect_code(0);
    let meta = fs::metadata(out.path.join("db")).unwrap();
    assert_eq!(
        (meta.mode() & 0o777, meta.uid(), meta.gid()),
        (0o440, 65532, 1000)
    );

    // The app runs as another uid in group 1000 and reads the default 0440 file.
    let read = Command::new("setpriv")
        .args([
            "--reuid",
            "1001",
            "--regid",
            "1000",
            "--clear-groups",
            "cat",
        ])
        .arg(out.path.join("db"))
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert_eq!(read.stdout, b"for the app");
}

#[test]
fn manifest_describes_the_set_without_values() {
    let mut seed = Seeder::connect();
    let name = unique("manifest");
    let (_, version) = seed.string(&name, &format!(r#"{{"k":"{SENTINEL}"}}"#));
    let out = Scratch::tmpfs("manifest");

    sidecar(&out)
        .arg("--secret")
        .arg(format!("whole=aws://{name}?mode=0400"))
        .arg("--secret")
        .arg(format!("key=aws://{name}#k"))
        .run()
        .expect_code(0);
    let text = String::from_utf8(out.read("..manifest.json")).unwrap();
    for form in testkit::leak_forms(SENTINEL.as_bytes()) {
        assert!(
            !text.contains(&form),
            "the manifest holds the value: {text}"
        );
    }
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(manifest["version"], 1);
    let files = manifest["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["path"], "whole");
    assert_eq!(files[0]["mode"], "0400");
    assert_eq!(files[0]["bytes"], SENTINEL.len() + 8);
    assert_eq!(
        files[0]["sources"][0]["reference"],
        format!("aws://{name}?mode=0400")
    );
    assert_eq!(files[0]["sources"][0]["version"], version.as_str());
    assert!(
        files[0]["sources"][0]["fetched_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(files[1]["path"], "key");
    assert_eq!(files[1]["mode"], "0440");
    assert_eq!(files[1]["bytes"], SENTINEL.len());
    assert_eq!(manifest["skipped"], serde_json::json!([]));
    // It is published with the set, behind the same ..data link.
    assert!(Path::new(&out.path.join("..manifest.json")).is_symlink());
}
