//! Deployments and the scheduling step.
//!
//! As in Marathon, a change stores the new app definition at once and starts a deployment; the
//! deployment is done when the app's tasks have converged on it (right count, current config,
//! running, healthy). A deployment that cannot converge (the command keeps exiting, a health check
//! never passes) stays in `/v2/deployments` until it is rolled back or overridden.
//!
//! [`step`] is the whole scheduler: a function of the [`World`] that decides which tasks to launch
//! and which to kill (honouring `upgradeStrategy`, `killSelection` and the launch backoff) and
//! which deployments are finished. It does no I/O; [`crate::tasks`] carries out its decisions.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::events::EventBus;
use crate::journal::Entry;
use crate::store::{config_of, instances_of, AppRecord, World};
use crate::tasks::{KillReason, Task, TaskState};

/// What a deployment does to one app (Marathon's `DeploymentAction` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    StartApplication,
    RestartApplication,
    ScaleApplication,
    StopApplication,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::StartApplication => "StartApplication",
            Action::RestartApplication => "RestartApplication",
            Action::ScaleApplication => "ScaleApplication",
            Action::StopApplication => "StopApplication",
        }
    }
}

/// A running deployment: one step of actions, and the apps before and after (for rollback).
#[derive(Debug, Clone)]
pub struct Deployment {
    pub id: String,
    pub version: String,
    pub actions: Vec<(Action, String)>,
    /// Each affected app before the change (`None`: it did not exist).
    pub original: BTreeMap<String, Option<Value>>,
    /// Each affected app after the change (`None`: it is deleted).
    pub target: BTreeMap<String, Option<Value>>,
}

impl Deployment {
    pub fn affects(&self, app: &str) -> bool {
        self.target.contains_key(app)
    }

    /// The `GET /v2/deployments` form.
    pub fn to_json(&self) -> Value {
        let actions: Vec<Value> = self
            .actions
            .iter()
            .map(|(a, app)| json!({"action": a.name(), "app": app}))
            .collect();
        let current: Vec<Value> = self
            .actions
            .iter()
            .map(|(a, app)| json!({"action": a.name(), "app": app, "readinessCheckResults": []}))
            .collect();
        json!({
            "id": self.id,
            "version": self.version,
            "affectedApps": self.target.keys().collect::<Vec<_>>(),
            "affectedPods": [],
            "steps": [{"actions": actions}],
            "currentActions": current,
            "currentStep": 1,
            "totalSteps": 1,
        })
    }

    /// The `{deploymentId, version}` answer to a change.
    pub fn result_json(&self) -> Value {
        json!({"deploymentId": self.id, "version": self.version})
    }
}

/// Why a change was refused; the API turns it into Marathon's status code and body.
#[derive(Debug, Clone, PartialEq)]
pub enum Reject {
    /// 404, with Marathon's message.
    NotFound(String),
    /// 409: the app is locked by these deployments.
    Locked(Vec<String>),
    /// 409: `POST` of an app that exists.
    Exists(String),
    /// 422: validation errors as (JSON pointer, message).
    Invalid(Vec<(String, String)>),
}

/// Deployments that lock `app`.
pub fn locks(world: &World, app: &str) -> Vec<String> {
    world
        .deployments
        .iter()
        .filter(|d| d.affects(app))
        .map(|d| d.id.clone())
        .collect()
}

