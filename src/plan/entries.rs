//! The config file's entries (`secrets:` and `files:`) as plan items and aggregates.

use anyhow::{Context, Result, anyhow, bail};

use super::{Aggregate, Item};
use crate::config::{AggregateFormat, FileEntry, SecretEntry};
use crate::paths::{Owner, parse_mode, parse_owner, validate_file};
use crate::reference::{Format, JsonKey, SecretRef};
use crate::shape::AggregateKind;

/// A config entry: its fields and the reference's own `?options` may not both set a thing.
pub(super) fn item(entry: SecretEntry, mode: u32, owner: Option<Owner>) -> Result<Item> {
    let mut reference = SecretRef::parse(&entry.reference)?;
    if reference.target.is_tree() && (entry.key.is_some() || entry.format.is_some()) {
        bail!(
            "'{}' is a path: it publishes every parameter under it as a file, as stored, so \
             it takes no key and no format",
            entry.reference
        );
    }
    let twice = |what: &str| {
        anyhow!(
            "'{}' sets {what} in the reference and in the entry; give one",
            entry.reference
        )
    };
    if let Some(key) = &entry.key {
        if reference.key.is_some() {
            return Err(twice("a key"));
        }
        reference.key = Some(JsonKey::parse(key)?);
    }
    let options = &mut reference.options;
    if entry
        .format
        .is_some_and(|f| options.format.replace(f).is_some())
    {
        return Err(twice("format"));
    }
    if entry
        .optional
        .is_some_and(|o| options.optional.replace(o).is_some())
    {
        return Err(twice("optional"));
    }
    if let Some(text) = &entry.mode
        && options.mode.replace(parse_mode(text)?).is_some()
    {
        return Err(twice("mode"));
    }
    if let Some(text) = &entry.owner
        && options.owner.replace(parse_owner(text)?).is_some()
    {
        return Err(twice("owner"));
    }
    super::item(reference, entry.file, mode, owner)
}

/// A `files:` entry: an aggregate file, its values' references checked for what a value
/// can be.
pub(super) fn aggregate(entry: FileEntry, mode: u32, owner: Option<Owner>) -> Result<Aggregate> {
    validate_file(&entry.file)
        .with_context(|| format!("file name '{}'", entry.file.escape_debug()))?;
    let kind = match (entry.format, entry.template, entry.template_file) {
        (AggregateFormat::Template, Some(text), None) => AggregateKind::Template(text),
        (AggregateFormat::Template, None, Some(path)) => AggregateKind::Template(
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read template_file {}", path.display()))?,
        ),
        (AggregateFormat::Template, _, _) => {
            bail!("format: template needs exactly one of template or template_file")
        }
        (AggregateFormat::Env, None, None) => AggregateKind::Env {
            multiline: entry.multiline.unwrap_or(false),
        },
        (AggregateFormat::Json, None, None) => AggregateKind::Json,
        _ => bail!("template and template_file belong to format: template only"),
    };
    if entry.multiline.is_some() && !matches!(kind, AggregateKind::Env { .. }) {
        bail!("multiline belongs to format: env only");
    }
    if entry.values.is_empty() && !matches!(kind, AggregateKind::Template(_)) {
        bail!("'{}' has no values", entry.file);
    }
    let mut values = Vec::new();
    for (name, text) in entry.values {
        let identifier = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !identifier && !matches!(kind, AggregateKind::Json) {
            bail!("'{name}' is not a variable name ([A-Za-z_][A-Za-z0-9_]*)");
        }
        let reference = SecretRef::parse(&text).with_context(|| format!("value {name}"))?;
        let options = &reference.options;
        if options.optional.is_some() || options.mode.is_some() || options.owner.is_some() {
            bail!("value {name}: optional, mode and owner apply to files, not to values");
        }
        if options.format == Some(Format::Explode) || reference.target.is_tree() {
            bail!("value {name}: {text} makes files, not a value");
        }
        values.push((name, reference));
    }
    if let AggregateKind::Template(source) = &kind {
        crate::shape::check_template(source)?;
    }
    Ok(Aggregate {
        file: entry.file,
        kind,
        values,
        mode: entry
            .mode
            .as_deref()
            .map(parse_mode)
            .transpose()?
            .unwrap_or(mode),
        owner: entry
            .owner
            .as_deref()
            .map(parse_owner)
            .transpose()?
            .or(owner),
    })
}
