//! `baton diff-env FROM TO` and `baton promote FROM TO`: what two environments' results differ
//! in, field by field, and the overlay change that makes TO run what FROM runs. Pure: the
//! command reads and writes the files.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::diff::FieldChange;
use crate::spec::normalize::normalize;
use crate::spec::parse::{escape_token, split_pointer};
use crate::spec::{AppId, Repo};

/// What `diff-env` reports (`schemas/diff-env.schema.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnvDiff {
    pub from: String,
    pub to: String,
    /// Apps that differ (or that only one environment has), by id.
    pub apps: Vec<AppDiff>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppDiff {
    pub app: AppId,
    pub status: AppStatus,
    /// Field by field, FROM's value and TO's (absent: that side has no such field).
    pub fields: Vec<FieldDiff>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum AppStatus {
    Changed,
    /// FROM has the app, TO does not (left out, or never added).
    OnlyInFrom,
    OnlyInTo,
    /// One side's spec does not validate: nothing is compared (see `baton validate`).
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDiff {
    pub pointer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
}

/// Compare the loaded results of two environments (all apps, or only `only`). Definitions are
/// compared in their normal form (what a plan compares), so defaults written out on one side
/// only are no difference; secret-looking env values are redacted as in plans.
pub fn diff_env(from: (&str, &Repo), to: (&str, &Repo), only: &[AppId]) -> EnvDiff {
    let (from_name, from_repo) = from;
    let (to_name, to_repo) = to;
    let ids: BTreeSet<&AppId> = if only.is_empty() {
        from_repo
            .specs
            .keys()
            .chain(to_repo.specs.keys())
            .chain(from_repo.invalid.iter())
            .chain(to_repo.invalid.iter())
            .collect()
    } else {
        only.iter().collect()
    };
    let mut apps = Vec::new();
    for id in ids {
        let (a, b) = (from_repo.specs.get(id), to_repo.specs.get(id));
        let invalid = from_repo.invalid.contains(id) || to_repo.invalid.contains(id);
        let (status, fields) = match (a, b) {
            _ if invalid => (AppStatus::Invalid, Vec::new()),
            (Some(a), Some(b)) => {
                let changes = crate::diff::diff(&normalize(&a.app), &normalize(&b.app));
                if changes.is_empty() {
                    continue;
                }
                (AppStatus::Changed, fields_of(changes))
            }
            (Some(_), None) => (AppStatus::OnlyInFrom, Vec::new()),
            (None, Some(_)) => (AppStatus::OnlyInTo, Vec::new()),
            (None, None) => continue,
        };
        apps.push(AppDiff {
            app: id.clone(),
            status,
            fields,
        });
    }
    EnvDiff {
        from: from_name.to_string(),
        to: to_name.to_string(),
        apps,
    }
}

fn fields_of(changes: Vec<FieldChange>) -> Vec<FieldDiff> {
    crate::drift::redact(changes)
        .into_iter()
        .map(|c| FieldDiff {
            pointer: c.pointer,
            from: c.desired,
            to: c.live,
        })
        .collect()
}

/// Why a promotion cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromoteError {
    #[error("environment `{env}` has no valid spec of `{app}` (see `baton validate`)")]
    NoSpec { env: String, app: AppId },
    #[error("`{0}` is not a JSON pointer (like `/container/docker/image`)")]
    BadPointer(String),
    #[error("the overlay file {file} is not a mapping; fix it by hand first")]
    BadOverlay { file: String },
}

/// The merge patch that makes `to_app` carry `from_app`'s values at `fields` (every differing
/// field when empty), merged into the environment's existing overlay document (`None`: none
/// yet). A pointer into a list promotes the whole list (merge patch replaces lists whole); a
/// field FROM lacks becomes `null` (deleted). Returns the new overlay document and the
/// pointers promoted (empty: nothing differs there).
pub fn promote_patch(
    from_app: &Value,
    to_app: &Value,
    fields: &[String],
    overlay: Option<Value>,
) -> Result<(Value, Vec<String>), PromoteError> {
    let wanted: Vec<String> = if fields.is_empty() {
        crate::diff::diff(&normalize(from_app), &normalize(to_app))
            .into_iter()
            .map(|c| c.pointer)
            .collect()
    } else {
        for f in fields {
            if !(f.starts_with('/')) {
                return Err(PromoteError::BadPointer(f.clone()));
            }
        }
        fields.to_vec()
    };
    let mut doc = overlay.unwrap_or_else(|| Value::Object(Map::new()));
    if !doc.is_object() {
        return Err(PromoteError::BadOverlay {
            file: String::new(),
        });
    }
    let mut done: BTreeMap<String, ()> = BTreeMap::new();
    for pointer in wanted {
        let tokens = mergeable_prefix(from_app, to_app, &split_pointer(&pointer));
        if tokens.is_empty() {
            continue; // `id` and the document itself are never promoted
        }
        let at: String = tokens
            .iter()
            .map(|t| format!("/{}", escape_token(t)))
            .collect();
        let (a, b) = (from_app.pointer(&at), to_app.pointer(&at));
        if a == b || done.contains_key(&at) {
            continue;
        }
        set(&mut doc, &tokens, a.cloned().unwrap_or(Value::Null));
        done.insert(at, ());
    }
    Ok((doc, done.into_keys().collect()))
}

/// The longest prefix of `tokens` that merge patch can address: up to (and including) the first
/// list on either side, which is replaced whole.
fn mergeable_prefix(a: &Value, b: &Value, tokens: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let (mut x, mut y) = (Some(a), Some(b));
    for t in tokens {
        if out.is_empty() && t == "id" {
            return Vec::new();
        }
        out.push(t.clone());
        x = x.and_then(|v| v.get(t.as_str()));
        y = y.and_then(|v| v.get(t.as_str()));
        let listy = |v: Option<&Value>| v.is_some_and(|v| !v.is_object());
        if listy(x) || listy(y) {
            break;
        }
    }
    out
}

fn set(doc: &mut Value, tokens: &[String], value: Value) {
    let mut at = doc;
    for (i, t) in tokens.iter().enumerate() {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let Value::Object(m) = at else { return };
        if i + 1 == tokens.len() {
            m.insert(t.clone(), value);
            return;
        }
        at = m
            .entry(t.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// A document as YAML text (for overlay files written by `promote`).
pub fn to_yaml(doc: &Value) -> String {
    use yaml_rust2::{Yaml, YamlEmitter};
    fn conv(v: &Value) -> Yaml {
        match v {
            Value::Null => Yaml::Null,
            Value::Bool(b) => Yaml::Boolean(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Yaml::Integer(i),
                None => Yaml::Real(n.to_string()),
            },
            Value::String(s) => Yaml::String(s.clone()),
            Value::Array(a) => Yaml::Array(a.iter().map(conv).collect()),
            Value::Object(m) => Yaml::Hash(
                m.iter()
                    .map(|(k, v)| (Yaml::String(k.clone()), conv(v)))
                    .collect(),
            ),
        }
    }
    let mut out = String::new();
    let mut emitter = YamlEmitter::new(&mut out);
    if emitter.dump(&conv(doc)).is_err() {
        return serde_json::to_string_pretty(doc).unwrap_or_default();
    }
    // The emitter starts with a document marker; the files in a repo do not.
    let body = out.strip_prefix("---\n").unwrap_or(&out);
    format!("{body}\n")
}
