//! What `baton serve` remembers across restarts, as data: the last fetched and last synced
//! revisions, the last applied commit and last error per app, the backoff of a failed commit
//! and of a lost write written again, and a ring buffer of recent syncs. The cycle rule reads
//! it ([`super::decide`]); the daemon loads and saves it (`baton::daemon::state`).
//!
//! Pure bookkeeping: time comes in as `now_ms` (Unix milliseconds).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Recent syncs kept.
pub const HISTORY: usize = 50;
/// First retry of a failed commit after this long; doubled per attempt up to [`RETRY_MAX`].
pub const RETRY_BASE: Duration = Duration::from_secs(10);
pub const RETRY_MAX: Duration = Duration::from_secs(600);

/// The version of the state file this code reads and writes.
pub const VERSION: u32 = 1;

/// The persisted state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub version: u32,
    /// The commit last fetched and loaded successfully (the "last good" snapshot).
    pub last_fetched: Option<String>,
    /// The revision whose sync last ran to the end (failed apps are then retried by their own
    /// backoff). A poll at this revision only reports drift; it does not re-apply.
    #[serde(default)]
    pub last_synced: Option<String>,
    /// Per app id (`/group/app`).
    pub apps: BTreeMap<String, AppState>,
    /// Most recent last.
    pub history: VecDeque<SyncRecord>,
    /// Rollouts in progress, per stable app id (`crate::rollout`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rollouts: BTreeMap<String, crate::rollout::RolloutState>,
}

/// What is known about one app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppState {
    /// The commit whose definition was last applied successfully (or found already in place).
    pub last_applied: Option<String>,
    /// The last error applying this app; cleared by a success.
    pub last_error: Option<String>,
    /// A commit whose apply failed for this app, and when it may be tried again.
    pub failure: Option<Failure>,
    /// A commit written again because the app was found back at an older definition of
    /// Baton's (a write the scheduler lost), and when it may be written again: the same loss at
    /// the same commit backs off, so Baton never fights another writer in a loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Failure>,
    /// The last rollout of this app that was rolled back: its definition is not rolled out
    /// again (no retry loop) until it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<RolledBack>,
}

/// A rollout that was rolled back, as remembered per app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolledBack {
    pub commit: String,
    /// The digest of the definition rolled back.
    pub digest: String,
    pub reason: crate::rollout::Reason,
    pub at_ms: u64,
}

/// Backoff bookkeeping of a failed commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub commit: String,
    pub attempts: u32,
    /// Unix ms before which the commit is not tried again for this app.
    pub retry_at_ms: u64,
}

/// How a sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Everything planned was applied (or nothing needed to be).
    Synced,
    /// Some apps failed; the others were applied.
    Partial,
    /// Nothing could be done (fetch, load or scheduler error).
    Failed,
    /// `--sync=manual`: planned and reported, not applied.
    Planned,
    /// Stopped by shutdown.
    Abandoned,
}

/// One sync in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRecord {
    pub started_ms: u64,
    pub finished_ms: u64,
    /// What woke the loop (`webhook`, `poll`, ...).
    pub trigger: String,
    pub commit: Option<String>,
    pub outcome: Outcome,
    /// Writes planned (creates + updates + deletes).
    pub changes: usize,
    /// Deletions withheld (delete budget, empty or incomplete repo, `baton.prune: false`).
    #[serde(default)]
    pub held: usize,
    /// Apps whose spec is invalid (left untouched).
    #[serde(default)]
    pub invalid: usize,
    pub error: Option<String>,
    /// The author of `commit` (git sources; absent for a directory or an older state file).
    #[serde(default)]
    pub author: Option<String>,
    /// The first line of `commit`'s message.
    #[serde(default)]
    pub message: Option<String>,
    /// The `POST /api/sync` requests this cycle served (a manual sync), so a client that
    /// asked can find its outcome; absent for other cycles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<SyncRequests>,
}

