//! The Vault HTTP API as the sidecar uses it: the [`VaultApi`] seam and its reqwest client.
//!
//! Responses are parsed leniently with our own types (every field optional) so that the
//! client works with HashiCorp Vault and Vault-compatible servers such as RustyVault,
//! which omit `request_id`/`accessor` and answer errors as `{"error": "..."}` instead of
//! `{"errors": [...]}`. Not `vaultrs`: re-evaluated against OpenBao in issue 14, it lacks
//! the lease and mount calls, drops leases on reads and costs binary size and memory
//! (`docs/sidecar.md`, "Why not vaultrs").
//! Secret payloads go straight into [`SecretData`]/[`Secret`]; the raw body buffer is
//! zeroised after parsing.

use std::future::Future;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use zeroize::Zeroize;

use crate::secret::{Secret, SecretData};

/// A lease on a dynamic secret (or a token's TTL, which renews the same way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Vault lease id; not a secret, but logged truncated (see [`truncate_id`]).
    pub id: String,
    /// TTL granted by the last issue or renewal.
    pub duration: Duration,
    pub renewable: bool,
}

/// A secret read: its data, and its lease when the backend issued one.
#[derive(Debug)]
pub struct ReadResponse {
    pub data: SecretData,
    pub lease: Option<Lease>,
}

/// The `auth` block of a login or renewal.
#[derive(Debug)]
pub struct AuthInfo {
    pub token: Secret,
    pub accessor: Option<String>,
    pub lease_duration: Duration,
    pub renewable: bool,
    pub policies: Vec<String>,
}

/// What `lookup-self` tells about the current token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Remaining TTL (Vault) or initial TTL (RustyVault); zero means it never expires.
    pub ttl: Duration,
    /// `None` when the server does not say (RustyVault).
    pub renewable: Option<bool>,
}

/// `sys/wrapping/lookup`: where a wrapping token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappingInfo {
    pub creation_path: String,
    pub creation_ttl: Duration,
}

/// `sys/internal/ui/mounts/<path>`: which mount a path belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Mount path with a trailing slash, e.g. `secret/`.
    pub path: String,
    /// Engine type, e.g. `kv`, `database`.
    pub kind: String,
    /// KV version from `options.version`, when the mount says.
    pub kv_version: Option<u8>,
}

/// A failed Vault call. Carries paths and server messages, never secret values.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{path}: permission denied")]
    PermissionDenied { path: String },
    #[error("{path}: not found")]
    NotFound { path: String },
    #[error("{path}: Vault is sealed or unavailable (HTTP {status})")]
    Unavailable { path: String, status: u16 },
    #[error("{path}: HTTP {status}: {message}")]
    Status {
        path: String,
        status: u16,
        message: String,
    },
    #[error("{path}: cannot reach Vault")]
    Transport {
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{path}: unexpected response: {reason}")]
    Parse { path: String, reason: String },
}

impl VaultError {
    /// Worth retrying at start: sealed, standby, 5xx, or the server not reachable yet.
    /// Permission denied, not found and other 4xx are answers, not outages.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::Transport { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            Self::PermissionDenied { .. } | Self::NotFound { .. } | Self::Parse { .. } => false,
        }
    }

    /// The path of the request that failed.
    pub fn path(&self) -> &str {
        match self {
            Self::PermissionDenied { path }
            | Self::NotFound { path }
            | Self::Unavailable { path, .. }
            | Self::Status { path, .. }
            | Self::Transport { path, .. }
            | Self::Parse { path, .. } => path,
        }
    }

    /// What went wrong, without the path: for messages that name the path themselves.
    pub fn reason(&self) -> String {
        match self {
            Self::PermissionDenied { .. } => "permission denied".into(),
            Self::NotFound { .. } => "not found".into(),
            Self::Unavailable { status, .. } => {
                format!("Vault is sealed or unavailable (HTTP {status})")
            }
            Self::Status {
                status, message, ..
            } => format!("HTTP {status}: {message}"),
            Self::Transport { .. } => "cannot reach Vault".into(),
            Self::Parse { reason, .. } => format!("unexpected response: {reason}"),
        }
    }

    /// HTTP status when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::PermissionDenied { .. } => Some(403),
            Self::NotFound { .. } => Some(404),
            Self::Unavailable { status, .. } | Self::Status { status, .. } => Some(*status),
            Self::Transport { .. } | Self::Parse { .. } => None,
        }
    }
}

