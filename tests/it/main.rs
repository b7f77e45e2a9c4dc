#![allow(clippy::unwrap_used, clippy::expect_used)]
//! End-to-end tests across both binaries; one module per scenario.

mod apply;
mod apply_select;
mod client;
mod daemon;
mod dev;
mod dev_stop;
mod drift;
mod dynamic_db;
mod environments;
mod faults;
mod ha;
mod observe;
mod rollout;
mod rollout_bench;
mod secret_zero;
mod serve;
mod serve_bench;
mod status_page;
mod status_page_auth;
mod vault_shared;
