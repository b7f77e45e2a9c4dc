//! Declarative Vault access from specs (pure): which Vault policy and AppRole role each app
//! needs, the non-secret bootstrap settings injected into its env, and the [`VaultPlan`] that
//! turns Vault's current objects into the desired ones.
//!
//! An app needs Vault access when its env holds `vault:<path>#<key>` references or
//! `{{ vault:... }}` templates (the sidecar's grammar: [`baton_env::refs::parse_value`] is reused,
//! so the two can never disagree), or a `baton.secrets` block. It then gets:
//! - a policy `baton-<app path with dashes>` granting `read` on exactly the referenced paths
//!   (as written: a KV v2 path is written `secret/data/x`), least privilege by construction;
//! - an AppRole role of the same name with `token_policies = [that policy] + extras`, a short
//!   token TTL, `secret_id_num_uses = 1` and a short `secret_id_ttl`;
//! - env `VAULT_ADDR`, `BATON_AUTH=gatekeeper`, `BATON_GATEKEEPER_URL`, `BATON_APPROLE_ROLE`
//!   (pins the role the wrapped secret id must come from) and `BATON_ROLE_ID`.
//!
//! The role id is not secret but is Vault's to keep: for a role that exists it is read back
//! (`auth/approle/role/<name>/role-id`) before planning; for a role that does not exist yet the
//! caller draws a fresh random UUID, the plan creates the role with that `role_id`, and the same
//! value goes into the app's env in the same sync. So the app definition is complete at plan time
//! and `apply` never rewrites bodies. A role id changed behind Baton's back shows up as env drift.
//!
//! Invariant: Baton owns every policy and role whose name starts with [`NAME_PREFIX`]; it never
//! touches any other. Two apps whose names collide (`/a-b/c`, `/a/b-c`) get no Vault objects.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::plan::{Action, Plan};
use crate::spec::{AppId, Repo};

/// Prefix of every Vault policy and AppRole role Baton manages.
pub const NAME_PREFIX: &str = "baton-";

/// Env names the reconciler injects (the sidecar's flag env names, see `sidecar/src/main.rs`).
pub mod env {
    pub const VAULT_ADDR: &str = "VAULT_ADDR";
    pub const AUTH: &str = "BATON_AUTH";
    pub const GATEKEEPER_URL: &str = "BATON_GATEKEEPER_URL";
    pub const APPROLE_MOUNT: &str = "BATON_APPROLE_MOUNT";
    pub const APPROLE_ROLE: &str = "BATON_APPROLE_ROLE";
    pub const ROLE_ID: &str = "BATON_ROLE_ID";
    /// The KV version of each mount the app reads (`secret=2,kv1=1`): spares the sidecar one
    /// mount lookup per path at every start.
    pub const KV_VERSIONS: &str = "BATON_KV_VERSIONS";
}

/// KV secrets engines of a Vault: mount path with its trailing slash (`secret/`) -> version.
pub type KvMounts = BTreeMap<String, u8>;

/// Defaults of `baton.secrets`.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_TOKEN_MAX_TTL: Duration = Duration::from_secs(60 * 60);
pub const DEFAULT_SECRET_ID_TTL: Duration = Duration::from_secs(120);

/// The Vault name of an app's policy and role: `/prod/web-api` -> `baton-prod-web-api`.
pub fn object_name(id: &AppId) -> String {
    format!("{NAME_PREFIX}{}", id.path().replace('/', "-"))
}

/// The AppRole role settings Baton manages (other fields of a live role are not compared).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleSettings {
    pub token_policies: Vec<String>,
    /// Seconds.
    pub token_ttl: u64,
    pub token_max_ttl: u64,
    pub secret_id_num_uses: u64,
    pub secret_id_ttl: u64,
}

/// What one app needs in Vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredApp {
    pub app: AppId,
    /// Policy and role name.
    pub name: String,
    /// The distinct paths read by the app (without `?version=`).
    pub paths: BTreeSet<String>,
    pub policy: String,
    pub role: RoleSettings,
    /// The KV mounts among `paths` with their versions (empty until [`apply_kv_mounts`]).
    pub kv_versions: KvMounts,
}

/// A problem with an app's secrets settings: the app gets no Vault objects while it lasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretsIssue {
    pub app: AppId,
    pub message: String,
}

