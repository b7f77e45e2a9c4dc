//! Logging in to Vault: token, AppRole (plain or response-wrapped secret id), JWT, and
//! the gatekeeper seam. Every method ends in a [`VaultToken`] whose token is a [`Secret`].
//!
//! A wrapped secret id is first looked up (`sys/wrapping/lookup`) to check it was minted
//! by `auth/<mount>/role/<name>/secret-id`, then unwrapped. Wrapping tokens are single
//! use, so a lookup or unwrap that says "invalid token" means someone else may have
//! unwrapped it first: that is reported as a security alarm, never silently retried.

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;

use crate::retry::{retry, RetryPolicy};
use crate::secret::Secret;
use crate::vault::{VaultApi, VaultError};

/// How to obtain a Vault token.
#[derive(Debug, Clone)]
pub enum AuthMethod {
    /// A token given to us (VAULT_TOKEN or a token file).
    Token(Secret),
    AppRole {
        /// Auth mount path, usually `approle`.
        mount: String,
        role_id: Secret,
        secret_id: SecretIdSource,
    },
    Jwt {
        mount: String,
        role: String,
        jwt: JwtSource,
    },
    /// Secret-zero via a gatekeeper service (see [`GatekeeperApi`]).
    Gatekeeper {
        /// AppRole mount the gatekeeper's secret ids belong to.
        mount: String,
        task_id: String,
        app_id: String,
        /// The role the wrapped secret id must come from (`BATON_APPROLE_ROLE`, required):
        /// pins the wrapping token's `creation_path` to `auth/<mount>/role/<role>/secret-id`,
        /// so a wrap minted for another role on the same mount is refused.
        role: String,
        /// The role id the gatekeeper must answer with (`BATON_ROLE_ID`), when known.
        role_id: Option<Secret>,
    },
}

impl AuthMethod {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Token(_) => "token",
            Self::AppRole {
                secret_id: SecretIdSource::Wrapped(_),
                ..
            } => "approle (wrapped secret id)",
            Self::AppRole { .. } => "approle",
            Self::Jwt { .. } => "jwt",
            Self::Gatekeeper { .. } => "gatekeeper",
        }
    }

    /// Whether logging in again later is possible (single-use material is not).
    pub fn can_relogin(&self) -> bool {
        match self {
            Self::Token(_) | Self::Gatekeeper { .. } => false,
            Self::AppRole { secret_id, .. } => matches!(secret_id, SecretIdSource::Plain(_)),
            Self::Jwt { .. } => true,
        }
    }
}

/// Where the JWT of a `jwt` login comes from.
#[derive(Debug, Clone)]
pub enum JwtSource {
    Given(Secret),
    /// Read again at every login: workload identity issuers rotate the file's token.
    File(std::path::PathBuf),
}

impl JwtSource {
    fn current(&self) -> Result<Secret, AuthError> {
        match self {
            Self::Given(s) => Ok(s.clone()),
            Self::File(path) => {
                let mut raw = std::fs::read_to_string(path).map_err(|e| AuthError::JwtFile {
                    path: path.clone(),
                    reason: e.kind().to_string(),
                })?;
                let jwt = Secret::new(raw.trim().to_owned());
                zeroize::Zeroize::zeroize(&mut raw);
                Ok(jwt)
            }
        }
    }
}

/// Where an AppRole secret id comes from.
#[derive(Debug, Clone)]
pub enum SecretIdSource {
    Plain(Secret),
    /// A response-wrapping token whose wrapped response holds `secret_id`.
    Wrapped(Secret),
}

/// The token baton-env works with.
pub struct VaultToken {
    pub token: Secret,
    /// Not a credential, but with `lookup-accessor`/`revoke-accessor` rights it names the token:
    /// shown truncated in Debug, like the gatekeeper's records.
    pub accessor: Option<String>,
    /// TTL at issue; `None` when unknown (a given token not looked up yet), zero = never expires.
    pub ttl: Option<Duration>,
    pub renewable: bool,
}

impl std::fmt::Debug for VaultToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultToken")
            .field("token", &self.token)
            .field(
                "accessor",
                &self.accessor.as_deref().map(crate::vault::truncate_id),
            )
            .field("ttl", &self.ttl)
            .field("renewable", &self.renewable)
            .finish()
    }
}

