//! What the integration tests under `tests/` share: run the real binary with a clean
//! environment, make scratch directories, scan output for leaked secrets, and the protocol
//! fakes every provider's tests and the shared conformance and fault tables run against.
//!
//! A crate of its own rather than a `mod support;` in each test, so that it is compiled
//! once instead of once per test binary, and so that each module sits behind the cargo
//! feature of the provider it serves (features mirror the main crate's: `aws`, `azure`,
//! `gcp`). Only [`localstack`] imports the AWS SDK.
//!
//! Cargo tells only an integration test, at compile time, where it put the binary under
//! test; [`sidecar!`] and [`binary!`] expand there. LocalStack must be running for the
//! tests that seed it ([`localstack::Seeder`]); `scripts/test.sh` starts it, and
//! `LOCALSTACK_ENDPOINT` points the tests at another instance.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub mod apiserver;
#[cfg(feature = "azure")]
pub mod azure;
pub mod clock;
#[cfg(any(feature = "aws", feature = "azure", feature = "gcp"))]
pub mod conformance;
#[cfg(feature = "aws")]
pub mod deploy;
#[cfg(any(feature = "aws", feature = "azure", feature = "gcp"))]
pub mod faults;
#[cfg(feature = "gcp")]
pub mod gcp;
pub mod http;
#[cfg(feature = "aws")]
pub mod kubelet;
#[cfg(feature = "aws")]
pub mod localstack;
pub mod netns;
#[cfg(feature = "aws")]
pub mod oauth2;
pub mod pki;
#[cfg(feature = "aws")]
pub mod pod_identity;
pub mod process;
pub mod projected;
pub mod refresh;
#[cfg(feature = "aws")]
pub mod secretsmanager;
#[cfg(feature = "aws")]
pub mod ssm;
#[cfg(feature = "aws")]
pub mod sts;
pub mod tls;
#[cfg(feature = "aws")]
pub mod webhook;

/// The binary under test as a [`Sidecar`], with a clean environment aimed at LocalStack.
#[macro_export]
macro_rules! sidecar {
    () => {
        $crate::Sidecar::new($crate::binary!())
    };
}

/// The path of the binary under test: `env!("CARGO_BIN_EXE_secret-sidecar")`, which only
/// an integration test can read, or the one `SECRET_SIDECAR_TEST_BINARY` names.
#[macro_export]
macro_rules! binary {
    () => {
        $crate::under_test(env!("CARGO_BIN_EXE_secret-sidecar"))
    };
}

/// `built`, the binary cargo built, unless `SECRET_SIDECAR_TEST_BINARY` names another: a
/// release build, or a build without a fix, to see the fix's test fail.
pub fn under_test(built: &'static str) -> &'static Path {
    static OTHER: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let other =
        OTHER.get_or_init(|| std::env::var_os("SECRET_SIDECAR_TEST_BINARY").map(PathBuf::from));
    other.as_deref().unwrap_or(Path::new(built))
}

pub const REGION: &str = "us-east-1";

/// A value that must never appear anywhere but in the published file.
pub const SENTINEL: &str = "sentinel-7c1f9a-never-log-me";

pub fn endpoint() -> String {
    std::env::var("LOCALSTACK_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".to_owned())
}

/// A name no other test (or earlier run) uses.
pub fn unique(tag: &str) -> String {
    format!("test/{tag}-{}", unique_id('-'))
}

/// Process id, a counter and the clock's nanoseconds, joined by `separator`: unique within
/// and across test runs, and made only of digits and the separator.
pub fn unique_id(separator: char) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}{separator}{count}{separator}{nanos}", std::process::id())
}

/// The binary under test with a clean environment aimed at LocalStack; [`sidecar!`] makes
/// one.
pub struct Sidecar {
    binary: PathBuf,
    args: Vec<OsString>,
    env: BTreeMap<String, OsString>,
}

