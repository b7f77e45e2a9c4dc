//! A repo's files to a [`Repo`]: every spec parsed, validated and tied to its app id, every
//! problem a [`Diagnostic`]. One broken file never hides the others, and never makes its app
//! look deleted: its id goes to [`Repo::invalid`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rayon::prelude::*;
use serde_json::{Map, Value};

use super::parse::{self, Format, Limits};
use super::schema::{self, Finding};
use super::{AppId, BatonBlock, Diagnostic, DriftPolicy, IdPrefix, Repo, Severity, Spec};

/// Name of the optional repo config file at the repo root.
pub const CONFIG_FILE: &str = "baton.yaml";

/// One file of the repo, as bytes (read from disk or from a git tree).
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the repo root.
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// Deletion budget per sync: at most `max_deletes` apps, or `max_percent` of the owned apps when
/// that is more.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneBudget {
    pub max_deletes: usize,
    pub max_percent: f64,
}

/// `baton.yaml`, with defaults for everything it leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct RepoConfig {
    /// Where the specs live, relative to the repo root.
    pub apps_dir: PathBuf,
    /// Owner name written into the ownership labels; only apps with it are ever pruned.
    pub owner: String,
    /// `owner` was set in `baton.yaml`. Without it Baton deletes nothing: the default owner
    /// (`baton`) may be another repo's too, and its apps would look like this repo's.
    pub owner_explicit: bool,
    /// `idPrefixes`: the app ids this repo may manage (`None`: every id). A spec outside them
    /// is invalid; a live app outside them is never created, changed or deleted.
    pub id_prefixes: Option<Vec<IdPrefix>>,
    /// A partial app merged under every spec (the spec wins).
    pub defaults: Map<String, Value>,
    pub prune: PruneBudget,
    pub drift: DriftPolicy,
    /// Larger spec files are refused before they are read.
    pub max_file_bytes: u64,
    /// `environments:` (docs/environments.md); empty: the repo has one implicit target.
    pub environments: BTreeMap<String, crate::environment::Environment>,
    /// The environment this config was made for (`environment::config_for`), if any.
    pub environment: Option<String>,
}

impl RepoConfig {
    /// Whether this repo may manage the app `id`: inside `idPrefixes`, or there are none.
    pub fn in_scope(&self, id: &AppId) -> bool {
        self.id_prefixes
            .as_ref()
            .is_none_or(|list| list.iter().any(|p| p.contains(id)))
    }

    /// `idPrefixes` for messages: "`/shop`, `/web`".
    pub fn id_prefixes_shown(&self) -> String {
        let list = self.id_prefixes.as_deref().unwrap_or_default();
        let shown: Vec<String> = list.iter().map(|p| format!("`{p}`")).collect();
        shown.join(", ")
    }
}

impl Default for RepoConfig {
    fn default() -> Self {
        RepoConfig {
            apps_dir: PathBuf::from("apps"),
            owner: "baton".into(),
            owner_explicit: false,
            id_prefixes: None,
            defaults: Map::new(),
            prune: PruneBudget {
                max_deletes: 5,
                max_percent: 10.0,
            },
            drift: DriftPolicy::Report,
            max_file_bytes: 1024 * 1024,
            environments: BTreeMap::new(),
            environment: None,
        }
    }
}

/// What a source hands to [`load`]: the config, the spec files under the apps dir, and the
/// problems it met while reading (files too large, symlinks that leave the repo, ...).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub config: RepoConfig,
    pub files: Vec<SourceFile>,
    pub diagnostics: Vec<Diagnostic>,
    /// The source could not see everything (a config error, an unreadable directory).
    pub incomplete: bool,
}

