//! Apply against the in-memory fake, under paused tokio time.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::*;
use baton_core::plan::{Held, Summary, Wave};
use baton_marathon::fake::{Call, Fake, Inject};

fn id(s: &str) -> AppId {
    AppId::parse(s).unwrap()
}

fn change(app: &str, action: Action, deps: &[&str], deadline: u64) -> Change {
    Change {
        app: id(app),
        action,
        file: Some(PathBuf::from(format!("apps{app}.yaml"))),
        fields: Vec::new(),
        adopt: false,
        deadline_seconds: deadline,
        depends_on: deps.iter().map(|d| id(d)).collect(),
        body: (action != Action::Delete)
            .then(|| json!({"id": app, "cmd": "sleep 1000", "instances": 1})),
    }
}

fn plan_of(waves: Vec<Vec<Change>>) -> Plan {
    Plan {
        owner: "test".into(),
        owner_explicit: true,
        id_prefixes: None,
        commit: "local".into(),
        summary: Summary::default(),
        waves: waves.into_iter().map(|changes| Wave { changes }).collect(),
        unchanged: Vec::new(),
        invalid: Vec::new(),
        unmanaged: Vec::new(),
        held: Vec::new(),
        moves: Vec::new(),
        conflicts: Vec::new(),
        out_of_scope: Vec::new(),
    }
}

async fn run(
    plan: &Plan,
    fake: &Fake,
    options: &ApplyOptions,
) -> (ApplyReport, Vec<ProgressEvent>) {
    let mut events = Vec::new();
    let report = apply(plan, fake, options, &mut |e| events.push(e)).await;
    (report, events)
}

fn outcome<'r>(report: &'r ApplyReport, app: &str) -> &'r Outcome {
    &report
        .apps
        .iter()
        .find(|r| r.app.as_str() == app)
        .unwrap_or_else(|| panic!("{app} not in {report:?}"))
        .outcome
}

#[tokio::test(start_paused = true)]
async fn an_empty_plan_makes_no_call() {
    let fake = Fake::default();
    let (report, events) = run(&plan_of(vec![]), &fake, &ApplyOptions::default()).await;
    assert!(report.converged());
    assert!(events.is_empty());
    assert_eq!(fake.calls(), vec![]);
}

#[tokio::test(start_paused = true)]
async fn waves_run_in_order_and_converge() {
    let fake = Fake::new(Duration::from_secs(3));
    fake.seed(json!({"id": "/old", "cmd": "sleep 1", "instances": 1}));
    let plan = plan_of(vec![
        vec![change("/db", Action::Create, &[], 600)],
        vec![
            change("/web", Action::Create, &["/db"], 600),
            change("/worker", Action::Create, &["/db"], 600),
        ],
        vec![change("/old", Action::Delete, &[], 600)],
    ]);
    let (report, events) = run(&plan, &fake, &ApplyOptions::default()).await;
    assert!(report.converged(), "{report:?}");
    let writes = fake.writes();
    assert_eq!(writes.len(), 4, "{writes:?}");
    assert_eq!(writes[0], Call::PutApp("/db".into()));
    assert_eq!(
        writes[3],
        Call::DeleteApp {
            id: "/old".into(),
            force: false
        }
    );
    // /web is written only after /db's deployment finished and its tasks were up.
    let db_done = events
        .iter()
        .position(
            |e| matches!(e, ProgressEvent::Finished { result } if result.app.as_str() == "/db"),
        )
        .unwrap();
    let web_started = events
        .iter()
        .position(|e| matches!(e, ProgressEvent::Started { app, .. } if app.as_str() == "/web"))
        .unwrap();
    assert!(db_done < web_started);
    assert!(fake.app("/old").is_none());
    assert_eq!(fake.app("/web").unwrap()["tasksRunning"], json!(1));
    // Report in plan order.
    let order: Vec<&str> = report.apps.iter().map(|r| r.app.as_str()).collect();
    assert_eq!(order, ["/db", "/web", "/worker", "/old"]);
}

#[tokio::test(start_paused = true)]
async fn polling_alone_converges_when_events_are_unavailable() {
    let fake = Fake::new(Duration::from_secs(2));
    fake.disable_events();
    let plan = plan_of(vec![vec![change("/a", Action::Create, &[], 600)]]);
    let (report, _) = run(&plan, &fake, &ApplyOptions::default()).await;
    assert!(report.converged(), "{report:?}");
    assert!(fake.calls().contains(&Call::Deployments));
}

