//! The rollout tick in the loop, on the fake scheduler, driven by a scripted, level-triggered
//! machine (the core's `machine::advance` is WP-B's; these tests pin the daemon's side: write
//! ahead, resuming after a 409 or a lost scheduler without repeating a write, operator commands
//! through the HTTP API, `/api/status` against its schema, the metrics).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::fast_path_tests::{app, Rev, Scripted};
use super::*;
use crate::daemon::rollout::{Machine, RolloutConfig};
use baton_core::plan::{Change, Summary, Wave};
use baton_core::rollout::{
    CheckRun, Counters, Decision as RDecision, Input as RInput, OperatorCommand,
    Outcome as ROutcome, Phase, Reason, RolloutState, RolloutStatus, Strategy, TimelineEntry,
    Window,
};
use baton_marathon::fake::{Call, Fake};
use baton_marathon::{Deployment, EventStream, SchedulerError, Written};

const WAIT: Duration = Duration::from_secs(30);
const CANARY: &str = "/a-canary";

/// The repo of `files`. No explicit owner: the cycles never delete (the canary has no spec;
/// that the plan leaves a live rollout's canary alone is the core's, tested there).
fn repo(files: &[(&str, &str)]) -> Repo {
    use baton_core::spec::load::{load, Snapshot, SourceFile};
    load(Snapshot {
        files: files
            .iter()
            .map(|(p, t)| SourceFile {
                path: std::path::PathBuf::from(p),
                bytes: t.as_bytes().to_vec(),
            })
            .collect(),
        ..Snapshot::default()
    })
}

// --- a scripted machine ----------------------------------------------------------------------

fn one_wave(commit: &str, owner: &str, changes: Vec<Change>) -> Plan {
    let n = |a: PlanAction| changes.iter().filter(|c| c.action == a).count();
    Plan {
        owner: owner.into(),
        owner_explicit: true,
        id_prefixes: None,
        commit: commit.into(),
        summary: Summary {
            create: n(PlanAction::Create),
            update: n(PlanAction::Update),
            delete: n(PlanAction::Delete),
            ..Summary::default()
        },
        waves: if changes.is_empty() {
            Vec::new()
        } else {
            vec![Wave { changes }]
        },
        unchanged: Vec::new(),
        invalid: Vec::new(),
        unmanaged: Vec::new(),
        held: Vec::new(),
        moves: Vec::new(),
        conflicts: Vec::new(),
        out_of_scope: Vec::new(),
    }
}

fn change(app: &str, action: PlanAction, body: Option<Value>) -> Change {
    Change {
        app: AppId::parse(app).unwrap(),
        action,
        file: None,
        fields: Vec::new(),
        adopt: false,
        deadline_seconds: 60,
        depends_on: Vec::new(),
        body,
    }
}

/// The canary Baton writes: owned, naming its stable.
fn canary_body(owner: &str, instances: u64) -> Value {
    json!({
        "id": CANARY, "cmd": "canary", "instances": instances,
        "labels": {
            baton_core::ownership::OWNER: owner,
            baton_core::rollout::ROLLOUT_OF: "/a",
        },
    })
}

fn instances(app: Option<&Value>) -> Option<u64> {
    app?.get("instances")?.as_u64()
}

fn healthy(app: Option<&Value>) -> bool {
    app.is_some_and(baton_core::app::is_up)
}

