//! `baton dev` end to end, as the README's main command runs it: the demo repo applied on the
//! embedded dev scheduler, an edit redeployed, an edit made while an apply waits on a stuck
//! deployment taking over at once, and Ctrl-C (the shutdown token) leaving no task behind.
//! Progress is followed through the lines `baton dev` prints, not by sleeping.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use baton_cli::dev::{run, DevOptions};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Whatever `baton dev` writes, line by line, onto a channel.
struct Lines {
    tx: mpsc::UnboundedSender<String>,
    partial: String,
}

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.push_str(&String::from_utf8_lossy(buf));
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            let _ = self.tx.send(line.trim_end().to_string());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `baton dev` on `repo` in a task: its output line by line, the token that stops it, the task.
fn start_dev(
    repo: &Path,
) -> (
    Output,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), baton_cli::dev::DevLoopError>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let out = Output {
        rx,
        seen: Vec::new(),
    };
    let shutdown = CancellationToken::new();
    let options = DevOptions {
        repo: repo.to_path_buf(),
        debounce: Duration::from_millis(100),
        ..DevOptions::default()
    };
    let stop = shutdown.clone();
    let dev = tokio::spawn(async move {
        let mut lines = Lines {
            tx,
            partial: String::new(),
        };
        run(options, stop, &mut lines).await
    });
    (out, shutdown, dev)
}

struct Output {
    rx: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Output {
    /// The next line containing `needle` (within a bound, so a hang fails instead of stalling).
    async fn until(&mut self, needle: &str) -> String {
        let wait = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = self.rx.recv().await {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        });
        match wait.await {
            Ok(Some(line)) => line,
            _ => panic!(
                "no line with {needle:?}; output so far:\n{}",
                self.seen.join("\n")
            ),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Processes of this machine whose environment names one of `task_ids` (`MESOS_TASK_ID`).
fn processes_of(task_ids: &BTreeSet<String>) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let names_a_task = env.split(|b| *b == 0).any(|kv| {
            kv.strip_prefix(b"MESOS_TASK_ID=")
                .is_some_and(|id| task_ids.contains(&*String::from_utf8_lossy(id)))
        });
        // A zombie has an empty environ; only live processes count.
        if names_a_task {
            found.push(pid);
        }
    }
    found
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn baton_dev_deploys_the_demo_redeploys_edits_and_leaves_nothing_behind() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 is required in CI"
        );
        std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!("skipped: python3 (the demo web app) is not installed\n"),
        )
        .ok();
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo");
    copy_dir(&demo, tmp.path());
    let repo = tmp.path().to_path_buf();

    let (mut out, shutdown, dev) = start_dev(&repo);

    let line = out.until("dev scheduler: http://").await;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    // The first apply is done when the app table is printed.
    out.until("where to look:").await;
    out.until("watching").await;
    let http = reqwest::Client::new();
    let apps = get(&http, &format!("{url}/v2/apps?embed=apps.tasks")).await;
    let apps = apps["apps"].as_array().unwrap();
    let ids: BTreeSet<&str> = apps.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        BTreeSet::from(["/cron", "/shop/db", "/shop/web", "/shop/worker"])
    );
    for app in apps {
        assert_eq!(app["tasksRunning"], app["instances"], "{app:#}");
        assert_eq!(app["labels"]["baton.dev/owner"], "demo", "{app:#}");
    }
    let web = apps.iter().find(|a| a["id"] == "/shop/web").unwrap();
    assert_eq!(web["tasksHealthy"], 2, "{web:#}");
    // The web app answers on the port Marathon gave it.
    let port = web["tasks"][0]["ports"][0].as_u64().unwrap();
    let page = http
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert!(page.status().is_success());
    assert!(out.seen.iter().any(|l| l.contains("try: curl http://")));

    // An edit is applied: the worker runs with the new env.
    let worker = repo.join("apps/shop/worker.json");
    let text = std::fs::read_to_string(&worker)
        .unwrap()
        .replace("resize-images", "send-mail");
    baton_e2e::replace_file(&worker, &text);
    out.until("change detected").await;
    out.until("watching").await;
    let w = get(&http, &format!("{url}/v2/apps/shop/worker?embed=app.tasks")).await;
    assert_eq!(w["app"]["env"]["JOB"], "send-mail", "{w:#}");
    assert_eq!(w["app"]["tasksRunning"], 1, "{w:#}");
    assert_eq!(
        w["app"]["tasks"][0]["version"], w["app"]["version"],
        "{w:#}"
    );

    // A broken app: the apply waits for its deployment (deadline 10 minutes). Fixing the
    // file takes over at once instead of waiting for the deadline.
    let broken = repo.join("apps/broken.yaml");
    baton_e2e::replace_file(
        &broken,
        "cmd: exit 1\ncpus: 0.01\nmem: 8\nbaton:\n  deadline: 10m\n",
    );
    out.until("change detected").await;
    out.until("/broken").await; // its write went out; the apply now waits on it
    baton_e2e::replace_file(&broken, "cmd: exec sleep 1000\ncpus: 0.01\nmem: 8\n");
    out.until("change detected").await;
    out.until("watching").await;
    let b = get(&http, &format!("{url}/v2/apps/broken")).await;
    assert_eq!(b["app"]["cmd"], "exec sleep 1000", "{b:#}");
    assert_eq!(b["app"]["tasksRunning"], 1, "{b:#}");

    // Ctrl-C: everything stops, and no task process is left.
    let tasks = get(&http, &format!("{url}/v2/tasks")).await;
    let task_ids: BTreeSet<String> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert!(task_ids.len() >= 6, "{tasks:#}");
    assert!(
        !processes_of(&task_ids).is_empty(),
        "the tasks run as processes"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), dev)
        .await
        .expect("baton dev stopped")
        .unwrap()
        .unwrap();
    out.until("every task process is gone").await;
    assert_eq!(processes_of(&task_ids), Vec::<u32>::new());
}

