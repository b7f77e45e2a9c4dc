//! Environments (docs/environments.md): one repo, three environments, one dev scheduler process
//! per environment; overlays reach only their cluster, the base reaches all, `diff-env` and
//! `promote`; two environments sharing a scheduler never prune each other; a cluster that is
//! down delays no other environment's daemon.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use baton_e2e::daemon::{Daemon as Serve, DEADLINE};
use baton_e2e::devsched::{baton_bin, TempRepo};
use baton_e2e::process::Daemon as Process;
use serde_json::Value;

/// The `baton` binary, built once per test run (`baton_bin` runs `cargo build` on each call).
fn bin() -> &'static Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(baton_bin)
}

/// `baton dev-scheduler` in a process of its own.
async fn scheduler() -> Process {
    let mut cmd = Command::new(bin());
    cmd.args(["dev-scheduler", "--listen", "127.0.0.1:0"])
        .env("BATON_LOG", "warn");
    Process::start(cmd, "listening on http://").await
}

/// Run `baton ARGS` in `repo` (off the runtime's threads) and return its output.
async fn baton(repo: &Path, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(args);
    if args.first() == Some(&"validate") {
        cmd.arg(repo);
    } else {
        cmd.arg("--repo").arg(repo);
    }
    cmd.env("BATON_LOG", "warn")
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("baton finishes in time")
        .expect("baton runs")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn shown(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn expect(repo: &Path, args: &[&str], want: i32) -> Output {
    let o = baton(repo, args).await;
    assert_eq!(code(&o), want, "baton {args:?}: {}", shown(&o));
    o
}

async fn apps_of(url: &str) -> Vec<Value> {
    let doc: Value = reqwest::get(format!("{url}/v2/apps"))
        .await
        .expect("GET /v2/apps")
        .json()
        .await
        .expect("JSON");
    doc["apps"].as_array().cloned().unwrap_or_default()
}

async fn app_of(url: &str, id: &str) -> Option<Value> {
    apps_of(url).await.into_iter().find(|a| a["id"] == id)
}

const WEB: &str = "cmd: sleep 600\ncpus: 0.01\nmem: 16\ninstances: 1\nenv: {MODE: base}\n";
const WORKER: &str = "cmd: sleep 600\ncpus: 0.01\nmem: 16\ninstances: 1\n";

fn three_env_config(qa: &str, staging: &str, prod: &str) -> String {
    format!(
        "owner: shop\nenvironments:\n  qa: {{marathon: '{qa}'}}\n  staging: {{marathon: '{staging}'}}\n  prod: {{marathon: '{prod}', owner: shop-prod}}\n"
    )
}

fn write(repo: &Path, rel: &str, text: &str) {
    let p = repo.join(rel);
    std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_environments_on_three_schedulers_apply_plan_drift_diff_and_promote() {
    let (qa, staging, prod) = (scheduler().await, scheduler().await, scheduler().await);
    let repo = TempRepo::new(&three_env_config(&qa.url(), &staging.url(), &prod.url()));
    let dir = repo.path();
    repo.write("web.yaml", WEB);
    repo.write("worker.yaml", WORKER);
    write(
        dir,
        "environments/qa/apps/web.yaml",
        "env: {MODE: qa, VERSION: '2'}\n",
    );
    write(
        dir,
        "environments/prod/apps/web.yaml",
        "env: {VERSION: '1'}\n",
    );
    expect(dir, &["validate"], 0).await;
    let envs = [("qa", &qa), ("staging", &staging), ("prod", &prod)];
    for (env, _) in envs {
        expect(dir, &["apply", "--environment", env], 0).await;
    }
    for (env, _) in envs {
        expect(dir, &["plan", "--environment", env], 0).await;
        expect(dir, &["drift", "--environment", env], 0).await;
    }
    // Each cluster runs its environment's result, labelled with its owner.
    let web = |s: &Process| {
        let url = s.url();
        async move { app_of(&url, "/web").await.expect("/web runs") }
    };
    assert_eq!(web(&qa).await["env"]["MODE"], "qa");
    assert_eq!(web(&staging).await["env"]["MODE"], "base");
    assert_eq!(web(&prod).await["env"]["VERSION"], "1");
    assert_eq!(web(&qa).await["labels"]["baton.dev/owner"], "shop.qa");
    assert_eq!(
        web(&staging).await["labels"]["baton.dev/owner"],
        "shop.staging"
    );
    assert_eq!(web(&prod).await["labels"]["baton.dev/owner"], "shop-prod");

    // An overlay change reaches only its cluster.
    write(
        dir,
        "environments/staging/apps/worker.yaml",
        "env: {STAGING: 'yes'}\n",
    );
    expect(dir, &["plan", "--environment", "qa"], 0).await;
    expect(dir, &["plan", "--environment", "prod"], 0).await;
    let o = expect(
        dir,
        &["plan", "--environment", "staging", "--format", "json"],
        2,
    )
    .await;
    let plan: Value = serde_json::from_slice(&o.stdout).expect("plan JSON");
    assert_eq!(plan["plan"]["summary"]["update"], 1, "{plan:#}");
    expect(dir, &["apply", "--environment", "staging"], 0).await;
    assert_eq!(
        app_of(&staging.url(), "/worker").await.unwrap()["env"]["STAGING"],
        "yes"
    );
    assert!(app_of(&qa.url(), "/worker").await.unwrap()["env"]
        .get("STAGING")
        .is_none());

    // A base change reaches all three.
    repo.write("worker.yaml", &WORKER.replace("mem: 16", "mem: 24"));
    for (env, s) in envs {
        let o = expect(dir, &["plan", "--environment", env, "--format", "json"], 2).await;
        let plan: Value = serde_json::from_slice(&o.stdout).expect("plan JSON");
        assert_eq!(plan["plan"]["summary"]["update"], 1, "{env}: {plan:#}");
        expect(dir, &["apply", "--environment", env], 0).await;
        assert_eq!(app_of(&s.url(), "/worker").await.unwrap()["mem"], 24.0);
        expect(dir, &["plan", "--environment", env], 0).await;
    }

    // diff-env qa prod: exactly the fields qa runs differently (JSON, schema-checked).
    let o = expect(dir, &["diff-env", "qa", "prod", "--output", "json"], 2).await;
    let diff: Value = serde_json::from_slice(&o.stdout).expect("diff-env JSON");
    baton_e2e::assert_matches_schema("diff-env.schema.json", &diff);
    let apps = diff["apps"].as_array().expect("apps");
    assert_eq!(apps.len(), 1, "{diff:#}");
    assert_eq!(apps[0]["app"], "/web");
    let pointers: Vec<&str> = apps[0]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["pointer"].as_str().expect("pointer"))
        .collect();
    assert_eq!(pointers, ["/env/MODE", "/env/VERSION"], "{diff:#}");

    // Promote the version only (the dev scheduler runs no images; `/env/VERSION` stands for
    // `/container/docker/image`): the overlay in the working tree, then prod's plan is it.
    let before: Vec<Value> = apps_of(&prod.url()).await;
    expect(
        dir,
        &["promote", "qa", "prod", "/web", "--fields", "/env/VERSION"],
        0,
    )
    .await;
    assert_eq!(
        apps_of(&prod.url()).await,
        before,
        "promote touched no cluster"
    );
    let o = expect(
        dir,
        &["plan", "--environment", "prod", "--format", "json"],
        2,
    )
    .await;
    let plan: Value = serde_json::from_slice(&o.stdout).expect("plan JSON");
    let changes: Vec<Value> = plan["plan"]["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .flat_map(|w| w["changes"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(changes.len(), 1, "{plan:#}");
    assert_eq!(changes[0]["app"], "/web");
    let fields: Vec<&str> = changes[0]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["pointer"].as_str().expect("pointer"))
        .collect();
    assert_eq!(fields, ["/env/VERSION"], "{plan:#}");
    // What remains between qa and prod is the field not promoted.
    let o = expect(dir, &["diff-env", "qa", "prod", "--output", "json"], 2).await;
    let diff: Value = serde_json::from_slice(&o.stdout).expect("diff-env JSON");
    assert_eq!(diff["apps"][0]["fields"].as_array().map(Vec::len), Some(1));
    assert_eq!(diff["apps"][0]["fields"][0]["pointer"], "/env/MODE");

    for s in [qa, staging, prod] {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_environments_on_one_scheduler_never_prune_each_other() {
    let shared = scheduler().await;
    let url = shared.url();
    let repo = TempRepo::new(&format!(
        "owner: shop\nenvironments:\n  qa: {{marathon: '{url}'}}\n  staging: {{marathon: '{url}'}}\n"
    ));
    let dir = repo.path();
    for env in ["qa", "staging"] {
        write(dir, &format!("environments/{env}/apps/{env}/web.yaml"), WEB);
        write(
            dir,
            &format!("environments/{env}/apps/{env}/worker.yaml"),
            WORKER,
        );
    }
    for env in ["qa", "staging"] {
        expect(dir, &["apply", "--environment", env], 0).await;
    }
    assert_eq!(apps_of(&url).await.len(), 4);
    // Each sees the other's apps as someone else's: nothing to do, nothing to delete.
    for env in ["qa", "staging"] {
        expect(dir, &["plan", "--environment", env], 0).await;
    }
    // qa drops an app: qa's apply deletes exactly it; staging's apps stay.
    std::fs::remove_file(dir.join("environments/qa/apps/qa/worker.yaml")).expect("rm");
    let o = expect(
        dir,
        &["plan", "--environment", "staging", "--format", "json"],
        0,
    )
    .await;
    let plan: Value = serde_json::from_slice(&o.stdout).expect("plan JSON");
    assert_eq!(plan["plan"]["summary"]["delete"], 0, "{plan:#}");
    expect(dir, &["apply", "--environment", "qa"], 0).await;
    let mut ids: Vec<String> = apps_of(&url)
        .await
        .iter()
        .map(|a| a["id"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["/qa/web", "/staging/web", "/staging/worker"]);
    expect(dir, &["plan", "--environment", "staging"], 0).await;
    shared.stop().await;
}

/// A loopback port that accepts connections (the kernel's backlog) and never answers: a
/// Marathon that hangs, the worst kind of down.
fn black_hole() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    (l, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_is_down_delays_no_other_environment() {
    let (qa, staging) = (scheduler().await, scheduler().await);
    let (_hole, prod_url) = black_hole();
    let repo = TempRepo::new(&three_env_config(&qa.url(), &staging.url(), &prod_url));
    let dir = repo.path();
    repo.write("web.yaml", WEB);
    // One daemon per environment (docs/environments.md): prod's cannot reach its Marathon.
    let serve = |env: &'static str| {
        let state = tempfile::tempdir().expect("state dir");
        let dir = dir.to_path_buf();
        async move {
            let d = Serve::start(
                &[
                    "--repo".as_ref(),
                    dir.as_os_str(),
                    "--state-dir".as_ref(),
                    state.path().as_os_str(),
                    "--environment".as_ref(),
                    env.as_ref(),
                    "--poll-interval".as_ref(),
                    "1s".as_ref(),
                    // Every request to prod hangs this long: were qa or staging to wait for
                    // one, their sync would take longer than the bound below.
                    "--marathon-timeout".as_ref(),
                    "15s".as_ref(),
                ],
                &[],
            )
            .await;
            (d, state)
        }
    };
    let (prod_d, _s1) = serve("prod").await;
    let (qa_d, _s2) = serve("qa").await;
    let (staging_d, _s3) = serve("staging").await;
    for d in [&qa_d, &staging_d] {
        d.until_status("first sync", |st| st["ready"] == true).await;
    }
    let st = prod_d.status().await;
    assert_eq!(st["environment"], "prod");
    assert_eq!(qa_d.status().await["environment"], "qa");
    baton_e2e::assert_matches_schema("status.schema.json", &st);
    // A base change: measured from the write to each live cluster running it.
    let started = Instant::now();
    repo.write("web.yaml", &WEB.replace("MODE: base", "MODE: changed"));
    let mut took = Vec::new();
    for (env, s) in [("qa", &qa), ("staging", &staging)] {
        let url = s.url();
        baton_e2e::wait_until(&format!("{env} runs the change"), DEADLINE, || {
            let url = url.clone();
            async move {
                app_of(&url, "/web")
                    .await
                    .is_some_and(|a| a["env"]["MODE"] == "changed")
            }
        })
        .await;
        took.push((env, started.elapsed()));
    }
    eprintln!("with prod's Marathon hanging, a base change reached: {took:?}");
    // Below one request timeout to prod (15 s): nobody waited for prod.
    for (env, t) in &took {
        assert!(
            *t < Duration::from_secs(12),
            "{env} took {t:?}: it waited for the cluster that is down"
        );
    }
    // prod's daemon is still up, and has synced nothing.
    assert_eq!(prod_d.status().await["ready"], false);
    for d in [qa_d, staging_d, prod_d] {
        d.stop().await;
    }
    qa.stop().await;
    staging.stop().await;
}
