//! A pod's containers run as the kubelet would run them, on this machine.
//!
//! Each volume of the pod becomes a directory prepared as the kubelet prepares it (an
//! in-memory `emptyDir` with the pod's fsGroup, downward API files from the pod's own
//! metadata, projected ServiceAccount tokens, Secret keys), and each path a container
//! names under one of its mounts (in an argument or a variable) is translated to that
//! directory. A container then runs with exactly its arguments and environment, as its
//! user, and reads files where its mounts say. Nothing else of the pod is interpreted, so
//! a mount that is missing, misnamed or in the wrong place shows up as a failure.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

use super::deploy::{
    Ids, Invocation, Volume, VolumeDir, binary_for, command_as, is_root, run_sidecar,
};
use super::{Run, Scratch};

/// Issues the ServiceAccount token the kubelet projects for an audience (`None`: the API
/// server's own).
pub type TokenIssuer = Box<dyn Fn(Option<&str>) -> String>;

/// What the cluster holds that the pod's volumes project: tokens by audience, Secret keys.
#[derive(Default)]
pub struct Cluster {
    /// Without one, each token is a placeholder naming its audience.
    pub token: Option<TokenIssuer>,
    /// `(secret name, key)` → content.
    pub secrets: BTreeMap<(String, String), Vec<u8>>,
}

/// A pod whose volumes are set up.
pub struct KubeletPod {
    pub pod: Value,
    volumes: BTreeMap<String, PathBuf>,
    _dirs: Vec<VolumeDir>,
    _scratch: Vec<Scratch>,
}

impl KubeletPod {
    pub fn start(pod: &Value, cluster: &Cluster) -> KubeletPod {
        let fs_group = pod["spec"]["securityContext"]["fsGroup"]
            .as_u64()
            .map(|g| g as u32);
        let mut volumes = BTreeMap::new();
        let (mut dirs, mut scratch) = (Vec::new(), Vec::new());
        for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
            let name = volume["name"].as_str().unwrap().to_owned();
            let path = if volume.get("emptyDir").is_some() {
                let dir = VolumeDir::new(Volume::EmptyDir { fs_group }, "pod-volume");
                let path = dir.path.clone();
                dirs.push(dir);
                path
            } else {
                let dir = Scratch::tmpfs("pod-volume");
                fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o755)).unwrap();
                project(pod, volume, &dir.path, cluster, fs_group);
                let path = dir.path.clone();
                scratch.push(dir);
                path
            };
            volumes.insert(name, path);
        }
        KubeletPod {
            pod: pod.clone(),
            volumes,
            _dirs: dirs,
            _scratch: scratch,
        }
    }

    /// The init or app container `name`.
    pub fn container(&self, name: &str) -> &Value {
        ["initContainers", "containers"]
            .iter()
            .flat_map(|list| self.pod["spec"][list].as_array().into_iter().flatten())
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("the pod has no container {name}"))
    }

    /// The host directory of the pod's volume `name`.
    pub fn volume(&self, name: &str) -> &Path {
        &self.volumes[name]
    }

    /// `text` with a leading path (or the value after `--flag=`) under one of the
    /// container's mounts replaced by the host directory it stands for.
    pub fn translate(&self, container: &Value, text: &str) -> String {
        let (head, value) = match text.strip_prefix("--").and_then(|t| t.split_once('=')) {
            Some((flag, value)) => (format!("--{flag}="), value),
            None => (String::new(), text),
        };
        let mut mounts: Vec<&Value> = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m["mountPath"].as_str().unwrap().len()));
        for mount in mounts {
            let at = mount["mountPath"].as_str().unwrap().trim_end_matches('/');
            let Some(rest) = value.strip_prefix(at) else {
                continue;
            };
            if !rest.is_empty() && !rest.starts_with('/') {
                continue;
            }
            let mut host = self.volumes[mount["name"].as_str().unwrap()].clone();
            if let Some(sub) = mount["subPath"].as_str() {
                host = host.join(sub);
            }
            return format!("{head}{}{rest}", host.display());
        }
        text.to_owned()
    }

    /// The container's user, groups included, from its securityContext or the pod's.
    pub fn user(&self, container: &Value) -> Ids {
        let pod = &self.pod["spec"]["securityContext"];
        let field = |name: &str| {
            container["securityContext"][name]
                .as_u64()
                .or_else(|| pod[name].as_u64())
                .unwrap_or(0) as u32
        };
        let mut groups: Vec<u32> = pod["supplementalGroups"]
            .as_array()
            .map(|gs| gs.iter().map(|g| g.as_u64().unwrap() as u32).collect())
            .unwrap_or_default();
        groups.extend(pod["fsGroup"].as_u64().map(|g| g as u32));
        Ids {
            uid: field("runAsUser"),
            gid: field("runAsGroup"),
            groups,
        }
    }

    /// The container `name` as it would run: arguments and literal variables, each path
    /// under its mounts translated, as its user.
    pub fn invocation(&self, name: &str) -> Invocation {
        let container = self.container(name);
        let strings = |field: &str| -> Vec<String> {
            container[field]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| self.translate(container, s.as_str().unwrap()))
                .collect()
        };
        assert!(
            container.get("command").is_none(),
            "{name}: a command would replace the image's entrypoint"
        );
        let env = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let value = e["value"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: {e} has no literal value"));
                (
                    e["name"].as_str().unwrap().to_owned(),
                    self.translate(container, value),
                )
            })
            .collect();
        Invocation {
            what: format!("container {name}"),
            args: strings("args"),
            env,
            user: self.user(container),
        }
    }

    /// Runs the secret-sidecar container `name` (the binary under test for its image) as
    /// [`KubeletPod::invocation`] says, with `identity` (what the platform gives it, or
    /// points elsewhere) added; AWS requests go to LocalStack.
    pub fn run(&self, name: &str, binary: &Path, identity: &[(&str, String)]) -> Run {
        let invocation = self.invocation(name);
        let out = invocation
            .option("output-dir")
            .unwrap_or_else(|| panic!("{name} names no output directory"));
        let bin_dir = Scratch::tmpfs("kubelet-bin");
        let binary = binary_for(binary, &bin_dir);
        run_sidecar(&invocation, &binary, Path::new(&out), identity)
    }

    /// Reads `path` as container `name` sees it, as its user.
    pub fn read_as(&self, name: &str, path: &str) -> Result<Vec<u8>, String> {
        let container = self.container(name);
        let host = self.translate(container, path);
        if host == path {
            return Err(format!("nothing is mounted in {name} where {path} is"));
        }
        let output = command_as(&self.user(container), Path::new("/bin/cat"))
            .arg(&host)
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .unwrap();
        match output.status.success() {
            true => Ok(output.stdout),
            false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
        }
    }
}

