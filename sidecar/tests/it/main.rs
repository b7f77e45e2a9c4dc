//! baton-env integration tests: one binary, modules by topic.

// Helpers outside #[test] fns are test code too; clippy.toml's test allowance does not
// reach them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod check;
mod inputs;
mod namespace;
mod openbao;
mod pid1;
mod real_vault;
mod regression;
mod rvault;
mod signals;
mod static_build;
mod stub;
mod support;
mod tls;
mod version;
