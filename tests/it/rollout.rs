//! Progressive delivery proven on the real traffic path (issue 15): unmodified marathon-lb
//! (`../shared/marathon-lb`) drives Debian's HAProxy in front of the dev scheduler's tasks
//! (`tests/python/rollout_app.py`, which says its version in `X-Version`), and a load generator
//! sends steady requests through the service port (`baton_e2e::load`, bounded, loopback only).
//! Each test skips with a printed reason when marathon-lb, `haproxy` or its virtualenv is
//! missing (`scripts/install-deps.sh`).
//!
//! The traffic split is marathon-lb's own mechanism (design §1): two apps in one
//! `HAPROXY_DEPLOYMENT_GROUP`; the one with the later `HAPROXY_DEPLOYMENT_STARTED_AT` is the new
//! one; for C healthy new tasks marathon-lb disables C of the S stable servers, so the new
//! version's share is C/S.

use std::time::Duration;

use baton_e2e::daemon::{status_app, Daemon};
use baton_e2e::devsched::{DevScheduler, TempRepo};
use baton_e2e::freeze::FreezableProxy;
use baton_e2e::load::{self, Load, Plan, Summary};
use baton_e2e::mlb::{self, MarathonLb, Tools};
use serde_json::{json, Value};

/// Stable instances: one canary task is 10% of the traffic.
const S: usize = 10;
/// marathon-lb's deployment-group timestamp, naive as zdd.py writes it (an offset makes
/// marathon-lb raise `TypeError` and stop configuring every app).
const STARTED_AT: &str = "2026-01-02T03:04:05.000000";

/// The command of a task of `tests/python/rollout_app.py` (the virtualenv's Python: a known
/// interpreter, without pyenv's shims in the way).
fn app_cmd(tools: &Tools) -> String {
    let script = baton_e2e::repo_root().join("tests/python/rollout_app.py");
    format!(
        "exec '{}' '{}' --port $PORT0",
        tools.python.display(),
        script.display()
    )
}

/// An app of `rollout_app.py` with an HTTP health check every second (marathon-lb puts a task
/// behind HAProxy only once it is healthy, and HTTP health checks make the frontend http mode,
/// so HAProxy counts responses by status) and 5 s to serve after SIGTERM.
fn web_app(tools: &Tools, id: &str, instances: usize, version: &str, labels: Value) -> Value {
    json!({
        "id": id,
        "cmd": app_cmd(tools),
        "instances": instances,
        "cpus": 0.01,
        "mem": 32,
        "env": {"VERSION": version, "FAIL_RATE": "0"},
        "portDefinitions": [{"port": 0, "protocol": "tcp", "name": "http"}],
        "healthChecks": [{
            "protocol": "HTTP", "path": "/health", "portIndex": 0,
            "gracePeriodSeconds": 60, "intervalSeconds": 1, "timeoutSeconds": 2,
            "maxConsecutiveFailures": 3
        }],
        "taskKillGracePeriodSeconds": 5,
        "labels": labels,
    })
}

/// The stable app's labels: in marathon-lb's `external` group, on `127.0.0.1:<service_port>`,
/// in the deployment group `/shop/api` (no `STARTED_AT`: always the old app).
fn stable_labels(service_port: u16) -> Value {
    json!({
        "HAPROXY_GROUP": "external",
        "HAPROXY_0_BIND_ADDR": "127.0.0.1",
        "HAPROXY_0_PORT": service_port.to_string(),
        "HAPROXY_DEPLOYMENT_GROUP": "/shop/api",
    })
}

/// The HAProxy backend of `/shop/api` on `service_port`.
fn backend(service_port: u16) -> String {
    format!("shop_api_{service_port}")
}

async fn create(dev: &DevScheduler, app: &Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v2/apps", dev.url))
        .json(app)
        .send()
        .await
        .expect("POST /v2/apps");
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status.as_u16(), 201, "create {}: {body}", app["id"]);
}

/// HAProxy's server name of a task at `127.0.0.1:port` (marathon-lb's `<ip>_<port>`).
fn server_name(port: u64) -> String {
    format!("127_0_0_1_{port}")
}

