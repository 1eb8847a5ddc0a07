//! Support for tests/deploy.rs: read the deployment artifacts as a platform would, seed the
//! secrets they name, prepare the shared volume the way each platform prepares it, and run
//! the real binary and the app's reads as the users the artifacts name.
//!
//! The artifacts are the source of truth here: arguments, environment, users, mount paths
//! and the files the app reads all come from them. The only things replaced are those
//! that point outside this machine: the output directory (a scratch directory), the AWS
//! endpoint (LocalStack), and the identity plumbing a platform injects (a token file, a
//! loopback credentials server).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::localstack::Seeder;
use super::{Run, Scratch, endpoint};

pub const DEFAULT_ACCOUNT: &str = "000000000000";

/// The repository: the test kit lives in its `testkit/` directory.
pub fn repo() -> PathBuf {
    let kit = Path::new(env!("CARGO_MANIFEST_DIR"));
    kit.parent()
        .expect("testkit/ is inside the repository")
        .to_owned()
}

pub fn read(path: &str) -> String {
    fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

pub fn json(path: &str) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `kubectl kustomize DIR`, as a list of objects.
pub fn kustomize(dir: &str) -> Vec<Value> {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join(dir))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running kubectl kustomize (is kubectl installed?): {e}"));
    assert!(
        output.status.success(),
        "kubectl kustomize {dir} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("parsing kustomize output of {dir}: {e}"))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

pub fn str_at<'v>(value: &'v Value, pointer: &str) -> &'v str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value:#}"))
}

pub fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    item.as_str()
                        .unwrap_or_else(|| panic!("not a string: {item}"))
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The tag of an image reference, and its name without registry or tag.
pub fn image_parts(image: &str) -> (&str, &str) {
    let (path, tag) = image
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .unwrap_or_else(|| panic!("image {image} has no tag"));
    (path.rsplit('/').next().unwrap(), tag)
}

/// Numeric identities of a process: uid, primary gid, supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Ids {
    /// Docker's and ECS's `user: "UID:GID"`, which must be numeric here.
    pub fn docker(user: &str) -> Ids {
        let (uid, gid) = user
            .split_once(':')
            .unwrap_or_else(|| panic!("user {user:?} must be numeric UID:GID"));
        let number = |s: &str| {
            s.parse()
                .unwrap_or_else(|_| panic!("user {user:?} must be numeric UID:GID"))
        };
        Ids {
            uid: number(uid),
            gid: number(gid),
            groups: Vec::new(),
        }
    }
}

/// How the platform creates the shared volume before any container writes to it.
#[derive(Debug, Clone, Copy)]
pub enum Volume {
    /// Kubernetes `emptyDir {medium: Memory}`: tmpfs, mode 0777, and with an fsGroup
    /// owned by that group with the setgid bit, as the kubelet sets it up.
    EmptyDir { fs_group: Option<u32> },
    /// A Docker `local` volume of type tmpfs with `uid=,gid=,mode=` options.
    DockerTmpfs { uid: u32, gid: u32, mode: u32 },
    /// An ECS Fargate bind mount: on disk, a copy of the image's directory at that path.
    FargateBind { uid: u32, gid: u32, mode: u32 },
}

impl Volume {
    /// The tmpfs options of a Docker volume's `o` (size=1m,uid=...,gid=...,mode=...);
    /// Docker's and tmpfs's defaults where absent (root, 1777).
    pub fn docker_tmpfs(options: &str) -> Volume {
        let get = |key: &str| {
            options
                .split(',')
                .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        };
        Volume::DockerTmpfs {
            uid: get("uid").map_or(0, |v| v.parse().unwrap()),
            gid: get("gid").map_or(0, |v| v.parse().unwrap()),
            mode: get("mode").map_or(0o1777, |v| u32::from_str_radix(v, 8).unwrap()),
        }
    }
}

/// A directory prepared as the platform would prepare the volume, removed when dropped.
pub struct VolumeDir {
    pub path: PathBuf,
    tmpfs: Option<Scratch>,
}

