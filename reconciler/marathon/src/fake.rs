//! An in-memory [`Scheduler`] for tests of apply: deployments finish after a set (tokio) time,
//! apps can be made to hang, 409, 422 or fail, and every call is recorded.
//!
//! Time is tokio time, so tests can run under `tokio::time::pause()`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{
    Deployment, EventStream, InvalidDetail, Scheduler, SchedulerError, SchedulerEvent, Written,
};
use baton_core::spec::AppId;

/// One call to the fake, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    ListApps,
    /// One app by id (the reconcile loop's fast path).
    GetApp(String),
    PutApp(String),
    DeleteApp {
        id: String,
        force: bool,
    },
    Deployments,
    Rollback(String),
    Diagnose(String),
    Events,
}

impl Call {
    /// Whether the call changes the scheduler.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Call::PutApp(_) | Call::DeleteApp { .. } | Call::Rollback(_)
        )
    }
}

/// A failure to inject into the next write of an app.
#[derive(Debug, Clone)]
pub enum Inject {
    /// 422 with these `(path, error)` details.
    Invalid(Vec<(String, String)>),
    /// An HTTP status (e.g. 500).
    Status(u16),
    /// The connection fails.
    Unreachable,
}

#[derive(Debug, Clone)]
struct FakeDeployment {
    id: String,
    apps: Vec<String>,
    /// Each app before the change, for rollback.
    original: Vec<(String, Option<Value>)>,
}

#[derive(Debug, Default)]
struct State {
    apps: BTreeMap<String, Value>,
    deployments: Vec<FakeDeployment>,
    calls: Vec<Call>,
    next_id: u64,
    stuck: BTreeSet<String>,
    inject: HashMap<String, VecDeque<Inject>>,
    subscribers: Vec<mpsc::UnboundedSender<SchedulerEvent>>,
    events_enabled: bool,
    diagnosis: HashMap<String, String>,
    /// Mirrors [`Fake::freeze`]: no event is published while set.
    frozen: bool,
    /// Every call fails at once as unreachable (a scheduler process that died).
    gone: bool,
    /// How long each call takes to answer (a network round trip).
    latency: Duration,
}

