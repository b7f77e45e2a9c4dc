//! The loop's side of rollouts: the cycle rule's view of them, starting the ones a cycle
//! diverted, and the [`Trigger::Rollout`] tick ([`crate::daemon::rollout::tick`]) with what
//! follows it (status, metrics, notifications, log lines).

use super::*;
use crate::daemon::notifications::Notification;
use crate::daemon::rollout::{self as driver, Ended, TickEnv};
use crate::ha::handoff::Handoff;
use baton_core::cycle::RolloutView;
use baton_core::rollout::Outcome as RolloutOutcome;

/// The longest a rollout's write waits for a deployment it did not start (409): the loop is
/// not held longer than this; the next tick tries again.
const ROLLOUT_LOCK_WAIT: Duration = Duration::from_secs(30);

impl<Src: SpecSource, S: Scheduler + 'static> Reconciler<Src, S> {
    /// What the cycle rule needs to know of rollouts, from `live` (all apps or some).
    pub(super) fn rollout_view(&self, repo: &Repo, live: &[serde_json::Value]) -> RolloutView {
        driver::view(repo, live, &self.state, &self.config.rollout.settings())
    }

    /// Persist a rollout for each update the rule diverted; the loop ticks them from now on.
    pub(super) fn start_rollouts(&mut self, starts: &[AppId], repo: &Repo, rev: &str, now: u64) {
        if starts.is_empty() {
            return;
        }
        let machine = self.config.rollout.machine;
        let started = driver::start(&mut self.state, starts, repo, rev, now, &machine);
        for app in &started {
            tracing::info!(app = %app, commit = rev, "rollout started");
        }
        self.shared.set_rollouts(&self.state);
    }

    /// HA: where the rollout state is handed over (`None`: standalone).
    fn handoff(&self) -> Option<Handoff> {
        self.shared.ha.get().map(|h| Handoff::new(h.clone()))
    }

    /// HA: once per term of this replica's leadership, before its first cycle or tick, take
    /// the rollouts over from ZooKeeper (what the previous leader wrote ahead), so that none
    /// is replayed from its start or forgotten. Standalone and followers: nothing.
    pub(super) async fn take_over_rollouts(&mut self) -> Result<(), CycleError> {
        let Some(h) = self.handoff().filter(|h| h.leading()) else {
            return Ok(());
        };
        let term = h.term();
        if self.handoff_term == Some(term) {
            return Ok(());
        }
        h.take_over(&mut self.state).await?;
        state::save(&self.config.state_dir, &self.state)?;
        self.handoff_term = Some(term);
        let live = &self.state.rollouts;
        self.rollout_status.retain(|app, _| live.contains_key(app));
        self.rollout_wake.retain(|app, _| live.contains_key(app));
        self.shared.set_rollouts(&self.state);
        Ok(())
    }

    /// One tick of every rollout. `Ok(None)`: a push stopped it before it wrote; `Ok(Some(d))`:
    /// look again after `d`.
    pub(super) async fn rollout_cycle(
        &mut self,
        preempt: &Preempt,
        shutdown: &CancellationToken,
    ) -> Result<Option<Duration>, CycleError> {
        let tick = self.config.rollout.tick;
        self.take_over_rollouts().await?;
        let Some((rev, repo)) = self.last_good.clone() else {
            // Nothing loaded yet (the first cycle does that): no spec to judge by.
            return Ok(Some(tick));
        };
        let mut apply = self.config.apply.clone();
        apply.cancel = shutdown.child_token();
        apply.force_delete = false;
        apply.lock_wait = apply.lock_wait.min(ROLLOUT_LOCK_WAIT);
        let preempted = || preempt.requested();
        let started = now_ms();
        self.shared.with_status(|st| {
            st.cycle = Some(CycleStatus {
                trigger: Trigger::Rollout.name(),
                commit: Some(rev.clone()),
                phase: "read",
                started_ms: started,
                phase_since_ms: started,
            })
        });
        let handoff = self.handoff();
        let report = driver::tick(TickEnv {
            scheduler: self.scheduler.as_ref(),
            state: &mut self.state,
            state_dir: &self.config.state_dir,
            repo: &repo,
            rev: &rev,
            config: &self.config.rollout,
            apply,
            operators: &self.shared.operators,
            http: &self.http,
            preempted: &preempted,
            now_ms: &now_ms,
            handoff: handoff.as_ref(),
        })
        .await;
        self.shared.with_status(|st| st.cycle = None);
        let report = report.map_err(|e| match e {
            driver::TickError::State(e) => CycleError::State(e),
            driver::TickError::Handoff(e) => CycleError::Handoff(e),
        })?;
        if report.preempted {
            tracing::debug!("a push arrived: the rollout tick stops before writing anything");
            return Ok(None);
        }
        for r in &report.applied {
            self.done.count(r);
        }
        let metrics = self.shared.dashboard.metrics.clone();
        for (app, status) in report.statuses {
            if self.state.rollouts.contains_key(&app) {
                metrics.set_rollout(&app, Some(&status));
                self.rollout_status.insert(app, status);
            }
        }
        self.rollout_status
            .retain(|app, _| self.state.rollouts.contains_key(app));
        self.rollout_wake = report.wake;
        self.rollout_wake
            .retain(|app, _| self.state.rollouts.contains_key(app));
        for e in &report.ended {
            metrics.set_rollout(e.app.as_str(), None);
            self.rollout_ended(e);
        }
        self.shared.set_rollouts(&self.state);
        self.publish_rollouts(&report.ended);
        if let Some(lost) = report.lost {
            return Err(CycleError::Lost(lost));
        }
        Ok(Some(driver::next_tick(&self.rollout_wake, tick, now_ms())))
    }

    /// Metrics, notification and log line of a rollout that ended.
    fn rollout_ended(&self, e: &Ended) {
        let metrics = &self.shared.dashboard.metrics;
        match &e.outcome {
            RolloutOutcome::Completed => {
                metrics.rollout_finished("completed");
                tracing::info!(app = %e.app, commit = %e.rollout.commit, "rollout completed");
                let started =
                    (e.rollout.timeline.first()).map_or(e.rollout.entered_ms, |t| t.at_ms);
                self.notify(Notification::DeploymentFinished {
                    commit: Some(e.rollout.commit.clone()),
                    apps: vec![e.app.clone()],
                    took: Duration::from_millis(now_ms().saturating_sub(started)),
                });
            }
            RolloutOutcome::RolledBack { reason } => {
                metrics.rollout_finished("rolled_back");
                let why = driver::reason_text(reason);
                tracing::warn!(app = %e.app, commit = %e.rollout.commit, reason = %why, "rollout rolled back: the stable app was left as it was");
                let (requests, errors, rate) = match reason {
                    baton_core::rollout::Reason::Analysis {
                        requests,
                        errors,
                        rate,
                        ..
                    } => (Some(*requests), Some(*errors), Some(*rate)),
                    _ => (None, None, None),
                };
                self.notify(Notification::RolloutRolledBack {
                    app: e.app.clone(),
                    commit: e.rollout.commit.clone(),
                    step: match reason {
                        baton_core::rollout::Reason::Analysis { step, .. } => Some(*step),
                        _ => None,
                    },
                    reason: why,
                    requests,
                    errors,
                    rate,
                });
            }
        }
    }

    /// `/api/status` after a tick: each app's rollout (or its end), and the history.
    fn publish_rollouts(&self, ended: &[Ended]) {
        let mut st = self
            .shared
            .status
            .write()
            .unwrap_or_else(|e| e.into_inner());
        for (app, status) in &self.rollout_status {
            if let Ok(id) = AppId::parse(app) {
                status_entry(&mut st.apps, &id).rollout = Some(status.clone());
            }
        }
        for e in ended {
            let app_state = self.state.apps.get(e.app.as_str());
            let entry = status_entry(&mut st.apps, &e.app);
            entry.rollout = None;
            entry.rolled_back = app_state
                .and_then(|a| a.rolled_back.as_ref())
                .map(driver::RolledBackStatus::of);
            if e.outcome == RolloutOutcome::Completed {
                entry.commit = Some(e.rollout.commit.clone());
            }
        }
        st.history = (self.state.history.iter().rev())
            .take(STATUS_HISTORY)
            .cloned()
            .collect();
    }
}
