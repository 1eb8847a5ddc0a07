//! Config files generated from fuzz bytes, with a sentinel only where YAML has values.
//!
//! The config parser must not quote a file's values in its errors, but it may (and
//! should) name a misspelt field, so "the sentinel never appears in an error" only holds
//! when the sentinel is never in a key, a tag or an anchor. Arbitrary text cannot promise
//! that, so this module writes the YAML itself: keys come from a fixed list (field names,
//! misspellings, odd but harmless names) and never contain the sentinel; values are
//! scalars in every style (plain, quoted, block, tagged), sequences and mappings, nested
//! in block or flow form, and each scalar is escaped for its style so it stays one value.

use libfuzzer_sys::arbitrary::{Result, Unstructured};

/// Planted in values; it must never reach an error message.
pub const SENTINEL: &str = "SENTINELX9";

/// The config's field names, and keys it must reject: misspellings and odd names.
/// None contains the sentinel.
const FIELDS: &[&str] = &[
    "secrets",
    "files",
    "ref",
    "file",
    "key",
    "mode",
    "owner",
    "format",
    "optional",
    "values",
    "template",
    "template_file",
];
const ODD_KEYS: &[&str] = &[
    "flie",
    "Ref",
    "refs",
    "secret",
    "DB_PASSWORD",
    "0",
    "",
    "a b",
    "é",
    "-x",
    "? k",
    "true",
    "null",
];

/// Values that are not secrets, so the parser gets past type errors to deeper ones.
const PLAIN_VALUES: &[&str] = &[
    "aws://prod/db",
    "aws://arn:aws:secretsmanager:eu-west-1:1:secret:x-AbCdEf",
    "db/password",
    "password",
    "/db/password",
    "0400",
    "1000:1000",
    "raw",
    "env",
    "json",
    "template",
    "true",
    "false",
    "null",
    "~",
    "",
    "123",
    "0x1F",
    "1e9",
    ".inf",
];

/// Characters around the sentinel, chosen to break naive quoting and redaction.
const AROUND: &[char] = &[
    'a',
    'Z',
    '0',
    ' ',
    '"',
    '\'',
    '\\',
    ':',
    '#',
    '\n',
    '\t',
    '{',
    '}',
    '[',
    ']',
    ',',
    '-',
    '`',
    '…',
    'é',
    '\u{1F512}',
    '*',
    '&',
    '!',
    '|',
    '>',
    '%',
    '@',
];

const TAGS: &[&str] = &[
    "!!str",
    "!!int",
    "!!bool",
    "!!float",
    "!!null",
    "!!binary",
    "!!seq",
    "!!map",
    "!!timestamp",
    "!custom",
];

enum Node {
    Scalar {
        text: String,
        style: Style,
        tag: Option<&'static str>,
    },
    Seq {
        items: Vec<Node>,
        flow: bool,
    },
    Map {
        entries: Vec<(String, Node)>,
        flow: bool,
    },
}

#[derive(Clone, Copy)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
    Folded,
}

/// A YAML document built from `u`, sometimes cut short.
pub fn document(u: &mut Unstructured) -> Result<String> {
    // Mostly the config's own shape (`secrets:` or `files:` and a list of entries), so
    // that values reach the typed fields; sometimes anything at all.
    let top = if u.ratio(3, 4)? {
        let mut items = Vec::new();
        for _ in 0..u.int_in_range(0..=3)? {
            items.push(Node::Map {
                entries: entries(u, 2)?,
                flow: u.ratio(1, 4)?,
            });
        }
        let list = Node::Seq {
            items,
            flow: u.ratio(1, 6)?,
        };
        let mut top = vec![((*u.choose(&["secrets", "files"])?).to_owned(), list)];
        if u.ratio(1, 4)? {
            top.extend(entries(u, 1)?);
        }
        Node::Map {
            entries: top,
            flow: false,
        }
    } else {
        node(u, 0)?
    };
    let mut out = String::new();
    match &top {
        Node::Map {
            entries,
            flow: false,
        } if !entries.is_empty() => block_map(entries, 0, &mut out),
        Node::Seq { items, flow: false } if !items.is_empty() => block_seq(items, 0, &mut out),
        other => {
            out.push_str(&flow(other));
            out.push('\n');
        }
    }
    if u.ratio(1, 8)? {
        // Cut anywhere (on a character boundary): unterminated quotes, blocks, flows.
        let mut at = u.int_in_range(0..=out.len())?;
        while !out.is_char_boundary(at) {
            at -= 1;
        }
        out.truncate(at);
    }
    Ok(out)
}

