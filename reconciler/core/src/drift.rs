//! Drift: where the scheduler and git disagree, who changed it and since when. Pure functions of
//! data (no I/O, no clock: `now` comes in as Unix milliseconds).
//!
//! - [`drift`]: repo x live apps x attributions -> [`DriftReport`], one [`AppDrift`] per app. The
//!   field comparison is [`crate::plan::field_changes`] (ignore rules + tolerance), so an app a
//!   sync would leave alone shows no drift, by construction.
//! - [`Attributions`] and [`parse_api_post`]: who changed an app, from Marathon's `api_post_event`.
//! - [`ledger`]: first seen, last seen, duration and resolution of each drift, persisted in the
//!   state directory.
//! - [`corrections`]: which drifted apps to self-heal now (`baton.drift: correct` or
//!   `correctAfter`), and [`restrict`] to cut a plan down to them.

pub mod ledger;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::diff::FieldChange;
use crate::ownership;
use crate::plan::{field_changes, Plan, Wave};
use crate::spec::{AppId, DriftPolicy, Repo, Severity};

pub use ledger::{Ledger, LedgerEntry, LedgerEvent, Resolution};

/// Where an app stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftState {
    /// What runs is what git says (ignored and tolerated fields aside).
    InSync,
    /// Runs, but some fields differ from git because someone changed it (or git no longer has
    /// it while Baton keeps it for `baton.prune: false`).
    Drifted,
    /// Git moved and the app has not followed yet, though nobody changed it: a deploy not yet
    /// written or still running (its digest label is an older one of Baton's and it still
    /// matches it), a new app not created yet, or an owned app git dropped whose deletion is
    /// due or held. Not drift: the sync's job, never a drift policy's.
    Pending,
    /// In git, not running.
    Missing,
    /// Running, not owned by this owner, and either not in git or owned by another owner; or
    /// labelled with this owner but outside the repo's `idPrefixes`.
    Unmanaged,
    /// The last apply of this app failed (its field differences, if any, are still listed).
    Failed,
    /// Its spec does not validate: Baton leaves it alone.
    Invalid,
}

impl DriftState {
    /// The word used in reports and on the status page.
    pub fn word(self) -> &'static str {
        match self {
            DriftState::InSync => "in sync",
            DriftState::Drifted => "drifted",
            DriftState::Pending => "pending",
            DriftState::Missing => "missing",
            DriftState::Unmanaged => "unmanaged",
            DriftState::Failed => "failed",
            DriftState::Invalid => "invalid",
        }
    }

    /// All states, in report order.
    pub const ALL: [DriftState; 7] = [
        DriftState::Drifted,
        DriftState::Missing,
        DriftState::Pending,
        DriftState::Failed,
        DriftState::Invalid,
        DriftState::Unmanaged,
        DriftState::InSync,
    ];
}

/// Who changed an app and when: from an `api_post_event` of the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    /// The client address Marathon saw (a proxy's, if the change came through one).
    pub client_ip: String,
    /// The API path of the request (`/v2/apps/web`).
    pub uri: String,
    /// When the scheduler received it.
    #[serde(with = "ts")]
    pub at: u64,
}

/// Tasks of a live app, for the status page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tasks {
    pub instances: u64,
    pub running: u64,
    pub healthy: u64,
    pub unhealthy: u64,
    pub staged: u64,
    /// `running` (or `healthy`, with health checks) reaches `instances`.
    pub up: bool,
    /// The app has health checks (so `healthy` counts; without, `running` does).
    #[serde(default)]
    pub checked: bool,
    /// A deployment of the app is in progress on the scheduler.
    #[serde(default)]
    pub deploying: bool,
    /// What the status page shows: [`Tasks::summary`].
    #[serde(default)]
    pub summary: String,
}

impl Tasks {
    /// The tasks in words: `deploying 2/3 running` while a deployment is in progress (not
    /// "down"), else `up`/`down`, counting healthy tasks when the app has health checks and
    /// running ones when it has none (not "0 healthy").
    pub fn summary(&self) -> String {
        let (n, what) = if self.checked {
            (self.healthy, "healthy")
        } else {
            (self.running, "running")
        };
        let word = if self.deploying {
            "deploying"
        } else if self.up {
            "up"
        } else {
            "down"
        };
        format!("{word} {n}/{} {what}", self.instances)
    }
}

