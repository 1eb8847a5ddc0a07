#![cfg(feature = "aws")]
//! Parameter Store (`ssm://`) through the real binary against LocalStack (issue 18): each
//! parameter type, versions and labels, missing parameters, paths published as files
//! (paginated, recursive, names checked), batching, and one identity for both AWS stores;
//! then what LocalStack cannot be made to answer, from a scripted server speaking the
//! same JSON protocol. The rows every store passes are in tests/conformance.rs.

use testkit::http::{Response, Server};
use testkit::localstack::Seeder;
use testkit::ssm::{Kind, Parameters};
use testkit::{Run, SENTINEL, Scratch, Sidecar, unique, unique_id};

fn sidecar(out: &Scratch) -> Sidecar {
    testkit::sidecar!()
        .env("RUST_LOG", "debug")
        .arg("--output-dir")
        .arg(&out.path)
}

/// A hierarchy of this test's own: `/test/TAG-<unique>`.
fn root(tag: &str) -> String {
    format!("/test/{tag}-{}", unique_id('-'))
}

#[track_caller]
fn quiet(run: &Run) {
    assert!(!run.stderr.contains(SENTINEL), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn each_type_is_published_as_stored_and_securestring_decrypted() {
    let store = Parameters::connect();
    let root = root("types");
    let secure = format!("{SENTINEL} \"quoted\"\nline two é");
    store.put(&format!("{root}/plain"), Kind::String, "postgres.internal");
    store.put(
        &format!("{root}/hosts"),
        Kind::StringList,
        "a.internal,b.internal",
    );
    store.put(&format!("{root}/password"), Kind::SecureString, &secure);
    let flat = format!("flat-{}", unique_id('-'));
    store.put(&flat, Kind::String, "no hierarchy");
    // Parameter Store holds the SecureString encrypted.
    assert_ne!(store.stored(&format!("{root}/password")), secure);
    let out = Scratch::tmpfs("ssm-types");

    let run = sidecar(&out)
        .args(["--secret", &format!("host=ssm://{root}/plain")])
        .args(["--secret", &format!("hosts=ssm://{root}/hosts")])
        .args(["--secret", &format!("ssm://{root}/password")])
        .args(["--secret", &format!("flat=ssm://{flat}")])
        .run();
    run.expect_code(0)
        .expect_stderr("AWS identity loaded source=EnvironmentVariable");
    quiet(&run);
    assert_eq!(out.read("host"), b"postgres.internal");
    assert_eq!(out.read("hosts"), b"a.internal,b.internal");
    assert_eq!(out.read("flat"), b"no hierarchy");
    // Without FILE=, the name without its leading '/', '/' turned into '_'.
    let derived = format!(
        "{}_password",
        root.trim_start_matches('/').replace('/', "_")
    );
    assert_eq!(out.read(&derived), secure.as_bytes());
    // Four parameters, one region: read together, in one GetParameters call.
    run.expect_stderr("GetParameters asked=4 got=4");
}

#[test]
fn versions_labels_and_json_keys_select_what_is_published() {
    let store = Parameters::connect();
    let name = format!("{}/db", root("versions"));
    let first = store.put(
        &name,
        Kind::SecureString,
        r#"{"password":"one","port":5432}"#,
    );
    let second = store.put(
        &name,
        Kind::SecureString,
        r#"{"password":"two","port":6432}"#,
    );
    store.label(&name, first, "stable");
    let out = Scratch::tmpfs("ssm-versions");

    let run = sidecar(&out)
        .args(["--secret", &format!("latest=ssm://{name}#password")])
        .args([
            "--secret",
            &format!("first=ssm://{name}?version={first}#password"),
        ])
        .args([
            "--secret",
            &format!("second=ssm://{name}?version={second}#port"),
        ])
        .args([
            "--secret",
            &format!("stable=ssm://{name}?label=stable#password"),
        ])
        .run();
    run.expect_code(0).expect_stderr(&format!(
        "reference=ssm://{name}?label=stable#password version={first}"
    ));
    assert_eq!(out.read("latest"), b"two");
    assert_eq!(out.read("first"), b"one");
    assert_eq!(out.read("second"), b"6432");
    assert_eq!(out.read("stable"), b"one");
}

#[test]
fn a_missing_parameter_version_or_label_exits_4_and_publishes_nothing() {
    let store = Parameters::connect();
    let name = format!("{}/present", root("missing"));
    store.put(&name, Kind::String, SENTINEL);
    let out = Scratch::tmpfs("ssm-missing");
    for absent in [
        format!("ssm://{name}-absent"),
        format!("ssm://{name}?version=9"),
        format!("ssm://{name}?label=nowhere"),
    ] {
        // Read alone and in a batch: the batch leaves a missing name to GetParameter.
        for batch in ["never", "auto"] {
            let run = sidecar(&out)
                .args(["--ssm-batch", batch])
                .args(["--secret", &format!("ok=ssm://{name}")])
                .args(["--secret", &format!("absent={absent}")])
                .run();
            run.expect_code(4)
                .expect_stderr("secret not found")
                .expect_stderr(&absent);
            quiet(&run);
            out.expect_empty();
        }
    }
    // Optional: skipped, the rest published.
    sidecar(&out)
        .args(["--secret", &format!("ok=ssm://{name}")])
        .args(["--secret", &format!("absent=ssm://{name}-absent?optional")])
        .run()
        .expect_code(0);
    assert_eq!(out.visible(), ["ok"]);
}

#[test]
fn a_path_publishes_every_parameter_under_it_as_files() {
    let store = Parameters::connect();
    let root = root("path");
    // 27 parameters, three levels deep: three pages of GetParametersByPath.
    let mut expected = Vec::new();
    for i in 0..25 {
        let value = format!("value {i}");
        store.put(&format!("{root}/app/setting-{i:02}"), Kind::String, &value);
        expected.push((format!("cfg/setting-{i:02}"), value));
    }
    store.put(
        &format!("{root}/app/db/password"),
        Kind::SecureString,
        SENTINEL,
    );
    expected.push(("cfg/db/password".to_owned(), SENTINEL.to_owned()));
    store.put(
        &format!("{root}/app/db/tls/mode"),
        Kind::String,
        "verify-full",
    );
    expected.push(("cfg/db/tls/mode".to_owned(), "verify-full".to_owned()));
    store.put(&format!("{root}/other"), Kind::String, "not under the path");
    let out = Scratch::tmpfs("ssm-path");

    let run = sidecar(&out)
        .args(["--secret", &format!("cfg=ssm://{root}/app/?mode=0400")])
        .run();
    run.expect_code(0).expect_stderr("parameters=27 calls=3");
    quiet(&run);
    assert_eq!(out.visible(), ["cfg"]);
    for (file, value) in &expected {
        assert_eq!(out.read(file), value.as_bytes(), "{file}");
        assert_eq!(out.mode(file), 0o400, "{file}");
    }
    let manifest: serde_json::Value = serde_json::from_slice(&out.read("..manifest.json")).unwrap();
    assert_eq!(manifest["files"].as_array().unwrap().len(), 27);

    // A path with nothing under it is "not found"; optional skips it.
    let empty = format!("{root}/nothing/");
    sidecar(&out)
        .args(["--secret", &format!("none=ssm://{empty}")])
        .run()
        .expect_code(4)
        .expect_stderr("no parameters under");
    sidecar(&out)
        .args(["--secret", &format!("none=ssm://{empty}?optional")])
        .run()
        .expect_code(0);
}

#[test]
fn a_path_whose_names_are_unsafe_file_names_publishes_nothing() {
    let store = Parameters::connect();
    for (tag, names) in [
        // `..data` is a valid parameter name and the publisher's own link.
        ("reserved", &["..data", "fine"][..]),
        // Two names only case tells apart collide on a case-insensitive view.
        ("case", &["DB", "db"][..]),
        // A file that another parameter needs as its directory.
        ("nested", &["db", "db/password"][..]),
    ] {
        let root = root(tag);
        for name in names {
            store.put(&format!("{root}/{name}"), Kind::String, SENTINEL);
        }
        let out = Scratch::tmpfs("ssm-unsafe");
        let run = sidecar(&out)
            .args(["--secret", &format!("cfg=ssm://{root}/")])
            .run();
        run.expect_code(7).expect_stderr("bad secret data");
        quiet(&run);
        out.expect_empty();
    }
}

#[test]
fn both_aws_stores_share_one_identity_and_batch_ten_at_a_time() {
    let store = Parameters::connect();
    let root = root("batch");
    let mut args = Vec::new();
    for i in 0..12 {
        store.put(&format!("{root}/p{i}"), Kind::String, &format!("v{i}"));
        args.extend(["--secret".to_owned(), format!("p{i}=ssm://{root}/p{i}")]);
    }
    let mut secrets = Seeder::connect();
    let secret = unique("with-ssm");
    secrets.string(&secret, "from secrets manager");
    let out = Scratch::tmpfs("ssm-batch");

    let run = sidecar(&out)
        .args(&args)
        .args(["--secret", &format!("sm=aws://{secret}")])
        .run();
    run.expect_code(0);
    let loads = run.stderr.matches("AWS identity loaded").count();
    assert_eq!(loads, 1, "{}", run.stderr);
    run.expect_stderr("GetParameters asked=10 got=10")
        .expect_stderr("GetParameters asked=2 got=2");
    assert_eq!(out.read("sm"), b"from secrets manager");
    for i in 0..12 {
        assert_eq!(out.read(&format!("p{i}")), format!("v{i}").as_bytes());
    }
}

#[test]
fn references_are_checked_before_any_request() {
    let out = Scratch::tmpfs("ssm-usage");
    for bad in [
        "ssm://app/db",
        "ssm:///app/db?version=0",
        "ssm:///app/db?version=1&label=x",
        "ssm:///app/?label=x",
        "ssm:///app/#password",
        "ssm:///app/?format=base64",
        "ssm://arn:aws:secretsmanager:eu-west-1:1:secret:db",
        "ssm:///app/db?version-stage=AWSCURRENT",
    ] {
        testkit::sidecar!()
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .arg("--output-dir")
            .arg(&out.path)
            .args(["--secret", bad])
            .run()
            .expect_code(2);
    }
}

/// A Parameter Store that refuses GetParameters and serves GetParameter, as for a role
/// granted `ssm:GetParameter` alone.
fn batch_denied() -> Server {
    Server::with_handler(|request| {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        match request.header("x-amz-target") {
            Some("AmazonSSM.GetParameters") => Response::json(
                400,
                r#"{"__type":"AccessDeniedException","message":"not authorized to perform: ssm:GetParameters"}"#,
            ),
            _ => {
                let name = body["Name"].as_str().unwrap_or_default();
                Response::json(
                    200,
                    serde_json::json!({"Parameter": {
                        "Name": name, "Type": "String", "Value": format!("value of {name}"),
                        "Version": 1, "DataType": "text",
                    }})
                    .to_string(),
                )
            }
        }
    })
}

#[test]
fn a_denied_batch_falls_back_to_single_reads_unless_forced() {
    let server = batch_denied();
    let out = Scratch::tmpfs("ssm-wire-batch");
    let run = |batch: &str| {
        testkit::sidecar!()
            .env("AWS_ENDPOINT_URL", &server.url)
            .arg("--output-dir")
            .arg(&out.path)
            .args(["--ssm-batch", batch])
            .args(["--secret", "a=ssm:///one", "--secret", "b=ssm:///two"])
            .run()
    };
    run("auto").expect_code(0);
    assert_eq!(out.read("a"), b"value of /one");
    assert_eq!(out.read("b"), b"value of /two");
    let targets: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.header("x-amz-target").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(targets[0], "AmazonSSM.GetParameters");
    assert_eq!(targets[1..], ["AmazonSSM.GetParameter"; 2]);
    let agent = server.requests()[0]
        .header("user-agent")
        .unwrap_or_default()
        .to_owned();
    assert!(agent.ends_with(concat!("secret-sidecar/", env!("CARGO_PKG_VERSION"))));

    run("always")
        .expect_code(4)
        .expect_stderr("GetParameters (--ssm-batch always)");
}
