"""Team mode: one front door, a sign-in and an opencode of their own for each person
(docs/team.md).

Whether an instance serves a team is read here, from one small file, without importing
the rest of team mode: every command asks it first (`occ status` among them).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opencode_cloud.config.paths import InstancePaths


def read_team_file(paths: InstancePaths) -> dict[str, Any]:
    """The team's record (`{"enabled": bool, "first": name}`); empty when there is none."""
    try:
        data = json.loads(paths.team_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def team_enabled(paths: InstancePaths) -> bool:
    return bool(read_team_file(paths).get("enabled"))