/// The drift of one app.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppDrift {
    pub app: AppId,
    pub state: DriftState,
    /// Field-level differences (JSON pointer, git value, live value); none when in sync.
    pub fields: Vec<FieldChange>,
    /// The latest change through the scheduler API that explains the drift, if one was seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<Attribution>,
    /// Since when the app disagrees with git (the earliest known cause, or when it was first seen).
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_ts")]
    pub since: Option<u64>,
    /// What Baton does about drift on this app (apps with a spec only).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "policy_str")]
    pub policy: Option<DriftPolicy>,
    /// The spec file, relative to the repo root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// The owner label of the live app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The commit the live definition was last sent from (its `baton.dev/commit` label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The live app's `version`: when it was last deployed (config change or scaling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Tasks>,
    /// Why, in words, when the state alone does not say it (the failure, the validation error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Digest of git's definition: tells the ledger whether git changed while the drift lasted.
    #[serde(skip)]
    pub desired_digest: Option<String>,
    /// Marked failed while it was [`DriftState::Pending`] (a git change or create whose write
    /// failed): the failure is shown, but it is not drift, so the ledger keeps out of it.
    #[serde(skip)]
    pub failed_write: bool,
}

impl AppDrift {
    fn new(app: AppId, state: DriftState) -> Self {
        AppDrift {
            app,
            state,
            fields: Vec::new(),
            changed_by: None,
            since: None,
            policy: None,
            file: None,
            owner: None,
            commit: None,
            deployed_at: None,
            tasks: None,
            note: None,
            desired_digest: None,
            failed_write: false,
        }
    }

    /// [`DriftReport::mark_never_deployed`] for one entry; true when it changed.
    pub fn mark_never_deployed(&mut self, deployed: impl Fn(&AppId) -> bool) -> bool {
        if self.state != DriftState::Missing || deployed(&self.app) {
            return false;
        }
        self.state = DriftState::Pending;
        self.note = Some("new in git, not created yet".into());
        true
    }

    /// Git and the scheduler disagree about this app (drifted, missing, or failed with
    /// differences): what the ledger tracks and what corrections may fix.
    pub fn disagrees(&self) -> bool {
        match self.state {
            DriftState::Drifted | DriftState::Missing => true,
            DriftState::Failed => !self.fields.is_empty() && !self.failed_write,
            _ => false,
        }
    }
}

/// Counts by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DriftSummary {
    pub in_sync: usize,
    pub drifted: usize,
    pub pending: usize,
    pub missing: usize,
    pub unmanaged: usize,
    pub failed: usize,
    pub invalid: usize,
}

impl DriftSummary {
    pub fn get(&self, s: DriftState) -> usize {
        match s {
            DriftState::InSync => self.in_sync,
            DriftState::Drifted => self.drifted,
            DriftState::Pending => self.pending,
            DriftState::Missing => self.missing,
            DriftState::Unmanaged => self.unmanaged,
            DriftState::Failed => self.failed,
            DriftState::Invalid => self.invalid,
        }
    }

    fn bump(&mut self, s: DriftState) {
        let slot = match s {
            DriftState::InSync => &mut self.in_sync,
            DriftState::Drifted => &mut self.drifted,
            DriftState::Pending => &mut self.pending,
            DriftState::Missing => &mut self.missing,
            DriftState::Unmanaged => &mut self.unmanaged,
            DriftState::Failed => &mut self.failed,
            DriftState::Invalid => &mut self.invalid,
        };
        *slot += 1;
    }
}

/// Every app's drift at one moment (`schemas/drift.schema.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReport {
    pub owner: String,
    #[serde(with = "ts")]
    pub generated_at: u64,
    pub summary: DriftSummary,
    /// Sorted by app id.
    pub apps: Vec<AppDrift>,
    /// Drift history, when a ledger is kept (`baton serve`, or `baton drift --state-dir`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ledger: Vec<LedgerEntry>,
}