/// Login failures. None of them carries a token, secret id or JWT.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{method} login failed")]
    Login {
        method: &'static str,
        #[source]
        source: VaultError,
    },
    #[error(
        "SECURITY ALARM: the wrapped secret id could not be unwrapped; the wrapping token is \
         invalid, expired or was already used, so it may have been intercepted"
    )]
    UnwrapFailed {
        #[source]
        source: VaultError,
    },
    #[error(
        "SECURITY ALARM: the wrapping token was created at {actual:?}, expected \
         auth/{mount}/role/<role>/secret-id; possible substitution"
    )]
    WrongCreationPath { mount: String, actual: String },
    #[error("the unwrapped response holds no secret_id")]
    NoSecretId,
    /// A given token that Vault refuses outright: `lookup-self` and every read were denied.
    #[error(
        "the Vault token was refused: auth/token/lookup-self and every read answered permission \
         denied (the token is invalid, expired or revoked)"
    )]
    TokenRefused,
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error("cannot read the JWT file {}: {reason}", .path.display())]
    JwtFile {
        path: std::path::PathBuf,
        reason: String,
    },
    /// The gatekeeper refused (403) or answered something unusable.
    #[error("gatekeeper request failed: {0}")]
    Gatekeeper(String),
    /// The gatekeeper was unreachable, overloaded (429) or failing (5xx) for longer than
    /// `--max-wait`.
    #[error("gatekeeper unavailable: {0}")]
    GatekeeperUnavailable(String),
    /// The gatekeeper answered 429 with `Retry-After: <seconds>`: ask again after that long.
    #[error("gatekeeper busy (HTTP 429), retry after {}s", .retry_after.as_secs())]
    GatekeeperThrottled { retry_after: Duration },
    #[error(
        "SECURITY ALARM: the gatekeeper answered with a role id other than the one configured \
         (BATON_ROLE_ID); possible substitution"
    )]
    RoleIdMismatch,
}

impl AuthError {
    /// Whether Vault was simply not reachable in time (vs. a refusal).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Login { source, .. } if source.is_retryable())
            || matches!(
                self,
                Self::GatekeeperUnavailable(_) | Self::GatekeeperThrottled { .. }
            )
    }

    pub fn is_security_alarm(&self) -> bool {
        matches!(
            self,
            Self::UnwrapFailed { .. } | Self::WrongCreationPath { .. } | Self::RoleIdMismatch
        )
    }
}

/// What a gatekeeper hands out for one task start.
pub struct GatekeeperGrant {
    pub wrap_token: Secret,
    pub role_id: Secret,
}

/// The secret-zero seam: a service that vouches for a task and returns a wrapped secret
/// id. The sidecar POSTs `{"task_id","app_id"}` and gets `{"wrap_token","role_id"}`.
pub trait GatekeeperApi: Send + Sync {
    fn grant(
        &self,
        task_id: &str,
        app_id: &str,
    ) -> impl Future<Output = Result<GatekeeperGrant, AuthError>> + Send;

    /// Tells the gatekeeper the accessor of the token the task logged in with, so that the
    /// reconciler can revoke it (and its leases) if the task dies without doing so
    /// (`POST <gatekeeper url>/accessor {"task_id","app_id","accessor"}`). The default does
    /// nothing (a gatekeeper without a lease sweep).
    fn report_accessor(
        &self,
        _task_id: &str,
        _app_id: &str,
        _accessor: &str,
    ) -> impl Future<Output = Result<(), AuthError>> + Send {
        async { Ok(()) }
    }
}

/// The gatekeeper over HTTP.
#[derive(Debug, Clone)]
pub struct HttpGatekeeper {
    pub http: reqwest::Client,
    pub url: String,
}

