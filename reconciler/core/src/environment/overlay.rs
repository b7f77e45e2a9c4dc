//! An environment's overlay: `environments/<name>/` mirrors the repo root, and a spec file there
//! patches the base file at the same path (the same app) with JSON merge patch (RFC 7386):
//! mappings merge key by key, `null` deletes a key, anything else (a list, a string, a number)
//! replaces the base value whole. `env` and `labels` are mappings, so they merge; lists such as
//! `constraints`, `healthChecks`, `portDefinitions`, `dependsOn` are replaced whole.
//! A file with no base adds an app of that environment; a file holding `baton: {exclude: true}`
//! leaves the base app out of it. Pure.
//!
//! The merged document is handed to the ordinary loader (so an environment's result is
//! validated exactly like a base spec), and [`attribute`] then names in each diagnostic the
//! file and line that produced the value: the overlay's where the overlay set it, the base
//! file's elsewhere, and the other file in the message.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{config_for, Environment};
use crate::spec::load::{self, Keep, Snapshot, SourceFile};
use crate::spec::parse::{self, Format, Limits};
use crate::spec::{AppId, Repo, Severity};

/// RFC 7386 JSON merge patch of `target` by `patch`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Where the files of an environment's result came from, for [`attribute`].
#[derive(Debug, Default)]
pub struct Provenance {
    environment: String,
    /// By the path the loaded file was given.
    by_path: HashMap<PathBuf, Origin>,
}

#[derive(Debug)]
struct Origin {
    /// The base file and its text (`None`: an app only this environment has).
    base: Option<(PathBuf, String)>,
    overlay: PathBuf,
    overlay_text: String,
    overlay_doc: Value,
}

/// The folder under which `env`'s overlay specs live (`environments/<name>/<appsDir>`).
pub fn apps_dir(env: &str, apps_dir: &Path) -> PathBuf {
    Path::new(super::DIR).join(env).join(apps_dir)
}

/// The lowercased path without extension: the key [`load`] ties a file to its app with.
fn key_of(rel: &Path) -> String {
    rel.with_extension("")
        .to_string_lossy()
        .replace(std::path::MAIN_SEPARATOR, "/")
        .to_lowercase()
}

/// `base` (the repo as read: config, base spec files, the source's problems) as environment
/// `env` sees it, with `overlays` (the files under [`apps_dir`], paths relative to the repo
/// root) applied. The snapshot's config becomes the environment's ([`config_for`]).
pub fn apply(
    base: Snapshot,
    env: &Environment,
    overlays: Vec<SourceFile>,
) -> (Snapshot, Provenance) {
    let Snapshot {
        config,
        files,
        mut diagnostics,
        incomplete,
    } = base;
    let config = config_for(&config, env);
    let overlay_root = apps_dir(&env.name, &config.apps_dir);
    let mut prov = Provenance {
        environment: env.name.clone(),
        by_path: HashMap::new(),
    };
    let mut by_key: HashMap<String, usize> = HashMap::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let rel = f.path.strip_prefix(&config.apps_dir).unwrap_or(&f.path);
        by_key.insert(key_of(rel), i);
    }
    let mut files: Vec<Option<SourceFile>> = files.into_iter().map(Some).collect();
    let mut added = Vec::new();
    for o in overlays {
        let Ok(rel) = o.path.strip_prefix(&overlay_root).map(Path::to_path_buf) else {
            continue; // not a spec of this environment (the source reads only these)
        };
        let app = AppId::from_path(&rel).ok();
        let problem = |severity, pointer: &str, message: String, text: Option<&str>| {
            load::diagnostic(&o.path, app.as_ref(), severity, pointer, message, text)
        };
        let base_index = by_key.get(&key_of(&rel)).copied();
        if o.bytes.len() as u64 > config.max_file_bytes {
            diagnostics.push(problem(
                Severity::Error,
                "",
                format!(
                    "the file is {} bytes, over the limit of {} (maxFileBytes in baton.yaml)",
                    o.bytes.len(),
                    config.max_file_bytes
                ),
                None,
            ));
            continue;
        }
        let text = match std::str::from_utf8(&o.bytes) {
            Ok(t) => t.to_string(),
            Err(e) => {
                diagnostics.push(problem(Severity::Error, "", load::not_utf8(&e), None));
                continue;
            }
        };
        let format = format_of(&o.path);
        let doc = match parse::parse(&text, format, Limits::default()) {
            Ok(Value::Object(m)) => Value::Object(m),
            Ok(_) => {
                diagnostics.push(problem(
                    Severity::Error,
                    "",
                    "an overlay must be a mapping (a partial Marathon app definition)".into(),
                    Some(&text),
                ));
                continue;
            }
            Err(e) => {
                diagnostics.push(load::parse_diag(&o.path, app.as_ref(), e));
                continue;
            }
        };
        if doc.pointer("/baton/exclude").is_some() {
            match doc.pointer("/baton/exclude") {
                Some(Value::Bool(true)) => {}
                Some(Value::Bool(false)) => {}
                _ => {
                    diagnostics.push(problem(
                        Severity::Error,
                        "/baton/exclude",
                        "`exclude` is `true` (leave the base app out of this environment) or `false`".into(),
                        Some(&text),
                    ));
                    continue;
                }
            }
        }
        if doc.pointer("/baton/exclude") == Some(&Value::Bool(true)) {
            let others = doc.as_object().map_or(0, |m| m.len())
                + doc
                    .pointer("/baton")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
                - 2;
            if others > 0 {
                diagnostics.push(problem(
                    Severity::Warning,
                    "",
                    "the app is left out of this environment; the file's other fields are ignored"
                        .into(),
                    Some(&text),
                ));
            }
            match base_index {
                Some(i) => files[i] = None,
                None => diagnostics.push(problem(
                    Severity::Warning,
                    "/baton/exclude",
                    "no base spec at this path: nothing to leave out".into(),
                    Some(&text),
                )),
            }
            continue;
        }
        let mut doc = doc;
        strip_exclude(&mut doc);
        match base_index.and_then(|i| files[i].as_ref().map(|f| (i, f))) {
            None => {
                // An app of this environment only: loaded as it is, named by its overlay path.
                let path = config.apps_dir.join(&rel);
                prov.by_path.insert(
                    path.clone(),
                    Origin {
                        base: None,
                        overlay: o.path.clone(),
                        overlay_text: text,
                        overlay_doc: doc,
                    },
                );
                added.push(SourceFile {
                    path,
                    bytes: o.bytes,
                });
            }
            Some((i, base_file)) => {
                let Ok(base_text) = std::str::from_utf8(&base_file.bytes) else {
                    continue; // the loader reports the base file's own problem
                };
                let Ok(mut merged) =
                    parse::parse(base_text, format_of(&base_file.path), Limits::default())
                else {
                    continue; // likewise
                };
                if !merged.is_object() {
                    continue;
                }
                merge_patch(&mut merged, &doc);
                // The merged document is loaded as JSON (valid YAML too) under the base path's
                // stem; `attribute` gives diagnostics back to the files they came from.
                let path = base_file.path.with_extension("json");
                let bytes = serde_json::to_vec_pretty(&merged).unwrap_or_default();
                prov.by_path.insert(
                    path.clone(),
                    Origin {
                        base: Some((base_file.path.clone(), base_text.to_string())),
                        overlay: o.path.clone(),
                        overlay_text: text,
                        overlay_doc: doc,
                    },
                );
                files[i] = Some(SourceFile { path, bytes });
            }
        }
    }
    let mut files: Vec<SourceFile> = files.into_iter().flatten().collect();
    files.extend(added);
    (
        Snapshot {
            config,
            files,
            diagnostics,
            incomplete,
        },
        prov,
    )
}

