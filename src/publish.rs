//! Publishing a set of files atomically: the only place secrets touch a filesystem.
//!
//! The scheme is Kubernetes' AtomicWriter, the one kubelet uses for Secret volumes:
//!
//! ```text
//! DIR/..sidecar.<time>.<pid>/db            the files, written and fsynced first
//! DIR/..data -> ..sidecar.<time>.<pid>     swapped in one rename(2)
//! DIR/db     -> ..data/db                  what the application opens
//! ```
//!
//! A reader therefore sees the complete previous set or the complete new one, never a mix
//! and never a partly written file. Files are created with `O_EXCL | O_NOFOLLOW` in a
//! directory this run just made, then given their mode with `fchmod` (so the umask does not
//! matter) and their owner with `fchown`. Anything this run created is removed again if a
//! step before the swap fails. Existing entries that this tool did not create are never
//! followed, replaced or deleted.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};

use crate::exit::Failure;
use crate::paths::Owner;
use crate::secret::SecretValue;

const DATA_LINK: &str = "..data";
const DATA_LINK_TMP: &str = "..data_tmp";
const STAGING_PREFIX: &str = "..sidecar.";
const DIR_MODE: u32 = 0o755;
/// The setgid bit a new directory inherits from a setgid parent (Kubernetes sets it on an
/// `emptyDir` with `fsGroup`); it must survive our chmod, or files stop getting the group.
const SETGID: u32 = 0o2000;

/// `statfs(2)` magic numbers of the in-memory filesystems.
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// One file to publish. The path was validated by the plan.
pub struct NewFile<'a> {
    pub path: &'a str,
    pub value: &'a SecretValue,
    pub mode: u32,
    pub owner: Option<Owner>,
}

/// A checked output directory, ready to publish into.
pub struct Publisher {
    path: PathBuf,
}

