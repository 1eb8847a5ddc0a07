//! `ConfigFile::parse`. Any text: it never panics. Generated YAML (inputs that start
//! with 0xFF; the rest drives `secret_sidecar_fuzz::yaml`): an error never repeats a
//! value, checked with a sentinel planted only in value positions, since field names in
//! errors are fine and wanted (see that module for why raw text cannot be checked).
#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use secret_sidecar::config::ConfigFile;
use secret_sidecar_fuzz::leaks::leak;
use secret_sidecar_fuzz::yaml::{self, SENTINEL};

fuzz_target!(|data: &[u8]| {
    let Some((&0xff, rest)) = data.split_first() else {
        let text = String::from_utf8_lossy(data);
        if let Err(err) = ConfigFile::parse(&text) {
            let _ = format!("{err:#} {err:?}");
        }
        return;
    };
    let Ok(text) = yaml::document(&mut Unstructured::new(rest)) else {
        return;
    };
    let Err(err) = ConfigFile::parse(&text) else {
        return;
    };
    let messages = [format!("{err:#}"), format!("{err:?}")];
    if let Some(piece) = leak(&messages, b"", SENTINEL, "", Vec::new) {
        panic!(
            "a config error repeats a value ({piece})\nmessage: {}\nconfig:\n{text}",
            messages[0]
        );
    }
});
