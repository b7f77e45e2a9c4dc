//! Short-lived credentials, really: dynamic PostgreSQL users from OpenBao's database secrets
//! engine, end to end through `baton serve` (in process, with the reconciler token
//! `docs/security.md` prescribes, not root), the dev scheduler and the task's own `baton-env`
//! (secret zero from the gatekeeper). A throwaway PostgreSQL cluster per test
//! (`openbao_harness::postgres`).
//!
//! - The child connects with the dynamic user, the lease is renewed past its TTL, and when the
//!   app goes the sidecar revokes it: the user is gone from `pg_roles`.
//! - The lease sweep: `kill -9` of the task's `baton-env` (TTL 10 minutes) and the reconciler
//!   revokes the gone task's token within the sweep bound: the user is gone, counted in
//!   `/metrics`; forged accessor reports (a token of another role for the same task, a token
//!   made by hand) are refused and those tokens are never revoked.
//! - The periodic pass alone (no scheduler event), by a gatekeeper restarted on the same state
//!   dir: the recorded token is revoked once its task is no longer listed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use baton::config::VaultServeConfig;
use baton_core::secrets::AllowedPolicies;
use baton_e2e::devsched::DevScheduler;
use baton_e2e::openbao::postgres::Postgres;
use baton_e2e::openbao::OpenBao;
use baton_e2e::wait_until;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const OWNER: &str = "e2e";

fn baton_env() -> Option<PathBuf> {
    let found = baton_e2e::workspace_bin("baton-env");
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "baton-env must be built in CI (cargo build -p baton-sidecar)"
        );
        eprintln!("skipped: baton-env is not built (cargo build -p baton-sidecar)");
    }
    found
}

/// OpenBao with AppRole and the database engine on `pg` (users live `ttl`), the reconciler's
/// documented token, and the repo with the app `/db`: `baton-env` runs `child.sh`, which writes
/// its parent's pid (baton-env's) and its user into `out`, then connects to PostgreSQL as that
/// user every half second, appending the time of each success to `out/ok`.
struct World {
    tmp: tempfile::TempDir,
    bao: OpenBao,
    pg: Postgres,
    marathon: DevScheduler,
    token: String,
}

impl World {
    async fn new(ttl: Duration) -> World {
        let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
        let bao = OpenBao::start().await;
        bao.enable_approle().await;
        bao.enable_database(&pg, ttl, Duration::from_secs(3600))
            .await;
        let token = bao.reconciler_token(OWNER).await;
        let marathon = DevScheduler::start().await;
        World {
            tmp: tempfile::tempdir().unwrap(),
            bao,
            pg,
            marathon,
            token,
        }
    }

    fn out(&self) -> PathBuf {
        self.tmp.path().join("out")
    }
    fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    fn write_repo(&self, baton_env: &Path) {
        self.write_app(baton_env, 1);
    }

    /// The repo with `/db` at `instances`.
    fn write_app(&self, baton_env: &Path, instances: u32) {
        let (repo, out) = (self.repo(), self.out());
        std::fs::create_dir_all(repo.join("apps")).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(repo.join("baton.yaml"), format!("owner: {OWNER}\n")).unwrap();
        let script = self.tmp.path().join("child.sh");
        std::fs::write(
            &script,
            format!(
                r#"echo "$PPID" > {out}/pid.tmp && mv {out}/pid.tmp {out}/pid
echo "$MESOS_SANDBOX" > {out}/sandbox
echo "$DB_USER" > {out}/user.tmp && mv {out}/user.tmp {out}/user
while true; do
  if PGPASSWORD="$DB_PASSWORD" {psql} -h 127.0.0.1 -p {port} -U "$DB_USER" -d app -w -X -q -t -A -c 'SELECT 1' >/dev/null 2>>{out}/psql.err; then
    date +%s >> {out}/ok
  fi
  sleep 0.5
done
"#,
                out = out.display(),
                psql = self.pg.psql().display(),
                port = self.pg.port(),
            ),
        )
        .unwrap();
        let app = json!({
            "cmd": format!("exec {} -- sh {}", baton_env.display(), script.display()),
            "cpus": 0.01, "mem": 32, "instances": instances,
            // Time for baton-env to stop its child and revoke on a loaded machine.
            "taskKillGracePeriodSeconds": 30,
            "env": {
                "DB_USER": "vault:database/creds/app#username",
                "DB_PASSWORD": "vault:database/creds/app#password",
                "PGCONNECT_TIMEOUT": "5"
            },
            "baton": {"secrets": {"tokenTtl": "5m"}}
        });
        baton_e2e::replace_file(&repo.join("apps/db.json"), &app.to_string());
    }