impl GatekeeperApi for HttpGatekeeper {
    async fn grant(&self, task_id: &str, app_id: &str) -> Result<GatekeeperGrant, AuthError> {
        #[derive(Deserialize)]
        struct Reply {
            wrap_token: String,
            role_id: String,
        }
        let err = |e: reqwest::Error| AuthError::Gatekeeper(e.without_url().to_string());
        let resp = self
            .http
            .post(&self.url)
            .json(&serde_json::json!({ "task_id": task_id, "app_id": app_id }))
            .send()
            .await
            .map_err(|e| AuthError::GatekeeperUnavailable(e.without_url().to_string()))?;
        let status = resp.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
            return Err(match retry_after {
                Some(retry_after) => AuthError::GatekeeperThrottled { retry_after },
                None => AuthError::GatekeeperUnavailable(format!("HTTP {status}")),
            });
        }
        if status.is_server_error() {
            return Err(AuthError::GatekeeperUnavailable(format!("HTTP {status}")));
        }
        if !status.is_success() {
            return Err(AuthError::Gatekeeper(format!("HTTP {status}")));
        }
        let reply: Reply = resp.json().await.map_err(err)?;
        Ok(GatekeeperGrant {
            wrap_token: Secret::new(reply.wrap_token),
            role_id: Secret::new(reply.role_id),
        })
    }

    async fn report_accessor(
        &self,
        task_id: &str,
        app_id: &str,
        accessor: &str,
    ) -> Result<(), AuthError> {
        let url = format!("{}/accessor", self.url.trim_end_matches('/'));
        let body =
            serde_json::json!({ "task_id": task_id, "app_id": app_id, "accessor": accessor });
        let resp = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| AuthError::GatekeeperUnavailable(e.without_url().to_string()))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(AuthError::GatekeeperUnavailable(format!("HTTP {status}")))
        } else {
            Err(AuthError::Gatekeeper(format!("HTTP {status}")))
        }
    }
}

/// `Retry-After` (RFC 9110 §10.2.3) as a wait from `now`: delta-seconds, or an HTTP-date (a
/// proxy in front of the gatekeeper may send one; a date already past means at once). `None`
/// for anything else: the caller falls back to its own backoff.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A gatekeeper for builds without one configured.
pub struct NoGatekeeper;

impl GatekeeperApi for NoGatekeeper {
    async fn grant(&self, _: &str, _: &str) -> Result<GatekeeperGrant, AuthError> {
        Err(AuthError::Gatekeeper("no gatekeeper URL configured".into()))
    }
}

/// Logs in with `method`. Unavailable/sealed/5xx answers are retried per `policy`
/// (except the unwrap itself, which is single use).
pub async fn login<V: VaultApi, G: GatekeeperApi>(
    api: &V,
    gatekeeper: &G,
    method: &AuthMethod,
    policy: &RetryPolicy,
) -> Result<VaultToken, AuthError> {
    let name = method.name();
    let fail = |source| AuthError::Login {
        method: name,
        source,
    };
    match method {
        AuthMethod::Token(token) => {
            if token.is_empty() {
                return Err(AuthError::Empty("the Vault token"));
            }
            Ok(VaultToken {
                token: token.clone(),
                accessor: None,
                ttl: None,
                renewable: true,
            })
        }
        AuthMethod::AppRole {
            mount,
            role_id,
            secret_id,
        } => {
            if role_id.is_empty() {
                return Err(AuthError::Empty("the AppRole role id"));
            }
            let secret_id = match secret_id {
                SecretIdSource::Plain(s) if s.is_empty() => {
                    return Err(AuthError::Empty("the AppRole secret id"))
                }
                SecretIdSource::Plain(s) => s.clone(),
                SecretIdSource::Wrapped(w) => unwrap_secret_id(api, mount, None, w, policy).await?,
            };
            approle_login(api, mount, role_id, &secret_id, policy)
                .await
                .map_err(fail)
        }
        AuthMethod::Jwt { mount, role, jwt } => {
            let jwt = jwt.current()?;
            if jwt.is_empty() {
                return Err(AuthError::Empty("the JWT"));
            }
            let path = format!("auth/{mount}/login");
            let fields = [("role", role.as_str()), ("jwt", jwt.expose())];
            let auth = retry(policy, "jwt login", || api.login(&path, &fields))
                .await
                .map_err(fail)?;
            Ok(token_of(auth))
        }
        AuthMethod::Gatekeeper {
            mount,
            task_id,
            app_id,
            role,
            role_id,
        } => {
            if role.is_empty() {
                return Err(AuthError::Empty("the AppRole role (BATON_APPROLE_ROLE)"));
            }
            let grant = grant_with_retry(gatekeeper, task_id, app_id, policy).await?;
            if let Some(pinned) = role_id.as_ref().filter(|r| !r.is_empty()) {
                if pinned.expose() != grant.role_id.expose() {
                    return Err(AuthError::RoleIdMismatch);
                }
            }
            let secret_id =
                unwrap_secret_id(api, mount, Some(role), &grant.wrap_token, policy).await?;
            let token = approle_login(api, mount, &grant.role_id, &secret_id, policy)
                .await
                .map_err(fail)?;
            report_accessor(gatekeeper, task_id, app_id, &token, policy).await;
            Ok(token)
        }
    }
}

