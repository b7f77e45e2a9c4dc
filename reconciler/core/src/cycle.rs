//! The cycle rule of `baton serve`: which of a plan's changes a cycle applies, which it holds
//! and why, and when the loop runs next. One pure function of data ([`decide`]) for the three
//! cycles of the daemon: the full cycle (every app listed and planned), the fast path of a push
//! (the apps whose files changed, read by id) and the cycle of scheduler events (the apps the
//! events name). The loops in `baton::daemon::reconcile` only do I/O around it: fetch, load,
//! list or read, call the rule, apply, save, publish.
//!
//! What a cycle may apply, in order ([`decide`]):
//! - From a view of some apps only ([`View::Apps`]) nothing is deleted.
//! - A revision applies as a whole when it is new in auto mode, or on `POST /api/sync` (also at
//!   an applied revision, and the only way in manual mode).
//! - At an applied revision in auto mode: a failed app whose retry is due, a drift correction
//!   its policy wants now (never a delete), and a write the scheduler lost
//!   ([`lost_writes`]) unless that very rewrite backs off.
//! - Always: nothing while an earlier failure of the same commit backs off.
//! - Rollouts ([`RolloutView`], `crate::rollout`): no write of a stable app while its rollout
//!   runs; an update of an eligible app that would apply starts a rollout instead
//!   ([`Decision::rollout_starts`]) unless it cannot run here or this definition was rolled
//!   back. Manual mode and a failure's backoff come first.
//!
//! Also here, as data: the [`Trigger`] enum the loop is driven by, the [`Action`] a cycle ends
//! with and the error policy's backoff ([`error_backoff`]), the persisted [`state`], and which
//! apps a partial cycle looks at ([`scope`]). Time comes in as `now_ms` (Unix milliseconds).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ownership::{self, Standing};
use crate::plan::{self, Action as PlanAction, Change, Plan};
use crate::spec::{AppId, Repo};

pub mod scope;
pub mod state;

use state::State;

/// First backoff of a failing cycle; doubled per consecutive failure up to [`ERROR_BACKOFF_MAX`].
pub const ERROR_BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// The earliest a cycle requeues itself for a retry or a correction (so a backoff due "now"
/// does not spin the loop).
pub const MIN_REQUEUE: Duration = Duration::from_secs(1);

/// What woke the loop. Closed: every cycle starts from one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The first cycle after start.
    Startup,
    /// A verified push to the followed ref.
    Webhook {
        delivery: String,
    },
    /// The safety-net poll timer.
    Poll,
    /// The scheduler reported a change to an app made outside Baton (`version`: the app's
    /// version the event announced). Such a cycle re-reads only the apps named by the events
    /// queued ([`scope::event_scope`]), unless there are too many of them.
    SchedulerEvent {
        app: String,
        version: Option<String>,
    },
    /// `POST /api/sync`: apply now, also in manual mode.
    ManualSync,
    /// A requeue after a failure or a failed app's backoff.
    Retry,
    /// The directory source changed on disk.
    FileChange,
    /// A rollout in progress is due for its next look (`crate::rollout`).
    Rollout,
    Shutdown,
}

impl Trigger {
    pub fn name(&self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Webhook { .. } => "webhook",
            Trigger::Poll => "poll",
            Trigger::SchedulerEvent { .. } => "scheduler-event",
            Trigger::ManualSync => "manual-sync",
            Trigger::Retry => "retry",
            Trigger::FileChange => "file-change",
            Trigger::Rollout => "rollout",
            Trigger::Shutdown => "shutdown",
        }
    }

    /// Whether the cycle asks the source for news (a scheduler event only re-plans).
    pub fn fetches(&self) -> bool {
        !matches!(self, Trigger::SchedulerEvent { .. })
    }

    /// Whether a push (a webhook or `POST /api/sync`) may stop this cycle before it writes
    /// anything: the cycles that only look (a poll, a retry, a scheduler event). The push's own
    /// cycle does everything they would have done.
    pub fn preemptible(&self) -> bool {
        matches!(
            self,
            Trigger::Poll | Trigger::Retry | Trigger::Rollout | Trigger::SchedulerEvent { .. }
        )
    }

    /// Whether this trigger stops a preemptible cycle.
    pub fn preempts(&self) -> bool {
        matches!(self, Trigger::Webhook { .. } | Trigger::ManualSync)
    }

    /// Of several queued triggers the cycle runs as the strongest.
    pub fn rank(&self) -> u8 {
        match self {
            Trigger::Shutdown => 8,
            Trigger::ManualSync => 7,
            Trigger::Webhook { .. } => 6,
            Trigger::FileChange => 5,
            Trigger::Startup => 4,
            Trigger::Retry => 3,
            // Above a poll: a rollout's tick judges traffic and may roll back, and a poll
            // queued with it must not swallow it.
            Trigger::Rollout => 2,
            Trigger::Poll => 1,
            Trigger::SchedulerEvent { .. } => 0,
        }
    }
}

