//! The comparable form of an app, desired or live: Marathon's canonical form with status fields,
//! Baton's bookkeeping labels and representation noise removed, so that an app Marathon returns
//! after creating it from a spec compares equal to that spec.

use serde_json::{Map, Number, Value};

use super::canonical::marathon_form;
use super::defaults;

/// Fields Marathon adds to what it serves that are status, not definition.
pub const STATUS_FIELDS: &[&str] = &[
    "version",
    "versionInfo",
    "tasks",
    "tasksStaged",
    "tasksRunning",
    "tasksHealthy",
    "tasksUnhealthy",
    "tasksStats",
    "deployments",
    "readinessCheckResults",
    "lastTaskFailure",
    "taskStats",
];

/// Labels that record where a definition came from (commit, digest): they change on every sync
/// and say nothing about what runs, so they never count as a difference.
pub const BOOKKEEPING_LABELS: &[&str] = &["baton.dev/commit", "baton.dev/digest"];

/// Arrays Marathon keeps as sets: their order in a response is not the order submitted.
const SET_FIELDS: &[&str] = &[
    "constraints",
    "acceptedResourceRoles",
    "dependencies",
    "healthChecks",
];

/// Normalise a desired or live app definition.
pub fn normalize(app: &Value) -> Value {
    // The copy leaves out what normalising drops anyway instead of copying and removing it: in
    // a live app the status fields can be most of the document (`tasks`, `taskStats`).
    let copy = match app {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !dropped_field(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    };
    normalize_owned(copy)
}

/// [`normalize`] of a definition the caller no longer needs (no copy is made).
pub fn normalize_owned(mut v: Value) -> Value {
    if let Value::Object(map) = &mut v {
        map.retain(|k, _| !dropped_field(k));
        if let Some(Value::Object(labels)) = map.get_mut("labels") {
            for l in BOOKKEEPING_LABELS {
                labels.remove(*l);
            }
        }
    }
    marathon_form(&mut v);
    if let Value::Object(map) = &mut v {
        drop_default_port_names(map);
        for f in SET_FIELDS {
            if let Some(Value::Array(items)) = map.get_mut(*f) {
                sort_set(items);
            }
        }
        if let Some(Value::String(id)) = map.get_mut("id") {
            let trimmed = id.trim_end_matches('/').to_string();
            *id = trimmed;
        }
    }
    if tidy(&mut v) {
        v
    } else {
        Value::Object(Map::new())
    }
}

/// Top-level fields that never take part in a comparison: status, `baton`, `$schema`.
fn dropped_field(key: &str) -> bool {
    STATUS_FIELDS.contains(&key) || key == "baton" || key == "$schema"
}

/// Marathon names the port it invents `default`; a spec rarely does. Either way the name carries
/// no meaning for comparison.
fn drop_default_port_names(map: &mut Map<String, Value>) {
    let defs = map.get_mut("portDefinitions").and_then(Value::as_array_mut);
    for list in [defs].into_iter().flatten() {
        unname_default(list);
    }
    let mappings = map
        .get_mut("container")
        .and_then(|c| c.get_mut("portMappings"))
        .and_then(Value::as_array_mut);
    for list in [mappings].into_iter().flatten() {
        unname_default(list);
    }
}

fn unname_default(list: &mut [Value]) {
    {
        for item in list.iter_mut() {
            if let Value::Object(m) = item {
                if m.get("name").and_then(Value::as_str) == Some("default") {
                    m.remove("name");
                }
            }
        }
    }
}

fn sort_set(items: &mut [Value]) {
    if items.len() < 2 {
        return; // nothing to order
    }
    items.sort_by_cached_key(|v| {
        let mut v = v.clone();
        if tidy(&mut v) {
            serde_json::to_string(&v).unwrap_or_default()
        } else {
            "null".to_string()
        }
    });
}

/// In place: sorted keys; nulls, empty lists and empty mappings dropped (Marathon does not
/// distinguish them from absent); integral floats as integers (`128.0` is `128`). Returns
/// `false` when the value itself is to be dropped (a list item that is dropped becomes `null`).
/// Done in place so that a document is not rebuilt (every key copied) to normalise it.
fn tidy(v: &mut Value) -> bool {
    match v {
        Value::Null => false,
        Value::Number(n) => {
            if let Some(i) = integral(n) {
                *n = i;
            }
            true
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                if !tidy(item) {
                    *item = Value::Null;
                }
            }
            !items.is_empty()
        }
        Value::Object(map) => {
            map.retain(|_, v| tidy(v));
            // Sorting rebuilds the mapping's hash table: skip it when there is nothing to move
            // (most small mappings of a definition).
            if !map.keys().is_sorted() {
                map.sort_keys();
            }
            !map.is_empty()
        }
        _ => true,
    }
}

