#!/usr/bin/env bash
# Quick start: install what is missing (Docker engine, the tool), then start the service.
#
#   scripts/up.sh [occ start options...]
#
# Prints the URL, the user name and (the first time) the password.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# The tool installs into .venv while the engine is installed and started and the base
# image is made (pulled, or made with debootstrap when no registry answers): on a fresh
# machine they overlap instead of adding up.
ensure_venv &
venv=$!
"$ROOT/scripts/engine.sh" start >/dev/null
bash "$ROOT/scripts/base-image.sh" debian:bookworm-slim
wait "$venv"
# The sandbox image, trusting the host's CA bundle so the download of opencode works
# behind TLS-inspecting proxies.
"$ROOT/scripts/sandbox-image.sh" >/dev/null  # (its stdout repeats the last progress line)
exec "$VENV/bin/occ" start "$@"
