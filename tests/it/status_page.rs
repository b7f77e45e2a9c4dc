//! The status page at 5,000 apps in a real headless Chromium: it renders (paged), filters,
//! searches and opens the detail view. Prints the first-render time (see docs/benchmarks.md);
//! speed is measured, not asserted.

use std::time::Duration;

use baton::daemon::dashboard::Dashboard;
use baton_core::drift::{self, Attributions};
use baton_core::ownership;
use baton_e2e::browser::Browser;
use serde_json::{json, Value};

const APPS: usize = 5000;
const NOW: u64 = 1_795_000_000_000;

/// A repo of `APPS` specs and the scheduler's view of them: every 50th app scaled out of band,
/// every 500th missing.
fn big_report() -> drift::DriftReport {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..APPS {
        let p = dir
            .path()
            .join(format!("apps/team-{:02}/app-{i:05}.yaml", i % 40));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(
            p,
            format!("cmd: ./serve --port $PORT0\ninstances: 2\nenv: {{INDEX: \"{i}\"}}\n"),
        )
        .unwrap();
    }
    let repo = baton::commands::load_repo(dir.path()).unwrap();
    assert_eq!(repo.specs.len(), APPS, "{:?}", repo.diagnostics.first());
    let live: Vec<Value> = repo
        .specs
        .values()
        .enumerate()
        .filter(|(i, _)| i % 500 != 7)
        .map(|(i, spec)| {
            let mut app = ownership::labelled(spec, &repo.config.owner, "0123456789abcdef");
            baton_core::spec::marathon_form(&mut app);
            app["version"] = json!("2026-11-18T10:00:00.000Z");
            app["tasksRunning"] = json!(2);
            if i % 50 == 3 {
                app["instances"] = json!(5);
            }
            app
        })
        .collect();
    drift::drift(&repo, &live, &Attributions::default(), NOW)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_handles_5000_apps() {
    let Some(browser) = Browser::start("status_page_handles_5000_apps").await else {
        return;
    };
    let report = big_report();
    assert_eq!((report.summary.drifted, report.summary.missing), (100, 10));
    let dashboard = Dashboard::new(Default::default());
    dashboard.publish(&report, NOW);
    let (url, stop) =
        crate::drift::serve(baton::daemon::dashboard::router(dashboard.clone())).await;

    browser.goto(&url).await;
    browser
        .wait_for(
            "return document.body.dataset.rendered === '1'",
            Duration::from_secs(60),
            "the first render",
        )
        .await;
    let first = browser.eval("return window.batonFirstRender").await;
    eprintln!(
        "status page: first render of {APPS} apps {:.0} ms after navigation start",
        first.as_f64().unwrap()
    );

    // Paged: 100 rows, drifted first.
    let rows = browser
        .eval("return document.querySelectorAll('#rows tr').length")
        .await;
    assert_eq!(rows, json!(100));
    let first_state = browser
        .eval("return document.querySelector('#rows tr').dataset.state")
        .await;
    assert_eq!(first_state, json!("drifted"));
    let page = browser
        .eval("return document.getElementById('page').textContent")
        .await;
    assert_eq!(page, json!(format!("page 1 of 50 ({APPS} apps)")));

    // Filter by state through the chip, then search.
    browser.click("#chips button[data-state='missing']").await;
    let missing = browser
        .eval("return [...document.querySelectorAll('#rows tr')].map(r => r.dataset.state)")
        .await;
    assert_eq!(missing.as_array().unwrap().len(), 10);
    assert!(missing.as_array().unwrap().iter().all(|s| s == "missing"));
    browser.click("#chips button[data-state='']").await;
    let target = report
        .apps
        .iter()
        .find(|a| a.state == drift::DriftState::Drifted && a.app.as_str().starts_with("/team-33/"))
        .unwrap()
        .app
        .to_string();
    let needle = target.rsplit('/').next().unwrap();
    browser
        .eval(&format!("const s = document.getElementById('search'); s.value = '{needle}'; s.dispatchEvent(new Event('input')); return null"))
        .await;
    let found = browser
        .wait_for(
            "const r = [...document.querySelectorAll('#rows tr')]; return r.length === 1 && r[0].dataset.app",
            Duration::from_secs(10),
            "the search to narrow the list",
        )
        .await;
    assert_eq!(found, json!(target));

    // Detail view with the field diff.
    browser
        .click(&format!("#rows tr[data-app='{target}']"))
        .await;
    let diff = browser
        .wait_for(
            "const d = document.querySelector('#detail #diff'); return d && d.innerText",
            Duration::from_secs(10),
            "the detail view",
        )
        .await;
    assert!(diff.as_str().unwrap().contains("/instances"), "{diff}");
    browser.close().await;
    stop.cancel();
}

#[tokio::test]
async fn api_drift_and_metrics_are_served() {
    let dashboard = Dashboard::new(Default::default());
    let (url, stop) =
        crate::drift::serve(baton::daemon::dashboard::router(dashboard.clone())).await;
    let http = reqwest::Client::new();
    let r = http.get(format!("{url}api/drift")).send().await.unwrap();
    assert_eq!(r.status(), 503, "no report before the first cycle");
    let report = big_report();
    dashboard.publish(&report, NOW);
    let doc: Value = http
        .get(format!("{url}api/drift"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["summary"]["drifted"], 100);
    assert_eq!(doc["apps"].as_array().unwrap().len(), APPS);
    let metrics = baton_e2e::get_text(&http, &format!("{url}metrics")).await;
    assert!(
        metrics.contains("baton_apps{state=\"drifted\"} 100"),
        "{metrics}"
    );
    assert!(metrics.contains("baton_drifted_apps 110"), "{metrics}");
    let page = http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<title>Baton</title>") && !page.contains("<script src"));
    stop.cancel();
}

/// The page as `baton serve` serves it, in Chromium: the synced app shows in sync and synced;
/// an out-of-band change on the dev scheduler turns it drifted without a reload (auto-refresh),
/// and the detail view shows the field diff, who changed it, and the recent syncs, newest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_page_of_baton_serve_shows_drift_as_it_happens() {
    use tokio_util::sync::CancellationToken;

    let Some(browser) =
        Browser::start("status_page_of_baton_serve_shows_drift_as_it_happens").await
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(repo.join("apps")).unwrap();
    std::fs::write(repo.join("baton.yaml"), "owner: e2e\n").unwrap();
    std::fs::write(
        repo.join("apps/web.yaml"),
        "cmd: exec sleep 1000\ncpus: 0.01\nmem: 8\ninstances: 1\nenv: {COLOR: blue}\n",
    )
    .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let marathon = format!("http://{}", listener.local_addr().unwrap());
    let sched_stop = CancellationToken::new();
    let s = sched_stop.clone();
    let sched = tokio::spawn(async move {
        let _ = baton_dev_scheduler::run(listener, Default::default(), s).await;
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = baton_e2e::serve_config(
        repo.display().to_string(),
        marathon.clone(),
        &tmp.path().join("state"),
        addr,
    );
    let stop = CancellationToken::new();
    let st = stop.clone();
    let serve =
        tokio::spawn(async move { baton::daemon::serve::serve(config, listener, st).await });

    browser.goto(&format!("http://{addr}/")).await;
    let row = |state: &str, sync: &str| {
        format!(
            "const r = document.querySelector(\"#rows tr[data-app='/web']\"); \
             return !!r && r.dataset.state === '{state}' && r.children[2].innerText === '{sync}'"
        )
    };
    // The first cycle deploys; the page picks it up on its own.
    browser
        .wait_for(
            &row("in_sync", "synced"),
            Duration::from_secs(60),
            "/web in sync",
        )
        .await;

    let r = reqwest::Client::new()
        .put(format!("{marathon}/v2/apps/web?partialUpdate=true"))
        .json(&json!({"instances": 2, "env": {"COLOR": "green"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // No reload: the auto-refresh shows the drift the daemon saw on the event stream.
    browser
        .wait_for(
            "const r = document.querySelector(\"#rows tr[data-app='/web']\"); return !!r && r.dataset.state === 'drifted'",
            Duration::from_secs(60),
            "/web drifted after the out-of-band change",
        )
        .await;
    let (diff, detail) = browser.open_detail("/web").await;
    assert!(
        diff.contains("/instances") && diff.contains("/env/COLOR") && diff.contains("\"green\""),
        "{diff}"
    );
    assert!(detail.contains("via /v2/apps/web"), "{detail}");

    // Git catches up with the change (the directory is watched): in sync again, and the
    // detail view's recent syncs list the new sync first.
    baton_e2e::replace_file(
        &repo.join("apps/web.yaml"),
        "cmd: exec sleep 1000\ncpus: 0.01\nmem: 8\ninstances: 2\nenv: {COLOR: green}\n",
    );
    browser
        .wait_for(
            &row("in_sync", "synced"),
            Duration::from_secs(60),
            "/web in sync again",
        )
        .await;
    let syncs = browser
        .wait_for(
            "const t = [...document.querySelectorAll('#detail table')].pop(); \
             const s = t ? [...t.querySelectorAll('tbody tr')].map(r => r.children[1].innerText) : []; \
             return s.length >= 2 && s",
            Duration::from_secs(30),
            "two syncs in the detail view",
        )
        .await;
    assert_eq!(syncs, json!(["file-change", "startup"]));

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), serve)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    browser.close().await;
    sched_stop.cancel();
    let _ = sched.await;
}
