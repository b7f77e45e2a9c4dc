//! Leases as the server sees them, for the dynamic-credential tests: which leases were issued
//! (and to which token), which are still alive, which per-lease revocations were asked for.
//! From the audit log (responses carry a secret's lease id in clear, requests carry the HMAC
//! of a lease id given in the body) and `sys/leases/lookup`.

use serde_json::{json, Value};

use crate::OpenBao;

/// A lease the server issued, from the audit log's response to a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The full lease id (`database/creds/app/<id>`).
    pub lease_id: String,
    /// The HMAC of the token that read it (as in [`crate::Audited::token`]).
    pub token: Option<String>,
}

impl OpenBao {
    /// Every entry of the audit log so far (requests and responses), as JSON.
    pub fn audit_log(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.path().join("audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    /// The leases issued by reads of `path` (e.g. `database/creds/app`), in order.
    pub fn issued_leases(&self, path: &str) -> Vec<Issued> {
        self.audit_log()
            .iter()
            .filter(|v| v["type"] == "response" && v["request"]["path"] == path)
            .filter_map(|v| {
                let lease_id = v["response"]["secret"]["lease_id"].as_str()?;
                Some(Issued {
                    lease_id: lease_id.to_owned(),
                    token: v["request"]["client_token"]
                        .as_str()
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned),
                })
            })
            .collect()
    }

    /// The leases alive now under `prefix` (e.g. `database/creds/app`): full ids, from
    /// `LIST sys/leases/lookup/<prefix>/` as root.
    pub async fn live_leases(&self, prefix: &str) -> Vec<String> {
        let prefix = prefix.trim_end_matches('/');
        let path = format!("sys/leases/lookup/{prefix}/");
        let (status, v) = self.call_as(self.root_token(), "LIST", &path, None).await;
        // 404: none (any more).
        assert!(
            status == 200 || status == 404,
            "LIST {path}: HTTP {status}: {v}"
        );
        v["data"]["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|k| format!("{prefix}/{k}"))
            .collect()
    }

    /// The audit log's HMAC of `input` (`sys/audit-hash`): how a value sent in a request body,
    /// such as a lease id, appears in the log.
    pub async fn audit_hash(&self, input: &str) -> String {
        let v = self
            .root(
                "POST",
                "sys/audit-hash/test",
                Some(json!({ "input": input })),
            )
            .await;
        v["hash"].as_str().expect("an audit hash").to_owned()
    }

    /// The per-lease revocations asked for (`sys/leases/revoke`, lease id in the body): each
    /// one's lease id HMAC (compare with [`Self::audit_hash`]) and the HMAC of the token.
    pub fn lease_revokes(&self) -> Vec<(Option<String>, Option<String>)> {
        self.audit_log()
            .iter()
            .filter(|v| {
                v["type"] == "request"
                    && v["request"]["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("sys/leases/revoke"))
            })
            .map(|v| {
                let field = |f: &Value| f.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
                (
                    field(&v["request"]["data"]["lease_id"]),
                    field(&v["request"]["client_token"]),
                )
            })
            .collect()
    }
}
