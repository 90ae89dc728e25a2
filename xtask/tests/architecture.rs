//! The layering ARCHITECTURE.md promises, checked on the manifests and sources: stacks/ is
//! pure data (no AWS SDK), functions and xtask never depend on each other (nor functions on
//! stacks), and the engine names
//! no resource kind (it sees resources only through `Node`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

fn manifest(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.parse()
        .unwrap_or_else(|e| panic!("{path:?} is not TOML: {e}"))
}

/// Every dependency a manifest names, normal, dev and build, target-specific ones included.
fn dependencies(m: &toml::Table) -> BTreeSet<String> {
    let tables = ["dependencies", "dev-dependencies", "build-dependencies"];
    let mut out = BTreeSet::new();
    let mut collect = |t: &toml::Table| {
        for kind in tables {
            if let Some(deps) = t.get(kind).and_then(|d| d.as_table()) {
                out.extend(deps.keys().cloned());
            }
        }
    };
    collect(m);
    if let Some(targets) = m.get("target").and_then(|t| t.as_table()) {
        for t in targets.values().filter_map(|t| t.as_table()) {
            collect(t);
        }
    }
    out
}

fn package_name(m: &toml::Table) -> String {
    m["package"]["name"].as_str().expect("package.name").into()
}

/// The function crates: every package under functions/.
fn functions() -> Vec<(String, BTreeSet<String>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("functions")).expect("functions/") {
        let path = entry.expect("entry").path().join("Cargo.toml");
        if path.exists() {
            let m = manifest(&path);
            out.push((package_name(&m), dependencies(&m)));
        }
    }
    assert!(out.len() >= 5, "found only {out:?}");
    out
}

#[test]
fn stacks_is_pure_data_without_an_aws_sdk() {
    let deps = dependencies(&manifest(&root().join("stacks/Cargo.toml")));
    let aws: Vec<_> = deps
        .iter()
        .filter(|d| d.starts_with("aws-") || d.starts_with("aws_") || *d == "xtask")
        .collect();
    assert!(aws.is_empty(), "stacks/ depends on {aws:?}");
}

#[test]
fn functions_and_xtask_never_depend_on_each_other() {
    let functions = functions();
    for (name, deps) in &functions {
        for other in ["xtask", "stacks"] {
            assert!(!deps.contains(other), "{name} depends on {other}");
        }
    }
    let xtask = dependencies(&manifest(&root().join("xtask/Cargo.toml")));
    for (name, _) in &functions {
        assert!(
            !xtask.contains(name),
            "xtask depends on the function crate {name}"
        );
    }
}

/// Source text outside tests and comments, so docs may mention what code may not.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_engine_names_no_resource_kind() {
    let dir = root().join("xtask/src/engine");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("engine/") {
        let path = entry.expect("entry").path();
        let code = code(&path);
        for forbidden in ["providers", "stacks::Spec", "Spec::", "aws_sdk_"] {
            assert!(
                !code.contains(forbidden),
                "{path:?} names `{forbidden}`: the engine sees resources only through `Node`"
            );
        }
        seen += 1;
    }
    assert!(seen >= 5, "read only {seen} engine files");
}
