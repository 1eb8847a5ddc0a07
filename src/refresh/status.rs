//! What refresh mode tells its probe, and the probe itself.
//!
//! The state lives beside the published set, in `--output-dir/..status/refresh`: the one
//! place a distroless container's probe (`secret-sidecar --probe`, run by the kubelet or
//! ECS inside the same container) can read, since the output directory is the container's
//! only writable mount. It holds the process id and times, never a secret or a name:
//!
//! ```json
//! {"version":1,"pid":7,"started":…,"published_at_ms":…,"checked_at_ms":…,"stale_after_ms":…,"failures":0,"kept":0}
//! ```
//!
//! It is removed when the process starts and written once the first publish is done, so
//! the probe fails until then; and it counts only while the process that wrote it runs (its
//! pid and start time, read from `/proc`: the probe runs in the same container), so a
//! stopped or restarted sidecar never passes on its predecessor's word. `checked_at_ms` moves at every cycle
//! that found the set current, and the probe fails once `stale_after_ms` (that time plus
//! `--max-stale`) has passed. A cycle that kept a revoked secret does not count as a check.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::publish::{Publisher, read_status};

/// The status file's name under `..status/`.
pub const NAME: &str = "refresh";

#[derive(Debug, Serialize, Deserialize)]
struct Document {
    version: u32,
    pid: u32,
    /// When the process started (clock ticks after boot, `/proc/PID/stat`'s 22nd field):
    /// with the pid, it tells the writer from a later process that got the same pid (in a
    /// container, a restarted sidecar is pid 1 again).
    started: u64,
    published_at_ms: u64,
    checked_at_ms: u64,
    stale_after_ms: Option<u64>,
    failures: u32,
    kept: usize,
}

/// The process's view of its own freshness, written out for the probe.
pub struct Status {
    max_stale: Option<Duration>,
    published_at: SystemTime,
    checked_at: SystemTime,
    stale_warned: bool,
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}

impl Status {
    /// Removes what an earlier process left, so that the probe waits for this one.
    pub fn starting(publisher: &Publisher) {
        if let Err(err) = publisher.clear_status(NAME) {
            warn!("removing the previous status: {err:#}");
        }
    }

    /// The first publish is done.
    pub fn new(max_stale: Option<Duration>) -> Status {
        let now = SystemTime::now();
        Status {
            max_stale,
            published_at: now,
            checked_at: now,
            stale_warned: false,
        }
    }

    /// Records the outcome of a cycle (or of the first publish) and writes it out. A
    /// cycle that reached the store and kept nothing back is a check; `published` says it
    /// also published a new set.
    pub fn record(
        &mut self,
        publisher: &Publisher,
        checked: bool,
        published: bool,
        failures: u32,
        kept: usize,
    ) {
        let now = SystemTime::now();
        if checked {
            self.checked_at = now;
            self.stale_warned = false;
        }
        if published {
            self.published_at = now;
        }
        if let Some(limit) = self.max_stale
            && !self.stale_warned
            && now.duration_since(self.checked_at).unwrap_or_default() > limit
        {
            self.stale_warned = true;
            warn!(
                max_stale_s = limit.as_secs(),
                "the published set is stale: no successful check within --max-stale; the \
                 probe now fails"
            );
        }
        let document = Document {
            version: 1,
            pid: std::process::id(),
            started: started(std::process::id()).unwrap_or_default(),
            published_at_ms: millis(self.published_at),
            checked_at_ms: millis(self.checked_at),
            stale_after_ms: self.max_stale.map(|limit| millis(self.checked_at + limit)),
            failures,
            kept,
        };
        let written = serde_json::to_vec(&document)
            .map_err(anyhow::Error::from)
            .and_then(|json| publisher.write_status(NAME, &json));
        if let Err(err) = written {
            warn!("writing the status for --probe: {err:#}");
        }
    }

    /// When the set was last found current.
    pub fn checked_at(&self) -> SystemTime {
        self.checked_at
    }
}

/// When process `pid` started, from `/proc/PID/stat` (the field after the command name,
/// which may itself hold spaces and parentheses, is counted from the last `)`).
fn started(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat.rsplit_once(')')?;
    // Fields 3.. follow; the start time is field 22.
    fields.split_whitespace().nth(19)?.parse().ok()
}

/// `--probe`: passes once a refresh process has published into `dir`, until its last
/// check is older than its `--max-stale`.
pub fn probe(dir: &Path) -> Result<()> {
    let content = read_status(dir, NAME)
        .with_context(|| format!("reading the status in {}", dir.display()))?
        .ok_or_else(|| {
            anyhow!(
                "{} holds no refresh status: the first publish is not done (or --refresh is \
                 not running there)",
                dir.display()
            )
        })?;
    let document: Document = serde_json::from_slice(&content)
        .map_err(|err| anyhow!("the status in {} is not readable: {err}", dir.display()))?;
    // A status whose writer is gone (stopped, or restarted and not yet published) says
    // nothing about the files now.
    if started(document.pid) != Some(document.started) {
        bail!(
            "the refresh process that wrote the status (pid {}) is not running: stopped, or \
             restarted and not yet published",
            document.pid
        );
    }
    if let Some(stale_after) = document.stale_after_ms {
        let now = millis(SystemTime::now());
        if now > stale_after {
            bail!(
                "stale: the last successful check was {} s ago, longer than --max-stale",
                now.saturating_sub(document.checked_at_ms) / 1000
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_start_time_is_read_and_a_missing_process_has_none() {
        let own = started(std::process::id()).expect("this process's start time");
        assert_eq!(started(std::process::id()), Some(own));
        assert_eq!(started(u32::MAX), None);
    }
}
