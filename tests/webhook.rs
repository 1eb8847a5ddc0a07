#![cfg(all(feature = "webhook", feature = "aws"))]
//! The admission webhook through the real binary, end to end, with tools that are not this
//! project's code on the other side:
//!
//! 1. a workload rendered by `kubectl` (`create ... --dry-run=client -o json`, annotations
//!    added with `kubectl patch --local`), turned into the pod the API server would send
//!    (`testkit::apiserver`);
//! 2. wrapped in an AdmissionReview and posted over TLS with curl, which trusts only the
//!    test CA the webhook's certificate comes from;
//! 3. the JSON Patch applied by Python's `jsonpatch`, the result validated by
//!    `kubernetes-validate --strict` (Kubernetes 1.32, kubectl's version here), and sent
//!    again to show that a second pass (reinvocation) changes nothing;
//! 4. the injected init container run with exactly its arguments and environment, its
//!    volumes set up as the kubelet would (`testkit::kubelet`), against LocalStack or the
//!    Azure and Google fakes; then each file read where the app container's mount says, as
//!    the app's user.
//!
//! `webhook/identity.rs` runs each identity case, `webhook/azure.rs` the orders with the
//! AKS workload identity webhook, `webhook/server.rs` the server itself (malformed and
//! oversized requests, other kinds, certificate rotation, SIGTERM, leaks);
//! `webhook/manifests.rs` the manifests in `kubernetes-manifests/webhook/` as deployed.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use testkit::apiserver::pod_of;
use testkit::kubelet::{Cluster, KubeletPod};
use testkit::localstack::Seeder;
use testkit::webhook::{
    IMAGE, Injected, Webhook, apply, kubectl_create, kubectl_patch, patch_of, review,
};
use testkit::{Run, unique};

#[cfg(feature = "azure")]
#[path = "webhook/azure.rs"]
mod azure;
#[path = "webhook/identity.rs"]
mod identity;
#[path = "webhook/manifests.rs"]
mod manifests;
#[path = "webhook/refresh.rs"]
mod refresh;
#[path = "webhook/server.rs"]
mod server;

const NAMESPACE: &str = "team-a";

fn webhook() -> Webhook {
    Webhook::start(testkit::binary!(), &[], &[])
}

/// `object` opted in, with `annotations` (names after `secret-sidecar.io/`) on its pod.
fn annotated(object: &Value, annotations: &[(&str, &str)]) -> Value {
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (format!("secret-sidecar.io/{k}"), json!(v)))
        .collect();
    let metadata =
        json!({"labels": {"secret-sidecar.io/inject": "true"}, "annotations": annotations});
    let patch = match object["kind"].as_str() {
        Some("Pod") => json!({"metadata": metadata}),
        _ => json!({"spec": {"template": {"metadata": metadata}}}),
    };
    kubectl_patch(object, &patch)
}

/// Sends the pod of `object` through the webhook ([`Webhook::inject`]).
fn admit(webhook: &Webhook, object: &Value) -> Injected {
    webhook.inject(&pod_of(object, NAMESPACE), NAMESPACE)
}

/// The denial message for the pod of `object`.
fn denial(webhook: &Webhook, object: &Value) -> String {
    let answer = webhook.admit(&review(&pod_of(object, NAMESPACE), NAMESPACE));
    let response = &answer["response"];
    assert_eq!(response["allowed"], false, "allowed: {response}");
    assert!(response.get("patch").is_none());
    assert_eq!(response["status"]["code"], 400);
    response["status"]["message"].as_str().unwrap().to_owned()
}

/// Runs the injected init container as the kubelet would, with `identity` (what the
/// platform gives it) added; AWS requests go to LocalStack.
fn run_init(kubelet: &KubeletPod, identity: &[(&str, String)]) -> Run {
    kubelet.run("secret-sidecar", testkit::binary!(), identity)
}

/// LocalStack's static keys: the identity a cluster node could give (none is injected).
fn static_keys() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
    ]
}

/// Secrets stored in LocalStack under unique names: `file → (reference, value)`.
fn seed(files: &[(&str, &str, &str)]) -> BTreeMap<String, (String, String)> {
    let mut seeder = Seeder::connect();
    let prefix = unique("webhook");
    files
        .iter()
        .map(|(file, name, value)| {
            let (name, key) = name
                .split_once('#')
                .map_or((*name, None), |(n, k)| (n, Some(k)));
            let full = format!("{prefix}/{name}");
            seeder.upsert_in("us-east-1", &full, value);
            let reference = match key {
                Some(key) => format!("aws://{full}#{key}"),
                None => format!("aws://{full}"),
            };
            (file.to_string(), (reference, value.to_string()))
        })
        .collect()
}