impl VolumeDir {
    pub fn new(volume: Volume, tag: &str) -> VolumeDir {
        let (dir, path) = match volume {
            Volume::FargateBind { .. } => {
                let path = super::disk_dir().join(super::unique(tag).replace('/', "-"));
                fs::create_dir_all(&path).unwrap();
                (None, path)
            }
            _ => {
                let scratch = Scratch::tmpfs(tag);
                let path = scratch.path.clone();
                (Some(scratch), path)
            }
        };
        let (uid, gid, mode) = match volume {
            Volume::EmptyDir { fs_group: Some(g) } => (0, g, 0o2777),
            Volume::EmptyDir { fs_group: None } => (0, 0, 0o777),
            Volume::DockerTmpfs { uid, gid, mode } | Volume::FargateBind { uid, gid, mode } => {
                (uid, gid, mode)
            }
        };
        if is_root() {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        VolumeDir { path, tmpfs: dir }
    }
}

impl Drop for VolumeDir {
    fn drop(&mut self) {
        if self.tmpfs.is_none() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Whether this process runs as root (the owner of /proc/self is the effective uid).
pub fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The output of one secret-sidecar invocation as an artifact describes it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub what: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub user: Ids,
}

impl Invocation {
    /// The same invocation with `--refresh` (argument or variable) set to `interval`: a
    /// refresh test cannot wait the deployed one.
    pub fn refreshing_every(&self, interval: &str) -> Invocation {
        let args = self.args.iter().map(|a| match a.starts_with("--refresh=") {
            true => format!("--refresh={interval}"),
            false => a.clone(),
        });
        let env = self.env.iter().map(|(n, v)| match n.as_str() {
            "SECRET_SIDECAR_REFRESH" => (n.clone(), interval.to_owned()),
            _ => (n.clone(), v.clone()),
        });
        Invocation {
            args: args.collect(),
            env: env.collect(),
            ..self.clone()
        }
    }

    /// The value of `--NAME=V`, `--NAME V`, or its `SECRET_SIDECAR_*` variable.
    pub fn option(&self, name: &str) -> Option<String> {
        let flag = format!("--{name}");
        let mut args = self.args.iter();
        while let Some(arg) = args.next() {
            if let Some(value) = arg.strip_prefix(&format!("{flag}=")) {
                return Some(value.to_owned());
            }
            if *arg == flag {
                return args.next().cloned();
            }
        }
        let var = format!("SECRET_SIDECAR_{}", name.to_uppercase().replace('-', "_"));
        self.env_var(&var)
    }

    pub fn env_var(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// Every `--secret` value, from the arguments and the environment variable.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut args = self.args.iter();
        while let Some(arg) = args.next() {
            if let Some(value) = arg.strip_prefix("--secret=") {
                out.push(value.to_owned());
            } else if arg == "--secret" {
                out.push(args.next().expect("--secret needs a value").clone());
            }
        }
        if let Some(list) = self.env_var("SECRET_SIDECAR_SECRET") {
            out.extend(list.split(',').map(str::to_owned));
        }
        out
    }

    /// The arguments and environment with the output directory replaced by `dir`.
    fn redirected(&self, dir: &Path) -> (Vec<String>, Vec<(String, String)>) {
        let dir = dir.display().to_string();
        let mut args = Vec::new();
        let mut iter = self.args.iter();
        while let Some(arg) = iter.next() {
            if arg.starts_with("--output-dir=") {
                args.push(format!("--output-dir={dir}"));
            } else if arg == "--output-dir" {
                iter.next();
                args.push(format!("--output-dir={dir}"));
            } else {
                args.push(arg.clone());
            }
        }
        let env = self
            .env
            .iter()
            .map(|(name, value)| match name.as_str() {
                "SECRET_SIDECAR_OUTPUT_DIR" => (name.clone(), dir.clone()),
                _ => (name.clone(), value.clone()),
            })
            .collect();
        (args, env)
    }

