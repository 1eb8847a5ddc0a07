//! The Google overlays, run as GKE and a federated cluster run them: the metadata server
//! fake through `GCE_METADATA_HOST`; Google STS through the rendered credential
//! configuration, with only its token path and STS URL rewritten; Secret Manager through
//! `SECRET_SIDECAR_GCP_ENDPOINT`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{
    GCP_FEDERATION, GCP_WORKLOAD_IDENTITY, exercise_with, k8s_workloads, readable_file, subject,
};
use testkit::Scratch;
use testkit::deploy::{DemoSecrets, str_at};

/// The single project of the `gcp://PROJECT/NAME` references, and each name as Secret
/// Manager stores it (`projects/PROJECT/secrets/NAME` → value).
fn gcp_secrets(what: &str, demo: &DemoSecrets) -> (String, BTreeMap<String, String>) {
    let mut projects = Vec::new();
    let mut stored = BTreeMap::new();
    for (reference, value) in &demo.stored {
        let (project, secret) = reference
            .split_once('/')
            .filter(|(_, s)| !s.contains('/'))
            .unwrap_or_else(|| panic!("{what}: gcp://{reference} is not PROJECT/NAME"));
        if !projects.iter().any(|p| p == project) {
            projects.push(project.to_owned());
        }
        stored.insert(
            format!("projects/{project}/secrets/{secret}"),
            value.clone(),
        );
    }
    assert_eq!(projects.len(), 1, "{what}: one project: {projects:?}");
    (projects.remove(0), stored)
}

/// Every Secret Manager request was an access of a stored secret's latest version with
/// `token`.
fn assert_secret_manager_reads(
    what: &str,
    sm: &testkit::gcp::SecretManager,
    stored: &BTreeMap<String, String>,
    token: &str,
) {
    let requests = sm.requests();
    assert!(!requests.is_empty(), "{what}: Secret Manager never asked");
    for request in &requests {
        let path = request.target().split('?').next().unwrap_or_default();
        // The connection warm-up sent while the token is obtained (issue 19).
        if path == "/v1/projects/-/secrets/-/versions/-:access" {
            assert_eq!(request.header("authorization"), None, "{what}: warm-up");
            continue;
        }
        let name = path
            .strip_prefix("/v1/")
            .and_then(|p| p.strip_suffix("/versions/latest:access"))
            .unwrap_or_else(|| panic!("{what}: unexpected request {path}"));
        assert!(stored.contains_key(name), "{what}: {name}");
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {token}").as_str()),
            "{what}"
        );
    }
}

#[test]
fn kubernetes_gcp_workload_identity_overlay_runs_as_written() {
    use testkit::gcp::{Metadata, SecretManager};

    const TOKEN: &str = "ya29.c.gke-metadata-token-deploy";
    for workload in k8s_workloads(GCP_WORKLOAD_IDENTITY) {
        let what = &workload.what;
        assert!(
            workload.egress_allows("169.254.169.254/32", 80),
            "{what}: the GKE metadata server (169.254.169.254:80) must be reachable"
        );
        assert!(
            workload.egress_allows("0.0.0.0/0", 443),
            "{what}: Secret Manager needs egress on 443"
        );
        let demo = DemoSecrets::of(&workload.deployment.sidecar, "gcp");
        let (project, stored) = gcp_secrets(what, &demo);
        // The metadata server answers as the Google service account the annotation
        // names, or else as the Kubernetes ServiceAccount's own principal.
        let account = workload
            .annotation("iam.gke.io/gcp-service-account")
            .map_or_else(|| format!("{project}.svc.id.goog"), str::to_owned);
        let metadata = Metadata::start(TOKEN, &account);
        let sm = SecretManager::start(TOKEN);
        for (name, value) in &stored {
            sm.add(name, value.as_bytes());
        }

        let run = exercise_with(
            &workload.deployment,
            &demo.files,
            &[
                // GKE's metadata server, which the pod reaches at 169.254.169.254.
                ("GCE_METADATA_HOST", metadata.host()),
                // Redirection of https://secretmanager.googleapis.com.
                ("SECRET_SIDECAR_GCP_ENDPOINT", sm.url()),
            ],
            "metadata-server",
        );
        // The log names the metadata server and the account it answered for.
        run.expect_stderr(&metadata.host()).expect_stderr(&account);
        assert!(
            metadata.requests().iter().any(|r| r
                .target()
                .starts_with("/computeMetadata/v1/instance/service-accounts/default/token")),
            "{what}: no token from the metadata server"
        );
        assert_secret_manager_reads(what, &sm, &stored, TOKEN);
    }
}

