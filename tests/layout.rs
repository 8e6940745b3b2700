//! The shape of the source tree, checked: no two files of `src/` import each other, directly
//! or round a loop, and no file holds more than 600 lines of code before its tests (at most
//! two more than 500). `docs/ARCHITECTURE.md` says why.
//!
//! The import graph is read from the text, as a reader would follow it: every path that
//! starts with `crate::`, `super::` or `self::` (in `use` declarations, `{…}` groups expanded,
//! and inline), resolved to the longest prefix that is a file. A folder's `mod.rs` declaring
//! its files is not an import; test modules are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are `["a", "b"]`; `lib.rs` and `main.rs` are the root.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Module = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The file's code before its test module, comments removed.
fn code_of(text: &str) -> String {
    let code = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i]);
    code.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `{a, b::{c, d}}` groups expanded into whole paths.
fn expand(prefix: &str, body: &str, out: &mut Vec<String>) {
    let Some(open) = body.find('{') else {
        out.push(format!("{prefix}{body}"));
        return;
    };
    let close = body.rfind('}').unwrap_or(body.len());
    let head = &body[..open];
    let (mut depth, mut start) = (0, open + 1);
    for (i, ch) in body.char_indices().take(close).skip(open + 1) {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&format!("{prefix}{head}"), &body[start..i], out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < close {
        expand(&format!("{prefix}{head}"), &body[start..close], out);
    }
}

fn imported_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before_ok = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        let after = &rest[i + 4..];
        let end = after.find(';').unwrap_or(after.len());
        if before_ok {
            let body: String = after[..end]
                .split(" as ")
                .enumerate()
                .map(|(n, part)| {
                    if n == 0 {
                        part.to_string()
                    } else {
                        // Drop the alias: the word after `as`.
                        part.trim_start()
                            .trim_start_matches(|c: char| c.is_alphanumeric() || c == '_')
                            .to_string()
                    }
                })
                .collect::<String>()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            expand("", &body, &mut paths);
        }
        rest = &after[end..];
    }
    // Inline paths (`crate::clock::now_ms()`).
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            let boundary = at == 0
                || !(bytes[at - 1].is_ascii_alphanumeric()
                    || bytes[at - 1] == b'_'
                    || bytes[at - 1] == b':');
            let len = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(code.len() - at);
            if boundary {
                paths.push(code[at..at + len].to_string());
            }
            from = at + len.max(1);
        }
    }
    paths
}

fn resolve(module: &Module, path: &str, files: &BTreeSet<Module>) -> Option<Module> {
    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Module = match segs.first() {
        Some(&"crate") => {
            segs.remove(0);
            Vec::new()
        }
        Some(&"super") | Some(&"self") => module.clone(),
        _ => return None,
    };
    while let Some(&first) = segs.first() {
        match first {
            "super" => {
                base.pop();
            }
            "self" => {}
            _ => break,
        }
        segs.remove(0);
    }
    base.extend(segs.iter().map(|s| s.to_string()));
    (0..=base.len())
        .rev()
        .map(|k| base[..k].to_vec())
        .find(|m| files.contains(m))
        .filter(|m| !m.is_empty() && m != module)
}

fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    // Tarjan's strongly connected components; a component of more than one file is a loop.
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on_stack: BTreeSet<Module>,
        found: Vec<Vec<Module>>,
    }
    fn visit(s: &mut State<'_>, v: &Module) {
        let n = s.index.len();
        s.index.insert(v.clone(), n);
        s.low.insert(v.clone(), n);
        s.stack.push(v.clone());
        s.on_stack.insert(v.clone());
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v.clone(), low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v.clone(), low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = &w == v;
                component.push(w);
                if done {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

fn source() -> Vec<(Module, PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).expect("a source file is readable");
            (module_of(&src, &f), f, text)
        })
        .collect()
}

#[test]
fn no_two_files_import_each_other_directly_or_round_a_loop() {
    let sources = source();
    let files: BTreeSet<Module> = sources.iter().map(|(m, _, _)| m.clone()).collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, path, text) in &sources {
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let targets = edges.entry(module.clone()).or_default();
        for p in imported_paths(&code_of(text)) {
            if let Some(target) = resolve(module, &p, &files) {
                targets.insert(target);
            }
        }
    }
    let found: Vec<String> = cycles(&edges)
        .into_iter()
        .map(|c| {
            c.iter()
                .map(|m| m.join("/"))
                .collect::<Vec<_>>()
                .join(" <-> ")
        })
        .collect();
    assert!(found.is_empty(), "import loops: {found:#?}");
    // The check sees imports at all: the clock is imported from many places.
    let clock = vec!["clock".to_string()];
    assert!(edges.values().filter(|t| t.contains(&clock)).count() > 3);
}

#[test]
fn no_file_is_a_hub() {
    let mut long: Vec<(usize, String)> = source()
        .into_iter()
        .filter(|(_, path, _)| path.file_name().is_none_or(|n| n != "tests.rs"))
        .map(|(_, path, text)| {
            let code = text
                .find("#[cfg(test)]")
                .map_or(text.as_str(), |i| &text[..i]);
            (code.lines().count(), path.display().to_string())
        })
        .filter(|(n, _)| *n > 500)
        .collect();
    long.sort();
    assert!(
        long.iter().all(|(n, _)| *n <= 600),
        "files over 600 lines of code: {long:?}"
    );
    assert!(
        long.len() <= 2,
        "more than two files over 500 lines: {long:?}"
    );
}

#[test]
fn the_import_reader_expands_groups_and_resolves_relative_paths() {
    let mut out = Vec::new();
    expand("", "crate::a::{b,c::{d,e}}", &mut out);
    assert_eq!(out, ["crate::a::b", "crate::a::c::d", "crate::a::c::e"]);
    let files: BTreeSet<Module> = [vec!["a".into()], vec!["a".into(), "c".into()]]
        .into_iter()
        .collect();
    let here: Module = vec!["a".into(), "b".into()];
    assert_eq!(
        resolve(&here, "super::c::X", &files),
        Some(vec!["a".to_string(), "c".to_string()])
    );
    assert_eq!(
        resolve(&here, "crate::a::Y", &files),
        Some(vec!["a".to_string()])
    );
    assert_eq!(resolve(&here, "std::io", &files), None);
    let mut edges = BTreeMap::new();
    edges.insert(
        vec!["x".to_string()],
        BTreeSet::from([vec!["y".to_string()]]),
    );
    edges.insert(
        vec!["y".to_string()],
        BTreeSet::from([vec!["x".to_string()]]),
    );
    assert_eq!(cycles(&edges).len(), 1);
}
