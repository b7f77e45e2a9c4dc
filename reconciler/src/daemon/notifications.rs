//! Notifications: a generic JSON webhook and a Slack-compatible payload on sync failure, drift
//! detected / resolved and deployment finished, each saying what changed and why.
//!
//! The loop hands a [`Notification`] to [`Notifier::notify`], which never blocks: it puts it on
//! a bounded queue, or drops and counts it when the queue is full. One background task
//! ([`spawn`]) delivers the queue to every sink, retrying each delivery with exponential backoff.
//! Payloads are pure functions ([`json_payload`], [`slack_payload`]). Sink URLs often carry a
//! token (Slack's do), so they are never logged or shown in `Debug`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::daemon::metrics::Metrics;
use baton_core::drift::{human, rfc3339, AppDrift, Attribution, LedgerEntry, LedgerEvent};
use baton_core::spec::AppId;

/// Something worth telling people.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// A sync could not be completed.
    SyncFailed {
        commit: Option<String>,
        error: String,
        /// Apps that failed, with why.
        apps: Vec<(AppId, String)>,
    },
    /// An app started to disagree with git.
    DriftDetected {
        app: AppId,
        /// JSON pointers of the differing fields.
        fields: Vec<String>,
        changed_by: Option<Attribution>,
        /// What Baton will do about it (`report`, `correct`, `correct-after:600s`).
        policy: String,
    },
    /// An app agrees with git again.
    DriftResolved { entry: LedgerEntry },
    /// A sync's deployments finished.
    DeploymentFinished {
        commit: Option<String>,
        apps: Vec<AppId>,
        took: Duration,
    },
    /// A rollout was rolled back: the canary removed, the stable untouched, the commit held
    /// for that app until its definition changes.
    RolloutRolledBack {
        app: AppId,
        commit: String,
        /// The traffic step it failed in, when the reason names one.
        step: Option<usize>,
        /// Why, in words (with the numbers).
        reason: String,
        /// The analysis' numbers, when an analysis failed it.
        requests: Option<u64>,
        errors: Option<u64>,
        rate: Option<f64>,
    },
}

impl Notification {
    /// From a ledger event, with the app's current drift (for the policy).
    pub fn from_ledger(event: &LedgerEvent, app: Option<&AppDrift>) -> Notification {
        match event {
            LedgerEvent::Detected(e) => Notification::DriftDetected {
                app: e.app.clone(),
                fields: e.fields.clone(),
                changed_by: e.changed_by.clone(),
                policy: app
                    .and_then(|a| a.policy.as_ref())
                    .map(baton_core::drift::policy_word)
                    .unwrap_or_else(|| "report".into()),
            },
            LedgerEvent::Resolved(e) => Notification::DriftResolved { entry: e.clone() },
        }
    }

    /// `sync_failed`, `drift_detected`, `drift_resolved`, `deployment_finished`,
    /// `rollout_rolled_back`.
    pub fn kind(&self) -> &'static str {
        match self {
            Notification::SyncFailed { .. } => "sync_failed",
            Notification::DriftDetected { .. } => "drift_detected",
            Notification::DriftResolved { .. } => "drift_resolved",
            Notification::DeploymentFinished { .. } => "deployment_finished",
            Notification::RolloutRolledBack { .. } => "rollout_rolled_back",
        }
    }

    /// One line: what happened and why.
    pub fn summary(&self) -> String {
        let commit = |c: &Option<String>| {
            c.as_deref()
                .map(|c| format!(" of commit {}", short(c)))
                .unwrap_or_default()
        };
        match self {
            Notification::SyncFailed {
                commit: c,
                error,
                apps,
            } => {
                let which = if apps.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} app(s) failed: {})",
                        apps.len(),
                        apps.iter()
                            .map(|(a, _)| a.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                format!("Sync{} failed: {error}{which}", commit(c))
            }
            Notification::DriftDetected {
                app,
                fields,
                changed_by,
                policy,
            } => {
                let who = changed_by
                    .as_ref()
                    .map(|b| {
                        format!(
                            ", changed by {} via {} at {}",
                            b.client_ip,
                            b.uri,
                            rfc3339(b.at)
                        )
                    })
                    .unwrap_or_default();
                let action = match policy.as_str() {
                    "report" => "reported only".to_string(),
                    "correct" => "Baton will correct it now".to_string(),
                    p => format!("Baton will correct it after the grace period ({p})"),
                };
                format!(
                    "Drift on {app}: {} differ(s) from git{who}; {action}",
                    fields.join(", ")
                )
            }
            Notification::DriftResolved { entry } => format!(
                "Drift on {} resolved ({}) after {}; fields: {}",
                entry.app,
                entry.resolution.map(|r| r.word()).unwrap_or("resolved"),
                human(Duration::from_secs(entry.duration_seconds)),
                entry.fields.join(", ")
            ),
            Notification::DeploymentFinished {
                commit: c,
                apps,
                took,
            } => format!(
                "Deployed{}: {} app(s) in {} ({})",
                commit(c),
                apps.len(),
                human(*took),
                apps.iter()
                    .map(AppId::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Notification::RolloutRolledBack {
                app, commit: c, reason, ..
            } => format!(
                "Rollout of {app} at commit {} rolled back: {reason}; the stable version keeps serving",
                short(c)
            ),
        }
    }
}

