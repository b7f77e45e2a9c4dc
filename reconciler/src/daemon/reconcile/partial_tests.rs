//! Cycles that look at a few apps: a scheduler event re-reads only the apps it names (and
//! corrects them if their policy says so), events of Baton's own writes cost nothing, and a
//! push stops a cycle that has not written anything yet.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;

use super::fast_path_tests::{app, paths, repo, Rev, Scripted};
use super::*;
use crate::daemon::notifications::Notification;
use baton_marathon::fake::{Call, Fake};

/// A running loop over a scripted source and the fake scheduler, with its notifications.
struct Running {
    shared: Arc<Shared>,
    fake: Arc<Fake>,
    revs: Arc<std::sync::Mutex<Vec<Rev>>>,
    notes: mpsc::Receiver<Notification>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), StateError>>,
    _dir: tempfile::TempDir,
}

/// Start the loop at revision `r1` of `files` and wait until it is deployed.
async fn start(files: &[(&str, &str)]) -> Running {
    let revs = Arc::new(std::sync::Mutex::new(vec![(
        "r1".to_string(),
        repo(files),
        None,
    )]));
    let source = Scripted {
        revs: revs.clone(),
        changed: None,
    };
    let fake = Arc::new(Fake::new(Duration::from_millis(5)));
    let dir = tempfile::tempdir().unwrap();
    let (shared, rx) = Shared::new("scripted".into(), SyncMode::Auto);
    let (notifier, notes) =
        crate::daemon::notifications::channel(64, shared.dashboard.metrics.clone());
    let config = LoopConfig {
        sync: SyncMode::Auto,
        poll_interval: Duration::from_secs(3600),
        state_dir: dir.path().to_path_buf(),
        allow_deletes: None,
        apply: ApplyOptions::default(),
        secrets: None,
        notifier: Some(notifier),
        rollout: Default::default(),
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(
        source,
        fake.clone(),
        config,
        shared.clone(),
        rx,
        stop.clone(),
    ));
    let mut r = Running {
        shared,
        fake,
        revs,
        notes,
        stop,
        task,
        _dir: dir,
    };
    r.expect("r1 deployed", |n| finished(n, "r1")).await;
    r
}

fn finished(n: &Notification, commit: &str) -> bool {
    matches!(n, Notification::DeploymentFinished { commit: Some(c), .. } if c == commit)
}

fn drift_of(n: &Notification, id: &str) -> bool {
    matches!(n, Notification::DriftDetected { app, .. } if app.as_str() == id)
}

