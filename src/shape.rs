//! Turning fetched values into the files an application reads.
//!
//! Per secret: the raw value, one JSON key of it, every member of a JSON object as its own
//! file (`explode`), or base64-decoded bytes. Per aggregate: an env file, a JSON object or a
//! minijinja template built from several values. Every failure here is bad data (exit 7),
//! except template syntax, which the plan checks before anything is fetched (exit 2).

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use zeroize::{Zeroize, Zeroizing};

use crate::certificate::{self, Part};
use crate::exit::Failure;
use crate::extract;
use crate::paths::validate_file;
use crate::reference::{Format, SecretRef};
use crate::secret::SecretValue;

/// The kinds of file assembled from several secrets (`files:` in the config).
#[derive(Debug)]
pub enum AggregateKind {
    /// `NAME='value'` lines that `sh` and dotenv parsers read back alike. A value with a
    /// line break is refused unless `multiline`: line-oriented readers (Docker's
    /// `--env-file`, `while read` loops, older dotenv versions) would take each line for a
    /// variable of its own.
    Env { multiline: bool },
    /// One JSON object of strings.
    Json,
    /// A minijinja template, checked when the plan is built.
    Template(String),
}

/// The value one reference stands for: its `#KEY`, then base64-decoded if asked.
pub fn value(reference: &SecretRef, fetched: &SecretValue) -> Result<SecretValue> {
    let selected = match &reference.key {
        Some(key) => extract::select(fetched, key)?,
        None => SecretValue::new(fetched.expose().to_vec()),
    };
    let part = match reference.options.format.unwrap_or_default() {
        Format::Base64 => return decode_base64(&selected).context(Failure::BadData),
        Format::Raw | Format::Explode => return Ok(selected),
        Format::PemKey => Part::Key,
        Format::PemCert => Part::Certificate,
        Format::PemChain => Part::Chain,
        Format::PemBundle => Part::Bundle,
    };
    certificate::convert(&selected, part).context(Failure::BadData)
}

/// The files of an exploded secret: `(member name, bytes)`, names checked as file names.
pub fn explode(reference: &SecretRef, fetched: &SecretValue) -> Result<Vec<(String, SecretValue)>> {
    let members = extract::members(fetched, reference.key.as_ref())?;
    for (name, _) in &members {
        if name.contains('/') {
            return Err(anyhow!(
                "member '{}' cannot be a file name: it contains '/'",
                name.escape_debug()
            ))
            .context(Failure::BadData);
        }
        validate_file(name)
            .with_context(|| format!("member '{}' cannot be a file name", name.escape_debug()))
            .context(Failure::BadData)?;
    }
    Ok(members)
}

/// The files of a set of values under a path (a Parameter Store path, which the provider
/// hands over as one JSON object of relative names): `(relative path, bytes)`, each path
/// checked by the file-name rules, so a name with `..`, a control character or a
/// component the publisher reserves is refused (exit 7) rather than written.
pub fn tree(fetched: &SecretValue) -> Result<Vec<(String, SecretValue)>> {
    let files = extract::members(fetched, None)?;
    for (name, _) in &files {
        validate_file(name)
            .with_context(|| format!("parameter '{}' cannot be a file name", name.escape_debug()))
            .context(Failure::BadData)?;
    }
    Ok(files)
}

fn decode_base64(value: &SecretValue) -> Result<SecretValue> {
    match SecretValue::from_base64(value.expose()) {
        Some(bytes) => Ok(bytes),
        None => bail!("format=base64, but the value is not valid base64"),
    }
}

/// Renders an aggregate file from `(name, value)` pairs. For templates, a value that is a
/// JSON object (a whole secret, no `#KEY`) is available as an object: `{{ db.password }}`.
pub fn aggregate(kind: &AggregateKind, values: &[(&str, SecretValue)]) -> Result<SecretValue> {
    match kind {
        AggregateKind::Env { multiline } => env_file(values, *multiline),
        AggregateKind::Json => json_file(values),
        AggregateKind::Template(source) => template(source, values),
    }
    .context(Failure::BadData)
}

fn text<'v>(name: &str, value: &'v SecretValue) -> Result<&'v str> {
    std::str::from_utf8(value.expose()).map_err(|_| anyhow!("value {name} is not UTF-8 text"))
}

