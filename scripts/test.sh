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
ensure_debian_packages busybox-static docker-registry chromium debootstrap curl openssl
ensure_venv

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