/// The host ports of `id`'s tasks.
async fn task_ports(dev: &DevScheduler, id: &str) -> Vec<u64> {
    dev.app(id)
        .await
        .and_then(|a| a["tasks"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t["ports"][0].as_u64())
        .collect()
}

/// Scenario 0, the harness and the mechanism without any of Baton's rollout code: a stable app
/// of 10 instances behind marathon-lb, then by hand a second app of 1 instance (v2) in the same
/// deployment group with a later `STARTED_AT` and service port 0. marathon-lb merges them into
/// one backend with one stable server disabled, so about one request in ten through the
/// service port reaches v2, and no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_lb_splits_traffic_one_canary_task_in_ten() {
    let Some(tools) = Tools::or_skip("marathon_lb_splits_traffic_one_canary_task_in_ten") else {
        return;
    };
    let dev = DevScheduler::start().await;
    let mut lb = MarathonLb::start(&tools, &dev.url);
    let port = mlb::free_port();
    create(
        &dev,
        &web_app(&tools, "/shop/api", S, "v1", stable_labels(port)),
    )
    .await;
    lb.wait_servers(&backend(port), S, Some(S)).await;
    assert!(
        lb.config().contains(&format!("bind 127.0.0.1:{port}")),
        "{}",
        lb.config()
    );

    create(
        &dev,
        &web_app(
            &tools,
            "/shop/api-canary",
            1,
            "v2",
            json!({
                "HAPROXY_DEPLOYMENT_GROUP": "/shop/api",
                "HAPROXY_DEPLOYMENT_STARTED_AT": STARTED_AT,
            }),
        ),
    )
    .await;
    // One backend of 11 servers: 10 UP (9 stable + the canary), 1 stable disabled (MAINT).
    let rows = lb.wait_servers(&backend(port), S, Some(S + 1)).await;
    let canary = task_ports(&dev, "/shop/api-canary").await;
    assert_eq!(canary.len(), 1);
    let canary_row = rows
        .iter()
        .find(|r| r.get("svname") == server_name(canary[0]))
        .unwrap_or_else(|| panic!("no server for the canary task in {rows:#?}"));
    assert!(canary_row.get("status").starts_with("UP"), "{canary_row:?}");
    let maint: Vec<_> = rows.iter().filter(|r| r.get("status") == "MAINT").collect();
    assert_eq!(maint.len(), 1, "one stable server drained: {rows:#?}");
    assert!(
        !lb.config().contains("api-canary"),
        "the canary has no frontend of its own:\n{}",
        lb.config()
    );

    let url = format!("http://127.0.0.1:{port}/");
    let plan = Plan {
        max_requests: 400,
        max_time: Duration::from_secs(60),
        ..Plan::default()
    };
    let samples = Load::start(&url, plan).wait_done().await;
    let sum = Summary::of(&samples);
    assert_eq!(sum.total, 400, "{sum:?}");
    assert_eq!(
        sum.failed,
        0,
        "failed requests: {:#?}",
        load::failures(&samples, 10)
    );
    let share = sum.share("v2");
    assert!(
        (0.05..=0.15).contains(&share),
        "v2 answered {:.1}% of the requests, not 10 ±5: {sum:?}",
        share * 100.0
    );
    // HAProxy's own per-server counts agree: the canary's server answered what v2 answered.
    let rows = lb.servers(&backend(port)).await;
    let canary_row = rows
        .iter()
        .find(|r| r.get("svname") == server_name(canary[0]))
        .expect("the canary's server");
    assert_eq!(
        canary_row.responses() as usize,
        sum.by_version.get("v2").copied().unwrap_or(0),
        "{canary_row:?}"
    );
    drop(lb);
    dev.stop().await;
}

/// Scenario 0b, the whole hand-over by hand (what the rollout daemon will do, without it), to
/// prove the traffic path loses no request when tasks come and go: the canary is scaled 1 -> 5
/// -> 10 (10%, 50%, then every stable server disabled), the stable is replaced by v2 (Marathon
/// restarts its tasks, killing the old ones), the canary is deleted. No request fails at any
/// point, the shares follow the steps, and at the end v2 answers everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_lb_hand_over_by_hand_loses_no_request() {
    let Some(tools) = Tools::or_skip("marathon_lb_hand_over_by_hand_loses_no_request") else {
        return;
    };
    let dev = DevScheduler::start().await;
    let mut lb = MarathonLb::start(&tools, &dev.url);
    let port = mlb::free_port();
    let be = backend(port);
    let stable = web_app(&tools, "/shop/api", S, "v1", stable_labels(port));
    create(&dev, &stable).await;
    lb.wait_servers(&be, S, Some(S)).await;
    let canary_labels = json!({
        "HAPROXY_DEPLOYMENT_GROUP": "/shop/api",
        "HAPROXY_DEPLOYMENT_STARTED_AT": STARTED_AT,
    });
    let mut canary = web_app(&tools, "/shop/api-canary", 1, "v2", canary_labels);
    create(&dev, &canary).await;
    lb.wait_servers(&be, S, Some(S + 1)).await;

    let load = Load::start(&format!("http://127.0.0.1:{port}/"), rollout_load());
    // Each step serves 100 requests before the next; `marks`: (step, from, to).
    let mut marks = Vec::new();
    for (step, next) in [("10%", Some(5)), ("50%", Some(S)), ("100%", None)] {
        let from = load.elapsed();
        let enough = load.count() + 100;
        baton_e2e::wait_until(
            &format!("100 requests at {step}"),
            mlb::DEADLINE,
            || async { load.count() >= enough || load.finished() },
        )
        .await;
        marks.push((step, from, load.elapsed()));
        if let Some(c) = next {
            canary["instances"] = json!(c);
            dev.put(&canary).await;
            lb.wait_servers(&be, S, Some(S + c)).await;
        }
    }
    // Full production: the stable becomes v2 (a restart of all its tasks), then the canary goes.
    let mut v2 = stable.clone();
    v2["env"]["VERSION"] = json!("v2");
    dev.put(&v2).await;
    let restarted = |apps: &[Value]| {
        apps.iter().any(|a| {
            let tasks = a["tasks"].as_array().cloned().unwrap_or_default();
            a["id"] == "/shop/api"
                && a["deployments"].as_array().is_some_and(Vec::is_empty)
                && tasks.len() == S
                && tasks.iter().all(|t| {
                    t["version"] == a["version"] && t["healthCheckResults"][0]["alive"] == true
                })
        })
    };
    baton_e2e::wait_until(
        "the stable at v2, healthy, its old tasks gone",
        mlb::DEADLINE,
        || async { restarted(&dev.apps().await) },
    )
    .await;
    let resp = reqwest::Client::new()
        .delete(format!("{}/v2/apps/shop/api-canary", dev.url))
        .send()
        .await
        .expect("DELETE the canary");
    assert!(resp.status().is_success(), "{}", resp.status());
    lb.wait_servers(&be, S, Some(S)).await;
    // Traffic on the final state.
    let from = load.elapsed();
    let enough = load.count() + 100;
    baton_e2e::wait_until("100 requests on the final state", mlb::DEADLINE, || async {
        load.count() >= enough || load.finished()
    })
    .await;
    assert!(!load.finished(), "the load ended before the hand-over did");
    marks.push(("final", from, load.elapsed()));
    let samples = load.stop().await;

    let all = Summary::of(&samples);
    assert_eq!(
        all.failed,
        0,
        "failed requests ({all:?}, marks {marks:?}): {:#?}",
        load::failures(&samples, 10)
    );
    let step = |i: usize| {
        let (_, from, to) = marks[i];
        Summary::of(samples.iter().filter(|s| s.at >= from && s.at < to))
    };
    for (i, (low, high)) in [(0.05, 0.15), (0.35, 0.65), (1.0, 1.0), (1.0, 1.0)]
        .into_iter()
        .enumerate()
    {
        let sum = step(i);
        let share = sum.share("v2");
        assert!(
            (low..=high).contains(&share),
            "{}: v2 answered {:.1}%: {sum:?}",
            marks[i].0,
            share * 100.0
        );
    }
    eprintln!("bench: marathon-lb hand-over by hand (no Baton): {all:?}, marks {marks:?}");
    drop(lb);
    dev.stop().await;
}