/// Store the targets (stored form, `version` already set; `None` deletes) and start one
/// deployment for them. Every change of apps goes through here, and is queued for the journal
/// when the world keeps one (the caller commits it before answering). Without `force`, an app locked by a running deployment refuses the change
/// (409); with it, those deployments are cancelled (`deployment_failed`) first.
pub fn apply(
    world: &mut World,
    bus: &EventBus,
    changes: Vec<(String, Option<Value>)>,
    version: String,
    force: bool,
) -> Result<Deployment, Reject> {
    let mut locked: Vec<String> = Vec::new();
    for (id, _) in &changes {
        for d in locks(world, id) {
            if !locked.contains(&d) {
                locked.push(d);
            }
        }
    }
    if !locked.is_empty() {
        if !force {
            return Err(Reject::Locked(locked));
        }
        world.deployments.retain(|d| {
            if locked.contains(&d.id) {
                bus.publish(
                    "deployment_failed",
                    json!({"id": d.id, "plan": plan_json(d)}),
                );
                false
            } else {
                true
            }
        });
    }
    let mut deployment = Deployment {
        id: uuid::Uuid::new_v4().to_string(),
        version,
        actions: Vec::new(),
        original: BTreeMap::new(),
        target: BTreeMap::new(),
    };
    for (id, target) in changes {
        let before = world.apps.get(&id).map(|r| r.def.clone());
        let action = match (&before, &target) {
            (None, None) => continue,
            (Some(_), None) => Action::StopApplication,
            (None, Some(_)) => Action::StartApplication,
            (Some(b), Some(t)) if config_of(b) != config_of(t) => Action::RestartApplication,
            (Some(_), Some(_)) => Action::ScaleApplication,
        };
        world.index_ports(&id, before.as_ref(), target.as_ref());
        if world.journaling {
            world.journal.push(match &target {
                Some(def) => Entry::Put(def.clone()),
                None => Entry::Delete(id.clone()),
            });
        }
        match &target {
            Some(def) => match world.apps.get_mut(&id) {
                Some(record) => {
                    if action == Action::RestartApplication {
                        // A new config gets a fresh launch delay (Marathon resets it on change).
                        record.backoff = None;
                    }
                    record.set_def(def.clone());
                }
                None => {
                    world.apps.insert(id.clone(), AppRecord::new(def.clone()));
                }
            },
            None => {
                world.apps.remove(&id);
                bus.publish("app_terminated_event", json!({"appId": id}));
            }
        }
        deployment.actions.push((action, id.clone()));
        deployment.original.insert(id.clone(), before);
        deployment.target.insert(id, target);
    }
    bus.publish(
        "deployment_info",
        json!({"plan": plan_json(&deployment), "currentStep": current_step_json(&deployment)}),
    );
    world.deployments.push(deployment.clone());
    Ok(deployment)
}

/// The `plan` object of deployment events.
fn plan_json(d: &Deployment) -> Value {
    let steps: Vec<Value> = d
        .actions
        .iter()
        .map(|(a, app)| json!({"actions": [{"action": a.name(), "app": app}]}))
        .collect();
    json!({"id": d.id, "version": d.version, "steps": steps})
}

fn current_step_json(d: &Deployment) -> Value {
    let actions: Vec<Value> = d
        .actions
        .iter()
        .map(|(a, app)| json!({"action": a.name(), "app": app}))
        .collect();
    json!({"actions": actions})
}

/// The changes that undo deployment `d`: every affected app back to its original definition.
pub fn revert_changes(d: &Deployment) -> Vec<(String, Option<Value>)> {
    d.original
        .iter()
        .map(|(id, def)| (id.clone(), def.clone()))
        .collect()
}

/// What [`step`] decided; the task runner carries it out.
#[derive(Debug, Default)]
pub struct Decisions {
    /// Tasks created in state staging that must now be started.
    pub launch: Vec<String>,
    /// Tasks marked for killing (SIGTERM now, SIGKILL after their grace period).
    pub kill: Vec<String>,
}

fn upgrade_strategy(def: &Value) -> (f64, f64) {
    let min = def
        .pointer("/upgradeStrategy/minimumHealthCapacity")
        .and_then(Value::as_f64)
        .unwrap_or(1.0);
    let over = def
        .pointer("/upgradeStrategy/maximumOverCapacity")
        .and_then(Value::as_f64)
        .unwrap_or(1.0);
    (min.clamp(0.0, 1.0), over.clamp(0.0, 1.0))
}

pub fn has_health_checks(def: &Value) -> bool {
    def.get("healthChecks")
        .and_then(Value::as_array)
        .is_some_and(|h| !h.is_empty())
}

/// A task that counts for the app: running and, when the app has health checks, healthy.
fn is_ready(task: &Task, checked: bool) -> bool {
    task.state == TaskState::Running && (!checked || task.is_healthy())
}

/// Task ids by app id: one pass over the tasks, so per-app work never scans all of them.
type TaskIndex = BTreeMap<String, Vec<String>>;

fn task_index(world: &World) -> TaskIndex {
    let mut index = TaskIndex::new();
    for t in world.tasks.values() {
        index
            .entry(t.app_id.clone())
            .or_default()
            .push(t.id.clone());
    }
    index
}

/// The tasks of `app_id` still in the world.
fn tasks_of<'w>(world: &'w World, index: &TaskIndex, app_id: &str) -> Vec<&'w Task> {
    index
        .get(app_id)
        .into_iter()
        .flatten()
        .filter_map(|id| world.tasks.get(id))
        .collect()
}

