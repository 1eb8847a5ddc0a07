//! File names. `safe_component` turns any text into one plain component that
//! `validate_file` accepts; `validate_file` never panics, and whatever path it accepts
//! stays inside the output directory (relative, no `.`, `..` or `..x` components, no NUL,
//! within Linux's length limits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_sidecar::paths::{safe_component, validate_file};
use secret_sidecar_fuzz::paths::{assert_single_component, assert_stays_inside};

fuzz_target!(|text: &str| {
    assert_single_component(&safe_component(text), text);
    match validate_file(text) {
        Ok(()) => assert_stays_inside(text),
        Err(err) => {
            let _ = format!("{err:#}");
        }
    }
});
