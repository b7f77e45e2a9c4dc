//! The core's purity, checked on its dependency tree: none of the crates that do I/O (an async
//! runtime, HTTP, git, OS calls) may be among what `baton-core` or `baton-refs` is built from.
//! Clippy's `disallowed-methods`/`disallowed-types` (`clippy.toml`) catch std's I/O in the
//! code itself; this test catches a dependency that would bring it in.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::process::Command;

/// Crates whose presence means I/O: the runtime, HTTP clients and servers, git, OS process and
/// file APIs. (`libc` itself is allowed: `ring`, `getrandom` and `parking_lot` sit on it.)
const BANNED: &[&str] = &[
    "tokio",
    "mio",
    "reqwest",
    "hyper",
    "hyper-util",
    "axum",
    "tower",
    "gix",
    "nix",
    "notify",
    "socket2",
    "walkdir",
    "tempfile",
];

fn tree(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--locked", "--offline", "-p", package])
        .args(["-e", "normal,build", "--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn assert_pure(package: &str) {
    let crates = tree(package);
    assert!(crates.iter().any(|c| c == package), "{crates:?}");
    let found: Vec<&String> = crates
        .iter()
        .filter(|c| BANNED.contains(&c.as_str()))
        .collect();
    assert!(
        found.is_empty(),
        "{package} depends on {found:?}: the core must stay free of I/O crates (see ARCHITECTURE.md)"
    );
}

#[test]
fn the_core_depends_on_no_io_crate() {
    assert_pure("baton-core");
}

#[test]
fn the_reference_grammar_depends_on_no_io_crate() {
    assert_pure("baton-refs");
}