impl Sidecar {
    pub fn new(binary: &Path) -> Sidecar {
        let mut env = BTreeMap::new();
        let mut set = |name: &str, value: OsString| {
            env.insert(name.to_owned(), value);
        };
        set("PATH", std::env::var_os("PATH").unwrap_or_default());
        set("HOME", std::env::temp_dir().into_os_string());
        set("AWS_ENDPOINT_URL", endpoint().into());
        set("AWS_REGION", REGION.into());
        set("AWS_ACCESS_KEY_ID", "test".into());
        set("AWS_SECRET_ACCESS_KEY", "test".into());
        // No profile files, no instance metadata: only what a test sets is used.
        set("AWS_CONFIG_FILE", "/nonexistent/aws-config".into());
        set(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials".into(),
        );
        set("AWS_EC2_METADATA_DISABLED", "true".into());
        Sidecar {
            binary: binary.to_owned(),
            args: Vec::new(),
            env,
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Sidecar
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn arg(self, arg: impl AsRef<OsStr>) -> Sidecar {
        self.args([arg])
    }

    pub fn env(mut self, name: &str, value: impl AsRef<OsStr>) -> Sidecar {
        self.env.insert(name.to_owned(), value.as_ref().to_owned());
        self
    }

    pub fn env_remove(mut self, name: &str) -> Sidecar {
        self.env.remove(name);
        self
    }

    /// Web identity only: no static keys, STS at `sts_url` (a fake), the role `role`. What
    /// token the exchange uses is the test's part.
    pub fn assuming_role(self, sts_url: &str, role: impl AsRef<OsStr>) -> Sidecar {
        self.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("AWS_ENDPOINT_URL_STS", sts_url)
            .env("AWS_ROLE_ARN", role)
    }

    pub fn run(self) -> Run {
        let mut command = Command::new(&self.binary);
        command.args(&self.args);
        self.finish(command)
    }

    /// Runs through `sh` with the given umask, to show modes do not depend on it.
    pub fn run_with_umask(self, umask: &str) -> Run {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(&self.binary)
            .args(&self.args);
        self.finish(command)
    }

    /// Runs under another program that then execs the binary, e.g. `setpriv` to drop to
    /// a non-root user: `run_under(&["setpriv", "--reuid", "65532", ...])`.
    pub fn run_under(self, wrapper: &[&str]) -> Run {
        let mut command = Command::new(wrapper[0]);
        command
            .args(&wrapper[1..])
            .arg(&self.binary)
            .args(&self.args);
        self.finish(command)
    }

    /// The command with its clean environment, for a test that must control the process
    /// itself (spawn it and signal it, say).
    pub fn command(self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(&self.args)
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null());
        command
    }

    fn finish(self, mut command: Command) -> Run {
        command.env_clear().envs(&self.env).stdin(Stdio::null());
        Run::from(command.output().expect("the binary runs"))
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}\n--- stderr ---\n{}",
            self.code, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn expect_stderr(&self, needle: &str) -> &Run {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts the secret appears in no form in anything the process printed.
    #[track_caller]
    pub fn expect_no_leak(&self, secret: &[u8]) -> &Run {
        for form in leak_forms(secret) {
            assert!(
                !self.stdout.contains(&form) && !self.stderr.contains(&form),
                "output contains the secret (as {form:?})"
            );
        }
        self
    }
}

/// The forms a value could take in a log: as is, JSON-escaped, hex, and base64 at each of
/// the three alignments it could have inside a longer encoded string.
pub fn leak_forms(secret: &[u8]) -> Vec<String> {
    let mut forms = vec![
        String::from_utf8_lossy(secret).into_owned(),
        serde_json::to_string(&String::from_utf8_lossy(secret))
            .unwrap()
            .trim_matches('"')
            .to_owned(),
        secret.iter().map(|b| format!("{b:02x}")).collect(),
    ];
    for offset in 0..3 {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(secret);
        let encoded = base64(&padded);
        // Drop the characters that mix in the padding bytes or the end.
        let start = (offset * 4).div_ceil(3) + 1;
        let end = encoded.trim_end_matches('=').len().saturating_sub(2);
        if end > start {
            forms.push(encoded[start..end].to_owned());
        }
    }
    forms.retain(|form| form.len() >= 8);
    forms
}

pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A fresh directory on tmpfs (/dev/shm), removed when dropped.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn tmpfs(tag: &str) -> Scratch {
        Scratch::under(Path::new("/dev/shm"), tag)
    }

    /// A directory on a disk, not tmpfs, that every user can reach (see [`disk_dir`]).
    pub fn disk(tag: &str) -> Scratch {
        Scratch::under(&disk_dir(), tag)
    }

    fn under(parent: &Path, tag: &str) -> Scratch {
        let path = parent.join(unique(tag).replace('/', "-"));
        fs::create_dir_all(&path).unwrap();
        Scratch { path }
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        fs::read(self.path.join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
    }

    pub fn mode(&self, name: &str) -> u32 {
        fs::metadata(self.path.join(name)).unwrap().mode() & 0o7777
    }

    /// Every entry, recursively, as `path -> what it is`, links shown with their target.
    pub fn listing(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        list(&self.path, &self.path, &mut out);
        out
    }

    /// The names a reader sees at the top level, without the publisher's own entries.
    pub fn visible(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| !name.starts_with(".."))
            .collect();
        names.sort();
        names
    }

    #[track_caller]
    pub fn expect_empty(&self) {
        let listing = self.listing();
        assert!(
            listing.is_empty(),
            "expected an empty directory, found {listing:#?}"
        );
    }
}

/// A directory on a disk (not tmpfs) that every user can reach: the temporary directory,
/// or `/var/tmp` where that is tmpfs.
pub fn disk_dir() -> PathBuf {
    for candidate in [std::env::temp_dir(), PathBuf::from("/var/tmp")] {
        if let Ok(stat) = rustix::fs::statfs(&candidate) {
            #[allow(clippy::unnecessary_cast)]
            if stat.f_type as i64 != 0x0102_1994 {
                return candidate;
            }
        }
    }
    panic!("no disk-backed temporary directory (both the temp dir and /var/tmp are tmpfs)")
}

fn list(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = path.strip_prefix(root).unwrap().display().to_string();
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            out.insert(
                name,
                format!("-> {}", fs::read_link(&path).unwrap().display()),
            );
        } else if kind.is_dir() {
            out.insert(name, "dir".to_owned());
            list(root, &path, out);
        } else {
            out.insert(
                name,
                format!("file {} bytes", entry.metadata().unwrap().len()),
            );
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A JWT-shaped token for the web-identity exchange. LocalStack does not check the
/// signature, so any three base64url parts do.
pub fn fake_jwt(subject: &str) -> String {
    let part = |json: &str| {
        base64(json.as_bytes())
            .replace('+', "-")
            .replace('/', "_")
            .trim_end_matches('=')
            .to_owned()
    };
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    format!(
        "{}.{}.{}",
        part(r#"{"alg":"RS256","typ":"JWT"}"#),
        part(&format!(
            r#"{{"iss":"https://oidc.example.test","sub":"{subject}","aud":"sts.amazonaws.com","exp":{exp}}}"#
        )),
        part("signature")
    )
}

/// A JWT's `sub` claim, read without checking anything.
pub fn jwt_subject(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    claims["sub"].as_str().unwrap().to_owned()
}
