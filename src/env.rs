//! Reading the environment the platform hands the process.
//!
//! Orchestrators and templates often leave a variable set but empty (`AWS_ROLE_ARN: ""`),
//! which means "not configured"; every reader in this crate treats it so, through
//! [`var`].

/// The variable's value when it is set, is Unicode, and holds more than whitespace.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}