/// Whether `task_config` (a task's [`config_of`]) is the config of `def`, without building
/// `config_of(def)`.
fn runs_config_of(task_config: &Value, def: &Value) -> bool {
    const SKIPPED: [&str; 3] = ["instances", "version", "versionInfo"];
    match (task_config.as_object(), def.as_object()) {
        (Some(c), Some(d)) => {
            let changed = d
                .get("versionInfo")
                .and_then(|v| v.get("lastConfigChangeAt"));
            let mut relevant = d.iter().filter(|(k, _)| !SKIPPED.contains(&k.as_str()));
            c.len() == relevant.clone().count() + usize::from(changed.is_some())
                && c.get("versionInfo")
                    .and_then(|v| v.get("lastConfigChangeAt"))
                    == changed
                && relevant.all(|(k, v)| c.get(k) == Some(v))
        }
        _ => *task_config == config_of(def),
    }
}

/// An app [`step_app`] would leave exactly as it is: as many live (not killed) tasks as
/// `instances`, all on the current config, and not waiting in the launch queue. Checked without
/// cloning anything, so a step costs little for the apps that have nothing to do.
fn settled(world: &World, index: &TaskIndex, app_id: &str, record: &AppRecord) -> bool {
    if record.queued_since.is_some() {
        return false;
    }
    let n = instances_of(&record.def);
    let mut live = 0usize;
    for t in tasks_of(world, index, app_id) {
        if t.kill.is_some() {
            continue;
        }
        if !runs_config_of(&t.config, &record.def) {
            return false;
        }
        live += 1;
    }
    live == n
}

/// One scheduling pass: launch what is missing, kill what is too much or outdated, finish
/// deployments that converged. Events for finished deployments are published.
///
/// Cost: one pass over the tasks and a clone-free look at each app; only apps with work (tasks
/// to launch or kill, a rolling replacement, a launch queue entry) are stepped in full, so a
/// scheduler holding many settled apps answers its API promptly.
pub fn step(world: &mut World, bus: &EventBus, now: Instant) -> Decisions {
    let mut out = Decisions::default();

    // Tasks of apps that no longer exist go.
    let orphans: Vec<String> = world
        .tasks
        .values()
        .filter(|t| t.kill.is_none() && !world.apps.contains_key(&t.app_id))
        .map(|t| t.id.clone())
        .collect();
    for id in orphans {
        mark_kill(world, &id, KillReason::Stopped, &mut out);
    }

    let index = task_index(world);
    let busy: Vec<String> = world
        .apps
        .iter()
        .filter(|(id, record)| !settled(world, &index, id, record))
        .map(|(id, _)| id.clone())
        .collect();
    for app_id in busy {
        step_app(world, &index, &app_id, now, &mut out);
    }

    let index = task_index(world);
    let finished: Vec<String> = world
        .deployments
        .iter()
        .filter(|d| converged(world, &index, d))
        .map(|d| d.id.clone())
        .collect();
    for id in finished {
        if let Some(pos) = world.deployments.iter().position(|d| d.id == id) {
            let d = world.deployments.remove(pos);
            bus.publish(
                "deployment_step_success",
                json!({"plan": plan_json(&d), "currentStep": current_step_json(&d)}),
            );
            bus.publish(
                "deployment_success",
                json!({"id": d.id, "plan": plan_json(&d)}),
            );
        }
    }
    out
}

