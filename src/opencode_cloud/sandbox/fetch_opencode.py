"""Install opencode's prebuilt binary from npm's registry, without node or npm.

    python3 -I fetch_opencode.py REGISTRY VERSION DEST

opencode-ai on npm is a small launcher; the program is one binary in a per-platform
package (opencode-linux-x64, ...). This reads that package's metadata, downloads its
tarball, checks it against the registry's sha512 integrity and writes `bin/opencode` to
DEST. It tries the package for this CPU, then its baseline build (for CPUs without
AVX2), and keeps the first whose binary runs and reports VERSION.

Run by the image build only (Dockerfile), with Debian's python3 and CA bundle.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import urllib.request

PLATFORMS = {"x86_64": "linux-x64", "aarch64": "linux-arm64"}
MEMBER = "package/bin/opencode"
TIMEOUT = 120


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
        data: bytes = answer.read()
        return data


def verified_tarball(registry: str, package: str, version: str) -> bytes:
    """The package's tarball, checked against the sha512 the registry publishes."""
    meta = json.loads(fetch(f"{registry}/{package}/{version}"))
    dist = meta["dist"]
    algorithm, _, digest = str(dist["integrity"]).partition("-")
    if algorithm != "sha512":
        raise ValueError(f"{package}@{version}: unexpected integrity {algorithm!r}")
    data = fetch(dist["tarball"])
    if hashlib.sha512(data).digest() != base64.b64decode(digest):
        raise ValueError(f"{package}@{version}: the tarball does not match its sha512")
    return data


def install(data: bytes, dest: str) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        source = tar.extractfile(MEMBER)
        if source is None:
            raise ValueError(f"the tarball has no {MEMBER}")
        with open(dest + ".part", "wb") as out:
            out.write(source.read())
    os.chmod(dest + ".part", 0o755)
    os.replace(dest + ".part", dest)


def runs(dest: str, version: str) -> bool:
    try:
        done = subprocess.run([dest, "--version"], capture_output=True, text=True, timeout=60)
    except OSError:
        return False
    return done.returncode == 0 and done.stdout.strip() == version


def main(registry: str, version: str, dest: str) -> int:
    machine = platform.machine()
    if machine not in PLATFORMS:
        print(f"unsupported architecture: {machine}", file=sys.stderr)
        return 1
    base = f"opencode-{PLATFORMS[machine]}"
    for package in (base, f"{base}-baseline"):
        try:
            install(verified_tarball(registry.rstrip("/"), package, version), dest)
        except (OSError, ValueError, KeyError) as exc:
            print(f"{package}@{version}: {exc}", file=sys.stderr)
            continue
        if runs(dest, version):
            return 0
        print(f"{package}@{version}: the binary does not run here", file=sys.stderr)
        os.unlink(dest)
    return 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