/// Reports the new token's accessor to the gatekeeper (for its lease sweep), best effort: up
/// to [`REPORT_ATTEMPTS`] tries while the gatekeeper is unavailable, within `policy`'s
/// deadline. A failure is a warning: the token's TTL still bounds what a task that dies
/// without revoking leaves behind.
async fn report_accessor<G: GatekeeperApi>(
    gatekeeper: &G,
    task_id: &str,
    app_id: &str,
    token: &VaultToken,
    policy: &RetryPolicy,
) {
    let Some(accessor) = token.accessor.as_deref().filter(|a| !a.is_empty()) else {
        tracing::warn!("the login answer has no token accessor: nothing to report to the gatekeeper's lease sweep (the token's TTL bounds it)");
        return;
    };
    let mut attempt = 0;
    loop {
        let why = match gatekeeper.report_accessor(task_id, app_id, accessor).await {
            Ok(()) => {
                tracing::debug!("token accessor reported to the gatekeeper");
                return;
            }
            Err(AuthError::GatekeeperUnavailable(why)) => why,
            Err(e) => {
                tracing::warn!(error = %e, "the gatekeeper refused the token accessor report; a task that dies without revoking leaves its token to its TTL");
                return;
            }
        };
        attempt += 1;
        let delay = policy.jittered(attempt);
        if attempt >= REPORT_ATTEMPTS || !policy.allows(delay) {
            tracing::warn!(reason = %why, "cannot report the token accessor to the gatekeeper; a task that dies without revoking leaves its token to its TTL");
            return;
        }
        tokio::time::sleep(delay).await;
    }
}

/// How often the accessor report is tried.
const REPORT_ATTEMPTS: u32 = 3;

async fn approle_login<V: VaultApi>(
    api: &V,
    mount: &str,
    role_id: &Secret,
    secret_id: &Secret,
    policy: &RetryPolicy,
) -> Result<VaultToken, VaultError> {
    let path = format!("auth/{mount}/login");
    let fields = [
        ("role_id", role_id.expose()),
        ("secret_id", secret_id.expose()),
    ];
    let auth = retry(policy, "approle login", || api.login(&path, &fields)).await?;
    Ok(token_of(auth))
}

fn token_of(auth: crate::vault::AuthInfo) -> VaultToken {
    VaultToken {
        token: auth.token,
        accessor: auth.accessor,
        ttl: Some(auth.lease_duration),
        renewable: auth.renewable,
    }
}

/// Asks the gatekeeper, retrying while it is unreachable, overloaded or failing.
///
/// Backoff as [`retry`]: exponential from `policy.base` doubling to `policy.cap`, each delay
/// drawn from [d/2, d] so tasks started together spread out. A 429 with `Retry-After: N`
/// waits N seconds (plus up to `policy.base` of jitter) instead. Gives up when the next
/// attempt would start after `policy.deadline` (`--max-wait` from start). A refusal (403)
/// is final at once.
async fn grant_with_retry<G: GatekeeperApi>(
    gatekeeper: &G,
    task_id: &str,
    app_id: &str,
    policy: &RetryPolicy,
) -> Result<GatekeeperGrant, AuthError> {
    use rand::Rng;
    let mut attempt = 0u32;
    loop {
        let (delay, why) = match gatekeeper.grant(task_id, app_id).await {
            Err(AuthError::GatekeeperUnavailable(why)) => (policy.jittered(attempt), why),
            Err(e @ AuthError::GatekeeperThrottled { retry_after }) => {
                let jitter = rand::thread_rng().gen_range(Duration::ZERO..=policy.base);
                (retry_after + jitter, e.to_string())
            }
            other => return other,
        };
        if !policy.allows(delay) {
            return Err(AuthError::GatekeeperUnavailable(format!(
                "{why}; gave up within --max-wait"
            )));
        }
        tracing::warn!(attempt, reason = %why, delay_ms = delay.as_millis() as u64, "gatekeeper not ready, retrying");
        attempt += 1;
        tokio::time::sleep(delay).await;
    }
}

