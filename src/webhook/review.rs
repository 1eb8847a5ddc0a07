//! One AdmissionReview: read it with kube-rs's admission types, decide, answer.
//!
//! Anything but the creation of a Pod is allowed unchanged (the webhook's rules send only
//! those, but a wider configuration must not break the cluster). A pod is changed only
//! when it carries the opt-in label; one that already carries the injection is returned
//! unchanged, so reinvocation and other webhooks compose with this one.
//!
//! Nothing from the pod is ever logged or quoted besides its name and the contract's own
//! annotations: an error about the object says where it failed, never what it held.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use super::accounts::Accounts;
use super::contract::{Asked, Denied, INJECT_LABEL, STATUS, STATUS_INJECTED};
use super::identity::Irsa;
use super::inject::{INIT_NAME, Settings, TOKEN_NAME, TOKEN_PATH, inject};
use super::patch::containers;

/// The only AdmissionReview version this webhook speaks (its configuration says so).
const VERSION: &str = "admission.k8s.io/v1";

/// What was decided, for the log line.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed unchanged, and why.
    Unchanged(&'static str),
    /// Allowed with a patch that publishes this many secret annotations.
    Injected {
        secrets: usize,
    },
    Denied,
}

/// The request's identity, for the log line: names only.
#[derive(Debug, Default)]
pub struct Subject {
    pub uid: String,
    pub namespace: String,
    pub pod: String,
}

/// The answer to a body that is not an AdmissionReview the webhook can answer: the API
/// server treats it as a failed call (and with `failurePolicy: Fail`, refuses the pod).
#[derive(Debug)]
pub struct BadRequest(pub String);

/// Reads one AdmissionReview and returns the AdmissionReview to send back.
pub async fn review(
    body: &[u8],
    settings: &Settings,
    accounts: Option<&Accounts>,
) -> Result<(Vec<u8>, Outcome, Subject), BadRequest> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body).map_err(|err| {
        // serde's message may quote the document; its position may not.
        BadRequest(format!(
            "the body is not a JSON AdmissionReview ({:?} error at line {}, column {})",
            err.classify(),
            err.line(),
            err.column()
        ))
    })?;
    if review.types.api_version != VERSION || review.types.kind != "AdmissionReview" {
        return Err(BadRequest(format!(
            "only AdmissionReview {VERSION} is answered (admissionReviewVersions: [v1])"
        )));
    }
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| BadRequest("the AdmissionReview holds no request".to_owned()))?;
    let mut subject = Subject {
        uid: request.uid.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        pod: request.name.clone(),
    };
    let response = AdmissionResponse::from(&request);
    let (mut response, outcome) = decide(request, response, settings, accounts, &mut subject).await;
    // The API takes `patch` ([]byte in Go) as base64 in JSON; kube-rs's type serializes its
    // bytes as an array of numbers (kube-rs issue 1781), which only Go's lenient decoder
    // reads. It is written here as the API documents it.
    let patch = response.patch.take();
    let mut answer = serde_json::to_value(response.into_review())
        .map_err(|_| BadRequest("the answer could not be serialized".to_owned()))?;
    if let Some(patch) = patch {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(patch);
        answer["response"]["patch"] = serde_json::Value::String(encoded);
    }
    let answer = serde_json::to_vec(&answer)
        .map_err(|_| BadRequest("the answer could not be serialized".to_owned()))?;
    Ok((answer, outcome, subject))
}

async fn decide(
    request: AdmissionRequest<DynamicObject>,
    response: AdmissionResponse,
    settings: &Settings,
    accounts: Option<&Accounts>,
    subject: &mut Subject,
) -> (AdmissionResponse, Outcome) {
    let is_pod = request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.sub_resource.is_none();
    if !is_pod {
        return (response, Outcome::Unchanged("not a pod"));
    }
    if request.operation != Operation::Create {
        return (response, Outcome::Unchanged("not a creation"));
    }
    let Some(object) = request.object else {
        return denied(response, "the request holds no pod".to_owned());
    };
    let pod: Pod = match object.try_parse() {
        Ok(pod) => pod,
        Err(_) => return denied(response, "the object is not a valid v1 Pod".to_owned()),
    };
    if subject.pod.is_empty() {
        subject.pod = match (&pod.metadata.name, &pod.metadata.generate_name) {
            (Some(name), _) => name.clone(),
            (None, Some(prefix)) => format!("{prefix}*"),
            (None, None) => String::new(),
        };
    }
    let labels = pod.metadata.labels.as_ref();
    if labels.and_then(|l| l.get(INJECT_LABEL)).map(String::as_str) != Some("true") {
        return (response, Outcome::Unchanged("not opted in"));
    }
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    if let Some(status) = annotations.get(STATUS) {
        let ours = containers(&pod).any(|(_, _, c)| c.name == INIT_NAME || c.name == TOKEN_NAME);
        if status == STATUS_INJECTED && ours {
            return (response, Outcome::Unchanged("already injected"));
        }
        return denied(
            response,
            format!(
                "the pod carries {STATUS} without the injected containers; remove the \
                 annotation (the webhook sets it)"
            ),
        );
    }
    let asked = match Asked::read(annotations) {
        Ok(asked) => asked,
        Err(Denied(message)) => return denied(response, message),
    };
    if let Err(Denied(message)) = asked.check_command_lines(TOKEN_PATH) {
        return denied(response, message);
    }
    let irsa = match accounts {
        None => None,
        Some(accounts) => {
            let name = pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.as_deref())
                .filter(|n| !n.is_empty())
                .unwrap_or("default");
            let namespace = match (&request.namespace, &pod.metadata.namespace) {
                (Some(ns), _) | (None, Some(ns)) => ns.clone(),
                (None, None) => "default".to_owned(),
            };
            let found = accounts.get(&namespace, name).await;
            match found.and_then(|account| Irsa::of(&account)) {
                Ok(irsa) => irsa,
                Err(err) => {
                    return denied(
                        response,
                        format!(
                            "--inject-irsa: {err:#}; the pod is not admitted without the AWS \
                             identity its ServiceAccount may give it"
                        ),
                    );
                }
            }
        }
    };
    let (edits, warnings) = match inject(&pod, &asked, settings, irsa.as_ref()) {
        Ok(done) => done,
        Err(Denied(message)) => return denied(response, message),
    };
    let patched = edits
        .into_patch(&pod)
        .map_err(|err| format!("{err:#}"))
        .and_then(|patch| {
            response
                .clone()
                .with_patch(patch)
                .map_err(|e| e.to_string())
        });
    match patched {
        Ok(mut response) => {
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            let secrets = asked.secrets.len();
            (response, Outcome::Injected { secrets })
        }
        Err(message) => denied(response, format!("building the patch: {message}")),
    }
}

fn denied(response: AdmissionResponse, message: String) -> (AdmissionResponse, Outcome) {
    let mut response = response.deny(message);
    response.result.code = 400;
    response.result.reason = "BadRequest".to_owned();
    (response, Outcome::Denied)
}
