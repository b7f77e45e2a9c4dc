//! Environments (realms): one repo synced onto several Marathons (docs/environments.md). Pure.
//!
//! - this module: the `environments:` block of `baton.yaml` ([`Environment`]) and the repo config
//!   an environment loads under ([`config_for`]);
//! - [`overlay`]: `environments/<name>/` patches the base specs (JSON merge patch), adds apps,
//!   leaves apps out; diagnostics named after the file that produced a value;
//! - [`compare`]: `diff-env` (field by field) and `promote` (the overlay change that makes one
//!   environment run what another runs).

pub mod compare;
pub mod overlay;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::spec::load::{PruneBudget, RepoConfig};
use crate::spec::{Diagnostic, DriftPolicy, Repo, Severity};

/// The folder holding every environment's overlay: `environments/<name>/` mirrors the repo root.
pub const DIR: &str = "environments";

/// How an environment's Marathon credentials are given: always by reference (a file on the host
/// running Baton, or an environment variable of its process), never inline in the repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    File(PathBuf),
    Env(String),
}

/// One entry of `environments:` in `baton.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: String,
    /// Base URL of its Marathon (credentials removed when read: see `userinfo`).
    pub marathon: String,
    pub marathon_user: Option<String>,
    pub marathon_password: Option<SecretRef>,
    pub marathon_token: Option<SecretRef>,
    /// Its own owner (`None`: `<repo owner>.<name>`).
    pub owner: Option<String>,
    pub vault_addr: Option<String>,
    pub prune: Option<PruneBudget>,
    /// Merged over the repo's `defaults` (JSON merge patch).
    pub defaults: Option<Map<String, Value>>,
    pub drift: Option<DriftPolicy>,
}

impl Environment {
    /// The folder of this environment's overlay, relative to the repo root.
    pub fn dir(&self) -> PathBuf {
        Path::new(DIR).join(&self.name)
    }
}

/// The owner an environment's apps are labelled with: its own `owner`, else the repo's owner
/// with the environment's name appended, so that two environments of one repo sharing one
/// Marathon never see each other's apps as their own (and never prune them).
pub fn owner_of(repo_owner: &str, env: &Environment) -> String {
    env.owner
        .clone()
        .unwrap_or_else(|| format!("{repo_owner}.{}", env.name))
}

/// The repo config `env`'s specs load under: its owner, delete budget, drift policy, and the
/// repo's defaults with its own merged over them. Everything else (apps dir, `idPrefixes`, the
/// file size limit) stays the repo's: an environment cannot widen what the repo may manage.
pub fn config_for(base: &RepoConfig, env: &Environment) -> RepoConfig {
    let mut config = base.clone();
    config.environments = BTreeMap::new();
    config.environment = Some(env.name.clone());
    config.owner = owner_of(&base.owner, env);
    // The derived owner is as explicit as the repo's: it names this repo and this environment.
    config.owner_explicit = base.owner_explicit || env.owner.is_some();
    if let Some(p) = &env.prune {
        config.prune = p.clone();
    }
    if let Some(d) = &env.drift {
        config.drift = d.clone();
    }
    if let Some(d) = &env.defaults {
        let mut merged = Value::Object(std::mem::take(&mut config.defaults));
        overlay::merge_patch(&mut merged, &Value::Object(d.clone()));
        if let Value::Object(m) = merged {
            config.defaults = m;
        }
    }
    config
}

/// Keys that would hold a secret inline: refused with a message naming the reference to use.
const INLINE_SECRETS: &[(&str, &str)] = &[
    (
        "marathonPassword",
        "marathonPasswordFile` or `marathonPasswordEnv",
    ),
    ("password", "marathonPasswordFile` or `marathonPasswordEnv"),
    ("marathonToken", "marathonTokenFile` or `marathonTokenEnv"),
    ("token", "marathonTokenFile` or `marathonTokenEnv"),
];

