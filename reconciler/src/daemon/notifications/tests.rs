use std::sync::Mutex;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use tokio::sync::mpsc::UnboundedSender;

use super::*;
use baton_core::drift::{DriftState, Resolution};

fn id(s: &str) -> AppId {
    AppId::parse(s).unwrap()
}

fn detected() -> Notification {
    Notification::DriftDetected {
        app: id("/shop/web"),
        fields: vec!["/instances".into(), "/env/COLOR".into()],
        changed_by: Some(Attribution {
            client_ip: "10.0.0.8".into(),
            uri: "/v2/apps/shop/web".into(),
            at: 1_795_000_000_000,
        }),
        policy: "correct".into(),
    }
}

#[test]
fn payloads_say_what_changed_and_why() {
    let j = json_payload(&detected(), Some("shop"), 1_795_000_060_000);
    assert_eq!(j["event"], "drift_detected");
    assert_eq!(j["owner"], "shop");
    assert_eq!(j["details"]["changed_by"]["client_ip"], "10.0.0.8");
    let s = j["summary"].as_str().unwrap();
    assert!(
        s.contains("/shop/web")
            && s.contains("/instances, /env/COLOR")
            && s.contains("10.0.0.8")
            && s.contains("correct it now"),
        "{s}"
    );

    let resolved = Notification::DriftResolved {
        entry: LedgerEntry {
            app: id("/shop/web"),
            state: DriftState::Drifted,
            first_seen: 0,
            last_seen: 0,
            duration_seconds: 330,
            fields: vec!["/instances".into()],
            changed_by: None,
            resolution: Some(Resolution::Corrected),
            resolved_at: Some(330_000),
            git_digest: None,
        },
    };
    let slack = slack_payload(&resolved, Some("prod"));
    let t = slack["text"].as_str().unwrap();
    assert!(
        t.contains("[prod]") && t.contains("corrected by Baton") && t.contains("5m30s"),
        "{t}"
    );
    assert_eq!(slack["blocks"][0]["text"]["text"], slack["text"]);

    let failed = Notification::SyncFailed {
        commit: Some("0123456789abcdef".into()),
        error: "1 app failed".into(),
        apps: vec![(id("/a"), "rejected".into())],
    };
    let j = json_payload(&failed, None, 0);
    assert_eq!(
        j["owner"],
        Value::Null,
        "no repo loaded yet: no owner to name"
    );
    assert!(slack_payload(&failed, None)["text"]
        .as_str()
        .unwrap()
        .starts_with(":x: Sync of commit"));
    assert!(j["summary"]
        .as_str()
        .unwrap()
        .contains("commit 0123456789ab"));
    assert_eq!(j["details"]["apps"][0]["reason"], "rejected");
}

