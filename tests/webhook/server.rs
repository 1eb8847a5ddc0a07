//! The webhook as a server: what it does with requests that are not a pod to inject,
//! certificate rotation while serving, SIGTERM with a request in flight, start-up errors,
//! and that nothing from a pod reaches its logs or its error answers.

use std::fs;
use std::time::Duration;

use serde_json::json;
use testkit::apiserver::pod_of;
use testkit::webhook::{Webhook, kubectl_create, patch_of, review};
use testkit::{SENTINEL, leak_forms};

use super::{NAMESPACE, annotated, webhook};
use testkit::apiserver::ApiServer;

#[test]
fn requests_that_are_not_a_pod_creation_to_inject() {
    let webhook = webhook();
    let text = |body: Vec<u8>| String::from_utf8_lossy(&body).into_owned();

    let (status, body) = webhook.post("/mutate", b"{\"apiVersion\": not json");
    assert_eq!(status, 400);
    assert!(text(body).contains("not a JSON AdmissionReview"));
    let deployment = kubectl_create(&["deployment", "other", "--image=busybox:1.37.0"]);
    let pod = pod_of(
        &annotated(&deployment, &[("secret-db", "aws://prod/db")]),
        NAMESPACE,
    );
    let mut old = review(&pod, NAMESPACE);
    old["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let (status, body) = webhook.post("/mutate", old.to_string().as_bytes());
    assert_eq!(status, 400);
    assert!(text(body).contains("admission.k8s.io/v1"));
    let empty = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
    assert_eq!(webhook.post("/mutate", empty.to_string().as_bytes()).0, 400);

    // Larger than any pod etcd stores: refused before it is parsed.
    let mut huge = review(&pod, NAMESPACE);
    huge["request"]["object"]["metadata"]["annotations"]["padding"] = json!("x".repeat(3 << 20));
    let (status, _) = webhook.post("/mutate", huge.to_string().as_bytes());
    assert_eq!(status, 413);

    // Another kind, another operation, another subresource: allowed as they are.
    let mut deployment_review = review(&pod, NAMESPACE);
    deployment_review["request"]["kind"] =
        json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    deployment_review["request"]["object"] =
        annotated(&deployment, &[("secret-db", "aws://prod/db")]);
    let mut update = review(&pod, NAMESPACE);
    update["request"]["operation"] = json!("UPDATE");
    update["request"]["oldObject"] = pod.clone();
    let mut binding = review(&pod, NAMESPACE);
    binding["request"]["subResource"] = json!("binding");
    for request in [deployment_review, update, binding] {
        let answer = webhook.admit(&request);
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        assert!(patch_of(&answer).is_none(), "{answer}");
    }

    for (path, wanted) in [("/healthz", 200), ("/readyz", 200), ("/metrics", 404)] {
        let output = std::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&testkit::tls::ca().pem_file)
            .arg(webhook.url(path))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            wanted.to_string(),
            "{path}"
        );
    }
    assert_eq!(webhook.post("/healthz", b"").0, 405);
    // Still serving pods after all that.
    let answer = webhook.admit(&review(&pod, NAMESPACE));
    assert!(patch_of(&answer).is_some());
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart() {
    let webhook = webhook();
    assert_eq!(webhook.certificate_name(), "webhook first");
    let deployment = kubectl_create(&["deployment", "rotate", "--image=busybox:1.37.0"]);
    let pod = pod_of(
        &annotated(&deployment, &[("secret-db", "aws://prod/db")]),
        NAMESPACE,
    );

    // As cert-manager renews it: a new pair in the same files.
    let (cert, key) = testkit::tls::ca_signed_pem("webhook second");
    fs::write(&webhook.key_file, key).unwrap();
    fs::write(&webhook.cert_file, cert).unwrap();
    assert_eq!(webhook.certificate_name(), "webhook second");
    assert!(patch_of(&webhook.admit(&review(&pod, NAMESPACE))).is_some());

    // Half-way through a rotation (a key that is not the certificate's), the last good
    // pair stays in service.
    let (third, _) = testkit::tls::ca_signed_pem("webhook third");
    fs::write(&webhook.cert_file, third).unwrap();
    assert_eq!(webhook.certificate_name(), "webhook second");
    assert!(patch_of(&webhook.admit(&review(&pod, NAMESPACE))).is_some());
    let log = webhook.stderr();
    assert!(log.contains("TLS certificate reloaded"), "{log}");
    assert!(log.contains("keeping the current TLS certificate"), "{log}");
}