    pub fn region(&self) -> String {
        self.env_var("AWS_REGION")
            .or_else(|| self.env_var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_owned())
    }
}

/// What the app reads: the paths its command names under its mount of the volume.
#[derive(Debug, Clone)]
pub struct Reader {
    pub what: String,
    pub mount_path: String,
    pub read_only: bool,
    pub paths: Vec<String>,
    pub user: Ids,
}

impl Reader {
    /// Finds the paths under `mount_path` in the app's command strings.
    pub fn new(
        what: &str,
        command: &[String],
        mount_path: &str,
        read_only: bool,
        user: Ids,
    ) -> Reader {
        let prefix = format!("{}/", mount_path.trim_end_matches('/'));
        let mut paths: Vec<String> = Vec::new();
        for part in command {
            let mut rest = part.as_str();
            while let Some(at) = rest.find(&prefix) {
                let tail = &rest[at..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || "._-/".contains(c)))
                    .unwrap_or(tail.len());
                let path = tail[..end].to_owned();
                if path.len() > prefix.len() && !paths.contains(&path) {
                    paths.push(path);
                }
                rest = &tail[end..];
            }
        }
        assert!(
            !paths.is_empty(),
            "{what}: the app's command names no file under {prefix}"
        );
        Reader {
            what: what.to_owned(),
            mount_path: mount_path.to_owned(),
            read_only,
            paths,
            user,
        }
    }
}

/// A parsed `FILE=SCHEME://NAME[?...][#KEY]`, for the schemes the artifacts deploy.
#[derive(Debug, Clone)]
pub struct SecretArg {
    pub file: String,
    /// What follows `SCHEME://` up to `?` or `#`: an AWS name, `VAULT/NAME`,
    /// `PROJECT/NAME`.
    pub name: String,
    pub key: Option<String>,
}

impl SecretArg {
    pub fn parse(arg: &str, scheme: &str) -> SecretArg {
        let prefix = format!("{scheme}://");
        let at = arg.find(&prefix).unwrap_or_else(|| {
            panic!("{arg}: this deployment is tested with {prefix} references only")
        });
        let file = arg[..at].strip_suffix('=').unwrap_or_else(|| {
            panic!("{arg}: name the file (FILE=REF) so the app's path is explicit")
        });
        let reference = &arg[at + prefix.len()..];
        let (locator, key) = match reference.split_once('#') {
            Some((locator, key)) => (locator, Some(key.to_owned())),
            None => (reference, None),
        };
        let name = locator.split('?').next().unwrap();
        SecretArg {
            file: file.to_owned(),
            name: name.to_owned(),
            key,
        }
    }
}

/// The demo value stored for a secret: a JSON object when keys of it are referenced (one
/// string per key, nested for JSON Pointers), else a string. Deterministic, so that tests
/// seeding the same name at the same time agree.
pub fn demo_value(name: &str, keys: &[String]) -> String {
    if keys.is_empty() {
        return format!("demo value of {name}");
    }
    let mut root = serde_json::Map::new();
    for key in keys {
        let parts: Vec<&str> = match key.strip_prefix('/') {
            Some(pointer) => pointer.split('/').collect(),
            None => vec![key.as_str()],
        };
        let mut node = &mut root;
        for part in &parts[..parts.len() - 1] {
            node = node
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Default::default()))
                .as_object_mut()
                .unwrap();
        }
        node.insert(
            parts[parts.len() - 1].to_owned(),
            Value::String(format!("demo {name} {key}")),
        );
    }
    Value::Object(root).to_string()
}

/// The demo secrets an invocation names (all with `scheme`): the value to store under
/// each name, and what each published file must then contain.
pub struct DemoSecrets {
    pub stored: BTreeMap<String, String>,
    pub files: BTreeMap<String, Vec<u8>>,
}

impl DemoSecrets {
    pub fn of(invocation: &Invocation, scheme: &str) -> DemoSecrets {
        let secrets: Vec<SecretArg> = invocation
            .secrets()
            .iter()
            .map(|s| SecretArg::parse(s, scheme))
            .collect();
        assert!(!secrets.is_empty(), "{}: no --secret", invocation.what);
        let mut keys: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for secret in &secrets {
            let entry = keys.entry(&secret.name).or_default();
            if let Some(key) = &secret.key {
                entry.push(key.clone());
            }
        }
        let stored: BTreeMap<String, String> = keys
            .iter()
            .map(|(name, keys)| (name.to_string(), demo_value(name, keys)))
            .collect();
        let files = secrets
            .iter()
            .map(|secret| {
                let value = &stored[&secret.name];
                let content = match &secret.key {
                    None => value.clone(),
                    Some(key) => {
                        let json: Value = serde_json::from_str(value).unwrap();
                        let pointer = if key.starts_with('/') {
                            key.clone()
                        } else {
                            format!("/{key}")
                        };
                        json.pointer(&pointer).unwrap().as_str().unwrap().to_owned()
                    }
                };
                (secret.file.clone(), content.into_bytes())
            })
            .collect();
        DemoSecrets { stored, files }
    }
}

