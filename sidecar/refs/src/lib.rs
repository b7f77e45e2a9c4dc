//! Secret references in environment values: parsing only, no I/O.
//!
//! A value is a reference when it is exactly `vault:<path>#<key>` (optionally with
//! `?version=N`, before or after `#key`), or a template when it embeds references as
//! `{{ vault:<path>#<key> }}` in other text. Paths are Vault API paths as the user
//! writes them (`database/creds/app`, `secret/data/app`, `kv1/app`); the KV version of
//! a mount is decided later by the resolver. The result is a [`RefPlan`]: which
//! variables to render, and the distinct reads ([`ReadKey`]) needed to render them.

use std::collections::BTreeSet;
use std::fmt;

/// Prefix that marks a reference.
pub const PREFIX: &str = "vault:";

/// One `vault:path#key` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// Vault API path without the `/v1/` prefix and without a leading slash.
    pub path: String,
    /// Key inside the secret's data.
    pub key: String,
    /// KV v2 version (`?version=N`); `None` means the latest.
    pub version: Option<u32>,
}

impl SecretRef {
    /// The read this reference needs; references that share it share one response.
    pub fn read_key(&self) -> ReadKey {
        ReadKey {
            path: self.path.clone(),
            version: self.version,
        }
    }
}

impl fmt::Display for SecretRef {
    /// Path and key only: both are names, never values, so this is safe to log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.path, self.key)?;
        if let Some(v) = self.version {
            write!(f, "?version={v}")?;
        }
        Ok(())
    }
}

/// A distinct Vault read: one request (and at most one lease) per key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadKey {
    pub path: String,
    pub version: Option<u32>,
}

impl fmt::Display for ReadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if let Some(v) = self.version {
            write!(f, "?version={v}")?;
        }
        Ok(())
    }
}

/// A piece of a rendered value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    Ref(SecretRef),
}

/// A variable whose value must be rendered from secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefVar {
    pub name: String,
    pub segments: Vec<Segment>,
}

impl RefVar {
    pub fn refs(&self) -> impl Iterator<Item = &SecretRef> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Ref(r) => Some(r),
            Segment::Text(_) => None,
        })
    }
}

/// Every variable that needs secrets, in input order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefPlan {
    pub vars: Vec<RefVar>,
}

impl RefPlan {
    /// The distinct reads, sorted (deterministic request order in logs and tests).
    pub fn reads(&self) -> BTreeSet<ReadKey> {
        self.vars
            .iter()
            .flat_map(RefVar::refs)
            .map(SecretRef::read_key)
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Names of the variables that will carry secrets.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(|v| v.name.as_str())
    }
}

/// A malformed reference; names the variable, never echoes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {var}: {kind}")]
pub struct RefError {
    pub var: String,
    pub kind: RefErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefErrorKind {
    #[error("reference has no `#key` (expected vault:<path>#<key>)")]
    MissingKey,
    #[error("reference has an empty path")]
    EmptyPath,
    #[error("reference has an empty key")]
    EmptyKey,
    #[error("reference path contains `..` or an empty segment")]
    BadPath,
    #[error("`version` must be a positive integer")]
    BadVersion,
    #[error("unknown reference parameter `{0}` (only `version` is known)")]
    UnknownParam(String),
    #[error("`{{{{` vault:... without a closing `}}}}`")]
    Unterminated,
}

/// Splits environment variables into the ones that need secrets and errors for the
/// malformed ones. Every variable is examined, so one bad reference never hides another.
pub fn parse_env<I, K, V>(vars: I) -> (RefPlan, Vec<RefError>)
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut plan = RefPlan::default();
    let mut errors = Vec::new();
    for (name, value) in vars {
        match parse_value(value.as_ref()) {
            Ok(None) => {}
            Ok(Some(segments)) => plan.vars.push(RefVar {
                name: name.as_ref().to_owned(),
                segments,
            }),
            Err(kind) => errors.push(RefError {
                var: name.as_ref().to_owned(),
                kind,
            }),
        }
    }
    (plan, errors)
}

/// `Ok(None)` for a plain value. A value counts as a whole reference when it starts with
/// `vault:` and contains `/` or `#` (so `vault:8200` as a host:port stays plain).
pub fn parse_value(value: &str) -> Result<Option<Vec<Segment>>, RefErrorKind> {
    if let Some(body) = value.strip_prefix(PREFIX) {
        if body.contains('/') || body.contains('#') {
            return parse_ref(body).map(|r| Some(vec![Segment::Ref(r)]));
        }
        return Ok(None);
    }
    parse_template(value)
}

fn parse_template(value: &str) -> Result<Option<Vec<Segment>>, RefErrorKind> {
    let mut segments = Vec::new();
    let mut text = String::new();
    let mut rest = value;
    let mut found = false;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let inner_start = after.trim_start();
        if !inner_start.starts_with(PREFIX) {
            // Some other templating language's braces: keep them as text.
            text.push_str(&rest[..open + 2]);
            rest = after;
            continue;
        }
        let close = after.find("}}").ok_or(RefErrorKind::Unterminated)?;
        text.push_str(&rest[..open]);
        if !text.is_empty() {
            segments.push(Segment::Text(std::mem::take(&mut text)));
        }
        let inner = after[..close].trim();
        let body = inner.strip_prefix(PREFIX).unwrap_or(inner);
        segments.push(Segment::Ref(parse_ref(body)?));
        found = true;
        rest = &after[close + 2..];
    }
    if !found {
        return Ok(None);
    }
    text.push_str(rest);
    if !text.is_empty() {
        segments.push(Segment::Text(text));
    }
    Ok(Some(segments))
}

/// Parses `<path>[?version=N]#<key>[?version=N]`.
fn parse_ref(body: &str) -> Result<SecretRef, RefErrorKind> {
    let (path_part, key_part) = body.split_once('#').ok_or(RefErrorKind::MissingKey)?;
    let (path, q1) = split_query(path_part);
    let (key, q2) = split_query(key_part);
    let mut version = None;
    for query in [q1, q2].into_iter().flatten() {
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (name, val) = param.split_once('=').unwrap_or((param, ""));
            match name {
                "version" => {
                    let v: u32 = val.parse().map_err(|_| RefErrorKind::BadVersion)?;
                    if v == 0 {
                        return Err(RefErrorKind::BadVersion);
                    }
                    version = Some(v);
                }
                other => return Err(RefErrorKind::UnknownParam(other.to_owned())),
            }
        }
    }
    let path = path.trim().trim_start_matches('/').trim_end_matches('/');
    let key = key.trim();
    if path.is_empty() {
        return Err(RefErrorKind::EmptyPath);
    }
    if key.is_empty() {
        return Err(RefErrorKind::EmptyKey);
    }
    if path.split('/').any(|seg| seg.is_empty() || seg == "..") {
        return Err(RefErrorKind::BadPath);
    }
    Ok(SecretRef {
        path: path.to_owned(),
        key: key.to_owned(),
        version,
    })
}

fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (s, None),
    }
}

/// `secret/app` on KV v2 mount `secret/` is read at `secret/data/app`.
pub fn kv2_data_path(mount: &str, path: &str) -> String {
    match path.strip_prefix(mount) {
        Some(rest) if !rest.starts_with("data/") => format!("{mount}data/{rest}"),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests;
