//! The plan: desired (a loaded repo) x live (the scheduler's apps) x policy -> what a sync does.
//! A pure function: no I/O, no clock. Safety rules live here, where they can be tested exhaustively:
//! invalid specs are never touched, only owned apps are deleted, deletions are budgeted, an
//! empty or partly unreadable repo deletes nothing, a repo without an explicit `owner` deletes
//! nothing, and apps outside the repo's `idPrefixes` are never touched. A rollout's canary app
//! (`crate::rollout`) is left to its rollout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::diff::{all_differences, diff_where, under_any, FieldChange};
use crate::ownership;
use crate::spec::normalize::{normalize, Tolerance};
use crate::spec::{AppId, IdPrefix, Repo, Spec};

/// Knobs of one planning run that do not come from the repo.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The commit the specs come from (written into labels; `local` for a plain directory).
    pub commit: String,
    /// `--allow-deletes N`: allow up to N deletions even over the budget.
    pub allow_deletes: Option<usize>,
}

/// What happens to one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
}

/// One write to the scheduler.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub app: AppId,
    pub action: Action,
    /// The spec file (none for deletes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Field-level differences (for updates).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// The app has no owner label yet: this update takes ownership of it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub adopt: bool,
    /// Progress deadline for the deployment, in seconds.
    pub deadline_seconds: u64,
    /// Apps this one waits for (from `baton.dependsOn`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<AppId>,
    /// The full definition to PUT (creates and updates). Not part of the JSON report.
    #[serde(skip)]
    pub body: Option<Value>,
}

/// Changes that may run together; wave N+1 starts when wave N is done.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Wave {
    pub changes: Vec<Change>,
}

/// A deletion that was wanted but withheld, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Held {
    pub app: AppId,
    pub reason: String,
}

/// An app whose file moved: removed at one id, added at another with the same definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub from: AppId,
    pub to: AppId,
}

/// A spec for an app that another owner manages: left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub app: AppId,
    pub owner: String,
}

/// Counts, for summaries and exit codes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub unchanged: usize,
    pub invalid: usize,
    pub unmanaged: usize,
    pub held: usize,
    pub conflicts: usize,
}

/// The plan of one sync.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub owner: String,
    /// `owner` is set in `baton.yaml`; without it every delete is held ([`no_owner_reason`]).
    pub owner_explicit: bool,
    /// `idPrefixes` of `baton.yaml`: the app ids this repo may manage (absent: every id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_prefixes: Option<Vec<IdPrefix>>,
    pub commit: String,
    pub summary: Summary,
    pub waves: Vec<Wave>,
    pub unchanged: Vec<AppId>,
    /// Apps whose spec is invalid: never changed or deleted while it stays invalid.
    pub invalid: Vec<AppId>,
    /// Live apps Baton does not own and has no spec for.
    pub unmanaged: Vec<AppId>,
    pub held: Vec<Held>,
    pub moves: Vec<Move>,
    pub conflicts: Vec<Conflict>,
    /// Live apps labelled with this owner but outside `idPrefixes`: reported, never touched.
    pub out_of_scope: Vec<AppId>,
}

impl Plan {
    /// True when the plan writes nothing.
    pub fn is_empty(&self) -> bool {
        self.waves.is_empty()
    }

    /// Every change, in execution order.
    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.waves.iter().flat_map(|w| w.changes.iter())
    }

    /// The deletions held only because `baton.yaml` sets no `owner`.
    pub fn held_for_no_owner(&self) -> impl Iterator<Item = &AppId> {
        let reason = (!self.owner_explicit).then(|| no_owner_reason(&self.owner));
        self.held
            .iter()
            .filter(move |h| reason.as_deref() == Some(h.reason.as_str()))
            .map(|h| &h.app)
    }
}

/// Why nothing is deleted for a repo whose `baton.yaml` sets no `owner` (`owner`: the default
/// in use), and how to fix it.
pub fn no_owner_reason(owner: &str) -> String {
    format!(
        "no `owner:` in baton.yaml: Baton uses the default owner `{owner}`, which other repos may use too, so it deletes nothing; set `owner:` in baton.yaml to a name only this repo uses"
    )
}

/// The number of deletions allowed per sync: `maxDeletes`, or `maxDeletesPercent` of the owned
/// apps when that is more.
pub fn delete_budget(repo: &Repo, owned: usize) -> usize {
    let pct = (owned as f64 * repo.config.prune.max_percent / 100.0).floor() as usize;
    repo.config.prune.max_deletes.max(pct)
}

/// What the parallel pass of [`plan`] finds for one app: the definition to send (built for
/// creates and updates only) and, for a live app Baton may write, the field changes.
type PerApp<'a> = (&'a AppId, &'a Spec, Option<Value>, Option<Vec<FieldChange>>);