/// `baton.exclude: false` is a no-op the spec schema does not know: taken out.
fn strip_exclude(doc: &mut Value) {
    let Some(Value::Object(b)) = doc.get_mut("baton") else {
        return;
    };
    b.remove("exclude");
    if b.is_empty() {
        if let Value::Object(m) = doc {
            m.remove("baton");
        }
    }
}

fn format_of(path: &Path) -> Format {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        _ => Format::Yaml,
    }
}

/// Whether the overlay document set the value at `pointer` (or replaced an ancestor of it
/// whole). The empty pointer (the whole document) is the base file's.
fn set_by_overlay(doc: &Value, pointer: &str) -> bool {
    if pointer.is_empty() {
        return false;
    }
    let mut at = doc;
    for token in parse::split_pointer(pointer) {
        match at {
            Value::Object(m) => match m.get(&token) {
                Some(v) => at = v,
                None => return false,
            },
            _ => return true, // a list or scalar the overlay gave replaced the base's whole
        }
    }
    true
}

/// Give each diagnostic of an environment's files back to the file and line that produced the
/// value, naming the other file in the message; specs name their base file (or, for an app
/// only the environment has, its overlay file).
pub fn attribute(repo: &mut Repo, prov: &Provenance) {
    if prov.by_path.is_empty() {
        return;
    }
    for d in &mut repo.diagnostics {
        let Some(origin) = prov.by_path.get(&d.file) else {
            continue;
        };
        let (file, text, other) = match &origin.base {
            None => (&origin.overlay, &origin.overlay_text, None),
            Some((base, base_text)) => {
                if set_by_overlay(&origin.overlay_doc, &d.pointer) {
                    (&origin.overlay, &origin.overlay_text, Some(("base", base)))
                } else {
                    (base, base_text, Some(("overlay", &origin.overlay)))
                }
            }
        };
        let pos = (!d.pointer.is_empty() || d.line.is_some())
            .then(|| parse::locate(text, &d.pointer))
            .flatten();
        d.file = file.clone();
        d.line = pos.map(|p| p.line);
        d.column = pos.map(|p| p.column);
        match other {
            Some((what, path)) => {
                d.message = format!(
                    "{} (environment `{}`, {what} {})",
                    d.message,
                    prov.environment,
                    path.display()
                )
            }
            None => d.message = format!("{} (environment `{}`)", d.message, prov.environment),
        }
    }
    repo.diagnostics.sort_by(load::diagnostic_order);
    for spec in repo.specs.values_mut() {
        if let Some(origin) = prov.by_path.get(&spec.file) {
            let file = match &origin.base {
                Some((base, _)) => base.clone(),
                None => origin.overlay.clone(),
            };
            Arc::make_mut(spec).file = file;
        }
    }
}

/// Load environment `env` of a repo: the overlay applied, the result loaded and checked like
/// any repo, diagnostics attributed.
pub fn load(base: Snapshot, env: &Environment, overlays: Vec<SourceFile>, keep: Keep) -> Repo {
    let (snapshot, prov) = apply(base, env, overlays);
    let mut repo = load::load_with(snapshot, keep);
    attribute(&mut repo, &prov);
    repo
}
