//! Where specs come from: a plain directory (read, or watched) and, later, a git repository.
//! Sources only read bytes and report what they could not read; all parsing is in [`crate::spec`].

pub mod dir;

pub use dir::read_dir;

/// A source that could not be read at all (as opposed to single files, which become diagnostics).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read the repo at {path}: {source}")]
    Unreadable {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
