//! The dev scheduler driven over HTTP, as Marathon clients would.
