//! The dependency invariants of docs/ARCHITECTURE.md, checked against every
//! crate's Cargo.toml (as the OpenAPI test checks the routes): a new
//! dependency that breaks one fails here, not in review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The normal (not dev, not build) dependencies of each workspace crate.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = BTreeMap::new();
    for dir in std::fs::read_dir(&crates).unwrap() {
        let dir = dir.unwrap().path();
        let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else { continue };
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut deps = BTreeSet::new();
        let mut section = String::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.trim_matches(|c| c == '[' || c == ']').to_owned();
                if let Some(dep) = section.strip_prefix("dependencies.") {
                    deps.insert(dep.to_owned());
                }
                continue;
            }
            if section == "dependencies" && !line.is_empty() && !line.starts_with('#') {
                let dep = line.split(|c: char| c == '=' || c == '.' || c.is_whitespace()).next().unwrap();
                deps.insert(dep.to_owned());
            }
        }
        out.insert(name, deps);
    }
    assert!(out.len() >= 10, "found the workspace crates: {:?}", out.keys());
    out
}

/// Who may depend on `dep` (prefix match on the dependency name, e.g. `aws-`).
fn only(deps: &BTreeMap<String, BTreeSet<String>>, dep: &str, allowed: &[&str]) -> Vec<String> {
    let mut broken = Vec::new();
    for (krate, ds) in deps {
        if ds.iter().any(|d| d == dep || (dep.ends_with('-') && d.starts_with(dep)))
            && !allowed.contains(&krate.as_str())
        {
            broken.push(format!("{krate} depends on {dep}, which only {allowed:?} may"));
        }
    }
    broken
}

#[test]
fn every_crate_keeps_to_its_boundary() {
    let deps = dependencies();
    let mut broken = Vec::new();
    // One crate per boundary.
    broken.extend(only(&deps, "sled", &["tidemark-store"]));
    for web in ["axum", "hyper", "hyper-util", "tower", "tower-http"] {
        broken.extend(only(&deps, web, &["tidemark-server"]));
    }
    broken.extend(only(&deps, "ureq", &["tidemark-client"]));
    broken.extend(only(&deps, "tokio-postgres", &["tidemark-agents"]));
    broken.extend(only(&deps, "aws-", &["tidemark-s3"]));
    // Parsing, printing and exit codes live in the binary only.
    for shell in ["clap", "anyhow", "indicatif", "tracing-subscriber", "mimalloc", "libmimalloc-sys"] {
        broken.extend(only(&deps, shell, &["tidemark-cli"]));
    }
    // The pure rule crates: no I/O, no clock, no randomness, no workspace crate but core.
    let io = ["sled", "tokio", "ureq", "tar", "tempfile", "getrandom", "tokio-postgres", "axum", "hyper"];
    for pure in ["tidemark-core", "tidemark-lineage"] {
        for d in &deps[pure] {
            if io.contains(&d.as_str()) || d.starts_with("aws-") {
                broken.push(format!("{pure} must not perform I/O, but depends on {d}"));
            }
            if d.starts_with("tidemark-") && d != "tidemark-core" {
                broken.push(format!("{pure} depends on {d}; the rule crates depend on tidemark-core only"));
            }
        }
    }
    // Nothing below the binary depends on the binary, the server or the orchestration.
    for (krate, ds) in &deps {
        if ds.contains("tidemark-cli") {
            broken.push(format!("{krate} depends on the binary"));
        }
        if ds.contains("tidemark-ops") && krate != "tidemark-cli" && krate != "tidemark-server" {
            broken.push(format!("{krate} depends on tidemark-ops, which only front ends may"));
        }
    }
    assert!(broken.is_empty(), "docs/ARCHITECTURE.md invariants broken:\n{}", broken.join("\n"));
}

#[test]
fn the_check_sees_a_broken_invariant() {
    let mut deps = dependencies();
    deps.get_mut("tidemark-lineage").unwrap().insert("sled".into());
    assert_eq!(
        only(&deps, "sled", &["tidemark-store"]),
        vec!["tidemark-lineage depends on sled, which only [\"tidemark-store\"] may"]
    );
}

/// Only `tidemark-client` knows the wire: no other crate but the server
/// (which serves the routes) names an API path.
#[test]
fn only_the_client_names_api_paths() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    for krate in
        ["tidemark-cli", "tidemark-ops", "tidemark-agents", "tidemark-store", "tidemark-export", "tidemark-lineage"]
    {
        let mut stack = vec![crates.join(krate).join("src")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (n, line) in text.lines().enumerate() {
                        let code = line.trim_start();
                        if !code.starts_with("//") && code.contains("\"/v1/") {
                            found.push(format!("{}:{}: {}", path.display(), n + 1, code));
                        }
                    }
                }
            }
        }
    }
    assert!(found.is_empty(), "API paths outside tidemark-client:\n{}", found.join("\n"));
}

/// Every `.rs` file under the crates' `src/` directories.
fn sources() -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&crates).unwrap() {
        let src = dir.unwrap().path().join("src");
        if src.is_dir() {
            walk(&src, &mut out);
        }
    }
    out
}

#[test]
fn the_only_unsafe_code_is_the_allocator_option() {
    let mut found = Vec::new();
    for path in sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("unsafe {") || code.contains("unsafe fn") || code.contains("unsafe impl") {
                found.push(format!("{}:{}", path.display(), i + 1));
            }
        }
    }
    let main: Vec<&String> = found.iter().filter(|f| f.contains("tidemark-cli/src/main.rs")).collect();
    assert_eq!(main.len(), 2, "one mimalloc option set and its test read it: {found:?}");
    assert_eq!(found.len(), 2, "unsafe code outside the allocator option: {found:?}");
}