/// marathon-lb reads `app['labels']` of every app without a default: an app created without
/// labels must be listed with `"labels": {}` (as Marathon does), or marathon-lb raises
/// `KeyError` and configures no app at all, this one's neighbours included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_lb_configures_apps_beside_an_app_without_labels() {
    let Some(tools) = Tools::or_skip("marathon_lb_configures_apps_beside_an_app_without_labels")
    else {
        return;
    };
    let dev = DevScheduler::start().await;
    create(
        &dev,
        &json!({"id": "/batch/plain", "cmd": "exec sleep 600", "cpus": 0.01, "mem": 16}),
    )
    .await;
    let mut lb = MarathonLb::start(&tools, &dev.url);
    let port = mlb::free_port();
    let labels = json!({
        "HAPROXY_GROUP": "external",
        "HAPROXY_0_BIND_ADDR": "127.0.0.1",
        "HAPROXY_0_PORT": port.to_string(),
    });
    create(&dev, &web_app(&tools, "/web", 1, "v1", labels)).await;
    lb.wait_servers(&format!("web_{port}"), 1, Some(1)).await;
    let answer = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .expect("GET through HAProxy");
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(
        answer
            .headers()
            .get("x-version")
            .and_then(|v| v.to_str().ok()),
        Some("v1")
    );
    drop(lb);
    dev.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Scenarios 1-3 of issue 15: `baton serve --haproxy-stats` drives the rollout. Written against
// the documented contract (the spec's `baton.rollout`, `--haproxy-stats`, `/api/status`
// `apps[].rollout` and `apps[].rolledBack`), ignored until the rollout daemon is merged.

/// The rollout of the issue: isolated (`/health` must answer `expect`), 10% for 5 s, 50% for
/// 5 s, then full; more than 5% 5xx over at least 20 canary responses rolls back.
fn rollout_block(expect: u16) -> String {
    format!(
        "baton:\n\
         \x20 rollout:\n\
         \x20   strategy: canary\n\
         \x20   steps:\n\
         \x20     - isolated: {{check: {{http: /health, expect: {expect}}}}}\n\
         \x20     - traffic: 10\n\
         \x20       pause: 5s\n\
         \x20     - traffic: 50\n\
         \x20       pause: 5s\n\
         \x20   analysis:\n\
         \x20     maxErrorRate: 0.05\n\
         \x20     minRequests: 20\n"
    )
}

/// `/shop/api` as a spec in git: [`web_app`]'s definition with its version, failure rate and
/// rollout block (Baton adds the deployment-group label itself).
fn shop_spec(tools: &Tools, port: u16, version: &str, fail_rate: &str, rollout: &str) -> String {
    let cmd = app_cmd(tools);
    format!(
        "cmd: \"{cmd}\"\n\
         instances: {S}\n\
         cpus: 0.01\n\
         mem: 32\n\
         env: {{VERSION: {version}, FAIL_RATE: \"{fail_rate}\"}}\n\
         portDefinitions: [{{port: 0, protocol: tcp, name: http}}]\n\
         healthChecks:\n\
         \x20 - {{protocol: HTTP, path: /health, portIndex: 0, gracePeriodSeconds: 60, intervalSeconds: 1, timeoutSeconds: 2, maxConsecutiveFailures: 3}}\n\
         taskKillGracePeriodSeconds: 5\n\
         labels: {{HAPROXY_GROUP: external, HAPROXY_0_BIND_ADDR: 127.0.0.1, HAPROXY_0_PORT: \"{port}\"}}\n\
         {rollout}"
    )
}

/// blueGreen: v2 at full size beside v1, checked isolated, then all traffic at once; v1 is kept
/// (and the switch judged) for a 10 s grace before it is replaced.
fn blue_green_block() -> String {
    "baton:\n\
     \x20 rollout:\n\
     \x20   strategy: blueGreen\n\
     \x20   steps:\n\
     \x20     - isolated: {check: {http: /health, expect: 200}}\n\
     \x20   grace: 10s\n\
     \x20   analysis:\n\
     \x20     maxErrorRate: 0.05\n\
     \x20     minRequests: 20\n"
        .to_string()
}

