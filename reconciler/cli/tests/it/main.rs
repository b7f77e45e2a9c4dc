//! Integration tests of the `baton` library and binary, one module per topic.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod cli;
mod conformance;
mod dev_page;
mod dev_scheduler;
mod drift;
mod environments;
mod packaging;
mod plan;
mod raml;
mod rollback;
mod rollout_client;
mod serve_start;
mod spec_load;
mod support;
