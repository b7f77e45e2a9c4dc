// The version string with the commit: scripts/build_version.rs.
include!("../scripts/build_version.rs");
