//! The admission webhook under test and the independent tools that check its answers.
//!
//! [`Webhook`] runs the real binary's `webhook` mode on loopback with a certificate from
//! the test CA, and [`Webhook::post`] sends it a body with curl, which trusts only that
//! CA. [`review`] wraps a pod as the API server does; [`apply`] applies the JSON Patch
//! with Python's `jsonpatch` and [`validate`] checks a pod with `kubernetes-validate
//! --strict`, neither of them this project's code. [`tools`] installs those two once
//! (`scripts/webhook-tools.sh`).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::tls::{ca, ca_signed_pem};
use super::{Scratch, unique_id};

/// The image the webhook under test injects.
pub const IMAGE: &str = "registry.example.com/secret-sidecar:0.1.0";
/// The Kubernetes version patched pods are validated against: kubectl's here.
pub const KUBERNETES: &str = "1.32.0";

/// The virtualenv `bin` directory holding `jsonpatch` and `kubernetes-validate`.
pub fn tools() -> &'static Path {
    static TOOLS: OnceLock<PathBuf> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let script = super::deploy::repo().join("scripts/webhook-tools.sh");
        let output = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
    })
}

/// The webhook process, killed when dropped.
pub struct Webhook {
    pub port: u16,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    child: Child,
    stderr: Arc<Mutex<String>>,
    dir: Scratch,
}

