//! Secret zero, the reconciler's side: the Vault objects each app needs are planned in the core
//! (`baton_core::secrets`); here they are observed and written, and tasks get their credential.
//!
//! - [`vault_admin`]: the reconciler's Vault client (policies, roles, wrapped secret ids).
//! - [`wiring`]: secret zero in a cycle: prepare (observe Vault, draw role ids, inject bootstrap
//!   env, tell the gatekeeper its apps) -> plan -> Vault writes -> apply -> the deletions whose
//!   apps are gone.
//! - [`gatekeeper`]: `POST /v1/secret-zero`: vouches for fresh tasks with wrapped secret ids.
//!
//! Its settings are read with every other command's in `crate::config` (`VaultAccess`), once
//! for `plan` and `serve`.

pub mod gatekeeper;
pub mod vault_admin;
pub mod wiring;