/// Plan a sync of `repo` onto `live` (apps as the scheduler serves them).
pub fn plan(repo: &Repo, live: &[Value], policy: &Policy) -> Plan {
    let owner = repo.config.owner.as_str();
    let live_by_id: BTreeMap<AppId, &Value> = live
        .iter()
        .filter_map(|a| {
            let id = a.get("id").and_then(Value::as_str)?;
            AppId::parse(id).ok().map(|id| (id, a))
        })
        .collect();

    let mut changes: Vec<Change> = Vec::new();
    let mut unchanged = Vec::new();
    let mut conflicts = Vec::new();
    // Per-app work (labels, digest, normalisation, diff) is independent: run it in parallel,
    // then assemble in id order, so the plan stays deterministic. The definition to send (and
    // its digest) is only built for the apps that get a write, not for the unchanged majority.
    // A spec outside `idPrefixes` is invalid when loaded; checked again here so that no repo,
    // however it was built, gets an app outside them written.
    let out_of_scope_specs: Vec<&AppId> = (repo.specs.keys())
        .filter(|id| !repo.config.in_scope(id))
        .collect();
    let per_app: Vec<PerApp> = repo
        .specs
        .par_iter()
        .filter(|(id, _)| repo.config.in_scope(id))
        .map(|(id, spec)| {
            let spec: &Spec = spec;
            let desired = ownership::normal_form(spec, owner);
            let live_app = live_by_id.get(id);
            let fields = live_app
                .filter(|l| ownership::owner_of(l).is_none_or(|o| o == owner))
                .map(|live_app| normalized_field_changes(spec, &desired, live_app));
            let written = match (live_app, &fields) {
                (None, _) => true,                             // create
                (Some(_), Some(fields)) => !fields.is_empty(), // update
                (Some(_), None) => false,                      // another owner's: left alone
            };
            let body = written.then(|| {
                ownership::labelled_from_normal_form(spec, owner, &policy.commit, &desired)
            });
            (id, spec, body, fields)
        })
        .collect();
    for (id, spec, body, fields) in per_app {
        let base = Change {
            app: id.clone(),
            action: Action::Create,
            file: Some(spec.file.clone()),
            fields: Vec::new(),
            adopt: false,
            deadline_seconds: spec.baton.deadline.as_secs(),
            depends_on: spec.baton.depends_on.clone(),
            body: None,
        };
        match live_by_id.get(id) {
            None => changes.push(Change { body, ..base }),
            Some(live_app) => {
                let live_owner = ownership::owner_of(live_app);
                if let Some(other) = live_owner.filter(|o| *o != owner) {
                    conflicts.push(Conflict {
                        app: id.clone(),
                        owner: other.to_string(),
                    });
                    continue;
                }
                let fields = fields.unwrap_or_default();
                if fields.is_empty() {
                    unchanged.push(id.clone());
                } else {
                    changes.push(Change {
                        action: Action::Update,
                        // Shown in reports, PR comments and /api/status: a live value under a
                        // secret-looking env name may be a real secret someone set by hand.
                        fields: crate::drift::redact(fields),
                        adopt: live_owner.is_none(),
                        body: body.map(|b| keep_ignored_from_live(b, live_app, &spec.baton.ignore)),
                        ..base
                    });
                }
            }
        }
    }

    // Deletions: owned live apps without a spec (and not merely invalid).
    let mut held = Vec::new();
    let mut deletes: Vec<AppId> = Vec::new();
    let mut unmanaged = Vec::new();
    let mut out_of_scope = Vec::new();
    let mut owned = 0;
    for (id, app) in &live_by_id {
        let mine = ownership::owner_of(app) == Some(owner);
        let in_scope = repo.config.in_scope(id);
        owned += usize::from(mine && in_scope);
        if repo.specs.contains_key(id) || repo.invalid.contains(id) {
            continue;
        }
        if rollout_companion(repo, id, app) {
            // A rollout's canary: the rollout makes and removes it, not the plan.
            continue;
        }
        if !in_scope {
            // Not this repo's to manage, whatever its label says.
            if mine {
                out_of_scope.push(id.clone());
            } else {
                unmanaged.push(id.clone());
            }
        } else if !mine {
            if !conflicts.iter().any(|c| &c.app == id) {
                unmanaged.push(id.clone());
            }
        } else if ownership::prune_protected(app) {
            held.push(Held {
                app: id.clone(),
                reason: "marked `baton.prune: false`".into(),
            });
        } else {
            deletes.push(id.clone());
        }
    }
    // An incomplete repo first: with a broken `baton.yaml` the owner is unknown, not absent.
    let refusal = if repo.incomplete {
        Some("the repo could not be read completely (see the diagnostics); nothing is deleted until it can".to_string())
    } else if !repo.config.owner_explicit {
        Some(no_owner_reason(owner))
    } else if repo.specs.is_empty() && repo.invalid.is_empty() {
        Some("the repo has no apps; refusing to delete every owned app (an empty checkout is more likely a mistake)".to_string())
    } else {
        let budget = delete_budget(repo, owned);
        let allowed = policy.allow_deletes.unwrap_or(0).max(budget);
        (deletes.len() > allowed).then(|| {
            format!(
                "{} deletions exceed the delete budget of {budget} (maxDeletes {} or {}% of {owned} owned apps); re-run with --allow-deletes {} to proceed",
                deletes.len(),
                repo.config.prune.max_deletes,
                repo.config.prune.max_percent,
                deletes.len()
            )
        })
    };
    if let Some(reason) = refusal {
        held.extend(deletes.drain(..).map(|app| Held {
            app,
            reason: reason.clone(),
        }));
    }

    let moves = find_moves(repo, &changes, &deletes, &live_by_id);
    let delete_changes: Vec<Change> = deletes
        .iter()
        .map(|id| Change {
            app: id.clone(),
            action: Action::Delete,
            file: None,
            fields: Vec::new(),
            adopt: false,
            deadline_seconds: crate::spec::BatonBlock::default().deadline.as_secs(),
            depends_on: Vec::new(),
            body: None,
        })
        .collect();

    let mut waves = order_waves(repo, changes);
    waves.extend(order_deletes(delete_changes, &live_by_id));

    let mut invalid: Vec<AppId> = repo.invalid.iter().cloned().collect();
    invalid.extend(out_of_scope_specs.into_iter().cloned());
    invalid.sort();
    let summary = Summary {
        create: count(&waves, Action::Create),
        update: count(&waves, Action::Update),
        delete: count(&waves, Action::Delete),
        unchanged: unchanged.len(),
        invalid: invalid.len(),
        unmanaged: unmanaged.len(),
        held: held.len(),
        conflicts: conflicts.len(),
    };
    Plan {
        owner: owner.to_string(),
        owner_explicit: repo.config.owner_explicit,
        id_prefixes: repo.config.id_prefixes.clone(),
        commit: policy.commit.clone(),
        summary,
        waves,
        unchanged,
        invalid,
        unmanaged,
        held,
        moves,
        conflicts,
        out_of_scope,
    }
}

