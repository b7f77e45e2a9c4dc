//! Where specs come from: a plain directory (read, or watched) and a git repository (gix).
//! Sources only read bytes and report what they could not read; all parsing is in [`baton_core::spec`].

pub mod dir;
pub mod git;
pub mod watch;

pub use dir::read_dir;

use baton_core::spec::Repo;

/// A followed source of specs, as `baton serve` uses it. Both methods block (git I/O, file
/// reads): call them from `spawn_blocking`.
pub trait SpecSource: Send + 'static {
    /// Where the source is now: a commit id (git) or a content digest (directory). Fetches
    /// whatever is needed to [`load`](Self::load) it.
    fn fetch(&mut self) -> Result<String, SourceError>;
    /// The loaded repo at a revision `fetch` returned.
    fn load(&mut self, rev: &str) -> Result<Repo, SourceError>;
    /// Where it comes from, for status and logs (no credentials).
    fn describe(&self) -> String;
    /// Whether `fetch` talks to a git remote (its duration is a `/metrics` histogram).
    fn is_git(&self) -> bool {
        false
    }

    /// The spec files added or modified by the last [`load`](Self::load), with the revision it
    /// loaded; `None` when unknown (a full load, or a source that does not diff). The reconcile
    /// loop uses it to sync just those apps first ([`crate::daemon::reconcile::fast_sync_candidates`]).
    fn changed_last(&self) -> Option<(String, Vec<std::path::PathBuf>)> {
        None
    }

    /// After a restart: the revision fetched before it (from the state directory), so that a
    /// history rewritten while Baton was down is still told apart from a fast-forward.
    fn resume_from(&mut self, _last_fetched: &str) {}

    /// Who wrote revision `rev` and what it says (its first line), for the status page and the
    /// history; `None` when the source has no such thing (a directory) or cannot read it.
    fn commit_info(&mut self, _rev: &str) -> Option<CommitInfo> {
        None
    }
}

/// A commit as the status page and `/api/status` show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommitInfo {
    pub commit: String,
    /// The author's name.
    pub author: Option<String>,
    /// The first line of the message, at most [`COMMIT_TITLE_CHARS`] characters.
    pub message: String,
}

/// How much of a commit's first line is kept.
pub const COMMIT_TITLE_CHARS: usize = 200;

impl CommitInfo {
    /// `message`'s first line, bounded.
    pub fn new(commit: &str, author: Option<String>, message: &str) -> Self {
        let title = message.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        CommitInfo {
            commit: commit.to_string(),
            author: author.map(|a| a.chars().take(COMMIT_TITLE_CHARS).collect()),
            message: title.trim().chars().take(COMMIT_TITLE_CHARS).collect(),
        }
    }
}

/// A source that could not be read at all (as opposed to single files, which become diagnostics).
/// URLs in these errors never carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read the repo at {path}: {source}")]
    Unreadable {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the git remote {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the git remote {url} refused the credentials: {reason}")]
    Auth { url: String, reason: String },
    #[error("the git remote {url} has no ref `{reference}` (deleted branch?); keeping the last good state")]
    RefNotFound { url: String, reference: String },
    #[error("fetching from {url} failed: {reason}")]
    Fetch { url: String, reason: String },
    #[error("the git cache for {url} is damaged: {reason}")]
    Corrupt { url: String, reason: String },
    #[error("git cache at {path}: {reason}")]
    Cache {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("git {url}: {reason}")]
    Git { url: String, reason: String },
    #[error("interrupted by shutdown")]
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page and the history show a commit's first non-empty line, trimmed and bounded,
    /// never its body.
    #[test]
    fn a_commit_is_shown_by_its_first_line_bounded() {
        let c = CommitInfo::new(
            "abc",
            Some("Ada".into()),
            "\n  web: scale to 3  \n\nWhy: load.\n",
        );
        assert_eq!(c.message, "web: scale to 3");
        assert_eq!(c.author.as_deref(), Some("Ada"));
        let long = "x".repeat(COMMIT_TITLE_CHARS * 2);
        let c = CommitInfo::new("abc", Some(long.clone()), &long);
        assert_eq!(c.message.chars().count(), COMMIT_TITLE_CHARS);
        assert_eq!(
            c.author.map(|a| a.chars().count()),
            Some(COMMIT_TITLE_CHARS)
        );
    }
}
