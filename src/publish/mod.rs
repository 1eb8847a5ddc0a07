//! Publishing a set of files atomically: the only place secrets touch a filesystem.
//!
//! The scheme is Kubernetes' AtomicWriter, the one kubelet uses for Secret volumes:
//!
//! ```text
//! DIR/..sidecar.<time>.<pid>.<n>/db        the files, written and fsynced first
//! DIR/..data -> ..sidecar.<time>.<pid>.<n> swapped in one rename(2)
//! DIR/db     -> ..data/db                  what the application opens
//! ```
//!
//! A reader therefore sees the complete previous set or the complete new one, never a mix
//! and never a partly written file.
//!
//! The volume is shared, so another process may be changing it while a set is written;
//! the publisher assumes so:
//! - **By handle, not by path.** The output directory is opened once with `O_NOFOLLOW`;
//!   every directory below it is created and opened relative to its parent's descriptor,
//!   and every file is created (`O_CREAT | O_EXCL | O_NOFOLLOW`), written, chowned,
//!   chmodded and fsynced through its own ([`at`]). A name swapped for a link during the
//!   publish cannot send a write, a chmod or a removal outside the directory.
//! - **Private until done.** New directories are `0700` until every file below them is
//!   written; then each gets the tightest mode that lets every reader of its files reach
//!   them ([`dir_mode`]).
//! - **Checked before and after the swap.** The staging directory must still be the one
//!   this run made (same inode) when `..data` is swapped to it, and `..data` must point at
//!   it afterwards; otherwise the run fails (exit 6) rather than report a set it did not
//!   publish. `..data` is trusted only when it names a real staging directory, not a link.
//! - **One writer at a time.** A publish holds an advisory lock (`flock`) on the output
//!   directory, so two writers of one volume (a restarted init container racing its
//!   predecessor, token mode and a second copy) take turns instead of deleting each
//!   other's sets.
//! - **Nothing foreign is touched.** Existing entries this tool did not create are never
//!   followed, replaced or deleted; anything this run created is removed again if a step
//!   before the swap fails. After the swap the new set is live, so tidying up (fsync of the
//!   directory, removing the previous set and links the new one lacks) only warns when it
//!   fails.

mod at;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use rustix::fs::{FlockOperation, Mode, OFlags, Stat};
use tracing::warn;

use crate::exit::Failure;
use crate::paths::Owner;
use crate::secret::SecretValue;
pub use status::read_status;

const DATA_LINK: &str = "..data";
const DATA_LINK_TMP: &str = "..data_tmp";
const STAGING_PREFIX: &str = "..sidecar.";
/// The setgid bit a new directory inherits from a setgid parent (Kubernetes sets it on an
/// `emptyDir` with `fsGroup`); it must survive our chmod, or files stop getting the group.
const SETGID: u32 = 0o2000;
/// How long a publish waits for another writer of the same directory to finish.
const LOCK_WAIT: Duration = Duration::from_secs(10);

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

/// A checked output directory, held open, ready to publish into.
pub struct Publisher {
    path: PathBuf,
    dir: OwnedFd,
}

