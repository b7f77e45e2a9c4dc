#!/usr/bin/env bash
# Sizes and start times of the release profile against its alternatives, side by side in one
# hyperfine run (docs/benchmarks.md, "Release builds"). Each variant builds in a target dir of
# its own (target/bench-release/<variant>), so the builds do not overwrite each other; the first
# run builds every dependency once per variant (long), later runs only relink.
#
#   scripts/bench-release.sh [RUNS]          # RUNS per command, default 200
#   SKIP_BUILD=1 scripts/bench-release.sh    # measure the binaries already built
#   REPO=DIR/repo ...                        # also `baton validate` of a generated repo (below)
#   VARIANTS="old default" ...               # a subset
#
# Variants (profile settings given with `cargo --config`, on top of [profile.release]):
#   old       what `release` was before issue 16: no LTO, 16 codegen units, debug = 1, unstripped
#   old-strip `old` through `strip --strip-all` (debug info does not change rustc's code, so this
#             is a no-LTO build with `debug = false, strip = "symbols"`, without a third build)
#   thin      thin LTO, 16 codegen units, stripped (only when asked: VARIANTS="old thin default")
#   default   the release profile as committed: fat LTO, 1 codegen unit, stripped
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-200}"
MUSL="$(uname -m)-unknown-linux-musl"
VARIANTS="${VARIANTS:-old default}"
OUT=target/bench-release

settings() {
  case "$1" in
    old) echo "--config profile.release.lto=false --config profile.release.codegen-units=16 --config profile.release.debug=1 --config profile.release.strip=\"none\"" ;;
    thin) echo "--config profile.release.lto=\"thin\" --config profile.release.codegen-units=16" ;;
    default) echo "" ;;
    *) echo "unknown variant $1" >&2; exit 64 ;;
  esac
}

for v in $VARIANTS; do
  if [ -z "${SKIP_BUILD:-}" ]; then
    start=$(date +%s)
    # shellcheck disable=SC2046
    cargo build --release --locked -q -p baton-cli $(settings "$v") --target-dir "$OUT/$v"
    # shellcheck disable=SC2046
    cargo build --release --locked -q -p baton-sidecar --bin baton-env --target "$MUSL" $(settings "$v") --target-dir "$OUT/$v"
    echo "$v: built in $(( $(date +%s) - start )) s (both binaries, from the state of $OUT/$v)" >&2
  fi
done

MEASURED=""
for v in $VARIANTS; do
  MEASURED="$MEASURED $v"
  if [ "$v" = old ]; then
    mkdir -p "$OUT/old-strip/release" "$OUT/old-strip/$MUSL/release"
    strip --strip-all -o "$OUT/old-strip/release/baton" "$OUT/old/release/baton"
    strip --strip-all -o "$OUT/old-strip/$MUSL/release/baton-env" "$OUT/old/$MUSL/release/baton-env"
    MEASURED="$MEASURED old-strip"
  fi
done
VARIANTS="$MEASURED"

echo "| variant | baton (bytes) | baton-env, static (bytes) |"
echo "|:---|---:|---:|"
for v in $VARIANTS; do
  printf '| %s | %s | %s |\n' "$v" "$(stat -c %s "$OUT/$v/release/baton")" \
    "$(stat -c %s "$OUT/$v/$MUSL/release/baton-env")"
done

# Start time: `baton --version` (load, allocator and runtime set-up, the command tree) and
# `baton-env -- true` (no references: start, spawn the child, reap it, exit).
args=()
for v in $VARIANTS; do
  args+=(-n "baton --version ($v)" "$OUT/$v/release/baton --version")
done
for v in $VARIANTS; do
  args+=(-n "baton-env -- true ($v)" "$OUT/$v/$MUSL/release/baton-env -- /bin/true")
done
hyperfine -N --warmup 20 --runs "$RUNS" --export-markdown "$OUT/start.md" "${args[@]}" >&2
cat "$OUT/start.md"

# Work, not only start: `baton validate` of a generated repo when REPO names one
# (`cargo run --release -p baton-reconciler --example gen_repo -- 10000 DIR`, then REPO=DIR/repo).
if [ -n "${REPO:-}" ]; then
  args=()
  for v in $VARIANTS; do
    args+=(-n "baton validate ($v)" "$OUT/$v/release/baton validate $REPO")
  done
  hyperfine -N --warmup 2 --runs "${VALIDATE_RUNS:-10}" --export-markdown "$OUT/validate.md" "${args[@]}" >&2
  cat "$OUT/validate.md"
fi