/// Level-triggered like the real machine: each phase compares live with what it wants and
/// emits only what is missing. Launch creates the canary (1 instance) and moves to step 0 in
/// the same decision (so a write follows a phase change: what write-ahead is about); step 0
/// wants 2 instances and waits for an operator; update-stable writes the stable at the
/// rollout's commit; retire and roll-back delete the canary.
fn scripted(rs: &RolloutState, input: &RInput<'_>) -> RDecision {
    let owner = input.owner;
    let mut next = rs.clone();
    let mut changes = Vec::new();
    let mut outcome = None;
    let mut run_check = None;
    let go = |next: &mut RolloutState, phase: Phase, event: &str| {
        next.phase = phase;
        next.entered_ms = input.now_ms;
        next.timeline.push(TimelineEntry {
            at_ms: input.now_ms,
            event: event.into(),
        });
    };
    match (&rs.phase, input.operator) {
        (Phase::RollBack { .. } | Phase::Retire | Phase::UpdateStable, _) => {}
        (_, Some(OperatorCommand::Abort)) => go(
            &mut next,
            Phase::RollBack {
                reason: Reason::Aborted,
            },
            "aborted",
        ),
        _ => {}
    }
    match next.phase.clone() {
        Phase::Launch => {
            if input.canary.is_none() {
                changes.push(change(
                    CANARY,
                    PlanAction::Create,
                    Some(canary_body(owner, 1)),
                ));
            }
            go(&mut next, Phase::Step { index: 0 }, "canary launched");
        }
        Phase::Check => match input.check {
            None => {
                run_check = Some(CheckRun {
                    check: baton_core::rollout::Check::Http {
                        path: "/health".into(),
                        expect: 200,
                    },
                    app: CANARY.into(),
                    host: "127.0.0.1".into(),
                    ports: vec![1],
                })
            }
            Some(baton_core::rollout::CheckOutcome::Passed) => {
                go(&mut next, Phase::Step { index: 0 }, "check passed")
            }
            Some(baton_core::rollout::CheckOutcome::Failed { output }) => go(
                &mut next,
                Phase::RollBack {
                    reason: Reason::CheckFailed {
                        output: output.clone(),
                    },
                },
                "check failed",
            ),
        },
        Phase::Step { .. } => {
            if instances(input.canary) != Some(2) {
                changes.push(change(
                    CANARY,
                    PlanAction::Update,
                    Some(canary_body(owner, 2)),
                ));
            } else if healthy(input.canary) && input.operator == Some(OperatorCommand::Promote) {
                go(&mut next, Phase::UpdateStable, "promoted");
            }
        }
        Phase::UpdateStable => {
            let at = input.stable.and_then(|s| {
                s.pointer("/labels")?
                    .get(baton_core::ownership::COMMIT)?
                    .as_str()
            });
            match input.spec {
                Some(spec) if at != Some(rs.commit.as_str()) => changes.push(change(
                    "/a",
                    PlanAction::Update,
                    Some(baton_core::ownership::labelled(spec, owner, &rs.commit)),
                )),
                _ => go(&mut next, Phase::Retire, "stable updated"),
            }
        }
        Phase::Switch => {}
        Phase::Retire | Phase::RollBack { .. } => {
            if input.canary.is_some() {
                changes.push(change(CANARY, PlanAction::Delete, None));
            }
        }
    }
    // Once the canary is gone (its delete converged) the rollout is over.
    let over = changes.is_empty() && input.canary.is_none();
    match (&next.phase, over) {
        (Phase::Retire, true) => outcome = Some(ROutcome::Completed),
        (Phase::RollBack { reason }, true) => {
            outcome = Some(ROutcome::RolledBack {
                reason: reason.clone(),
            })
        }
        _ => {}
    }
    let stable_n = instances(input.stable).unwrap_or(1).max(1) as f64;
    let status = RolloutStatus {
        strategy: Strategy::Canary,
        commit: rs.commit.clone(),
        phase: crate::daemon::rollout::phase_word(&next.phase).into(),
        step: match next.phase {
            Phase::Step { index } => Some(index),
            _ => None,
        },
        traffic_percent: 100.0 * instances(input.canary).unwrap_or(0) as f64 / stable_n,
        canary_app: CANARY.into(),
        window: matches!(next.phase, Phase::Step { .. }).then(|| Window {
            since_ms: rs.entered_ms,
            last: Default::default(),
            canary: Counters {
                responses: 40,
                errors: 2,
            },
            stable: Counters {
                responses: 400,
                errors: 0,
            },
        }),
        waiting_for: Some("an operator".into()),
        timeline: next.timeline.clone(),
    };
    RDecision {
        plan: one_wave(input.rev, owner, changes),
        run_check,
        next: outcome.is_none().then_some(next),
        outcome,
        wake_at_ms: input.now_ms + 50,
        status,
    }
}

fn scripted_start(_: &baton_core::spec::Spec, rev: &str, now: u64) -> RolloutState {
    rollout_at(rev, Phase::Launch, now)
}

fn rollout_at(commit: &str, phase: Phase, now: u64) -> RolloutState {
    RolloutState {
        commit: commit.into(),
        digest: "d".into(),
        strategy: Strategy::Canary,
        canary: CANARY.into(),
        started_at: "2026-01-02T03:04:05.000000".into(),
        phase,
        entered_ms: now,
        window: None,
        analysis: None,
        timeline: vec![TimelineEntry {
            at_ms: now,
            event: "started".into(),
        }],
    }
}

