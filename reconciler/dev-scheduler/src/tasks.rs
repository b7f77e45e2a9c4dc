//! Tasks: one local process (group) per Marathon task.
//!
//! A task is launched as `/bin/sh -c cmd`, as `args`, or through `docker run` for Docker apps,
//! as the leader of its own session (so a kill reaches everything it started, in any process
//! group: see [`crate::session`]), with the environment
//! Marathon gives tasks (see `docs/task-environment-vars.md`) on top of the scheduler's own (for
//! `PATH` and friends, as a Mesos agent passes its environment on). Output goes to `stdout` and
//! `stderr` files in the task's sandbox directory (`MESOS_SANDBOX`).
//!
//! Killing sends SIGTERM to the leader's process group (a supervisor such as `baton-env` forwards
//! it to its child), then SIGKILL to every process group of the session after
//! `taskKillGracePeriodSeconds`. A task ends when its whole session is gone. Exactly one waiter
//! per child (the launch future) observes its exit and reports it to the [`World`].

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::deploy::{has_health_checks, mark_kill, Decisions};
use crate::events::EventBus;
use crate::health::{self, HealthResult};
use crate::leftovers;
use crate::session::{self, TaskSessions};
use crate::store::{format_system_time, timestamp_now, Backoff, World};
use crate::Shared;

/// Where a task is in its life. Terminal tasks are removed from the [`World`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Decided on, process not started yet.
    Staging,
    Running,
}

impl TaskState {
    fn mesos_name(self, killing: bool) -> &'static str {
        match (self, killing) {
            (_, true) => "TASK_KILLING",
            (TaskState::Staging, false) => "TASK_STAGING",
            (TaskState::Running, false) => "TASK_RUNNING",
        }
    }
}

/// Why the scheduler kills a task; decides how its end is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillReason {
    /// Scaled down or replaced by a new version.
    Scaling,
    /// Its app was deleted.
    Stopped,
    /// Killed through the tasks API.
    Api,
    /// Failed too many health checks; the text is the last failure.
    Unhealthy(String),
    /// The scheduler is shutting down.
    Shutdown,
}

#[derive(Debug)]
pub struct Task {
    pub id: String,
    /// Marathon 1.4+ names instances apart from tasks; health events carry this.
    pub instance_id: String,
    pub app_id: String,
    /// The app version the task was launched with.
    pub version: String,
    /// The app's config (see [`crate::store::config_of`]) the task runs.
    pub config: Value,
    /// The app definition at launch, for the runner.
    pub def: Value,
    pub host_ports: Vec<u16>,
    pub state: TaskState,
    pub staged_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub pid: Option<i32>,
    /// One entry per health check, once it has a result.
    pub health: Vec<Option<HealthResult>>,
    pub kill: Option<KillReason>,
    pub grace: Duration,
    /// Set for `docker run` tasks: the container's name, to remove it on SIGKILL.
    pub container: Option<String>,
    /// Stops the task's health checkers.
    pub stop: CancellationToken,
    /// Cancelled when the task's process has ended (ends a kill's grace period early).
    pub gone: CancellationToken,
}

/// `/a/b` -> `a_b`: the app part of Marathon task ids.
fn id_prefix(app_id: &str) -> String {
    app_id.trim_start_matches('/').replace('/', "_")
}

impl Task {
    pub fn new(app_id: &str, version: &str, config: Value, grace: Duration, def: Value) -> Task {
        let uuid = uuid::Uuid::new_v4();
        let prefix = id_prefix(app_id);
        let checks = def
            .get("healthChecks")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        Task {
            id: format!("{prefix}.{uuid}"),
            instance_id: format!("{prefix}.instance-{uuid}"),
            app_id: app_id.to_string(),
            version: version.to_string(),
            config,
            def,
            host_ports: Vec::new(),
            state: TaskState::Staging,
            staged_at: SystemTime::now(),
            started_at: None,
            pid: None,
            health: vec![None; checks],
            kill: None,
            grace,
            container: None,
            stop: CancellationToken::new(),
            gone: CancellationToken::new(),
        }
    }

