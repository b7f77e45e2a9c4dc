//! The state machine of one rollout: [`advance`], pure and level-triggered. Each phase names the
//! canary and stable that should exist, compares them with live and emits only the missing
//! writes, so a re-run after a crash, a 409 or a lost scheduler repeats nothing.
//!
//! Phases: `Launch` (the canary, isolated with 1 instance, or joined at the first step's size
//! without an isolated step) -> `Check` (the isolated check against its task) -> `Step(k)` (joined
//! with C_k instances, judged by HAProxy's counters) ... -> `Switch` (C = S: every stable server
//! drained) -> `UpdateStable` (the stable PUT at the new definition, until its deployment is done)
//! -> `Retire` (the canary deleted) -> `Completed`. Any failure before `UpdateStable` ->
//! `RollBack` (the canary deleted; the stable never written) -> `RolledBack`.
//!
//! Before every phase up to `Switch`, in this order: an operator's abort rolls back; an invalid
//! spec holds (nothing written, nothing judged); the spec or its rollout gone, or a new
//! definition (superseded), roll back; an app at the canary's id that is not this rollout's
//! holds (never touched) until the deadline; the stable gone, a canary task failure since the
//! start (`lastTaskFailure`) and a phase over `baton.deadline` (a step: plus its pause) roll back.
//! In `UpdateStable` only the first three apply, and a removed or superseded spec finishes the
//! rollout (the canary goes once the stable's deployment is done) instead: the stable is
//! already written. The machine deletes only an app at its canary's id that carries its owner
//! and `baton.dev/rollout-of` = the stable's id, and writes the stable only in `UpdateStable`.

use std::time::Duration;

use serde_json::{Map, Value};
use time::macros::format_description;

use super::haproxy::{self, Servers};
use super::{
    canary_id, CheckOutcome, CheckRun, Decision, Input, OperatorCommand, Outcome, Phase, Reason,
    Rollout, RolloutState, RolloutStatus, Step, Strategy, TimelineEntry, Window, DEPLOYMENT_GROUP,
    DEPLOYMENT_STARTED_AT, ROLLOUT_OF, TIMELINE,
};
use crate::diff::all_differences;
use crate::ownership;
use crate::plan::{Action, Change, Plan, Summary, Wave};
use crate::spec::normalize::{normalize, Tolerance};
use crate::spec::{AppId, Spec};

/// marathon-lb's label naming the load balancer group(s) an app is exposed in.
const HAPROXY_GROUP: &str = "HAPROXY_GROUP";

/// How soon to look again while something moves (a write, a deployment, a check).
const SOON_MS: u64 = 1_000;
/// How soon to look again while waiting on the scheduler or on traffic: often enough that a bad
/// canary is rolled back within seconds of its numbers crossing the limit.
const TICK_MS: u64 = 5_000;
/// Phase transitions evaluated in one [`advance`] (each is cheap; the bound only guards loops).
const MAX_MOVES: usize = 8;

/// The state of a rollout of `spec` at `rev`, starting now.
///
/// Its `digest` is provisional: the digest everything else compares (`baton.dev/digest`, what
/// `AppState.rolled_back.digest` holds) covers the owner label, which is not known here; the
/// first [`advance`] with the spec replaces it (see [`spec_digest`]).
pub fn start(spec: &Spec, rev: &str, now_ms: u64) -> RolloutState {
    let rollout = spec.baton.rollout.as_ref();
    let strategy = rollout.map_or(Strategy::Canary, |r| r.strategy);
    RolloutState {
        commit: rev.to_string(),
        digest: provisional_digest(spec),
        strategy,
        canary: canary_id(spec.id.as_str()),
        started_at: naive_iso(now_ms),
        phase: Phase::Launch,
        entered_ms: now_ms,
        window: None,
        timeline: vec![TimelineEntry {
            at_ms: now_ms,
            event: format!("rollout of {rev} started"),
        }],
        analysis: rollout.map(|r| r.analysis),
    }
}

/// One step of the rollout `state`: what to write, what to check, what to persist.
pub fn advance(state: &RolloutState, input: &Input<'_>) -> Decision {
    let mut m = Machine::new(state, input);
    for _ in 0..MAX_MOVES {
        if !m.tick() {
            break;
        }
    }
    m.decision()
}

/// The digest of the definition Baton sends for `spec` (the `baton.dev/digest` label's value,
/// as `rollout::view` computes it): what [`RolloutState::digest`] holds once the rollout has
/// advanced, and what a new commit is compared with.
pub fn spec_digest(spec: &Spec, owner: &str) -> String {
    ownership::digest_of_normalized(&ownership::normal_form(spec, owner))
}

/// [`start`]'s digest, without the owner: replaced by [`spec_digest`] on the first advance.
fn provisional_digest(spec: &Spec) -> String {
    ownership::digest_of(&spec.app)
}

/// `now_ms` as marathon-lb wants `HAPROXY_DEPLOYMENT_STARTED_AT`: a naive ISO time in UTC
/// (`2025-01-02T03:04:05.000000`). marathon-lb compares it with `datetime.min`, which raises on
/// a time with a zone and stops its regeneration for every app.
pub fn naive_iso(now_ms: u64) -> String {
    let nanos = i128::from(now_ms) * 1_000_000;
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]"
    ))
    .unwrap_or_else(|_| "1970-01-01T00:00:00.000000".to_string())
}

