//! Resolving a [`RefPlan`] against Vault: one read per distinct path, all concurrently.
//!
//! For each read the KV version of its mount is taken from `--kv-version`, else asked of
//! `sys/internal/ui/mounts/<path>`; on KV v2 mounts `data/` is inserted when the user
//! wrote `secret/app` instead of `secret/data/app`, and the secret is taken from
//! `data.data`. When the server cannot say (RustyVault: 404), a response with both
//! `data.data` and `data.metadata.version` is read as KV v2, anything else as-is.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use futures::future::join_all;

use crate::env::{render, RenderError};
use crate::refs::{ReadKey, RefPlan};
use crate::retry::{retry, RetryPolicy};
use crate::secret::{Secret, SecretData};
use crate::vault::{Lease, VaultApi, VaultError};

/// `--kv-version MOUNT=N` overrides: mount path (with trailing slash) to KV version.
#[derive(Debug, Clone, Default)]
pub struct KvVersions(BTreeMap<String, u8>);

impl KvVersions {
    /// Parses `secret=2,kv1=1` style entries (mount paths with or without slashes).
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for entry in entries
            .into_iter()
            .flat_map(|e| e.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (mount, v) = entry
                .split_once('=')
                .ok_or_else(|| format!("expected MOUNT=1|2, got {entry:?}"))?;
            let v: u8 = match v.trim() {
                "1" => 1,
                "2" => 2,
                other => return Err(format!("KV version must be 1 or 2, got {other:?}")),
            };
            map.insert(format!("{}/", mount.trim().trim_matches('/')), v);
        }
        Ok(Self(map))
    }

    /// The longest configured mount that `path` lies under.
    fn lookup(&self, path: &str) -> Option<(&str, u8)> {
        self.0
            .iter()
            .filter(|(mount, _)| path.starts_with(mount.as_str()))
            .max_by_key(|(mount, _)| mount.len())
            .map(|(m, v)| (m.as_str(), *v))
    }
}

/// What one start (or rotation) read: rendered variables and the leases behind them.
#[derive(Debug)]
pub struct Resolved {
    pub vars: Vec<(String, Secret)>,
    pub leases: Vec<Lease>,
    /// Requests made, for logs: (path as read, elapsed).
    pub timings: Vec<(String, Duration)>,
}

/// One reason a start cannot proceed. Names variables and paths, never values. The path is
/// said once: the one the reference names, and the request's own only where it differs (a KV v2
/// `data/` path, a mount lookup).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(
        "environment variable {}: cannot read {path}{}: {}",
        vars.join(", "),
        at(path, error),
        error.reason()
    )]
    Read {
        vars: Vec<String>,
        path: String,
        /// Not a `#[source]`: its text is in this one already (a chain would repeat it).
        error: VaultError,
    },
    #[error(transparent)]
    MissingKey(RenderError),
}

fn at(path: &str, error: &VaultError) -> String {
    if error.path() == path {
        String::new()
    } else {
        format!(" (at {})", error.path())
    }
}

/// Every failure of a resolution (unreadable paths and missing keys of the paths that were
/// read), so the operator sees them all in one run.
#[derive(Debug)]
pub struct ResolveError {
    pub failures: Vec<Failure>,
    /// Paths read successfully.
    pub reads_ok: usize,
}

impl ResolveError {
    /// True when every failure is Vault being unreachable/sealed (after retrying).
    pub fn is_unavailable(&self) -> bool {
        !self.failures.is_empty()
            && self
                .failures
                .iter()
                .all(|f| matches!(f, Failure::Read { error, .. } if error.is_retryable()))
    }

