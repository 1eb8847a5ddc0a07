//! The JSON Patch that carries an injection, built against the pod as it was sent.
//!
//! The webhook never re-serializes the pod: a field the types do not know (a newer API
//! server's) would be lost. It only adds: variables and mounts to existing containers (by
//! their index in the pod as sent, before anything is inserted), volumes at the end of
//! the list, its own containers at the front or the end of `initContainers`, and its
//! status annotation. Each addition names an element that was checked not to exist.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, Volume, VolumeMount};
use serde::Serialize;

/// A container list of the pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum List {
    Init,
    App,
}

impl List {
    fn field(self) -> &'static str {
        match self {
            List::Init => "initContainers",
            List::App => "containers",
        }
    }
}

/// Every container of the pod as sent, init containers first, with its place.
pub fn containers(pod: &Pod) -> impl Iterator<Item = (List, usize, &Container)> {
    let spec = pod.spec.as_ref();
    let init = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, c)| (List::Init, i, c));
    let app = spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, c)| (List::App, i, c));
    init.chain(app)
}

/// What to add to one existing container.
#[derive(Debug, Default)]
struct Additions {
    env: Vec<EnvVar>,
    mounts: Vec<VolumeMount>,
}

/// Everything the injection adds, gathered before the patch is written.
#[derive(Debug, Default)]
pub struct Edits {
    existing: BTreeMap<(List, usize), Additions>,
    volumes: Vec<Volume>,
    /// New init containers, before the pod's own or after them.
    first: Vec<Container>,
    last: Vec<Container>,
    annotations: Vec<(String, String)>,
}

impl Edits {
    /// Adds `var` to an existing container unless it sets that name already.
    pub fn env(&mut self, pod: &Pod, at: (List, usize), var: EnvVar) {
        let container = container(pod, at);
        let present = container.env.iter().flatten().any(|e| e.name == var.name);
        let additions = self.existing.entry(at).or_default();
        if !present && !additions.env.iter().any(|e| e.name == var.name) {
            additions.env.push(var);
        }
    }

    /// Adds `mount` to an existing container unless it mounts that volume already.
    pub fn mount(&mut self, pod: &Pod, at: (List, usize), mount: VolumeMount) {
        let container = container(pod, at);
        let present = container
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == mount.name);
        let additions = self.existing.entry(at).or_default();
        if !present && !additions.mounts.iter().any(|m| m.name == mount.name) {
            additions.mounts.push(mount);
        }
    }

    /// Whether a variable or mount is to be added to that container already.
    pub fn adds_to(&self, at: (List, usize)) -> bool {
        self.existing
            .get(&at)
            .is_some_and(|a| !a.env.is_empty() || !a.mounts.is_empty())
    }

    pub fn volume(&mut self, volume: Volume) {
        self.volumes.push(volume);
    }

    pub fn init_container(&mut self, container: Container, first: bool) {
        match first {
            true => self.first.push(container),
            false => self.last.push(container),
        }
    }

    pub fn annotate(&mut self, name: &str, value: &str) {
        self.annotations.push((name.to_owned(), value.to_owned()));
    }

    /// The patch, in an order where every path is valid when its operation applies.
    pub fn into_patch(self, pod: &Pod) -> Result<Patch> {
        let mut ops = Vec::new();
        // Existing containers first, while their indices are those of the pod as sent.
        for ((list, index), additions) in &self.existing {
            let container = container(pod, (*list, *index));
            let at = |field: &str| -> Vec<String> {
                vec![
                    "spec".into(),
                    list.field().into(),
                    index.to_string(),
                    field.into(),
                ]
            };
            append(&mut ops, at("env"), container.env.is_some(), &additions.env)?;
            append(
                &mut ops,
                at("volumeMounts"),
                container.volume_mounts.is_some(),
                &additions.mounts,
            )?;
        }
        let spec = pod.spec.as_ref();
        let path = |field: &str| vec!["spec".to_owned(), field.to_owned()];
        let has_volumes = spec.is_some_and(|s| s.volumes.is_some());
        append(&mut ops, path("volumes"), has_volumes, &self.volumes)?;
        let has_init = spec.is_some_and(|s| s.init_containers.is_some());
        match (has_init, self.first.is_empty()) {
            (true, false) => {
                for (offset, container) in self.first.iter().enumerate() {
                    let mut at = path("initContainers");
                    at.push(offset.to_string());
                    ops.push(add(at, container)?);
                }
                append(&mut ops, path("initContainers"), true, &self.last)?;
            }
            (true, true) => append(&mut ops, path("initContainers"), true, &self.last)?,
            (false, _) => {
                let all: Vec<&Container> = self.first.iter().chain(&self.last).collect();
                if !all.is_empty() {
                    ops.push(add(path("initContainers"), &all)?);
                }
            }
        }
        if !self.annotations.is_empty() {
            let has_annotations = pod.metadata.annotations.is_some();
            if has_annotations {
                for (name, value) in &self.annotations {
                    let at = vec!["metadata".into(), "annotations".into(), name.clone()];
                    ops.push(add(at, value)?);
                }
            } else {
                let map: BTreeMap<&str, &str> = self
                    .annotations
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                ops.push(add(vec!["metadata".into(), "annotations".into()], &map)?);
            }
        }
        Ok(Patch(ops))
    }
}

