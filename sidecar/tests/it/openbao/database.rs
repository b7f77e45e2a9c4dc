//! Dynamic database credentials on OpenBao's database secrets engine over a throwaway
//! PostgreSQL (one of each per test): one lease for username and password, renewal and its
//! cap at the role's `max_ttl`, rotation (leases of 2 s, max 3 s), `--on-rotate` policies, exec
//! mode, and revocation, seen where it happens: the lease gone from Vault
//! (`sys/leases/lookup`), the user gone from `pg_roles`, the token's `revoke-self` in the audit
//! log and no token of the AppRole role left alive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_env::refs::parse_env;
use baton_env::resolve::{resolve, KvVersions};
use baton_env::retry::RetryPolicy;
use baton_env::secret::Secret;
use baton_env::supervise::renew::{self, Credentials, RenewEvent};
use baton_env::vault::{HttpVault, VaultApi, VaultConfig};
use nix::sys::signal::Signal;
use openbao_harness::postgres::Postgres;
use openbao_harness::{Audited, OpenBao};
use serde_json::json;

use super::bao;
use crate::support::{baton_env, lines_of, output, text, wait_for, KillOnDrop, Running};

const S: fn(u64) -> Duration = Duration::from_secs;

/// The path of the database role's credentials.
pub const CREDS: &str = "database/creds/app";

/// OpenBao (KV v2 at `secret/`, KV v1 at `kv1/`) with the database engine on a fresh
/// PostgreSQL, its role `app` issuing users for `default_ttl`, renewable up to `max_ttl`.
pub struct Db {
    pub bao: OpenBao,
    pub pg: Postgres,
}

impl Db {
    pub async fn start(default_ttl: Duration, max_ttl: Duration) -> Db {
        // initdb and the server's start take a second or two: beside OpenBao's.
        let pg = tokio::task::spawn_blocking(Postgres::start);
        let bao = bao().await;
        let pg = pg.await.expect("PostgreSQL's start");
        bao.enable_database(&pg, default_ttl, max_ttl).await;
        Db { bao, pg }
    }

    /// Leases of 2 s that cannot be renewed past 3 s: a rotation about every two seconds.
    pub async fn rotating() -> Db {
        Self::start(S(2), S(3)).await
    }

    /// AppRole role `web` whose tokens (10 minutes, with Vault's `default` policy, which
    /// lets a token renew its leases and revoke itself, not revoke a lease) may read the
    /// database credentials and `extra` (more policy text); (role_id, secret_id). The secret
    /// id has no use limit, so rotations log in again.
    pub async fn approle(&self, extra: &str) -> (String, String) {
        self.bao.enable_approle().await;
        let policy = format!("path \"{CREDS}\" {{ capabilities = [\"read\"] }}\n{extra}");
        self.bao.write_policy("app-creds", &policy).await;
        let role_id = self
            .bao
            .approle_role("web", &["app-creds"], json!({"token_ttl": "10m"}))
            .await;
        let secret_id = self.bao.secret_id("web").await;
        (role_id, secret_id)
    }

    /// baton-env with AppRole login and one dynamic secret (`DB_USER`).
    pub fn approle_cmd(&self, role_id: &str, secret_id: &str) -> std::process::Command {
        let mut cmd = baton_env();
        cmd.env("VAULT_ADDR", self.bao.url())
            .env("BATON_ROLE_ID", role_id)
            .env("BATON_SECRET_ID", secret_id)
            .env("DB_USER", format!("vault:{CREDS}#username"));
        cmd
    }

