//! What is injected into a pod that asks for it: the init container that publishes the
//! secrets, an in-memory volume for them mounted read-only into the chosen containers, and
//! for apps whose own AWS SDK needs a web identity, a native sidecar keeping a token fresh
//! (seed 003's arrangement). Every injected container runs the webhook's image, pinned by
//! its flag, with the hardened security context of the repository's overlays and requests
//! equal to limits.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource,
    EnvVar, ExecAction, KeyToPath, ObjectFieldSelector, Pod, Probe, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::contract::{
    Asked, CONFIG_DIR, CONFIG_FILE, Denied, OAUTH2_DIR, OAUTH2_FILE, PREFIX, STATUS,
    STATUS_INJECTED, USER,
};
use super::identity::{self, Irsa};
use super::patch::{Edits, List, containers};

pub const INIT_NAME: &str = "secret-sidecar";
pub const TOKEN_NAME: &str = "secret-sidecar-token";
pub const SECRETS_VOLUME: &str = "secret-sidecar-secrets";
pub const CONFIG_VOLUME: &str = "secret-sidecar-config";
pub const OAUTH2_VOLUME: &str = "secret-sidecar-oauth2";
pub const TOKEN_VOLUME: &str = "secret-sidecar-aws-token";
/// Where the token sidecar publishes the app's web-identity token.
pub const TOKEN_DIR: &str = "/var/run/secret-sidecar/aws-token";
pub const TOKEN_PATH: &str = "/var/run/secret-sidecar/aws-token/token";
/// Where the image keeps the binary, for the token sidecar's exec probe (no shell there).
const BINARY: &str = "/usr/local/bin/secret-sidecar";

/// What the webhook's flags fix for every injection.
#[derive(Debug, Clone)]
pub struct Settings {
    pub image: String,
    pub cpu: Quantity,
    pub memory: Quantity,
    pub volume_size: Quantity,
}

