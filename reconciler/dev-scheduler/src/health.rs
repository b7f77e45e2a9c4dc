//! Health checks of running tasks: HTTP(S), TCP and COMMAND (and their `MESOS_*` forms), as in
//! Marathon's `docs/health-checks.md`.
//!
//! One checker future per task and check: first check at once (after `delaySeconds` for the
//! Mesos-side kinds), then every `intervalSeconds`, each bounded by `timeoutSeconds`. Failures
//! before the first success within `gracePeriodSeconds` are shown but not counted; after
//! `maxConsecutiveFailures` counted failures (0 = never) the task is killed and relaunched.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::deploy::{mark_kill, Decisions};
use crate::store::timestamp_now;
use crate::tasks::{self, port_needs, task_env, KillReason, Task};
use crate::Shared;

/// The latest result of one check of one task (Marathon's `healthCheckResults` item).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthResult {
    pub alive: bool,
    pub consecutive_failures: u32,
    pub first_success: Option<String>,
    pub last_success: Option<String>,
    pub last_failure: Option<String>,
    pub last_failure_cause: Option<String>,
}

impl HealthResult {
    pub fn to_json(&self, instance_id: &str) -> Value {
        json!({
            "alive": self.alive,
            "consecutiveFailures": self.consecutive_failures,
            "firstSuccess": self.first_success,
            "lastFailure": self.last_failure,
            "lastSuccess": self.last_success,
            "lastFailureCause": self.last_failure_cause,
            "instanceId": instance_id,
        })
    }
}

/// What a check probes.
#[derive(Debug, Clone)]
enum Probe {
    Http {
        url: String,
    },
    Tcp {
        addr: String,
    },
    Command {
        command: String,
        env: Vec<(String, String)>,
        dir: PathBuf,
    },
    /// The check cannot run (e.g. no such port); every attempt fails with this.
    Broken(String),
}

#[derive(Debug, Clone)]
struct Check {
    index: usize,
    probe: Probe,
    delay: Duration,
    grace: Duration,
    interval: Duration,
    timeout: Duration,
    max_failures: u32,
}

fn secs(hc: &Value, key: &str, default: f64) -> Duration {
    let s = hc.get(key).and_then(Value::as_f64).unwrap_or(default);
    Duration::from_secs_f64(if s.is_finite() && s >= 0.0 {
        s
    } else {
        default
    })
}

/// The check `hc` of a task with these host ports (pure).
fn check_of(index: usize, hc: &Value, task: &Task, host: &str, sandbox: PathBuf) -> Check {
    let protocol = hc.get("protocol").and_then(Value::as_str).unwrap_or("HTTP");
    let needs = port_needs(&task.def);
    let port = if let Some(p) = hc.get("port").and_then(Value::as_u64) {
        u16::try_from(p).ok()
    } else if let Some(name) = hc.get("portName").and_then(Value::as_str) {
        needs
            .iter()
            .position(|n| n.name.as_deref() == Some(name))
            .and_then(|i| task.host_ports.get(i).copied())
    } else {
        let i = hc.get("portIndex").and_then(Value::as_u64).unwrap_or(0);
        usize::try_from(i)
            .ok()
            .and_then(|i| task.host_ports.get(i).copied())
    };
    let mesos_side = protocol.starts_with("MESOS_") || protocol == "COMMAND";
    let probe = match (protocol, port) {
        ("COMMAND", _) => match hc.pointer("/command/value").and_then(Value::as_str) {
            Some(c) => Probe::Command {
                command: c.to_string(),
                env: task_env(
                    &task.def,
                    &task.id,
                    host,
                    &task.host_ports,
                    &needs,
                    &sandbox,
                ),
                dir: sandbox,
            },
            None => Probe::Broken("COMMAND health check without command.value".into()),
        },
        ("HTTP" | "HTTPS" | "MESOS_HTTP" | "MESOS_HTTPS", Some(port)) => {
            let scheme = if protocol.ends_with('S') {
                "https"
            } else {
                "http"
            };
            let path = hc.get("path").and_then(Value::as_str).unwrap_or("/");
            Probe::Http {
                url: format!("{scheme}://{host}:{port}{path}"),
            }
        }
        ("TCP" | "MESOS_TCP", Some(port)) => Probe::Tcp {
            addr: format!("{host}:{port}"),
        },
        (_, None) => Probe::Broken(format!("{protocol} health check has no port to probe")),
        (other, _) => Probe::Broken(format!("unknown health check protocol {other}")),
    };
    Check {
        index,
        probe,
        delay: if mesos_side {
            secs(hc, "delaySeconds", 15.0)
        } else {
            Duration::ZERO
        },
        grace: secs(hc, "gracePeriodSeconds", 300.0),
        interval: secs(hc, "intervalSeconds", 60.0).max(Duration::from_millis(100)),
        timeout: secs(hc, "timeoutSeconds", 20.0).max(Duration::from_millis(100)),
        max_failures: hc
            .get("maxConsecutiveFailures")
            .and_then(Value::as_u64)
            .map_or(3, |n| u32::try_from(n).unwrap_or(u32::MAX)),
    }
}