/// Parse `baton.yaml` (absent = all defaults). A broken config yields diagnostics and the
/// defaults, and the caller must treat the repo as incomplete.
pub fn parse_config(file: Option<&SourceFile>) -> (RepoConfig, Vec<Diagnostic>) {
    let mut config = RepoConfig::default();
    let Some(file) = file else {
        return (config, Vec::new());
    };
    let diag = |pointer: &str, message: String, text: Option<&str>| {
        diagnostic(&file.path, None, Severity::Error, pointer, message, text)
    };
    let text = match std::str::from_utf8(&file.bytes) {
        Ok(t) => t,
        Err(e) => return (config, vec![diag("", not_utf8(&e), None)]),
    };
    let doc = match parse::parse(text, Format::Yaml, Limits::default()) {
        Ok(v) => v,
        Err(e) => return (config, vec![parse_diag(&file.path, None, e)]),
    };
    let findings = match schema::repo() {
        Ok(s) => s.check(&doc),
        Err(e) => return (config, vec![diag("", e.to_string(), None)]),
    };
    let mut out = findings_to_diags(&file.path, None, findings, text);
    if out.iter().any(|d| d.severity == Severity::Error) {
        return (config, out);
    }
    if let Some(dir) = doc.get("appsDir").and_then(Value::as_str) {
        let p = PathBuf::from(dir);
        if p.is_absolute() || p.components().any(|c| c.as_os_str() == "..") {
            out.push(diag(
                "/appsDir",
                "must be a path inside the repo".into(),
                Some(text),
            ));
        } else {
            config.apps_dir = p;
        }
    }
    if let Some(owner) = doc.get("owner").and_then(Value::as_str) {
        config.owner = owner.to_string();
        config.owner_explicit = true;
    }
    if let Some(list) = doc.get("idPrefixes").and_then(Value::as_array) {
        let before = out.len();
        if list.is_empty() {
            out.push(diag(
                "/idPrefixes",
                "an empty list lets this repo manage no app; list the prefixes it may manage (like `/shop`), or remove `idPrefixes` to allow every app id".into(),
                Some(text),
            ));
        }
        let mut prefixes = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            // The schema has checked that every item is a string.
            match IdPrefix::parse(item.as_str().unwrap_or_default()) {
                Ok(p) => prefixes.push(p),
                Err(m) => out.push(diag(&format!("/idPrefixes/{i}"), m, Some(text))),
            }
        }
        if out.len() == before {
            config.id_prefixes = Some(prefixes);
        }
    }
    if let Some(d) = doc.get("defaults").and_then(Value::as_object) {
        config.defaults = d.clone();
    }
    if let Some(n) = doc.pointer("/prune/maxDeletes").and_then(Value::as_u64) {
        config.prune.max_deletes = n as usize;
    }
    if let Some(p) = doc
        .pointer("/prune/maxDeletesPercent")
        .and_then(Value::as_f64)
    {
        config.prune.max_percent = p;
    }
    if let Some(d) = doc.get("drift") {
        match drift_policy(d) {
            Ok(p) => config.drift = p,
            Err(m) => out.push(diag("/drift", m, Some(text))),
        }
    }
    if let Some(n) = doc.get("maxFileBytes").and_then(Value::as_u64) {
        config.max_file_bytes = n;
    }
    let place = |pointer: &str, message: String| diag(pointer, message, Some(text));
    let (environments, problems) = crate::environment::parse(&doc, &place, &drift_policy);
    config.environments = environments;
    out.extend(problems);
    (config, out)
}

/// What loading keeps of each valid spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Everything: the definition (`Spec::app`) is what planning and syncing need.
    Definitions,
    /// What validation reports on (ids, `baton:` blocks, diagnostics); every `Spec::app` is
    /// `null`. Each definition is dropped as soon as its file is checked, so checking a large
    /// repo holds one file's worth of definition per thread, not the whole repo's.
    Diagnostics,
}

/// Load every spec of a snapshot. Pure; runs the files in parallel.
pub fn load(snapshot: Snapshot) -> Repo {
    load_with(snapshot, Keep::Definitions)
}

/// [`load`], keeping what `keep` says: the same specs, invalid apps and diagnostics either way.
pub fn load_with(snapshot: Snapshot, keep: Keep) -> Repo {
    let Snapshot {
        config,
        files,
        diagnostics,
        incomplete,
    } = snapshot;
    let results: Vec<FileResult> = files
        .par_iter()
        .map(|f| load_file(f, &config, keep))
        .collect();
    drop(files); // the results hold what is needed of them
    let results: Vec<&FileResult> = results.iter().collect();
    assemble(config, diagnostics, incomplete, &results)
}