/// The edits for `pod`, and warnings for the one who created it.
pub fn inject(
    pod: &Pod,
    asked: &Asked,
    settings: &Settings,
    irsa: Option<&Irsa>,
) -> Result<(Edits, Vec<String>), Denied> {
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| Denied("the pod has no spec".to_owned()))?;
    check_free_names(pod)?;
    let targets = targets(pod, asked)?;
    // The files take the writer's group: the pod's fsGroup, so its containers can read them.
    let fs_group = spec.security_context.as_ref().and_then(|s| s.fs_group);
    let group = fs_group.unwrap_or(USER);
    let owner = asked.owner.map(|o| {
        let gid = o.gid.map_or(group, i64::from);
        (i64::from(o.uid), gid)
    });
    let mut edits = Edits::default();
    let mut ours = Vec::new();

    if asked.publishes() {
        let mut mounts = vec![mount(SECRETS_VOLUME, &asked.mount_path, false)];
        if asked.config.is_some() {
            mounts.push(mount(CONFIG_VOLUME, CONFIG_DIR, true));
            edits.volume(config_volume());
        }
        if asked.oauth2_secret.is_some() {
            mounts.push(mount(OAUTH2_VOLUME, OAUTH2_DIR, true));
        }
        let mut env = vec![literal("SECRET_SIDECAR_LOG_FORMAT", "json")];
        if let Some(role) = &asked.aws_role_arn {
            env.push(literal("AWS_ROLE_ARN", role));
        }
        if let Some(region) = &asked.aws_region {
            env.push(literal("AWS_REGION", region));
        }
        let (user, group) = owner.unwrap_or((USER, group));
        let mut init = container(
            INIT_NAME,
            settings,
            (user, group),
            asked.init_args(),
            env,
            mounts,
        );
        // The init container is added after any platform webhook that ran before this one:
        // give it the identity that webhook gave the pod's other containers.
        identity::inherit(pod, &mut init);
        if asked.refreshes() {
            // As the aws-irsa-refresh overlay: a native sidecar whose startup probe holds
            // the app back until the first set is published, and whose liveness probe
            // fails once the set has gone refresh-max-stale without a successful check.
            let command = [
                BINARY.to_owned(),
                "--probe".to_owned(),
                format!("--output-dir={}", asked.mount_path),
            ];
            init.restart_policy = Some("Always".to_owned());
            init.startup_probe = Some(exec_probe(command.to_vec(), 1, 60));
            init.liveness_probe = Some(exec_probe(command.to_vec(), 60, 3));
        }
        ours.push(init);
        edits.volume(Volume {
            name: SECRETS_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".to_owned()),
                size_limit: Some(settings.volume_size.clone()),
            }),
            ..Volume::default()
        });
        for &at in &targets {
            edits.mount(pod, at, mount(SECRETS_VOLUME, &asked.mount_path, true));
        }
    }

    if asked.aws_token_sidecar {
        let mut mounts = vec![mount(TOKEN_VOLUME, TOKEN_DIR, false)];
        if asked.oauth2_secret.is_some() {
            mounts.push(mount(OAUTH2_VOLUME, OAUTH2_DIR, true));
        }
        let env = vec![literal("SECRET_SIDECAR_LOG_FORMAT", "json")];
        let args = asked.token_args(TOKEN_PATH);
        let mut sidecar = container(TOKEN_NAME, settings, (USER, group), args, env, mounts);
        // A native sidecar: started before the app, kept running beside it; the app starts
        // once the first token is there.
        sidecar.restart_policy = Some("Always".to_owned());
        let command = [BINARY, "token", "--probe", &format!("--out={TOKEN_PATH}")];
        sidecar.startup_probe = Some(exec_probe(command.map(str::to_owned).to_vec(), 1, 60));
        ours.push(sidecar);
        edits.volume(Volume {
            name: TOKEN_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".to_owned()),
                size_limit: Some(Quantity("64Ki".to_owned())),
            }),
            ..Volume::default()
        });
        let role = asked.aws_role_arn.as_deref().unwrap_or_default();
        for &at in &targets {
            edits.env(pod, at, literal("AWS_ROLE_ARN", role));
            edits.env(pod, at, literal("AWS_WEB_IDENTITY_TOKEN_FILE", TOKEN_PATH));
            edits.mount(pod, at, mount(TOKEN_VOLUME, TOKEN_DIR, true));
        }
    }

    if let Some(secret) = &asked.oauth2_secret {
        edits.volume(Volume {
            name: OAUTH2_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                items: Some(vec![KeyToPath {
                    key: secret.key.clone(),
                    path: OAUTH2_FILE.to_owned(),
                    mode: None,
                }]),
                // Only this pod's injected containers mount it; readable whatever their
                // group, since a pod need not set fsGroup.
                default_mode: Some(0o444),
                optional: Some(false),
            }),
            ..Volume::default()
        });
    }

    if let Some(irsa) = irsa {
        irsa.apply(pod, &mut edits, &mut ours);
    }
    for container in ours {
        edits.init_container(container, asked.init_first);
    }
    edits.annotate(STATUS, STATUS_INJECTED);
    Ok((edits, warnings(pod, asked, &targets)))
}

/// The containers that get the mount: those `containers` names, else every app container.
fn targets(pod: &Pod, asked: &Asked) -> Result<Vec<(List, usize)>, Denied> {
    let all: Vec<(List, usize, &Container)> = containers(pod).collect();
    let chosen: Vec<(List, usize, &Container)> = match &asked.containers {
        None => all
            .iter()
            .filter(|(l, _, _)| *l == List::App)
            .copied()
            .collect(),
        Some(names) => {
            let mut chosen = Vec::new();
            for name in names {
                let found = all.iter().find(|(_, _, c)| c.name == *name);
                let Some(found) = found else {
                    let known: Vec<&str> = all.iter().map(|(_, _, c)| c.name.as_str()).collect();
                    return Err(Denied(format!(
                        "annotation {PREFIX}containers: the pod has no container '{name}' (it has {})",
                        known.join(", ")
                    )));
                };
                chosen.push(*found);
            }
            chosen
        }
    };
    for (_, _, container) in &chosen {
        let taken = container.volume_mounts.iter().flatten().find(|m| {
            m.mount_path.trim_end_matches('/') == asked.mount_path
                || (asked.aws_token_sidecar && m.mount_path.trim_end_matches('/') == TOKEN_DIR)
        });
        if let Some(taken) = taken {
            return Err(Denied(format!(
                "container '{}' already mounts volume '{}' at {}; choose another {PREFIX}mount-path",
                container.name, taken.name, taken.mount_path
            )));
        }
        if asked.aws_token_sidecar {
            let set = container
                .env
                .iter()
                .flatten()
                .find(|e| e.name == "AWS_ROLE_ARN" || e.name == "AWS_WEB_IDENTITY_TOKEN_FILE");
            if let Some(set) = set {
                return Err(Denied(format!(
                    "annotation {PREFIX}aws-token-sidecar: container '{}' sets {} itself; remove \
                     it, or the annotation",
                    container.name, set.name
                )));
            }
        }
    }
    Ok(chosen.into_iter().map(|(l, i, _)| (l, i)).collect())
}