/// What the loop does after a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Run again after `d` (as [`Trigger::Retry`]).
    pub fn requeue(d: Duration) -> Self {
        Action {
            requeue_after: Some(d),
        }
    }

    /// Wait for a trigger (the poll timer stays on as the safety net).
    pub fn await_change() -> Self {
        Action {
            requeue_after: None,
        }
    }

    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// Auto-sync, or plan-and-report with apply on `POST /api/sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    Auto,
    Manual,
}

/// How much of the repo and the scheduler a cycle planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Every app: the repo loaded and the scheduler listed.
    All,
    /// Some apps read by id (the fast path of a push, the apps named by scheduler events):
    /// nothing is deleted, and the revision is never applied "as a whole" from it.
    Apps,
}

/// What the rule decides from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub trigger: &'a Trigger,
    pub mode: SyncMode,
    pub view: View,
    /// The revision planned.
    pub rev: &'a str,
    /// The persisted state: the revision last synced, failed commits and lost-write rewrites
    /// with their backoff.
    pub state: &'a State,
    /// Apps a drift policy wants put back now (`correct`, past `correctAfter`).
    pub corrections: &'a BTreeSet<AppId>,
    /// Updates whose live app is back at an older definition Baton wrote and nobody edited
    /// ([`lost_writes`]).
    pub lost_writes: &'a BTreeSet<AppId>,
    /// Which updates roll out instead (`crate::rollout`), which are held by one.
    pub rollouts: &'a RolloutView,
    pub now_ms: u64,
    /// A per-app `POST /api/sync?app=...`: only these apps' changes may apply this cycle (as
    /// `POST /api/sync` would apply them); every other change is held ([`HoldReason::NotAsked`])
    /// and the revision is not complete. `None`: every app, as the trigger and mode say.
    pub only: Option<&'a BTreeSet<AppId>>,
}

/// What the cycle rule needs to know of rollouts (`crate::rollout::view` builds it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RolloutView {
    /// Apps with a rollout in progress: the stable is never written by a cycle meanwhile.
    pub active: BTreeSet<AppId>,
    /// Apps whose update starts a rollout instead of a plain update (the spec has `rollout`
    /// and the live stable carries the deployment-group label).
    pub eligible: BTreeSet<AppId>,
    /// Apps whose rollout cannot run, and why (e.g. no `--haproxy-stats`): held, never
    /// silently updated in place.
    pub blocked: std::collections::BTreeMap<AppId, String>,
    /// Apps whose current definition was rolled back: held until it changes.
    pub rolled_back: BTreeSet<AppId>,
}

/// Why a planned change is not applied this cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldReason {
    /// Seen from a view of some apps only ([`View::Apps`]): deletions wait for a full cycle.
    PartialView,
    /// `--sync=manual`: changes wait for `POST /api/sync`.
    Manual,
    /// Applying this very commit failed before; it is tried again at `retry_at_ms`.
    Backoff { retry_at_ms: u64 },
    /// The scheduler lost Baton's write again right after it was written again at this commit;
    /// the next rewrite waits until `retry_at_ms` (so Baton never fights another writer).
    RewriteBackoff { retry_at_ms: u64 },
    /// The revision is applied already and this difference is drift that no policy corrects
    /// now (reported; `POST /api/sync` applies it).
    Drift,
    /// A rollout of the app is in progress (`phase`: its phase's name): the stable app is not
    /// written by a cycle meanwhile (no update, correction or rewrite); the rollout ends by
    /// writing it itself, or rolls back.
    RollingOut { phase: String },
    /// The app's update would start a rollout that cannot run here (`why`, e.g. no
    /// `--haproxy-stats`): held, never silently done in place.
    RolloutBlocked { why: String },
    /// This very definition was rolled back (at `commit`): it is not rolled out again until the
    /// definition changes or an operator promotes it.
    RolledBack { commit: String },
    /// A per-app sync ([`Input::only`]) names other apps: this one waits for its own cycle.
    NotAsked,
}

