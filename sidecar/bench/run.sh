#!/usr/bin/env bash
# Benchmark: time from baton-env start to the child's exec, with 5 references over 2
# paths against a local Vault-compatible server (the vault-stub, release build), side by
# side with the hand-written curl + jq entrypoint (entrypoint.sh) in the same run; and
# baton-env's peak RSS (VmHWM) while supervising.
#
# Usage: sidecar/bench/run.sh [RUNS]      (needs hyperfine, curl, jq)
# Env:   CARGO_TARGET_DIR (default: target), SKIP_BUILD=1 to use existing binaries.
set -euo pipefail

RUNS="${1:-200}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
for tool in hyperfine curl jq; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (apt-get install -y $tool)" >&2; exit 1; }
done
if [ "${SKIP_BUILD:-}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -q -p baton-sidecar -p vault-stub)
fi
BATON="$TARGET/release/baton-env"
STUB="$TARGET/release/vault-stub"

WORK="$(mktemp -d /tmp/baton-bench.XXXXXX)"
STUB_PID=""
cleanup() {
  [ -n "$STUB_PID" ] && kill "$STUB_PID" 2>/dev/null && wait "$STUB_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

export VAULT_TOKEN="bench-root-token"
"$STUB" --root-token "$VAULT_TOKEN" > "$WORK/stub.out" &
STUB_PID=$!
for _ in $(seq 1 100); do
  grep -q VAULT_ADDR "$WORK/stub.out" 2>/dev/null && break
  sleep 0.05
done
VAULT_ADDR="$(sed -n 's/^VAULT_ADDR=//p' "$WORK/stub.out")"
[ -n "$VAULT_ADDR" ] || { echo "run.sh: vault-stub did not start" >&2; exit 1; }
export VAULT_ADDR

put() { curl -sf -H "X-Vault-Token: $VAULT_TOKEN" -H 'Content-Type: application/json' -X POST --data "$2" "$VAULT_ADDR/v1/$1" >/dev/null; }
put kv1/db '{"user":"app","password":"bench-db-password","host":"db.internal"}'
put secret/data/api '{"data":{"key":"bench-api-key","token":"bench-api-token"}}'

# The 5 references over 2 paths (the hand-written script ignores these and reads the
# same paths itself).
export DB_USER="vault:kv1/db#user" DB_PASSWORD="vault:kv1/db#password" DB_HOST="vault:kv1/db#host"
export API_KEY="vault:secret/data/api#key" API_TOKEN="vault:secret/data/api#token"
export BATON_LOG=warn

# Sanity: both produce the same environment.
a="$("$BATON" --mode exec -- sh -c 'echo "$DB_USER $DB_PASSWORD $DB_HOST $API_KEY $API_TOKEN"')"
b="$("$HERE/entrypoint.sh" sh -c 'echo "$DB_USER $DB_PASSWORD $DB_HOST $API_KEY $API_TOKEN"')"
[ "$a" = "$b" ] || { echo "run.sh: outputs differ: '$a' vs '$b'" >&2; exit 1; }

hyperfine -N --warmup 10 --runs "$RUNS" --style basic \
  --export-markdown "$WORK/times.md" \
  -n "baton-env --mode exec (KV version detected)" "$BATON --mode exec -- true" \
  -n "baton-env --mode exec --kv-version kv1=1,secret=2" "$BATON --mode exec --kv-version kv1=1,secret=2 -- true" \
  -n "baton-env (supervise; start, run, exit)" "$BATON -- true" \
  -n "hand-written entrypoint.sh (curl + jq)" "$HERE/entrypoint.sh true" >&2

# Peak RSS while supervising: VmHWM of baton-env once the child runs.
"$BATON" -- sleep 1 &
pid=$!
sleep 0.5
hwm="$(awk '/^VmHWM/ {print $2" "$3}' "/proc/$pid/status")"
rss="$(awk '/^VmRSS/ {print $2" "$3}' "/proc/$pid/status")"
wait "$pid"

echo "## Results ($(date -u +%Y-%m-%d), $(nproc) CPUs, $(uname -m), runs=$RUNS)"
echo
cat "$WORK/times.md"
echo
echo "baton-env peak RSS while supervising (VmHWM): $hwm (VmRSS $rss)"