// --- a scheduler that notes what the state file said at each write ----------------------------

/// One write, with the phase of `/a`'s rollout on disk when it was sent.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    call: Call,
    phase_on_disk: Option<String>,
    ok: bool,
}

/// The fake, plus a look at the state directory before each write.
struct Spy {
    fake: Arc<Fake>,
    dir: std::path::PathBuf,
    seen: std::sync::Mutex<Vec<Seen>>,
}

impl Spy {
    fn note(&self, call: Call, ok: bool) {
        let phase = state::load(&self.dir).ok().and_then(|s| {
            Some(crate::daemon::rollout::phase_word(&s.rollouts.get("/a")?.phase).to_string())
        });
        self.seen.lock().unwrap().push(Seen {
            call,
            phase_on_disk: phase,
            ok,
        });
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Writes of `id` the scheduler accepted.
    fn landed(&self, id: &str) -> Vec<Seen> {
        let of = |c: &Call| match c {
            Call::PutApp(a) | Call::DeleteApp { id: a, .. } => a == id,
            _ => false,
        };
        self.seen()
            .into_iter()
            .filter(|s| s.ok && of(&s.call))
            .collect()
    }
}

impl Scheduler for Spy {
    async fn list_apps(&self) -> Result<Vec<Value>, SchedulerError> {
        self.fake.list_apps().await
    }
    async fn get_app(&self, id: &AppId) -> Result<Option<Value>, SchedulerError> {
        self.fake.get_app(id).await
    }
    async fn put_app(&self, id: &AppId, body: &Value) -> Result<Written, SchedulerError> {
        // Read before the write is sent: what a crash right here would leave on disk.
        let phase_before = Call::PutApp(id.to_string());
        let snapshot = state::load(&self.dir).ok();
        let r = self.fake.put_app(id, body).await;
        let phase = snapshot.and_then(|s| {
            Some(crate::daemon::rollout::phase_word(&s.rollouts.get("/a")?.phase).to_string())
        });
        self.seen.lock().unwrap().push(Seen {
            call: phase_before,
            phase_on_disk: phase,
            ok: r.is_ok(),
        });
        r
    }
    async fn delete_app(&self, id: &AppId, force: bool) -> Result<Written, SchedulerError> {
        let r = self.fake.delete_app(id, force).await;
        self.note(
            Call::DeleteApp {
                id: id.to_string(),
                force,
            },
            r.is_ok(),
        );
        r
    }
    async fn deployments(&self) -> Result<Vec<Deployment>, SchedulerError> {
        self.fake.deployments().await
    }
    async fn rollback(&self, id: &str) -> Result<Written, SchedulerError> {
        self.fake.rollback(id).await
    }
    async fn diagnose(&self, id: &AppId) -> Option<String> {
        self.fake.diagnose(id).await
    }
    async fn events(&self) -> Result<EventStream, SchedulerError> {
        self.fake.events().await
    }
}

// --- the loop ----------------------------------------------------------------------------------

struct Loop {
    shared: Arc<Shared>,
    spy: Arc<Spy>,
    fake: Arc<Fake>,
    notes: tokio::sync::mpsc::Receiver<crate::daemon::notifications::Notification>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), StateError>>,
    dir: tempfile::TempDir,
}

/// The repo at `r2` (app `/a` at `a2`), the stable already at that definition from `r1`, and
/// the state holding `rollout` of `/a` (as a restart finds it).
async fn start(rollout: RolloutState, seed_canary: Option<u64>, silence: Duration) -> Loop {
    start_polling(rollout, seed_canary, silence, Duration::from_secs(3600)).await
}

