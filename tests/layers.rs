//! The module layers of ARCHITECTURE.md, held against the code.
//!
//! ARCHITECTURE.md's layer table is the one statement of which module may use which: each
//! module uses only modules in its own layer or a lower one, and the modules of one layer
//! never form a cycle. This test reads that table, finds every `crate::…` path in `src/`
//! (in `use` lines and inline, tests included, comments excluded) and every `super::…`
//! path that climbs out of its top-level module, and fails on an edge that points up, on
//! a cycle, and on a module that the table does not list (so the table stays true as
//! modules are added).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Layer number and name for each top-level module, from ARCHITECTURE.md's table rows:
/// `| 2 | providers | `providers` | ... |`.
fn layer_table(text: &str) -> BTreeMap<String, (u32, String)> {
    let mut layers = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, number, name, modules, ..] = cells.as_slice() else {
            continue;
        };
        let Ok(number) = number.parse::<u32>() else {
            continue;
        };
        for module in modules.split(',') {
            let module = module.trim().trim_matches('`');
            assert!(
                layers
                    .insert(module.to_owned(), (number, name.to_string()))
                    .is_none(),
                "ARCHITECTURE.md lists `{module}` twice"
            );
        }
    }
    assert!(
        !layers.is_empty(),
        "no layer table found in ARCHITECTURE.md"
    );
    layers
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file: `src/providers/aws/errors.rs` → `[providers, aws,
/// errors]`, `src/providers/mod.rs` → `[providers]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a file without its comments (doc links are not dependencies) and string
/// literals (messages may name paths).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => in_string = true,
            // A char literal such as '"' must not open a string.
            '\'' if text_is_char_literal(&mut chars) => {}
            _ => out.push(c),
        }
    }
    out
}

/// Consumes a char literal's rest (`x'`, `\n'`, `"'`) when one starts here; lifetimes
/// (`'a`) are left alone.
fn text_is_char_literal(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    let mut ahead = chars.clone();
    let first = ahead.next();
    let literal = match first {
        Some('\\') => {
            ahead.next();
            ahead.find(|c| *c == '\'').is_some()
        }
        Some(_) => ahead.next() == Some('\''),
        None => false,
    };
    if literal {
        *chars = ahead;
    }
    literal
}

/// The top-level modules `code` (in the module at `path`) refers to outside itself.
/// Inline modules (`mod tests { … }`) deepen the path that `super` climbs from.
fn references(code: &str, path: &[String]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let chars: Vec<char> = code.chars().collect();
    // Brace depths at which inline modules were opened, innermost last.
    let mut inline_mods: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut pending_mod = false;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '{' => {
                depth += 1;
                if std::mem::take(&mut pending_mod) {
                    inline_mods.push(depth);
                }
                i += 1;
                continue;
            }
            '}' => {
                if inline_mods.last() == Some(&depth) {
                    inline_mods.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
                continue;
            }
            ';' => pending_mod = false,
            _ => {}
        }
        let at_start = i == 0 || !word(chars[i - 1]) && chars[i - 1] != ':';
        if !at_start || !word(chars[i]) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len() && (word(chars[j]) || chars[j] == ':') {
            j += 1;
        }
        let text: String = chars[i..j].iter().collect();
        if text == "mod" {
            pending_mod = true;
        }
        let segments: Vec<&str> = text.split("::").collect();
        // `crate::{a, b::c}`: the group's items are names at the root.
        let mut group = Vec::new();
        if segments.last() == Some(&"") && chars.get(j) == Some(&'{') {
            let mut level = 0;
            let mut item = String::new();
            for &c in &chars[j..] {
                match c {
                    '{' => level += 1,
                    '}' => level -= 1,
                    ',' if level == 1 => group.push(std::mem::take(&mut item)),
                    _ if level == 1 => item.push(c),
                    _ => {}
                }
                if level == 0 {
                    group.push(item);
                    break;
                }
            }
        }
        i = j;
        let here = path.len() + inline_mods.len();
        let at_root = match segments[0] {
            "crate" => Some(1),
            "super" => {
                let ups = segments.iter().take_while(|s| **s == "super").count();
                // Each `super` climbs one module.
                (here.checked_sub(ups) == Some(0)).then_some(ups)
            }
            _ => None,
        };
        let Some(at) = at_root else { continue };
        let mut targets: Vec<String> = segments
            .get(at)
            .map(|s| s.to_string())
            .into_iter()
            .collect();
        if at + 1 == segments.len() {
            targets.extend(group.iter().map(|item| {
                let item = item.trim();
                item.split("::").next().unwrap_or(item).trim().to_owned()
            }));
        }
        for target in targets {
            let name: String = target.chars().take_while(|c| word(*c)).collect();
            if !name.is_empty() && name != path[0] && name != "self" {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn modules_only_use_their_own_layer_or_lower_ones_and_never_in_a_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let layers = layer_table(&fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap());
    let src = root.join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);

    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in &files {
        let path = module_path(&src, file);
        let module = &path[0];
        if module == "main" || module == "lib" {
            continue;
        }
        let Some((layer, name)) = layers.get(module) else {
            problems.push(format!(
                "src/{module}: not in ARCHITECTURE.md's layer table; add it to the layer it belongs to"
            ));
            continue;
        };
        let code = code_only(&fs::read_to_string(file).unwrap());
        for target in references(&code, &path) {
            match layers.get(&target) {
                None => problems.push(format!(
                    "{}: uses crate::{target}, which the layer table does not list",
                    file.display()
                )),
                Some((other, other_name)) if other > layer => problems.push(format!(
                    "{}: {module} ({name}, layer {layer}) uses {target} ({other_name}, layer \
                     {other}), a higher layer",
                    file.display()
                )),
                Some(_) => {
                    edges.entry(module.clone()).or_default().insert(target);
                }
            }
        }
    }

    // Same-layer edges are allowed; a cycle among them is not.
    fn visit(
        module: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        problems: &mut Vec<String>,
    ) {
        if done.contains(module) {
            return;
        }
        if let Some(at) = stack.iter().position(|m| m == module) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(module.to_owned());
            problems.push(format!("module cycle: {}", cycle.join(" -> ")));
            return;
        }
        stack.push(module.to_owned());
        for next in edges.get(module).into_iter().flatten() {
            visit(next, edges, stack, done, problems);
        }
        stack.pop();
        done.insert(module.to_owned());
    }
    let mut done = BTreeSet::new();
    for module in edges.keys() {
        visit(module, &edges, &mut Vec::new(), &mut done, &mut problems);
    }

    for module in layers.keys() {
        let exists = src.join(format!("{module}.rs")).exists() || src.join(module).is_dir();
        if !exists {
            problems.push(format!(
                "ARCHITECTURE.md lists `{module}`, which src/ does not have"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn the_checker_sees_the_paths_it_must_see() {
    let path = [
        "providers".to_owned(),
        "aws".to_owned(),
        "errors".to_owned(),
    ];
    let code = code_only(
        "use crate::exit::Failure;\n\
         use super::super::Params; // crate::plan in a comment\n\
         let s = \"crate::plan\"; let c = '\"'; fn f<'a>() { crate::net::error_chain(x) }\n\
         use super::super::super::reference::SecretRef;\n\
         use crate::{fetch, render::{self, Shaped}};\n\
         mod tests { use super::super::super::Plan; use super::super::super::super::signal; }\n",
    );
    let names = ["exit", "fetch", "net", "reference", "render", "signal"];
    assert_eq!(
        references(&code, &path),
        names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>()
    );
}
