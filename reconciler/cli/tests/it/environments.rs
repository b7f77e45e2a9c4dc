//! `baton` with environments, as a user runs it: validate across environments, errors for a
//! bad `environments:` block, commands that need `--environment`, `promote --commit`.

use std::path::Path;
use std::process::{Command, Output};

fn baton(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const WEB: &str = "cmd: sleep 600\ncpus: 0.1\nmem: 32\ninstances: 1\nenv: {MODE: base}\n";

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "baton.yaml",
        "owner: shop\nenvironments:\n  qa: {marathon: 'http://127.0.0.1:1'}\n  prod: {marathon: 'http://127.0.0.1:2'}\n",
    );
    write(dir.path(), "apps/web.yaml", WEB);
    dir
}

#[test]
fn validate_checks_every_environment_and_names_the_one_that_fails() {
    let dir = repo();
    write(
        dir.path(),
        "environments/qa/apps/web.yaml",
        "\ninstances: lots\n",
    );
    let o = baton(&["validate", ".", "--format", "json"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    crate::support::assert_matches_schema("validate.schema.json", &doc);
    let d = &doc["diagnostics"][0];
    assert_eq!(d["file"], "environments/qa/apps/web.yaml");
    assert_eq!(d["line"], 2);
    assert_eq!(d["pointer"], "/instances");
    let message = d["message"].as_str().unwrap();
    assert!(
        message.contains("environment `qa`") && message.contains("apps/web.yaml"),
        "{message}"
    );
    assert_eq!(doc["diagnostics"].as_array().unwrap().len(), 1, "{doc:#}");
    // prod alone is fine: the overlay of qa is qa's only.
    std::fs::remove_file(dir.path().join("environments/qa/apps/web.yaml")).unwrap();
    let o = baton(&["validate", "."], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
}

#[test]
fn an_inline_secret_in_baton_yaml_is_an_error_that_never_shows_the_secret() {
    let dir = repo();
    write(
        dir.path(),
        "baton.yaml",
        "environments:\n  prod:\n    marathon: http://m:8080\n    marathonToken: s3cr3t-t0ken\n",
    );
    let o = baton(&["validate", "."], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let text = out(&o);
    assert!(
        text.contains("4:") && text.contains("marathonTokenFile"),
        "{text}"
    );
    assert!(!text.contains("s3cr3t"), "{text}");
}

#[test]
fn commands_need_an_environment_the_repo_declares() {
    let dir = repo();
    std::fs::write(dir.path().join("live.json"), "{\"apps\": []}").unwrap();
    let o = baton(&["plan", "--live", "live.json"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("--environment"), "{}", out(&o));
    let o = baton(
        &["plan", "--live", "live.json", "--environment", "perf"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("no environment `perf`"), "{}", out(&o));
    let o = baton(
        &[
            "plan",
            "--live",
            "live.json",
            "--environment",
            "qa",
            "--format",
            "json",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    crate::support::assert_matches_schema("plan.schema.json", &doc);
    assert_eq!(doc["plan"]["owner"], "shop.qa");
    // Without --live or --marathon the environment's Marathon is asked (here: nobody listens).
    let o = baton(&["plan", "--environment", "qa"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("127.0.0.1:1"), "{}", out(&o));
}

#[test]
fn promote_with_commit_makes_one_commit_of_the_overlay() {
    let dir = repo();
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", out(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    write(
        dir.path(),
        "environments/qa/apps/web.yaml",
        "env: {MODE: qa, V: '2'}\n",
    );
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "init"]);
    let o = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "promote", "qa", "prod", "/web", "--fields", "/env/V", "--commit",
        ])
        .current_dir(dir.path())
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(git(&["status", "--porcelain"]), "");
    assert_eq!(
        git(&["show", "--name-only", "--format=%s", "HEAD"]).trim(),
        "promote qa -> prod\n\nenvironments/prod/apps/web.yaml"
    );
    let written =
        std::fs::read_to_string(dir.path().join("environments/prod/apps/web.yaml")).unwrap();
    assert_eq!(written, "env:\n  V: \"2\"\n");
    // Now prod runs qa's V and still its own MODE.
    let o = baton(&["diff-env", "qa", "prod"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(
        out(&o).contains("/env/MODE") && !out(&o).contains("/env/V:"),
        "{}",
        out(&o)
    );
    // Nothing left to promote of V: nothing written, no commit.
    let o = baton(
        &["promote", "qa", "prod", "/web", "--fields", "/env/V"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("nothing to promote"), "{}", out(&o));
}

#[test]
fn promote_refuses_when_the_target_has_no_valid_spec_and_writes_nothing() {
    let dir = repo();
    // prod's own overlay is broken: its /web is invalid there, and nothing is written over it.
    write(
        dir.path(),
        "environments/qa/apps/web.yaml",
        "env: {MODE: qa}\n",
    );
    write(
        dir.path(),
        "environments/prod/apps/web.yaml",
        "- not a mapping\n",
    );
    let o = baton(&["promote", "qa", "prod", "/web"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("no valid spec of `/web`"), "{}", out(&o));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("environments/prod/apps/web.yaml")).unwrap(),
        "- not a mapping\n"
    );
}

#[test]
fn serve_takes_the_environments_marathon_only_from_a_repo_on_this_host() {
    let dir = repo();
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap();
    // A remote repo: its baton.yaml is not read before the daemon starts, so --marathon is needed.
    let o = baton(
        &[
            "serve",
            "--repo",
            "https://git.example.invalid/shop.git",
            "--state-dir",
            state,
            "--environment",
            "qa",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(64), "{}", out(&o));
    assert!(out(&o).contains("--marathon"), "{}", out(&o));
    // A directory that does not declare the environment: refused before anything binds.
    let o = baton(
        &[
            "serve",
            "--repo",
            ".",
            "--state-dir",
            state,
            "--environment",
            "perf",
            "--listen",
            "127.0.0.1:0",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(64), "{}", out(&o));
    assert!(out(&o).contains("no environment `perf`"), "{}", out(&o));
}

/// `plan --environment NAME` asks the environment's `vaultAddr` (nothing listens there: the
/// error names it), unless `--vault-addr` overrides it; without a token it says whose address
/// needs one.
#[test]
fn plan_uses_the_environments_vault_address_unless_vault_addr_overrides_it() {
    let dir = repo();
    // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    write(
        dir.path(),
        "baton.yaml",
        "owner: shop\nenvironments:\n  qa: {marathon: 'http://127.0.0.1:1', vaultAddr: 'http://127.0.0.1:9'}\n  prod: {marathon: 'http://127.0.0.1:2'}\n",
    );
    write(dir.path(), "live.json", "{\"apps\": []}\n");
    let plan = |extra: &[&str], token: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_baton"));
        c.args(["plan", "--live", "live.json"])
            .args(extra)
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env_remove("BATON_VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .env_remove("BATON_VAULT_TOKEN");
        if token {
            c.env("BATON_VAULT_TOKEN", "t");
        }
        c.output().unwrap()
    };
    let o = plan(&["--environment", "qa"], true);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        out(&o).contains("Vault at http://127.0.0.1:9: ") && out(&o).contains("cannot reach Vault"),
        "{}",
        out(&o)
    );
    // The flag wins over the environment's address.
    let o = plan(
        &["--environment", "qa", "--vault-addr", "http://127.0.0.1:7"],
        true,
    );
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        out(&o).contains("Vault at http://127.0.0.1:7: "),
        "{}",
        out(&o)
    );
    assert!(!out(&o).contains("127.0.0.1:9"), "{}", out(&o));
    // No token: refused before anything is read, naming the environment and its address.
    let o = plan(&["--environment", "qa"], false);
    assert_eq!(o.status.code(), Some(64), "{}", out(&o));
    assert!(
        out(&o).contains("--vault-addr (from environment `qa` in baton.yaml): http://127.0.0.1:9: no Vault token"),
        "{}",
        out(&o)
    );
    // An environment without `vaultAddr` plans with Vault state unknown, as before.
    let o = plan(&["--environment", "prod"], true);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
}

/// `baton dev` in a repo that declares environments: without `--environment` it stops at once
/// with an error listing them; with one it applies that environment (its overlay, its owner) to
/// its own dev scheduler and says the environment's Marathon is not used.
#[tokio::test]
async fn dev_applies_the_environment_named_and_lists_them_when_none_is() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::Duration;
    let dir = repo();
    write(
        dir.path(),
        "environments/qa/apps/web.yaml",
        "env: {MODE: qa}\n",
    );
    let dev = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["dev", "--repo", "."])
            .args(["--listen", "127.0.0.1:0", "--page-listen", "127.0.0.1:0"])
            .args(extra)
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env_remove("BATON_ENVIRONMENT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Without --environment: an error at once, naming every environment (a bounded wait: a
    // `baton dev` that kept running instead is killed and fails the test).
    let child = dev(&[]);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(o) = rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        panic!("baton dev without --environment kept running");
    };
    let o = o.unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        out(&o).contains("declares environments (prod, qa): name one with --environment"),
        "{}",
        out(&o)
    );

    // With --environment qa: qa's overlay and owner, on the embedded dev scheduler.
    let mut child = dev(&["--environment", "qa"]);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let mut seen = Vec::new();
    while !seen
        .last()
        .is_some_and(|l: &String| l.starts_with("watching "))
    {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                panic!("no first apply within 120 s: {seen:#?}");
            }
        }
    }
    let said = |prefix: &str| {
        seen.iter()
            .find(|l| l.starts_with(prefix))
            .cloned()
            .unwrap_or_else(|| panic!("no `{prefix}` line: {seen:#?}"))
    };
    let env_line = said("environment: qa");
    assert!(
        env_line.contains("http://127.0.0.1:1 is not used"),
        "{env_line}"
    );
    let url = said("dev scheduler: ");
    let url = url["dev scheduler: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let app: serde_json::Value = reqwest::get(format!("{url}/v2/apps/web"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(app["app"]["env"]["MODE"], "qa", "{app:#}");
    assert_eq!(
        app["app"]["labels"]["baton.dev/owner"], "shop.qa",
        "{app:#}"
    );

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let waited = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await;
    let Ok(waited) = waited else {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        panic!("baton dev did not stop on SIGINT within 60 s");
    };
    assert_eq!(waited.unwrap().unwrap().code(), Some(0));
}
