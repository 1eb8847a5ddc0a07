//! Token files that kubelet projects into a pod (IRSA's, EKS Pod Identity's, Azure
//! workload identity's, the subject token of Google federation) and replaces while the pod
//! runs; a mounted Secret (an OAuth2 client secret) is replaced the same way.
//!
//! kubelet writes a new token into a fresh directory, swaps the `..data` link to it, and
//! removes the previous directory at once. A reader whose open resolved `..data` just
//! before the swap looks for the file in a directory that is being removed, and gets
//! "not found" although the path names a complete new token a moment later. That is a read
//! to repeat, not a missing token: [`read`] repeats it itself, and [`replaced`] tells a
//! caller whose SDK read the file that it met this race rather than a missing file, so
//! that the failure is retried instead of reported as an identity failure.

use std::error::Error;
use std::io;
use std::path::Path;

/// Reads in all before a file that keeps vanishing is reported missing; the race takes
/// microseconds, so the second read already finds the new token.
const READS: usize = 3;

/// Reads `path`, again if it was not found yet exists by the time that is known.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut reads = 1;
    loop {
        match std::fs::read(path) {
            Err(err) if reads < READS && err.kind() == io::ErrorKind::NotFound && path.exists() => {
                reads += 1;
            }
            result => return result,
        }
    }
}

/// Whether `err`, from an SDK that read `path`, is that race: a "not found" I/O error in
/// its chain while `path` exists now.
pub fn replaced(err: &(dyn Error + 'static), path: &Path) -> bool {
    let mut cause = Some(err);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::NotFound
        {
            return path.exists();
        }
        cause = current.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_file_that_exists_again_counts_as_replaced() {
        let dir = std::env::temp_dir().join(format!("token-file-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let missing = std::fs::read(&path).unwrap_err();
        assert!(!replaced(&missing, &path), "really missing");
        assert!(read(&path).is_err());
        std::fs::write(&path, "aaa.bbb.ccc").unwrap();
        assert!(replaced(&missing, &path), "there now");
        assert_eq!(read(&path).unwrap(), b"aaa.bbb.ccc");
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(!replaced(&denied, &path));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
