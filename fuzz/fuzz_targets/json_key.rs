//! `extract::select`, which picks one field out of a JSON secret. Input: `KEY\nDOCUMENT`,
//! where a KEY that starts with `/` is a JSON Pointer and any other a member name, and
//! every `@@` in the DOCUMENT becomes a sentinel so seeds can say where secrets sit.
//!
//! It never panics; it returns exactly the string serde_json finds at the key, or for any
//! other value (number, boolean, null, object, array) JSON text that parses back to what
//! serde_json finds there (issue 18), and fails exactly when there is nothing at the key;
//! and its errors repeat no 8-byte piece of the secret that the key does not also contain
//! (checked exactly with the sentinel, and in general against the vocabulary of messages
//! it prints for this key without this secret).
//!
//! `select` reads the document as raw JSON text, so a number too large for a float or a
//! nesting deeper than serde_json's `Value` allows does not stop it; for such documents
//! (where `Value` gives no answer to compare with) only the leak property is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_sidecar::extract::select;
use secret_sidecar::reference::JsonKey;
use secret_sidecar::secret::SecretValue;
use secret_sidecar_fuzz::leaks::leak;
use serde_json::Value;

const SENTINEL: &str = "§hunter2☃SENTINEL-7f3aΩ";

fuzz_target!(|data: &[u8]| {
    let (key, document) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let key = String::from_utf8_lossy(key).into_owned();
    let key = if key.starts_with('/') {
        JsonKey::Pointer(key)
    } else {
        JsonKey::Member(key)
    };
    let document = plant(document);

    let parsed = serde_json::from_slice::<Value>(&document);
    // What `Value` refuses but raw JSON text allows: no answer to compare with.
    let beyond_value = parsed.as_ref().is_err_and(|err| {
        let text = err.to_string();
        text.contains("number out of range") || text.contains("recursion limit exceeded")
    });
    let expected = parsed
        .ok()
        .and_then(|value| lookup(&value, &key).cloned());
    match (select(&SecretValue::new(document.clone()), &key), expected) {
        (Ok(found), Some(Value::String(text))) => assert_eq!(found.expose(), text.as_bytes()),
        (Ok(found), Some(other)) => {
            let reread = serde_json::from_slice::<Value>(found.expose());
            assert_eq!(reread.ok().as_ref(), Some(&other), "select returned {found:?}");
        }
        (Ok(_), None) if beyond_value => {}
        (Ok(found), None) => panic!("select returned {found:?} where serde_json finds nothing"),
        (Err(err), Some(_)) => panic!("select failed where serde_json finds a value: {err:#}"),
        (Err(err), None) => {
            let messages = [format!("{err:#}"), format!("{err:?}")];
            let key_text = key.to_string();
            if let Some(piece) = leak(&messages, &document, SENTINEL, &key_text, || {
                vocabulary(&key)
            }) {
                panic!(
                    "error message repeats {piece}\nmessage: {}\nkey: {key:?}\ndocument: {:?}",
                    messages[0],
                    String::from_utf8_lossy(&document)
                );
            }
        }
    }
});

/// The document with every `@@` replaced by the sentinel.
fn plant(document: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(document.len());
    let mut rest = document;
    while !rest.is_empty() {
        if rest.starts_with(b"@@") {
            out.extend_from_slice(SENTINEL.as_bytes());
            rest = &rest[2..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// What the key names in `value`, by serde_json's own lookups.
fn lookup<'v>(value: &'v Value, key: &JsonKey) -> Option<&'v Value> {
    match key {
        JsonKey::Member(name) => value.as_object()?.get(name),
        JsonKey::Pointer(pointer) => value.pointer(pointer),
    }
}

/// Every error message `select` gives for this key, from documents that contain nothing
/// of the fuzzed secret: one per branch (not JSON, cut short, not an object, missing,
/// a pointer through each kind of value).
fn vocabulary(key: &JsonKey) -> Vec<String> {
    let mut documents: Vec<Vec<u8>> = [
        &b""[..],
        b"x",
        b"{",
        b"{\"a\":1",
        b"[1,",
        b"[]",
        b"null",
        b"true",
        b"1",
        b"\"s\"",
        b"{}",
    ]
    .iter()
    .map(|d| d.to_vec())
    .collect();
    for leaf in ["null", "true", "1", "\"s\"", "[]", "{}"] {
        let mut value: Value = serde_json::from_str(leaf).unwrap();
        let names: Vec<String> = match key {
            JsonKey::Member(name) => vec![name.clone()],
            JsonKey::Pointer(pointer) => pointer
                .split('/')
                .skip(1)
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect(),
        };
        for name in names.into_iter().rev() {
            value = Value::Object([(name, value)].into_iter().collect());
        }
        documents.push(serde_json::to_vec(&value).unwrap());
    }
    let mut messages = Vec::new();
    for document in documents {
        if let Err(err) = select(&SecretValue::new(document), key) {
            messages.extend([format!("{err:#}"), format!("{err:?}")]);
        }
    }
    messages
}
