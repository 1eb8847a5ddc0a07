//! `secret-sidecar.io/refresh`: the injected container becomes the native sidecar of the
//! `aws-irsa-refresh` overlay (the reference, run as written by tests/deploy), and the
//! injected command line keeps the app's files current against LocalStack.

use std::fs;
use std::time::Duration;

use serde_json::Value;
use testkit::Scratch;
use testkit::deploy::{binary_for, exits_zero, kustomize, sidecar_command};
use testkit::kubelet::{Cluster, KubeletPod};
use testkit::localstack::Seeder;
use testkit::refresh::{Running, wait_until};
use testkit::webhook::{Injected, kubectl_create};

use super::{admit, annotated, container, reads, seed, static_keys, webhook};

const OVERLAY: &str = "kubernetes-manifests/overlays/aws-irsa-refresh";
const WAIT: Duration = Duration::from_secs(30);

/// The overlay's native sidecar: the first init container of its Deployment.
fn overlay_sidecar() -> Value {
    kustomize(OVERLAY)
        .into_iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("the overlay has a Deployment")["spec"]["template"]["spec"]["initContainers"][0]
        .clone()
}

/// The refresh case: a Deployment annotated with `refresh` (and
/// `refresh-max-stale`) gets the overlay's native sidecar (restart policy, startup and
/// liveness probes, the same options); run as injected (the interval shortened), its
/// probe passes once the set is published, the app reads it, and a rotation reaches the
/// app's file without a restart.
#[test]
fn a_refresh_annotation_injects_the_overlays_native_sidecar() {
    let secrets = seed(&[("db-password", "db", "pw-before-31")]);
    let (reference, _) = &secrets["db-password"];
    let deployment = kubectl_create(&["deployment", "rotating", "--image=busybox:1.37.0"]);
    let object = annotated(
        &deployment,
        &[
            ("secret-db-password", reference),
            ("aws-region", "us-east-1"),
            ("refresh", "5m"),
            ("refresh-max-stale", "30m"),
        ],
    );
    let webhook = webhook();
    let Injected { pod, .. } = admit(&webhook, &object);
    let injected = container(&pod, "secret-sidecar");
    let reference_sidecar = overlay_sidecar();
    for field in ["restartPolicy", "startupProbe", "livenessProbe"] {
        assert_eq!(
            injected[field], reference_sidecar[field],
            "{field} differs from the overlay's"
        );
    }
    let args: Vec<&str> = injected["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for option in ["--refresh=5m", "--max-stale=30m"] {
        assert!(args.contains(&option), "{option} not in {args:?}");
        let overlay_args = reference_sidecar["args"].to_string();
        assert!(
            overlay_args.contains(option),
            "the overlay changed: {overlay_args}"
        );
    }

    let kubelet = KubeletPod::start(&pod, &Cluster::default());
    let invocation = kubelet.invocation("secret-sidecar");
    let shortened = invocation.refreshing_every("200ms");
    let bin_dir = Scratch::tmpfs("webhook-refresh-bin");
    let binary = binary_for(testkit::binary!(), &bin_dir);
    let volume = kubelet.volume("secret-sidecar-secrets").to_owned();
    let running = Running::spawn(sidecar_command(
        &shortened,
        &binary,
        &volume,
        &static_keys(),
    ));
    // The injected startup probe's own command, the image's binary replaced by the one
    // under test and the mount path by the volume's directory (as the kubelet sees it).
    let probe: Vec<String> = injected["startupProbe"]["exec"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let probe_passes = || {
        let args = probe[1..].iter().map(|a| kubelet.translate(injected, a));
        exits_zero(&invocation.user, &binary, args)
    };
    assert_eq!(probe[2], "--output-dir=/run/secrets");
    wait_until("the injected startup probe", WAIT, probe_passes);
    reads(
        &kubelet,
        "busybox",
        &[("/run/secrets/db-password", "pw-before-31")],
    );

    let name = reference.strip_prefix("aws://").unwrap();
    Seeder::connect().upsert_in("us-east-1", name, "pw-after-58");
    wait_until("the rotated secret in the app's file", WAIT, || {
        kubelet.read_as("busybox", "/run/secrets/db-password").ok() == Some(b"pw-after-58".to_vec())
    });

    let run = running.stop();
    run.expect_code(0)
        .expect_no_leak(b"pw-before-31")
        .expect_no_leak(b"pw-after-58");
    assert!(
        fs::read(volume.join("db-password")).is_ok_and(|v| v == b"pw-after-58"),
        "the set stays after SIGTERM"
    );
    assert!(!probe_passes(), "the probe of a stopped sidecar passes");
}
