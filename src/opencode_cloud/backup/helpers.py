"""The helper container of a backup or a restore: it mounts each volume at its own
folder (`HELPER_ROOT/<kind>`), side by side. The service's own mount points nest the
volumes inside the home, with host folders added by `occ mount` among them; the helper
mounts neither, so no volume is read twice and no host folder is ever read.

On the Engine API path it is never started (`GET`/`PUT /containers/{id}/archive` read
and write its mounts); on the local path `local.program_spec` makes it run the archive
program.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from opencode_cloud.docker.helper import HelperSpec
from opencode_cloud.docker.models import Mount

if TYPE_CHECKING:
    from opencode_cloud.instance import Instance

# Where a helper container mounts each volume: side by side, never nested.
HELPER_ROOT = "/occ-volumes"
HELPER_ROLE = "backup-helper"


def helper_spec(
    instance: Instance, image: str, volumes: Sequence[tuple[str, str]], *, read_only: bool
) -> HelperSpec:
    """A helper of `image` that is never started, each volume (`(kind, volume name)`)
    mounted at `HELPER_ROOT/<kind>`."""
    return HelperSpec(
        instance,
        HELPER_ROLE,
        image,
        mounts=tuple(
            Mount("volume", name, f"{HELPER_ROOT}/{kind}", read_only) for kind, name in volumes
        ),
    )
