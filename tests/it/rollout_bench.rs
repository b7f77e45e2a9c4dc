//! Benchmark (ignored by default; `scripts/bench-rollout.sh`): marathon-lb's own blue/green tool,
//! `zdd.py` (the peer Marathon users ran), on the same real traffic path as the rollout tests
//! (`tests/it/rollout.rs`): unmodified marathon-lb + HAProxy in front of 10 dev-scheduler tasks of
//! `rollout_app.py`, 40 req/s through the service port. It deploys v1 as the blue app with
//! zdd.py, then v2, and prints what users saw: failed requests, who answered, how long zdd.py
//! ran, how it ended and which apps it left. It asserts only that the measurement happened;
//! zdd.py's behaviour is the result (HAProxy 2.6's stats CSV has a column named `-`, which
//! zdd.py's `namedtuple` cannot take).
//!
//! zdd.py is run as its README says: `--force` (no prompt), its default step delay and initial
//! instances, the app JSON with `HAPROXY_DEPLOYMENT_GROUP` and `HAPROXY_DEPLOYMENT_ALT_PORT` and
//! the legacy `ports: [service port]` form (its `get_service_port` fails on `portDefinitions`).
//! It polls `/_haproxy_getpids`, so this HAProxy runs upstream's `getpids.lua` (which counts
//! every `haproxy` on the machine: run the benchmark alone).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton_e2e::devsched::DevScheduler;
use baton_e2e::load::{self, Load, Plan, Summary};
use baton_e2e::mlb::{self, MarathonLb, Tools};
use serde_json::{json, Value};

const S: usize = 10;
/// zdd.py gets this long per run before it is killed (its own `--max-wait` is 300 s per step).
const ZDD_LIMIT: Duration = Duration::from_secs(240);

/// Run zdd.py on `app` (written to a file in `dir`); returns (exit code, seconds, its errors).
async fn zdd(
    tools: &Tools,
    dir: &std::path::Path,
    marathon: &str,
    lb: &str,
    app: &Value,
) -> (Option<i32>, f64, String) {
    let json_path = dir.join("app.json");
    std::fs::write(&json_path, app.to_string()).expect("write app.json");
    let out_path = dir.join("zdd.log");
    let out = std::fs::File::create(&out_path).expect("zdd.log");
    let err = out.try_clone().expect("log handle");
    let script = tools.marathon_lb.with_file_name("zdd.py");
    let mut child = Command::new(&tools.python)
        .arg(&script)
        .args(["--marathon", marathon, "--marathon-lb", lb, "--force"])
        .arg("--json")
        .arg(&json_path)
        .current_dir(dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start zdd.py");
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for zdd.py") {
            break status.code();
        }
        if start.elapsed() > ZDD_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    // Its errors (zdd.py's own log, without syslog, also fails to reach `/dev/log`).
    let mut errors: Vec<&str> = Vec::new();
    for l in text
        .lines()
        .filter(|l| l.contains("Error") || l.contains("Exception"))
    {
        if !errors.contains(&l) {
            errors.push(l);
        }
    }
    let tail = errors.join("\n");
    (code, start.elapsed().as_secs_f64(), tail)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-rollout.sh"]
async fn bench_zdd_blue_green() {
    let Some(tools) = Tools::or_skip("bench_zdd_blue_green") else {
        return;
    };
    let dev = DevScheduler::start().await;
    let mut lb = MarathonLb::start_with(&tools, &dev.url, true);
    let lb_url = format!("http://127.0.0.1:{}", lb.stats_port);
    let (port, alt) = (mlb::free_port(), mlb::free_port());
    let script = baton_e2e::repo_root().join("tests/python/rollout_app.py");
    let app = |version: &str| {
        json!({
            "id": "/shop/api",
            "cmd": format!("exec '{}' '{}' --port $PORT0", tools.python.display(), script.display()),
            "instances": S,
            "cpus": 0.01,
            "mem": 32,
            "env": {"VERSION": version, "FAIL_RATE": "0"},
            "ports": [port],
            "healthChecks": [{
                "protocol": "HTTP", "path": "/health", "portIndex": 0,
                "gracePeriodSeconds": 60, "intervalSeconds": 1, "timeoutSeconds": 2,
                "maxConsecutiveFailures": 3
            }],
            "taskKillGracePeriodSeconds": 5,
            "labels": {
                "HAPROXY_GROUP": "external",
                "HAPROXY_0_BIND_ADDR": "127.0.0.1",
                "HAPROXY_DEPLOYMENT_GROUP": "shop-api",
                "HAPROXY_DEPLOYMENT_ALT_PORT": alt.to_string(),
            },
        })
    };
    let work = tempfile::tempdir().expect("temp dir");
    let backend = format!("shop-api_{port}");

    // Blue: zdd.py's first deploy of the group.
    let (code, secs, tail) = zdd(&tools, work.path(), &dev.url, &lb_url, &app("v1")).await;
    assert_eq!(
        code,
        Some(0),
        "zdd.py's first deploy ({secs:.1} s):\n{tail}"
    );
    lb.wait_servers(&backend, S, Some(S)).await;

    // Green, under load.
    let load = Load::start(
        &format!("http://127.0.0.1:{port}/"),
        Plan {
            max_requests: 12_000,
            max_time: ZDD_LIMIT + Duration::from_secs(60),
            ..Plan::default()
        },
    );
    let (code, secs, tail) = zdd(&tools, work.path(), &dev.url, &lb_url, &app("v2")).await;
    // Whatever state zdd.py left, traffic on it for 10 more seconds (400 requests).
    let enough = load.count() + 400;
    baton_e2e::wait_until("400 requests after zdd.py", mlb::DEADLINE, || async {
        load.count() >= enough || load.finished()
    })
    .await;
    let samples = load.stop().await;
    let sum = Summary::of(&samples);
    assert!(sum.total >= 400, "{sum:?}");
    let apps: Vec<String> = dev
        .apps()
        .await
        .iter()
        .map(|a| {
            format!(
                "{} ({} instances, {})",
                a["id"].as_str().unwrap_or("?"),
                a["instances"],
                a["env"]["VERSION"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let last = samples.last().and_then(|s| s.version.clone());
    eprintln!(
        "bench: zdd.py blue/green: exit {code:?} after {secs:.1} s, failed requests {}/{} ({:?}), answered by {:?}, last answer from {last:?}, apps left: {}\nbench: zdd.py said: {}",
        sum.failed,
        sum.total,
        load::failures(&samples, 3),
        sum.by_version,
        apps.join(", "),
        tail.replace('\n', "\nbench:   ")
    );
    drop(lb);
    dev.stop().await;
}
