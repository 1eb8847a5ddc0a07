//! Telling applications that their secret files changed, the ways they reload: a signal
//! to a process found by pid file or by name, and an HTTP request to a local endpoint
//! (Spring Boot's `/actuator/refresh`, Prometheus's `/-/reload`, ...). The `..data` link
//! swap is the third way, and needs nothing from here: file watchers see it.
//!
//! Only refresh mode uses it, after a publish that changed what an application reads;
//! never after the first publish, which happens before the applications start.
//!
//! Signals cross containers only where they share a process namespace (Kubernetes
//! `shareProcessNamespace: true`, ECS `pidMode: task`, Compose `pid: service:…`), and
//! reach a process of another user only with `CAP_KILL`. Pid 1 (in a shared namespace,
//! the pod's pause process) and this process itself are never signalled.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use rustix::process::{Pid, Signal};
use tracing::{debug, info, warn};

use crate::exit::Failure;
use crate::net::HttpConfig;
use crate::retry::Policy;

/// Who to tell when the published set changes (with `--refresh`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NotifyArgs {
    /// With --refresh: the signal for --notify-pid-file and --notify-process (default
    /// SIGHUP): HUP, INT, QUIT, USR1, USR2, TERM, ALRM, WINCH, CONT, with or without SIG.
    /// A target may name its own as FILE:SIGNAL or NAME:SIGNAL.
    ///
    /// Example: --notify-signal SIGUSR1
    #[arg(long, value_name = "SIGNAL", env = "SECRET_SIDECAR_NOTIFY_SIGNAL")]
    pub notify_signal: Option<String>,

    /// With --refresh: after each change, signal the process whose pid this file holds
    /// (read at each change, so a restarted app is found). Repeat for more; the process
    /// must share this one's process namespace (shareProcessNamespace: true).
    ///
    /// Example: --notify-pid-file /run/app/app.pid --notify-pid-file /run/nginx/nginx.pid:SIGHUP
    #[arg(
        long = "notify-pid-file",
        value_name = "FILE[:SIGNAL]",
        env = "SECRET_SIDECAR_NOTIFY_PID_FILE",
        value_delimiter = ','
    )]
    pub notify_pid_files: Vec<String>,

    /// With --refresh: after each change, signal every process of this name (its
    /// /proc/PID/comm, or the file name of its argv[0]) in this process namespace. Repeat
    /// for more.
    ///
    /// Example: --notify-process nginx --notify-process envoy:SIGUSR1
    #[arg(
        long = "notify-process",
        value_name = "NAME[:SIGNAL]",
        env = "SECRET_SIDECAR_NOTIFY_PROCESS",
        value_delimiter = ','
    )]
    pub notify_process: Vec<String>,

    /// With --refresh: after each change, POST (empty body) to this URL, retried like a
    /// fetch when it cannot be reached or answers 5xx. Loopback only (the app in the same
    /// pod) unless --notify-allow-remote. Repeat for more.
    ///
    /// Example: --notify-url http://127.0.0.1:8080/actuator/refresh
    #[arg(
        long = "notify-url",
        value_name = "URL",
        env = "SECRET_SIDECAR_NOTIFY_URL",
        value_delimiter = ','
    )]
    pub notify_urls: Vec<String>,

    /// Allow --notify-url to name a host other than this machine.
    ///
    /// Example: --notify-allow-remote
    #[arg(long, env = "SECRET_SIDECAR_NOTIFY_ALLOW_REMOTE")]
    pub notify_allow_remote: bool,
}

impl NotifyArgs {
    /// Whether any notification option was given.
    pub fn given(&self) -> bool {
        self.notify_signal.is_some()
            || !self.notify_pid_files.is_empty()
            || !self.notify_process.is_empty()
            || !self.notify_urls.is_empty()
            || self.notify_allow_remote
    }
}

/// A process to signal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Process {
    PidFile(PathBuf),
    Named(String),
}

/// The checked notification targets.
#[derive(Debug)]
pub struct Notifier {
    processes: Vec<(Process, Signal)>,
    urls: Vec<reqwest::Url>,
    client: Option<reqwest::Client>,
    policy: Policy,
}

/// What one round of notifications did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub sent: u32,
    pub failed: u32,
}

