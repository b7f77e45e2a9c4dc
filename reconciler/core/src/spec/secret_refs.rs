//! DC/OS secret references: `env` values `{"secret": name}`, secret volumes and a Docker
//! `pullConfig` name a secret the app's `secrets` block declares. Marathon refuses an app whose
//! reference names no declared secret (`SecretValidation.secretRefValidator`, "references an
//! undefined secret"; `AppValidation`: "volume.secret must refer to an existing secret",
//! "pullConfig.secret must refer to an existing secret"): Baton says so at validation, with
//! the pointer of the reference, instead of at sync time as a 422. Pure.

use serde_json::{Map, Value};

use super::parse::escape_token;
use super::schema::{did_you_mean, Finding};
use super::Severity;

/// A finding for every secret reference in `app` that names no secret declared in `app`'s
/// `secrets` or in `defaults`' (`baton.yaml`'s `defaults`, merged under every spec). Secret
/// names are not secret values (those live in the secret store), so messages may show them.
pub fn check(app: &Map<String, Value>, defaults: &Map<String, Value>) -> Vec<Finding> {
    let mut declared: Vec<String> = [app, defaults]
        .iter()
        .filter_map(|m| m.get("secrets").and_then(Value::as_object))
        .flat_map(|s| s.keys().cloned())
        .collect();
    declared.sort();
    declared.dedup();
    let mut out = Vec::new();
    let mut check_ref = |pointer: String, name: Option<&str>| {
        let Some(name) = name else {
            return; // the schema says what is wrong with a reference that is not a string
        };
        if declared.iter().any(|d| d == name) {
            return;
        }
        let hint = match did_you_mean(name, &declared) {
            Some(s) => format!(" (did you mean `{s}`?)"),
            None if declared.is_empty() => {
                "; declare it in a top-level `secrets` block: `secrets: {NAME: {source: ...}}`"
                    .to_string()
            }
            None => {
                let shown: Vec<String> = declared.iter().map(|d| format!("`{d}`")).collect();
                format!(" (declared: {})", shown.join(", "))
            }
        };
        out.push(Finding {
            severity: Severity::Error,
            pointer,
            message: format!(
                "references the secret `{name}`, which `secrets` does not declare{hint}"
            ),
        });
    };
    if let Some(env) = app.get("env").and_then(Value::as_object) {
        for (var, value) in env {
            if let Some(reference) = value.as_object() {
                check_ref(
                    format!("/env/{}/secret", escape_token(var)),
                    reference.get("secret").and_then(Value::as_str),
                );
            }
        }
    }
    let container = app.get("container");
    let volumes = container
        .and_then(|c| c.get("volumes"))
        .and_then(Value::as_array);
    for (i, volume) in volumes.into_iter().flatten().enumerate() {
        if let Some(secret) = volume.get("secret") {
            check_ref(format!("/container/volumes/{i}/secret"), secret.as_str());
        }
    }
    if let Some(pull) = container.and_then(|c| c.pointer("/docker/pullConfig/secret")) {
        check_ref("/container/docker/pullConfig/secret".into(), pull.as_str());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn findings(app: Value) -> Vec<(String, String)> {
        let Value::Object(app) = app else {
            unreachable!("a mapping")
        };
        check(&app, &Map::new())
            .into_iter()
            .map(|f| (f.pointer, f.message))
            .collect()
    }

    #[test]
    fn declared_references_pass() {
        let app = json!({
            "env": {"DB_PASSWORD": {"secret": "db"}, "PLAIN": "x"},
            "secrets": {"db": {"source": "/prod/db/password"}, "pull": {"source": "/docker"}},
            "container": {
                "volumes": [{"containerPath": "p", "secret": "db"}, {"containerPath": "d", "hostPath": "/d", "mode": "RO"}],
                "docker": {"image": "x", "pullConfig": {"secret": "pull"}}
            }
        });
        assert_eq!(findings(app), []);
    }

    #[test]
    fn every_undeclared_reference_is_named_by_pointer() {
        let app = json!({
            "env": {"A": {"secret": "dbb"}, "B/C": {"secret": "nope"}, "D": "plain"},
            "secrets": {"db": {"source": "/prod/db"}, "other": {"source": "/x"}},
            "container": {
                "volumes": [{"containerPath": "p", "secret": "gone"}],
                "docker": {"image": "x", "pullConfig": {"secret": "pul"}}
            }
        });
        let f = findings(app);
        let pointers: Vec<&str> = f.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/env/A/secret",
                "/env/B~1C/secret",
                "/container/volumes/0/secret",
                "/container/docker/pullConfig/secret"
            ]
        );
        assert!(
            f[0].1.contains("`dbb`") && f[0].1.contains("did you mean `db`?"),
            "{f:?}"
        );
        assert!(f[1].1.contains("declared: `db`, `other`"), "{f:?}");
    }

    #[test]
    fn without_a_secrets_block_the_message_says_how_to_declare_one() {
        let f = findings(json!({"env": {"A": {"secret": "db"}}}));
        assert_eq!(f.len(), 1);
        assert!(f[0].1.contains("top-level `secrets` block"), "{f:?}");
    }

    #[test]
    fn the_repo_defaults_may_declare_the_secret() {
        let Value::Object(app) = json!({"env": {"A": {"secret": "db"}}}) else {
            unreachable!()
        };
        let Value::Object(defaults) = json!({"secrets": {"db": {"source": "/prod/db"}}}) else {
            unreachable!()
        };
        assert!(check(&app, &defaults).is_empty());
    }
}
