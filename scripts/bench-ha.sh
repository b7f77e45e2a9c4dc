#!/usr/bin/env bash
# HA numbers for docs/benchmarks.md ("HA on ZooKeeper"): three `baton serve` replicas on a real
# ZooKeeper (Debian's package, started by the test), 4 s sessions. Prints the failover times of
# 10 `kill -9`s of the leader, push -> deployed through the leader and through a follower, and
# ZooKeeper's packet counts.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -p baton-e2e --test e2e ha::bench -- --ignored --nocapture --test-threads 1 2>&1 \
  | grep -oE '(zookeeper packets|push -> deployed|failover).*'
