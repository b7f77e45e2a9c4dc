//! Secret zero end to end: the dev scheduler in process, OpenBao (a real Vault-API server) with
//! AppRole and wrapping, a sync that creates the app's policy and role and injects the
//! bootstrap env, and the gatekeeper on a test axum server. The app is `baton-env -- sh -c
//! '...'`: it starts and receives its secret; a replayed task id, an unknown task, a too-old task
//! and a request from the wrong host are denied (also after a gatekeeper restart); a pruned app
//! loses its role and policy.
//!
//! The reconciler's Vault token is the one `docs/security.md` prescribes
//! (`OpenBao::reconciler_token`: exactly that policy, not even Vault's `default`), never root;
//! root only seeds secrets and makes what an operator would make by hand. Vault requests are
//! counted from OpenBao's file audit device.
//!
//! Still on the Vault stub (`vault_stub`), because OpenBao cannot be made to fail that way:
//! - `a_vault_that_ignores_wrapping_is_refused_not_passed_on`: a server that answers a
//!   secret-id request with `X-Vault-Wrap-TTL` by a plain secret id (Vault always wraps);
//! - `secret_zero_load`: the stub's side of the mass-start benchmark, kept to compare with
//!   `secret_zero_load_openbao` (the stub measures Baton's own cost, OpenBao a real server's).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::apply::{apply, ApplyOptions, ApplyReport};
use baton::config::{ServeConfig, VaultServeConfig};
use baton::secret_zero::gatekeeper::{
    self, apps_from, DenyReason, GateConfig, Gatekeeper, SchedulerTasks, ServedApps,
};
use baton::secret_zero::vault_admin::{VaultAdmin, VaultAdminConfig};
use baton::secret_zero::wiring::deletes_after;
use baton_core::plan::{self, Policy};
use baton_core::secrets::{self, Bootstrap, VaultPlan};
use baton_core::spec::AppId;
use baton_e2e::openbao::OpenBao;
use baton_e2e::wait_until;
use baton_marathon::marathon::{Marathon, MarathonConfig};
use baton_marathon::Scheduler;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use vault_stub::{spawn, StubConfig, StubHandle};

type Gk = Gatekeeper<SchedulerTasks<Marathon>>;

/// The Vault a world runs against.
enum Vault {
    Bao(OpenBao),
    /// Only for a fault OpenBao cannot produce (see the module doc).
    Stub(StubHandle),
}

struct World {
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    state: PathBuf,
    out: PathBuf,
    vault: Vault,
    /// The reconciler's Vault token: the documented policy on OpenBao, root on the stub.
    token: String,
    /// How many audited requests the setup made (seeding as root, the reconciler's token):
    /// the test counts what came after.
    audit_from: usize,
    admin: VaultAdmin,
    marathon_url: String,
    stop: CancellationToken,
    scheduler: tokio::task::JoinHandle<()>,
}

impl World {
    fn vault_url(&self) -> String {
        match &self.vault {
            Vault::Bao(b) => b.url().to_owned(),
            Vault::Stub(s) => s.url(),
        }
    }

    fn bao(&self) -> &OpenBao {
        match &self.vault {
            Vault::Bao(b) => b,
            Vault::Stub(_) => panic!("this world runs on the stub"),
        }
    }

    async fn policy(&self, name: &str) -> Option<String> {
        match &self.vault {
            Vault::Bao(b) => b.policy(name).await,
            Vault::Stub(s) => s.policy(name),
        }
    }

    async fn has_role(&self, name: &str) -> bool {
        match &self.vault {
            Vault::Bao(b) => b.has_role(name).await,
            Vault::Stub(s) => s.has_approle(name),
        }
    }

    /// The paths of the Vault requests made since the setup (OpenBao's audit log).
    fn requests(&self) -> Vec<String> {
        let log = self.bao().requests();
        log.into_iter()
            .skip(self.audit_from)
            .map(|(_, path)| path)
            .collect()
    }

    /// How many secret ids were asked for (each request a mint, granted or not).
    fn secret_ids_minted(&self) -> usize {
        let path = "auth/approle/role/baton-e2e_web/secret-id";
        self.requests().iter().filter(|p| *p == path).count()
    }
}

fn baton_env() -> Option<PathBuf> {
    let found = baton_e2e::workspace_bin("baton-env");
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "baton-env must be built in CI (cargo build -p baton-sidecar)"
        );
        std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!("skipped: baton-env is not built (cargo build -p baton-sidecar)\n"),
        )
        .ok();
    }
    found
}

fn write_repo(dir: &Path, baton_env: &Path, out: &Path, with_web: bool) {
    std::fs::create_dir_all(dir.join("apps")).unwrap();
    std::fs::write(dir.join("baton.yaml"), "owner: e2e\n").unwrap();
    let keep = json!({"cmd": "sleep 600", "cpus": 0.01, "mem": 16, "instances": 1});
    std::fs::write(dir.join("apps/keep.yaml"), keep.to_string()).unwrap();
    let web = dir.join("apps/web.yaml");
    if with_web {
        let cmd = format!(
            "{} -- sh -c 'echo \"$DB_PASSWORD\" > {}; exec sleep 600'",
            baton_env.display(),
            out.display()
        );
        let app = json!({
            "cmd": cmd, "cpus": 0.01, "mem": 16, "instances": 1,
            // Written without `data/` on the KV v2 mount `secret/`: the reconciler grants
            // `secret/data/web` and tells the sidecar the mount's version (BATON_KV_VERSIONS),
            // so baton-env reads the right path with no mount preflight request.
            "env": {"DB_PASSWORD": "vault:secret/web#password"},
            "baton": {"secrets": {"tokenTtl": "5m"}}
        });
        std::fs::write(web, app.to_string()).unwrap();
    } else {
        let _ = std::fs::remove_file(web);
    }
}

/// A world on OpenBao, the reconciler holding the documented token.
async fn world(baton_env: &Path) -> World {
    let bao = OpenBao::start().await;
    bao.enable_approle().await;
    for (path, password) in [("web", "s3cr3t-from-vault"), ("other", "not-yours")] {
        bao.root(
            "POST",
            &format!("secret/data/{path}"),
            Some(json!({"data": {"password": password}})),
        )
        .await;
    }
    let token = bao.reconciler_token("e2e").await;
    let audit_from = bao.requests().len();
    world_on(baton_env, Vault::Bao(bao), token, audit_from).await
}

/// A world on the Vault stub (root token), for a fault OpenBao cannot produce.
async fn stub_world(baton_env: &Path) -> World {
    let stub = spawn(StubConfig::default()).await.unwrap();
    stub.put_kv2("secret/web", json!({"password": "s3cr3t-from-vault"}));
    stub.put_kv2("secret/other", json!({"password": "not-yours"}));
    let token = stub.root_token().to_owned();
    world_on(baton_env, Vault::Stub(stub), token, 0).await
}

