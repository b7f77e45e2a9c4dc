//! The child's environment: parent env + rendered secrets + policy. Pure, no I/O.
//!
//! Bootstrap material (Vault token, AppRole ids, wrapping tokens, JWT and the files that
//! hold them) never reaches the child. Secrets go either into the environment (the
//! default) or, with `--env-file`, into a file the caller writes, so they do not show up
//! in `/proc/<pid>/environ`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};

use crate::refs::{ReadKey, RefPlan, Segment};
use crate::secret::{Secret, SecretData};

/// Variables that carry (or point at) bootstrap credentials; stripped from every child.
pub const BOOTSTRAP_VARS: &[&str] = &[
    "VAULT_TOKEN",
    "BATON_TOKEN_FILE",
    "BATON_ROLE_ID",
    "BATON_ROLE_ID_FILE",
    "BATON_SECRET_ID",
    "BATON_SECRET_ID_FILE",
    "BATON_WRAPPED_SECRET_ID",
    "BATON_WRAPPED_SECRET_ID_FILE",
    "BATON_JWT_FILE",
    "BATON_GATEKEEPER_TOKEN",
];

/// Set in the child to the env file's path when `--env-file` is used.
pub const ENV_FILE_VAR: &str = "BATON_ENV_FILE";

/// How to build the child's environment.
#[derive(Debug, Clone, Default)]
pub struct EnvPolicy {
    /// Extra variable names to remove (added to [`BOOTSTRAP_VARS`]).
    pub strip: BTreeSet<String>,
    /// `Some(path)`: secrets go to that file, not into the environment.
    pub env_file: Option<String>,
}

/// A value in the child's environment.
#[derive(Debug, Clone)]
pub enum EnvValue {
    Plain(OsString),
    Secret(Secret),
}

impl EnvValue {
    pub fn as_os_str(&self) -> &OsStr {
        match self {
            Self::Plain(v) => v,
            Self::Secret(s) => OsStr::new(s.expose()),
        }
    }
}

/// The result: what goes into the environment, and what goes into the env file.
#[derive(Debug, Clone, Default)]
pub struct ChildEnv {
    /// The complete environment, sorted by name.
    pub vars: Vec<(OsString, EnvValue)>,
    /// Secrets for the env file (empty unless `EnvPolicy::env_file` is set).
    pub file_vars: Vec<(String, Secret)>,
}

/// A reference whose key is absent from the secret it points at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {var}: key `{key}` not found at {path}")]
pub struct RenderError {
    pub var: String,
    pub path: String,
    pub key: String,
}

