//! The crate's modules use only modules of lower layers, in the order docs/architecture.md gives
//! ("## Layers"): every `crate::` path in `src/` is checked against it.

// Cargo hands every dependency of the library to each test crate; this one reads files only.
#![allow(unused_crate_dependencies)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// Layer of each top-level module, read from the numbered list under "## Layers".
fn layers() -> BTreeMap<String, usize> {
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md"))
        .expect("docs/architecture.md");
    let section = doc.split("## Layers").nth(1).expect("a '## Layers' section");
    let mut ranks = BTreeMap::new();
    for line in section.lines().take_while(|l| !l.starts_with("## ")) {
        let Some((number, rest)) = line.split_once(". ") else {
            continue;
        };
        let Ok(rank) = number.trim().parse::<usize>() else {
            continue;
        };
        let names = rest.split(" — ").next().unwrap_or("");
        for name in names.split(',') {
            let name = name.trim().trim_matches('`');
            if !name.is_empty() {
                ranks.insert(name.to_owned(), rank);
            }
        }
    }
    ranks
}

/// The top-level module a source file belongs to (`src/http/body.rs` → `http`).
fn module_of(path: &Path, src: &Path) -> String {
    let rel = path.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// The modules named by `crate::name` paths in code (comments left out).
fn used_modules(text: &str) -> Vec<String> {
    let mut used = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                used.push(name);
            }
            rest = after;
        }
    }
    used
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_crate_path_points_down_the_layers() {
    let ranks = layers();
    assert!(ranks.len() >= 10, "the layer list was not found: {ranks:?}");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let from = module_of(file, &src);
        let from_rank = *ranks.get(&from).unwrap_or_else(|| {
            panic!(
                "module `{from}` ({}) is missing from docs/architecture.md's layers",
                file.display()
            )
        });
        for to in used_modules(&fs::read_to_string(file).unwrap()) {
            if to == from {
                continue;
            }
            let to_rank = *ranks
                .get(&to)
                .unwrap_or_else(|| panic!("module `{to}` (used in {}) is missing from the layers", file.display()));
            if to_rank >= from_rank {
                wrong.push(format!(
                    "{} ({from}, layer {from_rank}) uses {to} (layer {to_rank})",
                    file.display()
                ));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(wrong.is_empty(), "edges that do not point down:\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_an_upward_edge() {
    // The parser itself: a path in code counts, one in a comment does not.
    let used = used_modules("use crate::reactor::Notifier; // crate::server\nlet x = crate::http::date::now();");
    assert_eq!(used, ["reactor", "http"]);
}
