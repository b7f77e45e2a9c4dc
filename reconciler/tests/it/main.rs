//! Integration tests of the `baton` library and binary, one module per topic.
mod conformance;
mod dev_scheduler;
mod raml;
mod support;
