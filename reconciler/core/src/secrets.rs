//! Declarative Vault access from specs (pure): which Vault policy and AppRole role each app
//! needs, the non-secret bootstrap settings injected into its env, which of Vault's objects are
//! this Baton's, and the [`VaultPlan`] that turns Vault's current objects into the desired ones.
//!
//! An app needs Vault access when its env holds `vault:<path>#<key>` references or
//! `{{ vault:... }}` templates (the sidecar's grammar: [`crate::refs::parse_value`] is reused,
//! so the two can never disagree), or a `baton.secrets` block. It then gets:
//! - a policy granting `read` on exactly the referenced paths (as written: a KV v2 path is
//!   written `secret/data/x`), least privilege by construction;
//! - an AppRole role of the same name with `token_policies = [that policy] + extras` (extras only
//!   from the operator's allow-list, [`AllowedPolicies`]), a short token TTL,
//!   `secret_id_num_uses = 1` and a short `secret_id_ttl`;
//! - env `VAULT_ADDR`, `BATON_AUTH=gatekeeper`, `BATON_GATEKEEPER_URL`, `BATON_APPROLE_ROLE`
//!   (pins the role the wrapped secret id must come from) and `BATON_ROLE_ID`.
//!
//! Names and ownership. Both objects are named `baton-<owner>_<app path, `/` as `_`>`
//! ([`object_name`]: owner `shop`, app `/prod/web-api` -> `baton-shop_prod_web-api`). Neither
//! owners nor app ids can contain `_`, so a name gives back exactly one (owner, app)
//! ([`app_of_name`]), and the prefix `baton-<owner>_` belongs to one owner alone: two Batons with
//! different owners never share a name, even for the same app ids, and a Vault ACL glob on the
//! prefix confines each reconciler's token to its own objects. A name alone proves nothing:
//! an object is this Baton's only when it also carries Baton's marker for that owner and app,
//! written by Baton when it created the object ([`classify`]):
//! - a policy: its first line is [`marker`] (`# baton: owner=<owner> app=<app> ...`);
//! - a role: its role id is `<role name>:<random>` ([`new_role_id`]). AppRole roles hold no
//!   metadata, but the role id is set by whoever creates the role, is read back on every
//!   observation anyway (the app's env carries it), and changes only by an explicit call; a role
//!   made by hand gets a UUID, which never starts with the role's name.
//!
//! Everything else named `baton-*` is unmanaged: never written, never deleted, reported (plan,
//! `/api/status`); an app whose name is taken by such an object is blocked like an invalid spec.
//! Deletions need that proof and fall under the repo's delete budget ([`plan_vault`]).
//!
//! The role id is not secret but is Vault's to keep: for a role that exists it is read back
//! (`auth/approle/role/<name>/role-id`) before planning; for a role that does not exist yet the
//! caller draws a fresh random suffix, the plan creates the role with that `role_id`, and the
//! same value goes into the app's env in the same sync. So the app definition is complete at
//! plan time and `apply` never rewrites bodies. A role id changed behind Baton's back makes the
//! role unmanaged (its app is blocked until the role is removed).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::plan::{Action, Plan};
use crate::spec::{AppId, Repo, Spec};

/// Prefix of every Vault policy and AppRole role name Baton gives (and of those it reports as
/// unmanaged: other names are none of its business).
pub const NAME_PREFIX: &str = "baton-";
/// Separates the owner from the app path, and the app path's segments, in an object name.
pub const NAME_SEPARATOR: char = '_';

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

/// The start of every name of `owner`'s objects: `baton-<owner>_`.
pub fn owner_prefix(owner: &str) -> String {
    format!("{NAME_PREFIX}{owner}{NAME_SEPARATOR}")
}

/// The Vault name of an app's policy and role: owner `shop`, `/prod/web-api` ->
/// `baton-shop_prod_web-api`.
pub fn object_name(owner: &str, id: &AppId) -> String {
    format!(
        "{}{}",
        owner_prefix(owner),
        id.path().replace('/', &NAME_SEPARATOR.to_string())
    )
}