impl std::fmt::Display for HoldReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HoldReason::PartialView => f.write_str("a deletion waits for a full cycle"),
            HoldReason::Manual => f.write_str("manual sync mode: waits for POST /api/sync"),
            HoldReason::Backoff { retry_at_ms } => {
                write!(
                    f,
                    "a failed apply of this commit backs off until {retry_at_ms} ms"
                )
            }
            HoldReason::RewriteBackoff { retry_at_ms } => write!(
                f,
                "a lost write written again backs off until {retry_at_ms} ms"
            ),
            HoldReason::Drift => f.write_str("drift at an applied revision, not corrected now"),
            HoldReason::RollingOut { phase } => write!(f, "a rollout is in progress ({phase})"),
            HoldReason::RolloutBlocked { why } => write!(f, "the rollout cannot run: {why}"),
            HoldReason::NotAsked => f.write_str("a per-app sync of other apps"),
            HoldReason::RolledBack { commit } => write!(
                f,
                "this definition was rolled back (commit {commit}); a commit that changes it rolls it out again"
            ),
        }
    }
}

/// One change held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub app: AppId,
    pub action: PlanAction,
    pub reason: HoldReason,
}

/// What a cycle does with its plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The plan with only the changes to apply now (its own holds, conflicts, unchanged and
    /// invalid apps kept as planned).
    pub plan: Plan,
    /// The changes held back, and why.
    pub held: Vec<Hold>,
    /// Apps in `plan` written again because the scheduler lost Baton's write of them: their
    /// per-commit backoff starts now ([`State::record_rewrite`]).
    pub rewrites: Vec<AppId>,
    /// The revision is not the one last synced.
    pub new_revision: bool,
    /// The cycle applies the revision as a whole: once it ran to its end (not abandoned) the
    /// revision is the one last synced, and it counts as a deployment.
    pub completes_revision: bool,
    /// Vault policies and roles may be written (in auto mode every full cycle puts them back).
    pub vault_writes: bool,
    /// The cycle belongs in the history: it writes something, or it is a full look at a new
    /// revision, or it was asked for (`POST /api/sync`).
    pub record: bool,
    /// Manual mode held work back and nothing is written: the cycle's outcome is `planned`.
    pub planned_only: bool,
    /// The apps whose writes count as drift corrections (none when the revision applies as a
    /// whole: those writes deploy).
    pub corrections: BTreeSet<AppId>,
    /// Updates taken out of `plan` to start a rollout each (`crate::rollout::machine::start`).
    pub rollout_starts: Vec<AppId>,
}

impl Decision {
    /// The held changes' counts, for `pending` in `/api/status`.
    pub fn pending(&self) -> Option<plan::Summary> {
        if self.held.is_empty() {
            return None;
        }
        let n = |a: PlanAction| self.held.iter().filter(|h| h.action == a).count();
        Some(plan::Summary {
            create: n(PlanAction::Create),
            update: n(PlanAction::Update),
            delete: n(PlanAction::Delete),
            ..plan::Summary::default()
        })
    }

    /// The apps held back.
    pub fn held_ids(&self) -> BTreeSet<AppId> {
        self.held.iter().map(|h| h.app.clone()).collect()
    }
}

