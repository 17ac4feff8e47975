#!/usr/bin/env bash
# Make sure the real opencode sandbox image is in the local engine (`occ build`).
#
#   scripts/sandbox-image.sh [--opencode-version V] [--no-cache] [--ca-file F ...]
#
# The base image comes from scripts/base-image.sh (pulled, or made with debootstrap when
# no registry answers). The build trusts the host's CA bundle (SSL_CERT_FILE, else
# /etc/ssl/certs/ca-certificates.crt) so the download of opencode works behind a
# TLS-inspecting proxy; the engine's layer cache makes a repeated run take well under a
# second.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

bash "$ROOT/scripts/base-image.sh" debian:bookworm-slim

ca_args=()
for bundle in "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
  if [ -n "$bundle" ] && [ -f "$bundle" ]; then
    ca_args=(--ca-file "$bundle")
    break
  fi
done

exec "$VENV/bin/occ" build "${ca_args[@]}" "$@"
