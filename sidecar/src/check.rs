//! `baton-env check`: a dry run of a container start. It logs in exactly as the task would,
//! reads every distinct path of the references once (as a start does), reports per reference
//! whether it would resolve (path readable, key present, KV version and version read, lease
//! renewable and its TTL), then revokes what it obtained. No child is run, and no value is
//! ever part of the report: only variable names, paths, keys and metadata.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use serde::Serialize;

use crate::auth::{AuthError, GatekeeperApi};
use crate::error::Error;
use crate::refs::ReadKey;
use crate::resolve::{read_one, ReadOutcome};
use crate::vault::{truncate_id, VaultApi, VaultError};
use crate::{Source, TokenCheck};

/// What `baton-env check` found: one row per reference (a template with two references gives
/// two rows), in the order of the variables.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Every reference resolves.
    pub ok: bool,
    pub login: LoginReport,
    pub references: Vec<RefReport>,
    /// What was revoked afterwards.
    pub cleanup: Cleanup,
}

#[derive(Debug, Serialize)]
pub struct LoginReport {
    /// `token`, `approle`, `jwt` or `gatekeeper`.
    pub method: &'static str,
    /// The token's TTL in seconds (0: it never expires, or Vault would not say).
    pub ttl_s: u64,
    pub renewable: bool,
    /// False for a given token that may not look itself up (no `default` policy).
    pub looked_up: bool,
}