/// The rule: which of `plan`'s changes this cycle applies (see the module documentation), which
/// it holds and why, and what else follows from the trigger, the mode and the state.
pub fn decide(input: &Input<'_>, mut plan: Plan) -> Decision {
    let Input {
        trigger,
        mode,
        view,
        rev,
        state,
        corrections,
        lost_writes,
        rollouts,
        now_ms: now,
        only,
    } = *input;
    let manual = mode == SyncMode::Manual;
    let asked = *trigger == Trigger::ManualSync;
    let new_revision = state.last_synced.as_deref() != Some(rev);
    // Everything in view applies: a new revision in auto mode, or POST /api/sync.
    let everything = if manual { asked } else { new_revision || asked };
    let may_retry = !manual || asked;
    let failure = |app: &AppId| {
        (state.apps.get(app.as_str()))
            .and_then(|a| a.failure.as_ref())
            .filter(|f| f.commit == rev)
    };
    let rewrite_backoff = |app: &AppId| {
        (state.apps.get(app.as_str()))
            .and_then(|a| a.rewrite.as_ref())
            .filter(|r| r.commit == rev && now < r.retry_at_ms)
    };
    // A lost write is written again at an applied revision in auto mode, unless that very
    // rewrite backs off.
    let rewrite = |c: &Change| {
        !everything && !manual && lost_writes.contains(&c.app) && rewrite_backoff(&c.app).is_none()
    };
    let mut held = Vec::new();
    let mut rewrites = Vec::new();
    let mut rollout_starts = Vec::new();
    let removed = retain_changes(&mut plan, |c| {
        let reason = if only.is_some_and(|apps| !apps.contains(&c.app)) {
            Some(HoldReason::NotAsked)
        } else if view == View::Apps && c.action == PlanAction::Delete {
            Some(HoldReason::PartialView)
        } else {
            let retry_due = failure(&c.app).is_some_and(|f| now >= f.retry_at_ms);
            let correct = !manual && c.action != PlanAction::Delete && corrections.contains(&c.app);
            let allowed = everything || (may_retry && retry_due) || correct || rewrite(c);
            let backoff = failure(&c.app).filter(|f| now < f.retry_at_ms);
            match (allowed, backoff) {
                (true, None) => None,
                (false, _) if manual && !asked => Some(HoldReason::Manual),
                (_, Some(f)) => Some(HoldReason::Backoff {
                    retry_at_ms: f.retry_at_ms,
                }),
                (false, None) => Some(match rewrite_backoff(&c.app) {
                    Some(r) if !manual && lost_writes.contains(&c.app) => {
                        HoldReason::RewriteBackoff {
                            retry_at_ms: r.retry_at_ms,
                        }
                    }
                    _ => HoldReason::Drift,
                }),
            }
        };
        let reason = match rollout_rule(c, reason, rollouts, state) {
            RolloutRule::Start => {
                rollout_starts.push(c.app.clone());
                return false;
            }
            RolloutRule::Plain(reason) => reason,
        };
        match reason {
            Some(reason) => {
                held.push(Hold {
                    app: c.app.clone(),
                    action: c.action,
                    reason,
                });
                false
            }
            None => {
                if rewrite(c) {
                    rewrites.push(c.app.clone());
                }
                true
            }
        }
    });
    debug_assert_eq!(removed.len(), held.len() + rollout_starts.len());
    // A per-app sync never completes the revision: the other apps still wait for theirs.
    let completes_revision = everything && view == View::All && only.is_none();
    // A rollout started is a write too (its canary's).
    let writes = !plan.is_empty() || !rollout_starts.is_empty();
    Decision {
        record: writes || (view == View::All && (new_revision || asked)),
        // Apps a per-app sync did not name are not what it planned.
        planned_only: manual && held.iter().any(|h| h.reason != HoldReason::NotAsked) && !writes,
        vault_writes: !manual || asked,
        corrections: if completes_revision {
            BTreeSet::new()
        } else {
            corrections.clone()
        },
        plan,
        held,
        rewrites,
        new_revision,
        completes_revision,
        rollout_starts,
    }
}

/// What [`rollout_rule`] does with one change.
enum RolloutRule {
    /// Take it out of the plan: a rollout starts instead of the update.
    Start,
    /// Apply it (`None`) or hold it, as planned.
    Plain(Option<HoldReason>),
}

/// The rollout part of the rule for one change, given the hold `reason` the rest of the rule
/// found (`None`: it would apply). Manual mode, a failure's backoff and a partial view keep
/// priority. Then an app with a rollout in progress is held (a create or update, however it
/// came: a new revision, a drift correction, a lost write written again: only the rollout
/// writes the stable). Then an update (not an adoption) of a definition that was rolled back
/// is held, eligible or not; one that would apply and is eligible starts a rollout, unless the
/// rollout cannot run here.
fn rollout_rule(
    c: &Change,
    reason: Option<HoldReason>,
    rollouts: &RolloutView,
    state: &State,
) -> RolloutRule {
    use RolloutRule::{Plain, Start};
    let writes_stable = c.action != PlanAction::Delete;
    match reason {
        Some(
            r @ (HoldReason::Manual
            | HoldReason::Backoff { .. }
            | HoldReason::PartialView
            | HoldReason::NotAsked),
        ) => Plain(Some(r)),
        _ if writes_stable && rollouts.active.contains(&c.app) => {
            let phase = state
                .rollouts
                .get(c.app.as_str())
                .map(|r| crate::rollout::view::phase_name(&r.phase).to_string())
                .unwrap_or_else(|| "starting".to_string());
            Plain(Some(HoldReason::RollingOut { phase }))
        }
        Some(r) => Plain(Some(r)),
        // Eligible or not: a stable that lost its group label (a hand edit) would otherwise
        // get the definition that was rolled back written in place.
        None if c.action == PlanAction::Update
            && !c.adopt
            && rollouts.rolled_back.contains(&c.app) =>
        {
            let commit = (state.apps.get(c.app.as_str()))
                .and_then(|a| a.rolled_back.as_ref())
                .map(|r| r.commit.clone())
                .unwrap_or_default();
            Plain(Some(HoldReason::RolledBack { commit }))
        }
        None if c.action == PlanAction::Update
            && !c.adopt
            && rollouts.eligible.contains(&c.app) =>
        {
            if let Some(why) = rollouts.blocked.get(&c.app) {
                Plain(Some(HoldReason::RolloutBlocked { why: why.clone() }))
            } else {
                Start
            }
        }
        None => Plain(None),
    }
}

