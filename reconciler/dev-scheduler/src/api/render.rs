//! App and task answers: stored definitions with the status Marathon adds (counts,
//! deployments, tasks, last failure), as the [`Embed`] of a request asks.

use serde_json::{json, Value};

use super::query::Embed;
use crate::deploy::locks;
use crate::store::World;
use crate::tasks::{service_ports, Task, TaskState};
use crate::Shared;

/// A task as Marathon shows it, with its app's service ports.
pub(super) fn task_json(shared: &Shared, world: &World, t: &Task) -> Value {
    let sp = world
        .apps
        .get(&t.app_id)
        .map(|r| service_ports(&r.def))
        .unwrap_or_default();
    t.to_json(&shared.config.hostname, &sp)
}

/// The app `id` with what `embed` asks for; `None` if there is no such app.
pub(super) fn app_json(shared: &Shared, world: &World, id: &str, embed: Embed) -> Option<Value> {
    let tasks: Vec<&Task> = world.tasks.values().filter(|t| t.app_id == id).collect();
    app_json_with(shared, world, id, tasks, embed)
}

/// [`app_json`] with the app's tasks already picked out (a listing groups them once).
pub(super) fn app_json_with(
    shared: &Shared,
    world: &World,
    id: &str,
    tasks: Vec<&Task>,
    embed: Embed,
) -> Option<Value> {
    let record = world.apps.get(id)?;
    let mut app = record.def.clone();
    // Definitions stored before labels were always filled in.
    super::apps::with_labels(&mut app);
    let Some(obj) = app.as_object_mut() else {
        return Some(app);
    };
    if embed.counts {
        let staged = tasks
            .iter()
            .filter(|t| t.state == TaskState::Staging)
            .count();
        let running = tasks
            .iter()
            .filter(|t| t.state == TaskState::Running)
            .count();
        let healthy = tasks.iter().filter(|t| t.is_healthy()).count();
        let unhealthy = tasks.iter().filter(|t| t.is_unhealthy()).count();
        obj.insert("tasksStaged".into(), json!(staged));
        obj.insert("tasksRunning".into(), json!(running));
        obj.insert("tasksHealthy".into(), json!(healthy));
        obj.insert("tasksUnhealthy".into(), json!(unhealthy));
    }
    if embed.deployments {
        let ids: Vec<Value> = locks(world, id)
            .into_iter()
            .map(|d| json!({"id": d}))
            .collect();
        obj.insert("deployments".into(), Value::Array(ids));
    }
    if embed.readiness {
        obj.insert("readinessCheckResults".into(), json!([]));
    }
    if embed.tasks {
        let list: Vec<Value> = tasks.iter().map(|t| task_json(shared, world, t)).collect();
        obj.insert("tasks".into(), Value::Array(list));
    }
    if embed.failure {
        if let Some(f) = &record.last_task_failure {
            obj.insert("lastTaskFailure".into(), f.clone());
        }
    }
    if embed.stats {
        obj.insert("taskStats".into(), json!({}));
    }
    Some(app)
}
