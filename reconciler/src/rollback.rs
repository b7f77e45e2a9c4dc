//! `baton rollback APP --to COMMIT`: the spec of APP as it was at COMMIT written back into the
//! working tree as a new commit on the current branch (GitOps: the repo stays the truth; the
//! daemon deploys it like any push, or `--now` applies it at once through `baton apply --app`).
//!
//! Done with the git CLI, not gix: the commit is the user's, in their working tree, so it must
//! be made exactly as their `git commit` makes it (identity, hooks, signing, index); gix (the
//! daemon's fetcher of a bare cache) has no worktree commit path of its own to reuse.
//!
//! The file defining APP at COMMIT is found by loading the repo as it was then (`git archive`
//! into a temporary directory, loaded as `baton validate` loads a directory), so a spec that was
//! moved or renamed since is found under its old path, and the file defining APP now (if any,
//! and elsewhere) is removed in the same commit. Refused, with nothing written: an unknown
//! commit, APP absent (or invalid) at COMMIT, uncommitted changes touching either file, a
//! directory that is not in a git work tree.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use baton_core::spec::{AppId, Repo};

/// Why a rollback was refused or failed (nothing was committed).
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("cannot run git: {0}")]
    Git(#[source] std::io::Error),
    #[error("git {command} failed: {stderr}")]
    GitFailed { command: String, stderr: String },
    #[error("{dir} is not inside a git work tree")]
    NotARepo { dir: PathBuf },
    #[error("unknown commit `{commit}`")]
    UnknownCommit { commit: String },
    #[error("{app} is not in the repo at commit {commit}")]
    AbsentAt { app: String, commit: String },
    #[error("{app}'s spec at commit {commit} is invalid ({file}): not written back")]
    InvalidAt {
        app: String,
        commit: String,
        file: String,
    },
    #[error("uncommitted changes to {files}: commit or stash them first")]
    Dirty { files: String },
    #[error("cannot read the repo at commit {commit}: {reason}")]
    Load { commit: String, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rolled {
    /// A new commit (`commit`) wrote `file` as at the target commit (and removed `removed`).
    Committed {
        commit: String,
        file: PathBuf,
        removed: Option<PathBuf>,
    },
    /// The working tree's spec is already the one at the target commit: nothing committed
    /// (`head`: the commit checked out).
    AlreadyThere { file: PathBuf, head: String },
}

fn git(dir: &Path, args: &[&str]) -> Result<String, RollbackError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(RollbackError::Git)?;
    if !out.status.success() {
        return Err(RollbackError::GitFailed {
            command: args.first().copied().unwrap_or_default().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
}

/// The file (relative to the Baton repo root) that defines `app` in `repo`, valid or not.
fn file_of(repo: &Repo, app: &AppId) -> Option<PathBuf> {
    if let Some(spec) = repo.specs.get(app) {
        return Some(spec.file.clone());
    }
    (repo.diagnostics.iter())
        .find(|d| d.app.as_ref() == Some(app))
        .map(|d| d.file.clone())
}

/// The Baton repo in `dir` (a directory inside a git work tree) as it was at `commit`.
fn repo_at(dir: &Path, prefix: &str, commit: &str) -> Result<Repo, RollbackError> {
    let load_err = |reason: String| RollbackError::Load {
        commit: commit.to_string(),
        reason,
    };
    let tmp = tempfile::tempdir().map_err(|e| load_err(e.to_string()))?;
    let mut archive = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["archive", "--format=tar", commit])
        .args((!prefix.is_empty()).then_some(prefix))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(RollbackError::Git)?;
    let stdout = archive
        .stdout
        .take()
        .ok_or_else(|| load_err("no output from git archive".into()))?;
    let untar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(tmp.path())
        .stdin(stdout)
        .output()
        .map_err(|e| load_err(format!("cannot run tar: {e}")))?;
    let archived = archive.wait_with_output().map_err(RollbackError::Git)?;
    if !archived.status.success() || !untar.status.success() {
        return Err(load_err(format!(
            "{}{}",
            String::from_utf8_lossy(&archived.stderr).trim(),
            String::from_utf8_lossy(&untar.stderr).trim()
        )));
    }
    let root = tmp.path().join(prefix);
    if !root.is_dir() {
        // The Baton repo's directory did not exist yet at that commit.
        return Ok(Repo::default());
    }
    crate::commands::load_repo(&root).map_err(|e| load_err(e.to_string()))
}

/// Roll `app` back to its spec at `to` in the Baton repo `dir`: see the module documentation.
pub fn rollback(dir: &Path, app: &AppId, to: &str) -> Result<Rolled, RollbackError> {
    let inside = git(dir, &["rev-parse", "--is-inside-work-tree"]);
    if !inside.is_ok_and(|v| v == "true") {
        return Err(RollbackError::NotARepo {
            dir: dir.to_path_buf(),
        });
    }
    // Never an option to git, whatever the user typed.
    if to.starts_with('-') {
        return Err(RollbackError::UnknownCommit {
            commit: to.to_string(),
        });
    }
    let prefix = git(dir, &["rev-parse", "--show-prefix"])?;
    let prefix = prefix.trim_end_matches('/');
    let commit = git(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{to}^{{commit}}"),
        ],
    )
    .map_err(|_| RollbackError::UnknownCommit {
        commit: to.to_string(),
    })?;
    let short = commit.get(..12).unwrap_or(&commit).to_string();
    let then = repo_at(dir, prefix, &commit)?;
    let then_file = file_of(&then, app).ok_or_else(|| RollbackError::AbsentAt {
        app: app.to_string(),
        commit: short.clone(),
    })?;
    if !then.specs.contains_key(app) {
        return Err(RollbackError::InvalidAt {
            app: app.to_string(),
            commit: short,
            file: then_file.display().to_string(),
        });
    }
    let now = crate::commands::load_repo(dir).map_err(|e| RollbackError::Load {
        commit: "HEAD (the working tree)".into(),
        reason: e.to_string(),
    })?;
    let now_file = file_of(&now, app);
    let removed = now_file.filter(|f| *f != then_file);
    let paths: Vec<String> = std::iter::once(&then_file)
        .chain(removed.as_ref())
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    // Uncommitted changes (staged or not, or untracked) to either file: refused.
    let mut status_args = vec!["status", "--porcelain", "--"];
    status_args.extend(paths.iter().map(String::as_str));
    let dirty = git(dir, &status_args)?;
    if !dirty.is_empty() {
        let files: Vec<&str> = dirty.lines().map(|l| l.get(3..).unwrap_or(l)).collect();
        return Err(RollbackError::Dirty {
            files: files.join(", "),
        });
    }
    let path_at = |p: &Path| match prefix {
        "" => p.to_string_lossy().into_owned(),
        pre => format!("{pre}/{}", p.to_string_lossy()),
    };
    let bytes = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "cat-file",
            "blob",
            &format!("{commit}:{}", path_at(&then_file)),
        ])
        .output()
        .map_err(RollbackError::Git)?;
    if !bytes.status.success() {
        return Err(RollbackError::GitFailed {
            command: "cat-file".into(),
            stderr: String::from_utf8_lossy(&bytes.stderr).trim().to_string(),
        });
    }
    let target = dir.join(&then_file);
    let current = std::fs::read(&target).ok();
    if removed.is_none() && current.as_deref() == Some(bytes.stdout.as_slice()) {
        let head = git(dir, &["rev-parse", "HEAD"])?;
        return Ok(Rolled::AlreadyThere {
            file: then_file,
            head,
        });
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|source| RollbackError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(&target, &bytes.stdout).map_err(|source| RollbackError::Write {
        path: target.clone(),
        source,
    })?;
    let mut add = vec!["add", "--"];
    add.push(&paths[0]);
    git(dir, &add)?;
    if let Some(old) = &removed {
        git(dir, &["rm", "--quiet", "--", &old.to_string_lossy()])?;
    }
    let message = format!(
        "baton rollback: {app} to its spec at {short}\n\nWritten back by `baton rollback {app} --to {to}` from {} at {commit}.",
        then_file.display()
    );
    // Only these paths: whatever else is staged stays staged, out of this commit.
    let mut commit_args = vec!["commit", "--quiet", "-m", &message, "--"];
    commit_args.extend(paths.iter().map(String::as_str));
    git(dir, &commit_args)?;
    let head = git(dir, &["rev-parse", "HEAD"])?;
    Ok(Rolled::Committed {
        commit: head,
        file: then_file,
        removed,
    })
}
