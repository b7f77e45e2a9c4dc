//! The daemon's drift bookkeeping, one call per reconcile cycle: compute the drift report, keep
//! the ledger (persisted in the state directory), publish to the dashboard, queue notifications,
//! and say which apps a `correct` / `correctAfter` policy wants put back now. The decisions are
//! the pure functions of [`crate::drift`]; this only holds the state between cycles.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::dashboard::Dashboard;
use crate::drift::{self, ledger, Attributions, DriftReport, Ledger};
use crate::notifications::{Notification, Notifier};
use crate::spec::{AppId, Repo};

/// Drift state of `baton serve` between cycles.
#[derive(Debug)]
pub struct DriftKeeper {
    state_dir: PathBuf,
    ledger: Ledger,
    /// Fed by [`crate::attribution_feed`] (or the loop's own event watcher).
    pub attributions: Arc<Mutex<Attributions>>,
    pub dashboard: Arc<Dashboard>,
    notifier: Option<Notifier>,
    /// Apps written since the last observation: their drift, if gone, was corrected.
    written: BTreeSet<AppId>,
}

impl DriftKeeper {
    /// Load the ledger from `state_dir` (a broken ledger file is an error: the operator should
    /// see it rather than lose the history silently).
    pub fn new(
        state_dir: PathBuf,
        dashboard: Arc<Dashboard>,
        attributions: Arc<Mutex<Attributions>>,
        notifier: Option<Notifier>,
    ) -> Result<Self, ledger::LedgerError> {
        Ok(DriftKeeper {
            ledger: ledger::load(&state_dir)?,
            state_dir,
            attributions,
            dashboard,
            notifier,
            written: BTreeSet::new(),
        })
    }

    /// One observation: `failures` are the apps whose last apply failed (from the daemon
    /// state). Returns the apps to correct now. The ledger is saved when it changed; a failure
    /// to save is logged, never fatal (the report stays right, only history may be lost).
    pub fn observe<'a>(
        &mut self,
        repo: &Repo,
        live: &[Value],
        failures: impl IntoIterator<Item = (&'a AppId, &'a str)>,
        now: u64,
    ) -> (DriftReport, Vec<AppId>) {
        let mut report = {
            let att = self.attributions.lock().unwrap_or_else(|e| e.into_inner());
            drift::drift(repo, live, &att, now)
        };
        report.mark_failed(failures);
        let before = self.ledger.clone();
        let events = self
            .ledger
            .observe(&mut report, &std::mem::take(&mut self.written), now);
        if self.ledger != before {
            if let Err(e) = ledger::save(&self.state_dir, &self.ledger) {
                tracing::warn!(error = %e, "cannot save the drift ledger");
            }
        }
        if let Some(n) = &self.notifier {
            for ev in &events {
                let app = match ev {
                    drift::LedgerEvent::Detected(e) | drift::LedgerEvent::Resolved(e) => &e.app,
                };
                n.notify(Notification::from_ledger(ev, report.app(app)));
            }
        }
        let fix = drift::corrections(&report, &self.ledger, now);
        report.ledger = self.ledger.entries.clone();
        self.dashboard.publish(&report, now);
        (report, fix)
    }

    /// Apps the cycle wrote (so a drift that disappears next is recorded as corrected).
    pub fn written(&mut self, apps: impl IntoIterator<Item = AppId>) {
        self.written.extend(apps);
    }

    /// How long until a `correctAfter` grace period ends, for the loop's requeue.
    pub fn next_correction(&self, report: &DriftReport, now: u64) -> Option<Duration> {
        drift::next_correction_at(report, &self.ledger, now)
            .map(|at| Duration::from_millis(at.saturating_sub(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::{DriftState, Resolution};
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
            let mut v =
                crate::ownership::labelled(&repo.specs[&AppId::parse(id).unwrap()], "baton", "c");
            crate::spec::marathon_form(&mut v);
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
        let (report, fix) = k.observe(&repo, &[a.clone(), b.clone()], [], t0);
        assert_eq!(fix, vec![AppId::parse("/a").unwrap()]);
        assert_eq!(
            k.next_correction(&report, t0),
            Some(Duration::from_secs(600))
        );
        assert!(dashboard.metrics.render().contains("baton_drifted_apps 2"));

        // /a was put back; /b is past its grace period.
        k.written([AppId::parse("/a").unwrap()]);
        let (report, fix) = k.observe(&repo, &[served("/a"), b], [], t0 + 600_000);
        assert_eq!(fix, vec![AppId::parse("/b").unwrap()]);
        assert_eq!(
            report.app(&AppId::parse("/a").unwrap()).unwrap().state,
            DriftState::InSync
        );
        let saved = ledger::load(state.path()).unwrap();
        let a_id = AppId::parse("/a").unwrap();
        let a_entry = saved.of(&a_id).next().unwrap();
        assert_eq!(a_entry.resolution, Some(Resolution::Corrected));
        assert!(saved.open(&AppId::parse("/b").unwrap()).is_some());
    }
}