impl Publisher {
    /// Checks the directory before anything is fetched, so a misconfigured volume fails
    /// fast: it must exist, be a real directory (not a symbolic link) and be tmpfs or
    /// ramfs unless `allow_non_tmpfs`.
    pub fn open(path: &Path, allow_non_tmpfs: bool) -> Result<Publisher> {
        check_dir(path, allow_non_tmpfs)
            .with_context(|| format!("output directory {}", path.display()))
            .context(Failure::Output)?;
        Ok(Publisher {
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Publishes `files` as the new complete set.
    pub fn publish(&self, files: &[NewFile<'_>]) -> Result<()> {
        self.publish_inner(files)
            .with_context(|| format!("publishing into {}", self.path.display()))
            .context(Failure::Output)
    }

    fn publish_inner(&self, files: &[NewFile<'_>]) -> Result<()> {
        let old_staging = self.current_staging()?;
        let top_level: BTreeSet<&str> = files
            .iter()
            .map(|file| file.path.split('/').next().unwrap_or(file.path))
            .collect();
        let missing_links = self.check_visible_names(&top_level)?;
        self.remove_stale(old_staging.as_deref())?;

        let staging = self.create_staging()?;
        let mut created_links = Vec::new();
        let result = self.stage_and_swap(&staging, files, &missing_links, &mut created_links);
        if let Err(err) = result {
            for link in created_links {
                let _ = fs::remove_file(self.path.join(link));
            }
            let _ = fs::remove_file(self.path.join(DATA_LINK_TMP));
            let _ = fs::remove_dir_all(self.path.join(&staging));
            return Err(err);
        }

        // The new set is live. What follows only makes it durable and tidies up after the
        // previous one; a failure here must not undo the swap.
        if let Err(err) = sync_dir(&self.path) {
            tracing::warn!("{err:#}");
        }
        self.remove_unlisted_links(&top_level)?;
        if let Some(old) = old_staging {
            fs::remove_dir_all(self.path.join(&old))
                .with_context(|| format!("removing the previous set {old}"))?;
        }
        Ok(())
    }

    fn stage_and_swap<'n>(
        &self,
        staging: &str,
        files: &[NewFile<'_>],
        missing_links: &[&'n str],
        created_links: &mut Vec<&'n str>,
    ) -> Result<()> {
        let root = self.path.join(staging);
        let mut dirs = BTreeSet::from([root.clone()]);
        for file in files {
            let target = root.join(file.path);
            if let Some(parent) = target.parent() {
                create_dirs(&root, parent, &mut dirs)?;
            }
            write_file(&target, file).with_context(|| format!("writing {}", file.path))?;
        }
        // Deepest first, so every directory entry is durable before its parent's.
        for dir in dirs.iter().rev() {
            sync_dir(dir)?;
        }

        // Links for names the previous set did not have. Until the swap they point at
        // nothing in the old set, which a reader sees as "not there yet".
        for name in missing_links {
            symlink(Path::new(DATA_LINK).join(name), self.path.join(name))
                .with_context(|| format!("linking {name}"))?;
            created_links.push(name);
        }

        let tmp_link = self.path.join(DATA_LINK_TMP);
        symlink(staging, &tmp_link).context("creating the ..data_tmp link")?;
        fs::rename(&tmp_link, self.path.join(DATA_LINK)).context("swapping the ..data link")
    }

    /// The staging directory `..data` points at now, if any.
    fn current_staging(&self) -> Result<Option<String>> {
        let link = self.path.join(DATA_LINK);
        match fs::symlink_metadata(&link) {
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).context("reading ..data"),
            Ok(meta) if !meta.file_type().is_symlink() => {
                bail!(
                    "..data exists and is not a link; this directory was not made by secret-sidecar"
                )
            }
            Ok(_) => {
                let target = fs::read_link(&link).context("reading ..data")?;
                let name = target.to_str().unwrap_or_default();
                if !name.starts_with(STAGING_PREFIX) || name.contains('/') {
                    bail!(
                        "..data points at {}, which secret-sidecar did not create",
                        target.display()
                    );
                }
                Ok(Some(name.to_owned()))
            }
        }
    }

    /// Every top-level name must be absent or a link this tool made; returns the absent.
    fn check_visible_names<'n>(&self, names: &BTreeSet<&'n str>) -> Result<Vec<&'n str>> {
        let mut missing = Vec::new();
        for name in names {
            let path = self.path.join(name);
            match fs::symlink_metadata(&path) {
                Err(err) if err.kind() == ErrorKind::NotFound => missing.push(*name),
                Err(err) => return Err(err).with_context(|| format!("checking {name}")),
                Ok(_) if is_our_link(&path, name) => {}
                Ok(_) => bail!(
                    "{name} already exists and is not a link secret-sidecar made; \
                     refusing to replace it (use an empty directory)"
                ),
            }
        }
        Ok(missing)
    }

    /// Removes what an interrupted earlier run may have left: a `..data_tmp` link and
    /// staging directories that `..data` does not point at.
    fn remove_stale(&self, current: Option<&str>) -> Result<()> {
        for entry in fs::read_dir(&self.path).context("listing the directory")? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let kind = entry.file_type()?;
            if name == DATA_LINK_TMP && kind.is_symlink() {
                fs::remove_file(entry.path()).context("removing a stale ..data_tmp")?;
            } else if name.starts_with(STAGING_PREFIX) && kind.is_dir() && Some(name) != current {
                fs::remove_dir_all(entry.path())
                    .with_context(|| format!("removing a stale staging directory {name}"))?;
            }
        }
        Ok(())
    }

    fn create_staging(&self) -> Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        for attempt in 0..100u32 {
            let name = format!(
                "{STAGING_PREFIX}{}.{:09}.{}.{attempt}",
                now.as_secs(),
                now.subsec_nanos(),
                std::process::id()
            );
            let path = self.path.join(&name);
            match fs::create_dir(&path) {
                Ok(()) => {
                    set_dir_mode(&path).context("setting the staging directory's mode")?;
                    return Ok(name);
                }
                Err(err) if err.kind() == ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(err).context("creating the staging directory"),
            }
        }
        bail!("could not find a free staging directory name")
    }

    /// Removes top-level links of the previous set that the new set does not have.
    fn remove_unlisted_links(&self, keep: &BTreeSet<&str>) -> Result<()> {
        for entry in fs::read_dir(&self.path).context("listing the directory")? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !keep.contains(name) && !name.starts_with("..") && is_our_link(&entry.path(), name) {
                fs::remove_file(entry.path())
                    .with_context(|| format!("removing the old link {name}"))?;
            }
        }
        Ok(())
    }
}