/// Renders every planned variable from the secrets read for it. All missing keys are
/// reported, not just the first. A reference to a path absent from `reads` (its read failed,
/// which the caller reports) leaves its variable out without an error of its own.
pub fn render(
    plan: &RefPlan,
    reads: &BTreeMap<ReadKey, SecretData>,
) -> Result<Vec<(String, Secret)>, Vec<RenderError>> {
    let mut out = Vec::with_capacity(plan.vars.len());
    let mut errors = Vec::new();
    for var in &plan.vars {
        let mut value = Secret::new(String::new());
        let mut ok = true;
        for segment in &var.segments {
            let piece = match segment {
                Segment::Text(t) => Secret::new(t.clone()),
                Segment::Ref(r) => match reads.get(&r.read_key()).map(|d| d.get(&r.key)) {
                    Some(Some(v)) => v,
                    None => {
                        ok = false;
                        continue;
                    }
                    Some(None) => {
                        errors.push(RenderError {
                            var: var.name.clone(),
                            path: r.read_key().to_string(),
                            key: r.key.clone(),
                        });
                        ok = false;
                        continue;
                    }
                },
            };
            value = concat(&value, &piece);
        }
        if ok {
            out.push((var.name.clone(), value));
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Joins two secrets into a fresh buffer sized up front, so no reallocation leaves an
/// un-zeroised copy behind.
fn concat(a: &Secret, b: &Secret) -> Secret {
    let mut s = String::with_capacity(a.expose().len() + b.expose().len());
    s.push_str(a.expose());
    s.push_str(b.expose());
    Secret::new(s)
}

/// Builds the child's environment from the parent's. Bootstrap variables and
/// `policy.strip` are removed; rendered variables replace their reference values.
pub fn child_env<I>(parent: I, rendered: Vec<(String, Secret)>, policy: &EnvPolicy) -> ChildEnv
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    let stripped = |name: &OsStr| {
        name.to_str().is_some_and(|n| {
            BOOTSTRAP_VARS.contains(&n) || policy.strip.contains(n) || n == ENV_FILE_VAR
        })
    };
    let mut vars: BTreeMap<OsString, EnvValue> = parent
        .into_iter()
        .filter(|(name, _)| !stripped(name))
        .map(|(name, value)| (name, EnvValue::Plain(value)))
        .collect();
    let mut file_vars = Vec::new();
    match &policy.env_file {
        None => {
            for (name, value) in rendered {
                vars.insert(OsString::from(name), EnvValue::Secret(value));
            }
        }
        Some(path) => {
            for (name, value) in rendered {
                // The reference text itself is not secret, but an app reading it would be
                // confused; it reads the file instead.
                vars.remove(OsStr::new(&name));
                file_vars.push((name, value));
            }
            vars.insert(
                OsString::from(ENV_FILE_VAR),
                EnvValue::Plain(OsString::from(path)),
            );
        }
    }
    ChildEnv {
        vars: vars.into_iter().collect(),
        file_vars,
    }
}

/// Env-file text: one `NAME='value'` line per secret, single-quoted so that both
/// `set -a; . "$BATON_ENV_FILE"` and dotenv parsers read the exact value back.
pub fn env_file_contents(vars: &[(String, Secret)]) -> Secret {
    let len: usize = vars
        .iter()
        .map(|(n, v)| n.len() + v.expose().len() * 4 + 4)
        .sum();
    let mut out = String::with_capacity(len);
    for (name, value) in vars {
        out.push_str(name);
        out.push_str("='");
        for c in value.expose().chars() {
            if c == '\'' {
                out.push_str("'\\''");
            } else {
                out.push(c);
            }
        }
        out.push_str("'\n");
    }
    Secret::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refs::parse_env;
    use serde_json::{json, Map, Value};

    fn data(v: Value) -> SecretData {
        match v {
            Value::Object(m) => SecretData::new(m),
            _ => SecretData::new(Map::new()),
        }
    }

    fn plan_and_reads() -> (RefPlan, BTreeMap<ReadKey, SecretData>) {
        let (plan, errors) = parse_env([
            ("USER", "vault:database/creds/app#username"),
            ("PASS", "vault:database/creds/app#password"),
            (
                "URL",
                "postgres://{{ vault:database/creds/app#username }}:{{ vault:database/creds/app#password }}@db/app",
            ),
        ]);
        assert!(errors.is_empty());
        let mut reads = BTreeMap::new();
        reads.insert(
            ReadKey {
                path: "database/creds/app".into(),
                version: None,
            },
            data(json!({"username": "u1", "password": "p'1"})),
        );
        (plan, reads)
    }

    #[test]
    fn renders_whole_values_and_templates() {
        let (plan, reads) = plan_and_reads();
        let out = render(&plan, &reads).unwrap();
        let got: Vec<(&str, &str)> = out.iter().map(|(n, v)| (n.as_str(), v.expose())).collect();
        assert_eq!(
            got,
            [
                ("USER", "u1"),
                ("PASS", "p'1"),
                ("URL", "postgres://u1:p'1@db/app")
            ]
        );
    }

    #[test]
    fn missing_keys_name_var_path_and_key_but_no_value() {
        let (plan, errors) = parse_env([
            ("A", "vault:kv1/app#nope"),
            ("B", "vault:kv1/app#also_nope"),
        ]);
        assert!(errors.is_empty());
        let mut reads = BTreeMap::new();
        reads.insert(
            ReadKey {
                path: "kv1/app".into(),
                version: None,
            },
            data(json!({"present": "topsecret"})),
        );
        let errs = render(&plan, &reads).unwrap_err();
        assert_eq!(errs.len(), 2);
        let msg = errs[0].to_string();
        assert!(msg.contains("A") && msg.contains("kv1/app") && msg.contains("nope"));
        assert!(!msg.contains("topsecret"));
    }

    #[test]
    fn bootstrap_vars_are_stripped_and_refs_replaced() {
        let (plan, reads) = plan_and_reads();
        let rendered = render(&plan, &reads).unwrap();
        let parent = [
            ("PATH", "/bin"),
            ("VAULT_TOKEN", "root"),
            ("BATON_SECRET_ID", "sid"),
            ("BATON_WRAPPED_SECRET_ID", "wrap"),
            ("USER", "vault:database/creds/app#username"),
            ("CUSTOM", "x"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let policy = EnvPolicy {
            strip: BTreeSet::from(["CUSTOM".to_owned()]),
            env_file: None,
        };
        let env = child_env(parent, rendered, &policy);
        let names: Vec<_> = env.vars.iter().map(|(n, _)| n.to_str().unwrap()).collect();
        assert_eq!(names, ["PASS", "PATH", "URL", "USER"]);
        let user = env.vars.iter().find(|(n, _)| n == "USER").unwrap();
        assert_eq!(user.1.as_os_str(), "u1");
        assert!(env.file_vars.is_empty());
    }

    #[test]
    fn env_file_mode_keeps_secrets_out_of_the_environment() {
        let (plan, reads) = plan_and_reads();
        let rendered = render(&plan, &reads).unwrap();
        let parent = [
            ("USER", "vault:database/creds/app#username"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let policy = EnvPolicy {
            strip: BTreeSet::new(),
            env_file: Some("/run/secrets/env".into()),
        };
        let env = child_env(parent, rendered, &policy);
        let names: Vec<_> = env.vars.iter().map(|(n, _)| n.to_str().unwrap()).collect();
        assert_eq!(names, ["BATON_ENV_FILE", "PATH"]);
        let text = env_file_contents(&env.file_vars);
        assert_eq!(
            text.expose(),
            "USER='u1'\nPASS='p'\\''1'\nURL='postgres://u1:p'\\''1@db/app'\n"
        );
    }
}