fn short(c: &str) -> &str {
    c.get(..12).unwrap_or(c)
}

/// The generic webhook body: `{"event", "owner", "at", "summary", "details"}`; `owner` is null
/// when no repo had loaded yet.
pub fn json_payload(n: &Notification, owner: Option<&str>, at: u64) -> Value {
    let details = match n {
        Notification::SyncFailed {
            commit,
            error,
            apps,
        } => json!({
            "commit": commit, "error": error,
            "apps": apps.iter().map(|(a, why)| json!({"app": a, "reason": why})).collect::<Vec<_>>(),
        }),
        Notification::DriftDetected {
            app,
            fields,
            changed_by,
            policy,
        } => {
            json!({"app": app, "fields": fields, "changed_by": changed_by, "policy": policy})
        }
        Notification::DriftResolved { entry } => serde_json::to_value(entry).unwrap_or(Value::Null),
        Notification::DeploymentFinished { commit, apps, took } => {
            json!({"commit": commit, "apps": apps, "duration_seconds": took.as_secs_f64()})
        }
        Notification::RolloutRolledBack {
            app,
            commit,
            step,
            reason,
            requests,
            errors,
            rate,
        } => json!({
            "app": app, "commit": commit, "step": step, "reason": reason,
            "requests": requests, "errors": errors, "error_rate": rate,
        }),
    };
    json!({"event": n.kind(), "owner": owner, "at": rfc3339(at), "summary": n.summary(), "details": details})
}

/// A Slack incoming-webhook body (also accepted by Mattermost and Rocket.Chat); the text starts
/// with `[owner]` once a repo has loaded.
pub fn slack_payload(n: &Notification, owner: Option<&str>) -> Value {
    let icon = match n {
        Notification::SyncFailed { .. } | Notification::RolloutRolledBack { .. } => ":x:",
        Notification::DriftDetected { .. } => ":warning:",
        Notification::DriftResolved { .. } | Notification::DeploymentFinished { .. } => {
            ":white_check_mark:"
        }
    };
    let text = match owner {
        Some(owner) => format!("{icon} [{owner}] {}", n.summary()),
        None => format!("{icon} {}", n.summary()),
    };
    json!({"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]})
}

/// A payload naming the environment the daemon syncs: `"environment"` in the JSON body, the
/// text of a Slack message prefixed with it. Without an environment the body is unchanged.
pub fn with_environment(mut body: Value, environment: Option<&str>, kind: SinkKind) -> Value {
    let Some(env) = environment else {
        return body;
    };
    match kind {
        SinkKind::Json => {
            if let Value::Object(m) = &mut body {
                m.insert("environment".into(), Value::String(env.into()));
            }
        }
        SinkKind::Slack => {
            let text = body["text"].as_str().unwrap_or_default();
            let text = Value::String(format!("[{env}] {text}"));
            body["text"] = text.clone();
            if let Some(block) = body.pointer_mut("/blocks/0/text/text") {
                *block = text;
            }
        }
    }
    body
}

/// The body format a sink expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    Json,
    Slack,
}

/// Where notifications go.
#[derive(Clone)]
pub struct Sink {
    pub kind: SinkKind,
    /// May contain a token: never logged.
    pub url: String,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("kind", &self.kind)
            .field("url", &"(redacted)")
            .finish()
    }
}

/// Settings of the notifier. The owner named in each notification is not a setting: it is the
/// repo's (`baton.yaml`), as last loaded ([`Notifier::set_owner`]).
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    pub sinks: Vec<Sink>,
    /// Notifications waiting; beyond this they are dropped (and counted).
    pub queue: usize,
    /// Tries per delivery.
    pub attempts: u32,
    /// Wait before the second try; doubled for each further one.
    pub backoff: Duration,
    /// Per request.
    pub timeout: Duration,
    /// The environment the daemon syncs, named in every notification (`None`: none declared).
    pub environment: Option<String>,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        NotifierConfig {
            sinks: Vec::new(),
            queue: 256,
            attempts: 5,
            backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            environment: None,
        }
    }
}

/// A notification on a sink's queue, with the owner it was queued under (a later `baton.yaml`
/// may name another).
type Stamped = (Option<Arc<str>>, Notification);

/// One queue: a sink's delivery task, or a plain channel ([`channel`]).
#[derive(Debug, Clone)]
enum Queue {
    Sink(mpsc::Sender<Stamped>),
    Plain(mpsc::Sender<Notification>),
}