/// `NAME='value'` lines. Single quotes keep everything literal in `sh` and in dotenv
/// parsers alike, as long as the value has no `'`, no `\\` and no trailing `\`
/// (python-dotenv unescapes `\\` and `\'` even inside single quotes). Otherwise a value is
/// double-quoted, which they all read the same way only without `"`, `\`, `$` and `` ` ``.
/// Anything else has no spelling every parser agrees on, and is refused rather than
/// published wrong; so is `${`, which python-dotenv expands in every quoting.
fn env_file(values: &[(&str, SecretValue)], multiline: bool) -> Result<SecretValue> {
    let mut out = Zeroizing::new(String::new());
    for (name, value) in values {
        let value = text(name, value)?;
        if value.contains('\0') {
            bail!("value {name} contains a NUL byte, which no environment variable can hold");
        }
        if !multiline && value.contains(['\n', '\r']) {
            bail!(
                "value {name} contains a line break: a line-oriented reader (docker --env-file, \
                 a `while read` loop) would read the next line as a variable of its own. Publish \
                 it as its own file, or set multiline: true on this file if every reader \
                 handles quoted line breaks (sh, python-dotenv, Node's dotenv)"
            );
        }
        if value.contains("${") {
            bail!(
                "value {name} contains '${{', which python-dotenv expands as a variable whatever \
                 the quoting; publish it as its own file instead"
            );
        }
        let quote = if !value.contains('\'') && !value.contains("\\\\") && !value.ends_with('\\') {
            '\''
        } else if !value.contains(['"', '\\', '$', '`']) {
            '"'
        } else {
            bail!(
                "value {name} mixes a single quote with \\, \", $ or `, which sh and dotenv \
                 parsers read differently; publish it as its own file instead"
            );
        };
        out.push_str(name);
        out.push('=');
        out.push(quote);
        out.push_str(value);
        out.push(quote);
        out.push('\n');
    }
    Ok(SecretValue::from_string(std::mem::take(&mut *out)))
}

/// `{"NAME": "value", ...}` followed by a newline, written without a parsed copy.
fn json_file(values: &[(&str, SecretValue)]) -> Result<SecretValue> {
    let capacity = values
        .iter()
        .map(|(n, v)| n.len() + v.len() * 2 + 8)
        .sum::<usize>()
        + 4;
    let mut out = Zeroizing::new(Vec::with_capacity(capacity));
    out.push(b'{');
    for (index, (name, value)) in values.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, name)?;
        out.push(b':');
        serde_json::to_writer(&mut *out, text(name, value)?)?;
    }
    out.extend_from_slice(b"}\n");
    Ok(SecretValue::new(std::mem::take(&mut *out)))
}

/// The most a template may produce. Config files are kilobytes; this bounds what a runaway
/// template (or a huge value looped over) can make the process hold.
const MAX_RENDERED_BYTES: usize = 1024 * 1024;
/// The instructions a template may execute: far more than any config file takes, and a
/// fraction of a second, so a loop over a loop cannot keep the run busy.
const TEMPLATE_FUEL: u64 = 1_000_000;

fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // The output is a config file, not HTML.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.add_filter("b64encode", b64encode);
    env.add_filter("b64decode", b64decode);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env
}

/// What the base64 filters say when they fail: fixed text, never the value, so it is
/// shown although a failed operation's detail otherwise is not (see [`describe`]).
const NOT_BASE64: &str = "b64decode: the value is not base64";
const NOT_TEXT: &str = "b64decode: the decoded bytes are not UTF-8 text";

/// `{{ value | b64encode }}`: standard base64 with padding (a `.dockerconfigjson`'s
/// `auth`, an HTTP Basic header). Numbers and booleans are encoded as they print.
fn b64encode(value: &minijinja::Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(value.to_string())
}

/// `{{ value | b64decode }}`: base64 as `format=base64` reads it (standard or URL-safe,
/// padded or not, line breaks ignored), to UTF-8 text.
fn b64decode(value: &str) -> Result<String, minijinja::Error> {
    let invalid = |text| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, text);
    let bytes = SecretValue::from_base64(value.as_bytes()).ok_or_else(|| invalid(NOT_BASE64))?;
    String::from_utf8(bytes.expose().to_vec()).map_err(|err| {
        let mut bytes = err.into_bytes();
        bytes.zeroize();
        invalid(NOT_TEXT)
    })
}

/// Compiles a template without rendering it, so syntax errors are usage errors. The
/// template is configuration, not a secret, so its errors are shown in full.
pub fn check_template(source: &str) -> Result<()> {
    environment()
        .template_from_str(source)
        .map(drop)
        .map_err(|err| anyhow!("template does not compile: {}", describe(&err, true)))
}