/// Looks the wrapping token up, checks its origin (the given role's secret-id path when
/// `role` is pinned), and unwraps the secret id.
async fn unwrap_secret_id<V: VaultApi>(
    api: &V,
    mount: &str,
    role: Option<&str>,
    wrapping: &Secret,
    policy: &RetryPolicy,
) -> Result<Secret, AuthError> {
    if wrapping.is_empty() {
        return Err(AuthError::Empty("the wrapping token"));
    }
    let alarm_or_login = |source: VaultError| {
        if source.is_retryable() {
            AuthError::Login {
                method: "approle (wrapped secret id)",
                source,
            }
        } else {
            AuthError::UnwrapFailed { source }
        }
    };
    let info = retry(policy, "wrapping lookup", || api.wrapping_lookup(wrapping))
        .await
        .map_err(alarm_or_login)?;
    let expected = role.map(|r| format!("auth/{}/role/{r}/secret-id", mount.trim_matches('/')));
    let origin_ok = match &expected {
        Some(path) => info.creation_path == *path,
        None => is_secret_id_path(mount, &info.creation_path),
    };
    if !origin_ok {
        return Err(AuthError::WrongCreationPath {
            mount: mount.to_owned(),
            actual: info.creation_path,
        });
    }
    let data = api.unwrap(wrapping).await.map_err(alarm_or_login)?;
    data.get("secret_id")
        .filter(|s| !s.is_empty())
        .ok_or(AuthError::NoSecretId)
}