fn check_dir(path: &Path, allow_non_tmpfs: bool) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Err(err) if err.kind() == ErrorKind::NotFound => {
            bail!("does not exist (is the shared volume mounted?)")
        }
        other => other.context("cannot be examined")?,
    };
    if meta.file_type().is_symlink() {
        bail!("is a symbolic link; give the real directory");
    }
    if !meta.is_dir() {
        bail!("is not a directory");
    }
    let stat = rustix::fs::statfs(path).map_err(|errno| anyhow!("statfs failed: {errno}"))?;
    #[allow(clippy::unnecessary_cast)]
    let magic = stat.f_type as i64;
    if magic != TMPFS_MAGIC && magic != RAMFS_MAGIC && !allow_non_tmpfs {
        bail!(
            "is not on tmpfs (filesystem type {magic:#x}), so secrets could reach a disk; \
             mount an in-memory volume (emptyDir medium: Memory) or pass --allow-non-tmpfs"
        );
    }
    Ok(())
}

/// Whether `path` is a symbolic link to `..data/<name>`, the only kind this tool creates.
fn is_our_link(path: &Path, name: &str) -> bool {
    fs::read_link(path).is_ok_and(|target| target == Path::new(DATA_LINK).join(name))
}

/// Gives a directory this run created [`DIR_MODE`], whatever the umask, keeping the setgid
/// bit it inherited so that files below it keep getting the volume's group.
fn set_dir_mode(path: &Path) -> Result<()> {
    let inherited = fs::metadata(path)?.permissions().mode() & SETGID;
    fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE | inherited))?;
    Ok(())
}

/// Creates the directories between `root` and `dir`, each with [`DIR_MODE`].
fn create_dirs(root: &Path, dir: &Path, made: &mut BTreeSet<PathBuf>) -> Result<()> {
    let relative = dir
        .strip_prefix(root)
        .context("path escapes the staging directory")?;
    let mut current = root.to_path_buf();
    for component in relative.components() {
        current.push(component);
        if made.contains(&current) {
            continue;
        }
        fs::create_dir(&current)
            .with_context(|| format!("creating directory {}", current.display()))?;
        set_dir_mode(&current)?;
        made.insert(current.clone());
    }
    Ok(())
}

