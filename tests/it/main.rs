//! End-to-end tests across both binaries; one module per scenario.
