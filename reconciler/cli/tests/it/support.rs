//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repo root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `../shared/marathon` beside the project, or `None` (after printing why) when absent, so a
/// test can skip on a user's machine.
pub fn shared_marathon(test: &str) -> Option<PathBuf> {
    let dir = repo_root().join("../shared/marathon");
    if dir.is_dir() {
        Some(dir)
    } else {
        // Written past libtest's capture (which hides `eprintln!` of passing tests), so every
        // run shows what was skipped and why. The other skip notes of the suite do the same.
        std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("skipped {test}: {} is absent (it only exists beside the project on developer machines and in CI)\n", dir.display())).ok();
        None
    }
}

/// A fixture directory under `fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    repo_root().join("fixtures").join(rel)
}

/// Diagnostics as stable text lines: `file:line:col severity pointer: message`.
pub fn diagnostics_lines(repo: &baton_core::spec::Repo) -> String {
    repo.diagnostics
        .iter()
        .map(|d| {
            format!(
                "{}:{}:{} {:?} {}: {}",
                d.file.display(),
                d.line.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                d.column
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "-".into()),
                d.severity,
                if d.pointer.is_empty() {
                    "/"
                } else {
                    &d.pointer
                },
                d.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Validate `doc` against `schemas/<name>`, failing with every error.
pub fn assert_matches_schema(name: &str, doc: &serde_json::Value) {
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let dir = repo_root().join("schemas");
    let schema = read(&dir.join(name));
    // Our schemas refer to each other by `$id`; register them all.
    let mut builder = jsonschema::Registry::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let doc = read(&entry.unwrap().path());
        if let Some(id) = doc.get("$id").and_then(|v| v.as_str()).map(str::to_string) {
            builder = builder.add(id, doc).unwrap();
        }
    }
    let registry = builder.prepare().unwrap();
    let validator = jsonschema::options()
        .with_registry(&registry)
        .build(&schema)
        .unwrap();
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\n{doc:#}");
}
