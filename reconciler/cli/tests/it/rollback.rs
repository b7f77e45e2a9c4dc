//! `baton rollback APP --to COMMIT` on a real git repo (the git CLI): the spec as it was at
//! COMMIT committed back (also when the file was renamed since), the refusals that write
//! nothing (unknown commit, app absent then, uncommitted changes to the file), and `--now`
//! applying only that app on the dev scheduler.

use std::path::Path;
use std::process::Command;

use baton_dev_scheduler::{run, DevConfig};
use tokio_util::sync::CancellationToken;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn baton(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .args(["--repo".as_ref(), dir.as_os_str()])
        .env_remove("BATON_MARATHON")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn spec(cmd: &str) -> String {
    format!("cmd: exec {cmd}\ncpus: 0.01\nmem: 8\n")
}

/// A repo with history: A (web v1), B (web v2, api added), C (web renamed to .yml, v3).
/// Returns (dir, A, B).
fn history() -> (tempfile::TempDir, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    git(dir, &["init", "--quiet", "-b", "main"]);
    std::fs::write(dir.join("baton.yaml"), "owner: t\n").unwrap();
    std::fs::create_dir_all(dir.join("apps/shop")).unwrap();
    std::fs::write(dir.join("apps/shop/web.yaml"), spec("sleep 1001")).unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "--quiet", "-m", "A"]);
    let a = git(dir, &["rev-parse", "HEAD"]);
    std::fs::write(dir.join("apps/shop/web.yaml"), spec("sleep 1002")).unwrap();
    std::fs::write(dir.join("apps/shop/api.yaml"), spec("sleep 2000")).unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "--quiet", "-m", "B"]);
    let b = git(dir, &["rev-parse", "HEAD"]);
    git(dir, &["mv", "apps/shop/web.yaml", "apps/shop/web.yml"]);
    std::fs::write(dir.join("apps/shop/web.yml"), spec("sleep 1003")).unwrap();
    git(dir, &["commit", "--quiet", "-am", "C"]);
    (tmp, a, b)
}

#[test]
fn rollback_commits_the_old_spec_back_even_after_a_rename() {
    let (tmp, a, _b) = history();
    let dir = tmp.path();
    let before = git(dir, &["rev-parse", "HEAD"]);
    // Something unrelated staged: it stays staged, out of the rollback's commit.
    std::fs::write(dir.join("notes.txt"), "wip\n").unwrap();
    git(dir, &["add", "notes.txt"]);

    let (code, out, err) = baton(dir, &["rollback", "shop/web", "--to", &a[..8]]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("committed"), "{out}");
    assert_eq!(
        git(dir, &["rev-parse", "HEAD~1"]),
        before,
        "one new commit on the branch"
    );
    let message = git(dir, &["log", "-1", "--format=%B"]);
    assert!(
        message.contains("/shop/web") && message.contains(&a[..12]),
        "{message}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("apps/shop/web.yaml")).unwrap(),
        spec("sleep 1001")
    );
    assert!(
        !dir.join("apps/shop/web.yml").exists(),
        "the renamed file is gone"
    );
    let changed = git(dir, &["show", "--name-status", "--format=", "HEAD"]);
    let mut changed: Vec<&str> = changed.lines().collect();
    changed.sort();
    assert_eq!(changed, ["A\tapps/shop/web.yaml", "D\tapps/shop/web.yml"]);
    assert_eq!(git(dir, &["status", "--porcelain"]), "A  notes.txt");
    // The other app is untouched.
    assert_eq!(
        std::fs::read_to_string(dir.join("apps/shop/api.yaml")).unwrap(),
        spec("sleep 2000")
    );
    // Again: already there, nothing committed.
    let head = git(dir, &["rev-parse", "HEAD"]);
    let (code, out, err) = baton(dir, &["rollback", "/shop/web", "--to", &a]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("nothing committed"), "{out}");
    assert_eq!(git(dir, &["rev-parse", "HEAD"]), head);
}

#[test]
fn rollback_refuses_without_writing_anything() {
    let (tmp, a, _b) = history();
    let dir = tmp.path();
    let head = git(dir, &["rev-parse", "HEAD"]);
    let (code, _, err) = baton(dir, &["rollback", "/shop/web", "--to", "no-such-rev"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unknown commit `no-such-rev`"), "{err}");
    let (code, _, err) = baton(dir, &["rollback", "/shop/web", "--to=--output=/tmp/x"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unknown commit `--output=/tmp/x`"), "{err}");
    let (code, _, err) = baton(dir, &["rollback", "/shop/api", "--to", &a]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("/shop/api is not in the repo at commit"),
        "{err}"
    );
    // An uncommitted edit of the app's file now.
    std::fs::write(dir.join("apps/shop/web.yml"), spec("sleep 9")).unwrap();
    let (code, _, err) = baton(dir, &["rollback", "/shop/web", "--to", &a]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("uncommitted changes to apps/shop/web.yml"),
        "{err}"
    );
    assert_eq!(git(dir, &["rev-parse", "HEAD"]), head);
    assert_eq!(
        std::fs::read_to_string(dir.join("apps/shop/web.yml")).unwrap(),
        spec("sleep 9"),
        "the edit is kept"
    );
    // Not a git work tree.
    let plain = tempfile::tempdir().unwrap();
    let (code, _, err) = baton(plain.path(), &["rollback", "/shop/web", "--to", &a]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not inside a git work tree"), "{err}");
}

/// `--now`: the rolled-back app is applied at once (labelled with the new commit), the other
/// apps of the repo are not written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_now_applies_only_that_app() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(run(listener, DevConfig::default(), shutdown.clone()));
    let (tmp, a, _b) = history();
    let dir = tmp.path().to_path_buf();
    let (u, a2) = (url.clone(), a.clone());
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        baton(
            &dir,
            &[
                "rollback",
                "/shop/web",
                "--to",
                &a2,
                "--now",
                "--marathon",
                &u,
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let head = git(tmp.path(), &["rev-parse", "HEAD"]);
    let apps: serde_json::Value = reqwest::get(format!("{url}/v2/apps"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let apps = apps["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 1, "only /shop/web: {apps:?}");
    assert_eq!(apps[0]["id"], "/shop/web");
    assert_eq!(apps[0]["cmd"], "exec sleep 1001");
    assert_eq!(apps[0]["labels"]["baton.dev/commit"], head.as_str());
    shutdown.cancel();
    let _ = server.await;
}