/// `auth/<mount>/role/<name>/secret-id` (Vault also allows `custom-secret-id`, which a
/// gatekeeper would never use, so it is refused).
pub fn is_secret_id_path(mount: &str, path: &str) -> bool {
    let Some(rest) = path
        .strip_prefix("auth/")
        .and_then(|p| p.strip_prefix(mount.trim_matches('/')))
        .and_then(|p| p.strip_prefix("/role/"))
    else {
        return false;
    };
    match rest.strip_suffix("/secret-id") {
        Some(role) => !role.is_empty() && !role.contains('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_id_creation_paths() {
        assert!(is_secret_id_path(
            "approle",
            "auth/approle/role/web/secret-id"
        ));
        assert!(is_secret_id_path(
            "approle/",
            "auth/approle/role/web/secret-id"
        ));
        assert!(!is_secret_id_path(
            "approle",
            "auth/approle/role/web/custom-secret-id"
        ));
        assert!(!is_secret_id_path(
            "approle",
            "auth/approle/role//secret-id"
        ));
        assert!(!is_secret_id_path("approle", "secret/data/x"));
        assert!(!is_secret_id_path(
            "approle",
            "auth/other/role/web/secret-id"
        ));
        assert!(!is_secret_id_path(
            "approle",
            "auth/approle/role/a/b/secret-id"
        ));
    }

    #[test]
    fn debug_output_redacts_bootstrap_material() {
        let m = AuthMethod::AppRole {
            mount: "approle".into(),
            role_id: Secret::new("role-id-value".into()),
            secret_id: SecretIdSource::Wrapped(Secret::new("wrap-value".into())),
        };
        let dbg = format!("{m:?}");
        assert!(!dbg.contains("role-id-value") && !dbg.contains("wrap-value"));
    }

    #[test]
    fn retry_after_seconds_or_http_date() {
        use std::time::{SystemTime, UNIX_EPOCH};
        // Wed, 21 Oct 2015 07:28:00 GMT
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        // The two obsolete forms RFC 9110 still requires recipients to accept.
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:05 2015", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO),
            "a date already past: at once"
        );
        for junk in ["", "soon", "-1", "1.5", "Wed, 21 Oct 2015"] {
            assert_eq!(parse_retry_after(junk, SystemTime::now()), None, "{junk}");
        }
    }

    /// Answers 429 with the given Retry-After `n` times, then grants.
    struct Throttling {
        retry_after: Duration,
        left: std::sync::atomic::AtomicU32,
        calls: std::sync::Mutex<Vec<tokio::time::Instant>>,
    }

    impl GatekeeperApi for Throttling {
        async fn grant(&self, _: &str, _: &str) -> Result<GatekeeperGrant, AuthError> {
            use std::sync::atomic::Ordering;
            self.calls.lock().unwrap().push(tokio::time::Instant::now());
            if self.left.load(Ordering::SeqCst) > 0 {
                self.left.fetch_sub(1, Ordering::SeqCst);
                return Err(AuthError::GatekeeperThrottled {
                    retry_after: self.retry_after,
                });
            }
            Ok(GatekeeperGrant {
                wrap_token: Secret::new("w".into()),
                role_id: Secret::new("r".into()),
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_within_max_wait() {
        let gk = Throttling {
            retry_after: Duration::from_secs(3),
            left: 1.into(),
            calls: Default::default(),
        };
        let policy = RetryPolicy::new(Duration::from_secs(10));
        assert!(grant_with_retry(&gk, "t", "a", &policy).await.is_ok());
        let calls = gk.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 2);
        // Waited what the server asked (not the 100 ms of the first backoff step).
        let gap = calls[1] - calls[0];
        assert!(
            gap >= Duration::from_secs(3) && gap <= Duration::from_millis(3100),
            "{gap:?}"
        );

        // A Retry-After beyond --max-wait gives up at once, as unavailable (exit 69).
        let gk = Throttling {
            retry_after: Duration::from_secs(30),
            left: 5.into(),
            calls: Default::default(),
        };
        let start = tokio::time::Instant::now();
        let e = grant_with_retry(&gk, "t", "a", &RetryPolicy::new(Duration::from_secs(10)))
            .await
            .err()
            .unwrap();
        assert!(e.is_unavailable(), "{e}");
        assert_eq!(gk.calls.lock().unwrap().len(), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    /// Records accessor reports; unavailable for the first `fail` of them.
    #[derive(Default)]
    struct Reports {
        fail: std::sync::atomic::AtomicU32,
        got: std::sync::Mutex<Vec<(String, String, String)>>,
    }

    impl GatekeeperApi for Reports {
        async fn grant(&self, _: &str, _: &str) -> Result<GatekeeperGrant, AuthError> {
            Err(AuthError::Gatekeeper("not in this test".into()))
        }
        async fn report_accessor(&self, t: &str, a: &str, acc: &str) -> Result<(), AuthError> {
            use std::sync::atomic::Ordering;
            self.got
                .lock()
                .unwrap()
                .push((t.into(), a.into(), acc.into()));
            if self.fail.load(Ordering::SeqCst) > 0 {
                self.fail.fetch_sub(1, Ordering::SeqCst);
                return Err(AuthError::GatekeeperUnavailable("HTTP 503".into()));
            }
            Ok(())
        }
    }

    fn token(accessor: Option<&str>) -> VaultToken {
        VaultToken {
            token: Secret::new("tok".into()),
            accessor: accessor.map(str::to_owned),
            ttl: Some(Duration::from_secs(60)),
            renewable: true,
        }
    }

    #[test]
    fn neither_the_token_nor_the_accessor_shows_in_full_in_debug() {
        let mut t = token(Some("acc-1234567890abcdef"));
        t.token = Secret::new("s.very-secret-token".into());
        let text = format!("{t:?}");
        assert!(!text.contains("very-secret-token"), "{text}");
        assert!(!text.contains("acc-1234567890abcdef"), "{text}");
        assert!(text.contains("acc-1234"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_accessor_is_reported_with_a_few_retries_then_given_up() {
        let policy = RetryPolicy::new(Duration::from_secs(60));
        let gk = Reports {
            fail: 1.into(),
            ..Default::default()
        };
        report_accessor(&gk, "web.1", "/web", &token(Some("acc-1")), &policy).await;
        let got = gk.got.lock().unwrap().clone();
        let one = ("web.1".to_string(), "/web".to_string(), "acc-1".to_string());
        assert_eq!(got, [one.clone(), one.clone()], "retried once after a 503");

        // Always unavailable: given up after REPORT_ATTEMPTS, the start goes on.
        let gk = Reports {
            fail: 100.into(),
            ..Default::default()
        };
        report_accessor(&gk, "web.1", "/web", &token(Some("acc-1")), &policy).await;
        assert_eq!(gk.got.lock().unwrap().len(), REPORT_ATTEMPTS as usize);

        // No accessor in the login answer: nothing to report.
        let gk = Reports::default();
        report_accessor(&gk, "web.1", "/web", &token(None), &policy).await;
        assert!(gk.got.lock().unwrap().is_empty());
    }
}