/// A rollback says which app, which commit, which step and which numbers, in both payloads.
#[test]
fn a_rolled_back_rollout_names_commit_step_and_numbers() {
    let n = Notification::RolloutRolledBack {
        app: id("/shop/api"),
        commit: "0123456789abcdef".into(),
        step: Some(1),
        reason: "step 1: 11 of 40 responses were 5xx (27.5%)".into(),
        requests: Some(40),
        errors: Some(11),
        rate: Some(0.275),
    };
    let j = json_payload(&n, Some("shop"), 0);
    assert_eq!(j["event"], "rollout_rolled_back");
    assert_eq!(j["details"]["commit"], "0123456789abcdef");
    assert_eq!(j["details"]["step"], 1);
    assert_eq!(
        (
            j["details"]["requests"].as_u64(),
            j["details"]["errors"].as_u64()
        ),
        (Some(40), Some(11))
    );
    assert_eq!(j["details"]["error_rate"], 0.275);
    let s = j["summary"].as_str().unwrap();
    assert!(
        s.contains("/shop/api") && s.contains("0123456789ab") && s.contains("27.5%"),
        "{s}"
    );
    let t = slack_payload(&n, Some("shop"))["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(t.starts_with(":x: [shop] Rollout of /shop/api"), "{t}");
}

#[test]
fn sink_urls_stay_out_of_debug_output() {
    let s = Sink {
        kind: SinkKind::Slack,
        url: "https://hooks.example/T000/B000/XXXXSECRET".into(),
    };
    assert!(!format!("{s:?}").contains("SECRET"));
}

/// A receiver that fails the first `fail_first` requests with 503, then accepts.
async fn receiver(
    fail_first: usize,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<Value>,
    CancellationToken,
) {
    #[derive(Clone)]
    struct Ctx {
        left: Arc<Mutex<usize>>,
        tx: UnboundedSender<Value>,
    }
    async fn hook(State(c): State<Ctx>, Json(body): Json<Value>) -> StatusCode {
        let mut left = c.left.lock().unwrap();
        let _ = c.tx.send(body);
        if *left > 0 {
            *left -= 1;
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = Router::new().route("/hook", post(hook)).with_state(Ctx {
        left: Arc::new(Mutex::new(fail_first)),
        tx,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await;
    });
    (format!("http://{addr}/hook"), rx, stop)
}

/// Each notification names the owner of the repo as loaded when it was queued: none before a
/// first load, then whatever `baton.yaml` says (never a built-in default), and a later owner
/// does not rename what is already queued.
#[tokio::test]
async fn notifications_name_the_owner_of_the_loaded_repo() {
    let (url, mut got, stop) = receiver(0).await;
    let metrics = Arc::new(Metrics::default());
    let config = NotifierConfig {
        sinks: vec![Sink {
            kind: SinkKind::Json,
            url,
        }],
        ..Default::default()
    };
    let (notifier, task) = spawn(config, metrics, CancellationToken::new()).unwrap();
    let clone = notifier.clone();
    assert!(notifier.notify(detected()));
    notifier.set_owner("team-a");
    assert!(clone.notify(detected()), "clones share the owner");
    clone.set_owner("team-b");
    assert!(notifier.notify(detected()));
    drop((notifier, clone));
    task.await.unwrap();
    let mut owners = Vec::new();
    while let Ok(b) = got.try_recv() {
        owners.push(b["owner"].clone());
    }
    assert_eq!(owners, [Value::Null, json!("team-a"), json!("team-b")]);
    stop.cancel();
}

#[tokio::test]
async fn deliveries_are_retried_until_accepted() {
    let (url, mut got, stop) = receiver(2).await;
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    let config = NotifierConfig {
        sinks: vec![Sink {
            kind: SinkKind::Json,
            url,
        }],
        backoff: Duration::from_millis(5),
        ..Default::default()
    };
    let (notifier, task) = spawn(config, metrics.clone(), shutdown.clone()).unwrap();
    assert!(notifier.notify(detected()));
    drop(notifier); // the task drains the queue, then ends
    task.await.unwrap();
    let mut bodies = Vec::new();
    while let Ok(b) = got.try_recv() {
        bodies.push(b);
    }
    assert_eq!(bodies.len(), 3, "two refusals, then the accepted try");
    assert!(bodies.iter().all(|b| b["event"] == "drift_detected"));
    assert!(metrics
        .render()
        .contains("baton_notifications_total{outcome=\"sent\"} 1"));
    stop.cancel();
}

#[tokio::test]
async fn a_sink_that_never_accepts_fails_after_the_attempts() {
    let (url, mut got, stop) = receiver(usize::MAX).await;
    let metrics = Arc::new(Metrics::default());
    let config = NotifierConfig {
        sinks: vec![Sink {
            kind: SinkKind::Slack,
            url,
        }],
        attempts: 3,
        backoff: Duration::from_millis(1),
        ..Default::default()
    };
    let (notifier, task) = spawn(config, metrics.clone(), CancellationToken::new()).unwrap();
    notifier.notify(detected());
    drop(notifier);
    task.await.unwrap();
    let mut n = 0;
    while let Ok(b) = got.try_recv() {
        assert!(b["text"].as_str().unwrap().contains(":warning:"));
        n += 1;
    }
    assert_eq!(n, 3);
    assert!(metrics
        .render()
        .contains("baton_notifications_total{outcome=\"failed\"} 1"));
    stop.cancel();
}

/// Each sink has its own queue and task: one that never answers (and is being retried) does
/// not hold back the notifications of another.
#[tokio::test]
async fn a_dead_sink_does_not_delay_the_others() {
    let (good, mut got, stop) = receiver(0).await;
    let (dead, _dead_got, dead_stop) = receiver(usize::MAX).await;
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    let config = NotifierConfig {
        sinks: vec![
            Sink {
                kind: SinkKind::Json,
                url: dead,
            },
            Sink {
                kind: SinkKind::Json,
                url: good,
            },
        ],
        // Were the sinks served one after the other, the first notification alone would hold
        // the second sink back for about an hour of backoff.
        attempts: 5,
        backoff: Duration::from_secs(900),
        ..Default::default()
    };
    let (notifier, task) = spawn(config, metrics.clone(), shutdown.clone()).unwrap();
    assert!(notifier.notify(detected()));
    assert!(notifier.notify(detected()));
    for _ in 0..2 {
        let b = tokio::time::timeout(Duration::from_secs(30), got.recv())
            .await
            .expect("the live sink got its notifications while the dead one is retried")
            .unwrap();
        assert_eq!(b["event"], "drift_detected");
    }
    shutdown.cancel();
    task.await.unwrap();
    stop.cancel();
    dead_stop.cancel();
}

#[test]
fn a_full_queue_drops_instead_of_blocking() {
    let metrics = Arc::new(Metrics::default());
    let (tx, _rx) = mpsc::channel(1);
    let n = Notifier::new(vec![Queue::Sink(tx)], metrics.clone());
    assert!(n.notify(detected()));
    assert!(
        !n.notify(detected()),
        "the second does not fit and must not block"
    );
    assert!(metrics
        .render()
        .contains("baton_notifications_total{outcome=\"dropped\"} 1"));
    assert!(!Notifier::disabled(metrics).notify(detected()));
}

#[test]
fn payloads_name_the_environment_when_the_daemon_syncs_one() {
    let json = with_environment(
        json_payload(&detected(), Some("shop.prod"), 0),
        Some("prod"),
        SinkKind::Json,
    );
    assert_eq!(json["environment"], "prod");
    let slack = with_environment(
        slack_payload(&detected(), Some("shop.prod")),
        Some("prod"),
        SinkKind::Slack,
    );
    let text = slack["text"].as_str().unwrap();
    assert!(text.starts_with("[prod] "), "{text}");
    assert_eq!(slack["blocks"][0]["text"]["text"], slack["text"]);
    // Without environments: the payloads of before, unchanged.
    let plain = json_payload(&detected(), Some("shop"), 0);
    assert_eq!(with_environment(plain.clone(), None, SinkKind::Json), plain);
    assert!(plain.get("environment").is_none());
}
