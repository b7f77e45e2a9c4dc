#![allow(clippy::unwrap_used, clippy::expect_used)]
//! End-to-end tests across both binaries; one module per scenario.

mod serve;
mod drift;
mod status_page;
mod serve_bench;
mod secret_zero;