/// The app an object name of `owner` stands for (the inverse of [`object_name`]); `None` for a
/// name Baton does not give.
pub fn app_of_name(owner: &str, name: &str) -> Option<AppId> {
    let rest = name.strip_prefix(&owner_prefix(owner))?;
    let id = AppId::parse(&format!("/{}", rest.replace(NAME_SEPARATOR, "/"))).ok()?;
    (object_name(owner, &id) == name).then_some(id)
}

/// The first line of every policy Baton writes: names the owner and the app, and is the proof
/// that the policy is Baton's (see the module doc).
pub fn marker(owner: &str, app: &AppId) -> String {
    format!("# baton: owner={owner} app={app} (managed by Baton: edits are overwritten, deleted with the app)")
}

/// A role id Baton gives a role it creates: the role's name, `:`, and a random `unique` part.
pub fn new_role_id(role: &str, unique: &str) -> String {
    format!("{role}:{unique}")
}

/// Whether `role_id` is one Baton gave the role `role` ([`new_role_id`]).
pub fn is_baton_role_id(role: &str, role_id: &str) -> bool {
    role_id
        .strip_prefix(role)
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|unique| !unique.is_empty())
}

/// A Vault policy name as Vault keeps it: trimmed and lowercased (Vault lowercases policy
/// names, so `Root` is `root`).
pub fn canonical_policy(name: &str) -> String {
    name.trim().to_lowercase()
}

/// The extra policies a spec may give its app (`baton.secrets.policies`), as the operator
/// allowed them (`--vault-allowed-policies`): by default none. `root` is never allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedPolicies {
    names: BTreeSet<String>,
}

impl AllowedPolicies {
    /// The allow-list from the operator's names (compared after trimming, case-insensitively;
    /// empty entries, as a trailing comma gives, are skipped). Refuses `root`.
    pub fn new<I, S>(names: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = BTreeSet::new();
        for name in names {
            let name = canonical_policy(name.as_ref());
            if name.is_empty() {
                continue;
            }
            if name == "root" {
                return Err(
                    "`root` can never be allowed: an app token with it could do anything in Vault"
                        .into(),
                );
            }
            out.insert(name);
        }
        Ok(AllowedPolicies { names: out })
    }

    /// Whether a spec may ask for `name`.
    pub fn allows(&self, name: &str) -> bool {
        self.names.contains(&canonical_policy(name))
    }

    /// The allowed names, canonical and sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
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

/// A problem with an app's secrets settings: the app gets no Vault objects while it lasts, and
/// its spec is treated as invalid (left untouched).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretsIssue {
    pub app: AppId,
    pub message: String,
    /// Where in the spec the problem is (JSON pointer), for the diagnostic.
    #[serde(skip)]
    pub pointer: String,
}

/// Every app's desired Vault objects, by object name, for one owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// The owner the names belong to (`baton.yaml`).
    pub owner: String,
    pub apps: BTreeMap<String, DesiredApp>,
    pub issues: Vec<SecretsIssue>,
}

