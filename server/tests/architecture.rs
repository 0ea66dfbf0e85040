//! The import layers of `docs/architecture.md`, checked on every test run.
//!
//! Reads the sources of the three library crates as text (no build tool, nothing generated) and derives the
//! module graph from every `crate::…` and `super::…` path outside `#[cfg(test)]` modules. It then asserts:
//! - no import cycle between the files of `server`, `forecasting`, `forecasting/eval` and `gpu-agent` (a child
//!   naming one of its ancestor modules is not an edge: a module declares its children);
//! - in `server`, no import from a lower layer to a higher one:
//!   app > views > wiring > services > core > store > domain (the pure crates sit below all of it).
//!
//! A new top-level module of `server` must be given a layer here, or this test fails and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers of `server`, highest first. A module not named falls under its nearest named ancestor.
const LAYERS: &[(&str, &[&str])] = &[
    // Commands and process wiring: they may use anything.
    ("app", &["main", "", "startup", "bench", "demo", "evaluate", "faults"]),
    // HTTP: parse, call a service, render. `error` is the HTTP error every route answers with.
    ("views", &["routes", "auth", "error"]),
    // What the handlers share (pool, queues, caches below the views).
    ("wiring", &["state"]),
    // Workflows the views (API and web alike) call: ingest, command delivery, lockouts, credential caches.
    ("services", &["ingest", "delivery", "lockout", "auth::cache"]),
    // The engines: control loop, alerting, opportunities, actuators (Kubernetes, agents).
    ("core", &["control", "alerts", "opportunities", "actuators"]),
    // The only place with SQL.
    ("store", &["db", "pg"]),
    // Validated types, configuration, self-metrics, TLS material: import nothing above.
    ("domain", &["domain", "config", "telemetry", "tls"]),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("server/ has a parent").to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`; `lib.rs`/`main.rs` are the root `""`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    // A binary's own modules (`src/bin/x.rs`) are roots of their own crate; treat them as the app root.
    if parts.first().is_some_and(|p| p == "bin") {
        return String::new();
    }
    parts.join("::")
}

/// The source without comments and without `#[cfg(test)]` items (test code may reach anywhere).
fn production_code(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let b = src.as_bytes();
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        if in_str {
            if b[i] == b'\\' {
                i += 2;
                continue;
            }
            if b[i] == b'"' {
                in_str = false;
                out.push('"');
            } else {
                // A string's contents are not code: `"crate::x"` names nothing.
                out.push(if b[i] == b'\n' { '\n' } else { ' ' });
            }
            i += 1;
            continue;
        }
        // Raw strings (`r"…"`, `r#"…"#`, SQL mostly) end only at their own closing quote and hashes.
        if b[i] == b'r' && !(i > 0 && is_ident(b[i - 1] as char)) {
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            if b.get(i + 1 + hashes) == Some(&b'"') {
                let mut close = vec![b'"'];
                close.extend(std::iter::repeat_n(b'#', hashes));
                let body = i + 2 + hashes;
                let end = b[body..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |k| body + k + close.len());
                out.push_str("\"\"");
                i = end;
                continue;
            }
        }
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if b[i..].starts_with(b"/*") {
            i += 2;
            while i + 1 < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
            continue;
        }
        if b[i] == b'"' && !(i > 0 && b[i - 1] == b'\'') {
            in_str = true;
        }
        // Sources are ASCII where it matters; other bytes carry over without meaning anything here.
        out.push(if b[i].is_ascii() { b[i] as char } else { ' ' });
        i += 1;
    }
    // Drop `#[cfg(test)]` blocks: from the attribute to the brace that closes the item it opens.
    let mut cleaned = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        cleaned.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(open) = after.find(['{', ';']) else {
            rest = "";
            break;
        };
        if after.as_bytes()[open] == b';' {
            rest = &after[open + 1..];
            continue;
        }
        let mut depth = 0usize;
        let mut end = after.len();
        for (k, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    cleaned.push_str(rest);
    cleaned
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path that starts with `crate::` or `super::` (including each member of a `use crate::{…}` group).
fn paths(code: &str, module: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start) {
            let at = from + at;
            from = at + start.len();
            if at > 0 && code[..at].chars().next_back().is_some_and(is_ident) {
                continue;
            }
            // The base module the path starts from.
            let mut base: Vec<String> = if start == "crate::" {
                Vec::new()
            } else {
                let mut m: Vec<String> = module.split("::").filter(|s| !s.is_empty()).map(str::to_string).collect();
                // In `a/b.rs` (module a::b), `super` is `a`; in `a/b/mod.rs` too.
                m.pop();
                m
            };
            let mut rest = &code[from..];
            // Further `super::` hops.
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let close = group.find('}').unwrap_or(group.len());
                for item in group[..close].split(',') {
                    let segs: Vec<String> =
                        item.trim().split("::").map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
                    if segs.first().is_some_and(|s| s.chars().all(is_ident)) {
                        let mut p = base.clone();
                        p.extend(segs.into_iter().take_while(|s| s.chars().all(is_ident)));
                        found.push(p);
                    }
                }
                continue;
            }
            let mut p = base.clone();
            for seg in rest.split("::") {
                let ident: String = seg.chars().take_while(|c| is_ident(*c)).collect();
                if ident.is_empty() {
                    break;
                }
                let whole = ident.len() == seg.len();
                p.push(ident);
                if !whole {
                    break;
                }
            }
            found.push(p);
        }
    }
    found
}

