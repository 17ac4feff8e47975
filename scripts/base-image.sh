#!/usr/bin/env bash
# Make sure the base image the sandbox Dockerfile builds FROM is in the local engine.
#
#   scripts/base-image.sh [IMAGE]     default IMAGE: debian:bookworm-slim
#
# It is pulled when a registry answers; otherwise it is made from Debian's package mirror
# with debootstrap and imported under the same tag, so `docker build` uses it as is.
# The engine keeps the image, so later runs on the same machine cost nothing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE=${1:-debian:bookworm-slim}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

say() { echo "base-image: $*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "$IMAGE is present"
  exit 0
fi

if timeout 60 docker pull -q "$IMAGE" >/dev/null 2>&1; then
  say "pulled $IMAGE"
  exit 0
fi

say "no registry answered; building $IMAGE from $MIRROR with debootstrap (about 30 s)"
if ! command -v debootstrap >/dev/null 2>&1; then
  apt_install debootstrap
fi
root=$(mktemp -d /var/tmp/occ-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >/dev/null
# Same trims as the official slim image: no apt lists, no downloaded packages, no docs,
# no translations (about 65 MB).
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
tar -C "$root" -c . | docker import \
  --change 'CMD ["bash"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - "$IMAGE" >/dev/null
say "imported $IMAGE"
