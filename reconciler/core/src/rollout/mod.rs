//! Progressive delivery (`baton.rollout`): a changed app is not updated in place but rolled out
//! through a second Marathon app owned by Baton, `<id>-canary`, that shares the stable app's
//! service port through marathon-lb's deployment groups. The share of traffic it gets is the
//! ratio of its healthy instances to the stable's (marathon-lb disables one stable server per
//! healthy canary task); HAProxy's per-server counters judge it. See `docs/rollout.md`.
//!
//! - [`spec`]: the `baton.rollout` block: parse, validate, defaults.
//! - [`machine`]: [`machine::advance`], the pure, level-triggered state machine of one rollout.
//! - [`haproxy`]: HAProxy's stats CSV, read into a [`Sample`]; the analysis window.
//!
//! The types below are the contract between the core, the daemon (`baton::daemon::rollout`)
//! and the status API. What is persisted (in `cycle::state::State.rollouts`) is
//! [`RolloutState`]; everything else is recomputed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::Plan;
use crate::spec::Spec;

pub mod haproxy;
pub mod machine;
pub mod spec;
#[cfg(test)]
mod tests;
pub mod view;
pub use view::view;

/// Label on the canary app: the id of the stable app it is a canary of.
pub const ROLLOUT_OF: &str = "baton.dev/rollout-of";
/// marathon-lb's label that merges apps into one backend.
pub const DEPLOYMENT_GROUP: &str = "HAPROXY_DEPLOYMENT_GROUP";
/// marathon-lb's label telling old from new in a group: a naive ISO time (no zone: marathon-lb
/// compares it with `datetime.min` and raises on an aware one).
pub const DEPLOYMENT_STARTED_AT: &str = "HAPROXY_DEPLOYMENT_STARTED_AT";
/// The suffix of the canary app's id.
pub const CANARY_SUFFIX: &str = "-canary";

/// The id of the canary of `stable` (`/shop/api` -> `/shop/api-canary`).
pub fn canary_id(stable: &str) -> String {
    format!("{stable}{CANARY_SUFFIX}")
}

/// A valid `baton.rollout` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub strategy: Strategy,
    /// Canary: the steps in order (full production follows the last). BlueGreen: an optional
    /// `Isolated` check, then one `Traffic { percent: 100, pause: grace }`.
    pub steps: Vec<Step>,
    pub analysis: Analysis,
    /// BlueGreen: how long the old version is kept (and the switch judged) after the switch.
    pub grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Strategy {
    Canary,
    BlueGreen,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The canary runs outside the load balancer's group; the check must pass.
    Isolated(Check),
    /// About `percent` % of the traffic goes to the canary for at least `pause`.
    Traffic { percent: u8, pause: Duration },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// `GET http://<task host>:<first port><path>` must answer `expect`.
    Http { path: String, expect: u16 },
    /// `sh -c <cmd>` with `BATON_CHECK_*` in its env must exit 0 within `timeout` (only under
    /// `--allow-check-commands`: it is code from git running on Baton's host).
    Command { cmd: String, timeout: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// Largest share of the canary's responses that may be 5xx (0..=1).
    pub max_error_rate: f64,
    /// Fewer responses than this in a window: wait, neither promote nor judge.
    pub min_requests: u64,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            max_error_rate: 0.01,
            min_requests: 20,
        }
    }
}

/// One rollout in progress, as persisted. Marathon plus this are the truth after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    /// The commit being rolled out, and the digest of its definition of the app.
    pub commit: String,
    pub digest: String,
    pub strategy: Strategy,
    /// The canary app's id.
    pub canary: String,
    /// `HAPROXY_DEPLOYMENT_STARTED_AT` of the canary, fixed at the start so that every body of
    /// the canary Baton writes is the same but for `instances` (a scale, not a restart).
    pub started_at: String,
    pub phase: Phase,
    /// When the current phase began (Unix ms).
    pub entered_ms: u64,
    /// The analysis window of the current traffic step, once it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// What happened, oldest first (bounded by [`TIMELINE`]).
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    /// The spec's analysis limits as last seen: while the spec does not validate, a canary
    /// taking traffic is still judged by them (rolled back on bad numbers, never promoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
}

