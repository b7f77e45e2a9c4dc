//! `baton apply --app` and `baton plan --app`: only the apps named are written (or shown); an
//! app neither in the repo nor on the scheduler is bad usage (64) and writes nothing. On a
//! terminal (`--progress always` stands in for one) apply shows the plan before writing and a
//! line per app each time its task count moves while it deploys; piped, none of that.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use baton_e2e::devsched::{baton_bin, DevScheduler, TempRepo};

const DEADLINE: Duration = Duration::from_secs(120);

fn sleeper(extra: &str) -> String {
    format!("cmd: exec sleep 1000\ncpus: 0.01\nmem: 8\n{extra}")
}

/// `baton <args>` to its end: (exit code, stdout, stderr).
async fn baton(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(baton_bin())
            .args(&args)
            .arg("--color=never")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// Multi-threaded: the blocking waits for the binary must not stall the in-process scheduler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_app_writes_only_that_app_and_shows_progress_on_a_terminal() {
    let sched = DevScheduler::start().await;
    let repo = TempRepo::new("owner: e2e\n");
    // /web cannot become healthy before the test creates `ready`: the progress line of its
    // deployment is seen before it finishes, however slowly this machine runs.
    let gate = tempfile::tempdir().unwrap();
    let ready = gate.path().join("ready");
    repo.write(
        "web.yaml",
        &sleeper(&format!(
            "instances: 2\nhealthChecks:\n  - protocol: COMMAND\n    command: {{value: 'test -f {}'}}\n    \
             gracePeriodSeconds: 300\n    intervalSeconds: 1\n    maxConsecutiveFailures: 0\n",
            ready.display()
        )),
    );
    repo.write("api.yaml", &sleeper(""));
    let repo_dir = repo.path().to_str().unwrap().to_string();
    let common = |extra: &[&str]| {
        let mut a = args(&["--marathon", &sched.url, "--repo", &repo_dir]);
        a.extend(args(extra));
        a
    };

    // Unknown app: 64, naming it, nothing written; a malformed one: 64 too.
    let mut a = args(&["apply"]);
    a.extend(common(&["--app", "/nope"]));
    let (code, _, err) = baton(a).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--app: no app /nope"), "{err}");
    let mut a = args(&["plan"]);
    a.extend(common(&["--app", "/Not Valid"]));
    let (code, _, err) = baton(a).await;
    assert_eq!(code, 64, "{err}");
    assert!(sched.apps().await.is_empty());

    // plan --app: only /web's change, exit 2.
    let mut a = args(&["plan", "--format", "json"]);
    a.extend(common(&["--app", "web"]));
    let (code, out, err) = baton(a).await;
    assert_eq!(code, 2, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    baton_e2e::assert_matches_schema("plan.schema.json", &doc);
    assert_eq!(doc["plan"]["summary"]["create"], 1, "{doc}");
    assert_eq!(
        doc["plan"]["waves"][0]["changes"][0]["app"], "/web",
        "{doc}"
    );

    // apply --app /web as on a terminal: the plan first, then task counts while it deploys.
    let mut cmd = Command::new(baton_bin());
    cmd.arg("apply")
        .args(common(&[
            "--app",
            "/web",
            "--progress",
            "always",
            "--color=never",
        ]))
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let counted = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = rx.recv().await {
            let done = line.contains("/web") && line.contains("deploying 0/2");
            seen.push(line);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(counted, Ok(true), "no task count line in {seen:#?}");
    std::fs::write(&ready, "").unwrap();
    let rest = tokio::time::timeout(DEADLINE, async {
        let mut rest = Vec::new();
        while let Some(line) = rx.recv().await {
            rest.push(line);
        }
        rest
    })
    .await
    .expect("apply finishes once /web is healthy");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    seen.extend(rest);
    let text = seen.join("\n");
    assert_eq!(status.code(), Some(0), "{text}");
    let applying = seen.iter().position(|l| l == "applying:").expect(&text);
    assert!(
        seen[..applying].iter().any(|l| l.contains("/web")),
        "the plan comes before anything is written: {text}"
    );
    assert!(!text.contains("/api"), "{text}");
    assert!(
        text.contains("deploying 2/2") || text.contains("converged"),
        "{text}"
    );
    let ids: Vec<String> = (sched.apps().await.iter())
        .map(|a| a["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, ["/web"], "only the app named was written");

    // Piped (no terminal, no --progress): no plan, no task counts; the lines scripts parse.
    let mut a = args(&["apply"]);
    a.extend(common(&[]));
    let (code, out, err) = baton(a).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("applying:"), "{out}");
    assert!(
        !out.contains("deploying 0/") && !out.contains("deploying 1/"),
        "{out}"
    );
    assert!(out.contains("/api") && out.contains("converged"), "{out}");
    sched.stop().await;
}