/// `POST /api/sync` requests served by one cycle: every id from `first` to `last` (each
/// request got an id in its answer; requests that arrive while a cycle waits are served
/// together), and the apps they named (`None`: all of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRequests {
    pub first: u64,
    pub last: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps: Option<Vec<String>>,
}

impl SyncRequests {
    /// Whether request `id` was served by this cycle.
    pub fn served(&self, id: u64) -> bool {
        (self.first..=self.last).contains(&id)
    }
}

impl State {
    pub fn new() -> Self {
        State {
            version: VERSION,
            ..State::default()
        }
    }

    /// Whether `commit` may be applied to `app` at `now_ms`: false only while an earlier failure
    /// of this very commit is backing off. A newer commit always may (it supersedes).
    pub fn may_apply(&self, app: &str, commit: &str, now_ms: u64) -> bool {
        match self.apps.get(app).and_then(|a| a.failure.as_ref()) {
            Some(f) if f.commit == commit => now_ms >= f.retry_at_ms,
            _ => true,
        }
    }

    /// Whether this daemon ever deployed `app` (or found it in place): a missing app it never
    /// deployed is new in git, not gone from the scheduler.
    pub fn deployed(&self, app: &str) -> bool {
        self.apps.get(app).is_some_and(|a| a.last_applied.is_some())
    }

    /// Whether `app`, found back at an older definition, may be written again at `commit` now:
    /// false only while an earlier rewrite of this very commit backs off.
    pub fn may_rewrite(&self, app: &str, commit: &str, now_ms: u64) -> bool {
        match self.apps.get(app).and_then(|a| a.rewrite.as_ref()) {
            Some(r) if r.commit == commit => now_ms >= r.retry_at_ms,
            _ => true,
        }
    }

    /// `app` is written again at `commit` because its write was lost: the next rewrite of the
    /// same commit waits `RETRY_BASE * 2^(n-1)`, capped at `RETRY_MAX` (n: rewrites so far).
    pub fn record_rewrite(&mut self, app: &str, commit: &str, now_ms: u64) {
        let a = self.apps.entry(app.to_string()).or_default();
        let attempts = match &a.rewrite {
            Some(r) if r.commit == commit => r.attempts.saturating_add(1),
            _ => 1,
        };
        a.rewrite = Some(Failure {
            commit: commit.to_string(),
            attempts,
            retry_at_ms: now_ms.saturating_add(retry_delay(attempts).as_millis() as u64),
        });
    }

    /// The earliest pending retry, for the loop's requeue.
    pub fn next_retry_ms(&self) -> Option<u64> {
        self.apps
            .values()
            .filter_map(|a| a.failure.as_ref())
            .map(|f| f.retry_at_ms)
            .min()
    }

    /// `app` is at `commit` now (applied, or already in place). Returns whether that is news.
    pub fn record_success(&mut self, app: &str, commit: &str) -> bool {
        let a = self.apps.entry(app.to_string()).or_default();
        let news = a.last_applied.as_deref() != Some(commit)
            || a.last_error.is_some()
            || a.failure.is_some();
        a.last_applied = Some(commit.to_string());
        a.last_error = None;
        a.failure = None;
        if a.rewrite.as_ref().is_some_and(|r| r.commit != commit) {
            a.rewrite = None;
        }
        news
    }

    /// Applying `commit` to `app` failed: back off `RETRY_BASE * 2^(attempts-1)`, capped at
    /// `RETRY_MAX`; the count restarts for a different commit.
    pub fn record_failure(&mut self, app: &str, commit: &str, error: &str, now_ms: u64) {
        let a = self.apps.entry(app.to_string()).or_default();
        let attempts = match &a.failure {
            Some(f) if f.commit == commit => f.attempts.saturating_add(1),
            _ => 1,
        };
        let delay = retry_delay(attempts);
        a.last_error = Some(error.to_string());
        a.failure = Some(Failure {
            commit: commit.to_string(),
            attempts,
            retry_at_ms: now_ms.saturating_add(delay.as_millis() as u64),
        });
    }

    /// The app was deleted (pruned): forget it.
    pub fn forget(&mut self, app: &str) {
        self.apps.remove(app);
    }