/// The policy text Baton writes: the [`marker`], then one `read` stanza per path, sorted (so
/// equal sets give equal text and compare cleanly with what Vault stores).
pub fn policy_text(owner: &str, app: &AppId, paths: &BTreeSet<String>) -> String {
    let mut s = marker(owner, app);
    s.push('\n');
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
                    granted.insert(crate::refs::kv2_data_path(m, p));
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
        d.policy = policy_text(&desired.owner, &d.app, &granted);
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
            match crate::refs::parse_value(text) {
                Ok(None) => {}
                Ok(Some(segments)) => {
                    for seg in segments {
                        if let crate::refs::Segment::Ref(r) = seg {
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

/// Whether a spec needs secret zero (Vault objects, bootstrap env, the secrets checks): it
/// reads Vault, has a malformed reference, or has a `baton.secrets` block. Such an app only
/// goes through the full cycle, never a shortcut that skips those checks.
pub fn needs_vault(spec: &Spec) -> bool {
    spec.baton.secrets.is_some() || !referenced_paths(&spec.app).is_ok_and(|p| p.is_empty())
}

/// `baton.secrets` as read: TTLs in seconds, extra policies canonical.
struct Settings {
    token_ttl: u64,
    token_max_ttl: u64,
    secret_id_ttl: u64,
    policies: Vec<String>,
}

/// `baton.secrets`: `{tokenTtl, tokenMaxTtl, secretIdTtl, policies}` (durations as `90s`, `15m`
/// or seconds). An error is (message, JSON pointer into the spec).
fn settings(
    block: Option<&Value>,
    allowed: &AllowedPolicies,
) -> Result<Settings, (String, String)> {
    const BLOCK: &str = "/baton/secrets";
    let at = |key: &str| format!("{BLOCK}/{key}");
    let empty = Map::new();
    let obj = match block {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err(("`baton.secrets` must be an object".into(), BLOCK.into())),
    };
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "tokenTtl" | "tokenMaxTtl" | "secretIdTtl" | "policies"
        ) {
            return Err((
                format!(
                    "unknown `baton.secrets` field `{key}` (known: tokenTtl, tokenMaxTtl, secretIdTtl, policies)"
                ),
                BLOCK.into(),
            ));
        }
    }
    let dur = |key: &str, default: Duration| -> Result<u64, (String, String)> {
        match obj.get(key) {
            None => Ok(default.as_secs()),
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
                (
                    format!("`baton.secrets.{key}` must be a positive number of seconds"),
                    at(key),
                )
            }),
            Some(Value::String(s)) => crate::spec::load::parse_duration(s)
                .map(|d| d.as_secs())
                .map_err(|e| (format!("`baton.secrets.{key}`: {e}"), at(key))),
            Some(_) => Err((format!("`baton.secrets.{key}` must be a duration"), at(key))),
        }
    };
    let token_ttl = dur("tokenTtl", DEFAULT_TOKEN_TTL)?;
    let token_max_ttl = dur("tokenMaxTtl", DEFAULT_TOKEN_MAX_TTL)?;
    let secret_id_ttl = dur("secretIdTtl", DEFAULT_SECRET_ID_TTL)?;
    if token_ttl == 0 || secret_id_ttl == 0 {
        return Err((
            "`baton.secrets` TTLs must be greater than zero (zero means unlimited in Vault)".into(),
            BLOCK.into(),
        ));
    }
    if token_max_ttl != 0 && token_max_ttl < token_ttl {
        return Err((
            "`baton.secrets.tokenMaxTtl` is shorter than `tokenTtl`".into(),
            at("tokenMaxTtl"),
        ));
    }
    let not_a_list = || {
        (
            "`baton.secrets.policies` must be a list of policy names".to_string(),
            at("policies"),
        )
    };
    let mut policies = Vec::new();
    match obj.get("policies") {
        None => {}
        Some(Value::Array(a)) => {
            for (i, p) in a.iter().enumerate() {
                let pointer = format!("{}/{i}", at("policies"));
                let name = p.as_str().map(canonical_policy).unwrap_or_default();
                if name.is_empty() {
                    return Err(not_a_list());
                }
                if name == "root" {
                    return Err((
                        "`baton.secrets.policies` asks for `root`, which is never granted".into(),
                        pointer,
                    ));
                }
                if !allowed.allows(&name) {
                    let now: Vec<&str> = allowed.names().collect();
                    let now = if now.is_empty() {
                        "none is allowed".to_string()
                    } else {
                        format!("allowed: {}", now.join(", "))
                    };
                    return Err((
                        format!(
                            "`baton.secrets.policies` asks for the Vault policy `{}`, which the operator has not allowed ({now}); \
                             the operator allows extra policies with --vault-allowed-policies (env BATON_VAULT_ALLOWED_POLICIES, \
                             config key vault-allowed-policies) on `baton serve` and `baton plan`",
                            name.chars().take(100).collect::<String>()
                        ),
                        pointer,
                    ));
                }
                if !policies.contains(&name) {
                    policies.push(name);
                }
            }
        }
        Some(_) => return Err(not_a_list()),
    }
    Ok(Settings {
        token_ttl,
        token_max_ttl,
        secret_id_ttl,
        policies,
    })
}

/// The Vault objects every valid spec needs, named for the repo's owner; extra policies only
/// from `allowed`.
pub fn desired(repo: &Repo, allowed: &AllowedPolicies) -> Desired {
    let owner = repo.config.owner.as_str();
    let mut out = Desired {
        owner: owner.to_owned(),
        ..Desired::default()
    };
    for (id, spec) in &repo.specs {
        let paths = match referenced_paths(&spec.app) {
            Ok(p) => p,
            Err(bad) => {
                out.issues.push(SecretsIssue {
                    app: id.clone(),
                    message: format!("malformed secret reference(s): {}", bad.join("; ")),
                    pointer: "/env".into(),
                });
                continue;
            }
        };
        if paths.is_empty() && spec.baton.secrets.is_none() {
            continue;
        }
        let s = match settings(spec.baton.secrets.as_ref(), allowed) {
            Ok(s) => s,
            Err((message, pointer)) => {
                out.issues.push(SecretsIssue {
                    app: id.clone(),
                    message,
                    pointer,
                });
                continue;
            }
        };
        let name = object_name(owner, id);
        let mut token_policies = vec![name.clone()];
        token_policies.extend(s.policies.into_iter().filter(|p| *p != name));
        out.apps.insert(
            name.clone(),
            DesiredApp {
                app: id.clone(),
                policy: policy_text(owner, id, &paths),
                paths,
                name,
                role: RoleSettings {
                    token_policies,
                    token_ttl: s.token_ttl,
                    token_max_ttl: s.token_max_ttl,
                    secret_id_num_uses: 1,
                    secret_id_ttl: s.secret_id_ttl,
                },
                kv_versions: KvMounts::new(),
            },
        );
    }
    out
}

/// A live AppRole role as Baton reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRole {
    pub settings: RoleSettings,
    pub role_id: String,
}

