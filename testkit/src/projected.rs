//! A projected service account token laid out the way kubelet's AtomicWriter lays out a
//! projected volume, and rotated the way it rotates one:
//!
//! ```text
//! DIR/token   -> ..data/token
//! DIR/..data  -> ..2026_12_02_14_03_37.000000042      swapped with one rename(2)
//! DIR/..2026_12_02_14_03_37.000000042/token
//! ```
//!
//! A rotation writes the new token into a fresh timestamped directory, points a new
//! `..data_tmp` link at it, renames that over `..data`, and removes the previous
//! directory at once, as kubelet does. [`Projected::rotate`] does this over and over on a
//! thread, so that a reader opening `DIR/token` races every step of it; every token ever
//! written is kept so that a fake can accept exactly those and a test can check that what
//! reached it was one of them, whole.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Scratch;

/// The tokens written so far, shared with the fakes that accept them.
pub type Written = Arc<Mutex<BTreeSet<String>>>;

pub struct Projected {
    /// `DIR/token`, the path a pod is given.
    pub path: PathBuf,
    written: Written,
    /// The generation `..data` points at before the first rotation.
    first: String,
    stop: Arc<AtomicBool>,
    rotator: Mutex<Option<JoinHandle<usize>>>,
    dir: Scratch,
}

impl Projected {
    /// A projected volume holding the token `first` (on tmpfs, as kubelet's volumes are).
    pub fn new(first: String) -> Projected {
        let dir = Scratch::tmpfs("projected");
        let generation = generation(0);
        fs::create_dir(dir.path.join(&generation)).unwrap();
        fs::write(dir.path.join(&generation).join("token"), &first).unwrap();
        symlink(&generation, dir.path.join("..data")).unwrap();
        symlink("..data/token", dir.path.join("token")).unwrap();
        Projected {
            path: dir.path.join("token"),
            written: Arc::new(Mutex::new(BTreeSet::from([first]))),
            first: generation,
            stop: Arc::new(AtomicBool::new(false)),
            rotator: Mutex::new(None),
            dir,
        }
    }

    /// The set of tokens written so far, live (for a fake's accept check).
    pub fn written(&self) -> Written {
        Arc::clone(&self.written)
    }

    /// Starts rotating on a thread, as fast as it can, each new token from `next` (given
    /// the rotation's number), until [`Projected::stop`].
    pub fn rotate(&self, next: impl Fn(usize) -> String + Send + 'static) {
        let (root, written, stop, mut previous) = (
            self.dir.path.clone(),
            Arc::clone(&self.written),
            Arc::clone(&self.stop),
            self.first.clone(),
        );
        *self.rotator.lock().unwrap() = Some(std::thread::spawn(move || {
            let mut rotations = 0;
            while !stop.load(Ordering::SeqCst) {
                rotations += 1;
                let token = next(rotations);
                // Known before any reader can see it, so a fake never refuses it.
                written.lock().unwrap().insert(token.clone());
                let current = generation(rotations);
                fs::create_dir(root.join(&current)).unwrap();
                fs::write(root.join(&current).join("token"), token).unwrap();
                symlink(&current, root.join("..data_tmp")).unwrap();
                fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
                fs::remove_dir_all(root.join(&previous)).unwrap();
                previous = current;
            }
            rotations
        }));
    }

    /// Stops rotating; returns how many rotations there were.
    pub fn stop(&self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let rotator = self.rotator.lock().unwrap().take();
        rotator.map(|rotator| rotator.join().unwrap()).unwrap_or(0)
    }
}

impl Drop for Projected {
    fn drop(&mut self) {
        self.stop();
    }
}

/// kubelet's name for a generation: `..` and the UTC time to the second, then a unique
/// suffix (here the rotation number).
fn generation(number: usize) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (year, month, day, hour, minute, second) = super::clock::civil(now);
    format!("..{year:04}_{month:02}_{day:02}_{hour:02}_{minute:02}_{second:02}.{number:09}")
}