/// Asserts each `path → content` reads back in container `name`, as its user.
#[track_caller]
fn reads(kubelet: &KubeletPod, name: &str, files: &[(&str, &str)]) {
    for (path, content) in files {
        let got = kubelet
            .read_as(name, path)
            .unwrap_or_else(|e| panic!("{name} cannot read {path}: {e}"));
        assert_eq!(String::from_utf8_lossy(&got), *content, "{name}: {path}");
    }
}

fn container<'p>(pod: &'p Value, name: &str) -> &'p Value {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|l| pod["spec"][l].as_array().into_iter().flatten())
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {pod:#}"))
}

fn names(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The issue's "done when": an annotated Deployment rendered by kubectl comes out of the
/// webhook as a pod that passes strict validation, and its injected init container
/// publishes the secrets where the app reads them.
#[test]
fn an_annotated_deployment_from_kubectl_gets_its_secrets() {
    let secrets = seed(&[
        (
            "db-password",
            "db#password",
            r#"{"username":"app","password":"pw-4b1d"}"#,
        ),
        ("api-key", "api-key", "key-77c2"),
    ]);
    let deployment = kubectl_create(&[
        "deployment",
        "shop",
        "--image=busybox:1.37.0",
        "--",
        "sh",
        "-c",
        "cat /run/secrets/db-password /run/secrets/api-key",
    ]);
    let annotations: Vec<(String, String)> = secrets
        .iter()
        .map(|(file, (reference, _))| (format!("secret-{file}"), reference.clone()))
        .chain([("aws-region".to_owned(), "us-east-1".to_owned())])
        .collect();
    let pairs: Vec<(&str, &str)> = annotations
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let webhook = webhook();
    let Injected { answer, pod } = admit(&webhook, &annotated(&deployment, &pairs));
    assert!(answer["response"]["warnings"].is_null(), "{answer}");

    // What was injected: the pinned image, the overlays' hardening, requests = limits, a
    // memory-backed volume mounted read-only into the app.
    assert_eq!(names(&pod, "initContainers"), ["secret-sidecar"]);
    let init = container(&pod, "secret-sidecar");
    assert_eq!(init["image"], IMAGE);
    assert_eq!(init["resources"]["requests"], init["resources"]["limits"]);
    assert_eq!(
        init["resources"]["limits"],
        json!({"cpu": "100m", "memory": "64Mi"})
    );
    assert_eq!(
        init["securityContext"],
        json!({
            "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
            "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "privileged": false, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}
        })
    );
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "secret-sidecar-secrets")
        .unwrap();
    assert_eq!(
        volume["emptyDir"],
        json!({"medium": "Memory", "sizeLimit": "1Mi"})
    );
    let app = container(&pod, "busybox");
    assert!(
        app["volumeMounts"].as_array().unwrap().iter().any(|m| m
            == &json!({"name": "secret-sidecar-secrets", "mountPath": "/run/secrets", "readOnly": true})),
        "{app:#}"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["secret-sidecar.io/status"],
        "injected"
    );

    let kubelet = KubeletPod::start(&pod, &Cluster::default());
    let run = run_init(&kubelet, &static_keys());
    run.expect_code(0);
    for (_, value) in secrets.values() {
        run.expect_no_leak(value.as_bytes());
    }
    reads(
        &kubelet,
        "busybox",
        &[
            ("/run/secrets/db-password", "pw-4b1d"),
            ("/run/secrets/api-key", "key-77c2"),
        ],
    );
}