fn step_app(world: &mut World, index: &TaskIndex, app_id: &str, now: Instant, out: &mut Decisions) {
    let Some(record) = world.apps.get(app_id) else {
        return;
    };
    let def = record.def.clone();
    let delayed = record.backoff.as_ref().is_some_and(|b| b.until > now);
    let n = instances_of(&def);
    let config = config_of(&def);
    let checked = has_health_checks(&def);

    let mut current: Vec<&Task> = Vec::new();
    let mut old: Vec<&Task> = Vec::new();
    let mut alive = 0usize;
    for t in tasks_of(world, index, app_id) {
        alive += 1;
        if t.kill.is_some() {
            continue;
        }
        if t.config == config {
            current.push(t);
        } else {
            old.push(t);
        }
    }

    let mut to_kill: Vec<String> = Vec::new();
    let mut to_launch = 0usize;
    if old.is_empty() {
        if current.len() > n {
            // killSelection: YOUNGEST_FIRST (default) or OLDEST_FIRST.
            let oldest_first =
                def.get("killSelection").and_then(Value::as_str) == Some("OLDEST_FIRST");
            current.sort_by_key(|t| t.staged_at);
            if !oldest_first {
                current.reverse();
            }
            to_kill.extend(current.iter().take(current.len() - n).map(|t| t.id.clone()));
        } else {
            to_launch = n - current.len();
        }
    } else {
        // Rolling replacement, as Marathon's TaskReplaceActor: keep at least minHealthy ready
        // tasks, never run more than maxCapacity tasks at once.
        let (min_health, over) = upgrade_strategy(&def);
        let min_healthy = (n as f64 * min_health - 1e-9).ceil().max(0.0) as usize;
        let mut max_capacity = (n as f64 * (1.0 + over) + 1e-9).floor() as usize;
        if min_healthy == max_capacity && max_capacity <= alive {
            // With minimumHealthCapacity 1 and maximumOverCapacity 0 nothing could move:
            // Marathon allows one extra task.
            max_capacity += 1;
        }
        let new_ready = current.iter().filter(|t| is_ready(t, checked)).count();
        let old_ready = old.iter().filter(|t| is_ready(t, checked)).count();
        // Old tasks that are not ready count for nothing: kill them first.
        old.sort_by_key(|t| (is_ready(t, checked), t.staged_at));
        let can_kill = (old_ready + new_ready).saturating_sub(min_healthy);
        let not_ready = old.len() - old_ready;
        let kill_count = (not_ready + can_kill).min(old.len());
        to_kill.extend(old.iter().take(kill_count).map(|t| t.id.clone()));
        if current.len() < n {
            to_launch = (n - current.len()).min(max_capacity.saturating_sub(alive));
        }
    }

    for id in to_kill {
        mark_kill(world, &id, KillReason::Scaling, out);
    }
    // The index predates this step's launches (none yet for this app) and its kills (excluded
    // by `kill`), so it lists every task that counts here.
    let missing = n.saturating_sub(
        tasks_of(world, index, app_id)
            .into_iter()
            .filter(|t| t.kill.is_none() && t.config == config)
            .count(),
    );
    let Some(record) = world.apps.get_mut(app_id) else {
        return;
    };
    if missing == 0 {
        record.queued_since = None;
    } else if record.queued_since.is_none() {
        record.queued_since = Some(SystemTime::now());
    }
    if to_launch == 0 || delayed {
        return;
    }
    let version = def
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    for _ in 0..to_launch {
        let task = Task::new(
            app_id,
            &version,
            config.clone(),
            grace_period(&def),
            def.clone(),
        );
        out.launch.push(task.id.clone());
        world.tasks.insert(task.id.clone(), task);
    }
}

/// `taskKillGracePeriodSeconds`, or Mesos' default of 3 seconds when unset.
pub fn grace_period(def: &Value) -> Duration {
    def.get("taskKillGracePeriodSeconds")
        .and_then(Value::as_f64)
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(3), Duration::from_secs_f64)
}

pub fn mark_kill(world: &mut World, task_id: &str, reason: KillReason, out: &mut Decisions) {
    if let Some(t) = world.tasks.get_mut(task_id) {
        if t.kill.is_none() {
            t.kill = Some(reason);
            out.kill.push(task_id.to_string());
        }
    }
}

