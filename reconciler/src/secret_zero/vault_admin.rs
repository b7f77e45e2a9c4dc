//! The reconciler's own Vault client (its own token, never an app's): reads and writes this
//! owner's `baton-<owner>_*` ACL policies and AppRole roles ([`baton_core::secrets`]; other `baton-*`
//! objects are only listed, never read or written), and mints response-wrapped secret ids for
//! the gatekeeper ([`crate::secret_zero::gatekeeper`]).
//!
//! Responses are parsed leniently (every field optional, `{"errors":[..]}` or `{"error":".."}`),
//! like the sidecar's client, so Vault-compatible servers work. A secret-id answer without
//! `wrap_info` (a server that ignores `X-Vault-Wrap-TTL`) is refused and its body dropped
//! unread: the reconciler never holds an unwrapped secret id.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use baton_core::plan::Action;
use baton_core::secrets::{self, LiveRole, LiveVault, ObjectKind, RoleSettings, VaultChange};

/// How to reach Vault as the reconciler.
#[derive(Clone)]
pub struct VaultAdminConfig {
    /// Base address without `/v1`.
    pub addr: String,
    /// The reconciler's token: needs the policy in `docs/security.md`.
    pub token: SecretString,
    /// AppRole mount, usually `approle`.
    pub approle_mount: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for VaultAdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultAdminConfig")
            .field("addr", &self.addr)
            .field("token", &"[REDACTED]")
            .field("approle_mount", &self.approle_mount)
            .finish()
    }
}

/// A failed Vault call: path and server message, never a token or secret id.
#[derive(Debug, thiserror::Error)]
pub enum VaultAdminError {
    /// Not sent: HA, and this replica does not hold the leader's write lease.
    #[error("{0}")]
    Fenced(#[from] crate::ha::NotLeader),
    #[error("cannot build the Vault client: {0}")]
    Client(String),
    #[error("{path}: cannot reach Vault: {reason}")]
    Unreachable { path: String, reason: String },
    #[error("{path}: Vault answered HTTP {status}: {message}")]
    Status {
        path: String,
        status: u16,
        message: String,
    },
    #[error("{path}: unexpected answer: {reason}")]
    Parse { path: String, reason: String },
    /// The server returned a plain secret id although wrapping was asked for.
    #[error("{path}: Vault did not wrap the secret id (no wrap_info); refusing to pass it on")]
    NotWrapped { path: String },
}

impl VaultAdminError {
    /// Vault down, sealed or failing: worth a retry later (vs. a refusal).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// A response-wrapped secret id, as handed to the sidecar.
#[derive(Debug)]
pub struct WrappedSecretId {
    /// The wrapping token (single use, short TTL).
    pub token: SecretString,
    pub accessor: String,
    pub ttl: Duration,
    /// Vault's `wrap_info.creation_path`, e.g. `auth/approle/role/<name>/secret-id`.
    pub creation_path: String,
}

/// What `auth/token/lookup-accessor` says of a token, as far as the lease sweep needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenInfo {
    /// The path that created it, e.g. `auth/approle/login`.
    pub path: String,
    /// Metadata `role_name` (set by AppRole).
    pub role_name: Option<String>,
    /// Metadata `task_id` (copied by AppRole from the secret id the gatekeeper minted).
    pub task_id: Option<String>,
}

/// How `auth/token/revoke-accessor` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// The token (and every lease it created) is revoked now.
    Revoked,
    /// Vault knows no token with this accessor (revoked or expired before).
    AlreadyGone,
}

/// The client.
#[derive(Debug, Clone)]
pub struct VaultAdmin {
    http: reqwest::Client,
    config: VaultAdminConfig,
    /// HA: the reconciler's Vault writes (policies, roles) need the leader's write lease.
    fence: Option<std::sync::Arc<crate::ha::Leadership>>,
}

type Result<T> = std::result::Result<T, VaultAdminError>;