/// A pod without the status annotation must not hold what the injection would add.
fn check_free_names(pod: &Pod) -> Result<(), Denied> {
    for (_, _, container) in containers(pod) {
        if [INIT_NAME, TOKEN_NAME].contains(&container.name.as_str()) {
            return Err(Denied(format!(
                "the pod already has a container named '{}' but no {STATUS} annotation: it is \
                 set up by hand; remove the container or the {} label",
                container.name,
                super::contract::INJECT_LABEL
            )));
        }
    }
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for volume in volumes.into_iter().flatten() {
        if [SECRETS_VOLUME, CONFIG_VOLUME, OAUTH2_VOLUME, TOKEN_VOLUME]
            .contains(&volume.name.as_str())
        {
            return Err(Denied(format!(
                "the pod already has a volume named '{}', which the injection adds; rename it",
                volume.name
            )));
        }
    }
    Ok(())
}

/// What the pod's creator should know: files its containers may not be able to read.
fn warnings(pod: &Pod, asked: &Asked, targets: &[(List, usize)]) -> Vec<String> {
    let spec = pod.spec.as_ref();
    let pod_security = spec.and_then(|s| s.security_context.as_ref());
    if !asked.publishes() || pod_security.is_some_and(|s| s.fs_group.is_some()) {
        return Vec::new();
    }
    // Without an fsGroup the files belong to the init container's user and group.
    let (file_uid, file_gid) = asked.owner.map_or((USER, USER), |o| {
        (i64::from(o.uid), o.gid.map_or(USER, i64::from))
    });
    let mut unable = Vec::new();
    for (list, index, container) in containers(pod) {
        if !targets.contains(&(list, index)) {
            continue;
        }
        let own = container.security_context.as_ref();
        let uid = own
            .and_then(|s| s.run_as_user)
            .or(pod_security.and_then(|s| s.run_as_user));
        let gid = own
            .and_then(|s| s.run_as_group)
            .or(pod_security.and_then(|s| s.run_as_group));
        let groups = pod_security.and_then(|s| s.supplemental_groups.as_ref());
        let reads = uid == Some(0)
            || uid.is_none() && own.and_then(|s| s.run_as_non_root) != Some(true)
            || uid == Some(file_uid)
            || gid == Some(file_gid)
            || groups.is_some_and(|g| g.contains(&file_gid));
        if !reads {
            unable.push(container.name.clone());
        }
    }
    if unable.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "secret-sidecar: the pod sets no securityContext.fsGroup, so {} may not read the secret \
         files (owner {file_uid}:{file_gid}, mode {}); set fsGroup",
        unable.join(", "),
        asked.flags.get("mode").map_or("0440", String::as_str)
    )]
}

fn container(
    name: &str,
    settings: &Settings,
    (user, group): (i64, i64),
    args: Vec<String>,
    env: Vec<EnvVar>,
    mounts: Vec<VolumeMount>,
) -> Container {
    let limits: BTreeMap<String, Quantity> = [
        ("cpu".to_owned(), settings.cpu.clone()),
        ("memory".to_owned(), settings.memory.clone()),
    ]
    .into();
    Container {
        name: name.to_owned(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(args),
        env: Some(env),
        resources: Some(ResourceRequirements {
            requests: Some(limits.clone()),
            limits: Some(limits),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(user),
            run_as_group: Some(group),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        }),
        // The error line (class, reference, cause) shows in `kubectl describe pod`.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

/// A probe that runs `command` (the image has no shell) every `period` seconds.
fn exec_probe(command: Vec<String>, period: i32, failures: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(command),
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// The `config` annotation as a file, through the downward API.
fn config_volume() -> Volume {
    Volume {
        name: CONFIG_VOLUME.to_owned(),
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![DownwardAPIVolumeFile {
                path: CONFIG_FILE.to_owned(),
                field_ref: Some(ObjectFieldSelector {
                    field_path: format!("metadata.annotations['{PREFIX}config']"),
                    api_version: None,
                }),
                ..DownwardAPIVolumeFile::default()
            }]),
            default_mode: Some(0o444),
        }),
        ..Volume::default()
    }
}

pub fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

pub fn literal(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}