fn container(pod: &Pod, (list, index): (List, usize)) -> &Container {
    let spec = pod
        .spec
        .as_ref()
        .expect("a place comes from the pod's spec");
    match list {
        List::Init => &spec.init_containers.as_ref().expect("listed")[index],
        List::App => &spec.containers[index],
    }
}

/// Appends `items` to the array at `path`: one `add …/-` each when the array exists, else
/// one `add` of the whole array.
fn append<T: Serialize>(
    ops: &mut Vec<PatchOperation>,
    path: Vec<String>,
    exists: bool,
    items: &[T],
) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    if !exists {
        ops.push(add(path, &items)?);
        return Ok(());
    }
    for item in items {
        let mut at = path.clone();
        at.push("-".to_owned());
        ops.push(add(at, item)?);
    }
    Ok(())
}

fn add(path: Vec<String>, value: &impl Serialize) -> Result<PatchOperation> {
    Ok(PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path),
        value: serde_json::to_value(value).context("serializing a patch value")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn var(name: &str) -> EnvVar {
        EnvVar {
            name: name.to_owned(),
            value: Some("v".to_owned()),
            ..EnvVar::default()
        }
    }

    #[test]
    fn arrays_are_created_or_appended_to_and_names_already_set_are_left_alone() {
        let pod = pod(serde_json::json!({
            "metadata": {"annotations": {"a": "b"}},
            "spec": {
                "initContainers": [{"name": "migrate", "env": [{"name": "X", "value": "keep"}]}],
                "containers": [{"name": "app"}],
                "volumes": [{"name": "data", "emptyDir": {}}]
            }
        }));
        let mut edits = Edits::default();
        edits.env(&pod, (List::Init, 0), var("X"));
        edits.env(&pod, (List::Init, 0), var("Y"));
        edits.env(&pod, (List::App, 0), var("Y"));
        edits.init_container(
            Container {
                name: "first".into(),
                ..Container::default()
            },
            true,
        );
        edits.annotate("secret-sidecar.io/status", "injected");
        let patch = serde_json::to_value(edits.into_patch(&pod).unwrap()).unwrap();
        let paths: Vec<&str> = patch
            .as_array()
            .unwrap()
            .iter()
            .map(|op| op["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "/spec/initContainers/0/env/-",
                "/spec/containers/0/env",
                "/spec/initContainers/0",
                "/metadata/annotations/secret-sidecar.io~1status",
            ]
        );
    }

    #[test]
    fn a_pod_without_init_containers_gets_the_list() {
        let pod =
            pod(serde_json::json!({"metadata": {}, "spec": {"containers": [{"name": "app"}]}}));
        let mut edits = Edits::default();
        for (name, first) in [("a", true), ("b", false)] {
            edits.init_container(
                Container {
                    name: name.into(),
                    ..Container::default()
                },
                first,
            );
        }
        edits.annotate("k", "v");
        let patch = serde_json::to_value(edits.into_patch(&pod).unwrap()).unwrap();
        assert_eq!(patch[0]["path"], "/spec/initContainers");
        assert_eq!(patch[0]["value"][0]["name"], "a");
        assert_eq!(patch[0]["value"][1]["name"], "b");
        assert_eq!(patch[1]["path"], "/metadata/annotations");
        assert_eq!(patch[1]["value"]["k"], "v");
    }
}
