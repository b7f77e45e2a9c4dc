//! Redacting holders for secret material: values read from Vault, tokens, secret ids.
//!
//! Everything secret travels in [`Secret`] (a `secrecy::SecretBox<String>`: Debug prints
//! `[REDACTED]`, the heap buffer is zeroised on drop) or in [`SecretData`] (a Vault `data`
//! object whose strings are zeroised on drop). Only [`Secret::expose`] hands out the text,
//! so a grep for `expose` finds every place a value is used.

use std::fmt;

use secrecy::{ExposeSecret, SecretBox};
use serde_json::{Map, Value};
use zeroize::Zeroize;

/// A secret string. Cloning copies into a new zeroised-on-drop buffer.
pub struct Secret(SecretBox<String>);

impl Secret {
    /// Takes ownership of `value` without copying its heap buffer.
    pub fn new(value: String) -> Self {
        Self(SecretBox::new(Box::new(value)))
    }

    /// The secret text. Callers must not log or format it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// True when the secret is the empty string (a misconfiguration, not a secret).
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Self::new(self.expose().to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

/// The `data` object of a Vault response. Keys are not secret; values are.
#[derive(Default)]
pub struct SecretData(Map<String, Value>);

impl SecretData {
    pub fn new(map: Map<String, Value>) -> Self {
        Self(map)
    }

    /// The value under `key` as text: strings as they are, other JSON as compact JSON.
    pub fn get(&self, key: &str) -> Option<Secret> {
        match self.0.get(key)? {
            Value::String(s) => Some(Secret::new(s.clone())),
            Value::Null => None,
            other => Some(Secret::new(other.to_string())),
        }
    }

    /// A nested object (KV v2 keeps the secret under `data.data`), moved out.
    pub fn take_object(&mut self, key: &str) -> Option<SecretData> {
        match self.0.remove(key)? {
            Value::Object(map) => Some(SecretData(map)),
            mut other => {
                zeroize_value(&mut other);
                None
            }
        }
    }

    /// Non-secret metadata (e.g. KV v2 `metadata.version`) can be read as plain JSON.
    pub fn raw(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Key names only, for diagnostics.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretData")
            .field("keys", &self.0.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for SecretData {
    fn drop(&mut self) {
        for value in self.0.values_mut() {
            zeroize_value(value);
        }
    }
}

/// Overwrites every string inside `value` (serde_json has no Zeroize of its own).
pub fn zeroize_value(value: &mut Value) {
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(zeroize_value),
        Value::Object(map) => map.values_mut().for_each(zeroize_value),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_redacts_values() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        let mut map = Map::new();
        map.insert("password".into(), Value::String("hunter2".into()));
        let data = SecretData::new(map);
        let dbg = format!("{data:?}");
        assert!(dbg.contains("password"));
        assert!(!dbg.contains("hunter2"));
    }

    #[test]
    fn non_string_values_render_as_json() {
        let mut map = Map::new();
        map.insert("port".into(), Value::from(5432));
        map.insert("none".into(), Value::Null);
        let data = SecretData::new(map);
        assert_eq!(data.get("port").unwrap().expose(), "5432");
        assert!(data.get("none").is_none());
        assert!(data.get("missing").is_none());
    }
}