/// The dev scheduler, marathon-lb + HAProxy, a repo with `/shop/api` at v1 and `baton serve
/// --haproxy-stats` on it, synced: 10 v1 servers UP behind the service port.
struct Stack {
    tools: Tools,
    dev: DevScheduler,
    lb: MarathonLb,
    repo: TempRepo,
    state: tempfile::TempDir,
    /// `baton serve`; `None` only while it is being restarted.
    daemon: Option<Daemon>,
    /// The scheduler's URL `baton serve` uses: the dev scheduler's, or the proxy's.
    marathon: String,
    proxy: Option<FreezableProxy>,
    port: u16,
}

/// `baton serve`'s arguments for `dev`, `repo`, `state` and the load balancer's stats.
async fn serve(marathon: &str, repo: &TempRepo, state: &std::path::Path, stats: &str) -> Daemon {
    Daemon::start(
        &[
            "--marathon".as_ref(),
            marathon.as_ref(),
            "--poll-interval".as_ref(),
            "1s".as_ref(),
            "--repo".as_ref(),
            repo.path().as_os_str(),
            "--state-dir".as_ref(),
            state.as_os_str(),
            "--haproxy-stats".as_ref(),
            stats.as_ref(),
            "--rollout-tick".as_ref(),
            "1s".as_ref(),
        ],
        &[("BATON_WEBHOOK_SECRET", "e2e")],
    )
    .await
}

impl Stack {
    async fn start(test: &str) -> Option<Stack> {
        Stack::start_with(test, false).await
    }

    /// [`Stack::start`]; with `via_proxy`, `baton serve` reaches the scheduler through a
    /// [`FreezableProxy`] (marathon-lb still reads it directly).
    async fn start_with(test: &str, via_proxy: bool) -> Option<Stack> {
        let tools = Tools::or_skip(test)?;
        let dev = DevScheduler::start().await;
        let proxy = if via_proxy {
            Some(FreezableProxy::start(&dev.url).await)
        } else {
            None
        };
        let marathon = proxy.as_ref().map_or(dev.url.clone(), |p| p.url.clone());
        let mut lb = MarathonLb::start(&tools, &dev.url);
        let port = mlb::free_port();
        let repo = TempRepo::new("owner: e2e\n");
        repo.write(
            "shop/api.yaml",
            &shop_spec(&tools, port, "v1", "0", &rollout_block(200)),
        );
        let state = tempfile::tempdir().expect("state dir");
        let serve = serve(&marathon, &repo, state.path(), &lb.stats_url()).await;
        serve
            .until_status("/shop/api synced", |st| {
                status_app(st, "/shop/api").is_some_and(|a| a["sync"] == "synced")
            })
            .await;
        let live = dev.app("/shop/api").await.expect("/shop/api exists");
        assert_eq!(
            live["labels"]["HAPROXY_DEPLOYMENT_GROUP"], "/shop/api",
            "Baton puts the stable into its deployment group: {live}"
        );
        lb.wait_servers(&backend(port), S, Some(S)).await;
        Some(Stack {
            tools,
            dev,
            lb,
            repo,
            state,
            daemon: Some(serve),
            marathon,
            proxy,
            port,
        })
    }

    /// Commit a new definition of `/shop/api` (the directory repo is watched).
    fn push(&self, version: &str, fail_rate: &str, rollout: &str) {
        baton_e2e::replace_file(
            &self.repo.path().join("apps/shop/api.yaml"),
            &shop_spec(&self.tools, self.port, version, fail_rate, rollout),
        );
    }

    /// `kill -9` of `baton serve` (the process is gone when this returns), and a new one on
    /// the same state dir.
    async fn kill_9_and_restart(&mut self) {
        // Dropping the handle kills the process with SIGKILL and reaps it.
        drop(self.daemon.take());
        self.daemon = Some(
            serve(
                &self.marathon,
                &self.repo,
                self.state.path(),
                &self.lb.stats_url(),
            )
            .await,
        );
    }