/// Has the world reached the deployment's targets?
fn converged(world: &World, index: &TaskIndex, d: &Deployment) -> bool {
    d.target.iter().all(|(app_id, target)| {
        let tasks = tasks_of(world, index, app_id);
        match (target, world.apps.get(app_id)) {
            (None, _) => tasks.is_empty(),
            (Some(_), None) => true,
            (Some(_), Some(record)) => {
                let config = config_of(&record.def);
                let checked = has_health_checks(&record.def);
                tasks.len() == instances_of(&record.def)
                    && tasks
                        .iter()
                        .all(|t| t.kill.is_none() && t.config == config && is_ready(t, checked))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str, cmd: &str, instances: u64, min: f64, over: f64) -> Value {
        json!({"id": id, "cmd": cmd, "instances": instances, "version": "v",
               "upgradeStrategy": {"minimumHealthCapacity": min, "maximumOverCapacity": over}})
    }

    fn run_all(world: &mut World, ids: &[String]) {
        for id in ids {
            if let Some(t) = world.tasks.get_mut(id) {
                t.state = TaskState::Running;
            }
        }
    }

    fn exit_killed(world: &mut World, ids: &[String]) {
        for id in ids {
            world.tasks.remove(id);
        }
    }

    #[test]
    fn start_scale_and_converge() {
        let bus = EventBus::default();
        let mut world = World::default();
        let d = apply(
            &mut world,
            &bus,
            vec![("/a".into(), Some(app("/a", "x", 2, 1.0, 1.0)))],
            "v1".into(),
            false,
        )
        .unwrap();
        assert_eq!(
            d.actions,
            vec![(Action::StartApplication, "/a".to_string())]
        );
        let out = step(&mut world, &bus, Instant::now());
        assert_eq!(out.launch.len(), 2);
        assert_eq!(world.deployments.len(), 1, "not converged while staging");
        run_all(&mut world, &out.launch);
        step(&mut world, &bus, Instant::now());
        assert!(world.deployments.is_empty());

        // A second change while locked is refused; forced, it goes through.
        let mut scaled = app("/a", "x", 1, 1.0, 1.0);
        scaled["version"] = json!("v2");
        apply(
            &mut world,
            &bus,
            vec![("/a".into(), Some(scaled.clone()))],
            "v2".into(),
            false,
        )
        .unwrap();
        let err = apply(
            &mut world,
            &bus,
            vec![("/a".into(), Some(scaled))],
            "v3".into(),
            false,
        )
        .unwrap_err();
        assert!(matches!(err, Reject::Locked(ref ids) if ids.len() == 1));
        let out = step(&mut world, &bus, Instant::now());
        assert_eq!(out.kill.len(), 1);
    }

    #[test]
    fn rolling_upgrade_keeps_minimum_health() {
        let bus = EventBus::default();
        let mut world = World::default();
        apply(
            &mut world,
            &bus,
            vec![("/a".into(), Some(app("/a", "x", 2, 1.0, 0.0)))],
            "v1".into(),
            false,
        )
        .unwrap();
        let out = step(&mut world, &bus, Instant::now());
        run_all(&mut world, &out.launch);
        step(&mut world, &bus, Instant::now());

        apply(
            &mut world,
            &bus,
            vec![("/a".into(), Some(app("/a", "y", 2, 1.0, 0.0)))],
            "v2".into(),
            false,
        )
        .unwrap();
        // min 100%, over 0%: one extra task first, no kill before it is ready.
        let out = step(&mut world, &bus, Instant::now());
        assert_eq!((out.launch.len(), out.kill.len()), (1, 0));
        let out2 = step(&mut world, &bus, Instant::now());
        assert_eq!(
            (out2.launch.len(), out2.kill.len()),
            (0, 0),
            "waits for the new task"
        );
        run_all(&mut world, &out.launch);
        let out3 = step(&mut world, &bus, Instant::now());
        assert_eq!(out3.kill.len(), 1);
        exit_killed(&mut world, &out3.kill);
        let out4 = step(&mut world, &bus, Instant::now());
        assert_eq!(out4.launch.len(), 1);
        run_all(&mut world, &out4.launch);
        let out5 = step(&mut world, &bus, Instant::now());
        assert_eq!(out5.kill.len(), 1);
        exit_killed(&mut world, &out5.kill);
        step(&mut world, &bus, Instant::now());
        assert!(world.deployments.is_empty());
        assert_eq!(world.tasks.len(), 2);
    }

    /// What `step` looks at in full: only apps with work. A settled app costs a look, no clone,
    /// and stepping it would change nothing; each kind of work makes it unsettled.
    #[test]
    fn only_apps_with_work_are_stepped() {
        let bus = EventBus::default();
        let mut world = World::default();
        let changes = vec![
            ("/idle".to_string(), Some(app("/idle", "x", 0, 1.0, 1.0))),
            ("/run".to_string(), Some(app("/run", "y", 2, 1.0, 1.0))),
        ];
        apply(&mut world, &bus, changes, "v1".into(), false).unwrap();
        let is_settled = |world: &World, id: &str| {
            let index = task_index(world);
            settled(world, &index, id, &world.apps[id])
        };
        assert!(is_settled(&world, "/idle"), "no instances, no tasks");
        assert!(!is_settled(&world, "/run"), "two tasks to launch");
        let out = step(&mut world, &bus, Instant::now());
        assert_eq!(out.launch.len(), 2);
        run_all(&mut world, &out.launch);
        step(&mut world, &bus, Instant::now());
        assert!(is_settled(&world, "/run") && world.deployments.is_empty());

        // Settled apps: a step decides nothing and changes nothing.
        let out = step(&mut world, &bus, Instant::now());
        assert!(out.launch.is_empty() && out.kill.is_empty());
        assert!(world.apps.values().all(|r| r.queued_since.is_none()));

        // A task gone (it exited): work again, and the step replaces it.
        let gone = world.tasks.keys().next().cloned().unwrap();
        world.tasks.remove(&gone);
        assert!(!is_settled(&world, "/run"));
        let out = step(&mut world, &bus, Instant::now());
        assert_eq!(out.launch.len(), 1);
        run_all(&mut world, &out.launch);

        // A task on an old config: work (the rolling replacement).
        let mut new = app("/run", "y2", 2, 1.0, 1.0);
        new["version"] = json!("v2");
        apply(
            &mut world,
            &bus,
            vec![("/run".into(), Some(new))],
            "v2".into(),
            false,
        )
        .unwrap();
        assert!(!is_settled(&world, "/run"));
        assert!(!step(&mut world, &bus, Instant::now()).launch.is_empty());

        // Waiting in the launch queue (a backoff delays its launch): stepped every time, so
        // the launch happens once the delay is over.
        let mut world = World::default();
        apply(
            &mut world,
            &bus,
            vec![("/slow".into(), Some(app("/slow", "z", 1, 1.0, 1.0)))],
            "v1".into(),
            false,
        )
        .unwrap();
        let later = Instant::now() + Duration::from_secs(60);
        if let Some(r) = world.apps.get_mut("/slow") {
            r.backoff = Some(crate::store::Backoff {
                next_delay: Duration::from_secs(2),
                until: later,
            });
        }
        let out = step(&mut world, &bus, Instant::now());
        assert!(out.launch.is_empty(), "delayed");
        assert!(world.apps["/slow"].queued_since.is_some());
        assert!(!is_settled(&world, "/slow"));
        let out = step(&mut world, &bus, later + Duration::from_secs(1));
        assert_eq!(out.launch.len(), 1, "launched after the delay");
    }

    #[test]
    fn a_task_runs_the_config_of_its_definition() {
        let def = json!({"id": "/a", "cmd": "x", "instances": 3, "version": "v1",
                         "versionInfo": {"lastScalingAt": "v1"}});
        let config = config_of(&def);
        assert!(runs_config_of(&config, &def));
        let mut scaled = def.clone();
        scaled["instances"] = json!(5);
        scaled["version"] = json!("v2");
        assert!(
            runs_config_of(&config, &scaled),
            "a scaling keeps the config"
        );
        let mut changed = def.clone();
        changed["cmd"] = json!("y");
        assert!(!runs_config_of(&config, &changed));
        let mut added = def.clone();
        added["env"] = json!({"A": "1"});
        assert!(!runs_config_of(&config, &added), "a field added");
        let mut removed = def;
        removed.as_object_mut().unwrap().remove("cmd");
        assert!(!runs_config_of(&config, &removed), "a field removed");

        let stored = json!({"id": "/a", "cmd": "x", "instances": 3, "version": "v1",
            "versionInfo": {"lastScalingAt": "v1", "lastConfigChangeAt": "v1"}});
        let config = config_of(&stored);
        assert!(runs_config_of(&config, &stored));
        let mut scaled = stored.clone();
        scaled["instances"] = json!(5);
        scaled["versionInfo"]["lastScalingAt"] = json!("v2");
        assert!(
            runs_config_of(&config, &scaled),
            "a scaling keeps the config"
        );
        let mut restarted = stored.clone();
        restarted["versionInfo"]["lastConfigChangeAt"] = json!("v2");
        assert!(
            !runs_config_of(&config, &restarted),
            "a restart (a new lastConfigChangeAt, the same fields) is a new config"
        );
        assert_eq!(
            runs_config_of(&config, &restarted),
            config == config_of(&restarted)
        );
    }

    #[test]
    fn rollback_restores_the_original() {
        let bus = EventBus::default();
        let mut world = World::default();
        let d = apply(
            &mut world,
            &bus,
            vec![("/a".into(), Some(app("/a", "x", 1, 1.0, 1.0)))],
            "v1".into(),
            false,
        )
        .unwrap();
        let undo = revert_changes(&d);
        assert_eq!(undo, vec![("/a".to_string(), None)]);
        apply(&mut world, &bus, undo, "v2".into(), true).unwrap();
        assert!(world.apps.is_empty());
        assert_eq!(
            world.deployments.len(),
            1,
            "the rollback replaced the original deployment"
        );
    }
}
