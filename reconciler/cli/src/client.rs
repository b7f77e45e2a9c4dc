//! The one HTTP client of a running `baton serve` that every client command shares (`baton
//! status`, `sync`, `history`: [`crate::remote`]; `baton rollout`: [`crate::rollout`]): the
//! server's address (credentials in it never shown), the API token as a bearer, a timeout per
//! request, a bound on what an answer may hold, and the errors with their exit codes.
//!
//! Exit codes ([`ClientError::exit_code`]): the server unreachable, or refusing the token (401),
//! is [`exit::SERVER`] (4), so a script can tell "Baton is not there / not mine" from "Baton
//! said no" (1).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use baton::commands::exit;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(15);
/// The most of an answer read (`/api/status` of many apps).
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// Why a client command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach baton serve at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// 401: no token, or not the token the server was given.
    #[error("{server} refused the API token (HTTP 401): {message} (give it with --api-token-file or BATON_API_TOKEN)")]
    Unauthorized { server: String, message: String },
    #[error("{server} answered HTTP {status}: {message}")]
    Refused {
        server: String,
        status: u16,
        message: String,
    },
    #[error("{server}: unexpected answer: {reason}")]
    Protocol { server: String, reason: String },
    #[error("no app {app} in the status of {server}")]
    NoApp { app: String, server: String },
    #[error(
        "sync {sync} did not finish within {waited:?} (it is still queued or running on {server})"
    )]
    Timeout {
        sync: u64,
        waited: Duration,
        server: String,
    },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl ClientError {
    /// The exit code of the contract: 4 when the server is not reachable or refuses the
    /// token, 1 for anything else it refused or could not do.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unreachable { .. } | ClientError::Unauthorized { .. } => exit::SERVER,
            _ => exit::ERROR,
        }
    }
}

/// The app id as the API names it (`shop/api` and `/shop/api` alike).
pub fn app_id(app: &str) -> String {
    format!("/{}", app.trim_matches('/'))
}

/// A `baton serve` to talk to.
pub struct Server {
    base: String,
    /// The address for messages: without credentials.
    shown: String,
    http: reqwest::Client,
    token: Option<SecretString>,
}

impl Server {
    pub fn new(url: &str, token: Option<SecretString>) -> Result<Self, ClientError> {
        let base = url.trim_end_matches('/').to_string();
        let shown = baton_core::userinfo::redact_url(&base);
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| ClientError::Unreachable {
                server: shown.clone(),
                reason: e.to_string(),
            })?;
        Ok(Server {
            base,
            shown,
            http,
            token,
        })
    }

    /// The address as messages show it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// `GET path`: the JSON answer.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// `POST path` (with the bearer token, when there is one): the JSON answer.
    pub async fn post(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.http.post(format!("{}{path}", self.base)))
            .await
    }

    /// `GET /api/status`.
    pub async fn status(&self) -> Result<Value, ClientError> {
        self.get("/api/status").await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t.expose_secret()),
            None => request,
        };
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            server: self.shown.clone(),
            reason: e.without_url().to_string(),
        };
        let mut resp = request.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(ClientError::Protocol {
                    server: self.shown.clone(),
                    reason: format!("the answer is over {MAX_ANSWER} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(doc);
        }
        let message = (doc.get("error").and_then(Value::as_str))
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        Err(match status {
            401 => ClientError::Unauthorized {
                server: self.shown.clone(),
                message,
            },
            _ => ClientError::Refused {
                server: self.shown.clone(),
                status,
                message,
            },
        })
    }

    /// The entry of `app` in a `/api/status` answer.
    pub fn app_entry<'a>(&self, status: &'a Value, app: &str) -> Result<&'a Value, ClientError> {
        (status.get("apps").and_then(Value::as_array))
            .and_then(|apps| {
                apps.iter()
                    .find(|a| a.get("id").and_then(Value::as_str) == Some(app))
            })
            .ok_or_else(|| ClientError::NoApp {
                app: app.to_string(),
                server: self.shown.clone(),
            })
    }
}
