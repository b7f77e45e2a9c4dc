//! The daemon's drift bookkeeping, one call per reconcile cycle: compute the drift report, keep
//! the ledger (persisted in the state directory), publish to the dashboard, queue notifications,
//! and say which apps a `correct` / `correctAfter` policy wants put back now. The decisions are
//! the pure functions of [`baton_core::drift`]; this only holds the state between cycles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::daemon::dashboard::Dashboard;
use crate::daemon::notifications::{Notification, Notifier};
use baton_core::drift::{self, Attributions, DriftReport, Ledger};
use baton_core::spec::{AppId, Repo};

/// Whether git moved since Baton last wrote `live`: the digest label it carries is not the
/// one Baton would write for the spec now. Then the difference is a pending deploy, not drift
/// worth a notification. Apps git no longer has (a pending delete) and apps without the label
/// (a pending adoption) count as moved too.
fn git_moved(repo: &Repo, app: &AppId, live: &Value) -> bool {
    let label = |v: &Value| {
        v.pointer("/labels")
            .and_then(|l| l.get(baton_core::ownership::DIGEST))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let Some(spec) = repo.specs.get(app) else {
        return true;
    };
    match label(live) {
        Some(written) => {
            let now = baton_core::ownership::labelled(spec, &repo.config.owner, "");
            label(&now).as_deref() != Some(written.as_str())
        }
        None => true,
    }
}

/// Drift state of `baton serve` between cycles.
#[derive(Debug)]
pub struct DriftKeeper {
    state_dir: PathBuf,
    ledger: Ledger,
    /// Fed by [`crate::daemon::attribution_feed`] (or the loop's own event watcher).
    pub attributions: Arc<Mutex<Attributions>>,
    pub dashboard: Arc<Dashboard>,
    notifier: Option<Notifier>,
    /// Apps written since the last observation: their drift, if gone, was corrected.
    written: BTreeSet<AppId>,
    /// Apps seen running by this process (a missing app never seen is new in git).
    seen_live: BTreeSet<AppId>,
    /// Open episodes not announced because git moved, not the app: their end is not news.
    quiet: BTreeSet<AppId>,
}

impl DriftKeeper {
    /// Load the ledger from `state_dir` (a broken ledger file is an error: the operator should
    /// see it rather than lose the history silently).
    pub fn new(
        state_dir: PathBuf,
        dashboard: Arc<Dashboard>,
        attributions: Arc<Mutex<Attributions>>,
        notifier: Option<Notifier>,
    ) -> Result<Self, super::ledger_file::LedgerError> {
        Ok(DriftKeeper {
            ledger: super::ledger_file::load(&state_dir)?,
            state_dir,
            attributions,
            dashboard,
            notifier,
            written: BTreeSet::new(),
            seen_live: BTreeSet::new(),
            quiet: BTreeSet::new(),
        })
    }

    /// One observation of every app: `failures` are the apps whose last apply failed and
    /// `deployed` says which apps this daemon ever deployed (from the daemon state: a missing
    /// app never deployed is a pending create, not drift). The report goes to the dashboard;
    /// returns the apps to correct now. The ledger is saved when it changed; a failure to save is
    /// logged, never fatal (the report stays right, only history may be lost).
    pub fn observe<'a>(
        &mut self,
        repo: &Repo,
        live: &[Value],
        failures: impl IntoIterator<Item = (&'a AppId, &'a str)>,
        deployed: impl Fn(&AppId) -> bool,
        now: u64,
    ) -> Vec<AppId> {
        let mut report = {
            let att = self.attributions.lock().unwrap_or_else(|e| e.into_inner());
            drift::drift(repo, live, &att, now)
        };
        report.mark_never_deployed(deployed);
        report.mark_failed(failures);
        let written = std::mem::take(&mut self.written);
        let before = self.ledger.clone();
        let events = self.ledger.observe(&mut report, &written, now);
        self.save_ledger(self.ledger != before);
        self.announce(repo, live, &events, |_| true);
        let fix = drift::corrections(&report, &self.ledger, now);
        report.ledger = self.ledger.entries.clone();
        self.dashboard.publish_owned(report, now);
        fix
    }

    /// An observation of the apps `ids` only (a cycle that re-read just those): their entries
    /// of the report are recomputed from `live` (which holds their live state, if they run) and
    /// patched into the published report, their ledger episodes opened, extended or closed;
    /// nothing is said about the other apps. Returns which of `ids` to correct now. Costs
    /// O(`ids`), not O(apps). Before any full [`observe`](Self::observe) there is no report to
    /// patch: then this is a full observation of `repo` and `live`.
    pub fn observe_apps<'a>(
        &mut self,
        repo: &Repo,
        live: &[Value],
        ids: &BTreeSet<AppId>,
        failures: impl IntoIterator<Item = (&'a AppId, &'a str)>,
        deployed: impl Fn(&AppId) -> bool,
        now: u64,
    ) -> Vec<AppId> {
        if self.dashboard.with_report(|r| r.is_none()) {
            return self.observe(repo, live, failures, deployed, now);
        }
        let list: Vec<AppId> = ids.iter().cloned().collect();
        let mut entries = {
            let att = self.attributions.lock().unwrap_or_else(|e| e.into_inner());
            drift::drift_apps(repo, live, &list, &att, now)
        };
        for (_, e) in &mut entries {
            if let Some(e) = e {
                e.mark_never_deployed(&deployed);
            }
        }
        let failures: Vec<(&AppId, &str)> = failures
            .into_iter()
            .filter(|(a, _)| ids.contains(*a))
            .collect();
        let written: BTreeSet<AppId> = ids
            .iter()
            .filter(|a| self.written.remove(*a))
            .cloned()
            .collect();
        // The episodes of `ids` only: what this observation can change.
        let episodes = |l: &Ledger| -> Vec<drift::LedgerEntry> {
            l.entries
                .iter()
                .filter(|e| ids.contains(&e.app))
                .cloned()
                .collect()
        };
        let (before, count) = (episodes(&self.ledger), self.ledger.entries.len());
        let ledger = &mut self.ledger;
        let patched = self.dashboard.update(now, |report| {
            report.patch(entries, now);
            report.mark_failed(failures);
            let events = ledger.observe_apps(report, &written, ids, now);
            let fix: Vec<AppId> = (ids.iter())
                .filter(|a| drift::corrections_for(report, ledger, a, now))
                .cloned()
                .collect();
            let changed = ledger.entries.len() != count || episodes(ledger) != before;
            if changed {
                report.ledger = ledger.entries.clone();
            }
            (events, fix, changed)
        });
        let Some((events, fix, changed)) = patched else {
            return Vec::new();
        };
        self.save_ledger(changed);
        self.announce(repo, live, &events, |a| ids.contains(a));
        fix
    }

    /// Save the ledger if the observation changed it.
    fn save_ledger(&self, changed: bool) {
        if !changed {
            return;
        }
        if let Err(e) = super::ledger_file::save(&self.state_dir, &self.ledger) {
            tracing::warn!(error = %e, "cannot save the drift ledger");
        }
    }

    /// Notifications for the ledger's events; `seen` apps (of `live`) are remembered as seen
    /// running.
    fn announce(
        &mut self,
        repo: &Repo,
        live: &[Value],
        events: &[drift::LedgerEvent],
        seen: impl Fn(&AppId) -> bool,
    ) {
        let live_by_id: BTreeMap<AppId, &Value> = live
            .iter()
            .filter_map(|a| Some((AppId::parse(a.get("id")?.as_str()?).ok()?, a)))
            .filter(|(id, _)| seen(id))
            .collect();
        for ev in events {
            let announce = match ev {
                drift::LedgerEvent::Detected(e) => {
                    let git_moved = match live_by_id.get(&e.app) {
                        Some(l) => git_moved(repo, &e.app, l),
                        None => !self.seen_live.contains(&e.app),
                    };
                    if git_moved {
                        self.quiet.insert(e.app.clone());
                    }
                    !git_moved
                }
                drift::LedgerEvent::Resolved(e) => !self.quiet.remove(&e.app),
            };
            if let (true, Some(n)) = (announce, &self.notifier) {
                let app = match ev {
                    drift::LedgerEvent::Detected(e) | drift::LedgerEvent::Resolved(e) => &e.app,
                };
                let note = self
                    .dashboard
                    .with_report(|r| Notification::from_ledger(ev, r.and_then(|r| r.app(app))));
                n.notify(note);
            }
        }
        self.seen_live.extend(live_by_id.into_keys());
    }

    /// The report as last observed (`None` before the first observation).
    pub fn report(&self) -> Option<DriftReport> {
        self.dashboard.with_report(|r| r.cloned())
    }

    /// Apps the cycle wrote (so a drift that disappears next is recorded as corrected).
    pub fn written(&mut self, apps: impl IntoIterator<Item = AppId>) {
        self.written.extend(apps);
    }

    /// How long until a `correctAfter` grace period ends, for the loop's requeue.
    pub fn next_correction(&self, now: u64) -> Option<Duration> {
        self.dashboard
            .with_report(|r| drift::next_correction_at(r?, &self.ledger, now))
            .map(|at| Duration::from_millis(at.saturating_sub(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::drift::{DriftState, Resolution};
    use serde_json::json;

    #[test]
    fn a_cycle_reports_corrects_and_remembers() {
        let repo_dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let p = repo_dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("apps/a.yaml", "cmd: ./a\nbaton: {drift: correct}\n");
        write(
            "apps/b.yaml",
            "cmd: ./b\nbaton: {drift: {correctAfter: 10m}}\n",
        );
        let repo = crate::commands::load_repo(repo_dir.path()).unwrap();
        let served = |id: &str| {
            let mut v = baton_core::ownership::labelled(
                &repo.specs[&AppId::parse(id).unwrap()],
                "baton",
                "c",
            );
            baton_core::spec::marathon_form(&mut v);
            v
        };
        let (mut a, mut b) = (served("/a"), served("/b"));
        a["instances"] = json!(3);
        b["instances"] = json!(3);
        let state = tempfile::tempdir().unwrap();
        let dashboard = Dashboard::new(Default::default());
        let mut k = DriftKeeper::new(
            state.path().to_path_buf(),
            dashboard.clone(),
            Default::default(),
            None,
        )
        .unwrap();
        let t0 = 1_795_000_000_000;
        let fix = k.observe(&repo, &[a.clone(), b.clone()], [], |_| true, t0);
        assert_eq!(fix, vec![AppId::parse("/a").unwrap()]);
        assert_eq!(k.next_correction(t0), Some(Duration::from_secs(600)));
        assert!(dashboard.metrics.render().contains("baton_drifted_apps 2"));

        // /a was put back; /b is past its grace period.
        k.written([AppId::parse("/a").unwrap()]);
        let fix = k.observe(&repo, &[served("/a"), b], [], |_| true, t0 + 600_000);
        let report = k.report().unwrap();
        assert_eq!(fix, vec![AppId::parse("/b").unwrap()]);
        assert_eq!(
            report.app(&AppId::parse("/a").unwrap()).unwrap().state,
            DriftState::InSync
        );
        let saved = crate::daemon::ledger_file::load(state.path()).unwrap();
        let a_id = AppId::parse("/a").unwrap();
        let a_entry = saved.of(&a_id).next().unwrap();
        assert_eq!(a_entry.resolution, Some(Resolution::Corrected));
        assert!(saved.open(&AppId::parse("/b").unwrap()).is_some());
    }

    #[test]
    fn only_out_of_band_drift_is_announced() {
        let repo_dir = tempfile::tempdir().unwrap();
        let p = repo_dir.path().join("apps/a.yaml");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "cmd: ./a\n").unwrap();
        let repo = crate::commands::load_repo(repo_dir.path()).unwrap();
        let a = AppId::parse("/a").unwrap();
        let mut served = baton_core::ownership::labelled(&repo.specs[&a], "baton", "c");
        baton_core::spec::marathon_form(&mut served);
        let state = tempfile::tempdir().unwrap();
        let metrics: Arc<crate::daemon::metrics::Metrics> = Default::default();
        let (notifier, mut rx) = crate::daemon::notifications::channel(16, metrics.clone());
        let mut k = DriftKeeper::new(
            state.path().to_path_buf(),
            Dashboard::new(metrics),
            Default::default(),
            Some(notifier),
        )
        .unwrap();
        let t0 = 1_795_000_000_000;
        // New in git, not deployed yet: missing, but that is a pending deploy, not drift.
        k.observe(&repo, &[], [], |_| true, t0);
        k.written([a.clone()]);
        k.observe(
            &repo,
            std::slice::from_ref(&served),
            [],
            |_| true,
            t0 + 1000,
        );
        assert!(rx.try_recv().is_err(), "a deploy is not drift");
        // Git moves: the running app differs from the new spec, but that is a pending deploy.
        let moved_dir = tempfile::tempdir().unwrap();
        let p2 = moved_dir.path().join("apps/a.yaml");
        std::fs::create_dir_all(p2.parent().unwrap()).unwrap();
        std::fs::write(&p2, "cmd: ./a --new\n").unwrap();
        let moved = crate::commands::load_repo(moved_dir.path()).unwrap();
        k.observe(
            &moved,
            std::slice::from_ref(&served),
            [],
            |_| true,
            t0 + 1500,
        );
        let report = k.report().unwrap();
        assert_eq!(
            report.app(&a).unwrap().state,
            baton_core::drift::DriftState::Pending
        );
        assert!(rx.try_recv().is_err(), "a pending deploy is not drift");
        k.written([a.clone()]);
        k.observe(
            &repo,
            std::slice::from_ref(&served),
            [],
            |_| true,
            t0 + 1600,
        );
        assert!(rx.try_recv().is_err(), "its end is not news either");
        // Changed out of band: announced, then its correction too.
        let mut scaled = served.clone();
        scaled["instances"] = json!(3);
        k.observe(&repo, &[scaled], [], |_| true, t0 + 2000);
        let n = rx.try_recv().unwrap();
        assert_eq!(n.kind(), "drift_detected");
        assert!(n.summary().contains("/instances"), "{}", n.summary());
        k.written([a.clone()]);
        k.observe(&repo, &[served], [], |_| true, t0 + 3000);
        assert_eq!(rx.try_recv().unwrap().kind(), "drift_resolved");
        // Deleted out of band after it ran: announced as missing.
        k.observe(&repo, &[], [], |_| true, t0 + 4000);
        assert_eq!(rx.try_recv().unwrap().kind(), "drift_detected");
    }
}
