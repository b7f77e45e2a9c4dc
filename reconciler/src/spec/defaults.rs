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

/// Fill every absent (or null) field that has a documented default.
pub fn fill(app: &mut Value) {
    if let Value::Object(map) = app {
        fill_map(map, table());
    }
}

fn fill_map(target: &mut Map<String, Value>, table: &Map<String, Value>) {
    for (key, t) in table {
        if key.starts_with('$') {
            continue;
        }
        let absent = matches!(target.get(key), None | Some(Value::Null));
        match t {
            Value::Object(tm) if tm.contains_key("$default") => {
                if absent {
                    target.insert(key.clone(), tm["$default"].clone());
                }
            }
            Value::Object(tm) => {
                if absent && tm.get("$fill") == Some(&Value::Bool(true)) {
                    target.insert(key.clone(), Value::Object(Map::new()));
                }
                if let Some(Value::Object(sub)) = target.get_mut(key) {
                    fill_map(sub, tm);
                }
            }
            Value::Array(template) => {
                if let (Some(Value::Object(tm)), Some(Value::Array(items))) =
                    (template.first(), target.get_mut(key))
                {
                    for item in items.iter_mut() {
                        if let Value::Object(im) = item {
                            fill_map(im, tm);
                        }
                    }
                }
            }
            scalar => {
                if absent {
                    target.insert(key.clone(), scalar.clone());
                }
            }
        }
    }
}

/// Older defaults Marathon versions filled in for fields the spec leaves out: pointer -> values
/// that are as good as the default. (A live `maxLaunchDelaySeconds: 3600` from Marathon 1.4-1.9
/// is not drift when the spec never set it.)
pub fn alternatives(raw: &Value) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    if let Value::Object(map) = raw {
        walk_alternatives(map, table(), "", &mut out);
    }
    out
}

fn walk_alternatives(
    target: &Map<String, Value>,
    table: &Map<String, Value>,
    prefix: &str,
    out: &mut Vec<(String, Vec<Value>)>,
) {
    for (key, t) in table {
        if key.starts_with('$') {
            continue;
        }
        // The pointer is only spelled out where it is used (most table entries have no `$also`).
        let pointer = || format!("{prefix}/{}", escape_token(key));
        match (t, target.get(key)) {
            (Value::Object(tm), None | Some(Value::Null)) if tm.contains_key("$default") => {
                if let Some(Value::Array(also)) = tm.get("$also") {
                    out.push((pointer(), also.clone()));
                }
            }
            (Value::Object(tm), Some(Value::Object(sub))) if !tm.contains_key("$default") => {
                walk_alternatives(sub, tm, &pointer(), out);
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