/// The repo-wide half of [`load`]: per-file results (in file order) plus the source's
/// diagnostics to a [`Repo`] (duplicates, dependencies, sorting). Shared with
/// [`super::incremental`], which caches the per-file half; results are borrowed, and specs
/// shared, not copied.
pub(crate) fn assemble(
    config: RepoConfig,
    mut diagnostics: Vec<Diagnostic>,
    incomplete: bool,
    results: &[&FileResult],
) -> Repo {
    let mut repo = Repo {
        incomplete: incomplete
            || diagnostics
                .iter()
                .any(|d| d.severity == Severity::Error && d.app.is_none()),
        ..Repo::default()
    };
    // Problems the source met that name an app make that app invalid.
    repo.invalid.extend(
        diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .filter_map(|d| d.app.clone()),
    );

    // Two files for one app (or whose names differ only in case) make that app ambiguous.
    let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, r) in results.iter().enumerate() {
        by_key.entry(r.key.as_str()).or_default().push(i);
    }
    let mut ambiguous: BTreeSet<usize> = BTreeSet::new();
    for indexes in by_key.values().filter(|v| v.len() > 1) {
        for &i in indexes {
            ambiguous.insert(i);
            let others: Vec<String> = indexes
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| results[j].file.display().to_string())
                .collect();
            let same_case = indexes
                .iter()
                .all(|&j| results[j].exact == results[i].exact);
            let what = if same_case {
                "defines the same app as"
            } else {
                "differs only in case from"
            };
            diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: results[i].file.clone(),
                pointer: String::new(),
                line: None,
                column: None,
                message: format!(
                    "duplicate app id {}: this file {what} {}",
                    results[i]
                        .id
                        .as_ref()
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| results[i].exact.clone()),
                    others.join(", ")
                ),
                app: results[i].id.clone(),
            });
        }
    }

    let mut sources: BTreeMap<AppId, &str> = BTreeMap::new();
    for (i, r) in results.iter().enumerate() {
        let has_error = r.diagnostics.iter().any(|d| d.severity == Severity::Error);
        diagnostics.extend(r.diagnostics.iter().cloned());
        match (&r.id, &r.spec) {
            (None, _) => repo.incomplete = true,
            (Some(id), Some(spec)) if !has_error && !ambiguous.contains(&i) => {
                sources.insert(id.clone(), &r.text);
                repo.specs.insert(id.clone(), spec.clone());
            }
            (Some(id), _) => {
                repo.invalid.insert(id.clone());
            }
        }
    }
    for id in &repo.invalid {
        repo.specs.remove(id);
    }

    check_dependencies(&mut repo, &mut diagnostics, &sources);
    check_canaries(&mut repo, &mut diagnostics, &sources);

    diagnostics.sort_by(diagnostic_order);
    repo.diagnostics = diagnostics;
    repo.config = config;
    repo
}

/// The order of [`Repo::diagnostics`] (a stable sort by it): file, line, column, pointer.
pub(crate) fn diagnostic_order(a: &Diagnostic, b: &Diagnostic) -> std::cmp::Ordering {
    (&a.file, a.line, a.column, &a.pointer).cmp(&(&b.file, b.line, b.column, &b.pointer))
}

