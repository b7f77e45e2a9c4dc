//! Secret zero, the reconciler's side: the Vault objects each app needs are planned in the core
//! (`baton_core::secrets`); here they are observed and written, and tasks get their credential.
//!
//! - [`vault_admin`]: the reconciler's Vault client (policies, roles, wrapped secret ids) and the
//!   per-cycle wiring (`SecretsWiring`: prepare -> plan -> Vault writes -> apply -> deletes).
//! - [`gatekeeper`]: `POST /v1/secret-zero`: vouches for fresh tasks with wrapped secret ids.

pub mod gatekeeper;
pub mod vault_admin;