    /// Every health check has passed most recently.
    pub fn is_healthy(&self) -> bool {
        !self.health.is_empty()
            && self
                .health
                .iter()
                .all(|h| h.as_ref().is_some_and(|h| h.alive))
    }

    /// Some health check has failed most recently.
    pub fn is_unhealthy(&self) -> bool {
        self.health
            .iter()
            .any(|h| h.as_ref().is_some_and(|h| !h.alive))
    }

    /// The Marathon task JSON (`/v2/tasks`, `/v2/apps/{id}/tasks`, `embed=apps.tasks`).
    pub fn to_json(&self, host: &str, service_ports: &[u16]) -> Value {
        let mut t = json!({
            "id": self.id,
            "appId": self.app_id,
            "host": host,
            "ipAddresses": [{"ipAddress": loopback_ip(host), "protocol": "IPv4"}],
            "ports": self.host_ports,
            "servicePorts": service_ports,
            "slaveId": AGENT_ID,
            "state": self.state.mesos_name(self.kill.is_some()),
            "stagedAt": format_system_time(self.staged_at),
            "version": self.version,
            "localVolumes": [],
            "role": "*",
        });
        if let Some(started) = self.started_at {
            t["startedAt"] = json!(format_system_time(started));
        }
        if has_health_checks(&self.def) {
            let results: Vec<Value> = self
                .health
                .iter()
                .flatten()
                .map(|h| h.to_json(&self.instance_id))
                .collect();
            t["healthCheckResults"] = json!(results);
        }
        t
    }
}

/// The one (pretend) Mesos agent every task runs on.
pub const AGENT_ID: &str = "baton-dev-agent-S0";

fn loopback_ip(host: &str) -> String {
    if host.parse::<std::net::IpAddr>().is_ok() {
        host.to_string()
    } else {
        "127.0.0.1".to_string()
    }
}

/// Service ports of an app, in port order (what tasks report as `servicePorts`).
pub fn service_ports(def: &Value) -> Vec<u16> {
    let slots = if let Some(pds) = def.get("portDefinitions").and_then(Value::as_array) {
        pds.iter().map(|p| p.get("port")).collect::<Vec<_>>()
    } else if let Some(pms) = def
        .pointer("/container/portMappings")
        .and_then(Value::as_array)
    {
        pms.iter().map(|p| p.get("servicePort")).collect()
    } else {
        Vec::new()
    };
    slots
        .into_iter()
        .filter_map(|v| {
            v.and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
        })
        .collect()
}

/// Network mode of an app: true for bridge networking (Docker `-p` mappings).
fn is_bridge(def: &Value) -> bool {
    let mode = def.pointer("/networks/0/mode").and_then(Value::as_str);
    mode == Some("container/bridge")
        || def
            .pointer("/container/docker/network")
            .and_then(Value::as_str)
            == Some("BRIDGE")
}

/// One host port the task needs: its name (for `PORT_<NAME>`), a fixed port or `None` for any,
/// and for bridge networking the container port and protocol it maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct PortNeed {
    pub name: Option<String>,
    pub fixed: Option<u16>,
    pub container_port: Option<u16>,
    pub protocol: String,
}

fn as_port(v: Option<&Value>) -> Option<u16> {
    v.and_then(Value::as_u64)
        .and_then(|n| u16::try_from(n).ok())
}

/// Host ports a task of this app needs (pure).
pub fn port_needs(def: &Value) -> Vec<PortNeed> {
    let mappings = def
        .pointer("/container/portMappings")
        .or_else(|| def.pointer("/container/docker/portMappings"))
        .and_then(Value::as_array);
    let name = |p: &Value| p.get("name").and_then(Value::as_str).map(str::to_string);
    let proto = |p: &Value| {
        p.get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("tcp")
            .to_string()
    };
    let networked = def
        .pointer("/networks/0/mode")
        .and_then(Value::as_str)
        .is_some_and(|m| m != "host")
        || is_bridge(def);
    if let (true, Some(pms)) = (networked, mappings) {
        return pms
            .iter()
            .filter(|p| p.get("hostPort").is_some() || is_bridge(def))
            .map(|p| PortNeed {
                name: name(p),
                fixed: as_port(p.get("hostPort")).filter(|&h| h != 0),
                container_port: as_port(p.get("containerPort")),
                protocol: proto(p),
            })
            .collect();
    }
    let require = def.get("requirePorts").and_then(Value::as_bool) == Some(true);
    def.get("portDefinitions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| PortNeed {
            name: name(p),
            fixed: as_port(p.get("port")).filter(|&h| require && h != 0),
            container_port: None,
            protocol: proto(p),
        })
        .collect()
}

