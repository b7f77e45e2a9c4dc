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
    #[error("`{app}` is not an app id: {reason}")]
    BadApp { app: String, reason: String },
    #[error("cannot promote: {reason}")]
    Promote { reason: String },
}

fn known(envs: &std::collections::BTreeMap<String, Environment>) -> String {
    envs.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// Read and load `dir` as its environment sees it. A repo with environments must be read as
/// one of them (its base alone is nobody's target); a repo without, exactly as before.
pub fn read(dir: &RepoDir, keep: Keep) -> Result<Repo, crate::commands::CommandError> {
    spec::schema::warm_up();
    let snapshot = crate::source::read_dir(&dir.path)?;
    let config_broken = snapshot.diagnostics.iter().any(|d| {
        d.severity == Severity::Error
            && d.app.is_none()
            && d.file == Path::new(spec::load::CONFIG_FILE)
    });
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
/// Environment `name` of the repo in `dir`, with the definitions kept (to compare them).
fn definitions_of(dir: &Path, name: &str) -> Result<Repo, crate::commands::CommandError> {
    read(
        &RepoDir {
            path: dir.to_path_buf(),
            environment: Some(name.to_string()),
        },
        Keep::Definitions,
    )
}

pub fn read_all(dir: &Path, keep: Keep) -> Result<Repo, crate::commands::CommandError> {
    spec::schema::warm_up();
    let snapshot = crate::source::read_dir(dir)?;
    let envs: Vec<Environment> = snapshot.config.environments.values().cloned().collect();
    if envs.is_empty() {
        return Ok(spec::load::load_with(snapshot, keep));
    }
    let mut results = Vec::with_capacity(envs.len());
    for env in &envs {
        results.push((
            env.name.clone(),
            load_env(dir, snapshot.clone(), env, keep)?,
        ));
    }
    Ok(environment::combine(results))
}

/// Environment `name` as `baton.yaml` of the repo at `dir` declares it (only that file is
/// read): the one place commands find an environment's settings, its Marathon
/// ([`marathon_for`]) and its Vault address (`config::plan_secrets`, `config::resolve`).
pub fn settings(dir: &Path, name: &str) -> Result<Environment, crate::commands::CommandError> {
    let (config, problems) = crate::source::dir::read_config(dir)?;
    let envs = &config.environments;
    match envs.get(name) {
        Some(env) => Ok(env.clone()),
        None if envs.is_empty() && problems.iter().all(|d| d.severity != Severity::Error) => {
            Err(EnvironmentError::NoneDeclared { name: name.into() }.into())
        }
        None => Err(EnvironmentError::Unknown {
            name: name.into(),
            known: known(envs),
        }
        .into()),
    }
}

/// The Marathon client settings of environment `name` of the repo at `dir`: its URL (unless
/// `url` overrides it), its credentials read from the file or variable it names (unless the
/// client flags gave some), the rest as `base` (the client flags) gives it.
pub fn marathon(
    dir: &Path,
    name: &str,
    url: Option<String>,
    base: MarathonConfig,
    env_lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<MarathonConfig, crate::commands::CommandError> {
    Ok(marathon_for(&settings(dir, name)?, url, base, env_lookup)?)
}

/// [`marathon`] of an environment already read.
pub fn marathon_for(
    env: &Environment,
    url: Option<String>,
    mut base: MarathonConfig,
    env_lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<MarathonConfig, EnvironmentError> {
    let name = env.name.as_str();
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

/// `baton diff-env FROM TO [APP...]`: what promoting FROM to TO would change, field by field
/// (`schemas/diff-env.schema.json`). Exit 0 no difference, 2 differences, 1 an environment
/// does not validate (its invalid apps are listed, not compared).
pub fn diff_env(
    dir: &Path,
    from: &str,
    to: &str,
    apps: &[String],
    format: crate::commands::Format,
    out: &mut dyn std::io::Write,
) -> Result<u8, crate::commands::CommandError> {
    use crate::commands::{exit, Format};
    let only = app_ids(apps)?;
    let (a, b) = (definitions_of(dir, from)?, definitions_of(dir, to)?);
    let diff = environment::compare::diff_env((from, &a), (to, &b), &only);
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &diff).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Format::Text => write!(out, "{}", diff_text(&diff))?,
    }
    Ok(if !a.is_valid() || !b.is_valid() {
        exit::ERROR
    } else if diff.apps.is_empty() {
        exit::OK
    } else {
        exit::CHANGES
    })
}

fn app_ids(apps: &[String]) -> Result<Vec<spec::AppId>, EnvironmentError> {
    apps.iter()
        .map(|a| {
            spec::AppId::parse(a).map_err(|reason| EnvironmentError::BadApp {
                app: a.clone(),
                reason,
            })
        })
        .collect()
}

fn shown(v: &Option<serde_json::Value>) -> String {
    match v {
        None => "(absent)".into(),
        Some(v) => v.to_string(),
    }
}

/// `diff-env` as text: an app per paragraph, a field per line with both values.
pub fn diff_text(diff: &environment::compare::EnvDiff) -> String {
    use environment::compare::AppStatus;
    use std::fmt::Write as _;
    let mut s = String::new();
    if diff.apps.is_empty() {
        let _ = writeln!(s, "{} and {} run the same definitions", diff.from, diff.to);
        return s;
    }
    for app in &diff.apps {
        match app.status {
            AppStatus::Changed => {
                let _ = writeln!(s, "{}", app.app);
                for f in &app.fields {
                    let _ = writeln!(
                        s,
                        "  {}: {} = {}, {} = {}",
                        f.pointer,
                        diff.from,
                        shown(&f.from),
                        diff.to,
                        shown(&f.to)
                    );
                }
            }
            AppStatus::OnlyInFrom => {
                let _ = writeln!(s, "{}: only in {}", app.app, diff.from);
            }
            AppStatus::OnlyInTo => {
                let _ = writeln!(s, "{}: only in {}", app.app, diff.to);
            }
            AppStatus::Invalid => {
                let _ = writeln!(
                    s,
                    "{}: invalid in one of them (see `baton validate`)",
                    app.app
                );
            }
        }
    }
    let fields: usize = diff.apps.iter().map(|a| a.fields.len()).sum();
    let _ = writeln!(
        s,
        "{} app(s) differ, {fields} field(s), {} -> {}",
        diff.apps.len(),
        diff.from,
        diff.to
    );
    s
}

/// What `baton promote` wrote.
#[derive(Debug)]
pub struct Promoted {
    /// Overlay files written, relative to the repo root, with the pointers each took.
    pub files: Vec<(PathBuf, Vec<String>)>,
}

/// One overlay file `promote` writes: path, its bytes before (`None`: new), text, pointers.
type Write = (PathBuf, Option<Vec<u8>>, String, Vec<String>);

/// `baton promote FROM TO APP... [--fields ...]`: writes into TO's overlay the values FROM has
/// at `fields` (every differing field when empty) for each app, in the working tree; no
/// cluster is touched. TO must still validate afterwards, else every file is put back.
pub fn promote(
    dir: &Path,
    from: &str,
    to: &str,
    apps: &[String],
    fields: &[String],
) -> Result<Promoted, crate::commands::CommandError> {
    let ids = app_ids(apps)?;
    let (a, b) = (definitions_of(dir, from)?, definitions_of(dir, to)?);
    let overlay_root = overlay::apps_dir(to, &b.config.apps_dir);
    let mut writes: Vec<Write> = Vec::new();
    for id in &ids {
        let missing = |env: &str| EnvironmentError::Promote {
            reason: environment::compare::PromoteError::NoSpec {
                env: env.into(),
                app: id.clone(),
            }
            .to_string(),
        };
        let from_spec = a.specs.get(id).ok_or_else(|| missing(from))?;
        let to_spec = b.specs.get(id).ok_or_else(|| missing(to))?;
        // TO's overlay of the app: the file it came from if it is an overlay file, else one at
        // the base file's path (any of the spec extensions, YAML when there is none yet).
        let target = if to_spec.file.starts_with(&overlay_root) {
            to_spec.file.clone()
        } else {
            let rel = to_spec
                .file
                .strip_prefix(&b.config.apps_dir)
                .unwrap_or(&to_spec.file)
                .with_extension("");
            ["yaml", "yml", "json"]
                .iter()
                .map(|x| overlay_root.join(&rel).with_extension(x))
                .find(|p| dir.join(p).is_file())
                .unwrap_or_else(|| overlay_root.join(&rel).with_extension("yaml"))
        };
        let full = dir.join(&target);
        let old = match std::fs::read(&full) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(crate::commands::CommandError::Output(e)),
        };
        let json = target.extension().is_some_and(|x| x == "json");
        let existing = match &old {
            None => None,
            Some(bytes) => {
                let text = String::from_utf8_lossy(bytes);
                let format = if json {
                    spec::parse::Format::Json
                } else {
                    spec::parse::Format::Yaml
                };
                Some(
                    spec::parse::parse(&text, format, spec::parse::Limits::default()).map_err(
                        |e| EnvironmentError::Promote {
                            reason: format!("{}: {}", target.display(), e.message),
                        },
                    )?,
                )
            }
        };
        let (doc, done) =
            environment::compare::promote_patch(&from_spec.app, &to_spec.app, fields, existing)
                .map_err(|e| EnvironmentError::Promote {
                    reason: format!("{}: {e}", target.display()),
                })?;
        if done.is_empty() {
            continue;
        }
        let text = if json {
            format!(
                "{}\n",
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            )
        } else {
            environment::compare::to_yaml(&doc)
        };
        writes.push((target, old, text, done));
    }
    for (target, _, text, _) in &writes {
        let full = dir.join(target);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&full, text)?;
    }
    // The result must load: a promotion that breaks TO is not written.
    let after = definitions_of(dir, to)?;
    let broken: Vec<String> = ids
        .iter()
        .filter(|id| after.invalid.contains(*id))
        .map(|id| id.to_string())
        .collect();
    if !broken.is_empty() {
        for (target, old, _, _) in &writes {
            let full = dir.join(target);
            match old {
                Some(bytes) => std::fs::write(&full, bytes)?,
                None => std::fs::remove_file(&full)?,
            }
        }
        return Err(EnvironmentError::Promote {
            reason: format!(
                "the result does not validate in `{to}` for {} (nothing written; see `baton validate`)",
                broken.join(", ")
            ),
        }
        .into());
    }
    Ok(Promoted {
        files: writes
            .into_iter()
            .map(|(p, _, _, done)| (p, done))
            .collect(),
    })
}

/// `promote --commit`: the written overlay files committed on the current branch (`git` on
/// PATH), with a message naming what was promoted.
pub fn commit_promotion(
    dir: &Path,
    from: &str,
    to: &str,
    promoted: &Promoted,
) -> Result<(), EnvironmentError> {
    let git = |args: &[&std::ffi::OsStr]| -> Result<(), EnvironmentError> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .map_err(|e| EnvironmentError::Promote {
                reason: format!("cannot run git: {e}"),
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(EnvironmentError::Promote {
                reason: format!(
                    "git {} failed: {}",
                    args.first()
                        .map(|a| a.to_string_lossy())
                        .unwrap_or_default(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            })
        }
    };
    let mut add: Vec<&std::ffi::OsStr> = vec!["add".as_ref(), "--".as_ref()];
    add.extend(promoted.files.iter().map(|(p, _)| p.as_os_str()));
    git(&add)?;
    let mut message = format!("promote {from} -> {to}\n");
    for (p, fields) in &promoted.files {
        message.push_str(&format!("\n{}: {}", p.display(), fields.join(", ")));
    }
    let mut commit: Vec<&std::ffi::OsStr> = vec!["commit".as_ref(), "-q".as_ref(), "-m".as_ref()];
    commit.push(message.as_ref());
    commit.push("--".as_ref());
    commit.extend(promoted.files.iter().map(|(p, _)| p.as_os_str()));
    git(&commit)
}

/// `baton serve --environment NAME` without `--marathon` or `--vault-addr`: the environment's
/// settings, read once at start from the `baton.yaml` of a repo on this host (a directory or a
/// local git working tree); `None` for any other repo (a remote one cannot be read before the
/// daemon starts). A daemon's target is fixed when it starts.
pub fn serve_environment(
    repo: &str,
    env: &str,
    origin: crate::config::Origin,
) -> Result<Option<Environment>, crate::config::ConfigError> {
    let dir = Path::new(repo);
    if !dir.join(spec::load::CONFIG_FILE).is_file() {
        return Ok(None);
    }
    settings(dir, env)
        .map(Some)
        .map_err(|e| crate::config::ConfigError::Bad {
            name: "--environment",
            origin,
            reason: e.to_string(),
        })
}

/// A daemon's load of environment `name` from what its source read: the overlay applied. An
/// environment `baton.yaml` no longer declares (or a broken config) loads nothing and marks the
/// repo incomplete, so nothing is created, changed or deleted until it is back.
pub fn load_as(
    mut snapshot: spec::load::Snapshot,
    overlays: Vec<spec::load::SourceFile>,
    name: &str,
) -> Repo {
    match snapshot.config.environments.get(name).cloned() {
        Some(env) => overlay::load(snapshot, &env, overlays, Keep::Definitions),
        None => {
            if !snapshot
                .diagnostics
                .iter()
                .any(|d| d.severity == Severity::Error && d.app.is_none())
            {
                snapshot.diagnostics.push(spec::Diagnostic {
                    severity: Severity::Error,
                    file: PathBuf::from(spec::load::CONFIG_FILE),
                    pointer: "/environments".into(),
                    line: None,
                    column: None,
                    message: format!(
                        "this daemon syncs environment `{name}`, which baton.yaml does not declare: nothing is synced until it does"
                    ),
                    app: None,
                });
            }
            snapshot.files.clear();
            snapshot.incomplete = true;
            spec::load::load(snapshot)
        }
    }
}