    /// True when nothing could be read and every read was refused (403): what a token that
    /// is not (or no longer) valid gets.
    pub fn all_denied(&self) -> bool {
        self.reads_ok == 0
            && !self.failures.is_empty()
            && self.failures.iter().all(|f| {
                matches!(
                    f,
                    Failure::Read {
                        error: VaultError::PermissionDenied { .. },
                        ..
                    }
                )
            })
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.failures.len();
        write!(f, "{n} secret reference(s) could not be resolved")?;
        for failure in &self.failures {
            write!(f, "\n  - {failure}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ResolveError {}

/// Reads every distinct path of `plan` concurrently and renders the variables.
pub async fn resolve<V: VaultApi>(
    api: &V,
    token: &Secret,
    plan: &RefPlan,
    kv: &KvVersions,
    policy: &RetryPolicy,
) -> Result<Resolved, ResolveError> {
    let keys: Vec<ReadKey> = plan.reads().into_iter().collect();
    let results = join_all(keys.iter().map(|key| read_one(api, token, key, kv, policy))).await;

    let mut reads = BTreeMap::new();
    let mut leases = Vec::new();
    let mut timings = Vec::new();
    let mut failures = Vec::new();
    for (key, result) in keys.into_iter().zip(results) {
        match result {
            Ok(read) => {
                timings.push((read.path, read.took));
                leases.extend(read.lease);
                reads.insert(key, read.data);
            }
            Err(error) => {
                let vars = plan
                    .vars
                    .iter()
                    .filter(|v| v.refs().any(|r| r.read_key() == key))
                    .map(|v| v.name.clone())
                    .collect();
                failures.push(Failure::Read {
                    vars,
                    path: key.to_string(),
                    error,
                });
            }
        }
    }
    // Rendered even when some reads failed: a key missing from a path that was read is
    // reported in the same run as the paths that could not be read.
    let vars = match render(plan, &reads) {
        Ok(vars) => vars,
        Err(missing) => {
            failures.extend(missing.into_iter().map(Failure::MissingKey));
            Vec::new()
        }
    };
    if !failures.is_empty() {
        return Err(ResolveError {
            failures,
            reads_ok: reads.len(),
        });
    }
    Ok(Resolved {
        vars,
        leases,
        timings,
    })
}

/// One path read: its data and lease, and what `baton-env check` reports about it.
pub(crate) struct ReadOutcome {
    pub data: SecretData,
    pub lease: Option<Lease>,
    /// The path as requested (KV v2: with `data/`).
    pub path: String,
    pub took: Duration,
    /// KV version of the mount (1 or 2; inferred from the response shape when the server
    /// cannot say), `None` for other engines.
    pub kv_version: Option<u8>,
    /// KV v2: the version read (`data.metadata.version`).
    pub version: Option<u64>,
}

pub(crate) async fn read_one<V: VaultApi>(
    api: &V,
    token: &Secret,
    key: &ReadKey,
    kv: &KvVersions,
    policy: &RetryPolicy,
) -> Result<ReadOutcome, VaultError> {
    let start = tokio::time::Instant::now();
    let (mount, version) = match kv.lookup(&key.path) {
        Some((mount, v)) => (Some(mount.to_owned()), Some(v)),
        None => match retry(policy, "mount lookup", || api.mount_info(token, &key.path)).await {
            Ok(Some(info)) if info.kind == "kv" || info.kind == "generic" => {
                (Some(info.path), Some(info.kv_version.unwrap_or(1)))
            }
            Ok(Some(info)) => (Some(info.path), None),
            // Unknown to the server, or the policy does not allow asking: read as-is.
            Ok(None) | Err(VaultError::PermissionDenied { .. }) => (None, None),
            Err(e) => return Err(e),
        },
    };
    let path = match (&mount, version) {
        (Some(mount), Some(2)) => kv2_data_path(mount, &key.path),
        _ => key.path.clone(),
    };
    let mut resp = retry(policy, "read", || api.read(token, &path, key.version)).await?;
    let took = start.elapsed();
    let looks_v2 = resp.data.raw("data").is_some_and(|v| v.is_object())
        && resp
            .data
            .raw("metadata")
            .is_some_and(|m| m.get("version").is_some());
    let kv_version = match version {
        None if looks_v2 => Some(2),
        v => v,
    };
    let read_version = resp
        .data
        .raw("metadata")
        .and_then(|m| m.get("version"))
        .and_then(serde_json::Value::as_u64)
        .filter(|_| kv_version == Some(2));
    let data = match kv_version {
        Some(2) => resp.data.take_object("data").unwrap_or_default(),
        _ => std::mem::take(&mut resp.data),
    };
    tracing::debug!(path = %path, took_ms = took.as_millis() as u64, leased = resp.lease.is_some(), "read secret");
    Ok(ReadOutcome {
        data,
        lease: resp.lease,
        path,
        took,
        kv_version,
        version: read_version,
    })
}

pub use crate::refs::kv2_data_path;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_overrides_pick_the_longest_mount() {
        let kv = KvVersions::parse(["secret=2,team/kv=1", " /team/ = 2 "]).unwrap();
        assert_eq!(kv.lookup("secret/app"), Some(("secret/", 2)));
        assert_eq!(kv.lookup("team/kv/app"), Some(("team/kv/", 1)));
        assert_eq!(kv.lookup("team/x"), Some(("team/", 2)));
        assert_eq!(kv.lookup("secretive/x"), None);
        assert!(KvVersions::parse(["secret=3"]).is_err());
        assert!(KvVersions::parse(["secret"]).is_err());
    }
}
