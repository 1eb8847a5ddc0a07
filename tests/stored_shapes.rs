#![cfg(feature = "aws")]
//! Secrets shaped the way the clouds and their users store them (issue 18), through the
//! real binary against LocalStack: an RDS-managed database secret published field by field
//! (its port is a JSON number) and exploded, and a Docker registry credential file built
//! from a username and a password with the template's base64 filters, read back by
//! Python's own `base64` and `json`.

use std::fs;
use std::process::Command;

use testkit::localstack::Seeder;
use testkit::{SENTINEL, Scratch, Sidecar, unique};

fn sidecar(out: &Scratch) -> Sidecar {
    testkit::sidecar!().arg("--output-dir").arg(&out.path)
}

/// The secret Secrets Manager creates for "Credentials for Amazon RDS database", key for
/// key and type for type: `port` is a number.
fn rds_secret(password: &str) -> String {
    serde_json::json!({
        "username": "postgres",
        "password": password,
        "engine": "postgres",
        "host": "app-db.cluster-c9akciq32.eu-west-1.rds.amazonaws.com",
        "port": 5432,
        "dbClusterIdentifier": "app-db",
    })
    .to_string()
}

#[test]
fn an_rds_secret_is_published_field_by_field_and_exploded() {
    let mut seed = Seeder::connect();
    let name = unique("rds");
    seed.string(&name, &rds_secret(SENTINEL));
    let out = Scratch::tmpfs("rds");

    let run = sidecar(&out)
        .env("RUST_LOG", "trace")
        .args([
            "--secret",
            &format!("host=aws://{name}#host"),
            "--secret",
            &format!("port=aws://{name}#port"),
            "--secret",
            &format!("password=aws://{name}#password"),
            "--secret",
            &format!("db=aws://{name}?format=explode"),
        ])
        .run();
    run.expect_code(0);
    // The value only in the files, never in the logs.
    assert!(!run.stderr.contains(SENTINEL), "{}", run.stderr);
    assert_eq!(out.read("port"), b"5432");
    assert_eq!(out.read("password"), SENTINEL.as_bytes());
    assert_eq!(
        out.read("host"),
        b"app-db.cluster-c9akciq32.eu-west-1.rds.amazonaws.com"
    );
    assert_eq!(out.read("db/port"), b"5432");
    assert_eq!(out.read("db/engine"), b"postgres");
    assert_eq!(out.read("db/password"), SENTINEL.as_bytes());

    // A key the secret does not have is still exit 7, with nothing published.
    let missing = Scratch::tmpfs("rds-missing");
    sidecar(&missing)
        .args(["--secret", &format!("p=aws://{name}#dbname")])
        .run()
        .expect_code(7)
        .expect_stderr("has no key 'dbname'");
    missing.expect_empty();
}

/// A `.dockerconfigjson` (what `kubectl create secret docker-registry` writes): `auth`
/// is base64 of `user:password`. Built from two fields and read back by Python.
#[test]
fn a_docker_config_is_built_with_base64_and_reads_back_in_python() {
    let mut seed = Seeder::connect();
    let name = unique("registry");
    let password = format!("{SENTINEL} p:w\"é");
    let stored = serde_json::json!({"username": "robot$ci", "password": password}).to_string();
    seed.string(&name, &stored);
    let out = Scratch::tmpfs("docker-config");
    let dir = Scratch::disk("docker-config-yaml");
    let config = dir.path.join("secrets.yaml");
    // The README's example, as written there.
    let yaml = r#"files:
  - file: .dockerconfigjson
    format: template
    mode: "0400"
    template: |
      {"auths": {"registry.example.com": {
        "username": {{ registry.username | tojson }},
        "password": {{ registry.password | tojson }},
        "auth": "{{ (registry.username ~ ':' ~ registry.password) | b64encode }}"}}}
    values:
      registry: aws://prod/registry
"#;
    fs::write(
        &config,
        yaml.replace("aws://prod/registry", &format!("aws://{name}")),
    )
    .unwrap();

    sidecar(&out)
        .arg("--config")
        .arg(&config)
        .run()
        .expect_code(0);

    let file = out.path.join(".dockerconfigjson");
    let check = r#"
import base64, json, sys
auths = json.load(open(sys.argv[1]))["auths"]["registry.example.com"]
user, _, password = base64.b64decode(auths["auth"], validate=True).decode().partition(":")
assert user == auths["username"] == "robot$ci", user
assert password == auths["password"] == sys.argv[2], password
print("ok")
"#;
    let python = Command::new("python3")
        .args(["-c", check])
        .arg(&file)
        .arg(&password)
        .output()
        .unwrap();
    assert!(
        python.status.success(),
        "{}",
        String::from_utf8_lossy(&python.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&python.stdout), "ok\n");
}
