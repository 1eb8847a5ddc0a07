//! Each identity case of the contract, the injected containers run against STS, the IdP
//! and the metadata server fakes and LocalStack:
//!
//! - seed 004: a ServiceAccount annotated with a role ARN, read from a stand-in for the
//!   API server (kube-rs's client, over TLS from the test CA, with a kubeconfig), gets
//!   what the EKS pod identity webhook injects, in every container;
//! - GKE to AWS: a Google ID token exchanged at STS, from annotations alone;
//! - an external IdP to AWS, with the token sidecar and variables for the app's own SDK
//!   (seed 003);
//! - Google Secret Manager on GKE, where nothing is injected.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::apiserver::ApiServer;
use testkit::deploy::{binary_for, command_as, exits_zero, strings};
use testkit::kubelet::{Cluster, KubeletPod};
use testkit::localstack::Seeder;
use testkit::webhook::{Webhook, kubectl_create, kubectl_patch};
use testkit::{Run, Scratch, fake_jwt, jwt_subject, unique};

use testkit::webhook::Injected;

use super::{NAMESPACE, admit, annotated, container, denial, reads, run_init};

/// The webhook with `--inject-irsa`, reading ServiceAccounts from `api`.
pub fn irsa_webhook(api: &ApiServer) -> Webhook {
    Webhook::start(
        testkit::binary!(),
        &["--inject-irsa"],
        &[("KUBECONFIG", api.kubeconfig.to_str().unwrap())],
    )
}

/// Variable names of container `name`, and whether it mounts volume `volume` at `path`.
fn env_and_mount(pod: &Value, name: &str, volume: &str, path: &str) -> (Vec<String>, bool) {
    let c = container(pod, name);
    let env = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    let mounted = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["name"] == volume && m["mountPath"] == path && m["readOnly"] == true);
    (env, mounted)
}

/// Secrets seeded in `account` only: `file → (reference, value)`.
fn seed_in(account: &str, files: &[(&str, &str)]) -> BTreeMap<String, (String, String)> {
    let mut seeder = Seeder::in_account(account);
    let prefix = unique("webhook-identity");
    files
        .iter()
        .map(|(file, value)| {
            let name = format!("{prefix}/{file}");
            seeder.upsert_in("us-east-1", &name, value);
            (
                file.to_string(),
                (format!("aws://{name}"), value.to_string()),
            )
        })
        .collect()
}

const IRSA_DIR: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";

