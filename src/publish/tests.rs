//! The publisher's own tests; through the binary they are in tests/ too.

use super::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
    assert_eq!(
        mode, 0o2750,
        "0440 files need group search, nothing for others"
    );
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

fn file<'a>(path: &'a str, value: &'a SecretValue, mode: u32, owner: Option<Owner>) -> NewFile<'a> {
    NewFile {
        path,
        value,
        mode,
        owner,
    }
}

fn staged_mode(scratch: &Scratch, dir: &str) -> u32 {
    let staging = fs::read_link(scratch.0.join(DATA_LINK)).unwrap();
    fs::symlink_metadata(scratch.0.join(staging).join(dir))
        .unwrap()
        .mode()
        & 0o7777
}

#[test]
fn directories_open_only_to_the_readers_of_their_files() {
    let scratch = Scratch::new("dir-modes");
    let publisher = Publisher::open(&scratch.0, false).unwrap();
    let value = SecretValue::from_string("v".into());
    let me = Owner {
        uid: fs::metadata(&scratch.0).unwrap().uid(),
        gid: None,
    };
    publisher
        .publish(&[
            file("private/key", &value, 0o400, None),
            file("group/a", &value, 0o440, None),
            file("group/deep/b", &value, 0o400, None),
            file("world/c", &value, 0o444, None),
            file("given/d", &value, 0o400, Some(me)),
            file("top", &value, 0o400, None),
        ])
        .unwrap();
    assert_eq!(staged_mode(&scratch, "private"), 0o700);
    assert_eq!(staged_mode(&scratch, "group"), 0o750);
    assert_eq!(staged_mode(&scratch, "group/deep"), 0o700);
    assert_eq!(staged_mode(&scratch, "world"), 0o755);
    assert_eq!(staged_mode(&scratch, "given"), 0o755);
    // The staging directory serves every file of the set.
    assert_eq!(staged_mode(&scratch, ""), 0o755);
    assert_eq!(fs::read(scratch.0.join("group/deep/b")).unwrap(), b"v");
}

#[test]
fn a_data_link_to_a_link_is_not_trusted() {
    let scratch = Scratch::new("data-to-link");
    let outside = Scratch::new("data-to-link-outside");
    symlink(&outside.0, scratch.0.join("..sidecar.1.2.3.0")).unwrap();
    symlink("..sidecar.1.2.3.0", scratch.0.join(DATA_LINK)).unwrap();
    let publisher = Publisher::open(&scratch.0, false).unwrap();
    let err = publish(&publisher, &[("a", "1")]).unwrap_err();
    assert_eq!(Failure::of(&err), Failure::Output);
    assert!(format!("{err:#}").contains("not a directory"), "{err:#}");
    assert!(names(&outside.0).is_empty());
}

#[test]
fn a_second_writer_waits_for_the_first() {
    let scratch = Scratch::new("lock");
    let publisher = Publisher::open(&scratch.0, false).unwrap();
    // Another writer holds the lock for a moment, through its own open of the directory.
    let other = rustix::fs::open(&scratch.0, at::dir_flags(), Mode::empty()).unwrap();
    rustix::fs::flock(&other, FlockOperation::LockExclusive).unwrap();
    let released = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        rustix::fs::flock(&other, FlockOperation::Unlock).unwrap();
    });
    let started = Instant::now();
    publish(&publisher, &[("a", "1")]).unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "did not wait"
    );
    released.join().unwrap();
    assert_eq!(fs::read_to_string(scratch.0.join("a")).unwrap(), "1");
}

/// A process that can write the volume keeps swapping every staging directory it sees for
/// a link to a directory outside, while thousands of files are published. Whatever it
/// manages, nothing may land outside, and a publish that reports success must have put
/// its whole set behind `..data`.
#[test]
fn a_staging_directory_swapped_for_a_link_redirects_nothing() {
    let scratch = Scratch::new("race");
    let outside = Scratch::new("race-outside");
    let publisher = Publisher::open(&scratch.0, false).unwrap();
    let count = 3000;
    let paths: Vec<String> = (0..count).map(|i| format!("set/f{i:04}")).collect();
    let value = SecretValue::from_string("sentinel".into());
    let files: Vec<NewFile<'_>> = paths
        .iter()
        .map(|path| file(path, &value, 0o440, None))
        .collect();

    // The link's target mirrors the set's layout, so a write that followed it would land.
    fs::create_dir(outside.0.join("set")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let racer = {
        let (dir, outside, stop, swaps) = (
            scratch.0.clone(),
            outside.0.clone(),
            stop.clone(),
            swaps.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for entry in fs::read_dir(&dir).unwrap().flatten() {
                    let name = entry.file_name().into_string().unwrap();
                    let path = entry.path();
                    let real_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
                    if name.starts_with(STAGING_PREFIX) && real_dir {
                        let moved = dir.join(format!("moved-{}", swaps.load(Ordering::Relaxed)));
                        if fs::rename(&path, &moved).is_ok() {
                            let _ = symlink(&outside, &path);
                            swaps.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        })
    };
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        outcomes.push(publisher.publish(&files).map_err(|e| format!("{e:#}")));
    }
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();

    assert!(
        swaps.load(Ordering::Relaxed) > 0,
        "the racer never swapped anything"
    );
    let landed = names(&outside.0.join("set"));
    assert!(landed.is_empty(), "{} files landed outside", landed.len());
    for outcome in &outcomes {
        if let Err(err) = outcome {
            assert!(err.contains("another process is changing"), "{err}");
        }
    }
    if outcomes.iter().any(Result::is_ok) && outcomes.last().unwrap().is_ok() {
        let listed = fs::read_dir(scratch.0.join("set")).unwrap().count();
        assert_eq!(listed, count, "a successful publish left a partial set");
    }
}
