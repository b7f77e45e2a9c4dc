//! The drift ledger: one entry per episode of drift of an app (first seen, last seen, duration,
//! who changed it, and how it ended). Pure bookkeeping with `now` as an argument; the daemon
//! keeps it in its state directory (`baton::daemon::ledger_file`, file [`LEDGER_FILE`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{ts, Attribution, DriftReport, DriftState};
use crate::spec::AppId;

/// File name inside the state directory.
pub const LEDGER_FILE: &str = "drift-ledger.json";
/// Closed entries kept (oldest dropped first); open ones are always kept.
pub const KEEP_CLOSED: usize = 1000;

const VERSION: u32 = 1;

/// How a drift ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Baton put git's definition back (a `correct` policy, or a sync).
    Corrected,
    /// Git changed to agree with what runs (the drift was adopted, or the spec reverted).
    ChangedInGit,
    /// Someone put the scheduler back by hand.
    OutOfBand,
    /// The app left git or the scheduler (or became unmanaged or invalid).
    Removed,
}

impl Resolution {
    pub fn word(self) -> &'static str {
        match self {
            Resolution::Corrected => "corrected by Baton",
            Resolution::ChangedInGit => "git changed to match",
            Resolution::OutOfBand => "resolved out of band",
            Resolution::Removed => "app removed",
        }
    }
}

/// One episode of drift of one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub app: AppId,
    /// Drifted, missing or failed (the latest seen).
    pub state: DriftState,
    #[serde(with = "ts")]
    pub first_seen: u64,
    #[serde(with = "ts")]
    pub last_seen: u64,
    /// From first sighting to resolution (or to the last sighting while open).
    pub duration_seconds: u64,
    /// Every field that differed during the episode (JSON pointers).
    pub fields: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub changed_by: Option<Attribution>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub resolution: Option<Resolution>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        with = "super::opt_ts"
    )]
    pub resolved_at: Option<u64>,
    /// Digest of git's definition when the drift was last seen.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub git_digest: Option<String>,
}

impl LedgerEntry {
    pub fn is_open(&self) -> bool {
        self.resolution.is_none()
    }
}

/// A change of the ledger worth telling someone about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerEvent {
    Detected(LedgerEntry),
    Resolved(LedgerEntry),
}

/// Every drift episode: open ones and the most recent closed ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub version: u32,
    /// Oldest first.
    pub entries: Vec<LedgerEntry>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            version: VERSION,
            entries: Vec::new(),
        }
    }
}

impl Ledger {
    /// The open episode of `app`, if it is drifting.
    pub fn open(&self, app: &AppId) -> Option<&LedgerEntry> {
        self.entries
            .iter()
            .rev()
            .find(|e| &e.app == app && e.is_open())
    }

