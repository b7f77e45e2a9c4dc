//! The task processes of a previous run, ended before a restarted dev scheduler launches any.
//!
//! With a state dir, each running task is recorded in `<state dir>/tasks/<task id>.json`: its
//! session id (the leader's pid), the leader's start time, the boot id and its grace period. The
//! record goes once the task's session is empty. A dev scheduler killed with `kill -9` leaves its
//! tasks running and their records behind; the next start on the same state dir ends those
//! sessions (SIGTERM to the leader's group, so a supervisor such as `baton-env` can forward it,
//! revoke and exit; SIGKILL to every group of the session after the grace period) and waits
//! until they are gone, so no process of the killed run runs beside the new tasks.
//!
//! Ending rather than adopting them: the new run cannot wait for processes it did not start
//! (no exit status, so no `TASK_FAILED` or launch backoff), their environment names a version of
//! the app the restart may not have, and Marathon tasks relaunched after a failover are new tasks
//! too. Records are written without fsync: they only need to survive the scheduler's death, and
//! after a machine crash the processes they name are gone as well.
//!
//! Processes are taken for the task's only when that is certain: the leader is still the process
//! recorded (same pid and start time), or, the leader gone, one of the session's processes has
//! the task's `MESOS_TASK_ID` in its environment. Either shows that the session id was never
//! free since the task started, so it cannot be another session's. A record from another boot
//! is dropped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::session::{self, Proc};

/// Longest grace period honoured at start-up: the API waits for it.
const MAX_GRACE: Duration = Duration::from_secs(30);
/// How long SIGKILLed processes may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// What is known of a running task's processes.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub task_id: String,
    /// Session id = process group id of the leader = the leader's pid.
    pub sid: i32,
    /// The leader's start time (clock ticks after boot).
    pub start: u64,
    pub boot_id: String,
    pub grace: Duration,
}

impl Record {
    fn to_json(&self) -> Value {
        json!({
            "taskId": self.task_id,
            "pid": self.sid,
            "pgid": self.sid,
            "sid": self.sid,
            "startTime": self.start,
            "bootId": self.boot_id,
            "gracePeriodMs": u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX),
        })
    }

    fn from_json(v: &Value) -> Option<Record> {
        Some(Record {
            task_id: v.get("taskId")?.as_str()?.to_string(),
            sid: i32::try_from(v.get("sid")?.as_i64()?).ok()?,
            start: v.get("startTime")?.as_u64()?,
            boot_id: v.get("bootId")?.as_str()?.to_string(),
            grace: Duration::from_millis(v.get("gracePeriodMs")?.as_u64()?),
        })
    }

    /// The processes of `procs` that certainly belong to this task.
    fn processes<'p>(&self, procs: &'p [Proc]) -> Vec<&'p Proc> {
        let leader = procs.iter().find(|p| p.pid == self.sid);
        match leader {
            // The pid was handed out again: the session id was free, so nothing of ours is left.
            Some(l) if l.start != self.start => Vec::new(),
            Some(_) => session::members(procs, self.sid).collect(),
            // The leader gone: one process that names the task shows the session id was
            // never free since, so every process still carrying it is the task's.
            None => {
                let var = format!("MESOS_TASK_ID={}", self.task_id);
                let members: Vec<&Proc> = session::members(procs, self.sid).collect();
                if members.iter().any(|p| session::environ_has(p.pid, &var)) {
                    members
                } else {
                    Vec::new()
                }
            }
        }
    }
}

/// The directory of task records in a state dir.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("tasks")
}

fn path_of(dir: &Path, task_id: &str) -> PathBuf {
    dir.join(format!("{task_id}.json"))
}

/// Record a task that has just been started (temporary file + rename: never half a record).
pub fn record(dir: &Path, r: &Record) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = path_of(dir, &r.task_id);
    let tmp = dir.join(format!(".{}.tmp", r.task_id));
    std::fs::write(&tmp, r.to_json().to_string())?;
    std::fs::rename(&tmp, &path)
}

/// Forget a task whose processes are all gone.
pub fn forget(dir: &Path, task_id: &str) {
    let _ = std::fs::remove_file(path_of(dir, task_id));
}

/// The record of the task process `pid` (just started, so still ours) for `task_id`.
pub fn describe(task_id: &str, pid: i32, grace: Duration) -> Option<Record> {
    Some(Record {
        task_id: task_id.to_string(),
        sid: pid,
        start: session::stat(pid)?.start,
        boot_id: session::boot_id()?,
        grace,
    })
}