/// What a look at Vault found, before ownership is decided ([`classify`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Every ACL policy name (`LIST sys/policies/acl`).
    pub policy_names: Vec<String>,
    /// Every role name of the AppRole mount.
    pub role_names: Vec<String>,
    /// The texts of the policies under this owner's prefix (those read).
    pub policies: BTreeMap<String, String>,
    /// The roles under this owner's prefix (those read).
    pub roles: BTreeMap<String, LiveRole>,
}

/// A `baton-*` object that is not this Baton's: never written, never deleted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Unmanaged {
    pub kind: ObjectKind,
    pub name: String,
    /// Why it is not this Baton's.
    pub reason: String,
}

/// Vault's current objects as this Baton sees them: its own (proved by their marker) and the
/// other `baton-*` ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveVault {
    /// This owner's policies: name -> policy text.
    pub policies: BTreeMap<String, String>,
    /// This owner's roles.
    pub roles: BTreeMap<String, LiveRole>,
    /// Every other `baton-*` policy and role, sorted.
    pub unmanaged: Vec<Unmanaged>,
}

impl LiveVault {
    /// The unmanaged object named `name`, if any (policy first).
    pub fn unmanaged_named(&self, name: &str) -> Option<&Unmanaged> {
        self.unmanaged.iter().find(|u| u.name == name)
    }
}

/// Why a `baton-*` name outside this owner's prefix is not this Baton's.
fn foreign_reason(name: &str) -> String {
    let rest = name.strip_prefix(NAME_PREFIX).unwrap_or(name);
    match rest.split_once(NAME_SEPARATOR) {
        Some((owner, _)) if !owner.is_empty() => format!("named for another owner (`{owner}`)"),
        _ => "not an owner-scoped name: made by hand, or by a Baton before names were owner-scoped (`baton-<app>`)".into(),
    }
}