    fn vault_config(&self) -> VaultServeConfig {
        VaultServeConfig {
            addr: self.bao.url().to_owned(),
            token: self.token.clone().into(),
            approle_mount: "approle".into(),
            gatekeeper_url: None,
            task_max_age: Duration::from_secs(120),
            host_check: true,
            wrap_ttl: Duration::from_secs(60),
            allowed_policies: AllowedPolicies::default(),
        }
    }

    /// What the child wrote to `out/<name>`, once it exists.
    async fn read(&self, name: &str, limit: Duration) -> String {
        let path = self.out().join(name);
        let mut text = String::new();
        wait_until(&format!("{}", path.display()), limit, || {
            text = std::fs::read_to_string(&path).unwrap_or_default();
            let done = !text.trim().is_empty();
            async move { done }
        })
        .await;
        text.trim().to_owned()
    }

    /// The times (Unix s) the child connected at.
    fn connections(&self) -> Vec<u64> {
        std::fs::read_to_string(self.out().join("ok"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

/// `baton serve` in process.
struct Serve {
    url: String,
    http: reqwest::Client,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Serve {
    async fn start(w: &World) -> Serve {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = baton::config::ServeConfig {
            vault: Some(w.vault_config()),
            ..baton_e2e::serve_config(
                w.repo().display().to_string(),
                w.marathon.url.clone(),
                &w.tmp.path().join("state"),
                addr,
            )
        };
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            baton::daemon::serve::serve(config, listener, s)
                .await
                .unwrap();
        });
        Serve {
            url: format!("http://{addr}"),
            http: reqwest::Client::new(),
            stop,
            task,
        }
    }

    async fn sync(&self) {
        let r = self.http.post(format!("{}/api/sync", self.url)).send();
        assert_eq!(r.await.unwrap().status().as_u16(), 202);
    }

    /// One counter of `/metrics` by its full name and labels, e.g.
    /// `baton_leases_swept_total{result="revoked"}`.
    async fn counter(&self, series: &str) -> u64 {
        let text = baton_e2e::get_text(&self.http, &format!("{}/metrics", self.url)).await;
        let prefix = format!("{series} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("serve stops")
            .unwrap();
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The task of `/db` (id, host) as the scheduler lists it.
async fn db_task(marathon: &DevScheduler) -> Value {
    let app = marathon.app("/db").await.expect("/db deployed");
    app["tasks"][0].clone()
}

/// A dynamic user's lease of 10 s is renewed while the child connects for three TTLs, then the
/// app is scaled to zero: baton-env stops the child and revokes its token, and with it the lease: the
/// user is gone from `pg_roles` (the sidecar did it: the sweep revoked nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamic_database_credentials_are_renewed_past_their_ttl_and_revoked_on_exit() {
    let Some(bin) = baton_env() else { return };
    let ttl = Duration::from_secs(10);
    let w = World::new(ttl).await;
    w.write_repo(&bin);
    let serve = Serve::start(&w).await;

    let user = w.read("user", Duration::from_secs(120)).await;
    assert!(user.starts_with("v-"), "a dynamic user, got {user:?}");
    // The app's policy grants the path as written (a database mount is not KV).
    let policy = w
        .bao
        .policy("baton-e2e_db")
        .await
        .expect("the app's policy");
    assert!(policy.contains("path \"database/creds/app\""), "{policy}");
    wait_until("a first connection", Duration::from_secs(60), || async {
        !w.connections().is_empty()
    })
    .await;
    let first = w.connections()[0];
    // Three TTLs later the same user still connects: its lease was renewed (without renewal
    // OpenBao drops the user at the TTL, and its `VALID UNTIL` passes).
    let past = first + 3 * ttl.as_secs();
    wait_until(
        "a connection three TTLs after the first",
        Duration::from_secs(150),
        || async { w.connections().last().is_some_and(|t| *t >= past) },
    )
    .await;
    assert_eq!(
        w.read("user", Duration::from_secs(1)).await,
        user,
        "the same user all along (no rotation, no restart)"
    );
    assert!(w.pg.has_role(&user));
    assert!(now_s() >= past);
    assert!(
        serve
            .counter("baton_secret_zero_accessor_reports_total{decision=\"recorded\"}")
            .await
            >= 1
    );

    // The app is scaled to zero: its task is stopped (SIGTERM), baton-env stops the child and
    // revokes on its way out.
    w.write_app(&bin, 0);
    serve.sync().await;
    let dropped = tokio::time::timeout(Duration::from_secs(120), async {
        while w.pg.has_role(&user) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        dropped.is_ok(),
        "the dynamic user was not dropped; baton-env's log:\n{}\nOpenBao's log:\n{}\nPostgreSQL's log:\n{}",
        std::fs::read_to_string(Path::new(&w.read("sandbox", Duration::from_secs(1)).await).join("stderr")).unwrap_or_default(),
        w.bao.log(),
        w.pg.log()
    );
    assert_eq!(db_task(&w.marathon).await, Value::Null, "the task is gone");
    assert_eq!(w.pg.roles_like("v-"), Vec::<String>::new(), "no user left");
    assert_eq!(
        serve
            .counter("baton_leases_swept_total{result=\"revoked\"}")
            .await,
        0,
        "baton-env revoked its own lease"
    );
    serve.stop().await;
    w.marathon.stop().await;
}

/// `kill -9` of a running task's `baton-env` (lease TTL 10 minutes, so only the sweep can
/// explain the user's end): the reconciler revokes the gone task's token, and the user is
/// dropped. Forged reports for that task (an AppRole token of another role carrying its task
/// id, a token made by hand) are refused, and those tokens survive the sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lease_sweep_revokes_what_a_killed_sidecar_left() {
    let Some(bin) = baton_env() else { return };
    let w = World::new(Duration::from_secs(600)).await;
    w.write_repo(&bin);
    let serve = Serve::start(&w).await;

    let user = w.read("user", Duration::from_secs(120)).await;
    let pid: i32 = w
        .read("pid", Duration::from_secs(10))
        .await
        .parse()
        .unwrap();
    assert!(w.pg.has_role(&user));
    let recorded = "baton_secret_zero_accessor_reports_total{decision=\"recorded\"}";
    wait_until("the accessor recorded", Duration::from_secs(60), || async {
        serve.counter(recorded).await == 1
    })
    .await;
    let task = db_task(&w.marathon).await;
    let task_id = task["id"].as_str().unwrap().to_owned();

    // Forged reports for the live task, from its host.
    let forge = |accessor: String| {
        let (http, url, task_id) = (serve.http.clone(), serve.url.clone(), task_id.clone());
        async move {
            http.post(format!("{url}/v1/secret-zero/accessor"))
                .json(&json!({"task_id": task_id, "app_id": "/db", "accessor": accessor}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // 1. An AppRole login of another role whose secret id carries this task's id.
    w.bao
        .root(
            "POST",
            "auth/approle/role/other",
            Some(json!({"token_policies": ["default"], "token_ttl": "1h"})),
        )
        .await;
    let rid = w
        .bao
        .root("GET", "auth/approle/role/other/role-id", None)
        .await;
    let sid = w
        .bao
        .root(
            "POST",
            "auth/approle/role/other/secret-id",
            Some(json!({"metadata": json!({"task_id": task_id}).to_string()})),
        )
        .await;
    let login = w
        .bao
        .root(
            "POST",
            "auth/approle/login",
            Some(json!({"role_id": rid["data"]["role_id"], "secret_id": sid["data"]["secret_id"]})),
        )
        .await;
    let other_role = (
        login["auth"]["client_token"].as_str().unwrap().to_owned(),
        login["auth"]["accessor"].as_str().unwrap().to_owned(),
    );
    // 2. A token made by hand.
    let made = w
        .bao
        .root(
            "POST",
            "auth/token/create",
            Some(json!({"policies": ["default"], "ttl": "1h", "meta": {"task_id": task_id, "role_name": "baton-e2e_db"}})),
        )
        .await;
    let by_hand = (
        made["auth"]["client_token"].as_str().unwrap().to_owned(),
        made["auth"]["accessor"].as_str().unwrap().to_owned(),
    );
    assert_eq!(forge(other_role.1.clone()).await, 403);
    assert_eq!(forge(by_hand.1.clone()).await, 403);
    assert_eq!(forge("no-such-accessor".into()).await, 403);
    assert_eq!(
        serve
            .counter("baton_secret_zero_accessor_reports_total{decision=\"refused\"}")
            .await,
        3
    );

    // kill -9 of baton-env: nothing revokes on the way out.
    let swept = "baton_leases_swept_total{result=\"revoked\"}";
    assert_eq!(serve.counter(swept).await, 0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed_at = Instant::now();
    wait_until(
        "the killed task's user dropped by the sweep",
        Duration::from_secs(120),
        || async { !w.pg.has_role(&user) },
    )
    .await;
    eprintln!("swept {:?} after the kill", killed_at.elapsed());
    assert!(serve.counter(swept).await >= 1);
    // The forged tokens were never revoked.
    for (token, _) in [&other_role, &by_hand] {
        let (status, _) = w
            .bao
            .call_as(token, "GET", "auth/token/lookup-self", None)
            .await;
        assert_eq!(status, 200, "a forged report's token was revoked");
    }
    serve.stop().await;
    w.marathon.stop().await;
}

/// The periodic pass without any scheduler event, across a restart of the gatekeeper: a task's
/// token recorded by one gatekeeper (its report checked by OpenBao) is revoked by the next one,
/// started from the same state dir, once the task is no longer listed under its app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_tokens_survive_a_restart_and_the_periodic_pass_revokes_them() {
    use baton::secret_zero::gatekeeper::sweep::{
        Accessor, AccessorReport, ReportOutcome, ReportRefusal,
    };
    use baton::secret_zero::gatekeeper::{
        self, AppGate, GateConfig, Gatekeeper, Outcome, SecretZeroRequest, StaticTasks, TaskInfo,
    };
    use baton::secret_zero::vault_admin::{VaultAdmin, VaultAdminConfig};
    use baton_core::secrets;
    use baton_core::spec::AppId;

    let bao = OpenBao::start().await;
    bao.enable_approle().await;
    let admin = VaultAdmin::new(VaultAdminConfig {
        addr: bao.url().to_owned(),
        token: bao.reconciler_token("shop").await.into(),
        approle_mount: "approle".into(),
        timeout: Duration::from_secs(30),
    })
    .unwrap();
    let app = AppId::parse("/web").unwrap();
    let role = secrets::object_name("shop", &app);
    admin
        .write_policy(
            &role,
            &secrets::policy_text("shop", &app, &Default::default()),
        )
        .await
        .unwrap();
    let role_id = secrets::new_role_id(&role, "1");
    admin
        .write_role(
            &role,
            &json!({"token_policies": [role], "token_ttl": 600, "token_max_ttl": 1200,
                    "secret_id_num_uses": 1, "secret_id_ttl": 120, "role_id": role_id}),
        )
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let now = (gatekeeper::system_clock())();
    let task = |id: &str| TaskInfo {
        id: id.into(),
        app_id: "/web".into(),
        owner: Some("shop".into()),
        state: "TASK_RUNNING".into(),
        staged_at_ms: Some(now),
        addrs: vec!["127.0.0.1".parse().unwrap()],
        rollout_of: None,
    };
    let start = |tasks: StaticTasks| {
        let gk = Gatekeeper::new(
            tasks,
            admin.clone(),
            GateConfig {
                owner: "shop".into(),
                state_dir: Some(state.path().to_owned()),
                sweep_interval: Duration::from_millis(200),
                ..Default::default()
            },
            gatekeeper::system_clock(),
        )
        .unwrap();
        gk.set_apps(
            [(
                app.clone(),
                AppGate {
                    role: role.clone(),
                    role_id: Some(role_id.clone()),
                    instances: 2,
                    canary_of: None,
                },
            )]
            .into(),
        );
        std::sync::Arc::new(gk)
    };
    let peer = Some("127.0.0.1".parse().unwrap());

    // web.1 gets secret zero and logs in, as its baton-env would, and reports its accessor.
    let tasks = StaticTasks::default();
    tasks.insert(task("web.1"));
    let first = start(tasks);
    let req = SecretZeroRequest {
        task_id: "web.1".into(),
        app_id: "/web".into(),
    };
    let Outcome::Granted {
        wrap_token,
        role_id,
    } = first.handle(&req, peer).await
    else {
        panic!("web.1 not granted");
    };
    let (status, unwrapped) = bao
        .call_as(&wrap_token, "POST", "sys/wrapping/unwrap", None)
        .await;
    assert_eq!(status, 200, "{unwrapped}");
    let (status, login) = bao
        .call_as(
            "",
            "POST",
            "auth/approle/login",
            Some(json!({"role_id": role_id, "secret_id": unwrapped["data"]["secret_id"]})),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let token = login["auth"]["client_token"].as_str().unwrap().to_owned();
    let report = AccessorReport {
        task_id: "web.1".into(),
        app_id: "/web".into(),
        accessor: Accessor::new(login["auth"]["accessor"].as_str().unwrap()),
    };
    assert_eq!(
        first.handle_report(&report, peer).await,
        ReportOutcome::Recorded
    );
    // Repeats (the same accessor, or another one for the same task) are answered from the
    // record: Vault is asked once, however often a task posts.
    let lookups = || {
        bao.requests()
            .iter()
            .filter(|(_, p)| p == "auth/token/lookup-accessor")
            .count()
    };
    let asked = lookups();
    for _ in 0..5 {
        assert_eq!(
            first.handle_report(&report, peer).await,
            ReportOutcome::Recorded
        );
    }
    let other = AccessorReport {
        accessor: Accessor::new("another-accessor"),
        ..report.clone()
    };
    assert_eq!(
        first.handle_report(&other, peer).await,
        ReportOutcome::Refused(ReportRefusal::Conflict)
    );
    assert_eq!(lookups(), asked, "a repeated report asked Vault again");
    drop(first);

    // A new gatekeeper on the same state dir: web.1 is gone, web.2 keeps /web listed.
    let tasks = StaticTasks::default();
    tasks.insert(task("web.2"));
    let second = start(tasks);
    assert_eq!(
        second.recorded_count(),
        1,
        "the record survived the restart"
    );
    let stop = CancellationToken::new();
    let sweeping = tokio::spawn(second.clone().sweep_loop(stop.clone()));
    wait_until(
        "web.1's token revoked by the periodic pass",
        Duration::from_secs(60),
        || async {
            bao.call_as(&token, "GET", "auth/token/lookup-self", None)
                .await
                .0
                == 403
        },
    )
    .await;
    wait_until("the record dropped", Duration::from_secs(30), || async {
        second.recorded_count() == 0
    })
    .await;
    assert_eq!(
        second
            .counters
            .sweep
            .revoked
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    stop.cancel();
    sweeping.await.unwrap();
}
