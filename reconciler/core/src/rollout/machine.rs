//! The state machine of one rollout: [`advance`], pure and level-triggered. Each phase names the
//! canary and stable that should exist, compares them with live and emits only the missing
//! writes, so a re-run after a crash, a 409 or a lost scheduler repeats nothing.
//!
//! Work in progress (issue 15, WP-B): only the signatures are here.

use super::{Decision, Input, RolloutState};
use crate::spec::Spec;

/// The state of a rollout of `spec` at `rev`, starting now.
pub fn start(spec: &Spec, rev: &str, now_ms: u64) -> RolloutState {
    let _ = (spec, rev, now_ms);
    todo!("WP-B")
}

/// One step of the rollout `state`: what to write, what to check, what to persist.
pub fn advance(state: &RolloutState, input: &Input<'_>) -> Decision {
    let _ = (state, input);
    todo!("WP-B")
}