impl Running {
    /// The next notification that `matches` (others are skipped).
    async fn expect(
        &mut self,
        what: &str,
        matches: impl Fn(&Notification) -> bool,
    ) -> Notification {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, self.notes.recv()).await {
                Ok(Some(n)) if matches(&n) => return n,
                Ok(Some(_)) => {}
                _ => panic!("no notification: {what}"),
            }
        }
    }

    /// Change an app on the scheduler as someone else would (not through Baton).
    fn change_outside(&self, id: &str, change: impl FnOnce(&mut serde_json::Value)) {
        let mut a = self.fake.app(id).unwrap();
        change(&mut a);
        self.fake.seed(a);
    }

    fn sync_state(&self, id: &str) -> &'static str {
        let st = self.shared.status();
        st.apps.iter().find(|a| a.id == id).unwrap().sync
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_scheduler_event_rereads_only_the_apps_it_names() {
    let mut r = start(&[
        ("apps/a.yaml", &app("a")),
        (
            "apps/b.yaml",
            "cmd: b\ninstances: 1\nbaton:\n  drift: correct\n",
        ),
        ("apps/c.yaml", &app("c")),
    ])
    .await;

    // /a scaled outside Baton (policy: report): one read of /a, drift reported, no write.
    let before = r.fake.calls().len();
    r.change_outside("/a", |a| a["instances"] = json!(3));
    r.shared.trigger(Trigger::SchedulerEvent {
        app: "/a".into(),
        version: Some("someone-else".into()),
    });
    r.expect("drift of /a", |n| drift_of(n, "/a")).await;
    assert_eq!(r.fake.calls()[before..], [Call::GetApp("/a".into())]);
    assert_eq!(
        r.sync_state("/a"),
        "outOfSync",
        "the update is held, as a full cycle would"
    );
    assert_eq!(r.sync_state("/c"), "synced");
    let report = r.shared.dashboard.with_report(|d| d.cloned()).unwrap();
    let state = |id: &str| report.app(&AppId::parse(id).unwrap()).unwrap().state;
    assert_eq!(state("/a"), baton_core::drift::DriftState::Drifted);
    assert_eq!(state("/c"), baton_core::drift::DriftState::InSync);

    // /b changed outside Baton (policy: correct): put back, still without listing anything.
    let before = r.fake.calls().len();
    r.change_outside("/b", |b| b["cmd"] = json!("hacked"));
    r.shared.trigger(Trigger::SchedulerEvent {
        app: "/b".into(),
        version: Some("someone-else".into()),
    });
    let n = r
        .expect("the correction of /b", |n| {
            matches!(n, Notification::DeploymentFinished { apps, .. } if apps.iter().any(|a| a.as_str() == "/b"))
        })
        .await;
    assert!(matches!(n, Notification::DeploymentFinished { commit: Some(c), .. } if c == "r1"));
    assert_eq!(r.fake.app("/b").unwrap()["cmd"], "b");
    let calls = r.fake.calls()[before..].to_vec();
    assert_eq!(calls.first(), Some(&Call::GetApp("/b".into())), "{calls:?}");
    assert!(calls.contains(&Call::PutApp("/b".into())), "{calls:?}");
    assert!(
        calls.iter().all(|c| match c {
            Call::GetApp(id) | Call::PutApp(id) => id == "/b",
            Call::Events | Call::Deployments => true,
            _ => false,
        }),
        "only /b is read and written, nothing is listed: {calls:?}"
    );
    assert_eq!(
        r.fake
            .writes()
            .iter()
            .filter(|c| **c == Call::PutApp("/a".into()))
            .count(),
        1
    );
    r.stop().await;
}

#[tokio::test]
async fn events_of_baton_own_writes_are_not_looked_at() {
    let mut r = start(&[("apps/a.yaml", &app("a")), ("apps/c.yaml", &app("c"))]).await;
    // The event of Baton's own write of /a (its version, as the write's answer gave it), and a
    // change of /c made outside Baton.
    let own = r.fake.app("/a").unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string();
    let before = r.fake.calls().len();
    r.change_outside("/c", |c| c["instances"] = json!(2));
    r.shared.trigger(Trigger::SchedulerEvent {
        app: "/a".into(),
        version: Some(own.clone()),
    });
    r.shared.trigger(Trigger::SchedulerEvent {
        app: "/c".into(),
        version: Some("someone-else".into()),
    });
    r.expect("drift of /c", |n| drift_of(n, "/c")).await;
    assert_eq!(r.fake.calls()[before..], [Call::GetApp("/c".into())]);
    assert!(
        !r.shared.own_writes.take("/a", &own),
        "used up by its event"
    );
    r.stop().await;
}

