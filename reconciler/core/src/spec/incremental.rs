//! Incremental loading: a cache of per-file load results keyed by path and content key (a git
//! blob id), so a new commit re-parses only the files whose blob changed, and the assembled
//! [`Repo`] is patched where a change cannot affect other apps, so a one-file change costs
//! O(change) (plus handing out a copy of the map of shared specs).
//!
//! A change is patched in place when every file it touches (before and after) is a plain spec
//! file: it names an app, its spec depends on nothing, no other spec depends on its app, no
//! other file maps to the same app (duplicates, case-only duplicates), and no problem the source
//! reported names that app, and it is neither a rollout app nor a `-canary` one (either makes the
//! other invalid). Anything else (a dependency, a duplicate, a source problem, a rollout,
//! `baton.yaml`) re-runs the repo-wide checks over the cached results, as a full load does.
//!
//! **Invariant:** after any sequence of [`Incremental::reset`] and [`Incremental::update`], the
//! returned [`Repo`] equals [`super::load::load`] of the equivalent full [`Snapshot`]
//! ([`Incremental::snapshot_equivalent`]): same specs, invalid set, completeness and diagnostics
//! (in the same order). A change of `baton.yaml` changes every file's result, so the caller
//! resets instead.
//!
//! [`Snapshot`]: super::load::Snapshot

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use rayon::prelude::*;

use super::load::{
    assemble, diagnostic_order, load_file, FileResult, Keep, RepoConfig, SourceFile,
};
use super::{AppId, Diagnostic, Repo, Severity};

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

/// Who refers to what, over the cached entries: what decides whether a change can be patched.
#[derive(Debug, Clone, Default)]
struct Index {
    /// Loaded files per app key (lowercased path): more than one is a duplicate.
    keys: HashMap<String, usize>,
    /// Source problems (and base diagnostics) naming an app, per app.
    problems: HashMap<AppId, usize>,
    /// Specs listing an app in `dependsOn`, per app.
    dependents: HashMap<AppId, usize>,
}

