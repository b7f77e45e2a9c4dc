//! Secret zero end to end: the dev scheduler in process, the Vault stub with AppRole and
//! wrapping, a sync that creates the app's policy and role and injects the bootstrap env, and
//! the gatekeeper on a test axum server. The app is `baton-env -- sh -c '...'`: it starts and
//! receives its secret; a replayed task id, an unknown task, a too-old task and a request from
//! the wrong host are denied (also after a gatekeeper restart); a pruned app loses its role and
//! policy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::apply::{apply, ApplyOptions, ApplyReport};
use baton::config::{ServeConfig, VaultServeConfig};
use baton::secret_zero::gatekeeper::{
    self, apps_from, DenyReason, GateConfig, Gatekeeper, SchedulerTasks,
};
use baton::secret_zero::vault_admin::{VaultAdmin, VaultAdminConfig};
use baton::secret_zero::wiring::deletes_after;
use baton_core::plan::{self, Policy};
use baton_core::secrets::{self, Bootstrap, VaultPlan};
use baton_core::spec::AppId;
use baton_marathon::marathon::{Marathon, MarathonConfig};
use baton_marathon::Scheduler;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use vault_stub::{spawn, StubConfig, StubHandle};

type Gk = Gatekeeper<SchedulerTasks<Marathon>>;

