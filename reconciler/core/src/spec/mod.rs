//! App specs: from the files of a repo to validated, normalised app definitions. Pure functions of
//! data: the files come in as bytes (see `baton::source`), diagnostics go out as values.
//!
//! - [`parse`]: YAML/JSON text to `serde_json::Value`, bounded; pointers back to lines.
//! - [`schema`]: validation against `schemas/*.schema.json`, with did-you-mean for unknown fields.
//! - [`retired`]: fields Marathon once served and now ignores (a warning, not an error).
//! - [`secret_refs`]: DC/OS secret references name a declared secret.
//! - [`load`]: a repo's files to [`Repo`]: specs by app id, plus diagnostics.
//! - [`canonical`] and [`defaults`]: Marathon's stored form of an app.
//! - [`normalize`]: the comparable form of a desired or live app (no defaults noise, no status).

pub mod canonical;
pub mod defaults;
pub mod id;
pub mod incremental;
pub mod load;
pub mod normalize;
pub mod parse;
pub mod retired;
pub mod schema;
pub mod secret_refs;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

pub use canonical::marathon_form;
pub use id::{AppId, IdPrefix};
pub use load::{load, RepoConfig, SourceFile};

/// How bad a diagnostic is. Errors make the app (or the repo config) invalid; warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about one file: where (file, JSON pointer, line, column) and what, in plain words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Path of the file, relative to the repo root.
    pub file: PathBuf,
    /// RFC 6901 pointer into the document ("" for the whole document).
    pub pointer: String,
    /// 1-based line and column, when they can be told.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    /// The app the file would define, when its path gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<AppId>,
}

/// What to do about drift on an app (`baton.drift`, or the repo default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftPolicy {
    /// Report only (the default).
    Report,
    /// Put git's definition back at once.
    Correct,
    /// Put it back once drift has lasted this long (a grace period for human hotfixes).
    CorrectAfter(Duration),
}

/// The `baton:` block of a spec: what Marathon does not know and never receives.
#[derive(Debug, Clone, PartialEq)]
pub struct BatonBlock {
    /// Apps that must be deployed before this one.
    pub depends_on: Vec<AppId>,
    /// `false`: never delete this app, even when its file is removed.
    pub prune: bool,
    /// JSON pointers of fields someone else owns (e.g. `/instances` under an autoscaler).
    pub ignore: Vec<String>,
    /// Progress deadline of a deployment of this app.
    pub deadline: Duration,
    pub drift: DriftPolicy,
    /// Reserved for the secret-zero settings; kept as given.
    pub secrets: Option<Value>,
    /// Progressive delivery (`crate::rollout`): changes roll out through a canary app.
    pub rollout: Option<crate::rollout::Rollout>,
}

impl Default for BatonBlock {
    fn default() -> Self {
        BatonBlock {
            depends_on: Vec::new(),
            prune: true,
            ignore: Vec::new(),
            deadline: Duration::from_secs(600),
            drift: DriftPolicy::Report,
            secrets: None,
            rollout: None,
        }
    }
}

/// A valid app spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub id: AppId,
    /// The file it came from, relative to the repo root.
    pub file: PathBuf,
    /// The Marathon app definition: repo defaults merged in, `id` set, `baton:` removed. Not
    /// normalised: this is what the user wrote, and what is sent (plus ownership labels).
    pub app: Value,
    pub baton: BatonBlock,
}

/// A repo after loading: valid specs, the ids of apps whose specs are invalid, and diagnostics.
#[derive(Debug, Clone, Default)]
pub struct Repo {
    pub config: RepoConfig,
    /// Behind `Arc`: a repo loaded incrementally shares the specs of unchanged files with the
    /// previous one, so a new commit costs what changed, not a copy of every definition.
    pub specs: BTreeMap<AppId, Arc<Spec>>,
    /// Apps whose file exists but does not validate: never changed, never deleted.
    pub invalid: BTreeSet<AppId>,
    /// Some file could not be tied to an app id (or the config itself is broken): nothing may be
    /// deleted in this state, since an app we cannot see may be one of those files.
    pub incomplete: bool,
    pub diagnostics: Vec<Diagnostic>,
}

impl Repo {
    /// True when no diagnostic is an error.
    pub fn is_valid(&self) -> bool {
        !self
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}