impl DriftReport {
    /// Apps that drifted, are missing or wait for a deploy: git and the scheduler disagree,
    /// what makes `baton drift` exit 2.
    pub fn has_drift(&self) -> bool {
        self.summary.drifted + self.summary.missing + self.summary.pending > 0
    }

    /// The app's entry.
    pub fn app(&self, id: &AppId) -> Option<&AppDrift> {
        self.apps
            .binary_search_by(|a| a.app.cmp(id))
            .ok()
            .and_then(|i| self.apps.get(i))
    }

    /// Mark apps whose last apply failed (from the daemon's state), with the error. Invalid,
    /// unmanaged and missing apps keep their state: the failure is a note on them.
    pub fn mark_failed<'a>(&mut self, failures: impl IntoIterator<Item = (&'a AppId, &'a str)>) {
        for (id, error) in failures {
            if let Ok(i) = self.apps.binary_search_by(|a| a.app.cmp(id)) {
                let a = &mut self.apps[i];
                if matches!(
                    a.state,
                    DriftState::InSync | DriftState::Drifted | DriftState::Pending
                ) {
                    a.failed_write = a.state == DriftState::Pending;
                    a.state = DriftState::Failed;
                }
                a.note = Some(format!("last apply failed: {error}"));
            }
        }
        self.summary = summarize(&self.apps);
    }

    /// Missing apps that were never deployed (`deployed` says which were, from the daemon's
    /// state) are new in git, not gone from the scheduler: pending creates, not drift.
    pub fn mark_never_deployed(&mut self, deployed: impl Fn(&AppId) -> bool) {
        let mut changed = false;
        for a in &mut self.apps {
            changed |= a.mark_never_deployed(&deployed);
        }
        if changed {
            self.summary = summarize(&self.apps);
        }
    }

    /// Put fresh entries of some apps in (from [`drift_apps`]): `Some` replaces or adds the
    /// app's entry, `None` removes it. The rest of the report stays as it was observed.
    pub fn patch(&mut self, entries: Vec<(AppId, Option<AppDrift>)>, now: u64) {
        for (id, entry) in entries {
            match (self.apps.binary_search_by(|a| a.app.cmp(&id)), entry) {
                (Ok(i), Some(e)) => self.apps[i] = e,
                (Ok(i), None) => {
                    self.apps.remove(i);
                }
                (Err(i), Some(e)) => self.apps.insert(i, e),
                (Err(_), None) => {}
            }
        }
        self.generated_at = now;
        self.summary = summarize(&self.apps);
    }

    /// The age of the oldest drift at `now` (for the `baton_drift_oldest_seconds` gauge).
    pub fn oldest_drift(&self, now: u64) -> Option<Duration> {
        self.apps
            .iter()
            .filter(|a| a.disagrees())
            .filter_map(|a| a.since)
            .min()
            .map(|s| Duration::from_millis(now.saturating_sub(s)))
    }
}

fn summarize(apps: &[AppDrift]) -> DriftSummary {
    let mut s = DriftSummary::default();
    for a in apps {
        s.bump(a.state);
    }
    s
}

/// Compute the drift of every app of `repo` and `live` (apps as the scheduler serves them).
pub fn drift(repo: &Repo, live: &[Value], attributions: &Attributions, now: u64) -> DriftReport {
    let owner = repo.config.owner.as_str();
    let live_by_id: BTreeMap<AppId, &Value> = live
        .iter()
        .filter_map(|a| {
            let id = a.get("id").and_then(Value::as_str)?;
            AppId::parse(id).ok().map(|id| (id, a))
        })
        .collect();
    let ids: BTreeSet<&AppId> = repo
        .specs
        .keys()
        .chain(repo.invalid.iter())
        .chain(live_by_id.keys())
        .collect();

    let apps: Vec<AppDrift> = ids
        .into_iter()
        .map(|id| app_drift(repo, id, live_by_id.get(id).copied(), attributions, now))
        .collect();
    DriftReport {
        owner: owner.to_string(),
        generated_at: now,
        summary: summarize(&apps),
        apps,
        ledger: Vec::new(),
    }
}