async fn world_on(baton_env: &Path, vault: Vault, token: String, audit_from: usize) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let state = tmp.path().join("state");
    let out = tmp.path().join("secret.out");
    std::fs::create_dir_all(&state).unwrap();
    write_repo(&repo, baton_env, &out, true);
    let addr = match &vault {
        Vault::Bao(b) => b.url().to_owned(),
        Vault::Stub(s) => s.url(),
    };
    let admin = VaultAdmin::new(VaultAdminConfig {
        addr,
        token: token.clone().into(),
        approle_mount: "approle".into(),
        timeout: Duration::from_secs(30),
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let marathon_url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let config = baton_dev_scheduler::DevConfig {
        sandbox_dir: Some(tmp.path().join("sandboxes")),
        ..Default::default()
    };
    let s = stop.clone();
    let scheduler = tokio::spawn(async move {
        baton_dev_scheduler::run(listener, config, s).await.unwrap();
    });
    World {
        _tmp: tmp,
        repo,
        state,
        out,
        vault,
        token,
        audit_from,
        admin,
        marathon_url,
        stop,
        scheduler,
    }
}

fn marathon(w: &World) -> Marathon {
    Marathon::new(MarathonConfig::new(w.marathon_url.clone())).unwrap()
}

/// A gatekeeper on its own HTTP server (served with connect info, as `serve` must).
async fn start_gatekeeper(
    w: &World,
    config: GateConfig,
    clock: gatekeeper::Clock,
) -> (Arc<Gk>, String) {
    let gk = Arc::new(
        Gatekeeper::new(
            SchedulerTasks::new(marathon(w)),
            w.admin.clone(),
            config,
            clock,
        )
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}{}",
        listener.local_addr().unwrap(),
        gatekeeper::PATH
    );
    let app = gatekeeper::router(gk.clone());
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    (gk, url)
}

fn gate_config(w: &World) -> GateConfig {
    GateConfig {
        owner: "e2e".into(),
        state_dir: Some(w.state.clone()),
        ..Default::default()
    }
}

