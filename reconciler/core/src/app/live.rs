//! Live apps from what Marathon serves: `GET /v2/apps` lists, single apps, and group dumps.

use rayon::prelude::*;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::spec::parse::json_compact;

/// The apps of a saved Marathon response (the text of a `--live` file), as
/// [`apps_from_response`] finds them in the parsed document, with the same values and errors.
///
/// A `GET /v2/apps` answer (`{"apps": [...]}` and nothing else) has its apps parsed in
/// parallel: a 10,000-app file is 16 MB of JSON, and parsing it on one thread while the other
/// core waited was a tenth of `baton plan`. One pass finds where each app starts and ends
/// (checking the JSON syntax of the whole text), then each app is parsed on its own. Any other
/// shape, and any text that does not parse this way, goes through the one-thread parse of the
/// whole document, so a broken file is reported exactly as before.
pub fn apps_from_text(text: &str) -> Result<Vec<Value>, String> {
    if let Some(apps) = app_list_in_parallel(text) {
        return with_ids(apps);
    }
    let doc = json_compact(text).map_err(|e| e.to_string())?;
    apps_from_response(doc)
}

/// `{"apps": [...]}` and no other key, with each app parsed on its own; `None` for any other
/// shape or any error (left to the whole-document parse, which reports it).
fn app_list_in_parallel(text: &str) -> Option<Vec<Value>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct AppList<'a> {
        #[serde(borrow)]
        apps: Vec<&'a RawValue>,
    }
    let list: AppList = serde_json::from_str(text).ok()?;
    // Compact containers (`json_compact`): a large live state takes about a sixth less memory.
    list.apps
        .par_iter()
        .map(|raw| {
            json_compact(raw.get())
                .ok()
                .filter(|app| depth(app) <= MAX_APP_DEPTH)
        })
        .collect()
}

/// `serde_json` refuses a document nested more than 127 containers deep; an app sits two
/// containers down in `{"apps": [...]}`, so parsed on its own it may not be deeper than this
/// and still be one the whole-document parse accepts.
const MAX_APP_DEPTH: usize = 125;

/// How many containers deep `v` is (a scalar: 0, `[]`: 1, `[[1]]`: 2).
fn depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut todo = vec![(v, 1)];
    while let Some((v, d)) = todo.pop() {
        match v {
            Value::Array(items) => todo.extend(items.iter().map(|c| (c, d + 1))),
            Value::Object(map) => todo.extend(map.values().map(|c| (c, d + 1))),
            _ => continue,
        }
        deepest = deepest.max(d);
    }
    deepest
}

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
    with_ids(out)
}

/// The apps, when each has an `id`.
fn with_ids(apps: Vec<Value>) -> Result<Vec<Value>, String> {
    for (i, app) in apps.iter().enumerate() {
        if app.get("id").and_then(Value::as_str).is_none() {
            return Err(format!("app #{i} has no `id`"));
        }
    }
    Ok(apps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What `apps_from_text` must always agree with: the whole document parsed on one thread.
    fn one_thread(text: &str) -> Result<Vec<Value>, String> {
        apps_from_response(json_compact(text).map_err(|e| e.to_string())?)
    }

    #[test]
    fn app_lists_parse_in_parallel_to_the_same_apps() {
        let text = json!({"apps": [
            {"id": "/a", "cmd": "x", "mem": 128.0, "labels": {"k": "v"}, "env": {}},
            {"id": "/b/c", "container": {"docker": {"image": "nginx"}}, "ports": [0, 80]}
        ]})
        .to_string();
        assert!(app_list_in_parallel(&text).is_some());
        assert_eq!(apps_from_text(&text), one_thread(&text));
        assert_eq!(apps_from_text(r#"{"apps": []}"#), Ok(Vec::new()));
    }

    #[test]
    fn other_shapes_and_broken_files_are_read_as_before() {
        for text in [
            r#"{"app": {"id": "/a"}}"#,
            r#"[{"id": "/a"}]"#,
            r#"{"id": "/", "apps": [{"id": "/a"}], "groups": [{"id": "/g", "apps": [{"id": "/g/b"}]}]}"#,
            r#"{"apps": [{"id": "/a"}], "apps": [{"id": "/b"}]}"#,
            r#"{"apps": [{"id": "/a"}, {"cmd": "no id"}]}"#,
            r#"{"apps": [{"id": "/a", "cpus": 1e999}]}"#,
            r#"{"apps": [{"id": "/a", "cmd": "x"}, {"id": "/b",]}"#,
            r#"{"apps": [{"id": "/a"}]} trailing"#,
            r#"{"apps": {"id": "/a"}}"#,
            "",
        ] {
            assert_eq!(apps_from_text(text), one_thread(text), "{text}");
        }
    }

    #[test]
    fn nesting_limit_is_the_whole_documents() {
        // Around serde_json's limit of 127 containers, counted from the document's root.
        for extra in 120..130 {
            let text = format!(
                r#"{{"apps": [{{"id": "/a", "deep": {}1{}}}]}}"#,
                "[".repeat(extra),
                "]".repeat(extra)
            );
            assert_eq!(apps_from_text(&text), one_thread(&text), "{extra} levels");
        }
    }
}
