#!/bin/sh
# Mints one response-wrapped AppRole secret id, as Baton's gatekeeper does for a task
# (`POST auth/<mount>/role/<role>/secret-id` with `X-Vault-Wrap-TTL`), and writes the
# wrapping token to $1. Used by openbao.sh as hyperfine's `--prepare` step: a wrapping token
# is single use, so every timed run needs a fresh one.
# Env: BENCH_VAULT_ADDR, BENCH_ROOT_TOKEN, BENCH_ROLE (the AppRole role name).
set -eu
curl -sf -X POST -H "X-Vault-Token: $BENCH_ROOT_TOKEN" -H 'X-Vault-Wrap-TTL: 120s' \
  "$BENCH_VAULT_ADDR/v1/auth/approle/role/$BENCH_ROLE/secret-id" \
  | jq -er .wrap_info.token > "$1.tmp"
mv "$1.tmp" "$1"