/// [`start`] with the safety-net poll every `poll`.
async fn start_polling(
    rollout: RolloutState,
    seed_canary: Option<u64>,
    silence: Duration,
    poll: Duration,
) -> Loop {
    let files = [("apps/a.yaml", app("a2"))];
    let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let r = repo(&files);
    let owner = r.config.owner.clone();
    let spec = r.specs.values().next().unwrap().clone();
    let fake = Arc::new(Fake::new(Duration::from_millis(5)));
    fake.seed(baton_core::ownership::labelled(&spec, &owner, "r1"));
    if let Some(n) = seed_canary {
        fake.seed(canary_body(&owner, n));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut seeded = State::new();
    seeded.rollouts.insert("/a".into(), rollout);
    state::save(dir.path(), &seeded).unwrap();
    let revs: Arc<std::sync::Mutex<Vec<Rev>>> =
        Arc::new(std::sync::Mutex::new(vec![("r2".to_string(), r, None)]));
    let source = Scripted {
        revs,
        changed: None,
    };
    let spy = Arc::new(Spy {
        fake: fake.clone(),
        dir: dir.path().to_path_buf(),
        seen: Default::default(),
    });
    let (shared, rx) = Shared::new("scripted".into(), SyncMode::Auto);
    let (notifier, notes) =
        crate::daemon::notifications::channel(64, shared.dashboard.metrics.clone());
    let config = LoopConfig {
        sync: SyncMode::Auto,
        poll_interval: poll,
        state_dir: dir.path().to_path_buf(),
        allow_deletes: None,
        apply: ApplyOptions {
            poll_interval: Duration::from_millis(20),
            lock_wait: Duration::from_millis(200),
            scheduler_silence: silence,
            ..ApplyOptions::default()
        },
        secrets: None,
        notifier: Some(notifier),
        rollout: RolloutConfig {
            tick: Duration::from_millis(100),
            machine: Machine {
                start: scripted_start,
                advance: scripted,
            },
            ..RolloutConfig::default()
        },
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(
        source,
        spy.clone(),
        config,
        shared.clone(),
        rx,
        stop.clone(),
    ));
    Loop {
        shared,
        spy,
        fake,
        notes,
        stop,
        task,
        dir,
    }
}

impl Loop {
    async fn until(&self, what: &str, check: impl Fn(&Loop) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:#?}\nwrites: {:#?}",
                self.shared.status(),
                self.spy.seen()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn on_disk(&self) -> State {
        state::load(self.dir.path()).unwrap()
    }

    fn phase(&self) -> Option<String> {
        let st = self.on_disk();
        let r = st.rollouts.get("/a")?;
        Some(crate::daemon::rollout::phase_word(&r.phase).to_string())
    }

    fn reads_of_canary(&self) -> usize {
        (self.fake.calls().iter())
            .filter(|c| **c == Call::GetApp(CANARY.into()))
            .count()
    }

    /// Wait until the rollout has been looked at `n` more times.
    async fn ticks(&self, n: usize) {
        let before = self.reads_of_canary();
        self.until(&format!("{n} more ticks"), |l| {
            l.reads_of_canary() >= before + n
        })
        .await;
    }

    fn status_of(&self, id: &str) -> Option<AppStatus> {
        let st = self.shared.status();
        st.apps.iter().find(|a| a.id == id).cloned()
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

/// Every write of a rollout is sent only once the state that follows it is on disk: the canary's
/// create with the state already at step 0, the stable's update at `updateStable`, the
/// canary's delete at `retire`. Then the rollout completes: the commit is the app's, a history
/// entry, the counter; no rollout is left.
#[tokio::test]
async fn a_rollout_saves_its_state_before_each_write_and_completes() {
    let l = start(
        rollout_at("r2", Phase::Launch, 0),
        None,
        Duration::from_secs(10),
    )
    .await;
    l.until("the canary at 2 instances", |l| {
        healthy(l.fake.app(CANARY).as_ref()) && instances(l.fake.app(CANARY).as_ref()) == Some(2)
    })
    .await;
    let creates = l.spy.landed(CANARY);
    assert_eq!(creates.len(), 2, "a create and a scale: {creates:#?}");
    for w in &creates {
        assert_eq!(w.phase_on_disk.as_deref(), Some("step"), "{w:?}");
    }
    l.shared.operators.queue("/a", OperatorCommand::Promote);
    l.shared.trigger(Trigger::Rollout);
    l.until("the rollout to complete", |l| {
        l.on_disk().rollouts.is_empty() && l.fake.app(CANARY).is_none()
    })
    .await;
    let stable = l.spy.landed("/a");
    assert_eq!(stable.len(), 1, "{stable:#?}");
    assert_eq!(stable[0].phase_on_disk.as_deref(), Some("updateStable"));
    let deletes = (l.spy.landed(CANARY).into_iter())
        .filter(|w| matches!(w.call, Call::DeleteApp { force: false, .. }))
        .collect::<Vec<_>>();
    assert_eq!(deletes.len(), 1, "{:#?}", l.spy.seen());
    assert_eq!(deletes[0].phase_on_disk.as_deref(), Some("retire"));
    // Never forced, never anything but the two apps.
    assert!(l.spy.seen().iter().all(|w| match &w.call {
        Call::DeleteApp { force, id } => !force && id == CANARY,
        Call::PutApp(id) => id == CANARY || id == "/a",
        _ => false,
    }));
    let st = l.on_disk();
    assert_eq!(st.apps["/a"].last_applied.as_deref(), Some("r2"));
    let h = st.history.back().unwrap();
    assert_eq!(
        (h.trigger.as_str(), h.outcome),
        ("rollout", Outcome::Synced)
    );
    let m = l.shared.dashboard.metrics.render();
    assert_eq!(
        sample(&m, "baton_rollouts_total{outcome=\"completed\"}"),
        Some(1.0),
        "{m}"
    );
    assert!(!m.contains("baton_rollout_step{"), "{m}");
    l.until("the status without the rollout", |l| {
        l.status_of("/a").is_some_and(|a| a.rollout.is_none())
    })
    .await;
    l.stop().await;
}

/// A 409 mid-step (someone else's deployment locks the canary past the rollout's lock wait):
/// the tick fails that write and the next ones try again, at the same phase, until the lock
/// is gone; exactly one scale lands, and once it has, further ticks write nothing.
#[tokio::test]
async fn a_409_mid_step_resumes_the_phase_without_duplicate_writes() {
    let now = now_ms();
    let l = start(
        rollout_at("r2", Phase::Step { index: 0 }, now),
        Some(1),
        Duration::from_secs(10),
    )
    .await;
    let lock = l.fake.lock_app(CANARY, Some(Duration::from_millis(900)));
    l.until("a write refused by the lock", |l| {
        l.spy
            .seen()
            .iter()
            .any(|w| w.call == Call::PutApp(CANARY.into()) && !w.ok)
    })
    .await;
    assert_eq!(l.phase().as_deref(), Some("step"));
    l.until("the lock gone and the scale landed", |l| {
        !l.fake.running().contains(&lock) && l.spy.landed(CANARY).len() == 1
    })
    .await;
    l.until("the canary up", |l| healthy(l.fake.app(CANARY).as_ref()))
        .await;
    let writes = l.spy.seen().len();
    l.ticks(3).await;
    assert_eq!(l.spy.seen().len(), writes, "{:#?}", l.spy.seen());
    assert_eq!(l.spy.landed(CANARY).len(), 1);
    assert!(
        l.spy.landed("/a").is_empty(),
        "the stable is never written mid-step"
    );
    assert_eq!(l.phase().as_deref(), Some("step"));
    assert_eq!(instances(l.fake.app(CANARY).as_ref()), Some(2));
    l.stop().await;
}

/// The scheduler freezes while the tick waits for its write's deployment: the tick is lost
/// (the state was on disk before the write), and after the thaw the ticks go on from the same
/// phase without writing the canary again.
#[tokio::test]
async fn a_lost_scheduler_mid_write_resumes_the_phase_without_writing_again() {
    let now = now_ms();
    let l = start(
        rollout_at("r2", Phase::Step { index: 0 }, now),
        Some(1),
        Duration::from_millis(300),
    )
    .await;
    // Its deployments never finish: apply waits on the scheduler when it freezes.
    l.fake.make_stuck(CANARY);
    l.until("the scale landed and the tick waiting for it", |l| {
        l.spy.landed(CANARY).len() == 1
            && (l.shared.status().cycle).is_some_and(|c| c.trigger == "rollout")
    })
    .await;
    l.fake.freeze(true);
    // The deployment never finishes and the scheduler is silent: only the silence bound ends
    // the tick. The state on disk still says where the rollout is.
    l.until("the tick to give up", |l| l.shared.status().cycle.is_none())
        .await;
    assert_eq!(l.phase().as_deref(), Some("step"));
    l.fake.freeze(false);
    l.ticks(3).await;
    assert_eq!(
        l.spy.landed(CANARY).len(),
        1,
        "written once: {:#?}",
        l.spy.seen()
    );
    assert_eq!(l.phase().as_deref(), Some("step"));
    l.stop().await;
}

/// Promote and abort through the HTTP API: the token is required, an app without a rollout is
/// 404, an abort queues the command and the next tick rolls back: canary deleted, stable never
/// written, the commit held (`rolledBack` in the state and in `/api/status`, which matches its
/// schema with a rollout and after), a notification and the counter; after it, 404 again, and
/// a rollout already finishing answers 409.
#[tokio::test]
async fn promote_and_abort_through_the_api_need_the_token_and_roll_back() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    let now = now_ms();
    let mut l = start(
        rollout_at("r2", Phase::Step { index: 0 }, now),
        Some(2),
        Duration::from_secs(10),
    )
    .await;
    let api = crate::daemon::server::router(
        crate::daemon::server::AppState::new(
            l.shared.clone(),
            crate::daemon::server::HookSettings::Off { reason: "off" },
        )
        .with_api_token(Some(secrecy::SecretString::from("tok".to_string()))),
    );
    let post = |path: &str, token: Option<&str>| {
        let mut r = Request::post(path);
        if let Some(t) = token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        r.body(Body::empty()).unwrap()
    };
    let send = |req: Request<Body>| {
        let api = api.clone();
        async move { api.oneshot(req).await.unwrap().status().as_u16() }
    };
    l.until("the rollout shown", |l| {
        l.status_of("/a").is_some_and(|a| a.rollout.is_some())
    })
    .await;
    let st = serde_json::to_value(l.shared.status()).unwrap();
    validate_status(&st);
    let a = &st["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "/a")
        .unwrap()["rollout"];
    assert_eq!(
        (a["phase"].as_str(), a["step"].as_u64()),
        (Some("step"), Some(0)),
        "{a}"
    );
    assert_eq!(a["canaryApp"], CANARY);
    let m = l.shared.dashboard.metrics.render();
    assert_eq!(
        sample(&m, "baton_rollout_step{app=\"/a\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "baton_rollout_traffic_percent{app=\"/a\"}"),
        Some(200.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "baton_rollout_error_rate{app=\"/a\",version=\"canary\"}"
        ),
        Some(0.05),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "baton_rollout_error_rate{app=\"/a\",version=\"stable\"}"
        ),
        Some(0.0),
        "{m}"
    );

    assert_eq!(send(post("/api/rollouts/a/abort", None)).await, 401);
    assert_eq!(send(post("/api/rollouts/a/abort", Some("nope"))).await, 401);
    assert_eq!(send(post("/api/rollouts/b/abort", Some("tok"))).await, 404);
    assert_eq!(send(post("/api/rollouts/a/rewind", Some("tok"))).await, 404);
    assert_eq!(
        l.phase().as_deref(),
        Some("step"),
        "nothing acted on refused calls"
    );
    assert_eq!(send(post("/api/rollouts/a/abort", Some("tok"))).await, 202);
    l.until("the rollout rolled back", |l| {
        l.on_disk().rollouts.is_empty() && l.fake.app(CANARY).is_none()
    })
    .await;
    assert!(l.spy.landed("/a").is_empty(), "the stable is never written");
    let st = l.on_disk();
    let rb = st.apps["/a"].rolled_back.clone().expect("rolled back");
    assert_eq!((rb.commit.as_str(), rb.reason), ("r2", Reason::Aborted));
    let h = st.history.back().unwrap();
    assert_eq!(
        (h.trigger.as_str(), h.outcome),
        ("rollout", Outcome::Failed)
    );
    assert!(h.error.as_deref().unwrap().contains("aborted"), "{h:?}");
    let note = tokio::time::timeout(WAIT, async {
        loop {
            match l.notes.recv().await {
                Some(n @ crate::daemon::notifications::Notification::RolloutRolledBack { .. }) => {
                    return n
                }
                Some(_) => continue,
                None => panic!("the notifier stopped"),
            }
        }
    })
    .await
    .unwrap();
    assert!(note.summary().contains("/a"), "{}", note.summary());
    assert!(
        note.summary().contains("aborted by an operator"),
        "{}",
        note.summary()
    );
    let m = l.shared.dashboard.metrics.render();
    assert_eq!(
        sample(&m, "baton_rollouts_total{outcome=\"rolled_back\"}"),
        Some(1.0),
        "{m}"
    );
    l.until("the status saying it", |l| {
        l.status_of("/a")
            .is_some_and(|a| a.rolled_back.is_some() && a.rollout.is_none())
    })
    .await;
    let st = serde_json::to_value(l.shared.status()).unwrap();
    validate_status(&st);
    let a = st["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "/a")
        .unwrap()
        .clone();
    assert_eq!(a["rolledBack"]["reason"]["kind"], "aborted", "{a}");
    assert_eq!(a["rolledBack"]["commit"], "r2", "{a}");
    assert_eq!(
        send(post("/api/rollouts/a/promote", Some("tok"))).await,
        404
    );

    // A rollout already finishing: 409, nothing queued.
    let mut finishing = State::new();
    finishing.rollouts.insert(
        "/a".into(),
        rollout_at(
            "r3",
            Phase::RollBack {
                reason: Reason::Superseded,
            },
            now,
        ),
    );
    l.shared.set_rollouts(&finishing);
    assert_eq!(
        send(post("/api/rollouts/a/promote", Some("tok"))).await,
        409
    );
    assert_eq!(l.shared.operators.take("/a"), None);
    l.stop().await;
}

/// `/api/status` against `schemas/status.schema.json`.
fn validate_status(doc: &Value) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/status.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let problems: Vec<String> = validator.iter_errors(doc).map(|e| e.to_string()).collect();
    assert!(problems.is_empty(), "{problems:?}\n{doc:#}");
}

/// A check the machine asks for runs in the same tick and its outcome goes into a second
/// `advance`: a check against a port nothing listens on fails, and the rollout rolls back with
/// the check's words.
#[tokio::test]
async fn a_failed_check_rolls_back_in_the_same_tick() {
    let now = now_ms();
    let l = start(
        rollout_at("r2", Phase::Check, now),
        Some(1),
        Duration::from_secs(10),
    )
    .await;
    l.until("the rollout rolled back", |l| {
        l.on_disk().rollouts.is_empty()
    })
    .await;
    let rb = l.on_disk().apps["/a"].rolled_back.clone().unwrap();
    match rb.reason {
        Reason::CheckFailed { output } => {
            assert!(output.contains("GET http://127.0.0.1:1/health"), "{output}")
        }
        r => panic!("{r:?}"),
    }
    l.stop().await;
}

/// Starting: the apps a cycle diverted get the machine's first state, persisted; an app that
/// already rolls out, or whose spec is gone, is skipped.
#[test]
fn diverted_updates_start_a_rollout_each() {
    let files = [("apps/a.yaml", app("a2")), ("apps/b.yaml", app("b"))];
    let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let r = repo(&files);
    let mut st = State::new();
    st.rollouts
        .insert("/b".into(), rollout_at("r1", Phase::Step { index: 0 }, 1));
    let machine = Machine {
        start: scripted_start,
        advance: scripted,
    };
    let ids = |v: &[&str]| {
        v.iter()
            .map(|s| AppId::parse(s).unwrap())
            .collect::<Vec<_>>()
    };
    let started =
        crate::daemon::rollout::start(&mut st, &ids(&["/a", "/b", "/gone"]), &r, "r2", 7, &machine);
    assert_eq!(started, ids(&["/a"]));
    assert_eq!(st.rollouts["/a"], rollout_at("r2", Phase::Launch, 7));
    assert_eq!(
        st.rollouts["/b"].commit, "r1",
        "the running one is left alone"
    );
}

/// Ticks and cycles share the loop without starving each other: with a rollout waiting for an
/// operator (ticking every 100 ms) the safety-net polls still run (a tick never moves the poll
/// timer), and the ticks go on between the polls.
#[tokio::test]
async fn rollout_ticks_and_polls_do_not_starve_each_other() {
    let now = now_ms();
    let l = start_polling(
        rollout_at("r2", Phase::Step { index: 0 }, now),
        Some(2),
        Duration::from_secs(10),
        Duration::from_millis(400),
    )
    .await;
    let lists = |l: &Loop| {
        (l.fake.calls().iter())
            .filter(|c| **c == Call::ListApps)
            .count()
    };
    l.ticks(1).await;
    let (polls, ticks) = (lists(&l), l.reads_of_canary());
    l.until("three more polls and ten more ticks", |l| {
        lists(l) >= polls + 3 && l.reads_of_canary() >= ticks + 10
    })
    .await;
    assert_eq!(l.phase().as_deref(), Some("step"));
    l.stop().await;
}
