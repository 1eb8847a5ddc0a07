//! SIGTERM and SIGINT, listened for once per process.
//!
//! A run that waits more than once (token mode between refreshes, and every long-running
//! mode) must not lose a signal that arrives between two waits, so the handlers are
//! installed when [`Stop::listen`] is called and kept until the process ends.

/// The stop signals, from [`Stop::listen`] on.
pub struct Stop {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Stop {
    pub fn listen() -> Stop {
        use tokio::signal::unix::{SignalKind, signal};
        Stop {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Waits for the next signal and returns its name.
    pub async fn recv(&mut self) -> &'static str {
        match (&mut self.term, &mut self.int) {
            (Some(term), Some(int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            // Without handlers the default action (terminate) still applies.
            _ => std::future::pending().await,
        }
    }

    /// Runs `work` unless a stop signal comes first, in which case `work` is dropped where
    /// it waits and the signal's name is returned. Work that must not be cut short (a
    /// publish) has no await point, so it is never interrupted half-way.
    pub async fn or_stop<T>(&mut self, work: impl Future<Output = T>) -> Result<T, &'static str> {
        tokio::select! {
            value = work => Ok(value),
            signal = self.recv() => Err(signal),
        }
    }
}