/// What one file loads to, before the repo-wide checks.
#[derive(Debug, Clone)]
pub(crate) struct FileResult {
    pub(crate) file: PathBuf,
    /// Lowercased path without extension: equal keys mean the same app.
    pub(crate) key: String,
    /// The same, case kept.
    exact: String,
    pub(crate) id: Option<AppId>,
    pub(crate) spec: Option<Arc<Spec>>,
    text: String,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

pub(crate) fn load_file(file: &SourceFile, config: &RepoConfig, keep: Keep) -> FileResult {
    let rel = file
        .path
        .strip_prefix(&config.apps_dir)
        .unwrap_or(&file.path)
        .to_path_buf();
    let exact = rel
        .with_extension("")
        .to_string_lossy()
        .replace(std::path::MAIN_SEPARATOR, "/");
    let mut result = FileResult {
        file: file.path.clone(),
        key: exact.to_lowercase(),
        exact,
        id: None,
        spec: None,
        text: String::new(),
        diagnostics: Vec::new(),
    };
    let id = match AppId::from_path(&rel) {
        Ok(id) => id,
        Err(message) => {
            result.diagnostics.push(diagnostic(
                &file.path,
                None,
                Severity::Error,
                "",
                message,
                None,
            ));
            return result;
        }
    };
    result.id = Some(id.clone());
    let error = |pointer: &str, message: String, text: Option<&str>| {
        diagnostic(
            &file.path,
            Some(&id),
            Severity::Error,
            pointer,
            message,
            text,
        )
    };
    if !config.in_scope(&id) {
        // Still parsed and checked below, so every problem of the file shows at once.
        result.diagnostics.push(error(
            "",
            format!(
                "the app id `{id}` is outside the ids this repo may manage (idPrefixes in {CONFIG_FILE}: {}); move the file under one of them, or add a prefix",
                config.id_prefixes_shown()
            ),
            None,
        ));
    }
    if file.bytes.len() as u64 > config.max_file_bytes {
        result.diagnostics.push(error(
            "",
            format!(
                "the file is {} bytes, over the limit of {} (maxFileBytes in baton.yaml)",
                file.bytes.len(),
                config.max_file_bytes
            ),
            None,
        ));
        return result;
    }
    let text = match std::str::from_utf8(&file.bytes) {
        Ok(t) => t,
        Err(e) => {
            result.diagnostics.push(error("", not_utf8(&e), None));
            return result;
        }
    };
    let format = match file.path.extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        _ => Format::Yaml,
    };
    let doc = match parse::parse(text, format, Limits::default()) {
        Ok(v) => v,
        Err(e) => {
            result
                .diagnostics
                .push(parse_diag(&file.path, Some(&id), e));
            return result;
        }
    };
    let Value::Object(mut doc_map) = doc else {
        result.diagnostics.push(error(
            "",
            "a spec must be a mapping (a Marathon app definition)".into(),
            Some(text),
        ));
        return result;
    };
    // Marathon reads `null` as "absent" and old GET dumps are full of them: accept, but say so.
    let nulls: Vec<String> = doc_map
        .iter()
        .filter(|(_, v)| v.is_null())
        .map(|(k, _)| k.clone())
        .collect();
    let shown_nulls = nulls.len().min(MAX_DIAGNOSTICS_PER_FILE);
    result.diagnostics.extend(more_not_shown(
        &file.path,
        Some(&id),
        nulls.len() - shown_nulls,
        false,
    ));
    if !nulls.is_empty() {
        doc_map.retain(|_, v| !v.is_null()); // one pass: a removal each can shift the mapping
    }
    for k in nulls.into_iter().take(shown_nulls) {
        result.diagnostics.push(diagnostic(
            &file.path,
            Some(&id),
            Severity::Warning,
            &format!("/{}", parse::escape_token(&k)),
            format!("`{k}: null` is treated as absent"),
            Some(text),
        ));
    }
    // Fields Marathon once served and now ignores: a warning each, not an unknown-field error.
    for (field, message) in super::retired::take(&mut doc_map) {
        result.diagnostics.push(diagnostic(
            &file.path,
            Some(&id),
            Severity::Warning,
            &format!("/{field}"),
            message,
            Some(text),
        ));
    }
    // Checked in place (no copy of the document): wrapped for the check, unwrapped after.
    let doc = Value::Object(doc_map);
    let findings = match schema::app() {
        Ok(s) => s.check(&doc),
        Err(e) => vec![Finding {
            severity: Severity::Error,
            pointer: String::new(),
            message: e.to_string(),
        }],
    };
    let Value::Object(mut doc_map) = doc else {
        return result; // it was built from a mapping just above
    };
    result
        .diagnostics
        .extend(findings_to_diags(&file.path, Some(&id), findings, text));
    let undeclared = super::secret_refs::check(&doc_map, &config.defaults);
    result
        .diagnostics
        .extend(findings_to_diags(&file.path, Some(&id), undeclared, text));