/// The drift of the apps `ids` only, for a cycle that looked at just those apps: each with the
/// entry [`drift`] would give it (with `live` holding at least those apps' live state), or
/// `None` where [`drift`] would list no entry (neither in git nor running).
pub fn drift_apps(
    repo: &Repo,
    live: &[Value],
    ids: &[AppId],
    attributions: &Attributions,
    now: u64,
) -> Vec<(AppId, Option<AppDrift>)> {
    let live_by_id: BTreeMap<AppId, &Value> = live
        .iter()
        .filter_map(|a| {
            let id = a.get("id").and_then(Value::as_str)?;
            AppId::parse(id).ok().map(|id| (id, a))
        })
        .collect();
    ids.iter()
        .map(|id| {
            let live_app = live_by_id.get(id).copied();
            let listed =
                live_app.is_some() || repo.specs.contains_key(id) || repo.invalid.contains(id);
            let entry = listed.then(|| app_drift(repo, id, live_app, attributions, now));
            (id.clone(), entry)
        })
        .collect()
}

/// One app's entry of the report: `live_app` is its live state, if it runs.
fn app_drift(
    repo: &Repo,
    id: &AppId,
    live_app: Option<&Value>,
    attributions: &Attributions,
    now: u64,
) -> AppDrift {
    let owner = repo.config.owner.as_str();
    let mut a = if repo.invalid.contains(id) {
        let mut a = AppDrift::new(id.clone(), DriftState::Invalid);
        a.note = first_error(repo, id);
        a
    } else if let Some(spec) = repo.specs.get(id) {
        let mut a = match live_app {
            None => AppDrift::new(id.clone(), DriftState::Missing),
            Some(l) => match ownership::owner_of(l).filter(|o| *o != owner) {
                Some(other) => {
                    let mut a = AppDrift::new(id.clone(), DriftState::Unmanaged);
                    a.note = Some(format!("in git, but owned by `{other}`; left alone"));
                    a
                }
                None => {
                    // The commit label is bookkeeping (normalisation drops it): any value
                    // gives the same comparison.
                    let body = ownership::labelled(spec, owner, "");
                    let fields = redact(field_changes(spec, &body, l));
                    let state = if fields.is_empty() {
                        DriftState::InSync
                    } else if ownership::standing(spec, owner, l) == ownership::Standing::Behind {
                        DriftState::Pending
                    } else {
                        DriftState::Drifted
                    };
                    let mut a = AppDrift::new(id.clone(), state);
                    if state == DriftState::Pending {
                        a.note = Some(
                            "git moved and Baton's write of it has not reached the app (not made yet, or lost by the scheduler); nobody changed the app".into(),
                        );
                    }
                    if state == DriftState::Drifted {
                        let (by, since) = attributions.explain(id, spec, &body);
                        a.changed_by = by;
                        a.since = since.or_else(|| live_version_ms(l));
                    }
                    if ownership::owner_of(l).is_none() {
                        a.note = Some("running but not owned yet: a sync adopts it".into());
                    }
                    a.fields = fields;
                    a
                }
            },
        };
        a.policy = Some(spec.baton.drift.clone());
        a.file = Some(spec.file.clone());
        a.desired_digest = Some(ownership::digest_of(&spec.app));
        a
    } else if live_app.is_some_and(|l| ownership::owner_of(l) == Some(owner))
        && !repo.config.in_scope(id)
    {
        // Labelled with this owner, but not this repo's to manage.
        let mut a = AppDrift::new(id.clone(), DriftState::Unmanaged);
        a.note = Some(format!(
            "labelled `{owner}`, but outside idPrefixes ({}); left alone",
            repo.config.id_prefixes_shown()
        ));
        a
    } else if live_app.is_some_and(|l| crate::plan::rollout_companion(repo, id, l)) {
        // A rollout's canary: where the rollout wants it (the rollout reports its progress).
        let mut a = AppDrift::new(id.clone(), DriftState::InSync);
        a.note = Some("the canary app of a rollout in progress".into());
        a
    } else if let Some(l) = live_app.filter(|l| ownership::owner_of(l) == Some(owner)) {
        // Owned, but git no longer has it: the next sync prunes it (or holds the delete), a
        // pending deploy; kept on purpose (`prune: false`), it disagrees with git for good.
        let protected = ownership::prune_protected(l);
        let state = if protected {
            DriftState::Drifted
        } else {
            DriftState::Pending
        };
        let mut a = AppDrift::new(id.clone(), state);
        a.fields = vec![FieldChange {
            pointer: String::new(),
            desired: None,
            live: Some(Value::String("(the whole app)".into())),
        }];
        a.note = Some(if protected {
            "owned, but no longer in git; kept because of `baton.prune: false`".into()
        } else if !repo.config.owner_explicit {
            "owned, but no longer in git; kept: no `owner:` in baton.yaml, and without one nothing is deleted".into()
        } else {
            "owned, but no longer in git: the next sync deletes it, unless the deletion is held (see the sync status)".into()
        });
        a.since = live_version_ms(l);
        a
    } else {
        AppDrift::new(id.clone(), DriftState::Unmanaged)
    };
    if let Some(l) = live_app {
        a.owner = ownership::owner_of(l).map(str::to_string);
        a.commit = l
            .pointer("/labels")
            .and_then(|x| x.get(ownership::COMMIT))
            .and_then(Value::as_str)
            .map(str::to_string);
        a.deployed_at = l.get("version").and_then(Value::as_str).map(str::to_string);
        a.tasks = Some(tasks_of(l));
    }
    if a.since.is_some_and(|s| s > now) {
        a.since = Some(now); // clocks disagree; never report drift from the future
    }
    a
}

