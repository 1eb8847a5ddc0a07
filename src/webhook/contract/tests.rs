//! The annotation contract: what each annotation becomes, and that a denial names the
//! annotation and says what is wrong, in the binary's own words.

use super::*;

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
        .chain([("other.io/x".to_owned(), "ignored".to_owned())])
        .collect()
}

fn read(pairs: &[(&str, &str)]) -> Result<Asked, String> {
    let asked = Asked::read(&annotations(pairs)).map_err(|Denied(m)| m)?;
    asked
        .check_command_lines("/var/run/token")
        .map_err(|Denied(m)| m)?;
    Ok(asked)
}

#[track_caller]
fn denied(pairs: &[(&str, &str)], wanted: &[&str]) {
    let message = read(pairs).expect_err("should be denied");
    for part in wanted {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
}

#[test]
fn annotations_become_the_init_containers_command_line() {
    let asked = read(&[
        ("secret-db-password", "aws://prod/db#password"),
        ("secret-tls.key", "aws://prod/tls?mode=0400"),
        (
            "config",
            "secrets:\n  - ref: aws://prod/api\n    file: api\n",
        ),
        ("mount-path", "/var/run/app-secrets/"),
        ("mode", "0440"),
        ("timeout", "30s"),
    ])
    .unwrap();
    assert_eq!(
        asked.init_args(),
        [
            "--output-dir=/var/run/app-secrets",
            "--secret=db-password=aws://prod/db#password",
            "--secret=tls.key=aws://prod/tls?mode=0400",
            "--config=/etc/secret-sidecar/config.yaml",
            "--mode=0440",
            "--timeout=30s",
        ]
    );
    assert!(asked.init_first && asked.containers.is_none() && !asked.aws_token_sidecar);
}

#[cfg(feature = "aws")]
#[test]
fn a_token_source_and_its_sidecar() {
    let asked = read(&[
        ("secret-db", "aws://prod/db"),
        ("aws-token-source", "oauth2-client-credentials"),
        ("aws-role-arn", "arn:aws:iam::111122223333:role/app"),
        ("oauth2-token-url", "https://idp.example.com/token"),
        ("oauth2-client-id", "client"),
        ("oauth2-client-secret-from", "idp-client/secret"),
        ("oauth2-scope", "api://aws/.default"),
        ("aws-token-sidecar", "true"),
    ])
    .unwrap();
    assert_eq!(
        asked.oauth2_secret,
        Some(SecretKey {
            name: "idp-client".into(),
            key: "secret".into()
        })
    );
    assert_eq!(
        asked.token_args("/t/token"),
        [
            "token",
            "--source=oauth2-client-credentials",
            "--oauth2-client-id=client",
            "--oauth2-scope=api://aws/.default",
            "--oauth2-token-url=https://idp.example.com/token",
            "--out=/t/token",
            "--oauth2-client-secret-file=/var/run/secrets/secret-sidecar/oauth2/client-secret",
        ]
    );
}

#[test]
fn each_bad_annotation_is_named_with_what_is_wrong() {
    denied(
        &[("secret-db", "prod/db")],
        &["secret-sidecar.io/secret-db", "not a reference"],
    );
    denied(
        &[("secret-db", "aws://prod/db?verison-stage=X")],
        &["secret-sidecar.io/secret-db", "verison-stage"],
    );
    denied(
        &[("secret-db", "aws://a,b")],
        &["secret-sidecar.io/secret-db", "','"],
    );
    denied(
        &[("secert-db", "aws://prod/db")],
        &[
            "secret-sidecar.io/secert-db",
            "not an annotation",
            "secret-NAME",
        ],
    );
    denied(
        &[("secret-db", "aws://x"), ("mount-path", "run/secrets")],
        &["secret-sidecar.io/mount-path", "not an absolute path"],
    );
    denied(
        &[("secret-db", "aws://x"), ("mount-path", "/run/../etc")],
        &["secret-sidecar.io/mount-path", "'..'"],
    );
    denied(
        &[("secret-db", "aws://x"), ("mode", "0999")],
        &["secret-sidecar.io/mode", "not an octal number"],
    );
    denied(
        &[("secret-db", "aws://x"), ("owner", "app")],
        &["secret-sidecar.io/owner", "UID or UID:GID"],
    );
    denied(
        &[("secret-db", "aws://x"), ("timeout", "soon")],
        &["secret-sidecar.io/timeout", "not a duration"],
    );
    denied(
        &[("secret-db", "aws://x"), ("init-first", "yes")],
        &["secret-sidecar.io/init-first", "\"true\" or \"false\""],
    );
    denied(
        &[("secret-db", "aws://x"), ("containers", "app,,worker")],
        &["secret-sidecar.io/containers"],
    );
    denied(
        &[("secret-db", "aws://x"), ("imds-proxy", "true")],
        &["secret-sidecar.io/imds-proxy", "planned"],
    );
    denied(&[("mode", "0400")], &["asks for nothing"]);
}

#[test]
fn the_config_annotation_is_read_as_the_config_file_is() {
    denied(
        &[("config", "secrets:\n  - ref: aws://a\n    flie: x\n")],
        &["secret-sidecar.io/config", "unknown field `flie`", "line 3"],
    );
    // Found by the config fuzz target for --config; the same redaction holds here.
    let message = read(&[(
        "config",
        "secrets:\n  - ref: aws://x\n    format: SENTINELX9\n",
    )])
    .unwrap_err();
    assert!(message.contains("secret-sidecar.io/config") && !message.contains("SENTINELX9"));
    denied(
        &[(
            "config",
            "files:\n  - file: a\n    format: template\n    template_file: /etc/tls.key\n",
        )],
        &["secret-sidecar.io/config", "template_file"],
    );
}

#[test]
fn what_only_the_annotations_together_show_is_denied_by_the_planner() {
    denied(
        &[
            ("secret-db", "aws://prod/db"),
            (
                "config",
                "secrets:\n  - ref: aws://prod/other\n    file: DB\n",
            ),
        ],
        &["the annotations together", "name the same file"],
    );
}

#[cfg(feature = "aws")]
#[test]
fn identity_options_are_named_as_annotations() {
    let role = ("aws-role-arn", "arn:aws:iam::111122223333:role/app");
    denied(
        &[("secret-db", "aws://x"), ("aws-token-source", "gcp")],
        &[
            "secret-sidecar.io/aws-token-source",
            "gcp-metadata, oauth2-client-credentials",
        ],
    );
    denied(
        &[
            ("secret-db", "aws://x"),
            ("aws-token-source", "gcp-metadata"),
        ],
        &[
            "secret-sidecar.io/aws-token-source",
            "needs secret-sidecar.io/aws-role-arn",
        ],
    );
    denied(
        &[
            ("secret-db", "aws://x"),
            ("aws-token-source", "gcp-metadata"),
            role,
        ],
        &["needs secret-sidecar.io/aws-token-audience"],
    );
    denied(
        &[
            ("secret-db", "aws://x"),
            ("aws-token-source", "oauth2-client-credentials"),
            ("oauth2-token-url", "https://idp.example.com/token"),
            ("oauth2-client-id", "c"),
            role,
        ],
        &["secret-sidecar.io/oauth2-client-secret-from"],
    );
    denied(
        &[("secret-db", "aws://x"), role],
        &["secret-sidecar.io/aws-role-arn", "ServiceAccount"],
    );
    denied(
        &[("secret-db", "aws://x"), ("aws-role-arn", "app-role")],
        &["secret-sidecar.io/aws-role-arn", "not an IAM role ARN"],
    );
    denied(
        &[("secret-db", "aws://x"), ("aws-token-sidecar", "true")],
        &["secret-sidecar.io/aws-token-sidecar", "aws-token-source"],
    );
    denied(
        &[
            ("secret-db", "aws://x"),
            ("aws-token-source", "oauth2-client-credentials"),
            ("oauth2-token-url", "http://idp.example.com/token"),
            ("oauth2-client-id", "c"),
            ("oauth2-client-secret-from", "idp"),
            role,
        ],
        &["the annotations together", "https"],
    );
    denied(
        &[
            ("secret-db", "aws://x"),
            ("oauth2-client-secret-from", "Idp_Secret"),
        ],
        &[
            "secret-sidecar.io/oauth2-client-secret-from",
            "not a Secret name",
        ],
    );
}

#[test]
fn every_annotation_is_in_the_readme_table() {
    let readme = include_str!("../../../README.md");
    let table: Vec<&str> = readme
        .split("## Inject with annotations")
        .nth(1)
        .expect("README has an \"Inject with annotations\" section")
        .lines()
        .filter(|l| l.starts_with("| `"))
        .collect();
    let listed = |name: &str| table.iter().any(|l| l.starts_with(&format!("| `{name}")));
    assert!(
        listed("secret-NAME"),
        "secret-NAME is not in the README table"
    );
    for name in names().chain(PLANNED.iter().copied()) {
        assert!(listed(name), "{name} is not in the README table");
    }
}

#[test]
fn refresh_becomes_the_init_containers_refresh_options() {
    let asked = read(&[
        ("secret-db", "aws://prod/db"),
        ("refresh", "5m"),
        ("refresh-max-stale", "30m"),
    ])
    .unwrap();
    assert!(asked.refreshes());
    assert_eq!(
        asked.init_args(),
        [
            "--output-dir=/run/secrets",
            "--secret=db=aws://prod/db",
            "--refresh=5m",
            "--max-stale=30m",
        ]
    );
    assert!(!read(&[("secret-db", "aws://x")]).unwrap().refreshes());
}

#[test]
fn refresh_annotations_are_checked_as_refresh_mode_checks_them() {
    denied(
        &[("secret-db", "aws://x"), ("refresh", "often")],
        &["secret-sidecar.io/refresh", "not a duration"],
    );
    denied(
        &[
            ("secret-db", "aws://x"),
            ("refresh", "5m"),
            ("refresh-max-stale", "never"),
        ],
        &["secret-sidecar.io/refresh-max-stale", "not a duration"],
    );
    // refresh mode's own check, its options named as the annotations.
    denied(
        &[
            ("secret-db", "aws://x"),
            ("refresh", "5m"),
            ("refresh-max-stale", "5m"),
        ],
        &[
            "secret-sidecar.io/refresh-max-stale",
            "must be longer than secret-sidecar.io/refresh",
        ],
    );
    denied(
        &[("secret-db", "aws://x"), ("refresh-max-stale", "30m")],
        &[
            "secret-sidecar.io/refresh-max-stale",
            "secret-sidecar.io/refresh",
        ],
    );
    denied(
        &[
            ("aws-token-sidecar", "true"),
            ("aws-token-source", "gcp-metadata"),
            ("aws-role-arn", "arn:aws:iam::111122223333:role/app"),
            ("refresh", "5m"),
        ],
        &["secret-sidecar.io/refresh", "secret-NAME"],
    );
}