impl Notifier {
    /// Checks the options: signal names, URLs. A wrong one is a usage error.
    pub fn new(args: &NotifyArgs, http: &HttpConfig) -> Result<Notifier> {
        let default = match &args.notify_signal {
            Some(name) => parse_signal(name).context("--notify-signal")?,
            None => Signal::HUP,
        };
        if args.notify_signal.is_some()
            && args.notify_pid_files.is_empty()
            && args.notify_process.is_empty()
        {
            bail!("--notify-signal needs --notify-pid-file or --notify-process to send it to");
        }
        let mut processes = Vec::new();
        for spec in &args.notify_pid_files {
            let (file, signal) = split_signal(spec, default);
            if file.is_empty() {
                bail!("--notify-pid-file '{spec}' names no file");
            }
            processes.push((Process::PidFile(PathBuf::from(file)), signal));
        }
        for spec in &args.notify_process {
            let (name, signal) = split_signal(spec, default);
            if name.is_empty() || name.contains('/') {
                bail!("--notify-process '{spec}' is not a process name");
            }
            processes.push((Process::Named(name.to_owned()), signal));
        }
        let mut urls = Vec::new();
        for text in &args.notify_urls {
            let url = reqwest::Url::parse(text)
                .map_err(|err| anyhow!("--notify-url '{text}' is not a URL: {err}"))?;
            let host = url.host_str().unwrap_or_default();
            if !matches!(url.scheme(), "http" | "https") || host.is_empty() {
                bail!("--notify-url '{text}' must be an http or https URL with a host");
            }
            if !args.notify_allow_remote && !crate::net::is_loopback_host(host) {
                bail!(
                    "--notify-url '{text}' is not on this machine (127.0.0.1, ::1, localhost); \
                     pass --notify-allow-remote to notify another host"
                );
            }
            urls.push(url);
        }
        let client = match urls.is_empty() {
            true => None,
            false => Some(http.client()?),
        };
        Ok(Notifier {
            processes,
            urls,
            client,
            policy: Policy::within(http.attempt_timeout),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty() && self.urls.is_empty()
    }

    /// Tells every target once: each process found gets its signal, each URL one request
    /// (retried while it cannot be reached). Failures are logged and counted, never fatal:
    /// the files are published either way.
    pub async fn notify(&self) -> Report {
        let mut report = Report::default();
        for (process, signal) in &self.processes {
            match pids(process) {
                Ok(pids) if pids.is_empty() => {
                    report.failed += 1;
                    warn!(target = %describe(process), "no process to notify");
                }
                Ok(pids) => {
                    for pid in pids {
                        match rustix::process::kill_process(pid, *signal) {
                            Ok(()) => {
                                report.sent += 1;
                                info!(target = %describe(process), pid = pid.as_raw_nonzero().get(), signal = signal_name(*signal), "notified");
                            }
                            Err(errno) => {
                                report.failed += 1;
                                warn!(target = %describe(process), pid = pid.as_raw_nonzero().get(), "could not signal the process: {errno} (another user's process needs CAP_KILL)");
                            }
                        }
                    }
                }
                Err(err) => {
                    report.failed += 1;
                    warn!(target = %describe(process), "no process to notify: {err:#}");
                }
            }
        }
        if let Some(client) = &self.client {
            for url in &self.urls {
                match self.policy.run(|| post(client, url)).await {
                    Ok(status) => {
                        report.sent += 1;
                        info!(url = %url, status, "notified");
                    }
                    Err(err) => {
                        report.failed += 1;
                        warn!(url = %url, "notifying failed: {err:#}");
                    }
                }
            }
        }
        report
    }
}

/// One POST; 2xx is success, 5xx and connection failures are retried, the rest is not.
async fn post(client: &reqwest::Client, url: &reqwest::Url) -> Result<u16> {
    let response = client
        .post(url.clone())
        .header(reqwest::header::USER_AGENT, crate::net::USER_AGENT)
        .header(reqwest::header::CONTENT_LENGTH, "0")
        .send()
        .await
        .map_err(|err| anyhow!(crate::net::error_chain(&err)))
        .context(Failure::Transient)?;
    let status = response.status();
    match status.as_u16() {
        200..=299 => Ok(status.as_u16()),
        500..=599 => Err(anyhow!("the endpoint answered {status}")).context(Failure::Transient),
        _ => Err(anyhow!("the endpoint answered {status}")).context(Failure::Usage),
    }
}

/// The processes `process` names now.
fn pids(process: &Process) -> Result<Vec<Pid>> {
    match process {
        Process::PidFile(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let number: i32 = text
                .trim()
                .parse()
                .map_err(|_| anyhow!("{} does not hold a process id", path.display()))?;
            match signallable(number) {
                Some(pid) => Ok(vec![pid]),
                None => bail!(
                    "{} names process {number}, which is never signalled",
                    path.display()
                ),
            }
        }
        Process::Named(name) => named(Path::new("/proc"), name),
    }
}

/// A pid that may be signalled: not 0 or negative (process groups, everyone), not 1 (the
/// pause process of a shared namespace, or an init), not this process.
fn signallable(number: i32) -> Option<Pid> {
    if number <= 1 || number as u32 == std::process::id() {
        return None;
    }
    Pid::from_raw(number)
}

/// Every process under `proc` whose comm or argv[0] file name is `name`.
fn named(proc: &Path, name: &str) -> Result<Vec<Pid>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(proc).with_context(|| format!("listing {}", proc.display()))?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .and_then(signallable)
        else {
            continue;
        };
        let dir = entry.path();
        // A process may end while it is looked at; it then simply does not match.
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let argv0 = std::fs::read(dir.join("cmdline"))
            .ok()
            .and_then(|c| c.split(|b| *b == 0).next().map(<[u8]>::to_vec))
            .unwrap_or_default();
        let argv0 = String::from_utf8_lossy(&argv0);
        let file_name = argv0.rsplit('/').next().unwrap_or_default();
        if comm.trim_end_matches('\n') == name || file_name == name {
            found.push(pid);
        }
    }
    debug!(name, found = found.len(), "processes by name");
    Ok(found)
}