/// Timeline entries kept per rollout.
pub const TIMELINE: usize = 50;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "phase")]
pub enum Phase {
    /// The canary is being created (isolated, or joined at the first step's size).
    Launch,
    /// The isolated check runs against the canary's task.
    Check,
    /// Traffic step `index` of the spec's steps (the index in `Rollout::steps`, as in the spec's
    /// `/baton/rollout/steps/<index>`; an isolated step before it counts).
    Step { index: usize },
    /// All traffic on the canary (blueGreen's switch; canary's last moment before full).
    Switch,
    /// The stable app is being updated to the new definition.
    UpdateStable,
    /// The canary is being removed after success.
    Retire,
    /// The canary is being removed after a failure; the stable was never written.
    RollBack { reason: Reason },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Reason {
    CheckFailed {
        output: String,
    },
    Analysis {
        step: usize,
        requests: u64,
        errors: u64,
        rate: f64,
    },
    Crashed {
        message: String,
    },
    Deadline {
        phase: String,
    },
    /// A new commit changed the app's definition.
    Superseded,
    /// `POST /api/rollouts/<app>/abort`.
    Aborted,
    /// The app's spec left the repo (or lost its rollout block).
    SpecRemoved,
}

/// HAProxy counters of one server, or summed over several.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Responses of any status (`hrsp_1xx` .. `hrsp_other`), plus failed responses (`eresp`:
    /// HAProxy's own 502/504 for a server that timed out or dropped the connection).
    pub responses: u64,
    /// `hrsp_5xx` plus `eresp`.
    pub errors: u64,
}

/// The analysis window of a traffic step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    pub since_ms: u64,
    /// Raw counters last seen per server (key: `source/proxy/server`), to take differences
    /// and notice resets (each marathon-lb reload starts HAProxy at zero).
    pub last: BTreeMap<String, Counters>,
    /// Counted in this window.
    pub canary: Counters,
    pub stable: Counters,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    pub at_ms: u64,
    /// What happened, for people ("canary healthy", "10% step passed: 212 requests, 0 errors").
    pub event: String,
}

/// One server row of HAProxy's stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRow {
    /// Which `--haproxy-stats` source (index in the order given).
    pub source: usize,
    pub proxy: String,
    pub server: String,
    /// `addr` column (`ip:port`) when HAProxy reports it.
    pub addr: Option<String>,
    pub counters: Counters,
}

/// Every source's server rows at one moment. `None` in [`Input::sample`] when any source
/// failed: nothing is judged, nothing promoted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    pub rows: Vec<ServerRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    Passed,
    /// With a bounded, secret-free tail of what the check said.
    Failed {
        output: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorCommand {
    /// Pass the current check or window now.
    Promote,
    /// Roll back now.
    Abort,
}

/// A check the daemon must run, against this task.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRun {
    pub check: Check,
    pub app: String,
    pub host: String,
    pub ports: Vec<u16>,
}

/// What [`machine::advance`] decides from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The app's valid spec at `rev` (None: gone from the repo, or invalid: see
    /// `spec_invalid`).
    pub spec: Option<&'a Spec>,
    /// The spec exists but does not validate at `rev`: hold, never roll back or forward on it.
    pub spec_invalid: bool,
    pub owner: &'a str,
    pub rev: &'a str,
    /// The live stable and canary apps, with `tasks` embedded.
    pub stable: Option<&'a Value>,
    pub canary: Option<&'a Value>,
    pub sample: Option<&'a Sample>,
    /// The outcome of the check the previous decision asked for.
    pub check: Option<&'a CheckOutcome>,
    pub operator: Option<OperatorCommand>,
    pub now_ms: u64,
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum Outcome {
    Completed,
    RolledBack { reason: Reason },
}

/// The rollout as `/api/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub strategy: Strategy,
    pub commit: String,
    /// `launch`, `check`, `step`, `switch`, `updateStable`, `retire`, `rollBack`.
    pub phase: String,
    /// The traffic step's index (in the spec's `steps`) when in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    /// The share the canary has now: healthy canary tasks / stable instances, in percent.
    pub traffic_percent: f64,
    pub canary_app: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// What the rollout waits for now, for people ("traffic: 7/20 requests").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    pub timeline: Vec<TimelineEntry>,
}

/// What one [`machine::advance`] decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The Marathon writes to make now (canary creates/scales/deletes, the stable's update),
    /// as a plan for `apply`.
    pub plan: Plan,
    /// A check to run; its outcome goes into the next `advance`.
    pub run_check: Option<CheckRun>,
    /// The state to persist **before** applying `plan`; None once the rollout is over.
    pub next: Option<RolloutState>,
    pub outcome: Option<Outcome>,
    /// When to look again (Unix ms).
    pub wake_at_ms: u64,
    pub status: RolloutStatus,
}
