//! The pod's platform identity in the containers the webhook adds.
//!
//! - [`Irsa`]: for clusters without the EKS pod identity webhook (`--inject-irsa`), what
//!   that webhook does for a pod whose ServiceAccount carries `eks.amazonaws.com/role-arn`
//!   (seed 004): a projected ServiceAccount token with the STS audience, and
//!   `AWS_ROLE_ARN` and `AWS_WEB_IDENTITY_TOKEN_FILE` in every container, init containers
//!   and the injected ones included, except those `eks.amazonaws.com/skip-containers`
//!   names. The names, paths and defaults are that webhook's, so either can run after the
//!   other and find its work done.
//! - [`inherit`]: an identity webhook that ran before this one (the EKS pod identity
//!   webhook, AKS workload identity) gave every container of the pod its variables and
//!   token mount, but never saw the init container added after it; unless it is
//!   reinvoked, that container would start without an identity. It gets the same
//!   variables and mount as the pod's other containers, unless the pod's own
//!   skip-containers annotation for that platform names it.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, Pod, ProjectedVolumeSource, ServiceAccount, ServiceAccountTokenProjection,
    Volume, VolumeMount, VolumeProjection,
};

use super::inject::{literal, mount};
use super::patch::{Edits, containers};

pub const ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
const AUDIENCE_ANNOTATION: &str = "eks.amazonaws.com/audience";
const REGIONAL_ANNOTATION: &str = "eks.amazonaws.com/sts-regional-endpoints";
const EXPIRATION_ANNOTATION: &str = "eks.amazonaws.com/token-expiration";
const EKS_SKIP: &str = "eks.amazonaws.com/skip-containers";
const AZURE_SKIP: &str = "azure.workload.identity/skip-containers";

const IRSA_VOLUME: &str = "aws-iam-token";
const IRSA_DIR: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
const IRSA_TOKEN: &str = "token";
const DEFAULT_AUDIENCE: &str = "sts.amazonaws.com";
/// The EKS webhook's default lifetime, and the bounds the API server accepts.
const DEFAULT_EXPIRATION: i64 = 86_400;
const MIN_EXPIRATION: i64 = 600;

/// What a ServiceAccount's EKS annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Irsa {
    pub role_arn: String,
    pub audience: String,
    pub expiration: i64,
    pub regional_sts: bool,
}

impl Irsa {
    /// `None` when the account names no role.
    pub fn of(account: &ServiceAccount) -> Result<Option<Irsa>> {
        let annotations = account.metadata.annotations.as_ref();
        let get = |name: &str| annotations.and_then(|a| a.get(name)).map(|v| v.trim());
        let Some(role_arn) = get(ROLE_ANNOTATION).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let expiration = match get(EXPIRATION_ANNOTATION) {
            None => DEFAULT_EXPIRATION,
            Some(text) => {
                let seconds: i64 = text
                    .parse()
                    .map_err(|_| anyhow!("{EXPIRATION_ANNOTATION} '{text}' is not seconds"))?;
                if !(MIN_EXPIRATION..=DEFAULT_EXPIRATION).contains(&seconds) {
                    bail!(
                        "{EXPIRATION_ANNOTATION} must be between {MIN_EXPIRATION} and {DEFAULT_EXPIRATION}"
                    );
                }
                seconds
            }
        };
        Ok(Some(Irsa {
            role_arn: role_arn.to_owned(),
            audience: get(AUDIENCE_ANNOTATION)
                .filter(|v| !v.is_empty())
                .unwrap_or(DEFAULT_AUDIENCE)
                .to_owned(),
            expiration,
            regional_sts: get(REGIONAL_ANNOTATION) == Some("true"),
        }))
    }

    fn env(&self) -> Vec<EnvVar> {
        let mut env = Vec::new();
        if self.regional_sts {
            env.push(literal("AWS_STS_REGIONAL_ENDPOINTS", "regional"));
        }
        env.push(literal("AWS_ROLE_ARN", &self.role_arn));
        env.push(literal(
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            &format!("{IRSA_DIR}/{IRSA_TOKEN}"),
        ));
        env
    }

    /// The token volume, and the role in every container not skipped, `ours` included.
    pub fn apply(&self, pod: &Pod, edits: &mut Edits, ours: &mut [Container]) {
        let skipped = skip_list(pod, EKS_SKIP, ',');
        let has_volume = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|v| v.iter().any(|v| v.name == IRSA_VOLUME));
        if !has_volume {
            edits.volume(Volume {
                name: IRSA_VOLUME.to_owned(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            audience: Some(self.audience.clone()),
                            expiration_seconds: Some(self.expiration),
                            path: IRSA_TOKEN.to_owned(),
                        }),
                        ..VolumeProjection::default()
                    }]),
                    default_mode: None,
                }),
                ..Volume::default()
            });
        }
        for (list, index, container) in containers(pod) {
            if skipped.contains(&container.name.as_str()) || defines_role(container) {
                continue;
            }
            for var in self.env() {
                edits.env(pod, (list, index), var);
            }
            if !mounts_at(container, IRSA_DIR) {
                edits.mount(pod, (list, index), mount(IRSA_VOLUME, IRSA_DIR, true));
            }
        }
        for container in ours {
            if skipped.contains(&container.name.as_str()) || defines_role(container) {
                continue;
            }
            let env = container.env.get_or_insert_with(Vec::new);
            for var in self.env() {
                if !env.iter().any(|e| e.name == var.name) {
                    env.push(var);
                }
            }
            if !mounts_at(container, IRSA_DIR) {
                let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
                mounts.push(mount(IRSA_VOLUME, IRSA_DIR, true));
            }
        }
    }
}

