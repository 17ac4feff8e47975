#!/usr/bin/env bash
# The whole test suite: lint, types, unit, integration (real engine) and end-to-end
# (real opencode image) tests. Installs and starts what they need, and stops the
# Docker engine afterwards if this script was the one that started it.
#
#   scripts/test.sh [pytest args...]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

# busybox-static: the tiny test image; docker-registry: a real registry for pull tests;
# chromium: the browser test; debootstrap: the base image without a registry.
# openssl: a throw-away CA for the certificate build test.
# npm: opencode's own client (opencode-ai), a real API client of the edge in the tests.
ensure_debian_packages busybox-static docker-registry chromium debootstrap curl openssl npm
ensure_venv
OPENCODE_CLIENT_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/opencode-cloud-test/opencode-client"
if [ ! -x "$OPENCODE_CLIENT_DIR/node_modules/.bin/opencode" ]; then
  echo "setup: installing opencode's client (npm opencode-ai) for the tests" >&2
  NODE_EXTRA_CA_CERTS="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" \
    npm install --prefix "$OPENCODE_CLIENT_DIR" --no-audit --no-fund --loglevel=error \
    opencode-ai@"$("$VENV/bin/python" -c 'from opencode_cloud.defaults import DEFAULT_OPENCODE_VERSION as v; print(v)')" >&2
fi
export OCC_TEST_OPENCODE="$OPENCODE_CLIENT_DIR/node_modules/.bin/opencode"

engine=$("$ROOT/scripts/engine.sh" start)
if [ "$engine" = started ]; then
  trap '"$ROOT/scripts/engine.sh" stop' EXIT
fi
# The real opencode image for the end-to-end tests (cached after the first build).
OCC_CONFIG_DIR=$(mktemp -d) "$ROOT/scripts/sandbox-image.sh"

echo "== ruff" >&2
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "== mypy" >&2
"$VENV/bin/mypy"
echo "== pytest" >&2
"$VENV/bin/pytest" "$@"
