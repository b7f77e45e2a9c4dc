//! Incremental loading: a cache of per-file load results keyed by path and content key (a git
//! blob id), so a new commit re-parses only the files whose blob changed. The repo-wide checks
//! (duplicates, dependencies) still run over everything, on cached results.
//!
//! **Invariant:** after any sequence of [`Incremental::reset`] and [`Incremental::update`], the
//! returned [`Repo`] equals [`super::load::load`] of the equivalent full [`Snapshot`]
//! ([`Incremental::snapshot_equivalent`]): same specs, invalid set, completeness and diagnostics.
//! A change of `baton.yaml` changes every file's result, so the caller resets instead.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rayon::prelude::*;

use super::load::{assemble, load_file, FileResult, RepoConfig, SourceFile};
use super::{Diagnostic, Repo};

/// One spec file of a source listing, keyed by its content id.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the repo root.
    pub path: PathBuf,
    /// Equal keys mean equal bytes (a git blob id).
    pub key: String,
    pub input: Input,
}

/// What the source could make of one file.
#[derive(Debug, Clone)]
pub enum Input {
    /// The bytes, to be parsed.
    File(Vec<u8>),
    /// The source could not hand the file over (too large, a symlink, ...): a source diagnostic,
    /// as in [`super::load::Snapshot::diagnostics`].
    Problem(Diagnostic),
}

#[derive(Debug, Clone)]
enum Cached {
    Loaded {
        key: String,
        bytes: Vec<u8>,
        result: Box<FileResult>,
    },
    Problem {
        key: String,
        diagnostic: Diagnostic,
    },
}

impl Cached {
    fn key(&self) -> &str {
        match self {
            Cached::Loaded { key, .. } | Cached::Problem { key, .. } => key,
        }
    }
}

/// The cache. One per followed source.
#[derive(Debug, Clone, Default)]
pub struct Incremental {
    config: RepoConfig,
    /// Diagnostics about `baton.yaml` and the listing as a whole.
    base_diagnostics: Vec<Diagnostic>,
    incomplete: bool,
    entries: BTreeMap<PathBuf, Cached>,
    /// Files parsed by the last reset or update (for tests and logs).
    parsed_last: usize,
}

impl Incremental {
    /// Load a full listing, dropping everything cached.
    pub fn reset(
        &mut self,
        config: RepoConfig,
        base_diagnostics: Vec<Diagnostic>,
        incomplete: bool,
        entries: Vec<Entry>,
    ) -> Repo {
        self.config = config;
        self.base_diagnostics = base_diagnostics;
        self.incomplete = incomplete;
        self.entries.clear();
        self.parsed_last = 0;
        self.insert(entries);
        self.repo()
    }

    /// Apply a delta: `removed` paths are gone, `changed` ones are new or have new content.
    /// Entries whose key is already cached at that path are not parsed again.
    pub fn update(&mut self, removed: &[PathBuf], changed: Vec<Entry>) -> Repo {
        for p in removed {
            self.entries.remove(p);
        }
        self.parsed_last = 0;
        let fresh: Vec<Entry> = changed
            .into_iter()
            .filter(|e| self.entries.get(&e.path).is_none_or(|c| c.key() != e.key))
            .collect();
        self.insert(fresh);
        self.repo()
    }

    /// Whether `path` is cached with content `key`.
    pub fn is_cached(&self, path: &std::path::Path, key: &str) -> bool {
        self.entries.get(path).is_some_and(|c| c.key() == key)
    }