fn node(u: &mut Unstructured, depth: usize) -> Result<Node> {
    let kind = if depth >= 4 {
        0
    } else {
        u.int_in_range(0..=3)?
    };
    Ok(match kind {
        0 | 1 => scalar(u)?,
        2 => {
            let mut items = Vec::new();
            for _ in 0..u.int_in_range(0..=3)? {
                items.push(node(u, depth + 1)?);
            }
            Node::Seq {
                items,
                flow: u.ratio(1, 3)?,
            }
        }
        _ => Node::Map {
            entries: entries(u, depth + 1)?,
            flow: u.ratio(1, 3)?,
        },
    })
}

fn entries(u: &mut Unstructured, depth: usize) -> Result<Vec<(String, Node)>> {
    let mut entries = Vec::new();
    for _ in 0..u.int_in_range(0..=5)? {
        let key = if u.ratio(3, 4)? {
            u.choose(FIELDS)?
        } else {
            u.choose(ODD_KEYS)?
        };
        let key = (*key).to_owned();
        entries.push((key, node(u, depth)?));
    }
    Ok(entries)
}

fn scalar(u: &mut Unstructured) -> Result<Node> {
    let text = if u.ratio(2, 3)? {
        let mut text = String::new();
        for _ in 0..u.int_in_range(0..=3)? {
            text.push(*u.choose(AROUND)?);
        }
        text.push_str(SENTINEL);
        for _ in 0..u.int_in_range(0..=3)? {
            text.push(*u.choose(AROUND)?);
        }
        text
    } else {
        (*u.choose(PLAIN_VALUES)?).to_owned()
    };
    let style = *u.choose(&[
        Style::Plain,
        Style::Single,
        Style::Double,
        Style::Literal,
        Style::Folded,
    ])?;
    let tag = if u.ratio(1, 6)? {
        Some(*u.choose(TAGS)?)
    } else {
        None
    };
    Ok(Node::Scalar { text, style, tag })
}

/// Plain only when the text cannot be read as anything but one plain scalar, in block
/// and flow context alike.
fn plain_safe(text: &str) -> bool {
    let bytes = text.as_bytes();
    !text.is_empty()
        && bytes[0].is_ascii_alphanumeric()
        && text.char_indices().all(|(i, c)| {
            c.is_ascii_alphanumeric()
                || "_./=@+-".contains(c)
                || (c == ':' && bytes.get(i + 1) == Some(&b'/'))
        })
}

fn double_quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn single_quoted(text: &str) -> String {
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("'{}'", text.replace('\'', "''"))
}

/// A key: plain when it is a simple word, else double-quoted.
fn key(text: &str) -> String {
    let simple = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if simple {
        text.to_owned()
    } else {
        double_quoted(text)
    }
}

fn inline_scalar(text: &str, style: Style, tag: Option<&str>) -> String {
    let body = match style {
        Style::Plain if plain_safe(text) => text.to_owned(),
        Style::Single => single_quoted(text),
        _ => double_quoted(text),
    };
    match tag {
        Some(tag) => format!("{tag} {body}"),
        None => body,
    }
}

fn flow(node: &Node) -> String {
    match node {
        Node::Scalar { text, style, tag } => inline_scalar(text, *style, *tag),
        Node::Seq { items, .. } => {
            let items: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", items.join(", "))
        }
        Node::Map { entries, .. } => {
            let entries: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}: {}", key(k), flow(v)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
    }
}

/// Writes the value of an entry whose `key:` or `-` is already on the line; `indent` is
/// the column of that key or dash.
fn block_value(node: &Node, indent: usize, out: &mut String) {
    match node {
        Node::Scalar {
            text,
            style: style @ (Style::Literal | Style::Folded),
            tag,
        } => {
            out.push(' ');
            if let Some(tag) = tag {
                out.push_str(tag);
                out.push(' ');
            }
            // An explicit indentation indicator, so a line that starts with spaces can
            // never end the block early and turn the rest into keys.
            out.push_str(if matches!(style, Style::Literal) {
                "|2-\n"
            } else {
                ">2-\n"
            });
            for line in text.split('\n') {
                out.push_str(&" ".repeat(indent + 2));
                out.push_str(line);
                out.push('\n');
            }
        }
        Node::Map {
            entries,
            flow: false,
        } if !entries.is_empty() => {
            out.push('\n');
            block_map(entries, indent + 2, out);
        }
        Node::Seq { items, flow: false } if !items.is_empty() => {
            out.push('\n');
            block_seq(items, indent + 2, out);
        }
        other => {
            out.push(' ');
            out.push_str(&flow(other));
            out.push('\n');
        }
    }
}

fn block_map(entries: &[(String, Node)], indent: usize, out: &mut String) {
    for (k, v) in entries {
        out.push_str(&" ".repeat(indent));
        out.push_str(&key(k));
        out.push(':');
        block_value(v, indent, out);
    }
}

fn block_seq(items: &[Node], indent: usize, out: &mut String) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        block_value(item, indent, out);
    }
}
