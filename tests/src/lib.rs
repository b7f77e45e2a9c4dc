//! Support for the end-to-end tests: locating the built binaries, temp repos.
//!
//! Test-only code: a failed setup step should stop the test loudly, so `expect` is allowed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod browser;
pub mod devsched;
pub mod githttp;

/// A binary of this workspace built next to the test executable (`target/<profile>/<name>`),
/// e.g. `baton-env` (build it first: `cargo build -p baton-sidecar`). `None` when absent.
pub fn workspace_bin(name: &str) -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let path = exe.parent()?.parent()?.join(name);
    path.is_file().then_some(path)
}
