//! Issue 14, medium 2 and three low items: the publisher through the binary, on a volume
//! another process can write. A staging directory swapped for a link during a publish of
//! thousands of files redirects nothing; two binaries publishing at once take turns and
//! leave one complete set; directories are only as open as their files' readers need;
//! after the swap, tidying up is best-effort.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testkit::process::is_root;
use testkit::secretsmanager::SecretsManager;
use testkit::{Run, Scratch, Sidecar};

/// Members of the exploded secret: enough files that a publish takes a while (about half a
/// second for the debug build).
const MEMBERS: usize = 2000;

/// A JSON object of [`MEMBERS`] members, each value naming its member and `tag`.
fn members(tag: &str) -> String {
    let object: serde_json::Map<String, serde_json::Value> = (0..MEMBERS)
        .map(|i| (format!("m{i:04}"), format!("{tag}-{i}").into()))
        .collect();
    serde_json::Value::Object(object).to_string()
}

/// The binary publishing `aws://NAME` exploded as `set/` into `out`.
fn explode(store: &SecretsManager, name: &str, out: &Path) -> Sidecar {
    store
        .configure(testkit::sidecar!())
        .arg("--secret")
        .arg(format!("set=aws://{name}?format=explode"))
        .arg("--output-dir")
        .arg(out)
}

/// The `..sidecar.*` entries of `dir`.
fn staging_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("..sidecar."))
        .collect();
    names.sort();
    names
}

/// Fails unless `set` holds one complete set, of one of the tags.
#[track_caller]
fn complete_set(set: &Path, tags: &[&str]) {
    let count = fs::read_dir(set).map_or(0, |entries| entries.count());
    assert_eq!(count, MEMBERS, "{}: a partial set", set.display());
    let first = fs::read_to_string(set.join("m0000")).unwrap();
    let tag = tags
        .iter()
        .find(|tag| first == format!("{tag}-0"))
        .unwrap_or_else(|| panic!("{first:?} is from none of {tags:?}"));
    for i in [1, MEMBERS / 2, MEMBERS - 1] {
        let value = fs::read_to_string(set.join(format!("m{i:04}"))).unwrap();
        assert_eq!(value, format!("{tag}-{i}"), "a mixed set");
    }
}

/// A process that can write the volume: it renames every real staging directory it sees
/// being written into `graveyard`, puts a link to `outside` in its place, and remembers
/// where each went; again and again (`None`), or once after a while. It leaves alone the
/// set `..data` names: replacing what was published is another attack than redirecting a
/// publish, and one no publisher can prevent.
struct Racer {
    stop: Arc<AtomicBool>,
    moved: Arc<Mutex<BTreeMap<String, PathBuf>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Racer {
    fn start(dir: &Path, outside: &Path, graveyard: &Path, once_after: Option<Duration>) -> Racer {
        let stop = Arc::new(AtomicBool::new(false));
        let moved = Arc::new(Mutex::new(BTreeMap::new()));
        let (dir, outside, graveyard) = (dir.to_owned(), outside.to_owned(), graveyard.to_owned());
        let (halt, log) = (Arc::clone(&stop), Arc::clone(&moved));
        let thread = std::thread::spawn(move || {
            if let Some(wait) = once_after {
                std::thread::sleep(wait);
            }
            while !halt.load(Ordering::Relaxed) {
                for name in staging_names(&dir) {
                    let path = dir.join(&name);
                    let live =
                        fs::read_link(dir.join("..data")).is_ok_and(|t| t == Path::new(&name));
                    if live || !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                        continue;
                    }
                    let grave = graveyard.join(testkit::unique_id('-'));
                    if fs::rename(&path, &grave).is_ok() {
                        let _ = symlink(&outside, &path);
                        log.lock().unwrap().insert(name, grave);
                    }
                }
                if once_after.is_some() {
                    break;
                }
            }
        });
        Racer {
            stop,
            moved,
            thread,
        }
    }

    /// Stops, and returns where each swapped staging directory went.
    fn stop(self) -> BTreeMap<String, PathBuf> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        Arc::try_unwrap(self.moved).unwrap().into_inner().unwrap()
    }
}