fn write_file(path: &Path, file: &NewFile<'_>) -> Result<()> {
    let mut handle = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    handle.write_all(file.value.expose())?;
    if let Some(owner) = file.owner {
        std::os::unix::fs::fchown(&handle, Some(owner.uid), owner.gid).with_context(|| {
            format!(
                "chown to {}:{}",
                owner.uid,
                owner.gid.map_or("-".into(), |g| g.to_string())
            )
        })?;
    }
    // After chown, which clears setuid-style bits, and regardless of the umask.
    handle.set_permissions(fs::Permissions::from_mode(file.mode))?;
    handle.sync_all()?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under /dev/shm, which is tmpfs on Linux.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let path = PathBuf::from(format!(
                "/dev/shm/secret-sidecar-unit-{tag}-{}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn names(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    fn publish(dir: &Publisher, files: &[(&str, &str)]) -> Result<()> {
        let values: Vec<SecretValue> = files
            .iter()
            .map(|(_, v)| SecretValue::from_string(v.to_string()))
            .collect();
        let outputs: Vec<NewFile<'_>> = files
            .iter()
            .zip(&values)
            .map(|((path, _), value)| NewFile {
                path,
                value,
                mode: 0o440,
                owner: None,
            })
            .collect();
        dir.publish(&outputs)
    }

    #[test]
    fn replaces_the_whole_set_and_tidies_up() {
        let scratch = Scratch::new("swap");
        let dir = Publisher::open(&scratch.0, false).unwrap();
        publish(&dir, &[("a", "1"), ("tls/cert", "2")]).unwrap();
        assert_eq!(fs::read_to_string(scratch.0.join("a")).unwrap(), "1");
        assert_eq!(fs::read_to_string(scratch.0.join("tls/cert")).unwrap(), "2");
        let first = fs::read_link(scratch.0.join(DATA_LINK)).unwrap();

        publish(&dir, &[("a", "3"), ("b", "4")]).unwrap();
        assert_eq!(fs::read_to_string(scratch.0.join("a")).unwrap(), "3");
        assert_eq!(fs::read_to_string(scratch.0.join("b")).unwrap(), "4");
        let listed = names(&scratch.0);
        assert!(!listed.contains("tls"), "old link left behind: {listed:?}");
        assert!(
            !scratch.0.join(first).exists(),
            "old staging directory left behind"
        );
        assert_eq!(listed.len(), 4, "{listed:?}"); // a, b, ..data, one staging dir
    }

    #[test]
    fn refuses_foreign_entries_and_leaves_the_old_set() {
        let scratch = Scratch::new("foreign");
        let dir = Publisher::open(&scratch.0, false).unwrap();
        publish(&dir, &[("a", "old")]).unwrap();
        fs::write(scratch.0.join("b"), "not ours").unwrap();
        symlink("/etc/passwd", scratch.0.join("c")).unwrap();
        let before = names(&scratch.0);

        assert!(publish(&dir, &[("a", "new"), ("b", "x")]).is_err());
        assert!(publish(&dir, &[("a", "new"), ("c", "x")]).is_err());
        assert_eq!(names(&scratch.0), before);
        assert_eq!(fs::read_to_string(scratch.0.join("a")).unwrap(), "old");
        assert_eq!(fs::read_to_string(scratch.0.join("b")).unwrap(), "not ours");
    }

    #[test]
    fn a_failed_write_leaves_nothing_new() {
        let scratch = Scratch::new("fail");
        let dir = Publisher::open(&scratch.0, false).unwrap();
        // "x" as a file and "x/y" need x to be both; the second write fails mid-set.
        let err = publish(&dir, &[("n", "1"), ("x", "2"), ("x/y", "3")]).unwrap_err();
        assert_eq!(Failure::of(&err), Failure::Output);
        assert!(names(&scratch.0).is_empty(), "{:?}", names(&scratch.0));
    }

    #[test]
    fn removes_what_an_interrupted_run_left() {
        let scratch = Scratch::new("stale");
        fs::create_dir(scratch.0.join("..sidecar.1.2.3.0")).unwrap();
        symlink("..sidecar.1.2.3.0", scratch.0.join(DATA_LINK_TMP)).unwrap();
        let dir = Publisher::open(&scratch.0, false).unwrap();
        publish(&dir, &[("a", "1")]).unwrap();
        let listed = names(&scratch.0);
        assert!(
            !listed.contains("..sidecar.1.2.3.0") && !listed.contains(DATA_LINK_TMP),
            "{listed:?}"
        );
    }

    #[test]
    fn files_keep_the_group_of_a_setgid_volume() {
        use std::os::unix::fs::MetadataExt;
        let scratch = Scratch::new("setgid");
        // What kubelet makes of an emptyDir with fsGroup: group-owned, setgid.
        let group = 4242;
        std::os::unix::fs::chown(&scratch.0, None, Some(group)).unwrap();
        fs::set_permissions(&scratch.0, fs::Permissions::from_mode(0o2775)).unwrap();
        let dir = Publisher::open(&scratch.0, false).unwrap();
        publish(&dir, &[("a", "1"), ("nested/b", "2")]).unwrap();
        for file in ["a", "nested/b"] {
            let meta = fs::metadata(scratch.0.join(file)).unwrap();
            assert_eq!(meta.gid(), group, "{file} lost the volume's group");
        }
        let staging = fs::read_link(scratch.0.join(DATA_LINK)).unwrap();
        let mode = fs::metadata(scratch.0.join(staging)).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o2755);
    }

    #[test]
    fn checks_the_directory_itself() {
        let scratch = Scratch::new("checks");
        assert!(Publisher::open(&scratch.0.join("missing"), true).is_err());
        symlink(&scratch.0, scratch.0.join("link")).unwrap();
        assert!(Publisher::open(&scratch.0.join("link"), true).is_err());
        fs::write(scratch.0.join("file"), "").unwrap();
        assert!(Publisher::open(&scratch.0.join("file"), true).is_err());
        let err = Publisher::open(Path::new(env!("CARGO_MANIFEST_DIR")), false).err();
        if rustix::fs::statfs(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
            .f_type as i64
            != TMPFS_MAGIC
        {
            assert_eq!(
                Failure::of(&err.expect("non-tmpfs must be refused")),
                Failure::Output
            );
        }
        assert!(Publisher::open(Path::new(env!("CARGO_MANIFEST_DIR")), true).is_ok());
    }
}
