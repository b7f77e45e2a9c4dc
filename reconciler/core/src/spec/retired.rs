//! Top-level fields that Marathon once served in an app (so they are in app JSON people export
//! and keep in git) and that the Marathon versions Baton targets ignore on input. A spec that
//! carries one is valid, with a warning that names it; an unknown field stays an error.
//!
//! Not here: the deprecated fields Marathon still *reads* and rewrites (`ports`, `uris`,
//! `ipAddress`, `container.docker.network`, `container.docker.portMappings`: see
//! `canonical.rs`), which keep their meaning, and `version`/`versionInfo`, which the schema
//! accepts and normalising drops. Pure.

use serde_json::{Map, Value};

/// What happens to a retired field, and why (the warning's words).
struct Retired {
    field: &'static str,
    /// Left in the definition (Marathon still takes it) or dropped before it is used.
    keep: bool,
    why: &'static str,
}

const STATUS: &str = "status that `GET /v2/apps` reports; Marathon ignores it in a definition";

/// From Marathon's changelog and RAML (`../shared/marathon/`): the artifact store (and with it
/// `storeUrls`, in every app Marathon 1.4 and older served) was removed in 1.5; `residency`
/// has had no effect since 1.6 (Marathon derives it from persistent volumes, RAML: "This
/// property is deprecated and it has no effect"); the status fields are in every served app.
const RETIRED: &[Retired] = &[
    Retired {
        field: "storeUrls",
        keep: false,
        why: "the artifact store's field, removed in Marathon 1.5, which ignores it",
    },
    Retired {
        field: "residency",
        keep: true,
        why: "deprecated: no effect since Marathon 1.6, which derives it from persistent volumes",
    },
    Retired {
        field: "tasks",
        keep: false,
        why: STATUS,
    },
    Retired {
        field: "tasksStaged",
        keep: false,
        why: STATUS,
    },
    Retired {
        field: "tasksRunning",
        keep: false,
        why: STATUS,
    },
    Retired {
        field: "tasksHealthy",
        keep: false,
        why: STATUS,
    },
    Retired {
        field: "tasksUnhealthy",
        keep: false,
        why: STATUS,
    },
    Retired {
        field: "taskStats",
        keep: false,
        why: STATUS,
    },
    Retired {
        field: "deployments",
        keep: false,
        why: STATUS,
    },
    Retired {
        field: "lastTaskFailure",
        keep: false,
        why: STATUS,
    },
    Retired {
        field: "readinessCheckResults",
        keep: false,
        why: STATUS,
    },
];

/// The retired fields of `doc` (field, the warning's message), in `RETIRED`'s order; those
/// Marathon ignores entirely are removed from `doc`, so they are never validated as unknown,
/// sent, or compared.
pub fn take(doc: &mut Map<String, Value>) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for r in RETIRED {
        if !doc.contains_key(r.field) {
            continue;
        }
        let what = if r.keep {
            "kept as given"
        } else {
            doc.remove(r.field);
            "left out"
        };
        out.push((r.field, format!("`{}` is {} ({what})", r.field, r.why)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ignored_fields_are_named_and_dropped_kept_ones_stay() {
        let Value::Object(mut doc) = json!({
            "cmd": "x", "storeUrls": ["http://s/a"], "tasksRunning": 2, "residency": {},
            "instanse": 1
        }) else {
            unreachable!()
        };
        let found = take(&mut doc);
        let fields: Vec<&str> = found.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["storeUrls", "residency", "tasksRunning"]);
        assert!(found[0].1.contains("`storeUrls`") && found[0].1.contains("Marathon 1.5"));
        assert!(!doc.contains_key("storeUrls") && !doc.contains_key("tasksRunning"));
        assert!(doc.contains_key("residency"), "Marathon still takes it");
        assert!(
            doc.contains_key("instanse"),
            "an unknown field is not ours to drop"
        );
    }
}
