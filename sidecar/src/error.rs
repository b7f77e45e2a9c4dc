//! The crate's error type and the exit codes it maps to (a documented contract, see
//! `docs/sidecar.md`). No variant carries a secret value.

use std::path::PathBuf;

use crate::auth::AuthError;
use crate::refs::RefError;
use crate::resolve::ResolveError;
use crate::vault::ClientError;

/// Exit codes of `baton-env` itself. When the child ran, baton-env exits with the
/// child's code instead (128 + N for a child killed by signal N).
pub mod exit {
    /// A secret reference could not be resolved (default; `--resolve-exit-code`).
    pub const RESOLVE: u8 = 1;
    /// Bad flags or configuration (also clap's own errors are remapped to this).
    pub const USAGE: u8 = 64;
    /// Vault unreachable, sealed or failing for longer than `--max-wait`.
    pub const UNAVAILABLE: u8 = 69;
    /// An internal error.
    pub const SOFTWARE: u8 = 70;
    /// An OS call failed (signals, env file).
    pub const OS: u8 = 71;
    /// Credentials expired and could not be renewed or re-fetched, or
    /// `--on-rotate exit`: restart the task to get fresh bootstrap material.
    pub const TEMPFAIL: u8 = 75;
    /// Login refused (bad token, role id, secret id or JWT).
    pub const AUTH: u8 = 77;
    /// Security alarm: a wrapping token was invalid, already used or of the wrong origin.
    pub const ALARM: u8 = 79;
    /// The command exists but cannot be executed.
    pub const CANNOT_EXECUTE: u8 = 126;
    /// The command was not found.
    pub const NOT_FOUND: u8 = 127;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", join_refs(.0))]
    Refs(Vec<RefError>),
    #[error("Vault client configuration")]
    Client(#[from] ClientError),
    #[error("secret references need a Vault address (--vault-addr or VAULT_ADDR)")]
    NoVaultAddr,
    #[error(
        "secret references need a Vault token (VAULT_TOKEN or --token-file) or another \
         --auth method"
    )]
    NoToken,
    #[error("authentication failed")]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("cannot write the env file {path}")]
    EnvFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up signal handling")]
    Signals(#[source] std::io::Error),
    #[error("the Vault token can no longer be renewed and cannot be replaced without new bootstrap material")]
    CredentialsExpired,
    #[error("credentials rotated and --on-rotate exit was given")]
    RotateExit,
    /// A broken invariant of baton-env itself (a bug), reported instead of a panic.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("no command given (usage: baton-env [OPTIONS] -- COMMAND [ARGS...])")]
    NoCommand,
    #[error("nothing to check: no environment variable holds a `vault:` reference")]
    NothingToCheck,
}

fn join_refs(errors: &[RefError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!("invalid secret reference(s):\n  - {}", lines.join("\n  - "))
}

impl Error {
    /// The documented exit code; `resolve_code` is the configured code for
    /// unresolvable references.
    pub fn exit_code(&self, resolve_code: u8) -> u8 {
        match self {
            Self::Refs(_) => resolve_code,
            Self::Resolve(e) if e.is_unavailable() => exit::UNAVAILABLE,
            Self::Resolve(_) => resolve_code,
            Self::Client(_)
            | Self::NoVaultAddr
            | Self::NoToken
            | Self::NoCommand
            | Self::NothingToCheck => exit::USAGE,
            Self::Auth(e) if e.is_security_alarm() => exit::ALARM,
            Self::Auth(e) if e.is_unavailable() => exit::UNAVAILABLE,
            Self::Auth(_) => exit::AUTH,
            Self::EnvFile { .. } | Self::Signals(_) => exit::OS,
            Self::Spawn { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => exit::NOT_FOUND,
                _ => exit::CANNOT_EXECUTE,
            },
            Self::CredentialsExpired | Self::RotateExit => exit::TEMPFAIL,
            Self::Internal(_) => exit::SOFTWARE,
        }
    }
}
