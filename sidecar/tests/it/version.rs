//! `baton-env --version` names the commit it was built from (scripts/build_version.rs).

use std::path::Path;
use std::process::Command;

use crate::support::{text, BIN};

#[test]
fn version_names_the_commit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&root)
        .output();
    let commit = match head {
        Ok(out) if out.status.success() => text(&out.stdout).trim().to_owned(),
        _ => {
            std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!(
                    "skipped version_names_the_commit: the source is not a git checkout\n"
                ),
            )
            .ok();
            return;
        }
    };
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("baton-env {} ({commit})\n", env!("CARGO_PKG_VERSION"))
    );
}
