#!/usr/bin/env bash
# Benchmark of `baton validate` and `baton plan` (release binary, no server: the live state is a
# saved `GET /v2/apps`) on generated repos of 1,000, 2,000, 5,000 and 10,000 apps
# (`reconciler/examples/gen_repo.rs`: 200 groups, varied fields, dependsOn; a live state of the
# same size with drift, missing and retired apps). Three commands per size:
#
#   validate       baton validate DIR                                  (exit 0)
#   plan           baton plan --repo DIR --live live.json --format json (exit 2: there is drift);
#                  it loads and validates every spec as `validate` does, so this is also
#                  "validate plus plan" in one process
#   validate+plan  both, one after the other (two processes, as CI would run them): wall time and
#                  CPU of the pair, peak RSS of the larger of the two (they never overlap)
#
# Each command runs RUNS times (after one run that checks the exit code);
# wall time is the median of `hyperfine` when it is installed (apt-get install -y hyperfine),
# else of `/usr/bin/time`'s %e (10 ms resolution); peak RSS and CPU (user+system) are the
# medians of `/usr/bin/time -f "%e s %M KB %U+%S"` (Debian package `time`). Prints a markdown
# table. Results: docs/benchmarks.md, section "validate and plan".
#
#   reconciler/bench/plan.sh     # SIZES="1000 2000 5000 10000" RUNS=5; SKIP_BUILD=1 reuses binaries
# The same measured with environments (3 x 3,000 apps, ...): reconciler/bench/environments.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BATON=${BATON:-$TARGET/release/baton}
GEN=${GEN:-$TARGET/release/examples/gen_repo}
SIZES=${SIZES:-"1000 2000 5000 10000"}
RUNS=${RUNS:-5}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

[ -x /usr/bin/time ] || { echo "needs /usr/bin/time: apt-get install -y time" >&2; exit 1; }
if [ -z "${SKIP_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build --release -p baton-cli --bin baton && cargo build --release -p baton-reconciler --example gen_repo) >&2
fi
[ -x "$BATON" ] && [ -x "$GEN" ] || { echo "no $BATON or $GEN (unset SKIP_BUILD)" >&2; exit 1; }
HYPERFINE=$(command -v hyperfine || true)

# median: the middle value (the mean of the two middle values for an even count) of stdin.
median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# measure NAME WANT CMD...: runs CMD once to check its exit code is WANT, then RUNS times under
# /usr/bin/time (and hyperfine when present). Sets WALL (s), RSS (MB) and CPU (s), medians.
measure() {
    local name=$1 want=$2 code=0 r
    shift 2
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || code=$?
    if [ "$code" != "$want" ]; then
        echo "$name: exit $code, expected $want" >&2
        head -20 "$WORK/$name.out" "$WORK/$name.err" >&2
        exit 1
    fi
    : >"$WORK/$name.times"
    for ((r = 0; r < RUNS; r++)); do
        # (`time` also notes a non-zero exit in the file: only the `T` lines are ours)
        /usr/bin/time -f "T %e %M %U %S" -a -o "$WORK/$name.times" "$@" >/dev/null 2>&1 || true
    done
    if [ -n "$HYPERFINE" ]; then
        "$HYPERFINE" --style none --runs "$RUNS" --warmup 1 -i -N \
            --export-json "$WORK/$name.json" -- "$(printf '%q ' "$@")" >/dev/null 2>&1
        WALL=$(jq -r '.results[0].median' "$WORK/$name.json")
    else
        WALL=$(awk '/^T / { print $2 }' "$WORK/$name.times" | median)
    fi
    RSS=$(awk '/^T / { print $3 / 1024 }' "$WORK/$name.times" | median)
    CPU=$(awk '/^T / { print $4 + $5 }' "$WORK/$name.times" | median)
}

# Both commands in sequence, in one measured unit (a shell running the two processes).
both() {
    local repo=$1 live=$2 code=0
    "$BATON" validate "$repo" >/dev/null || return $?
    "$BATON" plan --repo "$repo" --live "$live" --format json >/dev/null || code=$?
    [ "$code" = 2 ] || return 1
}
export -f both
export BATON

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ { print $2 }') GB" >&2
echo "load at start: $(uptime)" >&2
echo "baton: $BATON; runs per command: $RUNS; wall from ${HYPERFINE:+hyperfine}${HYPERFINE:-/usr/bin/time}" >&2

# row APPS COMMAND: a table row from WALL, RSS and CPU.
row() { printf '| %s | %s | %.3f s | %.0f MB | %.2f s |' "$1" "$2" "$WALL" "$RSS" "$CPU"; }

ROWS=()
for n in $SIZES; do
    dir="$WORK/n$n"
    "$GEN" "$n" "$dir" 2>"$WORK/gen.log"
    bytes=$(du -sb "$dir/repo" | cut -f1)
    live_apps=$(jq '.apps | length' "$dir/live.json")
    measure "validate-$n" 0 "$BATON" validate "$dir/repo"
    ROWS+=("$(row "$n" '`validate`')")
    measure "plan-$n" 2 "$BATON" plan --repo "$dir/repo" --live "$dir/live.json" --format json
    ROWS+=("$(row "$n" '`plan`')")
    summary=$(jq -c '.plan.summary | {create, update, delete, unchanged, held}' "$WORK/plan-$n.out")
    waves=$(jq '.plan.waves | length' "$WORK/plan-$n.out")
    measure "both-$n" 0 bash -c 'both "$1" "$2"' both "$dir/repo" "$dir/live.json"
    ROWS+=("$(row "$n" '**`validate` + `plan`**')")
    echo "$n apps: repo $((bytes / 1024)) KiB, live $live_apps apps, $waves waves, plan $summary; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done
echo "load at end: $(uptime)" >&2

echo
echo "| apps | command | wall (median) | peak RSS (median) | CPU user+sys (median) |"
echo "|---:|---|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