/// Every app's desired Vault objects, by object name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub apps: BTreeMap<String, DesiredApp>,
    pub issues: Vec<SecretsIssue>,
}

impl Desired {
    /// The object name of an app, when it has Vault access.
    pub fn name_of(&self, id: &AppId) -> Option<&str> {
        let name = object_name(id);
        self.apps
            .get_key_value(&name)
            .filter(|(_, d)| &d.app == id)
            .map(|(k, _)| k.as_str())
    }
}

/// The policy text Baton writes: one `read` stanza per path, sorted (so equal sets give equal
/// text and compare cleanly with what Vault stores).
pub fn policy_text(app: &AppId, paths: &BTreeSet<String>) -> String {
    let mut s = format!("# Managed by Baton for {app}; changes are overwritten.\n");
    for p in paths {
        let _ = write!(s, "path \"{p}\" {{\n  capabilities = [\"read\"]\n}}\n");
    }
    s
}

/// What the KV mounts of the Vault change: a KV v2 path written without `data/`
/// (`secret/app`) is read by the sidecar at `secret/data/app`, so that is the path the policy
/// grants; and each app learns the versions of the mounts it reads (for `BATON_KV_VERSIONS`).
/// With `mounts` empty (not known) paths are granted as written.
pub fn apply_kv_mounts(desired: &mut Desired, mounts: &KvMounts) {
    for d in desired.apps.values_mut() {
        let mut granted = BTreeSet::new();
        let mut used = KvMounts::new();
        for p in &d.paths {
            let mount = mounts
                .iter()
                .filter(|(m, _)| p.starts_with(m.as_str()))
                .max_by_key(|(m, _)| m.len());
            match mount {
                Some((m, 2)) => {
                    granted.insert(baton_env::resolve::kv2_data_path(m, p));
                    used.insert(m.clone(), 2);
                }
                Some((m, v)) => {
                    granted.insert(p.clone());
                    used.insert(m.clone(), *v);
                }
                None => {
                    granted.insert(p.clone());
                }
            }
        }
        d.policy = policy_text(&d.app, &granted);
        d.kv_versions = used;
    }
}

/// The distinct Vault paths an app definition's env reads, or the variables whose reference is
/// malformed.
pub fn referenced_paths(app: &Value) -> Result<BTreeSet<String>, Vec<String>> {
    let mut paths = BTreeSet::new();
    let mut bad = Vec::new();
    if let Some(env) = app.get("env").and_then(Value::as_object) {
        for (name, value) in env {
            let Some(text) = value.as_str() else { continue };
            match baton_env::refs::parse_value(text) {
                Ok(None) => {}
                Ok(Some(segments)) => {
                    for seg in segments {
                        if let baton_env::refs::Segment::Ref(r) = seg {
                            paths.insert(r.path);
                        }
                    }
                }
                Err(kind) => bad.push(format!("env {name}: {kind}")),
            }
        }
    }
    if bad.is_empty() {
        Ok(paths)
    } else {
        Err(bad)
    }
}

/// `baton.secrets`: `{tokenTtl, tokenMaxTtl, secretIdTtl, policies}` (durations as `90s`, `15m`
/// or seconds).
fn settings(block: Option<&Value>) -> Result<(u64, u64, u64, Vec<String>), String> {
    let empty = Map::new();
    let obj = match block {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err("`baton.secrets` must be an object".into()),
    };
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "tokenTtl" | "tokenMaxTtl" | "secretIdTtl" | "policies"
        ) {
            return Err(format!(
                "unknown `baton.secrets` field `{key}` (known: tokenTtl, tokenMaxTtl, secretIdTtl, policies)"
            ));
        }
    }
    let dur = |key: &str, default: Duration| -> Result<u64, String> {
        match obj.get(key) {
            None => Ok(default.as_secs()),
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
                format!("`baton.secrets.{key}` must be a positive number of seconds")
            }),
            Some(Value::String(s)) => crate::spec::load::parse_duration(s)
                .map(|d| d.as_secs())
                .map_err(|e| format!("`baton.secrets.{key}`: {e}")),
            Some(_) => Err(format!("`baton.secrets.{key}` must be a duration")),
        }
    };
    let token_ttl = dur("tokenTtl", DEFAULT_TOKEN_TTL)?;
    let token_max_ttl = dur("tokenMaxTtl", DEFAULT_TOKEN_MAX_TTL)?;
    let secret_id_ttl = dur("secretIdTtl", DEFAULT_SECRET_ID_TTL)?;
    if token_ttl == 0 || secret_id_ttl == 0 {
        return Err(
            "`baton.secrets` TTLs must be greater than zero (zero means unlimited in Vault)".into(),
        );
    }
    if token_max_ttl != 0 && token_max_ttl < token_ttl {
        return Err("`baton.secrets.tokenMaxTtl` is shorter than `tokenTtl`".into());
    }
    let policies = match obj.get("policies") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|p| {
                p.as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        "`baton.secrets.policies` must be a list of policy names".to_string()
                    })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("`baton.secrets.policies` must be a list of policy names".into()),
    };
    if policies.iter().any(|p| p == "root") {
        return Err("`baton.secrets.policies` must not grant `root`".into());
    }
    Ok((token_ttl, token_max_ttl, secret_id_ttl, policies))
}

