//! The status page's header, login and actions as `baton serve` serves them, in a real headless
//! Chromium (WebDriver): a git repo over `file://`, the dev scheduler in-process.
//!
//! - logged out the page is read-only (no action buttons, the API answers 401); the login form
//!   sets an HttpOnly, SameSite=Strict session cookie (scripts cannot read it; it is not the
//!   token); then sync all and sync one app queue cycles; a POST with the cookie but without
//!   the CSRF token, or from another origin, is refused; logout ends the session server-side;
//! - with `--auth-proxy-header`, the header the proxy sets is the login.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use baton_e2e::browser::Browser;
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "page-token-4f1c9a";
const WAIT: Duration = Duration::from_secs(90);

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Ada Lovelace",
            "-c",
            "user.email=ada@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repo with one commit of one app, by "Ada Lovelace"; its URL and the commit.
fn remote(tmp: &Path) -> Option<(String, String)> {
    if Command::new("git").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "git is required in CI");
        eprintln!("skipped: git is not installed");
        return None;
    }
    let remote = tmp.join("remote.git");
    let work = tmp.join("work");
    std::fs::create_dir_all(work.join("apps")).unwrap();
    git(
        tmp,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            remote.to_str().unwrap(),
        ],
    );
    git(&work, &["init", "-q", "-b", "main"]);
    git(
        &work,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
    std::fs::write(work.join("baton.yaml"), "owner: e2e\n").unwrap();
    std::fs::write(
        work.join("apps/web.yaml"),
        "cmd: exec sleep 1000\ncpus: 0.01\nmem: 8\ninstances: 1\n",
    )
    .unwrap();
    git(&work, &["add", "-A"]);
    git(
        &work,
        &[
            "commit",
            "-q",
            "-m",
            "web: first deploy\n\nThe body is not shown.",
        ],
    );
    git(&work, &["push", "-q", "origin", "main"]);
    let commit = git(&work, &["rev-parse", "HEAD"]);
    Some((format!("file://{}", remote.display()), commit))
}