/// The sending side: cheap to clone, never blocks. One queue per sink, so a sink that is down
/// (and being retried) delays nobody else's notifications.
#[derive(Debug, Clone)]
pub struct Notifier {
    queues: Vec<Queue>,
    metrics: Arc<Metrics>,
    /// The repo's owner as last loaded, shared by every clone (the loop and the drift keeper).
    owner: Arc<std::sync::RwLock<Option<Arc<str>>>>,
}

impl Notifier {
    fn new(queues: Vec<Queue>, metrics: Arc<Metrics>) -> Self {
        Notifier {
            queues,
            metrics,
            owner: Arc::default(),
        }
    }

    /// A notifier that sends nowhere (no sinks configured).
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        Notifier::new(Vec::new(), metrics)
    }

    /// The owner of the repo just loaded (`baton.yaml`): named in every notification queued
    /// from now on.
    pub fn set_owner(&self, owner: &str) {
        let mut current = self.owner.write().unwrap_or_else(|e| e.into_inner());
        if current.as_deref() != Some(owner) {
            *current = Some(Arc::from(owner));
        }
    }

    /// Queue `n` for every sink; false (and counted as `dropped` per sink) when a sink's queue
    /// is full or its sender stopped.
    pub fn notify(&self, n: Notification) -> bool {
        let owner = (self.owner.read().unwrap_or_else(|e| e.into_inner())).clone();
        let mut all = !self.queues.is_empty();
        for q in &self.queues {
            let sent = match q {
                Queue::Sink(q) => q.try_send((owner.clone(), n.clone())).is_ok(),
                Queue::Plain(q) => q.try_send(n.clone()).is_ok(),
            };
            if !sent {
                self.metrics.notification("dropped");
                tracing::warn!("notification queue full; notification dropped");
                all = false;
            }
        }
        all
    }
}

/// A notifier feeding a plain channel instead of sinks (for embedding Baton, and for tests).
pub fn channel(capacity: usize, metrics: Arc<Metrics>) -> (Notifier, mpsc::Receiver<Notification>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (Notifier::new(vec![Queue::Plain(tx)], metrics), rx)
}

/// Start one delivery task per sink; the returned task ends when `shutdown` is cancelled
/// (abandoning retries) or every [`Notifier`] is dropped and the queues are drained.
pub fn spawn(
    config: NotifierConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(Notifier, tokio::task::JoinHandle<()>), reqwest::Error> {
    let client = reqwest::Client::builder().timeout(config.timeout).build()?;
    let config = Arc::new(config);
    let mut queues = Vec::new();
    let mut tasks = Vec::new();
    for (i, sink) in config.sinks.iter().cloned().enumerate() {
        let (tx, mut rx) = mpsc::channel::<Stamped>(config.queue.max(1));
        queues.push(Queue::Sink(tx));
        let (client, config, metrics, shutdown) = (
            client.clone(),
            config.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let (owner, n) = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    n = rx.recv() => match n { Some(n) => n, None => break },
                };
                let body = match sink.kind {
                    SinkKind::Json => {
                        json_payload(&n, owner.as_deref(), crate::commands::unix_ms())
                    }
                    SinkKind::Slack => slack_payload(&n, owner.as_deref()),
                };
                let body = with_environment(body, config.environment.as_deref(), sink.kind);
                let ok = deliver(&client, &sink, &body, &config, &shutdown).await;
                metrics.notification(if ok { "sent" } else { "failed" });
                if !ok {
                    tracing::warn!(
                        sink = i,
                        kind = n.kind(),
                        "notification not delivered after {} attempts",
                        config.attempts
                    );
                }
            }
        }));
    }
    let notifier = Notifier::new(queues, metrics);
    let task = tokio::spawn(async move {
        futures::future::join_all(tasks).await;
    });
    Ok((notifier, task))
}

/// POST `body` to `sink`: up to `attempts` tries, waiting `backoff`, `2 x backoff`, `4 x
/// backoff`, ... between them. A 4xx other than 408/429 is final (retrying cannot fix it).
async fn deliver(
    client: &reqwest::Client,
    sink: &Sink,
    body: &Value,
    config: &NotifierConfig,
    shutdown: &CancellationToken,
) -> bool {
    for attempt in 0..config.attempts.max(1) {
        if attempt > 0 {
            let wait = config.backoff.saturating_mul(1 << (attempt - 1).min(16));
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        match client.post(&sink.url).json(body).send().await {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => {
                let s = r.status();
                tracing::debug!(status = s.as_u16(), attempt, "notification sink refused");
                if s.is_client_error() && s.as_u16() != 408 && s.as_u16() != 429 {
                    return false;
                }
            }
            // Without the URL: reqwest errors print it.
            Err(e) => {
                tracing::debug!(error = %e.without_url(), attempt, "notification sink unreachable")
            }
        }
    }
    false
}

#[cfg(test)]
mod tests;
