#!/usr/bin/env bash
# Make sure the base image the sandbox Dockerfile builds FROM is in the local engine.
#
#   scripts/base-image.sh [IMAGE]     default IMAGE: debian:bookworm-slim
#
# It is pulled when a registry answers; otherwise it is made from Debian's package mirror
# with debootstrap and imported under the same tag, so `docker build` uses it as is.
# The engine keeps the image, so later runs on the same machine cost nothing.
#
#   scripts/base-image.sh --rootfs DIR   only make the root file system in DIR (no engine
#                                        needed): scripts/up.sh runs it while the engine is
#                                        installed, then passes DIR in OCC_BASE_ROOTFS
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

say() { echo "base-image: $*" >&2; }

# A minimal Debian in DIR, with the same trims as the official slim image: no apt lists,
# no downloaded packages, no docs, no translations (about 65 MB).
make_rootfs() { # make_rootfs DIR
  local root=$1
  if ! command -v debootstrap >/dev/null 2>&1; then
    apt_install debootstrap
  fi
  debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >/dev/null
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
  find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  touch "$root/.occ-rootfs-complete"
}

if [ "${1:-}" = --rootfs ]; then
  make_rootfs "$2"
  exit 0
fi

IMAGE=${1:-debian:bookworm-slim}

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "$IMAGE is present"
  exit 0
fi

if timeout 60 docker pull -q "$IMAGE" >/dev/null 2>&1; then
  say "pulled $IMAGE"
  exit 0
fi

prepared=${OCC_BASE_ROOTFS:-}
if [ -n "$prepared" ] && [ -f "$prepared/.occ-rootfs-complete" ]; then
  say "no registry answered; importing $IMAGE from the root file system made meanwhile"
  root=$prepared
  rm -f "$root/.occ-rootfs-complete"
else
  say "no registry answered; building $IMAGE from $MIRROR with debootstrap (about 30 s)"
  root=$(mktemp -d /var/tmp/occ-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  make_rootfs "$root"
  rm -f "$root/.occ-rootfs-complete"
fi
tar -C "$root" -c . | docker import \
  --change 'CMD ["bash"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - "$IMAGE" >/dev/null
say "imported $IMAGE"