/// The EKS webhook leaves a container alone once it names a role or token file itself.
fn defines_role(container: &Container) -> bool {
    container
        .env
        .iter()
        .flatten()
        .any(|e| e.name == "AWS_ROLE_ARN" || e.name == "AWS_WEB_IDENTITY_TOKEN_FILE")
}

fn mounts_at(container: &Container, path: &str) -> bool {
    container
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.mount_path.trim_end_matches('/') == path)
}

/// The names a pod's skip-containers annotation lists.
fn skip_list<'p>(pod: &'p Pod, annotation: &str, separator: char) -> Vec<&'p str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotation))
        .map(|list| list.split(separator).map(str::trim).collect())
        .unwrap_or_default()
}

/// An identity a platform webhook injects into every container.
struct Platform {
    /// Every one of these is set where the platform has been.
    variables: &'static [&'static str],
    /// The one naming the token file, which a projected token volume must hold.
    token_file: &'static str,
    /// Set beside them by the same webhook, copied when present.
    companions: &'static [&'static str],
    skip: (&'static str, char),
}

const PLATFORMS: [Platform; 3] = [
    // AKS (Microsoft Entra) workload identity.
    Platform {
        variables: &[
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_AUTHORITY_HOST",
        ],
        token_file: "AZURE_FEDERATED_TOKEN_FILE",
        companions: &[],
        skip: (AZURE_SKIP, ';'),
    },
    // EKS IRSA.
    Platform {
        variables: &["AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"],
        token_file: "AWS_WEB_IDENTITY_TOKEN_FILE",
        companions: &[
            "AWS_STS_REGIONAL_ENDPOINTS",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
        ],
        skip: (EKS_SKIP, ','),
    },
    // EKS Pod Identity.
    Platform {
        variables: &[
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        ],
        token_file: "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        companions: &["AWS_REGION", "AWS_DEFAULT_REGION"],
        skip: (EKS_SKIP, ','),
    },
];

/// Gives `ours` the platform identities the pod's containers carry (see the module doc).
pub fn inherit(pod: &Pod, ours: &mut Container) {
    let volumes: BTreeMap<&str, &Volume> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .map(|v| (v.name.as_str(), v))
        .collect();
    for platform in &PLATFORMS {
        let (annotation, separator) = platform.skip;
        if skip_list(pod, annotation, separator).contains(&ours.name.as_str()) {
            continue;
        }
        let defined = |c: &Container, name: &str| c.env.iter().flatten().any(|e| e.name == name);
        // A container that sets any of them itself is the pod author's, not the platform's.
        if platform.variables.iter().any(|v| defined(ours, v)) {
            continue;
        }
        let source = containers(pod)
            .map(|(_, _, c)| c)
            .filter(|c| platform.variables.iter().all(|v| defined(c, v)))
            .find_map(|c| token_mount(c, platform.token_file, &volumes).map(|m| (c, m)));
        let Some((source, token_mount)) = source else {
            continue;
        };
        let env = ours.env.get_or_insert_with(Vec::new);
        for var in source.env.iter().flatten() {
            let wanted = platform.variables.contains(&var.name.as_str())
                || platform.companions.contains(&var.name.as_str());
            if wanted && !env.iter().any(|e| e.name == var.name) {
                env.push(var.clone());
            }
        }
        let mounts = ours.volume_mounts.get_or_insert_with(Vec::new);
        if !mounts
            .iter()
            .any(|m| m.name == token_mount.name || m.mount_path == token_mount.mount_path)
        {
            mounts.push(VolumeMount {
                name: token_mount.name.clone(),
                mount_path: token_mount.mount_path.clone(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
        }
    }
}

/// The mount of a projected ServiceAccount token volume holding the file `variable` names.
fn token_mount<'c>(
    container: &'c Container,
    variable: &str,
    volumes: &BTreeMap<&str, &Volume>,
) -> Option<&'c VolumeMount> {
    let file = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == variable)?
        .value
        .as_deref()?;
    container.volume_mounts.iter().flatten().find(|m| {
        let dir = m.mount_path.trim_end_matches('/');
        let holds = file
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'));
        let projected_token = volumes
            .get(m.name.as_str())
            .and_then(|v| v.projected.as_ref())
            .and_then(|p| p.sources.as_ref())
            .is_some_and(|s| s.iter().any(|s| s.service_account_token.is_some()));
        holds && projected_token
    })
}

#[cfg(test)]
mod tests;