/// Scala's `Double.toString` for whole numbers keeps `.0`; Marathon's env vars show it.
fn scala_double(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.1}"),
        Some(f) => f.to_string(),
        None => v.to_string(),
    }
}

/// Label names become env var suffixes: everything but `A-Za-z0-9_` becomes `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The environment Marathon gives a task (pure). `secret` env values are left out: the dev
/// scheduler has no secret store.
pub fn task_env(
    def: &Value,
    task_id: &str,
    host: &str,
    ports: &[u16],
    needs: &[PortNeed],
    sandbox: &Path,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: String, v: String| env.push((k, v));
    for (i, p) in ports.iter().enumerate() {
        set(format!("PORT{i}"), p.to_string());
        if let Some(name) = needs.get(i).and_then(|n| n.name.as_deref()) {
            set(
                format!("PORT_{}", sanitize(name).to_uppercase()),
                p.to_string(),
            );
        }
    }
    if let Some(first) = ports.first() {
        set("PORT".into(), first.to_string());
    }
    set(
        "PORTS".into(),
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    set("HOST".into(), host.to_string());
    set("MESOS_TASK_ID".into(), task_id.to_string());
    set("MESOS_SANDBOX".into(), sandbox.display().to_string());
    let str_of = |p: &str| {
        def.get(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    set("MARATHON_APP_ID".into(), str_of("id"));
    set("MARATHON_APP_VERSION".into(), str_of("version"));
    if let Some(image) = def
        .pointer("/container/docker/image")
        .and_then(Value::as_str)
    {
        set("MARATHON_APP_DOCKER_IMAGE".into(), image.to_string());
    }
    for (var, key) in [
        ("MARATHON_APP_RESOURCE_CPUS", "cpus"),
        ("MARATHON_APP_RESOURCE_MEM", "mem"),
        ("MARATHON_APP_RESOURCE_DISK", "disk"),
    ] {
        if let Some(v) = def.get(key) {
            set(var.into(), scala_double(v));
        }
    }
    if let Some(v) = def.get("gpus") {
        set(
            "MARATHON_APP_RESOURCE_GPUS".into(),
            v.as_u64().unwrap_or(0).to_string(),
        );
    }
    if let Some(labels) = def.get("labels").and_then(Value::as_object) {
        let mut names = Vec::new();
        for (k, v) in labels {
            let Some(v) = v.as_str() else { continue };
            // Marathon omits keys and values longer than 512 characters.
            if k.len() > 512 || v.len() > 512 {
                continue;
            }
            let k = sanitize(k);
            set(
                format!("MARATHON_APP_LABEL_{}", k.to_uppercase()),
                v.to_string(),
            );
            names.push(k);
        }
        set("MARATHON_APP_LABELS".into(), names.join(" "));
    }
    // The app's own env comes last and wins, as in Marathon.
    if let Some(vars) = def.get("env").and_then(Value::as_object) {
        for (k, v) in vars {
            if let Some(v) = v.as_str() {
                set(k.clone(), v.to_string());
            }
        }
    }
    env
}

/// What to execute for a task (pure): program, arguments, and for Docker the container name.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSpec {
    pub program: String,
    pub args: Vec<String>,
    pub container: Option<String>,
}

/// How a task of this app is started, or why it cannot be.
pub fn command_for(
    def: &Value,
    task_id: &str,
    env: &[(String, String)],
    ports: &[u16],
    needs: &[PortNeed],
) -> Result<CommandSpec, String> {
    let cmd = def.get("cmd").and_then(Value::as_str);
    let args: Vec<String> = def
        .get("args")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let ctype = def.pointer("/container/type").and_then(Value::as_str);
    let image = def
        .pointer("/container/docker/image")
        .and_then(Value::as_str);
    match (ctype, image) {
        (Some("DOCKER"), Some(image)) => {
            let name = format!("baton-dev-{}", task_id.replace(['/', '.'], "-"));
            let mut a: Vec<String> = vec!["run".into(), "--rm".into(), "--name".into(), name.clone()];
            for (k, _) in env {
                // `-e NAME` takes the value from docker's own environment, where we put it.
                a.extend(["-e".into(), k.clone()]);
            }
            if is_bridge(def) {
                for (port, need) in ports.iter().zip(needs) {
                    if let Some(cp) = need.container_port {
                        let cp = if cp == 0 { *port } else { cp };
                        a.extend(["-p".into(), format!("{port}:{cp}/{}", need.protocol)]);
                    }
                }
            } else {
                a.extend(["--network".into(), "host".into()]);
            }
            for v in def
                .pointer("/container/volumes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let (Some(h), Some(c)) = (
                    v.get("hostPath").and_then(Value::as_str),
                    v.get("containerPath").and_then(Value::as_str),
                ) {
                    let mode = if v.get("mode").and_then(Value::as_str) == Some("RO") {
                        "ro"
                    } else {
                        "rw"
                    };
                    a.extend(["-v".into(), format!("{h}:{c}:{mode}")]);
                }
            }
            if def.pointer("/container/docker/privileged").and_then(Value::as_bool) == Some(true) {
                a.push("--privileged".into());
            }
            for p in def
                .pointer("/container/docker/parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let (Some(k), Some(v)) = (
                    p.get("key").and_then(Value::as_str),
                    p.get("value").and_then(Value::as_str),
                ) {
                    a.push(format!("--{k}={v}"));
                }
            }
            if let Some(c) = cmd {
                a.extend(["--entrypoint".into(), "/bin/sh".into(), image.into(), "-c".into(), c.into()]);
            } else {
                a.push(image.into());
                a.extend(args);
            }
            Ok(CommandSpec {
                program: "docker".into(),
                args: a,
                container: Some(name),
            })
        }
        (Some("DOCKER"), None) => Err("container.docker.image is missing".into()),
        (Some(_), Some(image)) => Err(format!(
            "the dev scheduler cannot run image {image} with the Mesos containerizer (use container.type DOCKER)"
        )),
        _ => match (cmd, args.split_first()) {
            (Some(c), _) => Ok(CommandSpec {
                program: "/bin/sh".into(),
                args: vec!["-c".into(), c.into()],
                container: None,
            }),
            (None, Some((program, rest))) => Ok(CommandSpec {
                program: program.clone(),
                args: rest.to_vec(),
                container: None,
            }),
            (None, None) => Err("the app has neither cmd, args nor a Docker image".into()),
        },
    }
}