/// The Vault objects every valid spec needs.
pub fn desired(repo: &Repo) -> Desired {
    let mut out = Desired::default();
    let mut claimed: BTreeMap<String, Vec<AppId>> = BTreeMap::new();
    for (id, spec) in &repo.specs {
        let paths = match referenced_paths(&spec.app) {
            Ok(p) => p,
            Err(bad) => {
                out.issues.push(SecretsIssue {
                    app: id.clone(),
                    message: format!("malformed secret reference(s): {}", bad.join("; ")),
                });
                continue;
            }
        };
        if paths.is_empty() && spec.baton.secrets.is_none() {
            continue;
        }
        let (token_ttl, token_max_ttl, secret_id_ttl, extra) =
            match settings(spec.baton.secrets.as_ref()) {
                Ok(s) => s,
                Err(message) => {
                    out.issues.push(SecretsIssue {
                        app: id.clone(),
                        message,
                    });
                    continue;
                }
            };
        let name = object_name(id);
        claimed.entry(name.clone()).or_default().push(id.clone());
        let mut token_policies = vec![name.clone()];
        token_policies.extend(extra.into_iter().filter(|p| *p != name));
        out.apps.insert(
            name.clone(),
            DesiredApp {
                app: id.clone(),
                policy: policy_text(id, &paths),
                paths,
                name,
                role: RoleSettings {
                    token_policies,
                    token_ttl,
                    token_max_ttl,
                    secret_id_num_uses: 1,
                    secret_id_ttl,
                },
                kv_versions: KvMounts::new(),
            },
        );
    }
    for (name, ids) in claimed.into_iter().filter(|(_, ids)| ids.len() > 1) {
        out.apps.remove(&name);
        let all: Vec<String> = ids.iter().map(ToString::to_string).collect();
        for id in ids {
            out.issues.push(SecretsIssue {
                app: id,
                message: format!(
                    "apps {} would share the Vault name `{name}`; none of them gets Vault access until one is renamed",
                    all.join(", ")
                ),
            });
        }
    }
    out
}

/// A live AppRole role as Baton reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRole {
    pub settings: RoleSettings,
    pub role_id: String,
}

/// Vault's current `baton-*` objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveVault {
    /// Policy name -> policy text.
    pub policies: BTreeMap<String, String>,
    pub roles: BTreeMap<String, LiveRole>,
}

/// What kind of Vault object a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Policy,
    Role,
}

/// One write to Vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VaultChange {
    pub kind: ObjectKind,
    pub name: String,
    pub action: Action,
    /// The app the object belongs to, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<AppId>,
    /// What differs, in words (paths added/removed, settings changed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// Creates and updates: the policy text, or the role settings (plus `role_id` on create).
    #[serde(skip)]
    pub body: Option<Value>,
}

/// The Vault part of a sync: creates and updates run before the apps are written (an app must
/// never start before its role exists), deletes after the apps are deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VaultPlan {
    pub before_apps: Vec<VaultChange>,
    pub after_apps: Vec<VaultChange>,
    pub issues: Vec<SecretsIssue>,
}

