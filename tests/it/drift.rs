//! Drift end to end on the dev scheduler: sync a repo, change two owned apps out of band (scale
//! and env), then: the report names the fields, the client and the time; `correct` reverts its
//! app; `report` leaves its app alone; the status page shows the drifted app and its diff.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton::apply::{self, ApplyOptions};
use baton::commands::{self, DriftOptions, LiveFrom};
use baton::daemon::dashboard::Dashboard;
use baton_core::drift::{self, Attributions, DriftState, Ledger, LedgerEvent, Resolution};
use baton_core::drift_report::DriftFormat;
use baton_core::report::Style;
use baton_core::spec::AppId;
use baton_e2e::browser::Browser;
use baton_marathon::marathon::{Marathon, MarathonConfig};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

struct Scenario {
    url: String,
    marathon: Marathon,
    repo_dir: tempfile::TempDir,
    attributions: Arc<Mutex<Attributions>>,
    changed_between: (u64, u64),
    stop: CancellationToken,
    dev: tokio::task::JoinHandle<()>,
}

impl Scenario {
    async fn finish(self) {
        self.stop.cancel();
        let _ = self.dev.await;
    }

    fn live(&self) -> LiveFrom {
        LiveFrom::Scheduler(MarathonConfig::new(self.url.clone()))
    }
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

async fn wait_until<F: FnMut() -> bool>(mut f: F, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Dev scheduler up, attribution feed connected, repo synced, then `/web` (policy report) and
/// `/api` (policy correct) scaled to 2 and given `COLOR=green` out of band.
async fn scenario() -> Scenario {
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let token = stop.clone();
    let dev = tokio::spawn(async move {
        baton_dev_scheduler::run(listener, Default::default(), token)
            .await
            .unwrap();
    });
    let marathon = Marathon::new(MarathonConfig::new(url.clone())).unwrap();

    let attributions = Arc::new(Mutex::new(Attributions::default()));
    let connected = Arc::new(tokio::sync::Notify::new());
    let notified = connected.clone();
    let wait = notified.notified();
    tokio::pin!(wait);
    wait.as_mut().enable();
    tokio::spawn(baton::daemon::attribution_feed::follow(
        marathon.clone(),
        attributions.clone(),
        connected,
        stop.clone(),
    ));
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("event stream connects");

    let repo_dir = tempfile::tempdir().unwrap();
    write(
        repo_dir.path(),
        "apps/web.yaml",
        "cmd: sleep 600\ninstances: 1\ncpus: 0.01\nmem: 16\nenv: {COLOR: blue}\n",
    );
    write(
        repo_dir.path(),
        "apps/api.yaml",
        "cmd: sleep 600\ninstances: 1\ncpus: 0.01\nmem: 16\nenv: {COLOR: blue}\nbaton: {drift: correct}\n",
    );
    let repo = commands::load_repo(repo_dir.path()).unwrap();
    assert!(repo.is_valid(), "{:?}", repo.diagnostics);
    let plan = baton_core::plan::plan(
        &repo,
        &[],
        &baton_core::plan::Policy {
            commit: "c0ffee".into(),
            allow_deletes: None,
        },
    );
    let report = apply::apply(&plan, &marathon, &ApplyOptions::default(), &mut |_| {}).await;
    assert!(report.converged(), "{report:?}");

    // A freshly synced app shows no drift, on a real (dev) scheduler.
    let live = marathon.list_apps_raw().await.unwrap();
    let fresh = drift::drift(&repo, &live, &Attributions::default(), commands::unix_ms());
    assert!(
        fresh.apps.iter().all(|a| a.state == DriftState::InSync),
        "{:#?}",
        fresh.apps
    );

    let before = commands::unix_ms();
    let http = reqwest::Client::new();
    for app in ["web", "api"] {
        let r = http
            .put(format!("{url}/v2/apps/{app}?partialUpdate=true"))
            .json(&json!({"instances": 2, "env": {"COLOR": "green"}}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let after = commands::unix_ms();
    // Wait for the PUTs themselves: the creating POSTs of the sync above are on the stream too,
    // and they agree with git, so they would explain nothing.
    let att = attributions.clone();
    wait_until(
        || {
            let a = att.lock().unwrap();
            ["/web", "/api"].iter().all(|id| {
                a.latest(&AppId::parse(id).unwrap())
                    .is_some_and(|x| x.at >= before && x.uri == format!("/v2/apps{id}"))
            })
        },
        "the out-of-band changes on the event stream",
    )
    .await;
    Scenario {
        url,
        marathon,
        repo_dir,
        attributions,
        changed_between: (before, after),
        stop,
        dev,
    }
}

async fn drift_json(s: &Scenario) -> (u8, Value) {
    let options = DriftOptions {
        format: DriftFormat::Json,
        state_dir: None,
        attributions: s.attributions.lock().unwrap().clone(),
        now: None,
    };
    let mut out = Vec::new();
    let code = commands::drift(
        s.repo_dir.path(),
        &s.live(),
        &options,
        Style { color: false },
        &mut out,
    )
    .await
    .unwrap();
    (code, serde_json::from_slice(&out).unwrap())
}

fn app<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == id)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_band_changes_are_reported_attributed_and_corrected_by_policy() {
    let s = scenario().await;
    let (code, doc) = drift_json(&s).await;
    assert_eq!(code, 2, "exit 2: drift");
    for id in ["/web", "/api"] {
        let a = app(&doc, id);
        assert_eq!(a["state"], "drifted", "{a:#}");
        let fields: Vec<(&str, &Value, &Value)> = a["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["pointer"].as_str().unwrap(), &f["desired"], &f["live"]))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("/env/COLOR", &json!("blue"), &json!("green")),
                ("/instances", &json!(1), &json!(2))
            ],
            "{a:#}"
        );
        assert_eq!(a["changed_by"]["client_ip"], "127.0.0.1");
        assert_eq!(a["changed_by"]["uri"], format!("/v2/apps{id}"));
        let at = drift::parse_rfc3339(a["changed_by"]["at"].as_str().unwrap()).unwrap();
        let (before, after) = s.changed_between;
        assert!(
            at + 1000 >= before && at <= after + 1000,
            "change time {at} outside [{before}, {after}]"
        );
    }

    // The text report names the fields, the client and the time too.
    let options = DriftOptions {
        format: DriftFormat::Text,
        state_dir: None,
        attributions: s.attributions.lock().unwrap().clone(),
        now: None,
    };
    let mut out = Vec::new();
    commands::drift(
        s.repo_dir.path(),
        &s.live(),
        &options,
        Style { color: false },
        &mut out,
    )
    .await
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("/env/COLOR")
            && text.contains("/instances")
            && text.contains("127.0.0.1 via /v2/apps/web"),
        "{text}"
    );

    // One correction pass, as the daemon runs it: only `correct` apps, restricted plan, apply.
    let repo = commands::load_repo(s.repo_dir.path()).unwrap();
    let live = s.marathon.list_apps_raw().await.unwrap();
    let now = commands::unix_ms();
    let mut report = drift::drift(&repo, &live, &s.attributions.lock().unwrap(), now);
    let mut ledger = Ledger::default();
    let detected = ledger.observe(&mut report, &Default::default(), now);
    assert_eq!(
        detected
            .iter()
            .filter(|e| matches!(e, LedgerEvent::Detected(_)))
            .count(),
        2
    );
    let fix = drift::corrections(&report, &ledger, now);
    assert_eq!(
        fix,
        vec![AppId::parse("/api").unwrap()],
        "only the `correct` app"
    );
    let plan = drift::restrict(
        &baton_core::plan::plan(
            &repo,
            &live,
            &baton_core::plan::Policy {
                commit: "c0ffee".into(),
                allow_deletes: None,
            },
        ),
        &fix,
    );
    let applied = apply::apply(&plan, &s.marathon, &ApplyOptions::default(), &mut |_| {}).await;
    assert!(applied.converged(), "{applied:?}");

    let (code, doc) = drift_json(&s).await;
    assert_eq!(code, 2, "/web still drifts");
    assert_eq!(
        app(&doc, "/api")["state"],
        "in_sync",
        "`correct` reverted it"
    );
    assert_eq!(app(&doc, "/web")["state"], "drifted", "`report` left it");
    let live = s.marathon.list_apps_raw().await.unwrap();
    let web = live.iter().find(|a| a["id"] == "/web").unwrap();
    assert_eq!(
        (web["instances"].as_u64(), web["env"]["COLOR"].as_str()),
        (Some(2), Some("green"))
    );

    let now = commands::unix_ms();
    let mut report = drift::drift(&repo, &live, &s.attributions.lock().unwrap(), now);
    let events = ledger.observe(&mut report, &fix.iter().cloned().collect(), now);
    assert!(
        matches!(events.as_slice(), [LedgerEvent::Resolved(e)] if e.app.as_str() == "/api" && e.resolution == Some(Resolution::Corrected)),
        "{events:?}"
    );
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_the_drifted_app_and_its_diff() {
    let Some(browser) = Browser::start("status_page_shows_the_drifted_app_and_its_diff").await
    else {
        return;
    };
    let s = scenario().await;
    let repo = commands::load_repo(s.repo_dir.path()).unwrap();
    let live = s.marathon.list_apps_raw().await.unwrap();
    let now = commands::unix_ms();
    let mut report = drift::drift(&repo, &live, &s.attributions.lock().unwrap(), now);
    let mut ledger = Ledger::default();
    ledger.observe(&mut report, &Default::default(), now);
    report.ledger = ledger.entries.clone();
    let dashboard = Dashboard::new(Default::default());
    dashboard.publish(&report, now);
    let (page, stop_page) = serve(baton::daemon::dashboard::router(dashboard)).await;

    browser.goto(&page).await;
    browser
        .wait_for(
            "return document.body.dataset.rendered === '1'",
            Duration::from_secs(30),
            "the first render",
        )
        .await;
    let rows = browser.eval("return [...document.querySelectorAll('#rows tr')].map(r => [r.dataset.app, r.dataset.state])").await;
    assert_eq!(rows, json!([["/api", "drifted"], ["/web", "drifted"]]));
    let (diff, detail) = browser.open_detail("/web").await;
    assert!(
        diff.contains("/instances") && diff.contains("/env/COLOR") && diff.contains("\"green\""),
        "{diff}"
    );
    assert!(detail.contains("127.0.0.1 via /v2/apps/web"), "{detail}");
    browser.close().await;
    stop_page.cancel();
    s.finish().await;
}

/// Serve `router` on a loopback port until the returned token is cancelled.
pub async fn serve(router: axum::Router) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await;
    });
    (url, stop)
}
