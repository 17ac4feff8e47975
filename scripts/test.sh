#!/usr/bin/env bash
# The whole test suite: lint, types, unit, integration (real engine) and end-to-end
# (real opencode image) tests. Installs and starts what they need, and stops the
# Docker engine afterwards if this script was the one that started it.
#
#   scripts/test.sh [pytest args...]
#   scripts/test.sh --unit [pytest args...]
#
# --unit: lint, types and the unit tests only, with nothing installed but the virtualenv
# (no Debian packages, no engine, no image): under a minute.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

lint_and_types() {
  echo "== ruff" >&2
  "$VENV/bin/ruff" check .
  "$VENV/bin/ruff" format --check .
  echo "== mypy" >&2
  "$VENV/bin/mypy"
}

# pytest's exit status 5 means it collected nothing: one part of a split run may select
# no test at all, which is not a failure unless every part selects none.
NOTHING_COLLECTED=5

# The suite in three pytest runs: tests marked `alongside` (long, sharing no engine
# resource with any other test: the team soak) in a process of their own, at the same time
# as everything else; then the tests marked `last` (the engine's restart), once both are
# done. A run given its own `-m` is left whole.
run_suite() {
  local arg
  for arg in "$@"; do
    case "$arg" in -m | -m*) "$VENV/bin/pytest" "$@"; return ;; esac
  done
  local log status=0 alongside=0 last=0
  log=$(mktemp)
  "$VENV/bin/pytest" -p no:cacheprovider -m alongside "$@" >"$log" 2>&1 &
  local pid=$!
  "$VENV/bin/pytest" -m "not alongside and not last" "$@" || status=$?
  wait "$pid" || alongside=$?
  echo "== pytest, the tests run alongside" >&2
  cat "$log"
  rm -f "$log"
  echo "== pytest, the tests run last" >&2
  "$VENV/bin/pytest" -p no:cacheprovider -m last "$@" || last=$?
  local code worst=0 collected=0
  for code in "$status" "$alongside" "$last"; do
    if [ "$code" -eq "$NOTHING_COLLECTED" ]; then continue; fi
    collected=1
    if [ "$code" -ne 0 ]; then worst=$code; fi
  done
  if [ "$collected" -eq 0 ]; then return "$NOTHING_COLLECTED"; fi
  return "$worst"
}

if [ "${1:-}" = "--unit" ]; then
  shift
  ensure_venv
  lint_and_types
  echo "== pytest" >&2
  exec "$VENV/bin/pytest" tests/unit "$@"
fi

# busybox-static: the tiny test image; docker-registry: a real registry for pull tests;
# chromium: the browser test; debootstrap: the base image without a registry.
# openssl: a throw-away CA for the certificate build test.
# openssh-server, iproute2, iptables: the remote test host (scripts/remote-host.sh, started
# by the tests' `remote_host` fixture).
# iproute2, iptables, docker-registry: the test swarm (scripts/swarm.sh, started by the
# `swarm` fixture of tests/swarm/).
# npm: opencode's own client, a real API client of the edge in the tests (only when no
# npm is installed: a Node.js from elsewhere brings its own and conflicts with Debian's).
# time: GNU time, the peak memory of `occ backup` in the backup benchmark's smoke test.
packages=(busybox-static docker-registry chromium debootstrap curl openssl
  openssh-server iproute2 iptables time)
command -v npm >/dev/null 2>&1 || packages+=(npm)
ensure_debian_packages "${packages[@]}"
ensure_venv
# The client is opencode's prebuilt binary package, installed directly (the opencode-ai
# launcher's optional platform variants are not all published for every release).
OPENCODE_CLIENT_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/opencode-cloud-test/opencode-client"
version=$("$VENV/bin/python" -c 'from opencode_cloud.defaults import DEFAULT_OPENCODE_VERSION as v; print(v)')
client=""
for pkg in opencode-linux-x64 opencode-linux-x64-baseline; do
  bin="$OPENCODE_CLIENT_DIR/node_modules/$pkg/bin/opencode"
  if [ ! -x "$bin" ]; then
    echo "setup: installing opencode's client ($pkg@$version) for the tests" >&2
    NODE_EXTRA_CA_CERTS="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" \
      npm install --prefix "$OPENCODE_CLIENT_DIR" --no-save --no-audit --no-fund \
      --loglevel=error "$pkg@$version" >&2 || continue
  fi
  if "$bin" --version >/dev/null 2>&1; then client=$bin; break; fi
done
export OCC_TEST_OPENCODE="$client"

engine=$("$ROOT/scripts/engine.sh" start)
if [ "$engine" = started ]; then
  trap '"$ROOT/scripts/engine.sh" stop' EXIT
fi
# The real opencode image for the end-to-end tests (cached after the first build).
OCC_CONFIG_DIR=$(mktemp -d) "$ROOT/scripts/sandbox-image.sh"

lint_and_types
echo "== pytest" >&2
run_suite "$@"