/// Writes the files of a volume that is not an emptyDir into `dir`.
fn project(pod: &Value, volume: &Value, dir: &Path, cluster: &Cluster, fs_group: Option<u32>) {
    let write = |name: &str, content: &[u8], mode: u32, group: Option<u32>| {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        if is_root() {
            std::os::unix::fs::chown(&path, Some(0), group.or(Some(0))).unwrap();
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    };
    let field = |path: &str| -> Vec<u8> {
        let metadata = &pod["metadata"];
        let quoted = |prefix: &str| {
            path.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix("['"))
                .and_then(|rest| rest.strip_suffix("']"))
        };
        let value = if let Some(key) = quoted("metadata.annotations") {
            &metadata["annotations"][key]
        } else if let Some(key) = quoted("metadata.labels") {
            &metadata["labels"][key]
        } else {
            match path {
                "metadata.name" => &metadata["name"],
                "metadata.namespace" => &metadata["namespace"],
                other => panic!("no downward API field {other} here"),
            }
        };
        value.as_str().unwrap_or_default().as_bytes().to_vec()
    };
    let mode_of =
        |source: &Value, default: u32| source["defaultMode"].as_u64().map_or(default, |m| m as u32);
    if let Some(downward) = volume.get("downwardAPI") {
        let mode = mode_of(downward, 0o644);
        for item in downward["items"].as_array().into_iter().flatten() {
            let content = field(item["fieldRef"]["fieldPath"].as_str().unwrap());
            write(item["path"].as_str().unwrap(), &content, mode, None);
        }
    } else if let Some(secret) = volume.get("secret") {
        let name = secret["secretName"].as_str().unwrap();
        let mode = mode_of(secret, 0o644);
        let keys: Vec<(String, String)> = match secret["items"].as_array() {
            Some(items) => items
                .iter()
                .map(|i| {
                    (
                        i["key"].as_str().unwrap().to_owned(),
                        i["path"].as_str().unwrap().to_owned(),
                    )
                })
                .collect(),
            // Without items, every key of the Secret, each as a file of its name.
            None => cluster
                .secrets
                .keys()
                .filter(|(secret, _)| secret == name)
                .map(|(_, key)| (key.clone(), key.clone()))
                .collect(),
        };
        assert!(!keys.is_empty(), "the cluster has no Secret {name}");
        for (key, path) in keys {
            let content = cluster
                .secrets
                .get(&(name.to_owned(), key.clone()))
                .unwrap_or_else(|| panic!("the cluster has no Secret {name} key {key}"));
            write(&path, content, mode, fs_group);
        }
    } else if let Some(projected) = volume.get("projected") {
        for source in projected["sources"].as_array().into_iter().flatten() {
            if let Some(token) = source.get("serviceAccountToken") {
                let audience = token["audience"].as_str();
                let content = match &cluster.token {
                    Some(issue) => issue(audience),
                    None => format!(
                        "kubernetes-token-for-{}",
                        audience.unwrap_or("the-api-server")
                    ),
                };
                // The kubelet's rule: readable by the pod's fsGroup, else by root alone.
                let mode = if fs_group.is_some() { 0o640 } else { 0o600 };
                write(
                    token["path"].as_str().unwrap(),
                    content.as_bytes(),
                    mode,
                    fs_group,
                );
            } else if let Some(items) = source["downwardAPI"]["items"].as_array() {
                for item in items {
                    let content = field(item["fieldRef"]["fieldPath"].as_str().unwrap());
                    write(item["path"].as_str().unwrap(), &content, 0o644, None);
                }
            } else if let Some(items) = source["configMap"]["items"].as_array() {
                for item in items {
                    write(item["path"].as_str().unwrap(), b"", 0o644, None);
                }
            }
        }
    }
}