/// Seed 004 on a cluster without the EKS pod identity webhook: the ServiceAccount's role
/// reaches every container, the injected one included, as a projected token with the STS
/// audience; the init container exchanges it and publishes the secrets.
#[test]
fn a_service_account_role_is_projected_into_every_container() {
    const ACCOUNT: &str = "111122223333";
    let secrets = seed_in(ACCOUNT, &[("db", "irsa-db-value-52")]);
    let api = ApiServer::start(Duration::ZERO);
    api.account(
        NAMESPACE,
        "shop",
        json!({
            "eks.amazonaws.com/role-arn": format!("arn:aws:iam::{ACCOUNT}:role/shop"),
            "eks.amazonaws.com/sts-regional-endpoints": "true",
            "unrelated.example.com/note": "x"
        }),
    );
    api.account(NAMESPACE, "plain", json!({}));
    let webhook = irsa_webhook(&api);
    let deployment = kubectl_create(&[
        "deployment",
        "shop",
        "--image=busybox:1.37.0",
        "--image=nginx:1.27.0",
    ]);
    let deployment = kubectl_patch(
        &deployment,
        &json!({"spec": {"template": {
            "metadata": {"annotations": {"eks.amazonaws.com/skip-containers": "nginx"}},
            "spec": {
                "serviceAccountName": "shop",
                "securityContext": {"fsGroup": 65532},
                "initContainers": [{"name": "migrate", "image": "busybox:1.37.0", "command": ["true"]}]
            }
        }}}),
    );
    let object = annotated(
        &deployment,
        &[("secret-db", &secrets["db"].0), ("aws-region", "us-east-1")],
    );
    let Injected { pod, .. } = admit(&webhook, &object);
    assert_eq!(
        api.targets(),
        [format!(
            "/api/v1/namespaces/{NAMESPACE}/serviceaccounts/shop"
        )],
        "one GET for the injection, none for the injected pod sent again"
    );

    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "aws-iam-token")
        .expect("the token volume");
    assert_eq!(
        volume["projected"]["sources"][0]["serviceAccountToken"],
        json!({"audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token"})
    );
    for name in ["migrate", "secret-sidecar", "busybox"] {
        let (env, mounted) = env_and_mount(&pod, name, "aws-iam-token", IRSA_DIR);
        for var in [
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_STS_REGIONAL_ENDPOINTS",
        ] {
            assert!(env.iter().any(|e| e == var), "{name} lacks {var}: {env:?}");
        }
        assert!(mounted, "{name} does not mount the token");
    }
    let (env, mounted) = env_and_mount(&pod, "nginx", "aws-iam-token", IRSA_DIR);
    assert!(
        !mounted && !env.iter().any(|e| e == "AWS_ROLE_ARN"),
        "nginx is skipped"
    );

    // The kubelet projects a token for the account; LocalStack's STS takes it.
    let subject = format!("system:serviceaccount:{NAMESPACE}:shop");
    let cluster = Cluster {
        token: Some(Box::new(move |audience| match audience {
            Some("sts.amazonaws.com") => fake_jwt(&subject),
            _ => "kubernetes-api-token".to_owned(),
        })),
        ..Cluster::default()
    };
    let kubelet = KubeletPod::start(&pod, &cluster);
    let run = run_init(&kubelet, &[]);
    run.expect_code(0).expect_stderr("WebIdentityToken");
    reads(
        &kubelet,
        "busybox",
        &[("/run/secrets/db", "irsa-db-value-52")],
    );

    // An account without a role: nothing of IRSA. One that does not exist, or an API
    // server that does not answer: denied, never admitted without the identity.
    let plain = kubectl_patch(
        &object,
        &json!({"spec": {"template": {"spec": {"serviceAccountName": "plain"}}}}),
    );
    let Injected { pod, .. } = admit(&webhook, &plain);
    assert!(!pod.to_string().contains("aws-iam-token"));
    let missing = kubectl_patch(
        &object,
        &json!({"spec": {"template": {"spec": {"serviceAccountName": "ghost"}}}}),
    );
    let message = denial(&webhook, &missing);
    assert!(
        message.contains("ServiceAccount team-a/ghost") && message.contains("not found"),
        "{message}"
    );
    let down = Scratch::tmpfs("kubeconfig-down");
    let config = std::fs::read_to_string(&api.kubeconfig).unwrap();
    let closed = config.replace(&api.url(), "https://127.0.0.1:1");
    std::fs::write(down.path.join("config"), closed).unwrap();
    let unreachable = Webhook::start(
        testkit::binary!(),
        &["--inject-irsa"],
        &[("KUBECONFIG", down.path.join("config").to_str().unwrap())],
    );
    let message = denial(&unreachable, &object);
    assert!(
        message.contains("--inject-irsa") && message.contains("ServiceAccount team-a/shop"),
        "{message}"
    );
}