/// One sync with secrets: prepare (Vault observed, env injected), plan, Vault writes, apply,
/// Vault deletes, gatekeeper told which apps it serves.
async fn sync(w: &World, gk: &Gk, gk_url: &str) -> (VaultPlan, ApplyReport) {
    let mut repo = baton::commands::load_repo(&w.repo).unwrap();
    assert!(repo.is_valid(), "{:?}", repo.diagnostics);
    let boot = Bootstrap {
        vault_addr: w.vault_url(),
        gatekeeper_url: gk_url.to_owned(),
        approle_mount: "approle".into(),
    };
    let prepared = w
        .admin
        .prepare(&mut repo, &boot, &Default::default())
        .await
        .unwrap();
    let m = marathon(w);
    let live = m.list_apps().await.unwrap();
    let live_ids: Vec<AppId> = live
        .iter()
        .filter_map(|a| AppId::parse(a.get("id")?.as_str()?).ok())
        .collect();
    let plan = plan::plan(
        &repo,
        &live,
        &Policy {
            commit: "e2e".into(),
            allow_deletes: None,
        },
    );
    let vplan = secrets::plan_vault(
        &prepared.desired,
        &prepared.live,
        &prepared.role_ids,
        &repo,
        &plan,
        &live_ids,
        None,
    );
    // Roles before apps: a task must never start before its role exists.
    gk.set_apps(apps_from(&repo, &prepared.desired, &prepared.role_ids));
    w.admin.apply(&vplan.before_apps).await.unwrap();
    let options = ApplyOptions {
        poll_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let report = apply(&plan, &m, &options, &mut |_| {}).await;
    w.admin
        .apply(&deletes_after(&vplan, &report))
        .await
        .unwrap();
    (vplan, report)
}

async fn wait_file(path: &Path, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.trim().is_empty() {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn web_task(w: &World) -> Value {
    let apps = marathon(w).list_apps().await.unwrap();
    let web = apps.iter().find(|a| a["id"] == "/web").unwrap();
    web["tasks"][0].clone()
}

async fn ask(http: &reqwest::Client, url: &str, task: &str, app: &str) -> u16 {
    http.post(url)
        .json(&json!({"task_id": task, "app_id": app}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secret_zero_end_to_end() {
    let Some(bin) = baton_env() else { return };
    let w = world(&bin).await;
    let (gk, url) = start_gatekeeper(&w, gate_config(&w), gatekeeper::system_clock()).await;

    // 1. The sync creates the policy and role, then the app; the app gets its secret.
    let (vplan, report) = sync(&w, &gk, &url).await;
    assert!(report.converged(), "{report:?}");
    assert_eq!(vplan.before_apps.len(), 2, "{vplan:?}");
    let policy = w.policy("baton-e2e_web").await.expect("policy created");
    assert_eq!(
        secrets::policy_paths(&policy)
            .into_iter()
            .collect::<Vec<_>>(),
        ["secret/data/web"]
    );
    assert!(w.has_role("baton-e2e_web").await);
    let got = wait_file(&w.out, Duration::from_secs(60)).await;
    assert_eq!(got.trim(), "s3cr3t-from-vault");
    assert_eq!(
        gk.counters
            .granted
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The secret id carried the task id as metadata: Vault copies it onto the token the
    // task logged in with (the only token of the role).
    let task = web_task(&w).await;
    let task_id = task["id"].as_str().unwrap().to_owned();
    let tokens = w.bao().tokens_of_role("baton-e2e_web").await;
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0]["meta"]["task_id"], task_id.as_str(), "{tokens:?}");
    // The app's policy and Vault's `default` (which baton-env renews and revokes its own
    // token with), nothing else.
    assert_eq!(
        tokens[0]["policies"],
        json!(["baton-e2e_web", "default"]),
        "{tokens:?}"
    );
    // Vault requests per task start: exactly one of each.
    let log = w.requests();
    let count = |p: &str| log.iter().filter(|q| *q == p).count();
    assert_eq!(count("auth/approle/role/baton-e2e_web/secret-id"), 1);
    assert_eq!(count("sys/wrapping/lookup"), 1);
    assert_eq!(count("sys/wrapping/unwrap"), 1);
    assert_eq!(count("auth/approle/login"), 1);
    assert_eq!(count("secret/data/web"), 1);
    assert!(
        !log.iter().any(|q| q.starts_with("sys/internal/ui/mounts")),
        "{log:?}"
    );
    // The app definition holds no secret: only bootstrap settings.
    let apps = marathon(&w).list_apps().await.unwrap();
    let env = &apps.iter().find(|a| a["id"] == "/web").unwrap()["env"];
    assert_eq!(env["BATON_AUTH"], "gatekeeper");
    assert_eq!(env["BATON_APPROLE_ROLE"], "baton-e2e_web");
    assert_eq!(env["BATON_KV_VERSIONS"], "secret=2");
    assert!(env["BATON_ROLE_ID"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(!env.to_string().contains("s3cr3t"));

    // 2. Denials, all the same bare 403.
    let http = reqwest::Client::new();
    assert_eq!(ask(&http, &url, &task_id, "/web").await, 403, "replay");
    assert_eq!(
        ask(&http, &url, "web.forged-task", "/web").await,
        403,
        "unknown task"
    );
    assert_eq!(
        ask(&http, &url, &task_id, "/keep").await,
        403,
        "app without secrets"
    );
    assert_eq!(gk.counters.denied(DenyReason::Replayed), 1);
    assert_eq!(gk.counters.denied(DenyReason::UnknownTask), 1);
    assert_eq!(gk.counters.denied(DenyReason::UnknownApp), 1);
    let body = http
        .post(&url)
        .json(&json!({"task_id": "web.forged-task", "app_id": "/web"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !body.contains("unknown") && !body.contains("task"),
        "{body}"
    );

    // A fresh gatekeeper (empty served set) to reach the later checks with the real task.
    let apps_now = {
        let repo = baton::commands::load_repo(&w.repo).unwrap();
        let d = secrets::desired(&repo, &Default::default());
        let ids: BTreeMap<String, String> = w
            .admin
            .role_ids(&d.apps.keys().cloned().collect::<Vec<_>>())
            .await
            .unwrap();
        apps_from(&repo, &d, &ids)
    };
    // Too old: the clock says ten minutes later.
    let later: gatekeeper::Clock = Arc::new(|| (gatekeeper::system_clock())() + 600_000);
    let (old_gk, old_url) = start_gatekeeper(
        &w,
        GateConfig {
            state_dir: None,
            ..gate_config(&w)
        },
        later,
    )
    .await;
    old_gk.set_apps(apps_now.clone());
    assert_eq!(ask(&http, &old_url, &task_id, "/web").await, 403);
    assert_eq!(old_gk.counters.denied(DenyReason::TooOld), 1);
    // Wrong host: the request comes from 127.0.0.2, the task runs on 127.0.0.1.
    let (host_gk, host_url) = start_gatekeeper(
        &w,
        GateConfig {
            state_dir: None,
            ..gate_config(&w)
        },
        gatekeeper::system_clock(),
    )
    .await;
    host_gk.set_apps(apps_now.clone());
    let other_host = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    assert_eq!(ask(&other_host, &host_url, &task_id, "/web").await, 403);
    assert_eq!(host_gk.counters.denied(DenyReason::WrongHost), 1);
    // A restarted gatekeeper reads the served set back: still a replay.
    let (re_gk, re_url) = start_gatekeeper(&w, gate_config(&w), gatekeeper::system_clock()).await;
    re_gk.set_apps(apps_now);
    assert_eq!(ask(&http, &re_url, &task_id, "/web").await, 403);
    assert_eq!(re_gk.counters.denied(DenyReason::Replayed), 1);
    assert_eq!(
        re_gk
            .counters
            .granted
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // Only one secret id was ever minted.
    assert_eq!(w.secret_ids_minted(), 1);

    // 3. Prune: the app's file is removed; the app goes, then its role and policy.
    write_repo(&w.repo, &bin, &w.out, false);
    let (vplan, report) = sync(&w, &gk, &url).await;
    assert!(report.converged(), "{report:?}");
    assert_eq!(vplan.after_apps.len(), 2, "{vplan:?}");
    assert!(
        w.policy("baton-e2e_web").await.is_none(),
        "policy not removed"
    );
    assert!(!w.has_role("baton-e2e_web").await, "role not removed");
    // Its tasks are gone too, so nothing is granted for /web any more.
    assert_eq!(ask(&http, &url, &task_id, "/web").await, 403);

    w.stop.cancel();
    w.scheduler.await.unwrap();
}

/// `baton serve` in process on a plain directory, with Vault configured (`config.vault`).
async fn start_serve(
    w: &World,
    vault: Option<VaultServeConfig>,
) -> (String, CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Hourly polls: the test drives cycles with POST /api/sync.
    let config = ServeConfig {
        webhook_secret: Some("e2e-webhook".to_string().into()),
        vault,
        ..baton_e2e::serve_config(
            w.repo.display().to_string(),
            w.marathon_url.clone(),
            &w.state,
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
    (format!("http://{addr}"), stop, task)
}

fn vault_config(w: &World, task_max_age: Duration) -> VaultServeConfig {
    VaultServeConfig {
        addr: w.vault_url(),
        token: w.token.clone().into(),
        approle_mount: "approle".into(),
        // Derived from the listen address: http://127.0.0.1:<port>/v1/secret-zero.
        gatekeeper_url: None,
        task_max_age,
        host_check: true,
        wrap_ttl: Duration::from_secs(60),
        allowed_policies: Default::default(),
    }
}

/// One counter of `/metrics`, by its label text (`decision="denied",reason="replayed"`).
async fn counter(http: &reqwest::Client, serve: &str, labels: &str) -> u64 {
    let text = baton_e2e::get_text(http, &format!("{serve}/metrics")).await;
    let prefix = format!("baton_secret_zero_requests_total{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
}

/// The whole flow through the real daemon: `baton serve` (loop + gatekeeper route + /metrics),
/// the dev scheduler, OpenBao. The loop creates the policy and role before the app,
/// injects the bootstrap env, and the app's baton-env gets its secret from serve's own
/// `/v1/secret-zero`; replayed, unknown, wrong-host and too-old requests are refused and counted
/// in /metrics; pruning the app removes its role and policy after the app is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secret_zero_through_baton_serve() {
    let Some(bin) = baton_env() else { return };
    let w = world(&bin).await;
    // Long enough for the app's own request and the refusals below on a loaded machine (a task
    // too old is refused as that before any other check), short enough to see it grow too old.
    let max_age = Duration::from_secs(30);
    let (serve, stop, task) = start_serve(&w, Some(vault_config(&w, max_age))).await;
    let http = reqwest::Client::new();
    let gk_url = format!("{serve}{}", gatekeeper::PATH);

    // 1. The startup cycle writes policy and role, then the app; the app gets its secret.
    let got = wait_file(&w.out, Duration::from_secs(60)).await;
    assert_eq!(got.trim(), "s3cr3t-from-vault");
    let policy = w.policy("baton-e2e_web").await.expect("policy created");
    assert_eq!(
        secrets::policy_paths(&policy)
            .into_iter()
            .collect::<Vec<_>>(),
        ["secret/data/web"]
    );
    assert!(w.has_role("baton-e2e_web").await);
    let apps = marathon(&w).list_apps().await.unwrap();
    let web = apps.iter().find(|a| a["id"] == "/web").unwrap();
    assert_eq!(web["env"]["BATON_GATEKEEPER_URL"], gk_url.as_str());
    assert_eq!(web["env"]["VAULT_ADDR"], w.vault_url().as_str());
    assert!(!web["env"].to_string().contains("s3cr3t"));
    assert_eq!(counter(&http, &serve, r#"decision="granted""#).await, 1);
    let web_task = gatekeeper::tasks_of(web).remove(0);
    let task_id = web_task.id.clone();

    // 2. Refusals, all a bare 403, each counted under its reason.
    let staged_at = web_task
        .staged_at_ms
        .expect("the dev scheduler sets stagedAt");
    let age = (gatekeeper::system_clock())().saturating_sub(staged_at);
    assert!(
        age + 5_000 < max_age.as_millis() as u64,
        "the task is already {age} ms old: the refusals below would all be `too_old`"
    );
    assert_eq!(ask(&http, &gk_url, &task_id, "/web").await, 403, "replay");
    assert_eq!(
        ask(&http, &gk_url, "web.forged", "/web").await,
        403,
        "unknown task"
    );
    let other_host = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    assert_eq!(
        ask(&other_host, &gk_url, &task_id, "/web").await,
        403,
        "wrong host"
    );
    let denied = |r: &str| format!(r#"decision="denied",reason="{r}""#);
    assert_eq!(counter(&http, &serve, &denied("replayed")).await, 1);
    assert_eq!(counter(&http, &serve, &denied("unknown_task")).await, 1);
    assert_eq!(counter(&http, &serve, &denied("wrong_host")).await, 1);
    // Too old: once the task is older than --task-max-age (no event for that: wait out the
    // clock from the task's own staging time).
    let old_at = staged_at + max_age.as_millis() as u64 + 500;
    let now = (gatekeeper::system_clock())();
    tokio::time::sleep(Duration::from_millis(old_at.saturating_sub(now))).await;
    assert_eq!(ask(&http, &gk_url, &task_id, "/web").await, 403, "too old");
    assert_eq!(counter(&http, &serve, &denied("too_old")).await, 1);
    assert_eq!(counter(&http, &serve, r#"decision="granted""#).await, 1);
    assert_eq!(w.secret_ids_minted(), 1, "one secret id ever minted");

    // 3. Prune while Vault is sealed: the cycle fails clearly and deletes nothing; once Vault
    //    is unsealed (the retry after backoff), the app goes, then its role and policy.
    w.bao().seal().await;
    write_repo(&w.repo, &bin, &w.out, false);
    let r = http.post(format!("{serve}/api/sync")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let status = || async {
        http.get(format!("{serve}/api/status"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    wait_until(
        "the Vault error in /api/status",
        Duration::from_secs(30),
        || async {
            status().await["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("Vault") && e.contains("sealed"))
        },
    )
    .await;
    let apps = marathon(&w).list_apps().await.unwrap();
    assert!(
        apps.iter().any(|a| a["id"] == "/web"),
        "nothing deleted while Vault fails"
    );
    w.bao().unseal().await;
    // Vault's objects outlived the failed cycle: read before the app list, either they are
    // still there or the app is already gone (they follow it, never precede it).
    let objects_kept =
        w.policy("baton-e2e_web").await.is_some() && w.has_role("baton-e2e_web").await;
    let apps = marathon(&w).list_apps().await.unwrap();
    assert!(
        objects_kept || apps.iter().all(|a| a["id"] != "/web"),
        "Vault objects deleted while their app still ran"
    );
    wait_until(
        "role and policy removed",
        Duration::from_secs(90),
        || async {
            w.policy("baton-e2e_web").await.is_none() && !w.has_role("baton-e2e_web").await
        },
    )
    .await;
    let apps = marathon(&w).list_apps().await.unwrap();
    assert!(apps.iter().all(|a| a["id"] != "/web"), "the app went first");
    assert!(apps.iter().any(|a| a["id"] == "/keep"));

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
    w.stop.cancel();
    w.scheduler.await.unwrap();
}

/// Without Vault settings, an app with `vault:` references is not deployed (shown as invalid
/// with the reason) and the other apps sync normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_vault_blocks_secret_apps() {
    let Some(bin) = baton_env() else { return };
    let w = world(&bin).await;
    let (serve, stop, task) = start_serve(&w, None).await;
    let http = reqwest::Client::new();
    let status = || async {
        http.get(format!("{serve}/api/status"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    wait_until("first cycle", Duration::from_secs(60), || async {
        status().await["ready"] == true
    })
    .await;
    let s = status().await;
    let app = |id: &str| {
        s["apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(app("/web")["sync"], "invalid", "{s}");
    let apps = marathon(&w).list_apps().await.unwrap();
    assert!(apps.iter().all(|a| a["id"] != "/web"), "not deployed");
    assert!(apps.iter().any(|a| a["id"] == "/keep"));
    assert!(w.policy("baton-e2e_web").await.is_none());
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
    w.stop.cancel();
    w.scheduler.await.unwrap();
}

fn assert_plan_schema(doc: &Value) {
    baton_e2e::assert_matches_schema("plan.schema.json", doc);
}

/// `baton plan` shows the Vault plan: without Vault access every needed object is a create and
/// the state is `unknown`; with it, out-of-band edits are updates and orphans are deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_plan_shows_the_vault_plan() {
    use baton::commands::{exit, plan_with_vault, Format, LiveFrom, PlanSecrets, PlanVault};
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    write_repo(&repo, Path::new("baton-env"), &tmp.path().join("out"), true);
    let live = tmp.path().join("live.json");
    std::fs::write(&live, r#"{"apps": []}"#).unwrap();
    let policy = Policy {
        commit: "c1".into(),
        allow_deletes: None,
    };
    let style = baton_core::report::Style { color: false };
    let run = |vault: Option<PlanVault>, format: Format| {
        let (repo, live, policy) = (repo.clone(), LiveFrom::File(live.clone()), policy.clone());
        async move {
            let mut out = Vec::new();
            let code = plan_with_vault(
                &repo,
                &live,
                &policy,
                &PlanSecrets {
                    vault,
                    allowed: Default::default(),
                },
                None,
                format,
                style,
                &mut out,
            )
            .await
            .unwrap();
            (code, String::from_utf8(out).unwrap())
        }
    };

    // No Vault access: creates only, flagged unknown.
    let (code, json_out) = run(None, Format::Json).await;
    assert_eq!(code, exit::CHANGES);
    let doc: Value = serde_json::from_str(&json_out).unwrap();
    assert_plan_schema(&doc);
    assert_eq!(doc["vault"]["state"], "unknown");
    assert!(doc["vault"]["note"].as_str().unwrap().contains("unknown"));
    let before = doc["vault"]["before_apps"].as_array().unwrap();
    assert_eq!(before.len(), 2);
    assert!(before
        .iter()
        .all(|c| c["action"] == "create" && c["name"] == "baton-e2e_web"));

    // With Vault (OpenBao, read with the documented reconciler token): the policy edited out
    // of band is an update, an orphan is a delete.
    let bao = OpenBao::start().await;
    bao.enable_approle().await;
    let admin_config = VaultAdminConfig {
        addr: bao.url().to_owned(),
        token: bao.reconciler_token("e2e").await.into(),
        approle_mount: "approle".into(),
        timeout: Duration::from_secs(30),
    };
    // Baton's own objects, as an earlier Baton wrote them.
    let admin = VaultAdmin::new(admin_config.clone()).unwrap();
    admin
        .write_policy(
            "baton-e2e_web",
            &secrets::policy_text(
                "e2e",
                &AppId::parse("/web").unwrap(),
                &["secret/data/other".to_string()].into(),
            ),
        )
        .await
        .unwrap();
    let orphan = AppId::parse("/orphan").unwrap();
    admin
        .write_policy(
            "baton-e2e_orphan",
            &secrets::policy_text("e2e", &orphan, &Default::default()),
        )
        .await
        .unwrap();
    // Made by hand: reported, never touched.
    let by_hand = "# left over\npath \"secret/data/old\" { capabilities = [\"read\"] }\n";
    bao.write_policy("baton-orphan", by_hand).await;
    let written = bao.requests().len();
    let vault = PlanVault {
        admin: admin_config,
        gatekeeper_url: Some("http://baton:8088/v1/secret-zero".into()),
    };
    let (code, text) = run(Some(vault.clone()), Format::Text).await;
    assert_eq!(code, exit::CHANGES);
    assert!(text.contains("~ update policy baton-e2e_web"), "{text}");
    assert!(
        text.contains("+ read secret/data/web") && text.contains("- read secret/data/other"),
        "{text}"
    );
    assert!(text.contains("+ create approle baton-e2e_web"), "{text}");
    assert!(
        text.contains("- delete policy baton-e2e_orphan  (/orphan)"),
        "{text}"
    );
    assert!(
        // With the reconciler's own policy, a `baton-` name outside the prefix (same reason).
        text.contains(
            "unmanaged (never touched): policy baton-orphan, policy baton-reconciler-e2e: \
             not an owner-scoped name"
        ),
        "{text}"
    );
    assert!(!text.contains("note:"), "{text}");
    let (_, json_out) = run(Some(vault), Format::Json).await;
    let doc: Value = serde_json::from_str(&json_out).unwrap();
    assert_plan_schema(&doc);
    assert_eq!(doc["vault"]["state"], "observed");
    // The hand-made policy, and the reconciler's own (a `baton-` name outside the prefix).
    let unmanaged: Vec<&str> = doc["vault"]["unmanaged"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(unmanaged, ["baton-orphan", "baton-reconciler-e2e"], "{doc}");
    // Nothing was written: plan only reads.
    let requests = bao.requests();
    let writes: Vec<_> = requests[written..]
        .iter()
        .filter(|(op, _)| !matches!(op.as_str(), "read" | "list"))
        .collect();
    assert!(!requests[written..].is_empty(), "plan read Vault");
    assert!(writes.is_empty(), "plan wrote to Vault: {writes:?}");
    assert_eq!(bao.policy("baton-orphan").await.as_deref(), Some(by_hand));
    assert!(!bao.has_role("baton-e2e_web").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_that_ignores_wrapping_is_refused_not_passed_on() {
    let Some(bin) = baton_env() else { return };
    let w = stub_world(&bin).await;
    // The vault field on its own: it outlives the scheduler's handle, moved out below.
    let Vault::Stub(stub) = &w.vault else {
        unreachable!("stub_world")
    };
    stub.ignore_wrapping(true);
    let (gk, url) = start_gatekeeper(&w, gate_config(&w), gatekeeper::system_clock()).await;
    let (_, report) = sync(&w, &gk, &url).await;
    // The app is deployed but its baton-env cannot get a secret id (it keeps retrying 503).
    assert!(!report.apps.is_empty());
    let deadline = Instant::now() + Duration::from_secs(30);
    while gk
        .counters
        .not_wrapped
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "no secret-id request reached Vault"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!w.out.exists(), "the app must not have received a secret");
    assert_eq!(
        gk.counters
            .granted
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    w.stop.cancel();
    w.scheduler.await.unwrap();
    // Every reservation is released (a request still in flight when the tasks stopped finishes
    // in its own worker within the deadline): the task may ask again once Vault wraps. And
    // every plain secret id Vault answered with was destroyed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gk.served_count() > 0 {
        assert!(Instant::now() < deadline, "a reservation was kept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while stub.live_secret_ids("baton-e2e_web") > 0 {
        assert!(Instant::now() < deadline, "a plain secret id stayed valid");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        stub.requests()
            .iter()
            .any(|(_, p)| p.ends_with("/secret-id-accessor/destroy")),
        "destroyed by accessor"
    );
}

/// A mass start (the secret-zero benchmarks): `n` tasks of one app (`/load/web`, `n`
/// instances) ask for their first credential in one burst. The gatekeeper runs over HTTP as
/// `serve` mounts it (served set persisted, host check on) with a fixed task table; each task
/// then runs the sidecar's own Vault flow (`baton_env`'s wrapping lookup, unwrap, AppRole
/// login, one read per distinct path, two paths) against the Vault at `vault_url`.
mod mass {
    use super::*;
    use baton::secret_zero::gatekeeper::{sweep, AppGate, StaticTasks, TaskInfo};
    use baton_env::auth::{
        login, AuthError, AuthMethod, GatekeeperApi, GatekeeperGrant, HttpGatekeeper,
    };
    use baton_env::resolve::{resolve, KvVersions};
    use baton_env::retry::RetryPolicy;
    use baton_env::secret::Secret;
    use baton_env::vault::{HttpVault, VaultConfig};

    pub const APP: &str = "/load/web";

    /// The secrets every task reads (KV v2 at `secret/`): seed them before [`MassStart::prepare`].
    pub const SECRETS: [(&str, &str, &str); 2] =
        [("web", "password", "pw"), ("shared", "user", "u")];

    /// One task that got its credentials: what a lease sweep needs to kill it and watch its
    /// leases go (its id, the token its sidecar logged in with and that token's accessor).
    pub struct StartedTask {
        pub task_id: String,
        pub token: Secret,
        pub accessor: Option<String>,
        /// How long the gatekeeper took to answer this task.
        pub grant: Duration,
        /// When the grant arrived, counted from the burst's start.
        pub granted_at: Duration,
        /// The task's whole start (gatekeeper, lookup, unwrap, login, reads).
        pub start: Duration,
    }

    /// The app's policy and role (written with the reconciler's token, as `serve` would), the
    /// task table and the gatekeeper's HTTP server with its lease sweep running (as `serve`
    /// runs them), ready for the burst.
    pub struct MassStart {
        n: usize,
        vault_url: String,
        gk_url: String,
        role: String,
        report_accessors: bool,
        pub gk: Arc<Gatekeeper<StaticTasks>>,
        /// Stops the lease sweep when the benchmark ends.
        stop: CancellationToken,
        _state: tempfile::TempDir,
    }

    impl Drop for MassStart {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    /// Task `i` of the app, in `state`.
    fn task_info(i: usize, state: &str, staged_at_ms: u64) -> TaskInfo {
        TaskInfo {
            id: format!("load_web.{i}"),
            app_id: APP.into(),
            owner: Some("e2e".into()),
            state: state.into(),
            staged_at_ms: Some(staged_at_ms),
            addrs: vec!["127.0.0.1".parse().unwrap()],
            rollout_of: None,
        }
    }

    impl MassStart {
        /// `report_accessors`: each task's sidecar reports its token's accessor after login, as
        /// `baton-env` does (the gatekeeper then asks Vault `auth/token/lookup-accessor`). Off
        /// for the stub, which has no token store to look accessors up in.
        pub async fn prepare(
            vault_url: &str,
            reconciler_token: &str,
            n: usize,
            report_accessors: bool,
        ) -> MassStart {
            let state = tempfile::tempdir().unwrap();
            let admin = VaultAdmin::new(VaultAdminConfig {
                addr: vault_url.to_owned(),
                token: reconciler_token.to_owned().into(),
                approle_mount: "approle".into(),
                timeout: Duration::from_secs(30),
            })
            .unwrap();
            let app = AppId::parse(APP).unwrap();
            let role = secrets::object_name("e2e", &app);
            let paths = SECRETS
                .iter()
                .map(|(p, _, _)| format!("secret/data/{p}"))
                .collect();
            admin
                .write_policy(&role, &secrets::policy_text("e2e", &app, &paths))
                .await
                .unwrap();
            let role_id = secrets::new_role_id(&role, "10ad");
            admin
                .write_role(
                    &role,
                    &json!({"token_policies": [role], "token_ttl": 300, "token_max_ttl": 3600,
                            "secret_id_num_uses": 1, "secret_id_ttl": 120, "role_id": role_id}),
                )
                .await
                .unwrap();
            let now_ms = (gatekeeper::system_clock())();
            let tasks = StaticTasks::default();
            for i in 0..n {
                tasks.insert(task_info(i, "TASK_STAGING", now_ms));
            }
            let config = GateConfig {
                owner: "e2e".into(),
                state_dir: Some(state.path().to_owned()),
                ..Default::default()
            };
            let gk = Arc::new(
                Gatekeeper::new(tasks, admin, config, gatekeeper::system_clock()).unwrap(),
            );
            gk.set_apps(
                [(
                    app,
                    AppGate {
                        role: role.clone(),
                        role_id: Some(role_id),
                        instances: n as u64,
                        canary_of: None,
                    },
                )]
                .into(),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let gk_url = format!(
                "http://{}{}",
                listener.local_addr().unwrap(),
                gatekeeper::PATH
            );
            // What `serve` mounts and runs beside it: the routes and the lease sweep.
            let router = ServedApps::routes(gk.clone());
            let stop = CancellationToken::new();
            tokio::spawn(ServedApps::sweeper(gk.clone(), stop.clone()));
            tokio::spawn(async move {
                let _ = axum::serve(
                    listener,
                    router.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .await;
            });
            MassStart {
                n,
                vault_url: vault_url.to_owned(),
                gk_url,
                role,
                report_accessors,
                gk,
                stop,
                _state: state,
            }
        }

        /// Every task lost at once, as a lost agent leaves them: nobody revokes anything (the
        /// sidecars die with their tokens), the scheduler lists each task `TASK_LOST` and sends
        /// its terminal status event, which `serve`'s event feed hands to the gatekeeper
        /// (`sweep::ended_task`, then `task_ended`).
        pub fn lose_all(&self) {
            let now_ms = (gatekeeper::system_clock())();
            for i in 0..self.n {
                let task = task_info(i, "TASK_LOST", now_ms);
                let event = json!({
                    "eventType": "status_update_event",
                    "taskId": task.id,
                    "appId": APP,
                    "taskStatus": task.state,
                });
                self.gk.tasks().insert(task);
                if let Some(id) = sweep::ended_task(&event) {
                    ServedApps::task_ended(self.gk.as_ref(), id);
                }
            }
        }

        /// Starts every task at once, each given `max_wait` (baton-env's `--max-wait`); returns
        /// the wall time until the last one had its secrets, and the tasks. Panics on any
        /// failure: every task must start.
        pub async fn run(&self, max_wait: Duration) -> (Duration, Vec<StartedTask>) {
            let vault = Arc::new(
                HttpVault::new(&VaultConfig {
                    addr: self.vault_url.clone(),
                    namespace: None,
                    ca_cert: None,
                    timeout: Duration::from_secs(60),
                })
                .unwrap(),
            );
            let gkc = Arc::new(HttpGatekeeper {
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .unwrap(),
                url: self.gk_url.clone(),
            });
            let env = [
                ("P", "vault:secret/data/web#password"),
                ("U", "vault:secret/data/shared#user"),
                (
                    "URL",
                    "x://{{ vault:secret/data/shared#user }}:{{ vault:secret/data/web#password }}",
                ),
            ];
            let (plan, errs) = baton_env::refs::parse_env(env);
            assert!(errs.is_empty());
            let plan = Arc::new(plan);
            let kv = Arc::new(KvVersions::parse(["secret=2"]).unwrap());

            let start = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for i in 0..self.n {
                let (vault, gkc, plan, kv, role) = (
                    vault.clone(),
                    gkc.clone(),
                    plan.clone(),
                    kv.clone(),
                    self.role.clone(),
                );
                let report_accessors = self.report_accessors;
                set.spawn(async move {
                    let t0 = Instant::now();
                    let policy = RetryPolicy::new(max_wait);
                    let task_id = format!("load_web.{i}");
                    // `baton-env --auth gatekeeper` as the reconciler configures it: the role
                    // pinned (the wrapping token's creation path is checked), unwrap, login.
                    let method = AuthMethod::Gatekeeper {
                        mount: "approle".into(),
                        task_id: task_id.clone(),
                        app_id: APP.into(),
                        role,
                        role_id: None,
                    };
                    let timed = Timed {
                        inner: gkc.as_ref(),
                        report_accessors,
                        took: std::sync::Mutex::new(None),
                    };
                    let token = login(vault.as_ref(), &timed, &method, &policy).await?;
                    let (grant, granted) = timed
                        .took
                        .lock()
                        .unwrap()
                        .ok_or_else(|| anyhow::anyhow!("the gatekeeper was not asked"))?;
                    let resolved = resolve(vault.as_ref(), &token.token, &plan, &kv, &policy)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    anyhow::ensure!(resolved.vars.len() == 3, "not every variable resolved");
                    Ok::<_, anyhow::Error>(StartedTask {
                        task_id,
                        token: token.token,
                        accessor: token.accessor,
                        grant,
                        granted_at: granted.duration_since(start),
                        start: t0.elapsed(),
                    })
                });
            }
            let mut started = Vec::new();
            let mut failures = Vec::new();
            while let Some(r) = set.join_next().await {
                match r.unwrap() {
                    Ok(t) => started.push(t),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            let wall = start.elapsed();
            assert!(
                failures.is_empty(),
                "{} failures, first: {:?}",
                failures.len(),
                failures.first()
            );
            assert_eq!(started.len(), self.n);
            assert_eq!(self.gk.served_count(), self.n);
            (wall, started)
        }
    }

    /// The sidecar's gatekeeper client, timed: how long the gatekeeper took, and when it
    /// answered.
    struct Timed<'a> {
        inner: &'a HttpGatekeeper,
        report_accessors: bool,
        took: std::sync::Mutex<Option<(Duration, Instant)>>,
    }

    impl GatekeeperApi for Timed<'_> {
        async fn grant(&self, task_id: &str, app_id: &str) -> Result<GatekeeperGrant, AuthError> {
            let t0 = Instant::now();
            let grant = self.inner.grant(task_id, app_id).await;
            *self.took.lock().unwrap() = Some((t0.elapsed(), Instant::now()));
            grant
        }

        async fn report_accessor(
            &self,
            task_id: &str,
            app_id: &str,
            accessor: &str,
        ) -> Result<(), AuthError> {
            if !self.report_accessors {
                return Ok(());
            }
            self.inner.report_accessor(task_id, app_id, accessor).await
        }
    }

    /// The request classes of a task start, by Vault path.
    pub fn class(path: &str) -> &'static str {
        match path {
            p if p.starts_with("auth/approle/role/") && p.ends_with("/secret-id") => "secret-id",
            "sys/wrapping/lookup" => "wrap lookup",
            "sys/wrapping/unwrap" => "unwrap",
            "auth/approle/login" => "login",
            p if p.starts_with("secret/data/") => "reads",
            "auth/token/lookup-accessor" => "accessor lookup",
            _ => "other",
        }
    }

    /// Requests per class, in the order a start makes them, then `other`.
    pub fn per_class(paths: &[String]) -> Vec<(&'static str, usize)> {
        [
            "secret-id",
            "wrap lookup",
            "unwrap",
            "login",
            "reads",
            "accessor lookup",
            "other",
        ]
        .into_iter()
        .map(|c| (c, paths.iter().filter(|p| class(p) == c).count()))
        .collect()
    }

    /// Prints the numbers docs/benchmarks.md reports and checks the request counts: one of each
    /// per start, one read per distinct path, one accessor lookup when the sidecars report
    /// their accessors, nothing else.
    pub fn report(
        label: &str,
        n: usize,
        wall: Duration,
        tasks: &[StartedTask],
        paths: &[String],
        report_accessors: bool,
    ) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let pct = |mut v: Vec<Duration>, p: f64| {
            v.sort();
            let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
            ms(v[i])
        };
        let grants: Vec<Duration> = tasks.iter().map(|t| t.grant).collect();
        let starts: Vec<Duration> = tasks.iter().map(|t| t.start).collect();
        let all_granted = tasks.iter().map(|t| t.granted_at).max().unwrap_or_default();
        println!(
            "secret zero load ({label}): {n} tasks, all granted after {:.0} ms, all started after {:.0} ms",
            ms(all_granted),
            ms(wall)
        );
        println!(
            "throughput: {:.0} task starts/s",
            n as f64 / wall.as_secs_f64()
        );
        println!(
            "gatekeeper latency (per grant) ms: p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
            pct(grants.clone(), 0.5),
            pct(grants.clone(), 0.9),
            pct(grants.clone(), 0.99),
            pct(grants, 1.0)
        );
        println!(
            "full start (gatekeeper + lookup + unwrap + login + reads) ms: p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
            pct(starts.clone(), 0.5),
            pct(starts.clone(), 0.9),
            pct(starts.clone(), 0.99),
            pct(starts, 1.0)
        );
        let counts = per_class(paths);
        let per: Vec<String> = counts
            .iter()
            .map(|(c, k)| format!("{c} {:.2}", *k as f64 / n as f64))
            .collect();
        println!(
            "vault requests per start: {}; total {:.2}",
            per.join(", "),
            paths.len() as f64 / n as f64
        );
        assert_eq!(
            counts,
            [
                ("secret-id", n),
                ("wrap lookup", n),
                ("unwrap", n),
                ("login", n),
                ("reads", 2 * n),
                ("accessor lookup", if report_accessors { n } else { 0 }),
                ("other", 0)
            ],
            "{} requests",
            paths.len()
        );
    }
}

/// Load on the stub: 1,000 tasks of one app ask within one burst; every one must get
/// credentials. The stub answers from memory behind one mutex: this measures Baton's side
/// (gatekeeper, served set, sidecar flow) with a Vault that costs next to nothing. Prints
/// throughput, latency percentiles and Vault requests per task start (docs/benchmarks.md,
/// `## secret zero`), counted from the stub's request log.
///
/// `cargo build --release -p baton-sidecar && cargo test --release -p baton-e2e --test e2e \
///   secret_zero_load -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "load benchmark; run explicitly with --ignored (release build for numbers)"]
async fn secret_zero_load() {
    const N: usize = 1000;
    let stub = spawn(StubConfig::default()).await.unwrap();
    for (path, key, value) in mass::SECRETS {
        stub.put_kv2(&format!("secret/{path}"), json!({ key: value }));
    }
    let mass = mass::MassStart::prepare(&stub.url(), stub.root_token(), N, false).await;
    stub.clear_requests();
    let (wall, tasks) = mass.run(Duration::from_secs(10)).await;
    let paths: Vec<String> = stub.requests().into_iter().map(|(_, p)| p).collect();
    mass::report("stub", N, wall, &tasks, &paths, false);
}

/// A mass start on OpenBao, done: the server (audited), the gatekeeper (its lease sweep
/// running, every task's token accessor reported), and the tasks that started.
struct OpenBaoMassStart {
    bao: OpenBao,
    /// Audited requests before the burst (setup as root and the reconciler's writes).
    audit_from: usize,
    mass: mass::MassStart,
    wall: Duration,
    tasks: Vec<mass::StartedTask>,
}

/// `n` tasks of `/load/web` start at once on a fresh OpenBao (KV v2 secrets seeded as root,
/// the gatekeeper holding the reconciler's documented token), each within `max_wait`.
async fn mass_start_on_openbao(n: usize, max_wait: Duration) -> OpenBaoMassStart {
    let bao = OpenBao::start().await;
    bao.enable_approle().await;
    for (path, key, value) in mass::SECRETS {
        bao.root(
            "POST",
            &format!("secret/data/{path}"),
            Some(json!({"data": { key: value }})),
        )
        .await;
    }
    let token = bao.reconciler_token("e2e").await;
    let mass = mass::MassStart::prepare(bao.url(), &token, n, true).await;
    let audit_from = bao.requests().len();
    let (wall, tasks) = mass.run(max_wait).await;
    OpenBaoMassStart {
        bao,
        audit_from,
        mass,
        wall,
        tasks,
    }
}

/// The same mass start on OpenBao (a real Vault-API server, in memory), the gatekeeper holding
/// the reconciler's documented token. Vault requests are counted from OpenBao's file audit
/// device (one `request` entry per request).
///
/// Then the second half: the same tasks lost at once, as a lost agent leaves them (nobody
/// revokes: the tokens are simply abandoned; the scheduler lists each task `TASK_LOST` and
/// sends its status event). Measured on OpenBao itself: the time until its token store lists
/// none of the tasks' accessors; then every accessor's lookup fails, no token of the role is
/// left, and the gatekeeper's sweep revoked every one (`baton_leases_swept_total`).
///
/// `cargo build --release -p baton-sidecar && cargo test --release -p baton-e2e --test e2e \
///   secret_zero_load_openbao -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "load benchmark; run explicitly with --ignored (release build for numbers)"]
async fn secret_zero_load_openbao() {
    const N: usize = 1000;
    // A real server on a loaded 2-core machine is slower than the stub: baton-env's default
    // --max-wait (60 s) rather than the stub run's 10 s.
    let run = mass_start_on_openbao(N, Duration::from_secs(60)).await;
    let paths: Vec<String> = run.bao.requests()[run.audit_from..]
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    mass::report("OpenBao", N, run.wall, &run.tasks, &paths, true);
    assert_eq!(run.mass.gk.served_count(), N);
    // Every task holds a live token of the app's role (the one its sidecar logged in with),
    // carrying its task id; a sample of them reads the app's secret.
    let tokens = run.bao.tokens_of_role("baton-e2e_load_web").await;
    let live: std::collections::BTreeSet<(&str, &str)> = tokens
        .iter()
        .filter_map(|t| Some((t["meta"]["task_id"].as_str()?, t["accessor"].as_str()?)))
        .collect();
    let started: std::collections::BTreeSet<(&str, &str)> = run
        .tasks
        .iter()
        .map(|t| {
            (
                t.task_id.as_str(),
                t.accessor.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(live, started);
    for t in run.tasks.iter().take(10) {
        let (status, _) = run
            .bao
            .call_as(t.token.expose(), "GET", "secret/data/web", None)
            .await;
        assert_eq!(status, 200, "{}", t.task_id);
    }

    // Every sidecar's accessor report was checked with Vault and recorded for the sweep.
    let gk = &run.mass.gk;
    assert_eq!(gk.recorded_count(), N);
    let accessors: std::collections::BTreeSet<&str> = started.iter().map(|(_, a)| *a).collect();
    assert_eq!(accessors.len(), N);
    let t0 = Instant::now();
    run.mass.lose_all();
    // Watched on OpenBao itself (one LIST of its token store per look): no accessor of the
    // tasks' tokens left.
    let limit = Duration::from_secs(300);
    let mut first_revoked = None;
    let all_revoked = loop {
        let listed = run.bao.root("LIST", "auth/token/accessors", None).await;
        let left = listed["data"]["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|a| accessors.contains(a))
            .count();
        if left < N && first_revoked.is_none() {
            first_revoked = Some(t0.elapsed());
        }
        if left == 0 {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{left} of {N} lost tasks' tokens still live after {limit:?}:\n{}",
            gk.counters.sweep.prometheus()
        );
        // OpenBao has no event for a revocation: look again shortly.
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let sweep = &gk.counters.sweep;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "lease sweep (OpenBao): {N} tasks lost, first token revoked after {:.0} ms, all after {:.0} ms ({:.0} revocations/s); revoked {}, already gone {}, failed (retried) {}",
        first_revoked.unwrap_or_default().as_secs_f64() * 1000.0,
        all_revoked.as_secs_f64() * 1000.0,
        N as f64 / all_revoked.as_secs_f64(),
        load(&sweep.revoked),
        load(&sweep.gone),
        load(&sweep.failed),
    );
    // Each token is gone for Vault (not merely unlisted), by its accessor and by itself.
    for t in &run.tasks {
        let (status, _) = run
            .bao
            .call_as(
                run.bao.root_token(),
                "POST",
                "auth/token/lookup-accessor",
                Some(json!({ "accessor": t.accessor })),
            )
            .await;
        assert_ne!(status, 200, "{}: its token outlived the sweep", t.task_id);
    }
    for t in run.tasks.iter().take(10) {
        assert!(
            !run.bao.token_valid(t.token.expose()).await,
            "{}",
            t.task_id
        );
    }
    assert!(run
        .bao
        .tokens_of_role("baton-e2e_load_web")
        .await
        .is_empty());
    // The sweep revoked them all (not their TTL, not anyone else) and forgot them.
    assert_eq!(load(&sweep.revoked), N as u64);
    assert_eq!(load(&sweep.gone), 0);
    assert_eq!(gk.recorded_count(), 0);
    let metrics = ServedApps::metrics(gk.as_ref());
    let revoked = metrics
        .lines()
        .find_map(|l| l.strip_prefix("baton_leases_swept_total{result=\"revoked\"} "))
        .and_then(|v| v.trim().parse::<usize>().ok());
    assert_eq!(revoked, Some(N), "{metrics}");
}

/// HA (docs/ha.md): three `baton serve` replicas on one real ZooKeeper, with one configured
/// gatekeeper URL for the group. The app's task does not ask by itself (no baton-env), so the
/// test's 30 concurrent requests for it, spread over the three replicas, race for the grant:
/// exactly one is granted and one secret id minted; each replica serves the others' refusals as
/// replays. Only the leader wrote the policy, the role and the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secret_zero_over_three_ha_replicas_grants_a_task_once() {
    let Some(bin) = baton_env() else { return };
    if let Some(why) = baton_e2e::zookeeper::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let zk = baton_e2e::zookeeper::ZooKeeper::start().await;
    let w = world(&bin).await;
    let app = json!({
        "cmd": "sleep 600", "cpus": 0.01, "mem": 16, "instances": 1,
        "env": {"DB_PASSWORD": "vault:secret/web#password"},
    });
    std::fs::write(w.repo.join("apps/web.yaml"), app.to_string()).unwrap();
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let urls: Vec<String> = (listeners.iter())
        .map(|l| format!("http://{}", l.local_addr().unwrap()))
        .collect();
    // The group's one gatekeeper URL (a load balancer in production): replica 0's address.
    let group_url = format!("{}{}", urls[0], gatekeeper::PATH);
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut states = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let state = tempfile::tempdir().unwrap();
        let addr = listener.local_addr().unwrap();
        let config = ServeConfig {
            vault: Some(VaultServeConfig {
                gatekeeper_url: Some(group_url.clone()),
                ..vault_config(&w, Duration::from_secs(120))
            }),
            ha: Some(baton::ha::HaConfig {
                servers: zk.connect(),
                path: "/baton/secret-zero-e2e".into(),
                session_timeout: Duration::from_secs(4),
                id: format!("r{i}"),
            }),
            ..baton_e2e::serve_config(
                w.repo.display().to_string(),
                w.marathon_url.clone(),
                state.path(),
                addr,
            )
        };
        states.push(state);
        let s = stop.clone();
        tasks.push(tokio::spawn(async move {
            baton::daemon::serve::serve(config, listener, s)
                .await
                .unwrap();
        }));
    }
    let http = reqwest::Client::new();
    let status = |url: String| {
        let http = http.clone();
        async move {
            http.get(format!("{url}/api/status"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    // The leader deploys the app with the group's URL; every replica then sees it synced (its
    // gatekeeper knows the app from the same cycle). Followers refresh their view on their
    // poll (hourly here) or when asked: ask them once the app runs.
    wait_until(
        "the leader deployed /web",
        Duration::from_secs(90),
        || async {
            (marathon(&w).list_apps().await.unwrap().iter())
                .any(|a| a["id"] == "/web" && a["tasksRunning"].as_u64() == Some(1))
        },
    )
    .await;
    for url in &urls {
        let r = http.post(format!("{url}/api/sync")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 202);
        wait_until(
            "every replica sees /web deployed",
            Duration::from_secs(90),
            || async {
                let st = status(url.clone()).await;
                (st["apps"].as_array().into_iter().flatten())
                    .any(|a| a["id"] == "/web" && a["sync"] == "synced")
            },
        )
        .await;
    }
    let web = web_task(&w).await;
    let task_id = web["id"].as_str().unwrap().to_string();
    let apps = marathon(&w).list_apps().await.unwrap();
    let def = apps.iter().find(|a| a["id"] == "/web").unwrap();
    assert_eq!(def["env"]["BATON_GATEKEEPER_URL"], group_url.as_str());

    let asks = (0..30).map(|k| {
        let (http, url, task) = (
            http.clone(),
            format!("{}{}", urls[k % 3], gatekeeper::PATH),
            task_id.clone(),
        );
        async move { ask(&http, &url, &task, "/web").await }
    });
    let codes = futures::future::join_all(asks).await;
    let granted = codes.iter().filter(|c| **c == 200).count();
    assert_eq!(granted, 1, "answers: {codes:?}");
    assert!(codes.iter().all(|c| *c == 200 || *c == 403), "{codes:?}");
    let mut grants = 0;
    for url in &urls {
        grants += counter(&http, url, r#"decision="granted""#).await;
    }
    assert_eq!(grants, 1);
    assert_eq!(w.secret_ids_minted(), 1, "one secret id ever minted");
    stop.cancel();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .unwrap()
            .unwrap();
    }
    w.stop.cancel();
    w.scheduler.await.unwrap();
}
