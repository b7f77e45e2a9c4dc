// The version string of Baton's binaries, shared by their build scripts (`include!`d by
// `reconciler/cli/build.rs` and `sidecar/build.rs`): the package version and the commit it
// was built from, `0.1.0 (abc123def456)`. The commit comes from `BATON_COMMIT` when set (a
// build from a tarball or a container build without `.git`), else from `git` when the source
// is a checkout; neither: the version alone, never a failed build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}

/// A commit id as git prints it: hex only, so nothing odd reaches the binary.
fn is_commit(s: &str) -> bool {
    (7..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn main() {
    println!("cargo:rerun-if-env-changed=BATON_COMMIT");
    let given = std::env::var("BATON_COMMIT").ok().filter(|c| !c.is_empty());
    let commit = match given {
        Some(c) => Some(c),
        None => {
            // Build again when HEAD moves: HEAD itself, the branch it names, packed refs.
            if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
                let dir = PathBuf::from(dir);
                println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
                let common = git(&["rev-parse", "--git-common-dir"])
                    .map(|c| absolute(&c))
                    .unwrap_or_else(|| dir.clone());
                println!(
                    "cargo:rerun-if-changed={}",
                    common.join("packed-refs").display()
                );
                if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    println!("cargo:rerun-if-changed={}", common.join(branch).display());
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"])
        }
    };
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let full = match commit {
        Some(c) if is_commit(&c) => format!("{version} ({c})"),
        Some(c) => {
            println!("cargo:warning=ignoring BATON_COMMIT={c:?}: not a commit id (hex digits)");
            version
        }
        None => version,
    };
    println!("cargo:rustc-env=BATON_VERSION={full}");
}

/// `git rev-parse --git-common-dir` may answer relative to the current directory.
fn absolute(path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    }
}
