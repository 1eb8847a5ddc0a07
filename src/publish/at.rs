//! File-system calls relative to an open directory, none of which follows a symbolic link.
//!
//! The publisher names nothing by path below the output directory: every entry is reached
//! from the descriptor of the directory that holds it, opened with `O_NOFOLLOW`. A name
//! that another process swaps for a link, or for another directory, therefore cannot
//! redirect a write, a chmod or a removal to a place outside the directory.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

/// `O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC`: a directory, never through a link.
pub fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens the directory `name` in `parent`.
pub fn open_dir(parent: BorrowedFd<'_>, name: &str) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        parent,
        name,
        dir_flags(),
        Mode::empty(),
    )?)
}

/// Makes the directory `name` in `parent`, for this process alone until it is finished.
pub fn make_dir(parent: BorrowedFd<'_>, name: &str) -> std::io::Result<OwnedFd> {
    rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))?;
    open_dir(parent, name).map_err(|err| match err.raw_os_error() {
        // Made a moment ago and now a link or a file: someone else is changing the volume.
        Some(code)
            if code == rustix::io::Errno::NOTDIR.raw_os_error()
                || code == rustix::io::Errno::LOOP.raw_os_error() =>
        {
            std::io::Error::other(format!(
                "the directory {name} just made was replaced ({err}): another process is \
                 changing this directory"
            ))
        }
        _ => err,
    })
}

/// What `name` in `parent` is, without following a link; `None` when it does not exist.
pub fn stat(parent: BorrowedFd<'_>, name: &str) -> std::io::Result<Option<Stat>> {
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(errno) => Err(errno.into()),
    }
}

pub fn is_dir(stat: &Stat) -> bool {
    FileType::from_raw_mode(stat.st_mode) == FileType::Directory
}

pub fn is_link(stat: &Stat) -> bool {
    FileType::from_raw_mode(stat.st_mode) == FileType::Symlink
}

/// Whether two stats are of the same inode.
pub fn same_inode(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// The target of the link `name` in `parent`, as bytes; `None` when it is not a link.
pub fn read_link(parent: BorrowedFd<'_>, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    match rustix::fs::readlinkat(parent, name, Vec::new()) {
        Ok(target) => Ok(Some(target.into_bytes())),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => Ok(None),
        Err(errno) => Err(errno.into()),
    }
}

pub fn symlink(target: &str, parent: BorrowedFd<'_>, name: &str) -> std::io::Result<()> {
    Ok(rustix::fs::symlinkat(target, parent, name)?)
}

pub fn rename(parent: BorrowedFd<'_>, from: &str, to: &str) -> std::io::Result<()> {
    Ok(rustix::fs::renameat(parent, from, parent, to)?)
}

/// Removes the file or link `name` in `parent`; a missing one is no error.
pub fn remove_file(parent: BorrowedFd<'_>, name: &str) -> std::io::Result<()> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// The names in a directory, `.` and `..` left out. Names that are not UTF-8 are left out
/// too: nothing this tool creates has one.
pub fn names(dir: BorrowedFd<'_>) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if let Some(name) = name.to_str()
            && name != "."
            && name != ".."
        {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// Removes `name` in `parent` and, if it is a directory, everything below it, following
/// no link: a link is removed, never what it points at. A missing entry is no error.
pub fn remove_tree(parent: BorrowedFd<'_>, name: &str) -> std::io::Result<()> {
    let Some(stat) = stat(parent, name)? else {
        return Ok(());
    };
    if !is_dir(&stat) {
        return remove_file(parent, name);
    }
    let dir = match open_dir(parent, name) {
        Ok(dir) => dir,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    // Published directories may be read-only for their owner too; ours to empty again.
    let _ = rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o700));
    for entry in names(dir.as_fd())? {
        remove_tree(dir.as_fd(), &entry)?;
    }
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}
