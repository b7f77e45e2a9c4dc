//! Marathon's documented app defaults, kept as data in `defaults.json` (see its `$comment` for
//! the format) so that the table can be checked against Marathon's RAML and read by people.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::parse::escape_token;

const TABLE: &str = include_str!("defaults.json");

/// The parsed table. A table that does not parse is a build defect caught by the tests; at run
/// time it degrades to "no defaults" rather than a panic.
pub fn table() -> &'static Map<String, Value> {
    static CELL: OnceLock<Map<String, Value>> = OnceLock::new();
    CELL.get_or_init(|| serde_json::from_str(TABLE).unwrap_or_default())
}

/// The table as rules, compiled once: filling an app then looks each of its fields up once,
/// and never looks anything up in the table itself (an app is filled on every plan, twice).
struct Rule {
    key: String,
    kind: Kind,
}

enum Kind {
    /// A value for an absent (or null) field; `also`: older defaults as good as it when the
    /// spec left the field out (`{"$default": v, "$also": [..]}`, or a plain scalar).
    Default {
        value: Value,
        also: Option<Vec<Value>>,
    },
    /// An object: its own rules, applied to an existing object (created first when `fill`).
    Object { fill: bool, rules: Vec<Rule> },
    /// Rules applied to every object item of an array (a one-element array of an object).
    Items(Vec<Rule>),
    /// An entry that fills nothing (an array whose template is not an object).
    Nothing,
}

fn rules() -> &'static [Rule] {
    static CELL: OnceLock<Vec<Rule>> = OnceLock::new();
    CELL.get_or_init(|| compile(table()))
}

fn compile(table: &Map<String, Value>) -> Vec<Rule> {
    table
        .iter()
        .filter(|(key, _)| !key.starts_with('$'))
        .map(|(key, t)| {
            let kind = match t {
                Value::Object(tm) => match tm.get("$default") {
                    Some(value) => Kind::Default {
                        value: value.clone(),
                        also: tm.get("$also").and_then(Value::as_array).cloned(),
                    },
                    None => Kind::Object {
                        fill: tm.get("$fill") == Some(&Value::Bool(true)),
                        rules: compile(tm),
                    },
                },
                Value::Array(template) => match template.first() {
                    Some(Value::Object(tm)) => Kind::Items(compile(tm)),
                    _ => Kind::Nothing,
                },
                scalar => Kind::Default {
                    value: scalar.clone(),
                    also: None,
                },
            };
            Rule {
                key: key.clone(),
                kind,
            }
        })
        .collect()
}

/// Fill every absent (or null) field that has a documented default.
pub fn fill(app: &mut Value) {
    if let Value::Object(map) = app {
        fill_map(map, rules());
    }
}

fn fill_map(target: &mut Map<String, Value>, rules: &[Rule]) {
    for rule in rules {
        match (&rule.kind, target.get_mut(&rule.key)) {
            (Kind::Default { value, .. }, None) => {
                target.insert(rule.key.clone(), value.clone());
            }
            (Kind::Default { value, .. }, Some(slot)) if slot.is_null() => *slot = value.clone(),
            (Kind::Object { rules, .. }, Some(Value::Object(sub))) => fill_map(sub, rules),
            (Kind::Object { fill: true, rules }, None) => {
                let mut sub = Map::new();
                fill_map(&mut sub, rules);
                target.insert(rule.key.clone(), Value::Object(sub));
            }
            (Kind::Object { fill: true, rules }, Some(slot)) if slot.is_null() => {
                let mut sub = Map::new();
                fill_map(&mut sub, rules);
                *slot = Value::Object(sub);
            }
            (Kind::Items(rules), Some(Value::Array(items))) => {
                for item in items.iter_mut() {
                    if let Value::Object(im) = item {
                        fill_map(im, rules);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Older defaults Marathon versions filled in for fields the spec leaves out: pointer -> values
/// that are as good as the default. (A live `maxLaunchDelaySeconds: 3600` from Marathon 1.4-1.9
/// is not drift when the spec never set it.)
pub fn alternatives(raw: &Value) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    if let Value::Object(map) = raw {
        walk_alternatives(map, rules(), "", &mut out);
    }
    out
}

fn walk_alternatives(
    target: &Map<String, Value>,
    rules: &[Rule],
    prefix: &str,
    out: &mut Vec<(String, Vec<Value>)>,
) {
    for rule in rules {
        // The pointer is only spelled out where it is used (most table entries have no `$also`).
        let pointer = || format!("{prefix}/{}", escape_token(&rule.key));
        match (&rule.kind, target.get(&rule.key)) {
            (
                Kind::Default {
                    also: Some(also), ..
                },
                None | Some(Value::Null),
            ) => {
                out.push((pointer(), also.clone()));
            }
            (Kind::Object { rules, .. }, Some(Value::Object(sub))) => {
                walk_alternatives(sub, rules, &pointer(), out);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_parses() {
        let t: Map<String, Value> = serde_json::from_str(TABLE).unwrap();
        assert_eq!(t.get("instances"), Some(&json!(1)));
        assert!(!table().is_empty());
    }

    #[test]
    fn fills_scalars_objects_and_item_templates() {
        let mut app = json!({
            "id": "/a", "cmd": "x", "mem": 64, "instances": null,
            "healthChecks": [{"protocol": "TCP", "intervalSeconds": 5}],
            "container": {"docker": {"image": "nginx"}}
        });
        fill(&mut app);
        assert_eq!(app["mem"], 64);
        assert_eq!(app["instances"], 1);
        assert_eq!(app["maxLaunchDelaySeconds"], 300);
        assert_eq!(app["upgradeStrategy"]["minimumHealthCapacity"], 1);
        assert_eq!(app["healthChecks"][0]["intervalSeconds"], 5);
        assert_eq!(app["healthChecks"][0]["gracePeriodSeconds"], 300);
        assert_eq!(app["healthChecks"][0]["protocol"], "TCP");
        assert_eq!(app["container"]["type"], "DOCKER");
        assert_eq!(app["container"]["docker"]["privileged"], false);
        // Absent arrays and objects without `$fill` are not invented.
        assert!(app.get("readinessChecks").is_none());
        assert!(app.get("fetch").is_none());
    }

    #[test]
    fn alternatives_only_for_omitted_fields() {
        let alts = alternatives(&json!({"cmd": "x"}));
        assert!(alts.contains(&("/maxLaunchDelaySeconds".to_string(), vec![json!(3600)])));
        assert!(alternatives(&json!({"maxLaunchDelaySeconds": 300})).is_empty());
    }
}
