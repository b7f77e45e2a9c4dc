#!/usr/bin/env bash
# Benchmark of `baton apply` against `baton dev-scheduler`, both release binaries in their own
# processes (so the peak RSS is the baton process's):
#   1. converge N_SLEEP (500) `sleep` apps from empty (one task each, real processes);
#   2. create N_NOOP (5,000) apps with `instances: 0` (no processes), then apply the same repo
#      again: the no-op reconcile.
# Prints, per run: wall time, peak RSS and CPU of baton (`/usr/bin/time -f "%e s %M KB ..."`),
# the exit code, the dev scheduler's CPU during the run (from /proc), and
# the API calls the dev scheduler served during the run (`GET /baton-dev/requests`, by method
# and route). Results: docs/benchmarks.md, section "apply".
#
# With STATE_DIR=1 the dev scheduler keeps its apps in a fresh --state-dir per start, so every
# acknowledged write is appended to its journal and fsynced first (the durable mode).
#
#   cargo build --release -p baton-cli --bin baton
#   reconciler/bench/apply.sh            # N_SLEEP=500 N_NOOP=5000 PORT=18080 STATE_DIR=0 by default
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BATON=${BATON:-$ROOT/target/release/baton}
N_SLEEP=${N_SLEEP:-500}
N_NOOP=${N_NOOP:-5000}
PORT=${PORT:-18080}
STATE_DIR=${STATE_DIR:-0}
STARTS=0
URL="http://127.0.0.1:$PORT"
WORK=$(mktemp -d)
SCHED_PID=""

stop_scheduler() {
    if [ -n "$SCHED_PID" ]; then
        kill "$SCHED_PID" 2>/dev/null || true
        wait "$SCHED_PID" 2>/dev/null || true
        SCHED_PID=""
    fi
}
trap 'stop_scheduler; rm -rf "$WORK"' EXIT

[ -x "$BATON" ] || { echo "no $BATON: cargo build --release -p baton-cli --bin baton" >&2; exit 1; }

# gen DIR N CMD INSTANCES: a repo of N apps in 50 groups.
gen() {
    local dir=$1 n=$2 cmd=$3 inst=$4 i g
    mkdir -p "$dir/apps"
    echo "owner: bench" >"$dir/baton.yaml"
    for ((g = 0; g < 50; g++)); do mkdir -p "$dir/apps/g$g"; done
    for ((i = 0; i < n; i++)); do
        printf 'cmd: "%s"\ncpus: 0.01\nmem: 8\ninstances: %d\n' "$cmd" "$inst" \
            >"$dir/apps/g$((i % 50))/svc-$i.yaml"
    done
}

start_scheduler() {
    local state=()
    STARTS=$((STARTS + 1))
    if [ "$STATE_DIR" = 1 ]; then state=(--state-dir "$WORK/state.$STARTS"); fi
    "$BATON" dev-scheduler --listen "127.0.0.1:$PORT" "${state[@]}" 2>"$WORK/scheduler.log" &
    SCHED_PID=$!
    for _ in $(seq 1 200); do
        curl -fs "$URL/ping" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "the dev scheduler did not answer on $URL" >&2
    exit 1
}

counts() { curl -fs "$URL/baton-dev/requests"; }

# CPU seconds (user + system) the dev scheduler has used so far.
sched_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$SCHED_PID/stat"
}

# run NAME REPO: one `baton apply`, timed, with the API calls it made.
run() {
    local name=$1 repo=$2 before after code=0 cpu0 cpu1
    before=$(counts)
    cpu0=$(sched_cpu)
    /usr/bin/time -f "%e s %M KB %U+%S s CPU" -o "$WORK/time" \
        "$BATON" apply --repo "$repo" --marathon "$URL" --commit bench --format json \
        >"$WORK/$name.json" 2>"$WORK/$name.log" || code=$?
    after=$(counts)
    cpu1=$(sched_cpu)
    local calls
    calls=$(jq -n --argjson a "$after" --argjson b "$before" \
        '[$a | to_entries[] | {k: .key, v: (.value - ($b[.key] // 0))} | select(.v > 0)]
         | (map(.v) | add // 0 | tostring) + " (" + (map("\(.k) \(.v)") | join(", ")) + ")"' -r)
    printf '%-26s %-34s exit %s  scheduler CPU %ss  API calls %s\n' "$name" \
        "$(cat "$WORK/time")" "$code" "$(echo "$cpu1 - $cpu0" | bc)" "$calls"
}

echo "machine: $(nproc) cores; $(uptime)"
echo "baton: $BATON"
echo "dev scheduler state dir: $([ "$STATE_DIR" = 1 ] && echo "yes (durable writes)" || echo "no (in memory)")"

gen "$WORK/sleep" "$N_SLEEP" "sleep 3600" 1
start_scheduler
run "converge $N_SLEEP sleep apps" "$WORK/sleep"
stop_scheduler

gen "$WORK/noop" "$N_NOOP" "sleep 3600" 0
start_scheduler
run "create $N_NOOP apps (0 inst)" "$WORK/noop"
run "no-op apply of $N_NOOP apps" "$WORK/noop"
stop_scheduler
echo "after: $(uptime)"