impl VaultAdmin {
    pub fn new(config: VaultAdminConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| VaultAdminError::Client(e.to_string()))?;
        Ok(VaultAdmin {
            http,
            config,
            fence: None,
        })
    }

    /// HA: every policy and role write first takes a write permit ([`crate::ha::lease`]).
    pub fn with_fence(mut self, leadership: std::sync::Arc<crate::ha::Leadership>) -> Self {
        self.fence = Some(leadership);
        self
    }

    /// A write may go out now (standalone: always).
    fn permit(&self) -> Result<()> {
        match &self.fence {
            None => Ok(()),
            Some(l) => l.permit().map(drop).map_err(VaultAdminError::from),
        }
    }

    pub fn mount(&self) -> &str {
        self.config.approle_mount.trim_matches('/')
    }

    /// One request; `Ok(None)` for 404 (missing object, or an empty LIST).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        wrap_ttl: Option<Duration>,
    ) -> Result<Option<Value>> {
        let url = format!("{}/v1/{path}", self.config.addr.trim_end_matches('/'));
        let mut req = self
            .http
            .request(method, &url)
            .header("X-Vault-Token", self.config.token.expose_secret());
        if let Some(ttl) = wrap_ttl {
            req = req.header("X-Vault-Wrap-TTL", format!("{}s", ttl.as_secs().max(1)));
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| VaultAdminError::Unreachable {
            path: path.to_owned(),
            reason: e.without_url().to_string(),
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| VaultAdminError::Unreachable {
                path: path.to_owned(),
                reason: e.without_url().to_string(),
            })?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(VaultAdminError::Status {
                path: path.to_owned(),
                status: status.as_u16(),
                message: error_message(&bytes),
            });
        }
        if bytes.is_empty() {
            return Ok(Some(Value::Null));
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| VaultAdminError::Parse {
                path: path.to_owned(),
                reason: e.to_string(),
            })
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        let method = Method::from_bytes(b"LIST").unwrap_or(Method::GET);
        let v = self.call(method, path, None, None).await?;
        Ok(v.as_ref()
            .and_then(|v| v.pointer("/data/keys"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| s.trim_end_matches('/').to_owned())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `GET sys/policies/acl/<name>`: the policy text.
    pub async fn read_policy(&self, name: &str) -> Result<Option<String>> {
        let v = self
            .call(Method::GET, &format!("sys/policies/acl/{name}"), None, None)
            .await?;
        Ok(v.and_then(|v| {
            v.pointer("/data/policy")
                .or_else(|| v.get("policy"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        }))
    }

    /// `PUT sys/policies/acl/<name>`.
    pub async fn write_policy(&self, name: &str, text: &str) -> Result<()> {
        self.permit()?;
        self.call(
            Method::PUT,
            &format!("sys/policies/acl/{name}"),
            Some(&json!({ "policy": text })),
            None,
        )
        .await
        .map(drop)
    }

    /// `DELETE sys/policies/acl/<name>` (gone already is fine).
    pub async fn delete_policy(&self, name: &str) -> Result<()> {
        self.permit()?;
        self.call(
            Method::DELETE,
            &format!("sys/policies/acl/{name}"),
            None,
            None,
        )
        .await
        .map(drop)
    }

    fn role_path(&self, name: &str) -> String {
        format!("auth/{}/role/{name}", self.mount())
    }

    /// `GET auth/<mount>/role/<name>`: the settings Baton manages.
    pub async fn read_role(&self, name: &str) -> Result<Option<RoleSettings>> {
        let v = self
            .call(Method::GET, &self.role_path(name), None, None)
            .await?;
        Ok(v.map(|v| role_settings(v.get("data").unwrap_or(&Value::Null))))
    }

    /// `POST auth/<mount>/role/<name>` with the settings (and `role_id` on create).
    pub async fn write_role(&self, name: &str, body: &Value) -> Result<()> {
        self.permit()?;
        self.call(Method::POST, &self.role_path(name), Some(body), None)
            .await
            .map(drop)
    }

    pub async fn delete_role(&self, name: &str) -> Result<()> {
        self.permit()?;
        self.call(Method::DELETE, &self.role_path(name), None, None)
            .await
            .map(drop)
    }

    /// `GET auth/<mount>/role/<name>/role-id`.
    pub async fn role_id(&self, name: &str) -> Result<Option<String>> {
        let v = self
            .call(
                Method::GET,
                &format!("{}/role-id", self.role_path(name)),
                None,
                None,
            )
            .await?;
        Ok(v.and_then(|v| {
            v.pointer("/data/role_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        }))
    }

    /// `POST auth/<mount>/role/<name>/secret-id` with `X-Vault-Wrap-TTL` and metadata
    /// `{"task_id": ...}` (Vault takes metadata as a JSON-encoded string); with `bind`, the
    /// secret id is usable only from that address (`cidr_list`: Vault's
    /// `secret_id_bound_cidrs` for this one secret id). Refuses an answer without `wrap_info`.
    pub async fn wrapped_secret_id(
        &self,
        role: &str,
        task_id: &str,
        wrap_ttl: Duration,
        bind: Option<std::net::IpAddr>,
    ) -> Result<WrappedSecretId> {
        let path = format!("{}/secret-id", self.role_path(role));
        let metadata = json!({ "task_id": task_id }).to_string();
        let mut body = json!({ "metadata": metadata });
        if let Some(ip) = bind {
            body["cidr_list"] = json!([host_cidr(ip)]);
        }
        let v = self
            .call(Method::POST, &path, Some(&body), Some(wrap_ttl))
            .await?
            .ok_or_else(|| VaultAdminError::Status {
                path: path.clone(),
                status: 404,
                message: "role not found".into(),
            })?;
        let Some(info) = v.get("wrap_info").filter(|w| w.is_object()) else {
            // `v` may hold a plain secret id: never logged or returned, and destroyed so that
            // it cannot be used by whoever else might see this answer.
            self.destroy_secret_id(role, &v).await;
            return Err(VaultAdminError::NotWrapped { path });
        };
        let token = info
            .get("token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| VaultAdminError::Parse {
                path: path.clone(),
                reason: "wrap_info without a token".into(),
            })?;
        Ok(WrappedSecretId {
            token: SecretString::from(token.to_owned()),
            accessor: info
                .get("accessor")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            ttl: Duration::from_secs(info.get("ttl").and_then(Value::as_u64).unwrap_or(0)),
            creation_path: info
                .get("creation_path")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        })
    }

    /// Destroy the secret id of an unwrapped `secret-id` answer: by accessor when the answer
    /// has one, else by the id itself. Best effort (a failure is logged, without the id); the
    /// id expires with the role's short `secret_id_ttl` anyway.
    async fn destroy_secret_id(&self, role: &str, answer: &Value) {
        let data = answer.get("data").unwrap_or(answer);
        let field = |k: &str| {
            data.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let (path, body) = match (field("secret_id_accessor"), field("secret_id")) {
            (Some(acc), _) => (
                format!("{}/secret-id-accessor/destroy", self.role_path(role)),
                json!({ "secret_id_accessor": acc }),
            ),
            (None, Some(id)) => (
                format!("{}/secret-id/destroy", self.role_path(role)),
                json!({ "secret_id": id }),
            ),
            (None, None) => return,
        };
        match self.call(Method::POST, &path, Some(&body), None).await {
            Ok(_) => tracing::warn!(
                role,
                "Vault ignored response wrapping: the secret id it answered with was destroyed"
            ),
            Err(e) => {
                tracing::warn!(role, error = %e, "Vault ignored response wrapping and the plain secret id could not be destroyed; it expires with secret_id_ttl")
            }
        }
    }

    /// `POST auth/token/lookup-accessor`: the token behind `accessor`, `None` when Vault knows
    /// none (it answers 400 "invalid accessor"). The accessor is sent in the body, never in a
    /// path, so no error or log line carries it.
    pub async fn lookup_accessor(&self, accessor: &str) -> Result<Option<TokenInfo>> {
        let path = "auth/token/lookup-accessor";
        let body = json!({ "accessor": accessor });
        let v = match self.call(Method::POST, path, Some(&body), None).await {
            Ok(v) => v,
            Err(VaultAdminError::Status { status: 400, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(data) = v
            .as_ref()
            .and_then(|v| v.get("data"))
            .filter(|d| d.is_object())
        else {
            return Ok(None);
        };
        let meta = |k: &str| {
            data.get("meta")
                .and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Ok(Some(TokenInfo {
            path: data
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            role_name: meta("role_name"),
            task_id: meta("task_id"),
        }))
    }

    /// `POST auth/token/revoke-accessor`: revokes the token and every lease it created. Vault
    /// answers 204 when it revoked one, 200 with a warning (or 400 "invalid accessor") when it
    /// knows no such token.
    pub async fn revoke_accessor(&self, accessor: &str) -> Result<Revoked> {
        let path = "auth/token/revoke-accessor";
        let body = json!({ "accessor": accessor });
        match self.call(Method::POST, path, Some(&body), None).await {
            Ok(Some(Value::Null)) => Ok(Revoked::Revoked),
            Ok(Some(v)) => {
                let not_found = v
                    .get("warnings")
                    .and_then(Value::as_array)
                    .is_some_and(|w| {
                        w.iter()
                            .filter_map(Value::as_str)
                            .any(|w| w.contains("No token found"))
                    });
                Ok(if not_found {
                    Revoked::AlreadyGone
                } else {
                    Revoked::Revoked
                })
            }
            Ok(None) | Err(VaultAdminError::Status { status: 400, .. }) => Ok(Revoked::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    /// The KV secrets engines (`GET sys/mounts`). A token without the right to list mounts
    /// gets an empty map (paths are then granted as written, and a warning says so); any other
    /// failure is an error, so that a passing fault never changes what apps are given.
    pub async fn kv_mounts(&self) -> Result<secrets::KvMounts> {
        let doc = match self.call(Method::GET, "sys/mounts", None, None).await {
            Ok(d) => d.unwrap_or(Value::Null),
            Err(VaultAdminError::Status { status: 403, .. }) => {
                tracing::warn!("the reconciler's Vault token may not read sys/mounts: KV v2 paths written without data/ are granted as written");
                return Ok(secrets::KvMounts::new());
            }
            Err(e) => return Err(e),
        };
        Ok(kv_mounts_from(&doc))
    }

    /// Vault's current `baton-*` policies and roles as `owner` sees them (two LISTs, then one
    /// read per object under `baton-<owner>_`: the names of others are enough to report them,
    /// and a token confined to its own prefix may not read theirs).
    pub async fn observe(&self, owner: &str) -> Result<LiveVault> {
        let prefix = secrets::owner_prefix(owner);
        let mut observed = secrets::Observed {
            policy_names: self.list("sys/policies/acl").await?,
            role_names: self.list(&format!("auth/{}/role", self.mount())).await?,
            ..Default::default()
        };
        for name in observed
            .policy_names
            .iter()
            .filter(|n| n.starts_with(&prefix))
        {
            if let Some(text) = self.read_policy(name).await? {
                observed.policies.insert(name.clone(), text);
            }
        }
        for name in observed
            .role_names
            .iter()
            .filter(|n| n.starts_with(&prefix))
        {
            if let Some(settings) = self.read_role(name).await? {
                let role_id = self.role_id(name).await?.unwrap_or_default();
                observed
                    .roles
                    .insert(name.clone(), LiveRole { settings, role_id });
            }
        }
        Ok(secrets::classify(owner, observed))
    }

    /// Executes Vault changes in order; stops at the first failure.
    pub async fn apply(&self, changes: &[VaultChange]) -> Result<()> {
        for c in changes {
            match (c.kind, c.action) {
                (ObjectKind::Policy, Action::Delete) => self.delete_policy(&c.name).await?,
                (ObjectKind::Role, Action::Delete) => self.delete_role(&c.name).await?,
                (ObjectKind::Policy, _) => {
                    let text = c.body.as_ref().and_then(Value::as_str).unwrap_or_default();
                    self.write_policy(&c.name, text).await?
                }
                (ObjectKind::Role, _) => {
                    let body = c.body.clone().unwrap_or(Value::Null);
                    self.write_role(&c.name, &body).await?
                }
            }
            tracing::info!(kind = ?c.kind, name = %c.name, action = ?c.action, "vault object written");
        }
        Ok(())
    }

    /// The role ids of the given roles (for the gatekeeper's cache).
    pub async fn role_ids(&self, names: &[String]) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for n in names {
            if let Some(id) = self.role_id(n).await? {
                out.insert(n.clone(), id);
            }
        }
        Ok(out)
    }
}

pub use baton_core::secrets::kv_mounts_from;

/// The managed fields of a role read back (TTLs in seconds; lists may come as `policies`).
pub fn role_settings(data: &Value) -> RoleSettings {
    let num = |k: &str| {
        data.get(k)
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(0)
    };
    let list = |k: &str| -> Option<Vec<String>> {
        data.get(k).and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
    };
    RoleSettings {
        token_policies: list("token_policies")
            .filter(|l| !l.is_empty())
            .or_else(|| list("policies"))
            .unwrap_or_default(),
        token_ttl: num("token_ttl"),
        token_max_ttl: num("token_max_ttl"),
        secret_id_num_uses: num("secret_id_num_uses"),
        secret_id_ttl: num("secret_id_ttl"),
    }
}

/// The one-address CIDR of `ip` (an IPv4-mapped IPv6 address as the IPv4 address Vault sees).
pub fn host_cidr(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("{v4}/32"),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("{v4}/32"),
            None => format!("{v6}/128"),
        },
    }
}

fn error_message(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let msg = v
        .get("errors")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .or_else(|| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    // Error bodies are server text, bounded so a misbehaving proxy cannot flood the logs.
    msg.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_settings_read_leniently() {
        let r = role_settings(&json!({
            "policies": ["baton-a"], "token_policies": [], "token_ttl": 900,
            "token_max_ttl": "3600", "secret_id_num_uses": 1, "secret_id_ttl": 120,
            "bind_secret_id": true
        }));
        assert_eq!(r.token_policies, ["baton-a"]);
        assert_eq!((r.token_ttl, r.token_max_ttl), (900, 3600));
    }

    #[test]
    fn error_messages_from_both_shapes() {
        assert_eq!(error_message(br#"{"errors":["a","b"]}"#), "a; b");
        assert_eq!(error_message(br#"{"error":"x"}"#), "x");
        assert_eq!(error_message(b""), "");
    }

    #[test]
    fn secret_ids_are_bound_to_one_address() {
        let cidr = |s: &str| host_cidr(s.parse().unwrap());
        assert_eq!(cidr("10.1.2.3"), "10.1.2.3/32");
        assert_eq!(cidr("::ffff:10.1.2.3"), "10.1.2.3/32");
        assert_eq!(cidr("fd00::7"), "fd00::7/128");
    }

    #[test]
    fn debug_redacts_the_token() {
        let c = VaultAdminConfig {
            addr: "http://v".into(),
            token: SecretString::from("s.very-secret".to_string()),
            approle_mount: "approle".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{c:?}").contains("very-secret"));
    }
}
