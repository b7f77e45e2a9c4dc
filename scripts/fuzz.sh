#!/usr/bin/env bash
# Fuzz what parses untrusted bytes (cargo-fuzz / libFuzzer; targets in fuzz/fuzz_targets,
# harnesses in fuzz/src/lib.rs):
#
#   scripts/fuzz.sh TARGET SECONDS [libFuzzer flags...]   one target
#   scripts/fuzz.sh all SECONDS                           every target in turn (the CI step)
#   scripts/fuzz.sh list                                  the targets
#
# Needs cargo-fuzz (scripts/install-deps.sh installs it). cargo-fuzz passes `-Z` flags to rustc;
# on the stable toolchain RUSTC_BOOTSTRAP=1 lets it. No sanitizer (ASan needs nightly's
# `-Zsanitizer` and Rust code here is memory safe): libFuzzer finds panics, hangs (over
# TIMEOUT seconds for one input, default 10) and memory blow-ups (over RSS_MB, default 2048).
# The working corpus is fuzz/corpus/TARGET (not committed), seeded from fuzz/seeds/TARGET and,
# for the spec targets, from every spec repo in fixtures/; a crash lands in fuzz/artifacts/TARGET
# and the run fails. Prints libFuzzer's final stats (executions, coverage).
# On a loaded machine at `nice -n 19` a unit can wait seconds for a CPU: raise TIMEOUT (60), or
# libFuzzer reports a timeout that is only starvation (and its timeout handler, with no
# sanitizer runtime, can hang instead of writing the unit).
# BUILD: how cargo-fuzz builds (default `-O`, optimised; CI passes `--dev`, which builds in
# about half the time and is fast enough for its short runs).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export RUSTC_BOOTSTRAP=1

TARGETS=(spec_parse spec_load webhook_github webhook_gitlab webhook_gitea webhook_bitbucket webhook_generic
         gatekeeper_request sse)
BUILD=${BUILD:--O}
TIMEOUT=${TIMEOUT:-10}
RSS_MB=${RSS_MB:-2048}

usage() { echo "usage: scripts/fuzz.sh TARGET|all SECONDS [libFuzzer flags...] | list" >&2; exit 64; }

# The spec targets' seeds, from the fixture repos: one input per spec file. spec_parse takes a
# format byte (0 YAML, 1 JSON) then the text; spec_load a flags byte (bit 0: JSON, bit 1: a
# baton.yaml follows), the config, a 0xFF byte, then the spec.
seed_specs() {
    local target=$1 corpus=$2 repo file sel name
    while IFS= read -r -d '' repo; do
        while IFS= read -r -d '' file; do
            sel=0
            case "$file" in *.json) sel=1 ;; esac
            name=$(printf '%s' "$file" | tr '/' '_')
            if [ "$target" = spec_parse ]; then
                { printf "\\x0$sel"; cat "$file"; } >"$corpus/fixture_$name"
            elif [ -f "$repo/baton.yaml" ]; then
                { printf "\\x0$((sel | 2))"; cat "$repo/baton.yaml"; printf '\xff'; cat "$file"; } \
                    >"$corpus/fixture_$name"
            else
                { printf "\\x0$sel"; cat "$file"; } >"$corpus/fixture_$name"
            fi
        done < <(find "$repo" \( -name '*.yaml' -o -name '*.yml' -o -name '*.json' \) \
                     ! -name baton.yaml -type f -print0)
    done < <(find fixtures/specs/valid fixtures/specs/invalid/* fixtures/specs/bom fixtures/demo \
                 -maxdepth 0 -type d -print0 2>/dev/null)
}

run() {
    local target=$1 seconds=$2
    shift 2
    local corpus=fuzz/corpus/$target artifacts=fuzz/artifacts/$target
    mkdir -p "$corpus" "$artifacts"
    case "$target" in spec_parse | spec_load) seed_specs "$target" "$corpus" ;; esac
    echo "== fuzz $target for ${seconds}s" >&2
    cargo fuzz run --fuzz-dir fuzz --sanitizer none "$BUILD" -a "$target" "$corpus" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" -max_len=16384 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" "$@"
}

case "${1:-}" in
    list) printf '%s\n' "${TARGETS[@]}" ;;
    all)
        [ $# -eq 2 ] || usage
        cargo fuzz build --fuzz-dir fuzz --sanitizer none "$BUILD" -a
        for t in "${TARGETS[@]}"; do run "$t" "$2"; done
        ;;
    "") usage ;;
    *)
        [ $# -ge 2 ] || usage
        printf '%s\n' "${TARGETS[@]}" | grep -qx "$1" || { echo "unknown target $1" >&2; usage; }
        run "$@"
        ;;
esac
