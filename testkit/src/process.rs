//! Running the binary in ways a plain [`Sidecar::run`] cannot: measuring its peak memory,
//! with a deadline for a run that might never end, or in the background (a long-running
//! mode, stopped with SIGTERM as the kubelet stops it).

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Run, Sidecar};

/// Whether the tests run as root (mounts, namespaces and `--owner` need it).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

impl Sidecar {
    /// Runs the binary, sampling its peak resident set (`VmHWM`) until it exits; returns
    /// the run and the peak in bytes.
    pub fn run_measuring_memory(self) -> (Run, u64) {
        let (mut child, output) = Output::spawn(self.command());
        let status_file = format!("/proc/{}/status", child.id());
        let mut peak = 0;
        let status = loop {
            // VmHWM only grows, so the last sample before the exit is the closest to the peak.
            if let Some(kib) = std::fs::read_to_string(&status_file)
                .ok()
                .and_then(|status| {
                    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
                    line.split_whitespace().nth(1)?.parse::<u64>().ok()
                })
            {
                peak = peak.max(kib * 1024);
            }
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        (output.finish(status), peak)
    }

    /// Runs the binary, killing it if it has not ended within `limit`: then the run's code
    /// is -1 and its stderr ends with a line that says so. For a test of something that
    /// must end, so that the test fails instead of hanging when it does not.
    pub fn run_within(self, limit: Duration) -> Run {
        let (mut child, output) = Output::spawn(self.command());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        match status {
            Some(status) => output.finish(status),
            None => {
                let mut run = output.finish(ExitStatus::default());
                run.code = -1;
                run.stderr
                    .push_str(&format!("\n[killed by the test after {limit:?}]\n"));
                run
            }
        }
    }

    /// Starts the binary in the background.
    pub fn spawn(self) -> Background {
        let (child, output) = Output::spawn(self.command());
        Background {
            child: Some(child),
            output: Some(output),
        }
    }
}

/// A running binary, killed if a test fails before stopping it.
pub struct Background {
    child: Option<Child>,
    output: Option<Output>,
}

impl Background {
    pub fn running(&mut self) -> bool {
        let child = self.child.as_mut().unwrap();
        child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to end by itself.
    pub fn wait(mut self) -> Run {
        let status = self.child.take().unwrap().wait().unwrap();
        self.output.take().unwrap().finish(status)
    }

    /// Sends SIGTERM, as the kubelet does, and returns the exit code and everything
    /// printed; fails the test if the process takes more than 5 seconds to stop.
    pub fn stop(mut self) -> Run {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let started = Instant::now();
        let status = child.wait().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "SIGTERM was slow"
        );
        self.output.take().unwrap().finish(status)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The child's stdout and stderr, drained by threads so that a chatty child never blocks.
struct Output {
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

impl Output {
    fn spawn(mut command: Command) -> (Child, Output) {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = pipe.read_to_end(&mut text);
                String::from_utf8_lossy(&text).into_owned()
            })
        };
        let output = Output {
            stdout: drain(Box::new(child.stdout.take().unwrap())),
            stderr: drain(Box::new(child.stderr.take().unwrap())),
        };
        (child, output)
    }

    fn finish(self, status: ExitStatus) -> Run {
        Run {
            code: status.code().unwrap_or(-1),
            stdout: self.stdout.join().unwrap(),
            stderr: self.stderr.join().unwrap(),
        }
    }
}
