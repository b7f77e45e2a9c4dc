//! Secret zero in one cycle of `baton serve`: before planning, Vault is observed, role ids
//! drawn, bootstrap env injected and the gatekeeper told which apps it serves
//! ([`SecretsWiring::prepare`]); after apply, only the Vault deletions whose apps are gone run
//! ([`deletes_after_cycle`]; `baton apply`'s [`deletes_after`]). The decisions are the core's
//! (`baton_core::secrets`); this module sequences them around the I/O.

use std::collections::BTreeMap;

use baton_core::secrets::{
    self, AllowedPolicies, Bootstrap, Desired, LiveVault, VaultChange, VaultPlan,
};
use baton_core::spec::Repo;

use super::vault_admin::{VaultAdmin, VaultAdminError};
use crate::apply::{ApplyReport, Outcome};

type Result<T> = std::result::Result<T, VaultAdminError>;

/// The Vault side of one sync, before planning.
#[derive(Debug, Clone)]
pub struct SecretsSync {
    pub desired: Desired,
    pub live: LiveVault,
    /// Role id per desired role: live, or freshly drawn for roles the plan creates.
    pub role_ids: BTreeMap<String, String>,
}

impl VaultAdmin {
    /// Step 1 of a sync with secrets, before [`baton_core::plan::plan`]: what the repo needs (extra
    /// policies only from `allowed`), what Vault has (apps whose name an unmanaged object holds
    /// become issues), role ids (`<role>:<random UUID>` for new roles), and the bootstrap env
    /// injected into `repo`'s app definitions. Then block the issues, plan the apps, then
    /// [`secrets::plan_vault`].
    pub async fn prepare(
        &self,
        repo: &mut Repo,
        boot: &Bootstrap,
        allowed: &AllowedPolicies,
    ) -> Result<SecretsSync> {
        let mut desired = secrets::desired(repo, allowed);
        let live = self.observe(&repo.config.owner).await?;
        secrets::claim_names(&mut desired, &live);
        if !desired.apps.is_empty() {
            secrets::apply_kv_mounts(&mut desired, &self.kv_mounts().await?);
        }
        let role_ids = secrets::role_ids(&desired, &live, &mut |name| {
            secrets::new_role_id(name, &uuid::Uuid::new_v4().to_string())
        });
        secrets::inject_env(repo, &desired, &role_ids, boot);
        Ok(SecretsSync {
            desired,
            live,
            role_ids,
        })
    }
}

/// The Vault deletions to run after the apps were applied: only those whose app deletion
/// converged (an app still running keeps its role), plus those whose app is gone already.
pub fn deletes_after(plan: &VaultPlan, report: &ApplyReport) -> Vec<VaultChange> {
    plan.after_apps
        .iter()
        .filter(|c| match (&c.app, c.waits_for_app) {
            (None, _) | (_, false) => true,
            (Some(app), true) => report
                .apps
                .iter()
                .filter(|r| &r.app == app)
                .all(|r| r.outcome == Outcome::Converged),
        })
        .cloned()
        .collect()
}

/// The Vault deletions to run after a `baton serve` cycle: those whose app is gone already,
/// apps whose delete (or update dropping their secrets) converged in `report`, and apps whose
/// live definition already matches a spec without secrets. Anything else waits for a later
/// cycle, so a task still running with a role never loses it.
pub fn deletes_after_cycle(
    plan: &VaultPlan,
    report: Option<&ApplyReport>,
    unchanged: &[baton_core::spec::AppId],
) -> Vec<VaultChange> {
    plan.after_apps
        .iter()
        .filter(|c| match (&c.app, c.waits_for_app) {
            (None, _) | (_, false) => true,
            (Some(app), true) => {
                let mut results = report
                    .map(|r| r.apps.iter().filter(|r| &r.app == app).collect::<Vec<_>>())
                    .unwrap_or_default();
                if results.is_empty() {
                    unchanged.contains(app)
                } else {
                    results.retain(|r| r.outcome != Outcome::Converged);
                    results.is_empty()
                }
            }
        })
        .cloned()
        .collect()
}

/// What `baton serve`'s loop needs for secret zero: the admin client, the bootstrap settings
/// injected into app envs, the operator's allow-list of extra policies, and the gatekeeper to
/// tell which apps it serves.
#[derive(Clone)]
pub struct SecretsWiring {
    pub admin: VaultAdmin,
    pub boot: Bootstrap,
    pub allowed: AllowedPolicies,
    pub gate: Option<std::sync::Arc<dyn crate::secret_zero::gatekeeper::ServedApps>>,
}

impl std::fmt::Debug for SecretsWiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsWiring")
            .field("admin", &self.admin)
            .field("boot", &self.boot)
            .field("allowed", &self.allowed)
            .field("gate", &self.gate.is_some())
            .finish()
    }
}

impl SecretsWiring {
    /// Before planning a cycle: Vault observed, role ids known, bootstrap env injected, apps
    /// with a secrets issue blocked (left untouched), and the gatekeeper told which apps to
    /// serve. A Vault error leaves `repo` as it was after injection started: the caller must
    /// fail the cycle and plan nothing from it.
    pub async fn prepare(&self, repo: &mut Repo) -> Result<SecretsSync> {
        let sync = self.admin.prepare(repo, &self.boot, &self.allowed).await?;
        secrets::block_issues(repo, &sync.desired);
        if let Some(gate) = &self.gate {
            gate.serve_apps(
                &repo.config.owner,
                crate::secret_zero::gatekeeper::apps_from(repo, &sync.desired, &sync.role_ids),
            );
        }
        Ok(sync)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::AppResult;
    use baton_core::plan::Action;
    use baton_core::secrets::ObjectKind;
    use baton_core::spec::AppId;

    fn delete(name: &str, app: Option<&str>) -> VaultChange {
        VaultChange {
            kind: ObjectKind::Role,
            name: name.into(),
            action: Action::Delete,
            app: app.map(|a| AppId::parse(a).unwrap()),
            details: Vec::new(),
            body: None,
            // An app-less deletion stands for one whose app is gone already.
            waits_for_app: app.is_some(),
        }
    }

    #[test]
    fn vault_objects_go_only_after_their_app_is_gone() {
        let plan = VaultPlan {
            after_apps: vec![
                delete("baton-orphan", None),
                delete("baton-deleted", Some("/deleted")),
                delete("baton-failed", Some("/failed")),
                delete("baton-held", Some("/held")),
                delete("baton-plain", Some("/plain")),
            ],
            ..Default::default()
        };
        let result = |app: &str, outcome: Outcome| AppResult {
            app: AppId::parse(app).unwrap(),
            action: Action::Delete,
            outcome,
            deployment: None,
        };
        let report = ApplyReport {
            apps: vec![
                result("/deleted", Outcome::Converged),
                result("/failed", Outcome::Failed { reason: "x".into() }),
            ],
            cancelled: false,
            lost: None,
        };
        let unchanged = [AppId::parse("/plain").unwrap()];
        let names: Vec<String> = deletes_after_cycle(&plan, Some(&report), &unchanged)
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["baton-orphan", "baton-deleted", "baton-plain"]);
        // No apply at all: only orphans and apps already matching their spec.
        let names: Vec<String> = deletes_after_cycle(&plan, None, &unchanged)
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["baton-orphan", "baton-plain"]);
    }
}