/// The fake scheduler; cheap to clone (clones share state).
#[derive(Debug, Clone)]
pub struct Fake {
    state: Arc<Mutex<State>>,
    /// How long a deployment takes to finish.
    deploy_time: Duration,
    /// Woken on every call (see [`Fake::called`]).
    called: Arc<tokio::sync::Notify>,
    /// `true`: `list_apps` waits (recorded, not answered) until it is `false` again.
    lists_held: Arc<tokio::sync::watch::Sender<bool>>,
    /// `true`: every call waits (recorded, not answered) and no event is sent, like a scheduler
    /// that was stopped (SIGSTOP) or a proxy that stopped forwarding.
    frozen: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Fake {
    fn default() -> Self {
        Fake::new(Duration::from_secs(1))
    }
}

impl Fake {
    /// An empty scheduler whose deployments finish after `deploy_time`.
    pub fn new(deploy_time: Duration) -> Self {
        let state = State {
            events_enabled: true,
            ..State::default()
        };
        Fake {
            state: Arc::new(Mutex::new(state)),
            deploy_time,
            called: Arc::new(tokio::sync::Notify::new()),
            lists_held: Arc::new(tokio::sync::watch::Sender::new(false)),
            frozen: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    /// Freeze (`true`) or thaw the whole scheduler: a frozen one records calls but answers
    /// none until thawed, and its events are lost.
    pub fn freeze(&self, frozen: bool) {
        self.lock().frozen = frozen;
        self.frozen.send_replace(frozen);
    }

    /// Make every call fail at once as unreachable (`true`), like a scheduler whose process
    /// died; no event is sent meanwhile.
    pub fn set_gone(&self, gone: bool) {
        self.lock().gone = gone;
    }

    /// Every call takes `latency` to answer from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Wait while frozen, and the call's latency; then the error of a gone scheduler, if it is.
    async fn thawed(&self) -> Result<(), SchedulerError> {
        let mut frozen = self.frozen.subscribe();
        let _ = frozen.wait_for(|f| !f).await;
        let latency = self.lock().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if self.lock().gone {
            return Err(SchedulerError::Unreachable {
                url: "fake:".into(),
                reason: "connection refused".into(),
            });
        }
        Ok(())
    }

    /// Record a call and wake whoever waits for calls.
    fn record(&self, s: &mut State, call: Call) {
        s.calls.push(call);
        self.called.notify_waiters();
    }

    /// Wait until the calls so far satisfy `done` (checked now and after every call).
    pub async fn called(&self, done: impl Fn(&[Call]) -> bool) {
        loop {
            let next = self.called.notified();
            tokio::pin!(next);
            next.as_mut().enable();
            if done(&self.lock().calls) {
                return;
            }
            next.await;
        }
    }

    /// Hold (`true`) or release every `list_apps`: a held one is recorded at once but answers
    /// only once released, like a scheduler slow to list many apps.
    pub fn hold_lists(&self, held: bool) {
        self.lists_held.send_replace(held);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add a running app directly (no deployment, not recorded).
    pub fn seed(&self, app: Value) {
        let mut app = app;
        up(&mut app);
        if let Some(id) = app.get("id").and_then(Value::as_str).map(str::to_string) {
            self.lock().apps.insert(id, app);
        }
    }

    /// Deployments of `app` never finish (its tasks never come up).
    pub fn make_stuck(&self, app: &str) {
        self.lock().stuck.insert(app.to_string());
    }

    /// The next write of `app` fails like this (queue several for several writes).
    pub fn inject(&self, app: &str, failure: Inject) {
        self.lock()
            .inject
            .entry(app.to_string())
            .or_default()
            .push_back(failure);
    }

    /// What `diagnose` answers for `app`.
    pub fn set_diagnosis(&self, app: &str, reason: &str) {
        self.lock()
            .diagnosis
            .insert(app.to_string(), reason.to_string());
    }

    /// `events()` fails: apply must fall back to polling.
    pub fn disable_events(&self) {
        self.lock().events_enabled = false;
    }

    /// Start a deployment that locks `app` (someone else's change); it finishes after `time`, or
    /// never when `None`. Returns its id.
    pub fn lock_app(&self, app: &str, time: Option<Duration>) -> String {
        let id = {
            let mut s = self.lock();
            let id = next_id(&mut s);
            s.deployments.push(FakeDeployment {
                id: id.clone(),
                apps: vec![app.to_string()],
                original: Vec::new(),
            });
            id
        };
        if let Some(t) = time {
            self.finish_later(id.clone(), t);
        }
        id
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls that changed something.
    pub fn writes(&self) -> Vec<Call> {
        self.calls().into_iter().filter(Call::is_write).collect()
    }

    /// The current definition of an app.
    pub fn app(&self, id: &str) -> Option<Value> {
        self.lock().apps.get(id).cloned()
    }

    /// Ids of running deployments.
    pub fn running(&self) -> Vec<String> {
        self.lock()
            .deployments
            .iter()
            .map(|d| d.id.clone())
            .collect()
    }

    fn finish_later(&self, id: String, after: Duration) {
        let state = self.state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            let Some(pos) = s.deployments.iter().position(|d| d.id == id) else {
                return;
            };
            let d = s.deployments.remove(pos);
            for app in &d.apps {
                if let Some(a) = s.apps.get_mut(app) {
                    up(a);
                }
            }
            publish(&mut s, SchedulerEvent::DeploymentSuccess { id });
        });
    }

    /// Record a write, check injections and locks, then store and deploy.
    fn write(
        &self,
        call: Call,
        app: &str,
        target: Option<Value>,
        force: bool,
    ) -> Result<Written, SchedulerError> {
        let url = format!("fake:/v2/apps{app}");
        let (written, stuck) = {
            let mut s = self.lock();
            self.record(&mut s, call);
            if let Some(f) = s.inject.get_mut(app).and_then(VecDeque::pop_front) {
                return Err(match f {
                    Inject::Invalid(details) => SchedulerError::Invalid {
                        url,
                        message: "Object is not valid".into(),
                        details: details
                            .into_iter()
                            .map(|(path, e)| InvalidDetail {
                                path,
                                errors: vec![e],
                            })
                            .collect(),
                    },
                    Inject::Status(status) => SchedulerError::Status {
                        url,
                        status,
                        body: "injected".into(),
                    },
                    Inject::Unreachable => SchedulerError::Unreachable {
                        url,
                        reason: "injected".into(),
                    },
                });
            }
            if target.is_none() && !s.apps.contains_key(app) {
                return Err(SchedulerError::NotFound { url });
            }
            let locks: Vec<String> = s
                .deployments
                .iter()
                .filter(|d| d.apps.iter().any(|a| a == app))
                .map(|d| d.id.clone())
                .collect();
            if !locks.is_empty() {
                if !force {
                    return Err(SchedulerError::Locked {
                        url,
                        deployments: locks,
                    });
                }
                s.deployments.retain(|d| !locks.contains(&d.id));
                for id in locks {
                    publish(&mut s, SchedulerEvent::DeploymentFailed { id });
                }
            }
            let before = s.apps.get(app).cloned();
            let id = next_id(&mut s);
            let version = format!("v{}", s.next_id);
            match target {
                Some(mut def) => {
                    down(&mut def);
                    // The version the answer names, as a scheduler serves it.
                    if let Value::Object(m) = &mut def {
                        m.insert("version".into(), json!(version));
                    }
                    s.apps.insert(app.to_string(), def);
                }
                None => {
                    s.apps.remove(app);
                }
            }
            s.deployments.push(FakeDeployment {
                id: id.clone(),
                apps: vec![app.to_string()],
                original: vec![(app.to_string(), before)],
            });
            let written = Written {
                deployment_id: id,
                version,
            };
            (written, s.stuck.contains(app))
        };
        if !stuck {
            self.finish_later(written.deployment_id.clone(), self.deploy_time);
        }
        Ok(written)
    }
}

fn next_id(s: &mut State) -> String {
    s.next_id += 1;
    format!("dep-{}", s.next_id)
}

fn publish(s: &mut State, ev: SchedulerEvent) {
    if s.frozen || s.gone {
        return;
    }
    s.subscribers.retain(|tx| tx.send(ev.clone()).is_ok());
}

fn instances(app: &Value) -> u64 {
    app.get("instances").and_then(Value::as_u64).unwrap_or(1)
}

/// Mark every instance running (and healthy).
fn up(app: &mut Value) {
    let n = instances(app);
    if let Value::Object(m) = app {
        m.insert("tasksRunning".into(), json!(n));
        m.insert("tasksHealthy".into(), json!(n));
    }
}

/// No instance up yet.
fn down(app: &mut Value) {
    if let Value::Object(m) = app {
        m.insert("tasksRunning".into(), json!(0));
        m.insert("tasksHealthy".into(), json!(0));
    }
}

impl Scheduler for Fake {
    async fn list_apps(&self) -> Result<Vec<Value>, SchedulerError> {
        {
            let mut s = self.lock();
            self.record(&mut s, Call::ListApps);
        }
        self.thawed().await?;
        let mut held = self.lists_held.subscribe();
        let _ = held.wait_for(|h| !h).await;
        Ok(self.lock().apps.values().cloned().collect())
    }

    async fn get_app(&self, id: &AppId) -> Result<Option<Value>, SchedulerError> {
        {
            let mut s = self.lock();
            self.record(&mut s, Call::GetApp(id.as_str().into()));
        }
        self.thawed().await?;
        Ok(self.lock().apps.get(id.as_str()).cloned())
    }

    async fn put_app(&self, id: &AppId, body: &Value) -> Result<Written, SchedulerError> {
        self.thawed().await?;
        self.write(
            Call::PutApp(id.as_str().into()),
            id.as_str(),
            Some(body.clone()),
            false,
        )
    }

    async fn delete_app(&self, id: &AppId, force: bool) -> Result<Written, SchedulerError> {
        self.thawed().await?;
        self.write(
            Call::DeleteApp {
                id: id.as_str().into(),
                force,
            },
            id.as_str(),
            None,
            force,
        )
    }

    async fn deployments(&self) -> Result<Vec<Deployment>, SchedulerError> {
        {
            let mut s = self.lock();
            self.record(&mut s, Call::Deployments);
        }
        self.thawed().await?;
        let s = self.lock();
        Ok(s.deployments
            .iter()
            .map(|d| Deployment {
                id: d.id.clone(),
                affected_apps: d.apps.clone(),
            })
            .collect())
    }

    async fn rollback(&self, deployment_id: &str) -> Result<Written, SchedulerError> {
        self.thawed().await?;
        let written = {
            let mut s = self.lock();
            self.record(&mut s, Call::Rollback(deployment_id.into()));
            let Some(pos) = s.deployments.iter().position(|d| d.id == deployment_id) else {
                return Err(SchedulerError::NotFound {
                    url: format!("fake:/v2/deployments/{deployment_id}"),
                });
            };
            let old = s.deployments.remove(pos);
            publish(
                &mut s,
                SchedulerEvent::DeploymentFailed { id: old.id.clone() },
            );
            for (app, before) in &old.original {
                match before {
                    Some(def) => {
                        s.apps.insert(app.clone(), def.clone());
                    }
                    None => {
                        s.apps.remove(app);
                    }
                }
            }
            let id = next_id(&mut s);
            s.deployments.push(FakeDeployment {
                id: id.clone(),
                apps: old.apps.clone(),
                original: Vec::new(),
            });
            Written {
                deployment_id: id,
                version: format!("v{}", s.next_id),
            }
        };
        self.finish_later(written.deployment_id.clone(), self.deploy_time);
        Ok(written)
    }

    async fn diagnose(&self, id: &AppId) -> Option<String> {
        {
            let mut s = self.lock();
            self.record(&mut s, Call::Diagnose(id.as_str().into()));
        }
        self.thawed().await.ok()?;
        self.lock().diagnosis.get(id.as_str()).cloned()
    }

    async fn events(&self) -> Result<EventStream, SchedulerError> {
        self.thawed().await?;
        let mut s = self.lock();
        self.record(&mut s, Call::Events);
        if !s.events_enabled {
            return Err(SchedulerError::Unreachable {
                url: "fake:/v2/events".into(),
                reason: "events disabled".into(),
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        s.subscribers.push(tx);
        Ok(EventStream::new(rx, None))
    }
}