/// The first error of an invalid app's spec: `file at /pointer: message`.
pub fn first_error(repo: &Repo, id: &AppId) -> Option<String> {
    repo.diagnostics
        .iter()
        .find(|d| d.severity == Severity::Error && d.app.as_ref() == Some(id))
        .map(|d| {
            let at = if d.pointer.is_empty() {
                String::new()
            } else {
                format!(" at {}", d.pointer)
            };
            format!("{}{at}: {}", d.file.display(), d.message)
        })
}

fn live_version_ms(app: &Value) -> Option<u64> {
    app.get("version")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
}

fn tasks_of(app: &Value) -> Tasks {
    let n = |k: &str| app.get(k).and_then(Value::as_u64).unwrap_or(0);
    let non_empty = |k: &str| {
        app.get(k)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    let mut tasks = Tasks {
        instances: app.get("instances").and_then(Value::as_u64).unwrap_or(1),
        running: n("tasksRunning"),
        healthy: n("tasksHealthy"),
        unhealthy: n("tasksUnhealthy"),
        staged: n("tasksStaged"),
        up: crate::app::is_up(app),
        checked: non_empty("healthChecks"),
        deploying: non_empty("deployments"),
        summary: String::new(),
    };
    tasks.summary = tasks.summary();
    tasks
}

/// Environment variables whose name says they hold a secret: their values never reach a report.
fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    [
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "TOKEN",
        "KEY",
        "CREDENTIAL",
        "PRIVATE",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// Replace values under `/env/<SECRET-LOOKING NAME>` by a marker: drift reports travel to PR
/// comments, chat and browsers, and someone may have put a real secret there out of band.
/// A whole `env` object added or removed out of band is redacted key by key the same way.
/// Plans are redacted the same way (`plan::plan`): their reports travel as far.
pub(crate) fn redact(mut fields: Vec<FieldChange>) -> Vec<FieldChange> {
    fn mark(v: &mut Value) {
        if v.is_string() {
            *v = Value::String("(redacted)".into());
        }
    }
    for f in &mut fields {
        let values = [f.desired.as_mut(), f.live.as_mut()];
        if f.pointer == "/env" {
            for env in values
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                for (_, v) in env.iter_mut().filter(|(k, _)| secret_name(k)) {
                    mark(v);
                }
            }
            continue;
        }
        let name = f
            .pointer
            .strip_prefix("/env/")
            .map(|n| n.split('/').next().unwrap_or(n));
        if name.is_some_and(secret_name) {
            values.into_iter().flatten().for_each(mark);
        }
    }
    fields
}

// ---------------------------------------------------------------------------------------------
// Attribution

/// Changes kept per app: enough to find the run of changes that caused the current drift.
const KEPT_PER_APP: usize = 4;

#[derive(Debug, Clone)]
struct Seen {
    attribution: Attribution,
    /// The definition the change left (as the event carries it).
    definition: Option<Value>,
}

/// The recent API changes of each app, fed from the scheduler's event stream.
#[derive(Debug, Clone, Default)]
pub struct Attributions {
    by_app: HashMap<AppId, VecDeque<Seen>>,
}

impl Attributions {
    /// Record one change of `app` (oldest are dropped beyond a few per app).
    pub fn record(&mut self, app: AppId, attribution: Attribution, definition: Option<Value>) {
        let q = self.by_app.entry(app).or_default();
        q.push_back(Seen {
            attribution,
            definition,
        });
        while q.len() > KEPT_PER_APP {
            q.pop_front();
        }
    }

    /// Record an event if it is an `api_post_event`; true when it was.
    pub fn ingest(&mut self, event_type: &str, data: &Value) -> bool {
        match parse_api_post(event_type, data) {
            Some((app, a, def)) => {
                self.record(app, a, def);
                true
            }
            None => false,
        }
    }

    /// The latest change recorded for `app`.
    pub fn latest(&self, app: &AppId) -> Option<&Attribution> {
        self.by_app.get(app)?.back().map(|s| &s.attribution)
    }

    pub fn is_empty(&self) -> bool {
        self.by_app.is_empty()
    }

    /// Who caused the current drift of `app`, and since when: the newest change whose definition
    /// disagrees with git, and the oldest of the unbroken run of such changes before it. A
    /// change that agrees with git (Baton's own sync, say) ends the run; if the newest change
    /// agrees with git, the drift came from elsewhere and nobody is named.
    fn explain(
        &self,
        app: &AppId,
        spec: &crate::spec::Spec,
        body: &Value,
    ) -> (Option<Attribution>, Option<u64>) {
        let Some(q) = self.by_app.get(app) else {
            return (None, None);
        };
        let mut by = None;
        let mut since = None;
        for seen in q.iter().rev() {
            let disagrees = seen
                .definition
                .as_ref()
                .is_none_or(|d| !field_changes(spec, body, d).is_empty());
            if !disagrees {
                break;
            }
            if by.is_none() {
                by = Some(seen.attribution.clone());
            }
            since = Some(seen.attribution.at);
        }
        (by, since)
    }
}

/// An `api_post_event` (as Marathon and the dev scheduler send it on `/v2/events`): the app, who
/// changed it and when, and the definition it left. Anything else is `None`.
pub fn parse_api_post(
    event_type: &str,
    data: &Value,
) -> Option<(AppId, Attribution, Option<Value>)> {
    let kind = data
        .get("eventType")
        .and_then(Value::as_str)
        .unwrap_or(event_type);
    if kind != "api_post_event" {
        return None;
    }
    let def = data.get("appDefinition");
    let id = def?.get("id").and_then(Value::as_str)?;
    let app = AppId::parse(id).ok()?;
    let at = data
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)?;
    let attribution = Attribution {
        client_ip: data
            .get("clientIp")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string(),
        uri: data
            .get("uri")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        at,
    };
    Some((app, attribution, def.cloned()))
}