/// Stores every secret `invocation` names in LocalStack under exactly that name, in its
/// region and `account` (create, or a new version if it exists), and returns what each
/// published file must contain.
pub fn seed(invocation: &Invocation, account: &str) -> BTreeMap<String, Vec<u8>> {
    let demo = DemoSecrets::of(invocation, "aws");
    for name in demo.stored.keys() {
        assert!(
            !name.starts_with("arn:"),
            "{}: an ARN cannot be recreated in LocalStack; name the secret in examples",
            invocation.what
        );
    }
    let mut seeder = Seeder::in_account(account);
    for (name, value) in &demo.stored {
        seeder.upsert_in(&invocation.region(), name, value);
    }
    demo.files
}

/// The secret-sidecar binary, where `ids` can execute it: itself when every directory
/// above it is searchable by others, else a copy in `scratch`.
pub fn binary_for(binary: &Path, scratch: &Scratch) -> PathBuf {
    let reachable = binary
        .ancestors()
        .skip(1)
        .all(|dir| fs::metadata(dir).is_ok_and(|m| m.mode() & 0o001 != 0));
    if reachable || !is_root() {
        return binary.to_owned();
    }
    let copy = scratch.path.join("secret-sidecar");
    fs::copy(binary, &copy).unwrap();
    fs::set_permissions(&scratch.path, fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// Whether `program args`, run as `ids` with an empty environment (as an exec probe is),
/// exits 0.
pub fn exits_zero<I, S>(ids: &Ids, program: &Path, args: I) -> bool
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    command_as(ids, program)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap()
        .status
        .success()
}

/// `program args` as `ids` (through setpriv) when running as root, else as this user.
pub fn command_as(ids: &Ids, program: &Path) -> Command {
    if !is_root() {
        return Command::new(program);
    }
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={}", ids.uid))
        .arg(format!("--regid={}", ids.gid));
    if ids.groups.is_empty() {
        command.arg("--clear-groups");
    } else {
        let groups: Vec<String> = ids.groups.iter().map(u32::to_string).collect();
        command.arg(format!("--groups={}", groups.join(",")));
    }
    command.arg("--").arg(program);
    command
}

/// Runs the binary with the invocation's arguments and environment, the output directory
/// replaced by `out`, AWS requests sent to LocalStack, and `identity` (what the platform
/// injects) added. Nothing else of this process's environment leaks in.
pub fn run_sidecar(
    invocation: &Invocation,
    binary: &Path,
    out: &Path,
    identity: &[(&str, String)],
) -> Run {
    let mut command = sidecar_command(invocation, binary, out, identity);
    Run::from(command.output().expect("the binary runs"))
}

/// The command [`run_sidecar`] runs, for a test that keeps it running (refresh mode).
pub fn sidecar_command(
    invocation: &Invocation,
    binary: &Path,
    out: &Path,
    identity: &[(&str, String)],
) -> Command {
    let (args, env) = invocation.redirected(out);
    let mut command = command_as(&invocation.user, binary);
    command.args(&args).env_clear().stdin(Stdio::null());
    command.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command.env("HOME", "/nonexistent");
    command.env("AWS_CONFIG_FILE", "/nonexistent/aws-config");
    command.env(
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/aws-credentials",
    );
    command.env("AWS_EC2_METADATA_DISABLED", "true");
    for (name, value) in &env {
        command.env(name, value);
    }
    command.env("AWS_ENDPOINT_URL", endpoint());
    for (name, value) in identity {
        command.env(name, value);
    }
    command
}

/// Reads `path` (absolute, as the app sees it) from `volume` as the app's user would.
pub fn read_as_app(reader: &Reader, volume: &Path, path: &str) -> Result<Vec<u8>, String> {
    let relative = path
        .strip_prefix(&format!("{}/", reader.mount_path.trim_end_matches('/')))
        .unwrap();
    let host = volume.join(relative);
    let output = command_as(&reader.user, Path::new("/bin/cat"))
        .arg(&host)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The names of `SECRET_SIDECAR_*` variables the binary documents in `--help` and
/// `token --help`.
pub fn documented_env_vars(binary: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for args in [&["--help"][..], &["token", "--help"][..]] {
        let output = Command::new(binary).args(args).output().unwrap();
        let help = String::from_utf8_lossy(&output.stdout).into_owned();
        names.extend(help.split("env: ").skip(1).map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        }));
    }
    names
}