/// Read `environments:` (already checked against the schema). `diag(pointer, message)` makes
/// an error diagnostic placed in `baton.yaml`. Pure.
pub fn parse(
    doc: &Value,
    diag: &dyn Fn(&str, String) -> Diagnostic,
    drift_policy: &dyn Fn(&Value) -> Result<DriftPolicy, String>,
) -> (BTreeMap<String, Environment>, Vec<Diagnostic>) {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    let Some(envs) = doc.get("environments").and_then(Value::as_object) else {
        return (out, problems);
    };
    for (name, e) in envs {
        let at = |key: &str| {
            format!(
                "/environments/{}/{key}",
                crate::spec::parse::escape_token(name)
            )
        };
        let before = problems.len();
        for (key, instead) in INLINE_SECRETS {
            if e.get(*key).is_some() {
                problems.push(diag(
                    &at(key),
                    format!("an inline secret is refused (the repo is no place for it): give `{instead}` instead"),
                ));
            }
        }
        let text = |key: &str| e.get(key).and_then(Value::as_str).map(str::to_string);
        let secret = |file: &str, env: &str| match (text(file), text(env)) {
            (Some(f), _) => Some(SecretRef::File(PathBuf::from(f))),
            (None, Some(v)) => Some(SecretRef::Env(v)),
            (None, None) => None,
        };
        for (file, env) in [
            ("marathonPasswordFile", "marathonPasswordEnv"),
            ("marathonTokenFile", "marathonTokenEnv"),
        ] {
            if e.get(file).is_some() && e.get(env).is_some() {
                problems.push(diag(
                    &at(env),
                    format!("give `{file}` or `{env}`, not both"),
                ));
            }
        }
        let marathon = text("marathon").unwrap_or_default();
        let shown = crate::userinfo::redact_url(&marathon);
        if shown != marathon {
            problems.push(diag(
                &at("marathon"),
                "credentials in the URL are refused: give `marathonUser` and `marathonPasswordFile` (or `marathonPasswordEnv`)".into(),
            ));
        }
        let drift = match e.get("drift") {
            Some(d) => match drift_policy(d) {
                Ok(p) => Some(p),
                Err(m) => {
                    problems.push(diag(&at("drift"), m));
                    None
                }
            },
            None => None,
        };
        let prune = e.get("prune").map(|p| PruneBudget {
            max_deletes: p
                .get("maxDeletes")
                .and_then(Value::as_u64)
                .map_or(5, |n| n as usize),
            max_percent: p
                .get("maxDeletesPercent")
                .and_then(Value::as_f64)
                .unwrap_or(10.0),
        });
        if problems.len() > before {
            continue;
        }
        out.insert(
            name.clone(),
            Environment {
                name: name.clone(),
                marathon: shown,
                marathon_user: text("marathonUser"),
                marathon_password: secret("marathonPasswordFile", "marathonPasswordEnv"),
                marathon_token: secret("marathonTokenFile", "marathonTokenEnv"),
                owner: text("owner"),
                vault_addr: text("vaultAddr"),
                prune,
                defaults: e.get("defaults").and_then(Value::as_object).cloned(),
                drift,
            },
        );
    }
    // Two environments on one Marathon under one owner would prune each other's apps.
    let mut seen: BTreeMap<(String, String), &str> = BTreeMap::new();
    for env in out.values() {
        let key = (
            env.marathon.trim_end_matches('/').to_string(),
            env.owner
                .clone()
                .unwrap_or_else(|| format!(".{}", env.name)),
        );
        if let Some(other) = seen.insert(key, &env.name) {
            problems.push(diag(
                &format!("/environments/{}/owner", env.name),
                format!(
                    "environments `{other}` and `{}` sync to the same Marathon under the same owner: each would see the other's apps as its own and prune them; give one of them another `owner`",
                    env.name
                ),
            ));
        }
    }
    if problems.iter().any(|d| d.severity == Severity::Error) {
        out.clear();
    }
    (out, problems)
}

/// What `baton validate` reports for a repo with environments: each environment's result
/// (loaded and checked on its own) combined. A finding every environment has is shown once, as
/// it is; one only some environments have names them. Apps: every environment's; invalid: an
/// app invalid in any environment.
pub fn combine(results: Vec<(String, Repo)>) -> Repo {
    let total = results.len();
    let mut out = Repo::default();
    let mut seen: Vec<(Diagnostic, Vec<String>)> = Vec::new();
    type Key = (
        PathBuf,
        String,
        Option<usize>,
        Option<usize>,
        String,
        Severity,
    );
    let key = |d: &Diagnostic| -> Key {
        let at = (d.file.clone(), d.pointer.clone(), d.line, d.column);
        (at.0, at.1, at.2, at.3, d.message.clone(), d.severity)
    };
    let mut index: BTreeMap<Key, usize> = BTreeMap::new();
    for (name, repo) in results {
        out.incomplete |= repo.incomplete;
        out.invalid.extend(repo.invalid);
        for (id, spec) in repo.specs {
            out.specs.entry(id).or_insert(spec);
        }
        for d in repo.diagnostics {
            match index.get(&key(&d)) {
                Some(&i) => seen[i].1.push(name.clone()),
                None => {
                    index.insert(key(&d), seen.len());
                    seen.push((d, vec![name.clone()]));
                }
            }
        }
        if out.config.environments.is_empty() {
            out.config = repo.config;
        }
    }
    for id in &out.invalid {
        out.specs.remove(id);
    }
    out.diagnostics = seen
        .into_iter()
        .map(|(mut d, names)| {
            let named = names
                .iter()
                .any(|n| d.message.contains(&format!("environment `{n}`")));
            if names.len() < total && !named {
                let shown: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
                d.message = format!("{} (environment {})", d.message, shown.join(", "));
            }
            d
        })
        .collect();
    out.diagnostics.sort_by(crate::spec::load::diagnostic_order);
    out
}

#[cfg(test)]
mod tests;
