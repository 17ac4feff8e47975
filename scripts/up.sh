#!/usr/bin/env bash
# Quick start: install what is missing (Docker engine, the tool), then start the service.
#
#   scripts/up.sh [occ start options...]
#
# Prints the URL, the user name and (the first time) the password.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

"$ROOT/scripts/engine.sh" start >/dev/null
ensure_venv
# The base image (pulled, or made with debootstrap when no registry answers), then the
# sandbox image, trusting the host's CA bundle so npm works behind TLS-inspecting proxies.
"$ROOT/scripts/sandbox-image.sh" >/dev/null  # (its stdout repeats the last progress line)
exec "$VENV/bin/occ" start "$@"