impl VaultPlan {
    pub fn is_empty(&self) -> bool {
        self.before_apps.is_empty() && self.after_apps.is_empty()
    }
}

/// Where the sidecar finds Vault and the gatekeeper (non-secret settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    pub vault_addr: String,
    /// `http(s)://<baton serve>/v1/secret-zero`.
    pub gatekeeper_url: String,
    /// AppRole mount, usually `approle`.
    pub approle_mount: String,
}

/// The role id each desired role has (live) or will get (`fresh`, a random UUID drawn by the
/// caller, for roles that do not exist yet).
pub fn role_ids(
    desired: &Desired,
    live: &LiveVault,
    fresh: &mut dyn FnMut() -> String,
) -> BTreeMap<String, String> {
    desired
        .apps
        .keys()
        .map(|name| {
            let id = match live.roles.get(name) {
                Some(r) if !r.role_id.is_empty() => r.role_id.clone(),
                _ => fresh(),
            };
            (name.clone(), id)
        })
        .collect()
}

/// Adds the bootstrap env to every app with Vault access. Values the spec sets itself win
/// (an app may point at another Vault), so only absent names are added.
pub fn inject_env(
    repo: &mut Repo,
    desired: &Desired,
    role_ids: &BTreeMap<String, String>,
    boot: &Bootstrap,
) {
    for d in desired.apps.values() {
        let Some(spec) = repo.specs.get_mut(&d.app) else {
            continue;
        };
        let Value::Object(app) = &mut std::sync::Arc::make_mut(spec).app else {
            continue;
        };
        let env = app
            .entry("env")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(env) = env else { continue };
        let mut add = |k: &str, v: &str| {
            env.entry(k.to_owned())
                .or_insert_with(|| Value::String(v.to_owned()));
        };
        add(env::VAULT_ADDR, &boot.vault_addr);
        add(env::AUTH, "gatekeeper");
        add(env::GATEKEEPER_URL, &boot.gatekeeper_url);
        if boot.approle_mount != "approle" {
            add(env::APPROLE_MOUNT, &boot.approle_mount);
        }
        add(env::APPROLE_ROLE, &d.name);
        if !d.kv_versions.is_empty() {
            let versions: Vec<String> = (d.kv_versions.iter())
                .map(|(m, v)| format!("{}={v}", m.trim_end_matches('/')))
                .collect();
            add(env::KV_VERSIONS, &versions.join(","));
        }
        if let Some(id) = role_ids.get(&d.name) {
            add(env::ROLE_ID, id);
        }
    }
}

/// Takes apps out of the sync as if their spec were invalid (never changed, never deleted, their
/// Vault objects kept), each with an error diagnostic saying why. Used for apps whose secrets
/// cannot be wired: no Vault configured, or a [`SecretsIssue`].
pub fn block(repo: &mut Repo, apps: impl IntoIterator<Item = (AppId, String)>) {
    for (id, message) in apps {
        let Some(spec) = repo.specs.remove(&id) else {
            continue;
        };
        repo.invalid.insert(id.clone());
        repo.diagnostics.push(crate::spec::Diagnostic {
            severity: crate::spec::Severity::Error,
            file: spec.file.clone(),
            pointer: "/env".into(),
            line: None,
            column: None,
            message,
            app: Some(id),
        });
    }
}

/// The apps that need Vault (and those with a secrets issue), blocked with a clear message
/// because no Vault is configured. Returns how many were blocked.
pub fn block_without_vault(repo: &mut Repo, desired: &Desired) -> usize {
    let mut apps: Vec<(AppId, String)> = desired
        .apps
        .values()
        .map(|d| {
            (
                d.app.clone(),
                "the app reads Vault secrets, but no Vault is configured (--vault-addr and a token); \
                 it is left untouched until one is"
                    .to_string(),
            )
        })
        .collect();
    apps.extend(
        desired
            .issues
            .iter()
            .map(|i| (i.app.clone(), format!("secrets: {}", i.message))),
    );
    let n = apps.len();
    block(repo, apps);
    n
}

/// Blocks the apps with a [`SecretsIssue`]: deploying them would start tasks whose `vault:`
/// references can never resolve.
pub fn block_issues(repo: &mut Repo, desired: &Desired) {
    block(
        repo,
        desired
            .issues
            .iter()
            .map(|i| (i.app.clone(), format!("secrets: {}", i.message))),
    );
}