/// A host port nobody listens on right now (the kernel picks it).
fn free_port(host: &str) -> Result<u16, String> {
    let addr = if host.parse::<std::net::IpAddr>().is_ok() {
        host
    } else {
        "0.0.0.0"
    };
    std::net::TcpListener::bind((addr, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free host port: {e}"))
}

/// Is a Docker engine reachable? (`docker info`, bounded.)
async fn docker_reachable() -> Result<(), String> {
    let run = tokio::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Ok(Err(e)) => Err(format!("cannot run docker: {e}")),
        Err(_) => Err("`docker info` did not answer within 10s".into()),
    }
}

/// Send `signal` to the task leader's process group; a group that is gone already is fine.
fn signal_group(pid: i32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pid), signal);
}

/// Start the task as the leader of a new session (and so of a new process group): its session
/// id is its pid, and everything it starts stays in that session whatever process group it
/// moves to (see [`session`]).
#[allow(unsafe_code)]
fn new_session(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2), which
    // is async-signal-safe; it allocates nothing and touches no state of the parent.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
}

/// Kills a task's session when dropped: the last resort that keeps an aborted dev scheduler
/// from leaving processes behind (a normal end has killed and waited for it already). The
/// session is listed in the scheduler's [`TaskSessions`] while it runs.
struct SessionGuard {
    sid: i32,
    sessions: TaskSessions,
    /// Cleared once the session is gone: then dropping it signals nothing.
    armed: bool,
}

