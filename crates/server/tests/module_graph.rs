//! The server crate's module graph is the architecture (see the crate docs): each layer uses
//! only the layers below it, and no two files depend on each other, directly or through
//! others. This test reads the sources and fails on an upward edge or a cycle, so the clean
//! state cannot erode one convenient `use crate::…` at a time.
//!
//! A dependency is any `crate::a::b…` path outside comments (in `use` items and in
//! expressions alike), resolved to the deepest source file that exists; test modules
//! (`#[cfg(test)]` to the end of the file) are not counted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules, lowest layer first; a module may use its own layer and those before it.
const LAYERS: &[&[&str]] = &[
    &["metrics", "gateway"],
    &["http"],
    &["stages"],
    &["exchange"],
    &["endpoints", "admin", "ui"],
    &["ops", "background", "routes", "listener"],
];

fn layer_of(top: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&top))
        .unwrap_or_else(|| panic!("module `{top}` is in no layer: add it to LAYERS"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/exchange/row.rs` → `["exchange", "row"]`; `src/exchange/mod.rs` → `["exchange"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and without its test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::…` path in `code`, as segments; a `use crate::a::{b, c::d}` group yields
/// `a::b` and `a::c::d`.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while let Some(off) = code[i..].find("crate::") {
        let start = i + off;
        i = start + "crate::".len();
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue; // e.g. `tollgate_crate::`
        }
        let mut segs = Vec::new();
        let mut j = i;
        loop {
            let s = j;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            if j == s {
                break;
            }
            segs.push(code[s..j].to_string());
            if code[j..].starts_with("::{") {
                // A group: each member is a path relative to `segs`.
                let end = j + 3 + code[j + 3..].find('}').unwrap_or(0);
                for member in code[j + 3..end].split(',') {
                    let member: Vec<String> = member
                        .trim()
                        .split("::")
                        .map(|s| s.trim().trim_start_matches('{').to_string())
                        .filter(|s| !s.is_empty() && s != "self" && s != "*")
                        .collect();
                    let mut p = segs.clone();
                    p.extend(member);
                    out.push(p);
                }
                break;
            }
            if code[j..].starts_with("::") {
                j += 2;
            } else {
                break;
            }
        }
        if !segs.is_empty() {
            out.push(segs);
        }
        i = j.max(i);
    }
    out
}

#[test]
fn the_module_graph_is_layered_and_acyclic() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut upward = Vec::new();
    for f in &files {
        let from = module_of(&src, f);
        let text = std::fs::read_to_string(f).unwrap();
        for path in crate_paths(&code(&text)) {
            // The deepest source file the path lives in.
            let Some(to) = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| modules.contains(p))
            else {
                continue; // an item of the crate root (lib.rs)
            };
            if to == from || from.is_empty() {
                continue;
            }
            let (ft, tt) = (from[0].as_str(), to[0].as_str());
            if ft != tt && layer_of(tt) > layer_of(ft) {
                upward.push(format!("{} uses {}", from.join("::"), path.join("::")));
            }
            edges.entry(from.clone()).or_default().insert(to);
        }
    }
    assert!(
        upward.is_empty(),
        "a lower layer uses a higher one:\n{}",
        upward.join("\n")
    );
    // Cycle check over files: depth-first search with colours.
    fn visit(
        m: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) {
        match state.get(m) {
            Some(2) => return,
            Some(1) => {
                let at = stack.iter().position(|s| s == m).unwrap();
                let cycle: Vec<String> = stack[at..].iter().map(|s| s.join("::")).collect();
                panic!("import cycle: {} -> {}", cycle.join(" -> "), m.join("::"));
            }
            _ => {}
        }
        state.insert(m.clone(), 1);
        stack.push(m.clone());
        for n in edges.get(m).into_iter().flatten() {
            visit(n, edges, state, stack);
        }
        stack.pop();
        state.insert(m.clone(), 2);
    }
    let mut state = BTreeMap::new();
    for m in &modules {
        visit(m, &edges, &mut state, &mut Vec::new());
    }
    // The check must see the graph it claims to check.
    assert!(modules.len() > 20, "{modules:?}");
    assert!(
        edges.values().map(BTreeSet::len).sum::<usize>() > 40,
        "{edges:?}"
    );
}

#[test]
fn the_path_reader_reads_groups() {
    let paths = crate_paths(
        "use crate::stages::{self, auth, budget::{Shape}};\nlet x = crate::gateway::now_ms();",
    );
    let flat: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert!(flat.contains(&"stages::auth".to_string()), "{flat:?}");
    assert!(
        flat.contains(&"stages::budget::Shape".to_string()),
        "{flat:?}"
    );
    assert!(flat.contains(&"gateway::now_ms".to_string()), "{flat:?}");
}

/// `[dependencies]` names of a workspace crate (`crates/<dir>/Cargo.toml`).
fn crate_deps(dir: &str) -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(dir)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = BTreeSet::new();
    let mut in_deps = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
        } else if in_deps && let Some((name, _)) = line.split_once('=') {
            let name = name.trim();
            if !name.is_empty() && !name.starts_with('#') {
                out.insert(name.to_string());
            }
        }
    }
    out
}

/// The crate-level claims of ARCHITECTURE.md's code map: the pure crates reach no runtime, socket
/// or SQL crate (directly or through another workspace crate), `router` needs only std, rand and
/// serde, and `providers` uses no workspace crate but `types`.
#[test]
fn the_crate_graph_keeps_the_pure_crates_pure() {
    const IO: &[&str] = &[
        "tokio", "reqwest", "hyper", "axum", "sqlx", "rusqlite", "redis",
    ];
    for krate in [
        "types", "config", "pricing", "ingress", "router", "tokens", "finance",
    ] {
        let mut seen = BTreeSet::new();
        let mut todo = vec![krate.to_string()];
        while let Some(c) = todo.pop() {
            if !seen.insert(c.clone()) {
                continue;
            }
            for d in crate_deps(&c) {
                assert!(
                    !IO.contains(&d.as_str()),
                    "`{krate}` must stay pure, but `{c}` depends on `{d}`"
                );
                if let Some(inner) = d.strip_prefix("tollgate-") {
                    todo.push(inner.to_string());
                }
            }
        }
    }
    let router: Vec<String> = crate_deps("router").into_iter().collect();
    assert_eq!(router, ["rand", "serde"], "router's dependencies");
    let internal: Vec<String> = crate_deps("providers")
        .into_iter()
        .filter(|d| d.starts_with("tollgate-"))
        .collect();
    assert_eq!(
        internal,
        ["tollgate-types"],
        "providers' workspace dependencies"
    );
}
