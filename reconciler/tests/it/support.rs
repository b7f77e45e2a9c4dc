//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repo root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `../shared/marathon` beside the project, or `None` (after printing why) when absent, so a
/// test can skip on a user's machine.
pub fn shared_marathon(test: &str) -> Option<PathBuf> {
    let dir = repo_root().join("../shared/marathon");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped {test}: {} is absent (it only exists beside the project on developer machines and in CI)", dir.display());
        None
    }
}