impl Webhook {
    /// `secret-sidecar webhook` on loopback with a pair from the test CA and
    /// [`IMAGE`], `args` added, logging at trace level; returns once it serves.
    pub fn start(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Webhook {
        let dir = Scratch::tmpfs("webhook");
        let cert_file = dir.path.join("tls.crt");
        let key_file = dir.path.join("tls.key");
        let (cert, key) = ca_signed_pem("webhook first");
        fs::write(&cert_file, cert).unwrap();
        fs::write(&key_file, key).unwrap();
        let mut all = vec![
            "webhook".to_owned(),
            "--listen=127.0.0.1:0".to_owned(),
            format!("--tls-cert-file={}", cert_file.display()),
            format!("--tls-key-file={}", key_file.display()),
            format!("--image={IMAGE}"),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Webhook::launch(binary, &all, &env, &cert_file, &key_file, dir)
    }

    /// The binary with exactly `args` and `env` (a manifest's, its listen address made
    /// loopback port 0), serving `cert_file` and `key_file`; `dir` is kept for scratch.
    pub fn launch(
        binary: &Path,
        args: &[String],
        env: &[(String, String)],
        cert_file: &Path,
        key_file: &Path,
        dir: Scratch,
    ) -> Webhook {
        let mut command = Command::new(binary);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "trace")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the binary runs");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (sink, pipe) = (Arc::clone(&stderr), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let started = Instant::now();
        let port = loop {
            let text = stderr.lock().unwrap().clone();
            let address = text
                .lines()
                .filter(|l| l.contains("admission webhook serving"))
                .find_map(|l| {
                    // Text: address=127.0.0.1:PORT; JSON: "address":"127.0.0.1:PORT".
                    let rest = l.split("address").nth(1)?;
                    let rest = rest.trim_start_matches(['=', '"', ':']);
                    rest.split(['"', ' ']).next().map(str::to_owned)
                });
            if let Some(port) = address.and_then(|a| a.rsplit(':').next()?.parse().ok()) {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the webhook exited with {status} before serving:\n{text}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the webhook did not serve within 20 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Webhook {
            port,
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            child,
            stderr,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// Everything the process has logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// POSTs `body` to `path` with curl; the status and the body of the answer.
    pub fn post(&self, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let name = unique_id('-');
        let request = self.dir.path.join(format!("request-{name}"));
        let answer = self.dir.path.join(format!("answer-{name}"));
        fs::write(&request, body).unwrap();
        let output = curl(&self.url(path))
            .args(["-H", "content-type: application/json", "--data-binary"])
            .arg(format!("@{}", request.display()))
            .arg("-o")
            .arg(&answer)
            .output()
            .unwrap();
        let _ = fs::remove_file(&request);
        let status = String::from_utf8_lossy(&output.stdout).trim().parse();
        let status = status.unwrap_or_else(|_| {
            panic!(
                "curl got no answer: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        let body = fs::read(&answer).unwrap_or_default();
        let _ = fs::remove_file(&answer);
        (status, body)
    }

    /// POSTs `review` to /mutate and returns the AdmissionReview answered (status 200).
    pub fn admit(&self, review: &Value) -> Value {
        let (status, body) = self.post("/mutate", review.to_string().as_bytes());
        assert_eq!(
            status,
            200,
            "{}\n--- webhook ---\n{}",
            String::from_utf8_lossy(&body),
            self.stderr()
        );
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
        answer
    }

    /// The pod `original` (as the API server sends it) through the webhook: allowed, with
    /// a patch that Python's `jsonpatch` applies and whose result `kubernetes-validate
    /// --strict` accepts, and that a second pass (reinvocation) leaves as it is.
    pub fn inject(&self, original: &Value, namespace: &str) -> Injected {
        let answer = self.admit(&review(original, namespace));
        let response = &answer["response"];
        assert_eq!(response["allowed"], true, "denied: {}", response["status"]);
        let patch = patch_of(&answer)
            .unwrap_or_else(|| panic!("no patch in {answer}\n--- webhook ---\n{}", self.stderr()));
        let pod = apply(original, &patch);
        validate(&[&pod]);
        let again = self.admit(&review(&pod, namespace));
        assert_eq!(again["response"]["allowed"], true, "{}", again["response"]);
        assert!(
            patch_of(&again).is_none(),
            "the injected pod was patched again: {again}"
        );
        Injected { answer, pod }
    }

    /// The common name of the certificate the webhook presents now (a new connection).
    pub fn certificate_name(&self) -> String {
        let output = curl(&self.url("/healthz")).arg("-v").output().unwrap();
        let log = String::from_utf8_lossy(&output.stderr);
        log.lines()
            .find_map(|l| l.trim_start_matches(['*', ' ']).strip_prefix("subject: "))
            .and_then(|s| s.split("CN=").nth(1))
            .map(|cn| cn.trim().to_owned())
            .unwrap_or_else(|| panic!("curl shows no certificate subject:\n{log}"))
    }

    /// Sends `signal` (`TERM`, `INT`) to the process, as the kubelet does.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits up to `limit` for the process to end; its exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pod through the webhook: the answer, and the pod patched and validated.
pub struct Injected {
    pub answer: Value,
    pub pod: Value,
}

/// curl trusting only the test CA, printing the status code.
fn curl(url: &str) -> Command {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(&ca().pem_file)
        .args(["-w", "%{http_code}"])
        .arg(url)
        .stdin(Stdio::null());
    command
}

/// The AdmissionReview the API server sends for the creation of `pod` in `namespace`.
pub fn review(pod: &Value, namespace: &str) -> Value {
    let kind = json!({"group": "", "version": "v1", "kind": "Pod"});
    let resource = json!({"group": "", "version": "v1", "resource": "pods"});
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("7f0c3a1e-{}", unique_id('-')),
            "kind": kind,
            "resource": resource,
            "requestKind": kind,
            "requestResource": resource,
            "name": pod["metadata"]["name"].as_str().unwrap_or_default(),
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "0b8b7d4e-6a2f-4c1e-9d3b-2f8a1c5e7d90",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

/// The response's JSON Patch, decoded; `None` when it carries none.
pub fn patch_of(answer: &Value) -> Option<Value> {
    use base64::Engine as _;
    let response = &answer["response"];
    let patch = response["patch"].as_str()?;
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("the patch is base64");
    Some(serde_json::from_slice(&bytes).expect("the patch is JSON"))
}

/// `pod` with `patch` applied by Python's jsonpatch.
pub fn apply(pod: &Value, patch: &Value) -> Value {
    let dir = Scratch::tmpfs("jsonpatch");
    let (original, operations) = (dir.path.join("pod.json"), dir.path.join("patch.json"));
    fs::write(&original, pod.to_string()).unwrap();
    fs::write(&operations, patch.to_string()).unwrap();
    let output = Command::new(tools().join("jsonpatch"))
        .arg(&original)
        .arg(&operations)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "jsonpatch refused the patch: {}\npatch: {patch:#}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Validates `objects` strictly (misspelt and unknown fields fail) against [`KUBERNETES`].
#[track_caller]
pub fn validate(objects: &[&Value]) {
    let dir = Scratch::tmpfs("validate");
    let file = dir.path.join("objects.yaml");
    let text: Vec<String> = objects.iter().map(|o| o.to_string()).collect();
    fs::write(&file, text.join("\n---\n")).unwrap();
    let output = Command::new(tools().join("kubernetes-validate"))
        .args(["--strict", "--quiet", "-k", KUBERNETES])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubernetes-validate --strict -k {KUBERNETES} refused:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `kubectl ARGS --dry-run=client -o json` (a `create` subcommand): an object as kubectl
/// renders it, offline.
pub fn kubectl_create(args: &[&str]) -> Value {
    // The output flags go before a `--` that starts the container's command.
    let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    let mut full = vec!["create"];
    full.extend_from_slice(&args[..split]);
    full.extend_from_slice(&["--dry-run=client", "-o", "json"]);
    full.extend_from_slice(&args[split..]);
    kubectl(&full, &[])
}

/// `object` with a JSON merge patch applied by `kubectl patch --local`, the way a label
/// or annotation is added to a manifest.
pub fn kubectl_patch(object: &Value, merge: &Value) -> Value {
    let dir = Scratch::tmpfs("kubectl-patch");
    let file = dir.path.join("object.json");
    fs::write(&file, object.to_string()).unwrap();
    let file = file.display().to_string();
    let patch = merge.to_string();
    kubectl(
        &[
            "patch", "--local", "-f", &file, "--type", "merge", "-p", &patch,
        ],
        &["-o", "json"],
    )
}

fn kubectl(args: &[&str], output: &[&str]) -> Value {
    let result = Command::new("kubectl")
        .args(args)
        .args(output)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running kubectl (is it installed?): {e}"));
    assert!(
        result.status.success(),
        "kubectl {args:?} failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    serde_json::from_slice(&result.stdout).unwrap()
}