/// File-level module graph of one crate: module -> modules it names (ancestors and itself excluded).
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<String, PathBuf> = files.iter().map(|f| (module_of(src, f), f.clone())).collect();
    let resolve = |path: &[String]| -> Option<String> {
        (1..=path.len()).rev().map(|n| path[..n].join("::")).find(|m| modules.contains_key(m))
    };
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, f) in &modules {
        let text = std::fs::read_to_string(f).expect("readable source");
        let code = production_code(&text);
        let edges = g.entry(m.clone()).or_default();
        for p in paths(&code, m) {
            let Some(target) = resolve(&p) else { continue };
            let ancestor = m == &target || m.starts_with(&format!("{target}::")) || target.is_empty();
            if !ancestor {
                edges.insert(target);
            }
        }
    }
    g
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.g.get(v) {
            for w in ws {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low[v];
                    t.low.insert(v, lv.min(lw));
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low[v];
                    t.low.insert(v, lv.min(iw));
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    let mut best: Option<(usize, usize, &'static str)> = None;
    for (rank, (name, prefixes)) in LAYERS.iter().enumerate() {
        for p in *prefixes {
            let hit = module == *p || (!p.is_empty() && module.starts_with(&format!("{p}::")));
            if hit && best.is_none_or(|(len, _, _)| p.len() > len) {
                best = Some((p.len(), rank, name));
            }
        }
    }
    // Lower rank = higher layer; turn it around so that a bigger number is a higher layer.
    best.map(|(_, rank, name)| (LAYERS.len() - rank, name))
}

#[test]
fn no_file_imports_form_a_cycle_in_any_library_crate() {
    let root = workspace();
    let mut found = Vec::new();
    for krate in ["server/src", "forecasting/src", "forecasting/eval/src", "gpu-agent/src"] {
        let src = root.join(krate);
        if !src.exists() {
            continue;
        }
        let g = graph(&src);
        assert!(g.len() > 3, "{krate}: read too few modules ({}); the walk is broken", g.len());
        for c in cycles(&g) {
            found.push(format!("{krate}: {}", c.join(" <-> ")));
        }
    }
    assert!(found.is_empty(), "import cycles between files:\n{}", found.join("\n"));
}

#[test]
fn server_modules_import_only_their_own_layer_or_below() {
    let g = graph(&workspace().join("server/src"));
    let mut unplaced = BTreeSet::new();
    let mut upward = Vec::new();
    for (from, tos) in &g {
        let Some((lf, nf)) = layer_of(from) else {
            unplaced.insert(from.split("::").next().unwrap_or_default().to_string());
            continue;
        };
        for to in tos {
            let Some((lt, nt)) = layer_of(to) else { continue };
            if lt > lf {
                upward.push(format!("{from} ({nf}) -> {to} ({nt})"));
            }
        }
    }
    assert!(unplaced.is_empty(), "give these server modules a layer in tests/architecture.rs: {unplaced:?}");
    assert!(upward.is_empty(), "imports from a lower layer to a higher one:\n{}", upward.join("\n"));
}

#[test]
fn the_checker_sees_what_it_must() {
    // The reader itself: comments, strings and test modules do not count; groups and `super` do.
    let code = production_code(
        "use crate::db::x; // crate::routes::y\nlet s = \"crate::state\";\n#[cfg(test)]\nmod tests { use crate::bench::z; }\nuse crate::{alerts::rules::A, ingest};\nuse super::sibling::B;",
    );
    let p = paths(&code, "control::snapshot");
    let names: Vec<String> = p.iter().map(|p| p.join("::")).collect();
    assert!(names.contains(&"db::x".to_string()), "{names:?}");
    assert!(names.contains(&"alerts::rules::A".to_string()), "{names:?}");
    assert!(names.contains(&"ingest".to_string()), "{names:?}");
    assert!(names.contains(&"control::sibling::B".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("routes") || n.starts_with("bench")), "{names:?}");
    // A string literal is not a path: "crate::state" must not show up.
    assert!(!names.iter().any(|n| n.starts_with("state")), "{names:?}");
    // Layers resolve by the longest prefix.
    assert_eq!(layer_of("auth::cache").map(|l| l.1), Some("services"));
    assert_eq!(layer_of("auth").map(|l| l.1), Some("views"));
    assert_eq!(layer_of("db::alerts::rules").map(|l| l.1), Some("store"));
    assert!(layer_of("routes::web").unwrap().0 > layer_of("db").unwrap().0);
}