/// The race the unit test in src/publish/tests.rs runs in-process, through the binary:
/// whatever the racer manages, nothing lands outside the output directory, a run it
/// disturbed fails as an output error, and a run that exits 0 has its whole set behind
/// `..data`.
#[test]
fn a_staging_directory_swapped_for_a_link_redirects_nothing() {
    let store = SecretsManager::start();
    store.put("big", members("v"));
    let outside = Scratch::tmpfs("race-outside");
    fs::create_dir(outside.path.join("set")).unwrap();
    let graveyard = Scratch::tmpfs("race-graveyard");
    let (mut swaps, mut published) = (0, 0);
    // A run takes about a second here; a racer acting once may find nothing to swap yet,
    // or come after the run, so that some runs succeed.
    let paces = [None, Some(300), None, Some(900)];
    for pace in paces {
        let out = Scratch::tmpfs("race");
        let once = pace.map(Duration::from_millis);
        let racer = Racer::start(&out.path, &outside.path, &graveyard.path, once);
        let run = explode(&store, "big", &out.path).run();
        let moved = racer.stop();
        swaps += moved.len();
        let landed = fs::read_dir(outside.path.join("set")).unwrap().count();
        assert_eq!(
            landed, 0,
            "{landed} files landed outside the output directory"
        );
        match run.code {
            0 => {
                published += 1;
                // What the run published was not swapped: that would have failed it.
                let live = fs::read_link(out.path.join("..data")).unwrap();
                let live = live.to_str().unwrap();
                assert!(!moved.contains_key(live), "exit 0 with {live} swapped");
                complete_set(&out.path.join("set"), &["v"]);
            }
            // Fails closed as an output error; what it says depends on the step the racer
            // hit ("another process is changing this directory" at the checks, "Not a
            // directory" when a directory was swapped between its mkdir and its open).
            _ => {
                run.expect_code(6);
            }
        }
    }
    eprintln!(
        "{swaps} staging directories swapped; {published} of {} runs published",
        paces.len()
    );
    assert!(swaps > 0, "the racer never swapped anything");
}

/// Two binaries publishing into one directory at once: with the lock, both succeed, one
/// after the other, and one complete set is left (without it, each deleted or orphaned
/// the other's staging directory).
#[test]
fn two_writers_take_turns_and_leave_one_complete_set() {
    // Both runs get their values at the same moment, so their publishes overlap.
    let store = SecretsManager::answering_together(2);
    store.put("a", members("a"));
    store.put("b", members("b"));
    {
        let out = Scratch::tmpfs("two-writers");
        let first = explode(&store, "a", &out.path).spawn();
        let second = explode(&store, "b", &out.path).spawn();
        let (first, second): (Run, Run) = (first.wait(), second.wait());
        first.expect_code(0);
        second.expect_code(0);
        let left = staging_names(&out.path);
        assert_eq!(left.len(), 1, "staging directories left: {left:?}");
        let live = fs::read_link(out.path.join("..data")).unwrap();
        assert_eq!(live.to_str(), Some(left[0].as_str()));
        complete_set(&out.path.join("set"), &["a", "b"]);
    }
}

/// A directory of the set is as open as its files' readers need: group search for the
/// default 0440, nothing for 0400, and others too when files go to another owner. (The
/// staging directory itself holds the manifest, 0444, so it stays 0755.)
#[test]
fn directories_are_only_as_open_as_their_files_readers_need() {
    let store = SecretsManager::start();
    store.put("tls", r#"{"crt":"certificate","key":"private key"}"#);
    let uid = fs::metadata("/proc/self").unwrap().uid();
    let cases: [(&[&str], u32); 3] = [
        (&[], 0o750),
        (&["--mode", "0400"], 0o700),
        (&["--mode", "0400", "--owner", &uid.to_string()], 0o755),
    ];
    for (args, expected) in cases {
        let out = Scratch::tmpfs("dir-modes");
        explode(&store, "tls", &out.path)
            .args(args)
            .run()
            .expect_code(0);
        let mode = fs::metadata(out.path.join("set")).unwrap().mode() & 0o7777;
        assert_eq!(mode, expected, "set/ with {args:?}: {mode:04o}");
        assert_eq!(out.read("set/key"), b"private key");
    }
}

/// Root only (a mount in a private namespace). The previous set's staging directory is a
/// mount point, so removing it after the swap fails: the new set is live, so the run
/// warns and exits 0 (it used to exit 6 with the new set published).
#[test]
fn tidying_up_after_the_swap_is_best_effort() {
    if !is_root() {
        eprintln!("skipped: not root, so no private mount namespace to make removal fail in");
        return;
    }
    let store = SecretsManager::start();
    store.put("db", "first");
    let out = Scratch::tmpfs("best-effort");
    // The same run twice in one private mount namespace, a tmpfs mounted over the first
    // set's staging directory in between.
    let script = r#"
        "$@"; first=$?
        mount -t tmpfs tmpfs "$OUT/$(readlink "$OUT/..data")" || exit 99
        "$@"; second=$?
        echo "== exits $first $second" >&2"#;
    let run = store
        .configure(testkit::sidecar!())
        .env("OUT", &out.path)
        .args(["--secret", "db=aws://db", "--output-dir"])
        .arg(&out.path)
        .run_under(&["unshare", "-m", "sh", "-c", script, "sh"]);
    let exits = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("== exits "))
        .unwrap_or_else(|| panic!("the script did not finish:\n{}", run.stderr));
    assert_eq!(exits, "0 0", "{}", run.stderr);
    run.expect_stderr("removing the previous set");
    // Outside the namespace: the first set is still there, and the second is live.
    let left = staging_names(&out.path);
    assert_eq!(left.len(), 2, "{left:?}");
    let live = fs::read_link(out.path.join("..data")).unwrap();
    assert_eq!(live.to_str(), Some(left[1].as_str()));
    assert_eq!(out.read("db"), b"first");
}