impl SessionGuard {
    fn new(sid: i32, sessions: &TaskSessions) -> Self {
        sessions.insert(sid);
        SessionGuard {
            sid,
            sessions: sessions.clone(),
            armed: true,
        }
    }

    /// The session is gone: forget it, so a reused id is never signalled.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.sid, Signal::SIGKILL);
            session::signal_session(&session::scan(), self.sid, Signal::SIGKILL);
        }
        self.sessions.remove(self.sid);
    }
}

/// Longest wait for a SIGKILLed session to disappear (a process in uninterruptible sleep).
const SESSION_KILL_WAIT: Duration = Duration::from_secs(10);

/// After the task's leader has exited: return once no process of its session is left.
///
/// What a task that ended by itself left behind is killed at once, as with a Mesos container.
/// A task being killed keeps the rest of its grace period (its kill timer sends SIGKILL to the
/// whole session when it runs out): a supervisor such as `baton-env` may outlive the shell
/// that started it while it stops its child and revokes its credentials.
async fn end_session(shared: &Arc<Shared>, task_id: &str, sid: i32) {
    let leader_gone = Instant::now();
    let mut pause = Duration::from_millis(10);
    let mut sigkill_since: Option<Instant> = None;
    loop {
        let procs = shared.scans.after(Instant::now()).await;
        if session::members(&procs, sid).next().is_none() {
            return;
        }
        let (killing, grace) = shared
            .lock()
            .tasks
            .get(task_id)
            .map_or((false, Duration::ZERO), |t| (t.kill.is_some(), t.grace));
        if !killing || leader_gone.elapsed() >= grace {
            // Again on every round: a process may have forked into a new group meanwhile.
            session::signal_session(&procs, sid, Signal::SIGKILL);
            let since = *sigkill_since.get_or_insert_with(Instant::now);
            if since.elapsed() > SESSION_KILL_WAIT {
                tracing::warn!(
                    task = task_id,
                    session = sid,
                    "dev scheduler: processes of a task survived SIGKILL"
                );
                return;
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Start the tasks [`crate::deploy::step`] decided on and kill the ones it marked.
pub fn execute(shared: &Arc<Shared>, decisions: Decisions) {
    for task_id in decisions.kill {
        kill(shared, &task_id);
    }
    for task_id in decisions.launch {
        let s = shared.clone();
        shared
            .tracker
            .spawn(async move { run_task(s, task_id).await });
    }
}

/// Begin killing a task already marked with a [`KillReason`]: SIGTERM to its group now, SIGKILL
/// after its grace period if it is still there. A task not started yet is killed when it starts.
pub fn kill(shared: &Arc<Shared>, task_id: &str) {
    let (pid, grace, container, gone) = {
        let mut world = shared.lock();
        let Some(t) = world.tasks.get_mut(task_id) else {
            return;
        };
        t.stop.cancel();
        let Some(pid) = t.pid else { return };
        let snapshot = (pid, t.grace, t.container.clone(), t.gone.clone());
        let event = status_event(t, "TASK_KILLING", "", &shared.config.hostname);
        drop(world);
        shared.bus.publish("status_update_event", event);
        snapshot
    };
    signal_group(pid, Signal::SIGTERM);
    let s = shared.clone();
    let id = task_id.to_string();
    shared.tracker.spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            // Ended within its grace period: nothing left to kill (and shutdown need not wait).
            _ = gone.cancelled() => return,
        }
        let still_there = s.lock().tasks.get(&id).is_some_and(|t| t.pid == Some(pid));
        if still_there {
            // Every group of the session: the leader's, and those its processes moved to.
            signal_group(pid, Signal::SIGKILL);
            let procs = s.scans.after(Instant::now()).await;
            session::signal_session(&procs, pid, Signal::SIGKILL);
            if let Some(name) = container {
                remove_container(&name).await;
            }
        }
    });
}

async fn remove_container(name: &str) {
    let run = tokio::process::Command::new("docker")
        .args(["rm", "-f", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(20), run).await;
}

fn status_event(t: &Task, status: &str, message: &str, host: &str) -> Value {
    json!({
        "slaveId": AGENT_ID,
        "taskId": t.id,
        "taskStatus": status,
        "message": message,
        "appId": t.app_id,
        "host": host,
        "ports": t.host_ports,
        "version": t.version,
    })
}

/// Sandbox of a task: `<sandbox root>/<task id>`.
fn sandbox_of(root: &Path, task_id: &str) -> PathBuf {
    root.join(task_id)
}

/// Launch one staged task and wait for it to end: the only waiter of its process.
async fn run_task(shared: Arc<Shared>, task_id: String) {
    let host = shared.config.hostname.clone();
    let Some(def) = shared.lock().tasks.get(&task_id).map(|t| t.def.clone()) else {
        return;
    };
    let prepared = prepare(&shared, &def, &task_id, &host).await;
    let (spec, env, ports, sandbox) = match prepared {
        Ok(p) => p,
        Err(message) => {
            let mut world = shared.lock();
            finish(
                &mut world,
                &shared.bus,
                &task_id,
                Exit::LaunchFailed(message),
                &host,
            );
            drop(world);
            shared.wake.notify_one();
            return;
        }
    };
    let stdout = std::fs::File::create(sandbox.join("stdout"));
    let stderr = std::fs::File::create(sandbox.join("stderr"));
    let mut command = tokio::process::Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&sandbox)
        .stdin(Stdio::null())
        .stdout(stdout.map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
        .stderr(stderr.map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
        .kill_on_drop(true);
    new_session(&mut command);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            let message = format!("Failed to launch `{}`: {e}", spec.program);
            let mut world = shared.lock();
            finish(
                &mut world,
                &shared.bus,
                &task_id,
                Exit::LaunchFailed(message),
                &host,
            );
            drop(world);
            shared.wake.notify_one();
            return;
        }
    };
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    // Should this future be dropped (runtime torn down without a shutdown), the session goes too.
    let mut guard = pid.map(|pid| SessionGuard::new(pid, &shared.config.sessions));
    // With a state dir, a restart after `kill -9` finds this task's processes (leftovers).
    let recorded = match (&shared.task_records, pid) {
        (Some(dir), Some(pid)) => {
            let grace = shared
                .lock()
                .tasks
                .get(&task_id)
                .map_or(Duration::ZERO, |t| t.grace);
            match leftovers::describe(&task_id, pid, grace).map(|r| leftovers::record(dir, &r)) {
                Some(Ok(())) => Some(dir.clone()),
                Some(Err(e)) => {
                    tracing::warn!(task = %task_id, error = %e, "dev scheduler: cannot record the task's process; a restart after a crash would not find it");
                    None
                }
                None => None,
            }
        }
        _ => None,
    };
    let kill_now = {
        let mut world = shared.lock();
        match world.tasks.get_mut(&task_id) {
            Some(t) => {
                t.pid = pid;
                t.host_ports = ports;
                t.container = spec.container.clone();
                t.state = TaskState::Running;
                t.started_at = Some(SystemTime::now());
                let event = status_event(t, "TASK_RUNNING", "", &host);
                let checks = health::start(&shared, t);
                let kill_now = t.kill.is_some() || shared.shutdown.is_cancelled();
                if shared.shutdown.is_cancelled() && t.kill.is_none() {
                    t.kill = Some(KillReason::Shutdown);
                }
                drop(world);
                shared.bus.publish("status_update_event", event);
                for c in checks {
                    shared.tracker.spawn(c);
                }
                kill_now
            }
            // Removed while starting (cannot happen today): do not leave it running.
            None => true,
        }
    };
    if kill_now {
        kill(&shared, &task_id);
        if let Some(pid) = pid {
            // The task may have vanished from the world; make sure the group goes anyway.
            signal_group(pid, Signal::SIGTERM);
        }
    }
    let status = child.wait().await;
    if let Some(pid) = pid {
        end_session(&shared, &task_id, pid).await;
    }
    if let Some(g) = guard.take() {
        g.disarm();
    }
    if let Some(dir) = recorded {
        leftovers::forget(&dir, &task_id);
    }
    if let Some(name) = &spec.container {
        if status.as_ref().map_or(true, |s| !s.success()) {
            remove_container(name).await;
        }
    }
    let exit = match status {
        Ok(s) => Exit::Exited(s),
        Err(e) => Exit::LaunchFailed(format!("lost track of the process: {e}")),
    };
    let mut world = shared.lock();
    finish(&mut world, &shared.bus, &task_id, exit, &host);
    drop(world);
    shared.wake.notify_one();
}

type Prepared = (CommandSpec, Vec<(String, String)>, Vec<u16>, PathBuf);

/// Ports, sandbox, environment and command of a task about to start.
async fn prepare(
    shared: &Shared,
    def: &Value,
    task_id: &str,
    host: &str,
) -> Result<Prepared, String> {
    let needs = port_needs(def);
    let mut ports = Vec::with_capacity(needs.len());
    for need in &needs {
        let port = match need.fixed {
            Some(p) => p,
            None => free_port(host)?,
        };
        ports.push(port);
    }
    let sandbox = sandbox_of(&shared.sandbox_root, task_id);
    std::fs::create_dir_all(&sandbox)
        .map_err(|e| format!("cannot create sandbox {}: {e}", sandbox.display()))?;
    let env = task_env(def, task_id, host, &ports, &needs, &sandbox);
    let spec = command_for(def, task_id, &env, &ports, &needs)?;
    if spec.container.is_some() {
        docker_reachable().await.map_err(|why| {
            format!("Docker engine is not reachable, cannot run container.docker.image: {why}")
        })?;
    }
    Ok((spec, env, ports, sandbox))
}

/// How a task ended.
#[derive(Debug)]
pub enum Exit {
    Exited(ExitStatus),
    /// It could not be started (or watched) at all.
    LaunchFailed(String),
}

fn describe(status: &ExitStatus) -> (bool, String) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => (true, "Command exited with status 0".to_string()),
        (Some(c), _) => (false, format!("Command exited with status {c}")),
        (None, Some(sig)) => {
            let name =
                Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.as_str().to_string());
            (false, format!("Command terminated with signal {name}"))
        }
        (None, None) => (false, "Command ended".to_string()),
    }
}

