//! Field-level differences between two JSON documents, as JSON pointers. Pure.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::ops::ControlFlow;

use serde::Serialize;
use serde_json::{Map, Value};

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
    diff_where(desired, live, |_, _, _| true)
}

/// [`diff`] keeping only the differences `keep` accepts (it sees the pointer, the desired and
/// the live value): nothing is copied for the others (ignored fields, tolerated values).
pub fn diff_where(
    desired: &Value,
    live: &Value,
    mut keep: impl FnMut(&str, Option<&Value>, Option<&Value>) -> bool,
) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let _ = walk(
        Some(desired),
        Some(live),
        &mut String::new(),
        &mut |pointer, d, l| {
            if keep(pointer, d, l) {
                out.push(FieldChange {
                    pointer: pointer.to_string(),
                    desired: d.cloned(),
                    live: l.cloned(),
                });
            }
            ControlFlow::Continue(())
        },
    );
    out
}

/// Whether `allowed` accepts every difference [`diff`] would find; stops at the first it does
/// not accept, and copies nothing.
pub fn all_differences(
    desired: &Value,
    live: &Value,
    mut allowed: impl FnMut(&str, Option<&Value>, Option<&Value>) -> bool,
) -> bool {
    let mut visit = |pointer: &str, d: Option<&Value>, l: Option<&Value>| {
        if allowed(pointer, d, l) {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    };
    walk(Some(desired), Some(live), &mut String::new(), &mut visit).is_continue()
}

/// Called with each difference (pointer, desired, live); `Break` ends the walk.
type Visit<'v> = dyn FnMut(&str, Option<&Value>, Option<&Value>) -> ControlFlow<()> + 'v;

/// `pointer` is the pointer of `d` and `l`: extended on the way down and restored, so that a
/// pointer string is only allocated for a difference that is kept. Mappings are walked as two
/// key-sorted entry lists merged side by side: normalised definitions are already sorted, and
/// this never hashes a key (`serde_json::Map` lookups and `==` on maps hash every key with
/// SipHash, which was a tenth of planning).
fn walk(
    d: Option<&Value>,
    l: Option<&Value>,
    pointer: &mut String,
    visit: &mut Visit,
) -> ControlFlow<()> {
    match (d, l) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let (a, b) = (sorted_entries(a), sorted_entries(b));
            let (mut i, mut j) = (0, 0);
            loop {
                let (key, x, y) = match (a.get(i), b.get(j)) {
                    (Some(&(ka, va)), Some(&(kb, vb))) => match ka.cmp(kb) {
                        Ordering::Less => (ka, Some(va), None),
                        Ordering::Greater => (kb, None, Some(vb)),
                        Ordering::Equal => (ka, Some(va), Some(vb)),
                    },
                    (Some(&(ka, va)), None) => (ka, Some(va), None),
                    (None, Some(&(kb, vb))) => (kb, None, Some(vb)),
                    (None, None) => return ControlFlow::Continue(()),
                };
                i += usize::from(x.is_some());
                j += usize::from(y.is_some());
                let len = pointer.len();
                pointer.push('/');
                if key.contains(['~', '/']) {
                    pointer.push_str(&escape_token(key));
                } else {
                    pointer.push_str(key);
                }
                walk(x, y, pointer, visit)?;
                pointer.truncate(len);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let len = pointer.len();
                let _ = write!(pointer, "/{i}");
                walk(Some(x), Some(y), pointer, visit)?;
                pointer.truncate(len);
            }
            ControlFlow::Continue(())
        }
        // Containers of different kinds or lengths differ without a look inside (and `==` on
        // them would hash every key of a mapping).
        (Some(Value::Object(_) | Value::Array(_)), _)
        | (_, Some(Value::Object(_) | Value::Array(_))) => visit(pointer, d, l),
        (a, b) if a == b => ControlFlow::Continue(()),
        (a, b) => visit(pointer, a, b),
    }
}

/// The entries of a mapping in key order: as they are when already sorted (normalised
/// definitions are), else sorted here.
fn sorted_entries(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
        entries.sort_by(|x, y| x.0.cmp(y.0));
    }
    entries
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
