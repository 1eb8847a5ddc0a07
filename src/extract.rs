//! Picking one field out of a JSON secret (`#password`, `#/db/password`).
//!
//! The parsed document holds secret strings in ordinary heap memory, so every string in
//! it is zeroed before it is dropped. Errors name the key and what was wrong, never the
//! content: serde_json's own messages are replaced by their category and position.

use anyhow::{Context, Result, anyhow};
use serde_json::Value;
use zeroize::Zeroize;

use crate::exit::Class;
use crate::reference::JsonKey;
use crate::secret::SecretValue;

/// Returns the string at `key` in the JSON object held by `secret`.
pub fn select(secret: &SecretValue, key: &JsonKey) -> Result<SecretValue> {
    select_inner(secret, key).context(Class::BadData)
}

fn select_inner(secret: &SecretValue, key: &JsonKey) -> Result<SecretValue> {
    let mut document = Scrubbed(serde_json::from_slice::<Value>(secret.expose()).map_err(|err| {
        anyhow!(
            "the secret is not valid JSON ({:?} error at line {}, column {}), so key '{key}' cannot be read",
            err.classify(),
            err.line(),
            err.column()
        )
    })?);
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
struct Scrubbed(Value);

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
            assert_eq!(Class::of(&err), Class::BadData);
            let message = format!("{err:#} {err:?}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[test]
    fn scrub_zeroes_every_string() {
        let mut value: Value = serde_json::from_str(r#"{"a":["xy",{"b":"z"}]}"#).unwrap();
        scrub(&mut value);
        assert_eq!(value, serde_json::json!({"a": ["", {"b": ""}]}));
    }
}
