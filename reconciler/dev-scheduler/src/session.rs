//! Task process sessions, seen through `/proc`.
//!
//! Each task is started as the leader of a session of its own (`setsid`), so its session id is
//! its pid. Everything it starts stays in that session, in whatever process group: a child that
//! `baton-env` puts in a group of its own, a shell's background job with job control on. The
//! only way out is another `setsid`, which daemons use on purpose. Stopping a task therefore
//! signals every process group of its session, found by reading `/proc`.
//!
//! Linux does not hand out a pid again while any process still uses it as its process group or
//! session id, so the processes that carry a task's session id are that task's, for as long as
//! one of them (or its unreaped leader) is left.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// One process, as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    /// Process group id.
    pub pgid: i32,
    /// Session id.
    pub sid: i32,
    /// Start time in clock ticks after boot: with the pid, names one process for good.
    pub start: u64,
    /// Exited, waiting for its parent to reap it: nothing left to stop.
    pub zombie: bool,
}

/// Parse a `/proc/<pid>/stat` line (pure). The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from its closing parenthesis.
pub fn parse_stat(text: &str) -> Option<Proc> {
    let (head, rest) = text.rsplit_once(") ")?;
    let pid = head.split_once(" (")?.0.trim().parse().ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After the name: state (3), ppid (4), pgrp (5), session (6), ..., starttime (22).
    let state = fields.first()?;
    Some(Proc {
        pid,
        pgid: fields.get(2)?.parse().ok()?,
        sid: fields.get(3)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
        zombie: matches!(*state, "Z" | "X"),
    })
}

/// The process `pid`, if it exists.
pub fn stat(pid: i32) -> Option<Proc> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| parse_stat(&t))
}

/// Every process of the machine (of this pid namespace). Processes that end while they are
/// read are left out.
pub fn scan() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// The live (not zombie) processes of session `sid` in `procs`.
pub fn members(procs: &[Proc], sid: i32) -> impl Iterator<Item = &Proc> {
    procs.iter().filter(move |p| p.sid == sid && !p.zombie)
}

/// Send `signal` to every process group of session `sid` found in `procs`; how many groups.
/// A process group never spans sessions, so nothing outside the session is hit.
pub fn signal_session(procs: &[Proc], sid: i32, signal: Signal) -> usize {
    let mut groups: Vec<i32> = members(procs, sid).map(|p| p.pgid).collect();
    groups.sort_unstable();
    groups.dedup();
    for g in &groups {
        let _ = killpg(Pid::from_raw(*g), signal);
    }
    groups.len()
}

/// Whether the environment of `pid` holds `var` (`NAME=value`), as the process was started.
pub fn environ_has(pid: i32, var: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == var.as_bytes()))
}

/// This boot's id: a process start time means nothing across a reboot.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// The sessions of one dev scheduler's running tasks, for the exit that cannot wait for the
/// graceful path: a second Ctrl-C kills them ([`TaskSessions::kill_all`]) just before the
/// process exits, since nothing is dropped then. The caller that runs the scheduler owns it
/// (in [`DevConfig::sessions`](crate::DevConfig::sessions)); clones share one list, and two
/// schedulers in one process keep theirs apart.
#[derive(Clone, Default)]
pub struct TaskSessions {
    live: Arc<Mutex<BTreeSet<i32>>>,
}

impl std::fmt::Debug for TaskSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskSessions")
            .field("live", &self.len())
            .finish()
    }
}

impl TaskSessions {
    fn list(&self) -> std::sync::MutexGuard<'_, BTreeSet<i32>> {
        // A set of integers stays consistent whatever panicked while holding it.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many task sessions run now.
    pub fn len(&self) -> usize {
        self.list().len()
    }

    /// Whether no task session runs.
    pub fn is_empty(&self) -> bool {
        self.list().is_empty()
    }

    /// A task leader started session `sid`.
    pub(crate) fn insert(&self, sid: i32) {
        self.list().insert(sid);
    }

    /// Session `sid` is gone: forgotten, so that a reused id is never signalled.
    pub(crate) fn remove(&self, sid: i32) {
        self.list().remove(&sid);
    }

    /// SIGKILL every process of every task session still running (one walk of `/proc`), and
    /// forget them: for an exit that cannot wait for the graceful path, so that no task process
    /// outlives the dev scheduler. Returns how many sessions there were.
    pub fn kill_all(&self) -> usize {
        let sessions = std::mem::take(&mut *self.list());
        if sessions.is_empty() {
            return 0;
        }
        for s in &sessions {
            let _ = killpg(Pid::from_raw(*s), Signal::SIGKILL);
        }
        let procs = scan();
        for s in &sessions {
            signal_session(&procs, *s, Signal::SIGKILL);
        }
        sessions.len()
    }
}

/// `/proc` walks shared by everyone waiting for sessions to end: a caller gets a walk begun after
/// the moment it names, and callers that queue while one runs share the next, so many tasks
/// stopping at once (a shutdown) cost a few walks rather than one each.
#[derive(Debug, Default)]
pub struct Scans {
    last: tokio::sync::Mutex<Option<(Instant, Arc<Vec<Proc>>)>>,
}

impl Scans {
    /// The processes as a walk begun at or after `since` found them.
    pub async fn after(&self, since: Instant) -> Arc<Vec<Proc>> {
        let mut last = self.last.lock().await;
        if let Some((at, procs)) = last.as_ref() {
            if *at >= since {
                return procs.clone();
            }
        }
        let at = Instant::now();
        let procs = Arc::new(tokio::task::spawn_blocking(scan).await.unwrap_or_default());
        *last = Some((at, procs.clone()));
        procs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_past_odd_command_names() {
        let line = "4242 (a) b (c)) S 1 4240 4239 0 -1 4194560 97 0 0 0 0 0 0 0 20 0 1 0 123456 1000 100 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(line),
            Some(Proc {
                pid: 4242,
                pgid: 4240,
                sid: 4239,
                start: 123456,
                zombie: false
            })
        );
        let zombie = "7 (sh) Z 1 7 7 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0 0";
        assert!(parse_stat(zombie).is_some_and(|p| p.zombie && p.start == 99));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_found_with_its_session() {
        let me = std::process::id() as i32;
        let procs = scan();
        let found = procs.iter().find(|p| p.pid == me).cloned();
        assert_eq!(found, stat(me));
        let sid = nix::unistd::getsid(None).unwrap().as_raw();
        assert!(members(&procs, sid).any(|p| p.pid == me));
    }
}