/// Sorts what [`Observed`] found into this owner's objects and unmanaged ones. A policy is the
/// owner's when its name is one [`object_name`] gives for `owner` and its first line is the
/// [`marker`] of that owner and app; a role when its name is one and its role id is one
/// [`new_role_id`] gives. Names not starting with [`NAME_PREFIX`] are ignored.
pub fn classify(owner: &str, observed: Observed) -> LiveVault {
    let prefix = owner_prefix(owner);
    let mut live = LiveVault::default();
    let mut unmanaged = |kind: ObjectKind, name: &str, reason: String| {
        live.unmanaged.push(Unmanaged {
            kind,
            name: name.to_owned(),
            reason,
        })
    };
    let mut policies = BTreeMap::new();
    for name in observed
        .policy_names
        .iter()
        .filter(|n| n.starts_with(NAME_PREFIX))
    {
        if !name.starts_with(&prefix) {
            unmanaged(ObjectKind::Policy, name, foreign_reason(name));
            continue;
        }
        // Listed but gone before it was read: nothing to manage or report.
        let Some(text) = observed.policies.get(name) else {
            continue;
        };
        match app_of_name(owner, name) {
            None => unmanaged(
                ObjectKind::Policy,
                name,
                "under this owner's prefix, but not a name Baton gives".into(),
            ),
            Some(app) if text.lines().next().map(str::trim_end) == Some(&marker(owner, &app)) => {
                policies.insert(name.clone(), text.clone());
            }
            Some(app) => unmanaged(
                ObjectKind::Policy,
                name,
                format!("no Baton marker for owner `{owner}` and app {app} on its first line: not made by this Baton"),
            ),
        }
    }
    let mut roles = BTreeMap::new();
    for name in observed
        .role_names
        .iter()
        .filter(|n| n.starts_with(NAME_PREFIX))
    {
        if !name.starts_with(&prefix) {
            unmanaged(ObjectKind::Role, name, foreign_reason(name));
            continue;
        }
        let Some(role) = observed.roles.get(name) else {
            continue;
        };
        match app_of_name(owner, name) {
            None => unmanaged(
                ObjectKind::Role,
                name,
                "under this owner's prefix, but not a name Baton gives".into(),
            ),
            Some(_) if is_baton_role_id(name, &role.role_id) => {
                roles.insert(name.clone(), role.clone());
            }
            Some(_) => unmanaged(
                ObjectKind::Role,
                name,
                "its role id is not one this Baton set (`<role>:<random>`): not made by this Baton, or its role id was changed by hand".into(),
            ),
        }
    }
    live.policies = policies;
    live.roles = roles;
    live.unmanaged.sort();
    live
}

/// Apps whose object name is taken by an unmanaged object become issues (blocked, nothing
/// written over the object): Baton never overwrites what it cannot prove it made.
pub fn claim_names(desired: &mut Desired, live: &LiveVault) {
    let taken: Vec<String> = desired
        .apps
        .keys()
        .filter(|n| live.unmanaged_named(n).is_some())
        .cloned()
        .collect();
    for name in taken {
        let (Some(d), Some(u)) = (desired.apps.remove(&name), live.unmanaged_named(&name)) else {
            continue;
        };
        desired.issues.push(taken_issue(d.app, u));
    }
}

/// The issue of an app whose name the unmanaged object `u` holds.
fn taken_issue(app: AppId, u: &Unmanaged) -> SecretsIssue {
    let kind = match u.kind {
        ObjectKind::Policy => "policy",
        ObjectKind::Role => "AppRole role",
    };
    SecretsIssue {
        app,
        message: format!(
            "the Vault {kind} `{}` this app needs already exists and is not this Baton's ({}); \
             Baton never overwrites it: the app is left untouched until the object is removed or renamed \
             (see docs/security.md, several Batons on one Vault)",
            u.name, u.reason
        ),
        pointer: "/env".into(),
    }
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
    /// Deletes: the app still runs, so the object goes only once the app's deletion (or the
    /// update that drops its secrets) converged; false for an object whose app is gone.
    #[serde(skip)]
    pub waits_for_app: bool,
}

/// A Vault deletion that was wanted but withheld, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VaultHeld {
    pub kind: ObjectKind,
    pub name: String,
    pub app: AppId,
    pub reason: String,
}