/// The Unix ms of a [`naive_iso`] time (UTC).
fn parse_naive_iso(s: &str) -> Option<u64> {
    let t = time::PrimitiveDateTime::parse(
        s,
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]"),
    )
    .ok()?;
    u64::try_from(t.assume_utc().unix_timestamp_nanos() / 1_000_000).ok()
}

/// The Unix ms of an RFC 3339 time (Marathon's timestamps).
fn parse_rfc3339(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Canary instances at `percent` of a stable app of `stable` instances: round(p·S/100) within
/// 1..=S (marathon-lb drains one stable server per healthy canary task, so the share is C/S).
pub fn instances_at(percent: u8, stable: u64) -> u64 {
    let s = stable.max(1);
    // In u128: `instances` is whatever the scheduler's JSON said.
    let c = (u128::from(percent) * u128::from(s) + 50) / 100;
    u64::try_from(c).unwrap_or(s).clamp(1, s)
}

/// The phase's name as `/api/status` shows it.
pub fn phase_name(phase: &Phase) -> &'static str {
    match phase {
        Phase::Launch => "launch",
        Phase::Check => "check",
        Phase::Step { .. } => "step",
        Phase::Switch => "switch",
        Phase::UpdateStable => "updateStable",
        Phase::Retire => "retire",
        Phase::RollBack { .. } => "rollBack",
    }
}

/// How the canary should look in a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    /// In the stable's deployment group (serving a share of its traffic), or isolated.
    joined: bool,
    instances: u64,
}

/// Where the live canary stands against a [`Shape`].
enum Canary<'v> {
    /// Written as wanted, with this many healthy tasks at its current definition.
    Ready(Vec<&'v Value>),
    /// A write was planned, or its deployment is still going.
    Pending,
}

struct Machine<'s, 'i> {
    input: &'s Input<'i>,
    stable_id: String,
    next: RolloutState,
    changes: Vec<Change>,
    run_check: Option<CheckRun>,
    outcome: Option<Outcome>,
    waiting_for: Option<String>,
    wake_at_ms: u64,
    /// The operator's command, until a phase has used it.
    operator: Option<OperatorCommand>,
    /// The check outcome, until the check phase has used it.
    check: Option<&'s CheckOutcome>,
    /// This advance replaced [`start`]'s provisional digest: the state must be saved once
    /// before the rollout may end (whoever records the outcome reads the saved digest).
    settled_digest: bool,
}

impl<'s, 'i> Machine<'s, 'i> {
    fn new(state: &RolloutState, input: &'s Input<'i>) -> Self {
        let stable_id = input.spec.map_or_else(
            || {
                state
                    .canary
                    .strip_suffix(super::CANARY_SUFFIX)
                    .unwrap_or(&state.canary)
                    .to_string()
            },
            |s| s.id.as_str().to_string(),
        );
        let mut next = state.clone();
        let mut settled_digest = false;
        if let Some(r) = input.spec.and_then(|s| s.baton.rollout.as_ref()) {
            next.analysis = Some(r.analysis);
        }
        if let Some(spec) = input.spec {
            if next.digest == provisional_digest(spec) {
                next.digest = spec_digest(spec, input.owner);
                settled_digest = true;
            }
        }
        Machine {
            input,
            stable_id,
            next,
            settled_digest,
            changes: Vec::new(),
            run_check: None,
            outcome: None,
            waiting_for: None,
            wake_at_ms: input.now_ms.saturating_add(TICK_MS),
            operator: input.operator,
            check: input.check,
        }
    }

    fn now(&self) -> u64 {
        self.input.now_ms
    }