#[derive(Debug, Serialize)]
pub struct RefReport {
    /// The environment variable holding the reference.
    pub var: String,
    /// The path as written in the reference.
    pub path: String,
    pub key: String,
    /// `?version=N` of the reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_version: Option<u32>,
    pub status: Status,
    /// Why it would not resolve (names and Vault's reason, never a value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The path requested when it differs from `path` (KV v2: `data/` inserted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_path: Option<String>,
    /// 1 or 2 on a KV mount, absent for other engines (or when the server cannot say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_version: Option<u8>,
    /// KV v2: the version that was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// A dynamic secret's lease.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseReport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// The path does not exist (or has no such version, or that version is deleted).
    NotFound,
    /// The policy does not allow reading the path.
    Denied,
    /// The path was read but has no such key.
    MissingKey,
    /// Vault unreachable, sealed or failing past `--max-wait`.
    Unavailable,
    /// Any other failure of the read (an unexpected status or body).
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeaseReport {
    /// The lease id truncated like in the logs (path and 8 characters).
    pub id: String,
    pub renewable: bool,
    /// TTL granted by the read.
    pub ttl_s: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Cleanup {
    /// The token was obtained by the check's login and revoked (with its leases).
    pub token_revoked: bool,
    /// Leases revoked one by one (under a given token, which is not revoked).
    pub leases_revoked: usize,
    /// Revocations that failed (logged; what is left expires with its TTL).
    pub failed: usize,
}

impl Report {
    /// True when every failing reference failed because Vault was unavailable: a start
    /// would exit 69 then, not with the resolve code.
    pub fn only_unavailable(&self) -> bool {
        let mut failing = self.references.iter().filter(|r| r.status != Status::Ok);
        let mut any = false;
        failing.all(|r| {
            any = true;
            r.status == Status::Unavailable
        }) && any
    }

    /// One line per reference, names only, aligned in columns.
    pub fn table(&self) -> String {
        let rows: Vec<[String; 5]> = self
            .references
            .iter()
            .map(|r| {
                let mut reference = format!("{}#{}", r.path, r.key);
                if let Some(v) = r.requested_version {
                    reference.push_str(&format!("?version={v}"));
                }
                let mut detail = Vec::new();
                if let Some(kv) = r.kv_version {
                    detail.push(format!("kv v{kv}"));
                }
                if let Some(v) = r.version {
                    detail.push(format!("version {v}"));
                }
                if let Some(l) = &r.lease {
                    detail.push(format!(
                        "lease {} ttl {}s{}",
                        l.id,
                        l.ttl_s,
                        if l.renewable {
                            " renewable"
                        } else {
                            " not renewable"
                        }
                    ));
                }
                if let Some(reason) = &r.reason {
                    detail.push(reason.clone());
                }
                [
                    if r.status == Status::Ok { "ok" } else { "FAIL" }.to_owned(),
                    r.var.clone(),
                    reference,
                    status_word(r.status).to_owned(),
                    detail.join(", "),
                ]
            })
            .collect();
        let header = ["", "VARIABLE", "REFERENCE", "STATUS", "DETAIL"].map(str::to_owned);
        let mut widths = [0usize; 5];
        for row in std::iter::once(&header).chain(&rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&rows) {
            let line: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        let failing = self
            .references
            .iter()
            .filter(|r| r.status != Status::Ok)
            .count();
        out.push_str(&format!(
            "{} reference(s), {} failing; logged in with {} (token ttl {}s); {}\n",
            self.references.len(),
            failing,
            self.login.method,
            self.login.ttl_s,
            if self.cleanup.token_revoked {
                "token revoked with its leases".to_owned()
            } else {
                format!(
                    "given token kept, {} lease(s) revoked",
                    self.cleanup.leases_revoked
                )
            }
        ));
        out
    }
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::NotFound => "not found",
        Status::Denied => "permission denied",
        Status::MissingKey => "key missing",
        Status::Unavailable => "unavailable",
        Status::Error => "error",
    }
}

fn status_of(e: &VaultError) -> Status {
    match e {
        VaultError::PermissionDenied { .. } => Status::Denied,
        VaultError::NotFound { .. } => Status::NotFound,
        e if e.is_retryable() => Status::Unavailable,
        _ => Status::Error,
    }
}

impl<V: VaultApi + 'static, G: GatekeeperApi + 'static> Source<V, G> {
    /// The check itself: login, every read, the report, then revocation of what was obtained
    /// (also when a read failed). Errors are those of a start before its reads (usage, login,
    /// alarm), with the same exit codes.
    pub(crate) async fn check(&self) -> Result<Report, Error> {
        let policy = self.policy;
        let login = self.login(&policy).await?;
        let keys: Vec<ReadKey> = self.plan.reads().into_iter().collect();
        let results = join_all(
            keys.iter()
                .map(|key| read_one(self.api.as_ref(), &login.token, key, &self.kv, &policy)),
        )
        .await;
        let reads: BTreeMap<ReadKey, Result<ReadOutcome, VaultError>> =
            keys.into_iter().zip(results).collect();

        // A given token Vault refused to look up and that could read nothing: the token is bad,
        // as a start would say (exit 77).
        let reads_ok = reads.values().filter(|r| r.is_ok()).count();
        let all_denied = reads
            .values()
            .all(|r| matches!(r, Err(VaultError::PermissionDenied { .. })));
        if login.check == TokenCheck::Denied && reads_ok == 0 && all_denied && !reads.is_empty() {
            return Err(AuthError::TokenRefused.into());
        }

        let mut references = Vec::new();
        for var in &self.plan.vars {
            for r in var.refs() {
                let mut row = RefReport {
                    var: var.name.clone(),
                    path: r.path.clone(),
                    key: r.key.clone(),
                    requested_version: r.version,
                    status: Status::Ok,
                    reason: None,
                    read_path: None,
                    kv_version: None,
                    version: None,
                    lease: None,
                };
                match reads.get(&r.read_key()) {
                    Some(Ok(read)) => {
                        row.read_path = (read.path != r.path).then(|| read.path.clone());
                        row.kv_version = read.kv_version;
                        row.version = read.version;
                        row.lease = read.lease.as_ref().map(|l| LeaseReport {
                            id: truncate_id(&l.id),
                            renewable: l.renewable,
                            ttl_s: l.duration.as_secs(),
                        });
                        if !read.data.contains_key(&r.key) || read.data.get(&r.key).is_none() {
                            row.status = Status::MissingKey;
                            let mut keys: Vec<&str> = read.data.keys().collect();
                            keys.sort_unstable();
                            row.reason = Some(format!(
                                "key `{}` not found (keys there: {})",
                                r.key,
                                if keys.is_empty() {
                                    "none".to_owned()
                                } else {
                                    keys.join(", ")
                                }
                            ));
                        }
                    }
                    Some(Err(e)) => {
                        row.status = status_of(e);
                        row.reason = Some(if e.path() == r.path {
                            e.reason()
                        } else {
                            format!("{} (at {})", e.reason(), e.path())
                        });
                    }
                    None => {
                        return Err(Error::Internal(format!("no read for {}", r.read_key())));
                    }
                }
                references.push(row);
            }
        }

        let leases: Vec<_> = reads
            .values()
            .filter_map(|r| r.as_ref().ok()?.lease.clone())
            .collect();
        drop(reads); // the values, zeroised, before anything else waits on the network
        let cleanup = self.revoke_checked(&login.token, &leases).await;
        let ok = references.iter().all(|r| r.status == Status::Ok);
        Ok(Report {
            ok,
            login: crate::check::LoginReport {
                method: self.method.name(),
                ttl_s: login.ttl.unwrap_or_default().as_secs(),
                renewable: login.renewable,
                looked_up: login.check == TokenCheck::Valid,
            },
            references,
            cleanup,
        })
    }

    /// Revokes the check's own token (its leases go with it), or, under a given token that is
    /// not ours, each lease. Bounded: a Vault that stops answering does not hold the check.
    async fn revoke_checked(
        &self,
        token: &crate::secret::Secret,
        leases: &[crate::vault::Lease],
    ) -> Cleanup {
        const BOUND: Duration = Duration::from_secs(10);
        let mut cleanup = Cleanup::default();
        if self.owns_tokens() {
            match tokio::time::timeout(BOUND, self.api.revoke_self(token)).await {
                Ok(Ok(())) => {
                    cleanup.token_revoked = true;
                    tracing::info!(leases = leases.len(), "revoked the check's token");
                }
                Ok(Err(e)) => {
                    cleanup.failed += 1;
                    tracing::warn!(error = %e, "cannot revoke the check's token; it expires with its TTL");
                }
                Err(_) => {
                    cleanup.failed += 1;
                    tracing::warn!("revoking the check's token timed out; it expires with its TTL");
                }
            }
            return cleanup;
        }
        for lease in leases {
            let id = truncate_id(&lease.id);
            match tokio::time::timeout(BOUND, self.api.revoke_lease(token, &lease.id)).await {
                Ok(Ok(())) => {
                    cleanup.leases_revoked += 1;
                    tracing::info!(lease = %id, "revoked lease");
                }
                Ok(Err(e)) => {
                    cleanup.failed += 1;
                    tracing::warn!(lease = %id, error = %e, "cannot revoke lease; it expires with its TTL");
                }
                Err(_) => {
                    cleanup.failed += 1;
                    tracing::warn!(lease = %id, "revoking a lease timed out; it expires with its TTL");
                }
            }
        }
        cleanup
    }
}