    fn serve(&self) -> &Daemon {
        self.daemon.as_ref().expect("baton serve runs")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Wait until the rollout is in its 10% traffic step with the canary's one server UP beside
    /// one drained stable server; returns when (on `load`'s clock) and the status's `step` of
    /// it. The step is told by its share, not its index (whether `step` counts the isolated
    /// step is the daemon's business).
    async fn ten_percent_step(&mut self, load: &Load) -> (Duration, Value) {
        let be = backend(self.port);
        let end = tokio::time::Instant::now() + mlb::DEADLINE;
        loop {
            let r = self.rollout().await.unwrap_or_default();
            let ten = r["trafficPercent"]
                .as_f64()
                .is_some_and(|p| (p - 10.0).abs() < 0.5);
            if r["phase"] == "step" && ten {
                let rows = self.lb.servers(&be).await;
                let up = rows
                    .iter()
                    .filter(|r| r.get("status").starts_with("UP"))
                    .count();
                if rows.len() == S + 1 && up == S {
                    return (load.elapsed(), r["step"].clone());
                }
            }
            self.lb.assert_running("the 10% step");
            assert!(
                tokio::time::Instant::now() < end,
                "no 10% step:\n{}",
                self.serve().log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `/api/status`'s `apps[/shop/api].rollout`, when one runs.
    async fn rollout(&self) -> Option<Value> {
        let st = self.serve().status().await;
        status_app(&st, "/shop/api")
            .map(|a| a["rollout"].clone())
            .filter(|r| !r.is_null())
    }

    /// The stable's definition as the test compares it (no status fields).
    async fn stable(&self) -> (Value, Vec<String>) {
        let app = self.dev.app("/shop/api").await.expect("/shop/api");
        let tasks = app["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["id"].as_str().map(str::to_string))
            .collect();
        (app, tasks)
    }

    async fn stop(self) {
        let Stack {
            dev, lb, daemon, ..
        } = self;
        if let Some(d) = daemon {
            d.stop().await;
        }
        drop(lb);
        dev.stop().await;
    }
}

/// The load for a whole rollout: 40 req/s, at most 6,000 requests or 180 s.
fn rollout_load() -> Plan {
    Plan {
        max_requests: 6000,
        max_time: Duration::from_secs(180),
        ..Plan::default()
    }
}

/// Scenario 1: a good v2 goes isolated -> 10% -> 50% -> full. At the 10% step about one request
/// in ten (±5 points) is answered by v2; at the end only `/shop/api` remains, at v2; no request
/// fails over the whole rollout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_good_version_goes_to_full_with_no_failed_request() {
    let Some(mut stack) =
        Stack::start("rollout_good_version_goes_to_full_with_no_failed_request").await
    else {
        return;
    };
    let load = Load::start(&stack.url(), rollout_load());
    let pushed = load.elapsed();
    stack.push("v2", "0", &rollout_block(200));

    // The 10% step, from the moment the canary's server is UP beside one drained stable server
    // to the moment the rollout leaves that step.
    let be = backend(stack.port);
    let end = tokio::time::Instant::now() + mlb::DEADLINE;
    let (t0, ten_percent_step) = stack.ten_percent_step(&load).await;
    let t1 = loop {
        let r = stack.rollout().await.unwrap_or_default();
        if !(r["phase"] == "step" && r["step"] == ten_percent_step) {
            break load.elapsed();
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the 10% step never ended:\n{}",
            stack.serve().log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Full production: the rollout is over, the stable runs v2, the canary is gone, and HAProxy
    // has the 10 stable servers only, all UP.
    stack
        .serve()
        .until_status("the rollout to complete", |st| {
            status_app(st, "/shop/api")
                .is_some_and(|a| a["rollout"].is_null() && a["sync"] == "synced")
        })
        .await;
    stack
        .dev
        .wait_for("only /shop/api, at v2", |apps| {
            apps.len() == 1 && apps[0]["id"] == "/shop/api" && apps[0]["env"]["VERSION"] == "v2"
        })
        .await;
    stack.lb.wait_servers(&be, S, Some(S)).await;
    let full = load.elapsed();
    assert!(
        !load.finished(),
        "the load ended before the rollout did: raise its bounds"
    );
    let samples = load.stop().await;

    let all = Summary::of(&samples);
    assert_eq!(
        all.failed,
        0,
        "failed requests: {:#?}",
        load::failures(&samples, 10)
    );
    let step = Summary::of(samples.iter().filter(|s| s.at >= t0 && s.at < t1));
    assert!(
        step.total >= 100,
        "too few requests in the 10% step: {step:?}"
    );
    let share = step.share("v2");
    assert!(
        (0.05..=0.15).contains(&share),
        "v2 answered {:.1}% at the 10% step, not 10 ±5: {step:?}",
        share * 100.0
    );
    assert_eq!(
        samples.last().and_then(|s| s.version.as_deref()),
        Some("v2"),
        "v2 answers at the end"
    );
    // docs/benchmarks.md (scripts/bench-rollout.sh collects these lines).
    eprintln!(
        "bench: baton canary good: push to full production {:.1} s, failed requests {}/{}, 10% step share {:.1}%",
        (full - pushed).as_secs_f64(),
        all.failed,
        all.total,
        share * 100.0
    );
    stack.stop().await;
}

/// Scenario 2: a v2 that answers 500 to half its requests is rolled back automatically during
/// the 10% step, once it has `minRequests` (20) responses; users saw 5xx only from v2; the
/// stable app's definition and tasks are untouched; `/api/status` says which step and numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_bad_version_is_rolled_back_at_the_first_step() {
    let Some(mut stack) =
        Stack::start("rollout_bad_version_is_rolled_back_at_the_first_step").await
    else {
        return;
    };
    let (before, tasks_before) = stack.stable().await;
    let load = Load::start(&stack.url(), rollout_load());
    let pushed = load.elapsed();
    stack.push("v2", "0.5", &rollout_block(200));

    // Until the rollback, the canary never grows past its one task of the 10% step.
    let end = tokio::time::Instant::now() + mlb::DEADLINE;
    let mut most = 0;
    let st = loop {
        if let Some(canary) = stack.dev.app("/shop/api-canary").await {
            most = most.max(canary["instances"].as_u64().unwrap_or(0));
        }
        let st = stack.serve().status().await;
        let done = status_app(&st, "/shop/api")
            .is_some_and(|a| a["rollout"].is_null() && a["rolledBack"].is_object());
        if done {
            break st;
        }
        stack.lb.assert_running("the rollback");
        assert!(
            tokio::time::Instant::now() < end,
            "no rollback:\n{}",
            stack.serve().log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        most, 1,
        "rolled back during the 10% step, before any scale-up"
    );
    let app = status_app(&st, "/shop/api").expect("/shop/api in the status");
    let reason = &app["rolledBack"]["reason"];
    assert_eq!(reason["kind"], "analysis", "{app:#}");
    assert!(reason["step"].is_u64(), "the step is reported: {app:#}");
    let (requests, rate) = (
        reason["requests"].as_u64().unwrap_or(0),
        reason["rate"].as_f64().unwrap_or(0.0),
    );
    assert!(requests >= 20 && rate > 0.05, "the numbers: {reason}");
    stack
        .dev
        .wait_for("the canary removed", |apps| {
            apps.iter().all(|a| a["id"] != "/shop/api-canary")
        })
        .await;
    stack
        .lb
        .wait_servers(&backend(stack.port), S, Some(S))
        .await;
    let samples = load.stop().await;

    // Errors only from v2's share, and v2 was cut off within about one window: its responses
    // are the 20 that judged it plus what arrived while it was being removed.
    let bad: Vec<_> = samples.iter().filter(|s| s.failed()).collect();
    assert!(!bad.is_empty(), "v2 was seen failing");
    assert!(
        bad.iter().all(|s| s.version.as_deref() == Some("v2")),
        "only v2 failed: {:#?}",
        bad.iter()
            .filter(|s| s.version.as_deref() != Some("v2"))
            .take(10)
            .collect::<Vec<_>>()
    );
    let sum = Summary::of(&samples);
    let v2 = sum.by_version.get("v2").copied().unwrap_or(0);
    assert!(
        v2 < 100,
        "v2 answered {v2} requests before it was rolled back: {sum:?}"
    );
    let last_v2 = samples
        .iter()
        .filter(|s| s.version.as_deref() == Some("v2"))
        .map(|s| s.at)
        .max()
        .unwrap_or(pushed);
    eprintln!(
        "bench: baton canary bad: bad commit to traffic back on the stable {:.1} s, v2 answered {v2} ({} failed) of {} requests",
        (last_v2 - pushed).as_secs_f64(),
        bad.len(),
        sum.total
    );

    // The stable app was never written: same version, same tasks, still v1.
    let (after, tasks_after) = stack.stable().await;
    assert_eq!(
        after["version"], before["version"],
        "the stable was not written"
    );
    assert_eq!(after["env"]["VERSION"], "v1");
    assert_eq!(
        tasks_after, tasks_before,
        "the stable's tasks are untouched"
    );
    stack.stop().await;
}

/// Scenario 3: a v2 whose isolated check fails (it expects 204, `/health` answers 200) never
/// receives traffic: no server of its task ever appears in HAProxy, no request is answered by
/// v2, and it is rolled back with the check's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_failing_isolated_check_never_gets_traffic() {
    let Some(mut stack) = Stack::start("rollout_failing_isolated_check_never_gets_traffic").await
    else {
        return;
    };
    let (before, tasks_before) = stack.stable().await;
    let load = Load::start(&stack.url(), rollout_load());
    stack.push("v2", "0", &rollout_block(204));

    // Until the rollback, HAProxy never has more than the stable's servers, none disabled.
    let be = backend(stack.port);
    let end = tokio::time::Instant::now() + mlb::DEADLINE;
    let mut saw_canary = false;
    loop {
        let rows = stack.lb.servers(&be).await;
        assert!(
            rows.len() <= S && rows.iter().all(|r| r.get("status") != "MAINT"),
            "a canary server in HAProxy: {rows:#?}"
        );
        saw_canary |= stack.dev.app("/shop/api-canary").await.is_some();
        let st = stack.serve().status().await;
        let done = status_app(&st, "/shop/api")
            .is_some_and(|a| a["rollout"].is_null() && a["rolledBack"].is_object());
        if done {
            let reason = &status_app(&st, "/shop/api").expect("app")["rolledBack"]["reason"];
            assert_eq!(reason["kind"], "checkFailed", "{st:#}");
            break;
        }
        stack.lb.assert_running("the isolated check");
        assert!(
            tokio::time::Instant::now() < end,
            "no rollback:\n{}",
            stack.serve().log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        saw_canary,
        "the canary ran (isolated) before it was rolled back"
    );
    stack
        .dev
        .wait_for("the canary removed", |apps| {
            apps.iter().all(|a| a["id"] != "/shop/api-canary")
        })
        .await;
    let samples = load.stop().await;
    let sum = Summary::of(&samples);
    assert_eq!(sum.failed, 0, "{:#?}", load::failures(&samples, 10));
    assert_eq!(sum.by_version.get("v2"), None, "v2 got traffic: {sum:?}");
    assert!(sum.by_version.get("v1").is_some_and(|n| *n > 0), "{sum:?}");
    let (after, tasks_after) = stack.stable().await;
    assert_eq!(after["version"], before["version"]);
    assert_eq!(tasks_after, tasks_before);
    stack.stop().await;
}

/// Scenario 4: blueGreen. A good v2 starts at full size beside v1, passes its isolated check,
/// takes all traffic at once (every v1 server disabled), and after the grace replaces v1: no
/// request fails over the switch and the completion. Then a bad v3 (500 on half its requests)
/// is switched to and, within the grace, switched back: the stable v2 answers again, and only
/// v3 failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_blue_green_switches_with_no_failed_request_and_switches_back() {
    let Some(mut stack) =
        Stack::start("rollout_blue_green_switches_with_no_failed_request_and_switches_back").await
    else {
        return;
    };
    let be = backend(stack.port);
    let load = Load::start(&stack.url(), rollout_load());
    stack.push("v2", "0", &blue_green_block());
    // The switch: 2S servers, the S of v2 UP, the S of v1 disabled.
    stack
        .lb
        .wait_stats("the blue/green switch", |rows| {
            let servers: Vec<_> = rows
                .iter()
                .filter(|r| r.get("pxname") == be && r.is_server())
                .collect();
            servers.len() == 2 * S
                && servers
                    .iter()
                    .filter(|r| r.get("status") == "MAINT")
                    .count()
                    == S
        })
        .await;
    let switched = load.elapsed();
    // The switch holds for its grace; then the stable is updated (Marathon's restart of it runs
    // old and new tasks side by side, and marathon-lb drains only as many of them as the canary
    // has: docs/rollout.md, "Blue/green").
    // The scheduler holds the stable's new definition from the moment Baton's update lands
    // (the daemon's status says so only once that deployment is over).
    stack
        .dev
        .wait_for("the stable's update to begin", |apps| {
            apps.iter()
                .any(|a| a["id"] == "/shop/api" && a["env"]["VERSION"] == "v2")
        })
        .await;
    let hand_over = load.elapsed();
    stack
        .serve()
        .until_status("the blue/green rollout to complete", |st| {
            status_app(st, "/shop/api")
                .is_some_and(|a| a["rollout"].is_null() && a["sync"] == "synced")
        })
        .await;
    stack
        .dev
        .wait_for("only /shop/api, at v2", |apps| {
            apps.len() == 1 && apps[0]["id"] == "/shop/api" && apps[0]["env"]["VERSION"] == "v2"
        })
        .await;
    stack.lb.wait_servers(&be, S, Some(S)).await;
    let done = load.elapsed();
    let enough = load.count() + 40;
    baton_e2e::wait_until("40 requests on v2", mlb::DEADLINE, || async {
        load.count() >= enough || load.finished()
    })
    .await;
    assert!(!load.finished(), "the load ended before the rollout did");
    let samples = load.stop().await;
    let all = Summary::of(&samples);
    assert_eq!(all.failed, 0, "{:#?}", load::failures(&samples, 10));
    // From the switch to the stable's update only v2 answers (a request sent just before the
    // switch may still reach v1).
    let switched_only = Summary::of(
        samples
            .iter()
            .filter(|s| s.at >= switched + Duration::from_secs(2) && s.at < hand_over),
    );
    assert!(switched_only.total >= 20, "{switched_only:?}");
    assert_eq!(switched_only.share("v2"), 1.0, "{switched_only:?}");
    let during_update = Summary::of(samples.iter().filter(|s| s.at >= hand_over));
    eprintln!(
        "bench: baton blueGreen good: failed requests {}/{}, switch to completion {:.1} s, \
         v1 answers during the stable's update {}/{}",
        all.failed,
        all.total,
        (done - switched).as_secs_f64(),
        during_update.by_version.get("v1").copied().unwrap_or(0),
        during_update.total,
    );

    // A bad v3 within the grace: switched to, then back.
    let (before, tasks_before) = stack.stable().await;
    let load = Load::start(&stack.url(), rollout_load());
    let pushed = load.elapsed();
    stack.push("v3", "0.5", &blue_green_block());
    let st = stack
        .serve()
        .until_status("the reverse switch", |st| {
            status_app(st, "/shop/api")
                .is_some_and(|a| a["rollout"].is_null() && a["rolledBack"].is_object())
        })
        .await;
    let reason = &status_app(&st, "/shop/api").expect("app")["rolledBack"]["reason"];
    assert_eq!(reason["kind"], "analysis", "{st:#}");
    stack
        .dev
        .wait_for("the v3 app removed", |apps| {
            apps.iter().all(|a| a["id"] != "/shop/api-canary")
        })
        .await;
    stack.lb.wait_servers(&be, S, Some(S)).await;
    let back = load.elapsed();
    let enough = load.count() + 40;
    baton_e2e::wait_until("40 requests on v2 again", mlb::DEADLINE, || async {
        load.count() >= enough || load.finished()
    })
    .await;
    let samples = load.stop().await;
    let bad: Vec<_> = samples.iter().filter(|s| s.failed()).collect();
    assert!(
        bad.iter().all(|s| s.version.as_deref() == Some("v3")),
        "only v3 failed: {:#?}",
        bad.iter()
            .filter(|s| s.version.as_deref() != Some("v3"))
            .take(10)
            .collect::<Vec<_>>()
    );
    let tail = Summary::of(samples.iter().filter(|s| s.at >= back));
    assert_eq!(tail.share("v2"), 1.0, "v2 answers again: {tail:?}");
    let (after, tasks_after) = stack.stable().await;
    assert_eq!(
        after["version"], before["version"],
        "the stable was not written"
    );
    assert_eq!(
        tasks_after, tasks_before,
        "the stable's tasks are untouched"
    );
    let last_v3 = samples
        .iter()
        .filter(|s| s.version.as_deref() == Some("v3"))
        .map(|s| s.at)
        .max()
        .unwrap_or(pushed);
    eprintln!(
        "bench: baton blueGreen bad: bad commit to traffic back on the stable {:.1} s, {} failed of {} requests",
        (last_v3 - pushed).as_secs_f64(),
        bad.len(),
        samples.len()
    );
    stack.stop().await;
}

/// Scenario 5: `kill -9` of `baton serve` in the 10% step, and a restart on the same state
/// dir: the rollout resumes where it was (the canary's task is the same one, not relaunched)
/// and completes; no request fails meanwhile (HAProxy keeps serving without Baton).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_resumes_after_kill_9_at_the_ten_percent_step() {
    let Some(mut stack) =
        Stack::start("rollout_resumes_after_kill_9_at_the_ten_percent_step").await
    else {
        return;
    };
    let load = Load::start(&stack.url(), rollout_load());
    stack.push("v2", "0", &rollout_block(200));
    let (_, step) = stack.ten_percent_step(&load).await;
    let canary_tasks = |app: Option<Value>| -> Vec<String> {
        app.and_then(|a| a["tasks"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t["id"].as_str().map(str::to_string))
            .collect()
    };
    let before = canary_tasks(stack.dev.app("/shop/api-canary").await);
    assert_eq!(before.len(), 1, "{before:?}");

    stack.kill_9_and_restart().await;
    let st = stack
        .serve()
        .until_status("the rollout after the restart", |st| {
            status_app(st, "/shop/api").is_some_and(|a| !a["rollout"].is_null())
        })
        .await;
    let r = &status_app(&st, "/shop/api").expect("app")["rollout"];
    assert_eq!(r["phase"], "step", "resumed in a traffic step: {r:#}");
    assert!(
        r["step"].as_u64() >= step.as_u64(),
        "resumed at the 10% step or later, not from the start: {r:#} (was {step})"
    );
    let now = canary_tasks(stack.dev.app("/shop/api-canary").await);
    assert!(
        now.contains(&before[0]),
        "the canary's task was kept, not relaunched: {before:?} -> {now:?}"
    );

    stack
        .serve()
        .until_status("the rollout to complete", |st| {
            status_app(st, "/shop/api")
                .is_some_and(|a| a["rollout"].is_null() && a["sync"] == "synced")
        })
        .await;
    stack
        .dev
        .wait_for("only /shop/api, at v2", |apps| {
            apps.len() == 1 && apps[0]["id"] == "/shop/api" && apps[0]["env"]["VERSION"] == "v2"
        })
        .await;
    assert!(!load.finished(), "the load ended before the rollout did");
    let samples = load.stop().await;
    let all = Summary::of(&samples);
    assert_eq!(all.failed, 0, "{:#?}", load::failures(&samples, 10));
    stack.stop().await;
}

/// Scenario 6: Marathon-side faults during a rollout. In the 10% step the scheduler stops
/// answering Baton right after its next write (a proxy frozen for 20 s, as `kill -STOP` of
/// Marathon), and meanwhile someone else's slow deployment locks the canary (Baton's writes to
/// it get 409 until it ends). The rollout ends in a consistent state, completed (only
/// `/shop/api`, at v2) or rolled back (only `/shop/api`, at v1, its tasks untouched), and at no
/// moment are there two canary apps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_survives_a_frozen_scheduler_and_a_locked_canary() {
    let Some(mut stack) = Stack::start_with(
        "rollout_survives_a_frozen_scheduler_and_a_locked_canary",
        true,
    )
    .await
    else {
        return;
    };
    let (_, stable_tasks) = stack.stable().await;
    let load = Load::start(&stack.url(), rollout_load());
    stack.push("v2", "0", &rollout_block(200));
    stack.ten_percent_step(&load).await;

    let proxy = stack.proxy.as_ref().expect("the proxy");
    proxy.freeze_after_next_write();
    // Someone else's deployment of the canary that takes a while: its new task sleeps 10 s
    // before it serves, so the canary stays locked until it is healthy.
    let mut slow = stack.dev.app("/shop/api-canary").await.expect("the canary");
    for k in [
        "tasks",
        "deployments",
        "version",
        "versionInfo",
        "tasksStaged",
        "tasksRunning",
        "tasksHealthy",
        "tasksUnhealthy",
    ] {
        slow.as_object_mut().map(|o| o.remove(k));
    }
    let cmd = slow["cmd"].as_str().unwrap_or_default().to_string();
    slow["cmd"] = json!(format!("sleep 10; {cmd}"));
    stack.dev.put(&slow).await;

    // Frozen once Baton writes (at the latest when its 50% step begins); held 20 s, watching.
    let end = tokio::time::Instant::now() + mlb::DEADLINE;
    let canaries = |apps: &[Value]| {
        apps.iter()
            .filter(|a| a["id"].as_str().is_some_and(|id| id.ends_with("-canary")))
            .count()
    };
    let mut frozen_at = None;
    loop {
        let apps = stack.dev.apps().await;
        assert!(canaries(&apps) <= 1, "two canary apps: {apps:#?}");
        match frozen_at {
            None if proxy.is_frozen() => frozen_at = Some(tokio::time::Instant::now()),
            Some(t) if t.elapsed() >= Duration::from_secs(20) => break,
            _ => {}
        }
        // Baton may also finish or roll back without writing again: then nothing freezes.
        let st = stack.serve().status().await;
        if frozen_at.is_none()
            && status_app(&st, "/shop/api").is_some_and(|a| a["rollout"].is_null())
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "nothing happened:\n{}",
            stack.serve().log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.thaw();

    // The end: completed or rolled back, one app, never two canaries on the way.
    let end = tokio::time::Instant::now() + mlb::DEADLINE;
    let outcome = loop {
        let apps = stack.dev.apps().await;
        assert!(canaries(&apps) <= 1, "two canary apps: {apps:#?}");
        let st = stack.serve().status().await;
        let app = status_app(&st, "/shop/api").cloned().unwrap_or_default();
        if app["rollout"].is_null() && apps.len() == 1 {
            break (app, apps[0].clone());
        }
        assert!(
            tokio::time::Instant::now() < end,
            "no consistent end: {apps:#?}\n{}",
            stack.serve().log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (status, live) = outcome;
    assert_eq!(live["id"], "/shop/api");
    if status["rolledBack"].is_object() {
        assert_eq!(
            live["env"]["VERSION"], "v1",
            "rolled back: the stable is v1"
        );
        let (_, tasks) = stack.stable().await;
        assert_eq!(
            tasks, stable_tasks,
            "rolled back: the stable's tasks are untouched"
        );
    } else {
        assert_eq!(
            live["env"]["VERSION"], "v2",
            "completed: the stable is v2: {status:#}"
        );
    }
    let samples = load.stop().await;
    let all = Summary::of(&samples);
    assert_eq!(all.failed, 0, "{:#?}", load::failures(&samples, 10));
    stack.stop().await;
}