    if let Some(given) = doc_map.get("id").and_then(Value::as_str) {
        if id.resolve(given) != id.as_str() {
            result.diagnostics.push(error(
                "/id",
                format!(
                    "`id` is `{given}` but the file path gives `{id}`; remove `id` or make them agree"
                ),
                Some(text),
            ));
        }
    }
    let baton_checked = !result
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error && d.pointer.starts_with("/baton"));
    let raw_baton = doc_map.remove("baton");
    let baton = match &raw_baton {
        // The schema already explained what is wrong in the block; do not say it twice.
        Some(_) if !baton_checked => BatonBlock::default(),
        Some(b) => baton_block(b, config).unwrap_or_else(|(pointer, message)| {
            result
                .diagnostics
                .push(error(&pointer, message, Some(text)));
            BatonBlock::default()
        }),
        None => BatonBlock {
            drift: config.drift.clone(),
            ..BatonBlock::default()
        },
    };
    doc_map.remove("$schema");

    // A rollout's needs are checked on the definition (repo defaults included), so it is built
    // for a rollout app even when only diagnostics are kept.
    let rollout_raw = raw_baton.as_ref().and_then(|b| b.get("rollout"));
    let app = match (keep, &baton.rollout, rollout_raw) {
        (_, Some(rollout), Some(raw)) => {
            let app = definition(config, doc_map, &id);
            for p in crate::rollout::spec::check_app(rollout, raw, &app, id.as_str()) {
                let d = diagnostic(
                    &file.path,
                    Some(&id),
                    p.severity,
                    &p.pointer,
                    p.message,
                    Some(text),
                );
                result.diagnostics.push(d);
            }
            let canary = crate::rollout::canary_id(id.as_str());
            match AppId::parse(&canary) {
                Ok(c) if config.in_scope(&c) => {}
                Ok(_) => result.diagnostics.push(error(
                    crate::rollout::spec::POINTER,
                    format!(
                        "the rollout's canary app `{canary}` is outside the ids this repo may manage (idPrefixes in {CONFIG_FILE}: {}); add a prefix that holds it",
                        config.id_prefixes_shown()
                    ),
                    Some(text),
                )),
                Err(m) => result.diagnostics.push(error(
                    crate::rollout::spec::POINTER,
                    format!("the rollout's canary app id `{canary}` is not valid: {m}"),
                    Some(text),
                )),
            }
            match keep {
                Keep::Definitions => with_deployment_group(app, &id),
                Keep::Diagnostics => Value::Null,
            }
        }
        (Keep::Definitions, _, _) => definition(config, doc_map, &id),
        (Keep::Diagnostics, _, _) => Value::Null,
    };
    result.text = text.to_string();
    result.spec = Some(Arc::new(Spec {
        id,
        file: file.path.clone(),
        app,
        baton,
    }));
    result
}

/// The definition of a checked spec: the repo's defaults, the spec over them, and the `id`.
fn definition(config: &RepoConfig, doc_map: Map<String, Value>, id: &AppId) -> Value {
    // Sized up front: the merged mapping (plus `id`) would otherwise grow by doubling.
    let mut app = Map::with_capacity(config.defaults.len() + doc_map.len() + 1);
    app.extend(config.defaults.clone());
    let mut app = Value::Object(app);
    merge(&mut app, Value::Object(doc_map));
    if let Value::Object(m) = &mut app {
        m.insert("id".into(), Value::String(id.to_string()));
    }
    app
}

/// A rollout app's definition carries marathon-lb's deployment group, named after the app: the
/// canary joins the stable's backend through it. Part of the definition (so plan, diff and
/// digest see it): the first deploy after `rollout:` is added is a plain update that lands it.
fn with_deployment_group(mut app: Value, id: &AppId) -> Value {
    if let Value::Object(m) = &mut app {
        let labels = m
            .entry("labels")
            .or_insert_with(|| Value::Object(Map::new()));
        if !labels.is_object() {
            *labels = Value::Object(Map::new());
        }
        if let Value::Object(l) = labels {
            l.insert(
                crate::rollout::DEPLOYMENT_GROUP.into(),
                Value::String(id.to_string()),
            );
        }
    }
    app
}

