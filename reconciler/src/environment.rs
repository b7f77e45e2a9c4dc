//! Environments in the shell (docs/environments.md): a repo directory read as one environment
//! sees it (base specs plus its overlay, `baton_core::environment::overlay`), and the Marathon
//! client an environment's settings give.

use std::path::{Path, PathBuf};

use baton_core::environment::{self, overlay, Environment, SecretRef};
use baton_core::spec::load::Keep;
use baton_core::spec::{self, Repo, Severity};
use baton_marathon::marathon::{Auth, MarathonConfig};
use secrecy::SecretString;

/// A repo directory, and the environment to read it as (`None`: the repo has none, or
/// `validate` checks them all).
#[derive(Debug, Clone)]
pub struct RepoDir {
    pub path: PathBuf,
    pub environment: Option<String>,
}

impl From<&Path> for RepoDir {
    fn from(path: &Path) -> Self {
        RepoDir {
            path: path.to_path_buf(),
            environment: None,
        }
    }
}

impl From<&PathBuf> for RepoDir {
    fn from(path: &PathBuf) -> Self {
        path.as_path().into()
    }
}

impl From<PathBuf> for RepoDir {
    fn from(path: PathBuf) -> Self {
        RepoDir {
            path,
            environment: None,
        }
    }
}

/// A repo that cannot be read as the environment asked for.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    #[error("no environment `{name}` in baton.yaml (it declares: {known})")]
    Unknown { name: String, known: String },
    #[error("this repo declares environments ({known}): name one with --environment")]
    Required { known: String },
    #[error("--environment {name}: this repo declares no environments in baton.yaml")]
    NoneDeclared { name: String },
    #[error("environment `{env}`: cannot read {what} {shown}: {reason}")]
    Secret {
        env: String,
        what: &'static str,
        shown: String,
        reason: String,
    },
    #[error("environment `{env}`: bad Marathon settings: {reason}")]
    Marathon { env: String, reason: String },
}

fn known(envs: &std::collections::BTreeMap<String, Environment>) -> String {
    envs.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// Read and load `dir` as its environment sees it. A repo with environments must be read as
/// one of them (its base alone is nobody's target); a repo without, exactly as before.
pub fn read(dir: &RepoDir, keep: Keep) -> Result<Repo, crate::commands::CommandError> {
    spec::schema::warm_up();
    let snapshot = crate::source::read_dir(&dir.path)?;
    let config_broken = snapshot
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error && d.app.is_none() && d.file == Path::new(spec::load::CONFIG_FILE));
    let envs = &snapshot.config.environments;
    let Some(name) = &dir.environment else {
        if envs.is_empty() || config_broken {
            return Ok(spec::load::load_with(snapshot, keep));
        }
        return Err(EnvironmentError::Required { known: known(envs) }.into());
    };
    if config_broken {
        // The config's own errors are the report; the repo is incomplete: nothing is deleted.
        return Ok(spec::load::load_with(snapshot, keep));
    }
    let Some(env) = envs.get(name).cloned() else {
        return Err(if envs.is_empty() {
            EnvironmentError::NoneDeclared { name: name.clone() }
        } else {
            EnvironmentError::Unknown {
                name: name.clone(),
                known: known(envs),
            }
        }
        .into());
    };
    Ok(load_env(&dir.path, snapshot, &env, keep)?)
}

fn load_env(
    root: &Path,
    mut snapshot: spec::load::Snapshot,
    env: &Environment,
    keep: Keep,
) -> Result<Repo, crate::source::SourceError> {
    let (overlays, problems, incomplete) =
        crate::source::dir::read_overlays(root, &snapshot.config, &env.name)?;
    snapshot.diagnostics.extend(problems);
    snapshot.incomplete |= incomplete;
    Ok(overlay::load(snapshot, env, overlays, keep))
}

/// `baton validate` of a repo with environments: every environment loaded and checked on its
/// own, the findings combined (`environment::combine`). A repo without: as before.
pub fn read_all(dir: &Path, keep: Keep) -> Result<Repo, crate::commands::CommandError> {
    spec::schema::warm_up();
    let snapshot = crate::source::read_dir(dir)?;
    let envs: Vec<Environment> = snapshot.config.environments.values().cloned().collect();
    if envs.is_empty() {
        return Ok(spec::load::load_with(snapshot, keep));
    }
    let mut results = Vec::with_capacity(envs.len());
    for env in &envs {
        results.push((env.name.clone(), load_env(dir, snapshot.clone(), env, keep)?));
    }
    Ok(environment::combine(results))
}

/// The Marathon client settings of environment `name` of the repo at `dir`: its URL (unless
/// `url` overrides it), its credentials read from the file or variable it names (unless the
/// client flags gave some), the rest as `base` (the client flags) gives it.
pub fn marathon(
    dir: &Path,
    name: &str,
    url: Option<String>,
    mut base: MarathonConfig,
    env_lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<MarathonConfig, crate::commands::CommandError> {
    let snapshot = crate::source::read_dir(dir)?;
    let envs = &snapshot.config.environments;
    let Some(env) = envs.get(name) else {
        return Err(EnvironmentError::Unknown {
            name: name.into(),
            known: known(envs),
        }
        .into());
    };
    base.url = url.unwrap_or_else(|| env.marathon.clone());
    if base.auth.is_some() {
        return Ok(base); // the client flags' credentials win, as `--marathon` wins over the URL
    }
    let read = |what: &'static str, r: &SecretRef| -> Result<SecretString, EnvironmentError> {
        let fail = |shown: String, reason: String| EnvironmentError::Secret {
            env: name.into(),
            what,
            shown,
            reason,
        };
        match r {
            SecretRef::File(p) => std::fs::read_to_string(p)
                .map(|t| SecretString::from(t.trim_end().to_string()))
                .map_err(|e| fail(format!("file {}", p.display()), e.to_string())),
            SecretRef::Env(v) => env_lookup(v)
                .map(SecretString::from)
                .ok_or_else(|| fail(format!("variable {v}"), "not set".into())),
        }
    };
    if let Some(t) = &env.marathon_token {
        base.auth = Some(Auth::Token(read("the Marathon token from", t)?));
    } else if let (Some(user), Some(p)) = (&env.marathon_user, &env.marathon_password) {
        base.auth = Some(Auth::Basic {
            user: user.clone(),
            password: read("the Marathon password from", p)?,
        });
    }
    Ok(base)
}