/// Whether `live` (the app `id`) is the canary of a rollout, the rollout's to make and remove:
/// owned by this repo's owner, inside `idPrefixes`, labelled `baton.dev/rollout-of` with a
/// stable app whose spec has a rollout (or is invalid, when it cannot be told), and named
/// `<stable>-canary`. An orphan, whose stable's spec is gone or has no rollout any more, is
/// not: it is pruned as any owned app without a spec.
pub fn rollout_companion(repo: &Repo, id: &AppId, live: &Value) -> bool {
    if ownership::owner_of(live) != Some(repo.config.owner.as_str()) || !repo.config.in_scope(id) {
        return false;
    }
    let Some(of) = live
        .pointer("/labels")
        .and_then(|l| l.get(crate::rollout::ROLLOUT_OF))
        .and_then(Value::as_str)
    else {
        return false;
    };
    let Ok(stable) = AppId::parse(of) else {
        return false;
    };
    let rolls_out = repo
        .specs
        .get(&stable)
        .is_some_and(|s| s.baton.rollout.is_some())
        || repo.invalid.contains(&stable);
    rolls_out && id.as_str() == crate::rollout::canary_id(stable.as_str())
}

fn count(waves: &[Wave], action: Action) -> usize {
    waves
        .iter()
        .flat_map(|w| &w.changes)
        .filter(|c| c.action == action)
        .count()
}

/// Differences between what would be sent and what runs, minus ignored and tolerated fields.
pub fn field_changes(spec: &Spec, body: &Value, live: &Value) -> Vec<FieldChange> {
    normalized_field_changes(spec, &normalize(body), live)
}

/// [`field_changes`] with the desired definition already normalised.
fn normalized_field_changes(spec: &Spec, desired: &Value, live: &Value) -> Vec<FieldChange> {
    let tolerance = Tolerance::for_spec(&spec.app);
    diff_where(desired, &normalize(live), |pointer, d, l| {
        !under_any(pointer, &spec.baton.ignore) && !tolerance.allows(pointer, d, l)
    })
}

/// Fields under `baton.ignore` belong to someone else (an autoscaler on `/instances`): an update
/// sends their live value, so Baton never fights their owner.
pub(crate) fn keep_ignored_from_live(mut body: Value, live: &Value, ignore: &[String]) -> Value {
    for pointer in ignore {
        if let Some(live_value) = live.pointer(pointer) {
            set_pointer(&mut body, pointer, live_value.clone());
        }
    }
    body
}

