#!/usr/bin/env bash
# Benchmark of environments (docs/environments.md): `baton validate` (which loads and checks
# every environment) and `baton plan --environment NAME` of each, on the generated repo of
# `reconciler/examples/gen_repo.rs` with APPS apps (default 3,000) and 1, 2, 3 and 5
# environments. Each environment's overlay patches every 20th app (5%: an env variable and the
# instance count) and leaves about 1.6% out (every fifth `web-` edge service: nothing depends on
# those, so leaving them out breaks no `dependsOn`); its live state is gen_repo's, relabelled with the
# environment's owner (`bench.<name>`), so each plan is the same drift as the base benchmark
# plus the overlay's changes.
#
# Per environment count E the row "validate + E plans" runs `baton validate` and then one
# `baton plan` per environment, one process after the other (as CI would): wall and CPU of the
# whole, peak RSS of the largest process. Medians of RUNS runs of `/usr/bin/time`.
#
#   reconciler/bench/environments.sh    # APPS=3000 ENVS="1 2 3 5" RUNS=5; SKIP_BUILD=1
# Results: docs/benchmarks.md, section "environments".
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BATON=${BATON:-$TARGET/release/baton}
GEN=${GEN:-$TARGET/release/examples/gen_repo}
APPS=${APPS:-3000}
ENVS=${ENVS:-"1 2 3 5"}
RUNS=${RUNS:-5}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

[ -x /usr/bin/time ] || { echo "needs /usr/bin/time: apt-get install -y time" >&2; exit 1; }
if [ -z "${SKIP_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build --release -p baton-cli --bin baton && cargo build --release -p baton-reconciler --example gen_repo) >&2
fi
[ -x "$BATON" ] && [ -x "$GEN" ] || { echo "no $BATON or $GEN (unset SKIP_BUILD)" >&2; exit 1; }

median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

NAMES=(qa staging prod perf dr)

# setup E: the generated repo with E environments, their overlays and live states.
setup() {
    local e=$1 dir="$WORK/e$1"
    cp -r "$WORK/gen/repo" "$dir"
    {
        echo "environments:"
        for ((i = 0; i < e; i++)); do
            echo "  ${NAMES[$i]}: {marathon: 'http://127.0.0.1:1'}"
        done
    } >>"$dir/baton.yaml"
    local k=0
    # Every spec file, in a stable order; overlays at the same path under environments/<name>/.
    (cd "$dir" && find apps -type f | sort) >"$WORK/files"
    while read -r f; do
        k=$((k + 1))
        for ((i = 0; i < e; i++)); do
            local name=${NAMES[$i]} stem=${f%.*}
            if [[ $(basename "$f") == web-* ]] && ((k % 5 == 0)); then
                mkdir -p "$dir/environments/$name/$(dirname "$f")"
                printf 'baton: {exclude: true}\n' >"$dir/environments/$name/$stem.yaml"
            elif ((k % 20 == 0)); then
                mkdir -p "$dir/environments/$name/$(dirname "$f")"
                printf 'env: {BATON_ENV: %s}\ninstances: %d\n' "$name" $((i + 2)) >"$dir/environments/$name/$stem.yaml"
            fi
        done
    done <"$WORK/files"
    for ((i = 0; i < e; i++)); do
        jq -c --arg o "bench.${NAMES[$i]}" '.apps[].labels["baton.dev/owner"] = $o' \
            "$WORK/gen/live.json" >"$dir/live-${NAMES[$i]}.json"
    done
}

# all E: validate, then one plan per environment (exit 2: each has changes).
all() {
    local dir=$1 e=$2 code
    "$BATON" validate "$dir" >/dev/null || return 1
    for ((i = 0; i < e; i++)); do
        code=0
        "$BATON" plan --repo "$dir" --environment "${NAMES[$i]}" --live "$dir/live-${NAMES[$i]}.json" --format json >/dev/null || code=$?
        [ "$code" = 2 ] || return 1
    done
}
export -f all
export BATON
export NAMES_STR="${NAMES[*]}"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" >&2
echo "load at start: $(uptime)" >&2
"$GEN" "$APPS" "$WORK/gen" 2>"$WORK/gen.log"

ROWS=()
for e in $ENVS; do
    setup "$e"
    dir="$WORK/e$e"
    # Checked once: validate passes, each plan has changes.
    bash -c 'NAMES=($NAMES_STR); all "$1" "$2"' all "$dir" "$e" || { echo "E=$e: a command failed" >&2; exit 1; }
    : >"$WORK/t$e"
    for ((r = 0; r < RUNS; r++)); do
        /usr/bin/time -f "T %e %U %S" -a -o "$WORK/t$e" bash -c 'NAMES=($NAMES_STR); all "$1" "$2"' all "$dir" "$e"
        # Peak RSS per process: validate, and the largest plan.
        /usr/bin/time -f "V %M" -a -o "$WORK/t$e" "$BATON" validate "$dir" >/dev/null
        /usr/bin/time -f "P %M" -a -o "$WORK/t$e" "$BATON" plan --repo "$dir" --environment qa \
            --live "$dir/live-qa.json" --format json >/dev/null || true
    done
    wall=$(awk '/^T / { print $2 }' "$WORK/t$e" | median)
    cpu=$(awk '/^T / { print $3 + $4 }' "$WORK/t$e" | median)
    vrss=$(awk '/^V / { print $2 / 1024 }' "$WORK/t$e" | median)
    prss=$(awk '/^P / { print $2 / 1024 }' "$WORK/t$e" | median)
    overlays=$(find "$dir/environments" -type f | wc -l)
    ROWS+=("$(printf '| %s × %s | %s | %.3f s | %.2f s | %.0f MB | %.0f MB |' "$e" "$APPS" "$overlays" "$wall" "$cpu" "$vrss" "$prss")")
    echo "E=$e done; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    rm -rf "$dir"
done
echo "load at end: $(uptime)" >&2
echo
echo "| environments × apps | overlay files | validate + one plan per environment (wall, median) | CPU user+sys | peak RSS validate | peak RSS one plan |"
echo "|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
