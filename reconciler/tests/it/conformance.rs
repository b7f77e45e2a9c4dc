//! Conformance with Marathon's own API definition in ../shared/marathon (skips when absent).
