//! Ownership labels: how Baton marks the apps it manages, and how it recognises them. Only an
//! app labelled with this owner is ever planned for deletion. [`standing`] reads the labels back
//! to tell an app Baton's newest write never reached from one someone edited.

use ring::digest::{digest, SHA256};
use serde_json::{Map, Value};

use crate::spec::normalize::{normalize, normalize_owned, Tolerance};
use crate::spec::Spec;

/// The owner (from `baton.yaml`) that manages the app.
pub const OWNER: &str = "baton.dev/owner";
/// The git commit the app's definition was last sent from.
pub const COMMIT: &str = "baton.dev/commit";
/// SHA-256 of the normalised definition that was sent (without the bookkeeping labels).
pub const DIGEST: &str = "baton.dev/digest";
/// `"false"` when the spec said `baton.prune: false`; read back from the live app, so it still
/// protects the app after its file is gone.
pub const PRUNE: &str = "baton.dev/prune";

/// The owner label of a live app, if any.
pub fn owner_of(app: &Value) -> Option<&str> {
    app.pointer("/labels")
        .and_then(|l| l.get(OWNER))
        .and_then(Value::as_str)
}

/// Whether a live app carries the "never prune" mark.
pub fn prune_protected(app: &Value) -> bool {
    app.pointer("/labels")
        .and_then(|l| l.get(PRUNE))
        .and_then(Value::as_str)
        == Some("false")
}

/// `sha256:<hex>` of the normalised definition (keys sorted, bookkeeping labels excluded).
pub fn digest_of(app: &Value) -> String {
    digest_of_normalized(&normalize(app))
}

/// [`digest_of`] for a definition that is already normalised.
pub fn digest_of_normalized(normalized: &Value) -> String {
    let canonical = serde_json::to_vec(normalized).unwrap_or_default();
    format!("sha256:{}", hex::encode(digest(&SHA256, &canonical)))
}

/// The definition Baton sends for a spec: the spec's app with the ownership labels added.
pub fn labelled(spec: &Spec, owner: &str, commit: &str) -> Value {
    labelled_with_normal_form(spec, owner, commit).0
}

/// [`labelled`] plus the normalised form of what is sent (bookkeeping labels excluded), which
/// the digest is computed from anyway.
pub fn labelled_with_normal_form(spec: &Spec, owner: &str, commit: &str) -> (Value, Value) {
    let app = with_owner_labels(spec, owner);
    let normalized = normalize(&app);
    let body = with_bookkeeping_labels(app, commit, &normalized);
    (body, normalized)
}

/// The normalised form of what Baton sends for a spec (bookkeeping labels excluded): what the
/// planner compares with the live app. Cheaper than [`labelled_with_normal_form`] when the
/// definition itself is not needed (an app that turns out unchanged): one copy of the spec's
/// app, no digest.
pub fn normal_form(spec: &Spec, owner: &str) -> Value {
    normalize_owned(with_owner_labels(spec, owner))
}

/// [`labelled`] for a spec whose normal form ([`normal_form`]) is at hand.
pub fn labelled_from_normal_form(
    spec: &Spec,
    owner: &str,
    commit: &str,
    normalized: &Value,
) -> Value {
    with_bookkeeping_labels(with_owner_labels(spec, owner), commit, normalized)
}

/// The spec's app with the owner (and prune) labels: everything that is sent except the
/// bookkeeping labels.
fn with_owner_labels(spec: &Spec, owner: &str) -> Value {
    let mut app = spec.app.clone();
    if let Value::Object(map) = &mut app {
        let labels = map
            .entry("labels")
            .or_insert_with(|| Value::Object(Map::new()));
        if !labels.is_object() {
            *labels = Value::Object(Map::new());
        }
        if let Value::Object(l) = labels {
            l.insert(OWNER.into(), Value::String(owner.into()));
            if !spec.baton.prune {
                l.insert(PRUNE.into(), Value::String("false".into()));
            }
        }
    }
    app
}

