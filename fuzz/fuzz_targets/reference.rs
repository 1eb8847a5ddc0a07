//! `SecretRef::parse` on any text: it never panics, a reference it accepts prints back as
//! written, and the file name derived from it is always one safe path component.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_sidecar::reference::SecretRef;
use secret_sidecar_fuzz::paths::assert_single_component;

fuzz_target!(|text: &str| {
    match SecretRef::parse(text) {
        Ok(reference) => {
            assert_eq!(reference.to_string(), text);
            assert_single_component(&reference.default_file_name(), text);
        }
        Err(err) => {
            let _ = format!("{err:#} {err:?}");
        }
    }
});
