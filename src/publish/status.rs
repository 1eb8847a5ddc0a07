//! A long-running mode's status beside the set it publishes, for its probe: a small
//! document (never a secret) in `..status/NAME`, replaced whole with a rename so that a
//! reader sees one version or the next.
//!
//! It lives in a directory of its own so that rewriting it, once per refresh cycle, makes
//! no event in the output directory itself: applications that watch that directory (for
//! the `..data` swap) are not woken up for it. Like everything here it is written by
//! handle and never through a link; it takes no lock, since it is not part of a set.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use rustix::fs::{Mode, OFlags};

use super::{Publisher, at};

const STATUS_DIR: &str = "..status";
/// More than any status document needs; a bigger file is not ours.
const MAX_STATUS_BYTES: u64 = 64 * 1024;

impl Publisher {
    /// Replaces `..status/NAME` with `content` (mode 0444: the probe may run as another
    /// user than the writer).
    pub fn write_status(&self, name: &str, content: &[u8]) -> Result<()> {
        let dir = match at::open_dir(self.dir(), STATUS_DIR) {
            Ok(dir) => dir,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let dir = at::make_dir(self.dir(), STATUS_DIR)
                    .with_context(|| format!("creating {STATUS_DIR}"))?;
                rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o755))?;
                dir
            }
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("opening {STATUS_DIR} (not a directory?)"));
            }
        };
        let temporary = format!(".{name}.tmp");
        at::remove_file(dir.as_fd(), &temporary)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir, &temporary, flags, Mode::from_raw_mode(0o600))?;
        let mut file = File::from(fd);
        file.write_all(content)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o444))?;
        drop(file);
        at::rename(dir.as_fd(), &temporary, name)
            .with_context(|| format!("replacing {STATUS_DIR}/{name}"))
    }

    /// Removes `..status/NAME`, so that a probe fails until it is written again.
    pub fn clear_status(&self, name: &str) -> Result<()> {
        match at::open_dir(self.dir(), STATUS_DIR) {
            Ok(dir) => Ok(at::remove_file(dir.as_fd(), name)?),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err).with_context(|| format!("opening {STATUS_DIR}")),
        }
    }
}

/// Reads `DIR/..status/NAME`, following no link; `None` when it does not exist.
pub fn read_status(dir: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let dir = rustix::fs::open(dir, at::dir_flags(), Mode::empty())
        .map_err(|errno| anyhow!("{}: {errno}", dir.display()))?;
    let status = match at::open_dir(dir.as_fd(), STATUS_DIR) {
        Ok(status) => status,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("opening {STATUS_DIR}")),
    };
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(&status, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(errno) => bail!("opening {STATUS_DIR}/{name}: {errno}"),
    };
    let mut content = Vec::new();
    File::from(fd)
        .take(MAX_STATUS_BYTES)
        .read_to_end(&mut content)?;
    Ok(Some(content))
}