/// Add the commit and the digest of `normalized` (the normal form of `app`).
fn with_bookkeeping_labels(mut app: Value, commit: &str, normalized: &Value) -> Value {
    let digest = digest_of_normalized(normalized);
    if let Some(Value::Object(l)) = app.get_mut("labels") {
        l.insert(COMMIT.into(), Value::String(commit.into()));
        l.insert(DIGEST.into(), Value::String(digest));
    }
    app
}

/// Where a live app stands relative to the definition git wants now, told by the digest label
/// Baton wrote on it (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It carries the digest of git's definition: Baton's newest write reached it. Any field
    /// difference is an edit made since.
    Current,
    /// It carries the digest of an older definition and still matches it: nobody changed it since
    /// Baton wrote it, and Baton's newer write never reached it (not made yet, or lost by the
    /// scheduler, e.g. restarted from older state).
    Behind,
    /// It carries the digest of an older definition and no longer matches it: changed outside
    /// Baton since Baton last wrote it.
    Edited,
    /// No digest label: Baton never wrote it (an app to adopt).
    Unlabelled,
}

/// Where `live` stands for `spec` (see [`Standing`]). "Still matches its digest" is judged the way
/// a sync judges differences: values the scheduler assigns (service ports, the role), older
/// defaults and fields under `baton.ignore` are taken as git has them before the digest is
/// recomputed, since Baton's digest covers git's values there, not the scheduler's. An app whose
/// tolerated or ignored fields also changed in git since then reads as edited: the safe side (its
/// drift policy decides, nothing is written on its own).
pub fn standing(spec: &Spec, owner: &str, live: &Value) -> Standing {
    let Some(label) = live
        .pointer("/labels")
        .and_then(|l| l.get(DIGEST))
        .and_then(Value::as_str)
    else {
        return Standing::Unlabelled;
    };
    let desired = normal_form(spec, owner);
    if label == digest_of_normalized(&desired) {
        return Standing::Current;
    }
    let mut seen = normalize(live);
    if label == digest_of_normalized(&seen) {
        return Standing::Behind;
    }
    // The live app with the differences a sync would not act on taken as git has them.
    let tolerance = Tolerance::for_spec(&spec.app);
    let unacted = crate::diff::diff_where(&desired, &seen, |pointer, d, l| {
        crate::diff::under_any(pointer, &spec.baton.ignore) || tolerance.allows(pointer, d, l)
    });
    if unacted.is_empty() {
        return Standing::Edited;
    }
    for change in unacted {
        put(&mut seen, &change.pointer, change.desired);
    }
    if label == digest_of_normalized(&normalize_owned(seen)) {
        Standing::Behind
    } else {
        Standing::Edited
    }
}