fn set_pointer(doc: &mut Value, pointer: &str, value: Value) {
    let tokens = crate::spec::parse::split_pointer(pointer);
    let Some((last, parents)) = tokens.split_last() else {
        return;
    };
    let mut cur = doc;
    for t in parents {
        let next = match cur {
            Value::Object(m) => m
                .entry(t.clone())
                .or_insert_with(|| Value::Object(Default::default())),
            Value::Array(a) => match t.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return,
            },
            _ => return,
        };
        cur = next;
    }
    match cur {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            if let Some(slot) = last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                *slot = value;
            }
        }
        _ => {}
    }
}

/// Creates and updates in waves by `dependsOn` depth over the whole repo (so an unchanged app in
/// the middle of a chain still orders its neighbours).
fn order_waves(repo: &Repo, changes: Vec<Change>) -> Vec<Wave> {
    let mut depth: BTreeMap<&AppId, usize> = BTreeMap::new();
    fn depth_of<'a>(
        id: &'a AppId,
        repo: &'a Repo,
        memo: &mut BTreeMap<&'a AppId, usize>,
        guard: usize,
    ) -> usize {
        if let Some(d) = memo.get(id) {
            return *d;
        }
        let deps = repo
            .specs
            .get(id)
            .map(|s| s.baton.depends_on.as_slice())
            .unwrap_or(&[]);
        // Cycles were rejected when loading; the guard only bounds the recursion.
        let d = if guard > repo.specs.len() {
            0
        } else {
            deps.iter()
                .map(|dep| depth_of(dep, repo, memo, guard + 1) + 1)
                .max()
                .unwrap_or(0)
        };
        memo.insert(id, d);
        d
    }
    let mut by_depth: BTreeMap<usize, Vec<Change>> = BTreeMap::new();
    for c in changes {
        let d = match repo.specs.get_key_value(&c.app) {
            Some((id, _)) => depth_of(id, repo, &mut depth, 0),
            None => 0,
        };
        by_depth.entry(d).or_default().push(c);
    }
    by_depth
        .into_values()
        .map(|changes| Wave { changes })
        .collect()
}

/// Deletions after everything else, dependents first (by the live apps' Marathon
/// `dependencies`, the only record left once a spec is gone).
fn order_deletes(deletes: Vec<Change>, live: &BTreeMap<AppId, &Value>) -> Vec<Wave> {
    let ids: BTreeSet<AppId> = deletes.iter().map(|c| c.app.clone()).collect();
    let deps_of = |id: &AppId| -> Vec<AppId> {
        live.get(id)
            .and_then(|a| a.get("dependencies"))
            .and_then(Value::as_array)
            .map(|d| {
                d.iter()
                    .filter_map(Value::as_str)
                    .filter_map(|s| AppId::parse(s).ok())
                    .filter(|d| ids.contains(d))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Height: how many deleted apps depend on this one, transitively; delete height 0 first.
    let mut height: BTreeMap<AppId, usize> = ids.iter().map(|i| (i.clone(), 0)).collect();
    for _ in 0..ids.len() {
        let mut changed = false;
        for id in &ids {
            let h = height.get(id).copied().unwrap_or(0);
            for dep in deps_of(id) {
                if height.get(&dep).copied().unwrap_or(0) < h + 1 {
                    height.insert(dep, h + 1);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut by_height: BTreeMap<usize, Vec<Change>> = BTreeMap::new();
    for c in deletes {
        let h = height.get(&c.app).copied().unwrap_or(0);
        by_height.entry(h).or_default().push(c);
    }
    by_height
        .into_values()
        .map(|changes| Wave { changes })
        .collect()
}

/// A delete and a create whose definitions agree (ids aside) are a move.
fn find_moves(
    repo: &Repo,
    changes: &[Change],
    deletes: &[AppId],
    live: &BTreeMap<AppId, &Value>,
) -> Vec<Move> {
    let without_id = |v: &Value| {
        let mut n = normalize(v);
        if let Value::Object(m) = &mut n {
            m.remove("id");
        }
        n
    };
    if deletes.is_empty() {
        return Vec::new();
    }
    let gone: Vec<(&AppId, Value)> = deletes
        .iter()
        .filter_map(|id| live.get(id).map(|a| (id, without_id(a))))
        .collect();
    let mut moves = Vec::new();
    for c in changes.iter().filter(|c| c.action == Action::Create) {
        let (Some(body), Some(spec)) = (&c.body, repo.specs.get(&c.app)) else {
            continue;
        };
        let new = without_id(body);
        let tolerance = Tolerance::for_spec(&spec.app);
        for (old_id, old) in &gone {
            // Stops at the first difference that is not tolerated (most pairs differ early).
            let same = all_differences(&new, old, |pointer, d, l| tolerance.allows(pointer, d, l));
            if same {
                moves.push(Move {
                    from: (*old_id).clone(),
                    to: c.app.clone(),
                });
                break;
            }
        }
    }
    moves
}
