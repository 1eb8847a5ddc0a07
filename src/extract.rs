//! Picking one field out of a JSON secret (`#password`, `#/db/password`).
//!
//! The parsed document holds secret strings in ordinary heap memory, so every string in
//! it is zeroed before it is dropped. Errors name the key and what was wrong, never the
//! content: serde_json's own messages are replaced by their category and position.

use anyhow::{Context, Result, anyhow};
use serde_json::Value;
use zeroize::Zeroize;

use crate::exit::Failure;
use crate::reference::JsonKey;
use crate::secret::SecretValue;

/// Returns the string at `key` in the JSON object held by `secret`.
pub fn select(secret: &SecretValue, key: &JsonKey) -> Result<SecretValue> {
    select_inner(secret, key).context(Failure::BadData)
}

fn select_inner(secret: &SecretValue, key: &JsonKey) -> Result<SecretValue> {
    let mut document = parse(secret, &format!("key '{key}'"))?;
    let found = match key {
        JsonKey::Member(name) => match &mut document.0 {
            Value::Object(members) => members.get_mut(name),
            other => {
                return Err(anyhow!(
                    "the secret is JSON {} rather than an object, so key '{key}' cannot be read",
                    kind(other)
                ));
            }
        },
        JsonKey::Pointer(pointer) => document.0.pointer_mut(pointer),
    };
    match found {
        Some(Value::String(text)) => Ok(SecretValue::from_string(std::mem::take(text))),
        Some(other) => Err(anyhow!(
            "key '{key}' holds {} rather than a string",
            kind(other)
        )),
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
    let mut document = parse(secret, "its members")?;
    let found = match key {
        None => Some(&mut document.0),
        Some(JsonKey::Member(name)) => document.0.get_mut(name.as_str()),
        Some(JsonKey::Pointer(pointer)) => document.0.pointer_mut(pointer),
    };
    let members = match found {
        Some(Value::Object(members)) => members,
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
    let mut files = Vec::with_capacity(members.len());
    for (name, value) in members.iter_mut() {
        let bytes = match value {
            Value::String(text) => std::mem::take(text).into_bytes(),
            other => serde_json::to_vec(other).context("re-encoding a member")?,
        };
        files.push((name.clone(), SecretValue::new(bytes)));
    }
    Ok(files)
}

/// Parses a JSON secret for reading `what`; the document is zeroed when dropped.
fn parse(secret: &SecretValue, what: &str) -> Result<Scrubbed> {
    serde_json::from_slice::<Value>(secret.expose()).map(Scrubbed).map_err(|err| {
        anyhow!(
            "the secret is not valid JSON ({:?} error at line {}, column {}), so {what} cannot be read",
            err.classify(),
            err.line(),
            err.column()
        )
    })
}

/// The JSON value held by `secret`, for templates; `None` when it is not JSON.
pub fn document(secret: &SecretValue) -> Option<Scrubbed> {
    serde_json::from_slice::<Value>(secret.expose())
        .ok()
        .map(Scrubbed)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
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
    fn selects_members_and_pointers() {
        let doc = secret(r#"{"password":"p\"w","db":{"user":"u","port":5432}}"#);
        assert_eq!(select(&doc, &member("password")).unwrap().expose(), b"p\"w");
        let pointer = JsonKey::Pointer("/db/user".to_owned());
        assert_eq!(select(&doc, &pointer).unwrap().expose(), b"u");
    }

    #[test]
    fn bad_data_is_classified_and_never_quoted() {
        let sentinel = "hunter2-sentinel";
        let cases = [
            (format!(r#"{{"a":"{sentinel}"}}"#), member("missing")),
            (format!(r#"{{"a":{{"b":"{sentinel}"}}}}"#), member("a")),
            (format!(r#"{{"n":5,"a":"{sentinel}"}}"#), member("n")),
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