    /// How many files the last call parsed.
    pub fn parsed_last(&self) -> usize {
        self.parsed_last
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The full snapshot this cache stands for (what [`super::load::load`] must agree with).
    pub fn snapshot_equivalent(&self) -> super::load::Snapshot {
        let mut diagnostics = self.base_diagnostics.clone();
        let mut files = Vec::new();
        for (path, c) in &self.entries {
            match c {
                Cached::Problem { diagnostic, .. } => diagnostics.push(diagnostic.clone()),
                Cached::Loaded { bytes, .. } => files.push(SourceFile {
                    path: path.clone(),
                    bytes: bytes.clone(),
                }),
            }
        }
        super::load::Snapshot {
            config: self.config.clone(),
            files,
            diagnostics,
            incomplete: self.incomplete,
        }
    }

    fn insert(&mut self, entries: Vec<Entry>) {
        let config = &self.config;
        let loaded: Vec<(PathBuf, Cached)> = entries
            .into_par_iter()
            .map(|e| {
                let cached = match e.input {
                    Input::File(bytes) => {
                        let file = SourceFile {
                            path: e.path.clone(),
                            bytes,
                        };
                        let result = Box::new(load_file(&file, config));
                        Cached::Loaded {
                            key: e.key,
                            bytes: file.bytes,
                            result,
                        }
                    }
                    Input::Problem(diagnostic) => Cached::Problem {
                        key: e.key,
                        diagnostic,
                    },
                };
                (e.path, cached)
            })
            .collect();
        self.parsed_last += loaded.len();
        self.entries.extend(loaded);
    }

    fn repo(&self) -> Repo {
        let mut diagnostics = self.base_diagnostics.clone();
        let mut results = Vec::with_capacity(self.entries.len());
        for c in self.entries.values() {
            match c {
                Cached::Loaded { result, .. } => results.push(FileResult::clone(result)),
                Cached::Problem { diagnostic, .. } => diagnostics.push(diagnostic.clone()),
            }
        }
        assemble(self.config.clone(), diagnostics, self.incomplete, results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::load::{load, Snapshot};
    use crate::spec::Severity;

    fn entry(path: &str, text: &str) -> Entry {
        let key = hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()));
        Entry {
            path: PathBuf::from(path),
            key,
            input: Input::File(text.as_bytes().to_vec()),
        }
    }

    fn problem(path: &str, app: Option<&str>) -> Entry {
        Entry {
            path: PathBuf::from(path),
            key: "problem".into(),
            input: Input::Problem(Diagnostic {
                severity: Severity::Error,
                file: PathBuf::from(path),
                pointer: String::new(),
                line: None,
                column: None,
                message: "too large".into(),
                app: app.map(|a| crate::spec::AppId::parse(a).unwrap()),
            }),
        }
    }

    fn full(entries: &BTreeMap<String, Entry>) -> Repo {
        let mut snapshot = Snapshot {
            config: RepoConfig::default(),
            ..Snapshot::default()
        };
        for e in entries.values() {
            match &e.input {
                Input::File(b) => snapshot.files.push(SourceFile {
                    path: e.path.clone(),
                    bytes: b.clone(),
                }),
                Input::Problem(d) => snapshot.diagnostics.push(d.clone()),
            }
        }
        load(snapshot)
    }

    pub(crate) fn assert_same(a: &Repo, b: &Repo) {
        assert_eq!(a.config, b.config);
        assert_eq!(a.specs, b.specs);
        assert_eq!(a.invalid, b.invalid);
        assert_eq!(a.incomplete, b.incomplete);
        assert_eq!(a.diagnostics, b.diagnostics);
    }

    /// A sequence of edits; after each, the incremental result equals a full load, and only the
    /// changed files were parsed.
    #[test]
    fn incremental_equals_full_load_and_parses_only_changes() {
        let app = |cmd: &str, extra: &str| format!("cmd: \"{cmd}\"\ninstances: 1\n{extra}");
        let mut files: BTreeMap<String, Entry> = BTreeMap::new();
        for (p, t) in [
            ("apps/a.yaml", app("a", "")),
            ("apps/b.yaml", app("b", "baton:\n  dependsOn: [/a]\n")),
            ("apps/g/c.json", "{\"cmd\": \"c\"}".to_string()),
            ("apps/bad.yaml", "cmd: [unclosed".to_string()),
        ] {
            files.insert(p.into(), entry(p, &t));
        }
        let mut inc = Incremental::default();
        let repo = inc.reset(
            RepoConfig::default(),
            Vec::new(),
            false,
            files.values().cloned().collect(),
        );
        assert_eq!(inc.parsed_last(), 4);
        assert_same(&repo, &full(&files));
        assert!(repo.specs.len() == 3 && repo.invalid.len() == 1);

        type Step = (Vec<&'static str>, Vec<Entry>);
        let steps: Vec<Step> = vec![
            // Modify one file.
            (vec![], vec![entry("apps/a.yaml", &app("a2", ""))]),
            // Delete the dependency target: b becomes invalid.
            (vec!["apps/a.yaml"], vec![]),
            // Restore it, add a duplicate (case) and a too-large file.
            (
                vec![],
                vec![
                    entry("apps/a.yaml", &app("a", "")),
                    entry("apps/B.yml", &app("B", "")),
                    problem("apps/huge.yaml", Some("/huge")),
                ],
            ),
            // Fix the broken file, remove the duplicate, a problem without app id.
            (
                vec!["apps/B.yml"],
                vec![
                    entry("apps/bad.yaml", &app("bad", "")),
                    problem("apps/x", None),
                ],
            ),
            // Re-send unchanged content: nothing parsed.
            (vec![], vec![entry("apps/bad.yaml", &app("bad", ""))]),
        ];
        let mut expect_parsed = vec![1, 0, 3, 2, 0].into_iter();
        for (removed, changed) in steps {
            for r in &removed {
                files.remove(*r);
            }
            for e in &changed {
                files.insert(e.path.to_string_lossy().into_owned(), e.clone());
            }
            let removed: Vec<PathBuf> = removed.iter().map(PathBuf::from).collect();
            let repo = inc.update(&removed, changed);
            assert_same(&repo, &full(&files));
            assert_same(&repo, &load(inc.snapshot_equivalent()));
            assert_eq!(Some(inc.parsed_last()), expect_parsed.next());
        }
        let last = full(&files);
        assert!(
            last.incomplete,
            "a problem without app id makes the repo incomplete"
        );
        assert!(last
            .invalid
            .contains(&crate::spec::AppId::parse("/huge").unwrap()));
    }
}