/// Record the end of a task: status event, `lastTaskFailure` and launch backoff for an end the
/// scheduler did not ask for.
pub fn finish(world: &mut World, bus: &EventBus, task_id: &str, exit: Exit, host: &str) {
    let Some(task) = world.tasks.remove(task_id) else {
        return;
    };
    task.stop.cancel();
    task.gone.cancel();
    let (state, message) = match (&task.kill, &exit) {
        (Some(KillReason::Unhealthy(why)), _) => (
            "TASK_KILLED",
            format!("Task was killed since health check failed. Reason: {why}"),
        ),
        (Some(_), _) => ("TASK_KILLED", String::new()),
        (None, Exit::LaunchFailed(m)) => ("TASK_FAILED", m.clone()),
        (None, Exit::Exited(s)) => {
            let (ok, m) = describe(s);
            (if ok { "TASK_FINISHED" } else { "TASK_FAILED" }, m)
        }
    };
    bus.publish(
        "status_update_event",
        status_event(&task, state, &message, host),
    );
    let failed = matches!(task.kill, None | Some(KillReason::Unhealthy(_)));
    if !failed {
        return;
    }
    let Some(record) = world.apps.get_mut(&task.app_id) else {
        return;
    };
    record.last_task_failure = Some(json!({
        "appId": task.app_id,
        "host": host,
        "message": message,
        "state": state,
        "taskId": task.id,
        "timestamp": timestamp_now(),
        "version": task.version,
        "slaveId": AGENT_ID,
    }));
    // Only a failure of the current config delays launches of it.
    if task.config != crate::store::config_of(&record.def) {
        return;
    }
    let def = &record.def;
    let base = def
        .get("backoffSeconds")
        .and_then(Value::as_f64)
        .unwrap_or(1.0)
        .max(0.0);
    let factor = def
        .get("backoffFactor")
        .and_then(Value::as_f64)
        .unwrap_or(1.15)
        .max(1.0);
    let max = def
        .get("maxLaunchDelaySeconds")
        .and_then(Value::as_f64)
        .unwrap_or(300.0)
        .max(0.0);
    let delay = record
        .backoff
        .as_ref()
        .map_or(Duration::from_secs_f64(base.min(max)), |b| b.next_delay);
    let next = Duration::from_secs_f64((delay.as_secs_f64() * factor).min(max));
    record.backoff = Some(Backoff {
        next_delay: next,
        until: Instant::now() + delay,
    });
}