/// Copies bootstrap env values (only the names in `names`) from the live app definitions into
/// the specs that need Vault and do not set them: for `baton plan` without Vault access or a
/// gatekeeper URL, so an app deployed with secrets shows no made-up env diff.
pub fn carry_live_env(repo: &mut Repo, desired: &Desired, live: &[Value], names: &[&str]) {
    let live_env: BTreeMap<&str, &Map<String, Value>> = live
        .iter()
        .filter_map(|a| {
            Some((
                a.get("id")?.as_str()?,
                a.get("env").and_then(Value::as_object)?,
            ))
        })
        .collect();
    for d in desired.apps.values() {
        let Some(from) = live_env.get(d.app.as_str()) else {
            continue;
        };
        let Some(Value::Object(app)) = repo
            .specs
            .get_mut(&d.app)
            .map(|s| &mut std::sync::Arc::make_mut(s).app)
        else {
            continue;
        };
        let Value::Object(env) = app
            .entry("env")
            .or_insert_with(|| Value::Object(Map::new()))
        else {
            continue;
        };
        for name in names {
            if let Some(v) = from.get(*name) {
                env.entry((*name).to_owned()).or_insert_with(|| v.clone());
            }
        }
    }
}

/// Every bootstrap env name the reconciler injects.
pub const BOOTSTRAP_ENV: [&str; 6] = [
    env::VAULT_ADDR,
    env::AUTH,
    env::GATEKEEPER_URL,
    env::APPROLE_MOUNT,
    env::APPROLE_ROLE,
    env::ROLE_ID,
];

/// Desired x live Vault objects x the app plan -> Vault writes.
///
/// Deletion follows the app plan's safety rules: nothing is deleted when the repo is incomplete;
/// an app whose spec is invalid, whose deletion is held, or that still runs without being
/// deleted keeps its objects. Objects whose app is gone or no longer reads secrets go.
pub fn plan_vault(
    desired: &Desired,
    live: &LiveVault,
    role_ids: &BTreeMap<String, String>,
    repo: &Repo,
    plan: &Plan,
    live_apps: &[AppId],
) -> VaultPlan {
    let mut out = VaultPlan {
        issues: desired.issues.clone(),
        ..Default::default()
    };
    for (name, d) in &desired.apps {
        let app = Some(d.app.clone());
        match live.policies.get(name) {
            None => out.before_apps.push(VaultChange {
                kind: ObjectKind::Policy,
                name: name.clone(),
                action: Action::Create,
                app: app.clone(),
                // The paths the policy grants (KV v2 paths with `data/`), not as referenced.
                details: policy_paths(&d.policy)
                    .iter()
                    .map(|p| format!("read {p}"))
                    .collect(),
                body: Some(Value::String(d.policy.clone())),
            }),
            Some(text) if text.trim() != d.policy.trim() => out.before_apps.push(VaultChange {
                kind: ObjectKind::Policy,
                name: name.clone(),
                action: Action::Update,
                app: app.clone(),
                details: policy_details(text, &policy_paths(&d.policy)),
                body: Some(Value::String(d.policy.clone())),
            }),
            Some(_) => {}
        }
        let mut body = serde_json::to_value(&d.role).unwrap_or(Value::Null);
        match live.roles.get(name) {
            None => {
                if let (Value::Object(m), Some(id)) = (&mut body, role_ids.get(name)) {
                    m.insert("role_id".into(), Value::String(id.clone()));
                }
                out.before_apps.push(VaultChange {
                    kind: ObjectKind::Role,
                    name: name.clone(),
                    action: Action::Create,
                    app,
                    details: role_details(None, &d.role),
                    body: Some(body),
                });
            }
            Some(r) if r.settings != d.role => out.before_apps.push(VaultChange {
                kind: ObjectKind::Role,
                name: name.clone(),
                action: Action::Update,
                app,
                details: role_details(Some(&r.settings), &d.role),
                body: Some(body),
            }),
            Some(_) => {}
        }
    }

    if repo.incomplete {
        return out;
    }
    // Names that must stay although no valid spec asks for them.
    let deleted: BTreeSet<&AppId> = plan
        .changes()
        .filter(|c| c.action == Action::Delete)
        .map(|c| &c.app)
        .collect();
    let mut keep: BTreeMap<String, AppId> = BTreeMap::new();
    for id in repo.invalid.iter().chain(plan.held.iter().map(|h| &h.app)) {
        keep.insert(object_name(id), id.clone());
    }
    for id in live_apps {
        if !deleted.contains(id) && !repo.specs.contains_key(id) {
            keep.insert(object_name(id), id.clone());
        }
    }
    // Apps with a valid spec but with an issue keep what they have until the issue is fixed.
    for issue in &desired.issues {
        keep.insert(object_name(&issue.app), issue.app.clone());
    }
    let app_of = |name: &str| -> Option<AppId> {
        repo.specs
            .keys()
            .chain(live_apps.iter())
            .find(|id| object_name(id) == name)
            .cloned()
    };
    let gone = |name: &&String| !desired.apps.contains_key(*name) && !keep.contains_key(*name);
    for name in live.roles.keys().filter(gone) {
        out.after_apps.push(VaultChange {
            kind: ObjectKind::Role,
            name: name.clone(),
            action: Action::Delete,
            app: app_of(name),
            details: Vec::new(),
            body: None,
        });
    }
    for name in live.policies.keys().filter(gone) {
        out.after_apps.push(VaultChange {
            kind: ObjectKind::Policy,
            name: name.clone(),
            action: Action::Delete,
            app: app_of(name),
            details: Vec::new(),
            body: None,
        });
    }
    out
}

