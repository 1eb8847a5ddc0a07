//! Picking one field out of a JSON secret (`#password`, `#/db/password`), and the members
//! of an object for `explode`.
//!
//! A field is found by walking the document as borrowed raw JSON text
//! ([`serde_json::value::RawValue`]), so no string of the secret is copied except the one
//! selected, and a number is written exactly as it is stored (`5432`, `1.10`, a 30-digit
//! id), never re-formatted through a float. A string is written unquoted; a number, a
//! boolean or `null` as its JSON text; an object or an array as compact JSON (as
//! External Secrets and the AWS CSI provider write such values).
//!
//! Templates need the whole document as a value; [`document`] parses it, and every
//! string in it is zeroed before it is dropped. Errors name the key and what was wrong,
//! never the content: serde_json's own messages are replaced by their category and
//! position.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow};
use serde_json::Value;
use serde_json::value::RawValue;
use zeroize::Zeroize;

use crate::exit::Failure;
use crate::reference::JsonKey;
use crate::secret::SecretValue;

/// Returns the value at `key` in the JSON object held by `secret`: a string as it is,
/// anything else as its compact JSON text.
pub fn select(secret: &SecretValue, key: &JsonKey) -> Result<SecretValue> {
    select_inner(secret, key).context(Failure::BadData)
}

fn select_inner(secret: &SecretValue, key: &JsonKey) -> Result<SecretValue> {
    let root = parse(secret, &format!("key '{key}'"))?;
    let found = match key {
        JsonKey::Member(name) => match kind(root) {
            "an object" => member(root, name)?,
            other => {
                return Err(anyhow!(
                    "the secret is JSON {other} rather than an object, so key '{key}' cannot be read"
                ));
            }
        },
        JsonKey::Pointer(pointer) => walk(root, pointer)?,
    };
    match found {
        Some(raw) => text_of(raw),
        None => Err(anyhow!("the secret's JSON has no key '{key}'")),
    }
}

/// The members of the JSON object held by `secret` (or of the object at `key` in it),
/// each as the bytes of its file: strings as they are, anything else as compact JSON.
pub fn members(secret: &SecretValue, key: Option<&JsonKey>) -> Result<Vec<(String, SecretValue)>> {
    members_inner(secret, key).context(Failure::BadData)
}

fn members_inner(
    secret: &SecretValue,
    key: Option<&JsonKey>,
) -> Result<Vec<(String, SecretValue)>> {
    let root = parse(secret, "its members")?;
    let found = match key {
        None => Some(root),
        Some(JsonKey::Member(name)) if kind(root) == "an object" => member(root, name)?,
        Some(JsonKey::Member(_)) => None,
        Some(JsonKey::Pointer(pointer)) => walk(root, pointer)?,
    };
    let object = match found {
        Some(raw) if kind(raw) == "an object" => raw,
        Some(other) => {
            return Err(anyhow!(
                "explode needs a JSON object, and this is {}",
                kind(other)
            ));
        }
        None => {
            return Err(anyhow!(
                "the secret's JSON has no key '{}'",
                key.map(ToString::to_string).unwrap_or_default()
            ));
        }
    };
    let mut files = Vec::new();
    for (name, raw) in object_members(object)? {
        files.push((name, text_of(raw)?));
    }
    Ok(files)
}

/// The members of a raw JSON object, borrowed from the document (the last of a repeated
/// name wins, as in serde_json's own maps).
fn object_members(object: &RawValue) -> Result<BTreeMap<String, &RawValue>> {
    serde_json::from_str(object.get()).map_err(|err| malformed(&err, "its members"))
}

fn member<'d>(object: &'d RawValue, name: &str) -> Result<Option<&'d RawValue>> {
    Ok(object_members(object)?.remove(name))
}

/// Follows an RFC 6901 JSON Pointer (`/a/0/b`, `~1` for `/`, `~0` for `~`) through raw
/// objects and arrays, as [`Value::pointer`] does.
fn walk<'d>(root: &'d RawValue, pointer: &str) -> Result<Option<&'d RawValue>> {
    let mut current = root;
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let next = match kind(current) {
            "an object" => member(current, &token)?,
            "an array" => {
                let items: Vec<&RawValue> = serde_json::from_str(current.get())
                    .map_err(|err| malformed(&err, "an array"))?;
                array_index(&token).and_then(|index| items.get(index).copied())
            }
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}

