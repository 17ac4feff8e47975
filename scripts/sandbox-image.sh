#!/usr/bin/env bash
# Make sure the real opencode sandbox image is in the local engine, built by the library.
#
#   scripts/sandbox-image.sh [--opencode-version V] [--no-cache] [--verbose] [--ca-file F ...]
#
# The base image comes from scripts/base-image.sh (pulled, or made with debootstrap when
# no registry answers). The build trusts the host's CA bundle (SSL_CERT_FILE, else
# /etc/ssl/certs/ca-certificates.crt) so npm works behind a TLS-inspecting proxy; the
# engine's layer cache makes a repeated run take well under a second.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi

bash "$here/base-image.sh" debian:bookworm-slim

ca_args=()
for bundle in "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
  if [ -n "$bundle" ] && [ -f "$bundle" ]; then
    ca_args=(--ca-file "$bundle")
    break
  fi
done

exec "$python" -c 'import sys; from opencode_cloud.docker.image import main; sys.exit(main())' \
  build "${ca_args[@]}" "$@"