    /// The spec's rollout, when the spec is there and still has one.
    fn rollout(&self) -> Option<&'i Rollout> {
        self.input.spec.and_then(|s| s.baton.rollout.as_ref())
    }

    /// Evaluate the current phase once. True when it moved to another phase (evaluate again).
    fn tick(&mut self) -> bool {
        let phase = self.next.phase.clone();
        match phase {
            Phase::RollBack { reason } => return self.remove_canary(Some(reason)),
            Phase::Retire => return self.remove_canary(None),
            _ => {}
        }
        if let Some(moved) = self.global_rules(&phase) {
            return moved;
        }
        match phase {
            Phase::Launch => self.launch(),
            Phase::Check => self.check(),
            Phase::Step { index } => self.step(index),
            Phase::Switch => self.switch(),
            Phase::UpdateStable => self.update_stable(),
            Phase::Retire | Phase::RollBack { .. } => false,
        }
    }

    /// The rules of every phase before `Retire`: `Some(moved)` when one applied (it moved the
    /// rollout on, or holds it).
    fn global_rules(&mut self, phase: &Phase) -> Option<bool> {
        let updating = *phase == Phase::UpdateStable;
        if self.operator == Some(OperatorCommand::Abort) {
            self.operator = None;
            if updating {
                self.note("abort ignored: the stable app is already being updated");
            } else {
                return Some(self.roll_back(Reason::Aborted));
            }
        }
        if self.input.spec_invalid {
            if let Some(reason) = self.judge_failure_only(phase) {
                return Some(self.roll_back(reason));
            }
            self.hold(format!(
                "the app's spec does not validate at {}: holding",
                short(self.input.rev)
            ));
            return Some(false);
        }
        if self.rollout().is_none() {
            return Some(if updating {
                self.finish_update("the spec (or its rollout) was removed")
            } else {
                self.roll_back(Reason::SpecRemoved)
            });
        }
        let spec = self.input.spec?;
        if spec_digest(spec, self.input.owner) != self.next.digest {
            return Some(if updating {
                self.finish_update("superseded by a newer commit")
            } else {
                self.roll_back(Reason::Superseded)
            });
        }
        if updating {
            return None;
        }
        if self.foreign_canary() {
            self.hold(format!(
                "an app {} exists that is not this rollout's canary (owner or `{ROLLOUT_OF}` label): it is never touched",
                self.next.canary
            ));
            return Some(self.over_deadline(phase, spec));
        }
        if self.input.stable.is_none() {
            return Some(self.roll_back(Reason::Crashed {
                message: format!("the stable app {} is gone", self.stable_id),
            }));
        }
        if let Some(message) = self.canary_failure() {
            return Some(self.roll_back(Reason::Crashed { message }));
        }
        if self.over_deadline(phase, spec) {
            return Some(true);
        }
        None
    }

    /// While the step cannot go on (the spec does not validate, a canary task is unhealthy or
    /// its scale under way) the canary still serves: an open window is still observed, and a
    /// failing one (by the limits last seen) is the reason to roll back; nothing passes.
    fn judge_failure_only(&mut self, phase: &Phase) -> Option<Reason> {
        let Phase::Step { index } = *phase else {
            return None;
        };
        let (analysis, sample) = (self.next.analysis?, self.input.sample?);
        let mut window = self.next.window.take()?;
        let canary = Servers::of_app(self.input.canary, live_tasks(self.input.canary));
        let stable = Servers::of_app(self.input.stable, live_tasks(self.input.stable));
        window.observe(sample, &canary, &stable);
        let c = window.canary;
        let rate = haproxy::error_rate(&c);
        self.next.window = Some(window);
        (c.responses >= analysis.min_requests && rate > analysis.max_error_rate).then_some(
            Reason::Analysis {
                step: index,
                requests: c.responses,
                errors: c.errors,
                rate,
            },
        )
    }

    /// Roll back when `phase` has lasted longer than the app's deadline (a traffic step: its
    /// pause plus the deadline). True when it did.
    fn over_deadline(&mut self, phase: &Phase, spec: &Spec) -> bool {
        let mut limit = spec.baton.deadline;
        if let (Phase::Step { index }, Some(r)) = (phase, self.rollout()) {
            if let Some(Step::Traffic { pause, .. }) = r.steps.get(*index) {
                limit = limit.saturating_add(*pause);
            }
        }
        let elapsed = self.now().saturating_sub(self.next.entered_ms);
        if u128::from(elapsed) <= limit.as_millis() {
            return false;
        }
        self.roll_back(Reason::Deadline {
            phase: phase_name(phase).to_string(),
        })
    }

    fn launch(&mut self) -> bool {
        let Some(rollout) = self.rollout() else {
            return false;
        };
        let after = self.after_check(rollout);
        let shape = if isolated_check(rollout).is_some() {
            Shape {
                joined: false,
                instances: 1,
            }
        } else {
            self.shape_of(rollout, &after)
        };
        if self.take_promote() {
            return self.move_to(after, "promoted by an operator: launch and check passed");
        }
        match self.ensure_canary(shape) {
            Canary::Pending => false,
            Canary::Ready(_) if isolated_check(rollout).is_some() => {
                self.move_to(Phase::Check, "canary healthy (isolated)")
            }
            Canary::Ready(_) => self.move_to(after, "canary healthy"),
        }
    }

    fn check(&mut self) -> bool {
        let Some(rollout) = self.rollout() else {
            return false;
        };
        let after = self.after_check(rollout);
        if self.take_promote() {
            return self.move_to(after, "promoted by an operator: check passed");
        }
        let Some(check) = isolated_check(rollout) else {
            return self.move_to(after, "no check to run");
        };
        let tasks = match self.ensure_canary(Shape {
            joined: false,
            instances: 1,
        }) {
            Canary::Pending => return false,
            Canary::Ready(tasks) => tasks,
        };
        match self.check.take() {
            Some(CheckOutcome::Passed) => self.move_to(after, "check passed"),
            Some(CheckOutcome::Failed { output }) => self.roll_back(Reason::CheckFailed {
                output: redact_env(output, self.input.canary, self.input.spec),
            }),
            None => {
                let Some(task) = tasks.first() else {
                    return false;
                };
                let (host, ports) = check_address(self.input.canary, task);
                self.run_check = Some(CheckRun {
                    check: check.clone(),
                    app: self.next.canary.clone(),
                    host,
                    ports,
                });
                self.waiting_for = Some("the check of the isolated canary".into());
                self.wake_at_ms = self.now().saturating_add(SOON_MS);
                false
            }
        }
    }

    fn step(&mut self, index: usize) -> bool {
        let Some(rollout) = self.rollout() else {
            return false;
        };
        let Some(&Step::Traffic { percent, pause }) = rollout.steps.get(index) else {
            let after = next_traffic(rollout, index + 1);
            return self.move_to(after, "no traffic step here; moving on");
        };
        let after = next_traffic(rollout, index + 1);
        let shape = Shape {
            joined: true,
            instances: instances_at(percent, self.stable_instances()),
        };
        if self.take_promote() {
            self.next.window = None;
            return self.move_to(
                after,
                &format!("promoted by an operator: the {percent}% step passed"),
            );
        }
        let tasks = match self.ensure_canary(shape) {
            Canary::Pending => {
                return match self.judge_failure_only(&Phase::Step { index }) {
                    Some(reason) => self.roll_back(reason),
                    None => false,
                };
            }
            Canary::Ready(tasks) => tasks,
        };
        let Some(sample) = self.input.sample else {
            self.hold("the load balancer's stats (a source did not answer)".into());
            return false;
        };
        let canary = Servers::of_app(self.input.canary, live_tasks(self.input.canary));
        let stable = Servers::of_app(self.input.stable, live_tasks(self.input.stable));
        let Some(mut window) = self.next.window.take() else {
            let serving = Servers::of_app(self.input.canary, tasks.iter().copied());
            let seen = haproxy::seen_everywhere(&serving, &stable, sample) as u64;
            if seen < shape.instances {
                self.hold(format!(
                    "the canary's tasks in the load balancer's stats ({seen}/{})",
                    shape.instances
                ));
                self.wake_at_ms = self.now().saturating_add(SOON_MS);
                return false;
            }
            self.next.window = Some(Window::open(self.now(), sample, &canary, &stable));
            self.note(&format!("{percent}% step: analysis window opened"));
            self.waiting_for = Some(format!(
                "traffic: 0/{} requests",
                rollout.analysis.min_requests
            ));
            self.wake_at_ms = self.now().saturating_add(SOON_MS);
            return false;
        };
        window.observe(sample, &canary, &stable);
        let c = window.canary;
        let rate = haproxy::error_rate(&c);
        let analysis = rollout.analysis;
        let enough = c.responses >= analysis.min_requests;
        if enough && rate > analysis.max_error_rate {
            self.next.window = Some(window);
            return self.roll_back(Reason::Analysis {
                step: index,
                requests: c.responses,
                errors: c.errors,
                rate,
            });
        }
        let pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
        let ends = window.since_ms.saturating_add(pause_ms);
        if enough && self.now() >= ends {
            self.next.window = None;
            return self.move_to(
                after,
                &format!(
                    "{percent}% step passed: {} requests, {} errors ({:.2}%)",
                    c.responses,
                    c.errors,
                    rate * 100.0
                ),
            );
        }
        self.waiting_for = Some(if enough {
            format!(
                "pause: {}s left",
                ends.saturating_sub(self.now()).div_ceil(1000)
            )
        } else {
            format!(
                "traffic: {}/{} requests",
                c.responses, analysis.min_requests
            )
        });
        self.next.window = Some(window);
        let until = if self.now() < ends { ends } else { u64::MAX };
        self.wake_at_ms = until.min(self.now().saturating_add(TICK_MS));
        false
    }

    fn switch(&mut self) -> bool {
        let shape = Shape {
            joined: true,
            instances: self.switch_instances(),
        };
        let tasks = match self.ensure_canary(shape) {
            Canary::Pending => return false,
            Canary::Ready(tasks) => tasks,
        };
        // The stable's servers are drained by marathon-lb once it has seen the canary's tasks
        // healthy: wait until the load balancer shows them before the stable is touched.
        let Some(sample) = self.input.sample else {
            self.hold("the load balancer's stats (a source did not answer)".into());
            return false;
        };
        let serving = Servers::of_app(self.input.canary, tasks.iter().copied());
        let stable = Servers::of_app(self.input.stable, live_tasks(self.input.stable));
        let seen = haproxy::seen_everywhere(&serving, &stable, sample) as u64;
        if seen < shape.instances && !self.take_promote() {
            self.hold(format!(
                "the canary's tasks in the load balancer's stats ({seen}/{})",
                shape.instances
            ));
            self.wake_at_ms = self.now().saturating_add(SOON_MS);
            return false;
        }
        self.move_to(
            Phase::UpdateStable,
            "all traffic on the canary; updating the stable app",
        )
    }

    fn update_stable(&mut self) -> bool {
        let Some(spec) = self.input.spec else {
            return false;
        };
        let live = self.input.stable;
        if let Some(other) = live
            .and_then(ownership::owner_of)
            .filter(|o| *o != self.input.owner)
        {
            // Baton changes only what it owns: someone else took the app meanwhile.
            self.hold(format!(
                "the stable app is now owned by `{other}`: it is not written"
            ));
            return false;
        }
        let mut body = ownership::labelled(spec, self.input.owner, &self.next.commit);
        if let Some(live) = live {
            body = crate::plan::keep_ignored_from_live(body, live, &spec.baton.ignore);
        }
        let wanted = match live {
            None => Some(Action::Create),
            Some(l) if !crate::plan::field_changes(spec, &body, l).is_empty() => {
                Some(Action::Update)
            }
            Some(_) => None,
        };
        if let Some(action) = wanted {
            self.write(&self.stable_id.clone(), action, Some(body), spec);
            self.waiting_for = Some("the stable app's update".into());
            return false;
        }
        let Some(live) = live else {
            return false;
        };
        let want = live.get("instances").and_then(Value::as_u64).unwrap_or(1);
        let healthy = healthy_tasks(live).len() as u64;
        if (deploying(live) || healthy < want) && !self.take_promote() {
            self.hold(format!(
                "the stable app's deployment: {healthy}/{want} tasks healthy at the new version"
            ));
            self.wake_at_ms = self.now().saturating_add(SOON_MS);
            return false;
        }
        let why = if healthy < want {
            "promoted by an operator before the stable app was healthy"
        } else {
            "stable app updated and healthy"
        };
        self.move_to(Phase::Retire, why)
    }

    /// The stable was written already and git moved on (`why`): write it no more (the next
    /// sync or rollout takes the new definition), but remove the canary, which may carry all
    /// the traffic, only once the stable's deployment is done (or an operator promotes).
    fn finish_update(&mut self, why: &str) -> bool {
        let done = self.input.stable.is_none_or(|live| {
            let want = live.get("instances").and_then(Value::as_u64).unwrap_or(1);
            !deploying(live) && healthy_tasks(live).len() as u64 >= want
        });
        if done || self.take_promote() {
            return self.move_to(Phase::Retire, &format!("{why}; finishing"));
        }
        self.hold(format!(
            "{why}: the stable app's deployment, before the canary is removed"
        ));
        self.wake_at_ms = self.now().saturating_add(SOON_MS);
        false
    }

    /// `Retire` and `RollBack`: delete the canary (only this rollout's), then end.
    fn remove_canary(&mut self, reason: Option<Reason>) -> bool {
        if self.input.canary.is_some() && !self.foreign_canary() {
            let id = self.next.canary.clone();
            let deadline = self
                .input
                .spec
                .map_or(crate::spec::BatonBlock::default().deadline, |s| {
                    s.baton.deadline
                });
            self.push_change(&id, Action::Delete, None, deadline);
            self.waiting_for = Some("the canary's removal".into());
            self.wake_at_ms = self.now().saturating_add(SOON_MS);
            return false;
        }
        let event = match &reason {
            None => "canary removed: rollout completed".to_string(),
            Some(r) => format!("canary removed: rolled back ({})", describe(r)),
        };
        self.note(&event);
        self.outcome = Some(match reason {
            None => Outcome::Completed,
            Some(reason) => Outcome::RolledBack { reason },
        });
        self.wake_at_ms = self.now();
        false
    }

    /// Make the live canary look like `shape`: plan the write when it does not (nothing when it
    /// does), and say whether it is ready (written, deployed, enough healthy tasks).
    fn ensure_canary(&mut self, shape: Shape) -> Canary<'i> {
        let Some(spec) = self.input.spec else {
            return Canary::Pending;
        };
        let body = self.canary_body(spec, shape);
        let live = self.input.canary;
        let action = match live {
            None => Some(Action::Create),
            Some(l) if differs(spec, &body, l) => Some(Action::Update),
            Some(_) => None,
        };
        if let Some(action) = action {
            let id = self.next.canary.clone();
            self.write(&id, action, Some(body), spec);
            self.waiting_for = Some(format!(
                "the canary ({} instance{}, {})",
                shape.instances,
                if shape.instances == 1 { "" } else { "s" },
                if shape.joined { "joined" } else { "isolated" }
            ));
            return Canary::Pending;
        }
        let Some(live) = live else {
            return Canary::Pending;
        };
        let healthy = healthy_tasks(live);
        if deploying(live) || (healthy.len() as u64) < shape.instances {
            self.hold(format!(
                "canary tasks healthy: {}/{}",
                healthy.len(),
                shape.instances
            ));
            self.wake_at_ms = self.now().saturating_add(SOON_MS);
            return Canary::Pending;
        }
        Canary::Ready(healthy)
    }

    /// The canary's definition: the spec's app, owned and labelled as this rollout's canary, its
    /// service ports left to the scheduler (it must not claim the stable's), and either out of
    /// every load balancer group (isolated) or in the stable's deployment group (joined: the
    /// group as the live stable carries it, `HAPROXY_GROUP` as the spec has it). Every joined
    /// body is the same but for `instances`, so a new step is a scale, not a restart.
    fn canary_body(&self, spec: &Spec, shape: Shape) -> Value {
        let mut app = ownership::labelled(spec, self.input.owner, &self.next.commit);
        let spec_labels = spec.app.get("labels").and_then(Value::as_object);
        let spec_label = |k: &str| {
            spec_labels
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let live_label = |k: &str| {
            self.input
                .stable
                .and_then(|a| a.get("labels"))
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if let Value::Object(map) = &mut app {
            map.insert("id".into(), Value::String(self.next.canary.clone()));
            map.insert("instances".into(), Value::from(shape.instances));
            unassign_ports(map);
            let labels = map
                .entry("labels")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(l) = labels {
                // No HAPROXY_* label of the stable's: a canary with HAPROXY_0_PORT or a vhost
                // would claim the stable's frontend; marathon-lb takes a merged group's ports and
                // options from the old (stable) app anyway.
                l.retain(|k, _| !k.starts_with("HAPROXY_"));
                l.remove(ownership::PRUNE);
                l.insert(ROLLOUT_OF.into(), Value::String(self.stable_id.clone()));
                if shape.joined {
                    if let Some(g) = spec_label(HAPROXY_GROUP).or_else(|| live_label(HAPROXY_GROUP))
                    {
                        l.insert(HAPROXY_GROUP.into(), Value::String(g));
                    }
                    // marathon-lb merges on the label as the stable carries it live.
                    let group = live_label(DEPLOYMENT_GROUP)
                        .or_else(|| spec_label(DEPLOYMENT_GROUP))
                        .unwrap_or_else(|| self.stable_id.clone());
                    l.insert(DEPLOYMENT_GROUP.into(), Value::String(group));
                    l.insert(
                        DEPLOYMENT_STARTED_AT.into(),
                        Value::String(self.next.started_at.clone()),
                    );
                }
            }
        }
        app
    }

    /// The canary's shape in the phase after the check.
    fn shape_of(&self, rollout: &Rollout, phase: &Phase) -> Shape {
        let instances = match phase {
            Phase::Step { index } => match rollout.steps.get(*index) {
                Some(Step::Traffic { percent, .. }) => {
                    instances_at(*percent, self.stable_instances())
                }
                _ => self.switch_instances(),
            },
            _ => self.switch_instances(),
        };
        Shape {
            joined: true,
            instances,
        }
    }

    /// The phase after the isolated check: the first traffic step, or the switch.
    fn after_check(&self, rollout: &Rollout) -> Phase {
        next_traffic(rollout, 0)
    }

    /// S: the stable's instances as they run (marathon-lb drains against the live app), or
    /// as the spec has them when the stable cannot be seen.
    fn stable_instances(&self) -> u64 {
        let live = self
            .input
            .stable
            .and_then(|s| s.get("instances"))
            .and_then(Value::as_u64);
        live.unwrap_or_else(|| self.spec_instances()).max(1)
    }

    fn spec_instances(&self) -> u64 {
        self.input
            .spec
            .and_then(|s| s.app.get("instances"))
            .and_then(Value::as_u64)
            .unwrap_or(1)
    }

    /// The canary's size at the switch: enough to drain every stable server, and the size the
    /// new definition asks for when that is more (unless `instances` is under `baton.ignore`:
    /// an autoscaler's, and the number in git means nothing).
    fn switch_instances(&self) -> u64 {
        let ignored = self
            .input
            .spec
            .is_some_and(|s| crate::diff::under_any("/instances", &s.baton.ignore));
        let spec = if ignored { 1 } else { self.spec_instances() };
        self.stable_instances().max(spec).max(1)
    }

    /// A live app at the canary's id that this rollout does not own: never written or deleted.
    fn foreign_canary(&self) -> bool {
        let Some(live) = self.input.canary else {
            return false;
        };
        let labels = live.get("labels");
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        ownership::owner_of(live) != Some(self.input.owner)
            || label(ROLLOUT_OF) != Some(self.stable_id.as_str())
    }

    /// A task failure of the canary since the rollout began (`lastTaskFailure`, as Marathon and
    /// the dev scheduler report a task that failed, not one they killed on purpose).
    fn canary_failure(&self) -> Option<String> {
        let failure = self.input.canary?.get("lastTaskFailure")?;
        let at = failure
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(parse_rfc3339)?;
        let since = parse_naive_iso(&self.next.started_at).unwrap_or(self.next.entered_ms);
        if at <= since {
            return None;
        }
        let field = |k: &str| failure.get(k).and_then(Value::as_str).unwrap_or("");
        let mut message = format!("canary task {} ended {}", field("taskId"), field("state"));
        // Redacted before the cut, so that no prefix of a value is left either.
        let said = redact_env(field("message"), self.input.canary, self.input.spec);
        if !said.is_empty() {
            message.push_str(": ");
            message.extend(said.chars().take(300));
        }
        Some(message)
    }

    fn take_promote(&mut self) -> bool {
        if self.operator == Some(OperatorCommand::Promote) {
            self.operator = None;
            true
        } else {
            false
        }
    }

    fn write(&mut self, id: &str, action: Action, body: Option<Value>, spec: &Spec) {
        self.push_change(id, action, body, spec.baton.deadline);
        self.wake_at_ms = self.now().saturating_add(SOON_MS);
    }

    fn push_change(&mut self, id: &str, action: Action, body: Option<Value>, deadline: Duration) {
        let Ok(app) = AppId::parse(id) else {
            self.hold(format!("{id} is not a valid app id"));
            return;
        };
        // One write per app per decision.
        if self.changes.iter().any(|c| c.app == app) {
            return;
        }
        self.changes.push(Change {
            app,
            action,
            // As in a sync's plan: the spec file for writes of a definition, none for deletes.
            file: (action != Action::Delete)
                .then(|| self.input.spec.map(|s| s.file.clone()))
                .flatten(),
            fields: Vec::new(),
            adopt: false,
            deadline_seconds: deadline.as_secs(),
            depends_on: Vec::new(),
            body,
        });
    }

    fn hold(&mut self, why: String) {
        self.waiting_for = Some(why);
    }

    fn note(&mut self, event: &str) {
        self.next.timeline.push(TimelineEntry {
            at_ms: self.now(),
            event: event.to_string(),
        });
        let extra = self.next.timeline.len().saturating_sub(TIMELINE);
        self.next.timeline.drain(..extra);
    }

    fn move_to(&mut self, phase: Phase, why: &str) -> bool {
        self.note(why);
        self.next.phase = phase;
        self.next.entered_ms = self.now();
        self.waiting_for = None;
        self.wake_at_ms = self.now().saturating_add(SOON_MS);
        true
    }

    fn roll_back(&mut self, reason: Reason) -> bool {
        // A write of the canary planned earlier in this decision is moot: it is removed.
        let canary = self.next.canary.clone();
        self.changes.retain(|c| c.app.as_str() != canary);
        let why = format!("rolling back: {}", describe(&reason));
        self.move_to(Phase::RollBack { reason }, &why)
    }

    fn decision(mut self) -> Decision {
        if self.settled_digest && self.outcome.is_some() {
            // Ends at the next advance, from a saved state with the settled digest.
            self.outcome = None;
            self.next.timeline.pop();
            self.wake_at_ms = self.now();
        }
        let stable_instances = self.stable_instances();
        let state = self.next;
        let joined = self
            .input
            .canary
            .and_then(|c| c.get("labels"))
            .is_some_and(|l| l.get(DEPLOYMENT_GROUP).is_some());
        let traffic_percent = match self.input.canary {
            Some(c) if joined => {
                let healthy = healthy_tasks(c).len() as u64;
                (healthy.min(stable_instances) as f64) * 100.0 / stable_instances as f64
            }
            _ => 0.0,
        };
        let status = RolloutStatus {
            strategy: state.strategy,
            commit: state.commit.clone(),
            phase: phase_name(&state.phase).to_string(),
            step: match state.phase {
                Phase::Step { index } => Some(index),
                _ => None,
            },
            traffic_percent,
            canary_app: state.canary.clone(),
            window: state.window.clone(),
            waiting_for: self.waiting_for,
            timeline: state.timeline.clone(),
        };
        let waves = if self.changes.is_empty() {
            Vec::new()
        } else {
            vec![Wave {
                changes: self.changes,
            }]
        };
        let count = |a: Action| {
            waves
                .iter()
                .flat_map(|w| &w.changes)
                .filter(|c| c.action == a)
                .count()
        };
        let summary = Summary {
            create: count(Action::Create),
            update: count(Action::Update),
            delete: count(Action::Delete),
            ..Summary::default()
        };
        let plan = Plan {
            owner: self.input.owner.to_string(),
            owner_explicit: true,
            id_prefixes: None,
            commit: state.commit.clone(),
            summary,
            waves,
            unchanged: Vec::new(),
            invalid: Vec::new(),
            unmanaged: Vec::new(),
            held: Vec::new(),
            moves: Vec::new(),
            conflicts: Vec::new(),
            out_of_scope: Vec::new(),
        };
        Decision {
            plan,
            run_check: self.run_check,
            next: if self.outcome.is_some() {
                None
            } else {
                Some(state)
            },
            outcome: self.outcome,
            wake_at_ms: self.wake_at_ms,
            status,
        }
    }
}

/// `text` without the app's env values (live or as spec'd): Mesos' message for a container that
/// did not start can quote the whole `docker run` line, `-e NAME=value` for each, and a failed
/// check's output is what the task answered (a health page may dump its config). Values under 4
/// characters (`on`, `1`) are left: they are no secrets and would mangle the text.
fn redact_env(text: &str, live: Option<&Value>, spec: Option<&Spec>) -> String {
    let mut values: Vec<&str> = [live, spec.map(|s| &s.app)]
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("env").and_then(Value::as_object))
        .flat_map(|env| env.values().filter_map(Value::as_str))
        .filter(|v| v.chars().count() >= 4)
        .collect();
    // Longest first: a value containing another is replaced whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = text.to_string();
    for v in values {
        if out.contains(v) {
            out = out.replace(v, "***");
        }
    }
    out
}