    /// Every episode of `app`, newest first.
    pub fn of<'a>(&'a self, app: &'a AppId) -> impl Iterator<Item = &'a LedgerEntry> + 'a {
        self.entries.iter().rev().filter(move |e| &e.app == app)
    }

    /// Take in a fresh report: open an episode for each app that newly disagrees with git, extend
    /// the open ones, and close those that no longer disagree. `corrected`: the apps Baton has
    /// written since the last observation (their drift, if gone, was corrected).
    ///
    /// Also sets each disagreeing app's `since` in `report` to the start of its episode when
    /// that is earlier, so the report and the ledger tell the same story.
    pub fn observe(
        &mut self,
        report: &mut DriftReport,
        corrected: &BTreeSet<AppId>,
        now: u64,
    ) -> Vec<LedgerEvent> {
        self.observe_scoped(report, corrected, None, now)
    }

    /// [`observe`](Self::observe) limited to the apps in `scope`: the report's entries of other
    /// apps are not looked at and their episodes stay as they are (a cycle that re-read only
    /// some apps knows nothing new about the others).
    pub fn observe_apps(
        &mut self,
        report: &mut DriftReport,
        corrected: &BTreeSet<AppId>,
        scope: &BTreeSet<AppId>,
        now: u64,
    ) -> Vec<LedgerEvent> {
        self.observe_scoped(report, corrected, Some(scope), now)
    }

    fn observe_scoped(
        &mut self,
        report: &mut DriftReport,
        corrected: &BTreeSet<AppId>,
        scope: Option<&BTreeSet<AppId>>,
        now: u64,
    ) -> Vec<LedgerEvent> {
        let in_scope = |app: &AppId| scope.is_none_or(|s| s.contains(app));
        let mut events = Vec::new();
        let mut open: BTreeMap<AppId, usize> = BTreeMap::new();
        for (i, e) in self.entries.iter().enumerate() {
            if e.is_open() && in_scope(&e.app) {
                open.insert(e.app.clone(), i);
            }
        }
        // The report is sorted by app: a scope's entries are found without a pass over all.
        let picked: Vec<usize> = match scope {
            None => (0..report.apps.len()).collect(),
            Some(scope) => scope
                .iter()
                .filter_map(|id| report.apps.binary_search_by(|a| a.app.cmp(id)).ok())
                .collect(),
        };
        for i in picked {
            let a = &mut report.apps[i];
            let slot = open.remove(&a.app);
            if a.disagrees() {
                let pointers = a.fields.iter().map(|f| f.pointer.clone());
                match slot.and_then(|i| self.entries.get_mut(i)) {
                    Some(e) => {
                        e.state = a.state;
                        e.last_seen = now;
                        e.duration_seconds = now.saturating_sub(e.first_seen) / 1000;
                        for p in pointers {
                            if !e.fields.contains(&p) {
                                e.fields.push(p);
                            }
                        }
                        if a.changed_by.is_some() {
                            e.changed_by.clone_from(&a.changed_by);
                        }
                        e.git_digest.clone_from(&a.desired_digest);
                        a.since = Some(a.since.map_or(e.first_seen, |s| s.min(e.first_seen)));
                    }
                    None => {
                        let first_seen = a.since.unwrap_or(now).min(now);
                        let e = LedgerEntry {
                            app: a.app.clone(),
                            state: a.state,
                            first_seen,
                            last_seen: now,
                            duration_seconds: now.saturating_sub(first_seen) / 1000,
                            fields: pointers.collect(),
                            changed_by: a.changed_by.clone(),
                            resolution: None,
                            resolved_at: None,
                            git_digest: a.desired_digest.clone(),
                        };
                        a.since = Some(first_seen);
                        events.push(LedgerEvent::Detected(e.clone()));
                        self.entries.push(e);
                    }
                }
            } else if let Some(e) = slot.and_then(|i| self.entries.get_mut(i)) {
                let how = if !matches!(
                    a.state,
                    DriftState::InSync | DriftState::Failed | DriftState::Pending
                ) {
                    Resolution::Removed
                } else if corrected.contains(&a.app) {
                    Resolution::Corrected
                } else if e.git_digest.is_some() && e.git_digest != a.desired_digest {
                    Resolution::ChangedInGit
                } else {
                    Resolution::OutOfBand
                };
                close(e, how, now);
                events.push(LedgerEvent::Resolved(e.clone()));
            }
        }
        // Open episodes of apps the report no longer lists at all.
        for (_, i) in open {
            if let Some(e) = self.entries.get_mut(i) {
                close(e, Resolution::Removed, now);
                events.push(LedgerEvent::Resolved(e.clone()));
            }
        }
        self.trim();
        events
    }

    /// Drop the oldest closed entries beyond [`KEEP_CLOSED`].
    fn trim(&mut self) {
        let closed = self.entries.iter().filter(|e| !e.is_open()).count();
        let mut excess = closed.saturating_sub(KEEP_CLOSED);
        if excess > 0 {
            self.entries.retain(|e| {
                if excess > 0 && !e.is_open() {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }
}

fn close(e: &mut LedgerEntry, how: Resolution, now: u64) {
    e.resolution = Some(how);
    e.resolved_at = Some(now);
    e.duration_seconds = now.saturating_sub(e.first_seen) / 1000;
}
