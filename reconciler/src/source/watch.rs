//! A plain directory as a followed source: read whole on each change (its revision is a digest
//! of what was read), and watched with `notify` (debounced) so edits wake the loop. Shared by
//! `baton serve` on a non-git path; `baton dev` can use [`watch`] the same way.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_full::{new_debouncer, notify::RecursiveMode, DebounceEventResult};
use ring::digest::{Context, SHA256};

use super::{read_dir, SourceError, SpecSource};
use baton_core::spec::load::{Snapshot, SourceFile};
use baton_core::spec::Repo;

/// A directory source. `fetch` reads the directory; `load` parses what it read.
#[derive(Debug)]
pub struct DirSource {
    root: PathBuf,
    read: Option<(String, Snapshot, Vec<SourceFile>)>,
    /// The environment loaded (its overlay files are read too); `None`: the base.
    environment: Option<String>,
}

impl DirSource {
    pub fn new(root: PathBuf) -> Self {
        DirSource {
            root,
            read: None,
            environment: None,
        }
    }

    /// Load the repo as environment `name` sees it (docs/environments.md).
    pub fn with_environment(mut self, name: Option<String>) -> Self {
        self.environment = name;
        self
    }

    fn loaded(&self, snapshot: Snapshot, overlays: Vec<SourceFile>) -> Repo {
        match &self.environment {
            Some(env) => crate::environment::load_as(snapshot, overlays, env),
            None => baton_core::spec::load(snapshot),
        }
    }
}

impl SpecSource for DirSource {
    fn fetch(&mut self) -> Result<String, SourceError> {
        let mut snapshot = read_dir(&self.root)?;
        let mut overlays = Vec::new();
        if let Some(env) = &self.environment {
            let (files, problems, incomplete) =
                super::dir::read_overlays(&self.root, &snapshot.config, env)?;
            overlays = files;
            snapshot.diagnostics.extend(problems);
            snapshot.incomplete |= incomplete;
        }
        let mut rev = digest(&snapshot);
        if !overlays.is_empty() {
            let with = Snapshot {
                files: overlays.clone(),
                ..Snapshot::default()
            };
            rev = format!("{rev}{}", digest(&with));
        }
        let rev = format!("dir-{rev}");
        self.read = Some((rev.clone(), snapshot, overlays));
        Ok(rev)
    }

    fn load(&mut self, rev: &str) -> Result<Repo, SourceError> {
        match &self.read {
            Some((r, snapshot, overlays)) if r == rev => {
                Ok(self.loaded(snapshot.clone(), overlays.clone()))
            }
            _ => {
                // Asked for something not just read: read again (the directory has no history).
                self.fetch()?;
                let (snapshot, overlays) = self
                    .read
                    .as_ref()
                    .map(|(_, s, o)| (s.clone(), o.clone()))
                    .unwrap_or_default();
                Ok(self.loaded(snapshot, overlays))
            }
        }
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

/// A short content digest of a snapshot (config, paths, bytes, source diagnostics).
fn digest(s: &Snapshot) -> String {
    let mut ctx = Context::new(&SHA256);
    ctx.update(format!("{:?}|{}", s.config, s.incomplete).as_bytes());
    for f in &s.files {
        ctx.update(f.path.to_string_lossy().as_bytes());
        ctx.update(&(f.bytes.len() as u64).to_le_bytes());
        ctx.update(&f.bytes);
    }
    for d in &s.diagnostics {
        ctx.update(format!("{d:?}").as_bytes());
    }
    hex::encode(&ctx.finish().as_ref()[..8])
}

/// Watch `root` recursively; `on_change` runs (on the watcher's thread) once per debounced
/// burst of events. The watch stops when the returned guard is dropped.
pub fn watch(
    root: &Path,
    debounce: Duration,
    on_change: impl FnMut() + Send + 'static,
) -> Result<impl Drop, SourceError> {
    let mut on_change = on_change;
    let mut debouncer = new_debouncer(debounce, None, move |res: DebounceEventResult| match res {
        // Reads (access events) are not changes: reading the repo after a change must not
        // trigger another read.
        Ok(events)
            if events.iter().any(|e| {
                !matches!(
                    e.event.kind,
                    notify_debouncer_full::notify::EventKind::Access(_)
                )
            }) =>
        {
            on_change()
        }
        Ok(_) => {}
        Err(errors) => {
            for e in errors {
                tracing::warn!(error = %e, "directory watch error");
            }
            // Something may have changed unseen: re-read.
            on_change();
        }
    })
    .map_err(|e| SourceError::Unreadable {
        path: root.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    debouncer
        .watch(root, RecursiveMode::Recursive)
        .map_err(|e| SourceError::Unreadable {
            path: root.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
    Ok(debouncer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_changes_with_content_only() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("apps")).unwrap();
        std::fs::write(tmp.path().join("apps/a.yaml"), "cmd: a\n").unwrap();
        let mut s = DirSource::new(tmp.path().to_path_buf());
        let r1 = s.fetch().unwrap();
        assert_eq!(s.fetch().unwrap(), r1);
        std::fs::write(tmp.path().join("apps/a.yaml"), "cmd: b\n").unwrap();
        let r2 = s.fetch().unwrap();
        assert_ne!(r1, r2);
        assert_eq!(s.load(&r2).unwrap().specs.len(), 1);
    }
}