#[test]
fn kubernetes_gcp_federation_overlay_runs_as_written() {
    use testkit::azure::jwt;
    use testkit::gcp::{JWT_TOKEN_TYPE, SecretManager, Sts};

    const TOKEN: &str = "ya29.d.sts-federated-token-deploy";
    for workload in k8s_workloads(GCP_FEDERATION) {
        let what = &workload.what;
        let sidecar = &workload.deployment.sidecar;
        assert!(
            workload.egress_allows("0.0.0.0/0", 443),
            "{what}: Google STS and Secret Manager need egress on 443"
        );

        // The credential configuration, as the ConfigMap the pod mounts holds it.
        let config_path = sidecar
            .env_var("GOOGLE_APPLICATION_CREDENTIALS")
            .unwrap_or_else(|| panic!("{what}: GOOGLE_APPLICATION_CREDENTIALS"));
        let (volume, key) = workload.volume_for(&config_path);
        assert!(
            volume["configMap"]["items"].is_null(),
            "{what}: map keys to paths with items and this test must follow them"
        );
        let config_map = workload
            .objects
            .iter()
            .find(|o| {
                o["kind"] == "ConfigMap" && o["metadata"]["name"] == volume["configMap"]["name"]
            })
            .unwrap_or_else(|| panic!("{what}: the ConfigMap of {config_path} is not rendered"));
        let text = config_map["data"][&key]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: the ConfigMap has no key {key}"));
        let mut config: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: {key} is not JSON: {e}"));
        assert_eq!(config["type"], "external_account", "{what}");
        assert_eq!(config["subject_token_type"], JWT_TOKEN_TYPE, "{what}");
        assert_eq!(
            config["token_url"], "https://sts.googleapis.com/v1/token",
            "{what}"
        );
        assert!(
            config.get("service_account_impersonation_url").is_none(),
            "{what}: impersonation is not exercised here; add the IAM fake first"
        );
        let audience = str_at(&config, "/audience").to_owned();

        // The projected token the configuration reads: only the sidecar mounts it, and
        // its audience is the provider's (https: + the configuration's audience).
        let token_path = str_at(&config, "/credential_source/file").to_owned();
        let (token_volume, token_key) = workload.volume_for(&token_path);
        let projected = token_volume["projected"]["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| &s["serviceAccountToken"])
            .find(|t| t["path"].as_str() == Some(token_key.as_str()))
            .unwrap_or_else(|| panic!("{what}: {token_path} is not a projected token"));
        assert_eq!(
            projected["audience"].as_str(),
            Some(format!("https:{audience}").as_str()),
            "{what}: the token's audience must be the pool provider's"
        );
        let token_volume_name = str_at(token_volume, "/name");
        assert!(
            !workload.others_mount(token_volume_name),
            "{what}: only the sidecar needs the Google identity"
        );
        assert_eq!(
            workload.template["spec"]["automountServiceAccountToken"], false,
            "{what}: the API token is not needed beside the projected one"
        );

        // What the kubelet provides, and the two endpoints redirected: the only edits.
        let files = Scratch::tmpfs("gcp-federation");
        let token = jwt(&format!(
            r#"{{"aud":["https:{audience}"],"iss":"https://kubernetes.default.svc","sub":"{}","exp":4102444800}}"#,
            subject(&workload.service_account)
        ));
        let token_file = readable_file(&files, "gcp-token", &token);
        let sts = Sts::start(&audience, &token, TOKEN);
        config["token_url"] = sts.token_url().into();
        config["credential_source"]["file"] = token_file.display().to_string().into();
        let config_file = readable_file(&files, &key, &config.to_string());

        let demo = DemoSecrets::of(sidecar, "gcp");
        let (_, stored) = gcp_secrets(what, &demo);
        let sm = SecretManager::start(TOKEN);
        for (name, value) in &stored {
            sm.add(name, value.as_bytes());
        }
        let run = exercise_with(
            &workload.deployment,
            &demo.files,
            &[
                (
                    "GOOGLE_APPLICATION_CREDENTIALS",
                    config_file.display().to_string(),
                ),
                ("SECRET_SIDECAR_GCP_ENDPOINT", sm.url()),
            ],
            "external-account",
        );
        run.expect_stderr(&format!("file:{}", token_file.display()))
            .expect_stderr(&audience);
        let exchanges = sts.requests();
        assert_eq!(exchanges.len(), 1, "{what}: one token exchange");
        let form = testkit::http::form(&exchanges[0].body);
        assert_eq!(form["subject_token"], token, "{what}");
        assert_eq!(form["audience"], audience, "{what}");
        assert_secret_manager_reads(what, &sm, &stored, TOKEN);
    }
}