/// Every annotation of the table that shapes the injection, in one pod whose app runs as
/// its own user: the files appear where `mount-path` says, in the containers `containers`
/// names (an init container of the app's among them), with `mode`, owned by `owner`, the
/// `config` file's entries and aggregate included, and `init-first: "false"` puts the
/// injected container after the app's own.
#[test]
fn every_annotation_that_shapes_the_files() {
    let secrets = seed(&[
        ("db", "db", "db-secret-91"),
        ("token", "token", "token-secret-13"),
    ]);
    let (db, token) = (&secrets["db"].0, &secrets["token"].0);
    let config = format!(
        "secrets:\n  - ref: {token}\n    file: tokens/app\nfiles:\n  - file: app.env\n    format: env\n    values:\n      DB: {db}\n"
    );
    let deployment = kubectl_create(&[
        "deployment",
        "worker",
        "--image=busybox:1.37.0",
        "--image=nginx:1.27.0",
    ]);
    // The app runs as 10001 in group 20000 (the owner below); its own init container
    // migrates before the secrets are needed by the app.
    let deployment = kubectl_patch(
        &deployment,
        &json!({"spec": {"template": {"spec": {
            "securityContext": {"runAsUser": 10001, "runAsGroup": 20000, "runAsNonRoot": true},
            "initContainers": [{"name": "migrate", "image": "busybox:1.37.0", "command": ["true"]}]
        }}}}),
    );
    let object = annotated(
        &deployment,
        &[
            ("secret-db", db),
            ("config", &config),
            ("aws-region", "us-east-1"),
            ("mount-path", "/var/run/app/secrets"),
            ("containers", "busybox, migrate"),
            ("mode", "0440"),
            ("owner", "10001:20000"),
            ("timeout", "20s"),
            ("init-first", "false"),
        ],
    );
    let webhook = webhook();
    let Injected { pod, .. } = admit(&webhook, &object);
    assert_eq!(names(&pod, "initContainers"), ["migrate", "secret-sidecar"]);
    let init = container(&pod, "secret-sidecar");
    assert_eq!(init["securityContext"]["runAsUser"], 10001);
    assert_eq!(init["securityContext"]["runAsGroup"], 20000);
    let mounted = |name: &str| {
        container(&pod, name)["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == "secret-sidecar-secrets")
    };
    assert!(mounted("busybox") && mounted("migrate") && !mounted("nginx"));
    assert_eq!(
        init["args"],
        json!([
            "--output-dir=/var/run/app/secrets",
            format!("--secret=db={db}"),
            "--config=/etc/secret-sidecar/config.yaml",
            "--mode=0440",
            "--timeout=20s",
        ])
    );

    let kubelet = KubeletPod::start(&pod, &Cluster::default());
    run_init(&kubelet, &static_keys()).expect_code(0);
    reads(
        &kubelet,
        "busybox",
        &[
            ("/var/run/app/secrets/db", "db-secret-91"),
            ("/var/run/app/secrets/tokens/app", "token-secret-13"),
            ("/var/run/app/secrets/app.env", "DB='db-secret-91'\n"),
        ],
    );
    reads(
        &kubelet,
        "migrate",
        &[("/var/run/app/secrets/db", "db-secret-91")],
    );
    let dir = kubelet.volume("secret-sidecar-secrets");
    let meta = std::fs::metadata(dir.join("db")).unwrap();
    use std::os::unix::fs::MetadataExt;
    if testkit::deploy::is_root() {
        assert_eq!((meta.uid(), meta.gid()), (10001, 20000));
    }
    assert_eq!(meta.mode() & 0o777, 0o440);
    assert!(kubelet.read_as("nginx", "/var/run/app/secrets/db").is_err());
}

/// Bad annotations fail `kubectl apply`, not the pod's start: each denial names the
/// annotation and says what is wrong, in the binary's own words.
#[test]
fn bad_annotations_are_denied_with_the_annotation_named() {
    let deployment = kubectl_create(&["deployment", "typo", "--image=busybox:1.37.0"]);
    let webhook = webhook();
    for (annotations, wanted) in [
        (
            vec![("secret-db", "aws://prod/db?verison-stage=AWSPREVIOUS")],
            vec!["secret-sidecar.io/secret-db", "verison-stage"],
        ),
        (
            vec![("secret-db", "prod/db")],
            vec!["secret-sidecar.io/secret-db", "not a reference"],
        ),
        (
            vec![("secret-db", "aws://prod/db"), ("mount-pth", "/x")],
            vec!["secret-sidecar.io/mount-pth", "not an annotation"],
        ),
        (
            vec![("config", "secrets:\n  - ref: aws://a\n    flie: x\n")],
            vec!["secret-sidecar.io/config", "unknown field `flie`", "line 3"],
        ),
        (
            vec![("secret-db", "aws://prod/db"), ("containers", "ap")],
            vec![
                "secret-sidecar.io/containers",
                "no container 'ap'",
                "busybox",
            ],
        ),
        (
            vec![
                ("secret-db", "aws://prod/db"),
                ("mount-path", "/run/../etc"),
            ],
            vec!["secret-sidecar.io/mount-path"],
        ),
        (
            vec![
                ("secret-db", "aws://prod/db"),
                ("aws-token-source", "gcp-metadata"),
            ],
            vec!["secret-sidecar.io/aws-token-source", "aws-role-arn"],
        ),
        (
            vec![("secret-a", "aws://prod/a"), ("secret-A", "aws://prod/b")],
            vec!["name the same file"],
        ),
        (
            vec![("secret-db", "aws://prod/db?owner=0")],
            vec!["owned by uid 0", "secret-sidecar.io/owner"],
        ),
        (
            vec![("secret-db", "aws://prod/db"), ("refresh", "5 minutes")],
            vec!["secret-sidecar.io/refresh", "not a duration"],
        ),
        (
            vec![
                ("secret-db", "aws://prod/db"),
                ("refresh", "5m"),
                ("refresh-max-stale", "1m"),
            ],
            vec!["secret-sidecar.io/refresh-max-stale", "must be longer"],
        ),
        (
            vec![("secret-db", "aws://prod/db"), ("imds-proxy", "true")],
            vec!["secret-sidecar.io/imds-proxy", "planned"],
        ),
        (vec![], vec!["asks for nothing"]),
    ] {
        let message = denial(&webhook, &annotated(&deployment, &annotations));
        for part in wanted {
            assert!(message.contains(part), "{message:?} lacks {part:?}");
        }
    }
    // A mount path the app already uses, and a container set up by hand.
    let taken = kubectl_patch(
        &deployment,
        &json!({"spec": {"template": {"spec": {"containers": [{"name": "busybox", "image": "busybox:1.37.0",
            "volumeMounts": [{"name": "data", "mountPath": "/run/secrets"}]}],
            "volumes": [{"name": "data", "emptyDir": {}}]}}}}),
    );
    let message = denial(
        &webhook,
        &annotated(&taken, &[("secret-db", "aws://prod/db")]),
    );
    assert!(
        message.contains("already mounts volume 'data' at /run/secrets"),
        "{message}"
    );
}

/// A pod already carrying the injection is returned unchanged; a pod labelled but set up
/// by hand is refused rather than given a second init container; a pod without the label
/// is left alone.
#[test]
fn idempotent_and_opt_in_only() {
    let deployment = kubectl_create(&["deployment", "again", "--image=busybox:1.37.0"]);
    let webhook = webhook();
    let Injected { pod, .. } = admit(
        &webhook,
        &annotated(&deployment, &[("secret-db", "aws://prod/db")]),
    );
    // Invoked again (reinvocation, or the same pod sent twice), the webhook's answer
    // applied to the injected pod gives that pod.
    let second = webhook.admit(&review(&pod, NAMESPACE));
    let twice = match patch_of(&second) {
        Some(patch) => apply(&pod, &patch),
        None => pod.clone(),
    };
    assert_eq!(twice, pod);

    let plain = pod_of(&deployment, NAMESPACE);
    let answer = webhook.admit(&review(&plain, NAMESPACE));
    assert_eq!(answer["response"]["allowed"], true);
    assert!(
        patch_of(&answer).is_none(),
        "a pod without the label was patched"
    );

    let by_hand = kubectl_patch(
        &deployment,
        &json!({"spec": {"template": {"spec": {"initContainers": [
            {"name": "secret-sidecar", "image": "secret-sidecar:0.1.0", "args": ["--output-dir=/run/secrets"]}
        ]}}}}),
    );
    let message = denial(
        &webhook,
        &annotated(&by_hand, &[("secret-db", "aws://prod/db")]),
    );
    assert!(message.contains("set up by hand"), "{message}");
    let forged = annotated(
        &deployment,
        &[("secret-db", "aws://prod/db"), ("status", "injected")],
    );
    let message = denial(&webhook, &forged);
    assert!(message.contains("secret-sidecar.io/status"), "{message}");
}

/// The issue's example of a pod that cannot read the files: no fsGroup, an app user that
/// is neither the files' owner nor in their group. The pod is admitted, with a warning
/// kubectl prints.
#[test]
fn a_pod_whose_app_cannot_read_the_files_is_warned() {
    let deployment = kubectl_create(&["deployment", "nogroup", "--image=busybox:1.37.0"]);
    let deployment = kubectl_patch(
        &deployment,
        &json!({"spec": {"template": {"spec": {"securityContext": {"runAsUser": 10001, "runAsNonRoot": true}}}}}),
    );
    let webhook = webhook();
    let Injected { answer, .. } = admit(
        &webhook,
        &annotated(&deployment, &[("secret-db", "aws://prod/db")]),
    );
    let warnings = answer["response"]["warnings"].to_string();
    assert!(
        warnings.contains("fsGroup") && warnings.contains("busybox"),
        "{warnings}"
    );
}