/// An array index as RFC 6901 writes it: digits, without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    match digits && (token == "0" || !token.starts_with('0')) {
        true => token.parse().ok(),
        false => None,
    }
}

/// The file content for one raw value: a string unescaped, anything else as compact JSON
/// with its numbers exactly as written.
fn text_of(raw: &RawValue) -> Result<SecretValue> {
    let text = raw.get();
    if kind(raw) == "a string" {
        let unquoted: String =
            serde_json::from_str(text).map_err(|err| malformed(&err, "a string"))?;
        return Ok(SecretValue::from_string(unquoted));
    }
    Ok(SecretValue::new(compact(text.as_bytes())))
}

/// JSON text without the whitespace between its tokens; strings are copied untouched.
fn compact(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        }
        out.push(byte);
    }
    out
}

/// How deep objects and arrays may nest: serde_json's own limit for a `Value`. Reading
/// into a [`RawValue`] skips nested values without that limit, so it is checked first.
const MAX_DEPTH: usize = 128;

/// The secret as one raw JSON document, checked whole, borrowed rather than copied.
fn parse<'s>(secret: &'s SecretValue, what: &str) -> Result<&'s RawValue> {
    let bytes = secret.expose();
    if let Some(offset) = too_deep(bytes) {
        return Err(anyhow!(
            "the secret is not valid JSON (nested more than {MAX_DEPTH} levels deep at byte \
             {offset}), so {what} cannot be read"
        ));
    }
    serde_json::from_slice(bytes).map_err(|err| malformed(&err, what))
}

/// Where `bytes` first opens an object or array past [`MAX_DEPTH`], outside strings; a
/// linear scan with no recursion, whatever the input.
fn too_deep(bytes: &[u8]) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (offset, &byte) in bytes.iter().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(offset);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// serde_json's error by category and position only: its message can quote the input.
fn malformed(err: &serde_json::Error, what: &str) -> anyhow::Error {
    anyhow!(
        "the secret is not valid JSON ({:?} error at line {}, column {}), so {what} cannot be read",
        err.classify(),
        err.line(),
        err.column()
    )
}

/// The JSON value held by `secret`, for templates; `None` when it is not JSON.
pub fn document(secret: &SecretValue) -> Option<Scrubbed> {
    serde_json::from_slice::<Value>(secret.expose())
        .ok()
        .map(Scrubbed)
}