#[test]
fn sigterm_lets_a_request_in_flight_finish() {
    // The ServiceAccount lookup answers after two seconds: SIGTERM arrives meanwhile.
    let api = ApiServer::start(Duration::from_secs(2));
    api.account(
        "team-a",
        "default",
        json!({"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/shop"}),
    );
    let mut webhook = Webhook::start(
        testkit::binary!(),
        &["--inject-irsa"],
        &[("KUBECONFIG", api.kubeconfig.to_str().unwrap())],
    );
    let deployment = kubectl_create(&["deployment", "slow", "--image=busybox:1.37.0"]);
    let pod = pod_of(
        &annotated(&deployment, &[("secret-db", "aws://prod/db")]),
        NAMESPACE,
    );
    let answer = std::thread::scope(|scope| {
        let in_flight = scope.spawn(|| webhook.admit(&review(&pod, NAMESPACE)));
        let started = std::time::Instant::now();
        while api.requests() == 0 {
            assert!(started.elapsed() < Duration::from_secs(10), "no lookup");
            std::thread::sleep(Duration::from_millis(20));
        }
        webhook.signal("TERM");
        in_flight.join().unwrap()
    });
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let patch = patch_of(&answer).expect("the request in flight was answered in full");
    assert!(patch.to_string().contains("aws-iam-token"), "{patch}");
    assert_eq!(webhook.wait(Duration::from_secs(10)), Some(0));
    let log = webhook.stderr();
    assert!(log.contains("stopped by SIGTERM"), "{log}");
    // Nothing is accepted any more.
    let refused = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "-k"])
        .arg(webhook.url("/healthz"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

#[test]
fn start_up_errors_are_usage_errors() {
    let dir = testkit::Scratch::tmpfs("webhook-start");
    let (cert, key) = testkit::tls::ca_signed_pem("start");
    fs::write(dir.path.join("tls.crt"), cert).unwrap();
    fs::write(dir.path.join("tls.key"), key).unwrap();
    let tls = [
        format!("--tls-cert-file={}", dir.path.join("tls.crt").display()),
        format!("--tls-key-file={}", dir.path.join("tls.key").display()),
    ];
    let run = |extra: &[&str]| {
        testkit::sidecar!()
            .env("HOME", "/nonexistent")
            .args(["webhook", "--listen=127.0.0.1:0"])
            .args(extra)
            .run()
    };
    run(&[&tls[0], &tls[1], "--image=secret-sidecar:latest"])
        .expect_code(2)
        .expect_stderr("a tag other than latest");
    run(&[
        &tls[0],
        "--tls-key-file=/nonexistent/key",
        "--image=secret-sidecar:0.1.0",
    ])
    .expect_code(2)
    .expect_stderr("/nonexistent/key");
    run(&[
        &tls[0],
        &tls[1],
        "--image=secret-sidecar:0.1.0",
        "--memory=64 Mi",
    ])
    .expect_code(2)
    .expect_stderr("--memory");
    run(&[
        &tls[0],
        &tls[1],
        "--image=secret-sidecar:0.1.0",
        "--inject-irsa",
    ])
    .expect_code(2)
    .expect_stderr("no API server was found");
}

/// A sentinel in a pod's variable, in another webhook's annotation, in a malformed
/// request and in a field of the wrong type: logged at trace level, answered with a patch,
/// a denial or a 400, it appears in no log line and no error answer.
#[test]
fn no_value_from_a_pod_reaches_the_logs() {
    let webhook = webhook();
    let deployment = kubectl_create(&["deployment", "leak", "--image=busybox:1.37.0"]);
    let with_sentinel = testkit::webhook::kubectl_patch(
        &deployment,
        &json!({"spec": {"template": {
            "metadata": {"annotations": {"other.example.com/token": SENTINEL}},
            "spec": {"containers": [{"name": "busybox", "image": "busybox:1.37.0",
                "env": [{"name": "DB_PASSWORD", "value": SENTINEL}]}]}
        }}}),
    );
    let mut answers = Vec::new();
    let injected = pod_of(
        &annotated(&with_sentinel, &[("secret-db", "aws://prod/db")]),
        NAMESPACE,
    );
    answers.push(webhook.admit(&review(&injected, NAMESPACE)).to_string());
    let denied = pod_of(
        &annotated(&with_sentinel, &[("secret-db", "prod/db")]),
        NAMESPACE,
    );
    answers.push(webhook.admit(&review(&denied, NAMESPACE)).to_string());
    let mut wrong_type = review(&injected, NAMESPACE);
    wrong_type["request"]["object"]["spec"]["containers"] = json!(SENTINEL);
    answers.push(webhook.admit(&wrong_type).to_string());
    let malformed = format!("{{\"apiVersion\": \"{SENTINEL}\", \"kind\": ");
    let (status, body) = webhook.post("/mutate", malformed.as_bytes());
    assert_eq!(status, 400);
    answers.push(String::from_utf8_lossy(&body).into_owned());
    let mut version = review(&injected, NAMESPACE);
    version["apiVersion"] = json!(SENTINEL);
    answers.push(
        String::from_utf8_lossy(&webhook.post("/mutate", version.to_string().as_bytes()).1)
            .into_owned(),
    );

    let log = webhook.stderr();
    assert!(log.contains("injected") && log.contains("denied"), "{log}");
    for form in leak_forms(SENTINEL.as_bytes()) {
        assert!(
            !log.contains(&form),
            "the log holds the sentinel ({form}):\n{log}"
        );
    }
    // The patch never copies the app's variables; error answers never quote them.
    for answer in &answers {
        for form in leak_forms(SENTINEL.as_bytes()) {
            assert!(!answer.contains(&form), "{answer}");
        }
    }
    assert!(patch_of(&serde_json::from_str(&answers[0]).unwrap()).is_some());
}