#[test]
fn the_event_stream_names_changes_made_outside_baton_only() {
    let own = OwnWrites::default();
    let event = |version: &str, digest: &str| baton_core::app::sse::RawEvent {
        event: "api_post_event".into(),
        data: json!({
            "eventType": "api_post_event",
            "appDefinition": {
                "id": "/a", "cmd": "x", "version": version,
                "labels": {"baton.dev/owner": "baton", "baton.dev/digest": digest},
            },
        })
        .to_string(),
    };
    own.record("/a", "v1");
    assert_eq!(
        changed_outside(&event("v1", "sha256:old"), &own),
        None,
        "Baton's write"
    );
    assert_eq!(
        changed_outside(&event("v1", "sha256:old"), &own),
        Some(("/a".to_string(), Some("v1".to_string()))),
        "the write's one event is used up"
    );
    assert_eq!(
        changed_outside(&event("v2", "sha256:old"), &own),
        Some(("/a".to_string(), Some("v2".to_string())))
    );
    let unowned = baton_core::app::sse::RawEvent {
        event: "api_post_event".into(),
        data:
            json!({"eventType": "api_post_event", "appDefinition": {"id": "/b", "version": "v9"}})
                .to_string(),
    };
    assert_eq!(changed_outside(&unowned, &own), None, "not Baton's app");
}

#[tokio::test]
async fn a_push_stops_a_cycle_that_has_not_written_yet() {
    let mut r = start(&[("apps/a.yaml", &app("a1")), ("apps/b.yaml", &app("b"))]).await;
    // A retry cycle (one that only looks) is stuck listing a slow scheduler...
    r.fake.hold_lists(true);
    let before = r.fake.calls().len();
    r.shared.trigger(Trigger::Retry);
    r.fake
        .called(|c| c[before..].contains(&Call::ListApps))
        .await;
    // ...when a push arrives: its changed app is written while that listing still hangs.
    r.revs.lock().unwrap().push((
        "r2".into(),
        repo(&[("apps/a.yaml", &app("a2")), ("apps/b.yaml", &app("b"))]),
        Some(paths(&["apps/a.yaml"])),
    ));
    r.shared.trigger(Trigger::Webhook {
        delivery: "d".into(),
    });
    r.fake
        .called(|c| c[before..].contains(&Call::PutApp("/a".into())))
        .await;
    assert_eq!(r.fake.app("/a").unwrap()["cmd"], "a2");
    let metrics = r.shared.dashboard.metrics.render();
    assert!(
        metrics.contains("baton_syncs_total{outcome=\"preempted\"} 1"),
        "{metrics}"
    );
    // The stopped cycle wrote nothing; the push's cycle finishes once lists answer again.
    let writes: Vec<Call> = r.fake.calls()[before..]
        .iter()
        .filter(|c| c.is_write())
        .cloned()
        .collect();
    assert_eq!(writes, [Call::PutApp("/a".into())]);
    r.fake.hold_lists(false);
    r.expect("r2 deployed", |n| finished(n, "r2")).await;
    assert_eq!(r.shared.status().last_synced.as_deref(), Some("r2"));
    r.stop().await;
}

#[tokio::test]
async fn a_push_does_not_stop_a_cycle_of_its_own_kind() {
    // A webhook cycle is never preempted (pushes would starve full cycles): a second push
    // waits for the first one's cycle, then both commits are deployed in order.
    let mut r = start(&[("apps/a.yaml", &app("a1"))]).await;
    r.fake.hold_lists(true);
    r.revs.lock().unwrap().push((
        "r2".into(),
        repo(&[("apps/a.yaml", &app("a2"))]),
        Some(paths(&["apps/a.yaml"])),
    ));
    let before = r.fake.calls().len();
    r.shared.trigger(Trigger::Webhook {
        delivery: "d1".into(),
    });
    r.fake
        .called(|c| c[before..].contains(&Call::ListApps))
        .await;
    r.revs.lock().unwrap().push((
        "r3".into(),
        repo(&[("apps/a.yaml", &app("a3"))]),
        Some(paths(&["apps/a.yaml"])),
    ));
    r.shared.trigger(Trigger::Webhook {
        delivery: "d2".into(),
    });
    r.fake.hold_lists(false);
    r.expect("r2 deployed", |n| finished(n, "r2")).await;
    r.expect("r3 deployed", |n| finished(n, "r3")).await;
    assert!(!r
        .shared
        .dashboard
        .metrics
        .render()
        .contains("outcome=\"preempted\""));
    r.stop().await;
}
