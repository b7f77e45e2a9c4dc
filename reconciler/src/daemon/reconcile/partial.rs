//! Cycles that look at a few apps rather than all of them.
//!
//! A scheduler event names the app that changed. Its cycle re-reads just the apps the queued
//! events name (`GET /v2/apps/{id}`), plans them alone, updates their drift entries, ledger
//! episodes and `/api/status` entries, and applies what the full cycle would apply at the same
//! revision (corrections a drift policy wants, retries that are due). Its cost grows with the
//! apps named, not with the repo, so a push arriving right after it does not wait behind a
//! listing of every app.
//!
//! Safety is the full cycle's: the repo it plans is marked incomplete, so nothing is deleted;
//! invalid specs stay untouched; it writes through the same [`crate::apply`], one cycle at a
//! time. Whenever the partial view could decide differently from a full cycle it does not
//! run, and the caller runs a full cycle instead: nothing loaded yet, more than
//! [`EVENT_CYCLE_MAX`] apps, an app reading Vault secrets (its definition needs the full
//! cycle's Vault preparation), or a revision not yet synced in auto mode (which applies
//! everything).

use super::*;

use baton_core::cycle::scope::EventScope;
pub use baton_core::cycle::scope::{scoped_repo, EVENT_CYCLE_MAX};