/// The calls the sidecar makes. A trait so the renewal loop can be tested against an
/// in-memory fake under paused tokio time, and the resolver against a stub server.
pub trait VaultApi: Send + Sync {
    /// `POST auth/<mount>/login` with the given fields (their values are secrets).
    fn login(
        &self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> impl Future<Output = Result<AuthInfo, VaultError>> + Send;
    fn lookup_self(
        &self,
        token: &Secret,
    ) -> impl Future<Output = Result<TokenInfo, VaultError>> + Send;
    fn renew_self(
        &self,
        token: &Secret,
        increment: Duration,
    ) -> impl Future<Output = Result<AuthInfo, VaultError>> + Send;
    fn revoke_self(&self, token: &Secret) -> impl Future<Output = Result<(), VaultError>> + Send;
    /// `Ok(None)` when the server does not serve the endpoint (RustyVault: 404).
    fn mount_info(
        &self,
        token: &Secret,
        path: &str,
    ) -> impl Future<Output = Result<Option<MountInfo>, VaultError>> + Send;
    fn read(
        &self,
        token: &Secret,
        path: &str,
        version: Option<u32>,
    ) -> impl Future<Output = Result<ReadResponse, VaultError>> + Send;
    fn renew_lease(
        &self,
        token: &Secret,
        lease_id: &str,
        increment: Duration,
    ) -> impl Future<Output = Result<Lease, VaultError>> + Send;
    fn revoke_lease(
        &self,
        token: &Secret,
        lease_id: &str,
    ) -> impl Future<Output = Result<(), VaultError>> + Send;
    fn wrapping_lookup(
        &self,
        wrapping_token: &Secret,
    ) -> impl Future<Output = Result<WrappingInfo, VaultError>> + Send;
    /// `sys/wrapping/unwrap` authenticated with the wrapping token itself; returns `data`.
    fn unwrap(
        &self,
        wrapping_token: &Secret,
    ) -> impl Future<Output = Result<SecretData, VaultError>> + Send;
}

/// Where and how to reach Vault.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// Base address, e.g. `https://vault.service:8200` (no `/v1`).
    pub addr: String,
    /// Enterprise namespace, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// PEM file with extra CA certificates to trust.
    pub ca_cert: Option<std::path::PathBuf>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Errors building the client (bad CA file, bad address).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Trust(#[from] crate::transport::TrustError),
    #[error("invalid Vault address {addr:?}: must start with http:// or https://")]
    Addr { addr: String },
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
}

/// The real client.
#[derive(Debug, Clone)]
pub struct HttpVault {
    http: reqwest::Client,
    base: String,
    namespace: Option<String>,
}

impl HttpVault {
    pub fn new(config: &VaultConfig) -> Result<Self, ClientError> {
        let addr = config.addr.trim_end_matches('/');
        if !(addr.starts_with("http://") || addr.starts_with("https://")) {
            return Err(ClientError::Addr {
                addr: config.addr.clone(),
            });
        }
        let builder = crate::transport::client_builder(config.ca_cert.as_deref())?
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("baton-env/", env!("CARGO_PKG_VERSION")));
        Ok(Self {
            http: builder.build().map_err(ClientError::Build)?,
            base: format!("{addr}/v1/"),
            namespace: config.namespace.clone().filter(|n| !n.is_empty()),
        })
    }

    /// One request. `Ok(None)` for an empty success body (204).
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<Value>,
    ) -> Result<Option<Envelope>, VaultError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.header("X-Vault-Token", token.expose());
        }
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(mut body) = body {
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            crate::secret::zeroize_value(&mut body);
            req = req.header("Content-Type", "application/json").body(bytes);
        }
        let resp = req.send().await.map_err(|source| VaultError::Transport {
            path: path.to_owned(),
            source,
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|source| VaultError::Transport {
            path: path.to_owned(),
            source,
        })?;
        // Unique `Bytes` convert into a Vec without copying, so this zeroises the buffer.
        let mut body: Vec<u8> = body.into();
        let result = interpret(path, status, &body);
        body.zeroize();
        result
    }
}

