//! Live apps from what Marathon serves: `GET /v2/apps` lists, single apps, and group dumps.

use serde_json::Value;

/// Apps in a Marathon response: `{"apps": [...]}`, `{"app": {...}}`, a group (`apps` plus nested
/// `groups`, as `GET /v2/groups` returns), or a bare list of apps.
pub fn apps_from_response(doc: &Value) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    match doc {
        Value::Array(items) => out.extend(items.iter().cloned()),
        Value::Object(m) if m.contains_key("app") => out.push(m["app"].clone()),
        Value::Object(m) if m.contains_key("apps") || m.contains_key("groups") => {
            let mut todo = vec![doc];
            while let Some(group) = todo.pop() {
                if let Some(apps) = group.get("apps").and_then(Value::as_array) {
                    out.extend(apps.iter().cloned());
                }
                if let Some(groups) = group.get("groups").and_then(Value::as_array) {
                    todo.extend(groups.iter());
                }
            }
        }
        _ => {
            return Err(
                "expected a Marathon app list (`{\"apps\": [...]}`), an app or a group".into(),
            )
        }
    }
    for (i, app) in out.iter().enumerate() {
        if app.get("id").and_then(Value::as_str).is_none() {
            return Err(format!("app #{i} has no `id`"));
        }
    }
    Ok(out)
}
