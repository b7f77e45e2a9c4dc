#!/bin/sh
# The entrypoint people write by hand instead of baton-env (benchmark baseline):
# read the same two paths with curl, parse with jq, export, exec the app.
set -eu
h="X-Vault-Token: $VAULT_TOKEN"
db=$(curl -sf -H "$h" "$VAULT_ADDR/v1/kv1/db")
api=$(curl -sf -H "$h" "$VAULT_ADDR/v1/secret/data/api")
DB_USER=$(printf %s "$db" | jq -r .data.user)
DB_PASSWORD=$(printf %s "$db" | jq -r .data.password)
DB_HOST=$(printf %s "$db" | jq -r .data.host)
API_KEY=$(printf %s "$api" | jq -r .data.data.key)
API_TOKEN=$(printf %s "$api" | jq -r .data.data.token)
export DB_USER DB_PASSWORD DB_HOST API_KEY API_TOKEN
exec "$@"
