//! What a cycle shows and does beyond applying a new revision: a scheduler that freezes
//! mid-deployment fails the cycle visibly (and the retry converges), held deletions and invalid
//! specs are listed with their reasons, and a write the scheduler lost is written again while an
//! app edited by hand is left to its drift policy.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::fast_path_tests::{app, repo, Rev, Scripted};
use super::*;
use baton_marathon::fake::{Call, Fake};

/// A loop over a scripted source and the fake scheduler.
struct Loop {
    shared: Arc<Shared>,
    fake: Arc<Fake>,
    revs: Arc<std::sync::Mutex<Vec<Rev>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), StateError>>,
    _dir: tempfile::TempDir,
}

const WAIT: Duration = Duration::from_secs(30);

impl Loop {
    /// Start at revision `r1` of `files`, apply with `silence` as the scheduler silence bound,
    /// and wait until `r1` is synced.
    async fn start(files: &[(&str, &str)], silence: Duration) -> Loop {
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
        let config = LoopConfig {
            sync: SyncMode::Auto,
            poll_interval: Duration::from_secs(3600),
            state_dir: dir.path().to_path_buf(),
            allow_deletes: None,
            apply: ApplyOptions {
                poll_interval: Duration::from_millis(20),
                scheduler_silence: silence,
                ..ApplyOptions::default()
            },
            secrets: None,
            notifier: None,
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
        let l = Loop {
            shared,
            fake,
            revs,
            stop,
            task,
            _dir: dir,
        };
        l.until("r1 synced", |st, _| st.last_synced.as_deref() == Some("r1"))
            .await;
        l
    }

    /// Wait until `check` holds for the status and the metrics text.
    async fn until(&self, what: &str, check: impl Fn(&Status, &str) -> bool) -> Status {
        let deadline = Instant::now() + WAIT;
        loop {
            let st = self.shared.status();
            if check(&st, &self.shared.dashboard.metrics.render()) {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {st:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Push revision `rev` of `files` (a webhook) and wait until it is synced.
    async fn push(&self, rev: &str, files: &[(&str, &str)]) {
        self.push_only(rev, files);
        self.until(&format!("{rev} synced"), |st, _| {
            st.last_synced.as_deref() == Some(rev) && st.cycle.is_none()
        })
        .await;
    }

    fn push_only(&self, rev: &str, files: &[(&str, &str)]) {
        self.revs
            .lock()
            .unwrap()
            .push((rev.to_string(), repo(files), None));
        self.shared.trigger(Trigger::Webhook {
            delivery: rev.into(),
        });
    }

    /// Run one cycle of `trigger` and wait until it finished (counted in `/metrics`).
    async fn cycle(&self, trigger: Trigger) {
        let count = |m: &str| -> u64 {
            m.lines()
                .filter(|l| l.starts_with("baton_syncs_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        };
        let before = count(&self.shared.dashboard.metrics.render());
        self.shared.trigger(trigger);
        self.until("the cycle to finish", |st, m| {
            count(m) > before && st.cycle.is_none()
        })
        .await;
    }

    fn app(&self, id: &str) -> AppStatus {
        let st = self.shared.status();
        st.apps
            .iter()
            .find(|a| a.id == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed: {st:#?}"))
    }

    fn puts(&self, id: &str) -> usize {
        (self.fake.calls().iter())
            .filter(|c| **c == Call::PutApp(id.into()))
            .count()
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_scheduler_that_freezes_mid_deployment_fails_the_cycle_visibly_then_recovers() {
    let l = Loop::start(&[("apps/a.yaml", &app("a1"))], Duration::from_millis(500)).await;
    // The next deployment of /a never finishes: apply waits for it.
    l.fake.make_stuck("/a");
    l.push_only("r2", &[("apps/a.yaml", &app("a2"))]);
    let st = l
        .until("/a deploying", |st, _| {
            st.apps
                .iter()
                .any(|a| a.id == "/a" && a.deploying.is_some())
        })
        .await;
    let cycle = st.cycle.clone().expect("a cycle in flight");
    assert_eq!((cycle.trigger, cycle.phase), ("webhook", "apply"));
    assert_eq!(cycle.commit.as_deref(), Some("r2"));
    let a = l.app("/a");
    assert_eq!((a.sync, a.health), ("outOfSync", "progressing"), "{a:?}");
    assert!(a.deploying.unwrap().deployment.starts_with("dep-"));
    // The deploy under way is no drift.
    let m = l.shared.dashboard.metrics.render();
    assert_eq!(sample(&m, "baton_drifted_apps"), Some(0.0), "{m}");
    assert_eq!(
        sample(&m, "baton_apps{state=\"drifted\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "baton_apps{state=\"pending\"}"),
        Some(1.0),
        "{m}"
    );

    // The scheduler stops answering: past the bound the cycle fails, and says why.
    l.fake.freeze(true);
    let st = l
        .until("the cycle to fail", |st, m| {
            st.last_error.is_some()
                && sample(m, "baton_syncs_total{outcome=\"failed\"}") == Some(1.0)
        })
        .await;
    let error = st.last_error.clone().unwrap();
    assert!(error.contains("has not answered for 500ms"), "{error}");
    assert!(error.contains("waiting for deployment(s) dep-"), "{error}");
    let record = &st.history[0];
    assert_eq!(
        (record.outcome, record.commit.as_deref()),
        (Outcome::Failed, Some("r2"))
    );
    assert_eq!(record.error.as_deref(), Some(error.as_str()));
    assert_eq!(
        l.fake
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Rollback(_)))
            .count(),
        0
    );
    // A scheduler event (of Baton's own write: nothing to look at) does not cancel the retry.
    l.shared.own_writes.record("/a", "own");
    l.shared.trigger(Trigger::SchedulerEvent {
        app: "/a".into(),
        version: Some("own".into()),
    });
    // The error policy retries; the retry waits on the frozen scheduler too, and shows it.
    l.until("the retry waiting", |st, _| {
        st.cycle
            .as_ref()
            .is_some_and(|c| c.trigger == "retry" && c.phase == "list")
    })
    .await;

    // Back: the retry finds /a written and converges.
    l.fake.freeze(false);
    let st = l
        .until("r2 synced", |st, _| {
            st.last_synced.as_deref() == Some("r2") && st.last_error.is_none()
        })
        .await;
    let a = st.apps.iter().find(|a| a.id == "/a").unwrap();
    assert_eq!(a.sync, "synced", "{a:?}");
    assert_eq!(a.deploying, None);
    assert_eq!(l.fake.app("/a").unwrap()["cmd"], "a2");
    l.stop().await;
}

#[tokio::test]
async fn a_push_whose_fast_path_loses_the_scheduler_fails_at_once() {
    let l = Loop::start(&[("apps/a.yaml", &app("a1"))], Duration::from_millis(500)).await;
    l.fake.make_stuck("/a");
    l.revs.lock().unwrap().push((
        "r2".into(),
        repo(&[("apps/a.yaml", &app("a2"))]),
        Some(super::fast_path_tests::paths(&["apps/a.yaml"])),
    ));
    l.shared.trigger(Trigger::Webhook {
        delivery: "d".into(),
    });
    let st = l
        .until("/a deploying (fast path)", |st, _| {
            st.apps
                .iter()
                .any(|a| a.id == "/a" && a.deploying.is_some())
        })
        .await;
    assert_eq!(st.cycle.map(|c| c.phase), Some("fast-path"));
    // The fake's listing has no timeout of its own: a cycle that went on to list every app
    // after the fast path lost the scheduler would hang there and never fail.
    l.fake.freeze(true);
    let st = l
        .until("the cycle to fail", |st, _| st.last_error.is_some())
        .await;
    assert!(st.last_error.unwrap().contains("has not answered"));
    l.fake.freeze(false);
    l.until("r2 synced", |st, _| {
        st.last_synced.as_deref() == Some("r2") && st.last_error.is_none()
    })
    .await;
    l.stop().await;
}

#[tokio::test]
async fn held_deletions_and_invalid_specs_are_shown_with_their_reasons() {
    let files: Vec<(String, String)> = ["a", "b", "c", "d", "e", "f", "g"]
        .iter()
        .map(|n| (format!("apps/{n}.yaml"), app(n)))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let l = Loop::start(&refs, Duration::from_secs(60)).await;

    // Every spec gone: nothing is deleted, and every owned app says why.
    l.push("r2", &[]).await;
    let st = l.shared.status();
    assert_eq!(st.apps.len(), 7, "{st:#?}");
    for a in &st.apps {
        assert_eq!(a.sync, "held", "{a:?}");
        assert!(
            a.reason
                .as_deref()
                .unwrap()
                .contains("the repo has no apps"),
            "{a:?}"
        );
    }
    assert_eq!((st.history[0].held, st.history[0].changes), (7, 0));
    let m = l.shared.dashboard.metrics.render();
    assert_eq!(sample(&m, "baton_held_deletes"), Some(7.0), "{m}");
    assert!(l
        .fake
        .writes()
        .iter()
        .all(|c| !matches!(c, Call::DeleteApp { .. })));

    // One app back, and one invalid: six deletions are over the budget of five.
    l.push(
        "r3",
        &[
            ("apps/a.yaml", &app("a")),
            ("apps/bad.yaml", "cmd: x\nmem: lots\n"),
        ],
    )
    .await;
    let st = l.shared.status();
    let held: Vec<&AppStatus> = st.apps.iter().filter(|a| a.sync == "held").collect();
    assert_eq!(held.len(), 6, "{st:#?}");
    assert!(held[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("exceed the delete budget"));
    let bad = l.app("/bad");
    assert_eq!(bad.sync, "invalid");
    assert!(
        bad.reason
            .as_deref()
            .unwrap()
            .contains("apps/bad.yaml at /mem"),
        "{bad:?}"
    );
    assert_eq!(
        bad.last_error, bad.reason,
        "an invalid spec's error is its last error"
    );
    assert_eq!(l.app("/a").sync, "synced");
    let m = l.shared.dashboard.metrics.render();
    assert_eq!(sample(&m, "baton_held_deletes"), Some(6.0), "{m}");
    assert_eq!(sample(&m, "baton_invalid_specs"), Some(1.0), "{m}");
    assert_eq!((st.history[0].held, st.history[0].invalid), (6, 1));
    l.stop().await;
}

/// The definition the fake holds for `id` now, status fields dropped: what "losing" a later
/// write restores.
fn snapshot(fake: &Fake, id: &str) -> Value {
    let mut v = fake.app(id).unwrap();
    for f in ["version", "tasksRunning", "tasksHealthy"] {
        v.as_object_mut().unwrap().remove(f);
    }
    v
}

#[tokio::test]
async fn a_write_the_scheduler_lost_is_written_again_an_edit_is_left_to_its_policy() {
    let v1 = [
        ("apps/a.yaml", app("a1")),
        ("apps/b.yaml", app("b1")),
        ("apps/c.yaml", app("c1")),
    ];
    let refs: Vec<(&str, &str)> = v1.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let l = Loop::start(&refs, Duration::from_secs(60)).await;
    let old: Vec<Value> = ["/a", "/b", "/c"]
        .iter()
        .map(|id| snapshot(&l.fake, id))
        .collect();
    l.push(
        "r2",
        &[
            ("apps/a.yaml", &app("a2")),
            ("apps/b.yaml", &app("b2")),
            ("apps/c.yaml", &app("c2")),
        ],
    )
    .await;
    assert_eq!(l.fake.app("/a").unwrap()["cmd"], "a2");

    // The scheduler comes back from older state: /a and /b at r1 as Baton wrote them, and
    // someone scaled /b by hand since (policy `report`).
    l.fake.seed(old[0].clone());
    let mut edited = old[1].clone();
    edited["instances"] = json!(3);
    l.fake.seed(edited);
    let (puts_a, puts_b) = (l.puts("/a"), l.puts("/b"));
    l.cycle(Trigger::Poll).await;
    assert_eq!(l.puts("/a"), puts_a + 1, "the lost write is written again");
    let a = l.fake.app("/a").unwrap();
    assert_eq!(
        (a["cmd"].clone(), a["labels"]["baton.dev/commit"].clone()),
        (json!("a2"), json!("r2"))
    );
    assert_eq!(
        l.puts("/b"),
        puts_b,
        "an edited app is drift, left to its policy"
    );
    assert_eq!(l.fake.app("/b").unwrap()["cmd"], "b1");
    assert_eq!(l.app("/b").sync, "outOfSync");
    let report = l.shared.dashboard.with_report(|r| r.cloned()).unwrap();
    let state = |id: &str| report.app(&AppId::parse(id).unwrap()).unwrap().state;
    assert_eq!(state("/a"), baton_core::drift::DriftState::InSync);
    assert_eq!(state("/b"), baton_core::drift::DriftState::Drifted);

    // Found at r2 again, nothing is written.
    l.cycle(Trigger::Poll).await;
    assert_eq!(l.puts("/a"), puts_a + 1);

    // Lost again at once: the same commit is not written again before its backoff (another
    // writer restoring it would otherwise be fought in a loop); the app shows pending.
    l.fake.seed(old[0].clone());
    l.cycle(Trigger::Poll).await;
    assert_eq!(l.puts("/a"), puts_a + 1, "backing off");
    let report = l.shared.dashboard.with_report(|r| r.cloned()).unwrap();
    assert_eq!(
        report.app(&AppId::parse("/a").unwrap()).unwrap().state,
        baton_core::drift::DriftState::Pending
    );

    // A scheduler event names an app that lost its write: that cycle writes it again too.
    l.fake.seed(old[2].clone());
    let puts_c = l.puts("/c");
    l.cycle(Trigger::SchedulerEvent {
        app: "/c".into(),
        version: Some("restored".into()),
    })
    .await;
    assert_eq!(l.puts("/c"), puts_c + 1);
    assert_eq!(l.fake.app("/c").unwrap()["cmd"], "c2");
    l.stop().await;
}

/// The apps a poll at the applied revision `rev` writes again because the scheduler lost
/// Baton's write (what `behind_apps` returned before the cycle rule moved into the core).
fn behind_apps(
    repo: &Repo,
    live: &[Value],
    plan: &Plan,
    state: &State,
    rev: &str,
    now: u64,
) -> BTreeSet<AppId> {
    let mut state = state.clone();
    state.last_synced = Some(rev.into());
    let decision = cycle::decide(
        &cycle::Input {
            trigger: &Trigger::Poll,
            mode: SyncMode::Auto,
            view: View::All,
            rev,
            state: &state,
            corrections: &BTreeSet::new(),
            lost_writes: &cycle::lost_writes(repo, live, plan),
            rollouts: &Default::default(),
            now_ms: now,
            only: None,
        },
        plan.clone(),
    );
    decision.rewrites.into_iter().collect()
}

#[test]
fn only_unedited_apps_at_an_older_digest_are_behind() {
    let v1 = repo(&[("apps/a.yaml", &app("a1")), ("apps/b.yaml", &app("b1"))]);
    let v2 = repo(&[("apps/a.yaml", &app("a2")), ("apps/b.yaml", &app("b2"))]);
    let served = |r: &Repo, id: &str, commit: &str| {
        let spec = &r.specs[&AppId::parse(id).unwrap()];
        let mut v = baton_core::ownership::labelled(spec, &r.config.owner, commit);
        baton_core::spec::marathon_form(&mut v);
        v
    };
    let mut edited = served(&v1, "/b", "r1");
    edited["instances"] = json!(2);
    let live = vec![served(&v1, "/a", "r1"), edited];
    let plan = plan::plan(
        &v2,
        &live,
        &Policy {
            commit: "r2".into(),
            allow_deletes: None,
        },
    );
    let ids = |s: &BTreeSet<AppId>| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let mut state = State::new();
    assert_eq!(
        ids(&behind_apps(&v2, &live, &plan, &state, "r2", 0)),
        ["/a"]
    );
    state.record_rewrite("/a", "r2", 0);
    assert!(
        behind_apps(&v2, &live, &plan, &state, "r2", 1).is_empty(),
        "backing off"
    );
    assert_eq!(
        ids(&behind_apps(&v2, &live, &plan, &state, "r2", 10_000)),
        ["/a"]
    );
}
