//! Which apps a cycle that looks at some apps only reads and plans ([`super::View::Apps`]): the
//! fast path of a push (the apps whose spec files changed, written before the full cycle lists
//! everything) and the cycle of scheduler events (the apps the events name). Whenever a partial
//! view could decide differently from a full cycle, it is not taken.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::state::State;
use super::{SyncMode, Trigger};
use crate::spec::{AppId, Repo};

/// At most this many apps go through the fast path; a larger push is a full cycle anyway.
pub const FAST_SYNC_MAX: usize = 32;
/// At most this many apps are re-read by id in one cycle; more are one listing instead.
pub const EVENT_CYCLE_MAX: usize = 64;

/// The apps a push may sync before the full cycle ("fast path"): those whose spec file was
/// added or modified (`changed`), that load as valid specs, and that depend on nothing (their
/// order within waves is then irrelevant). Empty when more than [`FAST_SYNC_MAX`] qualify.
/// Removed files never appear here: deletions go through the full plan, with its budget and
/// ownership checks. Looks up each changed file's app rather than going over the repo.
pub fn fast_sync_candidates(changed: &[PathBuf], repo: &Repo) -> Vec<AppId> {
    if changed.is_empty() || changed.len() > FAST_SYNC_MAX {
        return Vec::new();
    }
    let picked: BTreeSet<AppId> = changed
        .iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&repo.config.apps_dir).ok()?;
            let id = AppId::from_path(rel).ok()?;
            let spec = repo.specs.get(&id)?;
            let ok = spec.file == *path
                && spec.baton.depends_on.is_empty()
                && !repo.invalid.contains(&id)
                // Apps reading Vault secrets need their policy, role and bootstrap env from the
                // full cycle first, and a `baton.secrets` block its checks (the allow-list).
                && !crate::secrets::needs_vault(spec);
            ok.then_some(id)
        })
        .collect();
    picked.into_iter().collect()
}

/// The repo the fast path plans: only `apps`, marked incomplete so that [`crate::plan::plan`]
/// would hold any deletion even if one appeared.
pub fn fast_sync_repo(repo: &Repo, apps: &[AppId]) -> Repo {
    Repo {
        config: repo.config.clone(),
        specs: apps
            .iter()
            .filter_map(|id| repo.specs.get(id).map(|s| (id.clone(), s.clone())))
            .collect(),
        invalid: Default::default(),
        incomplete: true,
        diagnostics: Vec::new(),
    }
}

/// Whether a cycle of `trigger` takes the fast path at `rev`: only a fetching cycle in auto
/// mode that found a revision not synced yet (a cycle that applies everything anyway).
pub fn fast_path_open(trigger: &Trigger, mode: SyncMode, state: &State, rev: &str) -> bool {
    mode == SyncMode::Auto && trigger.fetches() && state.last_synced.as_deref() != Some(rev)
}

/// The apps the fast path reads and plans: the [`fast_sync_candidates`] among the files the
/// last fetch changed (`changed`: the revision it loaded and the paths), when that is `rev`,
/// that are not backing off a failed apply of `rev`.
pub fn fast_path_apps(
    changed: Option<(String, Vec<PathBuf>)>,
    rev: &str,
    repo: &Repo,
    state: &State,
    now_ms: u64,
) -> Vec<AppId> {
    let Some((loaded_rev, paths)) = changed else {
        return Vec::new();
    };
    if loaded_rev != rev {
        return Vec::new();
    }
    fast_sync_candidates(&paths, repo)
        .into_iter()
        .filter(|id| state.may_apply(id.as_str(), rev, now_ms))
        .collect()
}

/// The repo as far as `ids` go: their specs, invalid marks and diagnostics, marked incomplete
/// so that [`crate::plan::plan`] deletes nothing.
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

/// What a cycle of scheduler events looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventScope {
    /// Only Baton's own writes were named: nothing to look at.
    Nothing,
    /// A partial view could decide differently: run the full cycle.
    Full,
    /// Read, plan and decide just these apps.
    Apps(BTreeSet<AppId>),
}

/// What the cycle of scheduler events naming `ids` (Baton's own writes taken out) looks at,
/// with `loaded` the revision and repo loaded last: the full cycle when nothing was loaded yet,
/// more than [`EVENT_CYCLE_MAX`] apps are named, an app reads Vault secrets (its definition
/// needs the full cycle's Vault preparation), or the revision is not synced yet in auto mode
/// (which applies everything).
pub fn event_scope(
    ids: BTreeSet<AppId>,
    loaded: Option<(&str, &Repo)>,
    mode: SyncMode,
    state: &State,
) -> EventScope {
    if ids.is_empty() {
        return EventScope::Nothing;
    }
    let Some((rev, repo)) = loaded else {
        return EventScope::Full;
    };
    let reads_vault =
        |id: &AppId| (repo.specs.get(id)).is_some_and(|s| crate::secrets::needs_vault(s));
    if ids.len() > EVENT_CYCLE_MAX
        || (mode == SyncMode::Auto && state.last_synced.as_deref() != Some(rev))
        || ids.iter().any(reads_vault)
    {
        return EventScope::Full;
    }
    EventScope::Apps(ids)
}