struct Served {
    url: String,
    stop: CancellationToken,
    serve: tokio::task::JoinHandle<Result<(), baton::daemon::serve::ServeError>>,
    sched_stop: CancellationToken,
    sched: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(
        tmp: &Path,
        repo: String,
        token: Option<&str>,
        proxy_header: Option<&str>,
    ) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let marathon = format!("http://{}", listener.local_addr().unwrap());
        let sched_stop = CancellationToken::new();
        let s = sched_stop.clone();
        let sched = tokio::spawn(async move {
            let _ = baton_dev_scheduler::run(listener, Default::default(), s).await;
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = baton::config::ServeConfig {
            api_token: token.map(|t| SecretString::from(t.to_string())),
            auth_proxy_header: proxy_header.map(|h| h.parse().unwrap()),
            ..baton_e2e::serve_config(repo, marathon, &tmp.join("state"), addr)
        };
        let stop = CancellationToken::new();
        let st = stop.clone();
        let serve =
            tokio::spawn(async move { baton::daemon::serve::serve(config, listener, st).await });
        Served {
            url: format!("http://{addr}/"),
            stop,
            serve,
            sched_stop,
            sched,
        }
    }

    async fn status(&self) -> Value {
        let r = reqwest::get(format!("{}api/status", self.url))
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    /// Syncs in the history with `trigger`.
    async fn count(&self, trigger: &str) -> usize {
        let st = self.status().await;
        (st["history"].as_array().into_iter().flatten())
            .filter(|h| h["trigger"] == trigger)
            .count()
    }

    /// Git fetches so far (`/metrics`).
    async fn fetches(&self) -> u64 {
        let text =
            baton_e2e::get_text(&reqwest::Client::new(), &format!("{}metrics", self.url)).await;
        text.lines()
            .find_map(|l| l.strip_prefix("baton_git_fetch_duration_seconds_count "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no fetch count in /metrics:\n{text}"))
    }

    async fn wait_for_count(&self, trigger: &str, more_than: usize, what: &str) {
        baton_e2e::wait_until(what, WAIT, || async {
            self.count(trigger).await > more_than
        })
        .await;
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.serve)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        self.sched_stop.cancel();
        let _ = self.sched.await;
    }
}

/// A visible element `css` (present and not hidden).
fn shown(css: &str) -> String {
    format!(
        "const e = document.querySelector({}); return !!e && !e.hidden && e.offsetParent !== null",
        json!(css)
    )
}

/// Open /web's detail pane (in sync: no field diff); its text once the recent syncs show.
async fn open_detail(browser: &Browser) -> String {
    browser.click("#rows tr[data-app='/web']").await;
    let t = browser
        .wait_for(
            "const d = document.getElementById('detail'); \
             return !d.hidden && d.querySelectorAll('td.author').length > 0 && d.innerText",
            WAIT,
            "the detail pane of /web with its recent syncs",
        )
        .await;
    text(&t)
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_page_login_sets_an_httponly_cookie_and_unlocks_csrf_safe_actions() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((repo, commit)) = remote(tmp.path()) else {
        return;
    };
    let Some(browser) =
        Browser::start("status_page_login_sets_an_httponly_cookie_and_unlocks_csrf_safe_actions")
            .await
    else {
        return;
    };
    let served = Served::start(tmp.path(), repo.clone(), Some(TOKEN), None).await;
    let url = served.url.clone();
    let http = reqwest::Client::new();

    browser.goto(&url).await;
    // The header: repo, branch, HEAD with its author and message, the sync mode, the last
    // sync; no environment and no leader (no environment declared; a standalone replica).
    let head = browser
        .wait_for(
            &format!(
                "const h = document.getElementById('h-last'); \
                 return h.dataset.outcome === 'synced' && document.getElementById('h-commit').innerText.includes({}) \
                 && document.getElementById('head').innerText",
                json!(&commit[..8])
            ),
            WAIT,
            "the header with HEAD and a synced last sync",
        )
        .await;
    let head = text(&head);
    for want in [
        repo.as_str(),
        "main",
        &commit[..8],
        "Ada Lovelace",
        "web: first deploy",
        "auto",
        "synced",
    ] {
        assert!(head.contains(want), "{want:?} in the header:\n{head}");
    }
    assert!(!head.contains("The body is not shown"), "{head}");
    for hidden in ["#h-env", "#h-leader"] {
        assert_eq!(
            browser.eval(&shown(hidden)).await,
            json!(false),
            "{hidden} is hidden without an environment or HA"
        );
    }
    let st = served.status().await;
    baton_e2e::assert_matches_schema("status.schema.json", &st);
    assert_eq!(
        (&st["environment"], &st["ha"]["role"]),
        (&Value::Null, &json!("standalone"))
    );
    assert_eq!(st["head"]["author"], "Ada Lovelace");
    assert_eq!(st["history"][0]["message"], "web: first deploy");

    // Logged out: read-only. No action buttons (also not in the detail pane), a login form,
    // and the API refuses a sync without credentials.
    browser
        .wait_for(&shown("#login"), WAIT, "the login form")
        .await;
    assert_eq!(browser.eval(&shown("#actions")).await, json!(false));
    let detail = open_detail(&browser).await;
    assert!(
        detail.contains("Ada Lovelace") && detail.contains("web: first deploy"),
        "history with author and message:\n{detail}"
    );
    assert_eq!(browser.eval(&shown("#sync-app")).await, json!(false));
    // In a narrow window the detail pane's labels stay whole words on one line.
    browser.resize(760, 900).await;
    let split = browser
        .eval(
            "const t = document.querySelector('#detail table'); \
             return [...t.querySelectorAll('tbody tr')].map(r => r.children[0]).filter(td => { \
               const r = document.createRange(); r.selectNodeContents(td); return r.getClientRects().length > 1; \
             }).map(td => td.innerText)",
        )
        .await;
    assert_eq!(split, json!([]), "labels broken over lines");
    browser.resize(1400, 1000).await;
    let r = http.post(format!("{url}api/sync")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // A wrong token is refused and sets nothing.
    browser.fill("#token", "not-the-token").await;
    browser.click("#login-button").await;
    browser
        .wait_for(
            "return document.getElementById('action-msg').innerText.includes('login failed')",
            WAIT,
            "the failed login's message",
        )
        .await;
    assert_eq!(browser.eval(&shown("#actions")).await, json!(false));

    // The right token: a session cookie, HttpOnly (scripts cannot see it), SameSite=Strict,
    // holding a random id, not the token.
    browser.fill("#token", TOKEN).await;
    browser.click("#login-button").await;
    browser
        .wait_for(&shown("#actions"), WAIT, "the actions after login")
        .await;
    assert_eq!(browser.eval(&shown("#login")).await, json!(false));
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "baton_session")
        .unwrap_or_else(|| panic!("no session cookie in {cookies:?}"))
        .clone();
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    let id = text(&session["value"]);
    assert!(id.len() >= 32 && !id.contains(TOKEN), "{session}");
    let visible = browser.eval("return document.cookie").await;
    assert!(!text(&visible).contains("baton_session"), "{visible}");

    // Sync all and sync one app, through the buttons: each is accepted and runs a cycle.
    let before = served.count("manual-sync").await;
    browser.click("#sync-all").await;
    served
        .wait_for_count("manual-sync", before, "a cycle after Sync all")
        .await;
    browser
        .wait_for(
            "return document.getElementById('action-msg').innerText === 'sync all: queued'",
            WAIT,
            "Sync all accepted",
        )
        .await;
    let before = served.count("manual-sync").await;
    open_detail(&browser).await;
    browser
        .wait_for(&shown("#sync-app"), WAIT, "the app's Sync button")
        .await;
    browser.click("#sync-app").await;
    browser
        .wait_for(
            "return document.getElementById('action-msg').innerText === 'sync /web: queued'",
            WAIT,
            "Sync /web accepted",
        )
        .await;
    served
        .wait_for_count("manual-sync", before, "a cycle after Sync /web")
        .await;
    // Refresh queues a look (a poll): one more fetch of the repo.
    let before = served.fetches().await;
    browser.click("#refresh").await;
    baton_e2e::wait_until("a fetch after Refresh", WAIT, || async {
        served.fetches().await > before
    })
    .await;

    // CSRF: the cookie alone is not enough. Without the CSRF token, refused; with it but from
    // another origin, refused; as a cross-site fetch says (Sec-Fetch-Site), refused; with the
    // token from /api/session (same origin), accepted.
    let cookie = format!("baton_session={id}");
    let me: Value = http
        .get(format!("{url}api/session"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    baton_e2e::assert_matches_schema("session.schema.json", &me);
    assert_eq!(
        (&me["authenticated"], &me["method"]),
        (&json!(true), &json!("session"))
    );
    let csrf = text(&me["csrfToken"]);
    let post = |extra: &[(&str, &str)]| {
        let mut r = http
            .post(format!("{url}api/sync"))
            .header("Cookie", &cookie);
        for (k, v) in extra {
            r = r.header(*k, *v);
        }
        r.send()
    };
    assert_eq!(post(&[]).await.unwrap().status(), 403, "no CSRF token");
    assert_eq!(
        post(&[("X-CSRF-Token", "00ff")]).await.unwrap().status(),
        403,
        "a wrong CSRF token"
    );
    assert_eq!(
        post(&[("X-CSRF-Token", &csrf), ("Origin", "http://evil.example")])
            .await
            .unwrap()
            .status(),
        403,
        "another origin"
    );
    assert_eq!(
        post(&[("X-CSRF-Token", &csrf), ("Sec-Fetch-Site", "cross-site")])
            .await
            .unwrap()
            .status(),
        403,
        "a cross-site fetch"
    );
    assert_eq!(
        post(&[("X-CSRF-Token", &csrf)]).await.unwrap().status(),
        202
    );
    // Bearer clients work as before.
    let r = http
        .post(format!("{url}api/sync"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // Logout: back to read-only, and the old cookie is dead on the server.
    browser.click("#logout").await;
    browser
        .wait_for(&shown("#login"), WAIT, "the login form after logout")
        .await;
    assert_eq!(browser.eval(&shown("#actions")).await, json!(false));
    assert_eq!(
        post(&[("X-CSRF-Token", &csrf)]).await.unwrap().status(),
        401,
        "the session ended"
    );

    browser.close().await;
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_page_trusts_the_proxy_header_when_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((repo, _)) = remote(tmp.path()) else {
        return;
    };
    let Some(browser) = Browser::start("status_page_trusts_the_proxy_header_when_configured").await
    else {
        return;
    };
    let served = Served::start(tmp.path(), repo, None, Some("X-Forwarded-User")).await;
    let url = served.url.clone();
    let http = reqwest::Client::new();
    // Even from loopback, no header means no action (behind a proxy every peer is loopback).
    let r = http.post(format!("{url}api/sync")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{url}api/sync"))
        .header("X-Forwarded-User", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the proxy user still needs the CSRF token");

    // The browser behind the "proxy": every request carries the header.
    browser.cdp("Network.enable", json!({})).await;
    browser
        .cdp(
            "Network.setExtraHTTPHeaders",
            json!({"headers": {"X-Forwarded-User": "alice"}}),
        )
        .await;
    browser.goto(&url).await;
    browser
        .wait_for(&shown("#actions"), WAIT, "the actions for the proxy's user")
        .await;
    let who = browser
        .eval("return document.getElementById('who').innerText")
        .await;
    assert_eq!(who, json!("alice"));
    assert_eq!(browser.eval(&shown("#login")).await, json!(false));
    let before = served.count("manual-sync").await;
    browser.click("#sync-all").await;
    served
        .wait_for_count(
            "manual-sync",
            before,
            "a cycle after the proxy user's Sync all",
        )
        .await;
    browser.close().await;
    served.stop().await;
}

/// The header shows the environment and the HA role and leader when `/api/status` has them
/// (other engineers fill them in), and a task list mid-deployment reads "deploying", not
/// "down". The page's own server is stood in for by one answering a fixed status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_environment_leader_and_deploying_when_present() {
    let Some(browser) =
        Browser::start("status_page_shows_environment_leader_and_deploying_when_present").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("apps")).unwrap();
    std::fs::write(dir.path().join("baton.yaml"), "owner: e2e\n").unwrap();
    std::fs::write(
        dir.path().join("apps/web.yaml"),
        "cmd: ./web\ninstances: 3\n",
    )
    .unwrap();
    let repo = baton::commands::load_repo(dir.path()).unwrap();
    let spec = &repo.specs[&baton_core::spec::AppId::parse("/web").unwrap()];
    let mut live = baton_core::ownership::labelled(spec, "e2e", "0123abcd");
    baton_core::spec::marathon_form(&mut live);
    live["tasksRunning"] = json!(2);
    live["deployments"] = json!([{"id": "d-1"}]);
    let now = 1_795_000_000_000;
    let report = baton_core::drift::drift(
        &repo,
        &[live],
        &baton_core::drift::Attributions::default(),
        now,
    );
    let dashboard = baton::daemon::dashboard::Dashboard::new(Default::default());
    dashboard.publish(&report, now);
    let status = json!({
        "source": "https://git.example/ops.git@main", "repo": "https://git.example/ops.git",
        "branch": "main", "head": null, "lastSync": null, "environment": "staging",
        "ha": {"role": "follower", "leaderId": "baton-b", "id": "baton-a", "writing": false,
               "reason": "a follower", "zookeeper": "127.0.0.1:2181", "path": "/baton/shop",
               "sessionTimeoutMs": 10000, "leaseMs": 6666, "leadershipChanges": 1,
               "sinceLastElectionMs": 5000},
        "syncMode": "manual", "ready": true,
        "lastFetched": null, "lastSynced": null, "lastError": null, "pending": null, "cycle": null,
        "apps": [], "history": [], "vault": null, "ownership": null
    });
    baton_e2e::assert_matches_schema("status.schema.json", &status);
    let router = baton::daemon::dashboard::router(dashboard).route(
        "/api/status",
        axum::routing::get(move || {
            let s = status.clone();
            async move { axum::Json(s) }
        }),
    );
    let (url, stop) = crate::drift::serve(router).await;
    browser.goto(&url).await;
    let head = browser
        .wait_for(
            "const e = document.getElementById('h-env'); \
             return !e.hidden && document.getElementById('head').innerText",
            WAIT,
            "the environment in the header",
        )
        .await;
    let head = text(&head);
    assert!(head.contains("staging"), "{head}");
    assert!(
        head.contains("follower") && head.contains("baton-b"),
        "{head}"
    );
    assert!(head.contains("manual"), "{head}");
    let health = browser
        .wait_for(
            "const r = document.querySelector(\"#rows tr[data-app='/web']\"); return !!r && r.children[3].innerText",
            WAIT,
            "the /web row",
        )
        .await;
    assert_eq!(health, json!("deploying 2/3 running"));
    browser.close().await;
    stop.cancel();
}
