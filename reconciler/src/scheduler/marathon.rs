//! The Marathon REST client (reqwest, rustls): auth (HTTP basic or the DC/OS `token=` header), a
//! custom CA, timeouts.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::live::apps_from_response;
use super::SchedulerError;

/// How to authenticate to Marathon. Secrets are redacted in Debug output.
#[derive(Debug, Clone)]
pub enum Auth {
    /// HTTP basic auth.
    Basic { user: String, password: SecretString },
    /// DC/OS: `Authorization: token=<token>`.
    Token(SecretString),
}

/// Where Marathon is and how to talk to it.
#[derive(Debug, Clone)]
pub struct MarathonConfig {
    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    pub auth: Option<Auth>,
    /// PEM file of an extra CA to trust.
    pub ca_cert: Option<PathBuf>,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl MarathonConfig {
    pub fn new(url: impl Into<String>) -> Self {
        MarathonConfig {
            url: url.into(),
            auth: None,
            ca_cert: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// A Marathon API client.
#[derive(Debug, Clone)]
pub struct Marathon {
    config: MarathonConfig,
    http: reqwest::Client,
    base: String,
}

impl Marathon {
    pub fn new(config: MarathonConfig) -> Result<Self, SchedulerError> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| SchedulerError::Config(format!(
                "cannot read CA certificate {}: {e}",
                ca.display()
            )))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                SchedulerError::Config(format!("bad CA certificate {}: {e}", ca.display()))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| SchedulerError::Config(format!("cannot build HTTP client: {e}")))?;
        let base = config.url.trim_end_matches('/').to_string();
        Ok(Marathon { config, http, base })
    }

    /// A request with auth applied.
    pub fn request(&self, method: reqwest::Method, path_and_query: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path_and_query}", self.base));
        match &self.config.auth {
            None => req,
            Some(Auth::Basic { user, password }) => {
                req.basic_auth(user, Some(password.expose_secret()))
            }
            Some(Auth::Token(t)) => {
                req.header("Authorization", format!("token={}", t.expose_secret()))
            }
        }
    }

    /// The base URL (for messages).
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Every app with its tasks and deployments, as Marathon serves them.
    pub async fn list_apps_raw(&self) -> Result<Vec<Value>, SchedulerError> {
        let path = "/v2/apps?embed=apps.tasks&embed=apps.deployments&embed=apps.lastTaskFailure";
        let doc = self.get_json(path).await?;
        apps_from_response(&doc).map_err(|reason| SchedulerError::Protocol {
            url: format!("{}{path}", self.base),
            reason,
        })
    }

    async fn get_json(&self, path: &str) -> Result<Value, SchedulerError> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| SchedulerError::Unreachable {
                url: url.clone(),
                reason: error_chain(&e),
            })?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| SchedulerError::Unreachable {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
        if !status.is_success() {
            return Err(SchedulerError::Status {
                url,
                status: status.as_u16(),
                body: body.chars().take(2000).collect(),
            });
        }
        serde_json::from_str(&body).map_err(|e| SchedulerError::Protocol {
            url,
            reason: format!("response is not JSON: {e}"),
        })
    }
}

/// An error with its sources, on one line (reqwest's top-level message alone hides the cause).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
