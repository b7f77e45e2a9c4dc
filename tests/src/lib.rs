//! Support for the end-to-end tests: locating the built binaries, temp repos.