/// Deep merge for repo defaults: mappings merge key by key, anything else in `top` replaces.
pub fn merge(base: &mut Value, top: Value) {
    match (base, top) {
        (Value::Object(b), Value::Object(t)) => {
            for (k, v) in t {
                // One lookup per key: every key of every spec comes through here.
                match b.entry(k) {
                    serde_json::map::Entry::Occupied(mut e) => merge(e.get_mut(), v),
                    serde_json::map::Entry::Vacant(e) => {
                        e.insert(v);
                    }
                }
            }
        }
        (b, t) => *b = t,
    }
}

/// The `baton:` block; the schema has checked types and names, this reads values.
fn baton_block(v: &Value, config: &RepoConfig) -> Result<BatonBlock, (String, String)> {
    let mut b = BatonBlock {
        drift: config.drift.clone(),
        ..BatonBlock::default()
    };
    if let Some(list) = v.get("dependsOn").and_then(Value::as_array) {
        for (i, d) in list.iter().enumerate() {
            let s = d.as_str().unwrap_or_default();
            b.depends_on
                .push(AppId::parse(s).map_err(|m| (format!("/baton/dependsOn/{i}"), m))?);
        }
    }
    if let Some(p) = v.get("prune").and_then(Value::as_bool) {
        b.prune = p;
    }
    if let Some(list) = v.get("ignore").and_then(Value::as_array) {
        b.ignore = list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
    }
    if let Some(d) = v.get("deadline").and_then(Value::as_str) {
        b.deadline = parse_duration(d).map_err(|m| ("/baton/deadline".to_string(), m))?;
    }
    if let Some(d) = v.get("drift") {
        b.drift = drift_policy(d).map_err(|m| ("/baton/drift".to_string(), m))?;
    }
    b.secrets = v.get("secrets").cloned();
    if let Some(r) = v.get("rollout") {
        b.rollout = Some(crate::rollout::spec::parse(r)?);
        // An ignored label keeps its live value: the group label Baton adds would never land,
        // and every change would be a plain update in place, silently.
        let group = format!("/labels/{}", crate::rollout::DEPLOYMENT_GROUP);
        if let Some(i) =
            (b.ignore.iter()).position(|p| crate::diff::under_any(&group, std::slice::from_ref(p)))
        {
            return Err((
                format!("/baton/ignore/{i}"),
                format!(
                    "a rollout needs Baton's `{}` label on the running app, and this ignores it (the live value would be kept); ignore single labels instead",
                    crate::rollout::DEPLOYMENT_GROUP
                ),
            ));
        }
    }
    Ok(b)
}

pub(crate) fn drift_policy(v: &Value) -> Result<DriftPolicy, String> {
    match v {
        Value::String(s) if s == "report" => Ok(DriftPolicy::Report),
        Value::String(s) if s == "correct" => Ok(DriftPolicy::Correct),
        Value::Object(m) => match m.get("correctAfter").and_then(Value::as_str) {
            Some(d) => parse_duration(d).map(DriftPolicy::CorrectAfter),
            None => Err("expected `report`, `correct` or `{correctAfter: <duration>}`".into()),
        },
        _ => Err("expected `report`, `correct` or `{correctAfter: <duration>}`".into()),
    }
}

/// Durations as written in specs: `90s`, `10m`, `1h30m`, `500ms`, `2d`. One that does not fit a
/// `Duration` is an error (it panicked, or wrapped around silently: `4294967296s` was `0s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let shown: String = s.chars().take(40).collect();
    let more = if shown.len() < s.len() { "..." } else { "" };
    let bad = || format!("`{shown}{more}` is not a duration like `90s`, `10m` or `1h30m`");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else {
            match rest.chars().next() {
                Some('s') => (Duration::from_secs(1), 1),
                Some('m') => (Duration::from_secs(60), 1),
                Some('h') => (Duration::from_secs(3600), 1),
                Some('d') => (Duration::from_secs(86400), 1),
                _ => return Err(bad()),
            }
        };
        rest = &rest[len..];
        let n = u32::try_from(n).map_err(|_| bad())?;
        total = unit
            .checked_mul(n)
            .and_then(|d| total.checked_add(d))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// Unknown `dependsOn` targets are errors; so are cycles, which make every app on them invalid.
