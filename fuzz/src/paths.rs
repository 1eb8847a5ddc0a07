//! What a file name must be before anything is written under the output directory.

use std::path::{Component, Path};

/// Linux's NAME_MAX, as the README states it.
const MAX_COMPONENT_BYTES: usize = 255;
/// Linux's PATH_MAX less the NUL, as the README states it.
const MAX_PATH_BYTES: usize = 4095;

/// A name derived for the user (`safe_component`, `default_file_name`) must be one plain
/// path component that `validate_file` accepts and that stays in the output directory.
pub fn assert_single_component(name: &str, from: &str) {
    assert!(!name.is_empty(), "empty file name derived from {from:?}");
    assert!(
        !name.contains('/'),
        "file name {name:?} (from {from:?}) contains '/'"
    );
    assert!(
        name.len() <= MAX_COMPONENT_BYTES,
        "file name of {} bytes (from {from:?})",
        name.len()
    );
    if let Err(err) = secret_sidecar::paths::validate_file(name) {
        panic!("validate_file rejects the derived name {name:?} (from {from:?}): {err:#}");
    }
    assert_stays_inside(name);
}

/// A path that `validate_file` accepted: relative, made only of plain components that are
/// neither `.` nor `..` nor start with `..` (the publisher's own names), no NUL, within the
/// length limits, and joined under a directory it stays under it.
pub fn assert_stays_inside(path: &str) {
    assert!(!path.is_empty(), "accepted an empty path");
    assert!(!path.starts_with('/'), "accepted an absolute path {path:?}");
    assert!(!path.contains('\0'), "accepted a path with NUL {path:?}");
    assert!(
        path.len() <= MAX_PATH_BYTES,
        "accepted a path of {} bytes",
        path.len()
    );
    for component in path.split('/') {
        assert!(
            !component.is_empty()
                && component != "."
                && component != ".."
                && !component.starts_with(".."),
            "accepted {path:?} with the component {component:?}"
        );
        assert!(
            component.len() <= MAX_COMPONENT_BYTES,
            "accepted {path:?} with a component of {} bytes",
            component.len()
        );
    }
    // The same through std's path logic, which is what the publisher joins with.
    let root = Path::new("/output/dir");
    let joined = root.join(path);
    assert!(joined.starts_with(root), "{path:?} joined as {joined:?}");
    let below: Vec<Component> = joined
        .components()
        .skip(root.components().count())
        .collect();
    assert_eq!(
        below.len(),
        path.split('/').count(),
        "{path:?} joined as {joined:?}"
    );
    assert!(
        below.iter().all(|c| matches!(c, Component::Normal(_))),
        "{path:?} joined as {joined:?}"
    );
}