/// GKE to AWS from annotations alone: the init container asks the metadata server for a
/// Google ID token with the annotated audience and exchanges it for the annotated role.
#[cfg(feature = "gcp")]
#[test]
fn gke_to_aws_from_annotations() {
    const ACCOUNT: &str = "444455556666";
    const GOOGLE_ACCOUNT: &str = "aws-reader@my-project.iam.gserviceaccount.com";
    let secrets = seed_in(ACCOUNT, &[("db", "gke-db-value-08")]);
    let role = format!("arn:aws:iam::{ACCOUNT}:role/gke");
    let deployment = kubectl_create(&["deployment", "gke", "--image=busybox:1.37.0"]);
    let object = annotated(
        &deployment,
        &[
            ("secret-db", &secrets["db"].0),
            ("aws-region", "us-east-1"),
            ("aws-token-source", "gcp-metadata"),
            ("aws-token-audience", "sts.amazonaws.com"),
            ("aws-role-arn", &role),
        ],
    );
    let webhook = super::webhook();
    let Injected { pod, .. } = admit(&webhook, &object);
    let init = container(&pod, "secret-sidecar");
    assert!(strings(init.get("args")).contains(&"--aws-token-source=gcp-metadata".to_owned()));

    let metadata = testkit::gcp::Metadata::start("ya29.unused-by-aws", GOOGLE_ACCOUNT);
    let sts = testkit::sts::Sts::issuing(ACCOUNT);
    let kubelet = KubeletPod::start(&pod, &Cluster::default());
    let run = run_init(
        &kubelet,
        &[
            // The GKE metadata server the pod reaches at 169.254.169.254, and STS.
            ("GCE_METADATA_HOST", metadata.host()),
            ("AWS_ENDPOINT_URL_STS", sts.url().to_owned()),
        ],
    );
    run.expect_code(0);
    let tokens = sts.tokens();
    assert_eq!(tokens.len(), 1);
    assert_eq!(
        jwt_subject(&tokens[0]),
        format!("{GOOGLE_ACCOUNT}|sts.amazonaws.com")
    );
    let form = testkit::http::form(&sts.server.requests()[0].body);
    assert_eq!(form["RoleArn"], role);
    run.expect_no_leak(tokens[0].as_bytes());
    reads(
        &kubelet,
        "busybox",
        &[("/run/secrets/db", "gke-db-value-08")],
    );
}