fn check_dependencies(
    repo: &mut Repo,
    diagnostics: &mut Vec<Diagnostic>,
    sources: &BTreeMap<AppId, &str>,
) {
    let mut bad: BTreeSet<AppId> = BTreeSet::new();
    for spec in repo.specs.values() {
        for (i, dep) in spec.baton.depends_on.iter().enumerate() {
            if !repo.specs.contains_key(dep) && !repo.invalid.contains(dep) {
                diagnostics.push(diagnostic(
                    &spec.file,
                    Some(&spec.id),
                    Severity::Error,
                    &format!("/baton/dependsOn/{i}"),
                    format!("`{dep}` is not an app of this repo"),
                    sources.get(&spec.id).copied(),
                ));
                bad.insert(spec.id.clone());
            }
        }
    }
    for cycle in find_cycles(repo) {
        let names: Vec<String> = cycle.iter().map(|i| i.to_string()).collect();
        let shown = format!("{} -> {}", names.join(" -> "), names[0]);
        for id in &cycle {
            if let Some(spec) = repo.specs.get(id) {
                diagnostics.push(diagnostic(
                    &spec.file,
                    Some(id),
                    Severity::Error,
                    "/baton/dependsOn",
                    format!("dependency cycle: {shown}"),
                    sources.get(id).copied(),
                ));
            }
            bad.insert(id.clone());
        }
    }
    for id in bad {
        repo.specs.remove(&id);
        repo.invalid.insert(id);
    }
}

/// A rollout's canary app (`<id>-canary`) is Baton's own, made and removed by the rollout: a
/// spec of that id (valid or not) would fight it, so the rollout app is invalid.
fn check_canaries(
    repo: &mut Repo,
    diagnostics: &mut Vec<Diagnostic>,
    sources: &BTreeMap<AppId, &str>,
) {
    let mut bad = Vec::new();
    for spec in repo.specs.values().filter(|s| s.baton.rollout.is_some()) {
        let Ok(canary) = AppId::parse(&crate::rollout::canary_id(spec.id.as_str())) else {
            continue; // reported when the file was loaded
        };
        if repo.specs.contains_key(&canary) || repo.invalid.contains(&canary) {
            diagnostics.push(diagnostic(
                &spec.file,
                Some(&spec.id),
                Severity::Error,
                crate::rollout::spec::POINTER,
                format!("the rollout's canary app `{canary}` is an app of this repo too; a rollout makes and removes that app itself: rename the other app"),
                sources.get(&spec.id).copied(),
            ));
            bad.push(spec.id.clone());
        }
    }
    for id in bad {
        repo.specs.remove(&id);
        repo.invalid.insert(id);
    }
}

/// Every elementary cycle reachable in the `dependsOn` graph, each once (iterative DFS).
fn find_cycles(repo: &Repo) -> Vec<Vec<AppId>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark: BTreeMap<&AppId, Mark> = repo.specs.keys().map(|k| (k, Mark::New)).collect();
    let mut cycles = Vec::new();
    for start in repo.specs.keys() {
        if mark.get(start) != Some(&Mark::New) {
            continue;
        }
        // (node, next dependency index)
        let mut stack: Vec<(&AppId, usize)> = vec![(start, 0)];
        mark.insert(start, Mark::Active);
        while let Some((node, idx)) = stack.last().copied() {
            let deps = repo
                .specs
                .get(node)
                .map(|s| s.baton.depends_on.as_slice())
                .unwrap_or(&[]);
            if idx < deps.len() {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                let dep = &deps[idx];
                match mark.get(dep) {
                    Some(Mark::New) => {
                        mark.insert(dep, Mark::Active);
                        stack.push((dep, 0));
                    }
                    Some(Mark::Active) => {
                        let from = stack.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                        cycles.push(stack[from..].iter().map(|(n, _)| (*n).clone()).collect());
                    }
                    _ => {}
                }
            } else {
                mark.insert(node, Mark::Done);
                stack.pop();
            }
        }
    }
    cycles
}