/// Lenient envelope: Vault and RustyVault agree on these names, not on which are present.
#[derive(Default, Deserialize)]
struct Envelope {
    #[serde(default)]
    lease_id: Option<String>,
    #[serde(default)]
    lease_duration: Option<u64>,
    #[serde(default)]
    renewable: Option<bool>,
    #[serde(default)]
    data: Option<Map<String, Value>>,
    #[serde(default)]
    auth: Option<RawAuth>,
}

#[derive(Deserialize)]
struct RawAuth {
    client_token: String,
    #[serde(default)]
    accessor: Option<String>,
    #[serde(default)]
    policies: Option<Vec<String>>,
    #[serde(default)]
    lease_duration: Option<u64>,
    #[serde(default)]
    renewable: Option<bool>,
}

/// Error bodies: Vault `{"errors": [..]}`, RustyVault `{"error": ".."}`, or empty.
#[derive(Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Option<Vec<String>>,
    #[serde(default)]
    error: Option<String>,
}

fn interpret(path: &str, status: StatusCode, body: &[u8]) -> Result<Option<Envelope>, VaultError> {
    if status.is_success() {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        return serde_json::from_slice::<Envelope>(body)
            .map(Some)
            .map_err(|e| VaultError::Parse {
                path: path.to_owned(),
                reason: parse_reason(&e),
            });
    }
    let path = path.to_owned();
    let code = status.as_u16();
    match code {
        403 => Err(VaultError::PermissionDenied { path }),
        404 => Err(VaultError::NotFound { path }),
        503 => Err(VaultError::Unavailable { path, status: code }),
        _ => Err(VaultError::Status {
            path,
            status: code,
            message: error_message(body),
        }),
    }
}