/// Seed 003 with an external IdP: the init container exchanges its own token; the native
/// sidecar keeps one fresh for the app, whose SDK finds it through AWS_ROLE_ARN and
/// AWS_WEB_IDENTITY_TOKEN_FILE; the client secret comes from a Secret the annotation names.
#[test]
fn an_external_idp_token_for_the_init_container_and_the_apps_sdk() {
    use testkit::oauth2::{Client, IdP};
    const ACCOUNT: &str = "777788889999";
    const CLIENT_SECRET: &str = "idp-client-secret-webhook-never-log-me";
    let secrets = seed_in(ACCOUNT, &[("db", "idp-db-value-61")]);
    let role = format!("arn:aws:iam::{ACCOUNT}:role/idp");
    let idp = IdP::start(Client {
        id: "shop-client".to_owned(),
        secret: CLIENT_SECRET.to_owned(),
        scope: Some("api://secret-sidecar-aws/.default".to_owned()),
        lifetime: 3600,
    });
    let token_url = idp.token_url();
    let deployment = kubectl_create(&["deployment", "sdk", "--image=busybox:1.37.0"]);
    let deployment = kubectl_patch(
        &deployment,
        &json!({"spec": {"template": {"spec": {"securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 65532}}}}}),
    );
    let object = annotated(
        &deployment,
        &[
            ("secret-db", &secrets["db"].0),
            ("aws-region", "us-east-1"),
            ("aws-token-source", "oauth2-client-credentials"),
            ("aws-role-arn", &role),
            ("oauth2-token-url", &token_url),
            ("oauth2-client-id", "shop-client"),
            ("oauth2-client-secret-from", "idp-client"),
            ("oauth2-scope", "api://secret-sidecar-aws/.default"),
            ("aws-token-sidecar", "true"),
        ],
    );
    let webhook = super::webhook();
    let Injected { pod, .. } = admit(&webhook, &object);
    let names: Vec<&str> = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["secret-sidecar", "secret-sidecar-token"]);
    let native = container(&pod, "secret-sidecar-token");
    assert_eq!(native["restartPolicy"], "Always");
    let app = container(&pod, "busybox");
    let app_env: BTreeMap<&str, &str> = app["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
        .collect();
    assert_eq!(app_env["AWS_ROLE_ARN"], role);
    let token_path = app_env["AWS_WEB_IDENTITY_TOKEN_FILE"];

    let cluster = Cluster {
        secrets: [(
            ("idp-client".to_owned(), "client-secret".to_owned()),
            format!("{CLIENT_SECRET}\n").into_bytes(),
        )]
        .into(),
        ..Cluster::default()
    };
    let kubelet = KubeletPod::start(&pod, &cluster);
    let sts = testkit::sts::Sts::issuing(ACCOUNT);
    let sts_env = [("AWS_ENDPOINT_URL_STS", sts.url().to_owned())];
    let run = run_init(&kubelet, &sts_env);
    run.expect_code(0).expect_no_leak(CLIENT_SECRET.as_bytes());
    reads(
        &kubelet,
        "busybox",
        &[("/run/secrets/db", "idp-db-value-61")],
    );
    assert_eq!(sts.tokens(), idp.issued(), "STS got the IdP's token");

    // The native sidecar, run as written; its startup probe passes once the token is
    // there, and the app reads the token its SDK is pointed at.
    let invocation = kubelet.invocation("secret-sidecar-token");
    let bin_dir = Scratch::tmpfs("token-bin");
    let binary = binary_for(testkit::binary!(), &bin_dir);
    let mut child = command_as(&invocation.user, &binary)
        .args(&invocation.args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(invocation.env.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let probe = strings(native.pointer("/startupProbe/exec/command"));
    assert_eq!(
        probe[0], "/usr/local/bin/secret-sidecar",
        "the image's binary"
    );
    let probe_passes = || {
        let args = probe[1..].iter().map(|a| kubelet.translate(native, a));
        exits_zero(&invocation.user, &binary, args)
    };
    let started = Instant::now();
    while !probe_passes() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the token sidecar exited"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "no token");
        std::thread::sleep(Duration::from_millis(50));
    }
    let token = kubelet.read_as("busybox", token_path).unwrap();
    assert_eq!(
        Some(String::from_utf8(token).unwrap()),
        idp.issued().last().cloned()
    );
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let sidecar = Run::from(child.wait_with_output().unwrap());
    sidecar
        .expect_code(0)
        .expect_no_leak(CLIENT_SECRET.as_bytes());
}

/// Google Secret Manager on GKE: nothing to inject for the identity, the metadata server
/// answers the init container.
#[cfg(feature = "gcp")]
#[test]
fn google_secret_manager_on_gke() {
    use testkit::gcp::{Metadata, SecretManager};
    const TOKEN: &str = "ya29.c.gke-webhook-token";
    let metadata = Metadata::start(TOKEN, "my-project.svc.id.goog");
    let sm = SecretManager::start(TOKEN);
    sm.add(
        "projects/my-project/secrets/db",
        br#"{"password":"gcp-pw-35"}"#,
    );
    let deployment = kubectl_create(&["deployment", "gcp", "--image=busybox:1.37.0"]);
    let object = annotated(
        &deployment,
        &[("secret-db-password", "gcp://my-project/db#password")],
    );
    let Injected { pod, .. } = admit(&super::webhook(), &object);
    let kubelet = KubeletPod::start(&pod, &Cluster::default());
    run_init(
        &kubelet,
        &[
            ("GCE_METADATA_HOST", metadata.host()),
            ("SECRET_SIDECAR_GCP_ENDPOINT", sm.url()),
        ],
    )
    .expect_code(0)
    .expect_stderr("metadata-server");
    reads(
        &kubelet,
        "busybox",
        &[("/run/secrets/db-password", "gcp-pw-35")],
    );
}