impl Index {
    fn count(&mut self, c: &Cached, add: bool) {
        fn bump<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: K, add: bool) {
            if add {
                *m.entry(k).or_default() += 1;
            } else if let Some(n) = m.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&k);
                }
            }
        }
        match c {
            Cached::Loaded { result, .. } => {
                bump(&mut self.keys, result.key.clone(), add);
                for dep in result.spec.iter().flat_map(|s| &s.baton.depends_on) {
                    bump(&mut self.dependents, dep.clone(), add);
                }
            }
            Cached::Problem { diagnostic, .. } => {
                if let Some(app) = &diagnostic.app {
                    bump(&mut self.problems, app.clone(), add);
                }
            }
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
    index: Index,
    /// The repo assembled from `entries`, kept to be patched.
    repo: Repo,
    /// Files parsed by the last reset or update (for tests and logs).
    parsed_last: usize,
    /// Whether the last update patched the repo (rather than re-running the repo-wide checks).
    patched_last: bool,
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
        self.index = Index::default();
        for d in &self.base_diagnostics {
            if let Some(app) = d.app.clone().filter(|_| d.severity == Severity::Error) {
                *self.index.problems.entry(app).or_default() += 1;
            }
        }
        self.parsed_last = 0;
        self.patched_last = false;
        let loaded = self.parse(entries);
        for (path, cached) in loaded {
            self.put(path, Some(cached));
        }
        self.repo = self.assemble();
        self.repo.clone()
    }

    /// Apply a delta: `removed` paths are gone, `changed` ones are new or have new content.
    /// Entries whose key is already cached at that path are not parsed again.
    pub fn update(&mut self, removed: &[PathBuf], changed: Vec<Entry>) -> Repo {
        self.parsed_last = 0;
        let fresh: Vec<Entry> = changed
            .into_iter()
            .filter(|e| self.entries.get(&e.path).is_none_or(|c| c.key() != e.key))
            .collect();
        let loaded = self.parse(fresh);
        // (path, before, after) of every entry this update touches.
        let mut touched: Vec<(PathBuf, Option<Cached>, bool)> = Vec::new();
        for p in removed {
            if let Some(old) = self.put(p.clone(), None) {
                touched.push((p.clone(), Some(old), false));
            }
        }
        for (path, cached) in loaded {
            let old = self.put(path.clone(), Some(cached));
            touched.push((path, old, true));
        }
        self.patched_last = !touched.is_empty()
            && self.patchable(&touched)
            && touched
                .iter()
                .all(|(path, old, _)| self.patch(path, old.as_ref()));
        if !touched.is_empty() && !self.patched_last {
            self.repo = self.assemble();
        }
        self.repo.clone()
    }

    /// Whether `path` is cached with content `key`.
    pub fn is_cached(&self, path: &std::path::Path, key: &str) -> bool {
        self.entries.get(path).is_some_and(|c| c.key() == key)
    }

    /// How many files the last call parsed.
    pub fn parsed_last(&self) -> usize {
        self.parsed_last
    }

    /// Whether the last [`update`](Self::update) patched the repo in place.
    pub fn patched_last(&self) -> bool {
        self.patched_last
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

    /// Parse new entries (in parallel).
    fn parse(&mut self, entries: Vec<Entry>) -> Vec<(PathBuf, Cached)> {
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
                        let result = Box::new(load_file(&file, config, Keep::Definitions));
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
        loaded
    }

    /// Set (or remove) the entry at `path`, keeping the index; returns the previous entry.
    fn put(&mut self, path: PathBuf, cached: Option<Cached>) -> Option<Cached> {
        if let Some(c) = &cached {
            self.index.count(c, true);
        }
        let old = match cached {
            Some(c) => self.entries.insert(path, c),
            None => self.entries.remove(&path),
        };
        if let Some(o) = &old {
            self.index.count(o, false);
        }
        old
    }

    /// The repo-wide checks over every cached result, as a full load runs them.
    fn assemble(&self) -> Repo {
        let mut diagnostics = self.base_diagnostics.clone();
        let mut results = Vec::with_capacity(self.entries.len());
        for c in self.entries.values() {
            match c {
                Cached::Loaded { result, .. } => results.push(&**result),
                Cached::Problem { diagnostic, .. } => diagnostics.push(diagnostic.clone()),
            }
        }
        assemble(self.config.clone(), diagnostics, self.incomplete, &results)
    }

    /// Whether every touched file, before and after, is a plain spec file (see the module
    /// documentation), so that the change cannot alter any other app's result.
    fn patchable(&self, touched: &[(PathBuf, Option<Cached>, bool)]) -> bool {
        let plain = |c: &Cached| match c {
            Cached::Problem { .. } => false,
            Cached::Loaded { result, .. } => {
                let Some(id) = &result.id else { return false };
                self.index.keys.get(&result.key).copied().unwrap_or(0) <= 1
                    && !self.index.problems.contains_key(id)
                    && !self.index.dependents.contains_key(id)
                    && result
                        .spec
                        .as_ref()
                        .is_none_or(|s| s.baton.depends_on.is_empty() && s.baton.rollout.is_none())
                    // A rollout app is invalid while `<id>-canary` has a file: either side
                    // changing needs the repo-wide check.
                    && !id.as_str().ends_with(crate::rollout::CANARY_SUFFIX)
            }
        };
        touched.iter().all(|(path, old, present)| {
            let now_ok = !present || self.entries.get(path).is_some_and(plain);
            // The file's old app key is free now (or taken by this very file again).
            let old_ok = old.as_ref().is_none_or(|o| {
                plain(o)
                    && match o {
                        Cached::Loaded { result, .. } => {
                            let same_key = self.entries.get(path).is_some_and(|c| {
                                matches!(c, Cached::Loaded { result: r, .. } if r.key == result.key)
                            });
                            self.index.keys.get(&result.key).copied().unwrap_or(0)
                                == usize::from(same_key)
                        }
                        Cached::Problem { .. } => false,
                    }
            });
            now_ok && old_ok
        })
    }

    /// Replace what the file at `path` contributed (`old`) by what it contributes now. Only
    /// for [`patchable`](Self::patchable) changes: then the file is the only one naming its app,
    /// its diagnostics are a contiguous run of the sorted list (all name `path`), and nothing
    /// else in the repo depends on it. `false` (the repo is then to be re-assembled) when the
    /// diagnostics naming `path` are not exactly the old file's.
    fn patch(&mut self, path: &PathBuf, old: Option<&Cached>) -> bool {
        let repo = &mut self.repo;
        if let Some(Cached::Loaded { result, .. }) = old {
            if let Some(id) = &result.id {
                repo.specs.remove(id);
                repo.invalid.remove(id);
            }
        }
        let start = repo.diagnostics.partition_point(|d| d.file < *path);
        let end = start
            + repo.diagnostics[start..]
                .iter()
                .take_while(|d| d.file == *path)
                .count();
        let expected = match old {
            Some(Cached::Loaded { result, .. }) => result.diagnostics.len(),
            _ => 0,
        };
        if end - start != expected {
            return false;
        }
        let mut fresh: Vec<Diagnostic> = Vec::new();
        if let Some(Cached::Loaded { result, .. }) = self.entries.get(path) {
            if let Some(id) = &result.id {
                let has_error = result
                    .diagnostics
                    .iter()
                    .any(|d| d.severity == Severity::Error);
                match (&result.spec, has_error) {
                    (Some(spec), false) => {
                        repo.specs.insert(id.clone(), spec.clone());
                    }
                    _ => {
                        repo.invalid.insert(id.clone());
                    }
                }
            }
            fresh = result.diagnostics.clone();
            fresh.sort_by(diagnostic_order);
        }
        repo.diagnostics.splice(start..end, fresh);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::load::{load, Snapshot};
    use crate::spec::Severity;

    /// A listing entry for a file with this text, keyed by its content.
    pub(super) fn entry(path: &str, text: &str) -> Entry {
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

/// The patch path against full loads: deterministic cases, then random sequences of edits.
#[cfg(test)]
mod patch_tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::tests::entry;
    use super::*;
    use crate::spec::load::load;

    fn problem(path: &str, app: Option<&str>) -> Entry {
        Entry {
            path: PathBuf::from(path),
            key: format!("problem:{app:?}"),
            input: Input::Problem(Diagnostic {
                severity: Severity::Error,
                file: PathBuf::from(path),
                pointer: String::new(),
                line: None,
                column: None,
                message: "too large".into(),
                app: app.map(|a| AppId::parse(a).unwrap()),
            }),
        }
    }

    fn assert_same(a: &Repo, b: &Repo) {
        assert_eq!(a.config, b.config);
        assert_eq!(a.specs, b.specs);
        assert_eq!(a.invalid, b.invalid);
        assert_eq!(a.incomplete, b.incomplete);
        assert_eq!(a.diagnostics, b.diagnostics);
    }

    /// Apply `removed`/`changed` and check the result against a full load of the same files.
    fn step(inc: &mut Incremental, removed: &[&str], changed: Vec<Entry>) -> Repo {
        let removed: Vec<PathBuf> = removed.iter().map(PathBuf::from).collect();
        let repo = inc.update(&removed, changed);
        assert_same(&repo, &load(inc.snapshot_equivalent()));
        repo
    }

    /// A rollout app is invalid while a spec of its canary's id exists: adding, editing or
    /// removing either file re-runs the repo-wide check.
    #[test]
    fn a_canary_named_file_coming_and_going_rechecks_its_rollout_app() {
        let rollout = |cmd: &str| {
            format!("cmd: {cmd}\ninstances: 10\nlabels: {{HAPROXY_GROUP: external}}\nportDefinitions: [{{port: 10100}}]\nhealthChecks: [{{protocol: HTTP, path: /h}}]\nbaton:\n  rollout: {{}}\n")
        };
        let b = AppId::parse("/b").unwrap();
        let mut inc = Incremental::default();
        let repo = inc.reset(
            RepoConfig::default(),
            Vec::new(),
            false,
            vec![
                entry("apps/a.yaml", "cmd: a\n"),
                entry("apps/b.yaml", &rollout("b1")),
            ],
        );
        assert!(repo.specs.contains_key(&b), "{:?}", repo.diagnostics);
        let repo = step(&mut inc, &[], vec![entry("apps/b-canary.yaml", "cmd: c\n")]);
        assert!(repo.invalid.contains(&b));
        let repo = step(&mut inc, &[], vec![entry("apps/b.yaml", &rollout("b2"))]);
        assert!(repo.invalid.contains(&b));
        let repo = step(&mut inc, &["apps/b-canary.yaml"], vec![]);
        assert!(repo.specs.contains_key(&b));
        // Plain edits elsewhere are still patched.
        step(&mut inc, &[], vec![entry("apps/a.yaml", "cmd: a2\n")]);
        assert!(inc.patched_last());
    }

    #[test]
    fn plain_edits_are_patched_and_equal_a_full_load() {
        let app = |cmd: &str| format!("cmd: \"{cmd}\"\ninstances: 1\n");
        let mut inc = Incremental::default();
        let files: Vec<Entry> = (0..20)
            .map(|i| entry(&format!("apps/a{i:02}.yaml"), &app(&format!("a{i}"))))
            .chain([entry("apps/g/b.json", "{\"cmd\": \"b\"}")])
            .collect();
        inc.reset(RepoConfig::default(), Vec::new(), false, files);
        let id = |s: &str| AppId::parse(s).unwrap();

        // Modify one file.
        let repo = step(&mut inc, &[], vec![entry("apps/a03.yaml", &app("new"))]);
        assert!(inc.patched_last() && inc.parsed_last() == 1);
        assert_eq!(repo.specs[&id("/a03")].app["cmd"], "new");
        // Break it (schema error with a line), then a warning only, then fix it.
        let repo = step(
            &mut inc,
            &[],
            vec![entry("apps/a03.yaml", "cmd: 1\ncpus: x\n")],
        );
        assert!(inc.patched_last());
        assert!(repo.invalid.contains(&id("/a03")) && !repo.specs.contains_key(&id("/a03")));
        let repo = step(
            &mut inc,
            &[],
            vec![entry("apps/a03.yaml", "cmd: x\nmem: null\n")],
        );
        assert!(inc.patched_last());
        assert!(repo.specs.contains_key(&id("/a03")) && !repo.diagnostics.is_empty());
        step(&mut inc, &[], vec![entry("apps/a03.yaml", &app("fixed"))]);
        assert!(inc.patched_last());
        // Add, then remove, apps; two files in one update.
        let repo = step(
            &mut inc,
            &["apps/a05.yaml"],
            vec![
                entry("apps/new/c.yaml", &app("c")),
                entry("apps/a07.yaml", "cmd: ["),
            ],
        );
        assert!(inc.patched_last());
        assert!(!repo.specs.contains_key(&id("/a05")) && repo.specs.contains_key(&id("/new/c")));
        assert!(repo.invalid.contains(&id("/a07")));

        // What may concern other apps goes through the repo-wide checks.
        step(
            &mut inc,
            &[],
            vec![entry(
                "apps/d.yaml",
                "cmd: d\nbaton:\n  dependsOn: [/a01]\n",
            )],
        );
        assert!(!inc.patched_last(), "a dependency");
        step(
            &mut inc,
            &[],
            vec![entry("apps/a01.yaml", &app("a1 changed"))],
        );
        assert!(!inc.patched_last(), "an app another depends on");
        step(&mut inc, &["apps/d.yaml"], vec![]);
        assert!(!inc.patched_last(), "the dependency goes");
        step(&mut inc, &[], vec![entry("apps/A02.yml", &app("dup"))]);
        assert!(!inc.patched_last(), "a case-only duplicate");
        step(&mut inc, &["apps/A02.yml"], vec![]);
        assert!(!inc.patched_last(), "the duplicate goes");
        step(
            &mut inc,
            &[],
            vec![problem("apps/huge.yaml", Some("/huge"))],
        );
        assert!(!inc.patched_last(), "a source problem");
        let repo = step(&mut inc, &[], vec![entry("apps/a09.yaml", &app("again"))]);
        assert!(inc.patched_last(), "plain edits are patched again");
        assert_eq!(repo.specs[&id("/a09")].app["cmd"], "again");
    }

    /// Paths: plain ones, duplicates of one app (same id, other extension; case only), a
    /// nested one, one whose name is no app id.
    const PATHS: &[&str] = &[
        "apps/a.yaml",
        "apps/a.json",
        "apps/A.yml",
        "apps/b.yaml",
        "apps/c.yaml",
        "apps/g/d.yaml",
        "apps/bad name.yaml",
    ];

    /// Contents: plain specs, dependencies (known, unknown, a cycle with /b and /c), broken
    /// YAML, a schema error, a warning, source problems with and without an app.
    fn content(i: usize, path: &str) -> Entry {
        let text = match i {
            0 => "cmd: one\n",
            1 => "cmd: two\ninstances: 2\n",
            2 => "cmd: dep\nbaton:\n  dependsOn: [/b]\n",
            3 => "cmd: dep\nbaton:\n  dependsOn: [/c]\n",
            4 => "cmd: dep\nbaton:\n  dependsOn: [/nowhere]\n",
            5 => "cmd: [unclosed",
            6 => "cmd: x\ncpus: many\n",
            7 => "cmd: x\nmem: null\n",
            8 => {
                return problem(
                    path,
                    AppId::from_path(Path::new(path).strip_prefix("apps").unwrap())
                        .ok()
                        .map(|a| a.to_string())
                        .as_deref(),
                )
            }
            _ => return problem(path, None),
        };
        // JSON files get JSON.
        if path.ends_with(".json") {
            let v: serde_json::Value =
                serde_yaml::from_str(text).unwrap_or(serde_json::json!({"cmd": 1}));
            return entry(path, &v.to_string());
        }
        entry(path, text)
    }

    use std::path::Path;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// After any sequence of edits (each update one to three of them), the incremental
        /// repo equals a full load of the same files, whichever path (patch or repo-wide
        /// checks) each update took.
        #[test]
        fn any_edit_sequence_equals_a_full_load(
            start in prop::collection::vec(0usize..11, PATHS.len()),
            edits in prop::collection::vec(
                prop::collection::vec((0..PATHS.len(), 0usize..11), 1..4),
                1..25,
            ),
        ) {
            let mut inc = Incremental::default();
            let mut files: BTreeMap<&str, Entry> = BTreeMap::new();
            for (p, c) in PATHS.iter().zip(start) {
                if c < 10 {
                    files.insert(p, content(c, p));
                }
            }
            let repo = inc.reset(RepoConfig::default(), Vec::new(), false, files.values().cloned().collect());
            assert_same(&repo, &load(inc.snapshot_equivalent()));
            for batch in edits {
                let mut removed = Vec::new();
                let mut changed = Vec::new();
                for (p, c) in batch {
                    let path = PATHS[p];
                    // One edit per path and update, as a tree diff gives them.
                    if removed.contains(&path) || changed.iter().any(|e: &Entry| e.path == Path::new(path)) {
                        continue;
                    }
                    if c == 10 {
                        if files.remove(path).is_some() {
                            removed.push(path);
                        }
                    } else {
                        let e = content(c, path);
                        files.insert(path, e.clone());
                        changed.push(e);
                    }
                }
                let removed_paths: Vec<PathBuf> = removed.iter().map(PathBuf::from).collect();
                let repo = inc.update(&removed_paths, changed);
                let mut snapshot = super::super::load::Snapshot::default();
                for e in files.values() {
                    match &e.input {
                        Input::File(b) => snapshot.files.push(SourceFile { path: e.path.clone(), bytes: b.clone() }),
                        Input::Problem(d) => snapshot.diagnostics.push(d.clone()),
                    }
                }
                assert_same(&repo, &load(snapshot));
            }
        }
    }
}
