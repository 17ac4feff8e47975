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
# The image builds FROM debian:bookworm-slim; make it when no registry can serve it.
"$ROOT/scripts/base-image.sh"
exec "$VENV/bin/occ" start "$@"
