//! What a published file may be called and how it is owned, checked before anything is
//! fetched: relative names of plain components, the names derived from references, two
//! outputs that would clash, octal modes and numeric owners.
//!
//! The plan, the shaping of exploded JSON members, token mode and the publisher all
//! apply these same rules, so a name the plan accepts is one the publisher can write.

use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};

/// Linux's NAME_MAX.
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Linux's PATH_MAX less the terminating NUL.
pub const MAX_PATH_BYTES: usize = 4095;

/// A numeric owner for published files; the group is left alone when not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: Option<u32>,
}

/// A file name must be a relative path of plain components, each short enough for the
/// filesystem, none of them `.`, `..` or starting with `..` (names the publisher keeps for
/// itself), and no NUL anywhere.
pub fn validate_file(path: &str) -> Result<()> {
    if path.is_empty() {
        bail!("is empty");
    }
    if path.contains('\0') {
        bail!("contains a NUL byte");
    }
    if let Some(c) = path.chars().find(|c| is_unprintable(*c)) {
        // A name can come from a secret's JSON members: shown escaped, never raw.
        bail!(
            "contains the control character {}, which would let a file name forge log lines \
             or reorder what a terminal shows",
            c.escape_unicode()
        );
    }
    if path.starts_with('/') {
        bail!("is absolute; give a path relative to --output-dir");
    }
    if path.len() > MAX_PATH_BYTES {
        bail!("is {} bytes; the limit is {MAX_PATH_BYTES}", path.len());
    }
    for component in path.split('/') {
        if component.is_empty() {
            bail!("has an empty component (a doubled or trailing '/')");
        }
        if component == "." || component == ".." {
            bail!("has a '{component}' component");
        }
        if component.starts_with("..") {
            bail!("has a component starting with '..', which is reserved for the publisher");
        }
        if component.len() > MAX_COMPONENT_BYTES {
            bail!(
                "has a component of {} bytes; the limit is {MAX_COMPONENT_BYTES}",
                component.len()
            );
        }
    }
    Ok(())
}

/// Characters that change how text around them is shown rather than being shown: the C0
/// and C1 controls (newlines, escapes) and Unicode's bidirectional formatting characters.
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Two outputs collide when they name the same file (ignoring case, since the app may
/// run on a case-insensitive view of the files) or when one is a directory of the other.
/// Each output is `(path, what it comes from)`.
pub fn check_collisions(outputs: &[(&str, &str)]) -> Result<()> {
    let mut seen: HashMap<String, (&str, &str)> = HashMap::new();
    for &(path, source) in outputs {
        let folded = path.to_lowercase();
        if let Some((other_path, other)) = seen.get(&folded) {
            bail!("{other} ('{other_path}') and {source} ('{path}') name the same file");
        }
        seen.insert(folded, (path, source));
    }
    for &(path, source) in outputs {
        let folded = path.to_lowercase();
        let mut prefix = folded.as_str();
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            if let Some((other_path, other)) = seen.get(parent) {
                bail!(
                    "'{other_path}' (from {other}) is a file, but {source} needs it to be a directory for '{path}'"
                );
            }
            prefix = parent;
        }
    }
    Ok(())
}

/// An octal mode such as `0440`, `440` or `0o440`, at most `0777`.
pub fn parse_mode(text: &str) -> Result<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| anyhow!("mode '{text}' is not an octal number like 0440"))?;
    if mode > 0o777 {
        bail!("mode '{text}' is wider than 0777; setuid, setgid and sticky bits are not allowed");
    }
    Ok(mode)
}

/// `UID` or `UID:GID`, numeric, since minimal images have no user database.
pub fn parse_owner(text: &str) -> Result<Owner> {
    let number = |part: &str| {
        part.parse::<u32>()
            .map_err(|_| anyhow!("owner '{text}' is not UID or UID:GID (numbers)"))
    };
    match text.split_once(':') {
        Some((uid, gid)) => Ok(Owner {
            uid: number(uid)?,
            gid: Some(number(gid)?),
        }),
        None => Ok(Owner {
            uid: number(text)?,
            gid: None,
        }),
    }
}

/// Maps any string to one path component that the publisher accepts.
pub fn safe_component(raw: &str) -> String {
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with('.') {
        name.replace_range(0..1, "_");
    }
    // Every character is ASCII now, so any byte index is a char boundary.
    name.truncate(MAX_COMPONENT_BYTES);
    if name.is_empty() {
        name.push_str("secret");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_validation_table() {
        for ok in [
            "db",
            "tls/cert.pem",
            ".env",
            "a..b",
            "x".repeat(255).as_str(),
        ] {
            assert!(validate_file(ok).is_ok(), "{ok} should be accepted");
        }
        let long_path = vec!["x"; 2049].join("/");
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/..",
            "..data",
            "..x",
            "a/..b",
            ".",
            "a/./b",
            "a//b",
            "a/",
            "nul\0byte",
            "new\nline",
            "car\rriage",
            "esc\x1b[31m",
            "tab\tbed",
            "c1\u{85}",
            "rtl\u{202e}gpj.exe",
            "isolate\u{2067}x",
            "x".repeat(256).as_str(),
            long_path.as_str(),
        ] {
            assert!(validate_file(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn collisions_ignore_case_and_catch_files_used_as_directories() {
        assert!(check_collisions(&[("a", "x"), ("A", "y")]).is_err());
        assert!(check_collisions(&[("a", "x"), ("a/b", "y")]).is_err());
        assert!(check_collisions(&[("A/b", "x"), ("a", "y")]).is_err());
        assert!(check_collisions(&[("a", "x"), ("ab", "y"), ("c/a", "z")]).is_ok());
    }

    #[test]
    fn modes_and_owners() {
        assert_eq!(parse_mode("0440").unwrap(), 0o440);
        assert_eq!(parse_mode("0o600").unwrap(), 0o600);
        assert_eq!(parse_mode("400").unwrap(), 0o400);
        assert!(parse_mode("4755").is_err());
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("rw").is_err());
        assert_eq!(
            parse_owner("1000").unwrap(),
            Owner {
                uid: 1000,
                gid: None
            }
        );
        assert_eq!(
            parse_owner("1:2").unwrap(),
            Owner {
                uid: 1,
                gid: Some(2)
            }
        );
        assert!(parse_owner("app").is_err());
        assert!(parse_owner("1:").is_err());
    }

    #[test]
    fn safe_component_is_always_one_plain_component() {
        for (raw, want) in [
            ("prod/db", "prod_db"),
            ("..data", "_.data"),
            (".env", "_env"),
            ("", "secret"),
            ("a b\0c", "a_b_c"),
            ("ünï", "_n_"),
        ] {
            assert_eq!(safe_component(raw), want, "for {raw:?}");
            assert!(validate_file(&safe_component(raw)).is_ok());
        }
        assert_eq!(safe_component(&"x".repeat(300)).len(), 255);
    }
}