/// Set (or, with `None`, remove) the value at `pointer`, creating objects on the way.
fn put(doc: &mut Value, pointer: &str, value: Option<Value>) {
    let tokens = crate::spec::parse::split_pointer(pointer);
    let Some((last, parents)) = tokens.split_last() else {
        if let Some(v) = value {
            *doc = v;
        }
        return;
    };
    let mut cur = doc;
    for t in parents {
        let next = match cur {
            Value::Object(m) => m
                .entry(t.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(a) => match t.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return,
            },
            _ => return,
        };
        cur = next;
    }
    match (cur, value) {
        (Value::Object(m), Some(v)) => {
            m.insert(last.clone(), v);
        }
        (Value::Object(m), None) => {
            m.remove(last);
        }
        (Value::Array(a), v) => {
            if let Some(slot) = last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                *slot = v.unwrap_or(Value::Null);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(text: &str) -> Spec {
        let repo = crate::spec::load::from_texts(&[("apps/a.yaml", text)]);
        assert!(repo.is_valid(), "{:?}", repo.diagnostics);
        let id = crate::spec::AppId::parse("/a").unwrap();
        (*repo.specs[&id]).clone()
    }

    /// What the scheduler serves after Baton wrote `spec` at `commit`: Marathon's form, the
    /// ports it assigns, the role it fills in, status fields.
    fn served(spec: &Spec, commit: &str) -> Value {
        let mut app = labelled(spec, "team", commit);
        crate::spec::marathon_form(&mut app);
        if let Some(defs) = app.get_mut("portDefinitions").and_then(Value::as_array_mut) {
            for (i, d) in defs.iter_mut().enumerate() {
                if d["port"] == 0 {
                    d["port"] = json!(10_000 + i);
                }
            }
        }
        app["role"] = json!("*");
        app["version"] = json!("2026-01-01T00:00:00.000Z");
        app["tasksRunning"] = json!(1);
        app
    }

    /// The decision table: old and new spec, what happened to the live app, where it stands.
    #[test]
    fn standing_tells_a_lost_write_from_an_edit() {
        let v1 = spec("cmd: ./a --v1\ninstances: 2\nportDefinitions: [{port: 0}]\n");
        let v2 = spec("cmd: ./a --v2\ninstances: 2\nportDefinitions: [{port: 0}]\n");
        let scaled = spec(
            "cmd: ./a --v2\ninstances: 2\nbaton: {ignore: [/instances]}\nportDefinitions: [{port: 0}]\n",
        );
        let explicit = spec("cmd: ./a --v2\nportDefinitions: [{port: 8080}]\n");
        let edit = |mut app: Value, f: fn(&mut Value)| {
            f(&mut app);
            app
        };
        let unlabelled = edit(served(&v1, "c1"), |a| {
            a["labels"] = json!({});
        });
        let cases: Vec<(&str, &Spec, Value, Standing)> = vec![
            (
                "written at git's definition",
                &v2,
                served(&v2, "c2"),
                Standing::Current,
            ),
            (
                "written, then scaled by hand",
                &v2,
                edit(served(&v2, "c2"), |a| a["instances"] = json!(5)),
                Standing::Current,
            ),
            (
                "the write of c2 was lost",
                &v2,
                served(&v1, "c1"),
                Standing::Behind,
            ),
            (
                "lost, with only an ignored field changed since",
                &scaled,
                edit(served(&v1, "c1"), |a| a["instances"] = json!(7)),
                Standing::Behind,
            ),
            (
                "lost, and edited by hand",
                &v2,
                edit(served(&v1, "c1"), |a| a["instances"] = json!(5)),
                Standing::Edited,
            ),
            (
                "lost, and its command replaced by hand",
                &v2,
                edit(served(&v1, "c1"), |a| a["cmd"] = json!("./hacked")),
                Standing::Edited,
            ),
            (
                "a forged digest label",
                &v2,
                edit(served(&v1, "c1"), |a| {
                    a["labels"][DIGEST] = json!("sha256:0000")
                }),
                Standing::Edited,
            ),
            (
                "explicit ports, lost write",
                &explicit,
                served(
                    &spec("cmd: ./a --v1\nportDefinitions: [{port: 8080}]\n"),
                    "c1",
                ),
                Standing::Behind,
            ),
            (
                "never written by Baton",
                &v2,
                unlabelled,
                Standing::Unlabelled,
            ),
        ];
        for (what, spec, live, want) in cases {
            assert_eq!(standing(spec, "team", &live), want, "{what}");
        }
    }

    #[test]
    fn normalising_twice_changes_no_digest() {
        let s = spec("cmd: ./a\nenv: {B: b, A: a}\nconstraints: [[b, UNIQUE], [a, UNIQUE]]\nportDefinitions: [{port: 0}]\n");
        let once = normal_form(&s, "team");
        assert_eq!(
            digest_of_normalized(&normalize_owned(once.clone())),
            digest_of_normalized(&once)
        );
    }
}