/// At most this many findings of one kind in one file become diagnostics; the rest are counted
/// in one more. Each diagnostic is placed by parsing the text again ([`parse::locate`]), so a
/// megabyte of unknown fields (48,000 of them) cost 48,000 parses of a megabyte: many minutes
/// of `validate`, and of every `serve` cycle, for one file. Errors come first, so the cap never
/// hides an error behind warnings.
const MAX_DIAGNOSTICS_PER_FILE: usize = 100;

pub(crate) fn findings_to_diags(
    file: &Path,
    app: Option<&AppId>,
    mut findings: Vec<Finding>,
    text: &str,
) -> Vec<Diagnostic> {
    findings.sort_by_key(|f| f.severity != Severity::Error); // stable: errors first
    let rest = findings.split_off(findings.len().min(MAX_DIAGNOSTICS_PER_FILE));
    let mut out: Vec<Diagnostic> = findings
        .into_iter()
        .map(|f| diagnostic(file, app, f.severity, &f.pointer, f.message, Some(text)))
        .collect();
    out.extend(more_not_shown(
        file,
        app,
        rest.len(),
        rest.iter().any(|f| f.severity == Severity::Error),
    ));
    out
}

/// The one diagnostic that stands for `count` more not shown (none when there are none).
fn more_not_shown(
    file: &Path,
    app: Option<&AppId>,
    count: usize,
    any_error: bool,
) -> Option<Diagnostic> {
    (count > 0).then(|| {
        let severity = if any_error {
            Severity::Error
        } else {
            Severity::Warning
        };
        diagnostic(
            file,
            app,
            severity,
            "",
            format!(
                "{count} more like these not shown (at most {MAX_DIAGNOSTICS_PER_FILE} per file)"
            ),
            None,
        )
    })
}

pub(crate) fn diagnostic(
    file: &Path,
    app: Option<&AppId>,
    severity: Severity,
    pointer: &str,
    message: String,
    text: Option<&str>,
) -> Diagnostic {
    let pos = text.and_then(|t| parse::locate(t, pointer));
    Diagnostic {
        severity,
        file: file.to_path_buf(),
        pointer: pointer.to_string(),
        line: pos.map(|p| p.line),
        column: pos.map(|p| p.column),
        message,
        app: app.cloned(),
    }
}

pub(crate) fn parse_diag(file: &Path, app: Option<&AppId>, e: parse::ParseError) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: file.to_path_buf(),
        pointer: String::new(),
        line: e.line,
        column: e.column,
        message: e.message,
        app: app.cloned(),
    }
}

pub(crate) fn not_utf8(e: &std::str::Utf8Error) -> String {
    format!(
        "the file is not valid UTF-8 (bad byte at offset {})",
        e.valid_up_to()
    )
}

/// A repo from `(path, text)` files, as a plain directory holding them would load (`baton.yaml`
/// is the config; every other file is a spec). For the core's tests, which may not touch files.
#[cfg(test)]
pub(crate) fn from_texts(files: &[(&str, &str)]) -> Repo {
    let config = files
        .iter()
        .find(|(path, _)| *path == "baton.yaml")
        .map(|(path, text)| SourceFile {
            path: PathBuf::from(path),
            bytes: text.as_bytes().to_vec(),
        });
    let (config, diagnostics) = parse_config(config.as_ref());
    let files = files
        .iter()
        .filter(|(path, _)| *path != "baton.yaml")
        .map(|(path, text)| SourceFile {
            path: PathBuf::from(path),
            bytes: text.as_bytes().to_vec(),
        })
        .collect();
    load(Snapshot {
        config,
        files,
        diagnostics,
        incomplete: false,
    })
}