impl Publisher {
    /// Checks the directory before anything is fetched, so a misconfigured volume fails
    /// fast: it must exist, be a real directory (not a symbolic link) and be tmpfs or
    /// ramfs unless `allow_non_tmpfs`. It stays open: everything later is relative to it.
    pub fn open(path: &Path, allow_non_tmpfs: bool) -> Result<Publisher> {
        let dir = open_output_dir(path, allow_non_tmpfs)
            .with_context(|| format!("output directory {}", path.display()))
            .context(Failure::Output)?;
        Ok(Publisher {
            path: path.to_owned(),
            dir,
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

    fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    fn publish_inner(&self, files: &[NewFile<'_>]) -> Result<()> {
        let _lock = Lock::take(self.dir())?;
        let old_staging = self.current_staging()?;
        let top_level: BTreeSet<&str> = files
            .iter()
            .map(|file| file.path.split('/').next().unwrap_or(file.path))
            .collect();
        let missing_links = self.check_visible_names(&top_level)?;
        self.remove_stale(old_staging.as_deref())?;

        let staging = Staging::create(self.dir())?;
        let mut made = Made::default();
        let swapped = self
            .stage(&staging, files)
            .and_then(|()| self.link_and_swap(&staging, &missing_links, &mut made));
        if let Err(err) = swapped {
            self.undo(&staging, &made);
            return Err(err);
        }
        // The swap happened. If `..data` does not point at what was just written, another
        // process changed the directory meanwhile: say so rather than report success.
        self.check_swapped(&staging)?;

        // The new set is live. What follows only makes it durable and tidies up after the
        // previous one; a failure here must not undo the swap, nor fail the run.
        if let Err(err) = rustix::fs::fsync(self.dir()) {
            warn!("syncing {} after the swap: {err}", self.path.display());
        }
        if let Err(err) = self.remove_unlisted_links(&top_level) {
            warn!("removing links the new set no longer has: {err:#}");
        }
        if let Some(old) = old_staging
            && let Err(err) = at::remove_tree(self.dir(), &old)
        {
            warn!("removing the previous set {old}: {err}");
        }
        Ok(())
    }

    /// Writes every file into the staging directory, then gives each directory its mode
    /// and makes it durable, deepest first.
    fn stage(&self, staging: &Staging, files: &[NewFile<'_>]) -> Result<()> {
        // Every directory of the set by its path relative to the staging directory ("" is
        // the staging directory itself), and the files below each.
        let mut dirs: BTreeMap<String, (OwnedFd, Vec<&NewFile<'_>>)> = BTreeMap::new();
        dirs.insert(String::new(), (staging.fd.try_clone()?, Vec::new()));
        for file in files {
            let (parent, leaf) = match file.path.rsplit_once('/') {
                Some((parent, leaf)) => (parent, leaf),
                None => ("", file.path),
            };
            let mut current = String::new();
            for component in parent.split('/').filter(|c| !c.is_empty()) {
                let below = match current.is_empty() {
                    true => component.to_owned(),
                    false => format!("{current}/{component}"),
                };
                if !dirs.contains_key(&below) {
                    let fd = at::make_dir(dirs[&current].0.as_fd(), component)
                        .with_context(|| format!("creating directory {below}"))?;
                    dirs.insert(below.clone(), (fd, Vec::new()));
                }
                current = below;
            }
            let parent_fd = dirs[&current].0.as_fd();
            write_file(parent_fd, leaf, file).with_context(|| format!("writing {}", file.path))?;
            // Each directory on the way down serves this file's readers.
            let mut ancestor = Some(current.as_str());
            while let Some(dir) = ancestor {
                if let Some((_, below)) = dirs.get_mut(dir) {
                    below.push(file);
                }
                ancestor = match dir.rsplit_once('/') {
                    Some((up, _)) => Some(up),
                    None if dir.is_empty() => None,
                    None => Some(""),
                };
            }
        }
        // Deepest first, so every directory entry is durable before its parent's.
        for (path, (fd, below)) in dirs.iter().rev() {
            let inherited = rustix::fs::fstat(fd)?.st_mode & SETGID;
            let mode = dir_mode(below.iter().copied()) | inherited;
            rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
                .with_context(|| format!("setting the mode of directory '{path}'"))?;
            rustix::fs::fsync(fd).with_context(|| format!("syncing directory '{path}'"))?;
        }
        Ok(())
    }

    /// Links the names the previous set did not have, then swaps `..data`, after checking
    /// that the staging directory is still the one this run made.
    fn link_and_swap(&self, staging: &Staging, missing: &[&str], made: &mut Made) -> Result<()> {
        // Until the swap these point at nothing in the old set, which a reader sees as
        // "not there yet".
        for name in missing {
            at::symlink(&format!("{DATA_LINK}/{name}"), self.dir(), name)
                .with_context(|| format!("linking {name}"))?;
            made.links.push((*name).to_owned());
        }
        staging.check_still_there(self.dir())?;
        at::symlink(&staging.name, self.dir(), DATA_LINK_TMP)
            .context("creating the ..data_tmp link")?;
        made.tmp_link = true;
        at::rename(self.dir(), DATA_LINK_TMP, DATA_LINK).context("swapping the ..data link")?;
        made.tmp_link = false;
        Ok(())
    }

    /// `..data` points at the staging directory this run made, and it is still that one.
    fn check_swapped(&self, staging: &Staging) -> Result<()> {
        let target = at::read_link(self.dir(), DATA_LINK).context("reading ..data")?;
        if target.as_deref() != Some(staging.name.as_bytes()) {
            bail!(
                "..data no longer points at the set just written ({}): another process is \
                 changing this directory",
                staging.name
            );
        }
        staging.check_still_there(self.dir())
    }

    /// Removes what this run made before a failed swap.
    fn undo(&self, staging: &Staging, made: &Made) {
        for link in &made.links {
            if self.is_our_link(link) {
                let _ = at::remove_file(self.dir(), link);
            }
        }
        if made.tmp_link {
            let _ = at::remove_file(self.dir(), DATA_LINK_TMP);
        }
        if staging.check_still_there(self.dir()).is_ok() {
            let _ = at::remove_tree(self.dir(), &staging.name);
        }
    }

    /// The staging directory `..data` points at now, if any.
    fn current_staging(&self) -> Result<Option<String>> {
        let Some(stat) = at::stat(self.dir(), DATA_LINK).context("reading ..data")? else {
            return Ok(None);
        };
        if !at::is_link(&stat) {
            bail!("..data exists and is not a link; this directory was not made by secret-sidecar");
        }
        let target = at::read_link(self.dir(), DATA_LINK)
            .context("reading ..data")?
            .unwrap_or_default();
        let name = String::from_utf8_lossy(&target).into_owned();
        if !name.starts_with(STAGING_PREFIX) || name.contains('/') {
            bail!(
                "..data points at {}, which secret-sidecar did not create",
                name.escape_debug()
            );
        }
        match at::stat(self.dir(), &name).context("examining the current set")? {
            Some(stat) if !at::is_dir(&stat) => bail!(
                "..data points at {name}, which is not a directory (secret-sidecar makes \
                 directories); another process has changed this directory"
            ),
            _ => Ok(Some(name)),
        }
    }

    /// Every top-level name must be absent or a link this tool made; returns the absent.
    fn check_visible_names<'n>(&self, names: &BTreeSet<&'n str>) -> Result<Vec<&'n str>> {
        let mut missing = Vec::new();
        for name in names {
            match at::stat(self.dir(), name).with_context(|| format!("checking {name}"))? {
                None => missing.push(*name),
                Some(_) if self.is_our_link(name) => {}
                Some(_) => bail!(
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
        for name in at::names(self.dir()).context("listing the directory")? {
            if name == DATA_LINK_TMP {
                let stale_link = at::stat(self.dir(), &name)?.is_some_and(|s| at::is_link(&s));
                if stale_link {
                    at::remove_file(self.dir(), &name).context("removing a stale ..data_tmp")?;
                }
            } else if name.starts_with(STAGING_PREFIX) && Some(name.as_str()) != current {
                at::remove_tree(self.dir(), &name)
                    .with_context(|| format!("removing a stale staging directory {name}"))?;
            }
        }
        Ok(())
    }

    /// Removes top-level links of the previous set that the new set does not have.
    fn remove_unlisted_links(&self, keep: &BTreeSet<&str>) -> Result<()> {
        for name in at::names(self.dir()).context("listing the directory")? {
            if !keep.contains(name.as_str()) && !name.starts_with("..") && self.is_our_link(&name) {
                at::remove_file(self.dir(), &name)
                    .with_context(|| format!("removing the old link {name}"))?;
            }
        }
        Ok(())
    }

    /// Whether `name` is a symbolic link to `..data/<name>`, the only kind this tool makes.
    fn is_our_link(&self, name: &str) -> bool {
        at::read_link(self.dir(), name)
            .ok()
            .flatten()
            .is_some_and(|target| target == format!("{DATA_LINK}/{name}").as_bytes())
    }
}

/// Opens the output directory without following a link, and checks what it is.
fn open_output_dir(path: &Path, allow_non_tmpfs: bool) -> Result<OwnedFd> {
    let dir = match rustix::fs::open(path, at::dir_flags(), Mode::empty()) {
        Ok(dir) => dir,
        Err(rustix::io::Errno::NOENT) => bail!("does not exist (is the shared volume mounted?)"),
        Err(rustix::io::Errno::LOOP) => bail!("is a symbolic link; give the real directory"),
        Err(rustix::io::Errno::NOTDIR) => match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                bail!("is a symbolic link; give the real directory")
            }
            _ => bail!("is not a directory"),
        },
        Err(errno) => return Err(anyhow!("cannot be opened: {errno}")),
    };
    let stat = rustix::fs::fstatfs(&dir).map_err(|errno| anyhow!("statfs failed: {errno}"))?;
    #[allow(clippy::unnecessary_cast)]
    let magic = stat.f_type as i64;
    if magic != TMPFS_MAGIC && magic != RAMFS_MAGIC && !allow_non_tmpfs {
        bail!(
            "is not on tmpfs (filesystem type {magic:#x}), so secrets could reach a disk; \
             mount an in-memory volume (emptyDir medium: Memory) or pass --allow-non-tmpfs"
        );
    }
    let mode = rustix::fs::fstat(&dir)?.st_mode;
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        // A Kubernetes emptyDir is made this way (0777). Publishing stays safe, since it
        // works by handle; what the app reads afterwards is only as safe as the volume.
        warn!(
            dir = %path.display(),
            mode = format!("{:04o}", mode & 0o7777),
            "the output directory is writable by every user and has no sticky bit: any \
             process that shares the volume can replace what the application reads (give \
             the volume to the app's pod alone)"
        );
    }
    Ok(dir)
}

/// The staging directory of one publish: its name, an open handle, and what it is.
struct Staging {
    name: String,
    fd: OwnedFd,
    stat: Stat,
}

impl Staging {
    fn create(dir: BorrowedFd<'_>) -> Result<Staging> {
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
            match at::make_dir(dir, &name) {
                Ok(fd) => {
                    let stat = rustix::fs::fstat(&fd)?;
                    return Ok(Staging { name, fd, stat });
                }
                Err(err) if err.kind() == ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(err).context("creating the staging directory"),
            }
        }
        bail!("could not find a free staging directory name")
    }

    /// Fails unless the directory's name still leads to the directory this run made.
    fn check_still_there(&self, dir: BorrowedFd<'_>) -> Result<()> {
        match at::stat(dir, &self.name)? {
            Some(now) if at::is_dir(&now) && at::same_inode(&now, &self.stat) => Ok(()),
            _ => bail!(
                "the staging directory {} was replaced while the set was written: another \
                 process is changing this directory",
                self.name
            ),
        }
    }
}

/// What this run created outside the staging directory before a swap.
#[derive(Default)]
struct Made {
    links: Vec<String>,
    tmp_link: bool,
}

/// The advisory lock on the output directory, held for one publish.
struct Lock<'d>(BorrowedFd<'d>);

impl<'d> Lock<'d> {
    fn take(dir: BorrowedFd<'d>) -> Result<Lock<'d>> {
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match rustix::fs::flock(dir, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Lock(dir)),
                Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => bail!(
                    "another process has been publishing into this directory for {LOCK_WAIT:?} \
                     (it holds the directory's lock)"
                ),
                Err(errno) => return Err(anyhow!("locking the directory: {errno}")),
            }
        }
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(self.0, FlockOperation::Unlock);
    }
}

/// The permission bits a directory of the set gets: everything for this process, which
/// made it and removes it later, and read and search for group and others when a file
/// below it is readable by them. A file given to another owner (`--owner`) is read by a
/// user who reaches the directory as group or other, so its owner's read bit opens both.
/// Names are not secret, but a directory no reader needs stays closed.
fn dir_mode<'a>(files: impl IntoIterator<Item = &'a NewFile<'a>>) -> u32 {
    let mut mode = 0o700;
    for file in files {
        if file.mode & 0o040 != 0 {
            mode |= 0o050;
        }
        if file.mode & 0o004 != 0 {
            mode |= 0o005;
        }
        if file.owner.is_some() && file.mode & 0o400 != 0 {
            mode |= 0o055;
        }
    }
    mode
}

/// Creates, fills, chowns, chmods and fsyncs `name` in `parent`, never through a link.
fn write_file(parent: BorrowedFd<'_>, name: &str, file: &NewFile<'_>) -> Result<()> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(parent, name, flags, Mode::from_raw_mode(0o600))?;
    let mut handle = File::from(fd);
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
    handle.set_permissions(std::fs::Permissions::from_mode(file.mode))?;
    handle.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests;