/// What went wrong parsing a response, without serde's message: for a wrong type that
/// message quotes the value (`invalid type: string "<secret>", expected ...`), and the value
/// may be a secret. Only the category and the position are kept.
fn parse_reason(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "JSON of an unexpected shape",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

fn error_message(body: &[u8]) -> String {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let mut msg = match (parsed.errors, parsed.error) {
        (Some(errors), _) if !errors.is_empty() => errors.join("; "),
        (_, Some(error)) => error,
        _ => String::from("(no message)"),
    };
    // Bound what a misbehaving server can push into our logs.
    if msg.len() > 300 {
        let mut cut = 300;
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg.truncate(cut);
        msg.push('…');
    }
    msg
}

fn lease_of(env: &Envelope) -> Option<Lease> {
    let id = env.lease_id.as_deref().unwrap_or("");
    if id.is_empty() {
        return None;
    }
    Some(Lease {
        id: id.to_owned(),
        duration: Duration::from_secs(env.lease_duration.unwrap_or(0)),
        renewable: env.renewable.unwrap_or(false),
    })
}

fn need(path: &str, env: Option<Envelope>) -> Result<Envelope, VaultError> {
    env.ok_or_else(|| VaultError::Parse {
        path: path.to_owned(),
        reason: "empty body".into(),
    })
}

fn auth_of(path: &str, env: Envelope) -> Result<AuthInfo, VaultError> {
    let auth = env.auth.ok_or_else(|| VaultError::Parse {
        path: path.to_owned(),
        reason: "no `auth` in response".into(),
    })?;
    Ok(AuthInfo {
        token: Secret::new(auth.client_token),
        accessor: auth.accessor.filter(|a| !a.is_empty()),
        lease_duration: Duration::from_secs(auth.lease_duration.unwrap_or(0)),
        renewable: auth.renewable.unwrap_or(false),
        policies: auth.policies.unwrap_or_default(),
    })
}

fn data_of(env: &mut Envelope) -> SecretData {
    SecretData::new(env.data.take().unwrap_or_default())
}

fn str_field(data: &SecretData, key: &str) -> Option<String> {
    data.raw(key).and_then(Value::as_str).map(str::to_owned)
}

fn secs_field(data: &SecretData, key: &str) -> Option<Duration> {
    let v = data.raw(key)?;
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .map(Duration::from_secs)
}

impl VaultApi for HttpVault {
    async fn login(&self, path: &str, fields: &[(&str, &str)]) -> Result<AuthInfo, VaultError> {
        let body: Map<String, Value> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect();
        let env = self
            .call(Method::POST, path, None, Some(Value::Object(body)))
            .await?;
        auth_of(path, need(path, env)?)
    }

    async fn lookup_self(&self, token: &Secret) -> Result<TokenInfo, VaultError> {
        let path = "auth/token/lookup-self";
        let mut env = need(path, self.call(Method::GET, path, Some(token), None).await?)?;
        let data = data_of(&mut env);
        Ok(TokenInfo {
            ttl: secs_field(&data, "ttl").unwrap_or_default(),
            renewable: data.raw("renewable").and_then(Value::as_bool),
        })
    }

    async fn renew_self(
        &self,
        token: &Secret,
        increment: Duration,
    ) -> Result<AuthInfo, VaultError> {
        let path = "auth/token/renew-self";
        let body = json!({ "increment": increment.as_secs() });
        let env = self
            .call(Method::POST, path, Some(token), Some(body))
            .await?;
        auth_of(path, need(path, env)?)
    }

    async fn revoke_self(&self, token: &Secret) -> Result<(), VaultError> {
        let path = "auth/token/revoke-self";
        self.call(Method::POST, path, Some(token), None).await?;
        Ok(())
    }

    async fn mount_info(
        &self,
        token: &Secret,
        path: &str,
    ) -> Result<Option<MountInfo>, VaultError> {
        let api_path = format!("sys/internal/ui/mounts/{path}");
        let mut env = match self.call(Method::GET, &api_path, Some(token), None).await {
            Ok(env) => need(&api_path, env)?,
            Err(VaultError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let data = data_of(&mut env);
        let Some(mount) = str_field(&data, "path") else {
            return Ok(None);
        };
        let kv_version = data
            .raw("options")
            .and_then(|o| o.get("version"))
            .and_then(|v| {
                v.as_str()
                    .and_then(|s| s.parse().ok())
                    .or(v.as_u64().map(|n| n as u8))
            });
        Ok(Some(MountInfo {
            path: mount,
            kind: str_field(&data, "type").unwrap_or_default(),
            kv_version,
        }))
    }

    async fn read(
        &self,
        token: &Secret,
        path: &str,
        version: Option<u32>,
    ) -> Result<ReadResponse, VaultError> {
        let api_path = match version {
            Some(v) => format!("{path}?version={v}"),
            None => path.to_owned(),
        };
        let env = self.call(Method::GET, &api_path, Some(token), None).await;
        // Report the path as the user wrote it, without the query.
        let mut env = match env {
            Ok(env) => need(path, env)?,
            Err(VaultError::NotFound { .. }) => {
                return Err(VaultError::NotFound {
                    path: path.to_owned(),
                })
            }
            Err(e) => return Err(e),
        };
        let lease = lease_of(&env);
        Ok(ReadResponse {
            data: data_of(&mut env),
            lease,
        })
    }

    async fn renew_lease(
        &self,
        token: &Secret,
        lease_id: &str,
        increment: Duration,
    ) -> Result<Lease, VaultError> {
        let path = "sys/leases/renew";
        let body = json!({ "lease_id": lease_id, "increment": increment.as_secs() });
        let env = need(
            path,
            self.call(Method::PUT, path, Some(token), Some(body))
                .await?,
        )?;
        lease_of(&env).ok_or_else(|| VaultError::Parse {
            path: path.to_owned(),
            reason: "no lease_id in renewal".into(),
        })
    }

    async fn revoke_lease(&self, token: &Secret, lease_id: &str) -> Result<(), VaultError> {
        let path = "sys/leases/revoke";
        let body = json!({ "lease_id": lease_id });
        self.call(Method::PUT, path, Some(token), Some(body))
            .await?;
        Ok(())
    }

    async fn wrapping_lookup(&self, wrapping_token: &Secret) -> Result<WrappingInfo, VaultError> {
        let path = "sys/wrapping/lookup";
        let body = json!({ "token": wrapping_token.expose() });
        let mut env = need(path, self.call(Method::POST, path, None, Some(body)).await?)?;
        let data = data_of(&mut env);
        Ok(WrappingInfo {
            creation_path: str_field(&data, "creation_path").unwrap_or_default(),
            creation_ttl: secs_field(&data, "creation_ttl").unwrap_or_default(),
        })
    }

    async fn unwrap(&self, wrapping_token: &Secret) -> Result<SecretData, VaultError> {
        let path = "sys/wrapping/unwrap";
        let mut env = need(
            path,
            self.call(Method::POST, path, Some(wrapping_token), None)
                .await?,
        )?;
        Ok(data_of(&mut env))
    }
}

/// A lease id for logs: the path part and the first characters of the random suffix,
/// enough to correlate with Vault's audit log without handing out the full id.
pub fn truncate_id(id: &str) -> String {
    match id.rsplit_once('/') {
        Some((prefix, last)) => format!("{prefix}/{}…", last.chars().take(8).collect::<String>()),
        None => format!("{}…", id.chars().take(8).collect::<String>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_from_vault_and_rustyvault_bodies() {
        let vault = interpret(
            "p",
            StatusCode::BAD_REQUEST,
            br#"{"errors":["invalid role or secret ID"]}"#,
        );
        assert!(
            matches!(vault, Err(VaultError::Status { status: 400, ref message, .. }) if message == "invalid role or secret ID")
        );
        let rusty = interpret(
            "p",
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid secret id"}"#,
        );
        assert!(
            matches!(rusty, Err(VaultError::Status { ref message, .. }) if message == "invalid secret id")
        );
        assert!(matches!(
            interpret("p", StatusCode::FORBIDDEN, b""),
            Err(VaultError::PermissionDenied { .. })
        ));
        let sealed = interpret(
            "p",
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"errors":["Vault is sealed"]}"#,
        );
        assert!(sealed.as_ref().is_err_and(VaultError::is_retryable));
        let five = interpret("p", StatusCode::INTERNAL_SERVER_ERROR, b"");
        assert!(five.as_ref().is_err_and(VaultError::is_retryable));
        let denied = interpret("p", StatusCode::FORBIDDEN, b"");
        assert!(!denied.as_ref().is_err_and(VaultError::is_retryable));
    }

    #[test]
    fn rustyvault_shapes_parse() {
        // Observed from rvault 0.2.1: no request_id, no accessor.
        let body = br#"{"renewable":true,"lease_id":"","lease_duration":3600,"auth":{"client_token":"t","policies":["default"],"metadata":{"role_name":"r"},"lease_duration":60,"renewable":true},"data":null}"#;
        let env = interpret("auth/approle/login", StatusCode::OK, body)
            .unwrap()
            .unwrap();
        let auth = auth_of("x", env).unwrap();
        assert_eq!(auth.lease_duration, Duration::from_secs(60));
        assert!(auth.accessor.is_none());
        assert!(interpret("x", StatusCode::NO_CONTENT, b"")
            .unwrap()
            .is_none());
    }

    #[test]
    fn truncated_lease_ids_keep_the_path() {
        assert_eq!(
            truncate_id("database/creds/app/2f6a614c-4aa2-7b19-24b9-ad944a8d4de6"),
            "database/creds/app/2f6a614c…"
        );
        assert_eq!(truncate_id("abcdefghijkl"), "abcdefgh…");
    }

    #[test]
    fn parse_errors_never_echo_a_value() {
        // A Vault-compatible server answering `data` with a string (or a TTL with text):
        // serde would say `invalid type: string "s3cr3t-canary-value", expected a map`.
        for body in [
            &br#"{"lease_id":"","data":"s3cr3t-canary-value"}"#[..],
            br#"{"lease_duration":"s3cr3t-canary-value","data":{}}"#,
            br#"{"auth":{"client_token":["s3cr3t-canary-value"]}}"#,
            br#"{"data":{"password":"s3cr3t-canary-value"#,
        ] {
            let e = interpret("database/creds/app", StatusCode::OK, body)
                .err()
                .expect("a parse error");
            assert!(matches!(e, VaultError::Parse { .. }), "{e:?}");
            let shown = format!("{e} / {e:?} / {}", crate::chain(&e));
            assert!(!shown.contains("s3cr3t"), "a value leaked: {shown}");
            assert!(
                shown.contains("database/creds/app") && shown.contains("line 1"),
                "{shown}"
            );
        }
    }
}
