//! Live apps from what Marathon serves: `GET /v2/apps` lists, single apps, and group dumps.

use serde_json::Value;

/// Apps in a Marathon response: `{"apps": [...]}`, `{"app": {...}}`, a group (`apps` plus nested
/// `groups`, as `GET /v2/groups` returns), or a bare list of apps.
pub fn apps_from_response(doc: Value) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    match doc {
        Value::Array(items) => out.extend(items),
        Value::Object(mut m) if m.contains_key("app") => out.extend(m.remove("app")),
        Value::Object(m) if m.contains_key("apps") || m.contains_key("groups") => {
            // Taken apart by value: a 10,000-app answer is not copied.
            let mut todo = vec![m];
            while let Some(mut group) = todo.pop() {
                if let Some(Value::Array(apps)) = group.remove("apps") {
                    out.extend(apps);
                }
                if let Some(Value::Array(groups)) = group.remove("groups") {
                    todo.extend(groups.into_iter().filter_map(|g| match g {
                        Value::Object(g) => Some(g),
                        _ => None,
                    }));
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
