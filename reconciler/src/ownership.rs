//! Ownership labels: how Baton marks the apps it manages, and how it recognises them. Only an
//! app labelled with this owner is ever planned for deletion.

use ring::digest::{digest, SHA256};
use serde_json::{Map, Value};

use crate::spec::normalize::{normalize, normalize_owned};
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
