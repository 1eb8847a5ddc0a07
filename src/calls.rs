//! How many calls this process has made to each secret store, by operation: what a
//! refresh costs, counted where each request is sent (one per attempt, retries included),
//! for refresh mode's metrics and tests.
//!
//! Identity calls (STS, Entra ID, the metadata server) are not counted: they are made once
//! per connection, not per secret or per cycle.

use std::sync::Mutex;

static CALLS: Mutex<Vec<Call>> = Mutex::new(Vec::new());

/// One store operation and how often it was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The provider: `aws`, `azure`, `gcp`.
    pub store: &'static str,
    /// The store's own name of the operation: `GetSecretValue`, `GetSecret`, ...
    pub operation: &'static str,
    pub count: u64,
}

/// Counts one call of `operation` on `store`.
pub fn count(store: &'static str, operation: &'static str) {
    let Ok(mut calls) = CALLS.lock() else {
        return;
    };
    match calls
        .iter_mut()
        .find(|c| c.store == store && c.operation == operation)
    {
        Some(call) => call.count += 1,
        None => calls.push(Call {
            store,
            operation,
            count: 1,
        }),
    }
}

/// Every operation called so far, in the order first called.
pub fn snapshot() -> Vec<Call> {
    CALLS.lock().map(|calls| calls.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_store_and_operation() {
        count("test-store", "Read");
        count("test-store", "Read");
        count("test-store", "Batch");
        let calls: Vec<Call> = snapshot()
            .into_iter()
            .filter(|c| c.store == "test-store")
            .collect();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].count, 2);
        assert_eq!((calls[1].operation, calls[1].count), ("Batch", 1));
    }
}