/// The isolated step's check, if the rollout has one.
fn isolated_check(rollout: &Rollout) -> Option<&super::Check> {
    rollout.steps.iter().find_map(|s| match s {
        Step::Isolated(c) => Some(c),
        Step::Traffic { .. } => None,
    })
}

/// The first traffic step at or after `from`, or the switch.
fn next_traffic(rollout: &Rollout, from: usize) -> Phase {
    rollout
        .steps
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, s)| matches!(s, Step::Traffic { .. }))
        .map_or(Phase::Switch, |(index, _)| Phase::Step { index })
}

/// For people: what a reason means.
pub fn describe(reason: &Reason) -> String {
    match reason {
        Reason::CheckFailed { output } => format!("the isolated check failed: {output}"),
        Reason::Analysis {
            step,
            requests,
            errors,
            rate,
        } => format!(
            "step {step}: {errors} of {requests} canary responses were 5xx ({:.2}%)",
            rate * 100.0
        ),
        Reason::Crashed { message } => format!("the canary crashed: {message}"),
        Reason::Deadline { phase } => format!("the {phase} phase missed its deadline"),
        Reason::Superseded => "superseded by a newer commit".into(),
        Reason::Aborted => "aborted by an operator".into(),
        Reason::SpecRemoved => "the app's spec or its rollout was removed".into(),
    }
}