pub type Checker = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The checker futures of a task that just started running.
pub fn start(shared: &Arc<Shared>, task: &Task) -> Vec<Checker> {
    let checks = task
        .def
        .get("healthChecks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let sandbox = shared.sandbox_root.join(&task.id);
    checks
        .iter()
        .enumerate()
        .map(|(i, hc)| {
            let check = check_of(i, hc, task, &shared.config.hostname, sandbox.clone());
            let fut: Checker = Box::pin(run_check(
                shared.clone(),
                task.id.clone(),
                task.stop.clone(),
                check,
            ));
            fut
        })
        .collect()
}

async fn run_check(shared: Arc<Shared>, task_id: String, stop: CancellationToken, check: Check) {
    let started = Instant::now();
    let mut next = started + check.delay;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next.into()) => {}
        }
        let outcome = match tokio::time::timeout(check.timeout, probe(&shared, &check.probe)).await
        {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {}s", check.timeout.as_secs_f64())),
        };
        if stop.is_cancelled() {
            return;
        }
        record(
            &shared,
            &task_id,
            &check,
            outcome,
            started.elapsed() < check.grace,
        );
        next = Instant::now() + check.interval;
    }
}

/// Store a check's outcome on the task; publish health changes; kill a task that failed too often.
fn record(
    shared: &Arc<Shared>,
    task_id: &str,
    check: &Check,
    outcome: Result<(), String>,
    in_grace: bool,
) {
    let now = timestamp_now();
    let mut events = Vec::new();
    let mut decisions = Decisions::default();
    {
        let mut world = shared.lock();
        let Some(task) = world.tasks.get_mut(task_id) else {
            return;
        };
        if task.kill.is_some() {
            return;
        }
        let Some(slot) = task.health.get_mut(check.index) else {
            return;
        };
        let before = slot.as_ref().map(|r| r.alive);
        let mut r = slot.clone().unwrap_or(HealthResult {
            alive: false,
            consecutive_failures: 0,
            first_success: None,
            last_success: None,
            last_failure: None,
            last_failure_cause: None,
        });
        let mut kill_cause = None;
        match outcome {
            Ok(()) => {
                r.alive = true;
                r.consecutive_failures = 0;
                r.first_success.get_or_insert_with(|| now.clone());
                r.last_success = Some(now.clone());
            }
            Err(cause) => {
                r.alive = false;
                r.last_failure = Some(now.clone());
                r.last_failure_cause = Some(cause.clone());
                // Marathon ignores failures during the grace period until the first success.
                if !(in_grace && r.first_success.is_none()) {
                    r.consecutive_failures += 1;
                    if check.max_failures > 0 && r.consecutive_failures >= check.max_failures {
                        kill_cause = Some(cause);
                    }
                }
            }
        }
        let alive = r.alive;
        *slot = Some(r);
        if before != Some(alive) {
            events.push((
                "health_status_changed_event",
                json!({"appId": task.app_id, "taskId": task.id, "instanceId": task.instance_id,
                       "version": task.version, "alive": alive}),
            ));
        }
        if let Some(cause) = kill_cause {
            events.push((
                "unhealthy_task_kill_event",
                json!({"appId": task.app_id, "taskId": task.id, "instanceId": task.instance_id,
                       "version": task.version, "reason": cause, "host": shared.config.hostname,
                       "slaveId": tasks::AGENT_ID}),
            ));
            mark_kill(
                &mut world,
                task_id,
                KillReason::Unhealthy(cause),
                &mut decisions,
            );
        }
    }
    for (kind, body) in events {
        shared.bus.publish(kind, body);
    }
    tasks::execute(shared, decisions);
    shared.wake.notify_one();
}

async fn probe(shared: &Shared, probe: &Probe) -> Result<(), String> {
    match probe {
        Probe::Http { url } => {
            let resp = shared
                .http
                .get(url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            if status.is_success() || status.is_redirection() {
                Ok(())
            } else {
                Err(format!("{status}"))
            }
        }
        Probe::Tcp { addr } => tokio::net::TcpStream::connect(addr)
            .await
            .map(|_| ())
            .map_err(|e| format!("connect to {addr}: {e}")),
        Probe::Command { command, env, dir } => {
            let status = tokio::process::Command::new("/bin/sh")
                .args(["-c", command])
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|e| format!("cannot run the command: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("command exited with {status}"))
            }
        }
        Probe::Broken(why) => Err(why.clone()),
    }
}
