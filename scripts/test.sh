#!/usr/bin/env bash
# The README's test command: install what the tests need, then run every test of the workspace.
#
# The tests are built first, then run under a time limit (BATON_TEST_TIMEOUT seconds, default
# 1800): a test that hangs fails the run with a message instead of holding CI until it is killed.
# libtest names a test that runs long ("has been running for over 60 seconds").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cargo test --workspace --locked --no-run "$@"
# The static baton-env as the README installs it (release, musl), for the test that runs it in
# an empty root (sidecar/tests/it/static_build.rs); it says it is skipped when this cannot build.
MUSL="$(uname -m)-unknown-linux-musl"
if rustup target list --installed 2>/dev/null | grep -qx "$MUSL"; then
  cargo build --release --locked --target "$MUSL" -p baton-sidecar --bin baton-env
fi
limit="${BATON_TEST_TIMEOUT:-1800}"
status=0
timeout --kill-after=30 "$limit" cargo test --workspace --locked --no-fail-fast "$@" || status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "error: the tests did not finish within ${limit} s (BATON_TEST_TIMEOUT); a test hangs" >&2
fi
exit "$status"
