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

/// At most this many apps are re-read by id in one cycle; more are one listing instead.
pub const EVENT_CYCLE_MAX: usize = 64;

/// The repo as far as `ids` go: their specs, invalid marks and diagnostics, marked incomplete
/// so that [`plan::plan`] deletes nothing. Pure.
pub fn scoped_repo(repo: &Repo, ids: &BTreeSet<AppId>) -> Repo {
    Repo {
        config: repo.config.clone(),
        specs: ids
            .iter()
            .filter_map(|id| repo.specs.get(id).map(|s| (id.clone(), s.clone())))
            .collect(),
        invalid: ids
            .iter()
            .filter(|id| repo.invalid.contains(*id))
            .cloned()
            .collect(),
        incomplete: true,
        diagnostics: Vec::new(),
    }
}

impl<Src: SpecSource, S: Scheduler + 'static> Reconciler<Src, S> {
    /// The cycle of [`Trigger::SchedulerEvent`]s: see the module documentation. `Ok(None)`: it
    /// cannot decide from a partial view; run a full cycle.
    pub(super) async fn event_cycle(
        &mut self,
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
        if ids.is_empty() {
            tracing::debug!(
                events = events.len(),
                "scheduler events of Baton's own writes: nothing to look at"
            );
            return Ok(Some(self.next_action(now_ms())));
        }
        let Some((rev, repo)) = self.last_good.clone() else {
            return Ok(None);
        };
        let manual = self.config.sync == SyncMode::Manual;
        let reads_vault =
            |id: &AppId| (repo.specs.get(id)).is_some_and(|s| baton_core::secrets::needs_vault(s));
        if ids.len() > EVENT_CYCLE_MAX
            || (!manual && self.state.last_synced.as_deref() != Some(rev.as_str()))
            || ids.iter().any(reads_vault)
        {
            return Ok(None);
        }
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

        let mut plan = plan::plan(
            &scoped_repo(&repo, &ids),
            &live,
            &Policy {
                commit: rev.clone(),
                allow_deletes: None,
            },
        );
        retain_changes(&mut plan, |c| c.action != PlanAction::Delete);
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

        // What the full cycle applies at an already synced revision: drift corrections,
        // retries that are due and writes the scheduler lost (none in manual mode, where a
        // scheduler event never applies).
        let behind = if manual {
            BTreeSet::new()
        } else {
            behind_apps(&repo, &live, &plan, &self.state, &rev, now)
        };
        let state = &self.state;
        let held_back = retain_changes(&mut plan, |c| {
            let retry_due = (state.apps.get(c.app.as_str()))
                .and_then(|a| a.failure.as_ref())
                .is_some_and(|f| f.commit == rev && now >= f.retry_at_ms);
            let correct = corrections.contains(&c.app);
            let rewrite = behind.contains(&c.app);
            !manual
                && (retry_due || correct || rewrite)
                && state.may_apply(c.app.as_str(), &rev, now)
        });
        self.rewriting(&plan, &behind, &live, &rev, now);
        let planned_total = plan.summary.create + plan.summary.update;
        let held_ids: BTreeSet<AppId> = held_back.iter().map(|(id, _)| id.clone()).collect();
        let report = if plan.is_empty() {
            None
        } else {
            self.publish_status_apps(&repo, &live, &ids, (&plan, None, &held_ids));
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
            Some(apply::apply(&plan, self.scheduler.as_ref(), &options, &mut progress).await)
        };
        if let Some(r) = &report {
            self.done.count(r);
        }
        if let Some(lost) = report.as_ref().and_then(|r| r.lost.clone()) {
            if let Some(r) = &report {
                self.record_report(r, &rev);
            }
            state::save(&self.config.state_dir, &self.state)?;
            self.publish_status_apps(&repo, &live, &ids, (&plan, report.as_ref(), &held_ids));
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
            self.state.push_history(SyncRecord {
                started_ms: started,
                finished_ms: now_ms(),
                trigger: "scheduler-event".into(),
                commit: Some(rev.clone()),
                outcome,
                changes: planned_total,
                held: self.held_work.0,
                invalid: self.held_work.1,
                error: (!failed.is_empty()).then(|| format!("failed: {}", failed.join(", "))),
            });
            state_changed = true;
        }
        if state_changed {
            state::save(&self.config.state_dir, &self.state)?;
        }
        self.publish_status_apps(&repo, &live, &ids, (&plan, report.as_ref(), &held_ids));
        if report.is_some() {
            self.done.outcome = outcome_word(outcome);
        }
        self.announce_cycle(
            &rev,
            outcome,
            report.is_some(),
            false,
            report.as_ref(),
            &corrections,
            clock,
        );
        phases.mark("apply+status");
        tracing::debug!(apps = ids.len(), phases = %phases, "scheduler-event cycle");
        Ok(Some(self.next_action(now)))
    }
}
