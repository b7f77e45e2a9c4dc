//! `baton apply` on a terminal: while apply waits for deployments, a line per app each time its
//! task count moves (`/shop/web deploying 1/3`), read from the scheduler every
//! [`POLL`]. Only on a terminal: piped output stays exactly what scripts parse (the apply's
//! own per-app lines and summary).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use baton_core::spec::AppId;
use baton_marathon::Scheduler;

/// How often the apps deploying are looked at.
pub const POLL: Duration = Duration::from_millis(500);

/// (tasks ready, instances wanted).
type Counts = (u64, u64);

/// The apps deploying now and the count last shown for each.
#[derive(Debug, Default, Clone)]
pub struct Deploying {
    inner: Arc<Mutex<BTreeMap<AppId, Option<Counts>>>>,
}

impl Deploying {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<AppId, Option<Counts>>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `app`'s deployment started.
    pub fn started(&self, app: &AppId) {
        self.lock().insert(app.clone(), None);
    }

    /// `app`'s write finished (whatever the outcome).
    pub fn finished(&self, app: &AppId) {
        self.lock().remove(app);
    }

    /// The line to show for `app` now that the scheduler shows it as `live`, if its count
    /// moved since the last line (and it is still deploying).
    pub fn seen(&self, app: &AppId, live: &Value) -> Option<String> {
        let counts = tasks_ready(live);
        let mut map = self.lock();
        let shown = map.get_mut(app)?;
        if *shown == Some(counts) {
            return None;
        }
        *shown = Some(counts);
        Some(line(app, counts))
    }

    fn apps(&self) -> Vec<AppId> {
        self.lock().keys().cloned().collect()
    }
}

/// (tasks ready, instances wanted): healthy tasks when the app has health checks, else running.
pub fn tasks_ready(app: &Value) -> (u64, u64) {
    let want = app.get("instances").and_then(Value::as_u64).unwrap_or(1);
    let checked =
        (app.get("healthChecks").and_then(Value::as_array)).is_some_and(|h| !h.is_empty());
    let key = if checked {
        "tasksHealthy"
    } else {
        "tasksRunning"
    };
    let ready = app.get(key).and_then(Value::as_u64).unwrap_or(0);
    (ready.min(want), want)
}

/// `  /shop/web                    deploying 1/3`.
pub fn line(app: &AppId, (ready, want): (u64, u64)) -> String {
    format!("  {:<28} deploying {ready}/{want}", app.as_str())
}

/// Until dropped: every [`POLL`], read each app deploying and `emit` its line when its count
/// moved. Read errors are skipped (apply itself reports a scheduler that stopped answering).
pub async fn watch<S: Scheduler>(
    scheduler: &S,
    deploying: &Deploying,
    emit: &(dyn Fn(String) + Send + Sync),
) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(POLL).await;
        for app in deploying.apps() {
            if let Ok(Some(live)) = scheduler.get_app(&app).await {
                if let Some(l) = deploying.seen(&app, &live) {
                    emit(l);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_only_when_the_count_moves() {
        let d = Deploying::default();
        let web = AppId::parse("/shop/web").unwrap();
        let live = |running: u64| serde_json::json!({"instances": 3, "tasksRunning": running});
        assert_eq!(d.seen(&web, &live(1)), None, "not deploying");
        d.started(&web);
        assert_eq!(
            d.seen(&web, &live(1)).as_deref(),
            Some("  /shop/web                    deploying 1/3")
        );
        assert_eq!(d.seen(&web, &live(1)), None);
        assert!(d.seen(&web, &live(2)).unwrap().ends_with("deploying 2/3"));
        d.finished(&web);
        assert_eq!(d.seen(&web, &live(3)), None);
        // Health checks: healthy tasks count, not running ones.
        let checked = serde_json::json!({"instances": 2, "tasksRunning": 2, "tasksHealthy": 1,
            "healthChecks": [{"protocol": "COMMAND"}]});
        assert_eq!(tasks_ready(&checked), (1, 2));
    }
}