impl<Src: SpecSource, S: Scheduler + 'static> Reconciler<Src, S> {
    /// The cycle of [`Trigger::SchedulerEvent`]s: see the module documentation. `Ok(None)`: it
    /// cannot decide from a partial view; run a full cycle.
    pub(super) async fn event_cycle(
        &mut self,
        trigger: &Trigger,
        events: &[EventApp],
        preempt: &Preempt,
        shutdown: &CancellationToken,
        started: u64,
    ) -> Result<Option<Action>, CycleError> {
        let clock = std::time::Instant::now();
        let mut ids = BTreeSet::new();
        for (app, version) in events {
            // The event of one of Baton's own writes, which reached the watcher before the
            // write's answer reached the loop.
            if version
                .as_deref()
                .is_some_and(|v| self.shared.own_writes.take(app, v))
            {
                continue;
            }
            match AppId::parse(app) {
                Ok(id) => {
                    ids.insert(id);
                }
                Err(_) => return Ok(None),
            }
        }
        let loaded = self.last_good.clone();
        let loaded_ref = loaded.as_ref().map(|(rev, repo)| (rev.as_str(), &**repo));
        let ids = match cycle::scope::event_scope(ids, loaded_ref, self.config.sync, &self.state) {
            EventScope::Nothing => {
                tracing::debug!(
                    events = events.len(),
                    "scheduler events of Baton's own writes: nothing to look at"
                );
                return Ok(Some(self.next_action(now_ms())));
            }
            EventScope::Full => return Ok(None),
            EventScope::Apps(ids) => ids,
        };
        let Some((rev, repo)) = loaded else {
            return Ok(None);
        };
        let mut phases = Phases::new();
        let list: Vec<&AppId> = ids.iter().collect();
        let scheduler = self.scheduler.clone();
        let read = futures::future::join_all(list.iter().map(|id| scheduler.get_app(id)));
        let Some(read) = preempt.unless(read).await else {
            return Ok(Some(self.preempted(clock)));
        };
        let mut live = Vec::with_capacity(read.len());
        for r in read {
            live.extend(r?);
        }
        phases.mark("read");

        let plan = plan::plan(
            &scoped_repo(&repo, &ids),
            &live,
            &Policy {
                commit: rev.clone(),
                allow_deletes: None,
            },
        );
        let mut state_changed = false;
        for id in &plan.unchanged {
            state_changed |= self.state.record_success(id.as_str(), &rev);
        }
        let now = now_ms();
        let failed = self.failures_of(&ids);
        let state = &self.state;
        let corrections: BTreeSet<AppId> = self
            .drift
            .observe_apps(
                &repo,
                &live,
                &ids,
                failed.iter().map(|(a, e)| (a, e.as_str())),
                |a| state.deployed(a.as_str()),
                now,
            )
            .into_iter()
            .collect();
        phases.mark("plan+drift");
        if preempt.requested() {
            return Ok(Some(self.preempted(clock)));
        }

        // What the full cycle applies at an already synced revision (the cycle rule): drift
        // corrections, retries that are due and writes the scheduler lost (none in manual mode,
        // where a scheduler event never applies); never a deletion.
        let lost_writes = cycle::lost_writes(&repo, &live, &plan);
        let decision = cycle::decide(
            &cycle::Input {
                trigger,
                mode: self.config.sync,
                view: View::Apps,
                rev: &rev,
                state: &self.state,
                corrections: &corrections,
                lost_writes: &lost_writes,
                rollouts: &self.rollout_view(&repo, &live),
                now_ms: now,
                only: None,
            },
            plan,
        );
        self.rewriting(&decision, &live, &rev, now);
        self.log_held(&decision);
        let held_ids = decision.held_ids();
        let plan = &decision.plan;
        let planned_total = plan.summary.create + plan.summary.update;
        let report = if plan.is_empty() {
            None
        } else {
            self.publish_status_apps(&repo, &live, &ids, (plan, None, &held_ids));
            self.shared.phase("apply");
            let mut options = self.config.apply.clone();
            options.cancel = shutdown.child_token();
            tracing::info!(
                create = plan.summary.create,
                update = plan.summary.update,
                "applying (apps named by scheduler events)"
            );
            let shared = self.shared.clone();
            let mut progress = move |ev: apply::ProgressEvent| shared.apply_progress(&ev);
            Some(apply::apply(plan, self.scheduler.as_ref(), &options, &mut progress).await)
        };
        if let Some(r) = &report {
            self.done.count(r);
        }
        if let Some(lost) = report.as_ref().and_then(|r| r.lost.clone()) {
            if let Some(r) = &report {
                self.record_report(r, &rev);
            }
            state::save(&self.config.state_dir, &self.state)?;
            self.publish_status_apps(&repo, &live, &ids, (plan, report.as_ref(), &held_ids));
            return Err(CycleError::Lost(lost));
        }
        let outcome = match &report {
            None => Outcome::Synced,
            Some(r) if r.cancelled => Outcome::Abandoned,
            Some(r) if r.converged() => Outcome::Synced,
            Some(_) => Outcome::Partial,
        };
        if let Some(report) = &report {
            self.record_report(report, &rev);
            self.shared.phase("observe");
            self.observe_after_apply(&repo, report).await;
            let failed: Vec<String> = report.failures().map(|a| a.app.to_string()).collect();
            let record = self.with_commit_words(SyncRecord {
                started_ms: started,
                finished_ms: now_ms(),
                trigger: "scheduler-event".into(),
                commit: Some(rev.clone()),
                outcome,
                changes: planned_total,
                held: self.held_work.0,
                invalid: self.held_work.1,
                error: (!failed.is_empty()).then(|| format!("failed: {}", failed.join(", "))),
                author: None,
                message: None,
                requests: None,
            });
            self.state.push_history(record);
            state_changed = true;
        }
        if state_changed {
            state::save(&self.config.state_dir, &self.state)?;
        }
        self.publish_status_apps(&repo, &live, &ids, (plan, report.as_ref(), &held_ids));
        if report.is_some() {
            self.done.outcome = outcome_word(outcome);
        }
        self.announce_cycle(
            &rev,
            outcome,
            decision.record,
            decision.completes_revision && decision.new_revision,
            report.as_ref(),
            &decision.corrections,
            clock,
        );
        phases.mark("apply+status");
        tracing::debug!(apps = ids.len(), phases = %phases, "scheduler-event cycle");
        Ok(Some(self.next_action(now)))
    }
}