    /// Makes the creation of every new user wait for the advisory lock `key` (a first creation
    /// statement `SELECT pg_advisory_xact_lock(<key>)`): while a test holds it
    /// ([`Postgres::hold_advisory_lock`]), reads of the credentials stay in flight, as with a
    /// slow database.
    pub async fn creation_waits_for(&self, key: u32) {
        let role = self.bao.root("GET", "database/roles/app", None).await;
        let mut statements = vec![json!(format!("SELECT pg_advisory_xact_lock({key});"))];
        statements.extend(
            role["data"]["creation_statements"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        let mut data = role["data"].clone();
        data["creation_statements"] = json!(statements);
        data["db_name"] = json!("app");
        self.bao
            .root("POST", "database/roles/app", Some(data))
            .await;
    }

    /// How many leases the database engine issued (each a PostgreSQL user).
    pub fn creds_issued(&self) -> usize {
        self.bao.issued_leases(CREDS).len()
    }

    /// The dynamic users in PostgreSQL now (OpenBao names them `v-<display name>-app-...`).
    pub fn users(&self) -> Vec<String> {
        self.pg.roles_like("v-")
    }

    /// Waits (bounded) until no lease of the role is alive in Vault and no dynamic user is
    /// left in PostgreSQL: revoking a token revokes its leases in the background.
    pub async fn wait_all_leases_gone(&self) {
        let deadline = Instant::now() + S(30);
        loop {
            let leases = self.bao.live_leases(CREDS).await;
            let users = self.users();
            if leases.is_empty() && users.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still alive after 30 s: leases {leases:?}, PostgreSQL users {users:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asserts `logins` AppRole logins were made, each one's token read credentials and
    /// was revoked by `revoke-self` exactly once (which revokes its leases), no token of the
    /// role is alive, no per-lease revoke was attempted (Baton's policies do not grant
    /// `sys/leases/revoke`), and every lease and PostgreSQL user is gone. Returns the tokens'
    /// audit HMACs in login order.
    pub async fn assert_all_revoked_by_token(&self, logins: usize) -> Vec<String> {
        let log = self.bao.audit();
        let made = log
            .iter()
            .filter(|r| r.path == "auth/approle/login")
            .count();
        assert_eq!(made, logins, "logins");
        let tokens = readers(&log, CREDS);
        assert_eq!(tokens.len(), logins, "tokens that read credentials");
        for t in &tokens {
            assert_eq!(revokes_by(&log, t), 1, "each token is revoked exactly once");
        }
        let alive = self.bao.tokens_of_role("web").await;
        assert!(alive.is_empty(), "tokens left alive: {alive:?}");
        assert!(
            self.bao.lease_revokes().is_empty(),
            "no per-lease revoke under an owned token"
        );
        self.wait_all_leases_gone().await;
        tokens
    }
}

/// The tokens (audit HMACs) that read `path`, in order of first read.
pub fn readers(log: &[Audited], path: &str) -> Vec<String> {
    let mut tokens: Vec<String> = Vec::new();
    for r in log
        .iter()
        .filter(|r| r.operation == "read" && r.path == path)
    {
        if let Some(t) = &r.token {
            if !tokens.contains(t) {
                tokens.push(t.clone());
            }
        }
    }
    tokens
}

/// How many times `token` (an audit HMAC) revoked itself.
pub fn revokes_by(log: &[Audited], token: &str) -> usize {
    log.iter()
        .filter(|r| r.path == "auth/token/revoke-self" && r.token.as_deref() == Some(token))
        .count()
}

fn client(bao: &OpenBao) -> HttpVault {
    HttpVault::new(&VaultConfig {
        addr: bao.url().to_owned(),
        namespace: None,
        ca_cert: None,
        timeout: S(10),
    })
    .expect("client")
}

fn get<'a>(vars: &'a [(String, Secret)], name: &str) -> &'a str {
    vars.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.expose())
        .unwrap_or_else(|| panic!("{name} not rendered"))
}

/// Username and password from one lease (one read, one PostgreSQL user, who can log in
/// with that password), in a template too.
#[tokio::test(flavor = "multi_thread")]
async fn dynamic_credentials_one_lease_per_path_and_templates() {
    let db = Db::start(S(60), S(120)).await;
    let (plan, errors) = parse_env([
        ("DB_USER", "vault:database/creds/app#username"),
        ("DB_PASSWORD", "vault:database/creds/app#password"),
        ("DB_URL", "postgres://{{ vault:database/creds/app#username }}:{{ vault:database/creds/app#password }}@db:5432/app"),
    ]);
    assert!(errors.is_empty());
    let before = db.bao.requests().len();
    let root = Secret::new(db.bao.root_token().to_owned());
    let r = resolve(
        &client(&db.bao),
        &root,
        &plan,
        &KvVersions::default(),
        &RetryPolicy::new(S(5)),
    )
    .await
    .expect("resolve");
    let user = get(&r.vars, "DB_USER").to_owned();
    let pass = get(&r.vars, "DB_PASSWORD").to_owned();
    assert!(user.starts_with("v-token-app-"), "{user}");
    assert_eq!(
        get(&r.vars, "DB_URL"),
        format!("postgres://{user}:{pass}@db:5432/app")
    );
    // Username and password come from ONE lease: one user, and they belong together.
    assert_eq!(db.creds_issued(), 1);
    assert_eq!(r.leases.len(), 1);
    assert_eq!(db.users(), std::slice::from_ref(&user));
    db.pg.can_login(&user, &pass).expect("the user logs in");
    let reads: Vec<_> = db.bao.requests()[before..]
        .iter()
        .filter(|(_, p)| !p.starts_with("sys/internal/ui/mounts/"))
        .cloned()
        .collect();
    assert_eq!(reads, [("read".to_owned(), CREDS.to_owned())]);
}

/// A dynamic lease renewed (capped by its max TTL) and revoked (the user dropped), then the
/// token revoked (the token's own renewal and max TTL:
/// `openbao::library::token_renew_is_capped_by_max_ttl_and_revoke_ends_it`).
#[tokio::test(flavor = "multi_thread")]
async fn lease_renew_and_revoke() {
    let db = Db::start(S(30), S(40)).await;
    let v = db
        .bao
        .root(
            "POST",
            "auth/token/create",
            Some(json!({"policies": ["root"], "ttl": "60s", "explicit_max_ttl": "90s"})),
        )
        .await;
    let token = Secret::new(v["auth"]["client_token"].as_str().unwrap().to_owned());
    let api = client(&db.bao);
    let read = api.read(&token, CREDS, None).await.unwrap();
    let lease = read.lease.unwrap();
    assert_eq!(lease.duration, S(30));
    assert!(lease.renewable);
    assert_eq!(
        db.bao.live_leases(CREDS).await,
        std::slice::from_ref(&lease.id)
    );
    // Max TTL 40 s caps a 60 s increment asked for now at ~40 s from issue.
    let l = api.renew_lease(&token, &lease.id, S(60)).await.unwrap();
    assert!(l.duration <= S(40), "{:?}", l.duration);
    assert!(
        l.duration > S(30),
        "renewed past the first grant: {:?}",
        l.duration
    );
    api.revoke_lease(&token, &lease.id).await.unwrap();
    assert!(db.bao.live_leases(CREDS).await.is_empty());
    assert!(db.users().is_empty(), "the user is dropped");
    assert!(api.renew_lease(&token, &lease.id, S(30)).await.is_err());
    api.revoke_self(&token).await.unwrap();
    assert!(!db.bao.token_valid(token.expose()).await);
}

/// Short real leases (2 s, max 3 s): renewed once, then reported as ending before they die.
#[tokio::test(flavor = "multi_thread")]
async fn renewer_renews_then_reports_the_lease_ending() {
    let db = Db::rotating().await;
    let token = Arc::new(Secret::new(db.bao.root_token().to_owned()));
    let api = Arc::new(client(&db.bao));
    let read = api.read(&token, CREDS, None).await.unwrap();
    let lease = read.lease.unwrap();
    let (_replace_tx, replace_rx) = tokio::sync::mpsc::channel(1);
    let (event_tx, mut event_rx) = tokio::sync::mpsc::channel(4);
    let creds = Credentials {
        token,
        token_ttl: Some(Duration::ZERO),
        token_renewable: false,
        leases: vec![lease.clone()],
    };
    let task = tokio::spawn(renew::run(api, creds, replace_rx, event_tx));
    let event = tokio::time::timeout(S(30), event_rx.recv())
        .await
        .expect("an event")
        .expect("open");
    assert!(matches!(event, RenewEvent::LeaseEnding { .. }), "{event:?}");
    let renewals = db.bao.requests_to("sys/leases/renew");
    assert!(renewals >= 1);
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn supervise_injects_strips_bootstrap_and_revokes_on_exit() {
    let db = Db::start(S(300), S(600)).await;
    db.bao.kv2_put("app", json!({"key": "api-key-value"})).await;
    let (role_id, secret_id) = db
        .approle(r#"path "secret/data/app" { capabilities = ["read"] }"#)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (dump, whoami) = (dir.path().join("env"), dir.path().join("whoami"));
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", db.bao.url())
        .env("BATON_ROLE_ID", &role_id)
        .env("BATON_SECRET_ID", &secret_id)
        .env("DB_PASSWORD", "vault:database/creds/app#password")
        .env("DB_USER", "vault:database/creds/app#username")
        .env("API_KEY", "vault:secret/data/app#key")
        .env("PLAIN", "kept")
        .env("PSQL", db.pg.psql())
        .env("PGPORT", db.pg.port().to_string())
        .env("WHOAMI", &whoami)
        // The app connects to PostgreSQL as the dynamic user, over TCP with its password.
        .args([
            "--",
            "sh",
            "-c",
            r#"env > "$0"; PGPASSWORD="$DB_PASSWORD" "$PSQL" -h 127.0.0.1 -U "$DB_USER" -d app \
               -X -w -t -A -c 'SELECT current_user' > "$WHOAMI"; exit 3"#,
        ])
        .arg(&dump);
    let out = output(cmd).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let env = std::fs::read_to_string(&dump).unwrap();
    assert!(env.contains("API_KEY=api-key-value"));
    assert!(env.contains("PLAIN=kept"));
    let user = env
        .lines()
        .find_map(|l| l.strip_prefix("DB_USER="))
        .unwrap();
    assert!(user.starts_with("v-approle-app-"), "{env}");
    assert_eq!(
        std::fs::read_to_string(&whoami).unwrap().trim(),
        user,
        "the app logged in to PostgreSQL as its dynamic user"
    );
    for var in ["BATON_ROLE_ID", "BATON_SECRET_ID", "VAULT_TOKEN"] {
        assert!(!env.contains(var), "{var} leaked into the child");
    }
    assert!(!env.contains(&secret_id) && !env.contains(&role_id));
    // One lease; on exit the login token is revoked, and the lease with it (no per-lease
    // revoke: Baton's policies do not grant sys/leases/revoke). The lease had 300 s to
    // live: gone now means revoked.
    assert_eq!(db.creds_issued(), 1);
    db.assert_all_revoked_by_token(1).await;
    // Logs carry paths, never values.
    assert!(stderr.contains("database/creds/app"));
    let password = env
        .lines()
        .find_map(|l| l.strip_prefix("DB_PASSWORD="))
        .unwrap();
    for value in [password, "api-key-value", secret_id.as_str()] {
        assert!(!stderr.contains(value), "a secret value reached the logs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_mode_replaces_the_process_and_keeps_the_lease() {
    let db = Db::start(S(300), S(600)).await;
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", db.bao.url())
        .env("VAULT_TOKEN", db.bao.root_token())
        .env("DB_USER", "vault:database/creds/app#username")
        .args([
            "--mode",
            "exec",
            "--",
            "sh",
            "-c",
            "echo $$; echo \"$DB_USER\"",
        ]);
    let child = tokio::task::spawn_blocking(move || {
        let c = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = c.id();
        (pid, c.wait_with_output().unwrap())
    })
    .await
    .unwrap();
    let (pid, out) = child;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(pid.to_string().as_str()),
        "the shell must be baton-env's own process"
    );
    let user = lines.next().unwrap();
    assert!(user.starts_with("v-token-app-"), "{user}");
    // The app still uses the credentials: nothing is revoked in exec mode.
    assert_eq!(db.bao.live_leases(CREDS).await.len(), 1);
    assert_eq!(db.users(), [user.to_owned()]);
    assert!(db.bao.lease_revokes().is_empty());
}

/// Leases of 2 s (max 3 s) cannot outlive their max TTL: the child is restarted with
/// new credentials before the old ones die, and the old lease is revoked.
#[tokio::test(flavor = "multi_thread")]
async fn rotation_restarts_the_child_with_new_credentials() {
    let db = Db::rotating().await;
    let (role_id, secret_id) = db.approle("").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("starts");
    let mut cmd = db.approle_cmd(&role_id, &secret_id);
    cmd.env("LOG", &log).args([
        "--grace-period",
        "2s",
        "--",
        "sh",
        "-c",
        "echo \"$DB_USER\" >> \"$LOG\"; exec sleep 60",
    ]);
    let mut child = KillOnDrop(Some(
        cmd.stderr(std::process::Stdio::null()).spawn().unwrap(),
    ));
    let starts = wait_for("a second start", S(30), || {
        let s = std::fs::read_to_string(&log).ok()?;
        (s.lines().count() >= 2).then_some(s)
    })
    .await;
    let users: Vec<&str> = starts.lines().collect();
    assert_ne!(
        users[0], users[1],
        "the restarted child must get new credentials"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.pid() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let mut child = child.take();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(128 + 15));
    assert!(db.creds_issued() >= 2);
    // Each rotation logged in again; every generation was retired by revoking its token.
    let logins = db.bao.requests_to("auth/approle/login");
    assert!(logins >= 2);
    db.assert_all_revoked_by_token(logins).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_paths_and_timings_not_values() {
    let db = Db::start(S(300), S(600)).await;
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", db.bao.url())
        .env("VAULT_TOKEN", db.bao.root_token())
        .env("DB_PASSWORD", "vault:database/creds/app#password")
        .args([
            "--log-format",
            "json",
            "--",
            "sh",
            "-c",
            "printf %s \"$DB_PASSWORD\"",
        ]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0));
    let password = text(&out.stdout);
    // The password Vault issued (the audit log holds its HMAC).
    let issued = db.bao.audit_log().into_iter().find_map(|v| {
        (v["type"] == "response" && v["request"]["path"] == CREDS)
            .then(|| {
                v["response"]["data"]["password"]
                    .as_str()
                    .map(str::to_owned)
            })
            .flatten()
    });
    assert_eq!(issued, Some(db.bao.audit_hash(&password).await));
    let stderr = text(&out.stderr);
    assert!(!stderr.contains(&password));
    assert!(!stderr.contains(db.bao.root_token()));
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON log line"))
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["path"] == CREDS && l["took_ms"].is_u64()));
    // Lease ids are truncated in logs.
    let leases = db.bao.issued_leases(CREDS);
    assert_eq!(leases.len(), 1);
    assert!(!stderr.contains(&leases[0].lease_id));
}

#[tokio::test(flavor = "multi_thread")]
async fn on_rotate_signal_rewrites_the_env_file_and_signals_the_running_child() {
    let db = Db::rotating().await;
    let (role_id, secret_id) = db.approle("").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut cmd = db.approle_cmd(&role_id, &secret_id);
    cmd.env("LOG", &log)
        .args([
            "--on-rotate",
            "signal:HUP",
            "--grace-period",
            "1s",
            "--env-file",
        ])
        .arg(dir.path().join("secrets.env"))
        .args([
            "--",
            "sh",
            "-c",
            r#"trap 'echo "hup $(cat "$BATON_ENV_FILE")" >> "$LOG"' HUP
               echo "start $(cat "$BATON_ENV_FILE")" >> "$LOG"; while :; do sleep 0.05; done"#,
        ]);
    let run = Running::start(cmd);
    let lines = wait_for("a HUP", S(30), || {
        let l = lines_of(&log);
        l.iter().any(|l| l.starts_with("hup")).then_some(l)
    })
    .await;
    assert!(
        lines[0].starts_with("start DB_USER='v-approle-app-"),
        "{lines:?}"
    );
    let hup = lines.iter().find(|l| l.starts_with("hup")).unwrap();
    assert_ne!(
        lines[0].strip_prefix("start"),
        hup.strip_prefix("hup"),
        "the env file must hold the rotated credentials"
    );
    // The first generation's token (and with it its lease) is revoked once the app had
    // the grace period to switch over, while the app keeps running.
    let first_token = readers(&db.bao.audit(), CREDS)[0].clone();
    wait_for("the first token's revocation", S(20), || {
        (revokes_by(&db.bao.audit(), &first_token) == 1).then_some(())
    })
    .await;
    assert!(
        nix::sys::signal::kill(run.pid(), None).is_ok(),
        "still supervising"
    );
    run.signal(Signal::SIGTERM);
    let (code, stderr) = run.exit(S(20)).await;
    assert_eq!(code, Some(128 + 15), "{stderr}");
    let starts = lines_of(&log)
        .iter()
        .filter(|l| l.starts_with("start"))
        .count();
    assert_eq!(starts, 1, "signal mode never restarts the child");
    let logins = db.bao.requests_to("auth/approle/login");
    assert!(logins >= 2);
    db.assert_all_revoked_by_token(logins).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_rotate_exit_stops_the_child_and_exits_75() {
    let db = Db::rotating().await;
    let (role_id, secret_id) = db.approle("").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut cmd = db.approle_cmd(&role_id, &secret_id);
    cmd.env("LOG", &log).args([
        "--on-rotate",
        "exit",
        "--grace-period",
        "5s",
        "--",
        "sh",
        "-c",
        r#"trap 'echo term >> "$LOG"; exit 0' TERM; echo start >> "$LOG"; while :; do sleep 0.05; done"#,
    ]);
    let (code, stderr) = Running::start(cmd).exit(S(30)).await;
    assert_eq!(code, Some(75), "{stderr}");
    assert_eq!(lines_of(&log), ["start", "term"]);
    // The credentials fetched for the rotation were never used: revoked with the rest.
    db.assert_all_revoked_by_token(2).await;
}

/// A given token is not ours to revoke: its leases are revoked one by one instead (the
/// user dropped at once, not when its 300 s end).
#[tokio::test(flavor = "multi_thread")]
async fn a_given_token_is_kept_and_its_leases_revoked_one_by_one() {
    let db = Db::start(S(300), S(600)).await;
    let token = db.bao.token_with(&["root"]).await;
    let token_hmac = db.bao.audit_hash(&token).await;
    let before = db.bao.audit().len();
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", db.bao.url())
        .env("VAULT_TOKEN", &token)
        .env("DB_USER", "vault:database/creds/app#username")
        .args(["--", "true"]);
    let (code, stderr) = Running::start(cmd).exit(S(30)).await;
    assert_eq!(code, Some(0), "{stderr}");
    let issued = db.bao.issued_leases(CREDS);
    assert_eq!(issued.len(), 1);
    let lease = db.bao.audit_hash(&issued[0].lease_id).await;
    assert_eq!(
        db.bao.lease_revokes(),
        [(Some(lease), Some(token_hmac.clone()))]
    );
    // (The dev server revokes a token of its own at its start: only baton-env's count.)
    let log = &db.bao.audit()[before..];
    assert!(!log.iter().any(|r| r.path == "auth/token/revoke-self"));
    assert!(db.bao.token_valid(&token).await);
    assert!(db.bao.live_leases(CREDS).await.is_empty());
    assert!(db.users().is_empty(), "the user is dropped");
}
