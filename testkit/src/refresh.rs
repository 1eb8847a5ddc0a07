//! What refresh mode's tests share: the binary kept running (its output in files, so that
//! thousands of cycles never block on a full pipe), paused and resumed, probed and
//! stopped; a reader that sees what an application sees; an application stand-in that
//! counts the signals it gets; and the process's memory and descriptors.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Run, Scratch, Sidecar};

/// Waits until `done`, failing the test after `limit`.
#[track_caller]
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// A running `secret-sidecar --refresh`, killed if a test fails before stopping it.
pub struct Running {
    child: Option<Child>,
    logs: Scratch,
}

impl Running {
    pub fn start(sidecar: Sidecar) -> Running {
        Running::spawn(sidecar.command())
    }

    /// Runs `command` (the binary, perhaps under setpriv) the same way.
    pub fn spawn(mut command: Command) -> Running {
        let logs = Scratch::disk("refresh-log");
        command
            .stdout(fs::File::create(logs.path.join("stdout")).unwrap())
            .stderr(fs::File::create(logs.path.join("stderr")).unwrap());
        Running {
            child: Some(command.spawn().expect("the binary starts")),
            logs,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Whether it is still running (a process that exited is reaped here).
    pub fn running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.logs.path.join("stderr")).unwrap()).into_owned()
    }

    /// Freezes it (SIGSTOP), so that the store can change between two of its reads.
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    /// Its resident memory, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// How many file descriptors it holds open.
    pub fn fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// The address it serves metrics on, from its log line.
    pub fn metrics_addr(&self) -> String {
        let mut found = None;
        wait_until("the metrics address", Duration::from_secs(10), || {
            found = self.log().lines().find_map(|line| {
                line.contains("serving metrics")
                    .then(|| line.split("addr=").nth(1))
                    .flatten()
                    .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
            });
            found.is_some()
        });
        found.unwrap()
    }

    /// Sends SIGTERM, as the kubelet does, and returns the exit code and everything printed.
    pub fn stop(mut self) -> Run {
        let mut child = self.child.take().unwrap();
        signal(child.id(), "TERM");
        let status = child.wait().unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: fs::read_to_string(self.logs.path.join("stdout")).unwrap(),
            stderr: self.log(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `secret-sidecar --probe --output-dir DIR` (from `sidecar`): whether the probe passes.
pub fn probe(sidecar: Sidecar, dir: &Path) -> bool {
    sidecar
        .arg("--probe")
        .arg("--output-dir")
        .arg(dir)
        .run()
        .code
        == 0
}

/// One published set as an application sees it when it resolves `..data` once and reads
/// every file from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// The staging directory `..data` named.
    pub name: String,
    pub files: BTreeMap<String, Vec<u8>>,
}

/// The generation published in `dir` now, with `names` read from it; `None` when it was
/// replaced (and removed) while it was read, or there is none yet.
pub fn generation(dir: &Path, names: &[&str]) -> Option<Generation> {
    let name = fs::read_link(dir.join("..data")).ok()?;
    let base = dir.join(&name);
    let mut files = BTreeMap::new();
    for file in names {
        files.insert(file.to_string(), fs::read(base.join(file)).ok()?);
    }
    Some(Generation {
        name: name.display().to_string(),
        files,
    })
}

/// The staging directories in `dir` (more than one only while a publish is under way).
pub fn generations(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("..sidecar."))
        .collect();
    names.sort();
    names
}

/// Reads like an application, over and over on a thread: whole generations, and each
/// file through its top-level link; keeps everything distinct it saw.
pub struct Reader {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Seen>>,
}

#[derive(Debug, Default)]
pub struct Seen {
    pub generations: Vec<Generation>,
    /// Each file's distinct contents read through its link.
    pub links: BTreeMap<String, Vec<Vec<u8>>>,
    pub reads: u64,
}

impl Reader {
    pub fn start(dir: &Path, names: &[&str]) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let dir = dir.to_owned();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let thread = std::thread::spawn(move || {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut seen = Seen::default();
            while !flag.load(Ordering::SeqCst) {
                if let Some(generation) = generation(&dir, &names)
                    && !seen.generations.contains(&generation)
                {
                    seen.generations.push(generation);
                }
                for name in &names {
                    if let Ok(content) = fs::read(dir.join(name)) {
                        let contents = seen.links.entry(name.to_string()).or_default();
                        if !contents.contains(&content) {
                            contents.push(content);
                        }
                    }
                }
                seen.reads += 1;
            }
            seen
        });
        Reader {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// An application stand-in: a shell under a name of its own (its `comm`), which writes
/// its pid to a file and appends a line to a log for every HUP or USR1 it gets.
pub struct App {
    pub name: String,
    pub pid_file: PathBuf,
    log: PathBuf,
    child: Child,
    _dir: Scratch,
}

impl App {
    /// `tag` makes the name; it is kept short enough for `comm` (15 bytes).
    pub fn start(tag: &str) -> App {
        let dir = Scratch::disk("refresh-app");
        let name = format!("{tag}{}", std::process::id() % 100_000);
        let name = format!("{name}{}", fastrand::u32(..10_000));
        assert!(name.len() <= 15, "{name} is too long for comm");
        let shell = dir.path.join(&name);
        symlink("/bin/sh", &shell).unwrap();
        let pid_file = dir.path.join("app.pid");
        let log = dir.path.join("signals");
        fs::write(&log, "").unwrap();
        let script = format!(
            "trap 'echo HUP >> {log}' HUP; trap 'echo USR1 >> {log}' USR1; \
             echo $$ > {pid}.tmp && mv {pid}.tmp {pid}; \
             while :; do sleep 0.02; done",
            log = log.display(),
            pid = pid_file.display()
        );
        let child = Command::new(&shell)
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        wait_until("the app's pid file", Duration::from_secs(5), || {
            pid_file.exists()
        });
        App {
            name,
            pid_file,
            log,
            child,
            _dir: dir,
        }
    }

    /// The signals it got, in order.
    pub fn signals(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /metrics` from `addr`: the body.
pub fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The value of the sample `name` (with its labels, as printed) in a scrape; 0 if absent.
pub fn sample(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The number of cycles a scrape counts, whatever their outcome.
pub fn cycles(scrape: &str) -> f64 {
    ["unchanged", "changed", "failed"]
        .iter()
        .map(|o| {
            sample(
                scrape,
                &format!("secret_sidecar_refresh_cycles_total{{outcome=\"{o}\"}}"),
            )
        })
        .sum()
}
