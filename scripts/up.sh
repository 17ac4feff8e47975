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
# A machine without an engine has no base image either: its root file system is made
# with debootstrap while the engine installs (debootstrap first, so that the two
# apt-get runs do not meet at dpkg's lock), and imported once the engine answers.
rootfs=""
if ! command -v dockerd >/dev/null 2>&1 && ! timeout 10 docker info >/dev/null 2>&1; then
  ensure_debian_packages debootstrap
  OCC_BASE_ROOTFS=$(mktemp -d /var/tmp/occ-rootfs.XXXXXX)
  export OCC_BASE_ROOTFS
  trap 'rm -rf "$OCC_BASE_ROOTFS"' EXIT
  bash "$ROOT/scripts/base-image.sh" --rootfs "$OCC_BASE_ROOTFS" &
  rootfs=$!
fi
"$ROOT/scripts/engine.sh" start >/dev/null
# (should it have failed, base-image.sh makes the root file system itself)
if [ -n "$rootfs" ]; then wait "$rootfs" || true; fi
bash "$ROOT/scripts/base-image.sh" debian:bookworm-slim
if [ -n "$rootfs" ]; then rm -rf "$OCC_BASE_ROOTFS"; fi
wait "$venv"
# The sandbox image, trusting the host's CA bundle so the download of opencode works
# behind TLS-inspecting proxies.
"$ROOT/scripts/sandbox-image.sh" >/dev/null  # (its stdout repeats the last progress line)
exec "$VENV/bin/occ" start "$@"