/// The integer form of an integral float, if `n` is one.
fn integral(n: &Number) -> Option<Number> {
    match n.as_f64() {
        Some(f) if !n.is_i64() && !n.is_u64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
            Some(Number::from(f as i64))
        }
        _ => None,
    }
}

/// Differences that are not differences: values the scheduler assigns (service ports for `0`,
/// the role when the spec sets none) and older Marathon defaults for fields the spec omits.
#[derive(Debug, Clone, Default)]
pub struct Tolerance {
    alternatives: Vec<(String, Vec<Value>)>,
    role_given: bool,
}

impl Tolerance {
    /// Tolerances for one spec, from the spec as written (before defaults).
    pub fn for_spec(raw: &Value) -> Tolerance {
        Tolerance {
            alternatives: defaults::alternatives(raw),
            role_given: raw.get("role").is_some(),
        }
    }

    /// Is a difference at `pointer` (desired value, live value) acceptable?
    pub fn allows(&self, pointer: &str, desired: Option<&Value>, live: Option<&Value>) -> bool {
        if pointer == "/role" && !self.role_given {
            return true;
        }
        if is_assigned_port(pointer) && desired.is_none_or(|d| d.as_u64() == Some(0)) {
            return live.is_none_or(Value::is_number);
        }
        self.alternatives
            .iter()
            .any(|(p, alts)| p == pointer && live.is_some_and(|l| alts.contains(l)))
    }
}

/// Ports Marathon assigns when the definition says `0` (the default).
fn is_assigned_port(pointer: &str) -> bool {
    let t: Vec<&str> = pointer.split('/').collect();
    matches!(t.as_slice(), ["", "portDefinitions", _, "port"])
        || matches!(
            t.as_slice(),
            [
                "",
                "container",
                "portMappings",
                _,
                "servicePort" | "hostPort"
            ]
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_and_bookkeeping_are_dropped() {
        let live = json!({
            "id": "/a/", "cmd": "x", "version": "2020-01-01T00:00:00.000Z",
            "tasksRunning": 1, "deployments": [], "labels": {"baton.dev/commit": "abc", "team": "x"}
        });
        let n = normalize(&live);
        assert!(n.get("version").is_none() && n.get("tasksRunning").is_none());
        assert_eq!(n["labels"], json!({"team": "x"}));
        assert_eq!(n["id"], "/a");
    }

    #[test]
    fn numbers_and_empties_are_canonical() {
        let a =
            normalize(&json!({"id": "/a", "cmd": "x", "mem": 128.0, "env": {}, "constraints": []}));
        let b = normalize(&json!({"id": "/a", "cmd": "x"}));
        assert_eq!(a, b);
    }

    #[test]
    fn sets_are_order_free_but_lists_are_not() {
        let a = normalize(
            &json!({"id": "/a", "cmd": "x", "constraints": [["a", "UNIQUE"], ["b", "CLUSTER", "x"]], "args": null}),
        );
        let b = normalize(
            &json!({"id": "/a", "cmd": "x", "constraints": [["b", "CLUSTER", "x"], ["a", "UNIQUE"]]}),
        );
        assert_eq!(a, b);
        let c = normalize(&json!({"id": "/a", "args": ["1", "2"]}));
        let d = normalize(&json!({"id": "/a", "args": ["2", "1"]}));
        assert_ne!(c, d);
    }

    #[test]
    fn assigned_ports_and_old_defaults_are_tolerated() {
        let t = Tolerance::for_spec(&json!({"cmd": "x"}));
        assert!(t.allows(
            "/portDefinitions/0/port",
            Some(&json!(0)),
            Some(&json!(10003))
        ));
        assert!(!t.allows(
            "/portDefinitions/0/port",
            Some(&json!(80)),
            Some(&json!(10003))
        ));
        assert!(t.allows(
            "/maxLaunchDelaySeconds",
            Some(&json!(300)),
            Some(&json!(3600))
        ));
        assert!(!t.allows(
            "/maxLaunchDelaySeconds",
            Some(&json!(300)),
            Some(&json!(60))
        ));
        assert!(t.allows("/role", None, Some(&json!("*"))));
        let explicit =
            Tolerance::for_spec(&json!({"cmd": "x", "maxLaunchDelaySeconds": 300, "role": "a"}));
        assert!(!explicit.allows(
            "/maxLaunchDelaySeconds",
            Some(&json!(300)),
            Some(&json!(3600))
        ));
        assert!(!explicit.allows("/role", Some(&json!("a")), Some(&json!("*"))));
    }
}