// ---------------------------------------------------------------------------------------------
// Corrections

/// The drifted apps to put back to git's definition at `now`: `correct` at once, `correctAfter`
/// once the drift has lasted that long (from the ledger's first sighting, or the report's
/// `since`). Never an app that failed (the daemon's retry backoff owns those), never an owned
/// app that git dropped (deletion is the sync's job, under its delete budget).
pub fn corrections(report: &DriftReport, ledger: &Ledger, now: u64) -> Vec<AppId> {
    report
        .apps
        .iter()
        .filter(|a| wants_correction(a, ledger, now))
        .map(|a| a.app.clone())
        .collect()
}

/// Whether [`corrections`] would name `app` (looked up, not a pass over the report).
pub fn corrections_for(report: &DriftReport, ledger: &Ledger, app: &AppId, now: u64) -> bool {
    report
        .app(app)
        .is_some_and(|a| wants_correction(a, ledger, now))
}

fn wants_correction(a: &AppDrift, ledger: &Ledger, now: u64) -> bool {
    let drifting = matches!(a.state, DriftState::Drifted | DriftState::Missing) && a.file.is_some();
    drifting
        && match &a.policy {
            Some(DriftPolicy::Correct) => true,
            Some(DriftPolicy::CorrectAfter(grace)) => {
                started(a, ledger).is_some_and(|s| now.saturating_sub(s) >= millis(*grace))
            }
            _ => false,
        }
}

