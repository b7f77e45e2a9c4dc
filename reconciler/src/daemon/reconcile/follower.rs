//! The cycle of an HA follower (`baton serve --ha-zookeeper`, docs/ha.md): everything a cycle
//! reads, nothing it writes. It fetches and loads (the git cache and the loaded repo stay
//! warm, so a takeover is one cycle), reads Vault so the gatekeeper knows the apps (any replica
//! answers secret zero), plans against the scheduler for its own status (marked as a
//! follower's in `ha`), and relays a push it received to the leader. It never reaches
//! `apply`, a Vault write, a drift correction, a rollout tick, a state save or a notification.

use super::*;

impl<Src: SpecSource, S: Scheduler + 'static> Reconciler<Src, S> {
    /// Whether this replica runs writing cycles: standalone, or the elected leader (every
    /// write still takes a permit, [`crate::ha::fenced`]).
    pub(super) fn leads(&self) -> bool {
        self.shared.ha.get().is_none_or(|h| h.leadership.leading())
    }

    pub(super) async fn follower_cycle(&mut self, trigger: &Trigger) -> Result<Action, CycleError> {
        if let (Trigger::Webhook { delivery }, Some(ha)) = (trigger, self.shared.ha.get()) {
            ha.relay_push(delivery);
        }
        self.done.outcome = "follower";
        if matches!(trigger, Trigger::SchedulerEvent { .. }) {
            // Mostly the leader's own writes: the next poll or push refreshes this view.
            return Ok(Action::await_change());
        }
        let (rev, repo) = self.snapshot(trigger).await?;
        self.done.commit = Some(rev.clone());
        let live = self.scheduler.list_apps().await?;
        let (repo, _) = self.secrets_prepare(repo).await?;
        let plan = plan::plan(
            &repo,
            &live,
            &Policy {
                commit: rev,
                allow_deletes: self.config.allow_deletes,
            },
        );
        self.shared.ready.store(true, Ordering::Relaxed);
        let held = BTreeSet::new();
        self.publish_status(Some(&repo), Some(&live), Some((&plan, None, &held)), None);
        Ok(Action::await_change())
    }
}