struct World {
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    state: PathBuf,
    out: PathBuf,
    stub: StubHandle,
    admin: VaultAdmin,
    marathon_url: String,
    stop: CancellationToken,
    scheduler: tokio::task::JoinHandle<()>,
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

async fn world(baton_env: &Path) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let state = tmp.path().join("state");
    let out = tmp.path().join("secret.out");
    std::fs::create_dir_all(&state).unwrap();
    write_repo(&repo, baton_env, &out, true);
    let stub = spawn(StubConfig::default()).await.unwrap();
    stub.put_kv2("secret/web", json!({"password": "s3cr3t-from-vault"}));
    stub.put_kv2("secret/other", json!({"password": "not-yours"}));
    let admin = VaultAdmin::new(VaultAdminConfig {
        addr: stub.url(),
        token: stub.root_token().to_owned().into(),
        approle_mount: "approle".into(),
        timeout: Duration::from_secs(5),
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
        stub,
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
        vault_addr: w.stub.url(),
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
    let policy = w.stub.policy("baton-e2e_web").expect("policy created");
    assert_eq!(
        secrets::policy_paths(&policy)
            .into_iter()
            .collect::<Vec<_>>(),
        ["secret/data/web"]
    );
    assert!(w.stub.has_approle("baton-e2e_web"));
    let got = wait_file(&w.out, Duration::from_secs(30)).await;
    assert_eq!(got.trim(), "s3cr3t-from-vault");
    assert_eq!(
        gk.counters
            .granted
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The secret id carried the task id as metadata.
    let task = web_task(&w).await;
    let task_id = task["id"].as_str().unwrap().to_owned();
    assert_eq!(
        w.stub.secret_id_metadata(),
        vec![json!({"task_id": task_id})]
    );
    // Vault requests per task start: exactly one of each.
    let log = w.stub.requests();
    let count = |p: &str| log.iter().filter(|(_, q)| q == p).count();
    assert_eq!(count("auth/approle/role/baton-e2e_web/secret-id"), 1);
    assert_eq!(count("sys/wrapping/lookup"), 1);
    assert_eq!(count("sys/wrapping/unwrap"), 1);
    assert_eq!(count("auth/approle/login"), 1);
    assert_eq!(count("secret/data/web"), 1);
    assert!(
        !log.iter()
            .any(|(_, q)| q.starts_with("sys/internal/ui/mounts")),
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
    assert_eq!(w.stub.secret_id_metadata().len(), 1);

    // 3. Prune: the app's file is removed; the app goes, then its role and policy.
    write_repo(&w.repo, &bin, &w.out, false);
    let (vplan, report) = sync(&w, &gk, &url).await;
    assert!(report.converged(), "{report:?}");
    assert_eq!(vplan.after_apps.len(), 2, "{vplan:?}");
    assert!(
        w.stub.policy("baton-e2e_web").is_none(),
        "policy not removed"
    );
    assert!(!w.stub.has_approle("baton-e2e_web"), "role not removed");
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
        addr: w.stub.url(),
        token: w.stub.root_token().to_owned().into(),
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

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The whole flow through the real daemon: `baton serve` (loop + gatekeeper route + /metrics),
/// the dev scheduler, the Vault stub. The loop creates the policy and role before the app,
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
    let policy = w.stub.policy("baton-e2e_web").expect("policy created");
    assert_eq!(
        secrets::policy_paths(&policy)
            .into_iter()
            .collect::<Vec<_>>(),
        ["secret/data/web"]
    );
    assert!(w.stub.has_approle("baton-e2e_web"));
    let apps = marathon(&w).list_apps().await.unwrap();
    let web = apps.iter().find(|a| a["id"] == "/web").unwrap();
    assert_eq!(web["env"]["BATON_GATEKEEPER_URL"], gk_url.as_str());
    assert_eq!(web["env"]["VAULT_ADDR"], w.stub.url().as_str());
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
    assert_eq!(
        w.stub.secret_id_metadata().len(),
        1,
        "one secret id ever minted"
    );

    // 3. Prune while Vault is sealed: the cycle fails clearly and deletes nothing; once Vault
    //    answers again (the retry after backoff), the app goes, then its role and policy.
    w.stub.fail_next(3, vault_stub::Fault::Sealed);
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
    assert!(w.stub.has_approle("baton-e2e_web") && w.stub.policy("baton-e2e_web").is_some());
    wait_until(
        "role and policy removed",
        Duration::from_secs(60),
        || async {
            w.stub.policy("baton-e2e_web").is_none() && !w.stub.has_approle("baton-e2e_web")
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
    assert!(w.stub.policy("baton-e2e_web").is_none());
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

    // With Vault: the policy edited out of band is an update, an orphan is a delete.
    let stub = spawn(StubConfig::default()).await.unwrap();
    let admin_config = VaultAdminConfig {
        addr: stub.url(),
        token: stub.root_token().to_owned().into(),
        approle_mount: "approle".into(),
        timeout: Duration::from_secs(5),
    };
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
    admin
        .write_policy("baton-orphan", "# left over\n")
        .await
        .unwrap();
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
        text.contains("unmanaged (never touched): policy baton-orphan: not an owner-scoped name"),
        "{text}"
    );
    assert!(!text.contains("note:"), "{text}");
    let (_, json_out) = run(Some(vault), Format::Json).await;
    let doc: Value = serde_json::from_str(&json_out).unwrap();
    assert_plan_schema(&doc);
    assert_eq!(doc["vault"]["state"], "observed");
    assert_eq!(doc["vault"]["unmanaged"][0]["name"], "baton-orphan");
    // Nothing was written: plan only reads.
    assert_eq!(
        stub.policy("baton-orphan").as_deref(),
        Some("# left over\n")
    );
    assert!(!stub.has_approle("baton-e2e_web"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_that_ignores_wrapping_is_refused_not_passed_on() {
    let Some(bin) = baton_env() else { return };
    let w = world(&bin).await;
    w.stub.ignore_wrapping(true);
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
    while w.stub.live_secret_ids("baton-e2e_web") > 0 {
        assert!(Instant::now() < deadline, "a plain secret id stayed valid");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        w.stub
            .requests()
            .iter()
            .any(|(_, p)| p.ends_with("/secret-id-accessor/destroy")),
        "destroyed by accessor"
    );
}

/// Load: 1,000 tasks of one app ask within one burst; every one must get credentials.
/// Gatekeeper over HTTP (served set persisted, host check on) with a fixed task table, and the
/// sidecar's own Vault flow (baton_env's login + resolve) against the stub. Prints throughput,
/// latency percentiles and Vault requests per task start (docs/benchmarks.md, `## secret zero`).
///
/// `cargo build --release -p baton-sidecar && cargo test --release -p baton-e2e --test e2e \
///   secret_zero_load -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "load benchmark; run explicitly with --ignored (release build for numbers)"]
async fn secret_zero_load() {
    use baton::secret_zero::gatekeeper::{AppGate, StaticTasks, TaskInfo};
    use baton_env::auth::{
        login, AuthError, AuthMethod, GatekeeperApi, GatekeeperGrant, HttpGatekeeper,
    };

    /// The sidecar's gatekeeper client, timed: how long the gatekeeper took to answer.
    struct Timed<'a> {
        inner: &'a HttpGatekeeper,
        took: std::sync::Mutex<Option<Duration>>,
    }
    impl GatekeeperApi for Timed<'_> {
        async fn grant(&self, task_id: &str, app_id: &str) -> Result<GatekeeperGrant, AuthError> {
            let t0 = Instant::now();
            let grant = self.inner.grant(task_id, app_id).await;
            *self.took.lock().unwrap() = Some(t0.elapsed());
            grant
        }
    }
    use baton_env::resolve::{resolve, KvVersions};
    use baton_env::retry::RetryPolicy;
    use baton_env::vault::{HttpVault, VaultConfig};

    const N: usize = 1000;
    let tmp = tempfile::tempdir().unwrap();
    let stub = spawn(StubConfig::default()).await.unwrap();
    stub.put_kv2("secret/web", json!({"password": "pw"}));
    stub.put_kv2("secret/shared", json!({"user": "u"}));
    let admin = VaultAdmin::new(VaultAdminConfig {
        addr: stub.url(),
        token: stub.root_token().to_owned().into(),
        approle_mount: "approle".into(),
        timeout: Duration::from_secs(30),
    })
    .unwrap();
    let app = AppId::parse("/load/web").unwrap();
    let name = secrets::object_name("e2e", &app);
    let paths: std::collections::BTreeSet<String> = [
        "secret/data/web".to_string(),
        "secret/data/shared".to_string(),
    ]
    .into();
    admin
        .write_policy(&name, &secrets::policy_text("e2e", &app, &paths))
        .await
        .unwrap();
    admin
        .write_role(
            &name,
            &json!({"token_policies": [name], "token_ttl": 300, "token_max_ttl": 3600,
                    "secret_id_num_uses": 1, "secret_id_ttl": 120}),
        )
        .await
        .unwrap();
    let role_id = admin.role_id(&name).await.unwrap().unwrap();

    let now_ms = (gatekeeper::system_clock())();
    let tasks = StaticTasks::default();
    for i in 0..N {
        tasks.insert(TaskInfo {
            id: format!("load_web.{i}"),
            app_id: app.to_string(),
            owner: Some("e2e".into()),
            state: "TASK_STAGING".into(),
            staged_at_ms: Some(now_ms),
            addrs: vec!["127.0.0.1".parse().unwrap()],
        });
    }
    let config = GateConfig {
        owner: "e2e".into(),
        state_dir: Some(tmp.path().to_owned()),
        ..Default::default()
    };
    let gk = Arc::new(
        Gatekeeper::new(tasks, admin.clone(), config, gatekeeper::system_clock()).unwrap(),
    );
    gk.set_apps(
        [(
            app.clone(),
            AppGate {
                role: name.clone(),
                role_id: Some(role_id.clone()),
                instances: N as u64,
            },
        )]
        .into(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}{}",
        listener.local_addr().unwrap(),
        gatekeeper::PATH
    );
    let router = gatekeeper::router(gk.clone());
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });

    let vault = Arc::new(
        HttpVault::new(&VaultConfig {
            addr: stub.url(),
            namespace: None,
            ca_cert: None,
            timeout: Duration::from_secs(30),
        })
        .unwrap(),
    );
    let gkc = Arc::new(HttpGatekeeper {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        url,
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
    stub.clear_requests();

    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..N {
        let (vault, gkc, plan, kv, name) = (
            vault.clone(),
            gkc.clone(),
            plan.clone(),
            kv.clone(),
            name.clone(),
        );
        set.spawn(async move {
            let t0 = Instant::now();
            let policy = RetryPolicy::new(Duration::from_secs(10));
            // `baton-env --auth gatekeeper` as the reconciler configures it: the role pinned
            // (wrapping token lookup checks the creation path), unwrap, AppRole login.
            let method = AuthMethod::Gatekeeper {
                mount: "approle".into(),
                task_id: format!("load_web.{i}"),
                app_id: "/load/web".into(),
                role: name.clone(),
                role_id: None,
            };
            let timed = Timed {
                inner: gkc.as_ref(),
                took: std::sync::Mutex::new(None),
            };
            let token = login(vault.as_ref(), &timed, &method, &policy).await?;
            let gk_latency = timed
                .took
                .lock()
                .unwrap()
                .ok_or_else(|| anyhow::anyhow!("the gatekeeper was not asked"))?;
            let resolved = resolve(vault.as_ref(), &token.token, &plan, &kv, &policy)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(resolved.vars.len() == 3, "not every variable resolved");
            Ok::<_, anyhow::Error>((gk_latency, t0.elapsed()))
        });
    }
    let mut gk_lat = Vec::new();
    let mut start_lat = Vec::new();
    let mut failures = Vec::new();
    while let Some(r) = set.join_next().await {
        match r.unwrap() {
            Ok((g, s)) => {
                gk_lat.push(g);
                start_lat.push(s);
            }
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
    assert_eq!(start_lat.len(), N);

    let log = stub.requests();
    let count = |pred: &dyn Fn(&str) -> bool| log.iter().filter(|(_, p)| pred(p)).count();
    let per = |n: usize| n as f64 / N as f64;
    let secret_ids = count(&|p| p.ends_with("/secret-id"));
    let lookups = count(&|p| p == "sys/wrapping/lookup");
    let unwraps = count(&|p| p == "sys/wrapping/unwrap");
    let logins = count(&|p| p == "auth/approle/login");
    let reads = count(&|p| p.starts_with("secret/data/"));
    assert_eq!(
        (secret_ids, lookups, unwraps, logins, reads),
        (N, N, N, N, 2 * N),
        "{} requests",
        log.len()
    );
    assert_eq!(log.len(), 6 * N, "no other Vault request per start");
    assert_eq!(gk.served_count(), N);

    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64() * 1000.0
    };
    println!(
        "secret zero load: {N} tasks, all granted, wall {:.0} ms",
        wall.as_secs_f64() * 1000.0
    );
    println!(
        "throughput: {:.0} task starts/s",
        N as f64 / wall.as_secs_f64()
    );
    println!(
        "gatekeeper latency ms: p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
        pct(&mut gk_lat, 0.5),
        pct(&mut gk_lat, 0.9),
        pct(&mut gk_lat, 0.99),
        pct(&mut gk_lat, 1.0)
    );
    println!(
        "full start (gatekeeper + lookup + unwrap + login + reads) ms: p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
        pct(&mut start_lat, 0.5), pct(&mut start_lat, 0.9), pct(&mut start_lat, 0.99), pct(&mut start_lat, 1.0)
    );
    println!(
        "vault requests per start: secret-id {:.2}, wrap lookup {:.2}, unwrap {:.2}, login {:.2}, reads {:.2} (2 distinct paths); total {:.2}",
        per(secret_ids), per(lookups), per(unwraps), per(logins), per(reads), per(log.len())
    );
}