/// When the next `correctAfter` grace period ends (for the daemon's requeue), if any is pending.
pub fn next_correction_at(report: &DriftReport, ledger: &Ledger, now: u64) -> Option<u64> {
    report
        .apps
        .iter()
        .filter(|a| {
            matches!(a.state, DriftState::Drifted | DriftState::Missing) && a.file.is_some()
        })
        .filter_map(|a| match &a.policy {
            Some(DriftPolicy::CorrectAfter(grace)) => {
                started(a, ledger).map(|s| s + millis(*grace))
            }
            _ => None,
        })
        .filter(|at| *at > now)
        .min()
}

fn started(a: &AppDrift, ledger: &Ledger) -> Option<u64> {
    match (ledger.open(&a.app).map(|e| e.first_seen), a.since) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `plan` cut down to the changes of `apps` (creates and updates only; deletes are left to the
/// full sync): what a correction applies. Waves that end up empty are dropped.
pub fn restrict(plan: &Plan, apps: &[AppId]) -> Plan {
    let keep: BTreeSet<&AppId> = apps.iter().collect();
    let mut out = plan.clone();
    out.waves = plan
        .waves
        .iter()
        .map(|w| Wave {
            changes: w
                .changes
                .iter()
                .filter(|c| keep.contains(&c.app) && c.action != crate::plan::Action::Delete)
                .cloned()
                .collect(),
        })
        .filter(|w| !w.changes.is_empty())
        .collect();
    out.summary.create = out
        .changes()
        .filter(|c| c.action == crate::plan::Action::Create)
        .count();
    out.summary.update = out
        .changes()
        .filter(|c| c.action == crate::plan::Action::Update)
        .count();
    out.summary.delete = 0;
    out.held.clear();
    out.moves.clear();
    out
}

// ---------------------------------------------------------------------------------------------
// Time

/// `2026-11-22T10:00:00.000Z` for Unix milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => ms.to_string(),
    }
}

/// Unix milliseconds of an RFC 3339 time (Marathon's `timestamp` and `version`).
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// `3d4h`, `5m`, `42s`: a short human duration for reports.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (d_, h, m, sec) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    match (d_, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!(
            "{m}m{}",
            if sec > 0 {
                format!("{sec}s")
            } else {
                String::new()
            }
        ),
        (0, _, _) => format!(
            "{h}h{}",
            if m > 0 {
                format!("{m}m")
            } else {
                String::new()
            }
        ),
        _ => format!(
            "{d_}d{}",
            if h > 0 {
                format!("{h}h")
            } else {
                String::new()
            }
        ),
    }
}

/// The policy as reports write it: `report`, `correct`, `correct-after:600s`.
pub fn policy_word(p: &DriftPolicy) -> String {
    match p {
        DriftPolicy::Report => "report".into(),
        DriftPolicy::Correct => "correct".into(),
        DriftPolicy::CorrectAfter(d) => format!("correct-after:{}s", d.as_secs()),
    }
}

/// Unix ms as RFC 3339 strings in JSON.
pub(crate) mod ts {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {s}")))
    }
}

pub(crate) mod opt_ts {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_str(&super::rfc3339(*ms)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => super::parse_rfc3339(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {s}"))),
        }
    }
}

fn policy_str<S: Serializer>(p: &Option<DriftPolicy>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => s.serialize_str(&policy_word(p)),
        None => s.serialize_none(),
    }
}