#[tokio::test(start_paused = true)]
async fn a_stuck_app_is_rolled_back_and_its_dependents_skipped() {
    let fake = Fake::new(Duration::from_secs(1));
    fake.make_stuck("/db");
    fake.set_diagnosis("/db", "no offer matched: insufficient mem");
    let plan = plan_of(vec![
        vec![
            change("/db", Action::Create, &[], 60),
            change("/cache", Action::Create, &[], 60),
        ],
        vec![
            change("/web", Action::Create, &["/db"], 60),
            change("/cron", Action::Create, &[], 60),
        ],
        vec![change("/api", Action::Create, &["/web"], 60)],
    ]);
    let (report, events) = run(&plan, &fake, &ApplyOptions::default()).await;
    assert!(!report.converged());
    let Outcome::Failed { reason } = outcome(&report, "/db") else {
        panic!("{report:?}");
    };
    assert!(reason.contains("insufficient mem"), "{reason}");
    assert!(reason.contains("rolled back"), "{reason}");
    assert_eq!(
        outcome(&report, "/web"),
        &Outcome::Skipped { because: id("/db") }
    );
    assert_eq!(
        outcome(&report, "/api"),
        &Outcome::Skipped {
            because: id("/web")
        }
    );
    assert_eq!(outcome(&report, "/cache"), &Outcome::Converged);
    assert_eq!(outcome(&report, "/cron"), &Outcome::Converged);
    // The rollback targets the deployment of /db's write; nothing is forced.
    let db_deployment = report
        .apps
        .iter()
        .find(|r| r.app.as_str() == "/db")
        .unwrap()
        .deployment
        .clone()
        .unwrap();
    assert!(fake.calls().contains(&Call::Rollback(db_deployment)));
    assert!(!fake
        .calls()
        .iter()
        .any(|c| matches!(c, Call::DeleteApp { force: true, .. })));
    assert!(!fake.calls().contains(&Call::PutApp("/web".into())));
    // The rollback of a create removes the app again.
    assert!(fake.app("/db").is_none());
    assert!(events
        .iter()
        .any(|e| matches!(e, ProgressEvent::RollingBack { .. })));
    assert_eq!(report.failures().count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_lock_is_waited_for_then_the_write_goes_through() {
    let fake = Fake::new(Duration::from_secs(1));
    fake.seed(json!({"id": "/web", "cmd": "old", "instances": 1}));
    let lock = fake.lock_app("/web", Some(Duration::from_secs(30)));
    let plan = plan_of(vec![vec![change("/web", Action::Update, &[], 600)]]);
    let (report, events) = run(&plan, &fake, &ApplyOptions::default()).await;
    assert!(report.converged(), "{report:?}");
    assert!(events.iter().any(
        |e| matches!(e, ProgressEvent::Locked { deployments, .. } if deployments == &vec![lock.clone()])
    ));
    let puts = fake.writes();
    assert_eq!(
        puts,
        vec![Call::PutApp("/web".into()), Call::PutApp("/web".into())]
    );
    assert_eq!(fake.app("/web").unwrap()["cmd"], json!("sleep 1000"));
}

#[tokio::test(start_paused = true)]
async fn a_lasting_lock_is_reported_with_the_deployment_ids_and_never_forced() {
    let fake = Fake::new(Duration::from_secs(1));
    fake.seed(json!({"id": "/old", "cmd": "old", "instances": 1}));
    let lock = fake.lock_app("/old", None);
    let plan = plan_of(vec![vec![change("/old", Action::Delete, &[], 600)]]);
    let options = ApplyOptions {
        lock_wait: Duration::from_secs(20),
        ..ApplyOptions::default()
    };
    let (report, _) = run(&plan, &fake, &options).await;
    let Outcome::Failed { reason } = outcome(&report, "/old") else {
        panic!("{report:?}");
    };
    assert!(reason.contains(&lock), "{reason}");
    assert!(fake.app("/old").is_some());
    assert!(fake.writes().iter().all(|c| c
        == &Call::DeleteApp {
            id: "/old".into(),
            force: false
        }));
    assert!(fake.writes().len() >= 2);
}

#[tokio::test(start_paused = true)]
async fn force_delete_is_sent_only_when_asked() {
    let fake = Fake::new(Duration::from_secs(1));
    fake.seed(json!({"id": "/old", "cmd": "old", "instances": 1}));
    fake.lock_app("/old", None);
    let plan = plan_of(vec![vec![change("/old", Action::Delete, &[], 600)]]);
    let options = ApplyOptions {
        force_delete: true,
        ..ApplyOptions::default()
    };
    let (report, _) = run(&plan, &fake, &options).await;
    assert!(report.converged(), "{report:?}");
    assert_eq!(
        fake.writes(),
        vec![Call::DeleteApp {
            id: "/old".into(),
            force: true
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn a_422_shows_the_file_and_the_details_verbatim() {
    let fake = Fake::default();
    fake.inject(
        "/web",
        Inject::Invalid(vec![("/cpus".into(), "error.min: must be >= 0.001".into())]),
    );
    let plan = plan_of(vec![vec![
        change("/web", Action::Create, &[], 600),
        change("/ok", Action::Create, &[], 600),
    ]]);
    let (report, _) = run(&plan, &fake, &ApplyOptions::default()).await;
    let Outcome::Failed { reason } = outcome(&report, "/web") else {
        panic!("{report:?}");
    };
    assert!(reason.starts_with("apps/web.yaml: "), "{reason}");
    assert!(
        reason.contains("/cpus: error.min: must be >= 0.001"),
        "{reason}"
    );
    assert_eq!(outcome(&report, "/ok"), &Outcome::Converged);
}

#[tokio::test(start_paused = true)]
async fn a_server_error_fails_the_app_without_touching_others() {
    let fake = Fake::default();
    fake.inject("/a", Inject::Status(500));
    let plan = plan_of(vec![
        vec![change("/a", Action::Create, &[], 600)],
        vec![
            change("/b", Action::Create, &["/a"], 600),
            change("/c", Action::Create, &[], 600),
        ],
    ]);
    let (report, _) = run(&plan, &fake, &ApplyOptions::default()).await;
    assert!(matches!(outcome(&report, "/a"), Outcome::Failed { reason } if reason.contains("500")));
    assert_eq!(
        outcome(&report, "/b"),
        &Outcome::Skipped { because: id("/a") }
    );
    assert_eq!(outcome(&report, "/c"), &Outcome::Converged);
}

#[tokio::test(start_paused = true)]
async fn deleting_an_app_that_is_already_gone_converges() {
    let fake = Fake::default();
    let plan = plan_of(vec![vec![change("/gone", Action::Delete, &[], 600)]]);
    let (report, _) = run(&plan, &fake, &ApplyOptions::default()).await;
    assert!(report.converged(), "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn cancelled_before_start_writes_nothing() {
    let fake = Fake::default();
    let options = ApplyOptions::default();
    options.cancel.cancel();
    let plan = plan_of(vec![vec![change("/a", Action::Create, &[], 600)]]);
    let (report, _) = run(&plan, &fake, &options).await;
    assert!(report.cancelled);
    assert_eq!(outcome(&report, "/a"), &Outcome::NotStarted);
    assert!(fake.writes().is_empty());
}

#[tokio::test(start_paused = true)]
async fn cancel_mid_apply_finishes_the_wave_in_flight_and_starts_nothing_new() {
    let fake = Fake::new(Duration::from_secs(5));
    let options = ApplyOptions::default();
    let plan = plan_of(vec![
        vec![change("/a", Action::Create, &[], 600)],
        vec![change("/b", Action::Create, &[], 600)],
    ]);
    let cancel = options.cancel.clone();
    let mut events = Vec::new();
    let report = apply(&plan, &fake, &options, &mut |e| {
        if matches!(e, ProgressEvent::Deploying { .. }) {
            cancel.cancel();
        }
        events.push(e);
    })
    .await;
    assert!(report.cancelled);
    assert!(matches!(outcome(&report, "/a"), Outcome::Unfinished { .. }));
    assert_eq!(outcome(&report, "/b"), &Outcome::NotStarted);
    assert_eq!(fake.writes(), vec![Call::PutApp("/a".into())]);
}

#[tokio::test(start_paused = true)]
async fn held_deletions_are_reported_and_not_written() {
    let fake = Fake::default();
    let mut plan = plan_of(vec![]);
    plan.held.push(Held {
        app: id("/keep"),
        reason: "marked `baton.prune: false`".into(),
    });
    let (report, _) = run(&plan, &fake, &ApplyOptions::default()).await;
    assert!(report.converged());
    assert!(matches!(outcome(&report, "/keep"), Outcome::Held { .. }));
    assert!(fake.calls().is_empty());
}

/// Apply with `/a` (then `/b` in a second wave) whose scheduler goes away as soon as the write
/// of `/a` is answered (`how`): the run ends after the silence bound, long before the app's
/// deadline, reports the scheduler lost, starts nothing more and tries no rollback.
async fn scheduler_goes_away_mid_wait(how: fn(&Fake)) {
    let fake = Fake::new(Duration::from_secs(30));
    let plan = plan_of(vec![
        vec![change("/a", Action::Create, &[], 600)],
        vec![change("/b", Action::Create, &["/a"], 600)],
    ]);
    let options = ApplyOptions {
        scheduler_silence: Duration::from_secs(10),
        ..ApplyOptions::default()
    };
    let started = Instant::now();
    let mut seen = Vec::new();
    let f = fake.clone();
    let mut progress = |e: ProgressEvent| {
        if matches!(e, ProgressEvent::Deploying { .. }) {
            how(&f);
        }
        seen.push(e);
    };
    let run = apply(&plan, &fake, &options, &mut progress);
    // Paused time: a run that waited for the deadline (or forever) ends this test as a failure.
    let report = tokio::time::timeout(Duration::from_secs(3600), run)
        .await
        .expect("apply ended");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(30),
        "gave up after {took:?}"
    );
    let lost = report.lost.clone().expect("reported lost");
    assert!(lost.contains("has not answered for 10s"), "{lost}");
    assert!(lost.contains("waiting for deployment(s) dep-"), "{lost}");
    assert!(!report.converged() && !report.cancelled, "{report:?}");
    assert!(matches!(outcome(&report, "/a"), Outcome::Unfinished { .. }));
    assert_eq!(outcome(&report, "/b"), &Outcome::NotStarted);
    let calls = fake.calls();
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::Rollback(_) | Call::Diagnose(_))
                || *c == Call::PutApp("/b".into())),
        "{calls:?}"
    );
    assert!(!seen
        .iter()
        .any(|e| matches!(e, ProgressEvent::RollingBack { .. })));
}

#[tokio::test(start_paused = true)]
async fn a_frozen_scheduler_ends_the_wait_after_the_silence_bound() {
    scheduler_goes_away_mid_wait(|f| f.freeze(true)).await;
}

#[tokio::test(start_paused = true)]
async fn a_scheduler_refusing_connections_ends_the_wait_after_the_silence_bound() {
    scheduler_goes_away_mid_wait(|f| f.set_gone(true)).await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_but_answering_scheduler_is_not_lost() {
    // Deployments take longer than the silence bound, but every poll is answered.
    let fake = Fake::new(Duration::from_secs(25));
    fake.disable_events();
    let plan = plan_of(vec![vec![change("/a", Action::Create, &[], 600)]]);
    let options = ApplyOptions {
        scheduler_silence: Duration::from_secs(10),
        ..ApplyOptions::default()
    };
    let (report, _) = run(&plan, &fake, &options).await;
    assert!(report.converged(), "{report:?}");
    assert_eq!(report.lost, None);
}

#[tokio::test(start_paused = true)]
async fn time_between_polls_is_not_silence() {
    // With the event stream open, deployments are polled every 5 s; a bound of 2 s counts only
    // while a request waits for its answer.
    let fake = Fake::new(Duration::from_secs(25));
    fake.set_latency(Duration::from_millis(100));
    let plan = plan_of(vec![vec![change("/a", Action::Create, &[], 600)]]);
    let options = ApplyOptions {
        scheduler_silence: Duration::from_secs(2),
        ..ApplyOptions::default()
    };
    let (report, _) = run(&plan, &fake, &options).await;
    assert!(report.converged(), "{report:?}");
    let polls = fake
        .calls()
        .iter()
        .filter(|c| **c == Call::Deployments)
        .count();
    assert!(polls >= 4, "{polls} polls");
}

/// What a cancelled apply left deploying is rolled back through apply (never `force`), and
/// only that: an app apply never started is not touched.
#[tokio::test(start_paused = true)]
async fn the_deployments_a_cancelled_apply_left_are_rolled_back() {
    let fake = Fake::new(Duration::from_secs(5));
    let options = ApplyOptions::default();
    let plan = plan_of(vec![
        vec![change("/a", Action::Create, &[], 600)],
        vec![change("/b", Action::Create, &[], 600)],
    ]);
    let cancel = options.cancel.clone();
    let report = apply(&plan, &fake, &options, &mut |e| {
        if matches!(e, ProgressEvent::Deploying { .. }) {
            cancel.cancel();
        }
    })
    .await;
    let Outcome::Unfinished { deployment } = outcome(&report, "/a").clone() else {
        panic!("{report:?}");
    };
    let mut told = Vec::new();
    let rolled = roll_back_unfinished(&fake, &report, &mut |app, d| {
        told.push((app.as_str().to_string(), d.to_string()))
    })
    .await;
    assert_eq!(told, [("/a".to_string(), deployment.clone())]);
    assert_eq!(rolled.len(), 1, "{rolled:?}");
    assert_eq!(rolled[0].deployment, deployment);
    assert!(rolled[0].result.is_ok(), "{rolled:?}");
    let rollbacks: Vec<Call> = (fake.calls().into_iter())
        .filter(|c| matches!(c, Call::Rollback(_)))
        .collect();
    assert_eq!(rollbacks, [Call::Rollback(deployment)]);
    assert!(!fake.calls().contains(&Call::PutApp("/b".into())));
}