fn short(rev: &str) -> &str {
    rev.get(..12).unwrap_or(rev)
}

/// Whether the live app differs from the definition, the way a sync judges it (service ports
/// the scheduler assigns and older defaults are not differences).
fn differs(spec: &Spec, desired: &Value, live: &Value) -> bool {
    let tolerance = Tolerance::for_spec(&spec.app);
    !all_differences(&normalize(desired), &normalize(live), |p, d, l| {
        tolerance.allows(p, d, l)
    })
}

/// Service ports `0` (assigned by the scheduler), fixed host ports too: the canary runs next to
/// the stable and must not claim its ports.
fn unassign_ports(app: &mut Map<String, Value>) {
    let zero = |list: Option<&mut Value>, keys: &[&str]| {
        for item in list.and_then(Value::as_array_mut).into_iter().flatten() {
            if let Value::Object(m) = item {
                for k in keys {
                    if m.contains_key(*k) {
                        m.insert((*k).to_string(), Value::from(0));
                    }
                }
            }
        }
    };
    zero(app.get_mut("portDefinitions"), &["port"]);
    if let Some(container) = app.get_mut("container") {
        zero(
            container.get_mut("portMappings"),
            &["servicePort", "hostPort"],
        );
        if let Some(docker) = container.get_mut("docker") {
            zero(docker.get_mut("portMappings"), &["servicePort", "hostPort"]);
        }
    }
    // The deprecated form (`ports: [10100]`) too.
    if let Some(Value::Array(ports)) = app.get_mut("ports") {
        ports.iter_mut().for_each(|p| *p = Value::from(0));
    }
    // Fixed host ports would follow the service ports; the scheduler picks them instead.
    app.remove("requirePorts");
}