/// `baton dev` serves the status page too: it prints the page's URL on start, and that URL
/// serves the page and the drift report of what it deployed, read-only (no sync API). Its app
/// lines count running tasks for an app without health checks, not "0 healthy".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn baton_dev_prints_the_url_of_its_status_page_and_serves_it() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().to_path_buf();
    std::fs::create_dir_all(repo.join("apps")).unwrap();
    std::fs::write(repo.join("baton.yaml"), "owner: dev\n").unwrap();
    std::fs::write(
        repo.join("apps/sleeper.yaml"),
        "cmd: exec sleep 1000\ncpus: 0.01\nmem: 8\ninstances: 1\n",
    )
    .unwrap();
    let (mut out, shutdown, dev) = start_dev(&repo);
    let line = out.until("status page:").await;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    // The app table printed after the first apply.
    out.until("apps:").await;
    let sleeper = out.until("/sleeper").await;
    out.until("watching").await;
    assert!(
        sleeper.contains("1/1 running") && !sleeper.contains("healthy"),
        "{sleeper}"
    );
    let http = reqwest::Client::new();
    let page = http.get(&url).send().await.unwrap();
    assert!(page.status().is_success(), "{}", page.status());
    let page = page.text().await.unwrap();
    assert!(page.contains("<title>Baton</title>"), "{page}");
    let drift = get(&http, &format!("{url}api/drift")).await;
    let apps = drift["apps"].as_array().unwrap();
    assert!(
        apps.iter()
            .any(|a| a["app"] == "/sleeper" && a["state"] == "in_sync"),
        "{drift:#}"
    );
    baton_e2e::assert_matches_schema("drift.schema.json", &drift);
    let sync = http.post(format!("{url}api/sync")).send().await.unwrap();
    assert!(!sync.status().is_success(), "read-only: {}", sync.status());

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), dev)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