/// The Vault part of a sync: creates and updates run before the apps are written (an app must
/// never start before its role exists), deletes after the apps are deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VaultPlan {
    pub before_apps: Vec<VaultChange>,
    pub after_apps: Vec<VaultChange>,
    /// Deletions withheld (delete budget, an empty repo).
    pub held: Vec<VaultHeld>,
    pub issues: Vec<SecretsIssue>,
    /// `baton-*` objects that are not this Baton's: never touched.
    pub unmanaged: Vec<Unmanaged>,
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

/// The role id each desired role has (live) or will get (`fresh(name)`, for roles that do not
/// exist yet: the caller gives [`new_role_id`] with a random part).
pub fn role_ids(
    desired: &Desired,
    live: &LiveVault,
    fresh: &mut dyn FnMut(&str) -> String,
) -> BTreeMap<String, String> {
    desired
        .apps
        .keys()
        .map(|name| {
            let id = match live.roles.get(name) {
                Some(r) if !r.role_id.is_empty() => r.role_id.clone(),
                _ => fresh(name),
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
/// Vault objects kept), each with an error diagnostic at `pointer` saying why. Used for apps
/// whose secrets cannot be wired: no Vault configured, or a [`SecretsIssue`].
pub fn block(repo: &mut Repo, apps: impl IntoIterator<Item = (AppId, String, String)>) {
    for (id, message, pointer) in apps {
        let Some(spec) = repo.specs.remove(&id) else {
            continue;
        };
        repo.invalid.insert(id.clone());
        repo.diagnostics.push(crate::spec::Diagnostic {
            severity: crate::spec::Severity::Error,
            file: spec.file.clone(),
            pointer,
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
    let mut apps: Vec<(AppId, String, String)> = desired
        .apps
        .values()
        .map(|d| {
            (
                d.app.clone(),
                "the app reads Vault secrets, but no Vault is configured (--vault-addr and a token); \
                 it is left untouched until one is"
                    .to_string(),
                "/env".to_string(),
            )
        })
        .collect();
    apps.extend(desired.issues.iter().map(issue_block));
    let n = apps.len();
    block(repo, apps);
    n
}

/// Blocks the apps with a [`SecretsIssue`]: deploying them would start tasks whose `vault:`
/// references can never resolve.
pub fn block_issues(repo: &mut Repo, desired: &Desired) {
    block(repo, desired.issues.iter().map(issue_block));
}

fn issue_block(i: &SecretsIssue) -> (AppId, String, String) {
    (
        i.app.clone(),
        format!("secrets: {}", i.message),
        i.pointer.clone(),
    )
}

/// Copies bootstrap env values (only the names in `names`) from the live app definitions into
/// the specs that need Vault and do not set them: for `baton plan` without Vault access or a
/// gatekeeper URL, so an app deployed with secrets shows no made-up env diff. The role name
/// needs no Vault: a live app on another role (an earlier naming) keeps neither its role name
/// nor its role id, so the plan shows the change `baton serve` will make.
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
        let renamed = from.get(env::APPROLE_ROLE).and_then(Value::as_str) != Some(&d.name);
        for name in names {
            if renamed && [env::APPROLE_ROLE, env::ROLE_ID].contains(name) {
                continue;
            }
            if let Some(v) = from.get(*name) {
                env.entry((*name).to_owned()).or_insert_with(|| v.clone());
            }
        }
        if names.contains(&env::APPROLE_ROLE) {
            env.entry(env::APPROLE_ROLE.to_owned())
                .or_insert_with(|| Value::String(d.name.clone()));
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
/// Only this Baton's objects ([`LiveVault::policies`], [`LiveVault::roles`]: proved by their
/// marker) are ever updated or deleted; a desired name held by an unmanaged object is never
/// written (its app is an issue, see [`claim_names`]). Deletion follows the app plan's safety
/// rules: nothing is deleted when the repo is incomplete, has no apps or names no owner; an app whose spec is
/// invalid, whose deletion is held, or that still runs without being deleted keeps its objects.
/// Objects whose app is gone or no longer reads secrets go, under the delete budget: the
/// objects of an app this plan deletes follow it (that deletion was within the budget already);
/// the others (apps gone earlier, apps that stopped reading secrets) may number at most the
/// repo's budget over the apps with Vault objects, or `allow_deletes`; beyond it none goes and
/// each is listed as held.
pub fn plan_vault(
    desired: &Desired,
    live: &LiveVault,
    role_ids: &BTreeMap<String, String>,
    repo: &Repo,
    plan: &Plan,
    live_apps: &[AppId],
    allow_deletes: Option<usize>,
) -> VaultPlan {
    let owner = desired.owner.as_str();
    let mut out = VaultPlan {
        issues: desired.issues.clone(),
        unmanaged: live.unmanaged.clone(),
        ..Default::default()
    };
    for (name, d) in &desired.apps {
        // Whoever called us should have claimed the names already (before planning the apps);
        // whatever happened, nothing is written over an object that is not ours.
        if let Some(u) = live.unmanaged_named(name) {
            out.issues.push(taken_issue(d.app.clone(), u));
            continue;
        }
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
                waits_for_app: false,
            }),
            Some(text) if text.trim() != d.policy.trim() => out.before_apps.push(VaultChange {
                kind: ObjectKind::Policy,
                name: name.clone(),
                action: Action::Update,
                app: app.clone(),
                details: policy_details(text, &policy_paths(&d.policy)),
                body: Some(Value::String(d.policy.clone())),
                waits_for_app: false,
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
                    waits_for_app: false,
                });
            }
            Some(r) if r.settings != d.role => out.before_apps.push(VaultChange {
                kind: ObjectKind::Role,
                name: name.clone(),
                action: Action::Update,
                app,
                details: role_details(Some(&r.settings), &d.role),
                body: Some(body),
                waits_for_app: false,
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
    let live_set: BTreeSet<&AppId> = live_apps.iter().collect();
    let mut keep: BTreeSet<String> = BTreeSet::new();
    for id in repo.invalid.iter().chain(plan.held.iter().map(|h| &h.app)) {
        keep.insert(object_name(owner, id));
    }
    for id in live_apps {
        if !deleted.contains(id) && !repo.specs.contains_key(id) {
            keep.insert(object_name(owner, id));
        }
    }
    // Apps with a valid spec but with an issue keep what they have until the issue is fixed.
    for issue in &out.issues {
        keep.insert(object_name(owner, &issue.app));
    }
    let gone = |name: &&String| !desired.apps.contains_key(*name) && !keep.contains(*name);
    // Roles first: a role left without its policy still proves itself by its role id, and a
    // policy is what a role's tokens hold, so it goes last.
    let candidates = (live
        .roles
        .keys()
        .filter(gone)
        .map(|n| (ObjectKind::Role, n)))
    .chain(
        live.policies
            .keys()
            .filter(gone)
            .map(|n| (ObjectKind::Policy, n)),
    )
    .filter_map(|(kind, name)| {
        // Owned objects always decode (that is part of the proof); anything else stays.
        let app = app_of_name(owner, name)?;
        Some(VaultChange {
            kind,
            name: name.clone(),
            action: Action::Delete,
            waits_for_app: live_set.contains(&app),
            app: Some(app),
            details: Vec::new(),
            body: None,
        })
    });
    let candidates: Vec<VaultChange> = candidates.collect();
    let owned_apps: BTreeSet<AppId> = (live.policies.keys().chain(live.roles.keys()))
        .filter_map(|n| app_of_name(owner, n))
        .collect();
    let counted: BTreeSet<AppId> = candidates
        .iter()
        .filter_map(|c| c.app.as_ref())
        .filter(|a| !deleted.contains(a))
        .cloned()
        .collect();
    // Without `owner:` in baton.yaml the owner is a default other repos may share: Vault
    // objects are held like the app deletions (`plan::no_owner_reason`).
    let no_owner = !repo.config.owner_explicit;
    let hold_all = no_owner || (repo.specs.is_empty() && repo.invalid.is_empty());
    let refusal = if no_owner {
        Some(crate::plan::no_owner_reason(owner))
    } else if hold_all {
        Some("the repo has no apps; refusing to delete Vault objects (an empty checkout is more likely a mistake)".to_string())
    } else {
        let budget = crate::plan::delete_budget(repo, owned_apps.len());
        let allowed = allow_deletes.unwrap_or(0).max(budget);
        (counted.len() > allowed).then(|| {
            format!(
                "the Vault objects of {} apps to delete exceed the delete budget of {budget} (maxDeletes {} or {}% of {} apps with Vault objects); re-run with --allow-deletes {} to proceed",
                counted.len(),
                repo.config.prune.max_deletes,
                repo.config.prune.max_percent,
                owned_apps.len(),
                counted.len()
            )
        })
    };
    for c in candidates {
        let app = c.app.clone();
        match (&refusal, app) {
            (Some(reason), Some(app)) if hold_all || counted.contains(&app) => {
                out.held.push(VaultHeld {
                    kind: c.kind,
                    name: c.name,
                    app,
                    reason: reason.clone(),
                })
            }
            _ => out.after_apps.push(c),
        }
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

/// The Vault part of a plan for a terminal (appended after [`crate::report::plan_text`]):
/// always a first line (`Vault: in sync` when nothing is to write), then the changes, held
/// deletions and issues, and the unmanaged `baton-*` objects grouped by reason.
pub fn vault_plan_text(plan: &VaultPlan) -> String {
    let mut out = String::new();
    let kind = |k: ObjectKind| match k {
        ObjectKind::Policy => "policy",
        ObjectKind::Role => "approle",
    };
    if plan.is_empty() {
        out.push_str("Vault: in sync\n");
    } else {
        let _ = writeln!(
            out,
            "Vault: {} to write before the apps, {} to delete after them",
            plan.before_apps.len(),
            plan.after_apps.len()
        );
    }
    for c in plan.before_apps.iter().chain(&plan.after_apps) {
        let mark = match c.action {
            Action::Create => "+ create",
            Action::Update => "~ update",
            Action::Delete => "- delete",
        };
        let app = c
            .app
            .as_ref()
            .map(|a| format!("  ({a})"))
            .unwrap_or_default();
        let _ = writeln!(out, "  {mark} {} {}{app}", kind(c.kind), c.name);
        for d in &c.details {
            let _ = writeln!(out, "      {d}");
        }
    }
    // One line per reason, as for held app deletions.
    let mut held: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for h in &plan.held {
        (held.entry(&h.reason).or_default()).push(format!(
            "{} {} ({})",
            kind(h.kind),
            h.name,
            h.app
        ));
    }
    for (reason, objects) in held {
        let _ = writeln!(
            out,
            "  held {} Vault delete{}: {}: {reason}",
            objects.len(),
            if objects.len() == 1 { "" } else { "s" },
            objects.join(", ")
        );
    }
    for i in &plan.issues {
        let _ = writeln!(out, "  secrets issue: {}: {}", i.app, i.message);
    }
    let mut unmanaged: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for u in &plan.unmanaged {
        (unmanaged.entry(&u.reason).or_default()).push(format!("{} {}", kind(u.kind), u.name));
    }
    for (reason, objects) in unmanaged {
        let _ = writeln!(
            out,
            "  unmanaged (never touched): {}: {reason}",
            objects.join(", ")
        );
    }
    out
}

/// KV mounts out of a `GET sys/mounts` answer: Vault lists them under `data` (and at the top
/// level for old clients); RustyVault answers the bare map.
pub fn kv_mounts_from(doc: &Value) -> KvMounts {
    let map = match doc.get("data") {
        Some(Value::Object(m)) => m,
        _ => match doc {
            Value::Object(m) => m,
            _ => return KvMounts::new(),
        },
    };
    map.iter()
        .filter_map(|(path, info)| {
            let kind = info.get("type").and_then(Value::as_str)?;
            let version = match (
                kind,
                info.pointer("/options/version").and_then(Value::as_str),
            ) {
                ("kv", Some("2")) | ("kv-v2", _) => 2,
                ("kv", _) | ("generic", _) => 1,
                _ => return None,
            };
            Some((format!("{}/", path.trim_end_matches('/')), version))
        })
        .collect()
}

#[cfg(test)]
mod tests;