    /// Append to the history, dropping the oldest beyond [`HISTORY`].
    pub fn push_history(&mut self, record: SyncRecord) {
        self.history.push_back(record);
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }
}

/// Backoff of the n-th consecutive failure (n >= 1).
pub fn retry_delay(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(16);
    RETRY_BASE.saturating_mul(1u32 << exp).min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_commit_backs_off_and_newer_commit_supersedes() {
        let mut s = State::new();
        assert!(s.may_apply("/a", "c1", 0));
        s.record_failure("/a", "c1", "boom", 1_000);
        assert!(!s.may_apply("/a", "c1", 1_000));
        assert!(!s.may_apply("/a", "c1", 10_999));
        assert!(s.may_apply("/a", "c1", 11_000));
        assert!(
            s.may_apply("/a", "c2", 1_000),
            "a newer commit is not held back"
        );
        assert!(
            s.may_apply("/b", "c1", 1_000),
            "other apps are not held back"
        );
        assert_eq!(s.next_retry_ms(), Some(11_000));

        s.record_failure("/a", "c1", "boom", 11_000);
        let f = s.apps["/a"].failure.clone().unwrap();
        assert_eq!((f.attempts, f.retry_at_ms), (2, 31_000));

        s.record_failure("/a", "c2", "boom", 12_000);
        assert_eq!(s.apps["/a"].failure.as_ref().unwrap().attempts, 1);

        s.record_success("/a", "c2");
        assert_eq!(s.apps["/a"].failure, None);
        assert_eq!(s.apps["/a"].last_error, None);
        assert_eq!(s.apps["/a"].last_applied.as_deref(), Some("c2"));
        assert_eq!(s.next_retry_ms(), None);
    }

    #[test]
    fn a_lost_write_is_written_again_with_backoff_per_commit() {
        let mut s = State::new();
        assert!(!s.deployed("/a"));
        s.record_success("/a", "c1");
        assert!(s.deployed("/a"));
        assert!(s.may_rewrite("/a", "c1", 0), "the first rewrite is at once");
        s.record_rewrite("/a", "c1", 1_000);
        assert!(!s.may_rewrite("/a", "c1", 10_999));
        assert!(s.may_rewrite("/a", "c1", 11_000));
        s.record_rewrite("/a", "c1", 11_000);
        assert!(
            !s.may_rewrite("/a", "c1", 30_999),
            "the second waits longer"
        );
        assert!(s.may_rewrite("/a", "c1", 31_000));
        assert!(
            s.may_rewrite("/a", "c2", 11_000),
            "another commit is not held back"
        );
        assert!(s.may_rewrite("/b", "c1", 11_000));
        // Finding the app in place at the same commit keeps the backoff (a fight would go on);
        // a newer commit applied ends it.
        s.record_success("/a", "c1");
        assert!(!s.may_rewrite("/a", "c1", 30_999));
        s.record_success("/a", "c2");
        assert_eq!(s.apps["/a"].rewrite, None);
        assert_eq!(s.next_retry_ms(), None, "a rewrite backoff wakes nothing");
    }

    #[test]
    fn retry_delay_doubles_and_caps() {
        assert_eq!(retry_delay(1), Duration::from_secs(10));
        assert_eq!(retry_delay(2), Duration::from_secs(20));
        assert_eq!(retry_delay(3), Duration::from_secs(40));
        assert_eq!(retry_delay(40), RETRY_MAX);
    }

    #[test]
    fn history_is_a_ring_buffer() {
        let mut s = State::new();
        for i in 0..(HISTORY + 5) {
            s.push_history(SyncRecord {
                started_ms: i as u64,
                finished_ms: i as u64,
                trigger: "poll".into(),
                commit: None,
                outcome: Outcome::Synced,
                changes: 0,
                held: 0,
                invalid: 0,
                error: None,
                author: None,
                message: None,
                requests: None,
            });
        }
        assert_eq!(s.history.len(), HISTORY);
        assert_eq!(s.history.front().unwrap().started_ms, 5);
    }
}
