//! The layer rule of ARCHITECTURE.md, read from the source: a module may use its own
//! layer and those below, never one above. Each remaining exception is listed with the
//! file and the module it reaches; the list may only shrink.

use std::{collections::BTreeSet, fs, path::Path};

/// Top-level module → layer (higher may use lower).
const LAYERS: &[(&str, u8)] = &[
    ("main", 7),
    ("lib", 6),
    ("startup", 6),
    ("doctor", 6),
    ("api", 5),
    ("actions", 4),
    ("sync", 4),
    ("dingtalk", 3),
    ("graph", 3),
    ("outbound", 3),
    ("echo", 3),
    ("mail", 3),
    ("worker", 2),
    ("jobs", 2),
    ("ingest", 2),
    ("triggers", 2),
    ("hooks", 2),
    ("leader", 2),
    ("apikeys", 2),
    ("metrics", 2),
    ("telemetry", 2),
    ("limits", 2),
    ("config", 1),
    ("error", 1),
    ("event", 1),
    ("store", 1),
    ("retry_after", 1),
    ("upstream", 1),
];

/// Upward uses that exist today (file, module reached); see ARCHITECTURE.md for the way
/// out of each. Remove an entry when its use is gone.
const KNOWN: &[(&str, &str)] = &[];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// Modules named by `crate::` paths in `text` (skipping `#[cfg(test)]` code), with the
/// line each is named on; grouped imports (`use crate::{a::x, b}`) count each member.
fn crate_uses(text: &str) -> Vec<(usize, String)> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut out = Vec::new();
    let mut in_group = false;
    let mut depth = 0i32;
    for (n, line) in code.lines().enumerate() {
        let n = n + 1;
        let trimmed = line.trim();
        if trimmed.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                in_group = true;
                depth = 1;
                rest = group;
                out.extend(group_members(rest, n, &mut depth, &mut in_group));
                break;
            }
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push((n, name));
            rest = after;
        }
        if in_group && !line.contains("crate::{") {
            out.extend(group_members(line, n, &mut depth, &mut in_group));
        }
    }
    out
}

/// Members at depth 1 of a `use crate::{…}` group, line by line.
fn group_members(
    line: &str,
    n: usize,
    depth: &mut i32,
    in_group: &mut bool,
) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut expect_name = *depth == 1;
    for c in line.chars() {
        match c {
            '{' => {
                *depth += 1;
                expect_name = false;
            }
            '}' => {
                *depth -= 1;
                if *depth == 0 {
                    *in_group = false;
                    break;
                }
            }
            ',' if *depth == 1 => expect_name = true,
            c if expect_name && (c.is_alphanumeric() || c == '_') => word.push(c),
            _ => {
                if !word.is_empty() {
                    out.push((n, std::mem::take(&mut word)));
                    expect_name = false;
                }
            }
        }
    }
    if !word.is_empty() {
        out.push((n, word));
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`src/sync/keys.rs` → `sync`).
fn module_of(rel: &str) -> String {
    rel.trim_start_matches("src/")
        .split('/')
        .next()
        .unwrap_or_default()
        .trim_end_matches(".rs")
        .to_string()
}

/// Every broken rule in `files` (path relative to the crate, text): uses of a layer
/// above, and modules of one layer that reach each other in a circle.
fn violations(files: &[(String, String)]) -> Vec<String> {
    let mut broken = Vec::new();
    let mut seen = BTreeSet::new();
    let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
    for (rel, text) in files {
        let module = module_of(rel);
        let Some(own) = layer(&module) else {
            broken.push(format!(
                "{rel}: module `{module}` has no layer in ARCHITECTURE.md"
            ));
            continue;
        };
        for (line, target) in crate_uses(text) {
            let Some(theirs) = layer(&target) else {
                continue;
            };
            if target == module {
                continue;
            }
            if theirs <= own {
                edges.insert((module.clone(), target));
                continue;
            }
            if KNOWN.contains(&(rel.as_str(), target.as_str())) {
                seen.insert((rel.clone(), target.clone()));
                continue;
            }
            broken.push(format!(
                "{rel}:{line}: `{module}` (layer {own}) uses `{target}` (layer {theirs}); a module may only use its own layer and those below (ARCHITECTURE.md)"
            ));
        }
    }
    // Within a layer: no module reaches back to one that reaches it.
    for (a, b) in &edges {
        if a < b && reaches(&edges, b, a) {
            broken.push(format!(
                "`{a}` and `{b}` (layer {}) use each other, directly or through others: modules of one layer may not form a circle (ARCHITECTURE.md)",
                layer(a).unwrap_or_default()
            ));
        }
    }
    for (file, target) in KNOWN {
        if !seen.contains(&(file.to_string(), target.to_string())) {
            broken.push(format!(
                "{file} no longer uses `{target}`: remove the entry from KNOWN in tests/architecture.rs"
            ));
        }
    }
    broken
}

/// `true` when `to` can be reached from `from` along `edges`.
fn reaches(edges: &BTreeSet<(String, String)>, from: &str, to: &str) -> bool {
    let mut stack = vec![from.to_string()];
    let mut visited = BTreeSet::new();
    while let Some(m) = stack.pop() {
        if m == to {
            return true;
        }
        if visited.insert(m.clone()) {
            stack.extend(
                edges
                    .iter()
                    .filter(|(a, _)| *a == m)
                    .map(|(_, b)| b.clone()),
            );
        }
    }
    false
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    sources(&root.join("src"), &mut paths);
    let files: Vec<(String, String)> = paths
        .iter()
        .map(|path| {
            let rel = path
                .strip_prefix(root)
                .expect("under the crate")
                .to_string_lossy()
                .replace('\\', "/");
            (rel, fs::read_to_string(path).expect("readable"))
        })
        .collect();
    let broken = violations(&files);
    assert!(broken.is_empty(), "\n{}", broken.join("\n"));
}

#[test]
fn an_upward_import_or_a_circle_in_a_layer_is_reported_with_file_line_and_rule() {
    let fixture = |rel: &str, text: &str| (rel.to_string(), text.to_string());
    let broken = violations(&[
        fixture(
            "src/store/redis.rs",
            "use serde::Serialize;\nuse crate::{\n    error::ApiError,\n    api::AppState,\n};\n",
        ),
        fixture("src/ingest.rs", "use crate::metrics::record;\n"),
        fixture("src/metrics.rs", "fn f() { crate::ingest::x(); }\n"),
        fixture(
            "src/config/mod.rs",
            "#[cfg(test)]\nmod tests { use crate::graph::x; }\n",
        ),
    ]);
    assert_eq!(broken.len(), 2, "{broken:#?}");
    assert_eq!(
        broken[0],
        "src/store/redis.rs:4: `store` (layer 1) uses `api` (layer 5); a module may only use its own layer and those below (ARCHITECTURE.md)"
    );
    assert!(
        broken[1].starts_with("`ingest` and `metrics` (layer 2) use each other"),
        "{}",
        broken[1]
    );
}

#[test]
fn grouped_and_inline_crate_paths_are_all_read() {
    let text = "use crate::{\n    api::AppState,\n    store::{Store, Side},\n};\nfn f() { crate::graph::x(); }\n";
    let names: Vec<String> = crate_uses(text).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["api", "store", "graph"]);
}