/// The tasks of a live app (none when it is absent).
fn live_tasks(app: Option<&Value>) -> impl Iterator<Item = &Value> {
    app.and_then(|a| a.get("tasks"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The app's tasks that run its current definition and are healthy (every health check alive;
/// running, for an app without health checks).
fn healthy_tasks(app: &Value) -> Vec<&Value> {
    let checked = app
        .get("healthChecks")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    let current = app
        .pointer("/versionInfo/lastConfigChangeAt")
        .and_then(Value::as_str);
    live_tasks(Some(app))
        .filter(|t| t.get("state").and_then(Value::as_str) == Some("TASK_RUNNING"))
        .filter(|t| {
            let version = t.get("version").and_then(Value::as_str);
            match (current, version) {
                (Some(c), Some(v)) => same_or_newer(v, c),
                _ => true,
            }
        })
        .filter(|t| {
            if !checked {
                return true;
            }
            let results = t.get("healthCheckResults").and_then(Value::as_array);
            results.is_some_and(|r| {
                !r.is_empty()
                    && r.iter()
                        .all(|h| h.get("alive").and_then(Value::as_bool) == Some(true))
            })
        })
        .collect()
}

/// Marathon's versions are RFC 3339 times; compared as times, or as text when they are not.
fn same_or_newer(version: &str, than: &str) -> bool {
    match (parse_rfc3339(version), parse_rfc3339(than)) {
        (Some(v), Some(t)) => v >= t,
        _ => version >= than,
    }
}

/// A deployment of the app is in progress.
fn deploying(app: &Value) -> bool {
    app.get("deployments")
        .and_then(Value::as_array)
        .is_some_and(|d| !d.is_empty())
}

/// Where the check reaches the task: its host and ports, or for a task with its own IP and no
/// host ports, that IP and the container ports.
fn check_address(app: Option<&Value>, task: &Value) -> (String, Vec<u16>) {
    let ports: Vec<u16> = task
        .get("ports")
        .and_then(Value::as_array)
        .map(|p| {
            p.iter()
                .filter_map(Value::as_u64)
                .filter_map(|p| u16::try_from(p).ok())
                .collect()
        })
        .unwrap_or_default();
    let host = task
        .get("host")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !ports.is_empty() {
        return (host, ports);
    }
    let ip = task
        .pointer("/ipAddresses/0/ipAddress")
        .and_then(Value::as_str)
        .map(str::to_string);
    let container_ports: Vec<u16> = app
        .and_then(|a| a.pointer("/container/portMappings"))
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|p| p.get("containerPort").and_then(Value::as_u64))
                .filter_map(|p| u16::try_from(p).ok())
                .collect()
        })
        .unwrap_or_default();
    (ip.unwrap_or(host), container_ports)
}