/// Mark every task for killing and start the kills (shutdown).
pub fn kill_all(shared: &Arc<Shared>) {
    let mut d = Decisions::default();
    {
        let mut world = shared.lock();
        let ids: Vec<String> = world.tasks.keys().cloned().collect();
        for id in ids {
            mark_kill(&mut world, &id, KillReason::Shutdown, &mut d);
        }
    }
    for id in d.kill {
        kill(shared, &id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_has_marathon_variables() {
        let def = json!({"id": "/web/api", "version": "2020-01-01T00:00:00.000Z", "cpus": 0.5, "mem": 64,
            "labels": {"baton.dev/owner": "me"}, "env": {"FOO": "bar", "S": {"secret": "s"}},
            "portDefinitions": [{"port": 10000, "name": "http"}, {"port": 10001}]});
        let needs = port_needs(&def);
        assert_eq!(needs.len(), 2);
        let env = task_env(
            &def,
            "web_api.x",
            "localhost",
            &[31000, 31001],
            &needs,
            Path::new("/sb"),
        );
        let get = |k: &str| {
            env.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("PORT0"), Some("31000"));
        assert_eq!(get("PORT"), Some("31000"));
        assert_eq!(get("PORT_HTTP"), Some("31000"));
        assert_eq!(get("PORTS"), Some("31000,31001"));
        assert_eq!(get("HOST"), Some("localhost"));
        assert_eq!(get("MESOS_TASK_ID"), Some("web_api.x"));
        assert_eq!(get("MARATHON_APP_ID"), Some("/web/api"));
        assert_eq!(get("MARATHON_APP_RESOURCE_MEM"), Some("64.0"));
        assert_eq!(get("MARATHON_APP_LABEL_BATON_DEV_OWNER"), Some("me"));
        assert_eq!(get("FOO"), Some("bar"));
        assert_eq!(get("S"), None, "secrets are not resolved");
    }

    #[test]
    fn commands() {
        let sh = command_for(&json!({"cmd": "sleep 1"}), "t", &[], &[], &[]).unwrap();
        assert_eq!((sh.program.as_str(), sh.args.len()), ("/bin/sh", 2));
        let args = command_for(&json!({"args": ["sleep", "1"]}), "t", &[], &[], &[]).unwrap();
        assert_eq!(args.program, "sleep");
        let docker = json!({"container": {"type": "DOCKER", "docker": {"image": "nginx"},
            "portMappings": [{"containerPort": 80, "hostPort": 0}]}, "networks": [{"mode": "container/bridge"}]});
        let needs = port_needs(&docker);
        let spec = command_for(
            &docker,
            "t.1",
            &[("PORT0".into(), "1".into())],
            &[31000],
            &needs,
        )
        .unwrap();
        assert_eq!(spec.program, "docker");
        assert!(
            spec.args.contains(&"31000:80/tcp".to_string()),
            "{:?}",
            spec.args
        );
        assert!(command_for(
            &json!({"container": {"type": "MESOS", "docker": {"image": "x"}}}),
            "t",
            &[],
            &[],
            &[]
        )
        .is_err());
    }
}