fn describe(process: &Process) -> String {
    match process {
        Process::PidFile(path) => format!("pid file {}", path.display()),
        Process::Named(name) => format!("process {name}"),
    }
}

/// `TARGET:SIGNAL` → (`TARGET`, SIGNAL) when the part after the last `:` is a signal name;
/// otherwise the whole text and `default`.
fn split_signal(spec: &str, default: Signal) -> (&str, Signal) {
    if let Some((target, suffix)) = spec.rsplit_once(':')
        && let Ok(signal) = parse_signal(suffix)
    {
        return (target, signal);
    }
    (spec, default)
}

const SIGNALS: [(&str, Signal); 9] = [
    ("HUP", Signal::HUP),
    ("INT", Signal::INT),
    ("QUIT", Signal::QUIT),
    ("USR1", Signal::USR1),
    ("USR2", Signal::USR2),
    ("TERM", Signal::TERM),
    ("ALRM", Signal::ALARM),
    ("WINCH", Signal::WINCH),
    ("CONT", Signal::CONT),
];

/// `HUP`, `SIGHUP`, `sighup`: the signals an application reloads on (or stops on, for a
/// supervisor that restarts it). `KILL` and `STOP` are not among them.
pub fn parse_signal(text: &str) -> Result<Signal> {
    let upper = text.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, signal)| *signal)
        .ok_or_else(|| {
            let known: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
            anyhow!("'{text}' is not one of the signals {}", known.join(", "))
        })
}

fn signal_name(signal: Signal) -> &'static str {
    SIGNALS
        .iter()
        .find(|(_, s)| *s == signal)
        .map_or("?", |(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_with_or_without_sig() {
        assert_eq!(parse_signal("SIGHUP").unwrap(), Signal::HUP);
        assert_eq!(parse_signal("usr1").unwrap(), Signal::USR1);
        assert!(parse_signal("KILL").is_err());
        assert!(parse_signal("9").is_err());
        assert_eq!(signal_name(Signal::USR2), "USR2");
    }

    #[test]
    fn a_target_may_name_its_own_signal() {
        assert_eq!(
            split_signal("/run/app.pid:SIGUSR1", Signal::HUP),
            ("/run/app.pid", Signal::USR1)
        );
        assert_eq!(split_signal("nginx", Signal::HUP), ("nginx", Signal::HUP));
        // A colon that is not followed by a signal is part of the name.
        assert_eq!(
            split_signal("/run/a:b.pid", Signal::TERM),
            ("/run/a:b.pid", Signal::TERM)
        );
    }

    #[test]
    fn never_pid_one_nor_groups_nor_itself() {
        for pid in [-1, 0, 1, std::process::id() as i32] {
            assert!(signallable(pid).is_none(), "{pid}");
        }
        assert!(signallable(2).is_some());
    }

    #[test]
    fn urls_are_loopback_unless_allowed() {
        let http = HttpConfig {
            attempt_timeout: std::time::Duration::from_secs(1),
            ca: None,
            concurrency: 1,
        };
        let args = |urls: &[&str], remote: bool| NotifyArgs {
            notify_urls: urls.iter().map(|u| u.to_string()).collect(),
            notify_allow_remote: remote,
            ..NotifyArgs::default()
        };
        assert!(
            Notifier::new(
                &args(&["http://127.0.0.1:8080/actuator/refresh"], false),
                &http
            )
            .is_ok()
        );
        assert!(Notifier::new(&args(&["http://[::1]:9090/-/reload"], false), &http).is_ok());
        let err = Notifier::new(&args(&["http://app.example:8080/x"], false), &http).unwrap_err();
        assert!(
            format!("{err:#}").contains("--notify-allow-remote"),
            "{err:#}"
        );
        assert!(Notifier::new(&args(&["http://app.example:8080/x"], true), &http).is_ok());
        assert!(Notifier::new(&args(&["file:///etc/passwd"], true), &http).is_err());
    }

    #[test]
    fn a_signal_needs_a_process() {
        let http = HttpConfig {
            attempt_timeout: std::time::Duration::from_secs(1),
            ca: None,
            concurrency: 1,
        };
        let args = NotifyArgs {
            notify_signal: Some("USR1".into()),
            ..NotifyArgs::default()
        };
        assert!(Notifier::new(&args, &http).is_err());
    }
}