fn template(source: &str, values: &[(&str, SecretValue)]) -> Result<SecretValue> {
    let env = environment();
    let compiled = env
        .template_from_str(source)
        .map_err(|err| anyhow!("template does not compile: {}", describe(&err, true)))?;
    let mut context = std::collections::BTreeMap::new();
    for (name, value) in values {
        let item = match extract::document(value) {
            Some(document) if document.0.is_object() => {
                minijinja::Value::from(minijinja::value::Serde(&document.0))
            }
            _ => minijinja::Value::from(text(name, value)?),
        };
        context.insert(*name, item);
    }
    let mut output = Capped::default();
    compiled
        .render_captured_to(context, &mut output)
        .map_err(|err| match output.full {
            true => anyhow!("the template's output is larger than {MAX_RENDERED_BYTES} bytes"),
            false => anyhow!("template failed: {}", describe(&err, false)),
        })?;
    Ok(SecretValue::new(std::mem::take(&mut *output.bytes)))
}

/// The rendered bytes, refused past [`MAX_RENDERED_BYTES`], in zeroizing memory.
#[derive(Default)]
struct Capped {
    bytes: Zeroizing<Vec<u8>>,
    full: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + data.len() > MAX_RENDERED_BYTES {
            self.full = true;
            return Err(std::io::Error::other("output too large"));
        }
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A minijinja error without its debug information, which can show variable values. At
/// render time its detail is shown only for kinds whose detail names template parts (an
/// undefined attribute, an unknown filter): an invalid operation's detail quotes its
/// operands (`unable to calculate 5432 // 0`), which may be secret.
fn describe(err: &minijinja::Error, compiling: bool) -> String {
    use minijinja::ErrorKind as Kind;
    let mut text = format!("{}", err.kind());
    let names_only = matches!(
        err.kind(),
        Kind::UndefinedError
            | Kind::UnknownFilter
            | Kind::UnknownTest
            | Kind::UnknownFunction
            | Kind::UnknownMethod
            | Kind::MissingArgument
            | Kind::TooManyArguments
    );
    let ours = |detail: &str| [NOT_BASE64, NOT_TEXT].contains(&detail);
    if let Some(detail) = err
        .detail()
        .filter(|detail| compiling || names_only || ours(detail))
    {
        text.push_str(": ");
        text.push_str(detail);
    }
    if let Some(line) = err.line() {
        text.push_str(&format!(" (line {line})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(values: &[(&'static str, &str)]) -> Vec<(&'static str, SecretValue)> {
        values
            .iter()
            .map(|(n, v)| (*n, SecretValue::from_string(v.to_string())))
            .collect()
    }

    fn render(kind: &AggregateKind, values: &[(&'static str, &str)]) -> Result<String> {
        aggregate(kind, &pairs(values)).map(|v| String::from_utf8(v.expose().to_vec()).unwrap())
    }

    #[test]
    fn env_quoting_chooses_the_form_every_parser_reads_alike() {
        let out = render(
            &AggregateKind::Env { multiline: true },
            &[
                ("A", "plain"),
                ("B", "it's"),
                ("C", "$HOME \"x\" `y` \\z\nline 2"),
                ("D", ""),
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            "A='plain'\nB=\"it's\"\nC='$HOME \"x\" `y` \\z\nline 2'\nD=''\n"
        );
        for bad in [
            "it's $HOME",
            "it's \\",
            "it's \"",
            "a\\\\b $x",
            "$x ends\\",
            "nul\0",
            "${PATH}",
        ] {
            let err = render(&AggregateKind::Env { multiline: true }, &[("A", bad)]).unwrap_err();
            assert_eq!(Failure::of(&err), Failure::BadData);
            assert!(!format!("{err:#}").contains(bad), "{err:#}");
        }
    }

    #[test]
    fn line_breaks_in_env_values_need_the_files_consent() {
        let single_line = AggregateKind::Env { multiline: false };
        for injected in ["x\nLD_PRELOAD=/tmp/evil.so", "x\rLD_PRELOAD=/tmp/evil.so"] {
            let err = render(&single_line, &[("DB_PASSWORD", injected)]).unwrap_err();
            assert_eq!(Failure::of(&err), Failure::BadData);
            let text = format!("{err:#}");
            assert!(
                text.contains("DB_PASSWORD") && text.contains("line break"),
                "{text}"
            );
            assert!(!text.contains("LD_PRELOAD"), "{text}");
        }
        assert_eq!(
            render(&single_line, &[("A", "one line")]).unwrap(),
            "A='one line'\n"
        );
    }

    #[test]
    fn json_file_escapes_values() {
        let out = render(&AggregateKind::Json, &[("a", "x\"y\n"), ("b", "z")]).unwrap();
        assert_eq!(out, "{\"a\":\"x\\\"y\\n\",\"b\":\"z\"}\n");
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["a"], "x\"y\n");
    }

    #[test]
    fn templates_see_objects_and_strings_and_reject_undefined() {
        let kind = AggregateKind::Template(
            "url=postgres://{{ db.user }}:{{ pw }}@h/{{ db.name }}\n".into(),
        );
        let out = render(
            &kind,
            &[("db", r#"{"user":"u","name":"n"}"#), ("pw", "p&w")],
        )
        .unwrap();
        assert_eq!(out, "url=postgres://u:p&w@h/n\n");

        let missing = AggregateKind::Template("{{ db.nope }}".into());
        let err = render(&missing, &[("db", r#"{"user":"sentinel-value"}"#)]).unwrap_err();
        assert_eq!(Failure::of(&err), Failure::BadData);
        assert!(!format!("{err:#}").contains("sentinel-value"), "{err:#}");

        assert!(check_template("{{ unclosed").is_err());
        let syntax = check_template("{% for x in %}").unwrap_err();
        assert!(format!("{syntax:#}").contains("line 1"), "{syntax:#}");
        assert!(check_template("{% for x in y %}{{ x }}{% endfor %}").is_ok());
    }

    #[test]
    fn template_work_and_output_are_bounded_and_errors_never_show_operands() {
        // A failed operation's detail quotes its operands: here, a secret number.
        let division = AggregateKind::Template("{{ db.pin // 0 }}".into());
        let err = render(&division, &[("db", r#"{"pin":918273645}"#)]).unwrap_err();
        assert_eq!(Failure::of(&err), Failure::BadData);
        let text = format!("{err:#}");
        assert!(!text.contains("918273645"), "{text}");
        assert!(text.contains("invalid operation"), "{text}");

        let endless = AggregateKind::Template(
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
                .into(),
        );
        let err = render(&endless, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("fuel"), "{err:#}");

        let huge =
            AggregateKind::Template("{% for a in range(30000) %}{{ db }}{% endfor %}".into());
        let err = render(&huge, &[("db", &"x".repeat(100))]).unwrap_err();
        assert!(format!("{err:#}").contains("larger than"), "{err:#}");
    }

    #[test]
    fn templates_encode_and_decode_base64_and_fail_without_quoting() {
        let kind = AggregateKind::Template(
            "{{ (user ~ ':' ~ pw) | b64encode }} {{ packed | b64decode }} {{ 5432 | b64encode }}"
                .into(),
        );
        let out = render(
            &kind,
            &[("user", "app"), ("pw", "p:w é"), ("packed", "aGkg8J+Riw")],
        )
        .unwrap();
        assert_eq!(out, "YXBwOnA6dyDDqQ== hi \u{1f44b} NTQzMg==");

        for (bad, says) in [("sentinel-not-b64!", NOT_BASE64), ("/w==", NOT_TEXT)] {
            let decode = AggregateKind::Template("{{ v | b64decode }}".into());
            let err = render(&decode, &[("v", bad)]).unwrap_err();
            assert_eq!(Failure::of(&err), Failure::BadData);
            let text = format!("{err:#}");
            assert!(text.contains(says) && !text.contains(bad), "{text}");
        }
    }

    #[test]
    fn base64_accepts_wrapped_and_url_safe_input() {
        // A secret of whichever provider this build has.
        let provider = if cfg!(feature = "aws") {
            "aws://x"
        } else if cfg!(feature = "azure") {
            "azure://vault1/x"
        } else {
            "gcp://p/x"
        };
        let reference = |text: &str| {
            let query = text.trim_start_matches("aws://x");
            SecretRef::parse(&format!("{provider}{query}")).unwrap()
        };
        let decoded = value(
            &reference("aws://x?format=base64"),
            &SecretValue::from_string("AAEC\n/w==\n".into()),
        )
        .unwrap();
        assert_eq!(decoded.expose(), [0, 1, 2, 255]);
        let url_safe = value(
            &reference("aws://x?format=base64"),
            &SecretValue::from_string("_w".into()),
        )
        .unwrap();
        assert_eq!(url_safe.expose(), [255]);
        let err = value(
            &reference("aws://x?format=base64"),
            &SecretValue::from_string("not base64!".into()),
        )
        .unwrap_err();
        assert_eq!(Failure::of(&err), Failure::BadData);
    }
}