/// When the loop runs again after a cycle: at the earliest failed-app retry (from `state`),
/// `correctAfter` grace period (`correction_at_ms`) or rollout's next look (`rollout_wake_ms`,
/// the earliest `wake_at_ms` of the rollouts in progress), at least [`MIN_REQUEUE`] from
/// `now_ms`; else it waits for a trigger.
pub fn next_action(
    state: &State,
    correction_at_ms: Option<u64>,
    rollout_wake_ms: Option<u64>,
    now_ms: u64,
) -> Action {
    let wake = [state.next_retry_ms(), correction_at_ms, rollout_wake_ms]
        .into_iter()
        .flatten()
        .min();
    match wake {
        Some(at) => {
            Action::requeue(Duration::from_millis(at.saturating_sub(now_ms)).max(MIN_REQUEUE))
        }
        None => Action::await_change(),
    }
}

/// The requeue the loop keeps after a cycle of `trigger` that asked for `next`, with `kept`
/// the one pending before it. A scheduler-event cycle may look at a few apps only, so a retry
/// already due for a failed cycle (the error policy's) still runs; any other cycle replaces it.
pub fn next_requeue<T: Ord>(trigger: &Trigger, kept: Option<T>, next: Option<T>) -> Option<T> {
    match (trigger, kept, next) {
        (Trigger::SchedulerEvent { .. }, Some(kept), Some(next)) => Some(kept.min(next)),
        (Trigger::SchedulerEvent { .. }, kept, next) => kept.or(next),
        (_, _, next) => next,
    }
}

/// Backoff of the n-th consecutive failed cycle: `ERROR_BACKOFF_BASE * 2^(n-1)`, capped at
/// `ERROR_BACKOFF_MAX`.
pub fn error_backoff(consecutive: u32) -> Duration {
    let exp = consecutive.saturating_sub(1).min(16);
    ERROR_BACKOFF_BASE
        .saturating_mul(1u32 << exp)
        .min(ERROR_BACKOFF_MAX)
}

/// The updates of `plan` whose live app stands [`Standing::Behind`]: it carries the digest of an
/// older definition Baton wrote and still matches it, so the scheduler lost Baton's newer write.
/// An app changed by hand since is not among them: that is drift, left to its policy. Adoptions
/// never are (the app carries no digest of Baton's).
pub fn lost_writes(repo: &Repo, live: &[Value], plan: &Plan) -> BTreeSet<AppId> {
    let updates: std::collections::HashMap<&str, &AppId> = plan
        .changes()
        .filter(|c| c.action == PlanAction::Update && !c.adopt)
        .map(|c| (c.app.as_str(), &c.app))
        .collect();
    if updates.is_empty() {
        return BTreeSet::new();
    }
    live.iter()
        .filter_map(|l| {
            let id = *updates.get(l.get("id")?.as_str()?)?;
            let spec = repo.specs.get(id)?;
            let behind = ownership::standing(spec, &repo.config.owner, l) == Standing::Behind;
            behind.then(|| id.clone())
        })
        .collect()
}

/// Remove the changes `keep` rejects from `plan` (dropping empty waves, recounting); returns
/// the removed ones.
pub fn retain_changes(
    plan: &mut Plan,
    mut keep: impl FnMut(&Change) -> bool,
) -> Vec<(AppId, PlanAction)> {
    let mut removed = Vec::new();
    for wave in &mut plan.waves {
        wave.changes.retain(|c| {
            let k = keep(c);
            if !k {
                removed.push((c.app.clone(), c.action));
            }
            k
        });
    }
    plan.waves.retain(|w| !w.changes.is_empty());
    let count = |p: &Plan, a: PlanAction| p.changes().filter(|c| c.action == a).count();
    plan.summary.create = count(plan, PlanAction::Create);
    plan.summary.update = count(plan, PlanAction::Update);
    plan.summary.delete = count(plan, PlanAction::Delete);
    removed
}

#[cfg(test)]
mod tests;