/// End every process of the tasks recorded in `dir` (a previous run's), then remove their
/// records. Returns how many processes were found running.
pub async fn end_previous(dir: &Path) -> usize {
    let records = read_all(dir);
    if records.is_empty() {
        return 0;
    }
    let boot = session::boot_id();
    let procs = tokio::task::spawn_blocking(session::scan)
        .await
        .unwrap_or_default();
    let mut found = 0;
    let mut live: Vec<Record> = Vec::new();
    for r in records {
        let mine = if Some(&r.boot_id) == boot.as_ref() {
            r.processes(&procs)
        } else {
            Vec::new()
        };
        if mine.is_empty() {
            forget(dir, &r.task_id);
            continue;
        }
        found += mine.len();
        tracing::warn!(
            task = %r.task_id,
            processes = mine.len(),
            "dev scheduler: ending the processes of a task of a previous run"
        );
        if mine.iter().any(|p| p.pid == r.sid) {
            // Its leader (a supervisor such as baton-env) forwards to the rest.
            let _ = killpg(Pid::from_raw(r.sid), Signal::SIGTERM);
        } else {
            for p in &mine {
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGTERM);
            }
        }
        live.push(r);
    }
    if live.is_empty() {
        return 0;
    }
    let grace = live
        .iter()
        .map(|r| r.grace)
        .max()
        .unwrap_or_default()
        .min(MAX_GRACE);
    let left = wait_gone(&live, grace).await;
    if !left.is_empty() {
        let procs = tokio::task::spawn_blocking(session::scan)
            .await
            .unwrap_or_default();
        for r in &left {
            for p in r.processes(&procs) {
                let _ = killpg(Pid::from_raw(p.pgid), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
            }
        }
        let stuck = wait_gone(&left, KILL_WAIT).await;
        for r in &stuck {
            tracing::warn!(task = %r.task_id, "dev scheduler: processes of a previous run survived SIGKILL");
        }
    }
    for r in &live {
        forget(dir, &r.task_id);
    }
    found
}

/// Wait (up to `limit`) until no process of `records` is left; the records still with some.
async fn wait_gone(records: &[Record], limit: Duration) -> Vec<Record> {
    let end = Instant::now() + limit;
    let mut pause = Duration::from_millis(10);
    loop {
        let procs = tokio::task::spawn_blocking(session::scan)
            .await
            .unwrap_or_default();
        let left: Vec<Record> = records
            .iter()
            .filter(|r| !r.processes(&procs).is_empty())
            .cloned()
            .collect();
        if left.is_empty() || Instant::now() >= end {
            return left;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Every readable record in `dir`; unreadable ones are reported and removed.
fn read_all(dir: &Path) -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            if path.extension().and_then(|x| x.to_str()) == Some("tmp") {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        let parsed = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| Record::from_json(&v));
        match parsed {
            Some(r) => out.push(r),
            None => {
                tracing::warn!(file = %path.display(), "dev scheduler: ignoring an unreadable task record");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: i32, pgid: i32, sid: i32, start: u64) -> Proc {
        Proc {
            pid,
            pgid,
            sid,
            start,
            zombie: false,
        }
    }

    fn record(sid: i32, start: u64) -> Record {
        Record {
            task_id: "app.1".into(),
            sid,
            start,
            boot_id: "b".into(),
            grace: Duration::from_secs(1),
        }
    }

    #[test]
    fn records_round_trip() {
        let r = record(10, 77);
        assert_eq!(Record::from_json(&r.to_json()), Some(r));
        assert_eq!(Record::from_json(&json!({"taskId": "x"})), None);
    }

    /// The leader still the recorded process: its whole session is the task's, every group.
    /// The pid reused by another process: nothing is.
    #[test]
    fn the_session_is_the_tasks_only_while_its_leader_is_the_recorded_one() {
        let procs = vec![
            proc(10, 10, 10, 77),
            proc(11, 11, 10, 78), // baton-env's child, in a group of its own
            proc(12, 12, 12, 5),  // another session
        ];
        let pids = |r: &Record| {
            r.processes(&procs)
                .iter()
                .map(|p| p.pid)
                .collect::<Vec<_>>()
        };
        assert_eq!(pids(&record(10, 77)), [10, 11]);
        assert_eq!(pids(&record(10, 76)), Vec::<i32>::new());
        assert_eq!(pids(&record(12, 1)), Vec::<i32>::new());
    }
}