/// What a raw JSON value is, from its first byte (a [`RawValue`] has no leading
/// whitespace).
fn kind(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// A parsed document whose strings are zeroed on drop.
pub struct Scrubbed(pub Value);

impl Drop for Scrubbed {
    fn drop(&mut self) {
        scrub(&mut self.0);
    }
}

fn scrub(value: &mut Value) {
    match value {
        Value::String(text) => text.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::Object(members) => members.values_mut().for_each(scrub),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> SecretValue {
        SecretValue::from_string(text.to_owned())
    }

    fn member(name: &str) -> JsonKey {
        JsonKey::Member(name.to_owned())
    }

    #[test]
    fn nesting_past_the_limit_is_refused_before_parsing() {
        let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(too_deep(nested(MAX_DEPTH).as_bytes()), None);
        assert_eq!(too_deep(nested(MAX_DEPTH + 1).as_bytes()), Some(MAX_DEPTH));
        // Brackets inside strings, escaped quotes included, are text.
        let text = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert_eq!(too_deep(text.as_bytes()), None);
        let deep = secret(&format!(r#"{{"a":{}}}"#, nested(MAX_DEPTH)));
        let err = select(&deep, &member("a")).unwrap_err();
        assert!(format!("{err:#}").contains("not valid JSON"), "{err:#}");
    }

    #[test]
    fn selects_members_and_pointers() {
        let doc = secret(r#"{"password":"p\"w","db":{"user":"u","port":5432}}"#);
        assert_eq!(select(&doc, &member("password")).unwrap().expose(), b"p\"w");
        let pointer = JsonKey::Pointer("/db/user".to_owned());
        assert_eq!(select(&doc, &pointer).unwrap().expose(), b"u");
    }

    /// Issue 18: an RDS-managed secret's port is a number; it is published as it is
    /// written, and objects and arrays as compact JSON.
    #[test]
    fn non_strings_are_their_json_text() {
        let doc = secret(
            r#"{"port": 5432, "ratio": 1.10, "big": 123456789012345678901234567890,
                "on": true, "off": false, "none": null,
                "tls": {"mode" : "verify full", "ca": [ 1, "a b" ]}, "list": [ ]}"#,
        );
        for (key, want) in [
            ("port", "5432"),
            ("ratio", "1.10"),
            ("big", "123456789012345678901234567890"),
            ("on", "true"),
            ("off", "false"),
            ("none", "null"),
            ("tls", r#"{"mode":"verify full","ca":[1,"a b"]}"#),
            ("list", "[]"),
        ] {
            let got = select(&doc, &member(key)).unwrap();
            assert_eq!(String::from_utf8_lossy(got.expose()), want, "#{key}");
        }
        let pointer = |p: &str| select(&doc, &JsonKey::Pointer(p.to_owned()));
        assert_eq!(pointer("/tls/ca/1").unwrap().expose(), b"a b");
        assert_eq!(pointer("/tls/ca/0").unwrap().expose(), b"1");
        for absent in ["/tls/ca/2", "/tls/ca/01", "/tls/ca/-", "/port/x", "/nope"] {
            assert_eq!(
                Failure::of(&pointer(absent).unwrap_err()),
                Failure::BadData,
                "{absent}"
            );
        }
        let escaped = secret(r#"{"a/b": {"c~d": "e\u00e9\n"}}"#);
        let got = select(&escaped, &JsonKey::Pointer("/a~1b/c~0d".into())).unwrap();
        assert_eq!(got.expose(), "e\u{e9}\n".as_bytes());
    }

    #[test]
    fn bad_data_is_classified_and_never_quoted() {
        let sentinel = "hunter2-sentinel";
        let cases = [
            (format!(r#"{{"a":"{sentinel}"}}"#), member("missing")),
            (format!(r#"{{"a":{{"b":"{sentinel}"}}}}"#), member("b")),
            (format!("not json {sentinel}"), member("a")),
            (format!(r#"["{sentinel}"]"#), member("a")),
            (format!(r#"{{"a":"{sentinel}""#), member("a")),
            (
                format!(r#"{{"a":"{sentinel}"}}"#),
                JsonKey::Pointer("/a/b".to_owned()),
            ),
        ];
        for (text, key) in cases {
            let err = select(&secret(&text), &key).unwrap_err();
            assert_eq!(Failure::of(&err), Failure::BadData);
            let message = format!("{err:#} {err:?}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[test]
    fn members_become_files() {
        let doc = secret(r#"{"user":"u","port":5432,"tls":{"on":true},"nested":{"a":"b"}}"#);
        let files: Vec<(String, Vec<u8>)> = members(&doc, None)
            .unwrap()
            .into_iter()
            .map(|(name, value)| (name, value.expose().to_vec()))
            .collect();
        assert_eq!(
            files,
            [
                ("nested".to_owned(), br#"{"a":"b"}"#.to_vec()),
                ("port".to_owned(), b"5432".to_vec()),
                ("tls".to_owned(), br#"{"on":true}"#.to_vec()),
                ("user".to_owned(), b"u".to_vec()),
            ]
        );
        let nested = members(&doc, Some(&JsonKey::Pointer("/nested".to_owned()))).unwrap();
        assert_eq!(nested[0].0, "a");
        for bad in [None, Some(&member("user"))] {
            let err = members(&secret("[1]"), bad)
                .err()
                .or_else(|| members(&doc, bad).err());
            assert_eq!(Failure::of(&err.unwrap()), Failure::BadData);
        }
    }

    #[test]
    fn scrub_zeroes_every_string() {
        let mut value: Value = serde_json::from_str(r#"{"a":["xy",{"b":"z"}]}"#).unwrap();
        scrub(&mut value);
        assert_eq!(value, serde_json::json!({"a": ["", {"b": ""}]}));
    }
}
