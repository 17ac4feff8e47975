"""Removing what a benchmark's own instance made, and nothing else.

`occ uninstall` would also remove the sandbox images no other container uses, which the
next benchmark (or test) of the same run needs: the benchmarks remove their container
and volumes by the instance's labels instead.
"""

from __future__ import annotations

import subprocess


def _labelled(kind: str, instance: str) -> list[str]:
    listing = [
        "docker",
        kind,
        "ls",
        "-q",
        "--filter",
        f"label=io.opencode-cloud.instance={instance}",
    ]
    if kind == "container":
        listing.append("-a")
    if kind == "network":
        listing[3:4] = ["-q"]
    return subprocess.run(listing, capture_output=True, text=True, check=False).stdout.split()


def remove_instance(instance: str) -> None:
    """Remove the containers, volumes and networks labelled as `instance`'s (never an
    image)."""
    containers = _labelled("container", instance)
    if containers:
        subprocess.run(["docker", "rm", "-f", "-v", *containers], capture_output=True, check=False)
    volumes = _labelled("volume", instance)
    if volumes:
        subprocess.run(["docker", "volume", "rm", "-f", *volumes], capture_output=True, check=False)
    networks = _labelled("network", instance)  # team mode's
    if networks:
        subprocess.run(["docker", "network", "rm", *networks], capture_output=True, check=False)