/// The paths a stored policy grants (`path "<p>"` stanzas), for readable diffs.
pub fn policy_paths(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("path \""))
        .filter_map(|rest| rest.split_once('"').map(|(p, _)| p.to_owned()))
        .collect()
}

fn policy_details(live: &str, want: &BTreeSet<String>) -> Vec<String> {
    let have = policy_paths(live);
    let mut out: Vec<String> = want
        .difference(&have)
        .map(|p| format!("+ read {p}"))
        .collect();
    out.extend(have.difference(want).map(|p| format!("- read {p}")));
    if out.is_empty() {
        out.push("policy text differs (edited outside Baton)".into());
    }
    out
}

fn role_details(live: Option<&RoleSettings>, want: &RoleSettings) -> Vec<String> {
    let fields = |r: &RoleSettings| -> Vec<(&'static str, String)> {
        vec![
            ("token_policies", r.token_policies.join(",")),
            ("token_ttl", format!("{}s", r.token_ttl)),
            ("token_max_ttl", format!("{}s", r.token_max_ttl)),
            ("secret_id_num_uses", r.secret_id_num_uses.to_string()),
            ("secret_id_ttl", format!("{}s", r.secret_id_ttl)),
        ]
    };
    let want_f = fields(want);
    match live {
        None => want_f
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        Some(live) => fields(live)
            .into_iter()
            .zip(want_f)
            .filter(|(a, b)| a.1 != b.1)
            .map(|((k, old), (_, new))| format!("{k}: {old} -> {new}"))
            .collect(),
    }
}

/// The Vault part of a plan for a terminal (appended after [`crate::report::plan_text`]).
pub fn vault_plan_text(plan: &VaultPlan) -> String {
    let mut out = String::new();
    if plan.is_empty() && plan.issues.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "Vault: {} to write before the apps, {} to delete after them",
        plan.before_apps.len(),
        plan.after_apps.len()
    );
    for c in plan.before_apps.iter().chain(&plan.after_apps) {
        let mark = match c.action {
            Action::Create => "+ create",
            Action::Update => "~ update",
            Action::Delete => "- delete",
        };
        let kind = match c.kind {
            ObjectKind::Policy => "policy",
            ObjectKind::Role => "approle",
        };
        let app = c
            .app
            .as_ref()
            .map(|a| format!("  ({a})"))
            .unwrap_or_default();
        let _ = writeln!(out, "  {mark} {kind} {}{app}", c.name);
        for d in &c.details {
            let _ = writeln!(out, "      {d}");
        }
    }
    for i in &plan.issues {
        let _ = writeln!(out, "  secrets issue: {}: {}", i.app, i.message);
    }
    out
}

#[cfg(test)]
mod tests;
