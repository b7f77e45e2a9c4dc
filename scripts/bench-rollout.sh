#!/usr/bin/env bash
# The progressive-delivery numbers of docs/benchmarks.md (issue 15), side by side with
# marathon-lb's own blue/green tool, on one real traffic path: unmodified marathon-lb
# (../shared/marathon-lb) + Debian's HAProxy in front of 10 dev-scheduler tasks, 40 req/s through
# the service port, one new connection per request (tests/src/{mlb,load}.rs).
#
# Prints the `bench:` lines of:
# - rollout_bench::bench_zdd_blue_green: zdd.py deploys v1 (blue) then v2 (green) under load:
#   its exit, run time, failed requests, who answered, the apps it left.
# - rollout::marathon_lb_hand_over_by_hand_loses_no_request: the canary hand-over done by hand
#   through the Marathon API (no Baton): failed requests, shares per step.
# - rollout::rollout_good_version_goes_to_full_with_no_failed_request (Baton, canary): push to
#   full production, failed requests, the share at the 10% step.
# - rollout::rollout_bad_version_is_rolled_back_at_the_first_step (Baton, canary): bad commit to
#   traffic back on the stable version, what v2 answered.
# One test at a time: zdd.py's `/_haproxy_getpids` counts every haproxy on the machine.
# Needs scripts/install-deps.sh (haproxy, target/mlb-python) and ../shared/marathon-lb.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
status=0
cargo test -p baton-e2e --test e2e rollout -- --include-ignored --nocapture --test-threads=1 \
  >"$out" 2>&1 || status=$?
# --nocapture interleaves a test's lines with libtest's: take the lines from `bench:` on.
grep -oE '(bench:|skipped).*' "$out" || true
grep -E '^test result:' "$out" || true
if [ "$status" != 0 ]; then
  echo "bench-rollout: some tests failed (see above); the full output:" >&2
  tail -n 80 "$out" >&2
fi
exit "$status"
