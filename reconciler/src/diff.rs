//! Field-level differences between two JSON documents, as JSON pointers. Pure.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::spec::parse::escape_token;

/// One differing field: where, what git says, what runs. `None` means absent on that side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub pointer: String,
    pub desired: Option<Value>,
    pub live: Option<Value>,
}

/// Every difference between `desired` and `live`, in document order. Objects are compared key by
/// key; lists of equal length item by item; lists of different lengths as a whole (a readable
/// "was [..] now [..]" beats a cascade of shifted items).
pub fn diff(desired: &Value, live: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk(Some(desired), Some(live), &mut String::new(), &mut out);
    out
}

/// `pointer` is the pointer of `d` and `l`: extended on the way down and restored, so that a
/// pointer string is only allocated for a difference. Equal subtrees are skipped after one
/// comparison (most of two definitions of the same app are equal).
fn walk(d: Option<&Value>, l: Option<&Value>, pointer: &mut String, out: &mut Vec<FieldChange>) {
    match (d, l) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            if a == b {
                return;
            }
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let len = pointer.len();
                pointer.push('/');
                if k.contains(['~', '/']) {
                    pointer.push_str(&escape_token(k));
                } else {
                    pointer.push_str(k);
                }
                walk(a.get(k), b.get(k), pointer, out);
                pointer.truncate(len);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            if a == b {
                return;
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let len = pointer.len();
                let _ = write!(pointer, "/{i}");
                walk(Some(x), Some(y), pointer, out);
                pointer.truncate(len);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(FieldChange {
            pointer: pointer.clone(),
            desired: a.cloned(),
            live: b.cloned(),
        }),
    }
}

/// Is `pointer` equal to, or inside, one of `prefixes` (JSON pointers)?
pub fn under_any(pointer: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| {
        pointer == p || (pointer.starts_with(p.as_str()) && pointer[p.len()..].starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_changes_by_pointer() {
        let d = json!({"a": 1, "b": {"c": [1, 2], "d": "x"}, "e/f": true});
        let l = json!({"a": 2, "b": {"c": [1, 3], "z": 0}, "e/f": true});
        let changes = diff(&d, &l);
        let pointers: Vec<&str> = changes.iter().map(|c| c.pointer.as_str()).collect();
        assert_eq!(pointers, ["/a", "/b/c/1", "/b/d", "/b/z"]);
        assert_eq!(changes[2].live, None);
        assert_eq!(changes[3].desired, None);
    }

    #[test]
    fn lists_of_other_length_change_whole() {
        let changes = diff(&json!({"a": [1]}), &json!({"a": [1, 2]}));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].pointer, "/a");
    }

    #[test]
    fn prefixes_match_whole_tokens() {
        let p = vec!["/instances".to_string(), "/env/A".to_string()];
        assert!(under_any("/instances", &p));
        assert!(under_any("/env/A", &p));
        assert!(!under_any("/env/AB", &p));
        assert!(!under_any("/instancesX", &p));
    }
}
